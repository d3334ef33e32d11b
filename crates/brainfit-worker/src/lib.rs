//! brainfit's worker: pulls tasks, computes them, stores each result once, reports back.
//!
//! The worker loop ([`run_worker`]) talks to a scheduler only through the [`Transport`] trait:
//! in-process channels in an embedded run, gRPC ([`grpc`]) in a distributed one. A loop can be
//! drained ([`run_worker_until`]): it finishes the task it is running, hands back the ones it
//! has not started, and returns. A task's inputs are read on the async runtime, then it is
//! computed on a blocking thread, so I/O and heartbeats never starve; loaded inputs and
//! per-feature-space decompositions are cached per process ([`Executor`]) so voxel chunks of
//! the same space reuse them.

pub mod execute;
mod extract;
mod group;
pub mod grpc;
pub mod metrics;
mod rsa;
mod rsa_models;

pub use execute::Executor;

/// The linear-algebra backend this worker computes with (recorded in `summary.json`).
pub const BACKEND: &str =
    <brainfit_kernels::linalg::Backend as brainfit_kernels::linalg::LinalgBackend>::NAME;

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
    /// The coordinator no longer wants this task (its job was cancelled, or the task was
    /// leased again elsewhere): it stopped at a checkpoint and is not reported.
    #[error("abandoned: the coordinator no longer wants this task")]
    Abandoned,
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
            WorkerError::Transport(_) | WorkerError::Abandoned => true,
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
pub struct Lease {
    /// The job.
    pub job: Arc<JobContext>,
    /// Task index in the job's plan.
    pub task: usize,
    /// Attempt number to report back.
    pub attempt: u32,
    /// Raised when the coordinator says to stop this task.
    pub abandon: Abandon,
}

impl Lease {
    /// A fresh assignment of `task` (attempt `attempt`) of `job`.
    pub fn new(job: Arc<JobContext>, task: usize, attempt: u32) -> Self {
        Lease { job, task, attempt, abandon: Abandon::default() }
    }
}

/// A task's stop flag: raised by the transport when the coordinator answers a heartbeat with
/// this lease among those to abandon (its job was cancelled, or the task was leased again).
/// The computation looks at it at checkpoints — before it starts, between permutations,
/// before its part is stored — and ends with [`WorkerError::Abandoned`], which is not
/// reported. (A kernel call in progress runs to its end: one permutation's fit at most.)
#[derive(Debug, Clone, Default)]
pub struct Abandon(Arc<std::sync::atomic::AtomicBool>);

impl Abandon {
    /// Asks the task to stop.
    pub fn raise(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the task was asked to stop.
    pub fn is_raised(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `Err(Abandoned)` once raised.
    pub fn check(&self) -> Result<()> {
        if self.is_raised() { Err(WorkerError::Abandoned) } else { Ok(()) }
    }
}

/// The scheduler's answer to a lease request.
#[derive(Debug)]
pub enum LeaseReply {
    /// Tasks to run.
    Tasks(Vec<Lease>),
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
    fn complete(&self, a: &Lease) -> impl Future<Output = Result<()>> + Send;
    /// Reports that an assignment failed.
    fn fail(
        &self,
        a: &Lease,
        error: String,
        permanent: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Hands an assignment back unstarted (a draining worker); it is not counted as an attempt.
    fn release(&self, a: &Lease) -> impl Future<Output = Result<()>> + Send;
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
                            std::future::pending::<()>().await; // no sender: never stops
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
                    let started = std::time::Instant::now();
                    let outcome = run_one(&a, &executor, &store).await;
                    let metrics = executor.metrics();
                    let ended = match &outcome {
                        Ok(()) => "done",
                        Err(WorkerError::Abandoned) => "abandoned",
                        Err(_) => "failed",
                    };
                    metrics.tasks.with_label_values(&[ended]).inc();
                    metrics.task_seconds.observe(started.elapsed().as_secs_f64());
                    match outcome {
                        Ok(()) => transport.complete(&a).await?,
                        Err(WorkerError::Abandoned) => {
                            tracing::info!(task = %a.job.tasks[a.task].key(), attempt = a.attempt, "abandoned at the coordinator's request");
                        }
                        Err(e) => {
                            let permanent = !e.is_transient();
                            tracing::warn!(task = %a.job.tasks[a.task].key(), attempt = a.attempt, permanent, "task failed: {e}");
                            if !permanent {
                                // back off before the retry is queued
                                let wait = 250 * u64::from(a.attempt).min(8);
                                tokio::time::sleep(Duration::from_millis(wait)).await;
                            }
                            transport.fail(&a, e.to_string(), permanent).await?;
                        }
                    }
                }
            }
        }
    }
}

/// Computes one assignment and stores its result with a create-only put: if another attempt
/// already stored it, that (identical) result stands.
async fn run_one(a: &Lease, executor: &Arc<Executor>, store: &Store) -> Result<()> {
    a.abandon.check()?;
    let part = executor.execute(a.job.clone(), a.task, a.abandon.clone()).await?;
    // an abandoned task stores nothing: a cancelled run's parts are being removed
    a.abandon.check()?;
    let url = a.job.part_url(a.task);
    match store.put_create(&url, part.encode().into()).await? {
        PutOutcome::Created | PutOutcome::AlreadyExists => Ok(()),
    }
}

#[cfg(test)]
mod drain_tests;
