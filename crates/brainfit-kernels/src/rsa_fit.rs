//! Fitting model RDMs to a brain RDM: reweighted RSA, unit weighting, variance partitioning and
//! noise ceilings.
//!
//! Plain RSA asks how well one fixed model RDM matches a brain RDM. A network layer or a set of
//! candidate models usually explains the brain only after its parts are weighted: some units or
//! some models matter more than others. Weights fitted to the brain RDM must then be evaluated
//! on data they were not fitted to, and the result read against how well *any* model could do
//! given the noise in the data. This module holds those pieces:
//!
//! - [`nnls`]: non-negative least squares, the Lawson–Hanson active-set method on the normal
//!   equations as Bro & de Jong (1997, *J. Chemometrics* 11(5), 393–401) arrange it, and as
//!   rsatoolbox's `model.fitter._nn_least_squares` implements it.
//! - Reweighted RSA (Khaligh-Razavi & Kriegeskorte 2014, *PLoS Comput Biol* 10(11): e1003915,
//!   doi:10.1371/journal.pcbi.1003915): the brain RDM as a non-negative combination of model
//!   RDMs plus a free intercept ([`fit_weights`]), cross-validated over *conditions*
//!   ([`condition_folds`], [`crossval_reweighted`]): the weights of a fold are fitted on the
//!   pairs of the training conditions and scored on the pairs of the held-out conditions, so
//!   that no held-out stimulus shapes the weights; [`crossval_unweighted`] scores the models
//!   summed with equal weights on the same pairs, the baseline reweighting must beat.
//! - Unit weighting (Peterson, Abbott & Griffiths 2018, *Cognitive Science* 42(8), 2648–2669,
//!   doi:10.1111/cogs.12670): the weighted squared distance `Σ_k w_k (x_ik − x_jk)²` is linear
//!   in the unit weights `w`, so each unit's squared differences are one model RDM
//!   ([`unit_regressors`]) and unit weighting is reweighted RSA over those regressors. With more
//!   units than a least-squares fit can take, weight principal components instead
//!   ([`principal_component_scores`]).
//! - RDM variance partitioning (Bankson, Hebart, Groen & Baker 2018, *NeuroImage* 178,
//!   172–182, doi:10.1016/j.neuroimage.2018.05.037): the R² of an ordinary least-squares fit of
//!   the brain RDM on every union of groups of models ([`rdm_r2`]), split by
//!   inclusion–exclusion into what each group explains uniquely and what groups share
//!   ([`partition_from_unions`], the set arithmetic shared with the encoding partition;
//!   [`rdm_variance_partition`]).
//! - Noise ceilings (Nili, Wingfield, Walther, Su, Marslen-Wilson & Kriegeskorte 2014, *PLoS
//!   Comput Biol* 10(4): e1003553, doi:10.1371/journal.pcbi.1003553): the range in which the
//!   true model's score is expected, from how well the subjects' RDMs predict each other
//!   ([`pool_rdms`], [`noise_ceiling`]; rsatoolbox's `boot_noise_ceiling`).
//!
//! RDMs are condensed (see [`crate::rdm`]) and in f64; several model RDMs are the rows of an
//! `[n_models, n_pairs]` array.
//!
//! # NaN policy
//! - Fits ([`fit_weights`], [`rdm_r2`]) drop a pair where the brain or any model used is NaN
//!   (or infinite); [`rdm_variance_partition`] drops a pair where any model of any band is, so
//!   that every union is fitted on the same pairs (calling [`rdm_r2`] per union inside
//!   [`partition_from_unions`] fits each union on its own pairs when models are NaN at
//!   different pairs).
//! - Scores follow [`crate::compare`]: NaN pairs are dropped jointly, and a comparison with
//!   fewer than 3 pairs or a constant RDM is NaN. Means over folds and over subjects skip NaN
//!   scores; all NaN gives NaN.

use crate::compare::{CompareMethod, compare, rank_average};
use crate::linalg::{Backend, LinalgBackend, matmul, solve_dense};
use crate::rdm::condensed_len;
use crate::rng::Rng;
use crate::{KernelError, Real, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

// ---------------------------------------------------------------------------------------------
// Non-negative least squares
// ---------------------------------------------------------------------------------------------

/// Passive-set updates [`nnls`] makes per regressor before it gives up (plus a constant 50).
/// Lawson–Hanson usually needs about one per regressor that ends up positive.
const NNLS_STEPS_PER_REGRESSOR: usize = 5;

/// Pivot tolerance of the passive-set solves (columns scaled to unit norm): a regressor whose
/// part outside the span of the regressors already in the fit is shorter than about 1e-6 of its
/// norm stays at zero.
const NNLS_PIVOT_TOLERANCE: f64 = 1e-12;

/// Non-negative least squares: `argmin_{x ≥ 0} ‖a x − y‖²` for `a` `[n_obs, n_reg]`.
///
/// Lawson & Hanson's active-set method (*Solving Least Squares Problems*, 1974, ch. 23) on the
/// normal equations, as Bro & de Jong (1997) and rsatoolbox's `_nn_least_squares` do: start with
/// every coefficient at zero; repeatedly free the coefficient whose gradient
/// `a_jᵀ (y − a x)` is largest and positive, solve the unconstrained least squares on the free
/// ("passive") coefficients, and step back along the segment to the first coefficient that would
/// turn negative when some do. Columns are scaled to unit norm first (the solution is invariant
/// to positive column scales, the normal equations are better conditioned), the gradient is
/// computed from the residual, the stopping threshold is relative
/// (`10 · ε · max(n_obs, n_reg) · ‖y‖`), and the final passive solve is refined twice against
/// the residual, so that the result agrees with a QR-based solver (scipy's `nnls`) to rounding on
/// well-conditioned problems.
///
/// When `a` has dependent columns the minimiser `x` need not be unique (`a x` is); a column
/// numerically in the span of the columns already in the fit stays at zero.
///
/// Errors: `y` and `a` disagree in length (`Shape`); a non-finite value (`Parameter`); no
/// convergence within `5 · n_reg + 50` passive-set updates (`Linalg`; not seen in practice).
pub fn nnls(a: ArrayView2<'_, f64>, y: ArrayView1<'_, f64>) -> Result<Array1<f64>> {
    let (m, k) = a.dim();
    if y.len() != m {
        return Err(KernelError::Shape(format!(
            "NNLS: the design has {m} rows (observations) but y has {} values",
            y.len()
        )));
    }
    if a.iter().chain(y.iter()).any(|v| !v.is_finite()) {
        return Err(KernelError::Parameter(
            "NNLS needs finite values: the design or y holds NaN or infinity".into(),
        ));
    }
    let mut x = Array1::<f64>::zeros(k);
    let norms: Vec<f64> = a.axis_iter(Axis(1)).map(|c| c.dot(&c).sqrt()).collect();
    if norms.iter().any(|n| !n.is_finite()) {
        return Err(KernelError::Parameter(
            "NNLS: a column's norm overflows f64; rescale the design".into(),
        ));
    }
    // Zero columns cannot help the fit: their coefficients stay 0.
    let cols: Vec<usize> = (0..k).filter(|&j| norms[j] > 0.0).collect();
    if cols.is_empty() || m == 0 {
        return Ok(x);
    }
    let unit = Array2::from_shape_fn((m, cols.len()), |(i, c)| a[(i, cols[c])] / norms[cols[c]]);
    let z = nnls_unit_columns(unit.view(), y)?;
    for (c, &j) in cols.iter().enumerate() {
        x[j] = z[c] / norms[j];
    }
    Ok(x)
}

/// [`nnls`] on finite `s` whose columns have unit norm.
fn nnls_unit_columns(s: ArrayView2<'_, f64>, y: ArrayView1<'_, f64>) -> Result<Array1<f64>> {
    let (m, k) = s.dim();
    let mut x = Array1::<f64>::zeros(k);
    let y_norm = y.dot(&y).sqrt();
    if y_norm == 0.0 {
        return Ok(x);
    }
    let gram = matmul::<Backend, f64>(s.t(), s);
    let sty = s.t().dot(&y);
    let tol = 10.0 * f64::EPSILON * m.max(k) as f64 * y_norm;
    let max_steps = NNLS_STEPS_PER_REGRESSOR * k + 50;
    let mut passive = vec![false; k];
    // Columns that could not enter the current passive set (numerically dependent on it).
    let mut blocked = vec![false; k];
    let mut steps = 0usize;
    loop {
        let gradient = s.t().dot(&(&y - &s.dot(&x)));
        let entering = (0..k)
            .filter(|&j| !passive[j] && !blocked[j] && gradient[j] > tol)
            .max_by(|&a, &b| gradient[a].total_cmp(&gradient[b]));
        let Some(j) = entering else { break };
        passive[j] = true;
        let mut first = true;
        loop {
            steps += 1;
            if steps > max_steps {
                return Err(KernelError::Linalg(format!(
                    "NNLS did not converge within {max_steps} active-set updates ({k} \
                     regressors); the design is probably extremely ill-conditioned"
                )));
            }
            let idx: Vec<usize> = (0..k).filter(|&i| passive[i]).collect();
            let solved = solve_on(&gram, &idx, idx.iter().map(|&i| sty[i]).collect());
            if first {
                first = false;
                let pos_j = idx.iter().position(|&i| i == j).expect("j is passive");
                if solved.as_ref().is_none_or(|z| z[pos_j] <= 0.0) {
                    // Entering j makes the system singular, or rounding gives it a wrong-signed
                    // coefficient: keep it out until the passive set changes.
                    passive[j] = false;
                    blocked[j] = true;
                    break;
                }
                blocked.iter_mut().for_each(|b| *b = false);
            }
            let Some(z) = solved else {
                return Err(KernelError::Linalg(
                    "NNLS: a subset of linearly independent columns became singular".into(),
                ));
            };
            if z.iter().all(|&v| v > 0.0) {
                for (c, &i) in idx.iter().enumerate() {
                    x[i] = z[c];
                }
                break;
            }
            // Move from x towards z until the first passive coefficient reaches zero.
            let mut alpha = f64::INFINITY;
            let mut hit = idx[0];
            for (c, &i) in idx.iter().enumerate() {
                if z[c] <= 0.0 {
                    let gap = x[i] - z[c];
                    let a = if gap > 0.0 { x[i] / gap } else { 0.0 };
                    if a < alpha {
                        (alpha, hit) = (a, i);
                    }
                }
            }
            for (c, &i) in idx.iter().enumerate() {
                x[i] += alpha * (z[c] - x[i]);
            }
            x[hit] = 0.0;
            for &i in &idx {
                if x[i] <= 0.0 {
                    x[i] = 0.0;
                    passive[i] = false;
                }
            }
        }
    }
    refine_passive(s, y, &gram, &passive, &mut x);
    Ok(x)
}

/// Solves the normal equations restricted to the columns `idx` (`rhs` restricted likewise);
/// None when numerically singular.
fn solve_on(gram: &Array2<f64>, idx: &[usize], rhs: Array1<f64>) -> Option<Array1<f64>> {
    let p = idx.len();
    let g = Array2::from_shape_fn((p, p), |(r, c)| gram[(idx[r], idx[c])]);
    solve_dense(g, rhs, NNLS_PIVOT_TOLERANCE)
}

/// Two steps of iterative refinement of the passive coefficients against the residual
/// (corrected semi-normal equations), kept only if every coefficient stays positive.
fn refine_passive(
    s: ArrayView2<'_, f64>,
    y: ArrayView1<'_, f64>,
    gram: &Array2<f64>,
    passive: &[bool],
    x: &mut Array1<f64>,
) {
    let idx: Vec<usize> = (0..passive.len()).filter(|&i| passive[i]).collect();
    if idx.is_empty() {
        return;
    }
    let mut refined = x.clone();
    for _ in 0..2 {
        let residual = &y - &s.dot(&refined);
        let g = s.t().dot(&residual);
        let Some(delta) = solve_on(gram, &idx, idx.iter().map(|&i| g[i]).collect()) else {
            return;
        };
        for (c, &i) in idx.iter().enumerate() {
            refined[i] += delta[c];
        }
    }
    if idx.iter().all(|&i| refined[i] > 0.0) {
        *x = refined;
    }
}

// ---------------------------------------------------------------------------------------------
// Reweighted RSA
// ---------------------------------------------------------------------------------------------

/// Non-negative weights of model RDMs and a free intercept, fitted to a brain RDM
/// ([`fit_weights`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RdmWeights {
    /// One non-negative weight per model RDM (row of `models`).
    pub weights: Array1<f64>,
    /// The unconstrained intercept.
    pub intercept: f64,
}

