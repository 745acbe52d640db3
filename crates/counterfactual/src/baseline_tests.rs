//! GB on a tiny random CNN and GL on a tiny CNN trained here for a few steps: they find targeted
//! counterfactuals, batching does not change a query's result, and failures are reported, not
//! hidden.

use burn::prelude::*;
use burn::tensor::Distribution;
use cfx_classifiers::{Classifier, CnnClassifierConfig, ConvAutoencoderConfig, predictions};

use crate::test_util::{TAd, TB, initialised, seeded};
use crate::{Explainer, Gb, GbConfig, Gl, GlConfig, Query, TargetClass, class_prototypes};

fn setup() -> (
    cfx_classifiers::CnnClassifier<TAd>,
    Tensor<TB, 4>,
    Vec<Query>,
) {
    let d = Default::default();
    // A random network is not confident enough for GB's p ≥ 0.95: a larger input scale makes its
    // logits larger.
    let (cnn, x) = seeded(5, || {
        let cnn = initialised(
            CnnClassifierConfig {
                input_scale: 30.0,
                ..CnnClassifierConfig::tiny()
            }
            .init::<TAd>(&d),
        );
        let x = Tensor::<TB, 4>::random([3, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &d);
        (cnn, x)
    });
    use burn::module::AutodiffModule;
    let p = predictions(cnn.valid().logits(x.clone()));
    let queries = (0..3)
        .map(|i| Query {
            input: i,
            target: (p[i] + 1 + i) % 10,
        })
        .collect();
    (cnn, x, queries)
}

fn check_targets_reached(e: &crate::Explanation<TB>, queries: &[Query], x: &Tensor<TB, 4>) {
    let classes = e.counterfactual_classes();
    for (i, q) in queries.iter().enumerate() {
        if e.found[i] {
            assert_eq!(classes[i], q.target, "query {i}");
            let moved = (e.counterfactuals.clone().slice(i..i + 1)
                - x.clone().slice(q.input..q.input + 1))
            .abs()
            .sum()
            .into_scalar();
            assert!(moved > 0.0);
        }
    }
}

/// Every counterfactual a method found lies outside the predicted class of its query's input
/// (`predicted`, one per query).
fn check_left_the_predicted_class(e: &crate::Explanation<TB>, predicted: &[usize]) {
    let classes = e.counterfactual_classes();
    for (i, &p) in predicted.iter().enumerate() {
        if e.found[i] {
            assert_ne!(classes[i], p, "query {i}");
        }
    }
}

#[test]
fn gb_finds_targets_and_batching_does_not_change_a_query() {
    let (cnn, x, queries) = setup();
    let cfg = GbConfig {
        max_iter: 200,
        max_lam_steps: 2,
        ..GbConfig::default()
    };
    let gb = Gb::new(cnn, cfg.clone());
    let all = gb.explain(x.clone(), &queries).unwrap();
    assert!(all.found.iter().any(|&f| f), "{:?}", all.found);
    for (m, &f) in all.misses.iter().zip(&all.found) {
        assert_eq!(m.is_none(), f, "{:?}", all.misses);
    }
    check_targets_reached(&all, &queries, &x);
    // Each query runs its own λ search: alone or in a batch it takes the same path. (Over the
    // full search float rounding in the batched convolutions is amplified by the sign of the L1
    // gradient, so the comparison uses a short search.)
    let short = Gb::new(
        gb.model.clone(),
        GbConfig {
            max_iter: 30,
            max_lam_steps: 1,
            ..GbConfig::default()
        },
    );
    let batched = short.explain(x.clone(), &queries).unwrap();
    let one = short.explain(x.clone(), &queries[1..2]).unwrap();
    let diff = (one.counterfactuals - batched.counterfactuals.slice(1..2))
        .abs()
        .max()
        .into_scalar();
    assert!(diff < 1e-3, "batched and single results differ by {diff}");
    let range = |e: &crate::Explanation<TB>| {
        (
            e.counterfactuals.clone().min().into_scalar(),
            e.counterfactuals.clone().max().into_scalar(),
        )
    };
    // alibi's default range bounds nothing: Adam's steps carry pixels near 0 or 1 past them.
    let free = range(&all);
    assert!(free.0 < 0.0 || free.1 > 1.0, "{free:?}");
    // A method file's range is a clip of every step.
    let clipped = Gb::new(
        gb.model.clone(),
        GbConfig {
            feature_range: (0.0, 1.0),
            ..cfg
        },
    )
    .explain(x.clone(), &queries)
    .unwrap();
    assert!(clipped.found.iter().any(|&f| f), "{:?}", clipped.found);
    check_targets_reached(&clipped, &queries, &x);
    let inside = range(&clipped);
    assert!(inside.0 >= 0.0 && inside.1 <= 1.0, "{inside:?}");
}

#[test]
fn gb_says_why_a_query_has_no_counterfactual() {
    let (cnn, x, queries) = setup();
    // No probability reaches 2: no order of λ finds a solution, so λ is never bracketed.
    let gb = Gb::new(
        cnn,
        GbConfig {
            target_proba: 2.0,
            max_iter: 30,
            max_lam_steps: 1,
            ..GbConfig::default()
        },
    );
    let out = gb.explain(x.clone(), &queries).unwrap();
    assert_eq!(out.found, vec![false; 3]);
    assert_eq!(out.misses, vec![Some(crate::Miss::LambdaNotBracketed); 3]);
    let moved = (out.counterfactuals - x).abs().max().into_scalar();
    assert_eq!(
        moved, 0.0,
        "a query without a counterfactual holds its input"
    );
}

/// A tiny CNN trained for a few Adam steps on real MNIST, and the first test images. A random
/// network sends almost every image to one class, which leaves GL nothing to work with.
fn trained_setup() -> (
    cfx_classifiers::CnnClassifier<TAd>,
    Tensor<TB, 4>,
    Vec<Query>,
    Vec<Tensor<TB, 4>>,
) {
    use burn::module::AutodiffModule;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use cfx_datasets::{Augmentation, HostBatch, Split, mnist, ordered_batches};
    use rand::SeedableRng;

    let d = Default::default();
    let train = mnist(Split::Train).unwrap().take(2048);
    let unit = |set: &cfx_datasets::ImageSet, idx: &[usize]| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        HostBatch::from_set(set, idx, &Augmentation::UNIT, &mut rng).to_device::<TAd>(&d)
    };
    let mut cnn = seeded(5, || {
        initialised(
            CnnClassifierConfig {
                conv_dropout: 0.0,
                dense_dropout: 0.0,
                ..CnnClassifierConfig::tiny()
            }
            .init::<TAd>(&d),
        )
    });
    let mut optim = AdamConfig::new().init::<TAd, cfx_classifiers::CnnClassifier<TAd>>();
    for _ in 0..3 {
        for idx in (0..train.len()).collect::<Vec<_>>().chunks(64) {
            let b = unit(&train, idx);
            let logits = cnn.forward(b.images, true);
            let loss = CrossEntropyLossConfig::new()
                .init(&d)
                .forward(logits, b.labels);
            let grads = GradientsParams::from_grads(loss.backward(), &cnn);
            cnn = optim.step(1e-2, cnn, grads);
        }
    }
    let test = mnist(Split::Test).unwrap();
    let x = unit(&test, &[0, 1, 2]).images.inner();
    // Each input towards its runner-up class: GL's attack term only pushes away from the
    // predicted class, and the prototype of an untrained autoencoder does not steer.
    let logits = cnn.valid().logits(x.clone());
    let p = predictions(logits.clone());
    let onehot = Tensor::<TB, 1, Int>::from_data(
        TensorData::new(p.iter().map(|&c| c as i64).collect::<Vec<_>>(), [3]),
        &d,
    )
    .one_hot::<2>(10)
    .float();
    let runner_up = predictions(logits - onehot.mul_scalar(1e6));
    let queries = (0..3)
        .map(|i| Query {
            input: i,
            target: runner_up[i],
        })
        .collect();
    let data = ordered_batches(&train, 512, Augmentation::UNIT, 0)
        .map(|h| h.to_device::<TB>(&d).images)
        .collect();
    (cnn, x, queries, data)
}

