//! Smoke training of a tiny IB-INN on real MNIST images, on the CPU.

use std::path::Path;
use std::sync::Mutex;

use burn::backend::Flex;
use cfx_datasets::{Augmentation, eval_batches};
use cfx_flows::ibinn::{IbInnConfig, reference_bits_per_dim};
use xtask::backend::{BackendKind, run_on};
use xtask::inverse_trace::InverseTraceJob;
use xtask::logdet::LogDetJob;
use xtask::train::ibinn::{
    IbInnTrainConfig, IbInnTrainJob, TestReport, TrainControl, TrainOutcome, TrainState, load_data,
    load_trained,
};

fn small_config() -> IbInnTrainConfig {
    IbInnTrainConfig {
        model: IbInnConfig::tiny(),
        train_limit: Some(640),
        test_limit: Some(200),
        val_size: 128,
        batch_size: 64,
        epochs: 3,
        log_every: 4,
        ..Default::default()
    }
}

/// The backend RNG is process-wide and the test harness runs tests on parallel threads: one
/// training at a time keeps each run's dropout masks its own, so runs are reproducible.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn train(
    cfg: &IbInnTrainConfig,
    root: &Path,
    resume: bool,
    control: TrainControl,
) -> anyhow::Result<TrainOutcome> {
    train_on(cfg, root, resume, control, 1)
}

fn train_on(
    cfg: &IbInnTrainConfig,
    root: &Path,
    resume: bool,
    control: TrainControl,
    replicas: usize,
) -> anyhow::Result<TrainOutcome> {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let job = IbInnTrainJob {
        cfg: cfg.clone(),
        run_root: root.to_path_buf(),
        resume,
        control,
        replicas,
        test_only: false,
    };
    run_on(BackendKind::Flex, job)
}

/// `train ib-inn --test-only` on the finished run at `root`.
fn rescore(cfg: &IbInnTrainConfig, root: &Path) -> anyhow::Result<TestReport> {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let job = IbInnTrainJob {
        cfg: cfg.clone(),
        run_root: root.to_path_buf(),
        resume: true,
        control: TrainControl::default(),
        replicas: 1,
        test_only: true,
    };
    match run_on(BackendKind::Flex, job)? {
        TrainOutcome::Finished(r) => Ok(r),
        TrainOutcome::Paused { .. } => panic!("--test-only trains nothing"),
    }
}

fn state_of(outcome: &TrainOutcome) -> &TrainState {
    match outcome {
        TrainOutcome::Paused { state, .. } => state,
        TrainOutcome::Finished(_) => panic!("expected a pause"),
    }
}

