//! FastH: products of Householder reflections `H_1 ⋯ H_K X` in O(d·K·m) time with
//! O(K/t + t) sequential matrix operations instead of O(K) (Mathiasen et al., NeurIPS 2020;
//! thesis §2.1, seed 004 L212-519 and L2224-2675).
//!
//! `H_k = I − 2 v_k v_kᵀ / ‖v_k‖²` for the raw (un-normalised) rows `v_k` of `V ∈ R^{K×d}`.
//! The K reflections are cut into G = ⌈K/t⌉ groups of t; each group's product is written as
//! `P_i = I − 2 W_i Y_iᵀ` (Lemma 1, the WY decomposition; the paper's scaling with the factor 2,
//! the thesis's `I − WYᵀ` absorbs it into W) and the groups are applied one after the other
//! (Algorithm 1). The backward pass is Algorithm 2 of the paper, written by hand and registered
//! as the op's autodiff backward ([`LinalgBackend`]).
//!
//! Decisions where the sources leave room:
//! * K need not be a multiple of t, nor d of anything: the last group is padded with zero
//!   rows, and **a zero row is the identity** (no reflection, zero gradient) rather than a
//!   division by zero. The paper and its CUDA code require `t | d` and K = d.
//! * The transposed product `H_K ⋯ H_1 X` is the product over the reversed rows (§1.3 of the spec),
//!   which is what the reference `Orthogonal.forward` computes.
//! * The backward pass reconstructs the group inputs `A_{i+1} = P_iᵀ A_i` from the output
//!   while it propagates the gradient, as the authors' CUDA code does, instead of keeping the G
//!   activations of the forward pass alive (spec §1.5).

pub(crate) mod algorithm;
pub mod baselines;
#[cfg(feature = "cubecl")]
mod cube;
pub(crate) mod portable;

use burn::prelude::*;

use crate::convert::{primitive, tensor};
use crate::{LinalgBackend, LinalgError};

/// `H_1 ⋯ H_K X` (or `H_K ⋯ H_1 X` when `transpose`) for the raw Householder vectors in the rows
/// of `v` (`[K, d]`) and `x` (`[d, m]`), with WY groups of `group` reflections.
///
/// Differentiable with respect to both `v` and `x` on `Autodiff<B>` through the hand-written
/// backward pass.
pub fn householder_product<B: LinalgBackend>(
    v: Tensor<B, 2>,
    x: Tensor<B, 2>,
    group: usize,
    transpose: bool,
) -> Result<Tensor<B, 2>, LinalgError> {
    let [k, d] = v.dims();
    let [dx, m] = x.dims();
    let op = "householder_product";
    if k == 0 || d == 0 {
        return Err(LinalgError::Shape {
            op,
            what: format!("V must hold at least one vector of length ≥ 1, got [{k}, {d}]"),
        });
    }
    if dx != d || m == 0 {
        return Err(LinalgError::Shape {
            op,
            what: format!(
                "X must be [d, m] = [{d}, ≥1] to match V [{k}, {d}] (rows are the vectors), got [{dx}, {m}]"
            ),
        });
    }
    if group == 0 {
        return Err(LinalgError::Invalid {
            op,
            what: "group size must be at least 1".into(),
        });
    }
    Ok(householder_product_unchecked(v, x, group, transpose))
}

/// [`householder_product`] for callers that validated the shapes once (the layers).
pub(crate) fn householder_product_unchecked<B: LinalgBackend>(
    v: Tensor<B, 2>,
    x: Tensor<B, 2>,
    group: usize,
    transpose: bool,
) -> Tensor<B, 2> {
    let group = group.min(v.dims()[0]);
    tensor(B::fasth_product(
        primitive(v),
        primitive(x),
        group,
        transpose,
    ))
}

/// The group size the authors' experiments use (`exp/run_svd.py`: 16 up to d = 128, else 32).
/// The thesis's rule is t = O(√d) (seed 004 L2685-2702); `cargo xtask bench fasth --groups`
/// measures the trade-off on the machine at hand.
pub fn default_group(d: usize) -> usize {
    if d <= 128 { 16 } else { 32 }
}

#[cfg(test)]
mod tests;
