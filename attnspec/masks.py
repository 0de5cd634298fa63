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
from typing import Any

import array_api_compat

from ._namespace import (
    Array,
    Namespace,
    check_same_device,
    is_array,
    label,
    namespace_of,
    to_dtype,
)
from ._shapes import broadcast_shapes, fmt
from ._validate import (
    MASK_HINT,
    as_lengths,
    check_alignment,
    check_band_options,
    check_bool,
    check_size,
    check_window,
    shape_of,
)
from ._validate import Window as Window  # re-exported: attention, mha, _problem import it

__all__ = [
    "attention_mask",
    "causal_mask",
    "combine_masks",
    "length_mask",
    "mask_to_bias",
    "window_mask",
]


def _lengths_arrays(kv_lengths: Any, q_lengths: Any) -> dict[str, Any]:
    """The lengths that are arrays (ints and sequences of ints are converted later)."""
    return {n: a for n, a in (("kv_lengths", kv_lengths), ("q_lengths", q_lengths))
            if is_array(a)}


def _builder_lengths(kv_lengths: Any, q_lengths: Any, xp: Namespace,
                     device: Any) -> tuple[Array | None, Array | None, tuple[int, ...]]:
    """Both lengths as index-dtype arrays, and the batch shape they broadcast to."""
    index = xp.arange(1, device=device).dtype
    kv = None if kv_lengths is None else as_lengths(kv_lengths, "kv_lengths", xp, device, index)
    q = None if q_lengths is None else as_lengths(q_lengths, "q_lengths", xp, device, index)
    shapes = {n: shape_of(n, a) for n, a in (("kv_lengths", kv), ("q_lengths", q))
              if a is not None}
    batch = broadcast_shapes(*shapes.values())
    if batch is None:
        raise ValueError(
            f"kv_lengths of shape {fmt(shapes['kv_lengths'])} and q_lengths of shape "
            f"{fmt(shapes['q_lengths'])} do not broadcast (one length per sequence)"
        )
    return kv, q, batch


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


def relative_positions(
    lq: int, lk: int, *, alignment: str, kv_lengths: Array | None, q_lengths: Array | None,
    xp: Namespace, device: Any, rows: Block | None = None, cols: Block | None = None,
) -> Array:
    """Key position minus query position, ``j - (i + offset)``, for a block: ``(rows, cols)``,
    or ``(*batch, 1, rows, cols)`` when the lower-right offset differs per batch entry. The
    one definition behind causal masks, windows (ATT-CAUSAL-1/2, ATT-WINDOW-1) and ALiBi
    distances (ATT-ALIBI-1)."""
    rows, cols = rows or (0, lq), cols or (0, lk)
    i = xp.arange(rows[0], rows[1], device=device)
    j = xp.arange(cols[0], cols[1], device=device)
    rel = xp.reshape(j, (1, cols[1] - cols[0])) - xp.reshape(i, (rows[1] - rows[0], 1))
    if alignment == "lower_right":
        kv = lk if kv_lengths is None else _per_batch(to_dtype(xp, kv_lengths, i.dtype), xp)
        q = lq if q_lengths is None else _per_batch(to_dtype(xp, q_lengths, i.dtype), xp)
        rel = rel - (kv - q)
    return rel


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
    rel = relative_positions(lq, lk, alignment=alignment, kv_lengths=kv_lengths,
                             q_lengths=q_lengths, xp=xp, device=device, rows=rows, cols=cols)
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
    lq, lk = check_size("lq", lq), check_size("lk", lk)
    return _band(
        lq, lk, causal=True, window=None, alignment=check_alignment(alignment),
        kv_lengths=None, q_lengths=None, xp=namespace_of(xp, {}), device=device,
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
    lq, lk = check_size("lq", lq), check_size("lk", lk)
    xp = namespace_of(xp, {})
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
    return _and(slice_block(mask, rows, cols), band, lengths)


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
    lq, lk = check_size("lq", lq), check_size("lk", lk)
    arrays = _lengths_arrays(kv_lengths, q_lengths)
    xp = namespace_of(xp, arrays)
    first = check_same_device(arrays)
    device = first if device is None else device
    kv, q, _ = _builder_lengths(kv_lengths, q_lengths, xp, device)
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
    lq, lk = check_size("lq", lq), check_size("lk", lk)
    arrays = {"mask": mask, **_lengths_arrays(kv_lengths, q_lengths)}
    xp = namespace_of(xp, arrays)
    first = check_same_device(arrays)
    device = first if device is None else device
    window = check_band_options(causal, window, alignment)
    kv, q, batch = _builder_lengths(kv_lengths, q_lengths, xp, device)
    check_bool("mask", mask, xp, MASK_HINT)
    if mask is not None:
        target = broadcast_shapes(shape_of("mask", mask), (*batch, 1, lq, lk))
        if target is None or target[-2:] != (lq, lk):
            raise ValueError(
                f"mask of shape {fmt(mask.shape)} does not broadcast to (..., lq, lk) = "
                f"(..., {lq}, {lk}) with the lengths' batch shape {fmt(batch)}"
            )
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
    arrays = {f"masks[{i}]": m for i, m in enumerate(masks)}
    if any(m is not None for m in masks):
        xp = namespace_of(None, arrays, func="combine_masks")
        check_same_device(arrays, func="combine_masks")
        shapes = {}
        for name, m in arrays.items():
            if m is None:
                continue
            check_bool(name, m, xp, func="combine_masks")
            shapes[name] = shape_of(name, m, func="combine_masks")
            if broadcast_shapes(*shapes.values()) is None:
                before = ", ".join(f"{n} {fmt(s)}" for n, s in shapes.items() if n != name)
                raise ValueError(
                    f"combine_masks: {name} of shape {fmt(m.shape)} does not broadcast with "
                    f"the masks before it: {before}"
                )
    return _and(*masks)


def _and(*masks: Array | None) -> Array | None:
    """:func:`combine_masks` without the checks (the arguments are already validated)."""
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
    xp = namespace_of(xp, {"mask": mask}, func="mask_to_bias", required=("mask",))
    check_bool("mask", mask, xp, func="mask_to_bias")
    device = array_api_compat.device(mask)
    if dtype is None:
        dtype = xp.asarray(0.0, device=device).dtype
    elif not _is_real_floating_dtype(xp, dtype):
        raise TypeError(
            f"mask_to_bias: dtype must be a real floating dtype of {label(xp)}; got {dtype!r}"
        )
    zero = xp.zeros(mask.shape, dtype=dtype, device=device)
    return xp.where(mask, zero, -math.inf)


def _is_real_floating_dtype(xp: Namespace, dtype: Any) -> bool:
    try:
        return bool(xp.isdtype(dtype, "real floating"))
    except (TypeError, ValueError, AttributeError):  # not a dtype of this namespace
        return False

