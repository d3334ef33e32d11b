//! NIfTI-1 images and brain masks.
//!
//! Brain data may arrive as 4-D NIfTI images, every 2-D brain matrix is placed in the
//! brain by a 3-D NIfTI mask, and voxel-wise results are written back as NIfTI maps.
//! This module implements the single-file NIfTI-1 format (`.nii`, and `.nii.gz` detected
//! by its gzip magic bytes) with the semantics of nibabel, which is what the users'
//! Python pipelines use:
//!
//! * data are returned as `f64` indexed `[x, y, z(, t)]` like `img.get_fdata()`, with
//!   `scl_slope` / `scl_inter` applied as nibabel does (a slope of 0 or a non-finite slope
//!   means "no scaling");
//! * the affine is `img.affine`: the sform if `sform_code != 0`, else the qform if
//!   `qform_code != 0`, else nibabel's fallback `get_base_affine()` (a diagonal of
//!   `(-pixdim[1], pixdim[2], pixdim[3])` centred on the volume). The sform and fallback
//!   affines are bit-identical to nibabel's; the qform is computed in `f64` where nibabel
//!   uses x87 long double, so its entries can differ in the last bits (~1e-16 relative to
//!   the voxel size) where the quaternion formula cancels. Header fields are first
//!   repaired the way nibabel's loader repairs them (invalid xform codes → 0, `qfac` not
//!   ±1 → 1, zero pixdims → 1, negative pixdims → their absolute value);
//! * [`Mask`] lists in-mask voxels in the order `nilearn.masking.apply_mask` uses
//!   (row-major over `(i, j, k)`, `k` fastest), so 2-D matrices made with nilearn line up.
//!
//! `.hdr`/`.img` pairs, NIfTI-2, and exotic datatypes (complex, RGB, float128) are
//! rejected with a message saying so.

use std::io::{Read, Write};

use ndarray::{Array2, Array3, ArrayD, ArrayView3, Axis, Ix4, IxDyn, ShapeBuilder, s};

use crate::error::{IoError, Result};

/// Size of a NIfTI-1 header.
const HDR_SIZE: usize = 348;
/// Size of a NIfTI-2 header (recognised only to reject it clearly).
const HDR2_SIZE: i32 = 540;
/// Offset of the data in files this module writes: header + 4-byte extension flag.
const VOX_OFFSET: usize = 352;

/// A NIfTI-1 image, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Nifti {
    /// `[nx, ny, nz]` or `[nx, ny, nz, nt]` (a 4-D file with one volume keeps `nt = 1`).
    pub dim: Vec<usize>,
    /// Voxel sizes `pixdim[1..4]` (after nibabel's repairs: zero → 1, negative → abs).
    pub pixdim: [f64; 3],
    /// Voxel-to-world affine, exactly as nibabel's `img.affine`.
    pub affine: [[f64; 4]; 4],
    /// Voxel values as `get_fdata()` returns them, indexed `[x, y, z(, t)]`, in standard
    /// (C) memory layout.
    pub data: ArrayD<f64>,
}

impl Nifti {
    /// The spatial shape `[nx, ny, nz]`.
    pub fn spatial_shape(&self) -> [usize; 3] {
        [
            self.dim.first().copied().unwrap_or(0),
            self.dim.get(1).copied().unwrap_or(0),
            self.dim.get(2).copied().unwrap_or(0),
        ]
    }

    /// Number of volumes (`nt` for 4-D images, 1 for 3-D ones).
    pub fn n_volumes(&self) -> usize {
        self.dim.get(3).copied().unwrap_or(1)
    }
}

/// NIfTI datatypes this module can decode.
#[derive(Debug, Clone, Copy)]
enum DataType {
    U8,
    I16,
    I32,
    F32,
    F64,
    I8,
    U16,
    U32,
    I64,
    U64,
}

impl DataType {
    fn from_code(code: i16) -> std::result::Result<DataType, String> {
        Ok(match code {
            2 => DataType::U8,
            4 => DataType::I16,
            8 => DataType::I32,
            16 => DataType::F32,
            64 => DataType::F64,
            256 => DataType::I8,
            512 => DataType::U16,
            768 => DataType::U32,
            1024 => DataType::I64,
            1280 => DataType::U64,
            other => {
                let what = match other {
                    0 => "unknown",
                    1 => "binary",
                    32 => "complex64",
                    128 => "RGB24",
                    1536 => "float128",
                    1792 => "complex128",
                    2048 => "complex256",
                    2304 => "RGBA32",
                    _ => "not a NIfTI-1 datatype",
                };
                return Err(format!(
                    "datatype {other} ({what}) is not supported; brainfit reads uint8, int8, int16, \
                     uint16, int32, uint32, int64, uint64, float32 and float64 images"
                ));
            }
        })
    }

    fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::F64 | DataType::I64 | DataType::U64 => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I16 => "int16",
            DataType::I32 => "int32",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
            DataType::I8 => "int8",
            DataType::U16 => "uint16",
            DataType::U32 => "uint32",
            DataType::I64 => "int64",
            DataType::U64 => "uint64",
        }
    }
}

/// Reads header fields in the file's byte order.
struct Fields<'a> {
    b: &'a [u8],
    big_endian: bool,
}

impl Fields<'_> {
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        // Callers only read offsets below HDR_SIZE, and `b` holds at least HDR_SIZE bytes.
        if let Some(src) = self.b.get(off..off + N) {
            a.copy_from_slice(src);
        }
        a
    }
    fn i16(&self, off: usize) -> i16 {
        let a = self.arr::<2>(off);
        if self.big_endian { i16::from_be_bytes(a) } else { i16::from_le_bytes(a) }
    }
    fn f32(&self, off: usize) -> f32 {
        let a = self.arr::<4>(off);
        if self.big_endian { f32::from_be_bytes(a) } else { f32::from_le_bytes(a) }
    }
}

/// Parses a single-file NIfTI-1 image (`.nii` bytes, or `.nii.gz` bytes — gzip is detected
/// from the magic bytes `1f 8b`, not from the name). `name` (file or URL) is used in error
/// messages.
///
/// Accepts either byte order, 3-D images and 4-D images (including `nt = 1`), and the
/// datatypes uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64.
/// See the module documentation for the affine and scaling rules.
pub fn parse_nifti(bytes: &[u8], name: &str) -> Result<Nifti> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        // Decompress the header first, then only as many bytes as it says the image needs
        // (a small .nii.gz cannot inflate to gigabytes before its header is checked).
        let gz_err =
            |e: std::io::Error| nifti_err(name, format!("gzip data cannot be decompressed: {e}"));
        let mut decoder = flate2::read::MultiGzDecoder::new(bytes);
        let mut raw = Vec::with_capacity(HDR_SIZE);
        (&mut decoder).take(HDR_SIZE as u64).read_to_end(&mut raw).map_err(gz_err)?;
        if let Some(end) = declared_end(&raw, name)? {
            let rest = end.saturating_sub(raw.len()) as u64;
            decoder.take(rest).read_to_end(&mut raw).map_err(gz_err)?;
        }
        parse_raw(&raw, name)
    } else {
        parse_raw(bytes, name)
    }
}

/// Where a NIfTI-1 image's data end (`vox_offset` + dims × datatype size), read from its
/// header alone and checked against the memory budget; `None` when the header is too short
/// or malformed to say ([`parse_raw`] then reports exactly what is wrong).
fn declared_end(b: &[u8], name: &str) -> Result<Option<usize>> {
    if b.len() < HDR_SIZE {
        return Ok(None);
    }
    let big_endian = match i32::from_le_bytes([b[0], b[1], b[2], b[3]]) {
        n if n == HDR_SIZE as i32 => false,
        _ if i32::from_be_bytes([b[0], b[1], b[2], b[3]]) == HDR_SIZE as i32 => true,
        _ => return Ok(None),
    };
    let h = Fields { b, big_endian };
    let ndim = h.i16(40);
    if !(3..=4).contains(&ndim) {
        return Ok(None);
    }
    let mut count = 1usize;
    for i in 1..=(ndim as usize) {
        let d = h.i16(40 + 2 * i);
        if d < 1 {
            return Ok(None);
        }
        count = count.saturating_mul(d as usize);
    }
    let Ok(datatype) = DataType::from_code(h.i16(70)) else { return Ok(None) };
    let offset = h.f32(108);
    if !(offset.is_finite() && offset >= VOX_OFFSET as f32) {
        return Ok(None);
    }
    crate::check_budget(count, "the image header").map_err(|m| nifti_err(name, m))?;
    Ok(Some((offset as usize).saturating_add(count.saturating_mul(datatype.size()))))
}

fn parse_raw(b: &[u8], name: &str) -> Result<Nifti> {
    let header = parse_header(b, name)?;
    decode_data(b, header, name)
}

/// What a NIfTI-1 header says, checked.
struct Header {
    dim: Vec<usize>,
    pixdim: [f32; 8],
    affine: [[f64; 4]; 4],
    datatype: DataType,
    big_endian: bool,
    offset: usize,
    scaling: Option<(f64, f64)>,
}

