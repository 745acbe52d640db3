//! The tiny IB-INN in training mode computes the same latents, log-determinants, input
//! gradients and parameter gradients with flex's own passes registered (the affine half-step,
//! `cfx_linalg::affine::affine_train_flex`, and the convolution, `cfx_linalg::conv_flex`, as
//! xtask registers them by default) as with the tensor ops. Its own test binary: the registry is
//! process-wide and has no way back, so the one test computes the tensor-op reference first.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use cfx_flows::ibinn::IbInnConfig;
use cfx_flows::nn::{ConvStrategy, register_auto_conv2d_with, set_conv_strategy};

type B = Autodiff<Flex>;

/// Every float parameter's gradient, flattened, in visiting order.
struct Grads<'a> {
    grads: &'a <B as burn::tensor::backend::AutodiffBackend>::Gradients,
    out: Vec<Tensor<Flex, 1>>,
}

impl ModuleVisitor<B> for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.out.push(g.flatten(0, D - 1));
        }
    }
}

#[test]
fn ibinn_is_the_same_function_with_flex_passes() {
    let device = Default::default();
    B::seed(&device, 7);
    // Training mode (batch statistics, dropout off in the tiny config), as in `train ib-inn`.
    let model = IbInnConfig::tiny().init::<B>(&device);
    let uniform = burn::tensor::Distribution::Uniform(-1.0, 1.0);
    let x = Tensor::<B, 4>::random([6, 1, 28, 28], uniform, &device).require_grad();
    let run = || {
        let (z, log_det) = model.encode(x.clone());
        let grads = (z.clone().square().sum() - log_det.clone().sum()).backward();
        let mut visitor = Grads {
            grads: &grads,
            out: vec![],
        };
        model.visit(&mut visitor);
        let dx = x.grad(&grads).expect("input gradient").flatten::<1>(0, 3);
        let mut all = vec![z.inner().flatten(0, 1), log_det.inner(), dx];
        all.extend(visitor.out);
        all
    };
    set_conv_strategy(ConvStrategy::Burn);
    let reference = run();
    cfx_flows::blocks::register_affine::<B>(cfx_linalg::affine::affine_train_flex);
    register_auto_conv2d_with::<B>(cfx_linalg::conv_flex::conv2d_flex);
    set_conv_strategy(ConvStrategy::Auto);
    let ours = run();
    assert_eq!(reference.len(), ours.len());
    assert!(reference.len() > 3, "no parameter gradients were collected");
    for (i, (a, b)) in reference.into_iter().zip(ours).enumerate() {
        let what = match i {
            0 => "latents".to_string(),
            1 => "log-dets".to_string(),
            2 => "input gradient".to_string(),
            k => format!("gradient of parameter {}", k - 3),
        };
        let scale: f32 = a.clone().abs().max().into_scalar();
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "{what} differs by {diff} (largest {scale})"
        );
    }
}
