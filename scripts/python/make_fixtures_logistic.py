#!/usr/bin/env python3
"""Reference fixtures for brainfit's multinomial logistic regression
(crates/brainfit-kernels/src/logistic.rs), from scikit-learn's LogisticRegression, with the
cross-validated choice of C written out as plain loops over brainfit's stratified folds.

Usage (from the repository root):
    .venv-bench/bin/python scripts/python/make_fixtures_logistic.py

Every fit is LogisticRegression(C=C, l1_ratio=0.0 (the L2 penalty; `penalty="l2"` is deprecated
in scikit-learn 1.8+), fit_intercept=True, tol=1e-12, max_iter=100_000, solver=SOLVER): the
multinomial (softmax) loss for K >= 3 classes, the binomial loss for K = 2 (coef_ [1, p],
one decision column); a ConvergenceWarning is an error.

Solver: "newton-cholesky", not the default "lbfgs". Both minimise the same objective, but
lbfgs, even at tol=1e-12, stops on scipy's relative-decrease test (ftol = 64·eps) with
probabilities up to ~1e-5 from the optimum on these cases (largest difference from the
newton-cholesky fits: 6.2e-6 on `wide`, 6.4e-7 on `three_class`), too loose to test
brainfit's 1e-7; newton-cholesky lands within ~1e-13 of exact Newton steps. Every
newton-cholesky fit is cross-checked against an lbfgs fit (probabilities within 2e-5) and
against exact Newton steps (below).

Conventions shared with the Rust side:
  * classes in ascending label order (labels are arbitrary int64 values);
  * intercepts and each row of decision values centred to sum zero over the classes
    (the softmax ignores a common shift; scikit-learn's multinomial solution already has
    sum-zero weights and intercepts, up to rounding);
  * stratified folds: visit the classes in ascending label order and each class's samples in
    ascending index order; the t-th sample visited goes to fold t mod k (`stratified_folds`);
  * CV loss per C: mean over folds of each held-out fold's mean log-loss, i.e. sklearn's
    `log_loss(y_test, predict_proba(X_test), labels=classes)`; the best C minimises it, exact
    ties going to the smaller C (the stronger penalty).

Cross-checks: a few exact Newton steps from scikit-learn's solution (full Hessian, numpy, on
the objective C·Σ loss + ½||W||² (multinomial) or C·Σ loss + ½||w||² (binary)) bring the
gradient below 1e-11 of its norm at zero and move the probabilities by < 1e-11 and the decision
values by < 1e-10 (relative), so scikit-learn's answer is the optimum to test against; the
held-out log-losses need no clipping (equal to −log p computed from the decision values); no
near-tie in the choice of C (relative gap > 1e-6).

Cases (seeded numpy default_rng):
  three_class  K=3, n=60 (25/20/15 samples, unbalanced), p=10, labels {-1, 4, 17}; 5 folds
  noisy        K=3, n=90 (30 each), p=8, labels {0, 1, 2}, weakly separable; 5 folds
  wide         K=5, n=40 (8 each), p=100 > n (separable: the penalty alone bounds W),
               labels {10, 20, 30, 40, 50}; 4 folds
  binary       K=2, n=50 (28/22), p=6, labels {-3, 7}; 5 folds
All with C in [0.001, 0.01, 0.1, 1, 10], features with differing means and scales, 15 held-out
test samples. The class separations (`spread`) were set so that the CV choice is interior.

Files under tests/fixtures/logistic/<case>/: X [n, p], y [n] int64, X_test [m, p], cs [nC],
folds [n] int64 (fold id per sample), and per C (leading axis): coef [nC, K', p],
intercept [nC, K'], decision [nC, m, K'] (K' = 1 for binary: scikit-learn's own shapes; for
K >= 3 intercept and decision rows are centred), proba [nC, m, K]; cv_loss [nC],
chosen_c [1].
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from scipy.special import logsumexp, softmax  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402

from make_fixtures import FIX, log, save  # noqa: E402

CS = np.array([1e-3, 1e-2, 1e-1, 1.0, 10.0])
TOL = 1e-12
MAX_ITER = 100_000
SOLVER = "newton-cholesky"


def stratified_folds(y, k):
    """brainfit's rule: classes ascending, samples ascending within a class, round-robin."""
    fold = np.empty(len(y), dtype=np.int64)
    t = 0
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        assert len(members) >= k, f"class {c} has {len(members)} members for {k} folds"
        for i in members:
            fold[i] = t % k
            t += 1
    return fold


def fit(X, y, C, solver=SOLVER):
    model = LogisticRegression(C=float(C), l1_ratio=0.0, fit_intercept=True, tol=TOL,
                               max_iter=MAX_ITER, solver=solver)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model.fit(X, y)
    assert np.all(model.n_iter_ < MAX_ITER), model.n_iter_
    return model


