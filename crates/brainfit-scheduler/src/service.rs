//! The gRPC coordinator: many jobs, many worker processes, one [`Scheduler`] per job.
//!
//! [`Coordinator`] holds the job table — job id → (prepared run, task state machine, status) —
//! and does everything a service call needs; [`serve`] puts it behind the `brainfit.v1`
//! `Coordinator` (clients) and `Workers` services, with the shared-token check on every RPC
//! and optional TLS. Its methods are plain async functions, so its tests call them directly.
//!
//! * A job's id is its run id: it names the run's partial-results directory, so a restarted
//!   coordinator that re-prepares the run under the same id finds the parts already written
//!   and does not redo those tasks.
//! * The job table is persisted below `state_url` (`jobs/<id>.json`, through the object store,
//!   so a local directory or `s3://`); task states are the parts themselves.
//! * Workers have one coordinator-wide id; each job's scheduler knows them under its own
//!   [`WorkerId`], registered on first lease. Every lease request is a heartbeat for all of a
//!   worker's jobs; a worker silent for the lease timeout loses its leases (the scheduler
//!   re-queues them) and must register again.
//! * Leases go out oldest job first, tasks in plan order. A lease request with free slots
//!   waits up to `long_poll` for work, so idle workers neither spin nor lag.
//! * A report for an attempt the scheduler no longer knows (e.g. leased by the coordinator
//!   before a restart) is stale; if the task's part exists anyway the task is marked done.

use crate::job::{self, Outcome, ScheduledJob};
use crate::{Failure, JobState, Lease, Millis, Report, SchedulerConfig, WorkerId};
use brainfit_io::{Store, join_url};
use brainfit_job::run::new_run_id;
use brainfit_job::{JobRun, JobSpec};
use brainfit_proto::v1::{
    self, HandshakeReply, HandshakeRequest, JobDefinitionReply, JobRequest, JobStatus, LeaseReply,
    LeaseRequest, ListJobsReply, ListJobsRequest, RegisterReply, RegisterRequest, ReportReply,
    SubmitReply, SubmitRequest, TaskLease, TaskReport, WorkerStatus,
    coordinator_server::CoordinatorServer, workers_server::WorkersServer,
};
use brainfit_proto::{MAX_MESSAGE_BYTES, PROTOCOL, RequireToken};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// Errors of starting or serving the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Reading or writing the state directory failed.
    #[error(transparent)]
    Io(#[from] brainfit_io::IoError),
    /// Another coordinator holds the state directory.
    #[error(
        "{state} is in use by the coordinator {holder}: two coordinators on one job table would run and overwrite each other's jobs. Stop it, use another --state, or, if it is dead, remove {lock}"
    )]
    StateLocked {
        /// The state URL.
        state: String,
        /// Who holds it (host, pid, start time).
        holder: String,
        /// The lock object's URL.
        lock: String,
    },
    /// A persisted job record cannot be read.
    #[error("{url}: not a brainfit job record: {message}")]
    State {
        /// The record's URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The gRPC server failed (TLS set-up, socket).
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Tuning of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// URL of the directory holding the job table (`jobs/<id>.json`).
    pub state_url: String,
    /// Lease timeout and attempts per task, for every job.
    pub scheduler: SchedulerConfig,
    /// Longest a lease request with free slots waits for work before answering "nothing".
    pub long_poll: Duration,
    /// URL prefixes every input and output of a submitted job must lie under (empty: any).
    pub allowed_roots: Vec<String>,
}

impl CoordinatorConfig {
    /// Defaults (30 s lease timeout, 3 attempts, 1 s long poll) with the table at `state_url`.
    pub fn new(state_url: impl Into<String>) -> Self {
        CoordinatorConfig {
            state_url: state_url.into(),
            scheduler: SchedulerConfig::default(),
            long_poll: Duration::from_secs(1),
            allowed_roots: Vec::new(),
        }
    }

    /// How often a busy worker must send a heartbeat.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis((self.scheduler.lease_timeout / 4).clamp(50, 5_000))
    }
}

/// A job's state as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RecordState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// What the job table keeps about a job across coordinator restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRecord {
    id: String,
    name: String,
    job_toml: String,
    source_name: String,
    base_url: String,
    output: String,
    submitted_unix: u64,
    state: RecordState,
    #[serde(default)]
    total: u64,
    #[serde(default)]
    done: u64,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    summary: Option<serde_json::Value>,
}

