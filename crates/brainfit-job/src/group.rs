//! `[group]`: second-level inference over the subjects' maps.
//!
//! After every subject's analyses, a group test asks whether a map (an encoding score, a
//! searchlight comparison, the best layer's score, a variance partition, or the difference of
//! two of them) departs from a value across subjects, corrected over the brain
//! ([`brainfit_kernels::group`]: sign flips, max-T, TFCE, cluster mass and extent). Time
//! courses of named time-resolved recordings (one per subject) are tested the same way, the
//! recordings as subjects and the time points on a line.
//!
//! It runs as two more stages of the job's tasks ([`crate::plan::Task::stage`]):
//!
//! 1. one [`crate::Task::GroupData`] task per tested map reads the subjects' parts of that
//!    map, puts every subject's values on the group mask (the subjects' masks' intersection,
//!    or a given mask) and writes them as one `[n_subjects, n_voxels]` matrix ([`GroupData`]);
//! 2. [`crate::Task::Group`] tasks each run a range of the sign flips over that matrix and
//!    return the flips' maxima and the voxels' exceedance counts
//!    ([`brainfit_kernels::group::NullChunk`]), which the merge adds up exactly, so the
//!    outputs are the same bytes whatever the number of workers.
//!
//! Volume maps live on one voxel grid: every subject's mask must have the same shape and affine
//! (checked before any task, [`check_grid`]). A voxel inside the group mask but without a
//! finite value for some subject (outside a searchlight's kept centres, a constant voxel) gets
//! no statistic (NaN) and is counted in the summary; voxels of a given mask outside a
//! subject's mask are reported as warnings.

use crate::inputs::{Inventory, SubjectInventory, load_mask};
use crate::outputs::StagedOutputs;
use crate::plan::{Task, encoding_fits, rsa_map_names};
use crate::spec::{JobSpec, SubjectSpec};
use crate::stats::{MapBlock, merge_blocks};
use crate::summary::GroupSummary;
use crate::{JobError, Part, Result};
use brainfit_io::{Mask, Store, write_nifti_f32, write_npy};
use brainfit_kernels::compare::CompareMethod;
use brainfit_kernels::group::{
    Connectivity, GroupResult, NullAccumulator, NullChunk, Observed, OneSample, SignFlips, Spatial,
    Tail, TfceParams, Topology, t_threshold,
};
use brainfit_kernels::score::ScoreKind;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most sign flips a group test may ask for.
pub const MAX_FLIPS: u64 = 1_000_000;

/// Flip patterns below which a group test cannot reach p < 0.05 (`2^n_subjects < 20`).
const MIN_PATTERNS_FOR_05: u64 = 20;

/// Largest |r| Fisher's z is taken of: `atanh(±1)` is infinite, so a perfect correlation is
/// clipped to this (z ≈ 14.2).
pub const FISHER_Z_MAX_R: f64 = 1.0 - 1e-12;

/// Fisher's z of a correlation, `|r|` clipped at [`FISHER_Z_MAX_R`].
fn fisher_z_clipped(r: f64) -> f64 {
    brainfit_kernels::group::fisher_z(r.clamp(-FISHER_Z_MAX_R, FISHER_Z_MAX_R))
}

/// Checked `[group]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// What is tested: analyses, or single maps of them.
    pub maps: Vec<GroupSelection>,
    /// One-sample or paired.
    pub test: GroupTest,
    /// Fisher's z of correlation maps ([`GroupMap::is_correlation`]) before the test.
    pub fisher_z: bool,
    /// Sign flips asked for.
    pub n: u64,
    /// Seed of the flips.
    pub seed: u64,
    /// Which direction counts.
    pub tail: Tail,
    /// TFCE, if asked for.
    pub tfce: Option<TfceParams>,
    /// The cluster-forming threshold, if cluster statistics are asked for.
    pub cluster: Option<ClusterForming>,
    /// Voxel connectivity of TFCE and clusters.
    pub connectivity: Connectivity,
    /// A given group mask (URL).
    pub mask: Option<String>,
}

/// The test.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupTest {
    /// One-sample t against `value`.
    OneSample {
        /// The value under the null hypothesis (in the maps' units, before Fisher's z).
        value: f64,
    },
    /// Paired t of each pair's difference `a - b`.
    Paired {
        /// `(a, b)` map names.
        pairs: Vec<(String, String)>,
    },
}

/// The cluster-forming threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClusterForming {
    /// In t units.
    T(f64),
    /// As an uncorrected p, converted to t with `n_subjects - 1` degrees of freedom.
    P(f64),
}

/// Which of an analysis' maps a group test reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupSource {
    /// `encoding/<fit>/score`.
    Encoding,
    /// `searchlight/<model>/rho`.
    Searchlight,
    /// `encoding/best_score`.
    BestScore,
    /// `encoding/partition/<subset>`.
    Partition,
    /// `<recording>/time_resolved/<model>/rho`: each named recording is a subject, and the
    /// maps are time courses.
    TimeResolved,
    /// `encoding/<a+b+...>/split_<band>`: each band's share of the score in the banded fit of
    /// all bands.
    Split,
    /// `rsa/compare.csv`: one model's comparison with every brain RDM and ROI (by the first
    /// `[rsa] compare` method), the ROIs as the tested items.
    RoiRsa,
}

impl GroupSource {
    /// The name in the job file and below `group/`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupSource::Encoding => "encoding",
            GroupSource::Searchlight => "searchlight",
            GroupSource::BestScore => "best_score",
            GroupSource::Partition => "partition",
            GroupSource::TimeResolved => "time_resolved",
            GroupSource::Split => "split",
            GroupSource::RoiRsa => "roi_rsa",
        }
    }

    /// Whether its maps are time courses, tested across the named recordings.
    pub fn is_time(self) -> bool {
        self == GroupSource::TimeResolved
    }

    /// Whether its maps are volumes on the subjects' voxel grid (else time courses or ROIs).
    pub fn is_volume(self) -> bool {
        !matches!(self, GroupSource::TimeResolved | GroupSource::RoiRsa)
    }

    fn parse(name: &str) -> Option<GroupSource> {
        [
            GroupSource::Encoding,
            GroupSource::Searchlight,
            GroupSource::BestScore,
            GroupSource::Partition,
            GroupSource::TimeResolved,
            GroupSource::Split,
            GroupSource::RoiRsa,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// One `[group] maps` entry: an analysis, and optionally one of its maps.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSelection {
    /// The analysis.
    pub source: GroupSource,
    /// One map of it (all when `None`).
    pub name: Option<String>,
}

/// One tested map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupMap {
    /// Where the subjects' values come from.
    pub source: GroupSource,
    /// The map's name in its analysis (a feature space, model or partition subset).
    pub name: String,
    /// Paired test: the map subtracted.
    pub minus: Option<String>,
}

/// The name [`GroupSource::BestScore`]'s single map goes by.
const BEST_SCORE: &str = "best_score";

impl GroupMap {
    /// Its output directory below the output root: `group/<source>/<name>` (paired:
    /// `<a>-vs-<b>`; the best score: `group/best_score`).
    pub fn dir(&self) -> String {
        crate::outputs::layout::group_test(&self.key())
    }

    /// Its key in `summary.json` and below `group/`: `<source>/<name>` (paired:
    /// `<source>/<a>-vs-<b>`), `best_score` for the best scores.
    pub fn key(&self) -> String {
        let name = match &self.minus {
            Some(b) => format!("{}-vs-{b}", self.name),
            None => self.name.clone(),
        };
        match self.source {
            GroupSource::BestScore if self.minus.is_none() => BEST_SCORE.into(),
            source => format!("{}/{name}", source.as_str()),
        }
    }

