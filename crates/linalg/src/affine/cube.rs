//! The affine half-step on `Autodiff<CubeBackend>` (cuda, wgpu): one CubeCL kernel forward,
//! two backward (plus the sum of their two gradients of `a`).
//!
//! * forward: one cube per sample walks its `(P + C)·H·W` values, copies the `P` passive
//!   channels, writes `y = x·exp(s) + t` for the others and reduces `Σ s` in shared memory,
//!   adding the constant term ([`super::ConstantLogDet`]) when there is one;
//! * backward of `y`: one elementwise kernel writes `∂x = gy` on the passive channels and
//!   `gy·exp(s)` on the others, `∂t = gy` and `∂a_s = gy·x·exp(s)·clamp·pre·(1 − tanh²)`;
//! * backward of `log_det`: one elementwise kernel writes `∂a_s = g[n]·clamp·pre·(1 − tanh²)`
//!   (and 0 for the shifts).
//!
//! `y` and `log_det` are two autodiff nodes because burn's custom ops have one output each;
//! autodiff adds their two gradients of `a`. The kernels read `x`, `a` and the incoming
//! gradients by their strides: `a` is a convolution's output (burn-cubecl's direct convolution
//! hands on a channels-last view) and `x` the block's input or a channel slice of it. Every tensor a
//! kernel writes is allocated contiguous (`crate::fasth::cube` says why), the gradients of `a`
//! in channels-last order ([`channels_last`] says why).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::TensorMetadata;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::{CubeCount, CubeDim, InputScalar};

use super::{AffineStep, AffineStepOutput, ConstantLogDet};
use crate::convert::{empty_like, primitive, tensor};
use crate::cube_util::{Ad, MAX_CUBES, UNITS, elementwise_cubes};
use crate::finish_stateful;
use kernels::{forward_kernel, grad_a_kernel, grad_log_det_kernel};

mod kernels {
    use crate::cube_util::{at, coordinates, cube_sum};
    use cubecl::prelude::*;

    /// `clamp·tanh(pre·a)` and `clamp·pre·(1 − tanh²(pre·a))`, its derivative.
    #[cube]
    fn soft_clamp<F: Float>(a: F, clamp: F, pre: F) -> (F, F) {
        let th = F::tanh(pre * a);
        (clamp * th, clamp * pre * (F::new(1.0) - th * th))
    }

