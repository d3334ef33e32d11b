//! RDM comparisons through the conditions' second-moment (kernel) matrices: rsatoolbox's
//! whitened correlation (`corr_cov`) and Bures similarity (`bures`), and centred kernel
//! alignment (CKA, Kornblith et al. 2019) with a linear or an RBF kernel, biased or unbiased.
//!
//! All of them read a condensed RDM `d` of `n` conditions as the full `n × n` matrix `D` with a
//! zero diagonal. One helper serves the linear ones: [`second_moment`], `G = -½ H D H`
//! (`H = I - 11ᵀ/n`), the double-centred second-moment matrix, which is exactly `X Xᵀ` of the
//! centred patterns when `D` holds squared Euclidean distances (brainfit's `euclidean` RDM is
//! the squared distance divided by the number of channels: a scale, which every method here
//! cancels). The definitions, references and NaN policy are in [`crate::compare`]'s header;
//! these are reached through [`crate::compare::compare`].
//!
//! Costs per comparison: O(n²) for `corr_cov` without NaN and for CKA; `corr_cov` with NaN
//! solves one `n × n` system per RDM (O(n³)); `bures` needs two symmetric eigendecompositions
//! (O(n³)).

use crate::compare::CompareMethod;
use crate::linalg::{Backend, LinalgBackend, matmul, solve_dense};
use crate::rdm::n_conditions_from_condensed;
use crate::{KernelError, Result};
use ndarray::{Array1, Array2, ArrayView1, Axis};

/// The double-centred second-moment matrix `G = -½ H D H` of a condensed RDM (`n × n`, with `D`
/// the square RDM, zero diagonal): `X Xᵀ` of the condition-centred patterns when the RDM holds
/// squared Euclidean distances, which is what `corr_cov`, `bures` and linear CKA compare.
///
/// Errors: `v`'s length is not `n(n-1)/2` for some `n ≥ 2`. NaN dissimilarities spread NaN.
pub fn second_moment(v: ArrayView1<'_, f64>) -> Result<Array2<f64>> {
    let n = n_conditions_from_condensed(v.len())?;
    let x: Vec<f64> = v.iter().copied().collect();
    Ok(second_moment_of(&x, n, 0.0))
}

/// `-½ H (D - shift·(11ᵀ - I)) H`: the second moment of the RDM `v - shift` (condensed, `n`
/// conditions, NaN-free).
fn second_moment_of(v: &[f64], n: usize, shift: f64) -> Array2<f64> {
    let mut g = square_map(v, n, 0.0, |d| -0.5 * (d - shift));
    centre(&mut g);
    g
}

/// The square symmetric matrix with `f(v[pair(i, j)])` off the diagonal and `diag` on it.
fn square_map(v: &[f64], n: usize, diag: f64, f: impl Fn(f64) -> f64) -> Array2<f64> {
    debug_assert_eq!(v.len(), n * (n - 1) / 2);
    let mut k = Array2::<f64>::from_elem((n, n), diag);
    let mut q = v.iter();
    for i in 0..n {
        for j in i + 1..n {
            let x = f(*q.next().expect("length checked"));
            k[(i, j)] = x;
            k[(j, i)] = x;
        }
    }
    k
}

/// Double centring of a symmetric matrix in place, `H K H`: subtract row and column means and
/// add the grand mean (Kornblith et al.'s `center_gram(gram, unbiased=False)`).
fn centre(k: &mut Array2<f64>) {
    let means = k.mean_axis(Axis(0)).expect("n > 0");
    let grand = means.mean().expect("n > 0");
    for ((i, j), x) in k.indexed_iter_mut() {
        *x -= means[i] + means[j] - grand;
    }
}

/// The U-centring of Song et al. (2012) in place (Kornblith et al.'s `center_gram(gram,
/// unbiased=True)`): zero the diagonal, means = row sums / (n - 2), less their sum over
/// 2(n - 1); subtract row and column means; zero the diagonal. The cosine of two U-centred
/// matrices is the ratio of unbiased HSIC estimates. Needs `n ≥ 3`.
fn u_centre(k: &mut Array2<f64>) {
    let n = k.nrows();
    k.diag_mut().fill(0.0);
    let mut means = k.sum_axis(Axis(0)) / (n - 2) as f64;
    let shift = means.sum() / (2 * (n - 1)) as f64;
    means -= shift;
    for ((i, j), x) in k.indexed_iter_mut() {
        *x -= means[i] + means[j];
    }
    k.diag_mut().fill(0.0);
}

