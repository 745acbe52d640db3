//! `cargo xtask train c3lt`: C3LT's latent maps for one class pair (seed 003 §3,
//! `c3lt/train.py::train_c3lt`), over a trained DCGAN, its encoder and the explained classifier.
//!
//! What the reference does and we keep: Adam (lr 1e-3) on both maps together, StepLR(25, 0.5),
//! batches of class c and class c′ drawn side by side (a zip of two loaders, so an epoch is as
//! long as the smaller class), every fixed network in eval mode. After each epoch the maps are
//! scored on the test images of both classes with the seed's measures (Val, Prox, COUT).
//!
//! Decisions: the class of an evaluation image is its label, as `c3lt/eval.py` takes it, not the
//! classifier's prediction. Prox is reported in unit space (`Prox`) and in the GAN's `[-1, 1]`
//! (`prox_gan`, twice as large), where the reference measures it: compare `prox_gan` with the
//! seed's table. The reference's `evaluate` scores one direction only, the query class c mapped
//! to c′ (`imgs_1` through `g`); `val`, `prox_*` and `cout` here average both directions (each
//! test image of either class), and the `*_fwd` columns hold the reference's direction alone,
//! the one to set beside the seed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::{Classifier, CnnClassifier, DataRange, predictions};
use cfx_counterfactual::c3lt::{C3ltCritics, c3lt_loss};
use cfx_counterfactual::{C3lt, C3ltMaps, C3ltWeights};
use cfx_datasets::{Augmentation, DatasetKind, EpochSampler, HostBatch, ImageSet, Split};
use cfx_flows::nn::mode;
use cfx_generative::{DcganConfig, Discriminator, GanEncoder, GanWithEncoder, Generator};
use cfx_linalg::LinalgBackend;
use cfx_metrics::{CounterfactualSet, Cout, EvalContext, Metric, MetricValue, Proximity, Val};
use serde::{Deserialize, Serialize};

use super::epochs::{EpochTrainer, read_checkpoint_record, record_bytes, run_epochs, write_model};
use super::gan::{GanRun, load_discriminator, load_gan, read_gan_run};
use super::run::{RunDir, read_toml};
use super::supervised::load_classifier;
use crate::backend::{BackendJob, BackendKind};
use crate::explain::runner::require_run_dataset;
use crate::progress::epoch_bar;

/// Settings of `train c3lt`; the defaults are the reference's `args.py`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct C3ltTrainConfig {
    pub dataset: DatasetKind,
    pub data_dir: Option<PathBuf>,
    /// `(c, c′)`: `g` maps class c to c′, `h` maps back.
    pub pair: [usize; 2],
    /// The explained classifier (a `train classifier` run).
    pub classifier: PathBuf,
    /// The `train dcgan` run whose discriminator gives `L_adv`.
    pub gan: PathBuf,
    /// The `train gan-encoder` run: the encoder E and the generator G it was trained for.
    pub encoder: PathBuf,
    pub n_steps: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// StepLR: the rate is multiplied by `lr_gamma` every `lr_step` epochs.
    pub lr_step: usize,
    pub lr_gamma: f64,
    pub weights: C3ltWeights,
    pub seed: u64,
    /// Images per class.
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
}

impl C3ltTrainConfig {
    pub fn new(
        dataset: DatasetKind,
        pair: [usize; 2],
        classifier: PathBuf,
        gan: PathBuf,
        encoder: PathBuf,
    ) -> Self {
        Self {
            dataset,
            data_dir: None,
            pair,
            classifier,
            gan,
            encoder,
            n_steps: 1,
            epochs: 200,
            batch_size: 128,
            lr: 1e-3,
            lr_step: 25,
            lr_gamma: 0.5,
            weights: C3ltWeights::default(),
            seed: 0,
            train_limit: None,
            test_limit: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.pair[0] == self.pair[1] {
            bail!("--pair needs two different classes, got {:?}", self.pair);
        }
        let rate_ok = self.lr.is_finite() && self.lr > 0.0;
        if self.batch_size == 0 || !rate_ok || self.n_steps == 0 || self.lr_step == 0 {
            bail!("batch_size, lr, n_steps and lr_step must be positive");
        }
        if !(self.lr_gamma > 0.0 && self.lr_gamma <= 1.0) {
            bail!("lr_gamma {} must be in (0, 1]", self.lr_gamma);
        }
        Ok(())
    }

    /// The learning rate of `epoch` (0-based) under StepLR.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * self.lr_gamma.powi((epoch / self.lr_step) as i32)
    }

