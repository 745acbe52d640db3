//! Building an explainer from trained run folders, and running it batch by batch: shared by
//! `explain` and `evaluate`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::{Classifier, IbInnClassifier};
use cfx_counterfactual::{
    AlphaChoice, AscentSpace, ClassMeans, ClassMeansBuilder, DeltaMeans, Diffeo, DiffeoConfig,
    Ecinn, EcinnPixels, Explainer, Gb, GbConfig, Gl, GlConfig, InversionConfig, MeansCacheKey,
    Miss, Query, TargetClass, class_prototypes,
};
use cfx_datasets::{Augmentation, DatasetKind, Split, eval_batches, ordered_batches};

use super::Method;
use crate::train::ibinn::load_trained;
use crate::train::supervised::{load_autoencoder, load_classifier};

/// Which explainer over which trained models.
#[derive(Debug, Clone)]
pub struct RunnerSpec {
    pub method: Method,
    /// `train ib-inn` run (ecinn) or `train classifier` run (gb, gl).
    pub model: PathBuf,
    /// GL's autoencoder run.
    pub autoencoder: Option<PathBuf>,
    /// The run whose latent space the method works in: for `diffeo` a flow (RealNVP, Glow or
    /// IB-INN run), a VAE or a GAN (`train dcgan|gan-encoder`); for `c3lt` its maps
    /// (`train c3lt`).
    pub latent: Option<PathBuf>,
    /// GB/GL settings as TOML.
    pub method_config: Option<PathBuf>,
    /// GB/GL: the class rule under the file's settings (a `target_class` there wins in
    /// [`RunnerSpec::settings`]; the commands call [`RunnerSpec::agreed_settings`], which
    /// refuses one that disagrees).
    pub baseline_target: TargetClass,
    /// ECINN: the α of each variant.
    pub alphas: Vec<AlphaChoice>,
    /// ECINN: the class centres `Δ` is taken between.
    pub delta: DeltaMeans,
    /// ECINN: 8-bit images or the raw inverse.
    pub pixels: EcinnPixels,
}

/// A method's settings as read once from its TOML over its defaults: the cache key of
/// `evaluate` and the explainer it builds both come from this one value, so an edit of the
/// file between the two cannot make them disagree.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodSettings {
    /// ECINN and C3LT take none (ECINN's α come from the flags).
    None,
    Gb(GbConfig),
    Gl(GlConfig),
    /// Diffeo and pixel ascent.
    Ascent(DiffeoConfig),
}

impl MethodSettings {
    /// As TOML, for cache keys and reports; `None` for methods without settings.
    pub fn to_toml(&self) -> Result<Option<String>> {
        let text = match self {
            Self::None => return Ok(None),
            Self::Gb(c) => toml::to_string(c),
            Self::Gl(c) => toml::to_string(c),
            Self::Ascent(c) => toml::to_string(c),
        };
        Ok(Some(text.context("method settings as TOML")?))
    }

    /// Whether the method must reach each query's target or any other class.
    pub fn target_class(&self) -> TargetClass {
        match self {
            Self::Gb(c) => c.target_class,
            Self::Gl(c) => c.target_class,
            Self::None | Self::Ascent(_) => TargetClass::Given,
        }
    }
}

impl RunnerSpec {
    /// The method's settings as they will run: its defaults with the file's fields over them.
    /// Cached counterfactuals are keyed by these, so a change of default invalidates them as
    /// a changed file does.
    pub fn settings(&self) -> Result<MethodSettings> {
        let file = &self.method_config;
        Ok(match self.method {
            Method::Gb => MethodSettings::Gb(read_method_config_over(
                file,
                GbConfig {
                    target_class: self.baseline_target,
                    ..GbConfig::default()
                },
            )?),
            Method::Gl => MethodSettings::Gl(read_method_config_over(
                file,
                GlConfig {
                    target_class: self.baseline_target,
                    ..GlConfig::default()
                },
            )?),
            Method::Diffeo | Method::Pixel => {
                // Seed 002 App. C.6 gives each space its own rate: 5e-2 in a flow's latent
                // space, 5e-3 in a VAE's or GAN's, 5e-4 on the pixels.
                let base = match (self.method, &self.latent) {
                    (Method::Pixel, _) => DiffeoConfig::for_pixels(),
                    (_, Some(dir)) if generator_kind(dir).is_some() => {
                        DiffeoConfig::for_generators()
                    }
                    _ => DiffeoConfig::default(),
                };
                MethodSettings::Ascent(read_method_config_over(file, base)?)
            }
            Method::Ecinn | Method::C3lt => MethodSettings::None,
        })
    }

