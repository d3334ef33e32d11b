//! `summary.json`, typed: what the merge writes, the coordinator stores, and the command line,
//! the demo and the tests read — one struct, so no reader goes by string keys.
//!
//! Fields are declared in alphabetical order: serde writes them in declaration order, and the
//! file's key order predates this struct (it was a sorted JSON map), so files stay
//! byte-identical across the change.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything `summary.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// brainfit's version.
    pub brainfit_version: String,
    /// Wall-clock seconds of the compute phase.
    pub compute_seconds: f64,
    /// The job file, echoed back.
    pub job: String,
    /// Linear-algebra backend(s) of the workers.
    pub linalg_backend: String,
    /// The job's name.
    pub name: String,
    /// The permutation test, if one ran.
    pub permutation: Option<PermutationSummary>,
    /// Per subject, in job order.
    pub subjects: Vec<SubjectSummary>,
    /// Tasks planned.
    pub tasks: usize,
    /// Time-resolved RSA per model.
    pub time_resolved: BTreeMap<String, MapSummary>,
    /// ROI RSA over several subjects: per ROI, model and method, the subjects' mean and the
    /// ROI's noise ceiling (`rsa/group.csv`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rsa_group: Vec<RsaRow>,
    /// Cross-temporal RSA (`[time_resolved] cross_temporal`): the time x time matrix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_temporal: Option<MapSummary>,
    /// `[extract]`: the images and the layers written as feature spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extraction: Option<ExtractionSummary>,
    /// `[group]`: per tested map (its directory below `group/`), the group test.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group: BTreeMap<String, GroupSummary>,
    /// Warnings for people (grid edges, few distinct permutations, stale outputs, ...).
    pub warnings: Vec<String>,
    /// Workers that computed tasks.
    pub workers: usize,
}

/// One `[group]` test in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// The analysis the subjects' maps come from.
    pub source: String,
    /// The map's name in it.
    pub name: String,
    /// Paired test: the map subtracted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minus: Option<String>,
    /// The test, for people.
    pub test: String,
    /// `two-sided`, `greater` or `less`.
    pub tail: String,
    /// Whether Fisher's z was taken of the subjects' values.
    pub fisher_z: bool,
    /// Subjects.
    pub n_subjects: usize,
    /// Sign flips run (the identity among them).
    pub n_flips: u64,
    /// Whether they were every pattern (exact p-values).
    pub exhaustive: bool,
    /// Voxels of the group mask.
    pub n_voxels: usize,
    /// Of them, voxels without a finite value in some subject (no statistic).
    pub n_missing: usize,
    /// The t map.
    pub t: MapStats,
    /// Its smallest finite value (a two-sided or `less` test's strongest negative effect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_min: Option<f64>,
    /// Voxels with max-T `p_fwe < 0.05`.
    pub significant_fwe_05: usize,
    /// Voxels with TFCE `p_fwe < 0.05` (with TFCE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub significant_tfce_fwe_05: Option<usize>,
    /// The cluster-forming threshold in t units (with cluster statistics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_threshold_t: Option<f64>,
    /// Clusters above the threshold.
    pub clusters: usize,
    /// Of them, clusters whose mass has `p_fwe < 0.05`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters_fwe_05: Option<usize>,
}

/// `[extract]` in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractionSummary {
    /// Stimulus images extracted.
    pub images: usize,
    /// Reference images PCA was fitted on, if not the stimuli.
    pub reference_images: Option<usize>,
    /// Network input size `[height, width]`.
    pub input_size: [usize; 2],
    /// The layers, in name order.
    pub layers: Vec<ExtractedLayer>,
}

/// One extracted layer in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractedLayer {
    /// Feature space name (`features/<name>.npy`).
    pub name: String,
    /// Node or tensor of the model.
    pub node: String,
    /// Per-image shape of the layer.
    pub shape: Vec<usize>,
    /// Features of the space: the units, or the components kept.
    pub features: usize,
    /// `"none"`, `"pca"` (fitted: `compress/<name>.npz`), `"pca (given model)"`,
    /// `"sparse_random_projection"` or `"gaussian_random_projection"`.
    pub compression: String,
}

/// The permutation test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermutationSummary {
    /// Permutations.
    pub n: usize,
    /// How rows were permuted, for people.
    pub scheme: String,
    /// The seed.
    pub seed: u64,
    /// `1 / (n + 1)`, the smallest p-value possible.
    pub smallest_p: f64,
}

/// One subject's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectSummary {
    /// Encoding with several feature spaces: which space wins where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_space: Option<BestSpaceSummary>,
    /// Banded ridge with `partition`: per subset of the bands (names joined by `+`), its
    /// variance partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<BTreeMap<String, PartitionSummary>>,
    /// Decoding per `<source>/<space>` (present when the job decodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding: Option<BTreeMap<String, DecodingSummary>>,
    /// Searchlight decoding per feature space (present with a `[decoding]` radius).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_searchlight: Option<BTreeMap<String, SearchlightDecodingSummary>>,
    /// The encoding noise ceiling, with `[data] repeats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<CeilingSummary>,
    /// Encoding per feature space (present when the job encodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<BTreeMap<String, EncodingSummary>>,
    /// Samples (stimuli).
    pub n_samples: usize,
    /// Voxels.
    pub n_voxels: usize,
    /// The subject's name (the job's, for a single-subject job).
    pub name: String,
    /// `"f32"` or `"f64"`.
    pub precision: String,
    /// ROI RSA comparisons (absent when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rsa: Vec<RsaRow>,
    /// `[rsa] partition`: each brain RDM's variance partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rsa_partition: Vec<RsaPartitionRow>,
    /// Searchlight RSA per model (present when the job runs one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub searchlight: Option<BTreeMap<String, MapSummary>>,
}

