//! brainfit's worker: pulls tasks, computes them, stores each result once, reports back.
//!
//! The worker loop ([`run_worker`]) talks to a scheduler only through the [`Transport`] trait:
//! in-process channels in an embedded run, gRPC ([`grpc`]) in a distributed one. A loop can be
//! drained ([`run_worker_until`]): it finishes the task it is running, hands back the ones it
//! has not started, and returns. Compute runs on blocking
//! threads so that I/O and heartbeats never starve, and loaded inputs and per-feature-space
//! decompositions are cached per process ([`Executor`]) so voxel chunks of the same space reuse
//! them.

pub mod execute;
pub mod grpc;
mod rsa;

pub use execute::Executor;

use brainfit_io::{PutOutcome, Store};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Errors of the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A task's computation or its inputs failed.
    #[error(transparent)]
    Job(#[from] brainfit_job::JobError),
    /// Storing a result failed.
    #[error(transparent)]
    Io(#[from] brainfit_io::IoError),
    /// Talking to the scheduler failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The coordinator refuses this worker (wrong token): stop rather than retry.
    #[error("{0}")]
    Refused(String),
    /// A compute thread panicked (a bug): reported as the task's failure.
    #[error("task panicked: {0}")]
    Panic(String),
    /// Building a cached input failed earlier in this process (the same error again).
    #[error("{message}")]
    Cached {
        /// The original error's message.
        message: String,
        /// Whether the original error was transient.
        transient: bool,
    },
}

impl WorkerError {
    /// Whether another attempt may succeed: storage and transport failures. An input that is
    /// wrong, or a panic (a bug), fails every attempt alike, so its task is not retried.
    pub fn is_transient(&self) -> bool {
        match self {
            WorkerError::Job(e) => e.is_transient(),
            WorkerError::Io(e) => e.is_transient(),
            WorkerError::Transport(_) => true,
            WorkerError::Refused(_) | WorkerError::Panic(_) => false,
            WorkerError::Cached { transient, .. } => *transient,
        }
    }
}

/// Result alias of the worker crate.
pub type Result<T> = std::result::Result<T, WorkerError>;

/// Everything a worker needs to know about a job to compute its tasks: the prepared run.
pub type JobContext = brainfit_job::JobRun;

/// A task leased to this worker.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The job.
    pub job: Arc<JobContext>,
    /// Task index in the job's plan.
    pub task: usize,
    /// Attempt number to report back.
    pub attempt: u32,
}

/// The scheduler's answer to a lease request.
#[derive(Debug)]
pub enum LeaseReply {
    /// Tasks to run.
    Tasks(Vec<Assignment>),
    /// Nothing to do right now; ask again later.
    Idle,
    /// No more work will come: stop.
    Shutdown,
}

/// How a worker talks to its scheduler.
pub trait Transport: Send + Sync {
    /// Asks for up to `slots` tasks; doubles as a heartbeat.
    fn lease(&self, slots: usize) -> impl Future<Output = Result<LeaseReply>> + Send;
    /// Reports that an assignment's result is stored.
    fn complete(&self, a: &Assignment) -> impl Future<Output = Result<()>> + Send;
    /// Reports that an assignment failed.
    fn fail(
        &self,
        a: &Assignment,
        error: String,
        permanent: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Hands an assignment back unstarted (a draining worker); it is not counted as an attempt.
    fn release(&self, a: &Assignment) -> impl Future<Output = Result<()>> + Send;
}

/// Pulls and runs tasks one at a time until the transport says to stop.
pub async fn run_worker<T: Transport>(
    transport: &T,
    executor: Arc<Executor>,
    store: Store,
) -> Result<()> {
    let (_never, stop) = tokio::sync::watch::channel(false);
    run_worker_until(transport, executor, store, stop).await
}

/// [`run_worker`] that drains once `stop` turns true: the running task is finished and
/// reported, leased tasks not yet started are handed back, and no new ones are asked for.
pub async fn run_worker_until<T: Transport>(
    transport: &T,
    executor: Arc<Executor>,
    store: Store,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        match transport.lease(1).await? {
            LeaseReply::Shutdown => return Ok(()),
            LeaseReply::Idle => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = async {
                        if stop.wait_for(|s| *s).await.is_err() {
                            std::future::pending::<()>().await // no sender: never stops
                        }
                    } => {}
                }
            }
            LeaseReply::Tasks(assignments) => {
                let mut assignments = assignments.into_iter();
                while let Some(a) = assignments.next() {
                    if *stop.borrow() {
                        transport.release(&a).await?;
                        for a in assignments.by_ref() {
                            transport.release(&a).await?;
                        }
                        return Ok(());
                    }
                    match run_one(&a, &executor, &store).await {
                        Ok(()) => transport.complete(&a).await?,
                        Err(e) => {
                            let permanent = !e.is_transient();
                            tracing::warn!(task = %a.job.tasks[a.task].key(), attempt = a.attempt, permanent, "task failed: {e}");
                            if !permanent {
                                // back off before the retry is queued
                                let wait = 250 * u64::from(a.attempt).min(8);
                                tokio::time::sleep(Duration::from_millis(wait)).await;
                            }
                            transport.fail(&a, e.to_string(), permanent).await?
                        }
                    }
                }
            }
        }
    }
}

/// Computes one assignment and stores its result with a create-only put: if another attempt
/// already stored it, that (identical) result stands.
async fn run_one(a: &Assignment, executor: &Arc<Executor>, store: &Store) -> Result<()> {
    let (job, task, exec) = (a.job.clone(), a.task, executor.clone());
    let part = tokio::task::spawn_blocking(move || exec.execute(&job, task))
        .await
        .map_err(|e| WorkerError::Panic(e.to_string()))??;
    let url = a.job.part_url(a.task);
    match store.put_create(&url, part.encode().into()).await? {
        PutOutcome::Created | PutOutcome::AlreadyExists => Ok(()),
    }
}

#[cfg(test)]
mod drain_tests;
