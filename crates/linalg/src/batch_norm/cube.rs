//! Training batch norm on `CubeBackend` (cuda, wgpu) as four CubeCL kernels: two launches
//! forward, two backward.
//!
//! Why: written with tensor ops, even with the closed-form backward of
//! `cfx_flows::nn::fused_batch_norm`, a training batch norm is 19 launches forward (6 of them
//! the running-statistics update) and 14 backward, and the IB-INN has 100 of them: about a third
//! of a GPU training step's launches, which are what the step's time is made of
//! (docs/results.md, "Batch norm as CubeCL kernels").
//!
//! * forward: one cube per channel reduces the channel's `M = N·H·W` values twice (the mean,
//!   then `Σ(x − μ)²`: two passes, as stable as the tensor-op version) in shared memory and
//!   writes `μ`, `1/σ`, `γ/σ`, `β − μγ/σ` and the new running statistics; then one elementwise
//!   kernel writes `y = x·γ/σ + (β − μγ/σ)`;
//! * backward: one cube per channel reduces `Σdy` (= `∂β`) and `Σdy·x̂` (= `∂γ`), with
//!   `x̂ = (x − μ)/σ` recomputed from the saved input; then one elementwise kernel writes
//!   `∂x = γ/σ·(dy − Σdy/M − x̂·Σ(dy·x̂)/M)`.
//!
//! A ReLU after the batch norm (`BatchNormStep::relu`, every IB-INN subnet's) is applied by
//! the `y` kernel, and its gradient by both backward kernels, which recompute the
//! pre-activation's sign: four launches fewer than a separate ReLU.
//!
//! The variance is the biased one for both normalisation and running statistics, as burn's
//! `BatchNorm` (and `cfx_flows::nn::mode::batch_norm`) use. The kernels read `x` and `dy` by
//! their strides, whatever their layout; every tensor a kernel writes is allocated contiguous
//! (`crate::fasth::cube` says why).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::{CubeCount, CubeDim, InputScalar};

use super::{BatchNormStep, BatchNormStepOutput};
use crate::convert::{empty_like, primitive, tensor};
use crate::cube_util::{Ad, MAX_CUBES, UNITS, elementwise_cubes};
use crate::finish_stateful;
use kernels::{apply_kernel, grad_input_kernel, grad_sums_kernel, stats_kernel};

mod kernels {
    use crate::cube_util::cube_sum;
    use cubecl::prelude::*;

    /// Where value `i` (of the `N·H·W`) of channel `c` of the `[N, C, H, W]` tensor `t` is, by
    /// `t`'s strides: burn-cubecl's direct convolution hands on its output as a permuted view,
    /// which the kernels read where it lies instead of copying it first.
    #[cube]
    fn at<F: Float>(t: &Tensor<F>, i: usize, c: usize) -> usize {
        let w = t.shape(3);
        let hw = t.shape(2) * w;
        let p = i % hw;
        (i / hw) * t.stride(0) + c * t.stride(1) + (p / w) * t.stride(2) + (p % w) * t.stride(3)
    }

    /// Where value `i` of a contiguous `[N, C, H, W]` tensor of `t`'s shape is in `t`.
    #[cube]
    fn same_place<F: Float>(t: &Tensor<F>, i: usize) -> usize {
        let channels = t.shape(1);
        let hw = t.shape(2) * t.shape(3);
        let c = (i / hw) % channels;
        let n = i / (hw * channels);
        at::<F>(t, n * hw + i % hw, c)
    }

    /// The gradient `g` reaching the batch norm's output for input value `xv` of channel `c`:
    /// with a ReLU after it, zero where the pre-activation `x·γ/σ + (β − μγ/σ)` is ≤ 0, as
    /// burn's `relu_backward` does. It is the forward's expression; a compiler that contracts
    /// it to a fused multiply-add in one kernel and not the other could flip the gate only
    /// where the pre-activation is within a rounding of 0, where ReLU's gradient is a
    /// convention anyway.
    #[cube]
    fn gate<F: Float>(g: F, xv: F, stats: &Tensor<F>, c: usize, #[comptime] relu: bool) -> F {
        let mut out = g;
        if relu {
            let channels = stats.shape(1);
            if xv * stats[2 * channels + c] + stats[3 * channels + c] <= F::new(0.0) {
                out = F::new(0.0);
            }
        }
        out
    }

