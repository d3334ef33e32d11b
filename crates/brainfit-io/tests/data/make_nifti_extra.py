#!/usr/bin/env python3
"""Extra NIfTI reference files for brainfit-io's tests (beyond tests/fixtures/nifti/).

Covers the affine paths and byte orders the shared fixtures do not: a qform-only image
with an oblique rotation and qfac = -1, and a big-endian gzipped image with no xform at
all (nibabel's get_base_affine fallback) and int16 scaling. Expected values are what
nibabel returns (img.affine, img.get_fdata()).

Usage (from the repository root):
    .venv/bin/python crates/brainfit-io/tests/data/make_nifti_extra.py
"""
from pathlib import Path

import nibabel as nib
import numpy as np

OUT = Path(__file__).resolve().parent
rng = np.random.default_rng(7)

# 1. qform only, oblique rotation, reflection (qfac = -1), little-endian float32.
a, b = 0.3, -0.7
rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
aff = np.eye(4)
aff[:3, :3] = rz @ rx @ np.diag([2.0, 2.5, -3.0])
aff[:3, 3] = [10.0, -20.0, 5.5]
data = rng.normal(size=(3, 4, 5)).astype(np.float32)
hdr = nib.Nifti1Header()
hdr.set_data_dtype(np.float32)
hdr.set_data_shape(data.shape)
hdr.set_qform(aff, code=1)
hdr.set_sform(None, code=0)
img = nib.Nifti1Image(data, None, hdr)
img.header.set_qform(aff, code=1)
img.header.set_sform(None, code=0)
img.update_header = lambda: None  # keep the header exactly as set
img.to_filename(OUT / "qform_oblique.nii")
back = nib.load(OUT / "qform_oblique.nii")
assert back.header["sform_code"] == 0 and back.header["qform_code"] == 1
assert back.header["pixdim"][0] == -1
np.save(OUT / "qform_oblique_affine.npy", back.affine)
np.save(OUT / "qform_oblique_data.npy", back.get_fdata())

# 2. big-endian, gzipped, no xform codes, int16 with scl_slope 2 / scl_inter -1.
raw = rng.integers(-1000, 1000, size=(4, 3, 2, 2)).astype(">i2")
hdr = nib.Nifti1Header(endianness=">")
hdr.set_data_dtype(">i2")
hdr.set_data_shape(raw.shape)
hdr.set_zooms((2.0, 3.0, 4.0, 1.5))
hdr.set_qform(None, code=0)
hdr.set_sform(None, code=0)
hdr["scl_slope"] = 2.0
hdr["scl_inter"] = -1.0
hdr["vox_offset"] = 352
import gzip
import io
buf = io.BytesIO()
hdr.write_to(buf)
assert buf.tell() == 352
buf.write(raw.tobytes(order="F"))
(OUT / "noxform_be.nii.gz").write_bytes(gzip.compress(buf.getvalue(), mtime=0))
back = nib.load(OUT / "noxform_be.nii.gz")
assert back.header.endianness == ">"
assert back.header["sform_code"] == 0 and back.header["qform_code"] == 0
np.testing.assert_array_equal(back.get_fdata(), raw.astype(np.float64) * 2.0 - 1.0)
np.save(OUT / "noxform_be_affine.npy", back.affine)
np.save(OUT / "noxform_be_data.npy", back.get_fdata())
print("affines:\n", np.load(OUT / "qform_oblique_affine.npy"), "\n", np.load(OUT / "noxform_be_affine.npy"))
