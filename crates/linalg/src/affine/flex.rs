//! The affine half-step on `Autodiff<Flex>` (the default CPU backend): one pass over the data
//! forward and one backward for each output, each split over the samples and the cores, as
//! [`super::affine_train_cube`] does on the GPU.
//!
//! Why: flex 0.21 runs elementwise ops on the calling thread. As tensor ops the half-step is a
//! `narrow`, a `tanh`, an `exp`, a product, a sum, a per-sample reduction and the `cat` of the
//! passive channels forward, and about twenty serial ops backward; with 50 half-steps it was
//! the largest serial item of the CPU training step once the convolutions and batch norms ran
//! on both cores (docs/results.md, "Convolutions and the affine half-step on flex's cores").
//!
//! * forward, per sample: the passive channels copied, `y = x·exp(s) + t` with
//!   `s = clamp·tanh(pre·a_s)` for the others, and `Σ s` (per-plane sums in f32, their total
//!   in f64) plus the constant term;
//! * backward of `y`: `∂x = gy` on the passive channels and `gy·exp(s)` on the others,
//!   `∂t = gy`, `∂a_s = gy·x·exp(s)·clamp·pre·(1 − tanh²)`;
//! * backward of `log_det`: `∂a_s = g[n]·clamp·pre·(1 − tanh²)`, 0 for the shifts.
//!
//! `y` and `log_det` are two autodiff nodes, as on the GPU: burn's custom ops have one output
//! each, and autodiff adds their two gradients of `a`. f32 only, like every model here; another
//! dtype is refused with a message naming the setting that handles it.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::{AffineStep, AffineStepOutput, ConstantLogDet};
use crate::convert::{primitive, tensor};
use crate::finish_stateful;
use crate::flex_util::{flex_tensor, values, zeros};

/// `(clamp·tanh(pre·a), clamp·pre·(1 − tanh²(pre·a)))`: the log-scale and its derivative.
#[inline]
fn soft_clamp(a: f32, clamp: f32, pre: f32) -> (f32, f32) {
    let th = (pre * a).tanh();
    (clamp * th, clamp * pre * (1.0 - th * th))
}

/// The sizes of one half-step: `P` passive and `C` coupled channels of `hw` values each.
#[derive(Debug, Clone, Copy)]
struct Dims {
    passive: usize,
    coupled: usize,
    hw: usize,
}

impl Dims {
    /// Values of one sample of `x` (and `y`).
    fn sample_x(&self) -> usize {
        (self.passive + self.coupled) * self.hw
    }

    /// Values of one sample of `a`.
    fn sample_a(&self) -> usize {
        2 * self.coupled * self.hw
    }
}

fn f32_contiguous(t: FlexTensor, what: &str) -> FlexTensor {
    crate::flex_util::f32_contiguous(t, "affine half-step", what, "CFX_AFFINE=ops")
}

#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    a: FlexTensor,
    dims: Dims,
    clamp: f32,
    pre: f32,
}

impl Saved {
    fn shape_x(&self) -> Vec<usize> {
        self.x.layout().shape().to_vec()
    }

    fn shape_a(&self) -> Vec<usize> {
        self.a.layout().shape().to_vec()
    }
}

#[derive(Debug)]
struct AffineY;

#[derive(Debug)]
struct AffineLogDet;

impl Backward<Flex, 2> for AffineY {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_a] = ops.parents;
        let gy = f32_contiguous(grads.consume::<Flex>(&ops.node), "the output gradient");
        let saved = ops.state;
        let (d, clamp, pre) = (saved.dims, saved.clamp, saved.pre);
        let (xs, as_, gs) = (values(&saved.x), values(&saved.a), values(&gy));
        let (pass, hw) = (d.passive * d.hw, d.hw);
        let mut dx = zeros(xs.len());
        let mut da = zeros(as_.len());
        dx.par_chunks_mut(d.sample_x())
            .zip(da.par_chunks_mut(d.sample_a()))
            .enumerate()
            .for_each(|(b, (dxb, dab))| {
                let (xb, gb) = (&xs[b * d.sample_x()..], &gs[b * d.sample_x()..]);
                let ab = &as_[b * d.sample_a()..];
                dxb[..pass].copy_from_slice(&gb[..pass]);
                let (das, dat) = dab.split_at_mut(d.coupled * hw);
                dat.copy_from_slice(&gb[pass..d.sample_x()]);
                let coupled = dxb[pass..].iter_mut().zip(das.iter_mut());
                for (i, (dxv, dav)) in coupled.enumerate() {
                    let (s, ds) = soft_clamp(ab[i], clamp, pre);
                    let e = s.exp();
                    let g = gb[pass + i];
                    *dxv = g * e;
                    *dav = g * xb[pass + i] * e * ds;
                }
            });
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex_tensor(dx, &saved.shape_x()));
        }
        if let Some(node) = node_a {
            grads.register::<Flex>(node.id, flex_tensor(da, &saved.shape_a()));
        }
    }
}

