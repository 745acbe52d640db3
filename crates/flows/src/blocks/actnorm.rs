use burn::module::Param;
use burn::prelude::*;
use cfx_linalg::affine::ConstantLogDet;
use cfx_linalg::channel_affine::{ChannelAffine, ChannelAffineFn};

use crate::flow::Flow;
use crate::ops::per_channel;

/// Per-channel affine map `y = x·exp(log_scale) + offset` (Glow's actnorm).
///
/// IB-INN's coupling blocks end with one whose scale is *fixed* at `ln 0.80` on MNIST and offset
/// at 0 (`AIO_Block` sets `requires_grad = False` when `act_norm` is given); the spec extracted
/// from the papers calls it trainable, the reference code decides: fixed by default here,
/// `learnable` for Glow-style use. Log-determinant: `H·W·Σ log_scale`.
#[derive(Config, Debug)]
pub struct ActNormConfig {
    pub channels: usize,
    #[config(default = 0.0)]
    pub init_log_scale: f64,
    #[config(default = false)]
    pub learnable: bool,
}

#[derive(Module, Debug)]
pub struct ActNorm<B: Backend> {
    pub log_scale: Param<Tensor<B, 1>>,
    pub offset: Param<Tensor<B, 1>>,
}

impl ActNormConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> ActNorm<B> {
        let p = |v: f64| {
            Param::from_tensor(Tensor::full([self.channels], v, device))
                .set_require_grad(self.learnable)
        };
        ActNorm {
            log_scale: p(self.init_log_scale),
            offset: p(0.0),
        }
    }
}

impl<B: Backend> ActNorm<B> {
    /// Data-dependent initialisation (Glow): afterwards the block maps `x` to zero mean and unit
    /// variance per channel. A constant channel gets unit scale instead of dividing by a zero
    /// standard deviation (the NaN of FrEIA issue #121).
    pub fn initialized_from(self, x: Tensor<B, 4>) -> Self {
        let [n, c, h, w] = x.dims();
        let flat = x.swap_dims(0, 1).reshape([c, n * h * w]);
        let (var, mean) = flat.var_mean_bias(1);
        let std = var.reshape([c]).sqrt();
        let usable = std.clone().greater_elem(1e-6);
        let log_scale = std
            .clamp_min(1e-6)
            .log()
            .neg()
            .mask_fill(usable.bool_not(), 0.0);
        let offset = mean.reshape([c]).neg() * log_scale.clone().exp();
        let grad = self.log_scale.is_require_grad();
        Self {
            log_scale: Param::from_tensor(log_scale.detach()).set_require_grad(grad),
            offset: Param::from_tensor(offset.detach()).set_require_grad(grad),
        }
    }
}

/// Makes `f` the fixed per-channel affine map of backend `B` (xtask registers
/// `cfx_linalg::channel_affine::channel_affine_cube` for `Autodiff` over cuda and wgpu):
/// [`ActNorm::apply`] takes it when neither scales nor offsets are trained, one launch each way
/// instead of three forward.
pub fn register_channel_affine<B: Backend>(f: ChannelAffineFn<B>) {
    crate::nn::registry::register(f);
}

impl<B: Backend> ActNorm<B> {
    /// The map, without its log-determinant.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if !self.log_scale.is_require_grad()
            && !self.offset.is_require_grad()
            && let Some(f) = crate::nn::registry::registered::<ChannelAffineFn<B>>()
        {
            return f(ChannelAffine {
                x,
                log_scale: self.log_scale.val(),
                offset: self.offset.val(),
            });
        }
        let n = x.dims()[0];
        x * per_channel(self.log_scale.val().exp(), n) + per_channel(self.offset.val(), n)
    }

    /// The log-determinant on inputs of `hw` pixels per channel as a term the same for every
    /// sample and without gradient, when it is one: the scales are fixed (IB-INN's), or the
    /// backend computes no gradients. An all-in-one coupling hands it to its affine half-step,
    /// which adds it for free.
    pub fn constant_log_det(&self, hw: usize) -> Option<ConstantLogDet<B>> {
        (!self.log_scale.is_require_grad()).then(|| ConstantLogDet {
            values: self.log_scale.val(),
            weight: hw as f64,
        })
    }
}

