//! Metrics that ask independently trained classifiers (oracles) about the counterfactuals.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use cfx_classifiers::{Classifier, CnnClassifier, DataRange, predictions};

use crate::error::{MetricError, Result};
use crate::metric::{Direction, EvalContext, Metric, MetricValue, map_rows};
use crate::set::CounterfactualSet;

pub(crate) fn check_oracle_range<B: Backend>(
    metric: &str,
    oracle: &CnnClassifier<B>,
    range: DataRange,
) -> Result<()> {
    if oracle.input_range() != Some(range) {
        return Err(MetricError::model(
            metric,
            format!(
                "the oracle was trained in {}, the evaluation is in {} (train it on the evaluation's range, Paper 4 L5509)",
                oracle.input_range().map_or("another range", |r| r.label()),
                range.label()
            ),
        ));
    }
    Ok(())
}

/// Oracle score (seed 004 Eq. 4.4, L1807-1823), in %: the share of valid counterfactuals that
/// an independently initialised classifier of the same architecture also puts in the target
/// class. Adversarial changes fool one network, semantic ones transfer (L5252-5260).
///
/// Decision: the formula writes 1[f(c) = o(c)], the text "classified to the target class by
/// both", the authors' `oracle.py` 1[o(c) = q]; we follow the code (the stored target q), which
/// on samples that reached their target is all three.
pub struct Oracle<B: Backend> {
    oracle: CnnClassifier<B>,
}

impl<B: Backend> Oracle<B> {
    pub fn new(oracle: CnnClassifier<B>, range: DataRange) -> Result<Self> {
        check_oracle_range("Oracle", &oracle, range)?;
        Ok(Self { oracle })
    }
}

impl<B: Backend> Metric<B> for Oracle<B> {
    fn name(&self) -> String {
        "Oracle".into()
    }

    fn direction(&self) -> Direction {
        Direction::Higher
    }

    fn evaluate(&self, set: &CounterfactualSet, ctx: &EvalContext<B>) -> Result<MetricValue> {
        let mut scores = Vec::with_capacity(set.len());
        for rows in set.chunks(ctx.batch_size) {
            let x = set.counterfactual_tensor::<B>(rows.clone(), &ctx.device);
            let o = predictions(self.oracle.logits(x));
            scores.extend(
                rows.zip(o)
                    .map(|(i, c)| if c == set.targets[i] { 100.0 } else { 0.0 }),
            );
        }
        Ok(MetricValue::PerSample(scores))
    }
}

/// Jensen–Shannon divergence of two discrete distributions in nats (maximum ln 2), with
/// `0·ln 0 = 0`, as the authors' `lvs.py` computes it.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter()
            .zip(m)
            .filter(|(a, _)| **a > 0.0)
            .map(|(a, m)| a * (a.ln() - m.ln()))
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(q).map(|(a, b)| 0.5 * (a + b)).collect();
    (0.5 * kl(p, &m) + 0.5 * kl(q, &m)).max(0.0)
}

/// Label Variation Score for one label (seed 004 Eq. 4.5, L1834-1842):
/// `LVS_l = mean D_JS[o_l(x) ‖ o_l(cf(x))]`, o_l an oracle's softmax over label l. The label the
/// counterfactual is about should score high (up to ln 2 ≈ 0.693), unrelated labels near 0.
/// On FakeMNIST the fake label is the one to change and the digit label must stay (L5452-5475):
/// `direction` says which of the two roles a label has.
pub struct Lvs<B: Backend> {
    label: String,
    oracle: CnnClassifier<B>,
    direction: Direction,
}

impl<B: Backend> Lvs<B> {
    pub fn new(
        label: impl Into<String>,
        oracle: CnnClassifier<B>,
        range: DataRange,
        direction: Direction,
    ) -> Result<Self> {
        let label = label.into();
        check_oracle_range(&format!("LVS[{label}]"), &oracle, range)?;
        Ok(Self {
            label,
            oracle,
            direction,
        })
    }
}

impl<B: Backend> Metric<B> for Lvs<B> {
    fn name(&self) -> String {
        format!("LVS[{}]", self.label)
    }

    fn direction(&self) -> Direction {
        self.direction
    }

    fn evaluate(&self, set: &CounterfactualSet, ctx: &EvalContext<B>) -> Result<MetricValue> {
        let probs = |cf: bool| map_rows(set, ctx, cf, |x, _| softmax(self.oracle.logits(x), 1));
        let (px, pc) = (probs(false), probs(true));
        let f64s = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
        Ok(MetricValue::PerSample(
            px.iter()
                .zip(&pc)
                .map(|(a, b)| jensen_shannon(&f64s(a), &f64s(b)))
                .collect(),
        ))
    }
}
