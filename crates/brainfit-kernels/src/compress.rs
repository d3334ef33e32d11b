//! Compression of wide network layers: incremental PCA and seeded random projections.
//!
//! A deep network's layer can have ~800,000 units, recorded for thousands of images: the whole
//! `[n_images, n_units]` matrix does not fit in a worker's memory, nor does a
//! `[n_components, n_units]` component matrix of a large PCA. Everything here is therefore
//! expressed over *column chunks* (ranges of units) that the caller streams from storage or
//! scratch files: the kernels never see more than `[rows, chunk]` of data and `[k, chunk]` of
//! components at a time, and they do no I/O themselves.
//!
//! * [`IncrementalPca`] reproduces scikit-learn's `IncrementalPCA` (`whiten=False`) number for
//!   number: the same `partial_fit` sequence (running mean and variance, the stacked matrix of
//!   the previous basis, the centred batch and the mean correction, `svd_flip` signs), with the
//!   stacked matrix's SVD computed from its Gram matrix accumulated over column chunks and a
//!   second pass that writes the new components chunk by chunk to a [`ComponentStore`].
//! * [`RandomProjection`] (Johnson–Lindenstrauss) never stores its matrix: entry `(i, j)` is a
//!   pure function of `(seed, i, j)`, generated from one random stream per unit, so any chunking
//!   of the units gives the same projection.

use crate::linalg::LinalgBackend;
use crate::rng::Rng;
use crate::{KernelError, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis, s};
use std::ops::Range;

/// A kept singular value at most this fraction of the largest leaves its component undetermined
/// (the Gram matrix cannot resolve it): it is set to zero, which changes nothing in later
/// partial fits (there it is weighted by its singular value), but a model whose last partial
/// fit left one is refused where it is used ([`IncrementalPca::unresolved`]). A first batch
/// of exactly `n_components` rows has one such component (centring removes a dimension).
pub const RANK_TOLERANCE: f64 = 1e-6;

/// Where the components live between partial fits: memory for small layers
/// ([`MemoryComponents`]), a scratch file for big ones (the caller's implementation).
///
/// The rows are the current components *as computed* (before [`IncrementalPca::signs`] is
/// applied), the columns are units; [`IncrementalPca::partial_fit`] reads and writes them in
/// the column chunks of [`IncrementalPca::chunk`], each chunk read before it is overwritten.
pub trait ComponentStore {
    /// The store's error; kernel errors (shapes, parameters) convert into it.
    type Error: From<KernelError>;

    /// The current components (`[n_components, cols.len()]`, unflipped) for the units `cols`.
    fn read(&mut self, cols: Range<usize>) -> std::result::Result<Array2<f64>, Self::Error>;

    /// Replaces the components for the units `cols` by `values` (`[n_components, cols.len()]`).
    fn write(
        &mut self,
        cols: Range<usize>,
        values: ArrayView2<'_, f64>,
    ) -> std::result::Result<(), Self::Error>;
}

/// Components held in memory: for tests and layers small enough to hold `[k, n_units]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryComponents {
    values: Array2<f64>,
}

impl MemoryComponents {
    /// Zero components `[n_components, n_features]`, before the first partial fit.
    pub fn new(n_components: usize, n_features: usize) -> Self {
        MemoryComponents { values: Array2::zeros((n_components, n_features)) }
    }

    /// A store holding `values` (`[n_components, n_features]`, unflipped), e.g. a fitted
    /// model's components read back from disk.
    pub fn from_values(values: Array2<f64>) -> Self {
        MemoryComponents { values }
    }

    /// The stored components, unflipped (see [`IncrementalPca::components`] for the signed ones).
    pub fn values(&self) -> ArrayView2<'_, f64> {
        self.values.view()
    }

    fn check_cols(&self, cols: &Range<usize>) -> Result<()> {
        if cols.start > cols.end || cols.end > self.values.ncols() {
            return Err(KernelError::Shape(format!(
                "columns {cols:?} outside the {} stored units",
                self.values.ncols()
            )));
        }
        Ok(())
    }
}

impl ComponentStore for MemoryComponents {
    type Error = KernelError;

    fn read(&mut self, cols: Range<usize>) -> Result<Array2<f64>> {
        self.check_cols(&cols)?;
        Ok(self.values.slice(s![.., cols]).to_owned())
    }

    fn write(&mut self, cols: Range<usize>, values: ArrayView2<'_, f64>) -> Result<()> {
        self.check_cols(&cols)?;
        if values.dim() != (self.values.nrows(), cols.len()) {
            return Err(KernelError::Shape(format!(
                "writing a {:?} block into {} components x columns {cols:?}",
                values.dim(),
                self.values.nrows()
            )));
        }
        self.values.slice_mut(s![.., cols]).assign(&values);
        Ok(())
    }
}

/// scikit-learn's `gen_batches(n, batch_size, min_batch_size)`: the row ranges
/// `IncrementalPCA.fit` passes to `partial_fit` (`min_batch_size = n_components`), batches of
/// `batch_size` rows with a rest shorter than `min_batch_size` merged into the last one.
///
/// # Errors
/// [`KernelError::Parameter`] if `batch_size` is 0.
pub fn batches(n: usize, batch_size: usize, min_batch_size: usize) -> Result<Vec<Range<usize>>> {
    if batch_size == 0 {
        return Err(KernelError::Parameter("batch_size must be at least 1".into()));
    }
    let mut out = Vec::new();
    let mut start = 0;
    for _ in 0..n / batch_size {
        let end = start + batch_size;
        if end + min_batch_size > n {
            break; // sklearn `continue`s, but start and end no longer change
        }
        out.push(start..end);
        start = end;
    }
    if start < n {
        out.push(start..n);
    }
    Ok(out)
}

/// The column chunks `[0, chunk)`, `[chunk, 2 chunk)`, ... of `0..n` (`chunk >= 1`).
fn column_chunks(n: usize, chunk: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n).step_by(chunk.max(1)).map(move |start| start..(start + chunk.max(1)).min(n))
}

/// Calls `batch` for the columns `cols` and checks the block: `[n_rows, cols.len()]`, finite.
fn fetch<E: From<KernelError>>(
    batch: &mut impl FnMut(Range<usize>) -> std::result::Result<Array2<f64>, E>,
    cols: Range<usize>,
    n_rows: usize,
) -> std::result::Result<Array2<f64>, E> {
    let x = batch(cols.clone())?;
    if x.dim() != (n_rows, cols.len()) {
        return Err(KernelError::Shape(format!(
            "the data for columns {cols:?} is {:?}, expected ({n_rows}, {})",
            x.dim(),
            cols.len()
        ))
        .into());
    }
    if let Some(((i, j), v)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(KernelError::Parameter(format!(
            "non-finite value {v} in the data at row {i}, column {}",
            cols.start + j
        ))
        .into());
    }
    Ok(x)
}

/// Reads the components of `cols` from the store and checks their shape.
fn read_components<S: ComponentStore>(
    store: &mut S,
    cols: Range<usize>,
    k: usize,
) -> std::result::Result<Array2<f64>, S::Error> {
    let c = store.read(cols.clone())?;
    if c.dim() != (k, cols.len()) {
        return Err(KernelError::Shape(format!(
            "the component store returned {:?} for columns {cols:?}, expected ({k}, {})",
            c.dim(),
            cols.len()
        ))
        .into());
    }
    Ok(c)
}

