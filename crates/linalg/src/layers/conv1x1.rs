use burn::prelude::*;

use super::{SvdLinear, SvdLinearConfig};
use crate::LinalgBackend;

/// Glow's invertible 1×1 convolution with its `c×c` weight in SVD form (seed 004 L411-421,
/// L2707-2711, L2854-2861: "one could use the SVD decomposition instead of QR or PLU").
/// Activations are reshaped to `X ∈ R^{c×(N·H·W)}`, so FastH sees m = N·H·W columns;
/// `log|det| = H·W·Σ log σ` per sample. No bias: Glow's actnorm carries the offset.
#[derive(Config, Debug)]
pub struct InvConv1x1Config {
    pub channels: usize,
    #[config(default = "None")]
    pub group: Option<usize>,
}

#[derive(Module, Debug)]
pub struct InvConv1x1<B: Backend> {
    pub weight: SvdLinear<B>,
}

impl InvConv1x1Config {
    pub fn init<B: Backend>(&self, device: &B::Device) -> InvConv1x1<B> {
        InvConv1x1 {
            weight: SvdLinearConfig::new(self.channels)
                .with_bias(false)
                .with_group(self.group)
                .init(device),
        }
    }
}

impl<B: LinalgBackend> InvConv1x1<B> {
    fn channel_columns(x: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, c, h, w] = x.dims();
        x.swap_dims(0, 1).reshape([c, n * h * w])
    }

    fn from_channel_columns(y: Tensor<B, 2>, [n, c, h, w]: [usize; 4]) -> Tensor<B, 4> {
        y.reshape([c, n, h, w]).swap_dims(0, 1)
    }

    /// `(W * x, log|det| per sample)` for `x` `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let dims = x.dims();
        let y = self.weight.apply(Self::channel_columns(x));
        let log_det = self
            .weight
            .log_abs_det()
            .mul_scalar((dims[2] * dims[3]) as f64)
            .expand([dims[0]]);
        (Self::from_channel_columns(y, dims), log_det)
    }

    pub fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let dims = z.dims();
        Self::from_channel_columns(self.weight.apply_inverse(Self::channel_columns(z)), dims)
    }
}
