//! NIfTI-1 reading against nibabel/nilearn reference files, writing round trips, masks,
//! and clear errors for files brainfit cannot read.

#![allow(clippy::needless_range_loop)] // 4x4 affine comparisons read best with indices

use brainfit_io::{
    IoError, Mask, Nifti, parse_nifti, parse_npy, try_write_nifti_f32, write_nifti_f32,
};
use ndarray::{Array3, ArrayD, IxDyn};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/nifti/");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");

fn read(dir: &str, name: &str) -> Vec<u8> {
    let path = format!("{dir}{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {path}: {e}"))
}

fn load_nifti(dir: &str, name: &str) -> Nifti {
    parse_nifti(&read(dir, name), name).unwrap_or_else(|e| panic!("{e}"))
}

fn load_npy_f64(dir: &str, name: &str) -> ArrayD<f64> {
    parse_npy(&read(dir, name), name).unwrap_or_else(|e| panic!("{e}")).to_f64()
}

fn affine_of(a: &ArrayD<f64>) -> [[f64; 4]; 4] {
    let mut out = [[0.0; 4]; 4];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = a[IxDyn(&[r, c])];
        }
    }
    out
}

#[test]
fn fixture_img4d_and_mask_match_nilearn() {
    let img = load_nifti(FIXTURES, "img4d.nii.gz");
    assert_eq!(img.dim, vec![5, 6, 4, 3]);
    assert_eq!(img.pixdim, [2.0, 2.0, 3.0]);
    let affine = affine_of(&load_npy_f64(FIXTURES, "affine.npy"));
    assert_eq!(img.affine, affine);
    // data[i,j,k,t] = 1000 t + 100 i + 10 j + k + U(0, 0.5)
    for (idx, &v) in img.data.indexed_iter() {
        let base = (1000 * idx[3] + 100 * idx[0] + 10 * idx[1] + idx[2]) as f64;
        assert!(v >= base && v < base + 0.5, "{idx:?}: {v}");
    }

    let mask_img = load_nifti(FIXTURES, "mask.nii.gz");
    let mask = Mask::from_nifti(&mask_img, "mask.nii.gz").expect("mask");
    assert_eq!(mask.shape, [5, 6, 4]);
    assert_eq!(mask.affine, affine);
    let ijk = parse_npy(&read(FIXTURES, "mask_ijk.npy"), "mask_ijk.npy")
        .expect("ijk")
        .to_i64("mask_ijk.npy")
        .expect("ints");
    assert_eq!(mask.len(), ijk.shape()[0]);
    for (v, vox) in mask.voxels.iter().enumerate() {
        let want = [ijk[IxDyn(&[v, 0])], ijk[IxDyn(&[v, 1])], ijk[IxDyn(&[v, 2])]];
        assert_eq!(vox.map(|x| x as i64), want, "voxel {v}");
    }

    // world coordinates: the affine times [i, j, k, 1], one matrix-vector product per voxel
    for (v, vox) in mask.voxels.iter().enumerate() {
        let h = [vox[0] as f64, vox[1] as f64, vox[2] as f64, 1.0];
        let want: Vec<f64> = (0..3).map(|r| (0..4).map(|c| affine[r][c] * h[c]).sum()).collect();
        assert_eq!(mask.world(v).to_vec(), want, "voxel {v}");
    }

    let masked = mask.apply(&img, "img4d.nii.gz").expect("apply");
    let want = parse_npy(&read(FIXTURES, "masked.npy"), "masked.npy").expect("masked");
    assert_eq!(want.dtype_name(), "float32");
    assert_eq!(masked.shape(), want.shape());
    // nilearn keeps float32; our float64 values are those float32 values exactly.
    let masked32 = masked.mapv(|x| x as f32).into_dyn();
    assert_eq!(masked32, want.to_f32());

    // unmask puts column values back at their voxels, NaN elsewhere.
    let row: Vec<f64> = masked.row(1).to_vec();
    let vol = mask.unmask(&row).expect("unmask");
    let mut inside = 0;
    for ((i, j, k), &v) in vol.indexed_iter() {
        if mask.voxels.contains(&[i, j, k]) {
            inside += 1;
            assert_eq!(f64::from(v), img.data[IxDyn(&[i, j, k, 1])] as f32 as f64);
        } else {
            assert!(v.is_nan());
        }
    }
    assert_eq!(inside, mask.len());
}

