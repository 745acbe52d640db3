//! GL: counterfactuals guided by prototypes (Looveren & Klaise), as alibi's
//! `CounterFactualProto` (v0.5.x) computes them for an image classifier with an autoencoder
//! (spec §3.4).

use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::{Classifier, CnnClassifier, ConvAutoencoder, predictions};
use serde::{Deserialize, Serialize};

use crate::explainer::{iterative_explanation, predict_checked, query_index, timed, unsolved};
use crate::input_optim::{column, l1, l2sq, leaf, polynomial_decay, replace_rows, to_host};
use crate::{ClassMeansBuilder, ExplainError, Explainer, Explanation, Query, TargetClass};

/// The settings of alibi's MNIST example, which are the plausible Paper-4 ones (spec §3.4: the
/// seeds give only "default parameters", and with alibi's bare defaults γ = θ = 0 the prototype
/// term the paper describes would be off): κ 0, β 0.1, γ 100, θ 100, c 1 with 2 bisection
/// steps, 1000 FISTA iterations per step, learning rate 1e-2 decaying as `(1 − t/T)^½`,
/// gradients clipped to ±1000.
///
/// The loss of the slack variable `y` is `c·max(0, p_orig(y) − max_{i≠orig} p_i(y) + κ) +
/// ‖y − x‖² + γ‖AE(y) − y‖² + θ‖ENC(y) − proto_q‖²`; the L1 term `β‖δ‖₁` enters through the
/// shrinkage-thresholding step of FISTA. A step is a solution when the classifier puts the
/// counterfactual in the query's target class (alibi: any class of `target_class`, here the one
/// target); the solution with the smallest `β‖δ‖₁ + ‖δ‖²` is returned. Under
/// [`TargetClass::Other`] (alibi's default, `target_class=None`, and Paper 4's setting) the
/// prototype is the nearest one to `ENC(x)` among the classes other than the predicted one, and
/// any class but the predicted one is a solution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlConfig {
    pub kappa: f64,
    pub beta: f64,
    pub gamma: f64,
    pub theta: f64,
    pub c_init: f64,
    pub c_steps: usize,
    pub max_iterations: usize,
    pub learning_rate_init: f64,
    pub clip: f64,
    /// Unit-space clip range.
    pub feature_range: (f64, f64),
    pub target_class: TargetClass,
}

impl Default for GlConfig {
    fn default() -> Self {
        Self {
            kappa: 0.0,
            beta: 0.1,
            gamma: 100.0,
            theta: 100.0,
            c_init: 1.0,
            c_steps: 2,
            max_iterations: 1000,
            learning_rate_init: 1e-2,
            clip: 1000.0,
            feature_range: (0.0, 1.0),
            target_class: TargetClass::Given,
        }
    }
}

/// GL over a CNN and an autoencoder on the autodiff backend `A`; inner-backend tensors in and out.
#[derive(Debug, Clone)]
pub struct Gl<A: AutodiffBackend> {
    pub model: CnnClassifier<A>,
    pub autoencoder: ConvAutoencoder<A>,
    inner: CnnClassifier<A::InnerBackend>,
    /// Class prototypes in the encoder's space, `[K, L, h, w]`.
    prototypes: Tensor<A::InnerBackend, 4>,
    pub config: GlConfig,
}

/// Mean encoding of the images the classifier assigns to each class (alibi's `fit` groups the
/// training data by the model's predictions). `batches` are unit-space images.
pub fn class_prototypes<B: Backend>(
    model: &dyn Classifier<B>,
    autoencoder: &ConvAutoencoder<B>,
    batches: impl IntoIterator<Item = Tensor<B, 4>>,
) -> Result<Tensor<B, 4>, ExplainError> {
    let mut grouped: Option<(ClassMeansBuilder, [usize; 3])> = None;
    for x in batches {
        let enc = autoencoder.encode(x.clone());
        let [n, l, h, w] = enc.dims();
        let (builder, _) = grouped.get_or_insert_with(|| {
            (
                ClassMeansBuilder::new(model.n_classes(), l * h * w),
                [l, h, w],
            )
        });
        builder.add_grouped(model.logits(x), enc.reshape([n, l * h * w]));
    }
    let (builder, [l, h, w]) = grouped.ok_or_else(|| ExplainError::Prototypes("no data".into()))?;
    let means = builder.means().map_err(|c| {
        ExplainError::Prototypes(format!(
            "no training image is classified as class {c}, so it has no prototype"
        ))
    })?;
    let device = autoencoder.devices()[0].clone();
    Ok(means
        .to_tensor::<B>(&device)
        .reshape([means.n_classes(), l, h, w]))
}

