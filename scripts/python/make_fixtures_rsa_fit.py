#!/usr/bin/env python3
"""Reference fixtures for brainfit's RDM model fitting (crates/brainfit-kernels/src/rsa_fit.rs):
non-negative least squares, reweighted RSA under cross-validation over conditions, unit
weighting, RDM variance partitioning and Nili et al. (2014) noise ceilings.

Usage (from the repository root):
    .venv-bench/bin/python scripts/python/make_fixtures_rsa_fit.py
    (or: .venv-bench/bin/python scripts/python/make_fixtures.py rsa_fit)

Deterministic (numpy default_rng with fixed seeds). Real data from tests/data/kriegeskorte2008/
(override with KRIEG_DIR=...): the 8 model RDMs, the pooled human IT RDM and the 4 subjects x 2
sessions human IT RDMs. Condensed RDMs are the upper triangle (k=1), row-major. Values in the
CSV files are Python repr() of float64.

Files under tests/fixtures/rsa_fit/:
  nnls_<case>_a.npy [m, n], nnls_<case>_y.npy [m], nnls_<case>_x.npy [n]
      scipy.optimize.nnls(a, y); cases in nnls_cases.csv (case, m, n, unique, rnorm): tall
      (60x8), wideish (20x15), collinear (50x6: highly correlated columns of very different
      scales), negative (every column negatively correlated with y: x = 0), rank_deficient
      (40x6, one column the sum of two others: x is not unique, A x is; unique = 0).
  theta_rsatoolbox_corr.npy [8]
      rsatoolbox fit_regress_nn(ModelWeighted(8 models * 1e-3), human_it_rdm, method='corr'):
      the non-negative weights of the centred models, normalised to unit norm (the 1e-3 keeps
      rsatoolbox's absolute stopping threshold reachable; theta does not depend on it).
  cv_<case>_folds.npy [n_conditions] int64    each condition's fold
  cv_<case>_fold_weights.npy [k, n_models]    weights fitted on each fold's training pairs
  cv_<case>_intercepts.npy [k + 1]            the folds' intercepts, then the all-pairs one
  cv_<case>_full_weights.npy [n_models]       weights fitted on all pairs
  cv_scores.csv (case, method, fold, value)   fold = 0..k-1, "mean", or "unweighted" (the
                                              mean over folds of the models summed with
                                              equal weights, scored on the same test pairs)
      Naive loops: for fold f, train pairs = both conditions outside f, test pairs = both
      inside f; y and the model RDVs centred over the train pairs, scipy nnls, intercept =
      mean(y) - mean(X) w; prediction on the test pairs scored against the brain with
      scipy.stats.spearmanr / pearsonr, cosine (numpy) and Kendall's tau-a (naive double
      loop). Cases: real (the 8 models fitted to human_it_rdm, 92 conditions, 4 folds) and
      units (unit weighting: 24 conditions x 10 units, brain = sum_k w_k (x_ik - x_jk)^2 +
      noise, 4 folds).
  units_x.npy [24, 10], units_brain.npy [276], units_regressors.npy [10, 276]
      the units case's activations, brain RDV and per-unit (x_ik - x_jk)^2 regressors.
  pca_x.npy [30, 12], pca_scores.npy [30, 5]
      sklearn PCA(n_components=5, svd_solver='full').fit_transform(pca_x) (signs as sklearn's).
  r2.csv (models, r2)
      in-sample R^2 of numpy.linalg.lstsq with an intercept column, human_it_rdm on the model
      rows listed (space-separated indices into model_rdms.npy).
  noise_ceiling.csv (case, method, lower, upper)
      rsatoolbox boot_noise_ceiling(RDMs, method) (leave one RDM out; rdm_descriptor='index');
      case subjects4 = the 4 subjects' RDMs averaged over the 2 sessions, sessions8 = all 8
      subject x session RDMs; methods spearman, corr, cosine, tau-a, rho-a, tau-b, corr_cov
      (brainfit's spellings in the file: spearman, pearson, cosine, kendall_tau_a, rho_a,
      tau_b, corr_cov).
  pool_subjects4.npy [4, 4186]
      rsatoolbox util.inference_util.pool_rdm of the subjects4 RDMs for spearman, corr, cosine,
      tau-a (rows in that order); rho-a pools as spearman, tau-b as tau-a and corr_cov as corr
      (asserted).
"""
from __future__ import annotations

import csv
import os
import sys
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
from scipy.optimize import nnls  # noqa: E402
from scipy.spatial.distance import squareform  # noqa: E402

from make_fixtures import FIX, KRIEG, log, save  # noqa: E402

