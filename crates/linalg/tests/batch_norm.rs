//! The batch-norm CubeCL kernels against batch norm written out with tensor ops on the CPU:
//! output, running statistics and the gradients of x, γ and β.
//! `cargo test -p cfx-linalg --features wgpu --test batch_norm` (llvmpipe will do) or
//! `--features cuda`.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn_flex::Flex;
use cfx_linalg::batch_norm::{BatchNormStep, BatchNormStepOutput, batch_norm_train_cube};

mod common;

use common::{Gpu, max_error, random_values};

const EPSILON: f64 = 1e-4;
const MOMENTUM: f64 = 0.3;

fn data<const D: usize>(shape: [usize; D], seed: u64, scale: f32, shift: f32) -> TensorData {
    let n = shape.iter().product();
    let v = random_values(n, seed)
        .iter()
        .map(|v| v * scale + shift)
        .collect::<Vec<_>>();
    TensorData::new(v, shape)
}

/// The definition: batch statistics over N, H and W, biased variance, burn's running update
/// with the unbiased variance (PyTorch's), burn's ReLU if asked.
fn by_definition<B: Backend>(step: BatchNormStep<B>) -> BatchNormStepOutput<B> {
    let c = step.gamma.dims()[0];
    let mean = step.x.clone().mean_dim(0).mean_dim(2).mean_dim(3);
    let centred = step.x - mean.clone();
    let var = (centred.clone() * centred.clone())
        .mean_dim(0)
        .mean_dim(2)
        .mean_dim(3);
    let x_hat = centred / var.clone().add_scalar(step.epsilon).sqrt();
    let y = x_hat * step.gamma.reshape([1, c, 1, 1]) + step.beta.reshape([1, c, 1, 1]);
    let y = if step.relu {
        burn::tensor::activation::relu(y)
    } else {
        y
    };
    let m = step.momentum;
    let [n, _, h, w] = y.dims();
    let update = |old: Tensor<B, 1>, batch: Tensor<B, 4>| {
        old.mul_scalar(1.0 - m) + batch.reshape([c]).detach().mul_scalar(m)
    };
    let var = var.mul_scalar((n * h * w) as f64 / (n * h * w - 1) as f64);
    BatchNormStepOutput {
        y,
        running_mean: update(step.running_mean, mean),
        running_var: update(step.running_var, var),
    }
}

/// Output, ∂x, ∂γ, ∂β, new running mean and variance, under the loss `Σ y·weights`.
/// With `channels_last`, x is an `[N, H, W, C]` tensor seen as `[N, C, H, W]` (the layout
/// burn-cubecl's direct convolution hands on), and ∂x is read in that layout; with
/// `weights_channels_last` the loss weights (the gradient reaching y) are too.
fn run<B: AutodiffBackend>(
    shape: [usize; 4],
    (channels_last, weights_channels_last): (bool, bool),
    relu: bool,
    f: fn(BatchNormStep<B>) -> BatchNormStepOutput<B>,
) -> [Vec<f32>; 6] {
    let dev = Default::default();
    let [n, c, h, w] = shape;
    let stored = |last: bool| if last { [n, h, w, c] } else { shape };
    let view = |t: Tensor<B, 4>, last: bool| {
        if last { t.permute([0, 3, 1, 2]) } else { t }
    };
    let leaf =
        Tensor::<B, 4>::from_data(data(stored(channels_last), 1, 2.0, 0.7), &dev).require_grad();
    let x = view(leaf.clone(), channels_last);
    let gamma = Tensor::<B, 1>::from_data(data([c], 2, 1.0, 1.0), &dev).require_grad();
    let beta = Tensor::<B, 1>::from_data(data([c], 3, 0.5, 0.0), &dev).require_grad();
    let weights = view(
        Tensor::<B, 4>::from_data(data(stored(weights_channels_last), 4, 1.0, 0.0), &dev),
        weights_channels_last,
    );
    let step = BatchNormStep {
        x: x.clone(),
        gamma: gamma.clone(),
        beta: beta.clone(),
        running_mean: Tensor::from_data(data([c], 5, 0.1, 0.0), &dev),
        running_var: Tensor::from_data(data([c], 6, 0.1, 1.0), &dev),
        epsilon: EPSILON,
        momentum: MOMENTUM,
        relu,
    };
    let out = f(step);
    let g = (out.y.clone() * weights).sum().backward();
    let read = |t: Tensor<B::InnerBackend, 4>| t.into_data().to_vec::<f32>().unwrap();
    let read1 = |t: Tensor<B::InnerBackend, 1>| t.into_data().to_vec::<f32>().unwrap();
    [
        read(out.y.inner()),
        read(leaf.grad(&g).unwrap()),
        read1(gamma.grad(&g).unwrap()),
        read1(beta.grad(&g).unwrap()),
        read1(out.running_mean.inner()),
        read1(out.running_var.inner()),
    ]
}

