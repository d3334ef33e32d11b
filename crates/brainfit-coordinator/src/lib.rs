//! brainfit's coordinator: many jobs, many worker processes, behind gRPC.
//!
//! The decisions live in the I/O-free core ([`brainfit_scheduler::JobTable`]); this crate
//! feeds it requests and the time, and carries out its effects:
//!
//! * [`Coordinator`] holds the table under a lock. Each call converts the request, applies it
//!   at the current time, settles jobs that ended, and then — outside the lock — persists
//!   records, starts merges and abandons failed or cancelled runs.
//! * A job's id is its run id: it names the run's partial-results directory, so a restarted
//!   coordinator that re-prepares the run under the same id finds the parts already written
//!   and does not redo those tasks ([`job`], shared with embedded runs).
//! * The table is persisted below `state_url` (`jobs/<id>.json`, through the object store, so
//!   a local directory or `s3://`); task states are the parts themselves. Records of jobs
//!   that ended more than `retention` ago are compacted (job file and summary dropped; the
//!   output keeps `summary.json`), so status requests still answer for them.
//! * A lease request with free slots waits up to `long_poll` for work, so idle workers neither
//!   spin nor lag; every lease request is a heartbeat that also reconciles the leases the
//!   worker holds: leases it lost are queued again, leases of cancelled jobs or of tasks
//!   leased again are named back for the worker to abandon.
//! * A tick every heartbeat period expires silent workers and compacts old records.
//! * [`serve`] puts it behind the `brainfit.v1` `Coordinator` (clients) and `Workers` services,
//!   with the shared-token check on every RPC and optional TLS.

pub mod job;

pub use brainfit_scheduler::SchedulerConfig;

use brainfit_io::{Store, join_url};
use brainfit_job::run::new_run_id;
use brainfit_job::{JobRun, JobSpec};
use brainfit_proto::v1::{
    self, HandshakeReply, HandshakeRequest, JobDefinitionReply, JobRequest, JobStatus, LeaseReply,
    LeaseRequest, ListJobsReply, ListJobsRequest, RegisterReply, RegisterRequest, ReportReply,
    SubmitReply, SubmitRequest, TaskReport, WorkerStatus, coordinator_server::CoordinatorServer,
    workers_server::WorkersServer,
};
use brainfit_proto::{MAX_MESSAGE_BYTES, PROTOCOL, RequireToken};
use brainfit_scheduler::table::{
    Effect, JobEntry, JobPhase, JobRecord, RecordState, ReportKind, TableError,
};
use brainfit_scheduler::{Failure, Held, JobTable, Lease, Millis};
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
    /// How long the full record of an ended job is kept before it is compacted.
    pub retention: Duration,
}

