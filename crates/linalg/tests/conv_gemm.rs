//! `cfx_linalg::conv_gemm` against burn's `conv2d` on the CPU: output, input, weight and bias
//! gradients at every convolution shape of the IB-INN MNIST architecture.
//! `cargo test -p cfx-linalg --features wgpu --test conv_gemm` (any Vulkan driver, Mesa's
//! llvmpipe included, where implicit GEMM is refused and the op's direct fallback runs) or
//! `--features cuda` on an NVIDIA machine (tensor cores).
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn_flex::Flex;
use cfx_linalg::conv_gemm::{NarrowWeightGrad, conv2d_gemm, conv2d_gemm_autodiff_with};

mod common;

use common::{Gpu, MATMUL_TOL, max_error, random_values};

/// (c_in, c_out, size, kernel, stride): the subnets' 3×3 convolutions (`xtask bench conv`'s
/// `IBINN_CONVS`) and their 1×1 output convolutions.
const SHAPES: [(usize, usize, usize, usize, usize); 8] = [
    (2, 32, 14, 3, 1),
    (32, 32, 14, 3, 1),
    (8, 64, 7, 3, 1),
    (64, 64, 7, 3, 1),
    (2, 64, 14, 3, 1),
    (64, 64, 14, 3, 2),
    (32, 4, 14, 1, 1),
    (64, 16, 7, 1, 1),
];

struct Case {
    x: TensorData,
    w: TensorData,
    b: TensorData,
    /// Weights of the loss `Σ y·c`, so that every output entry has its own gradient.
    c: TensorData,
    options: ConvOptions<2>,
}

impl Case {
    fn new((c_in, c_out, size, k, stride): (usize, usize, usize, usize, usize)) -> Self {
        // An odd batch, so that no size is a multiple of a tile by accident.
        let n = 3;
        let out = (size + 2 * (k / 2) - k) / stride + 1;
        Self {
            x: TensorData::new(
                random_values(n * c_in * size * size, 1),
                [n, c_in, size, size],
            ),
            w: TensorData::new(random_values(c_out * c_in * k * k, 2), [c_out, c_in, k, k]),
            b: TensorData::new(random_values(c_out, 3), [c_out]),
            c: TensorData::new(
                random_values(n * c_out * out * out, 4),
                [n, c_out, out, out],
            ),
            options: ConvOptions::new([stride; 2], [k / 2; 2], [1, 1], 1),
        }
    }
}

type Conv<B> = fn(Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 1>>, ConvOptions<2>) -> Tensor<B, 4>;

/// Output, dX, dW and db of `Σ conv(x, w, b)·c`.
fn pass<B: burn::tensor::backend::AutodiffBackend>(case: &Case, f: Conv<B>) -> [Vec<f32>; 4] {
    let dev = Default::default();
    let x = Tensor::<B, 4>::from_data(case.x.clone(), &dev).require_grad();
    let w = Tensor::<B, 4>::from_data(case.w.clone(), &dev).require_grad();
    let b = Tensor::<B, 1>::from_data(case.b.clone(), &dev).require_grad();
    let c = Tensor::<B, 4>::from_data(case.c.clone(), &dev);
    let y = f(x.clone(), w.clone(), Some(b.clone()), case.options.clone());
    let grads = (y.clone() * c).sum().backward();
    fn read<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }
    [
        read(y.inner()),
        read(x.grad(&grads).expect("input gradient")),
        read(w.grad(&grads).expect("weight gradient")),
        read(b.grad(&grads).expect("bias gradient")),
    ]
}

/// Every shape is run and every mismatch listed, so that one failing shape does not hide the
/// others on a GPU session that has minutes to spend. Both ways of the narrow (2-channel)
/// weight gradients are run: the padded implicit GEMM (the default) and the direct kernel.
#[test]
fn training_convolution_matches_burns_on_the_cpu() {
    let ways: [(&str, Conv<Autodiff<Gpu>>); 2] = [
        ("padded", |x, w, b, o| {
            conv2d_gemm_autodiff_with(x, w, b, o, NarrowWeightGrad::Padded)
        }),
        ("direct", |x, w, b, o| {
            conv2d_gemm_autodiff_with(x, w, b, o, NarrowWeightGrad::Direct)
        }),
    ];
    let mut failures = vec![];
    for shape in SHAPES {
        let case = Case::new(shape);
        let cpu = pass::<Autodiff<Flex>>(&case, conv2d);
        for (way, f) in ways {
            let gpu = pass::<Autodiff<Gpu>>(&case, f);
            for (name, (a, b)) in ["output", "dX", "dW", "db"]
                .iter()
                .zip(gpu.iter().zip(&cpu))
            {
                let (err, scale) = max_error(a, b);
                if err > MATMUL_TOL * scale {
                    failures.push(format!(
                        "{shape:?} (c_in, c_out, size, kernel, stride), narrow weight gradient {way}: {name} differs by {err} (scale {scale})"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The inference path (ECINN, metrics) on the plain backend.
#[test]
fn inference_convolution_matches_burns_on_the_cpu() {
    let mut failures = vec![];
    for shape in SHAPES {
        let case = Case::new(shape);
        let (gd, cd) = (Default::default(), Default::default());
        let gpu = conv2d_gemm(
            Tensor::<Gpu, 4>::from_data(case.x.clone(), &gd),
            Tensor::from_data(case.w.clone(), &gd),
            Some(Tensor::from_data(case.b.clone(), &gd)),
            case.options.clone(),
        );
        let cpu = conv2d(
            Tensor::<Flex, 4>::from_data(case.x.clone(), &cd),
            Tensor::from_data(case.w.clone(), &cd),
            Some(Tensor::from_data(case.b.clone(), &cd)),
            case.options.clone(),
        );
        let (err, scale) = max_error(
            &gpu.into_data().to_vec::<f32>().unwrap(),
            &cpu.into_data().to_vec::<f32>().unwrap(),
        );
        if err > MATMUL_TOL * scale {
            failures.push(format!(
                "{shape:?}: output differs by {err} (scale {scale})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
