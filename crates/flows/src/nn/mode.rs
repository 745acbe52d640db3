//! How the networks' nonlinear and batch-dependent layers behave in the current forward pass.
//!
//! burn picks batch-norm statistics and dropout by backend: on an autodiff backend they act as
//! in training. Attribution methods need gradients of the *trained* function (running
//! statistics, no dropout), and DeepLift needs every nonlinearity to pass the rescale
//! multiplier instead of its derivative. Threading a mode argument through every block and
//! model signature would touch each `Flow` implementation for the sake of one caller, so the
//! mode is a scoped, thread-local setting that only the layers in this module read. It is set
//! by the guards [`inference`] and [`rescale_pairs`] and restored when they drop, also on
//! unwinding.
//!
//! The networks that attribution methods explain (the IB-INN's subnets and soft clamps, the CNN
//! classifier) route their ReLU, tanh, max-pooling, batch norm and dropout through the
//! functions here, so both modes reach them.

use std::cell::Cell;

use burn::module::{ModuleMapper, Param, RunningState};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::activation;

#[derive(Debug, Clone, Copy, Default)]
struct Mode {
    inference: bool,
    rescale: bool,
    replica: bool,
}

thread_local! {
    static MODE: Cell<Mode> = const {
        Cell::new(Mode {
            inference: false,
            rescale: false,
            replica: false,
        })
    };
}

fn mode() -> Mode {
    MODE.with(Cell::get)
}

/// Restores the previous mode when dropped.
#[must_use = "the mode holds only while the guard lives"]
#[derive(Debug)]
pub struct ModeGuard {
    previous: Mode,
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        MODE.with(|m| m.set(self.previous));
    }
}

fn set(f: impl FnOnce(&mut Mode)) -> ModeGuard {
    let previous = mode();
    let mut next = previous;
    f(&mut next);
    MODE.with(|m| m.set(next));
    ModeGuard { previous }
}

/// Batch norm uses its running statistics and dropout is off, also on an autodiff backend.
pub fn inference() -> ModeGuard {
    set(|m| m.inference = true)
}

/// DeepLift's rescale rule (Shrikumar et al. 2017, §3.5.1), implies [`inference`].
///
/// The batch is the inputs followed by as many references, `[x; x₀]`. Each nonlinearity `f`
/// returns `f(x)` for the input half, written as `f(x₀) + m·(x − x₀)` with the multiplier
/// `m = (f(x) − f(x₀)) / (x − x₀)` held constant, so ordinary backpropagation carries `m`
/// where the gradient would carry `f'(x)`; the reference half is passed through unchanged.
/// Where `|x − x₀|` is below 1e-6 the derivative at `x` stands in for `m` (the limit).
/// Products of two input-dependent terms (affine couplings) and the IB-INN's quadratic logits
/// keep their ordinary gradient, as in Captum's DeepLift, which rewrites only nonlinearity
/// modules.
pub fn rescale_pairs() -> ModeGuard {
    set(|m| {
        m.inference = true;
        m.rescale = true;
    })
}

/// This thread is one of several replicas of a data-parallel step that share the model's
/// running statistics: batch norm reports its new statistics to burn's `RunningState`, which
/// averages the replicas' reports, instead of storing them in place (see
/// [`store_running_statistics`]).
pub fn replica() -> ModeGuard {
    set(|m| m.replica = true)
}

/// Whether batch-dependent layers act as at test time.
pub fn is_inference<B: Backend>(device: &B::Device) -> bool {
    mode().inference || !B::ad_enabled(device)
}

/// Whether DeepLift's rescale rule ([`rescale_pairs`]) is active.
pub(crate) fn is_rescale() -> bool {
    mode().rescale
}

const RESCALE_EPS: f64 = 1e-6;

