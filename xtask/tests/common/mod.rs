//! Shared by the integration tests: a tiny IB-INN trained here.

use std::path::Path;

use xtask::backend::{BackendKind, run_on};
use xtask::train::ibinn::{IbInnTrainConfig, IbInnTrainJob, TrainControl, TrainOutcome};

/// A tiny IB-INN on the first `train_limit` FakeMNIST images, one epoch.
pub fn tiny_ibinn(root: &Path, train_limit: usize) {
    let cfg = IbInnTrainConfig {
        dataset: cfx_datasets::DatasetKind::FakeMnist,
        model: cfx_flows::ibinn::IbInnConfig::tiny(),
        train_limit: Some(train_limit),
        test_limit: Some(64),
        val_size: 64,
        batch_size: 64,
        epochs: 1,
        log_every: 5,
        ..Default::default()
    };
    let job = IbInnTrainJob {
        cfg,
        run_root: root.to_path_buf(),
        resume: false,
        control: TrainControl::default(),
    };
    assert!(matches!(
        run_on(BackendKind::Flex, job).unwrap(),
        TrainOutcome::Finished(_)
    ));
}
