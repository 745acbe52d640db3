use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// One latent transformation of C3LT, `Linear(D→D)-ReLU-Linear(D→D)` with PyTorch's default
/// initialisation (seed 003 §4.1: "a simple 2-layer fully-connected neural network with ReLU").
/// The reference's `NLMappingConv` writes the same map as two 1×1 convolutions on `[N, D, 1, 1]`.
#[derive(Module, Debug)]
pub struct LatentMap<B: Backend> {
    first: Linear<B>,
    second: Linear<B>,
}

impl<B: Backend> LatentMap<B> {
    pub fn new(dim: usize, device: &B::Device) -> Self {
        Self {
            first: LinearConfig::new(dim, dim).init(device),
            second: LinearConfig::new(dim, dim).init(device),
        }
    }

    pub fn forward(&self, z: Tensor<B, 2>) -> Tensor<B, 2> {
        self.second.forward(relu(self.first.forward(z)))
    }

    /// `n` norm-preserving steps from `z`, `z_{k+1} = (z_k + T(z_k))·‖z‖/‖z_k + T(z_k)‖`
    /// (`c3lt/helper.py::nonlinear_map_step`, after the GAN-steerability walk); returns the path
    /// `[z, z_1, …, z_n]`.
    pub fn steps(&self, z: Tensor<B, 2>, n: usize) -> Vec<Tensor<B, 2>> {
        let norm = z.clone().square().sum_dim(1).sqrt();
        let mut path = vec![z];
        for _ in 0..n {
            let prev = path.last().expect("the path starts with z").clone();
            let next = prev.clone() + self.forward(prev);
            let scale = norm.clone() / next.clone().square().sum_dim(1).sqrt();
            path.push(next * scale);
        }
        path
    }

    /// The end of [`LatentMap::steps`].
    pub fn apply(&self, z: Tensor<B, 2>, n: usize) -> Tensor<B, 2> {
        self.steps(z, n).pop().expect("the path is never empty")
    }
}

/// C3LT's two maps: `g` from the query class `c` to the counterfactual class `c′`, `h` back.
#[derive(Module, Debug)]
pub struct C3ltMaps<B: Backend> {
    pub g: LatentMap<B>,
    pub h: LatentMap<B>,
}

impl<B: Backend> C3ltMaps<B> {
    pub fn new(dim: usize, device: &B::Device) -> Self {
        Self {
            g: LatentMap::new(dim, device),
            h: LatentMap::new(dim, device),
        }
    }

    /// The map from `pair[from]` to the other class (`g` for 0, `h` for 1).
    pub fn from_class(&self, from: usize) -> &LatentMap<B> {
        if from == 0 { &self.g } else { &self.h }
    }
}
