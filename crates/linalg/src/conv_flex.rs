//! 2-d convolution on `Autodiff<Flex>` (the default CPU backend), forward and both gradients,
//! as one matrix product per sample with the samples split over the cores.
//!
//! Why: flex 0.21 runs a convolution as a parallel tiled im2col + GEMM, but first copies the
//! whole input to channels-last and the weight to `[c_out, kh, kw, c_in]` on the calling
//! thread, and makes a non-contiguous input contiguous there too (burn's weight gradient hands
//! it the batch-swapped input). In the IB-INN's CPU training step those serial copies were
//! about a fifth of the wall time, with the second core idle (docs/results.md, "Convolutions
//! and the affine half-step on flex's cores").
//!
//! Here each sample `b` is computed on its own, in parallel over the batch, in the input's own
//! channels-first layout, with `K = c_in·kh·kw` and `P = oh·ow`:
//! * its patches `U_b` (`[K, P]`, row `(c, i, j)` the input plane `c` shifted by `(i, j)`:
//!   row copies, zero outside the input) — or the input itself for a 1×1 kernel at stride 1
//!   without padding;
//! * forward `Y_b = W·U_b` (`W` as `[c_out, K]`, `Y_b` as `[c_out, P]`: already `[c_out, oh,
//!   ow]`, so the output needs no transpose), plus the bias;
//! * weight gradient `∂W = Σ_b ∂Y_b·U_bᵀ`, summed per core and then across cores; bias
//!   gradient the row sums of `∂Y_b`;
//! * input gradient `∂U_b = Wᵀ·∂Y_b` scattered back onto the input plane (col2im, per sample so
//!   no two cores write one value).
//!
//! Groups, dilation and dtypes other than f32 are not covered: those calls go to burn's
//! `conv2d` unchanged.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use crate::convert::{primitive, tensor};
use crate::finish_stateful;
use crate::flex_util::{flex_tensor, values};

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(x: &[usize], w: &[usize], options: &ConvOptions<2>) -> Self {
        assert!(
            x.len() == 4 && w.len() == 4,
            "convolution: expected a [N, C, H, W] input and a [C_out, C_in, KH, KW] weight, got \
             {x:?} and {w:?}"
        );
        assert_eq!(
            x[1], w[1],
            "convolution: the input has {} channels but the weight {w:?} expects {}",
            x[1], w[1]
        );
        let [sh, sw] = options.stride;
        let [ph, pw] = options.padding;
        let out = |len: usize, k: usize, s: usize, p: usize| {
            assert!(
                len + 2 * p >= k && s > 0,
                "convolution: a {k}-wide kernel at stride {s} does not fit an input of {len} \
                 with padding {p}"
            );
            (len + 2 * p - k) / s + 1
        };
        Self {
            n: x[0],
            c_in: x[1],
            h: x[2],
            w: x[3],
            c_out: w[0],
            kh: w[2],
            kw: w[3],
            stride: [sh, sw],
            pad: [ph, pw],
            oh: out(x[2], w[2], sh, ph),
            ow: out(x[3], w[3], sw, pw),
        }
    }

    /// `K`: values in one patch.
    fn patch(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// `P`: output pixels of one plane.
    fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    fn sample_in(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// Whether the patches of a sample are the sample itself.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }

    /// The outputs `[lo, hi)` along one axis whose input index `o·s + k − p` lies in the input.
    fn valid(k: usize, s: usize, p: usize, len: usize, out: usize) -> (usize, usize) {
        let hi = if len + p > k {
            out.min((len + p - k).div_ceil(s))
        } else {
            0
        };
        let lo = if p > k { (p - k).div_ceil(s) } else { 0 };
        (lo.min(hi), hi)
    }

    /// For each patch row `(c, i, j)` with values inside the input: `f(row, its output rows
    /// [o_lo, o_hi), the input row of o_lo, its output columns [lo, hi), the input column of
    /// lo)`. Output row `o` reads input row `in_row + (o − o_lo)·stride`.
    fn each_row(&self, mut f: impl FnMut(usize, (usize, usize), usize, (usize, usize), usize)) {
        let ([sh, sw], [ph, pw]) = (self.stride, self.pad);
        for c in 0..self.c_in {
            for i in 0..self.kh {
                let rows = Self::valid(i, sh, ph, self.h, self.oh);
                for j in 0..self.kw {
                    let cols = Self::valid(j, sw, pw, self.w, self.ow);
                    if rows.0 == rows.1 || cols.0 == cols.1 {
                        continue;
                    }
                    let row = (c * self.kh + i) * self.kw + j;
                    let in_row = c * self.h + rows.0 * sh + i - ph;
                    f(row, rows, in_row, cols, cols.0 * sw + j - pw);
                }
            }
        }
    }

    /// The patches `[K, P]` of one sample `x` (`[c_in, h, w]`), written into `cols`, which
    /// must hold zeros: only the values inside the input are written.
    fn im2col(&self, x: &[f32], cols: &mut [f32]) {
        let (p, ow, w, [sh, sw]) = (self.pixels(), self.ow, self.w, self.stride);
        self.each_row(|row, (o_lo, o_hi), in_row, (lo, hi), start| {
            let dst = &mut cols[row * p..(row + 1) * p];
            if sh == 1 && sw == 1 && w == ow {
                // Output rows and input rows are equally long, so the row segments lie equally
                // far apart in both: one copy of the whole block (a copy per 14-value segment
                // cost more in calls than in bytes), then the values it carried over between
                // segments from the neighbouring columns set back to zero.
                let (at, len) = (o_lo * ow + lo, (o_hi - o_lo - 1) * ow + hi - lo);
                let from = in_row * w + start;
                dst[at..at + len].copy_from_slice(&x[from..from + len]);
                for o in o_lo..o_hi - 1 {
                    dst[o * ow + hi..(o + 1) * ow + lo].fill(0.0);
                }
                return;
            }
            for (k, o) in (o_lo..o_hi).enumerate() {
                let src = &x[(in_row + k * sh) * w + start..];
                let d = &mut dst[o * ow + lo..o * ow + hi];
                if sw == 1 {
                    d.copy_from_slice(&src[..hi - lo]);
                } else {
                    for (q, v) in d.iter_mut().enumerate() {
                        *v = src[q * sw];
                    }
                }
            }
        });
    }

    /// Adds the patch gradients `cols` (`[K, P]`) onto the input gradient of one sample `dx`.
    fn col2im_add(&self, cols: &[f32], dx: &mut [f32]) {
        let (p, ow, w, [sh, sw]) = (self.pixels(), self.ow, self.w, self.stride);
        self.each_row(|row, (o_lo, o_hi), in_row, (lo, hi), start| {
            let src_row = &cols[row * p..(row + 1) * p];
            for (k, o) in (o_lo..o_hi).enumerate() {
                let src = &src_row[o * ow + lo..o * ow + hi];
                let dst = &mut dx[(in_row + k * sh) * w + start..];
                if sw == 1 {
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d += s;
                    }
                } else {
                    for (q, s) in src.iter().enumerate() {
                        dst[q * sw] += s;
                    }
                }
            }
        });
    }
}

