#!/usr/bin/env python3
"""Reference fixtures for brainfit's group-level sign-flip tests
(crates/brainfit-kernels/src/group.rs): nilearn 0.14's TFCE (`calculate_tfce`), scipy's
cluster labelling, nilearn's `permuted_ols` (intercept-only design: the one-sample sign-flip
test) replayed flip by flip, and a naive enumeration of all sign patterns.

Usage (from the repository root):
    .venv/bin/python scripts/python/make_fixtures_group.py
    (or: .venv/bin/python scripts/python/make_fixtures.py group)

Deterministic (numpy default_rng / RandomState with fixed seeds; BLAS single-threaded), so
rerunning rewrites the same bytes. Arrays are float64, C order, unless stated otherwise.

Files under tests/fixtures/group/:

tfce/ (a fixed smooth t map with a positive and a negative blob; nilearn's calculate_tfce,
E = 0.5, H = 2, which steps h_i = max * i / N, i = 1..N, N = 100 for dh='auto', else
round(max / dh) clamped to 10..1000, and sums extent^E * h^H without the factor dh)
  t.npy [9, 8, 7]                  the map
  two_auto_c26.npy [9, 8, 7]       two_sided_test=True, dh='auto', 3x3x3 ones (26-connectivity)
  one_auto_c26.npy [9, 8, 7]       two_sided_test=False, dh='auto', 26-connectivity
  two_dh_c26.npy [9, 8, 7]         two_sided_test=True, dh=0.1, 26-connectivity
  two_auto_c6.npy [9, 8, 7]        two_sided_test=True, dh='auto', generate_binary_structure(3, 1)
  cluster_u.npy [1]                cluster-forming threshold u
  labels_pos.npy, labels_neg.npy [9, 8, 7] int64
                                   scipy.ndimage.label(t > u), label(t < -u), 3x3x3 ones
  mass_pos.npy, mass_neg.npy [c]   per scipy label (1..c): sum(|t| - u)

exhaustive/ (10 subjects, a masked 7x6x5 volume with a planted blob: all 2^10 = 1024 sign
patterns enumerated naively in numpy; pattern k negates subject i iff bit i of k is set;
statistics per pattern: t = mean / (sd(ddof=1) / sqrt(n)), TFCE by nilearn's calculate_tfce
(dh='auto', 26-connectivity) on the volume (0 outside the mask), clusters by scipy label with
3x3x3 ones; p = mean over all 1024 patterns of [null >= observed] (the observed pattern
included))
  mask.npy [7, 6, 5] int64         the mask (elements = mask voxels in C order)
  Y.npy [10, V]                    subject maps
  params.npy [2]                   cluster-forming threshold u, number of patterns
  <tail>_t.npy, <tail>_p.npy, <tail>_p_fwe.npy, <tail>_tfce.npy, <tail>_p_tfce.npy,
  <tail>_p_mass.npy, <tail>_p_extent.npy [V]   tail = two, greater; cluster p per voxel (its
                                   cluster's, 1 outside clusters)

permuted_ols/ (nilearn.mass_univariate.permuted_ols, tested_vars = ones((n, 1)),
model_intercept=False, n_perm=200, random_state=0, n_jobs=1, tfce=True, threshold=0.01 (a
p-value, which nilearn turns into t with n - 1 degrees of freedom), masker over a 8x7x6
mask; nilearn uses 6-connectivity and dh='auto' here)
  mask.npy [8, 7, 6] int64, Y.npy [14, V]
  signs.npy [200, 14]              nilearn's flips, replayed: its RandomState draws
                                   randint(2, size=(n, 1)) * 2 - 1 per permutation and
                                   multiplies the data cumulatively, so flip k is the product
                                   of draws 0..k (checked here against its h0_max_t)
  <tail>_t.npy [V], <tail>_h0_max_t.npy [200], <tail>_logp_max_t.npy [V],
  <tail>_tfce.npy [V], <tail>_h0_max_tfce.npy [200], <tail>_logp_max_tfce.npy [V],
  <tail>_h0_max_mass.npy [200], <tail>_h0_max_size.npy [200], <tail>_threshold_t.npy [1]
                                   tail = two (two_sided_test=True), greater (False)

t_threshold.npy [m, 4]             rows (p, df, two_sided (1/0), t): scipy.stats.t.isf(p / 2 if
                                   two-sided else p, df), nilearn's cluster-forming threshold
t_sf.npy [m, 3]                    rows (t, df, scipy.stats.t.sf(t, df))
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
from scipy import ndimage  # noqa: E402

from make_fixtures import FIX, log, save  # noqa: E402

OUT = FIX / "group"
C26 = np.ones((3, 3, 3), dtype=int)


def smooth_noise(rng, shape, width=3):
    """Gaussian noise smoothed by a box filter of `width` voxels, rescaled to unit sd."""
    x = ndimage.uniform_filter(rng.standard_normal(shape), size=width, mode="constant")
    return x / x.std()


def blob(shape, centre, radius):
    grid = np.indices(shape).astype(float)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return np.exp(-d2 / (2 * radius**2))


def tfce(vol, two_sided, dh="auto", struct=C26):
    from nilearn.mass_univariate._utils import calculate_tfce

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calculate_tfce(vol[..., None], bin_struct=struct, dh=dh,
                              two_sided_test=two_sided)[..., 0]


def naive_tfce(vol, two_sided, struct=C26, steps=100):
    """Direct sum over heights h_i = max * i / steps (the same rule), for cross-checking."""
    mx = np.max(np.abs(vol)) if two_sided else np.max(vol)
    hs = np.linspace(0, mx, steps + 1)[1:]
    out = np.zeros_like(vol)
    for sign in ([1, -1] if two_sided else [1]):
        x = vol * sign
        for h in hs:
            lab, n = ndimage.label(x >= h, struct)
            sizes = np.bincount(lab.ravel())
            out += sign * np.where(lab > 0, np.sqrt(sizes[lab]) * h**2, 0.0)
    return out


def cluster_stats(vol, u, two_sided):
    """(max mass, max extent) of clusters of t > u (and t < -u if two-sided), 26-connected."""
    best_mass, best_size = 0.0, 0
    for sign in ([1, -1] if two_sided else [1]):
        x = vol * sign
        lab, n = ndimage.label(x > u, C26)
        for c in range(1, n + 1):
            sel = lab == c
            best_mass = max(best_mass, float(np.sum(x[sel] - u)))
            best_size = max(best_size, int(sel.sum()))
    return best_mass, best_size


def observed_clusters(vol, u, two_sided):
    """Per-voxel (mass, extent) of the cluster each voxel belongs to (0 outside)."""
    mass = np.zeros_like(vol)
    size = np.zeros_like(vol)
    for sign in ([1, -1] if two_sided else [1]):
        x = vol * sign
        lab, n = ndimage.label(x > u, C26)
        for c in range(1, n + 1):
            sel = lab == c
            mass[sel] = np.sum(x[sel] - u)
            size[sel] = sel.sum()
    return mass, size


def t_stat(Y):
    n = Y.shape[0]
    return Y.mean(0) / (Y.std(0, ddof=1) / np.sqrt(n))


def tfce_fixture():
    rng = np.random.default_rng(1801)
    shape = (9, 8, 7)
    t = (1.2 * smooth_noise(rng, shape) + 4.0 * blob(shape, (2.5, 2.0, 3.0), 1.4)
         - 3.5 * blob(shape, (6.0, 5.5, 3.5), 1.2))
    out = OUT / "tfce"
    save(out / "t.npy", t)
    cases = {
        "two_auto_c26": tfce(t, True),
        "one_auto_c26": tfce(t, False),
        "two_dh_c26": tfce(t, True, dh=0.1),
        "two_auto_c6": tfce(t, True, struct=ndimage.generate_binary_structure(3, 1)),
    }
    for name, v in cases.items():
        save(out / f"{name}.npy", v)
    # the direct sum agrees with nilearn's calculate_tfce
    np.testing.assert_allclose(naive_tfce(t, True), cases["two_auto_c26"], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(naive_tfce(t, False), cases["one_auto_c26"], rtol=1e-12, atol=1e-9)
    u = 1.0
    save(out / "cluster_u.npy", [u])
    for name, x in (("pos", t), ("neg", -t)):
        lab, n = ndimage.label(x > u, C26)
        assert n >= 2, (name, n)
        save(out / f"labels_{name}.npy", lab, np.int64)
        save(out / f"mass_{name}.npy", [np.sum(x[lab == c] - u) for c in range(1, n + 1)])
    log(f"group/tfce: max |tfce| {np.abs(cases['two_auto_c26']).max():.4g}; "
        f"clusters at u={u}: {ndimage.label(t > u, C26)[1]} positive, "
        f"{ndimage.label(-t > u, C26)[1]} negative")


def exhaustive_fixture():
    rng = np.random.default_rng(1802)
    shape = (7, 6, 5)
    n = 10
    mask = blob(shape, (3.0, 2.5, 2.0), 2.6) > 0.25
    V = int(mask.sum())
    effect = 3.0 * blob(shape, (2.0, 2.0, 2.0), 1.2)
    Y = np.stack([(smooth_noise(rng, shape) + effect)[mask] for _ in range(n)])
    u = 2.5
    out = OUT / "exhaustive"
    save(out / "mask.npy", mask, np.int64)
    save(out / "Y.npy", Y)
    save(out / "params.npy", [u, 2**n])

    def vol(x):
        v = np.zeros(shape)
        v[mask] = x
        return v

    patterns = np.array([[-1.0 if (k >> i) & 1 else 1.0 for i in range(n)] for k in range(2**n)])
    assert np.all(patterns[0] == 1)
    for tail, two in (("two", True), ("greater", False)):
        score = np.abs if two else (lambda x: x)
        t_obs = t_stat(Y)
        tf_obs = tfce(vol(t_obs), two)[mask]
        m_obs, s_obs = observed_clusters(vol(t_obs), u, two)
        m_obs, s_obs = m_obs[mask], s_obs[mask]
        cnt = np.zeros(V)
        max_t, max_tf, max_m, max_s = [], [], [], []
        for s in patterns:
            tk = t_stat(Y * s[:, None])
            cnt += score(tk) >= score(t_obs)
            max_t.append(np.max(score(tk)))
            max_tf.append(np.max(np.abs(tfce(vol(tk), two))))
            mm, ss = cluster_stats(vol(tk), u, two)
            max_m.append(mm)
            max_s.append(ss)
        max_t, max_tf, max_m, max_s = map(np.array, (max_t, max_tf, max_m, max_s))
        N = len(patterns)
        p = cnt / N
        p_fwe = np.array([np.mean(max_t >= score(x)) for x in t_obs])
        p_tfce = np.array([np.mean(max_tf >= abs(x)) for x in tf_obs])
        p_mass = np.array([np.mean(max_m >= m) if m > 0 else 1.0 for m in m_obs])
        p_ext = np.array([np.mean(max_s >= z) if z > 0 else 1.0 for z in s_obs])
        assert p.min() >= 1 / N and p_fwe.min() < 0.05 and p_tfce.min() < 0.05, (
            p.min(), p_fwe.min(), p_tfce.min())
        for name, v in (("t", t_obs), ("p", p), ("p_fwe", p_fwe), ("tfce", tf_obs),
                        ("p_tfce", p_tfce), ("p_mass", p_mass), ("p_extent", p_ext)):
            save(out / f"{tail}_{name}.npy", v)
        log(f"group/exhaustive/{tail}: V={V}, min p {p.min():.4g}, min p_fwe {p_fwe.min():.4g}, "
            f"min p_tfce {p_tfce.min():.4g}, min p_mass {p_mass.min():.4g}, "
            f"min p_extent {p_ext.min():.4g}")


def permuted_ols_fixture():
    import nibabel as nib
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols

    rng = np.random.default_rng(1803)
    shape = (8, 7, 6)
    n, n_perm, seed = 14, 200, 0
    mask = blob(shape, (3.5, 3.0, 2.5), 3.0) > 0.2
    effect = 1.6 * blob(shape, (2.5, 2.5, 2.5), 1.2) - 1.4 * blob(shape, (5.5, 4.5, 3.0), 1.0)
    Y = np.stack([(smooth_noise(rng, shape) + effect)[mask] for _ in range(n)])
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))
    masker = NiftiMasker(mask_img).fit()
    out = OUT / "permuted_ols"
    save(out / "mask.npy", mask, np.int64)
    save(out / "Y.npy", Y)

    # nilearn's flips: permuted_ols draws one chunk seed, the chunk's RandomState draws a
    # sign column per permutation and multiplies the (already flipped) data by it
    outer = np.random.RandomState(seed)
    chunk = np.random.RandomState(outer.randint(1, np.iinfo(np.int32).max - 1))
    signs = np.empty((n_perm, n))
    cum = np.ones(n)
    for k in range(n_perm):
        cum = cum * (chunk.randint(2, size=(n, 1)) * 2 - 1)[:, 0]
        signs[k] = cum
    save(out / "signs.npy", signs)

    for tail, two in (("two", True), ("greater", False)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = permuted_ols(np.ones((n, 1)), Y, model_intercept=False, n_perm=n_perm,
                               two_sided_test=two, random_state=seed, n_jobs=1, tfce=True,
                               threshold=0.01, masker=masker, output_type="dict", verbose=0)
        t = res["t"][0]
        np.testing.assert_allclose(t, t_stat(Y), rtol=1e-10)
        score = np.abs if two else (lambda x: x)
        replay = np.array([np.max(score(t_stat(Y * s[:, None]))) for s in signs])
        np.testing.assert_allclose(replay, res["h0_max_t"][0], rtol=1e-10)
        from scipy import stats
        thr = stats.t.isf(0.01 / 2 if two else 0.01, df=n - 1)
        for name, v in (("t", t), ("h0_max_t", res["h0_max_t"][0]),
                        ("logp_max_t", res["logp_max_t"][0]), ("tfce", res["tfce"][0]),
                        ("h0_max_tfce", res["h0_max_tfce"][0]),
                        ("logp_max_tfce", res["logp_max_tfce"][0]),
                        ("h0_max_mass", res["h0_max_mass"][0]),
                        ("h0_max_size", res["h0_max_size"][0]), ("threshold_t", [thr])):
            save(out / f"{tail}_{name}.npy", v)
        log(f"group/permuted_ols/{tail}: V={Y.shape[1]}, max |t| {np.abs(t).max():.4g}, "
            f"threshold t {thr:.4g}, min p_fwe {10 ** -res['logp_max_t'].max():.4g}, "
            f"min p_tfce {10 ** -res['logp_max_tfce'].max():.4g}")


def t_fixture():
    from scipy import stats

    rows = []
    for p in (0.5, 0.1, 0.05, 0.01, 0.001, 1e-4, 1e-6, 0.9):
        for df in (1, 2, 3.5, 9, 11, 29, 200):
            for two in (1, 0):
                rows.append([p, df, two, stats.t.isf(p / 2 if two else p, df)])
    save(OUT / "t_threshold.npy", rows)
    sf = [[t, df, stats.t.sf(t, df)] for t in (-3.0, -0.5, 0.0, 0.3, 1.0, 2.5, 4.0, 12.0, 40.0)
          for df in (1, 4, 11, 50.5)]
    save(OUT / "t_sf.npy", sf)
    log(f"group/t: {len(rows)} quantiles, {len(sf)} survival values")


def main():
    import nilearn
    import scipy

    log(f"group: nilearn {nilearn.__version__}, scipy {scipy.__version__}")
    t_fixture()
    tfce_fixture()
    exhaustive_fixture()
    permuted_ols_fixture()
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    log(f"group fixtures total size: {total / 1024:.1f} KiB")
    assert total < 300 * 1024


if __name__ == "__main__":
    main()
