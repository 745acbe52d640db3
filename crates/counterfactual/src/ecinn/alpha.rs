use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// How α1, the step of a *convincing* counterfactual, follows from the tipping point α0.
///
/// The seeds disagree (spec §1.5): the arXiv ECINN paper and the authors' code use
/// `α1 = 0.8 + α0/2`; the BMVC paper and the thesis use `α1 = α0 + t(1 − α0)` with `t = 0.8`.
/// Paper 4's numbers were produced with the code, so [`Alpha1Rule::ArxivCode`] is the default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Alpha1Rule {
    /// `0.8 + 0.5·α0` (arXiv Eq. after (3); `compute_and_store.py`).
    #[default]
    ArxivCode,
    /// `α0 + t(1 − α0)` (BMVC Eq. 8; `t = 0.8` in the paper, Fig. 7 sweeps 0.2…1.4).
    Bmvc { t: f64 },
}

/// α1 from α0 under `rule`.
pub fn alpha1(alpha0: f64, rule: Alpha1Rule) -> f64 {
    match rule {
        Alpha1Rule::ArxivCode => 0.8 + 0.5 * alpha0,
        Alpha1Rule::Bmvc { t } => alpha0 + t * (1.0 - alpha0),
    }
}

/// Which point on the line `z + αΔ` to decode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "alpha", rename_all = "snake_case")]
pub enum AlphaChoice {
    /// α0: on the decision boundary between the predicted and the target class.
    Tipping,
    /// α1: a convincing counterfactual.
    Convincing(Alpha1Rule),
    /// A fixed α (1 moves the latent by the whole difference of the class means).
    Fixed { value: f64 },
}

impl AlphaChoice {
    pub fn resolve(self, alpha0: f64) -> f64 {
        match self {
            Self::Tipping => alpha0,
            Self::Convincing(rule) => alpha1(alpha0, rule),
            Self::Fixed { value } => value,
        }
    }

    /// Label for tables and file names: `alpha0`, `alpha1`, `alpha1-t0.8`, `alpha=1.5`.
    pub fn label(self) -> String {
        match self {
            Self::Tipping => "alpha0".into(),
            Self::Convincing(Alpha1Rule::ArxivCode) => "alpha1".into(),
            Self::Convincing(Alpha1Rule::Bmvc { t }) => format!("alpha1-t{t}"),
            Self::Fixed { value } => format!("alpha={value}"),
        }
    }
}

/// The tipping point α0 per row (Appendix A of the ECINN paper, spec §1.4): where the line
/// `z + αΔ` crosses the boundary `wᵀz + b = 0` between the model's Gaussians `N(μ_p, I)` and
/// `N(μ_q, I)`, with `w = μ_q − μ_p`, `b = −½(μ_p + μ_q)ᵀw`: `α0 = −(wᵀz + b)/(wᵀΔ)`.
///
/// `z`, `mu_p`, `mu_q`, `delta`: `[Q, D]` (the means are the *model's* GMM means, `delta` the
/// difference of the empirical class means). Returns `[Q]`.
pub fn alpha0<B: Backend>(
    z: Tensor<B, 2>,
    mu_p: Tensor<B, 2>,
    mu_q: Tensor<B, 2>,
    delta: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let q = z.dims()[0];
    let w = mu_q.clone() - mu_p.clone();
    // wᵀz + b = wᵀ(z − (μ_p + μ_q)/2): one reduction, no cancellation between two large terms.
    let mid = (mu_p + mu_q).mul_scalar(0.5);
    let num = (w.clone() * (z - mid)).sum_dim(1);
    let den = (w * delta).sum_dim(1);
    num.neg().div(den).reshape([q])
}
