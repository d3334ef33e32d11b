"""brainfit side by side with the Python anchors, on the same data, in one run (issue 12).

Run it through `scripts/bench/compare.sh [--quick] [--threads N]`, which sets up `.venv-bench/`
from scripts/bench/requirements.txt and (re)builds target/release/brainfit first. Directly:

    .venv-bench/bin/python scripts/bench/side_by_side.py [--quick] [--threads N] [--only CASE ...]

Threads. brainfit gets `--workers N` (one single-threaded worker per core: faer runs every
GEMM and eigendecomposition with `Par::Seq`, parallelism is across tasks); every anchor gets the
same N as OMP/OPENBLAS/MKL_NUM_THREADS, set before numpy is imported, plus
`threadpoolctl.threadpool_limits(N)`. Default N: all cores (os.cpu_count()). The job files set
`voxels_per_task` / `centres_per_task` so that a case has at least N tasks (results never depend
on task sizes; with 2 threads at the full sizes these are the defaults).

Processes. brainfit and every anchor run in a fresh child process under /usr/bin/time; peak RSS
is that process's own (`%M`), so no case's memory leaks into another's. brainfit's time is the whole
`brainfit run` (start, reading the inputs, planning, computing, writing and publishing the
outputs); an anchor's time is its computation only (inputs already in memory, imports done), so
ratios err in the anchors' favour.

Cases (the sizes of issue 12; --quick divides voxels/centres by 10):
  ridge        nested ridge, 1,200 samples x 800 features x 8,000 voxels (f32), 10 alphas
               (logspace -2..5), 2 outer x 5 inner contiguous folds (KFold), R^2.
               Anchors, each per outer fold:
                 himalaya  himalaya.ridge.RidgeCV(alphas, cv=KFold(5)), numpy backend, float32;
                 himalayakernel  himalaya.kernel_ridge.KernelRidgeCV(kernel="linear"), same
                           otherwise: himalaya's own advice when, as here, a training part has
                           fewer samples (600, 480) than features (800);
                 sklearn   scikit-learn cannot do this in one estimator: RidgeCV(alpha_per_target=True)
                           requires cv=None (leave-one-out GCV) and raises "cv!=None and
                           alpha_per_target=True are incompatible" with cv=KFold(5), and with
                           cv=KFold(5) alone it picks one alpha for all voxels. So the anchor is
                           that same nested CV written with sklearn.linear_model.Ridge: one
                           multi-target fit per (inner fold, alpha), per-voxel alpha = lowest mean
                           inner MSE (ties to the larger alpha, as brainfit), then one Ridge refit
                           per distinct chosen alpha on that alpha's voxels. float32.
  searchlight  20,000 centres (a box mask), 92 conditions, model = the 'animacy' RDM of
               tests/data/kriegeskorte2008, radius 3 (<= 3 voxels), correlation RDM, Spearman.
               Anchors:
                 numpy       batched: gather spheres of equal size, centre, normalise, Gram, rank.
                 rsatoolbox  rsatoolbox.util.searchlight.get_searchlight_RDMs (calc_rdm per
                             sphere) + rsatoolbox.rdm.compare(model, rdms, method='spearman'),
                             on a random subsample of centres (500; 100 with --quick) with
                             brainfit's spheres (rsatoolbox's own get_volume_searchlight uses
                             distance < r, brainfit <= r); the time is EXTRAPOLATED linearly to
                             all centres and marked so.
  permutation  the same searchlight with 1,000 permutations of the model's condition labels.
               Anchor: numpy, every centre's ranks once, all permutations as one matrix product.
               Agreement is checked on the observed map only: the two draw different
               permutations (brainfit's own RNG), so null maps and p-values cannot be compared
               value by value (their null-maximum summaries are printed for information).

  lasso, pcr, pls, banded_ridge  (issue 13) 400 samples x 60 latent-factor features (f64) x 600
               voxels, 2 outer x 3 inner KFold, R^2. The anchors run the same nested CV
               (nested_select): lasso = sklearn.linear_model.lasso_path per voxel (warm-started
               path, Gram precomputed per split, tol 1e-8: at its default 1e-4 scores
               move by up to 1e-3, too loose to compare); pcr = PCA once per split + LinearRegression
               on the first k scores; pls = PLSRegression(scale=False) per voxel at the largest
               k, smaller k read off its first components; banded_ridge = himalaya
               BandedRidgeCV, 2 bands of 30, 20 random candidates, its own draws (so agreement is
               the mean |difference| over voxels <= 0.005, not rounding).

  The RSA methods (real data: tests/data/kriegeskorte2008, the 4 subjects' session-averaged
  human IT RDMs and the 8 model RDMs; 92 conditions). --quick divides permutations, training
  images and voxels by 10 and samples 50 rsatoolbox centres instead of 200.
  rsa_methods  [rsa] brain_rdms (4) x models (8), compare = rho_a, tau_b, corr_cov, bures,
               cka_linear, a noise ceiling over the 4 subjects, 200 permutations.
               Anchor: rsatoolbox.rdm.compare ('rho-a', 'tau-b', 'corr_cov', 'bures'; linear
               CKA of -1/2 HDH in numpy) on the observed and 200 relabelled model RDMs (its own
               permutations), every subject and the subjects' mean, p-values, and
               rsatoolbox.inference.boot_noise_ceiling (bures and cka_linear, which rsatoolbox's
               pool_rdm cannot pool: the same loop with the plain mean, brainfit's rule).
               Agreement: observed values and ceilings (not p-values: different permutations).
  reweight     the same RDMs, [rsa.reweight.all] over the 8 models, 4 folds over conditions,
               Spearman, 100 permutations. Anchor: per subject and relabelling, per fold
               scipy.optimize.nnls of the centred brain RDM on the centred models (free
               intercept) on the training pairs, Spearman on the held-out pairs; the equal-weight
               sum on the same pairs; the full-data fit; the plain models. The folds are
               brainfit's: rsa_fit::condition_folds with brainfit's RNG ported to Python
               (BrainfitRng), so the observed cross-validated scores (all, all.unweighted) are
               compared; the relabellings are the anchor's own. brainfit does not write the
               weights, so they are not compared.
  remix        2,000 training images x 512 units of 10 Gaussian classes (seeded), 92 stimuli as
               a [features] space, [rsa.remix.cat] cs = [0.01, 0.1, 1, 10], 5 folds, compared
               (pearson, spearman) with a brain RDM of the stimuli's categories plus noise.
               Anchors: sklearn LogisticRegression(l1_ratio=0) with brainfit's rule written out
               (logistic::stratified_kfold: classes ascending, samples in index order, the t-th
               sample visited, counted over all classes, to fold t mod k; per fold the grid
               ascending with warm starts; mean over folds of the held-out mean log-loss from
               the decision values, no clipping; ties to the smaller C; refit from zero), then
               decision_function on the stimuli and their correlation RDM. Two solvers:
               sklearn_lbfgs at its defaults (tol 1e-4, max_iter 100: it stops ~1e-3 from the
               optimum, so its difference is reported, not checked) and sklearn_newton ('newton-cholesky',
               tol 1e-10: it forms and factors the (p+1)K x (p+1)K Hessian, 5,130 x 5,130 here,
               every Newton step, hence its time). Agreement: the compare.csv values of the
               remixed model and of the stimuli's own RDM against the brain RDM.
  crossnobis_searchlight  a box mask of 2,000 voxels, 30 conditions x 6 runs ([data]
               conditions + groups), rdm = "crossnobis", noise = "none", radius 2 (<= 2 voxels),
               Spearman against a model RDM (the conditions' latent squared distances).
               Anchor: rsatoolbox calc_rdm(Dataset(obs_descriptors conds/runs),
               method='crossnobis', descriptor='conds', cv_descriptor='runs') per sphere
               (brainfit's spheres) + compare(model, rdms, 'spearman') on 200 random centres;
               time EXTRAPOLATED linearly to all centres, agreement on those centres.
  cross_temporal  MEG-like [100 times, 92 conditions, 64 channels] against a second recording
               [80, 92, 32] ([time_resolved] cross_data), correlation RDMs, Spearman, 100
               permutations, and the time course against the animacy model RDM. Anchor: numpy,
               each recording's RDMs ranked once, rho = one [100 x pairs] x [pairs x 80]
               product, and per relabelling of the second recording's conditions one more
               (its relabelled rank features are a column gather); p, p_fwe, null maxima.
               Agreement: the rho matrix and the time course (not the nulls: own permutations).
  extract_pca  (issue 15) 1,000 reference and 200 stimulus images, random uint8 160 x 160, through
               the wide benchmark network of scripts/python/make_fixtures_onnx.py at 112 x 112
               input (16 x 112 x 112 = 200,704 units after relu_wide), default preprocessing
               (central 7/8 crop, bilinear resize to 112, / 255, ImageNet mean/std), 16 images
               per forward pass, PCA to 100 components by partial fits of 200 reference images,
               applied to the stimuli. Anchor: Pillow + onnxruntime + scikit-learn's
               IncrementalPCA, streamed the same way (preprocess, run and partial_fit each batch,
               float64, gen_batches(min_batch_size=k)), then transform(stimuli). --quick: input
               56, 100 + 20 images, 30 components, batches of 60.
  group_tfce   (issue 18) 20 subjects' encoding maps on a 100,000-voxel box mask (each subject: 12
               samples x 2 features, ridge at one alpha, 3-fold CV), then the one-sample
               sign-flip test across subjects with TFCE (E 0.5, H 2, 100 steps, 6-connectivity
               as nilearn's), two-sided, 1,000 flips. Anchor: nilearn.mass_univariate.permuted_ols
               (intercept-only design, tfce=True, n_jobs = threads) on brainfit's published
               subject maps; its time excludes reading them, brainfit's includes the 20 subjects'
               encoding. Agreement: the t map and the observed TFCE map (relative to its largest);
               the nulls are each side's own flips (their maxima printed). --quick: 10,000
               voxels, 100 flips.

Agreement tolerances (max |brainfit - anchor| over voxels/centres):
  ridge 1e-3: the data are f32; brainfit's Gram matrices and eigendecompositions are f64, the
        anchors' solves f32, so predictions differ at f32 rounding (~1e-6 relative) and a voxel
        whose inner-CV errors tie to within that rounding (or within himalaya's 1e-10*log(alpha)
        tie-break) may pick a neighbouring alpha; tests/golden_ridge.rs holds brainfit to
        himalaya at 1e-3 in f32 for the same reason.
  searchlight / permutation 1e-6: everything is f64 on both sides; the only difference left is
        the rank order of two dissimilarities equal to within f64 rounding, and one such swap
        moves a Spearman rho over 4,186 pairs by about 12 / 4186^2 = 7e-7.
  rsa_methods 1e-6: rsatoolbox's bures carries up to ~1e-7 of rounding noise (eigenvalues of
        near-singular second-moment matrices); the other methods agree to ~1e-14.
  reweight 1e-6: NNLS solutions agree to rounding, and a rank swap of two held-out predictions
        equal to within rounding would move a Spearman rho by ~1e-5 over the 253 held-out pairs
        of a fold (not seen: 2e-16).
  remix 1e-6 (newton-cholesky at tol 1e-10): both sides converge the same objective to ~1e-10
        relative gradient. lbfgs at its default tol 1e-4 is not checked (see remix above): its
        difference measures how far scikit-learn's defaults stop from the optimum.
  crossnobis_searchlight / cross_temporal 1e-9: f64 data, the same arithmetic up to summation
        order; the RDMs are continuous, so their ranks do not tie.
  group_tfce 1e-6: f64 on both sides; the t maps agree to rounding and the TFCE sums to ~1e-12
        relative (the kernel's fixtures: tests/fixtures/group/).
  extract_pca 1e-4 relative to the largest score, on the first 10 components: the activations
        are f32 (tract and onnxruntime differ by ~1e-6 relative), the PCA f64 on both sides; the
        last components' eigenvalues lie close together, so a tiny perturbation rotates them
        within their span (their largest difference is printed, not checked).

FLOP counts (nominal: the dense products the method needs; brainfit's GFLOP/s = count / its
wall time, compared with this machine's GEMM rate measured here with numpy at N threads):
  ridge   for every split (2 outer training parts, 2 x 5 inner) with m training rows, t test
          rows, p features, r = min(m, p): decomposition, once per split (workers cache it):
          primal (m >= p) 2mp^2 (X'X) + 9p^3 (eigh) + 2mp^2 + 2tp^2, dual (m < p) 2m^2p (XX') +
          9m^3 (eigh) + 2tmp + 2tm^2; voxel products 2rmv (W'Y) plus 2trv per alpha for an inner
          split, 2trv once for an outer refit. The voxel products dominate and are f32 GEMMs,
          so the reference rate is sgemm.
  searchlight  per centre with s sphere voxels and c conditions: Gram 2*c^2*s, comparison
          2*P*(1 + n_perm) with P = c(c-1)/2 pairs (one model). f64, so the reference is dgemm.
          Ranking (O(P log P) per centre) is not counted.
  cross_temporal  Gram matrices 2*n^2*(T1*c1 + T2*c2), then 2*(T1*T2 + T1)*P*(1 + n_perm) for the
          cross-temporal and model comparisons. The other RSA-method cases are not counted.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "brainfit"
KRIEG = ROOT / "tests" / "data" / "kriegeskorte2008"
ALPHAS = (-2, 5, 10)  # numpy.logspace(start, stop, num)
N_PERM = 1000
TOL = {"ridge": 1e-3, "searchlight": 1e-6, "permutation": 1e-6,
       "lasso": 1e-6, "pcr": 1e-6, "pls": 1e-6, "banded_ridge": 0.05,
       "rsa_methods": 1e-6, "reweight": 1e-6, "remix": 1e-6, "crossnobis_searchlight": 1e-9,
       "cross_temporal": 1e-9, "extract_pca": 1e-4, "group_tfce": 1e-6}
# scikit-learn's lasso at its default tol (1e-4) moves held-out scores by up to ~1e-3: too loose
# to check agreement, so the anchor solves to 1e-8 (brainfit: a duality gap of 1e-12)
LASSO_TOL = 1e-8
# the issue-13 models: a smaller problem (the anchors loop over voxels or components)
MODELS = dict(n=400, p=60, v=600, outer=2, inner=3)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS", "RAYON_NUM_THREADS")


CASES = ["ridge", "searchlight", "permutation", "lasso", "pcr", "pls", "banded_ridge",
         "rsa_methods", "reweight", "remix", "crossnobis_searchlight", "cross_temporal", "extract_pca", "group_tfce"]
# the issue-15 case: images -> ONNX layer -> incremental PCA; the first EXTRACT_CHECKED components
# (well separated eigenvalues) are held to TOL, relative to their largest score
EXTRACT_CHECKED = 10


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes divided by 10 (about 20 s on 2 cores)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for brainfit and every anchor")
    ap.add_argument("--workdir", default="/tmp/brainfit-bench")
    ap.add_argument("--only", nargs="+",
                    choices=CASES)
    ap.add_argument("--json", help="also write the results' JSON to this file")
    ap.add_argument("--anchor", help=argparse.SUPPRESS)  # internal: run one anchor in this process
    ap.add_argument("--case-dir", help=argparse.SUPPRESS)
    return ap.parse_args()


ARGS = parse_args()
# before numpy is imported, so that its BLAS starts with this many threads
for var in THREAD_VARS:
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

MODEL_GRIDS = dict(lasso=np.logspace(-3, 0, 6), components=[1, 2, 4, 8, 16, 32])
from scipy.stats import rankdata  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

threadpool_limits(ARGS.threads)


# ---------------------------------------------------------------------------------------------
# shared helpers


def box_mask(n_voxels: int):
    side = int(np.ceil(n_voxels ** (1 / 3))) + 2
    mask = np.zeros((side, side, side), np.uint8)
    mask.reshape(-1)[:n_voxels] = 1
    return mask


def spheres(mask: np.ndarray, radius: float):
    """brainfit's spheres: mask voxels within Euclidean distance <= radius, in mask (C) order."""
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


