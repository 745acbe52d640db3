//! C3LT's encoder E for the DCGAN (`khorrams/c3lt` `models/encoders/encoder_dcgan.py`): the
//! discriminator's convolutions ending in `D` channels and a batch norm instead of one logit.

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;
use cfx_flows::nn::mode::{self, batch_norm};

use crate::dcgan::{down_convs, down_forward};
use crate::{DcganConfig, Generator, LatentGenerator, sample_latents};

#[derive(Module, Debug)]
pub struct GanEncoder<B: Backend> {
    convs: Vec<Conv2d<B>>,
    norms: Vec<BatchNorm<B>>,
    out_norm: BatchNorm<B>,
}

impl DcganConfig {
    pub fn init_encoder<B: Backend>(&self, device: &B::Device) -> GanEncoder<B> {
        let d = self.ndf;
        GanEncoder {
            convs: down_convs(self.channels, d, self.latent_dim, device),
            norms: vec![
                BatchNormConfig::new(2 * d).init(device),
                BatchNormConfig::new(4 * d).init(device),
            ],
            out_norm: BatchNormConfig::new(self.latent_dim).init(device),
        }
    }
}

impl<B: Backend> GanEncoder<B> {
    /// Latents `[N, D]` of unit-space images.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let n = x.dims()[0];
        let x = x.mul_scalar(2.0).sub_scalar(1.0);
        let h = batch_norm(&self.out_norm, down_forward(&self.convs, &self.norms, x));
        let d = h.dims()[1];
        h.reshape([n, d])
    }
}

/// The encoder's training objective, with the generator fixed. The C3LT repository ships its
/// encoders pretrained and does not say how they were made. `G(E(x))` reconstructs data, and
/// with `λ = latent_weight > 0` `E` also inverts `G` on its own samples:
/// `mean |G(E(x)) − x| + λ·mean (E(G(z)) − z)²`, `z ~ N(0, I)`, images in unit space
/// (`train gan-encoder` takes λ = 0 unless told otherwise). The image term is the floor of
/// C3LT's proximity (its counterfactuals are `G(g(E(x)))`); at the reference width the latent
/// term made it 1.6 times worse (test `|G(E(x)) − x|` 0.0605 with λ = 1 against 0.0383 with
/// λ = 0 after 4 epochs, docs/results.md "C3LT at the reference width on the CPU").
///
/// Only the generator runs in inference mode (running statistics). The encoder's batch norms
/// normalise each batch, real and generated, by its own statistics, as in any training step;
/// their running statistics, which the trained encoder uses on real images, follow every batch
/// it sees. So at λ = 0 the generated batch does not go through the encoder at all (the latent
/// term is then reported as 0): until 2026-12-07 it did, and its statistics, which are not
/// those of real images, were half of what the trained encoder normalised real images with.
/// Before 2026-12-05 the real batch went through the encoder in inference mode too.
/// Returns `(total, image term, latent term)`.
pub fn encoder_loss<B: Backend>(
    encoder: &GanEncoder<B>,
    generator: &Generator<B>,
    x: Tensor<B, 4>,
    latent_weight: f64,
) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
    let n = x.dims()[0];
    let device = x.device();
    let z_x = encoder.forward(x.clone());
    let recon = {
        let _g = mode::inference();
        generator.decode(z_x)
    };
    let image = (recon - x).abs().mean();
    if latent_weight == 0.0 {
        return (image.clone(), image, Tensor::zeros([1], &device));
    }
    let z = sample_latents::<B>(n, generator.latent_dim(), &device);
    let fake = {
        let _g = mode::inference();
        generator.decode(z.clone()).detach()
    };
    let latent = (encoder.forward(fake) - z).square().mean();
    (
        image.clone() + latent.clone().mul_scalar(latent_weight),
        image,
        latent,
    )
}

/// A generator with its trained encoder: C3LT's `(G, E)` pair and, for the diffeo explainer, a
/// GAN whose latents need no inversion by optimisation.
#[derive(Module, Debug)]
pub struct GanWithEncoder<B: Backend> {
    pub generator: Generator<B>,
    pub encoder: GanEncoder<B>,
}

impl<B: Backend> LatentGenerator<B> for GanWithEncoder<B> {
    fn latent_dim(&self) -> usize {
        self.generator.latent_dim()
    }

    fn image_shape(&self) -> [usize; 3] {
        self.generator.image_shape()
    }

    fn decode(&self, z: Tensor<B, 2>) -> Tensor<B, 4> {
        self.generator.decode(z)
    }

