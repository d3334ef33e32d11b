//! brainfit's client side: running a job embedded (coordinator and workers in one process),
//! talking to a remote coordinator over gRPC ([`remote`]), the synthetic demo study, and the
//! HTML report of a finished job ([`report`]).
//!
//! An embedded run goes through exactly the pieces a distributed run uses — the plan, the
//! scheduler's state machine, the worker loop, create-only partial results, the merge — with
//! in-process calls as the transport, so both give bit-identical outputs.

pub mod demo;
pub mod embedded;
pub mod remote;
pub mod report;

pub use embedded::{RunOptions, RunReport, run_job};
pub use remote::Remote;

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The job or its inputs are invalid, or merging failed.
    #[error(transparent)]
    Job(#[from] brainfit_job::JobError),
    /// Reading or writing an object failed.
    #[error(transparent)]
    Io(#[from] brainfit_io::IoError),
    /// A worker failed outside a task.
    #[error(transparent)]
    Worker(#[from] brainfit_worker::WorkerError),
    /// A task failed on every attempt.
    #[error("task {task} failed: {error}")]
    TaskFailed {
        /// What the task was.
        task: String,
        /// Its error.
        error: String,
    },
    /// The run was cancelled.
    #[error("the run was cancelled")]
    Cancelled,
    /// A remote coordinator could not be reached, refused, or answered with an error.
    #[error("{0}")]
    Remote(String),
    /// A report figure could not be drawn.
    #[error("report: {0}")]
    Report(#[from] brainfit_report::ReportError),
}

/// Result alias of the client crate.
pub type Result<T> = std::result::Result<T, ClientError>;
