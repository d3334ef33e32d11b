//! Helpers shared by the integration tests: synthetic studies written through the store, and
//! child processes that are killed when a test ends (passes or panics).

#![allow(dead_code)] // each test file uses some of these

pub(crate) mod chromium;

use brainfit_client::{RunOptions, run_job};
use brainfit_io::{Store, join_url, write_nifti_f32, write_npy};
use brainfit_job::JobSpec;
use brainfit_kernels::rng::Rng;
use ndarray::{Array1, Array2, Array3};
use std::process::Child;

/// A tiny study: 6×7×5 volume, 120-voxel mask, 48 samples in 4 runs, voxels 0..20 driven by
/// `a` (features `a.npy` 48×6 and `b.npy` 48×9, `brain.npy`, `mask.nii.gz`, `runs.npy`).
/// `n_voxels_in_brain` overrides the brain matrix's width (to make it disagree with the mask).
pub(crate) async fn write_study(store: &Store, base: &str, n_voxels_in_brain: Option<usize>) {
    let mut rng = Rng::new(42);
    let mut mask = Array3::<f32>::zeros((6, 7, 5));
    // gcd(37, 210) = 1, so exactly 120 of the 210 voxels, scattered
    for (i, v) in mask.iter_mut().enumerate() {
        if (i * 37) % 210 < 120 {
            *v = 1.0;
        }
    }
    let n_vox = mask.iter().filter(|v| **v != 0.0).count();
    let a: Array2<f32> = rng.normal_array((48, 6));
    let b: Array2<f32> = rng.normal_array((48, 9));
    let mut brain: Array2<f32> = rng.normal_array((48, n_voxels_in_brain.unwrap_or(n_vox)));
    let w: Array2<f32> = rng.normal_array((6, 20));
    let signal = a.dot(&w);
    brain.slice_mut(ndarray::s![.., ..20]).scaled_add(1.0, &signal);
    let runs: Array1<i64> = (0..48).map(|t| t / 12).collect();
    put_study(store, base, &mask, &brain, &a, &b, &runs).await;
}

/// The size of a [`write_sized_study`] study.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StudySize {
    /// Samples, in runs of `samples / runs`.
    pub samples: usize,
    /// Runs (groups).
    pub runs: usize,
    /// Voxels in the mask.
    pub voxels: usize,
    /// Features of space `a` (which drives voxels 0..20).
    pub a: usize,
    /// Features of space `b` (noise).
    pub b: usize,
}

/// A study of `size` with the same files as [`write_study`]: a 16×16×z mask holding exactly
/// `size.voxels` voxels, voxels 0..20 driven by `a`.
pub(crate) async fn write_sized_study(store: &Store, base: &str, size: StudySize) {
    let mut rng = Rng::new(1234);
    let mut z = (2 * size.voxels).div_ceil(256);
    if z.is_multiple_of(37) {
        z += 1; // keep gcd(37, 256 z) = 1: exactly `voxels` voxels
    }
    let total = 256 * z;
    let mut mask = Array3::<f32>::zeros((16, 16, z));
    for (i, v) in mask.iter_mut().enumerate() {
        if (i * 37) % total < size.voxels {
            *v = 1.0;
        }
    }
    let a: Array2<f32> = rng.normal_array((size.samples, size.a));
    let b: Array2<f32> = rng.normal_array((size.samples, size.b));
    let mut brain: Array2<f32> = rng.normal_array((size.samples, size.voxels));
    let w: Array2<f32> = rng.normal_array((size.a, 20));
    brain.slice_mut(ndarray::s![.., ..20]).scaled_add(0.3, &a.dot(&w));
    let per_run = size.samples.div_ceil(size.runs);
    let runs: Array1<i64> = (0..size.samples as i64).map(|t| t / per_run as i64).collect();
    put_study(store, base, &mask, &brain, &a, &b, &runs).await;
}

