//! Representational dissimilarity matrices (RDMs): the geometry of a set of condition patterns.
//!
//! RSA compares brains and networks through the pairwise dissimilarities of their responses to
//! the same conditions (stimuli). This module computes those dissimilarities the way rsatoolbox
//! does, so that brainfit's numbers can be checked against the field's reference package:
//!
//! - `correlation`: `1 - r`, r the Pearson correlation of two condition patterns across channels;
//! - `euclidean`: the squared Euclidean distance divided by the number of channels (rsatoolbox's
//!   "euclidean" RDM);
//! - `cosine`: `1 - cos`, cos the cosine similarity of two patterns (as scipy's `pdist`;
//!   rsatoolbox has no cosine RDM);
//! - `crossnobis`: the cross-validated (leave-one-run-out) Mahalanobis distance, divided by the
//!   number of channels, optionally whitened by a noise precision matrix (see [`crossnobis`]).
//!
//! RDMs are stored *condensed*: the upper triangle without the diagonal, row-major, i.e. pairs
//! `(0,1), (0,2), …, (0,n-1), (1,2), …, (n-2,n-1)`, `n(n-1)/2` values ([`pair_index`]).
//!
//! All arithmetic is in `f64`, whatever the data's precision (f32 data are widened exactly).
//! The RDM of a pattern set is computed from the pattern set's Gram matrix (one GEMM through the
//! linear-algebra backend); searchlights reuse the same code on every sphere.
//!
//! # NaN policy
//! - `correlation`: a pattern with zero variance across channels (all values exactly equal) has
//!   no correlation with anything: every dissimilarity involving that condition is NaN.
//! - `cosine`: likewise for a pattern that is all zeros.
//! - Non-finite values (NaN, ±inf) in a pattern make the dissimilarities that involve that
//!   condition NaN (or non-finite); the others are unaffected.
//! - RDM comparisons ([`crate::compare`]) drop NaN dissimilarities pairwise, as rsatoolbox does.
//! - Squared Euclidean distances are clamped at 0 (rounding can otherwise make the distance of
//!   two identical patterns a tiny negative number).

use crate::linalg::{Backend, LinalgBackend};
use crate::{KernelError, Real, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2};

/// How the dissimilarity of two condition patterns is measured (job-file spellings
/// `"correlation"`, `"euclidean"`, `"cosine"`, `"crossnobis"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RdmMethod {
    /// `1 - Pearson r` across channels.
    Correlation,
    /// Squared Euclidean distance divided by the number of channels (rsatoolbox's convention).
    Euclidean,
    /// `1 - cosine similarity`.
    Cosine,
    /// Cross-validated Mahalanobis distance; needs runs, see [`crossnobis`].
    Crossnobis,
}

impl RdmMethod {
    /// Parses the job-file spelling (the serde one).
    pub fn parse(s: &str) -> Result<Self> {
        crate::parse_spelling(s)
    }

    /// The job-file spelling of the method (inverse of [`RdmMethod::parse`]).
    pub fn as_str(self) -> &'static str {
        match self {
            RdmMethod::Correlation => "correlation",
            RdmMethod::Euclidean => "euclidean",
            RdmMethod::Cosine => "cosine",
            RdmMethod::Crossnobis => "crossnobis",
        }
    }
}

/// Length of the condensed RDM of `n` conditions: `n(n-1)/2`.
pub fn condensed_len(n: usize) -> usize {
    checked_condensed_len(n).unwrap_or(usize::MAX)
}

/// `n(n-1)/2`, or None if it overflows. The even factor is halved first, so the product only
/// overflows when the result does.
fn checked_condensed_len(n: usize) -> Option<usize> {
    match n {
        0 | 1 => Some(0),
        _ if n.is_multiple_of(2) => (n / 2).checked_mul(n - 1),
        _ => n.checked_mul((n - 1) / 2),
    }
}

/// Position of the pair `(i, j)`, `i < j < n`, in a condensed RDM of `n` conditions.
///
/// The arguments are a precondition (checked in debug builds): `pair_index(n, i, j)` for `i > j`
/// is the index of `(j, i)`.
#[inline]
pub fn pair_index(n: usize, i: usize, j: usize) -> usize {
    debug_assert!(i != j && i < n && j < n, "pair_index({n}, {i}, {j})");
    let (i, j) = if i < j { (i, j) } else { (j, i) };
    i * (2 * n - i - 1) / 2 + (j - i - 1)
}

/// Number of conditions of a condensed RDM of length `len` (at least 2 conditions).
pub fn n_conditions_from_condensed(len: usize) -> Result<usize> {
    if len == 0 {
        return Err(KernelError::Shape(
            "a condensed RDM must hold at least one dissimilarity (2 conditions)".into(),
        ));
    }
    // n = (1 + sqrt(1 + 8 len)) / 2, corrected for rounding of the float square root.
    let mut n = ((1.0 + (1.0 + 8.0 * len as f64).sqrt()) / 2.0).round() as usize;
    while n > 2 && checked_condensed_len(n).is_none_or(|l| l > len) {
        n -= 1;
    }
    while let Some(l) = checked_condensed_len(n)
        && l < len
    {
        n += 1;
    }
    if checked_condensed_len(n) == Some(len) {
        Ok(n)
    } else {
        Err(KernelError::Shape(format!(
            "{len} is not the length of a condensed RDM (n(n-1)/2 for some n)"
        )))
    }
}

/// Condensed form of a square RDM `a` (`name` labels error messages).
///
/// `a` must be square with at least 2 conditions, symmetric (within `1e-10` relative to the
/// largest absolute entry; NaN only where the mirrored entry is NaN too), and have a zero (within
/// the same tolerance) or NaN diagonal. The upper triangle is returned.
pub fn square_to_condensed(a: ArrayView2<'_, f64>, name: &str) -> Result<Array1<f64>> {
    let (n, m) = a.dim();
    if n != m {
        return Err(KernelError::Shape(format!("RDM {name:?} is {n}x{m}, not square")));
    }
    if n < 2 {
        return Err(KernelError::Shape(format!(
            "RDM {name:?} is {n}x{n}; an RDM needs at least 2 conditions"
        )));
    }
    let scale = a.iter().filter(|v| v.is_finite()).fold(0.0f64, |s, v| s.max(v.abs()));
    let tol = 1e-10 * scale;
    for i in 0..n {
        let d = a[(i, i)];
        if !(d.is_nan() || d.abs() <= tol) {
            return Err(KernelError::Parameter(format!(
                "RDM {name:?} has a nonzero diagonal: entry ({i}, {i}) is {d}"
            )));
        }
    }
    let mut out = Array1::<f64>::zeros(condensed_len(n));
    let mut p = 0;
    for i in 0..n {
        for j in i + 1..n {
            let (u, l) = (a[(i, j)], a[(j, i)]);
            let ok = if u.is_nan() || l.is_nan() {
                u.is_nan() && l.is_nan()
            } else {
                u == l || (u - l).abs() <= tol
            };
            if !ok {
                return Err(KernelError::Parameter(format!(
                    "RDM {name:?} is not symmetric: entry ({i}, {j}) is {u}, ({j}, {i}) is {l}"
                )));
            }
            out[p] = u;
            p += 1;
        }
    }
    Ok(out)
}

/// Square, symmetric form of a condensed RDM, with a zero diagonal.
pub fn condensed_to_square(v: ArrayView1<'_, f64>) -> Result<Array2<f64>> {
    let n = n_conditions_from_condensed(v.len())?;
    let mut out = Array2::<f64>::zeros((n, n));
    let mut p = 0;
    for i in 0..n {
        for j in i + 1..n {
            out[(i, j)] = v[p];
            out[(j, i)] = v[p];
            p += 1;
        }
    }
    Ok(out)
}

/// The RDM of condition patterns `[n_conditions, n_channels]`, condensed, in f64.
///
/// Methods `correlation`, `euclidean` and `cosine`; see the module header for the definitions
/// and the NaN policy. `crossnobis` needs runs and is computed by [`crossnobis`].
pub fn rdm<T: Real>(patterns: ArrayView2<'_, T>, method: RdmMethod) -> Result<Array1<f64>> {
    let (n, p) = patterns.dim();
    check_pattern_set(n, p, method)?;
    let mut ws = RdmWorkspace::new(n);
    ws.load(patterns, None, p);
    let mut out = Array1::<f64>::zeros(condensed_len(n));
    ws.rdm_into::<Backend>(p, method, out.as_slice_mut().expect("a fresh array is contiguous"));
    Ok(out)
}

