"""Kernels a new user writes, for tests/test_conformance_coverage.py: plain NumPy attention
with one key/value head per query head, honestly declaring the few options it takes.

:func:`stable` is right for what it declares (max subtraction, float32 accumulation for
half inputs, the spec's errors); :func:`overflowing` is the same code without the max
subtraction, so it overflows at logits of ~90 (float32) and ~11 (float16).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from attnspec.conformance.adapters.attnspec_adapter import AttnspecAdapter


def _attention(query: Any, key: Any, value: Any, mask: Any, scale: Any, stable: bool,
               lse: bool = False) -> Any:
    q, k, v = (np.asarray(x) for x in (query, key, value))
    for name, x in (("key", k), ("value", v)):
        if x.dtype != q.dtype:
            raise TypeError(f"{name}: dtype {x.dtype}, expected query's dtype {q.dtype}")
    if k.shape[-1] != q.shape[-1] or k.shape[-3] != q.shape[-3]:
        raise ValueError(f"key: shape {k.shape} does not match query {q.shape}")
    acc = np.float64 if q.dtype == np.float64 else np.float32
    q, k, v = (x.astype(acc) for x in (q, k, v))
    s = (q @ np.swapaxes(k, -1, -2)) * acc(scale if scale is not None
                                           else 1 / math.sqrt(q.shape[-1]))
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = np.zeros_like(s[..., :1])
    if stable:
        m = np.max(s, axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), 0, m)
    with np.errstate(all="ignore"):
        e = np.exp(s - m)
        total = e.sum(-1, keepdims=True)
        out = ((e / np.where(total == 0, 1, total)) @ v).astype(np.asarray(query).dtype)
        if lse:
            return out, (m + np.log(total))[..., 0]
    return out


def stable(query: Any, key: Any, value: Any, *, mask: Any = None, scale: Any = None) -> Any:
    return _attention(query, key, value, mask, scale, stable=True)


def overflowing(query: Any, key: Any, value: Any, *, mask: Any = None,
                scale: Any = None) -> Any:
    return _attention(query, key, value, mask, scale, stable=False)


for _f in (stable, overflowing):
    _f.attnspec_capabilities = {"features": ["mask", "scale"]}


def float64_only(query: Any, key: Any, value: Any) -> Any:
    """Right, and declares almost nothing: no option, float64 only."""
    return _attention(query, key, value, None, None, stable=True)


float64_only.attnspec_capabilities = {"features": [], "dtypes": ["float64"]}


def no_dtypes(query: Any, key: Any, value: Any) -> Any:
    return _attention(query, key, value, None, None, stable=True)


no_dtypes.attnspec_capabilities = {"features": [], "dtypes": []}


class DeclaresLseReturnsNone(AttnspecAdapter):
    """attnspec on NumPy that declares ``lse`` but never returns one: its ``out`` is right
    everywhere, and it has shown nothing about ATT-LSE-1."""

    def __init__(self) -> None:
        super().__init__("numpy")
        self.name = "declares-lse-returns-none"

    def call(self, case: Any, args: dict[str, Any]) -> dict[str, Any]:
        outputs = super().call(case, args)
        outputs.pop("lse", None)
        return outputs
