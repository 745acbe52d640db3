//! `cargo xtask bench conv`: the IB-INN subnets' 3×3 convolutions, forward and backward (input
//! and weight gradients), as burn's `conv2d`, as [`cfx_flows::ops::conv2d_unfold`] (patches
//! and one matrix product) and, on a backend that has one registered (cuda, wgpu), as
//! burn-cubecl's implicit GEMM (`cfx_linalg::conv_gemm`), side by side on each backend.
//!
//! The question it answers: does either take the CUDA step's weight-gradient cost away
//! (docs/results.md, "Where the CUDA step time goes")? The rows are the convolutions
//! of the MNIST architecture, each with the number of times one training step runs it, so
//! `per_step_ms` estimates what the subnets' 3×3 convolutions cost a step either way.

use anyhow::Result;
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use cfx_flows::nn::gemm_conv2d;
use cfx_flows::ops::conv2d_unfold;
use cfx_linalg::LinalgBackend;
use serde::Serialize;

use crate::backend::{BackendJob, BackendKind, run_on};
use crate::cli::ConvBenchArgs;

/// One convolution of the IB-INN MNIST architecture (Haar → 14×14×4, 24 couplings of width
/// 32; downsampling coupling; 7×7×16, 24 couplings of width 64).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ConvShape {
    pub c_in: usize,
    pub c_out: usize,
    pub size: usize,
    pub stride: usize,
    /// How many convolutions of this shape one training step runs.
    pub per_step: usize,
}

/// The subnets' 3×3 convolutions (their 1×1 output convolutions left out): the all-in-one
/// couplings' two per subnet, 24 subnets per stage, then the downsampling coupling's strided
/// subnet; its other subnet has the second stage's shapes, hence 25 there.
pub const IBINN_CONVS: [ConvShape; 6] = [
    ConvShape {
        c_in: 2,
        c_out: 32,
        size: 14,
        stride: 1,
        per_step: 24,
    },
    ConvShape {
        c_in: 32,
        c_out: 32,
        size: 14,
        stride: 1,
        per_step: 24,
    },
    ConvShape {
        c_in: 8,
        c_out: 64,
        size: 7,
        stride: 1,
        per_step: 25,
    },
    ConvShape {
        c_in: 64,
        c_out: 64,
        size: 7,
        stride: 1,
        per_step: 25,
    },
    ConvShape {
        c_in: 2,
        c_out: 64,
        size: 14,
        stride: 1,
        per_step: 1,
    },
    ConvShape {
        c_in: 64,
        c_out: 64,
        size: 14,
        stride: 2,
        per_step: 1,
    },
];

