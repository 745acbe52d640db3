//! Completeness of Integrated Gradients, summation-to-delta of DeepLift, and ECINNh's maps.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::Distribution;
use cfx_classifiers::{Classifier, CnnClassifier, CnnClassifierConfig, IbInnClassifier};
use cfx_flows::ibinn::IbInnConfig;

use super::*;
use crate::test_util::{TAd, TB, initialised, seeded};
use crate::{ClassMeansBuilder, Ecinn};

/// A tiny CNN with max pooling; its biases are shifted so that ReLUs switch between input and
/// reference (otherwise a black reference leaves most units off and the tests are easy).
fn cnn() -> CnnClassifier<TAd> {
    seeded(7, || {
        materialised(CnnClassifierConfig::tiny().init::<TAd>(&Default::default()))
    })
}

/// burn initialises parameters lazily, and each copy of an untouched model would draw its own
/// weights: one forward pass fixes them before the model is copied to the inner backend.
fn materialised<M: Classifier<TAd>>(m: M) -> M {
    // In inference mode, so that batch norm keeps its initial running statistics.
    let _mode = cfx_flows::nn::mode::inference();
    let _ = m.logits(Tensor::zeros([1, 1, 28, 28], &Default::default()));
    m
}

fn images(n: usize, seed: u64) -> Tensor<TB, 4> {
    seeded(seed, || {
        Tensor::random(
            [n, 1, 28, 28],
            Distribution::Uniform(0.0, 1.0),
            &Default::default(),
        )
    })
}

fn attribution(method: GradientMethod) -> GradientAttribution<TAd> {
    let m = cnn();
    GradientAttribution::new(Box::new(m.clone()), Box::new(m.valid()), method).with_batch_size(64)
}

/// Queries sending each input to the class after its prediction, plus `F(x)` of each.
fn setup(a: &GradientAttribution<TAd>, x: &Tensor<TB, 4>) -> (Vec<Query>, Vec<f32>) {
    let logits = a.classifier().logits(x.clone());
    let pred = cfx_classifiers::predictions(logits.clone());
    let k = a.classifier().n_classes();
    let l = logits.into_data().to_vec::<f32>().unwrap();
    let queries: Vec<Query> = pred
        .iter()
        .enumerate()
        .map(|(i, &p)| Query {
            input: i,
            target: (p + 1) % k,
        })
        .collect();
    let f = queries
        .iter()
        .map(|q| l[q.input * k + pred[q.input]] - l[q.input * k + q.target])
        .collect();
    (queries, f)
}

fn row_sums(t: Tensor<TB, 4>) -> Vec<f32> {
    let n = t.dims()[0];
    t.reshape([n as i32, -1])
        .sum_dim(1)
        .into_data()
        .to_vec::<f32>()
        .unwrap()
}

/// Checks `Σ attributions = F(x) − F(x₀)` per query, within `rel · max(|Δ|, floor)`.
fn assert_sums_to_delta(method: GradientMethod, baseline: f32, rel: f32, floor: f32) {
    let a = attribution(method);
    let x = images(5, 2);
    let (queries, fx) = setup(&a, &x);
    let x0 = Tensor::<TB, 4>::full([5, 1, 28, 28], baseline, &Default::default());
    let l0 = a
        .classifier()
        .logits(x0)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let h = a.heatmaps(x, &queries).unwrap();
    let k = a.classifier().n_classes();
    for ((q, s), f) in queries.iter().zip(row_sums(h.maps)).zip(fx) {
        let p = h.predicted[q.input];
        let delta = f - (l0[q.input * k + p] - l0[q.input * k + q.target]);
        assert!(
            (s - delta).abs() <= rel * delta.abs().max(floor),
            "{}, baseline {baseline}, query {q:?}: Σ {s} vs F(x) − F(x₀) {delta}",
            a.method.name()
        );
    }
}

#[test]
fn integrated_gradients_are_complete() {
    let ig = |baseline| GradientMethod::IntegratedGradients {
        steps: 200,
        baseline,
    };
    assert_sums_to_delta(ig(0.0), 0.0, 0.02, 0.1);
}

#[test]
fn deeplift_sums_to_delta_on_a_relu_network() {
    // The CNN is conv, ReLU, max-pool and dense layers only: the rescale rule is exact there.
    for baseline in [0.0f32, 0.3] {
        assert_sums_to_delta(GradientMethod::DeepLift { baseline }, baseline, 1e-3, 1.0);
    }
}

#[test]
fn deeplift_shap_averages_deeplift_over_the_baselines() {
    let x = images(3, 3);
    let refs = images(2, 4);
    let shap = attribution(GradientMethod::DeepLiftShap).with_baselines(refs.clone());
    let (queries, _) = setup(&shap, &x);
    let avg = shap.heatmaps(x.clone(), &queries).unwrap().maps;
    // DeepLift against each reference image separately, through the same machinery.
    let one = |j: usize| {
        attribution(GradientMethod::DeepLiftShap)
            .with_baselines(refs.clone().slice(j..j + 1))
            .heatmaps(x.clone(), &queries)
            .unwrap()
            .maps
    };
    let expected = (one(0) + one(1)).div_scalar(2.0);
    let diff = (avg - expected).abs().max().into_scalar();
    assert!(diff < 1e-4, "max difference {diff}");
}