impl CoordinatorConfig {
    /// Defaults (30 s lease timeout, 3 attempts, 1 s long poll, records compacted 7 days
    /// after their job ended) with the table at `state_url`.
    pub fn new(state_url: impl Into<String>) -> Self {
        CoordinatorConfig {
            state_url: state_url.into(),
            scheduler: SchedulerConfig::default(),
            long_poll: Duration::from_secs(1),
            allowed_roots: Vec::new(),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// How often a busy worker must send a heartbeat.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis((self.scheduler.lease_timeout / 4).clamp(50, 5_000))
    }
}

/// The runs the coordinator's table holds.
type Run = Arc<JobRun>;

/// The coordinator: the job table and the handlers of every RPC.
pub struct Coordinator {
    store: Store,
    config: CoordinatorConfig,
    clock: Instant,
    table: Mutex<JobTable<Run>>,
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

fn proto_state(phase: JobPhase) -> v1::JobState {
    match phase {
        JobPhase::Preparing => v1::JobState::Preparing,
        JobPhase::Running => v1::JobState::Running,
        JobPhase::Merging => v1::JobState::Merging,
        JobPhase::Succeeded => v1::JobState::Succeeded,
        JobPhase::Failed => v1::JobState::Failed,
        JobPhase::Cancelled => v1::JobState::Cancelled,
    }
}

/// Whether a job in this state will not change any more.
pub fn is_final(state: v1::JobState) -> bool {
    matches!(state, v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled)
}

fn status_of(entry: &JobEntry<Run>) -> JobStatus {
    let r = &entry.record;
    let counts = entry.counts();
    JobStatus {
        job_id: r.id.clone(),
        name: r.name.clone(),
        state: proto_state(entry.phase()) as i32,
        total: counts.total,
        done: counts.done,
        running: counts.running,
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
        retries: counts.retries,
    }
}

fn table_status(e: TableError) -> Status {
    match e {
        TableError::NoJob(_) => Status::not_found(e.to_string()),
        TableError::NoTask { .. } => Status::invalid_argument(e.to_string()),
        TableError::WrongPhase { job, phase, what } => Status::failed_precondition(format!(
            "job {job} is {}: {what}",
            proto_state(phase).as_str_name()
        )),
    }
}

/// A lease on the wire as the table knows it: (job id, lease).
fn lease_of(t: &v1::Lease) -> (String, Lease) {
    (t.job_id.clone(), Lease { task: t.task as usize, attempt: t.attempt })
}

/// A lease of the table on the wire.
fn wire_lease((job_id, l): (String, Lease)) -> v1::Lease {
    v1::Lease { job_id, task: l.task as u64, attempt: l.attempt }
}

/// A failed task described for people ("encoding of space conv1, voxels 0..512").
fn describe(run: &Run, task: usize) -> String {
    run.tasks.get(task).map_or_else(|| format!("#{task}"), |t| t.describe(&run.spec))
}

impl Coordinator {
    /// A coordinator over `store`, with the job table of `config.state_url` loaded: unfinished
    /// jobs are re-prepared in the background (same run ids, finished tasks not redone).
    /// Must be called within a tokio runtime.
    pub async fn start(
        store: Store,
        config: CoordinatorConfig,
    ) -> Result<Arc<Coordinator>, ServiceError> {
        // worker ids of a restarted coordinator must not collide with its predecessor's
        let first_worker = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64
            * 1000;
        let coordinator = Arc::new(Coordinator {
            store,
            table: Mutex::new(JobTable::new(config.scheduler, first_worker)),
            config,
            clock: Instant::now(),
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
            if record.state == RecordState::Running {
                resume.push(record.id.clone());
            }
            coordinator.lock().insert_record(record);
        }
        for id in resume {
            tracing::info!(job = %id, "resuming");
            tokio::spawn(coordinator.clone().resume(id));
        }
        tokio::spawn(Self::tick(Arc::downgrade(&coordinator)));
        Ok(coordinator)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobTable<Run>> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> Millis {
        self.clock.elapsed().as_millis() as Millis
    }

    fn record_url(&self, id: &str) -> String {
        join_url(&self.config.state_url, &format!("jobs/{id}.json"))
    }

    /// Runs `f` on the table at the current time, then settles ended jobs, wakes watchers and
    /// carries out the effects.
    fn with_table<R>(self: &Arc<Self>, f: impl FnOnce(&mut JobTable<Run>, Millis) -> R) -> R {
        let now = self.now();
        let (result, effects) = {
            let mut table = self.lock();
            let result = f(&mut table, now);
            (result, table.settle(now, unix_now(), describe))
        };
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        for effect in effects {
            match effect {
                Effect::Merge { id, run, workers, backends, compute_seconds } => {
                    let info = job::MergeInfo { workers, backends, compute_seconds };
                    tokio::spawn(self.clone().merge(id, run, info));
                }
                Effect::Persist(id) => {
                    let me = self.clone();
                    tokio::spawn(async move { me.persist(&id).await });
                }
                Effect::Abandon(run) => self.abandon_later(run),
            }
        }
        result
    }

    /// Removes a failed or cancelled run's parts and releases its output, in the background.
    fn abandon_later(&self, run: Run) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = run.abandon(&store).await {
                tracing::warn!(run = %run.id, "cannot remove the parts and lock of an ended run: {e}");
            }
        });
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
        let Ok(record) = self.lock().job(id).map(|e| e.record.clone()) else {
            return;
        };
        let bytes = serde_json::to_vec_pretty(&record).expect("records serialise");
        if let Err(e) = self.store.put(&self.record_url(id), bytes.into()).await {
            tracing::error!(job = %id, "cannot persist the job record: {e}");
        }
    }

