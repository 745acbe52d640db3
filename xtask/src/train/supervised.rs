//! `cargo xtask train classifier|autoencoder`: the auxiliary models of the baselines and the
//! metrics (Paper 4, Tables 4 and 5), trained with Adam on unit-space images and checkpointed
//! after every epoch (`--resume` continues from the last one).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::{
    Classifier, CnnClassifier, CnnClassifierConfig, ConvAutoencoder, ConvAutoencoderConfig,
};
use cfx_datasets::{
    Augmentation, DatasetKind, EpochSampler, HostBatch, ImageSet, Selection, Split, eval_batches,
};
use cfx_flows::glow::GlowConfig;
use cfx_flows::realnvp::RealNvpConfig;
use cfx_generative::{ConvVae, ConvVaeConfig};
use cfx_linalg::LinalgBackend;
use serde::{Deserialize, Serialize};

use super::epochs::{EpochTrainer, read_checkpoint_record, record_bytes, run_epochs, write_model};
use super::parallel::Replicas;
use super::run::{RunDir, read_model_record};
use crate::backend::{BackendJob, BackendKind};
use crate::progress::epoch_bar;

/// Which model, with its architecture: the auxiliary models, and the flows RealNVP and Glow,
/// which train by the same loop (one model, one loss, Adam, a checkpoint per epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuxModel {
    Classifier(CnnClassifierConfig),
    Autoencoder(ConvAutoencoderConfig),
    RealNvp(RealNvpConfig),
    Glow(GlowConfig),
    Vae(ConvVaeConfig),
}

/// Training settings; the defaults per kind are Paper 4's Tables 4 and 5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisedTrainConfig {
    pub dataset: DatasetKind,
    pub data_dir: Option<PathBuf>,
    pub model: AuxModel,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Keras's Adam ε.
    pub epsilon: f32,
    /// Adam's (coupled, L2) weight decay; the flows of seed 002 use 5e-4.
    #[serde(default)]
    pub weight_decay: Option<f64>,
    /// Seeds the weights and the batch order (the oracle differs from the classifier only here).
    pub seed: u64,
    /// Train only on images of this class (the per-class autoencoders of IM1).
    pub only_class: Option<usize>,
    /// Train on the dataset's second label (FakeMNIST's original digit: LVS's digit oracle).
    #[serde(default)]
    pub second_label: bool,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
}

impl SupervisedTrainConfig {
    pub fn classifier(dataset: DatasetKind) -> Self {
        Self {
            dataset,
            data_dir: None,
            model: AuxModel::Classifier(CnnClassifierConfig::default()),
            epochs: 10,
            batch_size: 64,
            lr: 1e-3,
            epsilon: 1e-7,
            weight_decay: None,
            seed: 1,
            only_class: None,
            second_label: false,
            train_limit: None,
            test_limit: None,
        }
    }

    pub fn autoencoder(dataset: DatasetKind) -> Self {
        Self {
            model: AuxModel::Autoencoder(ConvAutoencoderConfig::default()),
            epochs: 50,
            batch_size: 128,
            ..Self::classifier(dataset)
        }
    }

    /// A flow with seed 002's training settings (Adam 1e-4, weight decay 5e-4, PyTorch's ε).
    pub fn flow(dataset: DatasetKind, model: AuxModel) -> Self {
        Self {
            model,
            epochs: 10,
            batch_size: 64,
            lr: 1e-4,
            epsilon: 1e-8,
            weight_decay: Some(5e-4),
            ..Self::classifier(dataset)
        }
    }

    /// The convolutional VAE with seed 002's settings (App. C.10: Adam 5e-3 without weight
    /// decay, 80 epochs).
    pub fn vae(dataset: DatasetKind) -> Self {
        Self {
            model: AuxModel::Vae(ConvVaeConfig::default()),
            epochs: 80,
            batch_size: 64,
            lr: 5e-3,
            epsilon: 1e-8,
            ..Self::classifier(dataset)
        }
    }

    /// The defaults of a model's kind.
    pub fn for_model(dataset: DatasetKind, model: AuxModel) -> Self {
        match model {
            AuxModel::Classifier(_) => Self {
                model,
                ..Self::classifier(dataset)
            },
            AuxModel::Autoencoder(_) => Self {
                model,
                ..Self::autoencoder(dataset)
            },
            AuxModel::Vae(_) => Self {
                model,
                ..Self::vae(dataset)
            },
            AuxModel::RealNvp(_) | AuxModel::Glow(_) => Self::flow(dataset, model),
        }
    }

