//! RealNVP (Dinh et al. 2017) as the seed's reference configures it for MNIST (fmu2/realNVP:
//! base width 64, 4 residual blocks, affine couplings, scale regularisation 5e-5), and the
//! seed's helix toy flow (12 couplings with three-layer leaky-ReLU MLPs, seed 002 App. C.1).
//!
//! Each scale is 3 checkerboard couplings, a squeeze, 3 channel couplings and a split; the last
//! stage is `final_couplings` couplings. Decision: the reference's invertible batch norm after
//! each coupling (`coupling_bn`) is replaced by a data-initialised actnorm. A batch-norm flow
//! layer normalises by batch statistics in training and by running averages in use, so its
//! inverse in use is not the map it was trained as; the diffeo loop inverts the flow at every
//! step, where that mismatch would show. The subnets keep their batch norms.

use burn::prelude::*;

use crate::Flow;
use crate::blocks::{
    ActNormConfig, FlowBlock, FlowSequence, Logit, MaskKind, MaskedCouplingConfig, Squeeze,
};
use crate::multiscale::MultiScale;
use crate::nn::{BatchNormLayers, CouplingNetConfig};

#[derive(Config, Debug, PartialEq)]
pub struct RealNvpConfig {
    /// `[C, H, W]`; H and W must be divisible by `2^scales`.
    #[config(default = "[1, 28, 28]")]
    pub input_shape: [usize; 3],
    /// Squeeze-and-split scales before the final stage.
    #[config(default = 2)]
    pub scales: usize,
    /// Couplings of each half-scale (checkerboard, then channel after the squeeze).
    #[config(default = 3)]
    pub couplings_per_stage: usize,
    #[config(default = 4)]
    pub final_couplings: usize,
    #[config(default = "MaskKind::Checkerboard")]
    pub final_mask: MaskKind,
    #[config(default = "CouplingNetConfig::ResNet { width: 64, blocks: 4 }")]
    pub net: CouplingNetConfig,
    /// `Some(α)`: unit-range pixels go through `logit(α + (1−2α)x)` first.
    #[config(default = "Some(0.05)")]
    pub logit_alpha: Option<f64>,
    #[config(default = true)]
    pub actnorm: bool,
    /// Weight of `Σ scale²` in the training loss.
    #[config(default = 5e-5)]
    pub scale_reg: f64,
}

impl RealNvpConfig {
    /// The seed's helix flow: 12 couplings alternating over the coordinates of `[3, 1, 1]`,
    /// three-layer MLPs (width 64 here; the seed does not give it), no pre-processing.
    pub fn helix() -> Self {
        Self::new()
            .with_input_shape([3, 1, 1])
            .with_scales(0)
            .with_final_couplings(12)
            .with_final_mask(MaskKind::Channel)
            .with_net(CouplingNetConfig::Mlp {
                width: 64,
                layers: 3,
            })
            .with_logit_alpha(None)
            .with_actnorm(false)
            .with_scale_reg(0.0)
    }

    /// A narrow MNIST model for tests and smoke runs.
    pub fn tiny() -> Self {
        Self::new()
            .with_couplings_per_stage(1)
            .with_final_couplings(2)
            .with_net(CouplingNetConfig::ResNet {
                width: 8,
                blocks: 1,
            })
    }

    pub fn validate(&self) -> Result<(), String> {
        let [c, h, w] = self.input_shape;
        let f = 1usize << self.scales;
        if c == 0 || h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(format!(
                "input shape {:?} does not allow {} squeeze steps (H and W must be divisible by {f})",
                self.input_shape, self.scales
            ));
        }
        if self.final_couplings == 0 {
            return Err("final_couplings must be at least 1".into());
        }
        if let Some(a) = self.logit_alpha
            && !(0.0..0.5).contains(&a)
        {
            return Err(format!("logit_alpha {a} must lie in [0, 0.5)"));
        }
        let channel_needs = if self.scales == 0 && self.final_mask == MaskKind::Channel {
            c
        } else {
            2
        };
        if channel_needs < 2 {
            return Err("a channel mask needs at least 2 channels".into());
        }
        self.net.validate()
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> RealNvp<B> {
        let mut shape = self.input_shape;
        let mut levels = Vec::new();
        let coupling = |blocks: &mut Vec<FlowBlock<B>>, shape: [usize; 3], mask, flip| {
            let cfg = MaskedCouplingConfig::new(shape, mask, self.net.clone()).with_flip(flip);
            blocks.push(FlowBlock::Masked(cfg.init(device)));
            if self.actnorm {
                let an = ActNormConfig::new(shape[0]).with_learnable(true);
                blocks.push(FlowBlock::ActNorm(an.init(device)));
            }
        };
        for _ in 0..self.scales {
            let mut blocks = Vec::new();
            for k in 0..self.couplings_per_stage {
                coupling(&mut blocks, shape, MaskKind::Checkerboard, k % 2 == 1);
            }
            blocks.push(FlowBlock::Squeeze(Squeeze));
            shape = [shape[0] * 4, shape[1] / 2, shape[2] / 2];
            for k in 0..self.couplings_per_stage {
                coupling(&mut blocks, shape, MaskKind::Channel, k % 2 == 1);
            }
            levels.push(FlowSequence::new(blocks));
            shape[0] /= 2;
        }
        let mut blocks = Vec::new();
        for k in 0..self.final_couplings {
            coupling(&mut blocks, shape, self.final_mask, k % 2 == 1);
        }
        levels.push(FlowSequence::new(blocks));
        let [c, h, w] = self.input_shape;
        RealNvp {
            logit: self.logit_alpha.map(Logit::new),
            levels,
            scale_reg: self.scale_reg,
            c,
            h,
            w,
        }
    }
}

