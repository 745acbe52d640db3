use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// Pixel bytes to model inputs, as IB-INN's `data.py::Augmentor` does it.
///
/// `u = pixel / 255` (torchvision's `ToTensor`); for training, `u += U(0,1)/256` (uniform
/// dequantisation) and `u += noise_std · N(0,1)`; finally `x = scale · (u − offset)`. With the
/// MNIST constants (offset ½, scale 2) the INN sees `[-1, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augmentation {
    pub dequantize: bool,
    pub noise_std: f32,
    pub offset: f32,
    pub scale: f32,
}

impl Augmentation {
    /// IB-INN training on (Fake)MNIST: dequantisation, noise 0.01, inputs in [-1, 1].
    pub const IBINN_TRAIN: Self = Self {
        dequantize: true,
        noise_std: 0.01,
        offset: 0.5,
        scale: 2.0,
    };
    /// Deterministic [-1, 1] inputs (IB-INN evaluation).
    pub const IBINN_EVAL: Self = Self::IBINN_TRAIN.deterministic();
    /// Deterministic [-0.5, 0.5] inputs: the evaluation CNNs and metrics of Paper 4.
    pub const CENTERED: Self = Self {
        dequantize: false,
        noise_std: 0.0,
        offset: 0.5,
        scale: 1.0,
    };

    /// Plain `[0, 1]` pixels: the unit space that explainers and metrics exchange images in.
    pub const UNIT: Self = Self {
        dequantize: false,
        noise_std: 0.0,
        offset: 0.0,
        scale: 1.0,
    };

    /// The same affine map without the random parts.
    pub const fn deterministic(self) -> Self {
        Self {
            dequantize: false,
            noise_std: 0.0,
            ..self
        }
    }

    /// Keeps the uniform dequantisation but drops the Gaussian noise: the setting for
    /// likelihoods (bits/dim) on held-out data.
    pub const fn without_noise(self) -> Self {
        Self {
            noise_std: 0.0,
            ..self
        }
    }

    pub fn is_random(&self) -> bool {
        self.dequantize || self.noise_std > 0.0
    }

    /// Maps `[0, 1]` to model space.
    pub fn from_unit(&self, u: f32) -> f32 {
        self.scale * (u - self.offset)
    }

    /// Maps model space back to `[0, 1]` (not clamped).
    pub fn to_unit(&self, x: f32) -> f32 {
        x / self.scale + self.offset
    }

    /// Appends the augmented pixels to `out`.
    pub fn apply_into(&self, pixels: &[u8], rng: &mut impl Rng, out: &mut Vec<f32>) {
        out.reserve(pixels.len());
        for &p in pixels {
            let mut u = p as f32 / 255.0;
            if self.dequantize {
                u += rng.random::<f32>() / 256.0;
            }
            if self.noise_std > 0.0 {
                let n: f32 = StandardNormal.sample(rng);
                u += self.noise_std * n;
            }
            out.push(self.from_unit(u));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn eval_maps_bytes_to_minus_one_one() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut out = vec![];
        Augmentation::IBINN_EVAL.apply_into(&[0, 255, 51], &mut rng, &mut out);
        assert_eq!(out[0], -1.0);
        assert_eq!(out[1], 1.0);
        assert!((out[2] - (-0.6)).abs() < 1e-6);
        assert!((Augmentation::IBINN_EVAL.to_unit(out[2]) - 0.2).abs() < 1e-6);
        out.clear();
        Augmentation::CENTERED.apply_into(&[0, 255], &mut rng, &mut out);
        assert_eq!(out, vec![-0.5, 0.5]);
    }

    #[test]
    fn training_noise_has_the_reference_moments() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut out = vec![];
        let pixels = vec![100u8; 200_000];
        Augmentation::IBINN_TRAIN.apply_into(&pixels, &mut rng, &mut out);
        // u = 100/255 + U(0,1)/256 + 0.01 N: mean shift 1/512, var 1/(12·256²) + 1e-4; x = 2(u − ½).
        let base = 2.0 * (100.0 / 255.0 - 0.5);
        let n = out.len() as f64;
        let mean = out.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = out.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!((mean - (base + 2.0 / 512.0)).abs() < 2e-4, "{mean}");
        let expected_var = 4.0 * (1.0 / (12.0 * 65536.0) + 1e-4);
        assert!(
            (var / expected_var - 1.0).abs() < 0.02,
            "{var} vs {expected_var}"
        );
    }
}