impl<A: AutodiffBackend> Gl<A> {
    pub fn new(
        model: CnnClassifier<A>,
        autoencoder: ConvAutoencoder<A>,
        prototypes: Tensor<A::InnerBackend, 4>,
        config: GlConfig,
    ) -> Self {
        use burn::module::AutodiffModule;
        Self {
            inner: model.valid(),
            model,
            autoencoder,
            prototypes,
            config,
        }
    }

    /// The class whose prototype guides each query: its target, or under
    /// [`TargetClass::Other`] the class other than `predicted` whose prototype lies nearest to
    /// the input's encoding (alibi's `explain` picks it the same way, by L2 distance).
    pub(crate) fn guide_classes(
        &self,
        x0: &Tensor<A::InnerBackend, 4>,
        queries: &[Query],
        predicted: &[usize],
    ) -> Vec<usize> {
        match self.config.target_class {
            TargetClass::Given => queries.iter().map(|q| q.target).collect(),
            TargetClass::Other => {
                let enc = to_host(
                    self.autoencoder
                        .encode(Tensor::from_inner(x0.clone()))
                        .inner(),
                );
                let [k, l, h, w] = self.prototypes.dims();
                let m = l * h * w;
                let protos = to_host(self.prototypes.clone());
                queries
                    .iter()
                    .enumerate()
                    .map(|(j, q)| {
                        let e = &enc[j * m..(j + 1) * m];
                        let dist = |c: usize| -> f64 {
                            let p = &protos[c * m..(c + 1) * m];
                            e.iter().zip(p).map(|(a, b)| (a - b) * (a - b)).sum()
                        };
                        (0..k)
                            .filter(|&c| c != predicted[q.input])
                            .min_by(|&a, &b| dist(a).total_cmp(&dist(b)))
                            .expect("a classifier has at least two classes")
                    })
                    .collect()
            }
        }
    }

    /// Gradient of the smooth part of the loss at the slack point `y`, clipped.
    fn grad(
        &self,
        y: Tensor<A::InnerBackend, 4>,
        x0: &Tensor<A::InnerBackend, 4>,
        orig: &Tensor<A::InnerBackend, 2>,
        proto: &Tensor<A::InnerBackend, 4>,
        c: &[f64],
    ) -> Tensor<A::InnerBackend, 4> {
        let cfg = &self.config;
        let ya = leaf::<A>(y);
        let probs = softmax(self.model.logits(ya.clone()), 1);
        let orig = Tensor::<A, 2>::from_inner(orig.clone());
        let p_orig = (probs.clone() * orig.clone()).sum_dim(1);
        // Excluding the original class by pushing it below every probability.
        let p_other = (probs - orig.mul_scalar(2.0)).max_dim(1);
        let n = c.len();
        let attack = (p_orig - p_other)
            .add_scalar(cfg.kappa)
            .clamp_min(0.0)
            .reshape([n]);
        let c_t = Tensor::<A, 1>::from_inner(column(c, &ya.device()));
        let x0a = Tensor::<A, 4>::from_inner(x0.clone());
        let mut loss = (attack * c_t).sum() + l2sq(ya.clone(), x0a).sum();
        if cfg.gamma > 0.0 {
            let rec = self.autoencoder.reconstruct(ya.clone());
            loss = loss + l2sq(rec, ya.clone()).sum().mul_scalar(cfg.gamma);
        }
        if cfg.theta > 0.0 {
            let enc = self.autoencoder.encode(ya.clone());
            let p = Tensor::<A, 4>::from_inner(proto.clone());
            loss = loss + l2sq(enc, p).sum().mul_scalar(cfg.theta);
        }
        let grads = loss.backward();
        ya.grad(&grads)
            .expect("the input is a tracked leaf")
            .clamp(-cfg.clip, cfg.clip)
    }
}

