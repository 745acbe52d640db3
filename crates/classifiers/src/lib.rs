//! Will hold the CNN classifiers, oracles and autoencoders that the explainers and metrics need.
//!
//! Nothing is implemented here yet: the crate exists so that the workspace has its final
//! layout (see DEVELOPERS.md). Its issue fills it.
