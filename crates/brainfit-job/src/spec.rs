//! The checked job: every parameter parsed, defaulted and cross-checked before any work starts.
//!
//! A [`JobSpec`] is a pure function of the job file's text and the URL of the directory it was
//! read from (relative input paths resolve against it), so a coordinator can ship the text to
//! workers and every process sees the same spec.

use crate::file::{
    AlphasFile, CvFile, DataFile, DecodingFile, EncodingFile, EncodingModelFile, ExecutionFile,
    GroupsFile, JobFile, RsaFile, SchemeFile, SearchlightFile, TimeResolvedFile, ZscoreFile,
};
use crate::{JobError, Result};
use brainfit_kernels::compare::CompareMethod;
use brainfit_kernels::cv::CvScheme;
use brainfit_kernels::encoder::EncoderSpec;
use brainfit_kernels::permutation::Scheme;
use brainfit_kernels::rdm::{NoisePrecision, RdmMethod};
use brainfit_kernels::ridge::{SpectralModel, SpectralSpec, VOXEL_BATCH};
use brainfit_kernels::score::ScoreKind;
use std::collections::BTreeMap;

/// A checked job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job name.
    pub name: String,
    /// Output prefix URL.
    pub output: String,
    /// Subjects (one unnamed subject for a single-subject job).
    pub subjects: Vec<SubjectSpec>,
    /// Voxelwise encoding, if requested.
    pub encoding: Option<EncodingSpec>,
    /// `[rois]`: ROI masks (name -> URL) the encoding profile summarises scores in.
    pub rois: BTreeMap<String, String>,
    /// Decoding, if requested.
    pub decoding: Option<DecodingSpec>,
    /// Searchlight RSA, if requested.
    pub searchlight: Option<SearchlightSpec>,
    /// ROI-level RSA, if requested.
    pub rsa: Option<RsaSpec>,
    /// Time-resolved RSA, if requested.
    pub time_resolved: Option<TimeResolvedSpec>,
    /// Permutation inference, if requested.
    pub permutation: Option<PermutationSpec>,
    /// Task sizes.
    pub execution: ExecutionSpec,
    /// Feature extraction from the stimulus images, if requested: its layers are feature
    /// spaces of every subject.
    pub extract: Option<crate::extract::ExtractSpec>,
    /// Group-level inference over the subjects' maps, if requested.
    pub group: Option<crate::group::GroupSpec>,
    /// The job file's text, echoed into `summary.json` and shipped to workers.
    pub source: String,
    /// Where the job file was read from (for messages).
    pub source_name: String,
}

/// One subject's inputs.
#[derive(Debug, Clone)]
pub struct SubjectSpec {
    /// Output subdirectory (`None` for a single-subject job: outputs at the root).
    pub name: Option<String>,
    /// Brain data URL (`None` for a job that needs no brain patterns: `[rsa] brain_rdms` and
    /// `[time_resolved]` only).
    pub brain: Option<String>,
    /// Mask URL.
    pub mask: Option<String>,
    /// Group labels.
    pub groups: Option<GroupsSpec>,
    /// Feature files: entry name -> URL (an `.npz` expands to one space per key).
    pub features: BTreeMap<String, String>,
    /// Repeated measurements of the brain data (`.npy` URLs), for the noise ceiling.
    pub repeats: Vec<String>,
    /// Condition label per sample: RSA over the distinct conditions.
    pub conditions: Option<GroupsSpec>,
}

impl SubjectSpec {
    /// `relative` below this subject's output directory.
    pub fn output_path(&self, relative: &str) -> String {
        match &self.name {
            Some(n) => format!("{n}/{relative}"),
            None => relative.to_string(),
        }
    }

    /// The brain data URL, or an error for a subject without `[data]` (the spec allows that
    /// only for analyses that need no brain patterns).
    pub fn brain_url(&self) -> crate::Result<&str> {
        self.brain.as_deref().ok_or_else(|| {
            crate::JobError::Corrupt(format!("{} has no [data] brain", self.label()))
        })
    }

    /// Name for messages.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("subject")
    }
}

/// Group labels: from a file or inline.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupsSpec {
    /// `.npy` URL.
    Url(String),
    /// Inline list.
    List(Vec<i64>),
}

/// Checked `[encoding]`.
#[derive(Debug, Clone)]
pub struct EncodingSpec {
    /// The estimator with its hyperparameter grid, score kind and intercept (for banded
    /// ridge: ridge with its alpha grid, which single-band fits use).
    pub model: EncoderSpec,
    /// Banded ridge, if `model = "banded_ridge"`.
    pub banded: Option<BandedSpec>,
    /// Outer cross-validation.
    pub cv: CvScheme,
    /// Inner cross-validation.
    pub inner_cv: CvScheme,
    /// FIR delays.
    pub delays: Vec<i64>,
    /// Z-score brain data and features within each run first.
    pub zscore_per_group: bool,
}

/// Checked `[decoding]`: ridge from a subject's voxels (the whole mask, or each ROI) to every
/// unit of a feature space.
#[derive(Debug, Clone)]
pub struct DecodingSpec {
    /// The fit: ridge with its alphas, CV, score, intercept and z-scoring (no delays).
    pub fit: EncodingSpec,
    /// Feature spaces decoded; `None`: every space of the subject.
    pub spaces: Option<Vec<String>>,
    /// The ROIs decoded from, each on its own; empty: the whole mask (unless searchlight).
    pub rois: Vec<String>,
    /// Searchlight decoding: the spheres' radius and smallest size.
    pub searchlight: Option<(Radius, usize)>,
}

/// The name of the whole mask as a decoding source.
pub const WHOLE_MASK: &str = "brain";

impl DecodingSpec {
    /// What a subject's voxels are decoded from, besides searchlight spheres: each ROI; with
    /// neither ROIs nor a searchlight, the whole mask.
    pub fn sources(&self) -> Vec<&str> {
        match (self.rois.is_empty(), self.searchlight.is_some()) {
            (true, false) => vec![WHOLE_MASK],
            _ => self.rois.iter().map(String::as_str).collect(),
        }
    }

    /// The decoded feature spaces of a subject whose spaces are `spaces` (inventory order).
    pub fn decoded<'a>(&self, spaces: &[&'a str]) -> Vec<&'a str> {
        spaces
            .iter()
            .copied()
            .filter(|s| self.spaces.as_ref().is_none_or(|want| want.iter().any(|w| w == s)))
            .collect()
    }
}

/// Checked `[encoding]` of a banded-ridge job.
#[derive(Debug, Clone, PartialEq)]
pub struct BandedSpec {
    /// The spaces fit jointly, in this order; `None`: every feature space of the subject.
    pub bands: Option<Vec<String>>,
    /// Candidate band weights: how many ...
    pub n_iter: usize,
    /// ... the Dirichlet concentrations they cycle through ...
    pub concentrations: Vec<f64>,
    /// ... and their seed.
    pub seed: u64,
    /// Fit every non-empty subset of the bands and write the variance partition.
    pub partition: bool,
}

/// Most band-weight candidates a random search may try.
pub const MAX_CANDIDATES: usize = 1_000;
/// Most repeated measurements `[data] repeats` may list.
pub const MAX_REPEATS: usize = 64;
/// Most bands a variance partition may have (`2^bands - 1` fits).
pub const MAX_PARTITION_BANDS: usize = 3;

/// One encoding fit of a subject: a feature space, or several fit jointly (banded ridge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    /// The output directory below `encoding/` and the task keys' name: the space's name, or
    /// the bands' names joined by `+` (a character no space name has).
    pub name: String,
    /// The feature spaces, in band order.
    pub spaces: Vec<String>,
}

impl EncodingSpec {
    /// The model fit `fit` runs: banded ridge over its bands (with the alpha grid and the
    /// random search's candidates) when it has several, else the job's model.
    pub fn encoder(&self, fit: &Fit) -> EncoderSpec {
        match &self.banded {
            Some(b) if fit.spaces.len() > 1 => EncoderSpec::Banded {
                alphas: self.model.grid().to_vec(),
                candidates: brainfit_kernels::banded::simplex_candidates(
                    fit.spaces.len(),
                    b.n_iter,
                    &b.concentrations,
                    b.seed,
                ),
                intercept: self.model.intercept(),
                score: self.model.score(),
            },
            _ => self.model.clone(),
        }
    }

