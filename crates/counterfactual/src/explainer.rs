use std::time::Instant;

use burn::prelude::*;
use cfx_classifiers::{Classifier, predictions};

use crate::ExplainError;

/// Send input `input` of the batch to class `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Query {
    pub input: usize,
    pub target: usize,
}

/// Which class an iterative baseline (GB, GL) must reach: alibi's `target_class`.
///
/// `Given` sends each query to its own target, as `explain --target` asks. `Other` is alibi's
/// default (`'other'` for `CounterFactual`, `None` for `CounterFactualProto`): any class but the
/// predicted one counts, so GB raises the largest other probability and GL follows the nearest
/// other-class prototype, and the class reached becomes the target. Paper 4 ran both at alibi's
/// defaults (seed 004 L5409-5416) and stored `q = cf_pred` for them, which the metrics compare
/// with (the authors' `oracle.py`, spec §4.7); `cargo xtask evaluate` therefore uses `Other`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetClass {
    #[default]
    Given,
    Other,
}

impl TargetClass {
    /// The name `--baseline-target` takes and reports print.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Given => "given",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for TargetClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TargetClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "given" => Ok(Self::Given),
            "other" => Ok(Self::Other),
            _ => Err(format!("unknown target class rule {s:?} (given, other)")),
        }
    }
}

/// Why a query has no counterfactual.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Miss {
    /// The search ended without a step that met the method's criterion (GB's bisection, GL,
    /// the ascents' threshold).
    NoSolution,
    /// GB: the λ sweep found solutions at fewer than two orders of magnitude, so λ had no lower
    /// bound and no bisection ran; alibi raises there, and Paper 4's data store a failure.
    LambdaNotBracketed,
    /// C3LT: the classifier puts the input outside the pair the maps were trained for.
    OutsidePair,
}

impl Miss {
    /// The name reports and `explanations.json` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSolution => "no-solution",
            Self::LambdaNotBracketed => "lambda-not-bracketed",
            Self::OutsidePair => "outside-pair",
        }
    }
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a method returns for a batch of [`Query`]s, in query order.
#[derive(Debug, Clone)]
pub struct Explanation<B: Backend> {
    /// Unit-space counterfactuals `[Q, C, H, W]`; not clamped (ECINN's inverse may leave
    /// `[0, 1]` slightly, GB at alibi's unbounded default range far). A query without a
    /// solution (GB/GL can fail) holds its input.
    pub counterfactuals: Tensor<B, 4>,
    /// The explained model's `p(y | x̂)`, `[Q, K]`.
    pub probabilities: Tensor<B, 2>,
    /// The explained model's class for each input, `[N]`.
    pub predicted: Vec<usize>,
    /// Whether the method produced a solution it considers valid.
    pub found: Vec<bool>,
    /// Why a query has none: `Some` exactly where `found` is false.
    pub misses: Vec<Option<Miss>>,
    /// The step along the explanation path, where the method has one (ECINN).
    pub alphas: Vec<Option<f64>>,
    /// Wall time of generating the whole batch (device synchronised), without the final
    /// re-classification that fills `probabilities`.
    pub seconds: f64,
}

impl<B: Backend> Explanation<B> {
    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Classes the model gives the counterfactuals.
    pub fn counterfactual_classes(&self) -> Vec<usize> {
        predictions(self.probabilities.clone())
    }
}

/// A counterfactual method: for inputs and target classes, images the explained model assigns to
/// the targets. The CLI and the metrics drive every method through this trait.
pub trait Explainer<B: Backend> {
    /// Short name used in file names and tables (`ecinn`, `gb`, `gl`).
    fn name(&self) -> String;

    /// The model being explained.
    fn classifier(&self) -> &dyn Classifier<B>;

    /// Counterfactuals for `queries` over the unit-space batch `x` (`[N, C, H, W]`). Fails when a
    /// query names an input outside the batch, an unknown class, or the class already predicted.
    fn explain(&self, x: Tensor<B, 4>, queries: &[Query]) -> Result<Explanation<B>, ExplainError>;
}

/// Validates a request against the model and its predictions for the batch.
pub fn check_queries<B: Backend>(
    model: &dyn Classifier<B>,
    x_dims: [usize; 4],
    predicted: &[usize],
    queries: &[Query],
) -> Result<(), ExplainError> {
    let [n, c, h, w] = x_dims;
    let expected = model.input_shape();
    if [c, h, w] != expected {
        return Err(ExplainError::ImageShape {
            expected,
            got: [c, h, w],
        });
    }
    let k = model.n_classes();
    for (i, q) in queries.iter().enumerate() {
        if q.input >= n {
            return Err(ExplainError::NoSuchInput {
                query: i,
                input: q.input,
                n_inputs: n,
            });
        }
        if q.target >= k {
            return Err(ExplainError::UnknownClass {
                target: q.target,
                n_classes: k,
            });
        }
        if predicted[q.input] == q.target {
            return Err(ExplainError::TargetIsPrediction {
                query: i,
                input: q.input,
                target: q.target,
            });
        }
    }
    Ok(())
}

/// The classes `model` predicts for `x`, after checking the request against them: the common
/// start of the methods that take the model as a black box of logits.
pub(crate) fn predict_checked<B: Backend>(
    model: &dyn Classifier<B>,
    x: &Tensor<B, 4>,
    queries: &[Query],
) -> Result<Vec<usize>, ExplainError> {
    check_shape(model, x.dims())?;
    let predicted = predictions(model.logits(x.clone()));
    check_queries(model, x.dims(), &predicted, queries)?;
    Ok(predicted)
}

/// `[Q]` of one index per query (its input row, its target class, …).
pub(crate) fn query_index<B: Backend>(
    queries: &[Query],
    device: &B::Device,
    f: impl Fn(&Query) -> usize,
) -> Tensor<B, 1, Int> {
    let v: Vec<usize> = queries.iter().map(f).collect();
    indices(&v, device)
}

/// `[N]` row indices from host ones, for `select`.
pub(crate) fn indices<B: Backend>(rows: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    Tensor::from_data(TensorData::new(v, [rows.len()]), device)
}

/// The result of an iterative method: its best images, re-classified by `model`.
pub(crate) fn iterative_explanation<B: Backend>(
    model: &dyn Classifier<B>,
    counterfactuals: Tensor<B, 4>,
    predicted: Vec<usize>,
    misses: Vec<Option<Miss>>,
    seconds: f64,
) -> Explanation<B> {
    Explanation {
        probabilities: model.probabilities(counterfactuals.clone()),
        counterfactuals,
        predicted,
        alphas: vec![None; misses.len()],
        found: misses.iter().map(Option::is_none).collect(),
        misses,
        seconds,
    }
}

/// `NoSolution` where a method found nothing.
pub(crate) fn unsolved(found: &[bool]) -> Vec<Option<Miss>> {
    found
        .iter()
        .map(|&f| (!f).then_some(Miss::NoSolution))
        .collect()
}

/// Checks the image shape alone (before anything runs through the model).
pub(crate) fn check_shape<B: Backend>(
    model: &dyn Classifier<B>,
    x_dims: [usize; 4],
) -> Result<(), ExplainError> {
    check_queries(model, x_dims, &[], &[])
}

/// Runs `f`, synchronises `device`, and returns the result with the elapsed seconds.
pub fn timed<B: Backend, T>(device: &B::Device, f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    // A failed sync only loses timing accuracy; the results are read back later anyway.
    let _ = B::sync(device);
    (out, start.elapsed().as_secs_f64())
}
