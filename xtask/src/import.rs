//! `cargo xtask import-ibinn`: the authors' trained IB-INN as a run of ours.
//!
//! ECINN's and IB-INN's code save a PyTorch checkpoint; `bench/reference/export_ibinn.py` turns
//! one into safetensors (`inn.<key>`, `mu`, `phi`). This command loads that file into our model
//! ([`cfx_flows::ibinn::load_reference_weights`]), writes a run folder that `explain`,
//! `evaluate` and `log-det` accept, and scores it on the test set (`test.json`). The run has no
//! checkpoints: it was not trained here, so it cannot be resumed.
//!
//! Where the file also holds the reference's own outputs for a batch (`check.x`, `check.z`,
//! `check.l_x`, `check.logits`, which the exporter adds), the command runs our model on the same
//! inputs and reports how far the two are apart: the side-by-side test that our blocks compute
//! the authors' function.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_datasets::Split;
use cfx_flows::Flow;
use cfx_flows::blocks::FlowBlock;
use cfx_flows::ibinn::{IbInn, StoredTensor, ib_objective, load_reference_weights, smooth_one_hot};
use cfx_linalg::LinalgBackend;
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use crate::backend::{BackendJob, BackendKind};
use crate::explain::runner::host;
use crate::train::ibinn::{
    IbInnTrainConfig, MODEL_FILE, TestReport, import_scores, load_split, write_model,
};
use crate::train::run::{RunDir, read_toml};

#[derive(Debug, Clone)]
pub struct ImportJob {
    /// The exported safetensors file.
    pub weights: PathBuf,
    /// The run folder to create.
    pub run: PathBuf,
    /// A TOML file of the training config (`train ib-inn --config`); its `model` table must
    /// be the reference's architecture. `None`: the paper's MNIST architecture.
    pub config: Option<PathBuf>,
    pub dataset: cfx_datasets::DatasetKind,
    pub test_limit: Option<usize>,
}

/// How far our model's outputs are from the reference's on the file's check batch.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub images: usize,
    /// Largest `|z_ours − z_ref|` and the largest `|z_ref|` it compares with.
    pub max_abs_z_diff: f64,
    pub max_abs_z: f64,
    /// Mean `L_x` (nats per dimension) in the reference's convention: ours with the
    /// reference's DCT log-determinant put back (`IbInn::reference_log_det_offset`).
    pub l_x_reference: f64,
    pub l_x_ours: f64,
    pub max_abs_l_x_diff: f64,
    pub max_abs_logit_diff: f64,
    /// Images whose predicted class differs.
    pub prediction_mismatches: usize,
    /// Block by block, where the file has the reference's node outputs (`check.node.<k>`).
    pub blocks: Vec<BlockDiff>,
}

/// One block's output against the reference node's on the check batch.
#[derive(Debug, Clone, Serialize)]
pub struct BlockDiff {
    pub block: usize,
    pub kind: String,
    pub max_abs_diff: f64,
    pub max_abs: f64,
}

/// One training-mode pass (batch statistics, no dropout) of the IB loss, ours against theirs.
#[derive(Debug, Clone, Serialize)]
pub struct GradientCheck {
    pub images: usize,
    /// The IB loss in their convention (ours with their DCT log-determinant put back).
    pub loss_reference: f64,
    pub loss_ours: f64,
    /// `‖g‖` over every trained parameter, μ and φ included (what the clipping sees).
    pub grad_norm_reference: f64,
    pub grad_norm_ours: f64,
    /// Largest `|∂L/∂μ|` difference, and the largest `|∂L/∂μ|` it compares with.
    pub max_abs_grad_mu_diff: f64,
    pub max_abs_grad_mu: f64,
    pub max_abs_grad_phi_diff: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub weights: String,
    pub run: String,
    pub tensors: usize,
    pub check: Option<CheckReport>,
    pub gradients: Option<GradientCheck>,
    pub test: TestReport,
}

