//! L2-regularised multinomial logistic regression, with C chosen by inner cross-validation.
//!
//! "Remixed RSA" (Khaligh-Razavi & Kriegeskorte 2014; Storrs et al. 2021) trains a linear
//! classifier on a network layer's activations for many labelled training images, applies it
//! to the experiment's stimuli and builds an RDM from its decision values. This module is that
//! classifier: scikit-learn's `LogisticRegression(C=C, penalty="l2", fit_intercept=True)`
//! (`l1_ratio=0` from scikit-learn 1.8 on), which for `K ≥ 3` classes minimises over the
//! weights `W` (`[K, p]`) and intercepts `b` (`[K]`)
//!
//! ```text
//! C · Σ_i −log softmax(W x_i + b)_{y_i}  +  ½ ||W||²_F        (intercepts not penalised)
//! ```
//!
//! **Parameterisation.** The softmax ignores a shift common to all classes. The penalty makes
//! the optimal weights sum to zero over the classes (`Σ_k W_k = 0`, as scikit-learn's do); the
//! unpenalised intercepts are only determined up to such a shift, and brainfit fixes them to
//! **sum to zero** (scikit-learn's multinomial fits land there too, up to rounding).
//! Every row of [`LogisticRegression::decision_function`] (`x Wᵀ + b`) then sums to zero:
//! compare scikit-learn's decision values after subtracting each row's mean.
//!
//! **Two classes.** scikit-learn fits `K = 2` as one binomial model, `C · Σ_i loss + ½||w||²`
//! with one weight vector `w` (`coef_` `[1, p]`, one decision column `d = x·w + b₀`, positive
//! for the larger label). brainfit matches it at the same `C` and still returns two columns:
//! the softmax model with rows `−w/2, +w/2` and intercepts `−b₀/2, +b₀/2`, whose probabilities
//! are scikit-learn's and whose column difference (second minus first) is scikit-learn's
//! decision value. (With these rows, `½||W||²` is `¼||w||²`: the fit is the softmax objective
//! above at `C/2`.) Classes are always in ascending label order ([`LogisticRegression::classes`]).
//!
//! **Feature scale.** Features are taken as they are. The penalty treats every feature alike, so
//! the meaning of `C` depends on the features' scales (standardise them first, on the training
//! images, if that is what you want) and, since `C` multiplies a sum over samples, on `n`.
//!
//! **Solver: trust-region Newton with conjugate gradients (TRON; Lin, Weng & Keerthi 2008,
//! liblinear's solver for this problem).** The objective is smooth and, on the weights and the
//! zero-sum intercepts, strictly convex. Each Newton step is solved inexactly by Steihaug's
//! conjugate gradients inside a trust region, with Hessian-vector products computed on the fly:
//! for a direction `(V, v)`, `A = X V + v` (one GEMM), then per sample
//! `R_i = p_i ⊙ (A_i − p_i·A_i)`, and `C·XᵀR + V` (one GEMM). No `pK × pK` matrix is ever
//! formed: memory is the features in f64 (twice during cross-validation: all samples and one
//! training part) plus a few `n × K` and `p × K` arrays, e.g. 0.6 GB for 10 000 images ×
//! 4 096 units. Each CG step costs two `n × p × K` GEMMs through the crate's
//! [`crate::linalg::Backend`], and a fit takes tens to hundreds of them, more as C grows:
//! on 2 000 × 512 standardised features with 10 classes, 44 (0.2 s, C = 0.01) to 183 (0.5 s,
//! C = 100) in release mode on one core, and 4 s for [`LogisticCv`] over 5 C values × 5 folds
//! (`timing_2000_samples_512_features_10_classes`). The CG tolerance tightens as the gradient
//! falls (`min(0.1, √(‖g‖/‖g₀‖))·‖g‖`), so convergence is superlinear. Internally the
//! features are centred on the training mean, an exact reparameterisation
//! (`(x − m)·W + b′ = x·W + (b′ − m·W)`) that decouples the intercepts from the weights; the
//! intercept part of every vector is kept in the zero-sum subspace, where the Hessian is
//! positive definite. The trust-region ratio uses the objective's change computed without
//! cancellation (`log1p(Σ_k p_k expm1(a_k)) − a_y` per sample), so steps can still be judged
//! when the change is far below the objective's rounding.
//!
//! **Convergence:** the gradient norm at most `1e-10` times its norm at zero (`W = 0, b = 0`),
//! within [`MAX_NEWTON`] Newton iterations; otherwise (or when the trust region collapses) the
//! fit is an error, never a silent result. Everything is in f64 whatever the data's type, one
//! thread, with a fixed order of summation: the same input gives the same bytes every run.
//!
//! **Choosing C.** [`LogisticCv`] splits the training images with [`stratified_kfold`]
//! (deterministic: classes in ascending label order, each class's samples in ascending order,
//! the `t`-th sample visited going to fold `t mod k`), fits every C of its grid on each training
//! part (ascending, each fit warm-started from the previous C's), scores the held-out part by
//! its mean log-loss (`−log p` of the true class, from the decision values, no clipping), and
//! picks the C with the lowest mean over folds, ties going to the smaller C (the stronger
//! penalty). The model is then refit on all training images at that C, from zero.

use crate::cv::Fold;
use crate::linalg::{Backend, LinalgBackend};
use crate::{KernelError, Real, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};

/// Convergence: gradient norm relative to its norm at zero.
const GRAD_TOL: f64 = 1e-10;

/// Newton (outer) iterations allowed before a fit is an error.
pub const MAX_NEWTON: usize = 1000;

/// TRON's step acceptance and radius update constants (liblinear).
const ETA0: f64 = 1e-4;
const ETA1: f64 = 0.25;
const ETA2: f64 = 0.75;
const SIGMA1: f64 = 0.25;
const SIGMA2: f64 = 0.5;
const SIGMA3: f64 = 4.0;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// `y += alpha · x`.
fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

/// Sorted distinct labels and each sample's index into them.
fn encode(y: &[i64]) -> (Vec<i64>, Vec<usize>) {
    let mut classes = y.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let index = y.iter().map(|l| classes.binary_search(l).expect("a label of y")).collect();
    (classes, index)
}

fn check_finite<T: Real>(x: &ArrayView2<'_, T>, what: &str) -> Result<()> {
    match x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((i, j), v)) => Err(KernelError::Parameter(format!(
            "{what} holds a non-finite value {v:?} at ({i}, {j})"
        ))),
        None => Ok(()),
    }
}

