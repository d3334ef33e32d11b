//! The worker loop against a fake transport: results are stored before they are reported,
//! failures are reported, and a drained loop finishes its running task and hands back the rest.

use super::*;
use brainfit_job::{JobRun, JobSpec};
use brainfit_kernels::rng::Rng;
use ndarray::Array2;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::watch;

/// Hands out scripted lease replies and records every call; can raise `stop` when it sees a
/// given report.
struct Fake {
    replies: Mutex<VecDeque<LeaseReply>>,
    log: Mutex<Vec<String>>,
    stop: watch::Sender<bool>,
    stop_after: Option<String>,
}

impl Fake {
    fn record(&self, what: String) {
        if self.stop_after.as_deref() == Some(what.as_str()) {
            let _ = self.stop.send(true);
        }
        self.log.lock().unwrap().push(what);
    }
}

impl Transport for Fake {
    async fn lease(&self, _slots: usize) -> Result<LeaseReply> {
        self.record("lease".into());
        Ok(self.replies.lock().unwrap().pop_front().unwrap_or(LeaseReply::Shutdown))
    }
    async fn complete(&self, a: &Lease) -> Result<()> {
        self.record(format!("complete {}", a.task));
        Ok(())
    }
    async fn fail(&self, a: &Lease, _error: String, _permanent: bool) -> Result<()> {
        self.record(format!("fail {}", a.task));
        Ok(())
    }
    async fn release(&self, a: &Lease) -> Result<()> {
        self.record(format!("release {}", a.task));
        Ok(())
    }
}

/// A prepared three-task job on a memory store (10 samples × 1300 voxels, one space).
async fn job(store: &Store, brain: &str) -> Arc<JobRun> {
    let mut rng = Rng::new(3);
    let y: Array2<f32> = rng.normal_array((10, 1300));
    let x: Array2<f32> = rng.normal_array((10, 4));
    let put = |name: &str, bytes: Vec<u8>| {
        let url = format!("memory://w/{name}");
        async move { store.put(&url, bytes.into()).await.unwrap() }
    };
    put("brain.npy", brainfit_io::write_npy(&y.view())).await;
    put("x.npy", brainfit_io::write_npy(&x.view())).await;
    let toml = format!(
        "name = \"w\"\noutput = \"out\"\n[data]\nbrain = \"{brain}\"\n[features]\nx = \"x.npy\"\n\
         [encoding]\ncv = {{ kind = \"kfold\", k = 2 }}\ninner_cv = {{ kind = \"kfold\", k = 2 }}\n\
         [execution]\nvoxels_per_task = 512\n"
    );
    let spec = JobSpec::from_toml(&toml, "job.toml", "memory://w").unwrap();
    Arc::new(JobRun::prepare(store, spec, "r1".into()).await.unwrap())
}

fn assignments(job: &Arc<JobRun>, tasks: &[usize]) -> LeaseReply {
    LeaseReply::Tasks(tasks.iter().map(|&task| Lease::new(job.clone(), task, 1)).collect())
}

async fn run(
    store: &Store,
    replies: Vec<LeaseReply>,
    stop_after: Option<&str>,
) -> (Vec<String>, bool) {
    let (stop, stopped) = watch::channel(false);
    let fake = Fake {
        replies: Mutex::new(replies.into()),
        log: Mutex::new(Vec::new()),
        stop,
        stop_after: stop_after.map(String::from),
    };
    let executor = Arc::new(Executor::new(store.clone()));
    run_worker_until(&fake, executor, store.clone(), stopped).await.unwrap();
    let drained = *fake.stop.borrow();
    (fake.log.into_inner().unwrap(), drained)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_stored_before_they_are_reported_and_failures_are_reported() {
    let store = Store::new();
    let good = job(&store, "brain.npy").await;
    let (log, _) = run(
        &store,
        vec![LeaseReply::Idle, assignments(&good, &[0, 2]), assignments(&good, &[1])],
        None,
    )
    .await;
    assert_eq!(log, ["lease", "lease", "complete 0", "complete 2", "lease", "complete 1", "lease"]);
    assert_eq!(good.finished_tasks(&store).await.unwrap(), vec![0, 1, 2]);

    // the brain data vanishes after planning: the task fails and says so
    store.delete("memory://w/brain.npy").await.unwrap();
    let bad = Arc::new(JobRun { id: "r2".into(), ..(*good).clone() });
    let (log, _) = run(&store, vec![assignments(&bad, &[1])], None).await;
    assert_eq!(log, ["lease", "fail 1", "lease"]);
    assert!(bad.finished_tasks(&store).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_loop_finishes_its_task_and_hands_back_the_others() {
    let store = Store::new();
    let job = job(&store, "brain.npy").await;
    // the drain starts while task 0 runs: it is finished and reported, 1 and 2 go back
    let (log, drained) = run(&store, vec![assignments(&job, &[0, 1, 2])], Some("complete 0")).await;
    assert!(drained);
    assert_eq!(log, ["lease", "complete 0", "release 1", "release 2"]);
    assert_eq!(job.finished_tasks(&store).await.unwrap(), vec![0]);
    // a drained loop asks for nothing more
    let (log, _) = run(&store, vec![LeaseReply::Idle], Some("lease")).await;
    assert_eq!(log, ["lease"]);
}
