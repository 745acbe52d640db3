//! Moving between burn's user-facing `Tensor` and the backend primitives the custom ops take
//! (here and in `cfx_flows::nn`'s fused batch norm).

use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::FloatTensor;

pub fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

pub fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// An uninitialised *contiguous* tensor on `like`'s device with its dtype, for a CubeCL kernel
/// to write: the runtime's default allocation may pad rows (pitched memory on CUDA), and the
/// kernels index linearly (`crate::fasth::cube`).
#[cfg(feature = "cubecl")]
pub(crate) fn empty_like<R: burn_cubecl::CubeRuntime>(
    like: &burn_cubecl::tensor::CubeTensor<R>,
    shape: &[usize],
) -> burn_cubecl::tensor::CubeTensor<R> {
    burn_cubecl::ops::numeric::empty_device_contiguous_dtype::<R>(
        like.client.clone(),
        like.device.clone(),
        shape.into(),
        like.dtype,
    )
}
