//! The generator's Jacobian and its spectrum: seed 002 §4.1 (Eq. 23) reads the tangent space of
//! the data manifold from the SVD of `∂g/∂z`, where `g = f⁻¹` maps latents to data. On data
//! concentrated near a `d`-dimensional manifold in `D` dimensions, `D − d` singular values are
//! small (the seed's fig. 7).

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use nalgebra::DMatrix;

use crate::Flow;
use crate::nn::mode;

/// `∂g/∂z` at one latent `z` (`[1, C, H, W]`, inner backend), row-major `D × D` with
/// `J[i][j] = ∂x_i/∂z_j`, `x = flow.inverse(z)`. One backward pass over `D` copies of `z`: copy
/// `i` differentiates output `i`, which works because the flow treats samples independently
/// (the pass runs in [`mode::inference`]). `rows` bounds the copies per pass.
pub fn generator_jacobian<A: AutodiffBackend>(
    flow: &dyn Flow<A>,
    z: Tensor<A::InnerBackend, 4>,
    rows: usize,
) -> Vec<f64> {
    let [n, c, h, w] = z.dims();
    assert_eq!(n, 1, "generator_jacobian takes one latent, got {n}");
    let d = c * h * w;
    let device = z.device();
    let mut jac = vec![0f64; d * d];
    let step = rows.max(1);
    for start in (0..d).step_by(step) {
        let end = (start + step).min(d);
        let m = end - start;
        let copies = Tensor::<A, 4>::from_inner(z.clone().expand([m, c, h, w])).require_grad();
        let x = {
            let _mode = mode::inference();
            flow.inverse(copies.clone())
        }
        .reshape([m, d]);
        // Copy k selects output start + k.
        let mut pick = vec![0f32; m * d];
        for k in 0..m {
            pick[k * d + start + k] = 1.0;
        }
        let pick = Tensor::<A, 2>::from_data(TensorData::new(pick, [m, d]), &device);
        let grads = (x * pick).sum().backward();
        let g: Vec<f64> = copies
            .grad(&grads)
            .map(|g| {
                g.reshape([m, d])
                    .into_data()
                    .convert::<f64>()
                    .into_vec()
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| vec![0.0; m * d]);
        jac[start * d..end * d].copy_from_slice(&g);
    }
    jac
}

/// Singular values of a row-major `d × d` matrix, largest first: `√` of the eigenvalues of the
/// inverse induced metric `γ⁻¹ = J Jᵀ` (seed 002 Eq. 23).
pub fn singular_values(jac: &[f64], d: usize) -> Vec<f64> {
    let m = DMatrix::from_row_slice(d, d, jac);
    let mut s: Vec<f64> = m.singular_values().iter().copied().collect();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::ActNorm;
    use crate::ibinn::IbInnConfig;
    use crate::test_util::{TAd, random};

    #[test]
    fn the_jacobian_of_a_scaling_is_diagonal_with_known_singular_values() {
        // ActNorm forward is y = x·exp(ℓ) + b; its inverse scales by exp(−ℓ).
        let dev = Default::default();
        let an = ActNorm::<TAd> {
            log_scale: burn::module::Param::from_tensor(Tensor::from_floats(
                [0.1, -0.3, 0.7],
                &dev,
            )),
            offset: burn::module::Param::from_tensor(Tensor::from_floats([0.5, 0.0, -1.0], &dev)),
        };
        let x = Tensor::<TAd, 4>::from_floats([[[[1.0]], [[-2.0]], [[0.5]]]], &Default::default());
        let (y, _) = an.forward(x);
        let jac = generator_jacobian(&an, y.inner(), 2);
        let s: Vec<f64> = [0.1f64, -0.3, 0.7].iter().map(|l| l.exp()).collect();
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 / s[i] } else { 0.0 };
                assert!(
                    (jac[i * 3 + j] - want).abs() < 1e-5,
                    "J[{i}][{j}] {}",
                    jac[i * 3 + j]
                );
            }
        }
        let mut want: Vec<f64> = s.iter().map(|v| 1.0 / v.abs()).collect();
        want.sort_by(|a, b| b.total_cmp(a));
        for (a, b) in singular_values(&jac, 3).iter().zip(&want) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn the_jacobian_of_an_ibinn_agrees_with_its_log_determinant() {
        // Σ ln σᵢ(∂g/∂z) = ln|det ∂g/∂z| = −ln|det ∂f/∂x|, which the flow computes in closed
        // form: an exact check of every entry's contribution, free of finite-difference error.
        let model = IbInnConfig::tiny().init::<TAd>(&Default::default());
        let x = random([1, 1, 28, 28], 5).mul_scalar(0.5);
        let (z, log_det) = {
            let _m = mode::inference();
            let (z, ld) = model.forward(Tensor::from_inner(x));
            (z.inner(), ld.inner().into_scalar() as f64)
        };
        let jac = generator_jacobian(&model, z, 300);
        let sum_log: f64 = singular_values(&jac, 784).iter().map(|s| s.ln()).sum();
        assert!(
            (sum_log + log_det).abs() <= 1e-3 * log_det.abs().max(1.0),
            "Σ ln σ {sum_log} vs −log det {}",
            -log_det
        );
    }
}
