//! How the subnets' convolutions are computed: burn's `conv2d`, unfold + matrix product
//! ([`crate::ops::conv2d_unfold`]), a backend's implicit-GEMM kernels registered by the
//! process ([`register_gemm_conv2d`]), or by default the convolution registered as the
//! backend's best ([`super::register_auto_conv2d`]: flex's matrix-product gradients). All
//! compute the same function with the same parameters; which is faster depends on the
//! backend (`cargo xtask bench conv`), like cuDNN's algorithm choice in PyTorch, so it is one
//! process-wide setting rather than a field of every model config: it changes no result beyond
//! float rounding and no saved model.
//!
//! The implicit-GEMM way is registered by the process for the backends that have such kernels
//! (`cfx_linalg::conv_gemm`), rather than a method of a backend trait (`super::registry`).

use std::sync::atomic::{AtomicU8, Ordering};

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

static STRATEGY: AtomicU8 = AtomicU8::new(0);

/// The convolution algorithm of [`conv2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvStrategy {
    /// The convolution registered for the backend as its default ([`AutoConv2d`]), burn's
    /// `conv2d` on a backend without one.
    #[default]
    Auto,
    /// burn's `conv2d` (the backend's own kernels).
    Burn,
    /// [`crate::ops::conv2d_unfold`].
    Unfold,
    /// The function [`register_gemm_conv2d`] registered for the backend; burn's `conv2d` on a
    /// backend without one.
    Gemm,
}

impl ConvStrategy {
    const ALL: [Self; 4] = [Self::Auto, Self::Burn, Self::Unfold, Self::Gemm];

    /// The name `CFX_CONV` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Burn => "burn",
            Self::Unfold => "unfold",
            Self::Gemm => "gemm",
        }
    }
}

impl std::str::FromStr for ConvStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!("unknown convolution strategy {s:?}: expected auto, burn, unfold or gemm")
            })
    }
}

pub fn set_conv_strategy(s: ConvStrategy) {
    STRATEGY.store(s as u8, Ordering::Relaxed);
}

pub fn conv_strategy() -> ConvStrategy {
    ConvStrategy::ALL[STRATEGY.load(Ordering::Relaxed) as usize]
}

/// A convolution `(x, weight, bias, options) → y` for one backend type.
pub type Conv2dFn<B> =
    fn(Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 1>>, ConvOptions<2>) -> Tensor<B, 4>;

/// Makes `f` the [`ConvStrategy::Gemm`] convolution of backend `B` (a later call replaces it).
pub fn register_gemm_conv2d<B: Backend>(f: Conv2dFn<B>) {
    super::registry::register(f);
}

/// A transposed convolution `(y, weight, bias, options) → x` for one backend type.
pub type ConvTranspose2dFn<B> =
    fn(Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 1>>, ConvTransposeOptions<2>) -> Tensor<B, 4>;

/// Makes `f` the transposed convolution of backend `B` that [`conv_transpose2d_default`] runs
/// (a later call replaces it), as xtask does for flex with `cfx_linalg::conv_flex`.
pub fn register_auto_conv_transpose2d<B: Backend>(f: ConvTranspose2dFn<B>) {
    super::registry::register(f);
}

/// `layer.forward(y)` by the transposed convolution registered for `B`, unless the process
/// chose burn's convolutions (`CFX_CONV=burn`) or none is registered: the DCGAN's generator.
pub fn conv_transpose2d_default<B: Backend>(
    layer: &ConvTranspose2d<B>,
    y: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let registered = match conv_strategy() {
        ConvStrategy::Burn => None,
        _ => super::registry::registered::<ConvTranspose2dFn<B>>(),
    };
    match registered {
        Some(f) => f(
            y,
            layer.weight.val(),
            layer.bias.as_ref().map(|b| b.val()),
            ConvTransposeOptions::new(
                layer.stride,
                layer.padding,
                layer.padding_out,
                layer.dilation,
                layer.groups,
            ),
        ),
        None => layer.forward(y),
    }
}

/// The function registered for `B`, if any.
pub fn gemm_conv2d<B: Backend>() -> Option<Conv2dFn<B>> {
    super::registry::registered::<Conv2dFn<B>>()
}

/// The [`ConvStrategy::Auto`] convolution of backend `B`: a type of its own, so that its
/// registry key differs from the [`ConvStrategy::Gemm`] one's.
pub struct AutoConv2d<B: Backend>(pub Conv2dFn<B>);

impl<B: Backend> Clone for AutoConv2d<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for AutoConv2d<B> {}

/// The function registered for `B` by [`super::register_auto_conv2d`], if any.
pub fn auto_conv2d<B: Backend>() -> Option<Conv2dFn<B>> {
    super::registry::registered::<AutoConv2d<B>>().map(|f| f.0)
}

/// `conv.forward(x)` by the current [`ConvStrategy`]. Layers the unfold does not cover
/// (groups, dilation, non-square kernels or asymmetric padding) always take burn's way, and
/// so do layers with asymmetric or `Same` padding under `Gemm` and `Auto`.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    conv2d_by(conv, x, conv_strategy())
}