fn check_c(c: f64) -> Result<()> {
    if c.is_finite() && c > 0.0 {
        Ok(())
    } else {
        Err(KernelError::Parameter(format!("C must be finite and > 0, got {c}")))
    }
}

/// Checks training data; returns the classes and each sample's class index.
fn check_training<T: Real>(x: &ArrayView2<'_, T>, y: &[i64]) -> Result<(Vec<i64>, Vec<usize>)> {
    if y.len() != x.nrows() {
        return Err(KernelError::Shape(format!(
            "{} labels for {} training samples (rows of x)",
            y.len(),
            x.nrows()
        )));
    }
    let (classes, index) = encode(y);
    if classes.len() < 2 {
        return Err(KernelError::Parameter(format!(
            "logistic regression needs at least 2 classes, the labels hold {}",
            classes.len()
        )));
    }
    check_finite(x, "the training features")?;
    Ok((classes, index))
}

/// Row-wise softmax.
fn softmax_rows(z: &Array2<f64>) -> Array2<f64> {
    let mut p = z.clone();
    for mut row in p.rows_mut() {
        let m = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0;
        row.iter_mut().for_each(|v| {
            *v = (*v - m).exp();
            sum += *v;
        });
        row.iter_mut().for_each(|v| *v /= sum);
    }
    p
}

/// `−log softmax(z)_y = logsumexp(z) − z_y`.
fn row_log_loss(z: ArrayView1<'_, f64>, y: usize) -> f64 {
    let m = z.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = z.iter().map(|v| (v - m).exp()).sum();
    m + sum.ln() - z[y]
}

/// One training problem: centred features and class indices. Parameters are flat vectors of
/// length `(p + 1)·K`: `W` row-major `[p, K]`, then the intercepts `[K]` (of the centred
/// features, kept summing to zero).
struct Problem {
    /// Training features minus their mean, `[n, p]`.
    x: Array2<f64>,
    mean: Array1<f64>,
    y: Vec<usize>,
    k: usize,
    /// Norm of the gradient at zero divided by C (it is proportional to C).
    g0_unit: f64,
}

