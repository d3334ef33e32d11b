//! Extraction and assembly tasks: images through the network, layers into feature spaces.
//!
//! An extraction task reads its images, preprocesses them, runs the network (built once per
//! process and job) and writes each layer's activations as one object in column blocks
//! ([`brainfit_job::extract::activation_url`]). An assembly task then streams those objects,
//! a block of units at a time where it compresses: PCA partial fits go through the reference
//! images' batches in a fixed order, so the fitted model is the same bytes whatever the number
//! of workers, and neither the activations nor the components are ever held whole — the
//! components live in a local scratch file between partial fits. Unlike the analyses, these
//! tasks interleave reads and computation, so they run on a blocking thread that waits for
//! each read on the runtime.

use crate::{Abandon, JobContext, Result, WorkerError};
use brainfit_io::{NpyElement, Store, npy_header};
use brainfit_job::extract::{
    ACTIVATION_BLOCK, CompressSpec, ExtractInventory, ExtractSpec, ImageSource, LayerInventory,
    activation_url, block_bytes, block_values, task_ranges, to_blocks,
};
use brainfit_job::{JobError, Part, Task};
use brainfit_kernels::compress::{ComponentStore, IncrementalPca, RandomProjection, batches};
use brainfit_kernels::linalg::Backend;
use ndarray::{Array1, Array2, Array3, ArrayView2, s};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::runtime::Handle;

fn parts(job: &JobContext) -> Result<(&ExtractSpec, &ExtractInventory)> {
    let spec = job.spec.extract.as_ref();
    let inv = job.inventory.extraction.as_ref();
    spec.zip(inv).ok_or_else(|| {
        JobError::Corrupt("an extraction task in a job without [extract]".into()).into()
    })
}

fn corrupt(message: String) -> WorkerError {
    JobError::Corrupt(message).into()
}

/// Runs an extraction or assembly task.
pub(crate) async fn execute(
    executor: &Arc<crate::execute::Executor>,
    job: Arc<JobContext>,
    task: usize,
    abandon: Abandon,
) -> Result<Part> {
    match job.tasks[task].clone() {
        Task::Extract { reference, images } => {
            extract(executor, job, reference, images, abandon).await
        }
        Task::Assemble { layer } => {
            let store = executor.store().clone();
            let handle = Handle::current();
            tokio::task::spawn_blocking(move || assemble(&store, &handle, &job, &layer, &abandon))
                .await
                .map_err(|e| WorkerError::Panic(e.to_string()))?
        }
        other => Err(corrupt(format!("{} is not an extraction task", other.key()))),
    }
}

/// Reads the raw pixels of images `range` of `source`: one file each, or one range of an
/// `.npy`.
async fn read_images(
    store: &Store,
    source: &ImageSource,
    range: [usize; 2],
) -> Result<Vec<(String, Vec<u8>)>> {
    match source {
        ImageSource::Files(files) => {
            let mut out = Vec::with_capacity(range[1] - range[0]);
            for url in &files[range[0]..range[1]] {
                out.push((url.clone(), store.get(url).await?.to_vec()));
            }
            Ok(out)
        }
        ImageSource::Npy { url, height, width, data_offset, .. } => {
            let image_bytes = (height * width * 3) as u64;
            let start = *data_offset as u64 + range[0] as u64 * image_bytes;
            let bytes = store
                .get_range(url, start..start + (range[1] - range[0]) as u64 * image_bytes)
                .await?;
            Ok(bytes
                .chunks_exact(image_bytes as usize)
                .enumerate()
                .map(|(i, c)| (format!("{url} [image {}]", range[0] + i), c.to_vec()))
                .collect())
        }
    }
}

