"""Where masks are built: causal (both alignments), sliding windows, lengths, combinations.

Every mask is boolean with True = "may attend" (spec rule ATT-MASK-1). Masks are built from
index arithmetic on ``arange`` only, never from array data in Python, so they trace under
``jax.jit`` and stay lazy on Dask.

The diagonal: query row ``i`` is aligned with key ``i + offset`` where ``offset`` is 0 for
``alignment="upper_left"`` and ``kv_len - q_len`` for ``"lower_right"`` (ATT-CAUSAL-1/2).
``causal`` keeps ``j <= i + offset``; ``window=(left, right)`` keeps
``i + offset - left <= j <= i + offset + right`` (ATT-WINDOW-1).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import array_api_compat

from ._namespace import Array, Namespace, is_integer, namespace, to_dtype
from ._validate import MASK_HINT, check_bool

__all__ = [
    "attention_mask",
    "causal_mask",
    "combine_masks",
    "length_mask",
    "mask_to_bias",
    "window_mask",
]

ALIGNMENTS = ("upper_left", "lower_right")
Window = tuple[int | None, int | None]


def check_alignment(alignment: object) -> str:
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be 'upper_left' or 'lower_right'; got {alignment!r}")
    return alignment  # type: ignore[return-value]


def check_window(window: object) -> Window | None:
    """Validate ``window``: ``None`` or a ``(left, right)`` pair of ints >= 0 or ``None``."""
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValueError(
            "window must be a (left, right) pair of non-negative ints or None (unbounded); "
            f"got {window!r}"
        )
    for side, w in zip(("left", "right"), window, strict=True):
        if w is None:
            continue
        if isinstance(w, bool) or not isinstance(w, int):
            raise TypeError(f"window {side} must be an int or None; got {type(w).__name__}")
        if w < 0:
            raise ValueError(
                f"window {side} must be >= 0 (use None for unbounded, not -1); got {w}"
            )
    return (window[0], window[1])


def check_band_options(causal: object, window: object, alignment: object) -> Window | None:
    """Validate ``causal``, ``window`` and ``alignment``; returns the window as a tuple."""
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool; got {type(causal).__name__}")
    check_alignment(alignment)
    return check_window(window)


def _device_of(*arrays: Any) -> Any:
    """The device of the first array argument (``None`` when there is none)."""
    for a in arrays:
        if array_api_compat.is_array_api_obj(a):
            return array_api_compat.device(a)
    return None


def _check_size(name: str, n: object) -> int:
    try:
        n = operator.index(n)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int; got {type(n).__name__}") from None
    if n < 0:
        raise ValueError(f"{name} must be >= 0; got {n}")
    return n


def as_lengths(lengths: Any, name: str, xp: Namespace, device: Any, index_dtype: Any) -> Array:
    """``kv_lengths``/``q_lengths`` as an integer array of the index dtype."""
    if isinstance(lengths, bool):
        raise TypeError(f"{name} must be an integer array or int; got bool")
    if isinstance(lengths, (int, Sequence)):
        lengths = xp.asarray(lengths, device=device)
    if not is_integer(xp, lengths.dtype):
        raise TypeError(f"{name} must have an integer dtype; got {lengths.dtype}")
    return to_dtype(xp, lengths, index_dtype)


def _per_batch(lengths: Array, xp: Namespace) -> Array:
    """``(*batch,)`` -> ``(*batch, 1, 1, 1)``: one value per batch entry, broadcast over
    heads, query rows and keys."""
    return xp.reshape(lengths, (*lengths.shape, 1, 1, 1))


Block = tuple[int, int]  # a half-open index range [start, stop)


def band_limits(causal: bool, window: Window | None) -> tuple[int | None, int | None]:
    """``(left, right)`` of the diagonal band that causal and window keep together."""
    left = None if window is None else window[0]
    right = None if window is None else window[1]
    if causal:
        right = 0 if right is None else min(right, 0)
    return left, right


def static_offset(lq: int, lk: int, alignment: str, per_batch_lengths: bool) -> int | None:
    """The diagonal offset when it is known from shapes alone (``None``: it varies per batch
    entry with the lengths, so only the data knows it)."""
    if alignment == "upper_left":
        return 0
    return None if per_batch_lengths else lk - lq


def block_outside_band(rows: Block, cols: Block, offset: int | None,
                       limits: tuple[int | None, int | None]) -> bool:
    """True when no (i, j) of the block lies in the band: the whole block is masked, and the
    chunked path may skip it. Decided from shapes only (never from array data)."""
    left, right = limits
    if offset is None:
        return False
    if right is not None and cols[0] > rows[1] - 1 + offset + right:
        return True
    return left is not None and cols[1] - 1 < rows[0] + offset - left


def _band(
    lq: int,
    lk: int,
    *,
    causal: bool,
    window: Window | None,
    alignment: str,
    kv_lengths: Array | None,
    q_lengths: Array | None,
    xp: Namespace,
    device: Any,
    rows: Block | None = None,
    cols: Block | None = None,
) -> Array | None:
    left, right = band_limits(causal, window)
    if left is None and right is None:
        return None
    rows, cols = rows or (0, lq), cols or (0, lk)
    i = xp.arange(rows[0], rows[1], device=device)
    j = xp.arange(cols[0], cols[1], device=device)
    # key index minus query index, for the block's absolute positions
    rel = xp.reshape(j, (1, cols[1] - cols[0])) - xp.reshape(i, (rows[1] - rows[0], 1))
    if alignment == "lower_right":
        kv = lk if kv_lengths is None else _per_batch(to_dtype(xp, kv_lengths, i.dtype), xp)
        q = lq if q_lengths is None else _per_batch(to_dtype(xp, q_lengths, i.dtype), xp)
        rel = rel - (kv - q)
    keep = None
    if right is not None:
        keep = rel <= right
    if left is not None:
        lower = rel >= -left
        keep = lower if keep is None else keep & lower
    return keep


def causal_mask(
    lq: int,
    lk: int,
    /,
    *,
    alignment: str = "upper_left",
    xp: Namespace,
    device: Any = None,
) -> Array:
    """Causal mask of shape ``(lq, lk)``: query ``i`` may attend key ``j <= i + offset``.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import causal_mask
    >>> causal_mask(2, 3, xp=xp)
    Array([[ True, False, False],
           [ True,  True, False]], dtype=array_api_strict.bool)
    >>> causal_mask(2, 3, alignment="lower_right", xp=xp)
    Array([[ True,  True, False],
           [ True,  True,  True]], dtype=array_api_strict.bool)
    """
    lq, lk = _check_size("lq", lq), _check_size("lk", lk)
    return _band(
        lq, lk, causal=True, window=None, alignment=check_alignment(alignment),
        kv_lengths=None, q_lengths=None, xp=namespace(xp=xp), device=device,
    )


def window_mask(
    lq: int,
    lk: int,
    /,
    window: Window,
    *,
    alignment: str = "upper_left",
    xp: Namespace,
    device: Any = None,
) -> Array:
    """Sliding-window mask of shape ``(lq, lk)``: ``i + offset - left <= j <= i + offset + right``.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import window_mask
    >>> window_mask(3, 3, (1, 0), xp=xp)
    Array([[ True, False, False],
           [ True,  True, False],
           [False,  True,  True]], dtype=array_api_strict.bool)
    """
    lq, lk = _check_size("lq", lq), _check_size("lk", lk)
    xp = namespace(xp=xp)
    band = _band(
        lq, lk, causal=False, window=check_window(window), alignment=check_alignment(alignment),
        kv_lengths=None, q_lengths=None, xp=xp, device=device,
    )
    return xp.ones((lq, lk), dtype=xp.bool, device=device) if band is None else band


def _lengths_keep(
    lq: int, lk: int, kv_lengths: Array | None, q_lengths: Array | None, xp: Namespace,
    device: Any, rows: Block | None = None, cols: Block | None = None,
) -> Array | None:
    rows, cols = rows or (0, lq), cols or (0, lk)
    keep = None
    if kv_lengths is not None:
        j = xp.reshape(xp.arange(cols[0], cols[1], device=device), (1, cols[1] - cols[0]))
        keep = j < _per_batch(kv_lengths, xp)
    if q_lengths is not None:
        i = xp.reshape(xp.arange(rows[0], rows[1], device=device), (rows[1] - rows[0], 1))
        in_rows = i < _per_batch(q_lengths, xp)
        keep = in_rows if keep is None else keep & in_rows
    return keep


def slice_block(x: Array | None, rows: Block, cols: Block) -> Array | None:
    """The ``[rows, cols]`` block of an array broadcastable to ``(..., Lq, Lk)``; axes of size
    1 (broadcast) are kept whole."""
    if x is None:
        return None
    ci = slice(None) if x.shape[-1] == 1 else slice(*cols)
    if x.ndim == 1:
        return x[ci]
    ri = slice(None) if x.shape[-2] == 1 else slice(*rows)
    return x[..., ri, ci]


def block_keep(
    lq: int, lk: int, rows: Block, cols: Block, *, mask: Array | None, causal: bool,
    window: Window | None, alignment: str, kv_lengths: Array | None, q_lengths: Array | None,
    xp: Namespace, device: Any,
) -> Array | None:
    """:func:`attention_mask` restricted to one block (arguments already validated)."""
    band = _band(
        lq, lk, causal=causal, window=window, alignment=alignment, kv_lengths=kv_lengths,
        q_lengths=q_lengths, xp=xp, device=device, rows=rows, cols=cols,
    )
    lengths = _lengths_keep(lq, lk, kv_lengths, q_lengths, xp, device, rows, cols)
    return combine_masks(slice_block(mask, rows, cols), band, lengths)


def length_mask(
    lq: int,
    lk: int,
    /,
    *,
    kv_lengths: Array | int | None = None,
    q_lengths: Array | int | None = None,
    xp: Namespace | None = None,
    device: Any = None,
) -> Array:
    """Padding mask of shape ``(*batch, 1, lq, lk)`` from per-sequence lengths.

    Keys ``j >= kv_lengths[b]`` and query rows ``i >= q_lengths[b]`` are padding (ATT-LEN-1/2).

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import length_mask
    >>> length_mask(1, 3, kv_lengths=xp.asarray([1, 3]))[:, 0, 0, :]
    Array([[ True, False, False],
           [ True,  True,  True]], dtype=array_api_strict.bool)
    """
    lq, lk = _check_size("lq", lq), _check_size("lk", lk)
    xp = namespace(kv_lengths, q_lengths, xp=xp)
    if device is None:
        device = _device_of(kv_lengths, q_lengths)
    index = xp.arange(1, device=device).dtype
    kv = None if kv_lengths is None else as_lengths(kv_lengths, "kv_lengths", xp, device, index)
    q = None if q_lengths is None else as_lengths(q_lengths, "q_lengths", xp, device, index)
    keep = _lengths_keep(lq, lk, kv, q, xp, device)
    if keep is None:
        return xp.ones((1, lq, lk), dtype=xp.bool, device=device)
    return keep


def key_padding(lk: int, kv_lengths: Array, xp: Namespace, device: Any) -> Array:
    """``(*batch, 1, lk, 1)``: True for real keys. Used to zero padded K and V rows, so that
    NaN or inf stored in a KV cache's unused slots cannot reach the output (ATT-LEAK-2)."""
    j = xp.reshape(xp.arange(lk, device=device), (lk, 1))
    return j < xp.reshape(kv_lengths, (*kv_lengths.shape, 1, 1, 1))


