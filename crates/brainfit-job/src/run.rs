//! One run of a job, as the coordinator sees it: prepared (inputs inspected, tasks planned),
//! then finished (parts merged into outputs). Embedded and distributed runs share this code.
//!
//! A run has an id; its partial results live under `output/.brainfit/runs/<id>/parts/`, one
//! object per task, written create-only by whichever attempt finishes first. A coordinator that
//! restarts with the same id finds the parts already written and does not redo those tasks.
//! The merged outputs are staged under `output/.brainfit/runs/<id>/staged/` and published
//! together at the end ([`crate::outputs`]).

use crate::inputs::{Inventory, inspect};
use crate::merge::{RunInfo, write_outputs};
use crate::outputs::{SUMMARY, StagedOutputs, layout};
use crate::plan::{Task, plan};
use crate::spec::JobSpec;
use crate::{JobError, Part, Result};
use brainfit_io::{PutOutcome, Store, join_url};

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
    /// Inspects the inputs, plans, and takes the output. Nothing in `output` changes before
    /// [`JobRun::finish`] publishes the new results ([`crate::outputs`]): a job whose inputs
    /// are wrong, or a run that fails or is cancelled, leaves an earlier complete run alone.
    ///
    /// The output directory is taken exclusively first: a create-only lock object
    /// (`output/.brainfit/lock.json`, naming the run, host, process and start time) makes a
    /// second run into the same output fail with a message saying who holds it, instead of
    /// mixing two runs' results. The same run id (a restarted coordinator) takes it again.
    pub async fn prepare(store: &Store, spec: JobSpec, id: String) -> Result<JobRun> {
        let mut inventory = inspect(store, &spec).await?;
        let tasks = plan(&spec, &inventory);
        debug_assert_eq!(tasks.len(), crate::plan::task_count(&spec, &inventory));
        let summary_url = spec.output_url(None, SUMMARY)?;
        let mut run = JobRun { id, spec, inventory: Default::default(), tasks };
        run.lock_output(store).await?;
        // results of a different job in this output stay beside ours: say so
        if let Ok(previous) = store.get(&summary_url).await {
            let previous = serde_json::from_slice::<crate::Summary>(&previous);
            if previous.is_ok_and(|previous| previous.job != run.spec.source) {
                inventory.warnings.push(format!(
                    "{} held the results of a different job (its summary.json's job file differs): files this job does not write are left from that job",
                    run.spec.output
                ));
            }
        }
        run.inventory = inventory;
        Ok(run)
    }

    /// URL of the output directory's lock object.
    pub fn lock_url(spec: &JobSpec) -> String {
        join_url(&spec.output, layout::LOCK)
    }

    async fn lock_output(&self, store: &Store) -> Result<()> {
        let url = Self::lock_url(&self.spec);
        let since =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let holder = serde_json::json!({
            "run": self.id,
            "job": self.spec.name,
            "host": brainfit_io::host_name(),
            "pid": std::process::id(),
            "started_unix": since.as_secs(),
        });
        let body = serde_json::to_vec_pretty(&holder).expect("a JSON value serialises");
        if store.put_create(&url, body.into()).await? == PutOutcome::Created {
            return Ok(());
        }
        let existing = store.get(&url).await?;
        let held: serde_json::Value = serde_json::from_slice(&existing).unwrap_or_default();
        if held["run"] == self.id.as_str() {
            return Ok(()); // the same run, resumed
        }
        Err(JobError::Locked {
            output: self.spec.output.clone(),
            holder: format!(
                "run {} of job {} on host {} (pid {}, started at unix time {})",
                held["run"], held["job"], held["host"], held["pid"], held["started_unix"]
            ),
            lock: url,
        })
    }

    /// Ends a run that will not finish (failed or cancelled): removes its partial results and
    /// releases the output directory.
    pub async fn abandon(&self, store: &Store) -> Result<()> {
        store.delete_prefix(&self.run_url()).await?;
        if self.spec.extract.is_some() {
            store.delete_prefix(&join_url(&self.spec.output, crate::extract::WORK_DIR)).await?;
        }
        store.delete(&Self::lock_url(&self.spec)).await?;
        Ok(())
    }

    /// URL of the directory holding this run's partial results.
    pub fn run_url(&self) -> String {
        join_url(&self.spec.output, &layout::run(&self.id))
    }

    /// URL of task `task`'s partial result.
    pub fn part_url(&self, task: usize) -> String {
        join_url(&self.run_url(), &layout::part(&self.tasks[task].key()))
    }

    /// Indices of tasks whose partial result already exists (after a restart).
    pub async fn finished_tasks(&self, store: &Store) -> Result<Vec<usize>> {
        let existing: std::collections::HashSet<String> =
            store.list(&join_url(&self.run_url(), layout::PARTS)).await?.into_iter().collect();
        Ok((0..self.tasks.len()).filter(|&i| existing.contains(&self.part_url(i))).collect())
    }

    /// Reads every part, stages the outputs, publishes them (`summary.json` last), removes
    /// the parts and releases the output. Safe to repeat after a crash at any point.
    pub async fn finish(&self, store: &Store, info: &RunInfo) -> Result<crate::Summary> {
        let mut parts = Vec::with_capacity(self.tasks.len());
        for i in 0..self.tasks.len() {
            let url = self.part_url(i);
            parts.push(Part::decode(&store.get(&url).await?, &url)?);
        }
        let outputs =
            StagedOutputs::new(store, &self.spec.output, join_url(&self.run_url(), layout::STAGED));
        let summary =
            write_outputs(store, &outputs, &self.spec, &self.inventory, &self.tasks, &parts, info)
                .await?;
        outputs.publish().await?;
        self.abandon(store).await?; // parts and lock: the outputs are complete
        Ok(summary)
    }
}