impl BackendJob for ImportJob {
    type Output = ImportReport;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<ImportReport> {
        let mut cfg = match &self.config {
            Some(path) => read_toml::<IbInnTrainConfig>(path)?,
            None => IbInnTrainConfig::default(),
        };
        cfg.dataset = self.dataset;
        cfg.test_limit = self.test_limit;
        cfg.calibrate_batch_norm = false;
        cfg.model
            .validate()
            .map_err(|e| anyhow::anyhow!("the model config: {e}"))?;

        let bytes = std::fs::read(&self.weights)
            .with_context(|| format!("cannot read {}", self.weights.display()))?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| {
            anyhow::anyhow!("{} is not a safetensors file: {e}", self.weights.display())
        })?;
        let get = |key: &str| read_f32(&file, key);
        let model: IbInn<B::InnerBackend> =
            load_reference_weights(cfg.model.init(&device), &get)
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.weights.display()))?;
        let check = check_batch(&model, &file, &device)
            .with_context(|| format!("the check batch of {}", self.weights.display()))?;
        let gradients = gradient_check::<B>(&cfg, &get, &file, &device)
            .with_context(|| format!("the gradient batch of {}", self.weights.display()))?;

        let run = RunDir::open(&self.run, false)?;
        if run.path(MODEL_FILE).exists() {
            bail!(
                "{} already holds a model; choose another --name",
                self.run.display()
            );
        }
        write_model(&run, model.clone(), &cfg.model)?;
        run.write_toml("config.toml", &cfg)?;
        let test = load_split(&cfg, Split::Test, cfg.test_limit)?;
        let test = import_scores(&cfg, &model, &test, backend, &run)?;
        let report = ImportReport {
            weights: self.weights.display().to_string(),
            run: self.run.display().to_string(),
            tensors: file.len(),
            check,
            gradients,
            test,
        };
        crate::fsutil::write_json(&run.path("import.json"), &report)?;
        Ok(report)
    }
}

/// A tensor of the file as f32, `None` when the file has no such key.
fn read_f32(file: &SafeTensors, key: &str) -> Option<StoredTensor> {
    let view = file.tensor(key).ok()?;
    let data = view.data();
    let values = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => return None,
    };
    Some((view.shape().to_vec(), values))
}

/// A tensor the file's check batch needs.
fn required(file: &SafeTensors, key: &str) -> Result<StoredTensor> {
    read_f32(file, key).with_context(|| format!("`{key}` is missing"))
}

fn check_batch<B: Backend>(
    model: &IbInn<B>,
    file: &SafeTensors,
    device: &B::Device,
) -> Result<Option<CheckReport>> {
    let Some((xs, x)) = read_f32(file, "check.x") else {
        return Ok(None);
    };
    let need = |key| required(file, key);
    let ((_, z_ref), (_, l_x_ref), (_, logits_ref)) =
        (need("check.z")?, need("check.l_x")?, need("check.logits")?);
    let [c, h, w] = model.input_shape();
    let n = xs.first().copied().unwrap_or(0);
    if xs.iter().product::<usize>() != n * c * h * w || n == 0 {
        bail!("`check.x` has shape {xs:?}, the model takes [N, {c}, {h}, {w}]");
    }
    let (d, k) = (model.dim(), model.n_classes());
    if z_ref.len() != n * d || l_x_ref.len() != n || logits_ref.len() != n * k {
        bail!("the check tensors do not have {n} rows of the model's sizes (D = {d}, K = {k})");
    }
    let x = Tensor::<B, 4>::from_data(TensorData::new(x, [n, c, h, w]), device);
    let (blocks, z, log_det) = block_diffs(model, file, x)?;
    let z = z.reshape([n, d]);
    let out = model.output_from_latent(z.clone(), log_det, None);
    let z = host(z);
    let offset = (model.reference_log_det_offset() / d as f64) as f32;
    let l_x = host(out.l_x)
        .into_iter()
        .map(|v| v + offset)
        .collect::<Vec<_>>();
    let logits = host(out.logits);
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    let mismatches = logits
        .chunks(k)
        .zip(logits_ref.chunks(k))
        .filter(|(a, b)| argmax(a) != argmax(b))
        .count();
    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
    Ok(Some(CheckReport {
        images: n,
        max_abs_z_diff: max_abs_diff(&z, &z_ref),
        max_abs_z: max_abs(&z_ref),
        l_x_reference: mean(&l_x_ref),
        l_x_ours: mean(&l_x),
        max_abs_l_x_diff: max_abs_diff(&l_x, &l_x_ref),
        max_abs_logit_diff: max_abs_diff(&logits, &logits_ref),
        prediction_mismatches: mismatches,
        blocks,
    }))
}

