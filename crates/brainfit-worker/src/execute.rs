//! Computing one task in two steps: [`Executor::execute`] first reads everything the task
//! needs on the async runtime ([`Loaded`]: brain columns or data, group labels, feature
//! spaces, RDMs, masks), then computes on a blocking thread from those arrays alone — the
//! computation never waits for storage, and a task crosses from async to sync once.
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
use brainfit_job::spec::{EncodingSpec, Fit, PermutationSpec, SubjectSpec};
use brainfit_job::stats::MapBlock;
use brainfit_job::{JobError, Part, Task, with_matrix};
use brainfit_kernels::Real;
use brainfit_kernels::cv::split;
use brainfit_kernels::encoder::{Encoder, EncoderSpec, Fitted};
use brainfit_kernels::identification::IdentificationSums;
use brainfit_kernels::linalg::Backend;
use brainfit_kernels::permutation::{Scheme, permutation};
use brainfit_kernels::preprocess::{delay, zscore_per_group};
use brainfit_kernels::rdm::ObservationDesign;
use brainfit_kernels::searchlight::slab_span;
use ndarray::{Array1, Array2, Axis};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

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

/// A build's outcome as kept: the value, or the error's message and whether it was transient.
type Built<V> = std::result::Result<Arc<V>, (String, bool)>;

/// The most recently used few entries under string keys (job, subject, ...).
struct Mru<E> {
    entries: Mutex<VecDeque<(String, E)>>,
    capacity: usize,
}

impl<E: Clone> Mru<E> {
    fn with_capacity(capacity: usize) -> Self {
        Mru { entries: Mutex::new(VecDeque::new()), capacity }
    }

    /// The entry under `key` (made by `new` if absent), now the most recent.
    fn entry(&self, key: &str, new: impl FnOnce() -> E) -> E {
        let mut entries = self.entries.lock().expect("cache lock");
        let e = match entries.iter().position(|(k, _)| k == key) {
            Some(i) => entries.remove(i).expect("present").1,
            None => new(),
        };
        entries.push_front((key.to_string(), e.clone()));
        entries.truncate(self.capacity);
        e
    }

    /// The entry under `key`, if any.
    fn peek(&self, key: &str) -> Option<E> {
        let entries = self.entries.lock().expect("cache lock");
        entries.iter().find(|(k, _)| k == key).map(|(_, e)| e.clone())
    }

    /// Drops the entry under `key` if it is still `entry` (a transient failure: the next
    /// attempt builds it again).
    fn forget(&self, key: &str, entry: &E, same: impl Fn(&E, &E) -> bool) {
        let mut entries = self.entries.lock().expect("cache lock");
        entries.retain(|(k, e)| k != key || !same(e, entry));
    }
}

/// Turns a kept build outcome into the caller's result; a transient error is forgotten.
fn outcome<V>(built: &Built<V>, forget: impl FnOnce()) -> Result<Arc<V>> {
    match built {
        Ok(v) => Ok(v.clone()),
        Err((message, transient)) => {
            if *transient {
                forget();
            }
            Err(WorkerError::Cached { message: message.clone(), transient: *transient })
        }
    }
}

/// A cache of values computed on a compute thread (decompositions, models, spheres).
pub(crate) struct Cache<V>(Mru<Arc<OnceLock<Built<V>>>>);

impl<V> Cache<V> {
    fn with_capacity(capacity: usize) -> Self {
        Cache(Mru::with_capacity(capacity))
    }

    /// The value under `key`, built by `build` if it is not cached (concurrent callers of one
    /// key wait for one build).
    pub(crate) fn get_or_build(
        &self,
        key: String,
        build: impl FnOnce() -> Result<V>,
    ) -> Result<Arc<V>> {
        let entry = self.0.entry(&key, || Arc::new(OnceLock::new()));
        let built = entry
            .get_or_init(|| build().map(Arc::new).map_err(|e| (e.to_string(), e.is_transient())));
        outcome(built, || self.0.forget(&key, &entry, Arc::ptr_eq))
    }

    /// The value under `key` if it is built (held by the caller from then on, whatever the
    /// cache evicts).
    pub(crate) fn get_built(&self, key: &str) -> Option<Arc<V>> {
        self.0.peek(key).and_then(|e| e.get().and_then(|b| b.as_ref().ok().cloned()))
    }
}

/// A cache of values read from storage (brain data, group labels), loaded on the runtime.
struct AsyncCache<V>(Mru<Arc<tokio::sync::OnceCell<Built<V>>>>);

impl<V> AsyncCache<V> {
    fn with_capacity(capacity: usize) -> Self {
        AsyncCache(Mru::with_capacity(capacity))
    }

    /// The value under `key`, loaded by `load` if it is not cached (concurrent callers of one
    /// key wait for one load).
    async fn get_or_load(
        &self,
        key: String,
        load: impl std::future::Future<Output = Result<V>>,
    ) -> Result<Arc<V>> {
        let entry = self.0.entry(&key, || Arc::new(tokio::sync::OnceCell::new()));
        let built = entry
            .get_or_init(|| async {
                load.await.map(Arc::new).map_err(|e| (e.to_string(), e.is_transient()))
            })
            .await;
        outcome(built, || self.0.forget(&key, &entry, Arc::ptr_eq))
    }
}

/// A feature space's decompositions in the precision its job computes in.
pub(crate) enum Decomposition {
    /// Single precision.
    F32(Arc<Encoder<f32>>),
    /// Double precision.
    F64(Arc<Encoder<f64>>),
}

/// A subject's model RDMs: built already (and held), or the inputs to build them from.
pub(crate) enum ModelsLoaded {
    /// Cached.
    Built(Arc<crate::rsa::Models>),
    /// What they are built from.
    Inputs(ModelInputs),
}

/// The inputs of a subject's model RDMs.
pub(crate) struct ModelInputs {
    /// Given model RDMs (job order).
    pub given: Vec<Array1<f64>>,
    /// Each feature space's activations (inventory order).
    pub spaces: Vec<Array2<f64>>,
    /// The subject's observation design (`[data] conditions`), if any.
    pub design: Option<Arc<Option<ObservationDesign>>>,
    /// Remixed models (job order): the training images' activations and labels.
    pub remix: Vec<(Array2<f64>, Vec<i64>)>,
}