    /// Whether its values are correlations (Fisher's z applies): searchlight and
    /// time-resolved comparisons by a correlation, encoding scores (and best scores) by
    /// Pearson's r.
    pub fn is_correlation(&self, spec: &JobSpec) -> bool {
        let correlation = |c: CompareMethod| {
            matches!(
                c,
                CompareMethod::Spearman
                    | CompareMethod::Pearson
                    | CompareMethod::KendallTauA
                    | CompareMethod::RhoA
                    | CompareMethod::TauB
                    | CompareMethod::Cosine
                    | CompareMethod::CorrCov
            )
        };
        match self.source {
            GroupSource::Searchlight => {
                spec.searchlight.as_ref().is_some_and(|s| correlation(s.compare))
            }
            GroupSource::TimeResolved => {
                spec.time_resolved.as_ref().is_some_and(|t| correlation(t.compare))
            }
            GroupSource::Encoding | GroupSource::BestScore => {
                spec.encoding.as_ref().is_some_and(|e| e.model.score() == ScoreKind::Pearson)
            }
            GroupSource::RoiRsa => {
                spec.rsa.as_ref().and_then(|r| r.compare.first()).is_some_and(|&c| correlation(c))
            }
            GroupSource::Partition | GroupSource::Split => false,
        }
    }

    /// Whether `task`'s part holds values of this map (for [`GroupData`]).
    pub fn reads(&self, task: &Task) -> bool {
        match (self.source, task) {
            (GroupSource::Searchlight, Task::Searchlight { .. }) => true,
            (GroupSource::Encoding, Task::Encoding { space, .. }) => {
                *space == self.name || self.minus.as_ref() == Some(space)
            }
            (
                GroupSource::BestScore | GroupSource::Partition | GroupSource::Split,
                Task::Encoding { .. },
            ) => true,
            // the observed comparisons: the first permutation range of each subject
            (GroupSource::RoiRsa, Task::Rsa { perms, .. }) => perms[0] == 0,
            // every time-resolved task holds the observed values: the first of each recording
            (GroupSource::TimeResolved, Task::TimeResolved { perms, .. }) => perms[0] == 0,
            _ => false,
        }
    }
}

/// Parses `[group]` (the analyses' requirements are checked against the plan in
/// [`group_maps`]).
pub(crate) fn parse_group(
    g: &crate::file::GroupFile,
    subjects: &[SubjectSpec],
    resolve: &impl Fn(&str) -> String,
) -> std::result::Result<GroupSpec, String> {
    if g.maps.is_empty() {
        return Err(format!(
            "[group] maps is empty: name analyses ({SOURCES}) or maps (\"encoding/<space>\")"
        ));
    }
    let mut maps = Vec::new();
    for entry in &g.maps {
        let (source, name) = match entry.split_once('/') {
            Some((s, n)) => (s, Some(n)),
            None => (entry.as_str(), None),
        };
        let source = GroupSource::parse(source).ok_or_else(|| {
            let shown: String = entry.chars().take(60).collect();
            format!("[group] maps: {shown:?} is not {SOURCES} (optionally followed by /<map name>)")
        })?;
        if let Some(n) = name {
            check_map_name("[group] maps", n)?;
        }
        if !source.is_time() {
            if subjects.len() < 2 || subjects.iter().any(|s| s.name.is_none()) {
                return Err(format!(
                    "[group] maps: {:?} tests maps across subjects: list two or more [[subjects]]",
                    source.as_str()
                ));
            }
            if let Some(s) = subjects.iter().find(|s| s.mask.is_none() && source.is_volume()) {
                return Err(format!(
                    "[group] needs every subject's maps on a voxel grid, and {} has no [data] mask",
                    s.label()
                ));
            }
        }
        let selection = GroupSelection { source, name: name.map(str::to_string) };
        if !maps.contains(&selection) {
            maps.push(selection);
        }
    }
    let test = match (g.test, &g.pairs) {
        (None | Some(crate::file::GroupTestFile::OneSample), None) => {
            let value = g.value.unwrap_or(0.0);
            if !value.is_finite() {
                return Err(format!("[group] value must be finite, got {value}"));
            }
            GroupTest::OneSample { value }
        }
        (None | Some(crate::file::GroupTestFile::OneSample), Some(_)) => {
            return Err("[group] pairs need test = \"paired\"".into());
        }
        (Some(crate::file::GroupTestFile::Paired), None) => {
            return Err("[group] test = \"paired\" needs pairs = [[\"a\", \"b\"], ...]".into());
        }
        (Some(crate::file::GroupTestFile::Paired), Some(pairs)) => {
            if g.value.is_some() {
                return Err("[group] value applies to the one-sample test; a paired test compares each pair's difference with 0".into());
            }
            if pairs.is_empty() {
                return Err("[group] pairs is empty".into());
            }
            let mut out = Vec::new();
            for [a, b] in pairs {
                check_map_name("[group] pairs", a)?;
                check_map_name("[group] pairs", b)?;
                if a == b {
                    return Err(format!("[group] pairs: {a:?} is paired with itself"));
                }
                if !out.contains(&(a.clone(), b.clone())) {
                    out.push((a.clone(), b.clone()));
                }
            }
            GroupTest::Paired { pairs: out }
        }
    };
    let n = g.n.unwrap_or(5000);
    if n == 0 || n > MAX_FLIPS {
        return Err(format!("[group] n must be 1 to {MAX_FLIPS}, got {n}"));
    }
    let cluster = match (g.cluster_threshold, g.cluster_p) {
        (Some(_), Some(_)) => {
            return Err("[group] give cluster_threshold (t) or cluster_p, not both".into());
        }
        (Some(t), None) if t.is_finite() && t > 0.0 => Some(ClusterForming::T(t)),
        (Some(t), None) => {
            return Err(format!("[group] cluster_threshold must be a t value above 0, got {t}"));
        }
        (None, Some(p)) if p > 0.0 && p < 1.0 => Some(ClusterForming::P(p)),
        (None, Some(p)) => return Err(format!("[group] cluster_p must be in (0, 1), got {p}")),
        (None, None) => None,
    };
    let connectivity = match g.connectivity {
        None | Some(26) => Connectivity::Corners,
        Some(18) => Connectivity::Edges,
        Some(6) => Connectivity::Faces,
        Some(c) => return Err(format!("[group] connectivity must be 6, 18 or 26, got {c}")),
    };
    let tail = g.tail.unwrap_or(Tail::TwoSided);
    Ok(GroupSpec {
        maps,
        test,
        fisher_z: g.fisher_z.unwrap_or(false),
        n,
        seed: g.seed.unwrap_or(0),
        tail,
        tfce: g.tfce.unwrap_or(false).then(TfceParams::default),
        cluster,
        connectivity,
        mask: g.mask.as_deref().map(resolve),
    })
}

/// The analyses `[group] maps` names, for messages.
const SOURCES: &str = "\"encoding\", \"searchlight\", \"best_score\", \"partition\", \"split\", \"roi_rsa\" or \"time_resolved\"";

/// Checks a map name of `[group]`: a name as [`crate::spec::check_name`] has it, or a joint
/// fit's feature spaces joined by `+` (`a+b`).
fn check_map_name(what: &str, name: &str) -> std::result::Result<(), String> {
    name.split('+').try_for_each(|part| crate::spec::check_name(what, part))
}

