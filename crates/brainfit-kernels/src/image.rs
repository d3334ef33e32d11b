//! Stimulus-image preprocessing, byte for byte as Pillow and torchvision do it.
//!
//! A network's activations depend on every pixel it is given: resampling the same image with a
//! slightly different filter, rounding or crop offset moves the activations, and with them every
//! encoding score and RDM built on top. brainfit therefore re-implements the field's
//! preprocessing (torchvision transforms on PIL images, as thingsvision and most model zoos use
//! them) exactly: [`resize`] returns Pillow's `Image.resize` bytes, [`resize_shorter`] and
//! [`center_crop`] use torchvision's size and offset rules, and [`preprocess`] chains them into
//! the float tensor a network takes. Everything works on `[height, width, 3]` RGB `u8` images.
//!
//! **Pillow's resampling (`Image.resize((w, h), filter)`, Pillow 13.0, 8-bit RGB;
//! `src/libImaging/Resample.c`).** Separable, one pass per axis that changes size (a pass is
//! skipped when its side is unchanged; an unchanged image is copied). Per output index `i` of an
//! axis of `n_in → n_out` pixels: `scale = n_in / n_out`, `filterscale = max(scale, 1)`
//! (downscaling widens the kernel: antialiasing), `support = filter support · filterscale`,
//! `center = (i + 0.5) · scale`, taps `xmin = (int)(center − support + 0.5)` (≥ 0) to
//! `(int)(center + support + 0.5)` (≤ `n_in`), weights `filter((j − center + 0.5) / filterscale)`
//! normalised to sum 1 in `f64`, then turned into fixed point with `PRECISION_BITS = 22`:
//! `(int)(w · 2²² ± 0.5)` (sign of `w`). A pixel is `(Σ v_j k_j + 2²¹) >> 22` clipped to
//! `0..=255`, and the first pass's output is rounded to `u8` before the second pass reads it,
//! so the **order of the passes matters**. Pillow 13.0 (python-pillow/Pillow#9549) runs the
//! vertical pass first when the height shrinks by more than twice as many pixels as the width:
//! `h_out < h_in` and `h_in − h_out > 2 (w_in − w_out)`; otherwise (and always in Pillow ≤ 12)
//! horizontal first, computed only on the rows the vertical pass reads. (This rule was read off
//! Pillow 13.0.0's output on thousands of random shapes, the released C source not being at
//! hand; the fixtures pin it.) Filters (support):
//! box (0.5), bilinear (1, triangle), Hamming (1, `sinc(x) · (0.54 + 0.46 cos πx)`, the two
//! constants as C `float`s), bicubic (2, Keys with `a = −0.5`), Lanczos (3, `sinc(x) sinc(x/3)`).
//!
//! **Nearest neighbour** takes a different path in Pillow (an affine transform,
//! `ImagingScaleAffine` in `Geometry.c`): the source index of output `i` is `(int) pos_i` with
//! `pos_0 = n_in / (2 n_out)` and `pos_{i+1} = pos_i + n_in / n_out` **accumulated** in `f64`,
//! which is not always `⌊(i + 0.5) n_in / n_out⌋` (it differs, e.g., for 60 → 22).
//!
//! Accumulation is in `i64` here (Pillow: 32-bit `int`, which never overflows for 8-bit data);
//! the filters call the platform's `sin`/`cos` as Pillow does. Every filter is checked against
//! Pillow 13.0.0 on fixtures (`scripts/python/make_fixtures_image.py`): 0 differing bytes.
//!
//! **The pipeline ([`preprocess`]).** Optional torchvision `Resize(s)` (shorter side to `s`),
//! the central square of side `round(fraction · min(H, W))` (the field's "central 7/8",
//! torchvision `CenterCrop` offsets), a resize to the network's input size, then
//! `(x / divisor − mean[c]) / std[c]` in `f32`, channel order and layout. torchvision's
//! `Resize(256)` + `CenterCrop(224)` is `resize_shorter: Some(256)`, `crop_fraction: 0.875`,
//! `224 × 224` (the last resize is then the identity). The divisor is 255, as torchvision's
//! `ToTensor` divides (multiplying by `1/255` instead would differ by one rounding step for
//! about half of the 256 byte values).

use crate::{KernelError, Result};
use ndarray::{Array3, ArrayView3, s};
use std::ops::Range;

/// Fractional bits of Pillow's fixed-point coefficients (`32 − 8 − 2`: 8 bits of pixel, 2 of
/// headroom for kernels with negative lobes).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A resampling kernel `x ↦ weight` (in source pixels, before widening).
type Kernel = fn(f64) -> f64;

