//! The IB-INN computes the same latents, log-determinants and input gradients with every
//! convolution strategy. Its own test binary: the strategy is process-wide, and no other test
//! may run while it is switched (the two here take turns).

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use cfx_flows::ibinn::IbInnConfig;
use cfx_flows::nn::{Conv2dFn, ConvStrategy, register_auto_conv2d_with, set_conv_strategy};

type B = Autodiff<Flex>;

/// flex's two default convolutions (xtask's `CFX_FLEX_CONV`): burn's forward with the
/// matrix-product gradients, and one product per sample (`cfx_linalg::conv_flex`).
const FLEX_CONVS: [(&str, Conv2dFn<B>); 2] = [
    (
        "matrix-product gradients",
        cfx_flows::nn::conv2d_lean::<Flex, NoCheckpointing>,
    ),
    ("per sample", cfx_linalg::conv_flex::conv2d_flex),
];

/// Held by each test while it switches the process-wide strategy.
static SWITCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn ibinn_is_the_same_function_with_either_convolution() {
    let _switching = SWITCHING.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    B::seed(&device, 3);
    let model = IbInnConfig::tiny().init::<B>(&device);
    let uniform = burn::tensor::Distribution::Uniform(-1.0, 1.0);
    let x = Tensor::<B, 4>::random([4, 1, 28, 28], uniform, &device).require_grad();
    let run = |s: ConvStrategy| outputs(s, &x, |x| model.encode(x));
    let (z1, l1, g1) = run(ConvStrategy::Burn);
    let (z2, l2, g2) = run(ConvStrategy::Unfold);
    for (name, a, b) in [
        ("latents", z1.clone(), z2),
        ("log-dets", l1.clone(), l2),
        ("input gradients", g1.clone(), g2),
    ] {
        assert_same(name, a, b);
    }
    // The CPU's defaults.
    for (conv, f) in FLEX_CONVS {
        register_auto_conv2d_with::<B>(f);
        let (z3, l3, g3) = run(ConvStrategy::Auto);
        for (name, a, b) in [
            ("latents", z1.clone(), z3),
            ("log-dets", l1.clone(), l3),
            ("input gradients", g1.clone(), g3),
        ] {
            assert_same(&format!("{name} (auto, {conv})"), a, b);
        }
    }
}

/// With strategy `s` for the pass (burn's again after it): the latents `[N, D]` and
/// log-determinants `[N, 1]` that `f` gives for `x`, and the input gradient `[N, C·H·W]` of
/// `Σ z² − Σ log-det`.
fn outputs(
    s: ConvStrategy,
    x: &Tensor<B, 4>,
    f: impl Fn(Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 1>),
) -> (Tensor<Flex, 2>, Tensor<Flex, 2>, Tensor<Flex, 2>) {
    set_conv_strategy(s);
    let (z, log_det) = f(x.clone());
    let grads = (z.clone().square().sum() - log_det.clone().sum()).backward();
    let dx = x.grad(&grads).expect("input gradient");
    set_conv_strategy(ConvStrategy::Burn);
    let [n, c, h, w] = x.dims();
    (
        z.inner(),
        log_det.inner().unsqueeze_dim::<2>(1),
        dx.reshape([n, c * h * w]),
    )
}

/// `a` and `b` agree to 1e-4 of `a`'s largest entry (at least 1).
fn assert_same(what: &str, a: Tensor<Flex, 2>, b: Tensor<Flex, 2>) {
    let scale: f32 = a.clone().abs().max().into_scalar();
    let diff: f32 = (a - b).abs().max().into_scalar();
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "{what} differ by {diff} (largest {scale})"
    );
}

/// RealNVP's and Glow's coupling nets take the registered default convolution too
/// (`conv2d_default`): same latents, log-dets and input gradients as burn's.
#[test]
fn realnvp_and_glow_are_the_same_function_with_the_default_convolution() {
    let _switching = SWITCHING.lock().unwrap_or_else(|e| e.into_inner());
    use cfx_flows::Flow;
    use cfx_flows::glow::GlowConfig;
    use cfx_flows::realnvp::RealNvpConfig;
    let device = Default::default();
    B::seed(&device, 4);
    // Freshly made, their coupling nets end in zero convolutions, which would pass any
    // gradient through the nets as zero: every parameter gets some noise first.
    let realnvp = RealNvpConfig::tiny().init::<B>(&device).map(&mut Perturb);
    let glow = GlowConfig::tiny().init::<B>(&device).map(&mut Perturb);
    let flows: [(&str, &dyn Flow<B>, [usize; 3]); 2] = [
        ("RealNVP", &realnvp, realnvp.input_shape()),
        ("Glow", &glow, glow.input_shape()),
    ];
    for (model, flow, [c, h, w]) in flows {
        let uniform = burn::tensor::Distribution::Uniform(0.0, 1.0);
        let x = Tensor::<B, 4>::random([3, c, h, w], uniform, &device).require_grad();
        let run = |s: ConvStrategy| {
            outputs(s, &x, |x| {
                let (z, log_det) = flow.forward(x);
                (z.reshape([3, c * h * w]), log_det)
            })
        };
        let (z1, l1, g1) = run(ConvStrategy::Burn);
        for (conv, f) in FLEX_CONVS {
            register_auto_conv2d_with::<B>(f);
            let (z2, l2, g2) = run(ConvStrategy::Auto);
            for (name, a, b) in [
                ("latents", z1.clone(), z2),
                ("log-dets", l1.clone(), l2),
                ("input gradients", g1.clone(), g2),
            ] {
                assert_same(&format!("{model}: {name} ({conv})"), a, b);
            }
        }
    }
}

/// Adds N(0, 0.1²) noise to every float parameter.
struct Perturb;

impl burn::module::ModuleMapper<B> for Perturb {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        let (id, t, mapper) = param.consume();
        let noise = Tensor::random(
            t.shape(),
            burn::tensor::Distribution::Normal(0.0, 0.1),
            &t.device(),
        );
        burn::module::Param::from_mapped_value(id, Tensor::from_inner(t.inner() + noise), mapper)
    }
}
