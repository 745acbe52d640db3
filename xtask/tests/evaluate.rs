//! `train eval-suite` and `evaluate` end to end on tiny models: every metric is reported for
//! every method, counterfactuals are cached, and bad requests get clear errors.

mod common;

use std::path::Path;

use common::tiny_ibinn;

use xtask::backend::{BackendKind, run_on};
use xtask::evaluate::EvaluateJob;
use xtask::explain::Method;
use xtask::heatmaps::HeatmapMethod;
use xtask::train::suite::{SuitePlan, train_suite};

fn plan() -> SuitePlan {
    SuitePlan {
        dataset: cfx_datasets::DatasetKind::FakeMnist,
        data_dir: None,
        range: cfx_classifiers::DataRange::Centred,
        classifier_epochs: 1,
        autoencoder_epochs: 1,
        class_autoencoder_epochs: 1,
        train_limit: Some(1000),
        test_limit: Some(64),
        small: true,
    }
}

fn job(suite: &Path, ibinn: &Path, out: &Path) -> EvaluateJob {
    EvaluateJob {
        methods: vec![Method::Ecinn, Method::Gb],
        ibinn: Some(ibinn.to_path_buf()),
        flow: None,
        c3lt: None,
        pair: None,
        one_way: false,
        suite: suite.to_path_buf(),
        data_dir: None,
        limit: 8,
        slow_limit: Some(2),
        seed: 0,
        batch_size: 4,
        gb_config: None,
        gl_config: None,
        baseline_target: None,
        diffeo_config: None,
        pixel_config: None,
        pixels: Default::default(),
        alpha: cfx_counterfactual::AlphaChoice::Convincing(Default::default()),
        cout_steps: 5,
        knn: 3,
        gallery: 4,
        regenerate: false,
        heatmaps: vec![],
        heatmap_limit: 6,
        shap_baselines: 3,
        out: out.to_path_buf(),
    }
}