    /// The fits of a subject whose feature spaces are `spaces` (in inventory order): one per
    /// space; for banded ridge, the bands jointly, and with `partition`, every non-empty
    /// subset of them (single spaces first, the whole set last).
    pub fn fits(&self, spaces: &[&str]) -> Vec<Fit> {
        let Some(b) = &self.banded else {
            return spaces
                .iter()
                .map(|s| Fit { name: s.to_string(), spaces: vec![s.to_string()] })
                .collect();
        };
        let bands: Vec<String> = match &b.bands {
            Some(bands) => bands.clone(),
            None => spaces.iter().map(ToString::to_string).collect(),
        };
        let fit = |members: Vec<String>| Fit { name: members.join("+"), spaces: members };
        if !b.partition {
            return vec![fit(bands)];
        }
        let n = bands.len();
        let mut subsets: Vec<u32> = (1..(1u32 << n)).collect();
        subsets.sort_by_key(|&m| (m.count_ones(), m)); // by size, then lexicographically
        subsets
            .into_iter()
            .map(|m| fit((0..n).filter(|i| m & (1 << i) != 0).map(|i| bands[i].clone()).collect()))
            .collect()
    }
}

/// Searchlight radius.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Radius {
    /// In voxels.
    Voxels(f64),
    /// In millimetres, using the mask's voxel sizes.
    Millimetres(f64),
}

impl Radius {
    /// The radius and the voxel size to measure it in, for a mask of voxel sizes `pixdim`:
    /// `[1, 1, 1]` for a radius in voxels, the mask's voxel sizes for one in millimetres.
    pub fn with_voxel_size(self, pixdim: [f64; 3]) -> (f64, [f64; 3]) {
        match self {
            Radius::Voxels(r) => (r, [1.0; 3]),
            Radius::Millimetres(r) => (r, pixdim),
        }
    }

    /// How many voxels a sphere reaches along the first axis, for a mask of voxel sizes
    /// `pixdim`: the largest `d` with `d * size <= radius` (with the spheres' 1e-9 tolerance).
    pub fn reach(self, pixdim: [f64; 3]) -> usize {
        let (r, size) = self.with_voxel_size(pixdim);
        ((r * r + 1e-9).sqrt() / size[0]).floor() as usize
    }
}

/// Checked `[searchlight]`.
#[derive(Debug, Clone)]
pub struct SearchlightSpec {
    /// Sphere radius.
    pub radius: Radius,
    /// Minimum sphere size.
    pub min_voxels: usize,
    /// RDM method.
    pub rdm: RdmMethod,
    /// Noise precision of crossnobis RDMs.
    pub noise: NoisePrecision,
    /// Comparison method.
    pub compare: CompareMethod,
}

/// Checked `[rsa]`.
#[derive(Debug, Clone)]
pub struct RsaSpec {
    /// Brain RDMs given directly.
    pub brain_rdms: BTreeMap<String, String>,
    /// ROI masks.
    pub rois: BTreeMap<String, String>,
    /// Model RDMs given directly.
    pub models: BTreeMap<String, String>,
    /// RDM method for computed RDMs.
    pub rdm: RdmMethod,
    /// Noise precision of crossnobis RDMs.
    pub noise: NoisePrecision,
    /// Comparison methods.
    pub compare: Vec<CompareMethod>,
    /// Noise ceilings (Nili et al. 2014): group name -> its subjects' `brain_rdms` entries.
    pub ceiling: BTreeMap<String, Vec<String>>,
    /// Variance partitioning (Bankson, Hebart et al. 2018) over these 2 or 3 models.
    pub partition: Vec<String>,
    /// Reweighted RSA sets, by name.
    pub reweight: BTreeMap<String, ReweightSpec>,
    /// Unit weightings, by name.
    pub unit_weighting: BTreeMap<String, UnitWeightingSpec>,
    /// Remixed models, by name.
    pub remix: BTreeMap<String, RemixSpec>,
}

/// Checked `[rsa.reweight.<name>]`: a non-negative combination of model RDMs, cross-validated
/// over conditions (Khaligh-Razavi & Kriegeskorte 2014).
#[derive(Debug, Clone, PartialEq)]
pub struct ReweightSpec {
    /// The models weighted.
    pub models: Vec<String>,
    /// Folds over conditions.
    pub folds: usize,
    /// Seed of the folds.
    pub seed: u64,
}

/// Checked `[rsa.unit_weighting.<name>]` (Peterson, Abbott & Griffiths 2018).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitWeightingSpec {
    /// The feature space.
    pub space: String,
    /// Principal components weighted instead of units.
    pub components: Option<usize>,
    /// Folds over conditions.
    pub folds: usize,
    /// Seed of the folds.
    pub seed: u64,
}

/// Checked `[rsa.remix.<name>]` (Khaligh-Razavi & Kriegeskorte 2014; Storrs et al. 2021).
#[derive(Debug, Clone, PartialEq)]
pub struct RemixSpec {
    /// The feature space of the experiment's stimuli.
    pub space: String,
    /// Training images' activations (URL).
    pub train: String,
    /// Training images' category labels (URL).
    pub labels: String,
    /// Regularisation strengths to choose from.
    pub cs: Vec<f64>,
    /// Inner folds.
    pub folds: usize,
}

/// Folds over conditions by default for reweighting and unit weighting.
pub const DEFAULT_CONDITION_FOLDS: usize = 5;

impl RsaSpec {
    /// Names of the fitted models (reweighted sets, then unit weightings), each of which adds
    /// `<name>` and `<name>.unweighted` to the comparisons.
    pub fn fitted_names(&self) -> Vec<String> {
        self.reweight.keys().chain(self.unit_weighting.keys()).cloned().collect()
    }
}

/// Checked `[time_resolved]`.
#[derive(Debug, Clone)]
pub struct TimeResolvedSpec {
    /// The recordings, each `[n_times, n_conditions, n_channels]`: one unnamed (outputs at
    /// `time_resolved/`), or several named ones (outputs at `<name>/time_resolved/`, e.g. one
    /// per subject, which `[group]` can test across).
    pub recordings: Vec<Recording>,
    /// RDM method.
    pub rdm: RdmMethod,
    /// Comparison method.
    pub compare: CompareMethod,
    /// Cross-temporal RSA (the time x time matrix of brain RDMs).
    pub cross_temporal: bool,
    /// The second recording of cross-temporal RSA between recordings.
    pub cross_data: Option<String>,
}

/// One time-resolved recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// Its name (`None`: the job's only recording).
    pub name: Option<String>,
    /// `[n_times, n_conditions, n_channels]` URL.
    pub url: String,
}

impl Recording {
    /// `relative` below this recording's output directory.
    pub fn output_path(&self, relative: &str) -> String {
        match &self.name {
            Some(n) => format!("{n}/{relative}"),
            None => relative.to_string(),
        }
    }
}

/// How labels are permuted (the kernels' [`Scheme`] without the group labels, which come
/// with each subject's data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermutationScheme {
    /// Any permutation (with groups only by the explicit opt-in `free_across_groups`).
    Free,
    /// Only within each group (run): the default when the data have groups.
    WithinGroup,
    /// Whole groups of equal size as units: exact for time series.
    WholeGroups,
    /// Contiguous blocks of `len` samples as units, within each run.
    Block {
        /// Block length in samples.
        len: usize,
    },
}

impl PermutationScheme {
    /// The scheme as the job file names it, e.g. `"within-group"` or `"block (block_len 10)"`.
    pub fn describe(&self) -> String {
        match self {
            PermutationScheme::Free => "free".into(),
            PermutationScheme::WithinGroup => "within-group".into(),
            PermutationScheme::WholeGroups => "whole-groups".into(),
            PermutationScheme::Block { len } => format!("block (block_len {len})"),
        }
    }

    /// Whether single rows move independently (which destroys autocorrelation).
    pub fn is_row_level(&self) -> bool {
        matches!(self, PermutationScheme::Free | PermutationScheme::WithinGroup)
    }
}

/// Checked `[permutation]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PermutationSpec {
    /// Number of permutations.
    pub n: usize,
    /// Seed.
    pub seed: u64,
    /// Scheme.
    pub scheme: PermutationScheme,
    /// Whether the scheme was chosen by default (not written in the job file).
    pub scheme_by_default: bool,
}

