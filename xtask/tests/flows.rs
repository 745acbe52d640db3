//! `train realnvp|glow` end to end on tiny models (bits/dim, samples grid, resume), and the
//! diffeo explainer ascending in their latent spaces.

mod common;

use std::path::Path;

use cfx_flows::blocks::InvConvKind;
use cfx_flows::glow::GlowConfig;
use cfx_flows::realnvp::RealNvpConfig;
use common::tiny_aux;
use xtask::backend::{BackendKind, run_on};
use xtask::explain::inputs::Selection;
use xtask::explain::{ExplainJob, Method, TargetMode};
use xtask::train::supervised::{AuxModel, SupervisedTrainConfig, SupervisedTrainJob};

fn train(root: &Path, model: AuxModel, epochs: usize, resume: bool) -> f64 {
    train_on(root, model, epochs, resume, 1)
}

fn train_on(root: &Path, model: AuxModel, epochs: usize, resume: bool, replicas: usize) -> f64 {
    let mut cfg = SupervisedTrainConfig::flow(cfx_datasets::DatasetKind::Mnist, model);
    cfg.epochs = epochs;
    cfg.lr = 1e-3;
    cfg.train_limit = Some(128);
    cfg.test_limit = Some(64);
    cfg.validate().unwrap();
    let job = SupervisedTrainJob {
        cfg,
        run_root: root.to_path_buf(),
        resume,
        replicas,
    };
    let last = run_on(BackendKind::Flex, job).unwrap();
    assert_eq!(last.epoch, epochs);
    assert!(last.test_accuracy.is_none());
    last.test_loss
}

fn diffeo(flow: &Path, cnn: &Path, out: &Path) -> anyhow::Result<usize> {
    let steps = out.with_extension("toml");
    std::fs::write(
        &steps,
        "max_steps = 5\nthreshold = 0.9\nlearning_rate = 0.05\n",
    )
    .unwrap();
    let job = ExplainJob {
        method: Method::Diffeo,
        model: cnn.to_path_buf(),
        autoencoder: None,
        latent: Some(flow.to_path_buf()),
        dataset: None,
        data_dir: None,
        selection: Selection::Indices(vec![0]),
        target: TargetMode::Random,
        alphas: vec![],
        delta: Default::default(),
        pixels: Default::default(),
        strip: None,
        method_config: Some(steps),
        batch_size: 4,
        seed: 0,
        scale: 2,
        out: out.to_path_buf(),
    };
    Ok(run_on(BackendKind::Flex, job)?.queries)
}

#[test]
fn realnvp_trains_resumes_samples_and_carries_the_diffeo_ascent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("realnvp");
    let model = AuxModel::RealNvp(RealNvpConfig::tiny());
    let first = train(&root, model.clone(), 1, false);
    // Bits per dimension of 8-bit pixels: a model this small sits well between 0 and 8 + logit.
    assert!(first > 0.0 && first < 12.0, "test bits/dim {first}");
    assert!(root.join("samples.png").exists());
    let again = std::panic::catch_unwind(|| train(&root, model.clone(), 1, false));
    assert!(
        again.is_err(),
        "a second run into the same folder is refused"
    );
    let second = train(&root, model, 2, true);
    assert!(second < first + 0.5, "{first} → {second}");
    let toml = std::fs::read_to_string(root.join("model.toml")).unwrap();
    assert!(toml.contains("kind = \"real_nvp\""), "{toml}");

    let cnn = dir.path().join("cnn");
    tiny_aux(&cnn, false);
    assert_eq!(diffeo(&root, &cnn, &dir.path().join("cf")).unwrap(), 1);
    let e = format!(
        "{:#}",
        diffeo(&cnn, &cnn, &dir.path().join("bad")).unwrap_err()
    );
    assert!(e.contains("holds a classifier, not a flow"), "{e}");
}

/// Both 1×1 convolutions; the SVD one data-parallel on two replicas (the CPU has one device:
/// both run on it, each on half of every batch).
#[test]
fn glow_trains_with_both_invertible_convolutions() {
    let dir = tempfile::tempdir().unwrap();
    for (conv, replicas) in [(InvConvKind::Lu, 1), (InvConvKind::Svd, 2)] {
        let root = dir.path().join(format!("glow-{conv:?}"));
        let cfg = GlowConfig::tiny()
            .with_n_flow(1)
            .with_width(8)
            .with_conv(conv);
        let bpd = train_on(&root, AuxModel::Glow(cfg), 1, false, replicas);
        assert!(bpd.is_finite() && bpd > 0.0, "{conv:?}: {bpd}");
        assert!(root.join("samples.png").exists());
    }
}