impl<B: Backend> Flow<B> for ActNorm<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let [n, _, h, w] = x.dims();
        // `sum_dim` rather than `sum`: on the cube backends a full `sum` is two launches (a
        // zero fill and the reduction), `sum_dim` one.
        let log_det = self
            .log_scale
            .val()
            .sum_dim(0)
            .mul_scalar((h * w) as f64)
            .expand([n]);
        (self.apply(x), log_det)
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let n = z.dims()[0];
        (z - per_channel(self.offset.val(), n)) * per_channel(self.log_scale.val().neg().exp(), n)
    }

    fn log_det_ceiling(&self, [_, h, w]: [usize; 3]) -> Option<f64> {
        let sum: f64 = self.log_scale.val().sum().into_scalar().elem();
        Some(sum * (h * w) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, random_on};
    use crate::testing::check_flow;

    #[test]
    fn invertible_and_log_det_matches_jacobian() {
        let d = Default::default();
        let an = ActNormConfig::new(3)
            .with_init_log_scale(0.8f64.ln())
            .init::<TAd>(&d);
        check_flow(&an, random_on::<TAd, 4>([2, 3, 2, 2], 1), 1e-5, 1e-4);
    }

    use crate::test_util::RegistryAd as AdB;

    thread_local! {
        static CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn counting(map: ChannelAffine<AdB>) -> Tensor<AdB, 4> {
        CALLS.with(|c| c.set(c.get() + 1));
        let n = map.x.dims()[0];
        map.x * per_channel(map.log_scale.exp(), n) + per_channel(map.offset, n)
    }

    #[test]
    fn a_registered_map_is_taken_for_fixed_scales_only() {
        let _registry = crate::test_util::registry_lock();
        register_channel_affine::<AdB>(counting);
        let d = Default::default();
        let calls = || CALLS.with(std::cell::Cell::get);
        let x = random_on::<AdB, 4>([2, 3, 2, 2], 6);
        let config = ActNormConfig::new(3).with_init_log_scale(0.8f64.ln());
        let before = calls();
        let fixed = config.init::<AdB>(&d);
        let y = fixed.apply(x.clone());
        assert_eq!(calls(), before + 1);
        let want = x.clone().mul_scalar(0.8);
        assert!(crate::testing::max_abs_diff(y, want) < 1e-6);
        let _ = config.with_learnable(true).init::<AdB>(&d).apply(x);
        assert_eq!(calls(), before + 1);
    }

    #[test]
    fn data_init_standardises_and_survives_constant_channels() {
        let d = Default::default();
        let x = random_on::<TAd, 4>([8, 2, 3, 3], 2) * 3.0 + 1.0;
        let x = Tensor::cat(vec![x, Tensor::full([8, 1, 3, 3], 4.0, &d)], 1);
        let an = ActNormConfig::new(3)
            .with_learnable(true)
            .init::<TAd>(&d)
            .initialized_from(x.clone());
        let (y, _) = an.forward(x.clone());
        let flat = y.swap_dims(0, 1).reshape([3, 72]);
        let (var, mean) = flat.var_mean_bias(1);
        let var: Vec<f32> = var.into_data().to_vec().unwrap();
        let mean: Vec<f32> = mean.into_data().to_vec().unwrap();
        assert!(mean.iter().all(|m| m.abs() < 1e-4), "{mean:?}");
        assert!(
            (var[0] - 1.0).abs() < 1e-3 && (var[1] - 1.0).abs() < 1e-3 && var[2] == 0.0,
            "{var:?}"
        );
        assert!(an.log_scale.is_require_grad());
        check_flow(&an, x, 1e-4, 1e-4);
    }
}