/// Sample `b` of a contiguous `[n, …]` 4-d tensor as a `[1, rows, cols]` batch of one matrix:
/// a view, no copy. (Narrowed to `[rows, cols]` flex would copy it: it reshapes only views
/// that start at the buffer's start; its matrix product reads a batch's offset itself.)
fn sample(t: &FlexTensor, b: usize, [rows, cols]: [usize; 2]) -> Tensor<Flex, 3> {
    let n = t.layout().shape()[0];
    tensor::<Flex, 4>(t.clone())
        .reshape([n, rows, cols])
        .narrow(0, b, 1)
}

/// The values of a product flex just returned (contiguous, as flex's matmul writes them).
fn product_values(t: Tensor<Flex, 3>) -> FlexTensor {
    primitive(t).to_contiguous()
}

/// The weight `[c_out, c_in, kh, kw]` as a batch of one `[c_out, K]` matrix.
fn weight_matrix(g: &Geometry, w: &FlexTensor) -> Tensor<Flex, 3> {
    tensor::<Flex, 4>(w.clone()).reshape([1, g.c_out, g.patch()])
}

/// The patches `U_b` (`[1, K, P]`) of sample `b`: the sample itself for a pointwise
/// convolution.
fn patches(g: &Geometry, x: &FlexTensor, b: usize) -> Tensor<Flex, 3> {
    let (k, p) = (g.patch(), g.pixels());
    if g.pointwise() {
        return sample(x, b, [k, p]);
    }
    let mut u = vec![0f32; k * p];
    g.im2col(
        &values(x)[b * g.sample_in()..(b + 1) * g.sample_in()],
        &mut u,
    );
    tensor(flex_tensor(u, &[1, k, p]))
}

/// Samples handed to one rayon task at least, so that the weight gradient's per-task sums are
/// made a few times per core rather than once per sample.
fn min_samples(n: usize) -> usize {
    (n / (4 * rayon::current_num_threads())).max(1)
}

