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
}

impl Task {
    /// A stable, file-name-safe key; partial results are stored under it.
    pub fn key(&self) -> String {
        match self {
            Task::Encoding {
                subject,
                space,
                voxels,
            } => {
                format!(
                    "s{subject:03}-encoding-{space}-v{:08}-{:08}",
                    voxels[0], voxels[1]
                )
            }
        }
    }

    /// A short description for progress and error messages.
    pub fn describe(&self, spec: &JobSpec) -> String {
        match self {
            Task::Encoding {
                subject,
                space,
                voxels,
            } => format!(
                "encoding {}{space} voxels {}..{}",
                spec.subjects[*subject]
                    .name
                    .as_ref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default(),
                voxels[0],
                voxels[1]
            ),
        }
    }
}

fn ranges(n: usize, size: usize) -> impl Iterator<Item = [usize; 2]> {
    (0..n)
        .step_by(size.max(1))
        .map(move |s| [s, (s + size).min(n)])
}

/// The tasks of a job, in a fixed order (subject, analysis, space, chunk).
pub fn plan(spec: &JobSpec, inventory: &Inventory) -> Vec<Task> {
    let mut tasks = Vec::new();
    for (si, inv) in inventory.subjects.iter().enumerate() {
        if spec.encoding.is_some() {
            for (space, _) in &inv.spaces {
                for voxels in ranges(inv.n_voxels, spec.execution.voxels_per_task) {
                    tasks.push(Task::Encoding {
                        subject: si,
                        space: space.name.clone(),
                        voxels,
                    });
                }
            }
        }
    }
    tasks
}
