#!/usr/bin/env python3
"""Reference fixtures for brainfit's layer compression (crates/brainfit-kernels/src/compress.rs):
scikit-learn's IncrementalPCA (whiten=False) fitted in its own `fit` batches, and the
Johnson-Lindenstrauss bound and 'auto' density of sklearn.random_projection.

Usage (from the repository root):
    .venv/bin/python scripts/python/make_fixtures_compress.py
    (or: .venv/bin/python scripts/python/make_fixtures.py compress)

Deterministic (numpy default_rng with fixed seeds; BLAS single-threaded), so rerunning
rewrites the same bytes. Arrays are float64 unless stated otherwise.

Files under tests/fixtures/compress/<case>/ (case = uneven, wide, all_features, one_batch,
last_batch_k):
  X.npy [n, p]          the data IncrementalPCA is fitted on: r latent factors with geometric
                        scales read through random loadings, plus noise and per-feature offsets
  X_test.npy [t, p]     another draw of the same model, to transform
  params.npy [3] int64  n_components, batch_size (as passed to IncrementalPCA: the one_batch
                        case passes batch_size=None, i.e. 5 * p), the batch_size `fit` used
  mean.npy, var.npy [p]                      mean_, var_
  components.npy [k, p]                      components_ (signs as sklearn's svd_flip leaves them)
  singular_values.npy, explained_variance.npy, explained_variance_ratio.npy [k]
  noise_variance.npy [1]                     noise_variance_
  n_samples_seen.npy [1] int64               n_samples_seen_
  transform.npy [t, k]                       transform(X_test)

| case | n | p | k | batch | batches (gen_batches with min_batch_size = k) |
|---|---|---|---|---|---|
| uneven | 125 | 40 | 8 | 30 | 0-30, 30-60, 60-90, 90-125 (the 5-row rest merged into the last) |
| wide | 60 | 300 | 10 | 20 | three of 20 rows; k + 20 + 1 = 31 stacked rows, far fewer than p |
| all_features | 50 | 6 | 6 | 15 | 0-15, 15-30, 30-50; k = p, so noise_variance_ = 0 |
| one_batch | 25 | 12 | 5 | None (60) | one batch: plain PCA (asserted against PCA(svd_solver='full')) |
| last_batch_k | 38 | 20 | 8 | 10 | 0-10, 10-20, 20-30, 30-38: the last batch has k rows, so noise_variance_ = 0 |

Cross-checked here: a numpy re-implementation of partial_fit that never stacks the whole
matrix (the Gram matrix of the stacked rows accumulated over column chunks, its
eigendecomposition, then the components from a second pass over the chunks, svd_flip signs
tracked across chunks) agrees with IncrementalPCA within 1e-9 for every case and chunk width.

Files under tests/fixtures/compress/ (random projection):
  jl_n.npy [q] int64, jl_eps.npy [q], jl_dim.npy [q] int64
      johnson_lindenstrauss_min_dim(n, eps) for pairs (n, eps)
  density_features.npy [r] int64, density_auto.npy [r]
      the 'auto' density 1 / sqrt(n_features) of SparseRandomProjection (_check_density)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from make_fixtures import FIX, log, save  # noqa: E402

OUT = FIX / "compress"

# name, seed, n, p, k, batch_size (None: sklearn's default 5 * p), latent rank, n_test
CASES = [
    ("uneven", 61, 125, 40, 8, 30, 6, 6),
    ("wide", 62, 60, 300, 10, 20, 12, 4),
    ("all_features", 63, 50, 6, 6, 15, 3, 5),
    ("one_batch", 64, 25, 12, 5, None, 4, 5),
    ("last_batch_k", 65, 38, 20, 8, 10, 5, 5),
]


def make_data(seed, n, p, r, n_test):
    """r latent factors (scales 6 down to 1.5) read through N(0,1) loadings, noise sd 0.5,
    per-feature offsets U(-3, 3); X_test from the same model."""
    rng = np.random.default_rng(seed)
    loadings = rng.standard_normal((r, p))
    offset = rng.uniform(-3.0, 3.0, size=p)
    scales = np.geomspace(6.0, 1.5, r)

    def draw(m):
        latent = rng.standard_normal((m, r)) * scales
        return latent @ loadings + 0.5 * rng.standard_normal((m, p)) + offset

    return draw(n), draw(n_test)


def gen_batches(n, batch_size, min_batch_size):
    """sklearn.utils.gen_batches, written out (and checked against it below)."""
    out, start = [], 0
    for _ in range(n // batch_size):
        end = start + batch_size
        if end + min_batch_size > n:
            continue
        out.append((start, end))
        start = end
    if start < n:
        out.append((start, n))
    return out


class GramIpca:
    """partial_fit of IncrementalPCA over column chunks, the way compress.rs computes it."""

    def __init__(self, k, p, chunk):
        self.k, self.p, self.chunk = k, p, chunk
        self.n = 0
        self.mean = np.zeros(p)
        self.var = np.zeros(p)
        self.comp = None  # unflipped
        self.signs = None
        self.s = None

    def stacked(self, xb, cols, batch_mean, new_mean):
        if self.n == 0:
            return xb[:, cols] - new_mean[cols]
        b = xb.shape[0]
        corr = np.sqrt(self.n / (self.n + b) * b) * (self.mean[cols] - batch_mean[cols])
        return np.vstack([self.s[:, None] * self.comp[:, cols], xb[:, cols] - batch_mean[cols],
                          corr[None, :]])

    def partial_fit(self, xb):
        b, p, k = xb.shape[0], self.p, self.k
        n_total = self.n + b
        batch_mean = xb.mean(0)
        new_sum = xb.sum(0)
        temp = xb - new_sum / b
        new_unnorm = (temp ** 2).sum(0) - temp.sum(0) ** 2 / b
        if self.n == 0:
            new_var = new_unnorm / n_total
        else:
            last_sum = self.mean * self.n
            ratio = self.n / b
            new_var = (self.var * self.n + new_unnorm
                       + ratio / n_total * (last_sum / ratio - new_sum) ** 2) / n_total
        new_mean = (self.mean * self.n + new_sum) / n_total
        chunks = [slice(a, min(a + self.chunk, p)) for a in range(0, p, self.chunk)]
        g = sum(m @ m.T for m in (self.stacked(xb, c, batch_mean, new_mean) for c in chunks))
        lam, u = np.linalg.eigh(g)
        lam, u = np.maximum(lam[::-1], 0.0), u[:, ::-1]
        lam = lam[:min(g.shape[0], p)]
        s = np.sqrt(lam)
        comp = np.zeros((k, p))
        best = np.zeros(k)
        signs = np.ones(k)
        for c in chunks:
            v = (u[:, :k].T @ self.stacked(xb, c, batch_mean, new_mean)) / s[:k, None]
            comp[:, c] = v
            for i in range(k):
                j = int(np.argmax(np.abs(v[i])))
                if abs(v[i, j]) > best[i]:
                    best[i], signs[i] = abs(v[i, j]), np.sign(v[i, j])
        ev = lam / (n_total - 1)
        self.ratio = lam[:k] / np.sum(new_var * n_total)
        self.noise = 0.0 if k in (b, p) else ev[k:].mean()
        self.n, self.mean, self.var, self.comp, self.signs, self.s = (
            n_total, new_mean, new_var, comp, signs, s[:k])
        self.ev = ev[:k]

    def transform(self, x):
        return (x - self.mean) @ (self.comp * self.signs[:, None]).T


def ipca_case(name, seed, n, p, k, batch_size, r, n_test):
    from sklearn.decomposition import PCA, IncrementalPCA
    from sklearn.utils import gen_batches as sk_gen_batches

    X, X_test = make_data(seed, n, p, r, n_test)
    ipca = IncrementalPCA(n_components=k, batch_size=batch_size).fit(X)
    used = ipca.batch_size_
    batches = gen_batches(n, used, k)
    assert batches == [(s.start, s.stop) for s in sk_gen_batches(n, used, min_batch_size=k)]
    tr = ipca.transform(X_test)

    # cross-check: the chunked Gram computation, for several chunk widths
    worst = 0.0
    for chunk in (1, 7, p):
        ref = GramIpca(k, p, chunk)
        for a, e in batches:
            ref.partial_fit(X[a:e])
        flipped = ref.comp * ref.signs[:, None]
        for ours, theirs in [(flipped, ipca.components_), (ref.mean, ipca.mean_),
                             (ref.var, ipca.var_), (ref.s, ipca.singular_values_),
                             (ref.ev, ipca.explained_variance_),
                             (ref.ratio, ipca.explained_variance_ratio_),
                             (ref.transform(X_test), tr)]:
            err = np.max(np.abs(ours - theirs)) / max(1.0, np.max(np.abs(theirs)))
            worst = max(worst, err)
        nv = abs(ref.noise - ipca.noise_variance_) / max(1.0, abs(ipca.noise_variance_))
        worst = max(worst, nv)
    assert worst < 1e-9, (name, worst)
    if len(batches) == 1:
        pca = PCA(n_components=k, svd_solver="full").fit(X)
        np.testing.assert_allclose(np.abs(pca.components_), np.abs(ipca.components_), atol=1e-10)
        np.testing.assert_allclose(pca.singular_values_, ipca.singular_values_, rtol=1e-10)
    if k in (p, batches[-1][1] - batches[-1][0]):
        assert ipca.noise_variance_ == 0.0

    out = OUT / name
    save(out / "X.npy", X)
    save(out / "X_test.npy", X_test)
    save(out / "params.npy", [k, -1 if batch_size is None else batch_size, used], np.int64)
    save(out / "mean.npy", ipca.mean_)
    save(out / "var.npy", ipca.var_)
    save(out / "components.npy", ipca.components_)
    save(out / "singular_values.npy", ipca.singular_values_)
    save(out / "explained_variance.npy", ipca.explained_variance_)
    save(out / "explained_variance_ratio.npy", ipca.explained_variance_ratio_)
    save(out / "noise_variance.npy", [ipca.noise_variance_])
    save(out / "n_samples_seen.npy", [ipca.n_samples_seen_], np.int64)
    save(out / "transform.npy", tr)
    sv = ipca.singular_values_
    log(f"compress/{name}: n={n} p={p} k={k} batches={batches}; S {sv[0]:.4g}..{sv[-1]:.4g}; "
        f"noise_variance {ipca.noise_variance_:.4g}; chunked Gram re-implementation within "
        f"{worst:.2g}")


def projection_fixtures():
    from sklearn.random_projection import _check_density, johnson_lindenstrauss_min_dim

    pairs = [(50, 0.5), (50, 0.3), (1000, 0.1), (10_000, 0.1), (1_000_000, 0.5),
             (1_000_000, 0.1), (1_000_000, 0.01), (2, 0.9), (1, 0.5), (800_000, 0.25),
             (5000, 0.05), (123, 0.77)]
    ns = np.array([n for n, _ in pairs], dtype=np.int64)
    eps = np.array([e for _, e in pairs])
    dims = np.array([int(johnson_lindenstrauss_min_dim(int(n), eps=float(e))) for n, e in pairs],
                    dtype=np.int64)
    # sklearn's documented examples
    assert dims[4] == 663 and dims[5] == 11841 and dims[6] == 1112658
    save(OUT / "jl_n.npy", ns, np.int64)
    save(OUT / "jl_eps.npy", eps)
    save(OUT / "jl_dim.npy", dims, np.int64)
    feats = np.array([1, 2, 3, 40, 300, 1000, 4096, 100_000, 800_000, 1_234_567], dtype=np.int64)
    dens = np.array([float(_check_density("auto", int(f))) for f in feats])
    save(OUT / "density_features.npy", feats, np.int64)
    save(OUT / "density_auto.npy", dens)
    log(f"compress/jl: {dict(zip(map(tuple, zip(ns.tolist(), eps.tolist())), dims.tolist()))}")


def main():
    import sklearn

    log(f"compress: scikit-learn {sklearn.__version__}")
    for case in CASES:
        ipca_case(*case)
    projection_fixtures()
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    log(f"compress fixtures total size: {total / 1024:.1f} KiB")
    assert total < 300 * 1024


if __name__ == "__main__":
    main()
