//! The fixed per-channel affine map on `Autodiff<CubeBackend>` (cuda, wgpu): one elementwise
//! CubeCL kernel forward (`y = x·exp(log_scale[c]) + offset[c]`) and one backward
//! (`∂x = gy·exp(log_scale[c])`). Both read their tensor operands by their strides and write
//! contiguous outputs (`crate::fasth::cube` says why).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::CubeDim;

use super::ChannelAffine;
use crate::convert::{empty_like, primitive, tensor};
use crate::cube_util::{Ad, UNITS, elementwise_cubes};
use crate::finish_stateful;
use kernels::{backward_kernel, forward_kernel};

mod kernels {
    use crate::cube_util::{at, coordinates};
    use cubecl::prelude::*;

    #[cube(launch)]
    pub(super) fn forward_kernel<F: Float>(
        x: &Tensor<F>,         // [N, C, H, W]
        log_scale: &Tensor<F>, // [C]
        offset: &Tensor<F>,    // [C]
        y: &mut Tensor<F>,     // [N, C, H, W], contiguous
        #[define(F)] _dtype: StorageType,
    ) {
        let total = x.shape(0) * x.shape(1) * x.shape(2) * x.shape(3);
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = ABSOLUTE_POS_X as usize;
        while i < total {
            let (n, c, h, w) = coordinates(i, x.shape(1), x.shape(2), x.shape(3));
            let scale = F::exp(log_scale[c * log_scale.stride(0)]);
            y[i] = x[at::<F>(x, n, c, h, w)] * scale + offset[c * offset.stride(0)];
            i += step;
        }
    }

    #[cube(launch)]
    pub(super) fn backward_kernel<F: Float>(
        gy: &Tensor<F>,        // [N, C, H, W]
        log_scale: &Tensor<F>, // [C]
        dx: &mut Tensor<F>,    // [N, C, H, W], contiguous
        #[define(F)] _dtype: StorageType,
    ) {
        let total = gy.shape(0) * gy.shape(1) * gy.shape(2) * gy.shape(3);
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = ABSOLUTE_POS_X as usize;
        while i < total {
            let (n, c, h, w) = coordinates(i, gy.shape(1), gy.shape(2), gy.shape(3));
            dx[i] = gy[at::<F>(gy, n, c, h, w)] * F::exp(log_scale[c * log_scale.stride(0)]);
            i += step;
        }
    }
}

#[derive(Debug)]
struct ChannelAffineBackward;

impl<R, F, I, BT> Backward<CubeBackend<R, F, I, BT>, 1> for ChannelAffineBackward
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    /// The scales.
    type State = CubeTensor<R>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
        let [node_x] = ops.parents;
        let gy = grads.consume::<B<R, F, I, BT>>(&ops.node);
        let Some(node) = node_x else { return };
        let log_scale = ops.state;
        let [n, c, h, w] = gy.shape().dims::<4>();
        let (client, dtype) = (gy.client.clone(), gy.dtype);
        let dx = empty_like(&gy, &[n, c, h, w]);
        backward_kernel::launch::<R>(
            &client,
            elementwise_cubes(n * c * h * w),
            CubeDim::new_1d(UNITS as u32),
            gy.into_tensor_arg(),
            log_scale.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            dtype.into(),
        );
        grads.register::<B<R, F, I, BT>>(node.id, dx);
    }
}

/// The fixed per-channel affine map on `Autodiff<CubeBackend>`: the kernels above, with their
/// backward pass. Registered by xtask for cuda and wgpu (`cfx_flows::blocks::ActNorm::apply`
/// takes it for fixed scales).
pub fn channel_affine_cube<R, F, I, BT, C>(
    map: ChannelAffine<Ad<R, F, I, BT, C>>,
) -> Tensor<Ad<R, F, I, BT, C>, 4>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
    C: CheckpointStrategy,
{
    let [n, c, h, w] = map.x.dims();
    assert!(
        map.log_scale.dims() == [c] && map.offset.dims() == [c],
        "channel affine kernels: scales {:?} and offsets {:?} for x {:?}",
        map.log_scale.dims(),
        map.offset.dims(),
        [n, c, h, w]
    );
    assert!(
        !map.log_scale.is_require_grad() && !map.offset.is_require_grad(),
        "channel affine kernels: the map is fixed, its scales and offsets take no gradient"
    );
    let xp = primitive(map.x);
    let x = xp.primitive;
    let log_scale = primitive(map.log_scale).primitive;
    let offset = primitive(map.offset).primitive;
    let (client, dtype) = (x.client.clone(), x.dtype);
    let y = empty_like(&x, &[n, c, h, w]);
    forward_kernel::launch::<R>(
        &client,
        elementwise_cubes(n * c * h * w),
        CubeDim::new_1d(UNITS as u32),
        x.into_tensor_arg(),
        log_scale.clone().into_tensor_arg(),
        offset.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        dtype.into(),
    );
    tensor(finish_stateful(
        ChannelAffineBackward
            .prepare::<C>([xp.node])
            .compute_bound()
            .stateful(),
        log_scale,
        y,
    ))
}
