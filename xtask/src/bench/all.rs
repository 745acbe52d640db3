//! `cargo xtask bench all`: the four benches the PyTorch peers of `bench/pytorch/` mirror, on
//! one backend, each with its own defaults, one JSON file each.

use std::path::Path;

use anyhow::Result;
use clap::{Args, Command, FromArgMatches};

use crate::cli::{
    BenchAllArgs, BenchName, EcinnBenchArgs, FastHBenchArgs, FidBenchArgs, StepBenchArgs,
};

/// A bench's arguments as clap would parse them with no flags: one source for the defaults.
fn defaults<T: Args + FromArgMatches>() -> T {
    let matches = T::augment_args(Command::new("bench")).get_matches_from(["bench"]);
    T::from_arg_matches(&matches).expect("every bench flag has a default")
}

/// What `bench all` ran: the JSON file of each bench.
#[derive(Debug, Clone)]
pub struct BenchAllOutput {
    pub files: Vec<std::path::PathBuf>,
}

pub fn all(args: &BenchAllArgs) -> Result<BenchAllOutput> {
    std::fs::create_dir_all(&args.out).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the output folder {}: {e}",
            args.out.display()
        )
    })?;
    let kind = args.backend.kind();
    let json = |name: &str| Some(Path::new(&args.out).join(format!("{name}.json")));

    let mut step: StepBenchArgs = defaults();
    step.backends = vec![kind];
    step.json = json("step");
    let mut ecinn: EcinnBenchArgs = defaults();
    ecinn.backends = vec![kind];
    ecinn.json = json("ecinn");
    let mut fasth: FastHBenchArgs = defaults();
    fasth.backend.backend = Some(kind);
    fasth.json = json("fasth");
    let mut fid: FidBenchArgs = defaults();
    fid.backend.backend = Some(kind);
    fid.json = json("fid");
    if !kind.is_gpu() {
        // At d = 2048 the explicit-matrix baseline's autodiff graph needs 34 GB of host memory
        // (docs/results.md, "FastH on the CPU").
        fasth.baseline_max_dim = Some(1024);
    }
    if args.quick {
        step.small = true;
        (step.batch_size, step.steps, step.warmup) = (16, 1, 0);
        ecinn.small = true;
        (ecinn.batch_size, ecinn.repeats, ecinn.warmup) = (8, 1, 0);
        fasth.dims = vec![16, 64];
        (fasth.batch, fasth.repeats, fasth.warmup) = (4, 1, 0);
        (fid.dim, fid.real, fid.repeats, fid.warmup) = (64, 256, 1, 0);
        fid.batches = vec![8, 32];
    }

    let wants = |b: BenchName| args.benches.contains(&b);
    let mut files = vec![];
    if wants(BenchName::Step) {
        println!("== bench step ({kind})");
        super::step(&step)?;
        files.extend(step.json);
    }
    if wants(BenchName::Ecinn) {
        println!("== bench ecinn ({kind})");
        super::ecinn(&ecinn)?;
        files.extend(ecinn.json);
    }
    if wants(BenchName::Fasth) {
        println!("== bench fasth ({kind})");
        super::fasth(&fasth)?;
        files.extend(fasth.json);
    }
    if wants(BenchName::Fid) {
        println!("== bench fid ({kind})");
        super::fid(&fid)?;
        files.extend(fid.json);
    }
    Ok(BenchAllOutput { files })
}
