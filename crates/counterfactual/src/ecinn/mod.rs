//! ECINN (Hvilshøj et al., seeds 001 and 004 ch. 3): counterfactuals of a conditional INN in
//! closed form, `x̂ = f⁻¹(f(x) + αΔ_{p,q})`, `Δ_{p,q} = μ̄_q − μ̄_p`.

mod alpha;
mod means;
mod pixels;
#[cfg(test)]
mod tests;

use burn::prelude::*;
use cfx_classifiers::{Classifier, IbInnClassifier, predictions};

pub use alpha::{Alpha1Rule, AlphaChoice, alpha0, alpha1};
pub use means::{ClassMeans, ClassMeansBuilder, MeansCacheKey};
pub use pixels::EcinnPixels;

use crate::explainer::{check_shape, query_index, timed};
use crate::input_optim::column;
use crate::{ExplainError, Explainer, Explanation, Query, check_queries};

/// Which class centres give ECINN's direction `Δ_{p,q}`.
///
/// Seed 001 §3.3 (lines 105–107) takes the *empirical* means `μ̄_j` of the training latents
/// grouped by predicted class, not the model's GMM means `μ_j` (which it keeps for α0 only).
/// The two coincide only once every class's latents have become `N(μ_j, I)`; a model short of
/// that maps its classes elsewhere, and `μ̄_q − μ̄_p` is the direction its data actually moves
/// in. [`DeltaMeans::Gmm`] exists as the ablation that measures how much that choice matters
/// (docs/results.md, "ECINN counterfactuals").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeltaMeans {
    /// `Δ = μ̄_q − μ̄_p`, the seed's.
    #[default]
    Empirical,
    /// `Δ = μ_q − μ_p`, the model's GMM means.
    Gmm,
}

impl DeltaMeans {
    pub fn name(self) -> &'static str {
        match self {
            DeltaMeans::Empirical => "empirical",
            DeltaMeans::Gmm => "gmm",
        }
    }
}

impl std::str::FromStr for DeltaMeans {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "empirical" => Ok(DeltaMeans::Empirical),
            "gmm" => Ok(DeltaMeans::Gmm),
            other => Err(format!("{other:?}: expected empirical or gmm")),
        }
    }
}

/// ECINN over a trained IB-INN and its empirical class means.
#[derive(Debug, Clone)]
pub struct Ecinn<B: Backend> {
    pub classifier: IbInnClassifier<B>,
    /// `μ̄`, `[K, D]`.
    means: Tensor<B, 2>,
    /// The centres `Δ` is taken between.
    pub delta: DeltaMeans,
    /// The α that [`Explainer::explain`] uses.
    pub alpha: AlphaChoice,
    /// What the inverse pass is made into before it is returned or classified.
    pub pixels: EcinnPixels,
    /// Latents per inverse pass (bounds memory when many targets and α are decoded at once).
    pub decode_batch: usize,
}

/// Counterfactuals at several α for every query: row `i·A + a` is query `i` at choice `a`.
#[derive(Debug, Clone)]
pub struct EcinnOutput<B: Backend> {
    /// Unit space, `[Q·A, C, H, W]`.
    pub counterfactuals: Tensor<B, 4>,
    /// The α of each row, `[Q·A]`.
    pub alphas: Vec<f64>,
    /// α0 of each query, `[Q]`.
    pub alpha0: Vec<f64>,
    /// Predicted class of each input, `[N]`.
    pub predicted: Vec<usize>,
    /// Per row: the inverse pass put a pixel outside [`PIXEL_SLACK`] of `[0, 1]` (unit scale,
    /// before [`EcinnPixels`] makes it an image), or a NaN. Why: on some trained models the
    /// inverse diverges for a share of the queries (docs/results.md, "Where the inverse leaves
    /// the range"); such an `x̂` is scored like any other, and in image mode the clamp hides
    /// it as noise, so the caller is told which rows they are.
    pub out_of_range: Vec<bool>,
    /// Forward pass, α, and inverse passes, device synchronised.
    pub seconds: f64,
}

