//! Non-invertible generative models for approximate diffeomorphic counterfactuals (seed 002
//! §2.4, App. C.9–C.10) and C3LT (seed 003): the DCGAN of 28×28 images with its discriminator,
//! the encoder C3LT trains for the GAN, and the convolutional VAE.
//!
//! Like the classifiers, every model here speaks **unit space** at its interface (`[0, 1]`
//! images, `[N, C, H, W]`) and maps to its own working range (`[-1, 1]` for the GAN) inside.
//! [`LatentGenerator`] is what the counterfactual methods see of any of them.

mod dcgan;
mod encoder;
mod generator;
mod init;
mod vae;

pub use dcgan::{DcganConfig, Discriminator, Generator, discriminator_loss, generator_loss};
pub use encoder::{GanEncoder, GanWithEncoder, encoder_loss};
pub use generator::{LatentGenerator, sample_latents};
pub use vae::{ConvVae, ConvVaeConfig, VaeLoss, gaussian_kl};

#[cfg(test)]
pub(crate) mod test_util {
    pub type TB = burn::backend::Flex;
    pub type TAd = burn::backend::Autodiff<TB>;
}
