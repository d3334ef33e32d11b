//! NumPy `.npy` / `.npz` reading and `.npy` writing.
//!
//! Brain matrices, features, group labels and RDMs all arrive as `.npy` (or layers bundled
//! in one `.npz`), and every result array is written back as `.npy`. brainfit has its own
//! small implementation rather than a dependency so that it can
//! * parse a header alone ([`parse_npy_header`]) and then fetch just the byte ranges a task
//!   needs from object storage,
//! * accept what NumPy writes in practice — format versions 1.0/2.0/3.0, either byte order,
//!   C or Fortran order, the common numeric dtypes — and give the same logical array as
//!   `np.load`,
//! * reject everything else (object, structured, string dtypes; truncated or padded files)
//!   with a message that names the file and says what is wrong.
//!
//! The header's Python literal is parsed here too, on purpose: the header comes from
//! untrusted files, so the parser caps its size (64 KiB) and nesting depth, never quotes the
//! header in its errors, and is fuzzed (`tests/fuzz.rs`). A general Python-literal crate
//! (`py_literal`) would add a parser generator to the build and echo input in its errors;
//! `npyz`'s header API would need the same limits wrapped around it.
//!
//! Decoded arrays are always returned in standard (C, row-major) memory layout, whatever
//! the order on disk.

use std::io::Read;

use ndarray::{ArrayD, ArrayView, Dimension, IxDyn, ShapeBuilder};

use crate::error::{IoError, Result};

/// The six magic bytes that start every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Alignment NumPy pads the header to (magic + length field + dict + newline).
const ALIGN: usize = 64;

/// Maximum nesting depth accepted in the header's Python literal.
const MAX_DEPTH: usize = 16;

/// The parsed header of a `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// The dtype descriptor exactly as written, e.g. `"<f4"`, `">i8"`, `"|b1"`.
    pub dtype: String,
    /// Whether the data are stored in Fortran (column-major) order.
    pub fortran_order: bool,
    /// The array's shape (empty for a 0-d array).
    pub shape: Vec<usize>,
    /// Byte offset at which the data start.
    pub data_offset: usize,
}

impl NpyHeader {
    /// Number of elements (the product of the shape; 1 for a 0-d array).
    ///
    /// Errors if the product overflows `usize`.
    pub fn element_count(&self, name: &str) -> Result<usize> {
        element_count(&self.shape).ok_or_else(|| {
            npy_err(
                name,
                format!(
                    "shape {} has more elements than this machine can address",
                    shape_str(&self.shape)
                ),
            )
        })
    }

    /// Size in bytes of one element, if the dtype is one brainfit can read.
    pub fn item_size(&self, name: &str) -> Result<usize> {
        Ok(Dtype::parse(&self.dtype, name)?.kind.size())
    }

    /// Number of data bytes the header promises (elements × item size).
    pub fn data_len(&self, name: &str) -> Result<usize> {
        let count = self.element_count(name)?;
        let size = self.item_size(name)?;
        count.checked_mul(size).ok_or_else(|| {
            npy_err(
                name,
                format!(
                    "shape {} of {} needs more bytes than this machine can address",
                    shape_str(&self.shape),
                    self.dtype
                ),
            )
        })
    }
}

/// Decoded array data, one variant per in-memory element type.
///
/// Narrow integer types are widened: `i1`, `i2`, `u2` → `I32`; `u4`, `u8` → `I64`
/// (`u8` values above `i64::MAX` are rejected).
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `f4`.
    F32(ArrayD<f32>),
    /// `f8`.
    F64(ArrayD<f64>),
    /// `i8`, `u4`, `u8`.
    I64(ArrayD<i64>),
    /// `i4`, `i2`, `i1`, `u2`.
    I32(ArrayD<i32>),
    /// `u1`.
    U8(ArrayD<u8>),
    /// `b1`.
    Bool(ArrayD<bool>),
}

/// A decoded `.npy` array (always in standard C layout, indexed like NumPy's array).
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The elements.
    pub data: NpyData,
}

