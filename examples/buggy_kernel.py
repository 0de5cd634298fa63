"""A kernel author's first attempt at attention, with a bug for ``attnspec check`` to find.

Written against the Python Array API standard (through ``array_api_compat``), so the same
function runs on NumPy, torch, JAX, ... It says what it supports in its
``attnspec_capabilities`` attribute; ``attnspec check`` grades it on exactly that and marks
every other case "not applicable".

The planted bug: ``causal=True`` always masks ``j > i`` (upper-left alignment), even when
the caller asks for ``alignment="lower_right"``, where the last query sits on the last key
and query ``i`` may attend to ``j <= i + Lk - Lq`` (spec rule ATT-CAUSAL-2). With ``Lq ==
Lk`` the two alignments agree, which is why a test suite of square problems never notices.
(The check finds two more bugs, which were not planted: see the walk-through.)

    python -m attnspec.conformance.cli check examples.buggy_kernel:attention

The fix is ``examples/fixed_kernel.py``; the walk-through is docs/walkthrough.md.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat


def attention(query: Any, key: Any, value: Any, *, mask: Any = None, causal: bool = False,
              alignment: str = "upper_left", scale: float | None = None) -> Any:
    """softmax(q k^T * scale, masked) v over ``(*batch, H, L, D)`` arrays (mask True = keep)."""
    xp = array_api_compat.array_namespace(query, key, value)
    hq, lq, lk = query.shape[-3], query.shape[-2], key.shape[-2]
    key, value = repeat_kv_heads(xp, key, hq), repeat_kv_heads(xp, value, hq)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = xp.matmul(query, xp.matrix_transpose(key)) * scale
    keep = xp.ones((lq, lk), dtype=xp.bool)
    if causal:
        i = xp.reshape(xp.arange(lq), (lq, 1))
        j = xp.reshape(xp.arange(lk), (1, lk))
        keep = j <= i  # BUG: ignores `alignment`; lower-right needs j <= i + (lk - lq)
    return masked_softmax_matmul(xp, scores, keep, mask, value)


def repeat_kv_heads(xp: Any, x: Any, hq: int) -> Any:
    """Grouped-query attention: query head ``h`` reads key/value head ``h // (Hq // Hkv)``."""
    *batch, hkv, length, dim = x.shape
    x = xp.broadcast_to(xp.reshape(x, (*batch, hkv, 1, length, dim)),
                        (*batch, hkv, hq // hkv, length, dim))
    return xp.reshape(x, (*batch, hq, length, dim))


def masked_softmax_matmul(xp: Any, scores: Any, keep: Any, mask: Any, value: Any) -> Any:
    """softmax over the kept scores of each row, times ``value``; an empty row gives 0."""
    if mask is not None:
        keep = xp.logical_and(keep, mask)
    keep = xp.broadcast_to(keep, scores.shape)
    scores = xp.where(keep, scores, -math.inf)
    row_max = xp.max(scores, axis=-1, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, 0.0)  # an empty row: no -inf - -inf
    weights = xp.where(keep, xp.exp(scores - row_max), 0.0)
    total = xp.sum(weights, axis=-1, keepdims=True)
    return xp.matmul(weights / xp.where(total > 0, total, 1.0), value)


CAPABILITIES = {
    "features": ["batch0", "batch2", "gqa", "dv_ne_dk", "lq_ne_lk", "scale", "mask", "causal",
                 "causal_lower_right"],
}
attention.attnspec_capabilities = CAPABILITIES  # type: ignore[attr-defined]
