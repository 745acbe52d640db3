//! How far the counterfactual moved from its input.

use burn::prelude::*;

use crate::error::Result;
use crate::metric::{Direction, EvalContext, Metric, MetricValue};
use crate::set::CounterfactualSet;

/// Per-sample `(‖x − c‖₁, ‖x − c‖₂)` in the evaluation range. Both ranges Paper 4 uses are one
/// unit wide, so differences are the same as in unit space (EN is shift-invariant and scales
/// with the width, L5520-5521).
fn norms(set: &CounterfactualSet) -> Vec<(f64, f64)> {
    (0..set.len())
        .map(|i| {
            set.input(i)
                .iter()
                .zip(set.counterfactual(i))
                .fold((0.0, 0.0), |(l1, l2), (a, b)| {
                    let d = f64::from(a - b);
                    (l1 + d.abs(), l2 + d * d)
                })
        })
        .map(|(l1, l2sq)| (l1, l2sq.sqrt()))
        .collect()
}

/// Elastic-net distance `EN = ‖x − c‖₁ + ‖x − c‖₂` (seed 004 L5091-5104), lower is a smaller
/// change. Decision: the L2 term is **not** squared, as in the paper and `en.py`'s code; that
/// file's docstring (‖·‖₂²) is wrong (spec §4.3).
pub struct ElasticNet;

impl<B: Backend> Metric<B> for ElasticNet {
    fn name(&self) -> String {
        "EN".into()
    }

    fn direction(&self) -> Direction {
        Direction::Lower
    }

    fn evaluate(&self, set: &CounterfactualSet, _: &EvalContext<B>) -> Result<MetricValue> {
        Ok(MetricValue::PerSample(
            norms(set).into_iter().map(|(l1, l2)| l1 + l2).collect(),
        ))
    }
}

/// C3LT's proximity, `Prox = Σ_n ‖x_n − x′_n‖₁ / (N·C·H·W)` (seed 003 Eq. 10, L256-260): the
/// mean absolute pixel change. Reported per sample (`‖x − x′‖₁/CHW`) so it gets an interval;
/// the mean is the paper's value.
pub struct Proximity;

impl<B: Backend> Metric<B> for Proximity {
    fn name(&self) -> String {
        "Prox".into()
    }

    fn direction(&self) -> Direction {
        Direction::Lower
    }

    fn evaluate(&self, set: &CounterfactualSet, _: &EvalContext<B>) -> Result<MetricValue> {
        let chw = set.pixels_per_image() as f64;
        Ok(MetricValue::PerSample(
            norms(set).into_iter().map(|(l1, _)| l1 / chw).collect(),
        ))
    }
}