    /// [`RunnerSpec::settings`], refused where a GB/GL method file sets another class rule
    /// than `baseline_target`: one rule per command, so that `evaluate`'s report header and
    /// `explain`'s `--target` hold for every query.
    pub fn agreed_settings(&self) -> Result<MethodSettings> {
        let settings = self.settings()?;
        let rule = settings.target_class();
        if matches!(self.method, Method::Gb | Method::Gl) && rule != self.baseline_target {
            bail!(
                "{} sets target_class = \"{rule}\", but this command gives {} \"{}\" (explain: the classes --target names); with `cargo xtask evaluate` pass --baseline-target {rule}, or drop the field",
                self.method_config
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                self.method.name(),
                self.baseline_target,
            );
        }
        Ok(settings)
    }

    /// The explainer, with `settings` from [`RunnerSpec::settings`] of this spec.
    pub fn build<B: AutodiffBackend + cfx_linalg::LinalgBackend>(
        &self,
        settings: MethodSettings,
        dataset: DatasetKind,
        data_dir: Option<&Path>,
        device: &B::Device,
    ) -> Result<Runner<B>> {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let device = device.clone();
        let mismatch = || anyhow::anyhow!("settings of another method than {:?}", self.method);
        Ok(match self.method {
            Method::Ecinn => {
                let model = IbInnClassifier::new(load_trained::<I<B>>(&self.model, &device)?);
                let means = ecinn_means(&model, &self.model, dataset, data_dir, &device)?;
                Runner::Ecinn(
                    Box::new(
                        Ecinn::new(model, &means)?
                            .with_delta(self.delta)
                            .with_pixels(self.pixels),
                    ),
                    self.alphas.clone(),
                )
            }
            Method::Gb => {
                let cnn = load_classifier::<B>(&self.model, &device)?;
                let MethodSettings::Gb(cfg) = settings else {
                    return Err(mismatch());
                };
                Runner::Iterative(Box::new(Gb::new(cnn, cfg)))
            }
            Method::Diffeo | Method::Pixel => {
                let cnn = load_classifier::<B>(&self.model, &device)?;
                use burn::module::AutodiffModule;
                let inner = Box::new(cnn.valid());
                let latent = match (self.method, &self.latent) {
                    (Method::Pixel, _) => None,
                    (_, Some(dir)) => Some(dir),
                    (_, None) => bail!(
                        "diffeo needs --flow runs/<name>: a `cargo xtask train realnvp|glow|ib-inn` run, or a VAE or GAN run (`train vae|dcgan|gan-encoder`)"
                    ),
                };
                let MethodSettings::Ascent(cfg) = settings else {
                    return Err(mismatch());
                };
                if let Some(dir) = latent
                    && let Some(generator) = load_latent_generator::<B>(dir, &device)?
                {
                    return Ok(Runner::Iterative(Box::new(Diffeo::over_generator(
                        generator,
                        InversionConfig::default(),
                        Box::new(cnn),
                        inner,
                        cfg,
                    )?)));
                }
                let (space, flow, input_map) = match latent {
                    Some(dir) => {
                        let (flow, map) = crate::train::density::load_flow::<B>(dir, &device)?;
                        (AscentSpace::Latent, Some(flow), map)
                    }
                    None => (AscentSpace::Pixel, None, Augmentation::UNIT),
                };
                Runner::Iterative(Box::new(Diffeo::new(
                    flow,
                    input_map,
                    Box::new(cnn),
                    inner,
                    space,
                    cfg,
                )?))
            }
            Method::C3lt => {
                let Some(dir) = &self.latent else {
                    bail!("c3lt needs --c3lt runs/<name> (a `cargo xtask train c3lt` run)");
                };
                let cnn = load_classifier::<I<B>>(&self.model, &device)?;
                Runner::Iterative(Box::new(crate::train::c3lt::load_c3lt::<I<B>>(
                    dir,
                    Box::new(cnn),
                    &device,
                )?))
            }
            Method::Gl => {
                let MethodSettings::Gl(cfg) = settings else {
                    return Err(mismatch());
                };
                let Some(ae_dir) = &self.autoencoder else {
                    bail!("gl needs --autoencoder runs/<name> (cargo xtask train autoencoder)");
                };
                let cnn = load_classifier::<B>(&self.model, &device)?;
                let ae = load_autoencoder::<B>(ae_dir, &device)?;
                use burn::module::AutodiffModule;
                let (cnn_i, ae_i) = (cnn.valid(), ae.valid());
                let train = dataset.load_shaped(
                    Split::Train,
                    data_dir,
                    Some(cnn_i.input_shape()),
                    run_train_limit(&self.model),
                )?;
                eprintln!("GL: class prototypes over {} training images", train.len());
                let protos = class_prototypes(
                    &cnn_i,
                    &ae_i,
                    eval_batches(&train, 500, &Augmentation::UNIT)
                        .map(|h| h.to_device::<I<B>>(&device).images),
                )?;
                Runner::Iterative(Box::new(Gl::new(cnn, ae, protos, cfg)))
            }
        })
    }
}