    pub fn validate(&self) -> Result<()> {
        match &self.model {
            AuxModel::Vae(c) => c.validate(),
            AuxModel::Classifier(c) => c.validate(),
            AuxModel::Autoencoder(c) => c.validate(),
            AuxModel::RealNvp(c) => c.validate(),
            AuxModel::Glow(c) => c.validate(),
        }
        .map_err(|e| anyhow::anyhow!("model: {e}"))?;
        if self.batch_size == 0 || self.lr.is_nan() || self.lr <= 0.0 {
            bail!("batch_size and lr must be positive");
        }
        Ok(())
    }

    /// Swaps in the narrow architecture of the same kind (tests and smoke runs); a classifier
    /// keeps its layers (`--arch`) at the narrow widths. Flows are left as they are: `train
    /// realnvp|glow` builds their narrow version itself, under the architecture flags
    /// (`FlowArgs::model`).
    pub fn make_small(&mut self) {
        self.model = match &self.model {
            AuxModel::Classifier(c) => AuxModel::Classifier(c.clone().narrowed()),
            AuxModel::Autoencoder(_) => AuxModel::Autoencoder(ConvAutoencoderConfig::tiny()),
            AuxModel::Vae(_) => AuxModel::Vae(ConvVaeConfig::tiny()),
            flow @ (AuxModel::RealNvp(_) | AuxModel::Glow(_)) => flow.clone(),
        };
    }

    /// Trains the model in `range` (its input offset; the scale stays 1). Flows model unit-range
    /// pixels themselves (RealNVP through its logit transform), so they ignore it.
    pub fn set_range(&mut self, range: cfx_classifiers::DataRange) {
        match &mut self.model {
            AuxModel::Classifier(c) => c.input_offset = range.offset(),
            AuxModel::Autoencoder(c) => c.input_offset = range.offset(),
            AuxModel::RealNvp(_) | AuxModel::Glow(_) | AuxModel::Vae(_) => {}
        }
    }

    fn input_shape(&self) -> [usize; 3] {
        match &self.model {
            AuxModel::Classifier(c) => c.input_shape,
            AuxModel::Autoencoder(c) => c.input_shape,
            AuxModel::RealNvp(c) => c.input_shape,
            AuxModel::Glow(c) => c.input_shape,
            AuxModel::Vae(c) => c.image_shape,
        }
    }

    fn load(&self, split: Split, limit: Option<usize>) -> Result<ImageSet> {
        let selection = Selection::new(self.only_class.as_slice(), limit);
        let mut set = self.dataset.load_shaped(
            split,
            self.data_dir.as_deref(),
            Some(self.input_shape()),
            selection.decode_limit(),
        )?;
        // The filter reads the label trained on, so the swap comes first.
        if self.second_label {
            set = set.swap_labels()?;
        }
        let set = selection.apply(set).context("--only-class")?;
        if let AuxModel::Classifier(c) = &self.model
            && set.num_classes() > c.n_classes
        {
            bail!(
                "{} has {} classes but the classifier has {} outputs",
                set.name,
                set.num_classes(),
                c.n_classes
            );
        }
        Ok(set)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisedEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub test_loss: f64,
    /// Classifiers only.
    pub test_accuracy: Option<f64>,
}

pub struct SupervisedTrainJob {
    pub cfg: SupervisedTrainConfig,
    pub run_root: PathBuf,
    pub resume: bool,
    /// Data-parallel replicas ([`super::parallel`]); 1 trains on the main device alone.
    pub replicas: usize,
}

impl BackendJob for SupervisedTrainJob {
    type Output = SupervisedEpoch;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        _backend: BackendKind,
    ) -> Result<SupervisedEpoch> {
        B::seed(&device, self.cfg.seed);
        match self.cfg.model.clone() {
            AuxModel::Classifier(c) => train_loop(self, c.init::<B>(&device), &device),
            AuxModel::Autoencoder(c) => train_loop(self, c.init::<B>(&device), &device),
            AuxModel::RealNvp(c) => train_loop(self, c.init::<B>(&device), &device),
            AuxModel::Glow(c) => train_loop(self, c.init::<B>(&device), &device),
            AuxModel::Vae(c) => train_loop(self, c.init::<B>(&device), &device),
        }
    }
}