/// The dimensions of a NIfTI-1 image (`.nii` or `.nii.gz`) from its header alone, checked
/// against the memory budget: no voxel is decoded and a gzipped file inflates only its header
/// (what a coordinator needs to check shapes). `name` is used in messages.
pub fn parse_nifti_dims(bytes: &[u8], name: &str) -> Result<Vec<usize>> {
    let header = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::with_capacity(HDR_SIZE);
        flate2::read::MultiGzDecoder::new(bytes)
            .take(HDR_SIZE as u64)
            .read_to_end(&mut raw)
            .map_err(|e| nifti_err(name, format!("gzip data cannot be decompressed: {e}")))?;
        parse_header(&raw, name)?
    } else {
        parse_header(bytes, name)?
    };
    let count = header.dim.iter().fold(1usize, |acc, &d| acc.saturating_mul(d));
    crate::check_budget(count, "the image header").map_err(|m| nifti_err(name, m))?;
    Ok(header.dim)
}

fn parse_header(b: &[u8], name: &str) -> Result<Header> {
    if b.len() < 4 {
        return Err(nifti_err(name, format!("not a NIfTI-1 file: only {} bytes long", b.len())));
    }
    let size_le = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let size_be = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let big_endian = if size_le == HDR_SIZE as i32 {
        false
    } else if size_be == HDR_SIZE as i32 {
        true
    } else if size_le == HDR2_SIZE || size_be == HDR2_SIZE {
        return Err(nifti_err(
            name,
            "this is a NIfTI-2 file, which is not supported; save it as NIfTI-1 \
             (nibabel.Nifti1Image)"
                .to_string(),
        ));
    } else {
        return Err(nifti_err(
            name,
            "not a NIfTI-1 file: its first four bytes (sizeof_hdr) do not read 348 in either byte order"
                .to_string(),
        ));
    };
    if b.len() < HDR_SIZE {
        return Err(nifti_err(
            name,
            format!("truncated NIfTI-1 header: {} bytes, the header alone is 348", b.len()),
        ));
    }
    let h = Fields { b, big_endian };

    let magic = &b[344..348];
    if magic.starts_with(b"ni1") {
        return Err(nifti_err(
            name,
            "this is the header of a .hdr/.img pair (magic 'ni1'); only single-file .nii / \
             .nii.gz images are supported"
                .to_string(),
        ));
    }
    if !magic.starts_with(b"n+1") {
        return Err(nifti_err(
            name,
            "not a NIfTI-1 file: the magic at byte 344 is not \"n+1\"".to_string(),
        ));
    }

    // Dimensions.
    let ndim = h.i16(40);
    if ndim != 3 && ndim != 4 {
        return Err(nifti_err(
            name,
            format!("dim[0] = {ndim}: only 3-D and 4-D images are supported"),
        ));
    }
    let mut dim = Vec::with_capacity(4);
    for i in 1..=(ndim as usize) {
        let d = h.i16(40 + 2 * i);
        if d < 1 {
            return Err(nifti_err(
                name,
                format!("dim[{i}] = {d}: every dimension must be at least 1"),
            ));
        }
        dim.push(d as usize);
    }

    let datatype = DataType::from_code(h.i16(70)).map_err(|m| nifti_err(name, m))?;

    // pixdim, repaired as nibabel's loader does.
    let mut pixdim = [0f32; 8];
    for (i, p) in pixdim.iter_mut().enumerate() {
        *p = h.f32(76 + 4 * i);
    }
    let qfac: f32 = if pixdim[0] == 1.0 || pixdim[0] == -1.0 { pixdim[0] } else { 1.0 };
    for p in &mut pixdim[1..4] {
        if *p == 0.0 {
            *p = 1.0;
        } else if *p < 0.0 {
            *p = p.abs();
        }
    }

    let vox_offset = h.f32(108);
    if !vox_offset.is_finite() || vox_offset < VOX_OFFSET as f32 {
        return Err(nifti_err(
            name,
            format!(
                "bad vox_offset {vox_offset}: a single-file NIfTI-1 image stores its data at \
                 byte 352 or later"
            ),
        ));
    }
    if vox_offset.fract() != 0.0 {
        return Err(nifti_err(
            name,
            format!("bad vox_offset {vox_offset}: not a whole number of bytes"),
        ));
    }
    let offset = vox_offset as usize;

    let slope = h.f32(112);
    let inter = h.f32(116);
    let scaling = if slope == 0.0 || !slope.is_finite() {
        None
    } else if !inter.is_finite() {
        return Err(nifti_err(
            name,
            format!("scl_slope is {slope} but scl_inter is {inter}, which is not finite"),
        ));
    } else {
        Some((f64::from(slope), f64::from(inter)))
    };

    let code_ok = |c: i16| if (0..=5).contains(&c) { c } else { 0 };
    let qform_code = code_ok(h.i16(252));
    let sform_code = code_ok(h.i16(254));

    let affine = if sform_code != 0 {
        let mut a = identity4();
        for (r, row) in a.iter_mut().take(3).enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = f64::from(h.f32(280 + 16 * r + 4 * c));
            }
        }
        a
    } else if qform_code != 0 {
        let quat = [h.f32(256), h.f32(260), h.f32(264)];
        let offs = [h.f32(268), h.f32(272), h.f32(276)];
        qform_affine(quat, offs, [pixdim[1], pixdim[2], pixdim[3]], qfac)
            .map_err(|m| nifti_err(name, m))?
    } else {
        base_affine(&dim, &pixdim)
    };

    Ok(Header { dim, pixdim, affine, datatype, big_endian, offset, scaling })
}