impl NpyArray {
    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        match &self.data {
            NpyData::F32(a) => a.shape(),
            NpyData::F64(a) => a.shape(),
            NpyData::I64(a) => a.shape(),
            NpyData::I32(a) => a.shape(),
            NpyData::U8(a) => a.shape(),
            NpyData::Bool(a) => a.shape(),
        }
    }

    /// NumPy's name for the in-memory element type: `"float32"`, `"float64"`, `"int64"`,
    /// `"int32"`, `"uint8"` or `"bool"`.
    pub fn dtype_name(&self) -> &'static str {
        match &self.data {
            NpyData::F32(_) => "float32",
            NpyData::F64(_) => "float64",
            NpyData::I64(_) => "int64",
            NpyData::I32(_) => "int32",
            NpyData::U8(_) => "uint8",
            NpyData::Bool(_) => "bool",
        }
    }

    /// Whether the elements are `f64`.
    pub fn is_f64(&self) -> bool {
        matches!(self.data, NpyData::F64(_))
    }

    /// A copy converted to `f64` (booleans become 0.0 / 1.0; `i64` beyond 2^53 rounds).
    pub fn to_f64(&self) -> ArrayD<f64> {
        match &self.data {
            NpyData::F32(a) => a.mapv(f64::from),
            NpyData::F64(a) => a.clone(),
            NpyData::I64(a) => a.mapv(|x| x as f64),
            NpyData::I32(a) => a.mapv(f64::from),
            NpyData::U8(a) => a.mapv(f64::from),
            NpyData::Bool(a) => a.mapv(|x| if x { 1.0 } else { 0.0 }),
        }
    }

    /// Converts to `f64`, without copying when the data already are `f64`.
    pub fn into_f64(self) -> ArrayD<f64> {
        match self.data {
            NpyData::F64(a) => a,
            _ => self.to_f64(),
        }
    }

    /// A copy converted to `f32` (rounding `f64` and large integers to nearest).
    pub fn to_f32(&self) -> ArrayD<f32> {
        match &self.data {
            NpyData::F32(a) => a.clone(),
            NpyData::F64(a) => a.mapv(|x| x as f32),
            NpyData::I64(a) => a.mapv(|x| x as f32),
            NpyData::I32(a) => a.mapv(|x| x as f32),
            NpyData::U8(a) => a.mapv(f32::from),
            NpyData::Bool(a) => a.mapv(|x| if x { 1.0 } else { 0.0 }),
        }
    }

    /// Converts to `f32`, without copying when the data already are `f32`.
    pub fn into_f32(self) -> ArrayD<f32> {
        match self.data {
            NpyData::F32(a) => a,
            _ => self.to_f32(),
        }
    }

    /// Integer labels (e.g. run / group indices) as `i64`.
    ///
    /// Integer and boolean arrays convert exactly; float arrays are accepted when every
    /// value is finite and integral (NumPy users often save labels as floats), otherwise
    /// the error names `name`, the first offending value and its index.
    pub fn to_i64(&self, name: &str) -> Result<ArrayD<i64>> {
        fn from_float<T: Copy + Into<f64>>(
            a: &ArrayD<T>,
            name: &str,
            dtype: &str,
        ) -> Result<ArrayD<i64>> {
            // 2^63 exactly: every integral f64 strictly below it (and >= -2^63) fits.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if let Some((idx, v)) = a.indexed_iter().find_map(|(idx, &v)| {
                let x: f64 = v.into();
                let ok = x.is_finite() && x.fract() == 0.0 && (-LIMIT..LIMIT).contains(&x);
                (!ok).then(|| (idx.slice().to_vec(), x))
            }) {
                return Err(IoError::Value {
                    name: name.to_string(),
                    reason: format!(
                        "expected integer values, but the {dtype} array holds {v} at index {idx:?}"
                    ),
                });
            }
            Ok(a.mapv(|v| {
                let x: f64 = v.into();
                x as i64
            }))
        }
        match &self.data {
            NpyData::F32(a) => from_float(a, name, "float32"),
            NpyData::F64(a) => from_float(a, name, "float64"),
            NpyData::I64(a) => Ok(a.clone()),
            NpyData::I32(a) => Ok(a.mapv(i64::from)),
            NpyData::U8(a) => Ok(a.mapv(i64::from)),
            NpyData::Bool(a) => Ok(a.mapv(i64::from)),
        }
    }

    /// Whether any element is NaN or ±infinity (always false for integer and bool data).
    pub fn has_non_finite(&self) -> bool {
        match &self.data {
            NpyData::F32(a) => a.iter().any(|x| !x.is_finite()),
            NpyData::F64(a) => a.iter().any(|x| !x.is_finite()),
            _ => false,
        }
    }
}

/// Element types [`write_npy`] can write.
pub trait NpyElement: Copy {
    /// The little-endian NumPy dtype descriptor, e.g. `"<f4"`.
    const DTYPE: &'static str;
    /// Appends the element's little-endian bytes to `out`.
    fn write_le(self, out: &mut Vec<u8>);
}

impl NpyElement for f32 {
    const DTYPE: &'static str = "<f4";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NpyElement for f64 {
    const DTYPE: &'static str = "<f8";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NpyElement for i64 {
    const DTYPE: &'static str = "<i8";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NpyElement for i32 {
    const DTYPE: &'static str = "<i4";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NpyElement for u8 {
    const DTYPE: &'static str = "|u1";
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(self);
    }
}

impl NpyElement for bool {
    const DTYPE: &'static str = "|b1";
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}

/// Serialises an array as a `.npy` file: format 1.0 (2.0 only if the header would not
/// fit), C order, little-endian, header padded with spaces to a multiple of 64 bytes and
/// ending in `\n`, exactly as `np.save` lays it out.
pub fn write_npy<T: NpyElement, D: Dimension>(a: &ArrayView<T, D>) -> Vec<u8> {
    let mut out = npy_header::<T>(a.shape(), false);
    out.reserve(a.len() * std::mem::size_of::<T>());
    // `iter()` walks the array in logical (C) order whatever its memory layout.
    for &x in a {
        x.write_le(&mut out);
    }
    out
}