/// What differs between the kinds of model: the loss and the test metric.
pub(crate) trait Objective<B: AutodiffBackend>: AutodiffModule<B> + Clone {
    fn train_loss(&self, x: Tensor<B, 4>, y: Tensor<B, 1, Int>) -> Tensor<B, 1>;

    /// Data-dependent initialisation from the first training batch of a new run.
    fn prepare(self, _x: Tensor<B, 4>) -> Self {
        self
    }

    /// Unit-space samples for the per-epoch `samples.png`, for generative models.
    fn samples(
        _model: &Self::InnerModule,
        _n: usize,
        _device: &B::Device,
    ) -> Option<Tensor<B::InnerBackend, 4>> {
        None
    }

    /// `(summed loss, correct)` on an inner-backend batch.
    fn eval_sums(
        model: &Self::InnerModule,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
    ) -> (f64, Option<f64>);
}

impl<B: AutodiffBackend> Objective<B> for CnnClassifier<B> {
    fn train_loss(&self, x: Tensor<B, 4>, y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
        let logits = self.forward(x, true);
        CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits, y)
    }

    fn eval_sums(
        model: &CnnClassifier<B::InnerBackend>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
    ) -> (f64, Option<f64>) {
        let n = x.dims()[0] as f64;
        let logits = model.logits(x);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), y.clone())
            .into_scalar()
            .elem::<f64>();
        let correct = logits
            .argmax(1)
            .squeeze_dim::<1>(1)
            .equal(y)
            .int()
            .sum()
            .into_scalar()
            .elem::<f64>();
        (loss * n, Some(correct))
    }
}

/// The VAE's loss is its negative ELBO per image (summed squared error plus KL); the test loss
/// draws one posterior sample per image like the training loss.
impl<B: AutodiffBackend> Objective<B> for ConvVae<B> {
    fn train_loss(&self, x: Tensor<B, 4>, _y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
        self.loss(x).total
    }

    fn samples(
        model: &ConvVae<B::InnerBackend>,
        n: usize,
        device: &B::Device,
    ) -> Option<Tensor<B::InnerBackend, 4>> {
        use cfx_generative::LatentGenerator;
        let _m = cfx_flows::nn::mode::inference();
        Some(model.decode(cfx_generative::sample_latents(
            n,
            model.latent_dim(),
            device,
        )))
    }

    fn eval_sums(
        model: &ConvVae<B::InnerBackend>,
        x: Tensor<B::InnerBackend, 4>,
        _y: Tensor<B::InnerBackend, 1, Int>,
    ) -> (f64, Option<f64>) {
        let n = x.dims()[0] as f64;
        let _m = cfx_flows::nn::mode::inference();
        (model.loss(x).total.into_scalar().elem::<f64>() * n, None)
    }
}

impl<B: AutodiffBackend> Objective<B> for ConvAutoencoder<B> {
    fn train_loss(&self, x: Tensor<B, 4>, _y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
        self.reconstruction_error(x).mean()
    }

    fn eval_sums(
        model: &ConvAutoencoder<B::InnerBackend>,
        x: Tensor<B::InnerBackend, 4>,
        _y: Tensor<B::InnerBackend, 1, Int>,
    ) -> (f64, Option<f64>) {
        (
            model
                .reconstruction_error(x)
                .sum()
                .into_scalar()
                .elem::<f64>(),
            None,
        )
    }
}

/// One supervised model in training; the epoch loop, checkpoints and resuming are
/// [`run_epochs`]'s.
struct SupervisedTrainer<B: AutodiffBackend, M: Objective<B>> {
    cfg: SupervisedTrainConfig,
    device: B::Device,
    model: M,
    optim: OptimizerAdaptor<Adam, M, B>,
    replicas: Replicas<B>,
    sampler: EpochSampler,
    train: ImageSet,
    test: ImageSet,
}

