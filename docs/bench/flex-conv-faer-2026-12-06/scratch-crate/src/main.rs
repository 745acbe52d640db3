use std::time::Instant;
fn mm_gemm(m: usize, k: usize, n: usize, a: &[f32], rsa: isize, csa: isize, b: &[f32], rsb: isize, csb: isize, c: &mut [f32], acc: bool) {
    unsafe {
        gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, acc, a.as_ptr(), csa, rsa, b.as_ptr(), csb, rsb, if acc {1.0} else {0.0}, 1.0, false, false, false, gemm::Parallelism::None);
    }
}
fn mm_mm(m: usize, k: usize, n: usize, a: &[f32], rsa: isize, csa: isize, b: &[f32], rsb: isize, csb: isize, c: &mut [f32], acc: bool) {
    unsafe {
        matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, if acc {1.0} else {0.0}, c.as_mut_ptr(), n as isize, 1);
    }
}
fn mm_faer(m: usize, k: usize, n: usize, a: &[f32], rsa: isize, csa: isize, b: &[f32], rsb: isize, csb: isize, c: &mut [f32], acc: bool) {
    use faer::{MatRef, MatMut, Accum, Par};
    let av = if csa == 1 { MatRef::from_row_major_slice(a, m, k) } else { MatRef::from_column_major_slice(a, m, k) };
    let bv = if csb == 1 { MatRef::from_row_major_slice(b, k, n) } else { MatRef::from_column_major_slice(b, k, n) };
    let _ = (rsa, rsb);
    let cv = MatMut::from_row_major_slice_mut(c, m, n);
    faer::linalg::matmul::matmul(cv, if acc { Accum::Add } else { Accum::Replace }, av, bv, 1.0f32, Par::Seq);
}
fn main() {
    let shapes = [(2usize, 32usize, 14usize, 3usize), (32, 32, 14, 3), (8, 64, 7, 3), (64, 64, 7, 3), (32, 4, 14, 1), (64, 16, 7, 1)];
    let reps = 2000;
    for &(ci, co, s, kk) in &shapes {
        let kp = ci * kk * kk; let p = s * s;
        let w: Vec<f32> = (0..co * kp).map(|i| (i % 7) as f32 * 0.1).collect();
        let u: Vec<f32> = (0..kp * p).map(|i| (i % 5) as f32 * 0.1).collect();
        let dy: Vec<f32> = (0..co * p).map(|i| (i % 3) as f32 * 0.1).collect();
        // three products: fwd [co,kp]x[kp,p]; wgrad [co,p]x[p,kp] (u transposed); igrad [kp,co]x[co,p] (w transposed)
        let cases: [(&str, usize, usize, usize, &[f32], isize, isize, &[f32], isize, isize, bool); 3] = [
            ("fwd", co, kp, p, &w, kp as isize, 1, &u, p as isize, 1, false),
            ("wgr", co, p, kp, &dy, p as isize, 1, &u, 1, p as isize, true),
            ("igr", kp, co, p, &w, 1, kp as isize, &dy, p as isize, 1, false),
        ];
        for (name, m, k, n, a, rsa, csa, b, rsb, csb, acc) in cases {
            let mut c = vec![0f32; m * n];
            let mut res = vec![];
            for round in 0..3 {
                for which in 0..3 {
                    let f = [mm_gemm, mm_mm, mm_faer][which];
                    for _ in 0..50 { f(m, k, n, a, rsa, csa, b, rsb, csb, &mut c, acc); }
                    let t = Instant::now();
                    for _ in 0..reps { f(m, k, n, a, rsa, csa, b, rsb, csb, &mut c, acc); }
                    let us = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
                    if round > 0 { res.push((which, us)); }
                }
            }
            let g: f64 = res.iter().filter(|r| r.0 == 0).map(|r| r.1).sum::<f64>() / 2.0;
            let mmv: f64 = res.iter().filter(|r| r.0 == 1).map(|r| r.1).sum::<f64>() / 2.0;
            let fv: f64 = res.iter().filter(|r| r.0 == 2).map(|r| r.1).sum::<f64>() / 2.0;
            println!("{ci:>2}->{co:>2} {s}x{s} k{kk} {name} m{m} k{k} n{n}: gemm {g:7.2} us  mm {mmv:7.2} ({:.2})  faer {fv:7.2} ({:.2})", mmv / g, fv / g);
        }
    }
}