OUT = FIX / "rsa_fit"
METHODS = ("spearman", "pearson", "kendall_tau_a", "cosine")


def condensed(square):
    return squareform(np.asarray(square, dtype=np.float64), checks=False)


def write_csv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            w.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v for v in r])


# ---------------------------------------------------------------------------
# NNLS
# ---------------------------------------------------------------------------

def check_kkt(a, y, x, tol):
    """x >= 0; gradient g = A'(Ax - y) >= 0 where x = 0 and = 0 where x > 0."""
    g = a.T @ (a @ x - y)
    scale = np.linalg.norm(a, axis=0) * np.linalg.norm(y)
    assert np.all(x >= 0)
    assert np.all(g >= -tol * scale), (g, scale)
    assert np.all(np.abs(g[x > 0]) <= tol * scale[x > 0]), g


def fixture_nnls():
    from rsatoolbox.model.fitter import _nn_least_squares

    rng = np.random.default_rng(101)
    cases = {}
    a = rng.standard_normal((60, 8))
    w = np.array([1.5, -0.7, 0.0, 2.0, 0.3, -1.0, 0.8, 0.0])
    cases["tall"] = (a, a @ w + 0.3 * rng.standard_normal(60), True)

    a = rng.standard_normal((20, 15))
    w = rng.standard_normal(15)
    cases["wideish"] = (a, a @ w + 0.5 * rng.standard_normal(20), True)

    base = rng.standard_normal((50, 3))
    a = np.column_stack([
        base[:, 0],
        base[:, 1],
        base[:, 0] + base[:, 1] + 1e-2 * rng.standard_normal(50),
        base[:, 2],
        base[:, 0] - 0.5 * base[:, 2] + 1e-2 * rng.standard_normal(50),
        rng.standard_normal(50),
    ]) * np.array([1.0, 100.0, 0.01, 3.0, 1e3, 0.5])
    y = a @ np.array([0.4, 0.01, 50.0, 0.0, 1e-3, -1.0]) + 0.1 * rng.standard_normal(50)
    cases["collinear"] = (a, y, True)

    a = np.abs(rng.standard_normal((30, 5))) + 0.1
    y = -a @ np.abs(rng.standard_normal(5)) + 0.05 * rng.standard_normal(30)
    assert np.all(a.T @ y < 0)
    cases["negative"] = (a, y, True)

    a = rng.standard_normal((40, 6))
    a[:, 5] = a[:, 1] + a[:, 2]
    y = a[:, :5] @ np.array([1.0, 0.5, 0.7, -0.3, 0.2]) + 0.2 * rng.standard_normal(40)
    cases["rank_deficient"] = (a, y, False)

    rows = []
    for name, (a, y, unique) in cases.items():
        x, rnorm = nnls(a, y)
        check_kkt(a, y, x, 1e-10)
        assert abs(rnorm - np.linalg.norm(a @ x - y)) < 1e-9 * np.linalg.norm(y)
        if name == "negative":
            assert np.all(x == 0)
        x_rsa, _ = _nn_least_squares(a, y)
        fit_gap = np.max(np.abs(a @ x_rsa - a @ x)) / np.linalg.norm(y)
        assert fit_gap < 1e-7, (name, fit_gap)
        save(OUT / f"nnls_{name}_a.npy", a)
        save(OUT / f"nnls_{name}_y.npy", y)
        save(OUT / f"nnls_{name}_x.npy", x)
        rows.append([name, a.shape[0], a.shape[1], int(unique), float(rnorm)])
        log(f"nnls {name}: {a.shape}, {np.sum(x > 0)} positive weights, rnorm {rnorm:.6g}, "
            f"rsatoolbox fit gap {fit_gap:.2e}")
    write_csv(OUT / "nnls_cases.csv", ["case", "m", "n", "unique", "rnorm"], rows)


# ---------------------------------------------------------------------------
# Reweighted RSA: naive loops
# ---------------------------------------------------------------------------

def fit_nn_intercept(x, y):
    """NNLS of y on the columns of x with a free intercept (everything centred first)."""
    xm, ym = x.mean(0), y.mean()
    w, _ = nnls(x - xm, y - ym)
    return w, ym - xm @ w


def tau_a(x, y):
    n = len(x)
    s = 0.0
    for i in range(n):
        s += np.sum(np.sign(x[i + 1:] - x[i]) * np.sign(y[i + 1:] - y[i]))
    return s / (n * (n - 1) / 2)


def score(pred, truth, method):
    if method == "spearman":
        return scipy.stats.spearmanr(pred, truth).statistic
    if method == "pearson":
        return scipy.stats.pearsonr(pred, truth).statistic
    if method == "cosine":
        return pred @ truth / np.sqrt((pred @ pred) * (truth @ truth))
    if method == "kendall_tau_a":
        return tau_a(pred, truth)
    raise ValueError(method)


