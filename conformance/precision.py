"""Rounding float64 data to a narrower dtype, and each dtype's machine epsilon.

NumPy has no bfloat16; rounding to it is done here with integer arithmetic on the float32
bit pattern (round to nearest, ties to even), so the suite needs no extra dependency.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = {
    "float64": float(np.finfo(np.float64).eps),
    "float32": float(np.finfo(np.float32).eps),
    "float16": float(np.finfo(np.float16).eps),
    "bfloat16": 2.0**-7,
}


def round_bfloat16(x: Any) -> np.ndarray:
    """Round to the nearest bfloat16 (ties to even); returned as float32."""
    f = np.ascontiguousarray(x, dtype=np.float32)
    bits = f.view(np.uint32)
    lsb = (bits >> np.uint32(16)) & np.uint32(1)
    rounded = (bits + np.uint32(0x7FFF) + lsb) & np.uint32(0xFFFF0000)
    # NaN must stay NaN (the carry could turn a NaN payload into inf).
    rounded = np.where(np.isnan(f), np.uint32(0x7FC00000), rounded)
    out: np.ndarray = rounded.astype(np.uint32).view(np.float32)
    return out


def round_to(x: Any, dtype: str) -> np.ndarray:
    """``x`` rounded to ``dtype`` and held in float64 (exactly representable there)."""
    if dtype == "float64":
        return np.array(x, dtype=np.float64)  # a copy, as from the other dtypes
    x64: np.ndarray = np.asarray(x, dtype=np.float64)
    if dtype == "bfloat16":
        return round_bfloat16(x64).astype(np.float64)
    return x64.astype(dtype).astype(np.float64)


def working_dtype(dtype: str) -> Any:
    """The NumPy dtype that holds values of ``dtype`` for the naive reference."""
    return {"float64": np.float64, "float32": np.float32}.get(dtype, np.float32)