/// The header of a `.npy` file of `T` values of shape `shape`, laid out as `np.save` lays it
/// out; the data follows it, in Fortran order (first index fastest) when `fortran_order`.
pub fn npy_header<T: NpyElement>(shape: &[usize], fortran_order: bool) -> Vec<u8> {
    let shape_repr = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        dims => {
            let parts: Vec<String> = dims.iter().map(std::string::ToString::to_string).collect();
            format!("({})", parts.join(", "))
        }
    };
    let order = if fortran_order { "True" } else { "False" };
    let dict =
        format!("{{'descr': '{}', 'fortran_order': {order}, 'shape': {}, }}", T::DTYPE, shape_repr);
    // Version 1.0 stores the header length in 2 bytes; fall back to 2.0 (4 bytes) if needed.
    let (version, prefix_len) = {
        let v1_total = padded_len(10 + dict.len() + 1);
        if v1_total - 10 <= usize::from(u16::MAX) { (1u8, 10usize) } else { (2u8, 12usize) }
    };
    let total = padded_len(prefix_len + dict.len() + 1);
    let header_len = total - prefix_len;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.push(version);
    out.push(0);
    if version == 1 {
        // header_len <= u16::MAX was checked above.
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

fn padded_len(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Longest `.npy` header accepted (numpy's own reader refuses more than 10,000 bytes by default).
pub const MAX_HEADER_LEN: usize = 1 << 16;

/// Parses the header of a `.npy` file; `bytes` needs to hold only the header (so a range
/// read of the first few KiB is enough). `name` (file or URL) is used in error messages.
///
/// Accepts format versions 1.0, 2.0 and 3.0 and any layout of the header dictionary
/// (key order, spacing, trailing commas, `(5,)` / `()` / `(3, 4)` shapes). The dtype is
/// not validated here beyond being a string; [`parse_npy`] checks it.
pub fn parse_npy_header(bytes: &[u8], name: &str) -> Result<NpyHeader> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        // (what the file holds instead is not echoed: error messages never quote input files)
        return Err(npy_err(
            name,
            format!(
                "not a .npy file: it does not start with the magic bytes \\x93NUMPY{}",
                if bytes.len() < 6 {
                    format!(" (the file is only {} bytes long)", bytes.len())
                } else {
                    String::new()
                }
            ),
        ));
    }
    let (Some(&major), Some(&minor)) = (bytes.get(6), bytes.get(7)) else {
        return Err(npy_err(
            name,
            format!(
                "truncated .npy: the file ends after {} bytes, inside the version field",
                bytes.len()
            ),
        ));
    };
    let (len_size, utf8) = match (major, minor) {
        (1, 0) => (2usize, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => {
            return Err(npy_err(
                name,
                format!(
                    "unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)"
                ),
            ));
        }
    };
    let start = 8 + len_size;
    let len_bytes = bytes.get(8..start).ok_or_else(|| {
        npy_err(
            name,
            format!(
                "truncated .npy: the file ends after {} bytes, inside the header-length field",
                bytes.len()
            ),
        )
    })?;
    let header_len = if len_size == 2 {
        usize::from(u16::from_le_bytes([len_bytes[0], len_bytes[1]]))
    } else {
        let n = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        usize::try_from(n)
            .map_err(|_| npy_err(name, format!("header length {n} does not fit this machine")))?
    };
    if header_len > MAX_HEADER_LEN {
        return Err(npy_err(
            name,
            format!(
                "header length {header_len} is larger than {MAX_HEADER_LEN} bytes (a .npy header is a few hundred)"
            ),
        ));
    }
    let end = start + header_len;
    let raw = bytes.get(start..end).ok_or_else(|| {
        npy_err(
            name,
            format!(
                "truncated .npy header: the header says it is {header_len} bytes long but only {} bytes follow",
                bytes.len() - start.min(bytes.len())
            ),
        )
    })?;
    let text: String = if utf8 {
        std::str::from_utf8(raw)
            .map_err(|e| npy_err(name, format!("the version 3.0 header is not valid UTF-8: {e}")))?
            .to_string()
    } else {
        // Versions 1.0 and 2.0 use latin-1: every byte is one code point.
        raw.iter().map(|&b| char::from(b)).collect()
    };

    let value = PyParser::new(&text)
        .parse_document()
        .map_err(|e| npy_err(name, format!("malformed .npy header {:?}: {e}", text.trim_end())))?;
    let PyVal::Dict(entries) = value else {
        return Err(npy_err(name, "malformed .npy header: expected a dict".to_string()));
    };
    let mut descr: Option<&PyVal> = None;
    let mut fortran: Option<&PyVal> = None;
    let mut shape: Option<&PyVal> = None;
    for (k, v) in &entries {
        if let PyVal::Str(k) = k {
            match k.as_str() {
                "descr" => descr = Some(v),
                "fortran_order" => fortran = Some(v),
                "shape" => shape = Some(v),
                _ => {}
            }
        }
    }
    let missing = |key: &str| {
        npy_err(name, format!("malformed .npy header {:?}: no '{key}' key", text.trim_end()))
    };
    let dtype = match descr.ok_or_else(|| missing("descr"))? {
        PyVal::Str(s) => s.clone(),
        PyVal::List(_) => {
            return Err(npy_err(
                name,
                "structured (record) dtypes are not supported; save a plain numeric array"
                    .to_string(),
            ));
        }
        other => {
            return Err(npy_err(
                name,
                format!("malformed .npy header: 'descr' is {other:?}, expected a string"),
            ));
        }
    };
    let fortran_order = match fortran.ok_or_else(|| missing("fortran_order"))? {
        PyVal::Bool(b) => *b,
        other => {
            return Err(npy_err(
                name,
                format!(
                    "malformed .npy header: 'fortran_order' is {other:?}, expected True or False"
                ),
            ));
        }
    };
    let shape = match shape.ok_or_else(|| missing("shape"))? {
        PyVal::Tuple(items) | PyVal::List(items) => {
            let mut dims = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    PyVal::Int(n) => match usize::try_from(*n) {
                        Ok(d) => dims.push(d),
                        Err(_) => {
                            return Err(npy_err(
                                name,
                                format!(
                                    "malformed .npy header: shape dimension {n} is not a valid size"
                                ),
                            ));
                        }
                    },
                    other => {
                        return Err(npy_err(
                            name,
                            format!(
                                "malformed .npy header: shape entry {other:?} is not an integer"
                            ),
                        ));
                    }
                }
            }
            dims
        }
        other => {
            return Err(npy_err(
                name,
                format!("malformed .npy header: 'shape' is {other:?}, expected a tuple"),
            ));
        }
    };
    Ok(NpyHeader { dtype, fortran_order, shape, data_offset: end })
}

