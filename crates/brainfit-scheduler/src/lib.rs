//! brainfit's scheduler core: which task runs where, and what happens when a worker fails.
//!
//! Nothing here does I/O or reads a clock: callers pass the current time, so every behaviour —
//! lease expiry, lost and stale attempts, retries, cancellation, record compaction — is a
//! plain deterministic unit test. Two layers:
//!
//! * [`Scheduler`], the task state machine of one job. A worker asks for tasks with its free
//!   slots (the ask doubles as its heartbeat) and reports each result with the attempt number
//!   it was given; reports of attempts that are no longer current are dropped. Embedded runs
//!   use it directly (workers are tasks of this process).
//! * [`table::JobTable`], the coordinator's many jobs and worker processes: one scheduler per
//!   job, leases oldest job first, heartbeats that reconcile what workers hold, the effects
//!   (persist, merge, abandon) that the `brainfit-coordinator` crate carries out.

pub mod table;

pub use table::{Held, JobTable};

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Milliseconds on the caller's clock.
pub type Millis = u64;

/// Tuning of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// A worker not heard from for this long loses its leases.
    pub lease_timeout: Millis,
    /// A task that failed this many times fails the job.
    pub max_attempts: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { lease_timeout: 30_000, max_attempts: 3 }
    }
}

/// A worker's identity, handed out by [`Scheduler::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

/// A task handed to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Task index in the plan.
    pub task: usize,
    /// Attempt number, starting at 1; reports must carry it.
    pub attempt: u32,
}

/// Why a task attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, for people.
    pub error: String,
    /// Whether another attempt would fail alike (a wrong input, a bug): then the job fails
    /// without retries. Storage and network failures are not permanent.
    pub permanent: bool,
}

impl Failure {
    /// A failure another attempt may not repeat (retried up to `max_attempts`).
    pub fn transient(error: impl Into<String>) -> Self {
        Failure { error: error.into(), permanent: false }
    }
}

/// What became of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The report was for the current attempt and was applied.
    Accepted,
    /// The attempt is no longer current (expired, retried, finished, cancelled): dropped.
    Stale,
}

/// The state of the job as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Tasks remain.
    Running,
    /// Every task finished.
    Succeeded,
    /// A task failed on every attempt.
    Failed {
        /// The task.
        task: usize,
        /// Its last error.
        error: String,
    },
    /// Cancelled by a user.
    Cancelled,
}

/// Counts for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Finished tasks.
    pub done: usize,
    /// Tasks leased right now.
    pub running: usize,
    /// All tasks.
    pub total: usize,
}

#[derive(Debug, Clone)]
enum Slot {
    Pending { attempts: u32 },
    Leased { worker: WorkerId, attempt: u32, since: Millis },
    Done,
}

#[derive(Debug, Clone, Default)]
struct Worker {
    last_seen: Millis,
    leases: BTreeSet<usize>,
}

/// The task state machine of one job.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    slots: Vec<Slot>,
    /// Each task's stage: a task is leased only once every task of an earlier stage is done.
    stages: Vec<u32>,
    /// Tasks not yet done, per stage.
    undone: BTreeMap<u32, usize>,
    queue: VecDeque<usize>,
    workers: BTreeMap<WorkerId, Worker>,
    next_worker: u64,
    done: usize,
    retries: u64,
    state: JobState,
}

impl Scheduler {
    /// A scheduler for `n_tasks` tasks, all pending, queued in plan order.
    pub fn new(n_tasks: usize, config: SchedulerConfig) -> Self {
        Self::staged(vec![0; n_tasks], config)
    }

    /// A scheduler for tasks in stages (`stages[task]`, e.g. feature extraction before the
    /// analyses that read the features): a task is leased only once every task of every
    /// earlier stage is done. Within a stage, tasks are queued in plan order.
    pub fn staged(stages: Vec<u32>, config: SchedulerConfig) -> Self {
        let n_tasks = stages.len();
        let mut undone = BTreeMap::new();
        for &s in &stages {
            *undone.entry(s).or_insert(0) += 1;
        }
        Scheduler {
            config,
            slots: vec![Slot::Pending { attempts: 0 }; n_tasks],
            stages,
            undone,
            queue: (0..n_tasks).collect(),
            workers: BTreeMap::new(),
            next_worker: 1,
            done: 0,
            retries: 0,
            state: if n_tasks == 0 { JobState::Succeeded } else { JobState::Running },
        }
    }

