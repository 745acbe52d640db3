//! Shape shuffles and small linear maps shared by several blocks.

use burn::prelude::*;

/// `[N, C, H, W] → [N, 4C, H/2, W/2]`; output channel `4c + 2dy + dx` holds pixel `(dy, dx)` of
/// each 2×2 patch of channel `c` (the order of IB-INN's fixed "reshape" convolution kernels).
pub fn space_to_depth<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h / 2, 2, w / 2, 2])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([n, c * 4, h / 2, w / 2])
}

/// Inverse of [`space_to_depth`].
pub fn depth_to_space<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c4, h, w] = x.dims();
    x.reshape([n, c4 / 4, 2, 2, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([n, c4 / 4, h * 2, w * 2])
}

/// A 1×1 convolution without bias: `y[:, i] = Σ_j w[i, j] x[:, j]` at every pixel.
pub fn channel_mix<B: Backend>(x: Tensor<B, 4>, w: Tensor<B, 2>) -> Tensor<B, 4> {
    let [n, c, h, wd] = x.dims();
    let w = w.unsqueeze_dim::<3>(0).expand([n, c, c]);
    w.matmul(x.reshape([n, c, h * wd])).reshape([n, c, h, wd])
}

/// A per-channel vector `[C]` as an `[N, C, 1, 1]` tensor for broadcasting against `[N, C, H, W]`.
///
/// Materialised over the batch rather than reshaped to `[1, C, 1, 1]`: flex (burn 0.21) has a SIMD
/// path for an operand that broadcasts over trailing dimensions only, and walks any other
/// broadcast element by element through a strided iterator — half of the CPU IB-INN step went
/// there. `N·C` values are nothing next to the `N·C·H·W` they scale.
pub fn per_channel<B: Backend>(v: Tensor<B, 1>, n: usize) -> Tensor<B, 4> {
    let c = v.dims()[0];
    v.reshape([1, c]).repeat_dim(0, n).reshape([n, c, 1, 1])
}

/// A square-kernel convolution (groups 1, dilation 1) as an unfold and one matrix product:
/// `y[n] = W · U(x)[n]` with `W` the weight as `[O, C·k²]` and `U(x)[n]` the `[C·k², L]`
/// patches of sample `n` (what burn's `nn::Conv2d` computes, same weight layout).
///
/// Why it exists: differentiated by autodiff, the weight gradient here is a batched matrix
/// product `dY · Uᵀ` summed over the batch, where burn-cubecl without autotune computes
/// burn's `conv2d` weight gradient with a direct kernel that took half of the CUDA IB-INN
/// step's backward time (docs/results.md, "Where the CUDA step time goes"). The patches come
/// from a depthwise convolution with a fixed one-hot kernel (one output channel per input
/// channel and kernel position), so its backward is a depthwise transposed convolution and
/// needs no weight gradient. `cargo xtask bench conv` times both ways on each backend; on
/// flex burn's own `conv2d` is faster (docs/results.md). The IB-INN subnets take this way when
/// [`crate::nn::set_conv_strategy`] asks for it (`CFX_CONV=unfold` for xtask).
pub fn conv2d_unfold<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: usize,
    padding: usize,
) -> Tensor<B, 4> {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    let [n, c, _, _] = x.dims();
    let [o, c_w, kh, kw] = weight.dims();
    assert_eq!(
        c, c_w,
        "conv2d_unfold: input has {c} channels, weight {c_w}"
    );
    let k = kh * kw;
    let patches = if k == 1 && stride == 1 && padding == 0 {
        // A 1×1 convolution: the patches are the input itself.
        x
    } else {
        let one_hot = Tensor::<B, 2>::eye(k, &x.device())
            .reshape([1, k * k])
            .repeat_dim(0, c)
            .reshape([c * k, 1, kh, kw]);
        conv2d(
            x,
            one_hot,
            None,
            ConvOptions::new([stride; 2], [padding; 2], [1, 1], c),
        )
    };
    let [_, ck, ho, wo] = patches.dims();
    let w = weight.reshape([1, o, ck]).expand([n, o, ck]);
    let y = w
        .matmul(patches.reshape([n, ck, ho * wo]))
        .reshape([n, o, ho, wo]);
    match bias {
        Some(b) => y + per_channel(b, n),
        None => y,
    }
}