def kfold(n, k):
    """scikit-learn KFold(k) without shuffling: contiguous folds, the first n % k one row longer."""
    from sklearn.model_selection import KFold
    return list(KFold(k).split(np.arange(n)))


def r2(yt, pred):
    yt = yt.astype(np.float64)
    pred = pred.astype(np.float64)
    return 1 - ((yt - pred) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0)


# ---------------------------------------------------------------------------------------------
# anchors: each runs in its own process (`--anchor NAME --case-dir DIR`), reads the case's
# inputs, writes its result as DIR/anchor-NAME.npy and its figures as DIR/anchor-NAME.json


def himalaya_nested(case: Path, make_model):
    """Nested CV with a himalaya estimator (numpy backend) per outer fold: held-out R²."""
    from himalaya.backend import set_backend
    set_backend("numpy")
    x, y = np.load(case / "x.npy"), np.load(case / "y.npy")
    start = time.perf_counter()
    scores = []
    for train, test in kfold(len(x), 2):
        model = make_model(np.logspace(*ALPHAS))
        model.fit(x[train], y[train])
        scores.append(r2(y[test], np.asarray(model.predict(x[test]))))
    seconds = time.perf_counter() - start
    return np.mean(scores, axis=0), dict(seconds=seconds)


def anchor_ridge_himalaya(case: Path):
    from himalaya.ridge import RidgeCV
    from sklearn.model_selection import KFold
    return himalaya_nested(case, lambda alphas: RidgeCV(
        alphas=alphas, cv=KFold(5), fit_intercept=True, solver_params=dict(warn=False)))


def anchor_ridge_himalayakernel(case: Path):
    from himalaya.kernel_ridge import KernelRidgeCV
    from sklearn.model_selection import KFold
    return himalaya_nested(case, lambda alphas: KernelRidgeCV(
        alphas=alphas, kernel="linear", cv=KFold(5), fit_intercept=True, warn=False))


def anchor_ridge_sklearn(case: Path):
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.model_selection import KFold
    x, y = np.load(case / "x.npy"), np.load(case / "y.npy")
    alphas = np.logspace(*ALPHAS)
    note = None
    try:  # what issue 12 asked for first; scikit-learn refuses it (see the module docstring)
        RidgeCV(alphas=alphas, alpha_per_target=True, cv=KFold(5)).fit(x[:50, :5], y[:50, :3])
    except ValueError as e:
        note = f"RidgeCV(alpha_per_target=True, cv=KFold(5)): {e}; nested CV written with Ridge instead"
    start = time.perf_counter()
    scores = []
    for train, test in kfold(len(x), 2):
        xo, yo = x[train], y[train]
        mse = np.zeros((len(alphas), y.shape[1]))
        inner = kfold(len(train), 5)
        for itr, ite in inner:
            for ai, alpha in enumerate(alphas):
                pred = Ridge(alpha=alpha, fit_intercept=True).fit(xo[itr], yo[itr]).predict(xo[ite])
                err = yo[ite].astype(np.float64) - pred
                mse[ai] += (err * err).mean(0) / len(inner)
        # argmin with ties to the larger alpha: the last minimum along the ascending grid
        best = len(alphas) - 1 - np.argmin(mse[::-1], axis=0)
        pred = np.zeros((len(test), y.shape[1]), np.float64)
        for ai in np.unique(best):
            cols = np.flatnonzero(best == ai)
            pred[:, cols] = Ridge(alpha=alphas[ai], fit_intercept=True).fit(xo, yo[:, cols]).predict(x[test])
        scores.append(r2(y[test], pred))
    seconds = time.perf_counter() - start
    return np.mean(scores, axis=0), dict(seconds=seconds, note=note)


def numpy_searchlight_features(data, members, batch=256, model_f=None):
    """Batched numpy: per centre, the correlation RDM's ranks as unit-norm centred features.

    With model_f, returns only each centre's Spearman rho (features @ model_f), batch by batch,
    instead of keeping every centre's features."""
    n = data.shape[0]
    iu = np.triu_indices(n, 1)
    out = np.empty(len(members)) if model_f is not None else np.empty((len(members), len(iu[0])))
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
            feats = zscore_rows(rankdata(rdms, axis=1))
            out[chunk] = feats @ model_f if model_f is not None else feats
    return out


def load_searchlight(case: Path):
    data = np.load(case / "brain.npy")
    mask = np.load(case / "mask.npy")
    model = np.load(case / "model.npy")
    members = spheres(mask, 3.0)
    model_f = zscore_rows(rankdata(model[np.triu_indices(len(model), 1)])[None, :])[0]
    return data, members, model, model_f


def anchor_searchlight_numpy(case: Path):
    data, members, _, model_f = load_searchlight(case)
    start = time.perf_counter()
    rho = numpy_searchlight_features(data, members, model_f=model_f)
    return rho, dict(seconds=time.perf_counter() - start)


