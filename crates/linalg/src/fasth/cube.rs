//! FastH's two sequential inner loops as CubeCL kernels, for `CubeBackend` (cuda and wgpu).
//!
//! Without them each loop is t dependent launches of small tensor ops per pass (spec §5.3: the
//! op is launch-bound at small d). With them:
//! * the WY recurrence is one launch: given the Gram matrix `Y Yᵀ` of each group (one batched
//!   matmul), `w_k[i] = y_k[i] − 2 Σ_{l<k} (y_l·y_k) w_l[i]` is independent for every
//!   coordinate i, so each unit owns one coordinate of one group and needs no synchronisation;
//! * step 2 of the backward pass is one launch with one cube per group (as in the authors'
//!   `compute_bucket_j`), alternating between units over columns (the reductions over d:
//!   `vᵀa`, `vᵀg`) and units over rows (the reductions over m that give `∂L/∂v`), with a
//!   storage barrier between the phases.
//!
//! The group sweeps stay on the backend's matmul, which is already tuned.

use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::LinalgBackend;
use crate::convert::{primitive, tensor};
use kernels::{vector_grads_kernel, wy_kernel};

const UNITS: u32 = 256;

mod kernels {
    use cubecl::prelude::*;

    #[cube(launch)]
    pub(super) fn wy_kernel<F: Float>(
        y: &Tensor<F>,     // [G, t, d]
        gram: &Tensor<F>,  // [G, t, t]
        w: &mut Tensor<F>, // [G, t, d]
        #[define(F)] _dtype: StorageType,
    ) {
        let grp = CUBE_POS_Y as usize;
        let i = ABSOLUTE_POS_X as usize;
        let t = y.shape(1);
        let d = y.shape(2);
        if i >= d {
            terminate!();
        }
        let base = grp * t * d;
        let gbase = grp * t * t;
        for k in 0..t {
            let mut acc = y[base + k * d + i];
            for l in 0..k {
                acc -= F::new(2.0) * gram[gbase + l * t + k] * w[base + l * d + i];
            }
            w[base + k * d + i] = acc;
        }
    }

    #[cube(launch)]
    pub(super) fn vector_grads_kernel<F: Float>(
        v: &Tensor<F>,        // [G, t, d] raw vectors
        s: &Tensor<F>,        // [G, t]
        a: &mut Tensor<F>,    // [G, d, m] group outputs, overwritten
        g: &mut Tensor<F>,    // [G, d, m] their gradients, overwritten
        coef: &mut Tensor<F>, // [G, 2, m] scratch: α, β
        dv: &mut Tensor<F>,   // [G, t, d]
        #[define(F)] _dtype: StorageType,
    ) {
        let grp = CUBE_POS_X as usize;
        let unit = UNIT_POS_X as usize;
        let units = CUBE_DIM_X as usize;
        let t = v.shape(1);
        let d = v.shape(2);
        let m = a.shape(2);
        let vbase = grp * t * d;
        let abase = grp * d * m;
        let cbase = grp * 2 * m;
        for j in 0..t {
            let sj = s[grp * t + j];
            let vj = vbase + j * d;
            // Columns: undo the reflection on a, and α = vᵀa (after), β = vᵀg.
            let mut l = unit;
            while l < m {
                let mut c = F::new(0.0);
                let mut beta = F::new(0.0);
                for i in 0..d {
                    let vi = v[vj + i];
                    c += vi * a[abase + i * m + l];
                    beta += vi * g[abase + i * m + l];
                }
                let mut alpha = F::new(0.0);
                for i in 0..d {
                    let vi = v[vj + i];
                    let idx = abase + i * m + l;
                    let updated = a[idx] - sj * vi * c;
                    a[idx] = updated;
                    alpha += vi * updated;
                }
                coef[cbase + l] = alpha;
                coef[cbase + m + l] = beta;
                l += units;
            }
            sync_storage();
            // Rows: ∂L/∂v_i = −s (Σ_l g_il α_l + a_il β_l − s (α·β) v_i), then g ← H g.
            let mut i = unit;
            while i < d {
                let vi = v[vj + i];
                let mut acc = F::new(0.0);
                let mut alpha_beta = F::new(0.0);
                for l in 0..m {
                    let alpha = coef[cbase + l];
                    let beta = coef[cbase + m + l];
                    let idx = abase + i * m + l;
                    acc += g[idx] * alpha + a[idx] * beta;
                    alpha_beta += alpha * beta;
                }
                dv[vj + i] = F::new(0.0) - sj * (acc - sj * alpha_beta * vi);
                for l in 0..m {
                    let idx = abase + i * m + l;
                    g[idx] = g[idx] - sj * vi * coef[cbase + m + l];
                }
                i += units;
            }
            sync_storage();
        }
    }
}

impl<R, F, I, BT> LinalgBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn fasth_wy(y: FloatTensor<Self>) -> FloatTensor<Self> {
        let yt: Tensor<Self, 3> = tensor(y.clone());
        let gram = into_contiguous(primitive(yt.clone().matmul(yt.swap_dims(1, 2))));
        let y = into_contiguous(y);
        let [groups, _, d] = y.shape().dims::<3>();
        let w = empty_device_dtype::<R>(y.client.clone(), y.device.clone(), y.shape(), y.dtype);
        let dtype = y.dtype;
        let client = y.client.clone();
        wy_kernel::launch::<R>(
            &client,
            CubeCount::Static((d as u32).div_ceil(UNITS), groups as u32, 1),
            CubeDim::new_1d(UNITS),
            y.into_tensor_arg(),
            gram.into_tensor_arg(),
            w.clone().into_tensor_arg(),
            dtype.into(),
        );
        w
    }

    fn fasth_vector_grads(
        v: FloatTensor<Self>,
        s: FloatTensor<Self>,
        a: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // The kernel works in place: give it its own copies (`a`, `g` are slices of the
        // snapshots, which may share storage).
        let copy = |x: FloatTensor<Self>| {
            let x: Tensor<Self, 3> = tensor(x);
            into_contiguous(primitive(x.clone().mul_scalar(1.0)))
        };
        let v = into_contiguous(v);
        let s = into_contiguous(s);
        let a = copy(a);
        let g = copy(g);
        let [groups, t, d] = v.shape().dims::<3>();
        let m = a.shape().dims::<3>()[2];
        let client = v.client.clone();
        let device = v.device.clone();
        let dtype = v.dtype;
        let coef =
            empty_device_dtype::<R>(client.clone(), device.clone(), [groups, 2, m].into(), dtype);
        let dv = empty_device_dtype::<R>(client.clone(), device, [groups, t, d].into(), dtype);
        vector_grads_kernel::launch::<R>(
            &client,
            CubeCount::Static(groups as u32, 1, 1),
            CubeDim::new_1d(UNITS),
            v.into_tensor_arg(),
            s.into_tensor_arg(),
            a.into_tensor_arg(),
            g.into_tensor_arg(),
            coef.into_tensor_arg(),
            dv.clone().into_tensor_arg(),
            dtype.into(),
        );
        dv
    }
}