fn decode_data(b: &[u8], header: Header, name: &str) -> Result<Nifti> {
    let Header { dim, pixdim, affine, datatype, big_endian, offset, scaling } = header;
    // Data.
    let count = dim
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| nifti_err(name, format!("dimensions {dim:?} are too large")))?;
    let nbytes = count
        .checked_mul(datatype.size())
        .ok_or_else(|| nifti_err(name, format!("dimensions {dim:?} are too large")))?;
    let dims_str = dim.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("x");
    let available = b.len().saturating_sub(offset);
    if offset > b.len() || available < nbytes {
        return Err(nifti_err(
            name,
            format!(
                "truncated NIfTI: header says {dims_str} {} ({nbytes} bytes) from offset \
                 {offset}, but only {available} bytes follow",
                datatype.name()
            ),
        ));
    }
    crate::check_budget(count, "the image header").map_err(|m| nifti_err(name, m))?;
    let raw = &b[offset..offset + nbytes];
    let mut values = decode(raw, datatype, big_endian);
    if let Some((slope, inter)) = scaling {
        // nibabel's apply_read_scaling, in float64: multiply unless slope is 1, add unless
        // the intercept is 0.
        if slope != 1.0 {
            for v in &mut values {
                *v *= slope;
            }
        }
        if inter != 0.0 {
            for v in &mut values {
                *v += inter;
            }
        }
    }
    // On disk x varies fastest (Fortran order).
    let data = ArrayD::from_shape_vec(IxDyn(&dim).f(), values)
        .map_err(|e| nifti_err(name, format!("cannot shape data as {dims_str}: {e}")))?
        .as_standard_layout()
        .into_owned();

    Ok(Nifti {
        dim,
        pixdim: [f64::from(pixdim[1]), f64::from(pixdim[2]), f64::from(pixdim[3])],
        affine,
        data,
    })
}

fn decode(raw: &[u8], t: DataType, be: bool) -> Vec<f64> {
    macro_rules! conv {
        ($ty:ty, $n:expr) => {
            raw.chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    (if be { <$ty>::from_be_bytes(a) } else { <$ty>::from_le_bytes(a) }) as f64
                })
                .collect()
        };
    }
    match t {
        DataType::U8 => raw.iter().map(|&x| f64::from(x)).collect(),
        DataType::I8 => raw.iter().map(|&x| f64::from(x as i8)).collect(),
        DataType::I16 => conv!(i16, 2),
        DataType::U16 => conv!(u16, 2),
        DataType::I32 => conv!(i32, 4),
        DataType::U32 => conv!(u32, 4),
        DataType::F32 => conv!(f32, 4),
        DataType::F64 => conv!(f64, 8),
        DataType::I64 => conv!(i64, 8),
        DataType::U64 => conv!(u64, 8),
    }
}

fn identity4() -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    for (i, row) in a.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    a
}

/// nibabel's `Nifti1Header.get_qform()`: quaternion (b, c, d) → rotation, times
/// `diag(pixdim[1], pixdim[2], qfac * pixdim[3])`, plus the offsets.
fn qform_affine(
    bcd: [f32; 3],
    offsets: [f32; 3],
    vox: [f32; 3],
    qfac: f32,
) -> std::result::Result<[[f64; 4]; 4], String> {
    // fillpositive(bcd, threshold = 3 * float32 eps)
    let [x, y, z] = bcd.map(f64::from);
    let w2 = 1.0 - (x * x + y * y + z * z);
    let thresh = 3.0 * f64::from(f32::EPSILON);
    let w = if w2.abs() < thresh {
        0.0
    } else if w2 < 0.0 {
        return Err(format!(
            "qform quaternion ({x}, {y}, {z}) has norm above 1 (w^2 = {w2:e}), so the qform \
             affine is undefined"
        ));
    } else {
        w2.sqrt()
    };
    // quat2mat
    let nq = w * w + x * x + y * y + z * z;
    let r = if nq < f64::EPSILON {
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    } else {
        let s = 2.0 / nq;
        let (xs, ys, zs) = (x * s, y * s, z * s);
        let (wx, wy, wz) = (w * xs, w * ys, w * zs);
        let (xx, xy, xz) = (x * xs, x * ys, x * zs);
        let (yy, yz, zz) = (y * ys, y * zs, z * zs);
        [
            [1.0 - (yy + zz), xy - wz, xz + wy],
            [xy + wz, 1.0 - (xx + zz), yz - wx],
            [xz - wy, yz + wx, 1.0 - (xx + yy)],
        ]
    };
    let mut vox = vox;
    vox[2] *= qfac;
    let mut a = identity4();
    for i in 0..3 {
        for j in 0..3 {
            a[i][j] = r[i][j] * f64::from(vox[j]);
        }
        a[i][3] = f64::from(offsets[i]);
    }
    Ok(a)
}

