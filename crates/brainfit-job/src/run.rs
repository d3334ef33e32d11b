//! One run of a job, as the coordinator sees it: prepared (inputs inspected, tasks planned),
//! then finished (parts merged into outputs). Embedded and distributed runs share this code.
//!
//! A run has an id; its partial results live under `output/.brainfit/runs/<id>/parts/`, one
//! object per task, written create-only by whichever attempt finishes first. A coordinator that
//! restarts with the same id finds the parts already written and does not redo those tasks.

use crate::inputs::{Inventory, inspect};
use crate::merge::{RunInfo, write_outputs};
use crate::plan::{Task, plan};
use crate::spec::JobSpec;
use crate::{Part, Result};
use brainfit_io::{Store, join_url};

/// A prepared run of a job.
#[derive(Debug, Clone)]
pub struct JobRun {
    /// Run id (unique per run; names the parts directory).
    pub id: String,
    /// The checked job.
    pub spec: JobSpec,
    /// Input shapes.
    pub inventory: Inventory,
    /// The plan.
    pub tasks: Vec<Task>,
}

/// A fresh run id: time-ordered and unique per process.
pub fn new_run_id() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{:09}-{}", t.as_secs(), t.subsec_nanos(), std::process::id())
}

impl JobRun {
    /// Marks the output incomplete (removes `summary.json`), inspects the inputs and plans.
    pub async fn prepare(store: &Store, spec: JobSpec, id: String) -> Result<JobRun> {
        store.delete(&join_url(&spec.output, "summary.json")).await?;
        let inventory = inspect(store, &spec).await?;
        let tasks = plan(&spec, &inventory);
        Ok(JobRun { id, spec, inventory, tasks })
    }

    /// URL of the directory holding this run's partial results.
    pub fn run_url(&self) -> String {
        join_url(&self.spec.output, &format!(".brainfit/runs/{}", self.id))
    }

    /// URL of task `task`'s partial result.
    pub fn part_url(&self, task: usize) -> String {
        join_url(&self.run_url(), &format!("parts/{}.part", self.tasks[task].key()))
    }

    /// Indices of tasks whose partial result already exists (after a restart).
    pub async fn finished_tasks(&self, store: &Store) -> Result<Vec<usize>> {
        let existing: std::collections::HashSet<String> =
            store.list(&join_url(&self.run_url(), "parts")).await?.into_iter().collect();
        Ok((0..self.tasks.len()).filter(|&i| existing.contains(&self.part_url(i))).collect())
    }

    /// Reads every part, writes the outputs (`summary.json` last), removes the parts.
    pub async fn finish(&self, store: &Store, info: &RunInfo) -> Result<serde_json::Value> {
        let mut parts = Vec::with_capacity(self.tasks.len());
        for i in 0..self.tasks.len() {
            let url = self.part_url(i);
            parts.push(Part::decode(&store.get(&url).await?, &url)?);
        }
        let summary =
            write_outputs(store, &self.spec, &self.inventory, &self.tasks, &parts, info).await?;
        store.delete_prefix(&self.run_url()).await?;
        Ok(summary)
    }
}