/// Shapes: tiny, a channel of two values, more values per channel than units, the IB-INN's
/// first-stage and second-stage subnets at batch 128, and a single channel; each stored
/// contiguous and channels-last, with and without a ReLU after it.
#[test]
fn kernels_match_the_definition() {
    let mut failures = vec![];
    for shape in [
        [4, 3, 5, 2],
        [2, 5, 1, 1],
        [3, 2, 17, 19],
        [128, 32, 14, 14],
        [128, 64, 7, 7],
        [7, 1, 3, 3],
    ] {
        for (layouts, relu) in [
            ((false, false), false),
            ((true, true), false),
            ((true, false), false),
            ((false, true), false),
            ((false, false), true),
            ((true, true), true),
            ((true, false), true),
        ] {
            let gpu = run::<Autodiff<Gpu>>(shape, layouts, relu, batch_norm_train_cube);
            let cpu = run::<Autodiff<Flex>>(shape, layouts, relu, by_definition);
            let names = ["y", "dx", "dgamma", "dbeta", "running mean", "running var"];
            for (name, (a, b)) in names.iter().zip(gpu.iter().zip(&cpu)) {
                let (err, scale) = max_error(a, b);
                if err > 1e-4 * scale {
                    failures.push(format!(
                        "{shape:?} channels-last (x, dy) {layouts:?} relu {relu} {name}: max \
                         error {err} (scale {scale})"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The output and ∂x take x's layout: channels-last from a convolution stays channels-last for
/// the next one, which would otherwise copy it (docs/results.md, "Batch norm in its input's
/// layout").
#[test]
fn output_and_input_gradient_keep_the_input_layout() {
    let dev = Default::default();
    let [n, c, h, w] = [3, 4, 5, 6];
    for channels_last in [false, true] {
        let stored = if channels_last {
            [n, h, w, c]
        } else {
            [n, c, h, w]
        };
        let leaf =
            Tensor::<Autodiff<Gpu>, 4>::from_data(data(stored, 1, 1.0, 0.0), &dev).require_grad();
        let x = if channels_last {
            leaf.clone().permute([0, 3, 1, 2])
        } else {
            leaf.clone()
        };
        let out = batch_norm_train_cube(BatchNormStep {
            x,
            gamma: Tensor::ones([c], &dev),
            beta: Tensor::zeros([c], &dev),
            running_mean: Tensor::zeros([c], &dev),
            running_var: Tensor::ones([c], &dev),
            epsilon: EPSILON,
            momentum: MOMENTUM,
            relu: false,
        });
        let want = if channels_last {
            [h * w * c, 1, w * c, c]
        } else {
            [c * h * w, h * w, w, 1]
        };
        let y = out.y.clone().inner().into_primitive().tensor();
        assert_eq!(
            y.meta.strides()[..],
            want,
            "y, channels-last {channels_last}"
        );
        // ∂x in x's layout is, after permute's backward, contiguous in the leaf's.
        let grads = out.y.sum().backward();
        let dx = leaf.grad(&grads).unwrap().into_primitive().tensor();
        let want_leaf = [
            stored[1] * stored[2] * stored[3],
            stored[2] * stored[3],
            stored[3],
            1,
        ];
        assert_eq!(
            dx.meta.strides()[..],
            want_leaf,
            "dx, channels-last {channels_last}"
        );
    }
}
