//! SGD with per-group hyper-parameters and global gradient-norm clipping.
//!
//! The IB-INN reference trains the network, the GMM means and the class weights with one
//! PyTorch SGD of three parameter groups, after `clip_grad_norm_` over all of them. burn's
//! optimisers take one learning rate per step and clip per tensor, so this wraps one burn
//! `Sgd` per group and clips by the norm of the concatenated gradient first, as PyTorch does:
//! `g ← g · min(1, max_norm / (‖g‖ + 1e-6))`.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Hyper-parameters of one group; `lr_factor` multiplies the scheduled learning rate.
#[derive(Debug, Clone, Copy)]
pub struct SgdGroup {
    pub lr_factor: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

type Adaptor<B, M> = OptimizerAdaptor<Sgd<<B as AutodiffBackend>::InnerBackend>, M, B>;

struct Group<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// Empty for the default group, which takes every parameter not claimed by another.
    ids: Vec<ParamId>,
    hyper: SgdGroup,
    optim: Adaptor<B, M>,
}

pub struct GroupedSgd<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// The default group first.
    groups: Vec<Group<B, M>>,
    max_grad_norm: Option<f64>,
}

/// The optimiser records of all groups, in order (default group first).
pub type GroupedSgdRecord<B, M> = Vec<<Adaptor<B, M> as Optimizer<M, B>>::Record>;

fn sgd<B: AutodiffBackend, M: AutodiffModule<B>>(g: SgdGroup) -> Adaptor<B, M> {
    let momentum = (g.momentum > 0.0).then_some(MomentumConfig {
        momentum: g.momentum,
        dampening: 0.0,
        nesterov: false,
    });
    let decay = (g.weight_decay > 0.0).then(|| WeightDecayConfig::new(g.weight_decay as f32));
    SgdConfig::new()
        .with_momentum(momentum)
        .with_weight_decay(decay)
        .init::<B, M>()
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> GroupedSgd<B, M> {
    pub fn new(default: SgdGroup, max_grad_norm: Option<f64>) -> Self {
        Self {
            groups: vec![Group {
                ids: vec![],
                hyper: default,
                optim: sgd(default),
            }],
            max_grad_norm,
        }
    }

    /// Gives the parameters `ids` their own hyper-parameters.
    pub fn with_group(mut self, ids: Vec<ParamId>, hyper: SgdGroup) -> Self {
        self.groups.push(Group {
            ids,
            hyper,
            optim: sgd(hyper),
        });
        self
    }

    /// One update. Returns the model and the gradient norm before clipping (on the device).
    pub fn step(
        &mut self,
        lr: f64,
        model: M,
        grads: B::Gradients,
    ) -> (M, Tensor<B::InnerBackend, 1>) {
        let params = GradientsParams::from_grads(grads, &model);
        self.step_params(lr, model, params)
    }

    /// [`GroupedSgd::step`] from gradients already gathered per parameter (data-parallel steps
    /// sum the replicas' gradients into one set).
    pub fn step_params(
        &mut self,
        lr: f64,
        mut model: M,
        mut grads: GradientsParams,
    ) -> (M, Tensor<B::InnerBackend, 1>) {
        let mut per_group: Vec<GradientsParams> = self.groups[1..]
            .iter()
            .map(|g| take_params::<B, M>(&model, &mut grads, &g.ids))
            .collect();
        per_group.insert(0, grads);
        let norm = clip_global_norm::<B, M>(&model, &mut per_group, self.max_grad_norm);
        for (g, gp) in self.groups.iter_mut().zip(per_group) {
            model = g.optim.step(lr * g.hyper.lr_factor, model, gp);
        }
        (model, norm)
    }

    pub fn to_record(&self) -> GroupedSgdRecord<B, M> {
        self.groups.iter().map(|g| g.optim.to_record()).collect()
    }

    pub fn load_record(mut self, record: GroupedSgdRecord<B, M>) -> anyhow::Result<Self> {
        if record.len() != self.groups.len() {
            anyhow::bail!(
                "optimiser state has {} parameter groups, this model has {}",
                record.len(),
                self.groups.len()
            );
        }
        for (g, r) in self.groups.iter_mut().zip(record) {
            let fresh = sgd(g.hyper);
            g.optim = std::mem::replace(&mut g.optim, fresh).load_record(r);
        }
        Ok(self)
    }
}

/// Moves the gradients of the parameters `ids` out of `from` into a set of their own.
fn take_params<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    from: &mut GradientsParams,
    ids: &[ParamId],
) -> GradientsParams {
    struct Take<'a> {
        ids: &'a [ParamId],
        from: &'a mut GradientsParams,
        out: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Take<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.ids.contains(&param.id)
                && let Some(t) = self.from.remove::<B::InnerBackend, D>(param.id)
            {
                self.out.register::<B::InnerBackend, D>(param.id, t);
            }
        }
    }
    let mut take = Take {
        ids,
        from,
        out: GradientsParams::new(),
    };
    model.visit(&mut take);
    take.out
}

