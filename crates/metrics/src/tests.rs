//! Every metric on small cases whose value is known by hand.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn_flex::Flex;
use cfx_classifiers::{
    Classifier, CnnClassifierConfig, ConvAutoencoder, ConvAutoencoderConfig, DataRange,
};

use crate::set::fixtures::uniform;
use crate::*;

type TB = Flex;

/// Logit of class 1 is `100·(x₀ − 0.5)` (x₀ the first pixel), class 0's is 0: a step.
struct FirstPixel;

impl Classifier<TB> for FirstPixel {
    fn n_classes(&self) -> usize {
        2
    }
    fn input_shape(&self) -> [usize; 3] {
        [1, 2, 2]
    }
    fn logits(&self, x: Tensor<TB, 4>) -> Tensor<TB, 2> {
        let n = x.dims()[0];
        let first = x.reshape([n, 4]).slice([0..n, 0..1]);
        Tensor::cat(
            vec![first.zeros_like(), first.sub_scalar(0.5).mul_scalar(100.0)],
            1,
        )
    }
}

fn ctx(classifier: &dyn Classifier<TB>) -> EvalContext<'_, TB> {
    EvalContext {
        classifier,
        range: DataRange::Centred,
        device: Default::default(),
        batch_size: 3,
    }
}

fn per_sample(v: MetricValue) -> Vec<f64> {
    match v {
        MetricValue::PerSample(v) | MetricValue::WithCurves(v, _) => v,
        MetricValue::Population(p) => panic!("expected per-sample scores, got {p}"),
    }
}

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b}");
}

#[test]
fn elastic_net_and_proximity_of_a_known_difference() {
    // 4 pixels each moved by 0.5: L1 = 2, L2 = √(4·0.25) = 1.
    let set = uniform(3, 0.0, 0.5);
    let c = ctx(&FirstPixel);
    for v in per_sample(ElasticNet.evaluate(&set, &c).unwrap()) {
        close(v, 3.0, 1e-9);
    }
    for v in per_sample(Proximity.evaluate(&set, &c).unwrap()) {
        close(v, 0.5, 1e-9);
    }
}

#[test]
fn tcv_counts_failures_and_val_asks_for_the_target() {
    let mut set = uniform(4, 0.0, 1.0);
    set.cf_predicted = vec![Some(1), None, Some(0), Some(2)];
    let c = ctx(&FirstPixel);
    let tcv = per_sample(Metric::<TB>::evaluate(&Tcv, &set, &c).unwrap());
    assert_eq!(tcv, vec![100.0, 0.0, 0.0, 100.0]);
    let val = per_sample(Metric::<TB>::evaluate(&Val, &set, &c).unwrap());
    assert_eq!(val, vec![1.0, 0.0, 0.0, 0.0]);
    // Aggregation: TCV over all 4, EN over the 2 valid ones.
    let metrics: Vec<Box<dyn Metric<TB>>> = vec![Box::new(Tcv), Box::new(ElasticNet)];
    let s = evaluate_all(&metrics, &set, &c).unwrap();
    assert_eq!((s[0].n, s[0].mean), (4, Some(50.0)));
    assert_eq!((s[1].n, s[1].mean, s[1].ci95), (2, Some(6.0), Some(0.0)));
    // Each score keeps its row of the whole set, also where only the valid rows were scored.
    assert_eq!(
        s[0].scores,
        vec![(0, 100.0), (1, 0.0), (2, 0.0), (3, 100.0)]
    );
    assert_eq!(s[1].scores, vec![(0, 6.0), (3, 6.0)]);
}

