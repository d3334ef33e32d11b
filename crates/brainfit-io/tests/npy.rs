//! `.npy` / `.npz` behaviour: round trips for every element type and awkward shapes,
//! byte orders, Fortran order, header variants, and clear errors for bad files.

use std::io::Write;

use brainfit_io::{IoError, NpyData, parse_npy, parse_npy_header, parse_npz, write_npy};
use ndarray::{Array, ArrayD, IxDyn, arr0, array};

/// Hand-builds a `.npy` file with the given version, raw header dict text and data bytes.
fn npy_bytes(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY".to_vec();
    out.push(version);
    out.push(0);
    let prefix = if version == 1 { 10 } else { 12 };
    let mut header = dict.to_string();
    while !(prefix + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn round_trip_every_element_type() {
    let f32a = array![[1.5f32, -2.0, f32::NAN], [0.0, f32::INFINITY, 3.25]];
    let got = parse_npy(&write_npy(&f32a.view()), "f32.npy").expect("f32");
    assert_eq!(got.dtype_name(), "float32");
    assert_eq!(got.shape(), &[2, 3]);
    let NpyData::F32(a) = &got.data else { panic!("expected F32, got {}", got.dtype_name()) };
    for (x, y) in a.iter().zip(f32a.iter()) {
        assert!(x == y || (x.is_nan() && y.is_nan()), "{x} vs {y}");
    }
    assert!(got.has_non_finite());

    let f64a = array![1.0f64, -1e300, 5e-324];
    let got = parse_npy(&write_npy(&f64a.view()), "f64.npy").expect("f64");
    assert!(got.is_f64());
    assert!(!got.has_non_finite());
    assert_eq!(got.data, NpyData::F64(f64a.clone().into_dyn()));

    let i64a = array![[i64::MIN, 0], [7, i64::MAX]];
    let got = parse_npy(&write_npy(&i64a.view()), "i64.npy").expect("i64");
    assert_eq!(got.data, NpyData::I64(i64a.clone().into_dyn()));

    let i32a = Array::from_shape_fn((2, 3, 4), |(a, b, c)| (a * 100 + b * 10 + c) as i32 - 50);
    let got = parse_npy(&write_npy(&i32a.view()), "i32.npy").expect("i32");
    assert_eq!(got.data, NpyData::I32(i32a.clone().into_dyn()));

    let u8a = array![0u8, 1, 255];
    let got = parse_npy(&write_npy(&u8a.view()), "u8.npy").expect("u8");
    assert_eq!(got.data, NpyData::U8(u8a.clone().into_dyn()));

    let ba = array![true, false, true];
    let got = parse_npy(&write_npy(&ba.view()), "b.npy").expect("bool");
    assert_eq!(got.data, NpyData::Bool(ba.clone().into_dyn()));
    assert_eq!(got.to_i64("b.npy").expect("bool to i64").as_slice(), Some(&[1i64, 0, 1][..]));
}

#[test]
fn round_trip_zero_d_and_empty_shapes() {
    let scalar = arr0(4.5f64);
    let bytes = write_npy(&scalar.view());
    let h = parse_npy_header(&bytes, "s.npy").expect("header");
    assert_eq!(h.shape, Vec::<usize>::new());
    let got = parse_npy(&bytes, "s.npy").expect("0-d");
    assert_eq!(got.shape(), &[] as &[usize]);
    assert_eq!(got.to_f64()[IxDyn(&[])], 4.5);

    for shape in [vec![0usize], vec![0, 5], vec![3, 0, 2]] {
        let a = ArrayD::<f32>::zeros(IxDyn(&shape));
        let bytes = write_npy(&a.view());
        let got = parse_npy(&bytes, "empty.npy").expect("empty");
        assert_eq!(got.shape(), shape.as_slice());
        assert_eq!(got.to_f32().len(), 0);
    }
    // The header text matches numpy's repr of each shape.
    let one = Array::<i32, _>::zeros(5);
    let bytes = write_npy(&one.view());
    let text = String::from_utf8_lossy(&bytes[10..70]).to_string();
    assert!(text.contains("'shape': (5,)"), "{text}");
    let text = String::from_utf8_lossy(&write_npy(&scalar.view())[10..70]).to_string();
    assert!(text.contains("'shape': ()"), "{text}");
}

#[test]
fn non_contiguous_views_are_written_in_logical_order() {
    let a = Array::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64);
    let t = a.t(); // 4x3, Fortran layout in memory
    let got = parse_npy(&write_npy(&t), "t.npy").expect("transposed");
    assert_eq!(got.to_f64(), t.to_owned().into_dyn());
}

#[test]
fn fortran_order_file_gives_the_logical_array() {
    // numpy: a = np.arange(6, dtype='<i4').reshape(2, 3); np.save(f, np.asfortranarray(a))
    // stores columns first: 0 3 1 4 2 5.
    let data: Vec<u8> = [0i32, 3, 1, 4, 2, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = npy_bytes(1, "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }", &data);
    let got = parse_npy(&bytes, "f.npy").expect("fortran");
    let want = array![[0i32, 1, 2], [3, 4, 5]].into_dyn();
    assert_eq!(got.data, NpyData::I32(want.clone()));
    // Returned in standard layout so that as_slice() gives C order.
    let NpyData::I32(a) = got.data else { panic!("expected I32") };
    assert_eq!(a.as_slice(), Some(&[0, 1, 2, 3, 4, 5][..]));

    // 3-D Fortran order, big-endian f8.
    let shape = (2usize, 3usize, 2usize);
    let logical = Array::from_shape_fn(shape, |(i, j, k)| (i * 100 + j * 10 + k) as f64);
    let mut data = Vec::new();
    for k in 0..2 {
        for j in 0..3 {
            for i in 0..2 {
                data.extend_from_slice(&logical[[i, j, k]].to_be_bytes());
            }
        }
    }
    let bytes =
        npy_bytes(1, "{'descr': '>f8', 'fortran_order': True, 'shape': (2, 3, 2), }", &data);
    let got = parse_npy(&bytes, "f3.npy").expect("fortran 3-d");
    assert_eq!(got.to_f64(), logical.into_dyn());
}

#[test]
fn byte_orders_and_widened_types() {
    let be: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
    let got = parse_npy(
        &npy_bytes(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", &be),
        "be.npy",
    )
    .expect("big-endian f4");
    assert_eq!(got.data, NpyData::F32(array![1.5f32, -2.0].into_dyn()));

    let i2: Vec<u8> = [-300i16, 7].iter().flat_map(|v| v.to_be_bytes()).collect();
    let got = parse_npy(
        &npy_bytes(1, "{'descr': '>i2', 'fortran_order': False, 'shape': (2,), }", &i2),
        "i2.npy",
    )
    .expect("i2");
    assert_eq!(got.data, NpyData::I32(array![-300, 7].into_dyn()));

    let u2: Vec<u8> = [65535u16, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let got = parse_npy(
        &npy_bytes(1, "{'descr': '<u2', 'fortran_order': False, 'shape': (2,), }", &u2),
        "u2.npy",
    )
    .expect("u2");
    assert_eq!(got.data, NpyData::I32(array![65535, 1].into_dyn()));

    let got = parse_npy(
        &npy_bytes(1, "{'descr': '|i1', 'fortran_order': False, 'shape': (2,), }", &[0xff, 5]),
        "i1.npy",
    )
    .expect("i1");
    assert_eq!(got.data, NpyData::I32(array![-1, 5].into_dyn()));

    let i8be: Vec<u8> = [-5i64, 1 << 40].iter().flat_map(|v| v.to_be_bytes()).collect();
    let got = parse_npy(
        &npy_bytes(1, "{'descr': '>i8', 'fortran_order': False, 'shape': (2,), }", &i8be),
        "i8.npy",
    )
    .expect("i8");
    assert_eq!(got.data, NpyData::I64(array![-5, 1 << 40].into_dyn()));

    let u8big: Vec<u8> = u64::MAX.to_le_bytes().to_vec();
    let err = parse_npy(
        &npy_bytes(1, "{'descr': '<u8', 'fortran_order': False, 'shape': (1,), }", &u8big),
        "u8big.npy",
    )
    .expect_err("u64 max does not fit i64");
    assert!(err.to_string().contains("u8big.npy"), "{err}");
}

#[test]
fn header_variants_versions_2_and_3() {
    let data: Vec<u8> = [1.0f64, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    // Keys in another order, odd spacing, no trailing comma.
    let dict = "{ 'shape':(2 ,) ,'fortran_order':False,\"descr\":'<f8'}";
    for version in [1u8, 2, 3] {
        let bytes = npy_bytes(version, dict, &data);
        let h = parse_npy_header(&bytes, "v.npy").expect("header");
        assert_eq!(h.dtype, "<f8");
        assert!(!h.fortran_order);
        assert_eq!(h.shape, vec![2]);
        assert_eq!(h.data_offset, bytes.len() - 16);
        let got = parse_npy(&bytes, "v.npy").expect("data");
        assert_eq!(got.to_f64().as_slice(), Some(&[1.0, 2.0][..]));
    }
    // Header alone is enough for parse_npy_header (range-read use case).
    let bytes = npy_bytes(1, dict, &data);
    let h = parse_npy_header(&bytes[..64], "head.npy").expect("header only");
    assert_eq!(h.data_offset, 64);
    assert_eq!(h.data_len("head.npy").expect("len"), 16);
}

#[test]
fn truncated_file_error_names_the_file_and_sizes() {
    let a = Array::<f32, _>::zeros((12, 50));
    let bytes = write_npy(&a.view());
    let cut = &bytes[..bytes.len() - 100];
    let err = parse_npy(cut, "s3://b/x.npy").expect_err("truncated");
    assert!(matches!(err, IoError::Npy { .. }));
    assert_eq!(
        err.to_string(),
        "s3://b/x.npy: truncated .npy: header says 12x50 f4 (2400 bytes) but only 2300 bytes follow"
    );

    let mut long = bytes.clone();
    long.extend_from_slice(&[0, 0, 0]);
    let err = parse_npy(&long, "extra.npy").expect_err("trailing bytes");
    let msg = err.to_string();
    assert!(msg.starts_with("extra.npy: 3 unexpected bytes"), "{msg}");

    let err = parse_npy(&bytes[..40], "h.npy").expect_err("truncated header");
    assert!(err.to_string().contains("h.npy: truncated .npy header"), "{err}");
    let err = parse_npy(&bytes[..7], "v.npy").expect_err("truncated version");
    assert!(err.to_string().starts_with("v.npy: truncated"), "{err}");
}

#[test]
fn bad_magic_version_and_dtypes_are_rejected() {
    let err = parse_npy(b"PK\x03\x04 not npy", "x.npy").expect_err("magic");
    assert!(err.to_string().starts_with("x.npy: not a .npy file"), "{err}");
    let err = parse_npy(b"", "empty.npy").expect_err("empty");
    assert!(err.to_string().contains("only 0 bytes"), "{err}");

    let mut bytes = write_npy(&array![1.0f32].view());
    bytes[6] = 4;
    let err = parse_npy(&bytes, "v4.npy").expect_err("version");
    assert!(err.to_string().contains("version 4.0"), "{err}");

    let obj = npy_bytes(1, "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", &[0; 8]);
    let err = parse_npy(&obj, "o.npy").expect_err("object");
    assert!(err.to_string().contains("object array"), "{err}");

    let rec = npy_bytes(
        1,
        "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }",
        &[0; 8],
    );
    let err = parse_npy(&rec, "rec.npy").expect_err("structured");
    assert!(err.to_string().contains("structured"), "{err}");

    let half = npy_bytes(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (1,), }", &[0; 2]);
    let err = parse_npy(&half, "h.npy").expect_err("f2");
    assert!(err.to_string().contains("float16"), "{err}");

    let bad = npy_bytes(1, "{'descr': '<f4', 'fortran_order': False}", &[]);
    let err = parse_npy(&bad, "noshape.npy").expect_err("missing key");
    assert!(err.to_string().contains("'shape'"), "{err}");

    let bad = npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", &[]);
    let err = parse_npy(&bad, "neg.npy").expect_err("negative dim");
    assert!(err.to_string().starts_with("neg.npy: "), "{err}");
}

#[test]
fn conversions() {
    let f = parse_npy(&write_npy(&array![1.0f64, -3.0, 0.0].view()), "g.npy").expect("parse");
    assert_eq!(f.to_i64("g.npy").expect("integral").as_slice(), Some(&[1i64, -3, 0][..]));
    assert_eq!(f.to_f32().as_slice(), Some(&[1.0f32, -3.0, 0.0][..]));
    let f = parse_npy(&write_npy(&array![1.0f32, 2.5].view()), "g.npy").expect("parse");
    let err = f.to_i64("groups.npy").expect_err("non-integral");
    let msg = err.to_string();
    assert!(msg.starts_with("groups.npy: ") && msg.contains("2.5"), "{msg}");
    let f = parse_npy(&write_npy(&array![f64::NAN].view()), "g.npy").expect("parse");
    assert!(f.to_i64("g.npy").is_err());
    let i = parse_npy(&write_npy(&array![3i32, -4].view()), "i.npy").expect("parse");
    assert_eq!(i.to_f64().as_slice(), Some(&[3.0, -4.0][..]));
    assert!(!i.has_non_finite());
    assert!(!i.is_f64());
}

fn zip_archive(members: &[(&str, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, data) in members {
        w.start_file(*name, opts).expect("start member");
        w.write_all(data).expect("write member");
    }
    w.finish().expect("finish zip").into_inner()
}

#[test]
fn npz_stored_and_deflated() {
    let conv5 = Array::from_shape_fn((4, 6), |(i, j)| (i * 6 + j) as f32);
    let fc6 = array![[1.0f64, 2.0], [3.0, 4.0]];
    let members =
        vec![("conv5.npy", write_npy(&conv5.view())), ("fc6.npy", write_npy(&fc6.view()))];
    for method in [zip::CompressionMethod::Stored, zip::CompressionMethod::Deflated] {
        let bytes = zip_archive(&members, method);
        let got = parse_npz(&bytes, "layers.npz").expect("npz");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "conv5");
        assert_eq!(got[1].0, "fc6");
        assert_eq!(got[0].1.to_f32(), conv5.clone().into_dyn());
        assert_eq!(got[1].1.to_f64(), fc6.clone().into_dyn());
    }
    // A broken member is reported as archive[key].
    let broken = zip_archive(
        &[("bad.npy", b"\x93NUMPY\x01\x00".to_vec())],
        zip::CompressionMethod::Deflated,
    );
    let err = parse_npz(&broken, "l.npz").expect_err("bad member");
    assert!(err.to_string().starts_with("l.npz[bad]: "), "{err}");
    let err = parse_npz(b"not a zip", "n.npz").expect_err("not zip");
    assert!(matches!(err, IoError::Npz { .. }));
    assert!(err.to_string().starts_with("n.npz: "), "{err}");
}

// ---------------------------------------------------------------------------------------
// Files written by NumPy itself (tests/data/make_npy_extra.py): arange(n).reshape(shape)
// times a scale.

const NUMPY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/npy/");

fn numpy_file(name: &str) -> brainfit_io::NpyArray {
    let path = format!("{NUMPY_DIR}{name}");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    parse_npy(&bytes, name).unwrap_or_else(|e| panic!("{e}"))
}

fn arange(shape: &[usize], scale: f64) -> ArrayD<f64> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f64 * scale).collect()).expect("shape")
}

#[test]
fn numpy_written_files() {
    let a = numpy_file("fortran_f8_2x3x4.npy");
    assert!(a.is_f64());
    assert_eq!(a.to_f64(), arange(&[2, 3, 4], 1.5));

    let a = numpy_file("be_i4_2x3.npy");
    assert_eq!(a.dtype_name(), "int32");
    assert_eq!(a.to_f64(), arange(&[2, 3], -7.0));

    let a = numpy_file("be_f4_fortran_3x2.npy");
    assert_eq!(a.dtype_name(), "float32");
    assert_eq!(a.to_f64(), arange(&[3, 2], 0.25));

    for v in ["v2_f4_2x2.npy", "v3_f4_2x2.npy"] {
        assert_eq!(numpy_file(v).to_f64(), arange(&[2, 2], 2.0), "{v}");
    }

    let a = numpy_file("bool_5.npy");
    assert_eq!(a.data, NpyData::Bool(array![false, true, false, true, false].into_dyn()));
    let a = numpy_file("u1_4.npy");
    assert_eq!(a.data, NpyData::U8(array![0u8, 60, 120, 180].into_dyn()));
    let a = numpy_file("i1_4.npy");
    assert_eq!(a.data, NpyData::I32(array![0, -30, -60, -90].into_dyn()));
    let a = numpy_file("i2_4.npy");
    assert_eq!(a.data, NpyData::I32(array![0, -1000, -2000, -3000].into_dyn()));
    let a = numpy_file("u2_4.npy");
    assert_eq!(a.data, NpyData::I32(array![0, 20000, 40000, 60000].into_dyn()));
    let a = numpy_file("u4_3.npy");
    assert_eq!(a.data, NpyData::I64(array![0i64, 2_000_000_000, 4_000_000_000].into_dyn()));

    let a = numpy_file("scalar_f8.npy");
    assert_eq!(a.shape(), &[] as &[usize]);
    assert_eq!(a.to_f64().first(), Some(&2.5));
    let a = numpy_file("empty_f4_0x5.npy");
    assert_eq!(a.shape(), &[0, 5]);

    for archive in ["layers.npz", "layers_compressed.npz"] {
        let path = format!("{NUMPY_DIR}{archive}");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let members = parse_npz(&bytes, archive).unwrap_or_else(|e| panic!("{e}"));
        let keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["conv5", "fc6"], "{archive}");
        assert_eq!(members[0].1.dtype_name(), "float32");
        assert_eq!(members[0].1.to_f64(), arange(&[3, 4], 0.5));
        assert_eq!(members[1].1.to_f64(), arange(&[3, 2], 3.0));
    }
}