/// Everything a task reads from storage, fetched before its computation starts: the compute
/// thread then never waits for I/O. Values cached in this process are taken from the cache
/// (and held until the task ends) instead of being read again.
#[derive(Default)]
pub(crate) struct Loaded {
    /// The subject's whole brain data, mask and groups (read once per process).
    pub brain: Option<Arc<BrainData>>,
    /// The subject's group labels.
    pub groups: Option<Arc<Option<Vec<i64>>>>,
    /// RSA: the subject's observation design (`[data] conditions`).
    pub design: Option<Arc<Option<ObservationDesign>>>,
    /// This task's voxels (encoding), or the voxels its spheres reach (searchlight), read by
    /// range requests from a `.npy` brain matrix ...
    pub columns: Option<Matrix>,
    /// ... starting at this mask voxel.
    pub column_offset: usize,
    /// Searchlight over `columns`: the subject's mask (read once per process).
    pub mask: Option<Arc<Mask>>,
    /// Encoding: the fit's encoder, if cached ...
    pub decomposition: Option<Decomposition>,
    /// ... else the activations of its feature spaces, in band order.
    pub spaces: Vec<Matrix>,
    /// Encoding, the subject's first fit: this task's voxels of each repeated measurement.
    pub repeats: Vec<Matrix>,
    /// RSA: the model RDMs or their inputs.
    pub models: Option<ModelsLoaded>,
    /// ROI RSA: the given brain RDMs, in job order.
    pub brain_rdms: Vec<Array1<f64>>,
    /// ROI RSA: the ROI masks, in job order.
    pub rois: Vec<Mask>,
    /// ROI RSA: each ROI's voxels, as columns of `columns` when it is given, else of the whole
    /// brain matrix.
    pub roi_columns: Vec<Vec<usize>>,
    /// Time-resolved RSA: `[n_times, n_conditions, n_channels]` (read once per process).
    pub time_data: Option<Arc<ndarray::Array3<f64>>>,
    /// Cross-temporal RSA between recordings: the second recording (read once per process).
    pub cross_data: Option<Arc<ndarray::Array3<f64>>>,
}

impl Loaded {
    /// A searchlight task's brain data: the whole brain (a NIfTI image, or a `.npy` within
    /// the budget) or the columns its spheres reach, with the mask, the mask voxel the columns
    /// start at, and the group labels.
    pub(crate) fn sphere_data(&self) -> (&Matrix, &Mask, usize, Option<&[i64]>) {
        match (&self.brain, &self.columns) {
            (Some(brain), _) => (
                &brain.matrix,
                brain.mask.as_ref().expect("checked by the spec"),
                0,
                brain.groups.as_deref(),
            ),
            (None, Some(columns)) => (
                columns,
                self.mask.as_deref().expect("loaded with the columns"),
                self.column_offset,
                self.groups.as_deref().and_then(Option::as_deref),
            ),
            (None, None) => unreachable!("searchlight tasks load their brain data"),
        }
    }
}

/// Runs tasks; shared by all workers of a process.
pub struct Executor {
    store: Store,
    metrics: crate::metrics::WorkerMetrics,
    brains: AsyncCache<BrainData>,
    masks: AsyncCache<Mask>,
    groups: AsyncCache<Option<Vec<i64>>>,
    designs: AsyncCache<Option<ObservationDesign>>,
    time_data: AsyncCache<ndarray::Array3<f64>>,
    decompositions_f32: Cache<Encoder<f32>>,
    decompositions_f64: Cache<Encoder<f64>>,
    pub(crate) models: Cache<crate::rsa::Models>,
    pub(crate) spheres: Cache<brainfit_kernels::searchlight::Neighbourhoods>,
    /// `[extract]`: the network, built once per job and process.
    pub(crate) networks: Cache<brainfit_extract::Network>,
    /// `[group]`: each tested map's test, set up once per job and process.
    pub(crate) group_tests: Cache<brainfit_job::group::Prepared>,
    /// A searchlight reads a `.npy` brain matrix whole (once per process) up to this many
    /// bytes, and above it only the slabs each task's spheres reach.
    whole_brain_bytes: u64,
}

/// Default of `BRAINFIT_WHOLE_BRAIN_BYTES`: 2 GiB.
pub const DEFAULT_WHOLE_BRAIN_BYTES: u64 = 2 << 30;

