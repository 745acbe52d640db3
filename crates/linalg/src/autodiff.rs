//! The custom ops on `Autodiff<B>`: the forward runs on the inner backend and the backward is
//! the hand-written one (FastH: Algorithm 2, [`LinalgBackend::fasth_product_backward`]; FastFID:
//! the closed form of spec §3.3), not autodiff through the forward's tensor ops.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use crate::convert::{primitive, tensor};
use crate::{LinalgBackend, LinalgError};

/// Ends a custom op whose forward has run and whose backward state is at hand: on the graph
/// with `state` when a parent is tracked, as a plain output otherwise. (The batch-norm and
/// affine kernels, and `cfx_flows`' fused batch norm, all end this way; FastH and FastFID
/// compute their state only when tracked.)
pub fn finish_stateful<B, C, O, S, const N: usize>(
    kind: OpsKind<O, B, S, C, N>,
    state: S,
    output: FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: Backend,
    C: CheckpointStrategy,
    S: Clone + Send + std::fmt::Debug + 'static,
    O: Backward<B, N, State = S>,
{
    match kind {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

#[derive(Debug)]
struct FastHProduct;

/// What the backward pass keeps: the raw vectors and the output (the group inputs are rebuilt
/// from it), not the G intermediate activations.
#[derive(Debug, Clone)]
struct Saved<B: LinalgBackend> {
    v: FloatTensor<B>,
    output: FloatTensor<B>,
    group: usize,
    transpose: bool,
}

impl<B: LinalgBackend> Backward<B, 2> for FastHProduct {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_v, node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let Saved {
            v,
            output,
            group,
            transpose,
        } = ops.state;
        let (grad_x, grad_v) = B::fasth_product_backward(v, output, grad, group, transpose);
        if let Some(node) = node_v {
            grads.register::<B>(node.id, grad_v);
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, grad_x);
        }
    }
}

impl<B: LinalgBackend, C: CheckpointStrategy> LinalgBackend for Autodiff<B, C> {
    fn fasth_product(
        v: FloatTensor<Self>,
        x: FloatTensor<Self>,
        group: usize,
        transpose: bool,
    ) -> FloatTensor<Self> {
        match FastHProduct
            .prepare::<C>([v.node.clone(), x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = B::fasth_product(v.primitive.clone(), x.primitive, group, transpose);
                let saved = Saved {
                    v: v.primitive,
                    output: output.clone(),
                    group,
                    transpose,
                };
                prep.finish(saved, output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::fasth_product(v.primitive, x.primitive, group, transpose))
            }
        }
    }

    fn fid_trace_sqrt(
        c1: FloatTensor<Self>,
        f: FloatTensor<Self>,
        _want_grad: bool,
    ) -> Result<(FloatTensor<Self>, Option<FloatTensor<Self>>), LinalgError> {
        // The real factor is a constant: only C₁ is a parent.
        match FidTraceSqrt
            .prepare::<C>([c1.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (value, grad) = B::fid_trace_sqrt(c1.primitive, f.primitive, true)?;
                let grad = grad.expect("the gradient was asked for");
                Ok((prep.finish(grad, value), None))
            }
            OpsKind::UnTracked(prep) => {
                let (value, _) = B::fid_trace_sqrt(c1.primitive, f.primitive, false)?;
                Ok((prep.finish(value), None))
            }
        }
    }
}

#[derive(Debug)]
struct FidTraceSqrt;

impl<B: LinalgBackend> Backward<B, 1> for FidTraceSqrt {
    /// The gradient of the trace with respect to C₁, computed in the forward pass where the
    /// eigenvectors are at hand.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_c1] = ops.parents;
        let grad_out: Tensor<B, 1> = tensor(grads.consume::<B>(&ops.node));
        if let Some(node) = node_c1 {
            let local: Tensor<B, 2> = tensor(ops.state);
            grads.register::<B>(node.id, primitive(local * grad_out.reshape([1, 1])));
        }
    }
}
