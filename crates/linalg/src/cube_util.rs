//! What the CubeCL kernels of batch norm, the affine half-step, pack and the implicit-GEMM
//! convolution share: their autodiff backend, the cube size, the grid of an elementwise
//! kernel and the sum over a cube's units.

use burn::backend::autodiff::Autodiff;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

/// The autodiff backend the cube kernels' custom ops are written for.
pub(crate) type Ad<R, F, I, BT, C> = Autodiff<CubeBackend<R, F, I, BT>, C>;

/// Units per cube; a power of two (the shared-memory reduction halves it).
pub(crate) const UNITS: usize = 256;
/// Cubes of an elementwise kernel at most, and of a kernel with a cube per channel or sample:
/// the 1-D cube count every device accepts. An elementwise kernel's units loop over the rest.
pub(crate) const MAX_CUBES: usize = 65_535;

/// Cubes for an elementwise kernel over `n` values.
pub(crate) fn elementwise_cubes(n: usize) -> CubeCount {
    CubeCount::Static(n.div_ceil(UNITS).clamp(1, MAX_CUBES) as u32, 1, 1)
}

/// Where `[n, c, h, w]` is in the rank-4 tensor `t`, by its strides: the kernels read their
/// inputs where they lie (a convolution's channels-last output, a channel slice) instead of
/// copying them first.
#[cube]
pub(crate) fn at<F: Float>(t: &Tensor<F>, n: usize, c: usize, h: usize, w: usize) -> usize {
    n * t.stride(0) + c * t.stride(1) + h * t.stride(2) + w * t.stride(3)
}

/// The coordinates `(n, c, h, w)` of value `i` of a contiguous `[N, channels, height, width]`
/// tensor.
#[cube]
pub(crate) fn coordinates(
    i: usize,
    channels: usize,
    height: usize,
    width: usize,
) -> (usize, usize, usize, usize) {
    let hw = height * width;
    let p = i % hw;
    (
        i / (hw * channels),
        (i / hw) % channels,
        p / width,
        p % width,
    )
}

/// The sum of `value` over the cube's units (all of them must call it), in `shared` of one
/// slot per unit.
#[cube]
pub(crate) fn cube_sum<F: Float>(shared: &mut SharedMemory<F>, value: F) -> F {
    let u = UNIT_POS_X as usize;
    shared[u] = value;
    sync_cube();
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if u < stride {
            shared[u] = shared[u] + shared[u + stride];
        }
        sync_cube();
        stride /= 2;
    }
    let total = shared[0];
    // Nobody may overwrite `shared` before every unit has read the total.
    sync_cube();
    total
}
