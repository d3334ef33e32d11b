//! The worker side of `brainfit.v1`: a [`Transport`] over gRPC ([`GrpcTransport`]) and the
//! worker process's main loop ([`run_grpc_worker`]).
//!
//! One process registers once and runs `threads` task loops that share the registration, the
//! [`Executor`] (and so its input caches) and a heartbeat: a zero-slot lease sent every
//! `heartbeat_ms` so that tasks running longer than the lease timeout keep their leases.
//! Every lease request lists the leases the process holds; the coordinator answers with those
//! it no longer wants (a cancelled job, a task leased again), whose [`Abandon`] flags are
//! raised so that their computations stop at the next checkpoint.
//!
//! The coordinator may go away (restart, network): lease requests then answer "idle" after a
//! back-off and reports are retried until delivered, so the loops survive; an unknown-worker
//! answer (the coordinator restarted or expired this worker) makes the process register again.
//! Only a refused token is fatal. A job's definition (job file text, inventory, plan) is
//! fetched once per job and cached; the worker re-plans from it and refuses a plan that
//! differs from the coordinator's. A job's id is its run id ([`JobContext::id`]).

use crate::{
    Abandon, Executor, JobContext, Lease, LeaseReply, Result, Transport, WorkerError,
    run_worker_until,
};
use brainfit_io::Store;
use brainfit_job::JobSpec;
use brainfit_proto::v1::{
    self as v1, HandshakeRequest, JobRequest, LeaseRequest, RegisterRequest, TaskReport,
    workers_client::WorkersClient,
};
use brainfit_proto::{AddToken, Backoff, ConnectOptions, MAX_MESSAGE_BYTES, check_handshake};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = WorkersClient<InterceptedService<Channel, AddToken>>;

/// Settings of a worker process.
#[derive(Debug, Clone)]
pub struct GrpcWorkerOptions {
    /// How to reach the coordinator.
    pub connect: ConnectOptions,
    /// Concurrent task loops.
    pub threads: usize,
    /// What this worker calls itself (host/pid), for status listings.
    pub name: String,
    /// URL prefixes every input and output of a job must lie under (empty: any); a job
    /// outside them is refused even if the coordinator accepted it.
    pub allowed_roots: Vec<String>,
    /// Where the process counts its tasks and registration (served by the command line).
    pub metrics: crate::metrics::WorkerMetrics,
    /// Exit once the worker has held no task for this long (one-shot sweeps: workers that
    /// leave when the queue is empty); `None`: run until stopped.
    pub exit_when_idle: Option<Duration>,
}

/// Whether an RPC error means "stop" (the coordinator refuses us) rather than "retry".
fn is_fatal(status: &Status) -> bool {
    matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied)
}

fn fatal(url: &str, status: &Status) -> WorkerError {
    WorkerError::Refused(format!("coordinator {url} refused this worker: {}", status.message()))
}

/// Talks to the coordinator for every task loop of this process.
pub struct GrpcTransport {
    client: Client,
    url: String,
    name: String,
    threads: u32,
    allowed_roots: Vec<String>,
    have_token: bool,
    worker_id: AtomicU64,
    heartbeat_ms: AtomicU64,
    registration: tokio::sync::Mutex<()>,
    jobs: Mutex<HashMap<String, Arc<JobContext>>>,
    /// Leases this process holds (from the lease reply until their report is delivered):
    /// (job id, task) → (attempt, stop flag).
    held: Mutex<HashMap<(String, u64), (u32, Abandon)>>,
    offline: AtomicBool,
    /// Waits between lease requests while the coordinator is unreachable.
    offline_backoff: Mutex<Backoff>,
    /// 1 while registered (the worker's readiness).
    registered: prometheus::IntGauge,
}

/// Reconnecting, and leasing while the coordinator is away: from 0.5 s up to 5 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));

const MAX_CACHED_JOBS: usize = 64;

