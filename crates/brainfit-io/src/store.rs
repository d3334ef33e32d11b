//! URL strings → `object_store` back ends.
//!
//! The job file names every input and output by a URL (DESIGN.md: "a bare path means a
//! local file"). This module is the one place that turns such strings into an
//! [`ObjectStore`] plus an object [`Path`], so that the rest of brainfit can read ranges,
//! write results atomically and commit task outputs with create-only puts without caring
//! where the bytes live.
//!
//! Supported in this build:
//! * bare paths (`data/x.npy`, `/abs/x.npy`; relative ones against the current directory),
//! * `file:///abs/path` (percent-encoded as usual for file URLs),
//! * `memory://NAME/path` — an in-process store per `NAME`, shared by every clone of a
//!   [`Store`]; used by embedded runs and tests,
//! * `s3://BUCKET/key` — Amazon S3 or any S3-compatible server, configured from the usual
//!   `AWS_*` environment variables (see the S3 section below),
//! * `gs://BUCKET/key` — Google Cloud Storage, configured from `GOOGLE_*` variables,
//! * `az://CONTAINER/key` — Azure Blob Storage, configured from `AZURE_*` variables.
//!
//! Each cloud bucket (or container) gets one client, built on first use from the process
//! environment, or from the variables given to [`Store::with_env`]. Every variable object_store
//! knows for that cloud is passed on; credentials are never logged or printed (the [`Store`]'s
//! `Debug` shows bucket names only). TLS runs on rustls with the ring provider, installed on
//! first use.
//!
//! ## S3
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
//! `AWS_DEFAULT_REGION` (default `us-east-1`), `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...;
//! instance / container credentials (IRSA included) otherwise. For S3-compatible servers
//! (MinIO, Ceph, moto, R2): setting `AWS_ENDPOINT_URL` switches to path-style requests
//! (`endpoint/bucket/key`) unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` says otherwise, and an
//! `http://` endpoint allows plain HTTP unless `AWS_ALLOW_HTTP` says otherwise. Create-only puts
//! use `If-None-Match: *` (S3 conditional writes).
//!
//! ## Google Cloud Storage
//! `GOOGLE_SERVICE_ACCOUNT` (a key file's path), `GOOGLE_SERVICE_ACCOUNT_KEY` (the key itself),
//! `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata server (GKE workload identity).
//! `GOOGLE_BASE_URL` points at another server (an emulator); an `http://` one allows plain HTTP
//! unless `GOOGLE_ALLOW_HTTP` says otherwise, and `GOOGLE_SKIP_SIGNATURE=true` sends no
//! credentials. Create-only puts use `x-goog-if-generation-match: 0`.
//!
//! ## Azure Blob Storage
//! `AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY`, a SAS (`AZURE_STORAGE_SAS_KEY`),
//! a service principal (`AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`), workload
//! identity (`AZURE_FEDERATED_TOKEN_FILE`), else managed identity. `AZURE_STORAGE_ENDPOINT`
//! points at another server (for Azurite `http://127.0.0.1:10000/devstoreaccount1`); an
//! `http://` one allows plain HTTP unless `AZURE_ALLOW_HTTP` says otherwise.
//! (`AZURE_STORAGE_USE_EMULATOR=true` also works; object_store then reads the emulator's
//! address from the process's `AZURITE_BLOB_STORAGE_URL`.) Create-only puts use
//! `If-None-Match: *`.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{IoError, Result};

/// Human-readable list of the URL forms this build understands (used in error messages).
pub const SUPPORTED_SCHEMES: &str = "bare local paths, file:///absolute/path, memory://NAME/path, s3://BUCKET/key, gs://BUCKET/key and az://CONTAINER/key";

/// Outcome of a create-only put ([`Store::put_create`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and has now been written.
    Created,
    /// An object already existed at that location; it was left untouched.
    AlreadyExists,
}

/// Which URL form a location was given in; decides how listed objects are turned back
/// into URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A bare local path.
    Bare,
    /// A `file://` URL.
    FileUrl,
    /// A `memory://` URL.
    Memory,
    /// An `s3://`, `gs://` or `az://` URL.
    Cloud,
}

/// The object stores reached over HTTP. Each names its URL scheme and the environment
/// variables that configure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Cloud {
    /// `s3://`: Amazon S3 and S3-compatible servers.
    S3,
    /// `gs://`: Google Cloud Storage.
    Gcs,
    /// `az://`: Azure Blob Storage.
    Azure,
}

impl Cloud {
    fn scheme(self) -> &'static str {
        match self {
            Cloud::S3 => "s3",
            Cloud::Gcs => "gs",
            Cloud::Azure => "az",
        }
    }

    /// Whether environment variable `name` configures this cloud.
    fn reads(self, name: &str) -> bool {
        match self {
            Cloud::S3 => name.starts_with("AWS_"),
            Cloud::Gcs => name.starts_with("GOOGLE_"),
            Cloud::Azure => name.starts_with("AZURE_"),
        }
    }

    /// A client for `bucket` configured from `vars` (only those this cloud reads are looked at).
    fn client(
        self,
        vars: &[(String, String)],
        bucket: &str,
    ) -> object_store::Result<Arc<dyn ObjectStore>> {
        crate::install_crypto_provider();
        Ok(match self {
            Cloud::S3 => Arc::new(s3_builder(vars, bucket).build()?),
            Cloud::Gcs => Arc::new(gcs_builder(vars, bucket).build()?),
            Cloud::Azure => Arc::new(azure_builder(vars, bucket).build()?),
        })
    }
}

/// The client of each (cloud, bucket) resolved so far.
type CloudClients = HashMap<(Cloud, String), Arc<dyn ObjectStore>>;

/// Resolves URL strings to object stores and performs whole-object and range I/O on them.
///
/// Cheap to clone; clones share the local file system handle and the named in-memory
/// stores (so `memory://a/x` written through one clone is visible through every other).
#[derive(Clone)]
pub struct Store {
    local: Arc<LocalFileSystem>,
    memory: Arc<Mutex<HashMap<String, Arc<InMemory>>>>,
    /// One client per cloud bucket, built on first use.
    clouds: Arc<Mutex<CloudClients>>,
    /// Variables to configure the clouds from instead of the process environment.
    env: Option<Arc<Vec<(String, String)>>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = {
            let map = self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut v: Vec<String> = map.keys().cloned().collect();
            v.sort();
            v
        };
        let buckets: Vec<String> = {
            let map = self.clouds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut v: Vec<(Cloud, String)> = map.keys().cloned().collect();
            v.sort();
            v.into_iter().map(|(cloud, bucket)| format!("{}://{bucket}", cloud.scheme())).collect()
        };
        // never the variables: they hold credentials
        f.debug_struct("Store")
            .field("local", &"LocalFileSystem(/)")
            .field("memory_stores", &names)
            .field("buckets", &buckets)
            .finish()
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// A store handle with a local file system rooted at `/` and no in-memory stores yet
    /// (they are created on first use of each `memory://NAME`).
    pub fn new() -> Store {
        Store {
            local: Arc::new(LocalFileSystem::new()),
            memory: Arc::new(Mutex::new(HashMap::new())),
            clouds: Arc::new(Mutex::new(HashMap::new())),
            env: None,
        }
    }

