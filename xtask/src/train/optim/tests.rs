use super::per_tensor::PerTensorSgd;
use super::*;
use burn::backend::{Autodiff, Flex};
use burn::nn::{Linear, LinearConfig};

type AB = Autodiff<Flex>;

#[derive(Module, Debug)]
struct Two<B: Backend> {
    a: Linear<B>,
    b: Param<Tensor<B, 1>>,
}

fn model<B: Backend>() -> Two<B> {
    let d = Default::default();
    Two {
        a: LinearConfig::new(2, 1).with_bias(false).init(&d),
        b: Param::from_tensor(Tensor::from_floats([1.0, 2.0], &d)),
    }
}

fn values(m: &Two<AB>) -> (Vec<f32>, Vec<f32>) {
    (
        m.a.weight.val().into_data().to_vec().unwrap(),
        m.b.val().into_data().to_vec().unwrap(),
    )
}

/// loss = Σ a·x + 10·Σ b: ∂/∂a = x = (3, 4), ∂/∂b = (10, 10); ‖g‖ = √(9+16+200) = 15.
fn grads<B: AutodiffBackend>(m: &Two<B>) -> B::Gradients {
    let d = Default::default();
    let x = Tensor::<B, 2>::from_floats([[3.0, 4.0]], &d);
    (m.a.forward(x).sum() + m.b.val().sum().mul_scalar(10.0)).backward()
}

#[test]
fn clips_by_the_global_norm_and_applies_group_learning_rates() {
    let m = model();
    let (a0, b0) = values(&m);
    let plain = SgdGroup {
        lr_factor: 1.0,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let mut opt = GroupedSgd::<AB, Two<AB>>::new(plain, Some(1.5)).with_group(
        vec![m.b.id],
        SgdGroup {
            lr_factor: 3.0,
            ..plain
        },
    );
    let g = grads(&m);
    let (m, norm) = opt.step(0.1, m, g);
    assert!((norm.into_scalar() - 15.0).abs() < 1e-4);
    let (a1, b1) = values(&m);
    // Clipped gradients are the originals × 1.5/15 = 0.1.
    assert!((a0[0] - a1[0] - 0.1 * 0.3).abs() < 1e-6, "{a0:?} {a1:?}");
    assert!((a0[1] - a1[1] - 0.1 * 0.4).abs() < 1e-6);
    assert!((b0[0] - b1[0] - 0.3 * 1.0).abs() < 1e-6, "{b0:?} {b1:?}");
}

/// Counts its calls and packs as the portable version does, so that it changes nothing for
/// the other tests of this process that step on ndarray.
#[cfg(feature = "ndarray")]
fn counting_pack(
    parts: Vec<FloatTensor<burn::backend::NdArray>>,
    offsets: &[usize],
    total: usize,
) -> FloatTensor<burn::backend::NdArray> {
    PACKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    pack_by_cat::<burn::backend::NdArray>(parts, offsets, total)
}

#[cfg(feature = "ndarray")]
static PACKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(feature = "ndarray")]
#[test]
fn a_registered_pack_gathers_the_vectors() {
    type NB = Autodiff<burn::backend::NdArray>;
    register_pack::<burn::backend::NdArray>(counting_pack);
    let m = model::<NB>();
    let a0: Vec<f32> = m.a.weight.val().into_data().to_vec().unwrap();
    let plain = SgdGroup {
        lr_factor: 1.0,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let mut opt = GroupedSgd::<NB, Two<NB>>::new(plain, None);
    let before = PACKS.load(std::sync::atomic::Ordering::SeqCst);
    let g = grads(&m);
    let (m, _) = opt.step(0.1, m, g);
    let calls = PACKS.load(std::sync::atomic::Ordering::SeqCst) - before;
    // The velocities, the gradients and the parameters.
    assert!(calls >= 3, "the registered pack ran {calls} times");
    let a1: Vec<f32> = m.a.weight.val().into_data().to_vec().unwrap();
    assert!((a0[0] - a1[0] - 0.3).abs() < 1e-6, "{a0:?} {a1:?}");
    assert!((a0[1] - a1[1] - 0.4).abs() < 1e-6, "{a0:?} {a1:?}");
}

#[test]
fn momentum_and_weight_decay_follow_pytorch_sgd() {
    // PyTorch: g' = g + wd·p; v = μv + g'; p -= lr·v (first step v = g').
    let m = model();
    let g = SgdGroup {
        lr_factor: 1.0,
        momentum: 0.9,
        weight_decay: 0.5,
    };
    let mut opt = GroupedSgd::<AB, Two<AB>>::new(g, None);
    let (_, b0) = values(&m);
    let gr = grads(&m);
    let (m, _) = opt.step(0.01, m, gr);
    let (_, b1) = values(&m);
    let v1: Vec<f32> = b0.iter().map(|p| 10.0 + 0.5 * p).collect();
    for i in 0..2 {
        assert!((b1[i] - (b0[i] - 0.01 * v1[i])).abs() < 1e-5);
    }
    let gr = grads(&m);
    let (m, _) = opt.step(0.01, m, gr);
    let (_, b2) = values(&m);
    for i in 0..2 {
        let v2 = 0.9 * v1[i] + 10.0 + 0.5 * b1[i];
        assert!((b2[i] - (b1[i] - 0.01 * v2)).abs() < 1e-5);
    }
    // The record round-trips and keeps the velocity: a reloaded optimiser steps exactly
    // like the one it was saved from.
    let mut reloaded = GroupedSgd::<AB, Two<AB>>::new(g, None)
        .load_record(opt.to_record())
        .unwrap();
    let (ma, _) = reloaded.step(0.01, m.clone(), grads(&m));
    let (mb, _) = opt.step(0.01, m.clone(), grads(&m));
    assert_eq!(values(&ma), values(&mb));
    let (mc, _) = GroupedSgd::<AB, Two<AB>>::new(g, None).step(0.01, m.clone(), grads(&m));
    assert_ne!(
        values(&ma),
        values(&mc),
        "a fresh optimiser has no velocity"
    );
}

/// Parameters of ranks 1, 2 and 4 in three groups (one without momentum), one tensor that never
/// gets a gradient, and one (`phi`) that gets none in some steps.
#[derive(Module, Debug)]
struct Mixed<B: Backend> {
    lin: Linear<B>,
    conv: Param<Tensor<B, 4>>,
    mu: Param<Tensor<B, 2>>,
    phi: Param<Tensor<B, 1>>,
    unused: Param<Tensor<B, 1>>,
}

fn ramp<const D: usize>(shape: [usize; D], scale: f32) -> Tensor<AB, D> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| scale * ((i as f32 * 0.7).sin() + 0.1))
        .collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// Every value set here: a lazily initialised parameter would draw anew in each clone.
