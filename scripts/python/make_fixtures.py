#!/usr/bin/env python3
"""Regenerate every reference fixture under tests/fixtures/ from the field's
Python reference packages (himalaya, scikit-learn, rsatoolbox, nibabel,
nilearn), asserting internal cross-checks while doing so.

Usage (from the repository root):
    scripts/python/setup_venv.sh
    .venv/bin/python scripts/python/make_fixtures.py   # or one of: ridge components lasso banded logistic rsa compare compress onnx image rsa_fit nifti searchlight group

Deterministic: every random draw uses a fixed seed (numpy default_rng).
Arrays are saved with np.save, C order, float64 unless stated otherwise.
"""
from __future__ import annotations

import csv
import os
import sys
import warnings
from pathlib import Path

# keep the BLAS light: this runs next to a Rust build on a 2-core machine
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.stats  # noqa: E402
from scipy.spatial.distance import pdist, squareform  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
KRIEG = Path(os.environ.get("KRIEG_DIR", ROOT / "tests" / "data" / "kriegeskorte2008"))

ALPHAS = np.logspace(-2, 4, 7)


def save(path: Path, arr, dtype=np.float64):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.ascontiguousarray(np.asarray(arr, dtype=dtype)))


def log(msg: str):
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# Fixture 1: ridge
# ---------------------------------------------------------------------------

def make_ridge_data(seed, n, p, v, n_noise_vox):
    """X ~ N(0,1) + per-feature mean in [1, 5]; Y = X W + offset + noise.

    Per voxel the weight scale varies geometrically from 3 to 0.03 (noise sd 1) so
    that the optimal alpha (~ 1/scale^2) spans the grid; the last
    `n_noise_vox` voxels have zero weights (pure noise).
    """
    rng = np.random.default_rng(seed)
    feat_mean = rng.uniform(1.0, 5.0, size=p)
    X = rng.standard_normal((n, p)) + feat_mean
    w_scale = np.geomspace(3.0, 0.03, v - n_noise_vox)
    w_scale = np.concatenate([w_scale, np.zeros(n_noise_vox)])
    W = rng.standard_normal((p, v)) * w_scale
    offset = rng.uniform(-10.0, 10.0, size=v)
    noise = rng.standard_normal((n, v))
    Y = X @ W + offset + noise
    return X, Y


def ridge_closed_form(Xa, Ya, alpha):
    """Centered closed-form ridge (no intercept) in primal or dual form."""
    na, p = Xa.shape
    if p <= na:
        return np.linalg.solve(Xa.T @ Xa + alpha * np.eye(p), Xa.T @ Ya)
    return Xa.T @ np.linalg.solve(Xa @ Xa.T + alpha * np.eye(na), Ya)


def numpy_inner_cv_mse(Xtr, Ytr, inner, alphas):
    """Plain-numpy re-implementation of himalaya's inner CV.

    For each inner fold: centre X and Y on that fold's training part, fit
    closed-form ridge per alpha, MSE on the validation part (validation
    data centred with the training means, i.e. prediction includes the
    intercept). Returns the unweighted mean over folds, [n_alphas, v].
    """
    mse = np.zeros((len(inner), len(alphas), Ytr.shape[1]))
    for f, (a, b) in enumerate(inner):
        mx, my = Xtr[a].mean(0), Ytr[a].mean(0)
        Xa, Xb = Xtr[a] - mx, Xtr[b] - mx
        Ya, Yb = Ytr[a] - my, Ytr[b] - my
        for i, al in enumerate(alphas):
            pred = Xb @ ridge_closed_form(Xa, Ya, al)
            mse[f, i] = ((Yb - pred) ** 2).mean(0)
    return mse.mean(0)


def pick_alpha_index(cv_mse, alphas):
    """argmin of mean MSE; exact ties resolved towards the LARGEST alpha."""
    n = len(alphas)
    return n - 1 - np.argmin(cv_mse[::-1], axis=0)


def pick_alpha_index_himalaya_rule(cv_mse, alphas):
    """himalaya's exact rule: argmax(-mse + 1e-10 * log(alpha))."""
    return np.argmax(-cv_mse + (np.log(alphas) * 1e-10)[:, None], axis=0)


