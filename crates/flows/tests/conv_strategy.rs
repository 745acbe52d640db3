//! The IB-INN computes the same latents, log-determinants and input gradients with every
//! convolution strategy. Its own test binary: the strategy is process-wide, and no other test
//! may run while it is switched.

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use cfx_flows::ibinn::IbInnConfig;
use cfx_flows::nn::{ConvStrategy, register_auto_conv2d, set_conv_strategy};

type B = Autodiff<Flex>;

#[test]
fn ibinn_is_the_same_function_with_either_convolution() {
    let device = Default::default();
    B::seed(&device, 3);
    let model = IbInnConfig::tiny().init::<B>(&device);
    let uniform = burn::tensor::Distribution::Uniform(-1.0, 1.0);
    let x = Tensor::<B, 4>::random([4, 1, 28, 28], uniform, &device).require_grad();
    let run = |s: ConvStrategy| {
        set_conv_strategy(s);
        let (z, log_det) = model.encode(x.clone());
        let grads = (z.clone().square().sum() - log_det.clone().sum()).backward();
        let dx = x.grad(&grads).expect("input gradient");
        set_conv_strategy(ConvStrategy::Burn);
        (
            z.inner(),
            log_det.inner().unsqueeze_dim::<2>(1),
            dx.reshape([4, 784]),
        )
    };
    let (z1, l1, g1) = run(ConvStrategy::Burn);
    let (z2, l2, g2) = run(ConvStrategy::Unfold);
    // The CPU's default: the convolution with matrix-product gradients (`conv_grads`).
    register_auto_conv2d::<Flex>();
    let (z3, l3, g3) = run(ConvStrategy::Auto);
    for (name, a, b) in [
        ("latents", z1.clone(), z2),
        ("log-dets", l1.clone(), l2),
        ("input gradients", g1.clone(), g2),
        ("latents (auto)", z1, z3),
        ("log-dets (auto)", l1, l3),
        ("input gradients (auto)", g1, g3),
    ] {
        let scale: f32 = a.clone().abs().max().into_scalar();
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "{name} differ by {diff} (largest {scale})"
        );
    }
}