def anchor_searchlight_rsatoolbox(case: Path):
    import rsatoolbox
    from rsatoolbox.util.searchlight import get_searchlight_RDMs
    data, members, model, _ = load_searchlight(case)
    n_sample = int(json.loads((case / "params.json").read_text())["rsatoolbox_centres"])
    sample = np.sort(np.random.default_rng(2).choice(len(members), size=min(n_sample, len(members)), replace=False))
    model_rdm = rsatoolbox.rdm.RDMs(model[np.triu_indices(len(model), 1)][None, :], dissimilarity_measure="model")
    start = time.perf_counter()
    rdms = get_searchlight_RDMs(data.astype(np.float64), sample, [members[i] for i in sample],
                                np.arange(data.shape[0]), method="correlation", verbose=False)
    rho_sample = rsatoolbox.rdm.compare(model_rdm, rdms, method="spearman")[0]
    seconds = time.perf_counter() - start
    rho = np.full(len(members), np.nan)
    rho[sample] = rho_sample
    return rho, dict(seconds=seconds * len(members) / len(sample), measured_seconds=seconds,
                     computed_centres=len(sample), extrapolated=True)


def anchor_permutation_numpy(case: Path):
    data, members, model, model_f = load_searchlight(case)
    n = len(model)
    rng = np.random.default_rng(3)
    perms = np.stack([rng.permutation(n) for _ in range(N_PERM)])
    start = time.perf_counter()
    feats = numpy_searchlight_features(data, members)
    rho = feats @ model_f
    iu = np.triu_indices(n, 1)
    sq = np.zeros((n, n))
    sq[iu] = model_f
    sq = sq + sq.T
    permuted = np.stack([sq[p][:, p][iu] for p in perms], axis=1)  # [pairs, n_perm]
    null = feats @ permuted  # [centres, n_perm]
    count = (null >= rho[:, None]).sum(axis=1)
    p = (1 + count) / (1 + N_PERM)
    null_max = null.max(axis=0)
    seconds = time.perf_counter() - start
    return rho, dict(seconds=seconds, null_max_mean=float(null_max.mean()), null_max_sd=float(null_max.std()),
                     min_p=float(p.min()))


def models_data(case: Path):
    return np.load(case / "x.npy"), np.load(case / "y.npy")


def nested_select(x, y, fit_predict, grid, prefer_last):
    """The nested CV brainfit runs (MODELS' outer/inner KFold): per outer fold, per voxel the
    grid value of lowest mean inner-fold MSE (ties: the more regularised, later in `grid`),
    refit on the outer training part; returns the mean held-out R² and the seconds.
    fit_predict(x_train, y_train, x_test) -> predictions [len(grid), n_test, v]."""
    start = time.perf_counter()
    scores = []
    for train, test in kfold(len(x), MODELS["outer"]):
        xo, yo = x[train], y[train]
        mse = np.zeros((len(grid), y.shape[1]))
        inner = kfold(len(train), MODELS["inner"])
        for itr, ite in inner:
            pred = fit_predict(xo[itr], yo[itr], xo[ite])
            mse += ((yo[ite][None] - pred) ** 2).mean(1) / len(inner)
        best = len(grid) - 1 - np.argmin(mse[::-1], axis=0) if prefer_last else np.argmin(mse, axis=0)
        pred_all = fit_predict(xo, yo, x[test])
        pred = pred_all[best, :, np.arange(y.shape[1])].T
        scores.append(r2(y[test], pred))
    return np.mean(scores, axis=0), time.perf_counter() - start


def anchor_lasso_sklearn(case: Path):
    from sklearn.linear_model import lasso_path
    x, y = models_data(case)
    alphas = MODEL_GRIDS["lasso"]

    def fit_predict(xt, yt, xs):
        mx, my = xt.mean(0), yt.mean(0)
        xc, xsc = xt - mx, xs - mx
        gram = xc.T @ xc  # precomputed once per split, as Lasso(precompute=True) would
        out = np.zeros((len(alphas), len(xs), yt.shape[1]))
        # scikit-learn's path solver per voxel (warm starts along the descending path), its
        # default tol; a 2-D y would make it the multi-task (group) lasso, so one voxel at a time,
        # as Lasso.fit does for several targets
        for j in range(yt.shape[1]):
            yc = yt[:, j] - my[j]
            _, coefs, _ = lasso_path(xc, yc, alphas=alphas[::-1], precompute=gram,
                                     Xy=xc.T @ yc, max_iter=100_000, tol=LASSO_TOL)
            out[:, :, j] = (xsc @ coefs[:, ::-1]).T + my[j]
        return out
    score, seconds = nested_select(x, y, fit_predict, alphas, prefer_last=True)
    return score, dict(seconds=seconds, note=f"sklearn.linear_model.lasso_path per voxel, tol={LASSO_TOL:g} "
                       "(its default 1e-4 leaves scores 1e-3 apart; brainfit: duality gap 1e-12)")


def anchor_pcr_sklearn(case: Path):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LinearRegression
    x, y = models_data(case)
    ks = sorted(MODEL_GRIDS["components"], reverse=True)

    def fit_predict(xt, yt, xs):
        pca = PCA(n_components=ks[0], svd_solver="full").fit(xt)  # once; each k reads its first k scores
        zt, zs = pca.transform(xt), pca.transform(xs)
        return np.stack([LinearRegression().fit(zt[:, :k], yt).predict(zs[:, :k]) for k in ks])
    score, seconds = nested_select(x, y, fit_predict, ks, prefer_last=True)
    return score, dict(seconds=seconds)


def anchor_pls_sklearn(case: Path):
    from sklearn.cross_decomposition import PLSRegression
    x, y = models_data(case)
    ks = sorted(MODEL_GRIDS["components"], reverse=True)

    def fit_predict(xt, yt, xs):
        # PLS1: one PLSRegression per voxel at the largest k; a k-component fit is the first k
        # components of it (NIPALS deflates in sequence), so every k comes from one fit
        out = np.zeros((len(ks), len(xs), yt.shape[1]))
        mx = xt.mean(0)
        for j in range(yt.shape[1]):
            pls = PLSRegression(n_components=ks[0], scale=False).fit(xt, yt[:, j])
            for i, k in enumerate(ks):
                coef = pls.x_rotations_[:, :k] @ pls.y_loadings_[:, :k].T
                out[i, :, j] = ((xs - mx) @ coef).ravel() + yt[:, j].mean()
        return out
    score, seconds = nested_select(x, y, fit_predict, ks, prefer_last=True)
    return score, dict(seconds=seconds)


def anchor_banded_himalaya(case: Path):
    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV
    from sklearn.model_selection import KFold
    set_backend("numpy")
    x, y = models_data(case)
    half = x.shape[1] // 2
    start = time.perf_counter()
    scores = []
    for train, test in kfold(len(x), MODELS["outer"]):
        model = BandedRidgeCV(groups=np.repeat([0, 1], [half, x.shape[1] - half]), solver="random_search",
                              solver_params=dict(n_iter=20, alphas=np.logspace(-2, 5, 8), progress_bar=False),
                              cv=KFold(MODELS["inner"]), fit_intercept=True)
        model.fit(x[train], y[train])
        scores.append(r2(y[test], np.asarray(model.predict(x[test]))))
    return np.mean(scores, axis=0), dict(
        seconds=time.perf_counter() - start,
        note="himalaya draws its own 20 candidate band weights (brainfit: the same scheme, its own seed), "
             "so scores agree to the candidates' resolution, not to rounding")


# ---------------------------------------------------------------------------------------------
# the RSA-method cases: ROI comparison methods with noise ceilings, reweighted RSA, remixed RSA,
# crossnobis searchlight, cross-temporal RSA (anchors; the cases themselves are further down)


def condensed_of(square):
    """Upper triangle, row-major (brainfit's and scipy's condensed order), of [..., n, n]."""
    iu = np.triu_indices(square.shape[-1], 1)
    return square[..., iu[0], iu[1]]


def relabel_index(n, perm):
    """Condensed positions q' such that rdm[q'] is the relabelled RDM's pair q = (i, j), i < j:
    RDM'(i, j) = RDM(perm[i], perm[j]) (rows and columns permuted together)."""
    iu = np.triu_indices(n, 1)
    a, b = perm[iu[0]], perm[iu[1]]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo * n - lo * (lo + 1) // 2 + (hi - lo - 1)