/// `<A, B>_F / (|A|_F |B|_F)`; NaN when either norm is zero or not finite.
fn frobenius_cosine(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    let norm = (aa * bb).sqrt();
    if norm > 0.0 && norm.is_finite() { ab / norm } else { f64::NAN }
}

/// Compares condensed RDMs `a`, `b` of equal length with a method that needs the conditions'
/// structure ([`CompareMethod::needs_conditions`]). See [`crate::compare`]'s header for the NaN
/// policy. Errors: a length that is not a condensed RDM's (fewer than 3 values: NaN).
pub(crate) fn compare_conditions(
    a: ArrayView1<'_, f64>,
    b: ArrayView1<'_, f64>,
    method: CompareMethod,
) -> Result<f64> {
    debug_assert!(method.needs_conditions() && a.len() == b.len());
    if a.len() < 3 {
        return Ok(f64::NAN);
    }
    let n = n_conditions_from_condensed(a.len())?;
    let x: Vec<f64> = a.iter().copied().collect();
    let y: Vec<f64> = b.iter().copied().collect();
    if method == CompareMethod::CorrCov {
        return Ok(corr_cov(&x, &y, n));
    }
    if x.iter().chain(&y).any(|v| !v.is_finite()) {
        return Ok(f64::NAN);
    }
    Ok(match method {
        CompareMethod::Bures => bures(&x, &y, n),
        CompareMethod::CkaLinear => cka(&x, &y, n, Kernel::Linear, false),
        CompareMethod::CkaLinearUnbiased => cka(&x, &y, n, Kernel::Linear, true),
        CompareMethod::CkaRbf => cka(&x, &y, n, Kernel::Rbf, false),
        CompareMethod::CkaRbfUnbiased => cka(&x, &y, n, Kernel::Rbf, true),
        m => {
            return Err(KernelError::Parameter(format!(
                "{} does not compare second-moment matrices",
                m.as_str()
            )));
        }
    })
}

/// rsatoolbox's `corr_cov` (`sigma_k=None`): the RDM vector less its mean, double-centred as a
/// second-moment matrix, compared by the Frobenius cosine (off-diagonal entries weigh twice,
/// rsatoolbox's `√2`). Pairs where either RDM is NaN are left out of both, and the row and
/// column effects are then removed by rsatoolbox's weighted least-squares projection.
fn corr_cov(a: &[f64], b: &[f64], n: usize) -> f64 {
    let valid: Vec<bool> = a.iter().zip(b).map(|(u, v)| !u.is_nan() && !v.is_nan()).collect();
    let n_valid = valid.iter().filter(|&&v| v).count();
    if n_valid < 3 {
        return f64::NAN;
    }
    let mean_of = |v: &[f64]| {
        v.iter().zip(&valid).filter(|(_, ok)| **ok).map(|(x, _)| x).sum::<f64>() / n_valid as f64
    };
    let constant = |v: &[f64]| {
        let mut it = v.iter().zip(&valid).filter(|(_, ok)| **ok).map(|(x, _)| *x);
        let first = it.next();
        it.all(|x| Some(x) == first)
    };
    if constant(a) || constant(b) {
        return f64::NAN; // centred, nothing is left (rounding aside)
    }
    let (ma, mb) = (mean_of(a), mean_of(b));
    if n_valid == a.len() {
        return frobenius_cosine(&second_moment_of(a, n, ma), &second_moment_of(b, n, mb));
    }
    match (projected(a, ma, &valid, n), projected(b, mb, &valid, n)) {
        (Some(ga), Some(gb)) => frobenius_cosine(&ga, &gb),
        _ => f64::NAN,
    }
}

