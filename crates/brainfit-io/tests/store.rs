//! Store behaviour on `memory://` and local files (bare paths and `file://` URLs):
//! get / get_range / size / put / put_create / list / delete_prefix and error messages.

use brainfit_io::{IoError, PutOutcome, Store, join_url};
use bytes::Bytes;

/// Runs the whole put/get/list/delete contract below `root` (a URL or path prefix).
async fn exercise(store: &Store, root: &str) {
    let a = join_url(root, "encoding/conv5/score.npy");
    let b = join_url(root, "encoding/fc6/score.npy");
    let c = join_url(root, "summary.json");
    let outside = format!("{}-sibling/x.bin", root.trim_end_matches('/'));

    store.put(&a, Bytes::from_static(b"0123456789")).await.expect("put a");
    store.put(&b, Bytes::from_static(b"bb")).await.expect("put b");
    store.put(&c, Bytes::from_static(b"{}")).await.expect("put c");
    store.put(&outside, Bytes::from_static(b"x")).await.expect("put outside");

    assert_eq!(store.get(&a).await.expect("get a"), Bytes::from_static(b"0123456789"));
    assert_eq!(store.size(&a).await.expect("size a"), 10);
    assert_eq!(store.get_range(&a, 2..5).await.expect("range"), Bytes::from_static(b"234"));
    assert_eq!(store.get_range(&a, 7..10).await.expect("tail"), Bytes::from_static(b"789"));
    assert!(store.get_range(&a, 4..4).await.expect("empty range").is_empty());
    let err = store.get_range(&a, 8..20).await.expect_err("past end");
    assert!(matches!(err, IoError::Range { .. }), "{err}");
    assert!(err.to_string().contains("only 10 bytes"), "{err}");
    let err = store.get_range(&a, 12..20).await.expect_err("start past end");
    assert!(err.to_string().contains("only 10 bytes"), "{err}");

    // Overwrite.
    store.put(&b, Bytes::from_static(b"new")).await.expect("overwrite");
    assert_eq!(store.get(&b).await.expect("get b"), Bytes::from_static(b"new"));

    // Create-only: first wins, second leaves the data untouched.
    let d = join_url(root, "encoding/conv5/alpha.npy");
    assert_eq!(
        store.put_create(&d, Bytes::from_static(b"first")).await.expect("create"),
        PutOutcome::Created
    );
    assert_eq!(
        store.put_create(&d, Bytes::from_static(b"second")).await.expect("create again"),
        PutOutcome::AlreadyExists
    );
    assert_eq!(store.get(&d).await.expect("get d"), Bytes::from_static(b"first"));

    // Listing: recursive, sorted, full URLs, nothing from the sibling prefix.
    let listed = store.list(root).await.expect("list");
    let mut want = vec![a.clone(), d.clone(), b.clone(), c.clone()];
    want.sort();
    assert_eq!(listed, want);
    for url in &listed {
        store.get(url).await.expect("listed URLs can be read back");
    }
    let sub = store.list(&join_url(root, "encoding/conv5/")).await.expect("list sub");
    assert_eq!(sub, vec![d.clone(), a.clone()]);
    assert!(store.list(&join_url(root, "nothing-here")).await.expect("list none").is_empty());

    // Missing object → NotFound naming the URL.
    let missing = join_url(root, "missing.npy");
    let err = store.get(&missing).await.expect_err("missing");
    assert!(matches!(err, IoError::NotFound { .. }));
    assert_eq!(err.to_string(), format!("{missing}: not found"));
    assert!(matches!(store.size(&missing).await, Err(IoError::NotFound { .. })));
    assert!(matches!(store.get_range(&missing, 0..4).await, Err(IoError::NotFound { .. })));

    // delete_prefix removes everything below, leaves the sibling, tolerates repeats.
    store.delete_prefix(&join_url(root, "encoding")).await.expect("delete encoding");
    assert_eq!(store.list(root).await.expect("list after"), vec![c.clone()]);
    store.delete_prefix(root).await.expect("delete all");
    store.delete_prefix(root).await.expect("delete again is fine");
    assert!(store.list(root).await.expect("list empty").is_empty());
    assert_eq!(store.get(&outside).await.expect("sibling kept"), Bytes::from_static(b"x"));
}

#[tokio::test]
async fn memory_store_contract() {
    let store = Store::new();
    exercise(&store, "memory://test/run1").await;
    exercise(&store, "memory://other/").await;
}