def attention_mask(
    lq: int,
    lk: int,
    /,
    *,
    mask: Array | None = None,
    causal: bool = False,
    window: Window | None = None,
    alignment: str = "upper_left",
    kv_lengths: Array | int | None = None,
    q_lengths: Array | int | None = None,
    xp: Namespace | None = None,
    device: Any = None,
) -> Array | None:
    """Everything that decides "may attend", combined; ``None`` when nothing masks.

    This is the mask :func:`attnspec.scaled_dot_product_attention` applies (besides ``-inf``
    bias entries). ``lower_right`` uses the per-batch offset ``kv_len - q_len``.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import attention_mask
    >>> m = attention_mask(2, 4, causal=True, alignment="lower_right",
    ...                    kv_lengths=xp.asarray([3]))
    >>> m[0, 0, ...]
    Array([[ True,  True, False, False],
           [ True,  True,  True, False]], dtype=array_api_strict.bool)
    """
    lq, lk = _check_size("lq", lq), _check_size("lk", lk)
    xp = namespace(mask, kv_lengths, q_lengths, xp=xp)
    if device is None:
        device = _device_of(mask, kv_lengths, q_lengths)
    window = check_band_options(causal, window, alignment)
    index = xp.arange(1, device=device).dtype
    kv = None if kv_lengths is None else as_lengths(kv_lengths, "kv_lengths", xp, device, index)
    q = None if q_lengths is None else as_lengths(q_lengths, "q_lengths", xp, device, index)
    check_bool("mask", mask, xp, MASK_HINT)
    return block_keep(
        lq, lk, (0, lq), (0, lk), mask=mask, causal=causal, window=window,
        alignment=alignment, kv_lengths=kv, q_lengths=q, xp=xp, device=device,
    )


