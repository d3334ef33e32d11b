#!/usr/bin/env python3
"""Reference fixtures for brainfit's RDM comparisons beyond the first four
(crates/brainfit-kernels/src/compare.rs, cka.rs): rho-a, Kendall's tau-b, whitened
correlation (corr_cov), Bures similarity, and centred kernel alignment (CKA).

Usage (from the repository root):
    .venv-bench/bin/python scripts/python/make_fixtures_compare.py
    (or: .venv-bench/bin/python scripts/python/make_fixtures.py compare)

Deterministic (numpy default_rng with fixed seeds). Real data from tests/data/kriegeskorte2008/
(override with KRIEG_DIR=...). Condensed RDMs are the upper triangle (k=1), row-major. CSV
values are Python repr() of float64; the CSVs have the columns brain,model,method,value.

Files under tests/fixtures/compare/:
  real.csv
      rsatoolbox.rdm.compare(brain, model, method) for brain = human_it against monkey_it and
      the 8 model RDMs, and brain = monkey_it against the 8 model RDMs (condensed from the
      square ones), methods rho_a ('rho-a'), tau_b ('tau-b', scipy.stats.kendalltau),
      corr_cov ('corr_cov', sigma_k=None) and bures ('bures').
  bures_exact.csv
      The same pairs (and the ties pair), Bures similarity computed without rounding noise:
      rsatoolbox's first-way formula on the second-moment matrices restricted to the
      complement of the ones vector (every double-centred matrix's exact null direction),
      with eigenvalues at rounding level (|lambda| <= 1e-10 of the scale, an asserted gap
      separating them from the rest) set to zero. rsatoolbox takes the square roots of such
      eigenvalues (about 1e-15 relative), which adds up to ~1e-7 of noise to its value for
      low-rank models (asserted: the two agree within 2e-7). Cross-checked, where both
      matrices are positive semi-definite, with sum(sqrt(eig(L' A L))), B = L L'.
  ties_a.npy, ties_b.npy [45]
      integers 0..4 (10 conditions, many ties); ties.csv: the four methods from rsatoolbox.
  nan_a.npy, nan_b.npy [66]
      Euclidean RDMs of 12 seeded random pattern sets, NaN at the same 7 positions in both;
      nan.csv: rho_a, tau_b and corr_cov from rsatoolbox (which drops the NaN positions; for
      corr_cov it projects out row and column effects by weighted least squares over the
      entries that remain, _cov_weighting's else branch). rsatoolbox's bures refuses RDMs with
      NaN (ValueError: the remaining vector is not a condensed RDM); brainfit returns NaN.
  cka_<case>_X.npy [n, 30], cka_<case>_Y.npy [n, 12], case = n20, n40
      seeded patterns (Y = X W + noise, per-channel offsets); cka.csv (brain = <case>_X,
      model = <case>_Y): linear and RBF CKA, biased and unbiased, computed from the PATTERNS
      with Kornblith et al. (2019)'s published formulas (gram_linear = X X', gram_rbf with
      threshold 1 (median of the n x n squared distances, zero diagonal included),
      center_gram biased / unbiased, cka = <Kc, Lc> / (|Kc| |Lc|)), written out below.
      Cross-checked: linear CKA in its feature-space form |Yc' Xc|^2 / (|Xc' Xc| |Yc' Yc|);
      the unbiased HSIC estimator of Song et al. (2012); the RBF kernel from the rsatoolbox
      'euclidean' RDM (squared distance / n_channels) equals the one from the patterns (the
      median normalisation cancels the scale).
"""
from __future__ import annotations

import csv
import importlib.metadata
import os
import sys
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
from scipy.spatial.distance import pdist, squareform  # noqa: E402

from make_fixtures import FIX, KRIEG, log, save  # noqa: E402

OUT = FIX / "compare"
# brainfit spelling -> rsatoolbox method name
METHODS = [("rho_a", "rho-a"), ("tau_b", "tau-b"), ("corr_cov", "corr_cov"), ("bures", "bures")]
# eigenvalues at most this fraction of the scale are rounding noise (an asserted gap)
REL_ZERO = 1e-10


