//! Heatmaps that say which pixels make a model prefer its prediction `p` over a class `q`:
//! ECINNh (seed 001 Eq. 4, `h = x̂⁽q⁾ − x`) and the gradient attributions seed 001 §4.3 compares
//! it with through Captum (Integrated Gradients, GradSHAP, DeepLift, DeepLiftSHAP), plus plain
//! gradient saliency.
//!
//! Every method answers the same pairwise question as ECINNh: the gradient methods attribute
//! the logit contrast `F(x) = logit_p(x) − logit_q(x)`. Seed 001 used binary models, where the
//! class logit and the contrast carry the same information; with ten classes the contrast is the
//! quantity ECINNh's `x̂⁽q⁾ − x` explains.

mod gradient;
#[cfg(test)]
mod tests;

use burn::prelude::*;
use cfx_classifiers::Classifier;

pub use gradient::{GradientAttribution, GradientMethod};

use crate::explainer::query_index;
use crate::{Ecinn, ExplainError, Query};

/// Per query, a heatmap the size of the input.
#[derive(Debug, Clone)]
pub struct Heatmaps<B: Backend> {
    /// `[Q, C, H, W]`, signed where the method is.
    pub maps: Tensor<B, 4>,
    /// The model's class for each input, `[N]`.
    pub predicted: Vec<usize>,
    /// Wall time of the whole batch, device synchronised.
    pub seconds: f64,
}

/// A heatmap method over one model. Takes and returns unit-space inner-backend tensors, like
/// [`crate::Explainer`].
pub trait Attribution<B: Backend> {
    /// Short name for files and tables (`ecinnh`, `intgrad`, …).
    fn name(&self) -> String;

    /// The model whose decision is explained.
    fn classifier(&self) -> &dyn Classifier<B>;

    /// Heatmaps for `queries` over the batch `x`; a query's target is the `q` of "why `p` and
    /// not `q`". Fails on the same requests as [`crate::Explainer::explain`].
    fn heatmaps(&self, x: Tensor<B, 4>, queries: &[Query]) -> Result<Heatmaps<B>, ExplainError>;
}

/// ECINNh: `h(x, q) = x̂⁽q⁾ − x` with ECINN's counterfactual at the explainer's α (seed 001
/// Eq. 4). Positive where the counterfactual adds intensity, negative where it removes it.
#[derive(Debug, Clone)]
pub struct EcinnH<B: Backend>(pub Ecinn<B>);

impl<B: Backend> Attribution<B> for EcinnH<B> {
    fn name(&self) -> String {
        "ecinnh".into()
    }

    fn classifier(&self) -> &dyn Classifier<B> {
        &self.0.classifier
    }

    fn heatmaps(&self, x: Tensor<B, 4>, queries: &[Query]) -> Result<Heatmaps<B>, ExplainError> {
        // ECINN checks the request before anything is selected by it.
        let out = self.0.explain_alphas(x.clone(), queries, &[self.0.alpha])?;
        let inputs = x.select(
            0,
            query_index::<B>(queries, &out.counterfactuals.device(), |q| q.input),
        );
        Ok(Heatmaps {
            maps: out.counterfactuals - inputs,
            predicted: out.predicted,
            seconds: out.seconds,
        })
    }
}