    /// A store whose cloud clients are configured from `vars` (`AWS_*`, `GOOGLE_*`, `AZURE_*`
    /// name, value) instead of the process environment — for tests and for programs that hold
    /// several configurations. Clones share the clients; buckets already resolved keep theirs.
    pub fn with_env<K: Into<String>, V: Into<String>>(
        self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Store {
        Store {
            env: Some(Arc::new(vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect())),
            clouds: Arc::new(Mutex::new(HashMap::new())),
            ..self
        }
    }

    /// The client for `bucket` on `cloud`, built on first use.
    fn cloud_bucket(&self, url: &str, cloud: Cloud, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        let mut map = self.clouds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (cloud, bucket.to_string());
        if let Some(s) = map.get(&key) {
            return Ok(s.clone());
        }
        let vars: Vec<(String, String)> = match &self.env {
            Some(v) => v.iter().filter(|(k, _)| cloud.reads(k)).cloned().collect(),
            None => std::env::vars().filter(|(k, _)| cloud.reads(k)).collect(),
        };
        let store = cloud.client(&vars, bucket).map_err(|source| IoError::Store {
            url: url.to_string(),
            op: "configure the object-store client",
            source,
        })?;
        map.insert(key, store.clone());
        Ok(store)
    }

    /// The client and object path of cloud URL `url`, whose part after `scheme:` is `rest`.
    fn cloud_location(
        &self,
        url: &str,
        cloud: Cloud,
        rest: &str,
    ) -> Result<(Arc<dyn ObjectStore>, Path, Kind)> {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(IoError::InvalidUrl {
                url: url.to_string(),
                reason: format!("no bucket; write {}://BUCKET/key", cloud.scheme()),
            });
        }
        let path = key_to_object_path(url, key)?;
        Ok((self.cloud_bucket(url, cloud, bucket)?, path, Kind::Cloud))
    }

    /// Resolves `url` to the object store that holds it and the object's path there.
    ///
    /// Bare relative paths are resolved against the current directory; `.` and `..`
    /// segments are normalised lexically. Unknown schemes give
    /// [`IoError::UnsupportedScheme`].
    pub fn resolve(&self, url: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
        let (store, path, _) = self.resolve_kind(url)?;
        Ok((store, path))
    }

