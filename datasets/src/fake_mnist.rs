//! FakeMNIST: MNIST digits with random, exactly balanced labels written as one white pixel.
//!
//! Built exactly as ECINN's `dataset/fakemnist.py` does (spec §1.8): one numpy legacy RNG seeded
//! with 42 serves the training split first and then the test split; for each split, permute the
//! images, assign labels `0…0 1…1 … 9…9` (N/10 of each), set pixel (row = label, column 0) to
//! 255, and permute again. The seed texts speak of "the top-left 10×1 pixels"; figure captions
//! mention 10×2, which is only the magnified display crop, so column 0 it is.
//!
//! Unlike the reference loader we keep each image's original digit as the auxiliary label,
//! because the LVS metric needs an oracle on the digit as well as on the fake label.

use std::sync::OnceLock;

use crate::error::{DatasetError, Result};
use crate::image_set::ImageSet;
use crate::mnist::{Split, digit_class_names, mnist};
use crate::numpy_rng::NumpyLegacyRng;

/// The seed of the reference recipe.
pub const FAKE_MNIST_SEED: u32 = 42;

/// The bundled MNIST turned into FakeMNIST (built once per process, deterministic).
pub fn fake_mnist(split: Split) -> Result<ImageSet> {
    static CACHE: OnceLock<std::result::Result<[ImageSet; 2], String>> = OnceLock::new();
    let pair = CACHE
        .get_or_init(|| {
            let train = mnist(Split::Train).map_err(|e| e.to_string())?;
            let test = mnist(Split::Test).map_err(|e| e.to_string())?;
            let (a, b) =
                build_fake_mnist(&train, &test, FAKE_MNIST_SEED).map_err(|e| e.to_string())?;
            Ok([a, b])
        })
        .as_ref()
        .map_err(|e| DatasetError::Invalid(e.clone()))?;
    Ok(pair[split as usize].clone())
}

/// Applies the recipe to a train and a test split (in that order, sharing one RNG stream).
pub fn build_fake_mnist(
    train: &ImageSet,
    test: &ImageSet,
    seed: u32,
) -> Result<(ImageSet, ImageSet)> {
    let mut rng = NumpyLegacyRng::seed(seed);
    let train = fake_split(train, &mut rng, "fake-mnist/train")?;
    let test = fake_split(test, &mut rng, "fake-mnist/test")?;
    Ok((train, test))
}

fn fake_split(source: &ImageSet, rng: &mut NumpyLegacyRng, name: &str) -> Result<ImageSet> {
    let n = source.len();
    let k = 10;
    if !n.is_multiple_of(k) || source.height < k || source.channels != 1 {
        return Err(DatasetError::Invalid(format!(
            "{}: FakeMNIST needs a single-channel set whose size is a multiple of 10 and whose \
             images have at least 10 rows (got {n} images of {:?})",
            source.name,
            source.image_shape()
        )));
    }
    let perm = rng.permutation(n);
    let mut shuffled = source.subset(&perm, name);
    let digits: Vec<u8> = shuffled.labels.clone();
    let fake: Vec<u8> = (0..n).map(|i| (i / (n / k)) as u8).collect();
    let (w, per_image) = (shuffled.width, shuffled.pixels_per_image());
    for (i, &label) in fake.iter().enumerate() {
        shuffled.images[i * per_image + label as usize * w] = 255;
    }
    shuffled.labels = fake;
    let shuffled = shuffled.with_aux_labels(digits);
    let perm2 = rng.permutation(n);
    let mut out = shuffled.subset(&perm2, name);
    out.class_names = digit_class_names();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_balanced_and_written_as_one_pixel_in_column_zero() {
        let test = fake_mnist(Split::Test).unwrap();
        let train = fake_mnist(Split::Train).unwrap();
        assert_eq!((train.len(), test.len()), (60000, 10000));
        for set in [&train, &test] {
            let mut counts = [0usize; 10];
            set.labels().iter().for_each(|&l| counts[l as usize] += 1);
            assert!(counts.iter().all(|&c| c == set.len() / 10), "{counts:?}");
            for i in (0..set.len()).step_by(97) {
                assert_eq!(
                    set.image(i)[set.label(i) * 28],
                    255,
                    "label pixel of image {i}"
                );
            }
        }
    }

    #[test]
    fn keeps_the_original_digit_and_is_deterministic() {
        let mnist_train = mnist(Split::Train).unwrap();
        let mnist_test = mnist(Split::Test).unwrap();
        let (a, _) = build_fake_mnist(&mnist_train, &mnist_test, FAKE_MNIST_SEED).unwrap();
        let cached = fake_mnist(Split::Train).unwrap();
        assert_eq!(a.labels(), cached.labels());
        assert_eq!(a.image(123), cached.image(123));
        // Image i of the fake set is MNIST image p1[p2[i]]: its pixels outside column 0 and its
        // digit label must match that source image.
        let mut rng = NumpyLegacyRng::seed(FAKE_MNIST_SEED);
        let (p1, p2) = (rng.permutation(60000), rng.permutation(60000));
        for i in [0, 1, 59999] {
            let src = p1[p2[i]];
            assert_eq!(a.aux_label(i), Some(mnist_train.label(src)));
            let (x, y) = (a.image(i), mnist_train.image(src));
            let label_pixel = a.label(i) * 28;
            assert!(
                (0..784).filter(|&p| p != label_pixel).all(|p| x[p] == y[p]),
                "image {i}"
            );
        }
        // A different seed gives different labels.
        let (b, _) = build_fake_mnist(&mnist_train, &mnist_test, 7).unwrap();
        assert_ne!(a.labels()[..100], b.labels()[..100]);
    }

    #[test]
    fn fake_labels_are_independent_of_digits() {
        let test = fake_mnist(Split::Test).unwrap();
        let aux = test.aux_labels().unwrap();
        let same = test
            .labels()
            .iter()
            .zip(aux)
            .filter(|(a, b)| a == b)
            .count();
        // 10% agreement by chance; a broken recipe (e.g. labels = digits) would give 100%.
        assert!((800..1200).contains(&same), "{same}");
    }
}
