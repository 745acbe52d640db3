//! Training batch norm on flex (the default CPU backend) as four passes over the data, each
//! split over the cores: two forward, two backward, as [`super::batch_norm_train_cube`]
//! does on the GPU.
//!
//! Why: flex 0.21 runs elementwise ops on one core, and the tensor-op batch norm
//! (`cfx_flows::nn::fused_batch_norm`) is about eight passes over a `[128, 32, 14, 14]`
//! activation each way; with 100 batch norms in the IB-INN they were the largest serial part
//! of a CPU training step, while the convolutions around them ran on both cores
//! (docs/results.md, "Batch norm on flex's cores").
//!
//! * forward: per channel (in parallel over channels) the mean, then `Σ(x − μ)²` (two passes,
//!   as stable as the tensor-op version; per-plane sums in f32, their sum over the batch in
//!   f64), then per `(n, c)` plane (in parallel) `y = x·γ/σ + (β − μγ/σ)`, with the ReLU after
//!   it when asked;
//! * backward: per channel `Σdy` (= `∂β`) and `Σdy·x̂` (= `∂γ`) with `x̂ = (x − μ)/σ`
//!   recomputed from the saved input, then per plane `∂x = γ/σ·(dy − Σdy/M − x̂·Σ(dy·x̂)/M)`,
//!   written over `dy` where nothing else holds it; the ReLU's gradient is applied in both by
//!   recomputing the pre-activation's sign with the forward's expression.
//!
//! f32 tensors only (every model here is f32); another dtype is refused with a message naming
//! the setting that handles it.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::{BatchNormStep, BatchNormStepOutput};
use crate::convert::{primitive, tensor};
use crate::finish_stateful;
use crate::flex_util::{flex_tensor, values, zeros};

/// Planes handed to one rayon task at least: a plane is only `H·W` values.
const MIN_PLANES: usize = 8;

/// Per-channel values the passes share.
#[derive(Debug, Clone)]
struct Stats {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// `γ/σ`.
    scale: Vec<f32>,
    /// `β − μγ/σ`.
    shift: Vec<f32>,
}

/// `[N, C, H·W]` of an `[N, C, H, W]` tensor.
fn dims(t: &FlexTensor) -> [usize; 3] {
    let s = t.layout().shape();
    assert_eq!(
        s.num_dims(),
        4,
        "batch norm: expected [N, C, H, W], got {s:?}"
    );
    [s[0], s[1], s[2] * s[3]]
}

fn f32_contiguous(t: FlexTensor, what: &str) -> FlexTensor {
    crate::flex_util::f32_contiguous(t, "batch norm", what, "CFX_BATCH_NORM=fused")
}

/// `(Σ f(a, b).0, Σ f(a, b).1)` over two planes in eight lanes each, which the compiler keeps
/// in vector registers (a plain fold over f32 must keep its order and stays scalar).
#[inline]
fn lane_sums(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f32, f32) {
    let (mut s0, mut s1) = ([0f32; 8], [0f32; 8]);
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (ca, cb) in ca.zip(cb) {
        for l in 0..8 {
            let (u, v) = f(ca[l], cb[l]);
            s0[l] += u;
            s1[l] += v;
        }
    }
    let (mut t0, mut t1) = (s0.iter().sum::<f32>(), s1.iter().sum::<f32>());
    for (&u, &v) in ra.iter().zip(rb) {
        let (u, v) = f(u, v);
        t0 += u;
        t1 += v;
    }
    (t0, t1)
}

/// For each channel (in parallel), the sums of `f` over its planes: `f(channel, plane of a,
/// plane of b)`, the planes' sums added in f64.
fn per_channel(
    a: &[f32],
    b: &[f32],
    [n, c, hw]: [usize; 3],
    f: impl Fn(usize, &[f32], &[f32]) -> (f32, f32) + Sync,
) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n).fold((0.0, 0.0), |(t0, t1), i| {
                let at = (i * c + ch) * hw;
                let (u, v) = f(ch, &a[at..at + hw], &b[at..at + hw]);
                (t0 + u as f64, t1 + v as f64)
            })
        })
        .collect()
}

