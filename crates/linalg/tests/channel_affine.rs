//! The fixed per-channel affine map's CubeCL kernels against the map written with tensor ops
//! on the CPU: the output and the gradient of `x`.
//! `cargo test -p cfx-linalg --features wgpu --test channel_affine` (llvmpipe will do) or
//! `--features cuda`.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn_flex::Flex;
use cfx_linalg::channel_affine::{ChannelAffine, channel_affine_cube};

mod common;

use common::{Gpu, data, max_error, strided_input};

/// The definition, as `cfx_flows`'s act-norm writes it.
fn by_definition<B: Backend>(map: ChannelAffine<B>) -> Tensor<B, 4> {
    let c = map.log_scale.dims()[0];
    map.x * map.log_scale.exp().reshape([1, c, 1, 1]) + map.offset.reshape([1, c, 1, 1])
}

/// The output, and the gradient of the leaf x comes from under the loss `Σ y·w`. With
/// `channels_last`, x is stored `[N, H, W, C]` and seen as `[N, C, H, W]`; with `slice`, it is
/// the second half of the channels of a tensor twice its size.
fn run<B: AutodiffBackend>(
    shape: [usize; 4],
    (channels_last, slice): (bool, bool),
    f: fn(ChannelAffine<B>) -> Tensor<B, 4>,
) -> [Vec<f32>; 2] {
    let dev = Default::default();
    let [n, c, h, w] = shape;
    let (leaf, x) = strided_input::<B>(shape, channels_last, slice, 1);
    let y = f(ChannelAffine {
        x,
        log_scale: Tensor::from_data(data([c], 2), &dev),
        offset: Tensor::from_data(data([c], 3), &dev),
    });
    let weights = Tensor::<B, 4>::from_data(data([n, c, h, w], 4), &dev);
    let g = (y.clone() * weights).sum().backward();
    let read = |t: Tensor<B::InnerBackend, 4>| t.into_data().to_vec::<f32>().unwrap();
    [read(y.inner()), read(leaf.grad(&g).unwrap())]
}

/// Shapes: tiny, one value per channel, more values than a cube has units, and the IB-INN's
/// two all-in-one coupling shapes at batch 128; x contiguous, channels-last, a channel slice,
/// or both.
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
        for layout in [(false, false), (true, false), (false, true), (true, true)] {
            let gpu = run::<Autodiff<Gpu>>(shape, layout, channel_affine_cube);
            let cpu = run::<Autodiff<Flex>>(shape, layout, by_definition);
            for (name, (a, b)) in ["y", "dx"].iter().zip(gpu.iter().zip(&cpu)) {
                let (err, scale) = max_error(a, b);
                if err > 1e-5 * scale {
                    failures.push(format!(
                        "{shape:?} {layout:?} {name}: max error {err} (scale {scale})"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
