//! Merging partial results into the output layout of DESIGN.md.
//!
//! Every output is staged once all tasks have finished ([`crate::outputs`]) and published
//! together; `summary.json` comes last and is the marker of a complete run, so a failed run
//! never leaves a result that looks complete, and never disturbs the earlier complete one.

use crate::inputs::{Inventory, SubjectInventory, load_mask, subject_prefix};
use crate::outputs::layout::{self, MapDir, MapFile};
use crate::outputs::{SUMMARY, StagedOutputs};
use crate::plan::{
    Analysis, Task, brain_rdm_names, fitted_regressors, partition_names, rsa_map_names,
};
use crate::spec::{JobSpec, RsaSpec, SearchlightSpec, SubjectSpec, TimeResolvedSpec};
use crate::stats::{CROSS_TEMPORAL_PREFIX, MapBlock, MergedMaps, merge_blocks};
use crate::summary::{
    BestSpaceSummary, CeilingSummary, DecodingSummary, EncodingSummary, MapStats, MapSummary,
    PartitionSummary, Peak, PermutationSummary, RsaPartitionRow, RsaRow,
    SearchlightDecodingSummary, SubjectSummary, Summary,
};
use crate::{JobError, Part, Result};
use brainfit_io::{Mask, Store, write_nifti_f32, write_npy};
use brainfit_kernels::encoder::EncoderSpec;
use brainfit_kernels::identification::{Identification, IdentificationSums};
use brainfit_kernels::reliability::{is_reliable, normalised_score};
use brainfit_kernels::rsa_fit::partition_from_unions;
use ndarray::{Array1, ArrayView1};
use std::collections::BTreeMap;

/// How a run went, echoed into `summary.json`.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Workers that ran the tasks.
    pub workers: usize,
    /// Wall-clock seconds of the compute phase.
    pub compute_seconds: f64,
    /// Linear-algebra backend(s) of the workers that computed the tasks.
    pub backend: String,
}

/// Descriptive statistics of a map, ignoring NaN.
pub fn map_stats(values: ArrayView1<'_, f64>) -> MapStats {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let mut stats = MapStats {
        argmax: None,
        max: None,
        mean: None,
        n: values.len(),
        n_finite: finite.len(),
        peak: None,
    };
    if !finite.is_empty() {
        let (imax, max) = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .fold((0, f64::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        stats.mean = Some(finite.iter().sum::<f64>() / finite.len() as f64);
        stats.max = Some(max);
        stats.argmax = Some(imax);
    }
    stats
}

/// [`map_stats`] plus the peak's location (voxel and world coordinates through the mask's
/// affine, with a mask), `map_item_voxel` mapping a map index to its mask voxel (the
/// identity for voxel maps, the centre for searchlight maps).
pub(crate) fn map_stats_located(
    values: ArrayView1<'_, f64>,
    mask: Option<&Mask>,
    map_item_voxel: impl Fn(usize) -> usize,
) -> MapStats {
    let mut stats = map_stats(values);
    if let (Some(mask), Some(i)) = (mask, stats.argmax) {
        let voxel = map_item_voxel(i);
        stats.peak = Some(Peak { mm: mask.world(voxel), voxel: mask.voxels[voxel] });
    }
    stats
}

/// A warning when the median hyperparameter chosen by the voxels the space predicts (held-out
/// score above 0) sits at the least or the most regularised end of the grid (`grid` runs from
/// the least to the most regularised value): the grid probably does not reach their best
/// regularisation. Voxels the space does not predict are left out: noise rightly chooses the
/// strongest regularisation on offer, and in a whole brain it is most voxels.
fn grid_edge_warning(space: &str, median: Option<f64>, model: &EncoderSpec) -> Option<String> {
    let grid = model.grid();
    let (median, least, most) = (median?, *grid.first()?, *grid.last()?);
    if grid.len() < 2 {
        return None;
    }
    let what = model.hyperparameter();
    let (low, high) = if least < most { (least, most) } else { (most, least) };
    let edge = if median <= low {
        format!("the lowest {what} value of the grid ({low:e}); extend it downwards")
    } else if median >= high {
        format!("the highest {what} value of the grid ({high:e}); extend it upwards")
    } else {
        return None;
    };
    Some(format!("encoding {space}: the median {what} chosen where the score is above 0 is {edge}"))
}

async fn put_npy(
    outputs: &StagedOutputs<'_>,
    url: &str,
    values: ArrayView1<'_, f64>,
) -> Result<()> {
    outputs.put(url, write_npy(&values).into()).await?;
    Ok(())
}

/// A NIfTI map of per-mask-voxel values (skipped without a mask).
async fn put_nifti(
    outputs: &StagedOutputs<'_>,
    url: &str,
    mask: Option<&Mask>,
    values: &Array1<f64>,
) -> Result<()> {
    if let Some(mask) = mask {
        let volume = mask.unmask(values.as_slice().expect("contiguous"))?;
        outputs.put(url, write_nifti_f32(volume.view(), &mask.affine, true).into()).await?;
    }
    Ok(())
}

/// The URLs of a map directory's files: `.npy` and NIfTI.
struct MapUrls<'a> {
    spec: &'a JobSpec,
    /// The subject's or recording's folder (`None`: the output's root).
    root: Option<&'a str>,
    dir: MapDir<'a>,
}

impl MapUrls<'_> {
    fn url(&self, relative: &str) -> Result<String> {
        match self.root {
            Some(root) => self.spec.output_url(None, &format!("{root}/{relative}")),
            None => self.spec.output_url(None, relative),
        }
    }

    fn npy(&self, file: MapFile) -> Result<String> {
        self.url(&self.dir.npy(file))
    }

    fn nifti(&self, file: MapFile) -> Result<String> {
        self.url(&self.dir.nifti(file))
    }
}

/// A voxel map as `.npy` and, with a mask, NIfTI.
async fn put_map(
    outputs: &StagedOutputs<'_>,
    urls: &MapUrls<'_>,
    file: MapFile,
    mask: Option<&Mask>,
    values: &Array1<f64>,
) -> Result<()> {
    put_npy(outputs, &urls.npy(file)?, values.view()).await?;
    put_nifti(outputs, &urls.nifti(file)?, mask, values).await
}

/// Writes `p`, `p_fwe` (with NIfTI versions) and `null_max` of map `m`, if permutations ran.
async fn put_stats(
    outputs: &StagedOutputs<'_>,
    urls: &MapUrls<'_>,
    mask: Option<&Mask>,
    maps: &MergedMaps,
    m: usize,
) -> Result<()> {
    if let (Some(p), Some(pf), Some(nm)) = (&maps.p, &maps.p_fwe, &maps.null_max) {
        put_map(outputs, urls, MapFile::P, mask, &p.row(m).to_owned()).await?;
        put_map(outputs, urls, MapFile::PFwe, mask, &pf.row(m).to_owned()).await?;
        put_npy(outputs, &urls.npy(MapFile::NullMax)?, nm.row(m)).await?;
    }
    Ok(())
}

/// `p.npy`, `p_fwe.npy` and `null_max.npy` of map `m` (maps that are not on voxels, or whose
/// NIfTI images the caller writes), if permutations ran.
async fn put_null_npys(
    outputs: &StagedOutputs<'_>,
    urls: &MapUrls<'_>,
    maps: &MergedMaps,
    m: usize,
) -> Result<()> {
    if let (Some(p), Some(pf), Some(nm)) = (&maps.p, &maps.p_fwe, &maps.null_max) {
        put_npy(outputs, &urls.npy(MapFile::P)?, p.row(m)).await?;
        put_npy(outputs, &urls.npy(MapFile::PFwe)?, pf.row(m)).await?;
        put_npy(outputs, &urls.npy(MapFile::NullMax)?, nm.row(m)).await?;
    }
    Ok(())
}

/// Number of items of map `m` with `p_fwe < 0.05` (None without permutations).
fn significant(maps: &MergedMaps, m: usize) -> Option<usize> {
    maps.p_fwe.as_ref().map(|pf| pf.row(m).iter().filter(|&&p| p < 0.05).count())
}

