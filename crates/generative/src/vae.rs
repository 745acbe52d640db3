//! The convolutional VAE of the diffeomorphic-counterfactual code for MNIST
//! (`annahdo/counterfactuals` `generative_models/vaes/vae.py::VAE_MNIST`, seed 002 App. C.10).

use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::{relu, sigmoid};
use cfx_flows::nn::mode::batch_norm;
use cfx_flows::nn::{conv_transpose2d_default, conv2d_default};
use serde::{Deserialize, Serialize};

use crate::LatentGenerator;

/// Encoder `Conv(C→w, 3,2,1)-ReLU → Conv(w→2w, 3,2,1)-BN-ReLU → Conv(2w→4w, 3,2,0)` (28→14→7→3)
/// into `μ` and `log σ²` of a `D`-dimensional Gaussian; decoder `Linear(D→4w·3·3)-ReLU →
/// ConvT(4w→2w, 3,2,0)-BN-ReLU → ConvT(2w→w, 3,2,1,out 1)-BN-ReLU → ConvT(w→C, 3,2,1,out 1)`
/// (3→7→14→28), with w = 8 and D = 10 as in the reference.
///
/// Decisions where the reference is unusual: it decodes without an output nonlinearity and
/// clips later; we end in a sigmoid, so decoded images are unit-space like every other model's.
/// Its KL term `Σ (exp(log σ²)² + μ² − log σ² − ½)` is not the Gaussian KL; we use the standard
/// `½ Σ (σ² + μ² − 1 − log σ²)`, and reparameterise with `σ = exp(½ log σ²)` (the reference
/// multiplies the noise by `σ²`). The loss is the reference's squared error summed over pixels,
/// plus the KL, averaged over the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvVaeConfig {
    pub image_shape: [usize; 3],
    pub latent_dim: usize,
    pub width: usize,
}

impl Default for ConvVaeConfig {
    fn default() -> Self {
        Self {
            image_shape: [1, 28, 28],
            latent_dim: 10,
            width: 8,
        }
    }
}

/// The VAE's batch-mean loss and its two parts.
#[derive(Debug, Clone)]
pub struct VaeLoss<B: Backend> {
    pub total: Tensor<B, 1>,
    pub reconstruction: Tensor<B, 1>,
    pub kl: Tensor<B, 1>,
}

