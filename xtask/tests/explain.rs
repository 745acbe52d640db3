//! `explain` end to end on tiny models trained here: ECINN on an IB-INN, GB and GL on a CNN,
//! and the errors a user sees for bad requests.

mod common;

use std::path::{Path, PathBuf};

use cfx_counterfactual::DeltaMeans;
use common::{tiny_aux, tiny_ibinn};

use xtask::backend::{BackendKind, run_on};
use xtask::cli::parse_alpha;
use xtask::explain::inputs::Selection;
use xtask::explain::{ExplainJob, Method, TargetMode};
use xtask::heatmaps::{HeatmapExplainJob, HeatmapMethod};

fn heatmap_job(methods: &[HeatmapMethod], model: &Path, out: PathBuf) -> HeatmapExplainJob {
    HeatmapExplainJob {
        methods: methods.to_vec(),
        model: model.to_path_buf(),
        dataset: None,
        data_dir: None,
        selection: Selection::Indices(vec![0, 3]),
        target: TargetMode::Random,
        shap_baselines: 3,
        batch_size: 16,
        seed: 0,
        scale: 2,
        pixels: Default::default(),
        out,
    }
}

fn job(method: Method, model: &Path, selection: Selection, out: PathBuf) -> ExplainJob {
    ExplainJob {
        method,
        model: model.to_path_buf(),
        autoencoder: None,
        latent: None,
        dataset: None,
        data_dir: None,
        selection,
        target: TargetMode::All,
        alphas: vec![
            parse_alpha("alpha0").unwrap(),
            parse_alpha("alpha1").unwrap(),
        ],
        delta: DeltaMeans::default(),
        pixels: Default::default(),
        strip: None,
        method_config: None,
        batch_size: 16,
        seed: 0,
        scale: 2,
        out,
    }
}