impl<B: AutodiffBackend, M: Objective<B>> SupervisedTrainer<B, M> {
    fn adam(cfg: &SupervisedTrainConfig) -> OptimizerAdaptor<Adam, M, B> {
        AdamConfig::new()
            .with_epsilon(cfg.epsilon)
            .with_weight_decay(
                cfg.weight_decay
                    .map(|w| burn::optim::decay::WeightDecayConfig::new(w as f32)),
            )
            .init::<B, M>()
    }
}

impl<B: AutodiffBackend, M: Objective<B>> EpochTrainer for SupervisedTrainer<B, M> {
    type Epoch = SupervisedEpoch;

    fn checkpoint(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        Ok(vec![
            (
                "model.mpk",
                record_bytes::<B, _>(self.model.clone().into_record())?,
            ),
            ("optim.mpk", record_bytes::<B, _>(self.optim.to_record())?),
        ])
    }

    fn restore(&mut self, ckpt: &Path) -> Result<()> {
        let d = &self.device;
        let model = read_checkpoint_record::<B, _>(ckpt, "model.mpk", d)?;
        self.model = self.model.clone().load_record(model);
        let optim = read_checkpoint_record::<B, _>(ckpt, "optim.mpk", d)?;
        self.optim = Self::adam(&self.cfg).load_record(optim);
        Ok(())
    }

    fn train_epoch(&mut self, epoch: usize) -> Result<SupervisedEpoch> {
        let batches = self.sampler.batches(self.train.len(), epoch);
        let bar = epoch_bar(epoch, self.cfg.epochs, batches.len(), 0);
        let mut loss_sum = 0.0;
        for (k, idx) in batches.iter().enumerate() {
            let mut rng = self.sampler.batch_rng(epoch, k);
            let shards = HostBatch::from_set(&self.train, idx, &Augmentation::UNIT, &mut rng)
                .into_shards(self.replicas.count());
            let (grads, losses) = self
                .replicas
                .gradients(&self.model, shards, |m, shard, dev| {
                    let share = shard.len() as f64 / idx.len() as f64;
                    let b = shard.to_device::<B>(dev);
                    let loss = m.train_loss(b.images, b.labels).mul_scalar(share);
                    (loss.clone(), loss.into_scalar().elem::<f64>())
                });
            loss_sum += losses.iter().sum::<f64>() * idx.len() as f64;
            self.model = self.optim.step(self.cfg.lr, self.model.clone(), grads);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let (test_loss, test_accuracy) =
            evaluate::<B, M>(&self.model.valid(), &self.test, &self.device)?;
        Ok(SupervisedEpoch {
            epoch: epoch + 1,
            train_loss: loss_sum / self.train.len() as f64,
            test_loss,
            test_accuracy,
        })
    }

    fn describe(&self, e: &SupervisedEpoch) -> String {
        format!(
            "train {l} {:.5}, test {l} {:.5}{}",
            e.train_loss,
            e.test_loss,
            e.test_accuracy
                .map(|a| format!(", test accuracy {:.2}%", 100.0 * a))
                .unwrap_or_default(),
            l = self.cfg.model.loss_name()
        )
    }

    fn after_epoch(&self, run: &RunDir) -> Result<()> {
        if let Some(s) = M::samples(&self.model.valid(), 64, &self.device) {
            super::gan::save_grid(s, &run.path("samples.png"))?;
        }
        Ok(())
    }

    fn finish(&self, run: &RunDir) -> Result<()> {
        write_model(run, "model.mpk", &self.model)?;
        run.write_toml("model.toml", &self.cfg.model)
    }
}

fn train_loop<B: AutodiffBackend, M: Objective<B>>(
    job: SupervisedTrainJob,
    mut model: M,
    device: &B::Device,
) -> Result<SupervisedEpoch> {
    let cfg = job.cfg;
    let replicas = Replicas::<B>::new(device, job.replicas)?;
    let run = RunDir::open(&job.run_root, job.resume)?;
    let train = cfg.load(Split::Train, cfg.train_limit)?;
    let test = cfg.load(Split::Test, cfg.test_limit)?;
    let sampler = EpochSampler {
        seed: cfg.seed,
        batch_size: cfg.batch_size,
        drop_last: false,
    };
    if !job.resume {
        run.write_toml("config.toml", &cfg)?;
        if let Some(first) = sampler.batches(train.len(), 0).first() {
            let mut rng = sampler.batch_rng(0, 0);
            let b = HostBatch::from_set(&train, first, &Augmentation::UNIT, &mut rng);
            model = model.prepare(b.to_device::<B>(device).images);
        }
    }
    let epochs = cfg.epochs;
    let mut trainer = SupervisedTrainer {
        optim: SupervisedTrainer::<B, M>::adam(&cfg),
        cfg,
        device: device.clone(),
        model,
        replicas,
        sampler,
        train,
        test,
    };
    let last = run_epochs(&mut trainer, &run, epochs, job.resume)?;
    run.write_json("test.json", &last)?;
    Ok(last)
}

fn evaluate<B: AutodiffBackend, M: Objective<B>>(
    model: &M::InnerModule,
    test: &ImageSet,
    device: &B::Device,
) -> Result<(f64, Option<f64>)> {
    let (mut loss, mut correct) = (0.0, None::<f64>);
    for host in eval_batches(test, 500, &Augmentation::UNIT) {
        let b = host.to_device::<B::InnerBackend>(device);
        let (l, c) = M::eval_sums(model, b.images, b.labels);
        loss += l;
        if let Some(c) = c {
            *correct.get_or_insert(0.0) += c;
        }
    }
    let n = test.len().max(1) as f64;
    Ok((loss / n, correct.map(|c| c / n)))
}

impl AuxModel {
    /// What the loss is called in logs and summaries.
    pub fn loss_name(&self) -> &'static str {
        match self {
            Self::RealNvp(_) | Self::Glow(_) => "bits/dim",
            Self::Vae(_) => "-ELBO",
            Self::Classifier(_) | Self::Autoencoder(_) => "loss",
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Classifier(_) => "classifier",
            Self::Autoencoder(_) => "autoencoder",
            Self::RealNvp(_) => "realnvp",
            Self::Glow(_) => "glow",
            Self::Vae(_) => "vae",
        }
    }
}

