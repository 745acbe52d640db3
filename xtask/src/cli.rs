//! Command-line definitions (`cargo xtask --help`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use cfx_datasets::DatasetKind;
use cfx_flows::ibinn::IbInnConfig;
use clap::{Args, Parser, Subcommand};

use crate::backend::BackendKind;
use crate::train::ibinn::{IbInnTrainConfig, TrainControl};
use crate::train::run::read_toml;

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "Counterfactual explanations from generative models: train, explain, evaluate, bench",
    version
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model into runs/<name>/ (resumable).
    #[command(subcommand)]
    Train(TrainCommand),
    /// Measure speed (numbers for docs/results.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum TrainCommand {
    /// IB-INN, the generative classifier that ECINN explains.
    IbInn(IbInnArgs),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time IB-INN training steps (forward, backward, optimiser) on each backend given.
    Step(StepBenchArgs),
    /// FastH vs the sequential and explicit-matrix Householder products (forward, fwd+bwd).
    Fasth(FastHBenchArgs),
    /// FastFID vs the dense O(d³) FID, with the error of each.
    Fid(FidBenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BackendArg {
    /// Backend to run on [default: cuda or wgpu when compiled in, else cpu].
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
}

impl BackendArg {
    pub fn kind(&self) -> BackendKind {
        self.backend.unwrap_or_else(BackendKind::default_for_build)
    }
}

#[derive(Args, Debug, Clone)]
pub struct IbInnArgs {
    /// mnist, fake-mnist or fashion-mnist.
    #[arg(long, value_parser = parse_dataset)]
    pub dataset: Option<DatasetKind>,
    /// Folder with MNIST-format files (Fashion-MNIST default: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run name: results go to <runs-dir>/<name> [default: ibinn-<dataset>].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// A TOML file with any IbInnTrainConfig fields (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in <runs-dir>/<name> from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// The tiny architecture (2 narrow blocks per stage) for smoke runs.
    #[arg(long)]
    pub small: bool,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub beta: Option<f64>,
    /// Train on the first N training images only.
    #[arg(long)]
    pub train_limit: Option<usize>,
    #[arg(long)]
    pub test_limit: Option<usize>,
    #[arg(long)]
    pub val_size: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also checkpoint every N steps inside epochs.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Stop (with a checkpoint) after N steps of this invocation; --resume continues.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Stop (with a checkpoint) after this many minutes; --resume continues.
    #[arg(long, value_name = "MINUTES")]
    pub time_budget: Option<f64>,
    /// Skip the batch-norm re-estimation before the test evaluation.
    #[arg(long)]
    pub no_bn_calibration: bool,
    #[command(flatten)]
    pub backend: BackendArg,
}

fn parse_dataset(s: &str) -> Result<DatasetKind, String> {
    s.parse()
}

impl IbInnArgs {
    pub fn run_root(&self, cfg: &IbInnTrainConfig) -> PathBuf {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("ibinn-{}", cfg.dataset));
        self.runs_dir.join(name)
    }

    /// The configuration of a new run: defaults, then `--config`, then flags.
    pub fn new_config(&self) -> Result<IbInnTrainConfig> {
        let mut cfg = match &self.config {
            Some(p) => read_toml(p)?,
            None => IbInnTrainConfig::default(),
        };
        if self.small {
            cfg.model = IbInnConfig::tiny();
        }
        macro_rules! set {
            ($($field:ident => $target:expr),* $(,)?) => {
                $(if let Some(v) = self.$field.clone() { $target = v; })*
            };
        }
        set!(
            dataset => cfg.dataset,
            epochs => cfg.epochs,
            batch_size => cfg.batch_size,
            lr => cfg.lr,
            beta => cfg.beta,
            val_size => cfg.val_size,
            seed => cfg.seed,
        );
        if self.data_dir.is_some() {
            cfg.data_dir = self.data_dir.clone();
        }
        if self.train_limit.is_some() {
            cfg.train_limit = self.train_limit;
        }
        if self.test_limit.is_some() {
            cfg.test_limit = self.test_limit;
        }
        if self.checkpoint_every.is_some() {
            cfg.checkpoint_every_steps = self.checkpoint_every;
        }
        if self.no_bn_calibration {
            cfg.calibrate_batch_norm = false;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration of a resumed run: the saved one; only `--epochs` may extend it.
    pub fn resumed_config(&self, saved: IbInnTrainConfig) -> Result<IbInnTrainConfig> {
        let changed = [
            ("--config", self.config.is_some()),
            ("--small", self.small),
            ("--batch-size", self.batch_size.is_some()),
            ("--lr", self.lr.is_some()),
            ("--beta", self.beta.is_some()),
            ("--train-limit", self.train_limit.is_some()),
            ("--test-limit", self.test_limit.is_some()),
            ("--val-size", self.val_size.is_some()),
            ("--seed", self.seed.is_some()),
            ("--data-dir", self.data_dir.is_some()),
            ("--no-bn-calibration", self.no_bn_calibration),
        ];
        let bad: Vec<&str> = changed
            .iter()
            .filter(|(_, c)| *c)
            .map(|(n, _)| *n)
            .collect();
        if !bad.is_empty() {
            bail!(
                "{} cannot change when resuming (the run keeps its config.toml); only --epochs can extend it",
                bad.join(", ")
            );
        }
        let mut cfg = saved;
        if let Some(e) = self.epochs {
            cfg.epochs = e;
        }
        Ok(cfg)
    }

    pub fn control(&self) -> TrainControl {
        TrainControl {
            max_steps: self.max_steps,
            time_budget: self
                .time_budget
                .map(|m| std::time::Duration::from_secs_f64(m * 60.0)),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct StepBenchArgs {
    /// Backends to compare in this one run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![BackendKind::Flex, BackendKind::Ndarray])]
    pub backends: Vec<BackendKind>,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// The tiny architecture instead of the full MNIST one.
    #[arg(long)]
    pub small: bool,
    /// Also time forward, backward and optimiser separately (syncing the device in between).
    #[arg(long)]
    pub breakdown: bool,
    /// Write the measurements as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct FastHBenchArgs {
    #[command(flatten)]
    pub backend: BackendArg,
    /// Matrix sizes d (one orthogonal d×d matrix, K = d reflections).
    #[arg(long, value_delimiter = ',', default_values_t = vec![64, 128, 256, 512, 768, 1024, 2048])]
    pub dims: Vec<usize>,
    /// Columns m of X (the paper's mini-batch).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// WY group size [default: 16 up to d = 128, else 32].
    #[arg(long)]
    pub group: Option<usize>,
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Time the baselines only up to this d (they are O(d) launches, the parallel one O(d³)).
    #[arg(long)]
    pub baseline_max_dim: Option<usize>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct FidBenchArgs {
    #[command(flatten)]
    pub backend: BackendArg,
    /// Feature dimension (Inception's pool layer has 2048).
    #[arg(long, default_value_t = 2048)]
    pub dim: usize,
    /// Fake batch sizes m.
    #[arg(long, value_delimiter = ',', default_values_t = vec![8, 16, 32, 64, 128, 256])]
    pub batches: Vec<usize>,
    /// Real samples behind the precomputed statistics.
    #[arg(long, default_value_t = 4096)]
    pub real: usize,
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Runs of the dense reference per m (seconds each at d = 2048).
    #[arg(long, default_value_t = 1)]
    pub dense_repeats: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}