#[test]
fn ecinn_explains_a_tiny_model_end_to_end_and_caches_its_means() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("ibinn");
    tiny_ibinn(&model, 4096);
    let out = dir.path().join("out");
    let cache = model.join("ecinn-means.safetensors");
    // A bad index is refused before the class means are taken (minutes on a full model).
    let bad = job(
        Method::Ecinn,
        &model,
        Selection::Indices(vec![0, 10_000]),
        out.clone(),
    );
    let e = format!("{:#}", run_on(BackendKind::Flex, bad).unwrap_err());
    assert!(e.contains("--index 10000"), "{e}");
    assert!(
        !cache.exists(),
        "class means taken before the inputs were checked"
    );
    let mut j = job(
        Method::Ecinn,
        &model,
        Selection::Indices(vec![0, 3]),
        out.clone(),
    );
    j.strip = Some(vec![0.0, 0.5, 1.0]);
    let r = run_on(BackendKind::Flex, j.clone()).unwrap();
    assert_eq!(r.dataset, "fake-mnist");
    assert_eq!((r.inputs, r.queries), (2, 18));
    assert_eq!(r.variants.len(), 2);
    assert_eq!(r.variants[0].name, "alpha0");
    assert_eq!(r.records.len(), 18);
    for v in &r.variants {
        let (c, e) = (v.mean_change_column0, v.mean_change_elsewhere);
        let ratio = v.change_ratio_outside_column0;
        assert!(c.is_some() && e.is_some(), "FakeMNIST locality is measured");
        assert_eq!(ratio, Some(e.unwrap() / c.unwrap()), "{}", v.name);
    }
    // ECINN reports how many of its inverse passes left the pixel range (the flag itself is
    // tested in cfx-counterfactual); a whole number of the 18 queries.
    for v in &r.variants {
        let f = v
            .out_of_range
            .expect("ECINN reports out-of-range counterfactuals");
        assert!((f * 18.0 - (f * 18.0).round()).abs() < 1e-9 && (0.0..=1.0).contains(&f));
    }
    for f in &r.figures {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert_eq!(
        r.figures.iter().filter(|f| f.starts_with("strip-")).count(),
        18
    );
    assert!(out.join("explanations.json").is_file());
    let written = std::fs::metadata(&cache).unwrap().modified().unwrap();

    // Second run: the cache is reused; one target for inputs of a class; all-test statistics.
    j.selection = Selection::Class { class: 3, count: 4 };
    j.target = TargetMode::Class(7);
    j.strip = None;
    let r2 = run_on(BackendKind::Flex, j.clone()).unwrap();
    assert_eq!(
        std::fs::metadata(&cache).unwrap().modified().unwrap(),
        written
    );
    assert_eq!(r2.queries + r2.skipped_inputs.len(), 4);
    assert!(r2.figures.contains(&"inputs-to-7.png".to_string()));
    j.selection = Selection::AllTest { limit: Some(20) };
    j.target = TargetMode::Random;
    let r3 = run_on(BackendKind::Flex, j.clone()).unwrap();
    assert_eq!((r3.queries, r3.records.len(), r3.figures.len()), (20, 0, 0));
    // The ablation's Δ between the GMM means is another direction, so α0 moves, and the report
    // says which centres it used.
    let r4 = run_on(
        BackendKind::Flex,
        ExplainJob {
            delta: DeltaMeans::Gmm,
            ..j.clone()
        },
    )
    .unwrap();
    assert_eq!((r3.delta, r4.delta), (Some("empirical"), Some("gmm")));
    assert_ne!(r3.variants[0].mean_alpha, r4.variants[0].mean_alpha);
    // The image mode is the same latent path (same α), made into 8-bit images.
    let r5 = run_on(
        BackendKind::Flex,
        ExplainJob {
            pixels: cfx_counterfactual::EcinnPixels::Image,
            ..j.clone()
        },
    )
    .unwrap();
    assert_eq!((r3.pixels, r5.pixels), (Some("raw"), Some("image")));
    assert_eq!(r3.variants[0].mean_alpha, r5.variants[0].mean_alpha);

    // A cache written for another checkpoint is stale: it is recomputed and rewritten.
    let (means, key) = cfx_counterfactual::ClassMeans::load(&cache).unwrap();
    let stale = cfx_counterfactual::MeansCacheKey {
        model_sha256: "0".repeat(64),
        ..key.clone()
    };
    means.save(&cache, &stale).unwrap();
    run_on(BackendKind::Flex, j).unwrap();
    assert_eq!(cfx_counterfactual::ClassMeans::load(&cache).unwrap().1, key);

    // The heatmap grid: every method side by side, with FakeMNIST's label-column share.
    let out = dir.path().join("heat");
    let r = run_on(
        BackendKind::Flex,
        heatmap_job(&HeatmapMethod::ALL, &model, out.clone()),
    )
    .unwrap();
    assert_eq!((r.model_kind.as_str(), r.queries.len()), ("IB-INN", 2));
    assert_eq!(r.methods.len(), 6);
    for m in &r.methods {
        assert_eq!(m.maps, 2);
        let mass = m.label_column_mass.expect("FakeMNIST");
        assert!((0.0..=100.0).contains(&mass), "{mass}");
    }
    let tangent = run_on(
        BackendKind::Flex,
        xtask::tangent::TangentJob {
            flow: model.clone(),
            data_dir: None,
            count: 1,
            rows: 400,
            out: dir.path().join("tangent"),
        },
    )
    .unwrap();
    let s = &tangent.mean_singular_values;
    assert_eq!((tangent.dimension, s.len()), (784, 784));
    assert!(
        s.windows(2).all(|p| p[0] >= p[1]) && s[783] > 0.0,
        "sorted, invertible"
    );
    assert!(dir.path().join("tangent/tangent.png").is_file());
    let png = image::open(out.join("heatmaps.png")).unwrap();
    // input, counterfactual and six heatmaps of 28·2 pixels plus gaps.
    assert_eq!(png.width(), 8 * (56 + 2) + 2);
    assert!(out.join("heatmaps.json").is_file());
}

