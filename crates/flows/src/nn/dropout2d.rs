use burn::prelude::*;
use burn::tensor::Distribution;

/// Channel dropout (`torch.nn.Dropout2d`): zeroes whole feature maps with probability `prob`
/// and rescales the rest, only when gradients are being recorded (burn's training mode) outside
/// [`super::mode::inference`].
#[derive(Module, Clone, Debug)]
pub struct Dropout2d {
    pub prob: f64,
}

impl Dropout2d {
    pub fn forward<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if self.prob <= 0.0 || super::mode::is_inference::<B>(&x.device()) {
            return x;
        }
        let [n, c, _, _] = x.dims();
        let keep = 1.0 - self.prob;
        let mask = Tensor::<B, 4>::random([n, c, 1, 1], Distribution::Bernoulli(keep), &x.device());
        x * mask.div_scalar(keep)
    }
}