#[test]
fn gl_uses_prototypes_and_reports_what_it_found() {
    let (cnn, x, queries, data) = trained_setup();
    let d = Default::default();
    use burn::module::AutodiffModule;
    let ae = seeded(6, || {
        initialised(ConvAutoencoderConfig::tiny().init::<TAd>(&d))
    });
    // Prototypes over the training images; a CNN that leaves a class empty must be an error
    // naming it.
    let protos = match class_prototypes(&cnn.valid(), &ae.valid(), data) {
        Ok(p) => p,
        Err(e) => {
            assert!(e.to_string().contains("class"), "{e}");
            Tensor::zeros([10, 1, 14, 14], &d)
        }
    };
    assert_eq!(protos.dims(), [10, 1, 14, 14]);
    let cfg = GlConfig {
        max_iterations: 150,
        c_init: 10.0,
        ..GlConfig::default()
    };
    let gl = Gl::new(cnn, ae, protos, cfg);
    let out = gl.explain(x.clone(), &queries).unwrap();
    assert_eq!(out.counterfactuals.dims(), [3, 1, 28, 28]);
    check_targets_reached(&out, &queries, &x);
    assert!(out.found.iter().any(|&f| f), "{:?}", out.found);
    for (i, f) in out.found.iter().enumerate() {
        if !f {
            // No solution: the input comes back unchanged.
            let same = (out.counterfactuals.clone().slice(i..i + 1) - x.clone().slice(i..i + 1))
                .abs()
                .max()
                .into_scalar();
            assert_eq!(same, 0.0);
        }
    }
}

