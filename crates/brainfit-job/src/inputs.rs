//! Loading and checking a job's inputs through object storage.
//!
//! Every check names the file and what is wrong with it: shapes that disagree, NaN or Inf,
//! an empty mask, a mask whose voxel count differs from the brain matrix, group labels of the
//! wrong length. The coordinator uses [`inspect`] (shapes only) to plan; workers load the data.

use crate::spec::{GroupsSpec, JobSpec, SubjectSpec};
use crate::{JobError, Result};
use brainfit_io::{Mask, NpyArray, Store, parse_nifti, parse_npy, parse_npy_header, parse_npz};
use ndarray::{Array2, ArrayD, Axis, Dimension};
use std::collections::BTreeMap;

/// A 2-D matrix in the precision it will be computed in.
#[derive(Debug, Clone)]
pub enum Matrix {
    /// Single precision (f32 data, or integer NIfTI).
    F32(Array2<f32>),
    /// Double precision (f64 data).
    F64(Array2<f64>),
}

/// Evaluates `$body` with `$data` bound to the matrix's array, whatever its precision: one
/// generic code path instead of an `f32` and an `f64` copy.
#[macro_export]
macro_rules! with_matrix {
    ($matrix:expr, |$data:ident| $body:expr) => {
        match $matrix {
            $crate::inputs::Matrix::F32($data) => $body,
            $crate::inputs::Matrix::F64($data) => $body,
        }
    };
}

impl Matrix {
    /// `(rows, columns)`.
    pub fn dim(&self) -> (usize, usize) {
        match self {
            Matrix::F32(a) => a.dim(),
            Matrix::F64(a) => a.dim(),
        }
    }

    /// Whether the matrix is double precision.
    pub fn is_f64(&self) -> bool {
        matches!(self, Matrix::F64(_))
    }
}

/// A feature space: one `.npy`, or one key of an `.npz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpaceRef {
    /// Space name (`entry`, or `entry.key` for an `.npz`).
    pub name: String,
    /// File URL.
    pub url: String,
    /// Key inside an `.npz`.
    pub key: Option<String>,
}

/// What the coordinator knows about one subject's inputs before any computation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubjectInventory {
    /// Number of samples (stimuli / time points).
    pub n_samples: usize,
    /// Number of voxels (mask voxels, or brain matrix columns).
    pub n_voxels: usize,
    /// Whether brain data is f64 (computation in f64) or not (f32).
    pub f64_data: bool,
    /// Feature spaces with their number of features.
    pub spaces: Vec<(SpaceRef, usize)>,
    /// Number of conditions RSA compares: the distinct `[data] conditions`, else the samples.
    pub n_conditions: usize,
}

/// Inventory of every subject of a job.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Inventory {
    /// One entry per subject, in job order.
    pub subjects: Vec<SubjectInventory>,
    /// What a user should know before trusting the results (the job file's own warnings,
    /// [`JobSpec::warnings`], and those that depend on the data, e.g. too few distinct
    /// permutations).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// `[extract]`: the images and layers, if the job extracts its features.
    #[serde(default)]
    pub extraction: Option<crate::extract::ExtractInventory>,
}

fn is_npz(url: &str) -> bool {
    url.to_ascii_lowercase().ends_with(".npz")
}

/// Whether a URL names a NIfTI image (by extension).
pub fn is_nifti(url: &str) -> bool {
    let u = url.to_ascii_lowercase();
    u.ends_with(".nii") || u.ends_with(".nii.gz")
}

fn input_err(url: &str, message: impl Into<String>) -> JobError {
    JobError::Input { url: url.to_string(), message: message.into() }
}

/// Reads time-resolved data (`[n_times, n_conditions, n_channels]`), checked for shape and
/// NaN/Inf, in double precision.
pub async fn load_time_resolved(store: &Store, url: &str) -> Result<ndarray::Array3<f64>> {
    let a = parse_npy(&store.get(url).await?, url)?;
    check_finite(&a, url)?;
    let shape = a.shape().to_vec();
    a.into_f64().into_dimensionality::<ndarray::Ix3>().map_err(|_| {
        input_err(url, format!("expected [n_times, n_conditions, n_channels], got {shape:?}"))
    })
}

/// Reads and checks a 3-D mask.
pub async fn load_mask(store: &Store, url: &str) -> Result<Mask> {
    let bytes = store.get(url).await?;
    let nifti = parse_nifti(&bytes, url)?;
    Ok(Mask::from_nifti(&nifti, url)?)
}

/// Shape of an `.npy` from its header alone (a small range read).
async fn npy_shape(store: &Store, url: &str) -> Result<(Vec<usize>, String)> {
    let size = store.size(url).await?;
    let head = store.get_range(url, 0..size.min(65_536)).await?;
    let h = parse_npy_header(&head, url)?;
    brainfit_io::check_npy_dtype(&h, url)?;
    let need = h.data_offset as u64
        + h.shape.iter().product::<usize>() as u64 * dtype_size(&h.dtype).unwrap_or(0) as u64;
    if size < need {
        return Err(input_err(
            url,
            format!(
                "truncated .npy: header says shape {:?} of {} ({need} bytes) but the file has {size} bytes",
                h.shape, h.dtype
            ),
        ));
    }
    Ok((h.shape, h.dtype))
}

