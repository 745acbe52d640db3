use crate::error::{DatasetError, Result};
use crate::image_set::ImageSet;
use crate::numpy_rng::NumpyLegacyRng;

/// Holds out `n_val` randomly chosen images (seeded, platform-independent) as a validation set.
/// Returns `(train, val)`; the training part keeps its original order.
pub fn train_val_split(set: &ImageSet, n_val: usize, seed: u32) -> Result<(ImageSet, ImageSet)> {
    if n_val >= set.len() {
        return Err(DatasetError::Invalid(format!(
            "{}: cannot hold out {n_val} validation images from a set of {}",
            set.name,
            set.len()
        )));
    }
    let perm = NumpyLegacyRng::seed(seed).permutation(set.len());
    let mut val_idx = perm[..n_val].to_vec();
    let mut train_idx = perm[n_val..].to_vec();
    val_idx.sort_unstable();
    train_idx.sort_unstable();
    Ok((
        set.subset(&train_idx, format!("{}-fit", set.name)),
        set.subset(&val_idx, format!("{}-val", set.name)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_disjoint_complete_and_deterministic() {
        let names = (0..2).map(|c| c.to_string()).collect();
        let images: Vec<u8> = (0..50).collect();
        let labels = (0..50).map(|i| (i % 2) as u8).collect();
        let set = ImageSet::new("s", [1, 1, 1], images, labels, names).unwrap();
        let (train, val) = train_val_split(&set, 10, 3).unwrap();
        assert_eq!((train.len(), val.len()), (40, 10));
        let mut all: Vec<u8> = (0..40).map(|i| train.image(i)[0]).collect();
        all.extend((0..10).map(|i| val.image(i)[0]));
        all.sort_unstable();
        assert_eq!(all, (0..50).collect::<Vec<u8>>());
        let (_, val2) = train_val_split(&set, 10, 3).unwrap();
        assert_eq!(val.image(0), val2.image(0));
        assert!(train_val_split(&set, 50, 3).is_err());
    }
}
