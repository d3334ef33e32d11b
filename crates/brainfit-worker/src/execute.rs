//! Computing one task: load (or reuse) its inputs, run the kernels, return a partial result.
//!
//! Inputs and decompositions are cached per process, keyed by job and subject (and feature
//! space), because every voxel chunk of a feature space needs the same features and the same
//! per-fold eigendecompositions. Each kind of value has its own typed [`Cache`]: entries are
//! built once even when several workers ask at the same time, only the most recent few are
//! kept so memory stays bounded, and a transient build error (storage) is not kept while a
//! permanent one (a wrong input) is, so the next task fails at once with the same message.
//! (A general cache crate would add eviction by weight and time, which these few, large,
//! job-scoped entries do not need.)

use crate::{Abandon, JobContext, Result, WorkerError};
use brainfit_io::{Mask, Store};
use brainfit_job::inputs::{self, Matrix, with_precision};
use brainfit_job::spec::{EncodingSpec, PermutationSpec, SubjectSpec};
use brainfit_job::stats::MapBlock;
use brainfit_job::{JobError, Part, Task, with_matrix};
use brainfit_kernels::Real;
use brainfit_kernels::cv::split;
use brainfit_kernels::linalg::Backend;
use brainfit_kernels::permutation::{Scheme, permutation};
use brainfit_kernels::preprocess::{delay, zscore_per_group};
use brainfit_kernels::ridge::NestedCv;
use ndarray::{Array2, Axis};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::runtime::Handle;

/// A subject's loaded brain data.
#[derive(Debug)]
pub struct BrainData {
    /// `[n_samples, n_voxels]`.
    pub matrix: Matrix,
    /// The mask, if the job gives one.
    pub mask: Option<Mask>,
    /// Group labels, if any.
    pub groups: Option<Vec<i64>>,
}

/// A value built once, or the error building it gave (its message, and whether transient).
type Entry<V> = Arc<OnceLock<std::result::Result<Arc<V>, (String, bool)>>>;

/// A small most-recently-used cache of values of one type, each built once per key.
pub(crate) struct Cache<V> {
    entries: Mutex<VecDeque<(String, Entry<V>)>>,
    capacity: usize,
}

impl<V> Cache<V> {
    fn with_capacity(capacity: usize) -> Self {
        Cache { entries: Mutex::new(VecDeque::new()), capacity }
    }

    /// The value under `key`, built by `build` if it is not cached (concurrent callers of one
    /// key wait for one build).
    pub(crate) fn get_or_build(
        &self,
        key: String,
        build: impl FnOnce() -> Result<V>,
    ) -> Result<Arc<V>> {
        let entry = {
            let mut entries = self.entries.lock().expect("cache lock");
            match entries.iter().position(|(k, _)| *k == key) {
                Some(i) => {
                    let e = entries.remove(i).expect("present");
                    entries.push_front(e.clone());
                    e.1
                }
                None => {
                    let e: Entry<V> = Arc::new(OnceLock::new());
                    entries.push_front((key.clone(), e.clone()));
                    entries.truncate(self.capacity);
                    e
                }
            }
        };
        let value = entry
            .get_or_init(|| build().map(Arc::new).map_err(|e| (e.to_string(), e.is_transient())));
        match value {
            Ok(v) => Ok(v.clone()),
            Err((message, transient)) => {
                if *transient {
                    // not kept: the next attempt builds it again
                    let mut entries = self.entries.lock().expect("cache lock");
                    entries.retain(|(k, e)| *k != key || !Arc::ptr_eq(e, &entry));
                }
                Err(WorkerError::Cached { message: message.clone(), transient: *transient })
            }
        }
    }
}

/// Runs tasks; shared by all workers of a process.
pub struct Executor {
    store: Store,
    runtime: Handle,
    brains: Cache<BrainData>,
    groups: Cache<Option<Vec<i64>>>,
    decompositions_f32: Cache<NestedCv<f32>>,
    decompositions_f64: Cache<NestedCv<f64>>,
    pub(crate) models: Cache<crate::rsa::Models>,
    pub(crate) spheres: Cache<brainfit_kernels::searchlight::Neighbourhoods>,
}

/// What differs between the precisions a task computes in: its decomposition cache, and
/// taking a loaded matrix in that precision.
trait Decompositions: Real {
    fn cache(executor: &Executor) -> &Cache<NestedCv<Self>>;
    /// The matrix in this precision (loaded in it already: no copy then).
    fn from_matrix(m: Matrix) -> Array2<Self>;
}

