use burn::module::Param;
use burn::prelude::*;
use cfx_linalg::{InvConv1x1, InvConv1x1Config, LinalgBackend};
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use super::random_rotation;
use crate::flow::Flow;
use crate::ops::channel_mix;

/// How Glow's invertible 1×1 convolution parameterises its `C×C` weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvConvKind {
    /// `W = P·L·(U + diag(sign·exp(log_s)))` (Glow's `InvConv2dLU`, the seed's `conv_lu=True`).
    Lu,
    /// `W = U Σ Vᵀ` with `U`, `V` products of Householder reflections through FastH
    /// (`cfx-linalg`, seed 004's SVD alternative to PLU).
    Svd,
}

/// Glow's LU-parameterised invertible 1×1 convolution, started at a random rotation.
///
/// `log|det W| = Σ log_s`, so the log-determinant costs nothing. The inverse builds `W` and
/// inverts it on the host in f64: `W` is at most a few hundred channels wide, the inverse is used
/// for sampling and latent-space ascent (differentiable in its input, not in the weights), and
/// burn has no dense inverse op.
#[derive(Module, Debug)]
pub struct InvConvLu<B: Backend> {
    lower: Param<Tensor<B, 2>>,
    upper: Param<Tensor<B, 2>>,
    log_s: Param<Tensor<B, 1>>,
    perm: Tensor<B, 2>,
    sign: Tensor<B, 1>,
    lower_mask: Tensor<B, 2>,
}

impl<B: Backend> InvConvLu<B> {
    pub fn random(channels: usize, seed: u64, device: &B::Device) -> Self {
        let c = channels;
        let w = DMatrix::from_row_slice(c, c, &random_rotation(c, seed));
        let lu = w.clone().lu();
        let (l, u) = (lu.l(), lu.u());
        // P = W (LU)⁻¹ is a permutation matrix; rounding removes the f64 noise.
        let p = (&w
            * (&l * &u)
                .try_inverse()
                .expect("LU of a rotation is invertible"))
        .map(f64::round);
        let diag = u.diagonal();
        let strict_upper = DMatrix::from_fn(c, c, |i, j| if j > i { u[(i, j)] } else { 0.0 });
        let strict_lower = DMatrix::from_fn(c, c, |i, j| if j < i { l[(i, j)] } else { 0.0 });
        let mat = |m: &DMatrix<f64>| {
            let v: Vec<f32> = m.transpose().iter().map(|&x| x as f32).collect();
            Tensor::<B, 2>::from_data(TensorData::new(v, [c, c]), device)
        };
        let vec = |v: Vec<f32>| Tensor::<B, 1>::from_data(TensorData::new(v, [c]), device);
        let mask = DMatrix::from_fn(c, c, |i, j| if j < i { 1.0 } else { 0.0 });
        Self {
            lower: Param::from_tensor(mat(&strict_lower)),
            upper: Param::from_tensor(mat(&strict_upper)),
            log_s: Param::from_tensor(vec(diag.iter().map(|d| d.abs().ln() as f32).collect())),
            perm: mat(&p),
            sign: vec(diag.iter().map(|d| d.signum() as f32).collect()),
            lower_mask: mat(&mask),
        }
    }

    /// The `C×C` weight.
    pub fn weight(&self) -> Tensor<B, 2> {
        let c = self.sign.dims()[0];
        let device = self.sign.device();
        let eye = Tensor::<B, 2>::eye(c, &device);
        let l = self.lower.val() * self.lower_mask.clone() + eye.clone();
        let s = (self.sign.clone() * self.log_s.val().exp()).unsqueeze_dim::<2>(0);
        let u = self.upper.val() * self.lower_mask.clone().transpose() + eye * s;
        self.perm.clone().matmul(l).matmul(u)
    }

    fn inverse_weight(&self) -> Tensor<B, 2> {
        let w = self.weight();
        let device = w.device();
        let [c, _] = w.dims();
        let host: Vec<f64> = w.into_data().convert::<f64>().to_vec().expect("f64 weight");
        let inv = DMatrix::from_row_slice(c, c, &host)
            .try_inverse()
            .expect("W = P L U with exp(log_s) > 0 on the diagonal is invertible");
        let v: Vec<f32> = inv.transpose().iter().map(|&x| x as f32).collect();
        Tensor::from_data(TensorData::new(v, [c, c]), &device)
    }
}

impl<B: Backend> Flow<B> for InvConvLu<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let [n, _, h, w] = x.dims();
        let ld = self
            .log_s
            .val()
            .sum()
            .mul_scalar((h * w) as f64)
            .expand([n]);
        (channel_mix(x, self.weight()), ld)
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        channel_mix(z, self.inverse_weight())
    }
}

/// Either parameterisation, so that Glow trains with both.
#[derive(Module, Debug)]
pub enum InvConv<B: Backend> {
    Lu(InvConvLu<B>),
    Svd(InvConv1x1<B>),
}

impl<B: Backend> InvConv<B> {
    pub fn new(kind: InvConvKind, channels: usize, seed: u64, device: &B::Device) -> Self {
        match kind {
            InvConvKind::Lu => Self::Lu(InvConvLu::random(channels, seed, device)),
            InvConvKind::Svd => Self::Svd(InvConv1x1Config::new(channels).init(device)),
        }
    }
}

impl<B: LinalgBackend> Flow<B> for InvConv<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        match self {
            Self::Lu(c) => c.forward(x),
            Self::Svd(c) => Flow::forward(c, x),
        }
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::Lu(c) => c.inverse(z),
            Self::Svd(c) => Flow::inverse(c, z),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, TB, random_on};
    use crate::testing::check_flow;

    #[test]
    fn lu_starts_at_a_rotation_and_inverts_with_the_brute_force_log_det() {
        let conv = InvConvLu::<TB>::random(5, 3, &Default::default());
        let w = conv.weight();
        let wtw = w.clone().transpose().matmul(w);
        let err = (wtw - Tensor::eye(5, &Default::default()))
            .abs()
            .max()
            .into_scalar();
        assert!(err < 1e-5, "W is not orthogonal: {err}");
        for kind in [InvConvKind::Lu, InvConvKind::Svd] {
            let conv = InvConv::<TAd>::new(kind, 4, 9, &Default::default());
            // Move off the rotation so that the log-determinant is not 0.
            let conv = match conv {
                InvConv::Lu(mut c) => {
                    c.log_s = Param::from_tensor(c.log_s.val().add_scalar(0.3).detach());
                    InvConv::Lu(c)
                }
                other => other,
            };
            let (_, ld) = conv.forward(random_on::<TAd, 4>([1, 4, 2, 3], 1));
            check_flow(&conv, random_on::<TAd, 4>([2, 4, 2, 3], 2), 1e-4, 1e-3);
            if kind == InvConvKind::Lu {
                let v: f32 = ld.into_scalar();
                assert!((v - 6.0 * 4.0 * 0.3).abs() < 1e-3, "{v}");
            }
        }
    }
}