fn dtype_size(dtype: &str) -> Option<usize> {
    dtype.get(2..).and_then(|s| s.parse().ok())
}

/// Samples, voxels and precision (`true` for float64) of a subject's 2-D `.npy` brain data,
/// from its header alone, checked against its mask when one is given.
pub async fn brain_npy_shape(
    store: &Store,
    subject: &SubjectSpec,
    mask: Option<&Mask>,
) -> Result<(usize, usize, bool)> {
    let url = subject.brain_url()?;
    let (shape, dtype) = npy_shape(store, url).await?;
    if shape.len() != 2 {
        return Err(input_err(
            url,
            format!("brain data must be 2-D [n_samples, n_voxels], got shape {shape:?}"),
        ));
    }
    if let Some(mask) = mask
        && mask.len() != shape[1]
    {
        return Err(input_err(
            url,
            format!(
                "has {} voxel columns but the mask {} has {} voxels",
                shape[1],
                subject.mask.as_deref().unwrap_or(""),
                mask.len()
            ),
        ));
    }
    Ok((shape[0], shape[1], dtype.ends_with("f8")))
}

/// Index and value of the first NaN or Inf of an array, if any.
fn first_non_finite(a: &NpyArray) -> Option<(Vec<usize>, f64)> {
    if !a.has_non_finite() {
        return None;
    }
    let values = a.to_f64();
    values.indexed_iter().find(|(_, v)| !v.is_finite()).map(|(pos, v)| (pos.slice().to_vec(), *v))
}

fn check_finite(a: &NpyArray, url: &str) -> Result<()> {
    match first_non_finite(a) {
        None => Ok(()),
        Some((pos, v)) => Err(input_err(
            url,
            format!("contains {v} at index {pos:?}; remove or impute non-finite values first"),
        )),
    }
}

/// Flattens trailing dimensions: `[n, ...]` -> `[n, prod(...)]`.
fn to_matrix(a: &NpyArray, url: &str, as_f64: bool) -> Result<Matrix> {
    let shape = a.shape().to_vec();
    if shape.is_empty() {
        return Err(input_err(url, "is a scalar; expected [n_samples, ...]"));
    }
    let cols: usize = shape[1..].iter().product();
    let reshape = |d: ArrayD<f64>| -> Array2<f64> {
        d.into_shape_with_order((shape[0], cols)).expect("element count is preserved")
    };
    Ok(if as_f64 {
        Matrix::F64(reshape(a.to_f64()))
    } else {
        let d = a.to_f32();
        Matrix::F32(d.into_shape_with_order((shape[0], cols)).expect("element count is preserved"))
    })
}

/// Brain data of a subject, checked: `[n_samples, n_voxels]` and the mask, if any.
pub async fn load_brain(store: &Store, subject: &SubjectSpec) -> Result<(Matrix, Option<Mask>)> {
    let mask = match &subject.mask {
        Some(m) => Some(load_mask(store, m).await?),
        None => None,
    };
    let url = subject.brain_url()?;
    let bytes = store.get(url).await?;
    let matrix = if is_nifti(url) {
        let img = parse_nifti(&bytes, url)?;
        let mask = mask
            .as_ref()
            .ok_or_else(|| input_err(url, "4-D NIfTI brain data needs a [data] mask"))?;
        let m = mask.apply(&img, url)?;
        if let Some(((t, v), x)) = m.indexed_iter().find(|(_, x)| !x.is_finite()) {
            return Err(input_err(url, format!("contains {x} at volume {t}, mask voxel {v}")));
        }
        Matrix::F32(m.mapv(|x| x as f32))
    } else {
        let a = parse_npy(&bytes, url)?;
        if a.shape().len() != 2 {
            return Err(input_err(
                url,
                format!("brain data must be 2-D [n_samples, n_voxels], got shape {:?}", a.shape()),
            ));
        }
        check_finite(&a, url)?;
        to_matrix(&a, url, a.is_f64())?
    };
    let (n, v) = matrix.dim();
    if let Some(mask) = &mask
        && mask.len() != v
    {
        return Err(input_err(
            url,
            format!(
                "has {v} voxel columns but the mask {} has {} voxels",
                subject.mask.as_deref().unwrap_or(""),
                mask.len()
            ),
        ));
    }
    if n < 2 || v == 0 {
        return Err(input_err(url, format!("brain data of shape [{n}, {v}] is too small")));
    }
    Ok((matrix, mask))
}

/// The feature spaces `[extract]` writes: name -> (shape `[n_stimuli, features]`, the images'
/// URL for messages).
type Extracted = BTreeMap<String, (Vec<usize>, String)>;

/// Where a feature space's rows come from, for messages: the images of an extracted space.
fn rows_source<'a>(space: &'a SpaceRef, extracted: &'a Extracted) -> &'a str {
    extracted.get(&space.name).map_or(&space.url, |(_, images)| images)
}