def naive_crossval(models, brain, folds):
    """models [n_models, n_pairs], brain [n_pairs], folds [n_conditions]: per-fold weights,
    intercepts, scores per method (pair by pair, as written down)."""
    n = len(folds)
    k = folds.max() + 1
    weights, intercepts, scores = [], [], {m: [] for m in METHODS}
    unweighted = {m: [] for m in METHODS}
    for f in range(k):
        train, test = [], []
        p = 0
        for i in range(n):
            for j in range(i + 1, n):
                if folds[i] != f and folds[j] != f:
                    train.append(p)
                elif folds[i] == f and folds[j] == f:
                    test.append(p)
                p += 1
        assert p == len(brain)
        w, b = fit_nn_intercept(models[:, train].T, brain[train])
        pred = b + models[:, test].T @ w
        weights.append(w)
        intercepts.append(b)
        for m in METHODS:
            scores[m].append(score(pred, brain[test], m))
            unweighted[m].append(score(models[:, test].sum(0), brain[test], m))
    w_all, b_all = fit_nn_intercept(models.T, brain)
    return np.array(weights), np.array(intercepts + [b_all]), w_all, scores, unweighted


def balanced_folds(rng, n, k):
    perm = rng.permutation(n)
    folds = np.empty(n, dtype=np.int64)
    folds[perm] = np.arange(n) * k // n
    return folds


def load_real():
    names = [s.strip() for s in (KRIEG / "model_names.txt").read_text().splitlines() if s.strip()]
    models = np.array([condensed(m) for m in np.load(KRIEG / "model_rdms.npy")])
    human = np.load(KRIEG / "human_it_rdm.npy")
    return names, models, human


def fixture_reweighted():
    from rsatoolbox.model import ModelWeighted
    from rsatoolbox.model.fitter import fit_regress_nn
    from rsatoolbox.rdm import RDMs

    names, models, human = load_real()
    # rsatoolbox: centred models, NNLS, weights normalised to unit norm. Its _nn_least_squares
    # stops when max(A'(y - A x)) <= 100 eps, an absolute threshold: on these RDMs as they are,
    # the gradient's rounding (~4e-14) stays above it and the loop never ends (rsatoolbox
    # 0.3.2). The models are scaled by 1e-3, which scales the gradient, not the normalised
    # weights (theta is invariant to a common scale of the models).
    theta = fit_regress_nn(ModelWeighted("all", RDMs(models * 1e-3)), RDMs(human[None, :]),
                           method="corr")
    w, _ = fit_nn_intercept(models.T, human)
    assert np.allclose(theta, w / np.linalg.norm(w), rtol=0, atol=1e-9), (theta, w)
    save(OUT / "theta_rsatoolbox_corr.npy", theta)
    log("reweighted: rsatoolbox theta (corr) = "
        + ", ".join(f"{n}={t:.4f}" for n, t in zip(names, theta)))

    rows = []
    rng = np.random.default_rng(202)
    cases = {"real": (models, human, balanced_folds(rng, 92, 4))}

    # unit weighting: brain = weighted squared distances over units + noise
    x = rng.standard_normal((24, 10))
    w_units = np.array([2.0, 0.0, 0.5, 0.0, 1.0, 0.0, 0.0, 3.0, 0.0, 0.25])
    regs = np.array([[(x[i, u] - x[j, u]) ** 2 for i in range(24) for j in range(i + 1, 24)]
                     for u in range(10)])
    brain = regs.T @ w_units + 0.5 * rng.standard_normal(regs.shape[1]) + 1.0
    cases["units"] = (regs, brain, balanced_folds(rng, 24, 4))
    save(OUT / "units_x.npy", x)
    save(OUT / "units_brain.npy", brain)
    save(OUT / "units_regressors.npy", regs)

    for case, (mods, y, folds) in cases.items():
        fw, icpt, w_all, scores, unweighted = naive_crossval(mods, y, folds)
        save(OUT / f"cv_{case}_folds.npy", folds, np.int64)
        save(OUT / f"cv_{case}_fold_weights.npy", fw)
        save(OUT / f"cv_{case}_intercepts.npy", icpt)
        save(OUT / f"cv_{case}_full_weights.npy", w_all)
        for m in METHODS:
            for f, s in enumerate(scores[m]):
                rows.append([case, m, f, float(s)])
            rows.append([case, m, "mean", float(np.mean(scores[m]))])
            rows.append([case, m, "unweighted", float(np.mean(unweighted[m]))])
        log(f"cv {case}: mean spearman {np.mean(scores['spearman']):.4f} "
            f"(unweighted {np.mean(unweighted['spearman']):.4f}), "
            f"full weights {np.round(w_all, 3)}")
    write_csv(OUT / "cv_scores.csv", ["case", "method", "fold", "value"], rows)