/// `BRAINFIT_WHOLE_BRAIN_BYTES`, else [`DEFAULT_WHOLE_BRAIN_BYTES`]: up to this size a
/// searchlight's brain matrix is read once per worker process — one request, each byte once —
/// above it each task reads only its slabs, so that memory is bounded by the task (at the cost
/// of more requests, and of reading the slabs at the tasks' edges twice).
fn whole_brain_bytes() -> u64 {
    std::env::var("BRAINFIT_WHOLE_BRAIN_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_WHOLE_BRAIN_BYTES)
}

/// What differs between the precisions a task computes in: its decomposition cache, and
/// taking a loaded matrix in that precision.
trait Decompositions: Real {
    fn cache(executor: &Executor) -> &Cache<Encoder<Self>>;
    /// The loaded decomposition, if it is in this precision.
    fn loaded(d: &Decomposition) -> Option<Arc<Encoder<Self>>>;
    /// The matrix in this precision (loaded in it already: no copy then).
    fn from_matrix(m: Matrix) -> Array2<Self>;
}

impl Decompositions for f32 {
    fn cache(executor: &Executor) -> &Cache<Encoder<f32>> {
        &executor.decompositions_f32
    }

    fn loaded(d: &Decomposition) -> Option<Arc<Encoder<f32>>> {
        match d {
            Decomposition::F32(cv) => Some(cv.clone()),
            Decomposition::F64(_) => None,
        }
    }

    fn from_matrix(m: Matrix) -> Array2<f32> {
        match m {
            Matrix::F32(a) => a,
            Matrix::F64(a) => a.mapv(|v| v as f32),
        }
    }
}

impl Decompositions for f64 {
    fn cache(executor: &Executor) -> &Cache<Encoder<f64>> {
        &executor.decompositions_f64
    }

    fn loaded(d: &Decomposition) -> Option<Arc<Encoder<f64>>> {
        match d {
            Decomposition::F64(cv) => Some(cv.clone()),
            Decomposition::F32(_) => None,
        }
    }

    fn from_matrix(m: Matrix) -> Array2<f64> {
        match m {
            Matrix::F32(a) => a.mapv(f64::from),
            Matrix::F64(a) => a,
        }
    }
}

thread_local! {
    /// The stop flag of the task this thread computes, while [`Executor::compute`] runs.
    static CURRENT: std::cell::RefCell<Option<Abandon>> = const { std::cell::RefCell::new(None) };
}

/// Marks the task this thread computes for [`checkpoint`], until dropped.
pub(crate) struct CurrentTask;

impl CurrentTask {
    pub(crate) fn enter(abandon: &Abandon) -> CurrentTask {
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
/// [`Executor::compute`] was called on.
pub(crate) fn checkpoint() -> Result<()> {
    CURRENT.with(|c| c.borrow().as_ref().map_or(Ok(()), Abandon::check))
}

/// The cache key of a subject's value.
fn subject_key(job: &JobContext, si: usize) -> String {
    format!("{}/{si}", job.id)
}

impl Executor {
    /// An executor reading through `store`.
    pub fn new(store: Store) -> Self {
        Self::with_metrics(store, crate::metrics::WorkerMetrics::new())
    }

    /// An executor reading through `store` that counts its tasks in `metrics`.
    pub fn with_metrics(store: Store, metrics: crate::metrics::WorkerMetrics) -> Self {
        Executor {
            store,
            metrics,
            brains: AsyncCache::with_capacity(2),
            masks: AsyncCache::with_capacity(8),
            groups: AsyncCache::with_capacity(8),
            designs: AsyncCache::with_capacity(8),
            time_data: AsyncCache::with_capacity(2),
            decompositions_f32: Cache::with_capacity(8),
            decompositions_f64: Cache::with_capacity(8),
            models: Cache::with_capacity(4),
            spheres: Cache::with_capacity(2),
            networks: Cache::with_capacity(1),
            group_tests: Cache::with_capacity(2),
            whole_brain_bytes: whole_brain_bytes(),
        }
    }

    /// The store it reads and writes through.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The metrics its tasks are counted in.
    pub fn metrics(&self) -> &crate::metrics::WorkerMetrics {
        &self.metrics
    }

    /// Computes task `task` of `job`: reads its inputs here, then computes on a blocking
    /// thread, stopping at the next checkpoint once `abandon` is raised.
    pub async fn execute(
        self: &Arc<Self>,
        job: Arc<JobContext>,
        task: usize,
        abandon: Abandon,
    ) -> Result<Part> {
        match job.tasks[task] {
            // reads and computation interleave (streamed PCA): their own path
            Task::Extract { .. } | Task::Assemble { .. } => {
                return crate::extract::execute(self, job, task, abandon).await;
            }
            // they read other tasks' parts: their own path
            Task::GroupData { .. } | Task::Group { .. } => {
                return crate::group::execute(self, job, task, abandon).await;
            }
            _ => {}
        }
        let started = std::time::Instant::now();
        let (loaded, reads) = brainfit_io::counting_reads(self.load(&job, task)).await;
        let loaded = loaded?;
        let loaded_in = started.elapsed();
        abandon.check()?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let computing = std::time::Instant::now();
            let part = me.compute(&job, task, loaded, &abandon);
            tracing::debug!(
                task = %job.tasks[task].key(),
                load_s = loaded_in.as_secs_f64(),
                read_requests = reads.requests,
                read_bytes = reads.bytes,
                compute_s = computing.elapsed().as_secs_f64(),
                "task computed"
            );
            part
        })
        .await
        .map_err(|e| WorkerError::Panic(e.to_string()))?
    }

    /// Reads what task `task` needs ([`Loaded`]).
    async fn load(&self, job: &JobContext, task: usize) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        match &job.tasks[task] {
            Task::Encoding { subject: si, space, voxels } => {
                let (si, inv) = (*si, &job.inventory.subjects[*si]);
                let subject = &job.spec.subjects[si];
                loaded.groups = Some(self.groups(job, si).await?);
                // only this task's voxels are read from a .npy (range requests); a NIfTI image
                // is read once per process
                let url = subject.brain_url()?;
                if inputs::is_nifti(url) {
                    loaded.brain = Some(self.brain(job, si).await?);
                } else {
                    let chunk = voxels[0]..voxels[1];
                    let chunk = std::slice::from_ref(&chunk);
                    let columns =
                        inputs::load_brain_columns(&self.store, url, chunk, inv.f64_data).await?;
                    loaded.columns = Some(columns);
                }
                let key = format!("{}/{space}", subject_key(job, si));
                loaded.decomposition = if inv.f64_data {
                    self.decompositions_f64.get_built(&key).map(Decomposition::F64)
                } else {
                    self.decompositions_f32.get_built(&key).map(Decomposition::F32)
                };
                // the ROI profile's null sums: each ROI's voxels among this chunk's
                let rois = job.spec.profile_rois();
                if job.spec.permutation.is_some() && !rois.is_empty() {
                    let mask = self.mask(job, si, "[rois]").await?;
                    for url in rois.values() {
                        let roi = self.roi_mask(job, url).await?;
                        let columns = inputs::roi_columns(&mask, &roi, url)?;
                        loaded.roi_columns.push(
                            columns
                                .into_iter()
                                .filter(|c| (voxels[0]..voxels[1]).contains(c))
                                .map(|c| c - voxels[0])
                                .collect(),
                        );
                    }
                }
                let first = brainfit_job::plan::encoding_fits(&job.spec, inv)
                    .first()
                    .map(|f| f.name == *space);
                if first == Some(true) {
                    for url in &subject.repeats {
                        let chunk = voxels[0]..voxels[1];
                        let chunk = std::slice::from_ref(&chunk);
                        let columns =
                            inputs::load_brain_columns(&self.store, url, chunk, inv.f64_data)
                                .await?;
                        loaded.repeats.push(columns);
                    }
                }
                if loaded.decomposition.is_none() {
                    for name in &fit(job, si, space)?.spaces {
                        let space = space_ref(job, si, name)?;
                        let x = inputs::load_space(&self.store, &space, inv.f64_data).await?;
                        loaded.spaces.push(with_precision(x, inv.f64_data));
                    }
                }
            }
            Task::Searchlight { subject: si, voxels } => {
                let sl = job.spec.searchlight.as_ref().expect("searchlight tasks need it");
                self.load_spheres(job, *si, *voxels, sl.radius, &mut loaded).await?;
                loaded.models = Some(self.load_models(job, *si, sl.rdm).await?);
                loaded.design = Some(self.design(job, *si).await?);
            }
            Task::DecodingSearchlight { subject: si, space, voxels } => {
                let d = job.spec.decoding.as_ref().expect("decoding tasks need [decoding]");
                let (radius, _) = d.searchlight.expect("searchlight decoding tasks need one");
                self.load_spheres(job, *si, *voxels, radius, &mut loaded).await?;
                loaded.groups = Some(self.groups(job, *si).await?);
                let inv = &job.inventory.subjects[*si];
                let space = space_ref(job, *si, space)?;
                let x = inputs::load_space(&self.store, &space, inv.f64_data).await?;
                loaded.spaces.push(with_precision(x, inv.f64_data));
            }
            Task::Rsa { subject: si, .. } => {
                let r = job.spec.rsa.as_ref().expect("rsa tasks exist only with [rsa]");
                for url in r.brain_rdms.values() {
                    loaded.brain_rdms.push(inputs::load_rdm(&self.store, url).await?);
                }
                for url in r.rois.values() {
                    loaded.rois.push(inputs::load_mask(&self.store, url).await?);
                }
                // brain patterns are read only when there are ROIs (given RDMs need none): a
                // NIfTI image or a .npy matrix within the budget whole, once per process; from
                // a larger .npy only the voxels the ROIs cover
                let subject = &job.spec.subjects[*si];
                if !r.rois.is_empty() {
                    let columns_of = |mask: &Mask| -> Result<Vec<Vec<usize>>> {
                        let rois = r.rois.values().zip(&loaded.rois);
                        Ok(rois
                            .map(|(url, roi)| inputs::roi_columns(mask, roi, url))
                            .collect::<std::result::Result<_, _>>()?)
                    };
                    if self.reads_whole_brain(job, *si)? {
                        let brain = self.brain(job, *si).await?;
                        let mask =
                            brain.mask.as_ref().ok_or_else(|| no_mask(subject, "[rsa] rois"));
                        loaded.roi_columns = columns_of(mask?)?;
                        loaded.brain = Some(brain);
                    } else {
                        let mask = self.mask(job, *si, "[rsa] rois").await?;
                        let (runs, positions) = column_runs(&columns_of(&mask)?);
                        let url = subject.brain_url()?;
                        let f64_data = job.inventory.subjects[*si].f64_data;
                        let columns =
                            inputs::load_brain_columns(&self.store, url, &runs, f64_data).await?;
                        loaded.columns = Some(columns);
                        loaded.roi_columns = positions;
                    }
                }
                loaded.groups = Some(self.groups(job, *si).await?);
                loaded.models = Some(self.load_models(job, *si, r.rdm).await?);
                if subject.brain.is_some() {
                    loaded.design = Some(self.design(job, *si).await?);
                }
            }
            Task::Decoding { subject: si, source, space, .. } => {
                let (si, inv) = (*si, &job.inventory.subjects[*si]);
                let subject = &job.spec.subjects[si];
                loaded.groups = Some(self.groups(job, si).await?);
                let key = format!("{}/decoding:{source}", subject_key(job, si));
                loaded.decomposition = if inv.f64_data {
                    self.decompositions_f64.get_built(&key).map(Decomposition::F64)
                } else {
                    self.decompositions_f32.get_built(&key).map(Decomposition::F32)
                };
                if loaded.decomposition.is_none() {
                    // the voxels decoded from: the whole mask, or one ROI's columns (read
                    // alone from a .npy above the whole-brain budget)
                    if source == brainfit_job::spec::WHOLE_MASK {
                        let brain = self.brain(job, si).await?;
                        loaded.columns = Some(inputs::columns(&brain.matrix, 0, inv.n_voxels));
                    } else {
                        let url =
                            job.spec.profile_rois().get(source.as_str()).map(ToString::to_string);
                        let url =
                            url.ok_or_else(|| JobError::Corrupt(format!("unknown ROI {source}")))?;
                        let roi = self.roi_mask(job, &url).await?;
                        let mask = self.mask(job, si, "[decoding] rois").await?;
                        let columns = inputs::roi_columns(&mask, &roi, &url)?;
                        if self.reads_whole_brain(job, si)? {
                            let brain = self.brain(job, si).await?;
                            loaded.columns = Some(select_columns(&brain.matrix, &columns));
                        } else {
                            let (runs, _) = column_runs(std::slice::from_ref(&columns));
                            let url = subject.brain_url()?;
                            loaded.columns = Some(
                                inputs::load_brain_columns(&self.store, url, &runs, inv.f64_data)
                                    .await?,
                            );
                        }
                    }
                }
                let space = space_ref(job, si, space)?;
                let x = inputs::load_space(&self.store, &space, inv.f64_data).await?;
                loaded.spaces.push(with_precision(x, inv.f64_data));
            }
            Task::Extract { .. }
            | Task::Assemble { .. }
            | Task::GroupData { .. }
            | Task::Group { .. } => {}
            Task::TimeResolved { recording, .. } => {
                let t = job.spec.time_resolved.as_ref().expect("time-resolved tasks need it");
                let url = &t.recordings[*recording].url;
                // every task needs all of the recording (tasks split the permutations): once
                // per process
                let key = format!("{}/r{recording}", job.id);
                let store = &self.store;
                loaded.time_data = Some(
                    self.time_data
                        .get_or_load(key, async {
                            Ok(inputs::load_time_resolved(store, url).await?)
                        })
                        .await?,
                );
                if let Some(url) = &t.cross_data {
                    loaded.cross_data = Some(
                        self.time_data
                            .get_or_load(format!("{}/cross", job.id), async {
                                Ok(inputs::load_time_resolved(store, url).await?)
                            })
                            .await?,
                    );
                }
                loaded.models = Some(self.load_models(job, 0, t.rdm).await?);
                loaded.groups = Some(self.groups(job, 0).await?);
                if job.spec.subjects[0].brain.is_some() {
                    loaded.design = Some(self.design(job, 0).await?);
                }
            }
        }
        Ok(loaded)
    }

    /// Computes task `task` from its inputs (blocking: call on a blocking thread).
    pub(crate) fn compute(
        &self,
        job: &JobContext,
        task: usize,
        loaded: Loaded,
        abandon: &Abandon,
    ) -> Result<Part> {
        let _current = CurrentTask::enter(abandon);
        match &job.tasks[task] {
            Task::Encoding { subject, space, voxels } => {
                self.encoding(job, *subject, space, *voxels, loaded)
            }
            Task::Searchlight { subject, voxels } => {
                self.searchlight(job, *subject, *voxels, loaded)
            }
            Task::Rsa { subject, perms } => self.roi_rsa(job, *subject, *perms, loaded),
            Task::TimeResolved { perms, .. } => self.time_resolved(job, *perms, loaded),
            Task::Decoding { subject, source, units, .. } => {
                self.decoding(job, *subject, source, *units, loaded)
            }
            Task::DecodingSearchlight { subject, voxels, .. } => {
                self.decoding_searchlight(job, *subject, *voxels, loaded)
            }
            Task::Extract { .. } | Task::Assemble { .. } => {
                unreachable!("extraction tasks run in crate::extract, not from loaded inputs")
            }
            Task::GroupData { .. } | Task::Group { .. } => {
                unreachable!("group tasks run in crate::group, not from loaded inputs")
            }
        }
    }

    /// Searchlight decoding: per kept centre among mask voxels `voxels`, ridge from its
    /// sphere's voxels to every unit of the feature space; the map values are the mean
    /// held-out score over units and the pairwise identification accuracy, each with its
    /// permutation nulls (the targets re-paired with the brain data as in decoding).
    fn decoding_searchlight(
        &self,
        job: &JobContext,
        si: usize,
        voxels: [usize; 2],
        loaded: Loaded,
    ) -> Result<Part> {
        let d = job.spec.decoding.as_ref().expect("decoding tasks need [decoding]");
        let (radius, min_voxels) = d.searchlight.expect("searchlight decoding tasks need one");
        let (matrix, mask, offset, groups) = loaded.sphere_data();
        let hoods = self.spheres_of(job, si, mask, radius, min_voxels, "decoding")?;
        let (kept, local) = task_spheres(&hoods, voxels, offset)?;
        let features = loaded.spaces.first().expect("loaded for decoding").clone();
        let perms = job.spec.permutation.map(|p| (p, p.scheme(groups)));
        let n_perm = perms.as_ref().map_or(0, |(p, _)| p.n);
        let mut value = Array2::<f64>::zeros((2, local.len()));
        let mut nulls = ndarray::Array3::<f64>::zeros((n_perm, 2, local.len()));
        with_matrix!(matrix, |x| {
            let y = Decompositions::from_matrix(features);
            for c in 0..local.len() {
                checkpoint()?;
                let sphere = x.select(Axis(1), local.members(c));
                let (observed, null) = decode_sphere(sphere, &y, &d.fit, groups, perms.as_ref())?;
                value.column_mut(c).assign(&observed);
                nulls.slice_mut(ndarray::s![.., .., c]).assign(&null);
            }
            Ok::<_, crate::WorkerError>(())
        })?;
        let block = MapBlock::compute(value, 0..n_perm as u64, |k| {
            Ok::<_, crate::WorkerError>(nulls.index_axis(Axis(0), k as usize).to_owned())
        })?;
        let mut part = Part::new();
        block.write(&mut part);
        let centres: Vec<f64> = hoods.centres[kept].iter().map(|&c| c as f64).collect();
        part.push("centres", vec![centres.len()], centres);
        Ok(part)
    }

    /// Decoding: ridge from the source's voxels to the units `units` of a feature space,
    /// scored per unit, with permutation nulls and each outer fold's identification sums.
    fn decoding(
        &self,
        job: &JobContext,
        si: usize,
        source: &str,
        units: [usize; 2],
        loaded: Loaded,
    ) -> Result<Part> {
        let spec = &job.spec.decoding.as_ref().expect("decoding tasks need [decoding]").fit;
        let groups = loaded.groups.as_ref().expect("loaded for decoding").as_deref();
        let features = loaded.spaces.into_iter().next().expect("loaded for decoding");
        let y = inputs::columns(&features, units[0], units[1]);
        let perms = job.spec.permutation.map(|p| (p, p.scheme(groups)));
        let (mut decomposition, mut voxels) =
            (loaded.decomposition, loaded.columns.into_iter().collect());
        let fit = Fit { name: format!("decoding:{source}"), spaces: vec![source.to_string()] };
        let (block, fitted, sums) = with_matrix!(y, |y| {
            let encoder = self.encoder(
                job,
                si,
                &fit,
                &spec.model,
                spec,
                groups,
                &mut decomposition,
                &mut voxels,
            )?;
            let Encoder::Spectral(cv) = encoder.as_ref() else {
                unreachable!("decoding fits ridge")
            };
            decode_with_nulls(cv, y, spec, groups, perms)?
        });
        let n = units[1] - units[0];
        let mut part = Part::new();
        block.write(&mut part);
        part.push("alpha", vec![n], fitted.chosen.to_vec());
        for (k, s) in sums.iter().enumerate() {
            let flat = s.to_flat();
            part.push(&format!("ident:{k}"), vec![flat.len()], flat);
        }
        Ok(part)
    }

    /// The brain data a searchlight task's spheres (of `radius`, centres among mask voxels
    /// `voxels`) reach: a NIfTI image, or a `.npy` matrix within the budget, read once per
    /// process; from a larger `.npy` only the slabs of voxels the spheres reach.
    async fn load_spheres(
        &self,
        job: &JobContext,
        si: usize,
        voxels: [usize; 2],
        radius: brainfit_job::spec::Radius,
        loaded: &mut Loaded,
    ) -> Result<()> {
        if self.reads_whole_brain(job, si)? {
            loaded.brain = Some(self.brain(job, si).await?);
            return Ok(());
        }
        let (subject, inv) = (&job.spec.subjects[si], &job.inventory.subjects[si]);
        let mask = self.mask(job, si, "a searchlight").await?;
        let span = slab_span(&mask.voxels, voxels[0]..voxels[1], radius.reach(mask.pixdim));
        let url = subject.brain_url()?;
        let runs = std::slice::from_ref(&span);
        loaded.columns =
            Some(inputs::load_brain_columns(&self.store, url, runs, inv.f64_data).await?);
        loaded.column_offset = span.start;
        loaded.groups = Some(self.groups(job, si).await?);
        loaded.mask = Some(mask);
        Ok(())
    }

    /// Whether a task reads subject `si`'s brain data whole (once per process): a NIfTI image
    /// (compressed: it cannot be range-read), or a `.npy` matrix within
    /// `BRAINFIT_WHOLE_BRAIN_BYTES`; else each task reads only the voxels it needs.
    fn reads_whole_brain(&self, job: &JobContext, si: usize) -> Result<bool> {
        let inv = &job.inventory.subjects[si];
        let item = if inv.f64_data { 8 } else { 4 };
        let matrix_bytes = (inv.n_samples * inv.n_voxels * item) as u64;
        Ok(inputs::is_nifti(job.spec.subjects[si].brain_url()?)
            || matrix_bytes <= self.whole_brain_bytes)
    }

    /// A subject's brain data, mask and group labels, read once per process.
    async fn brain(&self, job: &JobContext, si: usize) -> Result<Arc<BrainData>> {
        let subject: &SubjectSpec = &job.spec.subjects[si];
        self.brains
            .get_or_load(subject_key(job, si), async {
                let (matrix, mask) = inputs::load_brain(&self.store, subject).await?;
                let groups = self.groups(job, si).await?.as_ref().clone();
                Ok(BrainData { matrix, mask, groups })
            })
            .await
    }

    /// A subject's mask, read once per process; `needed_by` (e.g. "a searchlight") names what
    /// needs it in the error when the job gives none.
    async fn mask(&self, job: &JobContext, si: usize, needed_by: &str) -> Result<Arc<Mask>> {
        let subject = &job.spec.subjects[si];
        let url = subject.mask.as_deref().ok_or_else(|| no_mask(subject, needed_by))?;
        self.masks
            .get_or_load(subject_key(job, si), async {
                Ok(inputs::load_mask(&self.store, url).await?)
            })
            .await
    }

    /// An ROI mask of the job (`[rois]`, `[rsa] rois`), read once per process.
    async fn roi_mask(&self, job: &JobContext, url: &str) -> Result<Arc<Mask>> {
        self.masks
            .get_or_load(format!("{}/roi:{url}", job.id), async {
                Ok(inputs::load_mask(&self.store, url).await?)
            })
            .await
    }

    /// A subject's group labels, read once per process.
    async fn groups(&self, job: &JobContext, si: usize) -> Result<Arc<Option<Vec<i64>>>> {
        let subject = &job.spec.subjects[si];
        let n = job.inventory.subjects[si].n_samples;
        self.groups
            .get_or_load(subject_key(job, si), async {
                Ok(inputs::load_groups(&self.store, subject, n).await?)
            })
            .await
    }

    /// A subject's observation design (`[data] conditions` with its runs), read once per
    /// process.
    pub(crate) async fn design(
        &self,
        job: &JobContext,
        si: usize,
    ) -> Result<Arc<Option<ObservationDesign>>> {
        let subject = &job.spec.subjects[si];
        let n = job.inventory.subjects[si].n_samples;
        self.designs
            .get_or_load(subject_key(job, si), async {
                Ok(inputs::load_design(&self.store, subject, n).await?)
            })
            .await
    }

    /// A subject's model RDMs for `method` if cached, else what they are built from.
    async fn load_models(
        &self,
        job: &JobContext,
        si: usize,
        method: brainfit_kernels::rdm::RdmMethod,
    ) -> Result<ModelsLoaded> {
        if let Some(models) = self.models.get_built(&crate::rsa::models_key(job, si, method)) {
            return Ok(ModelsLoaded::Built(models));
        }
        let mut given = Vec::new();
        if let Some(r) = &job.spec.rsa {
            for url in r.models.values() {
                given.push(inputs::load_rdm(&self.store, url).await?);
            }
        }
        let as_f64 = |m: Matrix| match m {
            Matrix::F64(x) => x,
            Matrix::F32(_) => unreachable!("loaded as f64"),
        };
        let mut spaces = Vec::new();
        for (space, _) in &job.inventory.subjects[si].spaces {
            spaces.push(as_f64(inputs::load_space(&self.store, space, true).await?));
        }
        let mut remix = Vec::new();
        for m in job.spec.rsa.iter().flat_map(|r| r.remix.values()) {
            let (train, labels) = inputs::load_remix_training(&self.store, m).await?;
            remix.push((as_f64(train), labels));
        }
        let design = if job.spec.subjects[si].brain.is_some() {
            Some(self.design(job, si).await?)
        } else {
            None
        };
        Ok(ModelsLoaded::Inputs(ModelInputs { given, spaces, design, remix }))
    }

    fn encoding(
        &self,
        job: &JobContext,
        si: usize,
        fit_name: &str,
        voxels: [usize; 2],
        loaded: Loaded,
    ) -> Result<Part> {
        let spec = job.spec.encoding.as_ref().expect("encoding tasks exist only with [encoding]");
        let groups = loaded.groups.as_ref().expect("loaded for encoding").as_deref();
        let y = match (loaded.columns, &loaded.brain) {
            (Some(columns), _) => columns,
            (None, Some(brain)) => inputs::columns(&brain.matrix, voxels[0], voxels[1]),
            (None, None) => unreachable!("encoding loads its voxels"),
        };
        let n = voxels[1] - voxels[0];
        let perms = job.spec.permutation.map(|p| (p, p.scheme(groups)));
        let fit = fit(job, si, fit_name)?;
        let model = spec.encoder(&fit);
        let (mut decomposition, mut spaces) = (loaded.decomposition, loaded.spaces);
        let rois = &loaded.roi_columns;
        let (block, fitted, roi_nulls) = with_matrix!(y, |y| {
            let encoder =
                self.encoder(job, si, &fit, &model, spec, groups, &mut decomposition, &mut spaces)?;
            encode_with_nulls(&encoder, y, spec, &model, groups, perms.clone(), rois)?
        });
        let mut part = Part::new();
        block.write(&mut part);
        part.push("alpha", vec![n], fitted.chosen.to_vec());
        if perms.is_some() && !rois.is_empty() {
            for (name, a) in ["roi_null_sum", "roi_null_count"].into_iter().zip(&roi_nulls) {
                part.push(name, a.shape().to_vec(), a.iter().copied().collect());
            }
        }
        if !loaded.repeats.is_empty() {
            part.push("ceiling", vec![n], noise_ceiling(loaded.repeats, spec, groups)?.to_vec());
        }
        if let Some((weight, split)) = &fitted.bands {
            for b in 0..fit.spaces.len() {
                part.push(&format!("weight:{b}"), vec![n], weight.row(b).to_vec());
                part.push(&format!("split:{b}"), vec![n], split.row(b).to_vec());
            }
        }
        Ok(part)
    }

    /// The encoder of a fit: the loaded one, or built once per process from the loaded
    /// activations of its feature spaces.
    #[allow(clippy::too_many_arguments)]
    fn encoder<T: Decompositions>(
        &self,
        job: &JobContext,
        si: usize,
        fit: &Fit,
        model: &EncoderSpec,
        spec: &EncodingSpec,
        groups: Option<&[i64]>,
        decomposition: &mut Option<Decomposition>,
        spaces: &mut Vec<Matrix>,
    ) -> Result<Arc<Encoder<T>>> {
        if let Some(cv) = decomposition.as_ref().and_then(T::loaded) {
            return Ok(cv);
        }
        T::cache(self).get_or_build(format!("{}/{}", subject_key(job, si), fit.name), || {
            if spaces.len() != fit.spaces.len() {
                // the encoder was cached when the task was loaded
                return Err(JobError::Corrupt(format!("fit {} was not loaded", fit.name)).into());
            }
            let xs = std::mem::take(spaces).into_iter().map(T::from_matrix).collect();
            prepare_and_decompose(xs, spec, model, groups).map_err(|e| {
                // a feature space's URL; decoding's inputs are the brain data
                let url = match space_ref(job, si, &fit.spaces[0]) {
                    Ok(space) => space.url,
                    Err(_) => job.spec.subjects[si].brain_url().unwrap_or_default().to_string(),
                };
                JobError::Input { url, message: format!("{}: {e}", fit.name) }.into()
            })
        })
    }
}

