//! Gradient attributions of the logit contrast `F = logit_p − logit_q`, batched over queries,
//! for any [`Classifier`] on an autodiff backend (the CNN and the IB-INN posterior alike).
//!
//! Gradients are taken in [`mode::inference`] (running batch-norm statistics, no dropout): the
//! function explained is the trained classifier, not its training-mode variant.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::Classifier;
use cfx_flows::nn::mode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::{Attribution, Heatmaps};
use crate::explainer::{predict_checked, query_index, timed};
use crate::{ExplainError, Query};

/// Which attribution, with its settings. Baselines are unit-space images: a constant value for
/// the single-reference methods (0 is the black background of the MNIST family), a set of
/// images (see [`GradientAttribution::with_baselines`]) for the SHAP variants.
#[derive(Debug, Clone, PartialEq)]
pub enum GradientMethod {
    /// `|∂F/∂x|` (Simonyan et al. 2014; Captum's `Saliency`, whose default takes the absolute
    /// value).
    Saliency,
    /// `(x − x₀)·(1/m)Σₖ ∂F/∂x(x₀ + αₖ(x − x₀))` with `αₖ = (k + ½)/m`: the midpoint rule for
    /// Sundararajan et al.'s path integral, whose sum approaches `F(x) − F(x₀)`
    /// (completeness) as `m` grows.
    IntegratedGradients { steps: usize, baseline: f32 },
    /// Captum's `GradientShap`: per sample a random baseline `b` from the set, `α ~ U(0, 1)` and
    /// Gaussian input noise `ε`, attribution `(x − b)·∂F/∂x(b + α(x + ε − b))`, averaged.
    GradShap {
        samples: usize,
        stdev: f32,
        seed: u64,
    },
    /// DeepLift with the rescale rule against a constant reference (see [`mode::rescale_pairs`]
    /// for how the multipliers are propagated): `(x − x₀)·m`, which sums to `F(x) − F(x₀)`
    /// exactly on networks of linear layers, ReLUs and max-pooling.
    DeepLift { baseline: f32 },
    /// DeepLift averaged over the baseline set (Lundberg & Lee 2017; Captum's `DeepLiftShap`).
    DeepLiftShap,
}

impl GradientMethod {
    /// Captum's defaults where it has them (IG: 50 steps; GradSHAP: 5 samples, no noise) and a
    /// black reference.
    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            "saliency" => Self::Saliency,
            "intgrad" => Self::IntegratedGradients {
                steps: 50,
                baseline: 0.0,
            },
            "gradshap" => Self::GradShap {
                samples: 5,
                stdev: 0.0,
                seed: 0,
            },
            "deeplift" => Self::DeepLift { baseline: 0.0 },
            "deepliftshap" => Self::DeepLiftShap,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Saliency => "saliency",
            Self::IntegratedGradients { .. } => "intgrad",
            Self::GradShap { .. } => "gradshap",
            Self::DeepLift { .. } => "deeplift",
            Self::DeepLiftShap => "deepliftshap",
        }
    }

    fn needs_baselines(&self) -> bool {
        matches!(self, Self::GradShap { .. } | Self::DeepLiftShap)
    }
}

type Inner<A> = <A as AutodiffBackend>::InnerBackend;

/// A [`GradientMethod`] over one model, given twice: on the autodiff backend for gradients and
/// on its inner backend for predictions (the two must be the same weights).
pub struct GradientAttribution<A: AutodiffBackend> {
    model: Box<dyn Classifier<A>>,
    inner: Box<dyn Classifier<Inner<A>>>,
    pub method: GradientMethod,
    baselines: Option<Tensor<Inner<A>, 4>>,
    /// Images per backward pass.
    pub batch_size: usize,
}

impl<A: AutodiffBackend> GradientAttribution<A> {
    pub fn new(
        model: Box<dyn Classifier<A>>,
        inner: Box<dyn Classifier<Inner<A>>>,
        method: GradientMethod,
    ) -> Self {
        Self {
            model,
            inner,
            method,
            baselines: None,
            batch_size: 256,
        }
    }

    /// The baseline distribution of GradSHAP and DeepLiftSHAP, `[R, C, H, W]` unit-space images
    /// (typically a random sample of training images).
    pub fn with_baselines(mut self, baselines: Tensor<Inner<A>, 4>) -> Self {
        self.baselines = Some(baselines);
        self
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(2);
        self
    }

