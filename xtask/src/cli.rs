//! Command-line definitions (`cargo xtask --help`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use cfx_datasets::DatasetKind;
use cfx_flows::ibinn::IbInnConfig;
use clap::{Args, Parser, Subcommand};

use crate::backend::BackendKind;
use crate::train::ibinn::{IbInnTrainConfig, TrainControl};
use crate::train::run::read_toml;

/// Copies the flags every `train` subcommand shares ([`AuxArgs`]) onto a new run's config; the
/// configs of the supervised, GAN and C3LT trainers name these fields alike.
macro_rules! apply_common_flags {
    ($args:expr, $cfg:expr) => {{
        let (a, cfg) = (&$args, &mut $cfg);
        cfg.data_dir = a.data_dir.clone();
        if let Some(v) = a.epochs {
            cfg.epochs = v;
        }
        if let Some(v) = a.batch_size {
            cfg.batch_size = v;
        }
        if let Some(v) = a.lr {
            cfg.lr = v;
        }
        if let Some(v) = a.seed {
            cfg.seed = v;
        }
        cfg.train_limit = a.train_limit;
        cfg.test_limit = a.test_limit;
    }};
}

/// A flag as `--resume` checks it against the run's saved config.toml: repeating a saved
/// setting is fine (a command line repeated with `--resume` added resumes, unless it has a
/// flag of the [`Given::any`] kind), a different value is a change and refused.
#[derive(Clone)]
struct Given<'a> {
    flag: &'a str,
    given: bool,
    /// The dotted key the flag sets in config.toml and the value it would set; `None` for a flag
    /// the file keeps no key for (`--small`, `--config`: starting points, not settings), which
    /// is refused whenever given.
    sets: Option<(&'a str, toml::Value)>,
}

impl<'a> Given<'a> {
    /// `flag V`, which sets `key` to V.
    fn value<T: serde::Serialize>(flag: &'a str, key: &'a str, v: Option<T>) -> Self {
        let value = v.map(|v| toml::Value::try_from(v).ok());
        Self {
            flag,
            given: value.is_some(),
            sets: value.flatten().map(|v| (key, v)),
        }
    }

    /// A switch that sets `key` to `to` when given (`--no-bn-calibration`:
    /// `calibrate_batch_norm = false`).
    fn switch(flag: &'a str, key: &'a str, given: bool, to: bool) -> Self {
        Self {
            flag,
            given,
            sets: Some((key, toml::Value::Boolean(to))),
        }
    }

    /// A flag that config.toml cannot tell apart from another value: refused whenever given.
    fn any(flag: &'a str, given: bool) -> Self {
        Self {
            flag,
            given,
            sets: None,
        }
    }

    /// The saved value it would replace, `None` where the file has none.
    fn saved<'t>(&self, saved: &'t toml::Table) -> Option<&'t toml::Value> {
        let (key, _) = self.sets.as_ref()?;
        let mut parts = key.split('.');
        let first = saved.get(parts.next()?)?;
        parts.try_fold(first, |v, k| v.get(k))
    }

    fn changes(&self, saved: &toml::Table) -> bool {
        self.given
            && match &self.sets {
                Some((_, v)) => self.saved(saved) != Some(v),
                None => true,
            }
    }
}

/// `--resume` keeps the run's config.toml (`saved`): a flag that would change it is an error
/// naming the flag and the saved value, not silently ignored. `may_change` lists the flags
/// that trainer does take on resume, for the message.
fn refuse_changes_on_resume(saved: &toml::Table, flags: &[Given], may_change: &str) -> Result<()> {
    let changed: Vec<&Given> = flags.iter().filter(|g| g.changes(saved)).collect();
    if changed.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = changed.iter().map(|g| g.flag).collect();
    let kept: Vec<String> = changed
        .iter()
        .filter_map(|g| Some(format!("{} = {}", g.sets.as_ref()?.0, g.saved(saved)?)))
        .collect();
    let kept = if kept.is_empty() {
        String::new()
    } else {
        format!(", which has {}", kept.join(", "))
    };
    bail!(
        "{} cannot change when resuming (the run keeps its config.toml{kept}); only {may_change} can",
        names.join(", ")
    );
}

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "Counterfactual explanations from generative models: train, explain, evaluate, bench",
    version
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model into runs/<name>/ (resumable).
    #[command(subcommand)]
    Train(TrainCommand),
    /// Counterfactuals for chosen inputs: PNG figures plus explanations.json.
    Explain(ExplainArgs),
    /// Score counterfactual methods on every metric (tables, charts, gallery).
    Evaluate(EvaluateArgs),
    /// Measure speed (numbers for docs/results.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Singular values of a flow's generator Jacobian at test images (tangent-space check).
    Tangent(TangentArgs),
    /// Where a trained IB-INN's L_x comes from: each stage's log-determinant on clean test
    /// images against the most its soft-clamped couplings can reach.
    LogDet(LogDetArgs),
    /// The authors' trained IB-INN (a safetensors export of their checkpoint,
    /// bench/reference/export_ibinn.py) as a run of ours, scored on the test set; with the
    /// exporter's check batch, how far our model's outputs are from theirs.
    ImportIbinn(ImportIbinnArgs),
    /// Where ECINN's inverse pass leaves the range of a trained IB-INN's blocks: each block's
    /// input on the way back from the α1 latents against its largest input on the way forward.
    InverseTrace(InverseTraceArgs),
    /// How closely a GAN run's generator reproduces test images: through the run's encoder, and
    /// by optimising z (find_z) from a random start and from the encoder's guess. invert.png has
    /// eight inputs on top and below them one row per line of the printed table, in its order.
    Invert(InvertArgs),
    /// The helix toy of seed 002: latent- vs pixel-space ascent, distance to the manifold, and
    /// the inverse metric's spectrum.
    Helix(HelixArgs),
}

#[derive(Args, Debug, Clone)]
pub struct LogDetArgs {
    /// A finished `train ib-inn` run: runs/<name>.
    #[arg(long)]
    pub model: PathBuf,
    /// The first N test images [default: those the run was tested on].
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 250)]
    pub batch_size: usize,
    #[command(flatten)]
    pub backend: BackendArg,
}