#[derive(Debug, Clone, Serialize)]
pub struct ConvRow {
    pub backend: String,
    pub batch_size: usize,
    pub shape: ConvShape,
    /// Median forward + backward (input and weight gradients), ms.
    pub burn_ms: f64,
    pub unfold_ms: f64,
    /// Largest |difference| of the two weight gradients, relative to the largest entry.
    pub weight_grad_rel_diff: f64,
    /// The implicit-GEMM way, where the backend has it (`None` elsewhere).
    pub gemm_ms: Option<f64>,
    /// Its weight gradient against burn's, as `weight_grad_rel_diff`.
    pub gemm_weight_grad_rel_diff: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
enum Way {
    Burn,
    Unfold,
    Gemm,
}

struct Job {
    batch_size: usize,
    shapes: Vec<ConvShape>,
    repeats: usize,
    warmup: usize,
}

impl BackendJob for Job {
    type Output = Vec<ConvRow>;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<Vec<ConvRow>> {
        B::seed(&device, 0);
        let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
        let mut rows = vec![];
        for s in self.shapes {
            let x: Tensor<B, 4> =
                Tensor::random([self.batch_size, s.c_in, s.size, s.size], normal, &device);
            let w = Param::from_tensor(Tensor::<B, 4>::random(
                [s.c_out, s.c_in, 3, 3],
                normal,
                &device,
            ));
            let x = x.require_grad();
            let options = ConvOptions::new([s.stride; 2], [1, 1], [1, 1], 1);
            let gemm = gemm_conv2d::<B>();
            // fwd + bwd of one way; the weight gradient read back so that the device is done.
            let pass = |way: Way| -> Tensor<B::InnerBackend, 4> {
                let y = match (way, gemm) {
                    (Way::Unfold, _) => conv2d_unfold(x.clone(), w.val(), None, s.stride, 1),
                    (Way::Gemm, Some(f)) => f(x.clone(), w.val(), None, options.clone()),
                    _ => conv2d(x.clone(), w.val(), None, options.clone()),
                };
                let grads = y.square().mean().backward();
                let gw = w.grad(&grads).expect("weight gradient");
                let _ = x.grad(&grads).expect("input gradient");
                let _ = gw.clone().slice([0..1, 0..1, 0..1, 0..1]).into_data();
                gw
            };
            let reference = pass(Way::Burn);
            let scale = reference
                .clone()
                .abs()
                .max()
                .into_scalar()
                .elem::<f64>()
                .max(1e-30);
            let rel_diff = |way: Way| {
                (reference.clone() - pass(way))
                    .abs()
                    .max()
                    .into_scalar()
                    .elem::<f64>()
                    / scale
            };
            let diff = rel_diff(Way::Unfold);
            let gemm_diff = gemm.map(|_| rel_diff(Way::Gemm));
            let mut ways = vec![Way::Burn, Way::Unfold];
            if gemm.is_some() {
                ways.push(Way::Gemm);
            }
            // Interleaved, so that every way sees the same machine state.
            let mut times = vec![vec![]; ways.len()];
            for i in 0..self.warmup + self.repeats.max(1) {
                for (k, &way) in ways.iter().enumerate() {
                    let t = std::time::Instant::now();
                    pass(way);
                    if i >= self.warmup {
                        times[k].push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            let mut medians = times.iter_mut().map(|t| super::upper_median(t));
            let (burn_ms, unfold_ms) = (medians.next().unwrap(), medians.next().unwrap());
            let gemm_ms = medians.next();
            let row = ConvRow {
                backend: backend.to_string(),
                batch_size: self.batch_size,
                shape: s,
                burn_ms,
                unfold_ms,
                weight_grad_rel_diff: diff,
                gemm_ms,
                gemm_weight_grad_rel_diff: gemm_diff,
            };
            let gemm_note = match (gemm_ms, gemm_diff) {
                (Some(ms), Some(d)) => format!(
                    ", implicit GEMM {ms:>8.3} ms ({:.2}×, weight grads differ by {d:.1e})",
                    burn_ms / ms
                ),
                _ => String::new(),
            };
            println!(
                "{:<8} conv {:>2}→{:<2} {:>2}×{:<2} stride {} (×{:>2} per step): burn {:>8.3} ms, unfold+matmul {:>8.3} ms ({:.2}×), weight grads differ by {:.1e}{}",
                row.backend,
                s.c_in,
                s.c_out,
                s.size,
                s.size,
                s.stride,
                s.per_step,
                row.burn_ms,
                row.unfold_ms,
                row.burn_ms / row.unfold_ms,
                diff,
                gemm_note
            );
            rows.push(row);
        }
        let per_step = |f: fn(&ConvRow) -> f64| -> f64 {
            rows.iter().map(|r| f(r) * r.shape.per_step as f64).sum()
        };
        // Only where every row has the GEMM way (`None` sums to `None`).
        let gemm_total: Option<f64> = rows
            .iter()
            .map(|r| r.gemm_ms.map(|ms| ms * r.shape.per_step as f64))
            .sum();
        let gemm_total = gemm_total
            .map(|ms| format!(", implicit GEMM {ms:.1} ms"))
            .unwrap_or_default();
        println!(
            "{:<8} per training step (rows × their count): burn {:.1} ms, unfold+matmul {:.1} ms{}",
            backend,
            per_step(|r| r.burn_ms),
            per_step(|r| r.unfold_ms),
            gemm_total
        );
        Ok(rows)
    }
}

pub fn conv(args: &ConvBenchArgs) -> Result<Vec<ConvRow>> {
    let shapes: Vec<ConvShape> = if args.quick {
        vec![
            ConvShape {
                c_in: 2,
                c_out: 4,
                size: 6,
                stride: 1,
                per_step: 1,
            },
            ConvShape {
                c_in: 4,
                c_out: 4,
                size: 6,
                stride: 2,
                per_step: 1,
            },
        ]
    } else {
        IBINN_CONVS.to_vec()
    };
    let mut out = vec![];
    for &b in &args.backends {
        let job = Job {
            batch_size: args.batch_size,
            shapes: shapes.clone(),
            repeats: args.repeats,
            warmup: args.warmup,
        };
        out.extend(run_on(b, job)?);
    }
    super::write_json(args.json.as_deref(), &out)?;
    Ok(out)
}