def softmax_params(model):
    """(W [K, p], b [K]) of the softmax model equal to the fitted one, intercept centred: for
    binary, the logit d = x·w + b0 is the difference of classes 1 and 0, split ±d/2."""
    if len(model.classes_) == 2:
        w, b0 = model.coef_[0], model.intercept_[0]
        return np.stack([-w / 2, w / 2]), np.array([-b0 / 2, b0 / 2])
    b = model.intercept_ - model.intercept_.mean()
    return model.coef_.copy(), b


def objective_parts(X, yi, W, b, C, binary):
    """Gradient and full Hessian of the objective scikit-learn minimises, in the parameters
    (w, b0) for binary and (W, b) flattened (class-major: W[k], then b) otherwise."""
    n, p = X.shape
    Xa = np.hstack([X, np.ones((n, 1))])
    if binary:
        w = np.concatenate([W[1] - W[0], [b[1] - b[0]]])
        z = Xa @ w
        q = 1.0 / (1.0 + np.exp(-z))
        t = (yi == 1).astype(float)
        reg = np.concatenate([w[:-1], [0.0]])
        grad = C * Xa.T @ (q - t) + reg
        hess = C * (Xa.T * (q * (1 - q))) @ Xa + np.diag(np.concatenate([np.ones(p), [0.0]]))
        return w, grad, hess
    K = W.shape[0]
    theta = np.hstack([W, b[:, None]])  # [K, p+1]
    Z = Xa @ theta.T
    P = softmax(Z, axis=1)
    Y = np.eye(K)[yi]
    reg = np.hstack([W, np.zeros((K, 1))])
    grad = C * (P - Y).T @ Xa + reg  # [K, p+1]
    hess = np.zeros((K, p + 1, K, p + 1))
    for k in range(K):
        for m in range(K):
            d = P[:, k] * ((k == m) - P[:, m])
            hess[k, :, m, :] = C * (Xa.T * d) @ Xa
        hess[k, :p, k, :p] += np.eye(p)
    dim = K * (p + 1)
    return theta.ravel(), grad.ravel(), hess.reshape(dim, dim)


def polish(X, yi, W, b, C, binary):
    """Exact Newton steps from (W, b) (pseudo-inverse: the softmax's common-shift direction of
    the intercepts is flat). Returns the polished softmax parameters and the gradient norm
    before and after, relative to the gradient norm at zero."""
    K, p = W.shape
    _, g_zero, _ = objective_parts(X, yi, np.zeros_like(W), np.zeros(K), C, binary)
    theta, g, _ = objective_parts(X, yi, W, b, C, binary)
    g_start = np.linalg.norm(g)
    for _ in range(6):
        theta, g, h = objective_parts(X, yi, W, b, C, binary)
        step = np.linalg.lstsq(h, -g, rcond=1e-13)[0]
        theta = theta + step
        if binary:
            W = np.stack([-theta[:p] / 2, theta[:p] / 2])
            b = np.array([-theta[p] / 2, theta[p] / 2])
        else:
            t = theta.reshape(K, p + 1)
            W, b = t[:, :p], t[:, p] - t[:, p].mean()
    _, g, _ = objective_parts(X, yi, W, b, C, binary)
    scale = np.linalg.norm(g_zero)
    return W, b, g_start / scale, np.linalg.norm(g) / scale


