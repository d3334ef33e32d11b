//! A worker process's metrics (Prometheus): tasks by outcome, task seconds, whether the worker
//! is registered with its coordinator. The `brainfit worker` command serves them with the
//! bytes read from storage on its `--metrics-listen` port.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// The metrics of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// Tasks ended, by outcome (`done`, `failed`, `abandoned`).
    pub tasks: IntCounterVec,
    /// Seconds from a task's start (loading its inputs) to its stored result.
    pub task_seconds: Histogram,
    /// 1 while the worker is registered with its coordinator.
    pub registered: IntGauge,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    /// Fresh metrics, not registered anywhere.
    pub fn new() -> Self {
        let tasks = IntCounterVec::new(
            Opts::new("brainfit_worker_tasks_total", "Tasks this worker ended, by outcome"),
            &["outcome"],
        )
        .expect("a valid metric");
        let buckets = prometheus::exponential_buckets(0.05, 2.0, 16).expect("valid buckets");
        let task_seconds = Histogram::with_opts(
            HistogramOpts::new("brainfit_worker_task_seconds", "Seconds per task").buckets(buckets),
        )
        .expect("a valid metric");
        let registered = IntGauge::new(
            "brainfit_worker_registered",
            "1 while the worker is registered with its coordinator",
        )
        .expect("a valid metric");
        WorkerMetrics { tasks, task_seconds, registered }
    }

    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.tasks.clone()))?;
        registry.register(Box::new(self.task_seconds.clone()))?;
        registry.register(Box::new(self.registered.clone()))
    }
}
