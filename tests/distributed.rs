//! Distributed runs with real processes on 127.0.0.1: a `brainfit coordinator` and `brainfit
//! worker`s started from the built binary, driven with `brainfit submit / status / cancel /
//! results`. Every run must give byte-identical outputs to the embedded run of the same job —
//! also when workers are killed or drained mid-job and when the coordinator restarts mid-job.

mod common;

use brainfit_io::Store;
use common::{Reaped, StudySize, outputs, write_sized_study, write_study};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret-test-token";

/// 480 samples × 6144 voxels, spaces of 200 and 230 features: 24 tasks of ~0.1 s each.
const SIZE: StudySize = StudySize { samples: 480, runs: 4, voxels: 6144, a: 200, b: 230 };

const JOB: &str = common::ENCODING_JOB;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_brainfit")
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A directory holding the study and `job.toml`.
fn study_dir(job: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(write_sized_study(&Store::new(), &file_url(dir.path()), SIZE));
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    dir
}

fn job_outputs(dir: &Path) -> Files {
    rt().block_on(outputs(&Store::new(), &file_url(&dir.join("out"))))
}

/// Output files: (path below the output prefix, bytes).
type Files = Vec<(String, Vec<u8>)>;

/// The embedded run's outputs (`brainfit run`), computed once for all tests.
fn reference() -> Arc<Files> {
    static REFERENCE: Mutex<Option<Arc<Files>>> = Mutex::new(None);
    let mut r = REFERENCE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(r) = &*r {
        return r.clone();
    }
    let dir = study_dir(JOB);
    let out = run_cli(
        Command::new(bin()).args(["run", "job.toml", "--workers", "2"]).current_dir(dir.path()),
        120,
    );
    assert!(out.status.success(), "{}", text(&out));
    let outs = job_outputs(dir.path());
    assert_eq!(outs.len(), 11, "score/alpha/score.nii.gz for two spaces, and the best space");
    *r = Some(Arc::new(outs));
    r.clone().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command to its end, killing it after `timeout_s`.
fn run_cli(cmd: &mut Command, timeout_s: u64) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(timeout_s)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("{cmd:?} did not finish within {timeout_s} s");
        }
    }
}

/// `brainfit ARGS` as a client of `url`, with `token` (or none).
fn client(args: &[&str], url: &str, token: Option<&str>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).args(["--coordinator", url]);
    cmd.env_remove("BRAINFIT_TOKEN");
    if let Some(t) = token {
        cmd.env("BRAINFIT_TOKEN", t);
    }
    run_cli(&mut cmd, 60)
}

fn status(url: &str, id: &str) -> serde_json::Value {
    let out = client(&["status", id, "--json"], url, Some(TOKEN));
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn cluster_status(url: &str) -> serde_json::Value {
    let out = client(&["status", "--json"], url, Some(TOKEN));
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls the job until `what` holds (or panics after `timeout_s`).
fn wait_for(
    url: &str,
    id: &str,
    timeout_s: u64,
    what: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = status(url, id);
        if what(&s) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(timeout_s),
            "timed out waiting; last status {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_final(s: &serde_json::Value) -> bool {
    ["succeeded", "failed", "cancelled"].contains(&s["state"].as_str().unwrap())
}

/// Starts a coordinator; returns it and the address it listens on.
fn coordinator(dir: &Path, listen: &str, token: Option<&str>, extra: &[&str]) -> (Reaped, String) {
    let (child, mut lines) = coordinator_lines(dir, listen, token, extra, 1);
    (child, lines.remove(0))
}

/// Starts a coordinator; returns it, the address it listens on, and its next `more` lines of
/// output.
fn coordinator_lines(
    dir: &Path,
    listen: &str,
    token: Option<&str>,
    extra: &[&str],
    more: usize,
) -> (Reaped, Vec<String>) {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("coordinator.log"))
        .unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["coordinator", "--listen", listen, "--state"])
        .arg(dir.join("state"))
        .args(extra)
        .env_remove("BRAINFIT_TOKEN")
        .env("BRAINFIT_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log);
    if let Some(t) = token {
        cmd.env("BRAINFIT_TOKEN", t);
    }
    let mut child = Reaped(cmd.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line); // keep draining once the receiver is gone
        }
    });
    let line =
        rx.recv_timeout(Duration::from_secs(30)).expect("the coordinator prints its address");
    let addr = common::listening_address(&line);
    let mut lines = vec![addr];
    for _ in 1..more {
        lines.push(rx.recv_timeout(Duration::from_secs(30)).expect("more output"));
    }
    (child, lines)
}