/// Concatenates array `name` of the parts of `tasks` (already in range order).
fn concat(parts: &[(&Task, &Part)], name: &str, expected: usize) -> Result<Array1<f64>> {
    let mut out = Vec::with_capacity(expected);
    for (_, p) in parts {
        out.extend_from_slice(p.get(name)?.1);
    }
    if out.len() != expected {
        return Err(JobError::Corrupt(format!(
            "{name}: parts hold {} values, expected {expected}",
            out.len()
        )));
    }
    Ok(Array1::from(out))
}

/// A fit's ROI means per permutation, `[n_rois, n_perms]`, from its tasks' sums and counts of
/// finite null scores (`None` without permutations or ROIs).
fn roi_null_means(
    parts: &[(&Task, &Part)],
    n_perms: Option<usize>,
) -> Result<Option<ndarray::Array2<f64>>> {
    let Some(n) = n_perms else { return Ok(None) };
    let (mut sum, mut count): (Option<ndarray::Array2<f64>>, Option<ndarray::Array2<f64>>) =
        (None, None);
    for (_, part) in parts {
        for (name, total) in [("roi_null_sum", &mut sum), ("roi_null_count", &mut count)] {
            let Ok((shape, values)) = part.get(name) else { return Ok(None) };
            let a = ndarray::Array2::from_shape_vec((shape[0], shape[1]), values.to_vec())
                .map_err(|e| JobError::Corrupt(format!("{name}: {e}")))?;
            if a.ncols() != n {
                return Err(JobError::Corrupt(format!(
                    "{name}: {} permutations, expected {n}",
                    a.ncols()
                )));
            }
            match total {
                Some(t) => *t += &a,
                None => *total = Some(a),
            }
        }
    }
    Ok(sum.zip(count).map(|(s, c)| s / c))
}

/// The uncorrected and ROI-family-wise p of ROI `r`'s observed mean `observed` against the
/// ROI means per permutation `null` (`[n_rois, n_perms]`): `(1 + #{null ≥ observed}) /
/// (1 + n)`, over ROI `r`'s nulls and over each permutation's maximum across ROIs.
fn profile_p(observed: f64, null: &ndarray::Array2<f64>, r: usize) -> (f64, f64) {
    let n = null.ncols() as f64;
    if !observed.is_finite() {
        return (f64::NAN, f64::NAN);
    }
    let exceed = null.row(r).iter().filter(|&&x| x >= observed).count() as f64;
    let max_exceed = null
        .columns()
        .into_iter()
        .filter(|c| {
            c.iter().copied().filter(|x| x.is_finite()).fold(f64::NEG_INFINITY, f64::max)
                >= observed
        })
        .count() as f64;
    ((1.0 + exceed) / (1.0 + n), (1.0 + max_exceed) / (1.0 + n))
}

/// A subject's merged encoding: per fit, across spaces, and the variance partition.
struct EncodingMerged {
    spaces: BTreeMap<String, EncodingSummary>,
    best_space: Option<BestSpaceSummary>,
    partition: Option<BTreeMap<String, PartitionSummary>>,
    ceiling: Option<CeilingSummary>,
}

/// What the merge of one subject's analyses reads.
struct SubjectMerge<'a> {
    outputs: &'a StagedOutputs<'a>,
    spec: &'a JobSpec,
    /// The subject's index, spec and input shapes.
    si: usize,
    subject: &'a SubjectSpec,
    inv: &'a SubjectInventory,
    mask: Option<Mask>,
    /// Every task of the job with its part, in plan order.
    done: Vec<(&'a Task, &'a Part)>,
    n_perms: Option<usize>,
}