/// The best feature space per voxel (`encoding/best_space.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestSpaceSummary {
    /// The spaces in label order: label `l` is `spaces[l - 1]`.
    pub spaces: Vec<String>,
    /// Voxels each space wins, in the same order.
    pub voxels_won: Vec<usize>,
}

/// One feature space decoded from one source (`decoding/<source>/<space>/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodingSummary {
    /// Voxels decoded from.
    pub n_voxels: usize,
    /// The per-unit score map.
    pub score: MapStats,
    /// Units with `p_fwe < 0.05` (with permutations).
    pub significant_fwe_05: Option<usize>,
    /// Fraction of test stimuli identified among all test stimuli of their fold.
    pub top1_accuracy: f64,
    /// Its chance level (the mean of `1 / n_test`).
    pub top1_chance: f64,
    /// Mean pairwise identification accuracy (chance 0.5).
    pub pairwise_accuracy: f64,
}

/// One feature space's searchlight decoding (`decoding/searchlight/<space>/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchlightDecodingSummary {
    /// Kept centres.
    pub centres: usize,
    /// The map of mean held-out scores over units.
    pub score: MapStats,
    /// The map of pairwise identification accuracy (chance 0.5).
    pub identification: MapStats,
    /// Centres whose mean score has `p_fwe < 0.05` (with permutations).
    pub significant_fwe_05: Option<usize>,
}

/// The noise ceiling (`encoding/ceiling.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CeilingSummary {
    /// Mean over voxels with a finite ceiling.
    pub mean: Option<f64>,
    /// Voxels whose ceiling is reliable (at least 0.1, split-half correlation significantly
    /// positive): they get a normalised score.
    pub n_reliable: usize,
}

/// One variance partition (`encoding/partition/<bands>.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionSummary {
    /// Mean over voxels with a finite estimate.
    pub mean: Option<f64>,
    /// Voxels with a finite estimate.
    pub n_finite: usize,
    /// Voxels whose estimate is negative: not clipped, since a negative unique or shared R²
    /// means the fits' R² are not additive there (noise, or suppression between bands).
    pub n_negative: usize,
}

/// One feature space's encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodingSummary {
    /// The estimator (`"ridge"`, `"lasso"`, `"pcr"`, `"pls"`).
    pub model: String,
    /// What it chose per voxel: `"alpha"` or `"components"` (the name of its map).
    pub hyperparameter: String,
    /// Median chosen value over voxels with a finite one.
    pub chosen_median: Option<f64>,
    /// Features (after delays).
    pub n_features: usize,
    /// The score map.
    pub score: MapStats,
    /// Voxels with `p_fwe < 0.05` (with permutations).
    pub significant_fwe_05: Option<usize>,
}

/// A comparison map (searchlight or time-resolved RSA) of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapSummary {
    /// How RDMs were compared.
    pub compare: String,
    /// How RDMs were computed.
    pub rdm: String,
    /// The comparison map.
    pub rho: MapStats,
    /// Items with `p_fwe < 0.05` (with permutations).
    pub significant_fwe_05: Option<usize>,
}

/// One row of `rsa/compare.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RsaRow {
    /// Brain RDM (ROI or given).
    pub brain: String,
    /// Comparison method.
    pub method: String,
    /// Model RDM.
    pub model: String,
    /// Uncorrected p (with permutations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
    /// Family-wise corrected p (with permutations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_fwe: Option<f64>,
    /// The comparison.
    pub value: f64,
    /// A ceiling group's noise ceiling (Nili et al. 2014): lower and upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_ceiling: Option<[f64; 2]>,
}

/// One row of `rsa/partition.csv`: the R² a subset of the partition's models alone explains
/// in a brain RDM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RsaPartitionRow {
    /// Brain RDM.
    pub brain: String,
    /// The subset of models, joined by `+`.
    pub partition: String,
    /// Its share of the R².
    pub r2: f64,
}

/// Descriptive statistics of a map, ignoring non-finite values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapStats {
    /// Index of the maximum (absent without finite values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argmax: Option<usize>,
    /// The maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Items.
    pub n: usize,
    /// Finite items.
    pub n_finite: usize,
    /// Where the maximum lies in the brain (with a mask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<Peak>,
}

impl MapStats {
    /// Where the maximum lies, for people: `voxel [i, j, k] (x, y, z mm)` with a mask, else
    /// the map item's index.
    pub fn describe_peak(&self) -> String {
        match (&self.peak, self.argmax) {
            (Some(p), _) => format!(
                "voxel [{}, {}, {}] ({:.1}, {:.1}, {:.1} mm)",
                p.voxel[0], p.voxel[1], p.voxel[2], p.mm[0], p.mm[1], p.mm[2]
            ),
            (None, Some(i)) => format!("item {i}"),
            (None, None) => "nowhere (no finite value)".into(),
        }
    }
}

/// A place in the brain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// World coordinates through the mask's affine.
    pub mm: [f64; 3],
    /// Voxel indices.
    pub voxel: [usize; 3],
}