fn mixed() -> Mixed<AB> {
    let d = Default::default();
    let mut lin = LinearConfig::new(3, 4).init(&d);
    lin.weight = Param::from_tensor(ramp([3, 4], 0.5));
    lin.bias = Some(Param::from_tensor(ramp([4], -0.3)));
    Mixed {
        lin,
        conv: Param::from_tensor(ramp([2, 3, 2, 2], 1.0)),
        mu: Param::from_tensor(ramp([2, 3], 2.0)),
        phi: Param::from_tensor(ramp([2], 1.0)),
        unused: Param::from_tensor(ramp([3], 1.0)),
    }
}

/// A loss whose gradient norm starts above the clip of 1.0 used below and changes every step.
fn mixed_grads(m: &Mixed<AB>, step: usize, with_phi: bool) -> <AB as AutodiffBackend>::Gradients {
    let x = ramp([5, 3], 1.0 + step as f32 * 0.3);
    let mut loss = m.lin.forward(x.clone()).tanh().sum().mul_scalar(3.0)
        + (m.conv.val().powf_scalar(2.0) + m.conv.val() * ramp([2, 3, 2, 2], 0.4)).sum()
        + (m.mu.val() * x.narrow(0, 0, 2)).sum();
    if with_phi {
        loss = loss + m.phi.val().exp().sum();
    }
    loss.backward()
}

fn mixed_values(m: &Mixed<AB>) -> Vec<f32> {
    let mut out: Vec<f32> = vec![];
    let mut push = |t: Tensor<AB, 1>| out.extend(t.into_data().to_vec::<f32>().unwrap());
    push(m.lin.weight.val().flatten(0, 1));
    push(m.lin.bias.as_ref().unwrap().val());
    push(m.conv.val().flatten(0, 3));
    push(m.mu.val().flatten(0, 1));
    push(m.phi.val());
    push(m.unused.val());
    out
}

const NET: SgdGroup = SgdGroup {
    lr_factor: 1.0,
    momentum: 0.9,
    weight_decay: 0.05,
};
const MU: SgdGroup = SgdGroup {
    lr_factor: 3.0,
    momentum: 0.5,
    weight_decay: 0.0,
};
const PHI: SgdGroup = SgdGroup {
    lr_factor: 0.5,
    momentum: 0.0,
    weight_decay: 0.0,
};

fn flat_sgd(m: &Mixed<AB>) -> GroupedSgd<AB, Mixed<AB>> {
    GroupedSgd::new(NET, Some(1.0))
        .with_group(vec![m.mu.id], MU)
        .with_group(vec![m.phi.id], PHI)
}

fn per_tensor(m: &Mixed<AB>) -> PerTensorSgd<AB, Mixed<AB>> {
    PerTensorSgd::new(NET, Some(1.0))
        .with_group(vec![m.mu.id], MU)
        .with_group(vec![m.phi.id], PHI)
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
            "{what}: {a:?} vs {b:?}"
        );
    }
}

/// `phi` has no gradient in steps 2 and 3, which moves the flat layout and back.
fn with_phi(step: usize) -> bool {
    !(2..4).contains(&step)
}

