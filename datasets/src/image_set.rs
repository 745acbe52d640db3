use burn::data::dataset::Dataset;

use crate::error::{DatasetError, Result};

/// One labelled image as served by the burn [`Dataset`] impl of [`ImageSet`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageItem {
    /// Position in the set it came from (kept so results can be traced back to test indices).
    pub index: usize,
    /// Pixels in `[C, H, W]` order, 0..=255.
    pub pixels: Vec<u8>,
    pub label: usize,
    /// A second label where the set has one: FakeMNIST keeps the original digit here.
    pub aux_label: Option<usize>,
}

/// A split of an image-classification dataset held in memory as bytes.
///
/// Pixels are stored `[N, C, H, W]` row-major, exactly as the IDX files hold them, so a set of
/// 60 000 MNIST images costs 47 MB. Conversion to floats happens per batch.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Human-readable origin such as `mnist/train`, used in messages and run metadata.
    pub name: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub class_names: Vec<String>,
    pub(crate) images: Vec<u8>,
    pub(crate) labels: Vec<u8>,
    pub(crate) aux_labels: Option<Vec<u8>>,
}

impl ImageSet {
    /// Builds a set, checking that sizes agree and labels are in range.
    pub fn new(
        name: impl Into<String>,
        [channels, height, width]: [usize; 3],
        images: Vec<u8>,
        labels: Vec<u8>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let name = name.into();
        let per_image = channels * height * width;
        if per_image == 0 || !images.len().is_multiple_of(per_image) {
            return Err(DatasetError::Invalid(format!(
                "{name}: {} pixel bytes is not a whole number of {channels}x{height}x{width} images",
                images.len()
            )));
        }
        if images.len() / per_image != labels.len() {
            return Err(DatasetError::Invalid(format!(
                "{name}: {} images but {} labels",
                images.len() / per_image,
                labels.len()
            )));
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= class_names.len())
        {
            return Err(DatasetError::LabelOutOfRange {
                path: name.into(),
                index,
                label,
                num_classes: class_names.len(),
            });
        }
        Ok(Self {
            name,
            channels,
            height,
            width,
            class_names,
            images,
            labels,
            aux_labels: None,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn pixels_per_image(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// `[C, H, W]`
    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.pixels_per_image();
        &self.images[index * n..(index + 1) * n]
    }

    /// Image `index` in unit space, `p / 255`: the space every explainer and metric takes.
    pub fn unit_image(&self, index: usize) -> Vec<f32> {
        self.image(index)
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect()
    }

    pub fn label(&self, index: usize) -> usize {
        self.labels[index] as usize
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    pub fn aux_label(&self, index: usize) -> Option<usize> {
        self.aux_labels.as_ref().map(|a| a[index] as usize)
    }

    pub fn aux_labels(&self) -> Option<&[u8]> {
        self.aux_labels.as_deref()
    }

    /// The images at `indices`, in that order, as a new set named `name`.
    pub fn subset(&self, indices: &[usize], name: impl Into<String>) -> Self {
        let n = self.pixels_per_image();
        let mut images = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Self {
            name: name.into(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            class_names: self.class_names.clone(),
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            aux_labels: self
                .aux_labels
                .as_ref()
                .map(|a| indices.iter().map(|&i| a[i]).collect()),
        }
    }

    /// The first `n` images (or all, if there are fewer); for quick runs and tests.
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len());
        let indices: Vec<usize> = (0..n).collect();
        self.subset(&indices, format!("{}[..{n}]", self.name))
    }

    /// Indices of the images whose label is `class`.
    pub fn indices_of_class(&self, class: usize) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.label(i) == class)
            .collect()
    }

    /// The images of the given classes, in their original order. Fails, naming the set, on a
    /// class the set does not have or one without images.
    pub fn of_classes(&self, classes: &[usize]) -> Result<Self> {
        let k = self.num_classes();
        let mut indices = vec![];
        for &c in classes {
            if c >= k {
                return Err(DatasetError::Invalid(format!(
                    "class {c}: {} has classes 0..{k}",
                    self.name
                )));
            }
            let of_c = self.indices_of_class(c);
            if of_c.is_empty() {
                return Err(DatasetError::Invalid(format!(
                    "{} has no images of class {c}",
                    self.name
                )));
            }
            indices.extend(of_c);
        }
        indices.sort_unstable();
        let name = match classes {
            [c] => format!("{} class {c}", self.name),
            _ => format!("{} classes {classes:?}", self.name),
        };
        Ok(self.subset(&indices, name))
    }

    /// The same images labelled by their auxiliary label (FakeMNIST's original digit), the
    /// primary label kept as the auxiliary one: what an oracle on the second label trains on.
    pub fn swap_labels(mut self) -> Result<Self> {
        let Some(aux) = self.aux_labels.take() else {
            return Err(DatasetError::Invalid(format!(
                "{} has no second label to train on (only FakeMNIST keeps the original digit)",
                self.name
            )));
        };
        self.aux_labels = Some(std::mem::replace(&mut self.labels, aux));
        self.name = format!("{} (second label)", self.name);
        Ok(self)
    }

    pub(crate) fn with_aux_labels(mut self, aux: Vec<u8>) -> Self {
        assert_eq!(aux.len(), self.labels.len());
        self.aux_labels = Some(aux);
        self
    }
}

impl Dataset<ImageItem> for ImageSet {
    fn get(&self, index: usize) -> Option<ImageItem> {
        (index < self.len()).then(|| ImageItem {
            index,
            pixels: self.image(index).to_vec(),
            label: self.label(index),
            aux_label: self.aux_label(index),
        })
    }