#[test]
fn cout_of_a_step_change() {
    // Only the first pixel differs, so it is inserted in step 1 of T: the target probability
    // goes 0 → 1 there. AUPC_target = (½ + (T − 1))/T, AUPC_source = ½/T, COUT = (T − 1)/T.
    let mut set = uniform(2, 0.0, 0.0);
    for i in 0..2 {
        set.counterfactuals[i * 4] = 1.0;
    }
    let c = ctx(&FirstPixel);
    let t = 4;
    let out = Cout { steps: t }.evaluate(&set, &c).unwrap();
    let MetricValue::WithCurves(scores, curves) = out else {
        panic!("COUT returns curves")
    };
    for v in scores {
        close(v, (t as f64 - 1.0) / t as f64, 1e-6);
    }
    close(curves[0].values[0], 0.0, 1e-6);
    close(curves[0].values[1], 1.0, 1e-6);
    assert_eq!(curves[0].values.len(), t + 1);
    // The path ends at the counterfactual and moves the most-changed pixel first.
    let path = Cout { steps: 2 }.path(&[0.0, 0.0, 0.0, 0.0], &[0.1, 0.9, 0.0, 0.0], [1, 2, 2]);
    assert_eq!(path[1], vec![0.1, 0.9, 0.0, 0.0]);
    assert_eq!(path[2], vec![0.1, 0.9, 0.0, 0.0]);
    let path = Cout { steps: 4 }.path(&[0.0; 4], &[0.1, 0.9, 0.0, 0.0], [1, 2, 2]);
    assert_eq!(path[1], vec![0.0, 0.9, 0.0, 0.0]);
}

#[test]
fn jensen_shannon_bounds() {
    close(jensen_shannon(&[0.3, 0.7], &[0.3, 0.7]), 0.0, 1e-12);
    close(jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]), 2f64.ln(), 1e-12);
    // ½KL([½,½] ‖ [¾,¼]) + ½KL([1,0] ‖ [¾,¼]) by hand.
    let m = [0.75, 0.25];
    let kl = |p: [f64; 2]| -> f64 {
        p.iter()
            .zip(m)
            .filter(|(a, _)| **a > 0.0)
            .map(|(a, b)| a * (a / b).ln())
            .sum()
    };
    close(
        jensen_shannon(&[0.5, 0.5], &[1.0, 0.0]),
        0.5 * kl([0.5, 0.5]) + 0.5 * kl([1.0, 0.0]),
        1e-12,
    );
}

/// The backend RNG is process-wide: draws happen under one lock so parallel tests stay
/// reproducible.
fn seeded<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    TB::seed(&Default::default(), seed);
    f()
}

fn tiny_oracle(range: DataRange, seed: u64) -> cfx_classifiers::CnnClassifier<TB> {
    seeded(seed, || {
        CnnClassifierConfig {
            input_shape: [1, 8, 8],
            input_offset: range.offset(),
            ..CnnClassifierConfig::tiny()
        }
        .init::<TB>(&Default::default())
    })
}

fn random_set(n: usize, seed: u64) -> CounterfactualSet {
    let d = Default::default();
    let px = |s: f32| {
        Tensor::<TB, 1>::random([n * 64], burn::tensor::Distribution::Default, &d)
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(move |v: f32| (v + s).min(1.0))
            .collect::<Vec<f32>>()
    };
    let (inputs, counterfactuals) = seeded(seed, || (px(0.0), px(0.3)));
    CounterfactualSet {
        shape: [1, 8, 8],
        inputs,
        counterfactuals,
        predicted: vec![0; n],
        cf_predicted: vec![Some(1); n],
        targets: (0..n).map(|i| 1 + i % 9).collect(),
        ids: (0..n).collect(),
    }
}

#[test]
fn lvs_of_unchanged_images_is_zero_and_the_oracle_agrees_with_itself() {
    let oracle = tiny_oracle(DataRange::Centred, 3);
    let c = ctx(&FirstPixel);
    let mut set = random_set(7, 1);
    set.counterfactuals = set.inputs.clone();
    let lvs = Lvs::new(
        "digit",
        oracle.clone(),
        DataRange::Centred,
        Direction::Lower,
    )
    .unwrap();
    assert_eq!(Metric::<TB>::name(&lvs), "LVS[digit]");
    for v in per_sample(lvs.evaluate(&set, &c).unwrap()) {
        close(v, 0.0, 1e-6);
    }
    // Targets set to the oracle's own classes: 100 %; shifted by one: 0 %.
    let x = set.counterfactual_tensor::<TB>(0..7, &Default::default());
    set.targets = cfx_classifiers::predictions(oracle.logits(x));
    let o = Oracle::new(oracle.clone(), DataRange::Centred).unwrap();
    assert!(
        per_sample(o.evaluate(&set, &c).unwrap())
            .iter()
            .all(|&v| v == 100.0)
    );
    set.targets.iter_mut().for_each(|t| *t = (*t + 1) % 10);
    assert!(
        per_sample(o.evaluate(&set, &c).unwrap())
            .iter()
            .all(|&v| v == 0.0)
    );
}