impl Problem {
    fn new(mut x: Array2<f64>, y: Vec<usize>, k: usize) -> Self {
        let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(x.ncols()));
        x -= &mean;
        let mut problem = Problem { x, mean, y, k, g0_unit: 0.0 };
        let zeros = vec![0.0; problem.dim()];
        let uniform = Array2::from_elem((problem.x.nrows(), k), 1.0 / k as f64);
        problem.g0_unit = norm(&problem.gradient(1.0, &zeros, &uniform));
        problem
    }

    fn p(&self) -> usize {
        self.x.ncols()
    }

    fn dim(&self) -> usize {
        (self.p() + 1) * self.k
    }

    /// Scores of the centred features `x` (`[m, p]`): `x V_W + v_b`, `[m, K]`.
    fn scores_of(&self, x: ArrayView2<'_, f64>, v: &[f64]) -> Array2<f64> {
        let (p, k) = (self.p(), self.k);
        let w = ArrayView2::from_shape((p, k), &v[..p * k]).expect("parameter layout");
        let mut z = Array2::zeros((x.nrows(), k));
        Backend::gemm(x, w, z.view_mut());
        let b = &v[p * k..];
        for mut row in z.rows_mut() {
            row.iter_mut().zip(b).for_each(|(z, b)| *z += b);
        }
        z
    }

    fn scores(&self, v: &[f64]) -> Array2<f64> {
        self.scores_of(self.x.view(), v)
    }

    /// `(C·XᵀR + V_W, C·Σ_i R_i)` for per-sample residuals `R` (`[n, K]`), the intercept part
    /// projected onto the zero-sum subspace (analytically it is there already).
    fn back(&self, c: f64, r: &Array2<f64>, v: &[f64]) -> Vec<f64> {
        let (p, k) = (self.p(), self.k);
        let mut out = vec![0.0; (p + 1) * k];
        let xtr = ArrayViewMut2::from_shape((p, k), &mut out[..p * k]).expect("parameter layout");
        Backend::gemm(self.x.t(), r.view(), xtr);
        out[..p * k].iter_mut().zip(&v[..p * k]).for_each(|(o, w)| *o = c * *o + w);
        let mut sums = vec![0.0; k];
        for row in r.rows() {
            sums.iter_mut().zip(row).for_each(|(s, r)| *s += r);
        }
        let mean = sums.iter().sum::<f64>() / k as f64;
        out[p * k..].iter_mut().zip(&sums).for_each(|(o, s)| *o = c * (s - mean));
        out
    }

    /// Gradient at `theta`, given the probabilities there.
    fn gradient(&self, c: f64, theta: &[f64], prob: &Array2<f64>) -> Vec<f64> {
        let mut r = prob.clone();
        for (i, &y) in self.y.iter().enumerate() {
            r[(i, y)] -= 1.0;
        }
        self.back(c, &r, theta)
    }

    /// Hessian times `v`, at the point whose probabilities are `prob`.
    fn hess_vec(&self, c: f64, prob: &Array2<f64>, v: &[f64]) -> Vec<f64> {
        let mut a = self.scores(v);
        for (mut a, p) in a.rows_mut().into_iter().zip(prob.rows()) {
            let pa = dot(a.as_slice().expect("standard layout"), p.as_slice().expect("standard"));
            a.iter_mut().zip(p).for_each(|(a, p)| *a = p * (*a - pa));
        }
        self.back(c, &a, v)
    }

    /// `f(theta + s) − f(theta)`, given the probabilities at `theta` and `a = X S + s_b`,
    /// without cancellation against `f`: per sample `log1p(Σ_k p_k expm1(a_k)) − a_y`.
    fn objective_change(
        &self,
        c: f64,
        theta: &[f64],
        s: &[f64],
        prob: &Array2<f64>,
        a: &Array2<f64>,
    ) -> f64 {
        let mut data = 0.0;
        for ((a, p), &y) in a.rows().into_iter().zip(prob.rows()).zip(&self.y) {
            let mut t = 0.0;
            for (&a, &p) in a.iter().zip(p) {
                // a probability that underflowed to zero contributes nothing (not 0 · ∞)
                if p > 0.0 {
                    t += p * a.exp_m1();
                }
            }
            data += t.ln_1p() - a[y];
        }
        let pk = self.p() * self.k;
        let ws = dot(&theta[..pk], &s[..pk]);
        let ss = dot(&s[..pk], &s[..pk]);
        c * data + ws + 0.5 * ss
    }

    /// Steihaug's truncated conjugate gradients for `H s = −g` within `‖s‖ ≤ delta`, stopping
    /// when the residual is at most `tol`. Returns the step, the residual `−g − H s` and
    /// whether the step reached the boundary.
    fn trcg(
        &self,
        c: f64,
        prob: &Array2<f64>,
        g: &[f64],
        delta: f64,
        tol: f64,
    ) -> (Vec<f64>, Vec<f64>, bool) {
        let mut s = vec![0.0; g.len()];
        let mut r: Vec<f64> = g.iter().map(|g| -g).collect();
        let mut d = r.clone();
        let mut rr = dot(&r, &r);
        for _ in 0..self.dim() {
            if rr.sqrt() <= tol {
                break;
            }
            let hd = self.hess_vec(c, prob, &d);
            let dhd = dot(&d, &hd);
            let alpha = rr / dhd;
            if dhd > 0.0 {
                axpy(alpha, &d, &mut s);
                if norm(&s) <= delta {
                    axpy(-alpha, &hd, &mut r);
                    let rr_new = dot(&r, &r);
                    let beta = rr_new / rr;
                    d.iter_mut().zip(&r).for_each(|(d, r)| *d = r + beta * *d);
                    rr = rr_new;
                    continue;
                }
                axpy(-alpha, &d, &mut s);
            }
            // leaving the region (or, from rounding, no curvature): stop on its boundary
            let (sd, dd, ss) = (dot(&s, &d), dot(&d, &d), dot(&s, &s));
            let room = (delta * delta - ss).max(0.0);
            let rad = (sd * sd + dd * room).sqrt();
            let tau = if sd >= 0.0 { room / (sd + rad) } else { (rad - sd) / dd };
            axpy(tau, &d, &mut s);
            axpy(-tau, &hd, &mut r);
            return (s, r, true);
        }
        (s, r, false)
    }

    /// Minimises the objective at `c` from `theta` (whose intercepts sum to zero), in place,
    /// within `max_newton` iterations. Returns the number of Newton iterations.
    fn solve(&self, c: f64, theta: &mut [f64], max_newton: usize) -> Result<usize> {
        if self.g0_unit == 0.0 {
            // the gradient vanishes at zero: zero is the (unique) solution
            theta.iter_mut().for_each(|v| *v = 0.0);
            return Ok(0);
        }
        let g0 = c * self.g0_unit;
        let tol = GRAD_TOL * g0;
        let mut z = self.scores(theta);
        let mut prob = softmax_rows(&z);
        let mut g = self.gradient(c, theta, &prob);
        let mut gnorm = norm(&g);
        let mut delta = gnorm;
        let scale = |theta: &[f64]| norm(theta).max(1.0);
        // `iter` counts accepted and rejected steps alike
        for iter in 0..max_newton {
            if gnorm <= tol {
                return Ok(iter);
            }
            let forcing = (gnorm / g0).sqrt().min(0.1);
            let (s, r, boundary) = self.trcg(c, &prob, &g, delta, forcing * gnorm);
            let gs = dot(&g, &s);
            let predicted = -0.5 * (gs - dot(&s, &r));
            if predicted.is_nan() || predicted <= 0.0 {
                return Err(self.not_converged(c, gnorm, tol, iter, "no predicted decrease"));
            }
            let a = self.scores(&s);
            let change = self.objective_change(c, theta, &s, &prob, &a);
            let actual = -change;
            let snorm = norm(&s);
            if iter == 0 {
                delta = delta.min(snorm);
            }
            let alpha =
                if change - gs <= 0.0 { SIGMA3 } else { SIGMA1.max(-0.5 * (gs / (change - gs))) };
            delta = if actual.is_nan() || actual < ETA0 * predicted {
                (alpha.max(SIGMA1) * snorm).min(SIGMA2 * delta)
            } else if actual < ETA1 * predicted {
                (SIGMA1 * delta).max((alpha * snorm).min(SIGMA2 * delta))
            } else if actual < ETA2 * predicted {
                (SIGMA1 * delta).max((alpha * snorm).min(SIGMA3 * delta))
            } else if boundary {
                SIGMA3 * delta
            } else {
                delta.max((alpha * snorm).min(SIGMA3 * delta))
            };
            if actual > ETA0 * predicted {
                axpy(1.0, &s, theta);
                z += &a;
                prob = softmax_rows(&z);
                g = self.gradient(c, theta, &prob);
                gnorm = norm(&g);
            }
            if delta <= f64::EPSILON * scale(theta) {
                let why = "the trust region collapsed";
                return Err(self.not_converged(c, gnorm, tol, iter + 1, why));
            }
        }
        Err(self.not_converged(c, gnorm, tol, max_newton, "iteration limit"))
    }

    fn not_converged(&self, c: f64, gnorm: f64, tol: f64, iter: usize, why: &str) -> KernelError {
        KernelError::Linalg(format!(
            "logistic regression ({} samples, {} features, {} classes) at C = {c} did not \
             converge: gradient norm {gnorm:.3e} above {tol:.3e} after {iter} Newton \
             iterations ({why})",
            self.x.nrows(),
            self.p(),
            self.k
        ))
    }

    /// The fitted model in the original feature coordinates.
    fn model(
        &self,
        theta: &[f64],
        classes: Vec<i64>,
        c: f64,
        iterations: usize,
    ) -> LogisticRegression {
        let (p, k) = (self.p(), self.k);
        let w = ArrayView2::from_shape((p, k), &theta[..p * k]).expect("parameter layout");
        let mut intercept = Array1::from(theta[p * k..].to_vec()) - self.mean.dot(&w);
        let centre = intercept.sum() / k as f64;
        intercept -= centre;
        LogisticRegression {
            classes,
            coef: w.t().as_standard_layout().into_owned(),
            intercept,
            c,
            iterations,
        }
    }
}

/// The C at which the softmax objective is solved: scikit-learn's binomial model at `C` for two
/// classes is the softmax model at `C/2` (see the module documentation).
fn softmax_c(c: f64, k: usize) -> f64 {
    if k == 2 { 0.5 * c } else { c }
}

/// A fitted multinomial logistic regression: weights `[K, p]` and intercepts `[K]` (summing to
/// zero) of classes in ascending label order.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticRegression {
    classes: Vec<i64>,
    coef: Array2<f64>,
    intercept: Array1<f64>,
    c: f64,
    iterations: usize,
}

