//! A convolution whose gradients are computed, shape by shape, the way flex (the default CPU
//! backend) computes fastest: burn's convolution forward, and for the backward either burn's
//! default gradients or matrix products.
//!
//! Why: burn 0.21 computes a convolution's input gradient as a transposed convolution, which
//! flex runs as a per-sample GEMM followed by a single-threaded scatter (`col2im`), and its
//! weight gradient as a convolution of the batch-swapped input with the batch-swapped output
//! gradient, which flex runs with a 14×14 "kernel" over 128 "channels". Timed on flex (2
//! cores, batch 128, the IB-INN's shapes; `cargo run --release -p cfx-flows --example
//! conv_grads`, docs/results.md "Convolution gradients on the CPU"):
//!
//! | convolution | dX transposed conv | dX conv with flipped W | dW swapped conv | dW matmul with patches | dW shifted matmuls |
//! | --- | ---: | ---: | ---: | ---: | ---: |
//! | 2→32, 3×3, 14×14 | 0.88 ms | 3.78 ms | 6.01 ms | 1.72 ms | 5.57 ms |
//! | 32→32, 3×3, 14×14 | 12.30 ms | 6.99 ms | 16.03 ms | 43.44 ms | 8.66 ms |
//! | 8→64, 3×3, 7×7 | 1.26 ms | 2.42 ms | 3.36 ms | 2.10 ms | 2.52 ms |
//! | 64→64, 3×3, 7×7 | 10.02 ms | 4.87 ms | 9.53 ms | 48.48 ms | 10.04 ms |
//! | 32→4, 1×1, 14×14 | 1.10 ms | 0.81 ms | 5.41 ms | 0.17 ms | 1.78 ms |
//! | 64→16, 1×1, 7×7 | 0.72 ms | 0.64 ms | 3.55 ms | 0.46 ms | 1.30 ms |
//!
//! So, for stride 1 without groups or dilation:
//! * the input gradient is the convolution of the output gradient with the flipped,
//!   in/out-swapped weight (padding `k − 1 − p`) where the layer has at least
//!   [`WIDE_INPUT`] input channels (flex's im2col of the many-channel output gradient then
//!   costs less than the scatter), and burn's transposed convolution otherwise;
//! * the weight gradient is `Σₙ dYₙ · U(x)ₙᵀ`, a batched matrix product with the im2col
//!   patches `U(x)` (burn's `unfold4d`; the input itself for a 1×1 kernel), where a patch has at
//!   most [`NARROW_PATCH`] values; for wider inputs the patches cost more to build than the
//!   product saves, so there it is one batched product per kernel entry with a shifted view of
//!   the padded input ([`ways::weight_grad_shifted`]) where the output has at least
//!   [`SHIFTED_MIN_PIXELS`] pixels, and burn's swapped convolution below that;
//! * the bias gradient is a per-channel sum as a product with a ones column
//!   ([`crate::ops::channel_sums`], contiguous for flex).
//!
//! Other convolutions keep burn's gradients throughout. The numbers are burn's up to float
//! rounding (the tests below compare all three gradients). It is a function of `Autodiff<B>`
//! for any inner `B`; [`register_auto_conv2d`] makes it the [`super::ConvStrategy::Auto`]
//! convolution of one backend, as xtask does for flex under `CFX_FLEX_CONV=matmul-grads`. Its
//! default there is now `cfx_linalg::conv_flex` (one product per sample, the samples over the
//! cores; docs/results.md, "Convolutions and the affine half-step on flex's cores"), which
//! removed the serial layout copies inside flex's convolution that these gradients still pay.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn::tensor::module::{conv2d, unfold4d};
use burn::tensor::ops::{ConvOptions, FloatTensor, UnfoldOptions};
use cfx_linalg::convert::{primitive, tensor};

use super::conv::{AutoConv2d, Conv2dFn};

/// Input channels from which the input gradient is a convolution with the flipped weight.
pub const WIDE_INPUT: usize = 16;
/// Largest patch (`c_in·kh·kw`) whose weight gradient is a matrix product with the patches.
pub const NARROW_PATCH: usize = 72;
/// Fewest output pixels from which a wider convolution's weight gradient is the shifted
/// product ([`ways::weight_grad_shifted`]).
pub const SHIFTED_MIN_PIXELS: usize = 196;

