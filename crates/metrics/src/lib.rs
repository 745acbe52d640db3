//! Counterfactual quality metrics behind one [`Metric`] trait.
//!
//! Paper 4 (seed 004 ch. 4): TCV, EN, IM1, IM2, FID256, Oracle, LVS; C3LT (seed 003 §4.3):
//! COUT, Prox, Val; diffeomorphic counterfactuals (seed 002): the nearest-neighbour target
//! rate; deletion and insertion scores of heatmaps ([`HeatmapMetric`]). Every metric reads a [`CounterfactualSet`] (inputs, counterfactuals and the explained
//! model's classes, in unit space) and is aggregated by [`evaluate_all`] as Paper 4 does: mean
//! with a 95 % interval, every metric but TCV and Val on valid counterfactuals only.
//!
//! The evaluation models (oracles, autoencoders) are trained in one [`DataRange`]; metrics that
//! depend on the range check that their models match it.

mod autoencoder;
mod cout;
mod distance;
mod error;
mod fid;
mod heatmap;
mod knn;
mod metric;
mod oracle;
mod path;
mod set;
mod validity;

#[cfg(test)]
mod tests;

pub use autoencoder::{ClassAutoencoders, IM_EPSILON, Im1, Im2};
pub use cfx_classifiers::DataRange;
pub use cout::{Cout, aupc};
pub use distance::{ElasticNet, Proximity};
pub use error::{MetricError, Result};
pub use fid::Fid256;
pub use heatmap::{
    ColumnMass, Deletion, HeatmapMetric, HeatmapSet, Insertion, column_mass, evaluate_heatmaps,
};
pub use knn::NearestNeighbours;
pub use metric::{
    Curve, Direction, EvalContext, Metric, MetricValue, Scope, Summary, evaluate_all, mean_ci,
    summarise,
};
pub use oracle::{Lvs, Oracle, jensen_shannon};
pub use set::{CounterfactualSet, image_rows};
pub use validity::{Tcv, Val};