impl ConvVaeConfig {
    pub fn tiny() -> Self {
        Self {
            latent_dim: 4,
            width: 4,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let [c, h, w] = self.image_shape;
        if h != 28 || w != 28 || c == 0 {
            return Err(format!(
                "image_shape {:?}: the convolutional VAE is built for C×28×28 images",
                self.image_shape
            ));
        }
        if self.latent_dim == 0 || self.width == 0 {
            return Err("latent_dim and width must be positive".into());
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvVae<B> {
        let (c, w, d) = (self.image_shape[0], self.width, self.latent_dim);
        let conv = |i, o, pad| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(device)
        };
        let up = |i, o, pad, out| {
            ConvTranspose2dConfig::new([i, o], [3, 3])
                .with_stride([2, 2])
                .with_padding([pad, pad])
                .with_padding_out([out, out])
                .init(device)
        };
        let flat = 4 * w * 9;
        ConvVae {
            enc: vec![conv(c, w, 1), conv(w, 2 * w, 1), conv(2 * w, 4 * w, 0)],
            enc_norm: BatchNormConfig::new(2 * w).init(device),
            mu: LinearConfig::new(flat, d).init(device),
            log_var: LinearConfig::new(flat, d).init(device),
            fc: LinearConfig::new(d, flat).init(device),
            dec: vec![up(4 * w, 2 * w, 0, 0), up(2 * w, w, 1, 1), up(w, c, 1, 1)],
            dec_norms: vec![
                BatchNormConfig::new(2 * w).init(device),
                BatchNormConfig::new(w).init(device),
            ],
            image_shape: self.image_shape,
            width: w,
        }
    }
}

#[derive(Module, Debug)]
pub struct ConvVae<B: Backend> {
    enc: Vec<Conv2d<B>>,
    enc_norm: BatchNorm<B>,
    mu: Linear<B>,
    log_var: Linear<B>,
    fc: Linear<B>,
    dec: Vec<ConvTranspose2d<B>>,
    dec_norms: Vec<BatchNorm<B>>,
    image_shape: [usize; 3],
    width: usize,
}

impl<B: Backend> ConvVae<B> {
    /// `(μ, log σ²)`, each `[N, D]`, of unit-space images.
    pub fn posterior(&self, x: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let h = relu(conv2d_default(&self.enc[0], x));
        let h = relu(batch_norm(&self.enc_norm, conv2d_default(&self.enc[1], h)));
        let h: Tensor<B, 2> = conv2d_default(&self.enc[2], h).flatten(1, 3);
        (self.mu.forward(h.clone()), self.log_var.forward(h))
    }

    /// The negative ELBO (up to constants) of a batch, one reparameterised draw per image.
    pub fn loss(&self, x: Tensor<B, 4>) -> VaeLoss<B> {
        let n = x.dims()[0] as f64;
        let (mu, log_var) = self.posterior(x.clone());
        let eps = Tensor::random(mu.dims(), Distribution::Normal(0.0, 1.0), &mu.device());
        let z = mu.clone() + log_var.clone().mul_scalar(0.5).exp() * eps;
        let reconstruction = (self.decode(z) - x).square().sum().div_scalar(n);
        let kl = gaussian_kl(mu, log_var).sum().div_scalar(n);
        VaeLoss {
            total: reconstruction.clone() + kl.clone(),
            reconstruction,
            kl,
        }
    }
}

/// `KL(N(μ, σ²) ‖ N(0, 1))` per row, `½ Σ_d (σ² + μ² − 1 − log σ²)`, `[N]`.
pub fn gaussian_kl<B: Backend>(mu: Tensor<B, 2>, log_var: Tensor<B, 2>) -> Tensor<B, 1> {
    let n = mu.dims()[0];
    (log_var.clone().exp() + mu.square() - log_var)
        .sub_scalar(1.0)
        .sum_dim(1)
        .mul_scalar(0.5)
        .reshape([n])
}

impl<B: Backend> LatentGenerator<B> for ConvVae<B> {
    fn latent_dim(&self) -> usize {
        self.mu.weight.dims()[1]
    }

    fn image_shape(&self) -> [usize; 3] {
        self.image_shape
    }

    fn decode(&self, z: Tensor<B, 2>) -> Tensor<B, 4> {
        let n = z.dims()[0];
        let w = self.width;
        let h = relu(self.fc.forward(z)).reshape([n, 4 * w, 3, 3]);
        let h = relu(batch_norm(
            &self.dec_norms[0],
            conv_transpose2d_default(&self.dec[0], h),
        ));
        let h = relu(batch_norm(
            &self.dec_norms[1],
            conv_transpose2d_default(&self.dec[1], h),
        ));
        sigmoid(conv_transpose2d_default(&self.dec[2], h))
    }

    /// The posterior mean, as in the reference's `encode`.
    fn encode(&self, x: Tensor<B, 4>) -> Option<Tensor<B, 2>> {
        Some(self.posterior(x).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, TB};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};

    #[test]
    fn shapes_and_parameter_count_match_the_reference() {
        let d = Default::default();
        let vae = ConvVaeConfig::default().init::<TB>(&d);
        let convs = (9 + 1) * 8 + (8 * 9 + 1) * 16 + (16 * 9 + 1) * 32;
        let linears = 2 * (288 * 10 + 10) + (10 * 288 + 288);
        let deconvs = (32 * 16 * 9 + 16) + (16 * 8 * 9 + 8) + (8 * 9 + 1);
        // γ, β and burn's running mean and variance per batch-norm channel.
        let norms = 4 * (16 + 16 + 8);
        assert_eq!(vae.num_params(), convs + linears + deconvs + norms);
        let x = Tensor::<TB, 4>::random([3, 1, 28, 28], Distribution::Default, &d);
        let (mu, lv) = vae.posterior(x);
        assert_eq!((mu.dims(), lv.dims()), ([3, 10], [3, 10]));
        assert_eq!(vae.decode(mu).dims(), [3, 1, 28, 28]);
    }

    #[test]
    fn the_kl_term_is_the_gaussian_kl() {
        let d = Default::default();
        let mu = Tensor::<TB, 2>::from_floats([[0.5, 0.0], [0.0, 0.0]], &d);
        let lv = Tensor::<TB, 2>::from_floats([[-1.0, 0.0], [0.0, 0.0]], &d);
        let kl = gaussian_kl(mu, lv).into_data().to_vec::<f32>().unwrap();
        // KL(N(0.5, σ² = e⁻¹) ‖ N(0, 1)) = log(1/σ) + (σ² + μ²)/2 − ½; the second row is N(0, 1).
        let want = 0.5 + ((-1.0f32).exp() + 0.25) / 2.0 - 0.5;
        assert!((kl[0] - want).abs() < 1e-6, "{} vs {want}", kl[0]);
        assert_eq!(kl[1], 0.0);
    }

    #[test]
    fn training_lowers_the_loss() {
        let d = Default::default();
        TB::seed(&d, 11);
        let mut vae = ConvVaeConfig::tiny().init::<TAd>(&d);
        let x = Tensor::<TAd, 4>::zeros([16, 1, 28, 28], &d).slice_assign(
            [0..16, 0..1, 6..22, 12..16],
            Tensor::ones([16, 1, 16, 4], &d),
        );
        let mut optim = AdamConfig::new().init();
        let mut losses = vec![];
        for _ in 0..30 {
            let l = vae.loss(x.clone()).total;
            losses.push(l.clone().into_scalar().elem::<f64>());
            let grads = GradientsParams::from_grads(l.backward(), &vae);
            vae = optim.step(5e-3, vae, grads);
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < 0.6 * first, "{first} -> {last}");
    }
}
