//! What the ops written for flex (`batch_norm::batch_norm_train_flex`,
//! `affine::affine_train_flex`, `conv_flex`) share: reading a flex tensor's f32 values as a
//! slice, wrapping a buffer as one, and making an output buffer.

use burn::prelude::*;
use burn::tensor::{Bytes, DType};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

/// `t` contiguous, as f32; any other dtype is refused with a message naming the op (`op`)
/// and the setting that handles it (`fallback`), since the ops here are written for f32.
pub(crate) fn f32_contiguous(t: FlexTensor, op: &str, what: &str, fallback: &str) -> FlexTensor {
    assert!(
        t.dtype() == DType::F32,
        "{op} on flex: {what} is {:?}; these passes take f32 only ({fallback} handles any dtype)",
        t.dtype()
    );
    t.to_contiguous()
}

/// The values of a contiguous f32 tensor.
pub(crate) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a contiguous f32 tensor has a slice")
}

/// A buffer of `len` zeros for an op's output, zeroed by all cores.
///
/// Why not `vec![0.0; len]`: under the malloc setting of `.cargo/config.toml` freed memory is
/// reused, so the allocator clears it with a `memset` on the calling thread, which is the
/// training loop's main thread: while it zeroes a convolution's or a batch norm's output the
/// other core waits (2–3 % of a CPU training step's samples, all serial: docs/results.md, "The
/// input gradient's scatter as one add per block"). rayon's `collect` writes each part of the
/// buffer on the core that takes it.
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    rayon::iter::repeat_n(0.0, len).collect()
}

/// `data` as a contiguous f32 tensor of `shape`, without a copy.
pub(crate) fn flex_tensor(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(Shape::from(shape.to_vec())),
        DType::F32,
    )
}