/// The maps an analysis offers a subject, in plan order (empty if the job does not run it).
fn offered(spec: &JobSpec, inv: &SubjectInventory, source: GroupSource) -> Vec<String> {
    match source {
        GroupSource::Encoding => encoding_fits(spec, inv).into_iter().map(|f| f.name).collect(),
        GroupSource::Searchlight if spec.searchlight.is_some() => rsa_map_names(spec, inv),
        GroupSource::Searchlight => Vec::new(),
        GroupSource::BestScore => {
            let singles = encoding_fits(spec, inv).iter().filter(|f| f.spaces.len() == 1).count();
            if singles > 1 { vec![BEST_SCORE.into()] } else { Vec::new() }
        }
        GroupSource::Partition => match spec.encoding.as_ref().and_then(|e| e.banded.as_ref()) {
            Some(b) if b.partition => {
                encoding_fits(spec, inv).into_iter().map(|f| f.name).collect()
            }
            _ => Vec::new(),
        },
        GroupSource::TimeResolved if spec.time_resolved.is_some() => rsa_map_names(spec, inv),
        GroupSource::TimeResolved => Vec::new(),
        GroupSource::Split => match spec.encoding.as_ref().and_then(|e| e.banded.as_ref()) {
            Some(_) => joint_fit(spec, inv).map(|f| f.spaces).unwrap_or_default(),
            None => Vec::new(),
        },
        GroupSource::RoiRsa if crate::plan::Analysis::RoiRsa.requested(spec) => {
            rsa_map_names(spec, inv)
        }
        GroupSource::RoiRsa => Vec::new(),
    }
}

/// The banded fit of all bands (fitted last), whose `split_<band>` maps `split` tests.
fn joint_fit(spec: &JobSpec, inv: &SubjectInventory) -> Option<crate::spec::Fit> {
    encoding_fits(spec, inv).pop().filter(|f| f.spaces.len() > 1)
}

/// What an analysis needs to offer maps, for messages.
fn needs(source: GroupSource) -> &'static str {
    match source {
        GroupSource::Encoding => "[encoding]",
        GroupSource::Searchlight => "[searchlight]",
        GroupSource::BestScore => "[encoding] with two or more feature spaces",
        GroupSource::Partition => "[encoding] model = \"banded_ridge\" with partition = true",
        GroupSource::TimeResolved => "[time_resolved] with data = { <name> = \"<file>.npy\", ... }",
        GroupSource::Split => "[encoding] model = \"banded_ridge\" with two or more bands",
        GroupSource::RoiRsa => "[rsa] with rois or brain_rdms",
    }
}

/// The tested maps of a job, in a fixed order (the `[group] maps` entries in turn, each
/// analysis' maps in plan order); an error names a map a subject lacks.
pub fn group_maps(
    spec: &JobSpec,
    inventory: &Inventory,
) -> std::result::Result<Vec<GroupMap>, String> {
    group_maps_and_warnings(spec, inventory).map(|(maps, _)| maps)
}

/// [`group_maps`], with a warning for each map of a selected analysis that some subjects lack
/// (subject-specific feature spaces): it cannot be tested across subjects and is left out.
/// A map named alone (`"encoding/c"`) that some subject lacks is an error.
pub fn group_maps_and_warnings(
    spec: &JobSpec,
    inventory: &Inventory,
) -> std::result::Result<(Vec<GroupMap>, Vec<String>), String> {
    let Some(g) = &spec.group else { return Ok((Vec::new(), Vec::new())) };
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for sel in &g.maps {
        let recordings = spec.time_resolved.as_ref().map_or(0, |t| t.recordings.len());
        if sel.source.is_time() && recordings < 2 {
            return Err("[group] maps: \"time_resolved\" tests time courses across recordings: name two or more in [time_resolved] data = { <name> = \"<file>.npy\", ... }".into());
        }
        // time courses share the job's models; volume maps are each subject's own
        let subjects = if sel.source.is_time() { 1 } else { spec.subjects.len() };
        let offers: Vec<Vec<String>> = inventory.subjects[..subjects]
            .iter()
            .map(|inv| offered(spec, inv, sel.source))
            .collect();
        if offers.iter().all(Vec::is_empty) {
            return Err(format!(
                "[group] maps: {:?} needs {}",
                sel.source.as_str(),
                needs(sel.source)
            ));
        }
        // every map of the analysis, in first-seen order, and the subjects that lack it
        let mut all: Vec<&String> = Vec::new();
        offers.iter().flatten().for_each(|n| {
            if !all.contains(&n) {
                all.push(n);
            }
        });
        let lacking = |n: &String| offers.iter().position(|o| !o.contains(n));
        let first: Vec<&String> = all.iter().copied().filter(|n| lacking(n).is_none()).collect();
        let source = sel.source.as_str();
        let names: Vec<&String> = match &sel.name {
            Some(n) if first.contains(&n) => vec![n],
            Some(n) if all.contains(&n) => {
                let s = lacking(n).expect("some subject lacks it");
                return Err(format!(
                    "[group] {source}/{n} is not a map of {}: subjects must share the maps tested",
                    spec.subjects[s].label()
                ));
            }
            Some(n) => {
                let all: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
                return Err(format!(
                    "[group] maps: {source}/{n} is not a map of the job (it has {})",
                    all.join(", ")
                ));
            }
            None => {
                for n in all.iter().filter(|n| lacking(n).is_some()) {
                    let s = lacking(n).expect("filtered");
                    warnings.push(format!(
                        "[group] {source}/{n} is not a map of {} (not every subject has it): it is not tested",
                        spec.subjects[s].label()
                    ));
                }
                first.clone()
            }
        };
        let mut push = |m: GroupMap| {
            if !out.contains(&m) {
                out.push(m);
            }
        };
        match &g.test {
            GroupTest::OneSample { .. } => {
                for n in names {
                    push(GroupMap { source: sel.source, name: n.clone(), minus: None });
                }
            }
            GroupTest::Paired { pairs } => {
                for (a, b) in pairs {
                    let selected = |x: &String| names.contains(&x);
                    if selected(a) && first.contains(&b) || selected(b) && first.contains(&a) {
                        push(GroupMap {
                            source: sel.source,
                            name: a.clone(),
                            minus: Some(b.clone()),
                        });
                    }
                }
            }
        }
    }
    if let GroupTest::Paired { pairs } = &g.test {
        for (a, b) in pairs {
            if !out.iter().any(|m| m.name == *a && m.minus.as_ref() == Some(b)) {
                return Err(format!(
                    "[group] pairs: [{a:?}, {b:?}] are not two maps of one analysis in [group] maps"
                ));
            }
        }
    }
    if g.fisher_z && !out.iter().any(|m| m.is_correlation(spec)) {
        return Err("[group] fisher_z = true, but no tested map is a correlation (searchlight comparisons by a correlation, encoding scores with score = \"pearson\")".into());
    }
    Ok((out, warnings))
}

/// Checks the subjects' grids before any task (every mask the same shape and affine, the
/// given group mask too, the group mask not empty) and returns warnings about voxels a subject
/// lacks.
pub async fn check_grid(store: &Store, spec: &JobSpec) -> Result<Vec<String>> {
    let Some(g) = spec.group.as_ref().filter(|g| g.maps.iter().any(|m| m.source.is_volume()))
    else {
        return Ok(Vec::new());
    };
    let (grid, warnings) = build_grid(store, spec, g).await?;
    if grid.voxels.is_empty() {
        return Err(JobError::Invalid {
            file: spec.source_name.clone(),
            message: "[group]: the group mask is empty (no voxel is in every subject's mask and the given mask)".into(),
        });
    }
    Ok(warnings)
}

