use std::time::Instant;
fn expm1_loop(v: &mut [f32]) -> f64 {
    let t = Instant::now();
    for x in v.iter_mut() { *x = std::hint::black_box(*x * 0.5).exp_m1(); }
    t.elapsed().as_secs_f64() * 1e3
}
fn scalar_loop(v: &mut [f32]) -> f64 {
    // plain Rust scalar f32 math (baseline x86-64: SSE)
    let t = Instant::now();
    for x in v.iter_mut() { *x = std::hint::black_box(*x) * 0.999 + 0.001; }
    t.elapsed().as_secs_f64() * 1e3
}
fn clear_upper() {
    if let Some(simd) = pulp::x86::V3::try_new() {
        simd.vectorize(|| {
            std::hint::black_box(simd.splat_f32x8(0.0));
        });
    }
}
fn main() {
    use faer::{MatRef, MatMut, Accum, Par};
    let (m, k, n) = (32, 288, 196);
    let a = vec![0.1f32; m * k]; let b = vec![0.2f32; k * n]; let mut c = vec![0f32; m * n];
    let mut v: Vec<f32> = (0..1_000_000).map(|i| (i % 100) as f32 * 0.01).collect();
    for round in 0..3 {
        let e0 = expm1_loop(&mut v); let s0 = scalar_loop(&mut v);
        faer::linalg::matmul::matmul(MatMut::from_row_major_slice_mut(&mut c, m, n), Accum::Replace, MatRef::from_row_major_slice(&a, m, k), MatRef::from_row_major_slice(&b, k, n), 1.0f32, Par::Seq);
        let e1 = expm1_loop(&mut v); let s1 = scalar_loop(&mut v);
        faer::linalg::matmul::matmul(MatMut::from_row_major_slice_mut(&mut c, m, n), Accum::Replace, MatRef::from_row_major_slice(&a, m, k), MatRef::from_row_major_slice(&b, k, n), 1.0f32, Par::Seq);
        clear_upper();
        let e3 = expm1_loop(&mut v); let s3 = scalar_loop(&mut v);
        println!("after faer + clear_upper: expm1 {e3:.2} scalar {s3:.2}");
        unsafe { gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 0.0, 1.0, false, false, false, gemm::Parallelism::None); }
        let e2 = expm1_loop(&mut v); let s2 = scalar_loop(&mut v);
        println!("round {round}: expm1 1M: clean {e0:.2} ms, after faer {e1:.2} ms, after gemm {e2:.2} ms | scalar: {s0:.2} {s1:.2} {s2:.2}");
    }
}
