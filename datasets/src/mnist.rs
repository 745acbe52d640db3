//! MNIST, bundled in the binary, and any MNIST-format dataset from a folder.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};
use crate::idx::parse_idx;
use crate::image_set::ImageSet;

/// Which half of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// The file-name prefix the MNIST family uses for this split.
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// The four MNIST files, compiled into the binary so that the main job runs offline from any
/// working directory (the GPU machine gets only the binary and the checkout).
const BUNDLED: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../data/mnist/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../data/mnist/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../data/mnist/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../data/mnist/t10k-labels-idx1-ubyte.gz"),
    ),
];
const BUNDLED_SUMS: &str = include_str!("../data/mnist/SHA256SUMS");

pub fn digit_class_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

/// The bundled MNIST split, checked against `datasets/data/mnist/SHA256SUMS` on first use and
/// cached for the rest of the process.
pub fn mnist(split: Split) -> Result<ImageSet> {
    static CACHE: [OnceLock<std::result::Result<ImageSet, String>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    let slot = &CACHE[split as usize];
    slot.get_or_init(|| load_bundled(split).map_err(|e| e.to_string()))
        .clone()
        .map_err(DatasetError::Invalid)
}

fn bundled_file(name: &str) -> Result<&'static [u8]> {
    let bytes = BUNDLED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .expect("bundled file list is fixed");
    let path = PathBuf::from("datasets/data/mnist").join(name);
    let expected = BUNDLED_SUMS
        .lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(_, f)| f.trim().trim_start_matches('*') == name)
        .map(|(sum, _)| sum.to_ascii_lowercase())
        .ok_or_else(|| DatasetError::Invalid(format!("SHA256SUMS has no entry for {name}")))?;
    let found: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if found != expected {
        return Err(DatasetError::Checksum {
            path,
            expected,
            found,
        });
    }
    Ok(bytes)
}

fn load_bundled(split: Split) -> Result<ImageSet> {
    let images = format!("{}-images-idx3-ubyte.gz", split.prefix());
    let labels = format!("{}-labels-idx1-ubyte.gz", split.prefix());
    decode_pair(
        format!("mnist/{}", split.name()),
        (
            bundled_file(&images)?,
            &Path::new("datasets/data/mnist").join(images),
        ),
        (
            bundled_file(&labels)?,
            &Path::new("datasets/data/mnist").join(labels),
        ),
        digit_class_names(),
    )
}

/// Loads an MNIST-format split (`train-images-idx3-ubyte[.gz]` and friends) from `dir`.
pub fn mnist_format_from_dir(
    dir: &Path,
    split: Split,
    name: &str,
    class_names: Vec<String>,
) -> Result<ImageSet> {
    let find = |kind: &str| -> Result<PathBuf> {
        let base = format!("{}-{kind}-ubyte", split.prefix());
        [format!("{base}.gz"), base.clone()]
            .into_iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| DatasetError::Io {
                path: dir.join(format!("{base}[.gz]")),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            })
    };
    let images = find("images-idx3")?;
    let labels = find("labels-idx1")?;
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| DatasetError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    decode_pair(
        format!("{name}/{}", split.name()),
        (&read(&images)?, &images),
        (&read(&labels)?, &labels),
        class_names,
    )
}

fn decode_pair(
    name: String,
    (image_bytes, image_path): (&[u8], &Path),
    (label_bytes, label_path): (&[u8], &Path),
    class_names: Vec<String>,
) -> Result<ImageSet> {
    let images = parse_idx(image_bytes, image_path)?;
    let labels = parse_idx(label_bytes, label_path)?;
    if images.dims.len() != 3 {
        return Err(DatasetError::Idx {
            path: image_path.to_path_buf(),
            reason: format!(
                "expected rank 3 [N, H, W], found dimensions {:?}",
                images.dims
            ),
        });
    }
    if labels.dims.len() != 1 {
        return Err(DatasetError::Idx {
            path: label_path.to_path_buf(),
            reason: format!("expected rank 1 [N], found dimensions {:?}", labels.dims),
        });
    }
    if images.len() != labels.len() {
        return Err(DatasetError::CountMismatch {
            images: image_path.to_path_buf(),
            labels: label_path.to_path_buf(),
            n_images: images.len(),
            n_labels: labels.len(),
        });
    }
    let num_classes = class_names.len();
    if let Some((index, &label)) = labels
        .data
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= num_classes)
    {
        return Err(DatasetError::LabelOutOfRange {
            path: label_path.to_path_buf(),
            index,
            label,
            num_classes,
        });
    }
    let [h, w] = [images.dims[1], images.dims[2]];
    ImageSet::new(name, [1, h, w], images.data, labels.data, class_names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::encode_idx;

    #[test]
    fn bundled_mnist_has_the_standard_shape_and_balance() {
        let train = mnist(Split::Train).unwrap();
        let test = mnist(Split::Test).unwrap();
        assert_eq!((train.len(), test.len()), (60000, 10000));
        assert_eq!(train.image_shape(), [1, 28, 28]);
        // The first training digit of MNIST is a 5, the first test digit a 7.
        assert_eq!((train.label(0), test.label(0)), (5, 7));
        let mut counts = [0usize; 10];
        test.labels().iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(
            counts,
            [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
        );
    }

    fn write_split(dir: &Path, images: &[u8], labels: &[u8]) {
        std::fs::write(dir.join("train-images-idx3-ubyte"), images).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), labels).unwrap();
    }

    #[test]
    fn loads_a_folder_and_names_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let names = digit_class_names();
        write_split(
            dir.path(),
            &encode_idx(&[2, 2, 2], &[0; 8]),
            &encode_idx(&[2], &[3, 9]),
        );
        let set = mnist_format_from_dir(dir.path(), Split::Train, "toy", names.clone()).unwrap();
        assert_eq!((set.len(), set.label(1)), (2, 9));

        write_split(
            dir.path(),
            &encode_idx(&[2, 2, 2], &[0; 8]),
            &encode_idx(&[3], &[3, 9, 1]),
        );
        let e = mnist_format_from_dir(dir.path(), Split::Train, "toy", names.clone()).unwrap_err();
        assert!(e.to_string().contains("2 images but 3 labels"), "{e}");

        write_split(
            dir.path(),
            &encode_idx(&[2, 2, 2], &[0; 8]),
            &encode_idx(&[2], &[3, 10]),
        );
        let e = mnist_format_from_dir(dir.path(), Split::Train, "toy", names.clone()).unwrap_err();
        assert!(
            e.to_string()
                .contains("train-labels-idx1-ubyte: label 10 at index 1"),
            "{e}"
        );

        write_split(
            dir.path(),
            &encode_idx(&[8], &[0; 8]),
            &encode_idx(&[2], &[3, 1]),
        );
        let e = mnist_format_from_dir(dir.path(), Split::Train, "toy", names.clone()).unwrap_err();
        assert!(e.to_string().contains("expected rank 3"), "{e}");

        let e = mnist_format_from_dir(dir.path(), Split::Test, "toy", names).unwrap_err();
        assert!(e.to_string().contains("t10k-images-idx3-ubyte[.gz]"), "{e}");
    }
}
