//! Voxelwise ridge regression with nested cross-validation and a per-voxel alpha.
//!
//! For every split, the training features are decomposed **once** and every alpha is scored from
//! that decomposition; no refit per alpha. With `Xc` the (centred) training features:
//!
//! * primal (`n_train >= p`): `Xcᵀ Xc = V Λ Vᵀ`, `W = Xc V`, `A = X_test V`;
//! * dual (`n_train < p`, wide layers): `Xc Xcᵀ = U Λ Uᵀ`, `W = U`, `A = X_test Xcᵀ U`;
//!
//! and in both cases the prediction for alpha `α` is `A · diag(1 / (λ + α)) · (Wᵀ Yc)`, so one
//! code path serves both regimes. Gram matrices and eigendecompositions are computed in f64
//! whatever the data's type; `W`, `A` and the big products with the voxel data run in the data's
//! type (f32 GEMMs for f32 data), and squared errors, means and scores accumulate in f64.
//!
//! Inside each outer training part, an inner cross-validation picks alpha per voxel: the mean
//! over inner folds of each fold's mean squared error, minimised, ties going to the larger alpha
//! (himalaya's rule). Each fit centres X and Y on its own training part when `intercept` is on.
//! The model is then refit on the whole outer training part with each voxel's alpha and scored
//! on the outer test part.
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

/// Checked ridge parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeSpec {
    alphas: Vec<f64>,
    /// Centre X and Y on each training part (himalaya's and scikit-learn's `fit_intercept`).
    pub intercept: bool,
    /// Held-out score to report.
    pub score: ScoreKind,
}

impl RidgeSpec {
    /// Checks the alpha grid (non-empty, finite, positive) and sorts it ascending.
    pub fn new(mut alphas: Vec<f64>, intercept: bool, score: ScoreKind) -> Result<Self> {
        if alphas.is_empty() {
            return Err(KernelError::Parameter("the alpha grid is empty".into()));
        }
        if let Some(a) = alphas.iter().find(|a| !(a.is_finite() && **a > 0.0)) {
            return Err(KernelError::Parameter(format!("alphas must be finite and > 0, got {a}")));
        }
        alphas.sort_by(f64::total_cmp);
        alphas.dedup();
        Ok(RidgeSpec { alphas, intercept, score })
    }

    /// The alpha grid, ascending.
    pub fn alphas(&self) -> &[f64] {
        &self.alphas
    }
}

