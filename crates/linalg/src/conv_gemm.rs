//! 2-d convolution on `CubeBackend` (cuda, wgpu) through burn-cubecl's implicit-GEMM kernels,
//! forward and both backward passes.
//!
//! Why: without burn's `autotune` feature, burn-cubecl computes every convolution with its
//! direct kernel, and its direct *weight gradient* (one reduction over N·H·W per weight) was
//! half of the IB-INN's CUDA backward pass (docs/results.md, "Where the CUDA step time goes").
//! burn-cubecl has tensor-core implicit-GEMM versions of all three, but burn's `ModuleOps`
//! always pass the default strategy, and autotune spends minutes compiling candidates before
//! the first step. This module calls the implicit-GEMM kernels directly; on `Autodiff` it is an
//! op of its own whose backward pass uses them too.
//!
//! Implicit GEMM needs tensor cores (CMMA) and supports only some shapes (no groups; the data
//! gradient only at stride 1). Wherever burn-cubecl refuses, the op falls back to the direct
//! kernel, i.e. to exactly what burn's `conv2d` does, and says so once on stderr. On CUDA the
//! tensor cores round f32 through TF32, like burn's matmul there (~1e-3 relative), which is
//! also PyTorch's default for convolutions.
//!
//! `cfx_flows::nn` dispatches to these functions when the convolution strategy is `gemm` and
//! the process registered them for its backend type (xtask does, for cuda and wgpu without
//! fusion).

use std::sync::Once;

use crate::cube_util::Ad;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::ops::{ConvOptions, FloatTensorOps};
use burn_cubecl::kernel::conv::{
    ConvStrategy, conv_data_backward, conv_forward, conv_weight_backward,
};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use crate::convert::{primitive, tensor};

static FORWARD_FALLBACK: Once = Once::new();
static DATA_FALLBACK: Once = Once::new();
static WEIGHT_FALLBACK: Once = Once::new();

/// `run(ImplicitGemm)`, or `run(Direct)` (said once per `once`) where burn-cubecl refuses the
/// first.
fn gemm_or_direct<T, E: std::fmt::Debug>(
    once: &Once,
    what: &str,
    run: impl Fn(ConvStrategy) -> Result<T, E>,
) -> T {
    run(ConvStrategy::ImplicitGemm).unwrap_or_else(|e| {
        once.call_once(|| {
            eprintln!(
                "cfx: implicit-GEMM convolution ({what}) unavailable on this device or shape \
                 ({e:?}); using burn-cubecl's direct kernel"
            )
        });
        direct(what, &run)
    })
}

/// `run(Direct)`: what burn's own `conv2d` runs, so it takes every shape that reaches here.
fn direct<T, E: std::fmt::Debug>(what: &str, run: impl Fn(ConvStrategy) -> Result<T, E>) -> T {
    run(ConvStrategy::Direct).unwrap_or_else(|e| {
        panic!("burn-cubecl's direct {what} refused a shape burn's conv2d takes: {e:?}")
    })
}

/// The input-channel alignment at which burn-cubecl's implicit-GEMM weight gradient can be
/// trusted.
///
/// Why: on an H200 (CUDA, 2026-12-04, docs/results.md "The implicit-GEMM convolution under
/// CUDA") burn-cubecl 0.21's implicit-GEMM weight gradient was wrong by the gradient's own size
/// for the IB-INN's 3×3 convolutions with two input channels (2→32 and 2→64, both in the test
/// and in `bench conv`), and right within TF32 rounding for 8, 32 and 64 input channels; the
/// forward and the input gradient were right at every shape. The cause inside cubek was not
/// found, so the rule is the measured one, stated as channel alignment.
const EXACT_CHANNELS: usize = 8;

/// How the weight gradient is computed where the input channels are not a multiple of
/// [`EXACT_CHANNELS`] (the IB-INN's first subnet convolutions, 2→32 and 2→64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NarrowWeightGrad {
    /// The input zero-padded to the next multiple of [`EXACT_CHANNELS`] channels (written
    /// channels-last, the layout the GEMM reads without a copy), the implicit-GEMM weight
    /// gradient of the padded weight shape, and its first `c_in` input channels. The padded
    /// channels are zero, so the kept entries are the same sums. Why: the direct kernel took
    /// 2.7 ms for forward and backward of the 2→32 convolution on the H200 against 2.1 ms for
    /// the sixteen times larger 32→32 through the GEMM, and the IB-INN has 25 such
    /// convolutions per step.
    #[default]
    Padded,
    /// burn-cubecl's direct kernel, what burn's own `conv2d` backward does.
    Direct,
}

