//! The two linear-algebra operations brainfit needs, behind one small trait.
//!
//! Ridge regression needs a general matrix product (GEMM, in the data's precision) and a
//! symmetric eigendecomposition (in f64). The default backend is faer: pure Rust, runtime SIMD
//! dispatch, nothing to install. With the `lapack` cargo feature, [`Lapack`] uses the system's
//! BLAS (`cblas_?gemm`) and LAPACK (`dsyevd` through ndarray-linalg), as clusters with a tuned
//! OpenBLAS or MKL prefer. Both run single-threaded inside a task: brainfit parallelises across
//! tasks, which keeps every task's result independent of thread counts (bit-identical outputs).

use crate::{KernelError, Real, Result};
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};

/// A linear-algebra backend: GEMM in the data's precision and a symmetric eigendecomposition.
pub trait LinalgBackend {
    /// Human-readable name, echoed into `summary.json`.
    const NAME: &'static str;

    /// `c = a · b` (c is overwritten). Shapes: a `[m, k]`, b `[k, n]`, c `[m, n]`; any strides.
    fn gemm<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>, c: ArrayViewMut2<'_, T>);

    /// Eigendecomposition of a symmetric matrix: eigenvalues ascending, eigenvectors as columns.
    fn eigh(a: ArrayView2<'_, f64>) -> Result<(Array1<f64>, Array2<f64>)>;

    /// The eigenvalues alone of a symmetric matrix, ascending (cheaper than [`Self::eigh`]
    /// where the backend can skip the eigenvectors).
    fn eigvalsh(a: ArrayView2<'_, f64>) -> Result<Array1<f64>> {
        Self::eigh(a).map(|(values, _)| values)
    }
}

/// `a · b` as a new array, through the backend.
pub fn matmul<B: LinalgBackend, T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Array2<T> {
    let mut c = Array2::<T>::zeros((a.nrows(), b.ncols()));
    B::gemm(a, b, c.view_mut());
    c
}

fn check_gemm_shapes<T>(a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, c: &ArrayViewMut2<'_, T>) {
    assert_eq!(a.ncols(), b.nrows(), "gemm: inner dimensions differ");
    assert_eq!(c.dim(), (a.nrows(), b.ncols()), "gemm: output shape");
}

/// Pure-Rust backend (faer), the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faer;

#[allow(unsafe_code)] // the only way to view ndarray memory as faer matrices without copying
fn faer_ref<'a, T>(a: &'a ArrayView2<'_, T>) -> faer::MatRef<'a, T> {
    let s = a.strides();
    // SAFETY: the view is valid for its shape and strides for the lifetime of the borrow.
    unsafe { faer::MatRef::from_raw_parts(a.as_ptr(), a.nrows(), a.ncols(), s[0], s[1]) }
}

#[allow(unsafe_code)] // as faer_ref
fn faer_mut<'a, T>(a: &'a mut ArrayViewMut2<'_, T>) -> faer::MatMut<'a, T> {
    let (m, n) = a.dim();
    let s = a.strides().to_owned();
    // SAFETY: the view is valid and uniquely borrowed for its shape and strides.
    unsafe { faer::MatMut::from_raw_parts_mut(a.as_mut_ptr(), m, n, s[0], s[1]) }
}

impl LinalgBackend for Faer {
    const NAME: &'static str = "faer";

    fn gemm<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>, mut c: ArrayViewMut2<'_, T>) {
        check_gemm_shapes(&a, &b, &c);
        if a.ncols() == 0 {
            c.fill(T::zero());
            return;
        }
        faer::linalg::matmul::matmul(
            faer_mut(&mut c),
            faer::Accum::Replace,
            faer_ref(&a),
            faer_ref(&b),
            T::one(),
            faer::Par::Seq,
        );
    }