/// A CelebA-style folder (flat JPEGs beside `list_eval_partition.txt`) of 40 × 40 RGB
/// images, scaled to 16 × 16: Glow trains on it with both 1×1 convolutions and draws colour
/// samples.
#[test]
fn glow_trains_on_an_rgb_image_folder() {
    use image::{Rgb, RgbImage};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("faces");
    let images = data.join("img_align_celeba");
    std::fs::create_dir_all(&images).unwrap();
    let mut partition = String::new();
    for i in 0..48u32 {
        let name = format!("{:06}.jpg", i + 1);
        // A bright disc on a coloured background, both varying per image.
        let img = RgbImage::from_fn(40, 48, |x, y| {
            let (dx, dy) = (x as i32 - 20, y as i32 - 24);
            if dx * dx + dy * dy < (8 + (i % 7) as i32).pow(2) {
                Rgb([230, 200, (40 + 4 * i) as u8])
            } else {
                Rgb([(5 * i) as u8, 60, 120])
            }
        });
        img.save(images.join(&name)).unwrap();
        partition.push_str(&format!("{name} {}\n", if i % 4 == 3 { 2 } else { 0 }));
    }
    std::fs::write(data.join("list_eval_partition.txt"), partition).unwrap();
    for conv in [InvConvKind::Lu, InvConvKind::Svd] {
        let root = dir.path().join(format!("glow-{conv:?}"));
        let model = GlowConfig::celeba()
            .with_input_shape([3, 16, 16])
            .with_n_block(2)
            .with_n_flow(1)
            .with_width(8)
            .with_conv(conv);
        let mut cfg = SupervisedTrainConfig::flow(
            cfx_datasets::DatasetKind::ImageFolder,
            AuxModel::Glow(model),
        );
        cfg.data_dir = Some(data.clone());
        cfg.epochs = 1;
        cfg.batch_size = 12;
        cfg.lr = 1e-3;
        cfg.validate().unwrap();
        let job = SupervisedTrainJob {
            cfg,
            run_root: root.clone(),
            resume: false,
            replicas: 1,
        };
        let bpd = run_on(BackendKind::Flex, job).unwrap().test_loss;
        assert!(
            bpd.is_finite() && bpd > 0.0 && bpd < 16.0,
            "{conv:?}: {bpd}"
        );
        let samples = image::open(root.join("samples.png")).unwrap().to_rgb8();
        let coloured = samples.pixels().any(|p| p[0] != p[1] || p[1] != p[2]);
        assert!(coloured, "{conv:?}: the samples grid is in colour");
    }
}

#[test]
fn helix_experiment_runs_and_reuses_its_models() {
    let dir = tempfile::tempdir().unwrap();
    let job = xtask::helix::HelixJob {
        training: xtask::helix::HelixTraining {
            flow_steps: 40,
            flow_lr: 1e-3,
            batch_size: 64,
            classifier_steps: 150,
            classifier_lr: 1e-2,
            seed: 3,
        },
        retrain: false,
        runs: 6,
        threshold: 0.9,
        max_steps: 60,
        ascent_lr: 5e-2,
        spectrum_points: 2,
        out: dir.path().to_path_buf(),
    };
    let r = run_on(BackendKind::Flex, job.clone()).unwrap();
    assert!(r.classifier_accuracy > 0.8, "{}", r.classifier_accuracy);
    assert_eq!((r.latent.runs, r.pixel.runs), (6, 6));
    // Pixel ascent on an MLP this smooth always gets there; its end points leave the helix.
    assert_eq!(r.pixel.successes, 6);
    assert!(r.pixel.median_distance > 0.0);
    let e = r.inverse_metric_eigenvalues;
    assert!(e[0] >= e[1] && e[1] >= e[2] && e[2] > 0.0, "{e:?}");
    assert!(dir.path().join("flow.mpk").exists() && dir.path().join("helix.json").exists());
    let again = run_on(BackendKind::Flex, job).unwrap();
    assert_eq!(
        again.flow_nll_bits, r.flow_nll_bits,
        "the saved flow is reused"
    );
}
