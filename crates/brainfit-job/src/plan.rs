//! Cutting a job into tasks.
//!
//! A task is the unit the scheduler leases to a worker and the unit of a partial result: one
//! subject × feature space × voxel chunk for encoding. Task boundaries depend only on the job
//! and its inputs' shapes, never on the number of workers, so every run of a job computes the
//! same tasks and produces bit-identical outputs.

use crate::inputs::Inventory;
use crate::spec::JobSpec;
use serde::{Deserialize, Serialize};

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Voxelwise encoding of voxels `[start, end)` of a subject from one feature space.
    Encoding {
        /// Subject index in the job.
        subject: usize,
        /// Feature space name.
        space: String,
        /// Voxel range `[start, end)` in mask order.
        voxels: [usize; 2],
    },
    /// Searchlight RSA of the kept centres among mask voxels `[start, end)` of a subject,
    /// with every permutation.
    Searchlight {
        /// Subject index in the job.
        subject: usize,
        /// Candidate centre range `[start, end)` in mask order.
        voxels: [usize; 2],
    },
    /// ROI-level RSA of a subject: every brain RDM × model × method, for permutations
    /// `[start, end)` (the observed values too).
    Rsa {
        /// Subject index in the job.
        subject: usize,
        /// Permutation range.
        perms: [usize; 2],
    },
    /// Decoding of units `[start, end)` of a feature space from a subject's voxels (the whole
    /// mask or one ROI), with every permutation.
    Decoding {
        /// Subject index in the job.
        subject: usize,
        /// The voxels decoded from: an ROI's name, or [`crate::spec::WHOLE_MASK`].
        source: String,
        /// Feature space name.
        space: String,
        /// Unit range `[start, end)` of the (flattened) feature space.
        units: [usize; 2],
    },
    /// Searchlight decoding of a feature space from the spheres of the kept centres among
    /// mask voxels `[start, end)`, with every permutation.
    DecodingSearchlight {
        /// Subject index in the job.
        subject: usize,
        /// Feature space name.
        space: String,
        /// Candidate centre range `[start, end)` in mask order.
        voxels: [usize; 2],
    },
    /// Time-resolved RSA of one recording for permutations `[start, end)` (the observed
    /// values too).
    TimeResolved {
        /// The recording's index in `[time_resolved] data`.
        recording: usize,
        /// Permutation range.
        perms: [usize; 2],
    },
    /// Feature extraction of images `[start, end)` of the stimuli, or of the reference set
    /// PCA is fitted on: every `[extract]` layer's activations, written for the assembly.
    Extract {
        /// The reference set (else the stimuli).
        reference: bool,
        /// Image range.
        images: [usize; 2],
    },
    /// One `[extract]` layer written as a feature space, from every extraction task's
    /// activations: as extracted, or compressed (PCA fitted on the reference images, or a
    /// random projection).
    Assemble {
        /// The layer's feature space name.
        layer: String,
    },
    /// `[group]`: every subject's values of one tested map, gathered from their parts onto
    /// the group mask ([`crate::group::GroupData`]).
    GroupData {
        /// The tested map.
        map: crate::group::GroupMap,
    },
    /// `[group]`: sign flips `[start, end)` of one tested map's test.
    Group {
        /// The tested map.
        map: crate::group::GroupMap,
        /// Flip range.
        flips: [u64; 2],
    },
}

impl Task {
    /// A stable, file-name-safe key; partial results are stored under it.
    pub fn key(&self) -> String {
        match self {
            Task::Encoding { subject, space, voxels } => {
                format!("s{subject:03}-encoding-{space}-v{:08}-{:08}", voxels[0], voxels[1])
            }
            Task::Searchlight { subject, voxels } => {
                format!("s{subject:03}-searchlight-v{:08}-{:08}", voxels[0], voxels[1])
            }
            Task::Rsa { subject, perms } => {
                format!("s{subject:03}-rsa-p{:08}-{:08}", perms[0], perms[1])
            }
            Task::DecodingSearchlight { subject, space, voxels } => format!(
                "s{subject:03}-decoding-searchlight-{space}-v{:08}-{:08}",
                voxels[0], voxels[1]
            ),
            Task::Decoding { subject, source, space, units } => {
                format!("s{subject:03}-decoding-{source}-{space}-u{:08}-{:08}", units[0], units[1])
            }
            Task::TimeResolved { recording, perms } => {
                format!("time-resolved-r{recording:03}-p{:08}-{:08}", perms[0], perms[1])
            }
            Task::Extract { reference, images } => format!(
                "extract-{}-i{:08}-{:08}",
                if *reference { "reference" } else { "stimuli" },
                images[0],
                images[1]
            ),
            Task::Assemble { layer } => format!("assemble-{layer}"),
            Task::GroupData { map } => format!("{}-data", group_key(map)),
            Task::Group { map, flips } => {
                format!("{}-f{:08}-{:08}", group_key(map), flips[0], flips[1])
            }
        }
    }

