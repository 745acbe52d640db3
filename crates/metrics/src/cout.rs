//! COUT, C3LT's counterfactual transition metric.

use burn::prelude::*;

use crate::error::{MetricError, Result};
use crate::metric::{Curve, Direction, EvalContext, Metric, MetricValue};
use crate::path::{curve_area, pixel_order};
use crate::set::CounterfactualSet;

/// `COUT = AUPC_{c′} − AUPC_c ∈ [−1, 1]` (seed 003 Eq. 8, L187-209). The mask `|x − x′|`
/// (summed over channels, scaled to [0, 1]) orders the pixels; in T steps the most-changed
/// pixels are copied from x′ into x, and the explained model's probabilities of the query class
/// c and the counterfactual class c′ are integrated with the trapezoidal rule,
/// `AUPC_k = (1/T) Σ_{t<T} ½(f_k(x⁽ᵗ⁾) + f_k(x⁽ᵗ⁺¹⁾))`. Higher means a few changed pixels already
/// move the model to c′.
///
/// Decisions: c is the input's predicted class and c′ the requested target. The seed does not
/// say how many pixels a step inserts; we split the H·W pixel ranks into T equal batches, so
/// x⁽ᵀ⁾ = x′ exactly. Pixels the counterfactual left unchanged come last in the order, which
/// makes the curve flat once the changes are spent.
pub struct Cout {
    pub steps: usize,
}

impl Default for Cout {
    fn default() -> Self {
        Self { steps: 20 }
    }
}

/// `(AUPC_c′, AUPC_c)` of one transition, from the probabilities at steps 0..=T.
pub fn aupc(target: &[f64], source: &[f64]) -> (f64, f64) {
    (curve_area(target), curve_area(source))
}

impl Cout {
    /// The T + 1 images of the insertion path from `x` to `cf` (each `[C·H·W]`).
    pub fn path(&self, x: &[f32], cf: &[f32], [c, h, w]: [usize; 3]) -> Vec<Vec<f32>> {
        let hw = h * w;
        let change: Vec<f32> = x.iter().zip(cf).map(|(a, b)| a - b).collect();
        let order = pixel_order(&change, [c, h, w]);
        let t = self.steps.max(1);
        let mut cur = x.to_vec();
        let mut out = vec![cur.clone()];
        for s in 0..t {
            for &p in &order[s * hw / t..(s + 1) * hw / t] {
                for ch in 0..c {
                    cur[ch * hw + p] = cf[ch * hw + p];
                }
            }
            out.push(cur.clone());
        }
        out
    }
}

impl<B: Backend> Metric<B> for Cout {
    fn name(&self) -> String {
        "COUT".into()
    }

    fn direction(&self) -> Direction {
        Direction::Higher
    }

    fn evaluate(&self, set: &CounterfactualSet, ctx: &EvalContext<B>) -> Result<MetricValue> {
        if self.steps == 0 {
            return Err(MetricError::input("COUT", "needs at least one step"));
        }
        let k = ctx.classifier.n_classes();
        let [c, h, w] = set.shape;
        let per = self.steps + 1;
        // Whole paths per batch: batch_size images ≈ batch_size / (T + 1) samples.
        let samples_per_batch = (ctx.batch_size / per).max(1);
        let mut scores = Vec::with_capacity(set.len());
        let mut sums = [vec![0.0; per], vec![0.0; per]];
        for rows in set.chunks(samples_per_batch) {
            let pixels: Vec<f32> = rows
                .clone()
                .flat_map(|i| {
                    self.path(set.input(i), set.counterfactual(i), set.shape)
                        .into_iter()
                        .flatten()
                })
                .collect();
            let n = rows.len() * per;
            let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, c, h, w]), &ctx.device);
            let p: Vec<f32> = ctx
                .classifier
                .probabilities(x)
                .into_data()
                .convert::<f32>()
                .into_vec()
                .unwrap_or_default();
            for (j, i) in rows.enumerate() {
                let (src, tgt) = (set.predicted[i], set.targets[i]);
                let curve = |class: usize| -> Vec<f64> {
                    (0..per)
                        .map(|s| f64::from(p[(j * per + s) * k + class]))
                        .collect()
                };
                let (ct, cs) = (curve(tgt), curve(src));
                for (sum, c) in sums.iter_mut().zip([&ct, &cs]) {
                    sum.iter_mut().zip(c).for_each(|(s, v)| *s += v);
                }
                let (a_t, a_s) = aupc(&ct, &cs);
                scores.push(a_t - a_s);
            }
        }
        let n = scores.len().max(1) as f64;
        let [st, ss] = sums;
        let mean = |name: &str, v: Vec<f64>| Curve {
            name: name.into(),
            values: v.into_iter().map(|s| s / n).collect(),
        };
        Ok(MetricValue::WithCurves(
            scores,
            vec![mean("target class", st), mean("source class", ss)],
        ))
    }
}
