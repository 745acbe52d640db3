use thiserror::Error;

/// Why a linear-algebra op refused its input. Every message names the argument and its shape.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum LinalgError {
    #[error("{op}: {what}")]
    Shape { op: &'static str, what: String },
    #[error("{op}: {what} contains NaN or infinite values")]
    NonFinite {
        op: &'static str,
        what: &'static str,
    },
    #[error("{op}: {what}")]
    Invalid { op: &'static str, what: String },
    #[error("FID statistics file {path}: {what}")]
    Stats { path: String, what: String },
}
