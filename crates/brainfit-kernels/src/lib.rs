//! brainfit's math, free of I/O and async.
//!
//! Everything a worker computes lives here as plain functions over `ndarray` views, so that each
//! kernel can be tested against a naive, obviously correct implementation on seeded random data.
//! One generic code path serves `f32` and `f64` data ([`Real`]); quantities that lose precision in
//! `f32` (Gram matrices, eigendecompositions, means and sums of squares) are accumulated in `f64`.
//!
//! Linear algebra goes through the small [`linalg::LinalgBackend`] trait: pure-Rust faer by
//! default, a system LAPACK/BLAS through ndarray-linalg with the `lapack` cargo feature.

pub mod banded;
pub mod cka;
pub mod compare;
pub mod compress;
pub mod cv;
pub mod encoder;
pub mod group;
pub mod identification;
pub mod image;
pub mod lasso;
pub mod linalg;
pub mod logistic;
pub mod permutation;
pub mod preprocess;
pub mod rdm;
pub mod reliability;
pub mod ridge;
pub mod rng;
pub mod rsa_fit;
pub mod score;
pub mod searchlight;

use std::fmt::Debug;

/// Errors of the math kernels: inputs that cannot be computed on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    /// Two inputs disagree in a dimension they must share.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A parameter is outside the range the kernel accepts.
    #[error("invalid parameter: {0}")]
    Parameter(String),
    /// A cross-validation split cannot be made from the data.
    #[error("invalid cross-validation: {0}")]
    CrossValidation(String),
    /// The linear-algebra backend failed (e.g. an eigendecomposition did not converge).
    #[error("linear algebra failed: {0}")]
    Linalg(String),
}

/// Result alias of the kernels crate.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Parses a method's job-file spelling through its serde derive, so each enum has one table
/// of spellings; the error names the value and lists the choices.
fn parse_spelling<M: serde::de::DeserializeOwned>(s: &str) -> Result<M> {
    use serde::de::IntoDeserializer;
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = s.into_deserializer();
    M::deserialize(de).map_err(|e| KernelError::Parameter(e.to_string()))
}

/// The floating-point element types brainfit computes on: `f32` and `f64`.
///
/// The bound on faer's `RealField` lets one generic GEMM serve both; `as_f64`/`from_f64` are the
/// explicit casts used where accumulation happens in `f64`.
pub trait Real:
    num_traits::Float
    + ndarray::ScalarOperand
    + ndarray::LinalgScalar
    + faer::traits::RealField
    + Default
    + Debug
    + Send
    + Sync
    + 'static
{
    /// numpy's dtype string for this type (`"<f4"`, `"<f8"`).
    const NPY_DTYPE: &'static str;
    /// Cast from f64 (rounding to nearest for f32).
    fn from_f64(x: f64) -> Self;
    /// Widen to f64 (exact).
    fn as_f64(self) -> f64;
}

impl Real for f32 {
    const NPY_DTYPE: &'static str = "<f4";
    #[inline]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    const NPY_DTYPE: &'static str = "<f8";
    #[inline]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
}
