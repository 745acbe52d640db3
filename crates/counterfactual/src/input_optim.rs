//! Optimisers over input images, shared by the iterative baselines.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// TensorFlow's `polynomial_decay` to 0: `lr0 · (1 − t/T)^power`, the schedule of both alibi
/// methods.
pub(crate) fn polynomial_decay(lr0: f64, step: usize, total: usize, power: f64) -> f64 {
    let frac = 1.0 - (step.min(total) as f64) / (total.max(1) as f64);
    lr0 * frac.powf(power)
}

/// Adam on a batch of images (TF1 defaults: β1 0.9, β2 0.999, ε 1e-8), with a per-image mask
/// so that finished images stay where they are while the rest of the batch goes on.
pub(crate) struct InputAdam<B: Backend> {
    m: Tensor<B, 4>,
    v: Tensor<B, 4>,
    t: i32,
}

impl<B: Backend> InputAdam<B> {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    pub fn new(like: &Tensor<B, 4>) -> Self {
        Self {
            m: like.zeros_like(),
            v: like.zeros_like(),
            t: 0,
        }
    }

    /// `x − lr · m̂ / (√v̂ + ε)`.
    pub fn step(&mut self, x: Tensor<B, 4>, grad: Tensor<B, 4>, lr: f64) -> Tensor<B, 4> {
        x - self.update(grad).mul_scalar(lr)
    }

    /// [`InputAdam::step`] only where `active` (`[N, 1, 1, 1]` of 0/1) is 1.
    pub fn step_masked(
        &mut self,
        x: Tensor<B, 4>,
        grad: Tensor<B, 4>,
        lr: f64,
        active: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        x - self.update(grad).mul_scalar(lr) * active
    }

    /// `m̂ / (√v̂ + ε)` after taking in `grad`.
    fn update(&mut self, grad: Tensor<B, 4>) -> Tensor<B, 4> {
        self.t += 1;
        self.m =
            self.m.clone().mul_scalar(Self::BETA1) + grad.clone().mul_scalar(1.0 - Self::BETA1);
        self.v =
            self.v.clone().mul_scalar(Self::BETA2) + grad.square().mul_scalar(1.0 - Self::BETA2);
        let c1 = 1.0 - Self::BETA1.powi(self.t);
        let c2 = 1.0 - Self::BETA2.powi(self.t);
        self.m.clone().div_scalar(c1) / self.v.clone().div_scalar(c2).sqrt().add_scalar(Self::EPS)
    }

    /// Keeps only the moments of `rows`, for a batch that dropped its other rows.
    pub fn retain(&mut self, rows: Tensor<B, 1, Int>) {
        self.m = self.m.clone().select(0, rows.clone());
        self.v = self.v.clone().select(0, rows);
    }
}

/// `[N, 1, 1, 1]` of 0/1 from host flags.
pub(crate) fn mask<B: Backend>(flags: &[bool], device: &B::Device) -> Tensor<B, 4> {
    let v: Vec<f32> = flags.iter().map(|&f| f32::from(u8::from(f))).collect();
    Tensor::from_data(TensorData::new(v, [flags.len(), 1, 1, 1]), device)
}

/// `[N]` from host values.
pub(crate) fn column<B: Backend>(values: &[f64], device: &B::Device) -> Tensor<B, 1> {
    let v: Vec<f32> = values.iter().map(|&f| f as f32).collect();
    Tensor::from_data(TensorData::new(v, [values.len()]), device)
}

/// Host copy of a tensor, row-major.
pub(crate) fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .into_vec()
        .unwrap_or_default()
}

/// Per-image L1 distance `[N]`.
pub(crate) fn l1<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
    let n = a.dims()[0];
    (a - b)
        .abs()
        .reshape([n as i32, -1])
        .sum_dim(1)
        .reshape([n])
}

/// Per-image squared L2 distance `[N]`.
pub(crate) fn l2sq<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, 1> {
    let n = a.dims()[0];
    (a - b)
        .square()
        .reshape([n as i32, -1])
        .sum_dim(1)
        .reshape([n])
}

/// A leaf on the autodiff backend that tracks gradients, from an inner-backend image batch.
pub(crate) fn leaf<A: AutodiffBackend>(x: Tensor<A::InnerBackend, 4>) -> Tensor<A, 4> {
    Tensor::<A, 4>::from_inner(x).require_grad()
}

/// Writes row `i` of `src` into row `i` of `dst` where `take[i]`.
pub(crate) fn replace_rows<B: Backend>(
    dst: Tensor<B, 4>,
    src: Tensor<B, 4>,
    take: &[bool],
) -> Tensor<B, 4> {
    if !take.iter().any(|&t| t) {
        return dst;
    }
    let m = mask::<B>(take, &dst.device());
    dst.clone() + (src - dst) * m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomial_decay_reaches_zero() {
        assert_eq!(polynomial_decay(0.1, 0, 1000, 1.0), 0.1);
        assert!((polynomial_decay(0.1, 500, 1000, 1.0) - 0.05).abs() < 1e-12);
        assert!((polynomial_decay(0.01, 750, 1000, 0.5) - 0.005).abs() < 1e-12);
        assert_eq!(polynomial_decay(0.1, 2000, 1000, 1.0), 0.0);
    }
}
