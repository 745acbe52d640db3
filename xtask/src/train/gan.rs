//! `cargo xtask train dcgan` and `train gan-encoder`: the DCGAN of C3LT and the approximate
//! diffeomorphic counterfactuals, and the encoder E that C3LT maps images into its latent
//! space with.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_datasets::{
    Augmentation, DatasetKind, EpochSampler, HostBatch, ImageSet, Selection, Split,
};
use cfx_flows::nn::mode;
use cfx_generative::{
    DcganConfig, Discriminator, GanEncoder, GanWithEncoder, Generator, LatentGenerator,
    discriminator_loss, encoder_loss, generator_loss, sample_latents,
};
use cfx_linalg::LinalgBackend;
use serde::{Deserialize, Serialize};

use super::epochs::{
    EpochTrainer, milestone_decay, read_checkpoint_record, record_bytes, run_epochs, write_model,
};
use super::run::{RunDir, read_toml};
use crate::backend::{BackendJob, BackendKind};
use crate::explain::runner::require_run_dataset;
use crate::progress::epoch_bar;

/// What a run folder of this module holds (its `model.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GanRun {
    /// `generator.mpk` and `discriminator.mpk`.
    Dcgan(DcganConfig),
    /// `encoder.mpk` plus a copy of the GAN's `generator.mpk` it was trained for.
    GanEncoder(DcganConfig),
}

/// Training settings of `train dcgan`; the defaults are the PyTorch DCGAN example that the C3LT
/// GAN was trained with (Adam 2e-4, β1 0.5, batch 64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GanTrainConfig {
    pub dataset: DatasetKind,
    pub data_dir: Option<PathBuf>,
    pub model: DcganConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub beta1: f32,
    /// Seed 002 App. C.9 trains its MNIST DCGAN with weight decay 5e-4; the C3LT GAN uses none.
    pub weight_decay: Option<f64>,
    pub seed: u64,
    /// Train on these classes only (C3LT's encoders are per class pair).
    #[serde(default)]
    pub classes: Vec<usize>,
    /// The learning rate is multiplied by 0.1 from each of these epochs on (counted from 1:
    /// `[6]` trains epochs 7, 8, … at a tenth). A config.toml without it has none.
    #[serde(default)]
    pub milestones: Vec<usize>,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
}

impl GanTrainConfig {
    pub fn dcgan(dataset: DatasetKind) -> Self {
        Self {
            dataset,
            data_dir: None,
            model: DcganConfig::default(),
            epochs: 25,
            batch_size: 64,
            lr: 2e-4,
            beta1: 0.5,
            weight_decay: None,
            seed: 1,
            classes: vec![],
            milestones: vec![],
            train_limit: None,
            test_limit: None,
        }
    }

    /// The encoder's default schedule for `epochs` epochs: a tenth of the rate for the last 40 %
    /// of them. At a constant 1e-3 its test reconstruction stops falling after ~4 epochs
    /// (0.036–0.039 in unit space over epochs 4–10); two more at 1e-4 took it from 0.0349 to
    /// 0.0308 (docs/results.md, "How much of C3LT's floor is the encoder").
    pub fn encoder_milestones(epochs: usize) -> Vec<usize> {
        match epochs * 3 / 5 {
            0 => vec![],
            m => vec![m],
        }
    }

