//! One training step of batch norm as a function a backend can replace.
//!
//! The models call batch norm through `cfx_flows::nn::mode::batch_norm`, which differentiates
//! it op by op unless the process registered a faster version for its backend
//! (`cfx_flows::nn::register_batch_norm`): the closed-form tensor-op version of
//! `cfx_flows::nn` on any backend, or, on `CubeBackend`, `batch_norm_train_cube` (CubeCL
//! kernels, two launches each way), and on flex `batch_norm_train_flex` (two passes each
//! way, split over the cores). The types live here, beside the kernels, so that both
//! crates name the same function type.

use burn::prelude::*;

#[cfg(feature = "cubecl")]
mod cube;
#[cfg(feature = "cubecl")]
pub use cube::batch_norm_train_cube;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
pub use flex::batch_norm_train_flex;

/// The factor `M/(M − 1)` that turns the batch's biased variance over `M = N·H·W` values per
/// channel into the unbiased one the running statistics keep (1 for `M ≤ 1`).
///
/// Why unbiased: every reference model this toolkit reproduces is PyTorch's, whose
/// `BatchNorm2d` normalises the batch with the biased variance but folds the unbiased one into
/// `running_var`; burn's `BatchNorm` folds in the biased one. The two differ by `1/(M − 1)`,
/// which the IB-INN's running statistics (momentum 0.999: nearly the last batch's) carry into
/// every eval-mode output. Found by `import-ibinn`'s step check against the authors' code
/// (docs/results.md, "The authors' code beside ours").
pub fn bessel(m: usize) -> f64 {
    if m > 1 {
        m as f64 / (m - 1) as f64
    } else {
        1.0
    }
}

/// What one training step of batch norm takes, for `x` of shape `[N, C, H, W]`.
#[derive(Debug)]
pub struct BatchNormStep<B: Backend> {
    pub x: Tensor<B, 4>,
    pub gamma: Tensor<B, 1>,
    pub beta: Tensor<B, 1>,
    /// The running statistics before this step (outside the autodiff graph).
    pub running_mean: Tensor<B, 1>,
    pub running_var: Tensor<B, 1>,
    pub epsilon: f64,
    /// burn's convention: `running ← (1 − momentum)·running + momentum·batch`, where the
    /// batch's variance is the unbiased one ([`bessel`]).
    pub momentum: f64,
    /// Whether a ReLU follows (as in every IB-INN subnet): `y = max(bn(x), 0)`, with ReLU's
    /// gradient (zero where `bn(x) ≤ 0`). The kernels apply it in the same launches.
    pub relu: bool,
}

/// `y = γ·(x − μ)/√(σ² + ε) + β` (then ReLU, if asked) with the batch's mean and biased
/// variance per channel, and the running statistics after this step (outside the autodiff
/// graph; the variance folded in unbiased, [`bessel`]).
#[derive(Debug)]
pub struct BatchNormStepOutput<B: Backend> {
    pub y: Tensor<B, 4>,
    pub running_mean: Tensor<B, 1>,
    pub running_var: Tensor<B, 1>,
}

/// A training batch norm step on backend `B`.
pub type BatchNormTrainFn<B> = fn(BatchNormStep<B>) -> BatchNormStepOutput<B>;