#[tokio::test]
async fn memory_stores_are_shared_by_clones_and_separate_by_name() {
    let store = Store::new();
    let clone = store.clone();
    store.put("memory://m/x", Bytes::from_static(b"1")).await.expect("put");
    assert_eq!(clone.get("memory://m/x").await.expect("clone sees it"), Bytes::from_static(b"1"));
    assert!(matches!(clone.get("memory://n/x").await, Err(IoError::NotFound { .. })));
    // A separate Store has its own memory stores.
    assert!(Store::new().get("memory://m/x").await.is_err());
    assert_eq!(clone.list("memory://m").await.expect("list root"), vec!["memory://m/x"]);
}

#[tokio::test]
async fn file_url_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = format!("file://{}/out", dir.path().display());
    exercise(&Store::new(), &root).await;
}

#[tokio::test]
async fn bare_path_contract_and_directory_creation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = format!("{}/deep/er/out/", dir.path().display());
    exercise(&Store::new(), &root).await;

    // A file written through a bare path is visible through a file:// URL and on disk.
    let store = Store::new();
    let bare = format!("{}/x/y z.npy", dir.path().display());
    store.put(&bare, Bytes::from_static(b"hi")).await.expect("put bare");
    assert_eq!(std::fs::read(&bare).expect("on disk"), b"hi");
    let url = format!("file://{}/x/y%20z.npy", dir.path().display());
    assert_eq!(store.get(&url).await.expect("via file url"), Bytes::from_static(b"hi"));
    let listed = store.list(&format!("file://{}/x", dir.path().display())).await.expect("list");
    assert_eq!(listed, vec![url]);
}

#[tokio::test]
async fn unsupported_schemes_are_named() {
    let store = Store::new();
    // s3://, gs:// and az:// are supported (tests/object_stores.rs at the workspace root runs
    // them against real servers)
    for url in ["ftp://b/x", "hdfs://c/x", "https://example.com/x.npy"] {
        let err = store.get(url).await.expect_err("unsupported");
        let msg = err.to_string();
        assert!(matches!(err, IoError::UnsupportedScheme { .. }), "{msg}");
        assert!(
            msg.starts_with(url) && msg.contains("file://") && msg.contains("memory://"),
            "{msg}"
        );
    }
}

#[test]
fn store_futures_are_send() {
    fn assert_send<T: Send>(_: T) {}
    let store = Store::new();
    assert_send(store.get("memory://a/b"));
    assert_send(store.get_range("memory://a/b", 0..1));
    assert_send(store.put("memory://a/b", Bytes::new()));
    assert_send(store.put_create("memory://a/b", Bytes::new()));
    assert_send(store.list("memory://a"));
    assert_send(store.delete_prefix("memory://a"));
    assert_send(store.size("memory://a/b"));
}

