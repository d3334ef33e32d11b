//! Searchlight and time-resolved RSA: one RDM comparison per sphere of voxels (or time point).
//!
//! A searchlight asks, for every voxel, whether the local geometry of patterns in a small sphere
//! around it matches a model's. brainfit does this for tens of thousands of centres, models and
//! permutations, so the per-centre work is kept to the essentials:
//!
//! 1. [`spheres`] precomputes every sphere once (compressed rows of mask indices), from one
//!    offset list and a dense index volume.
//! 2. Per centre, the sphere's patterns are gathered into f64, centred as the RDM method needs,
//!    their Gram matrix is one small GEMM, and the RDM follows from the Gram matrix (the same
//!    code as [`crate::rdm::rdm`], so the numbers agree with it).
//! 3. The RDM is ranked once (Spearman; a bucket sort) and turned into unit-norm comparison
//!    features ([`crate::compare::comparison_features`]).
//! 4. Features of a bounded batch of centres are stacked into a `[batch, n_pairs]` matrix and
//!    compared with all models in one GEMM against the models' features. At most one batch of
//!    RDMs exists at any time.
//!
//! Model RDMs are passed twice: as comparison features (`[n_models, n_pairs]`, possibly
//! relabelled with [`crate::compare::permute_condensed`] for permutation tests) for the fast
//! path, and raw (`[n_models, n_pairs]`, relabelled the same way) for the pairwise path, which
//! is taken for the methods without comparison features (Kendall's tau-a and tau-b, `corr_cov`,
//! `bures`, the CKAs: [`CompareMethod::has_features`]), for a centre whose brain RDM holds NaN
//! (e.g. a condition pattern constant within the sphere, for the correlation RDM; NaN pairs are
//! then handled as in [`crate::compare::compare`]), and for every centre when a raw model RDM
//! holds NaN.
//!
//! The crossnobis RDM needs runs and a noise model per sphere and is not offered in searchlights
//! (an error says so). Everything runs single-threaded: brainfit parallelises across tasks
//! (ranges of centres), which keeps results independent of thread counts.

use crate::compare::{CompareMethod, RankScratch, compare, features_into};
use crate::linalg::{Backend, LinalgBackend};
use crate::rdm::{RdmMethod, RdmWorkspace, check_pattern_set, condensed_len};
use crate::{KernelError, Real, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayView3, Axis};
use std::ops::Range;

/// Searchlight spheres: for each kept centre, the mask indices of its sphere (compressed rows).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Neighbourhoods {
    /// Mask indices of the kept centres, ascending.
    pub centres: Vec<usize>,
    /// `members[offsets[c]..offsets[c + 1]]` is the sphere of the c-th kept centre.
    offsets: Vec<usize>,
    members: Vec<usize>,
}

impl Neighbourhoods {
    /// Number of kept centres.
    pub fn len(&self) -> usize {
        self.centres.len()
    }

    /// Whether no centre was kept.
    pub fn is_empty(&self) -> bool {
        self.centres.is_empty()
    }

    /// Mask indices of the sphere of the `c`-th kept centre, ascending, the centre included.
    ///
    /// Panics if `c >= self.len()`, like slice indexing; [`Neighbourhoods::get`] does not.
    pub fn members(&self, c: usize) -> &[usize] {
        &self.members[self.offsets[c]..self.offsets[c + 1]]
    }

    /// The sphere of the `c`-th kept centre, or None if there is no such centre.
    pub fn get(&self, c: usize) -> Option<&[usize]> {
        (c < self.len()).then(|| self.members(c))
    }

    /// Size of the largest sphere (0 if there is none).
    pub fn max_size(&self) -> usize {
        self.offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
    }

    /// The spheres of the kept centres `range` (positions in this set), their mask indices
    /// shifted down by `offset`: the neighbourhoods of a data matrix that holds only mask
    /// columns `offset..` (one task's window of a brain). Centres are shifted alike.
    ///
    /// Errors: `range` beyond [`Neighbourhoods::len`], or a member below `offset`.
    pub fn window(&self, range: Range<usize>, offset: usize) -> Result<Neighbourhoods> {
        if range.start > range.end || range.end > self.len() {
            return Err(KernelError::Shape(format!(
                "centres {range:?} of a searchlight with {} centres",
                self.len()
            )));
        }
        let first = self.offsets[range.start];
        let members = &self.members[first..self.offsets[range.end]];
        if let Some(m) = members.iter().find(|&&m| m < offset) {
            return Err(KernelError::Shape(format!(
                "sphere member {m} lies before the window starting at mask voxel {offset}"
            )));
        }
        Ok(Neighbourhoods {
            centres: self.centres[range.clone()].iter().map(|c| c - offset).collect(),
            offsets: self.offsets[range.start..=range.end].iter().map(|o| o - first).collect(),
            members: members.iter().map(|m| m - offset).collect(),
        })
    }
}

/// The mask voxels a searchlight over centres `centres` (mask indices) can reach: every mask
/// voxel whose first coordinate lies within `reach` of a centre's first coordinate. `voxels`
/// are in mask order (C order over `(i, j, k)`, so sorted by `i`), `reach` is the radius in
/// voxels along `i` (rounded down). Whole slabs, so a little more than the spheres need, found
/// without building them: what a task reads of a brain matrix.
pub fn slab_span(voxels: &[[usize; 3]], centres: Range<usize>, reach: usize) -> Range<usize> {
    if centres.is_empty() || centres.end > voxels.len() {
        return centres.start.min(voxels.len())..centres.start.min(voxels.len());
    }
    let low = voxels[centres.start][0].saturating_sub(reach);
    let high = voxels[centres.end - 1][0].saturating_add(reach);
    voxels.partition_point(|v| v[0] < low)..voxels.partition_point(|v| v[0] <= high)
}

/// Most voxel memberships all spheres of a mask may hold together (2 GiB of indices): a
/// 200,000-voxel brain with spheres of radius 6 voxels holds about 180 million.
pub const MAX_SPHERE_MEMBERS: usize = 1 << 28;