impl PermutationSpec {
    /// The kernels' scheme for a subject with group labels `groups` (present wherever the
    /// scheme needs them: the spec checked that).
    pub fn scheme(&self, groups: Option<&[i64]>) -> Scheme {
        let labels = || groups.expect("checked by the spec").to_vec();
        match self.scheme {
            PermutationScheme::Free => Scheme::Free,
            PermutationScheme::WithinGroup => Scheme::WithinGroup(labels()),
            PermutationScheme::WholeGroups => Scheme::WholeGroups(labels()),
            PermutationScheme::Block { len } => {
                Scheme::Block { len, groups: groups.map(<[i64]>::to_vec) }
            }
        }
    }
}

/// Task sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExecutionSpec {
    /// Voxels per encoding task, a multiple of the kernels' voxel batch.
    pub voxels_per_task: usize,
    /// Searchlight centres per task.
    pub centres_per_task: usize,
    /// Permutations per task where permutations are sharded.
    pub permutations_per_task: usize,
}

/// `numpy.logspace(start, stop, num)`, computed as numpy does (linspace, then `10 ** y`).
pub fn logspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return vec![];
    }
    let div = if num > 1 { (num - 1) as f64 } else { 1.0 };
    let step = (stop - start) / div;
    let mut y: Vec<f64> = if step == 0.0 {
        (0..num).map(|i| i as f64 / div * (stop - start) + start).collect()
    } else {
        (0..num).map(|i| i as f64 * step + start).collect()
    };
    if num > 1 {
        y[num - 1] = stop;
    }
    y.into_iter().map(|e| 10f64.powf(e)).collect()
}

/// Most alphas a grid may hold.
pub const MAX_ALPHAS: usize = 1_000;
/// Most FIR delays.
pub const MAX_DELAYS: usize = 100;
/// Most permutations a job may ask for (p resolves to 1e-6 at most).
pub const MAX_PERMUTATIONS: usize = 1_000_000;

/// Longest name a job file may give a subject, feature space, ROI, model or brain RDM.
pub const MAX_NAME_BYTES: usize = 100;

/// Checks a name from the job file (or an `.npz` member) that becomes a path component and a
/// CSV field: 1 to [`MAX_NAME_BYTES`] bytes of `[A-Za-z0-9._-]`, and not `.` or `..`.
pub fn check_name(what: &str, name: &str) -> std::result::Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
    if !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.bytes().all(allowed)
        && name != "."
        && name != ".."
    {
        return Ok(());
    }
    let shown: String = name.chars().take(40).collect();
    let more = if name.chars().count() > 40 { "…" } else { "" };
    Err(format!(
        "{what} name {shown:?}{more} must be 1 to {MAX_NAME_BYTES} letters, digits, '.', '_' or '-', and not '.' or '..' (names become output paths)"
    ))
}

/// A section's error message (the caller adds the file name).
type Checked<T> = std::result::Result<T, String>;

/// Checks `[permutation]` against the subjects' groups: with groups the default is
/// `within-group`, and `free` needs the explicit opt-in `free_across_groups = true`.
fn parse_permutation(
    p: &crate::file::PermutationFile,
    subjects: &[SubjectSpec],
) -> Checked<PermutationSpec> {
    if p.n == 0 || p.n > MAX_PERMUTATIONS {
        return Err(format!("[permutation] n must be 1 to {MAX_PERMUTATIONS}, got {}", p.n));
    }
    let without_groups = subjects.iter().find(|s| s.groups.is_none());
    let with_groups = subjects.iter().find(|s| s.groups.is_some());
    let needs_groups = |name: &str| match without_groups {
        Some(s) => Err(format!(
            "[permutation] scheme = \"{name}\" needs [data] groups, and {} has none",
            s.label()
        )),
        None => Ok(()),
    };
    let scheme = match p.scheme {
        None => match (with_groups, without_groups) {
            (Some(_), None) => PermutationScheme::WithinGroup,
            (None, _) => PermutationScheme::Free,
            (Some(a), Some(b)) => {
                return Err(format!(
                    "[permutation] {} has groups and {} has none, so no default scheme fits both: set scheme explicitly",
                    a.label(),
                    b.label()
                ));
            }
        },
        Some(SchemeFile::Free) => {
            if let Some(s) = with_groups
                && p.free_across_groups != Some(true)
            {
                return Err(format!(
                    "[permutation] scheme = \"free\" would permute across the runs of {}'s [data] groups: a permuted run then mixes rows (run means, scales, per-run preprocessing) of every run, which the observed data never had, and p-values are wrong (many times too many false positives in tests). Use scheme = \"within-group\" (the default with groups), or set free_across_groups = true if rows really are exchangeable across runs",
                    s.label()
                ));
            }
            PermutationScheme::Free
        }
        Some(SchemeFile::WithinGroup) => {
            needs_groups("within-group")?;
            PermutationScheme::WithinGroup
        }
        Some(SchemeFile::WholeGroups) => {
            needs_groups("whole-groups")?;
            PermutationScheme::WholeGroups
        }
        Some(SchemeFile::Block) => match p.block_len {
            Some(len) if len >= 1 => PermutationScheme::Block { len },
            _ => return Err("[permutation] scheme = \"block\" needs block_len >= 1".into()),
        },
    };
    if p.block_len.is_some() && !matches!(scheme, PermutationScheme::Block { .. }) {
        return Err("[permutation] block_len only applies to scheme = \"block\"".into());
    }
    if p.free_across_groups.is_some() && scheme != PermutationScheme::Free {
        return Err("[permutation] free_across_groups only applies to scheme = \"free\"".into());
    }
    Ok(PermutationSpec { n: p.n, seed: p.seed, scheme, scheme_by_default: p.scheme.is_none() })
}

fn parse_cv(cv: Option<CvFile>, default: CvScheme) -> CvScheme {
    match cv {
        None => default,
        Some(CvFile::Kfold { k }) => CvScheme::KFold { k },
        Some(CvFile::Group) => CvScheme::LeaveOneGroupOut,
    }
}

/// An optional table, checked by `parse` when present.
fn section<F, T>(table: &Option<F>, parse: impl FnOnce(&F) -> Checked<T>) -> Checked<Option<T>> {
    table.as_ref().map(parse).transpose()
}

/// `[data]` or `[[subjects]]` (with `[features]`): the subjects, names checked.
fn parse_subjects(file: &JobFile, resolve: &impl Fn(&str) -> String) -> Checked<Vec<SubjectSpec>> {
    let subject = |n: Option<String>, d: &DataFile, extra: &BTreeMap<String, String>| SubjectSpec {
        name: n,
        brain: Some(resolve(&d.brain)),
        mask: d.mask.as_deref().map(resolve),
        groups: d.groups.as_ref().map(|g| match g {
            GroupsFile::Url(u) => GroupsSpec::Url(resolve(u)),
            GroupsFile::List(l) => GroupsSpec::List(l.clone()),
        }),
        features: file.features.iter().chain(extra).map(|(k, v)| (k.clone(), resolve(v))).collect(),
        repeats: d.repeats.iter().flatten().map(|r| resolve(r)).collect(),
        conditions: d.conditions.as_ref().map(|g| match g {
            GroupsFile::Url(u) => GroupsSpec::Url(resolve(u)),
            GroupsFile::List(l) => GroupsSpec::List(l.clone()),
        }),
    };
    let mut subjects = Vec::new();
    match (&file.data, &file.subjects) {
        (Some(d), None) => subjects.push(subject(None, d, &BTreeMap::new())),
        (None, Some(list)) if !list.is_empty() => {
            for s in list {
                check_name("[[subjects]] name", &s.name)?;
                if crate::outputs::layout::ROOT_NAMES.contains(&s.name.as_str()) {
                    return Err(format!(
                        "subject {:?}: the name is taken by the output's own files and folders ({})",
                        s.name,
                        crate::outputs::layout::ROOT_NAMES.join(", ")
                    ));
                }
                if subjects.iter().any(|x: &SubjectSpec| x.name.as_deref() == Some(&s.name)) {
                    return Err(format!("subject {:?} is listed twice", s.name));
                }
                subjects.push(subject(Some(s.name.clone()), &s.data, &s.features));
            }
        }
        (Some(_), Some(_)) => return Err("give either [data] or [[subjects]], not both".into()),
        (None, Some(_)) => return Err("[[subjects]] lists no subject".into()),
        (None, None) => {
            // given RDMs and MEG data need no brain patterns
            let needs_brain = [
                (file.encoding.is_some(), "[encoding]"),
                (file.decoding.is_some(), "[decoding]"),
                (file.searchlight.is_some(), "[searchlight]"),
                (file.rsa.as_ref().is_some_and(|r| !r.rois.is_empty()), "[rsa] rois"),
            ];
            if let Some((_, what)) = needs_brain.iter().find(|(needed, _)| *needed) {
                return Err(format!("missing [data] (or [[subjects]]): {what} needs brain data"));
            }
            subjects.push(SubjectSpec {
                name: None,
                brain: None,
                mask: None,
                groups: None,
                features: file.features.iter().map(|(k, v)| (k.clone(), resolve(v))).collect(),
                repeats: Vec::new(),
                conditions: None,
            });
        }
    }
    for s in &subjects {
        if s.repeats.len() == 1 || s.repeats.len() > MAX_REPEATS {
            return Err(format!(
                "[data] repeats: 2 to {MAX_REPEATS} measurements ({} lists {})",
                s.label(),
                s.repeats.len()
            ));
        }
        if let Some(r) = s.repeats.iter().find(|r| !r.ends_with(".npy")) {
            return Err(format!(
                "[data] repeats must be .npy files shaped like the brain data, got {r}"
            ));
        }
    }
    for (space, _) in subjects.iter().flat_map(|s| s.features.iter()) {
        check_name("[features]", space)?;
        if crate::outputs::layout::ENCODING_FILES.contains(&space.as_str()) {
            return Err(format!(
                "[features] {space:?} is the name of an output file below encoding/; rename the feature space"
            ));
        }
    }
    Ok(subjects)
}