impl Decompositions for f32 {
    fn cache(executor: &Executor) -> &Cache<NestedCv<f32>> {
        &executor.decompositions_f32
    }

    fn from_matrix(m: Matrix) -> Array2<f32> {
        match m {
            Matrix::F32(a) => a,
            Matrix::F64(a) => a.mapv(|v| v as f32),
        }
    }
}

impl Decompositions for f64 {
    fn cache(executor: &Executor) -> &Cache<NestedCv<f64>> {
        &executor.decompositions_f64
    }

    fn from_matrix(m: Matrix) -> Array2<f64> {
        match m {
            Matrix::F32(a) => a.mapv(f64::from),
            Matrix::F64(a) => a,
        }
    }
}

thread_local! {
    /// The stop flag of the task this thread computes, while [`Executor::execute`] runs.
    static CURRENT: std::cell::RefCell<Option<Abandon>> = const { std::cell::RefCell::new(None) };
}

/// Marks the task this thread computes for [`checkpoint`], until dropped.
struct CurrentTask;

impl CurrentTask {
    fn enter(abandon: &Abandon) -> CurrentTask {
        CURRENT.with(|c| *c.borrow_mut() = Some(abandon.clone()));
        CurrentTask
    }
}

impl Drop for CurrentTask {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

/// A checkpoint of the task this thread computes (the analyses call it between
/// permutations): `Err(Abandoned)` once the coordinator asked to stop it. Kept in a
/// thread-local rather than threaded through every analysis, which run on the thread
/// [`Executor::execute`] was called on.
pub(crate) fn checkpoint() -> Result<()> {
    CURRENT.with(|c| c.borrow().as_ref().map_or(Ok(()), Abandon::check))
}

impl Executor {
    /// An executor reading through `store`, doing its I/O on `runtime`.
    pub fn new(store: Store, runtime: Handle) -> Self {
        Executor {
            store,
            runtime,
            brains: Cache::with_capacity(2),
            groups: Cache::with_capacity(8),
            decompositions_f32: Cache::with_capacity(8),
            decompositions_f64: Cache::with_capacity(8),
            models: Cache::with_capacity(4),
            spheres: Cache::with_capacity(2),
        }
    }

    /// Computes task `task` of `job` (blocking; call from a blocking thread), stopping at the
    /// next checkpoint once `abandon` is raised.
    pub fn execute(&self, job: &JobContext, task: usize, abandon: &Abandon) -> Result<Part> {
        let _current = CurrentTask::enter(abandon);
        match &job.tasks[task] {
            Task::Encoding { subject, space, voxels } => {
                self.encoding(job, *subject, space, *voxels)
            }
            Task::Searchlight { subject, voxels } => self.searchlight(job, *subject, *voxels),
            Task::Rsa { subject, perms } => self.roi_rsa(job, *subject, *perms),
            Task::TimeResolved { perms } => self.time_resolved(job, *perms),
        }
    }

    pub(crate) fn brain(&self, job: &JobContext, si: usize) -> Result<Arc<BrainData>> {
        let subject: &SubjectSpec = &job.spec.subjects[si];
        self.brains.get_or_build(format!("{}/{si}", job.id), || {
            let (matrix, mask) = self.runtime.block_on(inputs::load_brain(&self.store, subject))?;
            let groups = self.groups(job, si)?.as_ref().clone();
            Ok(BrainData { matrix, mask, groups })
        })
    }

    /// A subject's group labels, read once per process.
    fn groups(&self, job: &JobContext, si: usize) -> Result<Arc<Option<Vec<i64>>>> {
        let subject = &job.spec.subjects[si];
        let n = job.inventory.subjects[si].n_samples;
        self.groups.get_or_build(format!("{}/{si}", job.id), || {
            Ok(self.block_on(inputs::load_groups(self.store(), subject, n))?)
        })
    }

