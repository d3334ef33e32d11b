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

use crate::preprocess::{longest_run, run_segments};
use crate::rng::Rng;
use crate::{KernelError, Result};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, Zip};

/// How sample (condition) labels may be permuted: the exchangeability structure of the data.
///
/// A permutation test is exact when the permuted data are distributed as the observed data
/// under the null. With runs, rows are exchangeable only within a run (run means, scales and
/// per-run preprocessing differ), so [`Scheme::WithinGroup`] is the scheme for independent
/// trials; autocorrelated time series are exchangeable only as whole runs
/// ([`Scheme::WholeGroups`]), or approximately as blocks within runs ([`Scheme::Block`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Any permutation.
    Free,
    /// Only within each group: `groups[i]` is sample i's group (run).
    WithinGroup(Vec<i64>),
    /// Contiguous blocks of `len` samples permuted as units within each run (each maximal
    /// stretch of one group label), or over the whole series without groups. A run's last
    /// block may be shorter; no block ever crosses a run boundary.
    Block {
        /// Block length in samples.
        len: usize,
        /// Group label per sample, if the data have runs.
        groups: Option<Vec<i64>>,
    },
    /// Whole groups (runs) of equal size permuted as units: the rows of one group move, in
    /// their order, to the positions of another. Keeps every within-run structure
    /// (autocorrelation, preprocessing) intact.
    WholeGroups(Vec<i64>),
}

impl Scheme {
    /// Checks the scheme against the number of samples.
    pub fn check(&self, n: usize) -> Result<()> {
        let labels_for = |g: &[i64]| {
            if g.len() == n {
                Ok(())
            } else {
                Err(KernelError::Shape(format!("{} group labels for {n} samples", g.len())))
            }
        };
        match self {
            Scheme::Free => Ok(()),
            Scheme::WithinGroup(g) => labels_for(g),
            Scheme::Block { len: 0, .. } => {
                Err(KernelError::Parameter("block length must be at least 1".into()))
            }
            Scheme::Block { len, groups } => {
                if let Some(g) = groups {
                    labels_for(g)?;
                }
                let longest = longest_run(n, groups.as_deref());
                if *len >= longest {
                    let what = if groups.is_some() { "longest run" } else { "data" };
                    return Err(KernelError::Parameter(format!(
                        "block length {len} is not shorter than the {what} ({longest} samples): nothing to permute"
                    )));
                }
                Ok(())
            }
            Scheme::WholeGroups(g) => {
                labels_for(g)?;
                let sizes = group_positions(g);
                if sizes.len() < 2 {
                    return Err(KernelError::Parameter(
                        "whole-group permutation needs at least 2 groups".into(),
                    ));
                }
                let (first_label, first) = (sizes[0].0, sizes[0].1.len());
                if let Some((label, rows)) = sizes.iter().find(|(_, rows)| rows.len() != first) {
                    return Err(KernelError::Parameter(format!(
                        "whole-group permutation needs groups of equal size: group {first_label} has {first} samples, group {label} has {}",
                        rows.len()
                    )));
                }
                Ok(())
            }
        }
    }

    /// Number of distinct permutations the scheme can draw, saturating at `u64::MAX` (for
    /// warnings: p-values cannot resolve below its reciprocal).
    pub fn distinct_permutations(&self, n: usize) -> u64 {
        let factorial = |m: usize| (2..=m as u64).try_fold(1u64, u64::checked_mul);
        let product = |sizes: Vec<usize>| {
            sizes.into_iter().try_fold(1u64, |acc, m| factorial(m).and_then(|f| acc.checked_mul(f)))
        };
        let count = match self {
            Scheme::Free => factorial(n),
            Scheme::WithinGroup(g) => {
                product(group_positions(g).iter().map(|(_, rows)| rows.len()).collect())
            }
            Scheme::Block { len, groups } => product(
                run_segments(n, groups.as_deref())
                    .iter()
                    .map(|(s, e)| (e - s).div_ceil(*len))
                    .collect(),
            ),
            Scheme::WholeGroups(g) => factorial(group_positions(g).len()),
        };
        count.unwrap_or(u64::MAX)
    }
}

/// Each group label (ascending) with its sample positions (ascending).
fn group_positions(groups: &[i64]) -> Vec<(i64, Vec<usize>)> {
    let mut by_label: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    groups.iter().enumerate().for_each(|(i, &g)| by_label.entry(g).or_default().push(i));
    by_label.into_iter().collect()
}

