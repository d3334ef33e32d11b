#!/usr/bin/env python3
"""Banded ridge reference fixtures (tests/fixtures/banded/<case>/) from himalaya's
BandedRidgeCV, for tests/golden_banded.rs.

Usage (from the repository root):
    .venv-bench/bin/python scripts/python/make_fixtures_banded.py

himalaya 0.4.11, numpy backend, float64. Deterministic (numpy default_rng with
fixed seeds; himalaya's own Dirichlet sampler with a fixed random_state for the
candidate list, which is saved so both sides search the same band weights).

Per case: feature spaces X0, X1[, X2] ([n, p_b], N(0, 1) plus a per-feature
offset), Y ([n, v]) whose voxels read space 0 only, space 1 only, [space 2
only,] all spaces, or nothing (pure noise), with signal scales decreasing
geometrically so that the chosen alphas and weights vary. Outer CV: KFold(5),
no shuffle. Per outer fold:

    BandedRidgeCV(groups="input", solver="random_search", fit_intercept=True,
                  cv=KFold(5),
                  solver_params=dict(n_iter=<candidates [n_iter, n_spaces]>,
                                     alphas=np.logspace(-2, 4, 7),
                                     local_alpha=True, conservative=False,
                                     jitter_alphas=False, ...))

fit on the outer training part (the band weights are always chosen per target
by this solver; local_alpha=True makes the alpha per target too). Saved:

| file | shape / dtype | what |
|---|---|---|
| X0.npy, X1.npy[, X2.npy], Y.npy | [n,p_b], [n,v] | data |
| candidates.npy | [n_iter, n_spaces] | band weights searched (row 0 equal weights) |
| alphas.npy | [7] | np.logspace(-2, 4, 7) |
| fold_candidate.npy | [n_outer, v] int64 | row of candidates chosen (from deltas_) |
| fold_gamma.npy | [n_outer, n_spaces, v] | exp(deltas_) normalised to sum 1 |
| fold_alpha.npy | [n_outer, v] | alphas[fold_alpha_index] (best_alphas_ is 1/sum(exp(deltas_))) |
| fold_alpha_index.npy | [n_outer, v] int64 | index into alphas |
| fold_margin.npy | [n_outer, v] | relative gap between the best and the second-best (candidate, alpha) inner-CV MSE (numpy grid): small = near-tie |
| fold_r2.npy, fold_pearson.npy | [n_outer, v] | himalaya r2_score / correlation_score on the outer test part |
| fold_r2_split.npy | [n_outer, n_spaces, v] | himalaya r2_score_split(y - mean(y), q') (see below) |
| fold_pearson_split.npy | [n_outer, n_spaces, v] | himalaya correlation_score_split(y, q) |

Split predictions: himalaya's predict(split=True) refuses fit_intercept=True,
so the per-space terms are q_b = (X_b,test - mean_train(X_b)) @ coef_b, and the
prediction is mean_train(y) + sum_b q_b (asserted equal to predict()). For the
R2 split, r2_score_split needs zero-mean y_true and terms summing to the
prediction minus the test mean: q'_b = q_b + gamma_b * (mean_train(y) -
mean_test(y)) (the intercept's offset shared in proportion to the band
weights), so the shares sum to the R2 (asserted). The correlation split is
invariant to constant offsets. This is brainfit's definition (src/banded.rs).

Cross-checks: the chosen (candidate, alpha) is recomputed from a plain-numpy
grid of inner-CV MSEs with himalaya's rule (argmax of -MSE + 1e-10 log(alpha)
per candidate; a later candidate must beat the best by more than float64
epsilon), and cv_scores_ is checked against that grid.
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

from make_fixtures import FIX, log, save  # noqa: E402

ALPHAS = np.logspace(-2, 4, 7)


def make_data(seed, n, widths, kinds, per_kind, amplitude):
    """Spaces N(0,1) + U(-2,2) offsets; each voxel reads the spaces its kind lists,
    with signal sd from `amplitude` down to 0.08 * `amplitude`, plus N(0,1) noise."""
    rng = np.random.default_rng(seed)
    Xs = [rng.standard_normal((n, p)) + rng.uniform(-2.0, 2.0, size=p) for p in widths]
    v = len(kinds) * per_kind
    scale = np.geomspace(1.0, 0.08, per_kind)
    Y = np.zeros((n, v))
    j = 0
    for kind in kinds:
        for s in range(per_kind):
            for b in kind:
                w = rng.standard_normal(widths[b]) / np.sqrt(widths[b])
                Y[:, j] += amplitude * scale[s] * (Xs[b] @ w)
            j += 1
    Y += rng.uniform(-5.0, 5.0, size=v) + rng.standard_normal((n, v))
    return Xs, Y


def inner_grid_mse(Xs_tr, Y_tr, inner, candidates, alphas):
    """Plain-numpy inner CV: [n_candidates, n_alphas, v] mean over folds of the fold MSE."""
    out = np.zeros((len(candidates), len(alphas), Y_tr.shape[1]))
    for c, gamma in enumerate(candidates):
        Z = np.concatenate([np.sqrt(g) * X for g, X in zip(gamma, Xs_tr)], axis=1)
        for tr, te in inner:
            mz, my = Z[tr].mean(0), Y_tr[tr].mean(0)
            Za, Zb = Z[tr] - mz, Z[te] - mz
            Ya, Yb = Y_tr[tr] - my, Y_tr[te] - my
            U, s, Vt = np.linalg.svd(Za, full_matrices=False)
            UtY = U.T @ Ya
            for a, alpha in enumerate(alphas):
                pred = Zb @ (Vt.T @ ((s / (s ** 2 + alpha))[:, None] * UtY))
                out[c, a] += ((Yb - pred) ** 2).mean(0) / len(inner)
    return out


def himalaya_rule(grid, alphas):
    """(candidate, alpha index) per voxel by himalaya's rule on an MSE grid."""
    score = -grid + (np.log(alphas) * 1e-10)[None, :, None]
    best_a = np.argmax(score, axis=1)  # [n_cand, v]
    best_s = np.take_along_axis(score, best_a[:, None, :], axis=1)[:, 0, :]
    v = grid.shape[2]
    cand = np.zeros(v, dtype=np.int64)
    current = np.full(v, -np.inf)
    eps = np.finfo(np.float64).eps
    for c in range(grid.shape[0]):
        mask = best_s[c] > current + eps
        current[mask] = best_s[c, mask]
        cand[mask] = c
    return cand, best_a[cand, np.arange(v)], best_s


