//! Will hold the counterfactual explainers (ECINN/ECINNh, diffeomorphic counterfactuals, C3LT, GB/GL) behind one Explainer trait.
//!
//! Nothing is implemented here yet: the crate exists so that the workspace has its final
//! layout (see DEVELOPERS.md). Its issue fills it.