/// Spheres around every mask voxel.
///
/// `voxels` are the mask voxels' `(i, j, k)` coordinates in mask order (index `m` of a voxel is
/// its column in the data matrix), inside a volume of `shape`. A sphere holds the mask voxels
/// whose Euclidean distance from the centre, in units of `voxel_size` per axis (`[1, 1, 1]` for
/// a radius in voxels, the voxel dimensions in mm for a radius in mm), is at most `radius`
/// (+1e-9, so that a radius of exactly √2 includes diagonal neighbours). A centre is kept if
/// its sphere has at least `min_voxels` voxels (the centre itself counts).
///
/// Errors: a radius that is negative or not finite, a voxel size that is not positive and
/// finite, a voxel outside `shape`, a voxel listed twice, spheres too large
/// ([`MAX_SPHERE_MEMBERS`]).
pub fn spheres(
    voxels: &[[usize; 3]],
    shape: [usize; 3],
    radius: f64,
    voxel_size: [f64; 3],
    min_voxels: usize,
) -> Result<Neighbourhoods> {
    spheres_at_most(voxels, shape, radius, voxel_size, min_voxels, MAX_SPHERE_MEMBERS)
}

/// [`spheres`] with at most `cap` memberships (and a box of at most `cap` voxels).
fn spheres_at_most(
    voxels: &[[usize; 3]],
    shape: [usize; 3],
    radius: f64,
    voxel_size: [f64; 3],
    min_voxels: usize,
    cap: usize,
) -> Result<Neighbourhoods> {
    if !(radius.is_finite() && radius >= 0.0) {
        return Err(KernelError::Parameter(format!(
            "the searchlight radius must be finite and >= 0, got {radius}"
        )));
    }
    if voxel_size.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(KernelError::Parameter(format!(
            "voxel sizes must be finite and > 0, got {voxel_size:?}"
        )));
    }
    let total = shape[0]
        .checked_mul(shape[1])
        .and_then(|v| v.checked_mul(shape[2]))
        .ok_or_else(|| KernelError::Shape(format!("volume {shape:?} is too large")))?;
    if voxels.len() >= u32::MAX as usize {
        return Err(KernelError::Shape(format!("{} mask voxels are too many", voxels.len())));
    }
    let linear = |v: [usize; 3]| (v[0] * shape[1] + v[1]) * shape[2] + v[2];
    let mut index = vec![u32::MAX; total];
    for (m, v) in voxels.iter().enumerate() {
        if (0..3).any(|d| v[d] >= shape[d]) {
            return Err(KernelError::Shape(format!(
                "mask voxel {m} at {v:?} lies outside the volume {shape:?}"
            )));
        }
        let slot = &mut index[linear(*v)];
        if *slot != u32::MAX {
            return Err(KernelError::Parameter(format!(
                "mask voxels {} and {m} are both at {v:?}",
                *slot
            )));
        }
        *slot = m as u32;
    }
    // Offsets within the radius, once; in row-major order, so that for a row-major mask order
    // the members come out ascending without sorting.
    let r = radius + 1e-9;
    let ext: Vec<i64> =
        (0..3).map(|d| ((r / voxel_size[d]).floor() as i64).min(shape[d] as i64)).collect();
    // a radius from a job file is untrusted: bound the work and memory before allocating
    let cube: u64 = ext.iter().map(|&e| 2 * e as u64 + 1).product();
    if cube > cap as u64 {
        return Err(KernelError::Parameter(format!(
            "a searchlight radius of {radius} spans a box of {cube} voxels (at most {cap})"
        )));
    }
    let mut offs: Vec<[i64; 3]> = Vec::new();
    for dx in -ext[0]..=ext[0] {
        for dy in -ext[1]..=ext[1] {
            for dz in -ext[2]..=ext[2] {
                let d2 = (dx as f64 * voxel_size[0]).powi(2)
                    + (dy as f64 * voxel_size[1]).powi(2)
                    + (dz as f64 * voxel_size[2]).powi(2);
                if d2 <= r * r {
                    offs.push([dx, dy, dz]);
                }
            }
        }
    }
    let dims = shape.map(|s| s as i64);
    let mut out = Neighbourhoods { centres: Vec::new(), offsets: vec![0], members: Vec::new() };
    let mut sphere: Vec<usize> = Vec::with_capacity(offs.len());
    for (m, v) in voxels.iter().enumerate() {
        sphere.clear();
        let c = [v[0] as i64, v[1] as i64, v[2] as i64];
        for o in &offs {
            let (x, y, z) = (c[0] + o[0], c[1] + o[1], c[2] + o[2]);
            if x < 0 || y < 0 || z < 0 || x >= dims[0] || y >= dims[1] || z >= dims[2] {
                continue;
            }
            let idx = index[((x * dims[1] + y) * dims[2] + z) as usize];
            if idx != u32::MAX {
                sphere.push(idx as usize);
            }
        }
        if sphere.len() >= min_voxels {
            if out.members.len() + sphere.len() > cap {
                return Err(KernelError::Parameter(format!(
                    "searchlight spheres of radius {radius} would hold more than {cap} voxel memberships over the mask's {} voxels; use a smaller radius",
                    voxels.len()
                )));
            }
            if !sphere.is_sorted() {
                sphere.sort_unstable();
            }
            out.centres.push(m);
            out.members.extend_from_slice(&sphere);
            out.offsets.push(out.members.len());
        }
    }
    Ok(out)
}

/// Centres whose features are stacked into one GEMM (bounds the memory: `BATCH * n_pairs`).
/// Every GEMM has exactly this many rows — a last, partial batch is padded — because the
/// kernels' summation order depends on the matrices' shape: a fixed shape makes a centre's
/// value the same bytes however the centres are split into tasks.
const BATCH: usize = 128;

/// Turns pattern sets into rows of model comparisons (shared by searchlights and time series).
struct Engine<'m> {
    rdm: RdmMethod,
    method: CompareMethod,
    features: ArrayView2<'m, f64>,
    raw: ArrayView2<'m, f64>,
    /// A method without features, or a raw model with NaN: every comparison is made pairwise.
    pairwise_only: bool,
    ws: RdmWorkspace,
    d: Vec<f64>,
    scratch: RankScratch,
    /// Features of the current batch, `[BATCH, n_pairs]` (empty when pairwise only).
    batch: Array2<f64>,
    /// Rows of the current batch that were computed pairwise.
    batch_pairwise: Vec<bool>,
    batch_start: usize,
    batch_len: usize,
    gemm_out: Array2<f64>,
    out: Array2<f64>,
    next: usize,
}