    fn resolve_kind(&self, url: &str) -> Result<(Arc<dyn ObjectStore>, Path, Kind)> {
        match split_scheme(url) {
            None => {
                let path = bare_path_to_object_path(url)?;
                Ok((self.local.clone() as Arc<dyn ObjectStore>, path, Kind::Bare))
            }
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "file" => {
                    let path = file_url_to_object_path(url)?;
                    Ok((self.local.clone() as Arc<dyn ObjectStore>, path, Kind::FileUrl))
                }
                "s3" => self.cloud_location(url, Cloud::S3, rest),
                "gs" => self.cloud_location(url, Cloud::Gcs, rest),
                "az" => self.cloud_location(url, Cloud::Azure, rest),
                "memory" => {
                    let rest = rest.strip_prefix("//").unwrap_or(rest);
                    let (name, key) = match rest.split_once('/') {
                        Some((n, k)) => (n, k),
                        None => (rest, ""),
                    };
                    let path = key_to_object_path(url, key)?;
                    let store = {
                        let mut map =
                            self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        map.entry(name.to_string())
                            .or_insert_with(|| Arc::new(InMemory::new()))
                            .clone()
                    };
                    Ok((store as Arc<dyn ObjectStore>, path, Kind::Memory))
                }
                _ => Err(IoError::UnsupportedScheme {
                    url: url.to_string(),
                    scheme: scheme.to_string(),
                    supported: SUPPORTED_SCHEMES,
                }),
            },
        }
    }

    /// [`Store::resolve`] for reading: a local path must be a regular file. A FIFO would block
    /// a reader forever and a device could stream without end, so both are refused up front.
    fn resolve_for_reading(&self, url: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
        let (store, path, kind) = self.resolve_kind(url)?;
        if matches!(kind, Kind::Bare | Kind::FileUrl)
            && let Ok(meta) = std::fs::metadata(format!("/{path}"))
            && !meta.is_file()
        {
            return Err(IoError::InvalidUrl {
                url: url.to_string(),
                reason: "not a regular file (a directory, FIFO, socket or device); brainfit reads only regular files".to_string(),
            });
        }
        Ok((store, path))
    }

    /// Reads a whole object.
    ///
    /// A missing object gives [`IoError::NotFound`] naming `url`; a local path that is not a
    /// regular file gives [`IoError::InvalidUrl`].
    pub async fn get(&self, url: &str) -> Result<Bytes> {
        let (store, path) = self.resolve_for_reading(url)?;
        let result = store
            .get_opts(&path, GetOptions::new())
            .await
            .map_err(|e| map_store_err(url, "get", e))?;
        let bytes = result.bytes().await.map_err(|e| map_store_err(url, "get", e))?;
        count_read(bytes.len());
        Ok(bytes)
    }

    /// Reads bytes `range.start..range.end` of an object.
    ///
    /// Strict: the whole range must lie inside the object, otherwise [`IoError::Range`]
    /// says how large the object really is (use [`Store::size`] first to clamp). An empty
    /// range returns empty bytes without touching the store; a range whose start lies
    /// after its end is an error.
    pub async fn get_range(&self, url: &str, range: Range<u64>) -> Result<Bytes> {
        if range.start > range.end {
            return Err(IoError::Range {
                url: url.to_string(),
                start: range.start,
                end: range.end,
                reason: "the range starts after it ends".to_string(),
            });
        }
        if range.start == range.end {
            return Ok(Bytes::new());
        }
        let (store, path) = self.resolve_for_reading(url)?;
        let want = range.end - range.start;
        let got =
            match store.get_opts(&path, GetOptions::new().with_range(Some(range.clone()))).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
        match got {
            Ok(bytes) if bytes.len() as u64 == want => {
                count_read(bytes.len());
                Ok(bytes)
            }
            Ok(bytes) => Err(IoError::Range {
                url: url.to_string(),
                start: range.start,
                end: range.end,
                reason: format!(
                    "the object is only {} bytes long",
                    range.start + bytes.len() as u64
                ),
            }),
            Err(object_store::Error::NotFound { .. }) => {
                Err(IoError::NotFound { url: url.to_string() })
            }
            Err(e) => {
                // Out-of-range starts surface as generic back-end errors; report them
                // with the object's real size when we can find it out.
                match self.size(url).await {
                    Ok(size) if range.end > size => Err(IoError::Range {
                        url: url.to_string(),
                        start: range.start,
                        end: range.end,
                        reason: format!("the object is only {size} bytes long"),
                    }),
                    _ => Err(map_store_err(url, "get_range", e)),
                }
            }
        }
    }

    /// Size of an object in bytes (a HEAD request).
    pub async fn size(&self, url: &str) -> Result<u64> {
        let (store, path) = self.resolve_for_reading(url)?;
        let result = store
            .get_opts(&path, GetOptions::new().with_head(true))
            .await
            .map_err(|e| map_store_err(url, "head", e))?;
        Ok(result.meta.size)
    }

    /// Writes (overwrites) an object atomically: readers see either the old or the new
    /// content, never a partial file. Local parent directories are created as needed.
    pub async fn put(&self, url: &str, data: Bytes) -> Result<()> {
        let (store, path) = self.resolve(url)?;
        store
            .put_opts(&path, PutPayload::from_bytes(data), PutOptions::default())
            .await
            .map_err(|e| map_store_err(url, "put", e))?;
        Ok(())
    }

    /// A writer that uploads one object in parts (a multipart upload), for objects too large
    /// to hold in memory at once: nothing is visible at `url` until [`ObjectWriter::finish`],
    /// and an upload that is aborted, or dropped unfinished, leaves nothing there.
    pub async fn writer(&self, url: &str) -> Result<ObjectWriter> {
        let (store, path) = self.resolve(url)?;
        let upload = store.put_multipart(&path).await.map_err(|e| map_store_err(url, "put", e))?;
        Ok(ObjectWriter {
            url: url.to_string(),
            upload: Some(object_store::WriteMultipart::new(upload)),
            written: 0,
        })
    }

    /// Create-only put: writes the object if nothing exists at `url`, otherwise leaves the
    /// existing object untouched and returns [`PutOutcome::AlreadyExists`] (not an
    /// error). Used to commit task results so that the first finished attempt wins.
    pub async fn put_create(&self, url: &str, data: Bytes) -> Result<PutOutcome> {
        let (store, path) = self.resolve(url)?;
        match store
            .put_opts(&path, PutPayload::from_bytes(data), PutOptions::from(PutMode::Create))
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(map_store_err(url, "create-only put", e)),
        }
    }

    /// Full URLs of every object strictly below `prefix_url` (recursively), sorted.
    ///
    /// The prefix is a "directory": `out/a` lists `out/a/x` and `out/a/b/y` but neither
    /// `out/a` itself nor `out/ab`. A prefix with nothing below it gives an empty list.
    /// Returned URLs keep the prefix's form (bare path, `file://`, `memory://`) and can be
    /// passed straight back to [`Store::get`].
    pub async fn list(&self, prefix_url: &str) -> Result<Vec<String>> {
        let (store, prefix, kind) = self.resolve_kind(prefix_url)?;
        let locations = list_below(store.as_ref(), &prefix, prefix_url).await?;
        let mut urls = Vec::with_capacity(locations.len());
        for location in locations {
            let rel = relative_key(&prefix, &location);
            let url = match kind {
                Kind::Bare | Kind::Memory | Kind::Cloud => join_url(prefix_url, rel),
                Kind::FileUrl => file_url_join(prefix_url, rel)?,
            };
            urls.push(url);
        }
        urls.sort();
        Ok(urls)
    }

    /// Deletes every object strictly below `prefix_url` (same prefix rule as
    /// [`Store::list`]). Nothing there, or objects vanishing concurrently, is fine.
    /// Empty local directories are left in place.
    pub async fn delete_prefix(&self, prefix_url: &str) -> Result<()> {
        let (store, prefix) = self.resolve(prefix_url)?;
        let locations = list_below(store.as_ref(), &prefix, prefix_url).await?;
        if locations.is_empty() {
            return Ok(());
        }
        let stream = futures::stream::iter(locations.into_iter().map(Ok)).boxed();
        let mut results = store.delete_stream(stream);
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(map_store_err(prefix_url, "delete", e)),
            }
        }
        Ok(())
    }

    /// Columns `columns` of a 2-D `.npy` (`[n_rows, n_cols]`, e.g. a voxel chunk of a brain
    /// matrix) read with range requests instead of a whole download: one request for a
    /// Fortran-order file; for a C-order file one range per row, rows less than
    /// [`COALESCE_GAP`] apart (and no farther than a row's length) merged into one request (up
    /// to 32 in flight). Returns the `[n_rows, k]` array and the number of requests made.
    pub async fn get_npy_columns(
        &self,
        url: &str,
        columns: Range<usize>,
    ) -> Result<(crate::NpyArray, usize)> {
        self.get_npy_column_runs(url, &[columns]).await
    }

    /// The columns of several runs (ascending, disjoint column ranges, e.g. the voxels of a few
    /// ROIs) of a 2-D `.npy`, side by side in that order, read as [`Store::get_npy_columns`]
    /// reads one run: one range per run (Fortran order) or per run and row (C order), ranges
    /// close together merged into one request.
    pub async fn get_npy_column_runs(
        &self,
        url: &str,
        runs: &[Range<usize>],
    ) -> Result<(crate::NpyArray, usize)> {
        let size = self.size(url).await?;
        let head = self.get_range(url, 0..size.min(65_536)).await?;
        let header = crate::parse_npy_header(&head, url)?;
        let need = header.data_offset as u64 + header.data_len(url)? as u64;
        if size < need {
            return Err(IoError::Npy {
                name: url.to_string(),
                reason: format!(
                    "truncated .npy: header says {:?} {} ({need} bytes with the header) but the object has {size} bytes",
                    header.shape, header.dtype
                ),
            });
        }
        let ranges = crate::npy::column_ranges(&header, runs, url)?;
        let merged = coalesce(&ranges, COALESCE_GAP);
        let requests = merged.len();
        let chunks: Vec<Bytes> =
            futures::stream::iter(merged.clone().into_iter().map(|r| self.get_range(url, r)))
                .buffered(32)
                .try_collect()
                .await?;
        let mut raw = Vec::with_capacity(ranges.iter().map(|r| (r.end - r.start) as usize).sum());
        let mut m = 0;
        for r in &ranges {
            while merged[m].end < r.end {
                m += 1;
            }
            let at = (r.start - merged[m].start) as usize;
            raw.extend_from_slice(&chunks[m][at..at + (r.end - r.start) as usize]);
        }
        let k = runs.iter().map(|r| r.end - r.start).sum();
        Ok((crate::npy::decode_columns(&header, &raw, k, url)?, requests))
    }

    /// Moves the object at `from` to `to`, replacing what is there: a rename on a local file
    /// system (atomic), a copy then a delete on object stores. Both URLs must lie on the same
    /// store (one output directory); local parent directories are created as needed.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (store, from_path) = self.resolve(from)?;
        let (_, to_path) = self.resolve(to)?;
        object_store::ObjectStoreExt::rename(store.as_ref(), &from_path, &to_path)
            .await
            .map_err(|e| map_store_err(from, "rename", e))
    }

    /// Deletes one object; a missing object is fine.
    pub async fn delete(&self, url: &str) -> Result<()> {
        let (store, path) = self.resolve(url)?;
        match object_store::ObjectStoreExt::delete(store.as_ref(), &path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_store_err(url, "delete", e)),
        }
    }
}