    /// The images of each class of the pair in `split`, in the GAN's image shape.
    fn load(&self, split: Split, shape: [usize; 3]) -> Result<[ImageSet; 2]> {
        let set = self
            .dataset
            .load_shaped(split, self.data_dir.as_deref(), Some(shape), None)?;
        let limit = match split {
            Split::Train => self.train_limit,
            _ => self.test_limit,
        };
        let one = |c: usize| -> Result<ImageSet> {
            let s = set.of_classes(&[c]).context("--pair")?;
            Ok(match limit {
                Some(n) => s.take(n),
                None => s,
            })
        };
        Ok([one(self.pair[0])?, one(self.pair[1])?])
    }
}

/// What a finished `train c3lt` run holds (`model.toml`), beside `maps.mpk` and copies of the
/// encoder run's `generator.mpk` and `encoder.mpk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct C3ltRun {
    /// Always `"c3lt"`, so the run cannot be taken for another kind.
    pub kind: String,
    pub pair: [usize; 2],
    pub n_steps: usize,
    pub gan: DcganConfig,
    /// The classifier the maps were trained to explain.
    pub classifier: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct C3ltEpoch {
    pub epoch: usize,
    pub lr: f64,
    /// Training loss and its terms, batch means averaged over the epoch.
    pub loss: f64,
    pub cls: f64,
    pub prox: f64,
    pub cyc: f64,
    pub adv: f64,
    /// On the test images of both classes: the fraction the classifier puts in the other class.
    pub val: f64,
    /// Mean `|x − x′|` in unit space.
    pub prox_unit: f64,
    /// The same in the GAN's `[-1, 1]` (the seed's Prox).
    pub prox_gan: f64,
    pub cout: f64,
    /// Test images scored.
    pub n_test: usize,
    /// Val, Prox in `[-1, 1]` and COUT of the direction c → c′ alone, as `c3lt/eval.py`
    /// scores it. `None` in rows written before these columns existed.
    #[serde(default)]
    pub val_fwd: Option<f64>,
    #[serde(default)]
    pub prox_gan_fwd: Option<f64>,
    #[serde(default)]
    pub cout_fwd: Option<f64>,
}

/// Val (1 or 0), unit-space Prox and COUT of a set of counterfactuals, per input.
struct Scores {
    val: Vec<f64>,
    prox_unit: Vec<f64>,
    cout: Vec<f64>,
}

impl Scores {
    /// The means over inputs `range`.
    fn means(&self, range: std::ops::Range<usize>) -> (f64, f64, f64) {
        let n = range.len().max(1) as f64;
        let mean = |v: &[f64]| v[range.clone()].iter().sum::<f64>() / n;
        (mean(&self.val), mean(&self.prox_unit), mean(&self.cout))
    }
}

/// The networks a C3LT run trains against, loaded and checked against each other.
pub(crate) struct C3ltNets<B: Backend> {
    pub generator: Generator<B>,
    pub encoder: GanEncoder<B>,
    pub discriminator: Discriminator<B>,
    pub classifier: CnnClassifier<B>,
    pub gan: DcganConfig,
}

impl<B: Backend> C3ltNets<B> {
    fn load(cfg: &C3ltTrainConfig, device: &B::Device) -> Result<Self> {
        for (flag, run) in [
            ("--classifier", &cfg.classifier),
            ("--gan", &cfg.gan),
            ("--encoder", &cfg.encoder),
        ] {
            require_run_dataset(flag, run, cfg.dataset, "this C3LT run")?;
        }
        let gan = match read_gan_run(&cfg.gan)? {
            GanRun::Dcgan(c) => c,
            GanRun::GanEncoder(_) => bail!(
                "--gan {}: that is an encoder run; pass the `train dcgan` run",
                cfg.gan.display()
            ),
        };
        let model = match read_gan_run(&cfg.encoder)? {
            GanRun::GanEncoder(c) => c,
            GanRun::Dcgan(_) => bail!(
                "--encoder {}: that is a DCGAN run; train an encoder with `cargo xtask train gan-encoder --gan {}`",
                cfg.encoder.display(),
                cfg.gan.display()
            ),
        };
        if model != gan {
            bail!(
                "--encoder {} was trained for a different DCGAN ({model:?}) than --gan {} ({gan:?})",
                cfg.encoder.display(),
                cfg.gan.display()
            );
        }
        let (generator, encoder) = load_gan::<B>(&cfg.encoder, device)?;
        let encoder = encoder.context("the encoder run has no encoder.mpk")?;
        let classifier = load_classifier::<B>(&cfg.classifier, device)?;
        if classifier.input_shape() != gan.image_shape() {
            bail!(
                "--classifier {} takes {:?} images, the DCGAN makes {:?}",
                cfg.classifier.display(),
                classifier.input_shape(),
                gan.image_shape()
            );
        }
        let k = classifier.n_classes();
        if cfg.pair.iter().any(|&c| c >= k) {
            bail!("--pair {:?}: the classifier has classes 0..{k}", cfg.pair);
        }
        // Fixed networks: gradients flow through them to the maps, never into them.
        Ok(Self {
            generator: generator.no_grad(),
            encoder: encoder.no_grad(),
            discriminator: load_discriminator::<B>(&cfg.gan, device)?.no_grad(),
            classifier: classifier.no_grad(),
            gan,
        })
    }
}