impl Backward<Flex, 1> for AffineLogDet {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_a] = ops.parents;
        let g = f32_contiguous(grads.consume::<Flex>(&ops.node), "the log-det gradient");
        let Some(node) = node_a else { return };
        let saved = ops.state;
        let (d, clamp, pre) = (saved.dims, saved.clamp, saved.pre);
        let (as_, gs) = (values(&saved.a), values(&g));
        let mut da = zeros(as_.len());
        da.par_chunks_mut(d.sample_a())
            .zip(as_.par_chunks(d.sample_a()))
            .zip(gs.par_iter())
            .for_each(|((dab, ab), &gb)| {
                let scales = d.coupled * d.hw;
                for (dav, &av) in dab[..scales].iter_mut().zip(&ab[..scales]) {
                    *dav = gb * soft_clamp(av, clamp, pre).1;
                }
            });
        grads.register::<Flex>(node.id, flex_tensor(da, &saved.shape_a()));
    }
}

/// An affine half-step on `Autodiff<Flex>`: the passes above, with their backward passes.
/// Registered by xtask for flex (`cfx_flows::blocks`; `CFX_AFFINE=kernel`, the default).
pub fn affine_train_flex<C: CheckpointStrategy>(
    step: AffineStep<Autodiff<Flex, C>>,
) -> AffineStepOutput<Autodiff<Flex, C>> {
    let [n, c, h, w] = step.checked_dims("affine half-step");
    let extra = match step.constant {
        Some(ConstantLogDet { values, weight }) => {
            let total: f64 = values.inner().into_data().iter::<f64>().sum::<f64>();
            total * weight
        }
        None => 0.0,
    };
    let d = Dims {
        passive: step.passive,
        coupled: c - step.passive,
        hw: h * w,
    };
    let (clamp, pre) = (step.clamp as f32, step.pre as f32);
    let xp = primitive(step.x);
    let ap = primitive(step.a);
    let x = f32_contiguous(xp.primitive, "x");
    let a = f32_contiguous(ap.primitive, "a");
    let (xs, as_) = (values(&x), values(&a));
    let pass = d.passive * d.hw;
    let mut y = zeros(xs.len());
    let mut log_det = vec![0f32; n];
    y.par_chunks_mut(d.sample_x())
        .zip(log_det.par_iter_mut())
        .enumerate()
        .for_each(|(b, (yb, ld))| {
            let xb = &xs[b * d.sample_x()..(b + 1) * d.sample_x()];
            let ab = &as_[b * d.sample_a()..(b + 1) * d.sample_a()];
            yb[..pass].copy_from_slice(&xb[..pass]);
            let (scales, shifts) = ab.split_at(d.coupled * d.hw);
            let mut total = extra;
            let planes = yb[pass..].chunks_mut(d.hw).zip(xb[pass..].chunks(d.hw));
            for (k, (yp, xp)) in planes.enumerate() {
                let (sp, tp) = (&scales[k * d.hw..], &shifts[k * d.hw..]);
                let mut sum = 0f32;
                for (i, (yv, &xv)) in yp.iter_mut().zip(xp).enumerate() {
                    let (s, _) = soft_clamp(sp[i], clamp, pre);
                    *yv = xv * s.exp() + tp[i];
                    sum += s;
                }
                total += f64::from(sum);
            }
            *ld = total as f32;
        });
    let saved = Saved {
        x,
        a,
        dims: d,
        clamp,
        pre,
    };
    let y = finish_stateful(
        AffineY
            .prepare::<C>([xp.node, ap.node.clone()])
            .compute_bound()
            .stateful(),
        saved.clone(),
        flex_tensor(y, &[n, c, h, w]),
    );
    let log_det = finish_stateful(
        AffineLogDet
            .prepare::<C>([ap.node])
            .compute_bound()
            .stateful(),
        saved,
        flex_tensor(log_det, &[n]),
    );
    AffineStepOutput {
        y: tensor(y),
        log_det: tensor(log_det),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::random_flex as random;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::prelude::*;

    type Ad = Autodiff<Flex, NoCheckpointing>;

    fn max_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f64 {
        crate::test_util::max_abs_diff(a, b)
    }

    /// The definition as tensor ops: `(y, log_det)`.
    fn by_ops(
        x: Tensor<Ad, 4>,
        passive: usize,
        a: Tensor<Ad, 4>,
        clamp: f64,
        pre: f64,
        constant: Option<(Tensor<Ad, 1>, f64)>,
    ) -> (Tensor<Ad, 4>, Tensor<Ad, 1>) {
        let [n, c, _, _] = x.dims();
        let k = c - passive;
        let s = a
            .clone()
            .narrow(1, 0, k)
            .mul_scalar(pre)
            .tanh()
            .mul_scalar(clamp);
        let t = a.narrow(1, k, k);
        let y = x.clone().narrow(1, passive, k) * s.clone().exp() + t;
        let y = if passive > 0 {
            Tensor::cat(vec![x.narrow(1, 0, passive), y], 1)
        } else {
            y
        };
        let mut log_det = s.reshape([n as i32, -1]).sum_dim(1).squeeze_dim(1);
        if let Some((values, weight)) = constant {
            log_det = log_det + values.sum().mul_scalar(weight);
        }
        (y, log_det)
    }

    /// Output, log-det and the gradients of `x` and `a` through both outputs equal the tensor
    /// ops', with and without passive channels and a constant term.
    #[test]
    fn matches_the_tensor_ops() {
        for (i, (passive, coupled, constant)) in [(0, 3, false), (2, 3, true), (4, 2, false)]
            .into_iter()
            .enumerate()
        {
            let seed = 10 * i as u64;
            let (n, h, w) = (3, 5, 4);
            let x = random([n, passive + coupled, h, w], seed).require_grad();
            // `a` as the convolution before it may hand it on: here channels-last, seen
            // channels-first (not contiguous).
            let a = random([n, h, w, 2 * coupled], seed + 1)
                .mul_scalar(3.0)
                .permute([0, 3, 1, 2])
                .require_grad();
            let constant = constant.then(|| (random([6], seed + 2), 5.0));
            let (clamp, pre) = (0.7, 0.1 * (i + 1) as f64);
            let step = AffineStep {
                x: x.clone(),
                passive,
                a: a.clone(),
                clamp,
                pre,
                constant: constant
                    .clone()
                    .map(|(values, weight)| ConstantLogDet { values, weight }),
            };
            let ours = affine_train_flex(step);
            let (y, log_det) = by_ops(x.clone(), passive, a.clone(), clamp, pre, constant);
            let what = format!("case {i}: P {passive}, C {coupled}");
            assert!(
                max_diff(ours.y.clone().inner(), y.clone().inner()) < 1e-5,
                "{what}: y"
            );
            assert!(
                max_diff(ours.log_det.clone().inner(), log_det.clone().inner()) < 1e-4,
                "{what}: log-det"
            );
            // Weighted sums of both outputs, so that every value's gradient differs.
            let wy = Tensor::<Ad, 4>::from_inner(random(y.dims(), seed + 3).inner());
            let wl = Tensor::<Ad, 1>::from_inner(random([n], seed + 4).inner());
            let loss = |y: Tensor<Ad, 4>, l: Tensor<Ad, 1>| {
                (y * wy.clone()).sum() + (l * wl.clone()).sum()
            };
            let go = loss(ours.y, ours.log_det).backward();
            let gt = loss(y, log_det).backward();
            let grad = |t: &Tensor<Ad, 4>, g| t.grad(g).expect("a gradient");
            assert!(max_diff(grad(&x, &go), grad(&x, &gt)) < 1e-5, "{what}: ∂x");
            assert!(max_diff(grad(&a, &go), grad(&a, &gt)) < 1e-5, "{what}: ∂a");
        }
    }
}