#[test]
fn gb_and_gl_explain_a_tiny_cnn() {
    let dir = tempfile::tempdir().unwrap();
    let cnn = dir.path().join("cnn");
    let ae = dir.path().join("ae");
    tiny_aux(&cnn, false);
    tiny_aux(&ae, true);
    let fast = dir.path().join("fast.toml");
    std::fs::write(&fast, "max_iter = 40\nmax_lam_steps = 1\n").unwrap();
    let mut j = job(
        Method::Gb,
        &cnn,
        Selection::Indices(vec![1]),
        dir.path().join("gb"),
    );
    j.target = TargetMode::Random;
    j.method_config = Some(fast);
    let r = run_on(BackendKind::Flex, j.clone()).unwrap();
    assert_eq!((r.queries, r.variants.len()), (1, 1));
    assert!(
        r.figures
            .contains(&"inputs-to-random-targets.png".to_string())
    );
    // A query without a counterfactual says why, in its record and in the summary's counts.
    let v = &r.records[0].variants[0];
    assert_eq!(v.miss.is_none(), v.found, "{v:?}");
    let none = r.variants[0].misses.values().sum::<usize>();
    assert_eq!(none, usize::from(!v.found));
    assert_eq!(
        r.variants[0].out_of_range, None,
        "GB has no inverse pass to report on"
    );
    if let Some(m) = v.miss {
        assert_eq!(r.variants[0].misses[m.as_str()], 1);
    }
    // The figure's counterfactual and heatmap cells are blank (the grid's grey) exactly where
    // GB found nothing. One column: input, counterfactual, heatmap, each cell 2 pixels apart.
    let fig = image::open(dir.path().join("gb/inputs-to-random-targets.png"))
        .unwrap()
        .to_rgb8();
    let cell = fig.width() - 4;
    let blank = |row: u32| {
        let y0 = 2 + row * (cell + 2);
        (0..cell).all(|y| (0..cell).all(|x| fig.get_pixel(2 + x, y0 + y).0 == [128; 3]))
    };
    assert!(!blank(0), "the input");
    assert_eq!((blank(1), blank(2)), (!v.found, !v.found));
    // explanations.json names the settings GB ran with: the file's fields over the defaults.
    let ran: cfx_counterfactual::GbConfig = toml::from_str(r.settings.as_deref().unwrap()).unwrap();
    assert_eq!(
        (ran.max_iter, ran.max_lam_steps, ran.feature_range),
        (40, 1, cfx_counterfactual::GbConfig::default().feature_range)
    );

    let fast_gl = dir.path().join("fast-gl.toml");
    std::fs::write(&fast_gl, "max_iterations = 20\nc_steps = 1\n").unwrap();
    j.method = Method::Gl;
    j.method_config = Some(fast_gl);
    j.out = dir.path().join("gl");
    let missing = run_on(BackendKind::Flex, j.clone())
        .unwrap_err()
        .to_string();
    assert!(missing.contains("--autoencoder"), "{missing}");
    j.autoencoder = Some(ae);
    let r = run_on(BackendKind::Flex, j.clone()).unwrap();
    assert_eq!(r.queries, 1);

    // Pixel-space ascent on the same CNN; latent ascent needs a flow.
    let fast_ascent = dir.path().join("fast-ascent.toml");
    std::fs::write(&fast_ascent, "max_steps = 30\nthreshold = 0.9\n").unwrap();
    j.method = Method::Pixel;
    j.method_config = Some(fast_ascent);
    j.out = dir.path().join("pixel");
    let r = run_on(BackendKind::Flex, j.clone()).unwrap();
    assert_eq!((r.queries, r.variants.len()), (1, 1));
    j.method = Method::Diffeo;
    let e = format!("{:#}", run_on(BackendKind::Flex, j).unwrap_err());
    assert!(e.contains("diffeo needs --flow"), "{e}");
}