/// Checks that `n` patterns of `p` channels can make an RDM with `method` (not crossnobis).
pub(crate) fn check_pattern_set(n: usize, p: usize, method: RdmMethod) -> Result<()> {
    if method == RdmMethod::Crossnobis {
        return Err(KernelError::Parameter(
            "the crossnobis RDM needs runs (cross-validation folds) and a noise precision: \
             use rdm::crossnobis()"
                .into(),
        ));
    }
    if n < 2 {
        return Err(KernelError::Shape(format!("an RDM needs at least 2 conditions, got {n}")));
    }
    if p == 0 {
        return Err(KernelError::Shape("the condition patterns have no channels".into()));
    }
    Ok(())
}

/// Reusable buffers that turn one pattern set (`n` conditions by `k` channels) into its RDM.
///
/// Shared by [`rdm`], the searchlight and time-resolved RSA, so that all three compute exactly
/// the same numbers: gather the patterns into f64, centre them as the method requires, one Gram
/// matrix through the backend's GEMM, and the dissimilarities from the Gram matrix.
///
/// The buffer follows the data's layout, so that gathering reads contiguous memory: condition-
/// major `[n, k]` for row-major data, channel-major `[k, n]` for column-major (voxel-major) data.
#[derive(Debug)]
pub(crate) struct RdmWorkspace {
    n: usize,
    /// Patterns in the first `n * k` entries: `[n, k]` row-major, or `[k, n]` if `channel_major`.
    x: Vec<f64>,
    channel_major: bool,
    gram: Array2<f64>,
    /// Per condition: its pattern cannot be normalised (constant / all-zero).
    degenerate: Vec<bool>,
    /// Per condition: 1 / norm of its (centred) pattern, NaN if degenerate.
    inv_norm: Vec<f64>,
    /// Scratch of length `k` or `n` (channel means, per-condition sums).
    tmp: Vec<f64>,
    tmp2: Vec<f64>,
    tmp3: Vec<f64>,
    /// Runs of consecutive column indices: (first column, first position, length).
    runs: Vec<(usize, usize, usize)>,
}

impl RdmWorkspace {
    pub(crate) fn new(n: usize) -> Self {
        RdmWorkspace {
            n,
            x: Vec::new(),
            channel_major: false,
            gram: Array2::zeros((n, n)),
            degenerate: vec![false; n],
            inv_norm: vec![0.0; n],
            tmp: Vec::new(),
            tmp2: Vec::new(),
            tmp3: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// Copies `data[:, cols]` (all columns when `cols` is None; `k` columns either way) into the
    /// pattern buffer, widening to f64. Column indices must be in range (checked by callers).
    pub(crate) fn load<T: Real>(
        &mut self,
        data: ArrayView2<'_, T>,
        cols: Option<&[usize]>,
        k: usize,
    ) {
        let n = self.n;
        debug_assert_eq!(data.nrows(), n);
        self.x.resize(n * k, 0.0);
        let x = &mut self.x[..n * k];
        let widen = |dst: &mut [f64], src: &[T]| {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = Real::as_f64(v);
            }
        };
        if let Some(s) = data.as_slice() {
            // Row-major data: condition-major buffer, rows gathered run by run.
            self.channel_major = false;
            let ncols = data.ncols();
            match cols {
                None => widen(x, s),
                Some(cols) => {
                    debug_assert_eq!(cols.len(), k);
                    self.runs.clear();
                    let mut j = 0;
                    while j < k {
                        let mut e = j + 1;
                        while e < k && cols[e] == cols[e - 1] + 1 {
                            e += 1;
                        }
                        self.runs.push((cols[j], j, e - j));
                        j = e;
                    }
                    for (row, dst) in s.chunks_exact(ncols).zip(x.chunks_exact_mut(k)) {
                        for &(m, j, len) in &self.runs {
                            widen(&mut dst[j..j + len], &row[m..m + len]);
                        }
                    }
                }
            }
        } else if let Some(s) = data.t().as_slice() {
            // Column-major (voxel-major) data: channel-major buffer, one contiguous copy per
            // channel.
            self.channel_major = true;
            match cols {
                None => widen(x, s),
                Some(cols) => {
                    for (&m, dst) in cols.iter().zip(x.chunks_exact_mut(n)) {
                        widen(dst, &s[m * n..(m + 1) * n]);
                    }
                }
            }
        } else {
            self.channel_major = false;
            for c in 0..n {
                for j in 0..k {
                    let m = cols.map_or(j, |cols| cols[j]);
                    x[c * k + j] = Real::as_f64(data[(c, m)]);
                }
            }
        }
    }

    /// The condensed RDM of the loaded `[n, k]` patterns into `out` (length `n(n-1)/2`).
    pub(crate) fn rdm_into<B: LinalgBackend>(
        &mut self,
        k: usize,
        method: RdmMethod,
        out: &mut [f64],
    ) {
        let n = self.n;
        debug_assert_eq!(out.len(), condensed_len(n));
        debug_assert!(k > 0 && method != RdmMethod::Crossnobis);
        let x = &mut self.x[..n * k];
        match (method, self.channel_major) {
            (RdmMethod::Correlation, false) => {
                for (row, deg) in x.chunks_exact_mut(k).zip(self.degenerate.iter_mut()) {
                    let (lo, hi) = lane_min_max(row);
                    *deg = lo == hi;
                    let mean = lane_sum(row) / k as f64;
                    row.iter_mut().for_each(|v| *v -= mean);
                }
            }
            (RdmMethod::Correlation, true) => {
                // Per-condition sums, minima and maxima, accumulated across channel rows.
                let (sum, lo, hi) = (&mut self.tmp, &mut self.tmp2, &mut self.tmp3);
                sum.clear();
                sum.resize(n, 0.0);
                lo.clear();
                lo.extend_from_slice(&x[..n]);
                hi.clear();
                hi.extend_from_slice(&x[..n]);
                for row in x.chunks_exact(n) {
                    for (((s, l), h), &v) in
                        sum.iter_mut().zip(lo.iter_mut()).zip(hi.iter_mut()).zip(row)
                    {
                        *s += v;
                        *l = if v < *l { v } else { *l };
                        *h = if v > *h { v } else { *h };
                    }
                }
                let inv_k = 1.0 / k as f64;
                for (((d, s), l), h) in
                    self.degenerate.iter_mut().zip(sum.iter_mut()).zip(lo.iter()).zip(hi.iter())
                {
                    *d = l == h;
                    *s *= inv_k;
                }
                for row in x.chunks_exact_mut(n) {
                    for (v, m) in row.iter_mut().zip(sum.iter()) {
                        *v -= m;
                    }
                }
            }
            (RdmMethod::Cosine, false) => {
                for (row, deg) in x.chunks_exact(k).zip(self.degenerate.iter_mut()) {
                    let (lo, hi) = lane_min_max(row);
                    *deg = lo == 0.0 && hi == 0.0;
                }
            }
            (RdmMethod::Cosine, true) => {
                let big = &mut self.tmp;
                big.clear();
                big.resize(n, 0.0);
                for row in x.chunks_exact(n) {
                    for (b, v) in big.iter_mut().zip(row) {
                        *b = b.max(v.abs());
                    }
                }
                for (d, b) in self.degenerate.iter_mut().zip(big.iter()) {
                    *d = *b == 0.0;
                }
            }
            (_, channel_major) => {
                // Distances do not change under a common translation; removing the channel means
                // keeps the Gram-matrix formula accurate for data far from the origin. Skipped
                // when a value is not finite, so that it only spoils its own condition's pairs.
                if lane_all_finite(x) {
                    if channel_major {
                        for row in x.chunks_exact_mut(n) {
                            let mean = lane_sum(row) / n as f64;
                            row.iter_mut().for_each(|v| *v -= mean);
                        }
                    } else {
                        let mean = &mut self.tmp;
                        mean.clear();
                        mean.resize(k, 0.0);
                        for row in x.chunks_exact(k) {
                            for (m, &v) in mean.iter_mut().zip(row) {
                                *m += v;
                            }
                        }
                        let inv = 1.0 / n as f64;
                        mean.iter_mut().for_each(|m| *m *= inv);
                        for row in x.chunks_exact_mut(k) {
                            for (v, &m) in row.iter_mut().zip(mean.iter()) {
                                *v -= m;
                            }
                        }
                    }
                }
                self.degenerate.iter_mut().for_each(|d| *d = false);
            }
        }
        let x = &self.x[..n * k];
        let xv = if self.channel_major {
            ArrayView2::from_shape((k, n), x).expect("buffer holds k*n values").reversed_axes()
        } else {
            ArrayView2::from_shape((n, k), x).expect("buffer holds n*k values")
        };
        gram_upper::<B>(xv, &mut self.gram);
        let g = &self.gram;
        let mut p = 0;
        match method {
            RdmMethod::Correlation | RdmMethod::Cosine => {
                // 1 / norm per condition; NaN marks a pattern that cannot be normalised.
                for i in 0..n {
                    let q = g[(i, i)];
                    self.inv_norm[i] = if self.degenerate[i] || q.is_nan() || q <= 0.0 {
                        f64::NAN
                    } else {
                        1.0 / q.sqrt()
                    };
                }
                for i in 0..n {
                    let row = &g.row(i).to_slice().expect("Gram rows are contiguous")[i + 1..];
                    let a = self.inv_norm[i];
                    let dst = &mut out[p..p + row.len()];
                    for ((d, &gij), &b) in dst.iter_mut().zip(row).zip(&self.inv_norm[i + 1..]) {
                        *d = 1.0 - gij * a * b;
                    }
                    p += row.len();
                }
            }
            RdmMethod::Euclidean | RdmMethod::Crossnobis => {
                let inv_k = 1.0 / k as f64;
                let diag = &mut self.inv_norm; // reused as scratch: the Gram diagonal
                for (i, d) in diag.iter_mut().enumerate() {
                    *d = g[(i, i)];
                }
                for i in 0..n {
                    let row = &g.row(i).to_slice().expect("Gram rows are contiguous")[i + 1..];
                    let gii = diag[i];
                    let dst = &mut out[p..p + row.len()];
                    for ((d, &gij), &gjj) in dst.iter_mut().zip(row).zip(&diag[i + 1..]) {
                        let v = (gii + gjj - 2.0 * gij) * inv_k;
                        // max() would turn NaN into 0: clamp only finite negatives.
                        *d = if v < 0.0 { 0.0 } else { v };
                    }
                    p += row.len();
                }
            }
        }
    }
}

/// `gram = x xᵀ` for `x` of shape `[n, k]`; only the diagonal and the upper triangle are
/// guaranteed (callers read nothing else). For larger `n`, two GEMMs over row blocks
/// `x = [a; b]` skip the block below the diagonal's mirror image, a quarter of the work:
/// `gram[:, :h] = x aᵀ` and `gram[h:, h:] = b bᵀ`, then the upper-right block is copied from the
/// lower-left one.
fn gram_upper<B: LinalgBackend>(x: ArrayView2<'_, f64>, gram: &mut Array2<f64>) {
    let n = x.nrows();
    if n < 32 {
        B::gemm(x, x.t(), gram.view_mut());
        return;
    }
    let h = n / 2;
    let a = x.slice(ndarray::s![..h, ..]);
    let b = x.slice(ndarray::s![h.., ..]);
    B::gemm(x, a.t(), gram.slice_mut(ndarray::s![.., ..h]));
    B::gemm(b, b.t(), gram.slice_mut(ndarray::s![h.., h..]));
    for i in 0..h {
        for j in h..n {
            gram[(i, j)] = gram[(j, i)];
        }
    }
}

/// Minimum and maximum of a non-empty slice (NaNs ignored unless the first value is NaN), with
/// 8 lanes (vectorisable).
fn lane_min_max(xs: &[f64]) -> (f64, f64) {
    let mut lo = [xs[0]; 8];
    let mut hi = [xs[0]; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    // Comparisons as selects (`minpd`/`maxpd`); a NaN never replaces a value.
    for c in chunks {
        for l in 0..8 {
            lo[l] = if c[l] < lo[l] { c[l] } else { lo[l] };
            hi[l] = if c[l] > hi[l] { c[l] } else { hi[l] };
        }
    }
    let mut a = lo[0];
    let mut b = hi[0];
    for &v in lo[1..].iter().chain(rest) {
        a = if v < a { v } else { a };
    }
    for &v in hi[1..].iter().chain(rest) {
        b = if v > b { v } else { b };
    }
    (a, b)
}

/// Whether every value is finite (no early exit: vectorisable).
fn lane_all_finite(xs: &[f64]) -> bool {
    // 0 * x is 0 for finite x and NaN for NaN and ±inf; the sum is NaN iff one of them is.
    let mut acc = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += 0.0 * c[l];
        }
    }
    let s = acc.iter().sum::<f64>() + rest.iter().map(|v| 0.0 * v).sum::<f64>();
    s == 0.0
}

