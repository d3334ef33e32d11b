//! Permutation inference: label permutations that are pure functions of `(seed, k)`, and the
//! null-distribution bookkeeping behind uncorrected and max-statistic FWE p-values.
//!
//! Permutation `k` is drawn from its own random stream (`Rng::stream(seed, k)`), so any worker
//! can compute any permutation, and sharding permutations or voxels across tasks cannot change
//! a p-value. The bookkeeping is integer counts and maxima, which merge exactly in any order:
//!
//! * `p = (1 + #{k : null_k ≥ observed}) / (1 + n)` per voxel (one-sided, uncorrected);
//! * `p_fwe = (1 + #{k : max_v null_k(v) ≥ observed}) / (1 + n)`: the max statistic over every
//!   voxel (centre, time point) of the map controls the family-wise error rate.
//!
//! NaN statistics (e.g. a constant voxel) never count as exceeding and never become a map's
//! maximum; a NaN observed value gets a NaN p-value.

use crate::rng::Rng;
use crate::{KernelError, Result};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, Zip};

/// How sample (condition) labels may be permuted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Any permutation.
    Free,
    /// Only within each group: `groups[i]` is sample i's group (run).
    WithinGroup(Vec<i64>),
    /// Contiguous blocks of `len` samples permuted as units (the last block may be shorter).
    Block(usize),
}

impl Scheme {
    /// Checks the scheme against the number of samples.
    pub fn check(&self, n: usize) -> Result<()> {
        match self {
            Scheme::Free => Ok(()),
            Scheme::WithinGroup(g) if g.len() != n => {
                Err(KernelError::Shape(format!("{} group labels for {n} samples", g.len())))
            }
            Scheme::WithinGroup(_) => Ok(()),
            Scheme::Block(0) => {
                Err(KernelError::Parameter("block length must be at least 1".into()))
            }
            Scheme::Block(len) if *len >= n => Err(KernelError::Parameter(format!(
                "block length {len} is not shorter than the data ({n} samples): nothing to permute"
            ))),
            Scheme::Block(_) => Ok(()),
        }
    }
}

/// Permutation `k` of `n` labels under `scheme`: `perm[i]` is the sample that takes position
/// `i`. A pure function of `(n, scheme, seed, k)`.
pub fn permutation(n: usize, scheme: &Scheme, seed: u64, k: u64) -> Vec<usize> {
    let mut rng = Rng::stream(seed, k);
    match scheme {
        Scheme::Free => {
            let mut p: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut p);
            p
        }
        Scheme::WithinGroup(groups) => {
            let mut p: Vec<usize> = (0..n).collect();
            let labels: std::collections::BTreeSet<i64> = groups.iter().copied().collect();
            for label in labels {
                let slots: Vec<usize> = (0..n).filter(|&i| groups[i] == label).collect();
                let mut members = slots.clone();
                rng.shuffle(&mut members);
                slots.iter().zip(members).for_each(|(&s, m)| p[s] = m);
            }
            p
        }
        Scheme::Block(len) => {
            let mut blocks: Vec<usize> = (0..n.div_ceil(*len)).collect();
            rng.shuffle(&mut blocks);
            blocks.iter().flat_map(|&b| b * len..((b + 1) * len).min(n)).collect()
        }
    }
}

/// Adds one permutation's null map to the counts: `count_ge[v] += null[v] >= observed[v]`,
/// and returns the map's maximum (NaN-free; `-inf` if every value is NaN).
pub fn accumulate(
    observed: ArrayView1<'_, f64>,
    null: ArrayView1<'_, f64>,
    mut count_ge: ArrayViewMut1<'_, f64>,
) -> f64 {
    let mut max = f64::NEG_INFINITY;
    Zip::from(&mut count_ge).and(&observed).and(&null).for_each(|c, &o, &x| {
        if x >= o {
            *c += 1.0;
        }
        if x > max {
            max = x;
        }
    });
    max
}

/// Uncorrected p-values from exceedance counts over `n` permutations.
pub fn p_values(
    observed: ArrayView1<'_, f64>,
    count_ge: ArrayView1<'_, f64>,
    n: usize,
) -> Vec<f64> {
    observed
        .iter()
        .zip(count_ge)
        .map(|(o, c)| if o.is_nan() { f64::NAN } else { (1.0 + c) / (1.0 + n as f64) })
        .collect()
}

