//! RealNVP and Glow as [`Objective`]s of the single-model training loop: the loss is the
//! negative log-likelihood of dequantised pixels in bits per dimension, and every epoch writes
//! a grid of samples.

use std::path::Path;

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::backend::AutodiffBackend;
use cfx_datasets::Augmentation;
use cfx_flows::glow::Glow;
use cfx_flows::nn::mode;
use cfx_flows::realnvp::RealNvp;
use cfx_flows::{Flow, standard_normal_bpd};
use cfx_linalg::LinalgBackend;

use super::run::read_model_record;
use super::supervised::{AuxModel, Objective, is_tagged_run, read_aux};

/// Sampling temperature of the per-epoch grid (Glow's 0.7).
const TEMPERATURE: f64 = 0.7;

/// Unit images `k/255` to uniformly dequantised `(k + u)/256`, `u ~ U(0, 1)`.
fn dequantise<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let noise = Tensor::random(
        x.shape(),
        Distribution::Uniform(0.0, 1.0 / 256.0),
        &x.device(),
    );
    x.mul_scalar(255.0 / 256.0) + noise
}

/// Summed test bits/dim of a batch.
fn bpd_sum<B: Backend, F: Flow<B>>(flow: &F, x: Tensor<B, 4>) -> (f64, Option<f64>) {
    let _m = mode::inference();
    let (z, ld) = flow.forward(dequantise(x));
    (standard_normal_bpd(z, ld).sum().into_scalar().elem(), None)
}

impl<B: AutodiffBackend> Objective<B> for RealNvp<B> {
    fn train_loss(&self, x: Tensor<B, 4>, _y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
        let (z, ld) = self.forward(dequantise(x));
        standard_normal_bpd(z, ld).mean() + self.regulariser()
    }

    fn prepare(self, x: Tensor<B, 4>) -> Self {
        self.initialized_from(dequantise(x))
    }

    fn eval_sums(
        model: &RealNvp<B::InnerBackend>,
        x: Tensor<B::InnerBackend, 4>,
        _y: Tensor<B::InnerBackend, 1, Int>,
    ) -> (f64, Option<f64>) {
        bpd_sum(model, x)
    }

    fn samples(
        model: &RealNvp<B::InnerBackend>,
        n: usize,
        device: &B::Device,
    ) -> Option<Tensor<B::InnerBackend, 4>> {
        let _m = mode::inference();
        Some(model.sample(n, TEMPERATURE, device))
    }
}

impl<B> Objective<B> for Glow<B>
where
    B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend,
{
    fn train_loss(&self, x: Tensor<B, 4>, _y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
        let (z, ld) = self.forward(dequantise(x));
        standard_normal_bpd(z, ld).mean()
    }

    fn prepare(self, x: Tensor<B, 4>) -> Self {
        self.initialized_from(dequantise(x))
    }

    fn eval_sums(
        model: &Glow<B::InnerBackend>,
        x: Tensor<B::InnerBackend, 4>,
        _y: Tensor<B::InnerBackend, 1, Int>,
    ) -> (f64, Option<f64>) {
        bpd_sum(model, x)
    }

    fn samples(
        model: &Glow<B::InnerBackend>,
        n: usize,
        device: &B::Device,
    ) -> Option<Tensor<B::InnerBackend, 4>> {
        Some(model.sample(n, TEMPERATURE, device))
    }
}

/// The flow of a finished `train realnvp|glow|ib-inn` run, for the diffeo explainer, with the
/// map from unit-range images to its input (IB-INN takes `[-1, 1]`, RealNVP and Glow `[0, 1]`).
pub fn load_flow<B: LinalgBackend>(
    run: &Path,
    device: &B::Device,
) -> Result<(Box<dyn Flow<B>>, Augmentation)> {
    if !is_tagged_run(run) {
        let ibinn = super::ibinn::load_trained::<B>(run, device)?;
        return Ok((Box::new(ibinn), Augmentation::IBINN_EVAL));
    }
    let flow: Box<dyn Flow<B>> = match read_aux(run)? {
        AuxModel::RealNvp(c) => {
            c.validate().map_err(anyhow::Error::msg)?;
            let m: RealNvp<B> = c.init(device).load_record(read_model_record(run, device)?);
            Box::new(m)
        }
        AuxModel::Glow(c) => {
            c.validate().map_err(anyhow::Error::msg)?;
            let m: Glow<B> = c.init(device).load_record(read_model_record(run, device)?);
            Box::new(m)
        }
        other => bail!("{} holds a {}, not a flow", run.display(), other.kind()),
    };
    Ok((flow, Augmentation::UNIT))
}
