//! The coordinator's job table and worker registry, as a state machine without I/O.
//!
//! [`JobTable`] holds every job a coordinator knows (its persisted [`JobRecord`], its phase and
//! its task [`Scheduler`]) and every live worker process. The coordinator crate calls it under
//! a lock with the current time and carries out the [`Effect`]s it returns (persist a record,
//! merge a run, abandon a run) after releasing the lock. Time comes in as arguments —
//! milliseconds on a monotonic clock for leases, unix seconds for records — so every
//! behaviour is a plain deterministic test.
//!
//! The run a job computes is a type parameter `R` (the coordinator uses `Arc<JobRun>`): the
//! table hands it back in effects and never looks inside.

use crate::{Failure, JobState, Lease, Millis, Report, Scheduler, SchedulerConfig, WorkerId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A job's state as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Not ended (being prepared, computed or merged).
    Running,
    /// Outputs written.
    Succeeded,
    /// A task or the merge failed.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

/// What the state directory keeps about a job across coordinator restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Job id (= run id).
    pub id: String,
    /// The job's name.
    pub name: String,
    /// The job file's text (empty once the record is compacted).
    pub job_toml: String,
    /// The job file's name, for messages.
    pub source_name: String,
    /// The directory relative paths of the job file resolve against.
    pub base_url: String,
    /// The output prefix.
    pub output: String,
    /// When it was submitted.
    pub submitted_unix: u64,
    /// Its state.
    pub state: RecordState,
    /// Tasks planned.
    #[serde(default)]
    pub total: u64,
    /// Tasks finished.
    #[serde(default)]
    pub done: u64,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// `summary.json` of a succeeded job (dropped once the record is compacted: the output
    /// keeps it).
    #[serde(default)]
    pub summary: Option<serde_json::Value>,
    /// When it ended.
    #[serde(default)]
    pub ended_unix: Option<u64>,
    /// Whether the record was compacted after the retention period.
    #[serde(default)]
    pub compacted: bool,
}

/// Where a job is in its life.
#[derive(Debug)]
pub enum Phase<R> {
    /// Being prepared again after a coordinator restart.
    Preparing,
    /// Tasks remain.
    Active(Box<Active<R>>),
    /// Every part is stored; the outputs are being merged.
    Merging(R),
    /// Ended: see the record's state.
    Ended,
}

/// A job whose tasks are being computed.
#[derive(Debug)]
pub struct Active<R> {
    /// The run.
    pub run: R,
    /// Its tasks' states.
    pub scheduler: Scheduler,
    /// Coordinator-wide worker id → the id this job's scheduler knows it by.
    workers: HashMap<u64, WorkerId>,
    /// Workers that were leased a task of this job.
    participants: BTreeSet<u64>,
    /// When its computation started.
    started: Millis,
}

/// One job of the table.
#[derive(Debug)]
pub struct JobEntry<R> {
    /// What is persisted.
    pub record: JobRecord,
    /// Where it is.
    pub phase: Phase<R>,
    /// Tasks found finished when it was prepared again (after a restart).
    pub resumed: u64,
    /// Leases handed out.
    pub leases: u64,
    /// Attempts lost or failed and queued again (kept once the scheduler is gone).
    pub retries: u64,
}

/// A job's state for status replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    /// Being prepared.
    Preparing,
    /// Tasks remain.
    Running,
    /// Outputs being merged.
    Merging,
    /// Outputs written.
    Succeeded,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl JobPhase {
    /// Whether a job in this phase will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobPhase::Succeeded | JobPhase::Failed | JobPhase::Cancelled)
    }
}

/// Progress figures of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCounts {
    /// Tasks planned.
    pub total: u64,
    /// Tasks finished.
    pub done: u64,
    /// Tasks leased now.
    pub running: u64,
    /// Attempts queued again.
    pub retries: u64,
}

impl<R> JobEntry<R> {
    /// The job's phase.
    pub fn phase(&self) -> JobPhase {
        match (&self.phase, self.record.state) {
            (Phase::Preparing, _) => JobPhase::Preparing,
            (Phase::Active(_), _) => JobPhase::Running,
            (Phase::Merging(_), _) => JobPhase::Merging,
            (Phase::Ended, RecordState::Succeeded) => JobPhase::Succeeded,
            (Phase::Ended, RecordState::Cancelled) => JobPhase::Cancelled,
            // an ended job whose record says running cannot be: report it failed
            (Phase::Ended, RecordState::Failed | RecordState::Running) => JobPhase::Failed,
        }
    }