/// One variant of a batch, per query `i` of its `Q`.
pub struct VariantData {
    pub name: String,
    pub alphas: Vec<Option<f64>>,
    /// `[Q·CHW]`.
    pub pixels: Vec<f32>,
    /// `[Q·K]`.
    pub probabilities: Vec<f32>,
    /// Why query `i` has no counterfactual (`None`: it has one).
    pub misses: Vec<Option<Miss>>,
    /// ECINN: whether query `i`'s inverse pass left the pixel range
    /// ([`cfx_counterfactual::EcinnOutput::out_of_range`]); empty for methods that cannot.
    pub out_of_range: Vec<bool>,
}

/// One batch through a method: per variant, the counterfactuals and the model's view of them.
pub struct BatchResult {
    pub predicted: Vec<usize>,
    pub variants: Vec<VariantData>,
    pub seconds: f64,
}

pub enum Runner<B: AutodiffBackend> {
    Ecinn(Box<Ecinn<B::InnerBackend>>, Vec<AlphaChoice>),
    Iterative(Box<dyn Explainer<B::InnerBackend>>),
}

/// Any tensor's values on the host, as f32.
pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap_or_default()
}

impl<B: AutodiffBackend> Runner<B> {
    pub fn classifier(&self) -> &dyn Classifier<B::InnerBackend> {
        match self {
            Self::Ecinn(e, _) => &e.classifier,
            Self::Iterative(e) => e.classifier(),
        }
    }

    pub fn run(&self, x: Tensor<B::InnerBackend, 4>, queries: &[Query]) -> Result<BatchResult> {
        match self {
            Self::Ecinn(e, choices) => {
                let out = e.explain_alphas(x, queries, choices)?;
                let a = choices.len();
                let dims = out.counterfactuals.dims();
                let probs = e.probabilities(out.counterfactuals.clone());
                let k = probs.dims()[1];
                let px = host(out.counterfactuals);
                let pr = host(probs);
                let chw = dims[1] * dims[2] * dims[3];
                let variants = choices
                    .iter()
                    .enumerate()
                    .map(|(j, c)| {
                        let rows = (0..queries.len()).map(|i| i * a + j);
                        let pick = |v: &[f32], w: usize| -> Vec<f32> {
                            rows.clone()
                                .flat_map(|r| v[r * w..(r + 1) * w].to_vec())
                                .collect()
                        };
                        let alphas = rows.clone().map(|r| Some(out.alphas[r])).collect();
                        VariantData {
                            name: c.label(),
                            alphas,
                            pixels: pick(&px, chw),
                            probabilities: pick(&pr, k),
                            misses: vec![None; queries.len()],
                            out_of_range: rows.clone().map(|r| out.out_of_range[r]).collect(),
                        }
                    })
                    .collect();
                Ok(BatchResult {
                    predicted: out.predicted,
                    variants,
                    seconds: out.seconds,
                })
            }
            Self::Iterative(e) => {
                let out = e.explain(x, queries)?;
                Ok(BatchResult {
                    variants: vec![VariantData {
                        name: "counterfactual".into(),
                        alphas: out.alphas.clone(),
                        pixels: host(out.counterfactuals),
                        probabilities: host(out.probabilities),
                        misses: out.misses,
                        out_of_range: vec![],
                    }],
                    predicted: out.predicted,
                    seconds: out.seconds,
                })
            }
        }
    }
}

/// The decoders without an inverse that `diffeo` can ascend in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GeneratorKind {
    Gan,
    Vae,
}

/// Which decoder a `train vae|dcgan|gan-encoder` run holds; `None` for any other run (a flow).
/// The one place that maps run kinds to decoders: the ascent's defaults and the loader both ask it.
fn generator_kind(run: &Path) -> Option<GeneratorKind> {
    match crate::train::supervised::run_kind(run).as_deref() {
        Some("dcgan" | "gan_encoder") => Some(GeneratorKind::Gan),
        Some("vae") => Some(GeneratorKind::Vae),
        _ => None,
    }
}

