//! The O(d³) reference the FastFID paper replaces, in f64 on the host: for tests and benches.
//!
//! `tr √(Σ₁Σ₂) = tr √(Σ₁^{1/2} Σ₂ Σ₁^{1/2})`: the product is similar to a symmetric PSD matrix,
//! so two d×d symmetric eigendecompositions give the trace without SciPy's Schur-based `sqrtm`
//! (whose f32 errors the paper measures, seed L3431-3509) and without complex round-off.

use nalgebra::{DMatrix, SymmetricEigen};

use super::FeatureStats;
use super::stats::centre_rows;

fn sqrt_psd(a: DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new((&a + a.transpose()) * 0.5);
    let root = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&root) * eig.eigenvectors.transpose()
}

/// `tr √(Σ₁Σ₂)` from the two d×d covariances.
pub fn trace_sqrt_product_dense(sigma1: &DMatrix<f64>, sigma2: &DMatrix<f64>) -> f64 {
    let r1 = sqrt_psd(sigma1.clone());
    let inner = &r1 * sigma2 * &r1;
    let eig = SymmetricEigen::new((&inner + inner.transpose()) * 0.5);
    eig.eigenvalues.iter().map(|l| l.max(0.0).sqrt()).sum()
}

/// FID between the rows of `fake` (m×d) and the real statistics, all d×d.
pub fn fid_dense(real: &FeatureStats, fake: &DMatrix<f64>) -> f64 {
    let m = fake.nrows();
    let (mean, centred) = centre_rows(fake);
    let sigma1 = centred.transpose() * &centred / (m - 1) as f64;
    let sigma2 = real.covariance();
    let dm: f64 = mean
        .iter()
        .zip(&real.mean)
        .map(|(a, b)| (a - b).powi(2))
        .sum();
    dm + sigma1.trace() + sigma2.trace() - 2.0 * trace_sqrt_product_dense(&sigma1, &sigma2)
}