fn worker(dir: &Path, url: &str, token: Option<&str>, n: usize) -> Reaped {
    let log = std::fs::File::create(dir.join(format!("worker-{n}.log"))).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["worker", "--coordinator", url, "--threads", "1"])
        .env_remove("BRAINFIT_TOKEN")
        .env("BRAINFIT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(t) = token {
        cmd.env("BRAINFIT_TOKEN", t);
    }
    Reaped(cmd.spawn().unwrap())
}

fn submit(dir: &Path, url: &str) -> String {
    let out = client(&["submit", dir.join("job.toml").to_str().unwrap()], url, Some(TOKEN));
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn parts(dir: &Path, id: &str) -> usize {
    let p: PathBuf = dir.join(format!("out/.brainfit/runs/{id}/parts"));
    std::fs::read_dir(p).map_or(0, std::iter::Iterator::count)
}

fn signal(child: &Reaped, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn three_workers_give_the_embedded_outputs_and_tokens_are_enforced() {
    let reference = reference();
    let dir = study_dir(JOB);
    let (_coordinator, addr) = coordinator(dir.path(), "127.0.0.1:0", Some(TOKEN), &[]);
    let url = format!("http://{addr}");
    let _workers: Vec<Reaped> = (0..3).map(|i| worker(dir.path(), &url, Some(TOKEN), i)).collect();
    let out = client(
        &["submit", dir.path().join("job.toml").to_str().unwrap(), "--wait"],
        &url,
        Some(TOKEN),
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("succeeded") && stdout.contains("encoding a"), "{stdout}");
    assert!(
        job_outputs(dir.path()) == *reference,
        "distributed outputs differ from the embedded run's"
    );
    let id = stdout.lines().next().unwrap().trim().to_string();
    let results = client(&["results", &id], &url, Some(TOKEN));
    assert!(results.status.success(), "{}", text(&results));
    assert!(String::from_utf8_lossy(&results.stdout).contains(&file_url(&dir.path().join("out"))));
    let s = status(&url, &id);
    assert_eq!((s["done"].as_u64(), s["total"].as_u64()), (Some(24), Some(24)));
    let summary = &s["summary"];
    assert!(summary["workers"].as_u64().unwrap() >= 1, "{summary}");

    // a wrong or missing token is refused, and never echoed
    for token in [Some("wrong-token"), None] {
        let out = client(&["status"], &url, token);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("token") && !err.contains(TOKEN), "{err}");
    }
    let mut rogue = worker(dir.path(), &url, Some("wrong-token"), 9);
    let start = Instant::now();
    let code = loop {
        if let Some(code) = rogue.0.try_wait().unwrap() {
            break code;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "a refused worker exits");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!code.success());
    assert!(log(dir.path(), "worker-9.log").contains("refused"));
    // a client holding a token refuses a coordinator that does not require one
    let (_open, open_addr) = coordinator(&dir.path().join("open"), "127.0.0.1:0", None, &[]);
    let out = client(&["status"], &format!("http://{open_addr}"), Some(TOKEN));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not require a token"),
        "{}",
        text(&out)
    );
    assert!(!log(dir.path(), "coordinator.log").contains(TOKEN), "no credential is logged");
}

/// LASSO, PCR, PLS, banded-ridge (with variance partitioning), decoding and searchlight
/// decoding jobs sharded over real worker processes (three voxel or centre chunks, with
/// permutations) give the embedded run's bytes: one cluster, one job per model.
/// Runs the job file `job(out)` writes (its output `out`) embedded (`brainfit run --workers 2`)
/// and on a coordinator with two real worker processes; both runs must write every file of
/// `expected` and the same bytes.
fn embedded_equals_distributed(dir: &Path, job: impl Fn(&str) -> PathBuf, expected: &[&str]) {
    let embedded = job("embedded");
    let out = run_cli(Command::new(bin()).arg("run").arg(&embedded).args(["--workers", "2"]), 120);
    assert!(out.status.success(), "{}", text(&out));
    let (_coordinator, addr) = coordinator(dir, "127.0.0.1:0", Some(TOKEN), &[]);
    let url = format!("http://{addr}");
    let _workers: Vec<Reaped> = (0..2).map(|i| worker(dir, &url, Some(TOKEN), i)).collect();
    let file = job("distributed");
    let out = client(&["submit", file.to_str().unwrap(), "--wait"], &url, Some(TOKEN));
    assert!(out.status.success(), "{}", text(&out));
    let read = |name: &str| rt().block_on(outputs(&Store::new(), &file_url(&dir.join(name))));
    let (embedded, distributed) = (read("embedded"), read("distributed"));
    for file in expected {
        assert!(embedded.iter().any(|(n, _)| n == file), "{file} written");
    }
    assert!(distributed == embedded, "outputs differ");
}

