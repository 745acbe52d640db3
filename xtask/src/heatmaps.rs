//! Heatmap methods over trained run folders: building them (`explain --method ecinnh,intgrad,…`
//! and `evaluate --heatmaps` share this), and the figure grid of seed 001's fig. 9.

use std::path::Path;

use anyhow::{Result, bail};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::{Classifier, CnnClassifier, IbInnClassifier};
use cfx_counterfactual::attribution::{Attribution, EcinnH, GradientAttribution, GradientMethod};
use cfx_counterfactual::{Alpha1Rule, AlphaChoice, Ecinn, EcinnPixels};
use cfx_datasets::{DatasetKind, Split};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::explain::runner::ecinn_means;
use crate::train::ibinn::load_trained;
use crate::train::supervised::load_classifier;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeatmapMethod {
    Ecinnh,
    Saliency,
    Intgrad,
    Gradshap,
    Deeplift,
    Deepliftshap,
}

impl HeatmapMethod {
    pub const ALL: [Self; 6] = [
        Self::Ecinnh,
        Self::Saliency,
        Self::Intgrad,
        Self::Gradshap,
        Self::Deeplift,
        Self::Deepliftshap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ecinnh => "ecinnh",
            Self::Saliency => "saliency",
            Self::Intgrad => "intgrad",
            Self::Gradshap => "gradshap",
            Self::Deeplift => "deeplift",
            Self::Deepliftshap => "deepliftshap",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// The model a heatmap explains, on the autodiff backend `B`.
pub enum ExplainedModel<B: AutodiffBackend> {
    IbInn(Box<IbInnClassifier<B>>),
    Cnn(Box<CnnClassifier<B>>),
}

/// The same classifier on the autodiff backend (gradients) and on its inner backend.
type ClassifierPair<B> = (
    Box<dyn Classifier<B>>,
    Box<dyn Classifier<<B as AutodiffBackend>::InnerBackend>>,
);

impl<B: AutodiffBackend> ExplainedModel<B> {
    /// An IB-INN run (`train ib-inn`) or a classifier run (`train classifier`).
    pub fn load(run: &Path, device: &B::Device) -> Result<Self> {
        crate::checkpoint::require_run_dir(run)?;
        if crate::train::supervised::is_tagged_run(run) {
            return Ok(Self::Cnn(Box::new(load_classifier::<B>(run, device)?)));
        }
        Ok(Self::IbInn(Box::new(IbInnClassifier::new(load_trained::<
            B,
        >(
            run, device
        )?))))
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::IbInn(_) => "IB-INN",
            Self::Cnn(_) => "CNN",
        }
    }

    fn boxed(&self) -> ClassifierPair<B> {
        match self {
            Self::IbInn(m) => (m.clone(), Box::new(IbInnClassifier::new(m.model.valid()))),
            Self::Cnn(m) => (m.clone(), Box::new(m.valid())),
        }
    }

    pub fn inner(&self) -> Box<dyn Classifier<B::InnerBackend>> {
        self.boxed().1
    }
}

/// Where the models came from, for the methods that need more than the model.
pub struct HeatmapContext<'a> {
    pub run: &'a Path,
    pub dataset: DatasetKind,
    pub data_dir: Option<&'a Path>,
    /// Baseline images of the SHAP methods: this many random training images.
    pub shap_baselines: usize,
    pub seed: u64,
    pub batch_size: usize,
    /// ECINNh's counterfactuals: 8-bit images or the raw inverse.
    pub pixels: EcinnPixels,
}