/// A resampling filter, named as Pillow's `Image.Resampling` (job-file spellings `"nearest"`,
/// `"box"`, `"bilinear"`, `"hamming"`, `"bicubic"`, `"lanczos"`). The default is bilinear,
/// torchvision's `Resize` default (Pillow's own `resize` default is bicubic).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Nearest neighbour (Pillow's affine nearest path, no antialiasing).
    Nearest,
    /// Box filter, support 0.5: the mean over each output pixel's footprint.
    Box,
    /// Triangle filter, support 1 (widened when downscaling).
    #[default]
    Bilinear,
    /// Hamming-windowed sinc, support 1.
    Hamming,
    /// Keys cubic convolution with `a = −0.5`, support 2.
    Bicubic,
    /// Lanczos, `sinc(x) sinc(x/3)`, support 3.
    Lanczos,
}

impl Interpolation {
    /// Every filter, in declaration order.
    pub const ALL: [Interpolation; 6] = [
        Interpolation::Nearest,
        Interpolation::Box,
        Interpolation::Bilinear,
        Interpolation::Hamming,
        Interpolation::Bicubic,
        Interpolation::Lanczos,
    ];

    /// Parses the job-file spelling (the serde one).
    pub fn parse(s: &str) -> Result<Self> {
        crate::parse_spelling(s)
    }

    /// The job-file spelling (inverse of [`Interpolation::parse`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Interpolation::Nearest => "nearest",
            Interpolation::Box => "box",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Hamming => "hamming",
            Interpolation::Bicubic => "bicubic",
            Interpolation::Lanczos => "lanczos",
        }
    }

    /// The convolution kernel and its support (`None` for nearest neighbour).
    fn kernel(self) -> Option<(Kernel, f64)> {
        match self {
            Interpolation::Nearest => None,
            Interpolation::Box => Some((box_filter, 0.5)),
            Interpolation::Bilinear => Some((bilinear_filter, 1.0)),
            Interpolation::Hamming => Some((hamming_filter, 1.0)),
            Interpolation::Bicubic => Some((bicubic_filter, 2.0)),
            Interpolation::Lanczos => Some((lanczos_filter, 3.0)),
        }
    }
}

/// Order of the colour channels in [`preprocess`]'s output.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    /// Red, green, blue (torchvision models).
    #[default]
    Rgb,
    /// Blue, green, red (Caffe-converted models).
    Bgr,
}

/// Memory layout of [`preprocess`]'s output (one image, no batch axis).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `[3, height, width]` (PyTorch, most ONNX exports).
    #[default]
    Nchw,
    /// `[height, width, 3]` (TensorFlow / Keras exports).
    Nhwc,
}

// ---------------------------------------------------------------------------
// Filters, transcribed from Pillow's Resample.c (same operations in the same order).
// ---------------------------------------------------------------------------

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 { 1.0 } else { 0.0 }
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn hamming_filter(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let x = x * std::f64::consts::PI;
    // `0.54f + 0.46f * cos(x)` in C: float constants promoted to double
    x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
}

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        return ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    }
    if x < 2.0 {
        return (((x - 5.0) * x + 8.0) * x - 4.0) * A;
    }
    0.0
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos_filter(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) { sinc(x) * sinc(x / 3.0) } else { 0.0 }
}

// ---------------------------------------------------------------------------
// One axis of Pillow's resampling
// ---------------------------------------------------------------------------

/// Fixed-point taps of one axis: output `i` reads `len[i]` source pixels from `first[i]` with
/// the weights `k[i * ksize..][..len[i]]` (Pillow's `precompute_coeffs` +
/// `normalize_coeffs_8bpc`).
struct Taps {
    first: Vec<usize>,
    len: Vec<usize>,
    ksize: usize,
    k: Vec<i64>,
}

impl Taps {
    fn new(in_size: usize, out_size: usize, filter: Kernel, support: f64) -> Taps {
        // Pillow: (double)(float in1 - float in0) / outSize, exact for any realistic size
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;
        let mut taps = Taps {
            first: Vec::with_capacity(out_size),
            len: Vec::with_capacity(out_size),
            ksize,
            k: vec![0; out_size * ksize],
        };
        let mut w = vec![0.0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates towards zero, then the bounds are clamped
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut ww = 0.0;
            for (j, wj) in w.iter_mut().enumerate().take(n) {
                *wj = filter(((j + xmin) as f64 - center + 0.5) * inv_filterscale);
                ww += *wj;
            }
            let k = &mut taps.k[xx * ksize..xx * ksize + n];
            for (kj, &wj) in k.iter_mut().zip(&w) {
                let wj = if ww == 0.0 { wj } else { wj / ww };
                let one = f64::from(1u32 << PRECISION_BITS);
                // (int)(±0.5 + w * (1 << PRECISION_BITS)), truncated towards zero
                *kj = if wj < 0.0 { (-0.5 + wj * one) as i64 } else { (0.5 + wj * one) as i64 };
            }
            taps.first.push(xmin);
            taps.len.push(n);
        }
        taps
    }

    fn out_size(&self) -> usize {
        self.first.len()
    }

