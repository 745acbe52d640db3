//! Numerical checks of the [`Flow`] contract, shared by this crate's tests and by any crate that
//! adds a flow: exact inverse, and a log-determinant that matches the brute-force Jacobian.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use nalgebra::DMatrix;

use crate::Flow;

/// `log|det ∂f/∂x|` at one sample `x` (`[1, C, H, W]`), from the full Jacobian.
///
/// One backward pass per output gives the Jacobian row by row, always through a batch of one,
/// so that batch-norm layers in training mode (burn's autodiff mode) normalise by the
/// statistics of `x` alone, as the map being differentiated does. The determinant is taken in
/// f64 through an LU factorisation (sum of `ln|u_ii|`, so large `D` cannot overflow).
pub fn jacobian_log_det<B: AutodiffBackend, F: Flow<B>>(f: &F, x: Tensor<B, 4>) -> f64 {
    let [n, c, h, w] = x.dims();
    assert_eq!(n, 1, "jacobian_log_det takes a single sample");
    let d = c * h * w;
    let mut jac = Vec::with_capacity(d * d);
    for i in 0..d {
        let xi = x.clone().detach().require_grad();
        let (z, _) = f.forward(xi.clone());
        assert_eq!(
            z.dims().iter().product::<usize>(),
            d,
            "flow must preserve dimension"
        );
        let grads = z.reshape([d]).slice(i..i + 1).sum().backward();
        let row: Vec<f64> = xi
            .grad(&grads)
            .expect("input must receive a gradient")
            .into_data()
            .convert::<f64>()
            .to_vec()
            .expect("f64 data");
        jac.extend(row);
    }
    let m = DMatrix::from_row_slice(d, d, &jac);
    m.lu().u().diagonal().iter().map(|u| u.abs().ln()).sum()
}

/// Largest absolute difference between two tensors.
pub fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    (a - b).abs().max().into_scalar().elem::<f64>()
}

/// Checks `inverse(forward(x)) ≈ x` (max abs error ≤ `inv_tol`) and that the reported
/// log-determinant of the first sample matches [`jacobian_log_det`] within `ld_tol`
/// (absolute, plus the same relative to its size). Returns `(inverse error, log-det error)`.
pub fn check_flow<B: AutodiffBackend, F: Flow<B>>(
    f: &F,
    x: Tensor<B, 4>,
    inv_tol: f64,
    ld_tol: f64,
) -> (f64, f64) {
    let (z, ld) = f.forward(x.clone());
    let back = f.inverse(z);
    let inv_err = max_abs_diff(back, x.clone());
    assert!(
        inv_err <= inv_tol,
        "inverse(forward(x)) differs from x by {inv_err}"
    );
    assert_eq!(ld.dims(), [x.dims()[0]], "one log-determinant per sample");
    // Both sides see the first sample alone: batch-norm statistics depend on the batch.
    let x0 = x.slice(0..1);
    let reported: f64 = f.forward(x0.clone()).1.into_scalar().elem();
    let brute = jacobian_log_det(f, x0);
    let ld_err = (reported - brute).abs();
    assert!(
        ld_err <= ld_tol * (1.0 + brute.abs()),
        "log_det {reported} but the Jacobian gives {brute}"
    );
    (inv_err, ld_err)
}
