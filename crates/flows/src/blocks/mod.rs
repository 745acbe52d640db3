//! Invertible building blocks. Each implements [`Flow`](crate::Flow).

mod actnorm;
mod affine;
mod aio_coupling;
mod dct;
mod downsample_coupling;
mod fixed_rotation;
mod glow_coupling;
mod haar;
mod inv_conv;
mod logit;
mod masked_coupling;
mod permute;
mod sequence;
mod squeeze;
mod svd_conv;

pub use actnorm::{ActNorm, ActNormConfig, register_channel_affine};
pub use affine::register_affine;
pub use aio_coupling::{AllInOneCoupling, AllInOneCouplingConfig};
pub use dct::DctPooling;
pub use downsample_coupling::{DownsampleCoupling, DownsampleCouplingConfig};
pub use fixed_rotation::{FixedRotation, random_rotation};
pub use glow_coupling::{GlowCoupling, GlowCouplingConfig};
pub use haar::HaarDownsampling;
pub use inv_conv::{InvConv, InvConvKind, InvConvLu};
pub use logit::Logit;
pub use masked_coupling::{MaskKind, MaskedCoupling, MaskedCouplingConfig};
pub use permute::ChannelPermutation;
pub use sequence::{FlowBlock, FlowSequence};
pub use squeeze::Squeeze;