/// `methods` over `model`, in order. ECINNh needs an IB-INN (and its class means).
pub fn build<B: AutodiffBackend>(
    methods: &[HeatmapMethod],
    model: &ExplainedModel<B>,
    ctx: &HeatmapContext,
    device: &B::Device,
) -> Result<Vec<Box<dyn Attribution<B::InnerBackend>>>> {
    let shap = methods
        .iter()
        .any(|m| matches!(m, HeatmapMethod::Gradshap | HeatmapMethod::Deepliftshap));
    let baselines = if shap {
        let shape = model.inner().input_shape();
        Some(training_images::<B::InnerBackend>(ctx, shape, device)?)
    } else {
        None
    };
    let mut out: Vec<Box<dyn Attribution<B::InnerBackend>>> = vec![];
    for &m in methods {
        if m == HeatmapMethod::Ecinnh {
            let ExplainedModel::IbInn(ib) = model else {
                bail!(
                    "ecinnh explains an IB-INN, but {} is a {} run",
                    ctx.run.display(),
                    model.label()
                );
            };
            let inner = IbInnClassifier::new(ib.model.valid());
            let means = ecinn_means(&inner, ctx.run, ctx.dataset, ctx.data_dir, device)?;
            // The convincing counterfactual, as Paper 4 and the heatmap figures use it.
            let ecinn = Ecinn::new(inner, &means)?
                .with_alpha(AlphaChoice::Convincing(Alpha1Rule::ArxivCode))
                .with_pixels(ctx.pixels);
            out.push(Box::new(EcinnH(ecinn)));
            continue;
        }
        let method = GradientMethod::named(m.name()).expect("every other method is a gradient");
        let (ad, inner) = model.boxed();
        let mut a = GradientAttribution::new(ad, inner, method).with_batch_size(ctx.batch_size);
        if let Some(b) = &baselines {
            a = a.with_baselines(b.clone());
        }
        out.push(Box::new(a));
    }
    Ok(out)
}

/// `ctx.shap_baselines` training images drawn with the seed, unit space.
fn training_images<B: Backend>(
    ctx: &HeatmapContext,
    shape: [usize; 3],
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let train = ctx
        .dataset
        .load_shaped(Split::Train, ctx.data_dir, Some(shape), None)?;
    let n = ctx.shap_baselines.max(1).min(train.len());
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x5eed);
    let [c, h, w] = train.image_shape();
    let px: Vec<f32> = (0..n)
        .flat_map(|_| train.unit_image(rng.random_range(0..train.len())))
        .collect();
    Ok(Tensor::from_data(TensorData::new(px, [n, c, h, w]), device))
}

