use burn::module::{Initializer, Param};
use burn::prelude::*;

use crate::LinalgBackend;
use crate::fasth::{default_group, householder_product_unchecked};

/// An orthogonal `d×d` matrix `U = H_1 ⋯ H_K` from K raw Householder vectors (K = d spans every
/// orthogonal matrix of determinant (−1)^d, seed L264-266; fewer trade expressiveness for time,
/// L2821-2831).
#[derive(Config, Debug)]
pub struct OrthogonalConfig {
    pub dim: usize,
    /// Number of reflections; `None` means `dim`.
    #[config(default = "None")]
    pub reflections: Option<usize>,
    /// WY group size; `None` means [`default_group`].
    #[config(default = "None")]
    pub group: Option<usize>,
}

#[derive(Module, Debug)]
pub struct Orthogonal<B: Backend> {
    /// `[K, d]`, one raw Householder vector per row.
    pub vectors: Param<Tensor<B, 2>>,
    pub group: usize,
}

impl OrthogonalConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Orthogonal<B> {
        let k = self.reflections.unwrap_or(self.dim).max(1);
        // The scale of a Householder vector does not matter; N(0, 1) keeps every row away
        // from zero (a zero row is the identity, with zero gradient).
        let vectors = Initializer::Normal {
            mean: 0.0,
            std: 1.0,
        }
        .init([k, self.dim], device);
        Orthogonal {
            vectors,
            group: self.group.unwrap_or_else(|| default_group(self.dim)),
        }
    }
}

impl<B: LinalgBackend> Orthogonal<B> {
    pub fn dim(&self) -> usize {
        self.vectors.dims()[1]
    }

    /// `U X` for `x` `[d, m]` (columns are vectors).
    pub fn apply(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        householder_product_unchecked(self.vectors.val(), x, self.group, false)
    }

    /// `Uᵀ X`, which is `U⁻¹ X`.
    pub fn apply_transpose(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        householder_product_unchecked(self.vectors.val(), x, self.group, true)
    }

    /// `x Uᵀ` for `x` `[N, d]` (rows are samples): each sample mapped to `U x`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.apply(x.transpose()).transpose()
    }

    /// Each row mapped to `Uᵀ x`: the inverse of [`Orthogonal::forward`].
    pub fn inverse(&self, y: Tensor<B, 2>) -> Tensor<B, 2> {
        self.apply_transpose(y.transpose()).transpose()
    }

    /// The explicit matrix U (`d×d`).
    pub fn matrix(&self) -> Tensor<B, 2> {
        self.apply(Tensor::eye(self.dim(), &self.vectors.device()))
    }
}