async fn extract(
    executor: &Arc<crate::execute::Executor>,
    job: Arc<JobContext>,
    reference: bool,
    images: [usize; 2],
    abandon: Abandon,
) -> Result<Part> {
    let (spec, inv) = parts(&job)?;
    let store = executor.store();
    let source = if reference { inv.reference.as_ref() } else { Some(&inv.stimuli) }
        .ok_or_else(|| corrupt("a reference extraction task without reference images".into()))?;
    let model = match executor.networks.get_built(&job.id) {
        Some(_) => None,
        None => Some(store.get(&spec.model).await?),
    };
    let raw = read_images(store, source, images).await?;
    abandon.check()?;
    let npy = matches!(source, ImageSource::Npy { .. });
    let (height, width) = match source {
        ImageSource::Npy { height, width, .. } => (*height, *width),
        ImageSource::Files(_) => (0, 0),
    };
    let me = executor.clone();
    let job2 = job.clone();
    let activations = tokio::task::spawn_blocking(move || -> Result<Vec<Array2<f32>>> {
        let (spec, inv) = parts(&job2)?;
        let nodes: Vec<String> = inv.layers.iter().map(|l| l.node.clone()).collect();
        let network = me.networks.get_or_build(job2.id.clone(), || {
            let bytes = model.as_deref().unwrap_or(&[]);
            Ok(brainfit_extract::Network::load(
                bytes,
                &spec.model,
                &nodes,
                spec.batch,
                Some(inv.size),
            )
            .map_err(JobError::from)?)
        })?;
        let preprocessing = inv.preprocessing(spec);
        let mut inputs = Vec::with_capacity(raw.len());
        for (name, bytes) in &raw {
            let pixels = if npy {
                Array3::from_shape_vec((height, width, 3), bytes.clone())
                    .map_err(|e| corrupt(format!("{name}: {e}")))?
            } else {
                brainfit_extract::decode_image(bytes, name).map_err(JobError::from)?
            };
            inputs.push(
                brainfit_kernels::image::preprocess(pixels.view(), &preprocessing)
                    .map_err(|e| JobError::Input { url: name.clone(), message: e.to_string() })?,
            );
        }
        abandon.check()?;
        Ok(network.run(&inputs).map_err(JobError::from)?)
    })
    .await
    .map_err(|e| WorkerError::Panic(e.to_string()))??;
    let run_url = job.run_url();
    for (layer, x) in inv.layers.iter().zip(&activations) {
        if let Some((row, col)) = first_non_finite(x.view()) {
            return Err(JobError::Input {
                url: spec.model.clone(),
                message: format!(
                    "layer {:?} gives a non-finite value for image {} (unit {col})",
                    layer.node,
                    images[0] + row
                ),
            }
            .into());
        }
        let url = activation_url(&run_url, reference, &layer.name, images);
        store.put(&url, to_blocks(x.view()).into()).await?;
    }
    Ok(Part::new())
}

fn first_non_finite(x: ArrayView2<'_, f32>) -> Option<(usize, usize)> {
    x.indexed_iter().find(|(_, v)| !v.is_finite()).map(|(i, _)| i)
}

/// The activation objects of one image set of a layer, in image order: `(url, images)`.
fn objects(
    job: &JobContext,
    inv: &ExtractInventory,
    reference: bool,
    layer: &str,
) -> Vec<(String, [usize; 2])> {
    let n = if reference {
        inv.reference.as_ref().map_or(0, ImageSource::len)
    } else {
        inv.stimuli.len()
    };
    task_ranges(n, inv.images_per_task)
        .into_iter()
        .map(|r| (activation_url(&job.run_url(), reference, layer, r), r))
        .collect()
}

/// The `n` stimuli's compressed features `[n, k]`: `transform(rows, read)` compresses one object's
/// `rows` images, reading its activations a block of units at a time through `read`.
fn transform_stimuli(
    store: &Store,
    handle: &Handle,
    stimuli: &[(String, [usize; 2])],
    layer: &LayerInventory,
    (n, k): (usize, usize),
    abandon: &Abandon,
    mut transform: impl FnMut(
        usize,
        &mut dyn FnMut(Range<usize>) -> std::result::Result<Array2<f64>, JobError>,
    ) -> Result<Array2<f64>>,
) -> Result<Array2<f64>> {
    let mut y = Array2::<f64>::zeros((n, k));
    for object in stimuli {
        let r = object.1;
        let object = std::slice::from_ref(object);
        let mut read = |cols| read_block(store, handle, object, layer.units, r[0]..r[1], cols);
        let part = transform(r[1] - r[0], &mut read)?;
        y.slice_mut(s![r[0]..r[1], ..]).assign(&part);
        abandon.check()?;
    }
    Ok(y)
}