impl RdmWeights {
    /// The reweighted model RDM at `pairs`: `intercept + Σ_m weights[m] · models[m, pair]`
    /// (NaN where a model is NaN).
    ///
    /// Errors: `models` does not have one row per weight (`Shape`); a pair index is out of range
    /// (`Parameter`).
    pub fn predict(&self, models: ArrayView2<'_, f64>, pairs: &[usize]) -> Result<Array1<f64>> {
        if models.nrows() != self.weights.len() {
            return Err(KernelError::Shape(format!(
                "{} weights but {} model RDMs",
                self.weights.len(),
                models.nrows()
            )));
        }
        check_pairs(pairs, models.ncols())?;
        Ok(pairs.iter().map(|&p| self.intercept + models.column(p).dot(&self.weights)).collect())
    }
}

fn check_models(models: &ArrayView2<'_, f64>, n_pairs: usize) -> Result<()> {
    if models.ncols() != n_pairs {
        return Err(KernelError::Shape(format!(
            "the model RDMs have {} values each but the brain RDM has {n_pairs}",
            models.ncols()
        )));
    }
    Ok(())
}

fn check_pairs(pairs: &[usize], n_pairs: usize) -> Result<()> {
    if let Some(&p) = pairs.iter().find(|&&p| p >= n_pairs) {
        return Err(KernelError::Parameter(format!(
            "pair index {p} is out of range: the RDMs have {n_pairs} pairs"
        )));
    }
    Ok(())
}

/// Fits the brain RDM as a non-negative combination of model RDMs plus a free intercept, over
/// the pairs `pairs` (indices into the condensed RDMs; a pair listed twice counts twice).
///
/// `models` is `[n_models, n_pairs]`, `brain` `[n_pairs]`. A pair where the brain or any model
/// is NaN (or infinite) is dropped. The intercept is unconstrained, exactly: the brain and every
/// model are centred over the pairs used, the centred brain is fitted by [`nnls`] on the centred
/// models, and `intercept = mean(brain) − Σ_m w_m mean(model_m)`. The weights equal rsatoolbox's
/// `fit_regress_nn(..., method='corr')` up to its normalisation to unit norm
/// (Khaligh-Razavi & Kriegeskorte 2014).
///
/// Errors: lengths disagree (`Shape`); a pair index out of range, fewer than 2 usable pairs, or
/// NNLS failing (`Parameter`/`Linalg`).
pub fn fit_weights(
    models: ArrayView2<'_, f64>,
    brain: ArrayView1<'_, f64>,
    pairs: &[usize],
) -> Result<RdmWeights> {
    check_models(&models, brain.len())?;
    check_pairs(pairs, brain.len())?;
    let used: Vec<usize> = pairs
        .iter()
        .copied()
        .filter(|&p| brain[p].is_finite() && models.column(p).iter().all(|v| v.is_finite()))
        .collect();
    if used.len() < 2 {
        return Err(KernelError::Parameter(format!(
            "fitting model weights needs at least 2 pairs where the brain RDM and every model \
             are finite; {} of the {} pairs given are",
            used.len(),
            pairs.len()
        )));
    }
    let n = used.len() as f64;
    let k = models.nrows();
    let y_mean = used.iter().map(|&p| brain[p]).sum::<f64>() / n;
    let x_mean: Array1<f64> = models
        .axis_iter(Axis(0))
        .map(|row| used.iter().map(|&p| row[p]).sum::<f64>() / n)
        .collect();
    let x = Array2::from_shape_fn((used.len(), k), |(i, m)| models[(m, used[i])] - x_mean[m]);
    let y: Array1<f64> = used.iter().map(|&p| brain[p] - y_mean).collect();
    let weights = nnls(x.view(), y.view())?;
    let intercept = y_mean - x_mean.dot(&weights);
    Ok(RdmWeights { weights, intercept })
}

/// Assigns each of `n_conditions` conditions to one of `k` folds: the conditions are shuffled
/// with the crate's generator seeded with `seed` ([`Rng::new`], [`Rng::shuffle`]), then split
/// into `k` contiguous runs of `⌊n/k⌋` or `⌈n/k⌉` conditions (the larger ones first). Returns
/// each condition's fold.
///
/// Errors (`CrossValidation`): `k < 2`, or a fold would hold fewer than 3 conditions (3
/// conditions make the 3 pairs a held-out comparison needs).
pub fn condition_folds(n_conditions: usize, k: usize, seed: u64) -> Result<Vec<usize>> {
    if k < 2 {
        return Err(KernelError::CrossValidation(format!(
            "cross-validation over conditions needs at least 2 folds, got {k}"
        )));
    }
    if n_conditions / k < 3 {
        return Err(KernelError::CrossValidation(format!(
            "{n_conditions} conditions cannot be split into {k} folds of at least 3 conditions"
        )));
    }
    let mut order: Vec<usize> = (0..n_conditions).collect();
    Rng::new(seed).shuffle(&mut order);
    let mut folds = vec![0; n_conditions];
    for (position, &condition) in order.iter().enumerate() {
        folds[condition] = position * k / n_conditions;
    }
    Ok(folds)
}

/// Cross-validated reweighted RSA ([`crossval_reweighted`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReweightedCv {
    /// Mean over folds of the held-out score (NaN fold scores skipped; NaN if all are).
    pub mean: f64,
    /// Each fold's held-out score: the reweighted prediction of the fold's test pairs compared
    /// with the brain RDM there.
    pub fold_scores: Vec<f64>,
    /// Each fold's weights, fitted on its training pairs only. (The weights to report, fitted
    /// on all pairs, are [`fit_weights`] over every pair: permutation nulls need only the mean,
    /// so they are not fitted here.)
    pub fold_weights: Vec<RdmWeights>,
}

/// The pairs of cross-validation over conditions: for each fold, the training pairs (both
/// conditions outside it) and the test pairs (both inside it). They depend on the folds only,
/// so a caller that cross-validates many brain RDMs (centres, time points, permutations) makes
/// them once.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldPairs {
    n_conditions: usize,
    folds: Vec<(Vec<usize>, Vec<usize>)>,
}

impl FoldPairs {
    /// The pairs of `folds` (condition `c`'s fold, `0..k`).
    ///
    /// Errors: `folds` not `n_conditions` long (`Shape`); fewer than 2 folds, or a fold with
    /// fewer than 3 conditions (`CrossValidation`, naming the fold).
    pub fn new(n_conditions: usize, folds: &[usize]) -> Result<Self> {
        if folds.len() != n_conditions {
            return Err(KernelError::Shape(format!(
                "{} fold labels for {n_conditions} conditions",
                folds.len()
            )));
        }
        let k = folds.iter().max().map_or(0, |&f| f + 1);
        if k < 2 {
            return Err(KernelError::CrossValidation(format!(
                "cross-validation over conditions needs at least 2 folds, the labels make {k}"
            )));
        }
        let mut sizes = vec![0usize; k];
        for &f in folds {
            sizes[f] += 1;
        }
        if let Some((f, &size)) = sizes.iter().enumerate().find(|(_, s)| **s < 3) {
            return Err(KernelError::CrossValidation(format!(
                "fold {f} holds {size} conditions; a held-out comparison needs at least 3"
            )));
        }
        let mut out = vec![(Vec::new(), Vec::new()); k];
        let mut p = 0;
        for i in 0..n_conditions {
            for j in i + 1..n_conditions {
                if folds[i] == folds[j] {
                    out[folds[i]].1.push(p);
                }
                for (f, (train, _)) in out.iter_mut().enumerate() {
                    if folds[i] != f && folds[j] != f {
                        train.push(p);
                    }
                }
                p += 1;
            }
        }
        Ok(FoldPairs { n_conditions, folds: out })
    }
}

/// Checks that `brain` and every row of `models` are condensed RDMs of `n_conditions`.
fn check_rdms(
    models: &ArrayView2<'_, f64>,
    brain: &ArrayView1<'_, f64>,
    n_conditions: usize,
) -> Result<()> {
    let n_pairs = condensed_len(n_conditions);
    if brain.len() != n_pairs {
        return Err(KernelError::Shape(format!(
            "the brain RDM has {} values; {n_conditions} conditions have {n_pairs} pairs",
            brain.len()
        )));
    }
    check_models(models, n_pairs)
}

