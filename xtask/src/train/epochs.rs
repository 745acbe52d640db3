//! The epoch loop of the trainers other than IB-INN's (classifiers, autoencoders, VAEs, RealNVP
//! and Glow; the DCGAN, its encoder, C3LT):
//! a checkpoint after every epoch, `--resume` from the last one, `metrics.csv` and `train.log`
//! rewritten from the checkpointed history, and the final models written atomically at the end.
//! Ctrl-C stops a run at its next epoch boundary (`crate::interrupt`).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::prelude::Backend;
use burn::record::{Record, Recorder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::run::{Rec, RunDir, decode_record};
use crate::checkpoint::CheckpointStore;

/// What one kind of training does per epoch and what it keeps in a checkpoint.
pub(crate) trait EpochTrainer {
    /// One row of `metrics.csv`.
    type Epoch: Serialize + DeserializeOwned + Clone;

    /// The model and optimiser records of a checkpoint, as named files.
    fn checkpoint(&self) -> Result<Vec<(&'static str, Vec<u8>)>>;

    /// Loads what [`EpochTrainer::checkpoint`] wrote.
    fn restore(&mut self, ckpt: &Path) -> Result<()>;

    /// Trains epoch `epoch` (0-based) and evaluates.
    fn train_epoch(&mut self, epoch: usize) -> Result<Self::Epoch>;

    /// The log line of a finished epoch.
    fn describe(&self, e: &Self::Epoch) -> String;

    /// Per-epoch figures (sample grids).
    fn after_epoch(&self, _run: &RunDir) -> Result<()> {
        Ok(())
    }

    /// Writes the finished models into the run folder.
    fn finish(&self, run: &RunDir) -> Result<()>;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(bound = "E: Serialize + DeserializeOwned")]
pub struct EpochState<E> {
    pub epochs_done: usize,
    pub train_seconds: f64,
    pub history: Vec<E>,
}

/// The factor a milestone schedule scales the learning rate of `epoch` (from 0) by: `gamma`
/// once for each milestone it has reached.
pub(crate) fn milestone_decay(milestones: &[usize], gamma: f64, epoch: usize) -> f64 {
    let reached = milestones.iter().filter(|&&m| epoch >= m).count();
    gamma.powi(reached as i32)
}

/// Runs epochs `state.epochs_done..epochs` of `trainer` in `run`, resuming from the latest
/// checkpoint when `resume` is set, and returns the last epoch's row.
pub(crate) fn run_epochs<T: EpochTrainer>(
    trainer: &mut T,
    run: &RunDir,
    epochs: usize,
    resume: bool,
) -> Result<T::Epoch> {
    let store = run.checkpoints(2);
    let mut state = EpochState::<T::Epoch> {
        epochs_done: 0,
        train_seconds: 0.0,
        history: vec![],
    };
    if resume {
        let ckpt = store.latest()?.context("no checkpoint to resume from")?;
        state = serde_json::from_slice(&CheckpointStore::read(&ckpt, "state.json")?).with_context(
            || format!("checkpoint {} has an unreadable state.json", ckpt.display()),
        )?;
        trainer.restore(&ckpt)?;
        eprintln!(
            "resuming {} after epoch {}",
            run.root.display(),
            state.epochs_done
        );
    }
    for epoch in state.epochs_done..epochs {
        // Checked before each epoch: after the previous one's checkpoint, and before the first
        // one too, so that a stop asked for while the data were loading costs no epoch.
        if crate::interrupt::requested() {
            return Err(crate::interrupt::stopped(&format!(
                "before epoch {}",
                epoch + 1
            )));
        }
        let start = Instant::now();
        let record = trainer.train_epoch(epoch)?;
        state.train_seconds += start.elapsed().as_secs_f64();
        let line = format!(
            "epoch {}/{epochs}: {}",
            epoch + 1,
            trainer.describe(&record)
        );
        eprintln!("{line}");
        run.log(&line)?;
        trainer.after_epoch(run)?;
        state.history.push(record);
        state.epochs_done = epoch + 1;
        let mut files = trainer.checkpoint()?;
        files.push(("state.json", serde_json::to_vec_pretty(&state)?));
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        store.save(&CheckpointStore::tag(state.epochs_done, 0), &refs)?;
        run.write_csv("metrics.csv", &state.history)?;
    }
    trainer.finish(run)?;
    state
        .history
        .pop()
        .context("no epoch was trained (epochs = 0)")
}

/// Writes a finished model's record into the run folder, atomically.
pub(crate) fn write_model<B: Backend, M: burn::module::Module<B>>(
    run: &RunDir,
    file: &str,
    model: &M,
) -> Result<()> {
    crate::fsutil::write_atomic(
        &run.path(file),
        &record_bytes::<B, _>(model.clone().into_record())?,
    )
}

/// A record as checkpoint bytes.
pub(crate) fn record_bytes<B: Backend, R: Record<B>>(record: R) -> Result<Vec<u8>> {
    Ok(Recorder::<B>::record(&Rec::default(), record, ())?)
}

/// The record stored as `file` in checkpoint `ckpt`.
pub(crate) fn read_checkpoint_record<B: Backend, R: Record<B>>(
    ckpt: &Path,
    file: &str,
    device: &B::Device,
) -> Result<R> {
    let source = format!("checkpoint file {}", ckpt.join(file).display());
    decode_record(CheckpointStore::read(ckpt, file)?, &source, device)
}