struct Active {
    job: ScheduledJob,
    /// Coordinator-wide worker id → the id this job's scheduler knows it by.
    workers: HashMap<u64, WorkerId>,
    /// Workers that were leased a task of this job.
    participants: BTreeSet<u64>,
    started: Instant,
}

enum Phase {
    /// Being re-prepared after a restart.
    Preparing,
    /// Tasks remain.
    Active(Box<Active>),
    /// Parts being merged.
    Merging(Arc<JobRun>),
    /// See the record's state.
    Ended,
}

struct JobEntry {
    record: JobRecord,
    phase: Phase,
    resumed: u64,
    leases: u64,
    retries: u64,
}

struct WorkerEntry {
    name: String,
    threads: u32,
    last_seen: Millis,
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<String, JobEntry>,
    workers: BTreeMap<u64, WorkerEntry>,
    next_worker: u64,
}

/// Work to do once the table's lock is released.
enum Effect {
    Merge {
        id: String,
        run: Arc<JobRun>,
        workers: usize,
        compute_seconds: f64,
    },
    Persist(String),
    /// A failed or cancelled run: remove its parts and release its output.
    Abandon(Arc<JobRun>),
}

/// The coordinator: the job table and the handlers of every RPC.
pub struct Coordinator {
    store: Store,
    config: CoordinatorConfig,
    clock: Instant,
    inner: Mutex<Inner>,
    /// Woken whenever tasks may have become leasable.
    work: Notify,
    /// Bumped on every change of any job (for `Watch`).
    changed: watch::Sender<u64>,
    /// Serialises writes of job records.
    persist_lock: tokio::sync::Mutex<()>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn job_state(entry: &JobEntry) -> v1::JobState {
    match (&entry.phase, entry.record.state) {
        (Phase::Preparing, _) => v1::JobState::Preparing,
        (Phase::Active(_), _) => v1::JobState::Running,
        (Phase::Merging(_), _) => v1::JobState::Merging,
        (Phase::Ended, RecordState::Succeeded) => v1::JobState::Succeeded,
        (Phase::Ended, RecordState::Failed) => v1::JobState::Failed,
        (Phase::Ended, RecordState::Cancelled) => v1::JobState::Cancelled,
        (Phase::Ended, RecordState::Running) => v1::JobState::Unspecified,
    }
}

/// Whether a job in this state will not change any more.
pub fn is_final(state: v1::JobState) -> bool {
    matches!(state, v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled)
}

fn status_of(entry: &JobEntry) -> JobStatus {
    let r = &entry.record;
    let (total, done, running, retries) = match &entry.phase {
        Phase::Active(a) => {
            let p = a.job.scheduler.progress();
            (p.total as u64, p.done as u64, p.running as u64, a.job.scheduler.retries())
        }
        _ => (r.total, r.done, 0, entry.retries),
    };
    JobStatus {
        job_id: r.id.clone(),
        name: r.name.clone(),
        state: job_state(entry) as i32,
        total,
        done,
        running,
        output: r.output.clone(),
        error: r.error.clone().unwrap_or_default(),
        summary_json: r
            .summary
            .as_ref()
            .map(|s| serde_json::to_string_pretty(s).unwrap_or_default())
            .unwrap_or_default(),
        submitted_unix: r.submitted_unix,
        resumed: entry.resumed,
        leases: entry.leases,
        retries,
    }
}

impl Inner {
    fn expire_workers(&mut self, now: Millis, timeout: Millis) {
        self.workers.retain(|_, w| now.saturating_sub(w.last_seen) <= timeout);
    }

