//! The authors' trained IB-INN weights in this crate's model.
//!
//! ECINN's and IB-INN's code save `{'inn': state_dict, 'mu', 'phi'}` (`model.py::save`); an
//! exporter (`bench/reference/export_ibinn.py`) writes those tensors to safetensors as
//! `inn.<key>`, `mu`, `phi`. [`load_reference_weights`] puts them into an [`IbInn`] built
//! from the same architecture, so the two compute the same function: the side-by-side check in
//! docs/results.md ("The authors' weights in our model") measures how closely.
//!
//! The key layout is FrEIA's chain of nodes, `inn.module_list.<k>`, in the reference's node
//! order: on (Fake)MNIST a reshape and the Haar transform first, then the couplings, the
//! downsampling couplings, the DCT, and a permutation before each fully connected coupling.
//! Inside a node the subnets are `nn.Sequential`s, so a layer's key is its position there:
//! `ReLU` and `Dropout2d` layers take positions too, which is why the offsets below depend on
//! whether the subnet starts with a ReLU and whether it has a dropout layer.

use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use super::IbInn;
use crate::blocks::FlowBlock;
use crate::nn::ConvSubnet;

/// One stored tensor: its shape and values (row-major).
pub type StoredTensor = (Vec<usize>, Vec<f32>);

/// Looks up a tensor of the exported state dict by its key.
pub type TensorSource<'a> = &'a dyn Fn(&str) -> Option<StoredTensor>;

/// Copies the reference's weights (keys as the module doc says) into `model`, which must have
/// been built with the reference's architecture. Fails naming the first key that is missing or
/// has another shape than the model's tensor, so a file of another architecture is refused
/// rather than half loaded.
///
/// Of the fixed parts the reference draws at random, each coupling's rotation comes from the
/// file (it is a parameter there). The fully connected coupling's permutation is not a tensor in
/// the reference's state dict; this crate draws it with numpy's legacy generator from the same
/// seed, so it needs none (the side-by-side check compares the permuted outputs too).
pub fn load_reference_weights<B: Backend>(
    mut model: IbInn<B>,
    source: TensorSource,
) -> Result<IbInn<B>, String> {
    let device = model.mu.device();
    let get = |key: &str, shape: &[usize]| -> Result<Tensor<B, 1>, String> {
        let (s, v) = source(key).ok_or_else(|| format!("the file has no tensor `{key}`"))?;
        if strip_unit_dims(&s) != strip_unit_dims(shape) {
            return Err(format!(
                "`{key}` has shape {s:?}, the model's tensor has {shape:?}: the file is of \
                 another architecture"
            ));
        }
        Ok(Tensor::from_data(
            TensorData::new(v, [shape.iter().product::<usize>()]),
            &device,
        ))
    };

    let (k_dim, d_dim) = (model.n_classes(), model.dim());
    model.mu = replace(
        model.mu,
        get("mu", &[k_dim, d_dim])?.reshape([k_dim, d_dim]),
    );
    model.phi = replace(model.phi, get("phi", &[k_dim])?);

    // The nodes before the first coupling (a reshape and the Haar transform on (Fake)MNIST)
    // hold no tensors; from the first coupling on, the reference has one node per block of ours.
    let mut k = (0..8)
        .find(|k| source(&format!("inn.module_list.{k}.w")).is_some())
        .ok_or("the file has no coupling `inn.module_list.<k>.w` among its first nodes")?;
    for block in model.inn.blocks.iter_mut() {
        if matches!(block, FlowBlock::Haar(_)) {
            continue;
        }
        let node = format!("inn.module_list.{k}");
        match block {
            FlowBlock::AllInOne(b) => {
                let relu = usize::from(b.subnet.relu_first());
                load_conv_subnet(&mut b.subnet, &format!("{node}.s"), relu, relu + 7, &get)?;
                let c = b.rotation.weight.dims()[0];
                let w = get(&format!("{node}.w"), &[c, c, 1, 1])?.reshape([c, c]);
                b.rotation.weight = replace(b.rotation.weight.clone(), w);
                let scale = get(&format!("{node}.act_norm"), &[1, c, 1, 1])?;
                let offset = get(&format!("{node}.act_offset"), &[1, c, 1, 1])?;
                b.act_norm.log_scale = replace(b.act_norm.log_scale.clone(), scale);
                b.act_norm.offset = replace(b.act_norm.offset.clone(), offset);
            }
            FlowBlock::Downsample(b) => {
                // The strided subnet has no dropout layer, the low-resolution one has.
                for (net, prefix, last) in [(&mut b.s_hi, "s_hi", 6), (&mut b.s_lo, "s_lo", 7)] {
                    load_conv_subnet(net, &format!("{node}.{prefix}"), 0, last, &get)?;
                }
            }
            FlowBlock::Glow(b) => {
                // FrEIA 0.2 names the subnets `subnet1`/`subnet2`, the 2020 FrEIA `s1`/`s2`.
                let new = source(&format!("{node}.subnet1.0.weight")).is_some();
                for (net, i) in [(&mut b.s1, 1), (&mut b.s2, 2)] {
                    let prefix = if new {
                        format!("{node}.subnet{i}")
                    } else {
                        format!("{node}.s{i}")
                    };
                    load_linear(&mut net.fc1, &format!("{prefix}.0"), &get)?;
                    load_linear(&mut net.fc2, &format!("{prefix}.3"), &get)?;
                }
            }
            FlowBlock::Dct(_) | FlowBlock::Permutation(_) => {}
            other => {
                return Err(format!(
                    "the reference IB-INN has no {} block (node {k})",
                    other.kind()
                ));
            }
        }
        k += 1;
    }
    Ok(model)
}

