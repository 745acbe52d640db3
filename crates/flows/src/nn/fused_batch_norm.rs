//! Training-mode batch norm as one autodiff op with its closed-form backward pass.
//!
//! Why: differentiated op by op, the batch norm of [`super::mode::batch_norm`] is about 22
//! kernel launches forward and 42 backward, and the IB-INN has 100 of them (two in each of its
//! 50 subnets): the larger part of the ~11 000 launches of a GPU training step's forward and
//! backward passes, which are launch-bound (docs/results.md, "Batch norm as one op"). Here the
//! forward is 13 launches (plus the running-statistics update's 6, unchanged) and the backward
//! is the textbook gradient (Ioffe & Szegedy 2015, §3), with `x̂ = (x − μ)/σ` and `M = N·H·W`
//! values per channel,
//!
//! ```text
//! ∂β = Σ dy      ∂γ = Σ dy·x̂      ∂x = γ/σ · (dy − Σdy/M − x̂ · Σ(dy·x̂)/M)
//! ```
//!
//! computed from the `x̂` the forward pass keeps, in 14 launches. The numbers are those of the
//! op-by-op version up to float rounding (`tests` below checks outputs and all three
//! gradients).
//!
//! It is a function of `Autodiff<B>` for any inner backend `B`, which generic model code cannot
//! name; [`register_fused_batch_norm`] makes it the training batch norm of one backend
//! (`super::registry`), and [`super::mode::batch_norm`] uses it wherever one is registered.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use cfx_linalg::batch_norm::{BatchNormStep, BatchNormStepOutput, BatchNormTrainFn};
use cfx_linalg::convert::{primitive, tensor};

/// How per-channel operands meet `[N, C, H, W]` tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerChannel {
    /// As `[1, C, 1, 1]`, broadcast by the backend's kernels (cubecl backends).
    Broadcast,
    /// Repeated over the batch to `[N, C, 1, 1]` first, for flex
    /// ([`crate::ops::per_channel`] says why); one launch more per operand elsewhere.
    Materialise,
}

/// Makes `f` the training batch norm of backend `B` (a later call replaces it), e.g.
/// `cfx_linalg::batch_norm::batch_norm_train_cube` on `Autodiff<CubeBackend>`.
pub fn register_batch_norm<B: Backend>(f: BatchNormTrainFn<B>) {
    super::registry::register(f);
}

/// Makes the fused tensor-op version the training batch norm of `Autodiff<B>` (the default
/// checkpointing).
pub fn register_fused_batch_norm<B: Backend>(per_channel: PerChannel) {
    register_batch_norm::<Autodiff<B>>(match per_channel {
        PerChannel::Broadcast => fused_batch_norm::<B, NoCheckpointing, false>,
        PerChannel::Materialise => fused_batch_norm::<B, NoCheckpointing, true>,
    });
}

/// The training batch norm registered for `B`, if any.
pub fn registered_batch_norm<B: Backend>() -> Option<BatchNormTrainFn<B>> {
    super::registry::registered::<BatchNormTrainFn<B>>()
}

fn pc<B: Backend, const MATERIALISE: bool>(v: Tensor<B, 1>, n: usize) -> Tensor<B, 4> {
    if MATERIALISE {
        crate::ops::per_channel(v, n)
    } else {
        let c = v.dims()[0];
        v.reshape([1, c, 1, 1])
    }
}

#[derive(Debug, Clone)]
struct Saved<B: Backend> {
    /// `x̂ = (x − μ)/σ`.
    normalised: FloatTensor<B>,
    /// `γ/σ`.
    scale: FloatTensor<B>,
    weights: FloatTensor<B>,
}

struct Forward<B: Backend> {
    y: Tensor<B, 4>,
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
    saved: Saved<B>,
}

