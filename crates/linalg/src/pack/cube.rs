//! [`super::PackFn`] on `CubeBackend` (cuda, wgpu): one CubeCL kernel copies up to
//! [`PARTS_PER_LAUNCH`] parts, and the zeros around them, per launch.
//!
//! A kernel takes its inputs as a comptime-sized `Sequence` of tensors, and a part can only
//! be picked from it by a comptime index: so the kernel unrolls one branch per part, and cube
//! row `k` takes branch `k` and writes part `k` with the zeros after it. The point is the
//! launch count, which is what a GPU IB-INN step's time is made of (docs/results.md, "Where
//! the CUDA step time goes").

use burn::tensor::TensorMetadata;
use burn_cubecl::CubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::{CubeCount, CubeDim, SequenceArg};

use super::check_layout;
use crate::convert::empty_like;
use crate::cube_util::{MAX_CUBES, UNITS};

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

    /// Cubes `cube_starts[k]..cube_starts[k + 1]` write part `k`'s span
    /// `out[span_starts[k]..span_ends[k]]`: the part's values at `begins[k]..ends[k]` and
    /// zeros around them. Whole cubes per part keep every branch uniform across a cube, and
    /// each part gets cubes in proportion to its span (none idle); `contiguous[k]` (1 or 0)
    /// spares a contiguous part the stride arithmetic.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pack_kernel<F: Float>(
        parts: &Sequence<Tensor<F>>,
        cube_starts: Sequence<usize>,
        span_starts: Sequence<usize>,
        begins: Sequence<usize>,
        ends: Sequence<usize>,
        span_ends: Sequence<usize>,
        contiguous: Sequence<usize>,
        out: &mut Tensor<F>,
        #[define(F)] _dtype: StorageType,
    ) {
        let count = comptime![parts.len()];
        let cube = CUBE_POS_X as usize;
        let units = CUBE_DIM_X as usize;
        #[unroll]
        for k in 0..count {
            if cube >= cube_starts[k] && cube < cube_starts[k + 1] {
                let part = parts.index(k);
                let step = (cube_starts[k + 1] - cube_starts[k]) * units;
                let mut i = span_starts[k] + (cube - cube_starts[k]) * units + UNIT_POS_X as usize;
                while i < span_ends[k] {
                    let mut value = F::new(0.0);
                    if i >= begins[k] && i < ends[k] {
                        let mut at = i - begins[k];
                        if contiguous[k] == 0 {
                            at = strided::<F>(part, at);
                        }
                        value = part[at];
                    }
                    out[i] = value;
                    i += step;
                }
            }
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
    let n = parts.len();
    // Part k's span reaches from its offset (the vector's start, for the first part) to the
    // next part's offset (the vector's end, for the last): every value once.
    let span_start = |k: usize| if k == 0 { 0 } else { offsets[k] };
    let span_end = |k: usize| if k + 1 < n { offsets[k + 1] } else { total };
    let mut parts = parts.into_iter();
    for first_part in (0..n).step_by(per_launch) {
        let last_part = (first_part + per_launch).min(n);
        let mut inputs = SequenceArg::new();
        let mut span_starts = SequenceArg::new();
        let mut begins = SequenceArg::new();
        let mut ends = SequenceArg::new();
        let mut span_ends = SequenceArg::new();
        let mut contiguous = SequenceArg::new();
        let mut cube_starts = SequenceArg::new();
        let mut cubes = 0;
        cube_starts.push(cubes);
        for k in first_part..last_part {
            let part = parts.next().expect("one part per length");
            contiguous.push(usize::from(part.is_contiguous()));
            inputs.push(part.into_tensor_arg());
            span_starts.push(span_start(k));
            begins.push(offsets[k]);
            ends.push(offsets[k] + lens[k]);
            span_ends.push(span_end(k));
            // At least one cube, even for an empty span, and few enough that the launch's
            // cubes stay within a 1-D count (its units then loop over the rest).
            cubes += (span_end(k) - span_start(k))
                .div_ceil(UNITS)
                .clamp(1, MAX_CUBES / PARTS_PER_LAUNCH);
            cube_starts.push(cubes);
        }
        kernels::pack_kernel::launch::<R>(
            &client,
            CubeCount::Static(cubes as u32, 1, 1),
            CubeDim::new_1d(UNITS as u32),
            inputs,
            cube_starts,
            span_starts,
            begins,
            ends,
            span_ends,
            contiguous,
            out.clone().into_tensor_arg(),
            dtype.into(),
        );
    }
    out
}