def spearman_rows(a, b):
    """Spearman rho (average ranks) of every row of a [m, P] with every row of b [k, P]; NaN where
    a row is constant (brainfit's NaN policy; rsatoolbox would say 0)."""
    def feats(x):
        r = rankdata(np.atleast_2d(x), axis=1)
        r = r - r.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(r, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(norm > 0, r / norm, np.nan)
    return feats(a) @ feats(b).T


def pearson_rows(a, b):
    za, zb = zscore_rows(np.atleast_2d(a)), zscore_rows(np.atleast_2d(b))
    return za @ zb.T


def correlation_rdm(x):
    """1 - Pearson r between the rows of x [n, p], condensed (rsatoolbox's 'correlation')."""
    return condensed_of(1.0 - np.corrcoef(x))


def second_moments(v, n):
    """G = -1/2 H D H of condensed RDMs v [m, P] (D with a zero diagonal), [m, n, n]."""
    iu = np.triu_indices(n, 1)
    d = np.zeros((len(v), n, n))
    d[:, iu[0], iu[1]] = v
    d += np.transpose(d, (0, 2, 1))
    g = -0.5 * d
    return (g - g.mean(axis=2, keepdims=True) - g.mean(axis=1, keepdims=True)
            + g.mean(axis=(1, 2), keepdims=True))


def cka_linear(a, b, n):
    """Linear CKA (Kornblith et al. 2019) of the second moments -1/2 HDH: the cosine of the
    double-centred matrices, every row of a [m, P] against every row of b [k, P]."""
    ga = second_moments(np.atleast_2d(a), n).reshape(len(np.atleast_2d(a)), -1)
    gb = second_moments(np.atleast_2d(b), n).reshape(len(np.atleast_2d(b)), -1)
    ga /= np.linalg.norm(ga, axis=1, keepdims=True)
    gb /= np.linalg.norm(gb, axis=1, keepdims=True)
    return ga @ gb.T


# rsatoolbox's names of brainfit's methods; cka_linear is not in rsatoolbox (numpy, above)
RSATOOLBOX_METHOD = {"rho_a": "rho-a", "tau_b": "tau-b", "corr_cov": "corr_cov", "bures": "bures"}


def anchor_rsa_methods_rsatoolbox(case: Path):
    """Observed values, noise ceilings and the permutation nulls (the anchor's own relabellings)
    of 4 subjects x 8 models x 5 methods; returns the observed values (subjects, then the
    group's mean) and the ceilings in the order rsa_methods_vector() reads brainfit's CSV."""
    import warnings
    import rsatoolbox
    from rsatoolbox.inference import boot_noise_ceiling
    prm = json.loads((case / "params.json").read_text())
    subjects, models = np.load(case / "subjects.npy"), np.load(case / "models.npy")
    n, n_perm = prm["conditions"], prm["permutations"]
    rng = np.random.default_rng(3)
    perms = [rng.permutation(n) for _ in range(n_perm)]

    def compare(method, a, b):
        if method == "cka_linear":
            return cka_linear(a, b, n)
        return rsatoolbox.rdm.compare(np.atleast_2d(a), np.atleast_2d(b), method=RSATOOLBOX_METHOD[method])

    start = time.perf_counter()
    idx = np.stack([relabel_index(n, p) for p in perms])  # [n_perm, pairs]
    values, ceilings, min_p, method_seconds = [], [], {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rsatoolbox: "Noise ceiling for tau based on averaged ranks!"
        for method in prm["methods"]:
            method_start = time.perf_counter()
            obs = compare(method, models, subjects)  # [models, subjects]
            null = np.stack([compare(method, models[m][idx], subjects) for m in range(len(models))], axis=1)
            obs_all = np.concatenate([obs.T, obs.mean(axis=1)[None]])  # [subjects + group, models]
            null_all = np.concatenate([np.transpose(null, (0, 2, 1)), null.mean(axis=2)[:, None]], axis=1)
            p = (1 + (null_all >= obs_all[None]).sum(axis=0)) / (1 + n_perm)
            min_p[method] = float(p.min())
            values.append(obs_all.ravel())
            if method in ("bures", "cka_linear"):
                # rsatoolbox's pool_rdm has no rule for these: boot_noise_ceiling's loop with the
                # plain mean as the pooled RDM (brainfit's documented rule)
                upper = np.mean([compare(method, subjects.mean(axis=0), subjects[s])[0, 0]
                                 for s in range(len(subjects))])
                lower = np.mean([compare(method, np.delete(subjects, s, axis=0).mean(axis=0), subjects[s])[0, 0]
                                 for s in range(len(subjects))])
            else:
                lower, upper = boot_noise_ceiling(rsatoolbox.rdm.RDMs(subjects), method=RSATOOLBOX_METHOD[method])
            ceilings.append([lower, upper])
            method_seconds[method] = time.perf_counter() - method_start
    seconds = time.perf_counter() - start
    return np.concatenate(values + [np.ravel(ceilings)]), dict(
        seconds=seconds, min_p=min_p, method_seconds=method_seconds,
        note="rsatoolbox.rdm.compare ('rho-a', 'tau-b', 'corr_cov', 'bures'), linear CKA in numpy; "
             "boot_noise_ceiling (bures, cka_linear: its loop with plain-mean pooling); the anchor's own "
             f"{n_perm} relabellings, so p-values are not compared")


# brainfit's RNG (crates/brainfit-kernels/src/rng.rs: xoshiro256** seeded by SplitMix64, Lemire's
# bounded integers, Fisher-Yates), ported so that the reweighting anchor uses brainfit's folds
# over conditions (rsa_fit::condition_folds) and its held-out scores can be compared
M64 = (1 << 64) - 1


def _splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class BrainfitRng:
    def __init__(self, seed):
        self.s, sm = [], seed & M64
        for _ in range(4):
            sm, v = _splitmix64(sm)
            self.s.append(v)

    def next_u64(self):
        s = self.s
        result = (_rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def below(self, n):
        m = self.next_u64() * n
        if (m & M64) < n:
            threshold = ((1 << 64) - n) % n
            while (m & M64) < threshold:
                m = self.next_u64() * n
        return m >> 64

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def brainfit_condition_folds(n, k, seed):
    """rsa_fit::condition_folds: shuffle 0..n with Rng::new(seed), position t -> fold t*k // n."""
    order = list(range(n))
    BrainfitRng(seed).shuffle(order)
    folds = np.zeros(n, np.int64)
    for position, condition in enumerate(order):
        folds[condition] = position * k // n
    return folds


def nan_mean(v):
    v = np.asarray(v, float)
    return float(np.mean(v[~np.isnan(v)])) if np.any(~np.isnan(v)) else float("nan")


def anchor_reweight_scipy(case: Path):
    """Reweighted RSA: per subject and relabelling, NNLS (scipy.optimize.nnls) of the centred
    brain RDM on the centred model RDMs (free intercept) on each fold's training pairs,
    Spearman on its held-out pairs; the equal-weight sum on the same pairs; the full-data fit;
    the plain models' Spearman. Folds: brainfit's (ported RNG); relabellings: the anchor's own."""
    from scipy.optimize import nnls
    prm = json.loads((case / "params.json").read_text())
    subjects, models = np.load(case / "subjects.npy"), np.load(case / "models.npy")
    n, n_perm = prm["conditions"], prm["permutations"]
    folds = brainfit_condition_folds(n, prm["folds"], prm["seed"])
    iu = np.triu_indices(n, 1)
    fi, fj = folds[iu[0]], folds[iu[1]]
    splits = [(np.flatnonzero((fi != f) & (fj != f)), np.flatnonzero((fi == f) & (fj == f)))
              for f in range(prm["folds"])]
    rng = np.random.default_rng(3)
    perms = [np.arange(n)] + [rng.permutation(n) for _ in range(n_perm)]

    def fit(x, y):  # x [pairs, models]
        xm, ym = x.mean(axis=0), y.mean()
        w, _ = nnls(x - xm, y - ym)
        return w, ym - xm @ w

    start = time.perf_counter()
    out = np.zeros((len(perms), len(subjects), len(models) + 2))
    for k, perm in enumerate(perms):
        x = models[:, relabel_index(n, perm)]  # [models, pairs]
        out[k, :, :len(models)] = spearman_rows(subjects, x)
        for s, y in enumerate(subjects):
            fitted, plain = [], []
            for train, test in splits:
                w, b = fit(x[:, train].T, y[train])
                fitted.append(spearman_rows(x[:, test].T @ w + b, y[test])[0, 0])
                plain.append(spearman_rows(x[:, test].sum(axis=0), y[test])[0, 0])
            fit(x.T, y)  # the full-data weights brainfit computes too (not written by either)
            out[k, s, -2:] = nan_mean(fitted), nan_mean(plain)
    p = (1 + (out[1:] >= out[0][None]).sum(axis=0)) / (1 + n_perm)
    seconds = time.perf_counter() - start
    return out[0].ravel(), dict(
        seconds=seconds, min_p=float(p.min()), folds=folds.tolist(),
        note="brainfit's folds over conditions (its RNG ported to Python), the anchor's own relabellings: "
             "observed CV scores compared, p-values not; weights not compared (brainfit does not write them)")


def stratified_fold_of(labels, k):
    """logistic::stratified_kfold: classes ascending, each class's samples in index order, the
    t-th sample visited (t counted over all classes) goes to fold t mod k."""
    fold_of = np.zeros(len(labels), np.int64)
    t = 0
    for c in np.unique(labels):
        for i in np.flatnonzero(labels == c):
            fold_of[i] = t % k
            t += 1
    return fold_of


def remix_anchor(case: Path, solver: str, tol: float):
    """sklearn LogisticRegression with C chosen by brainfit's rule (stratified folds, mean over
    folds of the held-out mean log-loss from the decision values, warm starts along the
    ascending grid, ties to the smaller C), refit from zero, decision values for the stimuli, their
    correlation RDM and the stimuli's own; both compared with the brain RDM (pearson, spearman)."""
    import warnings
    from scipy.special import logsumexp
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    prm = json.loads((case / "params.json").read_text())
    train, labels = np.load(case / "train.npy"), np.load(case / "labels.npy")
    stim, brain = np.load(case / "stim.npy"), np.load(case / "brain_rdm.npy")
    cs, k = prm["cs"], prm["folds"]
    fold_of = stratified_fold_of(labels, k)

    def model(c, warm):
        return LogisticRegression(C=c, l1_ratio=0.0, solver=solver, tol=tol, warm_start=warm)

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        loss = np.zeros(len(cs))
        for f in range(k):
            tr, te = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
            clf = model(cs[0], True)
            for ci, c in enumerate(cs):
                clf.set_params(C=c)
                clf.fit(train[tr], labels[tr])
                z = clf.decision_function(train[te])
                y = np.searchsorted(clf.classes_, labels[te])
                loss[ci] += np.mean(logsumexp(z, axis=1) - z[np.arange(len(te)), y]) / k
        best = int(np.argmin(loss))  # first minimum: ties to the smaller C
        final = model(cs[best], False).fit(train, labels)
        rdms = np.stack([correlation_rdm(stim), correlation_rdm(final.decision_function(stim))])
        values = np.concatenate([pearson_rows(rdms, brain).ravel(), spearman_rows(rdms, brain).ravel()])
    seconds = time.perf_counter() - start
    warned = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return values, dict(seconds=seconds, chosen_c=cs[best], cv_loss=loss.tolist(),
                        note=f"LogisticRegression(solver={solver!r}, tol={tol:g}, max_iter=100 (default)); "
                             f"C = {cs[best]:g} chosen; {warned} ConvergenceWarning(s)")


def anchor_remix_lbfgs(case: Path):
    return remix_anchor(case, "lbfgs", 1e-4)


def anchor_remix_newton(case: Path):
    return remix_anchor(case, "newton-cholesky", 1e-10)


def anchor_crossnobis_rsatoolbox(case: Path):
    """rsatoolbox calc_rdm(method='crossnobis', descriptor='conds', cv_descriptor='runs') per
    sphere (brainfit's spheres) + compare(model, rdms, 'spearman'), on a random subsample of
    centres; the time is extrapolated linearly to all centres."""
    import rsatoolbox
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm
    prm = json.loads((case / "params.json").read_text())
    data = np.load(case / "brain.npy").astype(np.float64)
    conds, runs = np.load(case / "conds.npy"), np.load(case / "runs.npy")
    members = spheres(np.load(case / "mask.npy"), prm["radius"])
    model = np.load(case / "model.npy")
    sample = np.sort(np.random.default_rng(2).choice(len(members), size=min(prm["rsatoolbox_centres"], len(members)),
                                                     replace=False))
    model_rdm = rsatoolbox.rdm.RDMs(model[None, :], dissimilarity_measure="model")
    start = time.perf_counter()
    # (rsatoolbox.rdm.concat refuses these RDMs: each carries its sphere's noise matrix as a descriptor)
    rdms = np.stack([calc_rdm(Dataset(data[:, members[c]], obs_descriptors={"conds": conds, "runs": runs}),
                              method="crossnobis", descriptor="conds", cv_descriptor="runs").get_vectors()[0]
                     for c in sample])
    rho_sample = rsatoolbox.rdm.compare(model_rdm, rsatoolbox.rdm.RDMs(rdms), method="spearman")[0]
    seconds = time.perf_counter() - start
    rho = np.full(len(members), np.nan)
    rho[sample] = rho_sample
    return rho, dict(seconds=seconds * len(members) / len(sample), measured_seconds=seconds,
                     computed_centres=len(sample), extrapolated=True)


def time_rdm_features(x):
    """[T, n, c] -> [T, pairs]: every time point's correlation RDM, ranked, centred, unit norm."""
    x = x.astype(np.float64)
    x = x - x.mean(axis=2, keepdims=True)
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    gram = x @ np.transpose(x, (0, 2, 1))
    return zscore_rows(rankdata(1.0 - condensed_of(gram), axis=1))


def anchor_cross_temporal_numpy(case: Path):
    """Cross-temporal Spearman RSA between two recordings: each recording's RDMs ranked once
    ([T, pairs] features), rho = F1 F2', and per relabelling of the second recording's conditions
    one product F1 F2[:, relabelled]'; plus the time course of the first against the model,
    relabelled by the same permutations."""
    prm = json.loads((case / "params.json").read_text())
    meg, eeg = np.load(case / "meg.npy"), np.load(case / "eeg.npy")
    model = np.load(case / "model.npy")
    n, n_perm = meg.shape[1], prm["permutations"]
    rng = np.random.default_rng(3)
    perms = [rng.permutation(n) for _ in range(n_perm)]
    start = time.perf_counter()
    f1, f2 = time_rdm_features(meg), time_rdm_features(eeg)
    mf = zscore_rows(rankdata(model)[None, :])[0]
    rho = f1 @ f2.T
    course = f1 @ mf
    null_max, course_max = np.empty(n_perm), np.empty(n_perm)
    count, course_count = np.zeros(rho.shape), np.zeros(course.shape)
    for k, perm in enumerate(perms):
        idx = relabel_index(n, perm)
        null = f1 @ f2[:, idx].T
        count += null >= rho
        null_max[k] = null.max()
        c = f1 @ mf[idx]
        course_count += c >= course
        course_max[k] = c.max()
    p_fwe = (1 + (null_max[None, None, :] >= rho[..., None]).sum(axis=2)) / (1 + n_perm)
    p = (1 + count) / (1 + n_perm)
    seconds = time.perf_counter() - start
    return np.concatenate([rho.ravel(), course]), dict(
        seconds=seconds, min_p=float(p.min()), min_p_fwe=float(p_fwe.min()),
        null_max_mean=float(null_max.mean()), null_max_sd=float(null_max.std()))


def extract_batches(case: Path):
    """The case's reference and stimulus images, the model path and the PCA settings."""
    params = json.loads((case / "params.json").read_text())
    return params, np.load(case / "reference.npy"), np.load(case / "stimuli.npy")


def anchor_extract_pca_sklearn(case: Path):
    """Pillow preprocessing + onnxruntime + scikit-learn's IncrementalPCA, streamed as brainfit
    does: each batch of reference images is preprocessed, run and partially fitted (float64)
    before the next, in gen_batches(min_batch_size=k) order; then the stimuli are transformed."""
    import onnxruntime as ort
    from sklearn.decomposition import IncrementalPCA
    from sklearn.utils import gen_batches
    sys.path.insert(0, str(ROOT / "scripts" / "python"))
    from make_fixtures_onnx import preprocess
    params, reference, stimuli = extract_batches(case)
    k, batch, size, run_batch = params["components"], params["batch"], params["size"], params["run_batch"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = ARGS.threads
    opts.inter_op_num_threads = 1
    start = time.perf_counter()
    # the layer read out is an inner tensor: expose it as a graph output, as brainfit reads it
    import onnx
    model = onnx.load(str(case / "wide.onnx"))
    model.graph.output.append(onnx.helper.make_tensor_value_info(params["tensor"], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def activations(images):
        rows = []
        for i in range(0, len(images), run_batch):
            x = np.stack([preprocess(im, size) for im in images[i:i + run_batch]])
            out = session.run([params["tensor"]], {"image": x})[0]
            rows.append(out.reshape(len(x), -1))
        return np.concatenate(rows)

    pca = IncrementalPCA(n_components=k)
    for part in gen_batches(len(reference), batch, min_batch_size=k):
        pca.partial_fit(activations(reference[part]).astype(np.float64))
    scores = pca.transform(activations(stimuli).astype(np.float64))
    return scores, dict(seconds=time.perf_counter() - start)


def group_inputs(case: Path):
    """The subjects' published score maps [subjects, voxels] (mask order) and the mask."""
    import nibabel as nib
    params = json.loads((case / "params.json").read_text())
    maps = np.stack([np.load(case / f"out/s{s}/encoding/a/score.npy") for s in range(params["subjects"])])
    return params, maps, nib.load(case / "mask.nii.gz")


def anchor_group_nilearn(case: Path):
    """nilearn's permuted_ols with an intercept-only design (the one-sample sign-flip test), TFCE
    through a masker of the same mask; returns [t, tfce / max |tfce|]."""
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols
    params, maps, mask = group_inputs(case)
    masker = NiftiMasker(mask).fit()
    start = time.perf_counter()
    out = permuted_ols(np.ones((len(maps), 1)), maps, model_intercept=False, n_perm=params["flips"],
                       two_sided_test=True, random_state=0, n_jobs=ARGS.threads, verbose=0, tfce=True,
                       masker=masker, output_type="dict")
    seconds = time.perf_counter() - start
    t, tfce = out["t"][0], out["tfce"][0]
    return np.concatenate([t, tfce / np.abs(tfce).max()]), dict(
        seconds=seconds, null_max_t_mean=float(out["h0_max_t"][0].mean()),
        null_max_tfce_mean=float(out["h0_max_tfce"][0].mean()))


ANCHORS = {
    "group_tfce-nilearn": anchor_group_nilearn,
    "lasso-sklearn": anchor_lasso_sklearn,
    "pcr-sklearn": anchor_pcr_sklearn,
    "pls-sklearn": anchor_pls_sklearn,
    "banded_ridge-himalaya": anchor_banded_himalaya,
    "ridge-himalaya": anchor_ridge_himalaya,
    "ridge-himalayakernel": anchor_ridge_himalayakernel,
    "ridge-sklearn": anchor_ridge_sklearn,
    "searchlight-numpy": anchor_searchlight_numpy,
    "searchlight-rsatoolbox": anchor_searchlight_rsatoolbox,
    "permutation-numpy": anchor_permutation_numpy,
    "rsa_methods-rsatoolbox": anchor_rsa_methods_rsatoolbox,
    "reweight-scipy": anchor_reweight_scipy,
    "remix-sklearn_lbfgs": anchor_remix_lbfgs,
    "remix-sklearn_newton": anchor_remix_newton,
    "crossnobis_searchlight-rsatoolbox": anchor_crossnobis_rsatoolbox,
    "cross_temporal-numpy": anchor_cross_temporal_numpy,
    "extract_pca-sklearn": anchor_extract_pca_sklearn,
}


def anchor_main():
    case = Path(ARGS.case_dir)
    result, info = ANCHORS[ARGS.anchor](case)
    np.save(case / f"anchor-{ARGS.anchor}.npy", result)
    info["threadpools"] = [f"{i['internal_api']} {i['version']}: {i['num_threads']} threads" for i in threadpool_info()]
    (case / f"anchor-{ARGS.anchor}.json").write_text(json.dumps(info))


# ---------------------------------------------------------------------------------------------
# the driver


TIME = "/usr/bin/time"  # GNU time: reports its child's own peak RSS (%M)


def run_child(cmd, env=None):
    """Runs cmd in a fresh process; returns (wall seconds, that process's peak RSS in MB).

    The RSS comes from GNU time, not from os.wait4 here: on Linux a child's ru_maxrss starts
    at its parent's RSS at fork (the high-water mark survives exec), so wait4 would report at
    least this driver's own RSS. /usr/bin/time is small when it forks the command."""
    rss_file = Path(ARGS.workdir) / "rss.txt"
    wrapped = [TIME, "-f", "%M", "-o", str(rss_file), *map(str, cmd)] if os.access(TIME, os.X_OK) else cmd
    start = time.perf_counter()
    proc = subprocess.run(wrapped, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout.decode(errors="replace"))
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}")
    if wrapped is cmd:  # no GNU time: an upper bound, see above
        print(f"warning: {TIME} missing; peak RSS includes this driver's RSS", file=sys.stderr)
        return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return seconds, int(rss_file.read_text().split()[-1]) / 1024  # KiB


def run_brainfit(case: Path):
    seconds, rss = run_child([str(BIN), "run", str(case / "job.toml"), "--workers", str(ARGS.threads)])
    return dict(brainfit_s=seconds, brainfit_rss_mb=rss)


def run_anchor(case: Path, name: str):
    _, rss = run_child([sys.executable, __file__, "--anchor", name, "--case-dir", str(case),
                        "--threads", str(ARGS.threads)])
    info = json.loads((case / f"anchor-{name}.json").read_text())
    return np.load(case / f"anchor-{name}.npy"), info, rss


def gemm_rates():
    """Best of 3 of a 2048x2048 GEMM, f32 and f64, in GFLOP/s, at the pinned thread count."""
    n = 2048
    rates = {}
    for dtype in (np.float32, np.float64):
        a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
        b = a.T.copy()
        a @ b  # warm-up
        best = min(timed(lambda: a @ b) for _ in range(3))
        rates[np.dtype(dtype).name] = 2 * n ** 3 / best / 1e9
    return rates


def timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def ridge_flops(n, p, v, n_alpha, k_outer=2, k_inner=5):
    def split(m, t, alphas_per_voxel):
        r = min(m, p)
        if m >= p:  # primal: X'X, eigh, W = Xc V, A = X_test V
            decomposition = 2 * m * p * p + 9 * p ** 3 + 2 * m * p * p + 2 * t * p * p
        else:  # dual: Xc Xc', eigh, X_test Xc', A = (X_test Xc') U
            decomposition = 2 * m * m * p + 9 * m ** 3 + 2 * t * m * p + 2 * t * m * m
        return decomposition + 2 * r * m * v + 2 * t * r * v * alphas_per_voxel
    total = 0
    for train, test in kfold(n, k_outer):
        total += split(len(train), len(test), 1)  # refit: each voxel predicted with its own alpha
        for itr, ite in kfold(len(train), k_inner):
            total += split(len(itr), len(ite), n_alpha)
    return total


def ceil_div(a, b):
    return -(-a // b)


def searchlight_flops(members, c, n_perm):
    pairs = c * (c - 1) // 2
    return sum(2 * c * c * len(m) for m in members) + len(members) * 2 * pairs * (1 + n_perm)


def write_job(case: Path, body: str):
    (case / "job.toml").write_text(f'name = "bench-{case.name}"\noutput = "out"\n' + body)


def case_ridge(work: Path, v: int):
    n, p = 1200, 800
    case = work / "ridge"
    case.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, p)).astype(np.float32)
    # a weak, voxel-specific signal, so that alphas across the grid get chosen
    y = (x @ rng.standard_normal((p, v)).astype(np.float32) * rng.uniform(0, 0.1, v).astype(np.float32)
         + rng.standard_normal((n, v)).astype(np.float32))
    np.save(case / "x.npy", x)
    np.save(case / "y.npy", y.astype(np.float32))
    per_task = min(4096, ceil_div(ceil_div(v, ARGS.threads), 512) * 512)  # >= threads tasks, multiple of 512
    tasks = ceil_div(v, per_task)
    write_job(case, '[data]\nbrain = "y.npy"\n[features]\nx = "x.npy"\n'
              f'[encoding]\nalphas = {{ logspace = [{ALPHAS[0]}, {ALPHAS[1]}, {ALPHAS[2]}] }}\n'
              'cv = { kind = "kfold", k = 2 }\ninner_cv = { kind = "kfold", k = 5 }\nscore = "r2"\n'
              f'[execution]\nvoxels_per_task = {per_task}\n')
    bf = run_brainfit(case)
    score = np.load(case / "out/encoding/x/score.npy")
    flops = ridge_flops(n, p, v, ALPHAS[2])
    rows = []
    for name in ("ridge-himalaya", "ridge-himalayakernel", "ridge-sklearn"):
        result, info, rss = run_anchor(case, name)
        rows.append(row("ridge", name.split("-")[1], bf, info, rss, score, result, flops, "float32",
                        dict(samples=n, features=p, voxels=v, alphas=ALPHAS[2], outer_folds=2, inner_folds=5,
                             tasks=tasks)))
    return rows


def case_model(work: Path, model: str, v: int):
    """One issue-13 model on latent-factor data (f64): brainfit's job against its anchor."""
    n, p = MODELS["n"], MODELS["p"]
    case = work / model
    case.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(13)
    latent = rng.standard_normal((n, 6)) * np.geomspace(3, 1, 6)
    x = latent @ rng.standard_normal((6, p)) + rng.standard_normal((n, p))
    y = x @ (rng.standard_normal((p, v)) * (rng.random((p, v)) < 0.2)) * rng.uniform(0, 0.3, v) \
        + rng.standard_normal((n, v))
    np.save(case / "x.npy", x)
    np.save(case / "y.npy", y)
    half = p // 2
    if model == "banded_ridge":
        np.save(case / "x1.npy", x[:, :half])
        np.save(case / "x2.npy", x[:, half:])
        features = '[features]\nx1 = "x1.npy"\nx2 = "x2.npy"\n'
        grid = 'model = "banded_ridge"\nalphas = { logspace = [-2, 5, 8] }\nrandom_search = { n_iter = 20 }\n'
    else:
        features = '[features]\nx = "x.npy"\n'
        grid = {"lasso": f'model = "lasso"\nalphas = {[float(a) for a in MODEL_GRIDS["lasso"]]}\n',
                "pcr": f'model = "pcr"\ncomponents = {MODEL_GRIDS["components"]}\n',
                "pls": f'model = "pls"\ncomponents = {MODEL_GRIDS["components"]}\n'}[model]
    per_task = min(4096, ceil_div(ceil_div(v, ARGS.threads), 512) * 512)
    write_job(case, '[data]\nbrain = "y.npy"\n' + features + '[encoding]\n' + grid
              + f'cv = {{ kind = "kfold", k = {MODELS["outer"]} }}\ninner_cv = {{ kind = "kfold", k = {MODELS["inner"]} }}\n'
              + f'[execution]\nvoxels_per_task = {per_task}\n')
    bf = run_brainfit(case)
    fit = "x1+x2" if model == "banded_ridge" else "x"
    score = np.load(case / f"out/encoding/{fit}/score.npy")
    anchor = "himalaya" if model == "banded_ridge" else "sklearn"
    result, info, rss = run_anchor(case, f"{model}-{anchor}")
    r = row(model, anchor, bf, info, rss, score, result, 0.0, "float64",
            dict(samples=n, features=p, voxels=v, outer_folds=MODELS["outer"], inner_folds=MODELS["inner"]))
    if model == "banded_ridge":  # different candidate draws: compare the typical voxel
        r["mean_abs_diff"] = float(np.mean(np.abs(score - result)))
        r["agree"] = r["mean_abs_diff"] <= TOL[model] / 10
    return [r]


def case_searchlight(work: Path, n_centres: int, n_perm: int, rsatoolbox_centres: int):
    name = "permutation" if n_perm else "searchlight"
    case = work / name
    case.mkdir(parents=True, exist_ok=True)
    import nibabel as nib
    models = np.load(KRIEG / "model_rdms.npy")
    rng = np.random.default_rng(0)
    mask = box_mask(n_centres)
    data = rng.standard_normal((92, n_centres)).astype(np.float32)
    np.save(case / "brain.npy", data)
    np.save(case / "model.npy", models[0])  # animacy
    np.save(case / "mask.npy", mask)
    nib.save(nib.Nifti1Image(mask, np.eye(4)), case / "mask.nii.gz")
    (case / "params.json").write_text(json.dumps(dict(rsatoolbox_centres=rsatoolbox_centres)))
    per_task = min(2048, ceil_div(n_centres, ARGS.threads))
    perm = f"[permutation]\nn = {n_perm}\nseed = 0\n" if n_perm else ""
    write_job(case, '[data]\nbrain = "brain.npy"\nmask = "mask.nii.gz"\n'
              '[rsa]\nmodels = { animacy = "model.npy" }\n'
              '[searchlight]\nradius = 3.0\nmin_voxels = 1\nrdm = "correlation"\ncompare = "spearman"\n'
              + perm + f"[execution]\ncentres_per_task = {per_task}\n")
    bf = run_brainfit(case)
    out = case / "out/searchlight/animacy"
    centres = np.load(out / "centres.npy")
    rho_bf = np.full(n_centres, np.nan)
    rho_bf[centres] = np.load(out / "rho.npy")
    members = spheres(mask, 3.0)
    flops = searchlight_flops(members, 92, n_perm)
    params = dict(centres=len(centres), conditions=92, radius=3.0,
                  mean_sphere=round(float(np.mean([len(m) for m in members])), 1), tasks=ceil_div(n_centres, per_task))
    rows = []
    if n_perm:
        null_max = np.load(out / "null_max.npy")
        p = np.load(out / "p.npy")
        params.update(permutations=n_perm, brainfit_null_max_mean=float(null_max.mean()),
                      brainfit_null_max_sd=float(null_max.std()), brainfit_min_p=float(np.nanmin(p)),
                      brainfit_null_max_n=len(null_max))
        anchors = ["permutation-numpy"]
    else:
        anchors = ["searchlight-numpy", "searchlight-rsatoolbox"]
    for anchor in anchors:
        result, info, rss = run_anchor(case, anchor)
        rows.append(row(name, anchor.split("-")[1], bf, info, rss, rho_bf, result, flops, "float64", params))
    return rows


# ---------------------------------------------------------------------------------------------
# the RSA-method cases (sizes scaled by --quick as noted in the module docstring)


def compare_csv(case: Path):
    """brainfit's rsa/compare.csv as {(brain, model, method): row}."""
    import csv
    found = [p for p in (case / "out").rglob("rsa/compare.csv") if ".brainfit" not in p.parts]
    if len(found) != 1:
        raise SystemExit(f"expected one rsa/compare.csv under {case / 'out'}, found {found}")
    with open(found[0], newline="") as f:
        return {(r["brain"], r["model"], r["method"]): r for r in csv.DictReader(f)}


def krieg_rdm_inputs(case: Path):
    """The 4 subjects' session-averaged human IT RDMs and the 8 model RDMs of
    tests/data/kriegeskorte2008 as square .npy files, plus condensed stacks for the anchors;
    returns (subject names, model names, the [rsa] brain_rdms and models lines)."""
    human = np.load(KRIEG / "human_it_rdms.npy").mean(axis=1)  # [4, 92, 92]
    models = np.load(KRIEG / "model_rdms.npy")
    names = (KRIEG / "model_names.txt").read_text().split()
    subjects = [f"s{i + 1}" for i in range(len(human))]
    for s, rdm in zip(subjects, human):
        np.save(case / f"{s}.npy", rdm)
    for m, rdm in zip(names, models):
        np.save(case / f"model_{m}.npy", rdm)
    np.save(case / "subjects.npy", condensed_of(human))
    np.save(case / "models.npy", condensed_of(models))
    lines = ("brain_rdms = { " + ", ".join(f'{s} = "{s}.npy"' for s in subjects) + " }\n"
             + "models = { " + ", ".join(f'{m} = "model_{m}.npy"' for m in names) + " }\n")
    return subjects, names, lines


def case_rsa_methods(work: Path, n_perm: int):
    case = work / "rsa_methods"
    case.mkdir(parents=True, exist_ok=True)
    methods = ["rho_a", "tau_b", "corr_cov", "bures", "cka_linear"]
    subjects, names, lines = krieg_rdm_inputs(case)
    (case / "params.json").write_text(json.dumps(dict(conditions=92, permutations=n_perm, methods=methods)))
    write_job(case, "[rsa]\n" + lines + f"compare = {json.dumps(methods)}\n"
              + "ceiling = { human = " + json.dumps(subjects) + " }\n"
              + f"[permutation]\nn = {n_perm}\nseed = 0\n"
              + f"[execution]\npermutations_per_task = {max(1, ceil_div(n_perm, ARGS.threads))}\n")
    bf = run_brainfit(case)
    rows = compare_csv(case)
    ours = [float(rows[(b, m, method)]["value"]) for method in methods for b in subjects + ["human"] for m in names]
    for method in methods:
        group = rows[("human", names[0], method)]
        ours += [float(group["noise_ceiling_lower"]), float(group["noise_ceiling_upper"])]
    min_p = {method: min(float(rows[(b, m, method)]["p"]) for b in subjects + ["human"] for m in names)
             for method in methods}
    result, info, rss = run_anchor(case, "rsa_methods-rsatoolbox")
    n_values = len(methods) * (len(subjects) + 1) * len(names)
    diff = np.abs(np.array(ours) - result)
    per_method = {method: float(max(diff[:n_values].reshape(len(methods), -1)[i].max(),
                                    diff[n_values + 2 * i:n_values + 2 * i + 2].max()))
                  for i, method in enumerate(methods)}
    return [row("rsa_methods", "rsatoolbox", bf, info, rss, np.array(ours), result, 0.0, "float64",
                dict(subjects=len(subjects), models=len(names), methods=methods, conditions=92,
                     permutations=n_perm, brainfit_min_p=min_p, max_abs_diff_per_method=per_method))]


def case_reweight(work: Path, n_perm: int):
    case = work / "reweight"
    case.mkdir(parents=True, exist_ok=True)
    subjects, names, lines = krieg_rdm_inputs(case)
    folds, seed = 4, 0
    (case / "params.json").write_text(json.dumps(dict(conditions=92, permutations=n_perm, folds=folds, seed=seed)))
    write_job(case, "[rsa]\n" + lines + 'compare = ["spearman"]\n'
              + f"[rsa.reweight.all]\nmodels = {json.dumps(names)}\nfolds = {folds}\nseed = {seed}\n"
              + f"[permutation]\nn = {n_perm}\nseed = 0\n"
              + f"[execution]\npermutations_per_task = {max(1, ceil_div(n_perm, ARGS.threads))}\n")
    bf = run_brainfit(case)
    rows = compare_csv(case)
    ours = np.array([float(rows[(s, m, "spearman")]["value"]) for s in subjects for m in names + ["all", "all.unweighted"]])
    min_p = min(float(r["p"]) for r in rows.values())
    result, info, rss = run_anchor(case, "reweight-scipy")
    return [row("reweight", "scipy", bf, info, rss, ours, result, 0.0, "float64",
                dict(subjects=len(subjects), models=len(names), folds=folds, conditions=92, permutations=n_perm,
                     brainfit_min_p=min_p))]


def case_remix(work: Path, n_train: int):
    case = work / "remix"
    case.mkdir(parents=True, exist_ok=True)
    n_classes, p, n_stim, cs, folds = 10, 512, 92, [0.01, 0.1, 1.0, 10.0], 5
    rng = np.random.default_rng(21)
    means = rng.standard_normal((n_classes, p)) * 0.25  # class means 0.25 * sqrt(2p) = 8 noise sd apart
    labels = rng.permutation(np.repeat(np.arange(n_classes), n_train // n_classes)).astype(np.int64)
    train = means[labels] + rng.standard_normal((len(labels), p))
    stim_class = np.arange(n_stim) % n_classes
    stim = means[stim_class] + rng.standard_normal((n_stim, p))
    # a brain RDM with the category structure, and noise
    brain = np.eye(n_classes)[stim_class] @ rng.standard_normal((n_classes, 200)) + 2 * rng.standard_normal((n_stim, 200))
    np.save(case / "train.npy", train)
    np.save(case / "labels.npy", labels)
    np.save(case / "stim.npy", stim)
    np.save(case / "brain_rdm.npy", correlation_rdm(brain))
    (case / "params.json").write_text(json.dumps(dict(cs=cs, folds=folds)))
    write_job(case, '[features]\nstim = "stim.npy"\n'
              '[rsa]\nbrain_rdms = { brain = "brain_rdm.npy" }\ncompare = ["pearson", "spearman"]\n'
              f'[rsa.remix.cat]\nspace = "stim"\ntrain = "train.npy"\nlabels = "labels.npy"\ncs = {cs}\nfolds = {folds}\n')
    bf = run_brainfit(case)
    rows = compare_csv(case)
    ours = np.array([float(rows[("brain", m, method)]["value"]) for method in ("pearson", "spearman")
                     for m in ("stim", "cat")])
    out, results = [], []
    # lbfgs at scikit-learn's defaults is timed and its difference reported, not checked: it is
    # not converged to rounding (newton-cholesky at tol 1e-10 is the agreement check)
    for anchor, checked in (("remix-sklearn_lbfgs", False), ("remix-sklearn_newton", True)):
        result, info, rss = run_anchor(case, anchor)
        out.append(row("remix", anchor.split("-")[1], bf, info, rss, ours, result, 0.0, "float64",
                       dict(train_images=len(labels), units=p, classes=n_classes, stimuli=n_stim, cs=cs,
                            folds=folds), checked=checked))
        results.append(result)
    out[0]["note"] += (f"; not converged to rounding at these defaults: max |lbfgs - newton-cholesky| "
                       f"{np.max(np.abs(results[0] - results[1])):.1e}, so its difference is reported, not checked")
    return out


def case_crossnobis_searchlight(work: Path, n_vox: int, rsatoolbox_centres: int):
    case = work / "crossnobis_searchlight"
    case.mkdir(parents=True, exist_ok=True)
    import nibabel as nib
    n_cond, n_runs, radius = 30, 6, 2.0
    rng = np.random.default_rng(4)
    mask = box_mask(n_vox)
    latent = rng.standard_normal((n_cond, 5))
    signal = latent @ rng.standard_normal((5, n_vox)) * 0.3
    conds = np.tile(np.arange(n_cond), n_runs).astype(np.int64)
    runs = np.repeat(np.arange(n_runs), n_cond).astype(np.int64)
    data = signal[conds] + rng.standard_normal((len(conds), n_vox))
    model = condensed_of(((latent[:, None] - latent[None]) ** 2).sum(axis=2))
    np.save(case / "brain.npy", data)
    np.save(case / "conds.npy", conds)
    np.save(case / "runs.npy", runs)
    np.save(case / "model.npy", model)
    np.save(case / "mask.npy", mask)
    nib.save(nib.Nifti1Image(mask, np.eye(4)), case / "mask.nii.gz")
    (case / "params.json").write_text(json.dumps(dict(rsatoolbox_centres=rsatoolbox_centres, radius=radius)))
    per_task = min(2048, ceil_div(n_vox, ARGS.threads))
    write_job(case, '[data]\nbrain = "brain.npy"\nmask = "mask.nii.gz"\ngroups = "runs.npy"\nconditions = "conds.npy"\n'
              '[rsa]\nmodels = { latent = "model.npy" }\n'
              f'[searchlight]\nradius = {radius}\nmin_voxels = 1\nrdm = "crossnobis"\nnoise = "none"\ncompare = "spearman"\n'
              f"[execution]\ncentres_per_task = {per_task}\n")
    bf = run_brainfit(case)
    out = case / "out/searchlight/latent"
    centres = np.load(out / "centres.npy")
    rho_bf = np.full(n_vox, np.nan)
    rho_bf[centres] = np.load(out / "rho.npy")
    members = spheres(mask, radius)
    result, info, rss = run_anchor(case, "crossnobis_searchlight-rsatoolbox")
    return [row("crossnobis_searchlight", "rsatoolbox", bf, info, rss, rho_bf, result, 0.0, "float64",
                dict(centres=len(centres), conditions=n_cond, runs=n_runs, radius=radius,
                     mean_sphere=round(float(np.mean([len(m) for m in members])), 1),
                     tasks=ceil_div(n_vox, per_task)))]


def case_cross_temporal(work: Path, n_perm: int):
    case = work / "cross_temporal"
    case.mkdir(parents=True, exist_ok=True)
    (t1, c1), (t2, c2), n = (100, 64), (80, 32), 92
    rng = np.random.default_rng(5)
    latent = rng.standard_normal((n, 8))

    def recording(t, c):  # the conditions' latent structure, rising and falling over time, plus noise
        amplitude = np.exp(-(((np.arange(t) - 0.4 * t) / (0.2 * t)) ** 2))
        return amplitude[:, None, None] * (latent @ rng.standard_normal((8, c)))[None] + rng.standard_normal((t, n, c))
    np.save(case / "meg.npy", recording(t1, c1))
    np.save(case / "eeg.npy", recording(t2, c2))
    np.save(case / "model.npy", condensed_of(np.load(KRIEG / "model_rdms.npy")[0]))  # animacy
    (case / "params.json").write_text(json.dumps(dict(permutations=n_perm)))
    write_job(case, '[rsa]\nmodels = { animacy = "model.npy" }\n'
              '[time_resolved]\ndata = "meg.npy"\ncross_data = "eeg.npy"\nrdm = "correlation"\ncompare = "spearman"\n'
              f"[permutation]\nn = {n_perm}\nseed = 0\n"
              f"[execution]\npermutations_per_task = {max(1, ceil_div(n_perm, ARGS.threads))}\n")
    bf = run_brainfit(case)
    rho = np.load(case / "out/cross_temporal/rho.npy")
    course = np.load(case / "out/time_resolved/animacy/rho.npy")
    null_max = np.load(case / "out/cross_temporal/null_max.npy")
    ours = np.concatenate([rho.ravel(), course])
    pairs = n * (n - 1) // 2
    flops = 2 * n * n * (t1 * c1 + t2 * c2) + 2 * (t1 * t2 + t1) * pairs * (1 + n_perm)
    result, info, rss = run_anchor(case, "cross_temporal-numpy")
    return [row("cross_temporal", "numpy", bf, info, rss, ours, result, flops, "float64",
                dict(times=t1, times2=t2, conditions=n, channels=c1, channels2=c2, permutations=n_perm,
                     brainfit_null_max_mean=float(null_max.mean()), brainfit_null_max_sd=float(null_max.std())))]


def case_extract_pca(work: Path, size: int, n_reference: int, n_stimuli: int, k: int, batch: int):
    """Random 8-bit images (side 10/7 of the input, so the 7/8 crop and a bilinear resize both
    run) through the wide benchmark network (16 x size x size units after its ReLU), PCA to k
    components fitted on the reference images, applied to the stimuli."""
    case = work / "extract_pca"
    case.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "scripts" / "python"))
    from make_fixtures_onnx import write_wide
    write_wide(case / "wide.onnx", size)
    side = size * 10 // 7
    rng = np.random.default_rng(15)
    np.save(case / "reference.npy", rng.integers(0, 256, (n_reference, side, side, 3), dtype=np.uint8))
    np.save(case / "stimuli.npy", rng.integers(0, 256, (n_stimuli, side, side, 3), dtype=np.uint8))
    run_batch = 16
    params = dict(size=size, units=16 * size * size, reference=n_reference, stimuli=n_stimuli, components=k,
                  batch=batch, run_batch=run_batch, tensor="relu_wide_out", image_side=side)
    (case / "params.json").write_text(json.dumps(params))
    write_job(case, '[extract]\nmodel = "wide.onnx"\nimages = "stimuli.npy"\nreference = "reference.npy"\n'
              f'layers = {{ conv = "{params["tensor"]}" }}\nbatch = {run_batch}\n'
              f'[compress.conv]\nmethod = "pca"\ncomponents = {k}\nbatch = {batch}\n')
    bf = run_brainfit(case)
    ours = np.load(case / "out/features/conv.npy").astype(np.float64)
    result, info, rss = run_anchor(case, "extract_pca-sklearn")
    scale = np.abs(result[:, :EXTRACT_CHECKED]).max()
    all_diff = float(np.abs(ours - result).max() / scale)
    r = row("extract_pca", "sklearn+onnxruntime", bf, info, rss, ours[:, :EXTRACT_CHECKED] / scale,
            result[:, :EXTRACT_CHECKED] / scale, 0.0, "float64",
            dict(params, checked_components=EXTRACT_CHECKED, relative_diff_all_components=all_diff))
    return [r]


def case_group_tfce(work: Path, n_voxels: int, n_flips: int, n_subjects: int = 20):
    """Per subject a cheap encoding map (12 samples, 2 features, voxels with a weak shared effect
    in a corner blob), then [group] with TFCE; nilearn's permuted_ols on the same subject maps."""
    import nibabel as nib
    case = work / "group_tfce"
    case.mkdir(parents=True, exist_ok=True)
    mask = box_mask(n_voxels)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(mask, affine), case / "mask.nii.gz")
    coords = np.argwhere(mask)  # C order, as the mask's columns
    blob = np.linalg.norm(coords - coords[len(coords) // 3], axis=1) <= 4
    rng = np.random.default_rng(18)
    x = rng.standard_normal((12, 2)).astype(np.float32)
    np.save(case / "a.npy", x)
    subjects = ""
    for s in range(n_subjects):
        y = rng.standard_normal((12, n_voxels)).astype(np.float32)
        y[:, blob] += 0.8 * (x @ rng.standard_normal((2, int(blob.sum()))).astype(np.float32))
        np.save(case / f"brain{s}.npy", y)
        subjects += f'[[subjects]]\nname = "s{s}"\ndata = {{ brain = "brain{s}.npy", mask = "mask.nii.gz" }}\n'
    params = dict(subjects=n_subjects, voxels=n_voxels, flips=n_flips, blob_voxels=int(blob.sum()))
    (case / "params.json").write_text(json.dumps(params))
    per_task = max(1, ceil_div(n_flips, 4 * ARGS.threads))
    write_job(case, subjects + '[features]\na = "a.npy"\n'
              '[encoding]\nalphas = [1.0]\ncv = { kind = "kfold", k = 3 }\ninner_cv = { kind = "kfold", k = 2 }\n'
              f'[group]\nmaps = ["encoding"]\nn = {n_flips}\ntfce = true\nconnectivity = 6\n'
              f'[execution]\nvoxels_per_task = {ceil_div(n_voxels, ARGS.threads)}\npermutations_per_task = {per_task}\n')
    bf = run_brainfit(case)
    out = case / "out/group/encoding/a"
    tfce = np.load(out / "tfce.npy")
    ours = np.concatenate([np.load(out / "t.npy"), tfce / np.abs(tfce).max()])
    result, info, rss = run_anchor(case, "group_tfce-nilearn")
    params.update(brainfit_null_max_tfce_mean=float(np.load(out / "null_max_tfce.npy").mean()),
                  brainfit_null_max_t_mean=float(np.load(out / "null_max.npy").mean()),
                  brainfit_significant_tfce=int((np.load(out / "p_tfce_fwe.npy") < 0.05).sum()))
    return [row("group_tfce", "nilearn", bf, info, rss, ours, result, 0.0, "float64", params)]


def row(case, anchor, bf, info, anchor_rss, ours, theirs, flops, dtype, params, checked=True):
    """One table row; checked=False: the difference is reported, not held to TOL[case] (tol None)."""
    tol = TOL[case] if checked else None
    both = ~np.isnan(theirs)  # rsatoolbox computed a subsample only
    diff = float(np.max(np.abs(ours[both] - theirs[both])))
    gflops = flops / bf["brainfit_s"] / 1e9
    return dict(case=case, anchor=anchor, **bf, anchor_s=info["seconds"], ratio=info["seconds"] / bf["brainfit_s"],
                max_abs_diff=diff, tol=tol, agree=bool(diff <= tol) if checked else True, checked=checked,
                compared=int(both.sum()),
                anchor_rss_mb=anchor_rss, gflop=flops / 1e9, brainfit_gflops=gflops, gemm_dtype=dtype,
                pct_of_gemm=100 * gflops / GEMM[dtype], params=params,
                **{k: v for k, v in info.items() if k != "seconds"})


def table(rows):
    head = ["case", "anchor", "brainfit s", "anchor s", "ratio anchor/brainfit", "max abs diff (tol)", "agree",
            "brainfit RSS MB", "anchor RSS MB", "brainfit GFLOP/s (% of GEMM)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        anchor_s = f"{r['anchor_s']:.2f}" + (f" (extrapolated from {r['computed_centres']} centres)"
                                             if r.get("extrapolated") else "")
        lines.append("| " + " | ".join([
            r["case"], r["anchor"], f"{r['brainfit_s']:.2f}", anchor_s, f"{r['ratio']:.1f}",
            f"{r['max_abs_diff']:.1e} ({r['tol']:.0e})" if r["checked"] else f"{r['max_abs_diff']:.1e} (not checked)",
            ("pass" if r["agree"] else "FAIL") if r["checked"] else "n/a",
            f"{r['brainfit_rss_mb']:.0f}", f"{r['anchor_rss_mb']:.0f}",
            (f"{r['brainfit_gflops']:.1f} ({r['pct_of_gemm']:.0f}% of {'s' if r['gemm_dtype'] == 'float32' else 'd'}gemm)"
             if r["gflop"] else "not counted"),
        ]) + " |")
    return "\n".join(lines)


def main():
    global GEMM
    if not BIN.exists():
        sys.exit(f"{BIN} missing: run scripts/bench/compare.sh (it builds it) or `cargo build --release`")
    work = Path(ARGS.workdir)
    work.mkdir(parents=True, exist_ok=True)
    scale = 0.1 if ARGS.quick else 1.0
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    import sklearn.linear_model  # noqa: F401  (loads scikit-learn's OpenMP runtime, so it is listed too)
    blas = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "threading_layer")}
            for i in threadpool_info()]
    print(f"machine: {cpu}, {os.cpu_count()} cores; threads: {ARGS.threads} (brainfit --workers {ARGS.threads}, "
          f"anchors' BLAS pinned with threadpoolctl and {', '.join(THREAD_VARS[:3])})")
    for b in blas:
        kernel = f", kernel {b['architecture']}" if b.get("architecture") else ""
        threading = f" ({b['threading_layer']})" if b.get("threading_layer") else ""
        version = f" {b['version']}" if b.get("version") else ""
        print(f"anchors' thread pool: {b['internal_api']}{version}{kernel}, {b['num_threads']} threads{threading}")
    GEMM = gemm_rates()
    print(f"GEMM 2048x2048 (numpy, best of 3): sgemm {GEMM['float32']:.1f} GFLOP/s, "
          f"dgemm {GEMM['float64']:.1f} GFLOP/s")
    rows = []
    cases = ARGS.only or CASES
    if "ridge" in cases:
        print("ridge ...", flush=True)
        rows += case_ridge(work, int(8000 * scale))
    if "searchlight" in cases:
        print("searchlight ...", flush=True)
        rows += case_searchlight(work, int(20000 * scale), 0, 100 if ARGS.quick else 500)
    if "permutation" in cases:
        print("permutation ...", flush=True)
        rows += case_searchlight(work, int(20000 * scale), N_PERM, 0)
    for model in ("lasso", "pcr", "pls", "banded_ridge"):
        if model in cases:
            print(f"{model} ...", flush=True)
            rows += case_model(work, model, int(MODELS["v"] * scale))
    if "rsa_methods" in cases:
        print("rsa_methods ...", flush=True)
        rows += case_rsa_methods(work, int(200 * scale))
    if "reweight" in cases:
        print("reweight ...", flush=True)
        rows += case_reweight(work, int(100 * scale))
    if "remix" in cases:
        print("remix ...", flush=True)
        rows += case_remix(work, int(2000 * scale))
    if "crossnobis_searchlight" in cases:
        print("crossnobis_searchlight ...", flush=True)
        rows += case_crossnobis_searchlight(work, int(2000 * scale), 50 if ARGS.quick else 200)
    if "cross_temporal" in cases:
        print("cross_temporal ...", flush=True)
        rows += case_cross_temporal(work, int(100 * scale))
    if "extract_pca" in cases:
        print("extract_pca ...", flush=True)
        rows += case_extract_pca(work, 56 if ARGS.quick else 112, int(1000 * scale), int(200 * scale),
                                 30 if ARGS.quick else 100, 60 if ARGS.quick else 200)
    if "group_tfce" in cases:
        print("group_tfce ...", flush=True)
        rows += case_group_tfce(work, int(100_000 * scale), 100 if ARGS.quick else 1000)
    result = dict(quick=ARGS.quick, cpu=cpu, cores=os.cpu_count(), threads=ARGS.threads, blas=blas,
                  gemm_gflops=GEMM, cases=rows)
    print()
    print(json.dumps(result, indent=2))
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps(result, indent=2))
    print()
    print(table(rows))
    for r in rows:
        if r.get("note"):
            print(f"note ({r['case']}/{r['anchor']}): {r['note']}")
        if r.get("extrapolated"):
            print(f"note ({r['case']}/{r['anchor']}): anchor time EXTRAPOLATED linearly from {r['computed_centres']} "
                  f"random centres ({r['measured_seconds']:.2f} s) to {r['params']['centres']}; agreement on those "
                  "centres only")
        if r["case"] == "rsa_methods":
            pm = r["params"]
            print("note (rsa_methods): max |diff| per method (values and ceilings): "
                  + ", ".join(f"{m} {d:.1e}" for m, d in pm["max_abs_diff_per_method"].items())
                  + "; anchor seconds per method: "
                  + ", ".join(f"{m} {t:.2f}" for m, t in r["method_seconds"].items()))
        if r["case"] == "extract_pca":
            pm = r["params"]
            print(f"note (extract_pca): scores of the first {pm['checked_components']} of {pm['components']} components "
                  f"compared, relative to their largest; over all components the largest relative difference is "
                  f"{pm['relative_diff_all_components']:.1e} (the last components' eigenvalues lie close together)")
        if r["case"] == "group_tfce":
            pm = r["params"]
            print(f"note (group_tfce): agreement on the t and observed TFCE maps; each side draws its own flips. "
                  f"Null maxima means, for information: max-T brainfit {pm['brainfit_null_max_t_mean']:.3f} nilearn "
                  f"{r['null_max_t_mean']:.3f}; max TFCE brainfit {pm['brainfit_null_max_tfce_mean']:.1f} nilearn "
                  f"{r['null_max_tfce_mean']:.1f}")
        if r["case"] == "permutation":
            pm = r["params"]
            print(f"note (permutation): agreement on the observed map only; brainfit and numpy draw different "
                  f"permutations. Null maxima, for information: brainfit mean {pm['brainfit_null_max_mean']:.4f} "
                  f"sd {pm['brainfit_null_max_sd']:.4f}, numpy mean {r['null_max_mean']:.4f} sd {r['null_max_sd']:.4f}")
    failed = [f"{r['case']}/{r['anchor']}" for r in rows if not r["agree"]]
    if failed:
        sys.exit(f"agreement check failed: {', '.join(failed)}")
    print("all agreement checks passed")


if __name__ == "__main__":
    if ARGS.anchor:
        anchor_main()
    else:
        main()
