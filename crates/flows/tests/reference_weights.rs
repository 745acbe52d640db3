//! The authors' IB-INN code and ours on the same weights.
//!
//! `data/ibinn_reference_tiny.safetensors` was written by `bench/reference/export_ibinn.py
//! --build --tiny --steps 10 --seed 7 --check 8 --no-nodes --grad-batch 8 --step-batches 3` (its
//! gradient and step batches are checked by xtask's `import_ibinn` test): their `model.py` and
//! `inn_architecture.py` (ECINN) with IB-INN's blocks, on MNIST's architecture with fewer and
//! narrower blocks (2 couplings of width 4 at 14×14, 2 of width 8 at 7×7, a fully connected
//! coupling of width 16), trained 10 steps without dropout so that the batch-norm statistics are not the initial
//! ones, then run in eval mode on the first 8 clean test images. Loading its weights into our
//! model must give their latent codes, `L_x` and predictions.

use burn::backend::Flex;
use burn::prelude::*;
use cfx_flows::ibinn::{IbInn, IbInnConfig, StoredTensor, load_reference_weights};
use safetensors::SafeTensors;

type B = Flex;

const FIXTURE: &[u8] = include_bytes!("data/ibinn_reference_tiny.safetensors");

fn tiny_config() -> IbInnConfig {
    let mut cfg = IbInnConfig::mnist();
    (cfg.stages[0].blocks, cfg.stages[0].width) = (2, 4);
    (cfg.stages[1].blocks, cfg.stages[1].width) = (2, 8);
    cfg.fc_width = 16;
    cfg
}

fn read(file: &SafeTensors, key: &str) -> Option<StoredTensor> {
    let t = file.tensor(key).ok()?;
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Some((t.shape().to_vec(), v))
}

fn loaded(file: &SafeTensors) -> IbInn<B> {
    let model = tiny_config().init::<B>(&Default::default());
    load_reference_weights(model, &|k: &str| read(file, k)).expect("the fixture loads")
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn their_weights_give_their_outputs() {
    let file = SafeTensors::deserialize(FIXTURE).unwrap();
    let model = loaded(&file);
    let (shape, x) = read(&file, "check.x").unwrap();
    let n = shape[0];
    let x = Tensor::<B, 4>::from_data(TensorData::new(x, [n, 1, 28, 28]), &Default::default());
    // A backend without autodiff runs the batch norms on their running statistics, as their
    // eval mode does.
    let (z, log_det) = model.encode(x);
    let out = model.output_from_latent(z.clone(), log_det, None);

    let z_ref = read(&file, "check.z").unwrap().1;
    let z = values(z);
    let scale = z_ref.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = z
        .iter()
        .zip(&z_ref)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-4 * scale.max(1.0),
        "max |Δz| {worst} of max |z| {scale}"
    );

    // Their L_x counts the DCT's log-determinant their way; ours counts it truly.
    let offset = (model.reference_log_det_offset() / model.dim() as f64) as f32;
    let l_x_ref = read(&file, "check.l_x").unwrap().1;
    for (i, (ours, theirs)) in values(out.l_x).iter().zip(&l_x_ref).enumerate() {
        assert!(
            (ours + offset - theirs).abs() < 1e-4,
            "image {i}: L_x {} against their {theirs}",
            ours + offset
        );
    }
    let argmax = |row: &[f32]| {
        (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap()
    };
    let logits_ref = read(&file, "check.logits").unwrap().1;
    let logits = values(out.logits);
    for (ours, theirs) in logits.chunks(10).zip(logits_ref.chunks(10)) {
        assert_eq!(argmax(ours), argmax(theirs));
    }
}

#[test]
fn a_missing_or_misshapen_tensor_is_named() {
    let file = SafeTensors::deserialize(FIXTURE).unwrap();
    let model = || tiny_config().init::<B>(&Default::default());

    let gone = "inn.module_list.3.s.8.bias";
    assert!(read(&file, gone).is_some(), "the fixture has {gone}");
    let err = load_reference_weights(model(), &|k: &str| {
        if k == gone { None } else { read(&file, k) }
    })
    .unwrap_err();
    assert!(err.contains(gone), "{err}");

    // The paper's full architecture is not the fixture's: refused, naming a tensor and both shapes.
    let full = IbInnConfig::mnist().init::<B>(&Default::default());
    let err = load_reference_weights(full, &|k: &str| read(&file, k)).unwrap_err();
    assert!(
        err.contains("has shape") && err.contains("another architecture"),
        "{err}"
    );
}