/// Column sums of a block, added row by row (numpy's order for `X.sum(axis=0)`).
fn column_sums(x: &Array2<f64>) -> Array1<f64> {
    let mut sums = Array1::<f64>::zeros(x.ncols());
    for row in x.rows() {
        sums += &row;
    }
    sums
}

/// scikit-learn's `IncrementalPCA` (`whiten=False`), fitted batch by batch and streamed over
/// column chunks.
///
/// The fields are scikit-learn's fitted attributes (`n_samples_seen_`, `mean_`, `var_`,
/// `singular_values_`, `explained_variance_`, `explained_variance_ratio_`,
/// `noise_variance_`); `components_` lives in a [`ComponentStore`], unflipped, and
/// [`Self::signs`] holds `svd_flip`'s signs, applied by [`Self::components`] and
/// [`Self::transform`]. The sign of a stored component does not change the next partial fit's
/// result (it flips a row of the stacked matrix and the matching entry of its left singular
/// vectors together).
#[derive(Debug, Clone, PartialEq)]
pub struct IncrementalPca {
    /// Number of components `k`.
    pub n_components: usize,
    /// Number of units (features) `p`.
    pub n_features: usize,
    /// Rows fitted so far (0 before the first partial fit).
    pub n_samples_seen: usize,
    /// Per-unit mean of the rows seen, `[p]`.
    pub mean: Array1<f64>,
    /// Per-unit population variance (divided by `n`) of the rows seen, `[p]`.
    pub var: Array1<f64>,
    /// Singular values of the last stacked matrix, `[k]`, descending.
    pub singular_values: Array1<f64>,
    /// `singular_values² / (n_samples_seen - 1)`, `[k]`.
    pub explained_variance: Array1<f64>,
    /// `singular_values² / (n_samples_seen · Σ var)`, `[k]`.
    pub explained_variance_ratio: Array1<f64>,
    /// Mean explained variance of the discarded singular values of the last stacked matrix
    /// (0 where `k` equals the last batch's rows or `p`, as scikit-learn sets it).
    pub noise_variance: f64,
    /// `svd_flip`'s sign (±1) of each stored component, `[k]`: the component row's entry of
    /// largest magnitude (first one on ties) is made positive.
    pub signs: Array1<f64>,
    /// Width of the column chunks the data and the components are streamed in.
    pub chunk: usize,
    /// Components the last partial fit could not determine (singular value at most
    /// [`RANK_TOLERANCE`] of the largest: the data seen have too low a rank); a model with any
    /// is refused by [`IncrementalPca::transform`] and [`IncrementalPca::components`].
    pub unresolved: usize,
}

impl IncrementalPca {
    /// An unfitted model of `n_components` components over `n_features` units, streamed in
    /// column chunks of `chunk_width` units.
    ///
    /// # Errors
    /// [`KernelError::Parameter`] unless `1 <= n_components <= n_features` and
    /// `chunk_width >= 1`.
    pub fn new(n_components: usize, n_features: usize, chunk_width: usize) -> Result<Self> {
        if n_components == 0 {
            return Err(KernelError::Parameter("n_components must be at least 1".into()));
        }
        if n_components > n_features {
            return Err(KernelError::Parameter(format!(
                "n_components={n_components} exceeds the {n_features} features"
            )));
        }
        if chunk_width == 0 {
            return Err(KernelError::Parameter("the chunk width must be at least 1".into()));
        }
        Ok(IncrementalPca {
            n_components,
            n_features,
            n_samples_seen: 0,
            mean: Array1::zeros(n_features),
            var: Array1::zeros(n_features),
            singular_values: Array1::zeros(n_components),
            explained_variance: Array1::zeros(n_components),
            explained_variance_ratio: Array1::zeros(n_components),
            noise_variance: 0.0,
            signs: Array1::ones(n_components),
            chunk: chunk_width,
            unresolved: 0,
        })
    }

    /// The public fields agree with each other (they can be edited or deserialised).
    fn check(&self) -> Result<()> {
        let (k, p) = (self.n_components, self.n_features);
        if k == 0 || k > p || self.chunk == 0 {
            return Err(KernelError::Parameter(format!(
                "invalid model: n_components={k}, n_features={p}, chunk={}",
                self.chunk
            )));
        }
        let lengths = [
            (self.mean.len(), p),
            (self.var.len(), p),
            (self.singular_values.len(), k),
            (self.explained_variance.len(), k),
            (self.explained_variance_ratio.len(), k),
            (self.signs.len(), k),
        ];
        if lengths.iter().any(|(have, want)| have != want) {
            return Err(KernelError::Shape(format!(
                "the model's arrays have lengths {:?}, expected {:?}",
                lengths.map(|l| l.0),
                lengths.map(|l| l.1)
            )));
        }
        Ok(())
    }

    fn check_fitted(&self) -> Result<()> {
        self.check()?;
        if self.n_samples_seen == 0 {
            return Err(KernelError::Parameter("the incremental PCA is not fitted yet".into()));
        }
        if self.unresolved > 0 {
            return Err(KernelError::Parameter(format!(
                "the data's rank is below n_components={}: {} of the components are undetermined \
                 (singular value at most {RANK_TOLERANCE:e} of the largest, {:e}); keep fewer \
                 components or fit on more images",
                self.n_components, self.unresolved, self.singular_values[0]
            )));
        }
        Ok(())
    }

