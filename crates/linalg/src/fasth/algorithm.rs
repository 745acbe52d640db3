//! Algorithms 1 and 2 of the paper: the group sweeps, shared by every backend. They call the
//! backend's [`LinalgBackend::fasth_wy`] and [`LinalgBackend::fasth_vector_grads`] for the parts
//! that are sequential inside a group, and the backend's matmul for the rest.

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use crate::LinalgBackend;
use crate::convert::{primitive, tensor};

/// The raw vectors cut into groups, with what every pass needs from them.
pub(crate) struct Groups<B: Backend> {
    /// `[G, t, d]` raw vectors, the last group zero-padded.
    pub v: Tensor<B, 3>,
    /// `[G, t, d]` unit vectors (zero rows stay zero).
    pub y: Tensor<B, 3>,
    /// `[G, t]`: `2/‖v‖²`, 0 for zero rows.
    pub s: Tensor<B, 2>,
}

impl<B: Backend> Groups<B> {
    /// Rows of `v` in product order; `transpose` reverses them (`(H_1⋯H_K)ᵀ = H_K⋯H_1`).
    pub fn new(v: Tensor<B, 2>, group: usize, transpose: bool) -> Self {
        let v = if transpose { v.flip([0]) } else { v };
        let [k, d] = v.dims();
        let t = group.clamp(1, k);
        let g = k.div_ceil(t);
        let v = if g * t > k {
            let pad = Tensor::zeros([g * t - k, d], &v.device());
            Tensor::cat(vec![v, pad], 0)
        } else {
            v
        };
        let v = v.reshape([g, t, d]);
        let norm2 = v.clone().powi_scalar(2).sum_dim(2); // [G, t, 1]
        let zero = norm2.clone().equal_elem(0.0).float();
        let inv = (norm2 + zero.clone())
            .recip()
            .mul(zero.neg().add_scalar(1.0));
        let y = v.clone().mul(inv.clone().sqrt());
        let s = inv.mul_scalar(2.0).reshape([g, t]);
        Self { v, y, s }
    }

    pub fn count(&self) -> usize {
        self.v.dims()[0]
    }

    fn size(&self) -> usize {
        self.v.dims()[1]
    }
}

fn group_of<B: Backend>(x: &Tensor<B, 3>, i: usize) -> Tensor<B, 2> {
    let [_, t, d] = x.dims();
    x.clone().slice([i..i + 1, 0..t, 0..d]).reshape([t, d])
}

/// Algorithm 1: `A_{G+1} = X`, `A_i = A_{i+1} − 2 W_iᵀ (Y_i A_{i+1})` for i = G..1.
pub(crate) fn forward<B: LinalgBackend>(
    v: FloatTensor<B>,
    x: FloatTensor<B>,
    group: usize,
    transpose: bool,
) -> FloatTensor<B> {
    let groups = Groups::<B>::new(tensor(v), group, transpose);
    let w: Tensor<B, 3> = tensor(B::fasth_wy(primitive(groups.y.clone())));
    let mut a: Tensor<B, 2> = tensor(x);
    for i in (0..groups.count()).rev() {
        let t = group_of(&groups.y, i).matmul(a.clone());
        a = a - group_of(&w, i).transpose().matmul(t).mul_scalar(2.0);
    }
    primitive(a)
}

/// Algorithm 2. Step 1 walks the groups first to last, applying `P_iᵀ = I − 2 Y_iᵀ W_i` to the
/// output (which reconstructs each group's input, by orthogonality) and to the gradient in one
/// pair of matmuls; step 2 is [`LinalgBackend::fasth_vector_grads`], parallel over groups.
pub(crate) fn backward<B: LinalgBackend>(
    v: FloatTensor<B>,
    output: FloatTensor<B>,
    grad: FloatTensor<B>,
    group: usize,
    transpose: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let v: Tensor<B, 2> = tensor(v);
    let [k, d] = v.dims();
    let groups = Groups::<B>::new(v, group, transpose);
    let w: Tensor<B, 3> = tensor(B::fasth_wy(primitive(groups.y.clone())));
    let output: Tensor<B, 2> = tensor(output);
    let m = output.dims()[1];
    let mut both = Tensor::cat(vec![output, tensor(grad)], 1); // [d, 2m]: (A_i | Ā_i)
    let mut snapshots = Vec::with_capacity(groups.count());
    for i in 0..groups.count() {
        snapshots.push(both.clone());
        let t = group_of(&w, i).matmul(both.clone());
        both = both - group_of(&groups.y, i).transpose().matmul(t).mul_scalar(2.0);
    }
    let grad_x = both.slice([0..d, m..2 * m]);
    let stacked = Tensor::stack::<3>(snapshots, 0); // [G, d, 2m]
    let g = groups.count();
    let a = stacked.clone().slice([0..g, 0..d, 0..m]);
    let abar = stacked.slice([0..g, 0..d, m..2 * m]);
    let t = groups.size();
    let grad_v: Tensor<B, 3> = tensor(B::fasth_vector_grads(
        primitive(groups.v),
        primitive(groups.s),
        primitive(a),
        primitive(abar),
    ));
    let grad_v = grad_v.reshape([g * t, d]).slice([0..k, 0..d]);
    let grad_v = if transpose { grad_v.flip([0]) } else { grad_v };
    (primitive(grad_x), primitive(grad_v))
}