/// nibabel's `get_base_affine()` (used when both xform codes are 0):
/// `shape_zoom_affine(shape, zooms, x_flip=True)`.
fn base_affine(dim: &[usize], pixdim: &[f32; 8]) -> [[f64; 4]; 4] {
    let mut a = identity4();
    for i in 0..3 {
        let mut zoom = f64::from(pixdim[i + 1]);
        if i == 0 {
            zoom = -zoom;
        }
        let n = dim.get(i).copied().unwrap_or(1) as f64;
        let origin = (n - 1.0) / 2.0;
        a[i][i] = zoom;
        a[i][3] = -origin * zoom;
    }
    a
}

fn nifti_err(name: &str, reason: String) -> IoError {
    IoError::Nifti { name: name.to_string(), reason }
}

/// Serialises a 3-D float32 volume as a single-file NIfTI-1 image (`.nii`, or `.nii.gz`
/// bytes when `gzip`).
///
/// The header has `sform_code = 2` (aligned) with the srows taken from `affine`, so
/// nibabel reads back exactly `affine` (to float32 precision: the srows are float32), and
/// `qform_code = 2` with a quaternion derived from `affine` as nibabel's `set_qform` does
/// (`qform_code = 0` when the affine is degenerate). `pixdim` holds the column norms of
/// the affine, `vox_offset` is 352, units are mm and seconds, no scaling; NaN values are
/// written as they are.
///
/// NIfTI-1 stores each dimension as an `i16`: for a volume with a side above 32767 this
/// returns an empty vector (use [`try_write_nifti_f32`] to get the error instead).
pub fn write_nifti_f32(volume: ArrayView3<f32>, affine: &[[f64; 4]; 4], gzip: bool) -> Vec<u8> {
    try_write_nifti_f32(volume, affine, gzip).unwrap_or_default()
}

/// [`write_nifti_f32`], reporting a volume NIfTI-1 cannot represent (a side above 32767)
/// as an error.
pub fn try_write_nifti_f32(
    volume: ArrayView3<f32>,
    affine: &[[f64; 4]; 4],
    gzip: bool,
) -> Result<Vec<u8>> {
    let shape = volume.shape();
    let mut dims = [0i16; 3];
    for (d, &n) in dims.iter_mut().zip(shape) {
        *d = i16::try_from(n).map_err(|_| {
            nifti_err(
                "NIfTI output",
                format!(
                    "volume shape {shape:?} cannot be stored in NIfTI-1 (each side must be at most 32767)"
                ),
            )
        })?;
    }

    let mut zooms = [0f64; 3];
    for (j, z) in zooms.iter_mut().enumerate() {
        *z = (0..3).map(|i| affine[i][j] * affine[i][j]).sum::<f64>().sqrt();
    }
    let qform = qform_from_affine(affine, zooms);

    let mut h = vec![0u8; VOX_OFFSET];
    let put_i16 = |h: &mut Vec<u8>, off: usize, v: i16| {
        h[off..off + 2].copy_from_slice(&v.to_le_bytes());
    };
    let put_f32 = |h: &mut Vec<u8>, off: usize, v: f32| {
        h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    };
    h[0..4].copy_from_slice(&(HDR_SIZE as i32).to_le_bytes());
    h[38] = b'r'; // "regular", as nibabel writes
    let dim_field = [3, dims[0], dims[1], dims[2], 1, 1, 1, 1];
    for (i, &d) in dim_field.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * i, d);
    }
    put_i16(&mut h, 70, 16); // datatype float32
    put_i16(&mut h, 72, 32); // bitpix
    let (qcode, qfac, bcd) = match qform {
        Some((qfac, bcd)) => (2i16, qfac, bcd),
        None => (0i16, 1.0f32, [0.0f32; 3]),
    };
    let pixdim = [qfac, zooms[0] as f32, zooms[1] as f32, zooms[2] as f32, 1.0, 1.0, 1.0, 1.0];
    for (i, &p) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * i, p);
    }
    put_f32(&mut h, 108, VOX_OFFSET as f32);
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    h[123] = 2 | 8; // xyzt_units: mm, seconds
    let descrip = b"brainfit";
    h[148..148 + descrip.len()].copy_from_slice(descrip);
    put_i16(&mut h, 252, qcode);
    put_i16(&mut h, 254, 2); // sform_code: aligned
    for (i, &q) in bcd.iter().enumerate() {
        put_f32(&mut h, 256 + 4 * i, q);
    }
    for (i, row) in affine.iter().take(3).enumerate() {
        put_f32(&mut h, 268 + 4 * i, row[3] as f32);
    }
    for (r, row) in affine.iter().take(3).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * r + 4 * c, v as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    // bytes 348..352: extension flag, all zero (no extensions).

    h.reserve(volume.len() * 4);
    // Fortran order (x fastest): iterate the transposed view in logical order.
    for &v in volume.t() {
        h.extend_from_slice(&v.to_le_bytes());
    }
    if !gzip {
        return Ok(h);
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&h).and_then(|_| enc.finish()).map_err(|source| IoError::Io {
        name: "NIfTI output".to_string(),
        what: "gzip compression failed",
        source,
    })
}