/// The group mask: every subject's mask (and the given one) on one grid; its voxels those in
/// all of them. Returns the subjects' masks too, and warnings about what a subject lacks.
async fn build_grid(
    store: &Store,
    spec: &JobSpec,
    g: &GroupSpec,
) -> Result<(GroupGrid, Vec<String>)> {
    let mut masks = Vec::new();
    for s in &spec.subjects {
        let url = s.mask.as_deref().expect("[group] checked every subject has a mask");
        masks.push((url.to_string(), load_mask(store, url).await?));
    }
    let given = match &g.mask {
        Some(url) => Some((url.clone(), load_mask(store, url).await?)),
        None => None,
    };
    let (first_url, first) = &masks[0];
    for (url, m) in masks.iter().skip(1).chain(given.iter()) {
        if m.shape != first.shape {
            return Err(JobError::Input {
                url: url.clone(),
                message: format!(
                    "[group] needs every mask on one grid: this mask is {:?}, {first_url} is {:?}",
                    m.shape, first.shape
                ),
            });
        }
        if !same_affine(&m.affine, &first.affine) {
            return Err(JobError::Input {
                url: url.clone(),
                message: format!(
                    "[group] needs every mask on one grid: this mask's affine {:?} differs from {first_url}'s {:?}",
                    m.affine, first.affine
                ),
            });
        }
    }
    let shape = first.shape;
    let flat = |v: &[usize; 3]| (v[0] * shape[1] + v[1]) * shape[2] + v[2];
    let total: usize = shape.iter().product();
    let mut count = vec![0u32; total];
    for (_, m) in &masks {
        m.voxels.iter().for_each(|v| count[flat(v)] += 1);
    }
    let n = masks.len() as u32;
    let mut warnings = Vec::new();
    let wanted: Vec<usize> = match &given {
        Some((url, m)) => {
            let wanted: Vec<usize> = m.voxels.iter().map(flat).collect();
            for (s, (_, sm)) in spec.subjects.iter().zip(&masks) {
                let mut inside = vec![false; total];
                sm.voxels.iter().for_each(|v| inside[flat(v)] = true);
                let missing = wanted.iter().filter(|&&v| !inside[v]).count();
                if missing > 0 {
                    warnings.push(format!(
                        "[group] {missing} voxels of the group mask {url} are outside {}'s mask: they are left out of every group test",
                        s.label()
                    ));
                }
            }
            wanted
        }
        None => {
            let union: Vec<usize> = (0..total).filter(|&v| count[v] > 0).collect();
            for (s, (_, sm)) in spec.subjects.iter().zip(&masks) {
                let missing = union.len() - sm.voxels.len();
                if missing > 0 {
                    warnings.push(format!(
                        "[group] {missing} voxels in another subject's mask are outside {}'s mask: they are left out of every group test",
                        s.label()
                    ));
                }
            }
            union
        }
    };
    let voxels: Vec<usize> = wanted.into_iter().filter(|&v| count[v] == n).collect();
    let grid = GroupGrid {
        mask: Mask {
            shape,
            affine: first.affine,
            pixdim: first.pixdim,
            voxels: voxels
                .iter()
                .map(|&v| [v / (shape[1] * shape[2]), (v / shape[2]) % shape[1], v % shape[2]])
                .collect(),
        },
        voxels,
        subject_masks: masks.into_iter().map(|(_, m)| m).collect(),
    };
    Ok((grid, warnings))
}

/// Affines equal as nilearn's `check_same_fov` has them (`numpy.allclose`: rtol 1e-5, atol
/// 1e-8).
fn same_affine(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4]) -> bool {
    a.iter().flatten().zip(b.iter().flatten()).all(|(x, y)| (x - y).abs() <= 1e-8 + 1e-5 * y.abs())
}

/// The group mask and the subjects' masks.
struct GroupGrid {
    /// The group mask (its voxels in C order).
    mask: Mask,
    /// Its voxels' C-order flat indices.
    voxels: Vec<usize>,
    /// Each subject's mask.
    subject_masks: Vec<Mask>,
}

/// Whether `[group]` tests time-resolved maps (the recordings must then share their time
/// points).
pub fn tests_time_resolved(spec: &JobSpec) -> bool {
    spec.group.as_ref().is_some_and(|g| g.maps.iter().any(|m| m.source.is_time()))
}