    /// The task's stage: extraction (0), then the extracted layers' assembly (1), then the
    /// analyses (2), which read the assembled feature spaces; then the group tests' data (3),
    /// gathered from the analyses' parts, and their sign flips (4). A stage starts only when
    /// every task of the earlier stages is done.
    pub fn stage(&self) -> u32 {
        match self {
            Task::Extract { .. } => 0,
            Task::Assemble { .. } => 1,
            Task::GroupData { .. } => 3,
            Task::Group { .. } => 4,
            _ => 2,
        }
    }

    /// A short description for progress and error messages.
    pub fn describe(&self, spec: &JobSpec) -> String {
        let subject =
            |s: usize| spec.subjects[s].name.as_ref().map(|n| format!("{n}: ")).unwrap_or_default();
        match self {
            Task::Searchlight { subject: s, voxels } => {
                format!("{}searchlight centres {}..{}", subject(*s), voxels[0], voxels[1])
            }
            Task::Rsa { subject: s, perms } => {
                format!("{}ROI RSA (permutations {}..{})", subject(*s), perms[0], perms[1])
            }
            Task::TimeResolved { recording, perms } => {
                let t = spec.time_resolved.as_ref().and_then(|t| t.recordings.get(*recording));
                let name =
                    t.and_then(|r| r.name.as_ref()).map(|n| format!("{n}: ")).unwrap_or_default();
                format!("{name}time-resolved RSA (permutations {}..{})", perms[0], perms[1])
            }
            Task::DecodingSearchlight { subject: s, space, voxels } => format!(
                "{}decoding {space} searchlight centres {}..{}",
                subject(*s),
                voxels[0],
                voxels[1]
            ),
            Task::Decoding { subject: s, source, space, units } => {
                format!(
                    "{}decoding {space} from {source} units {}..{}",
                    subject(*s),
                    units[0],
                    units[1]
                )
            }
            Task::Encoding { subject, space, voxels } => format!(
                "encoding {}{space} voxels {}..{}",
                spec.subjects[*subject].name.as_ref().map(|n| format!("{n}/")).unwrap_or_default(),
                voxels[0],
                voxels[1]
            ),
            Task::Extract { reference, images } => format!(
                "feature extraction of {} images {}..{}",
                if *reference { "reference" } else { "stimulus" },
                images[0],
                images[1]
            ),
            Task::GroupData { map } => format!("group test {}: the subjects' maps", map.dir()),
            Task::Group { map, flips } => {
                format!("group test {} (sign flips {}..{})", map.dir(), flips[0], flips[1])
            }
            Task::Assemble { layer } => {
                match spec.extract.as_ref().and_then(|e| e.compress.get(layer)) {
                    Some(crate::extract::CompressSpec::Pca { model: None, .. }) => {
                        format!("layer {layer}: PCA fit and projection")
                    }
                    Some(_) => format!("layer {layer}: compression"),
                    None => format!("layer {layer}: writing the feature space"),
                }
            }
        }
    }
}

/// A group test's task key prefix: `group-<source>-<name>[-vs-<b>]` (names are
/// file-name-safe; `source` has no `-`).
fn group_key(map: &crate::group::GroupMap) -> String {
    format!("group-{}", map.key().replacen('/', "-", 1))
}

fn ranges(n: usize, size: usize) -> impl Iterator<Item = [usize; 2]> {
    (0..n).step_by(size.max(1)).map(move |s| [s, (s + size).min(n)])
}

/// Most tasks a job may plan: each is a part object and a scheduler entry.
pub const MAX_TASKS: usize = 100_000;

