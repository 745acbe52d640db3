use burn::prelude::*;

use crate::flow::{Flow, constant_log_det};
use crate::ops::{depth_to_space, space_to_depth};

/// RealNVP's and Glow's squeeze: each 2×2 patch of a channel becomes 4 channels,
/// `[N, C, H, W] → [N, 4C, H/2, W/2]`. A permutation, so the log-determinant is 0.
#[derive(Module, Debug, Clone, Default)]
pub struct Squeeze;

impl<B: Backend> Flow<B> for Squeeze {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let n = x.dims()[0];
        let device = x.device();
        (space_to_depth(x), constant_log_det(n, 0.0, &device))
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        depth_to_space(z)
    }

    fn output_shape(&self, [c, h, w]: [usize; 3]) -> [usize; 3] {
        [4 * c, h / 2, w / 2]
    }

    fn log_det_ceiling(&self, _input: [usize; 3]) -> Option<f64> {
        Some(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, random_on};
    use crate::testing::check_flow;

    #[test]
    fn invertible_volume_preserving_and_shaped() {
        let x = random_on::<TAd, 4>([2, 1, 4, 4], 5);
        check_flow(&Squeeze, x.clone(), 0.0, 1e-6);
        assert_eq!(Flow::<TAd>::output_shape(&Squeeze, [1, 4, 4]), [4, 2, 2]);
        assert_eq!(Squeeze.forward(x).0.dims(), [2, 4, 2, 2]);
    }
}
