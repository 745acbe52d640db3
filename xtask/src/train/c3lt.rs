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
    /// Where the training queries come from. Configs saved before this field train on the
    /// encoder's latents of real images, as they did.
    #[serde(default)]
    pub latents: C3ltLatents,
    /// Score the test set after every `eval_every`-th epoch and after the last (the
    /// reference's `eval_interval` is 10); the other epochs' rows leave the test columns
    /// empty. Configs saved before this field score every epoch, as they did.
    #[serde(default = "every_epoch")]
    pub eval_every: usize,
}

fn every_epoch() -> usize {
    1
}

/// The training queries of the maps (seed 003 §3.1: "E is not an integral part and `z_x` can
/// be obtained by directly sampling from the latent space"; `c3lt/train.py` uses the encoder).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum C3ltLatents {
    /// `z = E(x)` of the pair's training images, the query image `x` itself (the reference).
    #[default]
    Encoder,
    /// `z ~ N(0, I)`, kept when the explained classifier puts `G(z)` in the class, and the query
    /// image `G(z)`: as many per class as it has training images, drawn once per run from the
    /// run's seed. The maps then never see the encoder's reconstruction error, so their Prox
    /// measures the generator's latent geometry alone; they are still scored on real test
    /// images through E.
    Sampled,
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
            latents: C3ltLatents::Encoder,
            eval_every: every_epoch(),
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
        if self.eval_every == 0 {
            bail!("--eval-every must be at least 1 (score the test set every N epochs)");
        }
        if !(self.lr_gamma > 0.0 && self.lr_gamma <= 1.0) {
            bail!("lr_gamma {} must be in (0, 1]", self.lr_gamma);
        }
        let w = &self.weights;
        for (name, v) in [
            ("alpha", w.alpha),
            ("beta", w.beta),
            ("gamma", w.gamma),
            ("p1", w.p1),
            ("p2", w.p2),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("loss weight {name} must be finite and ≥ 0, got {v}");
            }
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
    /// This and the other test columns are `None` in an epoch the test set was not scored
    /// after (`eval_every`).
    pub val: Option<f64>,
    /// Mean `|x − x′|` in unit space.
    pub prox_unit: Option<f64>,
    /// The same in the GAN's `[-1, 1]` (the seed's Prox).
    pub prox_gan: Option<f64>,
    pub cout: Option<f64>,
    /// Test images scored (0 in an epoch without scoring).
    pub n_test: usize,
    /// Val, Prox in `[-1, 1]` and COUT of the direction c → c′ alone, as `c3lt/eval.py`
    /// scores it. `None` in rows written before these columns existed.
    #[serde(default)]
    pub val_fwd: Option<f64>,
    #[serde(default)]
    pub prox_gan_fwd: Option<f64>,
    #[serde(default)]
    pub cout_fwd: Option<f64>,
    /// For the c → c′ inputs, in `[-1, 1]`: the encoder's reconstruction error
    /// `|G(E(x)) − x|`, and the maps' own change `|G(g(E(x))) − G(E(x))|`. Prox lies within
    /// their sum and difference (triangle inequality); the first is the floor no map can
    /// lower. `None` in rows written before these columns existed.
    #[serde(default)]
    pub recon_gan_fwd: Option<f64>,
    #[serde(default)]
    pub edit_gan_fwd: Option<f64>,
}

/// Val (1 or 0), unit-space Prox and COUT of a set of counterfactuals, per input.
struct Scores {
    val: Vec<f64>,
    prox_unit: Vec<f64>,
    cout: Vec<f64>,
    /// `|G(E(x)) − x|` and `|x′ − G(E(x))|` per input, unit space.
    recon_unit: Vec<f64>,
    edit_unit: Vec<f64>,
}

impl Scores {
    /// The means over inputs `range`.
    fn means(&self, range: std::ops::Range<usize>) -> (f64, f64, f64) {
        let mean = |v: &[f64]| mean_over(v, range.clone());
        (mean(&self.val), mean(&self.prox_unit), mean(&self.cout))
    }

    /// The means of the reconstruction error and of the maps' change over inputs `range`.
    fn floor_and_edit(&self, range: std::ops::Range<usize>) -> (f64, f64) {
        let mean = |v: &[f64]| mean_over(v, range.clone());
        (mean(&self.recon_unit), mean(&self.edit_unit))
    }
}

