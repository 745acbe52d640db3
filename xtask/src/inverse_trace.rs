//! `cargo xtask inverse-trace`: where ECINN's inverse pass leaves the range the IB-INN's blocks
//! see on real images.
//!
//! Why: on some trained models the α1 counterfactuals of a fraction of the queries come back
//! with pixels far outside [0, 1] (docs/results.md, "The full IB-INN rebuilt on FakeMNIST"),
//! although the model reconstructs every test image to 1e-6. The moved latent is decoded block
//! by block here, and each block's input on the way back is set against the largest input that
//! block gets on the way forward over the same test images: the first block (counting from the
//! latent) whose input exceeds that envelope is where a query diverges.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::{IbInnClassifier, predictions};
use cfx_counterfactual::Ecinn;
use cfx_datasets::{Augmentation, Split, ordered_batches};
use cfx_linalg::LinalgBackend;
use serde::Serialize;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::backend::{BackendJob, BackendKind};
use crate::explain::TargetMode;
use crate::train::ibinn::{IbInnTrainConfig, load_split, load_trained};
use crate::train::run::read_toml;

#[derive(Debug, Clone)]
pub struct InverseTraceJob {
    /// A finished `train ib-inn` run.
    pub model: PathBuf,
    /// The first N test images, each with all other classes as targets.
    pub limit: usize,
    pub batch_size: usize,
    /// A block's input counts as out of range beyond this multiple of the envelope.
    pub factor: f64,
    /// A counterfactual counts as diverged beyond this mean |x̂ − x| per pixel (unit space).
    pub diverged_change: f64,
}