    /// One cube per channel.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stats_kernel<F: Float>(
        x: &Tensor<F>,            // [N, C, H, W]
        gamma: &Tensor<F>,        // [C]
        beta: &Tensor<F>,         // [C]
        running_mean: &Tensor<F>, // [C]
        running_var: &Tensor<F>,  // [C]
        stats: &mut Tensor<F>,    // [4, C]: μ, 1/σ, γ/σ, β − μγ/σ
        new_mean: &mut Tensor<F>, // [C]
        new_var: &mut Tensor<F>,  // [C]
        epsilon: InputScalar,
        momentum: InputScalar,
        #[comptime] units: usize,
        #[define(F)] _dtype: StorageType,
    ) {
        let c = CUBE_POS_X as usize;
        let channels = x.shape(1);
        let hw = x.shape(2) * x.shape(3);
        let m = x.shape(0) * hw;
        let step = CUBE_DIM_X as usize;
        let mut shared = SharedMemory::<F>::new(units);
        let count = F::cast_from(m as u32);
        let mut sum = F::new(0.0);
        let mut i = UNIT_POS_X as usize;
        while i < m {
            sum += x[at::<F>(x, i, c)];
            i += step;
        }
        let mean = cube_sum::<F>(&mut shared, sum) / count;
        let mut squares = F::new(0.0);
        let mut i = UNIT_POS_X as usize;
        while i < m {
            let d = x[at::<F>(x, i, c)] - mean;
            squares += d * d;
            i += step;
        }
        let var = cube_sum::<F>(&mut shared, squares) / count;
        if UNIT_POS_X == 0 {
            let inv_std = F::new(1.0) / F::sqrt(var + epsilon.get::<F>());
            let scale = gamma[c] * inv_std;
            stats[c] = mean;
            stats[channels + c] = inv_std;
            stats[2 * channels + c] = scale;
            stats[3 * channels + c] = beta[c] - mean * scale;
            let mo = momentum.get::<F>();
            new_mean[c] = (F::new(1.0) - mo) * running_mean[c] + mo * mean;
            // Unbiased, as `super::bessel` says why; `m = 1` leaves the variance 0 either way.
            let unbiased = var * count / F::max(count - F::new(1.0), F::new(1.0));
            new_var[c] = (F::new(1.0) - mo) * running_var[c] + mo * unbiased;
        }
    }

    /// `y = x·γ/σ + (β − μγ/σ)`, every unit striding over the elements.
    #[cube(launch)]
    pub(super) fn apply_kernel<F: Float>(
        x: &Tensor<F>,     // [N, C, H, W]
        stats: &Tensor<F>, // [4, C]
        y: &mut Tensor<F>, // [N, C, H, W], contiguous in x's layout
        #[comptime] relu: bool,
        #[comptime] channels_last: bool,
        #[define(F)] _dtype: StorageType,
    ) {
        let channels = x.shape(1);
        let hw = x.shape(2) * x.shape(3);
        let total = x.shape(0) * channels * hw;
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = ABSOLUTE_POS_X as usize;
        while i < total {
            // `i` runs over memory order: x and y are both contiguous in it.
            let (c, xv) = if channels_last {
                (i % channels, x[i])
            } else {
                ((i / hw) % channels, x[same_place::<F>(x, i)])
            };
            let z = xv * stats[2 * channels + c] + stats[3 * channels + c];
            if relu {
                y[i] = F::max(z, F::new(0.0));
            } else {
                y[i] = z;
            }
            i += step;
        }
    }

    /// One cube per channel: `∂β = Σdy`, `∂γ = Σdy·x̂`.
    #[cube(launch)]
    pub(super) fn grad_sums_kernel<F: Float>(
        x: &Tensor<F>,          // [N, C, H, W]
        dy: &Tensor<F>,         // [N, C, H, W]
        stats: &Tensor<F>,      // [4, C]
        dgamma: &mut Tensor<F>, // [C]
        dbeta: &mut Tensor<F>,  // [C]
        #[comptime] units: usize,
        #[comptime] relu: bool,
        #[define(F)] _dtype: StorageType,
    ) {
        let c = CUBE_POS_X as usize;
        let channels = x.shape(1);
        let hw = x.shape(2) * x.shape(3);
        let m = x.shape(0) * hw;
        let step = CUBE_DIM_X as usize;
        let mut shared = SharedMemory::<F>::new(units);
        let mean = stats[c];
        let inv_std = stats[channels + c];
        let mut sum_dy = F::new(0.0);
        let mut sum_dy_x = F::new(0.0);
        let mut i = UNIT_POS_X as usize;
        while i < m {
            let xv = x[at::<F>(x, i, c)];
            let g = gate::<F>(dy[at::<F>(dy, i, c)], xv, stats, c, relu);
            sum_dy += g;
            sum_dy_x += g * (xv - mean) * inv_std;
            i += step;
        }
        let total_dy = cube_sum::<F>(&mut shared, sum_dy);
        let total_dy_x = cube_sum::<F>(&mut shared, sum_dy_x);
        if UNIT_POS_X == 0 {
            dbeta[c] = total_dy;
            dgamma[c] = total_dy_x;
        }
    }

    /// `∂x = γ/σ·(dy − Σdy/M − x̂·Σ(dy·x̂)/M)`, every unit striding over the elements.
    #[cube(launch)]
    pub(super) fn grad_input_kernel<F: Float>(
        x: &Tensor<F>,      // [N, C, H, W]
        dy: &Tensor<F>,     // [N, C, H, W]
        stats: &Tensor<F>,  // [4, C]
        dgamma: &Tensor<F>, // [C]
        dbeta: &Tensor<F>,  // [C]
        dx: &mut Tensor<F>, // [N, C, H, W], contiguous in x's layout
        #[comptime] relu: bool,
        #[comptime] channels_last: bool,
        #[define(F)] _dtype: StorageType,
    ) {
        let channels = x.shape(1);
        let hw = x.shape(2) * x.shape(3);
        let total = x.shape(0) * channels * hw;
        let count = F::cast_from((x.shape(0) * hw) as u32);
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = ABSOLUTE_POS_X as usize;
        while i < total {
            // `i` runs over memory order: x and dx are both contiguous in it; dy may lie
            // in any layout.
            let (c, xv, dyv) = if channels_last {
                let c = i % channels;
                (c, x[i], dy[at::<F>(dy, i / channels, c)])
            } else {
                (
                    (i / hw) % channels,
                    x[same_place::<F>(x, i)],
                    dy[same_place::<F>(dy, i)],
                )
            };
            let x_hat = (xv - stats[c]) * stats[channels + c];
            let g = gate::<F>(dyv, xv, stats, c, relu);
            dx[i] = stats[2 * channels + c] * (g - dbeta[c] / count - x_hat * dgamma[c] / count);
            i += step;
        }
    }
}

