//! The crate's single error type.
//!
//! One enum keeps matching simple for callers (the scheduler retries on
//! [`IoError::Store`], a job is rejected on format errors), and every variant carries the
//! URL or file name it concerns so a message alone is enough to locate the problem.

use thiserror::Error;

/// Result alias used throughout `brainfit-io`.
pub type Result<T> = std::result::Result<T, IoError>;

/// Everything that can go wrong while resolving URLs, moving bytes, or decoding formats.
#[derive(Debug, Error)]
pub enum IoError {
    /// The object (file) does not exist.
    #[error("{url}: not found")]
    NotFound {
        /// The URL that was looked up.
        url: String,
    },

    /// The URL uses a scheme this build cannot reach.
    #[error("{url}: unsupported URL scheme '{scheme}'; this build supports {supported}")]
    UnsupportedScheme {
        /// The offending URL.
        url: String,
        /// The scheme found in it (the part before `://`).
        scheme: String,
        /// Human-readable list of supported schemes.
        supported: &'static str,
    },

    /// The URL (or path) could not be turned into an object location.
    #[error("{url}: invalid URL: {reason}")]
    InvalidUrl {
        /// The offending URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A requested byte range does not lie within the object.
    #[error("{url}: cannot read bytes {start}..{end}: {reason}")]
    Range {
        /// The object's URL.
        url: String,
        /// First byte requested.
        start: u64,
        /// One past the last byte requested.
        end: u64,
        /// Why the range cannot be served (e.g. the object's actual size).
        reason: String,
    },

    /// The storage back end failed (permissions, I/O error, ...).
    #[error("{url}: {op} failed: {source}")]
    Store {
        /// The URL the operation was applied to.
        url: String,
        /// The operation, e.g. "get", "put", "list".
        op: &'static str,
        /// The back end's error.
        #[source]
        source: object_store::Error,
    },

    /// A local I/O error outside the object store (e.g. the current directory is unknown).
    #[error("{name}: {what}: {source}")]
    Io {
        /// File or URL concerned.
        name: String,
        /// What was being attempted.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A `.npy` file is malformed or holds something brainfit cannot use.
    #[error("{name}: {reason}")]
    Npy {
        /// File or URL of the `.npy` (for `.npz` members: `archive[member]`).
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// A `.npz` archive is malformed.
    #[error("{name}: {reason}")]
    Npz {
        /// File or URL of the archive.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// A NIfTI file is malformed or uses a feature brainfit does not support.
    #[error("{name}: {reason}")]
    Nifti {
        /// File or URL of the image.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// A mask is unusable, or an image / value vector does not fit a mask.
    #[error("{name}: {reason}")]
    Mask {
        /// File or URL (or description) of the mask or image concerned.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// Array values cannot be converted as requested (e.g. non-integral group labels).
    #[error("{name}: {reason}")]
    Value {
        /// File or URL the values came from.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl IoError {
    /// Whether trying again may succeed: storage and local I/O failures (network, throttling,
    /// a full disk being cleared). Format errors, missing objects and bad URLs stay as they are.
    pub fn is_transient(&self) -> bool {
        matches!(self, IoError::Store { .. } | IoError::Io { .. })
    }
}