/// The per-epoch records of the run at `root`.
fn history(root: &Path) -> Vec<xtask::train::ibinn::EpochRecord> {
    csv::Reader::from_path(root.join("metrics.csv"))
        .unwrap()
        .deserialize()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The 3-epoch history of the run at `root`: the loss went down and train accuracy is well above
/// the 10 % of chance.
fn assert_learned(root: &Path) {
    let history = history(root);
    assert_eq!(history.len(), 3);
    assert!(
        history[2].train_loss < history[0].train_loss,
        "loss went down: {history:?}"
    );
    assert!(history[2].train_acc > 0.5, "{history:?}");
}

#[test]
fn learns_and_resumes_from_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();

    // Uninterrupted run.
    let a = dir.path().join("a");
    let TrainOutcome::Finished(report) = train(&cfg, &a, false, TrainControl::default()).unwrap()
    else {
        panic!("run a should finish");
    };
    assert_learned(&a);
    assert!(report.accuracy > 0.5, "test accuracy {}", report.accuracy);
    assert!(report.bpd.is_finite() && report.bpd_reference_convention < report.bpd);

    // The saved model reproduces the reported test accuracy.
    let model = load_trained::<Flex>(&a, &Default::default()).unwrap();
    let (_, _, test) = load_data(&cfg).unwrap();
    let mut correct = 0usize;
    for b in eval_batches(&test, 100, &Augmentation::IBINN_EVAL) {
        let labels = b.labels.clone();
        let batch = b.to_device::<Flex>(&Default::default());
        let pred: Vec<i64> = model
            .posterior(batch.images)
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        correct += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
    }
    assert!((correct as f64 / test.len() as f64 - report.accuracy).abs() < 1e-9);

    // --test-only scores the saved model again to the same numbers, and the reference code's
    // printed value follows from the clean L_x with its DCT log-determinant.
    let checkpoints_before = std::fs::read_dir(a.join("checkpoints")).unwrap().count();
    let rescored = rescore(&cfg, &a).unwrap();
    let close = |x: f64, y: f64| (x - y).abs() < 1e-6 * x.abs().max(1.0);
    assert!(
        close(rescored.bpd, report.bpd),
        "{rescored:?} vs {report:?}"
    );
    assert!(close(rescored.l_x_clean, report.l_x_clean));
    assert_eq!(rescored.accuracy, report.accuracy);
    assert_eq!(rescored.epochs, report.epochs);
    // serde_json reads floats back to within an ulp, not always exactly.
    assert!(close(rescored.train_seconds, report.train_seconds));
    let dim = cfg.model.dim() as f64;
    let want = reference_bits_per_dim(report.l_x_clean + model.reference_log_det_offset() / dim);
    assert!(close(report.bpd_reference_convention, want));
    assert_eq!(
        std::fs::read_dir(a.join("checkpoints")).unwrap().count(),
        checkpoints_before,
        "--test-only wrote no checkpoint"
    );
    // `log-det` reads the same test images block by block: its L_x is test.json's, its parts add
    // up, and no stage passes its ceiling.
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let job = LogDetJob {
        model: a.clone(),
        limit: None,
        batch_size: 64,
    };
    let parts = run_on(BackendKind::Flex, job).unwrap();
    drop(_guard);
    assert_eq!(parts.images, test.len());
    assert!(
        (parts.l_x - report.l_x_clean).abs() < 1e-4,
        "{parts:?} vs {report:?}"
    );
    assert!((parts.bpd_reference_convention - report.bpd_reference_convention).abs() < 1e-3);
    let sum: f64 = parts.groups.iter().map(|g| g.log_det_per_dim).sum();
    assert!((sum - parts.log_det_per_dim).abs() < 1e-9);
    for g in &parts.groups {
        assert!(g.log_det_per_dim <= g.ceiling_per_dim + 1e-6, "{g:?}");
    }
    assert!(a.join("log-det.json").exists());

    // `inverse-trace` decodes every query's α1 latent block by block. Its bookkeeping, pinned
    // at the two ends of its thresholds: with no pixel change tolerated every query counts as
    // diverged; no envelope then means each leaves it at the first block the inverse runs (the
    // last one), an unbounded envelope that none ever does.
    let trace = |factor: f64| {
        let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let job = InverseTraceJob {
            model: a.clone(),
            limit: 20,
            batch_size: 8,
            factor,
            diverged_change: 0.0,
        };
        run_on(BackendKind::Flex, job).unwrap()
    };
    let n_blocks = model.inn.blocks.len();
    let mut at_image = vec![];
    for (factor, at_last, in_range) in [(0.0, 180, 0), (f64::INFINITY, 0, 180)] {
        let t = trace(factor);
        at_image.push(t.out_of_range_at_image);
        assert_eq!((t.images, t.queries, t.diverged), (20, 180, 180), "{t:?}");
        assert_eq!(t.blocks.len(), n_blocks);
        assert_eq!(t.blocks[n_blocks - 1].first_out_of_range, at_last);
        assert_eq!(t.diverged_in_range, in_range);
        // The first block's envelope is the test images' largest |pixel| in the model's scale.
        let e0 = t.blocks[0].envelope;
        assert!(e0 > 0.5 && e0 <= 1.0 + 1e-6, "{e0}");
        assert!(
            t.blocks
                .iter()
                .all(|b| b.envelope.is_finite() && b.envelope > 0.0)
        );
    }
    assert!(a.join("inverse-trace.json").exists());
    // The image's own flag does not depend on the envelope's factor.
    assert!(
        at_image[0] == at_image[1] && at_image[0] <= 180,
        "{at_image:?}"
    );

    // Without the test.json written beside model.mpk it says what is missing.
    std::fs::rename(a.join("test.json"), a.join("old.json")).unwrap();
    let e = format!("{:#}", rescore(&cfg, &a).unwrap_err());
    assert!(e.contains("test.json"), "{e}");

    // Interrupted after 5 of the 8 steps of epoch 1, then resumed.
    let b = dir.path().join("b");
    let stop = TrainControl {
        max_steps: Some(5),
        time_budget: None,
    };
    let paused = train(&cfg, &b, false, stop).unwrap();
    let s = state_of(&paused);
    assert_eq!((s.epochs_done, s.step_in_epoch, s.global_step), (0, 5, 5));
    let again = train(
        &cfg,
        &b,
        true,
        TrainControl {
            max_steps: Some(8),
            time_budget: None,
        },
    )
    .unwrap();
    let s = state_of(&again);
    assert_eq!(
        (s.epochs_done, s.step_in_epoch, s.global_step),
        (1, 5, 13),
        "continued at step 5"
    );
    let TrainOutcome::Finished(resumed) = train(&cfg, &b, true, TrainControl::default()).unwrap()
    else {
        panic!("run b should finish");
    };
    // Same data order and noise, same arithmetic: the resumed run matches the straight one.
    assert!(
        (resumed.l_x - report.l_x).abs() < 1e-6 * report.l_x.abs().max(1.0),
        "{} vs {}",
        resumed.l_x,
        report.l_x
    );
    assert!((resumed.accuracy - report.accuracy).abs() < 1e-9);
}

