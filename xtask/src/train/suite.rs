//! `cargo xtask train eval-suite`: every auxiliary model Paper 4's evaluation needs, in one
//! resumable run folder.
//!
//! ```text
//! runs/<name>/suite.toml   dataset, range and members (written first)
//!   classifier/            the CNN that GB and GL explain             (seed 1, batch 64)
//!   oracle/                same architecture, other seed: Oracle, FID256, LVS (seed 2, batch 128)
//!   oracle-second/         FakeMNIST only: trained on the original digit (LVS's second label)
//!   ae-gl/                 GL's prototype autoencoder
//!   ae-all/                IM2's all-class autoencoder
//!   ae-class-<k>/          IM1/IM2's autoencoder of class k
//! ```
//!
//! Each member is an ordinary `train classifier|autoencoder` run: a finished one is skipped, a
//! started one resumes from its last epoch, so an interrupted suite picks up where it stopped.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cfx_classifiers::DataRange;
use cfx_datasets::DatasetKind;
use serde::{Deserialize, Serialize};

use super::supervised::{SupervisedEpoch, SupervisedTrainConfig, SupervisedTrainJob};
use crate::backend::{BackendKind, run_on};

/// Where each member of a suite lives, and what the suite was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteManifest {
    pub dataset: DatasetKind,
    pub range: DataRange,
    pub n_classes: usize,
    pub members: Vec<SuiteMember>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteMember {
    /// Sub-folder name.
    pub name: String,
    pub config: SupervisedTrainConfig,
}

impl SuiteManifest {
    pub const FILE: &'static str = "suite.toml";

    pub fn read(root: &Path) -> Result<Self> {
        crate::checkpoint::require_run_dir(root)?;
        super::run::read_toml(&root.join(Self::FILE)).with_context(|| {
            format!(
                "{} is not an evaluation suite (train one with `cargo xtask train eval-suite`)",
                root.display()
            )
        })
    }

