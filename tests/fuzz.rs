//! Fuzzing the parsers of untrusted input: `.npy`, `.npz`, NIfTI-1 (raw and gzipped) and job
//! files. Each case mutates a valid file (flipped, inserted and deleted bytes, truncation) and
//! checks that parsing returns — a value or a clear error — without panicking, without
//! allocating beyond the input and memory budget, and without quoting the input in the error.
//! CI runs proptest's default 256 cases per parser; `scripts/fuzz.sh` runs many more.

use brainfit_io::{
    parse_nifti, parse_nifti_dims, parse_npy, parse_npz, write_nifti_f32, write_npy,
};
use brainfit_job::JobSpec;
use ndarray::{Array2, Array3};
use proptest::prelude::*;
use std::io::Write;

/// Byte edits applied to a valid file.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
    ];
    proptest::collection::vec(edit, 1..8)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if bytes.is_empty() {
            break;
        }
        let n = bytes.len();
        match *e {
            Edit::Flip(i, b) => bytes[i % n] ^= b | 1,
            Edit::Insert(i, b) => bytes.insert(i % (n + 1), b),
            Edit::Delete(i) => {
                bytes.remove(i % n);
            }
            Edit::Truncate(i) => bytes.truncate(i % n),
        }
    }
    bytes
}

/// Error messages name the file and say what is wrong, but never echo its bytes: the
/// marker below is planted in every seed's data.
const MARKER: &str = "SECRETMARK";

fn npy_seed() -> Vec<u8> {
    let a = Array2::<f64>::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64);
    let mut bytes = write_npy(&a.view());
    bytes.extend_from_slice(MARKER.as_bytes()); // trailing bytes: an error on its own
    bytes
}

fn nifti_seed(gzip: bool) -> Vec<u8> {
    let eye =
        [[2.0, 0.0, 0.0, 1.0], [0.0, 2.0, 0.0, 2.0], [0.0, 0.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]];
    write_nifti_f32(Array3::<f32>::from_elem((3, 4, 2), 1.5).view(), &eye, gzip)
}

fn npz_seed() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for name in ["fc6.npy", "fc7.npy"] {
        zip.start_file(name, options).unwrap();
        zip.write_all(&write_npy(&Array2::<f32>::ones((5, 3)).view())).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

const JOB: &str = r#"
name = "fuzz"
output = "out"
[data]
brain = "brain.npy"
mask = "mask.nii.gz"
groups = [0, 0, 1, 1]
[features]
conv5 = "conv5.npy"
[encoding]
alphas = { logspace = [-2, 5, 15] }
cv = { kind = "group" }
delays = [0, 1]
[rsa]
rois = { it = "it.nii.gz" }
models = { animacy = "animacy.npy" }
[permutation]
n = 100
scheme = "within-group"
"#;

fn no_echo(message: &str) {
    assert!(!message.contains(MARKER), "the error quotes the input: {message}");
}

proptest! {
    #[test]
    fn npy_parser_never_panics(e in edits()) {
        let bytes = apply(npy_seed(), &e);
        if let Err(err) = parse_npy(&bytes, "fuzz.npy") {
            no_echo(&err.to_string());
        }
    }

    #[test]
    fn npz_parser_never_panics(e in edits()) {
        let _ = parse_npz(&apply(npz_seed(), &e), "fuzz.npz");
    }

    #[test]
    fn nifti_parser_never_panics(e in edits(), gzip in any::<bool>()) {
        let bytes = apply(nifti_seed(gzip), &e);
        let _ = parse_nifti(&bytes, "fuzz.nii.gz");
        let _ = parse_nifti_dims(&bytes, "fuzz.nii.gz");
    }

    #[test]
    fn job_file_parser_never_panics(e in edits()) {
        // job files are text: mutate bytes, keep what is still UTF-8
        let bytes = apply(JOB.as_bytes().to_vec(), &e);
        if let Ok(text) = String::from_utf8(bytes) {
            let _ = JobSpec::from_toml(&text, "fuzz.toml", "file:///base");
        }
    }
}

#[test]
fn the_seeds_themselves_parse() {
    // the fuzzed files start valid (except the .npy's planted trailing bytes)
    let npy = npy_seed();
    assert!(parse_npy(&npy[..npy.len() - MARKER.len()], "seed.npy").is_ok());
    no_echo(&parse_npy(&npy, "seed.npy").unwrap_err().to_string());
    assert_eq!(parse_npz(&npz_seed(), "seed.npz").unwrap().len(), 2);
    assert!(parse_nifti(&nifti_seed(true), "seed.nii.gz").is_ok());
    assert!(parse_nifti(&nifti_seed(false), "seed.nii").is_ok());
    assert!(JobSpec::from_toml(JOB, "seed.toml", "file:///base").is_ok());
}
