use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use cfx_flows::nn::mode::relu;
use serde::{Deserialize, Serialize};

use crate::Classifier;

/// A one-hidden-layer ReLU network on flattened inputs: the helix toy's classifier (seed 002
/// App. C.1: 256 hidden units, ReLU). The seed's single sigmoid output is the two-class case
/// here: `softmax([a, b])₁ = sigmoid(b − a)`, so the two forms express the same functions and the
/// explainers see one [`Classifier`] interface. Inputs are taken as they come (no range
/// mapping): toy data are not images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpClassifierConfig {
    pub input_shape: [usize; 3],
    pub hidden: usize,
    pub n_classes: usize,
}

impl MlpClassifierConfig {
    pub fn helix() -> Self {
        Self {
            input_shape: [3, 1, 1],
            hidden: 256,
            n_classes: 2,
        }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> MlpClassifier<B> {
        let d: usize = self.input_shape.iter().product();
        MlpClassifier {
            hidden: LinearConfig::new(d, self.hidden).init(device),
            out: LinearConfig::new(self.hidden, self.n_classes).init(device),
            c: self.input_shape[0],
            h: self.input_shape[1],
            w: self.input_shape[2],
        }
    }
}

#[derive(Module, Debug)]
pub struct MlpClassifier<B: Backend> {
    hidden: Linear<B>,
    out: Linear<B>,
    c: usize,
    h: usize,
    w: usize,
}

impl<B: Backend> Classifier<B> for MlpClassifier<B> {
    fn n_classes(&self) -> usize {
        self.out.weight.dims()[1]
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.c, self.h, self.w]
    }

    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let n = x.dims()[0];
        self.out
            .forward(relu(self.hidden.forward(x.reshape([n as i32, -1]))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TB;

    #[test]
    fn shapes() {
        let m = MlpClassifierConfig::helix().init::<TB>(&Default::default());
        let x = Tensor::<TB, 4>::zeros([5, 3, 1, 1], &Default::default());
        assert_eq!(m.logits(x).dims(), [5, 2]);
        assert_eq!(m.n_classes(), 2);
        assert_eq!(m.input_shape(), [3, 1, 1]);
    }
}