impl LogisticRegression {
    /// Fits scikit-learn's `LogisticRegression(C=c)` (L2 penalty, intercept, softmax loss;
    /// binomial for two classes, see the module documentation) to `x` (`[n_samples,
    /// n_features]`) and one label per sample, any `i64` values, at least two distinct.
    /// Errors on mismatched lengths, fewer than two classes, non-finite features, a `c` that
    /// is not finite and positive, and a solve that does not converge.
    pub fn fit<T: Real>(x: ArrayView2<'_, T>, y: &[i64], c: f64) -> Result<Self> {
        check_c(c)?;
        let (classes, index) = check_training(&x, y)?;
        let k = classes.len();
        let problem = Problem::new(x.mapv(Real::as_f64), index, k);
        let mut theta = vec![0.0; problem.dim()];
        let iterations = problem.solve(softmax_c(c, k), &mut theta, MAX_NEWTON)?;
        Ok(problem.model(&theta, classes, c, iterations))
    }

    /// The class labels, ascending: the order of the decision and probability columns.
    pub fn classes(&self) -> &[i64] {
        &self.classes
    }

    /// Weights, `[K, n_features]`; each feature's weights sum to zero over the classes (up to
    /// the solver's tolerance).
    pub fn coef(&self) -> ArrayView2<'_, f64> {
        self.coef.view()
    }

    /// Intercepts, `[K]`, summing to zero.
    pub fn intercept(&self) -> ArrayView1<'_, f64> {
        self.intercept.view()
    }

    /// The regularisation parameter C the model was fitted at.
    pub fn c(&self) -> f64 {
        self.c
    }

    /// Number of features the model expects.
    pub fn n_features(&self) -> usize {
        self.coef.ncols()
    }

    /// Newton iterations the fit took (0 for a model fitted at zero).
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// Decision values `x Wᵀ + b`, `[n, K]`, columns in [`Self::classes`] order; each row sums
    /// to zero. For two classes, scikit-learn's single decision value is column 1 − column 0.
    pub fn decision_function<T: Real>(&self, x: ArrayView2<'_, T>) -> Result<Array2<f64>> {
        if x.ncols() != self.n_features() {
            return Err(KernelError::Shape(format!(
                "x has {} features, the model was fitted on {}",
                x.ncols(),
                self.n_features()
            )));
        }
        check_finite(&x, "x")?;
        let x = x.mapv(Real::as_f64);
        let mut z = Array2::zeros((x.nrows(), self.classes.len()));
        Backend::gemm(x.view(), self.coef.t(), z.view_mut());
        z += &self.intercept;
        Ok(z)
    }

    /// Class probabilities (the softmax of the decision values), `[n, K]`.
    pub fn predict_proba<T: Real>(&self, x: ArrayView2<'_, T>) -> Result<Array2<f64>> {
        Ok(softmax_rows(&self.decision_function(x)?))
    }

    /// Mean log-loss of labelled samples, `−log p(y_i | x_i)` averaged over the rows of `x`,
    /// computed from the decision values (no clipping). Every label must be one of
    /// [`Self::classes`].
    pub fn log_loss<T: Real>(&self, x: ArrayView2<'_, T>, y: &[i64]) -> Result<f64> {
        if y.len() != x.nrows() || y.is_empty() {
            return Err(KernelError::Shape(format!(
                "{} labels for {} samples",
                y.len(),
                x.nrows()
            )));
        }
        let z = self.decision_function(x)?;
        let mut total = 0.0;
        for (row, label) in z.rows().into_iter().zip(y) {
            let k = self.classes.binary_search(label).map_err(|_| {
                KernelError::Parameter(format!("label {label} is not a class of the model"))
            })?;
            total += row_log_loss(row, k);
        }
        Ok(total / y.len() as f64)
    }
}

/// Stratified k-fold split of labelled samples, deterministic: the classes are visited in
/// ascending label order and each class's samples in ascending index order, and the `t`-th
/// sample visited goes to test fold `t mod k`. Each class is thus spread over the folds as
/// evenly as possible (counts differ by at most one), and so are the fold sizes. Errors when
/// `k < 2` or a class has fewer than `k` samples (a fold would miss it).
pub fn stratified_kfold(y: &[i64], k: usize) -> Result<Vec<Fold>> {
    if k < 2 {
        return Err(KernelError::CrossValidation(format!(
            "stratified k-fold needs k >= 2, got {k}"
        )));
    }
    if y.len() < k {
        return Err(KernelError::CrossValidation(format!(
            "stratified {k}-fold needs at least {k} samples, got {}",
            y.len()
        )));
    }
    let (classes, index) = encode(y);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
    for (i, &c) in index.iter().enumerate() {
        members[c].push(i);
    }
    let mut fold_of = vec![0; y.len()];
    let mut t = 0;
    for (label, m) in classes.iter().zip(&members) {
        if m.len() < k {
            return Err(KernelError::CrossValidation(format!(
                "class {label} has {} samples, fewer than the {k} folds",
                m.len()
            )));
        }
        for &i in m {
            fold_of[i] = t % k;
            t += 1;
        }
    }
    Ok((0..k)
        .map(|f| {
            let (test, train) = (0..y.len()).partition(|&i| fold_of[i] == f);
            Fold { train, test }
        })
        .collect())
}

/// Logistic regression with C chosen by stratified inner cross-validation (see the module
/// documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticCv {
    /// The grid of C values: finite, positive, strictly ascending.
    pub cs: Vec<f64>,
    /// Number of stratified folds, at least 2 and at most the smallest class's size.
    pub folds: usize,
}

/// The result of [`LogisticCv::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticCvFit {
    /// The model refitted on all training samples at the chosen C.
    pub model: LogisticRegression,
    /// The chosen C (a grid point).
    pub c: f64,
    /// Mean over folds of the held-out mean log-loss, per C of the grid.
    pub cv_loss: Vec<f64>,
}