#[test]
fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let missing = job(
        Method::Ecinn,
        &dir.path().join("nope"),
        Selection::Indices(vec![0]),
        out.clone(),
    );
    let e = format!("{:#}", run_on(BackendKind::Flex, missing).unwrap_err());
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");

    let model = dir.path().join("cnn");
    tiny_aux(&model, false);
    let mut j = job(Method::Gb, &model, Selection::Indices(vec![0]), out.clone());
    j.target = TargetMode::Class(12);
    let e = format!("{:#}", run_on(BackendKind::Flex, j.clone()).unwrap_err());
    assert!(e.contains("--target 12") && e.contains("0..10"), "{e}");
    j.target = TargetMode::All;
    j.selection = Selection::Indices(vec![10_000]);
    let e = format!("{:#}", run_on(BackendKind::Flex, j.clone()).unwrap_err());
    assert!(e.contains("--index 10000"), "{e}");
    j.selection = Selection::Class {
        class: 11,
        count: 2,
    };
    let e = format!("{:#}", run_on(BackendKind::Flex, j.clone()).unwrap_err());
    assert!(e.contains("--class 11"), "{e}");
    let png = dir.path().join("wide.png");
    image::GrayImage::new(30, 28).save(&png).unwrap();
    j.selection = Selection::Files {
        paths: vec![png],
        resize: false,
    };
    let e = format!("{:#}", run_on(BackendKind::Flex, j.clone()).unwrap_err());
    assert!(e.contains("wide.png is 30×28"), "{e}");
    // explain sends inputs to the classes --target names; alibi's `other` would ignore them.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "target_class = \"other\"\n").unwrap();
    let mut o = job(Method::Gb, &model, Selection::Indices(vec![0]), out.clone());
    o.method_config = Some(other);
    let e = format!("{:#}", run_on(BackendKind::Flex, o).unwrap_err());
    assert!(e.contains("other.toml") && e.contains("evaluate"), "{e}");
    j.method = Method::Ecinn;
    let e = format!("{:#}", run_on(BackendKind::Flex, j).unwrap_err());
    assert!(e.contains("not a finished IB-INN run"), "{e}");

    // Gradient heatmaps explain the CNN; ECINNh needs an IB-INN.
    let r = run_on(
        BackendKind::Flex,
        heatmap_job(
            &[HeatmapMethod::Deeplift, HeatmapMethod::Intgrad],
            &model,
            dir.path().join("heat"),
        ),
    )
    .unwrap();
    assert_eq!((r.model_kind.as_str(), r.methods.len()), ("CNN", 2));
    assert!(
        r.methods[0].label_column_mass.is_none(),
        "MNIST has no label column"
    );
    let e = format!(
        "{:#}",
        run_on(
            BackendKind::Flex,
            heatmap_job(&[HeatmapMethod::Ecinnh], &model, dir.path().join("h2"))
        )
        .unwrap_err()
    );
    assert!(e.contains("ecinnh explains an IB-INN"), "{e}");
    use clap::Parser;
    let parse = |m: &str| {
        let args = [
            "xtask", "explain", "--method", m, "--model", "x", "--index", "0",
        ];
        let cli = xtask::cli::Cli::try_parse_from(args).unwrap();
        let xtask::cli::Command::Explain(a) = cli.command else {
            unreachable!()
        };
        a.plan().map(|_| ()).map_err(|e| e.to_string())
    };
    assert!(parse("gb").is_ok() && parse("ecinnh,intgrad").is_ok());
    let e = parse("ecinnh,gb").unwrap_err();
    assert!(e.contains("\"gb\"") && e.contains("heatmap methods"), "{e}");
    assert!(
        parse_alpha("fast")
            .unwrap_err()
            .to_string()
            .contains("alpha0, alpha1")
    );
}
