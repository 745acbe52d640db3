//! The FastFID op: device products, host eigenproblem, closed-form gradient.

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use nalgebra::{DMatrix, SymmetricEigen};

use crate::LinalgError;
use crate::convert::{primitive, tensor};

/// `tr √` of the Gram matrix `M = B Bᵀ` (m×m, `B = C₁F`), and `K = Σ q qᵀ/√λ` for the gradient.
pub(crate) struct SqrtTrace {
    pub value: f64,
    pub inv_sqrt: Option<DMatrix<f64>>,
}

/// Eigenvalues below this fraction of the largest get no gradient: `1/√λ` of a round-off
/// eigenvalue is noise, and its contribution to the value is ≤ √(1e-12)·√λ_max.
const GRAD_CUTOFF: f64 = 1e-12;

/// `rank` bounds the rank of M: min(m − 1, r) for a centred C₁ (m×d) and a factor F (d×r); the
/// other eigenvalues are structural zeros whose round-off would otherwise add `√ε·√λ_max` each.
pub(crate) fn sqrt_trace_of_gram(
    gram: DMatrix<f64>,
    rank: usize,
    want_grad: bool,
) -> Result<SqrtTrace, LinalgError> {
    if gram.iter().any(|v| !v.is_finite()) {
        return Err(LinalgError::NonFinite {
            op: "trace_sqrt_product",
            what: "C₁ Σ₂ C₁ᵀ (from the fake features or the real statistics)",
        });
    }
    let sym = (&gram + gram.transpose()) * 0.5;
    let eig = SymmetricEigen::new(sym);
    let mut order: Vec<usize> = (0..eig.eigenvalues.len()).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let kept = &order[..rank.min(order.len())];
    let lmax = eig.eigenvalues.iter().fold(0.0f64, |a, &b| a.max(b));
    let value = kept
        .iter()
        .map(|&i| eig.eigenvalues[i].max(0.0).sqrt())
        .sum();
    let inv_sqrt = want_grad.then(|| {
        let m = gram.nrows();
        let mut k = DMatrix::zeros(m, m);
        for &i in kept {
            let l = eig.eigenvalues[i];
            if l > GRAD_CUTOFF * lmax && l > 0.0 {
                let q = eig.eigenvectors.column(i);
                k += (q * q.transpose()) / l.sqrt();
            }
        }
        k
    });
    Ok(SqrtTrace { value, inv_sqrt })
}

/// A 2-D tensor read back into an f64 matrix (same rows and columns).
pub fn to_host<B: Backend>(x: Tensor<B, 2>) -> Result<DMatrix<f64>, LinalgError> {
    let [r, c] = x.dims();
    let data = x
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .map_err(|e| LinalgError::Invalid {
            op: "trace_sqrt_product",
            what: format!("cannot read a tensor back to the host: {e:?}"),
        })?;
    Ok(DMatrix::from_row_slice(r, c, &data))
}

/// An f64 matrix as a 2-D tensor (nalgebra is column-major, tensors row-major).
pub fn to_device<B: Backend>(x: &DMatrix<f64>, device: &B::Device) -> Tensor<B, 2> {
    let rows: Vec<f64> = x.transpose().iter().copied().collect();
    Tensor::from_data(TensorData::new(rows, [x.nrows(), x.ncols()]), device)
}

/// Portable forward (see [`crate::LinalgBackend::fid_trace_sqrt`]): the two products on the
/// device in the backend's precision, the m×m eigenproblem on the host in f64.
#[allow(clippy::type_complexity)]
pub(crate) fn forward<B: Backend>(
    c1: FloatTensor<B>,
    f: FloatTensor<B>,
    want_grad: bool,
) -> Result<(FloatTensor<B>, Option<FloatTensor<B>>), LinalgError> {
    let c1: Tensor<B, 2> = tensor(c1);
    let f: Tensor<B, 2> = tensor(f);
    let device = c1.device();
    let [m, _] = c1.dims();
    let [_, r] = f.dims();
    let b = c1.matmul(f.clone()); // [m, r]
    // BBᵀ (m×m) and BᵀB (r×r) share their nonzero eigenvalues. The gradient needs BBᵀ's
    // eigenvectors, but a plain evaluation over more samples than dimensions (a metric over
    // thousands of images) takes the smaller one: O(r³) instead of O(m³).
    let gram = if want_grad || m <= r {
        b.clone().matmul(b.clone().transpose())
    } else {
        b.clone().transpose().matmul(b.clone())
    };
    let rank = (m - 1).min(r);
    let SqrtTrace { value, inv_sqrt } = sqrt_trace_of_gram(to_host(gram)?, rank, want_grad)?;
    let out = Tensor::<B, 1>::from_data(TensorData::new(vec![value], [1]), &device);
    let grad =
        inv_sqrt.map(|k| primitive(to_device::<B>(&k, &device).matmul(b).matmul(f.transpose())));
    Ok((primitive(out), grad))
}
