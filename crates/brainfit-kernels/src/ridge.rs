//! Voxelwise ridge regression and its spectral relatives, principal component regression (PCR)
//! and partial least squares (PLS1), with nested cross-validation and a per-voxel
//! hyperparameter.
//!
//! For every split, the training features are decomposed **once** and every grid value is
//! scored from that decomposition; no refit per value. With `Xc` the (centred) training features:
//!
//! * primal (`n_train >= p`): `Xcᵀ Xc = V Λ Vᵀ`, `W = Xc V`, `A = X_test V`;
//! * dual (`n_train < p`, wide layers): `Xc Xcᵀ = U Λ Uᵀ`, `W = U`, `A = X_test Xcᵀ U`;
//!
//! and in both cases the test prediction is `A · (f(λ) ⊙ Wᵀ Yc)` for a filter `f` on the
//! eigenvalues, so one code path serves both regimes and all three estimators:
//!
//! * **ridge**, alpha `α`: `f(λ) = 1 / (λ + α)`;
//! * **PCR** with `k` components (PCA of the training part, least squares on the first `k`
//!   component scores): `f(λ) = 1 / λ` on the `k` largest eigenvalues, `0` elsewhere;
//! * **PLS1** with `k` components (scikit-learn's `PLSRegression(scale=False)` on one target):
//!   its coefficients are the least-squares fit within the Krylov space
//!   `span{Xcᵀy, (XcᵀXc) Xcᵀy, …}` (Helland 1988), so in the eigenbasis `f(λ) = P(λ)` for the
//!   polynomial `P` of degree `< k` minimising `Σᵢ λᵢ sᵢ² P(λᵢ)² − 2 Σᵢ sᵢ² P(λᵢ)`, where
//!   `s = Vᵀ Xcᵀ y`. `P` is the projection of `1/λ` onto polynomials in the inner product of
//!   weights `λᵢ sᵢ²`; the orthonormal polynomials come from the Stieltjes (Lanczos)
//!   recurrence with full re-orthogonalisation, so every `k` of a grid falls out of one pass
//!   per voxel, at `O(rank · k²)` flops instead of NIPALS's `O(n · p · k)`. This filter
//!   depends on the voxel.
//!
//! Eigenvalues below `1e-10 · λ_max` count as zero: PCR and PLS leave those directions out, as
//! a pseudo-inverse does.
//!
//! Gram matrices and eigendecompositions are computed in f64 whatever the data's type; `W`,
//! `A` and the big products with the voxel data run in the data's type (f32 GEMMs for f32
//! data), and squared errors, means and scores accumulate in f64.
//!
//! Inside each outer training part, an inner cross-validation picks the grid value per voxel:
//! the mean over inner folds of each fold's mean squared error, minimised, ties going to the
//! more regularised value (the larger alpha, himalaya's rule; the fewer components). Each fit
//! centres X and Y on its own training part when `intercept` is on. The model is then refit on
//! the whole outer training part with each voxel's value and scored on the outer test part.
//!
//! Voxels are processed in batches of [`VOXEL_BATCH`] columns so memory stays bounded and every
//! voxel's arithmetic is the same whichever task it falls in, as long as tasks start at
//! multiples of the batch (the planner guarantees that).

use crate::cv::{CvScheme, Fold, split_within};
use crate::linalg::LinalgBackend;
use crate::score::{ScoreKind, score_columns};
use crate::{KernelError, Real, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis, Zip, s};

/// Voxels per internal batch: fixes GEMM shapes so results do not depend on task sizes.
pub const VOXEL_BATCH: usize = 512;

/// The estimators that are filters on the training features' spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpectralModel {
    /// Ridge regression; the grid holds alphas.
    Ridge,
    /// Principal component regression; the grid holds numbers of components.
    Pcr,
    /// Partial least squares (PLS1, one target per voxel); the grid holds numbers of
    /// components.
    Pls,
}

/// Checked parameters of a spectral estimator: which one, its hyperparameter grid, the
/// intercept and the held-out score.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectralSpec {
    model: SpectralModel,
    /// From the least to the most regularised value: alphas ascending, components descending.
    grid: Vec<f64>,
    /// Centre X and Y on each training part (himalaya's and scikit-learn's `fit_intercept`).
    pub intercept: bool,
    /// Held-out score to report.
    pub score: ScoreKind,
}

impl SpectralSpec {
    /// Ridge: checks the alpha grid (non-empty, finite, positive) and sorts it ascending.
    pub fn ridge(alphas: Vec<f64>, intercept: bool, score: ScoreKind) -> Result<Self> {
        let mut grid = check_alphas(alphas)?;
        grid.dedup();
        Ok(SpectralSpec { model: SpectralModel::Ridge, grid, intercept, score })
    }

    /// PCR or PLS: checks the grid of component counts (non-empty, each `>= 1`) and sorts it
    /// descending. `model` must not be [`SpectralModel::Ridge`].
    pub fn components(
        model: SpectralModel,
        mut components: Vec<usize>,
        intercept: bool,
        score: ScoreKind,
    ) -> Result<Self> {
        if model == SpectralModel::Ridge {
            return Err(KernelError::Parameter("ridge takes alphas, not components".into()));
        }
        if components.is_empty() {
            return Err(KernelError::Parameter("the components grid is empty".into()));
        }
        if components.contains(&0) {
            return Err(KernelError::Parameter("components must be >= 1".into()));
        }
        components.sort_unstable_by(|a, b| b.cmp(a));
        components.dedup();
        let grid = components.into_iter().map(|k| k as f64).collect();
        Ok(SpectralSpec { model, grid, intercept, score })
    }