impl<'m> Engine<'m> {
    fn new(
        n: usize,
        n_rows: usize,
        rdm: RdmMethod,
        features: ArrayView2<'m, f64>,
        raw: ArrayView2<'m, f64>,
        method: CompareMethod,
    ) -> Result<Self> {
        check_pattern_set(n, 1, rdm)?;
        if n < 3 {
            return Err(KernelError::Shape(format!(
                "RSA needs at least 3 conditions (3 dissimilarities) to compare RDMs, got {n}"
            )));
        }
        let n_pairs = condensed_len(n);
        let n_models = raw.nrows();
        if raw.ncols() != n_pairs {
            return Err(KernelError::Shape(format!(
                "raw model RDMs have {} dissimilarities, but {n} conditions make {n_pairs}",
                raw.ncols()
            )));
        }
        let pairwise_only = !method.has_features() || raw.iter().any(|v| v.is_nan());
        if !pairwise_only && features.dim() != (n_models, n_pairs) {
            return Err(KernelError::Shape(format!(
                "model features are {}x{}, expected {n_models}x{n_pairs} (one row per raw model)",
                features.nrows(),
                features.ncols()
            )));
        }
        let batch_rows = if pairwise_only { 0 } else { BATCH };
        Ok(Engine {
            rdm,
            method,
            features,
            raw,
            pairwise_only,
            ws: RdmWorkspace::new(n),
            d: vec![0.0; n_pairs],
            scratch: RankScratch::default(),
            batch: Array2::zeros((batch_rows, n_pairs)),
            batch_pairwise: vec![false; batch_rows],
            batch_start: 0,
            batch_len: 0,
            gemm_out: Array2::zeros((batch_rows, n_models)),
            out: Array2::zeros((n_rows, n_models)),
            next: 0,
        })
    }

    /// Compares the RDM of `data[:, cols]` (`k` channels) with every model: the next output row.
    fn push<T: Real, B: LinalgBackend>(
        &mut self,
        data: ArrayView2<'_, T>,
        cols: Option<&[usize]>,
        k: usize,
    ) {
        self.ws.load(data, cols, k);
        self.ws.rdm_into::<B>(k, self.rdm, &mut self.d);
        let row = self.next;
        self.next += 1;
        // No early exit: a vectorisable scan.
        let has_nan = self.d.iter().fold(false, |acc, v| acc | v.is_nan());
        let pairwise = self.pairwise_only || has_nan;
        if pairwise {
            let d = ArrayView1::from(&self.d[..]);
            for (o, model) in self.out.row_mut(row).iter_mut().zip(self.raw.rows()) {
                *o = compare(d, model, self.method).expect("lengths were checked");
            }
        }
        if self.pairwise_only {
            return;
        }
        let b = self.batch_len;
        let mut dst = self.batch.row_mut(b);
        let dst = dst.as_slice_mut().expect("batch rows are contiguous");
        if pairwise {
            dst.fill(0.0);
        } else {
            features_into(&self.d, self.method, &mut self.scratch, dst);
        }
        self.batch_pairwise[b] = pairwise;
        self.batch_len += 1;
        if self.batch_len == self.batch.nrows() {
            self.flush::<B>();
        }
    }

    /// All model comparisons of the current batch in one GEMM.
    fn flush<B: LinalgBackend>(&mut self) {
        let b = self.batch_len;
        if b == 0 {
            return;
        }
        if self.out.ncols() > 0 {
            // the whole batch, rows past `b` included (left from an earlier batch, or zero)
            B::gemm(self.batch.view(), self.features.t(), self.gemm_out.view_mut());
            for (i, r) in self.gemm_out.rows().into_iter().take(b).enumerate() {
                if !self.batch_pairwise[i] {
                    self.out.row_mut(self.batch_start + i).assign(&r);
                }
            }
        }
        self.batch_start += b;
        self.batch_len = 0;
    }

    fn finish<B: LinalgBackend>(mut self) -> Array2<f64> {
        self.flush::<B>();
        debug_assert_eq!(self.next, self.out.nrows());
        debug_assert!(self.pairwise_only || self.batch_start == self.next);
        self.out
    }
}

/// Searchlight RSA: for each kept centre `c` in `centre_range`, the comparison of the RDM of
/// `data[:, hoods.members(c)]` with every model. Returns `[centre_range.len(), n_models]`.
///
/// - `data`: `[n_conditions, n_mask_voxels]`, any layout (row-major or voxel-major is fastest).
/// - `rdm`: the brain RDM's method (`crossnobis` is rejected: it needs runs and a per-sphere
///   noise model).
/// - `models_features`: `[n_models, n_pairs]`, row m =
///   [`comparison_features`](crate::compare::comparison_features)`(model m, method)`, possibly
///   relabelled; ignored for methods without features ([`CompareMethod::has_features`]: tau-a,
///   tau-b, `corr_cov`, `bures`, the CKAs) and when a raw model holds NaN (pass an empty
///   `[0, 0]` array there).
/// - `models_raw`: `[n_models, n_pairs]`, the same models' RDMs (relabelled the same way), used
///   by the pairwise path (methods without features, brain RDMs with NaN, models with NaN).
///
/// Result values equal [`compare`]`(rdm(data[:, sphere]), model, method)` (up to rounding).
/// Errors: fewer than 3 conditions, a range beyond `hoods.len()`, sphere members beyond the
/// data's columns, models of the wrong shape, crossnobis.
pub fn searchlight<T: Real, B: LinalgBackend>(
    data: ArrayView2<'_, T>,
    hoods: &Neighbourhoods,
    centre_range: Range<usize>,
    rdm: RdmMethod,
    models_features: ArrayView2<'_, f64>,
    models_raw: ArrayView2<'_, f64>,
    method: CompareMethod,
) -> Result<Array2<f64>> {
    if centre_range.start > centre_range.end || centre_range.end > hoods.len() {
        return Err(KernelError::Parameter(format!(
            "centre range {centre_range:?} is not within the {} kept centres",
            hoods.len()
        )));
    }
    let n_vox = data.ncols();
    for c in centre_range.clone() {
        if let Some(&m) = hoods.members(c).iter().max()
            && m >= n_vox
        {
            return Err(KernelError::Shape(format!(
                "sphere {c} holds mask voxel {m}, but the data have {n_vox} voxels"
            )));
        }
    }
    let mut engine =
        Engine::new(data.nrows(), centre_range.len(), rdm, models_features, models_raw, method)?;
    for c in centre_range {
        let members = hoods.members(c);
        engine.push::<T, B>(data, Some(members), members.len());
    }
    Ok(engine.finish::<B>())
}