/// rsatoolbox's `_cov_weighting` with missing entries (its `else` branch), as a square matrix
/// whose missing entries are zero: `w` = `-½ (v - mean)` on the valid pairs and 0 on the
/// diagonal; design rows `e_i + e_j` (pairs, weight ½) and `e_i` (diagonal, weight 1);
/// `β = (Xᵀ W X)⁻¹ Xᵀ w`; residual `w - W X β`. With every pair valid this is the double
/// centring (tested). None when the system is singular (it is not: `Xᵀ W X ⪰ I`) or the input
/// is not finite.
fn projected(v: &[f64], mean: f64, valid: &[bool], n: usize) -> Option<Array2<f64>> {
    let mut c = Array2::<f64>::eye(n);
    let mut r = Array1::<f64>::zeros(n);
    let mut g = Array2::<f64>::zeros((n, n));
    let mut q = 0;
    for i in 0..n {
        for j in i + 1..n {
            if valid[q] {
                let w = -0.5 * (v[q] - mean);
                g[(i, j)] = w;
                g[(j, i)] = w;
                r[i] += w;
                r[j] += w;
                c[(i, i)] += 0.5;
                c[(j, j)] += 0.5;
                c[(i, j)] += 0.5;
                c[(j, i)] += 0.5;
            }
            q += 1;
        }
    }
    let beta = solve_dense(c, r, 1e-12)?;
    let mut q = 0;
    for i in 0..n {
        g[(i, i)] = -beta[i];
        for j in i + 1..n {
            if valid[q] {
                let x = g[(i, j)] - 0.5 * (beta[i] + beta[j]);
                g[(i, j)] = x;
                g[(j, i)] = x;
            }
            q += 1;
        }
    }
    Some(g)
}

/// Eigenvalues of magnitude at most this, for matrices of `n` rows whose rounding errors are of
/// order `ε · scale`, are rounding noise: numpy's `matrix_rank` tolerance, `S.max() * n * eps`.
fn rounding_level(n: usize, scale: f64) -> f64 {
    n as f64 * f64::EPSILON * scale
}

/// rsatoolbox's Bures similarity: `Σ sqrt(λ(A½ B A½)⁺) / sqrt(tr A · tr B)` of the second
/// moments `A`, `B` (its `_bures_similarity_first_way`), eigenvalues of `A` and of
/// `A½ B A½` at rounding level taken as zero (rsatoolbox takes their square roots, which
/// adds up to ~1e-7 of noise). NaN when `tr A · tr B ≤ 0` or an eigendecomposition fails.
fn bures(a: &[f64], b: &[f64], n: usize) -> f64 {
    let ga = second_moment_of(a, n, 0.0);
    let gb = second_moment_of(b, n, 0.0);
    let denom = (ga.diag().sum() * gb.diag().sum()).sqrt();
    if !(denom > 0.0 && denom.is_finite()) {
        return f64::NAN;
    }
    let Ok((va, ua)) = Backend::eigh(ga.view()) else {
        return f64::NAN;
    };
    let scale_a = va.iter().fold(0.0f64, |s, l| s.max(l.abs()));
    let zero_a = rounding_level(n, scale_a);
    // A½ = U diag(sqrt(λ⁺)) Uᵀ
    let mut us = ua.clone();
    for (mut col, &l) in us.columns_mut().into_iter().zip(&va) {
        col *= if l > zero_a { l.sqrt() } else { 0.0 };
    }
    let a_half = matmul::<Backend, f64>(us.view(), ua.t());
    let m = matmul::<Backend, f64>(
        a_half.view(),
        matmul::<Backend, f64>(gb.view(), a_half.view()).view(),
    );
    let m = (&m + &m.t()) * 0.5;
    let Ok(vm) = Backend::eigvalsh(m.view()) else {
        return f64::NAN;
    };
    // A½ B A½ carries rounding errors of order ε |A| |B|
    let norm_b = gb.iter().map(|x| x * x).sum::<f64>().sqrt();
    let zero_m = rounding_level(n, scale_a * norm_b);
    let num: f64 = vm.iter().filter(|&&l| l > zero_m).map(|l| l.sqrt()).sum();
    num / denom
}

/// The kernel of CKA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// `K = -½ H D H` (linear kernel of the patterns, centred).
    Linear,
    /// `K_ij = exp(-D_ij / (2 median))`, the median over the full `n × n` `D` (zero diagonal
    /// included): Kornblith et al.'s `gram_rbf(x, threshold=1.0)`.
    Rbf,
}