    /// Which estimator.
    pub fn model(&self) -> SpectralModel {
        self.model
    }

    /// The hyperparameter grid from the least to the most regularised value: alphas ascending
    /// (ridge), numbers of components descending (PCR, PLS).
    pub fn grid(&self) -> &[f64] {
        &self.grid
    }
}

/// Checks an alpha grid (non-empty, finite, positive) and sorts it ascending.
pub(crate) fn check_alphas(mut alphas: Vec<f64>) -> Result<Vec<f64>> {
    if alphas.is_empty() {
        return Err(KernelError::Parameter("the alpha grid is empty".into()));
    }
    if let Some(a) = alphas.iter().find(|a| !(a.is_finite() && **a > 0.0)) {
        return Err(KernelError::Parameter(format!("alphas must be finite and > 0, got {a}")));
    }
    alphas.sort_by(f64::total_cmp);
    Ok(alphas)
}

/// Eigenvalues below this fraction of the largest count as zero (PCR, PLS).
const RANK_TOLERANCE: f64 = 1e-10;

/// The decomposition of one training part's features, projected onto its test part.
#[derive(Debug, Clone)]
pub struct FoldBasis<T> {
    fold: Fold,
    intercept: bool,
    /// Decomposed `Xc Xcᵀ` (`n_train < p`) rather than `Xcᵀ Xc`.
    dual: bool,
    eigenvalues: Array1<f64>,
    /// Indices of the eigenvalues, largest first.
    descending: Vec<usize>,
    w: Array2<T>,
    a: Array2<T>,
}

fn rows_f64<T: Real>(x: ArrayView2<'_, T>, rows: &[usize]) -> Array2<f64> {
    Array2::from_shape_fn((rows.len(), x.ncols()), |(i, j)| x[(rows[i], j)].as_f64())
}

fn cast<T: Real>(x: Array2<f64>) -> Array2<T> {
    x.mapv(T::from_f64)
}

impl<T: Real> FoldBasis<T> {
    /// Decomposes the training part of `x` (`[n_samples, n_features]`) for `fold`.
    pub fn new<B: LinalgBackend>(
        x: ArrayView2<'_, T>,
        fold: &Fold,
        intercept: bool,
    ) -> Result<Self> {
        if fold.train.is_empty() || fold.test.is_empty() {
            return Err(KernelError::CrossValidation("a fold has an empty part".into()));
        }
        let mut x_train = rows_f64(x, &fold.train);
        let mut x_test = rows_f64(x, &fold.test);
        if intercept {
            let mean = x_train.mean_axis(Axis(0)).expect("non-empty");
            x_train -= &mean;
            x_test -= &mean;
        }
        let (n_train, p) = x_train.dim();
        let dual = n_train < p;
        let (eigenvalues, w, a) = if !dual {
            let gram = crate::linalg::matmul::<B, f64>(x_train.t(), x_train.view());
            let (lambda, v) = B::eigh(gram.view())?;
            let w = crate::linalg::matmul::<B, f64>(x_train.view(), v.view());
            let a = crate::linalg::matmul::<B, f64>(x_test.view(), v.view());
            (lambda, w, a)
        } else {
            let kernel = crate::linalg::matmul::<B, f64>(x_train.view(), x_train.t());
            let (lambda, u) = B::eigh(kernel.view())?;
            let cross = crate::linalg::matmul::<B, f64>(x_test.view(), x_train.t());
            let a = crate::linalg::matmul::<B, f64>(cross.view(), u.view());
            (lambda, u, a)
        };
        let eigenvalues = eigenvalues.mapv(|l: f64| l.max(0.0));
        let mut descending: Vec<usize> = (0..eigenvalues.len()).collect();
        descending.sort_by(|&i, &j| eigenvalues[j].total_cmp(&eigenvalues[i]));
        Ok(FoldBasis {
            fold: fold.clone(),
            intercept,
            dual,
            eigenvalues,
            descending,
            w: cast(w),
            a: cast(a),
        })
    }

    /// The split this basis was made for.
    pub fn fold(&self) -> &Fold {
        &self.fold
    }

    /// Centred training targets' projection `Wᵀ Yc` and the training means of `y`.
    fn project<B: LinalgBackend>(&self, y: ArrayView2<'_, T>) -> (Array2<T>, Array1<f64>) {
        let v = y.ncols();
        let n = self.fold.train.len() as f64;
        let mean = if self.intercept {
            let mut m = Array1::<f64>::zeros(v);
            for &i in &self.fold.train {
                m.iter_mut().zip(y.row(i)).for_each(|(m, x)| *m += x.as_f64());
            }
            m / n
        } else {
            Array1::zeros(v)
        };
        let mut yc = y.select(Axis(0), &self.fold.train);
        for mut row in yc.rows_mut() {
            Zip::from(&mut row).and(&mean).for_each(|x, &m| *x = T::from_f64(x.as_f64() - m));
        }
        (crate::linalg::matmul::<B, T>(self.w.t(), yc.view()), mean)
    }

    /// Eigenvalues at or below this count as zero.
    fn rank_floor(&self) -> f64 {
        self.descending.first().map_or(0.0, |&i| self.eigenvalues[i] * RANK_TOLERANCE)
    }

