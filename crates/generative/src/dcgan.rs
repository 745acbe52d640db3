//! The DCGAN of C3LT's and the diffeomorphic-counterfactual code for 28×28 images
//! (`khorrams/c3lt` `models/gans/dcgan.py`, reference-implementations §2g).

use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, log_sigmoid, relu, sigmoid};
use cfx_flows::nn::mode::batch_norm;
use cfx_flows::nn::{conv_transpose2d_default, conv2d_default};
use serde::{Deserialize, Serialize};

use crate::LatentGenerator;
use crate::init::dcgan_normal;

/// Generator `ConvT(D→8g, 4,1,0)-BN-ReLU → ConvT(8g→4g, 4,2,1)-BN-ReLU → ConvT(4g→2g)-BN-ReLU
/// → ConvT(2g→g)-BN-ReLU → ConvT(g→C, k1, s1, p2)-tanh` (1→4→8→16→32→28 pixels) and
/// discriminator `Conv(C→d, 4,2,1)-LReLU(0.2) → Conv(d→2d)-BN-LReLU → Conv(2d→4d)-BN-LReLU →
/// Conv(4d→1, 4,2,1)` (28→14→7→3→1), with g = d = 64 and D = 100 as in the reference.
///
/// Decisions: the last transposed convolution (kernel 1, padding 2) is a per-pixel linear map
/// followed by cropping two pixels on each side; it is written as exactly that (crop, then a
/// bias-free 1×1 convolution), which computes the same function without asking the backend
/// for a transposed convolution whose padding exceeds its kernel. The discriminator returns a
/// logit and the losses use `log σ`, which equals the reference's sigmoid + BCE without its
/// overflow for confident outputs. Batch-norm scales start at 1 rather than `N(1, 0.02)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DcganConfig {
    pub latent_dim: usize,
    /// Generator width `g`.
    pub ngf: usize,
    /// Discriminator (and encoder) width `d`.
    pub ndf: usize,
    pub channels: usize,
}

impl Default for DcganConfig {
    fn default() -> Self {
        Self {
            latent_dim: 100,
            ngf: 64,
            ndf: 64,
            channels: 1,
        }
    }
}

impl DcganConfig {
    /// The only image size this architecture produces.
    pub const SIZE: usize = 28;

    /// A narrow variant for tests and smoke runs.
    pub fn tiny() -> Self {
        Self {
            latent_dim: 16,
            ngf: 8,
            ndf: 8,
            channels: 1,
        }
    }

    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, Self::SIZE, Self::SIZE]
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.latent_dim == 0 || self.ngf == 0 || self.ndf == 0 || self.channels == 0 {
            return Err("latent_dim, ngf, ndf and channels must be positive".into());
        }
        Ok(())
    }

    pub fn init_generator<B: Backend>(&self, device: &B::Device) -> Generator<B> {
        let g = self.ngf;
        let up = |i, o, stride, pad| {
            ConvTranspose2dConfig::new([i, o], [4, 4])
                .with_stride([stride, stride])
                .with_padding([pad, pad])
                .with_bias(false)
                .with_initializer(dcgan_normal())
                .init(device)
        };
        let bn = |c| BatchNormConfig::new(c).init(device);
        Generator {
            up: vec![
                up(self.latent_dim, 8 * g, 1, 0),
                up(8 * g, 4 * g, 2, 1),
                up(4 * g, 2 * g, 2, 1),
                up(2 * g, g, 2, 1),
            ],
            norms: vec![bn(8 * g), bn(4 * g), bn(2 * g), bn(g)],
            out: Conv2dConfig::new([g, self.channels], [1, 1])
                .with_bias(false)
                .with_initializer(dcgan_normal())
                .init(device),
            latent_dim: self.latent_dim,
            channels: self.channels,
        }
    }

    pub fn init_discriminator<B: Backend>(&self, device: &B::Device) -> Discriminator<B> {
        let d = self.ndf;
        let convs = down_convs(self.channels, d, 1, device);
        Discriminator {
            convs,
            norms: vec![
                BatchNormConfig::new(2 * d).init(device),
                BatchNormConfig::new(4 * d).init(device),
            ],
            channels: self.channels,
        }
    }
}

