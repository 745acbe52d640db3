//! `cargo xtask log-det`: where a trained IB-INN's `L_x` comes from, block by block.
//!
//! `L_x = −logsumexp_y(−½‖z − μ_y‖² + log w_y)/D − log|det J|/D`. The first term is small and
//! bounded below; the density a model reaches is mostly its log-determinant, and IB-INN's
//! couplings soft-clamp every log-scale (`0.7·tanh(0.1·s)` per coupled dimension), so each
//! block has a ceiling. Set against it, a model's log-determinant says how much of `L_x` its
//! couplings could still gain by scaling harder, and which stage holds the rest: the question
//! behind the gap between our BPD and the papers' (docs/results.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_datasets::{Augmentation, Split, ordered_batches};
use cfx_flows::Flow;
use cfx_linalg::LinalgBackend;
use serde::Serialize;

use crate::backend::{BackendJob, BackendKind};
use crate::train::ibinn::{IbInnTrainConfig, load_split, load_trained};
use crate::train::run::read_toml;

#[derive(Debug, Clone)]
pub struct LogDetJob {
    /// A finished `train ib-inn` run.
    pub model: PathBuf,
    /// The first N test images; `None`: those the run was tested on (its `test_limit`), so that
    /// `L_x` is `test.json`'s `l_x_clean`.
    pub limit: Option<usize>,
    pub batch_size: usize,
}

/// Consecutive blocks of one kind at one resolution, taken together.
#[derive(Debug, Clone, Serialize)]
pub struct BlockGroup {
    pub kind: String,
    pub blocks: usize,
    /// `[C, H, W]` going in.
    pub input_shape: [usize; 3],
    /// Mean over the images of the group's log-determinant, nats per model dimension.
    pub log_det_per_dim: f64,
    /// The most the group can reach ([`Flow::log_det_ceiling`]), nats per dimension.
    pub ceiling_per_dim: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogDetReport {
    pub model: String,
    pub dataset: String,
    pub backend: String,
    pub images: usize,
    pub dimension: usize,
    /// Clean test images, in the model's input scale (as `test.json`'s `l_x_clean`).
    pub l_x: f64,
    /// `L_x + log|det J|/D`: the latent term alone.
    pub latent_term: f64,
    pub log_det_per_dim: f64,
    pub ceiling_per_dim: f64,
    /// What IB-INN's test code would print for this `L_x` (`test.json`'s
    /// `bpd_reference_convention`).
    pub bpd_reference_convention: f64,
    pub groups: Vec<BlockGroup>,
}

impl LogDetReport {
    /// The table of docs/results.md.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| blocks | input | log-det (nats/dim) | ceiling | headroom |\n| --- | --- | ---: | ---: | ---: |\n",
        );
        for g in &self.groups {
            let [c, h, w] = g.input_shape;
            s.push_str(&format!(
                "| {} × {} | {c}×{h}×{w} | {:.3} | {:.3} | {:.3} |\n",
                g.blocks,
                g.kind,
                g.log_det_per_dim,
                g.ceiling_per_dim,
                g.ceiling_per_dim - g.log_det_per_dim
            ));
        }
        s.push_str(&format!(
            "| all | | {:.3} | {:.3} | {:.3} |\n",
            self.log_det_per_dim,
            self.ceiling_per_dim,
            self.ceiling_per_dim - self.log_det_per_dim
        ));
        s
    }
}

impl BackendJob for LogDetJob {
    type Output = LogDetReport;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<LogDetReport> {
        anyhow::ensure!(self.batch_size > 0, "--batch-size must be at least 1");
        let cfg: IbInnTrainConfig = read_toml(&self.model.join("config.toml"))
            .with_context(|| format!("{} is not an IB-INN run", self.model.display()))?;
        let model = load_trained::<B::InnerBackend>(&self.model, &device)?;
        let test = load_split(&cfg, Split::Test, self.limit.or(cfg.test_limit))?;
        let blocks = &model.inn.blocks;
        let d = model.dim();
        let shapes = model.inn.block_input_shapes(model.input_shape());
        // Per-block sums over the images, then one host read at the end.
        let mut sums: Option<Tensor<B::InnerBackend, 1>> = None;
        for host in ordered_batches(&test, self.batch_size, Augmentation::IBINN_EVAL, 0) {
            let n = host.labels.len();
            let x = host.to_device::<B::InnerBackend>(&device).images;
            let (z, parts) = model.inn.forward_per_block(x);
            let total = parts.iter().cloned().reduce(|a, b| a + b).expect("blocks");
            let l_x = model.output_from_latent(z.reshape([n, d]), total, None).l_x;
            let mut row: Vec<_> = parts.into_iter().map(|p| p.sum()).collect();
            row.push(l_x.sum());
            let row = Tensor::cat(row, 0);
            sums = Some(match sums {
                Some(s) => s + row,
                None => row,
            });
        }
        let sums: Vec<f64> = sums
            .context("the test set is empty")?
            .into_data()
            .convert::<f64>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let per_image_dim = (test.len() * d) as f64;
        let l_x = sums[blocks.len()] / test.len() as f64;

        let mut groups: Vec<BlockGroup> = Vec::new();
        for ((block, &shape), &sum) in blocks.iter().zip(&shapes).zip(&sums) {
            let ceiling = block.log_det_ceiling(shape).with_context(|| {
                format!("a {} has no log-det ceiling to compare with", block.kind())
            })? / d as f64;
            let mean = sum / per_image_dim;
            match groups.last_mut() {
                Some(g) if g.kind == block.kind() && g.input_shape == shape => {
                    g.blocks += 1;
                    g.log_det_per_dim += mean;
                    g.ceiling_per_dim += ceiling;
                }
                _ => groups.push(BlockGroup {
                    kind: block.kind().to_string(),
                    blocks: 1,
                    input_shape: shape,
                    log_det_per_dim: mean,
                    ceiling_per_dim: ceiling,
                }),
            }
        }
        let log_det_per_dim: f64 = groups.iter().map(|g| g.log_det_per_dim).sum();
        let ceiling_per_dim: f64 = groups.iter().map(|g| g.ceiling_per_dim).sum();
        let report = LogDetReport {
            model: self.model.display().to_string(),
            dataset: test.name.clone(),
            backend: backend.to_string(),
            images: test.len(),
            dimension: d,
            l_x,
            latent_term: l_x + log_det_per_dim,
            log_det_per_dim,
            ceiling_per_dim,
            bpd_reference_convention: model.reference_bits_per_dim(l_x),
            groups,
        };
        crate::fsutil::write_json(&report_path(&self.model), &report)?;
        Ok(report)
    }
}

pub fn report_path(model: &Path) -> PathBuf {
    model.join("log-det.json")
}
