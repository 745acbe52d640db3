//! The command-line tool of the workspace, as a library so that its pieces are testable.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod evaluate;
pub mod explain;
pub mod fsutil;
pub mod heatmaps;
pub mod helix;
pub mod import;
pub mod interrupt;
pub mod inverse_trace;
pub mod invert;
pub mod logdet;
pub mod op_settings;
pub mod progress;
pub mod tangent;
pub mod train;