/// CKA of two NaN-free condensed RDMs of `n` conditions: the Frobenius cosine of the kernels,
/// centred (`H K H`) or U-centred (`unbiased`). NaN when a centred kernel is zero (an all-zero
/// RDM; unbiased: a constant RDM, or 3 conditions) or the RBF median is not positive.
fn cka(a: &[f64], b: &[f64], n: usize, kernel: Kernel, unbiased: bool) -> f64 {
    // The U-centred kernel of a constant RDM is zero, and so is every U-centred 3 × 3 matrix
    // (the unbiased HSIC needs n ≥ 4): say so exactly rather than divide rounding errors.
    let constant = |v: &[f64]| v.iter().all(|&x| x == v[0]);
    if unbiased && (n < 4 || constant(a) || constant(b)) {
        return f64::NAN;
    }
    let gram = |v: &[f64]| -> Option<Array2<f64>> {
        match kernel {
            Kernel::Linear => Some(square_map(v, n, 0.0, |d| -0.5 * d)),
            Kernel::Rbf => {
                let med = square_median(v, n);
                (med > 0.0 && med.is_finite())
                    .then(|| square_map(v, n, 1.0, |d| (-d / (2.0 * med)).exp()))
            }
        }
    };
    let (Some(mut k), Some(mut l)) = (gram(a), gram(b)) else {
        return f64::NAN;
    };
    for g in [&mut k, &mut l] {
        if unbiased { u_centre(g) } else { centre(g) }
    }
    frobenius_cosine(&k, &l)
}