#[derive(Module, Debug)]
pub struct RealNvp<B: Backend> {
    logit: Option<Logit>,
    pub levels: Vec<FlowSequence<B>>,
    scale_reg: f64,
    c: usize,
    h: usize,
    w: usize,
}

impl<B: Backend> RealNvp<B> {
    pub fn input_shape(&self) -> [usize; 3] {
        [self.c, self.h, self.w]
    }

    fn scales(&self) -> MultiScale<'_, B> {
        MultiScale {
            levels: self.levels.iter().map(|l| l as &dyn Flow<B>).collect(),
            input: self.input_shape(),
        }
    }

    /// `scale_reg · Σ scale²` over all couplings: the reference's regulariser, added to the
    /// training loss.
    pub fn regulariser(&self) -> Tensor<B, 1> {
        self.scale_penalty().mul_scalar(self.scale_reg)
    }

    /// `Σ scale²` over all couplings.
    pub fn scale_penalty(&self) -> Tensor<B, 1> {
        self.levels
            .iter()
            .flat_map(|l| &l.blocks)
            .filter_map(|b| match b {
                FlowBlock::Masked(m) => m.scale_penalty(),
                _ => None,
            })
            .reduce(|a, b| a + b)
            // Only a model without affine couplings gets here; it is rare enough to look up
            // the device then rather than walk the module on every training step.
            .unwrap_or_else(|| {
                Tensor::zeros([1], &self.devices().into_iter().next().unwrap_or_default())
            })
    }

    /// Glow's data-dependent actnorm initialisation from one batch `x` (unit-range images).
    pub fn initialized_from(mut self, x: Tensor<B, 4>) -> Self {
        let mut h = match &self.logit {
            Some(l) => l.forward(x).0,
            None => x,
        };
        let plan: Vec<usize> = self.scales().plan().into_iter().map(|(_, k)| k).collect();
        for (level, kept) in self.levels.iter_mut().zip(plan) {
            let mut y = h;
            for b in level.blocks.iter_mut() {
                if let FlowBlock::ActNorm(an) = b {
                    *an = an.clone().initialized_from(y.clone());
                }
                y = b.forward(y).0;
            }
            h = y.narrow(1, 0, kept);
        }
        self
    }

    /// Images from latents drawn from `N(0, T²)`.
    pub fn sample(&self, n: usize, temperature: f64, device: &B::Device) -> Tensor<B, 4> {
        crate::sample_prior(self, self.input_shape(), n, temperature, device)
    }
}

impl<B: Backend> Flow<B> for RealNvp<B> {
    /// Unit-range images `[N, C, H, W]` to the latent `[N, D, 1, 1]`.
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        match &self.logit {
            Some(l) => {
                let (y, ld0) = l.forward(x);
                let (z, ld) = self.scales().forward(y);
                (z, ld0 + ld)
            }
            None => self.scales().forward(x),
        }
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.scales().inverse(z);
        match &self.logit {
            Some(l) => l.inverse(y),
            None => y,
        }
    }

    fn output_shape(&self, input: [usize; 3]) -> [usize; 3] {
        [input.iter().product(), 1, 1]
    }
}

impl<B: Backend> BatchNormLayers<B> for RealNvp<B> {
    fn visit_batch_norms(&mut self, f: &mut dyn FnMut(&mut burn::nn::BatchNorm<B>)) {
        self.levels.iter_mut().for_each(|l| l.visit_batch_norms(f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::mode;
    use crate::test_util::{TAd, random_on};
    use crate::testing::check_flow;

    fn unit_images(shape: [usize; 4], seed: u64) -> Tensor<TAd, 4> {
        burn::tensor::activation::sigmoid(random_on::<TAd, 4>(shape, seed))
    }

    #[test]
    fn multiscale_model_is_invertible_with_the_jacobian_log_det() {
        let cfg = RealNvpConfig::tiny()
            .with_input_shape([1, 4, 4])
            .with_scales(1)
            .with_net(CouplingNetConfig::ResNet {
                width: 4,
                blocks: 1,
            });
        cfg.validate().unwrap();
        let x = unit_images([4, 1, 4, 4], 1);
        let _m = mode::inference();
        let flow = cfg
            .init::<TAd>(&Default::default())
            .initialized_from(x.clone());
        let (z, _) = flow.forward(x.clone());
        assert_eq!(z.dims(), [4, 16, 1, 1]);
        // Actnorm made the model non-trivial: the log-determinant is not the logit's alone.
        check_flow(&flow, x, 1e-4, 1e-3);
    }

    #[test]
    fn helix_flow_is_invertible() {
        let cfg = RealNvpConfig::helix();
        cfg.validate().unwrap();
        let mut flow = cfg.init::<TAd>(&Default::default());
        // Zero-initialised couplings are the identity; perturb one level's nets.
        flow.levels[0] = FlowSequence::new(
            (0..4)
                .map(|k| {
                    FlowBlock::Masked(
                        MaskedCouplingConfig::new([3, 1, 1], MaskKind::Channel, cfg.net.clone())
                            .with_flip(k % 2 == 1)
                            .with_zero_init(false)
                            .init(&Default::default()),
                    )
                })
                .collect(),
        );
        check_flow(&flow, random_on::<TAd, 4>([3, 3, 1, 1], 4), 1e-4, 1e-3);
    }

    #[test]
    fn bad_configurations_are_named() {
        let e = RealNvpConfig::new().with_scales(3).validate().unwrap_err();
        assert!(e.contains("divisible by 8"), "{e}");
        let e = RealNvpConfig::new()
            .with_logit_alpha(Some(0.7))
            .validate()
            .unwrap_err();
        assert!(e.contains("logit_alpha"), "{e}");
    }
}
