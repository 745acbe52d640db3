use burn::prelude::*;
use burn::tensor::Distribution;

/// A decoder from a latent space to unit-space images: the part of a generative model that the
/// latent-space explainers (diffeo over a GAN or VAE, C3LT) use.
pub trait LatentGenerator<B: Backend> {
    fn latent_dim(&self) -> usize;

    /// `[C, H, W]` of the images it makes.
    fn image_shape(&self) -> [usize; 3];

    /// Unit-space images `[N, C, H, W]` for latents `[N, D]`. Deterministic: batch norm uses its
    /// running statistics (the caller holds `cfx_flows::nn::mode::inference()` on autodiff).
    fn decode(&self, z: Tensor<B, 2>) -> Tensor<B, 4>;

    /// Latents `[N, D]` for unit-space images, where the model has an encoder (a VAE's mean, a
    /// GAN's trained encoder); `None` where the latent must be found by inversion.
    fn encode(&self, x: Tensor<B, 4>) -> Option<Tensor<B, 2>>;
}

/// `n` draws of the standard-normal prior every model here is trained with.
pub fn sample_latents<B: Backend>(n: usize, dim: usize, device: &B::Device) -> Tensor<B, 2> {
    Tensor::random([n, dim], Distribution::Normal(0.0, 1.0), device)
}