def run_ridge_case(name, X, Y, outer, inner_fn, groups=None):
    from himalaya.ridge import RidgeCV
    from sklearn.linear_model import Ridge

    out = FIX / "ridge" / name
    n, p = X.shape
    v = Y.shape[1]
    n_outer = len(outer)
    fold_alpha = np.zeros((n_outer, v))
    fold_alpha_index = np.zeros((n_outer, v), dtype=np.int64)
    fold_r2 = np.zeros((n_outer, v))
    fold_pearson = np.zeros((n_outer, v))
    inner_mse_all = np.zeros((n_outer, len(ALPHAS), v))
    outer_fold_id = np.full(n, -1, dtype=np.int64)
    min_gap = np.inf
    n_exact_alpha = 0
    pred0 = None
    for k, (tr, te) in enumerate(outer):
        outer_fold_id[te] = k
        inner = inner_fn(tr)
        model = RidgeCV(alphas=ALPHAS, cv=inner, fit_intercept=True,
                        solver_params=dict(warn=False))
        model.fit(X[tr], Y[tr])
        best = np.asarray(model.best_alphas_, dtype=np.float64)
        idx = np.argmin(np.abs(np.log(best)[None, :] - np.log(ALPHAS)[:, None]), axis=0)
        np.testing.assert_allclose(best, ALPHAS[idx], rtol=1e-12)
        n_exact_alpha += int(np.sum(best == ALPHAS[idx]))
        pred = np.asarray(model.predict(X[te]), dtype=np.float64)

        # cross-check 1: sklearn Ridge with the chosen alpha, per voxel
        for j in range(v):
            sk = Ridge(alpha=float(ALPHAS[idx[j]]), fit_intercept=True)
            sk.fit(X[tr], Y[tr, j])
            ps = sk.predict(X[te])
            err = np.max(np.abs(ps - pred[:, j])) / np.max(np.abs(ps))
            assert err < 1e-6, (name, k, j, err)

        # cross-check 2: independent numpy inner-CV alpha choice
        cv_mse = numpy_inner_cv_mse(X[tr], Y[tr], inner, ALPHAS)
        idx_np = pick_alpha_index(cv_mse, ALPHAS)
        idx_hr = pick_alpha_index_himalaya_rule(cv_mse, ALPHAS)
        assert np.array_equal(idx_np, idx), (name, k, idx_np, idx)
        assert np.array_equal(idx_hr, idx), (name, k, idx_hr, idx)
        # himalaya's cv_scores_ = -mean MSE at best alpha + 1e-10*log(alpha)
        np.testing.assert_allclose(
            np.asarray(model.cv_scores_),
            -cv_mse[idx, np.arange(v)] + 1e-10 * np.log(ALPHAS[idx]),
            rtol=1e-9)
        srt = np.sort(cv_mse, axis=0)
        gap = (srt[1] - srt[0]) / srt[0]
        min_gap = min(min_gap, float(gap.min()))

        yt = Y[te]
        ss_res = ((yt - pred) ** 2).sum(0)
        ss_tot = ((yt - yt.mean(0)) ** 2).sum(0)
        fold_r2[k] = 1.0 - ss_res / ss_tot
        pc, yc = pred - pred.mean(0), yt - yt.mean(0)
        fold_pearson[k] = (pc * yc).sum(0) / np.sqrt((pc ** 2).sum(0) * (yc ** 2).sum(0))
        for j in range(v):
            assert abs(fold_pearson[k, j] - scipy.stats.pearsonr(pred[:, j], yt[:, j])[0]) < 1e-12
        fold_alpha[k] = ALPHAS[idx]
        fold_alpha_index[k] = idx
        inner_mse_all[k] = cv_mse
        if k == 0:
            pred0 = pred
    assert (outer_fold_id >= 0).all()
    assert min_gap > 1e-9, f"{name}: near-tie in alpha choice (rel gap {min_gap:g}); change seed"

    save(out / "X.npy", X)
    save(out / "Y.npy", Y)
    save(out / "alphas.npy", ALPHAS)
    if groups is not None:
        save(out / "groups.npy", groups, np.int64)
    save(out / "fold_alpha.npy", fold_alpha)
    save(out / "fold_alpha_index.npy", fold_alpha_index, np.int64)
    save(out / "fold_r2.npy", fold_r2)
    save(out / "fold_pearson.npy", fold_pearson)
    save(out / "pred0.npy", pred0)
    save(out / "inner_cv_mse.npy", inner_mse_all)
    save(out / "outer_fold_id.npy", outer_fold_id, np.int64)
    uniq, cnt = np.unique(fold_alpha, return_counts=True)
    log(f"ridge/{name}: n={n} p={p} v={v} outer={n_outer}; chosen alphas "
        f"{dict(zip(uniq.tolist(), cnt.tolist()))}; min rel gap best vs 2nd "
        f"inner MSE {min_gap:.3g}; himalaya best_alphas_ bit-equal to grid "
        f"{n_exact_alpha}/{n_outer * v}; mean r2 per voxel "
        f"{np.round(fold_r2.mean(0), 2).tolist()}")