/// Feature spaces a subject's `[features]` entries expand to (reads `.npz` member lists).
async fn space_refs(
    store: &Store,
    subject: &SubjectSpec,
    extracted: &Extracted,
) -> Result<Vec<(SpaceRef, Vec<usize>)>> {
    let mut out = Vec::new();
    for (entry, url) in &subject.features {
        if let Some((shape, _)) = extracted.get(entry) {
            // written by this job's extraction: the shape is known from the model
            out.push((
                SpaceRef { name: entry.clone(), url: url.clone(), key: None },
                shape.clone(),
            ));
        } else if is_npz(url) {
            let bytes = store.get(url).await?;
            // headers only: a coordinator never decodes a user's arrays
            for (key, header) in brainfit_io::npz_headers(&bytes, url)? {
                let name = format!("{entry}.{key}");
                crate::spec::check_name("feature space (.npz member)", &name)
                    .map_err(|e| input_err(url, e))?;
                let r = SpaceRef { name, url: url.clone(), key: Some(key) };
                out.push((r, header.shape));
            }
        } else {
            let (shape, _) = npy_shape(store, url).await?;
            out.push((SpaceRef { name: entry.clone(), url: url.clone(), key: None }, shape));
        }
    }
    // an entry "net.fc6" and the member fc6 of an entry "net" would write to one directory
    let mut names: Vec<&str> = out.iter().map(|(s, _)| s.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        let url = out.iter().find(|(s, _)| s.name == w[0]).map(|(s, _)| s.url.clone());
        return Err(input_err(
            &url.unwrap_or_default(),
            format!("two feature spaces are named {:?} (an entry and an .npz member)", w[0]),
        ));
    }
    Ok(out)
}

/// Loads one feature space as a matrix in the requested precision, checked for NaN/Inf.
pub async fn load_space(store: &Store, space: &SpaceRef, as_f64: bool) -> Result<Matrix> {
    let bytes = store.get(&space.url).await?;
    let array = match &space.key {
        None => parse_npy(&bytes, &space.url)?,
        Some(key) => parse_npz(&bytes, &space.url)?
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, a)| a)
            .ok_or_else(|| input_err(&space.url, format!("has no array {key:?}")))?,
    };
    let name = match &space.key {
        Some(k) => format!("{} [{k}]", space.url),
        None => space.url.clone(),
    };
    check_finite(&array, &name)?;
    to_matrix(&array, &name, as_f64)
}

/// A remixed model's training set: the training images' activations (`[n_train, ...]`,
/// flattened, f64) and their integer category labels, checked against each other.
pub async fn load_remix_training(
    store: &Store,
    remix: &crate::spec::RemixSpec,
) -> Result<(Matrix, Vec<i64>)> {
    let space = SpaceRef { name: "remix".into(), url: remix.train.clone(), key: None };
    let train = load_space(store, &space, true).await?;
    let a = parse_npy(&store.get(&remix.labels).await?, &remix.labels)?;
    if a.shape().len() != 1 {
        return Err(input_err(
            &remix.labels,
            format!("labels must be 1-D, got shape {:?}", a.shape()),
        ));
    }
    let labels: Vec<i64> = a.to_i64(&remix.labels)?.iter().copied().collect();
    let n_train = match &train {
        Matrix::F32(x) => x.nrows(),
        Matrix::F64(x) => x.nrows(),
    };
    if labels.len() != n_train {
        return Err(input_err(
            &remix.labels,
            format!(
                "has {} labels but the training activations ({}) have {n_train} images",
                labels.len(),
                remix.train
            ),
        ));
    }
    Ok((train, labels))
}

/// Group labels of a subject, checked against the number of samples.
pub async fn load_groups(
    store: &Store,
    subject: &SubjectSpec,
    n_samples: usize,
) -> Result<Option<Vec<i64>>> {
    load_labels(store, subject, &subject.groups, "groups", n_samples).await
}

/// A subject's condition labels (`[data] conditions`), checked as [`load_groups`] does.
pub async fn load_conditions(
    store: &Store,
    subject: &SubjectSpec,
    n_samples: usize,
) -> Result<Option<Vec<i64>>> {
    load_labels(store, subject, &subject.conditions, "conditions", n_samples).await
}

/// The observation design of a subject with `[data] conditions` (and its groups as runs).
pub async fn load_design(
    store: &Store,
    subject: &SubjectSpec,
    n_samples: usize,
) -> Result<Option<brainfit_kernels::rdm::ObservationDesign>> {
    let Some(conditions) = load_conditions(store, subject, n_samples).await? else {
        return Ok(None);
    };
    let runs = load_groups(store, subject, n_samples).await?.unwrap_or_else(|| vec![0; n_samples]);
    let url = match &subject.conditions {
        Some(GroupsSpec::Url(u)) => u.clone(),
        _ => "[data] conditions".into(),
    };
    let design = brainfit_kernels::rdm::ObservationDesign::new(conditions, runs)
        .map_err(|e| input_err(&url, e.to_string()))?;
    Ok(Some(design))
}