    /// One `partial_fit` with a batch of `n_rows` rows: `batch(cols)` returns the batch's rows
    /// for the units `cols` (`[n_rows, cols.len()]`). It is called twice per column chunk (the
    /// Gram pass and the components pass) and must return the same values both times. The new
    /// components are written to `store` chunk by chunk during the second pass.
    ///
    /// As scikit-learn: the first batch needs at least `n_components` rows; the stacked matrix
    /// is `X_b - mean` on the first batch, else `[S · components; X_b - batch mean;
    /// sqrt(n_seen b / n_total) (mean - batch mean)]`, whose `k` leading right singular
    /// vectors become the components.
    ///
    /// # Errors
    /// [`KernelError::Parameter`] for an empty batch, a first batch with fewer rows than
    /// components, a non-finite value, a batch that changed between the two passes, or a
    /// stacked matrix of rank below `n_components` (a kept singular value at most
    /// [`RANK_TOLERANCE`] of the largest); [`KernelError::Shape`] for blocks of the wrong
    /// shape; [`KernelError::Linalg`] if the eigendecomposition fails; and the errors of
    /// `batch` and `store`. On an error the model is unchanged, but an error during the
    /// second pass leaves the store partly overwritten.
    pub fn partial_fit<B: LinalgBackend, S: ComponentStore>(
        &mut self,
        n_rows: usize,
        mut batch: impl FnMut(Range<usize>) -> std::result::Result<Array2<f64>, S::Error>,
        store: &mut S,
    ) -> std::result::Result<(), S::Error> {
        self.check()?;
        let (k, p) = (self.n_components, self.n_features);
        if n_rows == 0 {
            return Err(KernelError::Parameter("an empty batch".into()).into());
        }
        let first = self.n_samples_seen == 0;
        if first && n_rows < k {
            return Err(KernelError::Parameter(format!(
                "n_components={k} must be at most the {n_rows} rows of the first batch"
            ))
            .into());
        }
        let n_old = self.n_samples_seen as f64;
        let b = n_rows as f64;
        let n_total = self.n_samples_seen + n_rows;
        let nt = n_total as f64;
        let m = if first { n_rows } else { k + n_rows + 1 };
        let correction = if first { 0.0 } else { (n_old / nt * b).sqrt() };

        // Pass 1: the running mean and variance (scikit-learn's _incremental_mean_and_var) and
        // the Gram matrix of the stacked rows, accumulated over column chunks.
        let mut batch_mean = Array1::<f64>::zeros(p);
        let mut new_mean = Array1::<f64>::zeros(p);
        let mut new_var = Array1::<f64>::zeros(p);
        let mut gram = Array2::<f64>::zeros((m, m));
        let mut product = Array2::<f64>::zeros((m, m));
        for cols in column_chunks(p, self.chunk) {
            let x = fetch(&mut batch, cols.clone(), n_rows)?;
            let sums = column_sums(&x);
            for (c, j) in cols.clone().enumerate() {
                let new_sum = sums[c];
                let t = new_sum / b;
                let (mut corr, mut sq) = (0.0, 0.0);
                for &v in x.column(c) {
                    corr += v - t;
                    sq += (v - t) * (v - t);
                }
                let new_unnormalized = sq - corr * corr / b;
                let last_sum = self.mean[j] * n_old;
                batch_mean[j] = t;
                new_mean[j] = (last_sum + new_sum) / nt;
                new_var[j] = if first {
                    new_unnormalized / nt
                } else {
                    let ratio = n_old / b;
                    (self.var[j] * n_old
                        + new_unnormalized
                        + ratio / nt * (last_sum / ratio - new_sum).powi(2))
                        / nt
                };
            }
            let stacked = self.stacked(store, &x, cols, &batch_mean, &new_mean, correction)?;
            B::gemm(stacked.view(), stacked.t(), product.view_mut());
            gram += &product;
        }
        let total_variance: f64 = new_var.iter().map(|v| v * nt).sum();

        // The stacked matrix's singular values and left singular vectors, descending.
        let (values, vectors) = B::eigh(gram.view())?;
        if values.iter().any(|l| !l.is_finite()) {
            return Err(
                KernelError::Linalg("non-finite eigenvalues of the Gram matrix".into()).into()
            );
        }
        // Eigenvalues past min(m, p) are not singular values; those at rounding level below 0
        // are zero.
        let n_singular = m.min(p);
        let lambda: Array1<f64> = (0..n_singular).map(|i| values[m - 1 - i].max(0.0)).collect();
        let singular: Array1<f64> = lambda.mapv(f64::sqrt);
        // NaN (not finite data) counts as no variance too
        if singular[0].partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(KernelError::Parameter(
                "the batch has no variance: every value is its column's mean".into(),
            )
            .into());
        }
        // U_kᵀ scaled by 1/S: row i maps the stacked rows to component i (zero for a component
        // the data leave undetermined)
        let mut projector = Array2::<f64>::zeros((k, m));
        let mut unresolved = 0;
        for i in 0..k {
            if singular[i] > RANK_TOLERANCE * singular[0] {
                let column = vectors.column(m - 1 - i);
                projector.row_mut(i).assign(&column.mapv(|u| u / singular[i]));
            } else {
                unresolved += 1;
            }
        }

        // Pass 2: the new components, chunk by chunk, and svd_flip's signs.
        let mut largest = Array1::<f64>::zeros(k);
        let mut signs = Array1::<f64>::ones(k);
        let mut components_chunk = Array2::<f64>::zeros((k, self.chunk.min(p)));
        for cols in column_chunks(p, self.chunk) {
            let x = fetch(&mut batch, cols.clone(), n_rows)?;
            let sums = column_sums(&x);
            if cols.clone().enumerate().any(|(c, j)| sums[c] / b != batch_mean[j]) {
                return Err(KernelError::Parameter(format!(
                    "the batch returned different values for columns {cols:?} in the second pass"
                ))
                .into());
            }
            let stacked =
                self.stacked(store, &x, cols.clone(), &batch_mean, &new_mean, correction)?;
            let mut v = components_chunk.slice_mut(s![.., ..cols.len()]);
            B::gemm(projector.view(), stacked.view(), v.view_mut());
            for (i, row) in v.axis_iter(Axis(0)).enumerate() {
                for &value in row {
                    if value.abs() > largest[i] {
                        largest[i] = value.abs();
                        signs[i] = if value < 0.0 { -1.0 } else { 1.0 };
                    }
                }
            }
            store.write(cols, v.view())?;
        }

        let explained: Array1<f64> = lambda.mapv(|l| l / (nt - 1.0));
        self.noise_variance = if k == n_rows || k == p {
            0.0
        } else {
            explained.slice(s![k..]).mean().unwrap_or(0.0)
        };
        self.explained_variance_ratio = lambda.slice(s![..k]).mapv(|l| l / total_variance);
        self.explained_variance = explained.slice(s![..k]).to_owned();
        self.singular_values = singular.slice(s![..k]).to_owned();
        self.signs = signs;
        self.mean = new_mean;
        self.var = new_var;
        self.n_samples_seen = n_total;
        self.unresolved = unresolved;
        Ok(())
    }

    /// The stacked matrix's columns `cols` (`[m, cols.len()]`): `x - new_mean` on the first
    /// batch, else the previous basis scaled by its singular values, the batch centred on its
    /// own mean, and the mean correction row.
    fn stacked<S: ComponentStore>(
        &self,
        store: &mut S,
        x: &Array2<f64>,
        cols: Range<usize>,
        batch_mean: &Array1<f64>,
        new_mean: &Array1<f64>,
        correction: f64,
    ) -> std::result::Result<Array2<f64>, S::Error> {
        let (k, n_rows) = (self.n_components, x.nrows());
        if self.n_samples_seen == 0 {
            return Ok(x - &new_mean.slice(s![cols]));
        }
        let previous = read_components(store, cols.clone(), k)?;
        let mut stacked = Array2::<f64>::zeros((k + n_rows + 1, cols.len()));
        for i in 0..k {
            let scale = self.singular_values[i];
            stacked.row_mut(i).assign(&previous.row(i).mapv(|v| v * scale));
        }
        let batch_mean = batch_mean.slice(s![cols.clone()]);
        stacked.slice_mut(s![k..k + n_rows, ..]).assign(&(x - &batch_mean));
        let old_mean = self.mean.slice(s![cols]);
        stacked.row_mut(k + n_rows).assign(&((&old_mean - &batch_mean) * correction));
        Ok(stacked)
    }

    /// `(X - mean) · componentsᵀ` (signs applied), `[n_rows, k]`, streamed by column chunks:
    /// `batch(cols)` returns the rows to transform for the units `cols`.
    ///
    /// # Errors
    /// [`KernelError::Parameter`] before the first fit or for a non-finite value,
    /// [`KernelError::Shape`] for blocks of the wrong shape, and the errors of `batch` and
    /// `store`.
    pub fn transform<B: LinalgBackend, S: ComponentStore>(
        &self,
        n_rows: usize,
        mut batch: impl FnMut(Range<usize>) -> std::result::Result<Array2<f64>, S::Error>,
        store: &mut S,
    ) -> std::result::Result<Array2<f64>, S::Error> {
        self.check_fitted()?;
        let k = self.n_components;
        let mut out = Array2::<f64>::zeros((n_rows, k));
        let mut product = Array2::<f64>::zeros((n_rows, k));
        for cols in column_chunks(self.n_features, self.chunk) {
            let x = fetch(&mut batch, cols.clone(), n_rows)?;
            let centred = x - self.mean.slice(s![cols.clone()]);
            let components = read_components(store, cols, k)?;
            B::gemm(centred.view(), components.t(), product.view_mut());
            out += &product;
        }
        out *= &self.signs;
        Ok(out)
    }

    /// The components for the units `cols`, signs applied (scikit-learn's
    /// `components_[:, cols]`), `[k, cols.len()]`.
    ///
    /// # Errors
    /// [`KernelError::Parameter`] before the first fit, [`KernelError::Shape`] for columns
    /// past `n_features` or a store block of the wrong shape, and the store's errors.
    pub fn components<S: ComponentStore>(
        &self,
        store: &mut S,
        cols: Range<usize>,
    ) -> std::result::Result<Array2<f64>, S::Error> {
        self.check_fitted()?;
        if cols.start > cols.end || cols.end > self.n_features {
            return Err(KernelError::Shape(format!(
                "columns {cols:?} outside the {} features",
                self.n_features
            ))
            .into());
        }
        let mut c = read_components(store, cols, self.n_components)?;
        for (mut row, &sign) in c.axis_iter_mut(Axis(0)).zip(&self.signs) {
            row *= sign;
        }
        Ok(c)
    }
}