/// The decomposition of one training part's features, projected onto its test part.
#[derive(Debug, Clone)]
pub struct FoldBasis<T> {
    fold: Fold,
    intercept: bool,
    eigenvalues: Array1<f64>,
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
        let (eigenvalues, w, a) = if n_train >= p {
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
        Ok(FoldBasis {
            fold: fold.clone(),
            intercept,
            eigenvalues: eigenvalues.mapv(|l| l.max(0.0)),
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

    /// Test-part predictions (without the mean) for one alpha: `(A · diag(1/(λ+α))) · proj`.
    /// The shrinkage scales the columns of `A` (`n_test × rank`), not the rows of `proj`
    /// (`rank × n_voxels`, the larger one): one small copy per alpha instead of a large one.
    fn predict<B: LinalgBackend>(&self, proj: ArrayView2<'_, T>, alpha: f64, out: &mut Array2<T>) {
        let mut scaled = self.a.clone();
        for (mut column, &l) in scaled.axis_iter_mut(Axis(1)).zip(&self.eigenvalues) {
            column *= T::from_f64(1.0 / (l + alpha));
        }
        B::gemm(scaled.view(), proj, out.view_mut());
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
    /// Alpha chosen most often across outer folds (ties: the larger), `[n_voxels]`.
    pub alpha: Array1<f64>,
    /// Held-out score per outer fold, `[n_outer, n_voxels]`.
    pub fold_score: Array2<f64>,
    /// Alpha chosen in each outer fold, `[n_outer, n_voxels]`.
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
        spec: &RidgeSpec,
    ) -> Result<EncodingResult> {
        if y.nrows() != self.n_samples {
            return Err(KernelError::Shape(format!(
                "brain data has {} samples, features have {}",
                y.nrows(),
                self.n_samples
            )));
        }
        let (n_outer, v) = (self.outer.len(), y.ncols());
        let mut fold_score = Array2::<f64>::zeros((n_outer, v));
        let mut fold_alpha_index = Array2::<usize>::zeros((n_outer, v));
        for start in (0..v).step_by(VOXEL_BATCH) {
            let cols = start..(start + VOXEL_BATCH).min(v);
            let yb = y.slice(s![.., cols.clone()]);
            for (k, (refit, inner)) in self.outer.iter().enumerate() {
                let chosen = Self::choose_alphas::<B>(inner, yb, spec);
                let score = refit_and_score::<B, T>(refit, yb, spec, &chosen);
                fold_score.slice_mut(s![k, cols.clone()]).assign(&score);
                fold_alpha_index.slice_mut(s![k, cols.clone()]).assign(&Array1::from(chosen));
            }
        }
        let alphas = spec.alphas();
        let score = fold_score.mean_axis(Axis(0)).expect("at least one outer fold");
        let alpha = fold_alpha_index
            .columns()
            .into_iter()
            .map(|c| alphas[mode_prefer_larger(c.iter().copied(), alphas.len())])
            .collect();
        let fold_alpha = fold_alpha_index.mapv(|i| alphas[i]);
        Ok(EncodingResult { score, alpha, fold_score, fold_alpha })
    }

    /// Index into the alpha grid minimising the mean inner-fold MSE of each voxel.
    fn choose_alphas<B: LinalgBackend>(
        inner: &[FoldBasis<T>],
        y: ArrayView2<'_, T>,
        spec: &RidgeSpec,
    ) -> Vec<usize> {
        let (n_alpha, v) = (spec.alphas().len(), y.ncols());
        let mut mean_mse = Array2::<f64>::zeros((n_alpha, v));
        for basis in inner {
            let (proj, mean) = basis.project::<B>(y);
            let test = &basis.fold.test;
            // each fold's MSE weighs 1 / n_folds, whatever its size
            let weight = 1.0 / (test.len() as f64 * inner.len() as f64);
            // test targets around the training mean, in f64, once for all alphas
            let mut centred = Array2::<f64>::zeros((test.len(), v));
            for (mut c, &i) in centred.rows_mut().into_iter().zip(test) {
                Zip::from(&mut c)
                    .and(y.row(i))
                    .and(&mean)
                    .for_each(|c, &x, &m| *c = x.as_f64() - m);
            }
            let mut pred = Array2::<T>::zeros((test.len(), v));
            let mut sse = Array1::<f64>::zeros(v);
            for (ai, &alpha) in spec.alphas().iter().enumerate() {
                basis.predict::<B>(proj.view(), alpha, &mut pred);
                sse.fill(0.0);
                for (c, p) in centred.rows().into_iter().zip(pred.rows()) {
                    Zip::from(&mut sse).and(c).and(p).for_each(|s, &c, &p| {
                        let e = c - p.as_f64();
                        *s += e * e;
                    });
                }
                mean_mse.row_mut(ai).scaled_add(weight, &sse);
            }
        }
        (0..v)
            .map(|j| {
                let mut best = 0;
                for ai in 1..n_alpha {
                    // alphas ascend, so `<=` hands ties to the larger alpha
                    if mean_mse[(ai, j)] <= mean_mse[(best, j)] {
                        best = ai;
                    }
                }
                best
            })
            .collect()
    }
}

/// `build(0..n)` on up to `threads` scoped threads, in order; the first error (by index) wins.
fn build_in_parallel<V: Send>(
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

/// Refits on the outer training part with each voxel's alpha; held-out score per voxel.
fn refit_and_score<B: LinalgBackend, T: Real>(
    basis: &FoldBasis<T>,
    y: ArrayView2<'_, T>,
    spec: &RidgeSpec,
    chosen: &[usize],
) -> Array1<f64> {
    let (proj, mean) = basis.project::<B>(y);
    let test = &basis.fold.test;
    let mut pred = Array2::<f64>::zeros((test.len(), y.ncols()));
    for (ai, &alpha) in spec.alphas().iter().enumerate() {
        let cols: Vec<usize> = (0..chosen.len()).filter(|&j| chosen[j] == ai).collect();
        if cols.is_empty() {
            continue;
        }
        let sub = proj.select(Axis(1), &cols);
        let mut p = Array2::<T>::zeros((test.len(), cols.len()));
        basis.predict::<B>(sub.view(), alpha, &mut p);
        for (c, &j) in cols.iter().enumerate() {
            for r in 0..test.len() {
                pred[(r, j)] = mean[j] + p[(r, c)].as_f64();
            }
        }
    }
    let truth = y.select(Axis(0), test);
    score_columns(spec.score, truth.view(), pred.view())
}

/// Most frequent index; ties go to the larger index (the larger alpha).
fn mode_prefer_larger(indices: impl Iterator<Item = usize>, n: usize) -> usize {
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

    /// Solves `(XᵀX + αI) β = Xᵀy` by Gaussian elimination with partial pivoting: obviously
    /// correct, slow, f64.
    fn solve(mut m: Array2<f64>, mut b: Array1<f64>) -> Array1<f64> {
        let n = b.len();
        for c in 0..n {
            let p = (c..n).max_by(|&i, &j| m[(i, c)].abs().total_cmp(&m[(j, c)].abs())).unwrap();
            for k in 0..n {
                m.swap((c, k), (p, k));
            }
            b.swap(c, p);
            for r in c + 1..n {
                let f = m[(r, c)] / m[(c, c)];
                for k in c..n {
                    m[(r, k)] -= f * m[(c, k)];
                }
                b[r] -= f * b[c];
            }
        }
        let mut x = Array1::<f64>::zeros(n);
        for r in (0..n).rev() {
            let s: f64 = (r + 1..n).map(|k| m[(r, k)] * x[k]).sum();
            x[r] = (b[r] - s) / m[(r, r)];
        }
        x
    }

    /// Naive ridge: explicit normal equations per voxel and alpha; predictions on `test`.
    fn naive_predict(
        x: &Array2<f64>,
        y: &Array1<f64>,
        train: &[usize],
        test: &[usize],
        alpha: f64,
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
        let gram = xc.t().dot(&xc) + Array2::<f64>::eye(x.ncols()) * alpha;
        let beta = solve(gram, xc.t().dot(&yc));
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
        spec: &RidgeSpec,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut scores = vec![];
        let mut chosen = vec![];
        for fold in outer {
            let inner_folds = split_within(inner, &fold.train, groups).unwrap();
            let mut best = (f64::INFINITY, 0.0);
            for &alpha in spec.alphas() {
                let mse: f64 = inner_folds
                    .iter()
                    .map(|f| {
                        let p = naive_predict(x, y, &f.train, &f.test, alpha, spec.intercept);
                        f.test.iter().zip(&p).map(|(&i, q)| (y[i] - q).powi(2)).sum::<f64>()
                            / f.test.len() as f64
                    })
                    .sum::<f64>()
                    / inner_folds.len() as f64;
                if mse <= best.0 * (1.0 + 1e-12) {
                    best = (mse, alpha);
                }
            }
            let p = naive_predict(x, y, &fold.train, &fold.test, best.1, spec.intercept);
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
        intercept: bool,
        score: ScoreKind,
    ) {
        let mut rng = Rng::new((n * 1000 + p * 10 + v) as u64);
        let (x, y) = planted(&mut rng, n, p, v);
        let spec =
            RidgeSpec::new(vec![1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4], intercept, score).unwrap();
        let outer = match &groups {
            Some(g) => split(CvScheme::LeaveOneGroupOut, n, Some(g)).unwrap(),
            None => split(CvScheme::KFold { k: outer_k }, n, None).unwrap(),
        };
        let g = groups.as_deref();
        let cv = NestedCv::new::<Backend>(x.view(), &outer, inner, g, intercept).unwrap();
        let got = cv.fit::<Backend>(y.view(), &spec).unwrap();
        for j in 0..v {
            let (s, a) = naive_nested(&x, &y.column(j).to_owned(), &outer, inner, g, &spec);
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
        let got32 = cv32.fit::<Backend>(y.mapv(|e| e as f32).view(), &spec).unwrap();
        let max_diff = (&got32.score - &got.score).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(max_diff < 1e-3, "f32 scores differ by {max_diff}");
    }

    #[test]
    fn tall_kfold_matches_normal_equations() {
        check_against_naive(60, 6, 5, 5, CvScheme::KFold { k: 4 }, None, true, ScoreKind::R2);
        check_against_naive(47, 9, 4, 3, CvScheme::KFold { k: 5 }, None, false, ScoreKind::Pearson);
    }

    #[test]
    fn wide_uses_dual_form_and_matches() {
        check_against_naive(30, 80, 4, 5, CvScheme::KFold { k: 3 }, None, true, ScoreKind::R2);
        check_against_naive(24, 24, 3, 4, CvScheme::KFold { k: 4 }, None, true, ScoreKind::Pearson);
    }

    #[test]
    fn groups_and_one_sample_inner_folds() {
        let groups: Vec<i64> = (0..36).map(|i| i / 9).collect();
        check_against_naive(
            36,
            5,
            3,
            0,
            CvScheme::LeaveOneGroupOut,
            Some(groups),
            true,
            ScoreKind::R2,
        );
        // 10 samples, outer 5-fold -> 8 training samples, inner 8-fold -> one-sample folds
        check_against_naive(10, 3, 2, 5, CvScheme::KFold { k: 8 }, None, true, ScoreKind::R2);
    }

    #[test]
    fn constant_voxel_gets_nan_score_and_largest_alpha() {
        let mut rng = Rng::new(3);
        let (x, mut y) = planted(&mut rng, 40, 4, 3);
        y.column_mut(1).fill(7.0);
        let spec = RidgeSpec::new(vec![10.0, 0.1, 1.0], true, ScoreKind::R2).unwrap();
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
        let spec = RidgeSpec::new(vec![0.1, 1.0, 10.0], true, ScoreKind::R2).unwrap();
        let outer = split(CvScheme::KFold { k: 5 }, 50, None).unwrap();
        let cv = NestedCv::new::<Backend>(x.view(), &outer, CvScheme::KFold { k: 5 }, None, true)
            .unwrap();
        let whole = cv.fit::<Backend>(y.view(), &spec).unwrap();
        let part = cv.fit::<Backend>(y.slice(s![.., VOXEL_BATCH..]), &spec).unwrap();
        assert_eq!(whole.score.slice(s![VOXEL_BATCH..]), part.score);
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(RidgeSpec::new(vec![], true, ScoreKind::R2).is_err());
        assert!(RidgeSpec::new(vec![1.0, -1.0], true, ScoreKind::R2).is_err());
        assert!(RidgeSpec::new(vec![f64::NAN], true, ScoreKind::R2).is_err());
        let x = Array2::<f64>::zeros((10, 2));
        let outer = split(CvScheme::KFold { k: 2 }, 10, None).unwrap();
        let cv = NestedCv::new::<Backend>(x.view(), &outer, CvScheme::KFold { k: 2 }, None, true)
            .unwrap();
        let spec = RidgeSpec::new(vec![1.0], true, ScoreKind::R2).unwrap();
        assert!(cv.fit::<Backend>(Array2::<f64>::zeros((9, 2)).view(), &spec).is_err());
    }
}