impl LogisticCv {
    /// Chooses C on `x` (`[n_samples, n_features]`) and `y` (one label per sample) and refits
    /// at it. Errors as [`LogisticRegression::fit`], and on an empty or invalid grid or folds
    /// that cannot be made.
    pub fn fit<T: Real>(&self, x: ArrayView2<'_, T>, y: &[i64]) -> Result<LogisticCvFit> {
        if self.cs.is_empty() {
            return Err(KernelError::Parameter("the grid of C values is empty".into()));
        }
        for &c in &self.cs {
            check_c(c)?;
        }
        if self.cs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(KernelError::Parameter(format!(
                "C values must be sorted strictly ascending, got {:?}",
                self.cs
            )));
        }
        let (classes, index) = check_training(&x, y)?;
        let k = classes.len();
        let folds = stratified_kfold(y, self.folds)?;
        let x = x.mapv(Real::as_f64);
        let mut cv_loss = vec![0.0; self.cs.len()];
        for fold in &folds {
            let ys = fold.train.iter().map(|&i| index[i]).collect();
            let problem = Problem::new(x.select(Axis(0), &fold.train), ys, k);
            let mut x_test = x.select(Axis(0), &fold.test);
            x_test -= &problem.mean;
            let mut theta = vec![0.0; problem.dim()];
            for (ci, &c) in self.cs.iter().enumerate() {
                problem.solve(softmax_c(c, k), &mut theta, MAX_NEWTON)?;
                let z = problem.scores_of(x_test.view(), &theta);
                let loss: f64 = z
                    .rows()
                    .into_iter()
                    .zip(&fold.test)
                    .map(|(row, &i)| row_log_loss(row, index[i]))
                    .sum();
                cv_loss[ci] += loss / fold.test.len() as f64 / folds.len() as f64;
            }
        }
        let mut best = 0;
        for (ci, loss) in cv_loss.iter().enumerate() {
            // ascending grid: a strict `<` hands ties to the smaller C
            if *loss < cv_loss[best] {
                best = ci;
            }
        }
        let c = self.cs[best];
        let problem = Problem::new(x, index, k);
        let mut theta = vec![0.0; problem.dim()];
        let iterations = problem.solve(softmax_c(c, k), &mut theta, MAX_NEWTON)?;
        Ok(LogisticCvFit { model: problem.model(&theta, classes, c, iterations), c, cv_loss })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdm::npy_fixture as fx;
    use crate::rng::Rng;
    use ndarray::{Array3, s};
    use std::path::PathBuf;

    fn fixture(case: &str, name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/logistic/"))
            .join(case)
            .join(format!("{name}.npy"))
    }

    fn f64s(case: &str, name: &str) -> (Vec<usize>, Vec<f64>) {
        fx::f64s(&fixture(case, name))
    }

    fn arr2(case: &str, name: &str) -> Array2<f64> {
        let (shape, v) = f64s(case, name);
        Array2::from_shape_vec((shape[0], shape[1]), v).expect("2-d fixture")
    }

    fn arr3(case: &str, name: &str) -> Array3<f64> {
        let (shape, v) = f64s(case, name);
        Array3::from_shape_vec((shape[0], shape[1], shape[2]), v).expect("3-d fixture")
    }

    /// One case of `scripts/python/make_fixtures_logistic.py`.
    struct Case {
        x: Array2<f64>,
        y: Vec<i64>,
        x_test: Array2<f64>,
        cs: Vec<f64>,
        folds: Vec<i64>,
        coef: Array3<f64>,
        intercept: Array2<f64>,
        decision: Array3<f64>,
        proba: Array3<f64>,
        cv_loss: Vec<f64>,
        chosen_c: f64,
    }

    fn load(case: &str) -> Case {
        Case {
            x: arr2(case, "X"),
            y: fx::i64s(&fixture(case, "y")).1,
            x_test: arr2(case, "X_test"),
            cs: f64s(case, "cs").1,
            folds: fx::i64s(&fixture(case, "folds")).1,
            coef: arr3(case, "coef"),
            intercept: arr2(case, "intercept"),
            decision: arr3(case, "decision"),
            proba: arr3(case, "proba"),
            cv_loss: f64s(case, "cv_loss").1,
            chosen_c: f64s(case, "chosen_c").1[0],
        }
    }

    const CASES: [&str; 4] = ["three_class", "noisy", "wide", "binary"];

