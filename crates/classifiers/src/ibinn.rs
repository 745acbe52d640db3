use burn::prelude::*;
use cfx_datasets::Augmentation;
use cfx_flows::ibinn::IbInn;

use crate::Classifier;

/// IB-INN as a [`Classifier`]: the logits are `−½‖f(x) − μ_y‖²`, the posterior under the
/// uniform class prior that ECINN uses (the log-determinant cancels in Bayes' rule).
#[derive(Debug, Clone)]
pub struct IbInnClassifier<B: Backend> {
    pub model: IbInn<B>,
    /// Unit space to the model's input space (`[-1, 1]` for the MNIST models).
    pub input_map: Augmentation,
}

impl<B: Backend> IbInnClassifier<B> {
    pub fn new(model: IbInn<B>) -> Self {
        Self {
            model,
            input_map: Augmentation::IBINN_EVAL,
        }
    }

    /// Unit space → model input.
    pub fn to_model(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let m = self.input_map;
        x.sub_scalar(m.offset).mul_scalar(m.scale)
    }

    /// Model input → unit space.
    pub fn to_unit(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let m = self.input_map;
        x.div_scalar(m.scale).add_scalar(m.offset)
    }
}

impl<B: Backend> Classifier<B> for IbInnClassifier<B> {
    fn n_classes(&self) -> usize {
        self.model.n_classes()
    }

    fn input_shape(&self) -> [usize; 3] {
        self.model.input_shape()
    }

    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let (z, _) = self.model.encode(self.to_model(x));
        self.model.logits_from_latent(z)
    }
}
