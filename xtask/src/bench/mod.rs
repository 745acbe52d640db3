//! `cargo xtask bench …`: timings taken side by side in one process.

mod all;
mod conv;
mod ecinn;
mod fasth;
mod fid;
mod glow;
mod step;

pub use all::{BenchAllOutput, all};
pub use conv::{ConvRow, ConvShape, IBINN_CONVS, conv};
pub use ecinn::{EcinnTiming, ecinn};
pub use fasth::{FastHRow, fasth};
pub use fid::{FidRow, fid};
pub use glow::{GlowConvTiming, glow_conv};
pub use step::{StepTiming, step};

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

/// `--json PATH`: the rows a bench printed, written atomically.
pub(crate) fn write_json<T: Serialize>(path: Option<&Path>, rows: &T) -> Result<()> {
    if let Some(p) = path {
        crate::fsutil::write_json(p, rows)?;
    }
    Ok(())
}

/// Median wall time in ms of `repeats` runs of `f` after `warmup` discarded ones; `f` must
/// return only once the device is done (it syncs).
pub(crate) fn median_ms(warmup: usize, repeats: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    upper_median(&mut times)
}

/// The middle value of timings (the upper one of the two middles for an even count), sorting
/// `v` in place.
pub(crate) fn upper_median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{BenchCommand, Cli, Command};

    fn parse(args: &[&str]) -> BenchCommand {
        match Cli::parse_from(args).command {
            Command::Bench(b) => b,
            other => panic!("parsed as {other:?}"),
        }
    }

    /// Tiny sizes through the real CLI paths: every row is timed and FastH agrees with the
    /// sequential product, FastFID with the dense reference.
    #[test]
    fn fasth_and_fid_benches_run() {
        let BenchCommand::Fasth(args) = parse(&[
            "xtask",
            "bench",
            "fasth",
            "--backend",
            "cpu",
            "--dims",
            "8,20",
            "--batch",
            "4",
            "--repeats",
            "1",
            "--warmup",
            "0",
        ]) else {
            panic!("not bench fasth")
        };
        let rows = super::fasth(&args).unwrap();
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert!(
                r.forward_backward_ms
                    .iter()
                    .all(|t| t.is_some_and(|t| t > 0.0))
            );
            assert!(r.max_abs_error.unwrap() < 1e-4, "{r:?}");
        }
        let BenchCommand::Fid(args) = parse(&[
            "xtask",
            "bench",
            "fid",
            "--backend",
            "cpu",
            "--dim",
            "24",
            "--batches",
            "4,12",
            "--real",
            "100",
            "--repeats",
            "1",
            "--warmup",
            "0",
        ]) else {
            panic!("not bench fid")
        };
        let rows = super::fid(&args).unwrap();
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert!(r.relative_error < 1e-5, "{r:?}");
            assert!(r.fast_known_error < 1e-3 * r.known_answer, "{r:?}");
        }
    }

    /// Both convolutions agree on every row (the unfold's own test holds it to 1e-4 against
    /// burn's `conv2d`) and each is timed.
    #[test]
    fn conv_bench_times_both_ways() {
        let BenchCommand::Conv(args) = parse(&[
            "xtask",
            "bench",
            "conv",
            "--backends",
            "cpu",
            "--quick",
            "--batch-size",
            "3",
            "--repeats",
            "1",
            "--warmup",
            "0",
        ]) else {
            panic!("not bench conv")
        };
        let rows = super::conv(&args).unwrap();
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert!(r.burn_ms > 0.0 && r.unfold_ms > 0.0, "{r:?}");
            assert!(r.weight_grad_rel_diff < 1e-5, "{r:?}");
            // No CPU backend registers an implicit-GEMM convolution.
            assert!(r.gemm_ms.is_none() && r.gemm_weight_grad_rel_diff.is_none());
        }
    }

    /// `bench all --quick` runs every bench through its CLI defaults and writes one JSON file
    /// each; ECINN explains every input towards all 9 other classes.
    #[test]
    fn bench_all_quick_writes_every_table() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("bench");
        let BenchCommand::All(args) = parse(&[
            "xtask",
            "bench",
            "all",
            "--backend",
            "cpu",
            "--quick",
            "--out",
            out.to_str().unwrap(),
        ]) else {
            panic!("not bench all")
        };
        let written = super::all(&args).unwrap();
        assert_eq!(written.files.len(), 4);
        let read = |name: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(out.join(format!("{name}.json"))).unwrap())
                .unwrap()
        };
        let ecinn = read("ecinn");
        assert_eq!(ecinn[0]["inputs"], 8);
        assert_eq!(ecinn[0]["counterfactuals"], 72);
        assert!(ecinn[0]["counterfactuals_per_second"].as_f64().unwrap() > 0.0);
        assert_eq!(read("step")[0]["batch_size"], 16);
        assert_eq!(read("fasth").as_array().unwrap().len(), 2);
        assert_eq!(read("fid").as_array().unwrap().len(), 2);
    }

    #[test]
    fn bench_all_runs_every_bench_unless_told_which() {
        use crate::cli::BenchName;
        let BenchCommand::All(all) = parse(&["xtask", "bench", "all"]) else {
            panic!("not bench all")
        };
        assert_eq!(
            all.benches,
            [
                BenchName::Step,
                BenchName::Ecinn,
                BenchName::Fasth,
                BenchName::Fid
            ]
        );
        let BenchCommand::All(some) = parse(&["xtask", "bench", "all", "--benches", "fid,step"])
        else {
            panic!("not bench all")
        };
        assert_eq!(some.benches, [BenchName::Fid, BenchName::Step]);
    }
}
