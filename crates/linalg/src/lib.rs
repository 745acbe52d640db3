//! Linear algebra for the toolkit: FastH (WY-grouped Householder products) and FastFID (the
//! trace of a matrix square root through a small m×m eigenproblem), both as custom burn backend
//! ops with hand-written backward passes, and the SVD-parameterised layers built on FastH.
//!
//! Seed 004 (thesis ch. 2 and Papers 1–2) and `shared/docs/spec-fasth-fastfid.md` are the
//! sources; where the code departs from them the doc comment says so.

pub mod affine;
pub mod atomic_file;
mod autodiff;
mod backend;
pub mod batch_norm;
pub mod channel_affine;
#[cfg(feature = "flex")]
pub mod conv_flex;
#[cfg(feature = "cubecl")]
pub mod conv_gemm;
pub mod convert;
#[cfg(feature = "cubecl")]
mod cube_util;
mod error;
pub mod fasth;
pub mod fid;
#[cfg(feature = "flex")]
mod flex_util;
pub mod layers;
pub mod pack;
pub mod subnet_input;
#[cfg(test)]
mod test_util;

pub use autodiff::finish_stateful;
pub use backend::LinalgBackend;
pub use error::LinalgError;
pub use fasth::householder_product;
pub use fid::{FeatureStats, FidReference, fid, trace_sqrt_product};
pub use layers::{
    InvConv1x1, InvConv1x1Config, Orthogonal, OrthogonalConfig, SvdLinear, SvdLinearConfig,
};