/// Whether `x` (`[N, C, H, W]`) lies contiguous in `[N, H, W, C]` order, as burn-cubecl's
/// convolutions hand on their output (and not also contiguous as it stands, as with one
/// channel).
fn is_channels_last<R: CubeRuntime>(x: &CubeTensor<R>) -> bool {
    let [_, c, h, w] = x.shape().dims::<4>();
    !x.is_contiguous() && x.meta.strides()[..] == [h * w * c, 1, w * c, c]
}

/// An uninitialised contiguous tensor of `x`'s shape, laid out `[N, H, W, C]` when
/// `channels_last`. The output and input gradient take their input's layout, so that the
/// convolution after (or, backward, before) the batch norm finds the channels-last layout it
/// works in instead of copying into it: about three launches fewer per batch norm.
fn empty_in_layout<R: CubeRuntime>(x: &CubeTensor<R>, channels_last: bool) -> CubeTensor<R> {
    let [n, c, h, w] = x.shape().dims::<4>();
    if channels_last {
        burn_cubecl::ops::permute(empty_like(x, &[n, h, w, c]), &[0, 3, 1, 2])
    } else {
        empty_like(x, &[n, c, h, w])
    }
}

struct Forward<R: CubeRuntime> {
    y: CubeTensor<R>,
    stats: CubeTensor<R>,
    new_mean: CubeTensor<R>,
    new_var: CubeTensor<R>,
}

