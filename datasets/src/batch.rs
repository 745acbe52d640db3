//! From image bytes to burn tensors: augmentation, batching, epoch order and prefetching.

use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::augment::Augmentation;
use crate::image_set::{ImageItem, ImageSet};

/// A batch on the host, ready to be moved to a device.
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// `[N, C, H, W]`
    pub shape: [usize; 4],
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    pub aux_labels: Option<Vec<i64>>,
    /// Positions in the source set.
    pub indices: Vec<usize>,
}

impl HostBatch {
    pub fn from_set(
        set: &ImageSet,
        indices: &[usize],
        aug: &Augmentation,
        rng: &mut StdRng,
    ) -> Self {
        let [c, h, w] = set.image_shape();
        let mut images = Vec::with_capacity(indices.len() * c * h * w);
        for &i in indices {
            aug.apply_into(set.image(i), rng, &mut images);
        }
        Self {
            shape: [indices.len(), c, h, w],
            images,
            labels: indices.iter().map(|&i| set.label(i) as i64).collect(),
            aux_labels: set
                .aux_labels()
                .map(|a| indices.iter().map(|&i| a[i] as i64).collect()),
            indices: indices.to_vec(),
        }
    }

    fn from_items(
        items: &[ImageItem],
        shape: [usize; 3],
        aug: &Augmentation,
        rng: &mut StdRng,
    ) -> Self {
        let mut images = Vec::with_capacity(items.len() * shape.iter().product::<usize>());
        for item in items {
            aug.apply_into(&item.pixels, rng, &mut images);
        }
        let aux: Option<Vec<i64>> = items
            .iter()
            .map(|i| i.aux_label.map(|a| a as i64))
            .collect();
        Self {
            shape: [items.len(), shape[0], shape[1], shape[2]],
            images,
            labels: items.iter().map(|i| i.label as i64).collect(),
            aux_labels: aux,
            indices: items.iter().map(|i| i.index).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.shape[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows split into at most `n` contiguous shards whose sizes differ by at most one (no
    /// empty shard): one per replica of data-parallel training. One shard is the batch itself,
    /// not a copy.
    pub fn into_shards(self, n: usize) -> Vec<HostBatch> {
        let rows = self.len();
        let n = n.clamp(1, rows.max(1));
        if n == 1 {
            return vec![self];
        }
        let per = self.shape[1..].iter().product::<usize>();
        let mut start = 0;
        (0..n)
            .map(|i| {
                let len = rows / n + usize::from(i < rows % n);
                let r = start..start + len;
                start += len;
                HostBatch {
                    shape: [len, self.shape[1], self.shape[2], self.shape[3]],
                    images: self.images[r.start * per..r.end * per].to_vec(),
                    labels: self.labels[r.clone()].to_vec(),
                    aux_labels: self.aux_labels.as_ref().map(|a| a[r.clone()].to_vec()),
                    indices: self.indices[r].to_vec(),
                }
            })
            .filter(|b| !b.is_empty())
            .collect()
    }

    pub fn to_device<B: Backend>(self, device: &B::Device) -> ImageBatch<B> {
        let n = self.shape[0];
        let int = |v: Vec<i64>| Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), device);
        ImageBatch {
            images: Tensor::from_data(TensorData::new(self.images, self.shape), device),
            labels: int(self.labels),
            aux_labels: self.aux_labels.map(int),
            indices: self.indices,
        }
    }
}

/// A batch of images (model space) with their labels.
#[derive(Debug, Clone)]
pub struct ImageBatch<B: Backend> {
    pub images: Tensor<B, 4>,
    pub labels: Tensor<B, 1, Int>,
    pub aux_labels: Option<Tensor<B, 1, Int>>,
    pub indices: Vec<usize>,
}

/// burn [`Batcher`] applying an [`Augmentation`]; its noise stream is seeded and shared
/// (behind a mutex) by all the loader's workers.
pub struct AugmentingBatcher {
    aug: Augmentation,
    shape: [usize; 3],
    rng: Mutex<StdRng>,
}

impl AugmentingBatcher {
    pub fn new(aug: Augmentation, shape: [usize; 3], seed: u64) -> Self {
        Self {
            aug,
            shape,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl<B: Backend> Batcher<B, ImageItem, ImageBatch<B>> for AugmentingBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &B::Device) -> ImageBatch<B> {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        HostBatch::from_items(&items, self.shape, &self.aug, &mut rng).to_device(device)
    }
}

/// The order of one training epoch: a seeded shuffle per epoch, so that a resumed run visits
/// exactly the batches the interrupted one would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochSampler {
    pub seed: u64,
    pub batch_size: usize,
    pub drop_last: bool,
}

impl EpochSampler {
    pub fn batches(&self, n: usize, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut StdRng::seed_from_u64(mix(
            self.seed,
            epoch as u64,
            u64::MAX,
        )));
        let mut out: Vec<Vec<usize>> = order
            .chunks(self.batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect();
        if self.drop_last && out.last().is_some_and(|b| b.len() < self.batch_size) {
            out.pop();
        }
        out
    }

    pub fn batches_per_epoch(&self, n: usize) -> usize {
        let bs = self.batch_size.max(1);
        if self.drop_last {
            n / bs
        } else {
            n.div_ceil(bs)
        }
    }

    /// The noise stream of one batch, independent of how many batches came before it.
    pub fn batch_rng(&self, epoch: usize, batch: usize) -> StdRng {
        StdRng::seed_from_u64(mix(self.seed, epoch as u64, batch as u64))
    }
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    // SplitMix64 finaliser over the three words: well-spread seeds from small integers.
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Builds the host batches of one epoch on a background thread, a few ahead of the consumer,
/// so augmentation overlaps with the device's work.
pub struct Prefetcher {
    rx: Receiver<HostBatch>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Batches `start..` of `epoch`.
    pub fn new(
        set: Arc<ImageSet>,
        sampler: EpochSampler,
        aug: Augmentation,
        epoch: usize,
        start: usize,
    ) -> Self {
        let (tx, rx) = sync_channel(4);
        let handle = std::thread::spawn(move || {
            for (b, idx) in sampler
                .batches(set.len(), epoch)
                .iter()
                .enumerate()
                .skip(start)
            {
                let batch = HostBatch::from_set(&set, idx, &aug, &mut sampler.batch_rng(epoch, b));
                if tx.send(batch).is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            handle: Some(handle),
        }
    }
}

impl Iterator for Prefetcher {
    type Item = HostBatch;

    fn next(&mut self) -> Option<HostBatch> {
        self.rx.recv().ok()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Unblock the producer by dropping the receiver first, then wait for it.
        let (_, rx) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// All of `set` in order, deterministic augmentation, in batches of `batch_size`.
pub fn eval_batches<'a>(
    set: &'a ImageSet,
    batch_size: usize,
    aug: &Augmentation,
) -> impl Iterator<Item = HostBatch> + 'a {
    ordered_batches(set, batch_size, aug.deterministic(), 0)
}

/// All of `set` in order, in batches of `batch_size`, augmented with `aug`; its random parts
/// draw from one stream seeded with `seed`, so a held-out likelihood is reproducible.
pub fn ordered_batches(
    set: &ImageSet,
    batch_size: usize,
    aug: Augmentation,
    seed: u64,
) -> impl Iterator<Item = HostBatch> + '_ {
    let batch_size = batch_size.max(1);
    let n = set.len();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).step_by(batch_size).map(move |start| {
        let idx: Vec<usize> = (start..(start + batch_size).min(n)).collect();
        HostBatch::from_set(set, &idx, &aug, &mut rng)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::data::dataloader::DataLoaderBuilder;

    type B = burn::backend::Flex;

    fn set(n: usize) -> ImageSet {
        let names = (0..10).map(|c| c.to_string()).collect();
        let images = (0..n * 4).map(|i| (i % 256) as u8).collect();
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        ImageSet::new("t", [1, 2, 2], images, labels, names).unwrap()
    }

    #[test]
    fn shards_cover_the_batch_in_order() {
        let data = set(7);
        let idx: Vec<usize> = (0..7).collect();
        let mut rng = StdRng::seed_from_u64(0);
        let b = HostBatch::from_set(&data, &idx, &Augmentation::UNIT, &mut rng);
        let parts = b.clone().into_shards(3);
        assert_eq!(
            parts.iter().map(HostBatch::len).collect::<Vec<_>>(),
            [3, 2, 2]
        );
        let joined = |f: fn(&HostBatch) -> Vec<f32>| parts.iter().flat_map(f).collect::<Vec<_>>();
        assert_eq!(joined(|p| p.images.clone()), b.images);
        assert_eq!(
            parts
                .iter()
                .flat_map(|p| p.indices.clone())
                .collect::<Vec<_>>(),
            idx
        );
        assert_eq!(parts[1].shape, [2, 1, 2, 2]);
        // More replicas than rows: one row each, no empty shard.
        assert_eq!(b.clone().into_shards(10).len(), 7);
        assert_eq!(b.into_shards(0).len(), 1);
    }

    #[test]
    fn sampler_is_a_seeded_partition() {
        let s = EpochSampler {
            seed: 9,
            batch_size: 4,
            drop_last: true,
        };
        let b0 = s.batches(10, 0);
        assert_eq!(b0.len(), 2);
        assert_eq!(s.batches_per_epoch(10), 2);
        assert_eq!(b0, s.batches(10, 0));
        assert_ne!(b0, s.batches(10, 1));
        let keep = EpochSampler {
            drop_last: false,
            ..s
        };
        let mut all: Vec<usize> = keep.batches(10, 3).concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(keep.batches_per_epoch(10), 3);
    }

    #[test]
    fn prefetcher_yields_the_same_batches_when_resumed_midway() {
        let data = Arc::new(set(40));
        let s = EpochSampler {
            seed: 1,
            batch_size: 8,
            drop_last: true,
        };
        let full: Vec<HostBatch> =
            Prefetcher::new(data.clone(), s, Augmentation::IBINN_TRAIN, 2, 0).collect();
        let resumed: Vec<HostBatch> =
            Prefetcher::new(data.clone(), s, Augmentation::IBINN_TRAIN, 2, 3).collect();
        assert_eq!(full.len(), 5);
        assert_eq!(resumed.len(), 2);
        assert_eq!(full[3].indices, resumed[0].indices);
        assert_eq!(full[4].images, resumed[1].images);
        // Dropping a prefetcher before it is drained must not hang.
        let mut p = Prefetcher::new(data, s, Augmentation::IBINN_TRAIN, 0, 0);
        p.next();
        drop(p);
    }

    #[test]
    fn burn_dataloader_with_the_batcher() {
        let batcher = AugmentingBatcher::new(Augmentation::IBINN_EVAL, [1, 2, 2], 0);
        let loader = DataLoaderBuilder::<B, _, _>::new(batcher)
            .batch_size(16)
            .build(set(40));
        let batches: Vec<ImageBatch<B>> = loader.iter().collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[0].images.dims(), [16, 1, 2, 2]);
        let first: Vec<f32> = batches[0].images.clone().into_data().to_vec().unwrap();
        assert_eq!(first[0], -1.0);
        let labels: Vec<i64> = batches[2]
            .labels
            .clone()
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        assert_eq!(
            labels,
            (32..40).map(|i| (i % 10) as i64).collect::<Vec<_>>()
        );
    }

    #[test]
    fn eval_batches_cover_the_set_in_order() {
        let s = set(10);
        let b: Vec<HostBatch> = eval_batches(&s, 4, &Augmentation::IBINN_TRAIN).collect();
        assert_eq!(
            b.iter().map(HostBatch::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert_eq!(b[2].indices, vec![8, 9]);
        assert_eq!(
            b[0].images[1],
            Augmentation::IBINN_EVAL.from_unit(1.0 / 255.0)
        );
    }
}