/// Fits an [`IncrementalPca`] on in-memory data `x` (`[n, p]`) in scikit-learn's batches
/// ([`batches`] of `batch_size` rows, `None` for scikit-learn's default `5 p`, with
/// `min_batch_size = n_components`), streaming columns in chunks of `chunk`. Returns the fitted
/// model and the store of its components: `model.components(&mut store, 0..p)` is
/// scikit-learn's `components_`, `model.transform(..., &mut store)` its `transform`.
///
/// # Errors
/// [`KernelError::Parameter`] for data without rows, and the errors of
/// [`IncrementalPca::new`], [`batches`] and [`IncrementalPca::partial_fit`].
pub fn fit_in_memory<B: LinalgBackend>(
    x: ArrayView2<'_, f64>,
    n_components: usize,
    batch_size: Option<usize>,
    chunk: usize,
) -> Result<(IncrementalPca, MemoryComponents)> {
    let (n, p) = x.dim();
    let mut model = IncrementalPca::new(n_components, p, chunk)?;
    if n == 0 {
        return Err(KernelError::Parameter("no rows to fit".into()));
    }
    let mut store = MemoryComponents::new(n_components, p);
    for rows in batches(n, batch_size.unwrap_or(5 * p), n_components)? {
        let n_rows = rows.len();
        let block = x.slice(s![rows, ..]);
        model.partial_fit::<B, _>(
            n_rows,
            |cols| Ok(block.slice(s![.., cols]).to_owned()),
            &mut store,
        )?;
    }
    Ok((model, store))
}

/// scikit-learn's `johnson_lindenstrauss_min_dim(n_samples, eps)`: the number of random
/// projections that keep every squared distance between `n_samples` points within a factor
/// `1 ± eps` with good probability, `4 ln(n) / (eps²/2 - eps³/3)` truncated to an integer.
///
/// # Errors
/// [`KernelError::Parameter`] unless `0 < eps < 1` and `n_samples >= 1`.
pub fn johnson_lindenstrauss_min_dim(n_samples: usize, eps: f64) -> Result<usize> {
    if !(eps > 0.0 && eps < 1.0) {
        return Err(KernelError::Parameter(format!(
            "the Johnson-Lindenstrauss bound is defined for eps in (0, 1), got {eps}"
        )));
    }
    if n_samples == 0 {
        return Err(KernelError::Parameter(
            "the Johnson-Lindenstrauss bound needs at least one sample".into(),
        ));
    }
    // numpy: eps**2 is a square, eps**3 a call to pow
    let denominator = eps * eps / 2.0 - eps.powf(3.0) / 3.0;
    Ok((4.0 * (n_samples as f64).ln() / denominator) as usize)
}

/// Salt of the random-projection streams: a job's seed also draws its permutations.
const PROJECTION_SALT: u64 = 0x5250_524F_4A45_4354;

/// scikit-learn's `'auto'` density of a sparse random projection: `1 / sqrt(n_features)`
/// (Li et al., 2006). Infinite for 0 features, which [`RandomProjection::new`] refuses.
pub fn sparse_density_auto(n_features: usize) -> f64 {
    1.0 / (n_features as f64).sqrt()
}

/// The distribution of a random projection's entries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Projection {
    /// `N(0, 1/k)` entries (scikit-learn's `GaussianRandomProjection`).
    Gaussian,
    /// scikit-learn's `SparseRandomProjection`: `±sqrt(1/density)/sqrt(k)`, each sign with
    /// probability `density/2`, else 0 (`density` in `(0, 1]`; see [`sparse_density_auto`]).
    Sparse {
        /// Probability that an entry is non-zero.
        density: f64,
    },
}

/// A seeded random projection `[n_components, n_features]` that is never stored: entry
/// `(i, j)` is a pure function of `(seed, i, j)`, the `i`-th draw of the random stream
/// `Rng::stream(seed ^ PROJECTION_SALT, j)` of unit `j` (salted, so a job's permutation `j`
/// never shares its stream). Any chunking of the units, on any worker, gives the
/// same matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomProjection {
    /// Number of projections `k` (output dimensions).
    pub n_components: usize,
    /// Number of units `p` (input dimensions).
    pub n_features: usize,
    /// Seed of the per-unit streams.
    pub seed: u64,
    /// Distribution of the entries.
    pub kind: Projection,
}

impl RandomProjection {
    /// A projection of `n_features` units onto `n_components` dimensions.
    ///
    /// # Errors
    /// [`KernelError::Parameter`] if `n_components` is 0 or a sparse density is outside
    /// `(0, 1]`.
    pub fn new(
        n_components: usize,
        n_features: usize,
        seed: u64,
        kind: Projection,
    ) -> Result<Self> {
        let projection = RandomProjection { n_components, n_features, seed, kind };
        projection.check()?;
        Ok(projection)
    }

    fn check(&self) -> Result<()> {
        if self.n_components == 0 {
            return Err(KernelError::Parameter(
                "a random projection needs at least one component".into(),
            ));
        }
        if let Projection::Sparse { density } = self.kind
            && !(density > 0.0 && density <= 1.0)
        {
            return Err(KernelError::Parameter(format!(
                "the density of a sparse random projection must be in (0, 1], got {density}"
            )));
        }
        Ok(())
    }