def fixture_ridge():
    from himalaya.backend import set_backend
    from sklearn.model_selection import KFold, LeaveOneGroupOut

    set_backend("numpy", on_error="raise")

    def kfold_inner(tr):
        return list(KFold(n_splits=5, shuffle=False).split(np.zeros(len(tr))))

    def kfold_outer(n):
        return list(KFold(n_splits=5, shuffle=False).split(np.zeros(n)))

    X, Y = make_ridge_data(seed=101, n=80, p=10, v=12, n_noise_vox=2)
    run_ridge_case("tall", X, Y, kfold_outer(80), kfold_inner)

    X, Y = make_ridge_data(seed=202, n=50, p=120, v=7, n_noise_vox=1)
    run_ridge_case("wide", X, Y, kfold_outer(50), kfold_inner)

    groups = np.repeat(np.arange(6), 12).astype(np.int64)
    X, Y = make_ridge_data(seed=303, n=72, p=15, v=9, n_noise_vox=2)
    logo = LeaveOneGroupOut()
    outer = list(logo.split(X, groups=groups))

    def logo_inner(tr):
        return list(LeaveOneGroupOut().split(np.zeros(len(tr)), groups=groups[tr]))

    run_ridge_case("groups", X, Y, outer, logo_inner, groups=groups)

    X, Y = make_ridge_data(seed=90210, n=120, p=30, v=20, n_noise_vox=3)
    run_ridge_case("heldout", X, Y, kfold_outer(120), kfold_inner)


# ---------------------------------------------------------------------------
# Fixture 1b: PCR and PLS (scikit-learn), nested CV over a components grid
# ---------------------------------------------------------------------------