/// Applies `f` with the rescale rule when [`rescale_pairs`] is active; `df` is its derivative.
fn elementwise<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    f: impl Fn(Tensor<B, D>) -> Tensor<B, D>,
    df: impl Fn(Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    if !mode().rescale {
        return f(x);
    }
    let n = x.dims()[0];
    assert!(
        n.is_multiple_of(2),
        "DeepLift rescale mode needs a batch of inputs followed by as many references, got {n} rows"
    );
    let half = n / 2;
    let a = x.clone().narrow(0, 0, half);
    let r = x.narrow(0, half, half).detach();
    let fa = f(a.clone()).detach();
    let fr = f(r.clone()).detach();
    let delta = a.clone() - r.clone();
    let dd = delta.clone().detach();
    let small = dd.clone().abs().lower_elem(RESCALE_EPS);
    // A safe denominator where the difference vanishes; those entries take the derivative.
    let safe = dd.mask_fill(small.clone(), 1.0);
    let m = (fa - fr.clone())
        .div(safe)
        .mask_where(small, df(a.detach()));
    let top = fr.clone() + m * delta;
    Tensor::cat(vec![top, fr], 0)
}

pub fn relu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    elementwise(x, activation::relu, |a| a.greater_elem(0.0).float())
}

pub fn tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    elementwise(x, Tensor::tanh, |a| {
        let t = a.tanh();
        t.clone().mul(t).neg().add_scalar(1.0)
    })
}

/// 2×2 max pooling with stride 2 (odd trailing rows and columns dropped, as the pooling layer
/// does). In rescale mode the maximum is written as ReLUs, `max(a, b) = b + relu(a − b)`, so
/// DeepLift's multipliers sum to the change of the pooled value exactly instead of routing
/// everything through the arg-max.
pub fn max_pool2x2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let (ho, wo) = (h / 2, w / 2);
    if !mode().rescale {
        return burn::tensor::module::max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false);
    }
    let x = x
        .narrow(2, 0, 2 * ho)
        .narrow(3, 0, 2 * wo)
        .reshape([n, c, ho, 2, wo, 2]);
    let corner = |i: usize, j: usize| -> Tensor<B, 4> {
        x.clone()
            .narrow(3, i, 1)
            .narrow(5, j, 1)
            .reshape([n, c, ho, wo])
    };
    let max2 = |a: Tensor<B, 4>, b: Tensor<B, 4>| b.clone() + relu(a - b);
    let top = max2(corner(0, 0), corner(0, 1));
    let bottom = max2(corner(1, 0), corner(1, 1));
    max2(top, bottom)
}

/// burn's batch norm — batch statistics and the running-statistics update when training, the
/// running statistics when [`is_inference`] holds — written as one per-channel scale and shift,
/// `x·γ/σ + (β − μγ/σ)`, with the per-channel operands materialised as `[N, C, 1, 1]`
/// ([`crate::ops::per_channel`]). Same numbers as `BatchNorm::forward`; on flex it halves the
/// IB-INN training step (docs/results.md, "IB-INN on the CPU against PyTorch"): burn's version
/// broadcasts `[1, C, 1, 1]` statistics, which flex walks element by element.
///
/// In training, a backend with a registered batch-norm step ([`super::register_batch_norm`]:
/// the fused tensor-op version, or CubeCL kernels) takes that instead: the same numbers in a
/// fraction of the kernel launches.
pub fn batch_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    batch_norm_then(bn, x, false)
}

/// `relu(batch_norm(bn, x))`, the pattern of every IB-INN subnet: a registered batch-norm step
/// applies the ReLU itself (the CubeCL kernels in the same launches), everywhere else it is
/// [`relu`] after [`batch_norm`].
pub fn batch_norm_relu<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    batch_norm_then(bn, x, true)
}

