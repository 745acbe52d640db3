use burn::prelude::*;
use cfx_classifiers::{Classifier, DataRange};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::set::CounterfactualSet;

/// Which way is better, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Higher,
    Lower,
}

impl Direction {
    pub fn arrow(self) -> &'static str {
        match self {
            Self::Higher => "↑",
            Self::Lower => "↓",
        }
    }
}

/// Which samples a metric sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every sample, failures included (TCV, Val).
    All,
    /// Only counterfactuals that changed the explained model's class (Paper 4's protocol).
    Valid,
}

/// A metric's result before aggregation.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// One score per sample: reported as mean and 95 % confidence interval.
    PerSample(Vec<f64>),
    /// A score of the whole set (FID): no interval (Paper 4 reports none).
    Population(f64),
    /// Per-sample scores plus curves averaged over the samples (COUT's perturbation curves).
    WithCurves(Vec<f64>, Vec<Curve>),
}

/// A named curve over evenly spaced steps, for plots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub name: String,
    pub values: Vec<f64>,
}

/// What every metric gets besides the samples: the explained model (COUT needs its
/// probabilities along the insertion path), the evaluation range, and where to compute.
pub struct EvalContext<'a, B: Backend> {
    pub classifier: &'a dyn Classifier<B>,
    pub range: DataRange,
    pub device: B::Device,
    pub batch_size: usize,
}

/// One counterfactual quality measure. Implementations document their formula, the range
/// they assume and the seed lines that define them.
pub trait Metric<B: Backend> {
    /// Column name in reports, e.g. `IM1` or `LVS[digit]`.
    fn name(&self) -> String;

    fn direction(&self) -> Direction;

    fn scope(&self) -> Scope {
        Scope::Valid
    }

    /// Scores `set`, which already holds only the samples [`Metric::scope`] asks for.
    fn evaluate(&self, set: &CounterfactualSet, ctx: &EvalContext<B>) -> Result<MetricValue>;
}

/// A metric's aggregate: mean with the 95 % interval `1.96·σ/√n`, σ the population standard
/// deviation (Paper 4, L5432-5434; its code uses `np.std`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub metric: String,
    pub direction: Direction,
    pub scope: Scope,
    /// Samples the value is computed over.
    pub n: usize,
    /// `None` when no sample was in scope.
    pub mean: Option<f64>,
    pub ci95: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curves: Vec<Curve>,
    /// Each sample's score with its row in the set given to [`evaluate_all`], so that methods
    /// can be compared input by input (a paired test needs more than two means); empty for a
    /// population metric and where no rows were kept. Kept out of the JSON reports, which
    /// stay one line per aggregate.
    #[serde(skip)]
    pub scores: Vec<(usize, f64)>,
}

/// Mean and `1.96·σ/√n` of `values` (`None` for an empty slice).
pub fn mean_ci(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    Some((mean, 1.96 * var.sqrt() / n.sqrt()))
}

/// Runs each metric on its scope of `set` and aggregates.
pub fn evaluate_all<B: Backend>(
    metrics: &[Box<dyn Metric<B> + '_>],
    set: &CounterfactualSet,
    ctx: &EvalContext<B>,
) -> Result<Vec<Summary>> {
    set.validate()?;
    let valid_rows = set.valid_indices();
    let valid = set.subset(&valid_rows);
    let all_rows: Vec<usize> = (0..set.len()).collect();
    metrics
        .iter()
        .map(|m| {
            let (scoped, rows) = match m.scope() {
                Scope::All => (set, &all_rows),
                Scope::Valid => (&valid, &valid_rows),
            };
            let value = if scoped.is_empty() {
                None
            } else {
                Some(m.evaluate(scoped, ctx)?)
            };
            let scores = match &value {
                Some(MetricValue::PerSample(v) | MetricValue::WithCurves(v, _)) => {
                    rows.iter().copied().zip(v.iter().copied()).collect()
                }
                _ => vec![],
            };
            let mut s = summarise(m.name(), m.direction(), m.scope(), scoped.len(), value);
            s.scores = scores;
            Ok(s)
        })
        .collect()
}

/// Aggregates one metric's value over `n` samples (`None`: no sample was in scope).
pub fn summarise(
    metric: String,
    direction: Direction,
    scope: Scope,
    n: usize,
    value: Option<MetricValue>,
) -> Summary {
    let (mut mean, mut ci95, mut curves) = (None, None, vec![]);
    let scores = match value {
        None => vec![],
        Some(MetricValue::PerSample(v)) => v,
        Some(MetricValue::WithCurves(v, c)) => {
            curves = c;
            v
        }
        Some(MetricValue::Population(v)) => {
            mean = Some(v);
            vec![]
        }
    };
    if let Some((m, c)) = mean_ci(&scores) {
        (mean, ci95) = (Some(m), Some(c));
    }
    Summary {
        metric,
        direction,
        scope,
        n,
        mean,
        ci95,
        curves,
        scores: vec![],
    }
}

/// Runs `f` on the set's counterfactuals (or inputs) batch by batch and concatenates the rows
/// of its `[b, k]` results on the host.
pub(crate) fn map_rows<B: Backend>(
    set: &CounterfactualSet,
    ctx: &EvalContext<B>,
    counterfactuals: bool,
    f: impl Fn(Tensor<B, 4>, std::ops::Range<usize>) -> Tensor<B, 2>,
) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(set.len());
    for rows in set.chunks(ctx.batch_size) {
        let x = if counterfactuals {
            set.counterfactual_tensor::<B>(rows.clone(), &ctx.device)
        } else {
            set.input_tensor::<B>(rows.clone(), &ctx.device)
        };
        let y = f(x, rows);
        let [b, k] = y.dims();
        let v: Vec<f32> = y
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap_or_default();
        out.extend((0..b).map(|i| v[i * k..(i + 1) * k].to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_interval_uses_the_population_std() {
        // values 1, 3: mean 2, σ = 1, CI = 1.96/√2.
        let (m, c) = mean_ci(&[1.0, 3.0]).unwrap();
        assert_eq!(m, 2.0);
        assert!((c - 1.96 / 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(mean_ci(&[]), None);
        assert_eq!(mean_ci(&[5.0]), Some((5.0, 0.0)));
    }
}