    /// Marks tasks already finished by an earlier run (their results exist), e.g. after a
    /// coordinator restart.
    pub fn mark_done(&mut self, task: usize) {
        if !matches!(self.slots[task], Slot::Done) {
            if let Slot::Leased { worker, .. } = self.slots[task]
                && let Some(w) = self.workers.get_mut(&worker)
            {
                w.leases.remove(&task);
            }
            self.slots[task] = Slot::Done;
            self.queue.retain(|&t| t != task);
            self.stage_done(task);
            self.done += 1;
            if self.done == self.slots.len() && self.state == JobState::Running {
                self.state = JobState::Succeeded;
            }
        }
    }

    /// Registers a new worker.
    pub fn register(&mut self, now: Millis) -> WorkerId {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.workers.insert(id, Worker { last_seen: now, leases: BTreeSet::new() });
        id
    }

    /// Hands up to `slots` pending tasks to `worker`; also records a heartbeat. An unknown
    /// (expired) worker gets nothing and must register again.
    pub fn lease(&mut self, worker: WorkerId, slots: usize, now: Millis) -> Option<Vec<Lease>> {
        self.expire(now);
        let w = self.workers.get_mut(&worker)?;
        w.last_seen = now;
        let mut out = Vec::new();
        if self.state != JobState::Running {
            return Some(out);
        }
        // the open stage: the earliest with a task not done
        let open = self.undone.keys().next().copied();
        while out.len() < slots {
            let Some(at) = self.queue.iter().position(|&t| Some(self.stages[t]) == open) else {
                break;
            };
            let Some(task) = self.queue.remove(at) else {
                break;
            };
            let Slot::Pending { attempts } = self.slots[task] else {
                continue;
            };
            let attempt = attempts + 1;
            self.slots[task] = Slot::Leased { worker, attempt, since: now };
            w.leases.insert(task);
            out.push(Lease { task, attempt });
        }
        Some(out)
    }

    /// Counts `task` (now done) off its stage.
    fn stage_done(&mut self, task: usize) {
        let stage = self.stages[task];
        if let Some(n) = self.undone.get_mut(&stage) {
            *n -= 1;
            if *n == 0 {
                self.undone.remove(&stage);
            }
        }
    }

    /// Records that `worker` is alive (without asking for tasks).
    pub fn heartbeat(&mut self, worker: WorkerId, now: Millis) -> bool {
        match self.workers.get_mut(&worker) {
            Some(w) => {
                w.last_seen = now;
                true
            }
            None => false,
        }
    }