#[test]
fn fixture_scaled_int16_matches_get_fdata() {
    let img = load_nifti(FIXTURES, "img_scaled.nii");
    assert_eq!(img.dim, vec![5, 6, 4]);
    let want = load_npy_f64(FIXTURES, "scaled_expected.npy");
    assert_eq!(img.data, want);
    assert_eq!(img.affine, affine_of(&load_npy_f64(FIXTURES, "affine.npy")));
}

#[test]
fn qform_only_oblique_image_matches_nibabel() {
    let img = load_nifti(DATA, "qform_oblique.nii");
    let want = affine_of(&load_npy_f64(DATA, "qform_oblique_affine.npy"));
    for r in 0..4 {
        for c in 0..4 {
            let (a, b) = (img.affine[r][c], want[r][c]);
            // nibabel computes the qform in x87 long double; we use f64, so entries that
            // suffer cancellation can differ in the last bits (here ~1e-18 absolute).
            assert!((a - b).abs() <= 1e-14, "[{r}][{c}]: {a} vs {b}");
        }
    }
    assert_eq!(img.data, load_npy_f64(DATA, "qform_oblique_data.npy"));
}

#[test]
fn big_endian_gzip_without_xform_uses_base_affine() {
    let img = load_nifti(DATA, "noxform_be.nii.gz");
    assert_eq!(img.dim, vec![4, 3, 2, 2]);
    assert_eq!(img.pixdim, [2.0, 3.0, 4.0]);
    assert_eq!(img.affine, affine_of(&load_npy_f64(DATA, "noxform_be_affine.npy")));
    assert_eq!(img.data, load_npy_f64(DATA, "noxform_be_data.npy"));
}

fn test_volume() -> Array3<f32> {
    Array3::from_shape_fn((4, 3, 5), |(i, j, k)| {
        if (i + j + k) % 7 == 0 { f32::NAN } else { (i * 100 + j * 10 + k) as f32 - 0.25 }
    })
}

const AFFINE: [[f64; 4]; 4] = [
    [-2.0, 0.0, 0.0, 90.0],
    [0.0, 2.0, 0.0, -126.0],
    [0.0, 0.0, 2.5, -72.25],
    [0.0, 0.0, 0.0, 1.0],
];

fn assert_same_volume(img: &Nifti, vol: &Array3<f32>) {
    assert_eq!(img.dim, vol.shape().to_vec());
    for ((i, j, k), &v) in vol.indexed_iter() {
        let got = img.data[IxDyn(&[i, j, k])];
        if v.is_nan() {
            assert!(got.is_nan(), "[{i},{j},{k}] should be NaN, got {got}");
        } else {
            assert_eq!(got, f64::from(v), "[{i},{j},{k}]");
        }
    }
}

#[test]
fn write_then_parse_round_trip_plain_and_gzip() {
    let vol = test_volume();
    for gzip in [false, true] {
        let bytes = write_nifti_f32(vol.view(), &AFFINE, gzip);
        assert_eq!(bytes.starts_with(&[0x1f, 0x8b]), gzip);
        if !gzip {
            assert_eq!(bytes.len(), 352 + 4 * vol.len());
        }
        let img = parse_nifti(&bytes, "out.nii").expect("parse what we wrote");
        assert_eq!(img.affine, AFFINE);
        assert_eq!(img.pixdim, [2.0, 2.0, 2.5]);
        assert_same_volume(&img, &vol);
    }
}

/// Sets sform_code (bytes 254..256, little-endian) in an uncompressed image.
fn with_sform_code(mut bytes: Vec<u8>, code: i16) -> Vec<u8> {
    bytes[254..256].copy_from_slice(&code.to_le_bytes());
    bytes
}

#[test]
fn written_qform_reproduces_the_affine() {
    // Axis-aligned with a flip: the quaternion is exact, so is the qform affine.
    let bytes = with_sform_code(write_nifti_f32(test_volume().view(), &AFFINE, false), 0);
    let img = parse_nifti(&bytes, "q.nii").expect("qform");
    assert_eq!(img.affine, AFFINE);

    // Oblique: equal to float32 precision.
    let (a, b) = (0.4f64, 0.9f64);
    let mut oblique = AFFINE;
    let rot = [
        [a.cos(), -a.sin() * b.cos(), a.sin() * b.sin()],
        [a.sin(), a.cos() * b.cos(), -a.cos() * b.sin()],
        [0.0, b.sin(), b.cos()],
    ];
    let zooms = [1.5, 2.0, 3.0];
    for i in 0..3 {
        for j in 0..3 {
            oblique[i][j] = rot[i][j] * zooms[j];
        }
    }
    let bytes = with_sform_code(write_nifti_f32(test_volume().view(), &oblique, false), 0);
    let img = parse_nifti(&bytes, "q2.nii").expect("qform oblique");
    for i in 0..4 {
        for j in 0..4 {
            assert!(
                (img.affine[i][j] - oblique[i][j]).abs() < 1e-5,
                "[{i}][{j}] {} vs {}",
                img.affine[i][j],
                oblique[i][j]
            );
        }
    }
}

