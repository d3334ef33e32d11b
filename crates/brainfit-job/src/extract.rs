//! `[extract]` and `[compress]`: a job's feature spaces made from the stimulus images.
//!
//! The images go through an ONNX network in extraction tasks (image ranges, stage 0), each
//! writing its layers' activations; one assembly task per layer (stage 1) then writes the
//! layer as a feature space — as extracted, or compressed by PCA fitted on reference images
//! (streamed through scikit-learn's incremental PCA), or by a random projection. The analyses
//! (stage 2) read those feature spaces like any `[features]` entry. Shapes are known before
//! anything runs (the model is typed for the images' size), so the whole job is planned, and
//! checked, at once.

use crate::file::{CompressFile, CompressMethodFile, DensityFile, ExtractFile, JobFile};
use crate::{JobError, Result};
use brainfit_io::{Store, join_url};
use brainfit_kernels::compress::{Projection, sparse_density_auto};
use brainfit_kernels::image::{ChannelOrder, Interpolation, Layout, Preprocessing};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where, below `output`, the extracted feature spaces and fitted compressions are written
/// while a run computes (the output's lock keeps runs apart); the run's end publishes them
/// as [`FEATURES_DIR`] and [`COMPRESS_DIR`].
pub const WORK_DIR: &str = ".brainfit/extract";
/// The published feature spaces: `features/<space>.npy`.
pub const FEATURES_DIR: &str = "features";
/// The published PCA models: `compress/<space>.npz`.
pub const COMPRESS_DIR: &str = "compress";

/// Most images per forward pass.
pub const MAX_BATCH: usize = 1024;
/// Activations an extraction task holds at once (all its layers, float32), at most.
pub const TASK_ACTIVATION_BYTES: usize = 512 << 20;
/// Most images per extraction task.
pub const MAX_IMAGES_PER_TASK: usize = 4096;
/// Most components a compression may keep.
pub const MAX_COMPONENTS: usize = 100_000;
/// Most images a job may extract (stimuli and reference together).
pub const MAX_IMAGES: usize = 10_000_000;

/// How a layer is compressed.
#[derive(Debug, Clone, PartialEq)]
pub enum CompressSpec {
    /// Incremental PCA fitted on the reference images, or a fitted model applied.
    Pca {
        /// Components kept (`None` with `model`: the model's).
        components: Option<usize>,
        /// Reference images per partial fit (`None`: [`pca_batch_default`]).
        batch: Option<usize>,
        /// A fitted model (`.npz`) applied instead of fitting.
        model: Option<String>,
    },
    /// A seeded random projection (never stored: regenerated from the seed).
    Projection {
        /// Components.
        components: usize,
        /// Gaussian, or sparse with its density (`None`: 1/sqrt(units)).
        kind: ProjectionKind,
        /// Seed of the matrix.
        seed: u64,
    },
}

/// The random projection's distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProjectionKind {
    /// Gaussian entries.
    Gaussian,
    /// Sparse entries; density given, or `None` for scikit-learn's `"auto"`.
    Sparse(Option<f64>),
}

impl ProjectionKind {
    /// The kernel's projection for a layer of `units` units.
    pub fn projection(self, units: usize) -> Projection {
        match self {
            ProjectionKind::Gaussian => Projection::Gaussian,
            ProjectionKind::Sparse(d) => {
                Projection::Sparse { density: d.unwrap_or_else(|| sparse_density_auto(units)) }
            }
        }
    }
}

/// The default PCA batch: scikit-learn requires at least `components` rows per partial fit;
/// brainfit takes at least 256 for a stable update.
pub fn pca_batch_default(components: usize) -> usize {
    components.max(256)
}

/// Checked `[extract]` (with the `[compress]` tables of its layers).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractSpec {
    /// The ONNX model URL.
    pub model: String,
    /// The stimuli: a folder of images or an `.npy`.
    pub images: String,
    /// The images PCA is fitted on, if not the stimuli.
    pub reference: Option<String>,
    /// Feature space name -> node or tensor name.
    pub layers: BTreeMap<String, String>,
    /// Images per forward pass.
    pub batch: usize,
    /// Images per extraction task, if the job fixes it (else chosen from the layers' size).
    pub images_per_task: Option<usize>,
    /// Preprocessing; height and width 0 mean the model's input size, and the layout is the
    /// model's.
    pub preprocess: Preprocessing,
    /// Compression per feature space.
    pub compress: BTreeMap<String, CompressSpec>,
}

