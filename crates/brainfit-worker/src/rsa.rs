//! Computing the RSA tasks: searchlight, ROI-level and time-resolved RSA, with their nulls.
//!
//! Model RDMs (given directly, or computed from each feature space's activations) are built
//! once per subject and RDM method. A permutation relabels the conditions of the model RDMs
//! (rows and columns together); since a relabelled RDM's comparison features are the relabelled
//! features, brain RDMs are ranked once and a batch of permutations is one matrix product
//! against the stacked relabelled models.

use crate::execute::{Executor, Loaded, ModelsLoaded, checkpoint};
use crate::{JobContext, Result};
use brainfit_io::Mask;
use brainfit_job::plan::{brain_rdm_names, model_names};
use brainfit_job::stats::{CROSS_TEMPORAL_PREFIX, MapBlock};
use brainfit_job::{JobError, Part, with_matrix};
use brainfit_kernels::compare::{CompareMethod, Relabeller, compare, comparison_features};
use brainfit_kernels::linalg::Backend;
use brainfit_kernels::linalg::LinalgBackend;
use brainfit_kernels::permutation::{Scheme, permutation};
use brainfit_kernels::rdm::{ObservationDesign, RdmMethod, n_conditions_from_condensed, rdm};
use brainfit_kernels::searchlight::{
    Neighbourhoods, searchlight, sphere_rdm, spheres, time_resolved,
};
use ndarray::{Array1, Array2, Axis, s};
use std::sync::Arc;

/// Permutations computed per matrix product, at most.
const PERM_BATCH: u64 = 128;

/// Bytes the relabelled models of one permutation batch (raw RDMs and comparison features) may
/// take: with many conditions a batch holds fewer than [`PERM_BATCH`] permutations.
const PERM_BATCH_BYTES: usize = 256 << 20;

/// Bytes the comparison features of one chunk of searchlight centres may take: a task streams
/// over its centres in chunks, so its memory is bounded whatever its size and condition count.
const CENTRE_CHUNK_BYTES: usize = 256 << 20;

/// A subject's model RDMs for one RDM method.
#[derive(Debug)]
pub(crate) struct Models {
    /// Condensed RDMs, `[n_models, n_pairs]`.
    pub raw: Array2<f64>,
    /// Number of conditions.
    pub n_conditions: usize,
}

impl Models {
    /// Comparison features of every model, or None where they do not exist (Kendall's tau-a,
    /// or a model RDM holding NaN): then comparisons go pairwise.
    fn features(&self, method: CompareMethod) -> Option<Array2<f64>> {
        let mut out = Array2::<f64>::zeros(self.raw.dim());
        for (mut o, m) in out.rows_mut().into_iter().zip(self.raw.rows()) {
            o.assign(&comparison_features(m, method).ok()?);
        }
        Some(out)
    }

    /// The models relabelled by permutation `perm`, stacked after each other for several
    /// permutations: `[n_perms * n_models, n_pairs]`.
    fn relabelled(rows: &Array2<f64>, n: usize, perms: &[Vec<usize>]) -> Result<Array2<f64>> {
        let m = rows.nrows();
        let relabellers = rows
            .rows()
            .into_iter()
            .map(|row| Relabeller::new(row, n))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(JobError::from)?;
        let mut out = Array2::<f64>::zeros((perms.len() * m, rows.ncols()));
        for (k, perm) in perms.iter().enumerate() {
            for (j, relabeller) in relabellers.iter().enumerate() {
                let mut row = out.row_mut(k * m + j);
                let row = row.as_slice_mut().expect("rows of a new array are contiguous");
                relabeller.relabel_into(perm, row).map_err(JobError::from)?;
            }
        }
        Ok(out)
    }
}