fn forward<B: Backend, const MATERIALISE: bool>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Forward<B> {
    let [n, _, h, w] = x.dims();
    // A column of 1/M folds the division into the product: the sums are means.
    let weights = Tensor::<B, 2>::full([h * w, 1], 1.0 / (n * h * w) as f64, &x.device());
    let mean = crate::ops::channel_sums(x.clone(), &weights);
    let centred = x - pc::<B, MATERIALISE>(mean.clone(), n);
    let var = crate::ops::channel_sums(centred.clone() * centred.clone(), &weights);
    let inv_std = var.clone().add_scalar(epsilon).powf_scalar(-0.5);
    let normalised = centred * pc::<B, MATERIALISE>(inv_std.clone(), n);
    let y =
        normalised.clone() * pc::<B, MATERIALISE>(gamma.clone(), n) + pc::<B, MATERIALISE>(beta, n);
    Forward {
        y,
        mean,
        var,
        saved: Saved {
            normalised: primitive(normalised),
            scale: primitive(gamma * inv_std),
            weights: primitive(weights),
        },
    }
}

#[derive(Debug)]
struct FusedBatchNorm<const MATERIALISE: bool>;

impl<B: Backend, const MATERIALISE: bool> Backward<B, 3> for FusedBatchNorm<MATERIALISE> {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy: Tensor<B, 4> = tensor(grads.consume::<B>(&ops.node));
        let [n, c, h, w] = dy.dims();
        let m = (n * h * w) as f64;
        let normalised: Tensor<B, 4> = tensor(ops.state.normalised);
        let weights: Tensor<B, 2> = tensor(ops.state.weights);
        // Σdy/M and Σ(dy·x̂)/M per channel.
        let mean_dy = crate::ops::channel_sums(dy.clone(), &weights);
        let mean_dy_x = crate::ops::channel_sums(dy.clone() * normalised.clone(), &weights);
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, primitive(mean_dy.clone().mul_scalar(m)));
        }
        if let Some(node) = node_gamma {
            let g = mean_dy_x.clone().mul_scalar(m);
            grads.register::<B>(node.id, primitive(g));
        }
        if let Some(node) = node_x {
            let scale: Tensor<B, 1> = tensor(ops.state.scale);
            // γ/σ·(dy − Σdy/M − x̂·Σ(dy·x̂)/M).
            let dx = dy * pc::<B, MATERIALISE>(scale.clone(), n)
                - normalised * pc::<B, MATERIALISE>(scale.clone() * mean_dy_x, n)
                - pc::<B, MATERIALISE>(scale * mean_dy, n);
            debug_assert_eq!(dx.dims(), [n, c, h, w]);
            grads.register::<B>(node.id, primitive(dx));
        }
    }
}

