//! The coordinator driven directly (no network): the test plays the workers' transport,
//! computing parts with a real executor and storing them where a worker would.

use super::*;
use brainfit_kernels::rng::Rng;
use ndarray::Array2;

const JOB: &str = r#"
name = "svc"
output = "out"
[data]
brain = "brain.npy"
[features]
a = "a.npy"
[encoding]
[execution]
voxels_per_task = 512
"#;

/// A study of 20 samples × 1300 voxels: three encoding tasks.
async fn study(store: &Store, base: &str) {
    let mut rng = Rng::new(7);
    let brain: Array2<f32> = rng.normal_array((20, 1300));
    let a: Array2<f32> = rng.normal_array((20, 3));
    store
        .put(&join_url(base, "brain.npy"), brainfit_io::write_npy(&brain.view()).into())
        .await
        .unwrap();
    store.put(&join_url(base, "a.npy"), brainfit_io::write_npy(&a.view()).into()).await.unwrap();
}

/// A coordinator on the shared state: each call stands for a new coordinator process, the one
/// before it dead (in-process, both have this pid, so the state lock it left is removed here,
/// as an operator would after a crash).
async fn coordinator(store: &Store, lease_timeout: Millis) -> Arc<Coordinator> {
    store.delete("memory://svc/state/coordinator.lock.json").await.unwrap();
    let mut config = CoordinatorConfig::new("memory://svc/state");
    config.scheduler.lease_timeout = lease_timeout;
    config.long_poll = Duration::from_millis(300);
    Coordinator::start(store.clone(), config).await.unwrap()
}

fn submit_request(toml: &str) -> SubmitRequest {
    SubmitRequest {
        job_toml: toml.to_string(),
        source_name: "job.toml".into(),
        base_url: "memory://svc/study".into(),
    }
}

async fn setup(lease_timeout: Millis) -> (Store, Arc<Coordinator>, String) {
    let store = Store::new();
    study(&store, "memory://svc/study").await;
    let c = coordinator(&store, lease_timeout).await;
    let job = c.submit(submit_request(JOB)).await.unwrap();
    assert_eq!(job.state(), v1::JobState::Running);
    assert_eq!((job.total, job.done), (3, 0));
    (store, c, job.job_id)
}

fn worker(c: &Arc<Coordinator>, name: &str) -> u64 {
    c.register(RegisterRequest { name: name.into(), threads: 1, backend: "test".into() }).worker_id
}

async fn lease(c: &Arc<Coordinator>, w: u64, slots: u32) -> LeaseReply {
    c.lease(LeaseRequest { worker_id: w, free_slots: slots, ..Default::default() }).await
}

fn report(w: u64, l: &v1::Lease) -> TaskReport {
    TaskReport {
        worker_id: w,
        job_id: l.job_id.clone(),
        task: l.task,
        attempt: l.attempt,
        error: String::new(),
        permanent: false,
    }
}

/// The job as a worker rebuilds it from its definition.
fn run_of(def: &JobDefinitionReply) -> JobRun {
    JobRun {
        id: def.run_id.clone(),
        spec: JobSpec::from_toml(&def.job_toml, &def.source_name, &def.base_url).unwrap(),
        inventory: serde_json::from_slice(&def.inventory_json).unwrap(),
        tasks: serde_json::from_slice(&def.tasks_json).unwrap(),
    }
}

/// Computes and stores task `task`'s part as a worker would.
async fn store_part(store: &Store, run: &JobRun, task: usize) {
    let executor = Arc::new(brainfit_worker::Executor::new(store.clone()));
    let part = executor.execute(Arc::new(run.clone()), task, Default::default()).await.unwrap();
    store.put_create(&run.part_url(task), part.encode().into()).await.unwrap();
}

