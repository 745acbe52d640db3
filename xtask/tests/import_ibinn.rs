//! `import-ibinn` on the authors' tiny model (`cfx-flows`' fixture): the run it writes loads,
//! scores and matches their outputs; bad input is refused by name.

use std::path::PathBuf;

use burn::backend::Flex;
use cfx_datasets::DatasetKind;
use cfx_flows::ibinn::IbInnConfig;
use xtask::backend::{BackendKind, run_on};
use xtask::import::ImportJob;
use xtask::train::ibinn::{IbInnTrainConfig, load_trained};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/flows/tests/data/ibinn_reference_tiny.safetensors")
}

/// The fixture's architecture: MNIST's, with 2 couplings of width 4 and 2 of width 8, FC width 16.
fn tiny_config(dir: &std::path::Path) -> PathBuf {
    let mut model = IbInnConfig::mnist();
    (model.stages[0].blocks, model.stages[0].width) = (2, 4);
    (model.stages[1].blocks, model.stages[1].width) = (2, 8);
    model.fc_width = 16;
    let cfg = IbInnTrainConfig {
        model,
        ..Default::default()
    };
    let path = dir.join("tiny.toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    path
}

fn job(weights: PathBuf, run: PathBuf, config: Option<PathBuf>) -> ImportJob {
    ImportJob {
        weights,
        run,
        config,
        dataset: DatasetKind::Mnist,
        test_limit: Some(64),
    }
}

#[test]
fn the_authors_tiny_model_imports_as_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path());
    let run = dir.path().join("authors");
    let r = run_on(
        BackendKind::Flex,
        job(fixture(), run.clone(), Some(config.clone())),
    )
    .unwrap();

    let c = r.check.expect("the fixture has a check batch");
    assert_eq!(c.images, 8);
    assert!(c.max_abs_z_diff <= 1e-4 * c.max_abs_z.max(1.0), "{c:?}");
    assert!(c.max_abs_l_x_diff < 1e-4, "{c:?}");
    assert_eq!(c.prediction_mismatches, 0);
    // One training-mode pass on the same weights: our training path's gradient is theirs.
    let g = r.gradients.expect("the fixture has a gradient batch");
    assert_eq!(g.images, 8);
    assert!((g.loss_ours - g.loss_reference).abs() < 1e-4, "{g:?}");
    assert!(
        (g.grad_norm_ours / g.grad_norm_reference - 1.0).abs() < 1e-3,
        "{g:?}"
    );
    assert!(g.max_abs_grad_mu_diff <= 1e-3 * g.max_abs_grad_mu, "{g:?}");
    assert!(g.max_abs_grad_phi_diff < 1e-6, "{g:?}");
    // Three optimiser steps from the same weights on the same batches: our update is theirs.
    let s = r.steps.expect("the fixture has step batches");
    assert_eq!((s.steps, s.images_per_step), (3, 8));
    for (ours, theirs) in s.loss_ours.iter().zip(&s.loss_reference) {
        assert!((ours - theirs).abs() < 1e-4, "{s:?}");
    }
    for (ours, theirs) in s.grad_norm_ours.iter().zip(&s.grad_norm_reference) {
        assert!((ours / theirs - 1.0).abs() < 1e-4, "{s:?}");
    }
    // Every parameter and batch-norm statistic within 0.1 % of how far the steps moved it (the
    // biased running variance burn keeps was 2 % off), and the stepped models agree.
    assert_eq!(s.tensors, 94);
    assert!(
        s.worst.max_abs_diff <= 1e-3 * s.worst.max_abs_moved.max(1e-3),
        "{s:?}"
    );
    let (dz, z) = (s.max_abs_z_diff.unwrap(), s.max_abs_z.unwrap());
    assert!(dz <= 1e-4 * z, "{s:?}");
    assert_eq!(r.test.n, 64);
    assert!(r.test.bpd_reference_convention.is_finite());

    // The run is one the other commands read.
    let model = load_trained::<Flex>(&run, &Default::default()).unwrap();
    assert_eq!(model.dim(), 784);
    assert!(run.join("test.json").exists() && run.join("import.json").exists());

    // Importing into the same folder again would overwrite it: refused.
    let again = run_on(BackendKind::Flex, job(fixture(), run, Some(config))).unwrap_err();
    assert!(format!("{again:#}").contains("already holds"), "{again:#}");
}

#[test]
fn bad_weights_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.safetensors");
    let e = run_on(
        BackendKind::Flex,
        job(missing.clone(), dir.path().join("a"), None),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("nothing.safetensors"), "{e:#}");

    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a tensor file").unwrap();
    let e = run_on(BackendKind::Flex, job(junk, dir.path().join("b"), None)).unwrap_err();
    assert!(format!("{e:#}").contains("not a safetensors file"), "{e:#}");

    // The fixture under the paper's full architecture (the default): the wrong shapes are named.
    let e = run_on(
        BackendKind::Flex,
        job(fixture(), dir.path().join("c"), None),
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("has shape") && msg.contains("another architecture"),
        "{msg}"
    );
    assert!(
        !dir.path().join("c").join("model.mpk").exists(),
        "nothing is written"
    );

    // Step batches without their losses: the missing key is named, nothing is written.
    let bytes = std::fs::read(fixture()).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "check.steps.loss")
        .collect();
    let cut = dir.path().join("cut.safetensors");
    safetensors::serialize_to_file(kept, None, &cut).unwrap();
    let config = tiny_config(dir.path());
    let e = run_on(
        BackendKind::Flex,
        job(cut, dir.path().join("d"), Some(config)),
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("step batches") && msg.contains("check.steps.loss"),
        "{msg}"
    );
    assert!(!dir.path().join("d").join("model.mpk").exists());
}