impl SubjectMerge<'_> {
    /// Encoding: per feature space, the score, chosen-hyperparameter and permutation maps;
    /// with several spaces, the best space per voxel and the ROI profile.
    async fn encoding(&self, store: &Store, warnings: &mut Vec<String>) -> Result<EncodingMerged> {
        let (spec, subject, inv, mask) = (self.spec, self.subject, self.inv, self.mask.as_ref());
        let mut summary = BTreeMap::new();
        let mut scores = Vec::new();
        let mut profile_nulls = BTreeMap::new();
        let encoding = spec.encoding.as_ref().expect("encoding tasks need [encoding]");
        let model = &encoding.model;
        let fits = crate::plan::encoding_fits(spec, inv);
        let ceiling = match fits.first().filter(|_| !subject.repeats.is_empty()) {
            Some(first) => Some(self.ceiling(&first.name).await?),
            None => None,
        };
        for fit in fits {
            let mine: Vec<(&Task, &Part)> = self
                .done
                .iter()
                .copied()
                .filter(|(t, _)| matches!(t, Task::Encoding { subject, space: s, .. } if *subject == self.si && *s == fit.name))
                .collect();
            let blocks = mine
                .iter()
                .map(|(t, p)| match t {
                    Task::Encoding { voxels, .. } => {
                        Ok((*voxels, [0, self.n_perms.unwrap_or(0)], MapBlock::read(p)?))
                    }
                    _ => unreachable!("filtered to encoding tasks"),
                })
                .collect::<Result<Vec<_>>>()?;
            let maps = merge_blocks(&blocks, 1, inv.n_voxels, self.n_perms)?;
            let chosen = concat(&mine, "alpha", inv.n_voxels)?;
            let dir = MapDir::Encoding(&fit.name);
            let urls = MapUrls { spec, root: subject.name.as_deref(), dir };
            let score = maps.value.row(0).to_owned();
            put_map(self.outputs, &urls, MapFile::Score, mask, &score).await?;
            let chosen_file = match model.hyperparameter() {
                "components" => MapFile::Components,
                _ => MapFile::Alpha,
            };
            put_npy(self.outputs, &urls.npy(chosen_file)?, chosen.view()).await?;
            put_stats(self.outputs, &urls, mask, &maps, 0).await?;
            if let Some(ceiling) = &ceiling {
                let normalised = ndarray::Zip::from(&score)
                    .and(ceiling)
                    .map_collect(|&s, &c| normalised_score(s, c, model.score(), inv.n_samples));
                let url = |ext| spec.output_url(Some(subject), &dir.file("score_normalised", ext));
                put_npy(self.outputs, &url("npy")?, normalised.view()).await?;
                put_nifti(self.outputs, &url("nii.gz")?, mask, &normalised).await?;
            }
            let joint = fit.spaces.len() > 1;
            for (b, band) in fit.spaces.iter().enumerate().filter(|_| joint) {
                for (what, stem) in [("weight", "weight"), ("split", "split")] {
                    let values = concat(&mine, &format!("{what}:{b}"), inv.n_voxels)?;
                    let name = format!("{stem}_{band}");
                    let url = |ext| spec.output_url(Some(subject), &dir.file(&name, ext));
                    put_npy(self.outputs, &url("npy")?, values.view()).await?;
                    put_nifti(self.outputs, &url("nii.gz")?, mask, &values).await?;
                }
            }
            let chosen_median = median(chosen.view());
            let predicted = ndarray::Zip::from(&chosen)
                .and(&score)
                .map_collect(|&c, &s| if s > 0.0 { c } else { f64::NAN });
            let edge = grid_edge_warning(&fit.name, median(predicted.view()), model);
            warnings.extend(edge.map(|w| format!("{}{w}", subject_prefix(subject))));
            let n_features = fit
                .spaces
                .iter()
                .map(|s| inv.spaces.iter().find(|(r, _)| r.name == *s).map_or(0, |(_, p)| *p))
                .sum();
            summary.insert(
                fit.name.clone(),
                EncodingSummary {
                    model: (if joint { "banded_ridge" } else { model.name() }).into(),
                    hyperparameter: model.hyperparameter().into(),
                    chosen_median,
                    n_features,
                    score: map_stats_located(score.view(), mask, |v| v),
                    significant_fwe_05: significant(&maps, 0),
                },
            );
            if let Some(null) = roi_null_means(&mine, self.n_perms)? {
                profile_nulls.insert(fit.name.clone(), null);
            }
            scores.push((fit, score));
        }
        let singles: Vec<(String, Array1<f64>)> = scores
            .iter()
            .filter(|(fit, _)| fit.spaces.len() == 1)
            .map(|(fit, score)| (fit.name.clone(), score.clone()))
            .collect();
        let best = if singles.len() > 1 { Some(self.best_space(&singles).await?) } else { None };
        let mut all: Vec<(String, Array1<f64>)> =
            scores.iter().map(|(fit, score)| (fit.name.clone(), score.clone())).collect();
        let mut partition = None;
        if encoding.banded.as_ref().is_some_and(|b| b.partition) {
            let mut stats = BTreeMap::new();
            for (name, values) in self.partition(&scores).await? {
                let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
                let mean =
                    (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64);
                let n_negative = finite.iter().filter(|&&v| v < 0.0).count();
                stats.insert(
                    name.clone(),
                    PartitionSummary { mean, n_finite: finite.len(), n_negative },
                );
                all.push((format!("partition:{name}"), values));
            }
            partition = Some(stats);
        }
        self.profile(store, &all, &profile_nulls).await?;
        let ceiling = ceiling.map(|c| {
            let finite: Vec<f64> = c.iter().copied().filter(|v| v.is_finite()).collect();
            CeilingSummary {
                mean: (!finite.is_empty())
                    .then(|| finite.iter().sum::<f64>() / finite.len() as f64),
                n_reliable: finite.iter().filter(|&&v| is_reliable(v, inv.n_samples)).count(),
            }
        });
        Ok(EncodingMerged { spaces: summary, best_space: best, partition, ceiling })
    }

    /// The noise ceiling the tasks of fit `first` computed from `[data] repeats`, written as
    /// `encoding/ceiling.*`.
    async fn ceiling(&self, first: &str) -> Result<Array1<f64>> {
        let mine: Vec<(&Task, &Part)> = self
            .done
            .iter()
            .copied()
            .filter(|(t, _)| matches!(t, Task::Encoding { subject, space, .. } if *subject == self.si && space == first))
            .collect();
        let ceiling = concat(&mine, "ceiling", self.inv.n_voxels)?;
        let url = |ext: &str| {
            self.spec.output_url(Some(self.subject), &format!("{}.{ext}", layout::CEILING))
        };
        put_npy(self.outputs, &url("npy")?, ceiling.view()).await?;
        put_nifti(self.outputs, &url("nii.gz")?, self.mask.as_ref(), &ceiling).await?;
        Ok(ceiling)
    }

    /// Writes the variance partition ([`partition_maps`]): one map per subset below
    /// `encoding/partition/`, returned as (subset name, map).
    async fn partition(
        &self,
        fits: &[(crate::spec::Fit, Array1<f64>)],
    ) -> Result<Vec<(String, Array1<f64>)>> {
        let out = partition_maps(fits);
        for (name, value) in &out {
            let rel = layout::partition(name);
            let url = |ext: &str| self.spec.output_url(Some(self.subject), &format!("{rel}.{ext}"));
            put_npy(self.outputs, &url("npy")?, value.view()).await?;
            put_nifti(self.outputs, &url("nii.gz")?, self.mask.as_ref(), value).await?;
        }
        Ok(out)
    }

    /// Each voxel's best feature space (its label, 1-based in `scores`' order; 0 where no
    /// space has a finite score) and the winning score (Güçlü & van Gerven 2015).
    async fn best_space(&self, scores: &[(String, Array1<f64>)]) -> Result<BestSpaceSummary> {
        let (spec, subject, mask) = (self.spec, Some(self.subject), self.mask.as_ref());
        let (label, best) = best_space_maps(scores, self.inv.n_voxels);
        let url = |stem: &str, ext: &str| spec.output_url(subject, &format!("{stem}.{ext}"));
        let outputs = self.outputs;
        outputs.put(&url(layout::BEST_SPACE, "npy")?, write_npy(&label.view()).into()).await?;
        put_nifti(outputs, &url(layout::BEST_SPACE, "nii.gz")?, mask, &label.mapv(|l| l as f64))
            .await?;
        put_npy(outputs, &url(layout::BEST_SCORE, "npy")?, best.view()).await?;
        put_nifti(outputs, &url(layout::BEST_SCORE, "nii.gz")?, mask, &best).await?;
        let won: Vec<usize> =
            (1..=scores.len()).map(|l| label.iter().filter(|&&x| x == l as i64).count()).collect();
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(["label", "space", "n_voxels"]).map_err(csv_err)?;
        for (l, ((name, _), n)) in scores.iter().zip(&won).enumerate() {
            csv.write_record([(l + 1).to_string(), name.clone(), n.to_string()])
                .map_err(csv_err)?;
        }
        let bytes = csv.into_inner().map_err(|e| JobError::Corrupt(e.to_string()))?;
        outputs.put(&spec.output_url(subject, layout::BEST_SPACE_LABELS)?, bytes.into()).await?;
        Ok(BestSpaceSummary {
            spaces: scores.iter().map(|(name, _)| name.clone()).collect(),
            voxels_won: won,
        })
    }

    /// The layer profile: the mean score (over voxels with a finite score) of every feature
    /// space in every ROI of `[rois]` and `[rsa] rois`, in `encoding/profile.csv`; with
    /// permutations, for each fit (`nulls`: its ROI means per permutation, `[n_rois,
    /// n_perms]`) the uncorrected p and the p corrected by the maximum over the ROIs.
    async fn profile(
        &self,
        store: &Store,
        scores: &[(String, Array1<f64>)],
        nulls: &BTreeMap<String, ndarray::Array2<f64>>,
    ) -> Result<()> {
        let rois = self.spec.profile_rois();
        let Some(mask) = self.mask.as_ref().filter(|_| !rois.is_empty()) else {
            return Ok(());
        };
        let mut csv = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["roi", "space", "n_voxels", "mean_score"];
        if self.n_perms.is_some() {
            header.extend(["p", "p_fwe"]);
        }
        csv.write_record(&header).map_err(csv_err)?;
        let mut columns = Vec::new();
        for url in rois.values() {
            columns.push(crate::inputs::roi_columns(mask, &load_mask(store, url).await?, url)?);
        }
        for (r, roi) in rois.keys().enumerate() {
            for (space, score) in scores {
                let finite: Vec<f64> =
                    columns[r].iter().map(|&c| score[c]).filter(|v| v.is_finite()).collect();
                let mean = finite.iter().sum::<f64>() / finite.len() as f64;
                let mut record = vec![
                    roi.to_string(),
                    space.clone(),
                    finite.len().to_string(),
                    format!("{mean:?}"),
                ];
                if self.n_perms.is_some() {
                    // partitions have no null: they are differences of fits, each with its own
                    match nulls.get(space) {
                        Some(null) => {
                            let (p, p_fwe) = profile_p(mean, null, r);
                            record.extend([format!("{p:?}"), format!("{p_fwe:?}")]);
                        }
                        None => record.extend([String::new(), String::new()]),
                    }
                }
                csv.write_record(&record).map_err(csv_err)?;
            }
        }
        let bytes = csv.into_inner().map_err(|e| JobError::Corrupt(e.to_string()))?;
        let url = self.spec.output_url(Some(self.subject), layout::PROFILE)?;
        self.outputs.put(&url, bytes.into()).await?;
        Ok(())
    }

    /// Decoding: per source and feature space, the per-unit score, alpha and permutation maps
    /// and the identification accuracy, from the identification sums of every unit shard.
    async fn decoding(&self, store: &Store) -> Result<BTreeMap<String, DecodingSummary>> {
        let (spec, subject, inv) = (self.spec, self.subject, self.inv);
        let mut summary = BTreeMap::new();
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record([
            "source",
            "space",
            "n_units",
            "top1_accuracy",
            "top1_chance",
            "pairwise_accuracy",
        ])
        .map_err(csv_err)?;
        for (source, space, n_units) in crate::plan::decoding_targets(spec, inv) {
            let mine: Vec<(&Task, &Part)> = self
                .done
                .iter()
                .copied()
                .filter(|(t, _)| matches!(t, Task::Decoding { subject, source: s, space: f, .. } if *subject == self.si && *s == source && *f == space))
                .collect();
            let blocks = mine
                .iter()
                .map(|(t, p)| match t {
                    Task::Decoding { units, .. } => {
                        Ok((*units, [0, self.n_perms.unwrap_or(0)], MapBlock::read(p)?))
                    }
                    _ => unreachable!("filtered to decoding tasks"),
                })
                .collect::<Result<Vec<_>>>()?;
            let maps = merge_blocks(&blocks, 1, n_units, self.n_perms)?;
            let alpha = concat(&mine, "alpha", n_units)?;
            let urls = MapUrls {
                spec,
                root: subject.name.as_deref(),
                dir: MapDir::Decoding(&source, &space),
            };
            let score = maps.value.row(0).to_owned();
            put_npy(self.outputs, &urls.npy(MapFile::Score)?, score.view()).await?;
            put_npy(self.outputs, &urls.npy(MapFile::Alpha)?, alpha.view()).await?;
            put_null_npys(self.outputs, &urls, &maps, 0).await?;
            // identification: every fold's sums over all units, then scored
            let mut identification: Option<Identification> = None;
            for fold in 0.. {
                let name = format!("ident:{fold}");
                let mut total: Option<IdentificationSums> = None;
                for (_, p) in &mine {
                    let Ok((_, flat)) = p.get(&name) else { break };
                    let sums = IdentificationSums::from_flat(flat)?;
                    match &mut total {
                        Some(t) => t.add(&sums)?,
                        None => total = Some(sums),
                    }
                }
                let Some(total) = total else { break };
                let scored = total.identify();
                match &mut identification {
                    Some(i) => i.add(scored),
                    None => identification = Some(scored),
                }
            }
            let id = identification.ok_or_else(|| {
                JobError::Corrupt(format!("decoding {space} from {source}: no identification sums"))
            })?;
            csv.write_record([
                source.clone(),
                space.clone(),
                n_units.to_string(),
                format!("{:?}", id.top1_accuracy()),
                format!("{:?}", id.top1_chance()),
                format!("{:?}", id.pairwise_accuracy()),
            ])
            .map_err(csv_err)?;
            let n_voxels = match source.as_str() {
                crate::spec::WHOLE_MASK => inv.n_voxels,
                roi => {
                    let url = spec.profile_rois()[roi];
                    let mask = self.mask.as_ref().ok_or_else(|| {
                        JobError::Corrupt("decoding from an ROI without a mask".into())
                    })?;
                    crate::inputs::roi_columns(mask, &load_mask(store, url).await?, url)?.len()
                }
            };
            summary.insert(
                format!("{source}/{space}"),
                DecodingSummary {
                    n_voxels,
                    score: map_stats(score.view()),
                    significant_fwe_05: significant(&maps, 0),
                    top1_accuracy: id.top1_accuracy(),
                    top1_chance: id.top1_chance(),
                    pairwise_accuracy: id.pairwise_accuracy(),
                },
            );
        }
        if !crate::plan::decoding_targets(spec, inv).is_empty() {
            let bytes = csv.into_inner().map_err(|e| JobError::Corrupt(e.to_string()))?;
            let url = spec.output_url(Some(subject), layout::DECODING_IDENTIFICATION)?;
            self.outputs.put(&url, bytes.into()).await?;
        }
        Ok(summary)
    }

    /// Searchlight decoding: per feature space, the map of each kept centre's mean held-out
    /// score over units and of its pairwise identification accuracy, each with permutation
    /// p-values (FWE over centres), in `decoding/searchlight/<space>/`.
    async fn decoding_searchlight(&self) -> Result<BTreeMap<String, SearchlightDecodingSummary>> {
        let (spec, subject, inv, mask) = (self.spec, self.subject, self.inv, self.mask.as_ref());
        let (outputs, n_perms) = (self.outputs, self.n_perms);
        let mut summary = BTreeMap::new();
        for space in crate::plan::decoding_searchlight_spaces(spec, inv) {
            // kept centres of each task follow each other in mask order
            let (mut blocks, mut centres) = (Vec::new(), Vec::new());
            for (t, p) in &self.done {
                if matches!(t, Task::DecodingSearchlight { subject, space: s, .. } if *subject == self.si && *s == space)
                {
                    let start = centres.len();
                    centres.extend(p.get("centres")?.1.iter().map(|&v| v as i64));
                    let perms = [0, n_perms.unwrap_or(0)];
                    blocks.push(([start, centres.len()], perms, MapBlock::read(p)?));
                }
            }
            let maps = merge_blocks(&blocks, 2, centres.len(), n_perms)?;
            let dir = MapDir::Decoding("searchlight", &space);
            let on_mask = |row: ArrayView1<'_, f64>| {
                let mut full = Array1::from_elem(inv.n_voxels, f64::NAN);
                centres.iter().zip(row).for_each(|(&c, &v)| full[c as usize] = v);
                full
            };
            let url = |stem: &str, ext: &str| spec.output_url(Some(subject), &dir.file(stem, ext));
            let centres_npy = write_npy(&Array1::from(centres.clone()).view()).into();
            outputs.put(&url("centres", "npy")?, centres_npy).await?;
            for (m, stem) in ["score", "identification"].into_iter().enumerate() {
                let values = maps.value.row(m);
                put_npy(outputs, &url(stem, "npy")?, values).await?;
                put_nifti(outputs, &url(stem, "nii.gz")?, mask, &on_mask(values)).await?;
                if let (Some(p), Some(pf), Some(nm)) = (&maps.p, &maps.p_fwe, &maps.null_max) {
                    let prefix = if m == 0 { String::new() } else { format!("{stem}_") };
                    put_npy(outputs, &url(&format!("{prefix}p"), "npy")?, p.row(m)).await?;
                    put_npy(outputs, &url(&format!("{prefix}p_fwe"), "npy")?, pf.row(m)).await?;
                    put_npy(outputs, &url(&format!("{prefix}null_max"), "npy")?, nm.row(m)).await?;
                    put_nifti(
                        outputs,
                        &url(&format!("{prefix}p_fwe"), "nii.gz")?,
                        mask,
                        &on_mask(pf.row(m)),
                    )
                    .await?;
                }
            }
            let located =
                |m: usize| map_stats_located(maps.value.row(m), mask, |i| centres[i] as usize);
            summary.insert(
                space.clone(),
                SearchlightDecodingSummary {
                    centres: centres.len(),
                    score: located(0),
                    identification: located(1),
                    significant_fwe_05: significant(&maps, 0),
                },
            );
        }
        Ok(summary)
    }

    /// Searchlight RSA: per model, the comparison map over the kept centres.
    async fn searchlight(&self, sl: &SearchlightSpec) -> Result<BTreeMap<String, MapSummary>> {
        let (spec, subject, inv, mask) = (self.spec, self.subject, self.inv, self.mask.as_ref());
        let (outputs, n_perms) = (self.outputs, self.n_perms);
        let models = rsa_map_names(spec, inv);
        let item_maps = item_maps(spec, inv, "searchlight");
        // Kept centres of each task follow each other in mask order.
        let mut blocks = Vec::new();
        let mut centres = Vec::new();
        let mut items = vec![Vec::new(); item_maps.len()];
        for (t, p) in &self.done {
            if matches!(t, Task::Searchlight { subject, .. } if *subject == self.si) {
                let c = p.get("centres")?.1;
                let start = centres.len();
                gather_items(p, &item_maps, c.len(), &mut items)?;
                centres.extend(c.iter().map(|&v| v as i64));
                blocks.push((
                    [start, centres.len()],
                    [0, n_perms.unwrap_or(0)],
                    MapBlock::read(p)?,
                ));
            }
        }
        let maps = merge_blocks(&blocks, models.len(), centres.len(), n_perms)?;
        let centres = Array1::from(centres);
        let mut summary = BTreeMap::new();
        for (m, name) in models.iter().enumerate() {
            let urls =
                MapUrls { spec, root: subject.name.as_deref(), dir: MapDir::Searchlight(name) };
            let on_mask = |row: ArrayView1<'_, f64>| {
                let mut full = Array1::from_elem(inv.n_voxels, f64::NAN);
                centres.iter().zip(row).for_each(|(&c, &v)| full[c as usize] = v);
                full
            };
            let rho = maps.value.row(m).to_owned();
            put_npy(outputs, &urls.npy(MapFile::Rho)?, rho.view()).await?;
            let centres_npy = write_npy(&centres.view()).into();
            outputs.put(&urls.npy(MapFile::Centres)?, centres_npy).await?;
            put_nifti(outputs, &urls.nifti(MapFile::Rho)?, mask, &on_mask(rho.view())).await?;
            put_null_npys(outputs, &urls, &maps, m).await?;
            if let (Some(p), Some(pf)) = (&maps.p, &maps.p_fwe) {
                put_nifti(outputs, &urls.nifti(MapFile::P)?, mask, &on_mask(p.row(m))).await?;
                put_nifti(outputs, &urls.nifti(MapFile::PFwe)?, mask, &on_mask(pf.row(m))).await?;
            }
            summary.insert(
                name.clone(),
                MapSummary {
                    compare: sl.compare.as_str().into(),
                    rdm: sl.rdm.as_str().into(),
                    rho: map_stats_located(rho.view(), mask, |i| centres[i] as usize),
                    significant_fwe_05: significant(&maps, m),
                },
            );
        }
        for ((rel, _, _), values) in item_maps.iter().zip(items) {
            let url = |ext: &str| spec.output_url(Some(subject), &format!("{rel}.{ext}"));
            let values = Array1::from(values);
            put_npy(outputs, &url("npy")?, values.view()).await?;
            let mut full = Array1::from_elem(inv.n_voxels, f64::NAN);
            centres.iter().zip(&values).for_each(|(&c, &v)| full[c as usize] = v);
            put_nifti(outputs, &url("nii.gz")?, mask, &full).await?;
        }
        Ok(summary)
    }

    /// `rsa/weights.csv`: per brain RDM, each fitted model's weights fitted on all pairs
    /// (`values`: the `"weights"` block, `[n_weights, n_brains]`, rows as [`weight_rows`]).
    async fn put_weights(&self, brains: &[String], values: &[f64]) -> Result<()> {
        let fitted = fitted_regressors(self.spec, self.inv);
        let rows = weight_rows(&fitted);
        let n = brains.len();
        if values.len() != rows.len() * n {
            return Err(JobError::Corrupt(format!(
                "{} fitted weights for {n} brain RDMs of {}",
                values.len(),
                rows.len()
            )));
        }
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(["brain", "fitted", "regressor", "weight"]).map_err(csv_err)?;
        for (b, brain) in brains.iter().enumerate() {
            for &(name, regressor, row) in &rows {
                let w = format!("{:?}", values[row * n + b]);
                csv.write_record([brain.as_str(), name, regressor, &w]).map_err(csv_err)?;
            }
        }
        let csv = csv.into_inner().map_err(|e| csv_err(e.into_error().into()))?;
        let url = self.spec.output_url(Some(self.subject), layout::RSA_WEIGHTS)?;
        self.outputs.put(&url, csv.into()).await?;
        Ok(())
    }

    /// ROI RSA: the brain RDMs, and every brain × model × method comparison in
    /// `rsa/compare.csv`.
    async fn roi_rsa(&self, r: &RsaSpec) -> Result<(Vec<RsaRow>, Vec<RsaPartitionRow>)> {
        let (spec, subject, outputs, n_perms) =
            (self.spec, self.subject, self.outputs, self.n_perms);
        let models = rsa_map_names(spec, self.inv);
        let given = brain_rdm_names(spec);
        // rows of the CSV: the brain RDMs, then each ceiling group (its subjects' mean)
        let brains: Vec<String> = given.iter().chain(r.ceiling.keys()).cloned().collect();
        let mut blocks = Vec::new();
        let (mut ceiling, mut partition) = (None, Vec::new());
        for (t, p) in &self.done {
            if let Task::Rsa { subject: task_subject, perms } = t
                && *task_subject == self.si
            {
                if perms[0] == 0 {
                    for name in &given {
                        let (_, v) = p.get(&format!("rdm:{name}"))?;
                        let url = spec.output_url(Some(subject), &layout::rsa_rdm(name))?;
                        put_npy(outputs, &url, ArrayView1::from(v)).await?;
                    }
                    if !r.ceiling.is_empty() {
                        ceiling = Some(p.get("ceiling")?.1.to_vec());
                    }
                    if !r.reweight.is_empty() || !r.unit_weighting.is_empty() {
                        self.put_weights(&given, p.get("weights")?.1).await?;
                    }
                    if !r.partition.is_empty() {
                        let subsets = partition_names(spec);
                        let (_, v) = p.get("partition")?;
                        for (b, brain) in given.iter().enumerate() {
                            for (k, subset) in subsets.iter().enumerate() {
                                partition.push(RsaPartitionRow {
                                    brain: brain.clone(),
                                    partition: subset.clone(),
                                    r2: v[k * given.len() + b],
                                });
                            }
                        }
                    }
                }
                blocks.push(([0, brains.len() * models.len()], *perms, MapBlock::read(p)?));
            }
        }
        let maps = merge_blocks(&blocks, r.compare.len(), brains.len() * models.len(), n_perms)?;
        // values in Rust's shortest round-trip form; fields quoted by the csv crate where
        // needed (names are checked anyway)
        let mut csv = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["brain", "model", "method", "value"];
        if n_perms.is_some() {
            header.extend(["p", "p_fwe"]);
        }
        if ceiling.is_some() {
            header.extend(["noise_ceiling_lower", "noise_ceiling_upper"]);
        }
        csv.write_record(&header).map_err(csv_err)?;
        let mut rows = Vec::new();
        for (b, brain) in brains.iter().enumerate() {
            for (j, model) in models.iter().enumerate() {
                for (mi, method) in r.compare.iter().enumerate() {
                    let item = b * models.len() + j;
                    let value = maps.value[(mi, item)];
                    let mut record = vec![
                        brain.clone(),
                        model.clone(),
                        method.as_str().into(),
                        format!("{value:?}"),
                    ];
                    let mut row = RsaRow {
                        brain: brain.clone(),
                        method: method.as_str().into(),
                        model: model.clone(),
                        p: None,
                        p_fwe: None,
                        value,
                        noise_ceiling: None,
                    };
                    if let (Some(p), Some(pf)) = (&maps.p, &maps.p_fwe) {
                        let (p, pf) = (p[(mi, item)], pf[(mi, item)]);
                        record.extend([format!("{p:?}"), format!("{pf:?}")]);
                        (row.p, row.p_fwe) = (Some(p), Some(pf));
                    }
                    if let Some(c) = &ceiling {
                        // [n_groups, n_methods, 2], on the groups' rows only
                        let group = b.checked_sub(given.len());
                        let bounds = group.map(|g| {
                            let at = (g * r.compare.len() + mi) * 2;
                            [c[at], c[at + 1]]
                        });
                        match bounds {
                            Some([lo, hi]) => record.extend([format!("{lo:?}"), format!("{hi:?}")]),
                            None => record.extend([String::new(), String::new()]),
                        }
                        row.noise_ceiling = bounds;
                    }
                    csv.write_record(&record).map_err(csv_err)?;
                    rows.push(row);
                }
            }
        }
        let csv = csv.into_inner().map_err(|e| csv_err(e.into_error().into()))?;
        let url = spec.output_url(Some(subject), layout::RSA_COMPARE)?;
        outputs.put(&url, csv.into()).await?;
        if !partition.is_empty() {
            let mut csv = csv::Writer::from_writer(Vec::new());
            csv.write_record(["brain", "partition", "r2"]).map_err(csv_err)?;
            for row in &partition {
                let r2 = format!("{:?}", row.r2);
                csv.write_record([row.brain.as_str(), row.partition.as_str(), &r2])
                    .map_err(csv_err)?;
            }
            let csv = csv.into_inner().map_err(|e| csv_err(e.into_error().into()))?;
            let url = spec.output_url(Some(subject), layout::RSA_PARTITION)?;
            outputs.put(&url, csv.into()).await?;
        }
        Ok((rows, partition))
    }
}

