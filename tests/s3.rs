//! S3 through a real S3-compatible server: `moto_server` (from `.venv-test`) started on
//! 127.0.0.1 by each test. When the venv is missing, the first test to need it creates it with
//! `scripts/python/setup_venv.sh test` (Python 3 and the package registry), under a file lock so
//! that parallel tests wait for one installation. A test that cannot start its server fails
//! with the reason; nothing here is skipped.

mod common;

use brainfit_client::{RunOptions, run_job};
use brainfit_io::{IoError, PutOutcome, Store};
use brainfit_job::JobSpec;
use common::{Reaped, outputs, write_study};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server on 127.0.0.1, with one bucket; stopped when dropped.
struct Moto {
    _server: Reaped,
    port: u16,
    _log: tempfile::TempDir,
}

impl Moto {
    fn start(bucket: &str) -> Moto {
        let exe = moto_server();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = tempfile::tempdir().unwrap();
        let log_path = log.path().join("moto.log");
        let mut server = Reaped(
            Command::new(&exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::fs::File::create(&log_path).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display())),
        );
        let start = Instant::now();
        loop {
            if let Some(code) = server.0.try_wait().unwrap() {
                panic!(
                    "moto_server exited with {code}: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if http(port, "GET", "/").is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto_server did not answer on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = http(port, "PUT", &format!("/{bucket}")).expect("create the bucket");
        assert_eq!(status, 200, "creating bucket {bucket}");
        Moto { _server: server, port, _log: log }
    }

    /// The variables that point brainfit at this server.
    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn store(&self) -> Store {
        Store::new().with_aws_env(self.env())
    }
}

/// The `moto_server` executable: `$MOTO_SERVER`, or the project's `.venv-test`.
fn moto_server() -> PathBuf {
    match std::env::var_os("MOTO_SERVER") {
        Some(exe) => PathBuf::from(exe),
        None => common::venv_tool("moto_server"),
    }
}

/// A bodiless HTTP/1.1 request; the response's status code, or `None` if nothing answered.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    common::http(port, method, path).map(|(status, _)| status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip_with_range_reads_listing_and_create_only_puts() {
    let moto = Moto::start("lab");
    let store = moto.store();
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let url = "s3://lab/sub01/betas.bin";
    store.put(url, data.clone().into()).await.unwrap();
    assert_eq!(store.get(url).await.unwrap(), data);
    assert_eq!(store.size(url).await.unwrap(), 5000);
    assert_eq!(store.get_range(url, 1234..2345).await.unwrap(), data[1234..2345]);
    assert_eq!(store.get_range(url, 4990..5000).await.unwrap(), data[4990..]);
    let e = store.get_range(url, 4990..5010).await.unwrap_err();
    assert!(matches!(e, IoError::Range { .. }), "{e}");
    assert!(e.to_string().contains("5000"), "{e}");
    assert!(matches!(
        store.get("s3://lab/sub01/missing.npy").await.unwrap_err(),
        IoError::NotFound { .. }
    ));

    // create-only: the first put wins, the second leaves it untouched
    let part = "s3://lab/out/.brainfit/runs/r1/parts/t0.part";
    assert_eq!(
        store.put_create(part, b"first".to_vec().into()).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        store.put_create(part, b"second".to_vec().into()).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(store.get(part).await.unwrap(), b"first".as_slice());

    store.put("s3://lab/out/encoding/a/score.npy", vec![1u8; 10].into()).await.unwrap();
    assert_eq!(
        store.list("s3://lab/out").await.unwrap(),
        vec!["s3://lab/out/.brainfit/runs/r1/parts/t0.part", "s3://lab/out/encoding/a/score.npy"]
    );
    assert!(store.list("s3://lab/ou").await.unwrap().is_empty(), "prefixes are directories");
    store.delete_prefix("s3://lab/out/.brainfit").await.unwrap();
    assert_eq!(store.list("s3://lab/out").await.unwrap().len(), 1);
    store.delete("s3://lab/out/encoding/a/score.npy").await.unwrap();
    store.delete("s3://lab/out/encoding/a/score.npy").await.unwrap();
    assert!(store.list("s3://lab/out").await.unwrap().is_empty());

    // wrong credentials are an error naming the URL, not a silent success
    let mut env = moto.env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:9".into()));
    let unreachable = Store::new().with_aws_env(env);
    let e = unreachable.get(url).await.unwrap_err();
    assert!(e.to_string().contains(url), "{e}");
}

const JOB: &str = common::ENCODING_JOB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_read_and_write_s3_embedded_and_distributed() {
    let moto = Moto::start("lab");
    let store = moto.store();
    // the reference: the same study in memory
    let memory = Store::new();
    write_study(&memory, "memory://ref/study", None).await;
    let spec = JobSpec::from_toml(JOB, "job.toml", "memory://ref/study").unwrap();
    run_job(&memory, spec, RunOptions { workers: 2, on_progress: None }).await.unwrap();
    let reference = outputs(&memory, "memory://ref/study/out").await;
    assert_eq!(reference.len(), 6);

    // embedded, from the command line, with the job file itself on S3
    write_study(&store, "s3://lab/study", None).await;
    store.put("s3://lab/study/job.toml", JOB.as_bytes().to_vec().into()).await.unwrap();
    let bin = env!("CARGO_BIN_EXE_brainfit");
    let out = Command::new(bin)
        .args(["run", "s3://lab/study/job.toml", "--workers", "2"])
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(outputs(&store, "s3://lab/study/out").await == reference);
    assert!(store.get("s3://lab/study/out/summary.json").await.is_ok());
    assert!(
        store.list("s3://lab/study/out/.brainfit").await.unwrap().is_empty(),
        "parts are removed after the merge"
    );

    // distributed: a coordinator and a worker, both reading and writing S3
    let dir = tempfile::tempdir().unwrap();
    store
        .put("s3://lab/study/job2.toml", JOB.replace("\"out\"", "\"out2\"").into_bytes().into())
        .await
        .unwrap();
    let mut coordinator = Command::new(bin);
    coordinator
        .args(["coordinator", "--listen", "127.0.0.1:0", "--state", "s3://lab/state"])
        .envs(moto.env())
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
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    let url = format!("http://{addr}");
    let _worker = Reaped(
        Command::new(bin)
            .args(["worker", "--coordinator", &url, "--threads", "2"])
            .envs(moto.env())
            .env("BRAINFIT_TOKEN", "t0k")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = Command::new(bin)
        .args(["submit", "s3://lab/study/job2.toml", "--wait", "--coordinator", &url])
        .envs(moto.env())
        .env("BRAINFIT_TOKEN", "t0k")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(outputs(&store, "s3://lab/study/out2").await == reference);
    let jobs = store.list("s3://lab/state/jobs").await.unwrap();
    assert_eq!(jobs.len(), 1, "the job table lives on S3 too");
}
