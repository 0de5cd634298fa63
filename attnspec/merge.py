"""merge: combine attention over disjoint key sets from partial ``(out, lse)`` results."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import reduce

from ._namespace import (
    Array,
    Namespace,
    accumulation_dtype,
    check_same_device,
    namespace_of,
    to_dtype,
)
from ._shapes import fmt
from ._validate import check_real_floating, shape_of

__all__ = ["merge"]


def merge(
    partials: Sequence[tuple[Array, Array]], /, *, xp: Namespace | None = None
) -> tuple[Array, Array]:
    """Combine partial attention results computed over disjoint sets of keys.

    If ``(out_i, lse_i)`` is attention of the same queries over key set ``K_i`` (as returned
    by ``scaled_dot_product_attention(..., return_lse=True)``), the merge is attention over
    the union of the ``K_i``: ``lse = log(sum_i exp(lse_i))`` and
    ``out = sum_i exp(lse_i - lse) * out_i``. This is the primitive behind the chunked path,
    split-K decode and ring / sequence-parallel attention.

    Parameters
    ----------
    partials : sequence of (out, lse)
        ``out`` of shape ``(..., L, Dv)`` and ``lse`` of shape ``(..., L)``, all of the same
        shapes. A partial whose row attended nothing (``lse = -inf``) contributes nothing,
        whatever its ``out`` holds there.
    xp : namespace, optional

    Returns
    -------
    (out, lse)
        ``out`` in the partials' dtype, ``lse`` in float32 (float64 for float64). Rows that
        no partial attended give ``out = 0``, ``lse = -inf``.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> import attnspec
    >>> q = xp.zeros((1, 1, 4)); k = xp.zeros((1, 4, 4))
    >>> v = xp.reshape(xp.arange(8.0), (1, 4, 2))
    >>> left = attnspec.scaled_dot_product_attention(q, k[:, :1, :], v[:, :1, :], return_lse=True)
    >>> right = attnspec.scaled_dot_product_attention(q, k[:, 1:, :], v[:, 1:, :], return_lse=True)
    >>> attnspec.merge([left, right])[0]      # the mean of all four value rows
    Array([[[3., 4.]]], dtype=array_api_strict.float64)
    """
    if isinstance(partials, (str, bytes)) or not isinstance(partials, Iterable):
        raise TypeError(
            "merge: partials must be a sequence of (out, lse) pairs; got "
            f"{type(partials).__name__}"
        )
    pairs = list(partials)
    if not pairs:
        raise ValueError("merge: partials must hold at least one (out, lse) pair; got none")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"merge: partials[{i}] must be an (out, lse) pair; got "
                            f"{type(pair).__name__} (pass a list: merge([(out, lse), ...]))")
    arrays = {}
    for i, (o, lse) in enumerate(pairs):
        arrays[f"partials[{i}] out"] = o
        arrays[f"partials[{i}] lse"] = lse
    xp = namespace_of(xp, arrays, func="merge", required=tuple(arrays))
    check_same_device(arrays, func="merge")
    for name, x in arrays.items():
        shape_of(name, x, "merge")
        check_real_floating(name, x, xp, "merge")
    outs = [o for o, _ in pairs]
    lses = [lse for _, lse in pairs]
    first = outs[0]
    if first.ndim < 1:
        raise ValueError(
            f"merge: partials[0] out must have shape (..., L, Dv); got {fmt(first.shape)}"
        )
    for i, (o, lse) in enumerate(pairs):
        if o.dtype != first.dtype:
            raise TypeError(f"merge: partials[{i}] out has dtype {o.dtype}, partials[0] "
                            f"{first.dtype}; every out must have one dtype")
        if o.shape != first.shape or lse.shape != first.shape[:-1]:
            raise ValueError(
                f"merge: partials[{i}] has out {fmt(o.shape)} and lse {fmt(lse.shape)}; "
                f"expected out {fmt(first.shape)} and lse {fmt(first.shape[:-1])}"
            )
    acc = accumulation_dtype(xp, first.dtype)
    lses = [to_dtype(xp, lse, acc) for lse in lses]
    row_max = reduce(xp.maximum, lses)
    shift = xp.where(row_max == -math.inf, 0.0, row_max)
    total = None
    out = None
    for o, lse in zip(outs, lses, strict=True):
        w = xp.exp(lse - shift)
        # An empty partial may hold anything in `out` (another framework's NaN): weight 0
        # must mean "ignored", not 0 * NaN.
        term = xp.where(xp.expand_dims(lse == -math.inf, axis=-1), 0.0,
                        xp.expand_dims(w, axis=-1) * to_dtype(xp, o, acc))
        total = w if total is None else total + w
        out = term if out is None else out + term
    safe = xp.where(total == 0.0, 1.0, total)
    merged_lse = xp.where(total == 0.0, -math.inf, shift + xp.log(safe))
    merged_lse = xp.where(row_max == math.inf, math.inf, merged_lse)
    return to_dtype(xp, out / xp.expand_dims(safe, axis=-1), first.dtype), merged_lse
