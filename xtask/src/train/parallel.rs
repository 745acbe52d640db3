//! Data-parallel training steps: burn's multi-device scheme (what burn-train's multi-device
//! learner and burn-optim's `MultiGradientsParams` do) for our own training loops — one replica of
//! the model per device, forked from the main model at every step, each in its own thread on its
//! shard of the batch; the gradients are moved to the main device and summed there, and one
//! optimiser step updates the main model. docs/scaling.md has the speed-up model.
//!
//! Each replica's loss is its shard's mean scaled by the shard's share of the batch, so the sum of
//! the replicas' gradients is the gradient of the whole batch's mean loss. Batch norm is per shard
//! (no synchronised statistics, as PyTorch's DDP without SyncBatchNorm); burn's `RunningState`
//! averages the running statistics the replicas' threads report (each thread runs under
//! `cfx_flows::nn::mode::replica`, so batch norm reports rather than stores them), folded in
//! when the step's threads have joined.

use anyhow::{Result, bail};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::DeviceOps;
use burn::prelude::*;
use burn::tensor::backend::{AutodiffBackend, DeviceId};

/// The devices of a data-parallel run, main device first.
#[derive(Debug, Clone)]
pub struct Replicas<B: AutodiffBackend> {
    devices: Vec<B::Device>,
}

impl<B: AutodiffBackend> Replicas<B> {
    /// `n` replicas on the devices of `main`'s kind, round robin from `main`'s index. Where the
    /// backend has fewer devices (the CPU backends have one), replicas share a device.
    pub fn new(main: &B::Device, n: usize) -> Result<Self> {
        if n == 0 {
            bail!("--replicas must be at least 1");
        }
        let id = main.to_id();
        let count = B::device_count(id.type_id).max(1);
        let devices = (0..n)
            .map(|i| {
                if i == 0 {
                    main.clone()
                } else {
                    B::Device::from_id(DeviceId {
                        type_id: id.type_id,
                        index_id: ((id.index_id as usize + i) % count) as u16,
                    })
                }
            })
            .collect();
        Ok(Self { devices })
    }

    pub fn count(&self) -> usize {
        self.devices.len()
    }

    pub fn devices(&self) -> &[B::Device] {
        &self.devices
    }

    /// Each device the replicas run on, once (replicas may share a device).
    pub fn distinct_devices(&self) -> Vec<&B::Device> {
        let mut seen: Vec<DeviceId> = vec![];
        self.devices
            .iter()
            .filter(|d| {
                let id = d.to_id();
                let new = !seen.contains(&id);
                seen.push(id);
                new
            })
            .collect()
    }

    /// Seeds the RNG of every distinct device (once each: replicas sharing a device share its
    /// RNG), before the replicas' threads start drawing from them.
    pub fn seed(&self, seed: u64) {
        for d in self.distinct_devices() {
            B::seed(d, seed);
        }
    }