async fn wait_for(c: &Arc<Coordinator>, id: &str, what: impl Fn(&JobStatus) -> bool) -> JobStatus {
    let start = Instant::now();
    loop {
        let s = c.job(id).unwrap();
        if what(&s) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "timed out; last status {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_success_through_leases_and_reports() {
    let (store, c, id) = setup(30_000).await;
    let (w1, w2) = (worker(&c, "w1"), worker(&c, "w2"));
    let a = lease(&c, w1, 2).await;
    let b = lease(&c, w2, 5).await;
    assert_eq!(
        a.tasks.iter().map(|t| (t.task, t.attempt)).collect::<Vec<_>>(),
        vec![(0, 1), (1, 1)],
        "plan order"
    );
    assert_eq!(b.tasks.len(), 1);
    let listed = c.list();
    assert_eq!(listed.workers.len(), 2);
    assert_eq!(listed.workers.iter().map(|w| w.leases).sum::<u64>(), 3);
    assert_eq!(c.job(&id).unwrap().running, 3);

    let def = c.definition(&id).unwrap();
    let run = run_of(&def);
    assert_eq!(run.id, id, "the job id is the run id");
    assert_eq!(run.tasks.len(), 3);
    for (w, l) in a.tasks.iter().map(|l| (w1, l)).chain(b.tasks.iter().map(|l| (w2, l))) {
        store_part(&store, &run, l.task as usize).await;
        assert!(c.complete(report(w, l)).await.unwrap());
        assert!(!c.complete(report(w, l)).await.unwrap(), "a duplicate is stale");
    }
    let done = wait_for(&c, &id, |s| s.state() == v1::JobState::Succeeded).await;
    assert_eq!((done.done, done.total, done.leases, done.retries), (3, 3, 3, 0));
    let summary: serde_json::Value = serde_json::from_str(&done.summary_json).unwrap();
    assert_eq!(summary["workers"], 2);
    let score = store.get("memory://svc/study/out/encoding/a/score.npy").await.unwrap();
    let score = brainfit_io::parse_npy(&score, "score").unwrap().to_f64();
    assert_eq!(score.len(), 1300, "every task's part is merged");
    // persisted as succeeded; parts removed
    let record = store.get(&format!("memory://svc/state/jobs/{id}.json")).await.unwrap();
    let record: JobRecord = serde_json::from_slice(&record).unwrap();
    assert_eq!(record.state, RecordState::Succeeded);
    assert!(store.list(&run.run_url()).await.unwrap().is_empty());
    assert!(lease(&c, w1, 1).await.tasks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_loses_its_lease_and_its_late_report_is_stale() {
    let (store, c, id) = setup(200).await;
    let (dead, live) = (worker(&c, "dead"), worker(&c, "live"));
    let lost = lease(&c, dead, 1).await.tasks.remove(0);
    let mine = lease(&c, live, 2).await.tasks;
    assert_eq!(mine.len(), 2);
    // the live worker is busy: it only heartbeats (zero slots) while the dead one is silent
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(lease(&c, live, 0).await.tasks.is_empty());
    }
    let retry = lease(&c, live, 1).await.tasks;
    assert_eq!(retry.iter().map(|t| (t.task, t.attempt)).collect::<Vec<_>>(), vec![(lost.task, 2)]);
    assert_eq!(c.job(&id).unwrap().retries, 1);
    // the dead worker comes back: its report is stale (it never stored a part) and it must
    // register again
    assert!(!c.complete(report(dead, &lost)).await.unwrap());
    assert!(lease(&c, dead, 1).await.unknown_worker);
    let run = run_of(&c.definition(&id).unwrap());
    for l in mine.iter().chain(&retry) {
        store_part(&store, &run, l.task as usize).await;
        assert!(c.complete(report(live, l)).await.unwrap());
    }
    let s = wait_for(&c, &id, |s| s.state() == v1::JobState::Succeeded).await;
    assert_eq!((s.leases, s.retries), (4, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_report_whose_part_is_stored_marks_the_task_done() {
    // e.g. a worker leased the task from the coordinator before it restarted
    let (store, c, id) = setup(30_000).await;
    let run = run_of(&c.definition(&id).unwrap());
    let unknown = v1::Lease { job_id: id.clone(), task: 2, attempt: 1 };
    assert!(!c.complete(report(12345, &unknown)).await.unwrap());
    assert_eq!(c.job(&id).unwrap().done, 0, "no part: not done");
    store_part(&store, &run, 2).await;
    assert!(!c.complete(report(12345, &unknown)).await.unwrap());
    assert_eq!(c.job(&id).unwrap().done, 1, "its part exists: done");
    let w = worker(&c, "w");
    let rest = lease(&c, w, 5).await.tasks;
    assert_eq!(rest.iter().map(|t| t.task).collect::<Vec<_>>(), vec![0, 1]);
    let bad = TaskReport { task: 99, ..report(w, &rest[0]) };
    assert_eq!(c.complete(bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failing_on_every_worker_fails_the_job_with_its_error() {
    let (_store, c, id) = setup(30_000).await;
    for i in 0..3 {
        let w = worker(&c, &format!("w{i}"));
        // the first worker takes every task (and keeps 1 and 2); then only task 0 is pending
        let l = lease(&c, w, 3).await.tasks.remove(0);
        assert_eq!((l.task, l.attempt), (0, i + 1), "the failed task goes to the next worker");
        let failed = TaskReport { error: "a.npy: NaN at [3, 1]".into(), ..report(w, &l) };
        assert!(c.fail(failed).await.unwrap());
    }
    let s = wait_for(&c, &id, |s| is_final(s.state())).await;
    assert_eq!(s.state(), v1::JobState::Failed);
    assert!(
        s.error.contains("a.npy: NaN at [3, 1]") && s.error.contains("encoding a voxels 0..512"),
        "{}",
        s.error
    );
    assert_eq!(s.retries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_leasing_and_survives_a_restart() {
    let (store, c, id) = setup(30_000).await;
    let w = worker(&c, "w");
    let l = lease(&c, w, 1).await.tasks.remove(0);
    let s = c.cancel(&id).await.unwrap();
    assert_eq!(s.state(), v1::JobState::Cancelled);
    // the worker still computing the task is told to abandon it at its next heartbeat
    let beat = c
        .lease(LeaseRequest {
            worker_id: w,
            free_slots: 0,
            held: vec![l.clone()],
            reports_held: true,
        })
        .await;
    assert_eq!(beat.abandon, std::slice::from_ref(&l));
    assert!(lease(&c, w, 3).await.tasks.is_empty());
    assert!(!c.complete(report(w, &l)).await.unwrap());
    assert_eq!(c.cancel(&id).await.unwrap_err().code(), tonic::Code::FailedPrecondition);
    drop(c);
    let again = coordinator(&store, 30_000).await;
    assert_eq!(again.job(&id).unwrap().state(), v1::JobState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_resumes_without_redoing_finished_tasks() {
    let (store, c, id) = setup(30_000).await;
    let w = worker(&c, "w");
    let run = run_of(&c.definition(&id).unwrap());
    let leased = lease(&c, w, 3).await.tasks;
    for l in &leased[..2] {
        store_part(&store, &run, l.task as usize).await;
        assert!(c.complete(report(w, l)).await.unwrap());
    }
    drop(c); // the coordinator dies with task 2 leased

    let c = coordinator(&store, 30_000).await;
    let s = wait_for(&c, &id, |s| s.state() == v1::JobState::Running).await;
    assert_eq!((s.resumed, s.done, s.total), (2, 2, 3));
    // the old worker id is unknown: it registers again and gets only the unfinished task
    assert!(lease(&c, w, 3).await.unknown_worker);
    let w = worker(&c, "w again");
    let rest = lease(&c, w, 3).await.tasks;
    assert_eq!(rest.iter().map(|t| (t.task, t.attempt)).collect::<Vec<_>>(), vec![(2, 1)]);
    let def = c.definition(&id).unwrap();
    assert_eq!(def.run_id, run.id, "same run id, same part URLs");
    store_part(&store, &run, 2).await;
    assert!(c.complete(report(w, &rest[0])).await.unwrap());
    let s = wait_for(&c, &id, |s| s.state() == v1::JobState::Succeeded).await;
    assert_eq!((s.leases, s.resumed), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_lease_returns_as_soon_as_a_task_is_handed_back() {
    let (_store, c, _id) = setup(30_000).await;
    let (w1, w2) = (worker(&c, "w1"), worker(&c, "w2"));
    let all = lease(&c, w1, 3).await.tasks;
    let started = Instant::now();
    assert!(lease(&c, w2, 1).await.tasks.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250), "an idle lease waits");
    let c2 = c.clone();
    let waiting = tokio::spawn(async move { lease(&c2, w2, 1).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    assert!(c.release(report(w1, &all[1])).await.unwrap());
    let got = waiting.await.unwrap().tasks;
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(
        got.iter().map(|t| (t.task, t.attempt)).collect::<Vec<_>>(),
        vec![(1, 1)],
        "a released task counts no attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_are_refused_with_the_reason() {
    let store = Store::new();
    study(&store, "memory://svc/study").await;
    let c = coordinator(&store, 30_000).await;
    let e = c.submit(submit_request(&JOB.replace("[encoding]", "[encodin]"))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("encodin"), "{}", e.message());
    let e = c.submit(submit_request(&JOB.replace("a.npy", "missing.npy"))).await.unwrap_err();
    assert!(e.message().contains("missing.npy"), "{}", e.message());
    assert!(c.list().jobs.is_empty());
    assert_eq!(c.job("nope").unwrap_err().code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_second_coordinator_on_one_state_is_refused() {
    let store = Store::new();
    let _first = coordinator(&store, 30_000).await;
    let second = Coordinator::start(store.clone(), CoordinatorConfig::new("memory://svc/state"))
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(second.contains("is in use by the coordinator on host"), "{second}");
    assert!(second.contains(&format!("pid {}", std::process::id())), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_ended_jobs_are_compacted_after_the_retention_period() {
    let store = Store::new();
    study(&store, "memory://svc/study").await;
    store.delete("memory://svc/state/coordinator.lock.json").await.unwrap();
    let mut config = CoordinatorConfig::new("memory://svc/state");
    config.scheduler.lease_timeout = 400; // a tick every 100 ms
    config.retention = Duration::ZERO;
    let c = Coordinator::start(store.clone(), config).await.unwrap();
    let id = c.submit(submit_request(JOB)).await.unwrap().job_id;
    c.cancel(&id).await.unwrap();
    let record_url = format!("memory://svc/state/jobs/{id}.json");
    let start = Instant::now();
    let record: JobRecord = loop {
        let record: JobRecord =
            serde_json::from_slice(&store.get(&record_url).await.unwrap()).unwrap();
        if record.compacted {
            break record;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never compacted: {record:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(record.job_toml.is_empty() && record.ended_unix.is_some());
    // status still answers, from the compact record, here and after a restart
    assert_eq!(c.job(&id).unwrap().state(), v1::JobState::Cancelled);
    drop(c);
    let again = coordinator(&store, 30_000).await;
    let s = again.job(&id).unwrap();
    assert_eq!((s.state(), s.name.as_str()), (v1::JobState::Cancelled, "svc"));
}