#[test]
fn every_encoding_model_on_real_workers_gives_the_embedded_outputs() {
    const SMALL: StudySize = StudySize { samples: 96, runs: 4, voxels: 1536, a: 12, b: 20 };
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::new();
        let base = file_url(dir.path());
        write_sized_study(&store, &base, SMALL).await;
        // two noisy repeats of the brain data, for the noise ceiling of the pls job
        let url = brainfit_io::join_url(&base, "brain.npy");
        let brain = brainfit_io::parse_npy(&store.get(&url).await.unwrap(), "brain").unwrap();
        let brain = brain.to_f64().into_dimensionality::<ndarray::Ix2>().unwrap();
        let mut rng = brainfit_kernels::rng::Rng::new(5);
        for name in ["rep0.npy", "rep1.npy"] {
            let noise: ndarray::Array2<f64> = rng.normal_array(brain.dim());
            let bytes = brainfit_io::write_npy(&(&brain + &noise).view());
            store.put(&brainfit_io::join_url(&base, name), bytes.into()).await.unwrap();
        }
    });
    // each job's analysis table, in place of the reference job's ridge encoding; the pls job
    // also has a noise ceiling and an ROI profile (the whole mask as the ROI: every chunk)
    let models = [
        ("lasso", "[encoding]\nmodel = \"lasso\"\nalphas = { logspace = [-2, 0, 3] }"),
        ("pcr", "[encoding]\nmodel = \"pcr\"\ncomponents = [2, 5, 10]"),
        (
            "pls",
            "[rois]\nall = \"mask.nii.gz\"\n[encoding]\nmodel = \"pls\"\ncomponents = [1, 3, 8]",
        ),
        (
            "banded_ridge",
            "[encoding]\nmodel = \"banded_ridge\"\nalphas = [0.1, 10.0, 1000.0]\npartition = true\n\
             random_search = { n_iter = 6 }",
        ),
        ("decoding", "[decoding]\nalphas = { logspace = [1, 5, 3] }"),
        (
            "searchlight_decoding",
            "[decoding]\nspaces = [\"a\"]\nradius = 1.5\nalphas = [10.0, 1000.0]",
        ),
    ];
    let job = |_: &str, table: &str, out: &str| {
        let file = dir.path().join(format!("{out}.toml"));
        let mut text = JOB
            .replace("output = \"out\"", &format!("output = \"{out}\""))
            .replace("[encoding]\nalphas = { logspace = [-1, 3, 5] }", table)
            + "[permutation]\nn = 3\nscheme = \"whole-groups\"\n";
        if table.contains("radius") {
            // three searchlight tasks
            text = text
                .replace("voxels_per_task = 512", "voxels_per_task = 512\ncentres_per_task = 512");
        }
        if table.contains("[rois]") {
            let repeats = "groups = \"runs.npy\"\nrepeats = [\"rep0.npy\", \"rep1.npy\"]";
            text = text.replace("groups = \"runs.npy\"", repeats);
        }
        std::fs::write(&file, text).unwrap();
        file
    };
    for (model, grid) in models {
        let file = job(model, grid, &format!("embedded-{model}"));
        let out = run_cli(Command::new(bin()).arg("run").arg(&file).args(["--workers", "2"]), 120);
        assert!(out.status.success(), "{model}: {}", text(&out));
    }
    let (_coordinator, addr) = coordinator(dir.path(), "127.0.0.1:0", Some(TOKEN), &[]);
    let url = format!("http://{addr}");
    let _workers: Vec<Reaped> = (0..2).map(|i| worker(dir.path(), &url, Some(TOKEN), i)).collect();
    for (model, grid) in models {
        let file = job(model, grid, &format!("distributed-{model}"));
        let out = client(&["submit", file.to_str().unwrap(), "--wait"], &url, Some(TOKEN));
        assert!(out.status.success(), "{model}: {}", text(&out));
        let read =
            |name: &str| rt().block_on(outputs(&Store::new(), &file_url(&dir.path().join(name))));
        let embedded = read(&format!("embedded-{model}"));
        assert!(
            embedded.iter().any(|(n, _)| n.ends_with("p_fwe.npy")),
            "{model}: permutation maps written"
        );
        if model == "pls" {
            for file in
                ["encoding/ceiling.npy", "encoding/a/score_normalised.npy", "encoding/profile.csv"]
            {
                assert!(embedded.iter().any(|(n, _)| n == file), "{file} written");
            }
        }
        assert!(read(&format!("distributed-{model}")) == embedded, "{model}: outputs differ");
    }
}