/// Time-resolved RSA (once per job and recording: at the output root for the job's only
/// recording, below `<name>/` for named ones): per model, the comparison per time point.
async fn merge_time_resolved(
    outputs: &StagedOutputs<'_>,
    spec: &JobSpec,
    t: &TimeResolvedSpec,
    inventory: &Inventory,
    done: &[(&Task, &Part)],
) -> Result<TimeResolvedMerged> {
    let n_perms = spec.permutation.map(|p| p.n);
    let models = rsa_map_names(spec, &inventory.subjects[0]);
    let item_maps = item_maps(spec, &inventory.subjects[0], "time_resolved");
    let mut summary = TimeResolvedMerged::default();
    for (r, recording) in t.recordings.iter().enumerate() {
        let root = recording.name.as_deref();
        let mut blocks = Vec::new();
        let mut n_times = 0;
        for (task, p) in done {
            if let Task::TimeResolved { recording, perms } = task
                && *recording == r
            {
                let block = MapBlock::read(p)?;
                n_times = block.value.ncols();
                if perms[0] == 0 {
                    let mut items = vec![Vec::new(); item_maps.len()];
                    gather_items(p, &item_maps, n_times, &mut items)?;
                    for ((rel, _, _), values) in item_maps.iter().zip(items) {
                        let rel = format!("{rel}.npy");
                        let url = spec.output_url(None, &t.recordings[r].output_path(&rel))?;
                        put_npy(outputs, &url, ArrayView1::from(&values)).await?;
                    }
                }
                blocks.push(([0, n_times], *perms, block));
            }
        }
        let maps = merge_blocks(&blocks, models.len(), n_times, n_perms)?;
        for (m, name) in models.iter().enumerate() {
            let urls = MapUrls { spec, root, dir: MapDir::TimeResolved(name) };
            put_npy(outputs, &urls.npy(MapFile::Rho)?, maps.value.row(m)).await?;
            put_null_npys(outputs, &urls, &maps, m).await?;
            // keyed by model, or by `<recording>/<model>` for named recordings
            let key = root.map_or_else(|| name.clone(), |root| format!("{root}/{name}"));
            summary.models.insert(
                key,
                MapSummary {
                    compare: t.compare.as_str().into(),
                    rdm: t.rdm.as_str().into(),
                    rho: map_stats(maps.value.row(m)),
                    significant_fwe_05: significant(&maps, m),
                },
            );
        }
    }
    if t.cross_temporal {
        summary.cross_temporal = Some(merge_cross_temporal(outputs, spec, t, done).await?);
    }
    Ok(summary)
}