impl ExtractSpec {
    /// Whether a reference set is extracted (PCA fitted on images other than the stimuli).
    pub fn fits_on_reference(&self) -> bool {
        self.reference.is_some() && self.compress.values().any(Self::fits)
    }

    /// Whether a compression is fitted in this job (PCA without a given model).
    pub fn fits(c: &CompressSpec) -> bool {
        matches!(c, CompressSpec::Pca { model: None, .. })
    }

    /// The URL a run writes feature space `name` to (below `output`).
    pub fn feature_url(output: &str, name: &str) -> String {
        join_url(output, &format!("{WORK_DIR}/{FEATURES_DIR}/{name}.npy"))
    }

    /// The URL a run writes the PCA model of `name` to (below `output`).
    pub fn model_url(output: &str, name: &str) -> String {
        join_url(output, &format!("{WORK_DIR}/{COMPRESS_DIR}/{name}.npz"))
    }

    /// Every URL `[extract]` and `[compress]` read.
    pub fn urls(&self) -> Vec<&str> {
        let mut urls = vec![self.model.as_str(), self.images.as_str()];
        urls.extend(self.reference.as_deref());
        for c in self.compress.values() {
            if let CompressSpec::Pca { model: Some(m), .. } = c {
                urls.push(m);
            }
        }
        urls
    }
}

type Checked<T> = std::result::Result<T, String>;

/// `[extract]` and `[compress]` of a job file (`None` without `[extract]`).
pub(crate) fn parse_extract(
    file: &JobFile,
    resolve: &impl Fn(&str) -> String,
) -> Checked<Option<ExtractSpec>> {
    let Some(e) = &file.extract else {
        if let Some(name) = file.compress.keys().next() {
            return Err(format!("[compress.{name}] compresses an extracted layer: add [extract]"));
        }
        return Ok(None);
    };
    parse(e, &file.compress, &file.features, resolve).map(Some)
}

fn parse(
    e: &ExtractFile,
    compress: &BTreeMap<String, CompressFile>,
    features: &BTreeMap<String, String>,
    resolve: &impl Fn(&str) -> String,
) -> Checked<ExtractSpec> {
    if e.layers.is_empty() {
        return Err("[extract] layers lists no layer: name = \"node or tensor name\"".into());
    }
    for (name, node) in &e.layers {
        crate::spec::check_name("[extract] layers", name)?;
        if crate::outputs::layout::ENCODING_FILES.contains(&name.as_str()) {
            return Err(format!(
                "[extract] layers: {name:?} is the name of an output file below encoding/; rename the layer"
            ));
        }
        if features.contains_key(name) {
            return Err(format!("[extract] layers: {name:?} is also a [features] entry"));
        }
        if node.is_empty() || node.len() > 1000 {
            return Err(format!("[extract] layers: {name:?} needs a node name (1 to 1000 bytes)"));
        }
    }
    let batch = e.batch.unwrap_or(16);
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(format!("[extract] batch must be 1 to {MAX_BATCH} images, got {batch}"));
    }
    if let Some(n) = e.images_per_task
        && !(1..=MAX_IMAGES_PER_TASK).contains(&n)
    {
        return Err(format!(
            "[extract] images_per_task must be 1 to {MAX_IMAGES_PER_TASK}, got {n}"
        ));
    }
    let p = e.preprocess.as_ref();
    let defaults = Preprocessing::default();
    let (height, width) = p.and_then(|p| p.size).unwrap_or((0, 0));
    if p.and_then(|p| p.size).is_some()
        && (!(1..=8192).contains(&height) || !(1..=8192).contains(&width))
    {
        return Err(format!(
            "[extract.preprocess] size must be 1 to 8192 pixels a side, got [{height}, {width}]"
        ));
    }
    let crop_fraction = p.and_then(|p| p.crop_fraction).unwrap_or(defaults.crop_fraction);
    if !(crop_fraction > 0.0 && crop_fraction <= 1.0) {
        return Err(format!(
            "[extract.preprocess] crop_fraction must be in (0, 1], got {crop_fraction}"
        ));
    }
    let resize_shorter = p.and_then(|p| p.resize_shorter);
    if resize_shorter.is_some_and(|r| !(1..=8192).contains(&r)) {
        return Err("[extract.preprocess] resize_shorter must be 1 to 8192 pixels".into());
    }
    let std = p.and_then(|p| p.std).unwrap_or(defaults.std);
    let mean = p.and_then(|p| p.mean).unwrap_or(defaults.mean);
    if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
        return Err("[extract.preprocess] mean must be finite and std finite and positive".into());
    }
    let preprocess = Preprocessing {
        resize_shorter,
        crop_fraction,
        height,
        width,
        interpolation: p.and_then(|p| p.interpolation).unwrap_or(Interpolation::Bilinear),
        divisor: if p.and_then(|p| p.scale_to_unit).unwrap_or(true) { 255.0 } else { 1.0 },
        mean,
        std,
        channels: p.and_then(|p| p.channels).unwrap_or(ChannelOrder::Rgb),
        layout: Layout::Nchw,
    };
    let mut compress_specs = BTreeMap::new();
    for (name, c) in compress {
        if !e.layers.contains_key(name) {
            return Err(format!(
                "[compress.{name}]: {name:?} is not an [extract] layer (compression applies to extracted layers)"
            ));
        }
        compress_specs.insert(name.clone(), parse_compress(name, c, resolve)?);
    }
    if e.reference.is_some() && !compress_specs.values().any(ExtractSpec::fits) {
        return Err("[extract] reference images are for fitting PCA: add [compress.<layer>] method = \"pca\"".into());
    }
    Ok(ExtractSpec {
        model: resolve(&e.model),
        images: resolve(&e.images),
        reference: e.reference.as_deref().map(resolve),
        layers: e.layers.clone(),
        batch,
        images_per_task: e.images_per_task,
        preprocess,
        compress: compress_specs,
    })
}

