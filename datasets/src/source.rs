//! Named datasets as the command line knows them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{DatasetError, Result};
use crate::fake_mnist::fake_mnist;
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
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 3] = [Self::Mnist, Self::FakeMnist, Self::FashionMnist];

    pub fn name(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FakeMnist => "fake-mnist",
            Self::FashionMnist => "fashion-mnist",
        }
    }

    pub fn class_names(self) -> Vec<String> {
        match self {
            Self::FashionMnist => FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            _ => digit_class_names(),
        }
    }

    /// Loads a split. `data_dir` overrides the bundled MNIST and the system Fashion-MNIST; for
    /// FakeMNIST it names an MNIST folder to build from.
    pub fn load(self, split: Split, data_dir: Option<&Path>) -> Result<ImageSet> {
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
