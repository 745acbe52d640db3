//! C3LT's objective (seed 003 Eqs. 3–7 and App. A, Eq. 11), as `c3lt/train.py` computes it.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use cfx_classifiers::FeatureMaps;
use cfx_generative::{Discriminator, LatentGenerator, generator_loss};
use serde::{Deserialize, Serialize};

use super::C3ltMaps;

/// The weights of `L = L_cls + α·L_prx + β·L_cyc + γ·L_adv` and of the change mask's smoothness
/// (`p1`) and entropy (`p2`) inside `L_prx`; the defaults are the reference's (`args.py`:
/// α 0.1, β 0.1, γ 0.001, p1 10, p2 1). α weights the proximity term, as the code does (its
/// help text says classification).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C3ltWeights {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub p1: f64,
    pub p2: f64,
}

impl Default for C3ltWeights {
    fn default() -> Self {
        Self {
            alpha: 0.1,
            beta: 0.1,
            gamma: 0.001,
            p1: 10.0,
            p2: 1.0,
        }
    }
}

/// The loss and its four terms, each a batch mean.
#[derive(Debug, Clone)]
pub struct C3ltTerms<B: Backend> {
    pub total: Tensor<B, 1>,
    pub cls: Tensor<B, 1>,
    pub prox: Tensor<B, 1>,
    pub cyc: Tensor<B, 1>,
    pub adv: Tensor<B, 1>,
}

/// The fixed networks the loss reads: the generator G, the discriminator D and the explained
/// classifier f, which also gives the perceptual features f̂ (the reference uses f for both).
pub struct C3ltCritics<'a, B: Backend> {
    pub generator: &'a dyn LatentGenerator<B>,
    pub discriminator: &'a Discriminator<B>,
    pub classifier: &'a dyn FeatureMaps<B>,
}

/// Unit-space images → the GAN's `[-1, 1]`, where the reference measures its L1 terms.
fn gan_range<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.mul_scalar(2.0).sub_scalar(1.0)
}

fn l1<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, 1> {
    (a - b).abs().mean()
}

/// `−log f_target(x′)`, the batch mean (Eq. 4).
pub fn classification_loss<B: Backend>(logits: Tensor<B, 2>, target: usize) -> Tensor<B, 1> {
    log_softmax(logits, 1).narrow(1, target, 1).mean().neg()
}

/// The change mask of `c3lt/helper.py::gen_masks(mode="mse")`: `(x′ − x)²` of the first
/// channel, min–max scaled to `[0, 1]` per image, `[N, H, W]`.
pub fn change_mask<B: Backend>(x: Tensor<B, 4>, x_cf: Tensor<B, 4>) -> Tensor<B, 3> {
    let [n, _, h, w] = x.dims();
    let d = (gan_range(x_cf) - gan_range(x))
        .narrow(1, 0, 1)
        .square()
        .reshape([n, h * w]);
    let lo = d.clone().min_dim(1);
    let hi = d.clone().max_dim(1);
    // An unchanged image has a zero mask rather than 0/0.
    ((d - lo.clone()) / (hi - lo).clamp_min(1e-12)).reshape([n, h, w])
}

/// Mean squared difference of neighbouring mask values, down and across, averaged (β = 2).
pub fn smoothness_loss<B: Backend>(mask: Tensor<B, 3>) -> Tensor<B, 1> {
    let [n, h, w] = mask.dims();
    let down = l2_mean(
        mask.clone().narrow(1, 0, h - 1),
        mask.clone().narrow(1, 1, h - 1),
        n,
    );
    let across = l2_mean(
        mask.clone().narrow(2, 0, w - 1),
        mask.narrow(2, 1, w - 1),
        n,
    );
    (down + across).mean().div_scalar(2.0)
}

fn l2_mean<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>, n: usize) -> Tensor<B, 1> {
    (a - b)
        .square()
        .reshape([n as i32, -1])
        .mean_dim(1)
        .reshape([n])
}

/// `mean min(m, 1 − m)`: zero for a binary mask.
pub fn entropy_loss<B: Backend>(mask: Tensor<B, 3>) -> Tensor<B, 1> {
    let flipped = mask.clone().neg().add_scalar(1.0);
    mask.min_pair(flipped).mean()
}