/// Subject `si`'s values of `name` of `source` over its mask voxels (NaN where it has none),
/// from its tasks' parts (`done`, any order within an analysis' plan order).
fn subject_map(
    spec: &JobSpec,
    inv: &SubjectInventory,
    si: usize,
    source: GroupSource,
    name: &str,
    done: &[(&Task, &Part)],
) -> Result<Array1<f64>> {
    let score = |fit: &str| -> Result<Array1<f64>> {
        let blocks = done
            .iter()
            .filter_map(|(t, p)| match t {
                Task::Encoding { subject, space, voxels } if *subject == si && space == fit => {
                    Some(MapBlock::read(p).map(|b| (*voxels, [0, 0], b)))
                }
                _ => None,
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(merge_blocks(&blocks, 1, inv.n_voxels, None)?.value.row(0).to_owned())
    };
    match source {
        GroupSource::Encoding => score(name),
        GroupSource::Searchlight => {
            let models = rsa_map_names(spec, inv);
            let m = model_index(&models, name, "searchlight")?;
            let mut full = Array1::from_elem(inv.n_voxels, f64::NAN);
            for (t, p) in done {
                if matches!(t, Task::Searchlight { subject, .. } if *subject == si) {
                    let centres = p.get("centres")?.1;
                    let block = MapBlock::read(p)?;
                    if block.value.dim() != (models.len(), centres.len()) {
                        return Err(JobError::Corrupt(format!(
                            "{}: searchlight values of shape {:?} for {} centres",
                            t.key(),
                            block.value.dim(),
                            centres.len()
                        )));
                    }
                    for (&c, &v) in centres.iter().zip(block.value.row(m)) {
                        *full.get_mut(c as usize).ok_or_else(|| {
                            JobError::Corrupt(format!("{}: centre {c} outside the mask", t.key()))
                        })? = v;
                    }
                }
            }
            Ok(full)
        }
        GroupSource::BestScore => {
            let mut singles = Vec::new();
            for f in encoding_fits(spec, inv).into_iter().filter(|f| f.spaces.len() == 1) {
                let s = score(&f.name)?;
                singles.push((f.name, s));
            }
            Ok(crate::merge::best_space_maps(&singles, inv.n_voxels).1)
        }
        GroupSource::Partition => {
            let mut fits = Vec::new();
            for f in encoding_fits(spec, inv) {
                let s = score(&f.name)?;
                fits.push((f, s));
            }
            let maps = crate::merge::partition_maps(&fits);
            let found = maps.into_iter().find(|(n, _)| n == name);
            Ok(found.ok_or_else(|| JobError::Corrupt(format!("no partition {name}")))?.1)
        }
        GroupSource::Split => {
            let fit = joint_fit(spec, inv)
                .ok_or_else(|| JobError::Corrupt("split maps need a banded fit".into()))?;
            let b = fit.spaces.iter().position(|s| s == name).ok_or_else(|| {
                JobError::Corrupt(format!("{name} is not a band of {}", fit.name))
            })?;
            let mut parts: Vec<([usize; 2], &Part)> = done
                .iter()
                .filter_map(|(t, p)| match t {
                    Task::Encoding { subject, space, voxels }
                        if *subject == si && *space == fit.name =>
                    {
                        Some((*voxels, *p))
                    }
                    _ => None,
                })
                .collect();
            parts.sort_by_key(|(voxels, _)| voxels[0]);
            let mut values = Vec::with_capacity(inv.n_voxels);
            for (_, p) in parts {
                values.extend_from_slice(p.get(&format!("split:{b}"))?.1);
            }
            if values.len() != inv.n_voxels {
                return Err(JobError::Corrupt(format!(
                    "split_{name} of {}: parts hold {} values, expected {}",
                    fit.name,
                    values.len(),
                    inv.n_voxels
                )));
            }
            Ok(Array1::from(values))
        }
        GroupSource::TimeResolved | GroupSource::RoiRsa => {
            Err(JobError::Corrupt("time courses and ROIs have no voxel grid".into()))
        }
    }
}

/// Where model `name` is among an RSA analysis' `models` (its maps' rows).
fn model_index(models: &[String], name: &str, analysis: &str) -> Result<usize> {
    models.iter().position(|x| x == name).ok_or_else(|| {
        JobError::Corrupt(format!("{analysis} map {name} is not a model of the job"))
    })
}

/// The observed values held by the part of the task `first` picks (the first permutation range
/// of an RSA analysis), `what` naming that task in the error when it is missing.
fn observed_block(
    done: &[(&Task, &Part)],
    first: impl Fn(&Task) -> bool,
    what: &str,
) -> Result<MapBlock> {
    let (_, part) = done
        .iter()
        .find(|(t, _)| first(t))
        .ok_or_else(|| JobError::Corrupt(format!("no {what}")))?;
    MapBlock::read(part)
}

/// Subject `si`'s comparisons of model `name` with every brain RDM and ROI (the first
/// `[rsa] compare` method), from its first ROI RSA task's part.
fn roi_map(
    spec: &JobSpec,
    inventory: &Inventory,
    si: usize,
    name: &str,
    done: &[(&Task, &Part)],
) -> Result<Array1<f64>> {
    let r = spec.rsa.as_ref().ok_or_else(|| JobError::Corrupt("ROI maps need [rsa]".into()))?;
    let models = rsa_map_names(spec, &inventory.subjects[si]);
    let m = model_index(&models, name, "ROI RSA")?;
    let block = observed_block(
        done,
        |t| matches!(t, Task::Rsa { subject, perms } if *subject == si && perms[0] == 0),
        &format!("ROI RSA task of subject {si}"),
    )?;
    // rows: methods; columns: (brain RDM or ROI, then ceiling groups) x models
    let given = crate::plan::brain_rdm_names(spec).len();
    let brains = given + r.ceiling.len();
    if block.value.dim() != (r.compare.len(), brains * models.len()) {
        return Err(JobError::Corrupt(format!(
            "ROI RSA values of shape {:?}, expected ({}, {})",
            block.value.dim(),
            r.compare.len(),
            brains * models.len()
        )));
    }
    Ok((0..given).map(|b| block.value[(0, b * models.len() + m)]).collect())
}

/// Recording `r`'s time course of model `name`, from its first task's part.
fn recording_map(
    spec: &JobSpec,
    inventory: &Inventory,
    r: usize,
    name: &str,
    done: &[(&Task, &Part)],
) -> Result<Array1<f64>> {
    let models = rsa_map_names(spec, &inventory.subjects[0]);
    let m = model_index(&models, name, "time-resolved")?;
    let block = observed_block(
        done,
        |t| matches!(t, Task::TimeResolved { recording, perms } if *recording == r && perms[0] == 0),
        &format!("time-resolved task of recording {r}"),
    )?;
    if block.value.nrows() != models.len() {
        return Err(JobError::Corrupt(format!(
            "time-resolved values of {} maps, expected {}",
            block.value.nrows(),
            models.len()
        )));
    }
    Ok(block.value.row(m).to_owned())
}

/// A tested map's data: every subject's values on the group mask, as the test takes them
/// (Fisher's z applied, paired differences taken), with the grid they lie on.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupData {
    /// `[n_subjects, n_voxels]`.
    pub values: Array2<f64>,
    /// The group mask's voxels (C-order flat indices of `shape`).
    pub voxels: Vec<usize>,
    /// The grid's shape.
    pub shape: [usize; 3],
    /// The grid's affine.
    pub affine: [[f64; 4]; 4],
    /// The grid's voxel sizes.
    pub pixdim: [f64; 3],
}

impl GroupData {
    /// Stores it in a part.
    pub fn to_part(&self) -> Part {
        let mut part = Part::new();
        part.push("values", self.values.shape().to_vec(), self.values.iter().copied().collect());
        part.push(
            "voxels",
            vec![self.voxels.len()],
            self.voxels.iter().map(|&v| v as f64).collect(),
        );
        part.push("shape", vec![3], self.shape.iter().map(|&v| v as f64).collect());
        part.push("affine", vec![4, 4], self.affine.iter().flatten().copied().collect());
        part.push("pixdim", vec![3], self.pixdim.to_vec());
        part
    }

    /// Reads it back from [`GroupData::to_part`]'s part.
    pub fn from_part(part: &Part) -> Result<GroupData> {
        let (shape, values) = part.get("values")?;
        let bad = |what: &str| JobError::Corrupt(format!("group data: {what}"));
        if shape.len() != 2 {
            return Err(bad("values are not a matrix"));
        }
        let values = Array2::from_shape_vec((shape[0], shape[1]), values.to_vec())
            .map_err(|e| bad(&e.to_string()))?;
        let voxels: Vec<usize> = part.get("voxels")?.1.iter().map(|&v| v as usize).collect();
        let grid = part.get("shape")?.1;
        let affine = part.get("affine")?.1;
        let pixdim = part.get("pixdim")?.1;
        if voxels.len() != values.ncols()
            || grid.len() != 3
            || affine.len() != 16
            || pixdim.len() != 3
        {
            return Err(bad("inconsistent shapes"));
        }
        let mut a = [[0.0; 4]; 4];
        a.iter_mut().flatten().zip(affine).for_each(|(x, &y)| *x = y);
        Ok(GroupData {
            values,
            voxels,
            shape: [grid[0] as usize, grid[1] as usize, grid[2] as usize],
            affine: a,
            pixdim: [pixdim[0], pixdim[1], pixdim[2]],
        })
    }

    fn mask(&self) -> Mask {
        let [_, ny, nz] = self.shape;
        Mask {
            shape: self.shape,
            affine: self.affine,
            pixdim: self.pixdim,
            voxels: self.voxels.iter().map(|&v| [v / (ny * nz), (v / nz) % ny, v % nz]).collect(),
        }
    }
}

/// Builds a tested map's [`GroupData`] from the subjects' parts (`done`: the tasks
/// [`GroupMap::reads`] with their parts).
pub async fn gather(
    store: &Store,
    spec: &JobSpec,
    inventory: &Inventory,
    map: &GroupMap,
    done: &[(&Task, &Part)],
) -> Result<GroupData> {
    let g = spec.group.as_ref().expect("group tasks need [group]");
    let z = g.fisher_z && map.is_correlation(spec);
    let transform = |v: f64| if z { fisher_z_clipped(v) } else { v };
    if !map.source.is_volume() {
        // time courses: each recording is a subject, the time points lie on a line; ROIs: the
        // job's brain RDMs and ROIs in order (`[n_items, 1, 1]` either way)
        let one = |s: usize, name: &str| match map.source {
            GroupSource::TimeResolved => recording_map(spec, inventory, s, name, done),
            _ => roi_map(spec, inventory, s, name, done),
        };
        let mut rows = Vec::new();
        for s in 0..n_subjects(spec, map.source) {
            let a = one(s, &map.name)?;
            let row = match &map.minus {
                Some(b) => {
                    let b = one(s, b)?;
                    ndarray::Zip::from(&a).and(&b).map_collect(|&x, &y| transform(x) - transform(y))
                }
                None => a.mapv(transform),
            };
            if rows.first().is_some_and(|first: &Array1<f64>| first.len() != row.len()) {
                return Err(JobError::Corrupt("subjects' maps of different lengths".into()));
            }
            rows.push(row);
        }
        let n_times = rows.first().map_or(0, Array1::len);
        let mut values = Array2::zeros((rows.len(), n_times));
        rows.iter().enumerate().for_each(|(r, row)| values.row_mut(r).assign(row));
        let mut affine = [[0.0; 4]; 4];
        (0..4).for_each(|i| affine[i][i] = 1.0);
        return Ok(GroupData {
            values,
            voxels: (0..n_times).collect(),
            shape: [n_times, 1, 1],
            affine,
            pixdim: [1.0; 3],
        });
    }
    let (grid, _) = build_grid(store, spec, g).await?;
    let [_, ny, nz] = grid.mask.shape;
    let total = grid.mask.shape.iter().product::<usize>();
    let mut values = Array2::from_elem((spec.subjects.len(), grid.voxels.len()), f64::NAN);
    for (si, inv) in inventory.subjects.iter().enumerate() {
        let mine: Vec<(&Task, &Part)> =
            done.iter().copied().filter(|(t, _)| task_subject(t) == Some(si)).collect();
        let a = subject_map(spec, inv, si, map.source, &map.name, &mine)?;
        let b = match &map.minus {
            Some(b) => Some(subject_map(spec, inv, si, map.source, b, &mine)?),
            None => None,
        };
        // each grid voxel's column in this subject's mask
        let mut column = vec![u32::MAX; total];
        for (c, v) in grid.subject_masks[si].voxels.iter().enumerate() {
            column[(v[0] * ny + v[1]) * nz + v[2]] = c as u32;
        }
        for (e, &v) in grid.voxels.iter().enumerate() {
            let c = column[v] as usize;
            let x = transform(a[c]);
            values[(si, e)] = match &b {
                Some(b) => x - transform(b[c]),
                None => x,
            };
        }
    }
    Ok(GroupData {
        values,
        voxels: grid.voxels,
        shape: grid.mask.shape,
        affine: grid.mask.affine,
        pixdim: grid.mask.pixdim,
    })
}

fn task_subject(t: &Task) -> Option<usize> {
    match t {
        Task::Encoding { subject, .. } | Task::Searchlight { subject, .. } => Some(*subject),
        _ => None,
    }
}

/// What every flip task and the merge rebuild from a map's data: the test, its spatial
/// statistics and the observed maps.
pub struct Prepared {
    test: OneSample,
    /// TFCE and clusters over the grid or time line (`None` for ROIs, which have no neighbours).
    spatial: Option<Spatial>,
    observed: Observed,
    flips: SignFlips,
    /// The cluster-forming threshold in t units, if any.
    pub cluster_t: Option<f64>,
}

/// Sets map `map`'s test up from its data.
pub fn prepare(spec: &JobSpec, map: &GroupMap, data: &GroupData) -> Result<Prepared> {
    let g = spec.group.as_ref().expect("group tasks need [group]");
    let n_subjects = data.values.nrows();
    let test = OneSample::new(data.values.view(), null_value(spec, map))?;
    let cluster_t = match g.cluster {
        Some(ClusterForming::T(t)) => Some(t),
        Some(ClusterForming::P(p)) => Some(t_threshold(p, n_subjects as f64 - 1.0, g.tail)?),
        None => None,
    };
    let spatial = match map.source {
        GroupSource::RoiRsa => None,
        _ => {
            let topology = Topology::volume(data.shape, &data.voxels, g.connectivity)?;
            Some(Spatial { topology, tfce: g.tfce, cluster_threshold: cluster_t })
        }
    };
    let cluster_t = cluster_t.filter(|_| spatial.is_some());
    let observed = brainfit_kernels::group::observe(&test, spatial.as_ref(), g.tail)?;
    let flips = SignFlips::new(n_subjects, g.n, g.seed)?;
    Ok(Prepared { test, spatial, observed, flips, cluster_t })
}

/// The value a one-sample test compares with, on the scale of the tested values.
pub fn null_value(spec: &JobSpec, map: &GroupMap) -> f64 {
    let g = spec.group.as_ref().expect("[group]");
    match g.test {
        GroupTest::OneSample { value } if g.fisher_z && map.is_correlation(spec) => {
            fisher_z_clipped(value)
        }
        GroupTest::OneSample { value } => value,
        GroupTest::Paired { .. } => 0.0,
    }
}

/// Flips `k0..k1` of a prepared test, calling `checkpoint` between flips (a task being
/// abandoned stops there), as a part.
pub fn flip_chunk<E>(
    prepared: &Prepared,
    flips: [u64; 2],
    mut checkpoint: impl FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<Part, E>
where
    E: From<JobError>,
{
    let [k0, k1] = flips;
    let p = prepared;
    let mut acc = NullAccumulator::new(&p.test, p.spatial.as_ref(), &p.observed, k0)
        .map_err(|e| E::from(JobError::from(e)))?;
    for k in k0..k1 {
        checkpoint()?;
        acc.add(&p.flips.signs(k)).map_err(|e| E::from(JobError::from(e)))?;
    }
    let chunk = acc.finish();
    let mut part = Part::new();
    let f = |v: &[u64]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    part.push("flips", vec![2], vec![chunk.k0 as f64, chunk.k1 as f64]);
    part.push("max_t", vec![chunk.max_t.len()], chunk.max_t);
    part.push("max_tfce", vec![chunk.max_tfce.len()], chunk.max_tfce);
    part.push("max_mass", vec![chunk.max_mass.len()], chunk.max_mass);
    part.push("max_extent", vec![chunk.max_extent.len()], f(&chunk.max_extent));
    part.push("count_t", vec![chunk.count_t.len()], f(&chunk.count_t));
    Ok(part)
}

fn read_chunk(part: &Part) -> Result<NullChunk> {
    let u = |name: &str| -> Result<Vec<u64>> {
        Ok(part.get(name)?.1.iter().map(|&x| x as u64).collect())
    };
    let flips = u("flips")?;
    if flips.len() != 2 {
        return Err(JobError::Corrupt("group part: flips is not a range".into()));
    }
    Ok(NullChunk {
        k0: flips[0],
        k1: flips[1],
        max_t: part.get("max_t")?.1.to_vec(),
        max_tfce: part.get("max_tfce")?.1.to_vec(),
        max_mass: part.get("max_mass")?.1.to_vec(),
        max_extent: u("max_extent")?,
        count_t: u("count_t")?,
    })
}

/// The subjects a map is tested across: the job's subjects, or the named recordings.
fn n_subjects(spec: &JobSpec, source: GroupSource) -> usize {
    match source {
        GroupSource::TimeResolved => spec.time_resolved.as_ref().map_or(0, |t| t.recordings.len()),
        _ => spec.subjects.len(),
    }
}

/// The sign flips of a test of `map` (all `2^n_subjects` patterns when no more than `n`), as
/// every task and the merge draw them; `None` with fewer than two subjects (refused before any
/// plan is made).
fn sign_flips(spec: &JobSpec, map: &GroupMap) -> Option<SignFlips> {
    let g = spec.group.as_ref().expect("[group]");
    SignFlips::new(n_subjects(spec, map.source), g.n, g.seed).ok()
}

/// The number of flips a test of `map` runs.
pub fn n_flips(spec: &JobSpec, map: &GroupMap) -> u64 {
    sign_flips(spec, map).map_or(0, |f| f.n_flips())
}

/// Whether a test of `map` enumerates every sign-flip pattern: its p-values are then exact.
pub fn exhaustive(spec: &JobSpec, map: &GroupMap) -> bool {
    sign_flips(spec, map).is_some_and(|f| f.is_exhaustive())
}

/// Warnings about the test that depend only on the job: too few flip patterns to reach 0.05.
pub fn warnings(spec: &JobSpec) -> Vec<String> {
    let Some(g) = &spec.group else { return Vec::new() };
    let mut out = Vec::new();
    for time in [false, true] {
        let Some(sel) = g.maps.iter().find(|m| m.source.is_time() == time) else { continue };
        let n = n_subjects(spec, sel.source);
        let who = if time { "recordings" } else { "subjects" };
        if n < 64 && (1u64 << n) < MIN_PATTERNS_FOR_05 {
            out.push(format!(
                "[group] {n} {who} have only {} sign-flip patterns: no p-value can go below {:.3}",
                1u64 << n,
                1.0 / (1u64 << n) as f64
            ));
        }
    }
    let spatial = g.tfce.is_some() || g.cluster.is_some();
    if spatial && g.maps.iter().any(|m| m.source == GroupSource::RoiRsa) {
        out.push("[group] roi_rsa: ROIs have no neighbours, so their tests are corrected by max-T only (tfce and cluster statistics apply to voxel maps and time courses)".into());
    }
    out
}

/// Writes every tested map's outputs below `group/` and returns their summaries, keyed by
/// directory below `group/`.
pub async fn write_outputs(
    outputs: &StagedOutputs<'_>,
    spec: &JobSpec,
    done: &[(&Task, &Part)],
) -> Result<BTreeMap<String, GroupSummary>> {
    let Some(g) = &spec.group else { return Ok(BTreeMap::new()) };
    let mut summaries = BTreeMap::new();
    let mut mask_written = false;
    for (t, part) in done {
        let Task::GroupData { map } = t else { continue };
        let data = GroupData::from_part(part)?;
        let prepared = prepare(spec, map, &data)?;
        let chunks = done
            .iter()
            .filter(|(t, _)| matches!(t, Task::Group { map: m, .. } if m == map))
            .map(|(_, p)| read_chunk(p))
            .collect::<Result<Vec<_>>>()?;
        let null = brainfit_kernels::group::merge(chunks)?;
        let result = brainfit_kernels::group::finish(
            &prepared.observed,
            &null,
            &prepared.flips,
            prepared.spatial.as_ref().map(|s| &s.topology),
        )?;
        let mask = data.mask();
        let volume = map.source.is_volume();
        if volume && !mask_written {
            let ones = vec![1.0; mask.len()];
            let volume = mask.unmask(&ones)?;
            let url = spec.output_url(None, crate::outputs::layout::GROUP_MASK)?;
            outputs.put(&url, write_nifti_f32(volume.view(), &mask.affine, true).into()).await?;
            mask_written = true;
        }
        let dir = map.dir();
        let mean: Array1<f64> =
            data.values.mean_axis(ndarray::Axis(0)).expect("two or more subjects");
        let target = MapTarget { outputs, spec, dir: &dir, mask: &mask };
        let put = |stem: &'static str, values: Vec<f64>, nifti: bool| {
            target.put(stem, values, nifti && volume)
        };
        put("mean", mean.to_vec(), true).await?;
        put("t", result.t.clone(), true).await?;
        put("p", result.p.clone(), true).await?;
        put("p_fwe", result.p_fwe.clone(), true).await?;
        put("null_max", null.max_t.clone(), false).await?;
        if let (Some(tfce), Some(p)) = (&result.tfce, &result.p_fwe_tfce) {
            put("tfce", tfce.clone(), true).await?;
            put("p_tfce_fwe", p.clone(), true).await?;
            put("null_max_tfce", null.max_tfce.clone(), false).await?;
        }
        if let (Some(pm), Some(pe)) = (&result.p_fwe_mass, &result.p_fwe_extent) {
            put("p_cluster_mass_fwe", pm.clone(), true).await?;
            put("p_cluster_extent_fwe", pe.clone(), true).await?;
            put("null_max_mass", null.max_mass.clone(), false).await?;
            put("null_max_extent", null.max_extent.iter().map(|&x| x as f64).collect(), false)
                .await?;
            let csv = clusters_csv(&result, volume.then_some(&mask))?;
            let url = spec.output_url(None, &format!("{dir}/clusters.csv"))?;
            outputs.put(&url, csv.into()).await?;
        }
        if map.source == GroupSource::RoiRsa {
            let names = crate::plan::brain_rdm_names(spec);
            let csv = roi_table_csv(&names, mean.view(), &result)?;
            let url = spec.output_url(None, &format!("{dir}/{ROI_TABLE}"))?;
            outputs.put(&url, csv.into()).await?;
        }
        let n_missing =
            data.values.columns().into_iter().filter(|c| c.iter().any(|v| !v.is_finite())).count();
        let count = |p: &[f64]| p.iter().filter(|&&p| p < 0.05).count();
        let t_stats = match volume {
            true => crate::merge::map_stats_located(
                Array1::from(result.t.clone()).view(),
                Some(&mask),
                |v| v,
            ),
            false => crate::merge::map_stats(Array1::from(result.t.clone()).view()),
        };
        let test = match &map.minus {
            Some(b) => format!("paired: {} - {b}", map.name),
            None => format!("one-sample against {}", null_value(spec, map)),
        };
        summaries.insert(
            map.key(),
            GroupSummary {
                source: map.source.as_str().into(),
                name: map.name.clone(),
                minus: map.minus.clone(),
                test,
                tail: g.tail.as_str().into(),
                fisher_z: g.fisher_z && map.is_correlation(spec),
                n_subjects: data.values.nrows(),
                n_flips: prepared.flips.n_flips(),
                exhaustive: prepared.flips.is_exhaustive(),
                n_voxels: data.voxels.len(),
                n_missing,
                t: t_stats,
                t_min: result.t.iter().copied().filter(|t| t.is_finite()).reduce(f64::min),
                significant_fwe_05: count(&result.p_fwe),
                significant_tfce_fwe_05: result.p_fwe_tfce.as_deref().map(count),
                cluster_threshold_t: prepared.cluster_t,
                clusters: result.clusters.len(),
                clusters_fwe_05: prepared
                    .cluster_t
                    .map(|_| result.clusters.iter().filter(|c| c.p_fwe_mass < 0.05).count()),
            },
        );
    }
    Ok(summaries)
}

/// Where a tested map's files go.
struct MapTarget<'a> {
    outputs: &'a StagedOutputs<'a>,
    spec: &'a JobSpec,
    dir: &'a str,
    mask: &'a Mask,
}