/// `conv.forward(x)` by the backend's registered default ([`ConvStrategy::Auto`]) unless the
/// process chose burn's: for the coupling nets of RealNVP and Glow, whose shapes the opt-in
/// strategies (`unfold`, `gemm`) were not checked at, so those keep burn's `conv2d` there.
pub fn conv2d_default<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match conv_strategy() {
        ConvStrategy::Burn => conv.forward(x),
        _ => conv2d_by(conv, x, ConvStrategy::Auto),
    }
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
        (ConvStrategy::Gemm | ConvStrategy::Auto, Some(p)) => {
            let registered = match strategy {
                ConvStrategy::Gemm => gemm_conv2d::<B>(),
                _ => auto_conv2d::<B>(),
            };
            match registered {
                Some(f) => f(
                    x,
                    conv.weight.val(),
                    conv.bias.as_ref().map(|b| b.val()),
                    ConvOptions::new(conv.stride, [p, p], conv.dilation, conv.groups),
                ),
                None => conv.forward(x),
            }
        }
        _ => conv.forward(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TB, assert_close, random};
    use burn::nn::conv::Conv2dConfig;

    /// A strided 3×3 layer with padding and a 1×1 layer, both with bias.
    fn layers() -> [Conv2d<TB>; 2] {
        let d = Default::default();
        [
            Conv2dConfig::new([3, 5], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_stride([2, 2])
                .init::<TB>(&d),
            Conv2dConfig::new([3, 5], [1, 1]).init::<TB>(&d),
        ]
    }

    /// Both strategies give one function (the process-wide setting is left alone: other tests
    /// run beside this one).
    #[test]
    fn strategies_agree() {
        let layers = layers();
        let x = random([2, 3, 7, 7], 4);
        for conv in &layers {
            let burn = conv2d_by(conv, x.clone(), ConvStrategy::Burn);
            let unfold = conv2d_by(conv, x.clone(), ConvStrategy::Unfold);
            assert_close(burn, unfold, 1e-4);
        }
        assert_eq!("unfold".parse(), Ok(ConvStrategy::Unfold));
        assert_eq!("burn".parse(), Ok(ConvStrategy::Burn));
        assert_eq!("gemm".parse(), Ok(ConvStrategy::Gemm));
        assert!("cudnn".parse::<ConvStrategy>().is_err());
    }

    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn counting_conv(
        x: Tensor<TB, 4>,
        w: Tensor<TB, 4>,
        b: Option<Tensor<TB, 1>>,
        o: ConvOptions<2>,
    ) -> Tensor<TB, 4> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        burn::tensor::module::conv2d(x, w, b, o)
    }

    /// `Gemm` runs the function registered for the backend's type, with the layer's stride,
    /// padding and bias, and burn's `conv2d` for a backend with none (only this test registers).
    #[test]
    fn gemm_runs_the_convolution_registered_for_the_backend() {
        type Other = burn::backend::Autodiff<TB>;
        let layers = layers();
        let x = random([2, 3, 7, 7], 5);
        let other = Conv2dConfig::new([3, 4], [3, 3]).init::<Other>(&Default::default());
        let xo = Tensor::<Other, 4>::from_inner(x.clone());
        assert_close(
            conv2d_by(&other, xo.clone(), ConvStrategy::Gemm).inner(),
            other.forward(xo).inner(),
            0.0,
        );
        register_gemm_conv2d::<TB>(counting_conv);
        assert!(gemm_conv2d::<Other>().is_none());
        for conv in &layers {
            let burn = conv2d_by(conv, x.clone(), ConvStrategy::Burn);
            let gemm = conv2d_by(conv, x.clone(), ConvStrategy::Gemm);
            assert_close(burn, gemm, 1e-6);
        }
        assert_eq!(CALLS.load(Ordering::SeqCst), layers.len());
    }

    static TRANSPOSED_CALLS: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    fn counting_transposed(
        y: Tensor<TB, 4>,
        w: Tensor<TB, 4>,
        b: Option<Tensor<TB, 1>>,
        o: ConvTransposeOptions<2>,
    ) -> Tensor<TB, 4> {
        TRANSPOSED_CALLS.fetch_add(1, Ordering::SeqCst);
        burn::tensor::module::conv_transpose2d(y, w, b, o)
    }

    /// The default transposed convolution runs the function registered for the backend's
    /// type with the layer's stride, paddings and bias, and the layer's own forward pass on a
    /// backend with none (only this test registers one).
    #[test]
    fn transposed_runs_the_function_registered_for_the_backend() {
        use burn::nn::conv::ConvTranspose2dConfig;
        type Other = burn::backend::Autodiff<TB>;
        let config = ConvTranspose2dConfig::new([3, 2], [3, 3])
            .with_stride([2, 2])
            .with_padding([1, 1])
            .with_padding_out([1, 1]);
        let y = random([2, 3, 4, 4], 6);
        let other = config.init::<Other>(&Default::default());
        let yo = Tensor::<Other, 4>::from_inner(y.clone());
        assert_close(
            conv_transpose2d_default(&other, yo.clone()).inner(),
            other.forward(yo).inner(),
            0.0,
        );
        register_auto_conv_transpose2d::<TB>(counting_transposed);
        let layer = config.init::<TB>(&Default::default());
        let ours = conv_transpose2d_default(&layer, y.clone());
        assert_eq!(ours.dims(), [2, 2, 8, 8]);
        assert_close(ours, layer.forward(y), 0.0);
        assert_eq!(TRANSPOSED_CALLS.load(Ordering::SeqCst), 1);
    }
}
