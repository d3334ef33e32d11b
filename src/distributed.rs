//! Distributed runs from the command line: `coordinator`, `worker`, and the client commands
//! `submit`, `status`, `cancel`, `results`, all speaking `brainfit.v1` over gRPC.

use anyhow::{Context, Result, bail};
use brainfit_client::remote::{state_name, status_json};
use brainfit_coordinator::{Coordinator, CoordinatorConfig, SchedulerConfig, ServeOptions};
use brainfit_io::Store;
use brainfit_job::file::JobText;
use brainfit_proto::ConnectOptions;
use brainfit_proto::v1::{self, JobStatus};
use brainfit_worker::grpc::{GrpcWorkerOptions, run_grpc_worker};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Exit status of `submit --wait` for a cancelled job (a failed job exits with 1).
const EXIT_CANCELLED: i32 = 3;

/// How to reach a coordinator.
#[derive(Args, Debug)]
pub(crate) struct Remote {
    /// Coordinator URL: http://HOST:PORT, or https://HOST:PORT with --tls-ca.
    #[arg(long, env = "BRAINFIT_COORDINATOR")]
    coordinator: String,
    /// Shared token sent with every request. Prefer the BRAINFIT_TOKEN variable: command lines
    /// are visible to other users of the machine.
    #[arg(long, env = "BRAINFIT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA that signed the coordinator's certificate (TLS).
    #[arg(long, env = "BRAINFIT_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

/// `brainfit coordinator`.
#[derive(Args, Debug)]
pub(crate) struct CoordinatorArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one, printed at start-up).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    /// Where the job table is kept (a directory or URL); a restarted coordinator resumes the
    /// unfinished jobs it finds there.
    #[arg(long, default_value = "brainfit-state")]
    state: String,
    /// Shared token every request must carry. Prefer the BRAINFIT_TOKEN variable.
    #[arg(long, env = "BRAINFIT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM certificate chain to serve TLS with (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A worker not heard from for this long loses its tasks (they are queued again).
    #[arg(long, default_value_t = 30_000)]
    lease_timeout_ms: u64,
    /// A task that failed this many times fails its job.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// URL prefixes (comma-separated) that every input and output of a submitted job must lie
    /// under, e.g. file:///data/lab,s3://lab-bucket; required reading for shared deployments.
    #[arg(long, env = "BRAINFIT_ALLOWED_ROOTS", value_delimiter = ',')]
    allowed_roots: Vec<String>,
    /// Hours a job's full record is kept after it ended; then it is compacted (the job file's
    /// text and the summary go; status still answers).
    #[arg(long, default_value_t = 168)]
    retention_hours: u64,
    /// Serve /healthz, /readyz and Prometheus /metrics over HTTP on this address (HOST:PORT).
    #[arg(long, env = "BRAINFIT_METRICS_LISTEN")]
    metrics_listen: Option<String>,
}

/// `brainfit worker`.
#[derive(Args, Debug)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    remote: Remote,
    /// Tasks computed at the same time (default: one per CPU core).
    #[arg(long)]
    threads: Option<usize>,
    /// URL prefixes (comma-separated) that every input and output of a job must lie under;
    /// jobs outside them are refused.
    #[arg(long, env = "BRAINFIT_ALLOWED_ROOTS", value_delimiter = ',')]
    allowed_roots: Vec<String>,
    /// Serve /healthz, /readyz (registered with the coordinator) and Prometheus /metrics over
    /// HTTP on this address (HOST:PORT).
    #[arg(long, env = "BRAINFIT_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Exit (status 0) once no task has been held for this many seconds: workers of one-shot
    /// sweeps that leave when the queue is empty.
    #[arg(long, value_name = "SECONDS")]
    exit_when_idle: Option<u64>,
}

/// `brainfit submit`.
#[derive(Args, Debug)]
pub(crate) struct SubmitArgs {
    /// The job file (TOML; a path or a URL). Its inputs and output must be reachable from the
    /// coordinator and every worker (shared file system or object storage).
    job: String,
    #[command(flatten)]
    remote: Remote,
    /// Follow the job with a progress bar; exit 0 when it succeeds, 1 when it fails, 3 when
    /// it is cancelled.
    #[arg(long)]
    wait: bool,
    /// With --wait: do not write OUTPUT/report.html when the job succeeds.
    #[arg(long)]
    no_report: bool,
}

/// `brainfit status`.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// The job (default: list every job and worker).
    job_id: Option<String>,
    #[command(flatten)]
    remote: Remote,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `brainfit cancel`.
#[derive(Args, Debug)]
pub(crate) struct CancelArgs {
    /// The job.
    job_id: String,
    #[command(flatten)]
    remote: Remote,
}