    fn take_current(&mut self, worker: WorkerId, lease: Lease) -> bool {
        match self.slots.get(lease.task) {
            Some(Slot::Leased { worker: w, attempt, .. })
                if *w == worker && *attempt == lease.attempt =>
            {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.leases.remove(&lease.task);
                }
                true
            }
            _ => false,
        }
    }

    /// The task of `lease` finished and its result is stored.
    pub fn complete(&mut self, worker: WorkerId, lease: Lease, now: Millis) -> Report {
        self.heartbeat(worker, now);
        if self.state != JobState::Running || !self.take_current(worker, lease) {
            return Report::Stale;
        }
        self.slots[lease.task] = Slot::Done;
        self.stage_done(lease.task);
        self.done += 1;
        if self.done == self.slots.len() {
            self.state = JobState::Succeeded;
        }
        Report::Accepted
    }

    /// The task of `lease` failed: retried elsewhere, or the job fails at once when the
    /// failure is permanent (another attempt would fail alike), or once the task has failed
    /// `max_attempts` times.
    pub fn fail(
        &mut self,
        worker: WorkerId,
        lease: Lease,
        failure: &Failure,
        now: Millis,
    ) -> Report {
        self.heartbeat(worker, now);
        if self.state != JobState::Running || !self.take_current(worker, lease) {
            return Report::Stale;
        }
        let error = &failure.error;
        if failure.permanent || lease.attempt >= self.config.max_attempts {
            self.state = JobState::Failed { task: lease.task, error: error.clone() };
        } else {
            self.slots[lease.task] = Slot::Pending { attempts: lease.attempt };
            self.queue.push_back(lease.task);
            self.retries += 1;
        }
        Report::Accepted
    }

    /// Hands a task back unstarted (a draining worker): requeued without counting an attempt.
    pub fn release(&mut self, worker: WorkerId, lease: Lease, now: Millis) -> Report {
        self.heartbeat(worker, now);
        if self.state != JobState::Running || !self.take_current(worker, lease) {
            return Report::Stale;
        }
        self.slots[lease.task] = Slot::Pending { attempts: lease.attempt - 1 };
        self.queue.push_front(lease.task);
        Report::Accepted
    }

    /// Removes workers not heard from within the lease timeout and requeues their tasks (the
    /// lost attempt counts). Returns the workers removed.
    pub fn expire(&mut self, now: Millis) -> Vec<WorkerId> {
        let timeout = self.config.lease_timeout;
        let dead: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.last_seen) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            let w = self.workers.remove(id).expect("listed");
            for task in w.leases {
                self.lose(task, "lost with its worker");
            }
        }
        dead
    }

    /// Requeues leased task `task` whose attempt was lost (the attempt counts); the job fails
    /// if it was the last attempt.
    fn lose(&mut self, task: usize, how: &str) {
        if let Slot::Leased { attempt, .. } = self.slots[task] {
            if attempt >= self.config.max_attempts && self.state == JobState::Running {
                self.state =
                    JobState::Failed { task, error: format!("{how} on {attempt} attempts") };
            }
            self.slots[task] = Slot::Pending { attempts: attempt };
            self.queue.push_back(task);
            self.retries += 1;
        }
    }

    /// Whether `lease` is `worker`'s current attempt of its task in a running job (a report
    /// of it would be accepted).
    pub fn is_current(&self, worker: WorkerId, lease: Lease) -> bool {
        self.state == JobState::Running
            && matches!(self.slots.get(lease.task), Some(Slot::Leased { worker: w, attempt, .. }) if *w == worker && *attempt == lease.attempt)
    }

    /// Reconciles what `worker` says it holds (`held`, from its heartbeat) with what this
    /// machine has leased to it. A lease the worker no longer knows of, handed out more than
    /// `grace` ago (so not one whose reply may still be on its way), was lost: its task is
    /// queued again and the attempt counts. Returns the held leases that are not current here
    /// (cancelled, expired and leased again, finished): the worker should abandon them.
    pub fn reconcile(
        &mut self,
        worker: WorkerId,
        held: &[Lease],
        grace: Millis,
        now: Millis,
    ) -> Vec<Lease> {
        let stale = held.iter().copied().filter(|&l| !self.is_current(worker, l)).collect();
        let Some(w) = self.workers.get(&worker) else {
            return stale;
        };
        let lost: Vec<usize> = w
            .leases
            .iter()
            .copied()
            .filter(|&task| !held.iter().any(|l| l.task == task))
            .filter(|&task| {
                matches!(self.slots[task], Slot::Leased { since, .. } if now.saturating_sub(since) > grace)
            })
            .collect();
        for task in lost {
            if let Some(w) = self.workers.get_mut(&worker) {
                w.leases.remove(&task);
            }
            self.lose(task, "lost by its worker");
        }
        stale
    }

    /// Cancels the job: no further leases; outstanding reports become stale.
    pub fn cancel(&mut self) {
        if self.state == JobState::Running {
            self.state = JobState::Cancelled;
        }
    }

    /// The job's state.
    pub fn state(&self) -> &JobState {
        &self.state
    }

    /// Attempts that were lost (their worker expired) or failed, and were queued again.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Whether `worker` is registered (not expired).
    pub fn is_registered(&self, worker: WorkerId) -> bool {
        self.workers.contains_key(&worker)
    }

    /// Number of tasks `worker` holds right now (0 for an unknown worker).
    pub fn leases_of(&self, worker: WorkerId) -> usize {
        self.workers.get(&worker).map_or(0, |w| w.leases.len())
    }

    /// Number of tasks in the plan.
    pub fn n_tasks(&self) -> usize {
        self.slots.len()
    }

    /// Whether the task is finished.
    pub fn is_done(&self, task: usize) -> bool {
        matches!(self.slots.get(task), Some(Slot::Done))
    }

    /// Progress counts.
    pub fn progress(&self) -> Progress {
        let running = self.slots.iter().filter(|s| matches!(s, Slot::Leased { .. })).count();
        Progress { done: self.done, running, total: self.slots.len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SchedulerConfig {
        SchedulerConfig { lease_timeout: 100, max_attempts: 3 }
    }

    #[test]
    fn runs_every_task_once() {
        let mut s = Scheduler::new(5, config());
        let a = s.register(0);
        let b = s.register(0);
        let la = s.lease(a, 2, 1).unwrap();
        let lb = s.lease(b, 10, 1).unwrap();
        assert_eq!(la.iter().map(|l| l.task).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(lb.iter().map(|l| l.task).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(s.lease(a, 5, 2).unwrap().is_empty());
        for l in la {
            assert_eq!(s.complete(a, l, 3), Report::Accepted);
        }
        for l in lb {
            assert_eq!(s.complete(b, l, 3), Report::Accepted);
        }
        assert_eq!(*s.state(), JobState::Succeeded);
        assert_eq!(s.progress(), Progress { done: 5, running: 0, total: 5 });
    }

    #[test]
    fn silent_worker_loses_its_leases_and_its_late_report_is_stale() {
        let mut s = Scheduler::new(2, config());
        let dead = s.register(0);
        let live = s.register(0);
        let l = s.lease(dead, 1, 0).unwrap()[0];
        // the live worker keeps polling; the dead one does not
        assert_eq!(s.lease(live, 1, 50).unwrap()[0].task, 1);
        assert!(s.heartbeat(live, 150));
        let retry = s.lease(live, 1, 160).unwrap();
        assert_eq!(retry, vec![Lease { task: 0, attempt: 2 }]);
        assert_eq!(s.complete(dead, l, 170), Report::Stale, "the expired attempt is dropped");
        assert!(s.lease(dead, 1, 171).is_none(), "an expired worker must register again");
        assert_eq!(s.complete(live, retry[0], 172), Report::Accepted);
        assert_eq!(s.complete(live, Lease { task: 1, attempt: 1 }, 173), Report::Accepted);
        assert_eq!(*s.state(), JobState::Succeeded);
    }

    #[test]
    fn a_task_failing_everywhere_fails_the_job_with_its_error() {
        let mut s = Scheduler::new(2, config());
        let workers: Vec<WorkerId> = (0..3).map(|_| s.register(0)).collect();
        assert_eq!(s.lease(workers[0], 1, 0).unwrap()[0].task, 0);
        let ok = s.lease(workers[0], 1, 0).unwrap()[0];
        s.complete(workers[0], ok, 0);
        s.fail(workers[0], Lease { task: 0, attempt: 1 }, &Failure::transient("bad input"), 0);
        for (i, &w) in workers.iter().enumerate().skip(1) {
            assert_eq!(*s.state(), JobState::Running);
            let l = s.lease(w, 1, 0).unwrap()[0];
            assert_eq!(l, Lease { task: 0, attempt: i as u32 + 1 });
            s.fail(w, l, &Failure::transient("bad input"), 0);
        }
        assert_eq!(*s.state(), JobState::Failed { task: 0, error: "bad input".into() });
        assert!(s.lease(workers[0], 1, 0).unwrap().is_empty());
    }

    #[test]
    fn duplicate_and_wrong_attempt_reports_are_stale() {
        let mut s = Scheduler::new(1, config());
        let w = s.register(0);
        let l = s.lease(w, 1, 0).unwrap()[0];
        assert_eq!(s.complete(w, Lease { task: 0, attempt: 7 }, 1), Report::Stale);
        assert_eq!(s.complete(w, l, 1), Report::Accepted);
        assert_eq!(s.complete(w, l, 1), Report::Stale);
        assert_eq!(s.fail(w, l, &Failure::transient("late"), 1), Report::Stale);
        assert_eq!(*s.state(), JobState::Succeeded);
    }

    #[test]
    fn cancellation_stops_leasing() {
        let mut s = Scheduler::new(3, config());
        let w = s.register(0);
        let l = s.lease(w, 1, 0).unwrap()[0];
        s.cancel();
        assert_eq!(*s.state(), JobState::Cancelled);
        assert!(s.lease(w, 3, 1).unwrap().is_empty());
        assert_eq!(s.complete(w, l, 2), Report::Stale);
    }

    #[test]
    fn released_tasks_do_not_count_as_attempts_and_restart_marks_done() {
        let mut s = Scheduler::new(2, config());
        let w = s.register(0);
        let l = s.lease(w, 1, 0).unwrap()[0];
        s.release(w, l, 1);
        assert_eq!(s.lease(w, 1, 2).unwrap()[0], Lease { task: 0, attempt: 1 });
        s.mark_done(1);
        s.mark_done(1);
        assert_eq!(s.progress().done, 1);
        s.complete(w, Lease { task: 0, attempt: 1 }, 3);
        assert_eq!(*s.state(), JobState::Succeeded);
    }

    #[test]
    fn retries_count_lost_and_failed_attempts_and_leases_are_tracked_per_worker() {
        let mut s = Scheduler::new(3, config());
        let a = s.register(0);
        let b = s.register(0);
        assert_eq!(s.n_tasks(), 3);
        let la = s.lease(a, 2, 0).unwrap();
        assert_eq!((s.leases_of(a), s.leases_of(b)), (2, 0));
        let lb = s.lease(b, 1, 0).unwrap()[0];
        s.fail(b, lb, &Failure::transient("flaky"), 10);
        assert_eq!(s.retries(), 1, "a failed attempt that is retried");
        assert_eq!(s.leases_of(b), 0);
        // a goes silent: both its leases are lost and queued again
        assert!(s.heartbeat(b, 150));
        assert_eq!(s.expire(150), vec![a]);
        assert!(!s.is_registered(a) && s.is_registered(b));
        assert_eq!(s.leases_of(a), 0);
        assert_eq!(s.retries(), 3);
        // the retries come back in order: the failed task first, then a's
        let again = s.lease(b, 3, 160).unwrap();
        assert_eq!(
            again.iter().map(|l| (l.task, l.attempt)).collect::<Vec<_>>(),
            vec![(2, 2), (0, 2), (1, 2)]
        );
        for l in la {
            assert_eq!(s.complete(a, l, 170), Report::Stale);
        }
        for l in again {
            assert_eq!(s.complete(b, l, 170), Report::Accepted);
        }
        assert_eq!(*s.state(), JobState::Succeeded);
        assert_eq!(s.retries(), 3, "releases and successes are not retries");
    }

    #[test]
    fn a_worker_lost_on_the_last_attempt_fails_the_job_instead_of_hanging() {
        let mut s = Scheduler::new(1, config());
        for attempt in 1..=3u32 {
            let w = s.register(attempt as u64 * 1000);
            let l = s.lease(w, 1, attempt as u64 * 1000).unwrap();
            assert_eq!(l[0].attempt, attempt);
            // never heard from again
            s.expire(attempt as u64 * 1000 + 500);
        }
        match s.state() {
            JobState::Failed { task: 0, error } => assert!(error.contains("lost"), "{error}"),
            other => panic!("expected a failed job, got {other:?}"),
        }
    }

    #[test]
    fn mark_done_of_a_leased_task_makes_its_report_stale() {
        // a restarted coordinator finds the part of a task it had leased again
        let mut s = Scheduler::new(2, config());
        let w = s.register(0);
        let l = s.lease(w, 2, 0).unwrap();
        s.mark_done(l[0].task);
        assert_eq!(s.leases_of(w), 1);
        assert_eq!(s.complete(w, l[0], 1), Report::Stale);
        assert_eq!(s.complete(w, l[1], 1), Report::Accepted);
        assert_eq!(*s.state(), JobState::Succeeded);
    }

    #[test]
    fn a_stage_starts_only_when_every_earlier_task_is_done() {
        let mut s = Scheduler::staged(vec![0, 0, 1, 1, 2], config());
        let w = s.register(0);
        let first = s.lease(w, 10, 0).unwrap();
        assert_eq!(first.iter().map(|l| l.task).collect::<Vec<_>>(), [0, 1]);
        s.complete(w, first[0], 1);
        assert!(s.lease(w, 10, 1).unwrap().is_empty(), "task 1 of stage 0 still runs");
        // a failed attempt goes back to the queue's end and is still leased before stage 1
        assert_eq!(s.fail(w, first[1], &Failure::transient("io"), 2), Report::Accepted);
        let retry = s.lease(w, 10, 2).unwrap();
        assert_eq!(retry.iter().map(|l| (l.task, l.attempt)).collect::<Vec<_>>(), [(1, 2)]);
        s.complete(w, retry[0], 3);
        let second = s.lease(w, 10, 3).unwrap();
        assert_eq!(second.iter().map(|l| l.task).collect::<Vec<_>>(), [2, 3]);
        s.mark_done(2);
        s.complete(w, second[1], 4);
        assert_eq!(s.lease(w, 10, 4).unwrap().iter().map(|l| l.task).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn empty_plan_is_already_done() {
        assert_eq!(*Scheduler::new(0, config()).state(), JobState::Succeeded);
    }

    #[test]
    fn a_permanent_failure_fails_the_job_without_retries() {
        let mut s = Scheduler::new(2, SchedulerConfig { lease_timeout: 1000, max_attempts: 3 });
        let w = s.register(0);
        let l = s.lease(w, 1, 0).unwrap()[0];
        let failure = Failure { error: "brain.npy: contains NaN".into(), permanent: true };
        assert_eq!(s.fail(w, l, &failure, 0), Report::Accepted);
        assert_eq!(
            *s.state(),
            JobState::Failed { task: l.task, error: "brain.npy: contains NaN".into() }
        );
        assert_eq!(s.retries(), 0);
    }
}
