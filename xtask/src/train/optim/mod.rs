//! SGD with per-group hyper-parameters and global gradient-norm clipping, stepped as one flat
//! vector.
//!
//! The IB-INN reference trains the network, the GMM means and the class weights with one
//! PyTorch SGD of three parameter groups, after `clip_grad_norm_` over all of them:
//! `g ← g · min(1, max_norm / (‖g‖ + 1e-6))`, then per group `g' = g + λ·p`, `v ← μ·v + g'`,
//! `p ← p − lr·v` (PyTorch's and burn's SGD without dampening or Nesterov).
//!
//! Why one flat vector: stepping burn's `Sgd` tensor by tensor costs about twelve kernel launches
//! per parameter tensor (counted; by the code: clipping four, decay two, momentum three, update
//! two), and the IB-INN
//! has 410 tensors, so on the GPU the optimiser was launch-bound ("Where the CUDA step time
//! goes" in docs/results.md). Here the gradients and the parameters are each copied into one
//! vector (`cfx_linalg::pack`: on the cube backends a kernel launch per 16 tensors, elsewhere
//! one `cat`), the whole update is a dozen launches over that vector, and the new parameters
//! are views of the result: each tensor's segment is padded to `cfx_linalg::pack::ALIGN`
//! elements so that burn-cubecl slices it without a copy. On the cube backends convolution weights are stored
//! channels-last in it, so that their views are what the convolutions read
//! ([`GroupedSgd::with_channels_last`]). Measured in docs/results.md, "The optimiser as one
//! flat vector", "The optimiser's gathering and the affine half-step as CubeCL kernels" and
//! "Running statistics stored in place, convolution weights stored channels-last".
//!
//! The record keeps burn's format (one `OptimizerAdaptor<Sgd>` record per group, a velocity per
//! parameter), so checkpoints written by the earlier per-tensor optimiser resume here and the
//! other way round.

use std::collections::HashMap;
use std::marker::PhantomData;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::momentum::MomentumState;
use burn::optim::record::{AdaptorRecord, AdaptorRecordV1};
use burn::optim::{GradientsParams, Optimizer, Sgd, SgdState};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, Record};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use cfx_flows::nn::registry::registered;
use cfx_linalg::convert::{primitive, tensor};
use cfx_linalg::pack::{ALIGN, PackFn, pack_by_cat};

/// Hyper-parameters of one group; `lr_factor` multiplies the scheduled learning rate.
#[derive(Debug, Clone, Copy)]
pub struct SgdGroup {
    pub lr_factor: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// burn's record of one parameter's SGD state.
type ParamRecord<B> = AdaptorRecord<Sgd<Inner<B>>, B>;

/// The optimiser records of all groups, in order (default group first): burn's
/// `OptimizerAdaptor<Sgd>` record for each.
pub type GroupedSgdRecord<B, M> = Vec<<Adaptor<B, M> as Optimizer<M, B>>::Record>;

type Adaptor<B, M> = OptimizerAdaptor<Sgd<Inner<B>>, M, B>;

/// Where one parameter tensor lives in the flat vectors.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    id: ParamId,
    group: usize,
    shape: Vec<usize>,
    offset: usize,
    /// Stored with the second axis last (`[O, I, kH, kW]` as `[O, kH, kW, I]`, see
    /// [`GroupedSgd::with_channels_last`]).
    channels_last: bool,
}

impl Slot {
    fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.shape.iter().product::<usize>()
    }

    /// The shape as stored in the flat vector.
    fn stored_shape<const D: usize>(&self) -> [usize; D] {
        let mut dims: [usize; D] = self.shape.clone().try_into().expect("slot of this rank");
        if self.channels_last {
            dims[1..].rotate_left(1);
        }
        dims
    }

    /// A tensor of this slot's shape in its stored axis order (a view where the backend has
    /// strided tensors).
    fn to_stored<IB: Backend, const D: usize>(&self, t: Tensor<IB, D>) -> Tensor<IB, D> {
        match self.channels_last {
            true => t.permute(second_axis_moved::<D>(true)),
            false => t,
        }
    }

    /// The inverse of [`Slot::to_stored`]: this slot's values, stored from `flat`'s start,
    /// with the slot's shape.
    fn unstore<IB: Backend, const D: usize>(&self, flat: Tensor<IB, 1>) -> Tensor<IB, D> {
        let t = flat.reshape(self.stored_shape::<D>());
        match self.channels_last {
            true => t.permute(second_axis_moved::<D>(false)),
            false => t,
        }
    }
}

