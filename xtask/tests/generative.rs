//! `train dcgan → gan-encoder → c3lt` and `train vae` end to end on tiny models, with resume,
//! then `explain --method c3lt` and diffeo over the VAE and the GAN.

mod common;

use std::path::Path;

use cfx_datasets::DatasetKind;
use common::{tiny_aux, tiny_cnn, tiny_model};
use xtask::backend::{BackendKind, run_on};
use xtask::explain::inputs::Selection;
use xtask::explain::{ExplainJob, Method, TargetMode};
use xtask::train::c3lt::{C3ltTrainConfig, C3ltTrainJob};
use xtask::train::gan::{EncoderTrainConfig, EncoderTrainJob, GanTrainConfig, GanTrainJob};
use xtask::train::supervised::{AuxModel, SupervisedTrainConfig, SupervisedTrainJob};

fn tiny_gan(encoder: bool) -> GanTrainConfig {
    let mut cfg = if encoder {
        GanTrainConfig::encoder(DatasetKind::Mnist)
    } else {
        GanTrainConfig::dcgan(DatasetKind::Mnist)
    };
    cfg.model = cfx_generative::DcganConfig::tiny();
    cfg.epochs = 1;
    cfg.batch_size = 32;
    cfg.train_limit = Some(128);
    cfg.test_limit = Some(32);
    cfg
}

fn explain(method: Method, cnn: &Path, latent: &Path, out: &Path) -> xtask::explain::ExplainReport {
    let steps = out.with_extension("toml");
    std::fs::write(&steps, "max_steps = 3\nlearning_rate = 0.05\n").unwrap();
    let job = ExplainJob {
        method,
        model: cnn.to_path_buf(),
        autoencoder: None,
        latent: Some(latent.to_path_buf()),
        dataset: None,
        data_dir: None,
        selection: Selection::Indices(vec![0, 1, 2, 3]),
        target: TargetMode::Random,
        alphas: vec![],
        delta: Default::default(),
        pixels: Default::default(),
        strip: None,
        method_config: (method == Method::Diffeo).then_some(steps),
        batch_size: 4,
        seed: 0,
        scale: 2,
        out: out.to_path_buf(),
    };
    run_on(BackendKind::Flex, job).unwrap()
}

/// `invert` on an encoder run: with no steps, `find_z` from `E(x)` is the encoder's own
/// reconstruction; with some, both optimisations lower the squared error they minimise.
fn check_invert(enc: &Path, out: &Path) {
    let job = |steps| xtask::invert::InvertJob {
        gan: enc.to_path_buf(),
        classes: vec![],
        count: 6,
        batch_size: 4,
        steps,
        lr: 0.01,
        out: out.to_path_buf(),
    };
    let mse = |r: &xtask::invert::InvertReport, m: &str| {
        let row = r.reconstructions.iter().find(|x| x.method == m);
        row.unwrap_or_else(|| panic!("no {m} in {r:?}")).mse_unit
    };
    let (enc_row, refined, random) = (
        "the encoder: E(x)",
        "find_z from E(x)",
        "find_z from N(0, I)",
    );
    let none = run_on(BackendKind::Flex, job(0)).unwrap();
    assert_eq!(none.images, 6);
    assert_eq!(none.classes, vec![4, 9], "the encoder run's classes");
    assert!(
        (mse(&none, refined) - mse(&none, enc_row)).abs() < 1e-9,
        "{none:?}"
    );
    assert!(out.join("invert.png").exists() && out.join("invert.json").exists());
    let some = run_on(BackendKind::Flex, job(20)).unwrap();
    assert!(mse(&some, refined) < mse(&some, enc_row), "{some:?}");
    assert!(mse(&some, random) < mse(&none, random), "{none:?} {some:?}");
    assert!(mse(&some, enc_row) == mse(&none, enc_row));
}