/// `brainfit results`.
#[derive(Args, Debug)]
pub(crate) struct ResultsArgs {
    /// The job.
    job_id: String,
    #[command(flatten)]
    remote: Remote,
    /// Print the summary JSON only.
    #[arg(long)]
    json: bool,
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

fn connect_options(remote: &Remote) -> Result<ConnectOptions> {
    Ok(ConnectOptions {
        url: remote.coordinator.clone(),
        token: remote.token.clone().filter(|t| !t.is_empty()),
        tls_ca: match &remote.tls_ca {
            Some(p) => Some(read_pem(p, "CA certificate")?),
            None => None,
        },
    })
}

/// A client of the coordinator, after checking its handshake.
async fn connect(remote: &Remote) -> Result<brainfit_client::Remote> {
    Ok(brainfit_client::Remote::connect(&connect_options(remote)?).await?)
}

/// Resolves when the process gets SIGINT or SIGTERM.
async fn signalled() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `brainfit coordinator`: serves until SIGINT/SIGTERM.
pub(crate) async fn coordinator(args: CoordinatorArgs) -> Result<()> {
    let state_url = if args.state.contains("://") {
        args.state.clone()
    } else {
        super::dir_url(Path::new(&args.state))?
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some((read_pem(cert, "TLS certificate")?, read_pem(key, "TLS key")?))
        }
        _ => None,
    };
    let token = args.token.clone().filter(|t| !t.is_empty());
    let mut config = CoordinatorConfig::new(state_url.clone());
    config.scheduler = SchedulerConfig {
        lease_timeout: args.lease_timeout_ms.max(1),
        max_attempts: args.max_attempts.max(1),
    };
    config.allowed_roots = args.allowed_roots.clone();
    config.retention = std::time::Duration::from_secs(args.retention_hours.saturating_mul(3600));
    let coordinator = Coordinator::start(Store::new(), config)
        .await
        .with_context(|| format!("cannot load the job table at {state_url}"))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if token.is_none() {
        eprintln!(
            "brainfit coordinator: no token (--token / BRAINFIT_TOKEN): anyone who can reach \
             {addr} can submit jobs and read results"
        );
    }
    // bound before the first line is printed: whoever waits for it can scrape at once
    let metrics = match &args.metrics_listen {
        Some(addr) => {
            Some(crate::health::Health::coordinator(coordinator.clone())?.serve(addr).await?)
        }
        None => None,
    };
    println!(
        "brainfit coordinator listening on {addr} ({}, {}, state {state_url})",
        if tls.is_some() { "TLS" } else { "plain TCP" },
        if token.is_some() { "token required" } else { "no token" },
    );
    if let Some(bound) = metrics {
        println!("brainfit coordinator metrics on http://{bound}");
    }
    std::io::stdout().flush()?;
    let options = ServeOptions { token, tls };
    brainfit_coordinator::serve(coordinator, listener, options, signalled()).await?;
    Ok(())
}

fn worker_name() -> String {
    format!("{}/{}", brainfit_io::host_name(), std::process::id())
}

/// `brainfit worker`: computes tasks until SIGINT/SIGTERM, then drains; a second signal exits
/// at once.
pub(crate) async fn worker(args: WorkerArgs) -> Result<()> {
    let options = GrpcWorkerOptions {
        connect: connect_options(&args.remote)?,
        threads: args.threads.unwrap_or_else(super::default_workers).max(1),
        name: worker_name(),
        allowed_roots: args.allowed_roots.clone(),
        metrics: brainfit_worker::metrics::WorkerMetrics::new(),
        exit_when_idle: args.exit_when_idle.map(std::time::Duration::from_secs),
    };
    if let Some(metrics) = &args.metrics_listen {
        let bound = crate::health::Health::worker(&options.metrics)?.serve(metrics).await?;
        println!("brainfit worker metrics on http://{bound}");
        std::io::stdout().flush()?;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signalled().await;
        eprintln!(
            "brainfit worker: draining (finishing running tasks, handing back the others); \
             signal again to exit now"
        );
        let _ = stop.send(true);
        signalled().await;
        std::process::exit(130);
    });
    eprintln!(
        "brainfit worker {} -> {} with {} threads",
        options.name, options.connect.url, options.threads
    );
    run_grpc_worker(options, Store::new(), stopped).await?;
    eprintln!("brainfit worker: stopped");
    Ok(())
}