def rsa_compare(a, b, method):
    from rsatoolbox.rdm import RDMs, compare

    return float(compare(RDMs(np.asarray(a)[None, :]), RDMs(np.asarray(b)[None, :]),
                         method=method)[0, 0])


def write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["brain", "model", "method", "value"])
        w.writerows((b, m, meth, repr(float(v))) for b, m, meth, v in rows)


# ---------------------------------------------------------------------------
# independent numpy references, used as cross-checks of rsatoolbox's values
# ---------------------------------------------------------------------------

def second_moment(v):
    """-1/2 H D H of a condensed RDM: the double-centred n x n second-moment matrix."""
    g = squareform(-0.5 * np.asarray(v))
    r = g.mean(0, keepdims=True)
    return g - r - r.T + r.mean()


def rho_a_naive(a, b):
    n = len(a)
    ra = scipy.stats.rankdata(a) - (n + 1) / 2
    rb = scipy.stats.rankdata(b) - (n + 1) / 2
    return 12.0 * (ra @ rb) / (n ** 3 - n)


def tau_b_naive(a, b):
    """(C - D) / sqrt((n0 - n1)(n0 - n2)) by a double loop."""
    n = len(a)
    s, t1, t2 = 0, 0, 0
    for i in range(n - 1):
        da = np.sign(a[i + 1:] - a[i])
        db = np.sign(b[i + 1:] - b[i])
        s += int(np.sum(da * db))
        t1 += int(np.sum(da == 0))
        t2 += int(np.sum(db == 0))
    n0 = n * (n - 1) // 2
    return s / np.sqrt((n0 - t1) * (n0 - t2))


def corr_cov_naive(a, b):
    """Frobenius cosine of the second-moment matrices of the mean-centred RDM vectors (no NaN)."""
    ga = second_moment(a - a.mean())
    gb = second_moment(b - b.mean())
    return np.sum(ga * gb) / np.sqrt(np.sum(ga * ga) * np.sum(gb * gb))


def check_gap(vals, scale, what):
    """No eigenvalue between 1e-13 and 1e-8 of the scale: which ones are zero is unambiguous."""
    rel = np.abs(vals) / scale
    bad = (rel > 1e-13) & (rel < 1e-8)
    assert not bad.any(), (what, vals[bad] / scale)


def bures_exact(a, b):
    A, B = second_moment(a), second_moment(b)
    n = A.shape[0]
    for G in (A, B):
        assert np.abs(G.sum(1)).max() < 1e-12 * np.abs(G).max()
    # orthonormal basis of the complement of the ones vector
    Q = np.linalg.qr(np.c_[np.ones(n), np.eye(n)[:, : n - 1]])[0][:, 1:]
    Ap, Bp = Q.T @ A @ Q, Q.T @ B @ Q
    la, ua = np.linalg.eigh(Ap)
    sa = np.abs(la).max()
    check_gap(la, sa, "A")
    la = np.where(la > REL_ZERO * sa, la, 0.0)
    Asq = (ua * np.sqrt(la)) @ ua.T
    M = Asq @ Bp @ Asq
    lm = np.linalg.eigvalsh((M + M.T) / 2)
    sm = sa * np.abs(np.linalg.eigvalsh(Bp)).max()
    check_gap(lm, sm, "M")
    lm = np.where(lm > REL_ZERO * sm, lm, 0.0)
    val = np.sqrt(lm).sum() / np.sqrt(np.trace(A) * np.trace(B))
    # where both are PSD: the nonzero eigenvalues of A^1/2 B A^1/2 are those of L' A L, B = L L'
    lb, ub = np.linalg.eigh(Bp)
    sb = np.abs(lb).max()
    if la.min() >= 0 and np.linalg.eigvalsh(Ap).min() > -REL_ZERO * sa and lb.min() > -REL_ZERO * sb:
        keep = lb > REL_ZERO * sb
        L = ub[:, keep] * np.sqrt(lb[keep])
        alt = np.sqrt(np.maximum(np.linalg.eigvalsh(L.T @ Ap @ L), 0.0)).sum() / np.sqrt(
            np.trace(A) * np.trace(B))
        assert abs(alt - val) < 1e-13, (alt, val)
    return val


