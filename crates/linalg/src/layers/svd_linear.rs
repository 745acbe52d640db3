use burn::module::{Initializer, Param};
use burn::prelude::*;

use super::{Orthogonal, OrthogonalConfig};
use crate::LinalgBackend;

/// A square linear layer in SVD form, `W = U Σ Vᵀ` with U, V Householder products (seed 004
/// L233-240, L2154-2162). Determinant, inverse and spectral norm cost O(d) (Table 1, L2762-2773).
///
/// Σ is parameterised as `σ_i = exp(s_i)`: the seed leaves the scheme open (spec §1.7); this one
/// keeps W invertible under any step and makes `log|det W| = Σ s_i` exact. `|det|` is what is
/// reported: `det U det V = ±1` (K reflections have determinant (−1)^K), so the sign is not
/// `+1` as the thesis writes (L236-240), but flows only need the absolute value.
#[derive(Config, Debug)]
pub struct SvdLinearConfig {
    pub dim: usize,
    #[config(default = true)]
    pub bias: bool,
    /// WY group size for both factors; `None` picks [`crate::fasth::default_group`].
    #[config(default = "None")]
    pub group: Option<usize>,
    /// Initial `log σ` are drawn from `U(−init_log_scale, init_log_scale)`.
    #[config(default = 0.01)]
    pub init_log_scale: f64,
}

#[derive(Module, Debug)]
pub struct SvdLinear<B: Backend> {
    pub u: Orthogonal<B>,
    pub v: Orthogonal<B>,
    /// `log σ_i`.
    pub log_sigma: Param<Tensor<B, 1>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl SvdLinearConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> SvdLinear<B> {
        let orth = OrthogonalConfig::new(self.dim).with_group(self.group);
        let a = self.init_log_scale;
        SvdLinear {
            u: orth.init(device),
            v: orth.init(device),
            log_sigma: Initializer::Uniform { min: -a, max: a }.init([self.dim], device),
            bias: self
                .bias
                .then(|| Initializer::Zeros.init([self.dim], device)),
        }
    }
}

impl<B: LinalgBackend> SvdLinear<B> {
    pub fn dim(&self) -> usize {
        self.log_sigma.dims()[0]
    }

    /// `W X` for columns `x` `[d, m]` (no bias).
    pub fn apply(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let sigma = self.log_sigma.val().exp().unsqueeze_dim(1);
        self.u.apply(self.v.apply_transpose(x) * sigma)
    }

    /// `W⁻¹ X = V Σ⁻¹ Uᵀ X` for columns `x` `[d, m]`.
    pub fn apply_inverse(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let inv_sigma = self.log_sigma.val().neg().exp().unsqueeze_dim(1);
        self.v.apply(self.u.apply_transpose(x) * inv_sigma)
    }

    /// Rows `x` `[N, d]` mapped to `W x + b`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = self.apply(x.transpose()).transpose();
        match &self.bias {
            Some(b) => y + b.val().unsqueeze_dim(0),
            None => y,
        }
    }

    /// The inverse of [`SvdLinear::forward`].
    pub fn inverse(&self, y: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = match &self.bias {
            Some(b) => y - b.val().unsqueeze_dim(0),
            None => y,
        };
        self.apply_inverse(y.transpose()).transpose()
    }

    /// `log|det W| = Σ log σ_i`, a `[1]` tensor.
    pub fn log_abs_det(&self) -> Tensor<B, 1> {
        self.log_sigma.val().sum()
    }

    /// `‖W‖₂ = max σ_i`, exact (seed L350-359).
    pub fn spectral_norm(&self) -> Tensor<B, 1> {
        self.log_sigma.val().exp().max()
    }

    /// The explicit `d×d` weight.
    pub fn weight(&self) -> Tensor<B, 2> {
        self.apply(Tensor::eye(self.dim(), &self.log_sigma.device()))
    }
}