/// Permutation `k` of `n` labels under `scheme`: `perm[i]` is the sample that takes position
/// `i`. A pure function of `(n, scheme, seed, k)`.
pub fn permutation(n: usize, scheme: &Scheme, seed: u64, k: u64) -> Vec<usize> {
    let mut rng = Rng::stream(seed, k);
    let mut p: Vec<usize> = (0..n).collect();
    match scheme {
        Scheme::Free => rng.shuffle(&mut p),
        Scheme::WithinGroup(groups) => {
            for (_, slots) in group_positions(groups) {
                let mut members = slots.clone();
                rng.shuffle(&mut members);
                slots.iter().zip(members).for_each(|(&s, m)| p[s] = m);
            }
        }
        Scheme::Block { len, groups } => {
            for (start, end) in run_segments(n, groups.as_deref()) {
                let mut blocks: Vec<usize> = (start..end).step_by(*len).collect();
                rng.shuffle(&mut blocks);
                let moved = blocks.iter().flat_map(|&b| b..(b + len).min(end));
                p[start..end].iter_mut().zip(moved).for_each(|(slot, m)| *slot = m);
            }
        }
        Scheme::WholeGroups(groups) => {
            let positions = group_positions(groups);
            let mut sources: Vec<usize> = (0..positions.len()).collect();
            rng.shuffle(&mut sources);
            for ((_, slots), &source) in positions.iter().zip(&sources) {
                slots.iter().zip(&positions[source].1).for_each(|(&s, &m)| p[s] = m);
            }
        }
    }
    p
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
        for scheme in [
            Scheme::Free,
            Scheme::WithinGroup(vec![0, 0, 1, 1, 1, 2, 2, 0]),
            Scheme::Block { len: 3, groups: None },
            Scheme::Block { len: 1, groups: Some(vec![0, 0, 0, 0, 1, 1, 1, 1]) },
            Scheme::WholeGroups(vec![0, 0, 1, 1, 2, 2, 3, 3]),
        ] {
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
            let b = permutation(10, &Scheme::Block { len: 4, groups: None }, 3, k);
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
    fn blocks_never_cross_runs() {
        // runs of 7, 5 and 8 samples (labels need not be sorted), blocks of 3
        let groups: Vec<i64> = [vec![4; 7], vec![1; 5], vec![9; 8]].concat();
        let runs = run_segments(20, Some(&groups));
        let scheme = Scheme::Block { len: 3, groups: Some(groups.clone()) };
        let mut moved = false;
        for k in 0..100 {
            let p = permutation(20, &scheme, 7, k);
            assert!(is_permutation(&p));
            for &(start, end) in &runs {
                // every position of a run holds a sample of the same run ...
                assert!(p[start..end].iter().all(|&m| (start..end).contains(&m)), "{p:?}");
                // ... and the run is a concatenation of its own blocks, each kept in order
                let mut i = start;
                while i < end {
                    let b = p[i];
                    assert_eq!((b - start) % 3, 0, "a block starts at a block boundary: {p:?}");
                    let len = 3.min(end - b);
                    assert_eq!(&p[i..i + len], &(b..b + len).collect::<Vec<_>>()[..]);
                    i += len;
                }
            }
            moved |= p != (0..20).collect::<Vec<_>>();
        }
        assert!(moved);
    }

    #[test]
    fn whole_groups_move_as_units_in_order() {
        let groups: Vec<i64> = vec![2, 2, 2, 0, 0, 0, 5, 5, 5, 7, 7, 7];
        let scheme = Scheme::WholeGroups(groups.clone());
        let mut seen = std::collections::HashSet::new();
        for k in 0..200 {
            let p = permutation(12, &scheme, 1, k);
            assert!(is_permutation(&p));
            for run in 0..4 {
                let source = p[3 * run];
                assert_eq!(source % 3, 0);
                assert_eq!(&p[3 * run..3 * run + 3], &[source, source + 1, source + 2]);
            }
            seen.insert(p);
        }
        assert_eq!(seen.len(), 24, "all 4! orders of the runs are drawn");
        assert_eq!(scheme.distinct_permutations(12), 24);
    }

    #[test]
    fn distinct_permutation_counts() {
        assert_eq!(Scheme::Free.distinct_permutations(5), 120);
        assert_eq!(Scheme::Free.distinct_permutations(100), u64::MAX);
        assert_eq!(Scheme::WithinGroup(vec![0, 0, 1, 1, 1]).distinct_permutations(5), 12);
        let block = Scheme::Block { len: 2, groups: Some(vec![0, 0, 0, 0, 0, 1, 1, 1, 1]) };
        assert_eq!(block.distinct_permutations(9), 6 * 2); // 3 blocks in run 0, 2 in run 1
    }

    #[test]
    fn invalid_schemes_are_errors() {
        let block = |len, groups| Scheme::Block { len, groups };
        assert!(block(10, None).check(10).is_err());
        assert!(block(0, None).check(10).is_err());
        assert!(block(5, Some(vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1])).check(10).is_err());
        assert!(block(4, Some(vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1])).check(10).is_ok());
        assert!(Scheme::WithinGroup(vec![0; 3]).check(4).is_err());
        let unequal = Scheme::WholeGroups(vec![0, 0, 0, 1, 1]).check(5).unwrap_err();
        assert!(unequal.to_string().contains("group 0 has 3 samples, group 1 has 2"), "{unequal}");
        assert!(Scheme::WholeGroups(vec![3; 4]).check(4).is_err());
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