    /// Its progress.
    pub fn counts(&self) -> JobCounts {
        match &self.phase {
            Phase::Active(a) => {
                let p = a.scheduler.progress();
                JobCounts {
                    total: p.total as u64,
                    done: p.done as u64,
                    running: p.running as u64,
                    retries: a.scheduler.retries(),
                }
            }
            _ => JobCounts {
                total: self.record.total,
                done: self.record.done,
                running: 0,
                retries: self.retries,
            },
        }
    }

    /// The run, while it is being computed or merged.
    pub fn run(&self) -> Option<&R> {
        match &self.phase {
            Phase::Active(a) => Some(&a.run),
            Phase::Merging(run) => Some(run),
            _ => None,
        }
    }
}

/// A live worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEntry {
    /// What it calls itself.
    pub name: String,
    /// Its task loops.
    pub threads: u32,
    /// Its linear-algebra backend.
    pub backend: String,
    /// When it was last heard from.
    pub last_seen: Millis,
}

/// Work for the caller once the table's lock is released.
#[derive(Debug)]
pub enum Effect<R> {
    /// Every task of job `id` is done: merge its parts into outputs, then call
    /// [`JobTable::merged`].
    Merge {
        /// Job id.
        id: String,
        /// Its run.
        run: R,
        /// Worker processes that computed tasks.
        workers: usize,
        /// Their linear-algebra backends (sorted, distinct).
        backends: Vec<String>,
        /// Seconds from activation to the last task.
        compute_seconds: f64,
    },
    /// Write job `id`'s record.
    Persist(String),
    /// A failed or cancelled run: remove its parts and release its output.
    Abandon(R),
}

/// A task report's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportKind {
    /// The result is stored.
    Complete,
    /// The attempt failed.
    Fail(Failure),
    /// Handed back unstarted.
    Release,
}

/// What became of a task report.
#[derive(Debug)]
pub struct ReportOutcome<R> {
    /// Whether it was for the current attempt and was applied.
    pub accepted: bool,
    /// A completion the scheduler did not expect (leased before a restart, say): if the
    /// task's part exists in this run, the task is done anyway ([`JobTable::mark_done`]).
    pub check_part: Option<R>,
}

/// A worker's lease request, answered.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeaseOutcome {
    /// Tasks handed out: (job id, lease).
    pub tasks: Vec<(String, Lease)>,
    /// Leases the worker reported holding that are no longer current (cancelled job, task
    /// leased again, job gone): it should stop them.
    pub abandon: Vec<(String, Lease)>,
    /// The worker is not registered (expired or never was): it must register again.
    pub unknown_worker: bool,
}

/// Requests the table refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// No such job.
    #[error("no job {0}")]
    NoJob(String),
    /// The job has fewer tasks.
    #[error("job {job} has no task {task}")]
    NoTask {
        /// Job id.
        job: String,
        /// The task asked for.
        task: usize,
    },
    /// The job is not in a phase that allows the request.
    #[error("job {job} is {phase:?}: {what}")]
    WrongPhase {
        /// Job id.
        job: String,
        /// Its phase.
        phase: JobPhase,
        /// What was asked.
        what: &'static str,
    },
}

/// How a lease request reports what the worker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held<'a> {
    /// The worker does not say (an embedded worker, an older worker): nothing is reconciled.
    Unknown,
    /// Every lease the worker holds, by job id.
    These(&'a [(String, Lease)]),
}

/// The coordinator's job table and worker registry.
#[derive(Debug)]
pub struct JobTable<R> {
    config: SchedulerConfig,
    jobs: BTreeMap<String, JobEntry<R>>,
    workers: BTreeMap<u64, WorkerEntry>,
    next_worker: u64,
}

impl<R: Clone> JobTable<R> {
    /// An empty table; worker ids start at `first_worker` (pick it from the wall clock so that
    /// ids of a restarted coordinator do not collide with those of its predecessor).
    pub fn new(config: SchedulerConfig, first_worker: u64) -> Self {
        JobTable {
            config,
            jobs: BTreeMap::new(),
            workers: BTreeMap::new(),
            next_worker: first_worker,
        }
    }