def cross_check(a, b, method, value, tol=1e-10):
    if method == "rho_a":
        ref = rho_a_naive(a, b)
    elif method == "tau_b":
        ref = tau_b_naive(a, b)
    elif method == "corr_cov":
        ref = corr_cov_naive(a, b)
    else:
        ref, tol = bures_exact(a, b), 2e-7
    assert abs(value - ref) < tol, (method, value, ref)
    return abs(value - ref)


def comparison_rows(pairs):
    """rsatoolbox values for every (brain, model) pair and method, cross-checked."""
    rows, exact, worst_bures = [], [], 0.0
    for bname, bvec, mname, mvec in pairs:
        for ours, theirs in METHODS:
            val = rsa_compare(bvec, mvec, theirs)
            diff = cross_check(bvec, mvec, ours, val)
            rows.append((bname, mname, ours, val))
            if ours == "bures":
                worst_bures = max(worst_bures, diff)
                exact.append((bname, mname, "bures", bures_exact(bvec, mvec)))
    return rows, exact, worst_bures


# ---------------------------------------------------------------------------
# Kornblith et al. (2019), "Similarity of neural network representations revisited",
# the formulas of their published CKA notebook
# ---------------------------------------------------------------------------

def gram_linear(x):
    return x.dot(x.T)


def gram_rbf(x, threshold=1.0):
    dot_products = x.dot(x.T)
    sq_norms = np.diag(dot_products)
    sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
    sq_median_distance = np.median(sq_distances)
    return np.exp(-sq_distances / (2 * threshold ** 2 * sq_median_distance))


def center_gram(gram, unbiased=False):
    if not np.allclose(gram, gram.T):
        raise ValueError("Input must be a symmetric matrix.")
    gram = gram.copy()
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0)
        means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = np.mean(gram, 0, dtype=np.float64)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def cka(gram_x, gram_y, debiased=False):
    gram_x = center_gram(gram_x, unbiased=debiased)
    gram_y = center_gram(gram_y, unbiased=debiased)
    scaled_hsic = gram_x.ravel().dot(gram_y.ravel())
    normalization_x = np.linalg.norm(gram_x)
    normalization_y = np.linalg.norm(gram_y)
    return scaled_hsic / (normalization_x * normalization_y)


