//! The real side of the FID, computed once and kept on disk.

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use nalgebra::{DMatrix, DVector, RowDVector, SymmetricEigen};
use safetensors::{Dtype, SafeTensors};

use super::trace::to_host;
use crate::LinalgError;
use crate::atomic_file::write_safetensors;

const FORMAT: &str = "cfx-fid-stats/1";

fn require_samples(n: usize) -> Result<(), LinalgError> {
    if n < 2 {
        return Err(LinalgError::Shape {
            op: "FeatureStats",
            what: format!("needs at least 2 samples to estimate a covariance, got {n}"),
        });
    }
    Ok(())
}

fn require_finite(x: &DMatrix<f64>) -> Result<(), LinalgError> {
    if x.iter().any(|v| !v.is_finite()) {
        return Err(LinalgError::NonFinite {
            op: "FeatureStats",
            what: "the features",
        });
    }
    Ok(())
}

/// The column means of `x` (one sample per row) and `x` with them subtracted from every row.
pub(crate) fn centre_rows(x: &DMatrix<f64>) -> (RowDVector<f64>, DMatrix<f64>) {
    let mean = x.row_mean();
    let mut centred = x.clone();
    for mut row in centred.row_iter_mut() {
        row -= &mean;
    }
    (mean, centred)
}

/// Mean and covariance factor of a feature set (`Σ = F Fᵀ`, `F` d×r with r = rank Σ), in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    pub mean: Vec<f64>,
    pub factor: DMatrix<f64>,
    pub samples: usize,
}

impl FeatureStats {
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// `Σ = F Fᵀ` (d×d).
    pub fn covariance(&self) -> DMatrix<f64> {
        &self.factor * self.factor.transpose()
    }

    /// `tr Σ = ‖F‖²_F`.
    pub fn trace(&self) -> f64 {
        self.factor.norm_squared()
    }

    /// Statistics of the rows of `x` (n×d).
    pub fn from_rows(x: &DMatrix<f64>) -> Result<Self, LinalgError> {
        let mut b = FeatureStatsBuilder::new(x.ncols());
        b.add_rows(x)?;
        b.finish()
    }

    /// Statistics whose factor is the centred samples themselves, `F = (X − µ)ᵀ/√(n−1)` (d×n):
    /// exact without an eigendecomposition, and the cheaper choice when n ≤ d (the paper's
    /// Algorithm 1 takes this C₂, seed L3270-3271). For n ≫ d, [`FeatureStats::from_rows`]
    /// gives a d×r factor instead.
    pub fn from_samples_factor(x: &DMatrix<f64>) -> Result<Self, LinalgError> {
        let n = x.nrows();
        require_samples(n)?;
        require_finite(x)?;
        let (mean, centred) = centre_rows(x);
        Ok(Self {
            mean: mean.iter().copied().collect(),
            factor: centred.transpose() / ((n - 1) as f64).sqrt(),
            samples: n,
        })
    }

