//! Shared by the integration tests: tiny models trained here.

use std::path::Path;

use xtask::backend::{BackendKind, run_on};
use xtask::train::ibinn::{IbInnTrainConfig, IbInnTrainJob, TrainControl, TrainOutcome};
use xtask::train::supervised::{AuxModel, SupervisedTrainConfig, SupervisedTrainJob};

/// A tiny IB-INN on the first `train_limit` FakeMNIST images, one epoch.
#[allow(dead_code)]
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
        replicas: 1,
    };
    assert!(matches!(
        run_on(BackendKind::Flex, job).unwrap(),
        TrainOutcome::Finished(_)
    ));
}

/// A tiny CNN classifier (or its autoencoder) on 2 048 MNIST images, 3 epochs.
#[allow(dead_code)]
pub fn tiny_aux(root: &Path, autoencoder: bool) {
    let mut cfg = if autoencoder {
        SupervisedTrainConfig::autoencoder(cfx_datasets::DatasetKind::Mnist)
    } else {
        SupervisedTrainConfig::classifier(cfx_datasets::DatasetKind::Mnist)
    };
    cfg.model = if autoencoder {
        AuxModel::Autoencoder(cfx_classifiers::ConvAutoencoderConfig::tiny())
    } else {
        // Without dropout the tiny CNN learns in a few steps.
        AuxModel::Classifier(cfx_classifiers::CnnClassifierConfig {
            conv_dropout: 0.0,
            dense_dropout: 0.0,
            ..cfx_classifiers::CnnClassifierConfig::tiny()
        })
    };
    cfg.epochs = 3;
    cfg.lr = 1e-2;
    cfg.train_limit = Some(2048);
    cfg.test_limit = Some(128);
    let job = SupervisedTrainJob {
        cfg,
        run_root: root.to_path_buf(),
        resume: false,
        replicas: 1,
    };
    let last = run_on(BackendKind::Flex, job).unwrap();
    assert!(last.test_loss.is_finite());
    assert_eq!(last.test_accuracy.is_some(), !autoencoder);
}
