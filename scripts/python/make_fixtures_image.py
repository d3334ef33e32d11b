#!/usr/bin/env python3
"""Reference fixtures for brainfit's stimulus-image preprocessing
(crates/brainfit-kernels/src/image.rs): Pillow's Image.resize for every filter, torchvision's
Resize(size) / CenterCrop conventions, the central-square crop, and the float pipeline
((x / 255 - mean) / std in float32) that feeds a network.

Usage (from the repository root):
    .venv/bin/python scripts/python/make_fixtures_image.py
    (or: .venv/bin/python scripts/python/make_fixtures.py image)

Pillow 13.0.0 (pinned in requirements.txt) is the reference; torchvision is not installed, its
two size rules are written out below (torchvision.transforms.functional.resize and
center_crop, both on PIL images). Deterministic: numpy default_rng with fixed seeds; the real
image comes from tests/data/kriegeskorte2008/images.npy, else
../shared/data/kriegeskorte2008/images.npy (override the folder with KRIEG_DIR=...).

Besides writing the files, the script re-implements Pillow's 8-bit resampling in numpy
(`pillow_resize` below, a transcription of src/libImaging/Resample.c and the nearest-neighbour
ImagingScaleAffine of Geometry.c) and asserts it equals Pillow on every fixture, so a Pillow
upgrade that changes the numbers fails here. Two facts it pins, both checked on the fixtures:
  * Pillow 13.0 (python-pillow/Pillow#9549) runs the vertical pass first when the height
    shrinks by more than twice as many pixels as the width does: out_h < in_h and
    in_h - out_h > 2 * (in_w - out_w); horizontal first otherwise (Pillow <= 12: always).
  * NEAREST picks source index int(pos) with pos accumulated as pos += in/out from
    in/(2 out) (not floor((x + 0.5) * in / out), which differs e.g. for 60 -> 22).

Files under tests/fixtures/image/ (uint8 images are [height, width, 3] RGB, C order):
  real.npy [175, 175, 3]        stimulus 63 of the 92 (Kriegeskorte et al. 2008)
  rand_a.npy [37, 53, 3]        seeded uniform noise
  rand_b.npy [60, 41, 3]        seeded uniform noise
  rand_c.npy [12, 17, 3]        seeded uniform noise (for upscaling)
  grad.npy [40, 56, 3]          smooth gradients plus a black/white square and stripes
                                (bicubic/lanczos overshoot there, so clipping is exercised)
  resize_<case>_<filter>.npy    Image.fromarray(input).resize((w, h), filter) for filter in
                                nearest box bilinear hamming bicubic lanczos and the cases
                                real_64x64, rand_a_14x20 (53 -> 20), rand_c_33x45 (upscale),
                                rand_b_53x36 (slight downscale), rand_b_22x50 (vertical pass
                                first; NEAREST's accumulated position matters for 60 -> 22),
                                grad_24x52 (vertical pass first, both sides shrink),
                                grad_40x21 (width only), grad_13x56 (height only)
  shorter_rand_a_20_<filter>.npy  torchvision Resize(20) of rand_a: [20, 28]
  shorter_rand_b_32_bilinear.npy  torchvision Resize(32) of rand_b: [46, 32]
  crop_rand_a_20x30.npy, crop_rand_b_33x20.npy
                                torchvision CenterCrop((h, w)); crop_offsets.npy int64 rows
                                (input 0=rand_a 1=rand_b 2=real, h, w, top, left) for these two
                                and the central squares below
  square_rand_a.npy, square_rand_b.npy
                                central square of side round_half_up(0.875 * min(H, W))
  pipeline_real_64_u8.npy [64, 64, 3], pipeline_real_224_u8.npy [224, 224, 3]
                                default Preprocessing (no shorter-side resize, central 7/8
                                square = 153 px, bilinear resize to 64 / 224) of the real image
                                before the float step
  pipeline_table.npy [3, 256] float32
                                (v / 255 - mean[c]) / std[c] in float32 for every byte v
                                (torchvision's ToTensor division, ImageNet mean and std as
                                float32): the float output is table[c, u8[y, x, c]] (asserted
                                here against the whole-array numpy computation)
  pipeline_constants.npy [7] float32   divisor (255), mean[3], std[3]
  pipeline_rand_b_tv.npy [3, 28, 28] float32
                                torchvision-style pipeline of rand_b, NCHW: Resize(32, bicubic)
                                -> [46, 32], central square round(0.875 * 32) = 28 (=
                                CenterCrop(28)), resize to 28 x 28 (identity), normalised
"""
from __future__ import annotations