/// The median of the `n²` entries of the square RDM (each dissimilarity twice, `n` zeros on the
/// diagonal), as `numpy.median` (the mean of the two middle entries for an even count).
fn square_median(v: &[f64], n: usize) -> f64 {
    let mut s = v.to_vec();
    s.sort_unstable_by(f64::total_cmp);
    let neg = s.partition_point(|&x| x < 0.0);
    // the k-th smallest entry (0-based): negatives twice each, the zeros, the rest twice each
    let kth = |k: usize| {
        if k < 2 * neg {
            s[k / 2]
        } else if k < 2 * neg + n {
            0.0
        } else {
            s[(k - n) / 2]
        }
    };
    let total = n * n;
    if total % 2 == 1 { kth(total / 2) } else { 0.5 * (kth(total / 2 - 1) + kth(total / 2)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::compare;
    use crate::rdm::{RdmMethod, condensed_len, rdm};
    use crate::rng::Rng;
    use ndarray::ArrayView2;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/compare/"
        ))
        .join(name)
    }

    const CKAS: [CompareMethod; 4] = [
        CompareMethod::CkaLinear,
        CompareMethod::CkaLinearUnbiased,
        CompareMethod::CkaRbf,
        CompareMethod::CkaRbfUnbiased,
    ];

    /// Kornblith et al.'s formulas on patterns, written out with loops.
    fn naive_cka(x: ArrayView2<'_, f64>, y: ArrayView2<'_, f64>, m: CompareMethod) -> f64 {
        let n = x.nrows();
        let gram = |p: ArrayView2<'_, f64>, rbf: bool| {
            let mut g = Array2::<f64>::zeros((n, n));
            for i in 0..n {
                for j in 0..n {
                    g[(i, j)] = if rbf {
                        p.row(i).iter().zip(p.row(j)).map(|(a, b)| (a - b) * (a - b)).sum()
                    } else {
                        p.row(i).dot(&p.row(j))
                    };
                }
            }
            if rbf {
                let mut all: Vec<f64> = g.iter().copied().collect();
                all.sort_by(f64::total_cmp);
                let med = if all.len() % 2 == 1 {
                    all[all.len() / 2]
                } else {
                    (all[all.len() / 2 - 1] + all[all.len() / 2]) / 2.0
                };
                g.mapv_inplace(|d| (-d / (2.0 * med)).exp());
            }
            g
        };
        let rbf = matches!(m, CompareMethod::CkaRbf | CompareMethod::CkaRbfUnbiased);
        let unbiased =
            matches!(m, CompareMethod::CkaLinearUnbiased | CompareMethod::CkaRbfUnbiased);
        let (k, l) = (gram(x, rbf), gram(y, rbf));
        let hsic = |k: &Array2<f64>, l: &Array2<f64>| -> f64 {
            if unbiased {
                // Song et al. (2012), eq. 5
                let (mut kt, mut lt) = (k.clone(), l.clone());
                kt.diag_mut().fill(0.0);
                lt.diag_mut().fill(0.0);
                let one = Array1::<f64>::ones(n);
                let kl = kt.dot(&lt);
                let nf = n as f64;
                (kl.diag().sum()
                    + one.dot(&kt.dot(&one)) * one.dot(&lt.dot(&one)) / ((nf - 1.0) * (nf - 2.0))
                    - 2.0 / (nf - 2.0) * one.dot(&kl.dot(&one)))
                    / (nf * (nf - 3.0))
            } else {
                let h = Array2::<f64>::eye(n) - 1.0 / n as f64;
                h.dot(k).dot(&h).dot(l).diag().sum()
            }
        };
        hsic(&k, &l) / (hsic(&k, &k) * hsic(&l, &l)).sqrt()
    }

    #[test]
    fn cka_from_rdms_matches_kornblith_on_patterns() {
        let mut rng = Rng::new(41);
        for n in [5usize, 8, 13] {
            let x: Array2<f64> = rng.normal_array((n, 7));
            let noise: Array2<f64> = rng.normal_array((n, 4));
            let y: Array2<f64> = &x.slice(ndarray::s![.., ..4]) + &(noise * 0.7);
            let (dx, dy) = (
                rdm(x.view(), RdmMethod::Euclidean).unwrap(),
                rdm(y.view(), RdmMethod::Euclidean).unwrap(),
            );
            for m in CKAS {
                let got = compare(dx.view(), dy.view(), m).unwrap();
                let want = naive_cka(x.view(), y.view(), m);
                assert!((got - want).abs() < 1e-12, "{m:?} n={n}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn cka_matches_the_reference_fixture() {
        let rows = crate::rdm::npy_fixture::compare_csv(&fixture("cka.csv"));
        assert_eq!(rows.len(), 8);
        let mut worst = 0.0f64;
        for (brain, model, method, want) in rows {
            let load = |name: &str| {
                let (shape, v) =
                    crate::rdm::npy_fixture::f64s(&fixture(&format!("cka_{name}.npy")));
                Array2::from_shape_vec((shape[0], shape[1]), v).unwrap()
            };
            let (x, y) = (load(&brain), load(&model));
            let dx = rdm(x.view(), RdmMethod::Euclidean).unwrap();
            let dy = rdm(y.view(), RdmMethod::Euclidean).unwrap();
            let m = CompareMethod::parse(&method).unwrap();
            let got = compare(dx.view(), dy.view(), m).unwrap();
            worst = worst.max((got - want).abs());
            assert!((got - want).abs() < 1e-12, "{brain} {method}: {got} vs {want}");
            // the RDM's scale (here: 1 / n_channels) cancels
            let scaled = dx.mapv(|d| d * 37.5);
            assert!((compare(scaled.view(), dy.view(), m).unwrap() - got).abs() < 1e-12);
        }
        // measured: max |diff| 8.9e-16 (brainfit's RDM from the Gram matrix vs Kornblith's)
        eprintln!("CKA fixture: max |diff| {worst:e}");
        assert!(worst < 1e-12, "{worst}");
    }

    #[test]
    fn second_moment_is_the_centred_gram_matrix() {
        let mut rng = Rng::new(42);
        let x: Array2<f64> = rng.normal_array((9, 6)) + 3.0;
        let d = rdm(x.view(), RdmMethod::Euclidean).unwrap().mapv(|v| v * 6.0);
        let g = second_moment(d.view()).unwrap();
        let xc = &x - &x.mean_axis(Axis(0)).unwrap();
        let want = xc.dot(&xc.t());
        let err = (&g - &want).iter().fold(0.0f64, |s, v| s.max(v.abs()));
        assert!(err < 1e-12, "{err}");
        assert!(second_moment(ndarray::ArrayView1::from(&[1.0, 2.0][..])).is_err());
    }

    #[test]
    fn linear_cka_invariances_and_the_added_constant() {
        let mut rng = Rng::new(43);
        let n = 11;
        let a: Array1<f64> = rng.normal_array::<f64, _, _>(condensed_len(n)).mapv(|v| v * v + 0.1);
        let b: Array1<f64> = &a + &rng.normal_array::<f64, _, _>(condensed_len(n)).mapv(f64::abs);
        let c = |x: &Array1<f64>, y: &Array1<f64>, m| compare(x.view(), y.view(), m).unwrap();
        for m in CKAS {
            // scale invariance (linear: the cosine; RBF: the median normalisation)
            assert!((c(&(&a * 4.5), &b, m) - c(&a, &b, m)).abs() < 1e-12, "{m:?}");
            assert!((c(&a, &a, m) - 1.0).abs() < 1e-12);
            assert!((c(&a, &b, m) - c(&b, &a, m)).abs() < 1e-14);
        }
        // An added constant is `a_i + a_j` off the diagonal: U-centring removes it exactly, so
        // unbiased linear CKA is unchanged; biased centring leaves `-c/2 H`: it changes.
        let shifted = &a + 20.0;
        let lu = CompareMethod::CkaLinearUnbiased;
        assert!((c(&shifted, &b, lu) - c(&a, &b, lu)).abs() < 1e-12);
        let lb = CompareMethod::CkaLinear;
        assert!((c(&shifted, &b, lb) - c(&a, &b, lb)).abs() > 0.1);
        // corr_cov is biased linear CKA of the mean-centred RDM vectors
        let (ac, bc) = (&a - a.mean().unwrap(), &b - b.mean().unwrap());
        assert!((c(&a, &b, CompareMethod::CorrCov) - c(&ac, &bc, lb)).abs() < 1e-12);
        assert!(
            (c(&shifted, &b, CompareMethod::CorrCov) - c(&a, &b, CompareMethod::CorrCov)).abs()
                < 1e-12
        );
    }

    #[test]
    fn square_median_is_numpys() {
        let mut rng = Rng::new(44);
        for n in [2usize, 3, 4, 7, 20, 21] {
            for signs in [false, true] {
                let v: Vec<f64> = (0..condensed_len(n))
                    .map(|_| if signs { rng.normal() } else { rng.below(4) as f64 })
                    .collect();
                let sq = square_map(&v, n, 0.0, |d| d);
                let mut all: Vec<f64> = sq.iter().copied().collect();
                all.sort_by(f64::total_cmp);
                let k = all.len();
                let want =
                    if k % 2 == 1 { all[k / 2] } else { (all[k / 2 - 1] + all[k / 2]) / 2.0 };
                assert_eq!(square_median(&v, n), want, "n={n}");
            }
        }
    }

    #[test]
    fn projected_corr_cov_without_nan_is_the_double_centring() {
        let mut rng = Rng::new(45);
        for n in [3usize, 6, 15] {
            let v: Vec<f64> = (0..condensed_len(n)).map(|_| rng.normal()).collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let valid = vec![true; v.len()];
            let got = projected(&v, mean, &valid, n).unwrap();
            let want = second_moment_of(&v, n, mean);
            let err = (&got - &want).iter().fold(0.0f64, |s, x| s.max(x.abs()));
            assert!(err < 1e-12, "n={n}: {err}");
        }
    }

    /// Symmetry (`A½ B A½` and `B½ A B½` share their nonzero eigenvalues), 1 for equal
    /// Euclidean RDMs (rank-deficient here: the zero eigenvalues must not count), scale.
    #[test]
    fn bures_is_symmetric_and_one_for_equal_rdms() {
        let mut rng = Rng::new(46);
        for n in [3usize, 5, 12] {
            let x: Array2<f64> = rng.normal_array((n, 4));
            let y: Array2<f64> = rng.normal_array((n, 9));
            let a = rdm(x.view(), RdmMethod::Euclidean).unwrap();
            let b = rdm(y.view(), RdmMethod::Euclidean).unwrap();
            let ab = compare(a.view(), b.view(), CompareMethod::Bures).unwrap();
            let ba = compare(b.view(), a.view(), CompareMethod::Bures).unwrap();
            assert!((ab - ba).abs() < 1e-12, "n={n}: {ab} {ba}");
            assert!(ab > 0.0 && ab <= 1.0 + 1e-12);
            let aa = compare(a.view(), a.view(), CompareMethod::Bures).unwrap();
            assert!((aa - 1.0).abs() < 1e-12, "n={n}: {aa}");
            // scale invariant
            let a2 = a.mapv(|d| d * 3.0);
            assert!(
                (compare(a2.view(), b.view(), CompareMethod::Bures).unwrap() - ab).abs() < 1e-12
            );
        }
    }
}