    /// One cube per sample. With `constant`, `weight·Σ values` is added to each log-det.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_kernel<F: Float>(
        x: &Tensor<F>,           // [N, P + C, H, W]
        a: &Tensor<F>,           // [N, 2C, H, W]
        values: &Tensor<F>,      // [K] (any tensor when not `constant`)
        y: &mut Tensor<F>,       // [N, P + C, H, W], contiguous
        log_det: &mut Tensor<F>, // [N]
        clamp: InputScalar,
        pre: InputScalar,
        weight: InputScalar,
        #[comptime] constant: bool,
        #[comptime] units: usize,
        #[define(F)] _dtype: StorageType,
    ) {
        let n = CUBE_POS_X as usize;
        let channels = a.shape(1) / 2;
        let passive = x.shape(1) - channels;
        let width = x.shape(3);
        let hw = x.shape(2) * width;
        let per_sample = x.shape(1) * hw;
        let clamp = clamp.get::<F>();
        let pre = pre.get::<F>();
        let mut shared = SharedMemory::<F>::new(units);
        let mut sum = F::new(0.0);
        let mut i = UNIT_POS_X as usize;
        while i < per_sample {
            let c = i / hw;
            let p = i % hw;
            let (h, w) = (p / width, p % width);
            let xv = x[at::<F>(x, n, c, h, w)];
            if c < passive {
                y[n * per_sample + i] = xv;
            } else {
                let k = c - passive;
                let (s, _) = soft_clamp::<F>(a[at::<F>(a, n, k, h, w)], clamp, pre);
                let t = a[at::<F>(a, n, channels + k, h, w)];
                y[n * per_sample + i] = xv * F::exp(s) + t;
                sum += s;
            }
            i += CUBE_DIM_X as usize;
        }
        let total = cube_sum::<F>(&mut shared, sum);
        if UNIT_POS_X == 0 {
            let mut extra = F::new(0.0);
            if constant {
                for k in 0..values.shape(0) {
                    extra += values[k * values.stride(0)];
                }
                extra *= weight.get::<F>();
            }
            log_det[n] = total + extra;
        }
    }

    /// `∂x` and `∂a` from the gradient `gy` of `y`, elementwise over `x`'s values.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn grad_a_kernel<F: Float>(
        x: &Tensor<F>,      // [N, P + C, H, W]
        a: &Tensor<F>,      // [N, 2C, H, W]
        gy: &Tensor<F>,     // [N, P + C, H, W]
        dx: &mut Tensor<F>, // [N, P + C, H, W], contiguous
        da: &mut Tensor<F>, // [N, H, W, 2C], contiguous
        clamp: InputScalar,
        pre: InputScalar,
        #[define(F)] _dtype: StorageType,
    ) {
        let channels = a.shape(1) / 2;
        let passive = x.shape(1) - channels;
        let hw = x.shape(2) * x.shape(3);
        let total = x.shape(0) * x.shape(1) * hw;
        let clamp = clamp.get::<F>();
        let pre = pre.get::<F>();
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = ABSOLUTE_POS_X as usize;
        while i < total {
            let (n, c, h, w) = coordinates(i, x.shape(1), x.shape(2), x.shape(3));
            let g = gy[at::<F>(gy, n, c, h, w)];
            if c < passive {
                dx[i] = g;
            } else {
                let k = c - passive;
                let (s, ds_da) = soft_clamp::<F>(a[at::<F>(a, n, k, h, w)], clamp, pre);
                let e = F::exp(s);
                dx[i] = g * e;
                let base = (n * hw + i % hw) * 2 * channels + k;
                da[base] = g * x[at::<F>(x, n, c, h, w)] * e * ds_da;
                da[base + channels] = g;
            }
            i += step;
        }
    }

    /// `∂a` from the gradient `g` of `log_det = Σ s`, elementwise over the log-scales.
    #[cube(launch)]
    pub(super) fn grad_log_det_kernel<F: Float>(
        a: &Tensor<F>,      // [N, 2C, H, W]
        g: &Tensor<F>,      // [N]
        da: &mut Tensor<F>, // [N, H, W, 2C], contiguous
        clamp: InputScalar,
        pre: InputScalar,
        #[define(F)] _dtype: StorageType,
    ) {
        let channels = a.shape(1) / 2;
        let hw = a.shape(2) * a.shape(3);
        let total = a.shape(0) * channels * hw;
        let clamp = clamp.get::<F>();
        let pre = pre.get::<F>();
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = ABSOLUTE_POS_X as usize;
        while i < total {
            let (n, c, h, w) = coordinates(i, channels, a.shape(2), a.shape(3));
            let (_, ds_da) = soft_clamp::<F>(a[at::<F>(a, n, c, h, w)], clamp, pre);
            let base = (n * hw + i % hw) * 2 * channels + c;
            da[base] = g[n * g.stride(0)] * ds_da;
            da[base + channels] = F::new(0.0);
            i += step;
        }
    }
}

/// An uninitialised `[N, C, H, W]` tensor on `like`'s device, stored contiguous in
/// `[N, H, W, C]` order. The gradient of `a` is one: `a` is a convolution's output, and
/// burn-cubecl's convolution gradients permute their incoming gradient to channels-last and
/// copy it unless its channels are already its innermost dimension (cubek-convolution's
/// `has_valid_layout`), once for the data gradient and once for the weight gradient.
fn channels_last<R: CubeRuntime>(like: &CubeTensor<R>, [n, c, h, w]: [usize; 4]) -> CubeTensor<R> {
    burn_cubecl::ops::permute(empty_like(like, &[n, h, w, c]), &[0, 3, 1, 2])
}

#[derive(Debug, Clone)]
struct Saved<R: CubeRuntime> {
    x: CubeTensor<R>,
    a: CubeTensor<R>,
    clamp: f64,
    pre: f64,
}

#[derive(Debug)]
struct AffineY;

#[derive(Debug)]
struct AffineLogDet;

