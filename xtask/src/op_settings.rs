//! The backend-specific ops the process registers (`cfx_flows::nn::registry`), and the speed
//! settings that choose between them: environment variables rather than flags on every
//! command, since none of them changes a result beyond float rounding.
//!
//! | variable | values (default first) | what it picks |
//! | --- | --- | --- |
//! | `CFX_BATCH_NORM` | `kernels`, `fused`, `ops` | training batch norm (`cfx_flows::nn::mode::batch_norm`) |
//! | `CFX_PACK` | `kernel`, `cat` | how the optimiser gathers its vectors (`train::optim`) |
//! | `CFX_AFFINE` | `kernel`, `ops` | the couplings' affine half-step in training |
//! | `CFX_WEIGHTS` | `channels-last`, `standard` | how the optimiser stores convolution weights (`train::optim`) |
//! | `CFX_SUBNET_INPUT` | `kernel`, `ops` | the couplings' subnet input (leading channels, ReLU) in training |
//! | `CFX_ACT_NORM` | `kernel`, `ops` | the couplings' fixed act-norm in training |
//! | `CFX_FLEX_CONV` | `grouped`, `per-sample`, `matmul-grads` | flex's convolution under `CFX_CONV=auto`: `cfx_linalg::conv_flex` with small planes' products grouped or one product per sample, or burn's forward with `cfx_flows::nn::conv_grads`'s gradients |
//! | `CFX_CONV_NARROW` | `padded`, `direct` | under `CFX_CONV=gemm`, the weight gradient of convolutions with fewer or unaligned input channels (`cfx_linalg::conv_gemm::NarrowWeightGrad`) |
//!
//! (`CFX_CONV`, the subnets' convolution, is read in `main` and kept by `cfx_flows`.) The
//! kernels exist for cuda and wgpu, and not under `fusion`, whose tensors are not
//! burn-cubecl's; flex has its own for batch norm and the affine half-step (Rust passes split
//! over the cores), and its own convolution (`CFX_FLEX_CONV`): elsewhere each setting falls
//! back as its [`OpSetting::on`] says.

use anyhow::{Result, anyhow};
#[cfg(any(
    feature = "flex",
    all(any(feature = "cuda", feature = "wgpu"), not(feature = "fusion"))
))]
use burn::backend::Autodiff;

use crate::backend::BackendKind;

/// One setting: its variable and its named values.
pub trait OpSetting: Copy + Default + PartialEq + 'static {
    const VAR: &'static str;
    const ALL: &'static [Self];
    /// The value that stands in for the kernels where there are none.
    const WITHOUT_KERNELS: Self;
    /// Whether flex has kernels of its own for this op (Rust passes split over the cores).
    const FLEX_KERNELS: bool = false;

    fn name(self) -> &'static str;

    /// The value of [`Self::VAR`], or the default when it is not set.
    fn from_env() -> Result<Self> {
        let Ok(s) = std::env::var(Self::VAR) else {
            return Ok(Self::default());
        };
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
                anyhow!(
                    "{}: unknown value {s:?}: expected one of {}",
                    Self::VAR,
                    names.join(", ")
                )
            })
    }

    /// What runs on `backend` under this setting: the default (the kernels) only where the
    /// kernels exist.
    fn on(self, backend: BackendKind) -> Self {
        let flex = matches!(backend, BackendKind::Cpu | BackendKind::Flex);
        if self == Self::default() && !has_kernels(backend) && !(Self::FLEX_KERNELS && flex) {
            Self::WITHOUT_KERNELS
        } else {
            self
        }
    }
}

/// Whether `backend` runs the CubeCL kernels of `cfx_linalg`.
fn has_kernels(backend: BackendKind) -> bool {
    matches!(backend, BackendKind::Cuda | BackendKind::Wgpu) && !cfg!(feature = "fusion")
}