/// The mean of `v[range]`; 0 for an empty range.
fn mean_over(v: &[f64], range: std::ops::Range<usize>) -> f64 {
    let n = range.len().max(1) as f64;
    v[range].iter().sum::<f64>() / n
}

/// Row indices as the `Int` tensor `select` takes.
fn row_index<B: Backend>(rows: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let rows: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
    let n = rows.len();
    Tensor::from_data(TensorData::new(rows, [n]), device)
}

/// Mean `|a − b|` per image.
fn l1_per_image<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Vec<f64> {
    let n = a.dims()[0];
    (a - b)
        .abs()
        .reshape([n as i32, -1])
        .mean_dim(1)
        .into_data()
        .convert::<f64>()
        .into_vec()
        .unwrap_or_default()
}

/// `counts[k]` latents per class `pair[k]`, drawn from `N(0, I)` and kept where the classifier
/// puts `G(z)` in that class ([`C3ltLatents::Sampled`]). Fails, naming the class, when the
/// generator draws too few of it.
fn sample_class_latents<B: Backend>(
    generator: &dyn cfx_generative::LatentGenerator<B>,
    classifier: &dyn Classifier<B>,
    pair: [usize; 2],
    counts: [usize; 2],
    device: &B::Device,
) -> Result<[Tensor<B, 2>; 2]> {
    const BATCH: usize = 1000;
    let _m = mode::inference();
    let dim = generator.latent_dim();
    let budget = 100 * (counts[0] + counts[1]).max(1);
    let mut kept: [Vec<Tensor<B, 2>>; 2] = [vec![], vec![]];
    let mut have = [0usize; 2];
    let mut drawn = 0;
    while have.iter().zip(&counts).any(|(h, c)| h < c) {
        if drawn >= budget {
            let k = usize::from(have[0] >= counts[0]);
            bail!(
                "the generator drew only {} images the classifier puts in class {} out of {drawn} \
                 samples (needed {}); use --latents encoder",
                have[k],
                pair[k],
                counts[k]
            );
        }
        let z = cfx_generative::sample_latents::<B>(BATCH, dim, device);
        let class = predictions(classifier.logits(generator.decode(z.clone())));
        drawn += BATCH;
        for k in 0..2 {
            let rows: Vec<usize> = (0..BATCH)
                .filter(|&i| class[i] == pair[k])
                .take(counts[k] - have[k])
                .collect();
            if rows.is_empty() {
                continue;
            }
            have[k] += rows.len();
            kept[k].push(z.clone().select(0, row_index(&rows, device)));
        }
    }
    eprintln!(
        "kept {} of class {} and {} of class {} out of {drawn} samples",
        have[0], pair[0], have[1], pair[1]
    );
    Ok(kept.map(|parts| Tensor::cat(parts, 0)))
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
    /// The sampled queries of [`C3ltLatents::Sampled`], one row per training "image".
    pool: Option<[Tensor<B::InnerBackend, 2>; 2]>,
}

impl<B: AutodiffBackend> C3ltTrainer<B> {
    fn adam() -> OptimizerAdaptor<Adam, C3ltMaps<B>, B> {
        AdamConfig::new().init()
    }