fn parse_compress(
    name: &str,
    c: &CompressFile,
    resolve: &impl Fn(&str) -> String,
) -> Checked<CompressSpec> {
    let table = format!("[compress.{name}]");
    let not_for = |key: &str, given: bool, method: &str| -> Checked<()> {
        if given {
            Err(format!("{table} {key} does not apply to method = \"{method}\""))
        } else {
            Ok(())
        }
    };
    if let Some(k) = c.components
        && !(1..=MAX_COMPONENTS).contains(&k)
    {
        return Err(format!("{table} components must be 1 to {MAX_COMPONENTS}, got {k}"));
    }
    match c.method {
        CompressMethodFile::Pca => {
            not_for("density", c.density.is_some(), "pca")?;
            not_for("seed", c.seed.is_some(), "pca")?;
            if c.model.is_some() {
                not_for(
                    "components (the model fixes them)",
                    c.components.is_some(),
                    "pca with model",
                )?;
                not_for("batch (nothing is fitted)", c.batch.is_some(), "pca with model")?;
            } else if c.components.is_none() {
                return Err(format!(
                    "{table} method = \"pca\" needs components (or a fitted model)"
                ));
            }
            if let (Some(b), Some(k)) = (c.batch, c.components)
                && (b < k || b > 1_000_000)
            {
                return Err(format!(
                    "{table} batch must be at least components ({k}; scikit-learn's rule) and at most 1000000, got {b}"
                ));
            }
            Ok(CompressSpec::Pca {
                components: c.components,
                batch: c.batch,
                model: c.model.as_deref().map(resolve),
            })
        }
        CompressMethodFile::SparseRandomProjection
        | CompressMethodFile::GaussianRandomProjection => {
            let method = if c.method == CompressMethodFile::GaussianRandomProjection {
                "gaussian_random_projection"
            } else {
                "sparse_random_projection"
            };
            not_for("batch", c.batch.is_some(), method)?;
            not_for("model", c.model.is_some(), method)?;
            let components = c
                .components
                .ok_or_else(|| format!("{table} method = \"{method}\" needs components"))?;
            let kind = if c.method == CompressMethodFile::GaussianRandomProjection {
                not_for("density", c.density.is_some(), method)?;
                ProjectionKind::Gaussian
            } else {
                ProjectionKind::Sparse(match &c.density {
                    None => None,
                    Some(DensityFile::Named(s)) if s == "auto" => None,
                    Some(DensityFile::Value(d)) if *d > 0.0 && *d <= 1.0 => Some(*d),
                    Some(_) => {
                        return Err(format!("{table} density must be in (0, 1] or \"auto\""));
                    }
                })
            };
            Ok(CompressSpec::Projection { components, kind, seed: c.seed.unwrap_or(0) })
        }
    }
}

/// A set of images: files in name order, or the rows of an `.npy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageSource {
    /// PNG/JPEG files, in order.
    Files(Vec<String>),
    /// An `.npy` of `[n, height, width, 3]` uint8 (C order).
    Npy {
        /// Its URL.
        url: String,
        /// Images.
        n: usize,
        /// Height.
        height: usize,
        /// Width.
        width: usize,
        /// Byte offset of the pixel data.
        data_offset: usize,
    },
}

