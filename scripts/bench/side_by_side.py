"""brainfit side by side with the Python anchors, on the same data, in one run.

Usage (from the repository root, after `cargo build --release` and scripts/python/setup_venv.sh):

    .venv/bin/python scripts/bench/side_by_side.py [--quick] [--workdir /tmp/brainfit-bench]

Each case writes its inputs once, times brainfit (`brainfit run`, embedded, all cores) and the
Python anchor on them, checks that both computed the same numbers, and prints the ratio of
wall-clock times measured in this run. Nothing here is asserted in tests: speed is measured.

Cases:
  searchlight  20,000 centres, 92 conditions (the 92-object model RDMs), radius 3, correlation
               RDM, Spearman; anchor: batched numpy (gather, Gram, rankdata, correlate).
  permutation  the same searchlight with 1,000 condition-label permutations; anchor: numpy with
               each centre's ranks computed once and all permutations as one matrix product.
  ridge        voxelwise ridge, 1,200 samples x 512 features x 10,000 voxels, 15 alphas,
               5x5 nested CV; anchor: himalaya RidgeCV (numpy backend, float32) per outer fold.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import nibabel as nib
from scipy.stats import rankdata

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "brainfit"
KRIEG = ROOT / "tests" / "data" / "kriegeskorte2008"


def run_brainfit(job: Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(BIN), "run", str(job)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def box_mask(n_voxels: int):
    side = int(np.ceil(n_voxels ** (1 / 3))) + 2
    mask = np.zeros((side, side, side), np.uint8)
    mask.reshape(-1)[:n_voxels] = 1
    return mask


def spheres(mask: np.ndarray, radius: float):
    coords = np.argwhere(mask)  # C order = nilearn's apply_mask order
    index = -np.ones(mask.shape, np.int64)
    index[tuple(coords.T)] = np.arange(len(coords))
    r = int(np.floor(radius))
    offsets = np.array([(i, j, k) for i in range(-r, r + 1) for j in range(-r, r + 1) for k in range(-r, r + 1)
                        if i * i + j * j + k * k <= radius * radius + 1e-9])
    members = []
    for c in coords:
        p = c + offsets
        ok = np.all((p >= 0) & (p < mask.shape), axis=1)
        m = index[tuple(p[ok].T)]
        members.append(np.sort(m[m >= 0]))
    return members


def zscore_rows(x):
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_searchlight_features(data, members, batch=256):
    """Batched numpy: per centre, correlation RDM ranks as unit-norm centred features."""
    n = data.shape[0]
    iu = np.triu_indices(n, 1)
    feats = np.empty((len(members), len(iu[0])))
    sizes = np.array([len(m) for m in members])
    for size in np.unique(sizes):  # batch spheres of equal size so they stack
        idx = np.flatnonzero(sizes == size)
        for s in range(0, len(idx), batch):
            chunk = idx[s:s + batch]
            patterns = data[:, np.stack([members[i] for i in chunk])]  # [n, b, size]
            patterns = np.transpose(patterns, (1, 0, 2)).astype(np.float64)
            patterns = patterns - patterns.mean(axis=2, keepdims=True)
            patterns /= np.linalg.norm(patterns, axis=2, keepdims=True)
            gram = patterns @ np.transpose(patterns, (0, 2, 1))
            rdms = 1.0 - gram[:, iu[0], iu[1]]
            feats[chunk] = zscore_rows(rankdata(rdms, axis=1))
    return feats


def case_searchlight(work: Path, n_centres: int, n_perm: int):
    models = np.load(KRIEG / "model_rdms.npy")
    model = models[0][np.triu_indices(92, 1)]  # animacy
    rng = np.random.default_rng(0)
    mask = box_mask(n_centres)
    data = rng.standard_normal((92, n_centres)).astype(np.float32)
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "brain.npy", data)
    np.save(work / "model.npy", models[0])
    nib.save(nib.Nifti1Image(mask, np.eye(4)), work / "mask.nii.gz")
    perm = f"[permutation]\nn = {n_perm}\nseed = 0\n" if n_perm else ""
    (work / "job.toml").write_text(
        "name = \"bench-searchlight\"\noutput = \"out\"\n[data]\nbrain = \"brain.npy\"\nmask = \"mask.nii.gz\"\n"
        "[rsa]\nmodels = { animacy = \"model.npy\" }\n[searchlight]\nradius = 3.0\nmin_voxels = 1\n" + perm)
    t_brainfit = run_brainfit(work / "job.toml")
    rho_brainfit = np.load(work / "out/searchlight/animacy/rho.npy")

    members = spheres(mask, 3.0)
    start = time.perf_counter()
    feats = numpy_searchlight_features(data, members)
    model_f = zscore_rows(rankdata(model)[None, :])[0]
    rho = feats @ model_f
    if n_perm:
        perms = np.stack([rng.permutation(92) for _ in range(n_perm)])
        iu = np.triu_indices(92, 1)
        sq = np.zeros((92, 92)); sq[iu] = model_f; sq = sq + sq.T
        permuted = np.stack([sq[p][:, p][iu] for p in perms], axis=1)  # [pairs, n_perm]
        null = feats @ permuted
        count = (null >= rho[:, None]).sum(axis=1)
        null_max = null.max(axis=0)
    t_numpy = time.perf_counter() - start
    diff = float(np.max(np.abs(rho - rho_brainfit)))
    return t_brainfit, t_numpy, diff, len(members)


def case_ridge(work: Path, n: int, p: int, v: int):
    from himalaya.ridge import RidgeCV
    from sklearn.model_selection import KFold
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, p)).astype(np.float32)
    y = (x @ rng.standard_normal((p, v)).astype(np.float32) * 0.05 + rng.standard_normal((n, v)).astype(np.float32))
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "x.npy", x)
    np.save(work / "y.npy", y)
    alphas = np.logspace(-2, 5, 15)
    (work / "job.toml").write_text(
        "name = \"bench-ridge\"\noutput = \"out\"\n[data]\nbrain = \"y.npy\"\n[features]\nx = \"x.npy\"\n"
        "[encoding]\nalphas = { logspace = [-2, 5, 15] }\n")
    t_brainfit = run_brainfit(work / "job.toml")
    score_brainfit = np.load(work / "out/encoding/x/score.npy")
    start = time.perf_counter()
    scores = []
    for train, test in KFold(5).split(x):
        model = RidgeCV(alphas=alphas, cv=KFold(5), fit_intercept=True)
        model.fit(x[train], y[train])
        pred = model.predict(x[test])
        yt = y[test]
        scores.append(1 - ((yt - pred) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0))
    t_himalaya = time.perf_counter() - start
    diff = float(np.max(np.abs(np.mean(scores, axis=0) - score_brainfit)))
    return t_brainfit, t_himalaya, diff


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    ap.add_argument("--workdir", default="/tmp/brainfit-bench")
    ap.add_argument("--only", choices=["searchlight", "permutation", "ridge"])
    args = ap.parse_args()
    work = Path(args.workdir)
    if not BIN.exists():
        sys.exit(f"{BIN} missing: run `cargo build --release` first")
    scale = 0.1 if args.quick else 1.0
    results = {}
    if args.only in (None, "searchlight"):
        tb, tn, diff, centres = case_searchlight(work / "sl", int(20000 * scale), 0)
        results["searchlight"] = dict(centres=centres, brainfit_s=tb, numpy_s=tn, ratio=tn / tb, max_abs_diff=diff)
    if args.only in (None, "permutation"):
        tb, tn, diff, centres = case_searchlight(work / "perm", int(20000 * scale), 1000)
        results["permutation"] = dict(centres=centres, permutations=1000, brainfit_s=tb, numpy_s=tn, ratio=tn / tb, max_abs_diff=diff)
    if args.only in (None, "ridge"):
        v = int(10000 * scale)
        tb, th, diff = case_ridge(work / "ridge", 1200, 512, v)
        results["ridge"] = dict(samples=1200, features=512, voxels=v, brainfit_s=tb, himalaya_s=th, ratio=th / tb, max_abs_diff=diff)
    cores = os.cpu_count()
    print(json.dumps({"cores": cores, **results}, indent=2))
    for name, r in results.items():
        anchor = "himalaya" if name == "ridge" else "numpy"
        print(f"{name:12s} brainfit {r['brainfit_s']:.2f} s, {anchor} {r.get('numpy_s', r.get('himalaya_s')):.2f} s "
              f"-> brainfit {r['ratio']:.1f}x faster (max |diff| {r['max_abs_diff']:.1e})")


if __name__ == "__main__":
    main()