#[test]
fn oversized_volume_cannot_be_written() {
    let vol = Array3::<f32>::zeros((40000, 1, 1));
    let err = try_write_nifti_f32(vol.view(), &AFFINE, false).expect_err("too large");
    assert!(err.to_string().contains("32767"), "{err}");
    assert!(write_nifti_f32(vol.view(), &AFFINE, false).is_empty());
}

#[test]
fn header_errors_are_clear() {
    let good = write_nifti_f32(test_volume().view(), &AFFINE, false);

    let err = parse_nifti(&good[..good.len() - 10], "t.nii").expect_err("truncated");
    let msg = err.to_string();
    assert!(matches!(err, IoError::Nifti { .. }));
    assert!(
        msg.starts_with("t.nii: truncated NIfTI: header says 4x3x5 float32 (240 bytes)"),
        "{msg}"
    );

    let mut b = good.clone();
    b[344..348].copy_from_slice(b"ni1\0");
    let msg = parse_nifti(&b, "pair.hdr").expect_err("pair").to_string();
    assert!(msg.contains(".hdr/.img pair"), "{msg}");

    let mut b = good.clone();
    b[40..42].copy_from_slice(&5i16.to_le_bytes());
    let msg = parse_nifti(&b, "5d.nii").expect_err("5-D").to_string();
    assert!(msg.contains("dim[0] = 5"), "{msg}");

    let mut b = good.clone();
    b[108..112].copy_from_slice(&100f32.to_le_bytes());
    let msg = parse_nifti(&b, "off.nii").expect_err("vox_offset").to_string();
    assert!(msg.starts_with("off.nii: bad vox_offset 100"), "{msg}");

    let mut b = good.clone();
    b[108..112].copy_from_slice(&1e9f32.to_le_bytes());
    let msg = parse_nifti(&b, "far.nii").expect_err("vox_offset past end").to_string();
    assert!(msg.contains("truncated"), "{msg}");

    let mut b = good.clone();
    b[70..72].copy_from_slice(&32i16.to_le_bytes());
    let msg = parse_nifti(&b, "c.nii").expect_err("complex").to_string();
    assert!(msg.contains("datatype 32 (complex64)"), "{msg}");

    let mut b = good.clone();
    b[0..4].copy_from_slice(&540i32.to_le_bytes());
    let msg = parse_nifti(&b, "n2.nii").expect_err("nifti2").to_string();
    assert!(msg.contains("NIfTI-2"), "{msg}");

    let msg = parse_nifti(b"hello world", "x.nii").expect_err("junk").to_string();
    assert!(msg.starts_with("x.nii: not a NIfTI-1 file"), "{msg}");

    let msg = parse_nifti(&[0x1f, 0x8b, 0, 0], "bad.nii.gz").expect_err("bad gzip").to_string();
    assert!(msg.starts_with("bad.nii.gz: gzip"), "{msg}");
}

#[test]
fn big_endian_and_4d_singleton_are_read() {
    // Convert our little-endian float32 file to big-endian by hand.
    let vol = test_volume();
    let le = write_nifti_f32(vol.view(), &AFFINE, false);
    let mut be = le.clone();
    let swap = |b: &mut Vec<u8>, off: usize, n: usize| b[off..off + n].reverse();
    swap(&mut be, 0, 4);
    for i in 0..8 {
        swap(&mut be, 40 + 2 * i, 2);
        swap(&mut be, 76 + 4 * i, 4);
    }
    for off in [70, 72, 252, 254] {
        swap(&mut be, off, 2);
    }
    for off in (108..120).step_by(4).chain((256..328).step_by(4)) {
        swap(&mut be, off, 4);
    }
    for off in (352..be.len()).step_by(4) {
        swap(&mut be, off, 4);
    }
    let img = parse_nifti(&be, "be.nii").expect("big-endian");
    assert_eq!(img.affine, AFFINE);
    assert_same_volume(&img, &vol);

    // dim[0] = 4 with nt = 1 is kept as 4-D and is a valid mask.
    let mut b = le;
    b[40..42].copy_from_slice(&4i16.to_le_bytes());
    let img = parse_nifti(&b, "4d1.nii").expect("4-D, one volume");
    assert_eq!(img.dim, vec![4, 3, 5, 1]);
    let mask = Mask::from_nifti(&img, "4d1.nii").expect("mask from 4-D singleton");
    // NaN is out of the mask, as is the single zero at (0, 0, 0)? (0,0,0) is NaN here.
    let expected = vol.iter().filter(|v| v.is_finite() && **v != 0.0).count();
    assert_eq!(mask.len(), expected);
}