/// One setting: an enum of named values, the first the default, and its [`OpSetting`] impl.
macro_rules! op_setting {
    (
        $(#[$doc:meta])* $name:ident, $var:literal, without kernels $without:ident
        $(; flex kernels $flex:literal)?,
        $(#[$first_doc:meta])* $first:ident = $first_name:literal,
        $($(#[$other_doc:meta])* $other:ident = $other_name:literal),+ $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name {
            $(#[$first_doc])*
            #[default]
            $first,
            $($(#[$other_doc])* $other,)+
        }

        impl OpSetting for $name {
            const VAR: &'static str = $var;
            const ALL: &'static [Self] = &[Self::$first, $(Self::$other),+];
            const WITHOUT_KERNELS: Self = Self::$without;
            $(const FLEX_KERNELS: bool = $flex;)?

            fn name(self) -> &'static str {
                match self {
                    Self::$first => $first_name,
                    $(Self::$other => $other_name,)+
                }
            }
        }
    };
}

op_setting!(
    /// Training batch norm (`CFX_BATCH_NORM`).
    BatchNormImpl, "CFX_BATCH_NORM", without kernels Fused; flex kernels true,
    /// CubeCL kernels on cuda and wgpu, parallel Rust passes on flex (`cfx_linalg::batch_norm`).
    Kernels = "kernels",
    /// One autodiff op with the closed-form backward, written with tensor ops.
    Fused = "fused",
    /// Autodiff through the tensor ops of the definition.
    Ops = "ops",
);

op_setting!(
    /// How the optimiser gathers its flat vectors (`CFX_PACK`).
    PackImpl, "CFX_PACK", without kernels Cat,
    /// `cfx_linalg::pack::pack_cube`: a launch per 16 tensors.
    Kernel = "kernel",
    /// One `cat` of the tensors and their paddings (a launch per piece on the cube backends).
    Cat = "cat",
);

op_setting!(
    /// The couplings' affine half-step in training (`CFX_AFFINE`).
    AffineImpl, "CFX_AFFINE", without kernels Ops; flex kernels true,
    /// `cfx_linalg::affine::affine_train_cube`: one launch forward, three backward; on flex
    /// `affine_train_flex`, one pass split over the cores each way.
    Kernel = "kernel",
    /// Autodiff through the tensor ops of the definition.
    Ops = "ops",
);

op_setting!(
    /// The all-in-one couplings' subnet input in training (`CFX_SUBNET_INPUT`): the ops are a
    /// slice and a ReLU.
    SubnetInputImpl, "CFX_SUBNET_INPUT", without kernels Ops,
    /// `cfx_linalg::subnet_input::subnet_input_cube`: one launch forward, one backward, the
    /// output channels-last.
    Kernel = "kernel",
    /// Autodiff through the tensor ops of the definition.
    Ops = "ops",
);

op_setting!(
    /// The all-in-one couplings' fixed act-norm in training (`CFX_ACT_NORM`).
    ActNormImpl, "CFX_ACT_NORM", without kernels Ops,
    /// `cfx_linalg::channel_affine::channel_affine_cube`: one launch forward, one backward.
    Kernel = "kernel",
    /// Autodiff through the tensor ops of the definition.
    Ops = "ops",
);

op_setting!(
    /// Under `CFX_CONV=gemm`, the weight gradient of the convolutions whose input channels are
    /// not a multiple of 8 (`CFX_CONV_NARROW`; `cfx_linalg::conv_gemm::NarrowWeightGrad`).
    NarrowConvImpl, "CFX_CONV_NARROW", without kernels Direct,
    /// The input zero-padded to 8 channels and the implicit-GEMM kernel.
    Padded = "padded",
    /// burn-cubecl's direct kernel.
    Direct = "direct",
);

op_setting!(
    /// flex's convolution under `CFX_CONV=auto` (`CFX_FLEX_CONV`); other backends have none of
    /// their own there.
    FlexConvImpl, "CFX_FLEX_CONV", without kernels MatmulGrads; flex kernels true,
    /// `cfx_linalg::conv_flex`: one matrix product per sample, or per group of samples whose
    /// planes are small, the products over the cores (the transposed convolutions of the DCGAN
    /// and the VAE too).
    Grouped = "grouped",
    /// The same passes with one matrix product per sample whatever its plane's size (as
    /// before 2026-12-07).
    PerSample = "per-sample",
    /// burn's forward, the gradients as whichever of burn's and a matrix product flex runs
    /// faster, shape by shape (`cfx_flows::nn::conv_grads`).
    MatmulGrads = "matmul-grads",
);

op_setting!(
    /// How the optimiser lays out convolution weights in its flat vector (`CFX_WEIGHTS`).
    WeightLayout, "CFX_WEIGHTS", without kernels Standard,
    /// `[O, kH, kW, I]`, so the stepped weights are the channels-last views burn-cubecl's
    /// convolutions read without a copy (`GroupedSgd::with_channels_last`).
    ChannelsLast = "channels-last",
    /// burn's `[O, I, kH, kW]`.
    Standard = "standard",
);

/// All settings, as [`register_backend_ops`] registered them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpSettings {
    pub batch_norm: BatchNormImpl,
    pub pack: PackImpl,
    pub affine: AffineImpl,
    pub weights: WeightLayout,
    pub subnet_input: SubnetInputImpl,
    pub act_norm: ActNormImpl,
    pub conv_narrow: NarrowConvImpl,
    pub flex_conv: FlexConvImpl,
}

impl OpSettings {
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            batch_norm: BatchNormImpl::from_env()?,
            pack: PackImpl::from_env()?,
            affine: AffineImpl::from_env()?,
            weights: WeightLayout::from_env()?,
            subnet_input: SubnetInputImpl::from_env()?,
            act_norm: ActNormImpl::from_env()?,
            conv_narrow: NarrowConvImpl::from_env()?,
            flex_conv: FlexConvImpl::from_env()?,
        })
    }
}

static SETTINGS: std::sync::OnceLock<OpSettings> = std::sync::OnceLock::new();

/// The settings [`register_backend_ops`] registered (the defaults before it ran).
pub fn op_settings() -> OpSettings {
    SETTINGS.get().copied().unwrap_or_default()
}

/// Registers the backend-specific ops of the backends compiled in: `cfx_linalg::conv_gemm` as
/// the `CFX_CONV=gemm` convolution of the GPU backends, and for each setting the op it asks
/// for on every backend.
pub fn register_backend_ops(settings: OpSettings) {
    let _ = SETTINGS.set(settings);
    /// The plain backend (inference) and its autodiff wrapper (training).
    #[cfg(all(any(feature = "cuda", feature = "wgpu"), not(feature = "fusion")))]
    macro_rules! register_cube {
        ($b:ty) => {
            cfx_flows::nn::register_gemm_conv2d::<$b>(cfx_linalg::conv_gemm::conv2d_gemm);
            {
                use cfx_linalg::conv_gemm::{NarrowWeightGrad, conv2d_gemm_autodiff_with};
                cfx_flows::nn::register_gemm_conv2d::<Autodiff<$b>>(match settings.conv_narrow {
                    NarrowConvImpl::Padded => {
                        |x, w, b, o| conv2d_gemm_autodiff_with(x, w, b, o, NarrowWeightGrad::Padded)
                    }
                    NarrowConvImpl::Direct => {
                        |x, w, b, o| conv2d_gemm_autodiff_with(x, w, b, o, NarrowWeightGrad::Direct)
                    }
                });
            }
            match settings.batch_norm {
                BatchNormImpl::Kernels => cfx_flows::nn::register_batch_norm::<Autodiff<$b>>(
                    cfx_linalg::batch_norm::batch_norm_train_cube,
                ),
                BatchNormImpl::Fused => cfx_flows::nn::register_fused_batch_norm::<$b>(
                    cfx_flows::nn::PerChannel::Broadcast,
                ),
                BatchNormImpl::Ops => {}
            }
            if settings.pack == PackImpl::Kernel {
                crate::train::optim::register_pack::<$b>(cfx_linalg::pack::pack_cube);
            }
            if settings.weights == WeightLayout::ChannelsLast {
                crate::train::optim::register_channels_last_weights::<$b>();
            }
            if settings.affine == AffineImpl::Kernel {
                cfx_flows::blocks::register_affine::<Autodiff<$b>>(
                    cfx_linalg::affine::affine_train_cube,
                );
            }
            if settings.subnet_input == SubnetInputImpl::Kernel {
                cfx_flows::nn::register_subnet_input::<Autodiff<$b>>(
                    cfx_linalg::subnet_input::subnet_input_cube,
                );
            }
            if settings.act_norm == ActNormImpl::Kernel {
                cfx_flows::blocks::register_channel_affine::<Autodiff<$b>>(
                    cfx_linalg::channel_affine::channel_affine_cube,
                );
            }
        };
    }
    #[cfg(all(feature = "cuda", not(feature = "fusion")))]
    register_cube!(burn::backend::Cuda);
    #[cfg(all(feature = "wgpu", not(feature = "fusion")))]
    register_cube!(burn::backend::Wgpu);
    if settings.batch_norm != BatchNormImpl::Ops {
        register_fused_batch_norms();
    }
    // flex picks here between its batch-norm passes and the fused op, as `register_cube!`
    // does. The fused op materialises its per-channel operands: flex walks a broadcast one
    // element by element (`cfx_flows::ops::per_channel`).
    #[cfg(feature = "flex")]
    match settings.batch_norm {
        BatchNormImpl::Kernels => {
            cfx_flows::nn::register_batch_norm::<Autodiff<burn::backend::Flex>>(
                cfx_linalg::batch_norm::batch_norm_train_flex,
            )
        }
        BatchNormImpl::Fused => cfx_flows::nn::register_fused_batch_norm::<burn::backend::Flex>(
            cfx_flows::nn::PerChannel::Materialise,
        ),
        BatchNormImpl::Ops => {}
    }
    #[cfg(feature = "flex")]
    if settings.affine == AffineImpl::Kernel {
        cfx_flows::blocks::register_affine::<Autodiff<burn::backend::Flex>>(
            cfx_linalg::affine::affine_train_flex,
        );
    }
    // flex's default convolution (CFX_CONV=auto; `CFX_CONV=burn` for burn's).
    #[cfg(feature = "flex")]
    match settings.flex_conv {
        FlexConvImpl::Grouped | FlexConvImpl::PerSample => {
            use cfx_flows::nn::register_auto_conv2d_with;
            cfx_linalg::conv_flex::set_min_columns(match settings.flex_conv {
                FlexConvImpl::PerSample => 1,
                _ => cfx_linalg::conv_flex::DEFAULT_MIN_COLUMNS,
            });
            register_auto_conv2d_with::<Autodiff<burn::backend::Flex>>(
                cfx_linalg::conv_flex::conv2d_flex,
            );
            // Inference (ECINN, explain, evaluate) runs on flex itself.
            register_auto_conv2d_with::<burn::backend::Flex>(
                cfx_linalg::conv_flex::conv2d_flex_inference,
            );
            // The DCGAN's and the VAE's generators: their transposed convolutions by the same
            // passes.
            use cfx_flows::nn::register_auto_conv_transpose2d;
            register_auto_conv_transpose2d::<Autodiff<burn::backend::Flex>>(
                cfx_linalg::conv_flex::conv_transpose2d_flex,
            );
            register_auto_conv_transpose2d::<burn::backend::Flex>(
                cfx_linalg::conv_flex::conv_transpose2d_flex_inference,
            );
        }
        FlexConvImpl::MatmulGrads => cfx_flows::nn::register_auto_conv2d::<burn::backend::Flex>(),
    }
}

/// The fused tensor-op batch norm for the backends without kernels (flex's is registered
/// beside its kernels).
fn register_fused_batch_norms() {
    #[allow(unused_imports)] // a build with only the cube backends registers none here
    use cfx_flows::nn::{PerChannel, register_fused_batch_norm};
    // ndarray, like flex, is faster with materialised per-channel operands.
    #[cfg(feature = "ndarray")]
    register_fused_batch_norm::<burn::backend::NdArray>(PerChannel::Materialise);
    #[cfg(all(feature = "cuda", feature = "fusion"))]
    register_fused_batch_norm::<burn::backend::Cuda>(PerChannel::Broadcast);
    #[cfg(all(feature = "wgpu", feature = "fusion"))]
    register_fused_batch_norm::<burn::backend::Wgpu>(PerChannel::Broadcast);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `bench step` reports as run: the kernels where a backend has them, the fallback
    /// elsewhere; flex has batch norm's and the affine half-step's, and an explicit choice
    /// stands everywhere.
    #[test]
    fn each_setting_falls_back_where_there_are_no_kernels() {
        for cpu in [BackendKind::Cpu, BackendKind::Flex] {
            assert_eq!(BatchNormImpl::Kernels.on(cpu), BatchNormImpl::Kernels);
            assert_eq!(PackImpl::Kernel.on(cpu), PackImpl::Cat);
            assert_eq!(AffineImpl::Kernel.on(cpu), AffineImpl::Kernel);
        }
        assert_eq!(
            BatchNormImpl::Kernels.on(BackendKind::Ndarray),
            BatchNormImpl::Fused
        );
        assert_eq!(
            BatchNormImpl::Fused.on(BackendKind::Cpu),
            BatchNormImpl::Fused
        );
        assert_eq!(BatchNormImpl::Ops.on(BackendKind::Flex), BatchNormImpl::Ops);
        assert_eq!(AffineImpl::Kernel.on(BackendKind::Ndarray), AffineImpl::Ops);
        let gpu = if cfg!(feature = "fusion") {
            BatchNormImpl::Fused
        } else {
            BatchNormImpl::Kernels
        };
        assert_eq!(BatchNormImpl::Kernels.on(BackendKind::Cuda), gpu);
    }
}