    /// Writes the statistics as safetensors (`mean` [d], `factor` [d, r], both f64), through a
    /// temporary file in the same folder so that a crash never leaves a half-written file.
    pub fn save(&self, path: &Path) -> Result<(), LinalgError> {
        let err = |what: String| LinalgError::Stats {
            path: path.display().to_string(),
            what,
        };
        let d = self.dim();
        let r = self.factor.ncols();
        let mean: Vec<u8> = self.mean.iter().flat_map(|v| v.to_le_bytes()).collect();
        let factor: Vec<u8> = self
            .factor
            .transpose()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("samples".to_string(), self.samples.to_string()),
        ]);
        let tensors = [
            ("factor", Dtype::F64, vec![d, r], &factor[..]),
            ("mean", Dtype::F64, vec![d], &mean[..]),
        ];
        write_safetensors(path, &tensors, meta).map_err(err)
    }

    pub fn load(path: &Path) -> Result<Self, LinalgError> {
        let err = |what: String| LinalgError::Stats {
            path: path.display().to_string(),
            what,
        };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(err(format!(
                "not FID statistics (format {:?}, expected {FORMAT:?})",
                meta.get("format")
            )));
        }
        let samples = meta
            .get("samples")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err("no sample count in the metadata".into()))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| err(format!("corrupt: {e}")))?;
        let read = |name: &str, rank: usize| -> Result<(Vec<usize>, Vec<f64>), LinalgError> {
            let t = st
                .tensor(name)
                .map_err(|e| err(format!("no tensor {name:?}: {e}")))?;
            if t.dtype() != Dtype::F64 || t.shape().len() != rank {
                return Err(err(format!(
                    "tensor {name:?} is {:?} {:?}, expected rank-{rank} F64",
                    t.dtype(),
                    t.shape()
                )));
            }
            let values: Vec<f64> = t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8")))
                .collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(err(format!("tensor {name:?} has NaN or infinite values")));
            }
            Ok((t.shape().to_vec(), values))
        };
        let (mshape, mean) = read("mean", 1)?;
        let (fshape, factor) = read("factor", 2)?;
        if fshape[0] != mshape[0] {
            return Err(err(format!(
                "mean has dimension {} but the factor is {fshape:?}",
                mshape[0]
            )));
        }
        Ok(Self {
            mean,
            factor: DMatrix::from_row_slice(fshape[0], fshape[1], &factor),
            samples,
        })
    }
}

/// Accumulates feature statistics batch by batch (an encoder's output over a whole dataset),
/// in f64: the sum and the sum of outer products, centred at the end.
#[derive(Debug, Clone)]
pub struct FeatureStatsBuilder {
    sum: DVector<f64>,
    outer: DMatrix<f64>,
    samples: usize,
}

impl FeatureStatsBuilder {
    pub fn new(dim: usize) -> Self {
        Self {
            sum: DVector::zeros(dim),
            outer: DMatrix::zeros(dim, dim),
            samples: 0,
        }
    }

    pub fn add_rows(&mut self, x: &DMatrix<f64>) -> Result<(), LinalgError> {
        let d = self.sum.len();
        if x.ncols() != d {
            return Err(LinalgError::Shape {
                op: "FeatureStats",
                what: format!("features have dimension {}, expected {d}", x.ncols()),
            });
        }
        require_finite(x)?;
        self.sum += x.row_sum().transpose();
        self.outer.gemm_tr(1.0, x, x, 1.0);
        self.samples += x.nrows();
        Ok(())
    }

    /// A batch of features `[n, d]` from any backend.
    pub fn add<B: Backend>(&mut self, x: Tensor<B, 2>) -> Result<(), LinalgError> {
        self.add_rows(&to_host(x)?)
    }

    /// `F = Q Λ^{1/2}` over the positive eigenvalues of the covariance (relative cut-off 1e-12),
    /// so r is the numerical rank.
    pub fn finish(self) -> Result<FeatureStats, LinalgError> {
        let n = self.samples;
        require_samples(n)?;
        let mean = &self.sum / n as f64;
        let cov = (&self.outer - &mean * mean.transpose() * n as f64) / (n - 1) as f64;
        let eig = SymmetricEigen::new((&cov + cov.transpose()) * 0.5);
        let lmax = eig.eigenvalues.iter().fold(0.0f64, |a, &b| a.max(b));
        let cols: Vec<_> = (0..eig.eigenvalues.len())
            .filter(|&i| eig.eigenvalues[i] > 1e-12 * lmax && eig.eigenvalues[i] > 0.0)
            .map(|i| eig.eigenvectors.column(i) * eig.eigenvalues[i].sqrt())
            .collect();
        let factor = if cols.is_empty() {
            DMatrix::zeros(mean.len(), 1)
        } else {
            DMatrix::from_columns(&cols)
        };
        Ok(FeatureStats {
            mean: mean.iter().copied().collect(),
            factor,
            samples: n,
        })
    }
}
