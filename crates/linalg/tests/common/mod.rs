//! What the GPU kernel tests share: the backend under test, its matmul tolerance, fixed
//! pseudo-random inputs (also as strided views) and the error measure.
#![allow(dead_code)] // each test binary uses its own part of this

use burn::prelude::*;

#[cfg(feature = "cuda")]
pub type Gpu = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type Gpu = burn_cubecl::CubeBackend<cubecl::wgpu::WgpuRuntime, f32, i32, u32>;

/// Relative tolerance for results that pass through tensor cores. burn-cuda runs f32 matmuls
/// (and burn-cubecl its implicit-GEMM convolutions) on TF32 (10-bit mantissa, unit roundoff
/// 2⁻¹¹ ≈ 4.9e-4): on the H200 a length-7 dot product came out 6e-4 off and FastH's output
/// ~1.5e-3 (relative to its largest entry) off the CPU's. 1e-2 leaves room for that and still
/// catches real faults, which were O(1) (a pitched allocation read linearly gave errors of 2.9
/// on entries of size 1.4). Elsewhere results are held to f32's 1e-4.
pub const MATMUL_TOL: f32 = if cfg!(feature = "cuda") { 1e-2 } else { 1e-4 };

/// `len` values in [-1, 1) from a fixed LCG, which keeps the tests free of the rand crates'
/// version churn.
pub fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// [`random_values`] of any shape.
pub fn data<const D: usize>(shape: [usize; D], seed: u64) -> TensorData {
    TensorData::new(random_values(shape.iter().product(), seed), shape)
}

/// A leaf tensor of values from `seed` and the `[N, C, H, W]` view of it a kernel under test
/// gets: with `channels_last` the leaf is stored `[N, H, W, C]` and permuted; with `slice` the
/// view is the second half of the channels of a leaf twice its size. Gradients are read from
/// the leaf.
pub fn strided_input<B: burn::tensor::backend::AutodiffBackend>(
    [n, c, h, w]: [usize; 4],
    channels_last: bool,
    slice: bool,
    seed: u64,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let c_leaf = if slice { 2 * c } else { c };
    let stored = if channels_last {
        [n, h, w, c_leaf]
    } else {
        [n, c_leaf, h, w]
    };
    let leaf = Tensor::<B, 4>::from_data(data(stored, seed), &Default::default()).require_grad();
    let x = if channels_last {
        leaf.clone().permute([0, 3, 1, 2])
    } else {
        leaf.clone()
    };
    let x = if slice { x.narrow(1, c, c) } else { x };
    (leaf, x)
}

pub fn random(shape: [usize; 2], seed: u64) -> TensorData {
    TensorData::new(random_values(shape[0] * shape[1], seed), shape)
}

/// The largest difference, and the largest reference entry (at least 1) to scale it by. A NaN
/// on either side counts as an infinite difference: `f32::max` would drop it and pass.
pub fn max_error(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "results of different lengths");
    let err = a
        .iter()
        .zip(b)
        .map(|(p, q)| {
            let d = (p - q).abs();
            if d.is_nan() { f32::INFINITY } else { d }
        })
        .fold(0.0f32, f32::max);
    (err, b.iter().map(|q| q.abs()).fold(1.0f32, f32::max))
}
