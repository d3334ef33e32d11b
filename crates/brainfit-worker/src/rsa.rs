//! Computing the RSA tasks: searchlight, ROI-level, time-resolved and cross-temporal RSA, with
//! their nulls.
//!
//! Model RDMs (given directly, computed from each feature space's activations, or remixed) and
//! the fitted models' regressors are built once per subject and RDM method
//! ([`crate::rsa_models`]). A permutation relabels the conditions of the models (rows and
//! columns together); since a relabelled RDM's comparison features are the relabelled
//! features, brain RDMs are ranked once and a batch of permutations is one matrix product
//! against the stacked relabelled models. Fitted models refit their weights per permutation,
//! on the relabelled regressors, from each brain RDM itself.

use crate::execute::{Executor, Loaded, ModelsLoaded, checkpoint};
pub(crate) use crate::rsa_models::Models;
use crate::{JobContext, Result};
use brainfit_io::Mask;
use brainfit_job::plan::brain_rdm_names;
use brainfit_job::stats::{CROSS_TEMPORAL_PREFIX, MapBlock};
use brainfit_job::{JobError, Part, with_matrix};
use brainfit_kernels::compare::{CompareMethod, compare, comparison_features};
use brainfit_kernels::linalg::Backend;
use brainfit_kernels::linalg::LinalgBackend;
use brainfit_kernels::permutation::{Scheme, permutation};
use brainfit_kernels::rdm::{ObservationDesign, RdmMethod, rdm};
use brainfit_kernels::rsa_fit::noise_ceiling;
use brainfit_kernels::searchlight::{
    Neighbourhoods, searchlight, sphere_rdm, spheres, time_resolved,
};
use ndarray::{Array1, Array2, Axis, s};
use std::sync::Arc;

/// Permutations computed per matrix product, at most.
const PERM_BATCH: u64 = 128;

/// Bytes the relabelled models of one permutation batch (raw RDMs, comparison features and the
/// fitted models' regressors) may take: with many conditions a batch holds fewer than
/// [`PERM_BATCH`] permutations.
const PERM_BATCH_BYTES: usize = 256 << 20;

/// Bytes the comparison features of one chunk of searchlight centres may take: a task streams
/// over its centres in chunks, so its memory is bounded whatever its size and condition count.
const CENTRE_CHUNK_BYTES: usize = 256 << 20;

/// Permutations per batch for `models`: [`PERM_BATCH`], or fewer where their relabelled
/// copies would exceed [`PERM_BATCH_BYTES`]. Depends only on the models, so every task of a job
/// batches alike.
fn perm_batch(models: &Models) -> u64 {
    let regressors: usize = models.fitted.iter().map(|f| f.regressors.len()).sum();
    let per_permutation = (2 * models.raw.len() + regressors) * std::mem::size_of::<f64>();
    (PERM_BATCH_BYTES / per_permutation.max(1)).clamp(1, PERM_BATCH as usize) as u64
}

/// Searchlight centres per chunk for RDMs of `n_pairs` pairs: as many as fit
/// [`CENTRE_CHUNK_BYTES`], a multiple of [`CENTRE_BATCH`] when at least one batch fits.
fn centre_chunk(n_pairs: usize) -> usize {
    let fit = (CENTRE_CHUNK_BYTES / (n_pairs.max(1) * std::mem::size_of::<f64>())).max(1);
    if fit >= CENTRE_BATCH { fit - fit % CENTRE_BATCH } else { fit }
}

/// The permutation scheme of an RSA analysis. With `[data] conditions` the RDMs are over
/// conditions, each measured in every run, so condition labels are exchanged freely; else the
/// job's scheme over the samples (conditions).
fn scheme_for(
    job: &JobContext,
    groups: Option<&[i64]>,
    design: Option<&ObservationDesign>,
) -> Option<(u64, Scheme, usize)> {
    let scheme = |p: &brainfit_job::spec::PermutationSpec| match design {
        Some(_) => Scheme::Free,
        None => p.scheme(groups),
    };
    job.spec.permutation.map(|p| (p.seed, scheme(&p), p.n))
}

/// The models under `n` relabellings (or the observed models, `n = 1`), stacked permutation
/// after permutation: what one matrix product compares against.
pub(crate) struct Relabelled<'a> {
    /// Comparison features, `[n * n_models, n_pairs]` (no rows where the method has none).
    pub(crate) features: Array2<f64>,
    /// Raw RDMs, `[n * n_models, n_pairs]` (no rows where nothing needs them).
    pub(crate) raw: Array2<f64>,
    /// The fitted models' regressors, stacked per model ([`Models::fitted_regressors`];
    /// borrowed for the observed models).
    pub(crate) fitted: Vec<std::borrow::Cow<'a, Array2<f64>>>,
    /// Number of relabellings.
    pub(crate) n: usize,
}

