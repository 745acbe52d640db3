//! Times one training convolution (forward, then the input, weight and bias gradients) at the
//! IB-INN's subnet shapes, batch 128, on flex: burn's `conv2d`, the matrix-product gradients
//! of `cfx_flows::nn::conv2d_lean`, and `cfx_linalg::conv_flex::conv2d_flex`. The three are
//! timed in turn, round after round, so that a slow spell of the machine hits all of them.
//! docs/results.md, "Convolutions and the affine half-step on flex's cores".
//!
//! `cargo run --release -p cfx-flows --example conv_flex` (`ONLY=32-32` for the 32→32 shape
//! alone, e.g. under `perf record`)

use std::time::Instant;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::ops::ConvOptions;
use cfx_flows::nn::Conv2dFn;

type B = Autodiff<Flex>;

const ROUNDS: usize = 9;

/// One forward and backward pass, in ms.
fn once(
    f: Conv2dFn<B>,
    x: &Tensor<B, 4>,
    w: &Tensor<B, 4>,
    b: &Tensor<B, 1>,
    o: &ConvOptions<2>,
) -> f64 {
    let (x, w, b) = (
        x.clone().detach().require_grad(),
        w.clone().detach().require_grad(),
        b.clone().detach().require_grad(),
    );
    let t = Instant::now();
    let y = f(x.clone(), w.clone(), Some(b.clone()), o.clone());
    let grads = y.sum().backward();
    touch_grads(&grads, &[&x, &w]);
    let _ = b.grad(&grads).expect("a gradient").into_data();
    t.elapsed().as_secs_f64() * 1e3
}

#[path = "shared/timing.rs"]
mod timing;
use timing::{median, touch_grads};

#[path = "shared/ibinn_convs.rs"]
mod ibinn_convs;
use ibinn_convs::{ConvShape, IBINN_CONVS};

/// `(c_in, c_out, size, kernel)` of the IB-INN's subnets (batch 128) and of Glow's coupling
/// nets in `bench glow-conv` (2 blocks, width 128, batch 32).
const MODELS: [(&str, usize, &[ConvShape]); 2] = [
    ("IB-INN", 128, &IBINN_CONVS),
    (
        "Glow",
        32,
        &[
            (2, 128, 14, 3),
            (128, 128, 14, 1),
            (128, 4, 14, 3),
            (4, 128, 7, 3),
            (128, 128, 7, 1),
            (128, 8, 7, 3),
        ],
    ),
];

fn main() {
    let d = Default::default();
    let normal = Distribution::Normal(0.0, 1.0);
    let ways: [(&str, Conv2dFn<B>); 3] = [
        ("burn", burn::tensor::module::conv2d),
        ("lean", cfx_flows::nn::conv2d_lean::<Flex, NoCheckpointing>),
        (
            "flex",
            cfx_linalg::conv_flex::conv2d_flex::<NoCheckpointing>,
        ),
    ];
    println!(
        "| model, batch | convolution | burn's conv2d | matrix-product gradients | conv_flex | conv_flex / matrix-product |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let shapes = MODELS
        .iter()
        .flat_map(|&(model, n, shapes)| shapes.iter().map(move |&s| (model, n, s)));
    for (model, n, (ci, co, s, k)) in shapes {
        if std::env::var("ONLY").is_ok_and(|v| v != format!("{ci}-{co}")) {
            continue;
        }
        let p = k / 2;
        let o = ConvOptions::new([1, 1], [p, p], [1, 1], 1);
        let x = Tensor::<B, 4>::random([n, ci, s, s], normal, &d);
        let w = Tensor::<B, 4>::random([co, ci, k, k], normal, &d);
        let b = Tensor::<B, 1>::random([co], normal, &d);
        let mut times = vec![Vec::new(); ways.len()];
        for round in 0..=ROUNDS {
            for (t, (_, f)) in times.iter_mut().zip(ways) {
                let ms = once(f, &x, &w, &b, &o);
                if round > 0 {
                    t.push(ms);
                }
            }
        }
        let [burn, lean, flex] = [0, 1, 2].map(|i| median(times[i].clone()));
        println!(
            "| {model}, {n} | {ci}→{co}, {k}×{k}, {s}×{s} | {burn:.2} ms | {lean:.2} ms | {flex:.2} ms | {:.2} |",
            flex / lean
        );
    }
}
