//! The per-tensor optimiser this module replaced: one burn `Sgd` per group, stepped tensor by
//! tensor after global clipping. Kept for the tests as the reference the flat step must match,
//! in values and in records.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::{GroupedSgdRecord, SgdGroup, check_group_count, clip_factor};

type Adaptor<B, M> = OptimizerAdaptor<Sgd<<B as AutodiffBackend>::InnerBackend>, M, B>;

struct Group<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// Empty for the default group, which takes every parameter not claimed by another.
    ids: Vec<ParamId>,
    hyper: SgdGroup,
    optim: Adaptor<B, M>,
}

pub struct PerTensorSgd<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// The default group first.
    groups: Vec<Group<B, M>>,
    max_grad_norm: Option<f64>,
}

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

impl<B: AutodiffBackend, M: AutodiffModule<B>> PerTensorSgd<B, M> {
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

    /// [`PerTensorSgd::step`] from gradients already gathered per parameter (data-parallel steps
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
        check_group_count(record.len(), self.groups.len())?;
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
        let factor = clip_factor(norm.clone(), max);
        model.visit(&mut Scale::<B::InnerBackend> { grads, factor });
    }
    norm
}
