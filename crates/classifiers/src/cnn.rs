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
/// the oracle differ only in their seed. [`CnnClassifierConfig::c3lt_mnist`] is the same
/// shape with seed 003's kernels: the network C3LT explains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CnnClassifierConfig {
    pub input_shape: [usize; 3],
    pub n_classes: usize,
    pub conv_channels: [usize; 2],
    pub kernel: usize,
    /// Absent from configs saved before C3LT's network existed, which were all `same`.
    pub padding: CnnPadding,
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
            padding: CnnPadding::Same,
            hidden: 256,
            conv_dropout: 0.3,
            dense_dropout: 0.5,
            input_offset: 0.5,
            input_scale: 1.0,
        }
    }
}

/// How the two convolutions pad their input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CnnPadding {
    /// Keras's `same`: the output keeps the input's size.
    #[default]
    Same,
    /// None: a `k×k` kernel takes `k − 1` rows and columns off.
    Valid,
}

impl CnnClassifierConfig {
    /// A narrow variant for tests.
    pub fn tiny() -> Self {
        Self::default().narrowed()
    }

    /// This architecture with the channel and hidden widths of [`CnnClassifierConfig::tiny`].
    pub fn narrowed(self) -> Self {
        Self {
            conv_channels: [4, 8],
            hidden: 16,
            ..self
        }
    }

    /// The classifier C3LT explains on MNIST (`c3lt/models/classifiers/mnist.py::MnistNet`):
    /// Conv(32, 5×5, valid, ReLU) → MaxPool 2 → Conv(64, 5×5, valid, ReLU) → MaxPool 2 →
    /// Dense 256 ReLU → Dropout 0.5 → Dense 10, no dropout between the convolutions. Its
    /// perceptual loss reads the two convolutions' ReLU outputs, 32×24×24 and 64×8×8 here
    /// against 32×28×28 and 64×14×14 for the 2×2 kernels of the default.
    ///
    /// Two choices differ from the reference and are kept from this crate's CNN: the weights
    /// start Glorot-uniform rather than at PyTorch's default, and the input is `[-0.5, 0.5]`
    /// rather than `[-1, 1]`, which only rescales what the first convolution learns.
    pub fn c3lt_mnist() -> Self {
        Self {
            kernel: 5,
            padding: CnnPadding::Valid,
            conv_dropout: 0.0,
            ..Self::default()
        }
    }

    /// The height and width after one convolution and its 2×2 pooling.
    fn stage(&self, size: usize) -> Option<usize> {
        let conv = match self.padding {
            CnnPadding::Same => size,
            CnnPadding::Valid => size.checked_sub(self.kernel - 1)?,
        };
        Some(conv / 2).filter(|&s| s > 0)
    }

    /// The two stages' output size, `None` where an image is too small for them.
    fn flat_size(&self) -> Option<[usize; 2]> {
        let [_, h, w] = self.input_shape;
        Some([self.stage(self.stage(h)?)?, self.stage(self.stage(w)?)?])
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
        if self.flat_size().is_none() {
            return Err(format!(
                "input_shape {:?} is too small for two {:?} {k}×{k} convolutions and poolings",
                self.input_shape,
                self.padding,
                k = self.kernel
            ));
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> CnnClassifier<B> {
        if let Err(e) = self.validate() {
            panic!("invalid CNN config: {e}");
        }
        let glorot = Initializer::XavierUniform { gain: 1.0 };
        let padding = match self.padding {
            CnnPadding::Same => PaddingConfig2d::Same,
            CnnPadding::Valid => PaddingConfig2d::Valid,
        };
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [self.kernel, self.kernel])
                .with_padding(padding.clone())
                .with_initializer(glorot.clone())
                .init(device)
        };
        let [c, ..] = self.input_shape;
        let [c1, c2] = self.conv_channels;
        let [fh, fw] = self.flat_size().expect("validated above");
        let flat = c2 * fh * fw;
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
    fn c3lt_network_has_the_reference_shapes_and_parameter_count() {
        let d = Default::default();
        let m = CnnClassifierConfig::c3lt_mnist().init::<TB>(&d);
        // MnistNet: 32·25 + 32, 64·32·25 + 64, 1 024·256 + 256, 256·10 + 10.
        assert_eq!(m.num_params(), 832 + 51_264 + 262_400 + 2_570);
        let x = Tensor::<TB, 4>::random([2, 1, 28, 28], Distribution::Default, &d);
        assert_eq!(m.logits(x.clone()).dims(), [2, 10]);
        let dims: Vec<_> = m.feature_maps(x).iter().map(|f| f.dims()).collect();
        assert_eq!(dims, vec![[2, 32, 24, 24], [2, 64, 8, 8]]);
    }

    #[test]
    fn images_too_small_for_valid_kernels_are_refused_by_name() {
        let c = CnnClassifierConfig {
            input_shape: [1, 10, 10],
            ..CnnClassifierConfig::c3lt_mnist()
        };
        let e = c.validate().unwrap_err();
        assert!(e.contains("[1, 10, 10]") && e.contains("5×5"), "{e}");
        // The same size is fine with `same` padding.
        let same = CnnClassifierConfig {
            input_shape: [1, 10, 10],
            ..CnnClassifierConfig::default()
        };
        assert_eq!(same.validate(), Ok(()));
    }

    #[test]
    fn configs_saved_before_the_padding_field_load_as_same() {
        let mut t = toml::Table::try_from(CnnClassifierConfig::default()).unwrap();
        t.remove("padding").unwrap();
        let c: CnnClassifierConfig = t.try_into().unwrap();
        assert_eq!(c, CnnClassifierConfig::default());
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