/// Sum of `f(x)` with 8 independent accumulators: vectorisable, and more accurate than a
/// serial sum (a serial f64 sum is bound by the latency of one addition per element).
#[inline]
fn lane_sum_of(xs: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rest {
        s += f(v);
    }
    s
}

/// Sum with 8 independent accumulators (see [`lane_sum_of`]).
#[inline]
pub(crate) fn lane_sum(xs: &[f64]) -> f64 {
    lane_sum_of(xs, |v| v)
}

/// Sum of squares with 8 independent accumulators (see [`lane_sum_of`]).
#[inline]
pub(crate) fn lane_sum_sq(xs: &[f64]) -> f64 {
    lane_sum_of(xs, |v| v * v)
}

/// Cross-validated Mahalanobis ("crossnobis") RDM, exactly as rsatoolbox's
/// `calc_rdm(Dataset(data, obs_descriptors={"conds": conds, "runs": runs}), method='crossnobis',
/// descriptor='conds', cv_descriptor='runs', noise=precision)`.
///
/// `data` is `[n_obs, n_channels]`, `conds[o]` and `runs[o]` label observation `o`. Conditions
/// are the RDM's rows in ascending label order. For each run `k` (leave-one-run-out fold):
/// `b_c` = mean of run `k`'s observations of condition `c`, `a_c` = mean of all other runs'
/// observations of `c` (pooled over observations, not a mean of run means), and
/// `d_ij(k) = (a_i - a_j)ᵀ P (b_i - b_j) / n_channels`; the RDM is the mean of `d(k)` over folds.
/// `P` is the noise precision `[n_channels, n_channels]` (identity when `None`). Crossnobis
/// distances are unbiased and can be negative.
///
/// Errors: lengths that disagree, fewer than 2 conditions or runs, a condition without an
/// observation in some run, a precision of the wrong shape.
pub fn crossnobis<T: Real>(
    data: ArrayView2<'_, T>,
    conds: &[i64],
    runs: &[i64],
    precision: Option<ArrayView2<'_, f64>>,
) -> Result<Array1<f64>> {
    let (n_obs, p) = data.dim();
    if conds.len() != n_obs || runs.len() != n_obs {
        return Err(KernelError::Shape(format!(
            "crossnobis: {n_obs} observations but {} condition labels and {} run labels",
            conds.len(),
            runs.len()
        )));
    }
    if p == 0 {
        return Err(KernelError::Shape("crossnobis: the data have no channels".into()));
    }
    if let Some(prec) = &precision
        && prec.dim() != (p, p)
    {
        return Err(KernelError::Shape(format!(
            "crossnobis: the precision is {}x{} but the data have {p} channels",
            prec.nrows(),
            prec.ncols()
        )));
    }
    let mut cond_labels: Vec<i64> = conds.to_vec();
    cond_labels.sort_unstable();
    cond_labels.dedup();
    let mut run_labels: Vec<i64> = runs.to_vec();
    run_labels.sort_unstable();
    run_labels.dedup();
    let (nc, nr) = (cond_labels.len(), run_labels.len());
    if nc < 2 {
        return Err(KernelError::Shape(format!(
            "crossnobis: an RDM needs at least 2 conditions, got {nc}"
        )));
    }
    if nr < 2 {
        return Err(KernelError::CrossValidation(format!(
            "crossnobis needs at least 2 runs to cross-validate, got {nr}"
        )));
    }
    // Sums and counts per (run, condition).
    let mut sums = vec![0.0f64; nr * nc * p];
    let mut counts = vec![0usize; nr * nc];
    for (o, row) in data.rows().into_iter().enumerate() {
        let c = cond_labels.binary_search(&conds[o]).expect("label is present");
        let r = run_labels.binary_search(&runs[o]).expect("label is present");
        counts[r * nc + c] += 1;
        let s = &mut sums[(r * nc + c) * p..(r * nc + c + 1) * p];
        for (acc, &v) in s.iter_mut().zip(row.iter()) {
            *acc += Real::as_f64(v);
        }
    }
    for r in 0..nr {
        for c in 0..nc {
            if counts[r * nc + c] == 0 {
                return Err(KernelError::CrossValidation(format!(
                    "crossnobis: condition {} has no observation in run {}",
                    cond_labels[c], run_labels[r]
                )));
            }
        }
    }
    let mut acc = Array1::<f64>::zeros(condensed_len(nc));
    let mut train = Array2::<f64>::zeros((nc, p));
    let mut test = Array2::<f64>::zeros((nc, p));
    for k in 0..nr {
        for c in 0..nc {
            let n_test = counts[k * nc + c] as f64;
            let mut n_train = 0usize;
            let mut tr = train.row_mut(c);
            tr.fill(0.0);
            for r in (0..nr).filter(|&r| r != k) {
                n_train += counts[r * nc + c];
                let s = &sums[(r * nc + c) * p..(r * nc + c + 1) * p];
                tr.iter_mut().zip(s).for_each(|(t, v)| *t += v);
            }
            let inv = 1.0 / n_train as f64;
            tr.iter_mut().for_each(|t| *t *= inv);
            let s = &sums[(k * nc + c) * p..(k * nc + c + 1) * p];
            test.row_mut(c).iter_mut().zip(s).for_each(|(t, v)| *t = v / n_test);
        }
        let kernel = match &precision {
            Some(prec) => train.dot(prec).dot(&test.t()),
            None => train.dot(&test.t()),
        };
        let mut q = 0;
        for i in 0..nc {
            for j in i + 1..nc {
                acc[q] +=
                    (kernel[(i, i)] + kernel[(j, j)] - kernel[(i, j)] - kernel[(j, i)]) / p as f64;
                q += 1;
            }
        }
    }
    acc.mapv_inplace(|v| v / nr as f64);
    Ok(acc)
}

