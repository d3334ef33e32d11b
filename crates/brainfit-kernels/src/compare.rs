//! Comparing two RDMs: how similar is the geometry of a brain region to that of a model?
//!
//! The comparisons of rsatoolbox's `rsatoolbox.rdm.compare` that brainfit offers, and centred
//! kernel alignment, on condensed RDMs in f64 (rsatoolbox's method name in brackets):
//!
//! - `spearman` (`'spearman'`): Pearson correlation of the average ranks (`scipy.stats.rankdata`,
//!   ties get the mean of their ranks);
//! - `pearson` (`'corr'`): centred, then cosine, i.e. the Pearson correlation;
//! - `kendall_tau_a` (`'tau-a'`): `(concordant - discordant) / (n(n-1)/2)`, pairs tied in either
//!   RDM counting as neither;
//! - `cosine` (`'cosine'`): cosine similarity, *not* centred;
//! - `rho_a` (`'rho-a'`): `12 Σ r₁ r₂ / (n³ - n)`, `r` the average ranks less their mean
//!   `(n+1)/2`: Spearman's rho without the tie correction of the denominator, the expected
//!   value of Spearman's rho under random tie breaking (Schütt et al. 2023, "Statistical
//!   inference on representational geometries", eLife); for RDMs without ties it equals
//!   `spearman`, with ties it is smaller in magnitude;
//! - `tau_b` (`'tau-b'` / `'kendall'`, `scipy.stats.kendalltau`): Kendall's tau-b,
//!   `(C - D) / sqrt((n₀ - n₁)(n₀ - n₂))`, `n₀ = n(n-1)/2`, `n₁`, `n₂` the pairs tied in
//!   either RDM; O(n log n) like tau-a;
//! - `corr_cov` (`'corr_cov'`, `sigma_k=None`; Diedrichsen et al. 2021, "Comparing
//!   representational geometries using whitened unbiased-distance-matrix similarity"): the RDM
//!   vector less its mean, as a square matrix `D` (zero diagonal), double-centred into the
//!   second moment `G = -½ H D H` (`H = I - 11ᵀ/n`, [`crate::cka::second_moment`]); the value is
//!   the Frobenius cosine `<G₁, G₂> / (|G₁| |G₂|)` (rsatoolbox's vector of off-diagonal entries
//!   times `√2` with the diagonal appended, then cosine: the same). This whitens the RDM
//!   entries under the assumption of i.i.d. pattern noise;
//! - `bures` (`'bures'`): Bures similarity of the second moments,
//!   `Σ sqrt(λ(G₁½ G₂ G₁½)⁺) / sqrt(tr G₁ · tr G₂)` (rsatoolbox's
//!   `_bures_similarity_first_way`: negative eigenvalues count as zero); in `[0, 1]` for
//!   Euclidean RDMs (positive semi-definite `G`, and then symmetric); otherwise it can exceed 1
//!   (the traces keep negative eigenvalues) and is not symmetric (only `G₁`'s negative
//!   eigenvalues are clipped in `G₁½`), as rsatoolbox's. Eigenvalues at rounding level
//!   (`|λ| ≤ n ε λ_max`) are taken as zero, where rsatoolbox takes their square roots: that
//!   adds up to ~1e-7 of rounding noise to its values for low-rank models, which brainfit's
//!   values do not have (tested against a noise-free reference);
//! - centred kernel alignment (Kornblith et al. 2019, "Similarity of neural network
//!   representations revisited"), reading the RDM `D` as squared distances between patterns:
//!   `cka_linear` with the kernel `K = -½ H D H` (= `X Xᵀ` of the centred patterns when `D` is
//!   a squared Euclidean distance; brainfit's `euclidean` RDM is that divided by the number of
//!   channels, a scale every CKA cancels) and `cka_rbf` with `K_ij = exp(-D_ij / (2 m))`, `m`
//!   the median of the `n × n` `D`, zero diagonal included (Kornblith et al.'s
//!   `gram_rbf(x, threshold=1.0)`). Biased (`cka_linear`, `cka_rbf`): `HSIC(K, L) / sqrt(HSIC(K,
//!   K) HSIC(L, L))`, `HSIC(K, L) = tr(K H L H)`; unbiased (`cka_linear_unbiased`,
//!   `cka_rbf_unbiased`): the same ratio of the unbiased HSIC estimator (Song et al. 2012),
//!   computed as the cosine of U-centred kernels (Kornblith et al.'s `center_gram(gram,
//!   unbiased=True)`). Biased linear CKA is `corr_cov` without subtracting the mean first; an
//!   added constant (`D + c`) changes it, but not unbiased linear CKA (U-centring removes any
//!   `a_i + a_j` term exactly). All CKAs are invariant to the RDM's scale.
//!
//! Searchlights and permutation tests compare one brain RDM with many model RDMs, or the same
//! RDMs under many condition relabellings. Spearman, Pearson, cosine and rho-a are dot products
//! of *feature* vectors ([`comparison_features`]: ranks or values, centred or not, scaled to
//! unit norm, or for rho-a by `sqrt(12 / (n³ - n))`), so a batch of comparisons is one matrix
//! product, and a relabelled RDM's features are the relabelled features ([`permute_condensed`]):
//! ranks need not be recomputed. Kendall's tau-a and tau-b have no such form and are computed
//! pairwise (O(n log n), Knight's algorithm); `corr_cov`, `bures` and the CKAs need the
//! conditions' structure (the square matrix) and are computed pairwise too
//! ([`CompareMethod::has_features`] is false for all of these; [`comparison_features`] errors).
//!
//! # NaN policy
//! - Positions where either RDM is NaN are dropped from both (rsatoolbox drops them too, and
//!   refuses RDMs whose NaN positions differ; brainfit accepts them).
//! - Fewer than 3 valid pairs left: the comparison is NaN (two points always correlate ±1).
//! - An RDM that is constant over the valid pairs (zero variance; for `cosine`: all zero) has no
//!   defined comparison: NaN. rsatoolbox returns 0 there (and tau-a, rho-a, `corr_cov` 0 for a
//!   constant RDM); brainfit reports that the value is undefined, as it does for held-out
//!   scores. Likewise a zero second moment (`corr_cov`, `bures`, CKA) or centred kernel gives
//!   NaN, as does every unbiased CKA of 3 conditions (a U-centred 3 × 3 matrix is zero).
//! - Infinite dissimilarities are kept (they rank last); Pearson/cosine then give NaN, and so do
//!   the methods on the square matrix (`corr_cov`, `bures`, CKA).
//! - `corr_cov` keeps the conditions' structure: the NaN pairs (of either RDM) are left out and
//!   the row and column effects of the remaining entries are removed by rsatoolbox's weighted
//!   least-squares projection (`_cov_weighting`'s branch for missing entries; with no NaN it is
//!   the double centring); the mean subtracted first is that of the remaining entries.
//! - `bures` and the CKAs need complete RDMs: a NaN (or infinite) dissimilarity in either RDM
//!   makes the comparison NaN. (rsatoolbox's `bures` raises an error there: it drops the NaN
//!   positions and the rest is no longer a condensed RDM.) `bures`, `corr_cov` and the CKAs
//!   need a condensed RDM's length (`n(n-1)/2`): other lengths of 3 or more are an error.
//! - `cka_rbf*`: an RDM whose median (over the `n × n` matrix) is not positive gives NaN (the
//!   kernel's width is undefined); the RBF kernel expects non-negative dissimilarities.

