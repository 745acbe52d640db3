//! Times each way of computing a convolution's gradients (`cfx_flows::nn::conv_grads::ways`)
//! at the IB-INN's convolution shapes, batch 128, on flex: the table in
//! `crates/flows/src/nn/conv_grads.rs` and docs/results.md ("Convolution gradients on the
//! CPU"). Each way is checked against burn's before it is timed.
//!
//! `cargo run --release -p cfx-flows --example conv_grads`

use std::time::Instant;

use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::ops::ConvOptions;
use cfx_flows::nn::ways;

type B = Flex;

#[path = "shared/ibinn_convs.rs"]
mod ibinn_convs;
use ibinn_convs::IBINN_CONVS;

/// Median of 7 timed runs after one warm-up, in ms.
fn time(f: &dyn Fn() -> Tensor<B, 4>) -> f64 {
    let _ = f();
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let _ = f().slice([0..1, 0..1, 0..1, 0..1]).into_data();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[3]
}

fn check(name: &str, ours: Tensor<B, 4>, burns: Tensor<B, 4>) {
    let scale: f32 = burns.clone().abs().max().into_scalar();
    let err: f32 = (ours - burns).abs().max().into_scalar();
    assert!(
        err <= 1e-4 * scale.max(1.0),
        "{name}: differs by {err} (scale {scale})"
    );
}

fn main() {
    let d = Default::default();
    let n = 128;
    let normal = Distribution::Normal(0.0, 1.0);
    println!(
        "| convolution | dX transposed conv | dX conv with flipped W | dW swapped conv | dW matmul with patches | dW shifted matmuls |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (ci, co, s, k) in IBINN_CONVS {
        let p = k / 2;
        let options = ConvOptions::new([1, 1], [p, p], [1, 1], 1);
        let x = Tensor::<B, 4>::random([n, ci, s, s], normal, &d);
        let w = Tensor::<B, 4>::random([co, ci, k, k], normal, &d);
        let dy = Tensor::<B, 4>::random([n, co, s, s], normal, &d);
        let dx = || ways::input_grad_burn(x.clone(), w.clone(), dy.clone(), &options);
        let dx_flipped = || ways::input_grad_flipped(w.clone(), dy.clone(), [p, p]);
        let dw = || ways::weight_grad_burn(x.clone(), w.clone(), dy.clone(), &options);
        let dw_patches = || ways::weight_grad_patches(x.clone(), dy.clone(), [k, k], [p, p]);
        let dw_shifted = || ways::weight_grad_shifted(x.clone(), dy.clone(), [k, k], [p, p]);
        check("dX flipped", dx_flipped(), dx());
        check("dW patches", dw_patches(), dw());
        check("dW shifted", dw_shifted(), dw());
        println!(
            "| {ci}→{co}, {k}×{k}, {s}×{s} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            time(&dx),
            time(&dx_flipped),
            time(&dw),
            time(&dw_patches),
            time(&dw_shifted)
        );
    }
}