    /// The filter of a voxel-independent estimator (ridge, PCR) at one grid value.
    fn filter(&self, model: SpectralModel, value: f64) -> Vec<f64> {
        match model {
            SpectralModel::Ridge => self.eigenvalues.iter().map(|l| 1.0 / (l + value)).collect(),
            SpectralModel::Pcr => {
                let floor = self.rank_floor();
                let mut f = vec![0.0; self.eigenvalues.len()];
                for &i in self.descending.iter().take(value as usize) {
                    let l = self.eigenvalues[i];
                    if l > floor {
                        f[i] = 1.0 / l;
                    }
                }
                f
            }
            SpectralModel::Pls => unreachable!("the PLS filter depends on the voxel"),
        }
    }

    /// Test-part predictions (without the mean) for a voxel-independent filter:
    /// `(A · diag(f)) · proj`. The filter scales the columns of `A` (`n_test × rank`), not the
    /// rows of `proj` (`rank × n_voxels`, the larger one): one small copy per grid value
    /// instead of a large one.
    fn predict<B: LinalgBackend>(
        &self,
        proj: ArrayView2<'_, T>,
        filter: &[f64],
        out: &mut Array2<T>,
    ) {
        let mut scaled = self.a.clone();
        for (mut column, &f) in scaled.axis_iter_mut(Axis(1)).zip(filter) {
            column *= T::from_f64(f);
        }
        B::gemm(scaled.view(), proj, out.view_mut());
    }

    /// PLS1 coefficients in the eigenbasis, `P_k(λ) ⊙ proj`, for every voxel (column of `proj`)
    /// and every component count of `ks` (ascending): `each(i, j, column)` receives the `i`-th
    /// count's coefficients of voxel `j`. A voxel whose Krylov space is exhausted before `k`
    /// (at most as many distinct directions as `k`) keeps its exact least-squares fit.
    fn pls_coefficients(
        &self,
        proj: ArrayView2<'_, T>,
        ks: &[usize],
        mut each: impl FnMut(usize, usize, &[f64]),
    ) {
        let floor = self.rank_floor();
        // the directions that count; eigenvalues scaled to (0, 1] (P scales back by 1/λ_max)
        let nodes: Vec<usize> =
            self.descending.iter().copied().filter(|&i| self.eigenvalues[i] > floor).collect();
        let top = nodes.first().map_or(1.0, |&i| self.eigenvalues[i]);
        let t: Vec<f64> = nodes.iter().map(|&i| self.eigenvalues[i] / top).collect();
        let k_max = ks.last().copied().unwrap_or(0);
        let m = nodes.len();
        let mut coefficients = vec![0.0; self.eigenvalues.len()];
        let (mut s2, mut weight, mut p) = (vec![0.0; m], vec![0.0; m], vec![0.0; m]);
        let mut basis: Vec<Vec<f64>> = Vec::with_capacity(k_max);
        for (j, column) in proj.axis_iter(Axis(1)).enumerate() {
            // sᵢ² where s = Vᵀ Xcᵀ y: proj itself (primal), or σᵢ·proj (dual)
            for (e, &i) in nodes.iter().enumerate() {
                let c = column[i].as_f64();
                s2[e] = if self.dual { self.eigenvalues[i] * c * c } else { c * c };
                weight[e] = t[e] * s2[e];
            }
            p.fill(0.0);
            basis.clear();
            let norm = weight.iter().sum::<f64>().sqrt();
            let mut q: Option<Vec<f64>> = (norm > 0.0).then(|| vec![1.0 / norm; m]);
            let mut next = 0; // index into ks of the next count to hand out
            for degree in 1..=k_max {
                if let Some(qj) = q.take() {
                    let coefficient: f64 = s2.iter().zip(&qj).map(|(s, q)| s * q).sum();
                    p.iter_mut().zip(&qj).for_each(|(p, q)| *p += coefficient * q);
                    if degree < k_max {
                        // next orthonormal polynomial: t·q_j, orthogonalised twice against all
                        let mut r: Vec<f64> = t.iter().zip(&qj).map(|(t, q)| t * q).collect();
                        basis.push(qj);
                        for _ in 0..2 {
                            for b in &basis {
                                let dot: f64 = (0..m).map(|e| weight[e] * r[e] * b[e]).sum();
                                r.iter_mut().zip(b).for_each(|(r, b)| *r -= dot * b);
                            }
                        }
                        let beta = (0..m).map(|e| weight[e] * r[e] * r[e]).sum::<f64>().sqrt();
                        if beta > 1e-10 {
                            r.iter_mut().for_each(|r| *r /= beta);
                            q = Some(r);
                        }
                    }
                }
                while next < ks.len() && ks[next] == degree {
                    coefficients.fill(0.0);
                    for (e, &i) in nodes.iter().enumerate() {
                        coefficients[i] = p[e] / top * column[i].as_f64();
                    }
                    each(next, j, &coefficients);
                    next += 1;
                }
            }
        }
    }

    /// Test-part predictions (without the mean) at every grid value of `spec`, handed to
    /// `each(grid index, predictions)` in turn.
    fn predict_grid<B: LinalgBackend>(
        &self,
        proj: ArrayView2<'_, T>,
        spec: &SpectralSpec,
        mut each: impl FnMut(usize, &Array2<T>),
    ) {
        let mut pred = Array2::<T>::zeros((self.a.nrows(), proj.ncols()));
        match spec.model {
            SpectralModel::Ridge | SpectralModel::Pcr => {
                for (gi, &value) in spec.grid.iter().enumerate() {
                    self.predict::<B>(proj, &self.filter(spec.model, value), &mut pred);
                    each(gi, &pred);
                }
            }
            SpectralModel::Pls => {
                // the grid descends; the recurrence hands out ascending counts
                let ks: Vec<usize> = spec.grid.iter().rev().map(|&k| k as usize).collect();
                let mut coefficients: Vec<Array2<T>> =
                    ks.iter().map(|_| Array2::zeros(proj.dim())).collect();
                self.pls_coefficients(proj, &ks, |i, j, c| {
                    let mut column = coefficients[i].column_mut(j);
                    column.iter_mut().zip(c).for_each(|(d, &c)| *d = T::from_f64(c));
                });
                for (i, c) in coefficients.iter().enumerate() {
                    B::gemm(self.a.view(), c.view(), pred.view_mut());
                    each(ks.len() - 1 - i, &pred);
                }
            }
        }
    }
}