/// `[encoding]`, checked against the subjects (groups, feature spaces).
fn parse_encoding(e: &EncodingFile, subjects: &[SubjectSpec]) -> Checked<EncodingSpec> {
    let model = e.model.unwrap_or(EncodingModelFile::Ridge);
    let score = e.score.unwrap_or(ScoreKind::R2);
    let intercept = e.intercept.unwrap_or(true);
    let alphas = |default: Vec<f64>| match &e.alphas {
        None => Ok(default),
        Some(AlphasFile::List(l)) if l.len() <= MAX_ALPHAS => Ok(l.clone()),
        Some(AlphasFile::Logspace { logspace: (a, b, n) }) if *n <= MAX_ALPHAS => {
            Ok(logspace(*a, *b, *n))
        }
        Some(_) => Err(format!(
            "[encoding] alphas: at most {MAX_ALPHAS} values (each is scored for every voxel and fold)"
        )),
    };
    let spectral = match model {
        EncodingModelFile::Pcr => Some(SpectralModel::Pcr),
        EncodingModelFile::Pls => Some(SpectralModel::Pls),
        EncodingModelFile::Ridge | EncodingModelFile::Lasso | EncodingModelFile::BandedRidge => {
            None
        }
    };
    let banded = parse_banded(e, model, score, subjects)?;
    let name = format!("{model:?}").to_lowercase();
    match (spectral, &e.alphas, &e.components) {
        (Some(_), Some(_), _) => {
            return Err(format!(
                "[encoding] model = \"{name}\" takes components = [...], not alphas"
            ));
        }
        (Some(_), None, None) => {
            return Err(format!(
                "[encoding] model = \"{name}\" needs components = [...], the numbers of components the inner CV chooses from (e.g. [1, 2, 5, 10, 25])"
            ));
        }
        (None, _, Some(_)) => {
            return Err(format!(
                "[encoding] model = \"{name}\" takes alphas, not components (components are for pcr and pls)"
            ));
        }
        _ => {}
    }
    let model = match (model, spectral, &e.components) {
        (_, Some(m), Some(ks)) => {
            if ks.len() > MAX_ALPHAS {
                return Err(format!("[encoding] components: at most {MAX_ALPHAS} values"));
            }
            // the real bound (the training parts' rank) is checked against the data
            let ks = ks.iter().map(|&k| usize::try_from(k).unwrap_or(usize::MAX)).collect();
            EncoderSpec::Spectral(
                SpectralSpec::components(m, ks, intercept, score)
                    .map_err(|err| format!("[encoding] components: {err}"))?,
            )
        }
        (EncodingModelFile::Lasso, ..) => {
            // for z-scored data, where the largest useful alpha is below 1
            EncoderSpec::lasso(alphas(logspace(-3.0, 0.0, 10))?, intercept, score)
                .map_err(|err| format!("[encoding] {err}"))?
        }
        _ => EncoderSpec::Spectral(
            SpectralSpec::ridge(alphas(logspace(-2.0, 5.0, 15))?, intercept, score)
                .map_err(|err| format!("[encoding] {err}"))?,
        ),
    };
    let zscore_per_group = e.zscore == Some(ZscoreFile::PerGroup);
    let delays = e.delays.clone().unwrap_or_else(|| vec![0]);
    if delays.len() > MAX_DELAYS {
        return Err(format!("[encoding] delays: at most {MAX_DELAYS} delays"));
    }
    if delays.is_empty() {
        return Err("[encoding] delays must not be empty (use [0] for none)".into());
    }
    let cv = parse_cv(e.cv, CvScheme::KFold { k: 5 });
    let inner_cv = parse_cv(e.inner_cv, CvScheme::KFold { k: 5 });
    let needs_groups = zscore_per_group
        || cv == CvScheme::LeaveOneGroupOut
        || inner_cv == CvScheme::LeaveOneGroupOut;
    if needs_groups && let Some(s) = subjects.iter().find(|s| s.groups.is_none()) {
        return Err(format!(
            "[encoding] uses groups (group cross-validation or per-group z-scoring) but {} has no [data] groups",
            s.label()
        ));
    }
    for (what, cv) in [("cv", cv), ("inner_cv", inner_cv)] {
        if let CvScheme::KFold { k } = cv
            && k < 2
        {
            return Err(format!("[encoding] {what}: kfold needs k >= 2, got {k}"));
        }
    }
    if subjects.iter().all(|s| s.features.is_empty()) {
        return Err("[encoding] needs at least one [features] space".into());
    }
    Ok(EncodingSpec { model, banded, cv, inner_cv, delays, zscore_per_group })
}

/// The banded-ridge keys of `[encoding]`: refused for other models, checked and defaulted for
/// `model = "banded_ridge"`.
fn parse_banded(
    e: &EncodingFile,
    model: EncodingModelFile,
    score: ScoreKind,
    subjects: &[SubjectSpec],
) -> Checked<Option<BandedSpec>> {
    if model != EncodingModelFile::BandedRidge {
        if e.bands.is_some() || e.random_search.is_some() || e.partition.is_some() {
            return Err(
                "[encoding] bands, random_search and partition are for model = \"banded_ridge\""
                    .into(),
            );
        }
        return Ok(None);
    }
    let partition = e.partition.unwrap_or(false);
    let search = e.random_search.as_ref();
    let n_iter = search.and_then(|r| r.n_iter).unwrap_or(20);
    if !(1..=MAX_CANDIDATES).contains(&n_iter) {
        return Err(format!(
            "[encoding] random_search n_iter must be 1 to {MAX_CANDIDATES}, got {n_iter}"
        ));
    }
    let concentrations = search.and_then(|r| r.concentrations.clone()).unwrap_or(vec![0.1, 1.0]);
    if concentrations.is_empty() || concentrations.len() > MAX_CANDIDATES {
        return Err(format!(
            "[encoding] random_search concentrations: 1 to {MAX_CANDIDATES} values"
        ));
    }
    if let Some(c) = concentrations.iter().find(|c| !(c.is_finite() && **c > 0.0)) {
        return Err(format!(
            "[encoding] random_search concentrations must be finite and > 0, got {c}"
        ));
    }
    let seed = search.and_then(|r| r.seed).unwrap_or(0);
    if let Some(bands) = &e.bands {
        for band in bands {
            if let Some(s) = subjects.iter().find(|s| !s.features.contains_key(band)) {
                return Err(format!(
                    "[encoding] bands: {band:?} is not a [features] space of {}",
                    s.label()
                ));
            }
        }
        if bands.iter().collect::<std::collections::BTreeSet<_>>().len() != bands.len() {
            return Err("[encoding] bands: a space is listed twice".into());
        }
    }
    let counts: Vec<usize> = match &e.bands {
        Some(bands) => vec![bands.len()],
        None => subjects.iter().map(|s| s.features.len()).collect(),
    };
    if let Some(n) = counts.iter().find(|&&n| n < 2) {
        return Err(format!(
            "[encoding] model = \"banded_ridge\" needs at least 2 bands (feature spaces), got {n}"
        ));
    }
    if partition {
        if score != ScoreKind::R2 {
            return Err("[encoding] partition needs score = \"r2\": variance partitioning adds and subtracts explained variance".into());
        }
        if let Some(n) = counts.iter().find(|&&n| n > MAX_PARTITION_BANDS) {
            return Err(format!(
                "[encoding] partition: at most {MAX_PARTITION_BANDS} bands (every subset is fit), got {n}; list them in bands = [...]"
            ));
        }
    }
    Ok(Some(BandedSpec { bands: e.bands.clone(), n_iter, concentrations, seed, partition }))
}