/// `L_prx = (‖x − x′‖₁ + p1·L_smth + p2·L_entr) / (1 + p1 + p2)` (Eq. 5 as the code weighs it).
pub fn proximity_loss<B: Backend>(
    x: Tensor<B, 4>,
    x_cf: Tensor<B, 4>,
    p1: f64,
    p2: f64,
) -> Tensor<B, 1> {
    let mask = change_mask(x.clone(), x_cf.clone());
    let prx = l1(gan_range(x), gan_range(x_cf));
    (prx + smoothness_loss(mask.clone()).mul_scalar(p1) + entropy_loss(mask).mul_scalar(p2))
        .div_scalar(1.0 + p1 + p2)
}

/// `(Σ_l ‖f̂^l(a) − f̂^l(b)‖₁ + ‖a − b‖₁) / (1 + |L|)`, each a mean (Eq. 6's image part).
pub fn perceptual_loss<B: Backend>(
    features: &dyn FeatureMaps<B>,
    a: Tensor<B, 4>,
    b: Tensor<B, 4>,
) -> Tensor<B, 1> {
    let fa = features.feature_maps(a.clone());
    let fb = features.feature_maps(b.clone());
    let layers = fa.len() as f64;
    let mut sum = l1(gan_range(a), gan_range(b));
    for (x, y) in fa.into_iter().zip(fb) {
        sum = sum + l1(x, y);
    }
    sum.div_scalar(1.0 + layers)
}

/// C3LT's loss for a batch of each class of `pair = (c, c′)`: images `x[k]` of class
/// `pair[k]` and their latents `z[k] = E(x[k])` (equal batch sizes). The class-`c` images go
/// through `g`, the class-`c′` images through `h`, and each term averages both directions.
/// Hold `cfx_flows::nn::mode::inference()` so that the fixed networks use their running
/// statistics, as the reference's `eval()` does.
pub fn c3lt_loss<B: Backend>(
    maps: &C3ltMaps<B>,
    critics: &C3ltCritics<'_, B>,
    x: [Tensor<B, 4>; 2],
    z: [Tensor<B, 2>; 2],
    pair: [usize; 2],
    n_steps: usize,
    w: &C3ltWeights,
) -> C3ltTerms<B> {
    let g = critics.generator;
    let mut cls = Vec::with_capacity(2);
    let mut prox = Vec::with_capacity(2);
    let mut perc = Vec::with_capacity(2);
    let mut latent = Vec::with_capacity(2);
    let mut adv = Vec::with_capacity(4);
    for k in 0..2 {
        let forward = maps.from_class(k);
        let back = maps.from_class(1 - k);
        let z_cf = forward.apply(z[k].clone(), n_steps);
        let z_cyc = back.apply(z_cf.clone(), n_steps);
        let x_cf = g.decode(z_cf);
        let x_cyc = g.decode(z_cyc.clone());
        cls.push(classification_loss(
            critics.classifier.logits(x_cf.clone()),
            pair[1 - k],
        ));
        prox.push(proximity_loss(x[k].clone(), x_cf.clone(), w.p1, w.p2));
        perc.push(perceptual_loss(
            critics.classifier,
            x[k].clone(),
            x_cyc.clone(),
        ));
        latent.push(l1(z[k].clone(), z_cyc));
        adv.push(generator_loss(critics.discriminator.logits(x_cf)));
        adv.push(generator_loss(critics.discriminator.logits(x_cyc)));
    }
    let mean = |v: Vec<Tensor<B, 1>>| {
        let n = v.len() as f64;
        Tensor::cat(v, 0).sum().div_scalar(n)
    };
    let cls = mean(cls);
    let prox = mean(prox);
    let cyc = mean(perc.into_iter().chain(latent).collect());
    let adv = mean(adv);
    let total = cls.clone()
        + prox.clone().mul_scalar(w.alpha)
        + cyc.clone().mul_scalar(w.beta)
        + adv.clone().mul_scalar(w.gamma);
    C3ltTerms {
        total,
        cls,
        prox,
        cyc,
        adv,
    }
}
