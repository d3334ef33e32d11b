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
    /// Time-resolved RSA for permutations `[start, end)` (the observed values too).
    TimeResolved {
        /// Permutation range.
        perms: [usize; 2],
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
            Task::TimeResolved { perms } => {
                format!("time-resolved-p{:08}-{:08}", perms[0], perms[1])
            }
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
            Task::TimeResolved { perms } => {
                format!("time-resolved RSA (permutations {}..{})", perms[0], perms[1])
            }
            Task::Encoding { subject, space, voxels } => format!(
                "encoding {}{space} voxels {}..{}",
                spec.subjects[*subject].name.as_ref().map(|n| format!("{n}/")).unwrap_or_default(),
                voxels[0],
                voxels[1]
            ),
        }
    }
}

fn ranges(n: usize, size: usize) -> impl Iterator<Item = [usize; 2]> {
    (0..n).step_by(size.max(1)).map(move |s| [s, (s + size).min(n)])
}

/// Most tasks a job may plan: each is a part object and a scheduler entry.
pub const MAX_TASKS: usize = 100_000;

/// How many tasks [`plan`] makes, computed without making them (to refuse a job before
/// allocating its plan).
pub fn task_count(spec: &JobSpec, inventory: &Inventory) -> usize {
    let chunks = |n: usize, size: usize| n.div_ceil(size.max(1));
    let perm_tasks =
        spec.permutation.map_or(1, |p| chunks(p.n, spec.execution.permutations_per_task));
    let roi_rsa = spec.rsa.as_ref().is_some_and(|r| !r.brain_rdms.is_empty() || !r.rois.is_empty());
    let per_subject: usize = inventory
        .subjects
        .iter()
        .map(|inv| {
            let searchlight = if spec.searchlight.is_some() {
                chunks(inv.n_voxels, spec.execution.centres_per_task)
            } else {
                0
            };
            let encoding = if spec.encoding.is_some() {
                inv.spaces.len() * chunks(inv.n_voxels, spec.execution.voxels_per_task)
            } else {
                0
            };
            searchlight + usize::from(roi_rsa) * perm_tasks + encoding
        })
        .sum();
    per_subject + usize::from(spec.time_resolved.is_some()) * perm_tasks
}

/// The tasks of a job, in a fixed order (subject, analysis, space, chunk).
pub fn plan(spec: &JobSpec, inventory: &Inventory) -> Vec<Task> {
    let mut tasks = Vec::new();
    let n_perms = spec.permutation.map_or(0, |p| p.n);
    // small maps shard their permutations; with none, one task computes the observed values
    let perm_ranges: Vec<[usize; 2]> = if n_perms == 0 {
        vec![[0, 0]]
    } else {
        ranges(n_perms, spec.execution.permutations_per_task).collect()
    };
    for (si, inv) in inventory.subjects.iter().enumerate() {
        if spec.searchlight.is_some() {
            for voxels in ranges(inv.n_voxels, spec.execution.centres_per_task) {
                tasks.push(Task::Searchlight { subject: si, voxels });
            }
        }
        if spec.rsa.as_ref().is_some_and(|r| !r.brain_rdms.is_empty() || !r.rois.is_empty()) {
            for &perms in &perm_ranges {
                tasks.push(Task::Rsa { subject: si, perms });
            }
        }
        if spec.encoding.is_some() {
            for (space, _) in &inv.spaces {
                for voxels in ranges(inv.n_voxels, spec.execution.voxels_per_task) {
                    tasks.push(Task::Encoding { subject: si, space: space.name.clone(), voxels });
                }
            }
        }
    }
    if spec.time_resolved.is_some() {
        for &perms in &perm_ranges {
            tasks.push(Task::TimeResolved { perms });
        }
    }
    tasks
}

/// Names of the model RDMs of a subject's RSA analyses, in the order tasks report them: the
/// `[rsa] models` given directly (by name), then one per feature space.
pub fn model_names(spec: &JobSpec, subject: &crate::inputs::SubjectInventory) -> Vec<String> {
    let given = spec.rsa.iter().flat_map(|r| r.models.keys().cloned());
    given.chain(subject.spaces.iter().map(|(s, _)| s.name.clone())).collect()
}

/// Names of the brain RDMs of a subject's ROI RSA: the `[rsa] brain_rdms`, then the `rois`.
pub fn brain_rdm_names(spec: &JobSpec) -> Vec<String> {
    spec.rsa.iter().flat_map(|r| r.brain_rdms.keys().chain(r.rois.keys()).cloned()).collect()
}
