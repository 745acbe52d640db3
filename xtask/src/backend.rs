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

/// Registers the backend-specific ops of the backends compiled in (`cfx_flows::nn`'s registry):
/// `cfx_linalg::conv_gemm` as the `CFX_CONV=gemm` convolution of the GPU backends, and the fused
/// training batch norm of every backend unless `fused_batch_norm` is false (`CFX_BATCH_NORM=ops`,
/// for comparisons).
///
/// The convolution is not registered under `fusion`: there the backends are
/// `Fusion<CubeBackend>`, whose tensors are not burn-cubecl's, so `gemm` falls back to burn's
/// `conv2d`.
pub fn register_backend_ops(fused_batch_norm: bool) {
    use cfx_flows::nn::{PerChannel, register_fused_batch_norm};
    /// The plain backend (inference) and its autodiff wrapper (training).
    #[cfg(all(any(feature = "cuda", feature = "wgpu"), not(feature = "fusion")))]
    macro_rules! register_conv {
        ($b:ty) => {
            cfx_flows::nn::register_gemm_conv2d::<$b>(cfx_linalg::conv_gemm::conv2d_gemm);
            cfx_flows::nn::register_gemm_conv2d::<Autodiff<$b>>(
                cfx_linalg::conv_gemm::conv2d_gemm_autodiff,
            );
        };
    }
    #[cfg(all(feature = "cuda", not(feature = "fusion")))]
    register_conv!(burn::backend::Cuda);
    #[cfg(all(feature = "wgpu", not(feature = "fusion")))]
    register_conv!(burn::backend::Wgpu);
    if !fused_batch_norm {
        return;
    }
    // flex walks a broadcast operand element by element (`cfx_flows::ops::per_channel`).
    #[cfg(feature = "flex")]
    register_fused_batch_norm::<burn::backend::Flex>(PerChannel::Materialise);
    #[cfg(feature = "ndarray")]
    register_fused_batch_norm::<burn::backend::NdArray>(PerChannel::Materialise);
    #[cfg(feature = "cuda")]
    register_fused_batch_norm::<burn::backend::Cuda>(PerChannel::Broadcast);
    #[cfg(feature = "wgpu")]
    register_fused_batch_norm::<burn::backend::Wgpu>(PerChannel::Broadcast);
}