def hsic_unbiased_song(K, L):
    """Song et al. (2012), eq. 5: the unbiased HSIC estimator, written out."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(n)
    return (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3))


def cka_case(name, seed, n):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 30)) + rng.uniform(-2, 2, size=30)
    W = rng.standard_normal((30, 12)) / np.sqrt(30)
    Y = np.tanh(X @ W) + 0.5 * rng.standard_normal((n, 12)) + rng.uniform(-1, 1, size=12)
    save(OUT / f"cka_{name}_X.npy", X)
    save(OUT / f"cka_{name}_Y.npy", Y)
    rows = []
    grams = {"linear": gram_linear, "rbf": gram_rbf}
    for kname, gram in grams.items():
        K, L = gram(X), gram(Y)
        for unbiased in (False, True):
            val = float(cka(K, L, debiased=unbiased))
            method = f"cka_{kname}" + ("_unbiased" if unbiased else "")
            rows.append((f"{name}_X", f"{name}_Y", method, val))
            if unbiased:
                ref = hsic_unbiased_song(K, L) / np.sqrt(
                    hsic_unbiased_song(K, K) * hsic_unbiased_song(L, L))
                assert abs(ref - val) < 1e-12, (method, ref, val)
    # linear CKA in feature space
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    lin = np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    assert abs(lin - rows[0][3]) < 1e-12, (lin, rows[0][3])
    # from RDMs: rsatoolbox 'euclidean' (squared distance / n_channels)
    for P, Kp in ((X, gram_rbf(X)), (Y, gram_rbf(Y))):
        D = squareform(pdist(P, "sqeuclidean") / P.shape[1])
        med = np.median(D)
        assert np.abs(np.exp(-D / (2 * med)) - Kp).max() < 1e-12
        assert np.abs(center_gram(-0.5 * D) - center_gram(P @ P.T) / P.shape[1]).max() < 1e-10
    log(f"compare/cka {name}: " + ", ".join(f"{m}={v:.6f}" for _, _, m, v in rows))
    return rows


def main():
    from rsatoolbox.rdm import RDMs

    log(f"rsatoolbox {importlib.metadata.version('rsatoolbox')}, scipy {scipy.__version__}, "
        f"numpy {np.__version__}")
    OUT.mkdir(parents=True, exist_ok=True)

    # ---- real data
    human = np.load(KRIEG / "human_it_rdm.npy")
    monkey = np.load(KRIEG / "monkey_it_rdm.npy")
    models = np.load(KRIEG / "model_rdms.npy")
    names = [s.strip() for s in (KRIEG / "model_names.txt").read_text().splitlines() if s.strip()]
    assert len(names) == models.shape[0] == 8 and human.shape == monkey.shape == (4186,)
    model_vecs = RDMs(dissimilarities=models).get_vectors()
    iu = np.triu_indices(92, 1)
    np.testing.assert_array_equal(model_vecs, models[:, iu[0], iu[1]])
    pairs = [("human_it", human, "monkey_it", monkey)]
    pairs += [("human_it", human, m, v) for m, v in zip(names, model_vecs)]
    pairs += [("monkey_it", monkey, m, v) for m, v in zip(names, model_vecs)]
    rows, exact, worst = comparison_rows(pairs)
    assert len(rows) == 68
    write_csv(OUT / "real.csv", rows)
    log(f"compare/real: {len(rows)} rows; max |rsatoolbox bures - exact| = {worst:.2e}")

    # ---- ties
    rng = np.random.default_rng(46)
    ties_a = rng.integers(0, 5, size=45).astype(np.float64)
    ties_b = np.clip(ties_a + rng.integers(-2, 3, size=45), 0, 4).astype(np.float64)
    save(OUT / "ties_a.npy", ties_a)
    save(OUT / "ties_b.npy", ties_b)
    trows, texact, tworst = comparison_rows([("ties_a", ties_a, "ties_b", ties_b)])
    write_csv(OUT / "ties.csv", trows)
    write_csv(OUT / "bures_exact.csv", exact + texact)
    log("compare/ties: " + ", ".join(f"{m}={v!r}" for _, _, m, v in trows)
        + f"; spearman={scipy.stats.spearmanr(ties_a, ties_b)[0]!r}; bures vs exact {tworst:.2e}")

    # ---- NaN at the same positions in both
    rng = np.random.default_rng(47)
    pa = rng.standard_normal((12, 8))
    pb = pa + rng.standard_normal((12, 8))
    nan_a = pdist(pa, "sqeuclidean") / 8
    nan_b = pdist(pb, "sqeuclidean") / 8
    holes = rng.choice(66, size=7, replace=False)
    nan_a[holes] = np.nan
    nan_b[holes] = np.nan
    save(OUT / "nan_a.npy", nan_a)
    save(OUT / "nan_b.npy", nan_b)
    nrows = []
    keep = ~np.isnan(nan_a)
    for ours, theirs in METHODS:
        if ours == "bures":
            try:
                rsa_compare(nan_a, nan_b, theirs)
                raise AssertionError("rsatoolbox's bures unexpectedly accepts NaN")
            except ValueError as e:
                log(f"compare/nan: rsatoolbox bures refuses NaN: {e}")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            val = rsa_compare(nan_a, nan_b, theirs)
        if ours != "corr_cov":  # rank methods: the NaN positions are dropped
            cross_check(nan_a[keep], nan_b[keep], ours, val)
        nrows.append(("nan_a", "nan_b", ours, val))
    write_csv(OUT / "nan.csv", nrows)
    log("compare/nan: " + ", ".join(f"{m}={v!r}" for _, _, m, v in nrows))

    # ---- CKA
    crows = cka_case("n20", 48, 20) + cka_case("n40", 49, 40)
    write_csv(OUT / "cka.csv", crows)

    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    log(f"compare fixtures total size: {total / 1024:.1f} KiB")
    assert total < 100 * 1024


if __name__ == "__main__":
    main()
