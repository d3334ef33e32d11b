//! A small, versioned random number generator, so that results never change with a dependency.
//!
//! Permutation `k` of a job must be a pure function of `(seed, k)`: the same on every worker,
//! whatever the sharding, and the same in every brainfit version. General-purpose RNG crates do
//! not promise stable streams across releases, so brainfit carries its own: xoshiro256** seeded
//! through SplitMix64 (Blackman & Vigna), with `Rng::stream(seed, k)` giving independent streams.

use crate::Real;
use ndarray::{Array, Dimension, ShapeBuilder};

/// xoshiro256** pseudo-random generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s =
            [splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm)];
        Rng { s }
    }

    /// Stream `k` of `seed`: independent of every other `(seed, k)` and of how streams are
    /// distributed over workers.
    pub fn stream(seed: u64, k: u64) -> Self {
        let mut sm = seed ^ 0x6A09_E667_F3BC_C909;
        let a = splitmix64(&mut sm);
        let mut sk = k.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ a;
        Rng::new(splitmix64(&mut sk))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) without modulo bias (Lemire's method). `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        let mut m = (self.next_u64() as u128) * (n as u128);
        let mut low = m as u64;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = (self.next_u64() as u128) * (n as u128);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// Standard normal deviate (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // in (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// An array of standard normal deviates, filled in logical (row-major) order.
    pub fn normal_array<T: Real, D: Dimension, Sh: ShapeBuilder<Dim = D>>(
        &mut self,
        shape: Sh,
    ) -> Array<T, D> {
        let mut a = Array::<T, D>::zeros(shape);
        a.iter_mut().for_each(|x| *x = T::from_f64(self.normal()));
        a
    }
}

/// Gamma and Dirichlet deviates, for the random search over band weights
/// ([`crate::banded::simplex_candidates`]).
impl Rng {
    /// Natural logarithm of a Gamma(`shape`, 1) deviate.
    ///
    /// Marsaglia & Tsang (2000) for `shape >= 1` (one standard normal and one uniform per
    /// trial, about 1.03 trials on average); for `shape < 1`, the boost
    /// `G(shape) = G(shape + 1) · U^(1 / shape)`, added in logs so that tiny shapes (whose
    /// deviates underflow f64) still give finite values.
    ///
    /// # Panics
    /// If `shape` is not finite and positive.
    pub fn ln_gamma_deviate(&mut self, shape: f64) -> f64 {
        assert!(
            shape.is_finite() && shape > 0.0,
            "Gamma shape must be finite and > 0, got {shape}"
        );
        if shape < 1.0 {
            let u = 1.0 - self.uniform(); // in (0, 1]
            return self.ln_gamma_deviate(shape + 1.0) + u.ln() / shape;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let t = 1.0 + c * x;
            if t <= 0.0 {
                continue;
            }
            let v = t * t * t;
            let u = 1.0 - self.uniform(); // in (0, 1]
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d.ln() + v.ln();
            }
        }
    }

    /// A point of the `k`-simplex from the symmetric Dirichlet distribution of concentration
    /// `concentration`: `k` Gamma(`concentration`, 1) deviates drawn in order, normalised to
    /// sum to 1 (in logs, so small concentrations never give 0/0). An infinite concentration
    /// gives equal weights `1/k` without drawing anything.
    ///
    /// # Panics
    /// If `concentration` is not positive (or is NaN).
    pub fn dirichlet(&mut self, concentration: f64, k: usize) -> Vec<f64> {
        assert!(concentration > 0.0, "Dirichlet concentration must be > 0, got {concentration}");
        if concentration == f64::INFINITY {
            return vec![1.0 / k as f64; k];
        }
        let logs: Vec<f64> = (0..k).map(|_| self.ln_gamma_deviate(concentration)).collect();
        let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logs.iter().map(|l| (l - top).exp()).collect();
        let sum: f64 = w.iter().sum();
        w.into_iter().map(|w| w / sum).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(3, 5).next_u64()).collect();
        assert!(a.iter().all(|&x| x == a[0]));
        assert_ne!(Rng::stream(3, 5).next_u64(), Rng::stream(3, 6).next_u64());
        assert_ne!(Rng::stream(3, 5).next_u64(), Rng::stream(4, 5).next_u64());
    }

    #[test]
    fn below_is_uniform_enough() {
        let mut r = Rng::new(1);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[r.below(7) as usize] += 1;
        }
        // Each cell ~ Binomial(70000, 1/7): sd ~ 92; 5 sd is a loose, never-flaky bound.
        assert!(counts.iter().all(|&c| (c as f64 - 10_000.0).abs() < 500.0), "{counts:?}");
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = Rng::new(2);
        let xs: Vec<f64> = (0..100_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "{mean} {var}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut r = Rng::new(9);
        let mut v: Vec<usize> = (0..50).collect();
        r.shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_ne!(v, s);
    }

    #[test]
    fn gamma_deviates_have_the_right_moments() {
        let mut r = Rng::new(12);
        for shape in [0.1, 0.5, 1.0, 2.5, 30.0] {
            let xs: Vec<f64> = (0..200_000).map(|_| r.ln_gamma_deviate(shape).exp()).collect();
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
            // Gamma(k, 1): mean k, variance k; loose bounds (~5 standard errors)
            let se_mean = (shape / xs.len() as f64).sqrt();
            assert!((mean - shape).abs() < 5.0 * se_mean, "shape {shape}: mean {mean}");
            assert!((var / shape - 1.0).abs() < 0.1, "shape {shape}: variance {var}");
        }
        // tiny shapes stay finite in logs where the deviate itself underflows
        assert!((0..1000).all(|_| r.ln_gamma_deviate(1e-3).is_finite()));
    }

    #[test]
    fn dirichlet_lies_on_the_simplex() {
        let mut r = Rng::new(13);
        for c in [0.01, 0.1, 1.0, 10.0] {
            let mut mean = [0.0; 3];
            for _ in 0..20_000 {
                let w = r.dirichlet(c, 3);
                assert!(w.iter().all(|&x| (0.0..=1.0).contains(&x)));
                assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                mean.iter_mut().zip(&w).for_each(|(m, x)| *m += x / 20_000.0);
            }
            assert!(mean.iter().all(|m| (m - 1.0 / 3.0).abs() < 0.02), "{c}: {mean:?}");
        }
        assert_eq!(r.dirichlet(f64::INFINITY, 4), vec![0.25; 4]);
    }
}