/// The strided `4×4` convolutions shared by the discriminator and the encoder:
/// `C→d→2d→4d→out`, each halving the size (28→14→7→3→1).
pub(crate) fn down_convs<B: Backend>(
    channels: usize,
    d: usize,
    out: usize,
    device: &B::Device,
) -> Vec<Conv2d<B>> {
    let conv = |i, o| {
        Conv2dConfig::new([i, o], [4, 4])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .with_initializer(dcgan_normal())
            .init(device)
    };
    vec![
        conv(channels, d),
        conv(d, 2 * d),
        conv(2 * d, 4 * d),
        conv(4 * d, out),
    ]
}

/// Runs `down_convs` with LeakyReLU(0.2) after each of the first three, batch norm on the 2nd
/// and 3rd; returns the last convolution's output `[N, out, 1, 1]`.
pub(crate) fn down_forward<B: Backend>(
    convs: &[Conv2d<B>],
    norms: &[BatchNorm<B>],
    x: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let mut h = leaky_relu(conv2d_default(&convs[0], x), 0.2);
    for (conv, bn) in convs[1..3].iter().zip(norms) {
        h = leaky_relu(batch_norm(bn, conv2d_default(conv, h)), 0.2);
    }
    conv2d_default(&convs[3], h)
}

#[derive(Module, Debug)]
pub struct Generator<B: Backend> {
    up: Vec<ConvTranspose2d<B>>,
    norms: Vec<BatchNorm<B>>,
    out: Conv2d<B>,
    latent_dim: usize,
    channels: usize,
}

impl<B: Backend> Generator<B> {
    /// Images in the GAN's `[-1, 1]` for latents `[N, D]`.
    pub fn forward(&self, z: Tensor<B, 2>) -> Tensor<B, 4> {
        let [n, d] = z.dims();
        let mut h = z.reshape([n, d, 1, 1]);
        for (up, bn) in self.up.iter().zip(&self.norms) {
            h = relu(batch_norm(bn, conv_transpose2d_default(up, h)));
        }
        let s = DcganConfig::SIZE;
        let h = h.narrow(2, 2, s).narrow(3, 2, s);
        conv2d_default(&self.out, h).tanh()
    }
}

impl<B: Backend> LatentGenerator<B> for Generator<B> {
    fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    fn image_shape(&self) -> [usize; 3] {
        [self.channels, DcganConfig::SIZE, DcganConfig::SIZE]
    }

    fn decode(&self, z: Tensor<B, 2>) -> Tensor<B, 4> {
        self.forward(z).add_scalar(1.0).mul_scalar(0.5)
    }

    fn encode(&self, _x: Tensor<B, 4>) -> Option<Tensor<B, 2>> {
        None
    }
}

#[derive(Module, Debug)]
pub struct Discriminator<B: Backend> {
    convs: Vec<Conv2d<B>>,
    norms: Vec<BatchNorm<B>>,
    channels: usize,
}

impl<B: Backend> Discriminator<B> {
    /// The logit of "real" for unit-space images, `[N]`.
    pub fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 1> {
        let n = x.dims()[0];
        let x = x.mul_scalar(2.0).sub_scalar(1.0);
        down_forward(&self.convs, &self.norms, x).reshape([n])
    }

    /// `D(x)`, the probability of "real".
    pub fn probability(&self, x: Tensor<B, 4>) -> Tensor<B, 1> {
        sigmoid(self.logits(x))
    }

    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, DcganConfig::SIZE, DcganConfig::SIZE]
    }
}

/// `BCE(D(x), 1) + BCE(D(G(z)), 0)`, batch means, from the logits of real and fake images.
pub fn discriminator_loss<B: Backend>(real: Tensor<B, 1>, fake: Tensor<B, 1>) -> Tensor<B, 1> {
    // log(1 − σ(l)) = log σ(−l).
    log_sigmoid(real).mean().neg() - log_sigmoid(fake.neg()).mean()
}