/// The analyses brainfit runs. Every step that differs between analyses — planning their
/// tasks here, computing a task (the worker's `Executor`), merging the parts
/// (`merge::write_outputs`) — matches on this enum or on [`Task`], so a new analysis is a new
/// variant and the compiler lists every place it must be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analysis {
    /// `[searchlight]`, per subject.
    Searchlight,
    /// `[rsa]` with brain RDMs or ROIs, per subject.
    RoiRsa,
    /// `[encoding]`, per subject and feature space.
    Encoding,
    /// `[decoding]`, per subject, source and feature space.
    Decoding,
    /// `[time_resolved]`, once per job.
    TimeResolved,
    /// `[extract]`, once per job, before everything else.
    Extraction,
    /// `[group]`, once per job, after everything else.
    Group,
}

impl Analysis {
    /// Every analysis, in plan order: per subject searchlight, ROI RSA, encoding, decoding;
    /// then the job-wide ones.
    pub const ALL: [Analysis; 7] = [
        Analysis::Extraction,
        Analysis::Searchlight,
        Analysis::RoiRsa,
        Analysis::Encoding,
        Analysis::Decoding,
        Analysis::TimeResolved,
        Analysis::Group,
    ];

    /// Whether `spec` asks for this analysis.
    pub fn requested(self, spec: &JobSpec) -> bool {
        match self {
            Analysis::Searchlight => spec.searchlight.is_some(),
            Analysis::RoiRsa => {
                spec.rsa.as_ref().is_some_and(|r| !r.brain_rdms.is_empty() || !r.rois.is_empty())
            }
            Analysis::Encoding => spec.encoding.is_some(),
            Analysis::Decoding => spec.decoding.is_some(),
            Analysis::TimeResolved => spec.time_resolved.is_some(),
            Analysis::Extraction => spec.extract.is_some(),
            Analysis::Group => spec.group.is_some(),
        }
    }

    /// Whether it runs once per subject (else once per job).
    pub fn per_subject(self) -> bool {
        !matches!(self, Analysis::TimeResolved | Analysis::Extraction | Analysis::Group)
    }

    /// Its tasks for subject `si` (per-subject analyses; `si` is ignored by job-wide ones),
    /// in plan order.
    fn tasks(self, spec: &JobSpec, inventory: &Inventory, si: usize) -> Vec<Task> {
        let ex = &spec.execution;
        match self {
            Analysis::Searchlight => ranges(inventory.subjects[si].n_voxels, ex.centres_per_task)
                .map(|voxels| Task::Searchlight { subject: si, voxels })
                .collect(),
            Analysis::RoiRsa => perm_ranges(spec)
                .into_iter()
                .map(|perms| Task::Rsa { subject: si, perms })
                .collect(),
            Analysis::Encoding => {
                let inv = &inventory.subjects[si];
                encoding_fits(spec, inv)
                    .into_iter()
                    .flat_map(|fit| {
                        ranges(inv.n_voxels, ex.voxels_per_task).map(move |voxels| Task::Encoding {
                            subject: si,
                            space: fit.name.clone(),
                            voxels,
                        })
                    })
                    .collect()
            }
            Analysis::Decoding => {
                let inv = &inventory.subjects[si];
                let mut tasks = Vec::new();
                for (source, space, p) in decoding_targets(spec, inv) {
                    tasks.extend(ranges(p, ex.voxels_per_task).map(|units| Task::Decoding {
                        subject: si,
                        source: source.clone(),
                        space: space.clone(),
                        units,
                    }));
                }
                for space in decoding_searchlight_spaces(spec, inv) {
                    tasks.extend(ranges(inv.n_voxels, ex.centres_per_task).map(|voxels| {
                        Task::DecodingSearchlight { subject: si, space: space.clone(), voxels }
                    }));
                }
                tasks
            }
            Analysis::TimeResolved => {
                let recordings = spec.time_resolved.as_ref().map_or(0, |t| t.recordings.len());
                (0..recordings)
                    .flat_map(|recording| {
                        perm_ranges(spec)
                            .into_iter()
                            .map(move |perms| Task::TimeResolved { recording, perms })
                    })
                    .collect()
            }
            Analysis::Extraction => {
                let Some(x) = &inventory.extraction else { return Vec::new() };
                let mut tasks: Vec<Task> = ranges(x.stimuli.len(), x.images_per_task)
                    .map(|images| Task::Extract { reference: false, images })
                    .collect();
                if let Some(r) = &x.reference {
                    tasks.extend(
                        ranges(r.len(), x.images_per_task)
                            .map(|images| Task::Extract { reference: true, images }),
                    );
                }
                tasks.extend(x.layers.iter().map(|l| Task::Assemble { layer: l.name.clone() }));
                tasks
            }
            Analysis::Group => {
                // checked by inputs::inspect before any plan is made
                let maps = crate::group::group_maps(spec, inventory).unwrap_or_default();
                let per_task = spec.execution.permutations_per_task as u64;
                let mut tasks: Vec<Task> =
                    maps.iter().map(|map| Task::GroupData { map: map.clone() }).collect();
                for map in &maps {
                    let flips = crate::group::n_flips(spec, map);
                    tasks.extend((0..flips).step_by(per_task as usize).map(|k| Task::Group {
                        map: map.clone(),
                        flips: [k, (k + per_task).min(flips)],
                    }));
                }
                tasks
            }
        }
    }

