//! Banded ridge regression: several feature spaces fit jointly, one regularisation per space
//! and voxel, chosen by cross-validation (Nunez-Elizalde, Huth & Gallant 2019, NeuroImage 197;
//! Dupré la Tour, Eickenberg, Nunez-Elizalde & Gallant 2022, NeuroImage 264), with each space's
//! share of the held-out score.
//!
//! # Model
//!
//! With `B` feature spaces `X_1 … X_B` and band weights `γ` on the simplex (`γ_b >= 0`,
//! `Σ γ_b = 1`), the model is ridge regression with penalty `α` on the concatenation of the
//! scaled spaces `Z = [√γ_1 X_1, …, √γ_B X_B]`:
//!
//! ```text
//! b* = argmin_b ‖Z b − y‖² + α ‖b‖²,    β_b = √γ_b · b*_b   (coefficients on X_b)
//! ```
//!
//! which is the same as penalising space `b` by `α / γ_b`. This is himalaya's
//! `BandedRidgeCV` (`solve_banded_ridge_random_search`) exactly: it scales `X_b` by `√γ_b`,
//! fits ridge with `α`, multiplies the coefficients back by `√γ_b`, and reports
//! `deltas = log(γ / α)` (its `Z_b = exp(δ_b / 2) X_b` with unit penalty). A space with
//! `γ_b = 0` is left out of the fit (coefficients zero); himalaya divides by `√γ_b` and cannot
//! take exact zeros.
//!
//! # Random search
//!
//! The candidate weights are rows of a `[n_candidates, B]` array; [`simplex_candidates`]
//! makes them as himalaya does (equal weights first, then symmetric Dirichlet samples cycling
//! over the concentrations, himalaya's default `[0.1, 1.0]`), from brainfit's own seeded
//! generator, or the caller gives an explicit list (himalaya's
//! `solver_params={"n_iter": gammas}`). Every candidate is crossed with every alpha of the grid.
//!
//! # Selection (per voxel, inside each outer training part)
//!
//! * For each candidate and alpha, the criterion is the mean over inner folds of each fold's
//!   mean squared error (himalaya's `l2_neg_loss`, averaged over splits with equal weights).
//! * Per candidate, the alpha minimising it; exact ties go to the larger alpha (himalaya adds
//!   `1e-10 · ln α` to its score; brainfit's ridge rule, so a single space with `γ = 1` is
//!   exactly [`crate::ridge::NestedCv`]).
//! * Across candidates, in order, a later candidate replaces the best so far only if it lowers
//!   the criterion by more than a relative `1e-12` ([`CANDIDATE_TIE`]), so ties go to the
//!   earlier candidate (himalaya: its score must beat the best by more than the dtype's machine
//!   epsilon, absolutely). The two rules can only differ on near-ties.
//!
//! Each fit centres X and Y on its own training part when `intercept` is on. The chosen
//! `(γ, α)` is refit on the whole outer training part and scored on the outer test part.
//!
//! # Split scores
//!
//! On an outer test part the prediction is the training mean of y (the intercept, in the
//! centred parametrisation; 0 without intercept) plus one term per space,
//! `q_b = (X_b,test − mean_train(X_b)) β_b`. With `ŷ` that prediction, `ȳ` the test part's mean
//! and `ỹ = y − ȳ`:
//!
//! * R² ([`ScoreKind::R2`]): himalaya's `r2_score_split` (the product measure) on the
//!   zero-mean `ỹ` and the terms `q'_b = q_b + γ_b (intercept − ȳ)` (γ normalised to sum to
//!   1), so that `Σ_b q'_b = ŷ − ȳ`:
//!   `r2_b = Σ_i (2 ỹ_i q'_bi − q'_bi Σ_c q'_ci) / Σ_i ỹ_i²`. The intercept's
//!   offset from the test mean is shared in proportion to the band weights (a space with
//!   `γ_b = 0` gets exactly 0); the shares sum to `1 − SS_res / SS_tot`, the total R² with
//!   `SS_tot` about the test mean. Without intercept and with zero-mean test data this is
//!   `r2_score_split(y_test, predict(X_test, split=True))` exactly.
//! * Pearson ([`ScoreKind::Pearson`]): himalaya's `correlation_score_split`,
//!   `r_b = Σ_i ỹ_i (q_bi − q̄_b) / √(Σ ỹ² · Σ (ŷ − mean ŷ)²)`; constant offsets do not enter,
//!   and the shares sum to Pearson's r of `ŷ` and `y`.
//!
//! Where the total score is undefined (constant test data or prediction) the shares are NaN,
//! as the total is (himalaya would divide by 1 instead).
//!
//! # Cost
//!
//! [`BandedRidgeCv::new`] computes, for every split (each outer fold's refit and its inner
//! folds), the blocks that every candidate combines: the centred Gram `Xcᵀ Xc` over all
//! `p = Σ p_b` features when `n_train >= p` (primal), or each space's centred kernel
//! `Xc_b Xc_bᵀ` and test cross-kernel when `n_train < p` (dual), all in f64. For each candidate
//! and split, [`BandedRidgeCv::fit`] combines them (`D G D` with `D = diag(√γ)` on the active
//! features, or `Σ_b γ_b K_b`), decomposes once and scores every alpha from that one
//! eigendecomposition, as the ridge kernel does: per candidate and split, one
//! `min(n, p)`-sized eigendecomposition plus `O(n·min(n, p)·(p + v))` for the basis and the
//! projection of the voxels, plus `O(n_test·min(n, p)·v)` per alpha; the eigendecomposition
//! dominates unless there are many voxels. Only the blocks are held, plus one decomposition
//! per thread (the dual's blocks, `n_train²` per space and split, are the largest part);
//! candidates run on all cores, each with its folds in order, so results do not depend on
//! the thread count. Voxels go in batches of
//! [`crate::ridge::VOXEL_BATCH`] columns, so results do not depend on task sizes either (for
//! tasks starting at multiples of the batch). Gram matrices, eigendecompositions, errors and
//! scores are in f64; the big products with the voxel data run in the data's type.

use crate::cv::{CvScheme, Fold, split_within};
use crate::linalg::{LinalgBackend, matmul};
use crate::ridge::{VOXEL_BATCH, argmin_prefer_later, build_in_parallel, check_alphas};
use crate::rng::Rng;
use crate::score::{ScoreKind, score_columns};
use crate::{KernelError, Real, Result};
use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, Axis, Zip, s};

/// How far a candidate row's sum may be from 1.
pub const SIMPLEX_TOLERANCE: f64 = 1e-6;

/// A later candidate must lower the inner-CV criterion by more than this fraction of the best
/// so far to replace it (ties go to the earlier candidate).
pub const CANDIDATE_TIE: f64 = 1e-12;

