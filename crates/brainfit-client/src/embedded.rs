//! Embedded runs: the scheduler and N workers in this process.
//!
//! Preparing the run, judging its end and merging go through [`brainfit_coordinator::job`],
//! exactly as the gRPC coordinator does them; the task state machine is the same
//! [`Scheduler`] the coordinator's table holds per job.

use crate::{ClientError, Result};
use brainfit_coordinator::job::{self, MergeInfo, Outcome, ScheduledJob};
use brainfit_io::Store;
use brainfit_job::run::new_run_id;
use brainfit_job::{JobRun, JobSpec};
use brainfit_scheduler::{
    Failure, JobState, Lease, Progress, Scheduler, SchedulerConfig, WorkerId,
};
use brainfit_worker::{Executor, LeaseReply, Transport, WorkerError, run_worker};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of an embedded run.
pub struct RunOptions {
    /// Number of in-process workers.
    pub workers: usize,
    /// Called about ten times a second with the progress (for a progress bar).
    pub on_progress: Option<Box<dyn Fn(Progress) + Send + Sync>>,
}

/// What an embedded run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The summary written to `summary.json`.
    pub summary: brainfit_job::Summary,
    /// Number of tasks.
    pub tasks: usize,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
}

struct Shared {
    scheduler: Mutex<Scheduler>,
    job: Arc<JobRun>,
    started: Instant,
}

impl Shared {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// The in-process transport: direct calls into the shared scheduler.
struct InProcess {
    shared: Arc<Shared>,
    worker: WorkerId,
}

impl Transport for InProcess {
    async fn lease(&self, slots: usize) -> brainfit_worker::Result<LeaseReply> {
        let now = self.shared.now();
        let mut s = self.shared.scheduler.lock().expect("scheduler lock");
        if *s.state() != JobState::Running {
            return Ok(LeaseReply::Shutdown);
        }
        let leases = s
            .lease(self.worker, slots, now)
            .ok_or_else(|| WorkerError::Transport("worker expired".into()))?;
        Ok(if leases.is_empty() {
            LeaseReply::Idle
        } else {
            LeaseReply::Tasks(
                leases
                    .into_iter()
                    .map(|l| {
                        brainfit_worker::Lease::new(self.shared.job.clone(), l.task, l.attempt)
                    })
                    .collect(),
            )
        })
    }

    async fn complete(&self, a: &brainfit_worker::Lease) -> brainfit_worker::Result<()> {
        let now = self.shared.now();
        let lease = Lease { task: a.task, attempt: a.attempt };
        self.shared.scheduler.lock().expect("scheduler lock").complete(self.worker, lease, now);
        Ok(())
    }

    async fn fail(
        &self,
        a: &brainfit_worker::Lease,
        error: String,
        permanent: bool,
    ) -> brainfit_worker::Result<()> {
        let now = self.shared.now();
        let lease = Lease { task: a.task, attempt: a.attempt };
        let failure = Failure { error, permanent };
        self.shared.scheduler.lock().expect("scheduler lock").fail(
            self.worker,
            lease,
            &failure,
            now,
        );
        Ok(())
    }

    async fn release(&self, a: &brainfit_worker::Lease) -> brainfit_worker::Result<()> {
        let now = self.shared.now();
        let lease = Lease { task: a.task, attempt: a.attempt };
        self.shared.scheduler.lock().expect("scheduler lock").release(self.worker, lease, now);
        Ok(())
    }
}

/// Runs a job embedded: plan, compute with `options.workers` workers, merge, write outputs.
pub async fn run_job(store: &Store, spec: JobSpec, options: RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let ScheduledJob { run: job, scheduler, .. } = job::prepare(
        store,
        spec,
        new_run_id(),
        SchedulerConfig { lease_timeout: u64::MAX / 4, max_attempts: 3 },
    )
    .await?;
    let shared = Arc::new(Shared { scheduler: Mutex::new(scheduler), job: job.clone(), started });
    match compute_and_merge(store, &shared, &options).await {
        Ok(summary) => Ok(RunReport {
            summary,
            tasks: job.tasks.len(),
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            // whatever went wrong, the parts go and the output is free again
            if let Err(cleanup) = job.abandon(store).await {
                tracing::warn!(run = %job.id, "cannot remove the parts and lock of a failed run: {cleanup}");
            }
            Err(e)
        }
    }
}

/// Runs a prepared job's tasks on `options.workers` in-process workers, then merges.
async fn compute_and_merge(
    store: &Store,
    shared: &Arc<Shared>,
    options: &RunOptions,
) -> Result<brainfit_job::Summary> {
    let job = shared.job.clone();
    let executor = Arc::new(Executor::new(store.clone()));
    let workers = options.workers.max(1);
    let mut handles = Vec::new();
    for _ in 0..workers {
        let worker = shared.scheduler.lock().expect("scheduler lock").register(shared.now());
        let transport = InProcess { shared: shared.clone(), worker };
        let (executor, store) = (executor.clone(), store.clone());
        handles.push(tokio::spawn(async move { run_worker(&transport, executor, store).await }));
    }
    let compute_started = Instant::now();
    // workers return once the job has ended; until then, report progress every 100 ms
    let report_progress = || {
        if let Some(cb) = &options.on_progress {
            cb(shared.scheduler.lock().expect("scheduler lock").progress());
        }
    };
    let mut workers_done = std::pin::pin!(futures::future::join_all(handles));
    let results = loop {
        report_progress();
        tokio::select! {
            results = &mut workers_done => break results,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    report_progress();
    for r in results {
        r.map_err(|e| WorkerError::Panic(e.to_string()))??;
    }
    let compute_seconds = compute_started.elapsed().as_secs_f64();
    let state = shared.scheduler.lock().expect("scheduler lock").state().clone();
    match job::outcome(&job, &state) {
        Outcome::Succeeded => {
            let backends = vec![brainfit_worker::BACKEND.to_string()];
            let info = MergeInfo { workers, backends, compute_seconds };
            Ok(job::finish(&job, store, &info).await?)
        }
        Outcome::Failed { task, error } => Err(ClientError::TaskFailed { task, error }),
        Outcome::Cancelled => Err(ClientError::Cancelled),
        Outcome::Running => unreachable!("the loop above exits only when the job has ended"),
    }
}