fn check_members(n_vox: usize, members: &[usize]) -> Result<()> {
    if members.is_empty() {
        return Err(KernelError::Shape("the sphere has no voxels".into()));
    }
    if let Some(&m) = members.iter().find(|&&m| m >= n_vox) {
        return Err(KernelError::Shape(format!(
            "sphere member {m} is beyond the data's {n_vox} voxels"
        )));
    }
    Ok(())
}

/// The RDM of one sphere, `data[:, members]` (`[n_conditions, n_mask_voxels]` data), computed
/// exactly as [`searchlight`] does (with the build's default backend).
pub fn sphere_rdm<T: Real>(
    data: ArrayView2<'_, T>,
    members: &[usize],
    rdm: RdmMethod,
) -> Result<Array1<f64>> {
    let n = data.nrows();
    check_pattern_set(n, members.len().max(1), rdm)?;
    check_members(data.ncols(), members)?;
    let mut ws = RdmWorkspace::new(n);
    ws.load(data, Some(members), members.len());
    let mut d = vec![0.0; condensed_len(n)];
    ws.rdm_into::<Backend>(members.len(), rdm, &mut d);
    Ok(Array1::from(d))
}

/// Comparison features of one sphere's RDM (for permutation tests: relabel them with
/// [`permute_condensed`](crate::compare::permute_condensed) instead of recomputing ranks).
///
/// Errors as [`sphere_rdm`] and [`comparison_features`](crate::compare::comparison_features):
/// a method without features, fewer than 3 conditions, and a sphere whose RDM holds NaN
/// (compare that one pairwise: [`sphere_rdm`] and [`compare`]).
pub fn brain_features<T: Real>(
    data: ArrayView2<'_, T>,
    members: &[usize],
    rdm: RdmMethod,
    method: CompareMethod,
) -> Result<Array1<f64>> {
    let d = sphere_rdm(data, members, rdm)?;
    crate::compare::comparison_features(d.view(), method)
}

