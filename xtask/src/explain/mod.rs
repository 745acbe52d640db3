//! `cargo xtask explain`: counterfactuals for chosen inputs with any method, as PNG figures in
//! the papers' layouts plus `explanations.json` (classes, probabilities, α, timings, and the
//! summary statistics the acceptance numbers in docs/results.md are read from).

pub mod figures;
pub mod inputs;
pub mod runner;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::predictions;
use cfx_counterfactual::{AlphaChoice, DeltaMeans, Ecinn, EcinnPixels, Miss, Query};
use cfx_datasets::{DatasetKind, Split};
use cfx_linalg::LinalgBackend;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::backend::{BackendJob, BackendKind};
use crate::progress::Work;
use figures::{Cell, Grid};
use inputs::{Input, Selection};
use runner::{Runner, RunnerSpec, host, run_dataset};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Ecinn,
    Gb,
    Gl,
    /// Gradient ascent in a flow's latent space (diffeomorphic counterfactuals), explaining a CNN.
    Diffeo,
    /// The same ascent on the pixels (the adversarial baseline).
    Pixel,
    /// C3LT's trained latent maps for one class pair (one forward pass per counterfactual).
    C3lt,
}

impl Method {
    /// The method as `--method` spells it, which also names its cache folder and its rows in
    /// `evaluate`'s CSV files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ecinn => "ecinn",
            Self::Gb => "gb",
            Self::Gl => "gl",
            Self::Diffeo => "diffeo",
            Self::Pixel => "pixel",
            Self::C3lt => "c3lt",
        }
    }
}

/// Which classes to send each input to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TargetMode {
    All,
    Class(usize),
    /// One class drawn uniformly among those not predicted (Paper 4's protocol).
    Random,
    /// The other class of a pair (C3LT's protocol); an input predicted outside the pair is sent
    /// to the pair's second class.
    Pair([usize; 2]),
}

impl std::str::FromStr for TargetMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "random" => Ok(Self::Random),
            other => other.parse().map(Self::Class).map_err(|_| {
                format!("--target must be a class number, `all` or `random`, got {other:?}")
            }),
        }
    }
}

impl TargetMode {
    /// The queries for a batch whose inputs the model predicts as `predicted` (of `k`
    /// classes), and the inputs skipped because they already are the requested class. Random
    /// targets are drawn uniformly among the `k − 1` classes that are not predicted.
    pub fn queries(
        self,
        predicted: &[usize],
        k: usize,
        rng: &mut impl Rng,
    ) -> (Vec<Query>, Vec<usize>) {
        let (mut queries, mut skipped) = (vec![], vec![]);
        for (input, &p) in predicted.iter().enumerate() {
            let mut push = |target| queries.push(Query { input, target });
            match self {
                Self::All => (0..k).filter(|&t| t != p).for_each(&mut push),
                Self::Class(q) if q == p => skipped.push(input),
                Self::Class(q) => push(q),
                Self::Random => {
                    let t = rng.random_range(0..k - 1);
                    push(if t >= p { t + 1 } else { t });
                }
                Self::Pair([a, b]) => push(if p == b { a } else { b }),
            }
        }
        (queries, skipped)
    }
}