struct C3ltTrainer<B: AutodiffBackend> {
    cfg: C3ltTrainConfig,
    device: B::Device,
    nets: C3ltNets<B>,
    maps: C3ltMaps<B>,
    opt: OptimizerAdaptor<Adam, C3ltMaps<B>, B>,
    train: [ImageSet; 2],
    test: [ImageSet; 2],
    samplers: [EpochSampler; 2],
}

impl<B: AutodiffBackend> C3ltTrainer<B> {
    fn adam() -> OptimizerAdaptor<Adam, C3ltMaps<B>, B> {
        AdamConfig::new().init()
    }

    /// The trained explainer on the inner backend.
    fn explainer(&self) -> C3lt<B::InnerBackend> {
        let n = &self.nets;
        C3lt::new(
            self.maps.valid(),
            Box::new(GanWithEncoder {
                generator: n.generator.valid(),
                encoder: n.encoder.valid(),
            }),
            Box::new(n.classifier.valid()),
            self.cfg.pair,
            self.cfg.n_steps,
        )
        .expect("checked when the networks were loaded")
    }

    /// Test images of both classes with their counterfactuals, as a metric set whose
    /// "predicted" class is the label (see the module doc).
    fn test_set(&self) -> Result<CounterfactualSet> {
        let c3lt = self.explainer();
        let classifier = self.nets.classifier.valid();
        let shape = self.nets.gan.image_shape();
        let mut set = CounterfactualSet {
            shape,
            inputs: vec![],
            counterfactuals: vec![],
            predicted: vec![],
            cf_predicted: vec![],
            targets: vec![],
            ids: vec![],
        };
        for (side, images) in self.test.iter().enumerate() {
            for host in cfx_datasets::eval_batches(images, 256, &Augmentation::UNIT) {
                let x = host.to_device::<B::InnerBackend>(&self.device).images;
                let n = x.dims()[0];
                let cf = c3lt.transform(x.clone(), &vec![side; n])?;
                let cf_class = predictions(classifier.logits(cf.clone()));
                let to_host = |t: Tensor<B::InnerBackend, 4>| -> Vec<f32> {
                    t.into_data()
                        .convert::<f32>()
                        .into_vec()
                        .unwrap_or_default()
                };
                set.inputs.extend(to_host(x));
                set.counterfactuals.extend(to_host(cf));
                set.predicted.extend(vec![self.cfg.pair[side]; n]);
                set.targets.extend(vec![self.cfg.pair[1 - side]; n]);
                set.cf_predicted.extend(cf_class.into_iter().map(Some));
                let start = set.ids.len();
                set.ids.extend(start..start + n);
            }
        }
        Ok(set)
    }

    /// Val, unit-space Prox and COUT of every test image of both classes (class c first), and
    /// how many test images class c has.
    fn score(&self) -> Result<(Scores, usize)> {
        let set = self.test_set()?;
        let classifier = self.nets.classifier.valid();
        let ctx = EvalContext {
            classifier: &classifier,
            range: DataRange::Unit,
            device: self.device.clone(),
            batch_size: 1024,
        };
        let per_input = |m: &dyn Metric<B::InnerBackend>| -> Result<Vec<f64>> {
            let v = match m.evaluate(&set, &ctx)? {
                MetricValue::WithCurves(v, _) | MetricValue::PerSample(v) => v,
                MetricValue::Population(_) => bail!("{} gave no per-input scores", m.name()),
            };
            if v.len() != set.len() {
                bail!(
                    "{} scored {} of {} counterfactuals",
                    m.name(),
                    v.len(),
                    set.len()
                );
            }
            Ok(v)
        };
        let scores = Scores {
            val: per_input(&Val)?,
            prox_unit: per_input(&Proximity)?,
            cout: per_input(&Cout::default())?,
        };
        Ok((scores, self.test[0].len()))
    }
}

impl<B: AutodiffBackend> EpochTrainer for C3ltTrainer<B> {
    type Epoch = C3ltEpoch;

