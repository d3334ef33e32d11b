#!/usr/bin/env python3
"""NumPy-written .npy / .npz files for brainfit-io's tests: the layouts np.save and
np.savez really produce (Fortran order, big-endian, format versions 2.0 and 3.0, narrow
integer and bool dtypes, 0-d and empty arrays, stored and deflated archives).

Every array is np.arange(n).reshape(shape) (times a scale, cast to the dtype), so the
Rust tests can recompute the expected values.

Usage (from the repository root):
    .venv/bin/python crates/brainfit-io/tests/data/make_npy_extra.py
"""
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "npy"
OUT.mkdir(exist_ok=True)


def ar(shape, dtype, scale=1):
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) * scale).astype(dtype)


np.save(OUT / "fortran_f8_2x3x4.npy", np.asfortranarray(ar((2, 3, 4), "<f8", 1.5)))
np.save(OUT / "be_i4_2x3.npy", ar((2, 3), ">i4", -7))
np.save(OUT / "be_f4_fortran_3x2.npy", np.asfortranarray(ar((3, 2), ">f4", 0.25)))
for version in [(2, 0), (3, 0)]:
    with open(OUT / f"v{version[0]}_f4_2x2.npy", "wb") as fh:
        np.lib.format.write_array(fh, ar((2, 2), "<f4", 2), version=version)
np.save(OUT / "bool_5.npy", ar((5,), "i8") % 2 == 1)
np.save(OUT / "u1_4.npy", ar((4,), "u1", 60))
np.save(OUT / "i1_4.npy", ar((4,), "i1", -30))
np.save(OUT / "i2_4.npy", ar((4,), "<i2", -1000))
np.save(OUT / "u2_4.npy", ar((4,), "<u2", 20000))
np.save(OUT / "u4_3.npy", ar((3,), "<u4", 2_000_000_000))
np.save(OUT / "scalar_f8.npy", np.float64(2.5))
np.save(OUT / "empty_f4_0x5.npy", np.zeros((0, 5), dtype="<f4"))
np.savez(OUT / "layers.npz", conv5=ar((3, 4), "<f4", 0.5), fc6=ar((3, 2), "<f8", 3))
np.savez_compressed(OUT / "layers_compressed.npz", conv5=ar((3, 4), "<f4", 0.5),
                    fc6=ar((3, 2), "<f8", 3))
print(sorted(p.name for p in OUT.iterdir()))