/// nibabel's `set_qform(affine)` with shears stripped: returns `(qfac, [b, c, d])`, or
/// `None` when the affine has no well-defined rotation (zero or non-finite columns).
fn qform_from_affine(affine: &[[f64; 4]; 4], zooms: [f64; 3]) -> Option<(f32, [f32; 3])> {
    if zooms.iter().any(|&z| z == 0.0 || !z.is_finite()) {
        return None;
    }
    let mut r = [[0f64; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = affine[i][j] / zooms[j];
        }
    }
    let qfac = if det3(&r) > 0.0 {
        1.0
    } else {
        for row in &mut r {
            row[2] = -row[2];
        }
        -1.0
    };
    let rot = nearest_rotation(r)?;
    let [w, x, y, z] = mat2quat(&rot);
    let q = [x as f32, y as f32, z as f32];
    (w.is_finite() && q.iter().all(|v| v.is_finite())).then_some((qfac, q))
}

fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Orthonormal polar factor of `m` (the rotation closest to it), by Newton's iteration
/// `X <- (X + X^-T) / 2`; `None` if `m` is singular.
fn nearest_rotation(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let mut x = m;
    for _ in 0..100 {
        let d = det3(&x);
        if d == 0.0 || !d.is_finite() {
            return None;
        }
        // inverse-transpose = cofactor matrix / det
        let c = |a: usize, b: usize, p: usize, q: usize| x[a][b] * x[p][q] - x[a][q] * x[p][b];
        let inv_t = [
            [c(1, 1, 2, 2) / d, -c(1, 0, 2, 2) / d, c(1, 0, 2, 1) / d],
            [-c(0, 1, 2, 2) / d, c(0, 0, 2, 2) / d, -c(0, 0, 2, 1) / d],
            [c(0, 1, 1, 2) / d, -c(0, 0, 1, 2) / d, c(0, 0, 1, 1) / d],
        ];
        let mut next = [[0f64; 3]; 3];
        let mut delta = 0f64;
        for i in 0..3 {
            for j in 0..3 {
                next[i][j] = 0.5 * (x[i][j] + inv_t[i][j]);
                delta = delta.max((next[i][j] - x[i][j]).abs());
            }
        }
        x = next;
        if delta < 1e-15 {
            break;
        }
    }
    Some(x)
}

/// Rotation matrix → unit quaternion `[w, x, y, z]` with `w >= 0` (Shepperd's method).
fn mat2quat(m: &[[f64; 3]; 3]) -> [f64; 4] {
    let trace = m[0][0] + m[1][1] + m[2][2];
    let q = if trace > 0.0 {
        let s = 0.5 / (trace + 1.0).sqrt();
        [0.25 / s, (m[2][1] - m[1][2]) * s, (m[0][2] - m[2][0]) * s, (m[1][0] - m[0][1]) * s]
    } else if m[0][0] > m[1][1] && m[0][0] > m[2][2] {
        let s = 2.0 * (1.0 + m[0][0] - m[1][1] - m[2][2]).sqrt();
        [(m[2][1] - m[1][2]) / s, 0.25 * s, (m[0][1] + m[1][0]) / s, (m[0][2] + m[2][0]) / s]
    } else if m[1][1] > m[2][2] {
        let s = 2.0 * (1.0 + m[1][1] - m[0][0] - m[2][2]).sqrt();
        [(m[0][2] - m[2][0]) / s, (m[0][1] + m[1][0]) / s, 0.25 * s, (m[1][2] + m[2][1]) / s]
    } else {
        let s = 2.0 * (1.0 + m[2][2] - m[0][0] - m[1][1]).sqrt();
        [(m[1][0] - m[0][1]) / s, (m[0][2] + m[2][0]) / s, (m[1][2] + m[2][1]) / s, 0.25 * s]
    };
    if q[0] < 0.0 { q.map(|v| -v) } else { q }
}