/// Makes [`conv2d_lean`] the [`super::ConvStrategy::Auto`] convolution of `Autodiff<B>`.
pub fn register_auto_conv2d<B: Backend>() {
    register_auto_conv2d_with::<Autodiff<B>>(conv2d_lean::<B, NoCheckpointing>);
}

/// Makes `f` the [`super::ConvStrategy::Auto`] convolution of `B` (a later call replaces it),
/// as xtask does for flex with `cfx_linalg::conv_flex`.
pub fn register_auto_conv2d_with<B: Backend>(f: Conv2dFn<B>) {
    super::registry::register(AutoConv2d::<B>(f));
}

#[derive(Debug, Clone)]
struct Saved<B: Backend> {
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    options: ConvOptions<2>,
}

/// Parents `[x, w]` or `[x, w, b]`.
#[derive(Debug)]
struct LeanConv;

impl<B: Backend, const N: usize> Backward<B, N> for LeanConv {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy: Tensor<B, 4> = tensor(grads.consume::<B>(&ops.node));
        let Saved { x, w, options } = ops.state;
        let (x, w): (Tensor<B, 4>, Tensor<B, 4>) = (tensor(x), tensor(w));
        if let Some(Some(node)) = ops.parents.get(2) {
            let [_, _, h, wd] = dy.dims();
            let ones = Tensor::<B, 2>::ones([h * wd, 1], &dy.device());
            let db = crate::ops::channel_sums(dy.clone(), &ones);
            grads.register::<B>(node.id, primitive(db));
        }
        if let Some(node) = &ops.parents[1] {
            let dw = weight_grad(x.clone(), w.clone(), dy.clone(), &options);
            grads.register::<B>(node.id, primitive(dw));
        }
        if let Some(node) = &ops.parents[0] {
            let dx = input_grad(x, w, dy, &options);
            grads.register::<B>(node.id, primitive(dx));
        }
    }
}

/// Stride 1, no dilation, no groups: the cases the matrix-product forms cover.
fn plain(options: &ConvOptions<2>) -> bool {
    options.stride == [1, 1] && options.dilation == [1, 1] && options.groups == 1
}

fn input_grad<B: Backend>(
    x: Tensor<B, 4>,
    w: Tensor<B, 4>,
    dy: Tensor<B, 4>,
    options: &ConvOptions<2>,
) -> Tensor<B, 4> {
    let [_, c_in, kh, kw] = w.dims();
    let [ph, pw] = options.padding;
    if plain(options) && c_in >= WIDE_INPUT && ph < kh && pw < kw {
        return ways::input_grad_flipped(w, dy, options.padding);
    }
    ways::input_grad_burn(x, w, dy, options)
}

fn weight_grad<B: Backend>(
    x: Tensor<B, 4>,
    w: Tensor<B, 4>,
    dy: Tensor<B, 4>,
    options: &ConvOptions<2>,
) -> Tensor<B, 4> {
    let [_, c_in, kh, kw] = w.dims();
    let [_, _, ho, wo] = dy.dims();
    let pointwise = kh * kw == 1 && options.padding == [0, 0];
    if !plain(options) {
        ways::weight_grad_burn(x, w, dy, options)
    } else if pointwise || c_in * kh * kw <= NARROW_PATCH {
        ways::weight_grad_patches(x, dy, [kh, kw], options.padding)
    } else if ho * wo >= SHIFTED_MIN_PIXELS {
        ways::weight_grad_shifted(x, dy, [kh, kw], options.padding)
    } else {
        ways::weight_grad_burn(x, w, dy, options)
    }
}

/// Each way of computing the gradients, on the inner backend, for `examples/conv_grads.rs`
/// (the table above) and the choice in [`input_grad`] and [`weight_grad`]. The matrix-product
/// ways assume stride 1, no dilation and no groups.
pub mod ways {
    use super::*;