/// Issue 14's RSA in one job, sharded over real worker processes (three searchlight tasks,
/// three permutation tasks each for ROI and time-resolved RSA): crossnobis RDMs of conditions in
/// runs, CKA and Bures comparisons, a reweighted set, a unit weighting, a remixed model, a
/// variance partition and cross-temporal RSA give the embedded run's bytes.
#[test]
fn rsa_beyond_vanilla_on_real_workers_gives_the_embedded_outputs() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::new();
        let base = file_url(dir.path());
        // 48 samples: 12 conditions in each of 4 runs
        write_study(&store, &base, None).await;
        let mut rng = brainfit_kernels::rng::Rng::new(14);
        let put = |name: &str, bytes: Vec<u8>| {
            let url = brainfit_io::join_url(&base, name);
            let store = store.clone();
            async move { store.put(&url, bytes.into()).await.unwrap() }
        };
        let conditions: ndarray::Array1<i64> = (0..48).map(|t| (t * 5) % 12).collect();
        put("conds.npy", brainfit_io::write_npy(&conditions.view())).await;
        let train: ndarray::Array2<f64> = rng.normal_array((40, 9));
        let labels: ndarray::Array1<i64> = (0..40).map(|i| i % 4).collect();
        put("train.npy", brainfit_io::write_npy(&train.view())).await;
        put("labels.npy", brainfit_io::write_npy(&labels.view())).await;
        let meg: ndarray::Array3<f64> = rng.normal_array((5, 12, 4));
        put("meg.npy", brainfit_io::write_npy(&meg.view())).await;
    });
    let job = |out: &str| {
        let text = format!(
            r#"
name = "rsa14"
output = "{out}"
[data]
brain = "brain.npy"
mask = "mask.nii.gz"
groups = "runs.npy"
conditions = "conds.npy"
[features]
a = "a.npy"
b = "b.npy"
[rsa]
rois = {{ all = "mask.nii.gz" }}
rdm = "crossnobis"
noise = "shrinkage_diag"
compare = ["spearman", "cka_linear", "bures"]
partition = ["a", "b"]
[rsa.reweight.ab]
models = ["a", "b", "rm"]
folds = 3
[rsa.unit_weighting.ua]
space = "a"
components = 3
folds = 3
[rsa.remix.rm]
space = "b"
train = "train.npy"
labels = "labels.npy"
cs = [0.1, 1.0]
folds = 2
[searchlight]
radius = 2.0
min_voxels = 3
rdm = "crossnobis"
compare = "rho_a"
[time_resolved]
data = "meg.npy"
cross_temporal = true
[permutation]
n = 7
seed = 2
[execution]
centres_per_task = 50
permutations_per_task = 3
"#
        );
        let file = dir.path().join(format!("{out}.toml"));
        std::fs::write(&file, text).unwrap();
        file
    };
    embedded_equals_distributed(
        dir.path(),
        job,
        &[
            "rsa/compare.csv",
            "rsa/partition.csv",
            "rsa/weights.csv",
            "searchlight/ab/p_fwe.npy",
            "searchlight/partition/a+b.npy",
            "time_resolved/ua.unweighted/rho.npy",
            "searchlight/ab/weight_rm.npy",
            "time_resolved/ua/weight_pc_3.npy",
            "cross_temporal/p_fwe.npy",
        ],
    );
}

#[test]
fn group_tests_on_real_workers_give_the_embedded_outputs() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::new();
        let base = file_url(dir.path());
        write_study(&store, &base, None).await;
        // four subjects: the study's brain plus each its own noise
        let url = brainfit_io::join_url(&base, "brain.npy");
        let brain = brainfit_io::parse_npy(&store.get(&url).await.unwrap(), &url).unwrap().to_f64();
        let brain = brain.into_dimensionality::<ndarray::Ix2>().unwrap();
        let mut rng = brainfit_kernels::rng::Rng::new(18);
        for s in 0..4 {
            let noise: ndarray::Array2<f64> = rng.normal_array(brain.dim());
            let b = (&brain + &noise).mapv(|v| v as f32);
            let url = brainfit_io::join_url(&base, &format!("brain{s}.npy"));
            store.put(&url, brainfit_io::write_npy(&b.view()).into()).await.unwrap();
        }
    });
    let job = |out: &str| {
        let subjects: String = (0..4)
            .map(|s| format!("[[subjects]]\nname = \"s{s}\"\ndata = {{ brain = \"brain{s}.npy\", mask = \"mask.nii.gz\", groups = \"runs.npy\" }}\n"))
            .collect();
        let text = format!(
            "name = \"group18\"\noutput = \"{out}\"\n{subjects}[features]\na = \"a.npy\"\nb = \"b.npy\"\n[encoding]\nalphas = [1.0, 100.0]\ncv = {{ kind = \"group\" }}\n[rsa]\nrois = {{ all = \"mask.nii.gz\" }}\n[group]\nmaps = [\"encoding\", \"best_score\", \"roi_rsa\"]\nn = 40\ntfce = true\ncluster_threshold = 2.0\nconnectivity = 18\n[execution]\npermutations_per_task = 7\n"
        );
        let file = dir.path().join(format!("{out}.toml"));
        std::fs::write(&file, text).unwrap();
        file
    };
    embedded_equals_distributed(
        dir.path(),
        job,
        &[
            "group/mask.nii.gz",
            "group/encoding/a/t.npy",
            "group/encoding/a/p_tfce_fwe.npy",
            "group/encoding/b/clusters.csv",
            "group/best_score/p_fwe.nii.gz",
            "group/best_score/null_max_tfce.npy",
            "group/roi_rsa/a/table.csv",
            "group/roi_rsa/b/p_fwe.npy",
        ],
    );
}