impl MapTarget<'_> {
    /// `<dir>/<stem>.npy` (values over the group mask) and, with `nifti`, `<stem>.nii.gz`.
    async fn put(&self, stem: &str, values: Vec<f64>, nifti: bool) -> Result<()> {
        let values = Array1::from(values);
        let url = self.spec.output_url(None, &format!("{}/{stem}.npy", self.dir))?;
        self.outputs.put(&url, write_npy(&values.view()).into()).await?;
        if nifti {
            let volume = self.mask.unmask(values.as_slice().expect("contiguous"))?;
            let url = self.spec.output_url(None, &format!("{}/{stem}.nii.gz", self.dir))?;
            let bytes = write_nifti_f32(volume.view(), &self.mask.affine, true);
            self.outputs.put(&url, bytes.into()).await?;
        }
        Ok(())
    }
}

/// `roi_rsa` tests: the table of the tested brain RDMs and ROIs, below the test's directory.
pub const ROI_TABLE: &str = "table.csv";

/// `table.csv` of an `roi_rsa` test: per brain RDM or ROI (in the `.npy` maps' order) the
/// subjects' mean, t, uncorrected p and max-T FWE p.
fn roi_table_csv(
    names: &[String],
    mean: ndarray::ArrayView1<'_, f64>,
    result: &GroupResult,
) -> Result<Vec<u8>> {
    let err = |e: csv::Error| JobError::Corrupt(format!("writing {ROI_TABLE}: {e}"));
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["brain", "mean", "t", "p", "p_fwe"]).map_err(err)?;
    for (i, name) in names.iter().enumerate() {
        let record = [
            name.clone(),
            format!("{:?}", mean[i]),
            format!("{:?}", result.t[i]),
            format!("{:?}", result.p[i]),
            format!("{:?}", result.p_fwe[i]),
        ];
        csv.write_record(&record).map_err(err)?;
    }
    csv.into_inner().map_err(|e| JobError::Corrupt(e.to_string()))
}