/// Noise precision matrix from residuals `[n_residuals, n_channels]`, exactly as rsatoolbox's
/// `prec_from_residuals(residuals, method='shrinkage_diag')` (default degrees of freedom).
///
/// The residuals' column means are removed; with `m` rows and `dof = m - 1`, the sample
/// covariance `S = XᵀX / dof` is shrunk towards its diagonal (Schäfer & Strimmer 2005):
/// off-diagonal entries are multiplied by `1 - λ`, where, with `R = XᵀX / (sᵢ sⱼ (m-1))` the
/// correlation matrix, `R2 = Σ_rows (xᵢxⱼ)² / (sᵢ² sⱼ² (m-1))` and
/// `Var(R) = m / dof² · (R2 - R²)`, `λ = clamp(Σ_{i≠j} Var(R)ᵢⱼ / Σ_{i≠j} Rᵢⱼ², 0, 1)`.
/// The precision is the inverse of the shrunk covariance (Cholesky). With one channel the
/// result is `1 / variance` (rsatoolbox returns NaN there).
///
/// Errors: fewer than 2 residual rows, no channels, a channel with zero variance or non-finite
/// values, or a shrunk covariance that is not positive definite.
pub fn precision_shrinkage_diag(residuals: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
    let (m, c) = residuals.dim();
    if m < 2 {
        return Err(KernelError::Shape(format!(
            "precision_shrinkage_diag needs at least 2 residual rows, got {m}"
        )));
    }
    if c == 0 {
        return Err(KernelError::Shape("precision_shrinkage_diag: no channels".into()));
    }
    if residuals.iter().any(|v| !v.is_finite()) {
        return Err(KernelError::Parameter(
            "precision_shrinkage_diag: the residuals hold non-finite values".into(),
        ));
    }
    let mean = residuals.sum_axis(ndarray::Axis(0)) / m as f64;
    let x = &residuals - &mean;
    let dof = (m - 1) as f64;
    let s_sum = x.t().dot(&x);
    let mut s2_sum = Array2::<f64>::zeros((c, c));
    for row in x.rows() {
        for i in 0..c {
            let xi = row[i];
            let mut out = s2_sum.row_mut(i);
            for (o, &xj) in out.iter_mut().zip(row.iter()) {
                let v = xi * xj;
                *o += v * v;
            }
        }
    }
    let var: Vec<f64> = (0..c).map(|i| s_sum[(i, i)] / dof).collect();
    if let Some(i) = var.iter().position(|&v| v.is_nan() || v <= 0.0) {
        return Err(KernelError::Parameter(format!(
            "precision_shrinkage_diag: channel {i} has zero variance"
        )));
    }
    let mut lambda = 0.0;
    if c > 1 {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for i in 0..c {
            for j in 0..c {
                if i == j {
                    continue;
                }
                let r = s_sum[(i, j)] / var[j].sqrt() / var[i].sqrt() / (m - 1) as f64;
                let r2 = s2_sum[(i, j)] / var[j] / var[i] / (m - 1) as f64;
                num += m as f64 / (dof * dof) * (r2 - r * r);
                den += r * r;
            }
        }
        lambda = (num / den).clamp(0.0, 1.0);
        if lambda.is_nan() {
            // All off-diagonal correlations exactly zero: nothing to shrink.
            lambda = 0.0;
        }
    }
    let cov = Array2::from_shape_fn((c, c), |(i, j)| {
        let s = s_sum[(i, j)] / dof;
        if i == j { s } else { s * (1.0 - lambda) }
    });
    spd_inverse(cov.view())
}

/// The noise precision a crossnobis RDM is whitened with (job-file spellings `"none"`,
/// `"diag"`, `"shrinkage_diag"`), estimated from the measurements' residuals about their
/// condition means (rsatoolbox's `prec_from_residuals` on those residuals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoisePrecision {
    /// No whitening: the Euclidean crossnobis distance.
    #[default]
    None,
    /// Univariate noise normalisation: each channel divided by its residual variance.
    Diag,
    /// The residual covariance shrunk towards its diagonal ([`precision_shrinkage_diag`]).
    ShrinkageDiag,
}

impl NoisePrecision {
    /// The job-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NoisePrecision::None => "none",
            NoisePrecision::Diag => "diag",
            NoisePrecision::ShrinkageDiag => "shrinkage_diag",
        }
    }
}

/// Observations of conditions over runs: which condition (and run) each row of the brain data
/// measured. RDMs are then over the distinct conditions, in ascending label order.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationDesign {
    /// Condition label per observation.
    pub conditions: Vec<i64>,
    /// Run label per observation (the cross-validation folds of crossnobis).
    pub runs: Vec<i64>,
    /// The distinct condition labels, ascending.
    pub labels: Vec<i64>,
    /// Each observation's condition, as an index into `labels`.
    index: Vec<usize>,
}

impl ObservationDesign {
    /// Checks the labels: equal lengths, at least 3 conditions.
    pub fn new(conditions: Vec<i64>, runs: Vec<i64>) -> Result<Self> {
        if conditions.len() != runs.len() {
            return Err(KernelError::Shape(format!(
                "{} condition labels but {} run labels",
                conditions.len(),
                runs.len()
            )));
        }
        let mut labels = conditions.clone();
        labels.sort_unstable();
        labels.dedup();
        if labels.len() < 3 {
            return Err(KernelError::Shape(format!(
                "RSA needs at least 3 conditions, the condition labels have {}",
                labels.len()
            )));
        }
        let index = conditions
            .iter()
            .map(|c| labels.binary_search(c).expect("a label of the list"))
            .collect();
        Ok(ObservationDesign { conditions, runs, labels, index })
    }

