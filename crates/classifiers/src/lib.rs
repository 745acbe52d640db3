//! The models the counterfactual methods explain and the metrics score with: the
//! Looveren–Klaise CNN (classifier and oracle), its convolutional autoencoder, and the
//! [`Classifier`] trait that lets IB-INN and the CNN be treated alike.
//!
//! Every model here takes images in **unit space** (`[0, 1]`, `[N, C, H, W]`) and maps them to
//! the normalisation it was trained with itself, so explainers, metrics and the CLI never have to
//! know which model expects `[-0.5, 0.5]` and which `[-1, 1]`.

mod autoencoder;
mod classifier;
mod cnn;
mod ibinn;
mod mlp;
mod range;

pub use autoencoder::{ConvAutoencoder, ConvAutoencoderConfig};
pub use classifier::{Classifier, FeatureMaps, predictions};
pub use cnn::{CnnClassifier, CnnClassifierConfig, CnnPadding};
pub use ibinn::IbInnClassifier;
pub use mlp::{MlpClassifier, MlpClassifierConfig};
pub use range::DataRange;

#[cfg(test)]
pub(crate) mod test_util {
    pub type TB = burn::backend::Flex;
    pub type TAd = burn::backend::Autodiff<TB>;
}
