use burn::prelude::*;

/// How ECINN's inverse pass `f⁻¹(z + αΔ)` becomes the counterfactual it hands back.
///
/// The inverse of an INN is defined on all of `R^D`, so `x̂` leaves the pixel range and carries
/// changes far below one grey level: on FakeMNIST the digit pixels move by ~0.01 and the
/// background half of that change is negative. No image holds those values. The authors'
/// code (`fhvilshoj/ECINN`, `counterfactual/compute_and_store.py`) therefore stores every
/// counterfactual as an image, `de_augment(x̂).clamp(0, 1) · 255` cast to `uint8`, and seed 004's
/// FakeMNIST table (GEN: EN 6.81, Table 3) is computed on those images.
///
/// [`EcinnPixels::Image`] does the same clamp to `[0, 1]`, but rounds to the nearest of the 256
/// grey levels where the reference truncates (`uint8` casts toward zero): truncation would move
/// every pixel down by half a level on average, so that `x̂ ≠ x` even where the inverse
/// reproduces `x` to 1e-6; rounding keeps those pixels equal, and it is what the PNG figures
/// hold.
///
/// Decision: the default is [`EcinnPixels::Raw`], the seeds' `x̂ = f⁻¹(z + αΔ)` itself. The
/// image is not a neutral storage step: on MNIST (tiny IB-INN, whole test set × 9 targets) α1
/// validity falls from 99.88 % to 98.00 % once `x̂` is made an 8-bit image, and the α0 tipping
/// points stop being ties (100 % → 3 %), because the class change partly lives in values no
/// image holds (docs/results.md, "ECINN counterfactuals as images"). Seed 001's properties (α0
/// on the boundary, α1 convincing) are properties of the inverse pass, so that is what
/// `explain` returns and scores unless asked for images; `--pixels image` reproduces the
/// authors' stored counterfactuals, on which seed 004's tables were computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EcinnPixels {
    /// The inverse pass as it comes, unclamped.
    #[default]
    Raw,
    /// Clamped to `[0, 1]` and rounded to multiples of 1/255.
    Image,
}

/// Grey levels of an 8-bit image.
const LEVELS: f64 = 255.0;

impl EcinnPixels {
    pub fn name(self) -> &'static str {
        match self {
            EcinnPixels::Image => "image",
            EcinnPixels::Raw => "raw",
        }
    }

    /// `x` in unit space, made into what this mode hands back.
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            EcinnPixels::Image => x
                .clamp(0.0, 1.0)
                .mul_scalar(LEVELS)
                .round()
                .div_scalar(LEVELS),
            EcinnPixels::Raw => x,
        }
    }
}

impl std::str::FromStr for EcinnPixels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "image" => Ok(EcinnPixels::Image),
            "raw" => Ok(EcinnPixels::Raw),
            other => Err(format!("{other:?}: expected image or raw")),
        }
    }
}