/// `[decoding]`: ridge (the `[encoding]` parser's checks and defaults, messages naming
/// `[decoding]`), the spaces and the ROIs.
fn parse_decoding(
    d: &DecodingFile,
    subjects: &[SubjectSpec],
    rois: &BTreeMap<String, String>,
    rsa: Option<&RsaSpec>,
) -> Checked<DecodingSpec> {
    let as_encoding = EncodingFile {
        model: None,
        alphas: d.alphas.clone(),
        components: None,
        bands: None,
        random_search: None,
        partition: None,
        cv: d.cv,
        inner_cv: d.inner_cv,
        score: d.score,
        intercept: d.intercept,
        delays: None,
        zscore: d.zscore,
    };
    let fit = parse_encoding(&as_encoding, subjects)
        .map_err(|e| e.replace("[encoding]", "[decoding]"))?;
    if let Some(spaces) = &d.spaces {
        if spaces.is_empty() {
            return Err("[decoding] spaces must list at least one feature space".into());
        }
        for space in spaces {
            if let Some(s) = subjects.iter().find(|s| !s.features.contains_key(space)) {
                return Err(format!(
                    "[decoding] spaces: {space:?} is not a [features] space of {}",
                    s.label()
                ));
            }
        }
    }
    let names = d.rois.clone().unwrap_or_default();
    for name in &names {
        let known = rois.contains_key(name) || rsa.is_some_and(|r| r.rois.contains_key(name));
        if !known {
            return Err(format!(
                "[decoding] rois: {name:?} is not an entry of [rois] or [rsa] rois"
            ));
        }
    }
    if names.iter().collect::<std::collections::BTreeSet<_>>().len() != names.len() {
        return Err("[decoding] rois: an ROI is listed twice".into());
    }
    let searchlight = match (d.radius, d.radius_mm) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err("[decoding] give at most one of radius or radius_mm".into());
        }
        (r, mm) => {
            let radius = r.map_or_else(|| Radius::Millimetres(mm.unwrap_or(0.0)), Radius::Voxels);
            let (Radius::Voxels(v) | Radius::Millimetres(v)) = radius;
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("[decoding] radius must be finite and >= 0, got {v}"));
            }
            if let Some(s) = subjects.iter().find(|s| s.mask.is_none()) {
                return Err(format!(
                    "[decoding] a searchlight needs a mask, and {} has none",
                    s.label()
                ));
            }
            Some((radius, d.min_voxels.unwrap_or(10).max(1)))
        }
    };
    if searchlight.is_some() && names.iter().any(|n| n == "searchlight") {
        return Err("[decoding] rois: an ROI named \"searchlight\" would share decoding/searchlight/ with the searchlight's maps; rename it".into());
    }
    if searchlight.is_none() && d.min_voxels.is_some() {
        return Err("[decoding] min_voxels is for a searchlight (radius or radius_mm)".into());
    }
    Ok(DecodingSpec { fit, spaces: d.spaces.clone(), rois: names, searchlight })
}

/// `[searchlight]`: one radius, a mask for every subject, RDMs it can compute.
fn parse_searchlight(s: &SearchlightFile, subjects: &[SubjectSpec]) -> Checked<SearchlightSpec> {
    let radius = match (s.radius, s.radius_mm) {
        (Some(r), None) => Radius::Voxels(r),
        (None, Some(r)) => Radius::Millimetres(r),
        _ => return Err("[searchlight] give exactly one of radius or radius_mm".into()),
    };
    let (Radius::Voxels(r) | Radius::Millimetres(r)) = radius;
    if !(r.is_finite() && r >= 0.0) {
        return Err(format!("[searchlight] radius must be finite and >= 0, got {r}"));
    }
    if let Some(s) = subjects.iter().find(|s| s.mask.is_none()) {
        return Err(format!("[searchlight] needs a mask, and {} has none", s.label()));
    }
    let rdm = s.rdm.unwrap_or(RdmMethod::Correlation);
    let noise = check_rdm("[searchlight]", rdm, s.noise, subjects)?;
    Ok(SearchlightSpec {
        radius,
        min_voxels: s.min_voxels.unwrap_or(10).max(1),
        rdm,
        noise,
        compare: s.compare.unwrap_or(CompareMethod::Spearman),
    })
}

/// The noise precision of an analysis's RDMs: crossnobis needs condition and run labels for
/// every subject; `noise` applies to crossnobis only.
fn check_rdm(
    table: &str,
    rdm: RdmMethod,
    noise: Option<NoisePrecision>,
    subjects: &[SubjectSpec],
) -> Checked<NoisePrecision> {
    if rdm == RdmMethod::Crossnobis {
        let unlabelled = subjects.iter().find(|s| s.conditions.is_none() || s.groups.is_none());
        if let Some(s) = unlabelled {
            return Err(format!(
                "{table} rdm = \"crossnobis\" needs [data] conditions (the condition of each sample) and groups (its run), and {} lacks them",
                s.label()
            ));
        }
    } else if let Some(n) = noise {
        return Err(format!(
            "{table} noise = \"{}\" applies to rdm = \"crossnobis\" only",
            n.as_str()
        ));
    }
    Ok(noise.unwrap_or_default())
}

/// Folds over conditions: at least 2, default [`DEFAULT_CONDITION_FOLDS`].
fn condition_folds(what: &str, folds: Option<usize>) -> Checked<usize> {
    match folds.unwrap_or(DEFAULT_CONDITION_FOLDS) {
        k if k >= 2 => Ok(k),
        k => Err(format!("{what} folds must be at least 2, got {k}")),
    }
}

