//! `cargo xtask evaluate`: runs counterfactual methods over the first N test images with one
//! random target each (Paper 4's protocol, seed 004 L5428-5430), caches what they produce, and
//! scores them with every metric of `cfx-metrics`.
//!
//! ```text
//! <out>/<method>/counterfactuals.safetensors   the cache (regenerated when its key changes)
//! <out>/results.md | results.csv | results.json
//! <out>/samples.csv                             every method's per-sample scores, input by input
//! <out>/charts/<metric>.png                     bars with 95 % whiskers, one per metric
//! <out>/charts/cout-curves.png                  COUT's mean perturbation curves
//! <out>/gallery.png                             inputs (top row), then each method's counterfactuals (blank: none)
//! ```
//!
//! With `--heatmaps`, the heatmap methods are scored too (deletion, insertion; see
//! `cfx_metrics::heatmap`) on the IB-INN and on the suite's CNN, in the same tables.

pub mod cache;
pub mod charts;
mod heatmaps;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::{Classifier, IbInnClassifier, predictions};
use cfx_counterfactual::{Alpha1Rule, AlphaChoice, EcinnPixels, TargetClass};
use cfx_datasets::{DatasetKind, ImageSet, Split};
use cfx_linalg::{FeatureStats, LinalgBackend};
use cfx_metrics::{
    ClassAutoencoders, CounterfactualSet, Cout, DataRange, Direction, ElasticNet, EvalContext,
    Fid256, Im1, Im2, Lvs, Metric, NearestNeighbours, Oracle, Proximity, Summary, Tcv, Val,
    evaluate_all,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::backend::{BackendJob, BackendKind};
use crate::explain::Method;
use crate::explain::runner::{MethodSettings, RunnerSpec, run_dataset};
use crate::progress::Work;
use crate::train::ibinn::load_trained;
use crate::train::suite::{MemberScore, SuiteManifest};
use crate::train::supervised::{load_autoencoder, load_classifier};
use cache::Cached;

#[derive(Debug, Clone)]
pub struct EvaluateJob {
    pub methods: Vec<Method>,
    /// The IB-INN run ECINN explains.
    pub ibinn: Option<PathBuf>,
    /// The flow, VAE or GAN diffeo ascends in; the IB-INN where not given.
    pub flow: Option<PathBuf>,
    /// C3LT's maps (a `train c3lt` run).
    pub c3lt: Option<PathBuf>,
    /// Evaluate on test images of these two classes only, each sent to the other (C3LT's
    /// protocol); taken from the C3LT run when not given.
    pub pair: Option<[usize; 2]>,
    /// Only the pair's first class, sent to the second.
    pub one_way: bool,
    /// `train eval-suite` folder: the CNN GB/GL explain, the oracles and the autoencoders.
    pub suite: PathBuf,
    pub data_dir: Option<PathBuf>,
    /// The first `limit` test images.
    pub limit: usize,
    /// GB and GL only on the first N of them (they take seconds per image on a CPU).
    pub slow_limit: Option<usize>,
    pub seed: u64,
    pub batch_size: usize,
    pub gb_config: Option<PathBuf>,
    pub gl_config: Option<PathBuf>,
    /// GB's and GL's class rule; `None`: [`EvaluateJob::baseline_target`] decides.
    pub baseline_target: Option<TargetClass>,
    pub diffeo_config: Option<PathBuf>,
    /// Pixel ascent's settings; `None` falls back on `diffeo_config`.
    pub pixel_config: Option<PathBuf>,
    /// ECINN's and ECINNh's output: 8-bit images or the raw inverse.
    pub pixels: EcinnPixels,
    /// Which α ECINN decodes. Paper 4 scores the convincing α1 of the authors' code
    /// (`0.8 + α0/2`, L5375-5393), the default; other choices measure how the scores depend on
    /// how far the latent moves.
    pub alpha: AlphaChoice,
    pub cout_steps: usize,
    pub knn: usize,
    pub gallery: usize,
    pub regenerate: bool,
    /// Heatmap methods to score (none: skip).
    pub heatmaps: Vec<crate::heatmaps::HeatmapMethod>,
    /// Heatmaps on the first N test images.
    pub heatmap_limit: usize,
    pub shap_baselines: usize,
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct MethodResult {
    pub method: Method,
    /// A second row of a method, scored on only the inputs that a `--slow-limit`ed method saw,
    /// so that all rows of that comparison share their inputs. Their targets agree wherever the
    /// explained models predict the same class: each input takes one draw of the seeded
    /// generator, relative to its predicted class; GB and GL under `--baseline-target other`
    /// keep the class they reached instead.
    pub shared_inputs: bool,
    /// The model it explains.
    pub model: String,
    pub samples: usize,
    pub valid: usize,
    pub generation_seconds: f64,
    pub seconds_per_counterfactual: f64,
    pub from_cache: bool,
    pub metric_seconds: f64,
    /// The method's settings as TOML (its defaults under any method file), for methods that
    /// have some: GB's and GL's scores depend on them (docs/results.md, "GB's pixel range").
    pub settings: Option<String>,
    /// Samples without a counterfactual, by why ([`cfx_counterfactual::Miss`]'s names); `None`
    /// where the cache predates the reasons.
    pub misses: Option<BTreeMap<String, usize>>,
    pub metrics: Vec<Summary>,
}

impl MethodResult {
    /// The row's name in the tables.
    pub fn label(&self) -> String {
        let name = report::method_name(self.method);
        match self.shared_inputs {
            true => format!("{name}, same {} inputs", self.samples),
            false => name,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EvaluationReport {
    pub dataset: String,
    pub range: DataRange,
    pub range_label: String,
    pub suite: String,
    /// How the suite's members were trained (their `test.json`).
    pub suite_models: Vec<MemberScore>,
    pub ibinn: Option<String>,
    /// `image` (8-bit) or `raw`: what ECINN and ECINNh were scored on.
    pub ecinn_pixels: &'static str,
    /// The α ECINN decoded ([`AlphaChoice::label`]).
    pub ecinn_alpha: String,
    /// GB's and GL's class rule: `other` (any class but the predicted one; the class reached
    /// is the target the metrics use) or `given`.
    pub baseline_target: TargetClass,
    pub test_images: usize,
    pub seed: u64,
    pub backend: String,
    pub cout_steps: usize,
    pub methods: Vec<MethodResult>,
    pub heatmaps: Vec<heatmaps::HeatmapResult>,
    pub total_seconds: f64,
    pub files: Vec<String>,
}

/// The rows of `set` whose inputs are `ids`, in that order.
fn shared_rows(set: &CounterfactualSet, ids: &[usize]) -> Vec<usize> {
    ids.iter()
        .filter_map(|id| set.ids.iter().position(|x| x == id))
        .collect()
}

fn unit_pixels(test: &ImageSet, n: usize) -> Vec<f32> {
    (0..n).flat_map(|i| test.unit_image(i)).collect()
}

impl EvaluateJob {
    fn explained_model(&self, method: Method) -> Result<PathBuf> {
        match method {
            Method::Ecinn => self
                .ibinn
                .clone()
                .context("ecinn needs --ibinn runs/<name> (a `cargo xtask train ib-inn` run)"),
            Method::Gb | Method::Gl | Method::Diffeo | Method::Pixel | Method::C3lt => {
                Ok(self.suite.join("classifier"))
            }
        }
    }

    /// The class pair in effect: `--pair`, else the C3LT run's when c3lt is evaluated.
    fn resolve_pair(&self) -> Result<Option<[usize; 2]>> {
        let from_run = match (&self.c3lt, self.methods.contains(&Method::C3lt)) {
            (Some(run), true) => Some(crate::train::c3lt::read_c3lt_run(run)?.pair),
            _ => None,
        };
        match (self.pair, from_run) {
            (Some(p), Some(r)) if p != r => {
                bail!("--pair {p:?} differs from the pair {r:?} the C3LT run was trained for")
            }
            (Some(p), _) => Ok(Some(p)),
            (None, r) => Ok(r),
        }
    }

    fn sample_count(&self, method: Method, test_len: usize) -> usize {
        let n = match method {
            Method::Ecinn | Method::C3lt => self.limit,
            Method::Gb | Method::Gl | Method::Diffeo | Method::Pixel => {
                self.slow_limit.unwrap_or(self.limit).min(self.limit)
            }
        };
        n.min(test_len)
    }

    /// GB's and GL's class rule: alibi's default `other`, as Paper 4 ran them (its GB and GL
    /// rows are scored against the class each reached, the authors' `oracle.py`), except under
    /// a class pair, whose protocol names each input's target.
    fn baseline_target(&self) -> TargetClass {
        match (self.baseline_target, self.pair) {
            (Some(t), _) => t,
            (None, Some(_)) => TargetClass::Given,
            (None, None) => TargetClass::Other,
        }
    }

    fn spec(&self, method: Method) -> Result<RunnerSpec> {
        Ok(RunnerSpec {
            method,
            model: self.explained_model(method)?,
            autoencoder: (method == Method::Gl).then(|| self.suite.join("ae-gl")),
            latent: match method {
                Method::Diffeo => Some(self.flow.clone().or_else(|| self.ibinn.clone()).context(
                    "diffeo needs --flow runs/<name> (or --ibinn): the flow, VAE or GAN it ascends in",
                )?),
                Method::C3lt => Some(
                    self.c3lt
                        .clone()
                        .context("c3lt needs --c3lt runs/<name> (a `train c3lt` run)")?,
                ),
                _ => None,
            },
            method_config: match method {
                Method::Gb => self.gb_config.clone(),
                Method::Gl => self.gl_config.clone(),
                Method::Diffeo => self.diffeo_config.clone(),
                Method::Pixel => self.pixel_config.clone().or(self.diffeo_config.clone()),
                Method::Ecinn | Method::C3lt => None,
            },
            alphas: vec![self.alpha],
            delta: Default::default(),
            pixels: self.pixels,
            baseline_target: self.baseline_target(),
        })
    }

    /// What the cached counterfactuals depend on.
    fn key(
        &self,
        spec: &RunnerSpec,
        settings: &MethodSettings,
        n: usize,
        dataset: DatasetKind,
    ) -> Result<String> {
        let method = spec.method;
        let mut files = vec![spec.model.join("model.mpk")];
        if let Some(ae) = &spec.autoencoder {
            files.push(ae.join("model.mpk"));
        }
        if let Some(dir) = &spec.latent {
            files.extend(cache::model_files(dir)?);
        }
        let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        cache::cache_key(
            &paths,
            &format!(
                "{method:?} {dataset} first {n} test images{}, seed {}, {}{}{}",
                match (self.pair, self.one_way) {
                    (Some([a, b]), true) => format!(" of class {a} sent to {b}"),
                    (Some(p), false) => format!(" of classes {p:?}"),
                    (None, _) => String::new(),
                },
                self.seed,
                // Every method's key named α1 before `--alpha` existed; those words stay, so
                // caches made then stay valid, and only ECINN's key follows the flag.
                match (method, self.alpha) {
                    (Method::Ecinn, a) if a != AlphaChoice::Convincing(Alpha1Rule::ArxivCode) => {
                        a.label()
                    }
                    _ => "alpha1 (arXiv/code)".into(),
                },
                // 8-bit counterfactuals are another set than the raw ones; raw is what ECINN
                // produced before the option, so its caches keep their key.
                match (method, spec.pixels) {
                    (Method::Ecinn, EcinnPixels::Image) => ", 8-bit images",
                    _ => "",
                },
                settings
                    .to_toml()?
                    .map(|t| format!(", settings {t}"))
                    .unwrap_or_default()
            ),
        )
    }

    /// Fresh counterfactuals from `spec` run with `settings`, stored under `key` (computed by the
    /// caller from the same spec and settings before any model ran).
    #[allow(clippy::too_many_arguments)]
    fn generate<B: AutodiffBackend + LinalgBackend>(
        &self,
        spec: &RunnerSpec,
        settings: MethodSettings,
        key: String,
        dataset: DatasetKind,
        test: &ImageSet,
        selection: &[usize],
        device: &B::Device,
    ) -> Result<Cached> {
        let method = spec.method;
        let n = selection.len();
        let any_other = settings.target_class() == TargetClass::Other;
        let runner = spec.build::<B>(settings, dataset, self.data_dir.as_deref(), device)?;
        let shape = test.image_shape();
        let k = runner.classifier().n_classes();
        let pixels: Vec<f32> = selection.iter().flat_map(|&i| test.unit_image(i)).collect();
        let mut set = CounterfactualSet {
            shape,
            inputs: pixels.clone(),
            counterfactuals: Vec::with_capacity(pixels.len()),
            predicted: vec![],
            cf_predicted: vec![],
            targets: vec![],
            ids: selection.to_vec(),
        };
        let targets = match self.pair {
            Some(p) => crate::explain::TargetMode::Pair(p),
            None => crate::explain::TargetMode::Random,
        };
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut bar = Work::new(method.name(), n, "inputs");
        let mut seconds = 0.0;
        let mut misses = Vec::with_capacity(n);
        let b = self.batch_size.max(1);
        for start in (0..n).step_by(b) {
            let end = (start + b).min(n);
            let x = cfx_metrics::image_rows::<B::InnerBackend>(&pixels, start..end, shape, device);
            let predicted = predictions(runner.classifier().logits(x.clone()));
            let queries = targets.queries(&predicted, k, &mut rng).0;
            let res = runner.run(x, &queries)?;
            seconds += res.seconds;
            let super::explain::runner::VariantData {
                pixels: px,
                probabilities: probs,
                misses: batch_misses,
                ..
            } = &res.variants[0];
            misses.extend_from_slice(batch_misses);
            for (j, q) in queries.iter().enumerate() {
                let found = batch_misses[j].is_none();
                let row = &probs[j * k..(j + 1) * k];
                let class = (0..k)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .expect("classes");
                set.cf_predicted.push(found.then_some(class));
                // Under `other` the query's draw only keeps the generator in step with the
                // other methods'; what the method was after is the class it reached.
                set.targets.push(match any_other && found {
                    true => class,
                    false => q.target,
                });
            }
            set.predicted.extend(&res.predicted);
            set.counterfactuals.extend_from_slice(px);
            bar.inc(end - start);
        }
        bar.finish();
        Ok(Cached {
            set,
            key,
            seconds,
            misses: Some(misses),
        })
    }

    /// The cached counterfactuals when their key still matches, else fresh ones; with whether
    /// they came from the cache and the method's settings as TOML (part of the key, so also
    /// those of a cached set).
    fn counterfactuals<B: AutodiffBackend + LinalgBackend>(
        &self,
        method: Method,
        dataset: DatasetKind,
        test: &ImageSet,
        selection: &[usize],
        device: &B::Device,
    ) -> Result<(Cached, bool, Option<String>)> {
        let n = self.sample_count(method, selection.len());
        let dir = self.out.join(method.name());
        let file = dir.join("counterfactuals.safetensors");
        let spec = self.spec(method)?;
        // One rule per run, so that the report's header is true of every row.
        let settings = spec.agreed_settings()?;
        let key = self.key(&spec, &settings, n, dataset)?;
        let toml = settings.to_toml()?;
        if !self.regenerate && file.exists() {
            match cache::load(&file) {
                Ok(c) if c.key == key => return Ok((c, true, toml)),
                Ok(_) => eprintln!(
                    "{} is stale (models or settings changed): regenerating",
                    file.display()
                ),
                Err(e) => eprintln!("ignoring {e:#}: regenerating"),
            }
        }
        let c = self.generate::<B>(&spec, settings, key, dataset, test, &selection[..n], device)?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        cache::save(&file, &c)?;
        Ok((c, false, toml))
    }
}

/// The models the metrics need, from the suite.
struct MetricModels<B: Backend> {
    oracle: cfx_classifiers::CnnClassifier<B>,
    second_oracle: Option<cfx_classifiers::CnnClassifier<B>>,
    aes: ClassAutoencoders<B>,
}

fn load_metric_models<B: Backend>(
    suite: &Path,
    m: &SuiteManifest,
    device: &B::Device,
) -> Result<MetricModels<B>> {
    let oracle = load_classifier::<B>(&m.member(suite, "oracle")?, device)?;
    let second_oracle = match m.members.iter().any(|x| x.name == "oracle-second") {
        true => Some(load_classifier::<B>(&suite.join("oracle-second"), device)?),
        false => None,
    };
    let per_class = (0..m.n_classes)
        .map(|k| {
            load_autoencoder::<B>(
                &m.member(suite, &SuiteManifest::class_autoencoder(k))?,
                device,
            )
        })
        .collect::<Result<_>>()?;
    let all = load_autoencoder::<B>(&m.member(suite, "ae-all")?, device)?;
    Ok(MetricModels {
        oracle,
        second_oracle,
        aes: ClassAutoencoders { per_class, all },
    })
}

/// FID256's real statistics over the first `n` test images, cached beside the oracle (rebuilt
/// when the oracle is newer than the cache).
fn real_stats<B: LinalgBackend>(
    oracle: &cfx_classifiers::CnnClassifier<B>,
    suite: &Path,
    test: &ImageSet,
    n: usize,
    batch: usize,
    device: &B::Device,
) -> Result<FeatureStats> {
    let file = suite.join("oracle").join(format!(
        "fid-real-{}-{n}.safetensors",
        test.name.replace('/', "-")
    ));
    let model = suite.join("oracle").join("model.mpk");
    let fresh = |f: &Path| -> Option<bool> {
        Some(f.metadata().ok()?.modified().ok()? >= model.metadata().ok()?.modified().ok()?)
    };
    if fresh(&file) == Some(true)
        && let Ok(s) = FeatureStats::load(&file)
    {
        return Ok(s);
    }
    let [c, h, w] = test.image_shape();
    let chw = c * h * w;
    let px = unit_pixels(test, n);
    let batches = (0..n).step_by(batch.max(1)).map(|s| {
        let e = (s + batch.max(1)).min(n);
        Tensor::<B, 4>::from_data(
            TensorData::new(px[s * chw..e * chw].to_vec(), [e - s, c, h, w]),
            device,
        )
    });
    let stats = Fid256::real_stats(oracle, batches)?;
    stats.save(&file)?;
    Ok(stats)
}

impl BackendJob for EvaluateJob {
    type Output = EvaluationReport;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        mut self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<EvaluationReport> {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let started = Instant::now();
        self.pair = self.resolve_pair()?;
        if self.one_way && self.pair.is_none() {
            bail!("--one-way needs --pair c,c2 (or a --c3lt run, whose pair it takes)");
        }
        if let Some(p) = self.pair
            && self.baseline_target == Some(TargetClass::Other)
            && (self.methods.contains(&Method::Gb) || self.methods.contains(&Method::Gl))
        {
            bail!(
                "--baseline-target other lets GB and GL reach any class, but --pair {p:?} sends each input to the other class of the pair; use --baseline-target given"
            );
        }
        let manifest = SuiteManifest::read(&self.suite)?;
        let dataset = manifest.dataset;
        let range = manifest.range;
        if self.methods.is_empty() && self.heatmaps.is_empty() {
            bail!("nothing to evaluate: --methods is empty and --heatmaps not given");
        }
        if let Some(ib) = &self.ibinn
            && (self.methods.contains(&Method::Ecinn)
                || self.methods.contains(&Method::Diffeo)
                || !self.heatmaps.is_empty())
        {
            crate::checkpoint::require_run_dir(ib)?;
            if let Some(d) = run_dataset(ib)
                && d != dataset
            {
                bail!(
                    "{} was trained on {d} but the suite {} on {dataset}",
                    ib.display(),
                    self.suite.display()
                );
            }
        }
        let test = dataset.load(Split::Test, self.data_dir.as_deref())?;
        if self.limit == 0 {
            bail!("--limit must be at least 1");
        }
        let n_all = self.limit.min(test.len());
        // The inputs: the first test images, of the pair's classes where one is set.
        let selection: Vec<usize> = match self.pair {
            Some(p) => {
                let k = test.num_classes();
                if let Some(c) = p.iter().find(|&&c| c >= k) {
                    bail!("--pair class {c}: {} has classes 0..{k}", test.name);
                }
                let from: &[usize] = if self.one_way { &p[..1] } else { &p };
                (0..test.len())
                    .filter(|&i| from.contains(&test.label(i)))
                    .take(self.limit)
                    .collect()
            }
            None => (0..n_all).collect(),
        };
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create {}", self.out.display()))?;

        let models = load_metric_models::<I<B>>(&self.suite, &manifest, &device)?;
        let suite_models = manifest.scores(&self.suite)?;
        let real = real_stats(
            &models.oracle,
            &self.suite,
            &test,
            n_all,
            self.batch_size,
            &device,
        )?;
        let knn_ref = unit_pixels(&test, test.len());
        let mut metrics: Vec<Box<dyn Metric<I<B>>>> = vec![
            Box::new(Tcv),
            Box::new(ElasticNet),
            Box::new(Im1::new(models.aes.clone(), range)?),
            Box::new(Im2::new(models.aes.clone(), range)?),
            Box::new(Fid256::new(models.oracle.clone(), real, range)?),
            Box::new(Oracle::new(models.oracle.clone(), range)?),
            // The label the counterfactual is about should change; FakeMNIST's digit must not.
            Box::new(Lvs::new(
                if models.second_oracle.is_some() {
                    "fake"
                } else {
                    "label"
                },
                models.oracle.clone(),
                range,
                Direction::Higher,
            )?),
        ];
        if let Some(o) = &models.second_oracle {
            metrics.push(Box::new(Lvs::new(
                "digit",
                o.clone(),
                range,
                Direction::Lower,
            )?));
        }
        metrics.push(Box::new(Val));
        metrics.push(Box::new(Proximity));
        metrics.push(Box::new(Cout {
            steps: self.cout_steps,
        }));
        metrics.push(Box::new(NearestNeighbours::new(
            knn_ref,
            test.labels().iter().map(|&l| l as usize).collect(),
            (0..test.len()).collect(),
            self.knn,
            &device,
        )?));

        let mut results = vec![];
        let mut sets = vec![];
        // With --slow-limit some methods see only the first inputs; the others are scored on
        // those too, since means over different inputs do not compare.
        let shared = self
            .methods
            .iter()
            .map(|&m| self.sample_count(m, selection.len()))
            .min()
            .unwrap_or(0);
        for &method in &self.methods {
            let (cached, from_cache, settings) =
                self.counterfactuals::<B>(method, dataset, &test, &selection, &device)?;
            let model_dir = self.explained_model(method)?;
            let classifier: Box<dyn Classifier<I<B>>> = match method {
                Method::Ecinn => Box::new(IbInnClassifier::new(load_trained::<I<B>>(
                    &model_dir, &device,
                )?)),
                Method::Gb | Method::Gl | Method::Diffeo | Method::Pixel | Method::C3lt => {
                    Box::new(load_classifier::<I<B>>(&model_dir, &device)?)
                }
            };
            let ctx = EvalContext {
                classifier: classifier.as_ref(),
                range,
                device: device.clone(),
                batch_size: self.batch_size.max(1),
            };
            let n = cached.set.len();
            let rows = shared_rows(&cached.set, &selection[..shared]);
            let subset = (n > shared && rows.len() == shared).then(|| cached.set.subset(&rows));
            let all_rows: Vec<usize> = (0..n).collect();
            let scored = std::iter::once((&cached.set, false, &all_rows))
                .chain(subset.as_ref().map(|s| (s, true, &rows)));
            for (set, shared_inputs, set_rows) in scored {
                let t = Instant::now();
                let summaries = evaluate_all(&metrics, set, &ctx)
                    .with_context(|| format!("scoring {method:?}"))?;
                results.push(MethodResult {
                    method,
                    shared_inputs,
                    model: model_dir.display().to_string(),
                    samples: set.len(),
                    valid: set.valid_indices().len(),
                    generation_seconds: cached.seconds,
                    seconds_per_counterfactual: cached.seconds / n.max(1) as f64,
                    from_cache,
                    metric_seconds: t.elapsed().as_secs_f64(),
                    settings: settings.clone(),
                    misses: cached
                        .misses
                        .as_ref()
                        .map(|m| crate::explain::count_misses(set_rows.iter().map(|&i| &m[i]))),
                    metrics: summaries,
                });
            }
            sets.push((method, cached.set));
        }
        let heatmaps = if self.heatmaps.is_empty() {
            vec![]
        } else {
            self.heatmap_results::<B>(dataset, range, &test, &device)?
        };
        let mut report = EvaluationReport {
            dataset: dataset.to_string(),
            range,
            range_label: range.label().into(),
            suite: self.suite.display().to_string(),
            suite_models,
            ibinn: self.ibinn.as_ref().map(|p| p.display().to_string()),
            ecinn_pixels: self.pixels.name(),
            ecinn_alpha: self.alpha.label(),
            baseline_target: self.baseline_target(),
            test_images: n_all,
            seed: self.seed,
            backend: backend.to_string(),
            cout_steps: self.cout_steps,
            methods: results,
            heatmaps,
            total_seconds: 0.0,
            files: vec![],
        };
        report.files = report::write_figures(&self.out, &report, &sets, self.gallery)?;
        report.total_seconds = started.elapsed().as_secs_f64();
        report::write_tables(&self.out, &report, &sets)?;
        report::write_samples(&self.out, &report, &sets)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Evaluate {
        #[command(flatten)]
        args: crate::cli::EvaluateArgs,
    }

    fn job(extra: &[&str]) -> EvaluateJob {
        let mut argv = vec![
            "t",
            "--suite",
            "s",
            "--methods",
            "diffeo,pixel",
            "--flow",
            "f",
        ];
        argv.extend_from_slice(extra);
        Evaluate::try_parse_from(argv).unwrap().args.job().unwrap()
    }

    /// `--alpha` defaults to Paper 4's α1, reaches ECINN's spec, and a bad value is refused
    /// naming the flag.
    #[test]
    fn ecinn_alpha_flag() {
        let spec = |j: &EvaluateJob| j.spec(Method::Ecinn).unwrap().alphas;
        let ibinn = ["--ibinn", "i"];
        let paper = AlphaChoice::Convincing(Alpha1Rule::ArxivCode);
        assert_eq!(spec(&job(&ibinn)), vec![paper]);
        let one = job(&["--ibinn", "i", "--alpha", "1"]);
        assert_eq!(spec(&one), vec![AlphaChoice::Fixed { value: 1.0 }]);
        let bmvc = job(&["--alpha", "bmvc:0.6"]).alpha;
        assert_eq!(bmvc, AlphaChoice::Convincing(Alpha1Rule::Bmvc { t: 0.6 }));
        let refused = |alpha: &str| {
            let argv = ["t", "--suite", "s", "--methods", "ecinn", "--alpha", alpha];
            let args = Evaluate::try_parse_from(argv).unwrap().args;
            args.job().unwrap_err().to_string()
        };
        let e = refused("far");
        assert!(e.contains("--alpha \"far\""), "{e}");
        for bad in ["NaN", "inf", "bmvc:nan"] {
            let e = refused(bad);
            assert!(e.contains("must be finite"), "{bad}: {e}");
        }
    }

    /// Pixel ascent reads `--pixel-config` when given, else `--diffeo-config`, so commands
    /// written before the flag existed keep their meaning.
    #[test]
    fn each_ascent_reads_its_own_settings_file() {
        let both = job(&["--diffeo-config", "d.toml", "--pixel-config", "p.toml"]);
        let file = |j: &EvaluateJob, m| j.spec(m).unwrap().method_config;
        assert_eq!(file(&both, Method::Diffeo), Some(PathBuf::from("d.toml")));
        assert_eq!(file(&both, Method::Pixel), Some(PathBuf::from("p.toml")));
        let shared = job(&["--diffeo-config", "d.toml"]);
        assert_eq!(file(&shared, Method::Pixel), Some(PathBuf::from("d.toml")));
        assert_eq!(file(&job(&[]), Method::Pixel), None);
    }
}