    /// Number of distinct conditions.
    pub fn n_conditions(&self) -> usize {
        self.labels.len()
    }

    /// The mean pattern of each condition over its observations (`[n_conditions, n_channels]`,
    /// rows in label order), accumulated in f64.
    pub fn condition_means<T: Real>(&self, data: ArrayView2<'_, T>) -> Result<Array2<f64>> {
        if data.nrows() != self.index.len() {
            return Err(KernelError::Shape(format!(
                "{} observations but {} condition labels",
                data.nrows(),
                self.index.len()
            )));
        }
        let mut sums = Array2::<f64>::zeros((self.labels.len(), data.ncols()));
        let mut counts = vec![0usize; self.labels.len()];
        for (row, &c) in data.rows().into_iter().zip(&self.index) {
            counts[c] += 1;
            sums.row_mut(c).zip_mut_with(&row, |s, &v| *s += v.as_f64());
        }
        for (mut row, &k) in sums.rows_mut().into_iter().zip(&counts) {
            row.mapv_inplace(|s| s / k as f64);
        }
        Ok(sums)
    }

    /// The RDM over conditions of observation patterns `data` (`[n_observations, n_channels]`):
    /// crossnobis (leave one run out, whitened by `noise`), or any other method on the
    /// condition means.
    pub fn rdm<T: Real>(
        &self,
        data: ArrayView2<'_, T>,
        method: RdmMethod,
        noise: NoisePrecision,
    ) -> Result<Array1<f64>> {
        if method != RdmMethod::Crossnobis {
            return rdm(self.condition_means(data)?.view(), method);
        }
        let precision = match noise {
            NoisePrecision::None => None,
            _ => {
                let means = self.condition_means(data)?;
                let mut residuals = data.mapv(Real::as_f64);
                for (mut row, &c) in residuals.rows_mut().into_iter().zip(&self.index) {
                    row -= &means.row(c);
                }
                Some(match noise {
                    NoisePrecision::Diag => diag_precision(residuals.view())?,
                    _ => precision_shrinkage_diag(residuals.view())?,
                })
            }
        };
        crossnobis(data, &self.conditions, &self.runs, precision.as_ref().map(|p| p.view()))
    }
}

/// Univariate noise normalisation: `diag(1 / variance)` of the residuals' channels (variance
/// about the column means, `m − 1` degrees of freedom, as rsatoolbox's `'diag'` estimate).
fn diag_precision(residuals: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
    let m = residuals.nrows();
    if m < 2 {
        return Err(KernelError::Shape(format!("a noise estimate needs 2 residual rows, got {m}")));
    }
    let mean = residuals.sum_axis(ndarray::Axis(0)) / m as f64;
    let mut out = Array2::<f64>::zeros((residuals.ncols(), residuals.ncols()));
    for (c, col) in residuals.columns().into_iter().enumerate() {
        let var = col.iter().map(|v| (v - mean[c]).powi(2)).sum::<f64>() / (m - 1) as f64;
        if var.is_nan() || var <= 0.0 {
            return Err(KernelError::Parameter(format!(
                "noise precision: channel {c} has zero residual variance"
            )));
        }
        out[(c, c)] = 1.0 / var;
    }
    Ok(out)
}

/// Inverse of a symmetric positive definite matrix through its Cholesky factor.
fn spd_inverse(a: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
    let n = a.nrows();
    // a = L Lᵀ
    let mut l = Array2::<f64>::zeros((n, n));
    for j in 0..n {
        let mut d = a[(j, j)];
        for k in 0..j {
            d -= l[(j, k)] * l[(j, k)];
        }
        if d.is_nan() || d <= 0.0 {
            return Err(KernelError::Linalg(
                "the shrunk covariance is not positive definite".into(),
            ));
        }
        let d = d.sqrt();
        l[(j, j)] = d;
        for i in j + 1..n {
            let mut s = a[(i, j)];
            for k in 0..j {
                s -= l[(i, k)] * l[(j, k)];
            }
            l[(i, j)] = s / d;
        }
    }
    // inv(L) by forward substitution, column by column.
    let mut li = Array2::<f64>::zeros((n, n));
    for col in 0..n {
        for i in col..n {
            let mut s = if i == col { 1.0 } else { 0.0 };
            for k in col..i {
                s -= l[(i, k)] * li[(k, col)];
            }
            li[(i, col)] = s / l[(i, i)];
        }
    }
    // inv(a) = inv(L)ᵀ inv(L), symmetrised exactly.
    let mut inv = li.t().dot(&li);
    fill_symmetric(inv.view_mut());
    Ok(inv)
}

fn fill_symmetric(mut a: ArrayViewMut2<'_, f64>) {
    let n = a.nrows();
    for i in 0..n {
        for j in i + 1..n {
            let v = 0.5 * (a[(i, j)] + a[(j, i)]);
            a[(i, j)] = v;
            a[(j, i)] = v;
        }
    }
}

/// Test-only readers for the reference fixtures (little-endian `f8`/`i8`, C order `.npy`).
/// Shipped code does no I/O; this module is compiled for tests only.
#[cfg(test)]
pub(crate) mod npy_fixture {
    use std::path::PathBuf;

    /// Path of a file in `tests/fixtures/rsa/`.
    pub(crate) fn rsa(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/rsa/")).join(name)
    }

    /// Path of a file of the Kriegeskorte et al. (2008) data set in `tests/data/`.
    pub(crate) fn krieg(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/kriegeskorte2008/"))
            .join(name)
    }