/// One block, seen from the queries' inverse passes.
#[derive(Debug, Clone, Serialize)]
pub struct BlockTrace {
    pub index: usize,
    pub kind: String,
    /// `[C, H, W]` going in.
    pub input_shape: [usize; 3],
    /// Largest |input| over the test images on the way forward.
    pub envelope: f64,
    /// Median over the queries of (largest |input| on the way back) / envelope, for the
    /// queries whose counterfactual stayed near the input and for those that diverged.
    pub median_ratio_kept: Option<f64>,
    pub median_ratio_diverged: Option<f64>,
    /// Queries whose inverse pass first leaves the envelope (by `factor`) at this block.
    pub first_out_of_range: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct InverseTraceReport {
    pub model: String,
    pub dataset: String,
    pub backend: String,
    pub images: usize,
    pub queries: usize,
    pub diverged: usize,
    /// Queries whose counterfactual has a pixel more than half the pixel range outside
    /// `[0, 1]`: `explain`'s `out_of_range` flag. Unlike `diverged` it does not depend on how
    /// much a counterfactual of the dataset should change (one pixel on FakeMNIST, a stroke on
    /// MNIST).
    pub out_of_range_at_image: usize,
    /// Diverged queries whose inverse never left the envelope by `factor` before the image.
    pub diverged_in_range: usize,
    pub factor: f64,
    pub diverged_change: f64,
    pub blocks: Vec<BlockTrace>,
}

impl InverseTraceReport {
    /// The blocks where something happens, for docs/results.md.
    pub fn markdown(&self) -> String {
        let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.3}"));
        let mut s = String::from(
            "| block | kind | input | envelope | ratio, kept | ratio, diverged | first out of range |\n| ---: | --- | --- | ---: | ---: | ---: | ---: |\n",
        );
        let last = self.blocks.len().saturating_sub(1);
        for b in &self.blocks {
            let worth = b.first_out_of_range > 0 || b.index == 0 || b.index == last;
            if !worth {
                continue;
            }
            let [c, h, w] = b.input_shape;
            s.push_str(&format!(
                "| {} | {} | {c}×{h}×{w} | {:.3} | {} | {} | {} |\n",
                b.index,
                b.kind,
                b.envelope,
                f(b.median_ratio_kept),
                f(b.median_ratio_diverged),
                b.first_out_of_range
            ));
        }
        s
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// Largest |x| of each sample, `[N]`.
fn max_abs<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 1> {
    let n = x.dims()[0];
    x.abs().reshape([n as i32, -1]).max_dim(1).reshape([n])
}

fn host<B: Backend>(x: Tensor<B, 1>) -> Result<Vec<f64>> {
    x.into_data()
        .convert::<f64>()
        .to_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

impl BackendJob for InverseTraceJob {
    type Output = InverseTraceReport;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<InverseTraceReport> {
        anyhow::ensure!(self.batch_size > 0, "--batch-size must be at least 1");
        anyhow::ensure!(self.limit > 0, "--limit must be at least 1");
        let cfg: IbInnTrainConfig = read_toml(&self.model.join("config.toml"))
            .with_context(|| format!("{} is not an IB-INN run", self.model.display()))?;
        let classifier =
            IbInnClassifier::new(load_trained::<B::InnerBackend>(&self.model, &device)?);
        let means = crate::explain::runner::ecinn_means(
            &classifier,
            &self.model,
            cfg.dataset,
            cfg.data_dir.as_deref(),
            &device,
        )?;
        let test = load_split(&cfg, Split::Test, Some(self.limit))?;
        // ECINN's own α1 latents (its defaults: α1, empirical centres), decoded here block by
        // block instead of by its decoder.
        let ecinn = Ecinn::new(classifier, &means)?;
        let (classifier, model) = (&ecinn.classifier, &ecinn.classifier.model);
        let (d, k) = (model.dim(), model.n_classes());
        let n_blocks = model.inn.blocks.len();

        // Per block: the forward envelope, and for every query its inverse maximum.
        let mut envelope = vec![0f64; n_blocks];
        let mut back: Vec<Vec<f64>> = vec![Vec::new(); n_blocks];
        let mut change: Vec<f64> = Vec::new();
        let mut out_of_range_at_image = 0;
        // `All` draws no random target; the generator only fills the signature.
        let mut rng = StdRng::seed_from_u64(0);
        for batch in ordered_batches(&test, self.batch_size, Augmentation::UNIT, 0) {
            let unit = batch.to_device::<B::InnerBackend>(&device).images;
            let n = unit.dims()[0];
            let (z, forward) = model.inn.forward_inputs(classifier.to_model(unit.clone()));
            for (e, f) in envelope.iter_mut().zip(forward) {
                *e = e.max(f.abs().max().into_scalar().elem::<f64>());
            }
            let z = z.reshape([n, d]);
            let predicted = predictions(model.logits_from_latent(z.clone()));
            let queries = TargetMode::All.queries(&predicted, k, &mut rng).0;
            let q = queries.len();
            let (moved, _, _) = ecinn.moved_latents(z, &predicted, &queries, &[ecinn.alpha]);
            let (x_hat, inverse) = model.inn.inverse_inputs(moved.reshape([q, d, 1, 1]));
            for (b, h) in back.iter_mut().zip(inverse) {
                b.extend(host(max_abs(h))?);
            }
            let [_, c, h, w] = unit.dims();
            let x_hat = classifier.to_unit(x_hat.reshape([q, c, h, w]));
            out_of_range_at_image += cfx_counterfactual::pixels_out_of_range(x_hat.clone())
                .int()
                .sum()
                .into_scalar()
                .elem::<i64>() as usize;
            let rows: Vec<i64> = queries.iter().map(|q| q.input as i64).collect();
            let rows = Tensor::<B::InnerBackend, 1, Int>::from_ints(rows.as_slice(), &device);
            let per_pixel = (x_hat - unit.select(0, rows))
                .abs()
                .reshape([q as i32, -1])
                .mean_dim(1)
                .reshape([q]);
            change.extend(host(per_pixel)?);
        }

        let diverged: Vec<bool> = change
            .iter()
            .map(|&c| c.is_nan() || c > self.diverged_change)
            .collect();
        let queries = change.len();
        // The inverse runs from the last block to the first: a query's first out-of-range block
        // is the highest index whose input exceeds the envelope.
        let mut first = vec![0usize; n_blocks];
        let mut diverged_in_range = 0;
        for qi in (0..queries).filter(|&qi| diverged[qi]) {
            let out = (0..n_blocks)
                .rev()
                .find(|&b| back[b][qi].is_nan() || back[b][qi] > self.factor * envelope[b]);
            match out {
                Some(b) => first[b] += 1,
                None => diverged_in_range += 1,
            }
        }
        let shapes = model.inn.block_input_shapes(model.input_shape());
        let blocks = (0..n_blocks)
            .map(|b| {
                let ratios = |want: bool| {
                    median(
                        (0..queries)
                            .filter(|&qi| diverged[qi] == want)
                            .map(|qi| back[b][qi] / envelope[b])
                            .collect(),
                    )
                };
                BlockTrace {
                    index: b,
                    kind: model.inn.blocks[b].kind().to_string(),
                    input_shape: shapes[b],
                    envelope: envelope[b],
                    median_ratio_kept: ratios(false),
                    median_ratio_diverged: ratios(true),
                    first_out_of_range: first[b],
                }
            })
            .collect();
        let report = InverseTraceReport {
            model: self.model.display().to_string(),
            dataset: test.name.clone(),
            backend: backend.to_string(),
            images: test.len(),
            queries,
            diverged: diverged.iter().filter(|&&d| d).count(),
            out_of_range_at_image,
            diverged_in_range,
            factor: self.factor,
            diverged_change: self.diverged_change,
            blocks,
        };
        crate::fsutil::write_json(&report_path(&self.model), &report)?;
        Ok(report)
    }
}

pub fn report_path(model: &Path) -> PathBuf {
    model.join("inverse-trace.json")
}
