//! The two sequential inner loops of FastH from tensor ops, batched over the groups: every
//! backend runs these; `CubeBackend` replaces each with a single kernel.

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use crate::convert::{primitive, tensor};

/// WY decomposition of every group (Lemma 1, built column by column):
/// `w_1 = y_1`, `w_k = y_k − 2 W_{<k}ᵀ (Y_{<k} y_k)`, so `H_1⋯H_k = I − 2 W_{≤k}ᵀ Y_{≤k}`.
/// A zero row of `y` yields a zero row of `w`: the identity, which is what padding needs.
pub(crate) fn wy<B: Backend>(y: FloatTensor<B>) -> FloatTensor<B> {
    let y: Tensor<B, 3> = tensor(y);
    let [g, t, d] = y.dims();
    let mut rows = vec![y.clone().slice([0..g, 0..1, 0..d])];
    for k in 1..t {
        let yk = y.clone().slice([0..g, k..k + 1, 0..d]);
        let y_prev = y.clone().slice([0..g, 0..k, 0..d]);
        let w_prev = Tensor::cat(rows.clone(), 1);
        let coef = yk.clone().matmul(y_prev.swap_dims(1, 2)); // [G, 1, k]
        rows.push(yk - coef.matmul(w_prev).mul_scalar(2.0));
    }
    primitive(Tensor::cat(rows, 1))
}

/// Step 2 of Algorithm 2 (eqs. 4–5 of the paper), all groups in parallel, t steps. For
/// reflection j of a group, `a` is the output of `Ĥ_j` and `g` the gradient there:
/// undo `Ĥ_j` (`a ← Ĥ_j a`, its input), then
/// `∂L/∂v = −s (g αᵀ + a βᵀ − s (α·β) v)` with `α = vᵀa`, `β = vᵀg` summed over the columns,
/// and `g ← Ĥ_j g`. `s = 2/‖v‖²` makes it the gradient of the raw vector.
pub(crate) fn vector_grads<B: Backend>(
    v: FloatTensor<B>,
    s: FloatTensor<B>,
    a: FloatTensor<B>,
    g: FloatTensor<B>,
) -> FloatTensor<B> {
    let v: Tensor<B, 3> = tensor(v);
    let s: Tensor<B, 2> = tensor(s);
    let mut a: Tensor<B, 3> = tensor(a);
    let mut g: Tensor<B, 3> = tensor(g);
    let [groups, t, d] = v.dims();
    let mut rows = Vec::with_capacity(t);
    for j in 0..t {
        let vj = v.clone().slice([0..groups, j..j + 1, 0..d]); // [G, 1, d]
        let vj_col = vj.clone().swap_dims(1, 2); // [G, d, 1]
        let sj = s
            .clone()
            .slice([0..groups, j..j + 1])
            .reshape([groups, 1, 1]);
        let c = vj.clone().matmul(a.clone()); // [G, 1, m]
        a = a - vj_col.clone().matmul(c).mul(sj.clone());
        let alpha = vj.clone().matmul(a.clone());
        let beta = vj.clone().matmul(g.clone());
        let g_alpha = alpha.clone().matmul(g.clone().swap_dims(1, 2)); // [G, 1, d]
        let a_beta = beta.clone().matmul(a.clone().swap_dims(1, 2));
        let ab = alpha.mul(beta.clone()).sum_dim(2); // [G, 1, 1]
        let dv = (g_alpha + a_beta - vj.mul(ab).mul(sj.clone())).mul(sj.clone().neg());
        rows.push(dv);
        g = g - vj_col.matmul(beta).mul(sj);
    }
    primitive(Tensor::cat(rows, 1))
}
