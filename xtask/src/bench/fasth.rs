//! `cargo xtask bench fasth`: FastH against the sequential and the explicit-matrix ("parallel")
//! Householder products (Mathiasen et al. 2020, §4.1), one orthogonal d×d matrix applied to
//! X ∈ R^{d×m}, forward and forward+backward, all in one run.

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_linalg::LinalgBackend;
use cfx_linalg::fasth::baselines::{parallel_product, sequential_product};
use cfx_linalg::fasth::default_group;
use cfx_linalg::householder_product;
use serde::Serialize;

use super::median_ms;
use crate::backend::{BackendJob, BackendKind, run_on};
use crate::cli::FastHBenchArgs;

#[derive(Debug, Clone, Serialize)]
pub struct FastHRow {
    pub backend: String,
    pub d: usize,
    pub m: usize,
    pub group: usize,
    /// Median ms: FastH, sequential, parallel (`None`: skipped above `--baseline-max-dim`).
    pub forward_ms: [Option<f64>; 3],
    pub forward_backward_ms: [Option<f64>; 3],
    /// max |FastH − sequential| of the forward output.
    pub max_abs_error: Option<f64>,
}

struct Job {
    args: FastHBenchArgs,
}

#[derive(Clone, Copy)]
enum Method {
    Fast(usize),
    Sequential,
    Parallel,
}

fn apply<B: LinalgBackend>(method: Method, v: Tensor<B, 2>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    match method {
        Method::Fast(t) => householder_product(v, x, t, false).expect("shapes checked"),
        Method::Sequential => sequential_product(v, x, false),
        Method::Parallel => parallel_product(v, x, false),
    }
}

impl BackendJob for Job {
    type Output = Vec<FastHRow>;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<Vec<FastHRow>> {
        let a = &self.args;
        B::seed(&device, 0);
        let mut rows = vec![];
        for &d in &a.dims {
            let group = a.group.unwrap_or_else(|| default_group(d));
            let dist = burn::tensor::Distribution::Normal(0.0, 1.0);
            let v = Tensor::<B, 2>::random([d, d], dist, &device);
            let x = Tensor::<B, 2>::random([d, a.batch], dist, &device);
            let c = Tensor::<B, 2>::random([d, a.batch], dist, &device);
            let baselines = a.baseline_max_dim.is_none_or(|max| d <= max);
            let methods = [Method::Fast(group), Method::Sequential, Method::Parallel];
            let mut fwd = [None; 3];
            let mut fb = [None; 3];
            for (k, &method) in methods.iter().enumerate() {
                if k > 0 && !baselines {
                    continue;
                }
                fwd[k] = Some(median_ms(a.warmup, a.repeats, || {
                    let _ = apply(method, v.clone(), x.clone());
                    B::sync(&device).expect("device sync");
                }));
                fb[k] = Some(median_ms(a.warmup, a.repeats, || {
                    let vv = v.clone().require_grad();
                    let xx = x.clone().require_grad();
                    let grads = (apply(method, vv, xx) * c.clone()).sum().backward();
                    drop(grads);
                    B::sync(&device).expect("device sync");
                }));
            }
            let max_abs_error = baselines.then(|| {
                let f = apply(Method::Fast(group), v.clone(), x.clone());
                let s = apply(Method::Sequential, v.clone(), x.clone());
                (f - s).abs().max().into_scalar().elem::<f64>()
            });
            let row = FastHRow {
                backend: backend.to_string(),
                d,
                m: a.batch,
                group,
                forward_ms: fwd,
                forward_backward_ms: fb,
                max_abs_error,
            };
            print_row(&row);
            rows.push(row);
        }
        Ok(rows)
    }
}

fn fmt_ms(t: Option<f64>) -> String {
    t.map_or("skipped".into(), |t| format!("{t:.3}"))
}

fn ratio(base: Option<f64>, fast: Option<f64>) -> String {
    match (base, fast) {
        (Some(b), Some(f)) => format!("{:.1}x", b / f),
        _ => "-".into(),
    }
}

fn print_row(r: &FastHRow) {
    for (name, t) in [
        ("forward", &r.forward_ms),
        ("fwd+bwd", &r.forward_backward_ms),
    ] {
        println!(
            "{:<6} d={:<5} m={:<3} t={:<3} {name:<8} ms: fasth {:>10} sequential {:>10} parallel {:>10} | speed-up vs seq {:>7} vs par {:>7}",
            r.backend,
            r.d,
            r.m,
            r.group,
            fmt_ms(t[0]),
            fmt_ms(t[1]),
            fmt_ms(t[2]),
            ratio(t[1], t[0]),
            ratio(t[2], t[0]),
        );
    }
    if let Some(e) = r.max_abs_error {
        println!(
            "{:<6} d={:<5} max |fasth - sequential| = {e:.2e}",
            r.backend, r.d
        );
    }
}

pub fn fasth(args: &FastHBenchArgs) -> Result<Vec<FastHRow>> {
    let rows = run_on(args.backend.kind(), Job { args: args.clone() })?;
    super::write_json(args.json.as_deref(), &rows)?;
    Ok(rows)
}