/// `y = conv(x, w) + b`: per sample `W·U_b` plus the bias, in parallel over the samples.
fn forward(g: &Geometry, x: &FlexTensor, w: &FlexTensor, bias: Option<&FlexTensor>) -> FlexTensor {
    let p = g.pixels();
    let wm = weight_matrix(g, w);
    let bias = bias.map(values);
    let mut y = vec![0f32; g.n * g.c_out * p];
    y.par_chunks_mut(g.c_out * p)
        .enumerate()
        .for_each(|(b, yb)| {
            let prod = product_values(wm.clone().matmul(patches(g, x, b)));
            yb.copy_from_slice(values(&prod));
            if let Some(bias) = bias {
                for (row, v) in yb.chunks_mut(p).zip(bias) {
                    row.iter_mut().for_each(|y| *y += v);
                }
            }
        });
    flex_tensor(y, &[g.n, g.c_out, g.oh, g.ow])
}

/// `∂W = Σ_b ∂Y_b·U_bᵀ`, summed per rayon task and then across tasks.
fn weight_grad(g: &Geometry, x: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let (k, p) = (g.patch(), g.pixels());
    let zeros = || vec![0f32; g.c_out * k];
    let add = |mut acc: Vec<f32>, more: &[f32]| {
        acc.iter_mut().zip(more).for_each(|(a, m)| *a += m);
        acc
    };
    let shape = [g.c_out, g.c_in, g.kh, g.kw];
    let dw = (0..g.n)
        .into_par_iter()
        .with_min_len(min_samples(g.n))
        .fold(zeros, |acc, b| {
            let u = patches(g, x, b);
            let prod = product_values(sample(dy, b, [g.c_out, p]).matmul(u.swap_dims(1, 2)));
            add(acc, values(&prod))
        })
        .reduce(zeros, |acc, more| add(acc, &more));
    flex_tensor(dw, &shape)
}

/// `∂b`: the sum of `∂Y` per output channel, in parallel over the channels.
fn bias_grad(g: &Geometry, dy: &[f32]) -> FlexTensor {
    let p = g.pixels();
    let db = (0..g.c_out)
        .into_par_iter()
        .map(|c| {
            (0..g.n)
                .map(|b| {
                    let at = (b * g.c_out + c) * p;
                    dy[at..at + p].iter().sum::<f32>()
                })
                .sum::<f32>()
        })
        .collect();
    flex_tensor(db, &[g.c_out])
}

/// `∂x`: per sample `∂U_b = Wᵀ·∂Y_b` scattered back onto the input plane (col2im), in
/// parallel over the samples.
fn input_grad(g: &Geometry, w: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let p = g.pixels();
    let wt = weight_matrix(g, w).swap_dims(1, 2);
    let mut dx = vec![0f32; g.n * g.sample_in()];
    dx.par_chunks_mut(g.sample_in())
        .enumerate()
        .for_each(|(b, dxb)| {
            let du = product_values(wt.clone().matmul(sample(dy, b, [g.c_out, p])));
            if g.pointwise() {
                dxb.copy_from_slice(values(&du));
            } else {
                g.col2im_add(values(&du), dxb);
            }
        });
    flex_tensor(dx, &[g.n, g.c_in, g.h, g.w])
}

#[derive(Debug)]
struct FlexConv;

#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    w: FlexTensor,
    geometry: Geometry,
}

impl<const N: usize> Backward<Flex, N> for FlexConv {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let Saved { x, w, geometry: g } = ops.state;
        let parent = |i: usize| ops.parents.get(i).and_then(|p| p.as_ref());
        if let Some(node) = parent(2) {
            grads.register::<Flex>(node.id, bias_grad(&g, values(&dy)));
        }
        if let Some(node) = parent(1) {
            grads.register::<Flex>(node.id, weight_grad(&g, &x, &dy));
        }
        if let Some(node) = parent(0) {
            grads.register::<Flex>(node.id, input_grad(&g, &w, &dy));
        }
    }
}