import math
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from make_fixtures import FIX, KRIEG, ROOT, log, save  # noqa: E402

OUT = FIX / "image"
R = Image.Resampling
FILTERS = [("nearest", R.NEAREST), ("box", R.BOX), ("bilinear", R.BILINEAR),
           ("hamming", R.HAMMING), ("bicubic", R.BICUBIC), ("lanczos", R.LANCZOS)]
REAL_INDEX = 63
# (input name, output height, output width)
RESIZE_CASES = [("real", 64, 64), ("rand_a", 14, 20), ("rand_c", 33, 45), ("rand_b", 53, 36),
                ("rand_b", 22, 50), ("grad", 24, 52), ("grad", 40, 21), ("grad", 13, 56)]
DIVISOR = np.float32(255.0)  # torchvision's ToTensor divides by 255
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def images_path() -> Path:
    local = KRIEG / "images.npy"
    shared = ROOT.parent / "shared" / "data" / "kriegeskorte2008" / "images.npy"
    return local if local.exists() else shared


def make_inputs():
    real = np.ascontiguousarray(np.load(images_path(), mmap_mode="r")[REAL_INDEX])
    assert real.shape == (175, 175, 3) and real.dtype == np.uint8
    rng = np.random.default_rng(175)
    rand_a = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    rand_b = rng.integers(0, 256, size=(60, 41, 3), dtype=np.uint8)
    rand_c = rng.integers(0, 256, size=(12, 17, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:40, 0:56].astype(np.float64)
    grad = np.stack([xx * 255 / 55, yy * 255 / 39,
                     127.5 + 127.5 * np.sin(xx / 5.0 + yy / 7.0)], axis=-1)
    grad[10:22, 30:44] = 255.0  # white square on a dark left/top gradient
    grad[26:34, 6:20] = 0.0  # black square
    grad[:, 48::2, 1] = 255.0  # one-pixel stripes at the right
    grad = np.round(grad).astype(np.uint8)
    return {"real": real, "rand_a": rand_a, "rand_b": rand_b, "rand_c": rand_c, "grad": grad}


# ---------------------------------------------------------------------------
# An independent transcription of Pillow's 8-bit resampling (checked against Pillow)
# ---------------------------------------------------------------------------

PRECISION_BITS = 32 - 8 - 2
F054, F046 = float(np.float32(0.54)), float(np.float32(0.46))  # C float literals


def _box(x):
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def _bilinear(x):
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _hamming(x):
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x = x * math.pi
    return math.sin(x) / x * (F054 + F046 * math.cos(x))


def _bicubic(x, a=-0.5):
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc(x):
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x):
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


KERNELS = {R.BOX: (_box, 0.5), R.BILINEAR: (_bilinear, 1.0), R.HAMMING: (_hamming, 1.0),
           R.BICUBIC: (_bicubic, 2.0), R.LANCZOS: (_lanczos, 3.0)}


def coefficients(in_size, out_size, resample):
    """precompute_coeffs + normalize_coeffs_8bpc: [(first source index, int32 weights)]."""
    fn, support = KERNELS[resample]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    out = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        n = min(int(center + support + 0.5), in_size) - xmin
        w = [fn((x + xmin - center + 0.5) * (1.0 / filterscale)) for x in range(n)]
        total = 0.0
        for v in w:
            total += v
        if total != 0.0:
            w = [v / total for v in w]
        k = [int(v * (1 << PRECISION_BITS) + (-0.5 if v < 0 else 0.5)) for v in w]
        out.append((xmin, np.array(k, dtype=np.int64)))
    return out


