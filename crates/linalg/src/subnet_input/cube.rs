//! The subnet input on `Autodiff<CubeBackend>` (cuda, wgpu): one CubeCL kernel forward, one
//! backward.
//!
//! * forward: one elementwise kernel over the `N·H·W·P` outputs reads `x` by its strides and
//!   writes `relu(x[:, ..P])` contiguous in `[N, H, W, P]` order, handed on as an `[N, P, H, W]`
//!   view: burn-cubecl's convolutions permute their input to channels-last and copy it unless
//!   it already lies so;
//! * backward: one elementwise kernel over all of `x` writes `∂x = gy·[x > 0]` on the leading
//!   channels and 0 on the others, reading `gy` by its strides (a convolution's data gradient,
//!   a channels-last view).
//!
//! The ReLU's gradient at 0 is 0, as burn's `relu` and `cfx_flows::nn::mode::relu` have it.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::CubeDim;

use super::SubnetInput;
use crate::convert::{empty_like, primitive, tensor};
use crate::cube_util::{Ad, UNITS, elementwise_cubes};
use crate::finish_stateful;
use kernels::{forward_kernel, grad_kernel};

mod kernels {
    use crate::cube_util::{at, coordinates};
    use cubecl::prelude::*;

    #[cube(launch)]
    pub(super) fn forward_kernel<F: Float>(
        x: &Tensor<F>,     // [N, C, H, W]
        y: &mut Tensor<F>, // [N, H, W, P], contiguous
        #[comptime] relu: bool,
        #[define(F)] _dtype: StorageType,
    ) {
        let (height, width, channels) = (y.shape(1), y.shape(2), y.shape(3));
        let total = y.shape(0) * height * width * channels;
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = ABSOLUTE_POS_X as usize;
        while i < total {
            let c = i % channels;
            let w = (i / channels) % width;
            let h = (i / (channels * width)) % height;
            let n = i / (channels * width * height);
            let v = x[at::<F>(x, n, c, h, w)];
            if relu && v <= F::new(0.0) {
                y[i] = F::new(0.0);
            } else {
                y[i] = v;
            }
            i += step;
        }
    }

    #[cube(launch)]
    pub(super) fn grad_kernel<F: Float>(
        x: &Tensor<F>,      // [N, C, H, W]
        gy: &Tensor<F>,     // [N, P, H, W]
        dx: &mut Tensor<F>, // [N, C, H, W], contiguous
        #[comptime] relu: bool,
        #[define(F)] _dtype: StorageType,
    ) {
        let leading = gy.shape(1);
        let total = x.shape(0) * x.shape(1) * x.shape(2) * x.shape(3);
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = ABSOLUTE_POS_X as usize;
        while i < total {
            let (n, c, h, w) = coordinates(i, x.shape(1), x.shape(2), x.shape(3));
            if c < leading {
                if relu && x[at::<F>(x, n, c, h, w)] <= F::new(0.0) {
                    dx[i] = F::new(0.0);
                } else {
                    dx[i] = gy[at::<F>(gy, n, c, h, w)];
                }
            } else {
                dx[i] = F::new(0.0);
            }
            i += step;
        }
    }
}

#[derive(Debug, Clone)]
struct Saved<R: CubeRuntime> {
    x: CubeTensor<R>,
    relu: bool,
}

#[derive(Debug)]
struct SubnetInputBackward;

impl<R, F, I, BT> Backward<CubeBackend<R, F, I, BT>, 1> for SubnetInputBackward
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type State = Saved<R>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
        let [node_x] = ops.parents;
        let gy = grads.consume::<B<R, F, I, BT>>(&ops.node);
        let Some(node) = node_x else { return };
        let Saved { x, relu } = ops.state;
        let [n, c, h, w] = x.shape().dims::<4>();
        let (client, dtype) = (x.client.clone(), x.dtype);
        let dx = empty_like(&x, &[n, c, h, w]);
        grad_kernel::launch::<R>(
            &client,
            elementwise_cubes(n * c * h * w),
            CubeDim::new_1d(UNITS as u32),
            x.into_tensor_arg(),
            gy.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            relu,
            dtype.into(),
        );
        grads.register::<B<R, F, I, BT>>(node.id, dx);
    }
}

/// The subnet input on `Autodiff<CubeBackend>`: the kernels above, with their backward pass.
/// Registered by xtask for cuda and wgpu (`cfx_flows::nn::register_subnet_input`).
pub fn subnet_input_cube<R, F, I, BT, C>(
    input: SubnetInput<Ad<R, F, I, BT, C>>,
) -> Tensor<Ad<R, F, I, BT, C>, 4>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
    C: CheckpointStrategy,
{
    let [n, c, h, w] = input.x.dims();
    let p = input.channels;
    assert!(
        (1..=c).contains(&p),
        "subnet input kernels: {p} leading channels of x {:?}",
        [n, c, h, w]
    );
    let xp = primitive(input.x);
    let x = xp.primitive;
    let (client, dtype) = (x.client.clone(), x.dtype);
    let y = empty_like(&x, &[n, h, w, p]);
    forward_kernel::launch::<R>(
        &client,
        elementwise_cubes(n * h * w * p),
        CubeDim::new_1d(UNITS as u32),
        x.clone().into_tensor_arg(),
        y.clone().into_tensor_arg(),
        input.relu,
        dtype.into(),
    );
    let y = burn_cubecl::ops::permute(y, &[0, 3, 1, 2]);
    let saved = Saved {
        x,
        relu: input.relu,
    };
    tensor(finish_stateful(
        SubnetInputBackward
            .prepare::<C>([xp.node])
            .compute_bound()
            .stateful(),
        saved,
        y,
    ))
}
