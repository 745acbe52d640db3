use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::prelude::*;
use cfx_linalg::subnet_input::{SubnetInput, SubnetInputFn};

use super::mode::{batch_norm_relu, dropout, relu};
use super::{Dropout2d, conv2d, kaiming_normal, torch_default_bias};

/// IB-INN's coupling subnetwork (`basic_residual_block` / `strided_residual_block` in the
/// reference; despite the name it has no skip connection):
/// `[ReLU] → conv3×3 → BN → ReLU → conv3×3 (stride 1 or 2) → BN → ReLU → Dropout2d → conv1×1`.
///
/// Convolutions are Kaiming-normal initialised without bias except the last, whose bias gets
/// PyTorch's default; batch norm uses momentum 0.999 and ε = 1e-4 as in the reference.
#[derive(Config, Debug)]
pub struct ConvSubnetConfig {
    pub c_in: usize,
    pub c_out: usize,
    pub width: usize,
    #[config(default = 0.0)]
    pub dropout: f64,
    #[config(default = true)]
    pub relu_first: bool,
    /// 2 halves the spatial size (the strided subnet of the downsampling coupling).
    #[config(default = 1)]
    pub stride: usize,
    #[config(default = 0.999)]
    pub bn_momentum: f64,
    #[config(default = 1e-4)]
    pub bn_epsilon: f64,
}

#[derive(Module, Debug)]
pub struct ConvSubnet<B: Backend> {
    pub(crate) conv1: Conv2d<B>,
    pub(crate) bn1: BatchNorm<B>,
    pub(crate) conv2: Conv2d<B>,
    pub(crate) bn2: BatchNorm<B>,
    pub(crate) conv3: Conv2d<B>,
    dropout: Dropout2d,
    relu_first: bool,
}

impl ConvSubnetConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvSubnet<B> {
        let w = self.width;
        let conv3x3 = |c_in: usize, stride: usize| {
            let mut conv = Conv2dConfig::new([c_in, w], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_stride([stride, stride])
                .with_bias(false)
                .init(device);
            conv.weight = kaiming_normal([w, c_in, 3, 3], c_in * 9, 1.0, device);
            conv
        };
        let bn = || {
            BatchNormConfig::new(w)
                .with_momentum(self.bn_momentum)
                .with_epsilon(self.bn_epsilon)
                .init(device)
        };
        let mut conv3 = Conv2dConfig::new([w, self.c_out], [1, 1]).init(device);
        conv3.weight = kaiming_normal([self.c_out, w, 1, 1], w, 1.0, device);
        conv3.bias = Some(torch_default_bias(self.c_out, w, device));
        ConvSubnet {
            conv1: conv3x3(self.c_in, 1),
            bn1: bn(),
            conv2: conv3x3(w, self.stride),
            bn2: bn(),
            conv3,
            dropout: Dropout2d { prob: self.dropout },
            relu_first: self.relu_first,
        }
    }
}

/// Makes `f` the subnet input of backend `B` (xtask registers
/// `cfx_linalg::subnet_input::subnet_input_cube` for `Autodiff` over cuda and wgpu): the
/// leading channels of a coupling's input through the first ReLU, in one launch each way
/// instead of about seven. It is not used under DeepLift's rescale rule, which changes the
/// ReLU ([`super::mode::rescale_pairs`]).
pub fn register_subnet_input<B: Backend>(f: SubnetInputFn<B>) {
    super::registry::register(f);
}

impl<B: Backend> ConvSubnet<B> {
    /// Whether the subnet starts with a ReLU (IB-INN's couplings after the first).
    pub(crate) fn relu_first(&self) -> bool {
        self.relu_first
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = if self.relu_first { relu(x) } else { x };
        self.body(x)
    }