    /// The SHAP methods' baseline set, checked against inputs of `x_dims`; `None` for the
    /// other methods.
    fn baselines(&self, x_dims: [usize; 4]) -> Result<Option<Tensor<Inner<A>, 4>>, ExplainError> {
        if !self.method.needs_baselines() {
            return Ok(None);
        }
        match &self.baselines {
            None => Err(self.error("needs baseline images (with_baselines)".into())),
            Some(b) if b.dims()[1..] != x_dims[1..] || b.dims()[0] == 0 => {
                Err(self.error(format!(
                    "baselines are {:?}, the inputs {:?} (need at least one image of the same \
                     C, H, W)",
                    b.dims(),
                    x_dims
                )))
            }
            Some(b) => Ok(Some(b.clone())),
        }
    }

    fn error(&self, what: String) -> ExplainError {
        ExplainError::Method {
            method: self.method.name().into(),
            what,
        }
    }

    /// `∂F/∂x` of one chunk; with `paired`, `points` is `[x; x₀]` and the multipliers of the
    /// input half come back.
    fn grad_chunk(
        &self,
        points: Tensor<Inner<A>, 4>,
        from: &[usize],
        to: &[usize],
        paired: bool,
    ) -> Tensor<Inner<A>, 4> {
        let n = from.len();
        let x = Tensor::<A, 4>::from_inner(points).require_grad();
        let logits = {
            let _mode = if paired {
                mode::rescale_pairs()
            } else {
                mode::inference()
            };
            self.model.logits(x.clone())
        };
        let logits = logits.narrow(0, 0, n);
        let device = logits.device();
        let index = |c: &[usize]| {
            let v: Vec<i64> = c.iter().map(|&k| k as i64).collect();
            Tensor::<A, 2, Int>::from_data(TensorData::new(v, [n, 1]), &device)
        };
        let contrast = logits.clone().gather(1, index(from)) - logits.gather(1, index(to));
        let grads = contrast.sum().backward();
        let dims = x.dims();
        let g = x
            .grad(&grads)
            .unwrap_or_else(|| Tensor::zeros(dims, &x.device().clone()));
        g.narrow(0, 0, n)
    }

    /// `∂F/∂x` at every row of `points` (contrast classes per row), `batch_size` rows at a time.
    fn grads(
        &self,
        points: Tensor<Inner<A>, 4>,
        from: &[usize],
        to: &[usize],
    ) -> Tensor<Inner<A>, 4> {
        let rows = from.len();
        let step = self.batch_size.max(1);
        let parts = (0..rows)
            .step_by(step)
            .map(|s| {
                let e = (s + step).min(rows);
                self.grad_chunk(points.clone().slice(s..e), &from[s..e], &to[s..e], false)
            })
            .collect();
        Tensor::cat(parts, 0)
    }

    /// DeepLift multipliers of `x` against `reference` (same shape), in chunks of whole pairs.
    fn multipliers(
        &self,
        x: Tensor<Inner<A>, 4>,
        reference: Tensor<Inner<A>, 4>,
        from: &[usize],
        to: &[usize],
    ) -> Tensor<Inner<A>, 4> {
        let rows = from.len();
        let step = (self.batch_size / 2).max(1);
        let parts = (0..rows)
            .step_by(step)
            .map(|s| {
                let e = (s + step).min(rows);
                let pair = Tensor::cat(
                    vec![x.clone().slice(s..e), reference.clone().slice(s..e)],
                    0,
                );
                self.grad_chunk(pair, &from[s..e], &to[s..e], true)
            })
            .collect();
        Tensor::cat(parts, 0)
    }

