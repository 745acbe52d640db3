//! The CubeCL kernels against the portable implementation on the CPU.
//! `cargo test -p cfx-linalg --features wgpu` (any Vulkan driver, Mesa's llvmpipe included)
//! or `--features cuda` on an NVIDIA machine.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::Flex;
use cfx_linalg::fasth::baselines::sequential_product;
use cfx_linalg::{LinalgBackend, householder_product};

mod common;

use common::{Gpu, MATMUL_TOL, max_error, random};

fn grads<B: LinalgBackend + burn::tensor::backend::AutodiffBackend>(
    v: TensorData,
    x: TensorData,
    c: TensorData,
    group: usize,
    transpose: bool,
    fast: bool,
) -> [Vec<f32>; 3] {
    let dev = Default::default();
    let v = Tensor::<B, 2>::from_data(v, &dev).require_grad();
    let x = Tensor::<B, 2>::from_data(x, &dev).require_grad();
    let c = Tensor::<B, 2>::from_data(c, &dev);
    let out = if fast {
        householder_product(v.clone(), x.clone(), group, transpose).unwrap()
    } else {
        sequential_product(v.clone(), x.clone(), transpose)
    };
    let g = (out.clone() * c).sum().backward();
    let read = |t: Tensor<B::InnerBackend, 2>| t.into_data().to_vec::<f32>().unwrap();
    [
        read(out.inner()),
        read(v.grad(&g).unwrap()),
        read(x.grad(&g).unwrap()),
    ]
}

