//! Scores of heatmaps (ECINNh and the gradient attributions), so that seed 001 §4.3's visual
//! comparison gets a number.
//!
//! Deletion and insertion follow Petsiuk et al. (RISE, 2018, §4.1), the test behind seed 001's
//! premise that "removing information from pixels identified as important should cause the
//! predicted class to become less likely" (S1:129): pixels are ranked by the heatmap's absolute
//! value summed over channels (ECINNh's sign is the direction of the change, not evidence for
//! or against `p`, so only the magnitude ranks every method alike), then removed (set to the
//! fill value, black) or inserted (copied into a black image) in that order, `⌈HW/steps⌉`
//! pixels per step. The score is the area under the explained model's `p(source | x_k)` over
//! the fraction of pixels changed (trapezoid rule): low for deletion, high for insertion is
//! better.

use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::error::{MetricError, Result};
use crate::metric::{Curve, Direction, EvalContext, MetricValue, Scope, Summary, summarise};
use crate::path::{curve_area, pixel_order};
use crate::set::image_rows;

/// Heatmaps of one method over one model, on the host: input `i` has `inputs[i·CHW..]`, its
/// heatmap `maps[i·CHW..]`, the model's class `sources[i]` and the compared class
/// `targets[i]`.
#[derive(Debug, Clone, Default)]
pub struct HeatmapSet {
    pub shape: [usize; 3],
    /// Unit space.
    pub inputs: Vec<f32>,
    pub maps: Vec<f32>,
    pub sources: Vec<usize>,
    pub targets: Vec<usize>,
}

impl HeatmapSet {
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    fn chw(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn validate(&self) -> Result<()> {
        let (n, chw) = (self.len(), self.chw());
        let bad = |what: String| Err(MetricError::input("heatmaps", what));
        if chw == 0 {
            return bad(format!("image shape {:?} has a zero dimension", self.shape));
        }
        if self.inputs.len() != n * chw || self.maps.len() != n * chw {
            return bad(format!(
                "{n} samples of {:?} need {} values, got {} inputs and {} heatmap values",
                self.shape,
                n * chw,
                self.inputs.len(),
                self.maps.len()
            ));
        }
        if self.targets.len() != n {
            return bad(format!("{n} sources but {} targets", self.targets.len()));
        }
        if let Some((i, v)) = self.maps.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return bad(format!(
                "heatmap value {v} at sample {}, pixel {}",
                i / chw,
                i % chw
            ));
        }
        Ok(())
    }
}

/// A score of heatmaps. Implementations document their formula.
pub trait HeatmapMetric<B: Backend> {
    fn name(&self) -> String;
    fn direction(&self) -> Direction;
    fn evaluate(&self, set: &HeatmapSet, ctx: &EvalContext<B>) -> Result<MetricValue>;
}

/// Runs each heatmap metric over the whole set and aggregates like [`crate::evaluate_all`].
pub fn evaluate_heatmaps<B: Backend>(
    metrics: &[Box<dyn HeatmapMetric<B> + '_>],
    set: &HeatmapSet,
    ctx: &EvalContext<B>,
) -> Result<Vec<Summary>> {
    set.validate()?;
    metrics
        .iter()
        .map(|m| {
            let value = if set.is_empty() {
                None
            } else {
                Some(m.evaluate(set, ctx)?)
            };
            Ok(summarise(
                m.name(),
                m.direction(),
                Scope::All,
                set.len(),
                value,
            ))
        })
        .collect()
}

/// Area under `p(source)` as the most important pixels are set to `fill`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deletion {
    pub steps: usize,
    pub fill: f32,
}

/// Area under `p(source)` as the most important pixels are copied into an image of `fill`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Insertion {
    pub steps: usize,
    pub fill: f32,
}

impl Default for Deletion {
    fn default() -> Self {
        Self {
            steps: 28,
            fill: 0.0,
        }
    }
}

impl Default for Insertion {
    fn default() -> Self {
        Self {
            steps: 28,
            fill: 0.0,
        }
    }
}

impl<B: Backend> HeatmapMetric<B> for Deletion {
    fn name(&self) -> String {
        "Deletion".into()
    }

    fn direction(&self) -> Direction {
        Direction::Lower
    }

    fn evaluate(&self, set: &HeatmapSet, ctx: &EvalContext<B>) -> Result<MetricValue> {
        perturbation_curves(set, ctx, self.steps, self.fill, false)
    }
}

impl<B: Backend> HeatmapMetric<B> for Insertion {
    fn name(&self) -> String {
        "Insertion".into()
    }

    fn direction(&self) -> Direction {
        Direction::Higher
    }

    fn evaluate(&self, set: &HeatmapSet, ctx: &EvalContext<B>) -> Result<MetricValue> {
        perturbation_curves(set, ctx, self.steps, self.fill, true)
    }
}

/// Rank of every pixel (0 = most important) by `Σ_c |h|`, ties broken by position, as
/// `[N, 1, H, W]` values.
fn pixel_ranks(set: &HeatmapSet) -> Vec<f32> {
    let [c, h, w] = set.shape;
    let hw = h * w;
    let mut ranks = vec![0f32; set.len() * hw];
    for (i, map) in set.maps.chunks(c * hw).enumerate() {
        for (r, p) in pixel_order(map, set.shape).into_iter().enumerate() {
            ranks[i * hw + p] = r as f32;
        }
    }
    ranks
}