/// All the decompositions a nested cross-validation needs; depends on X only, so it is built
/// once per feature space and reused for every voxel chunk and every permutation.
#[derive(Debug, Clone)]
pub struct NestedCv<T> {
    n_samples: usize,
    outer: Vec<(FoldBasis<T>, Vec<FoldBasis<T>>)>,
}

/// Per-voxel results of a nested cross-validation.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodingResult {
    /// Mean over outer folds of the held-out score, `[n_voxels]`.
    pub score: Array1<f64>,
    /// Hyperparameter (alpha, or number of components) chosen most often across outer folds
    /// (ties: the more regularised value), `[n_voxels]`.
    pub alpha: Array1<f64>,
    /// Held-out score per outer fold, `[n_outer, n_voxels]`.
    pub fold_score: Array2<f64>,
    /// Hyperparameter chosen in each outer fold, `[n_outer, n_voxels]`.
    pub fold_alpha: Array2<f64>,
}

impl<T: Real> NestedCv<T> {
    /// Decomposes `x` for every outer fold and every inner fold within it, on as many threads
    /// as the machine offers (the folds are independent; a worker's other threads would
    /// otherwise wait for this one). The result does not depend on the thread count.
    pub fn new<B: LinalgBackend>(
        x: ArrayView2<'_, T>,
        outer: &[Fold],
        inner: CvScheme,
        groups: Option<&[i64]>,
        intercept: bool,
    ) -> Result<Self> {
        // every split to decompose: each outer fold's refit, then its inner folds
        let mut splits: Vec<&Fold> = Vec::new();
        let inner_folds = outer
            .iter()
            .map(|fold| split_within(inner, &fold.train, groups))
            .collect::<Result<Vec<_>>>()?;
        for (fold, inner) in outer.iter().zip(&inner_folds) {
            splits.push(fold);
            splits.extend(inner);
        }
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let mut bases = build_in_parallel(splits.len(), threads, |i| {
            FoldBasis::new::<B>(x, splits[i], intercept)
        })?
        .into_iter();
        let outer = inner_folds
            .iter()
            .map(|inner| {
                let refit = bases.next().expect("one basis per split");
                (refit, bases.by_ref().take(inner.len()).collect())
            })
            .collect();
        Ok(NestedCv { n_samples: x.nrows(), outer })
    }

    /// Number of samples the decompositions were made for.
    pub fn n_samples(&self) -> usize {
        self.n_samples
    }

    /// Number of outer folds.
    pub fn n_outer(&self) -> usize {
        self.outer.len()
    }

    /// Runs the nested cross-validation for every column of `y` (`[n_samples, n_voxels]`).
    pub fn fit<B: LinalgBackend>(
        &self,
        y: ArrayView2<'_, T>,
        spec: &SpectralSpec,
    ) -> Result<EncodingResult> {
        self.fit_keeping::<B>(y, spec, false).map(|(result, _)| result)
    }

    /// [`NestedCv::fit`], also returning each outer fold's held-out predictions
    /// (`[n_test, n_voxels]`, in the order of the fold's test samples).
    pub fn fit_predict<B: LinalgBackend>(
        &self,
        y: ArrayView2<'_, T>,
        spec: &SpectralSpec,
    ) -> Result<(EncodingResult, Vec<Array2<f64>>)> {
        self.fit_keeping::<B>(y, spec, true)
    }

    /// The outer test parts, in fold order.
    pub fn test_parts(&self) -> impl Iterator<Item = &[usize]> {
        self.outer.iter().map(|(refit, _)| refit.fold.test.as_slice())
    }

    fn fit_keeping<B: LinalgBackend>(
        &self,
        y: ArrayView2<'_, T>,
        spec: &SpectralSpec,
        keep: bool,
    ) -> Result<(EncodingResult, Vec<Array2<f64>>)> {
        if y.nrows() != self.n_samples {
            return Err(KernelError::Shape(format!(
                "brain data has {} samples, features have {}",
                y.nrows(),
                self.n_samples
            )));
        }
        let (n_outer, v) = (self.outer.len(), y.ncols());
        let mut fold_score = Array2::<f64>::zeros((n_outer, v));
        let mut fold_choice = Array2::<usize>::zeros((n_outer, v));
        let mut predictions: Vec<Array2<f64>> = match keep {
            true => self.test_parts().map(|t| Array2::zeros((t.len(), v))).collect(),
            false => Vec::new(),
        };
        for start in (0..v).step_by(VOXEL_BATCH) {
            let cols = start..(start + VOXEL_BATCH).min(v);
            let yb = y.slice(s![.., cols.clone()]);
            for (k, (refit, inner)) in self.outer.iter().enumerate() {
                let chosen = Self::choose::<B>(inner, yb, spec);
                let pred = refit_predict::<B, T>(refit, yb, spec, &chosen);
                let truth = yb.select(Axis(0), &refit.fold.test);
                let score = score_columns(spec.score, truth.view(), pred.view());
                fold_score.slice_mut(s![k, cols.clone()]).assign(&score);
                fold_choice.slice_mut(s![k, cols.clone()]).assign(&Array1::from(chosen));
                if keep {
                    predictions[k].slice_mut(s![.., cols.clone()]).assign(&pred);
                }
            }
        }
        let result = EncodingResult::from_choices(fold_score, &fold_choice, spec.grid());
        Ok((result, predictions))
    }