/// How far outside `[0, 1]` a counterfactual's pixel may lie before
/// [`EcinnOutput::out_of_range`] flags it: half the pixel range. On the FakeMNIST model of
/// docs/results.md ("Where the inverse leaves the range") the median α1 counterfactual that
/// stays near its input (mean change < 0.1 per pixel) reaches 0.25 beyond `[0, 1]`, the
/// diverged ones 1e2–1e5; with this slack 32 % of that model's α1 counterfactuals are flagged,
/// against 20.6 % diverged by mean change (the flag also catches excursions of a few pixels).
pub const PIXEL_SLACK: f64 = 0.5;

/// Per image of `unit` (`[N, C, H, W]`, unit scale): a pixel lies more than [`PIXEL_SLACK`]
/// outside `[0, 1]`, or is NaN. `[N]`.
pub fn pixels_out_of_range<B: Backend>(unit: Tensor<B, 4>) -> Tensor<B, 1, Bool> {
    let n = unit.dims()[0];
    let reach = unit
        .sub_scalar(0.5)
        .abs()
        .reshape([n as i32, -1])
        .max_dim(1)
        .reshape([n]);
    // `≤` is false for NaN, so a NaN row counts as out of range.
    reach.lower_equal_elem(0.5 + PIXEL_SLACK).bool_not()
}

impl<B: Backend> Ecinn<B> {
    pub fn new(classifier: IbInnClassifier<B>, means: &ClassMeans) -> Result<Self, ExplainError> {
        let (k, d) = (classifier.model.n_classes(), classifier.model.dim());
        if means.n_classes() != k || means.dim != d {
            return Err(ExplainError::Means(format!(
                "the class means are {}×{}, but the model has {k} classes of dimension {d}",
                means.n_classes(),
                means.dim
            )));
        }
        let device = classifier.model.mu.val().device();
        Ok(Self {
            means: means.to_tensor(&device),
            classifier,
            alpha: AlphaChoice::Convincing(Alpha1Rule::default()),
            delta: DeltaMeans::default(),
            pixels: EcinnPixels::default(),
            decode_batch: 1024,
        })
    }

    pub fn with_alpha(mut self, alpha: AlphaChoice) -> Self {
        self.alpha = alpha;
        self
    }

    pub fn with_delta(mut self, delta: DeltaMeans) -> Self {
        self.delta = delta;
        self
    }

    pub fn with_pixels(mut self, pixels: EcinnPixels) -> Self {
        self.pixels = pixels;
        self
    }

    /// The class centres `Δ` is taken between, `[K, D]`.
    pub fn delta_centres(&self) -> Tensor<B, 2> {
        match self.delta {
            DeltaMeans::Empirical => self.means.clone(),
            DeltaMeans::Gmm => self.classifier.model.mu.val(),
        }
    }

    /// One forward pass over `x`, α0 for every query, then all `Q·A` latents decoded.
    pub fn explain_alphas(
        &self,
        x: Tensor<B, 4>,
        queries: &[Query],
        choices: &[AlphaChoice],
    ) -> Result<EcinnOutput<B>, ExplainError> {
        check_shape(&self.classifier, x.dims())?;
        let device = x.device();
        let model = &self.classifier.model;
        let dims = x.dims();
        let ((z, predicted), t_forward) = timed::<B, _>(&device, || {
            let (z, _) = model.encode(self.classifier.to_model(x));
            let predicted = predictions(model.logits_from_latent(z.clone()));
            (z, predicted)
        });
        check_queries(&self.classifier, dims, &predicted, queries)?;
        if queries.is_empty() || choices.is_empty() {
            let [_, c, h, w] = dims;
            return Ok(EcinnOutput {
                counterfactuals: Tensor::empty([0, c, h, w], &device),
                alphas: vec![],
                alpha0: vec![],
                predicted,
                out_of_range: vec![],
                seconds: t_forward,
            });
        }
        let ((cf, out_of_range, alphas, a0), t_rest) = timed::<B, _>(&device, || {
            let (moved, alphas, a0) = self.moved_latents(z, &predicted, queries, choices);
            let (cf, out_of_range) = self.decode(moved);
            (cf, out_of_range, alphas, a0)
        });
        // Through integers: backends store booleans as bytes or words.
        let out_of_range = out_of_range
            .int()
            .into_data()
            .convert::<i64>()
            .into_vec::<i64>()
            .map_err(|e| ExplainError::Method {
                method: "ecinn".into(),
                what: format!("reading the out-of-range flags back: {e:?}"),
            })?
            .into_iter()
            .map(|v| v != 0)
            .collect();
        Ok(EcinnOutput {
            counterfactuals: cf,
            alphas,
            alpha0: a0,
            predicted,
            out_of_range,
            seconds: t_forward + t_rest,
        })
    }