/// An object being written in parts ([`Store::writer`]).
pub struct ObjectWriter {
    url: String,
    /// `None` once finished or aborted.
    upload: Option<object_store::WriteMultipart>,
    written: u64,
}

/// Parts uploaded at once by an [`ObjectWriter`] (each part is 5 MiB, object_store's default):
/// bounds its memory.
const PARTS_IN_FLIGHT: usize = 8;

impl ObjectWriter {
    /// Appends `bytes` (buffered into parts; waits while too many parts are in flight).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let upload = self.upload.as_mut().expect("written after finish or abort");
        upload
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|e| map_store_err(&self.url, "put", e))?;
        upload.write(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Completes the upload: the object appears at its URL, whole. Returns its size in bytes.
    pub async fn finish(mut self) -> Result<u64> {
        let upload = self.upload.take().expect("finished once");
        upload.finish().await.map_err(|e| map_store_err(&self.url, "put", e))?;
        Ok(self.written)
    }

    /// Abandons the upload: nothing is written at its URL.
    pub async fn abort(mut self) -> Result<()> {
        let upload = self.upload.take().expect("aborted once");
        upload.abort().await.map_err(|e| map_store_err(&self.url, "put", e))
    }
}

/// Byte ranges this close are read as one request, the bytes between them read and dropped
/// (when the gap is also no longer than the range after it): on object stores a request costs
/// about as much as transferring this many bytes, and a C-order brain matrix's rows are many
/// small ranges.
pub const COALESCE_GAP: u64 = 64 * 1024;

/// `ranges` (ascending, disjoint) with a range merged into the one before it when the gap
/// between them is at most `gap` bytes and no longer than the range itself: never more than
/// twice the bytes asked for.
fn coalesce(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start >= last.end && r.start - last.end <= gap.min(r.end - r.start) => {
                last.end = r.end;
            }
            _ => out.push(r.clone()),
        }
    }
    out
}

/// Bytes read from storage by this process, for metrics.
static BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_read(n: usize) {
    BYTES_READ.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    // inside a `counting_reads` scope (elsewhere there is nothing to count into)
    let _ = TASK_READS.try_with(|count| {
        let mut c = count.get();
        c.requests += 1;
        c.bytes += n as u64;
        count.set(c);
    });
}

/// Reads made by one piece of work ([`counting_reads`]): object reads (whole or ranges) and
/// their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCount {
    /// Read requests (whole objects and ranges; metadata requests are not counted).
    pub requests: u64,
    /// Bytes they returned.
    pub bytes: u64,
}

tokio::task_local! {
    static TASK_READS: std::cell::Cell<ReadCount>;
}

/// Runs `work`, counting the reads it makes through any [`Store`] on this async task (reads
/// made by tasks it spawns are not counted): what one brainfit task reads, for its log line.
pub async fn counting_reads<F: std::future::Future>(work: F) -> (F::Output, ReadCount) {
    TASK_READS
        .scope(std::cell::Cell::new(ReadCount::default()), async {
            let out = work.await;
            (out, TASK_READS.with(std::cell::Cell::get))
        })
        .await
}

/// Bytes this process has read from storage (every [`Store::get`] and [`Store::get_range`]),
/// for the metrics endpoint.
pub fn bytes_read() -> u64 {
    BYTES_READ.load(std::sync::atomic::Ordering::Relaxed)
}

/// The value of variable `name` in `vars`, if set.
fn var<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Every variable in `vars` that parses as a config key `K` (as object_store's `from_env`
/// builders read them: the lower-cased name), passed to `set`.
fn configure<B, K: std::str::FromStr>(
    vars: &[(String, String)],
    builder: B,
    set: impl Fn(B, K, &str) -> B,
) -> B {
    vars.iter().fold(builder, |b, (name, value)| match name.to_ascii_lowercase().parse::<K>() {
        Ok(key) => set(b, key, value),
        Err(_) => b,
    })
}

/// A GCS client builder for `bucket` from `GOOGLE_*` variables, allowing plain HTTP for an
/// `http://` `GOOGLE_BASE_URL` unless `GOOGLE_ALLOW_HTTP` says otherwise.
fn gcs_builder(
    vars: &[(String, String)],
    bucket: &str,
) -> object_store::gcp::GoogleCloudStorageBuilder {
    use object_store::ClientConfigKey;
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    let mut builder =
        configure(vars, GoogleCloudStorageBuilder::new(), |b, k: GoogleConfigKey, v| {
            b.with_config(k, v)
        });
    if var(vars, "GOOGLE_ALLOW_HTTP").is_none()
        && var(vars, "GOOGLE_BASE_URL").is_some_and(|u| u.starts_with("http://"))
    {
        builder = builder.with_config(GoogleConfigKey::Client(ClientConfigKey::AllowHttp), "true");
    }
    builder.with_bucket_name(bucket)
}

/// An Azure Blob client builder for container `container` from `AZURE_*` variables, allowing
/// plain HTTP for an `http://` `AZURE_STORAGE_ENDPOINT` unless `AZURE_ALLOW_HTTP` says
/// otherwise.
fn azure_builder(
    vars: &[(String, String)],
    container: &str,
) -> object_store::azure::MicrosoftAzureBuilder {
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    let mut builder = configure(vars, MicrosoftAzureBuilder::new(), |b, k: AzureConfigKey, v| {
        b.with_config(k, v)
    });
    if var(vars, "AZURE_ALLOW_HTTP").is_none()
        && var(vars, "AZURE_STORAGE_ENDPOINT").is_some_and(|u| u.starts_with("http://"))
    {
        builder = builder.with_allow_http(true);
    }
    builder.with_container_name(container)
}

/// An S3 client builder for `bucket` from `AWS_*` variables (as `AmazonS3Builder::from_env`
/// reads them), adjusted for S3-compatible endpoints: path-style requests, and plain HTTP
/// allowed for an `http://` endpoint, unless the variables say otherwise.
fn s3_builder(vars: &[(String, String)], bucket: &str) -> object_store::aws::AmazonS3Builder {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let get = |name: &str| var(vars, name);
    let mut builder =
        configure(vars, AmazonS3Builder::new(), |b, k: AmazonS3ConfigKey, v| b.with_config(k, v));
    let endpoint = get("AWS_ENDPOINT_URL_S3").or(get("AWS_ENDPOINT_URL")).or(get("AWS_ENDPOINT"));
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
        if get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_none() {
            builder = builder.with_virtual_hosted_style_request(false);
        }
        if get("AWS_ALLOW_HTTP").is_none() && endpoint.starts_with("http://") {
            builder = builder.with_allow_http(true);
        }
    }
    builder.with_bucket_name(bucket)
}