fn batch_norm_then<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    then_relu: bool,
) -> Tensor<B, 4> {
    let [n, _, h, w] = x.dims();
    let device = x.device();
    let training = !is_inference::<B>(&device);
    if let Some(step) = training
        .then(super::fused_batch_norm::registered_batch_norm::<B>)
        .flatten()
    {
        let out = step(step_for(bn, x, then_relu));
        store_running_statistics(bn, out.running_mean, out.running_var);
        return out.y;
    }
    let (mean, var) = if !training {
        (
            bn.running_mean.value().to_device(&device),
            bn.running_var.value().to_device(&device),
        )
    } else {
        let count = (n * h * w) as f64;
        let ones = Tensor::<B, 2>::ones([h * w, 1], &device);
        let per_channel_mean =
            |t: Tensor<B, 4>| crate::ops::channel_sums(t, &ones).div_scalar(count);
        let mean = per_channel_mean(x.clone());
        let centred = x.clone() - crate::ops::per_channel(mean.clone(), n);
        let var = per_channel_mean(centred.square());
        let unbiased = var
            .clone()
            .mul_scalar(cfx_linalg::batch_norm::bessel(n * h * w));
        update_running_statistics(bn, mean.clone(), unbiased);
        (mean, var)
    };
    let scale = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt();
    let shift = bn.beta.val() - mean * scale.clone();
    let y = x * crate::ops::per_channel(scale, n) + crate::ops::per_channel(shift, n);
    if then_relu { relu(y) } else { y }
}

/// What a registered batch-norm step gets for layer `bn` and input `x`: its parameters and
/// its running statistics as they stand.
pub(crate) fn step_for<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    relu: bool,
) -> cfx_linalg::batch_norm::BatchNormStep<B> {
    let device = x.device();
    cfx_linalg::batch_norm::BatchNormStep {
        x,
        gamma: bn.gamma.val(),
        beta: bn.beta.val(),
        running_mean: bn.running_mean.value_sync().to_device(&device),
        running_var: bn.running_var.value_sync().to_device(&device),
        epsilon: bn.epsilon,
        momentum: bn.momentum,
        relu,
    }
}

/// burn's running-statistics rule: `running ← (1 − momentum)·running + momentum·batch`.
pub(crate) fn running_update<B: Backend>(
    old: Tensor<B, 1>,
    batch: Tensor<B, 1>,
    momentum: f64,
) -> Tensor<B, 1> {
    old.mul_scalar(1.0 - momentum)
        .add(batch.mul_scalar(momentum))
}

/// Folds a batch's statistics into the running ones ([`running_update`], outside the graph).
fn update_running_statistics<B: Backend>(bn: &BatchNorm<B>, mean: Tensor<B, 1>, var: Tensor<B, 1>) {
    let update = |state: &RunningState<Tensor<B, 1>>, batch: Tensor<B, 1>| {
        let old = state.value_sync().to_device(&batch.device());
        running_update(old, batch.detach(), bn.momentum)
    };
    let mean = update(&bn.running_mean, mean);
    let var = update(&bn.running_var, var);
    store_running_statistics(bn, mean, var);
}

/// Makes `mean` and `var` (detached) the layer's running statistics.
///
/// Why not `RunningState::update` alone: it parks the value per thread, and the next read
/// folds the parked values in as their average, a `div_scalar` launch per statistic even when
/// one thread reported (two per batch norm and step, 200 per step of the full IB-INN on the
/// GPU: docs/results.md, "Running statistics stored in place, convolution weights stored
/// channels-last"). A single thread stores the
/// value in place through `Module::map`, which sets a running state's tensor (clones share it)
/// and parks nothing, so the value is current at once. Replicas of a data-parallel step
/// ([`replica`]) report through `update`, so their statistics are averaged as before.
pub(crate) fn store_running_statistics<B: Backend>(
    bn: &BatchNorm<B>,
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
) {
    let store = |state: &RunningState<Tensor<B, 1>>, value: Tensor<B, 1>| {
        let value = value.detach();
        if mode().replica {
            state.update(value);
        } else {
            // Whatever this thread parked before (none in a single-thread run) would otherwise
            // be folded over the stored value at the next read.
            let _ = state.value_sync();
            let _ = state.clone().map(&mut Replace(Some(value)));
        }
    };
    store(&bn.running_mean, mean);
    store(&bn.running_var, var);
}

/// A mapper that hands its one rank-1 tensor to the first float it maps.
struct Replace<B: Backend>(Option<Tensor<B, 1>>);

