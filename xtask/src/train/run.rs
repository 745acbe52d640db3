//! The folder of one training run: `runs/<name>/`.
//!
//! ```text
//! config.toml      the resolved training configuration (written at start)
//! checkpoints/     resumable checkpoints (see `checkpoint.rs`)
//! metrics.csv      one row per finished epoch (rewritten atomically from the checkpoint state)
//! train.log        human-readable progress lines
//! model.mpk        the final model (plus model.toml, its architecture)
//! test.json        the test-set evaluation of the final model
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::Backend;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::checkpoint::CheckpointStore;
use crate::fsutil::write_atomic;

pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Opens `root` for a new run, or for resuming one. A new run refuses a folder that already
    /// holds checkpoints, so an earlier run is never overwritten by accident.
    pub fn open(root: &Path, resume: bool) -> Result<Self> {
        let run = Self {
            root: root.to_path_buf(),
        };
        let has_checkpoints = run.checkpoints(1).latest()?.is_some();
        match (resume, has_checkpoints) {
            (true, false) => bail!(
                "cannot resume: {} has no checkpoint (start a new run without --resume)",
                root.display()
            ),
            (false, true) => bail!(
                "{} already holds a run; pass --resume to continue it or choose another --name",
                root.display()
            ),
            _ => {}
        }
        fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
        Ok(run)
    }

    pub fn checkpoints(&self, keep: usize) -> CheckpointStore {
        CheckpointStore::new(self.root.join("checkpoints"), keep)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn write_toml<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        write_atomic(&self.path(name), toml::to_string_pretty(value)?.as_bytes())
    }

    pub fn read_toml<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        read_toml(&self.path(name))
    }

    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        write_atomic(
            &self.path(name),
            serde_json::to_string_pretty(value)?.as_bytes(),
        )
    }

    /// Rewrites `name` as CSV from all rows (so it always matches the checkpointed history).
    pub fn write_csv<T: Serialize>(&self, name: &str, rows: &[T]) -> Result<()> {
        let mut w = csv::Writer::from_writer(vec![]);
        for r in rows {
            w.serialize(r)?;
        }
        write_atomic(&self.path(name), &w.into_inner()?)
    }

    pub fn log(&self, line: &str) -> Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("train.log"))?;
        writeln!(f, "{line}")?;
        Ok(())
    }
}

/// How models, optimisers and checkpoints are serialised.
pub type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// The record in `<run>/model.mpk`, with an error naming the file if it is missing or does not
/// fit the architecture in `model.toml`.
pub fn read_model_record<B: Backend, R: Record<B>>(run: &Path, device: &B::Device) -> Result<R> {
    let p = run.join("model.mpk");
    let bytes = fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
    Recorder::<B>::load(&Rec::default(), bytes, device).with_context(|| {
        format!(
            "{} does not match the architecture in model.toml",
            p.display()
        )
    })
}

pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid configuration", path.display()))
}