/// Candidate band weights for the random search, `[n_iter, n_spaces]`, each row on the simplex.
///
/// Row 0 is the equal weighting `1 / n_spaces` (himalaya overwrites its first sample the same
/// way). Row `i >= 1` uses the concentration `concentrations[i % concentrations.len()]`
/// (himalaya interleaves its per-concentration samples in this order): an infinite
/// concentration gives equal weights; a finite one a sample of the symmetric Dirichlet
/// distribution, drawn by [`Rng::dirichlet`] from one generator `Rng::new(seed)`, rows in
/// order (`n_spaces` Gamma deviates per finite row). Row 0 draws nothing. himalaya's default
/// concentrations are `[0.1, 1.0]`: 0.1 favours weights near the simplex's corners (one space
/// dominating), 1.0 is uniform on the simplex. The values differ from himalaya's (numpy's
/// generator), the scheme does not.
///
/// # Panics
/// If `n_spaces` is 0, or `n_iter > 1` and `concentrations` is empty, or a concentration is not
/// positive (NaN, `<= 0`).
pub fn simplex_candidates(
    n_spaces: usize,
    n_iter: usize,
    concentrations: &[f64],
    seed: u64,
) -> Array2<f64> {
    assert!(n_spaces > 0, "simplex_candidates: no feature space");
    assert!(n_iter <= 1 || !concentrations.is_empty(), "simplex_candidates: no concentration");
    if let Some(c) = concentrations.iter().find(|c| c.is_nan() || **c <= 0.0) {
        panic!("simplex_candidates: concentrations must be > 0, got {c}");
    }
    let mut rng = Rng::new(seed);
    let mut out = Array2::<f64>::from_elem((n_iter, n_spaces), 1.0 / n_spaces as f64);
    for i in 1..n_iter {
        let c = concentrations[i % concentrations.len()];
        let w = rng.dirichlet(c, n_spaces);
        out.row_mut(i).iter_mut().zip(w).for_each(|(o, w)| *o = w);
    }
    out
}

/// The per-split blocks every candidate combines.
#[derive(Debug, Clone)]
enum Blocks {
    /// `n_train >= p`: the centred Gram `Xcᵀ Xc` over all features and the training means of
    /// the features (zeros without intercept).
    Primal { gram: Array2<f64>, mean: Array1<f64> },
    /// `n_train < p`: per space, the centred kernel `Xc_b Xc_bᵀ` and the test cross-kernel
    /// `Xt_b Xc_bᵀ` (test rows centred with the training means).
    Dual { kernels: Vec<Array2<f64>>, cross: Vec<Array2<f64>> },
}

#[derive(Debug, Clone)]
struct Split {
    fold: Fold,
    blocks: Blocks,
}

/// One candidate's decomposition on one split: prediction `A · diag(1/(λ+α)) · Wᵀ Yc`, and
/// `A = Σ_b A_b` split by space for the refit.
struct Basis<T> {
    eigenvalues: Array1<f64>,
    w: Array2<T>,
    a: Array2<T>,
    /// Per space, its part of `A`; `None` for a space with zero weight (or when not asked).
    parts: Vec<Option<Array2<T>>>,
}

/// The blocks of a banded-ridge nested cross-validation; depends on the features only, so it
/// is built once and reused for every voxel chunk, candidate list and permutation.
#[derive(Debug, Clone)]
pub struct BandedRidgeCv<T> {
    /// The spaces side by side, `[n_samples, p]`.
    x: Array2<T>,
    /// Space `b` is columns `bounds[b]..bounds[b + 1]`.
    bounds: Vec<usize>,
    intercept: bool,
    outer: Vec<(Split, Vec<Split>)>,
}

/// Per-voxel results of a banded-ridge nested cross-validation.
#[derive(Debug, Clone, PartialEq)]
pub struct BandedResult {
    /// Mean over outer folds of the held-out score, `[n_voxels]`.
    pub score: Array1<f64>,
    /// Held-out score per outer fold, `[n_outer, n_voxels]`.
    pub fold_score: Array2<f64>,
    /// Band weights chosen, averaged over outer folds (a convex combination of candidates,
    /// so still on the simplex), `[n_spaces, n_voxels]`.
    pub gamma: Array2<f64>,
    /// Candidate (row of the candidate array) chosen in each outer fold, `[n_outer, n_voxels]`.
    pub fold_candidate: Array2<usize>,
    /// Alpha chosen in each outer fold, `[n_outer, n_voxels]`.
    pub fold_alpha: Array2<f64>,
    /// Each space's share of the held-out score, averaged over outer folds,
    /// `[n_spaces, n_voxels]`; sums over spaces to `score`.
    pub split_score: Array2<f64>,
    /// Each space's share of the held-out score per outer fold, `[n_outer, n_spaces, n_voxels]`;
    /// sums over spaces to `fold_score`.
    pub fold_split_score: Array3<f64>,
}

fn rows_f64<T: Real>(x: ArrayView2<'_, T>, rows: &[usize]) -> Array2<f64> {
    Array2::from_shape_fn((rows.len(), x.ncols()), |(i, j)| x[(rows[i], j)].as_f64())
}

