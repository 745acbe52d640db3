//! Ctrl-C (SIGINT) during training, sent to the real binary: the run stops at its next safe point
//! with a checkpoint there, exits with status 130, and `--resume` continues from that
//! checkpoint. Without the handler SIGINT would kill the process (no exit status), and a
//! handler the trainer ignored would let it run on to its last epoch (the deadline below).
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use xtask::checkpoint::CheckpointStore;
use xtask::train::ibinn::IbInnTrainConfig;

fn xtask() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn position(ckpt: &Path) -> (usize, usize) {
    CheckpointStore::position(ckpt).expect("a checkpoint tag")
}

/// Waits for a checkpoint at or past `at`, sends SIGINT, and returns the child's output.
fn interrupt_after(mut child: Child, store: &CheckpointStore, at: (usize, usize)) -> Output {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(ckpt) = store.latest().unwrap()
            && position(&ckpt) >= at
        {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "training ended before the interrupt:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "no checkpoint {at:?} in 10 min");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    // The shell's builtin `kill`: a /bin/kill may be missing from a minimal CI image.
    let sent = Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -INT {pid}");
    // Stopping takes one step (IB-INN) or the rest of one epoch; the runs below have many
    // epochs left, so a run that ignored the signal would still be going at the deadline.
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("still training 5 min after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `xtask <args> --runs-dir <runs>` to the end; returns its stderr.
fn succeeds(args: &[&str], runs: &Path) -> String {
    let out = xtask()
        .args(args)
        .arg("--runs-dir")
        .arg(runs)
        .output()
        .unwrap();
    let log = stderr(&out);
    assert!(out.status.success(), "xtask {args:?}:\n{log}");
    log
}

/// Asserts the run reported the interrupt and exited with 130; returns its stderr.
fn assert_interrupted(out: &Output, says: &str) -> String {
    let log = stderr(out);
    assert_eq!(out.status.code(), Some(130), "exit status:\n{log}");
    assert!(log.contains(says), "expected {says:?} in:\n{log}");
    log
}

#[test]
fn sigint_stops_ibinn_training_at_a_checkpoint_and_resume_continues() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = IbInnTrainConfig {
        epochs: 50,                   // 7 steps each
        checkpoint_every_steps: None, // only epoch ends: any other checkpoint is the interrupt's
        ..common::tiny_ibinn_config(512)
    };
    let config = dir.path().join("config.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
    let runs = dir.path().join("runs");
    let store = CheckpointStore::new(runs.join("r/checkpoints"), 2);

    let child = xtask()
        .args(["train", "ib-inn", "--name", "r", "--runs-dir"])
        .arg(&runs)
        .arg("--config")
        .arg(&config)
        .spawn()
        .unwrap();
    let out = interrupt_after(child, &store, (1, 0));
    let log = assert_interrupted(&out, "interrupted");
    // The stop lands on the next step, or on the epoch's end when the signal came during the
    // validation pass; either way the checkpoint it wrote is the latest and is named.
    let last = store.latest().unwrap().expect("a checkpoint");
    let (epochs, _) = position(&last);
    assert!((1..cfg.epochs).contains(&epochs), "stopped at {last:?}");
    assert!(log.contains(&last.display().to_string()), "{log}");
    assert!(!runs.join("r/model.mpk").exists(), "no final model yet");

    let log = succeeds(
        &[
            "train",
            "ib-inn",
            "--name",
            "r",
            "--resume",
            "--max-steps",
            "1",
        ],
        &runs,
    );
    assert!(
        log.contains(&format!("from {}", last.display())),
        "resumed from the interrupt's checkpoint:\n{log}"
    );
}

#[test]
fn sigint_stops_an_epoch_trainer_after_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let store = CheckpointStore::new(runs.join("c/checkpoints"), 2);
    let child = xtask()
        .args(["train", "classifier", "--small", "--dataset", "fake-mnist"])
        .args([
            "--train-limit",
            "256",
            "--test-limit",
            "64",
            "--epochs",
            "500",
        ])
        .args(["--name", "c", "--runs-dir"])
        .arg(&runs)
        .spawn()
        .unwrap();
    let out = interrupt_after(child, &store, (1, 0));
    let log = assert_interrupted(&out, "interrupted: stopped");
    assert!(log.contains("--resume"), "{log}");
    let (epochs, _) = position(&store.latest().unwrap().unwrap());
    assert!((1..500).contains(&epochs), "stopped after epoch {epochs}");
    assert!(!runs.join("c/model.mpk").exists(), "no final model yet");

    let more = (epochs + 1).to_string();
    let log = succeeds(
        &[
            "train",
            "classifier",
            "--name",
            "c",
            "--resume",
            "--epochs",
            &more,
        ],
        &runs,
    );
    assert!(
        log.contains(&format!("after epoch {epochs}")),
        "resumed from the interrupt's checkpoint:\n{log}"
    );
    assert!(runs.join("c/model.mpk").is_file());
}
