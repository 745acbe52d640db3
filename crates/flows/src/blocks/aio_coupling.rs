use burn::prelude::*;

use super::affine::{affine_forward, affine_inverse};
use super::{ActNorm, ActNormConfig, FixedRotation};
use crate::flow::Flow;
use crate::nn::{BatchNormLayers, ConvSubnet, ConvSubnetConfig};

/// IB-INN's all-in-one coupling block (`all_in_one_block.py::AIO_Block`):
/// an affine coupling of the last `C/2` channels conditioned on the first `C − C/2`,
/// `x₂' = x₂·exp(clamp·tanh(0.1·s)) + t`, then a fixed random rotation of all channels, then a
/// per-channel scale `·exp(act_norm)` (fixed at `ln 0.80` for MNIST) plus offset.
///
/// The translation `t` is *not* scaled by 0.1, only the log-scale input is (reference code).
#[derive(Config, Debug)]
pub struct AllInOneCouplingConfig {
    pub channels: usize,
    pub subnet_width: usize,
    #[config(default = 0.7)]
    pub clamp: f64,
    /// Initial channel scale (not its log), the reference's `act_norm` option.
    #[config(default = 0.8)]
    pub act_norm: f64,
    #[config(default = false)]
    pub learnable_act_norm: bool,
    #[config(default = 0.0)]
    pub dropout: f64,
    #[config(default = true)]
    pub relu_first: bool,
    /// Seed of the fixed rotation.
    #[config(default = 0)]
    pub seed: u64,
}

#[derive(Module, Debug)]
pub struct AllInOneCoupling<B: Backend> {
    pub(crate) subnet: ConvSubnet<B>,
    pub(crate) rotation: FixedRotation<B>,
    pub(crate) act_norm: ActNorm<B>,
    clamp: f64,
    split: usize,
}

impl AllInOneCouplingConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> AllInOneCoupling<B> {
        let c = self.channels;
        let (c1, c2) = (c - c / 2, c / 2);
        AllInOneCoupling {
            subnet: ConvSubnetConfig::new(c1, 2 * c2, self.subnet_width)
                .with_dropout(self.dropout)
                .with_relu_first(self.relu_first)
                .init(device),
            rotation: FixedRotation::random(c, self.seed, device),
            act_norm: ActNormConfig::new(c)
                .with_init_log_scale(self.act_norm.ln())
                .with_learnable(self.learnable_act_norm)
                .init(device),
            clamp: self.clamp,
            split: c1,
        }
    }
}

const PRE_SCALE: f64 = 0.1;

impl<B: Backend> Flow<B> for AllInOneCoupling<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let [_, _, h, w] = x.dims();
        // The half-step takes the whole input and passes the conditioning channels through,
        // which spares a narrow and a cat (`cfx_linalg::affine::AffineStep` says why), and
        // adds a fixed act-norm's log-det (`cfx_linalg::affine::ConstantLogDet` says why).
        let x1 = x.clone().narrow(1, 0, self.split);
        let a = self.subnet.forward_leading(x.clone(), x1.clone());
        let constant = self.act_norm.constant_log_det(h * w);
        let fixed = constant.is_some();
        let (y, log_det) = affine_forward(x, Some(x1), a, self.clamp, PRE_SCALE, constant);
        let (y, _) = self.rotation.forward(y);
        if fixed {
            return (self.act_norm.apply(y), log_det);
        }
        let (y, ld_act) = self.act_norm.forward(y);
        (y, log_det + ld_act)
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.rotation.inverse(self.act_norm.inverse(z));
        let c = y.dims()[1];
        let x1 = y.clone().narrow(1, 0, self.split);
        let y2 = y.narrow(1, self.split, c - self.split);
        let a = self.subnet.forward(x1.clone());
        Tensor::cat(vec![x1, affine_inverse(y2, a, self.clamp, PRE_SCALE)], 1)
    }

    /// Every log-scale of the coupled `C − split` channels at `+clamp`, plus the act-norm's
    /// constant (−0.223 nats per dimension for IB-INN's fixed 0.80).
    fn log_det_ceiling(&self, [c, h, w]: [usize; 3]) -> Option<f64> {
        let coupling = self.clamp * ((c - self.split) * h * w) as f64;
        Some(coupling + self.act_norm.log_det_ceiling([c, h, w])?)
    }
}