// ---------------------------------------------------------------------------------------
// Masks

/// A binary brain mask: which voxels of a 3-D grid are in the brain, in nilearn's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    /// Spatial shape `[nx, ny, nz]`.
    pub shape: [usize; 3],
    /// The mask image's affine.
    pub affine: [[f64; 4]; 4],
    /// The mask image's voxel sizes.
    pub pixdim: [f64; 3],
    /// In-mask voxel coordinates `[i, j, k]`, row-major over `(i, j, k)` with `k` fastest:
    /// column `c` of a brain matrix is voxel `voxels[c]` (nilearn's `apply_mask` order).
    pub voxels: Vec<[usize; 3]>,
}

impl Mask {
    /// Builds a mask from a 3-D image (or 4-D with one volume). Every finite, nonzero value
    /// is in the mask; zero, NaN and ±inf are out (nilearn also maps non-finite values to
    /// 0, but additionally insists on exactly two distinct values — brainfit accepts any
    /// nonzero value as "in"). A mask without any in-mask voxel is an error.
    pub fn from_nifti(n: &Nifti, name: &str) -> Result<Mask> {
        let dims_ok = matches!(n.dim.as_slice(), [_, _, _] | [_, _, _, 1]);
        if !dims_ok || n.data.shape() != n.dim.as_slice() {
            return Err(mask_err(
                name,
                format!(
                    "a mask must be a 3-D image (or 4-D with a single volume), but this one is {}",
                    dims_str(&n.dim)
                ),
            ));
        }
        let shape = n.spatial_shape();
        let [nx, ny, nz] = shape;
        let mut voxels = Vec::new();
        for i in 0..nx {
            for j in 0..ny {
                for k in 0..nz {
                    let v = if n.dim.len() == 4 {
                        n.data.get(IxDyn(&[i, j, k, 0]))
                    } else {
                        n.data.get(IxDyn(&[i, j, k]))
                    };
                    if let Some(&v) = v
                        && v.is_finite()
                        && v != 0.0
                    {
                        voxels.push([i, j, k]);
                    }
                }
            }
        }
        if voxels.is_empty() {
            return Err(mask_err(
                name,
                format!("empty mask: no voxel of the {} mask is nonzero", dims_str(&shape)),
            ));
        }
        Ok(Mask { shape, affine: n.affine, pixdim: n.pixdim, voxels })
    }

    /// World (scanner, usually mm) coordinates of in-mask voxel `c`: the affine applied to
    /// its `[i, j, k]`.
    pub fn world(&self, c: usize) -> [f64; 3] {
        let ijk = self.voxels[c].map(|x| x as f64);
        let a = &self.affine;
        std::array::from_fn(|r| a[r][0] * ijk[0] + a[r][1] * ijk[1] + a[r][2] * ijk[2] + a[r][3])
    }

    /// Number of in-mask voxels.
    pub fn len(&self) -> usize {
        self.voxels.len()
    }

    /// Whether the mask has no voxel (never true for a mask built by [`Mask::from_nifti`]).
    pub fn is_empty(&self) -> bool {
        self.voxels.is_empty()
    }

