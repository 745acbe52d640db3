//! How the subnets' convolutions are computed: burn's `conv2d`, or unfold + matrix product
//! ([`crate::ops::conv2d_unfold`]). Both compute the same function with the same parameters;
//! which is faster depends on the backend (`cargo xtask bench conv`), like cuDNN's algorithm
//! choice in PyTorch, so it is one process-wide setting rather than a field of every model
//! config: it changes no result beyond float rounding and no saved model.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

static UNFOLD: AtomicBool = AtomicBool::new(false);

/// The convolution algorithm of [`conv2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvStrategy {
    /// burn's `conv2d` (the backend's own kernels).
    #[default]
    Burn,
    /// [`crate::ops::conv2d_unfold`].
    Unfold,
}

impl ConvStrategy {
    const ALL: [Self; 2] = [Self::Burn, Self::Unfold];

    /// The name `CFX_CONV` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Self::Burn => "burn",
            Self::Unfold => "unfold",
        }
    }
}

impl std::str::FromStr for ConvStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown convolution strategy {s:?}: expected burn or unfold"))
    }
}

pub fn set_conv_strategy(s: ConvStrategy) {
    UNFOLD.store(s == ConvStrategy::Unfold, Ordering::Relaxed);
}

pub fn conv_strategy() -> ConvStrategy {
    match UNFOLD.load(Ordering::Relaxed) {
        true => ConvStrategy::Unfold,
        false => ConvStrategy::Burn,
    }
}

/// `conv.forward(x)` by the current [`ConvStrategy`]. Layers the unfold does not cover
/// (groups, dilation, non-square kernels or asymmetric padding) always take burn's way.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    conv2d_by(conv, x, conv_strategy())
}

fn conv2d_by<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    strategy: ConvStrategy,
) -> Tensor<B, 4> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => Some(0),
        PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => Some(t),
        _ => None,
    };
    let square = conv.kernel_size[0] == conv.kernel_size[1] && conv.stride[0] == conv.stride[1];
    let plain = conv.groups == 1 && conv.dilation == [1, 1];
    match (strategy, padding) {
        (ConvStrategy::Unfold, Some(p)) if square && plain => crate::ops::conv2d_unfold(
            x,
            conv.weight.val(),
            conv.bias.as_ref().map(|b| b.val()),
            conv.stride[0],
            p,
        ),
        _ => conv.forward(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TB, assert_close, random};
    use burn::nn::conv::Conv2dConfig;

    /// Both strategies give one function (the process-wide setting is left alone: other tests
    /// run beside this one).
    #[test]
    fn strategies_agree() {
        let d = Default::default();
        let layers = [
            Conv2dConfig::new([3, 5], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_stride([2, 2])
                .init::<TB>(&d),
            Conv2dConfig::new([3, 5], [1, 1]).init::<TB>(&d),
        ];
        let x = random([2, 3, 7, 7], 4);
        for conv in &layers {
            let burn = conv2d_by(conv, x.clone(), ConvStrategy::Burn);
            let unfold = conv2d_by(conv, x.clone(), ConvStrategy::Unfold);
            assert_close(burn, unfold, 1e-4);
        }
        assert_eq!("unfold".parse(), Ok(ConvStrategy::Unfold));
        assert_eq!("burn".parse(), Ok(ConvStrategy::Burn));
        assert!("cudnn".parse::<ConvStrategy>().is_err());
    }
}
