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