    /// The tuning every job's scheduler gets.
    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// How long a lease may be missing from its worker's heartbeat before it counts as lost:
    /// two heartbeat periods, so a lease whose reply is still on its way is never dropped.
    pub fn grace(&self) -> Millis {
        2 * self.heartbeat_period()
    }

    /// How often a busy worker must send a heartbeat: a quarter of the lease timeout.
    pub fn heartbeat_period(&self) -> Millis {
        (self.config.lease_timeout / 4).clamp(50, 5_000)
    }

    /// Adds a job loaded from the state directory: running ones are to be prepared again
    /// ([`JobTable::activate`]), ended ones answer status requests.
    pub fn insert_record(&mut self, record: JobRecord) {
        let phase =
            if record.state == RecordState::Running { Phase::Preparing } else { Phase::Ended };
        let retries = 0;
        self.jobs
            .insert(record.id.clone(), JobEntry { record, phase, resumed: 0, leases: 0, retries });
    }

    /// Adds a prepared, submitted job, ready to lease.
    pub fn insert_active(&mut self, record: JobRecord, run: R, scheduler: Scheduler, now: Millis) {
        let id = record.id.clone();
        let entry = JobEntry { record, phase: Phase::Preparing, resumed: 0, leases: 0, retries: 0 };
        self.jobs.insert(id.clone(), entry);
        let _ = self.activate(&id, Ok((run, scheduler, 0)), now);
    }

    /// Ends the preparation of job `id` (after a restart): with the prepared run it becomes
    /// active; with an error it fails. If it was cancelled meanwhile, returns the run so that
    /// the caller abandons it.
    pub fn activate(
        &mut self,
        id: &str,
        prepared: Result<(R, Scheduler, usize), String>,
        now: Millis,
    ) -> Option<R> {
        let entry = self.jobs.get_mut(id)?;
        if !matches!(entry.phase, Phase::Preparing) {
            return prepared.ok().map(|(run, _, _)| run);
        }
        match prepared {
            Ok((run, scheduler, resumed)) => {
                entry.resumed = resumed as u64;
                entry.record.total = scheduler.n_tasks() as u64;
                entry.phase = Phase::Active(Box::new(Active {
                    run,
                    scheduler,
                    workers: HashMap::new(),
                    participants: BTreeSet::new(),
                    started: now,
                }));
            }
            Err(error) => {
                entry.record.state = RecordState::Failed;
                entry.record.error = Some(format!("cannot resume the job: {error}"));
                entry.phase = Phase::Ended;
            }
        }
        None
    }

    /// Job `id`.
    pub fn job(&self, id: &str) -> Result<&JobEntry<R>, TableError> {
        self.jobs.get(id).ok_or_else(|| TableError::NoJob(id.to_string()))
    }

    /// Every job, oldest id first.
    pub fn jobs(&self) -> impl Iterator<Item = &JobEntry<R>> {
        self.jobs.values()
    }

    /// Every live worker with the number of tasks it holds.
    pub fn workers(&self) -> impl Iterator<Item = (u64, &WorkerEntry, usize)> {
        self.workers.iter().map(|(&gid, w)| {
            let leases = self
                .jobs
                .values()
                .filter_map(|e| match &e.phase {
                    Phase::Active(a) => a.workers.get(&gid).map(|&wid| a.scheduler.leases_of(wid)),
                    _ => None,
                })
                .sum();
            (gid, w, leases)
        })
    }

    /// Registers a worker process; returns its coordinator-wide id.
    pub fn register_worker(&mut self, name: &str, threads: u32, backend: &str, now: Millis) -> u64 {
        let gid = self.next_worker;
        self.next_worker += 1;
        let entry = WorkerEntry {
            name: name.to_string(),
            threads,
            backend: backend.to_string(),
            last_seen: now,
        };
        self.workers.insert(gid, entry);
        gid
    }

