use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use cfx_flows::nn::mode::{max_pool2x2, relu};
use serde::{Deserialize, Serialize};

use crate::{Classifier, DataRange, FeatureMaps};

/// The CNN of Looveren & Klaise's MNIST example, which Paper 4 explains with GB and GL and uses
/// as the oracle (spec §4.12): Conv(32, 2×2, same, ReLU) → MaxPool 2 → Dropout 0.3 →
/// Conv(64, 2×2, same, ReLU) → MaxPool 2 → Dropout 0.3 → Dense 256 ReLU → Dropout 0.5 →
/// Dense K; Glorot-uniform weights.
///
/// It sees `[-0.5, 0.5]` inputs as in the paper (`offset` 0.5, `scale` 1); the classifier and
/// the oracle differ only in their seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CnnClassifierConfig {
    pub input_shape: [usize; 3],
    pub n_classes: usize,
    pub conv_channels: [usize; 2],
    pub kernel: usize,
    pub hidden: usize,
    pub conv_dropout: f64,
    pub dense_dropout: f64,
    pub input_offset: f32,
    pub input_scale: f32,
}

impl Default for CnnClassifierConfig {
    fn default() -> Self {
        Self {
            input_shape: [1, 28, 28],
            n_classes: 10,
            conv_channels: [32, 64],
            kernel: 2,
            hidden: 256,
            conv_dropout: 0.3,
            dense_dropout: 0.5,
            input_offset: 0.5,
            input_scale: 1.0,
        }
    }
}

impl CnnClassifierConfig {
    /// A narrow variant for tests.
    pub fn tiny() -> Self {
        Self {
            conv_channels: [4, 8],
            hidden: 16,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let [c, h, w] = self.input_shape;
        if c == 0 || h < 4 || w < 4 {
            return Err(format!(
                "input_shape {:?}: need at least 1 channel and 4×4 pixels",
                self.input_shape
            ));
        }
        if self.n_classes < 2 {
            return Err(format!("n_classes is {}, need at least 2", self.n_classes));
        }
        if self.conv_channels.contains(&0) || self.hidden == 0 || self.kernel == 0 {
            return Err("conv_channels, hidden and kernel must be positive".into());
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> CnnClassifier<B> {
        if let Err(e) = self.validate() {
            panic!("invalid CNN config: {e}");
        }
        let glorot = Initializer::XavierUniform { gain: 1.0 };
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [self.kernel, self.kernel])
                .with_padding(PaddingConfig2d::Same)
                .with_initializer(glorot.clone())
                .init(device)
        };
        let [c, h, w] = self.input_shape;
        let [c1, c2] = self.conv_channels;
        let flat = c2 * (h / 4) * (w / 4);
        CnnClassifier {
            conv1: conv(c, c1),
            conv2: conv(c1, c2),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            dense: LinearConfig::new(flat, self.hidden)
                .with_initializer(glorot.clone())
                .init(device),
            out: LinearConfig::new(self.hidden, self.n_classes)
                .with_initializer(glorot)
                .init(device),
            conv_dropout: DropoutConfig::new(self.conv_dropout).init(),
            dense_dropout: DropoutConfig::new(self.dense_dropout).init(),
            relu: Relu::new(),
            input_shape: self.input_shape,
            input_offset: self.input_offset,
            input_scale: self.input_scale,
        }
    }
}

#[derive(Module, Debug)]
pub struct CnnClassifier<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    // `pool` and `relu` no longer run (the forward pass uses `cfx_flows::nn::mode`, which
    // DeepLift can rewrite); they stay so records saved before keep loading.
    pool: MaxPool2d,
    dense: Linear<B>,
    out: Linear<B>,
    conv_dropout: Dropout,
    dense_dropout: Dropout,
    relu: Relu,
    input_shape: [usize; 3],
    input_offset: f32,
    input_scale: f32,
}

impl<B: Backend> CnnClassifier<B> {
    /// Logits for unit-space images; `train` turns dropout on (it only acts on an autodiff
    /// backend). Explainers differentiate through the model with dropout off.
    pub fn forward(&self, x: Tensor<B, 4>, train: bool) -> Tensor<B, 2> {
        let x = relu(self.hidden(x, train));
        let x = if train {
            self.dense_dropout.forward(x)
        } else {
            x
        };
        self.out.forward(x)
    }

    /// The last hidden layer before its ReLU, `[N, hidden]`.
    fn hidden(&self, x: Tensor<B, 4>, train: bool) -> Tensor<B, 2> {
        let drop = |d: &Dropout, t| if train { d.forward(t) } else { t };
        let x = x.sub_scalar(self.input_offset).mul_scalar(self.input_scale);
        let x = max_pool2x2(relu(self.conv1.forward(x)));
        let x = drop(&self.conv_dropout, x);
        let x = max_pool2x2(relu(self.conv2.forward(x)));
        let x: Tensor<B, 2> = drop(&self.conv_dropout, x).flatten(1, 3);
        self.dense.forward(x)
    }

    /// FID256's embedding: the 256 pre-activation values of the last hidden layer (dropout
    /// off). Paper 4's code cuts the oracle after that Dense layer and re-adds it without its
    /// ReLU (spec §4.6), so the features are pre-ReLU.
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.hidden(x, false)
    }

    /// The two convolutions' ReLU outputs (before pooling), as C3LT's perceptual loss reads its
    /// classifier's `layer1` and `layer2` (`c3lt/modules.py::MNISTFeatureExtractor`); dropout off.
    pub fn conv_features(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let x = x.sub_scalar(self.input_offset).mul_scalar(self.input_scale);
        let a = relu(self.conv1.forward(x));
        let b = relu(self.conv2.forward(max_pool2x2(a.clone())));
        vec![a, b]
    }

    /// The pixel range the model was trained in, when it is one of the two [`DataRange`]s.
    pub fn input_range(&self) -> Option<DataRange> {
        DataRange::of_model(self.input_offset, self.input_scale)
    }
}

impl<B: Backend> FeatureMaps<B> for CnnClassifier<B> {
    fn feature_maps(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        self.conv_features(x)
    }
}

impl<B: Backend> Classifier<B> for CnnClassifier<B> {
    fn n_classes(&self) -> usize {
        self.out.weight.dims()[1]
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(x, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TAd, TB};
    use burn::tensor::Distribution;

    #[test]
    fn shapes_and_parameter_count_match_the_reference() {
        let m = CnnClassifierConfig::default().init::<TB>(&Default::default());
        // Keras summary of the alibi example: 160 + 8 256 + 803 072 + 2 570.
        assert_eq!(m.num_params(), 160 + 8_256 + 803_072 + 2_570);
        let x = Tensor::<TB, 4>::random([3, 1, 28, 28], Distribution::Default, &Default::default());
        assert_eq!(m.logits(x).dims(), [3, 10]);
    }

    #[test]
    fn inference_is_deterministic_on_autodiff_but_training_is_not() {
        let d = Default::default();
        let m = CnnClassifierConfig::default().init::<TAd>(&d);
        let x = Tensor::<TAd, 4>::random([4, 1, 28, 28], Distribution::Default, &d);
        let a = m.logits(x.clone()).into_data();
        let b = m.logits(x.clone()).into_data();
        a.assert_eq(&b, true);
        let t1 = m.forward(x.clone(), true).into_data();
        let t2 = m.forward(x, true).into_data();
        assert_ne!(t1.to_vec::<f32>().unwrap(), t2.to_vec::<f32>().unwrap());
    }
}
