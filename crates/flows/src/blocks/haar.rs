use burn::prelude::*;

use crate::flow::{Flow, constant_log_det};
use crate::ops::{channel_mix, depth_to_space, space_to_depth};

/// Haar-wavelet downsampling (FrEIA `HaarDownsampling`, `rebalance = 1`, channel order not
/// permuted): each 2×2 patch of a channel becomes its average, horizontal, vertical and
/// diagonal detail coefficients, `[N, C, H, W] → [N, 4C, H/2, W/2]`.
///
/// The 4×4 transform `½[[1,1,1,1],[1,−1,1,−1],[1,1,−1,−1],[1,−1,−1,1]]` is orthonormal and
/// symmetric, so it is its own inverse and the log-determinant is 0.
#[derive(Module, Debug)]
pub struct HaarDownsampling<B: Backend> {
    /// Block-diagonal `[4C, 4C]` copy of the 4×4 transform (a constant, not saved).
    mix: Tensor<B, 2>,
}

impl<B: Backend> HaarDownsampling<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        const H: [[f32; 4]; 4] = [
            [0.5, 0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5, -0.5],
            [0.5, 0.5, -0.5, -0.5],
            [0.5, -0.5, -0.5, 0.5],
        ];
        let c4 = channels * 4;
        let mut m = vec![0.0f32; c4 * c4];
        for c in 0..channels {
            for (i, row) in H.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    m[(4 * c + i) * c4 + 4 * c + j] = v;
                }
            }
        }
        Self {
            mix: Tensor::from_data(TensorData::new(m, [c4, c4]), device),
        }
    }
}

impl<B: Backend> Flow<B> for HaarDownsampling<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let n = x.dims()[0];
        let device = x.device();
        (
            channel_mix(space_to_depth(x), self.mix.clone()),
            constant_log_det(n, 0.0, &device),
        )
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        depth_to_space(channel_mix(z, self.mix.clone()))
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
    use crate::test_util::{TAd, TB, assert_close, random_on};
    use crate::testing::check_flow;

    #[test]
    fn coefficients_of_a_patch() {
        let d = Default::default();
        let haar = HaarDownsampling::<TB>::new(1, &d);
        let x = Tensor::<TB, 4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &d);
        let (z, _) = haar.forward(x);
        let want = Tensor::<TB, 4>::from_floats([[[[5.0]], [[-1.0]], [[-2.0]], [[0.0]]]], &d);
        assert_close(z, want, 1e-6);
    }

    #[test]
    fn invertible_with_zero_log_det() {
        let haar = HaarDownsampling::<TAd>::new(2, &Default::default());
        check_flow(&haar, random_on::<TAd, 4>([3, 2, 4, 4], 5), 1e-5, 1e-4);
    }
}