/// Parses a complete `.npy` file into an array in logical (C) order, converting from
/// big-endian and from Fortran order as needed. `name` (file or URL) is used in error
/// messages; truncated data, trailing bytes, and unsupported dtypes are errors.
pub fn parse_npy(bytes: &[u8], name: &str) -> Result<NpyArray> {
    let header = parse_npy_header(bytes, name)?;
    let dtype = Dtype::parse(&header.dtype, name)?;
    let count = header.element_count(name)?;
    crate::check_budget(count, "the .npy header").map_err(|m| npy_err(name, m))?;
    let nbytes = header.data_len(name)?;
    let avail = bytes.len() - header.data_offset;
    if avail < nbytes {
        return Err(npy_err(
            name,
            format!(
                "truncated .npy: header says {} {} ({} bytes) but only {} bytes follow",
                shape_str(&header.shape),
                dtype.code,
                nbytes,
                avail
            ),
        ));
    }
    if avail > nbytes {
        return Err(npy_err(
            name,
            format!(
                "{} unexpected bytes after the data: header says {} {} ({} bytes) but {} bytes follow",
                avail - nbytes,
                shape_str(&header.shape),
                dtype.code,
                nbytes,
                avail
            ),
        ));
    }
    let data = decode_body(
        &bytes[header.data_offset..],
        &dtype,
        &header.shape,
        header.fortran_order,
        name,
    )?;
    debug_assert_eq!(count, data_len(&data));
    Ok(NpyArray { data })
}

/// Decodes the data of an array (`raw` holds exactly its elements) of the given dtype and
/// shape, in logical (C) order.
fn decode_body(
    raw: &[u8],
    dtype: &Dtype,
    shape: &[usize],
    fortran: bool,
    name: &str,
) -> Result<NpyData> {
    let be = dtype.big_endian;
    let f = fortran;
    Ok(match dtype.kind {
        Kind::F4 => NpyData::F32(build(
            decode::<4, f32>(raw, be, f32::from_le_bytes, f32::from_be_bytes),
            shape,
            f,
            name,
        )?),
        Kind::F8 => NpyData::F64(build(
            decode::<8, f64>(raw, be, f64::from_le_bytes, f64::from_be_bytes),
            shape,
            f,
            name,
        )?),
        Kind::I8 => NpyData::I64(build(
            decode::<8, i64>(raw, be, i64::from_le_bytes, i64::from_be_bytes),
            shape,
            f,
            name,
        )?),
        Kind::I4 => NpyData::I32(build(
            decode::<4, i32>(raw, be, i32::from_le_bytes, i32::from_be_bytes),
            shape,
            f,
            name,
        )?),
        Kind::I2 => {
            let v = decode::<2, i16>(raw, be, i16::from_le_bytes, i16::from_be_bytes);
            NpyData::I32(build(v.into_iter().map(i32::from).collect(), shape, f, name)?)
        }
        Kind::U2 => {
            let v = decode::<2, u16>(raw, be, u16::from_le_bytes, u16::from_be_bytes);
            NpyData::I32(build(v.into_iter().map(i32::from).collect(), shape, f, name)?)
        }
        Kind::U4 => {
            let v = decode::<4, u32>(raw, be, u32::from_le_bytes, u32::from_be_bytes);
            NpyData::I64(build(v.into_iter().map(i64::from).collect(), shape, f, name)?)
        }
        Kind::U8 => {
            let v = decode::<8, u64>(raw, be, u64::from_le_bytes, u64::from_be_bytes);
            let mut out = Vec::with_capacity(v.len());
            for (i, x) in v.into_iter().enumerate() {
                match i64::try_from(x) {
                    Ok(y) => out.push(y),
                    Err(_) => {
                        return Err(npy_err(
                            name,
                            format!("uint64 value {x} (element {i} on disk) does not fit in int64"),
                        ));
                    }
                }
            }
            NpyData::I64(build(out, shape, f, name)?)
        }
        Kind::I1 => {
            NpyData::I32(build(raw.iter().map(|&b| i32::from(b as i8)).collect(), shape, f, name)?)
        }
        Kind::U1 => NpyData::U8(build(raw.to_vec(), shape, f, name)?),
        Kind::B1 => NpyData::Bool(build(raw.iter().map(|&b| b != 0).collect(), shape, f, name)?),
    })
}