/// Validating on a copy with re-estimated batch-norm statistics changes what validation reads
/// and nothing else: the same training losses, the same final model and test. With dropout, as
/// the full model has: the re-estimation's forward passes draw from the backend RNG too.
#[test]
fn validation_on_re_estimated_statistics_leaves_training_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config();
    cfg.epochs = 2;
    cfg.model.stages[1].dropout = 0.25;
    cfg.model.fc_dropout = 0.5;
    let run = |batches: usize| {
        let mut cfg = cfg.clone();
        cfg.val_calibration_batches = batches;
        let root = dir.path().join(format!("cal{batches}"));
        let TrainOutcome::Finished(report) =
            train(&cfg, &root, false, TrainControl::default()).unwrap()
        else {
            panic!("the run should finish");
        };
        (history(&root), report)
    };
    let (running, test_running) = run(0);
    let (calibrated, test_calibrated) = run(3);
    for (a, b) in running.iter().zip(&calibrated) {
        assert_eq!(
            (a.train_loss, a.train_l_x, a.train_acc),
            (b.train_loss, b.train_l_x, b.train_acc)
        );
    }
    assert_eq!(test_running.l_x, test_calibrated.l_x);
    assert_eq!(test_running.accuracy, test_calibrated.accuracy);
    assert!(
        running
            .iter()
            .zip(&calibrated)
            .all(|(a, b)| a.val_l_x != b.val_l_x),
        "validation read the same statistics: {running:?} {calibrated:?}"
    );
}

/// Data-parallel smoke test: two replicas (on the CPU's one device, each in its own thread on
/// half of every batch, gradients summed) train the tiny IB-INN as well as one does above.
#[test]
fn two_replicas_learn() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("two");
    let TrainOutcome::Finished(report) =
        train_on(&small_config(), &root, false, TrainControl::default(), 2).unwrap()
    else {
        panic!("the run should finish");
    };
    assert_learned(&root);
    assert!(report.accuracy > 0.5, "test accuracy {}", report.accuracy);
    let e = format!(
        "{:#}",
        train_on(
            &small_config(),
            &dir.path().join("zero"),
            false,
            TrainControl::default(),
            0
        )
        .unwrap_err()
    );
    assert!(e.contains("--replicas"), "{e}");
}

#[test]
fn divergence_stops_with_the_last_good_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nan");
    let mut cfg = small_config();
    cfg.epochs = 2;
    let first = train(
        &cfg,
        &root,
        false,
        TrainControl {
            max_steps: Some(8),
            time_budget: None,
        },
    )
    .unwrap();
    assert_eq!(state_of(&first).epochs_done, 1);
    let good = std::fs::read(root.join("checkpoints/e0001-s000000/model.mpk")).unwrap();

    // The same run continued with an absurd learning rate and no clipping.
    cfg.lr = 1e8;
    cfg.clip_grad_norm = 0.0;
    cfg.log_every = 1;
    let err = train(&cfg, &root, true, TrainControl::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("diverged") && err.contains("e0001-s000000"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(root.join("checkpoints/e0001-s000000/model.mpk")).unwrap(),
        good
    );
    assert_eq!(
        std::fs::read_to_string(root.join("checkpoints/latest"))
            .unwrap()
            .trim(),
        "e0001-s000000"
    );
}

#[test]
fn refuses_to_clobber_or_resume_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let root = dir.path().join("x");
    let err = train(&cfg, &root, true, TrainControl::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot resume") && err.contains("no checkpoint"),
        "{err}"
    );
    train(
        &cfg,
        &root,
        false,
        TrainControl {
            max_steps: Some(1),
            time_budget: None,
        },
    )
    .unwrap();
    let err = train(&cfg, &root, false, TrainControl::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already holds a run") && err.contains("--resume"),
        "{err}"
    );

    let err = load_trained::<Flex>(&dir.path().join("missing"), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    let err = load_trained::<Flex>(&root, &Default::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("not a finished IB-INN run"),
        "{err:#}"
    );

    let mut bad = small_config();
    bad.model.input_shape = [3, 28, 28];
    let err = train(&bad, &dir.path().join("y"), false, TrainControl::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[1, 28, 28]") && err.contains("input_shape"),
        "{err}"
    );
}
