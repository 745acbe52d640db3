use burn::prelude::*;
use burn::tensor::activation::softmax;

/// A model that assigns class probabilities to images in unit space.
///
/// Implemented by the CNN and by IB-INN, so the explainers and metrics treat the classifier
/// they explain, the oracle and the generative classifier alike.
pub trait Classifier<B: Backend> {
    fn n_classes(&self) -> usize;

    /// `[C, H, W]` of the images it takes.
    fn input_shape(&self) -> [usize; 3];

    /// Logits for images `[N, C, H, W]` in `[0, 1]`; their softmax is `p(y | x)`. Deterministic
    /// (no dropout), also on an autodiff backend.
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2>;

    /// `p(y | x)`, `[N, K]`.
    fn probabilities(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        softmax(self.logits(x), 1)
    }
}

/// A classifier whose intermediate feature maps can be read, for perceptual losses (C3LT's
/// cycle loss compares them between an image and its cycled copy).
pub trait FeatureMaps<B: Backend>: Classifier<B> {
    /// Feature maps of unit-space images, shallow to deep.
    fn feature_maps(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>>;
}

/// Arg-max classes of `[N, K]` scores, on the host.
pub fn predictions<B: Backend>(scores: Tensor<B, 2>) -> Vec<usize> {
    let n = scores.dims()[0];
    scores
        .argmax(1)
        .reshape([n])
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .unwrap_or_default()
        .into_iter()
        .map(|v| v as usize)
        .collect()
}