    /// The images `G(z)` and latents `z` of the pool rows `idx[k]` of each class.
    fn sampled_queries(
        &self,
        pool: &[Tensor<B::InnerBackend, 2>; 2],
        idx: [&[usize]; 2],
    ) -> ([Tensor<B, 4>; 2], [Tensor<B, 2>; 2]) {
        use cfx_generative::LatentGenerator;
        let generator = self.nets.generator.valid();
        let _m = mode::inference();
        let pick = |k: usize| {
            let z = pool[k].clone().select(0, row_index(idx[k], &self.device));
            let x = generator.decode(z.clone());
            (Tensor::from_inner(x), Tensor::from_inner(z))
        };
        let (a, b) = (pick(0), pick(1));
        ([a.0, b.0], [a.1, b.1])
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
    fn test_set(&self) -> Result<(CounterfactualSet, Vec<f64>, Vec<f64>)> {
        let c3lt = self.explainer();
        let generator = self.nets.generator.valid();
        let encoder = self.nets.encoder.valid();
        let (mut recon_l1, mut edit_l1) = (vec![], vec![]);
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
                let recon = {
                    use cfx_generative::LatentGenerator;
                    let _m = mode::inference();
                    generator.decode(encoder.forward(x.clone()))
                };
                recon_l1.extend(l1_per_image(recon.clone(), x.clone()));
                edit_l1.extend(l1_per_image(cf.clone(), recon));
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
        Ok((set, recon_l1, edit_l1))
    }

    /// Val, unit-space Prox and COUT of every test image of both classes (class c first), and
    /// how many test images class c has.
    fn score(&self) -> Result<(Scores, usize)> {
        let (set, recon_unit, edit_unit) = self.test_set()?;
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
            recon_unit,
            edit_unit,
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
            let idx = [&i0[..b], &i1[..b]];
            let queries = match &self.pool {
                None => None,
                Some(pool) => Some(self.sampled_queries(pool, idx)),
            };
            let x: [Tensor<B, 4>; 2] = match &queries {
                Some((x, _)) => x.clone(),
                None => idx
                    .into_iter()
                    .zip(&self.train)
                    .map(|(idx, set)| {
                        HostBatch::from_set(set, idx, &Augmentation::UNIT, &mut rng)
                            .to_device::<B>(&self.device)
                            .images
                    })
                    .collect::<Vec<_>>()
                    .try_into()
                    .expect("two classes"),
            };
            let terms = {
                let _m = mode::inference();
                let z = match queries {
                    Some((_, z)) => z,
                    None => x.clone().map(|x| nets.encoder.forward(x).detach()),
                };
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
        let mut row = C3ltEpoch {
            epoch: epoch + 1,
            lr,
            loss: sums[0] / n,
            cls: sums[1] / n,
            prox: sums[2] / n,
            cyc: sums[3] / n,
            adv: sums[4] / n,
            val: None,
            prox_unit: None,
            prox_gan: None,
            cout: None,
            n_test: 0,
            val_fwd: None,
            prox_gan_fwd: None,
            cout_fwd: None,
            recon_gan_fwd: None,
            edit_gan_fwd: None,
        };
        let scored =
            (epoch + 1).is_multiple_of(self.cfg.eval_every) || epoch + 1 >= self.cfg.epochs;
        if !scored {
            return Ok(row);
        }
        let (scores, n_fwd) = self.score()?;
        row.n_test = scores.val.len();
        let (val, prox_unit, cout) = scores.means(0..row.n_test);
        let (val_fwd, prox_unit_fwd, cout_fwd) = scores.means(0..n_fwd);
        let (recon_fwd, edit_fwd) = scores.floor_and_edit(0..n_fwd);
        row.val = Some(val);
        row.prox_unit = Some(prox_unit);
        row.prox_gan = Some(2.0 * prox_unit);
        row.cout = Some(cout);
        row.val_fwd = Some(val_fwd);
        row.prox_gan_fwd = Some(2.0 * prox_unit_fwd);
        row.cout_fwd = Some(cout_fwd);
        row.recon_gan_fwd = Some(2.0 * recon_fwd);
        row.edit_gan_fwd = Some(2.0 * edit_fwd);
        Ok(row)
    }

    fn describe(&self, e: &C3ltEpoch) -> String {
        let mut line = format!(
            "loss {:.4} (cls {:.4}, prox {:.4}, cyc {:.4}, adv {:.4})",
            e.loss, e.cls, e.prox, e.cyc, e.adv
        );
        let (Some(val), Some(cout), Some(prox), Some(prox_gan)) =
            (e.val, e.cout, e.prox_unit, e.prox_gan)
        else {
            line += &format!("; test scored every {} epochs", self.cfg.eval_every);
            return line;
        };
        line +=
            &format!("; test Val {val:.3}, COUT {cout:.3}, Prox {prox:.4} ([-1,1]: {prox_gan:.4})");
        if let (Some(v), Some(p), Some(c)) = (e.val_fwd, e.prox_gan_fwd, e.cout_fwd) {
            let [a, b] = self.cfg.pair;
            line += &format!("; {a} → {b} alone: Val {v:.3}, COUT {c:.3}, Prox [-1,1] {p:.4}");
        }
        if let (Some(r), Some(d)) = (e.recon_gan_fwd, e.edit_gan_fwd) {
            line += &format!(" (encoder floor {r:.4}, the maps' change {d:.4})");
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
        let train = cfg.load(Split::Train, nets.gan.image_shape())?;
        let pool = match cfg.latents {
            C3ltLatents::Encoder => None,
            C3ltLatents::Sampled => {
                // Its own seed, so the pool is the same on every resume of the run.
                B::seed(&device, cfg.seed.wrapping_add(0x5eed));
                let [c, c2] = cfg.pair;
                eprintln!(
                    "drawing {} latents of class {c} and {} of class {c2} from N(0, I) (--latents sampled)",
                    train[0].len(),
                    train[1].len()
                );
                let pool = sample_class_latents(
                    &nets.generator.valid(),
                    &nets.classifier.valid(),
                    cfg.pair,
                    [train[0].len(), train[1].len()],
                    &device,
                )?;
                B::seed(&device, cfg.seed);
                Some(pool)
            }
        };
        let mut trainer = C3ltTrainer::<B> {
            maps: C3ltMaps::new(nets.gan.latent_dim, &device),
            opt: C3ltTrainer::<B>::adam(),
            train,
            test: cfg.load(Split::Test, nets.gan.image_shape())?,
            pool,
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
    use super::{Scores, sample_class_latents};
    use burn::backend::Flex;
    use burn::prelude::*;
    use cfx_classifiers::{Classifier, predictions};
    use cfx_generative::{DcganConfig, LatentGenerator};

    #[test]
    fn scores_average_over_the_asked_inputs() {
        let s = Scores {
            val: vec![1.0, 0.0, 1.0, 1.0],
            prox_unit: vec![0.1, 0.3, 0.2, 0.4],
            cout: vec![1.0, 0.0, 0.5, 0.5],
            recon_unit: vec![0.05, 0.15, 0.0, 0.0],
            edit_unit: vec![0.2, 0.4, 0.0, 0.0],
        };
        let (r, e) = s.floor_and_edit(0..2);
        assert!((r - 0.1).abs() < 1e-12 && (e - 0.3).abs() < 1e-12);
        let (v, p, c) = s.means(0..2);
        assert_eq!(v, 0.5);
        assert!((p - 0.2).abs() < 1e-12 && (c - 0.5).abs() < 1e-12);
        let (v, p, c) = s.means(0..4);
        assert_eq!(v, 0.75);
        assert!((p - 0.25).abs() < 1e-12 && (c - 0.5).abs() < 1e-12);
    }

    /// Class 0 for images brighter than `t` on average, class 1 for the rest, class 2 never.
    struct Brightness(f32);

    impl Classifier<Flex> for Brightness {
        fn n_classes(&self) -> usize {
            3
        }
        fn input_shape(&self) -> [usize; 3] {
            [1, 28, 28]
        }
        fn logits(&self, x: Tensor<Flex, 4>) -> Tensor<Flex, 2> {
            let n = x.dims()[0];
            let m = x.reshape([n as i32, -1]).mean_dim(1).sub_scalar(self.0);
            let never = m.zeros_like().sub_scalar(1e3);
            Tensor::cat(vec![m.clone(), m.neg(), never], 1)
        }
    }

    /// The sampled pool has the asked number of latents per class, each one a latent whose
    /// image the classifier puts in that class; a class the generator never draws is an error
    /// naming it.
    #[test]
    fn sampled_latents_are_of_their_class() {
        let device = Default::default();
        Flex::seed(&device, 3);
        let generator = DcganConfig::tiny().init_generator::<Flex>(&device);
        let _m = cfx_flows::nn::mode::inference();
        // The median brightness of a probe splits the generator's images in two classes.
        let probe = generator.decode(cfx_generative::sample_latents::<Flex>(501, 16, &device));
        let mut means: Vec<f32> = probe
            .reshape([501, -1])
            .mean_dim(1)
            .into_data()
            .into_vec()
            .unwrap();
        means.sort_by(f32::total_cmp);
        assert!(means[450] > means[50], "the probe's images all look alike");
        let classifier = Brightness(means[250]);
        let pool = sample_class_latents(&generator, &classifier, [1, 0], [7, 5], &device).unwrap();
        assert_eq!(pool[0].dims(), [7, 16]);
        assert_eq!(pool[1].dims(), [5, 16]);
        for (k, z) in pool.into_iter().enumerate() {
            let class = predictions(classifier.logits(generator.decode(z)));
            assert!(class.iter().all(|&c| c == 1 - k), "{class:?} for {}", 1 - k);
        }
        let e = sample_class_latents(&generator, &classifier, [0, 2], [3, 3], &device)
            .unwrap_err()
            .to_string();
        assert!(e.contains("class 2 "), "{e}");
    }
}