async fn put_study(
    store: &Store,
    base: &str,
    mask: &Array3<f32>,
    brain: &Array2<f32>,
    a: &Array2<f32>,
    b: &Array2<f32>,
    runs: &Array1<i64>,
) {
    let affine = [
        [3.0, 0.0, 0.0, -9.0],
        [0.0, 3.0, 0.0, -10.0],
        [0.0, 0.0, 3.5, -7.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let files: [(&str, Vec<u8>); 5] = [
        ("mask.nii.gz", write_nifti_f32(mask.view(), &affine, true)),
        ("brain.npy", write_npy(&brain.view())),
        ("a.npy", write_npy(&a.view())),
        ("b.npy", write_npy(&b.view())),
        ("runs.npy", write_npy(&runs.view())),
    ];
    put_files(store, base, files).await;
}

/// Writes each `(name, bytes)` below `base`.
pub(crate) async fn put_files<'a>(
    store: &Store,
    base: &str,
    files: impl IntoIterator<Item = (&'a str, Vec<u8>)>,
) {
    for (name, bytes) in files {
        store.put(&join_url(base, name), bytes.into()).await.unwrap();
    }
}

/// Every object below `prefix` except `summary.json` and `report.html` (they hold timings and
/// the worker count), as (path below `prefix`, bytes), sorted.
pub(crate) async fn outputs(store: &Store, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for url in store.list(prefix).await.unwrap() {
        // summary.json and the report drawn from it carry timings and worker counts
        if url.ends_with("summary.json")
            || url.ends_with("report.html")
            || url.contains("/.brainfit/")
        {
            continue;
        }
        let rel = url.strip_prefix(prefix).unwrap().trim_start_matches('/').to_string();
        out.push((rel, store.get(&url).await.unwrap().to_vec()));
    }
    out
}

/// A child process killed (SIGKILL) and reaped when dropped, so that no test leaves
/// processes behind, even when it panics.
pub(crate) struct Reaped(pub Child);

impl Reaped {
    /// Its process id.
    pub(crate) fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a job file's text embedded, relative paths resolving against `base`; the summary, or
/// the error's message.
pub(crate) async fn run_embedded(
    store: &Store,
    base: &str,
    job: &str,
    workers: usize,
) -> Result<brainfit_job::Summary, String> {
    let spec = JobSpec::from_toml(job, "job.toml", base).map_err(|e| e.to_string())?;
    run_job(store, spec, RunOptions { workers, on_progress: None })
        .await
        .map(|r| r.summary)
        .map_err(|e| e.to_string())
}

/// The encoding job over a study written by [`write_study`] / [`write_sized_study`]: spaces
/// `a` and `b`, leave-one-run-out outer CV, 512 voxels per task.
pub(crate) const ENCODING_JOB: &str = r#"
name = "tiny"
output = "out"
[data]
brain = "brain.npy"
mask = "mask.nii.gz"
groups = "runs.npy"
[features]
a = "a.npy"
b = "b.npy"
[encoding]
alphas = { logspace = [-1, 3, 5] }
cv = { kind = "group" }
inner_cv = { kind = "kfold", k = 3 }
[execution]
voxels_per_task = 512
"#;

/// Executable `name` of the project's `.venv-test` (moto_server, kubernetes-validate,
/// hadolint, python); see [`test_venv`].
#[allow(dead_code)] // not every test binary needs a tool
pub(crate) fn venv_tool(name: &str) -> std::path::PathBuf {
    let exe = test_venv().join("bin").join(name);
    assert!(exe.is_file(), "{} is missing from the test venv", exe.display());
    exe
}

/// The project's `.venv-test`, set up on first use with `scripts/python/setup_venv.sh test` —
/// which also brings an older venv up to the pinned requirements. The set-up runs under an
/// exclusive lock on `.venv-test.lock`, so tests in parallel (and test binaries running at
/// once) install once and then all find their tools.
#[allow(dead_code)] // not every test binary needs a tool
pub(crate) fn test_venv() -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join(".venv-test");
    let lock = std::fs::File::create(root.join(".venv-test.lock")).expect("create .venv-test.lock");
    lock.lock().expect("lock .venv-test.lock");
    static CHECKED: std::sync::Once = std::sync::Once::new();
    let mut output = None;
    CHECKED.call_once(|| {
        output = Some(
            std::process::Command::new("bash")
                .arg(root.join("scripts/python/setup_venv.sh"))
                .arg("test")
                .output()
                .expect("run scripts/python/setup_venv.sh (needs bash)"),
        );
    });
    let failed = output.as_ref().is_some_and(|out| !out.status.success());
    assert!(
        !failed && venv.join("bin/python").is_file(),
        "{} is missing and `scripts/python/setup_venv.sh test` could not make it (it needs \
         python3 with venv and access to the Python package registry):\n{}",
        venv.display(),
        output.map_or(String::new(), |o| format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    );
    venv // the lock is released when `lock` drops
}

/// Executable `name` of the project's pinned npm packages (`scripts/node`: azurite-blob),
/// installed on first use with `npm ci` from `scripts/node/package-lock.json` (again when the
/// lock file is newer than the installation), under an exclusive lock like [`test_venv`].
#[allow(dead_code)] // not every test binary needs a tool
pub(crate) fn node_tool(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/node");
    let exe = dir.join("node_modules/.bin").join(name);
    let lock = std::fs::File::create(dir.join("node_modules.lock")).expect("create its lock");
    lock.lock().expect("lock scripts/node/node_modules.lock");
    let modified = |p: &str| std::fs::metadata(dir.join(p)).and_then(|m| m.modified()).ok();
    let stale = modified("node_modules/.package-lock.json") < modified("package-lock.json");
    if stale || !exe.is_file() {
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("run npm (needs Node.js and npm)");
        assert!(
            out.status.success() && exe.is_file(),
            "`npm ci` in {} could not install {name} (it needs Node.js, npm and access to the \
             npm registry):\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    exe
}

/// A bodiless HTTP/1.1 request to 127.0.0.1:`port`: the status code and body, or `None` if
/// nothing answered.
#[allow(dead_code)] // not every test binary talks HTTP
pub(crate) fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Some((status, body))
}

/// The address in a coordinator's first line of output (`... listening on HOST:PORT ...`).
#[allow(dead_code)] // not every test binary starts a coordinator
pub(crate) fn listening_address(line: &str) -> String {
    line.split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in the coordinator's first line {line:?}"))
        .to_string()
}

/// Reference fixture `tests/fixtures/<dir>/<name>.npy` (made by scripts/python/make_fixtures.py).
pub(crate) fn fixture(dir: &str, name: &str) -> brainfit_io::NpyArray {
    let path = format!("{}/tests/fixtures/{dir}/{name}.npy", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    brainfit_io::parse_npy(&bytes, &path).unwrap()
}

/// [`fixture`] as an f64 array of dimension `D`.
pub(crate) fn fixture_f64<D: ndarray::Dimension>(dir: &str, name: &str) -> ndarray::Array<f64, D> {
    fixture(dir, name).to_f64().into_dimensionality::<D>().unwrap()
}

/// A golden encoding fixture's data and cross-validation: `X`, `Y`, the group labels when the
/// case has `groups.npy`, and the scheme of both CV levels (leave-one-group-out with groups,
/// else scikit-learn's 5-fold `KFold`) with its outer folds.
pub(crate) struct FixtureCase {
    pub x: Array2<f64>,
    pub y: Array2<f64>,
    pub groups: Option<Vec<i64>>,
    pub scheme: brainfit_kernels::cv::CvScheme,
    pub outer: Vec<brainfit_kernels::cv::Fold>,
}

/// The [`FixtureCase`] of fixture directory `dir` (e.g. `"lasso/groups"`).
pub(crate) fn fixture_case(dir: &str) -> FixtureCase {
    use brainfit_kernels::cv::{CvScheme, split};
    let path = format!("{}/tests/fixtures/{dir}/groups.npy", env!("CARGO_MANIFEST_DIR"));
    let groups: Option<Vec<i64>> = std::path::Path::new(&path)
        .exists()
        .then(|| fixture(dir, "groups").to_i64("groups").unwrap().iter().copied().collect());
    let x: Array2<f64> = fixture_f64(dir, "X");
    let scheme =
        if groups.is_some() { CvScheme::LeaveOneGroupOut } else { CvScheme::KFold { k: 5 } };
    let outer = split(scheme, x.nrows(), groups.as_deref()).unwrap();
    FixtureCase { y: fixture_f64(dir, "Y"), x, groups, scheme, outer }
}