/// The geometry of a convolution these passes cover (f32, no groups, no dilation), or `None`
/// for burn's.
fn covered<B: Backend>(
    x: &Tensor<B, 4>,
    w: &Tensor<B, 4>,
    b: Option<&Tensor<B, 1>>,
    options: &ConvOptions<2>,
) -> Option<Geometry> {
    let f32 = burn::tensor::DType::F32;
    let f32s = x.dtype() == f32 && w.dtype() == f32 && b.is_none_or(|b| b.dtype() == f32);
    if options.groups != 1 || options.dilation != [1, 1] || !f32s {
        return None;
    }
    let g = Geometry::new(&x.dims(), &w.dims(), options);
    if let Some(b) = b {
        assert_eq!(
            b.dims(),
            [g.c_out],
            "convolution: the bias has {:?} values for {} output channels",
            b.dims(),
            g.c_out
        );
    }
    Some(g)
}

/// [`conv2d_flex`] without autodiff, for inference on flex (ECINN's encoding and inverse
/// passes, `explain`, `evaluate`): the same forward pass.
pub fn conv2d_flex_inference(
    x: Tensor<Flex, 4>,
    w: Tensor<Flex, 4>,
    b: Option<Tensor<Flex, 1>>,
    options: ConvOptions<2>,
) -> Tensor<Flex, 4> {
    let Some(g) = covered(&x, &w, b.as_ref(), &options) else {
        return burn::tensor::module::conv2d(x, w, b, options);
    };
    let contiguous = |t: FlexTensor| t.to_contiguous();
    let (xt, wt) = (contiguous(primitive(x)), contiguous(primitive(w)));
    let bt = b.map(|b| contiguous(primitive(b)));
    tensor(forward(&g, &xt, &wt, bt.as_ref()))
}