    /// Runs a future on the executor's runtime (from a blocking compute thread).
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// The store inputs are read through.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    fn encoding(
        &self,
        job: &JobContext,
        si: usize,
        space: &str,
        voxels: [usize; 2],
    ) -> Result<Part> {
        let spec = job.spec.encoding.as_ref().expect("encoding tasks exist only with [encoding]");
        let inv = &job.inventory.subjects[si];
        let groups = self.groups(job, si)?;
        let groups = groups.as_deref();
        // only this task's voxels are read from a .npy (range requests); a NIfTI image is
        // read once per process
        let subject = &job.spec.subjects[si];
        let y = if inputs::is_nifti(subject.brain_url()?) {
            inputs::columns(&self.brain(job, si)?.matrix, voxels[0], voxels[1])
        } else {
            self.block_on(inputs::load_brain_columns(
                self.store(),
                subject,
                voxels[0],
                voxels[1],
                inv.f64_data,
            ))?
        };
        let space_ref = inv
            .spaces
            .iter()
            .find(|(s, _)| s.name == space)
            .map(|(s, _)| s.clone())
            .ok_or_else(|| JobError::Corrupt(format!("unknown feature space {space}")))?;
        let n = voxels[1] - voxels[0];
        let perms = job.spec.permutation.map(|p| (p, p.scheme(groups)));
        let (block, alpha) = with_matrix!(y, |y| {
            let cv = self.nested_cv(job, si, &space_ref, spec, groups, inv.f64_data)?;
            encode_with_nulls(&cv, y, spec, groups, perms)?
        });
        let mut part = Part::new();
        block.write(&mut part);
        part.push("alpha", vec![n], alpha);
        Ok(part)
    }

    /// The nested-CV decompositions of a feature space, built once per process.
    fn nested_cv<T: Decompositions>(
        &self,
        job: &JobContext,
        si: usize,
        space: &brainfit_job::SpaceRef,
        spec: &EncodingSpec,
        groups: Option<&[i64]>,
        as_f64: bool,
    ) -> Result<Arc<NestedCv<T>>> {
        T::cache(self).get_or_build(format!("{}/{si}/{}", job.id, space.name), || {
            let x = self.runtime.block_on(inputs::load_space(&self.store, space, as_f64))?;
            let x = with_precision(x, as_f64);
            let x = T::from_matrix(x);
            prepare_and_decompose(x, spec, groups).map_err(|e| {
                JobError::Input {
                    url: space.url.clone(),
                    message: format!("feature space {}: {e}", space.name),
                }
                .into()
            })
        })
    }
}

/// Per-run preprocessing of the features (z-scoring, FIR delays), then the nested CV's
/// decompositions.
pub fn prepare_and_decompose<T: Real>(
    mut x: Array2<T>,
    spec: &EncodingSpec,
    groups: Option<&[i64]>,
) -> brainfit_kernels::Result<NestedCv<T>> {
    if spec.zscore_per_group {
        zscore_per_group(x.view_mut(), groups.expect("checked by the spec"))?;
    }
    let x = if spec.delays == [0] { x } else { delay(x.view(), &spec.delays, groups)? };
    let outer = split(spec.cv, x.nrows(), groups)?;
    NestedCv::new::<Backend>(x.view(), &outer, spec.inner_cv, groups, spec.ridge.intercept)
}

/// Observed scores of a voxel chunk and, with permutations, their null counts and maxima.
///
/// A permutation re-pairs stimuli and responses (`y`'s rows, as loaded) and then applies the
/// same per-run preprocessing the observed data get (z-scoring), so the null sees exactly what
/// the observed data saw, before re-running the whole nested CV, alpha selection included.
/// X's decompositions are reused: X does not change, so that reuse is exact.
pub fn encode_with_nulls<T: Real>(
    cv: &NestedCv<T>,
    y: Array2<T>,
    spec: &EncodingSpec,
    groups: Option<&[i64]>,
    perms: Option<(PermutationSpec, Scheme)>,
) -> Result<(MapBlock, Vec<f64>)> {
    let preprocess = |mut y: Array2<T>| -> Result<Array2<T>> {
        if spec.zscore_per_group {
            zscore_per_group(y.view_mut(), groups.expect("checked by the spec"))
                .map_err(JobError::from)?;
        }
        Ok(y)
    };
    let observed =
        cv.fit::<Backend>(preprocess(y.clone())?.view(), &spec.ridge).map_err(JobError::from)?;
    let value = observed.score.clone().insert_axis(Axis(0));
    let n_perm = perms.as_ref().map_or(0, |(p, _)| p.n as u64);
    let block = MapBlock::compute(value, 0..n_perm, |k| {
        checkpoint()?;
        let (p, scheme) = perms.as_ref().expect("permutations requested");
        let order = permutation(y.nrows(), scheme, p.seed, k);
        let shuffled = preprocess(y.select(Axis(0), &order))?;
        let null = cv.fit::<Backend>(shuffled.view(), &spec.ridge).map_err(JobError::from)?;
        Ok::<_, crate::WorkerError>(null.score.insert_axis(Axis(0)))
    })?;
    Ok((block, observed.alpha.to_vec()))
}
