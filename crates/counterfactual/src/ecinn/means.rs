use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use cfx_flows::ibinn::IbInn;
use cfx_linalg::atomic_file::write_safetensors;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::ExplainError;

const FORMAT: &str = "cfx-ecinn-class-means/1";

/// What the cached means were computed from: the checkpoint's bytes and the data recipe. A cache
/// whose key differs from the current one is stale and is recomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeansCacheKey {
    /// SHA-256 of the model file.
    pub model_sha256: String,
    /// The data they were computed over (dataset, augmentation, seed, count).
    pub recipe: String,
}

impl MeansCacheKey {
    pub fn new(model_bytes: &[u8], recipe: impl Into<String>) -> Self {
        let digest = Sha256::digest(model_bytes);
        Self {
            model_sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            recipe: recipe.into(),
        }
    }
}

/// ECINN's preprocessing (spec §1.2): the mean latent `μ̄_j` of the training images the model
/// *predicts* as class `j`, and how many there were. Computed once per model.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMeans {
    /// `[K, D]`, row-major.
    pub means: Vec<f64>,
    pub counts: Vec<u64>,
    pub dim: usize,
}

impl ClassMeans {
    pub fn n_classes(&self) -> usize {
        self.counts.len()
    }

    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        let v: Vec<f32> = self.means.iter().map(|&m| m as f32).collect();
        Tensor::from_data(TensorData::new(v, [self.n_classes(), self.dim]), device)
    }

    /// Writes the means with their cache key as safetensors, through a temporary file in the
    /// same folder so that a crash never leaves a half-written cache.
    pub fn save(&self, path: &Path, key: &MeansCacheKey) -> Result<(), ExplainError> {
        let err = |what: String| ExplainError::File {
            path: path.display().to_string(),
            what,
        };
        let k = self.n_classes();
        let means: Vec<u8> = self.means.iter().flat_map(|v| v.to_le_bytes()).collect();
        let counts: Vec<u8> = self.counts.iter().flat_map(|v| v.to_le_bytes()).collect();
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("model_sha256".to_string(), key.model_sha256.clone()),
            ("recipe".to_string(), key.recipe.clone()),
        ]);
        let tensors = [
            ("counts", Dtype::U64, vec![k], &counts[..]),
            ("means", Dtype::F64, vec![k, self.dim], &means[..]),
        ];
        write_safetensors(path, &tensors, meta).map_err(err)
    }

    /// Reads a cache written by [`ClassMeans::save`] and the key it was written with.
    pub fn load(path: &Path) -> Result<(Self, MeansCacheKey), ExplainError> {
        let err = |what: String| ExplainError::File {
            path: path.display().to_string(),
            what,
        };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(err(format!(
                "not ECINN class means (format {:?})",
                meta.get("format")
            )));
        }
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| err(format!("no {k} in the metadata")))
        };
        let key = MeansCacheKey {
            model_sha256: field("model_sha256")?,
            recipe: field("recipe")?,
        };
        let st = SafeTensors::deserialize(&bytes).map_err(|e| err(format!("corrupt: {e}")))?;
        let means = st
            .tensor("means")
            .map_err(|e| err(format!("no tensor \"means\": {e}")))?;
        let counts = st
            .tensor("counts")
            .map_err(|e| err(format!("no tensor \"counts\": {e}")))?;
        let (ms, cs) = (means.shape().to_vec(), counts.shape().to_vec());
        if means.dtype() != Dtype::F64
            || counts.dtype() != Dtype::U64
            || ms.len() != 2
            || cs != [ms[0]]
        {
            return Err(err(format!(
                "means {:?} {ms:?} and counts {:?} {cs:?} do not fit together",
                means.dtype(),
                counts.dtype()
            )));
        }
        let eight = |d: &[u8]| -> Vec<[u8; 8]> {
            d.chunks_exact(8)
                .map(|c| c.try_into().expect("chunks of 8"))
                .collect()
        };
        Ok((
            Self {
                means: eight(means.data())
                    .into_iter()
                    .map(f64::from_le_bytes)
                    .collect(),
                counts: eight(counts.data())
                    .into_iter()
                    .map(u64::from_le_bytes)
                    .collect(),
                dim: ms[1],
            },
            key,
        ))
    }
}

/// Accumulates [`ClassMeans`] batch by batch (model-space inputs, e.g. the training set with
/// the training augmentation, as the reference code does).
#[derive(Debug, Clone)]
pub struct ClassMeansBuilder {
    sums: Vec<f64>,
    counts: Vec<u64>,
    dim: usize,
}

impl ClassMeansBuilder {
    pub fn new(n_classes: usize, dim: usize) -> Self {
        Self {
            sums: vec![0.0; n_classes * dim],
            counts: vec![0; n_classes],
            dim,
        }
    }

    /// Adds one batch of model-space images `[N, C, H, W]`, grouped by the model's class.
    pub fn add<B: Backend>(&mut self, model: &IbInn<B>, x: Tensor<B, 4>) {
        let (z, _) = model.encode(x);
        self.add_grouped(model.logits_from_latent(z.clone()), z);
    }

    /// Adds feature rows `[N, D]`, each to the class of the arg-max of its scores `[N, K]`.
    pub fn add_grouped<B: Backend>(&mut self, scores: Tensor<B, 2>, features: Tensor<B, 2>) {
        let k = self.counts.len();
        let pred = scores.argmax(1).squeeze_dim::<1>(1);
        let onehot = pred.clone().one_hot::<2>(k).float();
        // Per-class sums on the device: one [K, N]·[N, D] product per batch.
        let sums = onehot.transpose().matmul(features);
        let sums: Vec<f32> = sums
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap_or_default();
        for (acc, s) in self.sums.iter_mut().zip(sums) {
            *acc += s as f64;
        }
        let pred: Vec<i64> = pred
            .into_data()
            .convert::<i64>()
            .into_vec()
            .unwrap_or_default();
        for p in pred {
            self.counts[p as usize] += 1;
        }
    }

    /// The means, or the first class that received no rows (its mean is undefined).
    pub fn means(self) -> Result<ClassMeans, usize> {
        if let Some(c) = self.counts.iter().position(|&n| n == 0) {
            return Err(c);
        }
        let means = self
            .sums
            .chunks_exact(self.dim)
            .zip(&self.counts)
            .flat_map(|(row, &n)| row.iter().map(move |s| s / n as f64))
            .collect();
        Ok(ClassMeans {
            means,
            counts: self.counts,
            dim: self.dim,
        })
    }

    /// The means; fails if some class was never predicted (its mean would be undefined).
    pub fn finish(self) -> Result<ClassMeans, ExplainError> {
        self.means().map_err(|c| {
            ExplainError::Means(format!(
                "no training image is predicted as class {c}: the model cannot explain towards it \
                 (train it longer)"
            ))
        })
    }
}
