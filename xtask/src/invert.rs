//! `cargo xtask invert`: how closely a GAN run's generator reproduces test images, through the
//! run's encoder and by optimising the latent.
//!
//! C3LT's counterfactual is `G(g(E(x)))`, so the encoder's reconstruction `|G(E(x)) − x|` is a
//! floor under its proximity. Whether that floor is the encoder's or the generator's is what
//! `find_z` answers: optimised from a random start it measures what the generator can draw at
//! all, and from `E(x)` what is left to an encoder that guessed better.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_counterfactual::{InversionConfig, find_z, find_z_from};
use cfx_datasets::{Augmentation, ImageSet, Split};
use cfx_flows::nn::mode;
use cfx_generative::{Generator, LatentGenerator};
use cfx_linalg::LinalgBackend;
use serde::Serialize;

use crate::backend::{BackendJob, BackendKind};
use crate::train::gan::{
    EncoderTrainConfig, GanRun, GanTrainConfig, load_gan, read_gan_run, save_grid,
};
use crate::train::run::read_toml;

#[derive(Debug, Clone)]
pub struct InvertJob {
    /// A finished `train dcgan` or `train gan-encoder` run.
    pub gan: PathBuf,
    /// Test images of these classes [empty: the run's own classes].
    pub classes: Vec<usize>,
    /// The first N of them.
    pub count: usize,
    pub batch_size: usize,
    /// Adam steps of each optimisation (no early stop: the floor is the question).
    pub steps: usize,
    pub lr: f64,
    pub out: PathBuf,
}

/// One way of finding `z`, scored on the same images.
#[derive(Debug, Clone, Serialize)]
pub struct Reconstruction {
    pub method: String,
    /// `mean |G(z) − x|` per pixel, unit space.
    pub l1_unit: f64,
    /// The same in C3LT's `[-1, 1]` image space (twice the unit number), where seed 003 reports
    /// its proximity.
    pub l1_signed: f64,
    /// `mean (G(z) − x)²` per pixel, unit space: what the optimisation minimises.
    pub mse_unit: f64,
    /// Mean of `‖z‖/√D` over the images, and its standard deviation: where the latents lie
    /// against the prior `N(0, I)`, whose samples have `‖z‖/√D ≈ 1 ± 1/√(2D)`. A generator is
    /// only trained on the prior's shell, and C3LT's steps keep `‖z‖`, so an encoder that
    /// lands off the shell makes every counterfactual a point the generator never drew.
    pub norm_ratio: f64,
    pub norm_ratio_sd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InvertReport {
    pub gan: String,
    pub dataset: String,
    pub classes: Vec<usize>,
    pub backend: String,
    pub images: usize,
    pub steps: usize,
    pub lr: f64,
    pub reconstructions: Vec<Reconstruction>,
    pub seconds: f64,
    pub files: Vec<String>,
}

impl InvertReport {
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| z from | mean abs, unit | mean abs, [-1, 1] | mean squared, unit | ‖z‖/√D (sd) |\n| --- | ---: | ---: | ---: | ---: |\n",
        );
        for r in &self.reconstructions {
            s.push_str(&format!(
                "| {} | {:.4} | {:.4} | {:.5} | {:.3} ({:.3}) |\n",
                r.method, r.l1_unit, r.l1_signed, r.mse_unit, r.norm_ratio, r.norm_ratio_sd
            ));
        }
        s
    }
}

/// The data settings of a GAN run, whichever kind it is.
fn run_data(gan: &Path) -> Result<GanTrainConfig> {
    let path = gan.join("config.toml");
    Ok(match read_gan_run(gan)? {
        GanRun::Dcgan(_) => read_toml::<GanTrainConfig>(&path)?,
        GanRun::GanEncoder(_) => read_toml::<EncoderTrainConfig>(&path)?.train,
    })
}

/// Sums over the batch of `‖z‖/√D` and of its square.
fn norm_ratios<B: Backend>(z: Tensor<B, 2>) -> (f64, f64) {
    let d = z.dims()[1] as f64;
    let r = z.square().sum_dim(1).sqrt().div_scalar(d.sqrt());
    let sum = r.clone().sum().into_scalar().elem::<f64>();
    let sq = r.square().sum().into_scalar().elem::<f64>();
    (sum, sq)
}

/// Sums of |·| and (·)² over each image's pixels, as the means of [`Reconstruction`] need.
fn errors<B: Backend>(image: Tensor<B, 4>, x: Tensor<B, 4>) -> (f64, f64) {
    let n = x.dims()[0];
    let diff = (image - x).reshape([n as i32, -1]);
    let l1 = diff
        .clone()
        .abs()
        .mean_dim(1)
        .sum()
        .into_scalar()
        .elem::<f64>();
    let l2 = diff.square().mean_dim(1).sum().into_scalar().elem::<f64>();
    (l1, l2)
}