    /// Settles jobs whose scheduler reached an end: merges to start, records to persist.
    fn settle(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (id, entry) in self.jobs.iter_mut() {
            let Phase::Active(a) = &entry.phase else {
                continue;
            };
            let outcome = a.job.outcome();
            let progress = a.job.scheduler.progress();
            entry.record.total = progress.total as u64;
            entry.record.done = progress.done as u64;
            entry.retries = a.job.scheduler.retries();
            match outcome {
                Outcome::Running => {}
                Outcome::Succeeded => {
                    let effect = Effect::Merge {
                        id: id.clone(),
                        run: a.job.run.clone(),
                        workers: a.participants.len(),
                        compute_seconds: a.started.elapsed().as_secs_f64(),
                    };
                    entry.phase = Phase::Merging(a.job.run.clone());
                    effects.push(effect);
                }
                Outcome::Failed { task, error } => {
                    tracing::warn!(job = %id, "task {task} failed on every attempt: {error}");
                    entry.record.state = RecordState::Failed;
                    entry.record.error = Some(format!("task {task} failed: {error}"));
                    effects.push(Effect::Abandon(a.job.run.clone()));
                    entry.phase = Phase::Ended;
                    effects.push(Effect::Persist(id.clone()));
                }
                Outcome::Cancelled => {
                    entry.record.state = RecordState::Cancelled;
                    effects.push(Effect::Abandon(a.job.run.clone()));
                    entry.phase = Phase::Ended;
                    effects.push(Effect::Persist(id.clone()));
                }
            }
        }
        effects
    }

    /// Hands up to `slots` tasks to worker `gid`, oldest job first; a heartbeat for all of its
    /// jobs either way.
    fn lease(&mut self, gid: u64, slots: usize, now: Millis, timeout: Millis) -> LeaseReply {
        self.expire_workers(now, timeout);
        let Some(w) = self.workers.get_mut(&gid) else {
            return LeaseReply { tasks: vec![], unknown_worker: true };
        };
        w.last_seen = now;
        let mut tasks = Vec::new();
        for (id, entry) in self.jobs.iter_mut() {
            let Phase::Active(a) = &mut entry.phase else {
                continue;
            };
            let scheduler = &mut a.job.scheduler;
            if let Some(&wid) = a.workers.get(&gid)
                && !scheduler.heartbeat(wid, now)
            {
                a.workers.remove(&gid);
            }
            if tasks.len() >= slots || *scheduler.state() != JobState::Running {
                continue;
            }
            let wid = *a.workers.entry(gid).or_insert_with(|| scheduler.register(now));
            let leases = scheduler.lease(wid, slots - tasks.len(), now).unwrap_or_default();
            if !leases.is_empty() {
                a.participants.insert(gid);
                entry.leases += leases.len() as u64;
            }
            tasks.extend(leases.into_iter().map(|l| TaskLease {
                job_id: id.clone(),
                task: l.task as u64,
                attempt: l.attempt,
            }));
        }
        LeaseReply { tasks, unknown_worker: false }
    }
}

/// What a task report does to the task.
#[derive(Clone, Copy)]
enum ReportKind {
    Complete,
    Fail,
    Release,
}

impl Coordinator {
    /// A coordinator over `store`, with the job table of `config.state_url` loaded: unfinished
    /// jobs are re-prepared in the background (same run ids, finished tasks not redone).
    /// Must be called within a tokio runtime.
    pub async fn start(
        store: Store,
        config: CoordinatorConfig,
    ) -> Result<Arc<Coordinator>, ServiceError> {
        let first_worker = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64
            * 1000;
        let coordinator = Arc::new(Coordinator {
            store,
            config,
            clock: Instant::now(),
            inner: Mutex::new(Inner { next_worker: first_worker, ..Inner::default() }),
            work: Notify::new(),
            changed: watch::channel(0).0,
            persist_lock: tokio::sync::Mutex::new(()),
        });
        coordinator.lock_state().await?;
        let mut resume = Vec::new();
        let jobs_url = join_url(&coordinator.config.state_url, "jobs");
        for url in coordinator.store.list(&jobs_url).await? {
            if !url.ends_with(".json") {
                continue;
            }
            let bytes = coordinator.store.get(&url).await?;
            let record: JobRecord = serde_json::from_slice(&bytes)
                .map_err(|e| ServiceError::State { url: url.clone(), message: e.to_string() })?;
            let phase = if record.state == RecordState::Running {
                resume.push(record.id.clone());
                Phase::Preparing
            } else {
                Phase::Ended
            };
            coordinator.lock().jobs.insert(
                record.id.clone(),
                JobEntry { record, phase, resumed: 0, leases: 0, retries: 0 },
            );
        }
        for id in resume {
            tracing::info!(job = %id, "resuming");
            tokio::spawn(coordinator.clone().resume(id));
        }
        tokio::spawn(Self::tick(Arc::downgrade(&coordinator)));
        Ok(coordinator)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Millis {
        self.clock.elapsed().as_millis() as Millis
    }

    fn record_url(&self, id: &str) -> String {
        join_url(&self.config.state_url, &format!("jobs/{id}.json"))
    }

    /// Runs `f` on the table, then settles ended jobs, wakes watchers and starts merges.
    fn with_inner<R>(self: &Arc<Self>, f: impl FnOnce(&mut Inner, Millis) -> R) -> R {
        let now = self.now();
        let (result, effects) = {
            let mut inner = self.lock();
            let result = f(&mut inner, now);
            (result, inner.settle())
        };
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        for effect in effects {
            match effect {
                Effect::Merge { id, run, workers, compute_seconds } => {
                    tokio::spawn(self.clone().merge(id, run, workers, compute_seconds));
                }
                Effect::Persist(id) => {
                    let me = self.clone();
                    tokio::spawn(async move { me.persist(&id).await });
                }
                Effect::Abandon(run) => {
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = run.abandon(&store).await {
                            tracing::warn!(run = %run.id, "cannot remove the parts and lock of an ended run: {e}");
                        }
                    });
                }
            }
        }
        result
    }

