//! Training killed with SIGKILL mid-epoch, as an out-of-memory killer or a lost machine would:
//! the run folder must stay resumable from its last complete checkpoint, losing at most the
//! steps since then (less than one epoch), and the resumed run must finish with one history row
//! per epoch. The training runs as a child process (the real binary) so that the kill is real.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use xtask::checkpoint::CheckpointStore;
use xtask::train::ibinn::{IbInnTrainConfig, TrainState};

fn start(config: &Path, runs: &Path, resume: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["train", "ib-inn", "--runs-dir"])
        .arg(runs)
        .args(["--name", "killed"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // A resumed run keeps the config.toml it started with.
    if resume {
        cmd.arg("--resume");
    } else {
        cmd.arg("--config").arg(config);
    }
    cmd.spawn().expect("xtask binary runs")
}

fn position(ckpt: &Path) -> (usize, usize) {
    CheckpointStore::position(ckpt).expect("a checkpoint tag")
}

fn state(ckpt: &Path) -> TrainState {
    serde_json::from_slice(&CheckpointStore::read(ckpt, "state.json").unwrap()).unwrap()
}

#[test]
fn sigkill_mid_epoch_loses_less_than_an_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = IbInnTrainConfig {
        epochs: 3, // 7 steps each
        checkpoint_every_steps: Some(2),
        log_every: 4,
        ..common::tiny_ibinn_config(512)
    };
    let config = dir.path().join("config.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
    let runs = dir.path().join("runs");
    let store = CheckpointStore::new(runs.join("killed/checkpoints"), 2);

    // Kill as soon as a mid-epoch checkpoint of the second epoch is on disk.
    let mut child = start(&config, &runs, false);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(ckpt) = store.latest().unwrap()
            && position(&ckpt) >= (1, 2)
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before the kill"
        );
        assert!(
            Instant::now() < deadline,
            "no checkpoint in epoch 2 after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();

    let last = store
        .latest()
        .unwrap()
        .expect("a complete checkpoint survives the kill");
    let (epochs, steps) = position(&last);
    let s = state(&last);
    assert_eq!((s.epochs_done, s.step_in_epoch), (epochs, steps));
    assert!(
        epochs >= 1,
        "the kill came after epoch 1's checkpoint: {last:?}"
    );

    let out = start(&config, &runs, true).wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "resume failed:\n{log}");
    assert!(log.contains("resuming"), "{log}");
    let done = state(&store.latest().unwrap().unwrap());
    assert_eq!(done.epochs_done, 3);
    let epochs: Vec<usize> = done.history.iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, [1, 2, 3], "one history row per epoch");
    assert!(runs.join("killed/model.mpk").is_file());
}
