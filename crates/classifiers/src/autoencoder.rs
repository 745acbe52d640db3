use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::interpolate::{Interpolate2d, Interpolate2dConfig, InterpolateMode};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, PaddingConfig2d, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::DataRange;

/// The convolutional autoencoder of Looveren & Klaise, read from the shipped Paper-4 models
/// (spec §4.12): encoder Conv(16, 3×3) ReLU → Conv(16, 3×3) ReLU → MaxPool 2 → Conv(1, 3×3)
/// linear (a 14×14×1 latent for MNIST); decoder Conv(16) ReLU → nearest upsampling ×2 →
/// Conv(16) ReLU → Conv(C) linear. All convolutions "same". GL's prototypes live in its latent
/// space; IM1/IM2 use one per class and one for all data.
///
/// Like the CNN it works on `[-0.5, 0.5]` internally and takes and returns unit-space images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvAutoencoderConfig {
    pub input_shape: [usize; 3],
    pub channels: usize,
    pub latent_channels: usize,
    pub input_offset: f32,
    pub input_scale: f32,
}

impl Default for ConvAutoencoderConfig {
    fn default() -> Self {
        Self {
            input_shape: [1, 28, 28],
            channels: 16,
            latent_channels: 1,
            input_offset: 0.5,
            input_scale: 1.0,
        }
    }
}

impl ConvAutoencoderConfig {
    pub fn tiny() -> Self {
        Self {
            channels: 4,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let [c, h, w] = self.input_shape;
        if c == 0 || h % 2 != 0 || w % 2 != 0 || h == 0 {
            return Err(format!(
                "input_shape {:?}: need at least 1 channel and an even height and width",
                self.input_shape
            ));
        }
        if self.channels == 0 || self.latent_channels == 0 {
            return Err("channels and latent_channels must be positive".into());
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvAutoencoder<B> {
        if let Err(e) = self.validate() {
            panic!("invalid autoencoder config: {e}");
        }
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device)
        };
        let [c, h, w] = self.input_shape;
        let (k, l) = (self.channels, self.latent_channels);
        ConvAutoencoder {
            enc1: conv(c, k),
            enc2: conv(k, k),
            enc3: conv(k, l),
            dec1: conv(l, k),
            dec2: conv(k, k),
            dec3: conv(k, c),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            up: Interpolate2dConfig::new()
                .with_output_size(Some([h, w]))
                .with_mode(InterpolateMode::Nearest)
                .init(),
            relu: Relu::new(),
            input_offset: self.input_offset,
            input_scale: self.input_scale,
        }
    }
}

#[derive(Module, Debug)]
pub struct ConvAutoencoder<B: Backend> {
    enc1: Conv2d<B>,
    enc2: Conv2d<B>,
    enc3: Conv2d<B>,
    dec1: Conv2d<B>,
    dec2: Conv2d<B>,
    dec3: Conv2d<B>,
    pool: MaxPool2d,
    up: Interpolate2d,
    relu: Relu,
    input_offset: f32,
    input_scale: f32,
}

impl<B: Backend> ConvAutoencoder<B> {
    /// Unit-space images → latent maps `[N, L, H/2, W/2]`.
    pub fn encode(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = x.sub_scalar(self.input_offset).mul_scalar(self.input_scale);
        let x = self.relu.forward(self.enc1.forward(x));
        let x = self.relu.forward(self.enc2.forward(x));
        self.enc3.forward(self.pool.forward(x))
    }

    /// Latent maps → unit-space images.
    pub fn decode(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.relu.forward(self.dec1.forward(z));
        let x = self.relu.forward(self.dec2.forward(self.up.forward(x)));
        self.dec3
            .forward(x)
            .div_scalar(self.input_scale)
            .add_scalar(self.input_offset)
    }

    /// The pixel range the model was trained in, when it is one of the two [`DataRange`]s.
    pub fn input_range(&self) -> Option<DataRange> {
        DataRange::of_model(self.input_offset, self.input_scale)
    }

    pub fn reconstruct(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.decode(self.encode(x))
    }

    /// Per-image mean squared reconstruction error in the model's own scale, `[N]` (the
    /// training loss, and IM1/IM2's building block).
    pub fn reconstruction_error(&self, x: Tensor<B, 4>) -> Tensor<B, 1> {
        let n = x.dims()[0];
        let s = self.input_scale;
        (self.reconstruct(x.clone()) - x)
            .mul_scalar(s)
            .square()
            .reshape([n as i32, -1])
            .mean_dim(1)
            .reshape([n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TB;
    use burn::tensor::Distribution;

    #[test]
    fn shapes_and_parameter_count_match_the_reference() {
        let d = Default::default();
        let ae = ConvAutoencoderConfig::default().init::<TB>(&d);
        // Keras: 160 + 2 320 + 145 (encoder), 160 + 2 320 + 145 (decoder).
        assert_eq!(ae.num_params(), 2 * (160 + 2_320 + 145));
        let x = Tensor::<TB, 4>::random([2, 1, 28, 28], Distribution::Default, &d);
        assert_eq!(ae.encode(x.clone()).dims(), [2, 1, 14, 14]);
        assert_eq!(ae.reconstruct(x.clone()).dims(), [2, 1, 28, 28]);
        assert_eq!(ae.reconstruction_error(x).dims(), [2]);
    }
}
