use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use crate::LinalgError;
use crate::fasth::{algorithm, portable};
use crate::fid;

/// A backend that runs this crate's custom ops, FastH and FastFID. Every method has a portable
/// default built from tensor ops, so a backend opts in with an empty `impl`; `CubeBackend` (cuda,
/// wgpu) replaces FastH's two long sequential loops with one kernel launch each, and
/// `Autodiff<B>` replaces [`LinalgBackend::fasth_product`] and [`LinalgBackend::fid_trace_sqrt`]
/// with versions that record the hand-written backward passes.
///
/// FastH shapes:
/// Shapes: `v` is `[K, d]` (raw vectors in rows); grouped tensors are `[G, t, d]` with the last
/// group zero-padded; `a`, `g` are `[G, d, m]`.
pub trait LinalgBackend: Backend {
    /// `W` of the WY decomposition of each group from its unit vectors `y` (`[G, t, d]`, zero rows
    /// allowed): `H_1 ⋯ H_t = I − 2 Wᵀ Y` in row layout. t − 1 dependent steps per group.
    fn fasth_wy(y: FloatTensor<Self>) -> FloatTensor<Self> {
        portable::wy::<Self>(y)
    }

    /// Step 2 of the backward pass (Algorithm 2): gradients of the raw vectors of every group
    /// at once. `v` `[G, t, d]` raw, `s` `[G, t]` = 2/‖v‖² (0 for zero rows), `a` the output of
    /// each group, `g` the gradient there.
    fn fasth_vector_grads(
        v: FloatTensor<Self>,
        s: FloatTensor<Self>,
        a: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        portable::vector_grads::<Self>(v, s, a, g)
    }

    /// `H_1 ⋯ H_K X`, or `H_K ⋯ H_1 X` when `transpose`.
    fn fasth_product(
        v: FloatTensor<Self>,
        x: FloatTensor<Self>,
        group: usize,
        transpose: bool,
    ) -> FloatTensor<Self> {
        algorithm::forward::<Self>(v, x, group, transpose)
    }

    /// Gradients `(∂L/∂X, ∂L/∂V)` of [`LinalgBackend::fasth_product`] from its output and the
    /// gradient of the output.
    fn fasth_product_backward(
        v: FloatTensor<Self>,
        output: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        group: usize,
        transpose: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        algorithm::backward::<Self>(v, output, grad, group, transpose)
    }

    /// FastFID: `tr √(C₁ᵀC₁ · F Fᵀ)` for the centred, scaled fake factor `c1` (`[m, d]`, rows are
    /// samples) and a factor `f` (`[d, r]`) of the real covariance, as a `[1]` tensor; with
    /// `want_grad`, also its gradient with respect to `c1` (the closed form of spec §3.3).
    /// The m×m eigenproblem runs on the host in f64.
    #[allow(clippy::type_complexity)]
    fn fid_trace_sqrt(
        c1: FloatTensor<Self>,
        f: FloatTensor<Self>,
        want_grad: bool,
    ) -> Result<(FloatTensor<Self>, Option<FloatTensor<Self>>), LinalgError> {
        fid::trace::forward::<Self>(c1, f, want_grad)
    }
}

#[cfg(feature = "flex")]
impl LinalgBackend for burn_flex::Flex {}

#[cfg(feature = "ndarray")]
impl<E, I, Q> LinalgBackend for burn_ndarray::NdArray<E, I, Q>
where
    E: burn_ndarray::FloatNdArrayElement,
    I: burn_ndarray::IntNdArrayElement,
    Q: burn_ndarray::QuantElement,
    burn_ndarray::NdArrayTensor: From<burn_ndarray::SharedArray<E>>,
    burn_ndarray::NdArrayTensor: From<burn_ndarray::SharedArray<I>>,
{
}

#[cfg(feature = "fusion")]
impl<B: burn_fusion::FusionBackend> LinalgBackend for burn_fusion::Fusion<B> {}
