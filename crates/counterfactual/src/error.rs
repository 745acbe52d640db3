/// Why a request could not be explained; every variant names the offending value.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("target class {target} does not exist: the model has classes 0..{n_classes}")]
    UnknownClass { target: usize, n_classes: usize },
    #[error("query {query} refers to input {input}, but the batch has {n_inputs} inputs")]
    NoSuchInput {
        query: usize,
        input: usize,
        n_inputs: usize,
    },
    #[error(
        "target class {target} of query {query} is the class the model already predicts for input {input}"
    )]
    TargetIsPrediction {
        query: usize,
        input: usize,
        target: usize,
    },
    #[error("images are {got:?} (C, H, W), but the model takes {expected:?}")]
    ImageShape {
        expected: [usize; 3],
        got: [usize; 3],
    },
    #[error("ECINN class means: {0}")]
    Means(String),
    #[error("GL class prototypes: {0}")]
    Prototypes(String),
    #[error("{method}: {what}")]
    /// A method's settings or inputs that do not fit (baselines, thresholds).
    Method { method: String, what: String },
    #[error("{path}: {what}")]
    File { path: String, what: String },
}