    /// The transposed chunk `[cols.len(), k]`: row `c` is unit `cols.start + c`'s stream.
    fn units_chunk(&self, cols: Range<usize>) -> Array2<f64> {
        let k = self.n_components;
        let mut out = Array2::<f64>::zeros((cols.len(), k));
        let scale = 1.0 / (k as f64).sqrt();
        for (mut row, j) in out.axis_iter_mut(Axis(0)).zip(cols) {
            let mut rng = Rng::stream(self.seed ^ PROJECTION_SALT, j as u64);
            match self.kind {
                Projection::Gaussian => row.iter_mut().for_each(|v| *v = rng.normal() * scale),
                Projection::Sparse { density } => {
                    let value = (1.0 / density).sqrt() * scale;
                    row.iter_mut().for_each(|v| {
                        let u = rng.uniform();
                        *v = if u < density / 2.0 {
                            value
                        } else if u < density {
                            -value
                        } else {
                            0.0
                        };
                    });
                }
            }
        }
        out
    }

    /// The matrix's columns `cols`, `[k, cols.len()]` (standard layout). Columns past
    /// `n_features` follow the same rule.
    pub fn matrix_chunk(&self, cols: Range<usize>) -> Array2<f64> {
        self.units_chunk(cols).reversed_axes().as_standard_layout().into_owned()
    }

    /// `X · Rᵀ`, `[n_rows, k]`, accumulated over column chunks of width `chunk` (the result
    /// does not depend on `chunk` beyond rounding): `batch(cols)` returns the rows to project
    /// for the units `cols`.
    ///
    /// # Errors
    /// [`KernelError::Parameter`] for an invalid projection, `chunk == 0` or a non-finite
    /// value, [`KernelError::Shape`] for blocks of the wrong shape, and the errors of `batch`.
    pub fn transform<B: LinalgBackend, E: From<KernelError>>(
        &self,
        n_rows: usize,
        mut batch: impl FnMut(Range<usize>) -> std::result::Result<Array2<f64>, E>,
        chunk: usize,
    ) -> std::result::Result<Array2<f64>, E> {
        self.check()?;
        if chunk == 0 {
            return Err(KernelError::Parameter("the chunk width must be at least 1".into()).into());
        }
        let mut out = Array2::<f64>::zeros((n_rows, self.n_components));
        let mut product = out.clone();
        for cols in column_chunks(self.n_features, chunk) {
            let x = fetch(&mut batch, cols.clone(), n_rows)?;
            let r = self.units_chunk(cols);
            B::gemm(x.view(), r.view(), product.view_mut());
            out += &product;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::Faer;
    use crate::rdm::npy_fixture as fx;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/compress/"))
            .join(format!("{name}.npy"))
    }

    fn vec1(name: &str) -> Array1<f64> {
        Array1::from(fx::f64s(&fixture(name)).1)
    }

    fn arr2(name: &str) -> Array2<f64> {
        let (shape, v) = fx::f64s(&fixture(name));
        Array2::from_shape_vec((shape[0], shape[1]), v).expect("2-d fixture")
    }

    fn ints(name: &str) -> Vec<i64> {
        fx::i64s(&fixture(name)).1
    }

    /// Largest difference relative to the largest magnitude of `want` (at least 1).
    fn rel_diff<'a>(
        got: impl IntoIterator<Item = &'a f64>,
        want: impl IntoIterator<Item = &'a f64> + Clone,
    ) -> f64 {
        let scale = want.clone().into_iter().fold(1.0f64, |m, w| m.max(w.abs()));
        let mut count = 0;
        let worst = got.into_iter().zip(want).fold(0.0f64, |m, (g, w)| {
            count += 1;
            m.max((g - w).abs())
        });
        assert!(count > 0);
        worst / scale
    }

    /// The scikit-learn cases of `scripts/python/make_fixtures_compress.py`.
    const CASES: [&str; 5] = ["uneven", "wide", "all_features", "one_batch", "last_batch_k"];

