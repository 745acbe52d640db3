//! Will hold DCGAN and the convolutional VAE for 28×28 images.
//!
//! Nothing is implemented here yet: the crate exists so that the workspace has its final
//! layout (see DEVELOPERS.md). Its issue fills it.
