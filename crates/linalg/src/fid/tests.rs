use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use burn_flex::Flex;
use nalgebra::DMatrix;

use super::dense::{fid_dense, trace_sqrt_product_dense};
use super::*;
use crate::test_util::random;

type F64 = NdArray<f64>;

fn rows(x: Tensor<F64, 2>) -> DMatrix<f64> {
    trace::to_host(x).unwrap()
}

/// Features with a few dominant directions, so the covariances are far from isotropic.
fn features<B: Backend>(n: usize, d: usize, seed: u64, dev: &B::Device) -> Tensor<B, 2> {
    let base = random::<B, 2>([n, d], seed, dev);
    let mix = random::<B, 2>([d, d], seed + 1, dev);
    base.clone().matmul(mix).mul_scalar(0.5) + base.add_scalar(0.3)
}

#[test]
fn matches_dense_reference_in_f64() {
    let dev = Default::default();
    // (n real, m fake, d): full-rank and low-rank (n < d) real covariances, and more fake
    // samples than dimensions (the r×r Gram of an evaluation without gradient).
    for (n, m, d) in [(200, 16, 30), (20, 8, 40), (60, 40, 64), (300, 120, 24)] {
        let real = rows(features::<F64>(n, d, 1 + n as u64, &dev));
        let stats = FeatureStats::from_rows(&real).unwrap();
        let fake = features::<F64>(m, d, 7 + m as u64, &dev);
        let reference = FidReference::<F64>::new(&stats, &dev);
        let fast: f64 = fid(&reference, fake.clone()).unwrap().into_scalar();
        let dense = fid_dense(&stats, &rows(fake.clone()));
        assert!(
            ((fast - dense) / dense).abs() <= 1e-6,
            "n={n} m={m} d={d}: FastFID {fast} vs dense {dense}"
        );
        let (_, c1) = centred_factor(fake);
        let c1h = rows(c1.clone());
        let tr_fast: f64 = trace_sqrt_product(c1, reference.factor.clone())
            .unwrap()
            .into_scalar();
        let tr_dense = trace_sqrt_product_dense(&(c1h.transpose() * &c1h), &stats.covariance());
        assert!(((tr_fast - tr_dense) / tr_dense).abs() <= 1e-6);
    }
}

#[test]
fn fid_of_a_set_with_itself_is_zero() {
    let dev = Default::default();
    let x = features::<Flex>(64, 48, 3, &dev);
    let stats = FeatureStats::from_rows(&trace::to_host(x.clone()).unwrap()).unwrap();
    let value: f32 = fid(&FidReference::new(&stats, &dev), x)
        .unwrap()
        .into_scalar();
    let scale = stats.trace();
    assert!(
        (value as f64).abs() < 1e-4 * scale,
        "FID(X, X) = {value}, tr Σ = {scale}"
    );
}

/// The paper's error experiment (seed L3434-3487) at a smaller d: with Σ₂ = Σ₁ the truth is
/// tr √(Σ₁²) = tr Σ₁; FastFID in f32 must get it to f32 round-off.
#[test]
fn equal_covariances_in_f32() {
    let dev = Default::default();
    let x = features::<Flex>(32, 256, 5, &dev);
    let stats = FeatureStats::from_rows(&trace::to_host(x.clone()).unwrap()).unwrap();
    let (_, c1) = centred_factor(x);
    let factor = FidReference::<Flex>::new(&stats, &dev).factor;
    let tr: f32 = trace_sqrt_product(c1, factor).unwrap().into_scalar();
    let truth = stats.trace();
    assert!(
        ((tr as f64 - truth) / truth).abs() < 1e-5,
        "{tr} vs {truth}"
    );
}