def combine_masks(*masks: Array | None) -> Array | None:
    """Logical AND of broadcast-compatible bool masks; ``None`` entries are ignored.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import causal_mask, combine_masks, window_mask
    >>> combine_masks(causal_mask(3, 3, xp=xp), None, window_mask(3, 3, (1, None), xp=xp))
    Array([[ True, False, False],
           [ True,  True, False],
           [False,  True,  True]], dtype=array_api_strict.bool)
    """
    out = None
    for m in masks:
        if m is None:
            continue
        out = m if out is None else out & m
    return out


def mask_to_bias(mask: Array, /, *, dtype: Any = None, xp: Namespace | None = None) -> Array:
    """Additive bias from a bool mask: 0 where True, ``-inf`` where False.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import mask_to_bias
    >>> mask_to_bias(xp.asarray([True, False]))
    Array([  0., -inf], dtype=array_api_strict.float64)
    """
    xp = namespace(mask, xp=xp)
    if mask.dtype != xp.bool:
        raise TypeError(f"mask must be a bool array; got dtype {mask.dtype}")
    if dtype is None:
        dtype = xp.asarray(0.0, device=array_api_compat.device(mask)).dtype
    zero = xp.zeros(mask.shape, dtype=dtype, device=array_api_compat.device(mask))
    return xp.where(mask, zero, -math.inf)