/// `cargo xtask explain --method ecinnh,intgrad,…`: one row per query (input, target), columns
/// the input, ECINN's counterfactual when ECINNh is among the methods, then one heatmap per
/// method, each on its own colour scale (diverging: blue negative, red positive).
#[derive(Debug, Clone)]
pub struct HeatmapExplainJob {
    pub methods: Vec<HeatmapMethod>,
    pub model: std::path::PathBuf,
    pub dataset: Option<DatasetKind>,
    pub data_dir: Option<std::path::PathBuf>,
    pub selection: crate::explain::inputs::Selection,
    pub target: crate::explain::TargetMode,
    pub shap_baselines: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub scale: usize,
    /// ECINNh's counterfactuals: 8-bit images or the raw inverse.
    pub pixels: EcinnPixels,
    pub out: std::path::PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeatmapMethodSummary {
    pub method: HeatmapMethod,
    pub maps: usize,
    pub seconds_per_map: f64,
    /// FakeMNIST: mean share (%) of the absolute mass in column 0 (the label pixels).
    pub label_column_mass: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeatmapExplainReport {
    pub model: String,
    pub model_kind: String,
    pub dataset: String,
    pub backend: String,
    pub queries: Vec<(String, usize, usize)>,
    pub methods: Vec<HeatmapMethodSummary>,
    pub figure: String,
}

impl crate::backend::BackendJob for HeatmapExplainJob {
    type Output = HeatmapExplainReport;

    fn run<
        B: AutodiffBackend<InnerBackend: cfx_linalg::LinalgBackend> + cfx_linalg::LinalgBackend,
    >(
        self,
        device: B::Device,
        backend: crate::backend::BackendKind,
    ) -> Result<HeatmapExplainReport> {
        use crate::explain::TargetMode;
        use crate::explain::figures::{Cell, Grid};
        use anyhow::Context;
        use cfx_classifiers::predictions;

        crate::checkpoint::require_run_dir(&self.model)?;
        let Some(dataset) = self
            .dataset
            .or_else(|| crate::explain::runner::run_dataset(&self.model))
        else {
            bail!(
                "cannot tell which dataset {} was trained on: pass --dataset",
                self.model.display()
            );
        };
        let model = ExplainedModel::<B>::load(&self.model, &device)?;
        let ctx = HeatmapContext {
            run: &self.model,
            dataset,
            data_dir: self.data_dir.as_deref(),
            shap_baselines: self.shap_baselines,
            seed: self.seed,
            batch_size: self.batch_size,
            pixels: self.pixels,
        };
        let methods = build::<B>(&self.methods, &model, &ctx, &device)?;
        let inner = model.inner();
        let shape = inner.input_shape();
        let k = inner.n_classes();
        let test = dataset.load_shaped(Split::Test, self.data_dir.as_deref(), Some(shape), None)?;
        let inputs = crate::explain::inputs::select(&self.selection, &test, shape)?;
        if inputs.is_empty() {
            bail!("no inputs selected");
        }
        let [c, h, w] = shape;
        let chw = c * h * w;
        let px: Vec<f32> = inputs.iter().flat_map(|i| i.pixels.clone()).collect();
        let x = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(px, [inputs.len(), c, h, w]),
            &device,
        );
        let predicted = predictions(inner.logits(x.clone()));
        let mut rng = StdRng::seed_from_u64(self.seed);
        if let TargetMode::Class(q) = self.target
            && q >= k
        {
            bail!("--target {q}: the model has classes 0..{k}");
        }
        let (queries, skipped) = self.target.queries(&predicted, k, &mut rng);
        if let TargetMode::Class(q) = self.target {
            for i in skipped {
                eprintln!(
                    "skipping {}: the model already predicts {q}",
                    inputs[i].source
                );
            }
        }
        if queries.is_empty() {
            bail!("every selected input is already predicted as the requested target");
        }
        let fake = dataset == DatasetKind::FakeMnist;
        let mut columns: Vec<Vec<Cell>> = vec![];
        let mut summaries = vec![];
        let mut counterfactuals = None;
        for (m, a) in self.methods.iter().zip(&methods) {
            let hm = a
                .heatmaps(x.clone(), &queries)
                .with_context(|| format!("{} heatmaps", m.name()))?;
            let maps = crate::explain::runner::host(hm.maps);
            if *m == HeatmapMethod::Ecinnh {
                // x̂ = x + h: the counterfactual the heatmap comes from, shown beside it.
                counterfactuals = Some(
                    queries
                        .iter()
                        .enumerate()
                        .map(|(j, q)| {
                            let xi = &inputs[q.input].pixels;
                            Cell::Grey(
                                maps[j * chw..(j + 1) * chw]
                                    .iter()
                                    .zip(xi)
                                    .map(|(d, v)| d + v)
                                    .collect(),
                            )
                        })
                        .collect::<Vec<_>>(),
                );
            }
            let per_map: Vec<&[f32]> = maps.chunks(chw).collect();
            let mass = fake.then(|| {
                per_map
                    .iter()
                    .map(|m| cfx_metrics::column_mass(m, shape, 0))
                    .sum::<f64>()
                    / per_map.len() as f64
            });
            columns.push(per_map.iter().map(|m| Cell::HeatOwn(m.to_vec())).collect());
            summaries.push(HeatmapMethodSummary {
                method: *m,
                maps: per_map.len(),
                seconds_per_map: hm.seconds / per_map.len().max(1) as f64,
                label_column_mass: mass,
            });
        }
        let rows = queries
            .iter()
            .enumerate()
            .map(|(j, q)| {
                let mut row = vec![Cell::Grey(inputs[q.input].pixels.clone())];
                if let Some(cf) = &counterfactuals {
                    row.push(cf[j].clone());
                }
                row.extend(columns.iter().map(|col| col[j].clone()));
                row
            })
            .collect();
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create {}", self.out.display()))?;
        let grid = Grid {
            cells: rows,
            h,
            w,
            scale: self.scale.max(1),
        };
        let figure = self.out.join("heatmaps.png");
        grid.save(&figure)?;
        let legend = std::iter::once("input")
            .chain(counterfactuals.as_ref().map(|_| "ECINN counterfactual"))
            .chain(self.methods.iter().map(|m| m.name()))
            .collect::<Vec<_>>()
            .join(" | ");
        let report = HeatmapExplainReport {
            model: self.model.display().to_string(),
            model_kind: model.label().into(),
            dataset: dataset.to_string(),
            backend: backend.to_string(),
            queries: queries
                .iter()
                .map(|q| (inputs[q.input].source.clone(), predicted[q.input], q.target))
                .collect(),
            methods: summaries,
            figure: format!("{} (columns: {legend})", figure.display()),
        };
        crate::fsutil::write_json(&self.out.join("heatmaps.json"), &report)?;
        Ok(report)
    }
}