    /// Takes the state directory with a create-only lock object naming this process. A lock
    /// of a process of this host that no longer runs (a killed coordinator being restarted) is
    /// taken over; any other is refused, naming its holder.
    async fn lock_state(&self) -> Result<(), ServiceError> {
        let url = join_url(&self.config.state_url, "coordinator.lock.json");
        let host = brainfit_io::host_name();
        let me = serde_json::json!({ "host": host, "pid": std::process::id(), "started_unix": unix_now() });
        let body = serde_json::to_vec_pretty(&me).expect("a JSON value serialises");
        if self.store.put_create(&url, body.clone().into()).await?
            == brainfit_io::PutOutcome::Created
        {
            return Ok(());
        }
        let held: serde_json::Value =
            serde_json::from_slice(&self.store.get(&url).await?).unwrap_or_default();
        let dead_here = held["host"] == host.as_str()
            && held["pid"]
                .as_u64()
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
        if dead_here {
            tracing::warn!(lock = %url, "taking over the state lock of a coordinator that no longer runs (pid {})", held["pid"]);
            self.store.put(&url, body.into()).await?;
            return Ok(());
        }
        Err(ServiceError::StateLocked {
            state: self.config.state_url.clone(),
            holder: format!(
                "on host {} (pid {}, started at unix time {})",
                held["host"], held["pid"], held["started_unix"]
            ),
            lock: url,
        })
    }

    /// Writes job `id`'s current record.
    async fn persist(&self, id: &str) {
        let _guard = self.persist_lock.lock().await;
        let Some(record) = self.lock().jobs.get(id).map(|e| e.record.clone()) else {
            return;
        };
        let bytes = serde_json::to_vec_pretty(&record).expect("records serialise");
        if let Err(e) = self.store.put(&self.record_url(id), bytes.into()).await {
            tracing::error!(job = %id, "cannot persist the job record: {e}");
        }
    }

    async fn resume(self: Arc<Self>, id: String) {
        let Some(record) = self.lock().jobs.get(&id).map(|e| e.record.clone()) else {
            return;
        };
        let prepared =
            match JobSpec::from_toml(&record.job_toml, &record.source_name, &record.base_url) {
                Ok(spec) => {
                    ScheduledJob::prepare(&self.store, spec, id.clone(), self.config.scheduler)
                        .await
                }
                Err(e) => Err(e),
            };
        let mut cancelled_run = None;
        let persist = self.with_inner(|inner, _| {
            let entry = inner.jobs.get_mut(&id)?;
            if !matches!(entry.phase, Phase::Preparing) {
                // cancelled meanwhile
                cancelled_run = prepared.as_ref().ok().map(|job| job.run.clone());
                return None;
            }
            match prepared {
                Ok(job) => {
                    tracing::info!(job = %id, resumed = job.resumed, total = job.run.tasks.len(), "resumed");
                    entry.resumed = job.resumed as u64;
                    entry.phase = Phase::Active(Box::new(Active {
                        job,
                        workers: HashMap::new(),
                        participants: BTreeSet::new(),
                        started: Instant::now(),
                    }));
                    None
                }
                Err(e) => {
                    entry.record.state = RecordState::Failed;
                    entry.record.error = Some(format!("cannot resume the job: {e}"));
                    entry.phase = Phase::Ended;
                    Some(())
                }
            }
        });
        if let Some(run) = cancelled_run
            && let Err(e) = run.abandon(&self.store).await
        {
            tracing::warn!(job = %id, "cannot remove the parts and lock of a cancelled run: {e}");
        }
        self.work.notify_waiters();
        if persist.is_some() {
            self.persist(&id).await;
        }
    }