    /// Extracts in-mask voxels from an image: a 4-D image `[x, y, z, t]` gives `[t,
    /// n_voxels]` (a 3-D image counts as one volume, giving `[1, n_voxels]`), exactly as
    /// `nilearn.masking.apply_mask` (in float64).
    ///
    /// Like nilearn, errors if the spatial shapes differ or the affines are not close
    /// (`numpy.allclose`: `|a - b| <= 1e-8 + 1e-5 |b|`). `name` names the image.
    pub fn apply(&self, img: &Nifti, name: &str) -> Result<Array2<f64>> {
        let valid_dims = matches!(img.dim.len(), 3 | 4) && img.data.shape() == img.dim.as_slice();
        if !valid_dims || img.spatial_shape() != self.shape {
            return Err(mask_err(
                name,
                format!(
                    "image shape {} does not match the mask's {}",
                    dims_str(&img.dim),
                    dims_str(&self.shape)
                ),
            ));
        }
        for r in 0..4 {
            for c in 0..4 {
                let (a, b) = (img.affine[r][c], self.affine[r][c]);
                let close = (a - b).abs() <= 1e-8 + 1e-5 * b.abs();
                if !close {
                    return Err(mask_err(
                        name,
                        format!(
                            "the image's affine {:?} differs from the mask's {:?} (entry [{r}][{c}]: {a} vs {b})",
                            img.affine, self.affine
                        ),
                    ));
                }
            }
        }
        let nt = img.n_volumes();
        let view4 = if img.dim.len() == 4 {
            img.data.view().into_dimensionality::<Ix4>()
        } else {
            img.data.view().insert_axis(Axis(3)).into_dimensionality::<Ix4>()
        }
        .map_err(|e| mask_err(name, format!("image data are not 3-D/4-D: {e}")))?;
        let mut out = Array2::<f64>::zeros((nt, self.voxels.len()));
        for (col, &[i, j, k]) in self.voxels.iter().enumerate() {
            out.column_mut(col).assign(&view4.slice(s![i, j, k, ..]));
        }
        Ok(out)
    }

    /// Places one value per in-mask voxel back into the volume (`values[c]` at
    /// `voxels[c]`), NaN outside the mask — the inverse of [`Mask::apply`] for one volume,
    /// ready for [`write_nifti_f32`]. Errors if `values.len() != self.len()`.
    pub fn unmask(&self, values: &[f64]) -> Result<Array3<f32>> {
        if values.len() != self.voxels.len() {
            return Err(mask_err(
                "unmask",
                format!(
                    "got {} values but the mask has {} voxels",
                    values.len(),
                    self.voxels.len()
                ),
            ));
        }
        let mut out = Array3::from_elem(self.shape, f32::NAN);
        for (&[i, j, k], &v) in self.voxels.iter().zip(values) {
            if let Some(slot) = out.get_mut([i, j, k]) {
                *slot = v as f32;
            }
        }
        Ok(out)
    }
}

fn dims_str(d: &[usize]) -> String {
    d.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("x")
}

fn mask_err(name: &str, reason: String) -> IoError {
    IoError::Mask { name: name.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quaternion_round_trip_for_rotations() {
        // A rotation about an oblique axis, with a reflection and anisotropic zooms.
        let (a, b) = (0.3f64, -0.7f64);
        let rz = [[a.cos(), -a.sin(), 0.0], [a.sin(), a.cos(), 0.0], [0.0, 0.0, 1.0]];
        let rx = [[1.0, 0.0, 0.0], [0.0, b.cos(), -b.sin()], [0.0, b.sin(), b.cos()]];
        let mut rot = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                rot[i][j] = (0..3).map(|k| rz[i][k] * rx[k][j]).sum();
            }
        }
        let zooms = [2.0, 2.5, -3.0]; // negative: reflection → qfac = -1
        let mut affine = identity4();
        for i in 0..3 {
            for j in 0..3 {
                affine[i][j] = rot[i][j] * zooms[j];
            }
        }
        affine[0][3] = 10.0;
        affine[1][3] = -20.0;
        affine[2][3] = 5.5;
        let norms = [2.0, 2.5, 3.0];
        let (qfac, bcd) = qform_from_affine(&affine, norms).expect("well-defined rotation");
        assert_eq!(qfac, -1.0);
        let back =
            qform_affine(bcd, [10.0, -20.0, 5.5], [2.0, 2.5, 3.0], qfac).expect("valid quaternion");
        for i in 0..4 {
            for j in 0..4 {
                assert!(
                    (back[i][j] - affine[i][j]).abs() < 1e-5,
                    "[{i}][{j}]: {} vs {}",
                    back[i][j],
                    affine[i][j]
                );
            }
        }
    }

    #[test]
    fn degenerate_affine_has_no_qform() {
        let mut a = identity4();
        a[1][1] = 0.0;
        assert!(qform_from_affine(&a, [1.0, 0.0, 1.0]).is_none());
    }

    #[test]
    fn base_affine_matches_nibabel_formula() {
        // nibabel: shape (4, 5, 6), zooms (2, 3, 4) ->
        // diag(-2, 3, 4) with translation (3, -6, -10)
        let mut p = [1f32; 8];
        p[1] = 2.0;
        p[2] = 3.0;
        p[3] = 4.0;
        let a = base_affine(&[4, 5, 6], &p);
        assert_eq!(a[0], [-2.0, 0.0, 0.0, 3.0]);
        assert_eq!(a[1], [0.0, 3.0, 0.0, -6.0]);
        assert_eq!(a[2], [0.0, 0.0, 4.0, -10.0]);
        assert_eq!(a[3], [0.0, 0.0, 0.0, 1.0]);
    }
}
