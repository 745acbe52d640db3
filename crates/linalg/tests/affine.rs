//! The affine half-step's CubeCL kernels against the step written out with tensor ops on the
//! CPU: `y`, `log_det` and the gradients of `x` and `a`.
//! `cargo test -p cfx-linalg --features wgpu --test affine` (llvmpipe will do) or
//! `--features cuda`.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn_flex::Flex;
use cfx_linalg::affine::{AffineStep, AffineStepOutput, ConstantLogDet, affine_train_cube};

mod common;

use common::{Gpu, max_error, random_values};

const CLAMP: f64 = 0.7;
const PRE: f64 = 0.1;

fn data<const D: usize>(shape: [usize; D], seed: u64, scale: f32) -> TensorData {
    let n = shape.iter().product();
    let v = random_values(n, seed)
        .iter()
        .map(|v| v * scale)
        .collect::<Vec<_>>();
    TensorData::new(v, shape)
}

/// The definition, as `cfx_flows`'s couplings write it.
fn by_definition<B: Backend>(step: AffineStep<B>) -> AffineStepOutput<B> {
    let [n, all, _, _] = step.x.dims();
    let p = step.passive;
    let c = all - p;
    let s = step.a.clone().narrow(1, 0, c).mul_scalar(step.pre);
    let s = s.tanh().mul_scalar(step.clamp);
    let t = step.a.narrow(1, c, c);
    let log_det = s.clone().reshape([n as i32, -1]).sum_dim(1).reshape([n]);
    let log_det = match step.constant {
        Some(k) => log_det + k.values.sum().mul_scalar(k.weight),
        None => log_det,
    };
    let y = step.x.clone().narrow(1, p, c) * s.exp() + t;
    AffineStepOutput {
        y: match p {
            0 => y,
            _ => Tensor::cat(vec![step.x.narrow(1, 0, p), y], 1),
        },
        log_det,
    }
}

#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Channels of x in front of the coupled ones that pass through.
    passive: usize,
    /// x is the second half of the channels of a tensor twice its size.
    x_slice: bool,
    /// a is stored `[N, H, W, 2C]` and seen as `[N, 2C, H, W]`.
    a_channels_last: bool,
    /// The loss reads `y` and `log_det` (or only `y`, or only `log_det`).
    uses: (bool, bool),
    /// A constant log-det term (a fixed act-norm's, five scales over the H·W pixels).
    constant: bool,
}

/// y, log_det, ∂x, ∂a under the loss `Σ y·wy + Σ log_det·wl` (the terms `uses` keeps).
fn run<B: AutodiffBackend>(
    shape: [usize; 4],
    layout: Layout,
    f: fn(AffineStep<B>) -> AffineStepOutput<B>,
) -> [Vec<f32>; 4] {
    let dev = Default::default();
    let [n, c, h, w] = shape;
    let all = layout.passive + c;
    let x_leaf = if layout.x_slice {
        Tensor::<B, 4>::from_data(data([n, 2 * all, h, w], 1, 2.0), &dev).require_grad()
    } else {
        Tensor::<B, 4>::from_data(data([n, all, h, w], 1, 2.0), &dev).require_grad()
    };
    let x = if layout.x_slice {
        x_leaf.clone().narrow(1, all, all)
    } else {
        x_leaf.clone()
    };
    // Pre-activations up to ±30, so that tanh saturates for some (pre·a up to ±3).
    let a_leaf = if layout.a_channels_last {
        Tensor::<B, 4>::from_data(data([n, h, w, 2 * c], 2, 30.0), &dev).require_grad()
    } else {
        Tensor::<B, 4>::from_data(data([n, 2 * c, h, w], 2, 30.0), &dev).require_grad()
    };
    let a = if layout.a_channels_last {
        a_leaf.clone().permute([0, 3, 1, 2])
    } else {
        a_leaf.clone()
    };
    let constant = layout.constant.then(|| ConstantLogDet {
        values: Tensor::<B, 1>::from_data(data([5], 5, 0.5), &dev),
        weight: (h * w) as f64,
    });
    let out = f(AffineStep {
        x,
        passive: layout.passive,
        a,
        clamp: CLAMP,
        pre: PRE,
        constant,
    });
    let wy = Tensor::<B, 4>::from_data(data([n, all, h, w], 3, 1.0), &dev);
    let wl = Tensor::<B, 1>::from_data(data([n], 4, 1.0), &dev);
    let loss = match layout.uses {
        (true, true) => (out.y.clone() * wy).sum() + (out.log_det.clone() * wl).sum(),
        (true, false) => (out.y.clone() * wy).sum(),
        _ => (out.log_det.clone() * wl).sum(),
    };
    let g = loss.backward();
    let read = |t: Tensor<B::InnerBackend, 4>| t.into_data().to_vec::<f32>().unwrap();
    [
        read(out.y.inner()),
        out.log_det.inner().into_data().to_vec::<f32>().unwrap(),
        read(
            x_leaf
                .grad(&g)
                .unwrap_or_else(|| x_leaf.inner().zeros_like()),
        ),
        read(a_leaf.grad(&g).unwrap()),
    ]
}