/// The non-saturating generator loss `BCE(D(G(z)), 1)` (and C3LT's adversarial term).
pub fn generator_loss<B: Backend>(fake: Tensor<B, 1>) -> Tensor<B, 1> {
    log_sigmoid(fake).mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample_latents;
    use crate::test_util::{TAd, TB};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};

    #[test]
    fn shapes_and_parameter_counts_match_the_reference() {
        let d = Default::default();
        let cfg = DcganConfig::default();
        let g = cfg.init_generator::<TB>(&d);
        let disc = cfg.init_discriminator::<TB>(&d);
        // PyTorch: ConvT weights 100·512·16 + 512·256·16 + 256·128·16 + 128·64·16 + 64·1,
        // BN γ/β 2·(512 + 256 + 128 + 64); burn also counts the running mean and variance.
        let g_params = 100 * 512 * 16 + 512 * 256 * 16 + 256 * 128 * 16 + 128 * 64 * 16 + 64;
        assert_eq!(g.num_params(), g_params + 4 * (512 + 256 + 128 + 64));
        let d_params = 64 * 16 + 64 * 128 * 16 + 128 * 256 * 16 + 256 * 16;
        assert_eq!(disc.num_params(), d_params + 4 * (128 + 256));
        let x = g.decode(sample_latents(3, 100, &d));
        assert_eq!(x.dims(), [3, 1, 28, 28]);
        let v = x.clone().into_data().to_vec::<f32>().unwrap();
        assert!(v.iter().all(|p| (0.0..=1.0).contains(p)));
        assert_eq!(disc.logits(x).dims(), [3]);
    }

    #[test]
    fn the_losses_are_binary_cross_entropies() {
        let d = Default::default();
        let l = |v: &[f32]| Tensor::<TB, 1>::from_floats(v, &d);
        let bce = |p: f64, y: f64| -(y * p.ln() + (1.0 - y) * (1.0 - p).ln());
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        let dl = discriminator_loss(l(&[2.0, -1.0]), l(&[0.5, -3.0]))
            .into_scalar()
            .elem::<f64>();
        let want = (bce(s(2.0), 1.0) + bce(s(-1.0), 1.0)) / 2.0
            + (bce(s(0.5), 0.0) + bce(s(-3.0), 0.0)) / 2.0;
        assert!((dl - want).abs() < 1e-5, "{dl} vs {want}");
        let gl = generator_loss(l(&[0.5, -3.0])).into_scalar().elem::<f64>();
        let want = (bce(s(0.5), 1.0) + bce(s(-3.0), 1.0)) / 2.0;
        assert!((gl - want).abs() < 1e-5);
        // No overflow where the sigmoid saturates.
        let big = generator_loss(l(&[-200.0])).into_scalar().elem::<f64>();
        assert!((big - 200.0).abs() < 1e-3);
    }

    #[test]
    fn a_few_discriminator_steps_lower_its_loss() {
        let d = Default::default();
        TB::seed(&d, 3);
        let cfg = DcganConfig::tiny();
        let g = cfg.init_generator::<TAd>(&d);
        let mut disc = cfg.init_discriminator::<TAd>(&d);
        let mut optim = AdamConfig::new().with_beta_1(0.5).init();
        // "Real" images: a bright bar; fakes: the untrained generator's output.
        let real = Tensor::<TAd, 4>::zeros([16, 1, 28, 28], &d).slice_assign(
            [0..16, 0..1, 10..18, 0..28],
            Tensor::ones([16, 1, 8, 28], &d),
        );
        let fake = g.decode(sample_latents(16, 16, &d)).detach();
        let loss = |m: &Discriminator<TAd>| {
            discriminator_loss(m.logits(real.clone()), m.logits(fake.clone()))
        };
        let first = loss(&disc).into_scalar().elem::<f64>();
        for _ in 0..10 {
            let l = loss(&disc);
            let grads = GradientsParams::from_grads(l.backward(), &disc);
            disc = optim.step(2e-3, disc, grads);
        }
        let last = loss(&disc).into_scalar().elem::<f64>();
        assert!(last < 0.5 * first, "{first} -> {last}");
    }
}