type Getter<'a, B> = dyn Fn(&str, &[usize]) -> Result<Tensor<B, 1>, String> + 'a;

/// A conv subnet stored as an `nn.Sequential` at `prefix`: its first convolution at position
/// `first` (after a leading ReLU, if any) with its batch norm next, the second convolution and
/// batch norm three positions on (past a ReLU), and the last convolution at `last`.
fn load_conv_subnet<B: Backend>(
    net: &mut ConvSubnet<B>,
    prefix: &str,
    first: usize,
    last: usize,
    get: &Getter<B>,
) -> Result<(), String> {
    load_conv(&mut net.conv1, &format!("{prefix}.{first}"), get)?;
    load_bn(&mut net.bn1, &format!("{prefix}.{}", first + 1), get)?;
    load_conv(&mut net.conv2, &format!("{prefix}.{}", first + 3), get)?;
    load_bn(&mut net.bn2, &format!("{prefix}.{}", first + 4), get)?;
    load_conv(&mut net.conv3, &format!("{prefix}.{last}"), get)
}

fn load_conv<B: Backend>(conv: &mut Conv2d<B>, key: &str, get: &Getter<B>) -> Result<(), String> {
    let shape = conv.weight.dims();
    let w = get(&format!("{key}.weight"), &shape)?.reshape(shape);
    conv.weight = replace(conv.weight.clone(), w);
    if let Some(bias) = conv.bias.take() {
        let b = get(&format!("{key}.bias"), &bias.dims())?;
        conv.bias = Some(replace(bias, b));
    }
    Ok(())
}

fn load_bn<B: Backend>(bn: &mut BatchNorm<B>, key: &str, get: &Getter<B>) -> Result<(), String> {
    let c = bn.gamma.dims()[0];
    bn.gamma = replace(bn.gamma.clone(), get(&format!("{key}.weight"), &[c])?);
    bn.beta = replace(bn.beta.clone(), get(&format!("{key}.bias"), &[c])?);
    bn.running_mean = RunningState::new(get(&format!("{key}.running_mean"), &[c])?);
    bn.running_var = RunningState::new(get(&format!("{key}.running_var"), &[c])?);
    Ok(())
}

/// PyTorch stores a linear weight `[out, in]`, burn `[in, out]`.
fn load_linear<B: Backend>(l: &mut Linear<B>, key: &str, get: &Getter<B>) -> Result<(), String> {
    let [i, o] = l.weight.dims();
    let w = get(&format!("{key}.weight"), &[o, i])?
        .reshape([o, i])
        .transpose();
    l.weight = replace(l.weight.clone(), w);
    if let Some(bias) = l.bias.take() {
        let b = get(&format!("{key}.bias"), &[o])?;
        l.bias = Some(replace(bias, b));
    }
    Ok(())
}

/// The new values, keeping the parameter's id and whether it is trained.
fn replace<B: Backend, const D: usize>(
    p: Param<Tensor<B, D>>,
    t: Tensor<B, D>,
) -> Param<Tensor<B, D>> {
    let trained = p.val().is_require_grad();
    p.map(|_| t.set_require_grad(trained))
}

fn strip_unit_dims(s: &[usize]) -> Vec<usize> {
    s.iter().copied().filter(|&d| d != 1).collect()
}