    fn weights(&self, i: usize) -> &[i64] {
        &self.k[i * self.ksize..i * self.ksize + self.len[i]]
    }

    /// The source range all outputs read together.
    fn span(&self) -> Range<usize> {
        let start = self.first.iter().copied().min().unwrap_or(0);
        let end = self.first.iter().zip(&self.len).map(|(f, n)| f + n).max().unwrap_or(0);
        start..end
    }
}

/// Pillow's `clip8`: drop the fraction bits, clamp to a byte.
#[inline]
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass: `src` is `[rows, width, 3]` (C order); the rows `rows` are resampled with
/// `taps` (whose source indices start at column `col_offset` of `src`) to
/// `[rows.len(), taps.out_size(), 3]`.
fn pass_horizontal(
    src: &[u8],
    width: usize,
    rows: Range<usize>,
    taps: &Taps,
    col_offset: usize,
) -> Vec<u8> {
    let out_w = taps.out_size();
    let mut out = vec![0u8; rows.len() * out_w * 3];
    for (line_out, y) in out.chunks_exact_mut(out_w * 3).zip(rows) {
        let line = &src[y * width * 3..(y + 1) * width * 3];
        for (xx, px) in line_out.chunks_exact_mut(3).enumerate() {
            let start = (taps.first[xx] - col_offset) * 3;
            let mut acc = [HALF; 3];
            for (p, &k) in line[start..].chunks_exact(3).zip(taps.weights(xx)) {
                acc[0] += i64::from(p[0]) * k;
                acc[1] += i64::from(p[1]) * k;
                acc[2] += i64::from(p[2]) * k;
            }
            px.copy_from_slice(&[clip8(acc[0]), clip8(acc[1]), clip8(acc[2])]);
        }
    }
    out
}