/// The axes that move the second axis last (`to_last`: what [`Slot::stored_shape`] does to the
/// shape) or the last axis back to second.
fn second_axis_moved<const D: usize>(to_last: bool) -> [isize; D] {
    let mut axes: [isize; D] = std::array::from_fn(|k| k as isize);
    match to_last {
        true => axes[1..].rotate_left(1),
        false => axes[1..].rotate_right(1),
    }
    axes
}

/// The state of the parameters stepped last, laid out as `slots`.
struct Flat<IB: Backend> {
    slots: Vec<Slot>,
    /// Per element: the group's learning-rate factor, weight decay and momentum (0 in padding).
    lr_factor: Tensor<IB, 1>,
    decay: Tensor<IB, 1>,
    momentum: Tensor<IB, 1>,
    velocity: Tensor<IB, 1>,
}

pub struct GroupedSgd<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// The default group first, with no ids: it takes every parameter no other group claims.
    groups: Vec<(Vec<ParamId>, SgdGroup)>,
    max_grad_norm: Option<f64>,
    flat: Option<Flat<Inner<B>>>,
    /// States outside `flat`: loaded from a record and not stepped since, or of parameters that
    /// had no gradient in the last step (burn's adaptor keeps those too).
    parked: HashMap<ParamId, ParamRecord<B>>,
    /// Store rank-4 parameters channels-last ([`GroupedSgd::with_channels_last`]).
    channels_last: bool,
    _module: PhantomData<M>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> GroupedSgd<B, M> {
    pub fn new(default: SgdGroup, max_grad_norm: Option<f64>) -> Self {
        Self {
            groups: vec![(vec![], default)],
            max_grad_norm,
            flat: None,
            parked: HashMap::new(),
            channels_last: registered::<ChannelsLastWeights<Inner<B>>>().is_some(),
            _module: PhantomData,
        }
    }

    /// Whether rank-4 parameters (convolution weights `[O, I, kH, kW]`) are stored in the flat
    /// vector as `[O, kH, kW, I]`, so that the stepped weights are channels-last views.
    ///
    /// Why: burn-cubecl's convolutions work channels-last and copy every weight whose input
    /// channels are not contiguous before each use, one launch per 3×3 convolution and step
    /// (1×1 weights are channels-last either way); a weight that already is needs none. The
    /// values are the same either way: only the order inside the flat vector changes, and the
    /// record keeps burn's layout. The default is what the process registered for the backend
    /// ([`register_channels_last_weights`]: xtask does for cuda and wgpu).
    pub fn with_channels_last(mut self, on: bool) -> Self {
        self.channels_last = on;
        self.flat = None;
        self
    }

    /// Gives the parameters `ids` their own hyper-parameters.
    pub fn with_group(mut self, ids: Vec<ParamId>, hyper: SgdGroup) -> Self {
        self.groups.push((ids, hyper));
        self.flat = None;
        self
    }

    fn group_of(&self, id: ParamId) -> usize {
        group_of(&self.groups, id)
    }

    /// One update. Returns the model and the gradient norm before clipping (on the device).
    pub fn step(&mut self, lr: f64, model: M, grads: B::Gradients) -> (M, Tensor<Inner<B>, 1>) {
        let params = GradientsParams::from_grads(grads, &model);
        self.step_params(lr, model, params)
    }

    /// [`GroupedSgd::step`] from gradients already gathered per parameter (data-parallel steps
    /// sum the replicas' gradients into one set). All gradients must be on one device: the
    /// stepped parameters move to it, as in burn's adaptor.
    pub fn step_params(
        &mut self,
        lr: f64,
        model: M,
        mut grads: GradientsParams,
    ) -> (M, Tensor<Inner<B>, 1>) {
        let mut gather = Gather::<Inner<B>> {
            grads: &mut grads,
            groups: &self.groups,
            channels_last: self.channels_last,
            slots: vec![],
            g: vec![],
            p: vec![],
            total: 0,
        };
        model.visit(&mut gather);
        let Gather {
            slots, g, p, total, ..
        } = gather;
        let Some(device) = g.first().map(Inner::<B>::float_device) else {
            let device = model
                .devices()
                .into_iter()
                .next()
                .expect("model has a device");
            return (model, Tensor::zeros([1], &device));
        };
        let g = pack(g, &slots, total);
        let p = pack(p, &slots, total);
        let mut flat = self.flat_for(slots, total, &device);

        let norm = g.clone().square().sum().sqrt();
        let g = match self.max_grad_norm {
            Some(max) => g * clip_factor(norm.clone(), max),
            None => g,
        };
        let g = g + p.clone() * flat.decay.clone();
        let v = flat.velocity * flat.momentum.clone() + g;
        let p = p - v.clone() * flat.lr_factor.clone().mul_scalar(lr);
        flat.velocity = v;

        let index: HashMap<ParamId, usize> = flat
            .slots
            .iter()
            .enumerate()
            .map(|(k, s)| (s.id, k))
            .collect();
        let model = model.map(&mut Scatter {
            flat: p,
            slots: &flat.slots,
            index,
        });
        self.flat = Some(flat);
        (model, norm)
    }

    /// The state laid out as `slots`: the last step's when the layout is the same (every
    /// training step), else rebuilt from it and the parked records.
    fn flat_for(
        &mut self,
        slots: Vec<Slot>,
        total: usize,
        device: &burn::tensor::Device<Inner<B>>,
    ) -> Flat<Inner<B>> {
        if let Some(flat) = self.flat.take() {
            if flat.slots == slots {
                return flat;
            }
            for s in &flat.slots {
                let record = self.record_of(s, &flat.velocity);
                self.parked.insert(s.id, record);
            }
        }
        let parts = slots
            .iter()
            .map(|s| {
                let n = s.range().len();
                self.parked
                    .remove(&s.id)
                    .and_then(|r| velocity_of::<B>(r, device))
                    // A velocity of another size cannot be this tensor's: it starts from rest.
                    .filter(|v| v.dims()[0] == n)
                    .map(|v| stored_order(s, v))
                    .unwrap_or_else(|| Tensor::zeros([n], device))
            })
            .map(primitive)
            .collect();
        let velocity = pack(parts, &slots, total);
        let per_element = |f: &dyn Fn(&SgdGroup) -> f64| {
            let mut host = vec![0f32; total];
            for s in &slots {
                let value = f(&self.groups[s.group].1) as f32;
                host[s.range()].fill(value);
            }
            Tensor::<Inner<B>, 1>::from_data(TensorData::new(host, [total]), device)
        };
        Flat {
            lr_factor: per_element(&|h| h.lr_factor),
            decay: per_element(&|h| h.weight_decay),
            momentum: per_element(&|h| h.momentum),
            velocity,
            slots,
        }
    }

    pub fn to_record(&self) -> GroupedSgdRecord<B, M> {
        let mut out: GroupedSgdRecord<B, M> =
            self.groups.iter().map(|_| Default::default()).collect();
        if let Some(flat) = &self.flat {
            for s in &flat.slots {
                out[s.group].insert(s.id, self.record_of(s, &flat.velocity));
            }
        }
        for (id, r) in &self.parked {
            out[self.group_of(*id)].insert(*id, r.clone());
        }
        out
    }

    /// burn's record of slot `s`'s state in `velocity`.
    fn record_of(&self, s: &Slot, velocity: &Tensor<Inner<B>, 1>) -> ParamRecord<B> {
        let momentum = self.groups[s.group].1.momentum > 0.0;
        record_of::<B>(s, momentum.then(|| velocity.clone().slice(s.range())))
    }

    pub fn load_record(mut self, record: GroupedSgdRecord<B, M>) -> anyhow::Result<Self> {
        check_group_count(record.len(), self.groups.len())?;
        self.flat = None;
        self.parked = record.into_iter().flatten().collect();
        Ok(self)
    }
}

