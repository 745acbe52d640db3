//! Datasets for counterfactual explanation experiments.
//!
//! MNIST is bundled (compiled into the binary, checked against its SHA-256 sums on first use),
//! FakeMNIST is derived from it exactly as the ECINN reference code does, and Fashion-MNIST is
//! read from a folder. Every set is an in-memory [`ImageSet`] of bytes that implements burn's
//! `Dataset`; [`batch`] turns it into augmented tensors.

pub mod augment;
pub mod batch;
pub mod error;
pub mod fake_mnist;
pub mod helix;
pub mod idx;
pub mod image_folder;
pub mod image_set;
pub mod mnist;
pub mod numpy_rng;
pub mod selection;
pub mod source;
pub mod split;

pub use augment::Augmentation;
pub use batch::{
    AugmentingBatcher, EpochSampler, HostBatch, ImageBatch, Prefetcher, eval_batches,
    ordered_batches,
};
pub use error::{DatasetError, Result};
pub use fake_mnist::{FAKE_MNIST_SEED, build_fake_mnist, fake_mnist};
pub use image_folder::{FolderShape, image_folder};
pub use image_set::{ImageItem, ImageSet};
pub use mnist::{Split, mnist};
pub use selection::Selection;
pub use source::DatasetKind;
pub use split::train_val_split;