/// Objects strictly below `prefix` (or everything when `prefix` is the root).
async fn list_below(store: &dyn ObjectStore, prefix: &Path, url: &str) -> Result<Vec<Path>> {
    let p = if prefix.is_root() { None } else { Some(prefix) };
    let metas: Vec<_> = match store.list(p).try_collect().await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(map_store_err(url, "list", e)),
    };
    let prefix_str: &str = prefix.as_ref();
    Ok(metas
        .into_iter()
        .map(|m| m.location)
        .filter(|loc| {
            let s: &str = loc.as_ref();
            prefix.is_root()
                || (s.len() > prefix_str.len()
                    && s.starts_with(prefix_str)
                    && s.as_bytes()[prefix_str.len()] == b'/')
        })
        .collect())
}

/// The part of `location` below `prefix` (without a leading '/').
fn relative_key<'a>(prefix: &Path, location: &'a Path) -> &'a str {
    let s: &str = location.as_ref();
    let p: &str = prefix.as_ref();
    if p.is_empty() { s } else { s.get(p.len() + 1..).unwrap_or("") }
}

/// Maps an object_store error to [`IoError`], turning "not found" into
/// [`IoError::NotFound`].
fn map_store_err(url: &str, op: &'static str, e: object_store::Error) -> IoError {
    match e {
        object_store::Error::NotFound { .. } => IoError::NotFound { url: url.to_string() },
        source => IoError::Store { url: url.to_string(), op, source },
    }
}

/// Splits `scheme:rest` off a URL. A string is a URL when it starts with a valid scheme
/// followed by `://`, or with `file:`; anything else is a bare path.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !(first_ok && rest_ok) {
        return None;
    }
    if rest.starts_with("//") || scheme.eq_ignore_ascii_case("file") {
        Some((scheme, rest))
    } else {
        None
    }
}

/// Bare local path (relative to the current directory or absolute) → object path on the
/// root-anchored local file system.
fn bare_path_to_object_path(url: &str) -> Result<Path> {
    if url.is_empty() {
        return Err(IoError::InvalidUrl { url: url.to_string(), reason: "empty path".to_string() });
    }
    let p = std::path::Path::new(url);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        let cwd = std::env::current_dir().map_err(|source| IoError::Io {
            name: url.to_string(),
            what: "cannot resolve a relative path: current directory unknown",
            source,
        })?;
        cwd.join(p)
    };
    fs_path_to_object_path(url, &abs)
}

/// `file://` URL → object path on the root-anchored local file system.
fn file_url_to_object_path(url: &str) -> Result<Path> {
    let parsed = url::Url::parse(url).map_err(|e| IoError::InvalidUrl {
        url: url.to_string(),
        reason: format!("not a valid file URL ({e}); use file:///absolute/path"),
    })?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(IoError::InvalidUrl {
            url: url.to_string(),
            reason: "file URLs must not contain '?' or '#'; percent-encode them (%3F, %23) \
                     or use a bare path"
                .to_string(),
        });
    }
    let fs = parsed.to_file_path().map_err(|_| IoError::InvalidUrl {
        url: url.to_string(),
        reason: "not an absolute local file URL; write file:///absolute/path (three slashes, \
                 no host)"
            .to_string(),
    })?;
    fs_path_to_object_path(url, &fs)
}

/// Absolute file-system path → object path, normalising `.`/`..` lexically.
fn fs_path_to_object_path(url: &str, abs: &std::path::Path) -> Result<Path> {
    use std::path::Component;
    let mut parts: Vec<&str> = Vec::new();
    for c in abs.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(s) => match s.to_str() {
                Some(s) => parts.push(s),
                None => {
                    return Err(IoError::InvalidUrl {
                        url: url.to_string(),
                        reason: "path is not valid UTF-8".to_string(),
                    });
                }
            },
        }
    }
    Path::parse(parts.join("/"))
        .map_err(|e| IoError::InvalidUrl { url: url.to_string(), reason: e.to_string() })
}

/// Key of a `memory://` URL → object path (empty and `.` segments dropped, `..` pops).
fn key_to_object_path(url: &str, key: &str) -> Result<Path> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in key.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    Path::parse(parts.join("/"))
        .map_err(|e| IoError::InvalidUrl { url: url.to_string(), reason: e.to_string() })
}

/// Appends the (unencoded) `rel` key below a `file://` prefix URL, percent-encoding each
/// segment as file URLs require.
fn file_url_join(prefix_url: &str, rel: &str) -> Result<String> {
    let mut u = url::Url::parse(prefix_url)
        .map_err(|e| IoError::InvalidUrl { url: prefix_url.to_string(), reason: e.to_string() })?;
    {
        let mut segs = u.path_segments_mut().map_err(|_| IoError::InvalidUrl {
            url: prefix_url.to_string(),
            reason: "file URL cannot have path segments appended".to_string(),
        })?;
        segs.pop_if_empty();
        segs.extend(rel.split('/'));
    }
    Ok(u.to_string())
}