fn cast<T: Real>(x: &Array2<f64>) -> Array2<T> {
    x.mapv(T::from_f64)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Centred training targets' projection `Wᵀ Yc` and the training means of `y`.
fn project<B: LinalgBackend, T: Real>(
    w: &Array2<T>,
    train: &[usize],
    intercept: bool,
    y: ArrayView2<'_, T>,
) -> (Array2<T>, Array1<f64>) {
    let v = y.ncols();
    let mean = if intercept {
        let mut m = Array1::<f64>::zeros(v);
        for &i in train {
            m.iter_mut().zip(y.row(i)).for_each(|(m, x)| *m += x.as_f64());
        }
        m / train.len() as f64
    } else {
        Array1::zeros(v)
    };
    let mut yc = y.select(Axis(0), train);
    for mut row in yc.rows_mut() {
        Zip::from(&mut row).and(&mean).for_each(|x, &m| *x = T::from_f64(x.as_f64() - m));
    }
    (matmul::<B, T>(w.t(), yc.view()), mean)
}

/// `(A · diag(1/(λ+α))) · proj` into `out`: the shrinkage scales the columns of `A`.
fn predict<B: LinalgBackend, T: Real>(
    a: &Array2<T>,
    eigenvalues: &Array1<f64>,
    proj: ArrayView2<'_, T>,
    alpha: f64,
    out: &mut Array2<T>,
) {
    let mut scaled = a.clone();
    for (mut column, &l) in scaled.axis_iter_mut(Axis(1)).zip(eigenvalues) {
        column *= T::from_f64(1.0 / (l + alpha));
    }
    B::gemm(scaled.view(), proj, out.view_mut());
}

impl<T: Real> BandedRidgeCv<T> {
    /// Computes every split's blocks for the feature spaces `spaces` (each
    /// `[n_samples, p_b]`, same samples), the outer folds and, within each outer training part,
    /// the inner scheme (with per-sample `groups` for leave-one-group-out), on as many threads
    /// as the machine offers. The result does not depend on the thread count.
    pub fn new<B: LinalgBackend>(
        spaces: &[ArrayView2<'_, T>],
        outer: &[Fold],
        inner: CvScheme,
        groups: Option<&[i64]>,
        intercept: bool,
    ) -> Result<Self> {
        let first = spaces
            .first()
            .ok_or_else(|| KernelError::Parameter("banded ridge needs a feature space".into()))?;
        let n = first.nrows();
        if let Some((b, x)) = spaces.iter().enumerate().find(|(_, x)| x.nrows() != n) {
            return Err(KernelError::Shape(format!(
                "feature space {b} has {} samples, space 0 has {n}",
                x.nrows()
            )));
        }
        if let Some(b) = spaces.iter().position(|x| x.ncols() == 0) {
            return Err(KernelError::Shape(format!("feature space {b} has no features")));
        }
        if let Some(g) = groups
            && g.len() != n
        {
            return Err(KernelError::Shape(format!("{} group labels for {n} samples", g.len())));
        }
        if outer.is_empty() {
            return Err(KernelError::CrossValidation("no outer fold".into()));
        }
        for fold in outer {
            if fold.train.is_empty() || fold.test.is_empty() {
                return Err(KernelError::CrossValidation("a fold has an empty part".into()));
            }
            if fold.train.iter().chain(&fold.test).any(|&i| i >= n) {
                return Err(KernelError::CrossValidation(format!(
                    "a fold indexes past the {n} samples"
                )));
            }
        }
        let mut bounds = vec![0];
        for x in spaces {
            bounds.push(bounds.last().expect("non-empty") + x.ncols());
        }
        let views: Vec<ArrayView2<'_, T>> = spaces.to_vec();
        let x = ndarray::concatenate(Axis(1), &views)
            .map_err(|e| KernelError::Shape(format!("concatenating the spaces: {e}")))?;

        let inner_folds = outer
            .iter()
            .map(|fold| split_within(inner, &fold.train, groups))
            .collect::<Result<Vec<_>>>()?;
        let mut splits: Vec<&Fold> = Vec::new();
        for (fold, inner) in outer.iter().zip(&inner_folds) {
            splits.push(fold);
            splits.extend(inner);
        }
        let xv = x.view();
        let bounds_ref = &bounds;
        let mut built = build_in_parallel(splits.len(), threads(), |i| {
            Self::blocks::<B>(xv, bounds_ref, splits[i], intercept)
        })?
        .into_iter();
        let outer = inner_folds
            .iter()
            .map(|inner| {
                let refit = built.next().expect("one split per fold");
                (refit, built.by_ref().take(inner.len()).collect())
            })
            .collect();
        Ok(BandedRidgeCv { x, bounds, intercept, outer })
    }

    /// The blocks of one split.
    fn blocks<B: LinalgBackend>(
        x: ArrayView2<'_, T>,
        bounds: &[usize],
        fold: &Fold,
        intercept: bool,
    ) -> Result<Split> {
        if fold.train.is_empty() || fold.test.is_empty() {
            return Err(KernelError::CrossValidation("a fold has an empty part".into()));
        }
        let (x_train, x_test, mean) = Self::centred(x, fold, intercept);
        let blocks = if x_train.nrows() >= x_train.ncols() {
            Blocks::Primal { gram: matmul::<B, f64>(x_train.t(), x_train.view()), mean }
        } else {
            let (mut kernels, mut cross) = (Vec::new(), Vec::new());
            for w in bounds.windows(2) {
                let train = x_train.slice(s![.., w[0]..w[1]]);
                let test = x_test.slice(s![.., w[0]..w[1]]);
                kernels.push(matmul::<B, f64>(train, train.t()));
                cross.push(matmul::<B, f64>(test, train.t()));
            }
            Blocks::Dual { kernels, cross }
        };
        Ok(Split { fold: fold.clone(), blocks })
    }

    /// Training and test rows in f64, centred with the training means when `intercept`.
    fn centred(
        x: ArrayView2<'_, T>,
        fold: &Fold,
        intercept: bool,
    ) -> (Array2<f64>, Array2<f64>, Array1<f64>) {
        let mut x_train = rows_f64(x, &fold.train);
        let mut x_test = rows_f64(x, &fold.test);
        let mean = if intercept {
            let mean = x_train.mean_axis(Axis(0)).expect("non-empty");
            x_train -= &mean;
            x_test -= &mean;
            mean
        } else {
            Array1::zeros(x.ncols())
        };
        (x_train, x_test, mean)
    }

    /// Number of samples.
    pub fn n_samples(&self) -> usize {
        self.x.nrows()
    }

    /// Number of feature spaces.
    pub fn n_spaces(&self) -> usize {
        self.bounds.len() - 1
    }

    /// Number of outer folds.
    pub fn n_outer(&self) -> usize {
        self.outer.len()
    }

    /// Decomposes candidate `gamma`'s combination of `split`'s blocks; with `parts`, also each
    /// space's part of `A`.
    fn basis<B: LinalgBackend>(
        &self,
        split: &Split,
        gamma: &[f64],
        parts: bool,
    ) -> Result<Basis<T>> {
        let active: Vec<usize> = (0..gamma.len()).filter(|&b| gamma[b] > 0.0).collect();
        let (eigenvalues, w, a, part_list) = match &split.blocks {
            Blocks::Primal { gram, mean } => {
                // the active features and their scales √γ_b
                let mut cols = Vec::new();
                let mut scale = Vec::new();
                for &b in &active {
                    let (lo, hi) = (self.bounds[b], self.bounds[b + 1]);
                    cols.extend(lo..hi);
                    scale.extend(std::iter::repeat_n(gamma[b].sqrt(), hi - lo));
                }
                let g = Array2::from_shape_fn((cols.len(), cols.len()), |(i, j)| {
                    gram[(cols[i], cols[j])] * scale[i] * scale[j]
                });
                let (lambda, mut v) = B::eigh(g.view())?;
                // D V: the eigenvectors on the unscaled features
                for (mut row, &sc) in v.rows_mut().into_iter().zip(&scale) {
                    row *= sc;
                }
                let select = |rows: &[usize]| {
                    let mut m = rows_f64(self.x.view(), rows).select(Axis(1), &cols);
                    if self.intercept {
                        let mu = mean.select(Axis(0), &cols);
                        m -= &mu;
                    }
                    m
                };
                let x_train = select(&split.fold.train);
                let x_test = select(&split.fold.test);
                let w = matmul::<B, f64>(x_train.view(), v.view());
                let a = matmul::<B, f64>(x_test.view(), v.view());
                let mut part_list = vec![None; gamma.len()];
                if parts {
                    if active.len() == 1 {
                        part_list[active[0]] = Some(cast(&a));
                    } else {
                        let mut start = 0;
                        for &b in &active {
                            let len = self.bounds[b + 1] - self.bounds[b];
                            let r = start..start + len;
                            let part = matmul::<B, f64>(
                                x_test.slice(s![.., r.clone()]),
                                v.slice(s![r, ..]),
                            );
                            part_list[b] = Some(cast(&part));
                            start += len;
                        }
                    }
                }
                (lambda, w, a, part_list)
            }
            Blocks::Dual { kernels, cross } => {
                let n_train = split.fold.train.len();
                let mut k = Array2::<f64>::zeros((n_train, n_train));
                let mut c = Array2::<f64>::zeros((split.fold.test.len(), n_train));
                for &b in &active {
                    k.scaled_add(gamma[b], &kernels[b]);
                    c.scaled_add(gamma[b], &cross[b]);
                }
                let (lambda, u) = B::eigh(k.view())?;
                let a = matmul::<B, f64>(c.view(), u.view());
                let mut part_list = vec![None; gamma.len()];
                if parts {
                    if active.len() == 1 {
                        part_list[active[0]] = Some(cast(&a));
                    } else {
                        for &b in &active {
                            let cb = &cross[b] * gamma[b];
                            part_list[b] = Some(cast(&matmul::<B, f64>(cb.view(), u.view())));
                        }
                    }
                }
                (lambda, u, a, part_list)
            }
        };
        Ok(Basis {
            eigenvalues: eigenvalues.mapv(|l: f64| l.max(0.0)),
            w: cast(&w),
            a: cast(&a),
            parts: part_list,
        })
    }

    /// Runs the nested cross-validation for every column of `y` (`[n_samples, n_voxels]`):
    /// per voxel and outer fold, the `(candidate, alpha)` pair with the best inner-CV criterion
    /// (see the module documentation), refit on the outer training part and scored on the
    /// outer test part, with each space's share of the score.
    ///
    /// `candidates` is `[n_candidates, n_spaces]`, each row non-negative and summing to 1
    /// (within [`SIMPLEX_TOLERANCE`]), e.g. from [`simplex_candidates`]; `alphas` is the grid
    /// (finite, positive; sorted and deduplicated here).
    pub fn fit<B: LinalgBackend>(
        &self,
        y: ArrayView2<'_, T>,
        candidates: ArrayView2<'_, f64>,
        alphas: &[f64],
        score: ScoreKind,
    ) -> Result<BandedResult> {
        if y.nrows() != self.n_samples() {
            return Err(KernelError::Shape(format!(
                "brain data has {} samples, features have {}",
                y.nrows(),
                self.n_samples()
            )));
        }
        let n_spaces = self.n_spaces();
        if candidates.ncols() != n_spaces {
            return Err(KernelError::Shape(format!(
                "candidates have {} columns for {n_spaces} feature spaces",
                candidates.ncols()
            )));
        }
        if candidates.nrows() == 0 {
            return Err(KernelError::Parameter("no candidate band weights".into()));
        }
        for (c, row) in candidates.rows().into_iter().enumerate() {
            let sum: f64 = row.sum();
            if row.iter().any(|g| !g.is_finite() || *g < 0.0)
                || sum.is_nan()
                || (sum - 1.0).abs() > SIMPLEX_TOLERANCE
            {
                return Err(KernelError::Parameter(format!(
                    "candidate {c} is not on the simplex (weights >= 0 summing to 1): {row}"
                )));
            }
        }
        let mut alphas = check_alphas(alphas.to_vec())?;
        alphas.dedup();
        let candidates: Vec<Vec<f64>> = candidates.rows().into_iter().map(|r| r.to_vec()).collect();

        let (n_outer, v) = (self.outer.len(), y.ncols());
        let mut fold_score = Array2::<f64>::zeros((n_outer, v));
        let mut fold_candidate = Array2::<usize>::zeros((n_outer, v));
        let mut fold_alpha = Array2::<f64>::zeros((n_outer, v));
        let mut fold_split_score = Array3::<f64>::zeros((n_outer, n_spaces, v));
        for (k, (refit, inner)) in self.outer.iter().enumerate() {
            // candidates in order: a later one must beat the best by more than CANDIDATE_TIE;
            // one chunk of candidates per round of threads keeps memory at O(threads · v)
            let (mut best_c, mut best_a, mut best) = (vec![0usize; v], vec![0usize; v], vec![]);
            let threads = threads();
            for start in (0..candidates.len()).step_by(threads) {
                let chunk = threads.min(candidates.len() - start);
                let results = build_in_parallel(chunk, threads, |i| {
                    self.inner_cv::<B>(inner, &candidates[start + i], y, &alphas)
                })?;
                for (i, (alpha_index, crit)) in results.into_iter().enumerate() {
                    if start + i == 0 {
                        (best_a, best) = (alpha_index, crit);
                        continue;
                    }
                    for j in 0..v {
                        if crit[j] < best[j] - CANDIDATE_TIE * best[j].abs() {
                            (best_c[j], best_a[j], best[j]) = (start + i, alpha_index[j], crit[j]);
                        }
                    }
                }
            }
            let (score_k, split_k) =
                self.refit::<B>(refit, y, &candidates, &alphas, &best_c, &best_a, score)?;
            fold_score.row_mut(k).assign(&score_k);
            fold_split_score.slice_mut(s![k, .., ..]).assign(&split_k);
            fold_candidate.row_mut(k).assign(&Array1::from(best_c));
            fold_alpha.row_mut(k).assign(&best_a.iter().map(|&a| alphas[a]).collect::<Array1<_>>());
        }
        let gamma = Array2::from_shape_fn((n_spaces, v), |(b, j)| {
            (0..n_outer).map(|k| candidates[fold_candidate[(k, j)]][b]).sum::<f64>()
                / n_outer as f64
        });
        Ok(BandedResult {
            score: fold_score.mean_axis(Axis(0)).expect("at least one outer fold"),
            fold_score,
            gamma,
            fold_candidate,
            fold_alpha,
            split_score: fold_split_score.mean_axis(Axis(0)).expect("at least one outer fold"),
            fold_split_score,
        })
    }

    /// One candidate's inner cross-validation in one outer training part: per voxel, the index
    /// of the best alpha (ties: the larger) and its criterion (mean over inner folds of the
    /// fold's MSE).
    fn inner_cv<B: LinalgBackend>(
        &self,
        inner: &[Split],
        gamma: &[f64],
        y: ArrayView2<'_, T>,
        alphas: &[f64],
    ) -> Result<(Vec<usize>, Vec<f64>)> {
        let v = y.ncols();
        let mut mean_mse = Array2::<f64>::zeros((alphas.len(), v));
        for split in inner {
            let basis = self.basis::<B>(split, gamma, false)?;
            let test = &split.fold.test;
            // each fold's MSE weighs 1 / n_folds, whatever its size
            let weight = 1.0 / (test.len() as f64 * inner.len() as f64);
            for start in (0..v).step_by(VOXEL_BATCH) {
                let cols = start..(start + VOXEL_BATCH).min(v);
                let yb = y.slice(s![.., cols.clone()]);
                let (proj, mean) = project::<B, T>(&basis.w, &split.fold.train, self.intercept, yb);
                // test targets around the training mean, in f64, once for all alphas
                let mut centred = Array2::<f64>::zeros((test.len(), yb.ncols()));
                for (mut c, &i) in centred.rows_mut().into_iter().zip(test) {
                    Zip::from(&mut c)
                        .and(yb.row(i))
                        .and(&mean)
                        .for_each(|c, &x, &m| *c = x.as_f64() - m);
                }
                let mut pred = Array2::<T>::zeros((test.len(), yb.ncols()));
                let mut sse = Array1::<f64>::zeros(yb.ncols());
                for (ai, &alpha) in alphas.iter().enumerate() {
                    predict::<B, T>(&basis.a, &basis.eigenvalues, proj.view(), alpha, &mut pred);
                    sse.fill(0.0);
                    for (c, p) in centred.rows().into_iter().zip(pred.rows()) {
                        Zip::from(&mut sse).and(c).and(p).for_each(|s, &c, &p| {
                            let e = c - p.as_f64();
                            *s += e * e;
                        });
                    }
                    mean_mse.slice_mut(s![ai, cols.clone()]).scaled_add(weight, &sse);
                }
            }
        }
        let best: Vec<usize> =
            (0..v).map(|j| argmin_prefer_later(mean_mse.column(j).iter().copied())).collect();
        let crit = best.iter().enumerate().map(|(j, &a)| mean_mse[(a, j)]).collect();
        Ok((best, crit))
    }

    /// Refits each voxel's `(candidate, alpha)` on the outer training part; held-out score
    /// `[n_voxels]` and split scores `[n_spaces, n_voxels]`.
    #[allow(clippy::too_many_arguments)] // private: the chosen pairs and what they index
    fn refit<B: LinalgBackend>(
        &self,
        split: &Split,
        y: ArrayView2<'_, T>,
        candidates: &[Vec<f64>],
        alphas: &[f64],
        chosen_candidate: &[usize],
        chosen_alpha: &[usize],
        score: ScoreKind,
    ) -> Result<(Array1<f64>, Array2<f64>)> {
        let (v, n_spaces) = (y.ncols(), self.n_spaces());
        let test = &split.fold.test;
        let mut used: Vec<usize> = chosen_candidate.to_vec();
        used.sort_unstable();
        used.dedup();
        // per used candidate: its voxels, their training means and per-space test predictions
        let fits = build_in_parallel(used.len(), threads(), |u| {
            let c = used[u];
            let basis = self.basis::<B>(split, &candidates[c], true)?;
            let mine: Vec<usize> = (0..v).filter(|&j| chosen_candidate[j] == c).collect();
            let mut means = Array1::<f64>::zeros(mine.len());
            let mut parts = Array3::<f64>::zeros((n_spaces, test.len(), mine.len()));
            let mut done = 0;
            for start in (0..v).step_by(VOXEL_BATCH) {
                let end = (start + VOXEL_BATCH).min(v);
                let batch: Vec<usize> =
                    mine[done..].iter().copied().take_while(|&j| j < end).collect();
                if batch.is_empty() {
                    continue;
                }
                let yb = y.select(Axis(1), &batch);
                let (proj, mean) =
                    project::<B, T>(&basis.w, &split.fold.train, self.intercept, yb.view());
                means.slice_mut(s![done..done + batch.len()]).assign(&mean);
                for (ai, &alpha) in alphas.iter().enumerate() {
                    let local: Vec<usize> =
                        (0..batch.len()).filter(|&l| chosen_alpha[batch[l]] == ai).collect();
                    if local.is_empty() {
                        continue;
                    }
                    let sub = proj.select(Axis(1), &local);
                    let mut q = Array2::<T>::zeros((test.len(), local.len()));
                    for (b, part) in basis.parts.iter().enumerate() {
                        let Some(part) = part else { continue };
                        predict::<B, T>(part, &basis.eigenvalues, sub.view(), alpha, &mut q);
                        for (l, &jl) in local.iter().enumerate() {
                            for r in 0..test.len() {
                                parts[(b, r, done + jl)] = q[(r, l)].as_f64();
                            }
                        }
                    }
                }
                done += batch.len();
            }
            Ok((mine, means, parts))
        })?;
        let mut parts = Array3::<f64>::zeros((n_spaces, test.len(), v));
        let mut intercept = Array1::<f64>::zeros(v);
        for (mine, means, p) in fits {
            for (l, &j) in mine.iter().enumerate() {
                intercept[j] = means[l];
                parts.slice_mut(s![.., .., j]).assign(&p.slice(s![.., .., l]));
            }
        }
        let mut pred = Array2::<f64>::zeros((test.len(), v));
        for ((r, j), p) in pred.indexed_iter_mut() {
            let mut sum = 0.0;
            for b in 0..n_spaces {
                sum += parts[(b, r, j)];
            }
            *p = intercept[j] + sum;
        }
        let truth = y.select(Axis(0), test);
        let total = score_columns(score, truth.view(), pred.view());
        let mut split_scores = Array2::<f64>::zeros((n_spaces, v));
        for j in 0..v {
            let y_test: Vec<f64> = truth.column(j).iter().map(|x| x.as_f64()).collect();
            let gamma = &candidates[chosen_candidate[j]];
            let shares = split_score(
                score,
                &y_test,
                parts.slice(s![.., .., j]),
                pred.column(j),
                intercept[j],
                gamma,
            );
            split_scores.column_mut(j).assign(&shares);
        }
        Ok((total, split_scores))
    }
}

/// Each space's share of one voxel's held-out score (see the module documentation): `y` the
/// test data, `parts` `[n_spaces, n_test]` the per-space predictions `q_b`, `pred` the whole
/// prediction (`intercept + Σ_b q_b`), `gamma` the band weights.
fn split_score(
    kind: ScoreKind,
    y: &[f64],
    parts: ArrayView2<'_, f64>,
    pred: ArrayView1<'_, f64>,
    intercept: f64,
    gamma: &[f64],
) -> Array1<f64> {
    let n = y.len() as f64;
    let n_spaces = parts.nrows();
    let y_mean = y.iter().sum::<f64>() / n;
    let yc: Vec<f64> = y.iter().map(|v| v - y_mean).collect();
    let sst: f64 = yc.iter().map(|v| v * v).sum();
    let mut out = Array1::<f64>::from_elem(n_spaces, f64::NAN);
    match kind {
        ScoreKind::R2 => {
            if sst.is_nan() || sst <= 0.0 {
                return out;
            }
            let total: f64 = gamma.iter().sum();
            let offset = intercept - y_mean;
            // q'_b = q_b + γ_b (intercept − ȳ), and their sum
            let shifted = Array2::from_shape_fn(parts.dim(), |(b, i)| {
                parts[(b, i)] + gamma[b] / total * offset
            });
            let sum = shifted.sum_axis(Axis(0));
            for b in 0..n_spaces {
                let mut acc = 0.0;
                for i in 0..y.len() {
                    let q = shifted[(b, i)];
                    acc += 2.0 * yc[i] * q - q * sum[i];
                }
                out[b] = acc / sst;
            }
        }
        ScoreKind::Pearson => {
            let p_mean = pred.iter().sum::<f64>() / n;
            let ssp: f64 = pred.iter().map(|p| (p - p_mean).powi(2)).sum();
            if sst.is_nan() || ssp.is_nan() || sst <= 0.0 || ssp <= 0.0 {
                return out;
            }
            let norm = (sst * ssp).sqrt();
            for b in 0..n_spaces {
                let row = parts.row(b);
                let q_mean = row.sum() / n;
                let cross: f64 = row.iter().zip(&yc).map(|(q, y)| (q - q_mean) * y).sum();
                out[b] = cross / norm;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cv::split;
    use crate::linalg::Backend;
    use crate::ridge::{NestedCv, SpectralSpec};

    const ALPHAS: [f64; 7] = [1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4];

    /// Solves the normal equations `m x = b` of a naive reference fit (Gaussian elimination
    /// with partial pivoting, f64; tested in `linalg`).
    fn solve(m: Array2<f64>, b: Array1<f64>) -> Array1<f64> {
        crate::linalg::solve_dense(m, b, 0.0).expect("a nonsingular system")
    }

    /// Naive banded ridge of one voxel: the normal equations of ridge with `alpha` on
    /// `[√γ_b X_b]` (centred on `train` when `intercept`), coefficients scaled back by `√γ_b`.
    /// Returns each space's test prediction `(X_b,test − mean) β_b` and the intercept.
    #[allow(clippy::too_many_arguments)] // a test helper: every knob is a parameter
    fn naive_fit(
        xs: &[Array2<f64>],
        y: &Array1<f64>,
        train: &[usize],
        test: &[usize],
        gamma: &[f64],
        alpha: f64,
        intercept: bool,
    ) -> (Vec<Array1<f64>>, f64) {
        let scaled: Vec<Array2<f64>> = xs.iter().zip(gamma).map(|(x, g)| x * g.sqrt()).collect();
        let views: Vec<_> = scaled.iter().map(|x| x.view()).collect();
        let z = ndarray::concatenate(Axis(1), &views).unwrap();
        let zt = z.select(Axis(0), train);
        let yt = y.select(Axis(0), train);
        let (zm, ym) = if intercept {
            (zt.mean_axis(Axis(0)).unwrap(), yt.mean().unwrap())
        } else {
            (Array1::zeros(z.ncols()), 0.0)
        };
        let zc = &zt - &zm;
        let yc = &yt - ym;
        let p = z.ncols();
        let b = solve(zc.t().dot(&zc) + Array2::<f64>::eye(p) * alpha, zc.t().dot(&yc));
        let mut parts = Vec::new();
        let mut start = 0;
        for (x, g) in xs.iter().zip(gamma) {
            let beta = b.slice(s![start..start + x.ncols()]).mapv(|c| c * g.sqrt());
            start += x.ncols();
            let mut xt = x.select(Axis(0), test);
            if intercept {
                xt -= &x.select(Axis(0), train).mean_axis(Axis(0)).unwrap();
            }
            parts.push(xt.dot(&beta));
        }
        (parts, ym)
    }

    struct Naive {
        fold_score: Vec<f64>,
        fold_candidate: Vec<usize>,
        fold_alpha: Vec<f64>,
        fold_split: Vec<Vec<f64>>,
    }

    /// Naive nested CV of one voxel: loops over outer folds, candidates, alphas, inner folds.
    #[allow(clippy::too_many_arguments)] // a test helper: every CV knob is a parameter
    fn naive_nested(
        xs: &[Array2<f64>],
        y: &Array1<f64>,
        outer: &[Fold],
        inner: CvScheme,
        groups: Option<&[i64]>,
        candidates: &Array2<f64>,
        intercept: bool,
        kind: ScoreKind,
    ) -> Naive {
        let mut out = Naive {
            fold_score: vec![],
            fold_candidate: vec![],
            fold_alpha: vec![],
            fold_split: vec![],
        };
        for fold in outer {
            let inner_folds = split_within(inner, &fold.train, groups).unwrap();
            let mut best: Option<(f64, usize, f64)> = None;
            for (c, gamma) in candidates.rows().into_iter().enumerate() {
                let gamma = gamma.to_vec();
                let mut best_alpha = (f64::INFINITY, 0.0);
                for &alpha in &ALPHAS {
                    let mse = inner_folds
                        .iter()
                        .map(|f| {
                            let (q, c0) =
                                naive_fit(xs, y, &f.train, &f.test, &gamma, alpha, intercept);
                            (0..f.test.len())
                                .map(|i| {
                                    let p = c0 + q.iter().map(|q| q[i]).sum::<f64>();
                                    (y[f.test[i]] - p).powi(2)
                                })
                                .sum::<f64>()
                                / f.test.len() as f64
                        })
                        .sum::<f64>()
                        / inner_folds.len() as f64;
                    // ties (to rounding) go to the larger alpha
                    if mse <= best_alpha.0 * (1.0 + 1e-12) {
                        best_alpha = (mse, alpha);
                    }
                }
                // ties go to the earlier candidate (the same relative margin)
                if best.is_none_or(|b| best_alpha.0 < b.0 * (1.0 - CANDIDATE_TIE)) {
                    best = Some((best_alpha.0, c, best_alpha.1));
                }
            }
            let (_, c, alpha) = best.unwrap();
            let gamma = candidates.row(c).to_vec();
            let (q, c0) = naive_fit(xs, y, &fold.train, &fold.test, &gamma, alpha, intercept);
            let n = fold.test.len();
            let truth: Vec<f64> = fold.test.iter().map(|&i| y[i]).collect();
            let pred: Vec<f64> = (0..n).map(|i| c0 + q.iter().map(|q| q[i]).sum::<f64>()).collect();
            let t = Array2::from_shape_vec((n, 1), truth.clone()).unwrap();
            let p = Array2::from_shape_vec((n, 1), pred.clone()).unwrap();
            out.fold_score.push(score_columns(kind, t.view(), p.view())[0]);
            // split scores straight from their definitions
            let ym = truth.iter().sum::<f64>() / n as f64;
            let yc: Vec<f64> = truth.iter().map(|t| t - ym).collect();
            let sst: f64 = yc.iter().map(|v| v * v).sum();
            let split = match kind {
                ScoreKind::R2 => {
                    let shifted: Vec<Vec<f64>> = q
                        .iter()
                        .zip(&gamma)
                        .map(|(q, g)| q.iter().map(|q| q + g * (c0 - ym)).collect())
                        .collect();
                    let total: Vec<f64> =
                        (0..n).map(|i| shifted.iter().map(|s| s[i]).sum()).collect();
                    shifted
                        .iter()
                        .map(|s| {
                            (0..n).map(|i| 2.0 * yc[i] * s[i] - s[i] * total[i]).sum::<f64>() / sst
                        })
                        .collect()
                }
                ScoreKind::Pearson => {
                    let pm = pred.iter().sum::<f64>() / n as f64;
                    let ssp: f64 = pred.iter().map(|p| (p - pm).powi(2)).sum();
                    q.iter()
                        .map(|q| {
                            let qm = q.sum() / n as f64;
                            (0..n).map(|i| yc[i] * (q[i] - qm)).sum::<f64>() / (sst * ssp).sqrt()
                        })
                        .collect()
                }
            };
            out.fold_split.push(split);
            out.fold_candidate.push(c);
            out.fold_alpha.push(alpha);
        }
        out
    }

    /// Spaces `X_b ~ N(0, 1) + offset`; voxel `j` depends on space 0 only, space 1 only, all
    /// spaces, or none (pure noise), cycling, with varying signal strengths.
    fn planted(
        rng: &mut Rng,
        n: usize,
        widths: &[usize],
        v: usize,
    ) -> (Vec<Array2<f64>>, Array2<f64>) {
        let xs: Vec<Array2<f64>> = widths
            .iter()
            .enumerate()
            .map(|(b, &p)| rng.normal_array::<f64, _, _>((n, p)) + 1.0 + b as f64)
            .collect();
        let mut y = Array2::<f64>::zeros((n, v));
        for (j, mut col) in y.columns_mut().into_iter().enumerate() {
            let kind = j % 4;
            let strength = 0.3 + j as f64 * 0.2;
            for (b, x) in xs.iter().enumerate() {
                let on = match kind {
                    0 => b == 0,
                    1 => b == 1,
                    2 => true,
                    _ => false,
                };
                if on {
                    let w: Array1<f64> = rng.normal_array(x.ncols());
                    col += &(x.dot(&w) * strength);
                }
            }
            col.iter_mut().for_each(|e| *e += 3.0 + rng.normal());
        }
        (xs, y)
    }

    fn with_corners(n_spaces: usize, n_iter: usize, seed: u64) -> Array2<f64> {
        let random = simplex_candidates(n_spaces, n_iter, &[0.1, 1.0], seed);
        let corners = Array2::<f64>::eye(n_spaces);
        ndarray::concatenate(Axis(0), &[random.view(), corners.view()]).unwrap()
    }

    #[allow(clippy::too_many_arguments)] // a test helper: every CV knob is a parameter
    fn check_against_naive(
        n: usize,
        widths: &[usize],
        v: usize,
        outer: &[Fold],
        inner: CvScheme,
        groups: Option<&[i64]>,
        intercept: bool,
        kind: ScoreKind,
    ) {
        let mut rng = Rng::new((n * 100 + widths.iter().sum::<usize>()) as u64);
        let (xs, y) = planted(&mut rng, n, widths, v);
        let candidates = with_corners(widths.len(), 5, 7);
        let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
        let cv = BandedRidgeCv::new::<Backend>(&views, outer, inner, groups, intercept).unwrap();
        let got = cv.fit::<Backend>(y.view(), candidates.view(), &ALPHAS, kind).unwrap();
        for j in 0..v {
            let want = naive_nested(
                &xs,
                &y.column(j).to_owned(),
                outer,
                inner,
                groups,
                &candidates,
                intercept,
                kind,
            );
            for k in 0..outer.len() {
                let at = format!("voxel {j} fold {k} ({n}x{widths:?})");
                assert_eq!(got.fold_candidate[(k, j)], want.fold_candidate[k], "candidate, {at}");
                assert_eq!(got.fold_alpha[(k, j)], want.fold_alpha[k], "alpha, {at}");
                let d = got.fold_score[(k, j)] - want.fold_score[k];
                assert!(d.abs() < 1e-8, "score differs by {d}, {at}");
                for b in 0..widths.len() {
                    let d = got.fold_split_score[(k, b, j)] - want.fold_split[k][b];
                    assert!(d.abs() < 1e-8, "split score {b} differs by {d}, {at}");
                }
            }
        }
        // f32 data: scores close
        let xs32: Vec<Array2<f32>> = xs.iter().map(|x| x.mapv(|e| e as f32)).collect();
        let views32: Vec<_> = xs32.iter().map(|x| x.view()).collect();
        let cv32 =
            BandedRidgeCv::new::<Backend>(&views32, outer, inner, groups, intercept).unwrap();
        let got32 = cv32
            .fit::<Backend>(y.mapv(|e| e as f32).view(), candidates.view(), &ALPHAS, kind)
            .unwrap();
        let worst = (&got32.score - &got.score).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(worst < 1e-3, "f32 scores differ by {worst}");
        let worst =
            (&got32.split_score - &got.split_score).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(worst < 1e-3, "f32 split scores differ by {worst}");
    }

    #[test]
    fn primal_matches_normal_equations() {
        let outer = split(CvScheme::KFold { k: 4 }, 60, None).unwrap();
        check_against_naive(
            60,
            &[4, 7],
            8,
            &outer,
            CvScheme::KFold { k: 3 },
            None,
            true,
            ScoreKind::R2,
        );
        let outer = split(CvScheme::KFold { k: 3 }, 45, None).unwrap();
        check_against_naive(
            45,
            &[3, 5],
            4,
            &outer,
            CvScheme::KFold { k: 4 },
            None,
            false,
            ScoreKind::Pearson,
        );
    }

    #[test]
    fn dual_matches_normal_equations() {
        let outer = split(CvScheme::KFold { k: 3 }, 30, None).unwrap();
        check_against_naive(
            30,
            &[20, 25],
            4,
            &outer,
            CvScheme::KFold { k: 4 },
            None,
            true,
            ScoreKind::Pearson,
        );
        check_against_naive(
            30,
            &[12, 9, 15],
            4,
            &outer,
            CvScheme::KFold { k: 3 },
            None,
            true,
            ScoreKind::R2,
        );
    }

    #[test]
    fn three_spaces_with_groups_match_normal_equations() {
        let groups: Vec<i64> = (0..36).map(|i| i / 9).collect();
        let outer = split(CvScheme::LeaveOneGroupOut, 36, Some(&groups)).unwrap();
        check_against_naive(
            36,
            &[3, 4, 2],
            8,
            &outer,
            CvScheme::LeaveOneGroupOut,
            Some(&groups),
            true,
            ScoreKind::R2,
        );
    }

    /// One space with weight 1 is the ridge kernel, in the primal and in the dual.
    #[test]
    fn one_space_is_ridge() {
        for (n, p, intercept, kind) in [
            (50, 8, true, ScoreKind::R2),
            (30, 50, true, ScoreKind::Pearson),
            (40, 6, false, ScoreKind::R2),
        ] {
            let mut rng = Rng::new(n as u64 + p as u64);
            let (xs, y) = planted(&mut rng, n, &[p], 9);
            let outer = split(CvScheme::KFold { k: 5 }, n, None).unwrap();
            let inner = CvScheme::KFold { k: 4 };
            let banded =
                BandedRidgeCv::new::<Backend>(&[xs[0].view()], &outer, inner, None, intercept)
                    .unwrap()
                    .fit::<Backend>(y.view(), Array2::ones((1, 1)).view(), &ALPHAS, kind)
                    .unwrap();
            let spec = SpectralSpec::ridge(ALPHAS.to_vec(), intercept, kind).unwrap();
            let ridge = NestedCv::new::<Backend>(xs[0].view(), &outer, inner, None, intercept)
                .unwrap()
                .fit::<Backend>(y.view(), &spec)
                .unwrap();
            assert_eq!(banded.fold_alpha, ridge.fold_alpha, "{n}x{p}");
            let worst =
                (&banded.fold_score - &ridge.fold_score).iter().fold(0.0f64, |m, d| m.max(d.abs()));
            assert!(worst < 1e-10, "{n}x{p}: {worst}");
            // the one space's share is the whole score
            let worst = (&banded.split_score.row(0) - &banded.score)
                .iter()
                .fold(0.0f64, |m, d| m.max(d.abs()));
            assert!(worst < 1e-10, "{n}x{p}: split {worst}");
        }
    }

    /// A zero weight leaves its space out: ridge on the other space, and a share of exactly 0.
    #[test]
    fn zero_weight_drops_the_space() {
        for (n, widths) in [(50, [6, 5]), (30, [20, 30])] {
            let mut rng = Rng::new(21 + n as u64);
            let (xs, y) = planted(&mut rng, n, &widths, 8);
            let outer = split(CvScheme::KFold { k: 5 }, n, None).unwrap();
            let inner = CvScheme::KFold { k: 4 };
            let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
            let cv = BandedRidgeCv::new::<Backend>(&views, &outer, inner, None, true).unwrap();
            for kind in [ScoreKind::R2, ScoreKind::Pearson] {
                let got = cv
                    .fit::<Backend>(y.view(), ndarray::array![[0.0, 1.0]].view(), &ALPHAS, kind)
                    .unwrap();
                let spec = SpectralSpec::ridge(ALPHAS.to_vec(), true, kind).unwrap();
                let ridge = NestedCv::new::<Backend>(xs[1].view(), &outer, inner, None, true)
                    .unwrap()
                    .fit::<Backend>(y.view(), &spec)
                    .unwrap();
                assert_eq!(got.fold_alpha, ridge.fold_alpha);
                let worst = (&got.fold_score - &ridge.fold_score)
                    .iter()
                    .fold(0.0f64, |m, d| m.max(d.abs()));
                assert!(worst < 1e-9, "{worst}");
                assert!(got.fold_split_score.slice(s![.., 0, ..]).iter().all(|&s| s == 0.0));
                assert!(got.gamma.row(1).iter().all(|&g| g == 1.0));
            }
        }
    }

    #[test]
    fn split_scores_sum_to_the_score() {
        for (n, widths) in [(60, vec![4, 6, 3]), (30, vec![15, 25])] {
            let mut rng = Rng::new(31 + n as u64);
            let (xs, y) = planted(&mut rng, n, &widths, 12);
            let outer = split(CvScheme::KFold { k: 3 }, n, None).unwrap();
            let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
            let candidates = simplex_candidates(widths.len(), 8, &[0.1, 1.0], 3);
            for intercept in [true, false] {
                let cv = BandedRidgeCv::new::<Backend>(
                    &views,
                    &outer,
                    CvScheme::KFold { k: 3 },
                    None,
                    intercept,
                )
                .unwrap();
                for kind in [ScoreKind::R2, ScoreKind::Pearson] {
                    let r = cv.fit::<Backend>(y.view(), candidates.view(), &ALPHAS, kind).unwrap();
                    let sums = r.fold_split_score.sum_axis(Axis(1));
                    let worst = (&sums - &r.fold_score).iter().fold(0.0f64, |m, d| m.max(d.abs()));
                    assert!(worst < 1e-12, "{kind:?} intercept {intercept}: {worst}");
                    let sums = r.split_score.sum_axis(Axis(0));
                    assert!((&sums - &r.score).iter().all(|d| d.abs() < 1e-12));
                    // the chosen weights stay on the simplex
                    assert!(r.gamma.sum_axis(Axis(0)).iter().all(|s| (s - 1.0).abs() < 1e-12));
                }
            }
        }
    }

    #[test]
    fn constant_voxel_gets_nan_scores() {
        let mut rng = Rng::new(41);
        let (xs, mut y) = planted(&mut rng, 40, &[3, 4], 3);
        y.column_mut(1).fill(7.0);
        let outer = split(CvScheme::KFold { k: 4 }, 40, None).unwrap();
        let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
        let cv =
            BandedRidgeCv::new::<Backend>(&views, &outer, CvScheme::KFold { k: 3 }, None, true)
                .unwrap();
        let candidates = simplex_candidates(2, 5, &[1.0], 1);
        for kind in [ScoreKind::R2, ScoreKind::Pearson] {
            let r = cv.fit::<Backend>(y.view(), candidates.view(), &ALPHAS, kind).unwrap();
            assert!(r.score[1].is_nan() && r.split_score.column(1).iter().all(|s| s.is_nan()));
            assert!(r.fold_candidate.column(1).iter().all(|&c| c == 0), "ties: first candidate");
            assert!(r.score[0].is_finite());
        }
    }

    #[test]
    fn results_do_not_depend_on_chunking() {
        let mut rng = Rng::new(5);
        let (xs, y) = planted(&mut rng, 40, &[3, 4], VOXEL_BATCH + 17);
        let outer = split(CvScheme::KFold { k: 4 }, 40, None).unwrap();
        let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
        let cv =
            BandedRidgeCv::new::<Backend>(&views, &outer, CvScheme::KFold { k: 3 }, None, true)
                .unwrap();
        let candidates = simplex_candidates(2, 4, &[0.1, 1.0], 2);
        let whole =
            cv.fit::<Backend>(y.view(), candidates.view(), &[0.1, 10.0], ScoreKind::R2).unwrap();
        let part = cv
            .fit::<Backend>(
                y.slice(s![.., VOXEL_BATCH..]),
                candidates.view(),
                &[0.1, 10.0],
                ScoreKind::R2,
            )
            .unwrap();
        assert_eq!(whole.fold_score.slice(s![.., VOXEL_BATCH..]), part.fold_score);
        assert_eq!(whole.fold_split_score.slice(s![.., .., VOXEL_BATCH..]), part.fold_split_score);
    }

    #[test]
    fn candidates_follow_the_scheme() {
        let c = simplex_candidates(3, 9, &[0.1, 1.0, f64::INFINITY], 11);
        assert_eq!(c.dim(), (9, 3));
        assert!(c.rows().into_iter().all(|r| (r.sum() - 1.0).abs() < 1e-12));
        assert!(c.iter().all(|&g| (0.0..=1.0).contains(&g)));
        // equal weights first, and for every infinite concentration (rows 2, 5, 8)
        for i in [0, 2, 5, 8] {
            assert!(c.row(i).iter().all(|&g| g == 1.0 / 3.0), "row {i}");
        }
        // the rest are random, reproducible, seed-dependent
        assert!(c.row(1).iter().all(|&g| g != 1.0 / 3.0));
        assert_eq!(c, simplex_candidates(3, 9, &[0.1, 1.0, f64::INFINITY], 11));
        assert_ne!(c, simplex_candidates(3, 9, &[0.1, 1.0, f64::INFINITY], 12));
        // a prefix of a longer list
        let long = simplex_candidates(3, 20, &[0.1, 1.0, f64::INFINITY], 11);
        assert_eq!(long.slice(s![..9, ..]), c);
        assert_eq!(simplex_candidates(2, 0, &[], 0).dim(), (0, 2));
        assert_eq!(simplex_candidates(4, 1, &[], 0), Array2::from_elem((1, 4), 0.25));
        // concentration 0.1 favours corners, 1.0 spreads (mean of the largest weight)
        let c = simplex_candidates(2, 2001, &[0.1, 1.0], 3);
        let top = |parity: usize| {
            (1..2001).filter(|i| i % 2 == parity).map(|i| c[(i, 0)].max(c[(i, 1)])).sum::<f64>()
                / 1000.0
        };
        assert!(top(0) > 0.9 && (top(1) - 0.75).abs() < 0.03, "{} {}", top(0), top(1));
    }

    #[test]
    #[should_panic(expected = "concentrations must be > 0")]
    fn bad_concentration_panics() {
        simplex_candidates(2, 3, &[1.0, 0.0], 0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = Array2::<f64>::zeros((10, 2));
        let x9 = Array2::<f64>::zeros((9, 2));
        let outer = split(CvScheme::KFold { k: 2 }, 10, None).unwrap();
        let inner = CvScheme::KFold { k: 2 };
        let new = |spaces: &[ArrayView2<'_, f64>]| {
            BandedRidgeCv::new::<Backend>(spaces, &outer, inner, None, true)
        };
        assert!(new(&[]).is_err());
        assert!(matches!(new(&[x.view(), x9.view()]), Err(KernelError::Shape(_))));
        assert!(new(&[x.view(), Array2::<f64>::zeros((10, 0)).view()]).is_err());
        assert!(BandedRidgeCv::new::<Backend>(&[x.view()], &[], inner, None, true).is_err());
        assert!(
            BandedRidgeCv::new::<Backend>(&[x.view()], &outer, inner, Some(&[1, 2]), true).is_err()
        );
        let far = [Fold { train: vec![0, 1, 2], test: vec![10] }];
        assert!(BandedRidgeCv::new::<Backend>(&[x.view()], &far, inner, None, true).is_err());

        let cv = new(&[x.view(), x.view()]).unwrap();
        let y = Array2::<f64>::zeros((10, 3));
        let good = ndarray::array![[0.5, 0.5]];
        let fit = |y: ArrayView2<'_, f64>, c: ArrayView2<'_, f64>, a: &[f64]| {
            cv.fit::<Backend>(y, c, a, ScoreKind::R2)
        };
        assert!(fit(y.view(), good.view(), &[1.0]).is_ok());
        assert!(matches!(
            fit(Array2::zeros((9, 3)).view(), good.view(), &[1.0]),
            Err(KernelError::Shape(_))
        ));
        assert!(fit(y.view(), Array2::zeros((0, 2)).view(), &[1.0]).is_err());
        assert!(matches!(
            fit(y.view(), ndarray::array![[1.0]].view(), &[1.0]),
            Err(KernelError::Shape(_))
        ));
        for bad in [[0.6, 0.6], [1.5, -0.5], [f64::NAN, 1.0], [0.0, 0.0]] {
            let c = Array2::from_shape_vec((1, 2), bad.to_vec()).unwrap();
            assert!(
                matches!(fit(y.view(), c.view(), &[1.0]), Err(KernelError::Parameter(_))),
                "{bad:?}"
            );
        }
        for bad in [&[][..], &[1.0, -1.0], &[f64::NAN], &[0.0], &[f64::INFINITY]] {
            assert!(
                matches!(fit(y.view(), good.view(), bad), Err(KernelError::Parameter(_))),
                "{bad:?}"
            );
        }
    }

    /// Release-mode timing of the brief's size: `cargo test --release -p brainfit-kernels
    /// banded_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, run by hand in release mode"]
    fn banded_timing() {
        let (n, v) = (1000, 512);
        let mut rng = Rng::new(1);
        let (xs, y) = planted(&mut rng, n, &[256, 256], v);
        let outer = split(CvScheme::KFold { k: 5 }, n, None).unwrap();
        let inner = CvScheme::KFold { k: 5 };
        let candidates = simplex_candidates(2, 20, &[0.1, 1.0], 0);
        let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
        let t = std::time::Instant::now();
        let cv = BandedRidgeCv::new::<Backend>(&views, &outer, inner, None, true).unwrap();
        let built = t.elapsed();
        let t = std::time::Instant::now();
        let r = cv.fit::<Backend>(y.view(), candidates.view(), &ALPHAS, ScoreKind::R2).unwrap();
        println!(
            "f64: new {built:.2?}, fit {:.2?} on {} threads; mean score {:.3}",
            t.elapsed(),
            threads(),
            r.score.mean().unwrap()
        );
        let xs32: Vec<Array2<f32>> = xs.iter().map(|x| x.mapv(|e| e as f32)).collect();
        let views32: Vec<_> = xs32.iter().map(|x| x.view()).collect();
        let y32 = y.mapv(|e| e as f32);
        let t = std::time::Instant::now();
        let cv = BandedRidgeCv::new::<Backend>(&views32, &outer, inner, None, true).unwrap();
        let built = t.elapsed();
        let t = std::time::Instant::now();
        let r = cv.fit::<Backend>(y32.view(), candidates.view(), &ALPHAS, ScoreKind::R2).unwrap();
        println!(
            "f32: new {built:.2?}, fit {:.2?} on {} threads; mean score {:.3}",
            t.elapsed(),
            threads(),
            r.score.mean().unwrap()
        );
    }
}