/// The `kind` tag of a run's model.toml (`"vae"`, `"dcgan"`, `"c3lt"`, …); `None` for an
/// IB-INN run, whose model.toml is its bare `IbInnConfig`, or a folder without one.
pub(crate) fn run_kind(run: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run.join("model.toml")).ok()?;
    let table = text.parse::<toml::Table>().ok()?;
    table.get("kind")?.as_str().map(str::to_owned)
}

/// Whether `run` was trained by this loop: its model.toml carries the `kind` tag of
/// [`AuxModel`].
pub(crate) fn is_tagged_run(run: &Path) -> bool {
    run_kind(run).is_some()
}

pub fn load_vae<B: Backend>(run: &Path, device: &B::Device) -> Result<ConvVae<B>> {
    match read_aux(run)? {
        AuxModel::Vae(c) => {
            c.validate().map_err(anyhow::Error::msg)?;
            Ok(c.init::<B>(device)
                .load_record(read_model_record(run, device)?))
        }
        other => bail!("{} holds a {}, not a VAE", run.display(), other.kind()),
    }
}

/// Reads `model.toml` of a finished run of this loop.
pub(crate) fn read_aux(run: &Path) -> Result<AuxModel> {
    crate::checkpoint::require_run_dir(run)?;
    super::run::read_toml(&run.join("model.toml")).with_context(|| {
        format!(
            "{} is not a finished classifier, autoencoder or flow run (train one with `cargo xtask train classifier|autoencoder|realnvp|glow`)",
            run.display()
        )
    })
}

pub fn load_classifier<B: Backend>(run: &Path, device: &B::Device) -> Result<CnnClassifier<B>> {
    match read_aux(run)? {
        AuxModel::Classifier(c) => {
            c.validate().map_err(anyhow::Error::msg)?;
            Ok(c.init::<B>(device)
                .load_record(read_model_record(run, device)?))
        }
        other => bail!(
            "{} holds a {}, not a classifier",
            run.display(),
            other.kind()
        ),
    }
}

pub fn load_autoencoder<B: Backend>(run: &Path, device: &B::Device) -> Result<ConvAutoencoder<B>> {
    match read_aux(run)? {
        AuxModel::Autoencoder(c) => {
            c.validate().map_err(anyhow::Error::msg)?;
            Ok(c.init::<B>(device)
                .load_record(read_model_record(run, device)?))
        }
        other => bail!(
            "{} holds a {}, not an autoencoder",
            run.display(),
            other.kind()
        ),
    }
}
