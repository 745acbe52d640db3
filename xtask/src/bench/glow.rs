//! `cargo xtask bench glow-conv`: Glow training steps (forward, backward, Adam) with the LU and
//! with the SVD/FastH invertible 1×1 convolution, interleaved in one process so that both see
//! the same machine state.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_datasets::{Augmentation, HostBatch, Split, mnist};
use cfx_flows::blocks::InvConvKind;
use cfx_flows::glow::{Glow, GlowConfig};
use cfx_flows::{Flow, standard_normal_bpd};
use cfx_linalg::LinalgBackend;
use rand::SeedableRng;
use serde::Serialize;

use crate::backend::{BackendJob, BackendKind, run_on};
use crate::cli::GlowBenchArgs;

#[derive(Debug, Clone, Serialize)]
pub struct GlowConvTiming {
    pub backend: String,
    pub n_flow: usize,
    pub n_block: usize,
    pub width: usize,
    pub batch_size: usize,
    pub steps: usize,
    pub lu_median_ms: f64,
    pub svd_median_ms: f64,
    /// `svd / lu`: above 1, the FastH convolution is slower.
    pub svd_over_lu: f64,
}

struct GlowJob {
    cfg: GlowConfig,
    batch: HostBatch,
    steps: usize,
    warmup: usize,
}

/// One Glow, its optimiser and its step.
struct Trainer<B: AutodiffBackend + LinalgBackend> {
    model: Option<Glow<B>>,
    optim: burn::optim::adaptor::OptimizerAdaptor<burn::optim::Adam, Glow<B>, B>,
}

impl<B: AutodiffBackend + LinalgBackend> Trainer<B> {
    fn step(&mut self, x: Tensor<B, 4>) -> f64 {
        let t = Instant::now();
        let model = self.model.take().expect("model between steps");
        let (z, ld) = model.forward(x);
        let loss = standard_normal_bpd(z, ld).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = self.optim.step(1e-4, model, grads);
        // Reading a weight back waits for the device: the step is really done.
        let _ = model.blocks[0].steps[0].actnorm.log_scale.val().into_data();
        self.model = Some(model);
        t.elapsed().as_secs_f64() * 1e3
    }
}

impl BackendJob for GlowJob {
    type Output = GlowConvTiming;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<GlowConvTiming> {
        let x = self.batch.clone().to_device::<B>(&device).images;
        let mut trainers: Vec<Trainer<B>> = [InvConvKind::Lu, InvConvKind::Svd]
            .into_iter()
            .map(|conv| {
                B::seed(&device, 0);
                let model = self.cfg.clone().with_conv(conv).init::<B>(&device);
                Trainer {
                    model: Some(model.initialized_from(x.clone())),
                    optim: AdamConfig::new().init(),
                }
            })
            .collect();
        let mut times = [vec![], vec![]];
        for i in 0..self.warmup + self.steps {
            for (k, t) in trainers.iter_mut().enumerate() {
                let ms = t.step(x.clone());
                eprintln!("{backend} {} step {i}: {ms:.1} ms", ["lu", "svd"][k]);
                if i >= self.warmup {
                    times[k].push(ms);
                }
            }
        }
        let lu = super::upper_median(&mut times[0]);
        let svd = super::upper_median(&mut times[1]);
        Ok(GlowConvTiming {
            backend: backend.to_string(),
            n_flow: self.cfg.n_flow,
            n_block: self.cfg.n_block,
            width: self.cfg.width,
            batch_size: self.batch.len(),
            steps: self.steps,
            lu_median_ms: lu,
            svd_median_ms: svd,
            svd_over_lu: svd / lu,
        })
    }
}

pub fn glow_conv(args: &GlowBenchArgs) -> Result<Vec<GlowConvTiming>> {
    let cfg = GlowConfig::new()
        .with_n_flow(args.n_flow)
        .with_n_block(args.n_block)
        .with_width(args.width);
    if let Err(e) = cfg.validate() {
        bail!("{e}");
    }
    let train = mnist(Split::Train)?;
    let idx: Vec<usize> = (0..args.batch_size.max(1)).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let batch = HostBatch::from_set(&train, &idx, &Augmentation::UNIT, &mut rng);
    let mut out = vec![];
    for &b in &args.backends {
        let job = GlowJob {
            cfg: cfg.clone(),
            batch: batch.clone(),
            steps: args.steps.max(1),
            warmup: args.warmup,
        };
        let t = run_on(b, job)?;
        println!(
            "{:<8} Glow {}×{} width {} batch {}: LU {:.1} ms/step, SVD (FastH) {:.1} ms/step, SVD/LU {:.2}",
            t.backend,
            t.n_block,
            t.n_flow,
            t.width,
            t.batch_size,
            t.lu_median_ms,
            t.svd_median_ms,
            t.svd_over_lu
        );
        out.push(t);
    }
    super::write_json(args.json.as_deref(), &out)?;
    Ok(out)
}
