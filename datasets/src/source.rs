//! Named datasets as the command line knows them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{DatasetError, Result};
use crate::fake_mnist::fake_mnist;
use crate::image_folder::{FolderShape, image_folder};
use crate::image_set::ImageSet;
use crate::mnist::{Split, digit_class_names, mnist, mnist_format_from_dir};

/// Where `apt-get install dataset-fashion-mnist` puts the files.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    Mnist,
    FakeMnist,
    FashionMnist,
    /// A folder of PNG/JPEG images given by `--data-dir` (CelebA, an `ImageFolder` tree, or
    /// flat): [`crate::image_folder`].
    ImageFolder,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 4] = [
        Self::Mnist,
        Self::FakeMnist,
        Self::FashionMnist,
        Self::ImageFolder,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FakeMnist => "fake-mnist",
            Self::FashionMnist => "fashion-mnist",
            Self::ImageFolder => "image-folder",
        }
    }

    /// The classes of the MNIST family; an image folder's come with its loaded set (here:
    /// none).
    pub fn class_names(self) -> Vec<String> {
        match self {
            Self::ImageFolder => vec![],
            Self::FashionMnist => FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            _ => digit_class_names(),
        }
    }

    /// The images' `[C, H, W]` when the dataset fixes it (the MNIST family); image folders are
    /// scaled to whatever the model takes.
    pub fn native_shape(self) -> Option<[usize; 3]> {
        match self {
            Self::ImageFolder => None,
            _ => Some([1, 28, 28]),
        }
    }

    /// Loads a split. `data_dir` overrides the bundled MNIST and the system Fashion-MNIST; for
    /// FakeMNIST it names an MNIST folder to build from. Image folders load as CelebA 64×64 RGB;
    /// [`DatasetKind::load_shaped`] chooses another size.
    pub fn load(self, split: Split, data_dir: Option<&Path>) -> Result<ImageSet> {
        self.load_shaped(split, data_dir, None, None)
    }

    /// [`DatasetKind::load`] for a model that takes `shape`: image folders are scaled and
    /// cropped to it, the MNIST family must already have it (else an error naming both shapes).
    /// At most the first `limit` images (an image folder then decodes only those).
    pub fn load_shaped(
        self,
        split: Split,
        data_dir: Option<&Path>,
        shape: Option<[usize; 3]>,
        limit: Option<usize>,
    ) -> Result<ImageSet> {
        let set = match (self, data_dir) {
            (Self::ImageFolder, None) => {
                return Err(DatasetError::Invalid(
                    "image-folder needs --data-dir DIR: a folder of PNG/JPEG images, one \
                     sub-folder per class, or CelebA's folder (img_align_celeba/ beside \
                     list_eval_partition.txt)"
                        .into(),
                ));
            }
            (Self::ImageFolder, Some(dir)) => {
                let shape = match shape {
                    Some(s) => FolderShape::from_image_shape(s)?,
                    None => FolderShape::CELEBA,
                };
                return image_folder(dir, split, shape, limit);
            }
            (kind, dir) => kind.load_mnist_family(split, dir)?,
        };
        if let Some(want) = shape
            && set.image_shape() != want
        {
            return Err(DatasetError::ShapeMismatch {
                got: set.image_shape(),
                set: set.name,
                want,
            });
        }
        Ok(match limit {
            Some(n) if n < set.len() => set.take(n),
            _ => set,
        })
    }

    fn load_mnist_family(self, split: Split, data_dir: Option<&Path>) -> Result<ImageSet> {
        match (self, data_dir) {
            (Self::Mnist, None) => mnist(split),
            (Self::FakeMnist, None) => fake_mnist(split),
            (Self::Mnist, Some(dir)) => {
                mnist_format_from_dir(dir, split, "mnist", digit_class_names())
            }
            (Self::FakeMnist, Some(dir)) => {
                let train = mnist_format_from_dir(dir, Split::Train, "mnist", digit_class_names())?;
                let test = mnist_format_from_dir(dir, Split::Test, "mnist", digit_class_names())?;
                let (train, test) =
                    crate::fake_mnist::build_fake_mnist(&train, &test, crate::FAKE_MNIST_SEED)?;
                Ok(if split == Split::Train { train } else { test })
            }
            (Self::FashionMnist, dir) => {
                let dir = dir
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_SYSTEM_DIR));
                if !dir.is_dir() {
                    return Err(DatasetError::Invalid(format!(
                        "Fashion-MNIST not found at {}: pass --data-dir DIR (a folder with \
                         train-images-idx3-ubyte.gz and friends) or run \
                         `apt-get install dataset-fashion-mnist`",
                        dir.display()
                    )));
                }
                mnist_format_from_dir(&dir, split, "fashion-mnist", self.class_names())
            }
            (Self::ImageFolder, _) => unreachable!("image folders are loaded by load_shaped"),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let norm = s.to_ascii_lowercase().replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|k| k.name() == norm || k.name().replace('-', "") == norm)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("unknown dataset '{s}' (known: {})", known.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_leniently_and_rejects_unknown_ones() {
        assert_eq!("fake-mnist".parse(), Ok(DatasetKind::FakeMnist));
        assert_eq!("FakeMNIST".parse(), Ok(DatasetKind::FakeMnist));
        assert_eq!("fashion_mnist".parse(), Ok(DatasetKind::FashionMnist));
        let e = "cifar".parse::<DatasetKind>().unwrap_err();
        assert!(
            e.contains("unknown dataset 'cifar'") && e.contains("fake-mnist"),
            "{e}"
        );
    }

    #[test]
    fn missing_fashion_folder_says_how_to_get_it() {
        let e = DatasetKind::FashionMnist
            .load(Split::Test, Some(Path::new("/nonexistent/fmnist")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/fmnist") && e.contains("dataset-fashion-mnist"),
            "{e}"
        );
    }

    #[test]
    fn image_folders_need_a_folder_and_a_square_grey_or_rgb_shape() {
        let e = DatasetKind::ImageFolder
            .load(Split::Train, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image-folder needs --data-dir"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = DatasetKind::ImageFolder
            .load_shaped(Split::Train, Some(dir.path()), Some([3, 8, 16]), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3×8×16"), "{e}");
        assert_eq!("image_folder".parse(), Ok(DatasetKind::ImageFolder));
        assert_eq!(DatasetKind::Mnist.native_shape(), Some([1, 28, 28]));
        let limited = DatasetKind::Mnist
            .load_shaped(Split::Test, None, None, Some(7))
            .unwrap();
        assert_eq!(limited.len(), 7);
        let e = DatasetKind::Mnist
            .load_shaped(Split::Test, None, Some([3, 28, 28]), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[1, 28, 28]") && e.contains("the model takes [3, 28, 28]"),
            "{e}"
        );
    }

    #[test]
    fn fashion_mnist_from_the_system_package_when_installed() {
        if !Path::new(FASHION_MNIST_SYSTEM_DIR).is_dir() {
            eprintln!("skipped: {FASHION_MNIST_SYSTEM_DIR} not installed");
            return;
        }
        let test = DatasetKind::FashionMnist.load(Split::Test, None).unwrap();
        assert_eq!(test.len(), 10000);
        assert_eq!(test.class_names[9], "boot");
    }
}