/// Integer labels per sample (`[data] <what>`): an inline list or a 1-D `.npy`.
async fn load_labels(
    store: &Store,
    subject: &SubjectSpec,
    labels: &Option<GroupsSpec>,
    what: &str,
    n_samples: usize,
) -> Result<Option<Vec<i64>>> {
    let (groups, name) = match labels {
        None => return Ok(None),
        Some(GroupsSpec::List(l)) => (l.clone(), format!("[data] {what}")),
        Some(GroupsSpec::Url(url)) => {
            let bytes = store.get(url).await?;
            let a = parse_npy(&bytes, url)?;
            if a.shape().len() != 1 {
                return Err(input_err(
                    url,
                    format!("{what} must be 1-D, got shape {:?}", a.shape()),
                ));
            }
            (a.to_i64(url)?.iter().copied().collect(), url.clone())
        }
    };
    if groups.len() != n_samples {
        return Err(input_err(
            &name,
            format!(
                "has {} labels but the brain data ({}) has {n_samples} samples",
                groups.len(),
                subject.brain.as_deref().unwrap_or("none")
            ),
        ));
    }
    Ok(Some(groups))
}

/// A subject without `[data]` (given brain RDMs, MEG data): the number of conditions comes from
/// the first given RDM, else the time-resolved data, else the feature spaces; everything
/// else is checked as for a subject with brain data.
async fn inspect_without_brain(
    store: &Store,
    spec: &JobSpec,
    subject: &SubjectSpec,
    extracted: &Extracted,
) -> Result<SubjectInventory> {
    let first_given: Option<String> = spec
        .rsa
        .iter()
        .flat_map(|r| r.brain_rdms.values().chain(r.models.values()))
        .next()
        .cloned();
    let n_samples = match first_given {
        Some(url) => rdm_conditions(store, &url).await?,
        None => match &spec.time_resolved {
            Some(t) => {
                let url = &t.recordings[0].url;
                let (shape, _) = npy_shape(store, url).await?;
                *shape
                    .get(1)
                    .ok_or_else(|| input_err(url, "expected [n_times, n_conditions, n_channels]"))?
            }
            None => space_refs(store, subject, extracted)
                .await?
                .first()
                .map_or(0, |(_, shape)| shape[0]),
        },
    };
    let mut spaces = Vec::new();
    for (space, shape) in space_refs(store, subject, extracted).await? {
        if shape.first() != Some(&n_samples) {
            return Err(input_err(
                rows_source(&space, extracted),
                format!(
                    "feature space {} has shape {shape:?}: its first dimension must be the {n_samples} conditions of the given RDMs",
                    space.name
                ),
            ));
        }
        spaces.push((space, shape[1..].iter().product()));
    }
    let inv = SubjectInventory {
        n_samples,
        n_voxels: 0,
        f64_data: true,
        spaces,
        n_conditions: n_samples,
    };
    check_rsa_inputs(store, spec, subject, &inv).await?;
    Ok(inv)
}

/// `"<subject>: "` for a named subject of a sweep, empty for a single-subject job.
pub fn subject_prefix(subject: &SubjectSpec) -> String {
    subject.name.as_ref().map(|n| format!("{n}: ")).unwrap_or_default()
}

/// Makes the outer folds and, in each outer training part, the inner folds, as the workers
/// will: a CV that cannot be made (k larger than the data, one group for group CV) is an error
/// now, not in every task. With per-run z-scoring every fold must also hold whole runs: a run
/// split by a fold would have its z-scoring statistics include test rows, a leak into the
/// training rows. Returns the size of the smallest training part (inner or outer).
fn check_cv(
    e: &crate::spec::EncodingSpec,
    n: usize,
    groups: Option<&[i64]>,
) -> std::result::Result<usize, String> {
    use brainfit_kernels::cv::split;
    // the run a fold splits (one with rows on both sides of it), if any
    let split_run = |test: &[usize], labels: Option<&[i64]>| {
        let labels = labels.filter(|_| e.zscore_per_group)?;
        let mut in_test = vec![false; labels.len()];
        test.iter().for_each(|&i| in_test[i] = true);
        let mut sides: std::collections::BTreeMap<i64, [bool; 2]> = Default::default();
        for (&label, &t) in labels.iter().zip(&in_test) {
            sides.entry(label).or_default()[usize::from(t)] = true;
        }
        sides.into_iter().find(|(_, [train, test])| *train && *test).map(|(label, _)| label)
    };
    let leak = |what: &str, run: i64| {
        format!(
            "[encoding] zscore = \"per-group\" with {what} folds that split run {run}: the run's z-scoring statistics would include test rows (a leak into the training rows). Use {what} = {{ kind = \"group\" }}, or kfold with folds on run boundaries, or zscore = \"none\""
        )
    };
    let outer = split(e.cv, n, groups).map_err(|err| format!("[encoding] cv: {err}"))?;
    let mut smallest_train = n;
    for fold in &outer {
        smallest_train = smallest_train.min(fold.train.len());
        if let Some(run) = split_run(&fold.test, groups) {
            return Err(leak("cv", run));
        }
        let train_groups: Option<Vec<i64>> =
            groups.map(|g| fold.train.iter().map(|&i| g[i]).collect());
        let inner =
            split(e.inner_cv, fold.train.len(), train_groups.as_deref()).map_err(|err| {
                format!(
                    "[encoding] inner_cv (on an outer training part of {} samples): {err}",
                    fold.train.len()
                )
            })?;
        for inner_fold in &inner {
            smallest_train = smallest_train.min(inner_fold.train.len());
            if let Some(run) = split_run(&inner_fold.test, train_groups.as_deref()) {
                return Err(leak("inner_cv", run));
            }
        }
    }
    Ok(smallest_train)
}

