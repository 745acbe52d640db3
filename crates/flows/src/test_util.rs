//! Backends and helpers for this crate's unit tests.

use burn::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

pub type TB = burn::backend::Flex;
pub type TAd = burn::backend::Autodiff<TB>;

/// The backend of the tests that register a backend-specific op (`crate::nn::registry`),
/// which no other test of this crate trains: a registration is process-wide, so each of those
/// tests registers a function that computes the tensor ops' numbers, and none disturbs another
/// or the rest. (It also runs the ops under burn's other checkpointing strategy.)
pub type RegistryAd = burn::backend::Autodiff<
    TB,
    burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing,
>;

/// Held by every test that registers an op for [`RegistryAd`] or runs a model on it, so that
/// no registration lands in the middle of another such test's comparison (the registrations
/// compute the same numbers, but a check for "is one registered" made twice in one forward
/// pass could see two answers).
pub fn registry_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A standard-normal tensor from a seeded host RNG (independent of backend RNG state).
pub fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<TB, D> {
    random_on::<TB, D>(shape, seed)
}

pub fn random_on<B: Backend, const D: usize>(shape: [usize; D], seed: u64) -> Tensor<B, D> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

pub fn assert_close<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>, tol: f64) {
    let err = crate::testing::max_abs_diff(a, b);
    assert!(err <= tol, "max abs difference {err} > {tol}");
}

/// Makes a coupling subnet put out `value` everywhere, whatever its input, so that a coupling's
/// log-scales sit at the end of their soft clamp (`value` ≫ 0: at `+clamp`).
pub fn constant_subnet<B: Backend>(s: &mut crate::nn::ConvSubnet<B>, value: f32) {
    use burn::module::Param;
    let [c_out, ..] = s.conv3.weight.dims();
    let device = s.conv3.weight.device();
    s.conv3.weight = Param::from_tensor(s.conv3.weight.val().zeros_like());
    s.conv3.bias = Some(Param::from_tensor(Tensor::full([c_out], value, &device)));
}

/// What a batch-norm test compares after one training step of `y = bn(x)` under the loss
/// `Σ y·weights`: the output, the gradients of x, γ and β, and the running mean and variance.
pub fn batch_norm_outcome(
    bn: &burn::nn::BatchNorm<TAd>,
    x: &Tensor<TAd, 4>,
    y: Tensor<TAd, 4>,
    weights: &Tensor<TAd, 4>,
) -> [TensorData; 6] {
    let grads = (y.clone() * weights.clone()).sum().backward();
    [
        y.into_data(),
        x.grad(&grads).unwrap().into_data(),
        bn.gamma.grad(&grads).unwrap().into_data(),
        bn.beta.grad(&grads).unwrap().into_data(),
        bn.running_mean.value_sync().into_data(),
        bn.running_var.value_sync().into_data(),
    ]
}