    fn eigh(a: ArrayView2<'_, f64>) -> Result<(Array1<f64>, Array2<f64>)> {
        let n = a.nrows();
        if n != a.ncols() {
            return Err(KernelError::Shape(format!(
                "eigh of a non-square {n}x{} matrix",
                a.ncols()
            )));
        }
        if n == 0 {
            return Ok((Array1::zeros(0), Array2::zeros((0, 0))));
        }
        let evd = faer_ref(&a)
            .self_adjoint_eigen(faer::Side::Lower)
            .map_err(|e| KernelError::Linalg(format!("eigendecomposition: {e:?}")))?;
        let s = evd.S().column_vector();
        let u = evd.U();
        let values = Array1::from_shape_fn(n, |i| s[i]);
        let vectors = Array2::from_shape_fn((n, n), |(i, j)| u[(i, j)]);
        Ok((values, vectors))
    }

    fn eigvalsh(a: ArrayView2<'_, f64>) -> Result<Array1<f64>> {
        let n = a.nrows();
        if n != a.ncols() {
            return Err(KernelError::Shape(format!(
                "eigvalsh of a non-square {n}x{} matrix",
                a.ncols()
            )));
        }
        if n == 0 {
            return Ok(Array1::zeros(0));
        }
        let values = faer_ref(&a)
            .self_adjoint_eigenvalues(faer::Side::Lower)
            .map_err(|e| KernelError::Linalg(format!("eigenvalues: {e:?}")))?;
        Ok(Array1::from(values))
    }
}

/// Solves the small dense system `m x = b` by Gaussian elimination with partial pivoting, in
/// f64: `None` when a pivot is NaN or at most `tolerance` times the largest diagonal entry of
/// `m` (numerically singular), or the solution is not finite. `O(n³)` and unblocked: for the
/// small systems of extrapolation steps and of the tests' naive references.
pub fn solve_dense(mut m: Array2<f64>, mut b: Array1<f64>, tolerance: f64) -> Option<Array1<f64>> {
    let n = b.len();
    let scale = m.diag().fold(0.0f64, |a, &d| a.max(d.abs()));
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| m[(i, col)].abs().total_cmp(&m[(j, col)].abs()))?;
        let largest = m[(pivot, col)].abs();
        if largest.is_nan() || largest <= tolerance * scale {
            return None;
        }
        for c in 0..n {
            m.swap((col, c), (pivot, c));
        }
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = m[(row, col)] / m[(col, col)];
            for c in col..n {
                m[(row, c)] -= f * m[(col, c)];
            }
            b[row] -= f * b[col];
        }
    }
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|c| m[(row, c)] * b[c]).sum();
        b[row] = (b[row] - tail) / m[(row, row)];
    }
    b.iter().all(|v| v.is_finite()).then_some(b)
}

#[cfg(feature = "lapack")]
pub use lapack::Lapack;

#[cfg(feature = "lapack")]
// The system BLAS is reached through its C ABI: the `extern` block and the calls are unsafe.
#[allow(unsafe_code)]
mod lapack {
    use super::*;
    use std::any::TypeId;

    /// System BLAS/LAPACK backend (`--features lapack`): `cblas_sgemm`/`cblas_dgemm` for GEMM,
    /// `dsyevd` (ndarray-linalg) for the eigendecomposition. Set `OPENBLAS_NUM_THREADS=1`
    /// when several workers share a machine, and `OPENBLAS_CORETYPE` where OpenBLAS misdetects
    /// the CPU.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Lapack;

    const CBLAS_ROW_MAJOR: i32 = 101;
    const CBLAS_NO_TRANS: i32 = 111;
    const CBLAS_TRANS: i32 = 112;

    unsafe extern "C" {
        fn cblas_sgemm(
            layout: i32,
            ta: i32,
            tb: i32,
            m: i32,
            n: i32,
            k: i32,
            alpha: f32,
            a: *const f32,
            lda: i32,
            b: *const f32,
            ldb: i32,
            beta: f32,
            c: *mut f32,
            ldc: i32,
        );
        fn cblas_dgemm(
            layout: i32,
            ta: i32,
            tb: i32,
            m: i32,
            n: i32,
            k: i32,
            alpha: f64,
            a: *const f64,
            lda: i32,
            b: *const f64,
            ldb: i32,
            beta: f64,
            c: *mut f64,
            ldc: i32,
        );
    }

