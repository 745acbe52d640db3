//! The helix toy data of seed 002 §4.1 / App. C.1: points uniformly distributed along
//! `h(t) = (sin t, cos t, t)`, `t ~ U(−4, 4)`, a one-dimensional manifold in 3-D. Class 1 is
//! the upper half (`t > 0`), class 0 the lower. The manifold is known in closed form, so the
//! distance of any point to it can be computed, which is what the toy experiment measures.

use rand::{Rng, SeedableRng};

/// The parameter range of the helix.
pub const HELIX_T: (f64, f64) = (-4.0, 4.0);

/// `h(t)`.
pub fn helix_point(t: f64) -> [f64; 3] {
    [t.sin(), t.cos(), t]
}

/// `n` points on the helix with their class (`t > 0`), from a seeded RNG.
pub fn helix_samples(n: usize, seed: u64) -> (Vec<[f64; 3]>, Vec<usize>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let t = rng.random_range(HELIX_T.0..HELIX_T.1);
            (helix_point(t), usize::from(t > 0.0))
        })
        .unzip()
}

/// Euclidean distance from `p` to the helix segment `t ∈ [−4, 4]`.
///
/// `‖p − h(t)‖²` has several local minima along the winding, so a dense grid (step 1e-3, far
/// below the winding's period 2π) brackets the global one and Newton steps on
/// `d/dt ‖p − h(t)‖² = 0` polish it; the end points are candidates too.
pub fn helix_distance(p: [f64; 3]) -> f64 {
    let sq = |t: f64| {
        let h = helix_point(t);
        (0..3).map(|i| (p[i] - h[i]).powi(2)).sum::<f64>()
    };
    let (lo, hi) = HELIX_T;
    let steps = 8000;
    let mut best = lo;
    for k in 0..=steps {
        let t = lo + (hi - lo) * k as f64 / steps as f64;
        if sq(t) < sq(best) {
            best = t;
        }
    }
    // f(t) = ½‖p − h(t)‖²: f' = −(p − h)·h', f'' = |h'|² − (p − h)·h''.
    let mut t = best;
    for _ in 0..20 {
        let h = helix_point(t);
        let d1 = [t.cos(), -t.sin(), 1.0];
        let d2 = [-t.sin(), -t.cos(), 0.0];
        let r: Vec<f64> = (0..3).map(|i| p[i] - h[i]).collect();
        let g = -(0..3).map(|i| r[i] * d1[i]).sum::<f64>();
        let curv = 2.0 - (0..3).map(|i| r[i] * d2[i]).sum::<f64>();
        if curv <= 0.0 {
            break;
        }
        let next = (t - g / curv).clamp(lo, hi);
        if sq(next) > sq(t) {
            break;
        }
        t = next;
    }
    sq(t).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_lie_on_the_helix_with_their_class() {
        let (pts, labels) = helix_samples(200, 1);
        assert_eq!(helix_samples(200, 1).0, pts, "deterministic");
        for (p, &y) in pts.iter().zip(&labels) {
            assert!(helix_distance(*p) < 1e-9);
            assert_eq!(y, usize::from(p[2] > 0.0));
        }
        let ones = labels.iter().sum::<usize>();
        assert!((70..130).contains(&ones), "{ones}");
    }

    #[test]
    fn distance_of_points_off_the_manifold() {
        // On the axis at height t the helix is 1 away (radius 1), and no other winding is closer.
        assert!((helix_distance([0.0, 0.0, 1.0]) - 1.0).abs() < 1e-9);
        // Moved outwards along the radius by 0.5.
        let t: f64 = 2.0;
        let p = [1.5 * t.sin(), 1.5 * t.cos(), t];
        assert!((helix_distance(p) - 0.5).abs() < 1e-9);
        // Beyond the end: the closest point is h(4).
        let e = helix_point(4.0);
        let d = helix_distance([e[0], e[1], 7.0]);
        assert!((d - 3.0).abs() < 1e-6, "{d}");
    }
}