/// Joins a relative key below a base URL or path, with exactly one `/` between them.
///
/// `join_url("file:///r/out", "encoding/conv5/score.npy")` is
/// `"file:///r/out/encoding/conv5/score.npy"`; a trailing `/` on `base` or a leading `/`
/// on `relative` is not doubled. An empty `base` returns `relative` (a path relative to
/// the current directory); an empty `relative` returns `base`.
pub fn join_url(base: &str, relative: &str) -> String {
    let rel = relative.trim_start_matches('/');
    if base.is_empty() {
        return rel.to_string();
    }
    if rel.is_empty() {
        return base.to_string();
    }
    if base.ends_with('/') { format!("{base}{rel}") } else { format!("{base}/{rel}") }
}

/// Resolves a path written in a job file against the directory that holds the job file.
///
/// `base_dir_url` is that directory (a URL or bare path; see [`parent_url`] to get it from
/// the job file's own URL). A relative `path` (no scheme, not starting with `/`) is joined
/// below it; absolute paths and URLs are returned unchanged.
pub fn resolve_relative(base_dir_url: &str, path: &str) -> String {
    if split_scheme(path).is_some() || path.starts_with('/') {
        return path.to_string();
    }
    join_url(base_dir_url, path)
}

/// The URL `url` names once resolved: `.` and `..` applied lexically, relative paths made
/// absolute, one form per scheme (`file:///abs/path`, `memory://name/key`, `s3://bucket/key`,
/// likewise `gs://` and `az://`).
/// What access checks compare; no store is contacted.
pub fn canonical_url(url: &str) -> Result<String> {
    match split_scheme(url) {
        None => Ok(format!("file:///{}", bare_path_to_object_path(url)?)),
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(format!("file:///{}", file_url_to_object_path(url)?)),
            s @ ("memory" | "s3" | "gs" | "az") => {
                let rest = rest.strip_prefix("//").unwrap_or(rest);
                let (name, key) = rest.split_once('/').unwrap_or((rest, ""));
                Ok(format!("{s}://{name}/{}", key_to_object_path(url, key)?))
            }
            _ => Err(IoError::UnsupportedScheme {
                url: url.to_string(),
                scheme: scheme.to_string(),
                supported: SUPPORTED_SCHEMES,
            }),
        },
    }
}

/// Whether `url` lies at or below `root` once both are resolved ([`canonical_url`]):
/// `file:///data/lab/../etc` is not below `file:///data/lab`. On a local file system,
/// symbolic links are followed as far as the path exists, so a link inside a root that
/// points outside it is outside. (A link created after this check is not seen: the check
/// guards job files, not a hostile user who can also write into the root.)
pub fn is_within(url: &str, root: &str) -> Result<bool> {
    let (url, root) = (resolve_links(&canonical_url(url)?), resolve_links(&canonical_url(root)?));
    let root = root.trim_end_matches('/');
    Ok(url == root || url.starts_with(&format!("{root}/")))
}

/// A canonical `file:///` URL with the symbolic links of its longest existing ancestor
/// resolved (the rest, not yet created, appended unchanged); other URLs are returned as given.
fn resolve_links(canonical: &str) -> String {
    let Some(path) = canonical.strip_prefix("file://") else {
        return canonical.to_string();
    };
    let mut existing = std::path::PathBuf::from(path);
    let mut missing = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let real = missing.iter().rev().fold(real, |p, part| p.join(part));
            return format!("file://{}", real.display());
        }
        match (existing.file_name().map(std::ffi::OsStr::to_os_string), existing.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                existing = parent.to_path_buf();
            }
            _ => return canonical.to_string(),
        }
    }
}

/// The directory part of a URL or path: everything before the last `/` (keeping a root
/// `/` and the `scheme://` part). `parent_url("s3://b/jobs/a.toml")` is `"s3://b/jobs"`;
/// `parent_url("job.toml")` is `""` (the current directory).
pub fn parent_url(url: &str) -> String {
    // Never cut into "scheme://" (or "file:").
    let floor = match split_scheme(url) {
        Some((scheme, rest)) if rest.starts_with("//") => scheme.len() + 3,
        Some((scheme, _)) => scheme.len() + 1,
        None => 0,
    };
    let (head, raw_body) = url.split_at(floor.min(url.len()));
    let body = raw_body.trim_end_matches('/');
    match body.rfind('/') {
        Some(0) => format!("{head}/"),
        None if body.is_empty() && raw_body.starts_with('/') => format!("{head}/"),
        Some(i) => format!("{head}{}", &body[..i]),
        None if floor > 0 => format!("{head}{body}"),
        None => String::new(),
    }
}

/// A synchronous `Read + Seek` view of an object, for libraries that need one (a zip archive):
/// each read that misses its buffer is one range request, awaited on `handle` — so it must be
/// used from a blocking thread (`tokio::task::spawn_blocking`), never from async code.
pub struct BlockingReader {
    store: Store,
    handle: tokio::runtime::Handle,
    url: String,
    size: u64,
    pos: u64,
    /// Bytes `[buffer_start, buffer_start + buffer.len())` of the object.
    buffer: Bytes,
    buffer_start: u64,
}

/// Bytes a [`BlockingReader`] fetches per request (at least).
const BLOCKING_READ_BYTES: u64 = 8 << 20;

impl BlockingReader {
    /// A reader of `url` through `store`, waiting on `handle` (call from a blocking thread).
    pub fn new(store: &Store, handle: tokio::runtime::Handle, url: &str) -> Result<Self> {
        let size = handle.block_on(store.size(url))?;
        Ok(BlockingReader {
            store: store.clone(),
            handle,
            url: url.to_string(),
            size,
            pos: 0,
            buffer: Bytes::new(),
            buffer_start: 0,
        })
    }
}