/// Max-statistic FWE p-values from the null distribution of the map's maximum.
pub fn p_fwe(observed: ArrayView1<'_, f64>, null_max: ArrayView1<'_, f64>) -> Vec<f64> {
    let mut sorted: Vec<f64> = null_max.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    observed
        .iter()
        .map(|&o| {
            if o.is_nan() {
                return f64::NAN;
            }
            let below = sorted.partition_point(|&m| m < o);
            (1.0 + (sorted.len() - below) as f64) / (1.0 + n)
        })
        .collect()
}

/// Brute-force reference used by tests: p and p_fwe from a full `[n_perm, n_items]` null.
pub fn p_from_full_null(
    observed: ArrayView1<'_, f64>,
    null: ArrayView2<'_, f64>,
) -> (Vec<f64>, Vec<f64>) {
    let n = null.nrows();
    let mut counts = Array2::<f64>::zeros((1, observed.len()));
    let mut maxes = Vec::with_capacity(n);
    for row in null.rows() {
        maxes.push(accumulate(observed, row, counts.row_mut(0)));
    }
    (p_values(observed, counts.row(0), n), p_fwe(observed, ArrayView1::from(&maxes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn is_permutation(p: &[usize]) -> bool {
        let mut s = p.to_vec();
        s.sort();
        s == (0..p.len()).collect::<Vec<_>>()
    }

    #[test]
    fn permutations_are_pure_functions_of_seed_and_k() {
        for scheme in
            [Scheme::Free, Scheme::WithinGroup(vec![0, 0, 1, 1, 1, 2, 2, 0]), Scheme::Block(3)]
        {
            let a = permutation(8, &scheme, 11, 5);
            assert_eq!(a, permutation(8, &scheme, 11, 5));
            assert!(is_permutation(&a));
            let distinct = (0..20)
                .map(|k| permutation(8, &scheme, 11, k))
                .collect::<std::collections::HashSet<_>>();
            assert!(distinct.len() > 5, "{scheme:?}");
        }
    }

    #[test]
    fn within_group_stays_within_groups_and_blocks_move_whole() {
        let g = vec![0, 1, 0, 1, 2, 2, 0, 1];
        for k in 0..50 {
            let p = permutation(8, &Scheme::WithinGroup(g.clone()), 3, k);
            assert!((0..8).all(|i| g[p[i]] == g[i]));
            let b = permutation(10, &Scheme::Block(4), 3, k);
            assert!(is_permutation(&b));
            // each block [0..4), [4..8), [8..10) appears contiguous and in order
            let starts: Vec<usize> = b.iter().copied().filter(|&x| x % 4 == 0).collect();
            for s in starts {
                let pos = b.iter().position(|&x| x == s).unwrap();
                let len = 4.min(10 - s);
                assert_eq!(&b[pos..pos + len], &(s..s + len).collect::<Vec<_>>()[..]);
            }
        }
    }

    #[test]
    fn invalid_schemes_are_errors() {
        assert!(Scheme::Block(10).check(10).is_err());
        assert!(Scheme::Block(0).check(10).is_err());
        assert!(Scheme::WithinGroup(vec![0; 3]).check(4).is_err());
        assert!(Scheme::Free.check(4).is_ok());
    }

    #[test]
    fn p_values_by_hand() {
        let observed = array![0.5, 0.1, f64::NAN];
        let null = array![[0.6, 0.0, 0.2], [0.4, 0.2, f64::NAN], [0.1, 0.05, 0.3]];
        let (p, fwe) = p_from_full_null(observed.view(), null.view());
        assert_eq!(p[0], 2.0 / 4.0);
        assert_eq!(p[1], 2.0 / 4.0);
        assert!(p[2].is_nan() && fwe[2].is_nan());
        // maxima: 0.6, 0.4, 0.3
        assert_eq!(fwe[0], 2.0 / 4.0);
        assert_eq!(fwe[1], 4.0 / 4.0);
    }
}