    /// How many tasks [`Analysis::tasks`] makes, without making them.
    fn count(self, spec: &JobSpec, inventory: &Inventory, si: usize) -> usize {
        let chunks = |n: usize, size: usize| n.div_ceil(size.max(1));
        let ex = &spec.execution;
        let perm_tasks = spec.permutation.map_or(1, |p| chunks(p.n, ex.permutations_per_task));
        match self {
            Analysis::Searchlight => chunks(inventory.subjects[si].n_voxels, ex.centres_per_task),
            Analysis::RoiRsa => perm_tasks,
            Analysis::TimeResolved => {
                perm_tasks * spec.time_resolved.as_ref().map_or(0, |t| t.recordings.len())
            }
            Analysis::Extraction => inventory.extraction.as_ref().map_or(0, |x| {
                chunks(x.stimuli.len(), x.images_per_task)
                    + x.reference.as_ref().map_or(0, |r| chunks(r.len(), x.images_per_task))
                    + x.layers.len()
            }),
            Analysis::Encoding => {
                let inv = &inventory.subjects[si];
                encoding_fits(spec, inv).len() * chunks(inv.n_voxels, ex.voxels_per_task)
            }
            Analysis::Group => {
                let maps = crate::group::group_maps(spec, inventory).unwrap_or_default();
                maps.iter()
                    .map(|m| {
                        1 + chunks(
                            crate::group::n_flips(spec, m) as usize,
                            ex.permutations_per_task,
                        )
                    })
                    .sum()
            }
            Analysis::Decoding => {
                let inv = &inventory.subjects[si];
                let units: usize = decoding_targets(spec, inv)
                    .iter()
                    .map(|(_, _, p)| chunks(*p, ex.voxels_per_task))
                    .sum();
                let spheres = decoding_searchlight_spaces(spec, inv).len()
                    * chunks(inv.n_voxels, ex.centres_per_task);
                units + spheres
            }
        }
    }
}

impl Task {
    /// The analysis this task belongs to.
    pub fn analysis(&self) -> Analysis {
        match self {
            Task::Encoding { .. } => Analysis::Encoding,
            Task::Searchlight { .. } => Analysis::Searchlight,
            Task::Rsa { .. } => Analysis::RoiRsa,
            Task::Decoding { .. } | Task::DecodingSearchlight { .. } => Analysis::Decoding,
            Task::TimeResolved { .. } => Analysis::TimeResolved,
            Task::Extract { .. } | Task::Assemble { .. } => Analysis::Extraction,
            Task::GroupData { .. } | Task::Group { .. } => Analysis::Group,
        }
    }
}

/// A subject's decoding targets in plan order: (source, feature space, units) for every
/// source ([`crate::spec::DecodingSpec::sources`]) and decoded space; none without `[decoding]`.
pub fn decoding_targets(
    spec: &JobSpec,
    inv: &crate::inputs::SubjectInventory,
) -> Vec<(String, String, usize)> {
    let Some(d) = &spec.decoding else { return Vec::new() };
    let names: Vec<&str> = inv.spaces.iter().map(|(s, _)| s.name.as_str()).collect();
    let mut out = Vec::new();
    for source in d.sources() {
        for space in d.decoded(&names) {
            let p = inv.spaces.iter().find(|(s, _)| s.name == space).map_or(0, |(_, p)| *p);
            out.push((source.to_string(), space.to_string(), p));
        }
    }
    out
}