/// Observed values `[n_maps, n_items]` from `compute` (which returns `[n_items, n * n_maps]`
/// for `n` relabellings, map-major within each), and the nulls of permutations `perms`,
/// computed in batches of `batch_len` permutations (aligned to multiples of it, never past
/// `perms.end`). Without `needs_raw`, `compute` gets no relabelled raw models: only features.
fn with_nulls(
    models: &Models,
    features: Option<&Array2<f64>>,
    needs_raw: bool,
    perms: std::ops::Range<u64>,
    batch_len: u64,
    scheme: Option<&(u64, Scheme, usize)>,
    compute: impl Fn(&Relabelled) -> Result<Array2<f64>>,
) -> Result<MapBlock> {
    let end = perms.end;
    let n_pairs = models.raw.ncols();
    let observed = Relabelled {
        features: features.cloned().unwrap_or_else(|| Array2::zeros((0, n_pairs))),
        raw: models.raw.clone(),
        fitted: models.fitted_regressors(None)?,
        n: 1,
    };
    let value = compute(&observed)?.reversed_axes().as_standard_layout().into_owned();
    let n_maps = models.n_maps();
    let mut batch: Option<(u64, Array2<f64>)> = None;
    MapBlock::compute(value, perms, |k| {
        checkpoint()?;
        let (seed, scheme, _) = scheme.expect("permutations requested");
        let start = k - k % batch_len;
        if batch.as_ref().map(|(s, _)| *s) != Some(start) {
            let orders: Vec<Vec<usize>> = (start..(start + batch_len).min(end))
                .map(|q| permutation(models.n_conditions, scheme, *seed, q))
                .collect();
            let raw = if needs_raw {
                Models::relabelled(&models.raw, models.n_conditions, &orders)?
            } else {
                Array2::zeros((0, n_pairs))
            };
            let features = match features {
                Some(f) => Models::relabelled(f, models.n_conditions, &orders)?,
                None => Array2::zeros((0, n_pairs)),
            };
            let fitted = models.fitted_regressors(Some(&orders))?;
            let relabelled = Relabelled { features, raw, fitted, n: orders.len() };
            batch = Some((start, compute(&relabelled)?));
        }
        let (_, all) = batch.as_ref().expect("just computed");
        let j = (k - start) as usize;
        Ok(all.slice(s![.., j * n_maps..(j + 1) * n_maps]).t().to_owned())
    })
}

/// The block of centres `centres`, computed chunk by chunk (`block_of` a chunk of at most
/// `chunk` centres) and joined: only one chunk's centre features are held at a time.
fn streamed_nulls(
    centres: std::ops::Range<usize>,
    chunk: usize,
    mut block_of: impl FnMut(std::ops::Range<usize>) -> Result<MapBlock>,
) -> Result<MapBlock> {
    let mut block = block_of(centres.start..(centres.start + chunk).min(centres.end))?;
    for lo in (centres.start + chunk..centres.end).step_by(chunk) {
        block = block.followed_by(block_of(lo..(lo + chunk).min(centres.end))?);
    }
    Ok(block)
}

/// The brain side of a chunk of searchlight centres, computed once: each centre's comparison
/// features (ranked RDM) where the method has them, and the raw RDMs of the centres compared
/// pairwise (NaN in the RDM, or a method without features) — or of every centre, where fitted
/// models or a partition need them.
struct CentreFeatures {
    features: Array2<f64>,
    /// Centres compared pairwise (indices into the chunk).
    pairwise: Vec<usize>,
    /// Raw RDMs: every centre's (`[n_centres, n_pairs]`) or only the pairwise ones' (in
    /// `pairwise` order).
    raw: Array2<f64>,
    all_raw: bool,
}

/// Rows per matrix product (fewer only where a chunk of centres holds fewer).
const CENTRE_BATCH: usize = 128;

impl CentreFeatures {
    /// The centres' features from `rdm_of` (a sphere's members -> its condensed RDM of
    /// `n_pairs` pairs); with `all_raw`, every centre's raw RDM too.
    fn new(
        rdm_of: impl Fn(&[usize]) -> Result<Array1<f64>>,
        n_pairs: usize,
        hoods: &Neighbourhoods,
        centres: std::ops::Range<usize>,
        method: CompareMethod,
        all_raw: bool,
    ) -> Result<Self> {
        let n_features = if method.has_features() { centres.len() } else { 0 };
        let mut features = Array2::<f64>::zeros((n_features, n_pairs));
        let mut pairwise = Vec::new();
        let mut raw_rows = Vec::new();
        for (i, c) in centres.enumerate() {
            let d = rdm_of(hoods.members(c))?;
            let f = comparison_features(d.view(), method).ok();
            match &f {
                Some(f) => features.row_mut(i).assign(f),
                None => pairwise.push(i),
            }
            if all_raw || f.is_none() {
                raw_rows.push(d);
            }
        }
        let mut raw = Array2::<f64>::zeros((raw_rows.len(), n_pairs));
        for (mut row, d) in raw.rows_mut().into_iter().zip(&raw_rows) {
            row.assign(d);
        }
        Ok(CentreFeatures { features, pairwise, raw, all_raw })
    }