fn forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    w: CubeTensor<R>,
    b: Option<CubeTensor<R>>,
    o: ConvOptions<2>,
) -> CubeTensor<R> {
    gemm_or_direct(&FORWARD_FALLBACK, "forward", |s| {
        conv_forward::<R, 2>(x.clone(), w.clone(), b.clone(), o.clone(), s)
    })
}

/// `conv2d(x, w, b)` on the plain `CubeBackend` (inference: ECINN, metrics).
pub fn conv2d_gemm<R, F, I, BT>(
    x: Tensor<CubeBackend<R, F, I, BT>, 4>,
    w: Tensor<CubeBackend<R, F, I, BT>, 4>,
    b: Option<Tensor<CubeBackend<R, F, I, BT>, 1>>,
    options: ConvOptions<2>,
) -> Tensor<CubeBackend<R, F, I, BT>, 4>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    tensor(forward(
        primitive(x),
        primitive(w),
        b.map(primitive),
        options,
    ))
}

#[derive(Debug)]
struct ConvGemm;

#[derive(Debug, Clone)]
struct Saved<R: CubeRuntime> {
    x: CubeTensor<R>,
    w: CubeTensor<R>,
    options: ConvOptions<2>,
    narrow: NarrowWeightGrad,
}

impl<R, F, I, BT> Backward<CubeBackend<R, F, I, BT>, 2> for ConvGemm
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type State = Saved<R>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<CubeBackend<R, F, I, BT>>(&ops.node);
        register_conv_grads::<R, F, I, BT>(
            ops.state,
            grad,
            node_x.map(|n| n.id),
            node_w.map(|n| n.id),
            grads,
        );
    }
}

/// [`ConvGemm`] with a bias, added by the convolution kernel.
#[derive(Debug)]
struct ConvGemmBias;

impl<R, F, I, BT> Backward<CubeBackend<R, F, I, BT>, 3> for ConvGemmBias
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type State = Saved<R>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<B<R, F, I, BT>>(&ops.node);
        if let Some(node) = node_b {
            grads.register::<B<R, F, I, BT>>(node.id, bias_grad::<R, F, I, BT>(grad.clone()));
        }
        register_conv_grads::<R, F, I, BT>(
            ops.state,
            grad,
            node_x.map(|n| n.id),
            node_w.map(|n| n.id),
            grads,
        );
    }
}

/// The bias gradient, `Σ_{n,h,w} grad` per channel. The convolution kernels hand on their
/// output, and so receive its gradient, channels-last; permuted to `[N, H, W, C]` the gradient
/// is then contiguous and its reshape to `[N·H·W, C]` a view: one reduction, where autodiff
/// through a broadcast add of the bias took three (one per summed axis).
fn bias_grad<R, F, I, BT>(grad: CubeTensor<R>) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let [n, c, h, w] = grad.shape().dims::<4>();
    let g = B::<R, F, I, BT>::float_permute(grad, &[0, 2, 3, 1]);
    let g = B::<R, F, I, BT>::float_reshape(g, Shape::new([n * h * w, c]));
    let g = B::<R, F, I, BT>::float_sum_dim(g, 0);
    B::<R, F, I, BT>::float_reshape(g, Shape::new([c]))
}

/// Registers the input and weight gradients of a convolution whose output gradient is `grad`.
fn register_conv_grads<R, F, I, BT>(
    saved: Saved<R>,
    grad: CubeTensor<R>,
    node_x: Option<NodeId>,
    node_w: Option<NodeId>,
    grads: &mut Gradients,
) where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let Saved {
        x,
        w,
        options,
        narrow,
    } = saved;
    if let Some(id) = node_w {
        let gw = weight_grad::<R, F, I, BT>(&x, &grad, w.shape(), &options, narrow);
        grads.register::<B<R, F, I, BT>>(id, gw);
    }
    if let Some(id) = node_x {
        let gx = gemm_or_direct(&DATA_FALLBACK, "input gradient", |s| {
            conv_data_backward::<R, 2>(grad.clone(), w.clone(), x.shape(), options.clone(), s)
        });
        grads.register::<B<R, F, I, BT>>(id, gx);
    }
}

