use burn::prelude::*;

use super::affine::{affine_forward, affine_inverse};
use crate::flow::Flow;
use crate::nn::{BatchNormLayers, ConvSubnet, ConvSubnetConfig};
use crate::ops::{depth_to_space, space_to_depth};

/// IB-INN's learned downsampling (`DownsampleCouplingBlock`), `[N, C, H, W] → [N, 4C, H/2, W/2]`.
///
/// Split into `x₁` (first `C/2` channels) and `x₂`; both are reshaped 2×2 → channels. The
/// high-resolution `x₁` conditions `x₂` through a strided subnet, then the coupled `x₂`
/// conditions `x₁` through a low-resolution subnet. Soft clamp `clamp·tanh(0.2·s)`.
#[derive(Config, Debug)]
pub struct DownsampleCouplingConfig {
    pub channels: usize,
    /// Width of both subnets (the reference uses twice the preceding stage's width).
    pub width: usize,
    #[config(default = 0.7)]
    pub clamp: f64,
    /// Channel dropout of the low-resolution subnet.
    #[config(default = 0.0)]
    pub dropout: f64,
}

#[derive(Module, Debug)]
pub struct DownsampleCoupling<B: Backend> {
    pub(crate) s_hi: ConvSubnet<B>,
    pub(crate) s_lo: ConvSubnet<B>,
    split: usize,
    clamp: f64,
}

impl DownsampleCouplingConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> DownsampleCoupling<B> {
        let (c1, c2) = (self.channels / 2, self.channels - self.channels / 2);
        DownsampleCoupling {
            s_hi: ConvSubnetConfig::new(c1, 8 * c2, self.width)
                .with_relu_first(false)
                .with_stride(2)
                .init(device),
            s_lo: ConvSubnetConfig::new(4 * c2, 8 * c1, self.width)
                .with_relu_first(false)
                .with_dropout(self.dropout)
                .init(device),
            split: c1,
            clamp: self.clamp,
        }
    }
}

const PRE_SCALE: f64 = 0.2;

impl<B: Backend> Flow<B> for DownsampleCoupling<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let c = x.dims()[1];
        let x1 = x.clone().narrow(1, 0, self.split);
        let x2 = x.narrow(1, self.split, c - self.split);
        let (y2, ld2) = affine_forward(
            space_to_depth(x2),
            None,
            self.s_hi.forward(x1.clone()),
            self.clamp,
            PRE_SCALE,
            None,
        );
        let (y1, ld1) = affine_forward(
            space_to_depth(x1),
            None,
            self.s_lo.forward(y2.clone()),
            self.clamp,
            PRE_SCALE,
            None,
        );
        (Tensor::cat(vec![y1, y2], 1), ld1 + ld2)
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let c = z.dims()[1];
        let y1 = z.clone().narrow(1, 0, 4 * self.split);
        let y2 = z.narrow(1, 4 * self.split, c - 4 * self.split);
        let x1 = depth_to_space(affine_inverse(
            y1,
            self.s_lo.forward(y2.clone()),
            self.clamp,
            PRE_SCALE,
        ));
        let x2 = depth_to_space(affine_inverse(
            y2,
            self.s_hi.forward(x1.clone()),
            self.clamp,
            PRE_SCALE,
        ));
        Tensor::cat(vec![x1, x2], 1)
    }

    fn output_shape(&self, [c, h, w]: [usize; 3]) -> [usize; 3] {
        [4 * c, h / 2, w / 2]
    }

    /// Both halves are scaled, so every dimension's log-scale at `+clamp`.
    fn log_det_ceiling(&self, [c, h, w]: [usize; 3]) -> Option<f64> {
        Some(self.clamp * (c * h * w) as f64)
    }
}

impl<B: Backend> BatchNormLayers<B> for DownsampleCoupling<B> {
    fn visit_batch_norms(&mut self, f: &mut dyn FnMut(&mut burn::nn::BatchNorm<B>)) {
        self.s_hi.visit_batch_norms(f);
        self.s_lo.visit_batch_norms(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, TB, constant_subnet, random_on};
    use crate::testing::check_flow;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4))]
        #[test]
        fn invertible_and_log_det_matches_jacobian(c in 2usize..5, half in 1usize..3, seed in 0u64..1000) {
            let block = DownsampleCouplingConfig::new(c, 6).init::<TAd>(&Default::default());
            let x = random_on::<TAd, 4>([8, c, 2 * half, 2 * half], seed) * 2.0;
            assert_eq!(block.output_shape([c, 2 * half, 2 * half]), [4 * c, half, half]);
            // Eight samples: the subnets' batch norm, with two, can amplify rounding by
            // 1/sqrt(eps) where the pair nearly agrees (see the IB-INN model test).
            check_flow(&block, x, 1e-4, 1e-3);
        }
    }

    #[test]
    fn a_saturated_coupling_reaches_its_log_det_ceiling() {
        let d = Default::default();
        let mut block = DownsampleCouplingConfig::new(3, 6).init::<TB>(&d);
        let x = random_on::<TB, 4>([4, 3, 4, 4], 8) * 2.0;
        let ceiling = block.log_det_ceiling([3, 4, 4]).unwrap();
        assert!(
            (ceiling - 48.0 * 0.7).abs() < 1e-9,
            "both halves, all 48 dimensions"
        );
        constant_subnet(&mut block.s_hi, 1e4);
        constant_subnet(&mut block.s_lo, 1e4);
        let at: Vec<f32> = block.forward(x).1.into_data().to_vec().unwrap();
        assert!(
            at.iter().all(|&l| (f64::from(l) - ceiling).abs() < 1e-3),
            "{at:?} vs {ceiling}"
        );
    }
}
