use burn::prelude::*;
use cfx_datasets::numpy_rng::NumpyLegacyRng;

use crate::flow::{Flow, constant_log_det};

/// A fixed permutation of the channels (FrEIA `PermuteRandom(seed)`), drawn with numpy's legacy
/// RNG so that a given seed yields the reference's permutation.
#[derive(Module, Debug)]
pub struct ChannelPermutation<B: Backend> {
    perm: Tensor<B, 1, Int>,
    inverse: Tensor<B, 1, Int>,
}

impl<B: Backend> ChannelPermutation<B> {
    pub fn random(channels: usize, seed: u32, device: &B::Device) -> Self {
        Self::from_permutation(&NumpyLegacyRng::seed(seed).permutation(channels), device)
    }

    /// Output channel `i` is input channel `perm[i]`.
    pub fn from_permutation(perm: &[usize], device: &B::Device) -> Self {
        let mut inv = vec![0i64; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i as i64;
        }
        let fwd: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
        let t = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [perm.len()]), device);
        Self {
            perm: t(fwd),
            inverse: t(inv),
        }
    }
}

impl<B: Backend> Flow<B> for ChannelPermutation<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let n = x.dims()[0];
        let device = x.device();
        (
            x.select(1, self.perm.clone()),
            constant_log_det(n, 0.0, &device),
        )
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        z.select(1, self.inverse.clone())
    }

    fn log_det_ceiling(&self, _input: [usize; 3]) -> Option<f64> {
        Some(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, TB, random_on};
    use crate::testing::check_flow;

    #[test]
    fn permutes_and_inverts() {
        let d = Default::default();
        let p = ChannelPermutation::<TB>::from_permutation(&[2, 0, 1], &d);
        let x = Tensor::<TB, 4>::from_floats([[[[10.0]], [[11.0]], [[12.0]]]], &d);
        let (z, _) = p.forward(x);
        let z: Vec<f32> = z.into_data().to_vec().unwrap();
        assert_eq!(z, vec![12.0, 10.0, 11.0]);
        let p = ChannelPermutation::<TAd>::random(12, 0, &d);
        check_flow(&p, random_on::<TAd, 4>([2, 12, 1, 1], 1), 0.0, 1e-5);
    }
}
