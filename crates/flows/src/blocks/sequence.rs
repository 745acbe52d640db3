use burn::nn::BatchNorm;
use burn::prelude::*;

use super::*;
use crate::flow::Flow;
use crate::nn::BatchNormLayers;

/// Any invertible block, so that models can be plain sequences of blocks.
// Variant sizes differ (a coupling holds its subnets inline), but a model holds only a few dozen
// blocks, so boxing would buy nothing and would complicate the derived `Module` record.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum FlowBlock<B: Backend> {
    Haar(HaarDownsampling<B>),
    ActNorm(ActNorm<B>),
    Rotation(FixedRotation<B>),
    AllInOne(AllInOneCoupling<B>),
    Downsample(DownsampleCoupling<B>),
    Dct(DctPooling<B>),
    Permutation(ChannelPermutation<B>),
    Glow(GlowCoupling<B>),
    Masked(MaskedCoupling<B>),
    Squeeze(Squeeze),
}

macro_rules! each_block {
    ($self:expr, $b:ident => $e:expr) => {
        match $self {
            FlowBlock::Haar($b) => $e,
            FlowBlock::ActNorm($b) => $e,
            FlowBlock::Rotation($b) => $e,
            FlowBlock::AllInOne($b) => $e,
            FlowBlock::Downsample($b) => $e,
            FlowBlock::Dct($b) => $e,
            FlowBlock::Permutation($b) => $e,
            FlowBlock::Glow($b) => $e,
            FlowBlock::Masked($b) => $e,
            FlowBlock::Squeeze($b) => $e,
        }
    };
}

impl<B: Backend> Flow<B> for FlowBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        each_block!(self, b => Flow::<B>::forward(b, x))
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        each_block!(self, b => Flow::<B>::inverse(b, z))
    }

    fn output_shape(&self, input: [usize; 3]) -> [usize; 3] {
        each_block!(self, b => Flow::<B>::output_shape(b, input))
    }

    fn log_det_ceiling(&self, input: [usize; 3]) -> Option<f64> {
        each_block!(self, b => Flow::<B>::log_det_ceiling(b, input))
    }
}

impl<B: Backend> FlowBlock<B> {
    /// What the block is, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            FlowBlock::Haar(_) => "Haar downsampling",
            FlowBlock::ActNorm(_) => "act-norm",
            FlowBlock::Rotation(_) => "fixed rotation",
            FlowBlock::AllInOne(_) => "all-in-one coupling",
            FlowBlock::Downsample(_) => "downsampling coupling",
            FlowBlock::Dct(_) => "DCT pooling",
            FlowBlock::Permutation(_) => "permutation",
            FlowBlock::Glow(_) => "GLOW coupling (fully connected)",
            FlowBlock::Masked(_) => "masked coupling",
            FlowBlock::Squeeze(_) => "squeeze",
        }
    }
}

impl<B: Backend> BatchNormLayers<B> for FlowBlock<B> {
    fn visit_batch_norms(&mut self, f: &mut dyn FnMut(&mut BatchNorm<B>)) {
        match self {
            FlowBlock::AllInOne(b) => b.visit_batch_norms(f),
            FlowBlock::Downsample(b) => b.visit_batch_norms(f),
            FlowBlock::Masked(b) => b.visit_batch_norms(f),
            _ => {}
        }
    }
}

/// Blocks applied one after the other; the inverse runs them backwards and the
/// log-determinants add up.
#[derive(Module, Debug)]
pub struct FlowSequence<B: Backend> {
    pub blocks: Vec<FlowBlock<B>>,
}

impl<B: Backend> FlowSequence<B> {
    pub fn new(blocks: Vec<FlowBlock<B>>) -> Self {
        Self { blocks }
    }

    /// `[C, H, W]` going into each block, for a sequence input of `input`.
    pub fn block_input_shapes(&self, input: [usize; 3]) -> Vec<[usize; 3]> {
        let mut shape = input;
        self.blocks
            .iter()
            .map(|b| {
                let here = shape;
                shape = b.output_shape(shape);
                here
            })
            .collect()
    }

    /// [`Flow::forward`] keeping each block's log-determinant (`[N]` per block, in order).
    pub fn forward_per_block(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Vec<Tensor<B, 1>>) {
        let mut parts = Vec::with_capacity(self.blocks.len());
        let z = self.blocks.iter().fold(x, |x, b| {
            let (y, l) = b.forward(x);
            parts.push(l);
            y
        });
        (z, parts)
    }

    /// [`Flow::forward`] keeping the tensor that goes into each block (in block order).
    pub fn forward_inputs(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let mut inputs = Vec::with_capacity(self.blocks.len());
        let z = self.blocks.iter().fold(x, |x, b| {
            inputs.push(x.clone());
            b.forward(x).0
        });
        (z, inputs)
    }

    /// [`Flow::inverse`] keeping the tensor each block's inverse returns, i.e. what would go
    /// into that block on the way forward (in block order, so comparable with
    /// [`Self::forward_inputs`]). Why: a counterfactual's inverse pass can leave the range the
    /// blocks were trained on, and this says at which block (`cargo xtask inverse-trace`).
    pub fn inverse_inputs(&self, z: Tensor<B, 4>) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let mut inputs = Vec::with_capacity(self.blocks.len());
        let x = self.blocks.iter().rev().fold(z, |z, b| {
            let x = b.inverse(z);
            inputs.push(x.clone());
            x
        });
        inputs.reverse();
        (x, inputs)
    }
}

impl<B: Backend> Flow<B> for FlowSequence<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let n = x.dims()[0];
        let device = x.device();
        self.blocks
            .iter()
            .fold((x, Tensor::zeros([n], &device)), |(x, ld), b| {
                let (y, l) = b.forward(x);
                (y, ld + l)
            })
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        self.blocks.iter().rev().fold(z, |z, b| b.inverse(z))
    }

    fn output_shape(&self, input: [usize; 3]) -> [usize; 3] {
        self.blocks.iter().fold(input, |s, b| b.output_shape(s))
    }

    fn log_det_ceiling(&self, input: [usize; 3]) -> Option<f64> {
        self.blocks
            .iter()
            .zip(self.block_input_shapes(input))
            .map(|(b, shape)| b.log_det_ceiling(shape))
            .sum()
    }
}

impl<B: Backend> BatchNormLayers<B> for FlowSequence<B> {
    fn visit_batch_norms(&mut self, f: &mut dyn FnMut(&mut BatchNorm<B>)) {
        self.blocks.iter_mut().for_each(|b| b.visit_batch_norms(f));
    }
}