/// `clusters.csv`: one row per cluster, by decreasing mass; the peak as voxel and mm on a
/// volume (`mask`), as the time point of a time course.
fn clusters_csv(result: &GroupResult, mask: Option<&Mask>) -> Result<Vec<u8>> {
    let err = |e: csv::Error| JobError::Corrupt(format!("writing clusters.csv: {e}"));
    let mut csv = csv::Writer::from_writer(Vec::new());
    let mut header =
        vec!["cluster", "sign", "size", "mass", "p_fwe_mass", "p_fwe_extent", "peak_t"];
    match mask {
        Some(_) => header.extend(["peak_i", "peak_j", "peak_k", "peak_x", "peak_y", "peak_z"]),
        None => header.push("peak_time"),
    }
    csv.write_record(&header).map_err(err)?;
    for (rank, row) in result.clusters.iter().enumerate() {
        let c = &row.cluster;
        let mut record = vec![
            (rank + 1).to_string(),
            c.sign.to_string(),
            c.size.to_string(),
            format!("{:?}", c.mass),
            format!("{:?}", row.p_fwe_mass),
            format!("{:?}", row.p_fwe_extent),
            format!("{:?}", c.peak_t),
        ];
        match mask {
            Some(mask) => {
                let (ijk, mm) = (mask.voxels[c.peak], mask.world(c.peak));
                record.extend(ijk.iter().map(ToString::to_string));
                record.extend(mm.iter().map(|x| format!("{x:.2}")));
            }
            None => record.push(c.peak.to_string()),
        }
        csv.write_record(&record).map_err(err)?;
    }
    csv.into_inner().map_err(|e| JobError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(group: &str, extra: &str) -> std::result::Result<JobSpec, JobError> {
        let job = format!(
            "name = \"g\"\noutput = \"out\"\n[[subjects]]\nname = \"s1\"\ndata = {{ brain = \"b1.npy\", mask = \"m.nii.gz\" }}\n[[subjects]]\nname = \"s2\"\ndata = {{ brain = \"b2.npy\", mask = \"m.nii.gz\" }}\n[features]\na = \"a.npy\"\nb = \"b.npy\"\n[encoding]\n[searchlight]\nradius = 2\n{extra}[group]\n{group}"
        );
        JobSpec::from_toml(&job, "job.toml", "file:///d")
    }

    #[test]
    fn defaults_and_directories() {
        let g = spec("maps = [\"encoding\"]\n", "").unwrap().group.unwrap();
        assert_eq!(g.test, GroupTest::OneSample { value: 0.0 });
        assert_eq!((g.n, g.seed, g.tail, g.fisher_z), (5000, 0, Tail::TwoSided, false));
        assert_eq!((g.tfce, g.cluster, g.connectivity), (None, None, Connectivity::Corners));
        let map = |source, name: &str, minus: Option<&str>| GroupMap {
            source,
            name: name.into(),
            minus: minus.map(Into::into),
        };
        assert_eq!(map(GroupSource::Encoding, "a", None).dir(), "group/encoding/a");
        assert_eq!(map(GroupSource::Searchlight, "a", Some("b")).dir(), "group/searchlight/a-vs-b");
        assert_eq!(map(GroupSource::BestScore, BEST_SCORE, None).dir(), "group/best_score");
        assert_eq!(map(GroupSource::TimeResolved, "m", None).dir(), "group/time_resolved/m");
        // task keys are file names, distinct per map and flip range
        let tasks = [
            Task::GroupData { map: map(GroupSource::Encoding, "a", None) },
            Task::GroupData { map: map(GroupSource::Encoding, "a", Some("b")) },
            Task::Group { map: map(GroupSource::Encoding, "a", None), flips: [0, 10] },
            Task::GroupData { map: map(GroupSource::Searchlight, "a", None) },
            Task::GroupData { map: map(GroupSource::BestScore, BEST_SCORE, None) },
        ];
        let keys: Vec<String> = tasks.iter().map(Task::key).collect();
        assert_eq!(keys[0], "group-encoding-a-data");
        assert_eq!(keys[2], "group-encoding-a-f00000000-00000010");
        assert!(keys.iter().all(|k| !k.contains('/')));
        let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }

    #[test]
    fn fisher_z_moves_the_tested_value_of_correlation_maps_only() {
        let s = spec("maps = [\"encoding\", \"searchlight\"]\nvalue = 0.1\nfisher_z = true\n", "")
            .unwrap();
        let searchlight =
            GroupMap { source: GroupSource::Searchlight, name: "a".into(), minus: None };
        let encoding = GroupMap { source: GroupSource::Encoding, name: "a".into(), minus: None };
        assert!(searchlight.is_correlation(&s) && !encoding.is_correlation(&s));
        assert_eq!(null_value(&s, &searchlight), 0.1f64.atanh());
        assert_eq!(null_value(&s, &encoding), 0.1);
        // Pearson scores are correlations too
        let job = |score: &str| {
            let text = format!(
                "name = \"g\"\noutput = \"o\"\n[data]\nbrain = \"b.npy\"\n[features]\na = \"a.npy\"\n[encoding]\nscore = \"{score}\"\n"
            );
            let mut s = JobSpec::from_toml(&text, "job.toml", "file:///d").unwrap();
            s.group = spec("maps = [\"encoding\"]\nfisher_z = true\n", "").unwrap().group;
            s
        };
        assert!(encoding.is_correlation(&job("pearson")));
        assert!(!encoding.is_correlation(&job("r2")));
    }

    #[test]
    fn each_mistake_is_named() {
        for (group, message) in [
            ("maps = []\n", "maps is empty"),
            ("maps = [\"voxels\"]\n", "is not \"encoding\""),
            ("maps = [\"encoding/../x\"]\n", "must be 1 to"),
            ("maps = [\"encoding\"]\npairs = [[\"a\", \"b\"]]\n", "need test = \"paired\""),
            (
                "maps = [\"encoding\"]\ntest = \"paired\"\npairs = [[\"a\", \"a\"]]\n",
                "paired with itself",
            ),
            (
                "maps = [\"encoding\"]\ntest = \"paired\"\npairs = [[\"a\", \"b\"]]\nvalue = 1\n",
                "value applies to the one-sample test",
            ),
            ("maps = [\"encoding\"]\ncluster_threshold = 3\ncluster_p = 0.01\n", "not both"),
            ("maps = [\"encoding\"]\ncluster_threshold = -1\n", "above 0"),
            ("maps = [\"encoding\"]\nn = 2000000\n", "n must be 1 to"),
            ("maps = [\"encoding\"]\nvalue = nan\n", "must be finite"),
            ("maps = [\"encoding\"]\ntail = \"up\"\n", "unknown variant"),
        ] {
            let e = spec(group, "").unwrap_err().to_string();
            assert!(e.contains(message), "{group}: {e}");
        }
    }
}
