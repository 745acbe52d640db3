//! RealNVP's multi-scale architecture (Dinh et al. 2017 §3.6), shared by RealNVP and Glow:
//! after each level but the last, half of the channels are factored out straight to the latent
//! and only the other half goes on through the next level. The model stays a bijection; its
//! latent is every factored-out part and the last level's output, flattened and concatenated to
//! `[N, D, 1, 1]`.

use burn::prelude::*;

use crate::Flow;

/// Levels applied in turn to `[C, H, W]` inputs of `input` shape.
pub(crate) struct MultiScale<'a, B: Backend> {
    pub levels: Vec<&'a dyn Flow<B>>,
    pub input: [usize; 3],
}

impl<B: Backend> MultiScale<'_, B> {
    /// Each level's output shape and how many of its channels go on (all for the last).
    pub fn plan(&self) -> Vec<([usize; 3], usize)> {
        let mut shape = self.input;
        let last = self.levels.len().saturating_sub(1);
        self.levels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let out = l.output_shape(shape);
                let kept = if i < last { out[0] / 2 } else { out[0] };
                shape = [kept, out[1], out[2]];
                (out, kept)
            })
            .collect()
    }

    pub fn dim(&self) -> usize {
        self.input.iter().product()
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let n = x.dims()[0];
        let device = x.device();
        let mut parts = Vec::with_capacity(self.levels.len());
        let mut ld = Tensor::zeros([n], &device);
        let mut h = x;
        for (level, (out, kept)) in self.levels.iter().zip(self.plan()) {
            let (y, l) = level.forward(h);
            ld = ld + l;
            let rest = out[0] - kept;
            if rest > 0 {
                let factored = y.clone().narrow(1, kept, rest);
                parts.push(factored.reshape([n as i32, -1]));
            }
            h = y.narrow(1, 0, kept);
        }
        parts.push(h.reshape([n as i32, -1]));
        let d = self.dim();
        (Tensor::cat(parts, 1).reshape([n, d, 1, 1]), ld)
    }

    pub fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let n = z.dims()[0];
        let flat: Tensor<B, 2> = z.reshape([n as i32, -1]);
        let plan = self.plan();
        // Where each level's factored-out part starts in the latent.
        let mut offsets = Vec::with_capacity(plan.len());
        let mut at = 0;
        for (out, kept) in &plan {
            offsets.push(at);
            at += (out[0] - kept) * out[1] * out[2];
        }
        let mut h: Option<Tensor<B, 4>> = None;
        for ((level, (out, kept)), start) in self.levels.iter().zip(&plan).zip(offsets).rev() {
            let [c, hh, ww] = *out;
            let rest = c - kept;
            let carried = match h.take() {
                Some(h) => h,
                None => flat
                    .clone()
                    .narrow(1, at, kept * hh * ww)
                    .reshape([n, *kept, hh, ww]),
            };
            let y = if rest > 0 {
                let factored = flat
                    .clone()
                    .narrow(1, start, rest * hh * ww)
                    .reshape([n, rest, hh, ww]);
                Tensor::cat(vec![carried, factored], 1)
            } else {
                carried
            };
            h = Some(level.inverse(y));
        }
        h.expect("at least one level")
    }
}

/// `n` images from a flow with a standard normal prior on inputs of `input` shape, latents
/// drawn from `N(0, T²)` (T < 1 trades diversity for typical samples, as in Glow).
pub fn sample_prior<B: Backend, F: Flow<B> + ?Sized>(
    flow: &F,
    input: [usize; 3],
    n: usize,
    temperature: f64,
    device: &B::Device,
) -> Tensor<B, 4> {
    let [c, h, w] = flow.output_shape(input);
    let z = Tensor::random(
        [n, c, h, w],
        burn::tensor::Distribution::Normal(0.0, temperature),
        device,
    );
    flow.inverse(z)
}

/// `−log p(x)` under a flow with a standard normal prior, in bits per dimension of 8-bit pixels
/// given as unit-range `x = (k + u)/256`: `(−log N(z) − log|det|)/(D ln 2) + 8` per sample.
pub fn standard_normal_bpd<B: Backend>(z: Tensor<B, 4>, log_det: Tensor<B, 1>) -> Tensor<B, 1> {
    let n = z.dims()[0];
    let d = z.dims()[1..].iter().product::<usize>() as f64;
    let sq = z
        .powf_scalar(2.0)
        .reshape([n as i32, -1])
        .sum_dim(1)
        .reshape([n]);
    let nll = sq
        .mul_scalar(0.5)
        .add_scalar(0.5 * d * (2.0 * std::f64::consts::PI).ln())
        - log_det;
    nll.div_scalar(d * std::f64::consts::LN_2).add_scalar(8.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TB, random};

    #[test]
    fn bpd_agrees_with_the_ib_inn_formula_at_unit_scale() {
        let z = random::<4>([1, 6, 1, 1], 2);
        let sq: f64 = z.clone().powf_scalar(2.0).sum().into_scalar().elem();
        let ld = Tensor::<TB, 1>::from_floats([0.3], &Default::default());
        let got: f64 = standard_normal_bpd(z, ld).into_scalar().elem();
        let l_x = (0.5 * sq - 0.3) / 6.0;
        let want = crate::ibinn::bits_per_dim(l_x, 1.0);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