impl GrpcTransport {
    /// Connects (waiting for the coordinator to be reachable, unless `stop` turns true first:
    /// then `None`), checks its handshake and registers.
    pub async fn connect(
        options: &GrpcWorkerOptions,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<GrpcTransport>> {
        let (channel, auth) = brainfit_proto::channel(&options.connect)
            .map_err(|e| WorkerError::Transport(e.to_string()))?;
        let have_token = auth.has_token();
        let client = WorkersClient::with_interceptor(channel, auth.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let transport = GrpcTransport {
            client,
            url: options.connect.url.clone(),
            name: options.name.clone(),
            threads: options.threads as u32,
            allowed_roots: options.allowed_roots.clone(),
            have_token,
            worker_id: AtomicU64::new(0),
            heartbeat_ms: AtomicU64::new(1000),
            registration: tokio::sync::Mutex::new(()),
            jobs: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            offline: AtomicBool::new(false),
            offline_backoff: Mutex::new(RECONNECT),
            registered: options.metrics.registered.clone(),
        };
        let mut backoff = RECONNECT;
        loop {
            if *stop.borrow() {
                return Ok(None);
            }
            // the handshake goes out without the token; it is sent only to a coordinator that
            // requires one
            match transport.client.clone().handshake(HandshakeRequest {}).await {
                Ok(reply) => {
                    check_handshake(&transport.url, reply.get_ref(), have_token)
                        .map_err(|e| WorkerError::Transport(e.to_string()))?;
                    auth.arm();
                    transport.back_online();
                    break;
                }
                Err(s) if brainfit_proto::needs_token(&s, &auth) => auth.arm(),
                Err(s) if is_fatal(&s) => return Err(fatal(&transport.url, &s)),
                Err(s) => {
                    transport.went_offline(&s);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.failed()) => {}
                        _ = async {
                            if stop.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        } => {}
                    }
                }
            }
        }
        transport.register(0).await?;
        Ok(Some(transport))
    }