/// Reads column block `block` (`cols` of the layer) of rows `rows` (image indices) of an
/// image set, from the objects that hold them.
fn read_block(
    store: &Store,
    handle: &Handle,
    objects: &[(String, [usize; 2])],
    units: usize,
    rows: Range<usize>,
    cols: Range<usize>,
) -> std::result::Result<Array2<f64>, JobError> {
    if !cols.start.is_multiple_of(ACTIVATION_BLOCK) || cols.len() > ACTIVATION_BLOCK {
        return Err(JobError::Corrupt(format!("columns {cols:?} are not one activation block")));
    }
    let block = cols.start / ACTIVATION_BLOCK;
    let mut out = Array2::<f64>::zeros((rows.len(), cols.len()));
    for (url, r) in objects.iter().filter(|(_, r)| r[0] < rows.end && r[1] > rows.start) {
        let n = r[1] - r[0];
        let bytes = handle.block_on(store.get_range(url, block_bytes(n, units, block)))?;
        let values = block_values(&bytes, n, cols.len(), url)?;
        let (lo, hi) = (rows.start.max(r[0]), rows.end.min(r[1]));
        out.slice_mut(s![lo - rows.start..hi - rows.start, ..])
            .assign(&values.slice(s![lo - r[0]..hi - r[0], ..]));
    }
    Ok(out)
}

/// Components between partial fits, in a local scratch file laid out by column block (each
/// block's `k × width` values contiguous, f64).
struct ScratchComponents {
    file: std::fs::File,
    k: usize,
}

impl ScratchComponents {
    fn new(k: usize) -> std::result::Result<Self, JobError> {
        let file = tempfile::tempfile().map_err(|e| scratch_error(&e))?;
        Ok(ScratchComponents { file, k })
    }

    fn offset(&self, cols: &Range<usize>) -> u64 {
        (self.k * cols.start * 8) as u64
    }
}

impl ScratchComponents {
    /// Writes component `row`'s values of the units `cols` (one block).
    fn write_row(
        &mut self,
        row: usize,
        cols: Range<usize>,
        values: &[f64],
    ) -> std::result::Result<(), JobError> {
        let mut bytes = Vec::with_capacity(values.len() * 8);
        values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        let offset = self.offset(&cols) + (row * cols.len() * 8) as u64;
        self.file.write_all_at(&bytes, offset).map_err(|e| scratch_error(&e))
    }
}

fn scratch_error(e: &std::io::Error) -> JobError {
    JobError::Corrupt(format!("the local scratch file of the PCA components: {e}"))
}

impl ComponentStore for ScratchComponents {
    type Error = JobError;

    fn read(&mut self, cols: Range<usize>) -> std::result::Result<Array2<f64>, JobError> {
        let mut bytes = vec![0u8; self.k * cols.len() * 8];
        self.file.read_exact_at(&mut bytes, self.offset(&cols)).map_err(|e| scratch_error(&e))?;
        let values = bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Array2::from_shape_vec((self.k, cols.len()), values)
            .map_err(|e| JobError::Corrupt(e.to_string()))
    }

    fn write(
        &mut self,
        cols: Range<usize>,
        values: ArrayView2<'_, f64>,
    ) -> std::result::Result<(), JobError> {
        if values.nrows() != self.k {
            // the first partial fit writes k rows from the start: nothing else is stored
            return Err(JobError::Corrupt(format!(
                "{} component rows for a store of {}",
                values.nrows(),
                self.k
            )));
        }
        let mut bytes = Vec::with_capacity(values.len() * 8);
        values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        self.file.write_all_at(&bytes, self.offset(&cols)).map_err(|e| scratch_error(&e))
    }
}