    /// Hands up to `slots` tasks to worker `gid`, oldest job first, tasks in plan order. Every
    /// request is a heartbeat for all of the worker's jobs, and reconciles what it holds
    /// ([`Scheduler::reconcile`]).
    pub fn lease(&mut self, gid: u64, slots: usize, held: Held<'_>, now: Millis) -> LeaseOutcome {
        self.expire(now);
        let grace = self.grace();
        let Some(w) = self.workers.get_mut(&gid) else {
            return LeaseOutcome { unknown_worker: true, ..LeaseOutcome::default() };
        };
        w.last_seen = now;
        let mut out = LeaseOutcome::default();
        if let Held::These(held) = held {
            // leases of jobs that are not computing any more
            out.abandon.extend(
                held.iter()
                    .filter(|(id, _)| {
                        !matches!(self.jobs.get(id), Some(JobEntry { phase: Phase::Active(_), .. }))
                    })
                    .cloned(),
            );
        }
        for (id, entry) in &mut self.jobs {
            let Phase::Active(a) = &mut entry.phase else {
                continue;
            };
            let scheduler = &mut a.scheduler;
            if let Some(&wid) = a.workers.get(&gid) {
                if !scheduler.heartbeat(wid, now) {
                    a.workers.remove(&gid);
                } else if let Held::These(held) = held {
                    let mine: Vec<Lease> =
                        held.iter().filter(|(j, _)| j == id).map(|(_, l)| *l).collect();
                    let stale = scheduler.reconcile(wid, &mine, grace, now);
                    out.abandon.extend(stale.into_iter().map(|l| (id.clone(), l)));
                }
            } else if let Held::These(held) = held {
                // holding tasks of a job this worker is not known to: none is current
                out.abandon.extend(held.iter().filter(|(j, _)| j == id).cloned());
            }
            if out.tasks.len() >= slots || *scheduler.state() != JobState::Running {
                continue;
            }
            let wid = *a.workers.entry(gid).or_insert_with(|| scheduler.register(now));
            let leases = scheduler.lease(wid, slots - out.tasks.len(), now).unwrap_or_default();
            if !leases.is_empty() {
                a.participants.insert(gid);
                entry.leases += leases.len() as u64;
            }
            out.tasks.extend(leases.into_iter().map(|l| (id.clone(), l)));
        }
        out
    }

    /// Applies a report of worker `gid` about `lease` of job `id`.
    pub fn report(
        &mut self,
        gid: u64,
        id: &str,
        lease: Lease,
        kind: &ReportKind,
        now: Millis,
    ) -> Result<ReportOutcome<R>, TableError> {
        if let Some(w) = self.workers.get_mut(&gid) {
            w.last_seen = now;
        }
        let stale = ReportOutcome { accepted: false, check_part: None };
        let Some(JobEntry { phase: Phase::Active(a), .. }) = self.jobs.get_mut(id) else {
            return Ok(stale);
        };
        let scheduler = &mut a.scheduler;
        if lease.task >= scheduler.n_tasks() {
            return Err(TableError::NoTask { job: id.to_string(), task: lease.task });
        }
        let report = match a.workers.get(&gid) {
            Some(&wid) => match kind {
                ReportKind::Complete => scheduler.complete(wid, lease, now),
                ReportKind::Fail(failure) => scheduler.fail(wid, lease, failure, now),
                ReportKind::Release => scheduler.release(wid, lease, now),
            },
            None => Report::Stale,
        };
        let accepted = report == Report::Accepted;
        let check = *kind == ReportKind::Complete
            && !accepted
            && *scheduler.state() == JobState::Running
            && !scheduler.is_done(lease.task);
        Ok(ReportOutcome { accepted, check_part: check.then(|| a.run.clone()) })
    }

    /// Task `task` of job `id` is done (its part was found stored).
    pub fn mark_done(&mut self, id: &str, task: usize) {
        if let Some(JobEntry { phase: Phase::Active(a), .. }) = self.jobs.get_mut(id)
            && task < a.scheduler.n_tasks()
        {
            a.scheduler.mark_done(task);
        }
    }

    /// Removes workers not heard from within the lease timeout; their tasks are queued again.
    /// Returns whether any task was.
    pub fn expire(&mut self, now: Millis) -> bool {
        let timeout = self.config.lease_timeout;
        self.workers.retain(|_, w| now.saturating_sub(w.last_seen) <= timeout);
        let mut requeued = false;
        for entry in self.jobs.values_mut() {
            if let Phase::Active(a) = &mut entry.phase {
                for dead in a.scheduler.expire(now) {
                    a.workers.retain(|_, w| *w != dead);
                    requeued = true;
                }
            }
        }
        requeued
    }