/// A voxel chunk of a brain matrix comes from range requests: in C order one per row, rows
/// closer than `COALESCE_GAP` merged; one in Fortran order; all give exactly the columns a
/// whole read gives.
#[tokio::test]
async fn npy_column_chunks_use_range_requests() {
    use brainfit_io::{COALESCE_GAP, parse_npy, write_npy};
    let store = Store::new();
    let c_order = ndarray::Array2::from_shape_fn((7, 13), |(i, j)| (i * 100 + j) as f32);
    store.put("memory://chunks/c.npy", write_npy(&c_order.view()).into()).await.unwrap();
    let (chunk, requests) = store.get_npy_columns("memory://chunks/c.npy", 3..10).await.unwrap();
    assert_eq!(requests, 1, "7 rows of 28 bytes, 24 bytes apart: one request");
    assert_eq!(chunk.to_f64(), c_order.slice(ndarray::s![.., 3..10]).mapv(f64::from).into_dyn());
    // rows 24 bytes long, 28 apart: the gaps would more than double the bytes, one per row
    let (chunk, requests) = store.get_npy_columns("memory://chunks/c.npy", 3..9).await.unwrap();
    assert_eq!(requests, 7);
    assert_eq!(chunk.to_f64(), c_order.slice(ndarray::s![.., 3..9]).mapv(f64::from).into_dyn());
    // what a piece of work read, counted: the header, then the merged rows
    let (read, count) =
        brainfit_io::counting_reads(store.get_npy_columns("memory://chunks/c.npy", 3..10)).await;
    assert_eq!(read.unwrap().1, 1);
    let file = store.size("memory://chunks/c.npy").await.unwrap();
    // the header probe reads this small file whole; the rows span row 0 col 3 to row 6 col 10
    let span = ((6 * 13 + 10) - 3) * 4;
    assert_eq!(count, brainfit_io::ReadCount { requests: 2, bytes: file + span });
    let (_, nothing) = brainfit_io::counting_reads(async {}).await;
    assert_eq!(nothing, brainfit_io::ReadCount::default());
    // rows farther apart than the gap: one request each
    let cols = (COALESCE_GAP as usize) / 4 + 20;
    let wide = ndarray::Array2::from_shape_fn((5, cols), |(i, j)| (i * cols + j) as f32);
    store.put("memory://chunks/w.npy", write_npy(&wide.view()).into()).await.unwrap();
    let (chunk, requests) = store.get_npy_columns("memory://chunks/w.npy", 2..12).await.unwrap();
    assert_eq!(requests, 5);
    assert_eq!(chunk.to_f64(), wide.slice(ndarray::s![.., 2..12]).mapv(f64::from).into_dyn());
    // Fortran order (made by numpy): one request
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/npy/be_f4_fortran_3x2.npy");
    let bytes = std::fs::read(path).unwrap();
    let whole = parse_npy(&bytes, path).unwrap().to_f64();
    store.put("memory://chunks/f.npy", bytes.into()).await.unwrap();
    let (chunk, requests) = store.get_npy_columns("memory://chunks/f.npy", 1..2).await.unwrap();
    assert_eq!(requests, 1);
    assert_eq!(chunk.to_f64(), whole.slice(ndarray::s![.., 1..2]).into_dyn());
    // several runs of columns (the voxels of a few ROIs), side by side, in either order
    let pick = |runs: &[std::ops::Range<usize>]| {
        let columns: Vec<usize> = runs.iter().flat_map(Clone::clone).collect();
        c_order.select(ndarray::Axis(1), &columns).mapv(f64::from).into_dyn()
    };
    // rows of 52 bytes; every gap (4, 12 and, across rows, 4 bytes) is shorter than the range
    // after it: one request
    let runs = [1..3, 4..6, 9..13];
    let (chunk, requests) =
        store.get_npy_column_runs("memory://chunks/c.npy", &runs).await.unwrap();
    assert_eq!((chunk.to_f64(), requests), (pick(&runs), 1));
    // a one-voxel run 8 bytes past the one before it is read on its own: 1 + 7 rows
    let runs = [1..3, 5..6, 9..13];
    let (chunk, requests) =
        store.get_npy_column_runs("memory://chunks/c.npy", &runs).await.unwrap();
    assert_eq!((chunk.to_f64(), requests), (pick(&runs), 8));
    // Fortran order: columns of 28 bytes, one range per run (112-byte gaps)
    let mut fortran = brainfit_io::npy_header::<f32>(&[7, 13], true);
    for x in c_order.t() {
        fortran.extend_from_slice(&x.to_le_bytes());
    }
    store.put("memory://chunks/f13.npy", fortran.into()).await.unwrap();
    let runs = [0..1, 5..6, 10..13];
    let (chunk, requests) =
        store.get_npy_column_runs("memory://chunks/f13.npy", &runs).await.unwrap();
    assert_eq!((chunk.to_f64(), requests), (pick(&runs), 3));
    let err = store.get_npy_column_runs("memory://chunks/c.npy", &[5..6, 1..3]).await.unwrap_err();
    assert!(err.to_string().contains("ascending"), "{err}");
    // out of range and truncated files are clear errors naming the object
    let err = store.get_npy_columns("memory://chunks/c.npy", 10..14).await.unwrap_err().to_string();
    assert!(err.contains("c.npy") && err.contains("outside"), "{err}");
    let full = store.get("memory://chunks/c.npy").await.unwrap();
    store.put("memory://chunks/t.npy", full.slice(..full.len() - 4)).await.unwrap();
    let err = store.get_npy_columns("memory://chunks/t.npy", 0..2).await.unwrap_err().to_string();
    assert!(err.contains("t.npy") && err.contains("truncated"), "{err}");
}

#[tokio::test]
async fn fifos_and_directories_are_refused_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("brain.npy");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let store = Store::new();
    for url in [
        format!("file://{}", fifo.display()),
        fifo.display().to_string(),
        format!("file://{}", dir.path().display()),
    ] {
        // a FIFO would block a read forever: the refusal must come before any read
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), store.get(&url))
            .await
            .expect("refused at once, not blocked")
            .unwrap_err();
        assert!(
            e.to_string().contains("not a regular file") && e.to_string().contains(&url),
            "{e}"
        );
        assert!(store.size(&url).await.unwrap_err().to_string().contains("not a regular file"));
    }
}