/// Vertical pass: `src` is `[rows, width, 3]` (C order); the columns `cols` are resampled with
/// `taps` (whose source indices start at row `row_offset` of `src`) to
/// `[taps.out_size(), cols.len(), 3]`.
fn pass_vertical(
    src: &[u8],
    width: usize,
    cols: Range<usize>,
    taps: &Taps,
    row_offset: usize,
) -> Vec<u8> {
    let n = cols.len() * 3;
    let mut out = vec![0u8; taps.out_size() * n];
    let mut acc = vec![0i64; n];
    for (yy, line_out) in out.chunks_exact_mut(n).enumerate() {
        acc.fill(HALF);
        let ymin = taps.first[yy] - row_offset;
        for (j, &k) in taps.weights(yy).iter().enumerate() {
            let start = (ymin + j) * width * 3 + cols.start * 3;
            for (a, &p) in acc.iter_mut().zip(&src[start..start + n]) {
                *a += i64::from(p) * k;
            }
        }
        for (o, &a) in line_out.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Pillow's nearest-neighbour source indices: `(int) pos`, `pos` accumulated from
/// `n_in / (2 n_out)` in steps of `n_in / n_out` (`ImagingScaleAffine`).
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    let step = in_size as f64 / out_size as f64;
    let mut pos = step * 0.5;
    (0..out_size)
        .map(|_| {
            // pos < in_size for any size below 2^26; the clamp only guards the unreachable
            let i = (pos as usize).min(in_size - 1);
            pos += step;
            i
        })
        .collect()
}

/// `(height, width)` of an RGB image, or an error naming its shape.
fn rgb_dims(img: &ArrayView3<'_, u8>) -> Result<(usize, usize)> {
    let (h, w, c) = img.dim();
    if c != 3 {
        return Err(KernelError::Shape(format!(
            "expected an RGB image [height, width, 3], got shape [{h}, {w}, {c}]"
        )));
    }
    if h == 0 || w == 0 {
        return Err(KernelError::Shape(format!("the image is empty: shape [{h}, {w}, 3]")));
    }
    Ok((h, w))
}

fn check_size(what: &str, height: usize, width: usize) -> Result<()> {
    if height == 0 || width == 0 {
        return Err(KernelError::Parameter(format!(
            "{what} must be at least 1 x 1, got {height} x {width}"
        )));
    }
    Ok(())
}

/// Resizes an RGB image `[h, w, 3]` to `[height, width, 3]` exactly as Pillow 13's
/// `Image.fromarray(img).resize((width, height), filter)` does (module header: coefficients,
/// fixed-point rounding, pass order, nearest-neighbour positions). The same size returns a copy.
///
/// Errors: not `[h, w, 3]` or empty ([`KernelError::Shape`]); a zero output size
/// ([`KernelError::Parameter`]).
pub fn resize(
    img: ArrayView3<'_, u8>,
    height: usize,
    width: usize,
    interpolation: Interpolation,
) -> Result<Array3<u8>> {
    let (h, w) = rgb_dims(&img)?;
    check_size("the output size", height, width)?;
    if (height, width) == (h, w) {
        return Ok(img.to_owned());
    }
    let shape_err = |e: ndarray::ShapeError| KernelError::Shape(e.to_string());
    let Some((filter, support)) = interpolation.kernel() else {
        let (ys, xs) = (nearest_indices(h, height), nearest_indices(w, width));
        return Ok(Array3::from_shape_fn((height, width, 3), |(y, x, c)| img[[ys[y], xs[x], c]]));
    };
    let src: Vec<u8> = img.iter().copied().collect();
    let (need_h, need_v) = (width != w, height != h);
    let vertical_first =
        need_h && need_v && height < h && (h - height) as i64 > 2 * (w as i64 - width as i64);
    let out = if !need_v {
        pass_horizontal(&src, w, 0..h, &Taps::new(w, width, filter, support), 0)
    } else if !need_h {
        pass_vertical(&src, w, 0..w, &Taps::new(h, height, filter, support), 0)
    } else if vertical_first {
        let taps_x = Taps::new(w, width, filter, support);
        let cols = taps_x.span();
        let tmp = pass_vertical(&src, w, cols.clone(), &Taps::new(h, height, filter, support), 0);
        pass_horizontal(&tmp, cols.len(), 0..height, &taps_x, cols.start)
    } else {
        let taps_y = Taps::new(h, height, filter, support);
        let rows = taps_y.span();
        let tmp = pass_horizontal(&src, w, rows.clone(), &Taps::new(w, width, filter, support), 0);
        pass_vertical(&tmp, width, 0..width, &taps_y, rows.start)
    };
    Array3::from_shape_vec((height, width, 3), out).map_err(shape_err)
}

/// torchvision's `Resize(size)` with one int on a PIL image: the shorter side becomes `size`,
/// the longer `int(size · long / short)` (truncated), aspect ratio kept; an image already of
/// that size is returned unchanged (copied); otherwise [`resize`] (Pillow, always
/// antialiased). torchvision's default filter is bilinear.
///
/// Errors: as [`resize`]; `size == 0` ([`KernelError::Parameter`]).
pub fn resize_shorter(
    img: ArrayView3<'_, u8>,
    size: usize,
    interpolation: Interpolation,
) -> Result<Array3<u8>> {
    let (h, w) = rgb_dims(&img)?;
    if size == 0 {
        return Err(KernelError::Parameter("the shorter side must be at least 1, got 0".into()));
    }
    let (height, width) = shorter_side_size(h, w, size);
    resize(img, height, width, interpolation)
}

/// `(height, width)` after torchvision's `Resize(size)`; Python's `int(size * long / short)`
/// is a correctly rounded float division, truncated, as here.
fn shorter_side_size(h: usize, w: usize, size: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if w <= h { (new_long, size) } else { (size, new_long) }
}

/// torchvision's `CenterCrop((height, width))` offset along one axis:
/// `int(round((n - crop) / 2.0))`, Python's round (halves to even).
fn crop_offset(n: usize, crop: usize) -> usize {
    let d = n - crop;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 { half + 1 } else { half }
}

/// torchvision's `CenterCrop((height, width))`: the window at row
/// `int(round((H − height) / 2))`, column `int(round((W − width) / 2))`, Python's round (halves
/// to even: 8.5 → 8, 11.5 → 12).
///
/// Errors: a crop larger than the image (torchvision pads with zeros instead; brainfit refuses
/// rather than feed a network invented black borders) or an empty crop
/// ([`KernelError::Parameter`]); not `[h, w, 3]` ([`KernelError::Shape`]).
pub fn center_crop(img: ArrayView3<'_, u8>, height: usize, width: usize) -> Result<Array3<u8>> {
    let (h, w) = rgb_dims(&img)?;
    check_size("the crop", height, width)?;
    if height > h || width > w {
        return Err(KernelError::Parameter(format!(
            "a {height} x {width} crop does not fit in the {h} x {w} image"
        )));
    }
    let (top, left) = (crop_offset(h, height), crop_offset(w, width));
    Ok(img.slice(s![top..top + height, left..left + width, ..]).to_owned())
}

/// Side of [`center_square`]'s square: `round(fraction · min(H, W))`, halves away from zero.
fn square_side(h: usize, w: usize, fraction: f64) -> Result<usize> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(KernelError::Parameter(format!(
            "the crop fraction must be in (0, 1], got {fraction}"
        )));
    }
    let side = (fraction * h.min(w) as f64).round() as usize;
    if side == 0 {
        return Err(KernelError::Parameter(format!(
            "a crop fraction of {fraction} leaves no pixel of the {h} x {w} image"
        )));
    }
    Ok(side)
}