    fn checkpoint(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        Ok(vec![
            (
                "maps.mpk",
                record_bytes::<B, _>(self.maps.clone().into_record())?,
            ),
            ("optim.mpk", record_bytes::<B, _>(self.opt.to_record())?),
        ])
    }

    fn restore(&mut self, ckpt: &Path) -> Result<()> {
        let d = &self.device;
        self.maps = self
            .maps
            .clone()
            .load_record(read_checkpoint_record::<B, _>(ckpt, "maps.mpk", d)?);
        self.opt = Self::adam().load_record(read_checkpoint_record::<B, _>(ckpt, "optim.mpk", d)?);
        Ok(())
    }

    fn train_epoch(&mut self, epoch: usize) -> Result<C3ltEpoch> {
        let lr = self.cfg.lr_at(epoch);
        let [b0, b1] = [0, 1].map(|k| self.samplers[k].batches(self.train[k].len(), epoch));
        let steps = b0.len().min(b1.len());
        let bar = epoch_bar(epoch, self.cfg.epochs, steps, 0);
        let nets = &self.nets;
        let critics = C3ltCritics {
            generator: &nets.generator,
            discriminator: &nets.discriminator,
            classifier: &nets.classifier,
        };
        let mut sums = [0.0f64; 5];
        for (k, (i0, i1)) in b0.iter().zip(&b1).enumerate() {
            // The last batches of the two classes can differ in size; the loss pairs them up.
            let b = i0.len().min(i1.len());
            let mut rng = self.samplers[0].batch_rng(epoch, k);
            let x: [Tensor<B, 4>; 2] = [&i0[..b], &i1[..b]]
                .into_iter()
                .zip(&self.train)
                .map(|(idx, set)| {
                    HostBatch::from_set(set, idx, &Augmentation::UNIT, &mut rng)
                        .to_device::<B>(&self.device)
                        .images
                })
                .collect::<Vec<_>>()
                .try_into()
                .expect("two classes");
            let terms = {
                let _m = mode::inference();
                let z = x.clone().map(|x| nets.encoder.forward(x).detach());
                c3lt_loss(
                    &self.maps,
                    &critics,
                    x,
                    z,
                    self.cfg.pair,
                    self.cfg.n_steps,
                    &self.cfg.weights,
                )
            };
            for (s, t) in sums.iter_mut().zip([
                &terms.total,
                &terms.cls,
                &terms.prox,
                &terms.cyc,
                &terms.adv,
            ]) {
                *s += t.clone().into_scalar().elem::<f64>();
            }
            let grads = GradientsParams::from_grads(terms.total.backward(), &self.maps);
            self.maps = self.opt.step(lr, self.maps.clone(), grads);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let n = steps.max(1) as f64;
        let (scores, n_fwd) = self.score()?;
        let n_test = scores.val.len();
        let (val, prox_unit, cout) = scores.means(0..n_test);
        let (val_fwd, prox_unit_fwd, cout_fwd) = scores.means(0..n_fwd);
        Ok(C3ltEpoch {
            epoch: epoch + 1,
            lr,
            loss: sums[0] / n,
            cls: sums[1] / n,
            prox: sums[2] / n,
            cyc: sums[3] / n,
            adv: sums[4] / n,
            val,
            prox_unit,
            prox_gan: 2.0 * prox_unit,
            cout,
            n_test,
            val_fwd: Some(val_fwd),
            prox_gan_fwd: Some(2.0 * prox_unit_fwd),
            cout_fwd: Some(cout_fwd),
        })
    }

    fn describe(&self, e: &C3ltEpoch) -> String {
        let mut line = format!(
            "loss {:.4} (cls {:.4}, prox {:.4}, cyc {:.4}, adv {:.4}); test Val {:.3}, COUT {:.3}, Prox {:.4} ([-1,1]: {:.4})",
            e.loss, e.cls, e.prox, e.cyc, e.adv, e.val, e.cout, e.prox_unit, e.prox_gan
        );
        if let (Some(v), Some(p), Some(c)) = (e.val_fwd, e.prox_gan_fwd, e.cout_fwd) {
            let [a, b] = self.cfg.pair;
            line += &format!("; {a} → {b} alone: Val {v:.3}, COUT {c:.3}, Prox [-1,1] {p:.4}");
        }
        line
    }

    fn after_epoch(&self, run: &RunDir) -> Result<()> {
        // Per class: 8 test images above their counterfactuals.
        let c3lt = self.explainer();
        let mut rows = vec![];
        for (side, images) in self.test.iter().enumerate() {
            let idx: Vec<usize> = (0..images.len().min(8)).collect();
            let mut rng = self.samplers[0].batch_rng(0, 0);
            let x = HostBatch::from_set(images, &idx, &Augmentation::UNIT, &mut rng)
                .to_device::<B::InnerBackend>(&self.device)
                .images;
            let cf = c3lt.transform(x.clone(), &vec![side; idx.len()])?;
            rows.extend([x, cf]);
        }
        super::gan::save_grid(Tensor::cat(rows, 0), &run.path("samples.png"))
    }

    fn finish(&self, run: &RunDir) -> Result<()> {
        write_model(run, "maps.mpk", &self.maps)?;
        for file in ["generator.mpk", "encoder.mpk"] {
            let from = self.cfg.encoder.join(file);
            let bytes =
                std::fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
            crate::fsutil::write_atomic(&run.path(file), &bytes)?;
        }
        run.write_toml(
            "model.toml",
            &C3ltRun {
                kind: "c3lt".into(),
                pair: self.cfg.pair,
                n_steps: self.cfg.n_steps,
                gan: self.nets.gan.clone(),
                classifier: self.cfg.classifier.clone(),
            },
        )
    }
}

pub struct C3ltTrainJob {
    pub cfg: C3ltTrainConfig,
    pub run_root: PathBuf,
    pub resume: bool,
}

impl BackendJob for C3ltTrainJob {
    type Output = C3ltEpoch;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        _backend: BackendKind,
    ) -> Result<C3ltEpoch> {
        let cfg = self.cfg;
        cfg.validate()?;
        let nets = C3ltNets::<B>::load(&cfg, &device)?;
        let run = RunDir::open(&self.run_root, self.resume)?;
        if !self.resume {
            run.write_toml("config.toml", &cfg)?;
        }
        B::seed(&device, cfg.seed);
        let sampler = |k: u64| EpochSampler {
            seed: cfg.seed.wrapping_add(k),
            batch_size: cfg.batch_size,
            drop_last: false,
        };
        let mut trainer = C3ltTrainer::<B> {
            maps: C3ltMaps::new(nets.gan.latent_dim, &device),
            opt: C3ltTrainer::<B>::adam(),
            train: cfg.load(Split::Train, nets.gan.image_shape())?,
            test: cfg.load(Split::Test, nets.gan.image_shape())?,
            samplers: [sampler(0), sampler(1)],
            nets,
            device,
            cfg,
        };
        let epochs = trainer.cfg.epochs;
        run_epochs(&mut trainer, &run, epochs, self.resume)
    }
}