    /// Cancels job `id`: no more leases; its workers are told to abandon their tasks at their
    /// next heartbeat. Returns the run to abandon (None while it was still being prepared: the
    /// preparation hands it back to [`JobTable::activate`]'s caller).
    pub fn cancel(&mut self, id: &str, now_unix: u64) -> Result<Option<R>, TableError> {
        let entry = self.jobs.get_mut(id).ok_or_else(|| TableError::NoJob(id.to_string()))?;
        let run = match &mut entry.phase {
            Phase::Active(a) => {
                a.scheduler.cancel();
                let p = a.scheduler.progress();
                entry.record.done = p.done as u64;
                entry.retries = a.scheduler.retries();
                Some(a.run.clone())
            }
            Phase::Preparing => None,
            Phase::Merging(_) | Phase::Ended => {
                return Err(TableError::WrongPhase {
                    job: id.to_string(),
                    phase: entry.phase(),
                    what: "nothing to cancel",
                });
            }
        };
        entry.record.state = RecordState::Cancelled;
        entry.record.ended_unix = Some(now_unix);
        entry.phase = Phase::Ended;
        Ok(run)
    }

    /// The merge of job `id` ended: with its summary, or with the error that stopped it
    /// (then the run is handed back to be abandoned).
    pub fn merged(
        &mut self,
        id: &str,
        result: Result<serde_json::Value, String>,
        now_unix: u64,
    ) -> Option<R> {
        let entry = self.jobs.get_mut(id)?;
        let Phase::Merging(run) = std::mem::replace(&mut entry.phase, Phase::Ended) else {
            return None;
        };
        entry.record.ended_unix = Some(now_unix);
        match result {
            Ok(summary) => {
                entry.record.state = RecordState::Succeeded;
                entry.record.done = entry.record.total;
                entry.record.summary = Some(summary);
                None
            }
            Err(error) => {
                entry.record.state = RecordState::Failed;
                entry.record.error = Some(format!("merging the results failed: {error}"));
                Some(run)
            }
        }
    }

    /// Settles jobs whose scheduler reached an end: merges to start, runs to abandon, records
    /// to persist. `describe` names a task for people (for the error of a failed job).
    pub fn settle(
        &mut self,
        now: Millis,
        now_unix: u64,
        describe: impl Fn(&R, usize) -> String,
    ) -> Vec<Effect<R>> {
        let mut effects = Vec::new();
        for (id, entry) in &mut self.jobs {
            let Phase::Active(a) = &entry.phase else {
                continue;
            };
            let progress = a.scheduler.progress();
            entry.record.total = progress.total as u64;
            entry.record.done = progress.done as u64;
            entry.retries = a.scheduler.retries();
            match a.scheduler.state().clone() {
                JobState::Running => {}
                JobState::Succeeded => {
                    let backends: BTreeSet<String> = a
                        .participants
                        .iter()
                        .filter_map(|gid| self.workers.get(gid).map(|w| w.backend.clone()))
                        .collect();
                    effects.push(Effect::Merge {
                        id: id.clone(),
                        run: a.run.clone(),
                        workers: a.participants.len(),
                        backends: backends.into_iter().collect(),
                        compute_seconds: now.saturating_sub(a.started) as f64 / 1000.0,
                    });
                    entry.phase = Phase::Merging(a.run.clone());
                }
                JobState::Failed { task, error } => {
                    let task = describe(&a.run, task);
                    entry.record.state = RecordState::Failed;
                    entry.record.error = Some(format!("task {task} failed: {error}"));
                    entry.record.ended_unix = Some(now_unix);
                    effects.push(Effect::Abandon(a.run.clone()));
                    entry.phase = Phase::Ended;
                    effects.push(Effect::Persist(id.clone()));
                }
                JobState::Cancelled => {
                    entry.record.state = RecordState::Cancelled;
                    entry.record.ended_unix = Some(now_unix);
                    effects.push(Effect::Abandon(a.run.clone()));
                    entry.phase = Phase::Ended;
                    effects.push(Effect::Persist(id.clone()));
                }
            }
        }
        effects
    }

