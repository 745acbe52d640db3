//! The permutations of numpy's legacy global RNG (`np.random.seed(s); np.random.permutation(n)`).
//!
//! The reference code builds FakeMNIST and the IB-INN FC permutation this way, so reproducing
//! numpy exactly makes our FakeMNIST identical to ECINN's and platform-independent (MT19937
//! integer arithmetic only, no floats). numpy's legacy shuffle is Fisher–Yates from the back,
//! drawing each index by masked rejection sampling on 32-bit outputs.

use rand_mt::Mt;

pub struct NumpyLegacyRng(Mt);

impl NumpyLegacyRng {
    /// `np.random.seed(seed)` for an integer seed (MT19937 `init_genrand`).
    pub fn seed(seed: u32) -> Self {
        Self(Mt::new(seed))
    }

    /// numpy's `random_interval(max)`: uniform in `0..=max`.
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        loop {
            let value = self.0.next_u32() & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// `np.random.permutation(n)`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        assert!(
            n <= u32::MAX as usize,
            "permutation of {n} elements exceeds numpy's 32-bit path"
        );
        let mut a: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u32) as usize;
            a.swap(i, j);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by numpy 2.x: `np.random.seed(42); np.random.permutation(60000)` (twice),
    /// then `permutation(10000)` twice; and `np.random.seed(0); np.random.permutation(784)`.
    #[test]
    fn matches_numpy_legacy_permutation() {
        let mut rng = NumpyLegacyRng::seed(42);
        let p1 = rng.permutation(60000);
        assert_eq!(&p1[..5], &[12628, 37730, 39991, 8525, 8279]);
        assert_eq!(&p1[59997..], &[860, 15795, 56422]);
        assert_eq!(
            &rng.permutation(60000)[..5],
            &[30014, 20704, 39358, 59901, 34204]
        );
        assert_eq!(&rng.permutation(10000)[..5], &[4565, 3983, 5210, 320, 5767]);
        assert_eq!(
            &rng.permutation(10000)[..5],
            &[8650, 1431, 8962, 1386, 4317]
        );
        let p = NumpyLegacyRng::seed(0).permutation(784);
        assert_eq!(&p[..8], &[693, 85, 647, 392, 765, 14, 299, 711]);
    }

    #[test]
    fn is_a_permutation() {
        let mut p = NumpyLegacyRng::seed(7).permutation(1000);
        p.sort_unstable();
        assert!(p.iter().enumerate().all(|(i, &v)| i == v));
        assert!(NumpyLegacyRng::seed(1).permutation(0).is_empty());
        assert_eq!(NumpyLegacyRng::seed(1).permutation(1), vec![0]);
    }
}
