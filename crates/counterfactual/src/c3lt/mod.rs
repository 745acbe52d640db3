//! C3LT, cycle-consistent counterfactuals by latent transformations (Khorram & Fuxin, seed 003):
//! two maps `g: c → c′` and `h: c′ → c` learned in a generator's latent space, so that a
//! counterfactual costs one encoder pass, `n` map steps and one generator pass,
//! `x′ = G(gⁿ(E(x)))` (§3.3). The maps are trained by `cargo xtask train c3lt` with
//! [`c3lt_loss`]; [`C3lt`] explains with them.

mod loss;
mod map;

#[cfg(test)]
mod tests;

use burn::prelude::*;
use cfx_classifiers::Classifier;
use cfx_flows::nn::mode;
use cfx_generative::LatentGenerator;

pub use loss::{
    C3ltCritics, C3ltTerms, C3ltWeights, c3lt_loss, change_mask, classification_loss, entropy_loss,
    perceptual_loss, proximity_loss, smoothness_loss,
};
pub use map::{C3ltMaps, LatentMap};

use crate::explainer::{iterative_explanation, predict_checked, timed};
use crate::{ExplainError, Explainer, Explanation, Miss, Query};

/// A trained C3LT for one class pair, explaining `classifier`.
pub struct C3lt<B: Backend> {
    pub maps: C3ltMaps<B>,
    generator: Box<dyn LatentGenerator<B>>,
    classifier: Box<dyn Classifier<B>>,
    /// `(c, c′)`: `g` maps `c` to `c′`, `h` maps back.
    pub pair: [usize; 2],
    pub n_steps: usize,
}

impl<B: Backend> C3lt<B> {
    /// Fails unless the generator has an encoder (C3LT's E) and makes the classifier's images.
    pub fn new(
        maps: C3ltMaps<B>,
        generator: Box<dyn LatentGenerator<B>>,
        classifier: Box<dyn Classifier<B>>,
        pair: [usize; 2],
        n_steps: usize,
    ) -> Result<Self, ExplainError> {
        let bad = |what: String| {
            Err(ExplainError::Method {
                method: "c3lt".into(),
                what,
            })
        };
        if generator.image_shape() != classifier.input_shape() {
            return bad(format!(
                "the generator makes {:?} images, the classifier takes {:?}",
                generator.image_shape(),
                classifier.input_shape()
            ));
        }
        let k = classifier.n_classes();
        if pair[0] == pair[1] || pair.iter().any(|&c| c >= k) {
            return bad(format!(
                "class pair {pair:?} must be two different classes of 0..{k}"
            ));
        }
        Ok(Self {
            maps,
            generator,
            classifier,
            pair,
            n_steps,
        })
    }

    /// Counterfactual images for unit-space `x`, each sent from `pair[from[i]]` to the other
    /// class. Fails when the generator has no encoder.
    pub fn transform(&self, x: Tensor<B, 4>, from: &[usize]) -> Result<Tensor<B, 4>, ExplainError> {
        let _mode = mode::inference();
        let Some(z) = self.generator.encode(x) else {
            return Err(ExplainError::Method {
                method: "c3lt".into(),
                what:
                    "the generator has no encoder (train one with `cargo xtask train gan-encoder`)"
                        .into(),
            });
        };
        let device = z.device();
        let mut out = z.zeros_like();
        for side in 0..2 {
            let rows: Vec<i64> = (0..from.len())
                .filter(|&i| from[i] == side)
                .map(|i| i as i64)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let idx = Tensor::<B, 1, Int>::from_data(
                TensorData::new(rows.clone(), [rows.len()]),
                &device,
            );
            let moved = self
                .maps
                .from_class(side)
                .apply(z.clone().select(0, idx.clone()), self.n_steps);
            // Rows are disjoint and `out` starts at zero, so adding is assigning; burn 0.21
            // implements only the Add update for float tensors.
            out = out.select_assign(0, idx, moved, burn::tensor::IndexingUpdateOp::Add);
        }
        Ok(self.generator.decode(out))
    }
}

impl<B: Backend> Explainer<B> for C3lt<B> {
    fn name(&self) -> String {
        "c3lt".into()
    }

    fn classifier(&self) -> &dyn Classifier<B> {
        self.classifier.as_ref()
    }

    /// Each query must ask for a class of the pair other than the one predicted. An input the
    /// classifier puts outside the pair cannot go through the maps (they were trained on the
    /// pair's images only): its query is answered with the input itself and `found = false`,
    /// as other methods report a failure, so a pair evaluation can still score it.
    fn explain(&self, x: Tensor<B, 4>, queries: &[Query]) -> Result<Explanation<B>, ExplainError> {
        let predicted = predict_checked(self.classifier.as_ref(), &x, queries)?;
        let [c, c2] = self.pair;
        let mut from = Vec::with_capacity(queries.len());
        let mut applicable = Vec::with_capacity(queries.len());
        for (i, q) in queries.iter().enumerate() {
            let p = predicted[q.input];
            if !self.pair.contains(&q.target) || q.target == p {
                return Err(ExplainError::Method {
                    method: "c3lt".into(),
                    what: format!(
                        "query {i} asks {p} → {}, but these maps were trained for {c} ↔ {c2} only",
                        q.target
                    ),
                });
            }
            from.push(usize::from(q.target == c));
            applicable.push(self.pair.contains(&p));
        }
        let device = x.device();
        let rows: Vec<i64> = queries.iter().map(|q| q.input as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [queries.len()]), &device);
        let inputs = x.select(0, idx);
        let (cf, seconds) = timed::<B, _>(&device, || self.transform(inputs.clone(), &from));
        let keep: Vec<f32> = applicable.iter().map(|&a| f32::from(u8::from(a))).collect();
        let keep = Tensor::<B, 1>::from_data(TensorData::new(keep, [queries.len()]), &device)
            .reshape([queries.len(), 1, 1, 1]);
        let cf = cf? * keep.clone() + inputs * keep.neg().add_scalar(1.0);
        Ok(iterative_explanation(
            self.classifier.as_ref(),
            cf,
            predicted,
            applicable
                .iter()
                .map(|&a| (!a).then_some(Miss::OutsidePair))
                .collect(),
            seconds,
        ))
    }
}