/// The feature spaces a subject's searchlight decoding decodes (none without one).
pub fn decoding_searchlight_spaces(
    spec: &JobSpec,
    inv: &crate::inputs::SubjectInventory,
) -> Vec<String> {
    let Some(d) = spec.decoding.as_ref().filter(|d| d.searchlight.is_some()) else {
        return Vec::new();
    };
    let names: Vec<&str> = inv.spaces.iter().map(|(s, _)| s.name.as_str()).collect();
    d.decoded(&names).into_iter().map(str::to_string).collect()
}

/// A subject's encoding fits ([`crate::spec::EncodingSpec::fits`]); none without `[encoding]`.
pub fn encoding_fits(
    spec: &JobSpec,
    inv: &crate::inputs::SubjectInventory,
) -> Vec<crate::spec::Fit> {
    let names: Vec<&str> = inv.spaces.iter().map(|(s, _)| s.name.as_str()).collect();
    spec.encoding.as_ref().map(|e| e.fits(&names)).unwrap_or_default()
}

/// The permutation ranges of analyses that shard their permutations (small maps); with none,
/// one task computes the observed values.
fn perm_ranges(spec: &JobSpec) -> Vec<[usize; 2]> {
    match spec.permutation.map_or(0, |p| p.n) {
        0 => vec![[0, 0]],
        n => ranges(n, spec.execution.permutations_per_task).collect(),
    }
}

/// How many tasks [`plan`] makes, computed without making them (to refuse a job before
/// allocating its plan).
pub fn task_count(spec: &JobSpec, inventory: &Inventory) -> usize {
    let requested = Analysis::ALL.into_iter().filter(|a| a.requested(spec));
    requested
        .map(|a| match a.per_subject() {
            true => (0..inventory.subjects.len()).map(|si| a.count(spec, inventory, si)).sum(),
            false => a.count(spec, inventory, 0),
        })
        .sum()
}

/// The tasks of a job, in a fixed order: feature extraction first (it makes the feature
/// spaces the analyses read; see [`Task::stage`]), then per subject its analyses (searchlight, ROI RSA,
/// encoding by feature space), chunk by chunk; then the job-wide analyses.
pub fn plan(spec: &JobSpec, inventory: &Inventory) -> Vec<Task> {
    let requested: Vec<Analysis> =
        Analysis::ALL.into_iter().filter(|a| a.requested(spec)).collect();
    let mut tasks = Vec::new();
    if requested.contains(&Analysis::Extraction) {
        tasks.extend(Analysis::Extraction.tasks(spec, inventory, 0));
    }
    for si in 0..inventory.subjects.len() {
        for a in requested.iter().filter(|a| a.per_subject()) {
            tasks.extend(a.tasks(spec, inventory, si));
        }
    }
    for a in requested.iter().filter(|a| !a.per_subject() && **a != Analysis::Extraction) {
        tasks.extend(a.tasks(spec, inventory, 0));
    }
    tasks
}

/// Names of the model RDMs of a subject's RSA analyses, in the order tasks report them: the
/// `[rsa] models` given directly (by name), then one per feature space.
pub fn model_names(spec: &JobSpec, subject: &crate::inputs::SubjectInventory) -> Vec<String> {
    let given = spec.rsa.iter().flat_map(|r| r.models.keys().cloned());
    let remix = spec.rsa.iter().flat_map(|r| r.remix.keys().cloned());
    given.chain(subject.spaces.iter().map(|(s, _)| s.name.clone())).chain(remix).collect()
}

/// The maps of an RSA analysis (columns of `rsa/compare.csv`, searchlight and time-resolved
/// map directories): every model ([`model_names`]), then per fitted model (reweighted sets,
/// unit weightings) its cross-validated comparison `<name>` and the same regressors summed
/// with equal weights, `<name>.unweighted`.
pub fn rsa_map_names(spec: &JobSpec, subject: &crate::inputs::SubjectInventory) -> Vec<String> {
    let fitted = spec.rsa.iter().flat_map(crate::spec::RsaSpec::fitted_names);
    let fitted = fitted.flat_map(|name| [name.clone(), format!("{name}{UNWEIGHTED_SUFFIX}")]);
    model_names(spec, subject).into_iter().chain(fitted).collect()
}

