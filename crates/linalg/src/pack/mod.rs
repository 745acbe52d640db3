//! Many tensors laid end to end in one zero-padded vector, as a function a backend can replace.
//!
//! The training loop's optimiser steps all parameters as one flat vector (xtask's
//! `train::optim`), and gathers the gradients and the parameters into it at every step. With
//! tensor ops that is one `cat`, which burn-cubecl runs as one copy kernel per part and per
//! padding: some 1 600 of a GPU IB-INN step's launches, for its 410 parameter tensors.
//! [`pack_cube`] copies up to 16 parts per launch. [`pack_by_cat`] is the portable version
//! and the definition the kernel is tested against.

use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::ops::FloatTensor;

use crate::convert::{primitive, tensor};

#[cfg(feature = "cubecl")]
mod cube;
#[cfg(feature = "cubecl")]
pub use cube::pack_cube;

/// Values (`f32`) in burn-cubecl's offset alignment, 512 bytes under CUDA (256 under wgpu): a
/// slice of a vector whose start and end are multiples of it is a view, any other a copy.
/// Callers that lay parts out ([`PackFn`]'s offsets) and slice them back use it too.
pub const ALIGN: usize = 128;

/// Lays `parts` out in one vector of `total` values: part `k`'s values, in the row-major order
/// of its shape (whatever its strides), at `offsets[k]..offsets[k] + len(k)`, and zeros in
/// every gap between and after them.
///
/// The type names only the backend's tensor primitive, not its float type: the cube
/// backends' kernel reads the dtype from the tensors, so one function serves them all.
pub type PackFn<B> = fn(Vec<FloatTensor<B>>, &[usize], usize) -> FloatTensor<B>;

/// Checks that `offsets` place parts of `lens` values in order, without overlap, inside
/// `total`. A violation is a fault of the caller, so it panics naming the part.
pub(crate) fn check_layout(lens: &[usize], offsets: &[usize], total: usize) {
    assert_eq!(
        lens.len(),
        offsets.len(),
        "pack: {} parts but {} offsets",
        lens.len(),
        offsets.len()
    );
    let mut end = 0;
    for (k, (&len, &offset)) in lens.iter().zip(offsets).enumerate() {
        assert!(
            offset >= end,
            "pack: part {k} starts at {offset}, inside the part before it (which ends at {end})"
        );
        end = offset + len;
    }
    assert!(
        end <= total,
        "pack: the parts end at {end}, past the vector's {total} values"
    );
}

/// [`PackFn`] with tensor ops: one `cat` of the flattened parts and zero fillers. burn-cubecl
/// runs it as a copy per piece; flex (burn 0.21) in one pass, where filling a zeroed vector
/// part by part copied the whole vector on every `slice_assign` (0.8 s per IB-INN step).
pub fn pack_by_cat<B: Backend>(
    parts: Vec<FloatTensor<B>>,
    offsets: &[usize],
    total: usize,
) -> FloatTensor<B> {
    let flat: Vec<Tensor<B, 1>> = parts
        .into_iter()
        .map(|p| {
            let n = p.shape().num_elements();
            tensor::<B, 1>(B::float_reshape(p, [n].into()))
        })
        .collect();
    let lens: Vec<usize> = flat.iter().map(|t| t.dims()[0]).collect();
    check_layout(&lens, offsets, total);
    let Some(device) = flat.first().map(Tensor::device) else {
        panic!("pack: no parts (the vector's device is unknown)");
    };
    let largest_gap = {
        let mut end = 0;
        let mut gap = 0;
        for (&len, &offset) in lens.iter().zip(offsets) {
            gap = gap.max(offset - end);
            end = offset + len;
        }
        gap.max(total - end)
    };
    // A multiple of [`ALIGN`], so that a filler cut for a gap of a multiple of it stays a view.
    // (A filler of the largest gap's length cost llvmpipe a copy per gap.)
    let filler = Tensor::<B, 1>::zeros([largest_gap.next_multiple_of(ALIGN).max(ALIGN)], &device);
    let mut pieces = Vec::with_capacity(2 * flat.len() + 1);
    let mut end = 0;
    for (t, &offset) in flat.into_iter().zip(offsets) {
        if offset > end {
            pieces.push(filler.clone().slice(0..offset - end));
        }
        end = offset + t.dims()[0];
        pieces.push(t);
    }
    if total > end {
        pieces.push(filler.slice(0..total - end));
    }
    primitive(Tensor::cat(pieces, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    #[test]
    fn parts_land_at_their_offsets_with_zeros_between() {
        let dev = Default::default();
        let a = Tensor::<B, 2>::from_data([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev);
        // A transposed view: its row-major order is 1, 4, 2, 5, 3, 6.
        let b = a.clone().transpose();
        let c = Tensor::<B, 1>::from_data([7.0], &dev);
        let out = pack_by_cat::<B>(
            vec![primitive(a), primitive(b), primitive(c)],
            &[1, 8, 16],
            18,
        );
        let got = tensor::<B, 1>(out).into_data().to_vec::<f32>().unwrap();
        let want = [
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 1.0, 4.0, 2.0, 5.0, 3.0, 6.0, 0.0, 0.0, 7.0,
            0.0,
        ];
        assert_eq!(got, want);
    }

    #[test]
    #[should_panic(expected = "part 1 starts at 2, inside the part before it")]
    fn overlapping_parts_are_refused() {
        let dev = Default::default();
        let a = Tensor::<B, 1>::ones([3], &dev);
        pack_by_cat::<B>(vec![primitive(a.clone()), primitive(a)], &[0, 2], 8);
    }

    #[test]
    #[should_panic(expected = "past the vector's 5 values")]
    fn parts_past_the_end_are_refused() {
        let dev = Default::default();
        let a = Tensor::<B, 1>::ones([3], &dev);
        pack_by_cat::<B>(vec![primitive(a)], &[3], 5);
    }
}
