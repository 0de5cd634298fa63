"""Shared helpers for the value tests: move NumPy data to a backend, call attnspec, compare.

The float64 golden values come from ``tests/reference.py``; these helpers only do plumbing
so that every test file calls attnspec the same way on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import attnspec

#: (rtol, atol) per input dtype for out / lse / weights against the float64 oracle.
TOL = {
    "float64": (1e-12, 1e-12),
    "float32": (1e-5, 1e-5),
}

_ARRAY_OPTIONS = ("mask", "bias", "kv_lengths", "q_lengths", "dropout_mask")


#: The dtypes the value tests sweep, widest first.
SWEEP_DTYPES = ("float64", "float32")


def need_dtype(xb, dtype, *, sweep=False):
    """Skip unless the backend supports ``dtype``.

    With ``sweep=True`` a backend that pays per new shape or graph (``jit``: eager JAX compiles
    every op once per shape and dtype; ``lazy``: dask builds a graph per call) runs only the
    widest dtype it supports: the code path is the same for every dtype, and the cheap eager
    backends run the full dtype sweep, which keeps the suite fast.
    """
    if dtype not in xb.dtypes:
        pytest.skip(f"{xb.name}: no {dtype}")
    if sweep and (xb.has("jit") or xb.has("lazy")):
        widest = next(d for d in SWEEP_DTYPES if d in xb.dtypes)
        if dtype != widest:
            pytest.skip(f"{xb.name}: option sweeps run in {widest} only (per-shape compile cost)")


def _round_bfloat16(a):
    """Round to bfloat16 (nearest even) with ml_dtypes, else torch; skip when neither exists."""
    try:
        import ml_dtypes
    except ImportError:
        pass
    else:
        return a.astype(ml_dtypes.bfloat16).astype(np.float64)
    try:
        import torch
    except ImportError:
        pytest.skip("rounding to bfloat16 in NumPy needs ml_dtypes or torch")
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t.to(torch.bfloat16).to(torch.float64).numpy()


def exact_in(a, dtype):
    """Round float data to ``dtype`` and back to float64, so the oracle sees the true inputs.

    Rounds directly from float64 (bfloat16 goes through float32 first, which can double-round
    in rare ties; the result is still a bfloat16 value, which is all the tests need).
    """
    a = np.asarray(a, dtype=np.float64)
    if dtype == "float64":
        return a
    if dtype == "bfloat16":
        return _round_bfloat16(a.astype(np.float32))
    return a.astype(dtype).astype(np.float64)


#: (precision in bits incl. the implicit one, minimum normal exponent) per dtype name.
_FORMAT = {
    "float16": (11, -14),
    "bfloat16": (8, -126),
    "float32": (24, -126),
    "float64": (53, -1022),
}


def ulp(x, dtype):
    """Spacing of ``dtype`` at ``|x|`` (elementwise, float64), subnormal-aware."""
    p, emin = _FORMAT[dtype]
    x = np.abs(np.asarray(x, dtype=np.float64))
    _, e = np.frexp(np.where(x > 0, x, 1.0))  # x = m * 2**e with 0.5 <= m < 1
    e = np.where(x > 0, np.maximum(e - 1, emin), emin)
    return np.ldexp(1.0, e - (p - 1))


def to_backend(xb, value, dtype):
    """Float arrays go to ``dtype``; bool and integer arrays keep their kind."""
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.kind in "biu":
        return xb.from_numpy(value)
    return xb.from_numpy(value, dtype=dtype)


def sdpa(xb, dtype, q, k, v, **opts):
    """Run attnspec on the backend; returns the raw (out, lse, weights) backend arrays."""
    args = [to_backend(xb, a, dtype) for a in (q, k, v)]
    kw = {n: to_backend(xb, val, dtype) if n in _ARRAY_OPTIONS else val for n, val in opts.items()}
    return attnspec.scaled_dot_product_attention(*args, return_lse=True, return_weights=True, **kw)


def as64(xb, x):
    """A backend array as a float64 NumPy array."""
    return np.asarray(xb.to_numpy(x), dtype=np.float64)


def assert_close(xb, got, expected, dtype, *, what=""):
    """Compare backend results with float64 oracle results (NaN == NaN, inf == inf)."""
    rtol, atol = TOL[dtype]
    for name, g, e in zip(("out", "lse", "weights"), got, expected, strict=True):
        g = as64(xb, g)
        assert g.shape == e.shape, f"{what} {name}: shape {g.shape} != {e.shape}"
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"{what} {name}")