#[derive(Debug, Clone)]
pub struct ExplainJob {
    pub method: Method,
    pub model: PathBuf,
    pub autoencoder: Option<PathBuf>,
    /// diffeo's flow, VAE or GAN run, or c3lt's maps run.
    pub latent: Option<PathBuf>,
    pub dataset: Option<DatasetKind>,
    pub data_dir: Option<PathBuf>,
    pub selection: Selection,
    pub target: TargetMode,
    pub alphas: Vec<AlphaChoice>,
    /// ECINN: the class centres `Δ` is taken between.
    pub delta: DeltaMeans,
    /// ECINN: 8-bit images or the raw inverse.
    pub pixels: EcinnPixels,
    /// ECINN α transition strips at `α0 + t(1 − α0)` for these t.
    pub strip: Option<Vec<f64>>,
    pub method_config: Option<PathBuf>,
    pub batch_size: usize,
    pub seed: u64,
    pub scale: usize,
    pub out: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VariantSummary {
    pub name: String,
    pub counterfactuals: usize,
    /// Fraction the explained model assigns to the target.
    pub validity: f64,
    /// Fraction the method reports as solved.
    pub found: f64,
    /// Fraction with `|p(p|x̂) − p(q|x̂)| < 0.05` (the tipping-point property).
    pub tie_fraction: f64,
    pub mean_alpha: Option<f64>,
    /// FakeMNIST: mean |x̂ − x| per pixel in column 0 (the label pixels) and elsewhere.
    pub mean_change_column0: Option<f64>,
    pub mean_change_elsewhere: Option<f64>,
    /// FakeMNIST: `mean_change_elsewhere / mean_change_column0`, the locality measure of the
    /// counterfactual issue's acceptance (< 0.1: the change stays in the label column).
    pub change_ratio_outside_column0: Option<f64>,
    /// ECINN: the fraction whose inverse pass put a pixel more than half the pixel range
    /// outside `[0, 1]` before any 8-bit step (`cfx_counterfactual::ecinn::PIXEL_SLACK`); they
    /// are scored all the same. `cargo xtask inverse-trace` tells an inverse that leaves its
    /// range inside the model (the rebuilt FakeMNIST model, docs/results.md) from strokes that
    /// only overshoot at the image (the tiny MNIST model under the paper's schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_range: Option<f64>,
    /// Queries without a counterfactual, by why ([`Miss`]'s names).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub misses: BTreeMap<String, usize>,
}

/// `misses` as "lambda-not-bracketed 4, no-solution 1" (largest first).
pub fn misses_line(misses: &BTreeMap<String, usize>) -> String {
    let mut v: Vec<(&String, &usize)> = misses.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts of each [`Miss`] in `misses`, by name.
pub fn count_misses<'a>(
    misses: impl IntoIterator<Item = &'a Option<Miss>>,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in misses.into_iter().flatten() {
        *out.entry(m.to_string()).or_insert(0) += 1;
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryRecord {
    pub input: usize,
    pub source: String,
    pub label: Option<usize>,
    pub predicted: usize,
    pub target: usize,
    pub variants: Vec<VariantRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantRecord {
    pub name: String,
    pub alpha: Option<f64>,
    pub class: usize,
    pub p_target: f64,
    pub p_predicted: f64,
    pub found: bool,
    /// Why there is no counterfactual, where there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miss: Option<Miss>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplainReport {
    pub method: Method,
    pub model: String,
    pub dataset: String,
    pub backend: String,
    pub inputs: usize,
    pub queries: usize,
    /// Inputs skipped because the model already predicts the requested target.
    pub skipped_inputs: Vec<String>,
    pub batch_size: usize,
    /// Generation wall time over all batches (device synchronised).
    pub generation_seconds: f64,
    pub seconds_per_query: f64,
    /// ECINN: `empirical` (the seed's class means) or `gmm` (the ablation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<&'static str>,
    /// ECINN: `image` (8-bit counterfactuals) or `raw` (the unclamped inverse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixels: Option<&'static str>,
    /// GB's, GL's and the ascents' settings as TOML: their defaults under `--method-config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
    pub variants: Vec<VariantSummary>,
    pub figures: Vec<String>,
    pub records: Vec<QueryRecord>,
}

impl BackendJob for ExplainJob {
    type Output = ExplainReport;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        mut self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<ExplainReport> {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        // C3LT answers only its pair: "all" and "random" mean the other class of the pair.
        if let (Method::C3lt, TargetMode::All | TargetMode::Random, Some(run)) =
            (self.method, self.target, &self.latent)
        {
            self.target = TargetMode::Pair(crate::train::c3lt::read_c3lt_run(run)?.pair);
        }
        crate::checkpoint::require_run_dir(&self.model)?;
        let dataset = match self.dataset.or_else(|| run_dataset(&self.model)) {
            Some(d) => d,
            None => bail!(
                "cannot tell which dataset {} was trained on: pass --dataset",
                self.model.display()
            ),
        };
        let data_dir = self.data_dir.as_deref();
        let spec = RunnerSpec {
            method: self.method,
            model: self.model.clone(),
            autoencoder: self.autoencoder.clone(),
            latent: self.latent.clone(),
            method_config: self.method_config.clone(),
            alphas: self.alphas.clone(),
            delta: self.delta,
            pixels: self.pixels,
            baseline_target: cfx_counterfactual::TargetClass::Given,
        };
        // ECINN's first run with a model takes the class means over the training set (minutes
        // for the paper's IB-INN): a test-set index or class that cannot be served is refused
        // before that. Image folders are decoded at the model's shape, so they wait for it.
        let early_test = if dataset != DatasetKind::ImageFolder
            && matches!(
                self.selection,
                Selection::Indices(_) | Selection::Class { .. }
            ) {
            let test = dataset.load(Split::Test, data_dir)?;
            inputs::select(&self.selection, &test, test.image_shape())?;
            Some(test)
        } else {
            None
        };
        // explain sends inputs to the classes --target names: a file saying `other` is refused.
        let settings = spec.agreed_settings()?;
        let settings_toml = settings.to_toml()?;
        let runner: Runner<B> = spec.build(settings, dataset, data_dir, &device)?;
        let classifier = runner.classifier();
        let shape = classifier.input_shape();
        let k = classifier.n_classes();
        if let TargetMode::Class(q) = self.target
            && q >= k
        {
            bail!("--target {q}: the model has classes 0..{k}");
        }
        let test = match early_test {
            Some(test) if test.image_shape() == shape => test,
            _ => dataset.load_shaped(Split::Test, data_dir, Some(shape), None)?,
        };
        let inputs = inputs::select(&self.selection, &test, shape)?;
        if inputs.is_empty() {
            bail!("no inputs selected");
        }
        let all_test = matches!(self.selection, Selection::AllTest { .. });
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create {}", self.out.display()))?;

        let chw: usize = shape.iter().product();
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut stats: Vec<Stats> = vec![];
        let mut records = vec![];
        let mut skipped = vec![];
        let mut kept: Vec<Kept> = vec![];
        let mut seconds = 0.0;
        let mut n_queries = 0;
        let mut bar = Work::new(self.method.name(), inputs.len(), "inputs");
        let fake = dataset == DatasetKind::FakeMnist;
        for (chunk_no, chunk) in inputs.chunks(self.batch_size.max(1)).enumerate() {
            let base = chunk_no * self.batch_size.max(1);
            let pixels: Vec<f32> = chunk.iter().flat_map(|i| i.pixels.clone()).collect();
            let x = Tensor::<I<B>, 4>::from_data(
                TensorData::new(pixels, [chunk.len(), shape[0], shape[1], shape[2]]),
                &device,
            );
            let predicted = predictions(runner.classifier().logits(x.clone()));
            let (queries, skip) = self.target.queries(&predicted, k, &mut rng);
            skipped.extend(skip.into_iter().map(|i| chunk[i].source.clone()));
            if queries.is_empty() {
                bar.inc(chunk.len());
                continue;
            }
            let res = runner.run(x, &queries)?;
            seconds += res.seconds;
            n_queries += queries.len();
            if stats.is_empty() {
                stats = res.variants.iter().map(|v| Stats::new(&v.name)).collect();
            }
            for (j, q) in queries.iter().enumerate() {
                let input = &chunk[q.input];
                let p = res.predicted[q.input];
                let mut vr = vec![];
                for (s, v) in stats.iter_mut().zip(&res.variants) {
                    let (name, alphas, misses) = (&v.name, &v.alphas, &v.misses);
                    let probs = &v.probabilities[j * k..(j + 1) * k];
                    let cf = &v.pixels[j * chw..(j + 1) * chw];
                    let class = argmax(probs);
                    s.add(
                        class == q.target,
                        misses[j],
                        (probs[p] - probs[q.target]).abs() < 0.05,
                        alphas[j],
                    );
                    if let Some(&out) = v.out_of_range.get(j) {
                        *s.out_of_range.get_or_insert(0) += usize::from(out);
                    }
                    if fake {
                        s.add_locality(&input.pixels, cf, shape);
                    }
                    vr.push(VariantRecord {
                        name: name.clone(),
                        alpha: alphas[j],
                        class,
                        p_target: probs[q.target] as f64,
                        p_predicted: probs[p] as f64,
                        found: misses[j].is_none(),
                        miss: misses[j],
                    });
                }
                if !all_test {
                    records.push(QueryRecord {
                        input: base + q.input,
                        source: input.source.clone(),
                        label: input.label,
                        predicted: p,
                        target: q.target,
                        variants: vr,
                    });
                    let cfs = res
                        .variants
                        .iter()
                        .map(|v| {
                            v.misses[j]
                                .is_none()
                                .then(|| v.pixels[j * chw..(j + 1) * chw].to_vec())
                        })
                        .collect();
                    match kept.last_mut() {
                        Some(last) if last.0 == base + q.input => last.2.push((q.target, cfs)),
                        _ => {
                            kept.push((base + q.input, input.pixels.clone(), vec![(q.target, cfs)]))
                        }
                    }
                }
            }
            bar.inc(chunk.len());
        }
        bar.finish();

        let names: Vec<String> = stats.iter().map(|s| s.name.clone()).collect();
        let mut figures = vec![];
        if !all_test && !kept.is_empty() {
            figures = self.write_figures(&kept, &names, shape)?;
            if let (Runner::Ecinn(e, _), Some(ts)) = (&runner, &self.strip) {
                figures.extend(self.write_strips(e, &inputs, &records, ts, shape, &device)?);
            }
        }
        let report = ExplainReport {
            method: self.method,
            model: self.model.display().to_string(),
            dataset: dataset.to_string(),
            backend: backend.to_string(),
            inputs: inputs.len(),
            queries: n_queries,
            skipped_inputs: skipped,
            batch_size: self.batch_size,
            generation_seconds: seconds,
            seconds_per_query: seconds / n_queries.max(1) as f64,
            delta: (self.method == Method::Ecinn).then(|| self.delta.name()),
            pixels: (self.method == Method::Ecinn).then(|| self.pixels.name()),
            settings: settings_toml,
            variants: stats.into_iter().map(Stats::finish).collect(),
            figures,
            records,
        };
        crate::fsutil::write_json(&self.out.join("explanations.json"), &report)?;
        Ok(report)
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0
}

struct Stats {
    name: String,
    n: usize,
    valid: usize,
    ties: usize,
    alpha_sum: f64,
    alpha_n: usize,
    col0: (f64, usize),
    rest: (f64, usize),
    misses: Vec<Option<Miss>>,
    /// Counterfactuals whose inverse pass left the pixel range, where the method says.
    out_of_range: Option<usize>,
}

impl Stats {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            n: 0,
            valid: 0,
            ties: 0,
            alpha_sum: 0.0,
            alpha_n: 0,
            col0: (0.0, 0),
            rest: (0.0, 0),
            misses: vec![],
            out_of_range: None,
        }
    }

    fn add(&mut self, valid: bool, miss: Option<Miss>, tie: bool, alpha: Option<f64>) {
        self.n += 1;
        self.valid += usize::from(valid);
        self.misses.push(miss);
        self.ties += usize::from(tie);
        if let Some(a) = alpha {
            self.alpha_sum += a;
            self.alpha_n += 1;
        }
    }

    fn add_locality(&mut self, x: &[f32], cf: &[f32], [_, _, w]: [usize; 3]) {
        for (i, (a, b)) in x.iter().zip(cf).enumerate() {
            let d = (a - b).abs() as f64;
            let slot = if i % w == 0 {
                &mut self.col0
            } else {
                &mut self.rest
            };
            slot.0 += d;
            slot.1 += 1;
        }
    }

    fn finish(self) -> VariantSummary {
        let frac = |c: usize| c as f64 / self.n.max(1) as f64;
        let mean = |(s, n): (f64, usize)| (n > 0).then(|| s / n as f64);
        VariantSummary {
            counterfactuals: self.n,
            validity: frac(self.valid),
            found: frac(self.misses.iter().filter(|m| m.is_none()).count()),
            tie_fraction: frac(self.ties),
            mean_alpha: (self.alpha_n > 0).then(|| self.alpha_sum / self.alpha_n as f64),
            mean_change_column0: mean(self.col0),
            mean_change_elsewhere: mean(self.rest),
            change_ratio_outside_column0: mean(self.col0)
                .zip(mean(self.rest))
                .filter(|&(c, _)| c > 0.0)
                .map(|(c, r)| r / c),
            misses: count_misses(&self.misses),
            out_of_range: self.out_of_range.map(frac),
            name: self.name,
        }
    }
}

/// An input kept for the figures: `(position, pixels, [(target, counterfactual per variant)])`;
/// `None` where a variant found none, whose cells are left blank rather than showing the input.
type Kept = (usize, Vec<f32>, Vec<(usize, VariantCfs)>);

/// One query's counterfactual per variant, `None` where that variant found none.
type VariantCfs = Vec<Option<Vec<f32>>>;

impl ExplainJob {
    /// Per input, all its targets across (ECINN fig. 4/5); with one target per input, all inputs
    /// across (fig. 6). Rows: input, each variant, heatmap `x̂ − x` of the last variant.
    fn write_figures(
        &self,
        kept: &[Kept],
        names: &[String],
        [_, h, w]: [usize; 3],
    ) -> Result<Vec<String>> {
        let mut written = vec![];
        let grey = |cf: &Option<Vec<f32>>| cf.clone().map_or(Cell::Blank, Cell::Grey);
        let heat = |x: &[f32], cf: &Option<Vec<f32>>| match cf {
            Some(cf) => Cell::Heat(cf.iter().zip(x).map(|(c, x)| c - x).collect()),
            None => Cell::Blank,
        };
        let mut save = |grid: Grid, name: String| -> Result<()> {
            grid.save(&self.out.join(&name))?;
            written.push(name);
            Ok(())
        };
        if self.target == TargetMode::All {
            for (idx, x, targets) in kept.iter().take(200) {
                let mut rows = vec![vec![Cell::Grey(x.clone())]];
                for v in 0..names.len() {
                    let mut row = vec![Cell::Blank];
                    row.extend(targets.iter().map(|(_, cfs)| grey(&cfs[v])));
                    rows.push(row);
                }
                let mut hrow = vec![Cell::Blank];
                hrow.extend(
                    targets
                        .iter()
                        .map(|(_, cfs)| heat(x, cfs.last().expect("a variant"))),
                );
                rows.push(hrow);
                let grid = Grid {
                    cells: rows,
                    h,
                    w,
                    scale: self.scale,
                };
                save(grid, format!("input-{idx:04}-all-targets.png"))?;
            }
        } else {
            let cols: Vec<(&Vec<f32>, &VariantCfs)> = kept
                .iter()
                .flat_map(|(_, x, ts)| ts.iter().map(move |(_, cfs)| (x, cfs)))
                .take(100)
                .collect();
            let mut rows = vec![cols.iter().map(|(x, _)| Cell::Grey((*x).clone())).collect()];
            for v in 0..names.len() {
                rows.push(cols.iter().map(|(_, cfs)| grey(&cfs[v])).collect());
            }
            rows.push(
                cols.iter()
                    .map(|(x, cfs)| heat(x, cfs.last().expect("a variant")))
                    .collect(),
            );
            let name = match self.target {
                TargetMode::Class(q) => format!("inputs-to-{q}.png"),
                TargetMode::Pair([a, b]) => format!("inputs-{a}-to-{b}-and-back.png"),
                _ => "inputs-to-random-targets.png".into(),
            };
            save(
                Grid {
                    cells: rows,
                    h,
                    w,
                    scale: self.scale,
                },
                name,
            )?;
        }
        Ok(written)
    }

    /// ECINN transition strips: the input, then `α0 + t(1 − α0)` for each t, and their heatmaps.
    fn write_strips<I: Backend>(
        &self,
        e: &Ecinn<I>,
        inputs: &[Input],
        records: &[QueryRecord],
        ts: &[f64],
        shape: [usize; 3],
        device: &I::Device,
    ) -> Result<Vec<String>> {
        let [c, h, w] = shape;
        let choices: Vec<AlphaChoice> = ts
            .iter()
            .map(|&t| AlphaChoice::Convincing(cfx_counterfactual::Alpha1Rule::Bmvc { t }))
            .collect();
        let mut written = vec![];
        for r in records.iter().take(50) {
            let x = Tensor::<I, 4>::from_data(
                TensorData::new(inputs[r.input].pixels.clone(), [1, c, h, w]),
                device,
            );
            let out = e.explain_alphas(
                x,
                &[Query {
                    input: 0,
                    target: r.target,
                }],
                &choices,
            )?;
            let px = host(out.counterfactuals);
            let xin = &inputs[r.input].pixels;
            let chw = c * h * w;
            let mut top = vec![Cell::Grey(xin.clone())];
            let mut bottom = vec![Cell::Blank];
            for j in 0..choices.len() {
                let cf = px[j * chw..(j + 1) * chw].to_vec();
                bottom.push(Cell::Heat(cf.iter().zip(xin).map(|(a, b)| a - b).collect()));
                top.push(Cell::Grey(cf));
            }
            let name = format!("strip-{:04}-to-{}.png", r.input, r.target);
            Grid {
                cells: vec![top, bottom],
                h,
                w,
                scale: self.scale,
            }
            .save(&self.out.join(&name))?;
            written.push(name);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A method's name is the word `--method` takes, which old cache folders were named by.
    #[test]
    fn method_names_are_the_flag_values() {
        use clap::ValueEnum;
        for m in Method::value_variants() {
            let flag = m.to_possible_value().unwrap();
            assert_eq!(m.name(), flag.get_name());
            assert_eq!(m.name(), format!("{m:?}").to_lowercase());
        }
    }

    #[test]
    fn locality_is_the_change_elsewhere_over_the_change_in_column_0() {
        // 2×3 image: column 0 is pixels 0 and 3. |Δ| there 0.4 and 0.2 (mean 0.3); elsewhere
        // 0.03, 0, 0.06, 0.03 (mean 0.03).
        let x = [0.0f32, 0.0, 0.0, 0.0, 0.0, 0.0];
        let cf = [0.4f32, 0.03, 0.0, -0.2, 0.06, -0.03];
        let mut s = Stats::new("alpha1");
        s.add(true, None, false, Some(1.0));
        s.add_locality(&x, &cf, [1, 2, 3]);
        let v = s.finish();
        assert!((v.mean_change_column0.unwrap() - 0.3).abs() < 1e-6);
        assert!((v.mean_change_elsewhere.unwrap() - 0.03).abs() < 1e-6);
        assert!((v.change_ratio_outside_column0.unwrap() - 0.1).abs() < 1e-6);
    }

    #[test]
    fn no_change_in_column_0_gives_no_ratio() {
        let mut s = Stats::new("alpha1");
        s.add_locality(&[0.0, 0.0], &[0.0, 0.5], [1, 1, 2]);
        assert_eq!(s.finish().change_ratio_outside_column0, None);
        assert_eq!(
            Stats::new("alpha0").finish().change_ratio_outside_column0,
            None
        );
    }
}