/// The exporter's `--grad-batch`: the same weights, without dropout, in training mode on its
/// batch; the loss, the global gradient norm and the gradients of μ and φ against theirs. This
/// runs our training path (batch statistics, the hand-written backward passes of the
/// convolutions, batch norm and couplings), which the eval-mode check does not.
fn gradient_check<B: AutodiffBackend>(
    cfg: &IbInnTrainConfig,
    get: &dyn Fn(&str) -> Option<StoredTensor>,
    file: &SafeTensors,
    device: &B::Device,
) -> Result<Option<GradientCheck>> {
    let Some((xs, x)) = read_f32(file, "check.train.x") else {
        return Ok(None);
    };
    let need = |key| required(file, key);
    let (labels, loss_ref, norm_ref) = (
        need("check.train.labels")?.1,
        need("check.train.loss")?.1,
        need("check.train.grad_norm")?.1,
    );
    let (mu_ref, phi_ref) = (
        need("check.train.grad_mu")?.1,
        need("check.train.grad_phi")?.1,
    );
    let mut arch = cfg.model.clone();
    for stage in &mut arch.stages {
        stage.dropout = 0.0;
    }
    arch.fc_dropout = 0.0;
    let model: IbInn<B> =
        load_reference_weights(arch.init(device), get).map_err(anyhow::Error::msg)?;
    let [c, h, w] = model.input_shape();
    let n = labels.len();
    if x.len() != n * c * h * w {
        bail!("`check.train.x` has shape {xs:?}, not {n} images of [{c}, {h}, {w}]");
    }
    let x = Tensor::<B, 4>::from_data(TensorData::new(x, [n, c, h, w]), device);
    let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [n]), device);
    let targets = smooth_one_hot(labels, model.n_classes(), cfg.label_smoothing);
    let out = model.forward_output(x, Some(targets));
    let l_y = out.l_y.context("targets were given")?;
    let loss = ib_objective(out.l_x.mean(), l_y.mean(), cfg.beta);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    // Their L_x counts the DCT's log-determinant their way, a constant with no gradient.
    let offset = model.reference_log_det_offset() / model.dim() as f64;
    let loss_ours = f64::from(loss.into_scalar().elem::<f32>()) + 2.0 / (1.0 + cfg.beta) * offset;

    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: f64,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                self.total += f64::from(g.square().sum().into_scalar().elem::<f32>());
            }
        }
    }
    let mut sum = SumSquares {
        grads: &grads,
        total: 0.0,
    };
    model.visit(&mut sum);
    let mu = grads
        .get::<B::InnerBackend, 2>(model.mu.id)
        .context("μ has no gradient")?;
    let phi = grads
        .get::<B::InnerBackend, 1>(model.phi.id)
        .context("φ has no gradient")?;
    let (mu, phi) = (host(mu), host(phi));
    Ok(Some(GradientCheck {
        images: n,
        loss_reference: f64::from(loss_ref[0]),
        loss_ours,
        grad_norm_reference: f64::from(norm_ref[0]),
        grad_norm_ours: sum.total.sqrt(),
        max_abs_grad_mu_diff: max_abs_diff(&mu, &mu_ref),
        max_abs_grad_mu: max_abs(&mu_ref),
        max_abs_grad_phi_diff: max_abs_diff(&phi, &phi_ref),
    }))
}

/// Runs `x` through the model's blocks, setting each block's output against the reference node
/// it stands for where the file has that node's output (`check.node.<k>`); returns the
/// comparisons, the last block's output and the summed log-determinant. The reference's chain
/// has nodes before its first coupling that ours has not (a reshape), so the two are aligned
/// at the first coupling.
fn block_diffs<B: Backend>(
    model: &IbInn<B>,
    file: &SafeTensors,
    x: Tensor<B, 4>,
) -> Result<(Vec<BlockDiff>, Tensor<B, 4>, Tensor<B, 1>)> {
    let ours_first = model
        .inn
        .blocks
        .iter()
        .position(|b| matches!(b, FlowBlock::AllInOne(_)));
    let theirs_first = (0usize..8).find(|k| file.tensor(&format!("inn.module_list.{k}.w")).is_ok());
    let offset = match (ours_first, theirs_first) {
        (Some(a), Some(k0)) => k0.checked_sub(a),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut h, mut log_det) = (x, None::<Tensor<B, 1>>);
    for (i, block) in model.inn.blocks.iter().enumerate() {
        let (y, ld) = Flow::forward(block, h);
        h = y;
        log_det = Some(match log_det {
            Some(sum) => sum + ld,
            None => ld,
        });
        let Some(node) = offset.map(|o| i + o) else {
            continue;
        };
        let Some((_, theirs)) = read_f32(file, &format!("check.node.{node}")) else {
            continue;
        };
        let ours = host(h.clone());
        if ours.len() != theirs.len() {
            bail!(
                "block {i} ({}) gives {} values per batch, the reference's node {node} {}",
                block.kind(),
                ours.len(),
                theirs.len()
            );
        }
        out.push(BlockDiff {
            block: i,
            kind: block.kind().to_string(),
            max_abs_diff: max_abs_diff(&ours, &theirs),
            max_abs: max_abs(&theirs),
        });
    }
    let log_det = log_det.context("the model has no blocks")?;
    Ok((out, h, log_det))
}

/// Largest `|v_i|`.
fn max_abs(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max)
}

/// Largest `|a_i − b_i|`.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

/// Where the import's report goes.
pub fn report_path(run: &Path) -> PathBuf {
    run.join("import.json")
}