    /// Centre `i`'s raw RDM (kept for it).
    fn raw_of(&self, i: usize, pairwise_rank: Option<usize>) -> ndarray::ArrayView1<'_, f64> {
        match (self.all_raw, pairwise_rank) {
            (true, _) => self.raw.row(i),
            (false, Some(r)) => self.raw.row(r),
            (false, None) => unreachable!("raw RDMs are kept for pairwise centres"),
        }
    }

    /// `[n_centres, n * n_maps]`: every centre against every relabelled model (and fitted
    /// model), the models in matrix products of exactly `rows` centres (the last one padded
    /// with zero rows). The GEMM kernels' summation order depends on the matrices' shape, so a
    /// fixed shape is what makes a centre's value the same bytes whichever task or chunk
    /// computes it.
    fn compare(
        &self,
        batch: &Relabelled,
        models: &Models,
        method: CompareMethod,
        rows: usize,
    ) -> Result<Array2<f64>> {
        let n = self.features.nrows().max(self.pairwise.len()).max(self.raw.nrows());
        let (n_models, n_maps) = (models.raw.nrows(), models.n_maps());
        let n_pairs = models.raw.ncols();
        let mut products = Array2::<f64>::zeros((n, batch.features.nrows()));
        let mut padded = None;
        if self.features.nrows() > 0 && batch.features.nrows() > 0 {
            for start in (0..n).step_by(rows) {
                let end = (start + rows).min(n);
                if end - start == rows {
                    Backend::gemm(
                        self.features.slice(s![start..end, ..]),
                        batch.features.t(),
                        products.slice_mut(s![start..end, ..]),
                    );
                } else {
                    let (a, c) = padded.get_or_insert_with(|| {
                        (
                            Array2::<f64>::zeros((rows, n_pairs)),
                            Array2::<f64>::zeros((rows, batch.features.nrows())),
                        )
                    });
                    a.fill(0.0);
                    a.slice_mut(s![..end - start, ..])
                        .assign(&self.features.slice(s![start..end, ..]));
                    Backend::gemm(a.view(), batch.features.t(), c.view_mut());
                    products.slice_mut(s![start..end, ..]).assign(&c.slice(s![..end - start, ..]));
                }
            }
        }
        let mut out = Array2::<f64>::zeros((n, batch.n * n_maps));
        for j in 0..batch.n {
            out.slice_mut(s![.., j * n_maps..j * n_maps + n_models])
                .assign(&products.slice(s![.., j * n_models..(j + 1) * n_models]));
        }
        for (rank, &i) in self.pairwise.iter().enumerate() {
            let d = self.raw_of(i, Some(rank));
            for j in 0..batch.n {
                for m in 0..n_models {
                    let model = batch.raw.row(j * n_models + m);
                    out[(i, j * n_maps + m)] = compare(d, model, method).map_err(JobError::from)?;
                }
            }
        }
        if !models.fitted.is_empty() {
            let per_relabelling: Vec<_> =
                (0..batch.n).map(|j| models.fitted_slice(&batch.fitted, j)).collect();
            for i in 0..n {
                for (j, regressors) in per_relabelling.iter().enumerate() {
                    let values =
                        models.fitted_values(self.raw_of(i, None), regressors, &[method])?;
                    let values = values.into_iter().next().expect("one method");
                    let at = j * n_maps + n_models;
                    out.slice_mut(s![i, at..at + values.len()]).assign(&Array1::from(values));
                }
            }
        }
        Ok(out)
    }
}

