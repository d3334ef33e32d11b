//! The job file as written by a user: TOML, parsed strictly.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default), and every table
//! is optional except what an analysis needs. This module only mirrors the text; meaning and
//! cross-checks live in [`crate::spec`].

use brainfit_kernels::compare::CompareMethod;
use brainfit_kernels::rdm::{NoisePrecision, RdmMethod};
use brainfit_kernels::score::ScoreKind;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole job file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// Job name, echoed into `summary.json`.
    pub name: String,
    /// Output prefix URL; results are written below it.
    pub output: String,
    /// Brain data of a single-subject job.
    pub data: Option<DataFile>,
    /// Multi-subject sweep: one entry per subject, outputs under `<subject>/`.
    pub subjects: Option<Vec<SubjectFile>>,
    /// Feature spaces (layers): name -> `.npy` URL, or `.npz` URL (one space per key).
    #[serde(default)]
    pub features: BTreeMap<String, String>,
    /// Voxelwise encoding.
    pub encoding: Option<EncodingFile>,
    /// Decoding: ridge from voxels to feature units.
    pub decoding: Option<DecodingFile>,
    /// ROI masks (name -> NIfTI URL) the encoding profile summarises scores in.
    #[serde(default)]
    pub rois: BTreeMap<String, String>,
    /// Searchlight RSA.
    pub searchlight: Option<SearchlightFile>,
    /// ROI-level RSA.
    pub rsa: Option<RsaFile>,
    /// Time-resolved RSA (MEG/EEG).
    pub time_resolved: Option<TimeResolvedFile>,
    /// Permutation inference, applied to every analysis of the job.
    pub permutation: Option<PermutationFile>,
    /// How work is cut into tasks (does not change results).
    pub execution: Option<ExecutionFile>,
    /// Feature extraction: stimulus images through an ONNX network, layers read out as
    /// feature spaces of this job.
    pub extract: Option<ExtractFile>,
    /// Compression of extracted layers, per feature space name.
    #[serde(default)]
    pub compress: BTreeMap<String, CompressFile>,
    /// Group-level inference: sign-flip tests of the subjects' maps.
    pub group: Option<GroupFile>,
}

/// `[group]`: second-level tests of the subjects' maps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    /// The maps tested: an analysis (`"encoding"`, `"searchlight"`, `"best_score"`,
    /// `"partition"`: each of its maps), or one map of it (`"encoding/conv5"`).
    pub maps: Vec<String>,
    /// `"one-sample"` (default) or `"paired"`.
    pub test: Option<GroupTestFile>,
    /// Paired test: the pairs of maps `[a, b]` whose difference `a - b` is tested.
    pub pairs: Option<Vec<[String; 2]>>,
    /// One-sample test: the value tested against (default 0).
    pub value: Option<f64>,
    /// Fisher's z transform of correlation maps before the test.
    pub fisher_z: Option<bool>,
    /// Sign flips (default 5000); all `2^subjects` when that is no more.
    pub n: Option<u64>,
    /// Seed; flip k is a pure function of (seed, k).
    pub seed: Option<u64>,
    /// `"two-sided"` (default), `"greater"` or `"less"`.
    pub tail: Option<brainfit_kernels::group::Tail>,
    /// Threshold-free cluster enhancement with FWE p.
    pub tfce: Option<bool>,
    /// Cluster-forming threshold in t units, for cluster mass and extent.
    pub cluster_threshold: Option<f64>,
    /// Cluster-forming threshold as an uncorrected p (converted to t).
    pub cluster_p: Option<f64>,
    /// Voxel connectivity of clusters and TFCE: 6, 18 or 26 (default).
    pub connectivity: Option<u8>,
    /// The group mask (NIfTI, on the subjects' grid); default: the subjects' masks'
    /// intersection.
    pub mask: Option<String>,
}

/// `[group] test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupTestFile {
    /// One-sample t against `value`.
    OneSample,
    /// Paired t of `pairs`.
    Paired,
}

/// `[extract]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractFile {
    /// The ONNX model file.
    pub model: String,
    /// The stimuli: a folder (prefix) of PNG/JPEG files, in name order, or an `.npy` of
    /// `[n, height, width, 3]` uint8.
    pub images: String,
    /// The images PCA is fitted on (same forms as `images`); the stimuli by default.
    pub reference: Option<String>,
    /// Feature space name -> node or tensor name of the model.
    pub layers: BTreeMap<String, String>,
    /// Images per forward pass.
    pub batch: Option<usize>,
    /// Images per extraction task.
    pub images_per_task: Option<usize>,
    /// Preprocessing.
    pub preprocess: Option<PreprocessFile>,
}

