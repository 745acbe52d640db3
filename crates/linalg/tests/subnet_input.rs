//! The subnet input's CubeCL kernels against its definition with tensor ops on the CPU: the
//! output, its channels-last layout, and the gradient of `x`.
//! `cargo test -p cfx-linalg --features wgpu --test subnet_input` (llvmpipe will do) or
//! `--features cuda`.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn_flex::Flex;
use cfx_linalg::subnet_input::{SubnetInput, subnet_input_cube};

mod common;

use common::{Gpu, data, max_error, strided_input};

/// The definition, as `cfx_flows`'s subnet computes it without a registered op.
fn by_definition<B: Backend>(input: SubnetInput<B>) -> Tensor<B, 4> {
    let x = input.x.narrow(1, 0, input.channels);
    if input.relu {
        burn::tensor::activation::relu(x)
    } else {
        x
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    channels: usize,
    relu: bool,
    /// x is the second half of the channels of a tensor twice its size.
    x_slice: bool,
    /// x is stored `[N, H, W, C]` and seen as `[N, C, H, W]`.
    x_channels_last: bool,
}

/// The output, and the gradient of the leaf x comes from under the loss `Σ y·wy + Σ x·wx`:
/// the second term is another use of x, as the affine half-step is in a coupling, so the
/// kernel's gradient has to be added to it, not replace it.
fn run<B: AutodiffBackend>(
    shape: [usize; 4],
    case: Case,
    f: fn(SubnetInput<B>) -> Tensor<B, 4>,
) -> [Vec<f32>; 2] {
    let dev = Default::default();
    let [n, c, h, w] = shape;
    let (leaf, x) = strided_input::<B>(shape, case.x_channels_last, case.x_slice, 1);
    let y = f(SubnetInput {
        x: x.clone(),
        channels: case.channels,
        relu: case.relu,
    });
    assert_eq!(y.dims(), [n, case.channels, h, w]);
    let wy = Tensor::<B, 4>::from_data(data([n, case.channels, h, w], 2), &dev);
    let wx = Tensor::<B, 4>::from_data(data([n, c, h, w], 3), &dev);
    let loss = (y.clone() * wy).sum() + (x * wx).sum();
    let g = loss.backward();
    let read = |t: Tensor<B::InnerBackend, 4>| t.into_data().to_vec::<f32>().unwrap();
    [read(y.inner()), read(leaf.grad(&g).unwrap())]
}

/// Shapes: tiny, one value per channel, more values than a cube has units, and the IB-INN's
/// two all-in-one coupling shapes at batch 128; the leading channels one, half or all; with
/// and without the ReLU; x contiguous, a channel slice, channels-last, or both.
#[test]
fn kernels_match_the_definition() {
    let mut failures = vec![];
    for shape in [
        [2, 2, 3, 2],
        [5, 3, 1, 1],
        [3, 5, 13, 11],
        [128, 4, 14, 14],
        [128, 16, 7, 7],
    ] {
        let c = shape[1];
        for (channels, relu, x_slice, x_channels_last) in [
            (c - c / 2, true, false, false),
            (c - c / 2, true, true, false),
            (c - c / 2, true, false, true),
            (c - c / 2, true, true, true),
            (c - c / 2, false, false, false),
            (c - c / 2, false, true, true),
            (1, true, false, false),
            (c, true, false, true),
            (c, false, true, false),
        ] {
            let case = Case {
                channels,
                relu,
                x_slice,
                x_channels_last,
            };
            let gpu = run::<Autodiff<Gpu>>(shape, case, subnet_input_cube);
            let cpu = run::<Autodiff<Flex>>(shape, case, by_definition);
            for (name, (a, b)) in ["y", "dx"].iter().zip(gpu.iter().zip(&cpu)) {
                let (err, scale) = max_error(a, b);
                if err > 1e-6 * scale {
                    failures.push(format!(
                        "{shape:?} {case:?} {name}: max error {err} (scale {scale})"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The output lies channels-last (`[N, H, W, P]` contiguous), which is what spares the
/// convolution its copy.
#[test]
fn the_output_lies_channels_last() {
    let dev = Default::default();
    let x = Tensor::<Autodiff<Gpu>, 4>::from_data(data([2, 6, 3, 5], 4), &dev).require_grad();
    let y = subnet_input_cube(SubnetInput {
        x,
        channels: 3,
        relu: true,
    });
    let y = y.inner().into_primitive().tensor();
    assert_eq!(y.meta.strides()[..], [3 * 5 * 3, 1, 5 * 3, 3]);
}
