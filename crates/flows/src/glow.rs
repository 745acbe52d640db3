//! Glow (Kingma & Dhariwal 2018) as the seed's reference uses it (rosinality/glow-pytorch,
//! `n_flow=32, n_block=4, affine=False, conv_lu=True` for CelebA 64×64): each block squeezes,
//! runs `n_flow` steps of actnorm → invertible 1×1 conv → coupling, and (except the last) splits
//! half of the channels off to the latent.
//!
//! The 1×1 convolution is LU-parameterised (the reference) or SVD/FastH-parameterised
//! (`cfx-linalg`), chosen by `conv`. Decision: the prior is a standard normal on the whole
//! latent; the reference's learned prior (a zero-initialised convolution predicting the mean
//! and log-scale of each split-off half) is left out, so that every model here shares one prior
//! and the latent ascent of the diffeo explainer sees the same geometry for RealNVP and Glow.

use burn::prelude::*;
use cfx_linalg::LinalgBackend;

use crate::Flow;
use crate::blocks::{
    ActNorm, ActNormConfig, InvConv, InvConvKind, MaskKind, MaskedCoupling, MaskedCouplingConfig,
    Squeeze,
};
use crate::multiscale::MultiScale;
use crate::nn::CouplingNetConfig;

#[derive(Config, Debug, PartialEq)]
pub struct GlowConfig {
    /// `[C, H, W]`; H and W must be divisible by `2^n_block`.
    #[config(default = "[1, 28, 28]")]
    pub input_shape: [usize; 3],
    /// Steps per block.
    #[config(default = 32)]
    pub n_flow: usize,
    /// Blocks (squeeze levels). 2 for 28×28 MNIST, 4 for 64×64 CelebA.
    #[config(default = 2)]
    pub n_block: usize,
    /// Hidden channels of the coupling nets (the reference: 512).
    #[config(default = 512)]
    pub width: usize,
    /// Affine couplings; additive (the reference's CelebA setting) when false.
    #[config(default = false)]
    pub affine: bool,
    #[config(default = "InvConvKind::Lu")]
    pub conv: InvConvKind,
    /// Seeds the random rotations the LU convolutions start from.
    #[config(default = 0)]
    pub seed: u64,
}

impl GlowConfig {
    /// The seed's CelebA setting on 64×64 RGB.
    pub fn celeba() -> Self {
        Self::new().with_input_shape([3, 64, 64]).with_n_block(4)
    }

    /// A narrow model for tests and smoke runs.
    pub fn tiny() -> Self {
        Self::new().with_n_flow(2).with_width(16)
    }

    pub fn validate(&self) -> Result<(), String> {
        let [c, h, w] = self.input_shape;
        let f = 1usize << self.n_block;
        if self.n_block == 0 || c == 0 || h % f != 0 || w % f != 0 || h == 0 || w == 0 {
            return Err(format!(
                "input shape {:?} does not allow {} Glow blocks (H and W must be divisible by {f})",
                self.input_shape, self.n_block
            ));
        }
        if self.n_flow == 0 || self.width == 0 {
            return Err("n_flow and width must be positive".into());
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Glow<B> {
        let [c0, h0, w0] = self.input_shape;
        let (mut c, mut h, mut w) = (c0, h0, w0);
        let mut blocks = Vec::with_capacity(self.n_block);
        for b in 0..self.n_block {
            (c, h, w) = (c * 4, h / 2, w / 2);
            let steps = (0..self.n_flow)
                .map(|k| GlowStep {
                    actnorm: ActNormConfig::new(c).with_learnable(true).init(device),
                    conv: InvConv::new(
                        self.conv,
                        c,
                        self.seed.wrapping_mul(1000) + (b * self.n_flow + k) as u64,
                        device,
                    ),
                    coupling: MaskedCouplingConfig::new(
                        [c, h, w],
                        MaskKind::Channel,
                        CouplingNetConfig::Glow { width: self.width },
                    )
                    .with_affine(self.affine)
                    .init(device),
                })
                .collect();
            blocks.push(GlowBlock { steps });
            if b + 1 < self.n_block {
                c /= 2;
            }
        }
        Glow {
            blocks,
            c: c0,
            h: h0,
            w: w0,
        }
    }
}

#[derive(Module, Debug)]
pub struct GlowStep<B: Backend> {
    pub actnorm: ActNorm<B>,
    pub conv: InvConv<B>,
    pub coupling: MaskedCoupling<B>,
}

impl<B: LinalgBackend> Flow<B> for GlowStep<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let (x, a) = self.actnorm.forward(x);
        let (x, b) = self.conv.forward(x);
        let (y, c) = self.coupling.forward(x);
        (y, a + b + c)
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.coupling.inverse(z);
        self.actnorm.inverse(self.conv.inverse(x))
    }
}