/// Shapes: tiny, one value per channel, more values per sample than a cube has units, and the
/// IB-INN's two coupling shapes at batch 128; each with x contiguous or a channel slice, a
/// contiguous or channels-last, the loss reading both outputs or one, no passive channels
/// or as many as coupled ones (the all-in-one couplings) or one, and a constant log-det term
/// or none.
#[test]
fn kernels_match_the_definition() {
    let mut failures = vec![];
    for shape in [
        [2, 1, 3, 2],
        [5, 3, 1, 1],
        [3, 4, 13, 11],
        [128, 2, 14, 14],
        [128, 8, 7, 7],
    ] {
        let c = shape[1];
        for layout in [
            (0, false, false, (true, true)),
            (0, true, false, (true, true)),
            (0, false, true, (true, true)),
            (0, true, true, (true, true)),
            (0, false, true, (true, false)),
            (0, true, true, (false, true)),
            (c, false, false, (true, true)),
            (c, false, true, (true, true)),
            (c, true, true, (true, false)),
            (1, true, true, (true, true)),
            (1, false, true, (false, true)),
        ]
        .map(|(passive, x_slice, a_channels_last, uses)| {
            (passive, x_slice, a_channels_last, uses, false)
        })
        .into_iter()
        // With a constant term: the all-in-one couplings' case, and one that reads only log_det.
        .chain([
            (c, true, true, (true, true), true),
            (0, false, false, (false, true), true),
        ])
        .map(
            |(passive, x_slice, a_channels_last, uses, constant)| Layout {
                passive,
                x_slice,
                a_channels_last,
                uses,
                constant,
            },
        ) {
            let gpu = run::<Autodiff<Gpu>>(shape, layout, affine_train_cube);
            let cpu = run::<Autodiff<Flex>>(shape, layout, by_definition);
            for (name, (a, b)) in ["y", "log_det", "dx", "da"]
                .iter()
                .zip(gpu.iter().zip(&cpu))
            {
                let (err, scale) = max_error(a, b);
                if err > 1e-4 * scale {
                    failures.push(format!(
                        "{shape:?} {layout:?} {name}: max error {err} (scale {scale})"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The gradient of `a`, the sum of the two kernels' gradients, lies channels-last: burn-cubecl's
/// convolution gradients take it without a copy. (Also checks that autodiff's sum of the two
/// keeps their layout.)
#[test]
fn the_gradient_of_a_lies_channels_last() {
    let dev = Default::default();
    let [n, c, h, w] = [3, 2, 4, 5];
    let x = Tensor::<Autodiff<Gpu>, 4>::from_data(data([n, 2 * c, h, w], 1, 2.0), &dev);
    let a =
        Tensor::<Autodiff<Gpu>, 4>::from_data(data([n, 2 * c, h, w], 2, 30.0), &dev).require_grad();
    let out = affine_train_cube(AffineStep {
        x,
        passive: c,
        a: a.clone(),
        clamp: CLAMP,
        pre: PRE,
        constant: None,
    });
    let g = (out.y.sum() + out.log_det.sum()).backward();
    let da = a.grad(&g).unwrap().into_primitive().tensor();
    assert_eq!(da.meta.strides()[..], [h * w * 2 * c, 1, w * 2 * c, 2 * c]);
}