/// `k` columns of a 2-D `.npy` whose header is `header`, from the raw bytes of exactly those
/// columns: `[n_rows, k]` row after row for a C-order file, column after column for a
/// Fortran-order one (as [`column_ranges`] lists them).
pub fn decode_columns(header: &NpyHeader, raw: &[u8], k: usize, name: &str) -> Result<NpyArray> {
    let dtype = Dtype::parse(&header.dtype, name)?;
    let shape = [header.shape[0], k];
    let want = shape[0] * k * header.item_size(name)?;
    if raw.len() != want {
        return Err(npy_err(
            name,
            format!("expected {want} bytes for {} columns, got {}", k, raw.len()),
        ));
    }
    Ok(NpyArray { data: decode_body(raw, &dtype, &shape, header.fortran_order, name)? })
}

/// Byte ranges holding the columns `runs` (ascending, disjoint column ranges) of a 2-D `.npy`
/// (`[n_rows, n_cols]`), in the order [`decode_columns`] reads them: one range per run for a
/// Fortran-order file; for a C-order file, row after row, one range per run of each row.
pub fn column_ranges(
    header: &NpyHeader,
    runs: &[std::ops::Range<usize>],
    name: &str,
) -> Result<Vec<std::ops::Range<u64>>> {
    if header.shape.len() != 2 {
        return Err(npy_err(
            name,
            format!("expected a 2-D array, got shape {}", shape_str(&header.shape)),
        ));
    }
    let (rows, cols) = (header.shape[0] as u64, header.shape[1] as u64);
    let mut previous_end = 0;
    for run in runs {
        if run.start > run.end || run.end as u64 > cols || run.start < previous_end {
            return Err(npy_err(
                name,
                format!(
                    "columns {}..{} are outside its {cols} columns or not in ascending order",
                    run.start, run.end
                ),
            ));
        }
        previous_end = run.end;
    }
    let item = header.item_size(name)? as u64;
    let off = header.data_offset as u64;
    let runs = runs.iter().filter(|r| r.start < r.end).map(|r| (r.start as u64, r.end as u64));
    Ok(if header.fortran_order {
        runs.map(|(s, e)| off + s * rows * item..off + e * rows * item).collect()
    } else {
        let runs: Vec<(u64, u64)> = runs.collect();
        (0..rows)
            .flat_map(|r| {
                runs.iter()
                    .map(move |&(s, e)| off + (r * cols + s) * item..off + (r * cols + e) * item)
            })
            .collect()
    })
}

fn data_len(d: &NpyData) -> usize {
    match d {
        NpyData::F32(a) => a.len(),
        NpyData::F64(a) => a.len(),
        NpyData::I64(a) => a.len(),
        NpyData::I32(a) => a.len(),
        NpyData::U8(a) => a.len(),
        NpyData::Bool(a) => a.len(),
    }
}

/// Bytes of an `.npz` member inflated before its `.npy` header is parsed: the preamble and
/// the largest header [`parse_npy_header`] accepts.
const NPZ_HEADER_PROBE: u64 = 12 + MAX_HEADER_LEN as u64;

/// Checks that a header's dtype is one brainfit decodes (float32/float64, integers, bool),
/// with the same message [`parse_npy`] gives: lets a shape check from the header alone
/// (`brainfit validate`, the coordinator at submit) refuse float16 or object arrays.
pub fn check_npy_dtype(header: &NpyHeader, name: &str) -> Result<()> {
    Dtype::parse(&header.dtype, name).map(|_| ())
}

/// Parses an `.npz` archive (as written by `np.savez` or `np.savez_compressed`) into
/// `(key, array)` pairs in archive order; the key is the member name without its `.npy`
/// suffix. Errors in a member name it as `name[key]`. Each member inflates only as far as its
/// header says its data reach, after a check against [`crate::max_array_bytes`].
pub fn parse_npz(bytes: &[u8], name: &str) -> Result<Vec<(String, NpyArray)>> {
    npz_members(bytes, name, true).map(|members| {
        members.into_iter().map(|(key, _, array)| (key, array.expect("decoded"))).collect()
    })
}

/// The `.npy` headers of an `.npz` archive's members, `(key, header)` in archive order, with
/// their dtypes and sizes checked: only the headers are inflated, no array is decoded (what a
/// coordinator needs to check a job's shapes).
pub fn npz_headers(bytes: &[u8], name: &str) -> Result<Vec<(String, NpyHeader)>> {
    npz_members(bytes, name, false)
        .map(|members| members.into_iter().map(|(key, header, _)| (key, header)).collect())
}