/// PCR and PLS cannot use more components than a training part has directions: its number
/// of features, or of samples (one less with the intercept, which centring removes).
fn check_components(
    e: &crate::spec::EncodingSpec,
    space: &str,
    n_features: usize,
    smallest_train: usize,
) -> std::result::Result<(), String> {
    if e.model.hyperparameter() != "components" {
        return Ok(());
    }
    let rank = n_features.min(smallest_train - usize::from(e.model.intercept()));
    let most = e.model.grid().first().copied().unwrap_or(0.0);
    if most > rank as f64 {
        return Err(format!(
            "[encoding] components: {most} components, but feature space {space} gives at most {rank} ({n_features} features; the smallest training part of the cross-validation has {smallest_train} samples{})",
            if e.model.intercept() { ", one direction fewer once centred" } else { "" }
        ));
    }
    Ok(())
}

/// Reads shapes (and small inputs) of every subject and checks that they fit together,
/// without computing anything. This is what `brainfit validate` runs.
pub async fn inspect(store: &Store, spec: &JobSpec) -> Result<Inventory> {
    let mut subjects = Vec::new();
    let mut warnings = spec.warnings();
    let extraction = match &spec.extract {
        Some(e) => Some(crate::extract::inspect(store, e).await?),
        None => None,
    };
    let extracted: Extracted = extraction
        .iter()
        .flat_map(|x| {
            x.layers.iter().map(|l| {
                let source = spec.extract.as_ref().map_or(String::new(), |e| e.images.clone());
                (l.name.clone(), (vec![x.stimuli.len(), l.features], source))
            })
        })
        .collect();
    for subject in &spec.subjects {
        let Some(url) = &subject.brain else {
            subjects.push(inspect_without_brain(store, spec, subject, &extracted).await?);
            continue;
        };
        let mask = match &subject.mask {
            Some(m) => Some(load_mask(store, m).await?),
            None => None,
        };
        let (n_samples, n_voxels, f64_data) = if is_nifti(url) {
            // the header only: shapes are checked without decoding the image
            let dim = brainfit_io::parse_nifti_dims(&store.get(url).await?, url)?;
            let mask = mask
                .as_ref()
                .ok_or_else(|| input_err(url, "4-D NIfTI brain data needs a [data] mask"))?;
            if dim.len() != 4 || dim[..3] != mask.shape {
                return Err(input_err(
                    url,
                    format!("image of shape {dim:?} does not match the mask's {:?}", mask.shape),
                ));
            }
            (dim[3], mask.len(), false)
        } else {
            brain_npy_shape(store, subject, mask.as_ref()).await?
        };
        if n_samples < 2 || n_voxels == 0 {
            return Err(input_err(
                url,
                format!("brain data of shape [{n_samples}, {n_voxels}] is too small"),
            ));
        }
        for repeat in &subject.repeats {
            let (shape, _) = npy_shape(store, repeat).await?;
            if shape != [n_samples, n_voxels] {
                return Err(input_err(
                    repeat,
                    format!(
                        "a [data] repeats measurement must be shaped like the brain data, [{n_samples}, {n_voxels}]; got {shape:?}"
                    ),
                ));
            }
        }
        let groups = load_groups(store, subject, n_samples).await?;
        let invalid = |message: String| JobError::Invalid {
            file: spec.source_name.clone(),
            message: format!("{message} ({})", subject.label()),
        };
        if let Some(p) = &spec.permutation {
            let scheme = p.scheme(groups.as_deref());
            scheme.check(n_samples).map_err(|e| invalid(format!("[permutation] {e}")))?;
            let distinct = scheme.distinct_permutations(n_samples);
            if distinct < 1000 {
                warnings.push(format!(
                    "{}[permutation] scheme = \"{}\" has only {distinct} distinct permutations here: p-values cannot resolve below about 1/{distinct}",
                    subject_prefix(subject),
                    p.scheme.describe()
                ));
            }
        }
        let mut smallest_train = n_samples;
        if let Some(e) = &spec.encoding {
            let longest = brainfit_kernels::preprocess::longest_run(n_samples, groups.as_deref());
            if let Some(d) = e.delays.iter().find(|d| d.unsigned_abs() as usize >= longest) {
                return Err(invalid(format!(
                    "[encoding] delay {d} is not shorter than the longest run ({longest} samples): its features would be all zeros"
                )));
            }
            smallest_train = check_cv(e, n_samples, groups.as_deref()).map_err(invalid)?;
        }
        if let Some(d) = &spec.decoding {
            check_cv(&d.fit, n_samples, groups.as_deref())
                .map_err(|e| invalid(e.replace("[encoding]", "[decoding]")))?;
        }
        let mut spaces = Vec::new();
        for (space, shape) in space_refs(store, subject, &extracted).await? {
            if shape.is_empty() || shape[0] != n_samples {
                return Err(input_err(
                    rows_source(&space, &extracted),
                    format!(
                        "feature space {} has shape {shape:?}: its first dimension must be the brain data's {n_samples} samples ({url})",
                        space.name
                    ),
                ));
            }
            let p: usize = shape[1..].iter().product();
            if p == 0 {
                return Err(input_err(
                    &space.url,
                    format!("feature space {} has no features", space.name),
                ));
            }
            if let Some(e) = &spec.encoding {
                let n_features = p.saturating_mul(e.delays.len());
                check_components(e, &space.name, n_features, smallest_train).map_err(invalid)?;
            }
            spaces.push((space, p));
        }
        let design = load_design(store, subject, n_samples).await?;
        if let Some(d) = &design {
            check_crossnobis_design(spec, subject, d)?;
        }
        let n_conditions = design
            .as_ref()
            .map_or(n_samples, brainfit_kernels::rdm::ObservationDesign::n_conditions);
        let inv = SubjectInventory { n_samples, n_voxels, f64_data, spaces, n_conditions };
        check_rsa_inputs(store, spec, subject, &inv).await?;
        subjects.push(inv);
    }
    let mut inventory = Inventory { subjects, warnings, extraction };
    if spec.group.is_some() {
        let (_, warnings) = crate::group::group_maps_and_warnings(spec, &inventory)
            .map_err(|message| JobError::Invalid { file: spec.source_name.clone(), message })?;
        inventory.warnings.extend(warnings);
        inventory.warnings.extend(crate::group::check_grid(store, spec).await?);
    }
    inventory.warnings.dedup();
    let n_tasks = crate::plan::task_count(spec, &inventory);
    if n_tasks > crate::plan::MAX_TASKS {
        return Err(JobError::Invalid {
            file: spec.source_name.clone(),
            message: format!(
                "the job would plan {n_tasks} tasks (at most {}): raise [execution] voxels_per_task, centres_per_task or permutations_per_task, or lower [permutation] n",
                crate::plan::MAX_TASKS
            ),
        });
    }
    Ok(inventory)
}