/// A searchlight task's part: its maps over the kept centres, the centres, and the observed
/// values per centre of [`item_values`].
fn searchlight_part(
    block: MapBlock,
    hoods: &Neighbourhoods,
    kept: std::ops::Range<usize>,
    items: Vec<(&'static str, Array2<f64>)>,
) -> Part {
    let mut part = Part::new();
    block.write(&mut part);
    let centres: Vec<f64> = hoods.centres[kept].iter().map(|&c| c as f64).collect();
    part.push("centres", vec![centres.len()], centres);
    push_item_values(&mut part, items);
    part
}

/// What brain RDMs (rows of `rdms`: ROIs, centres, time points) get besides their comparisons,
/// observed only (no nulls), each `[n_values, n_items]`: `"partition"`, the variance partition
/// (with `[rsa] partition`), and `"weights"`, every fitted model's weights fitted on all pairs
/// then their intercepts (with fitted models).
fn item_values(
    models: &Models,
    rdms: ndarray::ArrayView2<'_, f64>,
) -> Result<Vec<(&'static str, Array2<f64>)>> {
    let columns = |of: &dyn Fn(ndarray::ArrayView1<'_, f64>) -> Result<Vec<f64>>| {
        let values: Vec<Vec<f64>> = rdms.rows().into_iter().map(of).collect::<Result<_>>()?;
        let n = values.first().map_or(0, Vec::len);
        Ok::<_, crate::WorkerError>(Array2::from_shape_fn((n, values.len()), |(p, i)| values[i][p]))
    };
    let mut out = Vec::new();
    if !models.partition.is_empty() {
        out.push(("partition", columns(&|b| models.partition_values(b))?));
    }
    if !models.fitted.is_empty() {
        out.push(("weights", columns(&|b| models.fitted_weights(b))?));
    }
    Ok(out)
}

/// Writes [`item_values`] into a part under their names.
fn push_item_values(part: &mut Part, items: Vec<(&'static str, Array2<f64>)>) {
    for (name, values) in items {
        part.push(name, values.shape().to_vec(), values.iter().copied().collect());
    }
}

/// The cache key of a subject's model RDMs for an RDM method.
pub(crate) fn models_key(job: &JobContext, si: usize, method: RdmMethod) -> String {
    format!("{}/{si}/{}", job.id, method.as_str())
}

impl Executor {
    /// Model RDMs of a subject for an RDM method: the loaded ones, or built once per process
    /// from the loaded inputs ([`Models::build`]).
    pub(crate) fn models(
        &self,
        job: &JobContext,
        si: usize,
        method: RdmMethod,
        loaded: Option<ModelsLoaded>,
    ) -> Result<Arc<Models>> {
        let inputs = match loaded {
            Some(ModelsLoaded::Built(models)) => return Ok(models),
            Some(ModelsLoaded::Inputs(inputs)) => inputs,
            None => unreachable!("RSA tasks load their models"),
        };
        self.models
            .get_or_build(models_key(job, si, method), || Models::build(job, si, method, inputs))
    }

    /// A subject's searchlight spheres, built once per process.
    fn hoods(&self, job: &JobContext, si: usize, mask: &Mask) -> Result<Arc<Neighbourhoods>> {
        let sl =
            job.spec.searchlight.as_ref().expect("searchlight tasks exist only with [searchlight]");
        self.spheres_of(job, si, mask, sl.radius, sl.min_voxels, "rsa")
    }

    /// The spheres of `radius` (centres with at least `min_voxels` mask voxels) of subject
    /// `si`'s mask, built once per process for the analysis `what` ("rsa", "decoding").
    pub(crate) fn spheres_of(
        &self,
        job: &JobContext,
        si: usize,
        mask: &Mask,
        radius: brainfit_job::spec::Radius,
        min_voxels: usize,
        what: &str,
    ) -> Result<Arc<Neighbourhoods>> {
        self.spheres.get_or_build(format!("{}/{si}/{what}", job.id), || {
            let (radius, size) = radius.with_voxel_size(mask.pixdim);
            Ok(spheres(&mask.voxels, mask.shape, radius, size, min_voxels)
                .map_err(JobError::from)?)
        })
    }

    /// Searchlight RSA of the kept centres among mask voxels `voxels`.
    pub(crate) fn searchlight(
        &self,
        job: &JobContext,
        si: usize,
        voxels: [usize; 2],
        loaded: Loaded,
    ) -> Result<Part> {
        let sl =
            job.spec.searchlight.as_ref().expect("searchlight tasks exist only with [searchlight]");
        let mut loaded = loaded;
        let given_models = loaded.models.take();
        let design = loaded.design.clone().expect("searchlight tasks load the design");
        let design = design.as_ref().as_ref();
        let (matrix, mask, offset, groups) = loaded.sphere_data();
        let hoods = self.hoods(job, si, mask)?;
        // the task's spheres, indexing the loaded columns
        let (kept, local) = crate::execute::task_spheres(&hoods, voxels, offset)?;
        let models = self.models(job, si, sl.rdm, given_models)?;
        let features = models.features(sl.compare);
        let scheme = scheme_for(job, groups, design);
        let n_perm = scheme.as_ref().map_or(0, |s| s.2 as u64);
        let n_pairs = models.raw.ncols();
        let batch_len = perm_batch(&models);
        // With [data] conditions: RDMs of the condition means (whose spheres are handled like
        // any data), or crossnobis RDMs of the observations, sphere by sphere.
        let means;
        let matrix = match design {
            Some(d) if sl.rdm != RdmMethod::Crossnobis => {
                means = with_matrix!(matrix, |y| brainfit_job::inputs::Matrix::F64(
                    d.condition_means(y.view()).map_err(JobError::from)?
                ));
                &means
            }
            _ => matrix,
        };
        let crossnobis = design.filter(|_| sl.rdm == RdmMethod::Crossnobis);
        let fitted = !models.fitted.is_empty() || !models.partition.is_empty();
        // The kernels' batched searchlight engine serves plain comparisons without
        // permutations, or without comparison features. Otherwise each centre's RDM is ranked
        // once for the observed value and every permutation: the nulls are then matrix
        // products against the relabelled models; centres whose RDM holds NaN, pairwise
        // methods and fitted models go centre by centre.
        if crossnobis.is_none() && !fitted && (features.is_none() || n_perm == 0) {
            let block = with_matrix!(matrix, |y| with_nulls(
                &models,
                features.as_ref(),
                true,
                0..n_perm,
                batch_len,
                scheme.as_ref(),
                |batch| {
                    let out = searchlight::<_, Backend>(
                        y.view(),
                        &local,
                        0..local.len(),
                        sl.rdm,
                        batch.features.view(),
                        batch.raw.view(),
                        sl.compare,
                    );
                    Ok(out.map_err(JobError::from)?)
                },
            ))?;
            return Ok(searchlight_part(block, &hoods, kept, Vec::new()));
        }
        let mut items: Vec<Vec<(&'static str, Array2<f64>)>> = Vec::new();
        let block = with_matrix!(matrix, |y| {
            let rdm_of = |members: &[usize]| -> Result<Array1<f64>> {
                Ok(match crossnobis {
                    Some(d) => {
                        let sphere = y.select(Axis(1), members);
                        d.rdm(sphere.view(), sl.rdm, sl.noise).map_err(JobError::from)?
                    }
                    None => sphere_rdm(y.view(), members, sl.rdm).map_err(JobError::from)?,
                })
            };
            let chunk = centre_chunk(n_pairs);
            let rows = chunk.min(CENTRE_BATCH);
            streamed_nulls(0..local.len(), chunk, |centres| {
                let centres =
                    CentreFeatures::new(rdm_of, n_pairs, &local, centres, sl.compare, fitted)?;
                if fitted {
                    items.push(item_values(&models, centres.raw.view())?);
                }
                with_nulls(
                    &models,
                    features.as_ref(),
                    !centres.pairwise.is_empty(),
                    0..n_perm,
                    batch_len,
                    scheme.as_ref(),
                    |batch| centres.compare(batch, &models, sl.compare, rows),
                )
            })?
        });
        // the chunks' values side by side
        let joined = match items.first() {
            None => Vec::new(),
            Some(first) => (0..first.len())
                .map(|k| {
                    let views: Vec<_> = items.iter().map(|chunk| chunk[k].1.view()).collect();
                    let all = ndarray::concatenate(Axis(1), &views).expect("chunks alike");
                    (first[k].0, all)
                })
                .collect(),
        };
        Ok(searchlight_part(block, &hoods, kept, joined))
    }

    /// ROI-level RSA: every brain RDM (given, ROI, and the mean of each ceiling group) ×
    /// model × comparison method; with permutations their nulls, with ceiling groups the noise
    /// ceilings and with `[rsa] partition` each brain RDM's variance partition.
    pub(crate) fn roi_rsa(
        &self,
        job: &JobContext,
        si: usize,
        perms: [usize; 2],
        loaded: Loaded,
    ) -> Result<Part> {
        let r = job.spec.rsa.as_ref().expect("rsa tasks exist only with [rsa]");
        let mut brains: Vec<Array1<f64>> = loaded.brain_rdms;
        // the ROIs' voxels: columns of the task's own read, or of the subject's whole matrix
        let patterns = loaded.columns.as_ref().or(loaded.brain.as_ref().map(|b| &b.matrix));
        let design = loaded.design.as_deref().and_then(Option::as_ref);
        for (url, cols) in r.rois.values().zip(&loaded.roi_columns) {
            let patterns = patterns.expect("ROI tasks load brain patterns");
            let d = with_matrix!(patterns, |y| {
                let roi = y.select(Axis(1), cols);
                match design {
                    Some(d) => d.rdm(roi.view(), r.rdm, r.noise),
                    None => rdm(roi.view(), r.rdm),
                }
            });
            brains.push(d.map_err(|e| JobError::Input {
                url: url.clone(),
                message: format!("ROI RDM: {e}"),
            })?);
        }
        let models = self.models(job, si, r.rdm, loaded.models)?;
        let names = brain_rdm_names(&job.spec);
        let groups: Vec<Vec<usize>> = r
            .ceiling
            .values()
            .map(|members| {
                members
                    .iter()
                    .map(|m| names.iter().position(|n| n == m).expect("checked"))
                    .collect()
            })
            .collect();
        let scheme = scheme_for(job, loaded.groups.as_deref().and_then(Option::as_deref), design);
        // Per method: the brains' and models' comparison features where they exist (then a
        // comparison is a dot product and a relabelling only re-indexes the model's features).
        let brain_features: Vec<Vec<Option<Array1<f64>>>> = r
            .compare
            .iter()
            .map(|&m| brains.iter().map(|b| comparison_features(b.view(), m).ok()).collect())
            .collect();
        let model_features: Vec<Option<Array2<f64>>> =
            r.compare.iter().map(|&m| models.features(m)).collect();
        let (n_models, n_maps) = (models.raw.nrows(), models.n_maps());
        let n_rows = brains.len() + groups.len();
        // maps = comparison methods; items = (brain or group) × model pairs, brain-major
        let compute = |order: Option<&[usize]>| -> Result<Array2<f64>> {
            let relabel = |rows: &Array2<f64>| match order {
                None => Ok(rows.clone()),
                Some(o) => Models::relabelled(rows, models.n_conditions, &[o.to_vec()]),
            };
            let raw = relabel(&models.raw)?;
            let orders = order.map(|o| [o.to_vec()]);
            let stacked = models.fitted_regressors(orders.as_ref().map(|o| &o[..]))?;
            let fitted = models.fitted_slice(&stacked, 0);
            // [brain][method][value]: each fold's fit serves every method
            let fitted_values = brains
                .iter()
                .map(|b| models.fitted_values(b.view(), &fitted, &r.compare))
                .collect::<Result<Vec<_>>>()?;
            let mut out = Array2::<f64>::zeros((r.compare.len(), n_rows * n_maps));
            for (mi, &method) in r.compare.iter().enumerate() {
                let feats = model_features[mi].as_ref().map(relabel).transpose()?;
                for (b, brdm) in brains.iter().enumerate() {
                    for j in 0..n_models {
                        out[(mi, b * n_maps + j)] = match (&brain_features[mi][b], &feats) {
                            (Some(bf), Some(f)) => bf.dot(&f.row(j)),
                            _ => {
                                compare(brdm.view(), raw.row(j), method).map_err(JobError::from)?
                            }
                        };
                    }
                    for (j, &v) in fitted_values[b][mi].iter().enumerate() {
                        out[(mi, b * n_maps + n_models + j)] = v;
                    }
                }
                // a group's value: its subjects' mean
                for (g, members) in groups.iter().enumerate() {
                    for j in 0..n_maps {
                        let sum: f64 = members.iter().map(|&b| out[(mi, b * n_maps + j)]).sum();
                        out[(mi, (brains.len() + g) * n_maps + j)] = sum / members.len() as f64;
                    }
                }
            }
            Ok(out)
        };
        let block = MapBlock::compute(compute(None)?, perms[0] as u64..perms[1] as u64, |k| {
            checkpoint()?;
            let (seed, scheme, _) = scheme.as_ref().expect("permutations requested");
            compute(Some(&permutation(models.n_conditions, scheme, *seed, k)))
        })?;
        let mut part = Part::new();
        block.write(&mut part);
        if perms[0] == 0 {
            for (name, b) in names.iter().zip(&brains) {
                part.push(&format!("rdm:{name}"), vec![b.len()], b.to_vec());
            }
            let mut ceilings = Vec::new();
            for members in &groups {
                let mut rdms = Array2::<f64>::zeros((members.len(), models.raw.ncols()));
                for (mut row, &b) in rdms.rows_mut().into_iter().zip(members) {
                    row.assign(&brains[b]);
                }
                for &method in &r.compare {
                    let (lower, upper) =
                        noise_ceiling(rdms.view(), method).map_err(JobError::from)?;
                    ceilings.extend([lower, upper]);
                }
            }
            if !groups.is_empty() {
                part.push("ceiling", vec![groups.len(), r.compare.len(), 2], ceilings);
            }
            let mut rdms = Array2::<f64>::zeros((brains.len(), models.raw.ncols()));
            for (mut row, b) in rdms.rows_mut().into_iter().zip(&brains) {
                row.assign(b);
            }
            push_item_values(&mut part, item_values(&models, rdms.view())?);
        }
        Ok(part)
    }

    /// Time-resolved RSA of the job's `[time_resolved]` data against subject 0's models; with
    /// `cross_temporal`, the time × time matrix too.
    pub(crate) fn time_resolved(
        &self,
        job: &JobContext,
        perms: [usize; 2],
        loaded: Loaded,
    ) -> Result<Part> {
        let t = job
            .spec
            .time_resolved
            .as_ref()
            .expect("time-resolved tasks exist only with [time_resolved]");
        let data = loaded.time_data.expect("time-resolved tasks load their data");
        let models = self.models(job, 0, t.rdm, loaded.models)?;
        let features = models.features(t.compare);
        let design = loaded.design.as_deref().and_then(Option::as_ref);
        let scheme = scheme_for(job, loaded.groups.as_deref().and_then(Option::as_deref), design);
        let fitted = !models.fitted.is_empty() || !models.partition.is_empty();
        let rdms = if fitted { Some(rdms_over_time(&data, t.rdm)?) } else { None };
        let (n_models, n_maps) = (models.raw.nrows(), models.n_maps());
        let block = with_nulls(
            &models,
            features.as_ref(),
            true,
            perms[0] as u64..perms[1] as u64,
            perm_batch(&models),
            scheme.as_ref(),
            |batch| {
                let plain = time_resolved::<f64, Backend>(
                    data.view(),
                    t.rdm,
                    batch.features.view(),
                    batch.raw.view(),
                    t.compare,
                )
                .map_err(JobError::from)?;
                let Some(rdms) = &rdms else { return Ok(plain) };
                let mut out = Array2::<f64>::zeros((plain.nrows(), batch.n * n_maps));
                for j in 0..batch.n {
                    let regressors = models.fitted_slice(&batch.fitted, j);
                    out.slice_mut(s![.., j * n_maps..j * n_maps + n_models])
                        .assign(&plain.slice(s![.., j * n_models..(j + 1) * n_models]));
                    for (time, brain) in rdms.rows().into_iter().enumerate() {
                        let values = models.fitted_values(brain, &regressors, &[t.compare])?;
                        let values = values.into_iter().next().expect("one method");
                        let at = j * n_maps + n_models;
                        out.slice_mut(s![time, at..at + values.len()])
                            .assign(&Array1::from(values));
                    }
                }
                Ok(out)
            },
        )?;
        let mut part = Part::new();
        block.write(&mut part);
        if let (Some(rdms), 0) = (&rdms, perms[0]) {
            push_item_values(&mut part, item_values(&models, rdms.view())?);
        }
        if t.cross_temporal {
            let (second, itself) = match loaded.cross_data.as_deref() {
                Some(second) => (second, false),
                None => (&*data, true),
            };
            let perms = perms[0] as u64..perms[1] as u64;
            let cross =
                cross_temporal(&data, second, itself, t.rdm, t.compare, perms, scheme.as_ref())?;
            cross.write_as(&mut part, CROSS_TEMPORAL_PREFIX);
            let shape = vec![data.shape()[0] as f64, second.shape()[0] as f64];
            part.push(&format!("{CROSS_TEMPORAL_PREFIX}shape"), vec![2], shape);
        }
        Ok(part)
    }
}

/// The RDM of every time point of `[n_times, n_conditions, n_channels]` data, `[n_times, n_pairs]`.
fn rdms_over_time(data: &ndarray::Array3<f64>, method: RdmMethod) -> Result<Array2<f64>> {
    let n_pairs = brainfit_kernels::rdm::condensed_len(data.shape()[1]);
    let mut out = Array2::<f64>::zeros((data.shape()[0], n_pairs));
    for (mut row, x) in out.rows_mut().into_iter().zip(data.outer_iter()) {
        row.assign(&rdm(x, method).map_err(JobError::from)?);
    }
    Ok(out)
}

/// Cross-temporal RSA: the brain RDM of `first` at every time `t₁` against that of `second`
/// at every `t₂`, one map of `n_times₁ × n_times₂` items (row-major), with the nulls of the
/// permutations `perms`, which relabel the conditions of `second`'s RDMs. Comparisons are dot
/// products of comparison features where the method has them, else pairwise. When `second`
/// is `first` itself (`itself`), the diagonal compares each RDM with itself (1 by
/// construction, and significant under any relabelling): it is NaN, outside the family; and
/// the lower triangle mirrors the upper one, so that each pair of times is one item in the
/// observed matrix and in every null (else the nulls' maxima would run over twice as many
/// distinct values as the observed one, and the correction would be conservative).
fn cross_temporal(
    first: &ndarray::Array3<f64>,
    second: &ndarray::Array3<f64>,
    itself: bool,
    rdm_method: RdmMethod,
    method: CompareMethod,
    perms: std::ops::Range<u64>,
    scheme: Option<&(u64, Scheme, usize)>,
) -> Result<MapBlock> {
    let n = first.shape()[1];
    let (a, b) = (rdms_over_time(first, rdm_method)?, rdms_over_time(second, rdm_method)?);
    let features = |rows: &Array2<f64>| -> Option<Array2<f64>> {
        let mut out = Array2::<f64>::zeros(rows.dim());
        for (mut o, r) in out.rows_mut().into_iter().zip(rows.rows()) {
            o.assign(&comparison_features(r, method).ok()?);
        }
        Some(out)
    };
    let (fa, fb) = (features(&a), features(&b));
    // with features on both sides a relabelling re-indexes the second recording's features
    // only; else its raw RDMs, compared pairwise
    let by_features = fa.is_some() && fb.is_some();
    let compute = |b: &Array2<f64>, fb: Option<&Array2<f64>>| -> Result<Array2<f64>> {
        let out = match (&fa, fb) {
            (Some(fa), Some(fb)) => {
                let mut out = Array2::<f64>::zeros((fa.nrows(), fb.nrows()));
                Backend::gemm(fa.view(), fb.t(), out.view_mut());
                out
            }
            _ => {
                let mut out = Array2::<f64>::zeros((a.nrows(), b.nrows()));
                for ((i, j), o) in out.indexed_iter_mut() {
                    *o = compare(a.row(i), b.row(j), method).map_err(JobError::from)?;
                }
                out
            }
        };
        let mut out = out;
        if itself {
            // the upper triangle, mirrored: each pair of times is one item, in the observed
            // matrix and in every null alike
            for i in 0..out.nrows() {
                out[(i, i)] = f64::NAN;
                for j in 0..i {
                    out[(i, j)] = out[(j, i)];
                }
            }
        }
        let items = out.len();
        Ok(out.into_shape_with_order((1, items)).expect("a contiguous matrix"))
    };
    MapBlock::compute(compute(&b, fb.as_ref())?, perms, |k| {
        checkpoint()?;
        let (seed, scheme, _) = scheme.expect("permutations requested");
        let order = [permutation(n, scheme, *seed, k)];
        if by_features {
            let f = Models::relabelled(fb.as_ref().expect("features"), n, &order)?;
            compute(&b, Some(&f))
        } else {
            compute(&Models::relabelled(&b, n, &order)?, None)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use brainfit_kernels::rng::Rng;

    fn models(raw: Array2<f64>, n_conditions: usize) -> Models {
        Models { raw, n_conditions, fitted: Vec::new(), partition: Vec::new() }
    }

    /// A 4×4×3 box of voxels with 12 conditions, two random models, five free permutations.
    fn fixture() -> (Array2<f64>, Neighbourhoods, Models, (u64, Scheme, usize)) {
        let mut rng = Rng::new(7);
        let voxels: Vec<[usize; 3]> = (0..48).map(|i| [i / 12, (i / 3) % 4, i % 3]).collect();
        let hoods = spheres(&voxels, [4, 4, 3], 1.0, [1.0; 3], 1).unwrap();
        let y: Array2<f64> = rng.normal_array((12, 48));
        let n_pairs = brainfit_kernels::rdm::condensed_len(12);
        let raw: Array2<f64> = rng.normal_array((2, n_pairs));
        (y, hoods, models(raw, 12), (3, Scheme::Free, 5))
    }

    #[test]
    fn streaming_over_centres_and_permutation_batches_changes_no_number() {
        let (y, hoods, models, scheme) = fixture();
        let features = models.features(CompareMethod::Spearman);
        let (rdm, cmp) = (RdmMethod::Correlation, CompareMethod::Spearman);
        let centres = 0..hoods.centres.len();
        let n_pairs = brainfit_kernels::rdm::condensed_len(12);
        let rdm_of = |m: &[usize]| -> Result<Array1<f64>> {
            Ok(sphere_rdm(y.view(), m, rdm).map_err(JobError::from)?)
        };
        // matrix products of 4 rows, as a job whose chunks hold 4 centres would use
        let run = |chunk: usize, batch_len: u64| {
            streamed_nulls(centres.clone(), chunk, |c| {
                let f = CentreFeatures::new(rdm_of, n_pairs, &hoods, c, cmp, false)?;
                let raw = !f.pairwise.is_empty();
                with_nulls(
                    &models,
                    features.as_ref(),
                    raw,
                    0..5,
                    batch_len,
                    Some(&scheme),
                    |batch| f.compare(batch, &models, cmp, 4),
                )
            })
            .unwrap()
        };
        let whole = run(centres.len(), PERM_BATCH);
        assert_eq!(whole.value.dim(), (2, 48));
        assert!(whole.null_max.as_ref().unwrap().iter().all(|v| v.is_finite()));
        // (without the fixed shape of the products, chunks under 48 centres changed the last
        // bits of values and maxima)
        for (chunk, batch_len) in [(1, 1), (3, 128), (7, 2), (20, 4), (48, 5), (100, 3)] {
            let streamed = run(chunk, batch_len);
            assert_eq!(streamed.value, whole.value, "chunk {chunk}, batch {batch_len}");
            assert_eq!(streamed.count_ge, whole.count_ge, "chunk {chunk}, batch {batch_len}");
            assert_eq!(streamed.null_max, whole.null_max, "chunk {chunk}, batch {batch_len}");
        }
        // an empty range of centres is an empty block, not an error
        let empty = streamed_nulls(3..3, 7, |c| {
            let f = CentreFeatures::new(rdm_of, n_pairs, &hoods, c, cmp, false)?;
            with_nulls(&models, features.as_ref(), true, 0..5, 2, Some(&scheme), |batch| {
                f.compare(batch, &models, cmp, 4)
            })
        })
        .unwrap();
        assert_eq!(empty.value.dim(), (2, 0));
    }

    #[test]
    fn batches_fit_their_byte_budgets() {
        // 92 conditions: full batches; 1,000 conditions and 4 models: 4 MB per relabelled RDM
        let small = models(Array2::zeros((4, 4186)), 92);
        assert_eq!(perm_batch(&small), PERM_BATCH);
        let large = models(Array2::zeros((4, 499_500)), 1000);
        let b = perm_batch(&large) as usize;
        assert!((1..PERM_BATCH as usize).contains(&b), "{b}");
        assert!(b * 2 * large.raw.len() * 8 <= PERM_BATCH_BYTES);
        let huge = models(Array2::zeros((64, 2_000_000)), 2000);
        assert_eq!(perm_batch(&huge), 1, "at least one permutation per batch");
        assert_eq!(centre_chunk(4186) % CENTRE_BATCH, 0);
        assert!(centre_chunk(4186) * 4186 * 8 <= CENTRE_CHUNK_BYTES);
        let c = centre_chunk(499_500);
        assert!(c >= 1 && c * 499_500 * 8 <= CENTRE_CHUNK_BYTES, "{c}");
        assert_eq!(centre_chunk(usize::MAX / 16), 1);
    }
}
