//! Statistic maps with their permutation nulls, as tasks produce them and as they merge.
//!
//! A task produces a [`MapBlock`]: the observed values of some maps (one per model, or one
//! score map) over a range of items (voxels, centres, time points, comparisons), and — with
//! permutations — for a range of permutations, the exceedance counts per item and each
//! permutation's maximum over the task's items. Counts add and maxima take the max, so blocks
//! merge exactly in any order and any sharding (by items or by permutations) gives the same
//! p-values, bit for bit.

use crate::{JobError, Part, Result};
use brainfit_kernels::permutation::{accumulate, p_fwe, p_values};
use ndarray::{Array2, Axis, s};

/// The names of the cross-temporal block in a time-resolved task's part (which also holds its
/// `shape`, `[n_times, n_times₂]`).
pub const CROSS_TEMPORAL_PREFIX: &str = "cross_temporal:";

/// One task's share of some statistic maps.
#[derive(Debug, Clone, PartialEq)]
pub struct MapBlock {
    /// Observed values, `[n_maps, n_items_in_task]`.
    pub value: Array2<f64>,
    /// Exceedance counts over the task's permutations, `[n_maps, n_items_in_task]`.
    pub count_ge: Option<Array2<f64>>,
    /// Per-permutation maximum over the task's items, `[n_maps, n_perms_in_task]`.
    pub null_max: Option<Array2<f64>>,
}

fn put2(part: &mut Part, name: &str, a: &Array2<f64>) {
    part.push(name, a.shape().to_vec(), a.iter().copied().collect());
}

fn get2(part: &Part, name: &str) -> Result<Option<Array2<f64>>> {
    match part.get(name) {
        Err(_) => Ok(None),
        Ok((shape, values)) => {
            if shape.len() != 2 {
                return Err(JobError::Corrupt(format!("{name} has shape {shape:?}, expected 2-D")));
            }
            Ok(Some(
                Array2::from_shape_vec((shape[0], shape[1]), values.to_vec())
                    .expect("shape checked by Part"),
            ))
        }
    }
}

impl MapBlock {
    /// Observed values and, for permutations `perms` (`null_of(k)` giving permutation k's null
    /// maps, same shape as `value`), the counts and maxima.
    pub fn compute<E>(
        value: Array2<f64>,
        perms: std::ops::Range<u64>,
        mut null_of: impl FnMut(u64) -> std::result::Result<Array2<f64>, E>,
    ) -> std::result::Result<MapBlock, E> {
        if perms.is_empty() {
            return Ok(MapBlock { value, count_ge: None, null_max: None });
        }
        let (maps, _) = value.dim();
        let mut count = Array2::<f64>::zeros(value.dim());
        let mut null_max = Array2::<f64>::zeros((maps, (perms.end - perms.start) as usize));
        for (j, k) in perms.enumerate() {
            let null = null_of(k)?;
            assert_eq!(null.dim(), value.dim(), "null map shape");
            for m in 0..maps {
                null_max[(m, j)] = accumulate(value.row(m), null.row(m), count.row_mut(m));
            }
        }
        Ok(MapBlock { value, count_ge: Some(count), null_max: Some(null_max) })
    }

    /// This block followed by `next`, whose items come after this one's (same maps, same
    /// permutations): values and counts side by side, each permutation's maximum the larger of
    /// the two. The same numbers as computing both item ranges at once.
    #[must_use]
    pub fn followed_by(self, next: MapBlock) -> MapBlock {
        let cat = |a: &Array2<f64>, b: &Array2<f64>| {
            ndarray::concatenate(Axis(1), &[a.view(), b.view()]).expect("same maps")
        };
        let null_max = match (self.null_max, next.null_max) {
            (Some(mut a), Some(b)) => {
                a.zip_mut_with(&b, |x, &y| {
                    if y > *x {
                        *x = y;
                    }
                });
                Some(a)
            }
            _ => None,
        };
        let count_ge = match (&self.count_ge, &next.count_ge) {
            (Some(a), Some(b)) => Some(cat(a, b)),
            _ => None,
        };
        MapBlock { value: cat(&self.value, &next.value), count_ge, null_max }
    }

    /// Stores the block in a part.
    pub fn write(&self, part: &mut Part) {
        self.write_as(part, "");
    }

    /// Writes the block into a part under names starting with `prefix`, so that one part can
    /// carry several blocks.
    pub fn write_as(&self, part: &mut Part, prefix: &str) {
        put2(part, &format!("{prefix}value"), &self.value);
        if let (Some(c), Some(m)) = (&self.count_ge, &self.null_max) {
            put2(part, &format!("{prefix}count_ge"), c);
            put2(part, &format!("{prefix}null_max"), m);
        }
    }

    /// Reads a block back from a part.
    pub fn read(part: &Part) -> Result<MapBlock> {
        Self::read_as(part, "")
    }

    /// Reads the block written with [`MapBlock::write_as`] under `prefix`.
    pub fn read_as(part: &Part, prefix: &str) -> Result<MapBlock> {
        let value = get2(part, &format!("{prefix}value"))?
            .ok_or_else(|| JobError::Corrupt(format!("part has no {prefix}values")))?;
        Ok(MapBlock {
            value,
            count_ge: get2(part, &format!("{prefix}count_ge"))?,
            null_max: get2(part, &format!("{prefix}null_max"))?,
        })
    }
}

/// Maps assembled from all their blocks, with p-values when permutations ran.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedMaps {
    /// `[n_maps, n_items]`.
    pub value: Array2<f64>,
    /// Uncorrected p-values, `[n_maps, n_items]`.
    pub p: Option<Array2<f64>>,
    /// Max-statistic FWE p-values, `[n_maps, n_items]`.
    pub p_fwe: Option<Array2<f64>>,
    /// Null distribution of each map's maximum, `[n_maps, n_perms]`.
    pub null_max: Option<Array2<f64>>,
}