/// The VAE or GAN of a `train vae|dcgan|gan-encoder` run; `None` for any other run (a flow).
pub fn load_latent_generator<B: Backend>(
    run: &Path,
    device: &B::Device,
) -> Result<Option<Box<dyn cfx_generative::LatentGenerator<B>>>> {
    Ok(match generator_kind(run) {
        Some(GeneratorKind::Gan) => Some(crate::train::gan::load_gan_generator::<B>(run, device)?),
        Some(GeneratorKind::Vae) => Some(Box::new(crate::train::supervised::load_vae::<B>(
            run, device,
        )?)),
        None => None,
    })
}

fn run_config(run: &Path) -> Option<toml::Value> {
    toml::from_str(&std::fs::read_to_string(run.join("config.toml")).ok()?).ok()
}

/// The `dataset` field of a run's `config.toml`.
pub fn run_dataset(run: &Path) -> Option<DatasetKind> {
    run_config(run)?.get("dataset")?.as_str()?.parse().ok()
}

/// Refuses `run` (passed as `flag`) when it was trained on another dataset than `this`, the run
/// being set up, is on. MNIST and Fashion-MNIST networks share 1×28×28 shapes, so no shape check
/// can tell them apart: only the run's own config can.
pub fn require_run_dataset(flag: &str, run: &Path, dataset: DatasetKind, this: &str) -> Result<()> {
    if let Some(d) = run_dataset(run)
        && d != dataset
    {
        bail!(
            "{flag} {} was trained on {d}, {this} is on {dataset}: pass --dataset {d}, or one trained on {dataset}",
            run.display()
        );
    }
    Ok(())
}

/// The `train_limit` of a run: the class means cover the images the model was trained on.
pub fn run_train_limit(run: &Path) -> Option<usize> {
    usize::try_from(run_config(run)?.get("train_limit")?.as_integer()?).ok()
}

/// The method's settings: `base`, with each top-level field the TOML file names replaced.
/// Unknown fields still fail, since the merged table is parsed as `T`.
fn read_method_config_over<T: serde::de::DeserializeOwned + serde::Serialize>(
    p: &Option<PathBuf>,
    base: T,
) -> Result<T> {
    let Some(p) = p else { return Ok(base) };
    let mut table = toml::Table::try_from(&base).context("method defaults as TOML")?;
    let given: toml::Table = crate::train::run::read_toml(p)?;
    table.extend(given);
    toml::Value::Table(table)
        .try_into()
        .with_context(|| format!("{} is not a valid configuration", p.display()))
}

