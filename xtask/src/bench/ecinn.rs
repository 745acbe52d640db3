//! `cargo xtask bench ecinn`: counterfactuals per second of batched ECINN — one forward pass
//! over a batch of test images and the inverse passes of every (image, other class) pair.
//!
//! The model is freshly initialised (its architecture, not its training, sets the cost) and the
//! class means are its GMM means, so the bench needs no trained run; `explain` on a trained
//! model runs the same code.

use std::time::Instant;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use cfx_classifiers::{IbInnClassifier, predictions};
use cfx_counterfactual::{AlphaChoice, ClassMeans, Ecinn, Query};
use cfx_datasets::{Augmentation, HostBatch, Split, mnist};
use cfx_flows::ibinn::IbInnConfig;
use cfx_linalg::LinalgBackend;
use rand::SeedableRng;
use serde::Serialize;

use crate::backend::{BackendJob, BackendKind, run_on};
use crate::cli::EcinnBenchArgs;

#[derive(Debug, Clone, Serialize)]
pub struct EcinnTiming {
    pub backend: String,
    pub inputs: usize,
    /// Counterfactuals per call: every input towards each class it is not predicted as.
    pub counterfactuals: usize,
    pub decode_batch: usize,
    pub median_ms: f64,
    pub counterfactuals_per_second: f64,
}

struct Job {
    model: IbInnConfig,
    batch: HostBatch,
    decode_batch: usize,
    repeats: usize,
    warmup: usize,
}

impl BackendJob for Job {
    type Output = EcinnTiming;

    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<EcinnTiming> {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        B::seed(&device, 0);
        let model = self.model.init::<I<B>>(&device);
        let k = model.n_classes();
        let means = ClassMeans {
            means: model
                .mu
                .val()
                .into_data()
                .convert::<f64>()
                .into_vec()
                .map_err(|e| anyhow::anyhow!("reading the GMM means: {e:?}"))?,
            counts: vec![1; k],
            dim: model.dim(),
        };
        let mut ecinn = Ecinn::new(IbInnClassifier::new(model), &means)?
            .with_alpha(AlphaChoice::Convincing(Default::default()));
        ecinn.decode_batch = self.decode_batch;
        let inputs = self.batch.len();
        let x = self.batch.to_device::<I<B>>(&device).images;
        let predicted = {
            let m = &ecinn.classifier;
            predictions(
                m.model
                    .logits_from_latent(m.model.encode(m.to_model(x.clone())).0),
            )
        };
        let queries: Vec<Query> = predicted
            .iter()
            .enumerate()
            .flat_map(|(input, &p)| {
                (0..k)
                    .filter(move |&t| t != p)
                    .map(move |target| Query { input, target })
            })
            .collect();
        let mut times = vec![];
        for i in 0..self.warmup + self.repeats.max(1) {
            let t = Instant::now();
            let out = ecinn.explain_alphas(x.clone(), &queries, &[ecinn.alpha])?;
            // The counterfactuals' last row read back: every inverse pass has finished.
            let n = out.counterfactuals.dims()[0];
            let _ = out.counterfactuals.slice(n - 1..n).into_data();
            let ms = t.elapsed().as_secs_f64() * 1e3;
            eprintln!("{backend} ecinn call {i}: {ms:.1} ms");
            if i >= self.warmup {
                times.push(ms);
            }
        }
        let median = super::upper_median(&mut times);
        Ok(EcinnTiming {
            backend: backend.to_string(),
            inputs,
            counterfactuals: queries.len(),
            decode_batch: self.decode_batch,
            median_ms: median,
            counterfactuals_per_second: queries.len() as f64 / (median / 1e3),
        })
    }
}

pub fn ecinn(args: &EcinnBenchArgs) -> Result<Vec<EcinnTiming>> {
    let model = if args.small {
        IbInnConfig::tiny()
    } else {
        IbInnConfig::mnist()
    };
    let test = mnist(Split::Test)?;
    let idx: Vec<usize> = (0..args.batch_size.min(test.len())).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let batch = HostBatch::from_set(&test, &idx, &Augmentation::UNIT, &mut rng);
    let mut out = vec![];
    for &b in &args.backends {
        let job = Job {
            model: model.clone(),
            batch: batch.clone(),
            decode_batch: args.decode_batch,
            repeats: args.repeats,
            warmup: args.warmup,
        };
        let t = run_on(b, job)?;
        println!(
            "{:<8} ecinn {:>5} inputs, {:>6} counterfactuals: median {:>9.1} ms, {:>10.1} CF/s",
            t.backend, t.inputs, t.counterfactuals, t.median_ms, t.counterfactuals_per_second
        );
        out.push(t);
    }
    super::write_json(args.json.as_deref(), &out)?;
    Ok(out)
}