impl ImageSource {
    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            ImageSource::Files(f) => f.len(),
            ImageSource::Npy { n, .. } => *n,
        }
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One extracted layer, as inspected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInventory {
    /// Feature space name.
    pub name: String,
    /// Node or tensor name in the model.
    pub node: String,
    /// Per-image shape.
    pub shape: Vec<usize>,
    /// Values per image (the product of `shape`).
    pub units: usize,
    /// Features of the space the analyses see: `units`, or the components kept.
    pub features: usize,
}

/// What extraction works on, known before any task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractInventory {
    /// The stimuli.
    pub stimuli: ImageSource,
    /// The reference images PCA is fitted on, if not the stimuli.
    pub reference: Option<ImageSource>,
    /// Input height and width the network takes.
    pub size: (usize, usize),
    /// `true` for `[n, h, w, 3]` input, `false` for `[n, 3, h, w]`.
    pub nhwc: bool,
    /// The layers, in name order.
    pub layers: Vec<LayerInventory>,
    /// Images per extraction task.
    pub images_per_task: usize,
}

impl ExtractInventory {
    /// The preprocessing of `spec` completed with the model's size and layout.
    pub fn preprocessing(&self, spec: &ExtractSpec) -> Preprocessing {
        Preprocessing {
            height: self.size.0,
            width: self.size.1,
            layout: if self.nhwc { Layout::Nhwc } else { Layout::Nchw },
            ..spec.preprocess.clone()
        }
    }

    /// The images PCA is fitted on: the reference set, or the stimuli.
    pub fn fit_images(&self) -> &ImageSource {
        self.reference.as_ref().unwrap_or(&self.stimuli)
    }
}

fn input_err(url: &str, message: impl Into<String>) -> JobError {
    JobError::Input { url: url.to_string(), message: message.into() }
}

impl From<brainfit_extract::ExtractError> for JobError {
    fn from(e: brainfit_extract::ExtractError) -> Self {
        match e {
            brainfit_extract::ExtractError::Model { model, message } => {
                JobError::Input { url: model, message }
            }
            brainfit_extract::ExtractError::Image { image, message } => {
                JobError::Input { url: image, message }
            }
            brainfit_extract::ExtractError::Kernel(k) => JobError::Kernel(k),
        }
    }
}

/// Lists the images of `url`: an `.npy` (its header checked) or every object below a folder,
/// each of which must be a PNG or JPEG file (hidden files, starting with `.`, are skipped).
pub async fn list_images(store: &Store, url: &str) -> Result<ImageSource> {
    if url.to_ascii_lowercase().ends_with(".npy") {
        let size = store.size(url).await?;
        let head = store.get_range(url, 0..size.min(65_536)).await?;
        let h = brainfit_io::parse_npy_header(&head, url)?;
        if h.dtype != "|u1" || h.fortran_order || h.shape.len() != 4 || h.shape[3] != 3 {
            return Err(input_err(
                url,
                format!(
                    "images in an .npy must be uint8 [n, height, width, 3] in C order, got {} {:?}{}",
                    h.dtype,
                    h.shape,
                    if h.fortran_order { " (Fortran order)" } else { "" }
                ),
            ));
        }
        let (n, height, width) = (h.shape[0], h.shape[1], h.shape[2]);
        let need = h.data_offset as u64 + (n as u64) * (height as u64) * (width as u64) * 3;
        if size < need || n == 0 || height == 0 || width == 0 || n > MAX_IMAGES {
            return Err(input_err(
                url,
                format!(
                    "holds {size} bytes for images of shape {:?} (truncated or empty)",
                    h.shape
                ),
            ));
        }
        return Ok(ImageSource::Npy {
            url: url.to_string(),
            n,
            height,
            width,
            data_offset: h.data_offset,
        });
    }
    let files: Vec<String> = store
        .list(url)
        .await?
        .into_iter()
        .filter(|u| !u.rsplit('/').next().unwrap_or("").starts_with('.'))
        .collect();
    if let Some(other) = files.iter().find(|u| !brainfit_extract::is_image_name(u)) {
        return Err(input_err(
            other,
            "is not a PNG or JPEG file: an images folder holds only the stimuli (their order is the file names' order)",
        ));
    }
    if files.is_empty() {
        return Err(input_err(
            url,
            "holds no image (PNG or JPEG files, or an .npy of uint8 [n, h, w, 3])",
        ));
    }
    if files.len() > MAX_IMAGES {
        return Err(input_err(
            url,
            format!("holds {} images, more than {MAX_IMAGES}", files.len()),
        ));
    }
    Ok(ImageSource::Files(files))
}