/// Columns `[start, end)` of a matrix, as an owned matrix of the same precision.
pub fn columns(m: &Matrix, start: usize, end: usize) -> Matrix {
    match m {
        Matrix::F32(a) => Matrix::F32(a.slice_axis(Axis(1), (start..end).into()).to_owned()),
        Matrix::F64(a) => Matrix::F64(a.slice_axis(Axis(1), (start..end).into()).to_owned()),
    }
}

/// Converts a matrix to the precision of the brain data.
pub fn with_precision(m: Matrix, as_f64: bool) -> Matrix {
    match (m, as_f64) {
        (Matrix::F32(a), true) => Matrix::F64(a.mapv(f64::from)),
        (Matrix::F64(a), false) => Matrix::F32(a.mapv(|x| x as f32)),
        (m, _) => m,
    }
}

/// A model or brain RDM given directly: square `[n, n]` or condensed `.npy`, returned condensed.
pub async fn load_rdm(store: &Store, url: &str) -> Result<ndarray::Array1<f64>> {
    let a = parse_npy(&store.get(url).await?, url)?;
    let values = a.to_f64();
    match values.ndim() {
        1 => {
            let v = values.into_dimensionality::<ndarray::Ix1>().expect("1-D");
            brainfit_kernels::rdm::n_conditions_from_condensed(v.len())
                .map_err(|e| input_err(url, format!("not a condensed RDM: {e}")))?;
            Ok(v)
        }
        2 => {
            let m = values.into_dimensionality::<ndarray::Ix2>().expect("2-D");
            Ok(brainfit_kernels::rdm::square_to_condensed(m.view(), url)?)
        }
        _ => Err(input_err(
            url,
            format!("an RDM must be square [n, n] or condensed, got shape {:?}", a.shape()),
        )),
    }
}

/// Columns of the brain matrix inside an ROI mask (same grid as the subject's mask).
pub fn roi_columns(mask: &Mask, roi: &Mask, roi_url: &str) -> Result<Vec<usize>> {
    if roi.shape != mask.shape {
        return Err(input_err(
            roi_url,
            format!("ROI grid {:?} differs from the brain mask's {:?}", roi.shape, mask.shape),
        ));
    }
    let inside: std::collections::HashSet<[usize; 3]> = roi.voxels.iter().copied().collect();
    let cols: Vec<usize> = (0..mask.len()).filter(|&c| inside.contains(&mask.voxels[c])).collect();
    if cols.len() < 2 {
        return Err(input_err(
            roi_url,
            format!("the ROI holds {} voxels of the brain mask; at least 2 are needed", cols.len()),
        ));
    }
    Ok(cols)
}

/// Regressors a unit weighting may hold (units or components × pairs, f64): 1 GiB.
const MAX_UNIT_REGRESSOR_VALUES: usize = 1 << 27;