def make_latent_data(seed, n, p, v, r):
    """X from r latent factors plus noise (so the leading components carry the
    signal); each voxel reads the factors with a weight scale from 3 down to
    0.05 plus unit noise, so the best number of components varies by voxel."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, r)) * np.geomspace(4.0, 1.0, r)
    X = latent @ rng.standard_normal((r, p)) + 0.7 * rng.standard_normal((n, p))
    X += rng.uniform(-3.0, 3.0, size=p)
    scale = np.geomspace(3.0, 0.05, v)
    Y = latent @ (rng.standard_normal((r, v)) * scale) + rng.standard_normal((n, v))
    Y += rng.uniform(-5.0, 5.0, size=v)
    return X, Y


def components_fit_predict(model, k, Xtr, ytr, Xte):
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    if model == "pcr":
        est = make_pipeline(PCA(n_components=k, svd_solver="full"), LinearRegression())
    else:
        est = PLSRegression(n_components=k, scale=False)
    est.fit(Xtr, ytr)
    return np.asarray(est.predict(Xte), dtype=np.float64).reshape(-1)


def run_components_case(name, model, X, Y, ks, outer, inner_fn, groups=None):
    """Nested CV per voxel: inner mean-of-fold-MSE per k, minimised, ties to the
    fewer components; refit on the outer training part; scores on its test part."""
    out = FIX / "components" / name
    v = Y.shape[1]
    ks = np.asarray(sorted(ks, reverse=True))  # least regularised first, like brainfit
    fold_k = np.zeros((len(outer), v))
    fold_r2 = np.zeros((len(outer), v))
    fold_pearson = np.zeros((len(outer), v))
    min_gap = np.inf
    for f, (tr, te) in enumerate(outer):
        inner = inner_fn(tr)
        for j in range(v):
            mse = np.zeros(len(ks))
            for a, b in inner:
                for i, k in enumerate(ks):
                    pred = components_fit_predict(model, int(k), X[tr][a], Y[tr][a, j], X[tr][b])
                    mse[i] += ((Y[tr][b, j] - pred) ** 2).mean() / len(inner)
            best = len(ks) - 1 - int(np.argmin(mse[::-1]))
            srt = np.sort(mse)
            min_gap = min(min_gap, (srt[1] - srt[0]) / srt[0])
            pred = components_fit_predict(model, int(ks[best]), X[tr], Y[tr, j], X[te])
            yt = Y[te, j]
            fold_r2[f, j] = 1.0 - ((yt - pred) ** 2).sum() / ((yt - yt.mean()) ** 2).sum()
            fold_pearson[f, j] = scipy.stats.pearsonr(pred, yt)[0]
            fold_k[f, j] = ks[best]
    assert min_gap > 1e-9, f"{name}: near-tie in the components choice; change seed"
    save(out / "X.npy", X)
    save(out / "Y.npy", Y)
    save(out / "components.npy", ks, np.int64)
    if groups is not None:
        save(out / "groups.npy", groups, np.int64)
    save(out / "fold_components.npy", fold_k)
    save(out / "fold_r2.npy", fold_r2)
    save(out / "fold_pearson.npy", fold_pearson)
    uniq, cnt = np.unique(fold_k, return_counts=True)
    log(f"components/{name}: chosen {dict(zip(uniq.tolist(), cnt.tolist()))}; "
        f"min rel gap {min_gap:.3g}; mean r2 {np.round(fold_r2.mean(0), 2).tolist()}")


def fixture_components():
    from sklearn.model_selection import KFold, LeaveOneGroupOut

    def kfold(n):
        return list(KFold(n_splits=5, shuffle=False).split(np.zeros(n)))

    X, Y = make_latent_data(seed=404, n=100, p=25, v=10, r=4)
    for model in ("pcr", "pls"):
        run_components_case(f"{model}_tall", model, X, Y, [1, 2, 3, 5, 8, 13, 20],
                            kfold(100), lambda tr: kfold(len(tr)))
    # held out (nobody tuned on it): wide, run-structured, leave-one-run-out both levels
    groups = np.repeat(np.arange(6), 12).astype(np.int64)
    X, Y = make_latent_data(seed=505, n=72, p=90, v=8, r=6)
    outer = list(LeaveOneGroupOut().split(X, groups=groups))

    def logo_inner(tr):
        return list(LeaveOneGroupOut().split(np.zeros(len(tr)), groups=groups[tr]))

    for model in ("pcr", "pls"):
        run_components_case(f"{model}_wide", model, X, Y, [1, 2, 4, 8, 16, 32],
                            outer, logo_inner, groups)


# ---------------------------------------------------------------------------
# Fixture 2: RSA
# ---------------------------------------------------------------------------

def shrinkage_diag_cov_numpy(res):
    """Independent vectorised re-implementation of rsatoolbox's
    'shrinkage_diag' covariance (Schaefer & Strimmer 2005 target D),
    default dof = m - 1."""
    m = res.shape[0]
    xc = res - res.mean(0)
    dof = m - 1
    s = xc.T @ xc / dof
    sd = np.sqrt(np.diag(s))
    z = xc / sd  # standardised with the dof-normalised sd
    w = z[:, :, None] * z[:, None, :]  # [m, c, c]
    r = w.sum(0) / (m - 1)  # correlation matrix
    s2 = (w ** 2).sum(0) / (m - 1)
    var_r = m / dof ** 2 * (s2 - r ** 2)
    off = ~np.eye(s.shape[0], dtype=bool)
    lam = np.clip(var_r[off].sum() / (r[off] ** 2).sum(), 0.0, 1.0)
    return np.where(off, (1 - lam) * s, s), lam


def fixture_rsa():
    import importlib.metadata
    from rsatoolbox.data import Dataset
    from rsatoolbox.data.noise import prec_from_residuals
    from rsatoolbox.rdm import RDMs, calc_rdm, compare

    out = FIX / "rsa"
    # ---- (a) RDM methods
    rng = np.random.default_rng(7)
    patterns = rng.standard_normal((12, 20)) + rng.uniform(-1, 1, size=(12, 1))
    ds = Dataset(patterns)
    r_corr = calc_rdm(ds, method="correlation").get_vectors()[0]
    r_eucl = calc_rdm(ds, method="euclidean").get_vectors()[0]
    try:
        calc_rdm(ds, method="cosine")
        raise AssertionError("rsatoolbox unexpectedly has a cosine RDM")
    except NotImplementedError:
        pass
    r_cos = pdist(patterns, "cosine")
    assert r_corr.shape == (66,)
    np.testing.assert_allclose(r_corr, pdist(patterns, "correlation"), rtol=1e-12, atol=1e-13)
    # rsatoolbox 'euclidean' = squared euclidean / n_channels
    np.testing.assert_allclose(r_eucl, pdist(patterns, "sqeuclidean") / patterns.shape[1],
                               rtol=1e-10, atol=1e-12)
    # row-major upper triangle
    iu = np.triu_indices(12, 1)
    np.testing.assert_allclose(squareform(r_corr)[iu], r_corr)
    save(out / "patterns.npy", patterns)
    save(out / "rdm_correlation.npy", r_corr)
    save(out / "rdm_euclidean.npy", r_eucl)
    save(out / "rdm_cosine.npy", r_cos)

    # ---- (b) crossnobis
    rng = np.random.default_rng(11)
    n_runs, n_cond, n_chan = 4, 8, 15
    true = rng.standard_normal((n_cond, n_chan))
    mix = np.eye(n_chan) + 0.4 * rng.standard_normal((n_chan, n_chan))
    runs = np.repeat(np.arange(n_runs), n_cond)
    conds = np.tile(np.arange(n_cond), n_runs)
    data = true[conds] + rng.standard_normal((n_runs, n_chan))[runs] * 0.5 \
        + rng.standard_normal((n_runs * n_cond, n_chan)) @ mix
    perm = rng.permutation(n_runs * n_cond)  # rows deliberately not sorted
    data, runs, conds = data[perm], runs[perm].astype(np.int64), conds[perm].astype(np.int64)
    residuals = rng.standard_normal((60, n_chan)) @ mix + 0.3
    prec = prec_from_residuals(residuals, method="shrinkage_diag")
    cov_np, lam = shrinkage_diag_cov_numpy(residuals)
    np.testing.assert_allclose(prec, np.linalg.inv(cov_np), rtol=1e-9, atol=1e-12)
    assert 0.0 < lam < 1.0, lam
    dsx = Dataset(data, obs_descriptors={"conds": conds, "runs": runs})
    with warnings.catch_warnings():
        # rsatoolbox casts NaN into the int 'runs' descriptor when building
        # the RDMs object (harmless RuntimeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        rdm_cn = calc_rdm(dsx, method="crossnobis", descriptor="conds",
                          cv_descriptor="runs", noise=prec)
        rdm_cn_id = calc_rdm(dsx, method="crossnobis", descriptor="conds",
                             cv_descriptor="runs", noise=None)
    assert list(rdm_cn.pattern_descriptors["conds"]) == list(range(n_cond))
    v_cn = rdm_cn.get_vectors()[0]
    v_cn_id = rdm_cn_id.get_vectors()[0]

    def crossnobis_pairs(P):
        # mean over unordered run pairs (k<l) of (a_ki-a_kj)' P (a_li-a_lj) / n_chan
        A = np.zeros((n_runs, n_cond, n_chan))
        for k in range(n_runs):
            for c in range(n_cond):
                A[k, c] = data[(runs == k) & (conds == c)].mean(0)
        iu8 = np.triu_indices(n_cond, 1)
        acc = np.zeros(len(iu8[0]))
        npair = 0
        for k in range(n_runs):
            for l in range(k + 1, n_runs):
                dk = A[k][iu8[0]] - A[k][iu8[1]]
                dl = A[l][iu8[0]] - A[l][iu8[1]]
                acc += np.einsum("pi,ij,pj->p", dk, P, dl) / n_chan
                npair += 1
        return acc / npair

    np.testing.assert_allclose(v_cn, crossnobis_pairs(prec), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(v_cn_id, crossnobis_pairs(np.eye(n_chan)), rtol=1e-10, atol=1e-12)
    save(out / "cv_data.npy", data)
    save(out / "cv_conds.npy", conds, np.int64)
    save(out / "cv_runs.npy", runs, np.int64)
    save(out / "cv_residuals.npy", residuals)
    save(out / "prec_shrinkage_diag.npy", prec)
    save(out / "rdm_crossnobis.npy", v_cn)
    save(out / "rdm_crossnobis_identity.npy", v_cn_id)
    log(f"rsa: shrinkage_diag lambda={lam:.6f}; crossnobis min={v_cn.min():.4g} "
        f"(negative entries: {(v_cn < 0).sum()})")

    # ---- (c) comparisons on real data
    human = np.load(KRIEG / "human_it_rdm.npy")
    monkey = np.load(KRIEG / "monkey_it_rdm.npy")
    models = np.load(KRIEG / "model_rdms.npy")
    names = [s.strip() for s in (KRIEG / "model_names.txt").read_text().splitlines() if s.strip()]
    assert len(names) == models.shape[0] == 8
    model_rdms = RDMs(dissimilarities=models)
    iu92 = np.triu_indices(92, 1)
    model_vecs = model_rdms.get_vectors()
    np.testing.assert_array_equal(model_vecs, models[:, iu92[0], iu92[1]])
    r_h = RDMs(dissimilarities=human[None, :])
    targets = [("monkey_it", monkey)] + list(zip(names, model_vecs))
    methods = [("spearman", "spearman"), ("pearson", "corr"),
               ("kendall_tau_a", "tau-a"), ("cosine", "cosine")]

    def naive_tau_a(x, y):
        n = len(x)
        s = 0
        for i in range(n - 1):
            s += int(np.sum(np.sign(x[i + 1:] - x[i]) * np.sign(y[i + 1:] - y[i])))
        return s / (n * (n - 1) / 2)

    def cross_check(a, b, method, val):
        if method == "spearman":
            ref = scipy.stats.spearmanr(a, b)[0]
        elif method == "pearson":
            ref = scipy.stats.pearsonr(a, b)[0]
        elif method == "kendall_tau_a":
            ref = naive_tau_a(a, b)
        else:  # raw cosine, no centring
            ref = a @ b / np.sqrt((a @ a) * (b @ b))
        assert abs(val - ref) < 1e-10, (method, val, ref)

    def write_compare(path, brain_name, brain_vec, rows_in):
        rows = []
        rb = RDMs(dissimilarities=brain_vec[None, :])
        for tname, tvec in rows_in:
            rt = RDMs(dissimilarities=np.asarray(tvec)[None, :])
            for mname, rsa_method in methods:
                val = float(compare(rb, rt, method=rsa_method)[0, 0])
                cross_check(brain_vec, np.asarray(tvec), mname, val)
                rows.append((brain_name, tname, mname, repr(val)))
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["brain", "model", "method", "value"])
            w.writerows(rows)
        return rows

    assert r_h.get_vectors().shape == (1, 4186)
    rows = write_compare(out / "compare_real.csv", "human_it", human, targets)
    # does the 'monkeyIT' model RDM equal monkey_it_rdm?
    same = np.allclose(model_vecs[names.index("monkeyIT")], monkey)
    log(f"rsa: model 'monkeyIT' == monkey_it_rdm: {same}; "
        f"human vs monkey_it spearman={rows[0][3]}")

    rng = np.random.default_rng(45)
    ties_a = rng.integers(0, 5, size=45).astype(np.float64)
    ties_b = np.clip(ties_a + rng.integers(-2, 3, size=45), 0, 4).astype(np.float64)
    save(out / "ties_a.npy", ties_a)
    save(out / "ties_b.npy", ties_b)
    rows = write_compare(out / "compare_ties.csv", "ties_a", ties_a, [("ties_b", ties_b)])
    # spearman on ties == Pearson of average (mid) ranks; differs from rho-a
    rho = float(rows[0][3])
    ra = scipy.stats.rankdata(ties_a) - 23.0
    rb = scipy.stats.rankdata(ties_b) - 23.0
    rho_a = float(compare(RDMs(ties_a[None]), RDMs(ties_b[None]), method="rho-a")[0, 0])
    assert abs(rho_a - (ra @ rb) * 12 / (45 ** 3 - 45)) < 1e-12
    tau_b = scipy.stats.kendalltau(ties_a, ties_b)[0]
    log(f"rsa: ties spearman={rho!r} rho-a={rho_a!r}; tau-a={rows[2][3]} vs tau-b={float(tau_b)!r}; "
        f"rsatoolbox {importlib.metadata.version('rsatoolbox')}")


# ---------------------------------------------------------------------------
# Fixture 3: NIfTI / nilearn mask order
# ---------------------------------------------------------------------------

def fixture_nifti():
    import nibabel as nib
    from nilearn.masking import apply_mask

    out = FIX / "nifti"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2024)
    affine = np.array([[2.0, 0.0, 0.0, -4.0],
                       [0.0, 2.0, 0.0, -5.5],
                       [0.0, 0.0, 3.0, 7.25],
                       [0.0, 0.0, 0.0, 1.0]])
    shape3 = (5, 6, 4)
    # data[i,j,k,t] = 1000*t + 100*i + 10*j + k + small noise: easy to eyeball
    ii, jj, kk, tt = np.meshgrid(*[np.arange(s) for s in shape3 + (3,)], indexing="ij")
    data = (1000 * tt + 100 * ii + 10 * jj + kk).astype(np.float32)
    data += rng.uniform(0, 0.5, size=data.shape).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.to_filename(out / "img4d.nii.gz")
    mask = (rng.random(shape3) < 0.4).astype(np.uint8)
    mimg = nib.Nifti1Image(mask, affine)
    mimg.set_data_dtype(np.uint8)
    mimg.to_filename(out / "mask.nii.gz")

    img_r = nib.load(out / "img4d.nii.gz")
    mimg_r = nib.load(out / "mask.nii.gz")
    assert img_r.get_data_dtype() == np.float32 and mimg_r.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(img_r.affine, affine)
    masked = apply_mask(img_r, mimg_r)
    assert masked.dtype == np.float32 and masked.shape == (3, int(mask.sum()))
    # nilearn order == C-order (x slowest, z fastest) over the boolean mask
    np.testing.assert_array_equal(masked, data[mask.astype(bool)].T)
    ijk = np.argwhere(mask.astype(bool))  # C order
    np.testing.assert_array_equal(masked, data[ijk[:, 0], ijk[:, 1], ijk[:, 2], :].T)
    fortran = data.reshape(-1, 3, order="F")[mask.reshape(-1, order="F").astype(bool)].T
    assert not np.array_equal(fortran, masked)
    save(out / "masked.npy", masked, np.float32)
    save(out / "mask_ijk.npy", ijk, np.int64)
    save(out / "affine.npy", img_r.affine)

    # int16 with scl_slope=0.5, scl_inter=1.0, uncompressed. Written by hand
    # (header + raw Fortran-order bytes) because nibabel recomputes scaling
    # when saving an in-memory array.
    raw = rng.integers(-300, 300, size=shape3).astype(np.int16)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape(shape3)
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm")
    hdr["scl_slope"] = 0.5
    hdr["scl_inter"] = 1.0
    hdr["vox_offset"] = 352
    with open(out / "img_scaled.nii", "wb") as fh:
        hdr.write_to(fh)  # 348-byte header + 4-byte (empty) extension flag
        assert fh.tell() == 352
        fh.write(raw.tobytes(order="F"))
    simg = nib.load(out / "img_scaled.nii")
    assert simg.get_data_dtype() == np.int16
    assert simg.dataobj.slope == 0.5 and simg.dataobj.inter == 1.0
    np.testing.assert_array_equal(np.asarray(simg.dataobj.get_unscaled()), raw)
    scaled = simg.get_fdata()
    assert scaled.dtype == np.float64 and scaled.shape == shape3
    np.testing.assert_array_equal(scaled, raw.astype(np.float64) * 0.5 + 1.0)
    np.testing.assert_array_equal(simg.affine, affine)
    save(out / "scaled_expected.npy", scaled)
    log(f"nifti: n_vox in mask={int(mask.sum())}/{mask.size}")


def fixture_searchlight():
    """rsatoolbox's volume searchlight on a small ragged mask: spheres truncated at the mask
    (truncate_at_boundary=True), correlation RDMs per sphere, Spearman against one model.
    rsatoolbox keeps voxels at distance < radius; brainfit's radius is <= r, so rsatoolbox's
    radius 2 is brainfit's radius 1.9 (squared distances 0..3 either way)."""
    import nibabel as nib
    from rsatoolbox.util.searchlight import get_volume_searchlight, get_searchlight_RDMs
    from rsatoolbox.rdm import RDMs, compare

    out = FIX / "rsa"
    rng = np.random.default_rng(31)
    shape = (7, 6, 5)
    mask = (rng.random(shape) < 0.7).astype(np.uint8)
    n_cond = 12
    data_vol = rng.standard_normal((n_cond, int(np.prod(shape))))
    model_patterns = rng.standard_normal((n_cond, 4))
    flat_mask = np.flatnonzero(mask.reshape(-1))
    centers, neighbors = get_volume_searchlight(mask, radius=2, threshold=0.0, truncate_at_boundary=True)
    sl = get_searchlight_RDMs(data_vol, centers, neighbors, np.arange(n_cond), method="correlation", verbose=False)
    model = pdist(model_patterns, "sqeuclidean")
    model_rdm = RDMs(model[None, :])
    sizes = np.array([len(n) for n in neighbors])
    keep = sizes >= 4
    rho = compare(sl, model_rdm, method="spearman")[:, 0]
    centre_index = np.searchsorted(flat_mask, np.asarray(centers))
    assert np.all(flat_mask[centre_index] == centers)
    nib.save(nib.Nifti1Image(mask, np.eye(4)), out / "searchlight_mask.nii.gz")
    save(out / "searchlight_data.npy", data_vol[:, flat_mask])  # [conditions, mask voxels], nilearn order
    save(out / "searchlight_model.npy", model)
    save(out / "searchlight_centres.npy", centre_index[keep], np.int64)
    save(out / "searchlight_rho.npy", rho[keep])
    log(f"searchlight: {keep.sum()} of {len(centers)} centres with >= 4 voxels")


