//! The spectral encoding models against their references, on fixtures made by
//! scripts/python/make_fixtures.py: ridge against himalaya's RidgeCV (per-voxel alpha, inner
//! CV inside each outer fold) and scikit-learn's splitters; PCR (scikit-learn's PCA then
//! LinearRegression) and PLS (PLSRegression(scale=False), one target at a time) under the
//! same nested CV over a components grid. Scores must agree to 1e-4 (they agree far closer in
//! f64), and the chosen hyperparameters must be the same grid points.

mod common;

use brainfit_kernels::linalg::Backend;
use brainfit_kernels::ridge::{NestedCv, SpectralModel, SpectralSpec};
use brainfit_kernels::score::ScoreKind;
use ndarray::{Array1, Array2};

fn f64_2d(case: &str, name: &str) -> Array2<f64> {
    common::fixture_f64(case, name)
}

fn check_case(case: &str, tolerance: f64, single_precision: bool) {
    let case = &format!("ridge/{case}");
    let common::FixtureCase { x, y, groups, scheme: inner, outer } = common::fixture_case(case);
    let alphas: Array1<f64> = common::fixture_f64(case, "alphas");
    let g = groups.as_deref();
    let want_alpha = f64_2d(case, "fold_alpha");
    for (kind, file) in [(ScoreKind::R2, "fold_r2"), (ScoreKind::Pearson, "fold_pearson")] {
        let spec = SpectralSpec::ridge(alphas.to_vec(), true, kind).unwrap();
        let want = f64_2d(case, file);
        let (score, fold_alpha) = if single_precision {
            let cv = NestedCv::new::<Backend>(x.mapv(|v| v as f32).view(), &outer, inner, g, true)
                .unwrap();
            let r = cv.fit::<Backend>(y.mapv(|v| v as f32).view(), &spec).unwrap();
            (r.fold_score, r.fold_alpha)
        } else {
            let cv = NestedCv::new::<Backend>(x.view(), &outer, inner, g, true).unwrap();
            let r = cv.fit::<Backend>(y.view(), &spec).unwrap();
            (r.fold_score, r.fold_alpha)
        };
        let worst = (&score - &want).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(worst < tolerance, "{case} {file}: max |brainfit - himalaya| = {worst:e}");
        // f32 may resolve near-ties differently; its scores are still checked above
        if single_precision {
            continue;
        }
        for ((k, v), a) in fold_alpha.indexed_iter() {
            let w = want_alpha[(k, v)];
            assert!(
                (a - w).abs() <= 1e-9 * w,
                "{case}: fold {k} voxel {v}: alpha {a} vs himalaya {w}"
            );
        }
    }
}

#[test]
fn tall_matches_himalaya() {
    check_case("tall", 1e-9, false);
}

#[test]
fn wide_dual_form_matches_himalaya() {
    check_case("wide", 1e-9, false);
}

#[test]
fn leave_one_run_out_matches_himalaya() {
    check_case("groups", 1e-9, false);
}

/// Held-out case nobody tuned on, in f64 and in f32 (the production precision).
#[test]
fn heldout_matches_himalaya_in_f64_and_f32() {
    check_case("heldout", 1e-9, false);
    check_case("heldout", 1e-3, true);
}

/// PCR or PLS on fixture `components/<case>`: every outer fold's score and chosen number of
/// components, in f64 (to `tolerance`) and f32 (scores only, to 1e-3).
fn check_components(case: &str, model: SpectralModel, tolerance: f64) {
    let case = &format!("components/{case}");
    let common::FixtureCase { x, y, groups, scheme, outer } = common::fixture_case(case);
    let components = common::fixture(case, "components").to_i64("components").unwrap();
    let ks: Vec<usize> = components.iter().map(|&k| k as usize).collect();
    let g = groups.as_deref();
    let want_k = f64_2d(case, "fold_components");
    for (kind, file) in [(ScoreKind::R2, "fold_r2"), (ScoreKind::Pearson, "fold_pearson")] {
        let spec = SpectralSpec::components(model, ks.clone(), true, kind).unwrap();
        let want = f64_2d(case, file);
        let got = NestedCv::new::<Backend>(x.view(), &outer, scheme, g, true)
            .unwrap()
            .fit::<Backend>(y.view(), &spec)
            .unwrap();
        let worst = (&got.fold_score - &want).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(worst < tolerance, "{case} {file}: max |brainfit - scikit-learn| = {worst:e}");
        assert_eq!(got.fold_alpha, want_k, "{case}: chosen components");
        let got32 = NestedCv::new::<Backend>(x.mapv(|v| v as f32).view(), &outer, scheme, g, true)
            .unwrap()
            .fit::<Backend>(y.mapv(|v| v as f32).view(), &spec)
            .unwrap();
        let worst32 = (&got32.fold_score - &want).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(worst32 < 1e-3, "{case} {file} in f32: max difference {worst32:e}");
    }
}

#[test]
fn pcr_matches_scikit_learn() {
    check_components("pcr_tall", SpectralModel::Pcr, 1e-9);
    check_components("pcr_wide", SpectralModel::Pcr, 1e-9);
}

#[test]
fn pls_matches_scikit_learn() {
    check_components("pls_tall", SpectralModel::Pls, 1e-9);
    check_components("pls_wide", SpectralModel::Pls, 1e-9);
}