def run_case(name, X, y, X_test, k):
    out = FIX / "logistic" / name
    classes = np.unique(y)
    K = len(classes)
    binary = K == 2
    yi = np.searchsorted(classes, y)
    folds = stratified_folds(y, k)
    m = X_test.shape[0]
    kk = 1 if binary else K
    coef = np.zeros((len(CS), kk, X.shape[1]))
    intercept = np.zeros((len(CS), kk))
    decision = np.zeros((len(CS), m, kk))
    proba = np.zeros((len(CS), m, K))
    cv_loss = np.zeros(len(CS))
    worst = {"grad_rel": 0.0, "proba": 0.0, "decision_rel": 0.0, "centre": 0.0,
             "wsum": 0.0, "clip": 0.0, "lbfgs": 0.0}
    for ci, C in enumerate(CS):
        model = fit(X, y, C)
        W, b = softmax_params(model)
        worst["centre"] = max(worst["centre"], abs(model.intercept_.sum()) if not binary else 0)
        worst["wsum"] = max(worst["wsum"], np.abs(W.sum(0)).max())
        Wp, bp, g_rel, g_rel_polished = polish(X, yi, W, b, C, binary)
        worst["grad_rel"] = max(worst["grad_rel"], g_rel)
        assert g_rel_polished < 1e-11, (name, C, g_rel_polished)
        d_sk = X_test @ W.T + b
        d_pol = X_test @ Wp.T + bp
        p_sk = model.predict_proba(X_test)
        assert np.allclose(p_sk, softmax(d_sk, axis=1), rtol=0, atol=1e-14)
        dp = np.abs(softmax(d_pol, axis=1) - p_sk).max()
        dd = np.abs(d_pol - d_sk).max() / np.abs(d_pol).max()
        assert dp < 1e-11 and dd < 1e-10, (name, C, dp, dd)
        lbfgs = np.abs(fit(X, y, C, "lbfgs").predict_proba(X_test) - p_sk).max()
        assert lbfgs < 2e-5, (name, C, lbfgs)
        worst["lbfgs"] = max(worst["lbfgs"], lbfgs)
        worst["proba"] = max(worst["proba"], dp)
        worst["decision_rel"] = max(worst["decision_rel"], dd)
        dec = model.decision_function(X_test)
        if binary:
            dec = dec[:, None]
        else:
            dec = dec - dec.mean(1, keepdims=True)
            assert np.abs(dec - d_sk).max() < 1e-12 * max(1.0, np.abs(d_sk).max())
        coef[ci] = model.coef_
        intercept[ci] = model.intercept_ if binary else b
        decision[ci] = dec
        proba[ci] = p_sk
        # cross-validated log-loss over the saved folds
        for f in range(k):
            tr, te = folds != f, folds == f
            mf = fit(X[tr], y[tr], C)
            assert np.array_equal(mf.classes_, classes)
            pr = mf.predict_proba(X[te])
            ll = log_loss(y[te], pr, labels=classes)
            Wf, bf = softmax_params(mf)
            z = X[te] @ Wf.T + bf
            exact = np.mean(logsumexp(z, axis=1) - z[np.arange(te.sum()), yi[te]])
            worst["clip"] = max(worst["clip"], abs(ll - exact))
            assert abs(ll - exact) < 1e-12, (name, C, f, ll, exact)
            cv_loss[ci] += ll / k
    best = int(np.argmin(cv_loss))  # first minimum: ties to the smaller C
    gaps = [(cv_loss[i] - cv_loss[best]) / cv_loss[best] for i in range(len(CS)) if i != best]
    assert min(gaps) > 1e-6, (name, gaps)

    save(out / "X.npy", X)
    save(out / "y.npy", y, np.int64)
    save(out / "X_test.npy", X_test)
    save(out / "cs.npy", CS)
    save(out / "folds.npy", folds, np.int64)
    save(out / "coef.npy", coef)
    save(out / "intercept.npy", intercept)
    save(out / "decision.npy", decision)
    save(out / "proba.npy", proba)
    save(out / "cv_loss.npy", cv_loss)
    save(out / "chosen_c.npy", [CS[best]])
    log(f"logistic/{name}: n={X.shape[0]} p={X.shape[1]} K={K} folds={k}; cv loss "
        f"{np.round(cv_loss, 4).tolist()} -> C={CS[best]} (min rel gap {min(gaps):.3g}); "
        f"sklearn vs Newton-polished: grad/grad0 <= {worst['grad_rel']:.1e}, proba "
        f"{worst['proba']:.1e}, decision (rel) {worst['decision_rel']:.1e}; |sum W| "
        f"{worst['wsum']:.1e}, |sum b| {worst['centre']:.1e}; log_loss vs exact "
        f"{worst['clip']:.1e}; lbfgs proba vs {SOLVER} {worst['lbfgs']:.1e}")
    return best


def make_data(rng, counts, p, spread, noise):
    """Class means N(0, spread²) per feature, samples mean + N(0, noise²); then each feature
    shifted by U(-2, 2) and scaled by exp(U(-0.5, 0.5)), and the rows shuffled."""
    K = len(counts)
    means = rng.standard_normal((K, p)) * spread
    yi = np.repeat(np.arange(K), counts)
    X = means[yi] + rng.standard_normal((len(yi), p)) * noise
    shift = rng.uniform(-2.0, 2.0, p)
    scale = np.exp(rng.uniform(-0.5, 0.5, p))
    X = X * scale + shift
    order = rng.permutation(len(yi))
    m = 15
    yt = rng.integers(0, K, m)
    X_test = (means[yt] + rng.standard_normal((m, p)) * noise) * scale + shift
    return X[order], yi[order], X_test


def main():
    log(f"scikit-learn {sklearn.__version__}, numpy {np.__version__}")
    rng = np.random.default_rng(20140)
    labels = np.array([-1, 4, 17])
    X, yi, Xt = make_data(rng, [25, 20, 15], 10, spread=0.6, noise=1.0)
    run_case("three_class", X, labels[yi], Xt, 5)

    rng = np.random.default_rng(20141)
    X, yi, Xt = make_data(rng, [30, 30, 30], 8, spread=0.3, noise=1.0)
    run_case("noisy", X, yi.astype(np.int64), Xt, 5)

    rng = np.random.default_rng(20142)
    labels = np.array([10, 20, 30, 40, 50])
    X, yi, Xt = make_data(rng, [8] * 5, 100, spread=0.2, noise=1.0)
    run_case("wide", X, labels[yi], Xt, 4)

    rng = np.random.default_rng(20143)
    labels = np.array([-3, 7])
    X, yi, Xt = make_data(rng, [28, 22], 6, spread=0.3, noise=1.0)
    run_case("binary", X, labels[yi], Xt, 5)

    total = sum(f.stat().st_size for f in (FIX / "logistic").rglob("*") if f.is_file())
    log(f"logistic fixtures total size: {total / 1024:.1f} KiB")
    assert total < 150 * 1024


if __name__ == "__main__":
    main()