/// Every case is run and every mismatch listed, so that one failing shape does not hide the
/// others (on the H200 the first case failed: docs/results.md).
#[test]
fn kernels_match_the_portable_path() {
    let mut failures = vec![];
    for (k, d, m, group) in [
        (7, 7, 3, 2),
        (8, 8, 4, 2),
        (64, 64, 8, 16),
        (100, 100, 5, 32),
        (37, 100, 300, 8),
    ] {
        for transpose in [false, true] {
            let (v, x, c) = (random([k, d], 1), random([d, m], 2), random([d, m], 3));
            let gpu =
                grads::<Autodiff<Gpu>>(v.clone(), x.clone(), c.clone(), group, transpose, true);
            let cpu = grads::<Autodiff<Flex>>(v, x, c, group, transpose, false);
            for (name, (a, b)) in ["output", "dV", "dX"].iter().zip(gpu.iter().zip(&cpu)) {
                let (err, scale) = max_error(a, b);
                if err > MATMUL_TOL * scale {
                    failures.push(format!(
                        "K={k} d={d} m={m} t={group} transpose={transpose}: {name} differs by {err} (scale {scale})"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The backend's batched matmul at the small, odd shapes FastH's group sweeps use, to its own
/// precision ([`MATMUL_TOL`]): if this fails too, a mismatch above comes from the matmul, not
/// from FastH's own kernels.
#[test]
fn the_backend_matmul_is_right_at_small_odd_shapes() {
    let mut failures = vec![];
    for (g, r, inner, cols) in [(4, 2, 7, 3), (4, 2, 7, 2), (3, 7, 2, 3), (1, 7, 7, 3)] {
        let a = random([g * r, inner], 4);
        let b = random([g * inner, cols], 5);
        fn batched<B: Backend>(
            a: TensorData,
            b: TensorData,
            [g, r, inner, cols]: [usize; 4],
        ) -> Vec<f32> {
            let d = Default::default();
            let a = Tensor::<B, 2>::from_data(a, &d).reshape([g, r, inner]);
            let b = Tensor::<B, 2>::from_data(b, &d).reshape([g, inner, cols]);
            read(a.matmul(b))
        }
        let shape = [g, r, inner, cols];
        let (err, scale) = max_error(
            &batched::<Gpu>(a.clone(), b.clone(), shape),
            &batched::<Flex>(a, b, shape),
        );
        if err > MATMUL_TOL * scale {
            failures.push(format!(
                "[{g}, {r}, {inner}] × [{g}, {inner}, {cols}]: differs by {err}"
            ));
        }
    }
    // As the forward sweep uses it: a transposed slice of a [G, t, d] tensor times [t, m].
    fn sweep<B: Backend>(w: TensorData, x: TensorData, [g, t, d]: [usize; 3]) -> Vec<f32> {
        let dev = Default::default();
        let w = Tensor::<B, 2>::from_data(w, &dev).reshape([g, t, d]);
        let x = Tensor::<B, 2>::from_data(x, &dev);
        let slice = w.slice([g - 1..g, 0..t, 0..d]).reshape([t, d]);
        read(slice.transpose().matmul(x))
    }
    let (g, t, d, m) = (4, 2, 7, 3);
    let (w, x) = (random([g * t, d], 6), random([t, m], 7));
    let (err, scale) = max_error(
        &sweep::<Gpu>(w.clone(), x.clone(), [g, t, d]),
        &sweep::<Flex>(w, x, [g, t, d]),
    );
    if err > MATMUL_TOL * scale {
        failures.push(format!(
            "transposed slice [{d}, {t}] of [{g}, {t}, {d}] × [{t}, {m}]: differs by {err}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn on<B: LinalgBackend, const D: usize>(data: TensorData, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::<B, 2>::from_data(data, &Default::default()).reshape(shape)
}

fn read<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// Each kernel on its own against the portable twin it replaces, at f32 precision, at the shapes
/// where the whole product failed on CUDA (rows of 7 and 100 floats, which CUDA's allocator
/// pitches) and at aligned ones.
#[test]
fn each_kernel_matches_its_portable_twin() {
    let mut failures = vec![];
    for (g, t, d, m) in [(4, 2, 7, 3), (2, 4, 8, 4), (3, 16, 64, 8), (4, 8, 100, 300)] {
        // WY from unit rows, the last row zero as in a padded group.
        let y = random([g * t, d], 8);
        let mut rows = y.to_vec::<f32>().unwrap();
        for row in rows.chunks_mut(d) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            row.iter_mut().for_each(|v| *v /= norm);
        }
        rows[(g * t - 1) * d..].fill(0.0);
        let y = TensorData::new(rows, [g * t, d]);
        fn wy<B: LinalgBackend>(y: TensorData, shape: [usize; 3]) -> Vec<f32> {
            let y = on::<B, 3>(y, shape).into_primitive().tensor();
            read(Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(
                B::fasth_wy(y),
            )))
        }
        let (err, scale) = max_error(&wy::<Gpu>(y.clone(), [g, t, d]), &wy::<Flex>(y, [g, t, d]));
        if err > 1e-4 * scale {
            failures.push(format!(
                "fasth_wy [{g}, {t}, {d}]: differs by {err} (scale {scale})"
            ));
        }

        let (v, s) = (random([g * t, d], 9), random([g, t], 10));
        let (a, grad) = (random([g * d, m], 11), random([g * d, m], 12));
        fn vg<B: LinalgBackend>(
            v: TensorData,
            s: TensorData,
            a: TensorData,
            grad: TensorData,
            [g, t, d, m]: [usize; 4],
        ) -> Vec<f32> {
            let p =
                |x: TensorData, shape: [usize; 3]| on::<B, 3>(x, shape).into_primitive().tensor();
            let s = Tensor::<B, 2>::from_data(s, &Default::default())
                .into_primitive()
                .tensor();
            read(Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(
                B::fasth_vector_grads(p(v, [g, t, d]), s, p(a, [g, d, m]), p(grad, [g, d, m])),
            )))
        }
        let shape = [g, t, d, m];
        let (err, scale) = max_error(
            &vg::<Gpu>(v.clone(), s.clone(), a.clone(), grad.clone(), shape),
            &vg::<Flex>(v, s, a, grad, shape),
        );
        if err > 1e-4 * scale {
            failures.push(format!(
                "fasth_vector_grads [{g}, {t}, {d}] m={m}: differs by {err} (scale {scale})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
