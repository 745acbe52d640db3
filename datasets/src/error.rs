use std::path::PathBuf;

/// Everything that can go wrong while reading or building a dataset.
///
/// Every variant names the file (or the logical source, for bundled data) so that a user who
/// points the tool at a broken download sees *which* file is broken and *how*.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid IDX file: {reason}")]
    Idx { path: PathBuf, reason: String },
    #[error(
        "{path}: SHA-256 mismatch (expected {expected}, found {found}); the bundled copy is \
         corrupt or was replaced, restore it from git"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{images} and {labels} disagree: {n_images} images but {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        n_images: usize,
        n_labels: usize,
    },
    #[error("{path}: label {label} at index {index} is outside 0..{num_classes}")]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
        num_classes: usize,
    },
    #[error("{set} has images of shape {got:?}, but the model takes {want:?}")]
    ShapeMismatch {
        set: String,
        got: [usize; 3],
        want: [usize; 3],
    },
    #[error("{path}: cannot decode the image: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, DatasetError>;