/// The `model.toml` of a finished `train c3lt` run.
pub fn read_c3lt_run(run: &Path) -> Result<C3ltRun> {
    crate::checkpoint::require_run_dir(run)?;
    let meta: C3ltRun = read_toml(&run.join("model.toml")).with_context(|| {
        format!(
            "{} is not a finished C3LT run (train one with `cargo xtask train c3lt --pair c,c2 …`)",
            run.display()
        )
    })?;
    if meta.kind != "c3lt" {
        bail!("{} holds a {}, not C3LT maps", run.display(), meta.kind);
    }
    meta.gan.validate().map_err(anyhow::Error::msg)?;
    Ok(meta)
}

/// A finished `train c3lt` run as an explainer of `classifier`.
pub fn load_c3lt<B: Backend>(
    run: &Path,
    classifier: Box<dyn Classifier<B>>,
    device: &B::Device,
) -> Result<C3lt<B>> {
    let meta = read_c3lt_run(run)?;
    let generator = super::gan::load_generator(&meta.gan, run, device)?;
    let encoder = super::gan::load_encoder(&meta.gan, run, device)?;
    let maps = C3ltMaps::new(meta.gan.latent_dim, device)
        .load_record(super::gan::read_model_file(run, "maps.mpk", device)?);
    C3lt::new(
        maps,
        Box::new(GanWithEncoder { generator, encoder }),
        classifier,
        meta.pair,
        meta.n_steps,
    )
    .map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::Scores;

    #[test]
    fn scores_average_over_the_asked_inputs() {
        let s = Scores {
            val: vec![1.0, 0.0, 1.0, 1.0],
            prox_unit: vec![0.1, 0.3, 0.2, 0.4],
            cout: vec![1.0, 0.0, 0.5, 0.5],
        };
        let (v, p, c) = s.means(0..2);
        assert_eq!(v, 0.5);
        assert!((p - 0.2).abs() < 1e-12 && (c - 0.5).abs() < 1e-12);
        let (v, p, c) = s.means(0..4);
        assert_eq!(v, 0.75);
        assert!((p - 0.25).abs() < 1e-12 && (c - 0.5).abs() < 1e-12);
    }
}