/// The split-half noise ceiling of a voxel chunk from its repeated measurements, each
/// preprocessed as the brain data are (z-scored within runs when the job asks for it).
fn noise_ceiling(
    repeats: Vec<Matrix>,
    spec: &EncodingSpec,
    groups: Option<&[i64]>,
) -> Result<ndarray::Array1<f64>> {
    let mut prepared: Vec<Array2<f64>> = repeats.into_iter().map(f64::from_matrix).collect();
    if spec.zscore_per_group {
        for r in &mut prepared {
            zscore_per_group(r.view_mut(), groups.expect("checked by the spec"))
                .map_err(JobError::from)?;
        }
    }
    let views: Vec<_> = prepared.iter().map(|r| r.view()).collect();
    Ok(brainfit_kernels::reliability::split_half_ceiling(&views).map_err(JobError::from)?)
}

/// Columns `columns` (any order) of a matrix, as an owned matrix of the same precision.
fn select_columns(m: &Matrix, columns: &[usize]) -> Matrix {
    match m {
        Matrix::F32(a) => Matrix::F32(a.select(Axis(1), columns)),
        Matrix::F64(a) => Matrix::F64(a.select(Axis(1), columns)),
    }
}

/// Decoding's observed fit with held-out predictions, each outer fold's identification sums
/// over this task's units, and the permutation nulls (targets re-paired with the brain data,
/// then preprocessed as observed ones are, as in [`encode_with_nulls`]).
fn decode_with_nulls<T: Real>(
    cv: &brainfit_kernels::ridge::NestedCv<T>,
    y: Array2<T>,
    spec: &EncodingSpec,
    groups: Option<&[i64]>,
    perms: Option<(PermutationSpec, Scheme)>,
) -> Result<(MapBlock, Fitted, Vec<IdentificationSums>)> {
    let EncoderSpec::Spectral(ridge) = &spec.model else { unreachable!("decoding fits ridge") };
    let preprocess = |mut y: Array2<T>| -> Result<Array2<T>> {
        if spec.zscore_per_group {
            zscore_per_group(y.view_mut(), groups.expect("checked by the spec"))
                .map_err(JobError::from)?;
        }
        Ok(y)
    };
    let observed_y = preprocess(y.clone())?;
    let (observed, predictions) =
        cv.fit_predict::<Backend>(observed_y.view(), ridge).map_err(JobError::from)?;
    let sums = cv
        .test_parts()
        .zip(&predictions)
        .map(|(test, pred)| {
            let truth = observed_y.select(Axis(0), test);
            IdentificationSums::new(pred.view(), truth.view())
        })
        .collect::<brainfit_kernels::Result<Vec<_>>>()
        .map_err(JobError::from)?;
    let value = observed.score.clone().insert_axis(Axis(0));
    let n_perm = perms.as_ref().map_or(0, |(p, _)| p.n as u64);
    let block = MapBlock::compute(value, 0..n_perm, |k| {
        checkpoint()?;
        let (p, scheme) = perms.as_ref().expect("permutations requested");
        let order = permutation(y.nrows(), scheme, p.seed, k);
        let shuffled = preprocess(y.select(Axis(0), &order))?;
        let null = cv.fit::<Backend>(shuffled.view(), ridge).map_err(JobError::from)?;
        Ok::<_, crate::WorkerError>(null.score.insert_axis(Axis(0)))
    })?;
    let fitted = Fitted { score: observed.score, chosen: observed.alpha, bands: None };
    Ok((block, fitted, sums))
}