use crate::rdm::{condensed_len, lane_sum, lane_sum_sq};
use crate::{KernelError, Result};
use ndarray::{Array1, ArrayView1};

/// How two RDMs are compared (job-file spellings `"spearman"`, `"pearson"`,
/// `"kendall_tau_a"`, `"cosine"`, `"rho_a"`, `"tau_b"`, `"corr_cov"`, `"bures"`,
/// `"cka_linear"`, `"cka_linear_unbiased"`, `"cka_rbf"`, `"cka_rbf_unbiased"`). The module
/// header gives each definition, its reference and the NaN policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareMethod {
    /// Spearman rank correlation (average ranks for ties).
    Spearman,
    /// Pearson correlation.
    Pearson,
    /// Kendall's tau-a (no tie correction in the denominator).
    KendallTauA,
    /// Cosine similarity (not centred).
    Cosine,
    /// rsatoolbox's rho-a: `12 Σ r₁ r₂ / (n³ - n)` of the centred average ranks (Spearman
    /// without the tie correction of the denominator). Has comparison features.
    RhoA,
    /// Kendall's tau-b (`scipy.stats.kendalltau`): `(C - D) / sqrt((n₀ - n₁)(n₀ - n₂))`.
    TauB,
    /// rsatoolbox's `corr_cov` (`sigma_k=None`): Frobenius cosine of the double-centred second
    /// moments of the mean-centred RDMs.
    CorrCov,
    /// rsatoolbox's Bures similarity of the double-centred second moments.
    Bures,
    /// Linear CKA (Kornblith et al. 2019), kernel `-½ H D H`, biased HSIC.
    CkaLinear,
    /// Linear CKA with the unbiased HSIC estimator (Song et al. 2012).
    CkaLinearUnbiased,
    /// RBF CKA, `K = exp(-D / (2 median(D)))`, biased HSIC.
    CkaRbf,
    /// RBF CKA with the unbiased HSIC estimator.
    CkaRbfUnbiased,
}

impl CompareMethod {
    /// Every method, in declaration order.
    pub const ALL: [CompareMethod; 12] = [
        CompareMethod::Spearman,
        CompareMethod::Pearson,
        CompareMethod::KendallTauA,
        CompareMethod::Cosine,
        CompareMethod::RhoA,
        CompareMethod::TauB,
        CompareMethod::CorrCov,
        CompareMethod::Bures,
        CompareMethod::CkaLinear,
        CompareMethod::CkaLinearUnbiased,
        CompareMethod::CkaRbf,
        CompareMethod::CkaRbfUnbiased,
    ];

    /// Parses the job-file spelling (the serde one).
    pub fn parse(s: &str) -> Result<Self> {
        crate::parse_spelling(s)
    }

    /// The job-file spelling of the method (inverse of [`CompareMethod::parse`]).
    pub fn as_str(self) -> &'static str {
        match self {
            CompareMethod::Spearman => "spearman",
            CompareMethod::Pearson => "pearson",
            CompareMethod::KendallTauA => "kendall_tau_a",
            CompareMethod::Cosine => "cosine",
            CompareMethod::RhoA => "rho_a",
            CompareMethod::TauB => "tau_b",
            CompareMethod::CorrCov => "corr_cov",
            CompareMethod::Bures => "bures",
            CompareMethod::CkaLinear => "cka_linear",
            CompareMethod::CkaLinearUnbiased => "cka_linear_unbiased",
            CompareMethod::CkaRbf => "cka_rbf",
            CompareMethod::CkaRbfUnbiased => "cka_rbf_unbiased",
        }
    }

    /// Whether the comparison is a dot product of [`comparison_features`] (Spearman, Pearson,
    /// cosine, rho-a); the others are computed pairwise with [`compare`].
    pub fn has_features(self) -> bool {
        matches!(
            self,
            CompareMethod::Spearman
                | CompareMethod::Pearson
                | CompareMethod::Cosine
                | CompareMethod::RhoA
        )
    }

    /// Whether the comparison needs the conditions' structure (the square RDM: `corr_cov`,
    /// `bures`, the CKAs), so that the RDMs' length must be `n(n-1)/2` and NaN pairs cannot
    /// simply be dropped.
    pub fn needs_conditions(self) -> bool {
        matches!(
            self,
            CompareMethod::CorrCov
                | CompareMethod::Bures
                | CompareMethod::CkaLinear
                | CompareMethod::CkaLinearUnbiased
                | CompareMethod::CkaRbf
                | CompareMethod::CkaRbfUnbiased
        )
    }
}

