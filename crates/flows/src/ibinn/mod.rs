//! IB-INN (Ardizzone et al., NeurIPS 2020), the conditional INN that ECINN explains.

mod config;
mod loss;
mod model;
mod reference;

pub use config::{IbInnConfig, StageConfig};
pub use loss::{
    bits_per_dim, ib_objective, ib_terms, logsumexp, reference_bits_per_dim, smooth_one_hot,
};
pub use model::{IbInn, IbInnOutput};
pub use reference::{StoredTensor, TensorSource, load_reference_weights};