def run_case(name, Xs, Y, candidates):
    from himalaya.ridge import BandedRidgeCV
    from himalaya.scoring import (correlation_score, correlation_score_split, r2_score,
                                  r2_score_split)
    from sklearn.model_selection import KFold

    out = FIX / "banded" / name
    n, v = Y.shape
    n_spaces = len(Xs)
    outer = list(KFold(n_splits=5, shuffle=False).split(np.zeros(n)))
    n_outer = len(outer)
    fold_candidate = np.zeros((n_outer, v), dtype=np.int64)
    fold_gamma = np.zeros((n_outer, n_spaces, v))
    fold_alpha_index = np.zeros((n_outer, v), dtype=np.int64)
    fold_margin = np.zeros((n_outer, v))
    fold_r2 = np.zeros((n_outer, v))
    fold_pearson = np.zeros((n_outer, v))
    fold_r2_split = np.zeros((n_outer, n_spaces, v))
    fold_pearson_split = np.zeros((n_outer, n_spaces, v))
    for k, (tr, te) in enumerate(outer):
        Xs_tr = [X[tr] for X in Xs]
        Xs_te = [X[te] for X in Xs]
        model = BandedRidgeCV(
            groups="input", solver="random_search", fit_intercept=True,
            cv=KFold(n_splits=5, shuffle=False),
            solver_params=dict(n_iter=candidates, alphas=ALPHAS, local_alpha=True,
                               conservative=False, jitter_alphas=False,
                               progress_bar=False, warn=False))
        model.fit(Xs_tr, Y[tr])

        # the choice, from deltas_ = log(gamma / alpha)
        w = np.exp(np.asarray(model.deltas_, dtype=np.float64))
        alpha = 1.0 / w.sum(0)
        gamma = w * alpha
        a_idx = np.argmin(np.abs(np.log(alpha)[None, :] - np.log(ALPHAS)[:, None]), axis=0)
        np.testing.assert_allclose(alpha, ALPHAS[a_idx], rtol=1e-9)
        dist = np.abs(gamma.T[:, None, :] - candidates[None, :, :]).max(2)  # [v, n_cand]
        c_idx = np.argmin(dist, axis=1)
        assert dist[np.arange(v), c_idx].max() < 1e-9, dist.min(1).max()

        # cross-check: a plain-numpy grid with himalaya's rule gives the same choice
        inner = list(KFold(n_splits=5, shuffle=False).split(np.zeros(len(tr))))
        grid = inner_grid_mse(Xs_tr, Y[tr], inner, candidates, ALPHAS)
        cand_np, alpha_np, best_s = himalaya_rule(grid, ALPHAS)
        assert np.array_equal(cand_np, c_idx), (name, k, cand_np, c_idx)
        assert np.array_equal(alpha_np, a_idx), (name, k, alpha_np, a_idx)
        np.testing.assert_allclose(np.asarray(model.cv_scores_), best_s, rtol=1e-9)
        flat = grid.reshape(-1, v)
        chosen = c_idx * len(ALPHAS) + a_idx
        best = flat[chosen, np.arange(v)]
        others = flat.copy()
        others[chosen, np.arange(v)] = np.inf
        fold_margin[k] = (others.min(0) - best) / best

        # per-space test terms and the prediction
        coef = np.asarray(model.coef_, dtype=np.float64)
        bounds = np.concatenate([[0], np.cumsum([X.shape[1] for X in Xs])])
        q = np.stack([
            (Xs_te[b] - Xs_tr[b].mean(0)) @ coef[bounds[b]:bounds[b + 1]]
            for b in range(n_spaces)
        ])
        c0 = Y[tr].mean(0)
        pred = c0 + q.sum(0)
        np.testing.assert_allclose(pred, np.asarray(model.predict(Xs_te)), rtol=1e-10,
                                   atol=1e-10)
        yt = Y[te]
        fold_r2[k] = r2_score(yt, pred)
        fold_pearson[k] = correlation_score(yt, pred)
        ym = yt.mean(0)
        shifted = q + gamma[:, None, :] * (c0 - ym)[None, None, :]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # y_true must be zero-mean: no warning
            fold_r2_split[k] = r2_score_split(yt - ym, shifted)
        fold_pearson_split[k] = correlation_score_split(yt, q)
        np.testing.assert_allclose(fold_r2_split[k].sum(0), fold_r2[k], atol=1e-12)
        np.testing.assert_allclose(fold_pearson_split[k].sum(0), fold_pearson[k], atol=1e-12)

        fold_candidate[k] = c_idx
        fold_gamma[k] = gamma
        fold_alpha_index[k] = a_idx

    save(out / "candidates.npy", candidates)
    save(out / "alphas.npy", ALPHAS)
    for b, X in enumerate(Xs):
        save(out / f"X{b}.npy", X)
    save(out / "Y.npy", Y)
    save(out / "fold_candidate.npy", fold_candidate, np.int64)
    save(out / "fold_gamma.npy", fold_gamma)
    save(out / "fold_alpha.npy", ALPHAS[fold_alpha_index])
    save(out / "fold_alpha_index.npy", fold_alpha_index, np.int64)
    save(out / "fold_margin.npy", fold_margin)
    save(out / "fold_r2.npy", fold_r2)
    save(out / "fold_pearson.npy", fold_pearson)
    save(out / "fold_r2_split.npy", fold_r2_split)
    save(out / "fold_pearson_split.npy", fold_pearson_split)
    uniq_c, cnt_c = np.unique(fold_candidate, return_counts=True)
    uniq_a, cnt_a = np.unique(ALPHAS[fold_alpha_index], return_counts=True)
    log(f"banded/{name}: n={n} p={[X.shape[1] for X in Xs]} v={v}; candidates chosen "
        f"{dict(zip(uniq_c.tolist(), cnt_c.tolist()))}; alphas "
        f"{dict(zip(uniq_a.tolist(), cnt_a.tolist()))}; margin < 1e-6 in "
        f"{int((fold_margin < 1e-6).sum())}/{fold_margin.size}; mean r2 "
        f"{np.round(fold_r2.mean(0), 2).tolist()}")