/// Time-resolved RSA (MEG/EEG): for each time point `t`, the comparison of the RDM of
/// `data[t]` (`[n_conditions, n_channels]`) with every model. `data` is
/// `[n_times, n_conditions, n_channels]`; returns `[n_times, n_models]`. Models, NaN handling
/// and errors as in [`searchlight`].
pub fn time_resolved<T: Real, B: LinalgBackend>(
    data: ArrayView3<'_, T>,
    rdm: RdmMethod,
    models_features: ArrayView2<'_, f64>,
    models_raw: ArrayView2<'_, f64>,
    method: CompareMethod,
) -> Result<Array2<f64>> {
    let (n_times, n, n_channels) = data.dim();
    check_pattern_set(n, n_channels, rdm)?;
    let mut engine = Engine::new(n, n_times, rdm, models_features, models_raw, method)?;
    for t in 0..n_times {
        engine.push::<T, B>(data.index_axis(Axis(0), t), None, n_channels);
    }
    Ok(engine.finish::<B>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{comparison_features, permute_condensed};
    use crate::linalg::Faer;
    use crate::rdm::rdm;
    use crate::rng::Rng;
    use ndarray::s;
    use ndarray::{Array3, Axis};

    /// A ragged mask in a 9x8x7 volume, in row-major order, touching the volume's faces.
    fn ragged_mask(seed: u64) -> (Vec<[usize; 3]>, [usize; 3]) {
        let shape = [9, 8, 7];
        let mut rng = Rng::new(seed);
        let mut vox = Vec::new();
        for i in 0..shape[0] {
            for j in 0..shape[1] {
                for k in 0..shape[2] {
                    // a ball-ish core plus random voxels, with holes
                    let d2 = (i as f64 - 4.0).powi(2)
                        + (j as f64 - 3.5).powi(2)
                        + (k as f64 - 3.0).powi(2);
                    if (d2 < 14.0 && rng.uniform() < 0.9) || rng.uniform() < 0.3 {
                        vox.push([i, j, k]);
                    }
                }
            }
        }
        (vox, shape)
    }

    fn brute_sphere(vox: &[[usize; 3]], c: usize, radius: f64, vs: [f64; 3]) -> Vec<usize> {
        let a = vox[c];
        (0..vox.len())
            .filter(|&m| {
                let b = vox[m];
                let d2: f64 = (0..3).map(|d| ((a[d] as f64 - b[d] as f64) * vs[d]).powi(2)).sum();
                d2.sqrt() <= radius + 1e-9
            })
            .collect()
    }

    #[test]
    fn spheres_too_large_for_the_cap_are_refused_before_they_are_built() {
        let line: Vec<[usize; 3]> = (0..10).map(|i| [i, 0, 0]).collect();
        // radius 1 on a line of 10: 28 memberships; the box searched is 3 x 3 x 3
        let ok = spheres_at_most(&line, [10, 1, 1], 1.0, [1.0; 3], 1, 28).unwrap();
        assert_eq!(ok.len(), 10);
        let err = spheres_at_most(&line, [10, 1, 1], 1.0, [1.0; 3], 1, 27).unwrap_err();
        assert!(err.to_string().contains("memberships"), "{err}");
        let err = spheres_at_most(&line, [10, 1, 1], 5.0, [1.0; 3], 1, 10).unwrap_err();
        assert!(err.to_string().contains("box of 99"), "{err}");
    }

    #[test]
    fn spheres_match_brute_force() {
        let (vox, shape) = ragged_mask(1);
        let cases: [(f64, [f64; 3]); 8] = [
            (0.0, [1.0; 3]),
            (1.0, [1.0; 3]),
            (2f64.sqrt(), [1.0; 3]),
            (2.0, [1.0; 3]),
            (3.0, [1.0; 3]),
            (3.5, [2.0, 2.0, 3.5]),
            (4.0, [2.0, 2.0, 3.5]),
            (6.0, [2.0, 2.0, 3.5]),
        ];
        // Also a mask order that is not row-major: members are still ascending mask indices.
        let mut shuffled = vox.clone();
        Rng::new(2).shuffle(&mut shuffled);
        for v in [&vox, &shuffled] {
            for (radius, vs) in cases {
                for min_voxels in [0usize, 1, 5, 20] {
                    let h = spheres(v, shape, radius, vs, min_voxels).unwrap();
                    let mut kept = 0;
                    for c in 0..v.len() {
                        let want = brute_sphere(v, c, radius, vs);
                        if want.len() >= min_voxels {
                            assert_eq!(h.centres[kept], c);
                            assert_eq!(h.members(kept), &want[..], "r={radius} centre {c}");
                            kept += 1;
                        }
                    }
                    assert_eq!(h.len(), kept);
                    assert_eq!(h.get(kept), None);
                    assert_eq!(h.is_empty(), kept == 0);
                }
            }
        }
        // Specific memberships at the volume's edge and for anisotropic voxels.
        let full: Vec<[usize; 3]> =
            (0..3).flat_map(|i| (0..3).flat_map(move |j| (0..3).map(move |k| [i, j, k]))).collect();
        let h = spheres(&full, [3, 3, 3], 2f64.sqrt(), [1.0; 3], 0).unwrap();
        assert_eq!(h.members(0), &[0, 1, 3, 4, 9, 10, 12][..]); // corner: (0,0,0) and 6 neighbours
        assert_eq!(h.members(13).len(), 19); // centre: 1 + 6 + 12
        let h = spheres(&full, [3, 3, 3], 3.5, [2.0, 2.0, 3.5], 0).unwrap();
        // from (1,1,1): z neighbours at 3.5 mm, x/y at 2 mm, xy diagonals at 2.83, xz at 4.03
        // (1,1,1): x/y neighbours at 2 mm, xy diagonals at 2.83 mm, z neighbours at exactly
        // 3.5 mm (kept), xz/yz diagonals at 4.03 mm (not).
        assert_eq!(h.members(13), &[1, 4, 7, 10, 12, 13, 14, 16, 19, 22, 25][..]);
        let h = spheres(&full, [3, 3, 3], 1.0, [1.0; 3], 7).unwrap();
        assert_eq!(h.centres, vec![13], "only the centre has a full 7-voxel sphere");
        assert_eq!(h.max_size(), 7);
    }

    #[test]
    fn spheres_reject_bad_input() {
        let v = [[0, 0, 0], [1, 0, 0]];
        for r in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                spheres(&v, [2, 1, 1], r, [1.0; 3], 0),
                Err(KernelError::Parameter(_))
            ));
        }
        assert!(matches!(
            spheres(&v, [2, 1, 1], 1.0, [1.0, 0.0, 1.0], 0),
            Err(KernelError::Parameter(_))
        ));
        assert!(matches!(
            spheres(&v, [2, 1, 1], 1.0, [1.0, f64::NAN, 1.0], 0),
            Err(KernelError::Parameter(_))
        ));
        assert!(matches!(spheres(&v, [1, 1, 1], 1.0, [1.0; 3], 0), Err(KernelError::Shape(_))));
        assert!(matches!(
            spheres(&[[0, 0, 0], [0, 0, 0]], [1, 1, 1], 1.0, [1.0; 3], 0),
            Err(KernelError::Parameter(_))
        ));
        let h = spheres(&[], [0, 0, 0], 1.0, [1.0; 3], 0).unwrap();
        assert!(h.is_empty());
        assert_eq!(h.max_size(), 0);
        // A huge radius only reaches across the volume.
        let h = spheres(&v, [2, 1, 1], 1e300, [1.0; 3], 0).unwrap();
        assert_eq!(h.members(0), &[0, 1]);
    }

    /// Data with a planted effect: within a blob, conditions of the same category share a pattern.
    fn planted_data<T: Real>(vox: &[[usize; 3]], n: usize, seed: u64) -> (Array2<T>, Vec<bool>) {
        let mut rng = Rng::new(seed);
        let cat_a: Vec<f64> = (0..vox.len()).map(|_| rng.normal()).collect();
        let cat_b: Vec<f64> = (0..vox.len()).map(|_| rng.normal()).collect();
        let in_blob: Vec<bool> = vox
            .iter()
            .map(|v| {
                (v[0] as f64 - 5.0).powi(2)
                    + (v[1] as f64 - 4.0).powi(2)
                    + (v[2] as f64 - 3.0).powi(2)
                    <= 4.0
            })
            .collect();
        let data = Array2::from_shape_fn((n, vox.len()), |(c, m)| {
            let signal =
                if in_blob[m] { 3.0 * if c < n / 2 { cat_a[m] } else { cat_b[m] } } else { 0.0 };
            T::from_f64(signal + rng.normal() + 0.5)
        });
        (data, in_blob)
    }

    /// Model RDMs: categorical (the planted one), random, and one with ties only.
    fn models(n: usize, seed: u64) -> Array2<f64> {
        let mut rng = Rng::new(seed);
        let np = condensed_len(n);
        let mut m = Array2::zeros((3, np));
        let mut q = 0;
        for i in 0..n {
            for j in i + 1..n {
                m[(0, q)] = ((i < n / 2) != (j < n / 2)) as i32 as f64;
                m[(1, q)] = rng.uniform();
                m[(2, q)] = rng.below(3) as f64;
                q += 1;
            }
        }
        m
    }

    fn features_of(models: &Array2<f64>, method: CompareMethod) -> Array2<f64> {
        if !method.has_features() {
            return Array2::zeros((0, 0));
        }
        let mut f = Array2::zeros(models.dim());
        for (mut dst, src) in f.rows_mut().into_iter().zip(models.rows()) {
            dst.assign(&comparison_features(src, method).unwrap());
        }
        f
    }

    fn same(a: f64, b: f64, tol: f64) -> bool {
        (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol
    }

    const RDMS: [RdmMethod; 3] = [RdmMethod::Correlation, RdmMethod::Euclidean, RdmMethod::Cosine];
    const CMPS: [CompareMethod; 9] = [
        CompareMethod::Spearman,
        CompareMethod::Pearson,
        CompareMethod::KendallTauA,
        CompareMethod::Cosine,
        CompareMethod::RhoA,
        CompareMethod::TauB,
        CompareMethod::CorrCov,
        CompareMethod::Bures,
        CompareMethod::CkaLinearUnbiased,
    ];

    fn check_searchlight_vs_brute<T: Real>(seed: u64) {
        let (vox, shape) = ragged_mask(seed);
        let n = 8;
        let (mut data, in_blob) = planted_data::<T>(&vox, n, seed + 1);
        // Degenerate patterns: condition 2 constant where i < 3 (no correlation there), condition
        // 3 zero where j < 2 (no cosine there): spheres inside those regions take the NaN path.
        for (m, v) in vox.iter().enumerate() {
            if v[0] < 3 {
                data[(2, m)] = T::from_f64(1.25);
            }
            if v[1] < 2 {
                data[(3, m)] = T::zero();
            }
        }
        let data_vm = data.t().as_standard_layout().into_owned();
        let raw = models(n, seed + 2);
        let radius = 1.5;
        let hoods = spheres(&vox, shape, radius, [1.0; 3], 3).unwrap();
        assert!(hoods.len() > BATCH, "several batches");
        let mut saw_nan_path = 0;
        for rdm_m in RDMS {
            for cmp in CMPS {
                let feats = features_of(&raw, cmp);
                let got = searchlight::<T, Faer>(
                    data.view(),
                    &hoods,
                    0..hoods.len(),
                    rdm_m,
                    feats.view(),
                    raw.view(),
                    cmp,
                )
                .unwrap();
                assert_eq!(got.dim(), (hoods.len(), 3));
                let mut blob = (0.0, 0usize);
                let mut rest = (0.0, 0usize);
                for c in 0..hoods.len() {
                    let members = brute_sphere(&vox, hoods.centres[c], radius, [1.0; 3]);
                    let sub = data.select(Axis(1), &members);
                    let d = rdm(sub.view(), rdm_m).unwrap();
                    if d.iter().any(|v| v.is_nan()) {
                        saw_nan_path += 1;
                    }
                    for m in 0..3 {
                        let want = compare(d.view(), raw.row(m), cmp).unwrap();
                        assert!(
                            same(got[(c, m)], want, 1e-10),
                            "{rdm_m:?} {cmp:?} centre {c} model {m}: {} vs {want}",
                            got[(c, m)]
                        );
                    }
                    if got[(c, 0)].is_finite() {
                        let acc = if in_blob[hoods.centres[c]] { &mut blob } else { &mut rest };
                        acc.0 += got[(c, 0)];
                        acc.1 += 1;
                    }
                }
                // The planted categorical structure is found inside the blob only.
                let (mb, mr) = (blob.0 / blob.1 as f64, rest.0 / rest.1 as f64);
                if cmp != CompareMethod::Cosine {
                    assert!(
                        // "rest" includes spheres that overlap the blob
                        mb > mr + 0.3,
                        "{rdm_m:?} {cmp:?}: blob {mb}, rest {mr}"
                    );
                }
                // A sub-range gives the same bytes, however short (the GEMM shape is fixed).
                for range in [7..150, 5..6, 126..131] {
                    let part = searchlight::<T, Faer>(
                        data.view(),
                        &hoods,
                        range.clone(),
                        rdm_m,
                        feats.view(),
                        raw.view(),
                        cmp,
                    )
                    .unwrap();
                    // the same bytes (NaN included: a brain RDM with NaN is NaN for bures)
                    let bits = |a: ArrayView2<'_, f64>| a.mapv(f64::to_bits);
                    assert_eq!(bits(part.view()), bits(got.slice(s![range, ..])), "{cmp:?}");
                }
                // Voxel-major data (the channel-major gather) gives the same numbers.
                let vm = searchlight::<T, Faer>(
                    data_vm.t(),
                    &hoods,
                    0..hoods.len(),
                    rdm_m,
                    feats.view(),
                    raw.view(),
                    cmp,
                )
                .unwrap();
                for (a, b) in vm.iter().zip(got.iter()) {
                    assert!(same(*a, *b, 1e-12), "voxel-major {rdm_m:?} {cmp:?}: {a} vs {b}");
                }
            }
        }
        assert!(saw_nan_path > 0, "the NaN fallback was exercised");
    }

    #[test]
    fn a_window_of_slabs_gives_the_same_bytes_as_the_whole_brain() {
        let (vox, shape) = ragged_mask(21);
        let n = 9;
        let (data, _) = planted_data::<f32>(&vox, n, 22);
        let raw = models(n, 23);
        let feats = Array2::from_shape_fn(raw.dim(), |(m, q)| {
            comparison_features(raw.row(m), CompareMethod::Spearman).unwrap()[q]
        });
        for (radius, reach) in [(2.0, 2), (1.5, 1)] {
            let hoods = spheres(&vox, shape, radius, [1.0; 3], 3).unwrap();
            let run = |d: ArrayView2<'_, f32>, h: &Neighbourhoods, range: Range<usize>| {
                searchlight::<f32, Faer>(
                    d,
                    h,
                    range,
                    RdmMethod::Correlation,
                    feats.view(),
                    raw.view(),
                    CompareMethod::Spearman,
                )
                .unwrap()
            };
            let whole = run(data.view(), &hoods, 0..hoods.len());
            // tasks are ranges of mask voxels; their centres are the kept ones inside
            for voxels in [0..40, 40..41, 100..230, 230..vox.len(), 0..vox.len(), 7..7] {
                let span = slab_span(&vox, voxels.clone(), reach);
                let c0 = hoods.centres.partition_point(|&c| c < voxels.start);
                let c1 = hoods.centres.partition_point(|&c| c < voxels.end);
                for c in c0..c1 {
                    assert!(hoods.members(c).iter().all(|m| span.contains(m)), "{voxels:?}");
                }
                assert!(span.len() < vox.len() || voxels.len() > 100, "{voxels:?}: {span:?}");
                let local = hoods.window(c0..c1, span.start).unwrap();
                let columns = data.slice(s![.., span.clone()]);
                let got = run(columns, &local, 0..c1 - c0);
                assert_eq!(got, whole.slice(s![c0..c1, ..]), "radius {radius}, {voxels:?}");
                assert_eq!(
                    local.centres[..],
                    hoods.centres[c0..c1].iter().map(|c| c - span.start).collect::<Vec<_>>()[..]
                );
            }
            let first = hoods.members(0)[0];
            assert!(hoods.window(0..1, first + 1).is_err(), "a member lies before the window");
            assert!(hoods.window(0..hoods.len() + 1, 0).is_err());
            assert_eq!(slab_span(&vox, 5..9, usize::MAX), 0..vox.len(), "an unbounded reach");
        }
    }

    #[test]
    fn searchlight_matches_brute_force_f64() {
        check_searchlight_vs_brute::<f64>(11);
    }

    #[test]
    fn searchlight_matches_brute_force_f32() {
        check_searchlight_vs_brute::<f32>(12);
    }

    #[test]
    fn searchlight_with_permuted_models_and_nan_models() {
        let (vox, shape) = ragged_mask(3);
        let n = 7;
        let (data, _) = planted_data::<f64>(&vox, n, 4);
        let data_t = data.t().as_standard_layout().into_owned(); // voxel-major layout
        let hoods = spheres(&vox, shape, 2.0, [1.0; 3], 10).unwrap();
        let raw = models(n, 5);
        let mut perm: Vec<usize> = (0..n).collect();
        Rng::new(6).shuffle(&mut perm);
        for cmp in [
            CompareMethod::Spearman,
            CompareMethod::Pearson,
            CompareMethod::Cosine,
            CompareMethod::RhoA,
            CompareMethod::TauB,
            CompareMethod::CorrCov,
            CompareMethod::CkaLinear,
        ] {
            let feats = features_of(&raw, cmp);
            // Relabelled models: permute features and raw RDMs the same way.
            let mut pf = feats.clone();
            let mut pr = raw.clone();
            for m in 0..raw.nrows() {
                if cmp.has_features() {
                    pf.row_mut(m).assign(&permute_condensed(feats.row(m), n, &perm).unwrap());
                }
                pr.row_mut(m).assign(&permute_condensed(raw.row(m), n, &perm).unwrap());
            }
            let got = searchlight::<f64, Faer>(
                data.view(),
                &hoods,
                0..hoods.len(),
                RdmMethod::Correlation,
                pf.view(),
                pr.view(),
                cmp,
            )
            .unwrap();
            let got_t = searchlight::<f64, Faer>(
                data_t.t(),
                &hoods,
                0..hoods.len(),
                RdmMethod::Correlation,
                pf.view(),
                pr.view(),
                cmp,
            )
            .unwrap();
            for c in 0..hoods.len() {
                let d = sphere_rdm(data.view(), hoods.members(c), RdmMethod::Correlation).unwrap();
                let bf = brain_features(data.view(), hoods.members(c), RdmMethod::Correlation, cmp);
                assert_eq!(bf.is_ok(), cmp.has_features());
                for m in 0..raw.nrows() {
                    let want = compare(d.view(), pr.row(m), cmp).unwrap();
                    assert!(same(got[(c, m)], want, 1e-10));
                    assert!(same(got_t[(c, m)], want, 1e-12));
                    if let Ok(bf) = &bf {
                        assert!(same(bf.dot(&pf.row(m)), want, 1e-10));
                    }
                }
            }
            // A model with a NaN dissimilarity: everything goes pairwise, NaN pairs dropped.
            let mut nan_raw = raw.clone();
            nan_raw[(1, 4)] = f64::NAN;
            let empty = Array2::<f64>::zeros((0, 0));
            let got = searchlight::<f64, Faer>(
                data.view(),
                &hoods,
                0..hoods.len(),
                RdmMethod::Euclidean,
                empty.view(),
                nan_raw.view(),
                cmp,
            )
            .unwrap();
            for c in 0..hoods.len() {
                let d = sphere_rdm(data.view(), hoods.members(c), RdmMethod::Euclidean).unwrap();
                for m in 0..raw.nrows() {
                    assert!(same(
                        got[(c, m)],
                        compare(d.view(), nan_raw.row(m), cmp).unwrap(),
                        1e-10
                    ));
                }
            }
        }
    }

    #[test]
    fn searchlight_rejects_bad_input() {
        let (vox, shape) = ragged_mask(7);
        let hoods = spheres(&vox, shape, 1.0, [1.0; 3], 0).unwrap();
        let data = Array2::<f64>::zeros((5, vox.len()));
        let raw = models(5, 1);
        let f = features_of(&raw, CompareMethod::Spearman);
        let sl = |d: ArrayView2<'_, f64>,
                  r: Range<usize>,
                  rdm_m,
                  f: ArrayView2<'_, f64>,
                  raw: ArrayView2<'_, f64>,
                  c| { searchlight::<f64, Faer>(d, &hoods, r, rdm_m, f, raw, c) };
        let sp = CompareMethod::Spearman;
        let ok = sl(data.view(), 0..3, RdmMethod::Correlation, f.view(), raw.view(), sp).unwrap();
        assert!(ok.iter().all(|v| v.is_nan()), "constant data: undefined correlations");
        let e = sl(data.view(), 0..3, RdmMethod::Crossnobis, f.view(), raw.view(), sp).unwrap_err();
        assert!(matches!(e, KernelError::Parameter(m) if m.contains("crossnobis")));
        assert!(matches!(
            sl(data.view(), 0..hoods.len() + 1, RdmMethod::Euclidean, f.view(), raw.view(), sp),
            Err(KernelError::Parameter(_))
        ));
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 3..1;
        assert!(
            sl(data.view(), backwards, RdmMethod::Euclidean, f.view(), raw.view(), sp).is_err()
        );
        let narrow = Array2::<f64>::zeros((5, 3));
        assert!(matches!(
            sl(narrow.view(), 0..hoods.len(), RdmMethod::Euclidean, f.view(), raw.view(), sp),
            Err(KernelError::Shape(_))
        ));
        let two = Array2::<f64>::zeros((2, vox.len()));
        assert!(
            matches!(sl(two.view(), 0..3, RdmMethod::Euclidean, f.view(), raw.view(), sp), Err(KernelError::Shape(m)) if m.contains("3 conditions"))
        );
        assert!(matches!(
            sl(data.view(), 0..3, RdmMethod::Euclidean, f.slice(s![.., ..4]), raw.view(), sp),
            Err(KernelError::Shape(_))
        ));
        assert!(matches!(
            sl(data.view(), 0..3, RdmMethod::Euclidean, f.view(), raw.slice(s![.., ..4]), sp),
            Err(KernelError::Shape(_))
        ));
        assert!(matches!(
            sl(data.view(), 0..3, RdmMethod::Euclidean, f.slice(s![..2, ..]), raw.view(), sp),
            Err(KernelError::Shape(_))
        ));
        // tau-a ignores the features argument
        let empty = Array2::<f64>::zeros((0, 0));
        assert!(
            sl(
                data.view(),
                0..3,
                RdmMethod::Euclidean,
                empty.view(),
                raw.view(),
                CompareMethod::KendallTauA
            )
            .is_ok()
        );
        let empty_range =
            sl(data.view(), 2..2, RdmMethod::Euclidean, f.view(), raw.view(), sp).unwrap();
        assert_eq!(empty_range.dim(), (0, 3));
        assert!(sphere_rdm(data.view(), &[], RdmMethod::Euclidean).is_err());
        assert!(sphere_rdm(data.view(), &[vox.len()], RdmMethod::Euclidean).is_err());
        assert!(
            brain_features(data.view(), &[0, 1], RdmMethod::Correlation, sp).is_err(),
            "NaN RDM"
        );
        assert!(
            brain_features(data.view(), &[0, 1], RdmMethod::Euclidean, CompareMethod::KendallTauA)
                .is_err()
        );
    }

    #[test]
    fn time_resolved_matches_loop() {
        let mut rng = Rng::new(31);
        let (nt, n, nc) = (6, 9, 5);
        let mut data: Array3<f32> = rng.normal_array((nt, n, nc));
        data.slice_mut(s![2, 4, ..]).fill(0.5); // constant pattern at t=2: NaN path for correlation
        let raw = models(n, 32);
        for rdm_m in RDMS {
            for cmp in CompareMethod::ALL {
                let feats = features_of(&raw, cmp);
                let got =
                    time_resolved::<f32, Faer>(data.view(), rdm_m, feats.view(), raw.view(), cmp)
                        .unwrap();
                assert_eq!(got.dim(), (nt, 3));
                for t in 0..nt {
                    let d = rdm(data.index_axis(Axis(0), t), rdm_m).unwrap();
                    for m in 0..3 {
                        let want = compare(d.view(), raw.row(m), cmp).unwrap();
                        assert!(same(got[(t, m)], want, 1e-10), "{rdm_m:?} {cmp:?} t={t}");
                    }
                }
            }
        }
        let f = features_of(&raw, CompareMethod::Pearson);
        assert!(
            time_resolved::<f32, Faer>(
                data.view(),
                RdmMethod::Crossnobis,
                f.view(),
                raw.view(),
                CompareMethod::Pearson
            )
            .is_err()
        );
        let empty: Array3<f32> = Array3::zeros((3, n, 0));
        assert!(
            time_resolved::<f32, Faer>(
                empty.view(),
                RdmMethod::Euclidean,
                f.view(),
                raw.view(),
                CompareMethod::Pearson
            )
            .is_err()
        );
    }

    /// CPU time of this thread in seconds (Linux `schedstat`; wall time elsewhere). The test
    /// machines are shared with other builds, so wall time over-states the cost.
    fn thread_seconds(wall0: std::time::Instant) -> f64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .map_or_else(|| wall0.elapsed().as_secs_f64(), |ns| ns as f64 * 1e-9)
    }

    /// Per-centre cost for 92 conditions, radius-3 spheres (123 voxels), 8 models, f32 data.
    /// `cargo test --release -p brainfit-kernels --lib searchlight_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run in release mode with --ignored --nocapture"]
    fn searchlight_timing() {
        let side = 20;
        let vox: Vec<[usize; 3]> = (0..side)
            .flat_map(|i| (0..side).flat_map(move |j| (0..side).map(move |k| [i, j, k])))
            .collect();
        let hoods = spheres(&vox, [side; 3], 3.0, [1.0; 3], 123).unwrap();
        let n_centres = 2000.min(hoods.len());
        assert_eq!(hoods.members(0).len(), 123);
        let n = 92;
        let mut rng = Rng::new(1);
        let data: Array2<f32> = rng.normal_array((n, vox.len()));
        let raw: Array2<f64> = rng.normal_array((8, condensed_len(n)));
        let wall0 = std::time::Instant::now();
        // Best of 3 (CPU time, and wall time for reference), in microseconds per centre.
        let best_of_3 = |f: &mut dyn FnMut()| {
            let (mut cpu, mut wall) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..3 {
                let (c0, w0) = (thread_seconds(wall0), std::time::Instant::now());
                f();
                cpu = cpu.min(thread_seconds(wall0) - c0);
                wall = wall.min(w0.elapsed().as_secs_f64());
            }
            (cpu * 1e6 / n_centres as f64, wall * 1e6 / n_centres as f64)
        };
        let data_vm = data.t().as_standard_layout().into_owned();
        for (layout, view) in [("row-major", data.view()), ("voxel-major", data_vm.t())] {
            for cmp in [CompareMethod::Spearman, CompareMethod::Pearson] {
                let feats = features_of(&raw, cmp);
                for rdm_m in RDMS {
                    let (cpu, wall) = best_of_3(&mut || {
                        let out = searchlight::<f32, Backend>(
                            view,
                            &hoods,
                            0..n_centres,
                            rdm_m,
                            feats.view(),
                            raw.view(),
                            cmp,
                        )
                        .unwrap();
                        assert!(out.iter().all(|v| v.is_finite()));
                    });
                    eprintln!(
                        "searchlight {layout} {rdm_m:?}/{cmp:?}: {n_centres} centres, \
                         {cpu:.1} us CPU ({wall:.1} us wall) per centre"
                    );
                }
            }
        }
        // Break-down of the correlation/Spearman path.
        let mut ws = RdmWorkspace::new(n);
        let mut d = vec![0.0; condensed_len(n)];
        let (gather, _) = best_of_3(&mut || {
            for c in 0..n_centres {
                let m = hoods.members(c);
                ws.load(data.view(), Some(m), m.len());
            }
        });
        let (gram, _) = best_of_3(&mut || {
            for c in 0..n_centres {
                let m = hoods.members(c);
                ws.load(data.view(), Some(m), m.len());
                ws.rdm_into::<Backend>(m.len(), RdmMethod::Correlation, &mut d);
            }
        });
        let mut scratch = RankScratch::default();
        let mut r = vec![0.0; d.len()];
        let (rank, _) = best_of_3(&mut || {
            for _ in 0..n_centres {
                features_into(&d, CompareMethod::Spearman, &mut scratch, &mut r);
            }
        });
        let (rank_only, _) = best_of_3(&mut || {
            for _ in 0..n_centres {
                crate::compare::rank_into(&d, &mut scratch, &mut r);
            }
        });
        eprintln!(
            "per centre (CPU): gather {gather:.1} us, + Gram and RDM {:.1} us, \
             rank and features {rank:.1} us (rank alone {rank_only:.1} us)",
            gram - gather
        );
    }
}
