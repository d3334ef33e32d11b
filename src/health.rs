//! Health and metrics over HTTP, for the coordinator and for workers (`--metrics-listen`):
//! `/healthz` (the process serves), `/readyz` (the coordinator has loaded its job table; a
//! worker is registered with its coordinator) and `/metrics` (Prometheus text format).

use anyhow::{Context, Result};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use brainfit_coordinator::Coordinator;
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::Arc;

/// What `/metrics` and `/readyz` report.
#[derive(Clone)]
pub(crate) struct Health {
    registry: Registry,
    /// Refreshes the gauges read off the process's state just before a scrape.
    refresh: Arc<dyn Fn() + Send + Sync>,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// Bytes read from storage, as a counter kept in step with brainfit-io's tally.
fn storage_bytes(registry: &Registry) -> Result<IntCounter> {
    let bytes = IntCounter::new(
        "brainfit_storage_bytes_read_total",
        "Bytes this process read from storage (local disk or object store)",
    )?;
    registry.register(Box::new(bytes.clone()))?;
    Ok(bytes)
}

fn sync_bytes(counter: &IntCounter) {
    let total = brainfit_io::bytes_read();
    counter.inc_by(total.saturating_sub(counter.get()));
}

impl Health {
    /// A coordinator's: tasks by state per job, jobs by state, live workers.
    pub(crate) fn coordinator(coordinator: Arc<Coordinator>) -> Result<Health> {
        let registry = Registry::new();
        let tasks = IntGaugeVec::new(
            Opts::new("brainfit_tasks", "Tasks of each job by state (queued, running, done)"),
            &["job", "name", "state"],
        )?;
        let retries = IntGaugeVec::new(
            Opts::new(
                "brainfit_task_retries",
                "Attempts of each job lost or failed and queued again",
            ),
            &["job", "name"],
        )?;
        let jobs = IntGaugeVec::new(Opts::new("brainfit_jobs", "Jobs by state"), &["state"])?;
        let workers = IntGauge::new("brainfit_workers_alive", "Worker processes registered")?;
        for c in [&tasks, &retries, &jobs] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(workers.clone()))?;
        let bytes = storage_bytes(&registry)?;
        let refresh = move || {
            let all = coordinator.list();
            tasks.reset();
            retries.reset();
            jobs.reset();
            for s in &all.jobs {
                let state = brainfit_client::remote::state_name(s);
                jobs.with_label_values(&[state]).inc();
                if brainfit_client::remote::is_final(s) {
                    continue;
                }
                let queued = s.total.saturating_sub(s.done + s.running);
                for (what, n) in [("queued", queued), ("running", s.running), ("done", s.done)] {
                    tasks.with_label_values(&[&s.job_id, &s.name, what]).set(n as i64);
                }
                retries.with_label_values(&[&s.job_id, &s.name]).set(s.retries as i64);
            }
            workers.set(all.workers.len() as i64);
            sync_bytes(&bytes);
        };
        Ok(Health { registry, refresh: Arc::new(refresh), ready: Arc::new(|| true) })
    }

    /// A worker's: its tasks by outcome and their seconds, registration, bytes read.
    pub(crate) fn worker(metrics: &brainfit_worker::metrics::WorkerMetrics) -> Result<Health> {
        let registry = Registry::new();
        metrics.register(&registry)?;
        let bytes = storage_bytes(&registry)?;
        let registered = metrics.registered.clone();
        Ok(Health {
            registry,
            refresh: Arc::new(move || sync_bytes(&bytes)),
            ready: Arc::new(move || registered.get() == 1),
        })
    }

    fn metrics_text(&self) -> String {
        (self.refresh)();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Serves the three endpoints on `addr` in the background; returns the bound address.
    pub(crate) async fn serve(self, addr: &str) -> Result<std::net::SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?;
        let bound = listener.local_addr()?;
        let ready = self.ready.clone();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || async move {
                    if ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }),
            )
            .route("/metrics", get(move || async move { self.metrics_text() }));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("metrics server stopped: {e}");
            }
        });
        Ok(bound)
    }
}