/// `Σ_{n,h,w} t[n, c, h, w]·weights[h·w]` per channel `c`, as a product with the `[H·W, 1]`
/// column `weights` and a sum over the batch. Batch norm's statistics: a column of ones or of
/// `1/(N·H·W)`. Why not `sum_dim`: this backward hands the next op a contiguous gradient, where
/// `sum_dim`'s hands on a broadcast view that flex walks element by element (1.35× on the CPU
/// step). burn-cuda runs this f32 product in TF32: inputs rounded to 2⁻¹¹, averaged over N·H·W
/// terms, well below batch norm's own noise.
pub fn channel_sums<B: Backend>(t: Tensor<B, 4>, weights: &Tensor<B, 2>) -> Tensor<B, 1> {
    let [n, c, h, w] = t.dims();
    t.reshape([n * c, h * w])
        .matmul(weights.clone())
        .reshape([n, c])
        .sum_dim(0)
        .reshape([c])
}

/// Sum over all but the batch dimension.
pub fn sum_per_sample<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 1> {
    let n = x.dims()[0];
    x.reshape([n as i32, -1]).sum_dim(1).reshape([n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{TB, assert_close, random};

    #[test]
    fn space_to_depth_orders_patch_pixels_per_channel() {
        let d = Default::default();
        let x = Tensor::<TB, 1, Int>::arange(0..32, &d)
            .float()
            .reshape([1, 2, 4, 4]);
        let y = space_to_depth(x.clone());
        assert_eq!(y.dims(), [1, 8, 2, 2]);
        let v: Vec<f32> = y.clone().into_data().to_vec().unwrap();
        // channel 0 = top-left pixels of channel 0's patches: x[0,0,{0,2},{0,2}] = 0, 2, 8, 10.
        assert_eq!(&v[0..4], &[0.0, 2.0, 8.0, 10.0]);
        // channel 1 = top-right: 1, 3, 9, 11; channel 4 = channel 1's top-left: 16, 18, 24, 26.
        assert_eq!(&v[4..8], &[1.0, 3.0, 9.0, 11.0]);
        assert_eq!(&v[16..20], &[16.0, 18.0, 24.0, 26.0]);
        assert_close(depth_to_space(y), x, 0.0);
    }

    /// Outputs and all three gradients equal burn's `conv2d`, at stride 1 and 2.
    #[test]
    fn conv2d_unfold_matches_burns_conv2d() {
        use crate::test_util::{TAd, random_on};
        use burn::tensor::module::conv2d;
        use burn::tensor::ops::ConvOptions;
        let d = Default::default();
        for (stride, padding, k) in [(1, 1, 3), (2, 1, 3), (1, 0, 1)] {
            let x = random_on::<TAd, 4>([2, 3, 6, 6], 1).require_grad();
            let w = random_on::<TAd, 4>([4, 3, k, k], 2).require_grad();
            let b = Tensor::<TAd, 1>::from_floats([0.1, -0.2, 0.3, 0.0], &d).require_grad();
            let ours = conv2d_unfold(x.clone(), w.clone(), Some(b.clone()), stride, padding);
            let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
            let theirs = conv2d(x.clone(), w.clone(), Some(b.clone()), options);
            assert_eq!(ours.dims(), theirs.dims());
            assert_close(ours.clone(), theirs.clone(), 1e-4);
            // A loss that weights every output differently, so that no gradient is uniform.
            let weights = random_on::<TAd, 4>(ours.dims(), 3);
            let g1 = (ours * weights.clone()).sum().backward();
            let g2 = (theirs * weights).sum().backward();
            assert_close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), 1e-4);
            assert_close(w.grad(&g1).unwrap(), w.grad(&g2).unwrap(), 1e-4);
            assert_close(b.grad(&g1).unwrap(), b.grad(&g2).unwrap(), 1e-4);
        }
    }

    #[test]
    fn channel_mix_is_a_per_pixel_matmul() {
        let d = Default::default();
        let x = random::<4>([2, 3, 2, 2], 1);
        let w =
            Tensor::<TB, 2>::from_floats([[1.0, 0.0, 2.0], [0.0, -1.0, 0.0], [0.5, 0.5, 0.5]], &d);
        let y = channel_mix(x.clone(), w);
        let x0 = x.clone().narrow(1, 0, 1);
        let x1 = x.clone().narrow(1, 1, 1);
        let x2 = x.narrow(1, 2, 1);
        assert_close(
            y.clone().narrow(1, 0, 1),
            x0.clone() + x2.clone() * 2.0,
            1e-6,
        );
        assert_close(y.clone().narrow(1, 1, 1), -x1.clone(), 1e-6);
        assert_close(y.narrow(1, 2, 1), (x0 + x1 + x2) * 0.5, 1e-6);
    }
}