/// Every member's key and header, and with `decode` its array.
fn npz_members(
    bytes: &[u8],
    name: &str,
    decode: bool,
) -> Result<Vec<(String, NpyHeader, Option<NpyArray>)>> {
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| IoError::Npz {
            name: name.to_string(),
            reason: format!("not a readable .npz (zip) archive: {e}"),
        })?;
    let mut out = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).map_err(|e| IoError::Npz {
            name: name.to_string(),
            reason: format!("cannot open archive member #{i}: {e}"),
        })?;
        if member.is_dir() {
            continue;
        }
        let member_name = match member.name() {
            Ok(n) => n.into_owned(),
            Err(_) => String::from_utf8_lossy(member.name_raw()).into_owned(),
        };
        let key = member_name.strip_suffix(".npy").unwrap_or(&member_name).to_string();
        let member_label = format!("{name}[{key}]");
        let inflate_err = |e: std::io::Error| IoError::Npz {
            name: name.to_string(),
            reason: format!("cannot decompress member '{member_name}': {e}"),
        };
        // Inflate the .npy header first, then only the data it declares (checked against the
        // memory budget), and one byte more to notice trailing data: a small archive cannot
        // inflate to gigabytes before its header is checked.
        let mut buf = Vec::new();
        (&mut member).take(NPZ_HEADER_PROBE).read_to_end(&mut buf).map_err(inflate_err)?;
        let header = parse_npy_header(&buf, &member_label)?;
        check_npy_dtype(&header, &member_label)?;
        let count = header.element_count(&member_label)?;
        crate::check_budget(count, "the .npy header").map_err(|m| npy_err(&member_label, m))?;
        let array = if decode {
            let end = header.data_offset.saturating_add(header.data_len(&member_label)?);
            let rest = (end + 1).saturating_sub(buf.len()) as u64;
            (&mut member).take(rest).read_to_end(&mut buf).map_err(inflate_err)?;
            Some(parse_npy(&buf, &member_label)?)
        } else {
            None
        };
        out.push((key, header, array));
    }
    Ok(out)
}

/// Streams one member of an `.npz` archive read through `reader` (any `Read + Seek`, e.g. a
/// [`crate::BlockingReader`] over an object): `f` gets the member's `.npy` header and a reader
/// positioned at its first data byte. Nothing is decoded or held beyond the header, so arrays
/// larger than memory can be read a block at a time; no memory budget applies (the caller
/// reads what it can hold). `name` is used in messages.
pub fn with_npz_member<R: std::io::Read + std::io::Seek, T>(
    reader: R,
    name: &str,
    key: &str,
    f: impl FnOnce(&NpyHeader, &mut dyn Read) -> Result<T>,
) -> Result<T> {
    let npz_err = |reason: String| IoError::Npz { name: name.to_string(), reason };
    let mut archive = zip::ZipArchive::new(reader)
        .map_err(|e| npz_err(format!("not a readable .npz (zip) archive: {e}")))?;
    let mut member = archive
        .by_name(&format!("{key}.npy"))
        .map_err(|_| npz_err(format!("has no array {key:?}")))?;
    let label = format!("{name}[{key}]");
    let mut probe = Vec::new();
    (&mut member)
        .take(NPZ_HEADER_PROBE)
        .read_to_end(&mut probe)
        .map_err(|e| npz_err(format!("cannot read member {key:?}: {e}")))?;
    let header = parse_npy_header(&probe, &label)?;
    check_npy_dtype(&header, &label)?;
    let already = probe.split_off(header.data_offset.min(probe.len()));
    let mut data = std::io::Cursor::new(already).chain(member);
    f(&header, &mut data)
}

// ---------------------------------------------------------------------------------------
// dtype handling

/// Element kinds brainfit can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    F4,
    F8,
    I8,
    I4,
    I2,
    I1,
    U8,
    U4,
    U2,
    U1,
    B1,
}

impl Kind {
    fn size(self) -> usize {
        match self {
            Kind::F8 | Kind::I8 | Kind::U8 => 8,
            Kind::F4 | Kind::I4 | Kind::U4 => 4,
            Kind::I2 | Kind::U2 => 2,
            Kind::I1 | Kind::U1 | Kind::B1 => 1,
        }
    }
}

/// A validated dtype descriptor.
#[derive(Debug, Clone)]
struct Dtype {
    kind: Kind,
    big_endian: bool,
    /// The descriptor without its byte-order character, e.g. "f4" (for messages).
    code: String,
}

impl Dtype {
    fn parse(descr: &str, name: &str) -> Result<Dtype> {
        let (order, code) = match descr.chars().next() {
            Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
            _ => ('=', descr),
        };
        let big_endian = match order {
            '>' => true,
            '<' | '|' => false,
            _ => cfg!(target_endian = "big"),
        };
        let kind = match code {
            "f4" => Kind::F4,
            "f8" => Kind::F8,
            "i8" => Kind::I8,
            "i4" => Kind::I4,
            "i2" => Kind::I2,
            "i1" => Kind::I1,
            "u8" => Kind::U8,
            "u4" => Kind::U4,
            "u2" => Kind::U2,
            "u1" => Kind::U1,
            "b1" | "?" => Kind::B1,
            "f2" | "e" => {
                return Err(npy_err(
                    name,
                    format!(
                        "dtype '{descr}' (float16) is not supported; save as float32 (arr.astype('float32'))"
                    ),
                ));
            }
            c if c.starts_with('O') => {
                return Err(npy_err(
                    name,
                    format!(
                        "dtype '{descr}' is an object array (pickled Python objects), which brainfit does not read; save a numeric array"
                    ),
                ));
            }
            c if c.starts_with('V') || c.starts_with('[') || c.starts_with('(') => {
                return Err(npy_err(
                    name,
                    format!("dtype '{descr}' is structured or void; save a plain numeric array"),
                ));
            }
            _ => {
                return Err(npy_err(
                    name,
                    format!(
                        "dtype '{descr}' is not supported; brainfit reads float32/float64, signed and unsigned integers (1-8 bytes) and bool"
                    ),
                ));
            }
        };
        Ok(Dtype { kind, big_endian, code: code.to_string() })
    }
}

