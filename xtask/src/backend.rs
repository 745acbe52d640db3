//! Choosing the burn backend at run time among those compiled in.
//!
//! Everything the CLI runs is generic over an autodiff backend; a [`BackendJob`] is run on the
//! backend the user picked (`--backend`), defaulting to the GPU backend when one was compiled
//! in (`--features cuda` / `wgpu`) and to the CPU otherwise.

use std::fmt;

use anyhow::{Result, bail};
use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use cfx_linalg::LinalgBackend;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The default CPU backend (flex: measured faster than ndarray, see docs/results.md).
    Cpu,
    Flex,
    Ndarray,
    Cuda,
    Wgpu,
}

impl BackendKind {
    /// What `--backend` means when not given.
    pub fn default_for_build() -> Self {
        if cfg!(feature = "cuda") {
            Self::Cuda
        } else if cfg!(feature = "wgpu") {
            Self::Wgpu
        } else {
            Self::Cpu
        }
    }

    pub fn is_gpu(self) -> bool {
        matches!(self, Self::Cuda | Self::Wgpu)
    }

    fn resolve(self) -> Self {
        match self {
            Self::Cpu => Self::Flex,
            other => other,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Cpu => "cpu",
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Cuda => "cuda",
            Self::Wgpu => "wgpu",
        };
        f.write_str(s)
    }
}

/// A computation that can run on any autodiff backend.
pub trait BackendJob {
    type Output;
    fn run<B: AutodiffBackend<InnerBackend: LinalgBackend> + LinalgBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<Self::Output>;
}

pub fn run_on<J: BackendJob>(kind: BackendKind, job: J) -> Result<J::Output> {
    let kind = kind.resolve();
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Flex => job.run::<Autodiff<burn::backend::Flex>>(Default::default(), kind),
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => {
            job.run::<Autodiff<burn::backend::NdArray>>(Default::default(), kind)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => job
            .run::<Autodiff<burn::backend::Cuda>>(burn::backend::cuda::CudaDevice::default(), kind),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => job
            .run::<Autodiff<burn::backend::Wgpu>>(burn::backend::wgpu::WgpuDevice::default(), kind),
        other => bail!(
            "the {other} backend is not compiled into this binary: rebuild with \
             `cargo xtask --features {other} …`"
        ),
    }
}

/// How training batch norm runs (`CFX_BATCH_NORM`): a speed setting, the numbers are the same
/// up to float rounding (`cfx_flows::nn::mode::batch_norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchNormImpl {
    /// CubeCL kernels (`cfx_linalg::batch_norm`) on cuda and wgpu, [`Self::Fused`] elsewhere.
    #[default]
    Kernels,
    /// One autodiff op with the closed-form backward, written with tensor ops.
    Fused,
    /// Autodiff through the tensor ops of the definition.
    Ops,
}

impl BatchNormImpl {
    const ALL: [Self; 3] = [Self::Kernels, Self::Fused, Self::Ops];

    pub fn name(self) -> &'static str {
        match self {
            Self::Kernels => "kernels",
            Self::Fused => "fused",
            Self::Ops => "ops",
        }
    }

    /// What runs on `backend` under this setting (kernels exist only for the cube backends
    /// without `fusion`, whose tensors are not burn-cubecl's).
    pub fn on(self, backend: BackendKind) -> Self {
        let cube =
            matches!(backend, BackendKind::Cuda | BackendKind::Wgpu) && !cfg!(feature = "fusion");
        if self == Self::Kernels && !cube {
            Self::Fused
        } else {
            self
        }
    }
}

impl std::str::FromStr for BatchNormImpl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                format!("unknown batch-norm implementation {s:?}: expected kernels, fused or ops")
            })
    }
}

static BATCH_NORM: std::sync::OnceLock<BatchNormImpl> = std::sync::OnceLock::new();

/// The setting [`register_backend_ops`] registered (the default before it ran).
pub fn batch_norm_impl() -> BatchNormImpl {
    BATCH_NORM.get().copied().unwrap_or_default()
}

/// Registers the backend-specific ops of the backends compiled in (`cfx_flows::nn`'s registry):
/// `cfx_linalg::conv_gemm` as the `CFX_CONV=gemm` convolution of the GPU backends, and the
/// training batch norm `batch_norm` asks for on every backend.
///
/// The cube backends' kernels are not registered under `fusion`: there the backends are
/// `Fusion<CubeBackend>`, whose tensors are not burn-cubecl's, so `gemm` falls back to burn's
/// `conv2d` and batch norm to the fused tensor-op version.
pub fn register_backend_ops(batch_norm: BatchNormImpl) {
    let _ = BATCH_NORM.set(batch_norm);
    /// The plain backend (inference) and its autodiff wrapper (training).
    #[cfg(all(any(feature = "cuda", feature = "wgpu"), not(feature = "fusion")))]
    macro_rules! register_cube {
        ($b:ty) => {
            cfx_flows::nn::register_gemm_conv2d::<$b>(cfx_linalg::conv_gemm::conv2d_gemm);
            cfx_flows::nn::register_gemm_conv2d::<Autodiff<$b>>(
                cfx_linalg::conv_gemm::conv2d_gemm_autodiff,
            );
            match batch_norm {
                BatchNormImpl::Kernels => cfx_flows::nn::register_batch_norm::<Autodiff<$b>>(
                    cfx_linalg::batch_norm::batch_norm_train_cube,
                ),
                BatchNormImpl::Fused => cfx_flows::nn::register_fused_batch_norm::<$b>(
                    cfx_flows::nn::PerChannel::Broadcast,
                ),
                BatchNormImpl::Ops => {}
            }
        };
    }
    #[cfg(all(feature = "cuda", not(feature = "fusion")))]
    register_cube!(burn::backend::Cuda);
    #[cfg(all(feature = "wgpu", not(feature = "fusion")))]
    register_cube!(burn::backend::Wgpu);
    if batch_norm != BatchNormImpl::Ops {
        register_fused_batch_norms();
    }
}

/// The fused tensor-op batch norm for the backends without kernels.
fn register_fused_batch_norms() {
    #[allow(unused_imports)] // a build with only the cube backends registers none here
    use cfx_flows::nn::{PerChannel, register_fused_batch_norm};
    // flex walks a broadcast operand element by element (`cfx_flows::ops::per_channel`).
    #[cfg(feature = "flex")]
    register_fused_batch_norm::<burn::backend::Flex>(PerChannel::Materialise);
    #[cfg(feature = "ndarray")]
    register_fused_batch_norm::<burn::backend::NdArray>(PerChannel::Materialise);
    #[cfg(all(feature = "cuda", feature = "fusion"))]
    register_fused_batch_norm::<burn::backend::Cuda>(PerChannel::Broadcast);
    #[cfg(all(feature = "wgpu", feature = "fusion"))]
    register_fused_batch_norm::<burn::backend::Wgpu>(PerChannel::Broadcast);
}
