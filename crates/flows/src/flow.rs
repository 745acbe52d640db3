use burn::prelude::*;

/// An invertible map with a tractable Jacobian determinant: FrEIA's contract, in burn.
///
/// Every block and every model is a `Flow`, so blocks compose into sequences and the
/// counterfactual methods treat all flows alike. Tensors are always `[N, C, H, W]`; flat
/// vectors are carried as `[N, D, 1, 1]` so that one rank serves the whole pipeline.
pub trait Flow<B: Backend> {
    /// `x ↦ (z, log|det ∂z/∂x|)`, the log-determinant per sample (shape `[N]`).
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>);

    /// `z ↦ x`, the exact inverse of [`Flow::forward`].
    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4>;

    /// `log|det ∂z/∂x|` per sample.
    fn log_det(&self, x: Tensor<B, 4>) -> Tensor<B, 1> {
        self.forward(x).1
    }

    /// `[C, H, W]` of the output for an input of `[C, H, W]`.
    fn output_shape(&self, input: [usize; 3]) -> [usize; 3] {
        input
    }

    /// The largest `log|det ∂z/∂x|` per sample the block can reach on inputs of shape `input`,
    /// where it is bounded: soft-clamped couplings, and blocks whose Jacobian is constant.
    /// `None` where it is not (or not worked out). A trained flow's log-determinant against this
    /// ceiling says how much of `L_x` its couplings could still gain by scaling harder
    /// (`cargo xtask log-det`).
    fn log_det_ceiling(&self, _input: [usize; 3]) -> Option<f64> {
        None
    }
}

/// `[N]` filled with `value`: the log-determinant of blocks whose Jacobian is constant.
pub(crate) fn constant_log_det<B: Backend>(
    n: usize,
    value: f64,
    device: &B::Device,
) -> Tensor<B, 1> {
    Tensor::full([n], value, device)
}
