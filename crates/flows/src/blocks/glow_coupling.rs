use burn::prelude::*;

use crate::flow::Flow;
use crate::nn::{FcSubnet, FcSubnetConfig};

/// FrEIA v0.2's `GLOWCouplingBlock` on flat vectors (`[N, D, 1, 1]`): both halves are coupled,
/// `y₁ = e(s₂(x₂))·x₁ + t₂(x₂)`, then `y₂ = e(s₁(y₁))·x₂ + t₁(y₁)`, with the arctan soft clamp
/// `log e(s) = clamp·0.636·atan(s/clamp)`. IB-INN uses it once, after DCT pooling, with
/// fully connected subnets of width 1024 and clamp 2.
#[derive(Config, Debug)]
pub struct GlowCouplingConfig {
    pub dim: usize,
    #[config(default = 1024)]
    pub width: usize,
    #[config(default = 2.0)]
    pub clamp: f64,
    #[config(default = 0.5)]
    pub dropout: f64,
}

#[derive(Module, Debug)]
pub struct GlowCoupling<B: Backend> {
    pub(crate) s1: FcSubnet<B>,
    pub(crate) s2: FcSubnet<B>,
    split: usize,
    clamp: f64,
}

impl GlowCouplingConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> GlowCoupling<B> {
        let (l1, l2) = (self.dim / 2, self.dim - self.dim / 2);
        let fc = |i, o| {
            FcSubnetConfig::new(i, o)
                .with_width(self.width)
                .with_dropout(self.dropout)
                .init(device)
        };
        GlowCoupling {
            s1: fc(l1, 2 * l2),
            s2: fc(l2, 2 * l1),
            split: l1,
            clamp: self.clamp,
        }
    }
}

impl<B: Backend> GlowCoupling<B> {
    fn log_e(&self, s: Tensor<B, 2>) -> Tensor<B, 2> {
        s.div_scalar(self.clamp)
            .atan()
            .mul_scalar(self.clamp * 0.636)
    }

    /// `(log e(s), t)` from a subnet output, split at `k`.
    fn scale_shift(&self, r: Tensor<B, 2>, k: usize) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let s = r.clone().narrow(1, 0, k);
        (self.log_e(s), r.narrow(1, k, k))
    }
}

impl<B: Backend> Flow<B> for GlowCoupling<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let [n, d, h, w] = x.dims();
        let x: Tensor<B, 2> = x.reshape([n, d * h * w]);
        let dim = d * h * w;
        let x1 = x.clone().narrow(1, 0, self.split);
        let x2 = x.narrow(1, self.split, dim - self.split);
        let (ls2, t2) = self.scale_shift(self.s2.forward(x2.clone()), self.split);
        let y1 = x1 * ls2.clone().exp() + t2;
        let (ls1, t1) = self.scale_shift(self.s1.forward(y1.clone()), dim - self.split);
        let y2 = x2 * ls1.clone().exp() + t1;
        let log_det = ls1.sum_dim(1).reshape([n]) + ls2.sum_dim(1).reshape([n]);
        (Tensor::cat(vec![y1, y2], 1).reshape([n, d, h, w]), log_det)
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, d, h, w] = z.dims();
        let dim = d * h * w;
        let z: Tensor<B, 2> = z.reshape([n, dim]);
        let y1 = z.clone().narrow(1, 0, self.split);
        let y2 = z.narrow(1, self.split, dim - self.split);
        let (ls1, t1) = self.scale_shift(self.s1.forward(y1.clone()), dim - self.split);
        let x2 = (y2 - t1) * ls1.neg().exp();
        let (ls2, t2) = self.scale_shift(self.s2.forward(x2.clone()), self.split);
        let x1 = (y1 - t2) * ls2.neg().exp();
        Tensor::cat(vec![x1, x2], 1).reshape([n, d, h, w])
    }

    /// Both halves are scaled; `clamp·0.636·atan` tends to `clamp·0.636·π/2` (0.999·clamp).
    fn log_det_ceiling(&self, [c, h, w]: [usize; 3]) -> Option<f64> {
        let per_dim = self.clamp * 0.636 * std::f64::consts::FRAC_PI_2;
        Some(per_dim * (c * h * w) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, random_on};
    use crate::testing::check_flow;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(6))]
        #[test]
        fn invertible_and_log_det_matches_jacobian(dim in 2usize..12, seed in 0u64..1000) {
            let block = GlowCouplingConfig::new(dim).with_width(16).with_dropout(0.0).init::<TAd>(&Default::default());
            let x = random_on::<TAd, 4>([2, dim, 1, 1], seed) * 2.0;
            check_flow(&block, x, 1e-4, 1e-3);
        }
    }
}