/// A sort key whose unsigned order is the numeric order of non-NaN floats (-0.0 == +0.0).
#[inline]
pub(crate) fn order_key(x: f64) -> u64 {
    let b = (x + 0.0).to_bits(); // -0.0 + 0.0 == +0.0
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// Reusable scratch space for ranking.
#[derive(Debug, Default)]
pub(crate) struct RankScratch {
    keys: Vec<u64>,
    packed: Vec<u64>,
    sorted: Vec<u64>,
    counts: Vec<u32>,
    group: Vec<(u64, u32)>,
}

/// Sorts `v` in place by insertion, O(len + inversions), giving up (returning false, `v` a
/// permutation of its input) once more than `max_moves` elements have been moved.
fn insertion_sort_bounded(v: &mut [u64], max_moves: usize) -> bool {
    let mut moves = 0usize;
    for i in 1..v.len() {
        let cur = v[i];
        let mut j = i;
        while j > 0 && v[j - 1] > cur {
            v[j] = v[j - 1];
            j -= 1;
        }
        v[j] = cur;
        moves += i - j;
        if moves > max_moves {
            return false;
        }
    }
    true
}

/// Average (1-based) ranks of NaN-free `x` into `out`, ties sharing the mean of their ranks.
///
/// The searchlight's hot spot, so it avoids a comparison sort of `(f64, index)` pairs:
/// 1. each value becomes an order-preserving 64-bit key; relative to the smallest key and cut to
///    its top 32 significant bits, it is packed with the value's index into one `u64`
///    (`coarse << 32 | index`), so sorting moves 8-byte words;
/// 2. a bucket sort over the coarse keys' range (one to two buckets per value: a pass to count, a
///    pass to scatter, then insertion sort, which only has to undo the few inversions within
///    buckets; if values clump into large buckets, `sort_unstable` takes over, so the worst case
///    stays O(n log n));
/// 3. runs of equal coarse keys (rare for continuous data; ties) are ordered by their full keys,
///    and exactly equal values share their mean rank.
pub(crate) fn rank_into(x: &[f64], scratch: &mut RankScratch, out: &mut [f64]) {
    rank_core(x, scratch, out, 0.0);
}

/// [`rank_into`], writing `rank - offset`, and returning `Σ (rank - (n+1)/2)²` computed exactly
/// from the tie sizes: `(n³ - n - Σ (t³ - t)) / 12`.
fn rank_core(x: &[f64], scratch: &mut RankScratch, out: &mut [f64], offset: f64) -> f64 {
    debug_assert_eq!(x.len(), out.len());
    let n = x.len();
    if n == 0 {
        return 0.0;
    }
    debug_assert!(n <= u32::MAX as usize);
    let s = scratch;
    s.keys.clear();
    s.keys.extend(x.iter().map(|&v| order_key(v)));
    let (kmin, kmax) = s.keys.iter().fold((u64::MAX, 0u64), |(lo, hi), &k| (lo.min(k), hi.max(k)));
    let range_bits = u64::BITS - (kmax - kmin).leading_zeros();
    let coarse_bits = range_bits.min(32);
    let coarse_shift = range_bits - coarse_bits;
    s.packed.clear();
    s.packed.extend(
        s.keys.iter().enumerate().map(|(i, &k)| (((k - kmin) >> coarse_shift) << 32) | i as u64),
    );
    s.sorted.clear();
    if n < 64 {
        s.sorted.extend_from_slice(&s.packed);
        s.sorted.sort_unstable();
    } else {
        // One to two buckets per value.
        let log_nb = n.next_power_of_two().trailing_zeros().min(coarse_bits);
        let nb = 1usize << log_nb;
        let bucket_shift = 32 + coarse_bits - log_nb;
        let counts = &mut s.counts;
        counts.clear();
        counts.resize(nb, 0);
        for &p in &s.packed {
            counts[(p >> bucket_shift) as usize] += 1;
        }
        // Exclusive prefix sum, the running total in a register (a chain through memory would
        // cost a store-to-load round trip per bucket): counts[b] = start of bucket b.
        let mut total = 0u32;
        for c in counts.iter_mut() {
            let t = *c;
            *c = total;
            total += t;
        }
        s.sorted.resize(n, 0);
        for &p in &s.packed {
            let b = (p >> bucket_shift) as usize;
            s.sorted[counts[b] as usize] = p;
            counts[b] += 1;
        }
        // Values are out of order only within buckets: insertion sort finishes in about n moves,
        // unless values clump into large buckets; then a comparison sort takes over.
        if !insertion_sort_bounded(&mut s.sorted, 4 * n) {
            s.sorted.sort_unstable();
        }
    }
    let sorted = &s.sorted;
    let mut ties = 0u128;
    let mut i = 0;
    while i < n {
        let coarse = sorted[i] >> 32;
        let mut e = i + 1;
        while e < n && sorted[e] >> 32 == coarse {
            e += 1;
        }
        if e == i + 1 {
            out[(sorted[i] & 0xFFFF_FFFF) as usize] = (i + 1) as f64 - offset;
        } else {
            // Equal coarse keys: order by the full keys; equal values share their mean rank.
            s.group.clear();
            s.group.extend(sorted[i..e].iter().map(|&p| {
                let idx = (p & 0xFFFF_FFFF) as u32;
                (s.keys[idx as usize], idx)
            }));
            s.group.sort_unstable_by_key(|g| g.0);
            let g = &s.group;
            let mut a = 0;
            while a < g.len() {
                let mut b = a + 1;
                while b < g.len() && g[b].0 == g[a].0 {
                    b += 1;
                }
                // positions i+a .. i+b (0-based) hold ranks i+a+1 ..= i+b; their mean:
                let r = (2 * i + a + b + 1) as f64 * 0.5 - offset;
                for &(_, idx) in &g[a..b] {
                    out[idx as usize] = r;
                }
                let t = (b - a) as u128;
                ties += t * t * t - t;
                a = b;
            }
        }
        i = e;
    }
    let n = n as u128;
    ((n * n * n - n - ties) as f64) / 12.0
}

/// Average ranks, 1-based, ties sharing the mean of their ranks (`scipy.stats.rankdata`).
///
/// If `x` holds a NaN, every rank is NaN (scipy's default `nan_policy='propagate'`).
pub fn rank_average(x: ArrayView1<'_, f64>) -> Array1<f64> {
    let v: Vec<f64> = x.iter().copied().collect();
    if v.iter().any(|a| a.is_nan()) {
        return Array1::from_elem(v.len(), f64::NAN);
    }
    let mut out = vec![0.0; v.len()];
    rank_into(&v, &mut RankScratch::default(), &mut out);
    Array1::from(out)
}

/// Writes the comparison features of NaN-free `v` into `out` (same length) and returns true, or
/// fills `out` with NaN and returns false when `v` is degenerate (constant, or all zero for
/// cosine). Only methods with features (callers check [`CompareMethod::has_features`]).
pub(crate) fn features_into(
    v: &[f64],
    method: CompareMethod,
    scratch: &mut RankScratch,
    out: &mut [f64],
) -> bool {
    debug_assert!(method.has_features());
    let n = v.len();
    let degenerate = match method {
        CompareMethod::Cosine => v.iter().all(|&a| a == 0.0),
        _ => n == 0 || v.iter().all(|&a| a == v[0]),
    };
    if degenerate {
        out.iter_mut().for_each(|o| *o = f64::NAN);
        return false;
    }
    let norm = match method {
        // Average ranks always sum to n(n+1)/2: centring is exact, the norm follows from the ties.
        CompareMethod::Spearman => rank_core(v, scratch, out, (n + 1) as f64 * 0.5).sqrt(),
        // rho-a: the same centred ranks, scaled by sqrt(12 / (n³ - n)) whatever the ties
        CompareMethod::RhoA => {
            rank_core(v, scratch, out, (n + 1) as f64 * 0.5);
            let nf = n as f64;
            ((nf * nf * nf - nf) / 12.0).sqrt()
        }
        CompareMethod::Pearson => {
            let mean = lane_sum(v) / n as f64;
            for (o, x) in out.iter_mut().zip(v) {
                *o = x - mean;
            }
            lane_sum_sq(out).sqrt()
        }
        _ => {
            out.copy_from_slice(v);
            lane_sum_sq(out).sqrt()
        }
    };
    let inv = 1.0 / norm;
    out.iter_mut().for_each(|o| *o *= inv);
    true
}

/// Comparison features of an RDM: `compare(a, b, m) == dot(features(a, m), features(b, m))`.
///
/// Spearman: average ranks, centred, unit norm; Pearson: centred, unit norm; Cosine: unit norm;
/// rho-a: average ranks, centred, times `sqrt(12 / (n³ - n))`. A degenerate RDM (constant; all
/// zero for cosine) has NaN features, so that its comparisons are NaN, as [`compare`] says.
/// Errors: a method without a feature form (tau-a, tau-b, `corr_cov`, `bures`, the CKAs:
/// [`CompareMethod::has_features`]; use [`compare`]), an RDM holding NaN (features cannot drop
/// pairs jointly: use [`compare`]), fewer than 3 values.
pub fn comparison_features(v: ArrayView1<'_, f64>, method: CompareMethod) -> Result<Array1<f64>> {
    if !method.has_features() {
        return Err(KernelError::Parameter(format!(
            "{} is not a dot product of features: compare RDMs pairwise with compare()",
            method.as_str()
        )));
    }
    if v.len() < 3 {
        return Err(KernelError::Shape(format!(
            "comparison features need at least 3 dissimilarities, got {}",
            v.len()
        )));
    }
    let x: Vec<f64> = v.iter().copied().collect();
    if x.iter().any(|a| a.is_nan()) {
        return Err(KernelError::Parameter(
            "the RDM holds NaN dissimilarities: compare it pairwise with compare(), which drops \
             NaN pairs jointly"
                .into(),
        ));
    }
    let mut out = vec![0.0; x.len()];
    features_into(&x, method, &mut RankScratch::default(), &mut out);
    Ok(Array1::from(out))
}

/// Compares two condensed RDMs (see the module header for methods and the NaN policy).
///
/// Errors: the lengths differ (`KernelError::Shape`, naming both); for the methods on the
/// square matrix ([`CompareMethod::needs_conditions`]), a length of 3 or more that is not
/// `n(n-1)/2`.
pub fn compare(
    a: ArrayView1<'_, f64>,
    b: ArrayView1<'_, f64>,
    method: CompareMethod,
) -> Result<f64> {
    if a.len() != b.len() {
        return Err(KernelError::Shape(format!(
            "RDMs of different lengths cannot be compared: {} vs {}",
            a.len(),
            b.len()
        )));
    }
    if method.needs_conditions() {
        return crate::cka::compare_conditions(a, b, method);
    }
    let (x, y): (Vec<f64>, Vec<f64>) = a
        .iter()
        .zip(b.iter())
        .filter(|(u, v)| !u.is_nan() && !v.is_nan())
        .map(|(u, v)| (*u, *v))
        .unzip();
    if x.len() < 3 {
        return Ok(f64::NAN);
    }
    match method {
        CompareMethod::KendallTauA => return Ok(tau_a(&x, &y)),
        CompareMethod::TauB => return Ok(tau_b(&x, &y)),
        _ => {}
    }
    let mut scratch = RankScratch::default();
    let mut fx = vec![0.0; x.len()];
    let mut fy = vec![0.0; y.len()];
    if !features_into(&x, method, &mut scratch, &mut fx)
        || !features_into(&y, method, &mut scratch, &mut fy)
    {
        return Ok(f64::NAN);
    }
    Ok(fx.iter().zip(&fy).map(|(u, v)| u * v).sum())
}

/// Kendall's tau-a of NaN-free `x`, `y` (same length ≥ 2) in O(n log n): sort by (x, y), count
/// discordant pairs as the inversions of y (merge sort), correct for ties (as scipy/rsatoolbox).
/// NaN when either is constant.
pub(crate) fn tau_a(x: &[f64], y: &[f64]) -> f64 {
    match kendall_counts(x, y) {
        Some(k) => (k.con_minus_dis as f64 / k.tot as f64).clamp(-1.0, 1.0),
        None => f64::NAN,
    }
}

/// Kendall's tau-b of NaN-free `x`, `y` (same length ≥ 2), as `scipy.stats.kendalltau`:
/// `(C - D) / sqrt(n₀ - n₁) / sqrt(n₀ - n₂)`, clamped to [-1, 1]. NaN when either is constant.
pub(crate) fn tau_b(x: &[f64], y: &[f64]) -> f64 {
    match kendall_counts(x, y) {
        Some(k) => (k.con_minus_dis as f64
            / ((k.tot - k.xtie) as f64).sqrt()
            / ((k.tot - k.ytie) as f64).sqrt())
        .clamp(-1.0, 1.0),
        None => f64::NAN,
    }
}

/// Pair counts of Kendall's taus: `C - D`, all pairs `n₀`, pairs tied in x (`n₁`), in y (`n₂`).
struct KendallCounts {
    con_minus_dis: i128,
    tot: i128,
    xtie: i128,
    ytie: i128,
}

/// [`KendallCounts`] of NaN-free `x`, `y` in O(n log n); None when fewer than 2 values or either
/// is constant (every pair tied).
fn kendall_counts(x: &[f64], y: &[f64]) -> Option<KendallCounts> {
    let n = x.len();
    if n < 2 || x.iter().all(|&v| v == x[0]) || y.iter().all(|&v| v == y[0]) {
        return None;
    }
    let mut p: Vec<(u64, u64)> =
        x.iter().zip(y).map(|(&u, &v)| (order_key(u), order_key(v))).collect();
    p.sort_unstable();
    let tot = (n as i128) * (n as i128 - 1) / 2;
    let ties = |keys: &mut dyn Iterator<Item = bool>| -> i128 {
        // `keys` yields "same as previous" flags in sorted order
        let (mut sum, mut run) = (0i128, 1i128);
        for same in keys {
            if same {
                run += 1;
            } else {
                sum += run * (run - 1) / 2;
                run = 1;
            }
        }
        sum + run * (run - 1) / 2
    };
    let xtie = ties(&mut p.windows(2).map(|w| w[0].0 == w[1].0));
    let ntie = ties(&mut p.windows(2).map(|w| w[0] == w[1]));
    let mut ys: Vec<u64> = p.iter().map(|q| q.1).collect();
    let dis = count_inversions(&mut ys) as i128;
    // ys is now sorted
    let ytie = ties(&mut ys.windows(2).map(|w| w[0] == w[1]));
    let con_minus_dis = tot - xtie - ytie + ntie - 2 * dis;
    Some(KendallCounts { con_minus_dis, tot, xtie, ytie })
}

/// Number of pairs i < j with v[i] > v[j] (strictly); sorts `v` (bottom-up merge sort).
fn count_inversions(v: &mut [u64]) -> u64 {
    let n = v.len();
    let mut buf = vec![0u64; n];
    let mut inv = 0u64;
    let mut width = 1;
    while width < n {
        let mut lo = 0;
        while lo < n {
            let mid = (lo + width).min(n);
            let hi = (lo + 2 * width).min(n);
            let (mut i, mut j, mut k) = (lo, mid, lo);
            while i < mid && j < hi {
                if v[j] < v[i] {
                    inv += (mid - i) as u64;
                    buf[k] = v[j];
                    j += 1;
                } else {
                    buf[k] = v[i];
                    i += 1;
                }
                k += 1;
            }
            buf[k..k + (mid - i)].copy_from_slice(&v[i..mid]);
            k += mid - i;
            buf[k..k + (hi - j)].copy_from_slice(&v[j..hi]);
            lo = hi;
        }
        v.copy_from_slice(&buf);
        width *= 2;
    }
    inv
}

/// An RDM under a relabelling of its conditions: `out[pair(i, j)] = v[pair(perm[i], perm[j])]`.
///
/// Works on comparison features too: the features of a relabelled RDM are the relabelled
/// features (ranks, means and norms do not change under a permutation of positions).
/// Errors: `v` is not a condensed RDM of `n_conditions`, or `perm` is not a permutation of
/// `0..n_conditions`. To relabel one RDM by many permutations, build a [`Relabeller`] once.
pub fn permute_condensed(
    v: ArrayView1<'_, f64>,
    n_conditions: usize,
    perm: &[usize],
) -> Result<Array1<f64>> {
    let mut out = Array1::<f64>::zeros(v.len());
    let slice = out.as_slice_mut().expect("a new array is contiguous");
    Relabeller::new(v, n_conditions)?.relabel_into(perm, slice)?;
    Ok(out)
}

/// A condensed RDM (or its comparison features) held as a square matrix, to be relabelled by
/// many permutations ([`permute_condensed`]'s result, written into a given row). Each output
/// row `i` reads row `perm[i]` of the square, which stays in cache, where indexing the
/// condensed vector would jump across all of it: at 1,000 conditions about ten times faster.
#[derive(Debug, Clone)]
pub struct Relabeller {
    n: usize,
    /// `n × n`, row-major; the diagonal is unused.
    square: Vec<f64>,
}

impl Relabeller {
    /// The square form of condensed `v` of `n_conditions` conditions.
    /// Errors: `v` is not a condensed RDM of `n_conditions` (at least 2).
    pub fn new(v: ArrayView1<'_, f64>, n_conditions: usize) -> Result<Self> {
        let n = n_conditions;
        if n < 2 || v.len() != condensed_len(n) {
            return Err(KernelError::Shape(format!(
                "a condensed RDM of {n} conditions has {} values, got {}",
                condensed_len(n),
                v.len()
            )));
        }
        let mut square = vec![0.0; n * n];
        let mut q = v.iter();
        for i in 0..n {
            for j in i + 1..n {
                let x = *q.next().expect("length checked");
                square[i * n + j] = x;
                square[j * n + i] = x;
            }
        }
        Ok(Relabeller { n, square })
    }

    /// Writes the RDM relabelled by `perm` into `out` (condensed, `out.len()` values).
    /// Errors: `perm` is not a permutation of `0..n`, or `out` has the wrong length.
    pub fn relabel_into(&self, perm: &[usize], out: &mut [f64]) -> Result<()> {
        let n = self.n;
        if perm.len() != n {
            return Err(KernelError::Shape(format!(
                "a permutation of {n} conditions needs {n} entries, got {}",
                perm.len()
            )));
        }
        if out.len() != condensed_len(n) {
            return Err(KernelError::Shape(format!(
                "a condensed RDM of {n} conditions has {} values, got room for {}",
                condensed_len(n),
                out.len()
            )));
        }
        let mut seen = vec![false; n];
        for &p in perm {
            if p >= n || std::mem::replace(&mut seen[p], true) {
                return Err(KernelError::Parameter(format!(
                    "{perm:?} is not a permutation of 0..{n}"
                )));
            }
        }
        let mut start = 0;
        for i in 0..n {
            let row = &self.square[perm[i] * n..(perm[i] + 1) * n];
            let dst = &mut out[start..start + n - i - 1];
            for (o, &pj) in dst.iter_mut().zip(&perm[i + 1..]) {
                *o = row[pj];
            }
            start += n - i - 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdm::npy_fixture as fx;
    use crate::rdm::square_to_condensed;
    use crate::rng::Rng;
    use ndarray::{Array2, Axis};

    fn naive_ranks(x: &[f64]) -> Vec<f64> {
        x.iter()
            .map(|&a| {
                let less = x.iter().filter(|&&b| b < a).count() as f64;
                let equal = x.iter().filter(|&&b| b == a).count() as f64;
                less + (equal + 1.0) / 2.0
            })
            .collect()
    }

    fn naive_pearson(x: &[f64], y: &[f64]) -> f64 {
        let n = x.len() as f64;
        let mx = x.iter().sum::<f64>() / n;
        let my = y.iter().sum::<f64>() / n;
        let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
        let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
        let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
        sxy / (sxx * syy).sqrt()
    }

    fn naive_compare(a: &[f64], b: &[f64], method: CompareMethod) -> f64 {
        let (x, y): (Vec<f64>, Vec<f64>) = a
            .iter()
            .zip(b)
            .filter(|(u, v)| !u.is_nan() && !v.is_nan())
            .map(|(u, v)| (*u, *v))
            .unzip();
        match method {
            CompareMethod::Pearson => naive_pearson(&x, &y),
            CompareMethod::Spearman => naive_pearson(&naive_ranks(&x), &naive_ranks(&y)),
            CompareMethod::Cosine => {
                let xy: f64 = x.iter().zip(&y).map(|(u, v)| u * v).sum();
                let xx: f64 = x.iter().map(|u| u * u).sum();
                let yy: f64 = y.iter().map(|v| v * v).sum();
                xy / (xx * yy).sqrt()
            }
            CompareMethod::KendallTauA => {
                let n = x.len();
                let mut s = 0.0;
                for i in 0..n {
                    for j in i + 1..n {
                        if x[j] != x[i] && y[j] != y[i] {
                            s += (x[j] - x[i]).signum() * (y[j] - y[i]).signum();
                        }
                    }
                }
                s / (n * (n - 1) / 2) as f64
            }
            CompareMethod::TauB => {
                let n = x.len();
                let (mut s, mut tx, mut ty) = (0.0, 0usize, 0usize);
                for i in 0..n {
                    for j in i + 1..n {
                        tx += (x[j] == x[i]) as usize;
                        ty += (y[j] == y[i]) as usize;
                        if x[j] != x[i] && y[j] != y[i] {
                            s += (x[j] - x[i]).signum() * (y[j] - y[i]).signum();
                        }
                    }
                }
                let n0 = n * (n - 1) / 2;
                s / (((n0 - tx) * (n0 - ty)) as f64).sqrt()
            }
            CompareMethod::RhoA => {
                let nf = x.len() as f64;
                let c = (nf + 1.0) / 2.0;
                let (rx, ry) = (naive_ranks(&x), naive_ranks(&y));
                12.0 * rx.iter().zip(&ry).map(|(u, v)| (u - c) * (v - c)).sum::<f64>()
                    / (nf * nf * nf - nf)
            }
            m => unreachable!("{m:?} does not drop NaN pairs"),
        }
    }

    /// The methods that compare the valid pairs as two vectors (NaN pairs dropped).
    const METHODS: [CompareMethod; 6] = [
        CompareMethod::Spearman,
        CompareMethod::Pearson,
        CompareMethod::KendallTauA,
        CompareMethod::Cosine,
        CompareMethod::RhoA,
        CompareMethod::TauB,
    ];

    /// The methods on the square matrix.
    const SQUARE: [CompareMethod; 6] = [
        CompareMethod::CorrCov,
        CompareMethod::Bures,
        CompareMethod::CkaLinear,
        CompareMethod::CkaLinearUnbiased,
        CompareMethod::CkaRbf,
        CompareMethod::CkaRbfUnbiased,
    ];

    #[test]
    fn methods_parse() {
        for m in CompareMethod::ALL {
            assert_eq!(CompareMethod::parse(m.as_str()).unwrap(), m);
            assert_eq!(
                m.has_features(),
                matches!(
                    m,
                    CompareMethod::Spearman
                        | CompareMethod::Pearson
                        | CompareMethod::Cosine
                        | CompareMethod::RhoA
                )
            );
            assert_eq!(m.needs_conditions(), SQUARE.contains(&m));
            assert!(!(m.has_features() && m.needs_conditions()));
        }
        assert_eq!(
            CompareMethod::ALL.iter().filter(|m| METHODS.contains(m) || SQUARE.contains(m)).count(),
            12
        );
        for (s, m) in [
            ("rho_a", CompareMethod::RhoA),
            ("tau_b", CompareMethod::TauB),
            ("corr_cov", CompareMethod::CorrCov),
            ("bures", CompareMethod::Bures),
            ("cka_linear", CompareMethod::CkaLinear),
            ("cka_linear_unbiased", CompareMethod::CkaLinearUnbiased),
            ("cka_rbf", CompareMethod::CkaRbf),
            ("cka_rbf_unbiased", CompareMethod::CkaRbfUnbiased),
        ] {
            assert_eq!(CompareMethod::parse(s).unwrap(), m);
        }
        assert!(matches!(CompareMethod::parse("corr"), Err(KernelError::Parameter(_))));
        assert!(matches!(CompareMethod::parse("rho-a"), Err(KernelError::Parameter(_))));
    }

    #[test]
    fn ranks_match_naive_with_and_without_ties() {
        let mut rng = Rng::new(21);
        // Sizes on both sides of the bucket-sort threshold.
        for &n in &[0usize, 1, 2, 7, 100, 511, 512, 600, 4186] {
            for tie_levels in [0u64, 3, 40] {
                let x: Vec<f64> = (0..n)
                    .map(|_| {
                        if tie_levels == 0 {
                            rng.normal() * 1e3
                        } else {
                            rng.below(tie_levels) as f64 - 1.0
                        }
                    })
                    .collect();
                let got = rank_average(ArrayView1::from(&x));
                let want = naive_ranks(&x);
                assert_eq!(got.to_vec(), want, "n={n} ties={tie_levels}");
            }
        }
        // Signed zeros tie; infinities rank at the ends; negatives before positives.
        let x = [0.0, -0.0, f64::INFINITY, -1.5, f64::NEG_INFINITY, 2.0, -1e-300];
        assert_eq!(
            rank_average(ArrayView1::from(&x)).to_vec(),
            vec![4.5, 4.5, 7.0, 2.0, 1.0, 6.0, 3.0]
        );
        // Clumped values (a few outliers stretch the range: large buckets), with ties, signs
        // and infinities, above the bucket-sort threshold.
        for n in [64usize, 65, 300, 5000] {
            let x: Vec<f64> = (0..n)
                .map(|i| match i % 10 {
                    0 => rng.normal() * 1e6,
                    1 => f64::INFINITY,
                    2 => -3.0,
                    _ => 1.0 + rng.normal() * 1e-9,
                })
                .collect();
            assert_eq!(
                rank_average(ArrayView1::from(&x)).to_vec(),
                naive_ranks(&x),
                "clumped n={n}"
            );
        }
        let mut big: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1000) as f64 - 500.0).collect();
        big[3] = -0.0;
        big[4] = 0.0;
        assert_eq!(rank_average(ArrayView1::from(&big)).to_vec(), naive_ranks(&big));
        assert!(rank_average(ArrayView1::from(&[1.0, f64::NAN, 2.0])).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn compare_matches_naive() {
        let mut rng = Rng::new(22);
        for &n in &[3usize, 4, 10, 45, 300, 1000] {
            for ties in [false, true] {
                for with_nan in [false, true] {
                    let draw = |rng: &mut Rng| {
                        if ties { rng.below(5) as f64 } else { rng.normal() + 1.0 }
                    };
                    let mut a: Vec<f64> = (0..n).map(|_| draw(&mut rng)).collect();
                    let mut b: Vec<f64> = a.iter().map(|v| v + draw(&mut rng)).collect();
                    if with_nan && n > 6 {
                        a[1] = f64::NAN;
                        b[4] = f64::NAN;
                        b[1] = f64::NAN;
                    }
                    for method in METHODS {
                        let got =
                            compare(ArrayView1::from(&a), ArrayView1::from(&b), method).unwrap();
                        let want = naive_compare(&a, &b, method);
                        assert!(
                            (got - want).abs() < 1e-12,
                            "{method:?} n={n} ties={ties}: {got} {want}"
                        );
                        let swapped =
                            compare(ArrayView1::from(&b), ArrayView1::from(&a), method).unwrap();
                        assert!((swapped - got).abs() < 1e-14);
                    }
                }
            }
        }
    }

    #[test]
    fn nan_policy_and_errors() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let e = compare(ArrayView1::from(&a), ArrayView1::from(&a[..3]), CompareMethod::Spearman)
            .unwrap_err();
        assert!(matches!(e, KernelError::Shape(m) if m.contains('4') && m.contains('3')));
        let c = [0.5; 4];
        let z = [0.0; 4];
        let two_valid = [1.0, f64::NAN, 3.0, f64::NAN];
        for m in METHODS {
            let v = |x: &[f64], y: &[f64]| {
                compare(ArrayView1::from(x), ArrayView1::from(y), m).unwrap()
            };
            assert!(v(&a[..2], &a[..2]).is_nan(), "{m:?}: fewer than 3 pairs");
            assert!(v(&[], &[]).is_nan());
            assert!(v(&two_valid, &a).is_nan(), "{m:?}: 2 valid pairs");
            assert!(v(&z, &a).is_nan(), "{m:?}: all-zero RDM");
            if m != CompareMethod::Cosine {
                assert!(v(&c, &a).is_nan(), "{m:?}: constant RDM");
            } else {
                assert!((v(&c, &a) - 5.0 / 30f64.sqrt()).abs() < 1e-12);
            }
            assert!((v(&a, &a) - 1.0).abs() < 1e-12);
        }
        for m in CompareMethod::ALL.into_iter().filter(|m| !m.has_features()) {
            let e = comparison_features(ArrayView1::from(&a[..3]), m).unwrap_err();
            assert!(matches!(e, KernelError::Parameter(s) if s.contains(m.as_str())));
        }
        assert!(comparison_features(ArrayView1::from(&two_valid), CompareMethod::Pearson).is_err());
        assert!(comparison_features(ArrayView1::from(&a[..2]), CompareMethod::Pearson).is_err());
        let f = comparison_features(ArrayView1::from(&c), CompareMethod::Spearman).unwrap();
        assert!(f.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn features_dot_equals_compare_and_commute_with_permutations() {
        let mut rng = Rng::new(23);
        for &n in &[3usize, 5, 12, 40] {
            let len = condensed_len(n);
            let a: Vec<f64> = (0..len).map(|_| rng.normal()).collect();
            // b with ties, so the ranks have ties too
            let b: Vec<f64> = (0..len).map(|_| rng.below(4) as f64).collect();
            let mut perm: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut perm);
            for m in CompareMethod::ALL.into_iter().filter(|m| m.has_features()) {
                let fa = comparison_features(ArrayView1::from(&a), m).unwrap();
                let fb = comparison_features(ArrayView1::from(&b), m).unwrap();
                let c = compare(ArrayView1::from(&a), ArrayView1::from(&b), m).unwrap();
                let same = |x: f64, y: f64| (x.is_nan() && y.is_nan()) || (x - y).abs() < 1e-14;
                assert!(same(fa.dot(&fb), c), "{m:?}");
                // features of the permuted RDM == permuted features
                let pa = permute_condensed(ArrayView1::from(&a), n, &perm).unwrap();
                let fpa = comparison_features(pa.view(), m).unwrap();
                let pfa = permute_condensed(fa.view(), n, &perm).unwrap();
                let err = (&fpa - &pfa).iter().fold(0.0f64, |s, v| s.max(v.abs()));
                assert!(err < 1e-14, "{m:?}: {err}");
                let cp = compare(pa.view(), ArrayView1::from(&b), m).unwrap();
                assert!(same(pfa.dot(&fb), cp));
            }
        }
    }

    #[test]
    fn relabeller_matches_the_condensed_index_formula() {
        let mut rng = crate::rng::Rng::new(5);
        for n in [2usize, 3, 7, 40] {
            let v: Array1<f64> = rng.normal_array(condensed_len(n));
            let r = Relabeller::new(v.view(), n).unwrap();
            for seed in 0..4 {
                let perm =
                    crate::permutation::permutation(n, &crate::permutation::Scheme::Free, seed, 0);
                let mut got = vec![f64::NAN; v.len()];
                r.relabel_into(&perm, &mut got).unwrap();
                let mut q = 0;
                for i in 0..n {
                    for j in i + 1..n {
                        assert_eq!(got[q], v[crate::rdm::pair_index(n, perm[i], perm[j])]);
                        q += 1;
                    }
                }
            }
            let mut short = vec![0.0; v.len() + 1];
            let id: Vec<usize> = (0..n).collect();
            assert!(matches!(r.relabel_into(&id, &mut short), Err(KernelError::Shape(_))));
        }
    }

    #[test]
    fn permute_condensed_relabels_conditions() {
        let n = 5;
        let sq = Array2::from_shape_fn(
            (n, n),
            |(i, j)| if i == j { 0.0 } else { (i * j + i + j) as f64 },
        );
        let v = square_to_condensed(sq.view(), "sq").unwrap();
        let perm = [3usize, 0, 4, 1, 2];
        let got = permute_condensed(v.view(), n, &perm).unwrap();
        let want_sq = Array2::from_shape_fn((n, n), |(i, j)| sq[(perm[i], perm[j])]);
        assert_eq!(got, square_to_condensed(want_sq.view(), "w").unwrap());
        let id: Vec<usize> = (0..n).collect();
        assert_eq!(permute_condensed(v.view(), n, &id).unwrap(), v);
        assert!(matches!(permute_condensed(v.view(), 4, &perm[..4]), Err(KernelError::Shape(_))));
        assert!(matches!(permute_condensed(v.view(), n, &perm[..4]), Err(KernelError::Shape(_))));
        assert!(matches!(
            permute_condensed(v.view(), n, &[0, 0, 1, 2, 3]),
            Err(KernelError::Parameter(_))
        ));
        assert!(matches!(
            permute_condensed(v.view(), n, &[0, 1, 2, 3, 5]),
            Err(KernelError::Parameter(_))
        ));
    }

    fn method_of(name: &str) -> CompareMethod {
        CompareMethod::parse(name).unwrap()
    }

    #[test]
    fn compare_matches_rsatoolbox_on_ties() {
        let (_, a) = fx::f64s(&fx::rsa("ties_a.npy"));
        let (_, b) = fx::f64s(&fx::rsa("ties_b.npy"));
        let rows = fx::compare_csv(&fx::rsa("compare_ties.csv"));
        assert_eq!(rows.len(), 4);
        for (brain, model, method, want) in rows {
            assert_eq!((brain.as_str(), model.as_str()), ("ties_a", "ties_b"));
            let got =
                compare(ArrayView1::from(&a), ArrayView1::from(&b), method_of(&method)).unwrap();
            assert!((got - want).abs() < 1e-9, "{method}: {got} vs {want}");
        }
    }

    #[test]
    fn compare_matches_rsatoolbox_on_real_data() {
        let (_, human) = fx::f64s(&fx::krieg("human_it_rdm.npy"));
        let (_, monkey) = fx::f64s(&fx::krieg("monkey_it_rdm.npy"));
        let (shape, models) = fx::f64s(&fx::krieg("model_rdms.npy"));
        let models =
            ndarray::Array3::from_shape_vec((shape[0], shape[1], shape[2]), models).unwrap();
        let names = std::fs::read_to_string(fx::krieg("model_names.txt")).unwrap();
        let mut targets: Vec<(String, Array1<f64>)> =
            vec![("monkey_it".into(), Array1::from(monkey))];
        for (name, m) in
            names.lines().filter(|l| !l.trim().is_empty()).zip(models.axis_iter(Axis(0)))
        {
            targets.push((name.trim().into(), square_to_condensed(m, name).unwrap()));
        }
        let rows = fx::compare_csv(&fx::rsa("compare_real.csv"));
        assert_eq!(rows.len(), 36);
        let human = Array1::from(human);
        for (brain, model, method, want) in rows {
            assert_eq!(brain, "human_it");
            let (_, t) = targets.iter().find(|(n, _)| *n == model).expect("model in the data set");
            let m = method_of(&method);
            let got = compare(human.view(), t.view(), m).unwrap();
            assert!((got - want).abs() < 1e-9, "{model} {method}: {got} vs {want}");
            if m.has_features() {
                let f = comparison_features(human.view(), m).unwrap();
                let g = comparison_features(t.view(), m).unwrap();
                assert!((f.dot(&g) - want).abs() < 1e-9);
            }
        }
    }

    /// Path of a file in `tests/fixtures/compare/` (made by
    /// `scripts/python/make_fixtures_compare.py`).
    fn compare_fixture(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/compare/"
        ))
        .join(name)
    }

    /// human_it, monkey_it and the 8 models of kriegeskorte2008, condensed, by name.
    fn kriegeskorte_rdms() -> Vec<(String, Array1<f64>)> {
        let (_, human) = fx::f64s(&fx::krieg("human_it_rdm.npy"));
        let (_, monkey) = fx::f64s(&fx::krieg("monkey_it_rdm.npy"));
        let (shape, models) = fx::f64s(&fx::krieg("model_rdms.npy"));
        let models =
            ndarray::Array3::from_shape_vec((shape[0], shape[1], shape[2]), models).unwrap();
        let names = std::fs::read_to_string(fx::krieg("model_names.txt")).unwrap();
        let mut out: Vec<(String, Array1<f64>)> = vec![
            ("human_it".into(), Array1::from(human)),
            ("monkey_it".into(), Array1::from(monkey)),
        ];
        for (name, m) in
            names.lines().filter(|l| !l.trim().is_empty()).zip(models.axis_iter(Axis(0)))
        {
            out.push((name.trim().into(), square_to_condensed(m, name).unwrap()));
        }
        out
    }

    /// Checks every row of a comparison CSV against [`compare`] (and the features, where the
    /// method has them); returns the largest |diff| per method.
    fn check_rows(
        csv: &str,
        rdms: &[(String, Array1<f64>)],
        tol: impl Fn(CompareMethod) -> f64,
    ) -> std::collections::BTreeMap<String, f64> {
        let mut worst = std::collections::BTreeMap::new();
        for (brain, model, method, want) in fx::compare_csv(&compare_fixture(csv)) {
            let find = |name: &str| &rdms.iter().find(|(n, _)| n == name).expect(name).1;
            let (b, t) = (find(&brain), find(&model));
            let m = method_of(&method);
            let got = compare(b.view(), t.view(), m).unwrap();
            let diff = (got - want).abs();
            assert!(diff <= tol(m), "{csv}: {brain} {model} {method}: {got} vs {want}");
            let w = worst.entry(method.clone()).or_insert(0.0f64);
            *w = w.max(diff);
            if m.has_features() && !b.iter().chain(t.iter()).any(|v| v.is_nan()) {
                let f = comparison_features(b.view(), m).unwrap();
                let g = comparison_features(t.view(), m).unwrap();
                assert!((f.dot(&g) - want).abs() <= tol(m));
            }
        }
        worst
    }

    #[test]
    fn new_methods_match_rsatoolbox_on_real_data() {
        let rdms = kriegeskorte_rdms();
        // Against rsatoolbox 0.3.2; measured max |diff|: rho_a 3.8e-15, tau_b 0, corr_cov
        // 2.1e-14, bures 7.7e-8 (rsatoolbox's rounding noise: square roots of eigenvalues at
        // rounding level; see bures_exact.csv).
        let worst =
            check_rows("real.csv", &rdms, |m| if m == CompareMethod::Bures { 2e-7 } else { 1e-12 });
        assert_eq!(worst.len(), 4, "{worst:?}");
        // The noise-free Bures reference: measured max |diff| 6.8e-15.
        let mut all = rdms.clone();
        all.push(("ties_a".into(), Array1::from(fx::f64s(&compare_fixture("ties_a.npy")).1)));
        all.push(("ties_b".into(), Array1::from(fx::f64s(&compare_fixture("ties_b.npy")).1)));
        let exact = check_rows("bures_exact.csv", &all, |_| 1e-12);
        eprintln!("max |diff| vs rsatoolbox {worst:?}, vs the exact Bures {exact:?}");
    }

    #[test]
    fn new_methods_match_rsatoolbox_on_ties_and_nan() {
        let load = |name: &str| Array1::from(fx::f64s(&compare_fixture(name)).1);
        let rdms: Vec<(String, Array1<f64>)> = ["ties_a", "ties_b", "nan_a", "nan_b"]
            .iter()
            .map(|n| (n.to_string(), load(&format!("{n}.npy"))))
            .collect();
        // measured max |diff|: ties rho_a 2.2e-16, tau_b 0, corr_cov 2.2e-16 (bures 5.8e-9:
        // rsatoolbox's noise; the exact reference above holds the ties pair too); NaN rho_a 0, tau_b 0,
        // corr_cov 4.4e-16 (rsatoolbox's weighted projection for missing entries)
        let ties =
            check_rows("ties.csv", &rdms, |m| if m == CompareMethod::Bures { 1e-8 } else { 1e-12 });
        let nan = check_rows("nan.csv", &rdms, |_| 1e-12);
        assert_eq!((ties.len(), nan.len()), (4, 3));
        eprintln!("max |diff| ties {ties:?}, NaN {nan:?}");
        // Bures of these non-Euclidean RDMs is above 1 and not symmetric, as rsatoolbox's
        // (1.2795... and 1.2539...): only the first matrix's negative eigenvalues are clipped.
        let (a, b) = (&rdms[0].1, &rdms[1].1);
        let ab = compare(a.view(), b.view(), CompareMethod::Bures).unwrap();
        let ba = compare(b.view(), a.view(), CompareMethod::Bures).unwrap();
        assert!(ab > 1.0 && (ba - 1.253970).abs() < 1e-6, "{ab} {ba}");
        // rsatoolbox refuses NaN for bures; brainfit: NaN. Likewise the CKAs.
        let (a, b) = (&rdms[2].1, &rdms[3].1);
        for m in SQUARE.into_iter().filter(|&m| m != CompareMethod::CorrCov) {
            assert!(compare(a.view(), b.view(), m).unwrap().is_nan(), "{m:?}");
        }
    }

    #[test]
    fn rho_a_is_spearman_without_ties_and_smaller_with_them() {
        let mut rng = Rng::new(24);
        let a: Vec<f64> = (0..300).map(|_| rng.normal()).collect();
        let b: Vec<f64> = a.iter().map(|v| v + rng.normal()).collect();
        let (va, vb) = (ArrayView1::from(&a), ArrayView1::from(&b));
        let rho = compare(va, vb, CompareMethod::Spearman).unwrap();
        assert!((compare(va, vb, CompareMethod::RhoA).unwrap() - rho).abs() < 1e-14);
        let t: Vec<f64> = a.iter().map(|v| (v * 2.0).round()).collect();
        let vt = ArrayView1::from(&t);
        let (ra, rs) = (
            compare(vt, vb, CompareMethod::RhoA).unwrap(),
            compare(vt, vb, CompareMethod::Spearman).unwrap(),
        );
        assert!(ra.abs() < rs.abs() && ra > 0.5, "{ra} {rs}");
        // tau-b >= tau-a in magnitude, equal without ties
        let ta = compare(va, vb, CompareMethod::KendallTauA).unwrap();
        assert!((compare(va, vb, CompareMethod::TauB).unwrap() - ta).abs() < 1e-14);
        let (ta, tb) = (
            compare(vt, vb, CompareMethod::KendallTauA).unwrap(),
            compare(vt, vb, CompareMethod::TauB).unwrap(),
        );
        assert!(tb > ta && ta > 0.3, "{ta} {tb}");
    }

    #[test]
    fn square_methods_nan_policy_and_errors() {
        let mut rng = Rng::new(25);
        let n = 9;
        let len = condensed_len(n);
        // Euclidean RDMs (positive semi-definite second moments: bures is symmetric, 1 with
        // itself)
        let x: ndarray::Array2<f64> = rng.normal_array((n, 5));
        let y: ndarray::Array2<f64> = &x + &rng.normal_array::<f64, _, _>((n, 5));
        let a = crate::rdm::rdm(x.view(), crate::rdm::RdmMethod::Euclidean).unwrap().to_vec();
        let b = crate::rdm::rdm(y.view(), crate::rdm::RdmMethod::Euclidean).unwrap().to_vec();
        let v = |x: &[f64], y: &[f64], m| compare(ArrayView1::from(x), ArrayView1::from(y), m);
        let constant = vec![0.7; len];
        let zero = vec![0.0; len];
        for m in SQUARE {
            let ab = v(&a, &b, m).unwrap();
            assert!(ab.is_finite() && ab > 0.0, "{m:?}: {ab}");
            assert!((v(&b, &a, m).unwrap() - ab).abs() < 1e-12, "{m:?}: symmetric");
            assert!((v(&a, &a, m).unwrap() - 1.0).abs() < 1e-12, "{m:?}: 1 with itself");
            // a length that is not n(n-1)/2
            assert!(matches!(v(&a[..4], &b[..4], m), Err(KernelError::Shape(_))), "{m:?}");
            assert!(matches!(v(&a, &b[..4], m), Err(KernelError::Shape(_))));
            // fewer than 3 values: NaN
            assert!(v(&a[..1], &b[..1], m).unwrap().is_nan());
            assert!(v(&[], &[], m).unwrap().is_nan());
            assert!(v(&zero, &b, m).unwrap().is_nan(), "{m:?}: all-zero RDM");
            let mut inf = a.clone();
            inf[3] = f64::INFINITY;
            assert!(v(&inf, &b, m).unwrap().is_nan(), "{m:?}: infinite dissimilarity");
            let mut hole = a.clone();
            hole[5] = f64::NAN;
            let with_nan = v(&hole, &b, m).unwrap();
            assert_eq!(with_nan.is_nan(), m != CompareMethod::CorrCov, "{m:?}");
        }
        // A constant RDM: corr_cov (centred first) and the CKAs but the unbiased linear one are
        // NaN; unbiased linear CKA is invariant to the constant (U-centring: zero); bures of a
        // constant RDM is the similarity with a regular simplex (defined).
        for m in [
            CompareMethod::CorrCov,
            CompareMethod::CkaLinearUnbiased,
            CompareMethod::CkaRbfUnbiased,
        ] {
            assert!(v(&constant, &b, m).unwrap().is_nan(), "{m:?}: constant RDM");
        }
        for m in [CompareMethod::CkaLinear, CompareMethod::CkaRbf, CompareMethod::Bures] {
            assert!(v(&constant, &b, m).unwrap().is_finite(), "{m:?}: constant RDM");
        }
        // 3 conditions: unbiased CKA is undefined
        for m in [CompareMethod::CkaLinearUnbiased, CompareMethod::CkaRbfUnbiased] {
            assert!(v(&a[..3], &b[..3], m).unwrap().is_nan());
        }
        // corr_cov drops the union of the NaN positions: the same as NaN in both at those
        let (mut a1, mut b1) = (a.clone(), b.clone());
        a1[2] = f64::NAN;
        b1[7] = f64::NAN;
        let (mut a2, mut b2) = (a1.clone(), b1.clone());
        a2[7] = f64::NAN;
        b2[2] = f64::NAN;
        let c1 = v(&a1, &b1, CompareMethod::CorrCov).unwrap();
        assert_eq!(c1, v(&a2, &b2, CompareMethod::CorrCov).unwrap());
        assert!(c1.is_finite() && (c1 - v(&a, &b, CompareMethod::CorrCov).unwrap()).abs() > 1e-6);
        // too few valid pairs
        let mut sparse = vec![f64::NAN; len];
        sparse[..2].copy_from_slice(&a[..2]);
        assert!(v(&sparse, &b, CompareMethod::CorrCov).unwrap().is_nan());
    }
}