/// The centred square of side `round(fraction · min(H, W))` (`f64::round`: halves away from
/// zero, so 38.5 → 39), placed as [`center_crop`] places it: the field's "keep the central 7/8"
/// is `fraction = 0.875`. `fraction = 1` still crops the longer side to a square.
///
/// Errors: `fraction` outside `(0, 1]` or leaving no pixel ([`KernelError::Parameter`]); not
/// `[h, w, 3]` ([`KernelError::Shape`]).
pub fn center_square(img: ArrayView3<'_, u8>, fraction: f64) -> Result<Array3<u8>> {
    let (h, w) = rgb_dims(&img)?;
    let side = square_side(h, w, fraction)?;
    center_crop(img, side, side)
}

/// How stimulus images become a network's input ([`preprocess`]). The default is the field's
/// ImageNet convention at 224 × 224: central 7/8 square, bilinear, `1/255`, ImageNet mean and
/// standard deviation, RGB, NCHW.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preprocessing {
    /// First resize the shorter side to this (torchvision `Resize(s)`); `None` skips it.
    pub resize_shorter: Option<usize>,
    /// Side of the central square kept, as a fraction of the shorter side (`0.875`).
    pub crop_fraction: f64,
    /// Network input height.
    pub height: usize,
    /// Network input width.
    pub width: usize,
    /// Filter of both resizes.
    pub interpolation: Interpolation,
    /// Bytes are divided by this (255, as torchvision's `ToTensor`; 1 keeps 0-255).
    pub divisor: f32,
    /// Per-channel mean subtracted after scaling, always in R, G, B order.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by last, always in R, G, B order.
    pub std: [f32; 3],
    /// Channel order of the output.
    pub channels: ChannelOrder,
    /// Layout of the output.
    pub layout: Layout,
}

impl Default for Preprocessing {
    fn default() -> Self {
        Preprocessing {
            resize_shorter: None,
            crop_fraction: 0.875,
            height: 224,
            width: 224,
            interpolation: Interpolation::Bilinear,
            divisor: 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channels: ChannelOrder::Rgb,
            layout: Layout::Nchw,
        }
    }
}

impl Preprocessing {
    /// Checks the parameters: sizes at least 1, `crop_fraction` in `(0, 1]`, a positive finite
    /// `divisor`, finite `mean`, `std` positive and finite.
    pub fn validate(&self) -> Result<()> {
        check_size("the network input size", self.height, self.width)?;
        if self.resize_shorter == Some(0) {
            return Err(KernelError::Parameter("resize_shorter must be at least 1, got 0".into()));
        }
        if !(self.crop_fraction > 0.0 && self.crop_fraction <= 1.0) {
            return Err(KernelError::Parameter(format!(
                "crop_fraction must be in (0, 1], got {}",
                self.crop_fraction
            )));
        }
        if !(self.divisor.is_finite() && self.divisor > 0.0)
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(KernelError::Parameter(format!(
                "the divisor must be positive and finite and the mean finite, got {} and {:?}",
                self.divisor, self.mean
            )));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(KernelError::Parameter(format!(
                "std must be positive and finite, got {:?}",
                self.std
            )));
        }
        Ok(())
    }
}