/// How held-out pairs are predicted from the model RDMs: weights fitted on the training pairs
/// ([`fit_weights`]), or every model with weight 1 and no intercept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// Non-negative weights and an intercept fitted per fold.
    Fitted,
    /// The models summed with equal weights (the baseline).
    Equal,
}

/// Cross-validation over conditions: each fold's held-out prediction and the brain's values on
/// the same (test) pairs, `(predicted, truth)`, with the weights that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldOut {
    /// Per fold, `(predicted, truth)` over its test pairs.
    pub folds: Vec<(Array1<f64>, Array1<f64>)>,
    /// Per fold, the weights (fitted on its training pairs, or the equal ones).
    pub weights: Vec<RdmWeights>,
}

impl HeldOut {
    /// Each fold's score: the prediction compared with the brain by `method`.
    pub fn fold_scores(&self, method: CompareMethod) -> Result<Vec<f64>> {
        self.folds.iter().map(|(p, t)| compare(p.view(), t.view(), method)).collect()
    }

    /// The mean over folds of [`HeldOut::fold_scores`] (NaN scores skipped; NaN if all are).
    pub fn score(&self, method: CompareMethod) -> Result<f64> {
        Ok(nan_skipping_mean(&self.fold_scores(method)?))
    }
}

/// The held-out predictions of cross-validation over conditions on the pairs `pairs` (see
/// [`crossval_reweighted`] for the folds and the pairs); one call serves every comparison
/// method.
///
/// Errors: as [`crossval_reweighted`], less those of [`compare`] and of the folds.
pub fn held_out(
    models: ArrayView2<'_, f64>,
    brain: ArrayView1<'_, f64>,
    pairs: &FoldPairs,
    weighting: Weighting,
) -> Result<HeldOut> {
    check_rdms(&models, &brain, pairs.n_conditions)?;
    let mut out = HeldOut { folds: Vec::with_capacity(pairs.folds.len()), weights: Vec::new() };
    for (f, (train, test)) in pairs.folds.iter().enumerate() {
        let weights = match weighting {
            Weighting::Fitted => fit_weights(models, brain, train).map_err(|e| match e {
                KernelError::Parameter(m) => KernelError::CrossValidation(format!("fold {f}: {m}")),
                other => other,
            })?,
            Weighting::Equal => {
                RdmWeights { weights: Array1::ones(models.nrows()), intercept: 0.0 }
            }
        };
        let predicted = weights.predict(models, test)?;
        let truth: Array1<f64> = test.iter().map(|&p| brain[p]).collect();
        out.folds.push((predicted, truth));
        out.weights.push(weights);
    }
    Ok(out)
}

/// Reweighted RSA cross-validated over conditions (Khaligh-Razavi & Kriegeskorte 2014).
///
/// `models` `[n_models, n_pairs]` and `brain` `[n_pairs]` are condensed RDMs of `n_conditions`
/// conditions; `folds[c]` is condition `c`'s fold (`0..k`, e.g. from [`condition_folds`]). For
/// each fold `f`: the training pairs are those whose two conditions are both outside `f`, the
/// test pairs those whose two conditions are both in `f` (pairs across the boundary are used
/// by neither); the weights are fitted on the training pairs ([`fit_weights`]); the prediction
/// `intercept + Σ w · model` on the test pairs is compared with the brain there
/// ([`compare`] with `method`). A held-out condition's dissimilarities never reach the weights
/// that score it. The test pairs are the condensed RDM of the fold's conditions (in ascending
/// order), so the methods that need the conditions' structure (`corr_cov`, `bures`, CKA)
/// compare the held-out conditions' RDMs. ([`held_out`] serves several methods at once.)
///
/// Errors: lengths disagree (`Shape`); fewer than 2 folds, an empty fold label below the
/// largest, a fold with fewer than 3 conditions, or a fold whose training pairs cannot be
/// fitted (`CrossValidation`, naming the fold); the errors of [`compare`].
pub fn crossval_reweighted(
    models: ArrayView2<'_, f64>,
    brain: ArrayView1<'_, f64>,
    n_conditions: usize,
    folds: &[usize],
    method: CompareMethod,
) -> Result<ReweightedCv> {
    check_rdms(&models, &brain, n_conditions)?;
    let pairs = FoldPairs::new(n_conditions, folds)?;
    let held = held_out(models, brain, &pairs, Weighting::Fitted)?;
    let fold_scores = held.fold_scores(method)?;
    Ok(ReweightedCv {
        mean: nan_skipping_mean(&fold_scores),
        fold_scores,
        fold_weights: held.weights,
    })
}

/// The baseline of [`crossval_reweighted`]: the model RDMs summed with equal weights
/// (`Σ_m models[m]`, nothing fitted), compared with the brain on the same held-out pairs of
/// the same folds; the mean over folds of the scores (NaN scores skipped; NaN if all are). For
/// unit regressors ([`unit_regressors`]) the sum is the plain squared Euclidean distance, so
/// the difference to the reweighted score is what unit weighting gains.
///
/// Errors: as [`crossval_reweighted`].
pub fn crossval_unweighted(
    models: ArrayView2<'_, f64>,
    brain: ArrayView1<'_, f64>,
    n_conditions: usize,
    folds: &[usize],
    method: CompareMethod,
) -> Result<f64> {
    check_rdms(&models, &brain, n_conditions)?;
    let pairs = FoldPairs::new(n_conditions, folds)?;
    held_out(models, brain, &pairs, Weighting::Equal)?.score(method)
}

/// Mean of the non-NaN values; NaN if there are none.
fn nan_skipping_mean(v: &[f64]) -> f64 {
    let (sum, count) =
        v.iter().filter(|x| !x.is_nan()).fold((0.0, 0usize), |(s, c), &x| (s + x, c + 1));
    if count == 0 { f64::NAN } else { sum / count as f64 }
}

// ---------------------------------------------------------------------------------------------
// Unit weighting
// ---------------------------------------------------------------------------------------------

/// One model RDM per unit: row `k` holds `(x_ik − x_jk)²` for every pair `(i, j)` (condensed
/// order), from activations `x` `[n_conditions, n_units]`. Result `[n_units, n_pairs]`, in f64.
///
/// The weighted squared distance `d_w(i, j) = Σ_k w_k (x_ik − x_jk)²` is the RDM of the
/// weighted similarity `S = X diag(w) Xᵀ` (`d = S_ii + S_jj − 2 S_ij`) and is linear in `w`:
/// `d_w = wᵀ · unit_regressors(x)`. Unit weighting (Peterson, Abbott & Griffiths 2018) is
/// therefore [`crossval_reweighted`] over these regressors. The array has `n_units · n_pairs`
/// values and the fit's cost grows with the cube of the number of units: for a layer with
/// thousands of units, weight its principal components instead
/// ([`principal_component_scores`]).
pub fn unit_regressors<T: Real>(x: ArrayView2<'_, T>) -> Array2<f64> {
    let (n, n_units) = x.dim();
    let mut out = Array2::<f64>::zeros((n_units, condensed_len(n)));
    for (column, mut row) in x.axis_iter(Axis(1)).zip(out.axis_iter_mut(Axis(0))) {
        let values: Vec<f64> = column.iter().map(|v| v.as_f64()).collect();
        let mut pairs = row.iter_mut();
        for (i, &a) in values.iter().enumerate() {
            for &b in &values[i + 1..] {
                let d = a - b;
                *pairs.next().expect("n(n-1)/2 pairs") = d * d;
            }
        }
    }
    out
}

/// The first `k` principal-component scores of the conditions: `x` `[n_conditions, n_units]`
/// with each column centred, projected on its `k` leading principal axes. Result
/// `[n_conditions, k]`, in f64, the columns in decreasing order of variance.
///
/// Computed from the eigendecomposition of the `n × n` Gram matrix `X_c X_cᵀ = U Λ Uᵀ`
/// (cheap when units outnumber conditions): the scores are `U_k Λ_k^{1/2}`, which equals
/// `X_c V_k` of the SVD `X_c = U S Vᵀ`. Sign convention: each score column's entry of largest
/// absolute value (the first such entry on ties) is positive (scikit-learn's `svd_flip` on
/// `U`), so results do not depend on the eigensolver's signs.
///
/// Errors: fewer than 2 conditions (`Shape`); a non-finite value, `k == 0`, or `k` above the
/// numerical rank of the centred data (eigenvalues above `λ_max · max(n, p) · 100 ε`)
/// (`Parameter`); the eigendecomposition failing (`Linalg`).
pub fn principal_component_scores<T: Real>(x: ArrayView2<'_, T>, k: usize) -> Result<Array2<f64>> {
    let (n, p) = x.dim();
    if n < 2 {
        return Err(KernelError::Shape(format!(
            "principal components need at least 2 conditions, got {n}"
        )));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(KernelError::Parameter(
            "principal components need finite activations: the data hold NaN or infinity".into(),
        ));
    }
    if k == 0 {
        return Err(KernelError::Parameter("ask for at least 1 principal component".into()));
    }
    let mut xc = x.mapv(Real::as_f64);
    for mut column in xc.axis_iter_mut(Axis(1)) {
        let mean = column.sum() / n as f64;
        column.mapv_inplace(|v| v - mean);
    }
    let gram = matmul::<Backend, f64>(xc.view(), xc.t());
    let (values, vectors) = Backend::eigh(gram.view())?;
    let largest = values[n - 1].max(0.0);
    let cutoff = largest * n.max(p) as f64 * 100.0 * f64::EPSILON;
    let rank = values.iter().filter(|&&l| l > cutoff).count();
    if k > rank {
        return Err(KernelError::Parameter(format!(
            "asked for {k} principal components; the centred data ({n} conditions, {p} units) \
             have rank {rank}"
        )));
    }
    let mut scores = Array2::<f64>::zeros((n, k));
    for (c, mut column) in scores.axis_iter_mut(Axis(1)).enumerate() {
        let e = n - 1 - c;
        let scale = values[e].sqrt();
        column.assign(&vectors.column(e).mapv(|v| v * scale));
        let mut extreme = 0.0f64;
        for &v in &column {
            if v.abs() > extreme.abs() {
                extreme = v;
            }
        }
        if extreme < 0.0 {
            column.mapv_inplace(|v| -v);
        }
    }
    Ok(scores)
}

// ---------------------------------------------------------------------------------------------
// Variance partitioning
// ---------------------------------------------------------------------------------------------