/// The closed-form gradient against central differences of the dense reference (m > d, so
/// that Σ₁ is full rank and the dense `√Σ₁` is smooth) and of FastFID itself (m < d, where
/// the dense route differentiates `√` at zero eigenvalues and its differences are noise).
#[test]
fn gradient_matches_finite_differences() {
    type AD = Autodiff<F64>;
    let dev = Default::default();
    for (n, m, d, dense) in [(50, 12, 8, true), (50, 6, 10, false)] {
        let stats = FeatureStats::from_rows(&rows(features::<F64>(n, d, 9, &dev))).unwrap();
        let reference = FidReference::<F64>::new(&stats, &dev);
        let value = |x: &DMatrix<f64>| -> f64 {
            if dense {
                fid_dense(&stats, x)
            } else {
                fid(&reference, trace::to_device::<F64>(x, &dev))
                    .unwrap()
                    .into_scalar()
            }
        };
        let fake0 = rows(features::<F64>(m, d, 10, &dev));
        let fake = trace::to_device::<AD>(&fake0, &dev).require_grad();
        let g = fid(&FidReference::<AD>::new(&stats, &dev), fake.clone())
            .unwrap()
            .backward();
        let grad = fake.grad(&g).unwrap().into_data().to_vec::<f64>().unwrap();
        let h = 1e-6;
        for i in 0..m {
            for j in 0..d {
                let mut p = fake0.clone();
                p[(i, j)] += h;
                let mut q = fake0.clone();
                q[(i, j)] -= h;
                let fd = (value(&p) - value(&q)) / (2.0 * h);
                let got = grad[i * d + j];
                assert!(
                    (fd - got).abs() < 1e-6 * (1.0 + fd.abs()),
                    "m={m} d={d} ({i},{j}): fd {fd}, op {got}"
                );
            }
        }
    }
}

#[test]
fn degenerate_inputs_are_named() {
    let dev = Default::default();
    let stats = FeatureStats::from_rows(&rows(features::<F64>(30, 8, 1, &dev))).unwrap();
    let reference = FidReference::<F64>::new(&stats, &dev);
    let one = features::<F64>(1, 8, 2, &dev);
    assert!(
        fid(&reference, one)
            .unwrap_err()
            .to_string()
            .contains("at least 2")
    );
    let wrong = features::<F64>(5, 9, 2, &dev);
    let e = fid(&reference, wrong).unwrap_err().to_string();
    assert!(e.contains("[5, 9]") && e.contains("dimension 8"), "{e}");
    let nan = features::<F64>(5, 8, 2, &dev).slice_fill([0..1, 0..1], f64::NAN);
    let e = fid(&reference, nan).unwrap_err().to_string();
    assert!(e.contains("NaN"), "{e}");
    // The same on the autodiff backend, where the op records its backward: an error, no panic.
    type AD = Autodiff<F64>;
    let nan = features::<AD>(5, 8, 2, &dev)
        .slice_fill([0..1, 0..1], f64::NAN)
        .require_grad();
    let e = fid(&FidReference::<AD>::new(&stats, &dev), nan).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
    let e = FeatureStats::from_rows(&DMatrix::zeros(1, 8))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 2 samples"), "{e}");
}

#[test]
fn stats_survive_disk_and_batching() {
    let dev = Default::default();
    let x = features::<F64>(40, 12, 4, &dev);
    let whole = FeatureStats::from_rows(&rows(x.clone())).unwrap();
    let mut b = FeatureStatsBuilder::new(12);
    b.add(x.clone().slice([0..15, 0..12])).unwrap();
    b.add(x.clone().slice([15..40, 0..12])).unwrap();
    let batched = b.finish().unwrap();
    assert!((whole.covariance() - batched.covariance()).abs().max() < 1e-12);
    let samples = FeatureStats::from_samples_factor(&rows(x.clone())).unwrap();
    assert!((whole.covariance() - samples.covariance()).abs().max() < 1e-12);
    assert_eq!(samples.factor.shape(), (12, 40));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("real.safetensors");
    whole.save(&path).unwrap();
    assert_eq!(FeatureStats::load(&path).unwrap(), whole);

    std::fs::write(&path, b"not a stats file").unwrap();
    let e = FeatureStats::load(&path).unwrap_err().to_string();
    assert!(e.contains("real.safetensors"), "{e}");
    let e = FeatureStats::load(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing") && e.contains("cannot read"), "{e}");
}
