//! Ctrl-C and SIGTERM during training. A run killed outright loses every step since its last
//! checkpoint (an IB-INN epoch is ~30 min on the CPU), so the first signal only asks the trainer
//! to stop at its next safe point and write a checkpoint there: the IB-INN trainer after the
//! current step, the epoch trainers after the current epoch. A second signal, or one that comes
//! while nothing can be checkpointed any more (IB-INN's final batch-norm re-estimation and test),
//! ends the process at once.
//!
//! Only `train` commands install the handler; without it [`requested`] is always false, so the
//! library and its tests behave as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{Result, anyhow};

/// The exit status of an interrupted command, as shells report a SIGINT death (128 + 2).
pub const EXIT_CODE: u8 = 130;

static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Set while a stop can no longer wait for a checkpoint: what to tell the user before exiting.
static IMMEDIATE: Mutex<Option<String>> = Mutex::new(None);
static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Installs the handler (once per process; later calls return the first call's result).
pub fn install() -> Result<()> {
    INSTALLED
        .get_or_init(|| ctrlc::set_handler(on_signal).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| anyhow!("cannot install the Ctrl-C handler: {e}"))
}

fn on_signal() {
    let immediate = IMMEDIATE.lock().map(|g| g.clone()).unwrap_or(None);
    if let Some(note) = immediate {
        eprintln!("\ninterrupted: {note}");
        std::process::exit(EXIT_CODE.into());
    }
    if REQUESTED.swap(true, Ordering::SeqCst) {
        eprintln!("\ninterrupted again: stopping now, without a new checkpoint");
        std::process::exit(EXIT_CODE.into());
    }
    eprintln!(
        "\ninterrupt: stopping at the next checkpoint (press Ctrl-C again to stop at once and \
         lose the steps since the last one)"
    );
}

/// Whether a stop was asked for. Trainers poll this where they could write a checkpoint.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// From now on a signal ends the process at once, printing `note` (what survives and how to
/// continue). Fails with the same note if a stop was already asked for.
pub fn stop_at_once_from_here(note: impl Into<String>) -> Result<()> {
    let note = note.into();
    // Armed first, checked second: a signal in between either finds the note (and exits) or
    // was already recorded (and is reported here).
    if let Ok(mut g) = IMMEDIATE.lock() {
        *g = Some(note.clone());
    }
    if requested() {
        return Err(anyhow!("interrupted: {note}"));
    }
    Ok(())
}

/// The error a trainer returns after it stopped on request at a checkpoint.
pub fn stopped(at: &str) -> anyhow::Error {
    anyhow!("interrupted: stopped {at}; continue with --resume")
}