/// `[extract.preprocess]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessFile {
    /// `[height, width]` the network takes (default: the model's input size).
    pub size: Option<(usize, usize)>,
    /// Resize the shorter side to this first (torchvision's `Resize(n)`); off by default.
    pub resize_shorter: Option<usize>,
    /// Side of the central square kept, as a fraction of the shorter side (0.875 = 7/8).
    pub crop_fraction: Option<f64>,
    /// Resampling filter of every resize (Pillow's).
    pub interpolation: Option<brainfit_kernels::image::Interpolation>,
    /// Scale pixel values to [0, 1] before normalising (false keeps 0-255, as Caffe models).
    pub scale_to_unit: Option<bool>,
    /// Per-channel mean subtracted (in the model's channel order).
    pub mean: Option<[f32; 3]>,
    /// Per-channel standard deviation divided by.
    pub std: Option<[f32; 3]>,
    /// `"rgb"` or `"bgr"`.
    pub channels: Option<brainfit_kernels::image::ChannelOrder>,
}

/// `[compress.<space>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressFile {
    /// `"pca"`, `"sparse_random_projection"` or `"gaussian_random_projection"`.
    pub method: CompressMethodFile,
    /// Components kept (PCA, projections); with `model`, taken from the model.
    pub components: Option<usize>,
    /// PCA: reference images per partial fit (at least `components`).
    pub batch: Option<usize>,
    /// PCA: a fitted model (`.npz` written by an earlier job) applied instead of fitting.
    pub model: Option<String>,
    /// Sparse projection: density of non-zeros, a number in (0, 1] or `"auto"` (1/sqrt(units)).
    pub density: Option<DensityFile>,
    /// Projections: the seed of the random matrix.
    pub seed: Option<u64>,
}

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressMethodFile {
    /// Incremental PCA (scikit-learn's `IncrementalPCA`).
    Pca,
    /// scikit-learn's `SparseRandomProjection`.
    SparseRandomProjection,
    /// scikit-learn's `GaussianRandomProjection`.
    GaussianRandomProjection,
}

/// `density`: a number or `"auto"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DensityFile {
    /// A density in (0, 1].
    Value(f64),
    /// `"auto"`.
    Named(String),
}

/// `[data]`: one subject's brain data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    /// `[n_samples, n_voxels]` `.npy`, or 4-D NIfTI `[x, y, z, n_samples]`.
    pub brain: String,
    /// 3-D NIfTI mask placing the voxels (required with 4-D NIfTI brain data).
    pub mask: Option<String>,
    /// Group (run) label per sample: `.npy` of integers or an inline list.
    pub groups: Option<GroupsFile>,
    /// Repeated measurements of the brain data (`.npy`, each shaped like it), for the
    /// encoding noise ceiling.
    pub repeats: Option<Vec<String>>,
    /// Condition label per sample (`.npy` of integers or an inline list): RSA is then over
    /// the distinct conditions (crossnobis, or the condition means).
    pub conditions: Option<GroupsFile>,
}

/// Group labels: a URL or an inline list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum GroupsFile {
    /// `.npy` of integers.
    Url(String),
    /// Inline list.
    List(Vec<i64>),
}

/// `[[subjects]]`: one subject of a sweep.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectFile {
    /// Subject name; its outputs go under `<name>/`.
    pub name: String,
    /// The subject's brain data.
    pub data: DataFile,
    /// Subject-specific feature spaces (added to, or replacing by name, the shared ones).
    #[serde(default)]
    pub features: BTreeMap<String, String>,
}

/// `alphas`: an explicit list or `{ logspace = [start, stop, num] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AlphasFile {
    /// Explicit values.
    List(Vec<f64>),
    /// `numpy.logspace(start, stop, num)`.
    Logspace {
        /// `[start, stop, num]`.
        logspace: (f64, f64, usize),
    },
}

/// A cross-validation scheme.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CvFile {
    /// Contiguous folds, as scikit-learn's unshuffled `KFold`.
    Kfold {
        /// Number of folds.
        k: usize,
    },
    /// Leave-one-group-out.
    Group,
}