    pub fn member(&self, root: &Path, name: &str) -> Result<PathBuf> {
        if !self.members.iter().any(|m| m.name == name) {
            bail!(
                "the suite {} has no {name} model (members: {})",
                root.display(),
                self.members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(root.join(name))
    }

    pub fn class_autoencoder(k: usize) -> String {
        format!("ae-class-{k}")
    }

    /// How each member was trained, as its `test.json` says: an evaluation's numbers depend
    /// on these (GB's Oracle and FakeMNIST failure rate on the explained CNN's epochs, FID256's
    /// scale on the oracle's), so the report names them. A member without a readable
    /// `test.json` was not finished, which is an error here.
    pub fn scores(&self, root: &Path) -> Result<Vec<MemberScore>> {
        self.members
            .iter()
            .map(|m| {
                let run = super::run::RunDir {
                    root: root.join(&m.name),
                };
                let last: SupervisedEpoch = run.read_json("test.json").with_context(|| {
                    format!(
                        "suite member {} is not finished (resume it with `cargo xtask train eval-suite`)",
                        m.name
                    )
                })?;
                Ok(MemberScore {
                    name: m.name.clone(),
                    last,
                })
            })
            .collect()
    }
}

/// One suite member's final test scores, its `test.json` under its name.
#[derive(Debug, Clone, Serialize)]
pub struct MemberScore {
    pub name: String,
    #[serde(flatten)]
    pub last: SupervisedEpoch,
}

/// What to train: the paper's Tables 4 and 5 unless the flags shorten it.
#[derive(Debug, Clone)]
pub struct SuitePlan {
    pub dataset: DatasetKind,
    pub data_dir: Option<PathBuf>,
    pub range: DataRange,
    pub classifier_epochs: usize,
    pub autoencoder_epochs: usize,
    pub class_autoencoder_epochs: usize,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub small: bool,
}

impl SuitePlan {
    pub fn manifest(&self) -> Result<SuiteManifest> {
        if self.dataset.native_shape().is_none() {
            anyhow::bail!(
                "the evaluation suite is Paper 4's, for 28×28 digit datasets (mnist, fake-mnist, \
                 fashion-mnist), not {}",
                self.dataset
            );
        }
        let base = |mut c: SupervisedTrainConfig, epochs: usize, seed: u64| {
            c.data_dir = self.data_dir.clone();
            c.epochs = epochs;
            c.seed = seed;
            c.train_limit = self.train_limit;
            c.test_limit = self.test_limit;
            if self.small {
                c.make_small();
            }
            c.set_range(self.range);
            c
        };
        let cnn = SupervisedTrainConfig::classifier(self.dataset);
        let ae = SupervisedTrainConfig::autoencoder(self.dataset);
        let mut members = vec![
            (
                "classifier".to_string(),
                base(cnn.clone(), self.classifier_epochs, 1),
            ),
            (
                "oracle".into(),
                SupervisedTrainConfig {
                    batch_size: 128,
                    ..base(cnn.clone(), self.classifier_epochs, 2)
                },
            ),
        ];
        let two_labels = self.dataset == DatasetKind::FakeMnist;
        if two_labels {
            members.push((
                "oracle-second".into(),
                SupervisedTrainConfig {
                    batch_size: 128,
                    second_label: true,
                    ..base(cnn, self.classifier_epochs, 3)
                },
            ));
        }
        members.push(("ae-gl".into(), base(ae.clone(), self.autoencoder_epochs, 4)));
        members.push((
            "ae-all".into(),
            base(ae.clone(), self.autoencoder_epochs, 5),
        ));
        let n_classes = self.dataset.class_names().len();
        for k in 0..n_classes {
            members.push((
                SuiteManifest::class_autoencoder(k),
                SupervisedTrainConfig {
                    only_class: Some(k),
                    ..base(ae.clone(), self.class_autoencoder_epochs, 10 + k as u64)
                },
            ));
        }
        for (name, c) in &members {
            c.validate()
                .with_context(|| format!("suite member {name}"))?;
        }
        Ok(SuiteManifest {
            dataset: self.dataset,
            range: self.range,
            n_classes,
            members: members
                .into_iter()
                .map(|(name, config)| SuiteMember { name, config })
                .collect(),
        })
    }
}

/// Trains (or finishes) every member of the suite in `root`. A suite folder made with other
/// settings is refused rather than mixed.
pub fn train_suite(plan: &SuitePlan, root: &Path, backend: BackendKind) -> Result<SuiteManifest> {
    let manifest = plan.manifest()?;
    let file = root.join(SuiteManifest::FILE);
    if file.exists() {
        let saved: SuiteManifest = super::run::read_toml(&file)?;
        if saved != manifest {
            bail!(
                "{} was started with other settings (dataset, range, epochs or limits); \
                 pass the same flags to continue it, or choose another --name",
                root.display()
            );
        }
    } else {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        crate::fsutil::write_atomic(&file, toml::to_string_pretty(&manifest)?.as_bytes())?;
    }
    for (i, m) in manifest.members.iter().enumerate() {
        let dir = root.join(&m.name);
        if dir.join("model.mpk").exists() && dir.join("test.json").exists() {
            eprintln!("[{}/{}] {}: done", i + 1, manifest.members.len(), m.name);
            continue;
        }
        let resume = dir.join("checkpoints").is_dir()
            && super::run::RunDir { root: dir.clone() }
                .checkpoints(1)
                .latest()?
                .is_some();
        eprintln!(
            "[{}/{}] {}{}",
            i + 1,
            manifest.members.len(),
            m.name,
            if resume { " (resuming)" } else { "" }
        );
        let job = SupervisedTrainJob {
            cfg: m.config.clone(),
            run_root: dir,
            resume,
            replicas: 1,
        };
        let last = run_on(backend, job).with_context(|| format!("suite member {}", m.name))?;
        eprintln!(
            "  test loss {:.5}{}",
            last.test_loss,
            last.test_accuracy
                .map(|a| format!(", test accuracy {:.2}%", 100.0 * a))
                .unwrap_or_default()
        );
    }
    Ok(manifest)
}
