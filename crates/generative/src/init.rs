use burn::nn::Initializer;

/// The DCGAN paper's (and PyTorch example's) weight initialisation, `N(0, 0.02)`, for every
/// convolution of the GAN and its encoder.
pub(crate) fn dcgan_normal() -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: 0.02,
    }
}