/// alibi's `target_class='other'` (Paper 4's setting): the queries name each input's least
/// likely class, which `Other` must ignore. GB then lands in some other class, and GL follows
/// the nearest other-class prototype rather than the named one.
#[test]
fn other_target_class_ignores_the_named_target() {
    use burn::module::AutodiffModule;
    let (cnn, x, runner_up, data) = trained_setup();
    let d = Default::default();
    let probs = cnn.valid().probabilities(x.clone());
    let predicted = predictions(probs.clone());
    let least = predictions(probs.neg());
    let queries: Vec<Query> = (0..3)
        .map(|i| Query {
            input: i,
            target: least[i],
        })
        .collect();
    assert!(
        queries
            .iter()
            .zip(&runner_up)
            .all(|(q, r)| q.target != r.target)
    );

    let gb = Gb::new(
        cnn.clone(),
        GbConfig {
            max_iter: 200,
            max_lam_steps: 2,
            target_class: TargetClass::Other,
            ..GbConfig::default()
        },
    );
    let out = gb.explain(x.clone(), &queries).unwrap();
    let classes = out.counterfactual_classes();
    assert!(out.found.iter().any(|&f| f), "{:?}", out.found);
    check_left_the_predicted_class(&out, &predicted);
    assert!(
        (0..3).any(|i| out.found[i] && classes[i] != queries[i].target),
        "every counterfactual reached the named least likely class: {classes:?}"
    );

    let ae = seeded(6, || {
        initialised(ConvAutoencoderConfig::tiny().init::<TAd>(&d))
    });
    let protos = class_prototypes(&cnn.valid(), &ae.valid(), data).unwrap();
    let gl = |target_class| {
        Gl::new(
            cnn.clone(),
            ae.clone(),
            protos.clone(),
            GlConfig {
                max_iterations: 150,
                c_init: 10.0,
                target_class,
                ..GlConfig::default()
            },
        )
    };
    let given = gl(TargetClass::Given).guide_classes(&x, &queries, &predicted);
    assert_eq!(given, least);
    let other = gl(TargetClass::Other);
    let guides = other.guide_classes(&x, &queries, &predicted);
    let enc = ae.valid().encode(x.clone());
    for (i, &g) in guides.iter().enumerate() {
        assert_ne!(g, predicted[i]);
        let dist = |c: usize| {
            (enc.clone().slice(i..i + 1) - protos.clone().slice(c..c + 1))
                .square()
                .sum()
                .into_scalar()
        };
        for c in (0..10).filter(|&c| c != predicted[i]) {
            assert!(
                dist(g) <= dist(c),
                "query {i}: class {g} guides but {c} is nearer"
            );
        }
    }
    let out = other.explain(x.clone(), &queries).unwrap();
    assert!(out.found.iter().any(|&f| f), "{:?}", out.found);
    check_left_the_predicted_class(&out, &predicted);
}