#[test]
fn killing_and_draining_workers_mid_job_still_gives_the_embedded_outputs() {
    let reference = reference();
    let dir = study_dir(JOB);
    let (_coordinator, addr) =
        coordinator(dir.path(), "127.0.0.1:0", Some(TOKEN), &["--lease-timeout-ms", "1500"]);
    let url = format!("http://{addr}");
    let mut workers: Vec<Option<Reaped>> =
        (0..3).map(|i| Some(worker(dir.path(), &url, Some(TOKEN), i))).collect();
    let id = submit(dir.path(), &url);
    // kill worker 0 while it holds a task, a few tasks into the job
    let victim = workers[0].as_ref().unwrap().id();
    let start = Instant::now();
    loop {
        let c = cluster_status(&url);
        let job = &c["jobs"][0];
        let busy = c["workers"].as_array().unwrap().iter().any(|w| {
            w["name"].as_str().unwrap().ends_with(&format!("/{victim}"))
                && w["leases"].as_u64().unwrap() > 0
        });
        let done = job["done"].as_u64().unwrap();
        assert!(done < 20, "the job ran too far before a kill: {c}");
        if busy && done >= 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{c}");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(workers[0].as_ref().unwrap(), "-KILL");
    drop(workers[0].take());
    // drain worker 1: it finishes its task, hands back nothing else, and exits cleanly
    signal(workers[1].as_ref().unwrap(), "-TERM");
    let drained = workers[1].as_mut().unwrap();
    let start = Instant::now();
    let code = loop {
        if let Some(code) = drained.0.try_wait().unwrap() {
            break code;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "a drained worker exits");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{}", log(dir.path(), "worker-1.log"));
    assert!(log(dir.path(), "worker-1.log").contains("draining"));
    let s = wait_for(&url, &id, 60, is_final);
    eprintln!("final status: {s}");
    assert_eq!(s["state"], "succeeded", "{s}");
    assert!(
        s["retries"].as_u64().unwrap() >= 1,
        "the killed worker's task was re-queued after the lease timeout: {s}"
    );
    assert!(job_outputs(dir.path()) == *reference, "outputs differ from the embedded run's");
}

#[test]
fn a_restarted_coordinator_resumes_the_job_without_redoing_finished_tasks() {
    let reference = reference();
    let dir = study_dir(JOB);
    let extra = ["--lease-timeout-ms", "3000"];
    let (first, addr) = coordinator(dir.path(), "127.0.0.1:0", Some(TOKEN), &extra);
    let url = format!("http://{addr}");
    let _workers: Vec<Reaped> = (0..2).map(|i| worker(dir.path(), &url, Some(TOKEN), i)).collect();
    // a waiting client follows the job across the restart
    let mut waiting = Command::new(bin());
    waiting
        .args(["submit", dir.path().join("job.toml").to_str().unwrap(), "--wait"])
        .args(["--coordinator", &url])
        .env("BRAINFIT_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut waiting = Reaped(waiting.spawn().unwrap());
    let mut lines = BufReader::new(waiting.0.stdout.take().unwrap()).lines();
    let id = lines.next().unwrap().unwrap().trim().to_string();
    wait_for(&url, &id, 30, |s| s["done"].as_u64().unwrap() >= 6);
    signal(&first, "-KILL");
    drop(first);
    let finished = parts(dir.path(), &id);
    eprintln!("{finished} parts stored when the coordinator was killed");
    assert!((6..24).contains(&finished), "{finished} parts at the kill");

    let (_second, again) = coordinator(dir.path(), &addr, Some(TOKEN), &extra);
    assert_eq!(again, addr);
    let s = wait_for(&url, &id, 60, is_final);
    eprintln!("final status: {s}");
    assert_eq!(s["state"], "succeeded", "{s}");
    let (total, resumed) = (s["total"].as_u64().unwrap(), s["resumed"].as_u64().unwrap());
    let (leases, retries) = (s["leases"].as_u64().unwrap(), s["retries"].as_u64().unwrap());
    assert!(resumed >= finished as u64, "{s}");
    assert!(leases <= total - resumed + retries, "finished tasks were leased again: {s}");
    assert!(job_outputs(dir.path()) == *reference, "outputs differ from the embedded run's");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let code = waiting.0.wait().unwrap();
    assert!(code.success(), "the waiting client: {rest:?}");
    assert!(rest.join("\n").contains("succeeded"), "{rest:?}");
}

#[test]
fn cancelling_a_running_job_stops_its_tasks_on_the_workers() {
    // 10,000 permutations: each task would run for many minutes
    let dir = study_dir(&format!("{JOB}[permutation]\nn = 10000\n"));
    let (_coordinator, addr) = coordinator(dir.path(), "127.0.0.1:0", Some(TOKEN), &[]);
    let url = format!("http://{addr}");
    let _worker = worker(dir.path(), &url, Some(TOKEN), 0);
    let id = submit(dir.path(), &url);
    wait_for(&url, &id, 60, |s| s["running"].as_u64() >= Some(1));
    let out = client(&["cancel", &id], &url, Some(TOKEN));
    assert!(out.status.success(), "{}", text(&out));
    // the worker hears of it at its next heartbeat (every 5 s here) and stops the task at
    // its next permutation, without reporting it
    let start = Instant::now();
    while !log(dir.path(), "worker-0.log").contains("abandoned at the coordinator's request") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", log(dir.path(), "worker-0.log"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(parts(dir.path(), &id), 0, "a cancelled run leaves no parts");
    assert!(!dir.path().join("out/.brainfit/lock.json").exists(), "its output is free");
    // the same worker takes the next job at once
    std::fs::write(dir.path().join("job.toml"), JOB).unwrap();
    let next = submit(dir.path(), &url);
    let done = wait_for(&url, &next, 120, is_final);
    assert_eq!(done["state"], "succeeded", "{done}");
}

/// The port of a `... metrics on http://127.0.0.1:PORT` line.
fn metrics_port(line: &str) -> u16 {
    let port = line.rsplit(':').next().and_then(|p| p.trim().parse().ok());
    port.unwrap_or_else(|| panic!("no metrics address in {line:?}"))
}

/// `GET path` over plain HTTP/1.1: (status code, body); status 0 while nothing listens.
fn http_get(port: u16, path: &str) -> (u16, String) {
    common::http(port, "GET", path).unwrap_or((0, String::new()))
}

/// The value of the sample `name` (with its labels, as printed) in a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn health_and_metrics_answer_over_http() {
    let dir = study_dir(&format!("{JOB}[permutation]\nn = 10000\n"));
    let extra = ["--metrics-listen", "127.0.0.1:0"];
    let (_coordinator, lines) =
        coordinator_lines(dir.path(), "127.0.0.1:0", Some(TOKEN), &extra, 2);
    let (url, c_port) = (format!("http://{}", lines[0]), metrics_port(&lines[1]));
    // the metrics port is bound before the coordinator prints its address
    assert_eq!(http_get(c_port, "/healthz").0, 200, "port {c_port}");
    assert_eq!(http_get(c_port, "/readyz").0, 200);
    assert_eq!(http_get(c_port, "/nothing").0, 404);
    let log = std::fs::File::create(dir.path().join("worker-m.log")).unwrap();
    let mut worker = Reaped(
        Command::new(bin())
            .args(["worker", "--coordinator", &url, "--threads", "1"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("BRAINFIT_TOKEN", TOKEN)
            .env("BRAINFIT_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(worker.0.stdout.take().unwrap()).lines();
    let w_port = metrics_port(&stdout.next().unwrap().unwrap());
    std::thread::spawn(move || stdout.for_each(drop)); // keep the pipe open
    // the worker is ready once registered
    let start = Instant::now();
    while http_get(w_port, "/readyz").0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(30), "the worker never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = submit(dir.path(), &url);
    wait_for(&url, &id, 60, |s| s["running"].as_u64() >= Some(1));
    let page = http_get(c_port, "/metrics").1;
    let running = format!("brainfit_tasks{{job=\"{id}\",name=\"tiny\",state=\"running\"}}");
    assert_eq!(sample(&page, &running), Some(1.0), "{page}");
    assert_eq!(sample(&page, "brainfit_workers_alive"), Some(1.0), "{page}");
    assert!(sample(&page, "brainfit_storage_bytes_read_total").unwrap() > 0.0, "{page}");
    // cancelled: the coordinator counts the job, the worker the abandoned task
    assert!(client(&["cancel", &id], &url, Some(TOKEN)).status.success());
    let page = http_get(c_port, "/metrics").1;
    assert_eq!(sample(&page, "brainfit_jobs{state=\"cancelled\"}"), Some(1.0), "{page}");
    let abandoned = "brainfit_worker_tasks_total{outcome=\"abandoned\"}";
    let start = Instant::now();
    let page = loop {
        let page = http_get(w_port, "/metrics").1;
        if sample(&page, abandoned) == Some(1.0) {
            break page;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{page}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(sample(&page, "brainfit_worker_registered"), Some(1.0), "{page}");
    assert!(sample(&page, "brainfit_storage_bytes_read_total").unwrap() > 0.0, "{page}");
    assert!(page.contains("brainfit_worker_task_seconds_bucket"), "{page}");
}

#[test]
fn a_worker_with_exit_when_idle_leaves_once_the_queue_is_empty() {
    let dir = study_dir(JOB);
    let (_coordinator, addr) = coordinator(dir.path(), "127.0.0.1:0", Some(TOKEN), &[]);
    let url = format!("http://{addr}");
    let id = submit(dir.path(), &url); // queued before any worker exists
    let worker_log = std::fs::File::create(dir.path().join("worker-idle.log")).unwrap();
    let mut worker = Reaped(
        Command::new(bin())
            .args(["worker", "--coordinator", &url, "--threads", "1", "--exit-when-idle", "2"])
            .env("BRAINFIT_TOKEN", TOKEN)
            .env("BRAINFIT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(worker_log)
            .spawn()
            .unwrap(),
    );
    // it computes every task, then leaves on its own, successfully
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = worker.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{}",
            log(dir.path(), "worker-idle.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{}", log(dir.path(), "worker-idle.log"));
    assert!(log(dir.path(), "worker-idle.log").contains("exit-when-idle"));
    assert_eq!(status(&url, &id)["state"], "succeeded");
    assert_eq!(job_outputs(dir.path()), *reference(), "the same bytes as brainfit run");
}

#[test]
fn failing_and_cancelled_jobs_end_with_their_exit_status() {
    // features with a NaN pass submission (only headers are checked) but fail every attempt
    let dir = study_dir(&JOB.replace("b.npy", "nan.npy"));
    let mut b = ndarray::Array2::<f32>::ones((SIZE.samples, 4));
    b[(5, 2)] = f32::NAN;
    std::fs::write(dir.path().join("nan.npy"), brainfit_io::write_npy(&b.view())).unwrap();
    let (_coordinator, addr) = coordinator(dir.path(), "127.0.0.1:0", Some(TOKEN), &[]);
    let url = format!("http://{addr}");
    // a job cancelled while it waits for workers: `submit --wait` exits with 3
    let mut cmd = Command::new(bin());
    cmd.args(["submit", dir.path().join("job.toml").to_str().unwrap(), "--wait"])
        .args(["--coordinator", &url])
        .env("BRAINFIT_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut waiting = Reaped(cmd.spawn().unwrap());
    let mut lines = BufReader::new(waiting.0.stdout.take().unwrap()).lines();
    let id = lines.next().unwrap().unwrap().trim().to_string();
    let out = client(&["cancel", &id], &url, Some(TOKEN));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(waiting.0.wait().unwrap().code(), Some(3));
    assert_eq!(status(&url, &id)["state"], "cancelled");
    let out = client(&["results", &id], &url, Some(TOKEN));
    assert!(!out.status.success());

    // the same job with workers: every attempt at a task of `b` fails -> the job fails (exit 1)
    let _workers: Vec<Reaped> = (0..2).map(|i| worker(dir.path(), &url, Some(TOKEN), i)).collect();
    let out = client(
        &["submit", dir.path().join("job.toml").to_str().unwrap(), "--wait"],
        &url,
        Some(TOKEN),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nan.npy") && err.contains("NaN"), "{err}");
}

#[test]
fn jobs_outside_the_allowed_roots_are_refused_at_submit() {
    let dir = study_dir(JOB);
    let root = file_url(dir.path());
    let (_coordinator, addr) = coordinator(
        &dir.path().join("coord"),
        "127.0.0.1:0",
        Some(TOKEN),
        &["--allowed-roots", &root],
    );
    let url = format!("http://{addr}");
    let escaping = [
        JOB.replace("output = \"out\"", "output = \"../escaped\""),
        JOB.replace("\"a.npy\"", "\"/etc/passwd\""),
    ];
    for (i, job) in escaping.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, job).unwrap();
        let out = client(&["submit", file.to_str().unwrap()], &url, Some(TOKEN));
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("outside the allowed roots"), "{}", text(&out));
    }
    assert!(!dir.path().parent().unwrap().join("escaped").exists());
    // inside the root: accepted
    let out = client(&["submit", dir.path().join("job.toml").to_str().unwrap()], &url, Some(TOKEN));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn tls_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(d.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(d.join("key.pem"), key.serialize_pem()).unwrap();
    // the tiny study: two tasks
    rt().block_on(write_study(&Store::new(), &file_url(d), None));
    std::fs::write(
        d.join("job.toml"),
        "name = \"tls\"\noutput = \"out\"\n[data]\nbrain = \"brain.npy\"\nmask = \"mask.nii.gz\"\n\
         [features]\na = \"a.npy\"\n[encoding]\ncv = { kind = \"kfold\", k = 3 }\n",
    )
    .unwrap();
    let cert_args = [
        "--tls-cert",
        d.join("cert.pem").to_str().unwrap(),
        "--tls-key",
        d.join("key.pem").to_str().unwrap(),
    ]
    .map(String::from);
    let cert_args: Vec<&str> = cert_args.iter().map(String::as_str).collect();
    let (_coordinator, addr) = coordinator(d, "127.0.0.1:0", Some(TOKEN), &cert_args);
    let url = format!("https://{addr}");
    let ca_path = d.join("ca.pem");
    let mut w = Command::new(bin());
    w.args(["worker", "--coordinator", &url, "--threads", "1", "--tls-ca"])
        .arg(&ca_path)
        .env("BRAINFIT_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("worker.log")).unwrap());
    let _worker = Reaped(w.spawn().unwrap());
    let job = d.join("job.toml");
    let mut cmd = Command::new(bin());
    cmd.args(["submit", job.to_str().unwrap(), "--wait", "--coordinator", &url, "--tls-ca"])
        .arg(&ca_path)
        .env("BRAINFIT_TOKEN", TOKEN);
    let out = run_cli(&mut cmd, 60);
    assert!(out.status.success(), "{}\n{}", text(&out), log(d, "worker.log"));
    assert!(d.join("out/encoding/a/score.npy").is_file());
    // without the CA, or over plain HTTP, there is no talking to it
    let out = client(&["status"], &url, Some(TOKEN));
    assert!(!out.status.success());
    let out = client(&["status"], &format!("http://{addr}"), Some(TOKEN));
    assert!(!out.status.success());
}

#[test]
fn extraction_on_real_workers_gives_the_embedded_outputs() {
    // images to features (PCA and a projection) to encoding and RSA, in 3 + 3 extraction
    // tasks, 3 assemblies and the analyses, on two worker processes
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    for (from, to) in [
        ("tests/fixtures/onnx/tiny_alexnet.onnx", "net.onnx"),
        ("tests/data/kriegeskorte2008/images.npy", "images.npy"),
        ("tests/data/kriegeskorte2008/human_it_rdm.npy", "human_it.npy"),
    ] {
        std::fs::copy(format!("{root}/{from}"), dir.path().join(to)).unwrap();
    }
    let brain: ndarray::Array2<f64> = brainfit_kernels::rng::Rng::new(3).normal_array((92, 12));
    std::fs::write(dir.path().join("brain.npy"), brainfit_io::write_npy(&brain.view())).unwrap();
    let job = |out: &str| {
        let text = format!(
            r#"
name = "extract15"
output = "{out}"
[data]
brain = "brain.npy"
[extract]
model = "net.onnx"
images = "images.npy"
reference = "images.npy"
layers = {{ fc6 = "fc6_out", relu2 = "relu2_out", conv1 = "conv1_out" }}
batch = 8
images_per_task = 32
[compress.relu2]
method = "pca"
components = 8
batch = 32
[compress.conv1]
method = "gaussian_random_projection"
components = 20
[encoding]
alphas = [1.0, 100.0]
cv = {{ kind = "kfold", k = 3 }}
inner_cv = {{ kind = "kfold", k = 2 }}
[rsa]
brain_rdms = {{ human_it = "human_it.npy" }}
"#
        );
        let file = dir.path().join(format!("{out}.toml"));
        std::fs::write(&file, text).unwrap();
        file
    };
    embedded_equals_distributed(
        dir.path(),
        job,
        &[
            "features/fc6.npy",
            "features/relu2.npy",
            "features/conv1.npy",
            "compress/relu2.npz",
            "encoding/relu2/score.npy",
            "rsa/compare.csv",
        ],
    );
}
