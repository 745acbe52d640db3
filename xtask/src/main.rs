use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use xtask::backend::run_on;
use xtask::cli::{BenchCommand, Cli, Command, TrainCommand};
use xtask::train::ibinn::{IbInnTrainConfig, IbInnTrainJob, TrainOutcome};
use xtask::train::run::read_toml;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(TrainCommand::IbInn(args)) => {
            let (cfg, root) = if args.resume {
                let probe = args.new_config().unwrap_or_default();
                let root = args.run_root(&probe);
                let saved: IbInnTrainConfig = read_toml(&root.join("config.toml"))?;
                (args.resumed_config(saved)?, root)
            } else {
                let cfg = args.new_config()?;
                let root = args.run_root(&cfg);
                (cfg, root)
            };
            let job = IbInnTrainJob {
                cfg,
                run_root: root.clone(),
                resume: args.resume,
                control: args.control(),
            };
            match run_on(args.backend.kind(), job)? {
                TrainOutcome::Finished(r) => {
                    println!(
                        "{}: test accuracy {:.2}% (error {:.2}%), bits/dim {:.3}; model in {}",
                        r.dataset,
                        100.0 * r.accuracy,
                        r.error_percent,
                        r.bpd,
                        root.display()
                    );
                }
                TrainOutcome::Paused { checkpoint, state } => {
                    println!(
                        "paused after {} epochs + {} steps; continue with --resume ({})",
                        state.epochs_done,
                        state.step_in_epoch,
                        checkpoint.display()
                    );
                }
            }
        }
        Command::Bench(BenchCommand::Step(args)) => {
            xtask::bench::step(&args)?;
        }
        Command::Bench(BenchCommand::Fasth(args)) => {
            xtask::bench::fasth(&args)?;
        }
        Command::Bench(BenchCommand::Fid(args)) => {
            xtask::bench::fid(&args)?;
        }
    }
    Ok(())
}
