use serde::{Deserialize, Serialize};

/// One resolution level: `blocks` all-in-one couplings with subnets of width `width`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageConfig {
    pub blocks: usize,
    pub width: usize,
    #[serde(default)]
    pub dropout: f64,
}

/// Architecture of an IB-INN (`inn_architecture.py::constuct_inn` of the reference).
///
/// The graph is: optional Haar downsampling → for each stage, its all-in-one couplings, and a
/// downsampling coupling between consecutive stages (subnets twice the stage's width) → DCT
/// pooling to a flat vector → `fc_blocks` × (random permutation + fully connected GLOW
/// coupling). The GMM head has one learnable mean per class and learnable class weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IbInnConfig {
    /// `[C, H, W]` of the input.
    pub input_shape: [usize; 3],
    pub n_classes: usize,
    pub haar: bool,
    pub stages: Vec<StageConfig>,
    pub fc_blocks: usize,
    pub fc_width: usize,
    pub fc_dropout: f64,
    pub fc_clamp: f64,
    /// Soft clamp of the convolutional couplings.
    pub clamp: f64,
    /// Fixed per-block output scale (the reference's `act_norm`, 0.80 for MNIST).
    pub act_norm: f64,
    /// Whether the first coupling's subnet starts with a ReLU (false only for the deeper
    /// CIFAR-style graph whose first stage sees raw pixels).
    pub relu_first_block: bool,
    pub dct_rebalance: f64,
    /// Scale of the initial GMM means (`mu_init`).
    pub mu_init: f64,
    /// Seeds the fixed rotations (the weights themselves follow the backend seed).
    pub seed: u64,
}

impl Default for IbInnConfig {
    fn default() -> Self {
        Self::mnist()
    }
}

impl IbInnConfig {
    /// The "smaller" MNIST architecture of the IB-INN paper, used by ECINN for (Fake)MNIST:
    /// Haar → 24 couplings (width 32) → downsampling coupling → 24 couplings (width 64,
    /// dropout 0.25) → DCT → one FC coupling (width 1024, dropout 0.5, clamp 2).
    pub fn mnist() -> Self {
        Self {
            input_shape: [1, 28, 28],
            n_classes: 10,
            haar: true,
            stages: vec![
                StageConfig {
                    blocks: 24,
                    width: 32,
                    dropout: 0.0,
                },
                StageConfig {
                    blocks: 24,
                    width: 64,
                    dropout: 0.25,
                },
            ],
            fc_blocks: 1,
            fc_width: 1024,
            fc_dropout: 0.5,
            fc_clamp: 2.0,
            clamp: 0.7,
            act_norm: 0.8,
            relu_first_block: true,
            dct_rebalance: 0.5,
            mu_init: 5.0,
            seed: 0,
        }
    }

    /// The MNIST graph with 2 narrow blocks per stage: for tests and quick smoke runs.
    pub fn tiny() -> Self {
        let stage = |width| StageConfig {
            blocks: 2,
            width,
            dropout: 0.0,
        };
        Self {
            stages: vec![stage(8), stage(16)],
            fc_width: 64,
            fc_dropout: 0.0,
            ..Self::mnist()
        }
    }

    pub fn dim(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Checks that the shapes work out; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        let [c, h, w] = self.input_shape;
        if c == 0 || h == 0 || w == 0 {
            return Err(format!(
                "input_shape {:?} has a zero dimension",
                self.input_shape
            ));
        }
        if self.n_classes < 2 {
            return Err(format!("n_classes is {}, need at least 2", self.n_classes));
        }
        if self.stages.is_empty() || self.stages.iter().any(|s| s.blocks == 0 || s.width == 0) {
            return Err("need at least one stage, each with blocks > 0 and width > 0".into());
        }
        let halvings = usize::from(self.haar) + self.stages.len() - 1;
        let f = 1 << halvings;
        if h % f != 0 || w % f != 0 {
            return Err(format!(
                "input {h}×{w} must be divisible by {f} (Haar + {} downsampling couplings)",
                self.stages.len() - 1
            ));
        }
        if h != w {
            return Err(format!("DCT pooling needs a square input, got {h}×{w}"));
        }
        if self.first_stage_channels() < 2 {
            return Err(
                "the first stage needs at least 2 channels: enable haar for 1-channel input".into(),
            );
        }
        if self.dim() < self.n_classes {
            return Err(format!(
                "dimension {} is smaller than n_classes {}",
                self.dim(),
                self.n_classes
            ));
        }
        for (name, v) in [
            ("clamp", self.clamp),
            ("fc_clamp", self.fc_clamp),
            ("act_norm", self.act_norm),
            ("dct_rebalance", self.dct_rebalance),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be positive, got {v}"));
            }
        }
        Ok(())
    }

    fn first_stage_channels(&self) -> usize {
        self.input_shape[0] * if self.haar { 4 } else { 1 }
    }
}