#[test]
fn mask_rules_and_errors() {
    let mut data = ArrayD::<f64>::zeros(IxDyn(&[2, 3, 2]));
    data[IxDyn(&[1, 0, 1])] = 1.0;
    data[IxDyn(&[0, 2, 0])] = 3.0; // any nonzero value is in
    data[IxDyn(&[0, 1, 1])] = f64::NAN; // non-finite is out
    data[IxDyn(&[1, 1, 0])] = f64::INFINITY;
    let n = Nifti { dim: vec![2, 3, 2], pixdim: [1.0; 3], affine: AFFINE, data };
    let mask = Mask::from_nifti(&n, "m.nii").expect("mask");
    assert_eq!(mask.voxels, vec![[0, 2, 0], [1, 0, 1]]); // k fastest, i slowest
    assert!(!mask.is_empty());

    let empty = Nifti { data: ArrayD::zeros(IxDyn(&[2, 3, 2])), ..n.clone() };
    let msg = Mask::from_nifti(&empty, "e.nii").expect_err("empty").to_string();
    assert!(msg.starts_with("e.nii: empty mask"), "{msg}");

    let four =
        Nifti { dim: vec![2, 3, 2, 2], data: ArrayD::ones(IxDyn(&[2, 3, 2, 2])), ..n.clone() };
    let msg = Mask::from_nifti(&four, "4d.nii").expect_err("4-D").to_string();
    assert!(msg.contains("2x3x2x2"), "{msg}");

    // apply: 3-D image counts as one volume; shape and affine must match.
    let img3 = Nifti {
        data: ArrayD::from_shape_fn(IxDyn(&[2, 3, 2]), |ix| {
            (ix[0] * 100 + ix[1] * 10 + ix[2]) as f64
        }),
        ..n.clone()
    };
    let out = mask.apply(&img3, "i.nii").expect("apply 3-D");
    assert_eq!(out.shape(), &[1, 2]);
    assert_eq!(out.row(0).to_vec(), vec![20.0, 101.0]);

    let wrong_shape =
        Nifti { dim: vec![2, 3, 3, 4], data: ArrayD::zeros(IxDyn(&[2, 3, 3, 4])), ..n.clone() };
    let msg = mask.apply(&wrong_shape, "w.nii").expect_err("shape").to_string();
    assert!(msg.starts_with("w.nii: image shape 2x3x3x4"), "{msg}");

    let mut shifted = img3.clone();
    shifted.affine[0][3] += 1.0;
    let msg = mask.apply(&shifted, "s.nii").expect_err("affine").to_string();
    assert!(msg.contains("affine"), "{msg}");

    let msg = mask.unmask(&[1.0]).expect_err("length").to_string();
    assert!(msg.contains("got 1 values but the mask has 2 voxels"), "{msg}");
}

#[test]
fn dims_from_the_header_alone() {
    let vol = test_volume();
    for gzip in [false, true] {
        let mut bytes = write_nifti_f32(vol.view(), &AFFINE, gzip);
        let full = brainfit_io::parse_nifti(&bytes, "img.nii").unwrap();
        assert_eq!(brainfit_io::parse_nifti_dims(&bytes, "img.nii").unwrap(), full.dim);
        if !gzip {
            // the header alone says it: the voxels are not needed (nor read)
            bytes.truncate(352);
            assert_eq!(brainfit_io::parse_nifti_dims(&bytes, "img.nii").unwrap(), full.dim);
            // a header declaring 1260³ float32 voxels is refused from the header
            for d in 0..3 {
                bytes[42 + 2 * d..44 + 2 * d].copy_from_slice(&1260i16.to_le_bytes());
            }
            let e = brainfit_io::parse_nifti_dims(&bytes, "bomb.nii").unwrap_err().to_string();
            assert!(e.contains("bomb.nii") && e.contains("memory budget"), "{e}");
        }
    }
}