    /// `z + αΔ` for every query at every choice, row `i·A + a` being query `i` at choice `a`,
    /// with the α of each row and α0 of each query. `z`, `[N, D]`: the inputs' latents;
    /// `predicted`: their classes. `cargo xtask inverse-trace` decodes these block by block.
    pub fn moved_latents(
        &self,
        z: Tensor<B, 2>,
        predicted: &[usize],
        queries: &[Query],
        choices: &[AlphaChoice],
    ) -> (Tensor<B, 2>, Vec<f64>, Vec<f64>) {
        let device = z.device();
        let (inputs, from, to) = (
            query_index::<B>(queries, &device, |q| q.input),
            query_index::<B>(queries, &device, |q| predicted[q.input]),
            query_index::<B>(queries, &device, |q| q.target),
        );
        let zq = z.select(0, inputs);
        let mu = self.classifier.model.mu.val();
        let centres = self.delta_centres();
        let delta = centres.clone().select(0, to.clone()) - centres.select(0, from.clone());
        let a0 = alpha0(
            zq.clone(),
            mu.clone().select(0, from),
            mu.select(0, to),
            delta.clone(),
        );
        let a0: Vec<f64> = a0
            .into_data()
            .convert::<f64>()
            .into_vec()
            .unwrap_or_default();
        let alphas: Vec<f64> = a0
            .iter()
            .flat_map(|&a| choices.iter().map(move |c| c.resolve(a)))
            .collect();
        let a = choices.len();
        let d = zq.dims()[1];
        let rep = |t: Tensor<B, 2>| {
            t.unsqueeze_dim::<3>(1)
                .repeat_dim(1, a)
                .reshape([queries.len() * a, d])
        };
        let at = column::<B>(&alphas, &device);
        let moved = rep(zq) + rep(delta) * at.unsqueeze_dim::<2>(1);
        (moved, alphas, a0)
    }

    /// `f⁻¹` in chunks of `decode_batch`, back to unit space, made into [`Self::pixels`], with
    /// [`EcinnOutput::out_of_range`]'s flags.
    fn decode(&self, z: Tensor<B, 2>) -> (Tensor<B, 4>, Tensor<B, 1, Bool>) {
        let raw = map_chunks(z, self.decode_batch, |part| {
            self.classifier.to_unit(self.classifier.model.decode(part))
        });
        let out = pixels_out_of_range(raw.clone());
        (self.pixels.apply(raw), out)
    }

    /// `p(y | x)` in chunks of `decode_batch`.
    pub fn probabilities(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        map_chunks(x, self.decode_batch, |part| {
            self.classifier.probabilities(part)
        })
    }
}

/// `f` over consecutive row blocks of `x` of at most `rows` rows, concatenated.
fn map_chunks<B: Backend, const D: usize, const E: usize>(
    x: Tensor<B, D>,
    rows: usize,
    f: impl Fn(Tensor<B, D>) -> Tensor<B, E>,
) -> Tensor<B, E> {
    let n = x.dims()[0];
    let step = rows.max(1);
    let parts = (0..n)
        .step_by(step)
        .map(|s| f(x.clone().slice(s..(s + step).min(n))))
        .collect();
    Tensor::cat(parts, 0)
}

impl<B: Backend> Explainer<B> for Ecinn<B> {
    fn name(&self) -> String {
        "ecinn".into()
    }

    fn classifier(&self) -> &dyn Classifier<B> {
        &self.classifier
    }

    fn explain(&self, x: Tensor<B, 4>, queries: &[Query]) -> Result<Explanation<B>, ExplainError> {
        let out = self.explain_alphas(x, queries, &[self.alpha])?;
        let probabilities = if out.alphas.is_empty() {
            Tensor::empty(
                [0, self.classifier.n_classes()],
                &out.counterfactuals.device(),
            )
        } else {
            self.probabilities(out.counterfactuals.clone())
        };
        Ok(Explanation {
            counterfactuals: out.counterfactuals,
            probabilities,
            predicted: out.predicted,
            found: vec![true; queries.len()],
            misses: vec![None; queries.len()],
            alphas: out.alphas.into_iter().map(Some).collect(),
            seconds: out.seconds,
        })
    }
}
