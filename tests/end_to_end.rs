//! End-to-end runs of whole jobs: in memory and on disk, with 1 and 4 workers, and with bad
//! inputs that must fail clearly without leaving anything that looks complete.

mod common;

use brainfit_io::{Store, join_url, write_nifti_f32, write_npy};
use common::write_study;
use ndarray::{Array2, Array3};

const JOB: &str = common::ENCODING_JOB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_run_is_identical_for_1_and_4_workers() {
    let store = Store::new();
    let base = "memory://e2e/study";
    write_study(&store, base, None).await;
    let summary = common::run_embedded(&store, base, JOB, 1).await.unwrap();
    let one = common::outputs(&store, &join_url(base, "out")).await;
    common::run_embedded(&store, base, JOB, 4).await.unwrap();
    let four = common::outputs(&store, &join_url(base, "out")).await;
    let names: Vec<&str> = one.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "encoding/a/alpha.npy",
            "encoding/a/score.nii.gz",
            "encoding/a/score.npy",
            "encoding/b/alpha.npy",
            "encoding/b/score.nii.gz",
            "encoding/b/score.npy",
            "encoding/best_score.nii.gz",
            "encoding/best_score.npy",
            "encoding/best_space.nii.gz",
            "encoding/best_space.npy",
            "encoding/best_space_labels.csv",
        ]
    );
    assert!(one == four, "outputs differ between 1 and 4 workers");
    // the planted voxels are found by space `a` and not by `b`
    let score = brainfit_io::parse_npy(&one[2].1, "a").unwrap().to_f64();
    let planted = score.iter().take(20).sum::<f64>() / 20.0;
    let rest = score.iter().skip(20).sum::<f64>() / (score.len() - 20) as f64;
    assert!(planted > 0.5 && rest < 0.05, "planted {planted}, rest {rest}");
    let encoding = summary.subjects[0].encoding.as_ref().unwrap();
    assert_eq!(encoding["a"].n_features, 6);
    assert!(store.get(&join_url(base, "out/summary.json")).await.is_ok());
    assert!(
        store.list(&join_url(base, "out/.brainfit")).await.unwrap().is_empty(),
        "run parts are cleaned up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_fail_clearly_and_leave_nothing_complete() {
    let store = Store::new();
    let base = "memory://bad/study";
    write_study(&store, base, None).await;
    common::run_embedded(&store, base, JOB, 2).await.unwrap();
    let summary = join_url(base, "out/summary.json");
    let complete = store.get(&summary).await.unwrap();

    let expect_err = |job: String, needle: &'static str, also: &'static str| {
        let store = store.clone();
        async move {
            let err = common::run_embedded(&store, base, &job, 2).await.unwrap_err();
            assert!(
                err.contains(needle) && err.contains(also),
                "error {err:?} should name {needle:?} and {also:?}"
            );
        }
    };
    // unknown key
    expect_err(JOB.replace("cv = {", "cvv = {"), "job.toml", "cvv").await;
    // missing file
    expect_err(JOB.replace("b.npy", "missing.npy"), "missing.npy", "not found").await;
    // mismatched sample counts between features and brain
    let short: Array2<f32> = Array2::zeros((40, 3));
    store.put(&join_url(base, "short.npy"), write_npy(&short.view()).into()).await.unwrap();
    expect_err(JOB.replace("b.npy", "short.npy"), "short.npy", "48").await;
    // group labels and brain data disagree: the message names both files
    let fewer_rows: Array2<f32> = Array2::ones((40, 120));
    store.put(&join_url(base, "fewer.npy"), write_npy(&fewer_rows.view()).into()).await.unwrap();
    expect_err(
        JOB.replace("brain.npy", "fewer.npy"),
        "runs.npy: has 48 labels",
        "fewer.npy) has 40 samples",
    )
    .await;
    // errors found while checking the inputs leave the earlier complete run alone
    assert!(store.get(&summary).await.is_ok(), "an invalid job removed the previous summary");
    // NaN in the brain data (found by a task, after the inputs were checked)
    let mut nan_brain: Array2<f32> = Array2::ones((48, 120));
    nan_brain[(3, 7)] = f32::NAN;
    store.put(&join_url(base, "nan.npy"), write_npy(&nan_brain.view()).into()).await.unwrap();
    expect_err(JOB.replace("brain.npy", "nan.npy"), "nan.npy", "NaN").await;
    // a truncated .npy
    let bytes = store.get(&join_url(base, "a.npy")).await.unwrap();
    store.put(&join_url(base, "trunc.npy"), bytes.slice(..bytes.len() - 10)).await.unwrap();
    expect_err(JOB.replace("a.npy", "trunc.npy"), "trunc.npy", "truncated").await;
    // mask voxel count differs from the brain matrix
    let other: Array2<f32> = Array2::ones((48, 119));
    store.put(&join_url(base, "other.npy"), write_npy(&other.view()).into()).await.unwrap();
    expect_err(JOB.replace("brain.npy", "other.npy"), "other.npy", "mask").await;
    // an empty mask
    let empty = Array3::<f32>::zeros((6, 7, 5));
    let eye =
        [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
    store
        .put(&join_url(base, "empty.nii.gz"), write_nifti_f32(empty.view(), &eye, true).into())
        .await
        .unwrap();
    expect_err(JOB.replace("mask.nii.gz", "empty.nii.gz"), "empty.nii.gz", "empty").await;
    // outputs are published only when a run completes: the run that started and failed (NaN)
    // left the earlier complete run, summary and all, as it was
    assert_eq!(store.get(&summary).await.unwrap(), complete);
}

#[test]
fn cli_runs_a_job_on_disk_and_validate_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("file://{}", dir.path().display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(write_study(&Store::new(), &base, None));
    std::fs::write(dir.path().join("job.toml"), JOB).unwrap();
    let bin = env!("CARGO_BIN_EXE_brainfit");
    let out = std::process::Command::new(bin)
        .args(["validate", "job.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("48 samples x 120 voxels") && text.contains("2 tasks"), "{text}");
    // validate names the permutation scheme in force and warns about the job's inference
    let delayed = format!(
        "{}[permutation]\nn = 9\n",
        JOB.replace("[encoding]", "[encoding]\ndelays = [1, 2]")
    );
    std::fs::write(dir.path().join("delayed.toml"), delayed).unwrap();
    let out = std::process::Command::new(bin)
        .args(["validate", "delayed.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(
            "9 permutations (seed 0), scheme within-group, the default: the data have groups"
        ),
        "{text}"
    );
    assert!(
        text.contains("warning: [encoding] delays = [1, 2]") && text.contains("whole-groups"),
        "{text}"
    );
    let out = std::process::Command::new(bin)
        .args(["run", "job.toml", "--workers", "2"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("encoding a"), "{text}");
    for f in [
        "out/encoding/a/score.npy",
        "out/encoding/a/score.nii.gz",
        "out/encoding/b/alpha.npy",
        "out/summary.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    // a bad job exits non-zero and says why
    std::fs::write(dir.path().join("bad.toml"), JOB.replace("brain.npy", "nope.npy")).unwrap();
    let out = std::process::Command::new(bin)
        .args(["run", "bad.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.npy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npz_members_are_feature_spaces() {
    use std::io::Write;
    let store = Store::new();
    let base = "memory://e2e/npz";
    write_study(&store, base, None).await;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, width) in [("fc6.npy", 3), ("fc7.npy", 5)] {
        zip.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
        let x: Array2<f32> =
            brainfit_kernels::rng::Rng::new(width as u64).normal_array((48, width));
        zip.write_all(&write_npy(&x.view())).unwrap();
    }
    let npz = zip.finish().unwrap().into_inner();
    store.put(&join_url(base, "net.npz"), npz.into()).await.unwrap();
    let summary =
        common::run_embedded(&store, base, &JOB.replace("b = \"b.npy\"", "net = \"net.npz\""), 2)
            .await
            .unwrap();
    let encoding = summary.subjects[0].encoding.as_ref().unwrap();
    assert_eq!(encoding["net.fc6"].n_features, 3, "{encoding:?}");
    assert_eq!(encoding["net.fc7"].n_features, 5, "{encoding:?}");
    assert!(store.get(&join_url(base, "out/encoding/net.fc7/score.npy")).await.is_ok());
}