    /// Attributions of the query inputs `x` `[Q, …]` for the contrasts `from`/`to`.
    fn attribute(
        &self,
        x: Tensor<Inner<A>, 4>,
        baselines: Option<Tensor<Inner<A>, 4>>,
        from: &[usize],
        to: &[usize],
    ) -> Result<Tensor<Inner<A>, 4>, ExplainError> {
        let dims = x.dims();
        let q = dims[0];
        let device = x.device();
        let repeat = |c: &[usize], times: usize| -> Vec<usize> {
            (0..times).flat_map(|_| c.iter().copied()).collect()
        };
        Ok(match &self.method {
            GradientMethod::Saliency => self.grads(x, from, to).abs(),
            GradientMethod::IntegratedGradients { steps, baseline } => {
                let m = (*steps).max(1);
                let x0 = Tensor::full(dims, *baseline, &device);
                let delta = x - x0.clone();
                let points = (0..m)
                    .map(|k| {
                        let a = (k as f32 + 0.5) / m as f32;
                        x0.clone() + delta.clone().mul_scalar(a)
                    })
                    .collect();
                let g = self.grads(Tensor::cat(points, 0), &repeat(from, m), &repeat(to, m));
                let [_, c, h, w] = dims;
                g.reshape([m, q, c, h, w]).mean_dim(0).reshape(dims) * delta
            }
            GradientMethod::GradShap {
                samples,
                stdev,
                seed,
            } => {
                let s = (*samples).max(1);
                let b = baselines.expect("baselines() gives the SHAP methods their set");
                let r = b.dims()[0];
                let per_image = dims[1] * dims[2] * dims[3];
                let mut rng = StdRng::seed_from_u64(*seed);
                let noise = Normal::new(0.0f32, stdev.abs())
                    .map_err(|e| self.error(format!("stdev {stdev}: {e}")))?;
                let picks: Vec<i64> = (0..s * q).map(|_| rng.random_range(0..r) as i64).collect();
                let alphas: Vec<f32> = (0..s * q).map(|_| rng.random::<f32>()).collect();
                let eps: Vec<f32> = (0..s * q * per_image)
                    .map(|_| noise.sample(&mut rng))
                    .collect();
                let chosen = b.select(
                    0,
                    Tensor::from_data(TensorData::new(picks, [s * q]), &device),
                );
                let xs = Tensor::cat(vec![x.clone(); s], 0);
                let a = Tensor::<Inner<A>, 1>::from_data(TensorData::new(alphas, [s * q]), &device)
                    .reshape([s * q, 1, 1, 1]);
                let e = Tensor::<Inner<A>, 1>::from_data(
                    TensorData::new(eps, [s * q * per_image]),
                    &device,
                )
                .reshape([s * q, dims[1], dims[2], dims[3]]);
                let points = chosen.clone() + (xs.clone() + e - chosen.clone()) * a;
                let g = self.grads(points, &repeat(from, s), &repeat(to, s));
                let [_, c, h, w] = dims;
                (g * (xs - chosen))
                    .reshape([s, q, c, h, w])
                    .mean_dim(0)
                    .reshape(dims)
            }
            GradientMethod::DeepLift { baseline } => {
                let x0 = Tensor::full(dims, *baseline, &device);
                let m = self.multipliers(x.clone(), x0.clone(), from, to);
                (x - x0) * m
            }
            GradientMethod::DeepLiftShap => {
                let b = baselines.expect("baselines() gives the SHAP methods their set");
                let r = b.dims()[0];
                let mut sum = Tensor::<Inner<A>, 4>::zeros(dims, &device);
                for j in 0..r {
                    let x0 = b.clone().slice(j..j + 1).expand(dims);
                    let m = self.multipliers(x.clone(), x0.clone(), from, to);
                    sum = sum + (x.clone() - x0) * m;
                }
                sum.div_scalar(r as f32)
            }
        })
    }
}

impl<A: AutodiffBackend> Attribution<Inner<A>> for GradientAttribution<A> {
    fn name(&self) -> String {
        self.method.name().into()
    }

    fn classifier(&self) -> &dyn Classifier<Inner<A>> {
        self.inner.as_ref()
    }

    fn heatmaps(
        &self,
        x: Tensor<Inner<A>, 4>,
        queries: &[Query],
    ) -> Result<Heatmaps<Inner<A>>, ExplainError> {
        let baselines = self.baselines(x.dims())?;
        let predicted = predict_checked(self.inner.as_ref(), &x, queries)?;
        let device = x.device();
        let from: Vec<usize> = queries.iter().map(|q| predicted[q.input]).collect();
        let to: Vec<usize> = queries.iter().map(|q| q.target).collect();
        let (maps, seconds) = timed::<Inner<A>, _>(&device, || {
            let xq = x.select(0, query_index::<Inner<A>>(queries, &device, |q| q.input));
            self.attribute(xq, baselines, &from, &to)
        });
        Ok(Heatmaps {
            maps: maps?,
            predicted,
            seconds,
        })
    }
}