impl<A: AutodiffBackend> Explainer<A::InnerBackend> for Gl<A> {
    fn name(&self) -> String {
        "gl".into()
    }

    fn classifier(&self) -> &dyn Classifier<A::InnerBackend> {
        &self.inner
    }

    fn explain(
        &self,
        x: Tensor<A::InnerBackend, 4>,
        queries: &[Query],
    ) -> Result<Explanation<A::InnerBackend>, ExplainError> {
        type I<A> = <A as AutodiffBackend>::InnerBackend;
        let predicted = predict_checked(&self.inner, &x, queries)?;
        let device = x.device();
        let q = queries.len();
        let cfg = &self.config;
        let k = self.inner.n_classes();
        let ((best, found), seconds) = timed::<I<A>, _>(&device, || {
            let x0 = x
                .clone()
                .select(0, query_index(queries, &device, |q| q.input));
            let orig = query_index::<I<A>>(queries, &device, |q| predicted[q.input])
                .one_hot::<2>(k)
                .float();
            let guides = self.guide_classes(&x0, queries, &predicted);
            let proto = self
                .prototypes
                .clone()
                .select(0, crate::explainer::indices(&guides, &device));
            let (lo, hi) = cfg.feature_range;
            let mut c = vec![cfg.c_init; q];
            let (mut c_lb, mut c_ub) = (vec![0.0; q], vec![1e10; q]);
            let mut best = x0.clone();
            let mut best_dist = vec![f64::INFINITY; q];
            for _ in 0..cfg.c_steps {
                let mut adv = x0.clone();
                let mut slack = x0.clone();
                let mut found_here = vec![false; q];
                for i in 0..cfg.max_iterations {
                    let lr = polynomial_decay(cfg.learning_rate_init, i, cfg.max_iterations, 0.5);
                    let g = self.grad(slack.clone(), &x0, &orig, &proto, &c);
                    // FISTA: gradient step on the slack point, soft-threshold δ by β, momentum.
                    let stepped = slack - g.mul_scalar(lr);
                    let delta = stepped - x0.clone();
                    let shrunk =
                        delta.clone().sign() * (delta.abs().sub_scalar(cfg.beta).clamp_min(0.0));
                    let next = (x0.clone() + shrunk).clamp(lo, hi);
                    let zt = (i + 1) as f64 / (i + 4) as f64;
                    slack = (next.clone() + (next.clone() - adv).mul_scalar(zt)).clamp(lo, hi);
                    adv = next;
                    let classes = predictions(self.inner.logits(adv.clone()));
                    let dist = to_host(
                        l1(adv.clone(), x0.clone()).mul_scalar(cfg.beta)
                            + l2sq(adv.clone(), x0.clone()),
                    );
                    let mut improved = vec![false; q];
                    for j in 0..q {
                        // κ = 0 makes alibi's margin test "another class wins"; with a given
                        // target it must be that class.
                        let solved = match cfg.target_class {
                            TargetClass::Given => classes[j] == queries[j].target,
                            TargetClass::Other => classes[j] != predicted[queries[j].input],
                        };
                        if solved {
                            found_here[j] = true;
                            if dist[j] < best_dist[j] {
                                best_dist[j] = dist[j];
                                improved[j] = true;
                            }
                        }
                    }
                    best = replace_rows(best, adv.clone(), &improved);
                }
                for j in 0..q {
                    if found_here[j] {
                        c_ub[j] = f64::min(c_ub[j], c[j]);
                        if c_ub[j] < 1e9 {
                            c[j] = (c_lb[j] + c_ub[j]) / 2.0;
                        }
                    } else {
                        c_lb[j] = f64::max(c_lb[j], c[j]);
                        c[j] = if c_ub[j] < 1e9 {
                            (c_lb[j] + c_ub[j]) / 2.0
                        } else {
                            c[j] * 10.0
                        };
                    }
                }
            }
            let found: Vec<bool> = best_dist.iter().map(|d| d.is_finite()).collect();
            (best, found)
        });
        Ok(iterative_explanation(
            &self.inner,
            best,
            predicted,
            unsolved(&found),
            seconds,
        ))
    }
}