/// `[encoding]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodingFile {
    /// The estimator; ridge by default.
    pub model: Option<EncodingModelFile>,
    /// Alpha grid (ridge, lasso).
    pub alphas: Option<AlphasFile>,
    /// Grid of component counts (pcr, pls).
    pub components: Option<Vec<u64>>,
    /// banded_ridge: the feature spaces fit jointly (default: every space).
    pub bands: Option<Vec<String>>,
    /// banded_ridge: the random search over band weights.
    pub random_search: Option<RandomSearchFile>,
    /// banded_ridge: variance partitioning over every subset of the bands.
    pub partition: Option<bool>,
    /// Outer cross-validation.
    pub cv: Option<CvFile>,
    /// Inner cross-validation choosing alpha per voxel.
    pub inner_cv: Option<CvFile>,
    /// `"r2"` or `"pearson"`.
    pub score: Option<ScoreKind>,
    /// Centre X and Y on each training part.
    pub intercept: Option<bool>,
    /// FIR delays in samples.
    pub delays: Option<Vec<i64>>,
    /// `"none"` or `"per-group"`.
    pub zscore: Option<ZscoreFile>,
}

/// `[decoding]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodingFile {
    /// Feature spaces to decode (default: every space).
    pub spaces: Option<Vec<String>>,
    /// ROIs (names of `[rois]` / `[rsa] rois` entries) to decode from, each on its own
    /// (default: the whole mask).
    pub rois: Option<Vec<String>>,
    /// Searchlight decoding: sphere radius in voxels ...
    pub radius: Option<f64>,
    /// ... or in millimetres.
    pub radius_mm: Option<f64>,
    /// Centres whose sphere has fewer mask voxels are skipped.
    pub min_voxels: Option<usize>,
    /// Alpha grid.
    pub alphas: Option<AlphasFile>,
    /// Outer cross-validation.
    pub cv: Option<CvFile>,
    /// Inner cross-validation choosing alpha per unit.
    pub inner_cv: Option<CvFile>,
    /// `"r2"` or `"pearson"`.
    pub score: Option<ScoreKind>,
    /// Centre X and Y on each training part.
    pub intercept: Option<bool>,
    /// `"none"` or `"per-group"`.
    pub zscore: Option<ZscoreFile>,
}

/// `[encoding] model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodingModelFile {
    /// Ridge regression.
    Ridge,
    /// LASSO.
    Lasso,
    /// Principal component regression.
    Pcr,
    /// Partial least squares (PLS1 per voxel).
    Pls,
    /// Banded ridge over several feature spaces.
    BandedRidge,
}

/// `[encoding] random_search`: candidate band weights for banded ridge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomSearchFile {
    /// Number of candidates (the first is equal weights).
    pub n_iter: Option<usize>,
    /// Dirichlet concentrations the candidates cycle through.
    pub concentrations: Option<Vec<f64>>,
    /// Seed of the candidates.
    pub seed: Option<u64>,
}

/// `zscore`: per-run (group) z-scoring of brain data and features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZscoreFile {
    /// As loaded.
    None,
    /// Each column z-scored within each group.
    PerGroup,
}

/// `[searchlight]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchlightFile {
    /// Radius in voxels.
    pub radius: Option<f64>,
    /// Radius in millimetres (uses the mask's voxel sizes).
    pub radius_mm: Option<f64>,
    /// Minimum sphere size for a centre to be kept.
    pub min_voxels: Option<usize>,
    /// RDM method for brain and model RDMs.
    pub rdm: Option<RdmMethod>,
    /// Noise precision of crossnobis RDMs.
    pub noise: Option<NoisePrecision>,
    /// RDM comparison method.
    pub compare: Option<CompareMethod>,
}

/// `[rsa]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsaFile {
    /// Brain RDMs given directly: name -> `.npy` (square or condensed).
    #[serde(default)]
    pub brain_rdms: BTreeMap<String, String>,
    /// ROI masks: name -> NIfTI mask; brain RDMs computed from `[data]` within them.
    #[serde(default)]
    pub rois: BTreeMap<String, String>,
    /// Model RDMs given directly: name -> `.npy` (square or condensed).
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// RDM method for computed RDMs.
    pub rdm: Option<RdmMethod>,
    /// Noise precision of crossnobis RDMs.
    pub noise: Option<NoisePrecision>,
    /// Comparison methods.
    pub compare: Option<Vec<CompareMethod>>,
    /// Noise ceilings: group name -> the `brain_rdms` entries of its subjects.
    #[serde(default)]
    pub ceiling: BTreeMap<String, Vec<String>>,
    /// Variance partitioning of the brain RDMs over 2 or 3 models.
    pub partition: Option<Vec<String>>,
    /// Reweighted RSA: set name -> the models it weights.
    #[serde(default)]
    pub reweight: BTreeMap<String, ReweightFile>,
    /// Unit weighting: name -> the feature space whose units (or components) are weighted.
    #[serde(default)]
    pub unit_weighting: BTreeMap<String, UnitWeightingFile>,
    /// Remixed RSA: name -> a classifier trained on a layer, whose decision values make a model.
    #[serde(default)]
    pub remix: BTreeMap<String, RemixFile>,
}

