use thiserror::Error;

#[derive(Debug, Error)]
pub enum MetricError {
    /// Inconsistent data handed to a metric: the message names the field and the sizes.
    #[error("{metric}: {what}")]
    Input { metric: String, what: String },
    /// An evaluation model that does not fit the evaluation (range, classes, image shape).
    #[error("{metric}: {what}")]
    Model { metric: String, what: String },
    #[error("{metric}: {source}")]
    Linalg {
        metric: String,
        #[source]
        source: cfx_linalg::LinalgError,
    },
}

impl MetricError {
    pub fn input(metric: &str, what: impl Into<String>) -> Self {
        Self::Input {
            metric: metric.into(),
            what: what.into(),
        }
    }

    pub fn model(metric: &str, what: impl Into<String>) -> Self {
        Self::Model {
            metric: metric.into(),
            what: what.into(),
        }
    }
}

pub type Result<T, E = MetricError> = std::result::Result<T, E>;
