//! 2-d convolution on `Autodiff<Flex>` (the default CPU backend), forward and both gradients,
//! as one matrix product per sample (or per group of samples with small planes), split over
//! the cores.
//!
//! Why: flex 0.21 runs a convolution as a parallel tiled im2col + GEMM, but first copies the
//! whole input to channels-last and the weight to `[c_out, kh, kw, c_in]` on the calling
//! thread, and makes a non-contiguous input contiguous there too (burn's weight gradient hands
//! it the batch-swapped input). In the IB-INN's CPU training step those serial copies were
//! about a fifth of the wall time, with the second core idle (docs/results.md, "Convolutions
//! and the affine half-step on flex's cores").
//!
//! Here the samples are computed in groups, in parallel over the groups, in the input's own
//! channels-first layout, with `K = c_in·kh·kw` and `P = oh·ow`. A group is one sample where
//! the planes are large (`P` of 64 pixels or more, [`DEFAULT_MIN_COLUMNS`]) or the kernel is
//! pointwise, and as many samples as make 64 columns where they are small, their matrices side
//! by side (`[U_b U_b+1 …]`), since a product per 1-, 9- or 16-pixel plane re-reads the whole
//! weight matrix for little work ([`set_min_columns`]). Per sample `b`:
//! * its patches `U_b` (`[K, P]`, row `(c, i, j)` the input plane `c` shifted by `(i, j)`:
//!   row copies, zero outside the input) — or the input itself for a 1×1 kernel at stride 1
//!   without padding;
//! * forward `Y_b = W·U_b` (`W` as `[c_out, K]`, `Y_b` as `[c_out, P]`: already `[c_out, oh,
//!   ow]`, so a group of one sample needs no transpose; a larger group's product is copied
//!   out plane by plane), plus the bias;
//! * weight gradient `∂W = Σ_b ∂Y_b·U_bᵀ`, summed per core and then across cores; bias
//!   gradient the row sums of `∂Y_b`;
//! * input gradient `∂U_b = Wᵀ·∂Y_b` scattered back onto the input plane (col2im, per sample so
//!   no two cores write one value).
//!
//! The products are faer's, written straight into the output for a group of one sample (or,
//! for the weight gradient, added onto each core's sum), and each core keeps one patch buffer
//! for all its groups:
//! flex's own product returned a fresh tensor per sample, which it zeroed and copied once more
//! to realign, before the values were copied into the output (docs/results.md, "The
//! convolutions' matrix products through faer").
//!
//! Grouped convolutions (`groups > 1`), dilation and dtypes other than f32 are not covered:
//! those calls go to burn's `conv2d` unchanged.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn_flex::{Flex, FlexTensor};
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::convert::{primitive, tensor};
use crate::finish_stateful;
use crate::flex_util::{flex_tensor, values, zeros};

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

    /// A patch row's valid values as one contiguous block, where output rows and input rows
    /// are equally long at stride 1 ('same' padding): the segments of the rows then lie equally
    /// far apart in the patch row and in the input plane, so `(at, from, len)` (the block's
    /// start in the patch row, its start in the input plane, its length) covers them all, with
    /// the padded positions between them ([`zero_gaps`]) inside. `None` for other geometries.
    /// Arguments as [`Geometry::each_row`] passes them.
    fn block(
        &self,
        (o_lo, o_hi): (usize, usize),
        in_row: usize,
        (lo, hi): (usize, usize),
        start: usize,
    ) -> Option<(usize, usize, usize)> {
        (self.stride == [1, 1] && self.w == self.ow).then(|| {
            let at = o_lo * self.ow + lo;
            let len = (o_hi - o_lo - 1) * self.ow + hi - lo;
            (at, in_row * self.w + start, len)
        })
    }

    /// The patches `[K, P]` of one sample `x` (`[c_in, h, w]`), written into the columns
    /// `[first, first + P)` of `cols` (`K` rows of `ld` values), which must hold zeros or the
    /// patches of another sample of this geometry and layout: only the values inside the
    /// input are written, the same positions for every sample.
    fn im2col(&self, x: &[f32], cols: &mut [f32], ld: usize, first: usize) {
        let (p, ow, w, [sh, sw]) = (self.pixels(), self.ow, self.w, self.stride);
        self.each_row(|row, (o_lo, o_hi), in_row, (lo, hi), start| {
            let dst = &mut cols[row * ld + first..][..p];
            if let Some((at, from, len)) = self.block((o_lo, o_hi), in_row, (lo, hi), start) {
                // One copy of the whole block (a copy per 14-value segment cost more in calls
                // than in bytes), then the values it carried over between segments from the
                // neighbouring columns set back to zero.
                dst[at..at + len].copy_from_slice(&x[from..from + len]);
                zero_gaps(dst, ow, (o_lo, o_hi), (lo, hi));
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

    /// The patches `[K, cnt·P]` of samples `b..b + cnt` of `x` (`[n, c_in, h, w]`), side by
    /// side: the sample itself for one sample of a pointwise convolution, else written into
    /// `buf`, a buffer of one rayon task that it keeps from group to group. The buffer needs
    /// zeroing only when its layout changes (the last group may be smaller):
    /// [`Geometry::im2col`] writes the same positions for every sample of one geometry and
    /// leaves the rest at zero.
    fn patches<'a>(&self, x: &'a [f32], b: usize, cnt: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
        let n_in = self.sample_in();
        if cnt == 1 && self.pointwise() {
            return &x[b * n_in..(b + 1) * n_in];
        }
        let (k, p) = (self.patch(), self.pixels());
        if buf.len() != k * cnt * p {
            buf.clear();
            buf.resize(k * cnt * p, 0.0);
        }
        for j in 0..cnt {
            self.im2col(&x[(b + j) * n_in..][..n_in], buf, cnt * p, j * p);
        }
        buf
    }

    /// Adds the patch gradients in the columns `[first, first + P)` of `cols` (`K` rows of `ld`
    /// values) onto the input gradient of one sample `dx`. `cols` is scratch: the gradients of
    /// padded positions in it are zeroed on the way.
    fn col2im_add(&self, cols: &mut [f32], ld: usize, first: usize, dx: &mut [f32]) {
        let (p, ow, w, [sh, sw]) = (self.pixels(), self.ow, self.w, self.stride);
        self.each_row(|row, (o_lo, o_hi), in_row, (lo, hi), start| {
            let src_row = &mut cols[row * ld + first..][..p];
            if let Some((at, from, len)) = self.block((o_lo, o_hi), in_row, (lo, hi), start) {
                // One long add of the whole block, which vectorises, instead of one short add
                // per output row, whose scalar remainder (up to 7 of a 14-value row) was most
                // of the time. The gradients of padding between the segments must add nothing.
                zero_gaps(src_row, ow, (o_lo, o_hi), (lo, hi));
                let dst = &mut dx[from..from + len];
                for (d, s) in dst.iter_mut().zip(&src_row[at..at + len]) {
                    *d += s;
                }
                return;
            }
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

/// Zeroes the positions of one patch row `dst` (`[oh, ow]`) that lie between the valid
/// segments `[lo, hi)` of output rows `o_lo..o_hi`: the end of each row and the start of the
/// next, a column or two of padding.
///
/// Why strided stores: a `fill` per gap is a `memset` call per one or two values, and those
/// calls were 2 % of a CPU training step.
fn zero_gaps(dst: &mut [f32], ow: usize, (o_lo, o_hi): (usize, usize), (lo, hi): (usize, usize)) {
    let rows = o_hi - o_lo - 1;
    if rows == 0 {
        return;
    }
    for t in hi..ow + lo {
        for v in dst[o_lo * ow + t..].iter_mut().step_by(ow).take(rows) {
            *v = 0.0;
        }
    }
}

/// The row-major `[rows, cols]` matrix held by `v`.
fn matrix(v: &[f32], rows: usize, cols: usize) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice(v, rows, cols)
}

fn matrix_mut(v: &mut [f32], rows: usize, cols: usize) -> MatMut<'_, f32> {
    MatMut::from_row_major_slice_mut(v, rows, cols)
}

/// `dst = a·b`, or `dst += a·b` with [`Accum::Add`], on the calling thread: every caller
/// already splits the batch over the cores.
fn product(dst: MatMut<'_, f32>, accum: Accum, a: MatRef<'_, f32>, b: MatRef<'_, f32>) {
    faer::linalg::matmul::matmul(dst, accum, a, b, 1.0, Par::Seq);
    clear_upper_state();
}

/// Clears the upper halves of the vector registers (`vzeroupper`) after a faer product.
///
/// Why: faer 0.23 multiplies f32 matrices on x86-64 with `private-gemm-x86`'s assembly
/// kernels (AVX-512 or AVX2), which return without `vzeroupper`. Until something clears it,
/// every legacy-SSE instruction on that thread pays the AVX-SSE transition penalty, and all of
/// this workspace's own code (built for baseline x86-64) and libm are SSE: measured on the
/// development machine, 1 M `f32::exp_m1` took 24.5 ms after one faer product against 4.8 ms
/// before it, a plain scalar loop 4.7 ms against 0.55 (docs/results.md, "The convolutions'
/// matrix products through faer"). A function compiled for AVX2 that itself touches a 256-bit
/// register gets a `vzeroupper` from LLVM before it returns; pulp's `V3::vectorize` makes one
/// without `unsafe`.
fn clear_upper_state() {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        simd.vectorize(|| {
            std::hint::black_box(simd.splat_f32x8(0.0));
        });
    }
}

/// The fewest columns (`cnt·P`, output pixels of `cnt` samples) one matrix product takes when
/// the samples' products are grouped; see [`set_min_columns`].
pub const DEFAULT_MIN_COLUMNS: usize = 64;

static MIN_COLUMNS: AtomicUsize = AtomicUsize::new(DEFAULT_MIN_COLUMNS);

/// Sets how many output pixels one matrix product of these passes covers at least: samples
/// whose planes are smaller than `columns` are multiplied in groups, side by side; `0` or `1`
/// multiplies every sample on its own. The process-wide default is [`DEFAULT_MIN_COLUMNS`];
/// xtask sets it from `CFX_FLEX_CONV` (`grouped` or `per-sample`).
///
/// Why: a product per sample re-reads the whole weight matrix (8 MiB for the DCGAN's 4×4 →
/// 8×8 layer) for a plane of 16 pixels, and the weight gradient adds a product of inner
/// size `P` onto that matrix once per sample, so the small planes of the DCGAN's first
/// generator and last discriminator layers were bound by memory, not arithmetic
/// (docs/results.md, "Small planes grouped into one product").
pub fn set_min_columns(columns: usize) {
    MIN_COLUMNS.store(columns, Ordering::Relaxed);
}

/// Samples per matrix product (the passes' `s`): enough for [`MIN_COLUMNS`] columns, but no
/// more than leaves a group for every core.
fn group_size(g: &Geometry) -> usize {
    // A pointwise convolution multiplies a sample's own plane, which a group would copy first:
    // measured slower (the IB-INN's 7×7 1×1 convolution, 0.41 against 0.56 ms).
    if g.pointwise() {
        return 1;
    }
    let want = MIN_COLUMNS
        .load(Ordering::Relaxed)
        .div_ceil(g.pixels().max(1))
        .max(1);
    want.min(g.n.div_ceil(rayon::current_num_threads()).max(1))
}

/// Groups handed to one rayon task at least, so that the weight gradient's per-task sums are
/// made a few times per core rather than once per group.
fn min_groups(groups: usize) -> usize {
    (groups / (4 * rayon::current_num_threads())).max(1)
}

/// `cnt` samples' planes `[cnt, c, P]` (`src`) as one matrix `[c, cnt·P]` in `dst`.
fn gather(src: &[f32], cnt: usize, c: usize, p: usize, dst: &mut Vec<f32>) {
    dst.resize(cnt * c * p, 0.0);
    for (j, sample) in src.chunks(c * p).enumerate() {
        for (ch, plane) in sample.chunks(p).enumerate() {
            dst[(ch * cnt + j) * p..][..p].copy_from_slice(plane);
        }
    }
}

/// The inverse of [`gather`]: the matrix `[c, cnt·P]` in `src` written as `cnt` samples'
/// planes `[cnt, c, P]` into `dst`.
fn scatter(src: &[f32], cnt: usize, c: usize, p: usize, dst: &mut [f32]) {
    for (j, sample) in dst.chunks_mut(c * p).enumerate() {
        for (ch, plane) in sample.chunks_mut(p).enumerate() {
            plane.copy_from_slice(&src[(ch * cnt + j) * p..][..p]);
        }
    }
}

/// `y = conv(x, w) + b`: per group of samples `[Y_b …] = W·[U_b …]`, written into the output
/// (through a scratch matrix for a group of more than one), plus the bias, in parallel over
/// the groups.
fn forward(
    g: &Geometry,
    s: usize,
    x: &FlexTensor,
    w: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> FlexTensor {
    let (k, p) = (g.patch(), g.pixels());
    let (x, w) = (values(x), values(w));
    let bias = bias.map(values);
    let mut y = zeros(g.n * g.c_out * p);
    y.par_chunks_mut(s * g.c_out * p).enumerate().for_each_init(
        <(Vec<f32>, Vec<f32>)>::default,
        |(buf, tmp), (i, yg)| {
            let cnt = yg.len() / (g.c_out * p);
            let u = matrix(g.patches(x, i * s, cnt, buf), k, cnt * p);
            let w = matrix(w, g.c_out, k);
            if cnt == 1 {
                product(matrix_mut(yg, g.c_out, p), Accum::Replace, w, u);
            } else {
                tmp.resize(g.c_out * cnt * p, 0.0);
                product(matrix_mut(tmp, g.c_out, cnt * p), Accum::Replace, w, u);
                scatter(tmp, cnt, g.c_out, p, yg);
            }
            if let Some(bias) = bias {
                for (row, v) in yg.chunks_mut(p).zip(bias.iter().cycle()) {
                    row.iter_mut().for_each(|y| *y += v);
                }
            }
        },
    );
    flex_tensor(y, &[g.n, g.c_out, g.oh, g.ow])
}

/// `∂W = Σ_b ∂Y_b·U_bᵀ`, one product per group of samples, accumulated per rayon task and then
/// summed across tasks.
fn weight_grad(g: &Geometry, s: usize, x: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let (k, p) = (g.patch(), g.pixels());
    let (x, dy) = (values(x), values(dy));
    let fresh = || vec![0f32; g.c_out * k];
    let dw = dy
        .par_chunks(s * g.c_out * p)
        .enumerate()
        .with_min_len(min_groups(g.n.div_ceil(s)))
        .fold(
            || (fresh(), Vec::new(), Vec::new()),
            |(mut acc, mut buf, mut tmp), (i, dyg)| {
                let cnt = dyg.len() / (g.c_out * p);
                let u = g.patches(x, i * s, cnt, &mut buf);
                let d = if cnt == 1 {
                    dyg
                } else {
                    gather(dyg, cnt, g.c_out, p, &mut tmp);
                    &tmp
                };
                product(
                    matrix_mut(&mut acc, g.c_out, k),
                    Accum::Add,
                    matrix(d, g.c_out, cnt * p),
                    matrix(u, k, cnt * p).transpose(),
                );
                (acc, buf, tmp)
            },
        )
        .map(|(acc, _, _)| acc)
        .reduce(fresh, |mut acc, more| {
            acc.iter_mut().zip(&more).for_each(|(a, m)| *a += m);
            acc
        });
    flex_tensor(dw, &[g.c_out, g.c_in, g.kh, g.kw])
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

/// `∂x`: per group of samples `[∂U_b …] = Wᵀ·[∂Y_b …]` scattered back onto each input plane
/// (col2im), in parallel over the groups; a pointwise convolution's `∂U_b` is the sample's
/// gradient itself.
fn input_grad(g: &Geometry, s: usize, w: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let (k, p, n_in) = (g.patch(), g.pixels(), g.sample_in());
    let (w, dy) = (values(w), values(dy));
    let mut dx = zeros(g.n * n_in);
    dx.par_chunks_mut(s * n_in)
        .zip(dy.par_chunks(s * g.c_out * p))
        .for_each_init(<(Vec<f32>, Vec<f32>)>::default, |(du, tmp), (dxg, dyg)| {
            let cnt = dyg.len() / (g.c_out * p);
            let wt = matrix(w, g.c_out, k).transpose();
            let d = if cnt == 1 {
                dyg
            } else {
                gather(dyg, cnt, g.c_out, p, tmp);
                tmp.as_slice()
            };
            let d = matrix(d, g.c_out, cnt * p);
            if g.pointwise() && cnt == 1 {
                product(matrix_mut(dxg, k, p), Accum::Replace, wt, d);
                return;
            }
            du.resize(k * cnt * p, 0.0);
            product(matrix_mut(du, k, cnt * p), Accum::Replace, wt, d);
            if g.pointwise() {
                scatter(du, cnt, k, p, dxg);
            } else {
                for (j, dxb) in dxg.chunks_mut(n_in).enumerate() {
                    g.col2im_add(du, cnt * p, j * p, dxb);
                }
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
            grads.register::<Flex>(node.id, weight_grad(&g, group_size(&g), &x, &dy));
        }
        if let Some(node) = parent(0) {
            grads.register::<Flex>(node.id, input_grad(&g, group_size(&g), &w, &dy));
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
    tensor(forward(&g, group_size(&g), &xt, &wt, bt.as_ref()))
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
    let y = forward(&g, group_size(&g), &xt, &wt, bt.as_ref());
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

/// The convolution whose input gradient the transposed convolution of `y` (`[N, C_in, h, w]`)
/// by `w` (`[C_in, C_out, kh, kw]`) is, or `None` for burn's (groups, dilation, not f32).
///
/// Why a transposed convolution is one: it maps `y` to `Aᵀy`, where `A` is the convolution by
/// the same weight (`[C_out_conv, C_in_conv] = [C_in, C_out]`) of an `[N, C_out, H, W]` input
/// with the same stride and padding, `H = (h − 1)·s − 2p + kh + padding_out`. So its forward
/// pass is that convolution's input gradient, its input gradient the convolution itself, and
/// its weight gradient the convolution's weight gradient with the roles of input and output
/// swapped: the three passes above, with their per-sample products and no layout copies.
fn transposed_geometry<B: Backend>(
    y: &Tensor<B, 4>,
    w: &Tensor<B, 4>,
    options: &ConvTransposeOptions<2>,
) -> Option<Geometry> {
    let f32 = burn::tensor::DType::F32;
    if options.groups != 1 || options.dilation != [1, 1] || y.dtype() != f32 || w.dtype() != f32 {
        return None;
    }
    let ([n, c_in, h, wd], ws) = (y.dims(), w.dims());
    assert_eq!(
        c_in, ws[0],
        "transposed convolution: the input has {c_in} channels but the weight {ws:?} expects {}",
        ws[0]
    );
    let out = |len: usize, k: usize, s: usize, p: usize, po: usize| {
        ((len - 1) * s + k + po).checked_sub(2 * p)
    };
    let [sh, sw] = options.stride;
    let [ph, pw] = options.padding;
    let [poh, pow] = options.padding_out;
    let big_h = out(h, ws[2], sh, ph, poh)?;
    let big_w = out(wd, ws[3], sw, pw, pow)?;
    let conv = ConvOptions::new(options.stride, options.padding, [1, 1], 1);
    let g = Geometry::new(
        &[n, ws[1], big_h, big_w],
        &[c_in, ws[1], ws[2], ws[3]],
        &conv,
    );
    // An output padding of a stride or more leaves pixels no input reaches: burn's then.
    (g.oh == h && g.ow == wd).then_some(g)
}

#[derive(Debug)]
struct FlexConvTranspose;

/// The transposed convolution's input `y` and weight, with the geometry of its convolution.
#[derive(Debug, Clone)]
struct SavedTransposed {
    y: FlexTensor,
    w: FlexTensor,
    geometry: Geometry,
}

impl Backward<Flex, 2> for FlexConvTranspose {
    type State = SavedTransposed;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dx = grads.consume::<Flex>(&ops.node).to_contiguous();
        let SavedTransposed { y, w, geometry: g } = ops.state;
        if let Some(node) = &ops.parents[1] {
            grads.register::<Flex>(node.id, weight_grad(&g, group_size(&g), &dx, &y));
        }
        if let Some(node) = &ops.parents[0] {
            grads.register::<Flex>(node.id, forward(&g, group_size(&g), &dx, &w, None));
        }
    }
}

/// Adds a transposed convolution's bias `[C_out]` to its output.
fn add_bias<B: Backend>(x: Tensor<B, 4>, b: Option<Tensor<B, 1>>) -> Tensor<B, 4> {
    match b {
        Some(b) => {
            let c = b.dims()[0];
            x + b.reshape([1, c, 1, 1])
        }
        None => x,
    }
}

/// [`conv_transpose2d_flex`] without autodiff: the same forward pass.
pub fn conv_transpose2d_flex_inference(
    y: Tensor<Flex, 4>,
    w: Tensor<Flex, 4>,
    b: Option<Tensor<Flex, 1>>,
    options: ConvTransposeOptions<2>,
) -> Tensor<Flex, 4> {
    let Some(g) = transposed_geometry(&y, &w, &options) else {
        return burn::tensor::module::conv_transpose2d(y, w, b, options);
    };
    let (yt, wt) = (primitive(y).to_contiguous(), primitive(w).to_contiguous());
    add_bias(tensor(input_grad(&g, group_size(&g), &wt, &yt)), b)
}

/// `conv_transpose2d(y, w, b, options)` on `Autodiff<Flex>` through the passes of
/// [`conv2d_flex`] (see [`transposed_geometry`] for why they serve), with its own backward
/// pass; the bias is added by burn's ops. burn's `conv_transpose2d` where the options have
/// groups or dilation, or a tensor is not f32. The DCGAN's generator runs it on flex when
/// xtask registers it (`CFX_CONV=auto`, the default).
pub fn conv_transpose2d_flex<C: CheckpointStrategy>(
    y: Tensor<Autodiff<Flex, C>, 4>,
    w: Tensor<Autodiff<Flex, C>, 4>,
    b: Option<Tensor<Autodiff<Flex, C>, 1>>,
    options: ConvTransposeOptions<2>,
) -> Tensor<Autodiff<Flex, C>, 4> {
    let Some(g) = transposed_geometry(&y, &w, &options) else {
        return burn::tensor::module::conv_transpose2d(y, w, b, options);
    };
    let (yp, wp) = (primitive(y), primitive(w));
    let yt = yp.primitive.clone().to_contiguous();
    let wt = wp.primitive.clone().to_contiguous();
    let x = input_grad(&g, group_size(&g), &wt, &yt);
    let saved = SavedTransposed {
        y: yt,
        w: wt,
        geometry: g,
    };
    let out = finish_stateful(
        FlexConvTranspose
            .prepare::<C>([yp.node.clone(), wp.node.clone()])
            .compute_bound()
            .stateful(),
        saved,
        x,
    );
    add_bias(tensor(out), b)
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
    /// wider than the kernel reach, strides 2 and 3, non-square inputs and kernels, and
    /// batches large enough for a patch buffer to be reused.
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
            // Enough samples that each core's patch buffer serves several of them, with
            // positions outside the input that must stay zero from sample to sample.
            ([24, 3, 6, 6], [4, 3, 3, 3], [1, 1], [2, 2], true),
            ([24, 2, 7, 5], [3, 2, 3, 2], [2, 1], [1, 1], false),
            // 'Same' padding at stride 1, where whole blocks of rows are copied and added at
            // once: gaps of two padded columns between the rows, and kernel rows that reach
            // a single row of a two-row input.
            ([3, 2, 5, 9], [4, 2, 5, 5], [1, 1], [2, 2], true),
            ([2, 3, 2, 6], [2, 3, 5, 5], [1, 1], [2, 2], false),
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
            let what = format!("case {i}: {xs:?} * {ws:?}, stride {stride:?}, pad {padding:?}");
            let leaves = (&leaf, &w, b.as_ref());
            assert_same_function(&what, [ours, theirs], inference, leaves, seed + 3);
        }
    }

    /// `ours` equals burn's `theirs`, and so does `inference` (the pass without autodiff),
    /// within float rounding, and so do the gradients of the leaves (input, weight, bias)
    /// under a weighted sum of the output, which makes every output's gradient different.
    fn assert_same_function(
        what: &str,
        [ours, theirs]: [Tensor<Ad, 4>; 2],
        inference: Tensor<Flex, 4>,
        (x, w, b): (&Tensor<Ad, 4>, &Tensor<Ad, 4>, Option<&Tensor<Ad, 1>>),
        seed: u64,
    ) {
        assert_eq!(ours.dims(), theirs.dims(), "{what}");
        assert!(
            max_diff(ours.clone().inner(), theirs.clone().inner()) < 1e-4,
            "{what}: output"
        );
        assert!(
            max_diff(inference, theirs.clone().inner()) < 1e-4,
            "{what}: output without autodiff"
        );
        let weights = Tensor::<Ad, 4>::from_inner(random(ours.dims(), seed).inner());
        let go = (ours * weights.clone()).sum().backward();
        let gt = (theirs * weights).sum().backward();
        let grad = |t: &Tensor<Ad, 4>, g| t.grad(g).expect("a gradient");
        assert!(
            max_diff(grad(x, &go), grad(x, &gt)) < 1e-4,
            "{what}: input gradient"
        );
        assert!(
            max_diff(grad(w, &go), grad(w, &gt)) < 1e-3,
            "{what}: weight gradient"
        );
        if let Some(b) = b {
            let (a, t) = (b.grad(&go).unwrap(), b.grad(&gt).unwrap());
            assert!(max_diff(a, t) < 1e-3, "{what}: bias gradient");
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

    /// The transposed convolution's output (with and without autodiff) and its three
    /// gradients equal burn's `conv_transpose2d` within float rounding: the DCGAN's layers
    /// (1 → 4 pixels at stride 1, doubling at stride 2 with padding 1), an output padding,
    /// non-square strides, kernels and paddings, and a batch large enough for a patch buffer
    /// to be reused.
    #[test]
    fn transposed_matches_burns() {
        // (input, weight, stride, padding, output padding, with a bias)
        type Case = (
            [usize; 4],
            [usize; 4],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            bool,
        );
        let cases: &[Case] = &[
            ([3, 5, 4, 4], [5, 3, 4, 4], [2, 2], [1, 1], [0, 0], true),
            ([2, 6, 1, 1], [6, 4, 4, 4], [1, 1], [0, 0], [0, 0], false),
            ([2, 3, 5, 6], [3, 2, 3, 3], [1, 1], [1, 1], [0, 0], true),
            ([2, 3, 3, 4], [3, 2, 3, 2], [2, 3], [1, 0], [0, 0], true),
            ([2, 3, 4, 4], [3, 2, 3, 3], [2, 2], [1, 1], [1, 1], false),
            ([2, 4, 3, 3], [4, 2, 1, 1], [1, 1], [0, 0], [0, 0], true),
            ([24, 2, 4, 3], [2, 3, 4, 4], [2, 2], [1, 1], [0, 0], false),
        ];
        for (i, &(ys, ws, stride, padding, padding_out, with_bias)) in cases.iter().enumerate() {
            let seed = 100 + 10 * i as u64;
            let options = ConvTransposeOptions::new(stride, padding, padding_out, [1, 1], 1);
            let y = random(ys, seed).require_grad();
            let w = random(ws, seed + 1).require_grad();
            let b = with_bias.then(|| random([ws[1]], seed + 2).require_grad());
            // Each case is one these passes cover, not burn's compared with itself.
            assert!(transposed_geometry(&y, &w, &options).is_some(), "case {i}");
            let ours = conv_transpose2d_flex(y.clone(), w.clone(), b.clone(), options.clone());
            let theirs = burn::tensor::module::conv_transpose2d(
                y.clone(),
                w.clone(),
                b.clone(),
                options.clone(),
            );
            let inference = conv_transpose2d_flex_inference(
                y.clone().inner(),
                w.clone().inner(),
                b.clone().map(|b| b.inner()),
                options,
            );
            let what = format!("case {i}: {ys:?} by {ws:?}, stride {stride:?}, pad {padding:?}");
            let leaves = (&y, &w, b.as_ref());
            assert_same_function(&what, [ours, theirs], inference, leaves, seed + 3);
        }
        // Groups go to burn's, whose result comes back as is.
        let (y, w) = (random([2, 4, 3, 3], 1), random([4, 1, 3, 3], 2));
        let grouped = ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 2);
        let ours = conv_transpose2d_flex(y.clone(), w.clone(), None, grouped.clone());
        let theirs = burn::tensor::module::conv_transpose2d(y, w, None, grouped);
        assert_eq!(max_diff(ours.inner(), theirs.inner()), 0.0);
    }

    /// Each pass gives burn's result whatever the samples' grouping: one sample a product,
    /// groups of two and five (so that the last group is smaller and a task's patch buffer
    /// changes its layout), and the whole batch as one product; pointwise, strided and padded
    /// geometries, and the DCGAN's 1-pixel and 16-pixel planes.
    #[test]
    fn grouping_the_samples_changes_nothing() {
        // (input, weight, stride, padding)
        type Case = ([usize; 4], [usize; 4], [usize; 2], [usize; 2]);
        let cases: &[Case] = &[
            ([11, 3, 6, 6], [4, 3, 3, 3], [1, 1], [1, 1]),
            ([7, 4, 5, 3], [6, 4, 1, 1], [1, 1], [0, 0]),
            ([9, 2, 7, 5], [3, 2, 3, 2], [2, 1], [1, 1]),
            ([6, 8, 8, 8], [5, 8, 4, 4], [2, 2], [1, 1]),
            ([5, 6, 4, 4], [3, 6, 4, 4], [1, 1], [0, 0]),
        ];
        for (i, &(xs, ws, stride, padding)) in cases.iter().enumerate() {
            let seed = 200 + 10 * i as u64;
            let options = ConvOptions::new(stride, padding, [1, 1], 1);
            let x = random(xs, seed).require_grad();
            let w = random(ws, seed + 1).require_grad();
            let y = burn::tensor::module::conv2d(x.clone(), w.clone(), None, options.clone());
            let dy = random(y.dims(), seed + 2);
            let grads = (y.clone() * dy.clone()).sum().backward();
            let (dx, dw) = (x.grad(&grads).unwrap(), w.grad(&grads).unwrap());
            let g = Geometry::new(&xs, &ws, &options);
            let flat = |t: Tensor<Flex, 4>| primitive(t).to_contiguous();
            let (xf, wf, dyf) = (flat(x.inner()), flat(w.inner()), flat(dy.inner()));
            for s in [1, 2, 5, xs[0]] {
                let what = format!("case {i}: {xs:?} * {ws:?}, {s} samples a product");
                let ours = tensor(forward(&g, s, &xf, &wf, None));
                assert!(max_diff(ours, y.clone().inner()) < 1e-4, "{what}: output");
                let ours = tensor(input_grad(&g, s, &wf, &dyf));
                assert!(max_diff(ours, dx.clone()) < 1e-4, "{what}: input gradient");
                let ours = tensor(weight_grad(&g, s, &xf, &dyf));
                assert!(max_diff(ours, dw.clone()) < 1e-3, "{what}: weight gradient");
            }
        }
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