/// Decodes fixed-size elements from `raw` (whose length is a multiple of `N`).
fn decode<const N: usize, T>(
    raw: &[u8],
    big_endian: bool,
    le: fn([u8; N]) -> T,
    be: fn([u8; N]) -> T,
) -> Vec<T> {
    let conv = if big_endian { be } else { le };
    raw.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            conv(a)
        })
        .collect()
}

/// Builds an array of `shape` from elements in file order, returning it in C layout.
fn build<T: Clone>(v: Vec<T>, shape: &[usize], fortran: bool, name: &str) -> Result<ArrayD<T>> {
    let err = |e: ndarray::ShapeError| {
        npy_err(name, format!("cannot form an array of shape {}: {e}", shape_str(shape)))
    };
    if fortran && shape.len() > 1 {
        let a = ArrayD::from_shape_vec(IxDyn(shape).f(), v).map_err(err)?;
        Ok(a.as_standard_layout().into_owned())
    } else {
        ArrayD::from_shape_vec(IxDyn(shape), v).map_err(err)
    }
}

fn element_count(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// "1200x50000"; "0-d" for a scalar.
fn shape_str(shape: &[usize]) -> String {
    if shape.is_empty() {
        "0-d".to_string()
    } else {
        let parts: Vec<String> = shape.iter().map(std::string::ToString::to_string).collect();
        parts.join("x")
    }
}

fn npy_err(name: &str, reason: String) -> IoError {
    IoError::Npy { name: name.to_string(), reason }
}

// ---------------------------------------------------------------------------------------
// A minimal parser for the Python literal in the header.

/// The Python literal values that can appear in a `.npy` header.
#[derive(Debug, Clone, PartialEq)]
enum PyVal {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<PyVal>),
    List(Vec<PyVal>),
    Dict(Vec<(PyVal, PyVal)>),
}

struct PyParser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    depth: usize,
}

impl<'a> PyParser<'a> {
    fn new(text: &'a str) -> Self {
        PyParser { chars: text.char_indices().peekable(), depth: 0 }
    }

    /// Parses one value followed only by whitespace (NumPy pads with spaces and a newline).
    fn parse_document(mut self) -> std::result::Result<PyVal, String> {
        let v = self.value()?;
        self.skip_ws();
        match self.chars.next() {
            None => Ok(v),
            Some((i, _)) => Err(format!("unexpected text at offset {i} after the dict")),
        }
    }

    fn skip_ws(&mut self) {
        while let Some((_, c)) = self.chars.peek() {
            if c.is_whitespace() || *c == '\0' {
                self.chars.next();
            } else {
                break;
            }
        }
    }