    /// Runs `shard_loss(replica, shard, device)` for every shard (at most one per replica), each
    /// on its replica's device and thread. `shard_loss` returns the shard's loss, already weighted
    /// by its share of the batch, and whatever else the caller wants back (metrics on the
    /// replica's device). Returns the summed gradients on the main device and the extras in shard
    /// order.
    ///
    /// One shard runs on the calling thread: a single-device run takes the same path as before
    /// data parallelism existed (the backend RNG seeded by the caller draws the same masks).
    pub fn gradients<M, S, O, F>(
        &self,
        model: &M,
        shards: Vec<S>,
        shard_loss: F,
    ) -> (GradientsParams, Vec<O>)
    where
        M: AutodiffModule<B>,
        S: Send,
        O: Send,
        F: Fn(M, S, &B::Device) -> (Tensor<B, 1>, O) + Sync,
    {
        assert!(
            (1..=self.count()).contains(&shards.len()),
            "{} shards for {} replicas",
            shards.len(),
            self.count()
        );
        let main = &self.devices[0];
        // Forked here, on the calling thread: only the replicas and their shards (Send) cross
        // into the workers.
        let work: Vec<(M, S)> = shards
            .into_iter()
            .enumerate()
            .map(|(i, shard)| match i {
                0 => (model.clone(), shard),
                _ => (model.clone().fork(&self.devices[i]), shard),
            })
            .collect();
        let shard_loss = &shard_loss;
        let one = move |i: usize, (replica, shard): (M, S), device: &B::Device| {
            let (loss, extra) = shard_loss(replica.clone(), shard, device);
            let grads = GradientsParams::from_grads(loss.backward(), &replica);
            let grads = match i {
                0 => grads,
                _ => grads.to_device::<B, M>(main, &replica),
            };
            (grads, extra)
        };
        let work_len = work.len();
        let results: Vec<(GradientsParams, O)> = if work_len == 1 {
            work.into_iter().map(|w| one(0, w, main)).collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = work
                    .into_iter()
                    .zip(&self.devices)
                    .enumerate()
                    .map(|(i, (w, device))| {
                        s.spawn(move || {
                            let _replica = cfx_flows::nn::mode::replica();
                            one(i, w, device)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        };
        if work_len > 1 {
            cfx_flows::nn::sync_running_statistics(model);
        }
        let (grads, extras): (Vec<_>, Vec<_>) = results.into_iter().unzip();
        (sum_gradients::<B, M>(model, grads), extras)
    }
}

/// The per-parameter sum of several gradient sets already on one device.
fn sum_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut sets: Vec<GradientsParams>,
) -> GradientsParams {
    if sets.len() == 1 {
        return sets.pop().expect("one set");
    }
    struct Sum<'a> {
        sets: &'a mut [GradientsParams],
        out: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Sum<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let total = self
                .sets
                .iter_mut()
                .filter_map(|g| g.remove::<B::InnerBackend, D>(param.id))
                .reduce(|a, b| a + b);
            if let Some(t) = total {
                self.out.register::<B::InnerBackend, D>(param.id, t);
            }
        }
    }
    let mut visitor = Sum {
        sets: &mut sets,
        out: GradientsParams::new(),
    };
    model.visit(&mut visitor);
    visitor.out
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::module::ParamId;
    use burn::nn::{Linear, LinearConfig};

    use super::*;

    type AB = Autodiff<Flex>;

    /// Two replicas on the CPU's one device, each on half the batch with the loss weighted by
    /// its share, give the gradient of the whole batch's mean loss.
    #[test]
    fn replica_gradients_sum_to_the_full_batch_gradient() {
        let device = Default::default();
        AB::seed(&device, 3);
        let model: Linear<AB> = LinearConfig::new(4, 2).init(&device);
        let x = Tensor::<AB, 2>::random([6, 4], burn::tensor::Distribution::Default, &device);
        let loss_of = |m: &Linear<AB>, x: Tensor<AB, 2>| m.forward(x).square().sum_dim(1).mean();
        let full = GradientsParams::from_grads(loss_of(&model, x.clone()).backward(), &model);

        let replicas = Replicas::<AB>::new(&device, 2).unwrap();
        assert_eq!(replicas.count(), 2);
        assert_eq!(replicas.distinct_devices().len(), 1);
        let parts = vec![x.clone().slice(0..4), x.clone().slice(4..6)];
        let (grads, extras) = replicas.gradients(&model, parts, |m, part, dev| {
            let rows = part.dims()[0];
            let loss = loss_of(&m, part.to_device(dev)).mul_scalar(rows as f64 / 6.0);
            (loss, rows)
        });
        assert_eq!(extras, [4, 2]);
        fn same<const D: usize>(a: &GradientsParams, b: &GradientsParams, id: ParamId) {
            let get = |g: &GradientsParams| g.get::<Flex, D>(id).unwrap().into_data();
            get(a).assert_approx_eq::<f32>(&get(b), burn::tensor::Tolerance::absolute(1e-5));
        }
        same::<2>(&grads, &full, model.weight.id);
        same::<1>(&grads, &full, model.bias.as_ref().unwrap().id);
    }

    /// Each step's replicas report their batch-norm running statistics, and the next step
    /// reads their average (not a stale value, nor one replica's).
    #[test]
    fn replicas_average_their_running_statistics_at_every_step() {
        use burn::nn::{BatchNorm, BatchNormConfig};
        let device = Default::default();
        AB::seed(&device, 4);
        let m = 0.5;
        let model: BatchNorm<AB> = BatchNormConfig::new(3).with_momentum(m).init(&device);
        let x = Tensor::<AB, 4>::random([4, 3, 2, 2], burn::tensor::Distribution::Default, &device);
        let shards = || vec![x.clone().slice(0..2), x.clone().slice(2..4)];
        let channel_mean = |t: Tensor<AB, 4>| -> Vec<f32> {
            let n = t.dims()[0] * 4;
            let t = t.swap_dims(0, 1).reshape([3, n]).mean_dim(1);
            t.into_data().to_vec().unwrap()
        };
        let batch: Vec<f32> = shards()
            .into_iter()
            .map(channel_mean)
            .reduce(|a, b| a.iter().zip(&b).map(|(a, b)| (a + b) / 2.0).collect())
            .unwrap();
        let replicas = Replicas::<AB>::new(&device, 2).unwrap();
        let mut expected = vec![0f32; 3];
        for _step in 0..2 {
            let _ = replicas.gradients(&model, shards(), |bn, part, dev| {
                let y = cfx_flows::nn::mode::batch_norm(&bn, part.to_device(dev));
                (y.square().sum().mul_scalar(0.5), ())
            });
            for (e, b) in expected.iter_mut().zip(&batch) {
                *e = (1.0 - m as f32) * *e + m as f32 * b;
            }
            model
                .running_mean
                .value()
                .into_data()
                .assert_approx_eq::<f32>(
                    &TensorData::new(expected.clone(), [3]),
                    burn::tensor::Tolerance::absolute(1e-5),
                );
        }
    }

    #[test]
    fn zero_replicas_is_an_error() {
        let e = Replicas::<AB>::new(&Default::default(), 0).unwrap_err();
        assert!(e.to_string().contains("--replicas"), "{e}");
    }
}