/// Writes one layer's feature space (and its fitted PCA model).
fn assemble(
    store: &Store,
    handle: &Handle,
    job: &JobContext,
    name: &str,
    abandon: &Abandon,
) -> Result<Part> {
    let (spec, inv) = parts(job)?;
    let layer = inv
        .layers
        .iter()
        .find(|l| l.name == name)
        .ok_or_else(|| corrupt(format!("no extracted layer {name:?}")))?;
    let stimuli = objects(job, inv, false, name);
    let n = inv.stimuli.len();
    let features_url = ExtractSpec::feature_url(&job.spec.output, name);
    match spec.compress.get(name) {
        None => {
            // as extracted: row order, float32
            let mut writer = handle.block_on(store.writer(&features_url))?;
            handle.block_on(writer.write(&npy_header::<f32>(&[n, layer.units], false)))?;
            for (url, r) in &stimuli {
                let bytes = handle.block_on(store.get(url))?;
                let rows = r[1] - r[0];
                if bytes.len() != rows * layer.units * 4 {
                    return Err(corrupt(format!(
                        "{url}: {} bytes for {rows} × {} activations",
                        bytes.len(),
                        layer.units
                    )));
                }
                let mut row_major = vec![0u8; bytes.len()];
                for block in 0..layer.units.div_ceil(ACTIVATION_BLOCK) {
                    let range = block_bytes(rows, layer.units, block);
                    let start = block * ACTIVATION_BLOCK;
                    let width = ACTIVATION_BLOCK.min(layer.units - start);
                    let src = &bytes[range.start as usize..range.end as usize];
                    for i in 0..rows {
                        let to = (i * layer.units + start) * 4;
                        row_major[to..to + width * 4]
                            .copy_from_slice(&src[i * width * 4..(i + 1) * width * 4]);
                    }
                }
                handle.block_on(writer.write(&row_major))?;
                abandon.check()?;
            }
            handle.block_on(writer.finish())?;
        }
        Some(CompressSpec::Projection { components, kind, seed }) => {
            let projection = RandomProjection::new(
                *components,
                layer.units,
                *seed,
                kind.projection(layer.units),
            )
            .map_err(JobError::from)?;
            let y = transform_stimuli(
                store,
                handle,
                &stimuli,
                layer,
                (n, *components),
                abandon,
                |rows, read| {
                    Ok(projection.transform::<Backend, JobError>(rows, read, ACTIVATION_BLOCK)?)
                },
            )?;
            put_matrix(store, handle, &features_url, &y)?;
        }
        Some(CompressSpec::Pca { components, batch, model }) => {
            let (pca, mut components_store) = match model {
                None => {
                    let k = components.ok_or_else(|| corrupt("PCA without components".into()))?;
                    fit_pca(store, handle, job, inv, layer, k, *batch, abandon)?
                }
                Some(url) => load_pca(store, handle, url, layer)?,
            };
            let k = pca.n_components;
            let y = transform_stimuli(
                store,
                handle,
                &stimuli,
                layer,
                (n, k),
                abandon,
                |rows, read| {
                    Ok(pca.transform::<Backend, ScratchComponents>(
                        rows,
                        read,
                        &mut components_store,
                    )?)
                },
            )?;
            put_matrix(store, handle, &features_url, &y)?;
            if model.is_none() {
                write_model(
                    store,
                    handle,
                    &ExtractSpec::model_url(&job.spec.output, name),
                    &pca,
                    &mut components_store,
                )?;
            }
        }
    }
    Ok(Part::new())
}

/// Fits incremental PCA on the fitting images' activations of `layer`, batch by batch in
/// image order (scikit-learn's `IncrementalPCA.fit` batches).
#[allow(clippy::too_many_arguments)]
fn fit_pca(
    store: &Store,
    handle: &Handle,
    job: &JobContext,
    inv: &ExtractInventory,
    layer: &LayerInventory,
    k: usize,
    batch: Option<usize>,
    abandon: &Abandon,
) -> Result<(IncrementalPca, ScratchComponents)> {
    let reference = inv.reference.is_some();
    let objects = objects(job, inv, reference, &layer.name);
    let n = inv.fit_images().len();
    let batch = batch.unwrap_or_else(|| brainfit_job::extract::pca_batch_default(k)).min(n);
    let mut pca = IncrementalPca::new(k, layer.units, ACTIVATION_BLOCK).map_err(JobError::from)?;
    let mut scratch = ScratchComponents::new(k)?;
    for rows in batches(n, batch, k).map_err(JobError::from)? {
        pca.partial_fit::<Backend, ScratchComponents>(
            rows.len(),
            |cols| read_block(store, handle, &objects, layer.units, rows.clone(), cols),
            &mut scratch,
        )?;
        abandon.check()?;
    }
    Ok((pca, scratch))
}

/// Writes `y` as a float64 `.npy`.
fn put_matrix(store: &Store, handle: &Handle, url: &str, y: &Array2<f64>) -> Result<()> {
    let mut bytes = npy_header::<f64>(&[y.nrows(), y.ncols()], false);
    y.iter().for_each(|v| v.write_le(&mut bytes));
    handle.block_on(store.put(url, bytes.into()))?;
    Ok(())
}

