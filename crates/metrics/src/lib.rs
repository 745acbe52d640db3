//! Will hold the counterfactual metrics (TCV, EN, IM1, IM2, FID, Oracle, LVS, COUT, Prox, Val) behind one Metric trait.
//!
//! Nothing is implemented here yet: the crate exists so that the workspace has its final
//! layout (see DEVELOPERS.md). Its issue fills it.
