//! brainfit's job model: the job file, its checked spec, the plan of tasks, partial results
//! and the merge into the output layout of DESIGN.md.
//!
//! The flow is `file` (TOML text) -> [`spec::JobSpec`] (checked) -> [`inputs::inspect`] (shapes)
//! -> [`plan::plan`] (tasks) -> workers produce [`part::Part`]s -> [`merge::write_outputs`] (staged) ->
//! [`outputs::StagedOutputs::publish`].

pub mod extract;
pub mod file;
pub mod group;
pub mod inputs;
pub mod merge;
pub mod outputs;
pub mod part;
pub mod plan;
pub mod prepare;
pub mod run;
pub mod spec;
pub mod stats;
pub mod summary;

pub use inputs::{Inventory, Matrix, SpaceRef};
pub use part::Part;
pub use plan::{Analysis, Task, plan};
pub use run::JobRun;
pub use spec::JobSpec;
pub use summary::Summary;

impl JobError {
    /// Whether trying again may succeed (storage failures, a part being written); wrong
    /// inputs, job files and parameters fail the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            JobError::Io(e) => e.is_transient(),
            JobError::Corrupt(_) => true,
            _ => false,
        }
    }
}

/// Errors of the job model.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job file is not valid TOML or has unknown keys / wrong types.
    #[error("{file}: {message}")]
    Parse {
        /// Job file name.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The job file parses but its values do not fit together.
    #[error("{file}: {message}")]
    Invalid {
        /// Job file name.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// An input file has the wrong shape or content.
    #[error("{url}: {message}")]
    Input {
        /// The input's URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// Another run holds the output directory.
    #[error(
        "{output} is in use by {holder}: two runs into one output would mix their results. Wait for it, choose another output, or, if that run is dead, remove {lock} (brainfit run --break-lock)"
    )]
    Locked {
        /// The output prefix.
        output: String,
        /// Who holds it, from the lock object.
        holder: String,
        /// The lock object's URL.
        lock: String,
    },
    /// A partial result or cached input is unusable.
    #[error("corrupt partial result: {0}")]
    Corrupt(String),
    /// Reading or writing an object failed.
    #[error(transparent)]
    Io(#[from] brainfit_io::IoError),
    /// A kernel rejected its input.
    #[error(transparent)]
    Kernel(#[from] brainfit_kernels::KernelError),
}

/// Result alias of the job crate.
pub type Result<T> = std::result::Result<T, JobError>;