/// Inspects `[extract]`: lists the images, types the model for its input size and reads the
/// layers' shapes, and checks every compression against them — before any task runs.
pub async fn inspect(store: &Store, spec: &ExtractSpec) -> Result<ExtractInventory> {
    let stimuli = list_images(store, &spec.images).await?;
    let reference = match &spec.reference {
        Some(url) if spec.fits_on_reference() => Some(list_images(store, url).await?),
        _ => None,
    };
    let model = store.get(&spec.model).await?;
    let size =
        (spec.preprocess.height > 0).then_some((spec.preprocess.height, spec.preprocess.width));
    let nodes: Vec<String> = spec.layers.values().cloned().collect();
    let name = spec.model.clone();
    let info = tokio::task::spawn_blocking(move || {
        brainfit_extract::inspect_model(&model, &name, &nodes, size)
    })
    .await
    .map_err(|e| JobError::Corrupt(format!("inspecting the model panicked: {e}")))??;
    let size = (info.input.height.unwrap_or(0), info.input.width.unwrap_or(0));
    let mut layers = Vec::new();
    for ((name, node), shape) in spec.layers.iter().zip(info.layers) {
        let units: usize = shape.iter().product();
        if units == 0 {
            return Err(input_err(&spec.model, format!("layer {node:?} ({name}) has no values")));
        }
        let fit_n = reference.as_ref().unwrap_or(&stimuli).len();
        let features = match spec.compress.get(name) {
            None => units,
            Some(CompressSpec::Projection { components, kind, .. }) => {
                if let ProjectionKind::Sparse(Some(d)) = kind
                    && *d * units as f64 * (*components as f64) < 1.0
                {
                    return Err(input_err(
                        &spec.model,
                        format!(
                            "[compress.{name}] density {d} leaves no non-zero entry in a {components} × {units} projection"
                        ),
                    ));
                }
                *components
            }
            Some(CompressSpec::Pca { components: Some(k), batch, model: None }) => {
                let batch = batch.unwrap_or_else(|| pca_batch_default(*k)).min(fit_n);
                if *k > units || *k > batch {
                    return Err(input_err(
                        &spec.model,
                        format!(
                            "[compress.{name}] keeps {k} components of layer {node:?}, which has {units} units, fitted on {fit_n} images in batches of {batch}: at most {} components",
                            units.min(batch)
                        ),
                    ));
                }
                *k
            }
            Some(CompressSpec::Pca { model: Some(url), .. }) => {
                let (k, p) = pca_model_shape(store, url).await?;
                if p != units {
                    return Err(input_err(
                        url,
                        format!("is a PCA of {p} units; layer {node:?} ({name}) has {units}"),
                    ));
                }
                k
            }
            Some(CompressSpec::Pca { components: None, model: None, .. }) => {
                return Err(JobError::Corrupt(format!("[compress.{name}] has no components")));
            }
        };
        layers.push(LayerInventory {
            name: name.clone(),
            node: node.clone(),
            shape,
            units,
            features,
        });
    }
    let all_units: usize = layers.iter().map(|l| l.units).sum();
    let per_task = match spec.images_per_task {
        Some(n) => {
            if n.saturating_mul(all_units).saturating_mul(4) > 4 * TASK_ACTIVATION_BYTES {
                return Err(input_err(
                    &spec.model,
                    format!(
                        "{n} images per task of {all_units} units (all layers) hold {} MB of activations; brainfit allows {} MB: lower [extract] images_per_task",
                        n * all_units * 4 / 1_000_000,
                        4 * TASK_ACTIVATION_BYTES / 1_000_000
                    ),
                ));
            }
            n
        }
        None => (TASK_ACTIVATION_BYTES / (4 * all_units)).clamp(1, 256),
    };
    Ok(ExtractInventory {
        stimuli,
        reference,
        size,
        nhwc: info.input.layout == Layout::Nhwc,
        layers,
        images_per_task: per_task,
    })
}

