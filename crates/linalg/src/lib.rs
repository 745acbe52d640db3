//! Will hold FastH (WY-grouped Householder products) and FastFID as custom burn backend ops, and the SVD-parameterised layers built on them.
//!
//! Nothing is implemented here yet: the crate exists so that the workspace has its final
//! layout (see DEVELOPERS.md). Its issue fills it.