/// A searchlight task's kept centres among mask voxels `voxels` (their range in `hoods`),
/// and their spheres indexing brain columns loaded from mask voxel `offset` on.
pub(crate) fn task_spheres(
    hoods: &brainfit_kernels::searchlight::Neighbourhoods,
    voxels: [usize; 2],
    offset: usize,
) -> Result<(std::ops::Range<usize>, brainfit_kernels::searchlight::Neighbourhoods)> {
    let c0 = hoods.centres.partition_point(|&c| c < voxels[0]);
    let c1 = hoods.centres.partition_point(|&c| c < voxels[1]);
    Ok((c0..c1, hoods.window(c0..c1, offset).map_err(JobError::from)?))
}

/// One searchlight sphere's decoding: the mean held-out score over the units of `y` and the
/// pairwise identification accuracy (`[2]`), and the same per permutation (`[n_perm, 2]`).
fn decode_sphere<T: Real>(
    sphere: Array2<T>,
    y: &Array2<T>,
    spec: &EncodingSpec,
    groups: Option<&[i64]>,
    perms: Option<&(PermutationSpec, Scheme)>,
) -> Result<(ndarray::Array1<f64>, Array2<f64>)> {
    let encoder =
        prepare_and_decompose(vec![sphere], spec, &spec.model, groups).map_err(JobError::from)?;
    let Encoder::Spectral(cv) = &encoder else { unreachable!("decoding fits ridge") };
    let EncoderSpec::Spectral(ridge) = &spec.model else { unreachable!("decoding fits ridge") };
    let statistics = |y: Array2<T>| -> Result<[f64; 2]> {
        let y = match spec.zscore_per_group {
            true => {
                let mut y = y;
                zscore_per_group(y.view_mut(), groups.expect("checked by the spec"))
                    .map_err(JobError::from)?;
                y
            }
            false => y,
        };
        let (result, predictions) =
            cv.fit_predict::<Backend>(y.view(), ridge).map_err(JobError::from)?;
        let finite: Vec<f64> = result.score.iter().copied().filter(|s| s.is_finite()).collect();
        let mean = finite.iter().sum::<f64>() / finite.len() as f64;
        let mut identification: Option<brainfit_kernels::identification::Identification> = None;
        for (test, pred) in cv.test_parts().zip(&predictions) {
            let truth = y.select(Axis(0), test);
            let scored = IdentificationSums::new(pred.view(), truth.view())
                .map_err(JobError::from)?
                .identify();
            match &mut identification {
                Some(i) => i.add(scored),
                None => identification = Some(scored),
            }
        }
        Ok([mean, identification.map_or(f64::NAN, |i| i.pairwise_accuracy())])
    };
    let observed = ndarray::Array1::from(statistics(y.clone())?.to_vec());
    let n_perm = perms.map_or(0, |(p, _)| p.n);
    let mut null = Array2::<f64>::zeros((n_perm, 2));
    for k in 0..n_perm {
        let (p, scheme) = perms.expect("permutations requested");
        let order = permutation(y.nrows(), scheme, p.seed, k as u64);
        null.row_mut(k)
            .assign(&ndarray::Array1::from(statistics(y.select(Axis(0), &order))?.to_vec()));
    }
    Ok((observed, null))
}

