//! Re-estimating batch-norm statistics after training.
//!
//! IB-INN trains with batch-norm momentum 0.999, so the running statistics are essentially those
//! of the last batch. Before testing, the reference (`evaluation.average_batch_norm`) resets them
//! and averages the statistics of one pass over the training data with equal weights. burn's
//! `BatchNorm` keeps an exponential average, which equals the plain average when the `k`-th
//! batch (from 1) is folded in with momentum `1/k`; these helpers drive exactly that.

use burn::module::RunningState;
use burn::nn::BatchNorm;
use burn::prelude::*;

/// Modules that own batch-norm layers and can hand them out for re-estimation.
pub trait BatchNormLayers<B: Backend> {
    fn visit_batch_norms(&mut self, f: &mut dyn FnMut(&mut BatchNorm<B>));
}

/// Resets every running statistic; returns the momentum to restore afterwards.
pub fn start_batch_norm_calibration<B: Backend, M: BatchNormLayers<B>>(
    model: &mut M,
) -> Option<f64> {
    let mut momentum = None;
    model.visit_batch_norms(&mut |bn| {
        momentum.get_or_insert(bn.momentum);
        let [c] = bn.running_mean.value().dims();
        let device = bn.running_mean.value().device();
        bn.running_mean = RunningState::new(Tensor::zeros([c], &device));
        bn.running_var = RunningState::new(Tensor::ones([c], &device));
    });
    momentum
}

/// Call before the forward pass of the `k`-th calibration batch (`k` from 1).
pub fn calibrate_batch_norm_step<B: Backend, M: BatchNormLayers<B>>(model: &mut M, k: usize) {
    let m = 1.0 / k.max(1) as f64;
    model.visit_batch_norms(&mut |bn| bn.momentum = m);
}

/// Folds in the running statistics that replicas of a data-parallel step reported
/// ([`crate::nn::mode::replica`]), as their average.
///
/// Why: burn's `RunningState` folds parked reports in only when a thread that reported reads
/// again (or at `into_record`), and a data-parallel step's replica threads are new every step,
/// so without this the next step would read stale statistics and the parked reports would pile
/// up until the next checkpoint. `into_record` of a clone syncs them: clones share the state.
pub fn sync_running_statistics<B: Backend, M: Module<B>>(model: &M) {
    let _ = model.clone().into_record();
}

pub fn finish_batch_norm_calibration<B: Backend, M: BatchNormLayers<B>>(
    model: &mut M,
    momentum: Option<f64>,
) {
    if let Some(m) = momentum {
        model.visit_batch_norms(&mut |bn| bn.momentum = m);
    }
}
