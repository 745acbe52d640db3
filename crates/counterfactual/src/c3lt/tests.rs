use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use cfx_classifiers::{CnnClassifier, CnnClassifierConfig};
use cfx_generative::{DcganConfig, GanWithEncoder, sample_latents};

use super::*;
use crate::test_util::{TAd, TB, initialised, seeded};

fn t3(v: &[f32], shape: [usize; 3]) -> Tensor<TB, 3> {
    Tensor::<TB, 1>::from_floats(v, &Default::default()).reshape(shape)
}

fn scalar(t: Tensor<TB, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

#[test]
fn mask_terms_on_hand_made_masks() {
    // A binary mask has no entropy; a mask of ½ has the most.
    assert_eq!(
        scalar(entropy_loss(t3(&[0.0, 1.0, 1.0, 0.0], [1, 2, 2]))),
        0.0
    );
    assert!((scalar(entropy_loss(t3(&[0.5; 4], [1, 2, 2]))) - 0.5).abs() < 1e-6);
    // A 2×2 checkerboard: every neighbour pair differs by 1 → (1 + 1) / 2.
    let checker = t3(&[0.0, 1.0, 1.0, 0.0], [1, 2, 2]);
    assert!((scalar(smoothness_loss(checker)) - 1.0).abs() < 1e-6);
    // A flat mask is perfectly smooth.
    assert_eq!(scalar(smoothness_loss(t3(&[0.3; 9], [1, 3, 3]))), 0.0);
}

#[test]
fn the_change_mask_is_the_scaled_squared_difference() {
    let d = Default::default();
    let x = Tensor::<TB, 4>::zeros([1, 1, 2, 2], &d);
    let cf = Tensor::<TB, 1>::from_floats([0.0, 0.25, 0.5, 0.5], &d).reshape([1, 1, 2, 2]);
    // Squared differences in [-1, 1]: 0, 0.25, 1, 1 → scaled by the maximum.
    let m = change_mask(x.clone(), cf)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(m, vec![0.0, 0.25, 1.0, 1.0]);
    // No change, no mask (not 0/0).
    let same = change_mask(x.clone(), x)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(same, vec![0.0; 4]);
}

#[test]
fn proximity_and_classification_losses() {
    let d = Default::default();
    let x = Tensor::<TB, 4>::full([2, 1, 4, 4], 0.25, &d);
    assert_eq!(scalar(proximity_loss(x.clone(), x.clone(), 10.0, 1.0)), 0.0);
    // Moving every pixel by 0.25 in unit space is 0.5 in [-1, 1]; the mask is flat and zero.
    let y = x.clone().add_scalar(0.25);
    assert!((scalar(proximity_loss(x, y, 10.0, 1.0)) - 0.5 / 12.0).abs() < 1e-6);
    // −log softmax([0, ln 3])[1] = −log ¾.
    let logits = Tensor::<TB, 2>::from_floats([[0.0, 3f32.ln()]], &d);
    let nll = scalar(classification_loss(logits, 1));
    assert!((nll + 0.75f64.ln()).abs() < 1e-6, "{nll}");
}

#[test]
fn map_steps_keep_the_latent_norm() {
    let d = Default::default();
    let (map, z) = seeded(51, || {
        (LatentMap::<TB>::new(6, &d), sample_latents::<TB>(5, 6, &d))
    });
    let path = map.steps(z.clone(), 3);
    assert_eq!(path.len(), 4);
    let norms = |t: Tensor<TB, 2>| {
        t.square()
            .sum_dim(1)
            .sqrt()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let (before, after) = (norms(z), norms(path[3].clone()));
    for (a, b) in before.iter().zip(&after) {
        assert!((a - b).abs() < 1e-4 * a.max(1.0), "{a} vs {b}");
    }
    assert!(
        path[3]
            .clone()
            .sub(path[0].clone())
            .abs()
            .sum()
            .into_scalar()
            > 1e-3
    );
}

struct Fixture {
    gan: GanWithEncoder<TAd>,
    disc: cfx_generative::Discriminator<TAd>,
    cnn: CnnClassifier<TAd>,
}

fn fixture() -> Fixture {
    seeded(52, || {
        let d = Default::default();
        let cfg = DcganConfig::tiny();
        Fixture {
            gan: initialised(GanWithEncoder {
                generator: cfg.init_generator(&d),
                encoder: cfg.init_encoder(&d),
            }),
            disc: initialised(cfg.init_discriminator(&d)),
            cnn: initialised(CnnClassifierConfig::tiny().init(&d)),
        }
    })
}

#[test]
fn smoke_training_lowers_the_loss_and_the_cycle_inverts_the_map() {
    let f = fixture();
    let d = Default::default();
    let critics = C3ltCritics {
        generator: &f.gan.generator,
        discriminator: &f.disc,
        classifier: &f.cnn,
    };
    let (z, mut maps) = seeded(53, || {
        let z = [
            sample_latents::<TAd>(16, 16, &d),
            sample_latents::<TAd>(16, 16, &d),
        ];
        (z, initialised(C3ltMaps::<TAd>::new(16, &d)))
    });
    let x = {
        let _m = mode::inference();
        z.clone().map(|z| f.gan.generator.decode(z).detach())
    };
    let weights = C3ltWeights::default();
    let pair = [3, 8];
    let cycle_error = |maps: &C3ltMaps<TAd>| {
        let zi = z[0].clone().inner();
        let m = maps.valid();
        let back = m.h.apply(m.g.apply(zi.clone(), 1), 1);
        let moved = m.g.apply(zi.clone(), 1);
        let err = (back - zi.clone()).abs().mean().into_scalar().elem::<f64>();
        let step = (moved - zi).abs().mean().into_scalar().elem::<f64>();
        (err, step)
    };
    let mut optim = AdamConfig::new().init();
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..60 {
        let terms = {
            let _m = mode::inference();
            c3lt_loss(&maps, &critics, x.clone(), z.clone(), pair, 1, &weights)
        };
        last = terms.total.clone().into_scalar().elem::<f64>();
        first.get_or_insert(last);
        let grads = GradientsParams::from_grads(terms.total.backward(), &maps);
        maps = optim.step(1e-2, maps, grads);
    }
    let first = first.unwrap();
    assert!(last < first, "loss {first} -> {last}");
    let (err, step) = cycle_error(&maps);
    assert!(step > 0.05, "g barely moves the latents ({step})");
    assert!(err < 0.5 * step, "h(g(z)) is {err} from z, g moves {step}");
}

#[test]
fn explains_only_its_class_pair_in_one_pass() {
    let f = fixture();
    let d = Default::default();
    let cnn = f.cnn.valid();
    let maps = seeded(54, || initialised(C3ltMaps::<TB>::new(16, &d)));
    let x = seeded(55, || {
        Tensor::<TB, 4>::random([4, 1, 28, 28], burn::tensor::Distribution::Default, &d)
    });
    let predicted = cfx_classifiers::predictions(cnn.logits(x.clone()));
    let p = predicted[0];
    let other = (p + 1) % 10;
    let c3lt = C3lt::new(maps, Box::new(f.gan.valid()), Box::new(cnn), [p, other], 1).unwrap();
    let out = c3lt
        .explain(
            x.clone(),
            &[Query {
                input: 0,
                target: other,
            }],
        )
        .unwrap();
    assert_eq!(out.counterfactuals.dims(), [1, 1, 28, 28]);
    assert!(out.seconds > 0.0);
    let third = (p + 2) % 10;
    let err = c3lt
        .explain(
            x.clone(),
            &[Query {
                input: 0,
                target: third,
            }],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("trained for"), "{err}");
    // An input predicted outside the pair fails rather than erring: the maps never saw it.
    let outside = C3lt::new(
        seeded(56, || initialised(C3ltMaps::<TB>::new(16, &d))),
        Box::new(f.gan.valid()),
        Box::new(f.cnn.valid()),
        [other, third],
        1,
    )
    .unwrap();
    let out = outside
        .explain(
            x.clone().slice(0..1),
            &[Query {
                input: 0,
                target: third,
            }],
        )
        .unwrap();
    assert_eq!(out.found, vec![false]);
    let same = (out.counterfactuals - x.slice(0..1))
        .abs()
        .max()
        .into_scalar();
    assert_eq!(same, 0.0, "a failed query holds its input");
    let d2 = Default::default();
    let bad = C3lt::new(
        C3ltMaps::<TB>::new(16, &d2),
        Box::new(fixture().gan.valid()),
        Box::new(f.cnn.valid()),
        [2, 2],
        1,
    );
    assert!(bad.is_err());
}
