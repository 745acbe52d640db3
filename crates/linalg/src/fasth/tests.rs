use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use burn_flex::Flex;

use super::baselines::{householder_matrix, parallel_product, sequential_product};
use super::*;
use crate::test_util::{max_abs_diff, random};

type F32 = Flex;
type F64 = NdArray<f64>;

#[test]
fn matches_both_baselines_in_f32() {
    let dev = Default::default();
    for (d, k, m) in [
        (7, 7, 3),
        (64, 64, 8),
        (100, 100, 5),
        (256, 256, 4),
        (100, 37, 6),
    ] {
        for t in [1, 3, 8, 32] {
            let v = random::<F32, 2>([k, d], 10 + d as u64 + t as u64, &dev);
            let x = random::<F32, 2>([d, m], 20 + d as u64, &dev);
            for transpose in [false, true] {
                let fast = householder_product(v.clone(), x.clone(), t, transpose).unwrap();
                let seq = sequential_product(v.clone(), x.clone(), transpose);
                let par = parallel_product(v.clone(), x.clone(), transpose);
                let e1 = max_abs_diff(fast.clone(), seq);
                let e2 = max_abs_diff(fast, par);
                assert!(
                    e1 <= 1e-4 && e2 <= 1e-4,
                    "d={d} K={k} t={t} transpose={transpose}: |fast-seq|={e1:e} |fast-par|={e2:e}"
                );
            }
        }
    }
}

#[test]
fn product_is_orthogonal_and_transpose_inverts_it() {
    let dev = Default::default();
    let v = random::<F64, 2>([50, 50], 3, &dev);
    let u = householder_product(v.clone(), Tensor::eye(50, &dev), 8, false).unwrap();
    let eye = Tensor::<F64, 2>::eye(50, &dev);
    assert!(max_abs_diff(u.clone().transpose().matmul(u.clone()), eye.clone()) < 1e-12);
    let ut = householder_product(v.clone(), Tensor::eye(50, &dev), 8, true).unwrap();
    assert!(max_abs_diff(ut, u.transpose()) < 1e-12);
    // det of K reflections is (−1)^K: a sign the SVD layer must not hide.
    let x = random::<F64, 2>([50, 4], 4, &dev);
    let back = householder_product(
        v.clone(),
        householder_product(v, x.clone(), 8, false).unwrap(),
        8,
        true,
    )
    .unwrap();
    assert!(max_abs_diff(back, x) < 1e-12);
}

#[test]
fn zero_rows_are_identities() {
    let dev = Default::default();
    let v = random::<F64, 2>([5, 9], 5, &dev);
    let zero = Tensor::<F64, 2>::zeros([2, 9], &dev);
    let padded = Tensor::cat(
        vec![
            v.clone().slice([0..2, 0..9]),
            zero,
            v.clone().slice([2..5, 0..9]),
        ],
        0,
    );
    let x = random::<F64, 2>([9, 3], 6, &dev);
    let a = householder_product(v, x.clone(), 2, false).unwrap();
    let b = householder_product(padded, x, 2, false).unwrap();
    assert!(max_abs_diff(a, b) < 1e-12);
}

