//! `cargo xtask bench fid`: FastFID against the dense O(d³) reference (Mathiasen & Hvilshøj
//! 2020, §2.3-2.4): the same real statistics and fake features, time and FID of each.

use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_linalg::fid::dense::{fid_dense, trace_sqrt_product_dense};
use cfx_linalg::fid::{centred_factor, to_device};
use cfx_linalg::{FeatureStats, FidReference, LinalgBackend, trace_sqrt_product};
use nalgebra::DMatrix;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use super::median_ms;
use crate::backend::{BackendJob, BackendKind, run_on};
use crate::cli::FidBenchArgs;

#[derive(Debug, Clone, Serialize)]
pub struct FidRow {
    pub backend: String,
    pub d: usize,
    pub m: usize,
    pub fast_ms: f64,
    pub dense_ms: f64,
    pub fast_fid: f64,
    pub dense_fid: f64,
    /// |FastFID − dense| / dense.
    pub relative_error: f64,
    /// The paper's known-answer case (seed L3434-3487): with Σ₂ = Σ₁ (the fake set's own
    /// statistics) `tr √(Σ₁Σ₂) = tr Σ₁`; the absolute error of FastFID (backend precision) and of
    /// the dense reference (f64) against it.
    pub known_answer: f64,
    pub fast_known_error: f64,
    pub dense_known_error: f64,
}

struct Job {
    args: FidBenchArgs,
}

/// Correlated Gaussian features: `Z A` with a random d×d mixing, like encoder outputs rather than
/// white noise (the covariance is far from the identity).
fn features(rows: usize, mix: &DMatrix<f64>, rng: &mut StdRng) -> DMatrix<f64> {
    let d = mix.nrows();
    let z = DMatrix::from_fn(rows, d, |_, _| StandardNormal.sample(rng));
    z * mix
}

impl BackendJob for Job {
    type Output = Vec<FidRow>;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<Vec<FidRow>> {
        let a = &self.args;
        let d = a.dim;
        let mut rng = StdRng::seed_from_u64(0);
        let mix = DMatrix::from_fn(d, d, |_, _| {
            let g: f64 = StandardNormal.sample(&mut rng);
            g / (d as f64).sqrt()
        });
        let t = Instant::now();
        let stats = FeatureStats::from_samples_factor(&features(a.real, &mix, &mut rng))?;
        eprintln!(
            "real statistics of {} samples, d = {d}: {:.1} s",
            a.real,
            t.elapsed().as_secs_f64()
        );
        let reference = FidReference::<B>::new(&stats, &device);
        let mut rows = vec![];
        for &m in &a.batches {
            let fake = features(m, &mix, &mut rng);
            let tensor = to_device::<B>(&fake, &device);
            let mut fast_fid = 0.0;
            // Reading the value back waits for the device.
            let fast_ms = median_ms(a.warmup, a.repeats, || {
                fast_fid = cfx_linalg::fid(&reference, tensor.clone())
                    .expect("shapes checked")
                    .into_scalar()
                    .elem::<f64>();
            });
            let mut dense_fid = 0.0;
            let dense_ms = median_ms(0, a.dense_repeats, || dense_fid = fid_dense(&stats, &fake));
            let own = FeatureStats::from_samples_factor(&fake)?;
            let known_answer = own.trace();
            let (_, c1) = centred_factor(tensor.clone());
            let own_factor = FidReference::<B>::new(&own, &device).factor();
            let fast_tr: f64 = trace_sqrt_product(c1, own_factor)?.into_scalar().elem();
            let sigma = own.covariance();
            let dense_tr = trace_sqrt_product_dense(&sigma, &sigma);
            let row = FidRow {
                backend: backend.to_string(),
                d,
                m,
                fast_ms,
                dense_ms,
                fast_fid,
                dense_fid,
                relative_error: ((fast_fid - dense_fid) / dense_fid).abs(),
                known_answer,
                fast_known_error: (fast_tr - known_answer).abs(),
                dense_known_error: (dense_tr - known_answer).abs(),
            };
            println!(
                "{:<6} d={d} m={m:<4} FastFID {fast_ms:>9.2} ms  dense {dense_ms:>10.1} ms  speed-up {:>8.1}x  FID {fast_fid:.4} vs {dense_fid:.4} (rel. error {:.1e})",
                row.backend,
                dense_ms / fast_ms,
                row.relative_error
            );
            println!(
                "{:<6} d={d} m={m:<4} known answer tr Σ = {known_answer:.4}: error FastFID {:.2e}, dense {:.2e}",
                row.backend, row.fast_known_error, row.dense_known_error
            );
            rows.push(row);
        }
        Ok(rows)
    }
}

pub fn fid(args: &FidBenchArgs) -> Result<Vec<FidRow>> {
    let rows = run_on(args.backend.kind(), Job { args: args.clone() })?;
    super::write_json(args.json.as_deref(), &rows)?;
    Ok(rows)
}