    /// [`Self::forward`] of the first channels of `x`, of which `leading` is the caller's view
    /// (the conditioning half of a coupling's input). A backend with a registered subnet input
    /// ([`register_subnet_input`]) takes all of `x` and skips the slice; otherwise this is
    /// `forward(leading)`, the graph it was before there was a registered one.
    pub fn forward_leading(&self, x: Tensor<B, 4>, leading: Tensor<B, 4>) -> Tensor<B, 4> {
        let ([n, c, h, w], [ln, p, lh, lw]) = (x.dims(), leading.dims());
        debug_assert!(
            (ln, lh, lw) == (n, h, w) && p <= c,
            "leading {:?} is not a leading slice of x {:?}",
            leading.dims(),
            x.dims()
        );
        if !super::mode::is_rescale()
            && let Some(f) = super::registry::registered::<SubnetInputFn<B>>()
        {
            return self.body(f(SubnetInput {
                x,
                channels: p,
                relu: self.relu_first,
            }));
        }
        self.forward(leading)
    }

    /// Everything after the first ReLU.
    fn body(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = batch_norm_relu(&self.bn1, conv2d(&self.conv1, x));
        let x = batch_norm_relu(&self.bn2, conv2d(&self.conv2, x));
        conv2d(&self.conv3, self.dropout.forward(x))
    }
}

/// The fully connected subnet of IB-INN's GLOW coupling:
/// `Linear(c_in, width) → ReLU → Dropout → Linear(width, c_out)`, weights Kaiming-normal × 0.1.
#[derive(Config, Debug)]
pub struct FcSubnetConfig {
    pub c_in: usize,
    pub c_out: usize,
    #[config(default = 1024)]
    pub width: usize,
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Multiplies the Kaiming-normal weights (the reference shrinks linear layers by 0.1).
    #[config(default = 0.1)]
    pub weight_scale: f64,
}

#[derive(Module, Debug)]
pub struct FcSubnet<B: Backend> {
    pub(crate) fc1: Linear<B>,
    pub(crate) fc2: Linear<B>,
    dropout: Dropout,
}

impl FcSubnetConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> FcSubnet<B> {
        let linear = |i: usize, o: usize| {
            let mut l = LinearConfig::new(i, o).init(device);
            l.weight = kaiming_normal([i, o], i, self.weight_scale, device);
            l.bias = Some(torch_default_bias(o, i, device));
            l
        };
        FcSubnet {
            fc1: linear(self.c_in, self.width),
            fc2: linear(self.width, self.c_out),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl<B: Backend> FcSubnet<B> {
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc2
            .forward(dropout(&self.dropout, relu(self.fc1.forward(x))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::RegistryAd as Ad;
    use std::cell::Cell;

    thread_local! {
        // Per thread: another test may run a coupling on this backend meanwhile.
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }

    fn calls() -> usize {
        CALLS.with(Cell::get)
    }

    fn counting(input: SubnetInput<Ad>) -> Tensor<Ad, 4> {
        CALLS.with(|c| c.set(c.get() + 1));
        let x = input.x.narrow(1, 0, input.channels);
        if input.relu { relu(x) } else { x }
    }

    #[test]
    fn a_registered_subnet_input_is_taken_except_under_the_rescale_rule() {
        let _registry = crate::test_util::registry_lock();
        register_subnet_input::<Ad>(counting);
        let dev = Default::default();
        let subnet = ConvSubnetConfig::new(2, 4, 3).init::<Ad>(&dev);
        let x = Tensor::<Ad, 4>::from_data(
            TensorData::new(
                (0..60).map(|i| (i as f32 - 29.5) / 7.0).collect(),
                [2, 5, 3, 2],
            ),
            &dev,
        );
        let leading = || x.clone().narrow(1, 0, 2);
        let before = calls();
        let a = subnet.forward_leading(x.clone(), leading());
        assert_eq!(calls(), before + 1);
        assert_eq!(a.dims(), [2, 4, 3, 2]);
        // Not bit for bit: the batch-norm test may register its fused op for `Ad` meanwhile.
        let want = subnet.forward(leading());
        let scale: f64 = want.clone().abs().max().into_scalar().elem();
        let err = crate::testing::max_abs_diff(a, want);
        assert!(err <= 1e-5 * scale.max(1.0), "{err} (scale {scale})");
        // DeepLift's rule rewrites the ReLU: only the tensor ops know it. Its batch is inputs
        // and as many references.
        let _guard = crate::nn::mode::rescale_pairs();
        let _ = subnet.forward_leading(x.clone(), leading());
        assert_eq!(calls(), before + 1);
    }
}
