//! A job under a scheduler: the steps around the task state machine that embedded runs and the
//! gRPC coordinator must do identically — prepare a run (and resume one whose parts are partly
//! written), turn the machine's end state into an outcome, and merge the parts into outputs.

use brainfit_io::Store;
use brainfit_job::merge::RunInfo;
use brainfit_job::{JobRun, JobSpec};
use brainfit_scheduler::{JobState, Scheduler, SchedulerConfig};
use std::sync::Arc;

/// A prepared run and its task state machine.
#[derive(Debug)]
pub struct ScheduledJob {
    /// The run (spec, input shapes, plan); shared with the workers computing it.
    pub run: Arc<JobRun>,
    /// Its tasks' states.
    pub scheduler: Scheduler,
    /// Tasks found finished when the run was prepared (parts already written by an earlier
    /// process with the same run id).
    pub resumed: usize,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Tasks remain.
    Running,
    /// Every task's part is stored: merge next.
    Succeeded,
    /// A task failed on every attempt.
    Failed {
        /// What the task was (for messages).
        task: String,
        /// Its last error.
        error: String,
    },
    /// Cancelled by a user.
    Cancelled,
}

/// Prepares run `run_id` of `spec` (inputs inspected, tasks planned, output locked) and marks
/// done every task whose part already exists, so a run resumed with the same id (a restarted
/// coordinator) never redoes finished work. A fresh id finds none.
pub async fn prepare(
    store: &Store,
    spec: JobSpec,
    run_id: String,
    config: SchedulerConfig,
) -> brainfit_job::Result<ScheduledJob> {
    let run = JobRun::prepare(store, spec, run_id).await?;
    let stages = run.tasks.iter().map(brainfit_job::Task::stage).collect();
    let mut scheduler = Scheduler::staged(stages, config);
    let finished = run.finished_tasks(store).await?;
    for &task in &finished {
        scheduler.mark_done(task);
    }
    Ok(ScheduledJob { run: Arc::new(run), scheduler, resumed: finished.len() })
}

/// `state` of `run`'s scheduler as an [`Outcome`], a failed task described for people.
pub fn outcome(run: &JobRun, state: &JobState) -> Outcome {
    match state {
        JobState::Running => Outcome::Running,
        JobState::Succeeded => Outcome::Succeeded,
        JobState::Cancelled => Outcome::Cancelled,
        JobState::Failed { task, error } => Outcome::Failed {
            task: run
                .tasks
                .get(*task)
                .map_or_else(|| format!("#{task}"), |t| t.describe(&run.spec)),
            error: error.clone(),
        },
    }
}

/// Who computed a run, for its `summary.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeInfo {
    /// Worker processes (or in-process workers) that computed tasks.
    pub workers: usize,
    /// Their linear-algebra backends, distinct.
    pub backends: Vec<String>,
    /// Wall-clock seconds of the compute phase.
    pub compute_seconds: f64,
}

/// Merges a succeeded run's parts into its outputs (staged, then published with
/// `summary.json` last) and removes the parts.
pub async fn finish(
    run: &JobRun,
    store: &Store,
    info: &MergeInfo,
) -> brainfit_job::Result<brainfit_job::Summary> {
    let backend = if info.backends.is_empty() {
        // every task was found finished (a resumed run): nobody computed in this process
        "unknown (resumed run)".to_string()
    } else {
        info.backends.join(", ")
    };
    let info = RunInfo { workers: info.workers, compute_seconds: info.compute_seconds, backend };
    run.finish(store, &info).await
}
