//! `cargo xtask bench step`: IB-INN training steps per backend.

use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_datasets::{Augmentation, HostBatch, Split, mnist};
use cfx_flows::ibinn::{IbInn, IbInnConfig};
use cfx_linalg::LinalgBackend;
use rand::SeedableRng;
use serde::Serialize;

use crate::backend::{BackendJob, BackendKind, run_on};
use crate::cli::StepBenchArgs;
use crate::train::ibinn::{IbInnTrainConfig, shard_loss};
use crate::train::optim::{GroupedSgd, SgdGroup};
use crate::train::parallel::Replicas;

#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    pub backend: String,
    pub batch_size: usize,
    pub steps: usize,
    pub median_ms: f64,
    pub mean_ms: f64,
    pub images_per_second: f64,
    /// Data-parallel replicas the batch was split over.
    pub replicas: usize,
    /// The subnets' convolution algorithm (`CFX_CONV`; on flex under `auto`, which of its own
    /// `CFX_FLEX_CONV` picks).
    pub conv: String,
    /// Training batch norm: `kernels`, `fused` or `ops` (`CFX_BATCH_NORM`).
    pub batch_norm: String,
    /// How the optimiser gathers its vectors: `kernel` or `cat` (`CFX_PACK`).
    pub pack: String,
    /// The couplings' affine half-step: `kernel` or `ops` (`CFX_AFFINE`).
    pub affine: String,
    /// How the optimiser stores convolution weights: `channels-last` or `standard`
    /// (`CFX_WEIGHTS`).
    pub weights: String,
    /// The all-in-one couplings' subnet input: `kernel` or `ops` (`CFX_SUBNET_INPUT`).
    pub subnet_input: String,
    /// The all-in-one couplings' fixed act-norm: `kernel` or `ops` (`CFX_ACT_NORM`).
    pub act_norm: String,
    /// Under `CFX_CONV=gemm`, the narrow convolutions' weight gradient: `padded` or `direct`
    /// (`CFX_CONV_NARROW`).
    pub conv_narrow: String,
    /// Medians of forward / backward / optimiser with a device sync after each
    /// (`--breakdown`; the syncs cost a little overlap, so their sum exceeds `median_ms`).
    pub breakdown_ms: Option<[f64; 3]>,
}

struct StepJob {
    model: IbInnConfig,
    batch: HostBatch,
    steps: usize,
    warmup: usize,
    breakdown: bool,
    replicas: usize,
}

impl BackendJob for StepJob {
    type Output = StepTiming;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<StepTiming> {
        let cfg = IbInnTrainConfig::default();
        B::seed(&device, 0);
        let mut model: IbInn<B> = self.model.init(&device);
        let g = SgdGroup {
            lr_factor: 1.0,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
        };
        let mut optim = GroupedSgd::<B, IbInn<B>>::new(g, Some(cfg.clip_grad_norm));
        let mut times = vec![];
        let mut parts: Vec<[f64; 3]> = vec![];
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        let replicas = Replicas::<B>::new(&device, self.replicas)?;
        for i in 0..self.warmup + self.steps {
            let t = Instant::now();
            let rows = self.batch.len();
            let shards = self.batch.clone().into_shards(replicas.count());
            // The training loop's own step: shards, replicas, summed gradients.
            let (grads, forward_ms) = replicas.gradients(&model, shards, |m, shard, dev| {
                let share = shard.len() as f64 / rows as f64;
                let (loss, _) = shard_loss(&m, shard.to_device::<B>(dev), share, &cfg);
                if self.breakdown {
                    B::sync(dev).expect("device sync");
                    // A marker between phases, for bench/count-launches.sh.
                    eprintln!("{backend} step {i}: forward done");
                }
                (loss, ms(t))
            });
            if self.breakdown {
                for d in replicas.distinct_devices() {
                    B::sync(d)?;
                }
                eprintln!("{backend} step {i}: backward done");
            }
            // With --breakdown each replica synced after its forward pass; the slowest one counts.
            let t_fwd = forward_ms.into_iter().fold(0.0, f64::max);
            let t_bwd = ms(t);
            let (m, norm) = optim.step_params(1e-3, model, grads);
            model = m;
            // Reading a scalar back waits for the device: the step is really done.
            let _: f32 = norm.into_scalar().elem();
            let total = ms(t);
            eprintln!("{backend} step {i}: {total:.1} ms");
            if i >= self.warmup {
                times.push(total);
                parts.push([t_fwd, t_bwd - t_fwd, total - t_bwd]);
            }
        }
        let breakdown_ms = self.breakdown.then(|| {
            [0, 1, 2]
                .map(|k| super::upper_median(&mut parts.iter().map(|p| p[k]).collect::<Vec<_>>()))
        });
        let median = super::upper_median(&mut times.clone());
        let n = self.batch.len();
        use crate::op_settings::OpSetting;
        let ops = crate::op_settings::op_settings();
        Ok(StepTiming {
            backend: backend.to_string(),
            batch_size: n,
            steps: self.steps,
            median_ms: median,
            mean_ms: times.iter().sum::<f64>() / times.len() as f64,
            images_per_second: n as f64 / (median / 1e3),
            replicas: self.replicas,
            conv: conv_name(backend, ops.flex_conv),
            batch_norm: ops.batch_norm.on(backend).name().to_string(),
            pack: ops.pack.on(backend).name().to_string(),
            affine: ops.affine.on(backend).name().to_string(),
            weights: ops.weights.on(backend).name().to_string(),
            subnet_input: ops.subnet_input.on(backend).name().to_string(),
            act_norm: ops.act_norm.on(backend).name().to_string(),
            conv_narrow: ops.conv_narrow.on(backend).name().to_string(),
            breakdown_ms,
        })
    }
}

