//! [`super::PackFn`] on `CubeBackend` (cuda, wgpu): one CubeCL kernel copies up to
//! [`PARTS_PER_LAUNCH`] parts, and the zeros around them, per launch.
//!
//! A kernel takes its inputs as a comptime-sized `Sequence` of tensors, and a part can only
//! be picked from it by a comptime index: so every unit walks the (unrolled) parts, reads
//! from the one its output index falls in, and writes 0 where none does. That is a few
//! comparisons per value; the point is the launch count, which is what a GPU IB-INN step's
//! time is made of (docs/results.md, "Where the CUDA step time goes").

use burn::tensor::TensorMetadata;
use burn_cubecl::CubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::{CubeDim, SequenceArg};

use super::check_layout;
use crate::convert::empty_like;
use crate::cube_util::{UNITS, elementwise_cubes};

/// Parts per launch at most: every part is a binding, and wgpu devices may allow as few as
/// eight storage buffers per shader (the count is lowered to fit the device). More parts per
/// launch also mean more comparisons per value and a longer kernel to compile.
pub const PARTS_PER_LAUNCH: usize = 16;

mod kernels {
    use cubecl::prelude::*;

    /// Where the `i`-th value in row-major order of `t`'s shape lies in `t`, by its strides.
    #[cube]
    fn strided<F: Float>(t: &Tensor<F>, i: usize) -> usize {
        let mut rest = i;
        let mut at = 0;
        let mut d = t.rank();
        while d > 0 {
            d -= 1;
            let n = t.shape(d);
            at += (rest % n) * t.stride(d);
            rest /= n;
        }
        at
    }

    /// Writes `out[start..end]`: part `k`'s values at `begins[k]..ends[k]`, 0 elsewhere.
    #[cube(launch)]
    pub(super) fn pack_kernel<F: Float>(
        parts: &Sequence<Tensor<F>>,
        begins: Sequence<usize>,
        ends: Sequence<usize>,
        out: &mut Tensor<F>,
        start: usize,
        end: usize,
        #[define(F)] _dtype: StorageType,
    ) {
        let count = comptime![parts.len()];
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = start + ABSOLUTE_POS_X as usize;
        while i < end {
            let mut value = F::new(0.0);
            #[unroll]
            for k in 0..count {
                if i >= begins[k] && i < ends[k] {
                    let part = parts.index(k);
                    value = part[strided::<F>(part, i - begins[k])];
                }
            }
            out[i] = value;
            i += step;
        }
    }
}

/// [`super::PackFn`] for `CubeBackend<R, _, _, _>`, registered by xtask for cuda and wgpu.
pub fn pack_cube<R: CubeRuntime>(
    parts: Vec<CubeTensor<R>>,
    offsets: &[usize],
    total: usize,
) -> CubeTensor<R> {
    let lens: Vec<usize> = parts.iter().map(|p| p.shape().num_elements()).collect();
    check_layout(&lens, offsets, total);
    let first = parts
        .first()
        .expect("pack: no parts (the vector's device is unknown)");
    let (client, dtype) = (first.client.clone(), first.dtype);
    if let Some((k, p)) = parts.iter().enumerate().find(|(_, p)| p.dtype != dtype) {
        panic!(
            "pack: part {k} is {:?}, part 0 is {dtype:?}; one vector holds one dtype",
            p.dtype
        );
    }
    let out = empty_like(first, &[total]);
    // The output and the kernel's metadata take bindings too.
    let max_bindings = client.properties().hardware.max_bindings as usize;
    let per_launch = PARTS_PER_LAUNCH.min(max_bindings.saturating_sub(4)).max(1);
    let chunk_starts: Vec<usize> = (0..parts.len()).step_by(per_launch).collect();
    let mut parts = parts.into_iter();
    for (c, &first_part) in chunk_starts.iter().enumerate() {
        let last_part = (first_part + per_launch).min(lens.len());
        // Each launch writes from its first part (the vector's start, for the first launch) to
        // the next launch's first part (the vector's end, for the last): every value once.
        let start = if c == 0 { 0 } else { offsets[first_part] };
        let end = chunk_starts.get(c + 1).map_or(total, |&next| offsets[next]);
        let mut inputs = SequenceArg::new();
        let mut begins = SequenceArg::new();
        let mut ends = SequenceArg::new();
        for k in first_part..last_part {
            let part = parts.next().expect("one part per length");
            inputs.push(part.into_tensor_arg());
            begins.push(offsets[k]);
            ends.push(offsets[k] + lens[k]);
        }
        kernels::pack_kernel::launch::<R>(
            &client,
            elementwise_cubes(end - start),
            CubeDim::new_1d(UNITS as u32),
            inputs,
            begins,
            ends,
            out.clone().into_tensor_arg(),
            start,
            end,
            dtype.into(),
        );
    }
    out
}