/// `[rsa]`: names checked, RDMs it can compute, no two outputs sharing a path.
fn parse_rsa(
    r: &RsaFile,
    subjects: &[SubjectSpec],
    resolve: &impl Fn(&str) -> String,
) -> Checked<RsaSpec> {
    let compare = r.compare.clone().unwrap_or_else(|| vec![CompareMethod::Spearman]);
    if compare.is_empty() {
        return Err("[rsa] compare must list at least one method".into());
    }
    let rdm = r.rdm.unwrap_or(RdmMethod::Correlation);
    let noise = check_rdm("[rsa]", rdm, r.noise, subjects)?;
    for (table, names) in [("brain_rdms", &r.brain_rdms), ("rois", &r.rois), ("models", &r.models)]
    {
        for name in names.keys() {
            check_name(&format!("[rsa] {table}"), name)?;
        }
    }
    // brain RDMs and ROIs share rsa/rdms/<name>.npy and the brain column of the CSV
    if let Some(name) = r.rois.keys().find(|n| r.brain_rdms.contains_key(*n)) {
        return Err(format!(
            "[rsa] {name:?} is both a brain_rdms and a rois entry: their RDMs would share {}",
            crate::outputs::layout::rsa_rdm(name)
        ));
    }
    for (group, members) in &r.ceiling {
        check_name("[rsa] ceiling", group)?;
        if r.brain_rdms.contains_key(group) || r.rois.contains_key(group) {
            return Err(format!(
                "[rsa] ceiling {group:?} has the name of a brain RDM: they would share rows of rsa/compare.csv"
            ));
        }
        if members.len() < 2 {
            return Err(format!(
                "[rsa] ceiling {group:?}: a noise ceiling needs the RDMs of at least 2 subjects"
            ));
        }
        for (i, m) in members.iter().enumerate() {
            if !r.brain_rdms.contains_key(m) {
                return Err(format!(
                    "[rsa] ceiling {group:?}: {m:?} is not an entry of [rsa] brain_rdms"
                ));
            }
            if members[..i].contains(m) {
                return Err(format!("[rsa] ceiling {group:?} lists {m:?} twice"));
            }
        }
    }
    let partition = r.partition.clone().unwrap_or_default();
    if r.partition.is_some() {
        let distinct: std::collections::BTreeSet<&String> = partition.iter().collect();
        if !(2..=3).contains(&partition.len()) || distinct.len() != partition.len() {
            return Err(format!("[rsa] partition needs 2 or 3 distinct models, got {partition:?}"));
        }
    }
    let mut reweight = BTreeMap::new();
    for (name, w) in &r.reweight {
        check_name("[rsa] reweight", name)?;
        let distinct: std::collections::BTreeSet<&String> = w.models.iter().collect();
        if w.models.len() < 2 || distinct.len() != w.models.len() {
            return Err(format!(
                "[rsa.reweight.{name}] models needs at least 2 distinct models, got {:?}",
                w.models
            ));
        }
        let folds = condition_folds(&format!("[rsa.reweight.{name}]"), w.folds)?;
        let spec = ReweightSpec { models: w.models.clone(), folds, seed: w.seed.unwrap_or(0) };
        reweight.insert(name.clone(), spec);
    }
    let mut unit_weighting = BTreeMap::new();
    for (name, u) in &r.unit_weighting {
        check_name("[rsa] unit_weighting", name)?;
        if reweight.contains_key(name) {
            return Err(format!("[rsa] {name:?} is both a reweight and a unit_weighting entry"));
        }
        if u.components == Some(0) {
            return Err(format!("[rsa.unit_weighting.{name}] components must be at least 1"));
        }
        let folds = condition_folds(&format!("[rsa.unit_weighting.{name}]"), u.folds)?;
        let spec = UnitWeightingSpec {
            space: u.space.clone(),
            components: u.components,
            folds,
            seed: u.seed.unwrap_or(0),
        };
        unit_weighting.insert(name.clone(), spec);
    }
    let mut remix = BTreeMap::new();
    for (name, m) in &r.remix {
        check_name("[rsa] remix", name)?;
        let cs = m.cs.clone().unwrap_or_else(|| vec![0.01, 0.1, 1.0, 10.0, 100.0]);
        if cs.is_empty()
            || cs.iter().any(|c| !(c.is_finite() && *c > 0.0))
            || cs.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(format!(
                "[rsa.remix.{name}] cs must be a non-empty, strictly ascending list of positive numbers, got {cs:?}"
            ));
        }
        let folds = condition_folds(&format!("[rsa.remix.{name}]"), m.folds)?;
        let spec = RemixSpec {
            space: m.space.clone(),
            train: resolve(&m.train),
            labels: resolve(&m.labels),
            cs,
            folds,
        };
        remix.insert(name.clone(), spec);
    }
    let urls =
        |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| (k.clone(), resolve(v))).collect();
    Ok(RsaSpec {
        brain_rdms: urls(&r.brain_rdms),
        rois: urls(&r.rois),
        models: urls(&r.models),
        rdm,
        noise,
        compare,
        ceiling: r.ceiling.clone(),
        partition,
        reweight,
        unit_weighting,
        remix,
    })
}

/// `[time_resolved]`.
fn parse_time_resolved(
    t: &TimeResolvedFile,
    resolve: &impl Fn(&str) -> String,
) -> Checked<TimeResolvedSpec> {
    let rdm = t.rdm.unwrap_or(RdmMethod::Correlation);
    if rdm == RdmMethod::Crossnobis {
        return Err("[time_resolved] rdm = \"crossnobis\" is not supported yet".into());
    }
    if t.cross_temporal == Some(false) && t.cross_data.is_some() {
        return Err("[time_resolved] cross_data is the second recording of cross-temporal RSA: it needs cross_temporal = true (or leave cross_temporal out)".into());
    }
    let recordings = match &t.data {
        crate::file::TimeDataFile::One(url) => vec![Recording { name: None, url: resolve(url) }],
        crate::file::TimeDataFile::Recordings(named) => {
            if named.is_empty() {
                return Err("[time_resolved] data lists no recording".into());
            }
            let mut out = Vec::new();
            for (name, url) in named {
                check_name("[time_resolved] data recording", name)?;
                if crate::outputs::layout::ROOT_NAMES.contains(&name.as_str()) {
                    return Err(format!(
                        "[time_resolved] data: recording {name:?} would write its outputs among the output's own files and folders ({})",
                        crate::outputs::layout::ROOT_NAMES.join(", ")
                    ));
                }
                out.push(Recording { name: Some(name.clone()), url: resolve(url) });
            }
            out
        }
    };
    if recordings.len() > 1 && (t.cross_temporal == Some(true) || t.cross_data.is_some()) {
        return Err("[time_resolved] cross_temporal takes one recording (data = \"<file>.npy\"), not several".into());
    }
    Ok(TimeResolvedSpec {
        recordings,
        rdm,
        compare: t.compare.unwrap_or(CompareMethod::Spearman),
        cross_temporal: t.cross_temporal.unwrap_or(false) || t.cross_data.is_some(),
        cross_data: t.cross_data.as_deref().map(resolve),
    })
}

/// `[execution]`: task sizes, defaulted; encoding tasks hold whole voxel batches.
fn parse_execution(ex: Option<&ExecutionFile>) -> Checked<ExecutionSpec> {
    let positive = |v: Option<usize>, default: usize, what: &str| match v {
        None => Ok(default),
        Some(0) => Err(format!("[execution] {what} must be at least 1")),
        Some(v) => Ok(v),
    };
    let voxels = positive(ex.and_then(|e| e.voxels_per_task), 4096, "voxels_per_task")?;
    Ok(ExecutionSpec {
        voxels_per_task: voxels.div_ceil(VOXEL_BATCH) * VOXEL_BATCH,
        centres_per_task: positive(ex.and_then(|e| e.centres_per_task), 2048, "centres_per_task")?,
        permutations_per_task: positive(
            ex.and_then(|e| e.permutations_per_task),
            250,
            "permutations_per_task",
        )?,
    })
}

impl JobSpec {
    /// Parses and checks a job file, one section at a time. `name` is used in messages;
    /// `base_url` is the directory relative input paths resolve against.
    pub fn from_toml(text: &str, name: &str, base_url: &str) -> Result<JobSpec> {
        let file: JobFile = toml::from_str(text)
            .map_err(|e| JobError::Parse { file: name.to_string(), message: e.to_string() })?;
        let invalid = |message: String| JobError::Invalid { file: name.to_string(), message };
        let resolve = |p: &str| brainfit_io::resolve_relative(base_url, p);

        let extract = crate::extract::parse_extract(&file, &resolve).map_err(invalid)?;
        let mut subjects = parse_subjects(&file, &resolve).map_err(invalid)?;
        if let Some(e) = &extract {
            if file.output.trim().is_empty() {
                return Err(invalid("output must not be empty".into()));
            }
            let output = resolve(&file.output);
            for s in &mut subjects {
                if let Some(name) = e.layers.keys().find(|n| s.features.contains_key(*n)) {
                    return Err(invalid(format!(
                        "[extract] layers: {name:?} is also a feature space of {}",
                        s.label()
                    )));
                }
                for name in e.layers.keys() {
                    let url = crate::extract::ExtractSpec::feature_url(&output, name);
                    s.features.insert(name.clone(), url);
                }
            }
        }
        let encoding =
            section(&file.encoding, |e| parse_encoding(e, &subjects)).map_err(invalid)?;
        let searchlight =
            section(&file.searchlight, |s| parse_searchlight(s, &subjects)).map_err(invalid)?;
        let rsa = section(&file.rsa, |r| parse_rsa(r, &subjects, &resolve)).map_err(invalid)?;
        let mut rois = BTreeMap::new();
        for (name, url) in &file.rois {
            check_name("[rois]", name).map_err(invalid)?;
            let url = resolve(url);
            if rsa.as_ref().and_then(|r| r.rois.get(name)).is_some_and(|other| *other != url) {
                return Err(invalid(format!(
                    "[rois] {name:?} names another mask than [rsa] rois {name:?}"
                )));
            }
            rois.insert(name.clone(), url);
        }
        let decoding =
            section(&file.decoding, |d| parse_decoding(d, &subjects, &rois, rsa.as_ref()))
                .map_err(invalid)?;
        let time_resolved =
            section(&file.time_resolved, |t| parse_time_resolved(t, &resolve)).map_err(invalid)?;
        let permutation =
            section(&file.permutation, |p| parse_permutation(p, &subjects)).map_err(invalid)?;
        let execution = parse_execution(file.execution.as_ref()).map_err(invalid)?;
        let group = section(&file.group, |g| crate::group::parse_group(g, &subjects, &resolve))
            .map_err(invalid)?;

        let roi_rsa = rsa.as_ref().is_some_and(|r| !r.brain_rdms.is_empty() || !r.rois.is_empty());
        if encoding.is_none()
            && decoding.is_none()
            && searchlight.is_none()
            && !roi_rsa
            && time_resolved.is_none()
            && extract.is_none()
        {
            return Err(invalid(
                "no analysis requested: add [encoding], [decoding], [searchlight], [rsa] brain_rdms/rois, [time_resolved] or [extract]"
                    .into(),
            ));
        }
        if file.output.trim().is_empty() {
            return Err(invalid("output must not be empty".into()));
        }
        Ok(JobSpec {
            name: file.name.clone(),
            output: resolve(&file.output),
            subjects,
            encoding,
            rois,
            decoding,
            searchlight,
            rsa,
            time_resolved,
            permutation,
            execution,
            extract,
            group,
            source: text.to_string(),
            source_name: name.to_string(),
        })
    }