fn perturbation_curves<B: Backend>(
    set: &HeatmapSet,
    ctx: &EvalContext<B>,
    steps: usize,
    fill: f32,
    insert: bool,
) -> Result<MetricValue> {
    let name = if insert { "Insertion" } else { "Deletion" };
    let k = ctx.classifier.n_classes();
    if let Some(s) = set.sources.iter().find(|&&s| s >= k) {
        return Err(MetricError::input(
            name,
            format!("source class {s}, but the model has {k} classes"),
        ));
    }
    let steps = steps.max(1);
    let [c, h, w] = set.shape;
    let (n, hw) = (set.len(), h * w);
    let per_step = hw.div_ceil(steps);
    let dev = &ctx.device;
    let inputs = image_rows::<B>(&set.inputs, 0..n, set.shape, dev);
    let ranks = Tensor::<B, 1>::from_floats(pixel_ranks(set).as_slice(), dev).reshape([n, 1, h, w]);
    let sources: Vec<i64> = set.sources.iter().map(|&s| s as i64).collect();
    let sources = Tensor::<B, 2, Int>::from_data(TensorData::new(sources, [n, 1]), dev);
    let batch = ctx.batch_size.max(1);
    // probs[s][i]: p(source_i) after step s.
    let mut probs = vec![vec![0f64; n]; steps + 1];
    for (s, row) in probs.iter_mut().enumerate() {
        let changed = (s * per_step).min(hw) as f32;
        let mask = ranks
            .clone()
            .lower_elem(changed)
            .float()
            .expand([n, c, h, w]);
        let background = Tensor::<B, 4>::full([n, c, h, w], fill, dev);
        let images = if insert {
            background.clone() + (inputs.clone() - background) * mask
        } else {
            inputs.clone() + (background - inputs.clone()) * mask
        };
        for start in (0..n).step_by(batch) {
            let end = (start + batch).min(n);
            let p = softmax(ctx.classifier.logits(images.clone().slice(start..end)), 1)
                .gather(1, sources.clone().slice(start..end));
            let v = p
                .into_data()
                .convert::<f64>()
                .into_vec::<f64>()
                .map_err(|e| MetricError::input(name, format!("reading probabilities: {e:?}")))?;
            row[start..end].copy_from_slice(&v);
        }
    }
    let area = |i: usize| curve_area(&probs.iter().map(|row| row[i]).collect::<Vec<_>>());
    let scores = (0..n).map(area).collect();
    let mean_curve = probs
        .iter()
        .map(|row| row.iter().sum::<f64>() / n as f64)
        .collect();
    Ok(MetricValue::WithCurves(
        scores,
        vec![Curve {
            name: format!("{name}: p(source) against the fraction of pixels changed"),
            values: mean_curve,
        }],
    ))
}

/// The share (%) of a heatmap's absolute mass in one image column: on FakeMNIST column 0 holds
/// the label pixels, where a faithful heatmap should put (nearly) all of it.
///
/// How much of it an ECINNh map can hold is bounded by the counterfactual's elastic-net
/// distance: moving the label pixel from one row to another costs `‖δ‖₁ = 2` and `‖δ‖₂ = √2` in a
/// range of width 1, so a map with share `s` has `EN ≥ 2/s + √2` when the rest of column 0 is
/// left alone. Seed 004's own GEN counterfactuals on FakeMNIST have EN 6.81 (Table 3), which
/// allows `s ≈ 2 / (6.81 − √2) ≈ 37 %` (at most ~45 % if the change outside the column sat in
/// few pixels, whose `‖δ‖₂` grows faster); 90 % would need EN ≤ 3.64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColumnMass {
    pub column: usize,
}

impl<B: Backend> HeatmapMetric<B> for ColumnMass {
    fn name(&self) -> String {
        format!("Mass[col {}]", self.column)
    }

    fn direction(&self) -> Direction {
        Direction::Higher
    }

    fn evaluate(&self, set: &HeatmapSet, _ctx: &EvalContext<B>) -> Result<MetricValue> {
        let [c, h, w] = set.shape;
        if self.column >= w {
            return Err(MetricError::input(
                "column mass",
                format!("column {}, but images are {w} wide", self.column),
            ));
        }
        let scores = set
            .maps
            .chunks(c * h * w)
            .map(|m| column_mass(m, set.shape, self.column))
            .collect();
        Ok(MetricValue::PerSample(scores))
    }
}

/// The share (%) of `Σ|h|` of one heatmap (`[C, H, W]` values) in image column `column`.
pub fn column_mass(map: &[f32], shape: [usize; 3], column: usize) -> f64 {
    let w = shape[2].max(1);
    let total: f64 = map.iter().map(|v| f64::from(v.abs())).sum();
    let col: f64 = map
        .iter()
        .enumerate()
        .filter(|(i, _)| i % w == column)
        .map(|(_, v)| f64::from(v.abs()))
        .sum();
    if total > 0.0 {
        100.0 * col / total
    } else {
        0.0
    }
}