    /// Every difference between a fitted model and its components and scikit-learn's, relative
    /// to each quantity's largest magnitude (at least 1): the worst one, and its name.
    fn compare_with_fixture(case: &str, chunk: usize) -> (f64, &'static str) {
        let x = arr2(&format!("{case}/X"));
        let x_test = arr2(&format!("{case}/X_test"));
        let params = ints(&format!("{case}/params"));
        let k = params[0] as usize;
        let batch_size = (params[1] > 0).then_some(params[1] as usize);
        let (model, mut store) = fit_in_memory::<Faer>(x.view(), k, batch_size, chunk).unwrap();
        let p = x.ncols();
        assert_eq!(model.n_samples_seen as i64, ints(&format!("{case}/n_samples_seen"))[0]);
        let components = model.components(&mut store, 0..p).unwrap();
        let transformed = model
            .transform::<Faer, _>(
                x_test.nrows(),
                |cols| Ok(x_test.slice(s![.., cols]).to_owned()),
                &mut store,
            )
            .unwrap();
        let noise = [model.noise_variance];
        let checks: [(&'static str, &[f64], Vec<f64>); 8] = [
            (
                "components",
                components.as_slice().unwrap(),
                arr2(&format!("{case}/components")).into_raw_vec_and_offset().0,
            ),
            ("mean", model.mean.as_slice().unwrap(), vec1(&format!("{case}/mean")).to_vec()),
            ("var", model.var.as_slice().unwrap(), vec1(&format!("{case}/var")).to_vec()),
            (
                "singular values",
                model.singular_values.as_slice().unwrap(),
                vec1(&format!("{case}/singular_values")).to_vec(),
            ),
            (
                "explained variance",
                model.explained_variance.as_slice().unwrap(),
                vec1(&format!("{case}/explained_variance")).to_vec(),
            ),
            (
                "explained variance ratio",
                model.explained_variance_ratio.as_slice().unwrap(),
                vec1(&format!("{case}/explained_variance_ratio")).to_vec(),
            ),
            ("noise variance", &noise, vec1(&format!("{case}/noise_variance")).to_vec()),
            (
                "transform",
                transformed.as_slice().unwrap(),
                arr2(&format!("{case}/transform")).into_raw_vec_and_offset().0,
            ),
        ];
        let mut worst = (0.0f64, "");
        for (name, got, want) in checks {
            assert_eq!(got.len(), want.len(), "{case}: {name}");
            let d = rel_diff(got, &want);
            if d > worst.0 {
                worst = (d, name);
            }
        }
        worst
    }

    /// scikit-learn 1.9's IncrementalPCA on the five fixture cases (uneven batches, p = 300 much
    /// wider than the 31 stacked rows, k = p, one batch, a last batch of k rows): components
    /// with their signs, mean, variance, singular values, explained variance and its ratio,
    /// noise variance and the transform of new data, all within 1e-10 (relative to each
    /// quantity's largest magnitude).
    #[test]
    fn fits_match_scikit_learn() {
        for case in CASES {
            let (worst, name) = compare_with_fixture(case, 7);
            eprintln!("{case}: worst relative difference {worst:.2e} ({name})");
            assert!(worst < 1e-10, "{case}: {name} differs by {worst:e}");
        }
    }

    /// Chunk widths 1, 7 and 1000 (wider than every case) give the same fit within 1e-12.
    #[test]
    fn chunk_width_does_not_matter() {
        for case in ["uneven", "wide"] {
            let x = arr2(&format!("{case}/X"));
            let k = ints(&format!("{case}/params"))[0] as usize;
            let batch = Some(ints(&format!("{case}/params"))[2] as usize);
            let fits: Vec<_> = [1, 7, 1000]
                .iter()
                .map(|&chunk| fit_in_memory::<Faer>(x.view(), k, batch, chunk).unwrap())
                .collect();
            let (reference, mut store) = fits[0].clone();
            let c0 = reference.components(&mut store, 0..x.ncols()).unwrap();
            for (model, mut store) in fits[1..].iter().cloned() {
                let c = model.components(&mut store, 0..x.ncols()).unwrap();
                let d = [
                    rel_diff(&c, &c0),
                    rel_diff(&model.mean, &reference.mean),
                    rel_diff(&model.var, &reference.var),
                    rel_diff(&model.singular_values, &reference.singular_values),
                    rel_diff(&model.explained_variance_ratio, &reference.explained_variance_ratio),
                    rel_diff(&[model.noise_variance], &[reference.noise_variance]),
                ];
                eprintln!("{case} chunk {}: {d:?}", model.chunk);
                assert!(d.iter().all(|&d| d < 1e-12), "{case} chunk {}: {d:?}", model.chunk);
                assert_eq!(model.signs, reference.signs);
            }
        }
    }

    /// svd_flip (u_based_decision=False) on the rows of `v`: the first entry of largest
    /// magnitude made positive.
    fn flip(v: &mut Array2<f64>) {
        for mut row in v.rows_mut() {
            let mut best = 0;
            for j in 0..row.len() {
                if row[j].abs() > row[best].abs() {
                    best = j;
                }
            }
            if row[best] < 0.0 {
                row *= -1.0;
            }
        }
    }

    /// The dense thin SVD of `m` (faer): singular values and right singular vectors as rows.
    fn dense_svd(m: &Array2<f64>) -> (Array1<f64>, Array2<f64>) {
        let fm = faer::Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)]);
        let svd = fm.thin_svd().unwrap();
        let r = m.nrows().min(m.ncols());
        let sv = svd.S().column_vector();
        let v = svd.V();
        (
            Array1::from_shape_fn(r, |i| sv[i]),
            Array2::from_shape_fn((r, m.ncols()), |(i, j)| v[(j, i)]),
        )
    }

    /// One partial fit after another, against a direct dense SVD of the stacked matrix built
    /// from the previous state (and the first fit against the SVD of the centred batch); the
    /// second batch has fewer rows than components, which scikit-learn allows after the first.
    /// Mean and variance are checked against their two-pass definitions over all rows.
    #[test]
    fn partial_fit_matches_a_dense_svd_of_the_stacked_matrix() {
        let (k, p) = (5, 15);
        let mut rng = Rng::new(21);
        let x: Array2<f64> = rng.normal_array((15, p));
        let x = &x + &Array1::from_shape_fn(p, |j| j as f64 - 4.0);
        let (x1, x2) = (x.slice(s![..12, ..]), x.slice(s![12.., ..]));
        let mut model = IncrementalPca::new(k, p, 4).unwrap();
        let mut store = MemoryComponents::new(k, p);

        model
            .partial_fit::<Faer, _>(12, |c| Ok(x1.slice(s![.., c]).to_owned()), &mut store)
            .unwrap();
        let mean1 = x1.mean_axis(Axis(0)).unwrap();
        let (s1, mut v1) = dense_svd(&(&x1 - &mean1));
        flip(&mut v1);
        let c1 = model.components(&mut store, 0..p).unwrap();
        assert!(rel_diff(&c1, &v1.slice(s![..k, ..]).to_owned()) < 1e-12);
        assert!(rel_diff(&model.singular_values, &s1.slice(s![..k]).to_owned()) < 1e-12);
        let noise1 = s1.slice(s![k..]).mapv(|s| s * s / 11.0).mean().unwrap();
        assert!((model.noise_variance - noise1).abs() < 1e-12 * noise1);

        let before = model.clone();
        model
            .partial_fit::<Faer, _>(3, |c| Ok(x2.slice(s![.., c]).to_owned()), &mut store)
            .unwrap();
        let mean2 = x2.mean_axis(Axis(0)).unwrap();
        let mut stacked = Array2::<f64>::zeros((k + 3 + 1, p));
        for i in 0..k {
            stacked.row_mut(i).assign(&(&c1.row(i) * before.singular_values[i]));
        }
        stacked.slice_mut(s![k..k + 3, ..]).assign(&(&x2 - &mean2));
        stacked.row_mut(k + 3).assign(&((&mean1 - &mean2) * (12.0 / 15.0 * 3.0f64).sqrt()));
        let (s2, mut v2) = dense_svd(&stacked);
        flip(&mut v2);
        let c2 = model.components(&mut store, 0..p).unwrap();
        assert!(rel_diff(&c2, &v2.slice(s![..k, ..]).to_owned()) < 1e-12);
        assert!(rel_diff(&model.singular_values, &s2.slice(s![..k]).to_owned()) < 1e-12);
        let ev = s2.mapv(|s| s * s / 14.0);
        assert!(rel_diff(&model.explained_variance, &ev.slice(s![..k]).to_owned()) < 1e-12);
        let noise2 = ev.slice(s![k..]).mean().unwrap();
        assert!((model.noise_variance - noise2).abs() < 1e-12 * noise2);

        let mean = x.mean_axis(Axis(0)).unwrap();
        let var = x.var_axis(Axis(0), 0.0);
        assert!(rel_diff(&model.mean, &mean) < 1e-13 && rel_diff(&model.var, &var) < 1e-13);
        let ratio = s2.slice(s![..k]).mapv(|s| s * s / (var.sum() * 15.0));
        assert!(rel_diff(&model.explained_variance_ratio, &ratio) < 1e-12);
        assert_eq!(model.n_samples_seen, 15);
    }

    /// A store error of the caller's own type: I/O failures next to kernel errors.
    #[derive(Debug, PartialEq)]
    enum StoreError {
        Kernel(KernelError),
        Io(&'static str),
    }

    impl From<KernelError> for StoreError {
        fn from(e: KernelError) -> Self {
            StoreError::Kernel(e)
        }
    }

    /// Wraps a memory store and records its traffic; `fail_reads` makes reads fail.
    struct Recorder {
        inner: MemoryComponents,
        widths: Vec<usize>,
        reads: usize,
        writes: usize,
        fail_reads: bool,
    }

    impl ComponentStore for Recorder {
        type Error = StoreError;
        fn read(&mut self, cols: Range<usize>) -> std::result::Result<Array2<f64>, StoreError> {
            if self.fail_reads {
                return Err(StoreError::Io("disk on fire"));
            }
            self.reads += 1;
            self.widths.push(cols.len());
            Ok(self.inner.read(cols)?)
        }
        fn write(
            &mut self,
            cols: Range<usize>,
            values: ArrayView2<'_, f64>,
        ) -> std::result::Result<(), StoreError> {
            self.writes += 1;
            self.widths.push(cols.len());
            Ok(self.inner.write(cols, values)?)
        }
    }

    /// The data and the components are touched only in chunks (two passes over the data, one
    /// read and one write of each component chunk per fit after the first), and the caller's
    /// store errors come back as they are, leaving the model unchanged.
    #[test]
    fn fits_stream_by_column_chunks() {
        let (k, p, chunk) = (3, 23, 5);
        let mut rng = Rng::new(5);
        let x: Array2<f64> = rng.normal_array((20, p));
        let mut model = IncrementalPca::new(k, p, chunk).unwrap();
        let mut store = Recorder {
            inner: MemoryComponents::new(k, p),
            widths: Vec::new(),
            reads: 0,
            writes: 0,
            fail_reads: false,
        };
        for rows in [0..10, 10..20] {
            let mut calls = 0;
            let block = x.slice(s![rows, ..]);
            model
                .partial_fit::<Faer, _>(
                    10,
                    |cols| {
                        calls += 1;
                        assert!(cols.len() <= chunk);
                        Ok(block.slice(s![.., cols]).to_owned())
                    },
                    &mut store,
                )
                .unwrap();
            assert_eq!(calls, 10, "two passes over five chunks");
        }
        assert_eq!((store.reads, store.writes), (10, 10));
        assert!(store.widths.iter().all(|&w| w <= chunk));
        let (reference, mut ref_store) = fit_in_memory::<Faer>(x.view(), k, Some(10), 23).unwrap();
        let c = model.components(&mut store, 0..p).unwrap();
        assert!(rel_diff(&c, &reference.components(&mut ref_store, 0..p).unwrap()) < 1e-12);

        store.fail_reads = true;
        let before = model.clone();
        let err = model.partial_fit::<Faer, _>(
            10,
            |cols| Ok(x.slice(s![..10, cols]).to_owned()),
            &mut store,
        );
        assert_eq!(err, Err(StoreError::Io("disk on fire")));
        assert_eq!(model, before);
    }

    fn parameter_error<T: std::fmt::Debug>(r: Result<T>, needle: &str) {
        match r {
            Err(KernelError::Parameter(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("expected a parameter error about {needle:?}, got {other:?}"),
        }
    }

    /// Each invalid input is refused with an error naming the problem, the model unchanged.
    #[test]
    fn invalid_inputs_are_refused() {
        parameter_error(IncrementalPca::new(0, 5, 1), "at least 1");
        parameter_error(IncrementalPca::new(6, 5, 1), "exceeds the 5 features");
        parameter_error(IncrementalPca::new(2, 5, 0), "chunk width");
        parameter_error(fit_in_memory::<Faer>(Array2::zeros((0, 5)).view(), 2, None, 3), "no rows");
        assert!(matches!(batches(5, 0, 1), Err(KernelError::Parameter(_))));

        let mut rng = Rng::new(8);
        let x: Array2<f64> = rng.normal_array((8, 6));
        let fit = |model: &mut IncrementalPca, data: &Array2<f64>| {
            let mut store = MemoryComponents::new(model.n_components, model.n_features);
            model.partial_fit::<Faer, _>(
                data.nrows(),
                |c| Ok(data.slice(s![.., c]).to_owned()),
                &mut store,
            )
        };
        let fresh = IncrementalPca::new(3, 6, 4).unwrap();
        let mut model = fresh.clone();
        parameter_error(
            fit(&mut model, &x.slice(s![..2, ..]).to_owned()),
            "the 2 rows of the first batch",
        );
        let mut nan = x.clone();
        nan[(1, 5)] = f64::NAN;
        parameter_error(fit(&mut model, &nan), "row 1, column 5");
        // constant data are refused; rank 2 < 3 components is fitted (a later batch could
        // determine the third component) but the model is refused where it is used
        parameter_error(fit(&mut model, &Array2::ones((8, 6))), "no variance");
        assert_eq!(model, fresh);
        let low = Array2::from_shape_fn((8, 6), |(i, j)| (i as f64) * (j as f64) + (i * i) as f64);
        let mut deficient = fresh.clone();
        fit(&mut deficient, &low).unwrap();
        assert_eq!(deficient.unresolved, 1);
        let mut store = MemoryComponents::new(3, 6);
        parameter_error(deficient.components(&mut store, 0..6), "rank is below n_components=3");
        // a first batch of exactly k rows (rank k - 1 once centred), then another batch: as
        // scikit-learn, the model is determined after the second
        let mut exact = fresh.clone();
        let mut store = MemoryComponents::new(3, 6);
        for rows in [0..3, 3..8] {
            exact
                .partial_fit::<Faer, _>(
                    rows.len(),
                    |c| Ok(x.slice(s![rows.clone(), c]).to_owned()),
                    &mut store,
                )
                .unwrap();
            assert_eq!(exact.unresolved, usize::from(rows.start == 0));
        }
        exact.components(&mut store, 0..6).unwrap();

        let mut store = MemoryComponents::new(3, 6);
        let wrong = model.partial_fit::<Faer, _>(8, |_| Ok(Array2::zeros((8, 2))), &mut store);
        assert!(matches!(wrong, Err(KernelError::Shape(_))));
        let mut calls = 0;
        let changing = model.partial_fit::<Faer, _>(
            8,
            |c| {
                calls += 1;
                Ok(x.slice(s![.., c]).to_owned() + if calls > 2 { 1.0 } else { 0.0 })
            },
            &mut store,
        );
        parameter_error(changing, "different values");
        assert_eq!(model, fresh);
        parameter_error(model.components(&mut store, 0..6), "not fitted");
        parameter_error(
            model.transform::<Faer, _>(2, |c| Ok(x.slice(s![..2, c]).to_owned()), &mut store),
            "not fitted",
        );

        fit(&mut model, &x).unwrap();
        let mut store = MemoryComponents::new(3, 6);
        assert!(matches!(model.components(&mut store, 0..7), Err(KernelError::Shape(_))));
        let mut broken = model.clone();
        broken.mean = Array1::zeros(5);
        assert!(matches!(broken.components(&mut store, 0..6), Err(KernelError::Shape(_))));
    }

    /// scikit-learn's documented gen_batches examples, and the fixtures' uneven case.
    #[test]
    fn batches_are_scikit_learns() {
        assert_eq!(batches(7, 3, 0).unwrap(), [0..3, 3..6, 6..7]);
        assert_eq!(batches(6, 3, 0).unwrap(), [0..3, 3..6]);
        assert_eq!(batches(2, 3, 0).unwrap(), [Range { start: 0, end: 2 }]);
        assert_eq!(batches(7, 3, 2).unwrap(), [0..3, 3..7]);
        assert_eq!(batches(125, 30, 8).unwrap(), [0..30, 30..60, 60..90, 90..125]);
        assert_eq!(batches(38, 10, 8).unwrap(), [0..10, 10..20, 20..30, 30..38]);
        assert!(batches(0, 3, 1).unwrap().is_empty());
    }

    /// Entries are a function of (seed, component, unit) alone: every chunking gives the same
    /// matrix, and another seed another one.
    #[test]
    fn projection_entries_do_not_depend_on_chunking() {
        for kind in [Projection::Gaussian, Projection::Sparse { density: 0.3 }] {
            let rp = RandomProjection::new(9, 37, 42, kind).unwrap();
            let full = rp.matrix_chunk(0..37);
            assert_eq!(full.dim(), (9, 37));
            for chunk in [1, 5, 37] {
                for cols in column_chunks(37, chunk) {
                    assert_eq!(rp.matrix_chunk(cols.clone()), full.slice(s![.., cols]));
                }
            }
            let other = RandomProjection { seed: 43, ..rp.clone() }.matrix_chunk(0..37);
            assert_ne!(other, full);
        }
    }

    /// Sparse entries: exactly ±sqrt(1/density)/sqrt(k) or 0, the non-zero fraction and the
    /// positive share within 99.9% binomial bounds; density 1 gives dense ±1/sqrt(k).
    #[test]
    fn sparse_projection_has_scikit_learns_distribution() {
        let (k, p) = (100, 2000);
        let density = sparse_density_auto(p);
        let r = RandomProjection::new(k, p, 7, Projection::Sparse { density }).unwrap();
        let m = r.matrix_chunk(0..p);
        let value = (1.0 / density).sqrt() / (k as f64).sqrt();
        assert!(m.iter().all(|&v| v == 0.0 || v == value || v == -value));
        let n = (k * p) as f64;
        let nonzero = m.iter().filter(|&&v| v != 0.0).count() as f64;
        let z = 3.2905; // two-sided 99.9%
        let bound = z * (n * density * (1.0 - density)).sqrt();
        eprintln!("sparse: {nonzero} non-zero, expected {:.1} ± {bound:.1}", n * density);
        assert!((nonzero - n * density).abs() < bound);
        let positive = m.iter().filter(|&&v| v > 0.0).count() as f64;
        assert!((positive - nonzero / 2.0).abs() < z * (nonzero / 4.0).sqrt());

        let dense = RandomProjection::new(4, 50, 1, Projection::Sparse { density: 1.0 }).unwrap();
        assert!(dense.matrix_chunk(0..50).iter().all(|&v| v.abs() == 0.5));
    }

    /// Gaussian entries: mean 0 and variance 1/k within 4 standard errors.
    #[test]
    fn gaussian_projection_has_variance_one_over_k() {
        let (k, p) = (100, 2000);
        let m = RandomProjection::new(k, p, 3, Projection::Gaussian).unwrap().matrix_chunk(0..p);
        let n = (k * p) as f64;
        let var = 1.0 / k as f64;
        let mean = m.sum() / n;
        let sample_var = m.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        eprintln!("gaussian: mean {mean:.2e}, variance x k {:.4}", sample_var * k as f64);
        assert!(mean.abs() < 4.0 * (var / n).sqrt());
        assert!((sample_var - var).abs() < 4.0 * var * (2.0 / n).sqrt());
    }

    /// The streamed transform equals X · Rᵀ computed naively, whatever the chunk width.
    #[test]
    fn projection_transform_is_x_times_r_transposed() {
        let (n, k, p) = (6, 8, 29);
        let x: Array2<f64> = Rng::new(4).normal_array((n, p));
        for kind in [Projection::Gaussian, Projection::Sparse { density: 0.2 }] {
            let rp = RandomProjection::new(k, p, 11, kind).unwrap();
            let r = rp.matrix_chunk(0..p);
            let naive = Array2::from_shape_fn((n, k), |(a, i)| {
                (0..p).map(|j| x[(a, j)] * r[(i, j)]).sum::<f64>()
            });
            for chunk in [1, 7, 1000] {
                let got = rp
                    .transform::<Faer, KernelError>(n, |c| Ok(x.slice(s![.., c]).to_owned()), chunk)
                    .unwrap();
                assert!(rel_diff(&got, &naive) < 1e-13, "chunk {chunk}");
            }
        }
    }

    /// With k = johnson_lindenstrauss_min_dim(50, eps), the squared distances between 50
    /// random points stay within a factor (1 ± eps) for at least 95% of the pairs.
    #[test]
    fn projections_preserve_distances() {
        let (n, p, eps) = (50, 1000, 0.3);
        let k = johnson_lindenstrauss_min_dim(n, eps).unwrap();
        let x: Array2<f64> = Rng::new(17).normal_array((n, p));
        for kind in [Projection::Gaussian, Projection::Sparse { density: sparse_density_auto(p) }] {
            let rp = RandomProjection::new(k, p, 99, kind).unwrap();
            let y = rp
                .transform::<Faer, KernelError>(n, |c| Ok(x.slice(s![.., c]).to_owned()), 128)
                .unwrap();
            let (mut inside, mut pairs) = (0, 0);
            for a in 0..n {
                for b in a + 1..n {
                    let d = (&x.row(a) - &x.row(b)).mapv(|v| v * v).sum();
                    let e = (&y.row(a) - &y.row(b)).mapv(|v| v * v).sum();
                    pairs += 1;
                    inside += usize::from((1.0 - eps) * d < e && e < (1.0 + eps) * d);
                }
            }
            eprintln!("{kind:?}: k={k}, {inside}/{pairs} pairs within 1 ± {eps}");
            assert!(inside as f64 >= 0.95 * pairs as f64);
        }
    }

    /// johnson_lindenstrauss_min_dim and the 'auto' density equal scikit-learn's exactly.
    #[test]
    fn jl_dims_and_density_match_scikit_learn() {
        let (ns, eps, dims) = (ints("jl_n"), vec1("jl_eps"), ints("jl_dim"));
        for ((&n, &e), &d) in ns.iter().zip(&eps).zip(&dims) {
            assert_eq!(johnson_lindenstrauss_min_dim(n as usize, e).unwrap() as i64, d, "{n} {e}");
        }
        for (&f, &d) in ints("density_features").iter().zip(&vec1("density_auto")) {
            assert_eq!(sparse_density_auto(f as usize), d, "{f}");
        }
    }

    /// Invalid projections and bounds are refused.
    #[test]
    fn invalid_projections_are_refused() {
        for eps in [0.0, 1.0, -0.5, f64::NAN] {
            parameter_error(johnson_lindenstrauss_min_dim(10, eps), "eps in (0, 1)");
        }
        parameter_error(johnson_lindenstrauss_min_dim(0, 0.5), "at least one sample");
        parameter_error(RandomProjection::new(0, 5, 1, Projection::Gaussian), "at least one");
        for density in [0.0, 1.5, f64::NAN, sparse_density_auto(0)] {
            parameter_error(
                RandomProjection::new(3, 5, 1, Projection::Sparse { density }),
                "(0, 1]",
            );
        }
        let rp = RandomProjection::new(3, 5, 1, Projection::Gaussian).unwrap();
        parameter_error(
            rp.transform::<Faer, KernelError>(2, |_| Ok(Array2::zeros((2, 5))), 0),
            "chunk",
        );
        let wrong = rp.transform::<Faer, KernelError>(2, |_| Ok(Array2::zeros((3, 5))), 5);
        assert!(matches!(wrong, Err(KernelError::Shape(_))));
        let bad = RandomProjection { kind: Projection::Sparse { density: 2.0 }, ..rp };
        parameter_error(
            bad.transform::<Faer, KernelError>(2, |_| Ok(Array2::zeros((2, 5))), 5),
            "(0, 1]",
        );
    }
}