/// The arrays of a saved PCA model, in `.npz` order.
const MODEL_ARRAYS: [&str; 8] = [
    "mean",
    "var",
    "components",
    "singular_values",
    "explained_variance",
    "explained_variance_ratio",
    "noise_variance",
    "n_samples_seen",
];

/// A synchronous writer into an object, for the zip encoder: bytes are gathered and sent a
/// few MB at a time, each send awaited on the runtime from this blocking thread.
struct BlockingObjectWriter<'a> {
    handle: &'a Handle,
    writer: brainfit_io::ObjectWriter,
    buffer: Vec<u8>,
}

/// Bytes a [`BlockingObjectWriter`] gathers before sending them.
const SEND_BYTES: usize = 8 << 20;

impl BlockingObjectWriter<'_> {
    fn send(&mut self) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            self.handle
                .block_on(self.writer.write(&self.buffer))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.buffer.clear();
        }
        Ok(())
    }
}

impl Write for BlockingObjectWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= SEND_BYTES {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(()) // sent in SEND_BYTES pieces, the rest at the end
    }
}

/// Saves the fitted model as an `.npz` scikit-learn users can load (`components` `[k, units]`
/// in Fortran order: written a column block at a time), streamed into the object (stored zip
/// members, ZIP64 where large; nothing is held whole, nothing written to local disk).
fn write_model(
    store: &Store,
    handle: &Handle,
    url: &str,
    pca: &IncrementalPca,
    components: &mut ScratchComponents,
) -> Result<()> {
    let io = |e: std::io::Error| corrupt(format!("writing the PCA model {url}: {e}"));
    let zip_err = |e: zip::result::ZipError| corrupt(format!("writing the PCA model {url}: {e}"));
    let writer = handle.block_on(store.writer(url))?;
    let mut zip = zip::ZipWriter::new_stream(BlockingObjectWriter {
        handle,
        writer,
        buffer: Vec::with_capacity(SEND_BYTES),
    });
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    let vector = |v: &Array1<f64>| {
        let mut b = npy_header::<f64>(&[v.len()], false);
        v.iter().for_each(|x| x.write_le(&mut b));
        b
    };
    for name in MODEL_ARRAYS {
        zip.start_file(format!("{name}.npy"), options).map_err(zip_err)?;
        match name {
            "mean" => zip.write_all(&vector(&pca.mean)),
            "var" => zip.write_all(&vector(&pca.var)),
            "singular_values" => zip.write_all(&vector(&pca.singular_values)),
            "explained_variance" => zip.write_all(&vector(&pca.explained_variance)),
            "explained_variance_ratio" => zip.write_all(&vector(&pca.explained_variance_ratio)),
            "noise_variance" => {
                let mut b = npy_header::<f64>(&[], false);
                pca.noise_variance.write_le(&mut b);
                zip.write_all(&b)
            }
            "n_samples_seen" => {
                let mut b = npy_header::<i64>(&[], false);
                (pca.n_samples_seen as i64).write_le(&mut b);
                zip.write_all(&b)
            }
            _ => {
                zip.write_all(&npy_header::<f64>(&[pca.n_components, pca.n_features], true))
                    .map_err(io)?;
                for start in (0..pca.n_features).step_by(ACTIVATION_BLOCK) {
                    let cols = start..(start + ACTIVATION_BLOCK).min(pca.n_features);
                    let block = pca.components(components, cols)?;
                    let mut b = Vec::with_capacity(block.len() * 8);
                    // Fortran order: each unit's k values in turn
                    block.t().iter().for_each(|v| v.write_le(&mut b));
                    zip.write_all(&b).map_err(io)?;
                }
                Ok(())
            }
        }
        .map_err(io)?;
    }
    let mut out = zip.finish().map_err(zip_err)?.into_inner();
    out.send().map_err(io)?;
    handle.block_on(out.writer.finish())?;
    Ok(())
}