/// Fit `name` (a feature space, or bands joined by `+`) of subject `si`.
fn fit(job: &JobContext, si: usize, name: &str) -> Result<Fit> {
    let inv = &job.inventory.subjects[si];
    brainfit_job::plan::encoding_fits(&job.spec, inv)
        .into_iter()
        .find(|f| f.name == name)
        .ok_or_else(|| JobError::Corrupt(format!("unknown encoding fit {name}")).into())
}

/// Feature space `name` of subject `si`, as the inventory knows it.
/// The error for a job that needs a subject's mask and gives none.
fn no_mask(subject: &SubjectSpec, needed_by: &str) -> WorkerError {
    JobError::Input {
        url: subject.brain_url().unwrap_or_default().to_string(),
        message: format!("{needed_by} need a [data] mask"),
    }
    .into()
}

/// The union of several sorted column lists (e.g. ROIs' voxels) as ascending runs of columns,
/// and each list's columns as positions in the runs' columns laid side by side.
fn column_runs(lists: &[Vec<usize>]) -> (Vec<std::ops::Range<usize>>, Vec<Vec<usize>>) {
    let union: std::collections::BTreeSet<usize> = lists.iter().flatten().copied().collect();
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for &c in &union {
        match runs.last_mut() {
            Some(run) if run.end == c => run.end += 1,
            _ => runs.push(c..c + 1),
        }
    }
    let position: std::collections::HashMap<usize, usize> =
        union.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    let positions = lists.iter().map(|l| l.iter().map(|c| position[c]).collect()).collect();
    (runs, positions)
}