    /// Compacts the records of jobs that ended more than `retention_secs` ago: the job file's
    /// text and the summary go (the output keeps `summary.json`); name, state, output, error
    /// and times stay, so status requests still answer. Returns the ids compacted (to persist).
    pub fn compact_ended(&mut self, now_unix: u64, retention_secs: u64) -> Vec<String> {
        let mut compacted = Vec::new();
        for (id, entry) in &mut self.jobs {
            let r = &mut entry.record;
            if matches!(entry.phase, Phase::Ended)
                && !r.compacted
                && r.ended_unix.is_some_and(|t| now_unix.saturating_sub(t) > retention_secs)
            {
                r.job_toml.clear();
                r.summary = None;
                r.compacted = true;
                compacted.push(id.clone());
            }
        }
        compacted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SchedulerConfig {
        SchedulerConfig { lease_timeout: 1000, max_attempts: 3 }
    }

    fn record(id: &str) -> JobRecord {
        JobRecord {
            id: id.into(),
            name: format!("job {id}"),
            job_toml: "name = \"x\"".into(),
            source_name: "job.toml".into(),
            base_url: "memory://t".into(),
            output: "memory://t/out".into(),
            submitted_unix: 100,
            state: RecordState::Running,
            total: 0,
            done: 0,
            error: None,
            summary: None,
            ended_unix: None,
            compacted: false,
        }
    }

    /// A table with jobs `a` (3 tasks) and `b` (2 tasks); runs are named by their job.
    fn table() -> JobTable<&'static str> {
        let mut t = JobTable::new(config(), 1);
        t.insert_active(record("a"), "run-a", Scheduler::new(3, config()), 0);
        t.insert_active(record("b"), "run-b", Scheduler::new(2, config()), 0);
        t
    }

    fn describe(run: &&str, task: usize) -> String {
        format!("{run}#{task}")
    }

    #[test]
    fn leases_go_oldest_job_first_and_every_request_is_a_heartbeat() {
        let mut t = table();
        let w = t.register_worker("w", 4, "faer", 0);
        let out = t.lease(w, 4, Held::Unknown, 10);
        let got: Vec<(&str, usize)> = out.tasks.iter().map(|(j, l)| (j.as_str(), l.task)).collect();
        assert_eq!(got, [("a", 0), ("a", 1), ("a", 2), ("b", 0)]);
        // silent past the timeout: expired, its tasks queued again, it must register again
        assert!(t.expire(1011));
        assert!(t.lease(w, 1, Held::Unknown, 1012).unknown_worker);
        assert_eq!(t.job("a").unwrap().counts().retries, 3);
    }