/// ECINN's class means, from the cache next to the model or computed over the training set.
pub(crate) fn ecinn_means<I: Backend>(
    model: &IbInnClassifier<I>,
    run: &Path,
    dataset: DatasetKind,
    data_dir: Option<&Path>,
    device: &I::Device,
) -> Result<ClassMeans> {
    let model_file = run.join("model.mpk");
    let bytes = std::fs::read(&model_file)
        .with_context(|| format!("cannot read {}", model_file.display()))?;
    // The reference code averages over its training loader: training augmentation, fixed seed.
    let limit = run_train_limit(run);
    let recipe = format!(
        "{dataset} train split (first {}), IB-INN training augmentation, seed 0",
        limit.map_or("all".into(), |n| n.to_string())
    );
    let key = MeansCacheKey::new(&bytes, recipe);
    let cache = run.join("ecinn-means.safetensors");
    match ClassMeans::load(&cache) {
        Ok((m, k)) if k == key => return Ok(m),
        Ok(_) => eprintln!(
            "{} is stale (the model changed): recomputing",
            cache.display()
        ),
        Err(_) if !cache.exists() => {}
        Err(e) => eprintln!("ignoring {e}: recomputing"),
    }
    let shape = Some(model.model.input_shape());
    let train = dataset.load_shaped(Split::Train, data_dir, shape, limit)?;
    eprintln!(
        "ECINN preprocessing: class means over {} training images",
        train.len()
    );
    let started = std::time::Instant::now();
    let mut b = ClassMeansBuilder::new(model.model.n_classes(), model.model.dim());
    for host in ordered_batches(&train, 500, Augmentation::IBINN_TRAIN, 0) {
        b.add(&model.model, host.to_device::<I>(device).images);
    }
    let means = b.finish()?;
    eprintln!("  done in {:.1} s", started.elapsed().as_secs_f64());
    means.save(&cache, &key)?;
    Ok(means)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_file(text: &str) -> (tempfile::TempDir, Option<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("method.toml");
        std::fs::write(&p, text).unwrap();
        (dir, Some(p))
    }

    #[test]
    fn a_method_file_overrides_only_the_fields_it_names() {
        let (_d, p) = config_file("max_steps = 3000\n");
        let cfg = read_method_config_over(&p, DiffeoConfig::for_generators()).unwrap();
        assert_eq!(cfg.max_steps, 3000);
        assert_eq!(cfg.learning_rate, 5e-3, "the generator default stays");
        assert_eq!(cfg.clip, Some([0.0, 1.0]));
        let flows = read_method_config_over(&p, DiffeoConfig::default()).unwrap();
        assert_eq!(flows.learning_rate, 5e-2);
        assert_eq!(
            read_method_config_over(&None, DiffeoConfig::for_generators()).unwrap(),
            DiffeoConfig::for_generators()
        );
    }

    fn spec(method: Method, latent: Option<PathBuf>, method_config: Option<PathBuf>) -> RunnerSpec {
        RunnerSpec {
            method,
            model: PathBuf::from("unused"),
            autoencoder: None,
            latent,
            method_config,
            alphas: vec![],
            delta: DeltaMeans::default(),
            pixels: EcinnPixels::default(),
            baseline_target: TargetClass::Given,
        }
    }

    #[test]
    fn the_baseline_target_rule_is_a_default_that_a_method_file_overrides() {
        for method in [Method::Gb, Method::Gl] {
            let mut s = spec(method, None, None);
            assert_eq!(s.settings().unwrap().target_class(), TargetClass::Given);
            s.baseline_target = TargetClass::Other;
            assert_eq!(s.settings().unwrap().target_class(), TargetClass::Other);
            let (_d, p) = config_file("target_class = \"given\"\n");
            s.method_config = p;
            assert_eq!(s.settings().unwrap().target_class(), TargetClass::Given);
            // The rule is part of the settings, so of evaluate's cache key.
            let text = s.settings().unwrap().to_toml().unwrap().unwrap();
            assert!(text.contains("target_class = \"given\""), "{text}");
        }
        let (_d, p) = config_file("target_class = \"any\"\n");
        let e = spec(Method::Gb, None, p).settings().unwrap_err();
        assert!(
            format!("{e:#}").contains("not a valid configuration"),
            "{e:#}"
        );
    }

    fn learning_rate(spec: &RunnerSpec) -> f64 {
        match spec.settings().unwrap() {
            MethodSettings::Ascent(c) => c.learning_rate,
            other => panic!("diffeo has ascent settings, got {other:?}"),
        }
    }

    #[test]
    fn each_ascent_space_gets_seed_002s_rate_and_the_settings_name_it() {
        let vae = tempfile::tempdir().unwrap();
        std::fs::write(vae.path().join("model.toml"), "kind = \"vae\"\n").unwrap();
        let flow = tempfile::tempdir().unwrap();
        let (vae, flow) = (vae.path().to_path_buf(), Some(flow.path().to_path_buf()));
        assert_eq!(learning_rate(&spec(Method::Pixel, None, None)), 5e-4);
        assert_eq!(
            learning_rate(&spec(Method::Diffeo, flow.clone(), None)),
            5e-2
        );
        assert_eq!(learning_rate(&spec(Method::Diffeo, Some(vae), None)), 5e-3);
        let (_d, p) = config_file("learning_rate = 0.01\n");
        assert_eq!(learning_rate(&spec(Method::Pixel, None, p)), 0.01);
        let ecinn = spec(Method::Ecinn, None, None).settings().unwrap();
        assert_eq!(ecinn, MethodSettings::None);
        assert_eq!(ecinn.to_toml().unwrap(), None);
        let gb = spec(Method::Gb, None, None).settings().unwrap();
        let text = gb.to_toml().unwrap().unwrap();
        assert_eq!(
            toml::from_str::<GbConfig>(&text).unwrap(),
            GbConfig::default()
        );
    }

    #[test]
    fn a_misspelt_field_is_named() {
        let (_d, p) = config_file("max_step = 3000\n");
        let e = read_method_config_over(&p, DiffeoConfig::for_generators()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("method.toml") && msg.contains("max_step"),
            "{msg}"
        );
    }
}
