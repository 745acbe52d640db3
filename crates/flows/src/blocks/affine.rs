//! The affine half-step shared by IB-INN's coupling blocks.

use burn::prelude::*;

use crate::ops::sum_per_sample;

/// `y = x·exp(s) + t` with `s = clamp·tanh(pre·a_s)` and `[a_s, t] = a` split along channels.
///
/// The soft clamp bounds each log-scale to `±clamp`, which keeps deep stacks of couplings
/// from blowing up (FrEIA issue #38); `pre` is 0.1 in the all-in-one block and 0.2 in the
/// downsampling block, as in the reference. Returns `(y, Σ s)`.
pub(crate) fn affine_forward<B: Backend>(
    x: Tensor<B, 4>,
    a: Tensor<B, 4>,
    clamp: f64,
    pre: f64,
) -> (Tensor<B, 4>, Tensor<B, 1>) {
    let (s, t) = split_scale_shift(x.dims()[1], a, clamp, pre);
    let log_det = sum_per_sample(s.clone());
    (x * s.exp() + t, log_det)
}

/// Inverse of [`affine_forward`]: `x = (y − t)·exp(−s)`.
pub(crate) fn affine_inverse<B: Backend>(
    y: Tensor<B, 4>,
    a: Tensor<B, 4>,
    clamp: f64,
    pre: f64,
) -> Tensor<B, 4> {
    let (s, t) = split_scale_shift(y.dims()[1], a, clamp, pre);
    (y - t) * s.neg().exp()
}

fn split_scale_shift<B: Backend>(
    c: usize,
    a: Tensor<B, 4>,
    clamp: f64,
    pre: f64,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let s = a.clone().narrow(1, 0, c).mul_scalar(pre);
    let s = crate::nn::mode::tanh(s).mul_scalar(clamp);
    (s, a.narrow(1, c, c))
}
