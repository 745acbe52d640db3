use burn::module::Param;
use burn::prelude::*;
use nalgebra::DMatrix;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::flow::{Flow, constant_log_det};
use crate::ops::channel_mix;

/// A fixed, random rotation of the channels: a 1×1 convolution by a matrix drawn uniformly from
/// SO(C), not trained (IB-INN's "soft permutation", scipy's `special_ortho_group`).
///
/// det = +1, so the log-determinant is 0; the inverse uses the transpose. The matrix is stored in
/// the record (rather than re-drawn from the seed) so checkpoints stay valid if RNGs change.
#[derive(Module, Debug)]
pub struct FixedRotation<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> FixedRotation<B> {
    pub fn random(channels: usize, seed: u64, device: &B::Device) -> Self {
        Self::from_matrix(&random_rotation(channels, seed), channels, device)
    }

    /// `m` is row-major `[channels, channels]`.
    pub fn from_matrix(m: &[f64], channels: usize, device: &B::Device) -> Self {
        let data: Vec<f32> = m.iter().map(|&v| v as f32).collect();
        let w = Tensor::from_data(TensorData::new(data, [channels, channels]), device);
        Self {
            weight: Param::from_tensor(w).set_require_grad(false),
        }
    }
}

impl<B: Backend> Flow<B> for FixedRotation<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let n = x.dims()[0];
        let device = x.device();
        (
            channel_mix(x, self.weight.val()),
            constant_log_det(n, 0.0, &device),
        )
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        channel_mix(z, self.weight.val().transpose())
    }

    fn log_det_ceiling(&self, _input: [usize; 3]) -> Option<f64> {
        Some(0.0)
    }
}

/// A Haar-uniform random matrix of SO(n), row-major, in f64: QR of a Gaussian matrix with the
/// signs of R's diagonal moved into Q (Mezzadri 2007), then one column negated if det = −1.
pub fn random_rotation(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let a = DMatrix::<f64>::from_fn(n, n, |_, _| StandardNormal.sample(&mut rng));
    let qr = a.qr();
    let (mut q, r) = (qr.q(), qr.r());
    for j in 0..n {
        if r[(j, j)] < 0.0 {
            q.column_mut(j).neg_mut();
        }
    }
    if n > 0 && q.determinant() < 0.0 {
        q.column_mut(0).neg_mut();
    }
    (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .map(|(i, j)| q[(i, j)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, random_on};
    use crate::testing::check_flow;

    #[test]
    fn is_a_rotation() {
        for n in [1, 2, 4, 16] {
            let q = DMatrix::from_row_slice(n, n, &random_rotation(n, n as u64));
            let err = (q.transpose() * &q - DMatrix::<f64>::identity(n, n))
                .abs()
                .max();
            assert!(err < 1e-12, "n={n}: {err}");
            assert!((q.determinant() - 1.0).abs() < 1e-9);
        }
        assert_ne!(random_rotation(4, 1), random_rotation(4, 2));
    }

    #[test]
    fn invertible_with_zero_log_det() {
        let r = FixedRotation::<TAd>::random(4, 3, &Default::default());
        assert!(!r.weight.is_require_grad());
        check_flow(&r, random_on::<TAd, 4>([2, 4, 2, 2], 4), 1e-5, 1e-4);
    }
}
