//! `[group]` tasks: gathering a tested map's subject values, and running sign flips of it.
//!
//! A [`Task::GroupData`] reads the parts of the analysis tasks that hold the map (every
//! subject's) and writes the values on the group mask as its own part
//! ([`brainfit_job::group::gather`]). A [`Task::Group`] reads that part, sets the test up once
//! per process and map (the t map, TFCE and clusters of the observed data), and runs its
//! range of sign flips on a blocking thread, stopping between flips when abandoned.

use crate::execute::{Executor, checkpoint};
use crate::{Abandon, JobContext, Result, WorkerError};
use brainfit_job::group::{GroupData, flip_chunk, gather, prepare};
use brainfit_job::{JobError, Part, Task};
use std::sync::Arc;

/// Runs a group task.
pub(crate) async fn execute(
    executor: &Arc<Executor>,
    job: Arc<JobContext>,
    task: usize,
    abandon: Abandon,
) -> Result<Part> {
    let store = executor.store();
    match job.tasks[task].clone() {
        Task::GroupData { map } => {
            let mut read = Vec::new();
            for (i, t) in job.tasks.iter().enumerate().filter(|(_, t)| map.reads(t)) {
                abandon.check()?;
                let url = job.part_url(i);
                read.push((t, Part::decode(&store.get(&url).await?, &url)?));
            }
            let done: Vec<(&Task, &Part)> = read.iter().map(|(t, p)| (*t, p)).collect();
            let data = gather(store, &job.spec, &job.inventory, &map, &done).await?;
            Ok(data.to_part())
        }
        Task::Group { map, flips } => {
            let key = format!("{}/{}", job.id, Task::GroupData { map: map.clone() }.key());
            // held from here on, whatever the cache evicts meanwhile
            let cached = executor.group_tests.get_built(&key);
            let data = match cached {
                Some(_) => None,
                None => {
                    let i = job
                        .tasks
                        .iter()
                        .position(|t| matches!(t, Task::GroupData { map: m } if *m == map))
                        .ok_or_else(|| {
                            JobError::Corrupt(format!("no data task for {}", map.dir()))
                        })?;
                    let url = job.part_url(i);
                    Some(Part::decode(&store.get(&url).await?, &url)?)
                }
            };
            let me = executor.clone();
            tokio::task::spawn_blocking(move || {
                let _current = crate::execute::CurrentTask::enter(&abandon);
                let prepared = match cached {
                    Some(prepared) => prepared,
                    None => me.group_tests.get_or_build(key, || {
                        let part = data.expect("read above when the test was not cached");
                        let data = GroupData::from_part(&part)?;
                        Ok(prepare(&job.spec, &map, &data)?)
                    })?,
                };
                flip_chunk::<WorkerError>(&prepared, flips, checkpoint)
            })
            .await
            .map_err(|e| WorkerError::Panic(e.to_string()))?
        }
        other => Err(JobError::Corrupt(format!("{} is not a group task", other.key())).into()),
    }
}