    /// What a user should know about this job file before trusting its p-values: choices that
    /// are allowed but make permutation inference approximate or invalid on some data.
    /// `brainfit validate` prints them and `summary.json` records them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = crate::group::warnings(self);
        let Some(p) = &self.permutation else { return out };
        if p.scheme == PermutationScheme::Free && self.subjects.iter().any(|s| s.groups.is_some()) {
            out.push("[permutation] scheme = \"free\" with free_across_groups: the runs are ignored, so p-values are valid only if rows are exchangeable across runs (no run offsets, scales, drifts or per-run preprocessing that differ between runs)".into());
        }
        let rsa = self.rsa.is_some() || self.searchlight.is_some() || self.time_resolved.is_some();
        if rsa
            && p.scheme != PermutationScheme::Free
            && self.subjects.iter().any(|s| s.conditions.is_some())
        {
            out.push(format!("[permutation] scheme = \"{}\" applies to the samples (encoding, decoding); with [data] conditions, RSA is over the conditions, each measured in every run, and its permutations exchange the condition labels freely", p.scheme.describe()));
        }
        if let PermutationScheme::Block { len } = p.scheme {
            out.push(format!("[permutation] scheme = \"block\" is approximate: blocks of {len} keep autocorrelation only inside each block, and the null is exact only if blocks are exchangeable within a run; with runs of equal length, \"whole-groups\" is exact"));
        }
        if let Some(e) = &self.encoding
            && e.delays != [0]
            && p.scheme.is_row_level()
        {
            out.push(format!(
                "[encoding] delays = {:?} mean time-series data, whose autocorrelation a row-level permutation (scheme = \"{}\") destroys: p-values come out too small. Use scheme = \"whole-groups\" (exact; runs of equal length) or \"block\" with block_len longer than the autocorrelation (approximate)",
                e.delays,
                p.scheme.describe()
            ));
        }
        out
    }

    /// Every URL the job reads or writes: each subject's inputs, the given RDMs and MEG data,
    /// and the output prefix.
    pub fn urls(&self) -> Vec<&str> {
        let mut urls = vec![self.output.as_str()];
        for s in &self.subjects {
            urls.extend(s.brain.as_deref());
            urls.extend(s.mask.as_deref());
            for labels in [&s.groups, &s.conditions] {
                if let Some(GroupsSpec::Url(u)) = labels {
                    urls.push(u);
                }
            }
            urls.extend(s.features.values().map(String::as_str));
            urls.extend(s.repeats.iter().map(String::as_str));
        }
        if let Some(r) = &self.rsa {
            urls.extend(
                r.brain_rdms
                    .values()
                    .chain(r.rois.values())
                    .chain(r.models.values())
                    .map(String::as_str),
            );
        }
        urls.extend(self.rois.values().map(String::as_str));
        if let Some(r) = &self.rsa {
            urls.extend(r.remix.values().flat_map(|m| [m.train.as_str(), m.labels.as_str()]));
        }
        if let Some(t) = &self.time_resolved {
            urls.extend(t.recordings.iter().map(|r| r.url.as_str()));
            urls.extend(t.cross_data.as_deref());
        }
        if let Some(g) = &self.group {
            urls.extend(g.mask.as_deref());
        }
        if let Some(e) = &self.extract {
            urls.extend(e.urls());
        }
        urls
    }

    /// The ROIs the encoding profile summarises scores in: `[rois]` and `[rsa] rois`
    /// (name -> URL).
    pub fn profile_rois(&self) -> BTreeMap<&str, &str> {
        let rsa = self.rsa.as_ref().map(|r| r.rois.iter()).into_iter().flatten();
        rsa.chain(&self.rois).map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// Checks that every URL of the job lies under one of `roots` (none given: no check), so a
    /// submitted job cannot read or write outside the lab's data.
    pub fn check_roots(&self, roots: &[String]) -> Result<()> {
        if roots.is_empty() {
            return Ok(());
        }
        for url in self.urls() {
            let inside = roots.iter().any(|r| brainfit_io::is_within(url, r).unwrap_or(false));
            if !inside {
                return Err(JobError::Invalid {
                    file: self.source_name.clone(),
                    message: format!(
                        "{url} is outside the allowed roots of this deployment ({})",
                        roots.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// The URL of output `relative` (`/`-separated) of `subject` (`None`: at the job's output
    /// root). The only way outputs are named: every component must pass [`check_name`] (or
    /// be names joined by `+`, as banded ridge names its fits), so no output can land outside
    /// `output`, whatever the job file's names.
    pub fn output_url(&self, subject: Option<&SubjectSpec>, relative: &str) -> Result<String> {
        let path = match subject {
            Some(s) => s.output_path(relative),
            None => relative.to_string(),
        };
        for name in path.split('/').flat_map(|component| component.split('+')) {
            check_name("output path component", name)
                .map_err(|e| JobError::Invalid { file: self.source_name.clone(), message: e })?;
        }
        Ok(brainfit_io::join_url(&self.output, &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logspace_matches_numpy() {
        // numpy 2.4 `numpy.logspace(-2, 5, 15)`. numpy's vectorised `power` may differ from
        // libm's `pow` in the last bit, so agreement is to 2 ulp, not bit for bit.
        let want = [
            0.01,
            0.03162277660168379,
            0.1,
            0.31622776601683794,
            1.0,
            3.1622776601683795,
            10.0,
            31.622776601683793,
            100.0,
            316.2277660168379,
            1000.0,
            3162.2776601683795,
            10000.0,
            31622.776601683792,
            100000.0,
        ];
        for (got, want) in logspace(-2.0, 5.0, 15).iter().zip(want) {
            assert!((got - want).abs() <= 2.0 * f64::EPSILON * want, "{got} vs {want}");
        }
        assert_eq!(logspace(1.0, 1.0, 1), vec![10.0]);
    }

    const BASE: &str = r#"
name = "t"
output = "out"
[data]
brain = "b.npy"
mask = "m.nii.gz"
groups = [0, 0, 1, 1]
[features]
conv = "c.npy"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let s =
            JobSpec::from_toml(&format!("{BASE}[encoding]\n"), "job.toml", "file:///data/study")
                .unwrap();
        assert_eq!(s.subjects[0].brain.as_deref(), Some("file:///data/study/b.npy"));
        assert_eq!(s.output, "file:///data/study/out");
        let e = s.encoding.unwrap();
        assert_eq!(e.cv, CvScheme::KFold { k: 5 });
        assert_eq!(e.model.grid().len(), 15);
        assert!(e.model.intercept());
        assert_eq!(e.model.name(), "ridge");
        assert_eq!(s.execution.voxels_per_task, 4096);
    }

    #[test]
    fn mistakes_name_the_file_and_the_key() {
        let err = |extra: &str| {
            JobSpec::from_toml(&format!("{BASE}{extra}"), "job.toml", "file:///d")
                .unwrap_err()
                .to_string()
        };
        let e = err("[encoding]\nalpha = [1.0]\n");
        assert!(e.contains("job.toml") && e.contains("alpha"), "{e}");
        assert!(err("[encoding]\nscore = \"r3\"\n").contains("r3"));
        assert!(err("[encoding]\nalphas = [1.0, -2.0]\n").contains("> 0"));
        assert!(err("").contains("no analysis"));
        assert!(err("[encoding]\n[permutation]\nn = 0\n").contains("must be 1 to"));
        assert!(
            err("[encoding]\n[permutation]\nn = 5\nscheme = \"block\"\n").contains("block_len")
        );
        assert!(err("[searchlight]\nradius = 2\nradius_mm = 4\n").contains("exactly one"));
        let no_groups = BASE.replace("groups = [0, 0, 1, 1]\n", "");
        let e = JobSpec::from_toml(
            &format!("{no_groups}[encoding]\ncv = {{ kind = \"group\" }}\n"),
            "j.toml",
            "file:///d",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("groups"), "{e}");
        let e = JobSpec::from_toml(
            &format!("{no_groups}[encoding]\n[permutation]\nn = 9\nscheme = \"within-group\"\n"),
            "j.toml",
            "file:///d",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("within-group"), "{e}");
    }

    fn parse(text: &str) -> std::result::Result<JobSpec, String> {
        JobSpec::from_toml(text, "j.toml", "file:///d").map_err(|e| e.to_string())
    }

    #[test]
    fn the_permutation_scheme_follows_the_runs() {
        let no_groups = BASE.replace("groups = [0, 0, 1, 1]\n", "");
        let scheme = |base: &str, extra: &str| {
            parse(&format!("{base}[encoding]\n[permutation]\nn = 9\n{extra}"))
                .map(|s| s.permutation.unwrap())
        };
        // defaults: within-group with runs, free without
        let with = scheme(BASE, "").unwrap();
        assert_eq!((with.scheme, with.scheme_by_default), (PermutationScheme::WithinGroup, true));
        assert_eq!(scheme(&no_groups, "").unwrap().scheme, PermutationScheme::Free);
        // free across runs only by opt-in, which is then a warning
        let e = scheme(BASE, "scheme = \"free\"\n").unwrap_err();
        assert!(e.contains("free_across_groups = true") && e.contains("within-group"), "{e}");
        let opted = scheme(BASE, "scheme = \"free\"\nfree_across_groups = true\n").unwrap();
        assert_eq!(opted.scheme, PermutationScheme::Free);
        let spec = parse(&format!(
            "{BASE}[encoding]\n[permutation]\nn = 9\nscheme = \"free\"\nfree_across_groups = true\n"
        ))
        .unwrap();
        assert!(spec.warnings().iter().any(|w| w.contains("exchangeable across runs")));
        assert!(scheme(&no_groups, "scheme = \"free\"\n").is_ok());
        let e = scheme(BASE, "free_across_groups = true\n").unwrap_err();
        assert!(e.contains("only applies"), "{e}");
        let e = scheme(&no_groups, "scheme = \"whole-groups\"\n").unwrap_err();
        assert!(e.contains("needs [data] groups"), "{e}");
        // delays with a row-level scheme warn and name the valid choices; whole-groups does not
        let delayed = |extra: &str| {
            parse(&format!("{BASE}[encoding]\ndelays = [1, 2]\n[permutation]\nn = 9\n{extra}"))
                .unwrap()
                .warnings()
        };
        let w = delayed("");
        assert!(w.len() == 1 && w[0].contains("whole-groups") && w[0].contains("block"), "{w:?}");
        assert!(delayed("scheme = \"whole-groups\"\n").is_empty());
        let w = delayed("scheme = \"block\"\nblock_len = 2\n");
        assert!(w.len() == 1 && w[0].contains("approximate"), "{w:?}");
        assert!(
            parse(&format!("{BASE}[encoding]\n[permutation]\nn = 9\n"))
                .unwrap()
                .warnings()
                .is_empty()
        );
    }

    #[test]
    fn data_is_optional_only_without_brain_patterns() {
        let rdms = "name = \"t\"\noutput = \"out\"\n[rsa]\nbrain_rdms = { it = \"it.npy\" }\nmodels = { m = \"m.npy\" }\n";
        let spec = parse(rdms).unwrap();
        assert_eq!(spec.subjects.len(), 1);
        assert!(spec.subjects[0].brain.is_none());
        let meg = "name = \"t\"\noutput = \"out\"\n[time_resolved]\ndata = \"meg.npy\"\n";
        assert!(parse(meg).is_ok());
        for (table, what) in [
            ("[encoding]\n[features]\nx = \"x.npy\"\n", "[encoding]"),
            ("[searchlight]\nradius = 2\n", "[searchlight]"),
            ("[rsa]\nrois = { a = \"a.nii.gz\" }\n", "[rsa] rois"),
        ] {
            let e = parse(&format!("name = \"t\"\noutput = \"out\"\n{table}")).unwrap_err();
            assert!(e.contains("missing [data]") && e.contains(what), "{e}");
        }
    }

    #[test]
    fn rsa_models_ceilings_and_crossnobis_are_checked_as_written() {
        let rdms = "name = \"t\"\noutput = \"out\"\n[rsa]\nbrain_rdms = { a = \"a.npy\", b = \"b.npy\" }\nmodels = { m = \"m.npy\", n = \"n.npy\" }\n";
        let ok = parse(&format!(
            "{rdms}ceiling = {{ g = [\"a\", \"b\"] }}\npartition = [\"m\", \"n\"]\n[rsa.reweight.w]\nmodels = [\"m\", \"n\"]\n"
        ))
        .unwrap();
        let r = ok.rsa.unwrap();
        assert_eq!(
            r.reweight["w"],
            ReweightSpec { models: vec!["m".into(), "n".into()], folds: 5, seed: 0 }
        );
        assert_eq!(r.fitted_names(), ["w"]);
        for (extra, message) in [
            ("ceiling = { g = [\"a\"] }\n", "at least 2 subjects"),
            ("ceiling = { g = [\"a\", \"x\"] }\n", "\"x\" is not an entry of [rsa] brain_rdms"),
            ("ceiling = { a = [\"a\", \"b\"] }\n", "has the name of a brain RDM"),
            ("ceiling = { g = [\"a\", \"a\"] }\n", "lists \"a\" twice"),
            ("partition = [\"m\"]\n", "2 or 3 distinct models"),
            ("[rsa.reweight.w]\nmodels = [\"m\"]\n", "at least 2 distinct models"),
            ("[rsa.reweight.w]\nmodels = [\"m\", \"n\"]\nfolds = 1\n", "folds must be at least 2"),
            ("[rsa.reweight.\"../x\"]\nmodels = [\"m\", \"n\"]\n", "names become output paths"),
            (
                "[rsa.unit_weighting.u]\nspace = \"m\"\ncomponents = 0\n",
                "components must be at least 1",
            ),
            (
                "[rsa.remix.r]\nspace = \"s\"\ntrain = \"t.npy\"\nlabels = \"l.npy\"\ncs = [1.0, 0.1]\n",
                "strictly ascending",
            ),
            ("rdm = \"crossnobis\"\n", "needs [data] conditions"),
            ("noise = \"diag\"\n", "applies to rdm = \"crossnobis\" only"),
        ] {
            let e = parse(&format!("{rdms}{extra}")).unwrap_err();
            assert!(e.contains(message) && e.contains("j.toml"), "{extra}: {e}");
        }
        // crossnobis with condition and run labels; cross-temporal between recordings
        let labelled = BASE
            .replace("groups = [0, 0, 1, 1]", "groups = [0, 0, 1, 1]\nconditions = [1, 2, 1, 2]");
        let cn =
            parse(&format!("{labelled}[rsa]\nrois = {{ a = \"a.nii.gz\" }}\nrdm = \"crossnobis\"\nnoise = \"shrinkage_diag\"\n"))
                .unwrap();
        assert_eq!(cn.rsa.unwrap().noise, NoisePrecision::ShrinkageDiag);
        let meg = "name = \"t\"\noutput = \"out\"\n[time_resolved]\ndata = \"meg.npy\"\n";
        let t = parse(&format!("{meg}cross_data = \"eeg.npy\"\n")).unwrap().time_resolved.unwrap();
        assert!(t.cross_temporal && t.cross_data.as_deref() == Some("file:///d/eeg.npy"));
        let e =
            parse(&format!("{meg}cross_temporal = false\ncross_data = \"eeg.npy\"\n")).unwrap_err();
        assert!(e.contains("needs cross_temporal = true"), "{e}");
    }
}