#[allow(clippy::too_many_arguments)]
fn forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    gamma: CubeTensor<R>,
    beta: CubeTensor<R>,
    running_mean: CubeTensor<R>,
    running_var: CubeTensor<R>,
    epsilon: f64,
    momentum: f64,
    relu: bool,
) -> Forward<R> {
    let [n, c, h, w] = x.shape().dims::<4>();
    // One cube per channel along a 1-D cube count, and a per-channel count the kernels take as
    // u32: say so instead of launching what the device would refuse or miscount.
    assert!(
        c <= MAX_CUBES,
        "batch norm kernels: {c} channels, at most {MAX_CUBES} (use CFX_BATCH_NORM=fused)"
    );
    assert!(
        n * h * w <= u32::MAX as usize,
        "batch norm kernels: {} values per channel, at most 2^32 − 1 (use CFX_BATCH_NORM=fused)",
        n * h * w
    );
    let (client, dtype) = (x.client.clone(), x.dtype);
    let stats = empty_like(&x, &[4, c]);
    let new_mean = empty_like(&x, &[c]);
    let new_var = empty_like(&x, &[c]);
    let channels_last = is_channels_last(&x);
    let y = empty_in_layout(&x, channels_last);
    stats_kernel::launch::<R>(
        &client,
        CubeCount::Static(c as u32, 1, 1),
        CubeDim::new_1d(UNITS as u32),
        x.clone().into_tensor_arg(),
        into_contiguous(gamma).into_tensor_arg(),
        into_contiguous(beta).into_tensor_arg(),
        into_contiguous(running_mean).into_tensor_arg(),
        into_contiguous(running_var).into_tensor_arg(),
        stats.clone().into_tensor_arg(),
        new_mean.clone().into_tensor_arg(),
        new_var.clone().into_tensor_arg(),
        InputScalar::new(epsilon, dtype),
        InputScalar::new(momentum, dtype),
        UNITS,
        dtype.into(),
    );
    apply_kernel::launch::<R>(
        &client,
        elementwise_cubes(n * c * h * w),
        CubeDim::new_1d(UNITS as u32),
        x.into_tensor_arg(),
        stats.clone().into_tensor_arg(),
        y.clone().into_tensor_arg(),
        relu,
        channels_last,
        dtype.into(),
    );
    Forward {
        y,
        stats,
        new_mean,
        new_var,
    }
}

#[derive(Debug)]
struct BatchNormKernels;

#[derive(Debug, Clone)]
struct Saved<R: CubeRuntime> {
    x: CubeTensor<R>,
    stats: CubeTensor<R>,
    relu: bool,
}

impl<R, F, I, BT> Backward<CubeBackend<R, F, I, BT>, 3> for BatchNormKernels
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type State = Saved<R>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B<R, F, I, BT>>(&ops.node);
        let Saved { x, stats, relu } = ops.state;
        let [n, c, h, w] = x.shape().dims::<4>();
        let (client, dtype) = (x.client.clone(), x.dtype);
        let dgamma = empty_like(&x, &[c]);
        let dbeta = empty_like(&x, &[c]);
        grad_sums_kernel::launch::<R>(
            &client,
            CubeCount::Static(c as u32, 1, 1),
            CubeDim::new_1d(UNITS as u32),
            x.clone().into_tensor_arg(),
            dy.clone().into_tensor_arg(),
            stats.clone().into_tensor_arg(),
            dgamma.clone().into_tensor_arg(),
            dbeta.clone().into_tensor_arg(),
            UNITS,
            relu,
            dtype.into(),
        );
        if let Some(node) = node_x {
            let channels_last = is_channels_last(&x);
            let dx = empty_in_layout(&x, channels_last);
            grad_input_kernel::launch::<R>(
                &client,
                elementwise_cubes(n * c * h * w),
                CubeDim::new_1d(UNITS as u32),
                x.into_tensor_arg(),
                dy.into_tensor_arg(),
                stats.into_tensor_arg(),
                dgamma.clone().into_tensor_arg(),
                dbeta.clone().into_tensor_arg(),
                dx.clone().into_tensor_arg(),
                relu,
                channels_last,
                dtype.into(),
            );
            grads.register::<B<R, F, I, BT>>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<B<R, F, I, BT>>(node.id, dgamma);
        }
        if let Some(node) = node_beta {
            grads.register::<B<R, F, I, BT>>(node.id, dbeta);
        }
    }
}

/// A training batch norm step on `Autodiff<CubeBackend>`: the kernels above, with their
/// backward pass. Registered by xtask for cuda and wgpu (`cfx_flows::nn`).
pub fn batch_norm_train_cube<R, F, I, BT, C>(
    step: BatchNormStep<Ad<R, F, I, BT, C>>,
) -> BatchNormStepOutput<Ad<R, F, I, BT, C>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
    C: CheckpointStrategy,
{
    let xp = primitive(step.x);
    let gp = primitive(step.gamma);
    let bp = primitive(step.beta);
    let nodes = [xp.node.clone(), gp.node.clone(), bp.node.clone()];
    let x = xp.primitive;
    let out = forward(
        x.clone(),
        gp.primitive,
        bp.primitive,
        primitive(step.running_mean.inner()),
        primitive(step.running_var.inner()),
        step.epsilon,
        step.momentum,
        step.relu,
    );
    let saved = Saved {
        x,
        stats: out.stats,
        relu: step.relu,
    };
    let y = finish_stateful(
        BatchNormKernels
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful(),
        saved,
        out.y,
    );
    BatchNormStepOutput {
        y: tensor(y),
        running_mean: Tensor::from_inner(tensor(out.new_mean)),
        running_var: Tensor::from_inner(tensor(out.new_var)),
    }
}
