//! Layers parameterised by Householder products (seed 004 L233-359, L2704-2773): orthogonal
//! matrices that stay orthogonal under any gradient step, and the SVD `W = UΣVᵀ` whose
//! determinant, inverse and spectral norm cost O(d).

mod conv1x1;
mod orthogonal;
mod svd_linear;

pub use conv1x1::{InvConv1x1, InvConv1x1Config};
pub use orthogonal::{Orthogonal, OrthogonalConfig};
pub use svd_linear::{SvdLinear, SvdLinearConfig};

#[cfg(test)]
mod tests;