#[test]
fn dcgan_encoder_and_c3lt_train_resume_and_explain() {
    let dir = tempfile::tempdir().unwrap();
    let (gan, enc, cnn, maps) = (
        dir.path().join("gan"),
        dir.path().join("enc"),
        dir.path().join("cnn"),
        dir.path().join("c3lt"),
    );
    let job = |cfg: GanTrainConfig, resume| GanTrainJob {
        cfg,
        run_root: gan.clone(),
        resume,
    };
    let first = run_on(BackendKind::Flex, job(tiny_gan(false), false)).unwrap();
    assert_eq!(first.epoch, 1);
    assert!(first.loss_d.is_finite() && first.loss_g.is_finite());
    assert!(gan.join("samples.png").exists() && gan.join("discriminator.mpk").exists());
    let mut more = tiny_gan(false);
    more.epochs = 2;
    let second = run_on(BackendKind::Flex, job(more, true)).unwrap();
    assert_eq!(second.epoch, 2, "resumed after the first epoch");

    let enc_job = |dataset| EncoderTrainJob {
        cfg: EncoderTrainConfig {
            gan: gan.clone(),
            latent_weight: EncoderTrainConfig::DEFAULT_LATENT_WEIGHT,
            train: GanTrainConfig {
                classes: vec![4, 9],
                dataset,
                ..tiny_gan(true)
            },
        },
        run_root: enc.clone(),
        resume: false,
    };
    // An encoder for Fashion-MNIST cannot invert a generator of MNIST digits.
    let err = run_on(BackendKind::Flex, enc_job(DatasetKind::FashionMnist)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("--gan") && msg.contains("trained on mnist"),
        "{msg}"
    );
    assert!(!enc.exists(), "a refused run leaves no folder");
    let e = run_on(BackendKind::Flex, enc_job(DatasetKind::Mnist)).unwrap();
    assert!(e.test_reconstruction_l1 > 0.0 && e.test_reconstruction_l1 < 1.0);
    check_invert(&enc, &dir.path().join("invert"));

    // The network the reference's C3LT explains, at the tiny widths: its 5×5 valid kernels give
    // the perceptual loss other feature shapes than the default CNN's.
    tiny_model(
        &cnn,
        AuxModel::Classifier(tiny_cnn(cfx_classifiers::CnnClassifierConfig::c3lt_mnist())),
    );
    // The wrong kind of run in each slot is refused with the slot's name.
    let mut cfg = C3ltTrainConfig::new(
        DatasetKind::Mnist,
        [4, 9],
        cnn.clone(),
        enc.clone(),
        enc.clone(),
    );
    let err = run_on(
        BackendKind::Flex,
        C3ltTrainJob {
            cfg: cfg.clone(),
            run_root: maps.clone(),
            resume: false,
        },
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("--gan"), "{err:#}");
    assert!(!maps.exists(), "a refused run leaves no folder");

    cfg.gan = gan.clone();
    // MNIST networks for a Fashion-MNIST run have the right shapes but the wrong data.
    let err = run_on(
        BackendKind::Flex,
        C3ltTrainJob {
            cfg: C3ltTrainConfig {
                dataset: DatasetKind::FashionMnist,
                ..cfg.clone()
            },
            run_root: maps.clone(),
            resume: false,
        },
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("--classifier") && msg.contains("trained on mnist"),
        "{msg}"
    );
    assert!(!maps.exists(), "a refused run leaves no folder");
    cfg.epochs = 1;
    cfg.batch_size = 16;
    cfg.train_limit = Some(32);
    cfg.test_limit = Some(16);
    let c = run_on(
        BackendKind::Flex,
        C3ltTrainJob {
            cfg: cfg.clone(),
            run_root: maps.clone(),
            resume: false,
        },
    )
    .unwrap();
    assert_eq!(c.n_test, 32, "16 test images of each class");
    let (val, prox_unit, prox_gan) = (c.val.unwrap(), c.prox_unit.unwrap(), c.prox_gan.unwrap());
    assert!((0.0..=1.0).contains(&val) && prox_unit > 0.0);
    assert!((prox_gan - 2.0 * prox_unit).abs() < 1e-12);
    // The reference's direction alone: its scores are part of the both-direction means.
    let (v, p, o) = (
        c.val_fwd.unwrap(),
        c.prox_gan_fwd.unwrap(),
        c.cout_fwd.unwrap(),
    );
    assert!((0.0..=1.0).contains(&v) && p > 0.0 && o.is_finite());
    assert!(
        p <= 2.0 * prox_gan + 1e-9,
        "16 of the 32 images: at most twice the mean"
    );
    // Resumed to 3 epochs, scoring every third: epoch 2 leaves the test columns empty, the
    // last epoch is scored.
    cfg.epochs = 3;
    cfg.eval_every = 3;
    let c2 = run_on(
        BackendKind::Flex,
        C3ltTrainJob {
            cfg,
            run_root: maps.clone(),
            resume: true,
        },
    )
    .unwrap();
    assert_eq!(c2.epoch, 3);
    assert!(c2.lr == 1e-3, "StepLR halves only after 25 epochs");
    assert!(c2.val.is_some() && c2.prox_gan_fwd.is_some() && c2.n_test == 32);
    let csv = std::fs::read_to_string(maps.join("metrics.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    let col = rows[0].iter().position(|&h| h == "prox_gan").unwrap();
    let scored: Vec<bool> = rows[1..].iter().map(|r| !r[col].is_empty()).collect();
    assert_eq!(scored, [true, false, true], "{csv}");

    let r = explain(Method::C3lt, &cnn, &maps, &dir.path().join("ex-c3lt"));
    // Only inputs predicted 4 or 9 go through the maps; the others are reported as failures.
    let in_pair = r
        .records
        .iter()
        .filter(|q| [4, 9].contains(&q.predicted))
        .count();
    assert_eq!(r.queries, 4);
    assert!(r.records.iter().all(|q| [4, 9].contains(&q.target)));
    let found = r.variants[0].found * r.queries as f64;
    assert!((found - in_pair as f64).abs() < 1e-9, "{:?}", r.variants[0]);

    let r = explain(Method::Diffeo, &cnn, &gan, &dir.path().join("ex-gan"));
    assert_eq!(r.queries, 4);
}

#[test]
fn vae_trains_resumes_and_carries_the_diffeo_ascent() {
    let dir = tempfile::tempdir().unwrap();
    let (vae, cnn) = (dir.path().join("vae"), dir.path().join("cnn"));
    let train = |epochs, resume| {
        let mut cfg = SupervisedTrainConfig::vae(DatasetKind::Mnist);
        cfg.model = AuxModel::Vae(cfx_generative::ConvVaeConfig::tiny());
        cfg.epochs = epochs;
        cfg.train_limit = Some(256);
        cfg.test_limit = Some(64);
        let job = SupervisedTrainJob {
            cfg,
            run_root: vae.clone(),
            resume,
            replicas: 1,
        };
        run_on(BackendKind::Flex, job).unwrap().test_loss
    };
    let first = train(1, false);
    let second = train(2, true);
    assert!(second < first, "-ELBO {first} → {second}");
    assert!(vae.join("samples.png").exists());
    tiny_aux(&cnn, false);
    let r = explain(Method::Diffeo, &cnn, &vae, &dir.path().join("ex-vae"));
    assert_eq!(r.queries, 4);
    assert!(r.seconds_per_query > 0.0);
}

/// A user's own data: one sub-folder of RGB PNGs per class, of another size. The DCGAN trains
/// on it as 28 × 28 grey images, its classes picked by --classes.
#[test]
fn dcgan_trains_on_an_image_folder_of_classes() {
    use image::{Rgb, RgbImage};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shapes");
    for (class, colour) in [("circle", [250u8, 40, 40]), ("square", [40, 40, 250])] {
        let folder = data.join(class);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..40u32 {
            let img = RgbImage::from_fn(56, 70, |x, y| {
                let (dx, dy) = (x as i32 - 28, y as i32 - 35);
                let inside = if class == "circle" {
                    dx * dx + dy * dy < 200 + 10 * i as i32
                } else {
                    dx.abs().max(dy.abs()) < 10 + (i % 8) as i32
                };
                Rgb(if inside { colour } else { [0, 0, 0] })
            });
            img.save(folder.join(format!("{i}.png"))).unwrap();
        }
    }
    let mut cfg = tiny_gan(false);
    cfg.dataset = DatasetKind::ImageFolder;
    cfg.data_dir = Some(data);
    cfg.classes = vec![1];
    cfg.train_limit = None;
    let root = dir.path().join("gan");
    let job = GanTrainJob {
        cfg,
        run_root: root.clone(),
        resume: false,
    };
    let last = run_on(BackendKind::Flex, job).unwrap();
    assert!(last.loss_d.is_finite() && last.loss_g.is_finite());
    assert!(root.join("samples.png").exists());
}