/// `CFX_CONV`, and on flex under `auto` which of flex's convolutions that is (`CFX_FLEX_CONV`).
fn conv_name(backend: BackendKind, flex_conv: crate::op_settings::FlexConvImpl) -> String {
    use crate::op_settings::OpSetting;
    let strategy = cfx_flows::nn::conv_strategy();
    let flex = matches!(backend, BackendKind::Cpu | BackendKind::Flex);
    if flex && strategy == cfx_flows::nn::ConvStrategy::Auto {
        format!("auto ({})", flex_conv.name())
    } else {
        strategy.name().to_string()
    }
}

pub fn step(args: &StepBenchArgs) -> Result<Vec<StepTiming>> {
    let model = if args.small {
        IbInnConfig::tiny()
    } else {
        IbInnConfig::mnist()
    };
    let train = mnist(Split::Train)?;
    let idx: Vec<usize> = (0..args.batch_size).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let batch = HostBatch::from_set(&train, &idx, &Augmentation::IBINN_TRAIN, &mut rng);
    let mut out = vec![];
    for &b in &args.backends {
        let job = StepJob {
            model: model.clone(),
            batch: batch.clone(),
            steps: args.steps.max(1),
            warmup: args.warmup,
            breakdown: args.breakdown,
            replicas: args.replicas,
        };
        let t = run_on(b, job)?;
        println!(
            "{:<8} batch {:>4} replicas {} conv {} batch norm {} pack {} affine {} weights {} subnet input {} act-norm {} narrow conv {}: median {:>9.1} ms/step, mean {:>9.1} ms, {:>8.1} images/s",
            t.backend,
            t.batch_size,
            t.replicas,
            t.conv,
            t.batch_norm,
            t.pack,
            t.affine,
            t.weights,
            t.subnet_input,
            t.act_norm,
            t.conv_narrow,
            t.median_ms,
            t.mean_ms,
            t.images_per_second
        );
        if let Some([f, b, o]) = t.breakdown_ms {
            println!(
                "{:<8} forward {f:.1} ms, backward {b:.1} ms, optimiser {o:.1} ms",
                t.backend
            );
        }
        out.push(t);
    }
    if out.len() > 1 {
        let base = &out[0];
        for t in &out[1..] {
            println!(
                "{} / {} time ratio: {:.2}",
                t.backend,
                base.backend,
                t.median_ms / base.median_ms
            );
        }
    }
    super::write_json(args.json.as_deref(), &out)?;
    Ok(out)
}
