//! What the convolution timing examples (`conv_flex`, `conv_groups`) share. Not an example
//! itself (cargo takes `examples/*.rs` and `examples/*/main.rs`).

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Reads one value of each tensor's gradient, so that a timing includes computing them.
pub fn touch_grads<B: AutodiffBackend>(grads: &B::Gradients, tensors: &[&Tensor<B, 4>]) {
    for t in tensors {
        let _ = t
            .grad(grads)
            .expect("a gradient")
            .slice([0..1, 0..1, 0..1, 0..1])
            .into_data();
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
