use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;

use super::*;
use crate::test_util::{max_abs_diff, random};

type F64 = NdArray<f64>;

#[test]
fn orthogonal_is_orthogonal_and_inverts() {
    let dev = Default::default();
    for (d, k) in [(9, None), (40, Some(12))] {
        let layer = OrthogonalConfig::new(d)
            .with_reflections(k)
            .with_group(Some(4))
            .init::<F64>(&dev);
        let u = layer.matrix();
        assert!(max_abs_diff(u.clone().transpose().matmul(u), Tensor::eye(d, &dev)) < 1e-12);
        let x = random::<F64, 2>([5, d], 1, &dev);
        assert!(max_abs_diff(layer.inverse(layer.forward(x.clone())), x) < 1e-12);
    }
}

#[test]
fn svd_linear_weight_determinant_and_inverse() {
    let dev = Default::default();
    let d = 12;
    let layer = SvdLinearConfig::new(d)
        .with_init_log_scale(0.5)
        .with_group(Some(5))
        .init::<F64>(&dev);
    let w = layer.weight();
    let data = w.to_data().to_vec::<f64>().unwrap();
    let det = nalgebra::DMatrix::from_row_slice(d, d, &data).determinant();
    let log_det: f64 = layer.log_abs_det().into_scalar();
    assert!(
        (det.abs().ln() - log_det).abs() < 1e-10,
        "{det} vs exp({log_det})"
    );
    // Singular values of W are exp(log σ): the spectral norm is exact.
    let svd = nalgebra::DMatrix::from_row_slice(d, d, &data).singular_values();
    let norm: f64 = layer.spectral_norm().into_scalar();
    assert!((svd.max() - norm).abs() < 1e-10);
    let x = random::<F64, 2>([7, d], 2, &dev);
    let y = layer.forward(x.clone());
    let bias = layer.bias.as_ref().unwrap().val().unsqueeze_dim(0);
    assert!(max_abs_diff(y.clone(), x.clone().matmul(w.transpose()) + bias) < 1e-12);
    assert!(max_abs_diff(layer.inverse(y), x) < 1e-12);
}

#[test]
fn conv1x1_log_det_matches_the_dense_weight() {
    let dev = Default::default();
    let conv = InvConv1x1Config::new(6)
        .with_group(Some(4))
        .init::<F64>(&dev);
    let x = random::<F64, 4>([3, 6, 5, 4], 3, &dev);
    let (z, log_det) = conv.forward(x.clone());
    assert_eq!(log_det.dims(), [3]);
    let w = conv.weight.weight().to_data().to_vec::<f64>().unwrap();
    let det = nalgebra::DMatrix::from_row_slice(6, 6, &w).determinant();
    let expect = 20.0 * det.abs().ln();
    let got = log_det.to_data().to_vec::<f64>().unwrap();
    assert!(
        got.iter().all(|g| (g - expect).abs() < 1e-9),
        "{got:?} vs {expect}"
    );
    // The same map as a dense 1×1 convolution.
    let dense = Tensor::<F64, 2>::from_data(TensorData::new(w, [6, 6]), &dev);
    let flat = x.clone().swap_dims(0, 1).reshape([6, 60]);
    let expect_z = dense.matmul(flat).reshape([6, 3, 5, 4]).swap_dims(0, 1);
    assert!(max_abs_diff(z.clone(), expect_z) < 1e-12);
    assert!(max_abs_diff(conv.inverse(z), x) < 1e-12);
}

#[test]
fn layers_train_through_the_custom_backward() {
    type AD = Autodiff<F64>;
    let dev = Default::default();
    let layer = SvdLinearConfig::new(8).with_group(Some(3)).init::<AD>(&dev);
    let x = random::<AD, 2>([4, 8], 4, &dev);
    let loss = layer.forward(x).powi_scalar(2).sum() + layer.log_abs_det();
    let grads = loss.backward();
    for (name, g) in [
        ("U", layer.u.vectors.grad(&grads)),
        ("V", layer.v.vectors.grad(&grads)),
    ] {
        let g = g.unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm: f64 = g.abs().sum().into_scalar();
        assert!(norm > 0.0 && norm.is_finite(), "{name}: {norm}");
    }
    assert!(layer.log_sigma.grad(&grads).is_some());
}
