#!/usr/bin/env python3
"""Reference fixtures for brainfit's voxelwise LASSO (tests/golden_lasso.rs), from
scikit-learn's Lasso with a nested cross-validation written out as plain loops.

Usage (from the repository root):
    .venv-bench/bin/python scripts/python/make_fixtures_lasso.py

For each outer fold, inner fold, alpha and voxel, one Lasso(alpha, fit_intercept=True,
tol=1e-12, max_iter=1_000_000) is fitted (cold start; a ConvergenceWarning is an error).
Per outer fold and voxel, alpha minimises the mean over inner folds of each fold's test MSE,
exact ties going to the larger alpha; the model is refit on the outer training part with
that alpha and scored (R², Pearson r) on the outer test part.

Cross-checks while doing so: every solution satisfies the Lasso's KKT conditions; no grid
alpha sits within 1e-6 (relative) of a voxel's alpha_max, where implementations could
disagree on an all-zero solution; and the alpha choice has no near-tie (relative gap between
the best and any other grid point's MSE > 1e-6), except exact ties between alphas whose fits
are all-zero in every inner fold (identical predictions: the training mean).

Cases:
  kfold   n=120, p=30, 12 voxels (2 pure noise), KFold(5) outer and inner, no shuffle;
  groups  n=90, p=60, 8 voxels (2 pure noise), 6 runs of 15, LeaveOneGroupOut outer and
          inner (inner training parts of 60 samples for 60 features): the held-out case,
          generated once and not tuned on.

Files under tests/fixtures/lasso/<case>/: X, Y, alphas, groups (groups case), fold_alpha,
fold_alpha_index, fold_r2, fold_pearson [n_outer, v]; inner_cv_mse [n_outer, n_alphas, v];
coef0 [p, v] and intercept0 [v], the refit of outer fold 0 at each voxel's chosen alpha.
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
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import Lasso  # noqa: E402
from sklearn.model_selection import KFold, LeaveOneGroupOut  # noqa: E402

from make_fixtures import FIX, log, save  # noqa: E402

ALPHAS = np.logspace(-3, 0, 7)
TOL = 1e-12
MAX_ITER = 1_000_000


def make_data(seed, n, p, v, n_noise_vox, n_active):
    """Correlated features with means in [-3, 3]; each signal voxel has `n_active` N(0, 1)
    weights on a random support and a noise sd falling geometrically from 3 to 0.003 across
    voxels, so that the best alpha (which scales with the noise) moves along the grid; the last
    `n_noise_vox` voxels are pure noise (sd 1)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, p))
    X = z + 0.5 * z[:, rng.permutation(p)] + rng.uniform(-3.0, 3.0, size=p)
    W = np.zeros((p, v))
    for j in range(v - n_noise_vox):
        support = rng.choice(p, size=n_active, replace=False)
        W[support, j] = rng.standard_normal(n_active)
    noise_sd = np.concatenate([np.geomspace(3.0, 0.003, v - n_noise_vox), np.ones(n_noise_vox)])
    Y = X @ W + rng.uniform(-5.0, 5.0, size=v) + rng.standard_normal((n, v)) * noise_sd
    return X, Y


