//! FID256: the Fréchet distance between inputs and counterfactuals in an oracle's feature space.

use burn::prelude::*;
use cfx_classifiers::{CnnClassifier, DataRange};
use cfx_linalg::fid::FeatureStatsBuilder;
use cfx_linalg::{FeatureStats, FidReference, LinalgBackend, fid};

use crate::error::{MetricError, Result};
use crate::metric::{Direction, EvalContext, Metric, MetricValue};
use crate::oracle::check_oracle_range;
use crate::set::CounterfactualSet;

/// `FID = ‖µ₁ − µ₂‖² + tr[Σ₁ + Σ₂ − 2√(Σ₁Σ₂)]` (seed 004 Eq. 2.4, L545-556) on 256-d embeddings
/// (L5222-5232), through FastFID (`cfx-linalg`). Lower is better; a population score with no
/// interval, unchanged by shuffling the pairs (L5237-5242).
///
/// Decisions, from the authors' `fid.py` where the text is vague (spec §4.6):
/// * The encoder is the **oracle**'s last hidden layer before its ReLU, not the explained
///   model's (the text says "identical to the model being explained": same architecture).
/// * Covariances are unbiased (n − 1).
/// * The real set is every evaluated test input (the text's "test inputs", L5209), computed
///   once per evaluation and shared by all methods, so they are compared against one reference;
///   the code's pairing with valid counterfactuals only changes it where validity is low.
pub struct Fid256<B: Backend> {
    encoder: CnnClassifier<B>,
    real: FeatureStats,
}

impl<B: LinalgBackend> Fid256<B> {
    pub fn new(encoder: CnnClassifier<B>, real: FeatureStats, range: DataRange) -> Result<Self> {
        check_oracle_range("FID256", &encoder, range)?;
        Ok(Self { encoder, real })
    }

    /// The real statistics of `images` (unit space, `[N, C, H, W]` batches) under `encoder`.
    pub fn real_stats(
        encoder: &CnnClassifier<B>,
        images: impl IntoIterator<Item = Tensor<B, 4>>,
    ) -> Result<FeatureStats> {
        let mut b: Option<FeatureStatsBuilder> = None;
        for x in images {
            let f = encoder.features(x);
            let host = cfx_linalg::fid::to_host(f).map_err(linalg)?;
            b.get_or_insert_with(|| FeatureStatsBuilder::new(host.ncols()))
                .add_rows(&host)
                .map_err(linalg)?;
        }
        b.ok_or_else(|| MetricError::input("FID256", "no real images"))?
            .finish()
            .map_err(linalg)
    }
}

fn linalg(source: cfx_linalg::LinalgError) -> MetricError {
    MetricError::Linalg {
        metric: "FID256".into(),
        source,
    }
}

impl<B: LinalgBackend> Metric<B> for Fid256<B> {
    fn name(&self) -> String {
        "FID256".into()
    }

    fn direction(&self) -> Direction {
        Direction::Lower
    }

    fn evaluate(&self, set: &CounterfactualSet, ctx: &EvalContext<B>) -> Result<MetricValue> {
        if set.len() < 2 {
            return Err(MetricError::input(
                "FID256",
                format!("needs at least 2 valid counterfactuals, got {}", set.len()),
            ));
        }
        let feats: Vec<Tensor<B, 2>> = set
            .chunks(ctx.batch_size)
            .map(|rows| {
                self.encoder
                    .features(set.counterfactual_tensor::<B>(rows, &ctx.device))
            })
            .collect();
        let fake = Tensor::cat(feats, 0);
        let reference = FidReference::<B>::new(&self.real, &ctx.device);
        let v = fid(&reference, fake).map_err(linalg)?;
        let v: f64 = v.into_scalar().elem();
        Ok(MetricValue::Population(v.max(0.0)))
    }
}
