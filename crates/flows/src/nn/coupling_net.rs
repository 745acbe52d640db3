//! The conditioner networks of masked affine couplings (RealNVP, Glow, the helix toy flow).
//!
//! Each maps the masked input `[N, C, H, W]` to `[N, k·C, H, W]` (k = 2 for affine: raw scale and
//! shift; 1 for additive). The last layer starts at zero, so every coupling starts as the
//! identity: training then begins from a well-conditioned flow, the usual Glow/RealNVP practice.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::leaky_relu;
use serde::{Deserialize, Serialize};

use super::mode::{batch_norm_relu, relu};
use super::{BatchNormLayers, conv2d_default, kaiming_normal};

/// Which conditioner, with its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "net", rename_all = "snake_case")]
pub enum CouplingNetConfig {
    /// `layers` fully connected layers of `width` with leaky ReLU on the flattened input (seed
    /// 002 App. C.1: "a three-layer fully-connected network with leaky ReLU activations").
    Mlp { width: usize, layers: usize },
    /// RealNVP's residual network (fmu2/realNVP as used by the seed's reference, base width 64,
    /// 4 residual blocks): conv3×3 → `blocks` × [BN-ReLU-conv3×3-BN-ReLU-conv3×3 + skip] →
    /// BN-ReLU → conv3×3. The reference's weight normalisation is left out: the batch norms
    /// already fix each layer's scale.
    ResNet { width: usize, blocks: usize },
    /// Glow's conditioner: conv3×3 → ReLU → conv1×1 → ReLU → conv3×3 (zero-initialised).
    Glow { width: usize },
}

impl CouplingNetConfig {
    pub fn validate(&self) -> Result<(), String> {
        let (width, depth) = match *self {
            Self::Mlp { width, layers } => (width, layers.saturating_sub(1)),
            Self::ResNet { width, blocks } => (width, blocks.max(1)),
            Self::Glow { width } => (width, 1),
        };
        if width == 0 || depth == 0 {
            return Err(format!(
                "coupling net {self:?} needs a positive width and at least 2 layers"
            ));
        }
        Ok(())
    }

    /// `c_in` input channels of `h × w`, `c_out` output channels. `zero_last` starts the last
    /// layer at zero (training); tests leave it random so that the coupling is not the identity.
    pub fn init<B: Backend>(
        &self,
        [c_in, h, w]: [usize; 3],
        c_out: usize,
        zero_last: bool,
        device: &B::Device,
    ) -> CouplingNet<B> {
        match *self {
            Self::Mlp { width, layers } => {
                let (d_in, d_out) = (c_in * h * w, c_out * h * w);
                let mut dims = vec![d_in];
                dims.extend(std::iter::repeat_n(width, layers - 1));
                dims.push(d_out);
                let mut fcs: Vec<Linear<B>> = dims
                    .windows(2)
                    .map(|p| LinearConfig::new(p[0], p[1]).init(device))
                    .collect();
                if zero_last {
                    zero_linear(fcs.last_mut().expect("at least two layers"));
                }
                CouplingNet::Mlp(Mlp { layers: fcs })
            }
            Self::ResNet { width, blocks } => {
                let bn = || BatchNormConfig::new(width).init(device);
                let res = (0..blocks)
                    .map(|_| ResidualBlock {
                        bn1: bn(),
                        conv1: conv(width, width, 3, device),
                        bn2: bn(),
                        conv2: conv(width, width, 3, device),
                    })
                    .collect();
                let mut out = conv(width, c_out, 3, device);
                if zero_last {
                    zero_conv(&mut out);
                }
                CouplingNet::ResNet(ResNet {
                    input: conv(c_in, width, 3, device),
                    blocks: res,
                    bn_out: bn(),
                    out,
                })
            }
            Self::Glow { width } => {
                let mut out = conv(width, c_out, 3, device);
                if zero_last {
                    zero_conv(&mut out);
                }
                CouplingNet::Glow(GlowNet {
                    conv1: conv(c_in, width, 3, device),
                    conv2: conv(width, width, 1, device),
                    out,
                })
            }
        }
    }
}

fn conv<B: Backend>(c_in: usize, c_out: usize, k: usize, device: &B::Device) -> Conv2d<B> {
    let p = k / 2;
    let mut c = Conv2dConfig::new([c_in, c_out], [k, k])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device);
    c.weight = kaiming_normal([c_out, c_in, k, k], c_in * k * k, 1.0, device);
    c
}

fn zero_conv<B: Backend>(c: &mut Conv2d<B>) {
    let w = c.weight.val();
    c.weight = Param::from_tensor(w.zeros_like());
    c.bias = c
        .bias
        .take()
        .map(|b| Param::from_tensor(b.val().zeros_like()));
}

fn zero_linear<B: Backend>(l: &mut Linear<B>) {
    let w = l.weight.val();
    l.weight = Param::from_tensor(w.zeros_like());
    l.bias = l
        .bias
        .take()
        .map(|b| Param::from_tensor(b.val().zeros_like()));
}

#[derive(Module, Debug)]
pub enum CouplingNet<B: Backend> {
    Mlp(Mlp<B>),
    ResNet(ResNet<B>),
    Glow(GlowNet<B>),
}

impl<B: Backend> CouplingNet<B> {
    /// `[N, C, H, W] → [N, c_out, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>, c_out: usize) -> Tensor<B, 4> {
        match self {
            Self::Mlp(m) => {
                let [n, c, h, w] = x.dims();
                m.forward(x.reshape([n, c * h * w]))
                    .reshape([n, c_out, h, w])
            }
            Self::ResNet(r) => r.forward(x),
            Self::Glow(g) => g.forward(x),
        }
    }
}

impl<B: Backend> BatchNormLayers<B> for CouplingNet<B> {
    fn visit_batch_norms(&mut self, f: &mut dyn FnMut(&mut BatchNorm<B>)) {
        if let Self::ResNet(r) = self {
            for b in &mut r.blocks {
                f(&mut b.bn1);
                f(&mut b.bn2);
            }
            f(&mut r.bn_out);
        }
    }
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    layers: Vec<Linear<B>>,
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        self.layers.iter().enumerate().fold(x, |x, (i, l)| {
            let y = l.forward(x);
            if i < last { leaky_relu(y, 0.01) } else { y }
        })
    }
}

#[derive(Module, Debug)]
pub struct ResidualBlock<B: Backend> {
    bn1: BatchNorm<B>,
    conv1: Conv2d<B>,
    bn2: BatchNorm<B>,
    conv2: Conv2d<B>,
}

#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    input: Conv2d<B>,
    blocks: Vec<ResidualBlock<B>>,
    bn_out: BatchNorm<B>,
    out: Conv2d<B>,
}

impl<B: Backend> ResNet<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self
            .blocks
            .iter()
            .fold(conv2d_default(&self.input, x), |x, b| {
                let y = conv2d_default(&b.conv1, batch_norm_relu(&b.bn1, x.clone()));
                x + conv2d_default(&b.conv2, batch_norm_relu(&b.bn2, y))
            });
        conv2d_default(&self.out, batch_norm_relu(&self.bn_out, x))
    }
}

#[derive(Module, Debug)]
pub struct GlowNet<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    out: Conv2d<B>,
}

impl<B: Backend> GlowNet<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = relu(conv2d_default(&self.conv1, x));
        conv2d_default(&self.out, relu(conv2d_default(&self.conv2, x)))
    }
}
