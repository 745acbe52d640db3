//! The affine half-step of IB-INN's coupling blocks as a function a backend can replace.
//!
//! `cfx_flows`'s couplings compute `y = x·exp(s) + t`, `s = clamp·tanh(pre·a_s)`, with
//! `[a_s, t] = a` split along channels, and the log-determinant `Σ s` per sample. Differentiated
//! op by op that is about eight launches forward and twenty backward, for each of the IB-INN's
//! 50 half-steps. On `CubeBackend` [`affine_train_cube`] does it in one kernel forward and
//! three backward, and on flex `affine_train_flex` in one pass each way split over the cores.
//! The types live here, beside the kernels, so that both crates name the same function type.

use burn::prelude::*;

#[cfg(feature = "cubecl")]
mod cube;
#[cfg(feature = "cubecl")]
pub use cube::affine_train_cube;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
pub use flex::affine_train_flex;

/// What one affine half-step takes: `x` of shape `[N, P + C, H, W]`, whose first `passive`
/// (`P`) channels pass through unchanged, and `a` of shape `[N, 2C, H, W]` (the log-scales'
/// pre-activations, then the shifts) for the other `C`.
///
/// Why the passive channels: a coupling's half-step transforms the second part of its input
/// and keeps the first, which conditions it. Taking the whole input saves the `narrow` of the
/// second part and the `cat` that joins the halves again, with their backward passes: about
/// four launches per coupling on the cube backends.
#[derive(Debug)]
pub struct AffineStep<B: Backend> {
    pub x: Tensor<B, 4>,
    pub passive: usize,
    pub a: Tensor<B, 4>,
    pub clamp: f64,
    pub pre: f64,
    /// Added to every sample's log-determinant.
    pub constant: Option<ConstantLogDet<B>>,
}

impl<B: Backend> AffineStep<B> {
    /// `[N, P + C, H, W]` of `x`, after checking what every implementation relies on: `a` is
    /// `[N, 2C, H, W]` and the constant term takes no gradient. `op` names the implementation
    /// in the message.
    pub fn checked_dims(&self, op: &str) -> [usize; 4] {
        let [n, c, h, w] = self.x.dims();
        let a_dims = self.a.dims();
        assert!(
            self.passive < c && a_dims == [n, 2 * (c - self.passive), h, w],
            "{op}: a must be [N, 2C, H, W] for x of [N, P + C, H, W] = {:?} with P = {}, got \
             {a_dims:?}",
            [n, c, h, w],
            self.passive
        );
        if let Some(constant) = &self.constant {
            assert!(
                !constant.values.is_require_grad(),
                "{op}: the constant log-det term must not require a gradient"
            );
        }
        [n, c, h, w]
    }
}

/// `weight·Σ values`, a log-determinant term that is the same for every sample and takes no
/// gradient (`values` must not require one).
///
/// Why: the all-in-one coupling ends with a fixed act-norm, whose log-determinant
/// `H·W·Σ log_scale` is such a term. As tensor ops it is a reduction, a scaling and an add to
/// the half-step's log-determinant, three launches per coupling for a number that never
/// changes; the half-step's kernel adds it where it writes its own sum.
#[derive(Debug)]
pub struct ConstantLogDet<B: Backend> {
    pub values: Tensor<B, 1>,
    pub weight: f64,
}

/// `y = [x_P, x_C·exp(s) + t]` (the passive channels, then the coupled ones) and
/// `log_det = Σ_{c,h,w} s` per sample (plus the constant term, if any).
#[derive(Debug)]
pub struct AffineStepOutput<B: Backend> {
    pub y: Tensor<B, 4>,
    pub log_det: Tensor<B, 1>,
}

/// An affine half-step on backend `B`, with its gradients.
pub type AffineFn<B> = fn(AffineStep<B>) -> AffineStepOutput<B>;