#[test]
fn models_of_another_range_are_refused() {
    let e = Oracle::new(tiny_oracle(DataRange::Unit, 1), DataRange::Centred)
        .err()
        .expect("a [0, 1] oracle cannot score a [-0.5, 0.5] evaluation")
        .to_string();
    assert!(e.contains("[0, 1]") && e.contains("[-0.5, 0.5]"), "{e}");
}

#[test]
fn fid_of_identical_sets_is_zero_and_grows_with_a_shift() {
    let encoder = tiny_oracle(DataRange::Centred, 5);
    let c = ctx(&FirstPixel);
    let mut set = random_set(40, 2);
    let d = Default::default();
    let real = Fid256::<TB>::real_stats(
        &encoder,
        [
            set.input_tensor::<TB>(0..20, &d),
            set.input_tensor::<TB>(20..40, &d),
        ],
    )
    .unwrap();
    let fid = Fid256::new(encoder, real.clone(), DataRange::Centred).unwrap();
    set.counterfactuals = set.inputs.clone();
    let MetricValue::Population(same) = fid.evaluate(&set, &c).unwrap() else {
        panic!("FID is a population score")
    };
    assert!(same.abs() < 1e-3 * real.trace(), "FID(X, X) = {same}");
    let shifted = random_set(40, 2);
    let MetricValue::Population(moved) = fid.evaluate(&shifted, &c).unwrap() else {
        panic!()
    };
    assert!(moved > 100.0 * same.abs().max(1e-6), "{moved} vs {same}");
}

/// Zeroes every weight and sets the last decoder bias to `b`: the autoencoder returns the
/// constant image `b + offset` whatever it is given.
struct Constant {
    path: Vec<String>,
    b: f32,
}

impl ModuleMapper<TB> for Constant {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<TB, D>>) -> Param<Tensor<TB, D>> {
        let (id, t, mapper) = p.consume();
        let last_bias = D == 1 && self.path.iter().any(|s| s == "dec3");
        let v = if last_bias { self.b } else { 0.0 };
        Param::from_mapped_value(id, t.zeros_like().add_scalar(v), mapper)
    }
}

fn constant_ae(out: f32) -> ConvAutoencoder<TB> {
    let cfg = ConvAutoencoderConfig {
        input_shape: [1, 2, 2],
        ..ConvAutoencoderConfig::tiny()
    };
    cfg.init::<TB>(&Default::default()).map(&mut Constant {
        path: vec![],
        b: out - cfg.input_offset,
    })
}

#[test]
fn im1_and_im2_of_constant_autoencoders() {
    // Class k's autoencoder returns the constant image v_k = 0.1·k, the all-class one 0.45.
    let aes = ClassAutoencoders {
        per_class: (0..3).map(|k| constant_ae(0.1 * k as f32)).collect(),
        all: constant_ae(0.45),
    };
    let c = ctx(&FirstPixel);
    // c = 0.2 everywhere, p = 0, q = 1 (the fixture), 4 pixels.
    let set = uniform(2, 0.0, 0.2);
    let im1 = per_sample(
        Im1::new(aes.clone(), DataRange::Centred)
            .unwrap()
            .evaluate(&set, &c)
            .unwrap(),
    );
    let want = 4.0 * 0.1f64.powi(2) / (4.0 * 0.2f64.powi(2) + IM_EPSILON);
    for v in im1 {
        close(v, want, 1e-6);
    }
    // 100·‖v_1 − v_all‖² / ‖c‖₁ with ‖c‖₁ = 4·|0.2 − 0.5| in [-0.5, 0.5].
    let im2 = per_sample(
        Im2::new(aes, DataRange::Centred)
            .unwrap()
            .evaluate(&set, &c)
            .unwrap(),
    );
    let want = 100.0 * 4.0 * 0.35f64.powi(2) / (4.0 * 0.3 + IM_EPSILON);
    for v in im2 {
        close(v, want, 1e-5);
    }
}