    async fn merge(self: Arc<Self>, id: String, run: Arc<JobRun>, workers: usize, secs: f64) {
        tracing::info!(job = %id, "all tasks done; merging");
        let result = job::finish(&run, &self.store, workers, secs).await;
        self.with_inner(|inner, _| {
            if let Some(entry) = inner.jobs.get_mut(&id) {
                match result {
                    Ok(summary) => {
                        entry.record.state = RecordState::Succeeded;
                        entry.record.done = entry.record.total;
                        entry.record.summary = Some(summary);
                    }
                    Err(e) => {
                        entry.record.state = RecordState::Failed;
                        entry.record.error = Some(format!("merging the results failed: {e}"));
                        let (run, store) = (run.clone(), self.store.clone());
                        tokio::spawn(async move { run.abandon(&store).await });
                    }
                }
                entry.phase = Phase::Ended;
            }
        });
        self.persist(&id).await;
    }

    /// Expires silent workers (their tasks are queued again) every fraction of the timeout.
    async fn tick(me: std::sync::Weak<Coordinator>) {
        loop {
            let period = match me.upgrade() {
                Some(c) => c.config.heartbeat(),
                None => return,
            };
            tokio::time::sleep(period).await;
            let Some(c) = me.upgrade() else { return };
            let timeout = c.config.scheduler.lease_timeout;
            let requeued = c.with_inner(|inner, now| {
                inner.expire_workers(now, timeout);
                let mut requeued = false;
                for entry in inner.jobs.values_mut() {
                    if let Phase::Active(a) = &mut entry.phase {
                        for dead in a.job.scheduler.expire(now) {
                            a.workers.retain(|_, w| *w != dead);
                            requeued = true;
                        }
                    }
                }
                requeued
            });
            if requeued {
                c.work.notify_waiters();
            }
        }
    }

    /// Checks, prepares, persists and queues a job.
    pub async fn submit(self: &Arc<Self>, req: SubmitRequest) -> Result<JobStatus, Status> {
        let spec = JobSpec::from_toml(&req.job_toml, &req.source_name, &req.base_url)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        spec.check_roots(&self.config.allowed_roots)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let id = new_run_id();
        let record = JobRecord {
            id: id.clone(),
            name: spec.name.clone(),
            job_toml: req.job_toml,
            source_name: req.source_name,
            base_url: req.base_url,
            output: spec.output.clone(),
            submitted_unix: unix_now(),
            state: RecordState::Running,
            total: 0,
            done: 0,
            error: None,
            summary: None,
        };
        let job = ScheduledJob::prepare(&self.store, spec, id.clone(), self.config.scheduler)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let record = JobRecord { total: job.run.tasks.len() as u64, ..record };
        let bytes = serde_json::to_vec_pretty(&record).expect("records serialise");
        if let Err(e) = self.store.put(&self.record_url(&id), bytes.into()).await {
            let _ = job.run.abandon(&self.store).await; // not submitted: free its output
            return Err(Status::internal(format!("cannot persist the job: {e}")));
        }
        tracing::info!(job = %id, name = %record.name, tasks = job.run.tasks.len(), "submitted");
        let status = self.with_inner(|inner, _| {
            let entry = JobEntry {
                record,
                phase: Phase::Active(Box::new(Active {
                    job,
                    workers: HashMap::new(),
                    participants: BTreeSet::new(),
                    started: Instant::now(),
                })),
                resumed: 0,
                leases: 0,
                retries: 0,
            };
            let status = status_of(&entry);
            inner.jobs.insert(id.clone(), entry);
            status
        });
        self.work.notify_waiters();
        Ok(status)
    }