/// Each fitted model (reweighted sets, then unit weightings) with the names of its
/// regressors: a set's models, a unit weighting's units (`unit_0`, ...) or principal
/// components (`pc_1`, ...).
pub fn fitted_regressors(
    spec: &JobSpec,
    subject: &crate::inputs::SubjectInventory,
) -> Vec<(String, Vec<String>)> {
    let Some(r) = &spec.rsa else { return Vec::new() };
    let sets = r.reweight.iter().map(|(name, set)| (name.clone(), set.models.clone()));
    let units = r.unit_weighting.iter().map(|(name, u)| {
        let regressors = match u.components {
            Some(k) => (1..=k).map(|c| format!("pc_{c}")).collect(),
            None => {
                let space = subject.spaces.iter().find(|(s, _)| s.name == u.space);
                (0..space.map_or(0, |(_, p)| *p)).map(|i| format!("unit_{i}")).collect()
            }
        };
        (name.clone(), regressors)
    });
    sets.chain(units).collect()
}

/// The suffix of a fitted model's equal-weight comparison.
pub const UNWEIGHTED_SUFFIX: &str = ".unweighted";

/// The subsets of `[rsa] partition`'s models, in the order tasks compute them (bit `i` of
/// the position + 1 is model `i`), each named by its models joined with `+`.
pub fn partition_names(spec: &JobSpec) -> Vec<String> {
    let models = spec.rsa.as_ref().map(|r| r.partition.clone()).unwrap_or_default();
    (1u32..(1 << models.len()))
        .map(|mask| {
            let members: Vec<&str> = (0..models.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| models[i].as_str())
                .collect();
            members.join("+")
        })
        .collect()
}

/// Names of the brain RDMs of a subject's ROI RSA: the `[rsa] brain_rdms`, then the `rois`.
pub fn brain_rdm_names(spec: &JobSpec) -> Vec<String> {
    spec.rsa.iter().flat_map(|r| r.brain_rdms.keys().chain(r.rois.keys()).cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::{SpaceRef, SubjectInventory};

    #[test]
    fn tasks_follow_a_fixed_order_and_are_counted_without_being_made() {
        let job = r#"
name = "all"
output = "out"
[[subjects]]
name = "s1"
data = { brain = "b1.npy", mask = "m.nii.gz" }
[[subjects]]
name = "s2"
data = { brain = "b2.npy", mask = "m.nii.gz" }
[features]
a = "a.npy"
b = "b.npy"
[encoding]
[searchlight]
radius = 1
[rsa]
brain_rdms = { given = "given.npy" }
[time_resolved]
data = "meg.npy"
[permutation]
n = 5
[execution]
voxels_per_task = 512
centres_per_task = 600
permutations_per_task = 3
"#;
        let spec = JobSpec::from_toml(job, "job.toml", "file:///d").unwrap();
        let space = |name: &str| {
            (SpaceRef { name: name.into(), url: format!("file:///d/{name}.npy"), key: None }, 4)
        };
        let subject = SubjectInventory {
            n_samples: 20,
            n_voxels: 1000,
            f64_data: false,
            spaces: vec![space("a"), space("b")],
            n_conditions: 20,
        };
        let inventory = Inventory {
            subjects: vec![subject.clone(), subject],
            warnings: vec![],
            extraction: None,
        };
        let tasks = plan(&spec, &inventory);
        assert_eq!(tasks.len(), task_count(&spec, &inventory));
        let keys: Vec<String> = tasks.iter().map(Task::key).collect();
        let per_subject = |s: usize| {
            vec![
                format!("s{s:03}-searchlight-v00000000-00000600"),
                format!("s{s:03}-searchlight-v00000600-00001000"),
                format!("s{s:03}-rsa-p00000000-00000003"),
                format!("s{s:03}-rsa-p00000003-00000005"),
                format!("s{s:03}-encoding-a-v00000000-00000512"),
                format!("s{s:03}-encoding-a-v00000512-00001000"),
                format!("s{s:03}-encoding-b-v00000000-00000512"),
                format!("s{s:03}-encoding-b-v00000512-00001000"),
            ]
        };
        let mut want = per_subject(0);
        want.extend(per_subject(1));
        want.extend([
            "time-resolved-r000-p00000000-00000003".into(),
            "time-resolved-r000-p00000003-00000005".into(),
        ]);
        assert_eq!(keys, want);
        assert!(tasks.iter().all(|t| t.analysis().requested(&spec)));
    }
}