/// Checks the models `[rsa]` derives (reweighted sets, unit weightings, remixed models, the
/// partition) against the subject's models and feature spaces, before any task.
async fn check_rsa_models(
    store: &Store,
    spec: &JobSpec,
    r: &crate::spec::RsaSpec,
    inv: &SubjectInventory,
) -> Result<()> {
    let invalid = |message: String| JobError::Invalid { file: spec.source_name.clone(), message };
    let models = crate::plan::model_names(spec, inv);
    let maps = crate::plan::rsa_map_names(spec, inv);
    for (i, name) in maps.iter().enumerate() {
        if maps[..i].contains(name) {
            return Err(invalid(format!(
                "[rsa] two models are named {name:?} (given models, feature spaces, remix, reweight and unit_weighting names, and <name>.unweighted, must differ)"
            )));
        }
    }
    if !r.partition.is_empty() && maps.iter().any(|m| m == "partition") {
        return Err(invalid(
            "[rsa] partition writes searchlight/partition/ and time_resolved/partition/: no model may be named \"partition\"".into(),
        ));
    }
    let known = |table: &str, name: &String| -> Result<()> {
        if models.contains(name) {
            Ok(())
        } else {
            Err(invalid(format!("{table}: {name:?} is not a model (models: {models:?})")))
        }
    };
    for m in &r.partition {
        known("[rsa] partition", m)?;
    }
    let n = inv.n_conditions;
    for (name, set) in &r.reweight {
        for m in &set.models {
            known(&format!("[rsa.reweight.{name}] models"), m)?;
        }
        brainfit_kernels::rsa_fit::condition_folds(n, set.folds, set.seed)
            .map_err(|e| invalid(format!("[rsa.reweight.{name}]: {e}")))?;
    }
    let space =
        |table: &str, name: &str| -> Result<usize> {
            inv.spaces.iter().find(|(s, _)| s.name == name).map(|(_, p)| *p).ok_or_else(|| {
                invalid(format!("{table} space = {name:?} is not a [features] space"))
            })
        };
    for (name, unit) in &r.unit_weighting {
        let table = format!("[rsa.unit_weighting.{name}]");
        let units = space(&table, &unit.space)?;
        let regressors = match unit.components {
            Some(k) if k > units.min(n - 1) => {
                return Err(invalid(format!(
                    "{table} components = {k}, but {} has {units} units and {n} conditions (at most {})",
                    unit.space,
                    units.min(n - 1)
                )));
            }
            Some(k) => k,
            None => units,
        };
        if regressors.saturating_mul(brainfit_kernels::rdm::condensed_len(n))
            > MAX_UNIT_REGRESSOR_VALUES
        {
            return Err(invalid(format!(
                "{table}: {regressors} regressors over {n} conditions exceed {MAX_UNIT_REGRESSOR_VALUES} values; weight principal components instead (components = 100, say)"
            )));
        }
        brainfit_kernels::rsa_fit::condition_folds(n, unit.folds, unit.seed)
            .map_err(|e| invalid(format!("{table}: {e}")))?;
    }
    for (name, remix) in &r.remix {
        let table = format!("[rsa.remix.{name}]");
        let units = space(&table, &remix.space)?;
        let (shape, _) = npy_shape(store, &remix.train).await?;
        let train_units: usize = shape.get(1..).map_or(0, |d| d.iter().product());
        if shape.len() < 2 || train_units != units {
            return Err(input_err(
                &remix.train,
                format!(
                    "{table}: the training activations must be [n_train, ...] with the {units} units of {}, got {shape:?}",
                    remix.space
                ),
            ));
        }
        let labels = parse_npy(&store.get(&remix.labels).await?, &remix.labels)?;
        let labels: Vec<i64> = labels.to_i64(&remix.labels)?.iter().copied().collect();
        let mut counts = std::collections::BTreeMap::<i64, usize>::new();
        labels.iter().for_each(|&l| *counts.entry(l).or_default() += 1);
        let smallest = counts.values().min().copied().unwrap_or(0);
        let problem = if labels.len() != shape[0] {
            Some(format!("{} labels for {} training images", labels.len(), shape[0]))
        } else if counts.len() < 2 {
            Some("a classifier needs at least 2 categories".to_string())
        } else if smallest < remix.folds {
            Some(format!(
                "a category has {smallest} images, fewer than the {} inner folds",
                remix.folds
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(input_err(&remix.labels, format!("{table}: {problem}")));
        }
    }
    Ok(())
}

/// A crossnobis RDM cross-validates over runs: every condition must be measured in every run
/// (and there must be 2 runs), checked before any task.
fn check_crossnobis_design(
    spec: &JobSpec,
    subject: &SubjectSpec,
    design: &brainfit_kernels::rdm::ObservationDesign,
) -> Result<()> {
    use brainfit_kernels::rdm::RdmMethod::Crossnobis;
    let crossnobis = spec.rsa.as_ref().is_some_and(|r| r.rdm == Crossnobis && !r.rois.is_empty())
        || spec.searchlight.as_ref().is_some_and(|s| s.rdm == Crossnobis);
    if !crossnobis {
        return Ok(());
    }
    let mut runs = design.runs.clone();
    runs.sort_unstable();
    runs.dedup();
    let cells: std::collections::HashSet<(i64, i64)> =
        design.conditions.iter().copied().zip(design.runs.iter().copied()).collect();
    let missing = runs
        .iter()
        .flat_map(|&r| design.labels.iter().map(move |&c| (c, r)))
        .find(|cell| !cells.contains(cell));
    let problem = match (runs.len(), missing) {
        (n, _) if n < 2 => format!("crossnobis needs at least 2 runs ([data] groups), got {n}"),
        (_, Some((c, r))) => {
            format!(
                "crossnobis needs every condition in every run: condition {c} is not in run {r}"
            )
        }
        _ => return Ok(()),
    };
    Err(JobError::Invalid {
        file: spec.source_name.clone(),
        message: format!("{problem} ({})", subject.label()),
    })
}

/// Number of conditions of an RDM file, for shape checks.
async fn rdm_conditions(store: &Store, url: &str) -> Result<usize> {
    let v = load_rdm(store, url).await?;
    Ok(brainfit_kernels::rdm::n_conditions_from_condensed(v.len())?)
}

/// Checks the RSA inputs of a subject against its number of conditions (samples).
pub(crate) async fn check_rsa_inputs(
    store: &Store,
    spec: &JobSpec,
    subject: &SubjectSpec,
    inv: &SubjectInventory,
) -> Result<()> {
    let n = inv.n_conditions;
    let mut files: Vec<&String> = Vec::new();
    if let Some(r) = &spec.rsa {
        files.extend(r.models.values());
        files.extend(r.brain_rdms.values());
    }
    let rois = spec.profile_rois();
    if !rois.is_empty() {
        let Some(mask) = &subject.mask else {
            return Err(input_err(
                subject.brain_url()?,
                "[rsa] rois and [rois] need a [data] mask",
            ));
        };
        let mask = load_mask(store, mask).await?;
        for (name, url) in rois {
            let roi = load_mask(store, url).await?;
            roi_columns(&mask, &roi, url)
                .map_err(|e| input_err(url, format!("ROI {name}: {e}")))?;
        }
    }
    for url in files {
        let k = rdm_conditions(store, url).await?;
        if k != n {
            return Err(input_err(
                url,
                format!(
                    "RDM of {k} conditions, but the brain data has {n} conditions ({})",
                    if subject.conditions.is_some() { "[data] conditions" } else { "samples" }
                ),
            ));
        }
    }
    if spec.rsa.is_some() || spec.searchlight.is_some() || spec.time_resolved.is_some() {
        if n < 3 {
            return Err(input_err(
                subject.brain.as_deref().unwrap_or(&spec.source_name),
                format!("RSA needs at least 3 conditions, got {n}"),
            ));
        }
        let given = spec
            .rsa
            .as_ref()
            .map(|r| r.models.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        if let Some((s, _)) = inv.spaces.iter().find(|(s, _)| given.contains(&s.name)) {
            return Err(input_err(
                &s.url,
                format!("feature space {} has the name of an [rsa] model", s.name),
            ));
        }
        if spec.searchlight.is_some() && given.is_empty() && inv.spaces.is_empty() {
            return Err(JobError::Invalid {
                file: spec.source_name.clone(),
                message: "[searchlight] has no model RDMs: add [features] or [rsa] models".into(),
            });
        }
    }
    if let Some(r) = &spec.rsa {
        check_rsa_models(store, spec, r, inv).await?;
    }
    if let Some(t) = &spec.time_resolved {
        let mut n_times = None;
        for r in &t.recordings {
            let (shape, _) = npy_shape(store, &r.url).await?;
            if shape.len() != 3 {
                return Err(input_err(
                    &r.url,
                    format!(
                        "time-resolved data must be [n_times, n_conditions, n_channels], got {shape:?}"
                    ),
                ));
            }
            if shape[1] != n {
                return Err(input_err(
                    &r.url,
                    format!("has {} conditions, but the models have {n}", shape[1]),
                ));
            }
            // a group test over the recordings compares them time point by time point
            let first = *n_times.get_or_insert((shape[0], &r.url));
            if crate::group::tests_time_resolved(spec) && shape[0] != first.0 {
                return Err(input_err(
                    &r.url,
                    format!(
                        "[group] tests the recordings time point by time point, but this one has {} time points and {} has {}",
                        shape[0], first.1, first.0
                    ),
                ));
            }
        }
        if let Some(url) = &t.cross_data {
            let (second, _) = npy_shape(store, url).await?;
            if second.len() != 3 || second[1] != n {
                return Err(input_err(
                    url,
                    format!(
                        "the second recording must be [n_times, {n} conditions, n_channels], got {second:?}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The voxel columns of `runs` (ascending, disjoint ranges of voxels) of the `.npy` brain data
/// at `url` (a subject's, or one being prepared), side by side, checked for NaN/Inf, read with
/// range requests (per run one per sample row in C order, close ones merged; one in all in
/// Fortran order) so that a task holds only its voxels. (A NIfTI image is compressed, not
/// range-addressable: load it whole once with [`load_brain`].)
pub async fn load_brain_columns(
    store: &Store,
    url: &str,
    runs: &[std::ops::Range<usize>],
    as_f64: bool,
) -> Result<Matrix> {
    let (a, _requests) = store.get_npy_column_runs(url, runs).await?;
    if let Some((pos, v)) = first_non_finite(&a) {
        let voxel = runs.iter().flat_map(Clone::clone).nth(pos[1]).unwrap_or(pos[1]);
        return Err(input_err(url, format!("contains {v} at sample {}, voxel {voxel}", pos[0])));
    }
    to_matrix(&a, url, as_f64)
}
