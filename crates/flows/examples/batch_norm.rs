//! Times one training batch norm (forward and backward, ReLU after it) at the IB-INN's two
//! subnet shapes, batch 128, on flex: the fused tensor-op version against flex's own passes
//! (`cfx_linalg::batch_norm::batch_norm_train_flex`). docs/results.md, "Batch norm on flex's
//! cores".
//!
//! `cargo run --release -p cfx-flows --example batch_norm`

use std::time::Instant;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::nn::BatchNormConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use cfx_linalg::batch_norm::{BatchNormStep, BatchNormTrainFn};

type B = Autodiff<Flex>;

/// Median of 9 timed runs after two warm-ups, in ms: (forward, forward + backward).
fn time(f: BatchNormTrainFn<B>, x: &Tensor<B, 4>, w: &Tensor<B, 4>) -> (f64, f64) {
    let device = Default::default();
    let c = x.dims()[1];
    let bn = BatchNormConfig::new(c).init::<B>(&device);
    let step = |x: Tensor<B, 4>| BatchNormStep {
        x,
        gamma: bn.gamma.val(),
        beta: bn.beta.val(),
        running_mean: bn.running_mean.value(),
        running_var: bn.running_var.value(),
        epsilon: 1e-4,
        momentum: 0.001,
        relu: true,
    };
    let mut fwd = Vec::new();
    let mut both = Vec::new();
    for i in 0..11 {
        let xx = x.clone().detach().require_grad();
        let t = Instant::now();
        let y = f(step(xx.clone())).y;
        let _ = y.clone().slice([0..1, 0..1, 0..1, 0..1]).into_data();
        let t_fwd = t.elapsed().as_secs_f64() * 1e3;
        let grads = (y * w.clone()).sum().backward();
        let _ = xx
            .grad(&grads)
            .unwrap()
            .slice([0..1, 0..1, 0..1, 0..1])
            .into_data();
        if i >= 2 {
            fwd.push(t_fwd);
            both.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    fwd.sort_by(f64::total_cmp);
    both.sort_by(f64::total_cmp);
    (fwd[4], both[4])
}

fn main() {
    let device = Default::default();
    cfx_flows::nn::register_fused_batch_norm::<Flex>(cfx_flows::nn::PerChannel::Materialise);
    let fused = cfx_flows::nn::registered_batch_norm::<B>().expect("just registered");
    let ours: BatchNormTrainFn<B> =
        cfx_linalg::batch_norm::batch_norm_train_flex::<NoCheckpointing>;
    println!(
        "| activation | fused ops: forward | fused ops: fwd + bwd | flex passes: forward | flex passes: fwd + bwd |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (c, s) in [(32, 14), (64, 7)] {
        let x = Tensor::<B, 4>::random([128, c, s, s], Distribution::Normal(0.3, 1.0), &device);
        let w = Tensor::<B, 4>::random([128, c, s, s], Distribution::Default, &device);
        let (a, b) = time(fused, &x, &w);
        let (p, q) = time(ours, &x, &w);
        println!("| [128, {c}, {s}, {s}] | {a:.2} ms | {b:.2} ms | {p:.2} ms | {q:.2} ms |");
    }
}