/// Merges blocks covering `[n_maps, n_items]` and, with `n_perms`, permutations `0..n_perms`.
/// Each block comes with its item range and permutation range.
pub fn merge_blocks(
    blocks: &[([usize; 2], [usize; 2], MapBlock)],
    n_maps: usize,
    n_items: usize,
    n_perms: Option<usize>,
) -> Result<MergedMaps> {
    let mut value = Array2::<f64>::from_elem((n_maps, n_items), f64::NAN);
    let mut covered = vec![false; n_items];
    let perm_state = n_perms.map(|n| {
        (
            Array2::<f64>::zeros((n_maps, n_items)),
            Array2::<f64>::from_elem((n_maps, n), f64::NEG_INFINITY),
            vec![0usize; n],
        )
    });
    let mut perm_state = perm_state;
    for (items, perms, block) in blocks {
        let [a, b] = *items;
        if block.value.dim() != (n_maps, b - a) {
            return Err(JobError::Corrupt(format!(
                "block of shape {:?} for items {a}..{b} of {n_maps} maps",
                block.value.dim()
            )));
        }
        value.slice_mut(s![.., a..b]).assign(&block.value);
        covered[a..b].iter_mut().for_each(|c| *c = true);
        if let Some((count, null_max, seen)) = perm_state.as_mut() {
            let (Some(c), Some(m)) = (&block.count_ge, &block.null_max) else {
                return Err(JobError::Corrupt("a block lacks its permutation counts".into()));
            };
            let [p0, p1] = *perms;
            if m.dim() != (n_maps, p1 - p0) || p1 > seen.len() {
                return Err(JobError::Corrupt(format!(
                    "null maxima of shape {:?} for permutations {p0}..{p1}",
                    m.dim()
                )));
            }
            let mut cs = count.slice_mut(s![.., a..b]);
            cs += c;
            let mut ms = null_max.slice_mut(s![.., p0..p1]);
            ms.zip_mut_with(m, |x, &y| *x = x.max(y));
            seen[p0..p1].iter_mut().for_each(|v| *v += 1);
        }
    }
    if let Some(i) = covered.iter().position(|c| !c) {
        return Err(JobError::Corrupt(format!("no task covered item {i}")));
    }
    let (p, p_fwe_maps, null_max) = match perm_state {
        None => (None, None, None),
        Some((count, null_max, seen)) => {
            if let Some(k) = seen.iter().position(|&v| v == 0) {
                return Err(JobError::Corrupt(format!("no task covered permutation {k}")));
            }
            let n = seen.len();
            let mut p = Array2::<f64>::zeros((n_maps, n_items));
            let mut pf = Array2::<f64>::zeros((n_maps, n_items));
            for m in 0..n_maps {
                p.row_mut(m).assign(&ndarray::Array1::from(p_values(
                    value.row(m),
                    count.row(m),
                    n,
                )));
                pf.row_mut(m).assign(&ndarray::Array1::from(p_fwe(value.row(m), null_max.row(m))));
            }
            (Some(p), Some(pf), Some(null_max))
        }
    };
    Ok(MergedMaps { value, p, p_fwe: p_fwe_maps, null_max })
}

#[cfg(test)]
mod tests {
    use super::*;
    use brainfit_kernels::permutation::p_from_full_null;
    use brainfit_kernels::rng::Rng;

    /// Sharding by items or by permutations gives bit-identical p-values.
    #[test]
    fn any_sharding_gives_the_same_p_values() {
        let mut rng = Rng::new(4);
        let (maps, items, n) = (2, 13, 40);
        let observed: Array2<f64> = rng.normal_array((maps, items));
        let nulls: Vec<Array2<f64>> = (0..n).map(|_| rng.normal_array((maps, items))).collect();
        let block = |i: [usize; 2], p: [usize; 2]| {
            let b = MapBlock::compute(
                observed.slice(s![.., i[0]..i[1]]).to_owned(),
                p[0] as u64..p[1] as u64,
                |k| Ok::<_, JobError>(nulls[k as usize].slice(s![.., i[0]..i[1]]).to_owned()),
            )
            .unwrap();
            let mut part = Part::new();
            b.write(&mut part);
            (i, p, MapBlock::read(&part).unwrap())
        };
        let whole = merge_blocks(&[block([0, items], [0, n])], maps, items, Some(n)).unwrap();
        let by_items =
            merge_blocks(&[block([5, items], [0, n]), block([0, 5], [0, n])], maps, items, Some(n))
                .unwrap();
        let by_perms = merge_blocks(
            &[block([0, items], [30, n]), block([0, items], [0, 7]), block([0, items], [7, 30])],
            maps,
            items,
            Some(n),
        )
        .unwrap();
        assert_eq!(whole, by_items);
        assert_eq!(whole, by_perms);
        for m in 0..maps {
            let full = Array2::from_shape_fn((n, items), |(k, v)| nulls[k][(m, v)]);
            let (p, pf) = p_from_full_null(observed.row(m), full.view());
            assert_eq!(whole.p.as_ref().unwrap().row(m).to_vec(), p);
            assert_eq!(whole.p_fwe.as_ref().unwrap().row(m).to_vec(), pf);
        }
        assert!(
            merge_blocks(&[block([0, 5], [0, n])], maps, items, Some(n)).is_err(),
            "uncovered items"
        );
        assert!(
            merge_blocks(&[block([0, items], [0, 7])], maps, items, Some(n)).is_err(),
            "uncovered permutations"
        );
    }
}
