use burn::prelude::*;

use crate::error::{MetricError, Result};

/// Inputs, their counterfactuals and the explained model's verdicts, on the host.
///
/// Images are in unit space (`[0, 1]`, `[N, C, H, W]` row-major), like every model of the
/// workspace takes them; metrics that measure in the evaluation range (EN, IM2, Prox) convert.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterfactualSet {
    pub shape: [usize; 3],
    pub inputs: Vec<f32>,
    pub counterfactuals: Vec<f32>,
    /// The explained model's class for each input, f(x).
    pub predicted: Vec<usize>,
    /// f(x′); `None` where the method returned no counterfactual.
    pub cf_predicted: Vec<Option<usize>>,
    /// The class each counterfactual was asked for, q.
    pub targets: Vec<usize>,
    /// Where each input came from (its test-set index): the nearest-neighbour metric excludes it.
    pub ids: Vec<usize>,
}

impl CounterfactualSet {
    /// Checks that every field describes the same number of samples.
    pub fn validate(&self) -> Result<()> {
        let n = self.predicted.len();
        let chw: usize = self.shape.iter().product();
        let bad = |what: String| Err(MetricError::input("counterfactual set", what));
        if chw == 0 {
            return bad(format!("image shape {:?} is empty", self.shape));
        }
        for (name, len) in [
            ("inputs", self.inputs.len() / chw),
            ("counterfactuals", self.counterfactuals.len() / chw),
            ("cf_predicted", self.cf_predicted.len()),
            ("targets", self.targets.len()),
            ("ids", self.ids.len()),
        ] {
            if len != n {
                return bad(format!("{n} predictions but {len} {name}"));
            }
        }
        if self.inputs.len() != n * chw || self.counterfactuals.len() != n * chw {
            return bad(format!(
                "pixel buffers are not {n} images of {:?}",
                self.shape
            ));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.predicted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.predicted.is_empty()
    }

    pub fn pixels_per_image(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn input(&self, i: usize) -> &[f32] {
        let n = self.pixels_per_image();
        &self.inputs[i * n..(i + 1) * n]
    }

    pub fn counterfactual(&self, i: usize) -> &[f32] {
        let n = self.pixels_per_image();
        &self.counterfactuals[i * n..(i + 1) * n]
    }

    /// Valid means the explained model's class changed (TCV's indicator, seed 004 Eq. 4.1).
    /// Paper 4 scores every metric but TCV on valid counterfactuals only (L5437-5439).
    pub fn is_valid(&self, i: usize) -> bool {
        self.cf_predicted[i].is_some_and(|c| c != self.predicted[i])
    }

    pub fn valid_indices(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.is_valid(i)).collect()
    }

    /// The samples at `rows`, in that order.
    pub fn subset(&self, rows: &[usize]) -> Self {
        let pick = |v: &[f32]| -> Vec<f32> {
            rows.iter()
                .flat_map(|&i| {
                    let n = self.pixels_per_image();
                    v[i * n..(i + 1) * n].iter().copied()
                })
                .collect()
        };
        Self {
            shape: self.shape,
            inputs: pick(&self.inputs),
            counterfactuals: pick(&self.counterfactuals),
            predicted: rows.iter().map(|&i| self.predicted[i]).collect(),
            cf_predicted: rows.iter().map(|&i| self.cf_predicted[i]).collect(),
            targets: rows.iter().map(|&i| self.targets[i]).collect(),
            ids: rows.iter().map(|&i| self.ids[i]).collect(),
        }
    }

    /// Row ranges of at most `batch` samples.
    pub fn chunks(&self, batch: usize) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        let (n, b) = (self.len(), batch.max(1));
        (0..n.div_ceil(b)).map(move |k| k * b..((k + 1) * b).min(n))
    }

    /// Rows `rows` of the inputs as a `[n, C, H, W]` tensor.
    pub fn input_tensor<B: Backend>(
        &self,
        rows: std::ops::Range<usize>,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        self.tensor(&self.inputs, rows, device)
    }

    pub fn counterfactual_tensor<B: Backend>(
        &self,
        rows: std::ops::Range<usize>,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        self.tensor(&self.counterfactuals, rows, device)
    }

    fn tensor<B: Backend>(
        &self,
        pixels: &[f32],
        rows: std::ops::Range<usize>,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        image_rows(pixels, rows, self.shape, device)
    }
}

/// Images `rows` of a flat buffer of `[C, H, W]` images as a `[rows, C, H, W]` tensor.
pub fn image_rows<B: Backend>(
    pixels: &[f32],
    rows: std::ops::Range<usize>,
    [c, h, w]: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let chw = c * h * w;
    let data = pixels[rows.start * chw..rows.end * chw].to_vec();
    Tensor::from_data(TensorData::new(data, [rows.len(), c, h, w]), device)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// `n` 1×2×2 images: inputs all `x`, counterfactuals all `c`, predicted 0, reached 1.
    pub fn uniform(n: usize, x: f32, c: f32) -> CounterfactualSet {
        CounterfactualSet {
            shape: [1, 2, 2],
            inputs: vec![x; 4 * n],
            counterfactuals: vec![c; 4 * n],
            predicted: vec![0; n],
            cf_predicted: vec![Some(1); n],
            targets: vec![1; n],
            ids: (0..n).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::uniform;

    #[test]
    fn validity_and_subsets() {
        let mut s = uniform(4, 0.0, 1.0);
        s.cf_predicted[1] = None;
        s.cf_predicted[2] = Some(0);
        assert_eq!(s.valid_indices(), vec![0, 3]);
        let v = s.subset(&[3, 0]);
        assert_eq!(v.ids, vec![3, 0]);
        assert_eq!(v.inputs.len(), 8);
        v.validate().unwrap();
        let mut broken = s.clone();
        broken.targets.pop();
        let e = broken.validate().unwrap_err().to_string();
        assert!(e.contains("targets"), "{e}");
        assert_eq!(s.chunks(3).collect::<Vec<_>>(), vec![0..3, 3..4]);
    }
}