impl<R, F, I, BT> Backward<CubeBackend<R, F, I, BT>, 2> for AffineY
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type State = Saved<R>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
        let [node_x, node_a] = ops.parents;
        let gy = grads.consume::<B<R, F, I, BT>>(&ops.node);
        let Saved { x, a, clamp, pre } = ops.state;
        let [n, c, h, w] = x.shape().dims::<4>();
        let a_channels = a.shape().dims::<4>()[1];
        let (client, dtype) = (x.client.clone(), x.dtype);
        let dx = empty_like(&x, &[n, c, h, w]);
        let da = channels_last(&x, [n, a_channels, h, w]);
        grad_a_kernel::launch::<R>(
            &client,
            elementwise_cubes(n * c * h * w),
            CubeDim::new_1d(UNITS as u32),
            x.into_tensor_arg(),
            a.into_tensor_arg(),
            gy.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            da.clone().into_tensor_arg(),
            InputScalar::new(clamp, dtype),
            InputScalar::new(pre, dtype),
            dtype.into(),
        );
        if let Some(node) = node_x {
            grads.register::<B<R, F, I, BT>>(node.id, dx);
        }
        if let Some(node) = node_a {
            grads.register::<B<R, F, I, BT>>(node.id, da);
        }
    }
}

impl<R, F, I, BT> Backward<CubeBackend<R, F, I, BT>, 1> for AffineLogDet
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type State = Saved<R>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
        let [node_a] = ops.parents;
        let g = grads.consume::<B<R, F, I, BT>>(&ops.node);
        let Some(node) = node_a else { return };
        let Saved { a, clamp, pre, .. } = ops.state;
        let [n, c2, h, w] = a.shape().dims::<4>();
        let (client, dtype) = (a.client.clone(), a.dtype);
        let da = channels_last(&a, [n, c2, h, w]);
        grad_log_det_kernel::launch::<R>(
            &client,
            elementwise_cubes(n * (c2 / 2) * h * w),
            CubeDim::new_1d(UNITS as u32),
            a.into_tensor_arg(),
            g.into_tensor_arg(),
            da.clone().into_tensor_arg(),
            InputScalar::new(clamp, dtype),
            InputScalar::new(pre, dtype),
            dtype.into(),
        );
        grads.register::<B<R, F, I, BT>>(node.id, da);
    }
}

/// An affine half-step on `Autodiff<CubeBackend>`: the kernels above, with their backward
/// passes. Registered by xtask for cuda and wgpu (`cfx_flows::blocks`).
pub fn affine_train_cube<R, F, I, BT, C>(
    step: AffineStep<Ad<R, F, I, BT, C>>,
) -> AffineStepOutput<Ad<R, F, I, BT, C>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
    C: CheckpointStrategy,
{
    let [n, c, h, w] = step.checked_dims("affine kernels");
    assert!(
        n <= MAX_CUBES,
        "affine kernels: {n} samples, at most {MAX_CUBES} (one cube each)"
    );
    let xp = primitive(step.x);
    let ap = primitive(step.a);
    let (x, a) = (xp.primitive, ap.primitive);
    let (client, dtype) = (x.client.clone(), x.dtype);
    let y = empty_like(&x, &[n, c, h, w]);
    let log_det = empty_like(&x, &[n]);
    let (values, weight) = match step.constant {
        Some(ConstantLogDet { values, weight }) => (Some(primitive(values).primitive), weight),
        None => (None, 0.0),
    };
    forward_kernel::launch::<R>(
        &client,
        CubeCount::Static(n as u32, 1, 1),
        CubeDim::new_1d(UNITS as u32),
        x.clone().into_tensor_arg(),
        a.clone().into_tensor_arg(),
        // Read only when there is a constant term: `x` stands in for it otherwise.
        values.as_ref().unwrap_or(&x).clone().into_tensor_arg(),
        y.clone().into_tensor_arg(),
        log_det.clone().into_tensor_arg(),
        InputScalar::new(step.clamp, dtype),
        InputScalar::new(step.pre, dtype),
        InputScalar::new(weight, dtype),
        values.is_some(),
        UNITS,
        dtype.into(),
    );
    let saved = Saved {
        x,
        a,
        clamp: step.clamp,
        pre: step.pre,
    };
    let y = finish_stateful(
        AffineY
            .prepare::<C>([xp.node, ap.node.clone()])
            .compute_bound()
            .stateful(),
        saved.clone(),
        y,
    );
    let log_det = finish_stateful(
        AffineLogDet
            .prepare::<C>([ap.node])
            .compute_bound()
            .stateful(),
        saved,
        log_det,
    );
    AffineStepOutput {
        y: tensor(y),
        log_det: tensor(log_det),
    }
}