#[test]
fn the_flat_step_matches_burns_sgd_tensor_by_tensor() {
    let start = mixed();
    let (mut a, mut b) = (start.clone(), start.clone());
    let (mut fa, mut fb) = (flat_sgd(&a), per_tensor(&b));
    let mut clipped = 0;
    for step in 0..7 {
        let lr = 0.05 * (1 + step % 3) as f64;
        let (ma, na) = fa.step(lr, a.clone(), mixed_grads(&a, step, with_phi(step)));
        let (mb, nb) = fb.step(lr, b.clone(), mixed_grads(&b, step, with_phi(step)));
        let (na, nb): (f32, f32) = (na.into_scalar(), nb.into_scalar());
        assert!(
            (na - nb).abs() < 1e-4 * nb,
            "step {step}: norm {na} vs {nb}"
        );
        clipped += usize::from(nb > 1.0);
        (a, b) = (ma, mb);
        assert_close(
            &mixed_values(&a),
            &mixed_values(&b),
            &format!("step {step}"),
        );
    }
    assert!(clipped >= 3, "the clip was active in {clipped} steps only");
    let (v0, v1) = (mixed_values(&start), mixed_values(&a));
    let n = v0.len();
    assert_eq!(v0[n - 3..], v1[n - 3..], "a tensor without gradient moved");
    assert!(
        v0.iter().zip(&v1).filter(|(x, y)| x != y).count() >= n - 3,
        "every tensor with a gradient moves"
    );
    // The stepped parameters stay trainable: the next step still differentiates them.
    assert!(a.conv.val().is_require_grad());
}

#[test]
fn records_carry_over_between_the_per_tensor_and_the_flat_optimiser() {
    // Steps 0..3 in one optimiser, its record loaded into the other, steps 3..6 in both; the
    // two hand-overs (per-tensor → flat and back) must step as one optimiser would have.
    let start = mixed();
    let mut reference = start.clone();
    let mut whole = per_tensor(&start);
    for step in 0..6 {
        let g = mixed_grads(&reference, step, with_phi(step));
        reference = whole.step(0.1, reference.clone(), g).0;
    }

    let mut m = start.clone();
    let mut first = per_tensor(&start);
    for step in 0..3 {
        let g = mixed_grads(&m, step, with_phi(step));
        m = first.step(0.1, m.clone(), g).0;
    }
    let mut second = flat_sgd(&start).load_record(first.to_record()).unwrap();
    // A record taken before the first flat step (the parked states) is the loaded one.
    assert_eq!(second.to_record().iter().map(|g| g.len()).sum::<usize>(), 5);
    let mut n = m.clone();
    for step in 3..6 {
        let g = mixed_grads(&m, step, with_phi(step));
        m = second.step(0.1, m.clone(), g).0;
    }
    assert_close(
        &mixed_values(&m),
        &mixed_values(&reference),
        "per-tensor → flat",
    );

    let mut back = per_tensor(&start)
        .load_record(flat_record_after(&start, 3))
        .unwrap();
    for step in 3..6 {
        let g = mixed_grads(&n, step, with_phi(step));
        n = back.step(0.1, n.clone(), g).0;
    }
    assert_close(
        &mixed_values(&n),
        &mixed_values(&reference),
        "flat → per-tensor",
    );
}

/// The flat optimiser's record after `steps` steps from `start`.
fn flat_record_after(start: &Mixed<AB>, steps: usize) -> GroupedSgdRecord<AB, Mixed<AB>> {
    let mut m = start.clone();
    let mut opt = flat_sgd(start);
    for step in 0..steps {
        let g = mixed_grads(&m, step, with_phi(step));
        m = opt.step(0.1, m.clone(), g).0;
    }
    opt.to_record()
}

/// Convolution weights stored channels-last step exactly as in burn's layout, through layout
/// changes (`phi` leaves and rejoins), and their records carry over both ways.
#[test]
fn channels_last_weights_step_and_record_as_burns_layout() {
    let start = mixed();
    let run = |channels_last: bool, from: usize, to: usize, m: Mixed<AB>, record| {
        let mut opt = flat_sgd(&start).with_channels_last(channels_last);
        if let Some(r) = record {
            opt = opt.load_record(r).unwrap();
        }
        let mut m = m;
        let mut trail = vec![];
        for step in from..to {
            let g = mixed_grads(&m, step, with_phi(step));
            m = opt.step(0.1, m.clone(), g).0;
            trail.push(mixed_values(&m));
        }
        (m, opt.to_record(), trail)
    };
    let (_, _, standard) = run(false, 0, 7, start.clone(), None);
    let (_, _, last) = run(true, 0, 7, start.clone(), None);
    for (step, (a, b)) in last.iter().zip(&standard).enumerate() {
        assert_close(a, b, &format!("step {step}"));
    }
    for (first, second) in [(true, false), (false, true)] {
        let (m, record, _) = run(first, 0, 3, start.clone(), None);
        let (_, _, rest) = run(second, 3, 7, m, Some(record));
        assert_close(
            rest.last().unwrap(),
            standard.last().unwrap(),
            &format!("channels-last {first} → {second}"),
        );
    }
}