/// In-sample R² of an ordinary least-squares fit, with an intercept, of the brain RDM on the
/// model RDMs `models[rows]` (`models` `[n_models, n_pairs]`).
///
/// A pair where the brain or a chosen model is NaN (or infinite) is dropped. `rows` empty gives
/// 0 (R² of the empty set); fewer than 3 usable pairs, or a brain RDM constant over them, give
/// NaN. Models that are linear combinations of the ones before them (to 1e-10 relative) add
/// nothing, so the R² is that of the projection on their span, as with `numpy.linalg.lstsq`.
/// Inputs it cannot compute on — `models` not `brain.len()` wide, a row out of range — also
/// give NaN (a pure function, for use inside [`partition_from_unions`]'s closure; check them
/// upstream, or use [`rdm_variance_partition`], which reports them as errors).
pub fn rdm_r2(brain: ArrayView1<'_, f64>, models: ArrayView2<'_, f64>, rows: &[usize]) -> f64 {
    if check_models(&models, brain.len()).is_err() || check_rows(rows, models.nrows()).is_err() {
        return f64::NAN;
    }
    let used: Vec<usize> = (0..brain.len())
        .filter(|&p| brain[p].is_finite() && rows.iter().all(|&r| models[(r, p)].is_finite()))
        .collect();
    r2_on_pairs(brain, models, rows, &used)
}

fn check_rows(rows: &[usize], n_models: usize) -> Result<()> {
    if let Some(&r) = rows.iter().find(|&&r| r >= n_models) {
        return Err(KernelError::Parameter(format!(
            "model index {r} is out of range: there are {n_models} model RDMs"
        )));
    }
    Ok(())
}

/// R² of the OLS fit with intercept on finite pairs `used`: the centred brain projected on the
/// centred models, orthonormalised by Gram–Schmidt applied twice ("twice is enough").
fn r2_on_pairs(
    brain: ArrayView1<'_, f64>,
    models: ArrayView2<'_, f64>,
    rows: &[usize],
    used: &[usize],
) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    if used.len() < 3 {
        return f64::NAN;
    }
    let centred = |v: Vec<f64>| -> Vec<f64> {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        v.into_iter().map(|a| a - mean).collect()
    };
    let dot = |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(u, v)| u * v).sum() };
    let y = centred(used.iter().map(|&p| brain[p]).collect());
    let total = dot(&y, &y);
    if total == 0.0 {
        return f64::NAN;
    }
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(rows.len());
    let mut explained = 0.0;
    for &r in rows {
        let mut v = centred(used.iter().map(|&p| models[(r, p)]).collect());
        let norm0 = dot(&v, &v).sqrt();
        if norm0 == 0.0 {
            continue;
        }
        for _ in 0..2 {
            for q in &basis {
                let c = dot(q, &v);
                v.iter_mut().zip(q).for_each(|(a, b)| *a -= c * b);
            }
        }
        let norm = dot(&v, &v).sqrt();
        if norm <= 1e-10 * norm0 {
            continue;
        }
        v.iter_mut().for_each(|a| *a /= norm);
        explained += dot(&v, &y).powi(2);
        basis.push(v);
    }
    explained / total
}

/// Most bands [`partition_from_unions`] computes (`2^16 − 1` subsets, `3^16` map additions).
pub const MAX_PARTITION_BANDS: usize = 16;

/// Variance partitioning's set arithmetic: from the R² of every union of `n_bands` bands
/// (feature spaces, or groups of model RDMs), the R² each subset `S` of bands shares and no
/// band outside it explains — for a single band, its unique R² — by inclusion–exclusion over
/// the complements:
///
/// `P(S) = Σ_{W ⊆ S} (−1)^{|S|−|W|+1} R²(T ∖ W)`, with `T` all bands and `R²(∅) = 0`.
///
/// For two bands a, b: `P(a) = R²(a∪b) − R²(b)`, `P(b) = R²(a∪b) − R²(a)`,
/// `P(a,b) = R²(a) + R²(b) − R²(a∪b)`; the `P(S)` of all subsets sum to `R²(T)`.
///
/// Subsets are bitmasks, bit `b` for band `b`. `r2_of_union(mask)` returns the R² of the union
/// of the bands in `mask` (never called with 0) as a map, e.g. one value per voxel (the encoding
/// merge) or a single value (an RDM, [`rdm_variance_partition`]); it is called once per
/// non-empty mask, masks ascending. Returns `(mask, P(mask))` for every non-empty subset, masks
/// ascending. Estimates are not clipped: a negative one means the R² are not additive (noise,
/// or suppression between the bands).
///
/// A pure function: with no bands, or more than [`MAX_PARTITION_BANDS`], it returns an empty
/// list (nothing is called); maps of different lengths make the result as long as the longest,
/// and a position a map lacks counts as NaN.
pub fn partition_from_unions<F>(n_bands: usize, mut r2_of_union: F) -> Vec<(u32, Array1<f64>)>
where
    F: FnMut(u32) -> Array1<f64>,
{
    if n_bands == 0 || n_bands > MAX_PARTITION_BANDS {
        return Vec::new();
    }
    let all: u32 = (1u32 << n_bands) - 1;
    let mut unions: Vec<Array1<f64>> = Vec::with_capacity(all as usize + 1);
    unions.push(Array1::zeros(0)); // R²(∅), sized below
    unions.extend((1..=all).map(&mut r2_of_union));
    let len = unions.iter().map(Array1::len).max().unwrap_or(0);
    for map in &mut unions[1..] {
        if map.len() < len {
            let mut padded = Array1::from_elem(len, f64::NAN);
            padded.slice_mut(ndarray::s![..map.len()]).assign(map);
            *map = padded;
        }
    }
    unions[0] = Array1::zeros(len);
    let mut out = Vec::with_capacity(all as usize);
    for s in 1..=all {
        let mut value = Array1::<f64>::zeros(len);
        // W runs over the subsets of S (s, its submasks in decreasing order, then 0).
        let mut w = s;
        loop {
            let exponent = s.count_ones() - w.count_ones() + 1;
            let sign = if exponent % 2 == 0 { 1.0 } else { -1.0 };
            value.scaled_add(sign, &unions[(all & !w) as usize]);
            if w == 0 {
                break;
            }
            w = (w - 1) & s;
        }
        out.push((s, value));
    }
    out
}

/// RDM variance partitioning (Bankson, Hebart et al. 2018): the brain RDM's R² split into what
/// each group ("band") of model RDMs explains uniquely and what groups share.
///
/// `bands[b]` lists the rows of `models` `[n_models, n_pairs]` in band `b` (a model may sit in
/// several bands). The R² of every union of bands is [`rdm_r2`] on the union's models, all on
/// the same pairs: those where the brain and every model of every band are finite. Returns
/// `(mask, P(mask))` as [`partition_from_unions`] (bit `b` for `bands[b]`).
///
/// Errors: `models` not `brain.len()` wide (`Shape`); no bands, more than
/// [`MAX_PARTITION_BANDS`], or a model index out of range (`Parameter`).
pub fn rdm_variance_partition<B: AsRef<[usize]>>(
    brain: ArrayView1<'_, f64>,
    models: ArrayView2<'_, f64>,
    bands: &[B],
) -> Result<Vec<(u32, f64)>> {
    check_models(&models, brain.len())?;
    if bands.is_empty() || bands.len() > MAX_PARTITION_BANDS {
        return Err(KernelError::Parameter(format!(
            "variance partitioning takes 1 to {MAX_PARTITION_BANDS} bands, got {}",
            bands.len()
        )));
    }
    for band in bands {
        check_rows(band.as_ref(), models.nrows())?;
    }
    let used: Vec<usize> = (0..brain.len())
        .filter(|&p| {
            brain[p].is_finite()
                && bands.iter().all(|b| b.as_ref().iter().all(|&r| models[(r, p)].is_finite()))
        })
        .collect();
    let r2_of_union = |mask: u32| -> Array1<f64> {
        let rows: Vec<usize> = bands
            .iter()
            .enumerate()
            .filter(|(b, _)| mask & (1 << b) != 0)
            .flat_map(|(_, band)| band.as_ref().iter().copied())
            .collect();
        Array1::from_elem(1, r2_on_pairs(brain, models, &rows, &used))
    };
    let parts = partition_from_unions(bands.len(), r2_of_union);
    Ok(parts.into_iter().map(|(mask, v)| (mask, v[0])).collect())
}

// ---------------------------------------------------------------------------------------------
// Noise ceilings
// ---------------------------------------------------------------------------------------------

/// The RDM that best represents a group of RDMs `[n_rdms, n_pairs]` under a comparison method,
/// as rsatoolbox's `util.inference_util.pool_rdm`:
///
/// - `spearman`, `rho_a`, `kendall_tau_a`, `tau_b`: the mean of the RDMs' average ranks (each
///   RDM ranked over its non-NaN pairs; rsatoolbox warns that the tau ceilings are "based on
///   averaged ranks");
/// - `pearson` (`'corr'`), `corr_cov`: each RDM z-scored (population standard deviation over
///   its non-NaN pairs), the mean, minus its minimum;
/// - `cosine`: each RDM divided by its root mean square, the mean;
/// - `bures` and the CKAs (rsatoolbox's `pool_rdm` has none of these): the plain mean.
///
/// Means are NaN-aware: a pair's mean is over the RDMs that are not NaN there (NaN if none is;
/// rsatoolbox takes the first RDM's NaN positions). An RDM with no normalised form (constant for
/// `pearson`/`corr_cov`, all zero for `cosine`) is NaN after normalising and so left out.
pub fn pool_rdms(rdms: ArrayView2<'_, f64>, method: CompareMethod) -> Array1<f64> {
    let pooling = Pooling::of(method);
    let n_pairs = rdms.ncols();
    let mut sum = vec![0.0; n_pairs];
    let mut count = vec![0usize; n_pairs];
    for rdm in rdms.axis_iter(Axis(0)) {
        let normalised = pooling.normalise(rdm);
        for ((s, c), v) in sum.iter_mut().zip(&mut count).zip(&normalised) {
            if !v.is_nan() {
                *s += v;
                *c += 1;
            }
        }
    }
    let mut pooled: Array1<f64> = sum
        .iter()
        .zip(&count)
        .map(|(&s, &c)| if c == 0 { f64::NAN } else { s / c as f64 })
        .collect();
    if pooling == Pooling::ZScore {
        let min = pooled.iter().filter(|v| !v.is_nan()).fold(f64::INFINITY, |m, &v| m.min(v));
        if min.is_finite() {
            pooled.mapv_inplace(|v| v - min);
        }
    }
    pooled
}

