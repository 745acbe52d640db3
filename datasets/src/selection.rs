//! Which images of a set a command trains or evaluates on: some classes, then the first `limit`.

use crate::{ImageSet, Result};

/// The classes a command keeps (all of them when empty) and how many images it takes of what is
/// left, in the set's order.
///
/// The class filter comes first so that `--limit 100 --classes 4,9` means a hundred fours and
/// nines, not the fours and nines among the first hundred images.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    pub classes: &'a [usize],
    pub limit: Option<usize>,
}

impl<'a> Selection<'a> {
    pub fn new(classes: &'a [usize], limit: Option<usize>) -> Self {
        Self { classes, limit }
    }

    /// How many images a loader may stop after (an image folder decodes only those): the limit,
    /// unless a class filter has to see every image first.
    pub fn decode_limit(&self) -> Option<usize> {
        if self.classes.is_empty() {
            self.limit
        } else {
            None
        }
    }

    /// `set` cut down to the selection. Fails, naming the set, on a class it does not have or
    /// has no images of.
    pub fn apply(&self, set: ImageSet) -> Result<ImageSet> {
        let set = if self.classes.is_empty() {
            set
        } else {
            set.of_classes(self.classes)?
        };
        Ok(match self.limit {
            Some(n) => set.take(n),
            None => set,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ImageSet {
        // Labels 0,1,2,0,1,2,… over twelve one-pixel images whose pixel is their index.
        let pixels: Vec<u8> = (0..12).collect();
        let labels: Vec<u8> = (0..12).map(|i| i % 3).collect();
        let names = ["a", "b", "c"].map(String::from).to_vec();
        ImageSet::new("toy", [1, 1, 1], pixels, labels, names).unwrap()
    }

    #[test]
    fn the_class_filter_comes_before_the_limit() {
        let sel = Selection::new(&[2], Some(3));
        assert_eq!(sel.decode_limit(), None);
        let out = sel.apply(set()).unwrap();
        let firsts: Vec<u8> = (0..out.len()).map(|i| out.image(i)[0]).collect();
        assert_eq!(firsts, vec![2, 5, 8]);
    }

    #[test]
    fn without_classes_the_loader_may_stop_early() {
        let sel = Selection::new(&[], Some(4));
        assert_eq!(sel.decode_limit(), Some(4));
        assert_eq!(sel.apply(set()).unwrap().len(), 4);
        assert_eq!(Selection::default().apply(set()).unwrap().len(), 12);
    }

    #[test]
    fn a_missing_class_is_named() {
        let err = Selection::new(&[7], None).apply(set()).unwrap_err();
        assert!(err.to_string().contains("class 7"), "{err}");
    }
}