fn check_group_count(in_record: usize, here: usize) -> anyhow::Result<()> {
    if in_record != here {
        anyhow::bail!("optimiser state has {in_record} parameter groups, this model has {here}");
    }
    Ok(())
}

/// PyTorch's `clip_grad_norm_` scale, `min(1, max / (‖g‖ + 1e-6))`.
fn clip_factor<IB: Backend>(norm: Tensor<IB, 1>, max: f64) -> Tensor<IB, 1> {
    norm.add_scalar(1e-6).recip().mul_scalar(max).clamp_max(1.0)
}

fn group_of(groups: &[(Vec<ParamId>, SgdGroup)], id: ParamId) -> usize {
    groups
        .iter()
        .position(|(ids, _)| ids.contains(&id))
        .unwrap_or(0)
}

/// Lays `parts` out as `slots` in one zero-padded vector: with the pack function registered
/// for the backend (xtask registers `cfx_linalg::pack::pack_cube` for cuda and wgpu), else
/// with one `cat` (`cfx_linalg::pack::pack_by_cat`).
fn pack<IB: Backend>(parts: Vec<FloatTensor<IB>>, slots: &[Slot], total: usize) -> Tensor<IB, 1> {
    let offsets: Vec<usize> = slots.iter().map(|s| s.offset).collect();
    let f = registered::<PackFn<IB>>().unwrap_or(pack_by_cat::<IB>);
    let flat = tensor::<IB, 1>(f(parts, &offsets, total));
    debug_assert_eq!(flat.dims()[0], total);
    flat
}