/// `conv2d(x, w, b, options)` on `Autodiff<Flex>` as described in the module doc, with its own
/// backward pass; burn's `conv2d` where the options have groups or dilation, or a tensor is
/// not f32. `cfx_flows::nn` runs it as flex's default convolution when xtask registers it
/// (`CFX_CONV=auto`, the default).
pub fn conv2d_flex<C: CheckpointStrategy>(
    x: Tensor<Autodiff<Flex, C>, 4>,
    w: Tensor<Autodiff<Flex, C>, 4>,
    b: Option<Tensor<Autodiff<Flex, C>, 1>>,
    options: ConvOptions<2>,
) -> Tensor<Autodiff<Flex, C>, 4> {
    let Some(g) = covered(&x, &w, b.as_ref(), &options) else {
        return burn::tensor::module::conv2d(x, w, b, options);
    };
    let (xp, wp) = (primitive(x), primitive(w));
    let bp = b.map(primitive);
    let xt = xp.primitive.clone().to_contiguous();
    let wt = wp.primitive.clone().to_contiguous();
    let bt = bp.as_ref().map(|b| b.primitive.clone().to_contiguous());
    let y = forward(&g, &xt, &wt, bt.as_ref());
    let saved = Saved {
        x: xt,
        w: wt,
        geometry: g,
    };
    let out = match bp {
        Some(bp) => finish_stateful(
            FlexConv
                .prepare::<C>([xp.node.clone(), wp.node.clone(), bp.node.clone()])
                .compute_bound()
                .stateful(),
            saved,
            y,
        ),
        None => finish_stateful(
            FlexConv
                .prepare::<C>([xp.node.clone(), wp.node.clone()])
                .compute_bound()
                .stateful(),
            saved,
            y,
        ),
    };
    tensor(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::random_flex as random;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;

    type Ad = Autodiff<Flex, NoCheckpointing>;

    fn max_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f64 {
        crate::test_util::max_abs_diff(a, b)
    }

    /// Output (with and without autodiff) and the three gradients equal burn's `conv2d` (flex's
    /// own kernels) within float rounding, over kernels, strides and paddings that make every
    /// edge case of the patch copies: 1×1 (with and without the pointwise shortcut), padding
    /// wider than the kernel reach, strides 2 and 3, non-square inputs and kernels.
    #[test]
    fn matches_burns_convolution() {
        // (input, weight, stride, padding, with a bias)
        type Case = ([usize; 4], [usize; 4], [usize; 2], [usize; 2], bool);
        let cases: &[Case] = &[
            ([3, 5, 7, 6], [4, 5, 3, 3], [1, 1], [1, 1], true),
            ([2, 3, 8, 8], [6, 3, 3, 3], [1, 1], [0, 0], false),
            ([2, 4, 9, 7], [3, 4, 1, 1], [1, 1], [0, 0], true),
            ([2, 4, 9, 7], [3, 4, 1, 1], [2, 2], [0, 0], false),
            ([2, 2, 6, 9], [5, 2, 2, 3], [2, 3], [1, 2], true),
            ([1, 3, 5, 5], [2, 3, 3, 3], [3, 1], [2, 3], true),
            ([4, 8, 7, 7], [16, 8, 3, 3], [1, 1], [1, 1], false),
        ];
        for (i, &(xs, ws, stride, padding, with_bias)) in cases.iter().enumerate() {
            let seed = 10 * i as u64;
            let options = ConvOptions::new(stride, padding, [1, 1], 1);
            // Every other case gets its input as a channels-last tensor seen channels-first
            // (not contiguous), as a sliced or permuted activation would come. Each side
            // takes its own view of the leaf: a backward pass consumes the steps of the graph
            // it walks, so a view shared by both would pass the gradient on only once.
            let [n, c, h, wd] = xs;
            let leaf = if i % 2 == 1 {
                random([n, h, wd, c], seed).require_grad()
            } else {
                random(xs, seed).require_grad()
            };
            let view = || {
                if i % 2 == 1 {
                    leaf.clone().permute([0, 3, 1, 2])
                } else {
                    leaf.clone()
                }
            };
            let w = random(ws, seed + 1).require_grad();
            let b = with_bias.then(|| random([ws[0]], seed + 2).require_grad());
            let ours = conv2d_flex(view(), w.clone(), b.clone(), options.clone());
            let theirs =
                burn::tensor::module::conv2d(view(), w.clone(), b.clone(), options.clone());
            let inference = conv2d_flex_inference(
                view().inner(),
                w.clone().inner(),
                b.clone().map(|b| b.inner()),
                options,
            );
            assert_eq!(ours.dims(), theirs.dims(), "case {i}");
            let what = format!("case {i}: {xs:?} * {ws:?}, stride {stride:?}, pad {padding:?}");
            assert!(
                max_diff(ours.clone().inner(), theirs.clone().inner()) < 1e-4,
                "{what}: output"
            );
            assert!(
                max_diff(inference, theirs.clone().inner()) < 1e-4,
                "{what}: output without autodiff"
            );
            // A weighted sum makes every output's gradient different.
            let weights = random(ours.dims(), seed + 3).inner();
            let weights = Tensor::<Ad, 4>::from_inner(weights);
            let go = (ours * weights.clone()).sum().backward();
            let gt = (theirs * weights).sum().backward();
            let grad = |t: &Tensor<Ad, 4>, g| t.grad(g).expect("a gradient");
            assert!(
                max_diff(grad(&leaf, &go), grad(&leaf, &gt)) < 1e-4,
                "{what}: input gradient"
            );
            assert!(
                max_diff(grad(&w, &go), grad(&w, &gt)) < 1e-3,
                "{what}: weight gradient"
            );
            if let Some(b) = &b {
                let (a, t) = (b.grad(&go).unwrap(), b.grad(&gt).unwrap());
                assert!(max_diff(a, t) < 1e-3, "{what}: bias gradient");
            }
        }
    }

    /// Groups and dilation go to burn's convolution, whose results it then returns as is.
    #[test]
    fn other_options_fall_back_to_burn() {
        let x = random([2, 4, 6, 6], 1);
        let w = random([4, 2, 3, 3], 2);
        let grouped = ConvOptions::new([1, 1], [1, 1], [1, 1], 2);
        let ours = conv2d_flex(x.clone(), w.clone(), None, grouped.clone());
        let theirs = burn::tensor::module::conv2d(x.clone(), w, None, grouped);
        assert_eq!(max_diff(ours.inner(), theirs.inner()), 0.0);
        let w = random([3, 4, 3, 3], 3);
        let dilated = ConvOptions::new([1, 1], [2, 2], [2, 2], 1);
        let ours = conv2d_flex(x.clone(), w.clone(), None, dilated.clone());
        let theirs = burn::tensor::module::conv2d(x, w, None, dilated);
        assert_eq!(max_diff(ours.inner(), theirs.inner()), 0.0);
    }

    /// The valid output range of one kernel offset, against counting by hand.
    #[test]
    fn valid_ranges_count_by_hand() {
        for (k, s, p, len, out) in [
            (0, 1, 1, 5, 5),
            (2, 1, 1, 5, 5),
            (0, 2, 3, 4, 4),
            (4, 3, 0, 5, 1),
        ] {
            let brute: Vec<usize> = (0..out)
                .filter(|&o| {
                    let i = (o * s + k) as isize - p as isize;
                    i >= 0 && (i as usize) < len
                })
                .collect();
            let (lo, hi) = Geometry::valid(k, s, p, len, out);
            assert_eq!((lo..hi).collect::<Vec<_>>(), brute, "k {k} s {s} p {p}");
        }
    }
}