    /// burn's: the transposed convolution of the output gradient.
    pub fn input_grad_burn<B: Backend>(
        x: Tensor<B, 4>,
        w: Tensor<B, 4>,
        dy: Tensor<B, 4>,
        options: &ConvOptions<2>,
    ) -> Tensor<B, 4> {
        tensor(B::conv2d_x_backward(
            primitive(x),
            primitive(w),
            primitive(dy),
            options.clone(),
        ))
    }

    /// The convolution of the output gradient with the flipped, in/out-swapped weight
    /// (padding `k − 1 − p`, so `p < k`).
    pub fn input_grad_flipped<B: Backend>(
        w: Tensor<B, 4>,
        dy: Tensor<B, 4>,
        [ph, pw]: [usize; 2],
    ) -> Tensor<B, 4> {
        let [_, _, kh, kw] = w.dims();
        let flipped = w.flip([2, 3]).swap_dims(0, 1);
        let padding = [kh - 1 - ph, kw - 1 - pw];
        conv2d(
            dy,
            flipped,
            None,
            ConvOptions::new([1, 1], padding, [1, 1], 1),
        )
    }

    /// burn's: the convolution of the batch-swapped input with the batch-swapped output
    /// gradient.
    pub fn weight_grad_burn<B: Backend>(
        x: Tensor<B, 4>,
        w: Tensor<B, 4>,
        dy: Tensor<B, 4>,
        options: &ConvOptions<2>,
    ) -> Tensor<B, 4> {
        tensor(B::conv2d_weight_backward(
            primitive(x),
            primitive(w),
            primitive(dy),
            options.clone(),
        ))
    }

    /// `Σₙ dYₙ · U(x)ₙᵀ` with the im2col patches `U(x)` (burn's `unfold4d`; the input itself
    /// for a 1×1 kernel without padding).
    pub fn weight_grad_patches<B: Backend>(
        x: Tensor<B, 4>,
        dy: Tensor<B, 4>,
        [kh, kw]: [usize; 2],
        padding: [usize; 2],
    ) -> Tensor<B, 4> {
        let [n, c_in, _, _] = x.dims();
        let [_, c_out, ho, wo] = dy.dims();
        let patches = if kh * kw == 1 && padding == [0, 0] {
            x.reshape([n, c_in, ho * wo])
        } else {
            unfold4d(x, [kh, kw], UnfoldOptions::new([1, 1], padding, [1, 1]))
        };
        dy.reshape([n, c_out, ho * wo])
            .matmul(patches.swap_dims(1, 2))
            .sum_dim(0)
            .reshape([c_out, c_in, kh, kw])
    }

    /// The weight gradient of a stride-1 convolution as one batched matrix product per kernel
    /// position, without patches: with the input zero-padded (plus one row, so that the last
    /// window stays inside) and flattened per channel, and the output gradient padded on the right
    /// to the same row length `wp`, the input values that meet output position `q = h·wp + w`
    /// through kernel entry `(i, j)` are those at `q + i·wp + j`. So
    /// `dW[:, :, i, j] = Σₙ dYₙ · windowᵢⱼ(xₙ)ᵀ`, each window a view of the padded input, and the
    /// padding's zeros meet only zeros.
    pub fn weight_grad_shifted<B: Backend>(
        x: Tensor<B, 4>,
        dy: Tensor<B, 4>,
        [kh, kw]: [usize; 2],
        [ph, pw]: [usize; 2],
    ) -> Tensor<B, 4> {
        let [n, c_in, h, w] = x.dims();
        let [_, c_out, ho, wo] = dy.dims();
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let device = x.device();
        let padded = Tensor::<B, 4>::zeros([n, c_in, hp + 1, wp], &device)
            .slice_assign([0..n, 0..c_in, ph..ph + h, pw..pw + w], x)
            .reshape([n, c_in, (hp + 1) * wp]);
        let rows = ho * wp;
        let dy = Tensor::<B, 4>::zeros([n, c_out, ho, wp], &device)
            .slice_assign([0..n, 0..c_out, 0..ho, 0..wo], dy)
            .reshape([n, c_out, rows]);
        let per_entry = (0..kh * kw)
            .map(|e| {
                let window = padded.clone().narrow(2, (e / kw) * wp + e % kw, rows);
                dy.clone()
                    .matmul(window.swap_dims(1, 2))
                    .sum_dim(0)
                    .reshape([c_out, c_in, 1])
            })
            .collect();
        Tensor::cat(per_entry, 2).reshape([c_out, c_in, kh, kw])
    }
}

