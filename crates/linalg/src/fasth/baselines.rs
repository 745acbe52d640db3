//! The two baselines FastH is measured against (Zhang et al. 2018, seed 004 L269-289), from
//! plain tensor ops so that autodiff differentiates them: the tests' oracle and the benches'
//! reference points.

use burn::prelude::*;

fn reflections<B: Backend>(v: Tensor<B, 2>, transpose: bool) -> Vec<(Tensor<B, 2>, Tensor<B, 2>)> {
    let [k, d] = v.dims();
    let order: Vec<usize> = if transpose {
        (0..k).rev().collect()
    } else {
        (0..k).collect()
    };
    order
        .into_iter()
        .map(|i| {
            let vi = v.clone().slice([i..i + 1, 0..d]); // [1, d]
            let s = vi
                .clone()
                .powi_scalar(2)
                .sum()
                .recip()
                .mul_scalar(2.0)
                .reshape([1, 1]);
            (vi, s)
        })
        .collect()
}

/// "Sequential": `H_1(H_2(⋯(H_K X)))`, one reflection (two matrix-vector products) at a time,
/// K dependent steps.
pub fn sequential_product<B: Backend>(
    v: Tensor<B, 2>,
    x: Tensor<B, 2>,
    transpose: bool,
) -> Tensor<B, 2> {
    reflections(v, transpose)
        .into_iter()
        .rev()
        .fold(x, |a, (vi, s)| {
            let c = vi.clone().matmul(a.clone()); // [1, m]
            a - vi.transpose().matmul(c).mul(s)
        })
}

/// The explicit `d×d` matrix `H_1 ⋯ H_K` (or its transpose), one rank-1 update per reflection.
pub fn householder_matrix<B: Backend>(v: Tensor<B, 2>, transpose: bool) -> Tensor<B, 2> {
    let [_, d] = v.dims();
    let eye = Tensor::eye(d, &v.device());
    reflections(v, transpose)
        .into_iter()
        .fold(eye, |u, (vi, s)| {
            // U H = U − s (U v) vᵀ
            let uv = u.clone().matmul(vi.clone().transpose()); // [d, 1]
            u - uv.matmul(vi).mul(s)
        })
}

/// "Parallel": build the d×d matrix, then multiply: O(d²K + d²m) time.
pub fn parallel_product<B: Backend>(
    v: Tensor<B, 2>,
    x: Tensor<B, 2>,
    transpose: bool,
) -> Tensor<B, 2> {
    householder_matrix(v, transpose).matmul(x)
}
