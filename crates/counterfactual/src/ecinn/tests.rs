use burn::prelude::*;
use burn::tensor::Distribution;
use cfx_classifiers::{Classifier, IbInnClassifier, predictions};
use cfx_flows::ibinn::IbInnConfig;
use proptest::prelude::*;

use super::*;
use crate::test_util::{TB, initialised, seeded};
use crate::{ExplainError, Explainer, Query};

fn t2(rows: &[Vec<f64>]) -> Tensor<TB, 2> {
    let d = rows[0].len();
    let v: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, [rows.len(), d]), &Default::default())
}

fn vec_strategy(d: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-3.0f64..3.0, d)
}

proptest! {
    /// α0 puts `z + α0Δ` at equal distance from the two GMM means, whatever Δ is (as long as it
    /// is not parallel to the boundary).
    #[test]
    fn alpha0_lands_on_the_gmm_bisector(
        z in vec_strategy(6), mp in vec_strategy(6), mq in vec_strategy(6), dl in vec_strategy(6)
    ) {
        let w: Vec<f64> = mq.iter().zip(&mp).map(|(a, b)| a - b).collect();
        let wd: f64 = w.iter().zip(&dl).map(|(a, b)| a * b).sum();
        let wn: f64 = w.iter().map(|a| a * a).sum::<f64>().sqrt();
        let dn: f64 = dl.iter().map(|a| a * a).sum::<f64>().sqrt();
        prop_assume!(wd.abs() > 0.2 * wn * dn && wn > 0.5);
        let a0 = alpha0(t2(std::slice::from_ref(&z)), t2(std::slice::from_ref(&mp)), t2(std::slice::from_ref(&mq)), t2(std::slice::from_ref(&dl)));
        let a0 = a0.into_data().convert::<f64>().to_vec::<f64>().unwrap()[0];
        let moved: Vec<f64> = z.iter().zip(&dl).map(|(z, d)| z + a0 * d).collect();
        let dist = |m: &[f64]| moved.iter().zip(m).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
        let (dp, dq) = (dist(&mp), dist(&mq));
        prop_assert!((dp - dq).abs() <= 1e-3 * (1.0 + dp.max(dq)), "{dp} vs {dq} at α0 = {a0}");
    }
}

#[test]
fn alpha1_rules_follow_the_seeds() {
    assert!((alpha1(0.4, Alpha1Rule::ArxivCode) - 1.0).abs() < 1e-12);
    assert!((alpha1(0.5, Alpha1Rule::Bmvc { t: 0.8 }) - 0.9).abs() < 1e-12);
    assert_eq!(AlphaChoice::Fixed { value: 1.5 }.resolve(0.3), 1.5);
    assert_eq!(AlphaChoice::Tipping.resolve(0.3), 0.3);
}

/// A small random IB-INN whose empirical class means are its GMM means shifted by one common
/// offset, so `Δ` is parallel to `w` and every class is reachable. It returns the raw inverse
/// (the default, named here because the tests of the seeds' equations need `f⁻¹` exactly).
fn tiny_ecinn() -> Ecinn<TB> {
    let d = Default::default();
    let model = seeded(0, || initialised(IbInnConfig::tiny().init::<TB>(&d)));
    let k = model.n_classes();
    let mu: Vec<f32> = model.mu.val().into_data().to_vec().unwrap();
    let dim = model.dim();
    let means = ClassMeans {
        means: mu
            .iter()
            .enumerate()
            .map(|(i, &m)| m as f64 + 0.01 * (i % dim) as f64)
            .collect(),
        counts: vec![1; k],
        dim,
    };
    Ecinn::new(IbInnClassifier::new(model), &means)
        .unwrap()
        .with_pixels(EcinnPixels::Raw)
}

fn images(n: usize, seed: u64) -> Tensor<TB, 4> {
    seeded(seed, || {
        Tensor::random(
            [n, 1, 28, 28],
            Distribution::Uniform(0.2, 0.8),
            &Default::default(),
        )
    })
}

fn all_other_targets(predicted: &[usize], k: usize) -> Vec<Query> {
    predicted
        .iter()
        .enumerate()
        .flat_map(|(i, &p)| {
            (0..k).filter(move |&q| q != p).map(move |q| Query {
                input: i,
                target: q,
            })
        })
        .collect()
}

