//! Normalizing flows on burn: invertible blocks behind one [`Flow`] trait, composed into
//! models: IB-INN, RealNVP (and the helix toy flow) and Glow.

pub mod blocks;
mod flow;
pub mod glow;
pub mod ibinn;
mod multiscale;
pub mod nn;
pub mod ops;
pub mod realnvp;
pub mod tangent;
pub mod testing;

#[cfg(test)]
mod test_util;

pub use flow::Flow;
pub use multiscale::{sample_prior, standard_normal_bpd};
