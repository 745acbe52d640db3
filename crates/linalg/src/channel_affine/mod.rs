//! A fixed per-channel affine map as a function a backend can replace:
//! `y = x·exp(log_scale[c]) + offset[c]`, IB-INN's act-norm at the end of each all-in-one
//! coupling, whose scale (0.80) and offset (0) are not trained.
//!
//! As tensor ops on the cube backends that is an exponential of the scales and a multiply and
//! an add over the whole tensor: three launches per coupling forward, for 48 couplings. On
//! `CubeBackend` [`channel_affine_cube`] does it in one launch each way. The types live here,
//! beside the kernels, so that both crates name the same function type.

use burn::prelude::*;

#[cfg(feature = "cubecl")]
mod cube;
#[cfg(feature = "cubecl")]
pub use cube::channel_affine_cube;

/// `x` of shape `[N, C, H, W]`, `log_scale` and `offset` of shape `[C]`. Only `x` takes a
/// gradient: the map is fixed, and `log_scale` and `offset` must not require one.
#[derive(Debug)]
pub struct ChannelAffine<B: Backend> {
    pub x: Tensor<B, 4>,
    pub log_scale: Tensor<B, 1>,
    pub offset: Tensor<B, 1>,
}

/// The fixed per-channel affine map on backend `B`, with its gradient.
pub type ChannelAffineFn<B> = fn(ChannelAffine<B>) -> Tensor<B, 4>;