#[test]
fn tipping_points_sit_on_the_boundary_and_alpha1_is_valid_end_to_end() {
    let e = tiny_ecinn();
    let x = images(3, 7);
    let predicted = predictions(e.classifier.logits(x.clone()));
    let queries = all_other_targets(&predicted, 10);
    let choices = [
        AlphaChoice::Tipping,
        AlphaChoice::Convincing(Alpha1Rule::ArxivCode),
    ];
    let out = e.explain_alphas(x.clone(), &queries, &choices).unwrap();
    assert_eq!(out.counterfactuals.dims(), [queries.len() * 2, 1, 28, 28]);
    assert_eq!(out.predicted, predicted);
    // Re-encoding the decoded images: at α0 the predicted and target class tie, at α1 the
    // target beats the predicted class.
    let logits: Vec<f32> = e
        .classifier
        .logits(out.counterfactuals.clone())
        .into_data()
        .to_vec()
        .unwrap();
    for (i, q) in queries.iter().enumerate() {
        let p = predicted[q.input];
        let row = |a: usize| &logits[(2 * i + a) * 10..(2 * i + a + 1) * 10];
        let (at0, at1) = (row(0), row(1));
        let scale = 1.0 + at0[p].abs();
        assert!(
            (at0[p] - at0[q.target]).abs() < 2e-3 * scale,
            "query {i}: {at0:?}"
        );
        assert!(at1[q.target] > at1[p], "query {i}: {at1:?}");
        assert!((out.alphas[2 * i + 1] - (0.8 + 0.5 * out.alpha0[i])).abs() < 1e-9);
    }
    // The Explainer view of the same request agrees.
    let ex = e.explain(x, &queries).unwrap();
    assert_eq!(ex.len(), queries.len());
    let cls = ex.counterfactual_classes();
    let targets_won = queries
        .iter()
        .zip(&cls)
        .filter(|(q, c)| q.target == **c)
        .count();
    assert!(
        targets_won > queries.len() / 2,
        "{targets_won} of {}",
        queries.len()
    );
}

#[test]
fn bad_requests_name_the_problem() {
    let e = tiny_ecinn();
    let x = images(2, 3);
    let p = predictions(e.classifier.logits(x.clone()));
    let unknown = e
        .explain(
            x.clone(),
            &[Query {
                input: 0,
                target: 10,
            }],
        )
        .unwrap_err();
    assert!(matches!(
        unknown,
        ExplainError::UnknownClass {
            target: 10,
            n_classes: 10
        }
    ));
    assert!(unknown.to_string().contains("target class 10"));
    let same = e
        .explain(
            x.clone(),
            &[Query {
                input: 1,
                target: p[1],
            }],
        )
        .unwrap_err();
    assert!(
        matches!(same, ExplainError::TargetIsPrediction { input: 1, .. }),
        "{same}"
    );
    let missing = e
        .explain(
            x,
            &[Query {
                input: 5,
                target: 0,
            }],
        )
        .unwrap_err();
    assert!(
        missing.to_string().contains("batch has 2 inputs"),
        "{missing}"
    );
    let small = Tensor::<TB, 4>::zeros([1, 1, 14, 14], &Default::default());
    let shape = e.explain(small, &[]).unwrap_err();
    assert!(shape.to_string().contains("[1, 14, 14]"), "{shape}");
}