fn space_ref(job: &JobContext, si: usize, name: &str) -> Result<brainfit_job::SpaceRef> {
    job.inventory.subjects[si]
        .spaces
        .iter()
        .find(|(s, _)| s.name == name)
        .map(|(s, _)| s.clone())
        .ok_or_else(|| JobError::Corrupt(format!("unknown feature space {name}")).into())
}

/// Per-run preprocessing of each feature space (z-scoring, FIR delays), then the encoder of
/// `model` over them.
pub fn prepare_and_decompose<T: Real>(
    spaces: Vec<Array2<T>>,
    spec: &EncodingSpec,
    model: &EncoderSpec,
    groups: Option<&[i64]>,
) -> brainfit_kernels::Result<Encoder<T>> {
    let mut prepared = Vec::with_capacity(spaces.len());
    for mut x in spaces {
        if spec.zscore_per_group {
            zscore_per_group(x.view_mut(), groups.expect("checked by the spec"))?;
        }
        prepared.push(if spec.delays == [0] { x } else { delay(x.view(), &spec.delays, groups)? });
    }
    let n = prepared.first().map_or(0, Array2::nrows);
    let outer = split(spec.cv, n, groups)?;
    let views: Vec<_> = prepared.iter().map(|x| x.view()).collect();
    Encoder::new::<Backend>(&views, &outer, spec.inner_cv, groups, model)
}