impl LogDetArgs {
    pub fn job(&self) -> crate::logdet::LogDetJob {
        crate::logdet::LogDetJob {
            model: self.model.clone(),
            limit: self.limit,
            batch_size: self.batch_size,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ImportIbinnArgs {
    /// The safetensors file `bench/reference/export_ibinn.py` wrote.
    #[arg(long)]
    pub weights: PathBuf,
    /// Run name: the model goes to <runs-dir>/<name>.
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// A `train ib-inn` config TOML whose `model` table is the checkpoint's architecture
    /// [default: the paper's MNIST architecture].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The test set to score it on: mnist, fake-mnist or fashion-mnist.
    #[arg(long, value_parser = parse_dataset, default_value = "mnist")]
    pub dataset: DatasetKind,
    #[arg(long)]
    pub test_limit: Option<usize>,
    #[command(flatten)]
    pub backend: BackendArg,
}

impl ImportIbinnArgs {
    pub fn job(&self) -> crate::import::ImportJob {
        crate::import::ImportJob {
            weights: self.weights.clone(),
            run: self.runs_dir.join(&self.name),
            config: self.config.clone(),
            dataset: self.dataset,
            test_limit: self.test_limit,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct InvertArgs {
    /// A finished `train dcgan` or `train gan-encoder` run: runs/<name>.
    #[arg(long)]
    pub gan: PathBuf,
    /// Test images of these classes, e.g. 4,9 [default: the classes the run trained on].
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<usize>,
    /// The first N of them.
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Adam steps of each optimisation of z (run to the end: no tolerance stops them).
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Adam's step size on z (find_z's default).
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Output folder [default: <gan>/invert].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArg,
}

impl InvertArgs {
    pub fn job(&self) -> crate::invert::InvertJob {
        crate::invert::InvertJob {
            gan: self.gan.clone(),
            classes: self.classes.clone(),
            count: self.count,
            batch_size: self.batch_size,
            steps: self.steps,
            lr: self.lr,
            out: self.out.clone().unwrap_or_else(|| self.gan.join("invert")),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct InverseTraceArgs {
    /// A finished `train ib-inn` run: runs/<name>.
    #[arg(long)]
    pub model: PathBuf,
    /// The first N test images, each with every other class as target (α1, empirical centres).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Test images per batch (each makes K − 1 inverse passes).
    #[arg(long, default_value_t = 25)]
    pub batch_size: usize,
    /// A block's input is out of range beyond this multiple of its forward envelope.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    /// A counterfactual has diverged beyond this mean |x̂ − x| per pixel (unit scale). 0.1 suits
    /// FakeMNIST, whose counterfactuals change one pixel; a changed MNIST digit moves 0.1–0.2
    /// per pixel by itself, so use ~0.3 there (docs/results.md).
    #[arg(long, default_value_t = 0.1)]
    pub diverged_change: f64,
    #[command(flatten)]
    pub backend: BackendArg,
}

impl InverseTraceArgs {
    pub fn job(&self) -> crate::inverse_trace::InverseTraceJob {
        crate::inverse_trace::InverseTraceJob {
            model: self.model.clone(),
            limit: self.limit,
            batch_size: self.batch_size,
            factor: self.factor,
            diverged_change: self.diverged_change,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct HelixArgs {
    /// Adam steps of the flow, each on a fresh batch. Seed 002 trains 5 000 steps at 1e-4; here
    /// that leaves the flow's second normal direction uncontracted (docs/results.md), so the
    /// default is longer and faster.
    #[arg(long, default_value_t = 10000)]
    pub flow_steps: usize,
    /// The flow's learning rate (seed 002: 1e-4).
    #[arg(long, default_value_t = 1e-3)]
    pub flow_lr: f64,
    /// Helix points per training batch (seed 002: 500).
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 2000)]
    pub classifier_steps: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub classifier_lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train both models again even if the output folder holds them.
    #[arg(long)]
    pub retrain: bool,
    /// Ascents per space (seed 002: 1 000).
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    /// Target probability each ascent must reach (seed 002: 0.9).
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f64,
    #[arg(long, default_value_t = 5000)]
    pub max_steps: usize,
    /// Adam's learning rate in the ascent (seed 002's MNIST value).
    #[arg(long, default_value_t = 5e-2)]
    pub ascent_lr: f64,
    /// Helix points at which the inverse metric's eigenvalues are averaged.
    #[arg(long, default_value_t = 100)]
    pub spectrum_points: usize,
    #[arg(long, default_value = "runs/helix")]
    pub out: PathBuf,
    #[command(flatten)]
    pub backend: BackendArg,
}

impl HelixArgs {
    pub fn job(&self) -> crate::helix::HelixJob {
        crate::helix::HelixJob {
            training: crate::helix::HelixTraining {
                flow_steps: self.flow_steps,
                flow_lr: self.flow_lr,
                batch_size: self.batch_size,
                classifier_steps: self.classifier_steps,
                classifier_lr: self.classifier_lr,
                seed: self.seed,
            },
            retrain: self.retrain,
            runs: self.runs,
            threshold: self.threshold,
            max_steps: self.max_steps,
            ascent_lr: self.ascent_lr,
            spectrum_points: self.spectrum_points,
            out: self.out.clone(),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct TangentArgs {
    /// The flow: runs/<name> of `train ib-inn`.
    #[arg(long)]
    pub flow: PathBuf,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The first N test images.
    #[arg(long, default_value_t = 20)]
    pub count: usize,
    /// Copies of z per backward pass (memory against speed).
    #[arg(long, default_value_t = 256)]
    pub rows: usize,
    /// Output folder [default: <flow>/tangent].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArg,
}

impl TangentArgs {
    pub fn job(&self) -> crate::tangent::TangentJob {
        crate::tangent::TangentJob {
            flow: self.flow.clone(),
            data_dir: self.data_dir.clone(),
            count: self.count,
            rows: self.rows,
            out: self
                .out
                .clone()
                .unwrap_or_else(|| self.flow.join("tangent")),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct EvaluateArgs {
    /// Methods to run and score: ecinn, gb, gl, diffeo (ascent in the --ibinn flow's latent
    /// space, explaining the suite's CNN), pixel.
    #[arg(long, value_delimiter = ',', default_value = "ecinn,gb,gl")]
    pub methods: Vec<crate::explain::Method>,
    /// The evaluation models (`cargo xtask train eval-suite`); its dataset and range are used.
    #[arg(long)]
    pub suite: PathBuf,
    /// The IB-INN run that ECINN explains (`cargo xtask train ib-inn`).
    #[arg(long)]
    pub ibinn: Option<PathBuf>,
    /// What diffeo ascends in: a flow (`train realnvp|glow|ib-inn`), a VAE or a GAN
    /// (`train vae|dcgan|gan-encoder`) [default: --ibinn].
    #[arg(long, visible_alias = "generator")]
    pub flow: Option<PathBuf>,
    /// C3LT's maps (`train c3lt`); its class pair becomes --pair.
    #[arg(long)]
    pub c3lt: Option<PathBuf>,
    /// Only test images of these two classes, each sent to the other (C3LT's protocol), e.g. 4,9.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub pair: Vec<usize>,
    /// With --pair c,c2: only test images of c, each sent to c2 (seed 002's 4→9, C3LT's query
    /// direction). As with --pair, one the explained model already calls c2 is sent to c.
    #[arg(long)]
    pub one_way: bool,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Evaluate on the first N test images.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// Run GB, GL, diffeo and pixel on only the first N of them (seconds per image on a CPU);
    /// the other methods also get a row scored on just those N.
    #[arg(long)]
    pub slow_limit: Option<usize>,
    /// Seeds the random targets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// GB settings as TOML (fields of GbConfig).
    #[arg(long)]
    pub gb_config: Option<PathBuf>,
    /// GL settings as TOML (fields of GlConfig).
    #[arg(long)]
    pub gl_config: Option<PathBuf>,
    /// The class GB and GL must reach: `other`, any class but the predicted one (alibi's
    /// default, which Paper 4 ran; the class reached is then the target the metrics use), or
    /// `given`, the random target ECINN gets too [default: other; with --pair, given].
    /// A `target_class` in --gb-config/--gl-config must agree with it.
    #[arg(long)]
    pub baseline_target: Option<cfx_counterfactual::TargetClass>,
    /// diffeo settings as TOML (fields of DiffeoConfig); pixel's too unless --pixel-config.
    #[arg(long)]
    pub diffeo_config: Option<PathBuf>,
    /// pixel settings as TOML (fields of DiffeoConfig), so that one run can give the two
    /// ascents different budgets (e.g. more steps for pixel at its smaller rate).
    #[arg(long)]
    pub pixel_config: Option<PathBuf>,
    /// ECINN (and ECINNh): `raw` returns and scores the inverse pass as the seeds define x̂;
    /// `image` makes it an 8-bit image first (clamped to [0, 1], rounded to the 256 grey
    /// levels), as the authors' code stores counterfactuals. The PNG figures are always 8-bit.
    #[arg(long, default_value = "raw")]
    pub pixels: cfx_counterfactual::EcinnPixels,
    /// ECINN: which α to decode, as `explain --alpha` takes it: alpha1 (0.8 + α0/2, Paper 4's),
    /// alpha0, bmvc, bmvc:T or a number. ECINNh's heatmaps keep Paper 4's α1.
    #[arg(long, default_value = "alpha1")]
    pub alpha: String,
    /// COUT's insertion steps T.
    #[arg(long, default_value_t = 20)]
    pub cout_steps: usize,
    /// Neighbours of the nearest-neighbour target rate (seed 002 uses 10).
    #[arg(long, default_value_t = 10)]
    pub knn: usize,
    /// Inputs shown in gallery.png (0: none).
    #[arg(long, default_value_t = 12)]
    pub gallery: usize,
    /// Ignore cached counterfactuals.
    #[arg(long)]
    pub regenerate: bool,
    /// Also score heatmap methods by deletion and insertion, on the IB-INN and the suite's CNN:
    /// `--heatmaps` alone for all (ecinnh, saliency, intgrad, gradshap, deeplift, deepliftshap)
    /// or a list.
    #[arg(long, value_enum, value_delimiter = ',', num_args = 0..)]
    pub heatmaps: Option<Vec<crate::heatmaps::HeatmapMethod>>,
    /// Heatmaps on the first N test images.
    #[arg(long, default_value_t = 100)]
    pub heatmap_limit: usize,
    /// GradSHAP / DeepLiftSHAP: this many random training images as baselines.
    #[arg(long, default_value_t = 16)]
    pub shap_baselines: usize,
    /// Output folder [default: <suite>/evaluation].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArg,
}

impl EvaluateArgs {
    pub fn job(&self) -> Result<crate::evaluate::EvaluateJob> {
        let pair = match self.pair[..] {
            [] => None,
            [a, b] if a != b => Some([a, b]),
            _ => bail!(
                "--pair takes two different classes, e.g. --pair 4,9; got {:?}",
                self.pair
            ),
        };
        Ok(crate::evaluate::EvaluateJob {
            methods: self.methods.clone(),
            ibinn: self.ibinn.clone(),
            flow: self.flow.clone(),
            c3lt: self.c3lt.clone(),
            pair,
            one_way: self.one_way,
            suite: self.suite.clone(),
            data_dir: self.data_dir.clone(),
            limit: self.limit,
            slow_limit: self.slow_limit,
            seed: self.seed,
            batch_size: self.batch_size,
            gb_config: self.gb_config.clone(),
            gl_config: self.gl_config.clone(),
            baseline_target: self.baseline_target,
            diffeo_config: self.diffeo_config.clone(),
            pixel_config: self.pixel_config.clone(),
            pixels: self.pixels,
            alpha: parse_alpha(&self.alpha)?,
            cout_steps: self.cout_steps,
            knn: self.knn,
            gallery: self.gallery,
            regenerate: self.regenerate,
            heatmaps: match &self.heatmaps {
                None => vec![],
                Some(list) if list.is_empty() => crate::heatmaps::HeatmapMethod::ALL.to_vec(),
                Some(list) => list.clone(),
            },
            heatmap_limit: self.heatmap_limit.max(1),
            shap_baselines: self.shap_baselines,
            out: self
                .out
                .clone()
                .unwrap_or_else(|| self.suite.join("evaluation")),
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum TrainCommand {
    /// IB-INN, the generative classifier that ECINN explains.
    IbInn(IbInnArgs),
    /// The Looveren–Klaise CNN that GB and GL explain (another --seed makes the oracle), or
    /// with --arch c3lt the network C3LT explains.
    Classifier(ClassifierArgs),
    /// The convolutional autoencoder GL (and IM1/IM2) need.
    Autoencoder(AuxArgs),
    /// RealNVP (seed 002's MNIST flow), for diffeomorphic counterfactuals.
    Realnvp(FlowArgs),
    /// Glow, with the LU or the SVD/FastH invertible 1×1 convolution.
    Glow(FlowArgs),
    /// The DCGAN of C3LT and the approximate diffeomorphic counterfactuals (seed 003, seed 002
    /// App. C.9).
    Dcgan(GanArgs),
    /// C3LT's encoder E into a trained DCGAN's latent space (--gan runs/<dcgan run>).
    GanEncoder(GanArgs),
    /// The convolutional VAE (seed 002 App. C.10); --only-class makes the per-class VAEs.
    Vae(AuxArgs),
    /// C3LT's latent maps for one class pair (seed 003), over a DCGAN and its encoder.
    C3lt(C3ltArgs),
    /// Every model `evaluate` needs besides the IB-INN: the explained CNN, the oracle(s), GL's
    /// autoencoder and IM1/IM2's autoencoders (one folder, resumable).
    EvalSuite(EvalSuiteArgs),
}

#[derive(Args, Debug, Clone)]
pub struct C3ltArgs {
    #[command(flatten)]
    pub common: AuxArgs,
    /// The class pair c,c2: the map g sends c to c2, h sends c2 back (e.g. 4,9).
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 1,
        required_unless_present = "resume"
    )]
    pub pair: Vec<usize>,
    /// The explained classifier, a `train classifier` run (e.g. runs/eval-mnist/classifier).
    #[arg(long, required_unless_present = "resume")]
    pub classifier: Option<PathBuf>,
    /// The `train dcgan` run (its discriminator gives the adversarial loss).
    #[arg(long, required_unless_present = "resume")]
    pub gan: Option<PathBuf>,
    /// The `train gan-encoder` run for that DCGAN (best trained on the pair: --classes c,c2).
    #[arg(long, required_unless_present = "resume")]
    pub encoder: Option<PathBuf>,
    /// Map steps per counterfactual (the reference's n_steps) [default: 1].
    #[arg(long)]
    pub n_steps: Option<usize>,
    /// Weight α of the proximity loss [default: 0.1, seed 003 Eq. 11]. 0 drops the term, as
    /// the seed's ablation (Table 5) does.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Weight β of the cycle-consistency loss [default: 0.1].
    #[arg(long)]
    pub beta: Option<f64>,
    /// Weight γ of the adversarial loss [default: 0.001].
    #[arg(long)]
    pub gamma: Option<f64>,
    /// The maps' training queries: the encoder's latents of the pair's training images (the
    /// reference), or latents sampled from N(0, I) that the classifier puts in each class
    /// (seed 003 §3.1), whose query image is G(z) [default: encoder].
    #[arg(long, value_enum)]
    pub latents: Option<crate::train::c3lt::C3ltLatents>,
    /// Score the test set (Val, COUT, Prox) after every N-th epoch and after the last, not
    /// after every epoch [default: 1]; the reference evaluates every 10. Scoring all the pair's
    /// test images takes about 13 % of an epoch of its maps on the CPU.
    #[arg(long)]
    pub eval_every: Option<usize>,
}

impl C3ltArgs {
    /// The settings of a new run, or the saved ones when resuming: then the pair and the
    /// networks come from config.toml and may be repeated, not changed.
    pub fn config(&self) -> Result<(crate::train::c3lt::C3ltTrainConfig, PathBuf)> {
        use crate::train::c3lt::C3ltTrainConfig;
        let a = &self.common;
        if a.only_class.is_some() || a.second_label || a.range.is_some() || a.small {
            bail!(
                "c3lt takes none of --only-class, --second-label, --range, --small (the maps' size follows the DCGAN)"
            );
        }
        let pair = match self.pair[..] {
            [c, c2] => Some([c, c2]),
            [] if a.resume => None,
            _ => bail!(
                "--pair takes two classes, e.g. --pair 4,9; got {:?}",
                self.pair
            ),
        };
        let name = match (&a.name, pair) {
            (Some(n), _) => n.clone(),
            (None, Some([c, c2])) => format!("c3lt-{}-{c}-{c2}", a.dataset()),
            (None, None) => bail!("--resume needs the run: --name, or --pair for the default name"),
        };
        let root = a.runs_dir.join(name);
        if a.resume {
            let networks = [
                Given::value("--pair", "pair", pair),
                Given::value("--classifier", "classifier", self.classifier.as_ref()),
                Given::value("--gan", "gan", self.gan.as_ref()),
                Given::value("--encoder", "encoder", self.encoder.as_ref()),
                Given::value("--n-steps", "n_steps", self.n_steps),
                Given::value("--alpha", "weights.alpha", self.alpha),
                Given::value("--beta", "weights.beta", self.beta),
                Given::value("--gamma", "weights.gamma", self.gamma),
                Given::value("--latents", "latents", self.latents),
                Given::value("--eval-every", "eval_every", self.eval_every),
            ];
            let cfg =
                a.resumed_config(&root, &networks, |c: &mut C3ltTrainConfig| &mut c.epochs)?;
            return Ok((cfg, root));
        }
        let required = |p: &Option<PathBuf>, flag: &str| {
            p.clone()
                .with_context(|| format!("a new C3LT run needs {flag}"))
        };
        let mut cfg = C3ltTrainConfig::new(
            a.dataset(),
            pair.context("a new C3LT run needs --pair")?,
            required(&self.classifier, "--classifier")?,
            required(&self.gan, "--gan")?,
            required(&self.encoder, "--encoder")?,
        );
        cfg.n_steps = self.n_steps.unwrap_or(1);
        cfg.latents = self.latents.unwrap_or_default();
        if let Some(n) = self.eval_every {
            cfg.eval_every = n;
        }
        let w = &mut cfg.weights;
        for (v, field) in [
            (self.alpha, &mut w.alpha),
            (self.beta, &mut w.beta),
            (self.gamma, &mut w.gamma),
        ] {
            if let Some(v) = v {
                *field = v;
            }
        }
        apply_common_flags!(a, cfg);
        cfg.validate()?;
        Ok((cfg, root))
    }
}

#[derive(Args, Debug, Clone)]
pub struct EvalSuiteArgs {
    /// mnist, fake-mnist or fashion-mnist.
    #[arg(long, value_parser = parse_dataset, default_value = "mnist")]
    pub dataset: DatasetKind,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run name [default: eval-<dataset>, eval-<dataset>-unit for --range unit].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// centred ([-0.5, 0.5], Paper 4's default) or unit ([0, 1]).
    #[arg(long, default_value = "centred")]
    pub range: cfx_classifiers::DataRange,
    /// Epochs of the classifier and the oracles (Paper 4, Table 4: 10).
    #[arg(long, default_value_t = 10)]
    pub classifier_epochs: usize,
    /// Epochs of GL's and the all-class autoencoder (Table 5: 50).
    #[arg(long, default_value_t = 50)]
    pub autoencoder_epochs: usize,
    /// Epochs of each class's autoencoder, which sees a tenth of the data (Table 5: 50).
    #[arg(long, default_value_t = 50)]
    pub class_autoencoder_epochs: usize,
    #[arg(long)]
    pub train_limit: Option<usize>,
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Narrow layers, for tests and smoke runs.
    #[arg(long)]
    pub small: bool,
    #[command(flatten)]
    pub backend: BackendArg,
}

impl EvalSuiteArgs {
    pub fn plan(&self) -> (crate::train::suite::SuitePlan, PathBuf) {
        let name = self.name.clone().unwrap_or_else(|| match self.range {
            cfx_classifiers::DataRange::Centred => format!("eval-{}", self.dataset),
            r => format!("eval-{}-{r}", self.dataset),
        });
        (
            crate::train::suite::SuitePlan {
                dataset: self.dataset,
                data_dir: self.data_dir.clone(),
                range: self.range,
                classifier_epochs: self.classifier_epochs,
                autoencoder_epochs: self.autoencoder_epochs,
                class_autoencoder_epochs: self.class_autoencoder_epochs,
                train_limit: self.train_limit,
                test_limit: self.test_limit,
                small: self.small,
            },
            self.runs_dir.join(name),
        )
    }
}

#[derive(Args, Debug, Clone)]
pub struct AuxArgs {
    /// mnist, fake-mnist, fashion-mnist, or image-folder (a folder of PNG/JPEG images given by
    /// --data-dir: CelebA, one sub-folder per class, or flat; scaled to the model's size)
    /// [default: mnist; when resuming, the run's own, which a given one must repeat].
    #[arg(long, value_parser = parse_dataset)]
    pub dataset: Option<DatasetKind>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run name [default: <model>-<dataset>, e.g. cnn-mnist, ae-mnist, realnvp-mnist,
    /// glow-mnist, vae-mnist, dcgan-mnist and gan-encoder-mnist (plus -<classes>),
    /// c3lt-mnist-<c>-<c2>].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Continue the run from its last epoch checkpoint (the saved config is kept; --epochs may extend it).
    #[arg(long)]
    pub resume: bool,
    /// [default: the model's own: classifier 10, autoencoder 50 (Paper 4, Tables 4 and 5),
    /// RealNVP and Glow 10, VAE 80 (seed 002 App. C.10), DCGAN 25, GAN encoder 10, C3LT 200]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// [default: 64 for the classifier, RealNVP, Glow, VAE and DCGAN; 128 for the
    /// autoencoder, the GAN encoder and C3LT]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Adam's learning rate [default: 1e-3 for the classifier, autoencoder, GAN encoder and
    /// C3LT; 1e-4 for RealNVP and Glow, 5e-3 for the VAE (seed 002 App. C); 2e-4 for the DCGAN]
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Train on this class only (the per-class autoencoders of IM1).
    #[arg(long)]
    pub only_class: Option<usize>,
    /// Train on the second label (FakeMNIST: the original digit, for LVS's digit oracle).
    #[arg(long)]
    pub second_label: bool,
    /// Pixel range a classifier or autoencoder works in: centred ([-0.5, 0.5], Paper 4's
    /// default) or unit ([0, 1]) [default: centred].
    #[arg(long)]
    pub range: Option<cfx_classifiers::DataRange>,
    #[arg(long)]
    pub train_limit: Option<usize>,
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Narrow layers, for tests and smoke runs.
    #[arg(long)]
    pub small: bool,
    #[command(flatten)]
    pub backend: BackendArg,
}

/// `train classifier`: the common flags plus which CNN.
#[derive(Args, Debug, Clone)]
pub struct ClassifierArgs {
    #[command(flatten)]
    pub common: AuxArgs,
    /// paper4: the Looveren–Klaise CNN (2×2 kernels) of GB, GL and the metrics; c3lt: the
    /// network seed 003 explains (`MnistNet`, 5×5 kernels without padding) [default: paper4;
    /// when resuming, the run's own, which a given one must repeat].
    #[arg(long, value_enum)]
    pub arch: Option<CnnArch>,
}

/// The classifier architectures `train classifier` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CnnArch {
    Paper4,
    C3lt,
}

impl CnnArch {
    fn config(self) -> cfx_classifiers::CnnClassifierConfig {
        match self {
            Self::Paper4 => Default::default(),
            Self::C3lt => cfx_classifiers::CnnClassifierConfig::c3lt_mnist(),
        }
    }

    /// The flag's value, for messages.
    fn name(self) -> &'static str {
        match self {
            Self::Paper4 => "paper4",
            Self::C3lt => "c3lt",
        }
    }

    /// The architecture a saved config was built as (widths aside: `--small` narrows either).
    fn of(c: &cfx_classifiers::CnnClassifierConfig) -> Option<Self> {
        [Self::Paper4, Self::C3lt].into_iter().find(|a| {
            let p = a.config();
            (p.kernel, p.padding, p.conv_dropout) == (c.kernel, c.padding, c.conv_dropout)
        })
    }
}

impl ClassifierArgs {
    /// [`AuxArgs::config`] for a classifier, with `--arch`'s layers.
    pub fn config(&self) -> Result<(crate::train::supervised::SupervisedTrainConfig, PathBuf)> {
        use crate::train::supervised::AuxModel;
        let model = self.arch.map(|a| AuxModel::Classifier(a.config()));
        let (cfg, root) = self.common.config(false, model)?;
        if let (Some(arch), true) = (self.arch, self.common.resume) {
            let AuxModel::Classifier(c) = &cfg.model else {
                bail!("{} is not a classifier run", root.display());
            };
            if CnnArch::of(c) != Some(arch) {
                bail!(
                    "--arch cannot change when resuming: {} was not built as {} \
                     (its kernel is {}, padding {:?}); drop --arch to resume it",
                    root.display(),
                    arch.name(),
                    c.kernel,
                    c.padding
                );
            }
        }
        Ok((cfg, root))
    }
}

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("inputs").required(true).args(["index", "class", "png", "all_test"])))]
pub struct ExplainArgs {
    /// A counterfactual method: ecinn (IB-INN model), gb, gl, diffeo (with --flow) or pixel (CNN
    /// model); or a list of
    /// heatmap methods (ecinnh, saliency, intgrad, gradshap, deeplift, deepliftshap) for one
    /// grid, inputs × methods (ecinnh needs an IB-INN; the others explain either model).
    #[arg(long, value_delimiter = ',', required = true)]
    pub method: Vec<String>,
    /// The trained model folder: runs/<name> of `train ib-inn` (ecinn) or `train classifier` (gb, gl).
    #[arg(long)]
    pub model: PathBuf,
    /// GL's autoencoder: runs/<name> of `train autoencoder`.
    #[arg(long)]
    pub autoencoder: Option<PathBuf>,
    /// diffeo's latent space: a flow (runs/<name> of `train realnvp|glow|ib-inn`), a VAE
    /// (`train vae`) or a GAN (`train dcgan`, inverted by optimisation, or `train gan-encoder`);
    /// the model is the CNN it explains.
    #[arg(long, visible_alias = "generator")]
    pub flow: Option<PathBuf>,
    /// c3lt's maps: runs/<name> of `train c3lt` (the model is the CNN they were trained for).
    #[arg(long, conflicts_with = "flow")]
    pub c3lt: Option<PathBuf>,
    /// [default: the dataset the model was trained on]
    #[arg(long, value_parser = parse_dataset)]
    pub dataset: Option<DatasetKind>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Test-set indices, e.g. 0,7,42.
    #[arg(long, value_delimiter = ',')]
    pub index: Vec<usize>,
    /// The first --count test images labelled with this class.
    #[arg(long)]
    pub class: Option<usize>,
    #[arg(long, default_value_t = 9)]
    pub count: usize,
    /// PNG files (grey, the model's size; see --resize).
    #[arg(long, num_args = 1..)]
    pub png: Vec<PathBuf>,
    /// Scale PNG inputs of another size to the model's.
    #[arg(long)]
    pub resize: bool,
    /// The whole test set (or its first --limit images): statistics only, no figures.
    #[arg(long)]
    pub all_test: bool,
    #[arg(long)]
    pub limit: Option<usize>,
    /// A class, `all` (every class but the predicted one) or `random` (one per input, Paper 4).
    #[arg(long, default_value = "all")]
    pub target: crate::explain::TargetMode,
    /// ECINN: which α to decode: alpha0, alpha1 (0.8 + α0/2), bmvc (α0 + 0.8(1 − α0)),
    /// bmvc:T (α0 + T(1 − α0)) or a number.
    #[arg(long, value_delimiter = ',', default_value = "alpha0,alpha1")]
    pub alpha: Vec<String>,
    /// ECINN: the class centres Δ runs between: `empirical` (the seed's mean latent per
    /// predicted class) or `gmm` (the model's GMM means, an ablation).
    #[arg(long, default_value = "empirical")]
    pub delta: cfx_counterfactual::DeltaMeans,
    /// ECINN (and ECINNh): `raw` returns and scores the inverse pass as the seeds define x̂;
    /// `image` makes it an 8-bit image first (clamped to [0, 1], rounded to the 256 grey
    /// levels), as the authors' code stores counterfactuals. The PNG figures are always 8-bit.
    #[arg(long, default_value = "raw")]
    pub pixels: cfx_counterfactual::EcinnPixels,
    /// ECINN: also write α transition strips at α0 + t(1 − α0) for these t.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_missing_value = "0,0.2,0.4,0.6,0.8,1.0,1.2,1.4")]
    pub strip: Option<Vec<f64>>,
    /// GB/GL/diffeo settings as TOML (fields of GbConfig / GlConfig / DiffeoConfig).
    #[arg(long)]
    pub method_config: Option<PathBuf>,
    /// GradSHAP / DeepLiftSHAP: this many random training images as baselines.
    #[arg(long, default_value_t = 16)]
    pub shap_baselines: usize,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Seeds the random targets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Magnification of the PNG figures.
    #[arg(long, default_value_t = 4)]
    pub scale: usize,
    /// Output folder [default: <model>/explanations/<method>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArg,
}

/// `alpha0`, `alpha1`, `bmvc`, `bmvc:T` or a finite number.
pub fn parse_alpha(s: &str) -> Result<cfx_counterfactual::AlphaChoice> {
    use cfx_counterfactual::{Alpha1Rule, AlphaChoice};
    let choice = match s.trim() {
        "alpha0" | "a0" => AlphaChoice::Tipping,
        "alpha1" | "a1" => AlphaChoice::Convincing(Alpha1Rule::ArxivCode),
        "bmvc" => AlphaChoice::Convincing(Alpha1Rule::Bmvc { t: 0.8 }),
        other => match other.strip_prefix("bmvc:") {
            Some(t) => AlphaChoice::Convincing(Alpha1Rule::Bmvc {
                t: t.parse()
                    .map_err(|_| anyhow::anyhow!("--alpha {other}: T must be a number"))?,
            }),
            None => AlphaChoice::Fixed {
                value: other.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--alpha {other:?}: expected alpha0, alpha1, bmvc, bmvc:T or a number"
                    )
                })?,
            },
        },
    };
    // A NaN or infinite α would decode every counterfactual to NaN without a word.
    let finite = match choice {
        AlphaChoice::Fixed { value: v } | AlphaChoice::Convincing(Alpha1Rule::Bmvc { t: v }) => {
            v.is_finite()
        }
        _ => true,
    };
    anyhow::ensure!(finite, "--alpha {s:?}: the number must be finite");
    Ok(choice)
}

/// What `explain` was asked for.
pub enum ExplainPlan {
    Counterfactuals(crate::explain::ExplainJob),
    Heatmaps(crate::heatmaps::HeatmapExplainJob),
}

impl ExplainArgs {
    /// Counterfactuals (one method) or a heatmap grid (heatmap methods only).
    pub fn plan(&self) -> Result<ExplainPlan> {
        use crate::heatmaps::HeatmapMethod;
        use clap::ValueEnum;
        let names: Vec<String> = self
            .method
            .iter()
            .map(|m| m.trim().to_lowercase())
            .collect();
        if let [one] = names.as_slice()
            && let Ok(m) = crate::explain::Method::from_str(one, true)
        {
            return Ok(ExplainPlan::Counterfactuals(self.job(m)?));
        }
        let methods = names
            .iter()
            .map(|n| {
                HeatmapMethod::parse(n).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--method {n:?}: expected one of ecinn, gb, gl, or heatmap methods \
                         (ecinnh, saliency, intgrad, gradshap, deeplift, deepliftshap)"
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ExplainPlan::Heatmaps(crate::heatmaps::HeatmapExplainJob {
            methods,
            model: self.model.clone(),
            dataset: self.dataset,
            data_dir: self.data_dir.clone(),
            selection: self.selection(),
            target: self.target,
            shap_baselines: self.shap_baselines,
            batch_size: self.batch_size,
            seed: self.seed,
            scale: self.scale.max(1),
            pixels: self.pixels,
            out: self
                .out
                .clone()
                .unwrap_or_else(|| self.model.join("explanations").join("heatmaps")),
        }))
    }

    fn selection(&self) -> crate::explain::inputs::Selection {
        use crate::explain::inputs::Selection;
        if !self.index.is_empty() {
            Selection::Indices(self.index.clone())
        } else if let Some(class) = self.class {
            Selection::Class {
                class,
                count: self.count,
            }
        } else if !self.png.is_empty() {
            Selection::Files {
                paths: self.png.clone(),
                resize: self.resize,
            }
        } else {
            Selection::AllTest { limit: self.limit }
        }
    }

    fn job(&self, method: crate::explain::Method) -> Result<crate::explain::ExplainJob> {
        let selection = self.selection();
        let name = method.name();
        Ok(crate::explain::ExplainJob {
            method,
            model: self.model.clone(),
            autoencoder: self.autoencoder.clone(),
            latent: self.flow.clone().or_else(|| self.c3lt.clone()),
            dataset: self.dataset,
            data_dir: self.data_dir.clone(),
            selection,
            target: self.target,
            alphas: self
                .alpha
                .iter()
                .map(|a| parse_alpha(a))
                .collect::<Result<_>>()?,
            delta: self.delta,
            pixels: self.pixels,
            strip: self.strip.clone(),
            method_config: self.method_config.clone(),
            batch_size: self.batch_size,
            seed: self.seed,
            scale: self.scale.max(1),
            out: self
                .out
                .clone()
                .unwrap_or_else(|| self.model.join("explanations").join(name)),
        })
    }
}

/// `train dcgan|gan-encoder`: the common flags plus the GAN's.
#[derive(Args, Debug, Clone)]
pub struct GanArgs {
    #[command(flatten)]
    pub common: AuxArgs,
    /// Train on these classes only, e.g. 4,9 (C3LT's encoders are per class pair).
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<usize>,
    /// gan-encoder: the `train dcgan` run whose generator it inverts (trained on the same --dataset).
    #[arg(long)]
    pub gan: Option<PathBuf>,
    /// Adam's weight decay (seed 002 App. C.9 uses 5e-4; C3LT's GAN none).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// dcgan: generator and discriminator width (ngf = ndf) [default: 64, the reference's].
    #[arg(long)]
    pub width: Option<usize>,
    /// gan-encoder: weight of the latent term `(E(G(z)) − z)²` beside the image term
    /// `|G(E(x)) − x|` [default: 0; runs made before 2026-12-05 used 1].
    #[arg(long)]
    pub latent_weight: Option<f64>,
    /// Learning rate ×0.1 from each of these epochs on, e.g. 6 [default: none for the DCGAN; the
    /// encoder's at 3/5 of --epochs, 6 of 10; runs made before 2026-12-07 have none].
    #[arg(long, value_delimiter = ',')]
    pub milestones: Option<Vec<usize>>,
}

impl GanArgs {
    /// The settings of a new run, or the saved ones when resuming; `encoder` picks
    /// `gan-encoder`.
    pub fn config(
        &self,
        encoder: bool,
    ) -> Result<(crate::train::gan::EncoderTrainConfig, PathBuf)> {
        use crate::train::gan::{EncoderTrainConfig, GanTrainConfig};
        let a = &self.common;
        if a.only_class.is_some() || a.second_label || a.range.is_some() {
            bail!("the GAN takes --classes, not --only-class, --second-label or --range");
        }
        // A resumed encoder run keeps the GAN of its config.toml; --gan may repeat it.
        let gan = match (&self.gan, encoder) {
            (Some(g), true) => g.clone(),
            (None, true) if a.resume => PathBuf::new(),
            (None, true) => bail!("gan-encoder needs --gan runs/<name> (a `train dcgan` run)"),
            (Some(_), false) => bail!("--gan belongs to `train gan-encoder`"),
            (None, false) => PathBuf::new(),
        };
        let prefix = if encoder { "gan-encoder" } else { "dcgan" };
        let mut name = a
            .name
            .clone()
            .unwrap_or_else(|| format!("{prefix}-{}", a.dataset()));
        if a.name.is_none() && !self.classes.is_empty() {
            let c: Vec<String> = self.classes.iter().map(|c| c.to_string()).collect();
            name = format!("{name}-{}", c.join("-"));
        }
        // Each trainer's own flags, refused for the other whether the run is new or resumed.
        match (self.width, encoder) {
            (Some(_), true) => {
                bail!("--width belongs to `train dcgan`; the encoder follows its GAN")
            }
            (Some(0), false) => bail!("--width must be positive"),
            _ => {}
        }
        if self.latent_weight.is_some() && !encoder {
            bail!("--latent-weight belongs to `train gan-encoder`");
        }
        let root = a.runs_dir.join(name);
        if a.resume {
            // --classes and --gan may repeat the saved ones (the default run name is made from
            // --classes).
            let extra = [
                Given::value("--gan", "gan", self.gan.as_ref()),
                Given::value(
                    "--classes",
                    "classes",
                    (!self.classes.is_empty()).then_some(&self.classes),
                ),
                Given::value("--weight-decay", "weight_decay", self.weight_decay),
                Given::value("--width", "model.ngf", self.width),
                Given::value("--latent-weight", "latent_weight", self.latent_weight),
                Given::value("--milestones", "milestones", self.milestones.as_ref()),
            ];
            let cfg = if encoder {
                let cfg = a.resumed_config(&root, &extra, |c: &mut EncoderTrainConfig| {
                    &mut c.train.epochs
                })?;
                cfg.validate()
                    .with_context(|| format!("{}", root.join("config.toml").display()))?;
                cfg
            } else {
                EncoderTrainConfig {
                    gan,
                    latent_weight: EncoderTrainConfig::DEFAULT_LATENT_WEIGHT,
                    train: a
                        .resumed_config(&root, &extra, |c: &mut GanTrainConfig| &mut c.epochs)?,
                }
            };
            return Ok((cfg, root));
        }
        let mut cfg = if encoder {
            GanTrainConfig::encoder(a.dataset())
        } else {
            GanTrainConfig::dcgan(a.dataset())
        };
        if a.small {
            cfg.model = cfx_generative::DcganConfig::tiny();
        }
        if let Some(w) = self.width {
            (cfg.model.ngf, cfg.model.ndf) = (w, w);
        }
        let latent_weight = self
            .latent_weight
            .unwrap_or(EncoderTrainConfig::DEFAULT_LATENT_WEIGHT);
        apply_common_flags!(a, cfg);
        cfg.weight_decay = self.weight_decay;
        cfg.classes = self.classes.clone();
        cfg.milestones = match (&self.milestones, encoder) {
            (Some(m), _) => m.clone(),
            (None, true) => GanTrainConfig::encoder_milestones(cfg.epochs),
            (None, false) => vec![],
        };
        let cfg = EncoderTrainConfig {
            gan,
            latent_weight,
            train: cfg,
        };
        cfg.validate()?;
        Ok((cfg, root))
    }
}

/// `train realnvp|glow`: the common flags plus the flow's architecture.
#[derive(Args, Debug, Clone)]
pub struct FlowArgs {
    #[command(flatten)]
    pub common: AuxArgs,
    /// Glow: the invertible 1×1 convolution's parameterisation, lu or svd (FastH) [default: lu].
    #[arg(long, value_parser = parse_inv_conv)]
    pub conv: Option<cfx_flows::blocks::InvConvKind>,
    /// Glow: steps per block [default: 32, the seed's].
    #[arg(long)]
    pub n_flow: Option<usize>,
    /// Glow: blocks (squeeze levels) [default: 2 for 28×28, 4 for image folders].
    #[arg(long)]
    pub n_block: Option<usize>,
    /// Hidden channels of the coupling nets [default: Glow 512, RealNVP 64; --small: 16, 8].
    #[arg(long)]
    pub width: Option<usize>,
    /// RealNVP: residual blocks in each coupling net [default: 4; --small: 1].
    #[arg(long)]
    pub res_blocks: Option<usize>,
    /// Glow: affine couplings instead of the seed's additive ones.
    #[arg(long)]
    pub affine: bool,
    /// `--dataset image-folder`: side of the square RGB images the flow models (each image is
    /// scaled and centre-cropped to it) [default: 64, Glow's CelebA setting].
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Data-parallel replicas, one per device of the backend (docs/scaling.md).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
}

fn parse_inv_conv(s: &str) -> Result<cfx_flows::blocks::InvConvKind, String> {
    match s {
        "lu" => Ok(cfx_flows::blocks::InvConvKind::Lu),
        "svd" | "fasth" => Ok(cfx_flows::blocks::InvConvKind::Svd),
        other => Err(format!("unknown 1×1 convolution {other:?} (lu or svd)")),
    }
}

impl FlowArgs {
    /// Glow's architecture flags and whether each was given.
    fn glow_flags(&self) -> [(&'static str, bool); 5] {
        [
            ("--conv", self.conv.is_some()),
            ("--n-flow", self.n_flow.is_some()),
            ("--n-block", self.n_block.is_some()),
            ("--width", self.width.is_some()),
            ("--affine", self.affine),
        ]
    }

    /// The architecture for `glow` (true) or `realnvp`. A resumed run keeps its saved one, so
    /// architecture flags are refused then.
    pub fn model(&self, glow: bool) -> Result<crate::train::supervised::AuxModel> {
        use crate::train::supervised::AuxModel;
        if self.common.resume {
            // Refused whenever given: they are checked before the saved config is read, and
            // the saved model is a tagged enum whose keys differ between the two flows.
            let mut given: Vec<Given> = self
                .glow_flags()
                .into_iter()
                .map(|(flag, given)| Given::any(flag, given))
                .collect();
            given.push(Given::any("--res-blocks", self.res_blocks.is_some()));
            given.push(Given::any("--image-size", self.image_size.is_some()));
            refuse_changes_on_resume(&toml::Table::new(), &given, AuxArgs::MAY_CHANGE)?;
        }
        let native = self.common.dataset().native_shape();
        let shape = match (native, self.image_size) {
            (Some(_), Some(_)) => bail!(
                "--image-size is for --dataset image-folder; {} images are 28×28",
                self.common.dataset()
            ),
            (Some(native), None) => native,
            (None, size) => [3, size.unwrap_or(64), size.unwrap_or(64)],
        };
        // --small is the starting point and the architecture flags apply on top of it, so that
        // `--small --width 32` is a narrow model 32 wide, not a silently dropped flag.
        let small = self.common.small;
        if !glow {
            let given = self.glow_flags();
            if let Some((flag, _)) = given.iter().find(|g| g.1 && g.0 != "--width") {
                bail!("{flag} is a Glow setting (RealNVP takes --width and --res-blocks)");
            }
            let mut c = if small {
                cfx_flows::realnvp::RealNvpConfig::tiny()
            } else {
                cfx_flows::realnvp::RealNvpConfig::new()
            }
            .with_input_shape(shape);
            if let cfx_flows::nn::CouplingNetConfig::ResNet { width, blocks } = &mut c.net {
                *width = self.width.unwrap_or(*width);
                *blocks = self.res_blocks.unwrap_or(*blocks);
            }
            return Ok(AuxModel::RealNvp(c));
        }
        if self.res_blocks.is_some() {
            bail!("--res-blocks is a RealNVP setting (Glow takes --n-flow, --n-block, --width)");
        }
        let mut base = if native.is_none() {
            cfx_flows::glow::GlowConfig::celeba()
        } else {
            cfx_flows::glow::GlowConfig::new()
        };
        if small {
            let tiny = cfx_flows::glow::GlowConfig::tiny();
            (base.n_flow, base.width) = (tiny.n_flow, tiny.width);
        }
        let mut c = base
            .with_input_shape(shape)
            .with_conv(self.conv.unwrap_or(cfx_flows::blocks::InvConvKind::Lu))
            .with_affine(self.affine);
        if let Some(v) = self.n_flow {
            c.n_flow = v;
        }
        if let Some(v) = self.n_block {
            c.n_block = v;
        }
        if let Some(v) = self.width {
            c.width = v;
        }
        Ok(AuxModel::Glow(c))
    }
}

impl AuxArgs {
    /// What a resumed `train` run other than IB-INN takes.
    const MAY_CHANGE: &str = "--epochs (to extend the run)";

    /// `--dataset`, or MNIST when it is not given. Optional rather than defaulted so that
    /// `--resume` can tell a given dataset (compared with the run's) from the default.
    pub fn dataset(&self) -> DatasetKind {
        self.dataset.unwrap_or(DatasetKind::Mnist)
    }

    /// The saved `config.toml` of the run at `root` when resuming: flags that would change it
    /// are refused ([`AuxArgs::refuse_changes_on_resume`], plus `extra`), and `--epochs`
    /// extends it through `epochs`.
    fn resumed_config<T: serde::de::DeserializeOwned + serde::Serialize>(
        &self,
        root: &std::path::Path,
        extra: &[Given],
        epochs: impl FnOnce(&mut T) -> &mut usize,
    ) -> Result<T> {
        let mut cfg: T = read_toml(&root.join("config.toml"))?;
        // Written back rather than read as it is, so that a key an older file lacks compares
        // as the default it loads with.
        self.refuse_changes_on_resume(&toml::Table::try_from(&cfg)?, extra)?;
        if let Some(e) = self.epochs {
            *epochs(&mut cfg) = e;
        }
        Ok(cfg)
    }

    /// [`refuse_changes_on_resume`] for the flags every `AuxArgs` command shares, plus `extra`.
    fn refuse_changes_on_resume(&self, saved: &toml::Table, extra: &[Given]) -> Result<()> {
        let mut flags = vec![
            Given::value("--dataset", "dataset", self.dataset),
            Given::value("--data-dir", "data_dir", self.data_dir.as_ref()),
            Given::value("--batch-size", "batch_size", self.batch_size),
            Given::value("--lr", "lr", self.lr),
            Given::value("--seed", "seed", self.seed),
            Given::value("--only-class", "only_class", self.only_class),
            Given::switch("--second-label", "second_label", self.second_label, true),
            Given::value("--train-limit", "train_limit", self.train_limit),
            Given::value("--test-limit", "test_limit", self.test_limit),
            Given::any("--small", self.small),
        ];
        flags.extend(extra.iter().cloned());
        refuse_changes_on_resume(saved, &flags, Self::MAY_CHANGE)
    }

    /// The config of a new run (defaults per kind, then flags) or the saved one when resuming.
    /// `model` is the architecture of `train realnvp|glow|vae` or `train classifier --arch`;
    /// `None` takes the default classifier or autoencoder, as `autoencoder` says.
    pub fn config(
        &self,
        autoencoder: bool,
        model: Option<crate::train::supervised::AuxModel>,
    ) -> Result<(crate::train::supervised::SupervisedTrainConfig, PathBuf)> {
        use crate::train::supervised::{AuxModel, SupervisedTrainConfig};
        let prefix = match &model {
            Some(AuxModel::Classifier(_)) => "cnn",
            Some(m) => m.kind(),
            None if autoencoder => "ae",
            None => "cnn",
        };
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("{prefix}-{}", self.dataset()));
        let root = self.runs_dir.join(name);
        if let (Some(_), Some(m)) = (self.range, &model)
            && !matches!(m, AuxModel::Classifier(_) | AuxModel::Autoencoder(_))
        {
            bail!(
                "--range belongs to `train classifier` and `train autoencoder`, not `train {}`",
                m.kind()
            );
        }
        if self.resume {
            let range = Given::value(
                "--range",
                "model.input_offset",
                self.range.map(|r| r.offset()),
            );
            let cfg = self.resumed_config(&root, &[range], |c: &mut SupervisedTrainConfig| {
                &mut c.epochs
            })?;
            return Ok((cfg, root));
        }
        let mut cfg = match model {
            Some(m) => SupervisedTrainConfig::for_model(self.dataset(), m),
            None if autoencoder => SupervisedTrainConfig::autoencoder(self.dataset()),
            None => SupervisedTrainConfig::classifier(self.dataset()),
        };
        if self.small {
            cfg.make_small();
        }
        apply_common_flags!(self, cfg);
        cfg.only_class = self.only_class;
        cfg.second_label = self.second_label;
        cfg.set_range(self.range.unwrap_or_default());
        cfg.validate()?;
        Ok((cfg, root))
    }
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time IB-INN training steps (forward, backward, optimiser) on each backend given.
    Step(StepBenchArgs),
    /// FastH vs the sequential and explicit-matrix Householder products (forward, fwd+bwd).
    Fasth(FastHBenchArgs),
    /// FastFID vs the dense O(d³) FID, with the error of each.
    Fid(FidBenchArgs),
    /// Glow training steps with the LU vs the SVD/FastH invertible 1×1 convolution.
    GlowConv(GlowBenchArgs),
    /// Batched ECINN: counterfactuals per second (one forward, all other classes decoded).
    Ecinn(EcinnBenchArgs),
    /// The IB-INN subnets' 3×3 convolutions, forward + backward, as burn's conv2d and as
    /// unfold + matrix product.
    Conv(ConvBenchArgs),
    /// step, ecinn, fasth and fid on one backend, one JSON file each (the PyTorch peers in
    /// bench/pytorch/ print and write the same rows).
    All(BenchAllArgs),
}

#[derive(Args, Debug, Clone)]
pub struct EcinnBenchArgs {
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![BackendKind::default_for_build()])]
    pub backends: Vec<BackendKind>,
    /// Test images per call; each is explained towards all 9 other classes.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Latents per inverse pass (`explain`'s default).
    #[arg(long, default_value_t = 1024)]
    pub decode_batch: usize,
    /// The tiny architecture instead of the full MNIST one.
    #[arg(long)]
    pub small: bool,
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ConvBenchArgs {
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![BackendKind::default_for_build()])]
    pub backends: Vec<BackendKind>,
    /// The training step's batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Two tiny shapes instead of the IB-INN's, for a smoke run.
    #[arg(long)]
    pub quick: bool,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchAllArgs {
    #[command(flatten)]
    pub backend: BackendArg,
    /// Folder for step.json, ecinn.json, fasth.json and fid.json.
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
    /// Small sizes for a smoke run: tiny IB-INN, d ≤ 128, FID at d = 64.
    #[arg(long)]
    pub quick: bool,
    /// Which benches to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![BenchName::Step, BenchName::Ecinn, BenchName::Fasth, BenchName::Fid])]
    pub benches: Vec<BenchName>,
}

/// The benches `bench all` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchName {
    Step,
    Ecinn,
    Fasth,
    Fid,
}

#[derive(Args, Debug, Clone)]
pub struct GlowBenchArgs {
    /// Backends to measure (each runs both convolutions, interleaved).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![BackendKind::default_for_build()])]
    pub backends: Vec<BackendKind>,
    /// Steps per block (the seed: 32).
    #[arg(long, default_value_t = 8)]
    pub n_flow: usize,
    #[arg(long, default_value_t = 2)]
    pub n_block: usize,
    /// Hidden channels of the coupling nets (the seed: 512).
    #[arg(long, default_value_t = 128)]
    pub width: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Write the measurements as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct BackendArg {
    /// Backend to run on [default: cuda or wgpu when compiled in, else cpu].
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
}

impl BackendArg {
    pub fn kind(&self) -> BackendKind {
        self.backend.unwrap_or_else(BackendKind::default_for_build)
    }
}

#[derive(Args, Debug, Clone)]
pub struct IbInnArgs {
    /// mnist, fake-mnist, fashion-mnist, or image-folder (--data-dir; set model.input_shape
    /// and model.n_classes in --config to match it).
    #[arg(long, value_parser = parse_dataset)]
    pub dataset: Option<DatasetKind>,
    /// Folder with MNIST-format files (Fashion-MNIST default: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run name: results go to <runs-dir>/<name> [default: ibinn-<dataset>].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// A TOML file with any IbInnTrainConfig fields (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in <runs-dir>/<name> from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// The tiny architecture (2 narrow blocks per stage) for smoke runs.
    #[arg(long)]
    pub small: bool,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Epochs (counted from 0) from which the lr is multiplied by lr_gamma once more, e.g.
    /// `50`. With --resume it replaces the saved schedule for the epochs still to come.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub milestones: Option<Vec<usize>>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub beta: Option<f64>,
    /// Train on the first N training images only.
    #[arg(long)]
    pub train_limit: Option<usize>,
    #[arg(long)]
    pub test_limit: Option<usize>,
    #[arg(long)]
    pub val_size: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also checkpoint every N steps inside epochs (with --resume it replaces the saved
    /// interval: how often to save changes nothing the run computes).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Stop (with a checkpoint) after N steps of this invocation; --resume continues.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Stop (with a checkpoint) after this many minutes; --resume continues.
    #[arg(long, value_name = "MINUTES")]
    pub time_budget: Option<f64>,
    /// Skip the batch-norm re-estimation before the test evaluation.
    #[arg(long)]
    pub no_bn_calibration: bool,
    /// Train nothing: score the finished run's model.mpk on the test set again and rewrite
    /// test.json (e.g. after a newer cfx adds a number to it).
    #[arg(long, conflicts_with = "resume")]
    pub test_only: bool,
    /// Data-parallel replicas, one per device of the backend (docs/scaling.md); the batch size
    /// stays the global one, split across them.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    #[command(flatten)]
    pub backend: BackendArg,
}

fn parse_dataset(s: &str) -> Result<DatasetKind, String> {
    s.parse()
}

impl IbInnArgs {
    pub fn run_root(&self, cfg: &IbInnTrainConfig) -> PathBuf {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("ibinn-{}", cfg.dataset));
        self.runs_dir.join(name)
    }

    /// The configuration of a new run: defaults, then `--config`, then flags.
    pub fn new_config(&self) -> Result<IbInnTrainConfig> {
        let mut cfg = match &self.config {
            Some(p) => read_toml(p)?,
            None => IbInnTrainConfig::default(),
        };
        if self.small {
            cfg.model = IbInnConfig::tiny();
        }
        macro_rules! set {
            ($($field:ident => $target:expr),* $(,)?) => {
                $(if let Some(v) = self.$field.clone() { $target = v; })*
            };
        }
        set!(
            dataset => cfg.dataset,
            epochs => cfg.epochs,
            batch_size => cfg.batch_size,
            lr => cfg.lr,
            beta => cfg.beta,
            val_size => cfg.val_size,
            seed => cfg.seed,
        );
        if self.data_dir.is_some() {
            cfg.data_dir = self.data_dir.clone();
        }
        if let Some(m) = &self.milestones {
            cfg.milestones = m.clone();
        }
        if self.train_limit.is_some() {
            cfg.train_limit = self.train_limit;
        }
        if self.test_limit.is_some() {
            cfg.test_limit = self.test_limit;
        }
        if self.checkpoint_every.is_some() {
            cfg.checkpoint_every_steps = self.checkpoint_every;
        }
        if self.no_bn_calibration {
            cfg.calibrate_batch_norm = false;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration of a resumed run: the saved one; only `--epochs` (longer),
    /// `--milestones` (the schedule ahead) and `--checkpoint-every` may change it.
    pub fn resumed_config(&self, saved: IbInnTrainConfig) -> Result<IbInnTrainConfig> {
        refuse_changes_on_resume(
            &toml::Table::try_from(&saved)?,
            &[
                Given::any("--config", self.config.is_some()),
                Given::any("--small", self.small),
                Given::value("--dataset", "dataset", self.dataset),
                Given::value("--batch-size", "batch_size", self.batch_size),
                Given::value("--lr", "lr", self.lr),
                Given::value("--beta", "beta", self.beta),
                Given::value("--train-limit", "train_limit", self.train_limit),
                Given::value("--test-limit", "test_limit", self.test_limit),
                Given::value("--val-size", "val_size", self.val_size),
                Given::value("--seed", "seed", self.seed),
                Given::value("--data-dir", "data_dir", self.data_dir.as_ref()),
                Given::switch(
                    "--no-bn-calibration",
                    "calibrate_batch_norm",
                    self.no_bn_calibration,
                    false,
                ),
            ],
            "--epochs, --milestones and --checkpoint-every",
        )?;
        let mut cfg = saved;
        if let Some(e) = self.epochs {
            cfg.epochs = e;
        }
        if let Some(m) = &self.milestones {
            cfg.milestones = m.clone();
        }
        if self.checkpoint_every.is_some() {
            cfg.checkpoint_every_steps = self.checkpoint_every;
        }
        Ok(cfg)
    }

    pub fn control(&self) -> TrainControl {
        TrainControl {
            max_steps: self.max_steps,
            time_budget: self
                .time_budget
                .map(|m| std::time::Duration::from_secs_f64(m * 60.0)),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct StepBenchArgs {
    /// Backends to compare in this one run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![BackendKind::Flex, BackendKind::Ndarray])]
    pub backends: Vec<BackendKind>,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// The tiny architecture instead of the full MNIST one.
    #[arg(long)]
    pub small: bool,
    /// Also time forward, backward and optimiser separately (syncing the device in between).
    #[arg(long)]
    pub breakdown: bool,
    /// Split each batch over this many data-parallel replicas (as `train --replicas`).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Write the measurements as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct FastHBenchArgs {
    #[command(flatten)]
    pub backend: BackendArg,
    /// Matrix sizes d (one orthogonal d×d matrix, K = d reflections).
    #[arg(long, value_delimiter = ',', default_values_t = vec![64, 128, 256, 512, 768, 1024, 2048])]
    pub dims: Vec<usize>,
    /// Columns m of X (the paper's mini-batch).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// WY group size [default: 16 up to d = 128, else 32].
    #[arg(long)]
    pub group: Option<usize>,
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Time the baselines only up to this d (they are O(d) launches, the parallel one O(d³)).
    #[arg(long)]
    pub baseline_max_dim: Option<usize>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct FidBenchArgs {
    #[command(flatten)]
    pub backend: BackendArg,
    /// Feature dimension (Inception's pool layer has 2048).
    #[arg(long, default_value_t = 2048)]
    pub dim: usize,
    /// Fake batch sizes m.
    #[arg(long, value_delimiter = ',', default_values_t = vec![8, 16, 32, 64, 128, 256])]
    pub batches: Vec<usize>,
    /// Real samples behind the precomputed statistics.
    #[arg(long, default_value_t = 4096)]
    pub real: usize,
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Runs of the dense reference per m (seconds each at d = 2048).
    #[arg(long, default_value_t = 1)]
    pub dense_repeats: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Aux {
        #[command(flatten)]
        args: AuxArgs,
    }

    #[test]
    fn resuming_refuses_changed_settings_and_takes_more_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().to_str().unwrap();
        let parse = |extra: &[&str]| {
            let mut argv = vec!["t", "--runs-dir", runs, "--name", "cnn"];
            argv.extend_from_slice(extra);
            Aux::try_parse_from(argv).unwrap().args
        };
        let (cfg, root) = parse(&["--epochs", "2"]).config(false, None).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("config.toml"), toml::to_string(&cfg).unwrap()).unwrap();

        let e = parse(&["--resume", "--lr", "0.5", "--small"])
            .config(false, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--lr, --small cannot change when resuming"),
            "{e}"
        );
        assert!(e.contains(&format!("which has lr = {}", cfg.lr)), "{e}");
        // The first command line again with --resume: the same values are no change.
        let (lr, seed) = (cfg.lr.to_string(), cfg.seed.to_string());
        let (resumed, _) = parse(&["--resume", "--epochs", "2", "--lr", &lr, "--seed", &seed])
            .config(false, None)
            .unwrap();
        assert_eq!(resumed, cfg);
        let other_seed = (cfg.seed + 1).to_string();
        let e = parse(&["--resume", "--seed", &other_seed])
            .config(false, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--seed cannot change"), "{e}");
        // --name picks the run, so a --dataset beside it must be the run's, not be dropped.
        parse(&["--resume", "--dataset", "mnist"])
            .config(false, None)
            .unwrap();
        let e = parse(&["--resume", "--dataset", "fashion-mnist"])
            .config(false, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--dataset cannot change") && e.contains("dataset = \"mnist\""),
            "{e}"
        );
        assert!(e.contains("only --epochs (to extend the run) can"), "{e}");
        // --range is saved as the model's input offset.
        parse(&["--resume", "--range", "centred"])
            .config(false, None)
            .unwrap();
        let e = parse(&["--resume", "--range", "unit"])
            .config(false, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--range cannot change") && e.contains("model.input_offset = 0.5"),
            "{e}"
        );
        let vae = crate::train::supervised::AuxModel::Vae(Default::default());
        let e = parse(&["--range", "unit"])
            .config(false, Some(vae))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--range belongs to"), "{e}");
        let (resumed, _) = parse(&["--resume", "--epochs", "5"])
            .config(false, None)
            .unwrap();
        assert_eq!(resumed.epochs, 5);
        assert_eq!(resumed.lr, cfg.lr);
    }

    #[derive(Parser)]
    struct ClassifierCli {
        #[command(flatten)]
        args: ClassifierArgs,
    }

    #[test]
    fn arch_picks_the_layers_and_a_resumed_run_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().to_str().unwrap();
        let parse = |extra: &[&str]| {
            let mut argv = vec!["t", "--runs-dir", runs, "--name", "cls"];
            argv.extend_from_slice(extra);
            ClassifierCli::try_parse_from(argv).unwrap().args.config()
        };
        let model = |cfg: &crate::train::supervised::SupervisedTrainConfig| match &cfg.model {
            crate::train::supervised::AuxModel::Classifier(c) => c.clone(),
            other => panic!("{other:?}"),
        };
        let (plain, _) = parse(&[]).unwrap();
        assert_eq!(
            model(&plain),
            cfx_classifiers::CnnClassifierConfig::default()
        );
        let (cfg, root) = parse(&["--arch", "c3lt", "--range", "unit"]).unwrap();
        let c = model(&cfg);
        assert_eq!((c.kernel, c.input_offset), (5, 0.0));
        assert_eq!(c.padding, cfx_classifiers::CnnPadding::Valid);
        let (small, _) = parse(&["--arch", "c3lt", "--small"]).unwrap();
        assert_eq!(model(&small).conv_channels, [4, 8]);
        assert_eq!(model(&small).kernel, 5);

        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("config.toml"), toml::to_string(&cfg).unwrap()).unwrap();
        let (resumed, _) = parse(&["--resume"]).unwrap();
        assert_eq!(resumed, cfg);
        let (resumed, _) = parse(&["--resume", "--arch", "c3lt"]).unwrap();
        assert_eq!(resumed, cfg);
        let e = parse(&["--resume", "--arch", "paper4"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--arch cannot change")
                && e.contains("not built as paper4")
                && e.contains("kernel is 5"),
            "{e}"
        );
    }

    /// The loss weights, for the seed's ablation (Table 5): a new run takes them, a resumed
    /// one may repeat them but not change them, and a negative weight is refused by name.
    #[test]
    fn c3lt_loss_weights_are_flags_a_resume_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().to_str().unwrap();
        let parse = |extra: &[&str]| {
            let mut argv = vec!["t", "--runs-dir", runs, "--name", "maps"];
            argv.extend_from_slice(extra);
            C3lt::try_parse_from(argv).unwrap().args.config()
        };
        let with = |extra: &[&str]| {
            let mut v = C3LT_NETWORKS.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        let (plain, _) = with(&[]).unwrap();
        assert_eq!(plain.weights, cfx_counterfactual::C3ltWeights::default());
        let (cls_only, root) = with(&["--alpha", "0", "--beta", "0", "--gamma", "0"]).unwrap();
        let w = &cls_only.weights;
        assert_eq!((w.alpha, w.beta, w.gamma), (0.0, 0.0, 0.0));
        assert_eq!(
            (w.p1, w.p2),
            (10.0, 1.0),
            "the mask's weights are untouched"
        );
        let e = with(&["--beta=-0.1"]).unwrap_err().to_string();
        assert!(e.contains("beta") && e.contains("-0.1"), "{e}");

        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            root.join("config.toml"),
            toml::to_string(&cls_only).unwrap(),
        )
        .unwrap();
        let (resumed, _) = parse(&["--resume", "--alpha", "0", "--latents", "encoder"]).unwrap();
        assert_eq!(resumed, cls_only);
        let e = parse(&["--resume", "--latents", "sampled"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--latents"), "{e}");
        // A config saved before `latents` existed resumes as the encoder-trained run it was.
        let mut old = toml::Table::try_from(&cls_only).unwrap();
        old.remove("latents");
        std::fs::write(root.join("config.toml"), toml::to_string(&old).unwrap()).unwrap();
        let (resumed, _) = parse(&["--resume", "--latents", "encoder"]).unwrap();
        assert_eq!(resumed, cls_only);
        let (sampled, _) = with(&["--latents", "sampled"]).unwrap();
        assert_eq!(sampled.latents, crate::train::c3lt::C3ltLatents::Sampled);
        let e = parse(&["--resume", "--alpha", "0.1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--alpha"), "{e}");
    }

    #[derive(Parser)]
    struct IbInnCli {
        #[command(flatten)]
        args: IbInnArgs,
    }

    /// An IB-INN run resumes with a new lr schedule ahead (the paper's milestone after a short
    /// CPU schedule) but not with a new lr; `--test-only` is not a resume.
    #[test]
    fn ibinn_resume_takes_new_milestones_only() {
        let parse = |argv: &[&str]| {
            let mut all = vec!["t", "--name", "x"];
            all.extend_from_slice(argv);
            IbInnCli::try_parse_from(all).map(|c| c.args)
        };
        let fresh = parse(&["--milestones", "2", "--epochs", "3"]).unwrap();
        let saved = fresh.new_config().unwrap();
        assert_eq!((saved.milestones.clone(), saved.epochs), (vec![2], 3));
        assert!((saved.lr_at(2) - saved.lr * saved.lr_gamma).abs() < 1e-15);

        let resumed = parse(&["--resume", "--epochs", "60", "--milestones", "50"])
            .unwrap()
            .resumed_config(saved.clone())
            .unwrap();
        assert_eq!((resumed.milestones.clone(), resumed.epochs), (vec![50], 60));
        assert_eq!(
            resumed.lr_at(9),
            saved.lr,
            "back to the full rate until epoch 50"
        );
        assert!((resumed.lr_at(50) - saved.lr * saved.lr_gamma).abs() < 1e-15);

        let e = parse(&["--resume", "--lr", "0.1"])
            .unwrap()
            .resumed_config(saved.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--lr"), "{e}");
        let same_lr = saved.lr.to_string();
        let same_seed = saved.seed.to_string();
        let repeated = parse(&["--resume", "--lr", &same_lr, "--seed", &same_seed])
            .unwrap()
            .resumed_config(saved.clone())
            .unwrap();
        assert_eq!(repeated, saved);
        let every = parse(&["--resume", "--checkpoint-every", "50"])
            .unwrap()
            .resumed_config(saved.clone())
            .unwrap();
        assert_eq!(every.checkpoint_every_steps, Some(50));
        let dataset = |d: &str| {
            parse(&["--resume", "--dataset", d])
                .unwrap()
                .resumed_config(saved.clone())
                .map_err(|e| e.to_string())
        };
        assert!(dataset("mnist").is_ok());
        let e = dataset("fashion-mnist").unwrap_err();
        assert!(
            e.contains("--dataset") && e.contains("dataset = \"mnist\""),
            "{e}"
        );
        assert!(
            e.contains("only --epochs, --milestones and --checkpoint-every can"),
            "{e}"
        );
        let e = parse(&["--resume", "--no-bn-calibration"])
            .unwrap()
            .resumed_config(saved)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--no-bn-calibration") && e.contains("calibrate_batch_norm = true"),
            "{e}"
        );
        assert!(parse(&["--resume", "--test-only"]).is_err());
        assert!(parse(&["--milestones", "50,x"]).is_err());
    }

    /// The configs the docs tell users to pass to `--config` must load as they are: a field
    /// renamed in the code would otherwise break them silently until someone ran one.
    #[test]
    fn every_shipped_ibinn_config_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let cfg =
                IbInnCli::try_parse_from(["t", "--name", "x", "--config", path.to_str().unwrap()])
                    .unwrap()
                    .args
                    .new_config()
                    .unwrap_or_else(|e| panic!("{e:#}"));
            if let Err(e) = cfg.model.validate() {
                panic!("{}: {e}", path.display());
            }
            seen += 1;
        }
        assert!(seen >= 5, "found only {seen} configs in {}", dir.display());
    }

    #[derive(Parser)]
    struct FlowCli {
        #[command(flatten)]
        args: FlowArgs,
    }

    /// Image folders get Glow's CelebA architecture at the requested size; MNIST keeps 28×28;
    /// architecture flags that cannot apply, or would change a resumed run, are refused.
    #[test]
    fn flow_architecture_follows_the_dataset() {
        use crate::train::supervised::AuxModel;
        let model = |argv: &[&str], glow: bool| {
            let mut all = vec!["t"];
            all.extend_from_slice(argv);
            FlowCli::try_parse_from(all).unwrap().args.model(glow)
        };
        let Ok(AuxModel::Glow(g)) = model(&["--dataset", "image-folder", "--conv", "svd"], true)
        else {
            panic!("a Glow config")
        };
        assert_eq!((g.input_shape, g.n_block, g.n_flow), ([3, 64, 64], 4, 32));
        assert_eq!(g.conv, cfx_flows::blocks::InvConvKind::Svd);
        let Ok(AuxModel::Glow(g)) =
            model(&["--dataset", "image-folder", "--image-size", "32"], true)
        else {
            panic!("a Glow config")
        };
        assert_eq!((g.input_shape, g.n_block), ([3, 32, 32], 4));
        let Ok(AuxModel::RealNvp(r)) = model(&["--dataset", "image-folder"], false) else {
            panic!("a RealNVP config")
        };
        assert_eq!(r.input_shape, [3, 64, 64]);
        let Ok(AuxModel::Glow(g)) = model(&[], true) else {
            panic!("a Glow config")
        };
        assert_eq!((g.input_shape, g.n_block), ([1, 28, 28], 2));

        let err = |argv: &[&str], glow| model(argv, glow).unwrap_err().to_string();
        let e = err(&["--image-size", "32"], true);
        assert!(
            e.contains("--image-size is for --dataset image-folder"),
            "{e}"
        );
        let e = err(&["--n-flow", "4"], false);
        assert!(e.contains("--n-flow is a Glow setting"), "{e}");
        let e = err(&["--res-blocks", "2"], true);
        assert!(e.contains("--res-blocks is a RealNVP setting"), "{e}");
        let e = err(&["--resume", "--width", "8"], false);
        assert!(e.contains("--width cannot change when resuming"), "{e}");

        // --small is the base; the architecture flags apply on top of it.
        let Ok(AuxModel::Glow(g)) = model(&["--small", "--width", "24", "--affine"], true) else {
            panic!("a Glow config")
        };
        assert_eq!((g.n_flow, g.width, g.affine), (2, 24, true));
        let Ok(AuxModel::RealNvp(r)) = model(&["--small", "--width", "24"], false) else {
            panic!("a RealNVP config")
        };
        let net = cfx_flows::nn::CouplingNetConfig::ResNet {
            width: 24,
            blocks: 1,
        };
        assert_eq!((r.couplings_per_stage, r.net), (1, net));
        let Ok(AuxModel::RealNvp(r)) = model(&["--res-blocks", "2"], false) else {
            panic!("a RealNVP config")
        };
        let net = cfx_flows::nn::CouplingNetConfig::ResNet {
            width: 64,
            blocks: 2,
        };
        assert_eq!(r.net, net);
        let e = err(&["--resume", "--conv", "lu"], true);
        assert!(e.contains("--conv cannot change when resuming"), "{e}");
    }

    #[derive(Parser)]
    struct Gan {
        #[command(flatten)]
        args: GanArgs,
    }

    #[derive(Parser)]
    struct C3lt {
        #[command(flatten)]
        args: C3ltArgs,
    }

    /// The flags a new C3LT run needs: its pair and its three networks.
    const C3LT_NETWORKS: [&str; 8] = [
        "--pair",
        "4,9",
        "--classifier",
        "c",
        "--gan",
        "g",
        "--encoder",
        "e",
    ];

    /// A new C3LT run needs its pair and networks; a resumed one finds them in config.toml
    /// (flags may repeat them, not change them).
    #[test]
    fn resuming_c3lt_needs_only_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().to_str().unwrap();
        let parse = |extra: &[&str]| {
            let mut argv = vec!["t", "--runs-dir", runs];
            argv.extend_from_slice(extra);
            C3lt::try_parse_from(argv).map(|c| c.args)
        };
        assert!(
            parse(&["--pair", "4,9"]).is_err(),
            "a new run without its networks"
        );
        let full = C3LT_NETWORKS;
        let (cfg, root) = parse(&full).unwrap().config().unwrap();
        assert!(root.ends_with("c3lt-mnist-4-9"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("config.toml"), toml::to_string(&cfg).unwrap()).unwrap();

        let e = parse(&["--resume"])
            .unwrap()
            .config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--name, or --pair"), "{e}");
        for argv in [
            vec!["--resume", "--name", "c3lt-mnist-4-9", "--epochs", "3"],
            vec!["--resume", "--pair", "4,9"],
            [&["--resume"][..], &full[..]].concat(),
        ] {
            let (resumed, r) = parse(&argv).unwrap().config().unwrap();
            assert_eq!((resumed.gan, r), (PathBuf::from("g"), root.clone()));
        }
        let e = parse(&["--resume", "--pair", "4,9", "--gan", "g2", "--n-steps", "2"])
            .unwrap()
            .config()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--gan, --n-steps cannot change when resuming"),
            "{e}"
        );
    }

    /// `train gan-encoder --runs-dir RUNS --name enc EXTRA…`.
    fn encoder_args(runs: &str, extra: &[&str]) -> GanArgs {
        let mut argv = vec!["t", "--runs-dir", runs, "--name", "enc"];
        argv.extend_from_slice(extra);
        Gan::try_parse_from(argv).unwrap().args
    }

    /// A resumed encoder run takes its GAN from config.toml: --gan may be left out or
    /// repeated, not changed.
    #[test]
    fn resuming_an_encoder_keeps_its_gan() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().to_str().unwrap();
        let parse = |extra: &[&str]| encoder_args(runs, extra);
        let (cfg, root) = parse(&["--gan", "runs/g1"]).config(true).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("config.toml"), toml::to_string(&cfg).unwrap()).unwrap();
        let e = parse(&[]).config(true).unwrap_err().to_string();
        assert!(
            e.contains("needs --gan"),
            "a new encoder run needs its GAN: {e}"
        );
        for argv in [
            &["--resume", "--epochs", "7"][..],
            &["--resume", "--gan", "runs/g1"],
        ] {
            let (resumed, _) = parse(argv).config(true).unwrap();
            assert_eq!(resumed.gan, PathBuf::from("runs/g1"));
        }
        let e = parse(&["--resume", "--gan", "runs/g2"])
            .config(true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--gan cannot change when resuming") && e.contains("gan = \"runs/g1\""),
            "{e}"
        );
        // The run was trained on every class.
        let e = parse(&["--resume", "--classes", "4,9"])
            .config(true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--classes") && e.contains("classes = []"), "{e}");
        // The encoder's width is its GAN's, on resume as for a new run (the saved ngf
        // repeated used to pass).
        let ngf = cfg.train.model.ngf.to_string();
        let e = parse(&["--resume", "--width", &ngf])
            .config(true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--width belongs to `train dcgan`"), "{e}");
    }

    /// The encoder's schedule: a tenth of the rate for the last 40 % of its epochs unless
    /// `--milestones` says otherwise; the DCGAN keeps its rate; a resumed run keeps its own.
    #[test]
    fn gan_learning_rate_milestones() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().to_str().unwrap();
        let parse = |extra: &[&str], encoder| encoder_args(runs, extra).config(encoder);
        let (cfg, root) = parse(&["--gan", "runs/g"], true).unwrap();
        assert_eq!(cfg.train.milestones, vec![6]);
        let t = &cfg.train;
        assert_eq!((t.lr_at(5), t.lr_at(6)), (1e-3, 1e-3 * 0.1));
        let (short, _) = parse(&["--gan", "runs/g", "--epochs", "4"], true).unwrap();
        assert_eq!(short.train.milestones, vec![2]);
        let (given, _) = parse(&["--gan", "runs/g", "--milestones", "3,5"], true).unwrap();
        assert_eq!(given.train.milestones, vec![3, 5]);
        assert!((given.train.lr_at(5) - 1e-5).abs() < 1e-18);
        let (gan, _) = parse(&[], false).unwrap();
        assert!(gan.train.milestones.is_empty());
        assert_eq!(gan.train.lr_at(100), gan.train.lr);

        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("config.toml"), toml::to_string(&cfg).unwrap()).unwrap();
        let (resumed, _) = parse(&["--resume", "--milestones", "6"], true).unwrap();
        assert_eq!(resumed.train.milestones, vec![6]);
        let e = parse(&["--resume", "--milestones", "8"], true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--milestones"), "{e}");
        // A config.toml from before the schedule existed resumes at a constant rate.
        let mut old: toml::Table = toml::Table::try_from(&cfg).unwrap();
        assert!(
            old.remove("milestones").is_some(),
            "the field was in the file"
        );
        std::fs::write(root.join("config.toml"), toml::to_string(&old).unwrap()).unwrap();
        let (resumed, _) = parse(&["--resume"], true).unwrap();
        assert!(resumed.train.milestones.is_empty());
    }

    /// `--latent-weight` sets the encoder's latent term, belongs to the encoder alone, is
    /// checked, and an encoder config.toml written before it existed still resumes (weight 1).
    #[test]
    fn the_encoders_latent_weight() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().to_str().unwrap();
        let parse = |extra: &[&str]| encoder_args(runs, extra);
        let (cfg, root) = parse(&["--gan", "runs/g", "--latent-weight", "0.25"])
            .config(true)
            .unwrap();
        assert_eq!(cfg.latent_weight, 0.25);
        let (cfg0, _) = parse(&["--gan", "runs/g"]).config(true).unwrap();
        assert_eq!(cfg0.latent_weight, 0.0);
        for bad in ["-1", "NaN", "inf"] {
            let flag = format!("--latent-weight={bad}");
            let e = parse(&["--gan", "runs/g", &flag])
                .config(true)
                .unwrap_err()
                .to_string();
            assert!(e.contains("(--latent-weight) must be"), "{bad}: {e}");
        }
        let e = parse(&["--latent-weight", "0"])
            .config(false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("belongs to `train gan-encoder`"), "{e}");
        // Also when resuming a DCGAN run, which has no latent term to keep or change.
        let e = parse(&["--resume", "--latent-weight", "0"])
            .config(false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("belongs to `train gan-encoder`"), "{e}");

        std::fs::create_dir_all(&root).unwrap();
        let old: String = toml::to_string(&cfg)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("latent_weight"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(
            old,
            toml::to_string(&cfg).unwrap(),
            "the field was in the file"
        );
        std::fs::write(root.join("config.toml"), old).unwrap();
        let (resumed, _) = parse(&["--resume"]).config(true).unwrap();
        assert_eq!(resumed.latent_weight, 1.0);
        // The weight the old file loads with, repeated, is no change.
        let (resumed, _) = parse(&["--resume", "--latent-weight", "1"])
            .config(true)
            .unwrap();
        assert_eq!(resumed.latent_weight, 1.0);
        let e = parse(&["--resume", "--latent-weight", "0.5"])
            .config(true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--latent-weight"), "{e}");

        // A hand-edited weight is refused on resume, naming the file.
        let edited = toml::to_string(&cfg)
            .unwrap()
            .replace("latent_weight = 0.25", "latent_weight = -1.0");
        assert!(edited.contains("latent_weight = -1.0"));
        std::fs::write(root.join("config.toml"), edited).unwrap();
        let e = format!("{:#}", parse(&["--resume"]).config(true).unwrap_err());
        assert!(
            e.contains("config.toml") && e.contains("must be a finite number ≥ 0, not -1"),
            "{e}"
        );
    }
}