    fn read_raw<const N: usize>(path: &std::path::Path, want: &str) -> (Vec<usize>, Vec<[u8; N]>) {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("fixture {path:?}: {e}"));
        assert_eq!(&bytes[..6], b"\x93NUMPY", "{path:?}: not a .npy file");
        let (hlen, start) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            _ => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        };
        let header = std::str::from_utf8(&bytes[start..start + hlen]).expect("ascii header");
        assert!(header.contains(&format!("'descr': '{want}'")), "{path:?}: dtype, {header}");
        assert!(header.contains("'fortran_order': False"), "{path:?}: C order expected");
        let shape_str = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next());
        let shape: Vec<usize> = shape_str
            .expect("shape")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("shape entry"))
            .collect();
        let body = &bytes[start + hlen..];
        let count: usize = shape.iter().product();
        assert_eq!(body.len(), count * N, "{path:?}: payload size");
        let vals = body.chunks_exact(N).map(|c| c.try_into().expect("N bytes")).collect();
        (shape, vals)
    }

    /// A `<f8` array: (shape, values in C order).
    pub(crate) fn f64s(path: &std::path::Path) -> (Vec<usize>, Vec<f64>) {
        let (shape, raw) = read_raw(path, "<f8");
        (shape, raw.into_iter().map(f64::from_le_bytes).collect())
    }

    /// A `<i8` array: (shape, values in C order).
    pub(crate) fn i64s(path: &std::path::Path) -> (Vec<usize>, Vec<i64>) {
        let (shape, raw) = read_raw(path, "<i8");
        (shape, raw.into_iter().map(i64::from_le_bytes).collect())
    }

    /// A `<f4` array: (shape, values in C order).
    pub(crate) fn f32s(path: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
        let (shape, raw) = read_raw(path, "<f4");
        (shape, raw.into_iter().map(f32::from_le_bytes).collect())
    }

    /// A `|u1` (uint8) array: (shape, values in C order).
    pub(crate) fn u8s(path: &std::path::Path) -> (Vec<usize>, Vec<u8>) {
        let (shape, raw) = read_raw::<1>(path, "|u1");
        (shape, raw.into_iter().map(|[b]| b).collect())
    }

    /// Rows `(brain, model, method, value)` of a comparison CSV with a header line.
    pub(crate) fn compare_csv(path: &std::path::Path) -> Vec<(String, String, String, f64)> {
        let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let header = reader.headers().expect("a header line").clone();
        assert_eq!(header.iter().collect::<Vec<_>>(), ["brain", "model", "method", "value"]);
        reader
            .records()
            .map(|r| {
                let f = r.unwrap_or_else(|e| panic!("{path:?}: {e}"));
                assert_eq!(f.len(), 4, "{f:?}");
                (f[0].into(), f[1].into(), f[2].into(), f[3].parse().expect("value"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::npy_fixture as fx;
    use super::*;
    use crate::rng::Rng;
    use ndarray::{Array2, ArrayView2};

    /// Naive RDM: explicit loops over pairs and channels, straight from the definitions.
    fn naive_rdm(x: ArrayView2<'_, f64>, method: RdmMethod) -> Vec<f64> {
        let (n, p) = x.dim();
        let mut out = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = (x.row(i), x.row(j));
                let d = match method {
                    RdmMethod::Euclidean => {
                        (0..p).map(|c| (a[c] - b[c]).powi(2)).sum::<f64>() / p as f64
                    }
                    RdmMethod::Cosine => {
                        let ab: f64 = (0..p).map(|c| a[c] * b[c]).sum();
                        let aa: f64 = (0..p).map(|c| a[c] * a[c]).sum();
                        let bb: f64 = (0..p).map(|c| b[c] * b[c]).sum();
                        1.0 - ab / (aa * bb).sqrt()
                    }
                    RdmMethod::Correlation => {
                        let ma = a.sum() / p as f64;
                        let mb = b.sum() / p as f64;
                        let ab: f64 = (0..p).map(|c| (a[c] - ma) * (b[c] - mb)).sum();
                        let aa: f64 = (0..p).map(|c| (a[c] - ma).powi(2)).sum();
                        let bb: f64 = (0..p).map(|c| (b[c] - mb).powi(2)).sum();
                        1.0 - ab / (aa * bb).sqrt()
                    }
                    RdmMethod::Crossnobis => unreachable!(),
                };
                out.push(d);
            }
        }
        out
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    const METHODS: [RdmMethod; 3] =
        [RdmMethod::Correlation, RdmMethod::Euclidean, RdmMethod::Cosine];

    #[test]
    fn pair_index_and_condensed_round_trip() {
        for n in 2..12 {
            let mut p = 0;
            for i in 0..n {
                for j in i + 1..n {
                    assert_eq!(pair_index(n, i, j), p);
                    assert_eq!(pair_index(n, j, i), p);
                    p += 1;
                }
            }
            assert_eq!(condensed_len(n), p);
            assert_eq!(n_conditions_from_condensed(p).unwrap(), n);
            let v = Array1::from_shape_fn(p, |k| k as f64 + 1.0);
            let sq = condensed_to_square(v.view()).unwrap();
            assert_eq!(square_to_condensed(sq.view(), "x").unwrap(), v);
        }
        assert_eq!(n_conditions_from_condensed(4186).unwrap(), 92);
        assert_eq!(condensed_len(0), 0);
        assert!(n_conditions_from_condensed(usize::MAX).is_err());
        // n(n-1) overflows usize here, n(n-1)/2 does not.
        assert_eq!(condensed_len(1usize << 32), (1usize << 31) * ((1usize << 32) - 1));
        assert_eq!(condensed_len(1), 0);
        for bad in [0usize, 2, 4, 5, 7, 4185] {
            assert!(
                matches!(n_conditions_from_condensed(bad), Err(KernelError::Shape(_))),
                "{bad}"
            );
        }
        assert!(condensed_to_square(Array1::<f64>::zeros(5).view()).is_err());
    }

    #[test]
    fn square_to_condensed_checks_its_input() {
        let v = Array1::from(vec![1.0, 2.0, 3.0]);
        let sq = condensed_to_square(v.view()).unwrap();
        let mut asym = sq.clone();
        asym[(0, 1)] += 1e-6;
        let e = square_to_condensed(asym.view(), "model").unwrap_err();
        assert!(
            matches!(&e, KernelError::Parameter(m) if m.contains("symmetric") && m.contains("model"))
        );
        let mut tiny = sq.clone();
        tiny[(0, 1)] += 1e-14; // within tolerance
        assert!(square_to_condensed(tiny.view(), "m").is_ok());
        let mut diag = sq.clone();
        diag[(2, 2)] = 0.5;
        assert!(
            matches!(square_to_condensed(diag.view(), "m"), Err(KernelError::Parameter(m)) if m.contains("diagonal"))
        );
        let mut nan_diag = sq.clone();
        nan_diag[(1, 1)] = f64::NAN;
        assert!(square_to_condensed(nan_diag.view(), "m").is_ok());
        let mut nan_pair = sq.clone();
        nan_pair[(0, 2)] = f64::NAN;
        assert!(square_to_condensed(nan_pair.view(), "m").is_err());
        nan_pair[(2, 0)] = f64::NAN;
        assert!(square_to_condensed(nan_pair.view(), "m").unwrap()[1].is_nan());
        assert!(matches!(
            square_to_condensed(Array2::<f64>::zeros((2, 3)).view(), "m"),
            Err(KernelError::Shape(_))
        ));
        assert!(matches!(
            square_to_condensed(Array2::<f64>::zeros((1, 1)).view(), "m"),
            Err(KernelError::Shape(_))
        ));
    }

    #[test]
    fn methods_parse() {
        for m in
            [RdmMethod::Correlation, RdmMethod::Euclidean, RdmMethod::Cosine, RdmMethod::Crossnobis]
        {
            assert_eq!(RdmMethod::parse(m.as_str()).unwrap(), m);
        }
        assert!(matches!(RdmMethod::parse("pearson"), Err(KernelError::Parameter(_))));
    }

    fn check_against_naive<T: Real>(seed: u64) {
        let mut rng = Rng::new(seed);
        for &(n, p) in &[(2usize, 1usize), (2, 3), (3, 2), (5, 7), (12, 20), (30, 4), (40, 123)] {
            // A per-condition offset and a common offset make correlation and euclidean differ.
            let mut x: Array2<T> = rng.normal_array((n, p));
            let offsets: Vec<f64> = (0..n).map(|_| 3.0 * rng.normal()).collect();
            for (i, mut row) in x.rows_mut().into_iter().enumerate() {
                row.mapv_inplace(|v| T::from_f64(Real::as_f64(v) + offsets[i] + 10.0));
            }
            let x64 = x.mapv(Real::as_f64);
            for method in METHODS {
                let got = rdm(x.view(), method).unwrap();
                let want = naive_rdm(x64.view(), method);
                let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                let err = max_abs_diff(got.as_slice().unwrap(), &want);
                if p == 1 && method == RdmMethod::Correlation {
                    assert!(got.iter().all(|v| v.is_nan()), "one channel: no correlation");
                    continue;
                }
                assert!(err <= 1e-11 * scale, "{method:?} n={n} p={p}: {err}");
                // Non-standard layouts give the same numbers.
                let xt = x.t().as_standard_layout().into_owned();
                let got_t = rdm(xt.t(), method).unwrap();
                assert!(
                    max_abs_diff(got_t.as_slice().unwrap(), got.as_slice().unwrap())
                        <= 1e-13 * scale
                );
                let mut wide = Array2::<T>::zeros((n, 2 * p));
                wide.slice_mut(ndarray::s![.., ..;2]).assign(&x);
                let got_s = rdm(wide.slice(ndarray::s![.., ..;2]), method).unwrap();
                assert!(
                    max_abs_diff(got_s.as_slice().unwrap(), got.as_slice().unwrap())
                        <= 1e-13 * scale
                );
            }
        }
    }

    #[test]
    fn rdm_matches_naive_f64_and_f32() {
        check_against_naive::<f64>(1);
        check_against_naive::<f32>(2);
    }

    #[test]
    fn degenerate_patterns_give_nan_for_their_pairs_only() {
        for channel_major in [false, true] {
            check_degenerate(channel_major);
        }
    }

    /// Patterns as given, or copied to column-major (the channel-major buffer path).
    fn layout(x: &Array2<f64>, channel_major: bool) -> Array2<f64> {
        if channel_major {
            x.t().as_standard_layout().into_owned().reversed_axes()
        } else {
            x.clone()
        }
    }

    fn check_degenerate(channel_major: bool) {
        let mut rng = Rng::new(3);
        let mut x: Array2<f64> = rng.normal_array((5, 8));
        x.row_mut(1).fill(0.1); // constant: no correlation
        let r = rdm(layout(&x, channel_major).view(), RdmMethod::Correlation).unwrap();
        for i in 0..5 {
            for j in i + 1..5 {
                assert_eq!(r[pair_index(5, i, j)].is_nan(), i == 1 || j == 1, "({i},{j})");
            }
        }
        // A constant nonzero pattern still has a cosine and a distance.
        assert!(
            rdm(layout(&x, channel_major).view(), RdmMethod::Cosine)
                .unwrap()
                .iter()
                .all(|v| v.is_finite())
        );
        x.row_mut(3).fill(0.0);
        let c = rdm(layout(&x, channel_major).view(), RdmMethod::Cosine).unwrap();
        for i in 0..5 {
            for j in i + 1..5 {
                assert_eq!(c[pair_index(5, i, j)].is_nan(), i == 3 || j == 3);
            }
        }
        // Identical patterns: distance exactly 0, never negative.
        let row0 = x.row(0).to_owned();
        x.row_mut(4).assign(&row0);
        let e = rdm(layout(&x, channel_major).view(), RdmMethod::Euclidean).unwrap();
        assert!(e.iter().all(|&v| v >= 0.0));
        assert!(e[pair_index(5, 0, 4)].abs() < 1e-12);
        // NaN in a pattern only spoils that condition's pairs.
        x[(2, 5)] = f64::NAN;
        for method in METHODS {
            let r = rdm(layout(&x, channel_major).view(), method).unwrap();
            for i in 0..5 {
                for j in i + 1..5 {
                    let degenerate = match method {
                        // row 3 (all zero) is constant too
                        RdmMethod::Correlation => [1, 3].contains(&i) || [1, 3].contains(&j),
                        RdmMethod::Cosine => i == 3 || j == 3,
                        _ => false,
                    };
                    assert_eq!(
                        r[pair_index(5, i, j)].is_nan(),
                        degenerate || i == 2 || j == 2,
                        "{method:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn rdm_rejects_bad_input() {
        let x = Array2::<f64>::zeros((1, 4));
        assert!(matches!(rdm(x.view(), RdmMethod::Euclidean), Err(KernelError::Shape(_))));
        let x = Array2::<f64>::zeros((3, 0));
        assert!(matches!(rdm(x.view(), RdmMethod::Euclidean), Err(KernelError::Shape(_))));
        let x = Array2::<f64>::zeros((3, 2));
        let e = rdm(x.view(), RdmMethod::Crossnobis).unwrap_err();
        assert!(matches!(e, KernelError::Parameter(m) if m.contains("crossnobis()")));
    }

    #[test]
    fn rdm_matches_rsatoolbox() {
        let (shape, pats) = fx::f64s(&fx::rsa("patterns.npy"));
        let x = Array2::from_shape_vec((shape[0], shape[1]), pats).unwrap();
        for (method, file) in [
            (RdmMethod::Correlation, "rdm_correlation.npy"),
            (RdmMethod::Euclidean, "rdm_euclidean.npy"),
            (RdmMethod::Cosine, "rdm_cosine.npy"),
        ] {
            let (_, want) = fx::f64s(&fx::rsa(file));
            let got = rdm(x.view(), method).unwrap();
            let err = max_abs_diff(got.as_slice().unwrap(), &want);
            assert!(err < 1e-12, "{method:?}: {err}");
            let got32 = rdm(x.mapv(|v| v as f32).view(), method).unwrap();
            assert!(max_abs_diff(got32.as_slice().unwrap(), &want) < 1e-5, "{method:?} f32");
        }
    }

    /// Naive crossnobis: explicit loops, means of pooled observations per fold.
    fn naive_crossnobis(
        x: ArrayView2<'_, f64>,
        conds: &[i64],
        runs: &[i64],
        prec: Option<ArrayView2<'_, f64>>,
    ) -> Vec<f64> {
        let p = x.ncols();
        let mut cl: Vec<i64> = conds.to_vec();
        cl.sort();
        cl.dedup();
        let mut rl: Vec<i64> = runs.to_vec();
        rl.sort();
        rl.dedup();
        let mean_of = |c: i64, pick: &dyn Fn(i64) -> bool| -> Vec<f64> {
            let mut m = vec![0.0; p];
            let mut cnt = 0.0;
            for o in 0..x.nrows() {
                if conds[o] == c && pick(runs[o]) {
                    cnt += 1.0;
                    for ch in 0..p {
                        m[ch] += x[(o, ch)];
                    }
                }
            }
            m.iter().map(|v| v / cnt).collect()
        };
        let nc = cl.len();
        let mut out = vec![0.0; nc * (nc - 1) / 2];
        for &k in &rl {
            let a: Vec<Vec<f64>> = cl.iter().map(|&c| mean_of(c, &|r| r != k)).collect();
            let b: Vec<Vec<f64>> = cl.iter().map(|&c| mean_of(c, &|r| r == k)).collect();
            let mut q = 0;
            for i in 0..nc {
                for j in i + 1..nc {
                    let da: Vec<f64> = (0..p).map(|c| a[i][c] - a[j][c]).collect();
                    let db: Vec<f64> = (0..p).map(|c| b[i][c] - b[j][c]).collect();
                    let mut s = 0.0;
                    for u in 0..p {
                        for v in 0..p {
                            let w = match &prec {
                                Some(pm) => pm[(u, v)],
                                None => (u == v) as i32 as f64,
                            };
                            s += da[u] * w * db[v];
                        }
                    }
                    out[q] += s / p as f64 / rl.len() as f64;
                    q += 1;
                }
            }
        }
        out
    }

    #[test]
    fn crossnobis_matches_naive() {
        let mut rng = Rng::new(5);
        for &(nc, nr, p, reps) in
            &[(2usize, 2usize, 1usize, 1usize), (3, 2, 4, 1), (6, 3, 7, 2), (8, 5, 12, 1)]
        {
            let mut conds = Vec::new();
            let mut runs = Vec::new();
            for r in 0..nr {
                for c in 0..nc {
                    // Unbalanced: condition 0 has an extra observation in run 0.
                    let extra = (r == 0 && c == 0) as usize;
                    for _ in 0..reps + extra {
                        conds.push(10 * c as i64 - 7); // labels not 0..n
                        runs.push(100 - 3 * r as i64); // runs in descending label order
                    }
                }
            }
            let mut order: Vec<usize> = (0..conds.len()).collect();
            rng.shuffle(&mut order);
            let conds: Vec<i64> = order.iter().map(|&o| conds[o]).collect();
            let runs: Vec<i64> = order.iter().map(|&o| runs[o]).collect();
            let x: Array2<f64> = rng.normal_array((conds.len(), p));
            let a: Array2<f64> = rng.normal_array((p, p));
            let prec = a.t().dot(&a) + Array2::<f64>::eye(p);
            for pr in [None, Some(prec.view())] {
                let got = crossnobis(x.view(), &conds, &runs, pr).unwrap();
                let want = naive_crossnobis(x.view(), &conds, &runs, pr);
                let err = max_abs_diff(got.as_slice().unwrap(), &want);
                assert!(err < 1e-12, "nc={nc} nr={nr} p={p}: {err}");
                let got32 = crossnobis(x.mapv(|v| v as f32).view(), &conds, &runs, pr).unwrap();
                let want32 =
                    naive_crossnobis(x.mapv(|v| v as f32 as f64).view(), &conds, &runs, pr);
                assert!(max_abs_diff(got32.as_slice().unwrap(), &want32) < 1e-11);
            }
        }
    }

    #[test]
    fn crossnobis_rejects_bad_input() {
        let x = Array2::<f64>::zeros((4, 3));
        let e = crossnobis(x.view(), &[0, 1, 0, 1], &[0, 0, 0, 0], None).unwrap_err();
        assert!(matches!(e, KernelError::CrossValidation(m) if m.contains("2 runs")));
        let e = crossnobis(x.view(), &[0, 1, 0, 2], &[0, 0, 1, 1], None).unwrap_err();
        assert!(matches!(e, KernelError::CrossValidation(m) if m.contains("no observation")));
        let e = crossnobis(x.view(), &[0, 0, 0, 0], &[0, 0, 1, 1], None).unwrap_err();
        assert!(matches!(e, KernelError::Shape(_)));
        let e = crossnobis(x.view(), &[0, 1, 0], &[0, 0, 1, 1], None).unwrap_err();
        assert!(matches!(e, KernelError::Shape(_)));
        let bad = Array2::<f64>::eye(2);
        let e = crossnobis(x.view(), &[0, 1, 0, 1], &[0, 0, 1, 1], Some(bad.view())).unwrap_err();
        assert!(matches!(e, KernelError::Shape(m) if m.contains("precision")));
    }

    /// Naive shrinkage_diag covariance: rsatoolbox's formulas with explicit loops.
    fn naive_shrinkage_cov(res: ArrayView2<'_, f64>) -> Array2<f64> {
        let (m, c) = res.dim();
        let mut x = res.to_owned();
        for j in 0..c {
            let mu: f64 = (0..m).map(|i| res[(i, j)]).sum::<f64>() / m as f64;
            for i in 0..m {
                x[(i, j)] -= mu;
            }
        }
        let dof = (m - 1) as f64;
        let s = |u: usize, v: usize| (0..m).map(|i| x[(i, u)] * x[(i, v)]).sum::<f64>();
        let s2 = |u: usize, v: usize| (0..m).map(|i| (x[(i, u)] * x[(i, v)]).powi(2)).sum::<f64>();
        let var: Vec<f64> = (0..c).map(|u| s(u, u) / dof).collect();
        let (mut num, mut den) = (0.0, 0.0);
        for u in 0..c {
            for v in 0..c {
                if u != v {
                    let r = s(u, v) / (var[u] * var[v]).sqrt() / dof;
                    let r2 = s2(u, v) / (var[u] * var[v]) / dof;
                    num += m as f64 / dof / dof * (r2 - r * r);
                    den += r * r;
                }
            }
        }
        let lam = (num / den).clamp(0.0, 1.0);
        Array2::from_shape_fn((c, c), |(u, v)| s(u, v) / dof * if u == v { 1.0 } else { 1.0 - lam })
    }

    #[test]
    fn precision_shrinkage_diag_matches_naive_and_inverts() {
        let mut rng = Rng::new(8);
        for &(m, c) in &[(2usize, 1usize), (5, 3), (30, 10), (12, 25)] {
            let z: Array2<f64> = rng.normal_array((m, c));
            let mix: Array2<f64> = rng.normal_array((c, c));
            let res = z.dot(&(Array2::<f64>::eye(c) + 0.3 * &mix)) + 0.7;
            let prec = precision_shrinkage_diag(res.view()).unwrap();
            let cov = naive_shrinkage_cov(res.view());
            let id = prec.dot(&cov);
            let err = (&id - &Array2::<f64>::eye(c)).iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(err < 1e-9, "m={m} c={c}: {err}");
            assert_eq!(prec, prec.t());
        }
        assert!(precision_shrinkage_diag(Array2::<f64>::zeros((1, 3)).view()).is_err());
        assert!(precision_shrinkage_diag(Array2::<f64>::zeros((4, 0)).view()).is_err());
        let e = precision_shrinkage_diag(Array2::<f64>::zeros((4, 2)).view()).unwrap_err();
        assert!(matches!(e, KernelError::Parameter(m) if m.contains("zero variance")));
    }

    fn fixture_2d(name: &str) -> Array2<f64> {
        let (s, v) = fx::f64s(&fx::rsa(name));
        Array2::from_shape_vec((s[0], s[1]), v).unwrap()
    }

    #[test]
    fn precision_shrinkage_diag_matches_rsatoolbox() {
        let res = fixture_2d("cv_residuals.npy");
        let want = fixture_2d("prec_shrinkage_diag.npy");
        let got = precision_shrinkage_diag(res.view()).unwrap();
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = (&got - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err <= 1e-10 * scale, "{err} (scale {scale})");
    }

    #[test]
    fn crossnobis_matches_rsatoolbox() {
        let x = fixture_2d("cv_data.npy");
        let (_, conds) = fx::i64s(&fx::rsa("cv_conds.npy"));
        let (_, runs) = fx::i64s(&fx::rsa("cv_runs.npy"));
        let prec = fixture_2d("prec_shrinkage_diag.npy");
        for (pr, file) in
            [(Some(prec.view()), "rdm_crossnobis.npy"), (None, "rdm_crossnobis_identity.npy")]
        {
            let (_, want) = fx::f64s(&fx::rsa(file));
            let got = crossnobis(x.view(), &conds, &runs, pr).unwrap();
            let err = max_abs_diff(got.as_slice().unwrap(), &want);
            assert!(err < 1e-10, "{file}: {err}");
        }
        // End to end: our own precision from the residuals.
        let res = fixture_2d("cv_residuals.npy");
        let own = precision_shrinkage_diag(res.view()).unwrap();
        let (_, want) = fx::f64s(&fx::rsa("rdm_crossnobis.npy"));
        let got = crossnobis(x.view(), &conds, &runs, Some(own.view())).unwrap();
        assert!(max_abs_diff(got.as_slice().unwrap(), &want) < 1e-9);
    }

    #[test]
    fn observation_design_averages_conditions_and_whitens_crossnobis() {
        let mut rng = Rng::new(41);
        // 4 conditions x 3 runs, two observations of each in every run, shuffled order
        let mut obs: Vec<(i64, i64)> =
            (0..24).map(|o| ([7, 3, 11, 5][o % 4], (o / 8) as i64)).collect();
        rng.shuffle(&mut obs);
        let (conds, runs): (Vec<i64>, Vec<i64>) = obs.iter().copied().unzip();
        let data: Array2<f64> = rng.normal_array((24, 6));
        let design = ObservationDesign::new(conds.clone(), runs.clone()).unwrap();
        assert_eq!(design.labels, [3, 5, 7, 11]);
        // condition means by a naive loop
        let means = design.condition_means(data.view()).unwrap();
        for (k, &label) in design.labels.iter().enumerate() {
            let rows: Vec<usize> = (0..24).filter(|&o| conds[o] == label).collect();
            for c in 0..6 {
                let m = rows.iter().map(|&o| data[(o, c)]).sum::<f64>() / rows.len() as f64;
                assert!((means[(k, c)] - m).abs() < 1e-14);
            }
        }
        let corr = design.rdm(data.view(), RdmMethod::Correlation, NoisePrecision::None).unwrap();
        assert_eq!(corr, rdm(means.view(), RdmMethod::Correlation).unwrap());
        // residuals about the condition means, whitened as the precision kernels say
        let mut residuals = data.clone();
        for o in 0..24 {
            let k = design.labels.iter().position(|&l| l == conds[o]).unwrap();
            for c in 0..6 {
                residuals[(o, c)] -= means[(k, c)];
            }
        }
        let shrunk = precision_shrinkage_diag(residuals.view()).unwrap();
        let expect = crossnobis(data.view(), &conds, &runs, Some(shrunk.view())).unwrap();
        let got = design.rdm(data.view(), RdmMethod::Crossnobis, NoisePrecision::ShrinkageDiag);
        assert_eq!(got.unwrap(), expect);
        let mut diag = Array2::<f64>::zeros((6, 6));
        for c in 0..6 {
            let col = residuals.column(c);
            let mean = col.sum() / 24.0;
            diag[(c, c)] = 23.0 / col.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        }
        let expect = crossnobis(data.view(), &conds, &runs, Some(diag.view())).unwrap();
        let got = design.rdm(data.view(), RdmMethod::Crossnobis, NoisePrecision::Diag).unwrap();
        assert!(got.iter().zip(&expect).all(|(a, b)| (a - b).abs() < 1e-12 * b.abs().max(1.0)));
        let plain = crossnobis(data.view(), &conds, &runs, None).unwrap();
        let got = design.rdm(data.view(), RdmMethod::Crossnobis, NoisePrecision::None).unwrap();
        assert_eq!(got, plain);
        // bad labels
        assert!(ObservationDesign::new(vec![1, 2, 3], vec![0, 0]).is_err());
        assert!(ObservationDesign::new(vec![1, 2, 1, 2], vec![0, 0, 1, 1]).is_err());
        assert!(design.condition_means(data.slice(ndarray::s![..5, ..])).is_err());
    }
}