/// Observed scores of a voxel chunk and, with permutations, their null counts and maxima,
/// and for each ROI (`rois`: positions among the chunk's voxels) the sum and the number of its
/// finite null scores per permutation (`[n_rois, n_perms]` each), from which the merge gets
/// the ROI profile's null distribution exactly however the voxels are chunked.
///
/// A permutation re-pairs stimuli and responses (`y`'s rows, as loaded) and then applies the
/// same per-run preprocessing the observed data get (z-scoring), so the null sees exactly what
/// the observed data saw, before re-running the whole nested CV, hyperparameter selection
/// included. X's decompositions are reused: X does not change, so that reuse is exact.
pub fn encode_with_nulls<T: Real>(
    encoder: &Encoder<T>,
    y: Array2<T>,
    spec: &EncodingSpec,
    model: &EncoderSpec,
    groups: Option<&[i64]>,
    perms: Option<(PermutationSpec, Scheme)>,
    rois: &[Vec<usize>],
) -> Result<(MapBlock, Fitted, [Array2<f64>; 2])> {
    let preprocess = |mut y: Array2<T>| -> Result<Array2<T>> {
        if spec.zscore_per_group {
            zscore_per_group(y.view_mut(), groups.expect("checked by the spec"))
                .map_err(JobError::from)?;
        }
        Ok(y)
    };
    let observed =
        encoder.fit::<Backend>(preprocess(y.clone())?.view(), model).map_err(JobError::from)?;
    let value = observed.score.clone().insert_axis(Axis(0));
    let n_perm = perms.as_ref().map_or(0, |(p, _)| p.n as u64);
    let mut roi_sum = Array2::<f64>::zeros((rois.len(), n_perm as usize));
    let mut roi_count = Array2::<f64>::zeros((rois.len(), n_perm as usize));
    let block = MapBlock::compute(value, 0..n_perm, |k| {
        checkpoint()?;
        let (p, scheme) = perms.as_ref().expect("permutations requested");
        let order = permutation(y.nrows(), scheme, p.seed, k);
        let shuffled = preprocess(y.select(Axis(0), &order))?;
        let null = encoder.fit::<Backend>(shuffled.view(), model).map_err(JobError::from)?;
        for (r, columns) in rois.iter().enumerate() {
            for &c in columns {
                if null.score[c].is_finite() {
                    roi_sum[(r, k as usize)] += null.score[c];
                    roi_count[(r, k as usize)] += 1.0;
                }
            }
        }
        Ok::<_, crate::WorkerError>(null.score.insert_axis(Axis(0)))
    })?;
    Ok((block, observed, [roi_sum, roi_count]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use brainfit_io::{write_nifti_f32, write_npy};
    use brainfit_job::{JobRun, JobSpec};
    use brainfit_kernels::rng::Rng;

    /// A 10×4×4 volume, all in the mask (160 voxels, 16 per slab along i), 12 conditions.
    async fn volume_study(store: &Store, base: &str, brain_file: &str) {
        let mut rng = Rng::new(3);
        let mask = ndarray::Array3::<f32>::ones((10, 4, 4));
        let eye = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0; 4]];
        let nii = write_nifti_f32(mask.view(), &eye, true);
        store.put(&format!("{base}/mask.nii.gz"), nii.into()).await.unwrap();
        let brain: Array2<f32> = rng.normal_array((12, 160));
        let npy = write_npy(&brain.view());
        store.put(&format!("{base}/{brain_file}"), npy.into()).await.unwrap();
        let model: Array1<f64> = rng.normal_array(66);
        store.put(&format!("{base}/model.npy"), write_npy(&model.view()).into()).await.unwrap();
    }

    #[tokio::test]
    async fn above_the_budget_a_searchlight_task_reads_only_the_slabs_its_spheres_reach() {
        let store = Store::new();
        let base = "memory://worker-window/study";
        volume_study(&store, base, "brain.npy").await;
        let job = "name = \"sl\"\noutput = \"out\"\n[data]\nbrain = \"brain.npy\"\n\
                   mask = \"mask.nii.gz\"\n[rsa]\nmodels = { m = \"model.npy\" }\n\
                   [searchlight]\nradius = 1.5\nmin_voxels = 3\n[execution]\ncentres_per_task = 32\n";
        let spec = JobSpec::from_toml(job, "job.toml", base).unwrap();
        let run = JobRun::prepare(&store, spec, "r1".into()).await.unwrap();
        assert_eq!(run.tasks.len(), 5, "160 centres in tasks of 32: two slabs each");
        let whole = Executor::new(store.clone());
        let loaded = whole.load(&run, 0).await.unwrap();
        assert!(loaded.brain.is_some() && loaded.columns.is_none(), "7.5 kB: read whole");
        let executor = Executor { whole_brain_bytes: 0, ..Executor::new(store) };
        for (t, task) in run.tasks.iter().enumerate() {
            let Task::Searchlight { voxels, .. } = task else { panic!("{task:?}") };
            let loaded = executor.load(&run, t).await.unwrap();
            assert!(loaded.brain.is_none(), "the whole brain is not read");
            let columns = loaded.columns.expect("a window of columns");
            // the task's two slabs and, radius 1.5, one more on each side inside the volume
            let lo = voxels[0].saturating_sub(16);
            let hi = (voxels[1] + 16).min(160);
            assert_eq!((loaded.column_offset, columns.dim()), (lo, (12, hi - lo)), "task {t}");
        }
    }

    #[tokio::test]
    async fn above_the_budget_an_roi_task_reads_only_its_rois_voxels_and_computes_the_same() {
        let store = Store::new();
        let base = "memory://worker-rois/study";
        volume_study(&store, base, "brain.npy").await;
        let eye = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0; 4]];
        // ROI "a": slab i = 2 and half of slab 3 (24 voxels); ROI "b": slab 7 (16 voxels)
        let a = ndarray::Array3::<f32>::from_shape_fn((10, 4, 4), |(i, j, _)| {
            f32::from(u8::from(i == 2 || (i == 3 && j < 2)))
        });
        let b = ndarray::Array3::<f32>::from_shape_fn((10, 4, 4), |(i, _, _)| {
            f32::from(u8::from(i == 7))
        });
        for (name, roi) in [("a", &a), ("b", &b)] {
            let nii = write_nifti_f32(roi.view(), &eye, true);
            store.put(&format!("{base}/{name}.nii.gz"), nii.into()).await.unwrap();
        }
        let job = "name = \"roi\"\noutput = \"out\"\n[data]\nbrain = \"brain.npy\"\n\
                   mask = \"mask.nii.gz\"\n[rsa]\nmodels = { m = \"model.npy\" }\n\
                   rois = { a = \"a.nii.gz\", b = \"b.nii.gz\" }\n\
                   [permutation]\nn = 20\n";
        let spec = JobSpec::from_toml(job, "job.toml", base).unwrap();
        let run = JobRun::prepare(&store, spec, "r1".into()).await.unwrap();
        let whole = Arc::new(Executor::new(store.clone()));
        let bounded = Arc::new(Executor { whole_brain_bytes: 0, ..Executor::new(store) });
        let (loaded, whole_reads) = brainfit_io::counting_reads(whole.load(&run, 0)).await;
        let loaded = loaded.unwrap();
        assert!(loaded.brain.is_some() && loaded.columns.is_none(), "7.5 kB: read whole");
        let (loaded, bounded_reads) = brainfit_io::counting_reads(bounded.load(&run, 0)).await;
        let loaded = loaded.unwrap();
        assert!(loaded.brain.is_none(), "the whole brain is not read");
        let columns = loaded.columns.as_ref().expect("the ROIs' columns");
        assert_eq!(columns.dim(), (12, 40), "24 + 16 voxels");
        let a_then_b: Vec<Vec<usize>> = vec![(0..24).collect(), (24..40).collect()];
        assert_eq!(loaded.roi_columns, a_then_b);
        // the same reads, but for the brain: its header (the probe reads this small file
        // whole) and then 12 rows of two runs, 96 and 64 bytes, too far apart to merge (224
        // bytes within a row, 256 between rows): 24 ranges of 1,920 bytes in all
        assert_eq!(bounded_reads.requests, whole_reads.requests + 24);
        assert_eq!(bounded_reads.bytes, whole_reads.bytes + 1920);
        let run = Arc::new(run);
        for t in 0..run.tasks.len() {
            let from_whole = whole.execute(run.clone(), t, Abandon::default()).await.unwrap();
            let from_columns = bounded.execute(run.clone(), t, Abandon::default()).await.unwrap();
            assert_eq!(from_whole.encode(), from_columns.encode(), "task {t}");
        }
    }
}