/// `conv2d(x, w, b)` on `Autodiff<B, C>` with the gradients above.
pub fn conv2d_lean<B: Backend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 4>,
    w: Tensor<Autodiff<B, C>, 4>,
    b: Option<Tensor<Autodiff<B, C>, 1>>,
    options: ConvOptions<2>,
) -> Tensor<Autodiff<B, C>, 4> {
    let xp = primitive(x);
    let wp = primitive(w);
    let saved = Saved {
        x: xp.primitive.clone(),
        w: wp.primitive.clone(),
        options: options.clone(),
    };
    let (xi, wi) = (tensor(xp.primitive), tensor(wp.primitive));
    let out = match b {
        None => {
            let y = primitive(conv2d::<B>(xi, wi, None, options));
            let kind = LeanConv
                .prepare::<C>([xp.node, wp.node])
                .compute_bound()
                .stateful();
            cfx_linalg::finish_stateful(kind, saved, y)
        }
        Some(b) => {
            let bp = primitive(b);
            let y = primitive(conv2d::<B>(xi, wi, Some(tensor(bp.primitive)), options));
            let kind = LeanConv
                .prepare::<C>([xp.node, wp.node, bp.node])
                .compute_bound()
                .stateful();
            cfx_linalg::finish_stateful(kind, saved, y)
        }
    };
    tensor(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TB, random};

    type Ad = Autodiff<TB>;

    /// Output and the gradients of `Σ y·c` with respect to x, w and b.
    fn pass(
        f: Conv2dFn<Ad>,
        [n, c_in, c_out, size, k, stride, pad]: [usize; 7],
        bias: bool,
    ) -> Vec<Tensor<TB, 4>> {
        let x = Tensor::<Ad, 4>::from_inner(random([n, c_in, size, size], 1)).require_grad();
        let w = Tensor::<Ad, 4>::from_inner(random([c_out, c_in, k, k], 2)).require_grad();
        let b = Tensor::<Ad, 4>::from_inner(random([1, 1, 1, c_out], 3))
            .reshape([c_out])
            .require_grad();
        let options = ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1);
        let y = f(x.clone(), w.clone(), bias.then(|| b.clone()), options);
        let c = Tensor::<Ad, 4>::from_inner(random(y.dims(), 4));
        let grads = (y.clone() * c).sum().backward();
        let mut out = vec![y.inner(), x.grad(&grads).unwrap(), w.grad(&grads).unwrap()];
        if bias {
            out.push(b.grad(&grads).unwrap().reshape([1, 1, 1, c_out]));
        }
        out
    }

    /// Every branch: narrow and wide inputs (both input-gradient ways), small and large
    /// patches on small and large images (all three weight-gradient ways), 1×1, stride 2 and
    /// `valid` padding.
    #[test]
    fn gradients_match_burns() {
        let shapes = [
            [3, 2, 32, 6, 3, 1, 1],
            [3, 32, 32, 6, 3, 1, 1],
            [2, 8, 16, 5, 3, 1, 1],
            [2, 20, 4, 5, 1, 1, 0],
            [2, 16, 8, 7, 3, 2, 1],
            [2, 16, 8, 7, 3, 1, 0],
            [2, 12, 6, 14, 3, 1, 1],
            [2, 12, 6, 16, 3, 1, 0],
        ];
        for shape in shapes {
            for bias in [false, true] {
                let ours = pass(conv2d_lean::<TB, NoCheckpointing>, shape, bias);
                let burns = pass(burn::tensor::module::conv2d, shape, bias);
                let names = ["y", "dx", "dw", "db"];
                for (name, (a, b)) in names.iter().zip(ours.into_iter().zip(burns)) {
                    let scale = b.clone().abs().max().into_scalar() as f64;
                    let err = crate::testing::max_abs_diff(a, b);
                    assert!(
                        err <= 1e-5 * scale.max(1.0),
                        "{shape:?} bias {bias}: {name} differs by {err} (scale {scale})"
                    );
                }
            }
        }
    }
}
