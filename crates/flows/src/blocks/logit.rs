use burn::prelude::*;

use crate::flow::Flow;
use crate::ops::sum_per_sample;

/// RealNVP's input transform (Dinh et al. 2017 §4.1): unit-range pixels `x ∈ [0, 1]` to
/// `y = logit(α + (1 − 2α)·x)`, so the flow never models the hard edges of `[0, 1]`;
/// `α = 0.05` on MNIST as in the reference. Its log-determinant enters the likelihood, so
/// bits per dimension stay those of the pixels.
#[derive(Module, Debug, Clone)]
pub struct Logit {
    pub alpha: f64,
}

impl Logit {
    pub fn new(alpha: f64) -> Self {
        Self { alpha }
    }
}

impl<B: Backend> Flow<B> for Logit {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let a = self.alpha;
        let p = x.mul_scalar(1.0 - 2.0 * a).add_scalar(a);
        let q = p.clone().neg().add_scalar(1.0);
        let y = p.clone().log() - q.clone().log();
        // d/dx logit(p) = (1 − 2α) / (p (1 − p)).
        let ld_each = p.log().neg() - q.log();
        let n_dims = ld_each.dims()[1..].iter().product::<usize>() as f64;
        let ld = sum_per_sample(ld_each).add_scalar(n_dims * (1.0 - 2.0 * a).ln());
        (y, ld)
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let a = self.alpha;
        burn::tensor::activation::sigmoid(z)
            .sub_scalar(a)
            .div_scalar(1.0 - 2.0 * a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TAd;
    use crate::testing::check_flow;

    #[test]
    fn invertible_with_the_jacobian_log_det_on_unit_pixels() {
        let v: Vec<f32> = (0..8).map(|i| i as f32 / 7.0).collect();
        let x = Tensor::<TAd, 4>::from_data(TensorData::new(v, [2, 1, 2, 2]), &Default::default());
        check_flow(&Logit::new(0.05), x, 1e-5, 1e-4);
    }
}