/// Permutations per batch for `models`: [`PERM_BATCH`], or fewer where their relabelled
/// copies would exceed [`PERM_BATCH_BYTES`]. Depends only on the models, so every task of a job
/// batches alike.
fn perm_batch(models: &Models) -> u64 {
    let per_permutation = 2 * models.raw.len() * std::mem::size_of::<f64>();
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

/// Observed values `[n_maps, n_items]` from `compute(models_features, models_raw)` (which
/// returns `[n_items, n_models]`), and the nulls of permutations `perms`, computed in batches
/// of `batch_len` permutations (aligned to multiples of it, never past `perms.end`). Without
/// `needs_raw`, `compute` gets no relabelled raw models (zero rows): only features.
fn with_nulls(
    models: &Models,
    features: Option<&Array2<f64>>,
    needs_raw: bool,
    perms: std::ops::Range<u64>,
    batch_len: u64,
    scheme: Option<&(u64, Scheme, usize)>,
    compute: impl Fn(&Array2<f64>, &Array2<f64>) -> Result<Array2<f64>>,
) -> Result<MapBlock> {
    let end = perms.end;
    let empty = Array2::<f64>::zeros((0, 0));
    let value = compute(features.unwrap_or(&empty), &models.raw)?
        .reversed_axes()
        .as_standard_layout()
        .into_owned();
    let n_models = models.raw.nrows();
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
                Array2::zeros((0, models.raw.ncols()))
            };
            let feats = match features {
                Some(f) => Models::relabelled(f, models.n_conditions, &orders)?,
                None => empty.clone(),
            };
            batch = Some((start, compute(&feats, &raw)?));
        }
        let (_, all) = batch.as_ref().expect("just computed");
        let j = (k - start) as usize;
        Ok(all.slice(s![.., j * n_models..(j + 1) * n_models]).t().to_owned())
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
/// features (ranked RDM), or its raw RDM where that holds NaN (compared pairwise).
struct CentreFeatures {
    features: Array2<f64>,
    pairwise: Vec<(usize, Array1<f64>)>,
}

/// Rows per matrix product (fewer only where a chunk of centres holds fewer).
const CENTRE_BATCH: usize = 128;

impl CentreFeatures {
    /// The centres' features from `rdm_of` (a sphere's members -> its condensed RDM of
    /// `n_pairs` pairs).
    fn new(
        rdm_of: impl Fn(&[usize]) -> Result<Array1<f64>>,
        n_pairs: usize,
        hoods: &Neighbourhoods,
        centres: std::ops::Range<usize>,
        method: CompareMethod,
    ) -> Result<Self> {
        let mut features = Array2::<f64>::zeros((centres.len(), n_pairs));
        let mut pairwise = Vec::new();
        for (i, c) in centres.enumerate() {
            let d = rdm_of(hoods.members(c))?;
            if d.iter().any(|v| v.is_nan()) {
                pairwise.push((i, d));
            } else {
                features
                    .row_mut(i)
                    .assign(&comparison_features(d.view(), method).map_err(JobError::from)?);
            }
        }
        Ok(CentreFeatures { features, pairwise })
    }

    /// `[n_centres, n_models]`: every centre against every (stacked, relabelled) model, in
    /// matrix products of exactly `rows` centres (the last one padded with zero rows). The
    /// GEMM kernels' summation order depends on the matrices' shape, so a fixed shape is what
    /// makes a centre's value the same bytes whichever task or chunk computes it.
    fn compare(
        &self,
        models_features: &Array2<f64>,
        models_raw: &Array2<f64>,
        method: CompareMethod,
        rows: usize,
    ) -> Result<Array2<f64>> {
        let (n, n_pairs) = self.features.dim();
        let mut out = Array2::<f64>::zeros((n, models_features.nrows()));
        let mut padded = None;
        for start in (0..n).step_by(rows) {
            let end = (start + rows).min(n);
            if end - start == rows {
                Backend::gemm(
                    self.features.slice(s![start..end, ..]),
                    models_features.t(),
                    out.slice_mut(s![start..end, ..]),
                );
            } else {
                let (a, c) = padded.get_or_insert_with(|| {
                    (
                        Array2::<f64>::zeros((rows, n_pairs)),
                        Array2::<f64>::zeros((rows, models_features.nrows())),
                    )
                });
                a.fill(0.0);
                a.slice_mut(s![..end - start, ..]).assign(&self.features.slice(s![start..end, ..]));
                Backend::gemm(a.view(), models_features.t(), c.view_mut());
                out.slice_mut(s![start..end, ..]).assign(&c.slice(s![..end - start, ..]));
            }
        }
        for (i, d) in &self.pairwise {
            for (j, m) in models_raw.rows().into_iter().enumerate() {
                out[(*i, j)] = compare(d.view(), m, method).map_err(JobError::from)?;
            }
        }
        Ok(out)
    }
}

