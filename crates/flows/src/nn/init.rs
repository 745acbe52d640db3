use burn::module::{Initializer, Param};
use burn::prelude::*;

/// PyTorch's `kaiming_normal_` (fan-in mode, ReLU gain √2), times `scale`.
pub fn kaiming_normal<B: Backend, const D: usize>(
    shape: [usize; D],
    fan_in: usize,
    scale: f64,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let std = scale * (2.0 / fan_in as f64).sqrt();
    Initializer::Normal { mean: 0.0, std }.init(shape, device)
}

/// PyTorch's default bias initialisation for `Linear`/`Conv2d`: `U(±1/√fan_in)`.
pub fn torch_default_bias<B: Backend>(
    size: usize,
    fan_in: usize,
    device: &B::Device,
) -> Param<Tensor<B, 1>> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Initializer::Uniform {
        min: -bound,
        max: bound,
    }
    .init([size], device)
}
