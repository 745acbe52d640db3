use burn::module::Param;
use burn::nn::BatchNorm;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::flow::Flow;
use crate::nn::{BatchNormLayers, CouplingNet, CouplingNetConfig};
use crate::ops::sum_per_sample;

/// Which entries condition (are kept) and which are transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    /// Pixels with `(row + col)` even are kept (odd with `flip`).
    Checkerboard,
    /// The first `⌊C/2⌋` channels are kept (the others with `flip`); on flat vectors
    /// (`[N, D, 1, 1]`) this splits the coordinates.
    Channel,
}

/// RealNVP's masked coupling (Dinh et al. 2017), also Glow's when the mask is `Channel`:
/// with a binary mask `b` (1 = kept),
/// `y = b⊙x + (1−b)⊙(x⊙exp(s) + t)`, `(s, t) = net(b⊙x)`, `log|det| = Σ (1−b)⊙s`.
///
/// The raw scale is squashed as `s = scale_c · tanh(raw)` with a learnable per-channel `scale`
/// (fmu2/realNVP, the seed's reference), so a coupling can never blow up; `scale_penalty` is the
/// L2 term the reference adds to the loss (`scale_reg` 5e-5). With `affine = false` the coupling
/// is additive (`s = 0`): Glow's `affine=False`, the seed's CelebA setting.
///
/// Multiplying by the mask instead of slicing costs the net a few zero inputs but lets one block
/// serve both mask kinds and any shape.
#[derive(Config, Debug)]
pub struct MaskedCouplingConfig {
    /// `[C, H, W]` of the input.
    pub shape: [usize; 3],
    pub mask: MaskKind,
    #[config(default = false)]
    pub flip: bool,
    pub net: CouplingNetConfig,
    #[config(default = true)]
    pub affine: bool,
    /// Start the net's last layer at zero (the block starts as the identity).
    #[config(default = true)]
    pub zero_init: bool,
}

#[derive(Module, Debug)]
pub struct MaskedCoupling<B: Backend> {
    net: CouplingNet<B>,
    /// Per-channel bound of the log-scale (affine only).
    scale: Option<Param<Tensor<B, 1>>>,
    /// `[1, C, H, W]`, 1 where kept.
    mask: Tensor<B, 4>,
}

impl MaskedCouplingConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> MaskedCoupling<B> {
        let [c, h, w] = self.shape;
        let out = if self.affine { 2 * c } else { c };
        MaskedCoupling {
            net: self.net.init(self.shape, out, self.zero_init, device),
            scale: self
                .affine
                .then(|| Param::from_tensor(Tensor::ones([c], device))),
            mask: mask_tensor(self.mask, self.flip, [c, h, w], device),
        }
    }
}

fn mask_tensor<B: Backend>(
    kind: MaskKind,
    flip: bool,
    [c, h, w]: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let mut v = Vec::with_capacity(c * h * w);
    for ci in 0..c {
        for y in 0..h {
            for x in 0..w {
                let kept = match kind {
                    MaskKind::Checkerboard => (y + x) % 2 == 0,
                    MaskKind::Channel => ci < c / 2,
                };
                v.push(if kept != flip { 1.0f32 } else { 0.0 });
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [1, c, h, w]), device)
}

impl<B: Backend> MaskedCoupling<B> {
    /// `(s, t)`, both zero on the kept entries.
    fn scale_shift(&self, kept: Tensor<B, 4>) -> (Option<Tensor<B, 4>>, Tensor<B, 4>) {
        let [_, c, _, _] = kept.dims();
        let free = self.mask.clone().neg().add_scalar(1.0);
        match &self.scale {
            Some(scale) => {
                let r = self.net.forward(kept, 2 * c);
                let bound = scale.val().reshape([1, c, 1, 1]);
                let s = r.clone().narrow(1, 0, c).tanh() * bound * free.clone();
                (Some(s), r.narrow(1, c, c) * free)
            }
            None => (None, self.net.forward(kept, c) * free),
        }
    }

    /// `Σ scale²`, the reference's scale regularisation term (0 for additive couplings).
    pub fn scale_penalty(&self) -> Option<Tensor<B, 1>> {
        self.scale.as_ref().map(|s| s.val().powf_scalar(2.0).sum())
    }

    fn check(&self, x: &Tensor<B, 4>) {
        let [_, c, h, w] = x.dims();
        let [_, mc, mh, mw] = self.mask.dims();
        assert_eq!(
            [c, h, w],
            [mc, mh, mw],
            "coupling built for another input shape"
        );
    }
}

impl<B: Backend> Flow<B> for MaskedCoupling<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        self.check(&x);
        let n = x.dims()[0];
        let (s, t) = self.scale_shift(x.clone() * self.mask.clone());
        match s {
            Some(s) => {
                let ld = sum_per_sample(s.clone());
                (x * s.exp() + t, ld)
            }
            None => (x + t, Tensor::zeros([n], &self.mask.device())),
        }
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        self.check(&z);
        // The kept entries pass unchanged, so the net sees the same input as in `forward`.
        let (s, t) = self.scale_shift(z.clone() * self.mask.clone());
        match s {
            Some(s) => (z - t) * s.neg().exp(),
            None => z - t,
        }
    }
}