    /// Index into the grid minimising the mean inner-fold MSE of each voxel.
    fn choose<B: LinalgBackend>(
        inner: &[FoldBasis<T>],
        y: ArrayView2<'_, T>,
        spec: &SpectralSpec,
    ) -> Vec<usize> {
        let v = y.ncols();
        let mut mean_mse = Array2::<f64>::zeros((spec.grid.len(), v));
        for basis in inner {
            let (proj, mean) = basis.project::<B>(y);
            let test = &basis.fold.test;
            // each fold's MSE weighs 1 / n_folds, whatever its size
            let weight = 1.0 / (test.len() as f64 * inner.len() as f64);
            // test targets around the training mean, in f64, once for all grid values
            let mut centred = Array2::<f64>::zeros((test.len(), v));
            for (mut c, &i) in centred.rows_mut().into_iter().zip(test) {
                Zip::from(&mut c)
                    .and(y.row(i))
                    .and(&mean)
                    .for_each(|c, &x, &m| *c = x.as_f64() - m);
            }
            let mut sse = Array1::<f64>::zeros(v);
            basis.predict_grid::<B>(proj.view(), spec, |gi, pred| {
                sse.fill(0.0);
                for (c, p) in centred.rows().into_iter().zip(pred.rows()) {
                    Zip::from(&mut sse).and(c).and(p).for_each(|s, &c, &p| {
                        let e = c - p.as_f64();
                        *s += e * e;
                    });
                }
                mean_mse.row_mut(gi).scaled_add(weight, &sse);
            });
        }
        (0..v).map(|j| argmin_prefer_later(mean_mse.column(j).iter().copied())).collect()
    }
}

impl EncodingResult {
    /// The result from each outer fold's scores and grid choices (`[n_outer, n_voxels]`):
    /// mean score, and the value chosen most often (ties: the more regularised one, later in
    /// `grid`).
    pub(crate) fn from_choices(
        fold_score: Array2<f64>,
        fold_choice: &Array2<usize>,
        grid: &[f64],
    ) -> Self {
        let score = fold_score.mean_axis(Axis(0)).expect("at least one outer fold");
        let alpha = fold_choice
            .columns()
            .into_iter()
            .map(|c| grid[mode_prefer_larger(c.iter().copied(), grid.len())])
            .collect();
        let fold_alpha = fold_choice.mapv(|i| grid[i]);
        EncodingResult { score, alpha, fold_score, fold_alpha }
    }
}

/// Index of the smallest value; ties (and NaNs never beating anything) go to the later index.
pub(crate) fn argmin_prefer_later(values: impl Iterator<Item = f64>) -> usize {
    let mut best: Option<(usize, f64)> = None;
    for (i, x) in values.enumerate() {
        match best {
            // NaN on either side never wins (as `!(x <= b)`)
            Some((_, b))
                if matches!(x.partial_cmp(&b), None | Some(std::cmp::Ordering::Greater)) => {}
            _ => best = Some((i, x)),
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// `build(0..n)` on up to `threads` scoped threads, in order; the first error (by index) wins.
pub(crate) fn build_in_parallel<V: Send>(
    n: usize,
    threads: usize,
    build: impl Fn(usize) -> Result<V> + Sync,
) -> Result<Vec<V>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Result<V>>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    let work = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= n {
                break;
            }
            let built = build(i);
            *slots[i].lock().expect("slot lock") = Some(built);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.clamp(1, n.max(1)) {
            scope.spawn(work);
        }
        work();
    });
    slots
        .into_iter()
        .map(|slot| slot.into_inner().expect("slot lock").expect("every index was built"))
        .collect()
}

/// Refits on the outer training part with each voxel's grid value; held-out predictions,
/// `[n_test, n_voxels]`.
fn refit_predict<B: LinalgBackend, T: Real>(
    basis: &FoldBasis<T>,
    y: ArrayView2<'_, T>,
    spec: &SpectralSpec,
    chosen: &[usize],
) -> Array2<f64> {
    let (proj, mean) = basis.project::<B>(y);
    let test = &basis.fold.test;
    let mut pred = Array2::<f64>::zeros((test.len(), y.ncols()));
    let mut add = |cols: &[usize], p: &Array2<T>| {
        for (c, &j) in cols.iter().enumerate() {
            for r in 0..test.len() {
                pred[(r, j)] = mean[j] + p[(r, c)].as_f64();
            }
        }
    };
    match spec.model {
        SpectralModel::Ridge | SpectralModel::Pcr => {
            for (gi, &value) in spec.grid.iter().enumerate() {
                let cols: Vec<usize> = (0..chosen.len()).filter(|&j| chosen[j] == gi).collect();
                if cols.is_empty() {
                    continue;
                }
                let sub = proj.select(Axis(1), &cols);
                let mut p = Array2::<T>::zeros((test.len(), cols.len()));
                basis.predict::<B>(sub.view(), &basis.filter(spec.model, value), &mut p);
                add(&cols, &p);
            }
        }
        SpectralModel::Pls => {
            // each voxel's own count: one pass over the counts chosen, then one product
            let mut ks: Vec<usize> = chosen.iter().map(|&gi| spec.grid[gi] as usize).collect();
            let want = ks.clone();
            ks.sort_unstable();
            ks.dedup();
            let mut coefficients = Array2::<T>::zeros(proj.dim());
            basis.pls_coefficients(proj.view(), &ks, |i, j, c| {
                if ks[i] == want[j] {
                    let mut column = coefficients.column_mut(j);
                    column.iter_mut().zip(c).for_each(|(d, &c)| *d = T::from_f64(c));
                }
            });
            let mut p = Array2::<T>::zeros((test.len(), y.ncols()));
            B::gemm(basis.a.view(), coefficients.view(), p.view_mut());
            add(&(0..y.ncols()).collect::<Vec<_>>(), &p);
        }
    }
    pred
}