def pass_rows(img, coeffs):
    """One pass along axis 1 of [rows, cols, 3]: fixed-point sums, >> 22, clipped."""
    out = np.empty((img.shape[0], len(coeffs), 3), dtype=np.uint8)
    src = img.astype(np.int64)
    for j, (first, k) in enumerate(coeffs):
        acc = (src[:, first:first + len(k)] * k[None, :, None]).sum(axis=1)
        out[:, j] = np.clip((acc + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS, 0, 255)
    return out


def nearest_indices(in_size, out_size):
    a = in_size / out_size
    pos, idx = a * 0.5, []
    for _ in range(out_size):
        idx.append(int(pos))
        pos += a
    return idx


def vertical_first(h, w, out_h, out_w):
    return out_h < h and out_w != w and (h - out_h) > 2 * (w - out_w)


def pillow_resize(img, out_h, out_w, resample):
    h, w, _ = img.shape
    if (h, w) == (out_h, out_w):
        return img.copy()
    if resample == R.NEAREST:
        return img[np.ix_(nearest_indices(h, out_h), nearest_indices(w, out_w))]
    cur = img
    if vertical_first(h, w, out_h, out_w):
        cur = pass_rows(cur.transpose(1, 0, 2), coefficients(h, out_h, resample)).transpose(1, 0, 2)
        return np.ascontiguousarray(pass_rows(cur, coefficients(w, out_w, resample)))
    if out_w != w:
        cur = pass_rows(cur, coefficients(w, out_w, resample))
    if out_h != h:
        cur = pass_rows(cur.transpose(1, 0, 2), coefficients(h, out_h, resample)).transpose(1, 0, 2)
    return np.ascontiguousarray(cur)


# ---------------------------------------------------------------------------
# Pillow, torchvision's size rules, and the float step
# ---------------------------------------------------------------------------

def pil_resize(img, out_h, out_w, resample):
    out = np.asarray(Image.fromarray(img).resize((out_w, out_h), resample))
    assert out.shape == (out_h, out_w, 3) and out.dtype == np.uint8
    ref = pillow_resize(img, out_h, out_w, resample)
    diff = int((ref != out).sum())
    assert diff == 0, f"numpy transcription differs from Pillow in {diff} bytes"
    return out


def tv_shorter_size(h, w, size):
    """torchvision.transforms.functional._compute_resized_output_size, one int size."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return new_h, new_w


def tv_resize(img, size, resample):
    """torchvision Resize(size) on a PIL image: unchanged when the size already fits."""
    h, w, _ = img.shape
    new_h, new_w = tv_shorter_size(h, w, size)
    if (new_h, new_w) == (h, w):
        return img.copy()
    return pil_resize(img, new_h, new_w, resample)


def tv_center_crop_offsets(h, w, ch, cw):
    """torchvision.transforms.functional.center_crop (no padding: crop <= image)."""
    assert ch <= h and cw <= w
    return int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))


def center_crop(img, ch, cw):
    top, left = tv_center_crop_offsets(img.shape[0], img.shape[1], ch, cw)
    return np.ascontiguousarray(img[top:top + ch, left:left + cw]), top, left


def square_side(h, w, fraction):
    """round(fraction * min(H, W)), halves away from zero (Rust's f64::round), exactly."""
    return int(Decimal(fraction * min(h, w)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def center_square(img, fraction):
    side = square_side(img.shape[0], img.shape[1], fraction)
    return center_crop(img, side, side)


def normalise(u8):
    """[h, w, 3] uint8 -> [3, h, w] float32, (x / 255 - mean) / std in that order."""
    x = u8.astype(np.float32) / DIVISOR
    x = (x - MEAN) / STD
    assert x.dtype == np.float32
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def pipeline_u8(img, resize_shorter, fraction, out_h, out_w, resample):
    cur = img if resize_shorter is None else tv_resize(img, resize_shorter, resample)
    cur, _, _ = center_square(cur, fraction)
    return pil_resize(cur, out_h, out_w, resample)


def main():
    import importlib.metadata

    assert importlib.metadata.version("pillow") == "13.0.0", "fixtures pin Pillow 13.0.0"
    inputs = make_inputs()
    for name, img in inputs.items():
        save(OUT / f"{name}.npy", img, np.uint8)

    # ---- resize, every filter
    for name, out_h, out_w in RESIZE_CASES:
        img = inputs[name]
        for fname, resample in FILTERS:
            out = pil_resize(img, out_h, out_w, resample)
            save(OUT / f"resize_{name}_{out_h}x{out_w}_{fname}.npy", out, np.uint8)
    # the cases meant to exercise the vertical-first order and NEAREST's accumulation do
    for name, out_h, out_w in [("rand_b", 22, 50), ("grad", 24, 52)]:
        h, w, _ = inputs[name].shape
        assert vertical_first(h, w, out_h, out_w)
        img = inputs[name]
        horizontal_first = pass_rows(pass_rows(img, coefficients(w, out_w, R.BILINEAR))
                                     .transpose(1, 0, 2), coefficients(h, out_h, R.BILINEAR))
        assert not np.array_equal(horizontal_first.transpose(1, 0, 2),
                                  pil_resize(img, out_h, out_w, R.BILINEAR))
    direct = [int((y + 0.5) * 60 / 22) for y in range(22)]
    assert direct != nearest_indices(60, 22)
    # Pillow returns a copy for the same size, for every filter
    for _, resample in FILTERS:
        assert np.array_equal(pil_resize(inputs["rand_a"], 37, 53, resample), inputs["rand_a"])

    # ---- torchvision Resize(size) (shorter side) and CenterCrop
    for fname, resample in FILTERS:
        out = tv_resize(inputs["rand_a"], 20, resample)
        assert out.shape == (20, 28, 3)  # int(20 * 53 / 37) = int(28.6)
        save(OUT / f"shorter_rand_a_20_{fname}.npy", out, np.uint8)
    out = tv_resize(inputs["rand_b"], 32, R.BILINEAR)
    assert out.shape == (46, 32, 3)  # int(32 * 60 / 41) = int(46.8)
    save(OUT / "shorter_rand_b_32_bilinear.npy", out, np.uint8)

    offsets = []
    for index, name, ch, cw in [(0, "rand_a", 20, 30), (1, "rand_b", 33, 20)]:
        out, top, left = center_crop(inputs[name], ch, cw)
        save(OUT / f"crop_{name}_{ch}x{cw}.npy", out, np.uint8)
        offsets.append((index, ch, cw, top, left))
    # round half to even: (37-20)/2 = 8.5 -> 8, (53-30)/2 = 11.5 -> 12, (60-33)/2 = 13.5 -> 14
    assert offsets[0][3:] == (8, 12) and offsets[1][3:] == (14, 10)
    for index, name in [(0, "rand_a"), (1, "rand_b"), (2, "real")]:
        out, top, left = center_square(inputs[name], 0.875)
        if name != "real":
            save(OUT / f"square_{name}.npy", out, np.uint8)
        offsets.append((index, out.shape[0], out.shape[1], top, left))
    save(OUT / "crop_offsets.npy", np.array(offsets), np.int64)
    assert square_side(44, 50, 0.875) == 39  # 38.5: half away from zero, not to even

    # ---- the float pipeline
    table = normalise(np.arange(256, dtype=np.uint8)[None, :, None].repeat(3, axis=2))[:, 0, :]
    save(OUT / "pipeline_table.npy", table, np.float32)
    save(OUT / "pipeline_constants.npy", np.concatenate([[DIVISOR], MEAN, STD]), np.float32)
    for size in (64, 224):
        u8 = pipeline_u8(inputs["real"], None, 0.875, size, size, R.BILINEAR)
        direct = normalise(u8)
        lookup = table[np.arange(3)[:, None, None], u8.transpose(2, 0, 1)]
        assert np.array_equal(direct, lookup)
        save(OUT / f"pipeline_real_{size}_u8.npy", u8, np.uint8)
    u8 = pipeline_u8(inputs["rand_b"], 32, 0.875, 28, 28, R.BICUBIC)
    _, tv_top, tv_left = center_crop(tv_resize(inputs["rand_b"], 32, R.BICUBIC), 28, 28)
    assert (tv_top, tv_left) == (9, 2)  # CenterCrop(28) of [46, 32]: (46-28)/2, (32-28)/2
    save(OUT / "pipeline_rand_b_tv.npy", normalise(u8), np.float32)

    n_mul_div = int((np.arange(256, dtype=np.float32) * (np.float32(1) / DIVISOR)
                     != np.arange(256, dtype=np.float32) / DIVISOR).sum())
    total = sum(f.stat().st_size for f in OUT.glob("*.npy"))
    log(f"image: {len(list(OUT.glob('*.npy')))} files, {total / 1024:.1f} KiB; "
        f"x * float32(1/255) != x / 255 (torchvision's ToTensor) for {n_mul_div} of 256 bytes")


if __name__ == "__main__":
    main()