# ---------------------------------------------------------------------------
# PCA scores
# ---------------------------------------------------------------------------

def fixture_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(303)
    x = rng.standard_normal((30, 12)) @ np.diag(np.geomspace(5.0, 0.2, 12)) \
        @ np.linalg.qr(rng.standard_normal((12, 12)))[0] + rng.uniform(-2, 2, 12)
    scores = PCA(n_components=5, svd_solver="full").fit_transform(x)
    u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    ref = u[:, :5] * s[:5]
    assert np.allclose(np.abs(scores), np.abs(ref), atol=1e-10)
    save(OUT / "pca_x.npy", x)
    save(OUT / "pca_scores.npy", scores)
    log(f"pca: singular values {np.round(s[:6], 3)}")


# ---------------------------------------------------------------------------
# R^2 of model RDMs (variance partitioning's building block)
# ---------------------------------------------------------------------------

def fixture_r2():
    _, models, human = load_real()
    rows = []
    for subset in ([0], [0, 1], [2, 3, 4], [5, 6, 7], [1, 4, 6], list(range(8))):
        a = np.column_stack([np.ones(len(human))] + [models[i] for i in subset])
        beta, *_ = np.linalg.lstsq(a, human, rcond=None)
        res = human - a @ beta
        r2 = 1.0 - (res @ res) / np.sum((human - human.mean()) ** 2)
        rows.append([" ".join(map(str, subset)), float(r2)])
        log(f"r2 {subset}: {r2:.6f}")
    write_csv(OUT / "r2.csv", ["models", "r2"], rows)


# ---------------------------------------------------------------------------
# Noise ceilings
# ---------------------------------------------------------------------------

def fixture_noise_ceiling():
    from rsatoolbox.inference.noise_ceiling import boot_noise_ceiling
    from rsatoolbox.rdm import RDMs, compare
    from rsatoolbox.util.inference_util import pool_rdm

    sq = np.load(KRIEG / "human_it_rdms.npy")  # [subjects, sessions, 92, 92]
    assert sq.shape == (4, 2, 92, 92) and not np.isnan(sq).any()
    subjects4 = np.array([condensed(s.mean(0)) for s in sq])
    sessions8 = np.array([condensed(r) for s in sq for r in s])
    rows = []
    pooled = {}
    rsa_methods = {"spearman": "spearman", "corr": "pearson", "cosine": "cosine",
                   "tau-a": "kendall_tau_a", "rho-a": "rho_a", "tau-b": "tau_b",
                   "corr_cov": "corr_cov"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Noise ceiling for tau based on ..."
        for case, vecs in (("subjects4", subjects4), ("sessions8", sessions8)):
            rdms = RDMs(vecs)
            for method in rsa_methods:
                lower, upper = boot_noise_ceiling(rdms, method=method)
                # the same, written out: pool everyone (upper) / everyone else (lower)
                up, lo = [], []
                for s in range(len(vecs)):
                    others = RDMs(np.delete(vecs, s, axis=0))
                    up.append(compare(pool_rdm(rdms, method), RDMs(vecs[s:s + 1]), method)[0, 0])
                    lo.append(compare(pool_rdm(others, method), RDMs(vecs[s:s + 1]), method)[0, 0])
                assert abs(np.mean(up) - upper) < 1e-12 and abs(np.mean(lo) - lower) < 1e-12
                assert lower < upper
                rows.append([case, rsa_methods[method], float(lower), float(upper)])
                if case == "subjects4":
                    pooled[method] = pool_rdm(rdms, method).get_vectors()[0]
                log(f"noise ceiling {case} {method}: [{lower:.4f}, {upper:.4f}]")
    # rho-a and tau-b pool ranks as spearman and tau-a do, corr_cov z-scores as corr does
    for same, as_ in (("rho-a", "spearman"), ("tau-b", "tau-a"), ("corr_cov", "corr")):
        assert np.array_equal(pooled[same], pooled[as_]), same
    save(OUT / "pool_subjects4.npy", np.array([pooled[m] for m in ("spearman", "corr", "cosine",
                                                                      "tau-a")]))
    write_csv(OUT / "noise_ceiling.csv", ["case", "method", "lower", "upper"], rows)


def main():
    fixture_nnls()
    fixture_reweighted()
    fixture_pca()
    fixture_r2()
    fixture_noise_ceiling()
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    log(f"rsa_fit fixtures: {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