    fn value(&mut self) -> std::result::Result<PyVal, String> {
        self.skip_ws();
        let Some(&(pos, c)) = self.chars.peek() else {
            return Err("unexpected end of header".to_string());
        };
        match c {
            '{' | '(' | '[' => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
                }
                self.chars.next();
                let v = match c {
                    '{' => self.dict(),
                    '(' => self.seq(')').map(PyVal::Tuple),
                    _ => self.seq(']').map(PyVal::List),
                };
                self.depth -= 1;
                v
            }
            '\'' | '"' => self.string(),
            c if c.is_ascii_digit() || c == '-' || c == '+' => self.int(),
            c if c.is_ascii_alphabetic() => {
                let mut word = String::new();
                while let Some(&(_, c)) = self.chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        word.push(c);
                        self.chars.next();
                    } else {
                        break;
                    }
                }
                match word.as_str() {
                    "True" => Ok(PyVal::Bool(true)),
                    "False" => Ok(PyVal::Bool(false)),
                    "None" => Ok(PyVal::None),
                    _ => Err(format!("unexpected word {word:?} at offset {pos}")),
                }
            }
            c => Err(format!("unexpected {c:?} at offset {pos}")),
        }
    }

    fn dict(&mut self) -> std::result::Result<PyVal, String> {
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if let Some(&(_, '}')) = self.chars.peek() {
                self.chars.next();
                return Ok(PyVal::Dict(entries));
            }
            let k = self.value()?;
            self.skip_ws();
            match self.chars.next() {
                Some((_, ':')) => {}
                Some((i, c)) => return Err(format!("expected ':' at offset {i}, found {c:?}")),
                None => return Err("unexpected end of header inside the dict".to_string()),
            }
            let v = self.value()?;
            entries.push((k, v));
            self.skip_ws();
            match self.chars.next() {
                Some((_, ',')) => {}
                Some((_, '}')) => return Ok(PyVal::Dict(entries)),
                Some((i, c)) => {
                    return Err(format!("expected ',' or '}}' at offset {i}, found {c:?}"));
                }
                None => return Err("unexpected end of header inside the dict".to_string()),
            }
        }
    }

    fn seq(&mut self, close: char) -> std::result::Result<Vec<PyVal>, String> {
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if let Some(&(_, c)) = self.chars.peek()
                && c == close
            {
                self.chars.next();
                return Ok(items);
            }
            items.push(self.value()?);
            self.skip_ws();
            match self.chars.next() {
                Some((_, ',')) => {}
                Some((_, c)) if c == close => return Ok(items),
                Some((i, c)) => {
                    return Err(format!("expected ',' or {close:?} at offset {i}, found {c:?}"));
                }
                None => return Err("unexpected end of header inside a tuple/list".to_string()),
            }
        }
    }

    fn string(&mut self) -> std::result::Result<PyVal, String> {
        let Some((start, quote)) = self.chars.next() else {
            return Err("unexpected end of header".to_string());
        };
        let mut s = String::new();
        loop {
            match self.chars.next() {
                None => return Err(format!("unterminated string starting at offset {start}")),
                Some((_, c)) if c == quote => return Ok(PyVal::Str(s)),
                Some((_, '\\')) => match self.chars.next() {
                    Some((_, 'n')) => s.push('\n'),
                    Some((_, 't')) => s.push('\t'),
                    Some((_, c)) => s.push(c),
                    None => return Err(format!("unterminated string starting at offset {start}")),
                },
                Some((_, c)) => s.push(c),
            }
        }
    }

    fn int(&mut self) -> std::result::Result<PyVal, String> {
        let mut text = String::new();
        let mut pos = 0;
        if let Some(&(p, c)) = self.chars.peek() {
            pos = p;
            if c == '-' || c == '+' {
                text.push(c);
                self.chars.next();
            }
        }
        while let Some(&(_, c)) = self.chars.peek() {
            if c.is_ascii_digit() || c == '_' {
                if c != '_' {
                    text.push(c);
                }
                self.chars.next();
            } else {
                break;
            }
        }
        // Python 2 long suffix, as in old files: (3L, 4L)
        if let Some(&(_, 'L' | 'l')) = self.chars.peek() {
            self.chars.next();
        }
        text.parse::<i128>()
            .map(PyVal::Int)
            .map_err(|_| format!("invalid integer {text:?} at offset {pos}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_literal_parser() {
        let v = PyParser::new("{'a': (3, 4), \"b\" : True,'c':(),'d':(5,), 'e': [1,], }  \n")
            .parse_document()
            .expect("parses");
        assert_eq!(
            v,
            PyVal::Dict(vec![
                (PyVal::Str("a".into()), PyVal::Tuple(vec![PyVal::Int(3), PyVal::Int(4)])),
                (PyVal::Str("b".into()), PyVal::Bool(true)),
                (PyVal::Str("c".into()), PyVal::Tuple(vec![])),
                (PyVal::Str("d".into()), PyVal::Tuple(vec![PyVal::Int(5)])),
                (PyVal::Str("e".into()), PyVal::List(vec![PyVal::Int(1)])),
            ])
        );
        assert!(PyParser::new("{'a': 1} x").parse_document().is_err());
        assert!(PyParser::new("{'a': 1").parse_document().is_err());
        assert!(PyParser::new("{'a' 1}").parse_document().is_err());
        assert!(PyParser::new(&"(".repeat(100)).parse_document().is_err());
        assert_eq!(
            PyParser::new("(3L, 4L)").parse_document(),
            Ok(PyVal::Tuple(vec![PyVal::Int(3), PyVal::Int(4)]))
        );
    }

    #[test]
    fn header_is_padded_like_numpy() {
        let a = ndarray::Array2::<f32>::zeros((3, 4));
        let bytes = write_npy(&a.view());
        let h = parse_npy_header(&bytes, "x.npy").expect("header");
        assert_eq!(h.data_offset % 64, 0);
        assert_eq!(bytes[h.data_offset - 1], b'\n');
        let dict = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
        assert_eq!(&bytes[10..10 + dict.len()], dict.as_slice());
        assert!(bytes[10 + dict.len()..h.data_offset - 1].iter().all(|&b| b == b' '));
        assert_eq!(bytes.len(), h.data_offset + 48);
    }

    #[test]
    fn dtype_kinds() {
        for (d, size, be) in [
            ("<f4", 4, false),
            (">f8", 8, true),
            ("|u1", 1, false),
            ("|b1", 1, false),
            ("<u2", 2, false),
            (">i2", 2, true),
        ] {
            let t = Dtype::parse(d, "x").expect(d);
            assert_eq!(t.kind.size(), size, "{d}");
            assert_eq!(t.big_endian, be, "{d}");
        }
        for d in ["<f2", "|O", "<U10", "|V8", "<c8", "|S3"] {
            let e = Dtype::parse(d, "x.npy").expect_err(d);
            let msg = e.to_string();
            assert!(msg.starts_with("x.npy: ") && msg.contains(d), "{msg}");
        }
    }
}
