//! A coupling's subnet input as a function a backend can replace: the ReLU of the leading
//! channels of the coupling's input, which condition the rest.
//!
//! `cfx_flows`'s all-in-one coupling feeds its subnet `relu(x[:, ..P])`. Differentiated op by
//! op on the cube backends that is a comparison and a masked fill forward, a copy into the
//! channels-last layout the convolution works in, and backward the same two for the ReLU plus a
//! zero fill and a slice assignment to widen the gradient back to all of `x`'s channels: about
//! seven launches per coupling, and the IB-INN has 48 couplings. On `CubeBackend`
//! [`subnet_input_cube`] does it in one kernel each way; its output is channels-last, so the
//! convolution reads it without a copy forward and (burn-cubecl's implicit-GEMM weight
//! gradient) backward. The types live here, beside the kernels, so that both crates name the
//! same function type.

use burn::prelude::*;

#[cfg(feature = "cubecl")]
mod cube;
#[cfg(feature = "cubecl")]
pub use cube::subnet_input_cube;

/// `x` of shape `[N, C, H, W]`, of which the first `channels` (`P`) go to the subnet, through
/// a ReLU when `relu`.
#[derive(Debug)]
pub struct SubnetInput<B: Backend> {
    pub x: Tensor<B, 4>,
    pub channels: usize,
    pub relu: bool,
}

/// The subnet input `[N, P, H, W]` on backend `B`, with its gradient.
pub type SubnetInputFn<B> = fn(SubnetInput<B>) -> Tensor<B, 4>;