/// Most frequent index; ties go to the larger index (the more regularised value).
pub(crate) fn mode_prefer_larger(indices: impl Iterator<Item = usize>, n: usize) -> usize {
    let mut counts = vec![0usize; n];
    indices.for_each(|i| counts[i] += 1);
    let mut best = 0;
    for i in 1..n {
        if counts[i] >= counts[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cv::split;
    use crate::linalg::Backend;
    use crate::rng::Rng;

    /// Solves the normal equations `m x = b` of a naive reference fit (Gaussian elimination
    /// with partial pivoting, f64; tested in `linalg`).
    fn solve(m: Array2<f64>, b: Array1<f64>) -> Array1<f64> {
        crate::linalg::solve_dense(m, b, 0.0).expect("a nonsingular system")
    }

    /// Naive fits of one voxel on `train`, predictions on `test`: ridge by its normal
    /// equations; PCR as least squares on the first `k` principal component scores; PLS1 by
    /// NIPALS with deflation (scikit-learn's algorithm for one target).
    fn naive_predict(
        x: &Array2<f64>,
        y: &Array1<f64>,
        train: &[usize],
        test: &[usize],
        model: SpectralModel,
        value: f64,
        intercept: bool,
    ) -> Array1<f64> {
        let xt = x.select(Axis(0), train);
        let yt = y.select(Axis(0), train);
        let (xm, ym) = if intercept {
            (xt.mean_axis(Axis(0)).unwrap(), yt.mean().unwrap())
        } else {
            (Array1::zeros(x.ncols()), 0.0)
        };
        let xc = &xt - &xm;
        let yc = &yt - ym;
        let p = x.ncols();
        let beta = match model {
            SpectralModel::Ridge => {
                solve(xc.t().dot(&xc) + Array2::<f64>::eye(p) * value, xc.t().dot(&yc))
            }
            SpectralModel::Pcr => {
                let (lambda, v) = Backend::eigh(xc.t().dot(&xc).view()).unwrap();
                let mut order: Vec<usize> = (0..p).collect();
                order.sort_by(|&i, &j| lambda[j].total_cmp(&lambda[i]));
                let vk = v.select(Axis(1), &order[..value as usize]);
                let z = xc.dot(&vk);
                vk.dot(&solve(z.t().dot(&z), z.t().dot(&yc)))
            }
            SpectralModel::Pls => {
                let k = value as usize;
                let (mut xd, mut yd) = (xc.clone(), yc.clone());
                let (mut w_all, mut p_all, mut q_all) =
                    (Array2::<f64>::zeros((p, k)), Array2::<f64>::zeros((p, k)), vec![0.0; k]);
                for (a, q_a) in q_all.iter_mut().enumerate() {
                    let mut w = xd.t().dot(&yd);
                    w /= w.dot(&w).sqrt();
                    let t = xd.dot(&w);
                    let tt = t.dot(&t);
                    let loading = xd.t().dot(&t) / tt;
                    let q = yd.dot(&t) / tt;
                    for r in 0..xd.nrows() {
                        for c in 0..p {
                            xd[(r, c)] -= t[r] * loading[c];
                        }
                        yd[r] -= q * t[r];
                    }
                    w_all.column_mut(a).assign(&w);
                    p_all.column_mut(a).assign(&loading);
                    *q_a = q;
                }
                w_all.dot(&solve(p_all.t().dot(&w_all), Array1::from(q_all)))
            }
        };
        let xs = &x.select(Axis(0), test) - &xm;
        xs.dot(&beta) + ym
    }

    /// Naive nested CV for one voxel: returns (score per outer fold, alpha per outer fold).
    fn naive_nested(
        x: &Array2<f64>,
        y: &Array1<f64>,
        outer: &[Fold],
        inner: CvScheme,
        groups: Option<&[i64]>,
        spec: &SpectralSpec,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut scores = vec![];
        let mut chosen = vec![];
        for fold in outer {
            let inner_folds = split_within(inner, &fold.train, groups).unwrap();
            let mut best = (f64::INFINITY, 0.0);
            for &value in spec.grid() {
                let mse: f64 = inner_folds
                    .iter()
                    .map(|f| {
                        let p = naive_predict(
                            x,
                            y,
                            &f.train,
                            &f.test,
                            spec.model,
                            value,
                            spec.intercept,
                        );
                        f.test.iter().zip(&p).map(|(&i, q)| (y[i] - q).powi(2)).sum::<f64>()
                            / f.test.len() as f64
                    })
                    .sum::<f64>()
                    / inner_folds.len() as f64;
                if mse <= best.0 * (1.0 + 1e-12) {
                    best = (mse, value);
                }
            }
            let p =
                naive_predict(x, y, &fold.train, &fold.test, spec.model, best.1, spec.intercept);
            let truth = y.select(Axis(0), &fold.test).insert_axis(Axis(1));
            let s = score_columns(spec.score, truth.view(), p.insert_axis(Axis(1)).view())[0];
            scores.push(s);
            chosen.push(best.1);
        }
        (scores, chosen)
    }

    fn planted(rng: &mut Rng, n: usize, p: usize, v: usize) -> (Array2<f64>, Array2<f64>) {
        let x: Array2<f64> = rng.normal_array((n, p)) + 2.0;
        let w: Array2<f64> = rng.normal_array((p, v));
        let mut y = x.dot(&w) + 5.0;
        for (j, mut col) in y.columns_mut().into_iter().enumerate() {
            let noise = 0.3 * (j as f64 + 1.0).powi(2);
            col.iter_mut().for_each(|e| *e += noise * rng.normal());
        }
        (x, y)
    }

    #[allow(clippy::too_many_arguments)] // a test helper: every CV knob is a parameter
    fn check_against_naive(
        n: usize,
        p: usize,
        v: usize,
        outer_k: usize,
        inner: CvScheme,
        groups: Option<Vec<i64>>,
        spec: &SpectralSpec,
    ) {
        let mut rng = Rng::new((n * 1000 + p * 10 + v) as u64);
        let (x, y) = planted(&mut rng, n, p, v);
        let intercept = spec.intercept;
        let outer = match &groups {
            Some(g) => split(CvScheme::LeaveOneGroupOut, n, Some(g)).unwrap(),
            None => split(CvScheme::KFold { k: outer_k }, n, None).unwrap(),
        };
        let g = groups.as_deref();
        let cv = NestedCv::new::<Backend>(x.view(), &outer, inner, g, intercept).unwrap();
        let got = cv.fit::<Backend>(y.view(), spec).unwrap();
        for j in 0..v {
            let (s, a) = naive_nested(&x, &y.column(j).to_owned(), &outer, inner, g, spec);
            for k in 0..outer.len() {
                assert_eq!(got.fold_alpha[(k, j)], a[k], "alpha, voxel {j} fold {k} ({n}x{p})");
                let d = got.fold_score[(k, j)] - s[k];
                assert!(
                    d.abs() < 1e-8 || (s[k].is_nan() && got.fold_score[(k, j)].is_nan()),
                    "score {d} voxel {j} fold {k} ({n}x{p})"
                );
            }
        }
        // f32 data: same alphas where the choice is not a near-tie, scores close
        let cv32 =
            NestedCv::new::<Backend>(x.mapv(|e| e as f32).view(), &outer, inner, g, intercept)
                .unwrap();
        let got32 = cv32.fit::<Backend>(y.mapv(|e| e as f32).view(), spec).unwrap();
        let max_diff = (&got32.score - &got.score).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(max_diff < 1e-3, "f32 scores differ by {max_diff}");
    }

    fn ridge(intercept: bool, score: ScoreKind) -> SpectralSpec {
        SpectralSpec::ridge(vec![1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4], intercept, score).unwrap()
    }

    fn components(model: SpectralModel, ks: &[usize], intercept: bool) -> SpectralSpec {
        SpectralSpec::components(model, ks.to_vec(), intercept, ScoreKind::R2).unwrap()
    }

    #[test]
    fn tall_kfold_matches_normal_equations() {
        let k4 = CvScheme::KFold { k: 4 };
        check_against_naive(60, 6, 5, 5, k4, None, &ridge(true, ScoreKind::R2));
        let k5 = CvScheme::KFold { k: 5 };
        check_against_naive(47, 9, 4, 3, k5, None, &ridge(false, ScoreKind::Pearson));
    }

    #[test]
    fn wide_uses_dual_form_and_matches() {
        let k3 = CvScheme::KFold { k: 3 };
        check_against_naive(30, 80, 4, 5, k3, None, &ridge(true, ScoreKind::R2));
        let k4 = CvScheme::KFold { k: 4 };
        check_against_naive(24, 24, 3, 4, k4, None, &ridge(true, ScoreKind::Pearson));
    }

    #[test]
    fn groups_and_one_sample_inner_folds() {
        let groups: Vec<i64> = (0..36).map(|i| i / 9).collect();
        let logo = CvScheme::LeaveOneGroupOut;
        check_against_naive(36, 5, 3, 0, logo, Some(groups), &ridge(true, ScoreKind::R2));
        // 10 samples, outer 5-fold -> 8 training samples, inner 8-fold -> one-sample folds
        let k8 = CvScheme::KFold { k: 8 };
        check_against_naive(10, 3, 2, 5, k8, None, &ridge(true, ScoreKind::R2));
    }

    #[test]
    fn pcr_matches_least_squares_on_principal_components() {
        let (k4, k3) = (CvScheme::KFold { k: 4 }, CvScheme::KFold { k: 3 });
        let pcr = SpectralModel::Pcr;
        check_against_naive(60, 6, 5, 5, k4, None, &components(pcr, &[1, 2, 4, 6], true));
        check_against_naive(47, 9, 4, 3, k4, None, &components(pcr, &[2, 5, 9], false));
        // dual: 16 training samples in the inner folds, rank 15 after centring
        check_against_naive(30, 80, 4, 5, k3, None, &components(pcr, &[1, 3, 8, 15], true));
        let groups: Vec<i64> = (0..36).map(|i| i / 9).collect();
        let logo = CvScheme::LeaveOneGroupOut;
        check_against_naive(36, 5, 3, 0, logo, Some(groups), &components(pcr, &[1, 3], true));
    }

    #[test]
    fn pls_matches_nipals() {
        let (k4, k3) = (CvScheme::KFold { k: 4 }, CvScheme::KFold { k: 3 });
        let pls = SpectralModel::Pls;
        check_against_naive(60, 6, 5, 5, k4, None, &components(pls, &[1, 2, 4, 6], true));
        check_against_naive(47, 9, 4, 3, k4, None, &components(pls, &[2, 5, 9], false));
        check_against_naive(30, 80, 4, 5, k3, None, &components(pls, &[1, 3, 8, 12], true));
        check_against_naive(80, 40, 3, 4, k4, None, &components(pls, &[1, 2, 3, 5, 10, 25], true));
        let groups: Vec<i64> = (0..36).map(|i| i / 9).collect();
        let logo = CvScheme::LeaveOneGroupOut;
        check_against_naive(36, 5, 3, 0, logo, Some(groups), &components(pls, &[1, 3], true));
    }

    #[test]
    fn pls_and_pcr_with_every_component_are_least_squares() {
        // with as many components as directions, both are the ordinary least-squares fit,
        // i.e. ridge as alpha -> 0; PLS asked for more keeps that fit
        let mut rng = Rng::new(11);
        let (x, y) = planted(&mut rng, 40, 5, 3);
        let outer = split(CvScheme::KFold { k: 4 }, 40, None).unwrap();
        let cv = NestedCv::new::<Backend>(x.view(), &outer, CvScheme::KFold { k: 3 }, None, true)
            .unwrap();
        let fit = |spec: SpectralSpec| cv.fit::<Backend>(y.view(), &spec).unwrap().fold_score;
        let least_squares = fit(SpectralSpec::ridge(vec![1e-9], true, ScoreKind::R2).unwrap());
        for spec in [
            components(SpectralModel::Pcr, &[5], true),
            components(SpectralModel::Pls, &[5], true),
            components(SpectralModel::Pls, &[9], true),
        ] {
            let d = (&fit(spec) - &least_squares).iter().fold(0.0f64, |m, d| m.max(d.abs()));
            assert!(d < 1e-9, "{d}");
        }
    }

    #[test]
    fn constant_voxel_gets_nan_score_and_largest_alpha() {
        let mut rng = Rng::new(3);
        let (x, mut y) = planted(&mut rng, 40, 4, 3);
        y.column_mut(1).fill(7.0);
        let spec = SpectralSpec::ridge(vec![10.0, 0.1, 1.0], true, ScoreKind::R2).unwrap();
        let outer = split(CvScheme::KFold { k: 4 }, 40, None).unwrap();
        let cv = NestedCv::new::<Backend>(x.view(), &outer, CvScheme::KFold { k: 3 }, None, true)
            .unwrap();
        let r = cv.fit::<Backend>(y.view(), &spec).unwrap();
        assert!(r.score[1].is_nan());
        assert_eq!(r.alpha[1], 10.0);
        assert!(r.score[0].is_finite() && r.score[0] > 0.5);
    }

    #[test]
    fn parallel_builds_keep_their_order_and_their_first_error() {
        for threads in [1, 2, 5, 64] {
            let got = build_in_parallel(7, threads, |i| Ok(i * i)).unwrap();
            assert_eq!(got, vec![0, 1, 4, 9, 16, 25, 36]);
            let err = build_in_parallel(7, threads, |i| {
                if i % 3 == 2 { Err(KernelError::Parameter(format!("{i}"))) } else { Ok(i) }
            });
            assert!(matches!(err, Err(KernelError::Parameter(m)) if m == "2"));
        }
        assert!(build_in_parallel(0, 4, Ok).unwrap().is_empty());
    }

    #[test]
    fn results_do_not_depend_on_chunking() {
        let mut rng = Rng::new(5);
        let (x, y) = planted(&mut rng, 50, 7, 2 * VOXEL_BATCH + 17);
        let spec = SpectralSpec::ridge(vec![0.1, 1.0, 10.0], true, ScoreKind::R2).unwrap();
        let outer = split(CvScheme::KFold { k: 5 }, 50, None).unwrap();
        let cv = NestedCv::new::<Backend>(x.view(), &outer, CvScheme::KFold { k: 5 }, None, true)
            .unwrap();
        let whole = cv.fit::<Backend>(y.view(), &spec).unwrap();
        let part = cv.fit::<Backend>(y.slice(s![.., VOXEL_BATCH..]), &spec).unwrap();
        assert_eq!(whole.score.slice(s![VOXEL_BATCH..]), part.score);
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(SpectralSpec::ridge(vec![], true, ScoreKind::R2).is_err());
        assert!(SpectralSpec::ridge(vec![1.0, -1.0], true, ScoreKind::R2).is_err());
        assert!(SpectralSpec::ridge(vec![f64::NAN], true, ScoreKind::R2).is_err());
        let pls = SpectralModel::Pls;
        assert!(SpectralSpec::components(pls, vec![], true, ScoreKind::R2).is_err());
        assert!(SpectralSpec::components(pls, vec![2, 0], true, ScoreKind::R2).is_err());
        assert!(
            SpectralSpec::components(SpectralModel::Ridge, vec![2], true, ScoreKind::R2).is_err()
        );
        let grid = SpectralSpec::components(pls, vec![2, 10, 2, 5], true, ScoreKind::R2).unwrap();
        assert_eq!(grid.grid(), [10.0, 5.0, 2.0], "least regularised first");
        let x = Array2::<f64>::zeros((10, 2));
        let outer = split(CvScheme::KFold { k: 2 }, 10, None).unwrap();
        let cv = NestedCv::new::<Backend>(x.view(), &outer, CvScheme::KFold { k: 2 }, None, true)
            .unwrap();
        let spec = SpectralSpec::ridge(vec![1.0], true, ScoreKind::R2).unwrap();
        assert!(cv.fit::<Backend>(Array2::<f64>::zeros((9, 2)).view(), &spec).is_err());
    }
}