fn stats(x: &[f32], d: [usize; 3], gamma: &[f32], beta: &[f32], epsilon: f64) -> (Stats, Vec<f32>) {
    let c = d[1];
    let count = (d[0] * d[2]) as f64;
    let mean: Vec<f64> = per_channel(x, x, d, |_, p, _| lane_sums(p, p, |v, _| (v, 0.0)))
        .into_iter()
        .map(|(s, _)| s / count)
        .collect();
    let var: Vec<f64> = per_channel(x, x, d, |ch, p, _| {
        let m = mean[ch] as f32;
        lane_sums(p, p, |v, _| ((v - m) * (v - m), 0.0))
    })
    .into_iter()
    .map(|(s, _)| s / count)
    .collect();
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (v + epsilon).sqrt()) as f32)
        .collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let scale: Vec<f32> = (0..c).map(|ch| gamma[ch] * inv_std[ch]).collect();
    let shift: Vec<f32> = (0..c).map(|ch| beta[ch] - mean[ch] * scale[ch]).collect();
    let stats = Stats {
        mean,
        inv_std,
        scale,
        shift,
    };
    (stats, var.iter().map(|&v| v as f32).collect())
}

/// Rewrites `out` plane by plane, in parallel: `f(channel, plane of out, plane of a)`.
fn update_planes(
    out: &mut [f32],
    a: &[f32],
    [_, c, hw]: [usize; 3],
    f: impl Fn(usize, &mut [f32], &[f32]) + Sync,
) {
    out.par_chunks_mut(hw)
        .zip(a.par_chunks(hw))
        .with_min_len(MIN_PLANES)
        .enumerate()
        .for_each(|(p, (o, pa))| f(p % c, o, pa));
}

/// `t` rewritten plane by plane as [`update_planes`] does, in `t`'s own buffer where nothing
/// else holds it (the usual case for a gradient): no new allocation, whose first touch of
/// every page cost as much as the pass. A buffer another tensor shares is copied first, so
/// that tensor keeps its values.
fn update_in_place(
    mut t: FlexTensor,
    a: &[f32],
    d: [usize; 3],
    f: impl Fn(usize, &mut [f32], &[f32]) + Sync,
) -> FlexTensor {
    match t.try_storage_mut::<f32>() {
        Some(buf) if buf.len() == a.len() => {
            update_planes(buf, a, d, f);
            t
        }
        _ => {
            let mut out = values(&t).to_vec();
            update_planes(&mut out, a, d, f);
            flex_tensor(out, &t.layout().shape().to_vec())
        }
    }
}

#[derive(Debug)]
struct FlexBatchNorm;

#[derive(Debug, Clone)]
struct Saved {
    /// The input, contiguous.
    x: FlexTensor,
    stats: Stats,
    relu: bool,
}

impl Backward<Flex, 3> for FlexBatchNorm {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = f32_contiguous(grads.consume::<Flex>(&ops.node), "the output gradient");
        let Saved { x, stats, relu } = ops.state;
        let d = dims(&x);
        let [n, c, hw] = d;
        let xs = values(&x);
        // ReLU's gradient: zero where the pre-activation is ≤ 0, as burn's `relu_backward`
        // (the forward's expression, so the same values are gated). As a bit mask, not a
        // branch: the signs are data, and the compiler's branch, mispredicted every other
        // value, made these passes ten times slower.
        let all = u32::from(!relu).wrapping_neg();
        let gate = |sc: f32, sh: f32| {
            move |v: f32, g: f32| {
                let keep = u32::from(v * sc + sh > 0.0).wrapping_neg() | all;
                f32::from_bits(g.to_bits() & keep)
            }
        };
        // (Σdy, Σdy·x̂) per channel: ∂β and ∂γ.
        let sums = per_channel(xs, values(&dy), d, |ch, px, pg| {
            let (m, s) = (stats.mean[ch], stats.inv_std[ch]);
            let gate = gate(stats.scale[ch], stats.shift[ch]);
            lane_sums(px, pg, |v, g| {
                let g = gate(v, g);
                (g, g * (v - m) * s)
            })
        });
        let count = (n * hw) as f64;
        if let Some(node) = node_x {
            let mean_dy: Vec<f32> = sums.iter().map(|s| (s.0 / count) as f32).collect();
            let mean_dy_x: Vec<f32> = sums.iter().map(|s| (s.1 / count) as f32).collect();
            let dx = |ch: usize, out: &mut [f32], px: &[f32]| {
                let (m, s, sc) = (stats.mean[ch], stats.inv_std[ch], stats.scale[ch]);
                let (a, b) = (mean_dy[ch], mean_dy_x[ch]);
                let gate = gate(sc, stats.shift[ch]);
                for (o, &v) in out.iter_mut().zip(px) {
                    *o = sc * (gate(v, *o) - a - (v - m) * s * b);
                }
            };
            grads.register::<Flex>(node.id, update_in_place(dy, xs, d, dx));
        }
        if let Some(node) = node_gamma {
            let dgamma = sums.iter().map(|s| s.1 as f32).collect();
            grads.register::<Flex>(node.id, flex_tensor(dgamma, &[c]));
        }
        if let Some(node) = node_beta {
            let dbeta = sums.iter().map(|s| s.0 as f32).collect();
            grads.register::<Flex>(node.id, flex_tensor(dbeta, &[c]));
        }
    }
}

