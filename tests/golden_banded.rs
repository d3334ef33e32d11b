//! Banded ridge against himalaya's `BandedRidgeCV`, on fixtures made by
//! scripts/python/make_fixtures_banded.py: two spaces in the primal regime (n_train >= p) and
//! three in the dual (n_train < p); outer KFold(5), inner KFold(5) within each outer training
//! part, the same candidate band weights and alphas on both sides. Held-out scores and each
//! space's share of them must agree to 1e-4 in f64 (they agree far closer), and the chosen
//! band weights and alphas must be the same wherever himalaya's choice is not a near-tie.

mod common;

use brainfit_kernels::banded::{BandedResult, BandedRidgeCv};
use brainfit_kernels::cv::{CvScheme, split};
use brainfit_kernels::linalg::Backend;
use brainfit_kernels::score::ScoreKind;
use ndarray::{Array1, Array2, Array3};

/// Below this relative gap between the best and second-best inner-CV MSE, a choice is a
/// near-tie and may go either way.
const NEAR_TIE: f64 = 1e-6;

fn f64_1d(case: &str, name: &str) -> Array1<f64> {
    common::fixture_f64(&format!("banded/{case}"), name)
}

fn f64_2d(case: &str, name: &str) -> Array2<f64> {
    common::fixture_f64(&format!("banded/{case}"), name)
}

fn f64_3d(case: &str, name: &str) -> Array3<f64> {
    common::fixture_f64(&format!("banded/{case}"), name)
}

fn max_abs_diff<D: ndarray::Dimension>(
    a: &ndarray::Array<f64, D>,
    b: &ndarray::Array<f64, D>,
) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
}

fn fit<T: brainfit_kernels::Real>(
    xs: &[Array2<f64>],
    y: &Array2<f64>,
    candidates: &Array2<f64>,
    alphas: &[f64],
    kind: ScoreKind,
) -> BandedResult {
    let outer = split(CvScheme::KFold { k: 5 }, y.nrows(), None).unwrap();
    let xs: Vec<Array2<T>> = xs.iter().map(|x| x.mapv(T::from_f64)).collect();
    let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
    BandedRidgeCv::new::<Backend>(&views, &outer, CvScheme::KFold { k: 5 }, None, true)
        .unwrap()
        .fit::<Backend>(y.mapv(T::from_f64).view(), candidates.view(), alphas, kind)
        .unwrap()
}

fn check_case(case: &str, n_spaces: usize) {
    let xs: Vec<Array2<f64>> = (0..n_spaces).map(|b| f64_2d(case, &format!("X{b}"))).collect();
    let y = f64_2d(case, "Y");
    let candidates = f64_2d(case, "candidates");
    let alphas = f64_1d(case, "alphas").to_vec();
    let want_candidate = f64_2d(case, "fold_candidate");
    let want_gamma = f64_3d(case, "fold_gamma");
    let want_alpha = f64_2d(case, "fold_alpha");
    let margin = f64_2d(case, "fold_margin");
    for (kind, total, shares) in [
        (ScoreKind::R2, "fold_r2", "fold_r2_split"),
        (ScoreKind::Pearson, "fold_pearson", "fold_pearson_split"),
    ] {
        let want = f64_2d(case, total);
        let want_split = f64_3d(case, shares);
        let got = fit::<f64>(&xs, &y, &candidates, &alphas, kind);
        let d_score = max_abs_diff(&got.fold_score, &want);
        let d_split = max_abs_diff(&got.fold_split_score, &want_split);
        let same_everywhere = margin
            .indexed_iter()
            .filter(|&((k, j), _)| {
                got.fold_candidate[(k, j)] as f64 == want_candidate[(k, j)]
                    && got.fold_alpha[(k, j)] == want_alpha[(k, j)]
            })
            .count();
        let mut compared = 0;
        for ((k, j), &m) in margin.indexed_iter() {
            if m < NEAR_TIE {
                continue;
            }
            compared += 1;
            let c = got.fold_candidate[(k, j)];
            assert_eq!(c as f64, want_candidate[(k, j)], "{case}: fold {k} voxel {j}: candidate");
            let (a, w) = (got.fold_alpha[(k, j)], want_alpha[(k, j)]);
            assert!((a - w).abs() <= 1e-12 * w, "{case}: fold {k} voxel {j}: alpha {a} vs {w}");
            for b in 0..n_spaces {
                let (g, w) = (candidates[(c, b)], want_gamma[(k, b, j)]);
                assert!((g - w).abs() < 1e-9, "{case}: fold {k} voxel {j}: gamma {g} vs {w}");
            }
        }
        eprintln!(
            "{case} {total}: max |brainfit - himalaya| score {d_score:.2e}, split {d_split:.2e}; \
             {compared}/{} choices are not near-ties and all identical; \
             {same_everywhere} identical in all",
            margin.len()
        );
        assert!(d_score < 1e-4, "{case} {total}: max |brainfit - himalaya| = {d_score:e}");
        assert!(d_split < 1e-4, "{case} {shares}: max |brainfit - himalaya| = {d_split:e}");
        assert!(compared * 10 >= margin.len() * 8, "{case}: too many near-ties to compare");

        // f32, the production precision: loosely
        let got32 = fit::<f32>(&xs, &y, &candidates, &alphas, kind);
        let d32 = max_abs_diff(&got32.fold_score, &want);
        let d32_split = max_abs_diff(&got32.fold_split_score, &want_split);
        eprintln!("{case} {total} in f32: score {d32:.2e}, split {d32_split:.2e}");
        assert!(d32 < 1e-3 && d32_split < 1e-3, "{case} {total} in f32: {d32:e} {d32_split:e}");
    }
}

#[test]
fn two_spaces_primal_match_himalaya() {
    check_case("two_spaces", 2);
}

#[test]
fn three_spaces_dual_match_himalaya() {
    check_case("three_spaces", 3);
}
