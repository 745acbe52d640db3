//! `evaluate --heatmaps`: every heatmap method on the IB-INN and on the suite's CNN, scored by
//! deletion and insertion (and, on FakeMNIST, the share of the mass in the label column).

use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::predictions;
use cfx_datasets::{DatasetKind, ImageSet};
use cfx_metrics::{
    ColumnMass, DataRange, Deletion, EvalContext, HeatmapMetric, HeatmapSet, Insertion, Summary,
    evaluate_heatmaps,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use super::{EvaluateJob, unit_pixels};
use crate::explain::runner::host;
use crate::heatmaps::{ExplainedModel, HeatmapContext, HeatmapMethod, build};

#[derive(Debug, Clone, Serialize)]
pub struct HeatmapResult {
    /// `IB-INN` or `CNN`.
    pub model: String,
    pub method: HeatmapMethod,
    pub samples: usize,
    pub seconds_per_map: f64,
    pub metric_seconds: f64,
    pub metrics: Vec<Summary>,
}

impl EvaluateJob {
    /// Heatmaps of the first `heatmap_limit` test images towards one random class each, per
    /// explained model (the IB-INN when given, the suite's CNN), scored on that model.
    pub(super) fn heatmap_results<B: AutodiffBackend>(
        &self,
        dataset: DatasetKind,
        range: DataRange,
        test: &ImageSet,
        device: &B::Device,
    ) -> Result<Vec<HeatmapResult>> {
        let mut runs = vec![];
        if let Some(ib) = &self.ibinn {
            runs.push(ib.clone());
        }
        runs.push(self.suite.join("classifier"));
        let n = self.heatmap_limit.min(test.len());
        let shape = test.image_shape();
        let chw: usize = shape.iter().product();
        let pixels = unit_pixels(test, n);
        let mut out = vec![];
        for run in runs {
            let model = ExplainedModel::<B>::load(&run, device)?;
            let methods: Vec<HeatmapMethod> = self
                .heatmaps
                .iter()
                .copied()
                .filter(|m| {
                    *m != HeatmapMethod::Ecinnh || matches!(model, ExplainedModel::IbInn(_))
                })
                .collect();
            let ctx = HeatmapContext {
                run: &run,
                dataset,
                data_dir: self.data_dir.as_deref(),
                shap_baselines: self.shap_baselines,
                seed: self.seed,
                batch_size: self.batch_size.max(2),
                pixels: self.pixels,
            };
            let attributions = build::<B>(&methods, &model, &ctx, device)?;
            let inner = model.inner();
            let k = inner.n_classes();
            let mut metrics: Vec<Box<dyn HeatmapMetric<B::InnerBackend>>> = vec![
                Box::new(Deletion::default()),
                Box::new(Insertion::default()),
            ];
            if dataset == DatasetKind::FakeMnist {
                metrics.push(Box::new(ColumnMass { column: 0 }));
            }
            let eval_ctx = EvalContext {
                classifier: inner.as_ref(),
                range,
                device: device.clone(),
                batch_size: self.batch_size.max(1),
            };
            // One set of targets per model, shared by its methods.
            let mut rng = StdRng::seed_from_u64(self.seed);
            let b = self.batch_size.max(1);
            let batches: Vec<_> = (0..n)
                .step_by(b)
                .map(|start| {
                    let rows = start..(start + b).min(n);
                    let x = cfx_metrics::image_rows::<B::InnerBackend>(
                        &pixels,
                        rows.clone(),
                        shape,
                        device,
                    );
                    let predicted = predictions(inner.logits(x.clone()));
                    let queries = crate::explain::TargetMode::Random
                        .queries(&predicted, k, &mut rng)
                        .0;
                    (rows, x, predicted, queries)
                })
                .collect();
            for (m, a) in methods.iter().zip(&attributions) {
                let mut set = HeatmapSet {
                    shape,
                    ..Default::default()
                };
                let mut seconds = 0.0;
                for (rows, x, predicted, queries) in &batches {
                    let h = a
                        .heatmaps(x.clone(), queries)
                        .with_context(|| format!("{} heatmaps on {}", m.name(), run.display()))?;
                    seconds += h.seconds;
                    set.maps.extend(host(h.maps));
                    set.inputs
                        .extend_from_slice(&pixels[rows.start * chw..rows.end * chw]);
                    set.sources.extend(predicted);
                    set.targets.extend(queries.iter().map(|q| q.target));
                }
                let t = Instant::now();
                let summaries = evaluate_heatmaps(&metrics, &set, &eval_ctx)
                    .with_context(|| format!("scoring {} heatmaps", m.name()))?;
                eprintln!(
                    "{} on the {}: {} heatmaps scored",
                    m.name(),
                    model.label(),
                    set.len()
                );
                out.push(HeatmapResult {
                    model: model.label().into(),
                    method: *m,
                    samples: set.len(),
                    seconds_per_map: seconds / set.len().max(1) as f64,
                    metric_seconds: t.elapsed().as_secs_f64(),
                    metrics: summaries,
                });
            }
        }
        Ok(out)
    }
}