/// The gradient of the weight of shape `w_shape` (`[c_out, c_in, kh, kw]`).
fn weight_grad<R, F, I, BT>(
    x: &CubeTensor<R>,
    grad: &CubeTensor<R>,
    w_shape: Shape,
    options: &ConvOptions<2>,
    narrow: NarrowWeightGrad,
) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let run = |x: CubeTensor<R>, shape: Shape| {
        move |s| {
            conv_weight_backward::<R, 2>(x.clone(), grad.clone(), shape.clone(), options.clone(), s)
        }
    };
    let [c_out, c_in, kh, kw] = w_shape.dims::<4>();
    if c_in.is_multiple_of(EXACT_CHANNELS) {
        return gemm_or_direct(&WEIGHT_FALLBACK, "weight gradient", run(x.clone(), w_shape));
    }
    match narrow {
        NarrowWeightGrad::Direct => direct("weight gradient", run(x.clone(), w_shape)),
        NarrowWeightGrad::Padded => {
            let wide = c_in.next_multiple_of(EXACT_CHANNELS);
            let xp = pad_channels::<R, F, I, BT>(x.clone(), wide);
            let shape = Shape::new([c_out, wide, kh, kw]);
            let gw = gemm_or_direct(&WEIGHT_FALLBACK, "weight gradient", run(xp, shape));
            primitive(tensor::<CubeBackend<R, F, I, BT>, 4>(gw).narrow(1, 0, c_in))
        }
    }
}

/// `x` (`[N, C, H, W]`, any layout) with zero channels appended up to `wide`, stored
/// channels-last: one fill and one copy.
fn pad_channels<R, F, I, BT>(x: CubeTensor<R>, wide: usize) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let x = tensor::<CubeBackend<R, F, I, BT>, 4>(x);
    let [n, c, h, w] = x.dims();
    let padded = Tensor::zeros([n, h, w, wide], &x.device())
        .slice_assign([0..n, 0..h, 0..w, 0..c], x.permute([0, 2, 3, 1]));
    primitive(padded.permute([0, 3, 1, 2]))
}

/// `conv2d(x, w, b)` on `Autodiff<CubeBackend>` (training), with the implicit-GEMM backward.
/// The bias is added by the convolution kernel, and its gradient is one reduction
/// ([`bias_grad`]). Narrow weight gradients as [`NarrowWeightGrad::default`].
#[allow(clippy::type_complexity)] // the signature must be `cfx_flows::nn::Conv2dFn`'s
pub fn conv2d_gemm_autodiff<R, F, I, BT, C>(
    x: Tensor<Ad<R, F, I, BT, C>, 4>,
    w: Tensor<Ad<R, F, I, BT, C>, 4>,
    b: Option<Tensor<Ad<R, F, I, BT, C>, 1>>,
    options: ConvOptions<2>,
) -> Tensor<Ad<R, F, I, BT, C>, 4>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
    C: CheckpointStrategy,
{
    conv2d_gemm_autodiff_with(x, w, b, options, NarrowWeightGrad::default())
}

/// [`conv2d_gemm_autodiff`] with the narrow weight gradients computed as `narrow` says.
#[allow(clippy::type_complexity)]
pub fn conv2d_gemm_autodiff_with<R, F, I, BT, C>(
    x: Tensor<Ad<R, F, I, BT, C>, 4>,
    w: Tensor<Ad<R, F, I, BT, C>, 4>,
    b: Option<Tensor<Ad<R, F, I, BT, C>, 1>>,
    options: ConvOptions<2>,
    narrow: NarrowWeightGrad,
) -> Tensor<Ad<R, F, I, BT, C>, 4>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
    C: CheckpointStrategy,
{
    let xp = primitive(x);
    let wp = primitive(w);
    let saved = |x: &CubeTensor<R>, w: &CubeTensor<R>| Saved {
        x: x.clone(),
        w: w.clone(),
        options: options.clone(),
        narrow,
    };
    let out = match b {
        None => match ConvGemm
            .prepare::<C>([xp.node, wp.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = forward(
                    xp.primitive.clone(),
                    wp.primitive.clone(),
                    None,
                    options.clone(),
                );
                prep.finish(saved(&xp.primitive, &wp.primitive), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(forward(xp.primitive, wp.primitive, None, options))
            }
        },
        Some(b) => {
            let bp = primitive(b);
            let out = forward(
                xp.primitive.clone(),
                wp.primitive.clone(),
                Some(bp.primitive),
                options.clone(),
            );
            match ConvGemmBias
                .prepare::<C>([xp.node, wp.node, bp.node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(saved(&xp.primitive, &wp.primitive), out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            }
        }
    };
    tensor(out)
}