    async fn resume(self: Arc<Self>, id: String) {
        let Ok(record) = self.lock().job(&id).map(|e| e.record.clone()) else {
            return;
        };
        let prepared =
            match JobSpec::from_toml(&record.job_toml, &record.source_name, &record.base_url) {
                Ok(spec) => {
                    job::prepare(&self.store, spec, id.clone(), self.config.scheduler).await
                }
                Err(e) => Err(e),
            };
        let prepared = prepared
            .map(|p| {
                tracing::info!(job = %id, resumed = p.resumed, total = p.run.tasks.len(), "resumed");
                (p.run, p.scheduler, p.resumed)
            })
            .map_err(|e| e.to_string());
        let failed = prepared.is_err();
        if let Some(cancelled) = self.with_table(|table, now| table.activate(&id, prepared, now)) {
            // cancelled while it was being prepared
            if let Err(e) = cancelled.abandon(&self.store).await {
                tracing::warn!(job = %id, "cannot remove the parts and lock of a cancelled run: {e}");
            }
        }
        self.work.notify_waiters();
        if failed {
            self.persist(&id).await;
        }
    }

    async fn merge(self: Arc<Self>, id: String, run: Run, info: job::MergeInfo) {
        tracing::info!(job = %id, "all tasks done; merging");
        let result = job::finish(&run, &self.store, &info)
            .await
            .map(|summary| serde_json::to_value(summary).expect("summaries serialise"))
            .map_err(|e| e.to_string());
        if let Some(run) = self.with_table(|table, _| table.merged(&id, result, unix_now())) {
            self.abandon_later(run);
        }
        self.persist(&id).await;
    }