/// ROI RSA over the subjects of a sweep (Nili et al. 2014): per ROI, its RDM in every subject
/// gives the noise ceiling of each comparison method, and each model's comparison is averaged
/// over the subjects, in `rsa/group.csv` at the output's root (`roi,model,method,mean_value,
/// n_subjects,noise_ceiling_lower,noise_ceiling_upper`). Subjects whose conditions differ have
/// no common ceiling: then a warning, and no file.
async fn merge_group_rsa(
    outputs: &StagedOutputs<'_>,
    spec: &JobSpec,
    r: &RsaSpec,
    inventory: &Inventory,
    done: &[(&Task, &Part)],
    subjects: &[SubjectSummary],
    warnings: &mut Vec<String>,
) -> Result<Vec<RsaRow>> {
    let n_conditions: Vec<usize> = inventory.subjects.iter().map(|s| s.n_conditions).collect();
    if n_conditions.windows(2).any(|w| w[0] != w[1]) {
        warnings.push(format!(
            "[rsa] rois: the subjects have different numbers of conditions ({n_conditions:?}), so they have no common noise ceiling (rsa/group.csv is not written)"
        ));
        return Ok(Vec::new());
    }
    let mut csv = csv::Writer::from_writer(Vec::new());
    let header = [
        "roi",
        "model",
        "method",
        "mean_value",
        "n_subjects",
        "noise_ceiling_lower",
        "noise_ceiling_upper",
    ];
    csv.write_record(header).map_err(csv_err)?;
    let mut rows = Vec::new();
    for roi in r.rois.keys() {
        // the ROI's RDM in every subject, from the task that holds the observed values
        let mut rdms = Vec::new();
        for si in 0..spec.subjects.len() {
            let part = done.iter().find(|(t, _)| {
                matches!(t, Task::Rsa { subject, perms } if *subject == si && perms[0] == 0)
            });
            let (_, p) = part.ok_or_else(|| JobError::Corrupt(format!("no RSA task of {si}")))?;
            rdms.push(Array1::from(p.get(&format!("rdm:{roi}"))?.1.to_vec()));
        }
        let mut stacked = ndarray::Array2::<f64>::zeros((rdms.len(), rdms[0].len()));
        for (mut row, d) in stacked.rows_mut().into_iter().zip(&rdms) {
            row.assign(d);
        }
        for &method in &r.compare {
            let (lower, upper) =
                brainfit_kernels::rsa_fit::noise_ceiling(stacked.view(), method)
                    .map_err(|e| JobError::Corrupt(format!("noise ceiling of ROI {roi}: {e}")))?;
            let first = subjects[0].rsa.iter().filter(|row| row.brain == *roi);
            for model in first.filter(|row| row.method == method.as_str()).map(|row| &row.model) {
                let values: Vec<f64> = subjects
                    .iter()
                    .flat_map(|s| &s.rsa)
                    .filter(|x| x.brain == *roi && x.model == *model && x.method == method.as_str())
                    .map(|x| x.value)
                    .collect();
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let record = [
                    roi.clone(),
                    model.clone(),
                    method.as_str().into(),
                    format!("{mean:?}"),
                    values.len().to_string(),
                    format!("{lower:?}"),
                    format!("{upper:?}"),
                ];
                csv.write_record(&record).map_err(csv_err)?;
                rows.push(RsaRow {
                    brain: roi.clone(),
                    method: method.as_str().into(),
                    model: model.clone(),
                    p: None,
                    p_fwe: None,
                    value: mean,
                    noise_ceiling: Some([lower, upper]),
                });
            }
        }
    }
    let csv = csv.into_inner().map_err(|e| csv_err(e.into_error().into()))?;
    outputs.put(&spec.output_url(None, layout::RSA_GROUP)?, csv.into()).await?;
    Ok(rows)
}