def main():
    which = sys.argv[1:] or [
        "ridge", "components", "lasso", "banded", "logistic", "rsa", "compare", "compress",
        "onnx", "image", "rsa_fit", "nifti", "searchlight", "group"]
    if "searchlight" in which:
        fixture_searchlight()
    if "ridge" in which:
        fixture_ridge()
    if "components" in which:
        fixture_components()
    if "lasso" in which:  # its own script (scikit-learn's Lasso under the nested CV)
        import make_fixtures_lasso
        make_fixtures_lasso.main()
    if "banded" in which:  # its own script (himalaya's BandedRidgeCV)
        import make_fixtures_banded
        make_fixtures_banded.main()
    if "logistic" in which:  # its own script (scikit-learn's LogisticRegression, stratified CV)
        import make_fixtures_logistic
        make_fixtures_logistic.main()
    if "rsa" in which:
        fixture_rsa()
    if "compare" in which:  # its own script (rho-a, tau-b, corr_cov, bures; CKA)
        import make_fixtures_compare
        make_fixtures_compare.main()
    if "image" in which:  # its own script (Pillow resize filters, torchvision crops, float step)
        import make_fixtures_image
        make_fixtures_image.main()
    if "group" in which:  # its own script (sign-flip tests; nilearn's permuted_ols and TFCE)
        import make_fixtures_group
        make_fixtures_group.main()
    if "compress" in which:  # its own script (IncrementalPCA; Johnson-Lindenstrauss bound)
        import make_fixtures_compress
        make_fixtures_compress.main()
    if "onnx" in which:  # its own script (tiny AlexNet built with onnx; onnxruntime activations)
        import make_fixtures_onnx
        make_fixtures_onnx.main()
    if "rsa_fit" in which:  # its own script (NNLS, reweighted RSA, noise ceilings; rsatoolbox)
        import make_fixtures_rsa_fit
        make_fixtures_rsa_fit.main()
    if "nifti" in which:
        fixture_nifti()
    total = sum(f.stat().st_size for f in FIX.rglob("*") if f.is_file())
    log(f"fixtures total size: {total / 1024:.1f} KiB")
    assert total < 3 * 1024 * 1024


if __name__ == "__main__":
    main()