    /// The learning rate of `epoch` (from 0) under the milestones.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * milestone_decay(&self.milestones, 0.1, epoch)
    }

    /// The encoder's settings: Adam 1e-3, a tenth from epoch 6 of 10 (ours; the C3LT code ships
    /// its encoders trained).
    pub fn encoder(dataset: DatasetKind) -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            lr: 1e-3,
            beta1: 0.9,
            milestones: Self::encoder_milestones(10),
            ..Self::dcgan(dataset)
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.model.validate().map_err(anyhow::Error::msg)?;
        if self.batch_size == 0 || self.lr.is_nan() || self.lr <= 0.0 {
            bail!("batch_size and lr must be positive");
        }
        Ok(())
    }

    fn adam<B: AutodiffBackend, M: AutodiffModule<B>>(&self) -> OptimizerAdaptor<Adam, M, B> {
        AdamConfig::new()
            .with_beta_1(self.beta1)
            .with_weight_decay(self.weight_decay.map(|w| WeightDecayConfig::new(w as f32)))
            .init()
    }

    /// The training (or test) images, restricted to `classes`, in the GAN's image shape.
    pub(crate) fn load(&self, split: Split) -> Result<ImageSet> {
        let limit = match split {
            Split::Train => self.train_limit,
            _ => self.test_limit,
        };
        let selection = Selection::new(&self.classes, limit);
        let set = self.dataset.load_shaped(
            split,
            self.data_dir.as_deref(),
            Some(self.model.image_shape()),
            selection.decode_limit(),
        )?;
        let set = selection.apply(set).context("--classes")?;
        if set.is_empty() {
            bail!("{} is empty", set.name);
        }
        Ok(set)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GanEpoch {
    pub epoch: usize,
    pub loss_d: f64,
    pub loss_g: f64,
    /// Mean `D(x)` on real training images and `D(G(z))` on fakes, before each update.
    pub d_real: f64,
    pub d_fake: f64,
}

/// Writes the 8×8 grid of `samples.png` from unit-space images.
pub(crate) fn save_grid<B: Backend>(images: Tensor<B, 4>, path: &Path) -> Result<()> {
    let dims = images.dims();
    let px: Vec<f32> = images
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap_or_default();
    crate::explain::figures::Grid::of_images(&px, dims, 8, 2).save(path)
}

struct GanTrainer<B: AutodiffBackend> {
    cfg: GanTrainConfig,
    device: B::Device,
    train: ImageSet,
    sampler: EpochSampler,
    g: Generator<B>,
    d: Discriminator<B>,
    opt_g: OptimizerAdaptor<Adam, Generator<B>, B>,
    opt_d: OptimizerAdaptor<Adam, Discriminator<B>, B>,
    /// The latents of `samples.png`, the same every epoch.
    fixed: Tensor<B::InnerBackend, 2>,
}

impl<B: AutodiffBackend> EpochTrainer for GanTrainer<B> {
    type Epoch = GanEpoch;

    fn checkpoint(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        Ok(vec![
            (
                "generator.mpk",
                record_bytes::<B, _>(self.g.clone().into_record())?,
            ),
            (
                "discriminator.mpk",
                record_bytes::<B, _>(self.d.clone().into_record())?,
            ),
            ("optim_g.mpk", record_bytes::<B, _>(self.opt_g.to_record())?),
            ("optim_d.mpk", record_bytes::<B, _>(self.opt_d.to_record())?),
        ])
    }

    fn restore(&mut self, ckpt: &Path) -> Result<()> {
        let d = &self.device;
        self.g =
            self.g
                .clone()
                .load_record(read_checkpoint_record::<B, _>(ckpt, "generator.mpk", d)?);
        self.d = self.d.clone().load_record(read_checkpoint_record::<B, _>(
            ckpt,
            "discriminator.mpk",
            d,
        )?);
        let og = read_checkpoint_record::<B, _>(ckpt, "optim_g.mpk", d)?;
        self.opt_g = self.cfg.adam::<B, Generator<B>>().load_record(og);
        let od = read_checkpoint_record::<B, _>(ckpt, "optim_d.mpk", d)?;
        self.opt_d = self.cfg.adam::<B, Discriminator<B>>().load_record(od);
        Ok(())
    }

    fn train_epoch(&mut self, epoch: usize) -> Result<GanEpoch> {
        // Seeded per epoch, so a resumed run draws the noise the interrupted one would have.
        B::seed(
            &self.device,
            self.cfg.seed.wrapping_add(1_000 * epoch as u64),
        );
        let batches = self.sampler.batches(self.train.len(), epoch);
        let bar = epoch_bar(epoch, self.cfg.epochs, batches.len(), 0);
        let mut sums = [0.0f64; 4];
        let dim = self.cfg.model.latent_dim;
        let rate = self.cfg.lr_at(epoch);
        for (k, idx) in batches.iter().enumerate() {
            let mut rng = self.sampler.batch_rng(epoch, k);
            let real = HostBatch::from_set(&self.train, idx, &Augmentation::UNIT, &mut rng)
                .to_device::<B>(&self.device)
                .images;
            let z = sample_latents::<B>(idx.len(), dim, &self.device);
            // One generator pass serves both steps, as in the PyTorch DCGAN recipe C3LT's
            // generator comes from: G has not changed between them, so a second pass cost a
            // fifth of the step for the same images, and stepped G's batch-norm statistics
            // twice per batch where the recipe steps them once.
            let fake = self.g.decode(z);
            // Discriminator: real → 1, G(z) → 0 (the fakes do not carry gradient to G).
            let (lr, lf) = (self.d.logits(real), self.d.logits(fake.clone().detach()));
            let d_real = burn::tensor::activation::sigmoid(lr.clone()).mean();
            let d_fake = burn::tensor::activation::sigmoid(lf.clone()).mean();
            let loss_d = discriminator_loss(lr, lf);
            let grads = GradientsParams::from_grads(loss_d.backward(), &self.d);
            self.d = self.opt_d.step(rate, self.d.clone(), grads);
            // Generator: the non-saturating loss through the updated discriminator, whose own
            // weights need no gradient here (its clone shares the batch-norm statistics, which
            // this pass steps as the recipe's does).
            let loss_g = generator_loss(self.d.clone().no_grad().logits(fake));
            let grads = GradientsParams::from_grads(loss_g.backward(), &self.g);
            self.g = self.opt_g.step(rate, self.g.clone(), grads);
            let n = idx.len() as f64;
            for (s, t) in sums.iter_mut().zip([loss_d, loss_g, d_real, d_fake]) {
                *s += t.into_scalar().elem::<f64>() * n;
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let n = self.train.len() as f64;
        Ok(GanEpoch {
            epoch: epoch + 1,
            loss_d: sums[0] / n,
            loss_g: sums[1] / n,
            d_real: sums[2] / n,
            d_fake: sums[3] / n,
        })
    }

    fn describe(&self, e: &GanEpoch) -> String {
        format!(
            "loss D {:.4}, loss G {:.4}, D(x) {:.3}, D(G(z)) {:.3}",
            e.loss_d, e.loss_g, e.d_real, e.d_fake
        )
    }

    fn after_epoch(&self, run: &RunDir) -> Result<()> {
        let g = self.g.valid();
        let _m = mode::inference();
        save_grid(g.decode(self.fixed.clone()), &run.path("samples.png"))
    }

    fn finish(&self, run: &RunDir) -> Result<()> {
        write_model(run, "generator.mpk", &self.g)?;
        write_model(run, "discriminator.mpk", &self.d)?;
        run.write_toml("model.toml", &GanRun::Dcgan(self.cfg.model.clone()))
    }
}

pub struct GanTrainJob {
    pub cfg: GanTrainConfig,
    pub run_root: PathBuf,
    pub resume: bool,
}

impl BackendJob for GanTrainJob {
    type Output = GanEpoch;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        _backend: BackendKind,
    ) -> Result<GanEpoch> {
        let cfg = self.cfg;
        cfg.validate()?;
        let run = RunDir::open(&self.run_root, self.resume)?;
        if !self.resume {
            run.write_toml("config.toml", &cfg)?;
        }
        B::seed(&device, cfg.seed);
        let train = cfg.load(Split::Train)?;
        let mut trainer = GanTrainer::<B> {
            g: cfg.model.init_generator(&device),
            d: cfg.model.init_discriminator(&device),
            opt_g: cfg.adam(),
            opt_d: cfg.adam(),
            fixed: sample_latents(64, cfg.model.latent_dim, &device),
            sampler: EpochSampler {
                seed: cfg.seed,
                batch_size: cfg.batch_size,
                drop_last: false,
            },
            train,
            device,
            cfg,
        };
        let epochs = trainer.cfg.epochs;
        run_epochs(&mut trainer, &run, epochs, self.resume)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncoderEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    /// `mean |G(E(x)) − x|` on the test images (unit space).
    pub test_reconstruction_l1: f64,
}

/// Settings of `train gan-encoder`: the GAN run it inverts, plus the shared training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderTrainConfig {
    pub gan: PathBuf,
    /// The weight of the latent term of [`encoder_loss`]. A config.toml without it is an
    /// encoder run from before the weight existed, trained with 1.
    #[serde(default = "EncoderTrainConfig::weight_before_2026_12_05")]
    pub latent_weight: f64,
    #[serde(flatten)]
    pub train: GanTrainConfig,
}

impl EncoderTrainConfig {
    /// No latent term: without it the encoder reconstructs test images better, which is what
    /// C3LT's proximity needs ([`encoder_loss`]).
    pub const DEFAULT_LATENT_WEIGHT: f64 = 0.0;

    fn weight_before_2026_12_05() -> f64 {
        1.0
    }

    /// Checked here, not only at the flag, because a resumed run reads the weight from its
    /// `config.toml`, which may have been edited by hand.
    pub fn validate(&self) -> Result<()> {
        let w = self.latent_weight;
        if !(w >= 0.0 && w.is_finite()) {
            bail!("latent_weight (--latent-weight) must be a finite number ≥ 0, not {w}");
        }
        self.train.validate()
    }
}

struct EncoderTrainer<B: AutodiffBackend> {
    cfg: GanTrainConfig,
    latent_weight: f64,
    device: B::Device,
    train: ImageSet,
    test: ImageSet,
    sampler: EpochSampler,
    g: Generator<B>,
    e: GanEncoder<B>,
    opt: OptimizerAdaptor<Adam, GanEncoder<B>, B>,
}

impl<B: AutodiffBackend> EpochTrainer for EncoderTrainer<B> {
    type Epoch = EncoderEpoch;

    fn checkpoint(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        Ok(vec![
            (
                "encoder.mpk",
                record_bytes::<B, _>(self.e.clone().into_record())?,
            ),
            ("optim.mpk", record_bytes::<B, _>(self.opt.to_record())?),
        ])
    }

    fn restore(&mut self, ckpt: &Path) -> Result<()> {
        let d = &self.device;
        self.e =
            self.e
                .clone()
                .load_record(read_checkpoint_record::<B, _>(ckpt, "encoder.mpk", d)?);
        self.opt =
            self.cfg
                .adam()
                .load_record(read_checkpoint_record::<B, _>(ckpt, "optim.mpk", d)?);
        Ok(())
    }

    fn train_epoch(&mut self, epoch: usize) -> Result<EncoderEpoch> {
        B::seed(
            &self.device,
            self.cfg.seed.wrapping_add(1_000 * epoch as u64),
        );
        let batches = self.sampler.batches(self.train.len(), epoch);
        let bar = epoch_bar(epoch, self.cfg.epochs, batches.len(), 0);
        let mut sum = 0.0;
        let rate = self.cfg.lr_at(epoch);
        for (k, idx) in batches.iter().enumerate() {
            let mut rng = self.sampler.batch_rng(epoch, k);
            let x = HostBatch::from_set(&self.train, idx, &Augmentation::UNIT, &mut rng)
                .to_device::<B>(&self.device)
                .images;
            let (loss, ..) = encoder_loss(&self.e, &self.g, x, self.latent_weight);
            sum += loss.clone().into_scalar().elem::<f64>() * idx.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &self.e);
            self.e = self.opt.step(rate, self.e.clone(), grads);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let (g, e) = (self.g.valid(), self.e.valid());
        let _m = mode::inference();
        let mut l1 = 0.0;
        for host in cfx_datasets::eval_batches(&self.test, 500, &Augmentation::UNIT) {
            let x = host.to_device::<B::InnerBackend>(&self.device).images;
            l1 += (g.decode(e.forward(x.clone())) - x)
                .abs()
                .mean_dim(1)
                .mean_dim(2)
                .mean_dim(3)
                .sum()
                .into_scalar()
                .elem::<f64>();
        }
        Ok(EncoderEpoch {
            epoch: epoch + 1,
            train_loss: sum / self.train.len() as f64,
            test_reconstruction_l1: l1 / self.test.len() as f64,
        })
    }

    fn describe(&self, e: &EncoderEpoch) -> String {
        format!(
            "train loss {:.4}, test |G(E(x)) − x| {:.4}",
            e.train_loss, e.test_reconstruction_l1
        )
    }

    fn after_epoch(&self, run: &RunDir) -> Result<()> {
        // Test images (top half) above their reconstructions.
        let (g, e) = (self.g.valid(), self.e.valid());
        let _m = mode::inference();
        let n = self.test.len().min(32);
        let idx: Vec<usize> = (0..n).collect();
        let mut rng = self.sampler.batch_rng(0, 0);
        let x = HostBatch::from_set(&self.test, &idx, &Augmentation::UNIT, &mut rng)
            .to_device::<B::InnerBackend>(&self.device)
            .images;
        let both = Tensor::cat(vec![x.clone(), g.decode(e.forward(x))], 0);
        save_grid(both, &run.path("reconstructions.png"))
    }

    fn finish(&self, run: &RunDir) -> Result<()> {
        write_model(run, "encoder.mpk", &self.e)?;
        write_model(run, "generator.mpk", &self.g)?;
        run.write_toml("model.toml", &GanRun::GanEncoder(self.cfg.model.clone()))
    }
}

pub struct EncoderTrainJob {
    pub cfg: EncoderTrainConfig,
    pub run_root: PathBuf,
    pub resume: bool,
}

impl BackendJob for EncoderTrainJob {
    type Output = EncoderEpoch;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        _backend: BackendKind,
    ) -> Result<EncoderEpoch> {
        let mut full = self.cfg.clone();
        full.train.model = match read_gan_run(&full.gan)? {
            GanRun::Dcgan(m) => m,
            GanRun::GanEncoder(_) => bail!(
                "{} is an encoder run; --gan takes a `train dcgan` run",
                full.gan.display()
            ),
        };
        require_run_dataset("--gan", &full.gan, full.train.dataset, "this encoder run")?;
        full.validate()?;
        let EncoderTrainConfig {
            gan,
            latent_weight,
            train: cfg,
        } = full;
        let run = RunDir::open(&self.run_root, self.resume)?;
        if !self.resume {
            run.write_toml("config.toml", &self.cfg)?;
        }
        B::seed(&device, cfg.seed);
        let g = load_generator::<B>(&cfg.model, &gan, &device)?.no_grad();
        let mut trainer = EncoderTrainer::<B> {
            latent_weight,
            e: cfg.model.init_encoder(&device),
            opt: cfg.adam(),
            train: cfg.load(Split::Train)?,
            test: cfg.load(Split::Test)?,
            sampler: EpochSampler {
                seed: cfg.seed,
                batch_size: cfg.batch_size,
                drop_last: false,
            },
            g,
            device,
            cfg,
        };
        let epochs = trainer.cfg.epochs;
        run_epochs(&mut trainer, &run, epochs, self.resume)
    }
}

/// The `model.toml` of a finished `train dcgan|gan-encoder` run.
pub fn read_gan_run(run: &Path) -> Result<GanRun> {
    crate::checkpoint::require_run_dir(run)?;
    read_toml(&run.join("model.toml")).with_context(|| {
        format!(
            "{} is not a finished DCGAN or GAN-encoder run (train one with `cargo xtask train dcgan|gan-encoder`)",
            run.display()
        )
    })
}

/// A record file of a finished run, with an error naming it.
pub(crate) fn read_model_file<B: Backend, R: burn::record::Record<B>>(
    run: &Path,
    file: &str,
    device: &B::Device,
) -> Result<R> {
    super::run::read_record(&run.join(file), device)
}

/// The generator of a DCGAN run, or the generator and encoder of an encoder run.
pub fn load_gan<B: Backend>(
    run: &Path,
    device: &B::Device,
) -> Result<(Generator<B>, Option<GanEncoder<B>>)> {
    let (cfg, with_encoder) = match read_gan_run(run)? {
        GanRun::Dcgan(c) => (c, false),
        GanRun::GanEncoder(c) => (c, true),
    };
    cfg.validate().map_err(anyhow::Error::msg)?;
    let generator = load_generator(&cfg, run, device)?;
    let encoder = match with_encoder {
        true => Some(load_encoder(&cfg, run, device)?),
        false => None,
    };
    Ok((generator, encoder))
}

/// `generator.mpk` of a run folder holding a DCGAN of architecture `cfg` (a DCGAN, encoder or
/// C3LT run).
pub(crate) fn load_generator<B: Backend>(
    cfg: &DcganConfig,
    run: &Path,
    device: &B::Device,
) -> Result<Generator<B>> {
    Ok(cfg
        .init_generator::<B>(device)
        .load_record(read_model_file(run, "generator.mpk", device)?))
}

/// `encoder.mpk` of a run folder holding the encoder of a DCGAN of architecture `cfg`.
pub(crate) fn load_encoder<B: Backend>(
    cfg: &DcganConfig,
    run: &Path,
    device: &B::Device,
) -> Result<GanEncoder<B>> {
    Ok(cfg
        .init_encoder::<B>(device)
        .load_record(read_model_file(run, "encoder.mpk", device)?))
}

/// The discriminator of a DCGAN run.
pub fn load_discriminator<B: Backend>(run: &Path, device: &B::Device) -> Result<Discriminator<B>> {
    match read_gan_run(run)? {
        GanRun::Dcgan(c) => Ok(c
            .init_discriminator::<B>(device)
            .load_record(read_model_file(run, "discriminator.mpk", device)?)),
        GanRun::GanEncoder(_) => bail!(
            "{} is an encoder run; the discriminator is in the `train dcgan` run",
            run.display()
        ),
    }
}

/// A GAN run as a [`LatentGenerator`]: with its encoder when the run has one.
pub fn load_gan_generator<B: Backend>(
    run: &Path,
    device: &B::Device,
) -> Result<Box<dyn LatentGenerator<B>>> {
    Ok(match load_gan::<B>(run, device)? {
        (generator, Some(encoder)) => Box::new(GanWithEncoder { generator, encoder }),
        (g, None) => Box::new(g),
    })
}