    fn went_offline(&self, status: &Status) {
        if !self.offline.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                coordinator = %self.url,
                "coordinator unreachable ({:?}: {}); retrying",
                status.code(),
                status.message()
            );
        }
    }

    fn back_online(&self) {
        self.offline_backoff.lock().expect("backoff lock").succeeded();
        if self.offline.swap(false, Ordering::Relaxed) {
            tracing::info!(coordinator = %self.url, "coordinator reachable again");
        }
    }

    /// Registers (again) unless another loop already replaced registration `stale`.
    async fn register(&self, stale: u64) -> Result<()> {
        let _guard = self.registration.lock().await;
        if self.worker_id.load(Ordering::SeqCst) != stale {
            return Ok(());
        }
        let reply = self
            .client
            .clone()
            .register(RegisterRequest {
                name: self.name.clone(),
                threads: self.threads,
                backend: crate::BACKEND.to_string(),
            })
            .await
            .map_err(|s| {
                if is_fatal(&s) {
                    fatal(&self.url, &s)
                } else {
                    WorkerError::Transport(format!("register: {}", s.message()))
                }
            })?
            .into_inner();
        if self.have_token && !reply.auth_required {
            // e.g. restarted without its token
            return Err(WorkerError::Refused(
                brainfit_proto::ProtoError::Unprotected { url: self.url.clone() }.to_string(),
            ));
        }
        self.heartbeat_ms.store(reply.heartbeat_ms.max(10), Ordering::SeqCst);
        self.worker_id.store(reply.worker_id, Ordering::SeqCst);
        self.registered.set(1);
        tracing::info!(worker = reply.worker_id, coordinator = %self.url, "registered");
        Ok(())
    }

    /// A lease request for `slots` tasks, listing every lease held.
    fn lease_request(&self, slots: usize) -> LeaseRequest {
        let held = self.held.lock().expect("held lock");
        LeaseRequest {
            worker_id: self.worker_id.load(Ordering::SeqCst),
            free_slots: slots as u32,
            held: held
                .iter()
                .map(|((job_id, task), (attempt, _))| v1::Lease {
                    job_id: job_id.clone(),
                    task: *task,
                    attempt: *attempt,
                })
                .collect(),
            reports_held: true,
        }
    }

    /// Raises the stop flags of the leases the coordinator no longer wants and forgets them.
    fn abandon(&self, leases: &[v1::Lease]) {
        let mut held = self.held.lock().expect("held lock");
        for l in leases {
            let key = (l.job_id.clone(), l.task);
            if held.get(&key).is_some_and(|(attempt, _)| *attempt == l.attempt) {
                let (_, flag) = held.remove(&key).expect("present");
                flag.raise();
                tracing::info!(job = %l.job_id, task = l.task, attempt = l.attempt, "the coordinator no longer wants this task: stopping it");
            }
        }
    }

    /// Records a lease as held; returns its stop flag.
    fn hold(&self, job_id: &str, task: u64, attempt: u32) -> Abandon {
        let flag = Abandon::default();
        let mut held = self.held.lock().expect("held lock");
        held.insert((job_id.to_string(), task), (attempt, flag.clone()));
        flag
    }

    /// Whether the process holds any lease (queued, running or being reported).
    fn holds_leases(&self) -> bool {
        !self.held.lock().expect("held lock").is_empty()
    }

    /// Forgets a lease once its report is delivered.
    fn release_held(&self, job_id: &str, task: u64, attempt: u32) {
        let mut held = self.held.lock().expect("held lock");
        let key = (job_id.to_string(), task);
        if held.get(&key).is_some_and(|(a, _)| *a == attempt) {
            held.remove(&key);
        }
    }

    /// How often to send a heartbeat while busy.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.load(Ordering::SeqCst))
    }

    /// The job's definition, fetched once (a few tries) and re-planned here.
    async fn job(&self, job_id: &str) -> Result<Arc<JobContext>> {
        if let Some(job) = self.jobs.lock().expect("jobs lock").get(job_id) {
            return Ok(job.clone());
        }
        // a few tries: the definition may be asked for while the job is being resumed
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let def = loop {
            let reply = self
                .client
                .clone()
                .get_job_definition(JobRequest { job_id: job_id.to_string() })
                .await;
            match reply {
                Ok(r) => break r.into_inner(),
                Err(s) if is_fatal(&s) => return Err(fatal(&self.url, &s)),
                Err(s)
                    if backoff.failures() < 4
                        && !matches!(s.code(), Code::NotFound | Code::FailedPrecondition) =>
                {
                    tokio::time::sleep(backoff.failed()).await;
                }
                Err(s) => {
                    return Err(WorkerError::Transport(format!("job {job_id}: {}", s.message())));
                }
            }
        };
        let corrupt =
            |what: &str, e: String| WorkerError::Transport(format!("job {job_id}: {what}: {e}"));
        let spec = JobSpec::from_toml(&def.job_toml, &def.source_name, &def.base_url)?;
        spec.check_roots(&self.allowed_roots)?;
        let inventory = serde_json::from_slice(&def.inventory_json)
            .map_err(|e| corrupt("inventory", e.to_string()))?;
        let tasks: Vec<brainfit_job::Task> =
            serde_json::from_slice(&def.tasks_json).map_err(|e| corrupt("tasks", e.to_string()))?;
        if tasks != brainfit_job::plan(&spec, &inventory) {
            return Err(corrupt(
                "plan",
                "this worker plans the job differently from the coordinator (different \
                 brainfit versions?)"
                    .into(),
            ));
        }
        let job = Arc::new(JobContext { id: def.run_id, spec, inventory, tasks });
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if jobs.len() >= MAX_CACHED_JOBS {
            jobs.clear();
        }
        jobs.insert(job_id.to_string(), job.clone());
        Ok(job)
    }

    /// Sends a report until it is delivered (its part is stored, or its failure matters): a
    /// coordinator back from a restart still learns of it. Stale reports are fine.
    async fn report(
        &self,
        what: &'static str,
        a: &Lease,
        error: String,
        permanent: bool,
    ) -> Result<()> {
        self.report_ids(what, &a.job.id, a.task as u64, a.attempt, error, permanent).await
    }

    async fn report_ids(
        &self,
        what: &'static str,
        job_id: &str,
        task: u64,
        attempt: u32,
        error: String,
        permanent: bool,
    ) -> Result<()> {
        // until delivered: a coordinator back from a restart must still learn of it
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let req = TaskReport {
                worker_id: self.worker_id.load(Ordering::SeqCst),
                job_id: job_id.to_string(),
                task,
                attempt,
                error: error.clone(),
                permanent,
            };
            let mut client = self.client.clone();
            let reply = match what {
                "complete" => client.complete_task(req).await,
                "fail" => client.fail_task(req).await,
                _ => client.release_task(req).await,
            };
            match reply {
                Ok(r) => {
                    self.back_online();
                    self.release_held(job_id, task, attempt);
                    if !r.get_ref().accepted {
                        tracing::debug!(job = %job_id, task, attempt, "{what} report was stale");
                    }
                    return Ok(());
                }
                Err(s) if is_fatal(&s) => return Err(fatal(&self.url, &s)),
                Err(s)
                    if matches!(
                        s.code(),
                        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition
                    ) =>
                {
                    tracing::warn!(job = %job_id, task, "{what} report refused: {}", s.message());
                    self.release_held(job_id, task, attempt);
                    return Ok(());
                }
                Err(s) => {
                    self.went_offline(&s);
                    tokio::time::sleep(backoff.failed()).await;
                }
            }
        }
    }

    /// Sends a zero-slot lease every heartbeat period until `stop` turns true.
    pub async fn heartbeat_loop(&self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.heartbeat()) => {}
                r = stop.wait_for(|s| *s) => { let _ = r; return; }
            }
            let request = self.lease_request(0);
            let id = request.worker_id;
            match self.client.clone().lease(request).await {
                Ok(r) if r.get_ref().unknown_worker => {
                    self.registered.set(0);
                    if let Err(e) = self.register(id).await {
                        tracing::debug!("heartbeat: {e}");
                    }
                }
                Ok(r) => {
                    self.back_online();
                    self.abandon(&r.get_ref().abandon);
                }
                Err(s) => self.went_offline(&s),
            }
        }
    }
}