/// `[rsa.reweight.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReweightFile {
    /// The models weighted (given, feature spaces or remixed).
    pub models: Vec<String>,
    /// Cross-validation folds over conditions.
    pub folds: Option<usize>,
    /// Seed of the conditions' assignment to folds.
    pub seed: Option<u64>,
}

/// `[rsa.unit_weighting.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitWeightingFile {
    /// The feature space.
    pub space: String,
    /// Weight its first k principal components instead of its units.
    pub components: Option<usize>,
    /// Cross-validation folds over conditions.
    pub folds: Option<usize>,
    /// Seed of the conditions' assignment to folds.
    pub seed: Option<u64>,
}

/// `[rsa.remix.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemixFile {
    /// The feature space holding the experiment's stimuli's activations.
    pub space: String,
    /// Activations of the training images (`[n_train, ...]`, the same units).
    pub train: String,
    /// Category label per training image (`.npy` of integers).
    pub labels: String,
    /// Regularisation strengths C to choose from by inner cross-validation.
    pub cs: Option<Vec<f64>>,
    /// Inner cross-validation folds (stratified).
    pub folds: Option<usize>,
}

/// `[time_resolved]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeResolvedFile {
    /// `[n_times, n_conditions, n_channels]` `.npy`, or named recordings (one per subject):
    /// `{ s1 = "meg_s1.npy", ... }`.
    pub data: TimeDataFile,
    /// RDM method.
    pub rdm: Option<RdmMethod>,
    /// Comparison method.
    pub compare: Option<CompareMethod>,
    /// Cross-temporal RSA: the time x time matrix of brain RDMs.
    pub cross_temporal: Option<bool>,
    /// A second recording (`[n_times2, n_conditions, n_channels]`) for cross-temporal RSA
    /// between recordings.
    pub cross_data: Option<String>,
}

/// `[time_resolved] data`: one recording, or named recordings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeDataFile {
    /// One `.npy`.
    One(String),
    /// Name -> `.npy`.
    Recordings(BTreeMap<String, String>),
}

/// `[permutation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermutationFile {
    /// Number of permutations.
    pub n: usize,
    /// Seed; permutation k is a pure function of (seed, k).
    #[serde(default)]
    pub seed: u64,
    /// Default: `"within-group"` when the data have groups, else `"free"`.
    pub scheme: Option<SchemeFile>,
    /// Block length in samples (scheme `"block"`).
    pub block_len: Option<usize>,
    /// Opt-in to `scheme = "free"` although the data have groups (runs).
    pub free_across_groups: Option<bool>,
}

/// `scheme`: how stimulus labels are permuted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeFile {
    /// Only within each group (run).
    WithinGroup,
    /// Whole groups as units.
    WholeGroups,
    /// Contiguous blocks of `block_len` samples, within runs.
    Block,
    /// Any permutation.
    Free,
}

/// `[execution]`: task sizes. Results never depend on these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionFile {
    /// Voxels per encoding task (rounded up to a multiple of 512).
    pub voxels_per_task: Option<usize>,
    /// Searchlight centres per task.
    pub centres_per_task: Option<usize>,
    /// Permutations per task where permutations are sharded.
    pub permutations_per_task: Option<usize>,
}

/// A job file as read, before it is checked: what `submit` sends and what `run` parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobText {
    /// The TOML text.
    pub text: String,
    /// The name it was given by (for messages).
    pub source_name: String,
    /// The directory its relative paths resolve against.
    pub base_url: String,
}

impl JobText {
    /// Reads the job file `job`: a path (relative to the working directory) or a URL.
    pub async fn read(store: &brainfit_io::Store, job: &str) -> crate::Result<JobText> {
        let parse_error = |message: String| crate::JobError::Parse { file: job.into(), message };
        let url = if job.contains("://") {
            job.to_string()
        } else {
            let cwd = std::env::current_dir()
                .map_err(|e| parse_error(format!("cannot resolve the working directory: {e}")))?;
            format!("file://{}", cwd.join(job).display())
        };
        let bytes = store.get(&url).await?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| parse_error("not UTF-8 text (a job file is TOML)".into()))?;
        Ok(JobText { text, source_name: job.to_string(), base_url: brainfit_io::parent_url(&url) })
    }

    /// Parses and checks it ([`crate::JobSpec::from_toml`]).
    pub fn parse(&self) -> crate::Result<crate::JobSpec> {
        crate::JobSpec::from_toml(&self.text, &self.source_name, &self.base_url)
    }
}