/// Reads a 1-D float member of a saved model.
fn model_vector(
    store: &Store,
    handle: &Handle,
    url: &str,
    key: &str,
    len: usize,
) -> Result<Array1<f64>> {
    let reader = brainfit_io::BlockingReader::new(store, handle.clone(), url)?;
    let values = brainfit_io::with_npz_member(reader, url, key, |h, data| {
        if h.shape.iter().product::<usize>() != len {
            return Err(brainfit_io::IoError::Npz {
                name: url.to_string(),
                reason: format!("{key} has shape {:?}, not {len} values", h.shape),
            });
        }
        read_floats(&h.dtype, data, len, url, key)
    })?;
    Ok(Array1::from(values))
}

/// The next `len` values (little-endian float64 or float32: `dtype`) of a member, as f64, all
/// finite.
fn read_floats(
    dtype: &str,
    data: &mut dyn std::io::Read,
    len: usize,
    url: &str,
    key: &str,
) -> brainfit_io::Result<Vec<f64>> {
    let bad = |reason: String| brainfit_io::IoError::Npz { name: url.to_string(), reason };
    let width = match dtype {
        "<f8" => 8,
        "<f4" => 4,
        other => {
            return Err(bad(format!(
                "{key} holds {other}; a PCA model holds little-endian floats"
            )));
        }
    };
    let mut bytes = vec![0u8; len * width];
    data.read_exact(&mut bytes).map_err(|e| bad(format!("{key} is truncated: {e}")))?;
    let values: Vec<f64> = if width == 8 {
        bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
    } else {
        bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))))
            .collect()
    };
    if values.iter().any(|v| !v.is_finite()) {
        return Err(bad(format!("{key} holds NaN or infinite values")));
    }
    Ok(values)
}

/// Loads a saved PCA model (an `.npz` of [`write_model`], or scikit-learn's attributes saved
/// with `numpy.savez`) for `layer`: its mean, and its components streamed a block of units at
/// a time into a scratch store (C or Fortran order), never whole in memory.
fn load_pca(
    store: &Store,
    handle: &Handle,
    url: &str,
    layer: &LayerInventory,
) -> Result<(IncrementalPca, ScratchComponents)> {
    let p = layer.units;
    let reader = brainfit_io::BlockingReader::new(store, handle.clone(), url)?;
    let k = brainfit_io::with_npz_member(reader, url, "components", |h, _| match h.shape[..] {
        [k, units] if units == p && k > 0 => Ok(k),
        _ => Err(brainfit_io::IoError::Npz {
            name: url.to_string(),
            reason: format!(
                "components has shape {:?}; layer {:?} has {p} units",
                h.shape, layer.node
            ),
        }),
    })?;
    let mut pca = IncrementalPca::new(k, p, ACTIVATION_BLOCK).map_err(JobError::from)?;
    pca.mean = model_vector(store, handle, url, "mean", p)?;
    pca.explained_variance = model_vector(store, handle, url, "explained_variance", k)?;
    pca.signs = Array1::ones(k); // saved with their signs applied
    pca.singular_values = Array1::ones(k);
    pca.explained_variance_ratio = Array1::zeros(k);
    pca.var = Array1::zeros(p);
    pca.n_samples_seen = 1; // applied, not refitted
    let mut scratch = ScratchComponents::new(k)?;
    let reader = brainfit_io::BlockingReader::new(store, handle.clone(), url)?;
    brainfit_io::with_npz_member(reader, url, "components", |h, data| {
        let io = |e: JobError| brainfit_io::IoError::Npz {
            name: url.to_string(),
            reason: e.to_string(),
        };
        if h.fortran_order {
            // each unit's k values in turn: a block of units is k × width, transposed
            for start in (0..p).step_by(ACTIVATION_BLOCK) {
                let cols = start..(start + ACTIVATION_BLOCK).min(p);
                let values = read_floats(&h.dtype, data, k * cols.len(), url, "components")?;
                let block = Array2::from_shape_vec((cols.len(), k), values)
                    .map_err(|e| io(JobError::Corrupt(e.to_string())))?;
                scratch.write(cols, block.t()).map_err(io)?;
            }
        } else {
            // row by row: each component's values go to every block
            for i in 0..k {
                let row = read_floats(&h.dtype, data, p, url, "components")?;
                for start in (0..p).step_by(ACTIVATION_BLOCK) {
                    let cols = start..(start + ACTIVATION_BLOCK).min(p);
                    scratch.write_row(i, cols.clone(), &row[cols]).map_err(io)?;
                }
            }
        }
        Ok(())
    })?;
    Ok((pca, scratch))
}