/// `brainfit submit`.
pub(crate) async fn submit(args: SubmitArgs) -> Result<()> {
    let store = Store::new();
    let job = JobText::read(&store, &args.job).await?;
    // the same check the coordinator does, before any network
    job.parse()?;
    let mut client = connect(&args.remote).await?;
    let job = client.submit(job.text, job.source_name, job.base_url).await?;
    eprintln!(
        "brainfit: submitted job {} ({}, {} tasks) -> {}",
        job.job_id, job.name, job.total, job.output
    );
    println!("{}", job.job_id);
    if !args.wait {
        return Ok(());
    }
    let end = watch(&mut client, &job.job_id).await?;
    match end.state() {
        v1::JobState::Succeeded => {
            print_results(&end)?;
            if !args.no_report {
                // the output must be reachable from here too; if not, say so and succeed
                if let Err(e) = super::write_report(&store, &end.output, None).await {
                    eprintln!("brainfit: warning: no report: {e:#}");
                }
            }
            Ok(())
        }
        v1::JobState::Cancelled => {
            eprintln!("brainfit: job {} was cancelled", end.job_id);
            std::process::exit(EXIT_CANCELLED);
        }
        _ => bail!("job {} failed: {}", end.job_id, end.error),
    }
}

/// Follows a job with a progress bar until it has ended; survives coordinator restarts.
async fn watch(client: &mut brainfit_client::Remote, id: &str) -> Result<JobStatus> {
    let bar = super::progress_bar();
    let end = client
        .follow(id, |update| match update {
            Some(s) => {
                bar.set_length(s.total);
                bar.set_position(s.done);
                bar.set_message(format!("{}, {} running", state_name(s), s.running));
            }
            None => bar.set_message("coordinator unreachable; retrying"),
        })
        .await;
    bar.finish_and_clear();
    Ok(end?)
}

fn print_results(s: &JobStatus) -> Result<()> {
    println!("brainfit: job {} ({}) succeeded: {} tasks", s.job_id, s.name, s.total);
    let summary: brainfit_job::Summary = serde_json::from_str(&s.summary_json)
        .with_context(|| format!("job {}: the coordinator sent an unreadable summary", s.job_id))?;
    super::print_summary(&summary, summary.compute_seconds, &s.output);
    Ok(())
}

/// `brainfit status`.
pub(crate) async fn status(args: StatusArgs) -> Result<()> {
    let mut client = connect(&args.remote).await?;
    if let Some(id) = &args.job_id {
        let s = client.job(id).await?;
        if args.json {
            println!("{}", status_json(&s));
        } else {
            println!("job {} ({}): {}", s.job_id, s.name, state_name(&s));
            println!(
                "  tasks: {} of {} done, {} running, {} retried, {} resumed after a restart",
                s.done, s.total, s.running, s.retries, s.resumed
            );
            println!("  output: {}", s.output);
            if !s.error.is_empty() {
                println!("  error: {}", s.error);
            }
        }
        return Ok(());
    }
    let all = client.list().await?;
    if args.json {
        let workers: Vec<serde_json::Value> = all
            .workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "worker_id": w.worker_id, "name": w.name, "threads": w.threads,
                    "leases": w.leases, "idle_ms": w.idle_ms,
                })
            })
            .collect();
        let jobs: Vec<serde_json::Value> = all.jobs.iter().map(status_json).collect();
        println!("{}", serde_json::json!({ "jobs": jobs, "workers": workers }));
        return Ok(());
    }
    println!("{:<28} {:<20} {:<10} {:>11} {:>8}", "JOB", "NAME", "STATE", "DONE", "RUNNING");
    for s in &all.jobs {
        println!(
            "{:<28} {:<20} {:<10} {:>11} {:>8}",
            s.job_id,
            s.name,
            state_name(s),
            format!("{}/{}", s.done, s.total),
            s.running
        );
    }
    println!();
    println!("{:<20} {:<28} {:>7} {:>7} {:>8}", "WORKER", "NAME", "THREADS", "TASKS", "IDLE");
    for w in &all.workers {
        println!(
            "{:<20} {:<28} {:>7} {:>7} {:>7.1}s",
            w.worker_id,
            w.name,
            w.threads,
            w.leases,
            w.idle_ms as f64 / 1000.0
        );
    }
    Ok(())
}

/// `brainfit cancel`.
pub(crate) async fn cancel(args: CancelArgs) -> Result<()> {
    let mut client = connect(&args.remote).await?;
    let s = client.cancel(&args.job_id).await?;
    println!("job {} cancelled ({} of {} tasks had finished)", s.job_id, s.done, s.total);
    Ok(())
}

/// `brainfit results`.
pub(crate) async fn results(args: ResultsArgs) -> Result<()> {
    let mut client = connect(&args.remote).await?;
    let s = client.job(&args.job_id).await?;
    match s.state() {
        v1::JobState::Succeeded if args.json => println!("{}", s.summary_json),
        v1::JobState::Succeeded => print_results(&s)?,
        v1::JobState::Failed => bail!("job {} failed: {}", s.job_id, s.error),
        _ => bail!(
            "job {} is {} ({} of {} tasks done): no results yet",
            s.job_id,
            state_name(&s),
            s.done,
            s.total
        ),
    }
    Ok(())
}