impl BackendJob for InvertJob {
    type Output = InvertReport;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<InvertReport> {
        if self.count == 0 || self.batch_size == 0 {
            bail!("--count and --batch-size must be at least 1");
        }
        let cfg = InversionConfig {
            max_steps: self.steps,
            learning_rate: self.lr,
            tolerance: 0.0,
        };
        cfg.validate()?;
        let started = std::time::Instant::now();
        // find_z's random starts, the same on every call.
        B::seed(&device, 0);
        let mut data = run_data(&self.gan)?;
        if !self.classes.is_empty() {
            data.classes = self.classes.clone();
        }
        data.test_limit = Some(self.count);
        let test: ImageSet = data.load(Split::Test)?;
        let n = test.len();
        let (generator, encoder) = load_gan::<B>(&self.gan, &device)?;
        let generator: Generator<B> = generator.no_grad();
        let g_inner = generator.valid();
        let encoder = encoder.map(|e| e.valid());

        // The ways of finding z, in the order of the report and of the grid's rows.
        let methods: &[&str] = match encoder {
            Some(_) => &[
                "the encoder: E(x)",
                "find_z from E(x)",
                "find_z from N(0, I)",
            ],
            None => &["find_z from N(0, I)"],
        };
        let mut sums = vec![[0.0f64; 4]; methods.len()];
        let mut grid = vec![];
        for host in cfx_datasets::eval_batches(&test, self.batch_size, &Augmentation::UNIT) {
            let x = host.to_device::<B::InnerBackend>(&device).images;
            let mut latents = vec![];
            if let Some(e) = &encoder {
                let z = {
                    let _m = mode::inference();
                    e.forward(x.clone())
                };
                latents.push(z.clone());
                latents.push(find_z_from::<B>(&generator, x.clone(), z, &cfg).0);
            }
            latents.push(find_z::<B>(&generator, x.clone(), &cfg).0);
            for (s, z) in sums.iter_mut().zip(&latents) {
                let (r, r2) = norm_ratios(z.clone());
                s[2] += r;
                s[3] += r2;
            }
            let recons: Vec<_> = {
                let _m = mode::inference();
                let decode = |z| g_inner.decode(z).clamp(0.0, 1.0);
                latents.into_iter().map(decode).collect()
            };
            for (s, r) in sums.iter_mut().zip(&recons) {
                let (l1, l2) = errors(r.clone(), x.clone());
                s[0] += l1;
                s[1] += l2;
            }
            if grid.is_empty() {
                // Eight inputs in the top row, one row per way of finding z below.
                let k = x.dims()[0].min(8);
                grid = std::iter::once(x)
                    .chain(recons)
                    .map(|t| t.narrow(0, 0, k))
                    .collect();
            }
        }
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create {}", self.out.display()))?;
        save_grid(Tensor::cat(grid, 0), &self.out.join("invert.png"))?;
        let report = InvertReport {
            gan: self.gan.display().to_string(),
            dataset: data.dataset.to_string(),
            classes: data.classes.clone(),
            backend: backend.to_string(),
            images: n,
            steps: self.steps,
            lr: self.lr,
            reconstructions: methods
                .iter()
                .zip(sums)
                .map(|(m, [l1, l2, r, r2])| {
                    let n = n as f64;
                    let norm_ratio = r / n;
                    Reconstruction {
                        method: m.to_string(),
                        l1_unit: l1 / n,
                        l1_signed: 2.0 * l1 / n,
                        mse_unit: l2 / n,
                        norm_ratio,
                        norm_ratio_sd: (r2 / n - norm_ratio * norm_ratio).max(0.0).sqrt(),
                    }
                })
                .collect(),
            seconds: started.elapsed().as_secs_f64(),
            files: vec!["invert.json".into(), "invert.png".into()],
        };
        crate::fsutil::write_json(&self.out.join("invert.json"), &report)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::prelude::*;

    #[test]
    fn norm_ratios_sum_each_rows_norm_over_root_d() {
        let z = Tensor::<Flex, 2>::from_floats([[3.0, 4.0], [0.0, 1.0]], &Default::default());
        let (sum, sq) = super::norm_ratios(z);
        let r = [5.0 / 2f64.sqrt(), 1.0 / 2f64.sqrt()];
        assert!((sum - (r[0] + r[1])).abs() < 1e-6, "{sum}");
        assert!((sq - (r[0] * r[0] + r[1] * r[1])).abs() < 1e-5, "{sq}");
    }
}
