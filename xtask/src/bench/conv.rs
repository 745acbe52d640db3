//! `cargo xtask bench conv`: the IB-INN subnets' 3×3 convolutions, forward and backward (input
//! and weight gradients), as burn's `conv2d` and as [`cfx_flows::ops::conv2d_unfold`] (patches
//! and one matrix product), side by side on each backend.
//!
//! The question it answers: does the unfold formulation take the CUDA step's weight-gradient
//! cost away (docs/results.md, "Where the CUDA step time goes")? The rows are the convolutions
//! of the MNIST architecture, each with the number of times one training step runs it, so
//! `per_step_ms` estimates what the subnets' 3×3 convolutions cost a step either way.

use anyhow::Result;
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
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
            // fwd + bwd of one way; the weight gradient read back so that the device is done.
            let pass = |unfold: bool| -> Tensor<B::InnerBackend, 4> {
                let y = if unfold {
                    conv2d_unfold(x.clone(), w.val(), None, s.stride, 1)
                } else {
                    let o = ConvOptions::new([s.stride; 2], [1, 1], [1, 1], 1);
                    conv2d(x.clone(), w.val(), None, o)
                };
                let grads = y.square().mean().backward();
                let gw = w.grad(&grads).expect("weight gradient");
                let _ = x.grad(&grads).expect("input gradient");
                let _ = gw.clone().slice([0..1, 0..1, 0..1, 0..1]).into_data();
                gw
            };
            let (a, b) = (pass(false), pass(true));
            let scale = a.clone().abs().max().into_scalar().elem::<f64>().max(1e-30);
            let diff = (a - b).abs().max().into_scalar().elem::<f64>() / scale;
            // Interleaved, so that both ways see the same machine state.
            let (mut t_burn, mut t_unfold) = (vec![], vec![]);
            for i in 0..self.warmup + self.repeats.max(1) {
                let t = std::time::Instant::now();
                pass(false);
                let burn_ms = t.elapsed().as_secs_f64() * 1e3;
                let t = std::time::Instant::now();
                pass(true);
                let unfold_ms = t.elapsed().as_secs_f64() * 1e3;
                if i >= self.warmup {
                    t_burn.push(burn_ms);
                    t_unfold.push(unfold_ms);
                }
            }
            let row = ConvRow {
                backend: backend.to_string(),
                batch_size: self.batch_size,
                shape: s,
                burn_ms: super::upper_median(&mut t_burn),
                unfold_ms: super::upper_median(&mut t_unfold),
                weight_grad_rel_diff: diff,
            };
            println!(
                "{:<8} conv {:>2}→{:<2} {:>2}×{:<2} stride {} (×{:>2} per step): burn {:>8.3} ms, unfold+matmul {:>8.3} ms ({:.2}×), weight grads differ by {:.1e}",
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
                diff
            );
            rows.push(row);
        }
        let per_step = |f: fn(&ConvRow) -> f64| -> f64 {
            rows.iter().map(|r| f(r) * r.shape.per_step as f64).sum()
        };
        println!(
            "{:<8} per training step (rows × their count): burn {:.1} ms, unfold+matmul {:.1} ms",
            backend,
            per_step(|r| r.burn_ms),
            per_step(|r| r.unfold_ms)
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