    fn max_abs_diff<'a>(
        a: impl IntoIterator<Item = &'a f64>,
        b: impl IntoIterator<Item = &'a f64>,
    ) -> f64 {
        a.into_iter().zip(b).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
    }

    fn max_abs<'a>(a: impl IntoIterator<Item = &'a f64>) -> f64 {
        a.into_iter().fold(0.0f64, |m, a| m.max(a.abs()))
    }

    /// scikit-learn's fits at every C: probabilities within 1e-7, decision values, weights and
    /// intercepts within 1e-6 of their largest magnitude (measured: probabilities 4.6e-11,
    /// decision values 6.9e-10 relative, weights 2.6e-10 relative).
    #[test]
    fn fits_match_scikit_learn() {
        let (mut worst_p, mut worst_d, mut worst_w) = (0.0f64, 0.0f64, 0.0f64);
        for name in CASES {
            let case = load(name);
            for (ci, &c) in case.cs.iter().enumerate() {
                let m = LogisticRegression::fit(case.x.view(), &case.y, c).unwrap();
                let mut sorted = case.y.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(m.classes(), sorted.as_slice());
                assert_eq!(m.c(), c);
                let proba = m.predict_proba(case.x_test.view()).unwrap();
                let want_p = case.proba.slice(s![ci, .., ..]);
                let d = max_abs_diff(&proba, want_p);
                assert!(d <= 1e-7, "{name} C={c}: probabilities differ by {d:e}");
                worst_p = worst_p.max(d);
                let dec = m.decision_function(case.x_test.view()).unwrap();
                let (dec, coef, intercept) = if sorted.len() == 2 {
                    // scikit-learn's single column: class 1 minus class 0
                    let diff =
                        |a: ArrayView2<'_, f64>| (&a.column(1) - &a.column(0)).insert_axis(Axis(1));
                    let c = m.coef();
                    let coef = (&c.row(1) - &c.row(0)).insert_axis(Axis(0));
                    let b = m.intercept();
                    (diff(dec.view()), coef, Array1::from(vec![b[1] - b[0]]))
                } else {
                    (dec, m.coef().to_owned(), m.intercept().to_owned())
                };
                let want = case.decision.slice(s![ci, .., ..]);
                let d = max_abs_diff(&dec, want) / max_abs(want);
                assert!(d <= 1e-6, "{name} C={c}: decision values differ by {d:e} (relative)");
                worst_d = worst_d.max(d);
                let want = case.coef.slice(s![ci, .., ..]);
                let d = max_abs_diff(&coef, want) / max_abs(want);
                assert!(d <= 1e-6, "{name} C={c}: weights differ by {d:e} (relative)");
                worst_w = worst_w.max(d);
                let want = case.intercept.row(ci);
                let d = max_abs_diff(&intercept, want) / max_abs(want).max(1.0);
                assert!(d <= 1e-6, "{name} C={c}: intercepts differ by {d:e}");
            }
        }
        println!(
            "vs scikit-learn: probabilities {worst_p:.1e}, decision values {worst_d:.1e} \
             (relative), weights {worst_w:.1e} (relative)"
        );
    }

    /// The same folds, the same per-C mean held-out log-loss (within 1e-7; measured 3.5e-10)
    /// and the same C as the fixture's loops over scikit-learn fits; the refit is the plain fit.
    #[test]
    fn cross_validation_matches_scikit_learn() {
        let mut worst = 0.0f64;
        for name in CASES {
            let case = load(name);
            let k = (*case.folds.iter().max().unwrap() + 1) as usize;
            let folds = stratified_kfold(&case.y, k).unwrap();
            for (f, fold) in folds.iter().enumerate() {
                let want: Vec<usize> =
                    (0..case.y.len()).filter(|&i| case.folds[i] == f as i64).collect();
                assert_eq!(fold.test, want, "{name}: fold {f}");
                assert_eq!(fold.train.len() + fold.test.len(), case.y.len());
            }
            let cv = LogisticCv { cs: case.cs.clone(), folds: k };
            let fit = cv.fit(case.x.view(), &case.y).unwrap();
            let d = max_abs_diff(&fit.cv_loss, &case.cv_loss);
            assert!(d <= 1e-7, "{name}: CV losses differ by {d:e}");
            worst = worst.max(d);
            assert_eq!(fit.c, case.chosen_c, "{name}: chosen C");
            assert_eq!(fit.model.c(), fit.c);
            let plain = LogisticRegression::fit(case.x.view(), &case.y, fit.c).unwrap();
            assert_eq!(fit.model, plain, "{name}: the refit is the plain fit at the chosen C");
        }
        println!("CV log-loss vs scikit-learn: {worst:.1e}");
    }

    /// Gaussian class clouds around N(0, spread²) means, features shifted by 5 (so that the
    /// intercepts matter), labels `13·k − 40` in a shuffled order.
    fn blobs(rng: &mut Rng, counts: &[usize], p: usize, spread: f64) -> (Array2<f64>, Vec<i64>) {
        let means: Array2<f64> = rng.normal_array((counts.len(), p));
        let mut order: Vec<usize> = (0..counts.iter().sum()).collect();
        rng.shuffle(&mut order);
        let class_of: Vec<usize> =
            counts.iter().enumerate().flat_map(|(k, &n)| std::iter::repeat_n(k, n)).collect();
        let noise: Array2<f64> = rng.normal_array((order.len(), p));
        let x = Array2::from_shape_fn((order.len(), p), |(i, j)| {
            5.0 + spread * means[(class_of[order[i]], j)] + noise[(i, j)]
        });
        let y = order.iter().map(|&i| 13 * class_of[i] as i64 - 40).collect();
        (x, y)
    }

    /// Naive softmax objective and gradient, by loops over samples, classes and features, in
    /// the model's own (uncentred) parameters.
    fn naive(x: &Array2<f64>, y: &[i64], m: &LogisticRegression, c: f64) -> (f64, Vec<f64>) {
        let (n, p) = x.dim();
        let k = m.classes().len();
        let (coef, b) = (m.coef(), m.intercept());
        let mut f = 0.0;
        let mut g_w = vec![0.0; k * p];
        let mut g_b = vec![0.0; k];
        for i in 0..n {
            let z: Vec<f64> = (0..k)
                .map(|c| b[c] + (0..p).map(|j| x[(i, j)] * coef[(c, j)]).sum::<f64>())
                .collect();
            let zmax = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let total: f64 = z.iter().map(|v| (v - zmax).exp()).sum();
            let yi = m.classes().iter().position(|&l| l == y[i]).unwrap();
            f += c * (zmax + total.ln() - z[yi]);
            for cl in 0..k {
                let r = (z[cl] - zmax).exp() / total - f64::from(u8::from(cl == yi));
                g_b[cl] += c * r;
                for j in 0..p {
                    g_w[cl * p + j] += c * r * x[(i, j)];
                }
            }
        }
        for cl in 0..k {
            for j in 0..p {
                f += 0.5 * coef[(cl, j)] * coef[(cl, j)];
                g_w[cl * p + j] += coef[(cl, j)];
            }
        }
        g_w.extend(g_b);
        (f, g_w)
    }

    fn zero_model(m: &LogisticRegression) -> LogisticRegression {
        let mut zero = m.clone();
        zero.coef.fill(0.0);
        zero.intercept.fill(0.0);
        zero
    }

    /// At the optimum the naive gradient vanishes (relative to its norm at zero; measured
    /// 1.7e-10: the solver stops at 1e-10 in its centred coordinates) and every perturbation raises the naive objective, except a common shift of
    /// the intercepts, which leaves it unchanged.
    #[test]
    fn optimum_has_zero_gradient_and_lowest_objective() {
        let mut rng = Rng::new(2014);
        let mut worst = 0.0f64;
        for (counts, p, spread, c) in [
            (&[15, 15, 15][..], 6, 1.0, 0.5),
            (&[6, 6, 6, 6][..], 30, 1.0, 5.0),
            (&[30, 10, 25, 20, 15, 20][..], 12, 0.7, 0.05),
            (&[40, 35, 25][..], 4, 3.0, 100.0),
        ] {
            let (x, y) = blobs(&mut rng, counts, p, spread);
            let m = LogisticRegression::fit(x.view(), &y, c).unwrap();
            let (f, g) = naive(&x, &y, &m, c);
            let (_, g0) = naive(&x, &y, &zero_model(&m), c);
            let rel = norm(&g) / norm(&g0);
            assert!(rel < 1e-9, "{counts:?} p={p} C={c}: gradient {rel:e} of its norm at 0");
            worst = worst.max(rel);
            assert!(m.intercept().sum().abs() < 1e-12 * max_abs(m.intercept()).max(1.0));
            let wsum = m.coef().sum_axis(Axis(0));
            assert!(max_abs(&wsum) < 1e-8 * max_abs(m.coef()), "weights sum to zero");
            for scale in [1e-4, 1e-2, 1.0] {
                for _ in 0..5 {
                    let mut q = m.clone();
                    let dw: Array2<f64> = rng.normal_array(q.coef.dim());
                    let db: Array1<f64> = rng.normal_array(q.intercept.dim());
                    let size = scale * max_abs(m.coef()).max(1.0);
                    q.coef.scaled_add(size / max_abs(&dw), &dw);
                    q.intercept.scaled_add(size / max_abs(&db), &db);
                    let (fq, _) = naive(&x, &y, &q, c);
                    assert!(fq > f, "{counts:?}: perturbation {scale} lowers {f} to {fq}");
                }
            }
            let mut shifted = m.clone();
            shifted.intercept += 3.0;
            let (fs, _) = naive(&x, &y, &shifted, c);
            assert!((fs - f).abs() < 1e-12 * f.abs(), "a common shift changes the objective");
        }
        println!("naive gradient at the optimum: {worst:.1e} of its norm at zero");
    }

    /// Converges over a wide range of C, on separable data (large C: large weights, an
    /// ill-conditioned Hessian) and on features of very different scales.
    #[test]
    fn converges_from_tiny_to_huge_c() {
        let mut rng = Rng::new(31);
        for (counts, p, spread) in [(&[10, 10, 10][..], 40, 2.0), (&[25, 25][..], 3, 4.0)] {
            let (mut x, y) = blobs(&mut rng, counts, p, spread);
            for (j, mut col) in x.columns_mut().into_iter().enumerate() {
                col.mapv_inplace(|v| v * 10f64.powi(j as i32 % 5 - 2));
            }
            for c in [1e-4, 1e-2, 1.0, 1e2, 1e4] {
                let m = LogisticRegression::fit(x.view(), &y, c).unwrap();
                let ce = softmax_c(c, counts.len());
                let (_, g) = naive(&x, &y, &m, ce);
                let (_, g0) = naive(&x, &y, &zero_model(&m), ce);
                let rel = norm(&g) / norm(&g0);
                assert!(rel < 1e-8, "{counts:?} C={c}: gradient {rel:e} ({} it)", m.iterations());
            }
        }
    }

    /// Two classes: scikit-learn's binomial objective `C·Σ loss + ½||w||²` at `w = W₁ − W₀`,
    /// `b₀ = b₁ − b₀` is at its minimum, and the softmax rows are `∓w/2`.
    #[test]
    fn two_classes_solve_the_binomial_problem() {
        let mut rng = Rng::new(77);
        let (x, y) = blobs(&mut rng, &[30, 20], 5, 0.8);
        let c = 2.0;
        let m = LogisticRegression::fit(x.view(), &y, c).unwrap();
        let w = &m.coef().row(1) - &m.coef().row(0);
        let b0 = m.intercept()[1] - m.intercept()[0];
        let d = max_abs_diff(&(&m.coef().row(1) + &m.coef().row(0)), &Array1::zeros(5));
        assert!(d < 1e-12, "rows ∓w/2");
        let grad = |w: &Array1<f64>, b0: f64| {
            let mut g = w.to_vec();
            g.push(0.0);
            for (i, &label) in y.iter().enumerate() {
                let t = f64::from(u8::from(label == m.classes()[1]));
                let q = 1.0 / (1.0 + (-(x.row(i).dot(w) + b0)).exp());
                for j in 0..5 {
                    g[j] += c * (q - t) * x[(i, j)];
                }
                g[5] += c * (q - t);
            }
            norm(&g)
        };
        let rel = grad(&w, b0) / grad(&Array1::zeros(5), 0.0);
        assert!(rel < 1e-9, "binomial gradient {rel:e}");
        // the softmax objective at C (not C/2) has a different optimum
        let (_, g) = naive(&x, &y, &m, c);
        assert!(norm(&g) > 1e-3);
        let (_, g) = naive(&x, &y, &m, c / 2.0);
        let (_, g0) = naive(&x, &y, &zero_model(&m), c / 2.0);
        assert!(norm(&g) / norm(&g0) < 1e-9);
    }

    /// f32 features give exactly the f64 fit of the same (widened) values, and within 1e-5 of
    /// the fit of the unrounded f64 data (measured 5.6e-8 in probabilities).
    #[test]
    fn single_precision_agrees_with_double() {
        let mut rng = Rng::new(5);
        let (x, y) = blobs(&mut rng, &[20, 25, 15], 8, 0.8);
        let x32 = x.mapv(|v| v as f32);
        let m32 = LogisticRegression::fit(x32.view(), &y, 0.3).unwrap();
        let widened = LogisticRegression::fit(x32.mapv(f64::from).view(), &y, 0.3).unwrap();
        assert_eq!(m32, widened);
        let m64 = LogisticRegression::fit(x.view(), &y, 0.3).unwrap();
        let d = max_abs_diff(
            &m32.predict_proba(x32.view()).unwrap(),
            &m64.predict_proba(x.view()).unwrap(),
        );
        assert!(d < 1e-5, "f32 probabilities differ by {d:e}");
        println!("f32 vs f64 probabilities: {d:.1e}");
        let cv = LogisticCv { cs: vec![0.01, 0.1, 1.0], folds: 3 };
        let (a, b) = (cv.fit(x32.view(), &y).unwrap(), cv.fit(x.view(), &y).unwrap());
        assert_eq!(a.c, b.c);
        assert!(max_abs_diff(&a.cv_loss, &b.cv_loss) < 1e-5);
    }

    #[test]
    fn results_are_deterministic_and_invariant() {
        let mut rng = Rng::new(9);
        let (x, y) = blobs(&mut rng, &[12, 18, 15, 10], 20, 0.6);
        let cv = LogisticCv { cs: vec![0.01, 0.1, 1.0, 10.0], folds: 4 };
        let a = cv.fit(x.view(), &y).unwrap();
        let b = cv.fit(x.view(), &y).unwrap();
        assert_eq!(a, b);
        let m = &a.model;
        let z = m.decision_function(x.view()).unwrap();
        assert!(z.rows().into_iter().all(|r| r.sum().abs() < 1e-12 * max_abs(&z)), "centred rows");
        // shifting a feature moves only the intercepts
        let mut shifted = x.clone();
        shifted.column_mut(3).mapv_inplace(|v| v + 100.0);
        let ms = LogisticRegression::fit(shifted.view(), &y, m.c()).unwrap();
        let d = max_abs_diff(&ms.decision_function(shifted.view()).unwrap(), &z) / max_abs(&z);
        assert!(d < 1e-9, "shift: {d:e}");
        // the order of the samples does not matter
        let order: Vec<usize> = (0..y.len()).rev().collect();
        let yr: Vec<i64> = order.iter().map(|&i| y[i]).collect();
        let mr = LogisticRegression::fit(x.select(Axis(0), &order).view(), &yr, m.c()).unwrap();
        let d = max_abs_diff(&mr.decision_function(x.view()).unwrap(), &z) / max_abs(&z);
        assert!(d < 1e-9, "order: {d:e}");
    }

    #[test]
    fn without_features_the_probabilities_are_the_class_frequencies() {
        for y in [vec![4, 4, 1, 9, 9, 9, 1, 9], vec![0, 1, 1, 1]] {
            let x = Array2::<f64>::zeros((y.len(), 0));
            let m = LogisticRegression::fit(x.view(), &y, 1.0).unwrap();
            let p = m.predict_proba(x.view()).unwrap();
            for (k, &label) in m.classes().iter().enumerate() {
                let freq = y.iter().filter(|&&l| l == label).count() as f64 / y.len() as f64;
                assert!((p[(0, k)] - freq).abs() < 1e-12, "{y:?}");
            }
        }
    }

    #[test]
    fn stratified_folds_follow_the_documented_rule() {
        // classes 1 (samples 1, 3, 4), 5 (0, 5, 6, 7) and 8 (2, 8): visited 1, 3, 4, 0, 5, 6,
        // 7, 2, 8 -> folds 0, 1, 0, 1, 0, 1, 0, 1, 0
        let y = [5, 1, 8, 1, 1, 5, 5, 5, 8];
        let folds = stratified_kfold(&y, 2).unwrap();
        assert_eq!(folds[0].test, vec![1, 4, 5, 7, 8]);
        assert_eq!(folds[1].test, vec![0, 2, 3, 6]);
        assert_eq!(folds[1].train, vec![1, 4, 5, 7, 8]);
        let e = stratified_kfold(&y, 3).unwrap_err();
        assert!(e.to_string().contains("class 8 has 2 samples"), "{e}");
        assert!(matches!(stratified_kfold(&y, 1), Err(KernelError::CrossValidation(_))));
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut rng = Rng::new(1);
        let (x, y) = blobs(&mut rng, &[5, 5, 5], 3, 1.0);
        let fit = |x: ArrayView2<'_, f64>, y: &[i64], c: f64| LogisticRegression::fit(x, y, c);
        let e = fit(x.view(), &y[1..], 1.0).unwrap_err();
        assert!(matches!(e, KernelError::Shape(_)) && e.to_string().contains("14 labels"), "{e}");
        let e = fit(x.view(), &[3; 15], 1.0).unwrap_err();
        assert!(e.to_string().contains("at least 2 classes"), "{e}");
        assert!(fit(x.slice(s![..0, ..]), &[], 1.0).is_err());
        for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = fit(x.view(), &y, c).unwrap_err();
            assert!(e.to_string().contains("C must be finite and > 0"), "{e}");
        }
        let mut bad = x.clone();
        bad[(4, 2)] = f64::NAN;
        let e = fit(bad.view(), &y, 1.0).unwrap_err();
        assert!(e.to_string().contains("non-finite value NaN at (4, 2)"), "{e}");
        bad[(4, 2)] = f64::INFINITY;
        assert!(fit(bad.view(), &y, 1.0).is_err());

        let m = fit(x.view(), &y, 1.0).unwrap();
        assert!(matches!(m.decision_function(x.slice(s![.., ..2])), Err(KernelError::Shape(_))));
        assert!(m.predict_proba(bad.view()).is_err());
        assert!(m.log_loss(x.view(), &y).unwrap() > 0.0);
        assert!(m.log_loss(x.view(), &[99; 15]).is_err());
        assert!(m.log_loss(x.view(), &y[1..]).is_err());

        let cv = |cs: Vec<f64>, folds| LogisticCv { cs, folds }.fit(x.view(), &y);
        assert!(cv(vec![], 3).unwrap_err().to_string().contains("empty"));
        assert!(cv(vec![1.0, 0.1], 3).unwrap_err().to_string().contains("ascending"));
        assert!(cv(vec![0.0, 1.0], 3).is_err());
        assert!(cv(vec![1.0, f64::NAN], 3).is_err());
        assert!(matches!(cv(vec![1.0], 6), Err(KernelError::CrossValidation(_))));
        assert!(matches!(cv(vec![1.0], 1), Err(KernelError::CrossValidation(_))));
        assert!(LogisticCv { cs: vec![1.0], folds: 3 }.fit(bad.view(), &y).is_err());
        assert!(cv(vec![0.1, 1.0], 5).is_ok());
    }

    #[test]
    fn a_solve_that_runs_out_of_iterations_is_an_error() {
        let mut rng = Rng::new(3);
        let (x, y) = blobs(&mut rng, &[10, 10, 10], 4, 2.0);
        let (_, index) = encode(&y);
        let problem = Problem::new(x, index, 3);
        let mut theta = vec![0.0; problem.dim()];
        let e = problem.solve(10.0, &mut theta, 2).unwrap_err();
        assert!(matches!(e, KernelError::Linalg(_)), "{e}");
        assert!(e.to_string().contains("did not converge"), "{e}");
        let mut theta = vec![0.0; problem.dim()];
        assert!(problem.solve(10.0, &mut theta, MAX_NEWTON).is_ok());
    }

    /// Run by hand:
    /// `cargo test --release -p brainfit-kernels --lib logistic::tests::timing -- --ignored
    /// --nocapture`
    #[test]
    #[ignore = "timing, run by hand in release mode"]
    fn timing_2000_samples_512_features_10_classes() {
        let mut rng = Rng::new(2021);
        let (mut x, y) = blobs(&mut rng, &[200; 10], 512, 0.15);
        // standardise, as a caller would
        let mean = x.mean_axis(Axis(0)).unwrap();
        let sd = x.std_axis(Axis(0), 0.0);
        x = (x - &mean) / &sd;
        for c in [0.01, 1.0, 100.0] {
            let start = std::time::Instant::now();
            let m = LogisticRegression::fit(x.view(), &y, c).unwrap();
            println!(
                "fit at C = {c}: {:.2} s, {} Newton iterations, training log-loss {:.3}",
                start.elapsed().as_secs_f64(),
                m.iterations(),
                m.log_loss(x.view(), &y).unwrap()
            );
        }
        let cv = LogisticCv { cs: vec![1e-3, 1e-2, 1e-1, 1.0, 10.0], folds: 5 };
        let start = std::time::Instant::now();
        let fit = cv.fit(x.view(), &y).unwrap();
        println!(
            "LogisticCv (5 C x 5 folds + refit): {:.2} s, chosen C {}, CV loss {:?}",
            start.elapsed().as_secs_f64(),
            fit.c,
            fit.cv_loss
        );
    }
}
