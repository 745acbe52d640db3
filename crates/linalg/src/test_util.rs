//! Deterministic random tensors and error measures for the tests.

use burn::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

pub(crate) fn random<B: Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub(crate) fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    (a - b).abs().max().into_scalar().elem::<f64>()
}

/// [`random`] on `Autodiff<Flex>`, the backend of the ops written for flex.
#[cfg(feature = "flex")]
pub(crate) fn random_flex<const D: usize>(
    shape: [usize; D],
    seed: u64,
) -> Tensor<burn::backend::Autodiff<burn_flex::Flex>, D> {
    random(shape, seed, &Default::default())
}
