//! Voxelwise ridge against himalaya: fixtures made by scripts/python/make_fixtures.py with
//! himalaya's RidgeCV (per-voxel alpha, inner CV inside each outer fold) and scikit-learn's
//! splitters. Scores must agree to 1e-4 (they agree far closer in f64), and the chosen alphas
//! must be the same grid points.

use brainfit_io::parse_npy;
use brainfit_kernels::cv::{CvScheme, split};
use brainfit_kernels::linalg::Backend;
use brainfit_kernels::ridge::{NestedCv, RidgeSpec};
use brainfit_kernels::score::ScoreKind;
use ndarray::{Array1, Array2, Ix1, Ix2};

fn load(case: &str, name: &str) -> brainfit_io::NpyArray {
    let path = format!("{}/tests/fixtures/ridge/{case}/{name}.npy", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_npy(&bytes, &path).unwrap()
}

fn f64_2d(case: &str, name: &str) -> Array2<f64> {
    load(case, name).to_f64().into_dimensionality::<Ix2>().unwrap()
}

fn check_case(case: &str, tolerance: f64, single_precision: bool) {
    let x = f64_2d(case, "X");
    let y = f64_2d(case, "Y");
    let alphas: Array1<f64> = load(case, "alphas").to_f64().into_dimensionality::<Ix1>().unwrap();
    let groups: Option<Vec<i64>> = (case == "groups")
        .then(|| load(case, "groups").to_i64("groups").unwrap().iter().copied().collect());
    let (outer_scheme, inner) = match groups {
        Some(_) => (CvScheme::LeaveOneGroupOut, CvScheme::LeaveOneGroupOut),
        None => (CvScheme::KFold { k: 5 }, CvScheme::KFold { k: 5 }),
    };
    let g = groups.as_deref();
    let outer = split(outer_scheme, x.nrows(), g).unwrap();
    let want_alpha = f64_2d(case, "fold_alpha");
    for (kind, file) in [(ScoreKind::R2, "fold_r2"), (ScoreKind::Pearson, "fold_pearson")] {
        let spec = RidgeSpec::new(alphas.to_vec(), true, kind).unwrap();
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