    /// Every heartbeat period: expires silent workers (their tasks are queued again) and
    /// compacts the records of jobs that ended more than the retention period ago.
    async fn tick(me: std::sync::Weak<Coordinator>) {
        loop {
            let period = match me.upgrade() {
                Some(c) => c.config.heartbeat(),
                None => return,
            };
            tokio::time::sleep(period).await;
            let Some(c) = me.upgrade() else { return };
            let retention = c.config.retention.as_secs();
            let (requeued, compacted) = c.with_table(|table, now| {
                (table.expire(now), table.compact_ended(unix_now(), retention))
            });
            if requeued {
                c.work.notify_waiters();
            }
            for id in compacted {
                tracing::info!(job = %id, "record compacted after the retention period");
                c.persist(&id).await;
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
        let prepared = job::prepare(&self.store, spec, id.clone(), self.config.scheduler)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let record = JobRecord {
            id: id.clone(),
            name: prepared.run.spec.name.clone(),
            job_toml: req.job_toml,
            source_name: req.source_name,
            base_url: req.base_url,
            output: prepared.run.spec.output.clone(),
            submitted_unix: unix_now(),
            state: RecordState::Running,
            total: prepared.run.tasks.len() as u64,
            done: 0,
            error: None,
            summary: None,
            ended_unix: None,
            compacted: false,
        };
        let bytes = serde_json::to_vec_pretty(&record).expect("records serialise");
        if let Err(e) = self.store.put(&self.record_url(&id), bytes.into()).await {
            let _ = prepared.run.abandon(&self.store).await; // not submitted: free its output
            return Err(Status::internal(format!("cannot persist the job: {e}")));
        }
        tracing::info!(job = %id, name = %record.name, tasks = record.total, "submitted");
        let status = self.with_table(|table, now| {
            table.insert_active(record, prepared.run, prepared.scheduler, now);
            table.job(&id).map(status_of)
        });
        self.work.notify_waiters();
        status.map_err(table_status)
    }

    /// The status of job `id`.
    pub fn job(&self, id: &str) -> Result<JobStatus, Status> {
        self.lock().job(id).map(status_of).map_err(table_status)
    }

    /// Every job (oldest first) and every live worker.
    pub fn list(&self) -> ListJobsReply {
        let now = self.now();
        let table = self.lock();
        let jobs = table.jobs().map(status_of).collect();
        let workers = table
            .workers()
            .map(|(gid, w, leases)| WorkerStatus {
                worker_id: gid,
                name: w.name.clone(),
                threads: w.threads,
                leases: leases as u64,
                idle_ms: now.saturating_sub(w.last_seen),
            })
            .collect();
        ListJobsReply { jobs, workers }
    }

    /// Cancels a job: no more leases; its workers abandon its running tasks at their next
    /// heartbeat and their reports become stale. Its parts go and its output is free before
    /// the reply, so a resubmission may follow at once.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<JobStatus, Status> {
        let (run, status) = self
            .with_table(|table, _| {
                let run = table.cancel(id, unix_now())?;
                Ok((run, table.job(id).map(status_of)?))
            })
            .map_err(table_status)?;
        tracing::info!(job = %id, "cancelled");
        if let Some(run) = run
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
        let gid = self.with_table(|table, now| {
            table.register_worker(&req.name, req.threads, &req.backend, now)
        });
        tracing::info!(worker = gid, name = %req.name, threads = req.threads, backend = %req.backend, "worker registered");
        RegisterReply {
            worker_id: gid,
            heartbeat_ms: self.config.heartbeat().as_millis() as u64,
            lease_timeout_ms: self.config.scheduler.lease_timeout,
            auth_required: false,
        }
    }

    /// Leases up to `free_slots` tasks (waiting up to the long poll for some to appear); a
    /// heartbeat either way, which reconciles the leases the worker says it holds.
    pub async fn lease(self: &Arc<Self>, req: LeaseRequest) -> LeaseReply {
        let slots = req.free_slots as usize;
        let held: Vec<(String, Lease)> = req.held.iter().map(lease_of).collect();
        let held = if req.reports_held { Held::These(&held) } else { Held::Unknown };
        let deadline = tokio::time::Instant::now() + self.config.long_poll;
        let mut abandon = Vec::new();
        loop {
            let notified = self.work.notified();
            let out = self.with_table(|table, now| table.lease(req.worker_id, slots, held, now));
            // what to abandon is answered once, on the first pass
            if abandon.is_empty() {
                abandon = out.abandon;
            }
            let reply = LeaseReply {
                tasks: out.tasks.into_iter().map(wire_lease).collect(),
                unknown_worker: out.unknown_worker,
                abandon: Vec::new(),
            };
            let waiting = slots > 0 && !reply.unknown_worker && reply.tasks.is_empty();
            if !waiting || !abandon.is_empty() {
                return LeaseReply {
                    abandon: abandon.into_iter().map(wire_lease).collect(),
                    ..reply
                };
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return reply;
            }
        }
    }

    /// A job's definition, for workers: the job file's text and its planned tasks.
    pub fn definition(&self, id: &str) -> Result<JobDefinitionReply, Status> {
        let table = self.lock();
        let entry = table.job(id).map_err(table_status)?;
        let Some(run) = entry.run() else {
            return Err(Status::failed_precondition(format!(
                "job {id} is {}",
                proto_state(entry.phase()).as_str_name()
            )));
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
        let is_complete = kind == ReportKind::Complete;
        let outcome = self
            .with_table(|table, now| table.report(req.worker_id, &req.job_id, lease, &kind, now))
            .map_err(table_status)?;
        if let Some(run) = outcome.check_part {
            // an attempt this table does not know (e.g. leased before a restart) stored its
            // part: the task is done whoever computed it
            if self.store.size(&run.part_url(task)).await.is_ok() {
                self.with_table(|table, _| table.mark_done(&req.job_id, task));
            }
        }
        if outcome.accepted && !is_complete {
            self.work.notify_waiters();
        }
        if !outcome.accepted {
            tracing::debug!(job = %req.job_id, task, attempt = req.attempt, "stale report dropped");
        }
        Ok(outcome.accepted)
    }

    /// A task's result is stored.
    pub async fn complete(self: &Arc<Self>, req: TaskReport) -> Result<bool, Status> {
        self.report(req, ReportKind::Complete).await
    }

    /// A task failed.
    pub async fn fail(self: &Arc<Self>, req: TaskReport) -> Result<bool, Status> {
        tracing::warn!(job = %req.job_id, task = req.task, attempt = req.attempt, "task failed: {}", req.error);
        let failure = Failure { error: req.error.clone(), permanent: req.permanent };
        self.report(req, ReportKind::Fail(failure)).await
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