/// `f` is invertible, so re-encoding a counterfactual gives back `f(x) + αΔ` exactly: the latent
/// moves along the empirical means by default and along the GMM means in the ablation, which
/// here differ by a class-dependent offset.
#[test]
fn the_latent_moves_along_the_chosen_centres() {
    let base = tiny_ecinn();
    let (k, dim) = (
        base.classifier.model.n_classes(),
        base.classifier.model.dim(),
    );
    let mu: Vec<f32> = base.classifier.model.mu.val().into_data().to_vec().unwrap();
    let empirical = ClassMeans {
        means: mu
            .iter()
            .enumerate()
            .map(|(i, &m)| m as f64 + 0.3 * ((i / dim) as f64) * ((i % 7) as f64 - 3.0) / 3.0)
            .collect(),
        counts: vec![1; k],
        dim,
    };
    let x = images(2, 5);
    let alpha = 0.7;
    let moved_by = |delta: DeltaMeans| {
        let e = Ecinn::new(base.classifier.clone(), &empirical)
            .unwrap()
            .with_delta(delta)
            .with_pixels(EcinnPixels::Raw);
        let predicted = predictions(e.classifier.logits(x.clone()));
        let queries = all_other_targets(&predicted, k);
        let out = e
            .explain_alphas(x.clone(), &queries, &[AlphaChoice::Fixed { value: alpha }])
            .unwrap();
        let model = &e.classifier.model;
        let encode = |t: Tensor<TB, 4>| -> Vec<f32> {
            model
                .encode(e.classifier.to_model(t))
                .0
                .into_data()
                .to_vec()
                .unwrap()
        };
        let (zx, zc) = (encode(x.clone()), encode(out.counterfactuals));
        let centres: Vec<f32> = e.delta_centres().into_data().to_vec().unwrap();
        let mut worst = 0.0f32;
        for (i, q) in queries.iter().enumerate() {
            let p = predicted[q.input];
            for j in 0..dim {
                let want = alpha as f32 * (centres[q.target * dim + j] - centres[p * dim + j]);
                let got = zc[i * dim + j] - zx[q.input * dim + j];
                // A NaN counts as the worst error: `f32::max` alone would drop it and pass.
                let d = (got - want).abs();
                worst = worst.max(if d.is_nan() { f32::INFINITY } else { d });
            }
        }
        (worst, centres)
    };
    let (err_emp, c_emp) = moved_by(DeltaMeans::Empirical);
    let (err_gmm, c_gmm) = moved_by(DeltaMeans::Gmm);
    assert!(err_emp < 2e-3, "empirical: off by {err_emp}");
    assert!(err_gmm < 2e-3, "gmm: off by {err_gmm}");
    assert_eq!(c_gmm, mu);
    // The two directions differ by far more than the tolerance, so each check picks its own.
    let apart = c_emp
        .iter()
        .zip(&mu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(apart > 0.2, "{apart}");
}

#[test]
fn means_builder_groups_by_predicted_class_and_the_cache_round_trips() {
    let d = Default::default();
    let model = seeded(1, || initialised(IbInnConfig::tiny().init::<TB>(&d)));
    let cls = IbInnClassifier::new(model.clone());
    let x = images(40, 11);
    let mut b = ClassMeansBuilder::new(10, model.dim());
    b.add(&model, cls.to_model(x.clone().slice(0..25)));
    b.add(&model, cls.to_model(x.clone().slice(25..40)));
    let (z, _) = model.encode(cls.to_model(x.clone()));
    let pred = predictions(model.logits_from_latent(z.clone()));
    let zs: Vec<f32> = z.into_data().to_vec().unwrap();
    let dim = model.dim();
    // A random model need not predict every class: finish() says which one is missing.
    let counts: Vec<usize> = (0..10)
        .map(|c| pred.iter().filter(|&&p| p == c).count())
        .collect();
    match b.clone().finish() {
        Ok(m) => {
            let c = pred[0];
            let manual: f64 = (0..40)
                .filter(|&i| pred[i] == c)
                .map(|i| zs[i * dim] as f64)
                .sum::<f64>()
                / counts[c] as f64;
            assert!((m.means[c * dim] - manual).abs() < 1e-4);
            assert_eq!(m.counts.iter().sum::<u64>(), 40);
        }
        Err(e) => {
            let c = counts.iter().position(|&n| n == 0).unwrap();
            assert!(e.to_string().contains(&format!("class {c}")), "{e}");
        }
    }
    let means = ClassMeans {
        means: (0..20).map(|v| v as f64 / 3.0).collect(),
        counts: vec![4, 6],
        dim: 10,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("means.safetensors");
    let key = MeansCacheKey::new(b"model bytes", "mnist train, seed 1");
    means.save(&path, &key).unwrap();
    let (back, back_key) = ClassMeans::load(&path).unwrap();
    assert_eq!(back, means);
    assert_eq!(back_key, key);
    assert_ne!(
        MeansCacheKey::new(b"other model", "mnist train, seed 1"),
        key
    );
    std::fs::write(&path, b"garbage").unwrap();
    let err = ClassMeans::load(&path).unwrap_err().to_string();
    assert!(err.contains("means.safetensors"), "{err}");
}

/// The image mode gives what the reference stores: in `[0, 1]`, on the 256 grey levels, within
/// half a level of the clamped inverse, and equal to the input wherever the inverse reproduces
/// it (α = 0 on an 8-bit input).
#[test]
fn image_mode_gives_8_bit_images_of_the_inverse() {
    let raw = tiny_ecinn();
    assert_eq!(raw.pixels, EcinnPixels::default());
    let image = raw.clone().with_pixels(EcinnPixels::Image);
    let x = images(2, 11).mul_scalar(255.0).round().div_scalar(255.0);
    let predicted = predictions(raw.classifier.logits(x.clone()));
    let queries = all_other_targets(&predicted, 10);
    let choices = [
        AlphaChoice::Fixed { value: 0.0 },
        AlphaChoice::Convincing(Alpha1Rule::ArxivCode),
    ];
    let run = |e: &Ecinn<TB>| -> Vec<f32> {
        e.explain_alphas(x.clone(), &queries, &choices)
            .unwrap()
            .counterfactuals
            .into_data()
            .to_vec()
            .unwrap()
    };
    let (r, m) = (run(&raw), run(&image));
    let xs: Vec<f32> = x.into_data().to_vec().unwrap();
    let chw = 28 * 28;
    let mut outside = 0;
    for (i, (&a, &b)) in r.iter().zip(&m).enumerate() {
        assert!((0.0..=1.0).contains(&b), "pixel {i}: {b}");
        assert!(
            ((b * 255.0) - (b * 255.0).round()).abs() < 1e-3,
            "pixel {i}: {b}"
        );
        assert!(
            (b - a.clamp(0.0, 1.0)).abs() <= 0.5 / 255.0 + 1e-5,
            "pixel {i}: {a} → {b}"
        );
        outside += usize::from(!(0.0..=1.0).contains(&a));
        let (row, query) = (i / chw, i / chw / 2);
        if row % 2 == 0 {
            let input = queries[query].input;
            assert_eq!(b, xs[input * chw + i % chw], "α = 0 changed pixel {i}");
        }
    }
    // The clamp is exercised: the raw inverse of this model leaves [0, 1] somewhere.
    assert!(outside > 0);
}

/// A latent pushed far along Δ decodes far outside the pixel range, and the output says which
/// rows: in raw and image mode alike (the clamp would hide it), while α = 0 reconstructs the
/// input and is never flagged.
#[test]
fn rows_whose_inverse_leaves_the_pixel_range_are_flagged() {
    let base = tiny_ecinn();
    let k = base.classifier.model.n_classes();
    let x = images(3, 11);
    let predicted = predictions(base.classifier.logits(x.clone()));
    let queries = all_other_targets(&predicted, k);
    let choices = [
        AlphaChoice::Fixed { value: 0.0 },
        AlphaChoice::Fixed { value: 1e4 },
    ];
    for pixels in [EcinnPixels::Raw, EcinnPixels::Image] {
        let e = base.clone().with_pixels(pixels);
        let out = e.explain_alphas(x.clone(), &queries, &choices).unwrap();
        assert_eq!(out.out_of_range.len(), 2 * queries.len());
        let raw: Vec<f32> = out.counterfactuals.into_data().to_vec().unwrap();
        let chw = 28 * 28;
        for (row, &flag) in out.out_of_range.iter().enumerate() {
            let far = row % 2 == 1;
            assert_eq!(flag, far, "{pixels:?}, row {row}");
            if pixels == EcinnPixels::Raw {
                let reach = raw[row * chw..(row + 1) * chw].iter().fold(0f32, |m, &v| {
                    if v.is_nan() {
                        f32::INFINITY
                    } else {
                        m.max((v - 0.5).abs())
                    }
                });
                assert_eq!(reach > 1.0, far, "row {row} reaches {reach}");
            }
        }
    }
}

/// The flag's edge is half the pixel range beyond either end of `[0, 1]`, and NaN is out.
#[test]
fn pixels_out_of_range_flags_beyond_half_the_range() {
    let rows = [
        [0.0, 1.0, 0.5, 0.2],
        [1.49, -0.49, 0.0, 1.0],
        [1.51, 0.0, 0.0, 0.0],
        [0.0, -0.51, 0.0, 0.0],
        [0.0, f32::NAN, 0.0, 0.0],
    ];
    let v: Vec<f32> = rows.iter().flatten().copied().collect();
    let x = Tensor::<TB, 4>::from_data(TensorData::new(v, [5, 1, 2, 2]), &Default::default());
    let flags: Vec<bool> = pixels_out_of_range(x).into_data().to_vec().unwrap();
    assert_eq!(flags, [false, false, true, true, true]);
}