impl<B: Backend> ModuleMapper<B> for Replace<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, old, mapper) = param.consume();
        let value = self.0.take().expect("one running state maps one tensor");
        assert_eq!(D, 1, "running statistics are rank 1");
        let value = Tensor::<B, D>::from_primitive(value.into_primitive());
        debug_assert_eq!(value.dims(), old.dims());
        Param::from_mapped_value(id, value, mapper)
    }
}

/// burn's dropout, off in [`inference`] mode.
pub fn dropout<B: Backend, const D: usize>(d: &burn::nn::Dropout, x: Tensor<B, D>) -> Tensor<B, D> {
    if mode().inference { x } else { d.forward(x) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn_flex::Flex;

    type TB = Autodiff<Flex>;

    fn t<const D: usize>(v: &[f32], shape: [usize; D]) -> Tensor<TB, D> {
        Tensor::<TB, 1>::from_floats(v, &Default::default()).reshape(shape)
    }

    /// Our batch norm against burn's `BatchNorm::forward`: outputs, gradients with respect to
    /// the input, γ and β, and the running statistics, in training and in inference. The
    /// running variance is PyTorch's, the unbiased one (`cfx_linalg::batch_norm::bessel`),
    /// where burn keeps the biased one: checked against burn's with the factor put back.
    #[test]
    fn batch_norm_matches_burns_layer() {
        use burn::module::AutodiffModule;
        use burn::nn::BatchNormConfig;
        use burn::tensor::{Distribution, Tolerance};
        let device = Default::default();
        TB::seed(&device, 7);
        let cfg = BatchNormConfig::new(3)
            .with_momentum(0.3)
            .with_epsilon(1e-4);
        // Two independent layers (a fork would share burn's running-state map).
        let make = || {
            let mut bn = cfg.init::<TB>(&device);
            bn.gamma =
                burn::module::Param::from_tensor(Tensor::from_floats([0.5, 1.5, 2.0], &device));
            bn.beta =
                burn::module::Param::from_tensor(Tensor::from_floats([-0.2, 0.0, 0.3], &device));
            bn
        };
        let (ours, theirs) = (make(), make());
        let x = Tensor::<TB, 4>::random([4, 3, 5, 2], Distribution::Normal(1.0, 2.0), &device);
        let w = Tensor::<TB, 4>::random([4, 3, 5, 2], Distribution::Default, &device);
        let tol = Tolerance::<f32>::absolute(1e-4);
        let mut results = vec![];
        for bn in [&ours, &theirs] {
            let xx = x.clone().detach().require_grad();
            let y = if std::ptr::eq(bn, &ours) {
                batch_norm(bn, xx.clone())
            } else {
                bn.forward(xx.clone())
            };
            results.push(crate::test_util::batch_norm_outcome(bn, &xx, y, &w));
        }
        for (a, b) in results[0].iter().zip(&results[1]).take(5) {
            a.assert_approx_eq(b, tol);
        }
        // Running variance: 0.7·1 + 0.3·v·M/(M − 1) against burn's 0.7·1 + 0.3·v, M = 40.
        let burns = results[1][5].to_vec::<f32>().unwrap();
        let unbiased: Vec<f32> = burns
            .iter()
            .map(|r| 0.7 + (r - 0.7) * 40.0 / 39.0)
            .collect();
        results[0][5].assert_approx_eq(&burn::tensor::TensorData::new(unbiased, [3]), tol);
        // Inference: the running statistics, no update (burn's layer given ours).
        let inner = ours.valid();
        let y = batch_norm(&inner, x.clone().inner());
        let mut theirs = theirs.valid();
        theirs.running_var = inner.running_var.clone();
        let expected = theirs.forward(x.inner());
        y.into_data().assert_approx_eq(&expected.into_data(), tol);
    }

    /// One thread's training step leaves its running statistics current at once (burn's
    /// `update` would leave `value()` one step behind until a synchronising read), and
    /// replicas sharing a layer still get burn's average of their reports.
    #[test]
    fn running_statistics_are_stored_in_place_and_averaged_over_replicas() {
        use burn::nn::BatchNormConfig;
        use burn::tensor::{Distribution, Tolerance};
        let device = Default::default();
        TB::seed(&device, 5);
        let make = || {
            BatchNormConfig::new(3)
                .with_momentum(0.3)
                .init::<TB>(&device)
        };
        let xs: Vec<Tensor<TB, 4>> = (0..2)
            .map(|k| Tensor::random([4, 3, 5, 2], Distribution::Normal(k as f64, 2.0), &device))
            .collect();
        let tol = Tolerance::<f32>::absolute(1e-5);
        let stats = |bn: &BatchNorm<TB>| {
            [bn.running_mean.value_sync(), bn.running_var.value_sync()].map(|t| t.into_data())
        };

        let alone: Vec<_> = xs
            .iter()
            .map(|x| {
                let bn = make();
                let _ = batch_norm_relu(&bn, x.clone());
                let channel_mean = x.clone().swap_dims(0, 1).reshape([3, 40]).mean_dim(1);
                bn.running_mean
                    .value()
                    .into_data()
                    .assert_approx_eq(&(channel_mean.reshape([3]) * 0.3).into_data(), tol);
                stats(&bn)
            })
            .collect();

        let shared = make();
        std::thread::scope(|s| {
            for x in &xs {
                let bn = shared.clone();
                s.spawn(move || {
                    let _replica = replica();
                    let _ = batch_norm(&bn, x.clone());
                });
            }
        });
        crate::nn::sync_running_statistics(&shared);
        for (k, got) in stats(&shared).iter().enumerate() {
            let a = alone[0][k].to_vec::<f32>().unwrap();
            let b = alone[1][k].to_vec::<f32>().unwrap();
            let mean: Vec<f32> = a.iter().zip(&b).map(|(a, b)| (a + b) / 2.0).collect();
            got.assert_approx_eq(&burn::tensor::TensorData::new(mean, [3]), tol);
        }
    }

    #[test]
    fn rescale_relu_keeps_values_and_passes_the_secant_slope() {
        // inputs 2, -1, 0.5; references -2, -1, 1.
        let x = t(&[2.0, -1.0, 0.5, -2.0, -1.0, 1.0], [6]).require_grad();
        let y = {
            let _g = rescale_pairs();
            relu(x.clone())
        };
        let v = y.clone().into_data().to_vec::<f32>().unwrap();
        assert_eq!(v, vec![2.0, 0.0, 0.5, 0.0, 0.0, 1.0]);
        let g = y.narrow(0, 0, 3).sum().backward();
        let grad = x.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap();
        // (2 − 0)/(2 + 2), derivative at −1 (equal to its reference), (0.5 − 1)/(0.5 − 1).
        assert_eq!(&grad[..3], &[0.5, 0.0, 1.0]);
        assert_eq!(&grad[3..], &[0.0, 0.0, 0.0]);
    }

    #[test]
    fn modes_nest_and_restore() {
        assert!(!mode().inference);
        {
            let _a = inference();
            {
                let _b = rescale_pairs();
                assert!(mode().rescale);
            }
            assert!(mode().inference && !mode().rescale);
        }
        assert!(!mode().inference && !mode().rescale);
    }

    #[test]
    fn pooling_as_relus_matches_max_pooling() {
        let v: Vec<f32> = (0..2 * 5 * 5)
            .map(|i| ((i * 37) % 23) as f32 - 11.0)
            .collect();
        let x = t(&v, [2, 1, 5, 5]);
        let plain = max_pool2x2(x.clone().narrow(0, 0, 1));
        let paired = {
            let _g = rescale_pairs();
            max_pool2x2(x)
        };
        let a = plain.into_data().to_vec::<f32>().unwrap();
        let b = paired.narrow(0, 0, 1).into_data().to_vec::<f32>().unwrap();
        assert_eq!(a, b);
    }
}
