"""The kernel of ``examples/buggy_kernel.py`` after ``attnspec check`` found its four bugs.

1. Causal alignment: ``alignment="lower_right"`` shifts the diagonal by ``Lk - Lq`` (spec
   rule ATT-CAUSAL-2), so the last query sits on the last key.
2. Half precision: float16 scores of logits near float16's maximum overflowed to ``inf``
   and the softmax gave NaN; scores, softmax and the weighted sum now run in float32 for
   float16/bfloat16 inputs and the result is rounded back (the spec's accumulation rule,
   ATT-DTYPE-2).
3. Mixed dtypes: a float64 key with float32 query and value was silently promoted; the
   spec (ATT-DTYPE-1, ATT-ARG-1) wants a ``TypeError`` naming the argument.
4. Shape errors on torch (found by ``--backend torch``): a head_dim mismatch or query heads
   that are not a multiple of the key heads came out of torch's matmul and reshape as
   ``RuntimeError``; the spec (ATT-ARG-1) wants a ``ValueError`` on every backend.

    python -m attnspec.conformance.cli check examples.fixed_kernel:attention

The walk-through is docs/walkthrough.md.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat


def attention(query: Any, key: Any, value: Any, *, mask: Any = None, causal: bool = False,
              alignment: str = "upper_left", scale: float | None = None) -> Any:
    """softmax(q k^T * scale, masked) v over ``(*batch, H, L, D)`` arrays (mask True = keep)."""
    xp = array_api_compat.array_namespace(query, key, value)
    for name, x in (("key", key), ("value", value)):  # FIX 3: one dtype, or a TypeError
        if x.dtype != query.dtype:
            raise TypeError(f"{name}: dtype {x.dtype}, expected query's dtype {query.dtype}")
    if key.shape[-1] != query.shape[-1]:  # FIX 4: shape errors are ValueErrors everywhere
        raise ValueError(f"key: head_dim {key.shape[-1]}, expected query's {query.shape[-1]}")
    if query.shape[-3] % key.shape[-3]:
        raise ValueError(f"query's {query.shape[-3]} heads are not a multiple of key's "
                         f"{key.shape[-3]}")
    out_dtype = query.dtype
    if out_dtype not in (xp.float32, xp.float64):  # FIX 2: accumulate half precision in fp32
        query, key, value = (xp.astype(x, xp.float32) for x in (query, key, value))
    hq, lq, lk = query.shape[-3], query.shape[-2], key.shape[-2]
    key, value = repeat_kv_heads(xp, key, hq), repeat_kv_heads(xp, value, hq)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = xp.matmul(query, xp.matrix_transpose(key)) * scale
    keep = xp.ones((lq, lk), dtype=xp.bool)
    if causal:
        i = xp.reshape(xp.arange(lq), (lq, 1))
        j = xp.reshape(xp.arange(lk), (1, lk))
        shift = lk - lq if alignment == "lower_right" else 0  # FIX 1: honour `alignment`
        keep = j <= i + shift
    return xp.astype(masked_softmax_matmul(xp, scores, keep, mask, value), out_dtype)


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
