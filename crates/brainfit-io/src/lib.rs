//! brainfit's input/output layer.
//!
//! Every byte brainfit reads or writes goes through this crate, so that the rest of the
//! workspace deals in arrays and URLs rather than files and formats:
//!
//! * [`store`] resolves URL strings (bare local paths, `file://`, `memory://`) to
//!   `object_store` back ends and offers whole-object and range reads, atomic overwrites,
//!   create-only puts (the first finished task attempt wins), listing and prefix deletes.
//! * [`npy`] parses and writes NumPy `.npy` files and reads `.npz` archives, with its own
//!   small parser (any byte order, C or Fortran order on disk, versions 1.0–3.0).
//! * [`nifti`] reads and writes single-file NIfTI-1 images (optionally gzipped) with
//!   nibabel's affine and scaling semantics, and turns mask images into the voxel order
//!   `nilearn.masking.apply_mask` uses.
//!
//! All failures are reported through the single error type [`IoError`], whose messages
//! always name the URL or file concerned and say what is wrong.

#![warn(missing_docs)]

pub mod error;
pub mod nifti;
pub mod npy;
pub mod store;

pub use error::{IoError, Result};

/// Installs rustls' ring crypto provider as the process default, once: TLS for object
/// storage here and for gRPC (brainfit-proto) share this one installation. Idempotent.
pub fn install_crypto_provider() {
    static CRYPTO: std::sync::Once = std::sync::Once::new();
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// This machine's name (`/etc/hostname`, else `$HOSTNAME`, else `"unknown"`): recorded in
/// lock objects and worker names so that a refusal can say who holds what.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Default of [`max_array_bytes`]: 4 GiB.
pub const DEFAULT_MAX_ARRAY_BYTES: usize = 4 << 30;

/// The most bytes one input array may take once decoded (as float64): the memory budget that
/// sizes from file headers are checked against before anything is allocated or decompressed.
/// `BRAINFIT_MAX_ARRAY_BYTES` sets it (bytes); default [`DEFAULT_MAX_ARRAY_BYTES`].
pub fn max_array_bytes() -> usize {
    std::env::var("BRAINFIT_MAX_ARRAY_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_ARRAY_BYTES)
}

/// Checks that `count` values fit [`max_array_bytes`] as float64.
pub(crate) fn check_budget(count: usize, what: &str) -> std::result::Result<(), String> {
    let budget = max_array_bytes();
    match count.checked_mul(8) {
        Some(bytes) if bytes <= budget => Ok(()),
        _ => Err(format!(
            "{what} declares {count} values ({:.1} GB as float64), above the memory budget of {:.1} GB (BRAINFIT_MAX_ARRAY_BYTES)",
            count as f64 * 8.0 / 1e9,
            budget as f64 / 1e9
        )),
    }
}
pub use nifti::{Mask, Nifti, parse_nifti, parse_nifti_dims, try_write_nifti_f32, write_nifti_f32};
pub use npy::{
    NpyArray, NpyData, NpyElement, NpyHeader, check_npy_dtype, npy_header, npz_headers, parse_npy,
    parse_npy_header, parse_npz, with_npz_member, write_npy,
};
pub use store::{
    BlockingReader, COALESCE_GAP, ObjectWriter, PutOutcome, ReadCount, Store, bytes_read,
    canonical_url, counting_reads, is_within, join_url, parent_url, resolve_relative,
};