/// Makes `f` the way [`GroupedSgd`] gathers its vectors on backend `IB` (see [`pack`]).
pub fn register_pack<IB: Backend>(f: PackFn<IB>) {
    cfx_flows::nn::registry::register(f);
}

/// Registered for a backend whose [`GroupedSgd`]s store rank-4 parameters channels-last.
struct ChannelsLastWeights<IB>(PhantomData<fn() -> IB>);

// By hand: a derive would ask the backend to be `Copy`.
impl<IB> Clone for ChannelsLastWeights<IB> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<IB> Copy for ChannelsLastWeights<IB> {}

/// Makes [`GroupedSgd::with_channels_last`] the default on backend `IB`.
pub fn register_channels_last_weights<IB: Backend>() {
    cfx_flows::nn::registry::register(ChannelsLastWeights::<IB>(PhantomData));
}

/// Takes each parameter's gradient and value, flattened, and lays out their slots.
struct Gather<'a, IB: Backend> {
    grads: &'a mut GradientsParams,
    groups: &'a [(Vec<ParamId>, SgdGroup)],
    channels_last: bool,
    slots: Vec<Slot>,
    /// Unflattened: a flattening `reshape` copies a tensor that is not contiguous, and the
    /// pack kernel reads any layout.
    g: Vec<FloatTensor<IB>>,
    p: Vec<FloatTensor<IB>>,
    total: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Gather<'_, B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let shape = g.dims().to_vec();
        let n: usize = shape.iter().product();
        let value = param.val().inner();
        let value = if value.device() == g.device() {
            value
        } else {
            value.to_device(&g.device())
        };
        let group = group_of(self.groups, param.id);
        let slot = Slot {
            id: param.id,
            group,
            shape,
            offset: self.total,
            channels_last: self.channels_last && D == 4,
        };
        self.g.push(primitive(slot.to_stored(g)));
        self.p.push(primitive(slot.to_stored(value)));
        self.slots.push(slot);
        self.total += n.next_multiple_of(ALIGN);
    }
}