#[test]
fn gradshap_without_noise_and_one_black_baseline_estimates_integrated_gradients() {
    let x = images(2, 5);
    let black = Tensor::<TB, 4>::zeros([1, 1, 28, 28], &Default::default());
    let shap = attribution(GradientMethod::GradShap {
        samples: 400,
        stdev: 0.0,
        seed: 3,
    })
    .with_baselines(black);
    let ig = attribution(GradientMethod::IntegratedGradients {
        steps: 100,
        baseline: 0.0,
    });
    let (queries, _) = setup(&ig, &x);
    let a = row_sums(shap.heatmaps(x.clone(), &queries).unwrap().maps);
    let b = row_sums(ig.heatmaps(x, &queries).unwrap().maps);
    for (s, i) in a.iter().zip(&b) {
        assert!(
            (s - i).abs() <= 0.1 * i.abs().max(0.5),
            "GradSHAP {s} vs IG {i}"
        );
    }
}

#[test]
fn saliency_is_the_absolute_gradient_and_requests_are_checked() {
    let a = attribution(GradientMethod::Saliency);
    let x = images(2, 6);
    let (queries, _) = setup(&a, &x);
    let h = a.heatmaps(x.clone(), &queries).unwrap();
    assert!(h.maps.clone().min().into_scalar() >= 0.0);
    assert!(h.maps.max().into_scalar() > 0.0);
    let bad = [Query {
        input: 0,
        target: h.predicted[0],
    }];
    assert!(matches!(
        a.heatmaps(x.clone(), &bad),
        Err(ExplainError::TargetIsPrediction { .. })
    ));
    let shap = attribution(GradientMethod::DeepLiftShap);
    let err = shap.heatmaps(x, &queries).unwrap_err().to_string();
    assert!(
        err.contains("deepliftshap") && err.contains("baseline"),
        "{err}"
    );
}

#[test]
fn deeplift_through_an_ibinn_keeps_values_and_uses_running_statistics() {
    let clf = seeded(11, || {
        materialised(IbInnClassifier::new(
            IbInnConfig::tiny().init::<TAd>(&Default::default()),
        ))
    });
    let inner = IbInnClassifier::new(clf.model.valid());
    let x = images(4, 8);
    // The paired rescale pass must give the same logits as the plain inference pass.
    let xa = Tensor::<TAd, 4>::from_inner(x.clone());
    let plain = {
        let _m = cfx_flows::nn::mode::inference();
        clf.logits(xa.clone())
    };
    let paired = {
        let _m = cfx_flows::nn::mode::rescale_pairs();
        clf.logits(Tensor::cat(vec![xa.clone(), xa.zeros_like()], 0))
    }
    .narrow(0, 0, 4);
    let scale = plain.clone().abs().max().into_scalar().max(1.0);
    let d = (plain.clone() - paired).abs().max().into_scalar() / scale;
    assert!(d < 1e-4, "paired logits differ by {d} (relative)");
    let reference = inner.logits(x.clone());
    let d = (plain.inner() - reference).abs().max().into_scalar() / scale;
    assert!(
        d < 1e-4,
        "inference-mode logits differ from the inner backend's by {d}"
    );
    let a = GradientAttribution::new(
        Box::new(clf),
        Box::new(inner),
        GradientMethod::DeepLift { baseline: 0.0 },
    );
    let (queries, _) = setup(&a, &x);
    let h = a.heatmaps(x, &queries).unwrap();
    assert!(row_sums(h.maps).iter().all(|s| s.is_finite()));
}

#[test]
fn ecinnh_is_the_counterfactual_minus_the_input() {
    let model = seeded(12, || {
        initialised(IbInnConfig::tiny().init::<TB>(&Default::default()))
    });
    let clf = IbInnClassifier::new(model);
    let train = images(40, 9);
    let mut b = ClassMeansBuilder::new(clf.model.n_classes(), clf.model.dim());
    b.add(&clf.model, clf.to_model(train));
    let Ok(means) = b.finish() else {
        // A random tiny model may leave a class without images; the means builder says so.
        return;
    };
    let ecinn = Ecinn::new(clf, &means).unwrap();
    let x = images(3, 10);
    let pred = cfx_classifiers::predictions(ecinn.classifier.logits(x.clone()));
    let queries: Vec<Query> = (0..3)
        .map(|i| Query {
            input: i,
            target: (pred[i] + 1) % 10,
        })
        .collect();
    let cf = crate::Explainer::explain(&ecinn, x.clone(), &queries).unwrap();
    let h = EcinnH(ecinn).heatmaps(x.clone(), &queries).unwrap();
    let d = (h.maps - (cf.counterfactuals - x))
        .abs()
        .max()
        .into_scalar();
    assert!(d < 1e-5, "{d}");
}
