//! Normalizing flows on burn: invertible blocks behind one [`Flow`] trait, composed into
//! models (IB-INN today; RealNVP and Glow reuse the same blocks).

pub mod blocks;
mod flow;
pub mod ibinn;
pub mod nn;
pub mod ops;
pub mod tangent;
pub mod testing;

#[cfg(test)]
mod test_util;

pub use flow::Flow;