/// How [`pool_rdms`] normalises each RDM before averaging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    /// Average ranks.
    Ranks,
    /// z-scores (and the mean shifted to a minimum of 0).
    ZScore,
    /// Divided by the root mean square.
    Rms,
    /// As they are.
    Plain,
}

impl Pooling {
    fn of(method: CompareMethod) -> Self {
        match method {
            CompareMethod::Spearman
            | CompareMethod::RhoA
            | CompareMethod::KendallTauA
            | CompareMethod::TauB => Pooling::Ranks,
            CompareMethod::Pearson | CompareMethod::CorrCov => Pooling::ZScore,
            CompareMethod::Cosine => Pooling::Rms,
            CompareMethod::Bures
            | CompareMethod::CkaLinear
            | CompareMethod::CkaLinearUnbiased
            | CompareMethod::CkaRbf
            | CompareMethod::CkaRbfUnbiased => Pooling::Plain,
        }
    }

    /// One RDM's contribution to [`pool_rdms`] (NaN stays NaN).
    fn normalise(self, rdm: ArrayView1<'_, f64>) -> Array1<f64> {
        let valid: Vec<f64> = rdm.iter().copied().filter(|v| !v.is_nan()).collect();
        let n = valid.len() as f64;
        match self {
            Pooling::Ranks => {
                let ranks = rank_average(ArrayView1::from(&valid));
                let mut next = ranks.iter();
                rdm.iter()
                    .map(
                        |&v| if v.is_nan() { v } else { *next.next().expect("one rank per value") },
                    )
                    .collect()
            }
            Pooling::ZScore => {
                let mean = valid.iter().sum::<f64>() / n;
                let sd = (valid.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
                rdm.mapv(|v| (v - mean) / sd)
            }
            Pooling::Rms => {
                let rms = (valid.iter().map(|v| v * v).sum::<f64>() / n).sqrt();
                rdm.mapv(|v| v / rms)
            }
            Pooling::Plain => rdm.to_owned(),
        }
    }
}

/// Nili et al. (2014) noise ceiling of a group of RDMs `[n_rdms, n_pairs]` (e.g. one per
/// subject) under `method`: `(lower, upper)`, the range in which the expected score of the
/// unknown true model lies.
///
/// - `upper`: the mean over RDMs of the comparison of each RDM with the pool of all of them
///   (itself included), an overestimate;
/// - `lower`: the mean over RDMs of the comparison of each RDM with the pool of all the others
///   (leave one out), an underestimate.
///
/// The pools are [`pool_rdms`], the comparisons [`compare`]; the result equals rsatoolbox's
/// `boot_noise_ceiling(rdms, method)`. A comparison that is NaN (e.g. a constant RDM) is left
/// out of the means (rsatoolbox's mean would be NaN).
///
/// Errors: fewer than 2 RDMs (`Parameter`); RDMs without pairs (`Shape`); the errors of
/// [`compare`].
pub fn noise_ceiling(rdms: ArrayView2<'_, f64>, method: CompareMethod) -> Result<(f64, f64)> {
    let (n, n_pairs) = rdms.dim();
    if n < 2 {
        return Err(KernelError::Parameter(format!(
            "a noise ceiling compares RDMs with each other: it needs at least 2, got {n}"
        )));
    }
    if n_pairs == 0 {
        return Err(KernelError::Shape("the RDMs hold no dissimilarities".into()));
    }
    let everyone = pool_rdms(rdms, method);
    let mut upper = Vec::with_capacity(n);
    let mut lower = Vec::with_capacity(n);
    for s in 0..n {
        let others: Vec<usize> = (0..n).filter(|&i| i != s).collect();
        let rest = pool_rdms(rdms.select(Axis(0), &others).view(), method);
        upper.push(compare(everyone.view(), rdms.row(s), method)?);
        lower.push(compare(rest.view(), rdms.row(s), method)?);
    }
    Ok((nan_skipping_mean(&lower), nan_skipping_mean(&upper)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdm::npy_fixture as fx;
    use crate::rdm::{RdmMethod, pair_index, rdm, square_to_condensed};
    use ndarray::{Array3, s};
    use std::path::PathBuf;

    /// Path of a file in `tests/fixtures/rsa_fit/` (made by make_fixtures_rsa_fit.py).
    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/rsa_fit/"))
            .join(name)
    }

    fn array1(name: &str) -> Array1<f64> {
        let (shape, v) = fx::f64s(&fixture(name));
        assert_eq!(shape.len(), 1, "{name}");
        Array1::from(v)
    }

    fn array2(path: &std::path::Path) -> Array2<f64> {
        let (shape, v) = fx::f64s(path);
        assert_eq!(shape.len(), 2, "{path:?}");
        Array2::from_shape_vec((shape[0], shape[1]), v).expect("shape")
    }

    /// The rows of a CSV fixture with a header line, as strings.
    fn csv_rows(name: &str) -> Vec<Vec<String>> {
        let path = fixture(name);
        let mut reader = csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        reader
            .records()
            .map(|r| r.expect("a CSV record").iter().map(str::to_owned).collect())
            .collect()
    }

    fn max_abs_diff(a: ArrayView1<'_, f64>, b: ArrayView1<'_, f64>) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
    }

    /// The 8 model RDMs (condensed, `[8, 4186]`) and the pooled human IT RDM.
    fn real_data() -> (Array2<f64>, Array1<f64>) {
        let (shape, v) = fx::f64s(&fx::krieg("model_rdms.npy"));
        let squares = Array3::from_shape_vec((shape[0], shape[1], shape[2]), v).unwrap();
        let n_pairs = condensed_len(shape[1]);
        let mut models = Array2::zeros((shape[0], n_pairs));
        for (m, square) in squares.axis_iter(Axis(0)).enumerate() {
            models.row_mut(m).assign(&square_to_condensed(square, "model").unwrap());
        }
        let (_, human) = fx::f64s(&fx::krieg("human_it_rdm.npy"));
        (models, Array1::from(human))
    }

    fn method_named(name: &str) -> CompareMethod {
        CompareMethod::parse(name).unwrap()
    }

    // ----- NNLS -----------------------------------------------------------------------------

    #[test]
    fn nnls_matches_scipy() {
        let cases = csv_rows("nnls_cases.csv");
        assert_eq!(cases.len(), 5);
        let mut worst = (0.0f64, 0.0f64);
        for row in cases {
            let (name, unique, rnorm): (&str, bool, f64) =
                (&row[0], row[3] == "1", row[4].parse().unwrap());
            let a = array2(&fixture(&format!("nnls_{name}_a.npy")));
            let y = array1(&format!("nnls_{name}_y.npy"));
            let want = array1(&format!("nnls_{name}_x.npy"));
            let got = nnls(a.view(), y.view()).unwrap();
            let fit_gap = max_abs_diff(a.dot(&got).view(), a.dot(&want).view());
            let res = &y - &a.dot(&got);
            let rnorm_gap = (res.dot(&res).sqrt() - rnorm).abs();
            assert!(fit_gap < 1e-10, "{name}: fitted values differ by {fit_gap}");
            assert!(rnorm_gap < 1e-10, "{name}: residual norm differs by {rnorm_gap}");
            if unique {
                // relative to the coefficient's scale (the collinear case spans 1e-3 .. 50)
                let x_gap = got
                    .iter()
                    .zip(&want)
                    .fold(0.0f64, |m, (g, w)| m.max((g - w).abs() / w.abs().max(1.0)));
                assert!(x_gap < 1e-10, "{name}: x differs by {x_gap}: {got} vs {want}");
                worst.0 = worst.0.max(x_gap);
            }
            assert!(got.iter().all(|&v| v >= 0.0));
            worst.1 = worst.1.max(fit_gap);
            println!("nnls {name}: fit gap {fit_gap:.2e}, rnorm gap {rnorm_gap:.2e}");
        }
        println!("nnls vs scipy: max x gap {:.2e}, max fit gap {:.2e}", worst.0, worst.1);
    }

    /// x ≥ 0; the gradient g = aᵀ(a x − y) is ≥ 0 where x = 0 and 0 where x > 0. Returns the
    /// largest violation relative to ‖a_j‖ ‖y‖.
    fn assert_kkt(a: ArrayView2<'_, f64>, y: ArrayView1<'_, f64>, x: &Array1<f64>) -> f64 {
        let g = a.t().dot(&(&a.dot(x) - &y));
        let y_norm = y.dot(&y).sqrt();
        let mut worst = 0.0f64;
        for (j, (&gj, &xj)) in g.iter().zip(x).enumerate() {
            let scale = a.column(j).dot(&a.column(j)).sqrt() * y_norm;
            assert!(xj >= 0.0, "x[{j}] = {xj}");
            let violation = if xj > 0.0 { gj.abs() } else { (-gj).max(0.0) } / scale;
            worst = worst.max(violation);
        }
        worst
    }

    #[test]
    fn nnls_satisfies_kkt_on_random_problems() {
        let mut rng = Rng::new(71);
        let mut worst = 0.0f64;
        for (m, k) in [(50, 5), (200, 30), (30, 29), (12, 20), (100, 1), (5, 60)] {
            for trial in 0..5 {
                let a: Array2<f64> = rng.normal_array((m, k));
                // column scales from 1e-3 to 1e3
                let scales: Array1<f64> =
                    (0..k).map(|j| 10f64.powf(-3.0 + 6.0 * j as f64 / k as f64)).collect();
                let a = &a * &scales;
                let w: Array1<f64> = rng.normal_array(k);
                let noise: Array1<f64> = rng.normal_array(m);
                let y = a.dot(&w) + noise;
                let x = nnls(a.view(), y.view()).unwrap();
                let violation = assert_kkt(a.view(), y.view(), &x);
                assert!(violation < 1e-10, "{m}x{k} #{trial}: KKT violated by {violation}");
                worst = worst.max(violation);
            }
        }
        // every column twice (and once scaled): x is not unique, the fit and the KKT are
        for (m, k) in [(40, 6), (300, 40)] {
            let a: Array2<f64> = rng.normal_array((m, k));
            let y: Array1<f64> =
                a.dot(&rng.normal_array::<f64, _, _>(k)) + rng.normal_array::<f64, _, _>(m);
            let twice = ndarray::concatenate![Axis(1), a, a, &a * 3.0];
            let x = nnls(twice.view(), y.view()).unwrap();
            let violation = assert_kkt(twice.view(), y.view(), &x);
            assert!(violation < 1e-10, "{m}x{k} repeated: KKT violated by {violation}");
            worst = worst.max(violation);
            let single = nnls(a.view(), y.view()).unwrap();
            let gap = max_abs_diff(twice.dot(&x).view(), a.dot(&single).view());
            assert!(gap < 1e-10 * y.dot(&y).sqrt(), "{m}x{k} repeated: fits differ by {gap}");
        }
        println!("nnls KKT on random problems: largest relative violation {worst:.2e}");
    }

    #[test]
    fn nnls_edge_cases_and_errors() {
        let a = Array2::from_shape_vec((3, 2), vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0]).unwrap();
        // scipy's docstring examples
        let x = nnls(a.view(), ArrayView1::from(&[2.0, 1.0, 1.0])).unwrap();
        assert!((x[0] - 1.5).abs() < 1e-15 && (x[1] - 1.0).abs() < 1e-15, "{x}");
        let x = nnls(a.view(), ArrayView1::from(&[-1.0, -1.0, -1.0])).unwrap();
        assert_eq!(x.to_vec(), vec![0.0, 0.0]);
        // zero y, zero column, no regressors, no observations
        assert_eq!(nnls(a.view(), ArrayView1::from(&[0.0; 3])).unwrap().to_vec(), vec![0.0; 2]);
        let mut z = a.clone();
        z.column_mut(1).fill(0.0);
        let x = nnls(z.view(), ArrayView1::from(&[2.0, 1.0, 1.0])).unwrap();
        assert_eq!(x[1], 0.0);
        assert!((x[0] - 1.5).abs() < 1e-15);
        assert_eq!(
            nnls(Array2::zeros((3, 0)).view(), ArrayView1::from(&[1.0; 3])).unwrap().len(),
            0
        );
        assert_eq!(nnls(Array2::zeros((0, 2)).view(), ArrayView1::from(&[])).unwrap().len(), 2);
        // duplicated column: the fit is unique, x need not be
        let d = Array2::from_shape_vec((3, 2), vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]).unwrap();
        let x = nnls(d.view(), ArrayView1::from(&[1.0, 2.0, 3.5])).unwrap();
        assert!((x.sum() - 15.5 / 14.0).abs() < 1e-14, "{x}");
        assert!(matches!(
            nnls(a.view(), ArrayView1::from(&[1.0, 2.0])),
            Err(KernelError::Shape(m)) if m.contains('3') && m.contains('2')
        ));
        assert!(matches!(
            nnls(a.view(), ArrayView1::from(&[1.0, f64::NAN, 2.0])),
            Err(KernelError::Parameter(_))
        ));
    }

    // ----- Reweighted RSA -----------------------------------------------------------------------

    #[test]
    fn fit_weights_matches_rsatoolbox_fit_regress_nn() {
        let (models, human) = real_data();
        let all: Vec<usize> = (0..human.len()).collect();
        let fit = fit_weights(models.view(), human.view(), &all).unwrap();
        let theta = array1("theta_rsatoolbox_corr.npy");
        let norm = fit.weights.dot(&fit.weights).sqrt();
        let gap = max_abs_diff((&fit.weights / norm).view(), theta.view());
        println!("fit_weights vs rsatoolbox fit_regress_nn(corr): max |diff| {gap:.2e}");
        assert!(gap < 1e-10, "{} vs {theta}", &fit.weights / norm);
        // the intercept makes the fit's residual mean zero
        let pred = fit.predict(models.view(), &all).unwrap();
        assert!((&human - &pred).mean().unwrap().abs() < 1e-12);
    }

    #[test]
    fn fit_weights_drops_nan_pairs_and_checks_inputs() {
        let mut rng = Rng::new(72);
        let models: Array2<f64> = rng.normal_array((3, 45));
        let brain =
            models.row(0).to_owned() * 2.0 + models.row(2) + rng.normal_array::<f64, _, _>(45);
        let all: Vec<usize> = (0..45).collect();
        let mut holed = brain.clone();
        holed[4] = f64::NAN;
        let mut holed_models = models.clone();
        holed_models[(1, 9)] = f64::NAN;
        let kept: Vec<usize> = all.iter().copied().filter(|&p| p != 4 && p != 9).collect();
        let want = fit_weights(models.view(), brain.view(), &kept).unwrap();
        let got = fit_weights(holed_models.view(), holed.view(), &all).unwrap();
        assert_eq!(got, want);
        assert!(matches!(
            fit_weights(models.view(), brain.slice(s![..44]), &all),
            Err(KernelError::Shape(_))
        ));
        assert!(matches!(
            fit_weights(models.view(), brain.view(), &[3, 45]),
            Err(KernelError::Parameter(m)) if m.contains("45")
        ));
        assert!(matches!(
            fit_weights(models.view(), holed.view(), &[4, 5]),
            Err(KernelError::Parameter(_))
        ));
    }

    #[test]
    fn condition_folds_are_balanced_seeded_and_checked() {
        for (n, k) in [(92, 4), (24, 4), (10, 3), (7, 2), (30, 10)] {
            let folds = condition_folds(n, k, 11).unwrap();
            assert_eq!(folds.len(), n);
            let mut sizes = vec![0usize; k];
            folds.iter().for_each(|&f| sizes[f] += 1);
            assert!(sizes.iter().all(|&s| s == n / k || s == n.div_ceil(k)), "{sizes:?}");
            assert_eq!(folds, condition_folds(n, k, 11).unwrap());
            assert_ne!(folds, condition_folds(n, k, 12).unwrap());
        }
        // the split of the shuffled order is contiguous
        let mut order: Vec<usize> = (0..10).collect();
        Rng::new(5).shuffle(&mut order);
        let folds = condition_folds(10, 3, 5).unwrap();
        let along: Vec<usize> = order.iter().map(|&c| folds[c]).collect();
        assert_eq!(along, vec![0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
        assert!(matches!(condition_folds(10, 1, 0), Err(KernelError::CrossValidation(_))));
        assert!(matches!(condition_folds(11, 4, 0), Err(KernelError::CrossValidation(_))));
        assert!(condition_folds(12, 4, 0).is_ok());
    }

    /// Checks crossval_reweighted on a fixture case against the naive Python loops.
    fn check_cv_case(case: &str, models: ArrayView2<'_, f64>, brain: ArrayView1<'_, f64>) -> f64 {
        let (_, folds) = fx::i64s(&fixture(&format!("cv_{case}_folds.npy")));
        let folds: Vec<usize> = folds.iter().map(|&f| f as usize).collect();
        let n = folds.len();
        let fold_weights = array2(&fixture(&format!("cv_{case}_fold_weights.npy")));
        let intercepts = array1(&format!("cv_{case}_intercepts.npy"));
        let full = array1(&format!("cv_{case}_full_weights.npy"));
        let k = fold_weights.nrows();
        let rows = csv_rows("cv_scores.csv");
        let mut worst = 0.0f64;
        for method in ["spearman", "pearson", "kendall_tau_a", "cosine"] {
            let cv = crossval_reweighted(models, brain, n, &folds, method_named(method)).unwrap();
            for (f, fitted) in cv.fold_weights.iter().enumerate() {
                worst = worst.max(max_abs_diff(fitted.weights.view(), fold_weights.row(f)));
                worst = worst.max((fitted.intercept - intercepts[f]).abs());
            }
            let all: Vec<usize> = (0..brain.len()).collect();
            let fitted = fit_weights(models, brain, &all).unwrap();
            worst = worst.max(max_abs_diff(fitted.weights.view(), full.view()));
            worst = worst.max((fitted.intercept - intercepts[k]).abs());
            let mut seen = 0;
            for row in rows.iter().filter(|r| r[0] == case && r[1] == method) {
                let want: f64 = row[3].parse().unwrap();
                let got = match row[2].as_str() {
                    "mean" => cv.mean,
                    "unweighted" => {
                        crossval_unweighted(models, brain, n, &folds, method_named(method)).unwrap()
                    }
                    f => cv.fold_scores[f.parse::<usize>().unwrap()],
                };
                worst = worst.max((got - want).abs());
                seen += 1;
            }
            assert_eq!(seen, k + 2, "{case} {method}");
        }
        assert!(worst < 1e-10, "{case}: max |diff| {worst}");
        worst
    }

    #[test]
    fn crossval_reweighted_matches_naive_loops() {
        let (models, human) = real_data();
        let real = check_cv_case("real", models.view(), human.view());
        let x = array2(&fixture("units_x.npy"));
        let regressors = unit_regressors(x.view());
        let units = check_cv_case("units", regressors.view(), array1("units_brain.npy").view());
        println!("crossval_reweighted vs naive loops: real {real:.2e}, units {units:.2e}");
    }

    #[test]
    fn crossval_recovers_planted_weights() {
        let mut rng = Rng::new(73);
        let n = 40;
        let models: Array2<f64> =
            rng.normal_array::<f64, _, _>((4, condensed_len(n))).mapv(f64::abs);
        let noise: Array1<f64> = rng.normal_array(condensed_len(n));
        let brain = &models.row(0) * 0.5 + &models.row(2) * 2.0 + 3.0 + noise * 0.05;
        let folds = condition_folds(n, 5, 1).unwrap();
        let cv =
            crossval_reweighted(models.view(), brain.view(), n, &folds, CompareMethod::Pearson)
                .unwrap();
        let want = [0.5, 0.0, 2.0, 0.0];
        let all: Vec<usize> = (0..brain.len()).collect();
        let full = fit_weights(models.view(), brain.view(), &all).unwrap();
        for fitted in cv.fold_weights.iter().chain([&full]) {
            for (w, t) in fitted.weights.iter().zip(want) {
                assert!((w - t).abs() < 0.02, "{} vs {want:?}", fitted.weights);
            }
            assert!((fitted.intercept - 3.0).abs() < 0.05, "{}", fitted.intercept);
        }
        assert!(cv.mean > 0.95, "{}", cv.mean);
        // equal weights on 4 models, two of them irrelevant: clearly worse
        let plain =
            crossval_unweighted(models.view(), brain.view(), n, &folds, CompareMethod::Pearson)
                .unwrap();
        assert!(plain < cv.mean - 0.2, "{plain} vs {}", cv.mean);
        // every comparison method scores the held-out conditions' RDMs
        for method in CompareMethod::ALL {
            let cv = crossval_reweighted(models.view(), brain.view(), n, &folds, method).unwrap();
            assert!(
                cv.mean.is_finite() && cv.fold_scores.iter().all(|s| s.is_finite()),
                "{method:?}"
            );
        }
        assert!(cv.fold_scores.iter().all(|s| *s > 0.9));
    }

    #[test]
    fn a_folds_weights_never_see_its_test_pairs() {
        let mut rng = Rng::new(74);
        let n = 20;
        let models: Array2<f64> = rng.normal_array((3, condensed_len(n)));
        let brain: Array1<f64> = &models.row(1) + &rng.normal_array::<f64, _, _>(condensed_len(n));
        let folds = condition_folds(n, 4, 2).unwrap();
        let method = CompareMethod::Spearman;
        let before = crossval_reweighted(models.view(), brain.view(), n, &folds, method).unwrap();
        // make every dissimilarity among fold 2's conditions huge
        let mut poisoned = brain.clone();
        let fold2: Vec<usize> = (0..n).filter(|&c| folds[c] == 2).collect();
        for (a, &i) in fold2.iter().enumerate() {
            for &j in &fold2[a + 1..] {
                poisoned[pair_index(n, i, j)] = 1e6 * (1.0 + i as f64);
            }
        }
        let after = crossval_reweighted(models.view(), poisoned.view(), n, &folds, method).unwrap();
        assert_eq!(after.fold_weights[2], before.fold_weights[2], "fold 2 saw its test pairs");
        assert_ne!(after.fold_scores[2], before.fold_scores[2]);
        for f in [0, 1, 3] {
            assert_ne!(after.fold_weights[f], before.fold_weights[f], "fold {f} trains on them");
        }
    }

    #[test]
    fn crossval_checks_its_inputs() {
        let models = Array2::<f64>::ones((2, 45));
        let brain = Array1::<f64>::ones(45);
        let folds = vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 2];
        let m = CompareMethod::Pearson;
        assert!(matches!(
            crossval_reweighted(models.view(), brain.view(), 9, &folds, m),
            Err(KernelError::Shape(_))
        ));
        assert!(matches!(
            crossval_reweighted(models.view(), brain.view(), 10, &folds[..9], m),
            Err(KernelError::Shape(_))
        ));
        assert!(matches!(
            crossval_reweighted(models.slice(s![.., ..44]), brain.view(), 10, &folds, m),
            Err(KernelError::Shape(_))
        ));
        assert!(matches!(
            crossval_reweighted(models.view(), brain.view(), 10, &[0; 10], m),
            Err(KernelError::CrossValidation(_))
        ));
        let small = vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 2];
        assert!(matches!(
            crossval_reweighted(models.view(), brain.view(), 10, &small, m),
            Err(KernelError::CrossValidation(msg)) if msg.contains("fold 2")
        ));
        // constant data: weights zero, predictions constant, every score NaN
        let cv = crossval_reweighted(models.view(), brain.view(), 10, &folds, m).unwrap();
        assert!(cv.mean.is_nan() && cv.fold_scores.iter().all(|s| s.is_nan()));
        assert!(crossval_unweighted(models.view(), brain.view(), 10, &folds, m).unwrap().is_nan());
        assert!(matches!(
            crossval_unweighted(models.view(), brain.view(), 10, &small, m),
            Err(KernelError::CrossValidation(_))
        ));
    }

    // ----- Unit weighting -----------------------------------------------------------------------

    #[test]
    fn unit_regressors_give_weighted_squared_distances() {
        let x = array2(&fixture("units_x.npy"));
        let got = unit_regressors(x.view());
        let want = array2(&fixture("units_regressors.npy"));
        assert_eq!(got.dim(), want.dim());
        let gap = (&got - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(gap < 1e-12, "{gap}");
        // Σ_k w_k (x_ik − x_jk)² == S_ii + S_jj − 2 S_ij for S = X diag(w) Xᵀ, and == the
        // Euclidean RDM of X diag(√w) times the number of units
        let mut rng = Rng::new(75);
        let (n, u) = x.dim();
        let w: Array1<f64> = rng.normal_array::<f64, _, _>(u).mapv(f64::abs);
        let weighted = w.dot(&got);
        let sim = x.dot(&Array2::from_diag(&w)).dot(&x.t());
        let scaled = &x * &w.mapv(f64::sqrt);
        let euclid = rdm(scaled.view(), RdmMethod::Euclidean).unwrap() * u as f64;
        let mut worst = 0.0f64;
        for i in 0..n {
            for j in i + 1..n {
                let p = pair_index(n, i, j);
                let naive: f64 = (0..u).map(|k| w[k] * (x[(i, k)] - x[(j, k)]).powi(2)).sum();
                let from_s = sim[(i, i)] + sim[(j, j)] - 2.0 * sim[(i, j)];
                worst = worst.max((weighted[p] - naive).abs());
                worst = worst.max((weighted[p] - from_s).abs() / naive.max(1.0));
                worst = worst.max((weighted[p] - euclid[p]).abs() / naive.max(1.0));
            }
        }
        println!("unit regressors: vs fixture {gap:.2e}, weighted-sum identities {worst:.2e}");
        assert!(worst < 1e-12, "{worst}");
        // f32 activations are widened exactly
        let x32 = x.mapv(|v| v as f32);
        let from32 = unit_regressors(x32.view());
        let naive32 = unit_regressors(x32.mapv(f64::from).view());
        assert_eq!(from32, naive32);
        assert_eq!(unit_regressors(Array2::<f64>::zeros((1, 3)).view()).dim(), (3, 0));
    }

    #[test]
    fn principal_component_scores_match_sklearn() {
        let x = array2(&fixture("pca_x.npy"));
        let want = array2(&fixture("pca_scores.npy"));
        let got = principal_component_scores(x.view(), 5).unwrap();
        assert_eq!(got.dim(), want.dim());
        let mut worst = 0.0f64;
        for (g, w) in got.axis_iter(Axis(1)).zip(want.axis_iter(Axis(1))) {
            let sign = if g.dot(&w) < 0.0 { -1.0 } else { 1.0 };
            worst = worst.max(max_abs_diff(g.view(), (&w * sign).view()));
            // the sign convention: the entry of largest magnitude is positive
            let top = g.iter().fold(0.0f64, |m, &v| if v.abs() > m.abs() { v } else { m });
            assert!(top > 0.0);
        }
        println!("principal_component_scores vs sklearn PCA: max |diff| {worst:.2e} (up to sign)");
        assert!(worst < 1e-10, "{worst}");
        // f32 data: the same components to f32 precision
        let got32 = principal_component_scores(x.mapv(|v| v as f32).view(), 5).unwrap();
        let gap32 = (&got32 - &got).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(gap32 < 1e-4, "{gap32}");
        // rank: 5 conditions centred have rank at most 4
        let small = x.slice(s![..5, ..]);
        assert_eq!(principal_component_scores(small, 4).unwrap().dim(), (5, 4));
        assert!(matches!(
            principal_component_scores(small, 5),
            Err(KernelError::Parameter(m)) if m.contains("rank 4")
        ));
        assert!(matches!(principal_component_scores(x.view(), 0), Err(KernelError::Parameter(_))));
        assert!(matches!(
            principal_component_scores(x.slice(s![..1, ..]), 1),
            Err(KernelError::Shape(_))
        ));
        let mut bad = x.clone();
        bad[(3, 3)] = f64::NAN;
        assert!(matches!(
            principal_component_scores(bad.view(), 1),
            Err(KernelError::Parameter(_))
        ));
    }

    // ----- Variance partitioning ------------------------------------------------------------------

    #[test]
    fn rdm_r2_matches_numpy_lstsq() {
        let (models, human) = real_data();
        let mut worst = 0.0f64;
        for row in csv_rows("r2.csv") {
            let rows: Vec<usize> = row[0].split(' ').map(|r| r.parse().unwrap()).collect();
            let want: f64 = row[1].parse().unwrap();
            let got = rdm_r2(human.view(), models.view(), &rows);
            worst = worst.max((got - want).abs());
        }
        println!("rdm_r2 vs numpy lstsq: max |diff| {worst:.2e}");
        assert!(worst < 1e-12, "{worst}");
        // a model repeated, or a linear combination of others, adds nothing
        let base = rdm_r2(human.view(), models.view(), &[0, 3]);
        assert!((rdm_r2(human.view(), models.view(), &[0, 3, 0]) - base).abs() < 1e-14);
        let mut more = models.clone();
        let combo = &models.row(0) * 2.0 - models.row(3) + 1.0;
        more.row_mut(5).assign(&combo);
        assert!((rdm_r2(human.view(), more.view(), &[0, 3, 5]) - base).abs() < 1e-12);
        assert_eq!(rdm_r2(human.view(), models.view(), &[]), 0.0);
        // NaN pairs are dropped jointly
        let mut holed = human.clone();
        holed[10] = f64::NAN;
        let mut holed_models = models.clone();
        holed_models[(3, 20)] = f64::NAN;
        let keep: Vec<usize> = (0..human.len()).filter(|&p| p != 10 && p != 20).collect();
        let want = rdm_r2(
            human.select(Axis(0), &keep).view(),
            models.select(Axis(1), &keep).view(),
            &[0, 3],
        );
        assert_eq!(rdm_r2(holed.view(), holed_models.view(), &[0, 3]), want);
        // what it cannot compute on is NaN
        assert!(rdm_r2(human.view(), models.view(), &[8]).is_nan());
        assert!(rdm_r2(human.slice(s![..10]), models.view(), &[0]).is_nan());
        assert!(rdm_r2(Array1::ones(4186).view(), models.view(), &[0]).is_nan());
        assert!(rdm_r2(human.slice(s![..2]), models.slice(s![.., ..2]), &[0]).is_nan());
    }

    #[test]
    fn partition_identities_hold_exactly() {
        // dyadic R² values: every sum is exact, so the identities hold bit for bit
        let r2 = |mask: u32| -> Array1<f64> {
            let v = match mask {
                0b01 => [0.375, 0.5],
                0b10 => [0.25, 0.125],
                0b11 => [0.5, 0.5625],
                _ => unreachable!(),
            };
            Array1::from(v.to_vec())
        };
        let parts = partition_from_unions(2, r2);
        let masks: Vec<u32> = parts.iter().map(|p| p.0).collect();
        assert_eq!(masks, vec![0b01, 0b10, 0b11]);
        let (a, b, ab) = (r2(0b01), r2(0b10), r2(0b11));
        assert_eq!(parts[0].1, &ab - &b, "unique a");
        assert_eq!(parts[1].1, &ab - &a, "unique b");
        assert_eq!(parts[2].1, &a + &b - &ab, "shared");
        // three bands: the textbook formulas, and the parts sum to R²(T)
        let mut rng = Rng::new(76);
        let table: Vec<Array1<f64>> = (0..8).map(|_| rng.normal_array(3)).collect();
        let parts = partition_from_unions(3, |m| table[m as usize].clone());
        let r = |m: u32| &table[m as usize];
        let p = |m: u32| &parts.iter().find(|x| x.0 == m).unwrap().1;
        let close = |x: &Array1<f64>, y: Array1<f64>| max_abs_diff(x.view(), y.view()) < 1e-14;
        assert!(close(p(0b001), r(0b111) - r(0b110)));
        assert!(close(p(0b011), r(0b101) + r(0b110) - r(0b100) - r(0b111)));
        let all_three = r(0b001) + r(0b010) + r(0b100) - r(0b011) - r(0b101) - r(0b110) + r(0b111);
        assert!(close(p(0b111), all_three));
        let total = parts.iter().fold(Array1::zeros(3), |acc, (_, v)| acc + v);
        assert!(close(&total, r(0b111).clone()));
        // the encoding merge's loop (crates/brainfit-job/src/merge.rs, fn partition), with
        // subsets as band lists, gives the same maps
        let n = 3;
        for (mask, got) in &parts {
            let members: Vec<usize> = (0..n).filter(|b| mask & (1 << b) != 0).collect();
            let mut want = Array1::<f64>::zeros(3);
            for w in 0u32..(1 << members.len()) {
                let dropped: Vec<usize> =
                    (0..members.len()).filter(|i| w & (1 << i) != 0).map(|i| members[i]).collect();
                let kept: u32 =
                    (0..n).filter(|b| !dropped.contains(b)).fold(0, |m, b| m | (1 << b));
                let sign =
                    if (members.len() - dropped.len() + 1).is_multiple_of(2) { 1.0 } else { -1.0 };
                let r2_kept = if kept == 0 { Array1::zeros(3) } else { r(kept).clone() };
                want.scaled_add(sign, &r2_kept);
            }
            assert!(close(got, want), "{mask:#b}");
        }
        // one band: its R²
        let one = partition_from_unions(1, |_| Array1::from(vec![0.3]));
        assert_eq!(one, vec![(1, Array1::from(vec![0.3]))]);
        // no bands, too many bands: nothing (and nothing called)
        let mut calls = 0;
        assert!(
            partition_from_unions(0, |_| {
                calls += 1;
                Array1::zeros(1)
            })
            .is_empty()
        );
        assert!(
            partition_from_unions(17, |_| {
                calls += 1;
                Array1::zeros(1)
            })
            .is_empty()
        );
        assert_eq!(calls, 0);
        // maps of different lengths: what a map lacks is NaN
        let ragged =
            partition_from_unions(2, |m| Array1::from_elem(if m == 2 { 1 } else { 2 }, 0.5));
        assert!(ragged.iter().all(|(_, v)| v.len() == 2));
        // P(a) and P(a,b) use R²(b), which lacks position 1; P(b) = R²(a∪b) − R²(a) does not
        assert!(ragged[0].1[0] == 0.0 && ragged[0].1[1].is_nan());
        assert_eq!(ragged[1].1.to_vec(), vec![0.0, 0.0]);
        assert!(ragged[2].1[0] == 0.5 && ragged[2].1[1].is_nan());
    }

    #[test]
    fn a_planted_low_high_split_is_partitioned_right() {
        // Orthonormal centred components L (low-level only), H (high-level only), S (both
        // levels), E (noise): brain = a L + b H + c S + e E. Band low = {L, S}, high = {H, S}:
        // unique low = a²/V, unique high = b²/V, shared = c²/V, V = a² + b² + c² + e².
        let mut rng = Rng::new(77);
        let n_pairs = condensed_len(30);
        let mut basis: Vec<Array1<f64>> = vec![Array1::ones(n_pairs)];
        while basis.len() < 5 {
            let mut v: Array1<f64> = rng.normal_array(n_pairs);
            for _ in 0..2 {
                for q in &basis {
                    let c = q.dot(&v) / q.dot(q);
                    v.scaled_add(-c, q);
                }
            }
            let norm = v.dot(&v).sqrt();
            basis.push(v / norm);
        }
        let (l, h, sh, e) = (&basis[1], &basis[2], &basis[3], &basis[4]);
        let (a, b, c, noise) = (0.6, 0.9, 0.5, 0.4);
        let brain = l * a + h * b + sh * c + e * noise + 7.0;
        let mut models = Array2::zeros((3, n_pairs));
        models.row_mut(0).assign(&(l * 3.0 + 1.0));
        models.row_mut(1).assign(&(h * 0.5 - 2.0));
        models.row_mut(2).assign(&(sh * 2.0));
        let bands = [vec![0, 2], vec![1, 2]];
        let parts = rdm_variance_partition(brain.view(), models.view(), &bands).unwrap();
        let v = a * a + b * b + c * c + noise * noise;
        let want = [(0b01, a * a / v), (0b10, b * b / v), (0b11, c * c / v)];
        for ((mask, got), (m, w)) in parts.iter().zip(want) {
            assert_eq!(*mask, m);
            assert!((got - w).abs() < 1e-12, "{mask:#b}: {got} vs {w}");
        }
        // models whose single RDMs mix levels: low = L + S, high = H + S, bands of one model
        let mixed = [l + sh, h + sh];
        let mut two = Array2::zeros((2, n_pairs));
        two.row_mut(0).assign(&mixed[0]);
        two.row_mut(1).assign(&mixed[1]);
        let parts = rdm_variance_partition(brain.view(), two.view(), &[[0], [1]]).unwrap();
        let sum: f64 = parts.iter().map(|p| p.1).sum();
        assert!((sum - rdm_r2(brain.view(), two.view(), &[0, 1])).abs() < 1e-14);
        assert!(rdm_variance_partition(brain.view(), two.view(), &[[0], [2]]).is_err());
        let none: [[usize; 1]; 0] = [];
        assert!(rdm_variance_partition(brain.view(), two.view(), &none).is_err());
    }

    // ----- Noise ceilings -------------------------------------------------------------------------

    /// The human IT RDMs: `[subjects (4), sessions (2), pairs]` condensed.
    fn human_rdms() -> Array3<f64> {
        let (shape, v) = fx::f64s(&fx::krieg("human_it_rdms.npy"));
        assert_eq!(shape, vec![4, 2, 92, 92]);
        let squares = ndarray::Array4::from_shape_vec((4, 2, 92, 92), v).unwrap();
        let mut out = Array3::zeros((4, 2, condensed_len(92)));
        for s in 0..4 {
            for r in 0..2 {
                let sq = squares.slice(s![s, r, .., ..]);
                out.slice_mut(s![s, r, ..]).assign(&square_to_condensed(sq, "human").unwrap());
            }
        }
        out
    }

    #[test]
    fn pool_rdms_matches_rsatoolbox() {
        let rdms = human_rdms();
        let subjects4 = (&rdms.slice(s![.., 0, ..]) + &rdms.slice(s![.., 1, ..])) / 2.0;
        let want = array2(&fixture("pool_subjects4.npy"));
        let mut worst = 0.0f64;
        // rows: spearman, corr, cosine, tau-a; rho-a pools as spearman, tau-b as tau-a and
        // corr_cov as corr in rsatoolbox
        let rows = [
            ("spearman", 0),
            ("pearson", 1),
            ("cosine", 2),
            ("kendall_tau_a", 3),
            ("rho_a", 0),
            ("tau_b", 3),
            ("corr_cov", 1),
        ];
        for (method, row) in rows {
            let got = pool_rdms(subjects4.view(), method_named(method));
            let gap = max_abs_diff(got.view(), want.row(row));
            let scale = want.row(row).iter().fold(1.0f64, |m, v| m.max(v.abs()));
            worst = worst.max(gap / scale);
        }
        println!("pool_rdms vs rsatoolbox pool_rdm: max relative |diff| {worst:.2e}");
        assert!(worst < 1e-12, "{worst}");
        // NaN-aware: a pair NaN in one RDM is the mean of the others there
        let mut holed = subjects4.clone();
        holed[(1, 7)] = f64::NAN;
        let pooled = pool_rdms(holed.view(), CompareMethod::Cosine);
        assert!(pooled.iter().all(|v| v.is_finite()));
        holed.column_mut(7).fill(f64::NAN);
        assert!(pool_rdms(holed.view(), CompareMethod::Spearman)[7].is_nan());
    }

    #[test]
    fn noise_ceilings_match_rsatoolbox() {
        let rdms = human_rdms();
        let subjects4 = (&rdms.slice(s![.., 0, ..]) + &rdms.slice(s![.., 1, ..])) / 2.0;
        let sessions8 = rdms.to_shape((8, condensed_len(92))).unwrap().to_owned();
        let rows = csv_rows("noise_ceiling.csv");
        assert_eq!(rows.len(), 14);
        let mut worst = 0.0f64;
        for row in rows {
            let data = match row[0].as_str() {
                "subjects4" => subjects4.view(),
                "sessions8" => sessions8.view(),
                other => panic!("case {other}"),
            };
            let (lower, upper): (f64, f64) = (row[2].parse().unwrap(), row[3].parse().unwrap());
            let (got_lower, got_upper) = noise_ceiling(data, method_named(&row[1])).unwrap();
            worst = worst.max((got_lower - lower).abs()).max((got_upper - upper).abs());
            assert!(got_lower < got_upper);
        }
        println!("noise_ceiling vs rsatoolbox boot_noise_ceiling: max |diff| {worst:.2e}");
        assert!(worst < 1e-10, "{worst}");
        // the methods rsatoolbox cannot pool (bures, CKA) pool by the plain mean
        for method in CompareMethod::ALL {
            let (lower, upper) = noise_ceiling(subjects4.view(), method).unwrap();
            assert!(lower.is_finite() && upper.is_finite() && lower < upper, "{method:?}");
        }
        let plain = pool_rdms(subjects4.view(), CompareMethod::Bures);
        let mean = subjects4.mean_axis(Axis(0)).unwrap();
        assert!(max_abs_diff(plain.view(), mean.view()) < 1e-15);
        assert!(matches!(
            noise_ceiling(subjects4.slice(s![..1, ..]), CompareMethod::Spearman),
            Err(KernelError::Parameter(_))
        ));
        assert!(matches!(
            noise_ceiling(Array2::<f64>::zeros((3, 0)).view(), CompareMethod::Spearman),
            Err(KernelError::Shape(_))
        ));
    }
}
