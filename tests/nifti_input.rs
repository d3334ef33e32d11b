//! 4-D NIfTI brain data end to end: masked in nilearn's voxel order, it gives the same results
//! as the matrix nilearn's `apply_mask` made from it (tests/fixtures/nifti, made by
//! scripts/python/make_fixtures.py).

mod common;

use brainfit_io::{Store, join_url, parse_npy};
use brainfit_kernels::rdm::{RdmMethod, rdm};
use ndarray::{Array2, Ix2};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nifti");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_d_nifti_equals_nilearn_masked_matrix() {
    let store = Store::new();
    let base = "memory://nifti/study";
    for f in ["img4d.nii.gz", "mask.nii.gz", "masked.npy"] {
        let bytes = std::fs::read(format!("{FIXTURES}/{f}")).unwrap();
        store.put(&join_url(base, f), bytes.into()).await.unwrap();
    }
    // a model RDM is needed for a comparison: one from nilearn's matrix itself
    let masked: Array2<f64> =
        parse_npy(&std::fs::read(format!("{FIXTURES}/masked.npy")).unwrap(), "masked.npy")
            .unwrap()
            .to_f64()
            .into_dimensionality::<Ix2>()
            .unwrap();
    let model = rdm(masked.view(), RdmMethod::Correlation).unwrap();
    store
        .put(&join_url(base, "model.npy"), brainfit_io::write_npy(&model.view()).into())
        .await
        .unwrap();
    let from_nifti = run_with_model(&store, base, "img4d.nii.gz").await;
    let from_matrix = run_with_model(&store, base, "masked.npy").await;
    assert_eq!(from_nifti, from_matrix);
    // the brain RDM computed from the 4-D image is nilearn's matrix's RDM
    let rdm_url = join_url(base, "out-img4d.nii.gz/rsa/rdms/all.npy");
    let got = parse_npy(&store.get(&rdm_url).await.unwrap(), &rdm_url).unwrap().to_f64();
    for (g, w) in got.iter().zip(model.iter()) {
        assert!((g - w).abs() < 1e-6, "{g} vs {w}");
    }
}

async fn run_with_model(store: &Store, base: &str, brain: &str) -> String {
    let job = format!(
        "name = \"nifti\"\noutput = \"out-{brain}\"\n[data]\nbrain = \"{brain}\"\nmask = \"mask.nii.gz\"\n[rsa]\nrois = {{ all = \"mask.nii.gz\" }}\nmodels = {{ nilearn = \"model.npy\" }}\ncompare = [\"pearson\"]\n"
    );
    common::run_embedded(store, base, &job, 1).await.unwrap();
    let url = join_url(base, &format!("out-{brain}/rsa/compare.csv"));
    String::from_utf8(store.get(&url).await.unwrap().to_vec()).unwrap()
}