#[test]
fn a_tiny_suite_scores_ecinn_and_gb_on_every_metric() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite");
    let m = train_suite(&plan(), &suite, BackendKind::Flex).unwrap();
    // classifier, oracle, oracle-second, ae-gl, ae-all and 10 class autoencoders.
    assert_eq!(m.members.len(), 15);
    // A second call finds every member done; other settings are refused, not mixed.
    train_suite(&plan(), &suite, BackendKind::Flex).unwrap();
    let other = SuitePlan {
        classifier_epochs: 2,
        ..plan()
    };
    let e = train_suite(&other, &suite, BackendKind::Flex)
        .unwrap_err()
        .to_string();
    assert!(e.contains("other settings"), "{e}");

    let ibinn = dir.path().join("ibinn");
    tiny_ibinn(&ibinn, 2048);
    let out = dir.path().join("eval");
    let r = run_on(BackendKind::Flex, job(&suite, &ibinn, &out)).unwrap();
    // ECINN on its 8 inputs, again on GB's 2 (--slow-limit), then GB.
    let rows: Vec<(String, usize, bool)> = r
        .methods
        .iter()
        .map(|m| (m.label(), m.samples, m.shared_inputs))
        .collect();
    assert_eq!(
        rows,
        [
            ("GEN (ECINN)".to_string(), 8, false),
            ("GEN (ECINN), same 2 inputs".to_string(), 2, true),
            ("GB".to_string(), 2, false)
        ]
    );
    let names: Vec<&str> = r.methods[0]
        .metrics
        .iter()
        .map(|s| s.metric.as_str())
        .collect();
    for want in [
        "TCV",
        "EN",
        "IM1",
        "100·IM2",
        "FID256",
        "Oracle",
        "LVS[fake]",
        "LVS[digit]",
        "Val",
        "Prox",
        "COUT",
        "kNN3",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for m in &r.methods {
        assert!(!m.from_cache);
        let tcv = m.metrics[0].mean.unwrap();
        assert!((0.0..=100.0).contains(&tcv));
        assert_eq!(m.metrics[0].n, m.samples, "TCV is over all samples");
        for s in &m.metrics[1..] {
            if s.metric != "Val" {
                assert!(s.n <= m.valid, "{} over valid samples only", s.metric);
            }
        }
    }
    for f in ["results.md", "results.csv", "results.json", "gallery.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    for f in &r.files {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(r.files.iter().any(|f| f.contains("cout-curves")));
    // samples.csv: ECINN's 8 inputs and GB's 2 (not the shared rows again), each per-sample
    // metric's scores averaging to the report's mean over the samples it saw; FID has none.
    let mut rd = csv::Reader::from_path(out.join("samples.csv")).unwrap();
    let head: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        head[..6],
        [
            "method",
            "test_index",
            "predicted",
            "target",
            "cf_class",
            "valid"
        ]
    );
    assert!(head.iter().any(|h| h == "Oracle") && !head.iter().any(|h| h == "FID256"));
    let recs: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    let of = |m: &'static str| recs.iter().filter(move |r| &r[0] == m);
    assert_eq!(
        (of("ecinn").count(), of("gb").count(), recs.len()),
        (8, 2, 10)
    );
    for (k, m) in [("ecinn", &r.methods[0]), ("gb", &r.methods[2])] {
        for s in &m.metrics {
            let Some(c) = head.iter().position(|h| *h == s.metric) else {
                continue;
            };
            let v: Vec<f64> = of(k)
                .filter(|r| !r[c].is_empty())
                .map(|r| r[c].parse().unwrap())
                .collect();
            assert_eq!(v.len(), s.n, "{k} {}", s.metric);
            let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            assert!(
                match (mean, s.mean) {
                    (Some(a), Some(b)) => (a - b).abs() < 1e-9 * b.abs().max(1.0),
                    (a, b) => a == b,
                },
                "{k} {}: {mean:?} against {:?}",
                s.metric,
                s.mean
            );
        }
    }
    assert!(
        of("gb").all(|r| &r[5] == "false" && r[4].is_empty()),
        "GB found none"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("[-0.5, 0.5]") && md.contains("| GEN (ECINN), same 2 inputs | 2 |"),
        "{md}"
    );
    // The header says how the suite's CNNs were trained, from their own test.json.
    let cls = r
        .suite_models
        .iter()
        .find(|m| m.name == "classifier")
        .unwrap();
    let trained: serde_json::Value =
        serde_json::from_slice(&std::fs::read(suite.join("classifier").join("test.json")).unwrap())
            .unwrap();
    assert_eq!(cls.last.epoch as u64, trained["epoch"].as_u64().unwrap());
    assert_eq!(cls.last.test_accuracy, trained["test_accuracy"].as_f64());
    let line = format!(
        "classifier 1 epoch, {:.2} %",
        100.0 * cls.last.test_accuracy.unwrap()
    );
    assert!(md.contains(&line), "{line} not in {md}");
    assert!(
        r.suite_models
            .iter()
            .any(|m| m.name == "ae-gl" && m.last.test_accuracy.is_none())
    );
    // The shared-inputs row is the full row's first two counterfactuals, which are GB's inputs.
    let ecinn =
        xtask::evaluate::cache::load(&out.join("ecinn/counterfactuals.safetensors")).unwrap();
    let gb = xtask::evaluate::cache::load(&out.join("gb/counterfactuals.safetensors")).unwrap();
    assert_eq!(ecinn.set.ids[..2], gb.set.ids[..]);
    // The tiny CNN gives GB nothing to reach at alibi's tolerance: no order of λ finds a
    // solution, and the report says so for each input.
    assert_eq!(
        gb.misses,
        Some(vec![Some(cfx_counterfactual::Miss::LambdaNotBracketed); 2])
    );
    assert_eq!(
        r.methods[2].misses,
        Some([("lambda-not-bracketed".to_string(), 2)].into())
    );
    assert!(
        md.contains("| GB | 2 | 2 | lambda-not-bracketed 2 |"),
        "{md}"
    );
    assert_eq!(r.methods[0].misses, Some(Default::default()));
    // The gallery leaves GB's cells blank (the grid's grey) instead of showing the inputs again;
    // ECINN's row below the inputs shows its counterfactuals. Cells are 28·3 pixels, 2 apart.
    let gallery = image::open(out.join("gallery.png")).unwrap().to_rgb8();
    let cell_is_blank = |row: u32, col: u32| {
        let (x0, y0) = (2 + col * 86, 2 + row * 86);
        (0..84).all(|y| (0..84).all(|x| gallery.get_pixel(x0 + x, y0 + y).0 == [128; 3]))
    };
    assert!(!cell_is_blank(1, 0), "ECINN's first counterfactual");
    assert!(cell_is_blank(2, 0) && cell_is_blank(2, 1), "GB found none");
    let valid = (0..2).filter(|&i| ecinn.set.is_valid(i)).count();
    assert_eq!(r.methods[1].valid, valid);
    assert_eq!(r.methods[1].metrics[0].mean, Some(50.0 * valid as f64));
    // Paired differences on the 2 shared inputs: TCV's is ECINN's 100 or 0 against GB's 0 per
    // input; GB has no valid sample, so no valid-only metric (Oracle) has a pair.
    let tcv = match valid {
        0 => "0.0000 (0.0000)",
        1 => "50.000 (69.296)",
        _ => "100.00 (0.00)",
    };
    let paired = md
        .split("## Paired differences")
        .nth(1)
        .expect("paired table");
    let paired = paired.split("\n## ").next().unwrap();
    assert!(paired.contains("| metric | GEN (ECINN) − GB |"), "{paired}");
    assert!(
        paired.contains(&format!("| TCV ↑ | {tcv}, n 2 |")),
        "{paired}"
    );
    assert!(!paired.contains("| Oracle"), "{paired}");
    // GB ran at alibi's default, any class but the predicted one, and is scored against the
    // class it reached.
    assert_eq!(r.baseline_target, cfx_counterfactual::TargetClass::Other);
    assert!(md.contains("any class but the predicted one"), "{md}");
    // The report names the settings GB ran with (ECINN has none), the defaults included.
    assert_eq!(r.methods[0].settings, None);
    let gb_settings: cfx_counterfactual::GbConfig =
        toml::from_str(r.methods[2].settings.as_deref().unwrap()).unwrap();
    assert_eq!(
        gb_settings,
        cfx_counterfactual::GbConfig {
            target_class: cfx_counterfactual::TargetClass::Other,
            ..Default::default()
        }
    );
    assert!(
        md.contains("## Settings") && md.contains("feature_range = [-1"),
        "{md}"
    );
    // The tiny CNN gives GB nothing to reach, so this run accepts every step (tol 1): each
    // query then has a solution, and its target must be the class that solution has, even
    // where that is still the predicted class (not a valid counterfactual, so not scored).
    let loose = dir.path().join("gb-loose.toml");
    std::fs::write(&loose, "tol = 1.0\nmax_iter = 20\nmax_lam_steps = 1\n").unwrap();
    let mut j = job(&suite, &ibinn, &dir.path().join("gb-other"));
    (j.methods, j.gb_config) = (vec![Method::Gb], Some(loose.clone()));
    run_on(BackendKind::Flex, j).unwrap();
    let other =
        xtask::evaluate::cache::load(&dir.path().join("gb-other/gb/counterfactuals.safetensors"))
            .unwrap();
    let reached: Vec<Option<usize>> = other.set.targets.iter().map(|&t| Some(t)).collect();
    assert_eq!(other.set.cf_predicted, reached);
    // With `given` the targets are the draws, which are never the predicted class.
    let mut j = job(&suite, &ibinn, &dir.path().join("gb-other"));
    (j.methods, j.gb_config) = (vec![Method::Gb], Some(loose));
    j.baseline_target = Some(cfx_counterfactual::TargetClass::Given);
    let given = run_on(BackendKind::Flex, j).unwrap();
    assert!(
        !given.methods[0].from_cache,
        "the rule is part of the cache key"
    );
    let drawn =
        xtask::evaluate::cache::load(&dir.path().join("gb-other/gb/counterfactuals.safetensors"))
            .unwrap();
    assert!(
        drawn
            .set
            .targets
            .iter()
            .zip(&drawn.set.predicted)
            .all(|(t, p)| t != p)
    );
    // A method file that disagrees with the run's rule is refused, naming the file.
    let given_file = dir.path().join("gb-given.toml");
    std::fs::write(&given_file, "target_class = \"given\"\n").unwrap();
    let mut j = job(&suite, &ibinn, &dir.path().join("gb-other"));
    (j.methods, j.gb_config) = (vec![Method::Gb], Some(given_file));
    let e = format!("{:#}", run_on(BackendKind::Flex, j).unwrap_err());
    assert!(
        e.contains("gb-given.toml") && e.contains("--baseline-target given"),
        "{e}"
    );

    // Re-running scores the cached counterfactuals; the same numbers come back.
    let again = run_on(BackendKind::Flex, job(&suite, &ibinn, &out)).unwrap();
    assert!(again.methods.iter().all(|m| m.from_cache));
    assert_eq!(again.methods[0].metrics[..4], r.methods[0].metrics[..4]);
    // A new seed means other targets: regenerated.
    let mut j = job(&suite, &ibinn, &out);
    j.seed = 1;
    j.methods = vec![Method::Ecinn];
    assert!(!run_on(BackendKind::Flex, j).unwrap().methods[0].from_cache);
    // 8-bit counterfactuals are another set: regenerated, and the report says which it scored.
    let mut j = job(&suite, &ibinn, &out);
    j.methods = vec![Method::Ecinn];
    j.pixels = cfx_counterfactual::EcinnPixels::Image;
    let img = run_on(BackendKind::Flex, j).unwrap();
    assert!(!img.methods[0].from_cache);
    assert_eq!((r.ecinn_pixels, img.ecinn_pixels), ("raw", "image"));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("image pixels, alpha1)"), "{md}");
    // Another α is another set too; the report names it, and the counterfactuals move
    // further from their inputs at α = 1.5 than at α1 (< 1.5 wherever α0 < 1.4).
    // GB's counterfactuals do not depend on it: they come from the cache.
    let mut j = job(&suite, &ibinn, &out);
    j.pixels = cfx_counterfactual::EcinnPixels::Image;
    j.alpha = cfx_counterfactual::AlphaChoice::Fixed { value: 1.5 };
    let far = run_on(BackendKind::Flex, j).unwrap();
    assert_eq!(far.methods[0].method, Method::Ecinn);
    assert!(!far.methods[0].from_cache);
    let gb = far.methods.iter().find(|m| m.method == Method::Gb).unwrap();
    assert!(gb.from_cache);
    assert_eq!(far.ecinn_alpha, "alpha=1.5");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("image pixels, alpha=1.5)"), "{md}");
    let en = |r: &xtask::evaluate::EvaluationReport| {
        r.methods[0]
            .metrics
            .iter()
            .find(|m| m.metric == "EN")
            .and_then(|m| m.mean)
            .expect("EN over some valid counterfactuals")
    };
    assert!(en(&far) > en(&img), "{} vs {}", en(&far), en(&img));

    // --pair 4,9 --one-way: the first fours of the test set, each sent to 9.
    let mut j = job(&suite, &ibinn, &dir.path().join("one-way"));
    (j.methods, j.pair, j.one_way, j.limit) = (vec![Method::Ecinn], Some([4, 9]), true, 5);
    run_on(BackendKind::Flex, j).unwrap();
    let cached =
        xtask::evaluate::cache::load(&dir.path().join("one-way/ecinn/counterfactuals.safetensors"))
            .unwrap();
    let test = cfx_datasets::DatasetKind::FakeMnist
        .load(cfx_datasets::Split::Test, None)
        .unwrap();
    let fours: Vec<usize> = test.indices_of_class(4).into_iter().take(5).collect();
    assert_eq!(cached.set.ids, fours);
    // As with --pair, an input the CNN already calls 9 is sent to 4.
    for (&t, &p) in cached.set.targets.iter().zip(&cached.set.predicted) {
        assert_eq!(t, if p == 9 { 4 } else { 9 });
    }
    let mut j = job(&suite, &ibinn, &dir.path().join("one-way"));
    j.one_way = true;
    let e = run_on(BackendKind::Flex, j).unwrap_err().to_string();
    assert!(e.contains("--one-way needs --pair"), "{e}");
    // A pair names each input's target, which `other` would ignore.
    let mut j = job(&suite, &ibinn, &dir.path().join("one-way"));
    (j.methods, j.pair) = (vec![Method::Gb], Some([4, 9]));
    j.baseline_target = Some(cfx_counterfactual::TargetClass::Other);
    let e = format!("{:#}", run_on(BackendKind::Flex, j).unwrap_err());
    assert!(e.contains("--baseline-target given"), "{e}");

    // Heatmaps alone: every method on the IB-INN, all but ECINNh on the CNN, scored.
    let mut j = job(&suite, &ibinn, &dir.path().join("heat"));
    j.methods = vec![];
    j.heatmaps = HeatmapMethod::ALL.to_vec();
    let r = run_on(BackendKind::Flex, j).unwrap();
    assert_eq!(r.heatmaps.len(), 6 + 5);
    assert!(
        r.heatmaps
            .iter()
            .all(|h| h.model != "CNN" || h.method != HeatmapMethod::Ecinnh)
    );
    for h in &r.heatmaps {
        assert_eq!(h.samples, 6);
        let get = |name: &str| {
            h.metrics
                .iter()
                .find(|s| s.metric == name)
                .and_then(|s| s.mean)
                .unwrap_or_else(|| panic!("{name} missing for {h:?}"))
        };
        assert!((0.0..=1.0).contains(&get("Deletion")));
        assert!((0.0..=1.0).contains(&get("Insertion")));
        assert!((0.0..=100.0).contains(&get("Mass[col 0]")));
    }
    let md = std::fs::read_to_string(dir.path().join("heat/results.md")).unwrap();
    assert!(
        md.contains("## Heatmaps") && md.contains("deepliftshap"),
        "{md}"
    );

    // Errors name the problem.
    let mut j = job(&suite, &ibinn, &out);
    j.ibinn = None;
    let e = run_on(BackendKind::Flex, j).unwrap_err().to_string();
    assert!(e.contains("--ibinn"), "{e}");
    let e = run_on(
        BackendKind::Flex,
        job(&dir.path().join("nope"), &ibinn, &out),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn heatmaps_flag_alone_means_every_method() {
    use clap::Parser;
    let job = |extra: &[&str]| {
        let mut args = vec!["xtask", "evaluate", "--suite", "s"];
        args.extend_from_slice(extra);
        let cli = xtask::cli::Cli::try_parse_from(args).unwrap();
        let xtask::cli::Command::Evaluate(a) = cli.command else {
            unreachable!()
        };
        a.job().unwrap().heatmaps
    };
    assert!(job(&[]).is_empty());
    assert_eq!(job(&["--heatmaps"]), HeatmapMethod::ALL.to_vec());
    assert_eq!(
        job(&["--heatmaps", "intgrad,ecinnh"]),
        vec![HeatmapMethod::Intgrad, HeatmapMethod::Ecinnh]
    );
}