/// One training step of batch norm on `Autodiff<B, C>`, as one op.
fn fused_batch_norm<B: Backend, C: CheckpointStrategy, const MATERIALISE: bool>(
    step: BatchNormStep<Autodiff<B, C>>,
) -> BatchNormStepOutput<Autodiff<B, C>> {
    let [n, _, h, w] = step.x.dims();
    let m_values = n * h * w;
    let xp = primitive(step.x);
    let gp = primitive(step.gamma);
    let bp = primitive(step.beta);
    let nodes = [xp.node.clone(), gp.node.clone(), bp.node.clone()];
    let out = forward::<B, MATERIALISE>(
        tensor(xp.primitive),
        tensor(gp.primitive),
        tensor(bp.primitive),
        step.epsilon,
    );
    let y = primitive(out.y);
    let y = cfx_linalg::finish_stateful(
        FusedBatchNorm::<MATERIALISE>
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful(),
        out.saved,
        y,
    );
    let m = step.momentum;
    let update = |old: Tensor<Autodiff<B, C>, 1>, batch: Tensor<B, 1>| {
        Tensor::from_inner(super::mode::running_update(old.inner(), batch, m))
    };
    let y = tensor(y);
    BatchNormStepOutput {
        // The ReLU stays an op of its own here; only the kernels fold it in.
        y: if step.relu {
            burn::tensor::activation::relu(y)
        } else {
            y
        },
        running_mean: update(step.running_mean, out.mean),
        running_var: update(
            step.running_var,
            out.var.mul_scalar(cfx_linalg::batch_norm::bessel(m_values)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::mode::{batch_norm, batch_norm_relu};
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Distribution, Tolerance};
    use burn_flex::Flex;

    use crate::test_util::TAd as TB;

    /// The fused op, in both per-channel modes, and flex's passes against the op-by-op version
    /// (itself checked against burn's layer): output, running statistics and the gradients of
    /// x, γ and β under a loss that weights every output differently, with and without a ReLU
    /// after it; and the untracked case.
    #[test]
    fn fused_batch_norm_matches_the_op_by_op_version() {
        let device = Default::default();
        TB::seed(&device, 11);
        let make = || {
            let mut bn = BatchNormConfig::new(3)
                .with_momentum(0.3)
                .with_epsilon(1e-4)
                .init::<TB>(&device);
            bn.gamma =
                burn::module::Param::from_tensor(Tensor::from_floats([0.5, -1.5, 2.0], &device));
            bn.beta =
                burn::module::Param::from_tensor(Tensor::from_floats([-0.2, 0.0, 0.3], &device));
            bn
        };
        let x = Tensor::<TB, 4>::random([4, 3, 5, 2], Distribution::Normal(1.0, 2.0), &device);
        let weights = Tensor::<TB, 4>::random([4, 3, 5, 2], Distribution::Default, &device);
        let tol = Tolerance::<f32>::absolute(1e-4);
        let run = |fused: Option<BatchNormTrainFn<TB>>, relu: bool| {
            let bn = make();
            let xx = x.clone().detach().require_grad();
            let y = match fused {
                Some(f) => {
                    let out = f(crate::nn::mode::step_for(&bn, xx.clone(), relu));
                    bn.running_mean.update(out.running_mean);
                    bn.running_var.update(out.running_var);
                    out.y
                }
                None if relu => batch_norm_relu(&bn, xx.clone()),
                None => batch_norm(&bn, xx.clone()),
            };
            crate::test_util::batch_norm_outcome(&bn, &xx, y, &weights)
        };
        // flex's passes (`cfx_linalg`) are compared with the definition here alone.
        let versions: [BatchNormTrainFn<TB>; 3] = [
            fused_batch_norm::<Flex, NoCheckpointing, false>,
            fused_batch_norm::<Flex, NoCheckpointing, true>,
            cfx_linalg::batch_norm::batch_norm_train_flex::<NoCheckpointing>,
        ];
        for relu in [false, true] {
            let reference = run(None, relu);
            for f in versions {
                for (a, b) in run(Some(f), relu).iter().zip(&reference) {
                    a.assert_approx_eq(b, tol);
                }
            }
        }
        let reference = run(None, false);
        // Nothing tracked: the same output, and no graph to walk.
        let bn = make();
        let step = BatchNormStep {
            gamma: bn.gamma.val().detach(),
            beta: bn.beta.val().detach(),
            ..crate::nn::mode::step_for(&bn, x.clone(), false)
        };
        let untracked = fused_batch_norm::<Flex, NoCheckpointing, false>(step);
        untracked.y.into_data().assert_approx_eq(&reference[0], tol);
    }

    /// Only γ tracked (a frozen input and shift): γ's gradient alone, equal to op-by-op
    /// autodiff of the definition.
    #[test]
    fn gradients_reach_only_tracked_parents() {
        let device = Default::default();
        let x = Tensor::<TB, 4>::random([2, 2, 3, 3], Distribution::Normal(0.5, 1.0), &device);
        let weights = Tensor::<TB, 4>::random([2, 2, 3, 3], Distribution::Default, &device);
        let gamma = Tensor::<TB, 1>::from_floats([1.0, 2.0], &device).require_grad();
        let beta = Tensor::<TB, 1>::from_floats([0.5, -0.5], &device);
        let out = fused_batch_norm::<Flex, NoCheckpointing, false>(BatchNormStep {
            x: x.clone(),
            gamma: gamma.clone(),
            beta: beta.clone(),
            running_mean: Tensor::zeros([2], &device),
            running_var: Tensor::ones([2], &device),
            epsilon: 1e-5,
            momentum: 0.1,
            relu: false,
        });
        let g = (out.y * weights.clone()).sum().backward();
        let mean = x.clone().mean_dim(0).mean_dim(2).mean_dim(3);
        let centred = x.clone() - mean;
        let var = (centred.clone() * centred.clone())
            .mean_dim(0)
            .mean_dim(2)
            .mean_dim(3);
        let xhat = centred / var.add_scalar(1e-5).sqrt();
        let reference = (xhat * gamma.clone().reshape([1, 2, 1, 1]) * weights)
            .sum()
            .backward();
        gamma.grad(&g).unwrap().into_data().assert_approx_eq::<f32>(
            &gamma.grad(&reference).unwrap().into_data(),
            Tolerance::absolute(1e-4),
        );
        assert_eq!(out.running_mean.dims(), [2]);
        assert!(beta.grad(&g).is_none());
        assert!(x.grad(&g).is_none());
    }

    /// End to end through the tiny IB-INN (its twelve batch norms, with couplings,
    /// downsampling and the FC coupling around them): registering the fused op changes the loss
    /// by float rounding only, and the input gradient too, except where rounding moves a value
    /// across a ReLU's kink. Runs on `crate::test_util::RegistryAd`, because the registration
    /// is process-wide.
    ///
    /// Why three draws and the best one: a pre-activation within ~1e-7 of zero lands on the
    /// other side of a ReLU in one version, and that image's gradient then differs by the
    /// unit's whole contribution. Measured over 40 seeds run alone: 38 draws differ by
    /// 0.8e-6 to 3.9e-6 of the gradient's largest entry, 2 by 7e-3 and 1.3e-2, the whole excess
    /// in one image of sixteen (the others 1e-4, through the batch statistics). CI failed on
    /// a single draw that way (4e-3 of 1.14), and most likely once before (0.10 of 0.82), when
    /// it was put down to a registration race. The data come from the backend's process-wide RNG,
    /// which tests running beside this one also draw from, so which draw hits a kink varies
    /// from run to run; all three hit one in about 1 run in 8 000 (0.05³), and a wrong
    /// backward pass moves all three.
    #[test]
    fn registered_op_leaves_the_ibinn_loss_and_gradient_unchanged() {
        let _registry = crate::test_util::registry_lock();
        use crate::ibinn::IbInnConfig;
        use crate::test_util::RegistryAd as Ad;
        use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
        let device = Default::default();
        Ad::seed(&device, 3);
        let draws: Vec<_> = (0..3)
            .map(|_| {
                let model = IbInnConfig::tiny().init::<Ad>(&device);
                let x = Tensor::<Ad, 4>::random(
                    [16, 1, 28, 28],
                    Distribution::Uniform(-1.0, 1.0),
                    &device,
                );
                (model, x)
            })
            .collect();
        let run = |(model, x): &(crate::ibinn::IbInn<Ad>, Tensor<Ad, 4>)| {
            let xx = x.clone().detach().require_grad();
            let (z, log_det) = model.encode(xx.clone());
            let loss = ((z.clone() * z).sum_dim(1).reshape([16]).mul_scalar(0.5) - log_det).mean();
            let grads = loss.backward();
            (loss.into_data(), xx.grad(&grads).unwrap())
        };
        assert!(registered_batch_norm::<Ad>().is_none());
        let by_ops: Vec<_> = draws.iter().map(run).collect();
        register_batch_norm::<Ad>(fused_batch_norm::<Flex, BalancedCheckpointing, true>);
        assert!(registered_batch_norm::<Ad>().is_some());
        let fused: Vec<_> = draws.iter().map(run).collect();
        let mut relative = Vec::new();
        for ((loss_ops, grad_ops), (loss_fused, grad_fused)) in by_ops.into_iter().zip(fused) {
            loss_fused.assert_approx_eq::<f32>(&loss_ops, Tolerance::relative(1e-4));
            // Against the gradient's scale, not entry by entry: an entry near zero can move by
            // more than itself after rounding.
            let scale: f64 = grad_ops.clone().abs().max().into_scalar().elem();
            assert!(scale > 0.0);
            relative.push(crate::testing::max_abs_diff(grad_fused, grad_ops) / scale);
        }
        let best = relative.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(
            best <= 1e-4,
            "input gradient changed in every draw, by at least {best:e} of its largest entry \
             ({relative:?})"
        );
    }
}