    fn len(&self) -> usize {
        ImageSet::len(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ImageSet {
        let names = (0..3).map(|c| c.to_string()).collect();
        ImageSet::new("tiny", [1, 2, 2], (0..12).collect(), vec![2, 0, 1], names).unwrap()
    }

    #[test]
    fn swapping_labels_needs_a_second_label() {
        assert!(
            tiny()
                .swap_labels()
                .unwrap_err()
                .to_string()
                .contains("second label")
        );
        let s = tiny().with_aux_labels(vec![1, 1, 0]).swap_labels().unwrap();
        assert_eq!(s.labels(), &[1, 1, 0]);
        assert_eq!(s.aux_labels(), Some(&[2u8, 0, 1][..]));
    }

    #[test]
    fn serves_items_in_chw_order() {
        let s = tiny();
        assert_eq!(s.len(), 3);
        let item = s.get(1).unwrap();
        assert_eq!(item.pixels, vec![4, 5, 6, 7]);
        assert_eq!(item.label, 0);
        assert!(s.get(3).is_none());
        let sub = s.subset(&[2, 0], "sub");
        assert_eq!(sub.image(0), &[8, 9, 10, 11]);
        assert_eq!(sub.labels(), &[1, 2]);
        assert_eq!(s.indices_of_class(1), vec![2]);
        let two = s.of_classes(&[2, 0]).unwrap();
        assert_eq!(two.labels(), &[2, 0], "original order kept");
        assert_eq!(two.name, "tiny classes [2, 0]");
        assert!(
            s.of_classes(&[3])
                .unwrap_err()
                .to_string()
                .contains("class 3")
        );
        let no_ones = s.subset(&[0, 1], "no ones");
        let err = no_ones.of_classes(&[1]).unwrap_err().to_string();
        assert!(err.contains("no images of class 1"), "{err}");
    }

    #[test]
    fn rejects_inconsistent_sizes_and_labels() {
        let names: Vec<String> = (0..3).map(|c| c.to_string()).collect();
        let e = ImageSet::new("a", [1, 2, 2], vec![0; 10], vec![0, 0], names.clone());
        assert!(e.unwrap_err().to_string().contains("not a whole number"));
        let e = ImageSet::new("b", [1, 2, 2], vec![0; 8], vec![0], names.clone());
        assert!(e.unwrap_err().to_string().contains("2 images but 1 labels"));
        let e = ImageSet::new("c", [1, 2, 2], vec![0; 8], vec![0, 7], names);
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("label 7 at index 1 is outside 0..3")
        );
    }
}
