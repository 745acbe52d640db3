//! `cargo xtask tangent`: the singular values of a flow's generator Jacobian `∂g/∂z` at test
//! images, sorted and averaged (seed 002 fig. 7, right): on data near a low-dimensional manifold
//! most of them are small.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::IbInnClassifier;
use cfx_datasets::Split;
use cfx_flows::Flow;
use cfx_flows::nn::mode;
use cfx_flows::tangent::{generator_jacobian, singular_values};
use cfx_linalg::LinalgBackend;
use serde::Serialize;

use crate::backend::{BackendJob, BackendKind};
use crate::explain::runner::run_dataset;
use crate::train::ibinn::load_trained;

#[derive(Debug, Clone)]
pub struct TangentJob {
    /// An IB-INN run (the flow `g⁻¹`).
    pub flow: PathBuf,
    pub data_dir: Option<PathBuf>,
    /// The first N test images.
    pub count: usize,
    /// Copies of `z` per backward pass.
    pub rows: usize,
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct TangentReport {
    pub flow: String,
    pub dataset: String,
    pub backend: String,
    pub images: usize,
    pub dimension: usize,
    /// Mean over the images of the sorted singular values (largest first).
    pub mean_singular_values: Vec<f64>,
    /// Mean count of singular values above 1 % and 10 % of each image's largest.
    pub above_1_percent: f64,
    pub above_10_percent: f64,
    pub seconds_per_image: f64,
    pub files: Vec<String>,
}

impl BackendJob for TangentJob {
    type Output = TangentReport;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<TangentReport> {
        if self.count == 0 {
            bail!("--count must be at least 1");
        }
        let started = std::time::Instant::now();
        let model = IbInnClassifier::new(load_trained::<B>(&self.flow, &device)?);
        let Some(dataset) = run_dataset(&self.flow) else {
            bail!(
                "{} names no dataset in its config.toml",
                self.flow.display()
            );
        };
        let shape = Some(model.model.input_shape());
        let test = dataset.load_shaped(Split::Test, self.data_dir.as_deref(), shape, None)?;
        let n = self.count.min(test.len());
        let [c, h, w] = test.image_shape();
        let d = c * h * w;
        let mut sum = vec![0f64; d];
        let (mut above1, mut above10) = (0usize, 0usize);
        for i in 0..n {
            let px = test.unit_image(i);
            let x =
                Tensor::<B::InnerBackend, 4>::from_data(TensorData::new(px, [1, c, h, w]), &device);
            let z = {
                let _mode = mode::inference();
                let xa = model.to_model(Tensor::from_inner(x));
                model.model.forward(xa).0.inner()
            };
            let jac = generator_jacobian::<B>(&model.model, z, self.rows);
            // g maps to the model's input space; unit space is that divided by the input scale.
            let scale = f64::from(model.input_map.scale);
            let sv: Vec<f64> = singular_values(&jac, d).iter().map(|s| s / scale).collect();
            let top = sv.first().copied().unwrap_or(0.0);
            above1 += sv.iter().filter(|&&s| s > 0.01 * top).count();
            above10 += sv.iter().filter(|&&s| s > 0.1 * top).count();
            for (acc, s) in sum.iter_mut().zip(&sv) {
                *acc += s;
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create {}", self.out.display()))?;
        let mut csv = String::from("rank,mean_singular_value\n");
        for (r, s) in mean.iter().enumerate() {
            csv.push_str(&format!("{},{s}\n", r + 1));
        }
        crate::fsutil::write_atomic(&self.out.join("tangent.csv"), csv.as_bytes())?;
        let log10: Vec<f64> = mean.iter().map(|s| s.max(1e-12).log10()).collect();
        crate::evaluate::charts::curves(
            &format!("∂g/∂z singular values, mean over {n} test images"),
            ("rank / D", "log10 σ"),
            &[("sorted singular values (rank →)".into(), log10)],
            &self.out.join("tangent.png"),
        )?;
        let report = TangentReport {
            flow: self.flow.display().to_string(),
            dataset: dataset.to_string(),
            backend: backend.to_string(),
            images: n,
            dimension: d,
            mean_singular_values: mean,
            above_1_percent: above1 as f64 / n as f64,
            above_10_percent: above10 as f64 / n as f64,
            seconds_per_image: started.elapsed().as_secs_f64() / n as f64,
            files: vec!["tangent.csv".into(), "tangent.png".into()],
        };
        crate::fsutil::write_json(&self.out.join("tangent.json"), &report)?;
        Ok(report)
    }
}