    #[test]
    fn a_job_runs_to_a_merge_and_its_result_is_recorded() {
        let mut t = table();
        let w = t.register_worker("w", 8, "faer", 0);
        let out = t.lease(w, 8, Held::Unknown, 0);
        for (id, l) in out.tasks.iter().filter(|(id, _)| id == "a") {
            assert!(t.report(w, id, *l, &ReportKind::Complete, 500).unwrap().accepted);
        }
        let effects = t.settle(500, 1_000, describe);
        match &effects[..] {
            [Effect::Merge { id, run, workers, backends, compute_seconds }] => {
                assert_eq!((id.as_str(), *run, *workers), ("a", "run-a", 1));
                assert_eq!(backends, &["faer".to_string()]);
                assert_eq!(*compute_seconds, 0.5);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.job("a").unwrap().phase(), JobPhase::Merging);
        assert_eq!(t.merged("a", Ok(serde_json::json!({"ok": 1})), 1_001), None);
        let a = t.job("a").unwrap();
        assert_eq!((a.phase(), a.record.ended_unix), (JobPhase::Succeeded, Some(1_001)));
        assert_eq!(a.counts().done, 3);
    }

    #[test]
    fn a_failed_task_fails_its_job_with_the_task_named_and_the_run_abandoned() {
        let mut t = table();
        let w = t.register_worker("w", 1, "faer", 0);
        let (id, l) = t.lease(w, 1, Held::Unknown, 0).tasks.remove(0);
        let failure = Failure { error: "brain.npy: NaN".into(), permanent: true };
        assert!(t.report(w, &id, l, &ReportKind::Fail(failure), 1).unwrap().accepted);
        let effects = t.settle(2, 50, describe);
        assert!(matches!(effects[..], [Effect::Abandon("run-a"), Effect::Persist(_)]));
        let a = t.job("a").unwrap();
        assert_eq!(a.phase(), JobPhase::Failed);
        assert_eq!(a.record.error.as_deref(), Some("task run-a#0 failed: brain.npy: NaN"));
        assert!(t.report(w, "a", l, &ReportKind::Complete, 3).unwrap().check_part.is_none());
        assert_eq!(
            t.report(w, "b", Lease { task: 9, attempt: 1 }, &ReportKind::Complete, 3).unwrap_err(),
            TableError::NoTask { job: "b".into(), task: 9 }
        );
    }

    #[test]
    fn cancelled_tasks_are_abandoned_by_their_workers_at_the_next_heartbeat() {
        let mut t = table();
        let w = t.register_worker("w", 2, "faer", 0);
        let out = t.lease(w, 2, Held::Unknown, 0);
        assert_eq!(t.cancel("a", 7).unwrap(), Some("run-a"));
        assert_eq!(t.job("a").unwrap().phase(), JobPhase::Cancelled);
        // the worker still runs both tasks of job a: it is told to stop them
        let beat = t.lease(w, 0, Held::These(&out.tasks), 10);
        assert_eq!(beat.abandon, out.tasks);
        assert!(matches!(t.cancel("a", 8), Err(TableError::WrongPhase { .. })));
        assert_eq!(t.cancel("zz", 8), Err(TableError::NoJob("zz".into())));
    }

    #[test]
    fn a_lease_its_worker_forgot_is_queued_again_after_the_grace_period() {
        let mut t = table();
        let w = t.register_worker("w", 3, "faer", 0);
        let out = t.lease(w, 3, Held::Unknown, 0);
        let (kept, forgotten) = (out.tasks[..2].to_vec(), out.tasks[2].clone());
        // within the grace period the reply may still be on its way: nothing is dropped
        let early = t.lease(w, 0, Held::These(&kept), t.grace());
        assert!(early.abandon.is_empty());
        assert_eq!(t.job("a").unwrap().counts().running, 3);
        // later, the forgotten task goes back to the queue (attempt counted); the kept stay
        let late = t.lease(w, 0, Held::These(&kept), t.grace() + 1);
        assert!(late.abandon.is_empty());
        let a = t.job("a").unwrap().counts();
        assert_eq!((a.running, a.retries), (2, 1));
        let again = t.lease(w, 1, Held::These(&kept), t.grace() + 2);
        assert_eq!(again.tasks, [("a".to_string(), Lease { task: forgotten.1.task, attempt: 2 })]);
        // its late report is stale (the part is checked instead); the first attempt's lease,
        // if the worker still holds it, is to be abandoned
        let stale = t.report(w, "a", forgotten.1, &ReportKind::Complete, t.grace() + 3).unwrap();
        assert!(!stale.accepted && stale.check_part.is_some());
        let mut held = kept.clone();
        held.push(forgotten.clone());
        let beat = t.lease(w, 0, Held::These(&held), t.grace() + 4);
        assert_eq!(beat.abandon, [forgotten]);
    }

    #[test]
    fn ended_records_are_compacted_after_the_retention_period() {
        let mut t = table();
        t.cancel("a", 1_000).unwrap();
        assert!(t.compact_ended(1_000 + 3600, 3600).is_empty(), "not yet");
        assert_eq!(t.compact_ended(1_000 + 3601, 3600), ["a".to_string()]);
        let a = &t.job("a").unwrap().record;
        assert!(a.compacted && a.job_toml.is_empty());
        assert_eq!((a.name.as_str(), a.state), ("job a", RecordState::Cancelled));
        assert!(t.compact_ended(1_000_000, 3600).is_empty(), "once; running jobs never");
    }

    #[test]
    fn a_job_cancelled_while_being_prepared_hands_its_run_back() {
        let mut t: JobTable<&str> = JobTable::new(config(), 1);
        t.insert_record(record("r"));
        assert_eq!(t.job("r").unwrap().phase(), JobPhase::Preparing);
        assert_eq!(t.cancel("r", 5).unwrap(), None);
        assert_eq!(
            t.activate("r", Ok(("run-r", Scheduler::new(1, config()), 0)), 6),
            Some("run-r")
        );
        let mut t: JobTable<&str> = JobTable::new(config(), 1);
        t.insert_record(record("s"));
        assert_eq!(t.activate("s", Err("inputs moved".into()), 6), None);
        let s = t.job("s").unwrap();
        assert_eq!(s.phase(), JobPhase::Failed);
        assert!(s.record.error.as_deref().unwrap().contains("inputs moved"));
    }
}