impl Transport for GrpcTransport {
    async fn lease(&self, slots: usize) -> Result<LeaseReply> {
        let request = self.lease_request(slots);
        let id = request.worker_id;
        let reply = match self.client.clone().lease(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if is_fatal(&s) => return Err(fatal(&self.url, &s)),
            Err(s) => {
                self.went_offline(&s);
                let wait = self.offline_backoff.lock().expect("backoff lock").failed();
                tokio::time::sleep(wait).await;
                return Ok(LeaseReply::Idle);
            }
        };
        self.back_online();
        self.abandon(&reply.abandon);
        if reply.unknown_worker {
            self.registered.set(0);
            match self.register(id).await {
                Ok(()) => {}
                Err(e @ WorkerError::Refused(_)) => return Err(e),
                Err(e) => tracing::warn!("{e}"),
            }
            return Ok(LeaseReply::Idle);
        }
        let mut assignments = Vec::with_capacity(reply.tasks.len());
        for t in reply.tasks {
            match self.job(&t.job_id).await {
                Ok(job) if (t.task as usize) < job.tasks.len() => {
                    let abandon = self.hold(&t.job_id, t.task, t.attempt);
                    let (task, attempt) = (t.task as usize, t.attempt);
                    assignments.push(Lease { job, task, attempt, abandon });
                }
                other => {
                    let why = match other {
                        Err(e) => e.to_string(),
                        Ok(_) => format!("no task {}", t.task),
                    };
                    tracing::warn!(job = %t.job_id, task = t.task, "cannot take the task: {why}");
                    // never hold a task while heartbeating: report it failed (retried elsewhere)
                    self.report_ids("fail", &t.job_id, t.task, t.attempt, why, false).await?;
                }
            }
        }
        Ok(if assignments.is_empty() { LeaseReply::Idle } else { LeaseReply::Tasks(assignments) })
    }

    async fn complete(&self, a: &Lease) -> Result<()> {
        self.report("complete", a, String::new(), false).await
    }

    async fn fail(&self, a: &Lease, error: String, permanent: bool) -> Result<()> {
        self.report("fail", a, error, permanent).await
    }

    async fn release(&self, a: &Lease) -> Result<()> {
        self.report("release", a, String::new(), false).await
    }
}

/// A worker process: connects, registers, runs `threads` task loops sharing one executor
/// until `stop` turns true (then drains: running tasks finish and are reported, unstarted ones
/// are handed back) or a loop fails fatally.
pub async fn run_grpc_worker(
    options: GrpcWorkerOptions,
    store: Store,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    // loops stop on the caller's signal or when one of them fails
    let (halt, halted) = watch::channel(false);
    let mut outer = stop.clone();
    let forward = {
        let halt = halt.clone();
        tokio::spawn(async move {
            if outer.wait_for(|s| *s).await.is_ok() {
                let _ = halt.send(true);
            }
        })
    };
    let mut waiting = halted.clone();
    let Some(transport) = GrpcTransport::connect(&options, &mut waiting).await? else {
        forward.abort();
        return Ok(());
    };
    let transport = Arc::new(transport);
    let executor = Arc::new(Executor::with_metrics(store.clone(), options.metrics.clone()));
    let (beat_stop, beat_stopped) = watch::channel(false);
    let heartbeat = {
        let t = transport.clone();
        tokio::spawn(async move { t.heartbeat_loop(beat_stopped).await })
    };
    // with --exit-when-idle, a watch that stops the loops once no task was held for that long
    let idle_watch = options.exit_when_idle.map(|idle| {
        let (t, halt) = (transport.clone(), halt.clone());
        tokio::spawn(async move {
            let mut busy_at = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if t.holds_leases() {
                    busy_at = tokio::time::Instant::now();
                } else if busy_at.elapsed() >= idle {
                    tracing::info!("no task for {idle:?}: exiting (--exit-when-idle)");
                    let _ = halt.send(true);
                    return;
                }
            }
        })
    });
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..options.threads.max(1) {
        let (t, executor, store, halted) =
            (transport.clone(), executor.clone(), store.clone(), halted.clone());
        loops.spawn(async move { run_worker_until(&*t, executor, store, halted).await });
    }
    let mut result = Ok(());
    while let Some(joined) = loops.join_next().await {
        let r = joined.unwrap_or_else(|e| Err(WorkerError::Panic(e.to_string())));
        if let Err(e) = r {
            let _ = halt.send(true);
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    if let Some(watch) = idle_watch {
        watch.abort();
    }
    let _ = beat_stop.send(true);
    let _ = heartbeat.await;
    forward.abort();
    result
}