/// One stimulus image `[H, W, 3]` (RGB bytes) → the network's input, in this order:
///
/// 1. if `resize_shorter` is `Some(s)`: [`resize_shorter`] (torchvision `Resize(s)`);
/// 2. [`center_square`] with `crop_fraction` (always: `1.0` still crops a non-square image to
///    its central square; with step 1, `round(fraction · s)` is torchvision's `CenterCrop`);
/// 3. [`resize`] to `height × width` (Pillow; a copy when the square already has that size);
/// 4. per byte `x` of RGB channel `c`: `(x as f32 * scale − mean[c]) / std[c]`, in `f32` and in
///    that order (torchvision `Normalize` after `ToTensor`, except that `ToTensor` divides by
///    255: module header);
/// 5. channels reordered to `channels` (`mean`/`std` stay attached to R, G, B) and laid out as
///    `[3, height, width]` (NCHW) or `[height, width, 3]` (NHWC).
///
/// Errors: invalid parameters ([`Preprocessing::validate`]); not `[h, w, 3]`
/// ([`KernelError::Shape`]).
pub fn preprocess(img: ArrayView3<'_, u8>, p: &Preprocessing) -> Result<Array3<f32>> {
    p.validate()?;
    rgb_dims(&img)?;
    let shorter = match p.resize_shorter {
        Some(size) => Some(resize_shorter(img, size, p.interpolation)?),
        None => None,
    };
    let square = center_square(shorter.as_ref().map_or(img, |a| a.view()), p.crop_fraction)?;
    let net = resize(square.view(), p.height, p.width, p.interpolation)?;
    let order = match p.channels {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    let value = |y: usize, x: usize, k: usize| {
        let c = order[k];
        (f32::from(net[[y, x, c]]) / p.divisor - p.mean[c]) / p.std[c]
    };
    Ok(match p.layout {
        Layout::Nchw => Array3::from_shape_fn((3, p.height, p.width), |(k, y, x)| value(y, x, k)),
        Layout::Nhwc => Array3::from_shape_fn((p.height, p.width, 3), |(y, x, k)| value(y, x, k)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdm::npy_fixture as fx;
    use crate::rng::Rng;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/image/"))
            .join(format!("{name}.npy"))
    }

    fn u8_image(name: &str) -> Array3<u8> {
        let (shape, v) = fx::u8s(&fixture(name));
        assert_eq!(shape.len(), 3, "{name}: {shape:?}");
        Array3::from_shape_vec((shape[0], shape[1], shape[2]), v).expect("3-d fixture")
    }

    fn f32_array3(name: &str) -> Array3<f32> {
        let (shape, v) = fx::f32s(&fixture(name));
        assert_eq!(shape.len(), 3, "{name}: {shape:?}");
        Array3::from_shape_vec((shape[0], shape[1], shape[2]), v).expect("3-d fixture")
    }

    /// Number of differing bytes (shapes must agree).
    fn n_diff(a: &Array3<u8>, b: &Array3<u8>) -> usize {
        assert_eq!(a.dim(), b.dim());
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    fn random_image(rng: &mut Rng, h: usize, w: usize) -> Array3<u8> {
        Array3::from_shape_fn((h, w, 3), |_| rng.below(256) as u8)
    }

    /// `scripts/python/make_fixtures_image.py`'s RESIZE_CASES.
    const RESIZE_CASES: [(&str, usize, usize); 8] = [
        ("real", 64, 64),
        ("rand_a", 14, 20),
        ("rand_c", 33, 45),
        ("rand_b", 53, 36),
        ("rand_b", 22, 50),
        ("grad", 24, 52),
        ("grad", 40, 21),
        ("grad", 13, 56),
    ];

    #[test]
    fn resize_equals_pillow_byte_for_byte() {
        let mut report = Vec::new();
        let mut total = 0;
        for (input, h, w) in RESIZE_CASES {
            let img = u8_image(input);
            for f in Interpolation::ALL {
                let name = format!("resize_{input}_{h}x{w}_{}", f.as_str());
                let want = u8_image(&name);
                let got = resize(img.view(), h, w, f).unwrap();
                let d = n_diff(&got, &want);
                total += want.len();
                if d > 0 {
                    report.push(format!("{name}: {d} of {} bytes differ", want.len()));
                }
            }
        }
        assert!(report.is_empty(), "{report:#?}");
        assert!(total > 100_000);
    }

    #[test]
    fn resize_shorter_equals_torchvision() {
        let rand_a = u8_image("rand_a");
        for f in Interpolation::ALL {
            let want = u8_image(&format!("shorter_rand_a_20_{}", f.as_str()));
            let got = resize_shorter(rand_a.view(), 20, f).unwrap();
            assert_eq!(got.dim(), (20, 28, 3));
            assert_eq!(n_diff(&got, &want), 0, "{f:?}");
        }
        let want = u8_image("shorter_rand_b_32_bilinear");
        let got = resize_shorter(u8_image("rand_b").view(), 32, Interpolation::Bilinear).unwrap();
        assert_eq!(got.dim(), (46, 32, 3));
        assert_eq!(n_diff(&got, &want), 0);
        // already the right size: unchanged
        let got = resize_shorter(rand_a.view(), 37, Interpolation::Lanczos).unwrap();
        assert_eq!(got, rand_a);
        assert_eq!(shorter_side_size(175, 175, 256), (256, 256));
        assert_eq!(shorter_side_size(480, 640, 256), (256, 341));
    }

    #[test]
    fn crops_equal_torchvision() {
        let inputs = [u8_image("rand_a"), u8_image("rand_b"), u8_image("real")];
        let (shape, offsets) = fx::i64s(&fixture("crop_offsets"));
        assert_eq!(shape, [5, 5]);
        for (row, o) in offsets.chunks_exact(5).enumerate() {
            let [index, ch, cw, top, left] = [o[0], o[1], o[2], o[3], o[4]].map(|v| v as usize);
            let img = &inputs[index];
            let got = if row < 2 {
                center_crop(img.view(), ch, cw).unwrap()
            } else {
                center_square(img.view(), 0.875).unwrap()
            };
            let want = img.slice(s![top..top + ch, left..left + cw, ..]);
            assert_eq!(got.view(), want, "row {row}: {o:?}");
        }
        let crop = center_crop(inputs[0].view(), 20, 30).unwrap();
        assert_eq!(crop, u8_image("crop_rand_a_20x30"));
        assert_eq!(center_crop(inputs[1].view(), 33, 20).unwrap(), u8_image("crop_rand_b_33x20"));
        assert_eq!(center_square(inputs[0].view(), 0.875).unwrap(), u8_image("square_rand_a"));
        assert_eq!(center_square(inputs[1].view(), 0.875).unwrap(), u8_image("square_rand_b"));
        // Python's round(x.5) goes to even
        assert_eq!([crop_offset(37, 20), crop_offset(53, 30), crop_offset(60, 33)], [8, 12, 14]);
        assert_eq!(crop_offset(10, 10), 0);
        // the square's side rounds halves away from zero: 0.875 * 44 = 38.5 -> 39
        assert_eq!(square_side(44, 50, 0.875).unwrap(), 39);
        assert_eq!(square_side(175, 175, 0.875).unwrap(), 153);
        let square = center_square(inputs[1].view(), 1.0).unwrap();
        assert_eq!(square.dim(), (41, 41, 3));
        assert_eq!(square.view(), inputs[1].slice(s![10..51, .., ..]));
    }

    #[test]
    fn pipeline_constants_equal_numpy() {
        let (_, c) = fx::f32s(&fixture("pipeline_constants"));
        let p = Preprocessing::default();
        let ours: Vec<f32> = [p.divisor].into_iter().chain(p.mean).chain(p.std).collect();
        assert_eq!(ours.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), {
            c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        });
    }

    #[test]
    fn pipeline_equals_numpy() {
        let real = u8_image("real");
        let (shape, table) = fx::f32s(&fixture("pipeline_table"));
        assert_eq!(shape, [3, 256]);
        for size in [64, 224] {
            // default Preprocessing: central 7/8 (153 px), bilinear to size, NCHW: exactly
            // table[c, u8[y, x, c]] with the numpy float32 table of every byte value
            let u8s = u8_image(&format!("pipeline_real_{size}_u8"));
            let p = Preprocessing { height: size, width: size, ..Preprocessing::default() };
            let got = preprocess(real.view(), &p).unwrap();
            assert_eq!(got.dim(), (3, size, size));
            let mut worst = 0.0f32;
            for ((c, y, x), v) in got.indexed_iter() {
                let want = table[c * 256 + usize::from(u8s[[y, x, c]])];
                worst = worst.max((v - want).abs());
            }
            assert!(worst <= 1e-6, "size {size}: max |diff| {worst}");
            assert_eq!(worst, 0.0, "size {size}: not bit-equal");
        }
        // torchvision-style: Resize(32, bicubic) -> CenterCrop(28), stored as float32
        let want = f32_array3("pipeline_rand_b_tv");
        let p = Preprocessing {
            resize_shorter: Some(32),
            height: 28,
            width: 28,
            interpolation: Interpolation::Bicubic,
            ..Preprocessing::default()
        };
        let rand_b = u8_image("rand_b");
        let got = preprocess(rand_b.view(), &p).unwrap();
        assert_eq!(got.dim(), (3, 28, 28));
        let worst = got.iter().zip(&want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert_eq!(worst, 0.0, "max |diff| {worst}");
        // BGR and NHWC are permutations of the same numbers
        let q = Preprocessing { channels: ChannelOrder::Bgr, layout: Layout::Nhwc, ..p.clone() };
        let bgr = preprocess(rand_b.view(), &q).unwrap();
        assert_eq!(bgr.dim(), (28, 28, 3));
        for ((y, x, k), v) in bgr.indexed_iter() {
            assert_eq!(v.to_bits(), got[[2 - k, y, x]].to_bits());
        }
    }

    #[test]
    fn same_size_is_identity_and_constant_stays_constant() {
        let mut rng = Rng::new(3);
        let img = random_image(&mut rng, 9, 13);
        for f in Interpolation::ALL {
            assert_eq!(resize(img.view(), 9, 13, f).unwrap(), img, "{f:?}");
            for v in [0u8, 1, 77, 128, 254, 255] {
                let flat = Array3::from_elem((11, 7, 3), v);
                for (h, w) in [(3, 2), (11, 19), (25, 7), (4, 30), (1, 1), (40, 40)] {
                    let out = resize(flat.view(), h, w, f).unwrap();
                    assert!(out.iter().all(|&x| x == v), "{f:?} {v} -> {h}x{w}");
                }
            }
        }
    }

    /// Box downscale by an integer factor: each pass outputs the block mean rounded half up
    /// (Pillow's fixed point is exact for 1/2, 1/4, and never at a tie for 1/3, 1/5), horizontal
    /// pass first, its bytes feeding the vertical pass.
    #[test]
    fn box_integer_downscale_is_block_means() {
        let mut rng = Rng::new(5);
        for f in 2..=5usize {
            let (oh, ow) = (6, 7);
            let img = random_image(&mut rng, oh * f, ow * f);
            let round_mean = |sum: usize| ((2 * sum + f) / (2 * f)) as u8;
            let tmp = Array3::from_shape_fn((oh * f, ow, 3), |(y, x, c)| {
                round_mean((0..f).map(|j| usize::from(img[[y, x * f + j, c]])).sum())
            });
            let want = Array3::from_shape_fn((oh, ow, 3), |(y, x, c)| {
                round_mean((0..f).map(|i| usize::from(tmp[[y * f + i, x, c]])).sum())
            });
            let got = resize(img.view(), oh, ow, Interpolation::Box).unwrap();
            assert_eq!(n_diff(&got, &want), 0, "factor {f}");
        }
    }

    #[test]
    fn nearest_integer_upscale_repeats_pixels() {
        let mut rng = Rng::new(8);
        let img = random_image(&mut rng, 5, 4);
        for f in 1..=4usize {
            let got = resize(img.view(), 5 * f, 4 * f, Interpolation::Nearest).unwrap();
            let want = Array3::from_shape_fn((5 * f, 4 * f, 3), |(y, x, c)| img[[y / f, x / f, c]]);
            assert_eq!(got, want, "factor {f}");
        }
        // the accumulated position is not floor((i + 0.5) * in / out) for 60 -> 22
        let direct: Vec<usize> = (0..22).map(|i| ((2 * i + 1) * 60) / 44).collect();
        assert_ne!(nearest_indices(60, 22), direct);
    }

    #[test]
    fn vertical_first_only_where_pillow_does_it() {
        // same numbers whichever order for a one-axis resize; the two orders differ elsewhere,
        // which the fixtures rand_b_22x50 and grad_24x52 pin
        let mut rng = Rng::new(9);
        let img = random_image(&mut rng, 30, 20);
        let a = resize(img.view(), 30, 7, Interpolation::Bicubic).unwrap();
        let b = resize(img.view(), 12, 20, Interpolation::Bicubic).unwrap();
        assert_eq!((a.dim(), b.dim()), ((30, 7, 3), (12, 20, 3)));
        // a 1-pixel-wide image and a 1 x 1 output work for every filter
        let thin = random_image(&mut rng, 17, 1);
        for f in Interpolation::ALL {
            assert_eq!(resize(thin.view(), 5, 3, f).unwrap().dim(), (5, 3, 3));
            assert_eq!(resize(img.view(), 1, 1, f).unwrap().dim(), (1, 1, 3));
        }
    }

    #[test]
    fn spellings_round_trip() {
        for f in Interpolation::ALL {
            assert_eq!(Interpolation::parse(f.as_str()).unwrap(), f);
        }
        assert!(matches!(Interpolation::parse("cubic"), Err(KernelError::Parameter(_))));
        assert_eq!(Interpolation::default(), Interpolation::Bilinear);
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let gray = Array3::<u8>::zeros((8, 8, 1));
        let err = resize(gray.view(), 4, 4, Interpolation::Bilinear).unwrap_err();
        assert_eq!(
            err,
            KernelError::Shape(
                "expected an RGB image [height, width, 3], got shape [8, 8, 1]".into()
            )
        );
        let rgba = Array3::<u8>::zeros((8, 8, 4));
        assert!(matches!(
            preprocess(rgba.view(), &Preprocessing::default()),
            Err(KernelError::Shape(_))
        ));
        let empty = Array3::<u8>::zeros((0, 8, 3));
        assert!(matches!(center_square(empty.view(), 0.5), Err(KernelError::Shape(_))));

        let img = Array3::<u8>::zeros((10, 12, 3));
        let param = |r: Result<Array3<u8>>| matches!(r, Err(KernelError::Parameter(_)));
        assert!(param(resize(img.view(), 0, 4, Interpolation::Box)));
        assert!(param(resize_shorter(img.view(), 0, Interpolation::Box)));
        assert!(param(center_crop(img.view(), 11, 4)));
        assert!(param(center_crop(img.view(), 4, 13)));
        assert!(param(center_crop(img.view(), 0, 4)));
        for fraction in [0.0, -0.5, 1.01, f64::NAN, f64::INFINITY, 0.01] {
            assert!(param(center_square(img.view(), fraction)), "{fraction}");
        }

        let bad = [
            Preprocessing { height: 0, ..Preprocessing::default() },
            Preprocessing { resize_shorter: Some(0), ..Preprocessing::default() },
            Preprocessing { crop_fraction: 1.5, ..Preprocessing::default() },
            Preprocessing { divisor: 0.0, ..Preprocessing::default() },
            Preprocessing { mean: [0.0, f32::INFINITY, 0.0], ..Preprocessing::default() },
            Preprocessing { std: [0.2, 0.0, 0.2], ..Preprocessing::default() },
            Preprocessing { std: [0.2, -1.0, 0.2], ..Preprocessing::default() },
            Preprocessing { std: [f32::NAN, 0.2, 0.2], ..Preprocessing::default() },
        ];
        for p in bad {
            assert!(matches!(preprocess(img.view(), &p), Err(KernelError::Parameter(_))), "{p:?}");
        }
        assert_eq!(Preprocessing::default().validate(), Ok(()));
    }
}