    fn encode(&self, x: Tensor<B, 4>) -> Option<Tensor<B, 2>> {
        Some(self.encoder.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, TB};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use burn::tensor::Distribution;

    #[test]
    fn shapes_and_parameter_count_match_the_reference() {
        let d = Default::default();
        let e = DcganConfig::default().init_encoder::<TB>(&d);
        let convs = 64 * 16 + 64 * 128 * 16 + 128 * 256 * 16 + 256 * 100 * 16;
        // γ, β and burn's running mean and variance per batch-norm channel.
        assert_eq!(e.num_params(), convs + 4 * (128 + 256 + 100));
        let x = Tensor::<TB, 4>::ones([2, 1, 28, 28], &d);
        assert_eq!(e.forward(x).dims(), [2, 100]);
    }

    #[test]
    fn training_lowers_the_encoder_loss() {
        let d = Default::default();
        TB::seed(&d, 5);
        let cfg = DcganConfig::tiny();
        let g = cfg.init_generator::<TAd>(&d);
        let mut e = cfg.init_encoder::<TAd>(&d);
        let mut optim = AdamConfig::new().init();
        let x = {
            let _g = mode::inference();
            g.decode(sample_latents(32, 16, &d)).detach()
        };
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..15 {
            TB::seed(&d, 9);
            let (l, ..) = encoder_loss(&e, &g, x.clone(), 1.0);
            last = l.clone().into_scalar().elem::<f64>();
            first.get_or_insert(last);
            let grads = GradientsParams::from_grads(l.backward(), &e);
            e = optim.step(3e-3, e, grads);
        }
        assert!(last < 0.8 * first.unwrap(), "{first:?} -> {last}");
    }

    /// The encoder's batch norms see the real images it is fitted to (only the generator runs
    /// on its running statistics): scaling the real batch moves the first batch norm's running
    /// mean, which the generator's samples alone would leave where it is; λ = 0 leaves the
    /// image term alone.
    #[test]
    fn the_encoder_normalises_the_real_batch() {
        let d = Default::default();
        let cfg = DcganConfig::tiny();
        let g = cfg.init_generator::<TAd>(&d);
        let run = |x: Tensor<TAd, 4>, w: f64| {
            TB::seed(&d, 7);
            let e = cfg.init_encoder::<TAd>(&d);
            let (total, image, _) = encoder_loss(&e, &g, x, w);
            let m = e.norms[0].running_mean.value();
            (m, total.into_scalar(), image.into_scalar())
        };
        let x = Tensor::<TAd, 4>::random([8, 1, 28, 28], Distribution::Uniform(0.2, 1.0), &d);
        let (m1, total, image): (_, f32, f32) = run(x.clone(), 1.0);
        let (m3, ..) = run(x.clone().mul_scalar(3.0), 1.0);
        let size: f32 = m1.clone().abs().sum().into_scalar();
        let moved: f32 = (m3 - m1).abs().sum().into_scalar();
        assert!(
            moved > 0.1 * size,
            "the real batch did not reach the statistics: moved {moved} of {size}"
        );
        assert!(total > image);
        let (_, total, image) = run(x, 0.0);
        assert_eq!(total, image, "weight 0 leaves the image term alone");
    }

    /// At λ = 0 the running statistics, which the trained encoder normalises real images with,
    /// are those of the real batch alone: the same as a plain training-mode pass over it.
    #[test]
    fn at_weight_zero_only_real_images_reach_the_statistics() {
        let d = Default::default();
        let cfg = DcganConfig::tiny();
        let g = cfg.init_generator::<TAd>(&d);
        let x = Tensor::<TAd, 4>::random([8, 1, 28, 28], Distribution::Uniform(0.2, 1.0), &d);
        // Copies of one encoder through its record, each with statistics of its own. burn
        // draws a parameter when it is first used, from the RNG the tests running beside this
        // one share, so the record is taken once, up front, to draw them all here.
        let drawn = cfg.init_encoder::<TAd>(&d).into_record();
        let base = cfg.init_encoder::<TAd>(&d).load_record(drawn);
        let fresh = || {
            let record = base.clone().into_record();
            cfg.init_encoder::<TAd>(&d).load_record(record)
        };
        let stats = |e: &GanEncoder<TAd>| {
            let mut v = vec![];
            for bn in e.norms.iter().chain([&e.out_norm]) {
                v.extend(bn.running_mean.value().into_data().to_vec::<f32>().unwrap());
                v.extend(bn.running_var.value().into_data().to_vec::<f32>().unwrap());
            }
            v
        };
        let by_loss = fresh();
        let _ = encoder_loss(&by_loss, &g, x.clone(), 0.0);
        let alone = fresh();
        let _ = alone.forward(x);
        let differ = |a: Vec<f32>, b: Vec<f32>| {
            a.iter()
                .zip(&b)
                .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
                .fold(0f32, f32::max)
        };
        let gap = differ(stats(&by_loss), stats(&alone));
        assert!(gap < 1e-6, "the statistics differ by {gap}");
        let moved = differ(stats(&alone), stats(&fresh()));
        assert!(
            moved > 1e-2,
            "the pass moved the statistics by {moved} only"
        );
    }
}