/// The rows of a `"weights"` block (`[n_weights, n_items]`, as the worker writes it): each
/// fitted model's regressors, in job order, then one intercept per fitted model — as
/// (fitted model, regressor, row).
fn weight_rows(fitted: &[(String, Vec<String>)]) -> Vec<(&str, &str, usize)> {
    let regressors = fitted.iter().flat_map(|(name, r)| r.iter().map(move |r| (name, r)));
    let intercepts = fitted.iter().map(|(name, _)| (name, &"intercept"));
    let all = regressors
        .map(|(n, r)| (n.as_str(), r.as_str()))
        .chain(intercepts.map(|(n, r)| (n.as_str(), *r)));
    all.enumerate().map(|(row, (name, regressor))| (name, regressor, row)).collect()
}

/// The maps a searchlight or time-resolved analysis (`analysis`) writes from the per-item
/// values of its tasks: each partition subset, and each fitted model's weight per regressor
/// (not the intercepts, nor a unit weighting's units, which can number thousands:
/// `rsa/weights.csv` has those for ROIs) — as (path without extension, block, row).
fn item_maps(
    spec: &JobSpec,
    inv: &SubjectInventory,
    analysis: &str,
) -> Vec<(String, &'static str, usize)> {
    let subsets = partition_names(spec).into_iter().enumerate();
    let mut out: Vec<(String, &'static str, usize)> =
        subsets.map(|(k, s)| (layout::rsa_partition(analysis, &s), "partition", k)).collect();
    let fitted = fitted_regressors(spec, inv);
    let units = |name: &str| {
        let unit = spec.rsa.as_ref().and_then(|r| r.unit_weighting.get(name));
        unit.is_some_and(|u| u.components.is_none())
    };
    for (name, regressor, row) in weight_rows(&fitted) {
        if regressor != "intercept" && !units(name) {
            out.push((layout::rsa_weight(analysis, name, regressor), "weights", row));
        }
    }
    out
}

/// Appends a task's per-item values of `maps` (its `n_items` items) to `values`.
fn gather_items(
    part: &Part,
    maps: &[(String, &'static str, usize)],
    n_items: usize,
    values: &mut [Vec<f64>],
) -> Result<()> {
    if n_items == 0 {
        return Ok(());
    }
    for ((_, block, row), values) in maps.iter().zip(values) {
        let (_, v) = part.get(block)?;
        let slice = v.get(row * n_items..(row + 1) * n_items).ok_or_else(|| {
            JobError::Corrupt(format!(
                "{block} holds {} values, not row {row} of {n_items}",
                v.len()
            ))
        })?;
        values.extend_from_slice(slice);
    }
    Ok(())
}

/// What the time-resolved merge writes into the summary.
#[derive(Default)]
struct TimeResolvedMerged {
    models: BTreeMap<String, MapSummary>,
    cross_temporal: Option<MapSummary>,
}

/// Cross-temporal RSA: the `[n_times, n_times₂]` matrix and its p-values as 2-D `.npy`,
/// family-wise corrected over the whole matrix.
async fn merge_cross_temporal(
    outputs: &StagedOutputs<'_>,
    spec: &JobSpec,
    t: &TimeResolvedSpec,
    done: &[(&Task, &Part)],
) -> Result<MapSummary> {
    let n_perms = spec.permutation.map(|p| p.n);
    let mut blocks = Vec::new();
    let mut shape = (0, 0);
    for (task, p) in done {
        if let Task::TimeResolved { perms, .. } = task {
            let block = MapBlock::read_as(p, CROSS_TEMPORAL_PREFIX)?;
            let (_, dims) = p.get(&format!("{CROSS_TEMPORAL_PREFIX}shape"))?;
            shape = (dims[0] as usize, dims[1] as usize);
            blocks.push(([0, block.value.ncols()], *perms, block));
        }
    }
    let maps = merge_blocks(&blocks, 1, shape.0 * shape.1, n_perms)?;
    let urls = MapUrls { spec, root: None, dir: MapDir::CrossTemporal };
    let matrix = |row: ArrayView1<'_, f64>| -> Result<bytes::Bytes> {
        let m = row.to_owned().into_shape_with_order(shape).map_err(|e| {
            JobError::Corrupt(format!("cross-temporal matrix of {} values: {e}", row.len()))
        })?;
        Ok(write_npy(&m.view()).into())
    };
    outputs.put(&urls.npy(MapFile::Rho)?, matrix(maps.value.row(0))?).await?;
    if let (Some(p), Some(pf), Some(nm)) = (&maps.p, &maps.p_fwe, &maps.null_max) {
        outputs.put(&urls.npy(MapFile::P)?, matrix(p.row(0))?).await?;
        outputs.put(&urls.npy(MapFile::PFwe)?, matrix(pf.row(0))?).await?;
        put_npy(outputs, &urls.npy(MapFile::NullMax)?, nm.row(0)).await?;
    }
    Ok(MapSummary {
        compare: t.compare.as_str().into(),
        rdm: t.rdm.as_str().into(),
        rho: map_stats(maps.value.row(0)),
        significant_fwe_05: significant(&maps, 0),
    })
}

/// Writes every output of the job from the tasks' parts (same order as `tasks`) and returns
/// the summary that was written to `summary.json`: each analysis merges its own tasks.
pub async fn write_outputs(
    store: &Store,
    outputs: &StagedOutputs<'_>,
    spec: &JobSpec,
    inventory: &Inventory,
    tasks: &[Task],
    parts: &[Part],
    info: &RunInfo,
) -> Result<Summary> {
    let done: Vec<(&Task, &Part)> = tasks.iter().zip(parts).collect();
    let mut subjects_summary = Vec::new();
    let mut warnings = inventory.warnings.clone();
    for (si, (subject, inv)) in spec.subjects.iter().zip(&inventory.subjects).enumerate() {
        let mask = match &subject.mask {
            Some(url) => Some(load_mask(store, url).await?),
            None => None,
        };
        let n_perms = spec.permutation.map(|p| p.n);
        let merge =
            SubjectMerge { outputs, spec, si, subject, inv, mask, done: done.clone(), n_perms };
        let mut entry = SubjectSummary {
            decoding: None,
            decoding_searchlight: None,
            best_space: None,
            ceiling: None,
            partition: None,
            encoding: None,
            n_samples: inv.n_samples,
            n_voxels: inv.n_voxels,
            // a single-subject job's subject is named by the job
            name: subject.name.clone().unwrap_or_else(|| spec.name.clone()),
            precision: (if inv.f64_data { "f64" } else { "f32" }).into(),
            rsa: Vec::new(),
            rsa_partition: Vec::new(),
            searchlight: None,
        };
        for analysis in Analysis::ALL.into_iter().filter(|a| a.per_subject() && a.requested(spec)) {
            match (analysis, &spec.searchlight, &spec.rsa) {
                (Analysis::Encoding, _, _) => {
                    let merged = merge.encoding(store, &mut warnings).await?;
                    entry.encoding = Some(merged.spaces);
                    (entry.best_space, entry.partition) = (merged.best_space, merged.partition);
                    entry.ceiling = merged.ceiling;
                }
                (Analysis::Searchlight, Some(sl), _) => {
                    entry.searchlight = Some(merge.searchlight(sl).await?);
                }
                (Analysis::RoiRsa, _, Some(r)) => {
                    (entry.rsa, entry.rsa_partition) = merge.roi_rsa(r).await?;
                }
                (Analysis::Decoding, _, _) => {
                    entry.decoding = Some(merge.decoding(store).await?);
                    let searchlight = merge.decoding_searchlight().await?;
                    entry.decoding_searchlight = (!searchlight.is_empty()).then_some(searchlight);
                }
                (
                    Analysis::Searchlight
                    | Analysis::RoiRsa
                    | Analysis::TimeResolved
                    | Analysis::Extraction
                    | Analysis::Group,
                    _,
                    _,
                ) => {
                    unreachable!("requested per-subject analyses have their section")
                }
            }
        }
        subjects_summary.push(entry);
    }
    let rsa_group = match &spec.rsa {
        Some(r) if spec.subjects.len() > 1 && !r.rois.is_empty() => {
            merge_group_rsa(outputs, spec, r, inventory, &done, &subjects_summary, &mut warnings)
                .await?
        }
        _ => Vec::new(),
    };
    let time_resolved_summary = match &spec.time_resolved {
        Some(t) => merge_time_resolved(outputs, spec, t, inventory, &done).await?,
        None => TimeResolvedMerged::default(),
    };
    let summary = Summary {
        brainfit_version: env!("CARGO_PKG_VERSION").into(),
        compute_seconds: info.compute_seconds,
        job: spec.source.clone(),
        linalg_backend: info.backend.clone(),
        name: spec.name.clone(),
        permutation: spec.permutation.map(|p| PermutationSummary {
            n: p.n,
            scheme: p.scheme.describe(),
            seed: p.seed,
            smallest_p: 1.0 / (p.n as f64 + 1.0),
        }),
        subjects: subjects_summary,
        tasks: tasks.len(),
        time_resolved: time_resolved_summary.models,
        rsa_group,
        cross_temporal: time_resolved_summary.cross_temporal,
        extraction: merge_extraction(outputs, spec, inventory).await?,
        group: crate::group::write_outputs(outputs, spec, &done).await?,
        warnings,
        workers: info.workers,
    };
    let text = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    outputs.put(&spec.output_url(None, SUMMARY)?, text.into()).await?;
    Ok(summary)
}

/// Variance partitioning (Lescroart et al. 2015; de Heer et al. 2017): from the R² of every
/// union of the bands (`fits`, the union of all bands last), the R² each subset of bands
/// shares and no other band explains — for a single band its unique R² — by
/// inclusion–exclusion over the complements: `P(S) = Σ_{W ⊆ S} (−1)^{|S|−|W|+1} R²(T ∖ W)`,
/// `T` all bands, `R²(∅) = 0`. Returns (subset name, map) in `fits`' order. Estimates are not
/// clipped: a negative one means the fits' R² are not additive there (noise, or suppression
/// between the bands).
pub(crate) fn partition_maps(
    fits: &[(crate::spec::Fit, Array1<f64>)],
) -> Vec<(String, Array1<f64>)> {
    let all = fits.last().expect("the union of the bands is fit last");
    let bands = &all.0.spaces;
    let score_of = |members: &[&String]| -> Array1<f64> {
        let found = fits.iter().find(|(f, _)| {
            f.spaces.len() == members.len() && f.spaces.iter().all(|s| members.contains(&s))
        });
        found.expect("every subset of the bands is fit").1.clone()
    };
    let members = |mask: u32| -> Vec<&String> {
        (0..bands.len()).filter(|b| mask & (1 << b) != 0).map(|b| &bands[b]).collect()
    };
    let parts = partition_from_unions(bands.len(), |mask| score_of(&members(mask)));
    fits.iter()
        .map(|(subset, _)| {
            let mask = subset
                .spaces
                .iter()
                .map(|b| 1u32 << bands.iter().position(|x| x == b).expect("a band"))
                .sum::<u32>();
            let value = parts.iter().find(|(m, _)| *m == mask).expect("every subset").1.clone();
            (subset.name.clone(), value)
        })
        .collect()
}

/// Each voxel's best feature space among `scores` (its label, 1-based in `scores`' order; 0
/// where no space has a finite score) and the winning score (Güçlü & van Gerven 2015).
pub(crate) fn best_space_maps(
    scores: &[(String, Array1<f64>)],
    n_voxels: usize,
) -> (Array1<i64>, Array1<f64>) {
    let mut label = Array1::<i64>::zeros(n_voxels);
    let mut best = Array1::from_elem(n_voxels, f64::NAN);
    for (l, (_, score)) in scores.iter().enumerate() {
        for v in 0..n_voxels {
            // strictly greater: a tie goes to the space listed first
            if score[v].is_finite() && (best[v].is_nan() || score[v] > best[v]) {
                (label[v], best[v]) = (l as i64 + 1, score[v]);
            }
        }
    }
    (label, best)
}

fn csv_err(e: csv::Error) -> JobError {
    JobError::Corrupt(format!("writing a CSV output: {e}"))
}

fn median(values: ArrayView1<'_, f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) })
}

/// `[extract]`: moves the feature spaces (and fitted PCA models) the assembly wrote into the
/// staged outputs (`features/<name>.npy`, `compress/<name>.npz`) and describes them.
async fn merge_extraction(
    outputs: &StagedOutputs<'_>,
    spec: &JobSpec,
    inventory: &Inventory,
) -> Result<Option<crate::summary::ExtractionSummary>> {
    use crate::extract::{COMPRESS_DIR, CompressSpec, ExtractSpec, FEATURES_DIR, ProjectionKind};
    let (Some(e), Some(x)) = (&spec.extract, &inventory.extraction) else { return Ok(None) };
    let mut layers = Vec::new();
    for l in &x.layers {
        let features = spec.output_url(None, &format!("{FEATURES_DIR}/{}.npy", l.name))?;
        outputs.adopt(&ExtractSpec::feature_url(&spec.output, &l.name), &features).await?;
        let compression = match e.compress.get(&l.name) {
            None => "none",
            Some(CompressSpec::Pca { model: None, .. }) => {
                let model = spec.output_url(None, &format!("{COMPRESS_DIR}/{}.npz", l.name))?;
                outputs.adopt(&ExtractSpec::model_url(&spec.output, &l.name), &model).await?;
                "pca"
            }
            Some(CompressSpec::Pca { .. }) => "pca (given model)",
            Some(CompressSpec::Projection { kind: ProjectionKind::Gaussian, .. }) => {
                "gaussian_random_projection"
            }
            Some(CompressSpec::Projection { .. }) => "sparse_random_projection",
        };
        layers.push(crate::summary::ExtractedLayer {
            name: l.name.clone(),
            node: l.node.clone(),
            shape: l.shape.clone(),
            features: l.features,
            compression: compression.into(),
        });
    }
    Ok(Some(crate::summary::ExtractionSummary {
        images: x.stimuli.len(),
        reference_images: x.reference.as_ref().map(crate::extract::ImageSource::len),
        input_size: [x.size.0, x.size.1],
        layers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ROI profile's null from chunked sums equals the null computed from whole null maps,
    /// and its p-values are the permutation rule's.
    #[test]
    fn roi_nulls_from_chunks_match_whole_maps() {
        let mut rng = brainfit_kernels::rng::Rng::new(5);
        // 3 permutations' null maps over 10 voxels (one NaN), ROIs {0..6} and {4..10}
        let mut null: ndarray::Array2<f64> = rng.normal_array((3, 10));
        null[(1, 5)] = f64::NAN;
        let rois = [0..6, 4..10];
        let chunks = [0..4, 4..7, 7..10];
        let tasks: Vec<Task> = chunks
            .iter()
            .map(|c| Task::Encoding { subject: 0, space: "a".into(), voxels: [c.start, c.end] })
            .collect();
        let parts: Vec<Part> = chunks
            .iter()
            .map(|chunk| {
                let (mut sum, mut count) = (vec![0.0; 6], vec![0.0; 6]); // [2 rois, 3 perms]
                for (r, roi) in rois.iter().enumerate() {
                    for v in chunk.clone().filter(|v| roi.contains(v)) {
                        for k in 0..3 {
                            if null[(k, v)].is_finite() {
                                sum[r * 3 + k] += null[(k, v)];
                                count[r * 3 + k] += 1.0;
                            }
                        }
                    }
                }
                let mut part = Part::new();
                part.push("roi_null_sum", vec![2, 3], sum);
                part.push("roi_null_count", vec![2, 3], count);
                part
            })
            .collect();
        let pairs: Vec<(&Task, &Part)> = tasks.iter().zip(&parts).collect();
        let means = roi_null_means(&pairs, Some(3)).unwrap().unwrap();
        for (r, roi) in rois.iter().enumerate() {
            for k in 0..3 {
                let finite: Vec<f64> =
                    roi.clone().map(|v| null[(k, v)]).filter(|x| x.is_finite()).collect();
                let want = finite.iter().sum::<f64>() / finite.len() as f64;
                assert!((means[(r, k)] - want).abs() < 1e-12);
            }
        }
        // p: ROI 0's own nulls; p_fwe: each permutation's larger ROI mean
        let observed = means[(0, 1)];
        let (p, p_fwe) = profile_p(observed, &means, 0);
        let own = (0..3).filter(|&k| means[(0, k)] >= observed).count() as f64;
        let max = (0..3).filter(|&k| means[(0, k)].max(means[(1, k)]) >= observed).count() as f64;
        assert_eq!((p, p_fwe), ((1.0 + own) / 4.0, (1.0 + max) / 4.0));
        assert!(p <= p_fwe);
        assert!(roi_null_means(&pairs, None).unwrap().is_none());
        assert!(roi_null_means(&pairs, Some(4)).is_err(), "a part with other permutations");
    }
}