impl std::io::Read for BlockingReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let end = self.buffer_start + self.buffer.len() as u64;
        if self.pos < self.buffer_start || self.pos >= end {
            let want = (out.len() as u64).max(BLOCKING_READ_BYTES);
            let range = self.pos..(self.pos + want).min(self.size);
            self.buffer = self
                .handle
                .block_on(self.store.get_range(&self.url, range))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.buffer_start = self.pos;
            if self.buffer.is_empty() {
                return Ok(0);
            }
        }
        let offset = (self.pos - self.buffer_start) as usize;
        let n = out.len().min(self.buffer.len() - offset);
        out[..n].copy_from_slice(&self.buffer[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for BlockingReader {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.size.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_contain_only_what_resolves_below_them() {
        assert!(is_within("file:///data/lab/sub01/betas.npy", "file:///data/lab").unwrap());
        assert!(is_within("file:///data/lab", "file:///data/lab/").unwrap());
        assert!(is_within("/data/lab/x.npy", "file:///data/lab").unwrap());
        assert!(!is_within("file:///data/lab/../../etc/shadow", "file:///data/lab").unwrap());
        assert!(!is_within("file:///data/labmates/x.npy", "file:///data/lab").unwrap());
        assert!(is_within("s3://lab/a/./b/../c.npy", "s3://lab/a").unwrap());
        assert!(!is_within("s3://lab/a/../../other/c.npy", "s3://lab/a").unwrap());
        assert!(!is_within("s3://other/a/c.npy", "s3://lab").unwrap());
        assert!(!is_within("memory://m/a", "file:///").unwrap());
        assert!(!is_within("gs://lab/a", "s3://lab").unwrap());
        assert!(is_within("az://c/a/b", "az://c/a").unwrap());
        assert!(is_within("ftp://b/x", "file:///").is_err());
    }

    #[test]
    fn a_symbolic_link_inside_a_root_that_points_outside_is_outside() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("lab"), dir.path().join("elsewhere"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let root_url = format!("file://{}", root.display());
        let inside = |rel: &str| is_within(&format!("{root_url}/{rel}"), &root_url).unwrap();
        assert!(inside("sub01/betas.npy"), "a path not created yet stays inside");
        assert!(!inside("link/betas.npy"), "the link leads outside");
        assert!(!inside("link/new/dir/out.npy"), "also below a missing part");
        // a root reached through a link contains what lies below its target
        std::os::unix::fs::symlink(&root, dir.path().join("lab-link")).unwrap();
        let via_link = format!("file://{}", dir.path().join("lab-link").display());
        assert!(is_within(&format!("{root_url}/x.npy"), &via_link).unwrap());
    }

    #[test]
    fn join_url_handles_slashes_and_forms() {
        assert_eq!(
            join_url("file:///r/out", "encoding/conv5/score.npy"),
            "file:///r/out/encoding/conv5/score.npy"
        );
        assert_eq!(join_url("file:///r/out/", "a.npy"), "file:///r/out/a.npy");
        assert_eq!(join_url("memory://m", "/a/b.npy"), "memory://m/a/b.npy");
        assert_eq!(join_url("memory://m/", "a"), "memory://m/a");
        assert_eq!(join_url("out", "a.npy"), "out/a.npy");
        assert_eq!(join_url("/abs/out/", "a.npy"), "/abs/out/a.npy");
        assert_eq!(join_url("", "a.npy"), "a.npy");
        assert_eq!(join_url("out", ""), "out");
        assert_eq!(join_url("file:///", "x"), "file:///x");
    }

    #[test]
    fn resolve_relative_and_parent() {
        assert_eq!(
            resolve_relative("s3://lab/jobs", "sub01/betas.npy"),
            "s3://lab/jobs/sub01/betas.npy"
        );
        assert_eq!(resolve_relative("/jobs", "/abs/x.npy"), "/abs/x.npy");
        assert_eq!(resolve_relative("/jobs", "file:///abs/x.npy"), "file:///abs/x.npy");
        assert_eq!(resolve_relative("/jobs", "s3://b/x.npy"), "s3://b/x.npy");
        assert_eq!(resolve_relative("", "x.npy"), "x.npy");
        assert_eq!(resolve_relative("jobs/", "x.npy"), "jobs/x.npy");

        assert_eq!(parent_url("s3://b/jobs/a.toml"), "s3://b/jobs");
        assert_eq!(parent_url("file:///jobs/a.toml"), "file:///jobs");
        assert_eq!(parent_url("file:///a.toml"), "file:///");
        assert_eq!(parent_url("memory://m/a.toml"), "memory://m");
        assert_eq!(parent_url("/jobs/a.toml"), "/jobs");
        assert_eq!(parent_url("/a.toml"), "/");
        assert_eq!(parent_url("jobs/a.toml"), "jobs");
        assert_eq!(parent_url("a.toml"), "");
    }

    #[test]
    fn close_ranges_are_read_together() {
        let r = |a: u64, b: u64| a..b;
        assert_eq!(coalesce(&[r(0, 10), r(20, 30), r(100, 110)], 10), vec![r(0, 30), r(100, 110)]);
        assert_eq!(coalesce(&[r(0, 10), r(10, 20)], 0), vec![r(0, 20)]);
        // a gap longer than the range is not read: at most twice the bytes asked for
        assert_eq!(coalesce(&[r(0, 10), r(25, 30)], 64), vec![r(0, 10), r(25, 30)]);
        assert_eq!(coalesce(&[r(0, 10), r(15, 20)], 64), vec![r(0, 20)]);
        assert_eq!(coalesce(&[r(5, 6)], 0), vec![r(5, 6)]);
        assert!(coalesce(&[], 64).is_empty());
    }

    #[test]
    fn scheme_detection() {
        assert_eq!(split_scheme("s3://b/x"), Some(("s3", "//b/x")));
        assert_eq!(split_scheme("file:/x"), Some(("file", "/x")));
        assert_eq!(split_scheme("data/x.npy"), None);
        assert_eq!(split_scheme("/a:b/x"), None);
        assert_eq!(split_scheme("weird:name.npy"), None);
    }

    #[test]
    fn s3_urls_resolve_per_bucket_without_network_and_hide_credentials() {
        let s = Store::new().with_env([
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret-value"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ]);
        let (a, p) = s.resolve("s3://bucket/dir//./x/../y.npy").expect("s3");
        assert_eq!(p.as_ref(), "dir/y.npy");
        let (b, _) = s.resolve("s3://bucket/other").expect("s3");
        assert!(Arc::ptr_eq(&a, &b), "one client per bucket");
        let (c, _) = s.resolve("s3://second/other").expect("s3");
        assert!(!Arc::ptr_eq(&a, &c));
        let debug = format!("{s:?}");
        assert!(debug.contains("bucket") && !debug.contains("very-secret"), "{debug}");
        // the endpoint variables make a path-style, plain-HTTP client
        let vars = vec![
            ("AWS_ENDPOINT_URL".to_string(), "http://127.0.0.1:9".to_string()),
            ("AWS_REGION".to_string(), "eu-west-3".to_string()),
        ];
        let b = s3_builder(&vars, "bk");
        use object_store::aws::AmazonS3ConfigKey as K;
        assert_eq!(b.get_config_value(&K::Endpoint).as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(b.get_config_value(&K::VirtualHostedStyleRequest).as_deref(), Some("false"));
        assert_eq!(b.get_config_value(&K::Region).as_deref(), Some("eu-west-3"));
        assert_eq!(b.get_config_value(&K::Bucket).as_deref(), Some("bk"));
    }

    #[test]
    fn gcs_and_azure_clients_read_their_own_variables() {
        use object_store::ClientConfigKey as C;
        use object_store::azure::AzureConfigKey as A;
        use object_store::gcp::GoogleConfigKey as G;
        let vars: Vec<(String, String)> = [
            ("GOOGLE_BASE_URL", "http://127.0.0.1:9"),
            ("GOOGLE_SERVICE_ACCOUNT", "/secrets/key.json"),
            ("GOOGLE_CLOUD_PROJECT", "not-a-storage-setting"),
            ("AZURE_STORAGE_ENDPOINT", "http://127.0.0.1:9/acct"),
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let g = gcs_builder(&vars, "bk");
        assert_eq!(g.get_config_value(&G::BaseUrl).as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(g.get_config_value(&G::ServiceAccount).as_deref(), Some("/secrets/key.json"));
        assert_eq!(g.get_config_value(&G::Bucket).as_deref(), Some("bk"));
        assert_eq!(g.get_config_value(&G::Client(C::AllowHttp)).as_deref(), Some("true"));
        let a = azure_builder(&vars, "ctr");
        assert_eq!(a.get_config_value(&A::Endpoint).as_deref(), Some("http://127.0.0.1:9/acct"));
        assert_eq!(a.get_config_value(&A::AccountName).as_deref(), Some("acct"));
        assert_eq!(a.get_config_value(&A::ContainerName).as_deref(), Some("ctr"));
        assert_eq!(a.get_config_value(&A::Client(C::AllowHttp)).as_deref(), Some("true"));
        // an explicit choice wins, and HTTPS endpoints stay HTTPS-only
        let https = [("AZURE_STORAGE_ENDPOINT".to_string(), "https://x.blob.example".to_string())];
        let a = azure_builder(&https, "ctr");
        assert_ne!(a.get_config_value(&A::Client(C::AllowHttp)).as_deref(), Some("true"));
        let explicit = [
            ("GOOGLE_BASE_URL".to_string(), "http://127.0.0.1:9".to_string()),
            ("GOOGLE_ALLOW_HTTP".to_string(), "false".to_string()),
        ];
        let g = gcs_builder(&explicit, "bk");
        assert_eq!(g.get_config_value(&G::Client(C::AllowHttp)).as_deref(), Some("false"));
        // each cloud reads only its own variables; none of them reach Debug
        assert!(Cloud::Gcs.reads("GOOGLE_BASE_URL") && !Cloud::Gcs.reads("AWS_REGION"));
        assert!(Cloud::Azure.reads("AZURE_STORAGE_ACCOUNT_KEY") && !Cloud::S3.reads("AZURE_X"));
        let s = Store::new().with_env([("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0")]);
        let _ = s.resolve("az://ctr/x");
        assert!(!format!("{s:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn resolve_normalises_paths() {
        let s = Store::new();
        let (_, p) = s.resolve("/a/./b/../c.npy").expect("bare");
        assert_eq!(p.as_ref(), "a/c.npy");
        let (_, p) = s.resolve("file:///a/b%20c/d.npy").expect("file url");
        assert_eq!(p.as_ref(), "a/b c/d.npy");
        let (_, p) = s.resolve("memory://m//x/./y/../z").expect("memory");
        assert_eq!(p.as_ref(), "x/z");
        let cwd = std::env::current_dir().expect("cwd");
        let (_, p) = s.resolve("rel/x.npy").expect("relative");
        let want = format!("{}/rel/x.npy", cwd.display());
        assert_eq!(format!("/{}", p.as_ref()), want);
    }

    #[test]
    fn bad_urls_are_rejected_clearly() {
        let s = Store::new();
        let e = s.resolve("file://host/x").expect_err("host not allowed");
        assert!(e.to_string().contains("file://host/x"), "{e}");
        let e = s.resolve("").expect_err("empty");
        assert!(e.to_string().contains("empty path"), "{e}");
        let e = s.resolve("ftp://b/x").expect_err("ftp");
        let msg = e.to_string();
        assert!(
            msg.contains("ftp://b/x") && msg.contains("memory://") && msg.contains("az://"),
            "{msg}"
        );
        let e = s.resolve("s3:///x").expect_err("no bucket");
        assert!(e.to_string().contains("no bucket"), "{e}");
    }

    #[test]
    fn a_blocking_reader_streams_an_npz_member_by_range_reads() {
        use std::io::{Read, Seek, SeekFrom, Write};
        let values = ndarray::Array2::<f64>::from_shape_fn((3, 5), |(i, j)| (i * 10 + j) as f64);
        let mut zipped = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut zipped);
            let opts = zip::write::SimpleFileOptions::default();
            for (key, bytes) in [
                ("mean", crate::write_npy(&values.row(0))),
                ("components", crate::write_npy(&values.view())),
            ] {
                zip.start_file(format!("{key}.npy"), opts).unwrap();
                zip.write_all(&bytes).unwrap();
            }
            zip.finish().unwrap();
        }
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = Store::new();
        let url = "memory://blocking/model.npz";
        runtime.block_on(store.put(url, Bytes::from(zipped.into_inner()))).unwrap();
        let handle = runtime.handle().clone();
        std::thread::spawn(move || {
            let mut reader = BlockingReader::new(&store, handle.clone(), url).unwrap();
            let size = reader.seek(SeekFrom::End(0)).unwrap();
            reader.seek(SeekFrom::Start(size - 4)).unwrap();
            let mut tail = Vec::new();
            reader.read_to_end(&mut tail).unwrap();
            assert_eq!(tail.len(), 4, "reads stop at the end");
            assert!(reader.seek(SeekFrom::Current(-(size as i64) - 1)).is_err());
            let reader = BlockingReader::new(&store, handle.clone(), url).unwrap();
            let rows = crate::with_npz_member(reader, url, "components", |h, data| {
                assert_eq!(h.shape, vec![3, 5]);
                let mut bytes = Vec::new();
                data.read_to_end(&mut bytes).unwrap();
                Ok(bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<_>>())
            })
            .unwrap();
            assert_eq!(rows, values.iter().copied().collect::<Vec<_>>());
            let reader = BlockingReader::new(&store, handle.clone(), url).unwrap();
            let e = crate::with_npz_member(reader, url, "variance", |_, _| Ok(())).unwrap_err();
            assert!(e.to_string().contains("has no array \"variance\""), "{e}");
            assert!(BlockingReader::new(&store, handle, "memory://blocking/missing.npz").is_err());
        })
        .join()
        .unwrap();
    }
}