/// Scales all gradients by `min(1, max / (‖g‖ + 1e-6))`; returns `‖g‖` (before scaling).
fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut [GradientsParams],
    max: Option<f64>,
) -> Tensor<B::InnerBackend, 1> {
    struct SumSquares<'a, IB: Backend> {
        grads: &'a [GradientsParams],
        total: Option<Tensor<IB, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for SumSquares<'_, B::InnerBackend> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            for g in self.grads {
                if let Some(t) = g.get::<B::InnerBackend, D>(param.id) {
                    let s = t.square().sum();
                    self.total = Some(match self.total.take() {
                        Some(acc) => acc + s,
                        None => s,
                    });
                }
            }
        }
    }
    struct Scale<'a, IB: Backend> {
        grads: &'a mut [GradientsParams],
        factor: Tensor<IB, 1>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B::InnerBackend> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            for g in self.grads.iter_mut() {
                if let Some(t) = g.remove::<B::InnerBackend, D>(param.id) {
                    g.register::<B::InnerBackend, D>(
                        param.id,
                        t * self.factor.clone().reshape([1; D]),
                    );
                }
            }
        }
    }
    let mut sum = SumSquares::<B::InnerBackend> { grads, total: None };
    model.visit(&mut sum);
    let device = model
        .devices()
        .into_iter()
        .next()
        .expect("model has a device");
    let norm = sum
        .total
        .unwrap_or_else(|| Tensor::zeros([1], &device))
        .sqrt();
    if let Some(max) = max {
        let factor = norm
            .clone()
            .add_scalar(1e-6)
            .recip()
            .mul_scalar(max)
            .clamp_max(1.0);
        model.visit(&mut Scale::<B::InnerBackend> { grads, factor });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};

    type AB = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        a: Linear<B>,
        b: Param<Tensor<B, 1>>,
    }

    fn model() -> Two<AB> {
        let d = Default::default();
        Two {
            a: LinearConfig::new(2, 1).with_bias(false).init(&d),
            b: Param::from_tensor(Tensor::from_floats([1.0, 2.0], &d)),
        }
    }

    fn values(m: &Two<AB>) -> (Vec<f32>, Vec<f32>) {
        (
            m.a.weight.val().into_data().to_vec().unwrap(),
            m.b.val().into_data().to_vec().unwrap(),
        )
    }

    /// loss = Σ a·x + 10·Σ b: ∂/∂a = x = (3, 4), ∂/∂b = (10, 10); ‖g‖ = √(9+16+200) = 15.
    fn grads(m: &Two<AB>) -> <AB as AutodiffBackend>::Gradients {
        let d = Default::default();
        let x = Tensor::<AB, 2>::from_floats([[3.0, 4.0]], &d);
        (m.a.forward(x).sum() + m.b.val().sum().mul_scalar(10.0)).backward()
    }

    #[test]
    fn clips_by_the_global_norm_and_applies_group_learning_rates() {
        let m = model();
        let (a0, b0) = values(&m);
        let plain = SgdGroup {
            lr_factor: 1.0,
            momentum: 0.0,
            weight_decay: 0.0,
        };
        let mut opt = GroupedSgd::<AB, Two<AB>>::new(plain, Some(1.5)).with_group(
            vec![m.b.id],
            SgdGroup {
                lr_factor: 3.0,
                ..plain
            },
        );
        let g = grads(&m);
        let (m, norm) = opt.step(0.1, m, g);
        assert!((norm.into_scalar() - 15.0).abs() < 1e-4);
        let (a1, b1) = values(&m);
        // Clipped gradients are the originals × 1.5/15 = 0.1.
        assert!((a0[0] - a1[0] - 0.1 * 0.3).abs() < 1e-6, "{a0:?} {a1:?}");
        assert!((a0[1] - a1[1] - 0.1 * 0.4).abs() < 1e-6);
        assert!((b0[0] - b1[0] - 0.3 * 1.0).abs() < 1e-6, "{b0:?} {b1:?}");
    }

    #[test]
    fn momentum_and_weight_decay_follow_pytorch_sgd() {
        // PyTorch: g' = g + wd·p; v = μv + g'; p -= lr·v (first step v = g').
        let m = model();
        let g = SgdGroup {
            lr_factor: 1.0,
            momentum: 0.9,
            weight_decay: 0.5,
        };
        let mut opt = GroupedSgd::<AB, Two<AB>>::new(g, None);
        let (_, b0) = values(&m);
        let gr = grads(&m);
        let (m, _) = opt.step(0.01, m, gr);
        let (_, b1) = values(&m);
        let v1: Vec<f32> = b0.iter().map(|p| 10.0 + 0.5 * p).collect();
        for i in 0..2 {
            assert!((b1[i] - (b0[i] - 0.01 * v1[i])).abs() < 1e-5);
        }
        let gr = grads(&m);
        let (m, _) = opt.step(0.01, m, gr);
        let (_, b2) = values(&m);
        for i in 0..2 {
            let v2 = 0.9 * v1[i] + 10.0 + 0.5 * b1[i];
            assert!((b2[i] - (b1[i] - 0.01 * v2)).abs() < 1e-5);
        }
        // The record round-trips and keeps the velocity: a reloaded optimiser steps exactly
        // like the one it was saved from.
        let mut reloaded = GroupedSgd::<AB, Two<AB>>::new(g, None)
            .load_record(opt.to_record())
            .unwrap();
        let (ma, _) = reloaded.step(0.01, m.clone(), grads(&m));
        let (mb, _) = opt.step(0.01, m.clone(), grads(&m));
        assert_eq!(values(&ma), values(&mb));
        let (mc, _) = GroupedSgd::<AB, Two<AB>>::new(g, None).step(0.01, m.clone(), grads(&m));
        assert_ne!(
            values(&ma),
            values(&mc),
            "a fresh optimiser has no velocity"
        );
    }
}