def candidates_for(n_spaces, n_iter, seed):
    """himalaya's own scheme: Dirichlet samples cycling over [0.1, 1.0], row 0 equal."""
    from himalaya.kernel_ridge import generate_dirichlet_samples

    gammas = np.asarray(generate_dirichlet_samples(
        n_samples=n_iter, n_kernels=n_spaces, concentration=[0.1, 1.0],
        random_state=seed), dtype=np.float64)
    gammas[0] = 1.0 / n_spaces
    # himalaya divides by sqrt(gamma): exact zeros would break it
    assert (gammas > 0).all() and np.allclose(gammas.sum(1), 1.0, rtol=0, atol=1e-12)
    return gammas


def main():
    from himalaya.backend import set_backend

    set_backend("numpy", on_error="raise")

    # tall: n_train 80 (inner 64) >= p = 28, the primal regime
    Xs, Y = make_data(seed=4101, n=100, widths=[8, 20], kinds=[[0], [1], [0, 1], []],
                      per_kind=5, amplitude=3.0)
    run_case("two_spaces", Xs, Y, candidates_for(2, 12, seed=7))

    # wide: n_train 48 (inner 38) < p = 80, the dual regime
    Xs, Y = make_data(seed=4202, n=60, widths=[10, 30, 40],
                      kinds=[[0], [1], [2], [0, 1, 2], []], per_kind=3, amplitude=6.0)
    run_case("three_spaces", Xs, Y, candidates_for(3, 16, seed=8))

    total = sum(f.stat().st_size for f in (FIX / "banded").rglob("*.npy"))
    log(f"banded fixtures: {total / 1024:.1f} KiB")
    assert total < 200 * 1024


if __name__ == "__main__":
    main()