/// Replaces each stepped parameter by its view of the updated flat vector.
struct Scatter<'a, IB: Backend> {
    flat: Tensor<IB, 1>,
    slots: &'a [Slot],
    index: HashMap<ParamId, usize>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Scatter<'_, B::InnerBackend> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(&k) = self.index.get(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let slot = &self.slots[k];
        let mut value = Tensor::from_inner(slot.unstore(self.flat.clone().slice(slot.range())));
        if tensor.is_require_grad() {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

/// burn's record of one parameter's state: its velocity (as stored in slot `s`), or none in a
/// group without momentum.
fn record_of<B: AutodiffBackend>(
    s: &Slot,
    velocity: Option<Tensor<Inner<B>, 1>>,
) -> ParamRecord<B> {
    fn rank<B: AutodiffBackend, const D: usize>(
        s: &Slot,
        velocity: Option<Tensor<Inner<B>, 1>>,
    ) -> ParamRecord<B> {
        let momentum = velocity.map(|v| MomentumState::new(s.unstore::<_, D>(v)));
        AdaptorRecord::from_state::<D>(SgdState::new(momentum))
    }
    match s.shape.len() {
        1 => rank::<B, 1>(s, velocity),
        2 => rank::<B, 2>(s, velocity),
        3 => rank::<B, 3>(s, velocity),
        4 => rank::<B, 4>(s, velocity),
        5 => rank::<B, 5>(s, velocity),
        6 => rank::<B, 6>(s, velocity),
        r => panic!("parameters of rank {r} are not supported"),
    }
}

/// A flattened velocity of slot `s` (burn's layout, as records hold it) in the slot's stored
/// order.
fn stored_order<IB: Backend>(s: &Slot, v: Tensor<IB, 1>) -> Tensor<IB, 1> {
    if !s.channels_last {
        return v;
    }
    let dims: [usize; 4] = s
        .shape
        .clone()
        .try_into()
        .expect("channels-last slots are rank 4");
    let n = v.dims()[0];
    s.to_stored(v.reshape(dims)).reshape([n])
}

/// The flattened velocity in a record, on `device` (none for a group without momentum).
fn velocity_of<B: AutodiffBackend>(
    record: ParamRecord<B>,
    device: &burn::tensor::Device<Inner<B>>,
) -> Option<Tensor<Inner<B>, 1>> {
    // `MomentumState` keeps its velocity private; its record item does not.
    fn rank<B: AutodiffBackend, const D: usize>(
        state: SgdState<Inner<B>, D>,
        device: &burn::tensor::Device<Inner<B>>,
    ) -> Option<Tensor<Inner<B>, 1>> {
        let item = state.momentum?.into_item::<FullPrecisionSettings>();
        let v = Tensor::<Inner<B>, D>::from_item(item.velocity, device);
        let n = v.shape().num_elements();
        Some(v.reshape([n]))
    }
    let AdaptorRecord::V1(record) = record;
    match record {
        AdaptorRecordV1::Rank0(_) => None,
        AdaptorRecordV1::Rank1(s) => rank::<B, 1>(s, device),
        AdaptorRecordV1::Rank2(s) => rank::<B, 2>(s, device),
        AdaptorRecordV1::Rank3(s) => rank::<B, 3>(s, device),
        AdaptorRecordV1::Rank4(s) => rank::<B, 4>(s, device),
        AdaptorRecordV1::Rank5(s) => rank::<B, 5>(s, device),
        AdaptorRecordV1::Rank6(s) => rank::<B, 6>(s, device),
        AdaptorRecordV1::Rank7(s) => rank::<B, 7>(s, device),
        AdaptorRecordV1::Rank8(s) => rank::<B, 8>(s, device),
    }
}

#[cfg(test)]
mod per_tensor;
#[cfg(test)]
mod tests;