#[test]
fn nearest_neighbours_count_target_labels_and_skip_the_own_input() {
    // Reference: four 1×2×2 images at 0, 0.1, 0.9, 1.0 with labels 0, 0, 1, 1; ids 10..14.
    let images: Vec<f32> = [0.0, 0.1, 0.9, 1.0].iter().flat_map(|&v| [v; 4]).collect();
    let knn = NearestNeighbours::<TB>::new(
        images,
        vec![0, 0, 1, 1],
        vec![10, 11, 12, 13],
        2,
        &Default::default(),
    )
    .unwrap();
    let c = ctx(&FirstPixel);
    let mut set = uniform(2, 0.0, 0.95);
    set.ids = vec![12, 99];
    // Sample 0 came from id 12 (0.9): its neighbours are 1.0 and 0.1 → 50 %; sample 1: 100 %.
    assert_eq!(
        per_sample(knn.evaluate(&set, &c).unwrap()),
        vec![50.0, 100.0]
    );
}

#[test]
fn deletion_and_insertion_of_a_one_pixel_decision() {
    // Class 1 holds exactly while the first pixel is on. A heatmap that ranks it first removes
    // the evidence in step 1 of 4: deletion curve 1,0,0,0,0 (area ½/4), insertion 0,1,1,1,1
    // (area 3½/4). Ranked last, the curves swap.
    let set = |first: f32, last: f32| HeatmapSet {
        shape: [1, 2, 2],
        inputs: vec![1.0, 1.0, 1.0, 1.0],
        maps: vec![first, 0.5, -0.4, last],
        sources: vec![1],
        targets: vec![0],
    };
    let c = ctx(&FirstPixel);
    let (del, ins) = (
        Deletion {
            steps: 4,
            fill: 0.0,
        },
        Insertion {
            steps: 4,
            fill: 0.0,
        },
    );
    let score = |m: &dyn HeatmapMetric<TB>, s: &HeatmapSet| per_sample(m.evaluate(s, &c).unwrap());
    // The sign does not matter, only the magnitude.
    let good = set(-0.9, 0.1);
    close(score(&del, &good)[0], 0.125, 1e-6);
    close(score(&ins, &good)[0], 0.875, 1e-6);
    let bad = set(0.0, 0.1);
    close(score(&del, &bad)[0], 0.875, 1e-6);
    close(score(&ins, &bad)[0], 0.125, 1e-6);
    let summaries = evaluate_heatmaps::<TB>(&[Box::new(del), Box::new(ins)], &good, &c).unwrap();
    assert_eq!(summaries[0].curves[0].values.len(), 5);
    close(summaries[1].mean.unwrap(), 0.875, 1e-6);
}

#[test]
fn column_mass_and_malformed_heatmaps() {
    let c = ctx(&FirstPixel);
    let set = HeatmapSet {
        shape: [1, 2, 2],
        inputs: vec![0.0; 8],
        maps: vec![3.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        sources: vec![1, 0],
        targets: vec![0, 1],
    };
    let v = per_sample(ColumnMass { column: 0 }.evaluate(&set, &c).unwrap());
    close(v[0], 80.0, 1e-9);
    close(v[1], 0.0, 1e-9);
    assert!(HeatmapMetric::<TB>::evaluate(&ColumnMass { column: 2 }, &set, &c).is_err());
    let mut broken = set.clone();
    broken.maps[5] = f32::NAN;
    let err = evaluate_heatmaps::<TB>(&[Box::new(ColumnMass { column: 0 })], &broken, &c)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sample 1"), "{err}");
    broken.maps.pop();
    assert!(broken.validate().is_err());
}