/// `(components, units)` of a fitted PCA model (`.npz` with `mean`, `explained_variance` and
/// `components` `[k, units]`), from the archive's directory and the members' headers alone
/// (range requests: a model of a big layer is gigabytes).
pub async fn pca_model_shape(store: &Store, url: &str) -> Result<(usize, usize)> {
    let (store, url, handle) = (store.clone(), url.to_string(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || -> Result<(usize, usize)> {
        let shape = |key: &str| -> Result<Vec<usize>> {
            let reader = brainfit_io::BlockingReader::new(&store, handle.clone(), &url)?;
            Ok(brainfit_io::with_npz_member(reader, &url, key, |h, _| Ok(h.shape.clone()))?)
        };
        let components = shape("components")?;
        let (k, p) = match components[..] {
            [k, p] if k > 0 && p > 0 => (k, p),
            _ => {
                return Err(input_err(&url, format!("components must be [k, units], got {components:?}")));
            }
        };
        if shape("mean")? != [p] || shape("explained_variance")? != [k] {
            return Err(input_err(
                &url,
                format!("is not a PCA model of {k} components of {p} units: mean must be [{p}] and explained_variance [{k}]"),
            ));
        }
        Ok((k, p))
    })
    .await
    .map_err(|e| JobError::Corrupt(format!("reading the PCA model panicked: {e}")))?
}

/// Units per column block of an activation object: the assembly reads a block of units of
/// many images with one range request, and fits PCA a block at a time.
pub const ACTIVATION_BLOCK: usize = 4096;

/// The URL, below the run's directory `run_url`, of the activations an extraction task wrote
/// for `layer`: little-endian float32, in column blocks of [`ACTIVATION_BLOCK`] units, each
/// block `rows × width` in row order ([`block_bytes`]).
pub fn activation_url(run_url: &str, reference: bool, layer: &str, images: [usize; 2]) -> String {
    let set = if reference { "reference" } else { "stimuli" };
    join_url(run_url, &format!("activations/{set}/{layer}/i{:08}-{:08}.f32", images[0], images[1]))
}

/// The byte range of column block `block` in an activation object of `rows × units`.
pub fn block_bytes(rows: usize, units: usize, block: usize) -> std::ops::Range<u64> {
    let start = block * ACTIVATION_BLOCK;
    let width = ACTIVATION_BLOCK.min(units - start);
    let offset = (rows * start * 4) as u64;
    offset..offset + (rows * width * 4) as u64
}

/// The image ranges of the extraction tasks of a set of `n` images.
pub fn task_ranges(n: usize, per_task: usize) -> Vec<[usize; 2]> {
    (0..n).step_by(per_task.max(1)).map(|s| [s, (s + per_task).min(n)]).collect()
}

/// Activations `[rows, units]` (row order) in the column-block layout of [`activation_url`].
pub fn to_blocks(x: ndarray::ArrayView2<'_, f32>) -> Vec<u8> {
    let (rows, units) = x.dim();
    let mut out = Vec::with_capacity(rows * units * 4);
    for start in (0..units).step_by(ACTIVATION_BLOCK) {
        let end = (start + ACTIVATION_BLOCK).min(units);
        for r in 0..rows {
            for v in x.row(r).slice(ndarray::s![start..end]) {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

/// One column block's bytes (`rows × width`, row order) as f64.
pub fn block_values(
    bytes: &[u8],
    rows: usize,
    width: usize,
    url: &str,
) -> Result<ndarray::Array2<f64>> {
    if bytes.len() != rows * width * 4 {
        return Err(JobError::Corrupt(format!(
            "{url}: a block of {rows} × {width} activations has {} bytes",
            bytes.len()
        )));
    }
    let values = bytes
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    ndarray::Array2::from_shape_vec((rows, width), values)
        .map_err(|e| JobError::Corrupt(format!("{url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_hold_each_column_range_contiguously() {
        let units = ACTIVATION_BLOCK + 3;
        let x = ndarray::Array2::from_shape_fn((2, units), |(r, c)| (r * units + c) as f32);
        let bytes = to_blocks(x.view());
        for block in 0..2 {
            let range = block_bytes(2, units, block);
            let width = if block == 0 { ACTIVATION_BLOCK } else { 3 };
            let b = block_values(&bytes[range.start as usize..range.end as usize], 2, width, "x")
                .unwrap();
            let start = block * ACTIVATION_BLOCK;
            let expect = x.slice(ndarray::s![.., start..start + width]).mapv(f64::from);
            assert_eq!(b, expect);
        }
        assert_eq!(task_ranges(5, 2), [[0, 2], [2, 4], [4, 5]]);
    }
}