/// Gradients of `⟨C, H_1⋯H_K X⟩` from Algorithm 2 against autodiff through the sequential
/// baseline (f64, so agreement is to round-off).
#[test]
fn backward_matches_autodiff_of_sequential() {
    type AD = Autodiff<F64>;
    let dev = Default::default();
    for (d, k, m, t) in [
        (7, 7, 3, 2),
        (64, 64, 8, 16),
        (100, 30, 5, 7),
        (33, 33, 1, 33),
    ] {
        for transpose in [false, true] {
            let v0 = random::<AD, 2>([k, d], 7 + d as u64, &dev);
            let x0 = random::<AD, 2>([d, m], 8 + d as u64, &dev);
            let c = random::<AD, 2>([d, m], 9 + d as u64, &dev);
            let grads_of = |fast: bool| {
                let v = v0.clone().require_grad();
                let x = x0.clone().require_grad();
                let out = if fast {
                    householder_product(v.clone(), x.clone(), t, transpose).unwrap()
                } else {
                    sequential_product(v.clone(), x.clone(), transpose)
                };
                let g = (out * c.clone()).sum().backward();
                (v.grad(&g).unwrap(), x.grad(&g).unwrap())
            };
            let (gv, gx) = grads_of(true);
            let (sv, sx) = grads_of(false);
            let ev = max_abs_diff(gv, sv);
            let ex = max_abs_diff(gx, sx);
            assert!(
                ev < 1e-10 && ex < 1e-10,
                "d={d} K={k} t={t} transpose={transpose}: dV err {ev:e}, dX err {ex:e}"
            );
        }
    }
}

/// The same gradient against central finite differences, independent of any autodiff.
#[test]
fn backward_matches_finite_differences() {
    type AD = Autodiff<F64>;
    let dev = Default::default();
    let (k, d, m, t) = (6, 6, 2, 4);
    let v0 = random::<F64, 2>([k, d], 11, &dev);
    let x0 = random::<F64, 2>([d, m], 12, &dev);
    let c = random::<F64, 2>([d, m], 13, &dev);
    let loss = |v: Tensor<F64, 2>| -> f64 {
        (householder_product(v, x0.clone(), t, false).unwrap() * c.clone())
            .sum()
            .into_scalar()
    };
    let v = Tensor::<AD, 2>::from_data(v0.to_data(), &dev).require_grad();
    let x = Tensor::<AD, 2>::from_data(x0.to_data(), &dev);
    let cc = Tensor::<AD, 2>::from_data(c.to_data(), &dev);
    let g = (householder_product(v.clone(), x, t, false).unwrap() * cc)
        .sum()
        .backward();
    let gv = v.grad(&g).unwrap().into_data().to_vec::<f64>().unwrap();
    let base = v0.to_data().to_vec::<f64>().unwrap();
    let h = 1e-6;
    for i in 0..k * d {
        let mut plus = base.clone();
        plus[i] += h;
        let mut minus = base.clone();
        minus[i] -= h;
        let lp = loss(Tensor::from_data(TensorData::new(plus, [k, d]), &dev));
        let lm = loss(Tensor::from_data(TensorData::new(minus, [k, d]), &dev));
        let fd = (lp - lm) / (2.0 * h);
        assert!(
            (fd - gv[i]).abs() < 1e-7,
            "dV[{i}]: finite difference {fd}, FastH {}",
            gv[i]
        );
    }
}

#[test]
fn explicit_matrix_matches_product_of_reflections() {
    let dev = Default::default();
    let v = random::<F64, 2>([3, 4], 14, &dev);
    let u = householder_matrix(v.clone(), false);
    let mut expect = Tensor::<F64, 2>::eye(4, &dev);
    for i in 0..3 {
        let vi = v.clone().slice([i..i + 1, 0..4]);
        let n2: f64 = vi.clone().powi_scalar(2).sum().into_scalar();
        let h = Tensor::eye(4, &dev) - vi.clone().transpose().matmul(vi).mul_scalar(2.0 / n2);
        expect = expect.matmul(h);
    }
    assert!(max_abs_diff(u, expect) < 1e-12);
}

#[test]
fn bad_shapes_are_named() {
    let dev = Default::default();
    let v = random::<F32, 2>([4, 5], 1, &dev);
    let err = householder_product(v.clone(), random::<F32, 2>([6, 2], 2, &dev), 2, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[6, 2]") && err.contains("[4, 5]"), "{err}");
    let err = householder_product(v, random::<F32, 2>([5, 2], 2, &dev), 0, false).unwrap_err();
    assert!(err.to_string().contains("group size"), "{err}");
}