/// A squeeze, then the steps.
#[derive(Module, Debug)]
pub struct GlowBlock<B: Backend> {
    pub steps: Vec<GlowStep<B>>,
}

impl<B: LinalgBackend> Flow<B> for GlowBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let (x, ld) = Flow::<B>::forward(&Squeeze, x);
        self.steps.iter().fold((x, ld), |(x, ld), s| {
            let (y, l) = s.forward(x);
            (y, ld + l)
        })
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.steps.iter().rev().fold(z, |z, s| s.inverse(z));
        Flow::<B>::inverse(&Squeeze, x)
    }

    fn output_shape(&self, input: [usize; 3]) -> [usize; 3] {
        Flow::<B>::output_shape(&Squeeze, input)
    }
}

#[derive(Module, Debug)]
pub struct Glow<B: Backend> {
    pub blocks: Vec<GlowBlock<B>>,
    c: usize,
    h: usize,
    w: usize,
}

impl<B: LinalgBackend> Glow<B> {
    pub fn input_shape(&self) -> [usize; 3] {
        [self.c, self.h, self.w]
    }

    fn scales(&self) -> MultiScale<'_, B> {
        MultiScale {
            levels: self.blocks.iter().map(|l| l as &dyn Flow<B>).collect(),
            input: self.input_shape(),
        }
    }

    /// Data-dependent actnorm initialisation from one batch of unit-range images.
    pub fn initialized_from(mut self, x: Tensor<B, 4>) -> Self {
        let plan: Vec<usize> = self.scales().plan().into_iter().map(|(_, k)| k).collect();
        let mut h = x;
        for (block, kept) in self.blocks.iter_mut().zip(plan) {
            let mut y = Flow::<B>::forward(&Squeeze, h).0;
            for s in block.steps.iter_mut() {
                s.actnorm = s.actnorm.clone().initialized_from(y.clone());
                y = s.forward(y).0;
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

impl<B: LinalgBackend> Flow<B> for Glow<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        self.scales().forward(x)
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        self.scales().inverse(z)
    }

    fn output_shape(&self, input: [usize; 3]) -> [usize; 3] {
        [input.iter().product(), 1, 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, random_on};
    use crate::testing::check_flow;

    #[test]
    fn both_convolutions_give_an_invertible_model_with_the_jacobian_log_det() {
        for (conv, affine) in [(InvConvKind::Lu, true), (InvConvKind::Svd, false)] {
            let cfg = GlowConfig::tiny()
                .with_input_shape([2, 4, 4])
                .with_n_block(2)
                .with_width(4)
                .with_affine(affine)
                .with_conv(conv);
            cfg.validate().unwrap();
            let x = random_on::<TAd, 4>([4, 2, 4, 4], 3);
            let glow = cfg
                .init::<TAd>(&Default::default())
                .initialized_from(x.clone());
            let (z, _) = glow.forward(x.clone());
            assert_eq!(z.dims(), [4, 32, 1, 1]);
            check_flow(&glow, x, 1e-3, 1e-3);
        }
    }

    #[test]
    fn shapes_that_cannot_be_squeezed_are_named() {
        let e = GlowConfig::new().with_n_block(3).validate().unwrap_err();
        assert!(e.contains("divisible by 8"), "{e}");
        GlowConfig::celeba().validate().unwrap();
    }
}