/// A training batch norm step on `Autodiff<Flex>`: the passes above, with their backward
/// pass. Registered by xtask for flex (`cfx_flows::nn`; `CFX_BATCH_NORM=kernels`, the
/// default).
pub fn batch_norm_train_flex<C: CheckpointStrategy>(
    step: BatchNormStep<Autodiff<Flex, C>>,
) -> BatchNormStepOutput<Autodiff<Flex, C>> {
    let xp = primitive(step.x);
    let gp = primitive(step.gamma);
    let bp = primitive(step.beta);
    let nodes = [xp.node.clone(), gp.node.clone(), bp.node.clone()];
    let x = f32_contiguous(xp.primitive, "the input");
    let gamma = f32_contiguous(gp.primitive, "γ");
    let beta = f32_contiguous(bp.primitive, "β");
    let d = dims(&x);
    let (stats, var) = stats(values(&x), d, values(&gamma), values(&beta), step.epsilon);
    let relu = step.relu;
    let xs = values(&x);
    let mut y = zeros(xs.len());
    update_planes(&mut y, xs, d, |ch, out, px| {
        let (sc, sh) = (stats.scale[ch], stats.shift[ch]);
        for (o, &v) in out.iter_mut().zip(px) {
            let z = v * sc + sh;
            *o = if relu { z.max(0.0) } else { z };
        }
    });
    let y = flex_tensor(y, &x.layout().shape().to_vec());
    let c = d[1];
    let device = Default::default();
    let batch = |v: &[f32]| Tensor::<Flex, 1>::from_data(TensorData::new(v.to_vec(), [c]), &device);
    let unbiased = super::bessel(d[0] * d[2]);
    let (batch_mean, batch_var) = (batch(&stats.mean), batch(&var).mul_scalar(unbiased));
    let m = step.momentum;
    let update = |old: Tensor<Autodiff<Flex, C>, 1>, new: Tensor<Flex, 1>| {
        Tensor::from_inner(old.inner().mul_scalar(1.0 - m) + new.mul_scalar(m))
    };
    let saved = Saved { x, stats, relu };
    let y = finish_stateful(
        FlexBatchNorm.prepare::<C>(nodes).compute_bound().stateful(),
        saved,
        y,
    );
    BatchNormStepOutput {
        y: tensor(y),
        running_mean: update(step.running_mean, batch_mean),
        running_var: update(step.running_var, batch_var),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backward pass writes `∂x` over `∂y`'s buffer only where no other tensor holds it:
    /// a shared one is copied and keeps its values. Both give the same result, plane `p`
    /// getting channel `p mod C`.
    #[test]
    fn a_shared_buffer_is_copied_not_overwritten() {
        let d = [2, 3, 4];
        let shape = [2, 3, 2, 2];
        let a: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let start: Vec<f32> = (0..24).map(|i| 0.5 * i as f32 - 3.0).collect();
        let f = |ch: usize, out: &mut [f32], pa: &[f32]| {
            for (o, &v) in out.iter_mut().zip(pa) {
                *o = 2.0 * *o + v + 100.0 * ch as f32;
            }
        };
        let expected: Vec<f32> = (0..24)
            .map(|i| 2.0 * start[i] + a[i] + 100.0 * ((i / 4) % 3) as f32)
            .collect();

        let held = flex_tensor(start.clone(), &shape);
        let shared = update_in_place(held.clone(), &a, d, f);
        assert_eq!(values(&shared), &expected[..]);
        assert_eq!(
            values(&held),
            &start[..],
            "the shared buffer was overwritten"
        );
        assert_ne!(values(&shared).as_ptr(), values(&held).as_ptr());
        assert_eq!(shared.layout().shape().to_vec(), shape.to_vec());

        let own = flex_tensor(start.clone(), &shape);
        let at = values(&own).as_ptr();
        let own = update_in_place(own, &a, d, f);
        assert_eq!(values(&own), &expected[..]);
        assert_eq!(
            values(&own).as_ptr(),
            at,
            "a buffer held by nothing else was copied"
        );
    }
}