impl<B: Backend> BatchNormLayers<B> for AllInOneCoupling<B> {
    fn visit_batch_norms(&mut self, f: &mut dyn FnMut(&mut burn::nn::BatchNorm<B>)) {
        self.subnet.visit_batch_norms(f);
    }
}

impl<B: Backend> BatchNormLayers<B> for ConvSubnet<B> {
    fn visit_batch_norms(&mut self, f: &mut dyn FnMut(&mut burn::nn::BatchNorm<B>)) {
        f(&mut self.bn1);
        f(&mut self.bn2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, TB, constant_subnet, random_on};
    use crate::testing::check_flow;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(6))]
        #[test]
        fn invertible_and_log_det_matches_jacobian(c in 2usize..6, hw in 1usize..4, seed in 0u64..1000) {
            let block = AllInOneCouplingConfig::new(c, 8).with_seed(seed).init::<TAd>(&Default::default());
            // Larger inputs push tanh into its clamped range, exercising the soft clamp.
            let x = random_on::<TAd, 4>([8, c, hw, hw], seed) * 3.0;
            // Eight samples: the subnets' batch norm, with two, can amplify rounding by
            // 1/sqrt(eps) where the pair nearly agrees (see the IB-INN model test).
            check_flow(&block, x, 1e-4, 1e-3);
        }
    }

    /// A learnable act-norm's log-det takes the tensor-op path instead of the half-step's
    /// constant term; both are checked against the Jacobian (the fixed one above).
    #[test]
    fn a_learnable_act_norm_keeps_its_log_det_and_its_gradient() {
        let d = Default::default();
        let block = AllInOneCouplingConfig::new(4, 8)
            .with_learnable_act_norm(true)
            .init::<TAd>(&d);
        assert!(block.act_norm.constant_log_det(4).is_none());
        let x = random_on::<TAd, 4>([8, 4, 2, 2], 5);
        check_flow(&block, x.clone(), 1e-4, 1e-3);
        let grads = block.forward(x).1.sum().backward();
        let g: Vec<f32> = block
            .act_norm
            .log_scale
            .grad(&grads)
            .expect("the log-det reaches the learnable scales")
            .into_data()
            .to_vec()
            .unwrap();
        // ∂(Σ_n log_det)/∂log_scale_c = N·H·W.
        assert!(g.iter().all(|&v| (v - 32.0).abs() < 1e-4), "{g:?}");
    }

    #[test]
    fn a_saturated_coupling_reaches_its_log_det_ceiling_and_no_further() {
        let d = Default::default();
        let mut block = AllInOneCouplingConfig::new(5, 8).init::<TB>(&d);
        let x = random_on::<TB, 4>([4, 5, 3, 3], 7) * 3.0;
        let ceiling = block.log_det_ceiling([5, 3, 3]).unwrap();
        // 3 of 5 channels pass, 2 are scaled: 18 log-scales of at most 0.7, and the fixed
        // act-norm's 45·ln 0.8.
        assert!(
            (ceiling - (18.0 * 0.7 + 45.0 * 0.8f64.ln())).abs() < 1e-4,
            "{ceiling}"
        );
        let below: Vec<f32> = block.forward(x.clone()).1.into_data().to_vec().unwrap();
        assert!(
            below.iter().all(|&l| f64::from(l) < ceiling - 1.0),
            "{below:?}"
        );
        constant_subnet(&mut block.subnet, 1e4);
        let at: Vec<f32> = block.forward(x).1.into_data().to_vec().unwrap();
        assert!(
            at.iter().all(|&l| (f64::from(l) - ceiling).abs() < 1e-3),
            "{at:?} vs {ceiling}"
        );
    }
}