    /// A BLAS operand: (transpose flag, leading dimension), or None if the view's layout is not
    /// expressible (then the caller copies it to standard layout first).
    fn blas_layout<T>(a: &ArrayView2<'_, T>) -> Option<(i32, i32)> {
        let (m, n) = a.dim();
        let s = a.strides();
        if (s[1] == 1 || n <= 1) && s[0] >= n.max(1) as isize {
            Some((CBLAS_NO_TRANS, s[0].max(1) as i32))
        } else if (s[0] == 1 || m <= 1) && s[1] >= m.max(1) as isize {
            Some((CBLAS_TRANS, s[1].max(1) as i32))
        } else {
            None
        }
    }

    impl LinalgBackend for Lapack {
        const NAME: &'static str = "lapack";

        fn gemm<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>, mut c: ArrayViewMut2<'_, T>) {
            check_gemm_shapes(&a, &b, &c);
            let (m, k) = a.dim();
            let n = b.ncols();
            if m == 0 || n == 0 {
                return;
            }
            if k == 0 {
                c.fill(T::zero());
                return;
            }
            let a_own;
            let a = match blas_layout(&a) {
                Some(_) => a,
                None => {
                    a_own = a.as_standard_layout().into_owned();
                    a_own.view()
                }
            };
            let b_own;
            let b = match blas_layout(&b) {
                Some(_) => b,
                None => {
                    b_own = b.as_standard_layout().into_owned();
                    b_own.view()
                }
            };
            let c_standard = c.is_standard_layout();
            let mut c_tmp = if c_standard { None } else { Some(Array2::<T>::zeros((m, n))) };
            let (ta, lda) = blas_layout(&a).expect("standard layout");
            let (tb, ldb) = blas_layout(&b).expect("standard layout");
            {
                let (c_ptr, ldc) = match c_tmp.as_mut() {
                    Some(t) => (t.as_mut_ptr(), n as i32),
                    None => (c.as_mut_ptr(), n.max(1) as i32),
                };
                let (m, n, k) = (m as i32, n as i32, k as i32);
                // SAFETY: shapes checked above; pointers valid for the given leading dimensions.
                unsafe {
                    if TypeId::of::<T>() == TypeId::of::<f32>() {
                        cblas_sgemm(
                            CBLAS_ROW_MAJOR,
                            ta,
                            tb,
                            m,
                            n,
                            k,
                            1.0,
                            a.as_ptr() as *const f32,
                            lda,
                            b.as_ptr() as *const f32,
                            ldb,
                            0.0,
                            c_ptr as *mut f32,
                            ldc,
                        );
                    } else {
                        cblas_dgemm(
                            CBLAS_ROW_MAJOR,
                            ta,
                            tb,
                            m,
                            n,
                            k,
                            1.0,
                            a.as_ptr() as *const f64,
                            lda,
                            b.as_ptr() as *const f64,
                            ldb,
                            0.0,
                            c_ptr as *mut f64,
                            ldc,
                        );
                    }
                }
            }
            if let Some(t) = c_tmp {
                c.assign(&t);
            }
        }

        fn eigh(a: ArrayView2<'_, f64>) -> Result<(Array1<f64>, Array2<f64>)> {
            use ndarray_linalg::{Eigh, UPLO};
            if a.nrows() != a.ncols() {
                return Err(KernelError::Shape(format!(
                    "eigh of a non-square {}x{} matrix",
                    a.nrows(),
                    a.ncols()
                )));
            }
            if a.nrows() == 0 {
                return Ok((Array1::zeros(0), Array2::zeros((0, 0))));
            }
            let owned = a.as_standard_layout().into_owned();
            owned.eigh(UPLO::Lower).map_err(|e| KernelError::Linalg(format!("dsyevd: {e}")))
        }
    }
}

