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
//! the authors' function. A gradient batch (`check.train.*`) takes the same test to one
//! training-mode pass and its gradient, and step batches (`check.steps.*` with the weights after
//! them, `after.*`) to the optimiser's steps and the batch-norm statistics they move.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_datasets::{ImageBatch, Split};
use cfx_flows::Flow;
use cfx_flows::blocks::FlowBlock;
use cfx_flows::ibinn::{IbInn, StoredTensor, load_reference_weights};
use cfx_linalg::LinalgBackend;
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use crate::backend::{BackendJob, BackendKind};
use crate::explain::runner::host;
use crate::train::ibinn::{
    IbInnTrainConfig, MODEL_FILE, TestReport, import_scores, load_split, optimizer, shard_loss,
    write_model,
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

/// K optimiser steps from the same weights on the same batches (`--step-batches`), ours against
/// theirs: what the gradient check leaves out, the update itself (momentum groups, weight
/// decay, clipping, the learning-rate factors) and the batch-norm statistics it moves.
#[derive(Debug, Clone, Serialize)]
pub struct StepCheck {
    pub steps: usize,
    pub images_per_step: usize,
    /// Each step's IB loss in their convention, before its update.
    pub loss_reference: Vec<f64>,
    pub loss_ours: Vec<f64>,
    /// Each step's gradient norm before clipping.
    pub grad_norm_reference: Vec<f64>,
    pub grad_norm_ours: Vec<f64>,
    /// Parameters and batch-norm statistics compared after the last step.
    pub tensors: usize,
    /// Largest `|W_ours − W_ref|` after the steps, over every tensor, and the largest distance
    /// the steps moved a value of theirs, `|W_ref − W_0|`.
    pub max_abs_diff: f64,
    pub max_abs_moved: f64,
    /// The tensor whose difference is the largest share of its own movement.
    pub worst: WorstTensor,
    /// The eval-mode check batch through both stepped models: `max |z_ours − z_ref|`, `max |z_ref|`.
    pub max_abs_z_diff: Option<f64>,
    pub max_abs_z: Option<f64>,
}

/// One tensor of the model: its path in our module tree, its largest difference from theirs
/// after the steps and the largest distance the steps moved it in theirs.
#[derive(Debug, Clone, Serialize)]
pub struct WorstTensor {
    pub path: String,
    pub max_abs_diff: f64,
    pub max_abs_moved: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub weights: String,
    pub run: String,
    pub tensors: usize,
    pub check: Option<CheckReport>,
    pub gradients: Option<GradientCheck>,
    pub steps: Option<StepCheck>,
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
        let steps = step_check::<B>(&cfg, &get, &file, &device)
            .with_context(|| format!("the step batches of {}", self.weights.display()))?;

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
            steps,
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
    let Some(x) = stored_images::<B>(file, "check.x", model.input_shape(), device)? else {
        return Ok(None);
    };
    let need = |key| required(file, key);
    let ((_, z_ref), (_, l_x_ref), (_, logits_ref)) =
        (need("check.z")?, need("check.l_x")?, need("check.logits")?);
    let n = x.dims()[0];
    let (d, k) = (model.dim(), model.n_classes());
    if z_ref.len() != n * d || l_x_ref.len() != n || logits_ref.len() != n * k {
        bail!("the check tensors do not have {n} rows of the model's sizes (D = {d}, K = {k})");
    }
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

/// Images at `key` (`[N, C, H, W]` of the model's `[C, H, W]`) as a tensor; `None` when the
/// file has no such key.
fn stored_images<B: Backend>(
    file: &SafeTensors,
    key: &str,
    [c, h, w]: [usize; 3],
    device: &B::Device,
) -> Result<Option<Tensor<B, 4>>> {
    let Some((shape, x)) = read_f32(file, key) else {
        return Ok(None);
    };
    let n = shape.first().copied().unwrap_or(0);
    if n == 0 || x.len() != n * c * h * w {
        bail!("`{key}` has shape {shape:?}, the model takes [N, {c}, {h}, {w}]");
    }
    Ok(Some(Tensor::from_data(
        TensorData::new(x, [n, c, h, w]),
        device,
    )))
}

/// Training images their code ran (`<prefix>.x`), their labels (`.labels`) and the loss and
/// gradient norm their code gave (`.loss`, `.grad_norm`; one per step).
struct ReferenceBatch<B: Backend> {
    images: Tensor<B, 4>,
    labels: Tensor<B, 1, Int>,
    loss: Vec<f32>,
    grad_norm: Vec<f32>,
}

/// The file's batch under `prefix`; `None` when it has none, an error naming the key when it is
/// incomplete or does not fit the model.
fn reference_batch<B: Backend>(
    file: &SafeTensors,
    prefix: &str,
    input_shape: [usize; 3],
    device: &B::Device,
) -> Result<Option<ReferenceBatch<B>>> {
    let Some(images) = stored_images(file, &format!("{prefix}.x"), input_shape, device)? else {
        return Ok(None);
    };
    let need = |key: &str| required(file, &format!("{prefix}.{key}")).map(|t| t.1);
    let labels = need("labels")?;
    let n = images.dims()[0];
    if labels.len() != n {
        bail!(
            "`{prefix}.labels` has {} labels for {n} images",
            labels.len()
        );
    }
    let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Ok(Some(ReferenceBatch {
        images,
        labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        loss: need("loss")?,
        grad_norm: need("grad_norm")?,
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
    let Some(batch) = reference_batch::<B>(file, "check.train", cfg.model.input_shape, device)?
    else {
        return Ok(None);
    };
    let need = |key| required(file, key);
    let (mu_ref, phi_ref) = (
        need("check.train.grad_mu")?.1,
        need("check.train.grad_phi")?.1,
    );
    let model: IbInn<B> = without_dropout(cfg, get, device)?;
    let n = batch.images.dims()[0];
    let loss = training_loss(cfg, &model, batch.images, batch.labels);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let loss_ours = reference_loss(cfg, &model, loss);

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
        loss_reference: f64::from(batch.loss[0]),
        loss_ours,
        grad_norm_reference: f64::from(batch.grad_norm[0]),
        grad_norm_ours: sum.total.sqrt(),
        max_abs_grad_mu_diff: max_abs_diff(&mu, &mu_ref),
        max_abs_grad_mu: max_abs(&mu_ref),
        max_abs_grad_phi_diff: max_abs_diff(&phi, &phi_ref),
    }))
}

/// The file's weights in our model without dropout, as the exporter trains for its gradient
/// and step batches.
fn without_dropout<B: Backend>(
    cfg: &IbInnTrainConfig,
    get: &dyn Fn(&str) -> Option<StoredTensor>,
    device: &B::Device,
) -> Result<IbInn<B>> {
    let mut arch = cfg.model.clone();
    for stage in &mut arch.stages {
        stage.dropout = 0.0;
    }
    arch.fc_dropout = 0.0;
    load_reference_weights(arch.init(device), get).map_err(anyhow::Error::msg)
}

/// The training-mode IB loss (batch statistics): the trainer's own [`shard_loss`] on the
/// whole batch.
fn training_loss<B: AutodiffBackend>(
    cfg: &IbInnTrainConfig,
    model: &IbInn<B>,
    images: Tensor<B, 4>,
    labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let batch = ImageBatch {
        images,
        labels,
        aux_labels: None,
        indices: vec![],
    };
    shard_loss(model, batch, 1.0, cfg).0
}

/// Our loss in their convention: their `L_x` counts the DCT's log-determinant their way, a
/// constant with no gradient.
fn reference_loss<B: Backend>(cfg: &IbInnTrainConfig, model: &IbInn<B>, loss: Tensor<B, 1>) -> f64 {
    let offset = model.reference_log_det_offset() / model.dim() as f64;
    f64::from(loss.into_scalar().elem::<f32>()) + 2.0 / (1.0 + cfg.beta) * offset
}

/// The exporter's `--step-batches`: from the file's weights (dropout off) and a fresh
/// optimiser, the trainer's optimiser (`train ib-inn`'s groups, clipping and learning rate of
/// the first epoch) steps once per batch; the weights and batch-norm statistics after the last
/// step are set against theirs (`after.*`), tensor by tensor, and both stepped models run the
/// check batch in eval mode.
fn step_check<B: AutodiffBackend>(
    cfg: &IbInnTrainConfig,
    get: &dyn Fn(&str) -> Option<StoredTensor>,
    file: &SafeTensors,
    device: &B::Device,
) -> Result<Option<StepCheck>> {
    let input_shape = cfg.model.input_shape;
    let Some(batch) = reference_batch::<B>(file, "check.steps", input_shape, device)? else {
        return Ok(None);
    };
    let (k, images) = (batch.loss.len(), batch.images.dims()[0]);
    if k == 0 || batch.grad_norm.len() != k || images % k != 0 {
        bail!(
            "{k} step losses, {} gradient norms and {images} images do not make equal batches",
            batch.grad_norm.len(),
        );
    }
    let n = images / k;
    let start: IbInn<B> = without_dropout(cfg, get, device)?;
    let after_get = |key: &str| get(&format!("after.{key}"));
    let theirs: IbInn<B::InnerBackend> = without_dropout(cfg, &after_get, device)
        .context("the weights after the steps (`after.*`)")?;

    // Taken now: a clone shares its batch norms' running statistics, which the steps move.
    let w0 = tensors_of(&start.valid());
    let mut optim = optimizer(cfg, &start);
    let mut model = start;
    let (mut loss_ours, mut norm_ours) = (Vec::with_capacity(k), Vec::with_capacity(k));
    let lr = cfg.lr_at(0);
    for step in 0..k {
        let rows = step * n..(step + 1) * n;
        let loss = training_loss(
            cfg,
            &model,
            batch.images.clone().slice(rows.clone()),
            batch.labels.clone().slice(rows),
        );
        let grads = loss.backward();
        loss_ours.push(reference_loss(cfg, &model, loss));
        let norm;
        (model, norm) = optim.step(lr, model, grads);
        norm_ours.push(f64::from(norm.into_scalar().elem::<f32>()));
    }

    let (ours, theirs_w) = (tensors_of(&model.valid()), tensors_of(&theirs));
    if ours.len() != theirs_w.len() {
        bail!(
            "the stepped model has {} tensors, the reference's {}",
            ours.len(),
            theirs_w.len()
        );
    }
    let mut worst = WorstTensor {
        path: String::new(),
        max_abs_diff: 0.0,
        max_abs_moved: 0.0,
    };
    let (mut max_diff, mut max_moved, mut worst_share) = (0.0f64, 0.0f64, -1.0f64);
    for (((path, a), (_, b)), (_, a0)) in ours.iter().zip(&theirs_w).zip(&w0) {
        let diff = max_abs_diff(a, b);
        let moved = max_abs_diff(b, a0);
        max_diff = max_diff.max(diff);
        max_moved = max_moved.max(moved);
        // A tensor the steps did not move must come out equal; its share is the difference.
        let share = if moved > 0.0 { diff / moved } else { diff };
        if share > worst_share {
            worst_share = share;
            worst = WorstTensor {
                path: path.clone(),
                max_abs_diff: diff,
                max_abs_moved: moved,
            };
        }
    }
    let check = stored_images::<B::InnerBackend>(file, "check.x", input_shape, device)?;
    let (max_abs_z_diff, max_abs_z) = match check {
        Some(cx) => {
            let z_ref = host(theirs.encode(cx.clone()).0);
            let z = host(model.valid().encode(cx).0);
            (Some(max_abs_diff(&z, &z_ref)), Some(max_abs(&z_ref)))
        }
        None => (None, None),
    };
    let as_f64 = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
    Ok(Some(StepCheck {
        steps: k,
        images_per_step: n,
        loss_reference: as_f64(batch.loss),
        loss_ours,
        grad_norm_reference: as_f64(batch.grad_norm),
        grad_norm_ours: norm_ours,
        tensors: ours.len(),
        max_abs_diff: max_diff,
        max_abs_moved: max_moved,
        worst,
        max_abs_z_diff,
        max_abs_z,
    }))
}

/// Every float tensor of the model, parameters and batch-norm statistics, with its path in
/// the module tree, in visiting order (the same for two models of one architecture).
fn tensors_of<B: Backend>(model: &IbInn<B>) -> Vec<(String, Vec<f32>)> {
    struct Collect {
        path: Vec<String>,
        out: Vec<(String, Vec<f32>)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.out.push((self.path.join("."), host(param.val())));
        }
    }
    let mut c = Collect {
        path: vec![],
        out: vec![],
    };
    model.visit(&mut c);
    c.out
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