def fit(X, y, alpha):
    """scikit-learn's Lasso at alpha; asserts convergence and the KKT conditions."""
    model = Lasso(alpha=float(alpha), fit_intercept=True, tol=TOL, max_iter=MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model.fit(X, y)
    assert model.n_iter_ < MAX_ITER, model.n_iter_
    b = model.coef_
    xc = X - X.mean(0)
    yc = y - y.mean()
    grad = xc.T @ (yc - xc @ b) / len(y)
    on = b != 0
    kkt = max(np.max(np.abs(grad[on] - alpha * np.sign(b[on])), initial=0.0),
              np.max(np.abs(grad[~on]) - alpha, initial=0.0))
    assert kkt < 1e-6 * max(alpha, 1.0), (alpha, kkt)
    alpha_max = np.max(np.abs(xc.T @ yc)) / len(y)
    assert abs(alpha / alpha_max - 1.0) > 1e-6, (alpha, alpha_max)
    return model, kkt


def scores(truth, pred, constant):
    """R² (SS_tot about the truth's mean) and Pearson r, NaN where undefined (as brainfit):
    r is undefined for a `constant` prediction (an all-zero fit predicts the training mean;
    rounding in pred.mean() would otherwise leave an r of order 1e-16)."""
    yc = truth - truth.mean()
    pc = pred - pred.mean()
    ss_tot = yc @ yc
    ss_p = pc @ pc
    r2 = 1.0 - ((truth - pred) @ (truth - pred)) / ss_tot if ss_tot > 0 else np.nan
    defined = ss_tot > 0 and ss_p > 0 and not constant
    r = (yc @ pc) / np.sqrt(ss_tot * ss_p) if defined else np.nan
    return r2, r


def run_case(name, X, Y, outer, inner_fn, groups=None):
    out = FIX / "lasso" / name
    n, p = X.shape
    v = Y.shape[1]
    n_outer, n_alpha = len(outer), len(ALPHAS)
    fold_alpha_index = np.zeros((n_outer, v), dtype=np.int64)
    fold_r2 = np.zeros((n_outer, v))
    fold_pearson = np.zeros((n_outer, v))
    inner_mse = np.zeros((n_outer, n_alpha, v))
    coef0 = np.zeros((p, v))
    intercept0 = np.zeros(v)
    worst_kkt = 0.0
    min_gap = np.inf
    n_exact_ties = 0
    n_fits = 0
    for k, (tr, te) in enumerate(outer):
        inner = inner_fn(tr)
        # null[a, j]: every inner fit of voxel j at alpha a is all-zero
        null = np.ones((n_alpha, v), dtype=bool)
        for a_tr, a_te in inner:
            a_tr, a_te = tr[a_tr], tr[a_te]
            for i, alpha in enumerate(ALPHAS):
                for j in range(v):
                    model, kkt = fit(X[a_tr], Y[a_tr, j], alpha)
                    worst_kkt = max(worst_kkt, kkt)
                    n_fits += 1
                    null[i, j] &= not np.any(model.coef_)
                    err = Y[a_te, j] - model.predict(X[a_te])
                    inner_mse[k, i, j] += (err @ err) / len(a_te) / len(inner)
        for j in range(v):
            mse = inner_mse[k, :, j]
            best = n_alpha - 1 - int(np.argmin(mse[::-1]))  # ties: the larger alpha
            for i in range(n_alpha):
                if i == best:
                    continue
                if mse[i] == mse[best]:
                    assert null[i, j] and null[best, j], (name, k, j, i, best)
                    n_exact_ties += 1
                else:
                    gap = (mse[i] - mse[best]) / mse[best]
                    assert gap > 1e-6, f"{name}: near-tie fold {k} voxel {j}: {gap:g}"
                    min_gap = min(min_gap, gap)
            fold_alpha_index[k, j] = best
            model, kkt = fit(X[tr], Y[tr, j], ALPHAS[best])
            worst_kkt = max(worst_kkt, kkt)
            n_fits += 1
            pred = model.predict(X[te])
            constant = not np.any(model.coef_)
            fold_r2[k, j], fold_pearson[k, j] = scores(Y[te, j], pred, constant)
            if k == 0:
                coef0[:, j] = model.coef_
                intercept0[j] = model.intercept_
    fold_alpha = ALPHAS[fold_alpha_index]

    save(out / "X.npy", X)
    save(out / "Y.npy", Y)
    save(out / "alphas.npy", ALPHAS)
    if groups is not None:
        save(out / "groups.npy", groups, np.int64)
    save(out / "fold_alpha.npy", fold_alpha)
    save(out / "fold_alpha_index.npy", fold_alpha_index, np.int64)
    save(out / "fold_r2.npy", fold_r2)
    save(out / "fold_pearson.npy", fold_pearson)
    save(out / "inner_cv_mse.npy", inner_mse)
    save(out / "coef0.npy", coef0)
    save(out / "intercept0.npy", intercept0)
    counts = np.bincount(fold_alpha_index.ravel(), minlength=n_alpha)
    log(f"lasso/{name}: n={n} p={p} v={v} outer={n_outer}; {n_fits} Lasso fits, worst KKT "
        f"violation {worst_kkt:.2e}; chosen alpha counts over the grid {counts.tolist()}; "
        f"min rel gap best vs other inner MSE {min_gap:.3g}; exact (all-zero) ties "
        f"{n_exact_ties}; nonzero coef0 per voxel {np.count_nonzero(coef0, axis=0).tolist()}; "
        f"NaN Pearson {int(np.isnan(fold_pearson).sum())}; mean r2 per voxel "
        f"{np.round(np.nanmean(fold_r2, 0), 2).tolist()}")
    return counts


def main():
    log(f"scikit-learn {sklearn.__version__}, numpy {np.__version__}")

    def kfold_outer(m):
        return list(KFold(n_splits=5, shuffle=False).split(np.zeros(m)))

    def kfold_inner(tr):
        return kfold_outer(len(tr))

    X, Y = make_data(seed=4242, n=120, p=30, v=12, n_noise_vox=2, n_active=5)
    counts = run_case("kfold", X, Y, kfold_outer(120), kfold_inner)
    assert np.count_nonzero(counts) >= 4, f"chosen alphas do not spread: {counts}"

    groups = np.repeat(np.arange(6), 15).astype(np.int64)
    X, Y = make_data(seed=7070, n=90, p=60, v=8, n_noise_vox=2, n_active=8)
    outer = list(LeaveOneGroupOut().split(X, groups=groups))

    def logo_inner(tr):
        return list(LeaveOneGroupOut().split(np.zeros(len(tr)), groups=groups[tr]))

    run_case("groups", X, Y, outer, logo_inner, groups=groups)

    total = sum(f.stat().st_size for f in (FIX / "lasso").rglob("*") if f.is_file())
    log(f"lasso fixtures total size: {total / 1024:.1f} KiB")
    assert total < 150 * 1024


if __name__ == "__main__":
    main()