impl<B: Backend> BatchNormLayers<B> for MaskedCoupling<B> {
    fn visit_batch_norms(&mut self, f: &mut dyn FnMut(&mut BatchNorm<B>)) {
        self.net.visit_batch_norms(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::mode;
    use crate::test_util::{TAd, random_on};
    use crate::testing::check_flow;

    fn block(
        shape: [usize; 3],
        mask: MaskKind,
        flip: bool,
        net: CouplingNetConfig,
        affine: bool,
    ) -> MaskedCoupling<TAd> {
        MaskedCouplingConfig::new(shape, mask, net)
            .with_flip(flip)
            .with_affine(affine)
            .with_zero_init(false)
            .init(&Default::default())
    }

    #[test]
    fn every_mask_and_net_is_invertible_with_the_jacobian_log_det() {
        let cases = [
            (
                [3, 1, 1],
                MaskKind::Channel,
                CouplingNetConfig::Mlp {
                    width: 16,
                    layers: 3,
                },
            ),
            (
                [2, 4, 4],
                MaskKind::Checkerboard,
                CouplingNetConfig::ResNet {
                    width: 4,
                    blocks: 1,
                },
            ),
            (
                [4, 2, 2],
                MaskKind::Channel,
                CouplingNetConfig::Glow { width: 6 },
            ),
        ];
        for (k, (shape, mask, net)) in cases.into_iter().enumerate() {
            for (flip, affine) in [(false, true), (true, true), (false, false)] {
                let b = block(shape, mask, flip, net.clone(), affine);
                let [c, h, w] = shape;
                let x = random_on::<TAd, 4>([3, c, h, w], k as u64);
                // Batch-norm statistics must be the same in forward and inverse.
                let _m = mode::inference();
                check_flow(&b, x, 1e-4, 1e-3);
            }
        }
    }

    #[test]
    fn kept_entries_pass_unchanged_and_zero_init_is_the_identity() {
        let net = CouplingNetConfig::Mlp {
            width: 8,
            layers: 3,
        };
        let b = block([4, 1, 1], MaskKind::Channel, true, net.clone(), true);
        let x = random_on::<TAd, 4>([2, 4, 1, 1], 3);
        let (y, _) = b.forward(x.clone());
        // flip: channels 2, 3 are kept.
        let kept = (y.clone() - x.clone())
            .narrow(1, 2, 2)
            .abs()
            .max()
            .into_scalar();
        let moved = (y - x.clone()).narrow(1, 0, 2).abs().max().into_scalar();
        assert_eq!(kept, 0.0);
        assert!(moved > 0.0);
        let id = MaskedCouplingConfig::new([4, 1, 1], MaskKind::Channel, net)
            .init::<TAd>(&Default::default());
        let (y, ld) = id.forward(x.clone());
        assert_eq!((y - x).abs().max().into_scalar(), 0.0);
        assert_eq!(ld.abs().max().into_scalar(), 0.0);
        assert!(id.scale_penalty().is_some());
    }
}
