"""The one max-subtracted exponential behind softmax, log_softmax, logsumexp and attention.

Rows where every entry is ``-inf`` are "empty": they carry no mass. Every quotient and
logarithm below goes through a ``where`` on both sides (the "double where"), so that empty
rows give 0 / -inf in the forward pass and exactly zero gradients in the backward pass,
instead of the 0/0 and log(0) that would poison autograd with NaN.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import array_api_compat

from ._namespace import Array, Namespace


class Normalizer(NamedTuple):
    exp: Array  # exp(x - shift), 0 at -inf entries
    total: Array  # sum of exp along the axis (keepdims), 0 for empty rows
    safe_total: Array  # total with empty rows set to 1, safe to divide by and take log of
    shift: Array  # row max, 0 for empty rows (keepdims)
    row_max: Array  # the raw row max: -inf for empty rows, +inf or NaN where present


def max_along(x: Array, axis: int, xp: Namespace) -> Array:
    """``max(x, axis, keepdims=True)``, ``-inf`` along an empty axis; an array with no
    elements at all gets no reduction (Dask's ``max`` of a zero-size array fails when
    computed)."""
    if 0 in x.shape:
        shape = tuple(1 if a == axis % x.ndim else n for a, n in enumerate(x.shape))
        return xp.full(shape, -math.inf, dtype=x.dtype, device=array_api_compat.device(x))
    return xp.max(x, axis=axis, keepdims=True)


def normalizer(x: Array, axis: int, xp: Namespace, sink: Array | None = None) -> Normalizer:
    """Max-subtracted exponentials of ``x`` along ``axis``; ``-inf`` entries get no mass.
    ``sink`` (keepdims-shaped): an extra logit per row in the total only (ATT-SINK-1)."""
    # No entries at all is the emptiest row there is; max() of nothing is an error.
    row_max = max_along(x, axis, xp)
    if sink is not None:
        row_max = xp.maximum(row_max, sink)
    shift = xp.where(row_max == -math.inf, 0.0, row_max)
    # A +inf entry gives inf - inf = NaN here, which is the specified result (SMX-4).
    e = xp.exp(x - shift)
    total = xp.sum(e, axis=axis, keepdims=True)
    if sink is not None:
        total = total + xp.exp(sink - shift)  # exp(-inf) = 0: a -inf sink is no sink
    safe_total = xp.where(total == 0.0, 1.0, total)
    return Normalizer(e, total, safe_total, shift, row_max)


def log_normalizer(n: Normalizer, xp: Namespace) -> Array:
    """``log(sum(exp(x)))`` from a :class:`Normalizer` (keepdims): -inf for empty rows,
    +inf for rows holding +inf, NaN for rows holding NaN."""
    lse = n.shift + xp.log(n.safe_total)
    lse = xp.where(n.total == 0.0, -math.inf, lse)
    return xp.where(n.row_max == math.inf, math.inf, lse)
