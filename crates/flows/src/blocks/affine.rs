//! The affine half-step shared by IB-INN's coupling blocks.

use burn::prelude::*;
use cfx_linalg::affine::{AffineFn, AffineStep, ConstantLogDet};

use crate::ops::sum_per_sample;

/// Makes `f` the affine half-step of backend `B` (xtask registers
/// `cfx_linalg::affine::affine_train_cube` for `Autodiff` over cuda and wgpu): the same numbers
/// as the tensor ops below in a few kernel launches. It is not used under DeepLift's rescale
/// rule, which changes the soft clamp's `tanh` ([`crate::nn::mode::rescale_pairs`]).
pub fn register_affine<B: Backend>(f: AffineFn<B>) {
    crate::nn::registry::register(f);
}

/// `y = x·exp(s) + t` with `s = clamp·tanh(pre·a_s)` and `[a_s, t] = a` split along channels.
/// With `kept`, the leading channels of `x` (the caller's view of them, which conditions `a`)
/// pass through and the rest is transformed: `y` has `x`'s shape. The registered half-step
/// takes all of `x` at once; the tensor ops join `kept` to the transformed rest, so that their
/// graph is what it was before there was a registered one.
///
/// The soft clamp bounds each log-scale to `±clamp`, which keeps deep stacks of couplings
/// from blowing up (FrEIA issue #38); `pre` is 0.1 in the all-in-one block and 0.2 in the
/// downsampling block, as in the reference. Returns `(y, Σ s)`, plus `constant`'s term
/// when given (a fixed act-norm's log-determinant). A backend with a registered half-step
/// ([`register_affine`]) takes that instead.
pub(crate) fn affine_forward<B: Backend>(
    x: Tensor<B, 4>,
    kept: Option<Tensor<B, 4>>,
    a: Tensor<B, 4>,
    clamp: f64,
    pre: f64,
    constant: Option<ConstantLogDet<B>>,
) -> (Tensor<B, 4>, Tensor<B, 1>) {
    if let Some(k) = &kept {
        let ([n, c, h, w], [kn, p, kh, kw]) = (x.dims(), k.dims());
        debug_assert!(
            (kn, kh, kw) == (n, h, w) && p < c,
            "kept {:?} is not a leading slice of x {:?}",
            k.dims(),
            x.dims()
        );
    }
    if !crate::nn::mode::is_rescale()
        && let Some(f) = crate::nn::registry::registered::<AffineFn<B>>()
    {
        let out = f(AffineStep {
            x,
            passive: kept.map_or(0, |k| k.dims()[1]),
            a,
            clamp,
            pre,
            constant,
        });
        return (out.y, out.log_det);
    }
    let (y, log_det) = affine_by_ops(x, kept, a, clamp, pre);
    (y, with_constant(log_det, constant))
}

/// `log_det` plus `constant`'s term, with tensor ops.
fn with_constant<B: Backend>(
    log_det: Tensor<B, 1>,
    constant: Option<ConstantLogDet<B>>,
) -> Tensor<B, 1> {
    match constant {
        Some(c) => log_det + c.values.sum_dim(0).mul_scalar(c.weight),
        None => log_det,
    }
}

/// [`affine_forward`] with tensor ops, whatever is registered, without a constant term.
fn affine_by_ops<B: Backend>(
    x: Tensor<B, 4>,
    kept: Option<Tensor<B, 4>>,
    a: Tensor<B, 4>,
    clamp: f64,
    pre: f64,
) -> (Tensor<B, 4>, Tensor<B, 1>) {
    if let Some(kept) = kept {
        let (c, p) = (x.dims()[1], kept.dims()[1]);
        let (y, log_det) = affine_by_ops(x.narrow(1, p, c - p), None, a, clamp, pre);
        return (Tensor::cat(vec![kept, y], 1), log_det);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::RegistryAd as Ad;
    use cfx_linalg::affine::AffineStepOutput;
    use std::cell::Cell;

    thread_local! {
        // Per thread: the batch-norm test may run the half-step on another thread meanwhile.
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }

    fn calls() -> usize {
        CALLS.with(Cell::get)
    }

    fn counting(step: AffineStep<Ad>) -> AffineStepOutput<Ad> {
        CALLS.with(|c| c.set(c.get() + 1));
        let kept = (step.passive > 0).then(|| step.x.clone().narrow(1, 0, step.passive));
        let (y, log_det) = affine_by_ops(step.x, kept, step.a, step.clamp, step.pre);
        let log_det = with_constant(log_det, step.constant);
        AffineStepOutput { y, log_det }
    }

    #[test]
    fn a_registered_half_step_is_taken_except_under_the_rescale_rule() {
        let _registry = crate::test_util::registry_lock();
        register_affine::<Ad>(counting);
        let dev = Default::default();
        let x = Tensor::<Ad, 4>::ones([2, 3, 2, 2], &dev);
        let a = Tensor::<Ad, 4>::ones([2, 2, 2, 2], &dev);
        let kept = || Some(x.clone().narrow(1, 0, 2));
        let before = calls();
        let (y, _) = affine_forward(x.clone(), kept(), a.clone(), 0.7, 0.1, None);
        assert_eq!(calls(), before + 1);
        let (want, _) = affine_by_ops(x.clone(), kept(), a.clone(), 0.7, 0.1);
        y.clone().into_data().assert_eq(&want.into_data(), true);
        // The passive channels pass through; the coupled one moves.
        let y = y.into_data().to_vec::<f32>().unwrap();
        assert!(y[..8].iter().all(|&v| v == 1.0) && y[8..12].iter().all(|&v| v != 1.0));
        // DeepLift's rule rewrites the soft clamp's tanh: only the tensor ops know it.
        let _guard = crate::nn::mode::rescale_pairs();
        let _ = affine_forward(x.clone(), kept(), a, 0.7, 0.1, None);
        assert_eq!(calls(), before + 1);
    }
}
