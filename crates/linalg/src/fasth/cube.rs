//! FastH's two sequential inner loops as CubeCL kernels, for `CubeBackend` (cuda and wgpu).
//!
//! Without them each loop is t dependent launches of small tensor ops per pass (spec §5.3: the
//! op is launch-bound at small d). With them:
//! * the WY recurrence is two launches: the Gram matrix `Y Yᵀ` of each group (one unit per
//!   entry), then `w_k[i] = y_k[i] − 2 Σ_{l<k} (y_l·y_k) w_l[i]`, independent for every
//!   coordinate i, so each unit owns one coordinate of one group and needs no synchronisation.
//!   The Gram matrix is not a backend matmul because burn-cuda's f32 matmul runs on TF32 tensor
//!   cores (measured: 6e-4 relative error on a length-7 dot product), which would put that
//!   error into every `W` and make the kernel untestable at f32 precision;
//! * step 2 of the backward pass is one launch with one cube per group (as in the authors'
//!   `compute_bucket_j`), alternating between units over columns (the reductions over d:
//!   `vᵀa`, `vᵀg`) and units over rows (the reductions over m that give `∂L/∂v`), with a
//!   storage barrier between the phases.
//!
//! The group sweeps stay on the backend's matmul, which is already tuned (and on CUDA rounds
//! through TF32: FastH's output differs from the CPU's by ~1e-3 relative there, see the kernel
//! test).
//!
//! Every tensor a kernel writes is allocated *contiguous*: the runtime's default allocation may
//! pad rows (pitched memory on CUDA for rows that are not a multiple of the alignment), and
//! these kernels index linearly. Getting that wrong only shows on CUDA at rows that are not a
//! multiple of the pitch (docs/results.md, "The CubeCL kernels: a fault found and fixed").

use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::LinalgBackend;
use crate::convert::{empty_like, primitive, tensor};
use kernels::{gram_kernel, vector_grads_kernel, wy_kernel};

const UNITS: u32 = 256;

mod kernels {
    use cubecl::prelude::*;

    #[cube(launch)]
    pub(super) fn gram_kernel<F: Float>(
        y: &Tensor<F>,        // [G, t, d]
        gram: &mut Tensor<F>, // [G, t, t]
        #[define(F)] _dtype: StorageType,
    ) {
        let grp = CUBE_POS_Y as usize;
        let entry = ABSOLUTE_POS_X as usize;
        let t = y.shape(1);
        let d = y.shape(2);
        if entry >= t * t {
            terminate!();
        }
        let a = grp * t * d + (entry / t) * d;
        let b = grp * t * d + (entry % t) * d;
        let mut acc = F::new(0.0);
        for i in 0..d {
            acc += y[a + i] * y[b + i];
        }
        gram[grp * t * t + entry] = acc;
    }

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
        let y = into_contiguous(y);
        let [groups, t, d] = y.shape().dims::<3>();
        let (client, dtype) = (y.client.clone(), y.dtype);
        let gram = empty_like(&y, &[groups, t, t]);
        let w = empty_like(&y, &[groups, t, d]);
        gram_kernel::launch::<R>(
            &client,
            CubeCount::Static(((t * t) as u32).div_ceil(UNITS), groups as u32, 1),
            CubeDim::new_1d(UNITS),
            y.clone().into_tensor_arg(),
            gram.clone().into_tensor_arg(),
            dtype.into(),
        );
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
        let (client, dtype) = (v.client.clone(), v.dtype);
        let coef = empty_like(&v, &[groups, 2, m]);
        let dv = empty_like(&v, &[groups, t, d]);
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
