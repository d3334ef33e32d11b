//! Hostile and careless job files (issue 9's reproductions): names that would leave `output`
//! or forge CSV rows, colliding outputs, resource bombs in headers and parameters, and inputs
//! whose contents must never be echoed. Each gets a clear error before any work, and nothing
//! is written outside `output`.

mod common;

use brainfit_io::{Store, join_url, write_nifti_f32, write_npy};
use common::write_study;
use ndarray::{Array2, Array3};
use std::io::Write;

const JOB: &str = common::ENCODING_JOB;

/// Runs `job` on a fresh copy of the tiny study on disk; the error, and every file under the
/// study's parent directory afterwards (to catch writes outside `output`).
async fn refused(job: &str, extra: &[(&str, Vec<u8>)]) -> (String, Vec<String>) {
    let root = tempfile::tempdir().unwrap();
    let study = root.path().join("a/b/c/study");
    std::fs::create_dir_all(&study).unwrap();
    let base = format!("file://{}", study.display());
    let store = Store::new();
    write_study(&store, &base, None).await;
    for (name, bytes) in extra {
        store.put(&join_url(&base, name), bytes.clone().into()).await.unwrap();
    }
    let err =
        common::run_embedded(&store, &base, job, 1).await.expect_err("the job must be refused");
    let files = walk(root.path());
    let outside: Vec<String> =
        files.into_iter().filter(|f| !f.starts_with(&study.display().to_string())).collect();
    (err, outside)
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

fn rsa_job(table: &str) -> String {
    format!("{JOB}[rsa]\n{table}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_cannot_leave_output_forge_csv_rows_or_collide() {
    let cases = [
        (rsa_job("rois = { \"../../../escaped_roi\" = \"mask.nii.gz\" }"), "[rsa] rois name"),
        (rsa_job("models = { \"../../x\" = \"m.npy\" }"), "[rsa] models name"),
        (rsa_job("brain_rdms = { \"../up\" = \"m.npy\" }"), "[rsa] brain_rdms name"),
        (rsa_job("rois = { \"a\\nevil,row,spearman,0.99\" = \"mask.nii.gz\" }"), "[rsa] rois name"),
        (JOB.replace("a = \"a.npy\"", "\"..\" = \"a.npy\""), "[features] name \"..\""),
        (JOB.replace("a = \"a.npy\"", "\".\" = \"a.npy\""), "[features] name \".\""),
        (JOB.replace("a = \"a.npy\"", &format!("{} = \"a.npy\"", "x".repeat(101))), "1 to 100"),
        (
            rsa_job("rois = { it = \"mask.nii.gz\" }\nbrain_rdms = { it = \"m.npy\" }"),
            "both a brain_rdms and a rois entry",
        ),
    ];
    for (job, needle) in cases {
        let (err, outside) = refused(&job, &[]).await;
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
        assert!(outside.is_empty(), "written outside the study: {outside:?}");
    }
    // .npz member names are checked like job-file names
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("../../x.npy", zip::write::SimpleFileOptions::default()).unwrap();
    zip.write_all(&write_npy(&Array2::<f32>::zeros((48, 2)).view())).unwrap();
    let npz = zip.finish().unwrap().into_inner();
    let (err, outside) =
        refused(&JOB.replace("b = \"b.npy\"", "net = \"net.npz\""), &[("net.npz", npz)]).await;
    assert!(err.contains(".npz member") && err.contains("net.npz"), "{err}");
    assert!(outside.is_empty(), "{outside:?}");
}

/// A gzipped NIfTI-1 header declaring `dims` uint8 voxels, followed by only a few bytes.
fn nifti_bomb(dims: [i16; 3]) -> Vec<u8> {
    let eye =
        [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
    let mut raw = write_nifti_f32(Array3::<f32>::ones((2, 2, 2)).view(), &eye, false);
    for (i, d) in dims.iter().enumerate() {
        raw[42 + 2 * i..44 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    raw[70..72].copy_from_slice(&2i16.to_le_bytes()); // uint8
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    gz.write_all(&vec![0u8; 1 << 20]).unwrap(); // a megabyte of zeros, compressing to ~1 KB
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_from_headers_and_parameters_are_checked_before_allocating() {
    let gb = |err: &str| err.contains("memory budget") && err.contains("BRAINFIT_MAX_ARRAY_BYTES");
    // a mask whose header says 1260³ voxels: refused from its header, not inflated
    let (err, _) = refused(
        &JOB.replace("mask.nii.gz", "bomb.nii.gz"),
        &[("bomb.nii.gz", nifti_bomb([1260; 3]))],
    )
    .await;
    assert!(gb(&err) && err.contains("bomb.nii.gz"), "{err}");
    // an .npz member whose header declares 10^10 values (followed by 64 bytes)
    let npy = raw_npy("<f8", (100_000, 100_000), 64);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("fc6.npy", zip::write::SimpleFileOptions::default()).unwrap();
    zip.write_all(&npy).unwrap();
    let npz = zip.finish().unwrap().into_inner();
    let (err, _) =
        refused(&JOB.replace("b = \"b.npy\"", "net = \"net.npz\""), &[("net.npz", npz)]).await;
    assert!(gb(&err) && err.contains("net.npz[fc6]"), "{err}");
    // parameters with sane bounds
    for (job, needle) in [
        (
            JOB.replace("{ logspace = [-1, 3, 5] }", "{ logspace = [-2, 5, 100000000] }"),
            "at most 1000 values",
        ),
        (format!("{JOB}[permutation]\nn = 1000000000\n"), "n must be 1 to 1000000"),
        (
            JOB.replace("[encoding]", "[encoding]\ndelays = [1000000]"),
            "delay 1000000 is not shorter than the longest run (12 samples)",
        ),
        (
            format!("{JOB}[permutation]\nn = 1000000\n[time_resolved]\ndata = \"meg.npy\"\n")
                .replace(
                    "voxels_per_task = 512",
                    "voxels_per_task = 512\npermutations_per_task = 1",
                ),
            "tasks (at most 100000)",
        ),
    ] {
        let meg = write_npy(&ndarray::Array3::<f32>::zeros((2, 48, 3)).view());
        let (err, _) = refused(&job, &[("meg.npy", meg)]).await;
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_quote_the_contents_of_input_files() {
    let secret = b"root:$6$s3cr3t:19000:0:99999:7:::\n".to_vec();
    for (file, job) in [
        ("brain.npy", JOB.to_string()),
        ("mask.nii.gz", JOB.to_string()),
        ("a.npy", JOB.to_string()),
    ] {
        let (err, _) = refused(&job, &[(file, secret.clone())]).await;
        assert!(err.contains(file), "{err}");
        for leak in ["root", "s3cr3t", "72 6f", "19000"] {
            assert!(!err.contains(leak), "{file}: the error quotes the file: {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_in_use_is_refused_and_released_when_a_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("file://{}", dir.path().display());
    let store = Store::new();
    write_study(&store, &base, None).await;
    std::fs::write(dir.path().join("job.toml"), JOB).unwrap();
    let bin = env!("CARGO_BIN_EXE_brainfit");
    let run = |extra: &[&str]| {
        std::process::Command::new(bin)
            .args(["run", "job.toml", "--workers", "1"])
            .args(extra)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // a lock left by another run (say, one that was killed): refused, saying who holds it
    let lock = dir.path().join("out/.brainfit/lock.json");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, r#"{"run": "r-other", "job": "tiny", "host": "lab-node-3", "pid": 4242, "started_unix": 1}"#).unwrap();
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is in use by run \"r-other\"")
            && stderr.contains("lab-node-3")
            && stderr.contains("--break-lock"),
        "{stderr}"
    );
    assert!(!dir.path().join("out/summary.json").exists());
    // --break-lock takes it; a finished run releases it
    let out = run(&["--break-lock"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("out/summary.json").is_file());
    assert!(!lock.exists(), "the lock is released when the run ends");
    let outputs_of = |dir: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        let mut files = walk(&dir.join("out"));
        files.sort();
        files.into_iter().map(|p| (p.clone(), std::fs::read(p).unwrap())).collect()
    };
    let complete = outputs_of(dir.path());
    // a run that fails in a task releases it too, and leaves no parts behind
    let mut nan = Array2::<f32>::ones((48, 120));
    nan[(0, 0)] = f32::NAN;
    std::fs::write(dir.path().join("brain.npy"), write_npy(&nan.view())).unwrap();
    let out = run(&[]);
    assert!(!out.status.success());
    // a wrong input fails the same way every time: one attempt, no retries
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("task failed").count(), 1, "{stderr}");
    assert!(stderr.contains("NaN"), "{stderr}");
    assert!(!lock.exists(), "a failed run releases the lock");
    assert!(walk(&dir.path().join("out/.brainfit")).is_empty(), "a failed run removes its parts");
    // outputs are published only at the end: the failed run left the complete one as it was
    assert_eq!(outputs_of(dir.path()), complete, "the earlier complete run is untouched");
}

/// A `.npy` header for `shape` and dtype `descr` (which brainfit may not be able to write),
/// followed by `data_len` zero bytes.
fn raw_npy(descr: &str, shape: (usize, usize), data_len: usize) -> Vec<u8> {
    let header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {}), }}",
        shape.0, shape.1
    );
    let pad = 64 - (10 + header.len() + 1) % 64;
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&((header.len() + pad + 1) as u16).to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    npy.extend(std::iter::repeat_n(b' ', pad));
    npy.push(b'\n');
    npy.extend(std::iter::repeat_n(0u8, data_len));
    npy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_headers_and_the_job_file_tell_is_refused_before_any_task() {
    // float16 features: refused from the header, not three times inside tasks
    let (err, _) = refused(
        &JOB.replace("\"b.npy\"", "\"half.npy\""),
        &[("half.npy", raw_npy("<f2", (48, 3), 48 * 3 * 2))],
    )
    .await;
    assert!(err.contains("half.npy") && err.contains("float16"), "{err}");
    // a CV that cannot be made
    let (err, _) = refused(
        &JOB.replace("cv = { kind = \"group\" }", "cv = { kind = \"kfold\", k = 60 }"),
        &[],
    )
    .await;
    assert!(err.contains("[encoding] cv") && err.contains("k = 60"), "{err}");
    let one_run =
        JOB.replace("groups = \"runs.npy\"", &format!("groups = [{}]", vec!["7"; 48].join(", ")));
    let (err, _) = refused(&one_run, &[]).await;
    assert!(err.contains("at least 2 groups"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_a_different_job_in_the_same_output_are_reported() {
    let store = Store::new();
    let base = "memory://hostile/stale";
    write_study(&store, base, None).await;
    let stale = "held the results of a different job";
    let first = common::run_embedded(&store, base, JOB, 1).await.unwrap();
    assert!(!first.warnings.iter().any(|w| w.contains(stale)), "{:?}", first.warnings);
    // the same job again: nothing to say
    let again = common::run_embedded(&store, base, JOB, 1).await.unwrap();
    assert!(!again.warnings.iter().any(|w| w.contains(stale)), "{:?}", again.warnings);
    // another job (only space a) into the same output: b's maps are left from the first one
    let other = JOB.replace("b = \"b.npy\"\n", "");
    let summary = common::run_embedded(&store, base, &other, 1).await.unwrap();
    assert!(summary.warnings.iter().any(|w| w.contains(stale)), "{:?}", summary.warnings);
}