/// A searchlight task's part: its maps over the kept centres, and the centres.
fn searchlight_part(block: MapBlock, hoods: &Neighbourhoods, kept: std::ops::Range<usize>) -> Part {
    let mut part = Part::new();
    block.write(&mut part);
    let centres: Vec<f64> = hoods.centres[kept].iter().map(|&c| c as f64).collect();
    part.push("centres", vec![centres.len()], centres);
    part
}

/// The cache key of a subject's model RDMs for an RDM method.
pub(crate) fn models_key(job: &JobContext, si: usize, method: RdmMethod) -> String {
    format!("{}/{si}/{}", job.id, method.as_str())
}

impl Executor {
    /// Model RDMs of a subject for an RDM method: the loaded ones, or built once per process
    /// from the loaded inputs (given RDMs, then one RDM per feature space).
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
        self.models.get_or_build(models_key(job, si, method), || {
            let inv = &job.inventory.subjects[si];
            let design = inputs.design.as_deref().and_then(Option::as_ref);
            // with [data] conditions, activations are averaged per condition; crossnobis
            // estimates Euclidean geometry, so the models' RDMs are Euclidean then
            let model_method =
                if method == RdmMethod::Crossnobis { RdmMethod::Euclidean } else { method };
            let per_condition = |x: &Array2<f64>| -> Result<Array2<f64>> {
                Ok(match design {
                    Some(d) => d.condition_means(x.view()).map_err(JobError::from)?,
                    None => x.clone(),
                })
            };
            let mut rows = inputs.given;
            for ((space, _), x) in inv.spaces.iter().zip(&inputs.spaces) {
                let d = rdm(per_condition(x)?.view(), model_method);
                rows.push(d.map_err(|e| JobError::Input {
                    url: space.url.clone(),
                    message: format!("model RDM of feature space {}: {e}", space.name),
                })?);
            }
            let n_pairs = rows.first().map_or(0, ndarray::ArrayBase::len);
            let names = model_names(&job.spec, inv);
            let n_conditions = n_conditions_from_condensed(n_pairs).map_err(JobError::from)?;
            let mut raw = Array2::<f64>::zeros((rows.len(), n_pairs));
            for (i, r) in rows.iter().enumerate() {
                if r.len() != n_pairs {
                    return Err(JobError::Corrupt(format!(
                        "model {} has {} pairs, expected {n_pairs}",
                        names[i],
                        r.len()
                    ))
                    .into());
                }
                raw.row_mut(i).assign(r);
            }
            Ok(Models { raw, n_conditions })
        })
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
        let n_pairs = models.raw.ncols();
        // With [data] conditions: RDMs of the condition means (whose spheres the engine below
        // handles like any data), or crossnobis RDMs of the observations, sphere by sphere.
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
        if let Some(d) = design.filter(|_| sl.rdm == RdmMethod::Crossnobis) {
            let block = with_matrix!(matrix, |y| {
                let rdm_of = |members: &[usize]| -> Result<Array1<f64>> {
                    let sphere = y.select(Axis(1), members);
                    Ok(d.rdm(sphere.view(), sl.rdm, sl.noise).map_err(JobError::from)?)
                };
                let chunk = centre_chunk(n_pairs);
                let rows = chunk.min(CENTRE_BATCH);
                streamed_nulls(0..local.len(), chunk, |centres| {
                    let centres =
                        CentreFeatures::new(&rdm_of, n_pairs, &local, centres, sl.compare)?;
                    with_nulls(
                        &models,
                        features.as_ref(),
                        features.is_none() || !centres.pairwise.is_empty(),
                        0..scheme.as_ref().map_or(0, |s| s.2 as u64),
                        perm_batch(&models),
                        scheme.as_ref(),
                        |f, r| centres.compare(f, r, sl.compare, rows),
                    )
                })?
            });
            return Ok(searchlight_part(block, &hoods, kept));
        }
        let n_perm = scheme.as_ref().map_or(0, |s| s.2 as u64);
        // With permutations and comparison features (every method but tau-a), each centre's RDM
        // is ranked once for the observed value and every permutation: the nulls are then
        // matrix products against the relabelled models. Centres whose RDM holds NaN go
        // pairwise. Otherwise the kernels' batched searchlight engine does it all.
        let batch_len = perm_batch(&models);
        let block = with_matrix!(matrix, |y| {
            if features.is_some() && n_perm > 0 {
                let chunk = centre_chunk(models.raw.ncols());
                let rows = chunk.min(CENTRE_BATCH);
                let rdm_of = |members: &[usize]| -> Result<Array1<f64>> {
                    Ok(sphere_rdm(y.view(), members, sl.rdm).map_err(JobError::from)?)
                };
                streamed_nulls(0..local.len(), chunk, |centres| {
                    let centres =
                        CentreFeatures::new(&rdm_of, n_pairs, &local, centres, sl.compare)?;
                    with_nulls(
                        &models,
                        features.as_ref(),
                        !centres.pairwise.is_empty(),
                        0..n_perm,
                        batch_len,
                        scheme.as_ref(),
                        |f, r| centres.compare(f, r, sl.compare, rows),
                    )
                })?
            } else {
                with_nulls(
                    &models,
                    features.as_ref(),
                    true,
                    0..n_perm,
                    batch_len,
                    scheme.as_ref(),
                    |f, r| {
                        let out = searchlight::<_, Backend>(
                            y.view(),
                            &local,
                            0..local.len(),
                            sl.rdm,
                            f.view(),
                            r.view(),
                            sl.compare,
                        );
                        Ok(out.map_err(JobError::from)?)
                    },
                )?
            }
        });
        Ok(searchlight_part(block, &hoods, kept))
    }

    /// ROI-level RSA: every brain RDM × model × comparison method.
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
        let n_models = models.raw.nrows();
        // maps = comparison methods; items = brain × model pairs, brain-major
        let compute = |order: Option<&[usize]>| -> Result<Array2<f64>> {
            let relabel = |rows: &Array2<f64>| match order {
                None => Ok(rows.clone()),
                Some(o) => Models::relabelled(rows, models.n_conditions, &[o.to_vec()]),
            };
            let raw = relabel(&models.raw)?;
            let mut out = Array2::<f64>::zeros((r.compare.len(), brains.len() * n_models));
            for (mi, &method) in r.compare.iter().enumerate() {
                let feats = model_features[mi].as_ref().map(relabel).transpose()?;
                for (b, brdm) in brains.iter().enumerate() {
                    for j in 0..n_models {
                        out[(mi, b * n_models + j)] = match (&brain_features[mi][b], &feats) {
                            (Some(bf), Some(f)) => bf.dot(&f.row(j)),
                            _ => {
                                compare(brdm.view(), raw.row(j), method).map_err(JobError::from)?
                            }
                        };
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
        }
        Ok(part)
    }

    /// Time-resolved RSA of the job's `[time_resolved]` data against subject 0's models.
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
        let scheme = scheme_for(job, loaded.groups.as_deref().and_then(Option::as_deref), None);
        let block = with_nulls(
            &models,
            features.as_ref(),
            true,
            perms[0] as u64..perms[1] as u64,
            perm_batch(&models),
            scheme.as_ref(),
            |f, r| {
                Ok(time_resolved::<f64, Backend>(data.view(), t.rdm, f.view(), r.view(), t.compare)
                    .map_err(JobError::from)?)
            },
        )?;
        let mut part = Part::new();
        block.write(&mut part);
        if t.cross_temporal {
            let second = loaded.cross_data.as_deref().unwrap_or(&data);
            let perms = perms[0] as u64..perms[1] as u64;
            let cross = cross_temporal(&data, second, t.rdm, t.compare, perms, scheme.as_ref())?;
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
/// products of comparison features where the method has them, else pairwise.
fn cross_temporal(
    first: &ndarray::Array3<f64>,
    second: &ndarray::Array3<f64>,
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
    let compute = |b: &Array2<f64>, fb: Option<&Array2<f64>>| -> Result<Array2<f64>> {
        let out = match (&fa, fb) {
            (Some(fa), Some(fb)) => fa.dot(&fb.t()),
            _ => {
                let mut out = Array2::<f64>::zeros((a.nrows(), b.nrows()));
                for ((i, j), o) in out.indexed_iter_mut() {
                    *o = compare(a.row(i), b.row(j), method).map_err(JobError::from)?;
                }
                out
            }
        };
        let items = out.len();
        Ok(out.into_shape_with_order((1, items)).expect("a contiguous matrix"))
    };
    MapBlock::compute(compute(&b, fb.as_ref())?, perms, |k| {
        checkpoint()?;
        let (seed, scheme, _) = scheme.expect("permutations requested");
        let order = [permutation(n, scheme, *seed, k)];
        let relabelled_features =
            fb.as_ref().map(|f| Models::relabelled(f, n, &order)).transpose()?;
        compute(&Models::relabelled(&b, n, &order)?, relabelled_features.as_ref())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use brainfit_kernels::rng::Rng;

    /// A 4×4×3 box of voxels with 12 conditions, two random models, five free permutations.
    fn fixture() -> (Array2<f64>, Neighbourhoods, Models, (u64, Scheme, usize)) {
        let mut rng = Rng::new(7);
        let voxels: Vec<[usize; 3]> = (0..48).map(|i| [i / 12, (i / 3) % 4, i % 3]).collect();
        let hoods = spheres(&voxels, [4, 4, 3], 1.0, [1.0; 3], 1).unwrap();
        let y: Array2<f64> = rng.normal_array((12, 48));
        let n_pairs = brainfit_kernels::rdm::condensed_len(12);
        let raw: Array2<f64> = rng.normal_array((2, n_pairs));
        (y, hoods, Models { raw, n_conditions: 12 }, (3, Scheme::Free, 5))
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
                let f = CentreFeatures::new(&rdm_of, n_pairs, &hoods, c, cmp)?;
                let raw = !f.pairwise.is_empty();
                with_nulls(
                    &models,
                    features.as_ref(),
                    raw,
                    0..5,
                    batch_len,
                    Some(&scheme),
                    |mf, mr| f.compare(mf, mr, cmp, 4),
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
            let f = CentreFeatures::new(&rdm_of, n_pairs, &hoods, c, cmp)?;
            with_nulls(&models, features.as_ref(), true, 0..5, 2, Some(&scheme), |mf, mr| {
                f.compare(mf, mr, cmp, 4)
            })
        })
        .unwrap();
        assert_eq!(empty.value.dim(), (2, 0));
    }

    #[test]
    fn batches_fit_their_byte_budgets() {
        // 92 conditions: full batches; 1,000 conditions and 4 models: 4 MB per relabelled RDM
        let small = Models { raw: Array2::zeros((4, 4186)), n_conditions: 92 };
        assert_eq!(perm_batch(&small), PERM_BATCH);
        let large = Models { raw: Array2::zeros((4, 499_500)), n_conditions: 1000 };
        let b = perm_batch(&large) as usize;
        assert!((1..PERM_BATCH as usize).contains(&b), "{b}");
        assert!(b * 2 * large.raw.len() * 8 <= PERM_BATCH_BYTES);
        let huge = Models { raw: Array2::zeros((64, 2_000_000)), n_conditions: 2000 };
        assert_eq!(perm_batch(&huge), 1, "at least one permutation per batch");
        assert_eq!(centre_chunk(4186) % CENTRE_BATCH, 0);
        assert!(centre_chunk(4186) * 4186 * 8 <= CENTRE_CHUNK_BYTES);
        let c = centre_chunk(499_500);
        assert!(c >= 1 && c * 499_500 * 8 <= CENTRE_CHUNK_BYTES, "{c}");
        assert_eq!(centre_chunk(usize::MAX / 16), 1);
    }
}
