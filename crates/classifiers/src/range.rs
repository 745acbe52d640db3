use serde::{Deserialize, Serialize};

/// The pixel range a model is trained on and the metrics measure in.
///
/// Paper 4 normalises to `[-0.5, 0.5]` by default and shows that scores move with the range
/// (Table 1, seed 004 L5487-5539): IM2 divides by ‖c‖₁, which counts black pixels under
/// `[-0.5, 0.5]` and not under `[0, 1]`. Every evaluation model is trained on the range it is
/// used with (L5509-5511), so the range is part of a model's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataRange {
    /// `[-0.5, 0.5]` (Looveren & Klaise, Paper 4's default).
    #[default]
    Centred,
    /// `[0, 1]` (Mahajan et al.).
    Unit,
}

impl DataRange {
    pub const ALL: [DataRange; 2] = [Self::Centred, Self::Unit];

    /// What a model subtracts from unit-space pixels to reach this range (its scale is 1).
    pub fn offset(self) -> f32 {
        match self {
            Self::Centred => 0.5,
            Self::Unit => 0.0,
        }
    }

    /// The range a model with this input offset and scale sees, if it is one of the two.
    pub fn of_model(offset: f32, scale: f32) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.offset() == offset && scale == 1.0)
    }

    /// `[lo, hi]`, for reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::Centred => "[-0.5, 0.5]",
            Self::Unit => "[0, 1]",
        }
    }
}

impl std::fmt::Display for DataRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Centred => "centred",
            Self::Unit => "unit",
        })
    }
}

impl std::str::FromStr for DataRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "centred" | "centered" | "-0.5,0.5" => Ok(Self::Centred),
            "unit" | "0,1" => Ok(Self::Unit),
            other => Err(format!(
                "unknown data range {other:?}: expected `centred` ([-0.5, 0.5]) or `unit` ([0, 1])"
            )),
        }
    }
}