    /// The status of job `id`.
    pub fn job(&self, id: &str) -> Result<JobStatus, Status> {
        self.lock()
            .jobs
            .get(id)
            .map(status_of)
            .ok_or_else(|| Status::not_found(format!("no job {id}")))
    }

    /// Every job (oldest first) and every live worker.
    pub fn list(&self) -> ListJobsReply {
        let now = self.now();
        let inner = self.lock();
        let jobs = inner.jobs.values().map(status_of).collect();
        let workers = inner
            .workers
            .iter()
            .map(|(&gid, w)| {
                let leases = inner
                    .jobs
                    .values()
                    .filter_map(|e| match &e.phase {
                        Phase::Active(a) => {
                            a.workers.get(&gid).map(|&wid| a.job.scheduler.leases_of(wid) as u64)
                        }
                        _ => None,
                    })
                    .sum();
                WorkerStatus {
                    worker_id: gid,
                    name: w.name.clone(),
                    threads: w.threads,
                    leases,
                    idle_ms: now.saturating_sub(w.last_seen),
                }
            })
            .collect();
        ListJobsReply { jobs, workers }
    }

    /// Cancels a running job: no more leases; reports of its running attempts become stale.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<JobStatus, Status> {
        let mut ended_run = None;
        let status = self.with_inner(|inner, _| {
            let entry =
                inner.jobs.get_mut(id).ok_or_else(|| Status::not_found(format!("no job {id}")))?;
            match &mut entry.phase {
                Phase::Active(a) => {
                    a.job.scheduler.cancel();
                    let p = a.job.scheduler.progress();
                    entry.record.done = p.done as u64;
                    entry.retries = a.job.scheduler.retries();
                    ended_run = Some(a.job.run.clone());
                }
                Phase::Preparing => {} // the preparation abandons the run when it sees this
                Phase::Merging(_) | Phase::Ended => {
                    return Err(Status::failed_precondition(format!(
                        "job {id} is {}: nothing to cancel",
                        job_state(entry).as_str_name()
                    )));
                }
            }
            entry.record.state = RecordState::Cancelled;
            entry.phase = Phase::Ended;
            Ok(status_of(entry))
        })?;
        tracing::info!(job = %id, "cancelled");
        // its parts go and its output is free before the reply: a resubmission may follow
        if let Some(run) = ended_run
            && let Err(e) = run.abandon(&self.store).await
        {
            tracing::warn!(job = %id, "cannot remove the parts and lock of a cancelled run: {e}");
        }
        self.persist(id).await;
        Ok(status)
    }

    /// A stream of job `id`'s status: now, then on every change (at most ten a second) until
    /// it has ended.
    pub fn watch(self: &Arc<Self>, id: String) -> mpsc::Receiver<Result<JobStatus, Status>> {
        let (tx, rx) = mpsc::channel(4);
        let mut changed = self.changed.subscribe();
        let me = self.clone();
        tokio::spawn(async move {
            let mut last: Option<JobStatus> = None;
            loop {
                let status = match me.job(&id) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let ended = is_final(status.state());
                if last.as_ref() != Some(&status) {
                    if tx.send(Ok(status.clone())).await.is_err() {
                        return;
                    }
                    last = Some(status);
                }
                if ended {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), changed.changed()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        rx
    }

    /// Registers a worker process.
    pub fn register(self: &Arc<Self>, req: RegisterRequest) -> RegisterReply {
        let gid = self.with_inner(|inner, now| {
            let gid = inner.next_worker;
            inner.next_worker += 1;
            inner.workers.insert(
                gid,
                WorkerEntry { name: req.name.clone(), threads: req.threads, last_seen: now },
            );
            gid
        });
        tracing::info!(worker = gid, name = %req.name, threads = req.threads, "worker registered");
        RegisterReply {
            worker_id: gid,
            heartbeat_ms: self.config.heartbeat().as_millis() as u64,
            lease_timeout_ms: self.config.scheduler.lease_timeout,
            auth_required: false,
        }
    }

    /// Leases up to `free_slots` tasks (waiting up to the long poll for some to appear); a
    /// heartbeat either way.
    pub async fn lease(self: &Arc<Self>, req: LeaseRequest) -> LeaseReply {
        let slots = req.free_slots as usize;
        let timeout = self.config.scheduler.lease_timeout;
        let deadline = tokio::time::Instant::now() + self.config.long_poll;
        loop {
            let notified = self.work.notified();
            let reply =
                self.with_inner(|inner, now| inner.lease(req.worker_id, slots, now, timeout));
            if slots == 0 || reply.unknown_worker || !reply.tasks.is_empty() {
                return reply;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return reply;
            }
        }
    }

    /// A job's definition, for workers: the job file's text and its planned tasks.
    pub fn definition(&self, id: &str) -> Result<JobDefinitionReply, Status> {
        let inner = self.lock();
        let entry = inner.jobs.get(id).ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        let run = match &entry.phase {
            Phase::Active(a) => a.job.run.clone(),
            Phase::Merging(run) => run.clone(),
            _ => {
                return Err(Status::failed_precondition(format!(
                    "job {id} is {}",
                    job_state(entry).as_str_name()
                )));
            }
        };
        let r = &entry.record;
        Ok(JobDefinitionReply {
            job_id: id.to_string(),
            run_id: run.id.clone(),
            job_toml: r.job_toml.clone(),
            source_name: r.source_name.clone(),
            base_url: r.base_url.clone(),
            inventory_json: serde_json::to_vec(&run.inventory).expect("inventories serialise"),
            tasks_json: serde_json::to_vec(&run.tasks).expect("tasks serialise"),
        })
    }

    /// Applies a task report; `true` when it was for the current attempt.
    async fn report(self: &Arc<Self>, req: TaskReport, kind: ReportKind) -> Result<bool, Status> {
        let task = req.task as usize;
        let lease = Lease { task, attempt: req.attempt };
        let check_part = self.with_inner(|inner, now| {
            if let Some(w) = inner.workers.get_mut(&req.worker_id) {
                w.last_seen = now;
            }
            let Some(entry) = inner.jobs.get_mut(&req.job_id) else {
                return Ok((false, None));
            };
            let Phase::Active(a) = &mut entry.phase else {
                return Ok((false, None));
            };
            let scheduler = &mut a.job.scheduler;
            if task >= scheduler.n_tasks() {
                return Err(Status::invalid_argument(format!(
                    "job {} has no task {task}",
                    req.job_id
                )));
            }
            let report = match a.workers.get(&req.worker_id) {
                Some(&wid) => match kind {
                    ReportKind::Complete => scheduler.complete(wid, lease, now),
                    ReportKind::Fail => {
                        let failure =
                            Failure { error: req.error.clone(), permanent: req.permanent };
                        scheduler.fail(wid, lease, &failure, now)
                    }
                    ReportKind::Release => scheduler.release(wid, lease, now),
                },
                None => Report::Stale,
            };
            let accepted = report == Report::Accepted;
            let check = matches!(kind, ReportKind::Complete)
                && !accepted
                && *scheduler.state() == JobState::Running
                && !scheduler.is_done(task);
            Ok((accepted, check.then(|| a.job.run.part_url(task))))
        })?;
        let (accepted, part) = check_part;
        if let Some(url) = part {
            // an attempt this scheduler does not know (e.g. leased before a restart) stored
            // its part: the task is done whoever computed it
            if self.store.size(&url).await.is_ok() {
                self.with_inner(|inner, _| {
                    if let Some(JobEntry { phase: Phase::Active(a), .. }) =
                        inner.jobs.get_mut(&req.job_id)
                    {
                        a.job.scheduler.mark_done(task);
                    }
                });
            }
        }
        if accepted && !matches!(kind, ReportKind::Complete) {
            self.work.notify_waiters();
        }
        if !accepted {
            tracing::debug!(job = %req.job_id, task, attempt = req.attempt, "stale report dropped");
        }
        Ok(accepted)
    }

    /// A task's result is stored.
    pub async fn complete(self: &Arc<Self>, req: TaskReport) -> Result<bool, Status> {
        self.report(req, ReportKind::Complete).await
    }

    /// A task failed.
    pub async fn fail(self: &Arc<Self>, req: TaskReport) -> Result<bool, Status> {
        tracing::warn!(job = %req.job_id, task = req.task, attempt = req.attempt, "task failed: {}", req.error);
        self.report(req, ReportKind::Fail).await
    }

    /// A task handed back unstarted.
    pub async fn release(self: &Arc<Self>, req: TaskReport) -> Result<bool, Status> {
        self.report(req, ReportKind::Release).await
    }
}

/// The two gRPC services over one coordinator.
#[derive(Clone)]
struct Api {
    coordinator: Arc<Coordinator>,
    auth_required: bool,
}

impl Api {
    fn handshake(&self) -> HandshakeReply {
        HandshakeReply {
            auth_required: self.auth_required,
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: PROTOCOL,
        }
    }
}

#[tonic::async_trait]
impl v1::coordinator_server::Coordinator for Api {
    async fn handshake(
        &self,
        _: Request<HandshakeRequest>,
    ) -> Result<Response<HandshakeReply>, Status> {
        Ok(Response::new(self.handshake()))
    }

    async fn submit(&self, req: Request<SubmitRequest>) -> Result<Response<SubmitReply>, Status> {
        let job = self.coordinator.submit(req.into_inner()).await?;
        Ok(Response::new(SubmitReply { job: Some(job) }))
    }

    type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<JobStatus, Status>>;

    async fn watch(&self, req: Request<JobRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let id = req.into_inner().job_id;
        self.coordinator.job(&id)?;
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(self.coordinator.watch(id))))
    }

    async fn get_job(&self, req: Request<JobRequest>) -> Result<Response<JobStatus>, Status> {
        Ok(Response::new(self.coordinator.job(&req.into_inner().job_id)?))
    }

    async fn list_jobs(
        &self,
        _: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsReply>, Status> {
        Ok(Response::new(self.coordinator.list()))
    }

    async fn cancel(&self, req: Request<JobRequest>) -> Result<Response<JobStatus>, Status> {
        Ok(Response::new(self.coordinator.cancel(&req.into_inner().job_id).await?))
    }
}

#[tonic::async_trait]
impl v1::workers_server::Workers for Api {
    async fn handshake(
        &self,
        _: Request<HandshakeRequest>,
    ) -> Result<Response<HandshakeReply>, Status> {
        Ok(Response::new(self.handshake()))
    }

    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let mut reply = self.coordinator.register(req.into_inner());
        reply.auth_required = self.auth_required;
        Ok(Response::new(reply))
    }

    async fn lease(&self, req: Request<LeaseRequest>) -> Result<Response<LeaseReply>, Status> {
        Ok(Response::new(self.coordinator.lease(req.into_inner()).await))
    }

    async fn get_job_definition(
        &self,
        req: Request<JobRequest>,
    ) -> Result<Response<JobDefinitionReply>, Status> {
        Ok(Response::new(self.coordinator.definition(&req.into_inner().job_id)?))
    }

    async fn complete_task(
        &self,
        req: Request<TaskReport>,
    ) -> Result<Response<ReportReply>, Status> {
        let accepted = self.coordinator.complete(req.into_inner()).await?;
        Ok(Response::new(ReportReply { accepted }))
    }

    async fn fail_task(&self, req: Request<TaskReport>) -> Result<Response<ReportReply>, Status> {
        let accepted = self.coordinator.fail(req.into_inner()).await?;
        Ok(Response::new(ReportReply { accepted }))
    }

    async fn release_task(
        &self,
        req: Request<TaskReport>,
    ) -> Result<Response<ReportReply>, Status> {
        let accepted = self.coordinator.release(req.into_inner()).await?;
        Ok(Response::new(ReportReply { accepted }))
    }
}

/// How the coordinator is reached.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Shared token required on every RPC.
    pub token: Option<String>,
    /// PEM certificate chain and private key: serve TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Serves `coordinator` on `listener` until `shutdown` resolves.
pub async fn serve(
    coordinator: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServiceError> {
    brainfit_proto::install_crypto_provider();
    let check = RequireToken::new(options.token.as_deref());
    let api = Api { coordinator, auth_required: check.enforced() };
    let clients = CoordinatorServer::new(api.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let workers = WorkersServer::new(api)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut server =
        Server::builder().http2_keepalive_interval(Some(Duration::from_secs(20))).tcp_nodelay(true);
    if let Some((cert, key)) = &options.tls {
        server =
            server.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?;
    }
    server
        .add_service(InterceptedService::new(clients, check.clone()))
        .add_service(InterceptedService::new(workers, check))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