/// The backend this build computes with: faer, or the system LAPACK with `--features lapack`.
#[cfg(not(feature = "lapack"))]
pub type Backend = Faer;
/// The backend this build computes with: faer, or the system LAPACK with `--features lapack`.
#[cfg(feature = "lapack")]
pub type Backend = Lapack;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn naive<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Array2<f64> {
        Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
            (0..a.ncols()).map(|k| a[(i, k)].as_f64() * b[(k, j)].as_f64()).sum()
        })
    }

    fn check_gemm<B: LinalgBackend, T: Real>(tol: f64) {
        let mut rng = Rng::new(7);
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 2), (17, 33, 9), (64, 8, 130), (5, 0, 4)] {
            let a: Array2<T> = rng.normal_array((m, k));
            let b: Array2<T> = rng.normal_array((k, n));
            let want = naive(a.view(), b.view());
            // Standard layout, transposed operands and a transposed output all agree.
            let c = matmul::<B, T>(a.view(), b.view());
            let mut ct = Array2::<T>::zeros((n, m));
            B::gemm(a.view(), b.view(), ct.view_mut().reversed_axes());
            let at = a.t().as_standard_layout().into_owned();
            let c2 = matmul::<B, T>(at.t(), b.view());
            for ((i, j), w) in want.indexed_iter() {
                let scale = 1.0 + (k as f64).sqrt();
                assert!((c[(i, j)].as_f64() - w).abs() <= tol * scale, "{m}x{k}x{n}");
                assert_eq!(c[(i, j)], ct[(j, i)]);
                assert!((c2[(i, j)].as_f64() - w).abs() <= tol * scale);
            }
        }
    }

    fn check_eigh<B: LinalgBackend>() {
        let mut rng = Rng::new(11);
        for n in [1usize, 2, 7, 40] {
            let x: Array2<f64> = rng.normal_array((n + 3, n));
            let g = x.t().dot(&x);
            let (w, v) = B::eigh(g.view()).unwrap();
            for i in 1..n {
                assert!(w[i - 1] <= w[i]);
            }
            let recon = v.dot(&Array2::from_diag(&w)).dot(&v.t());
            let err = (&recon - &g).iter().fold(0.0f64, |m, d| m.max(d.abs()));
            assert!(err < 1e-10 * (1.0 + g.iter().fold(0.0f64, |m, d| m.max(d.abs()))));
            let orth = v.t().dot(&v) - Array2::<f64>::eye(n);
            assert!(orth.iter().all(|d| d.abs() < 1e-12));
            // the eigenvalues alone are those of the full decomposition
            let alone = B::eigvalsh(g.view()).unwrap();
            let scale = 1.0 + w.iter().fold(0.0f64, |m, d| m.max(d.abs()));
            assert!(alone.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-12 * scale));
        }
    }

    #[test]
    fn dense_solve_inverts_and_detects_singular_systems() {
        let mut rng = crate::rng::Rng::new(4);
        let a: Array2<f64> = rng.normal_array((6, 6));
        let m = a.t().dot(&a) + Array2::<f64>::eye(6);
        let x: Array1<f64> = rng.normal_array(6);
        let got = solve_dense(m.clone(), m.dot(&x), 1e-14).unwrap();
        assert!((&got - &x).iter().all(|d| d.abs() < 1e-10));
        let singular = Array2::from_shape_vec((2, 2), vec![1.0, 2.0, 2.0, 4.0]).unwrap();
        assert!(solve_dense(singular, Array1::ones(2), 1e-14).is_none());
    }

    #[test]
    fn faer_gemm_matches_naive() {
        check_gemm::<Faer, f32>(1e-5);
        check_gemm::<Faer, f64>(1e-12);
    }

    #[test]
    fn faer_eigh_reconstructs() {
        check_eigh::<Faer>();
        assert!(Faer::eigh(Array2::<f64>::zeros((2, 3)).view()).is_err());
        assert!(Faer::eigvalsh(Array2::<f64>::zeros((2, 3)).view()).is_err());
    }

    #[cfg(feature = "lapack")]
    #[test]
    fn lapack_matches_naive_and_faer() {
        check_gemm::<Lapack, f32>(1e-5);
        check_gemm::<Lapack, f64>(1e-12);
        check_eigh::<Lapack>();
    }
}
