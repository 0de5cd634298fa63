"""Where masks are built: causal (both alignments), sliding windows, lengths, combinations.

Every mask is boolean with True = "may attend" (spec rule ATT-MASK-1). Masks are built from
index arithmetic on ``arange`` only, never from array data in Python, so they trace under
``jax.jit`` and stay lazy on Dask.

The diagonal: query row ``i`` is aligned with key ``i + offset`` where ``offset`` is 0 for
``alignment="upper_left"`` and ``kv_len - q_len`` for ``"lower_right"`` (ATT-CAUSAL-1/2).
``causal`` keeps ``j <= i + offset``; ``window=(left, right)`` keeps
``i + offset - left <= j <= i + offset + right`` (ATT-WINDOW-1). Positions and segment ids
(packed sequences) replace the indices (ATT-POS-1, ATT-SEG-1); the per-block arithmetic
shared with the attention paths is in :mod:`._blocks`.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from ._blocks import and_masks, band, block_keep, lengths_keep
from ._namespace import (
    Array,
    Namespace,
    check_same_device,
    is_array,
    label,
    namespace_of,
)
from ._shapes import broadcast_shapes, fmt
from ._validate import (
    MASK_HINT,
    as_flag,
    as_lengths,
    check_alignment,
    check_band_options,
    check_bool,
    check_size,
    check_window,
    clip_window,
    index_dtype,
    shape_of,
)
from ._validate import Window as Window  # re-exported: attention, mha import it
from ._validate_forms import check_token_options
from .segments import resolve_tokens

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
    return band(
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
    clipped = clip_window(check_window(window), index_dtype(xp, device), xp)
    in_band = band(
        lq, lk, causal=False, window=clipped, alignment=check_alignment(alignment),
        kv_lengths=None, q_lengths=None, xp=xp, device=device,
    )
    return xp.ones((lq, lk), dtype=xp.bool, device=device) if in_band is None else in_band


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
    keep = lengths_keep(lq, lk, kv, q, xp, device)
    if keep is None:
        return xp.ones((1, lq, lk), dtype=xp.bool, device=device)
    return keep


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
    q_positions: Array | None = None,
    kv_positions: Array | None = None,
    q_segment_ids: Array | None = None,
    kv_segment_ids: Array | None = None,
    xp: Namespace | None = None,
    device: Any = None,
) -> Array | None:
    """Everything that decides "may attend", combined; ``None`` when nothing masks.

    This is the mask :func:`attnspec.scaled_dot_product_attention` applies (besides ``-inf``
    bias entries), with the same arguments. ``lower_right`` uses the per-batch offset
    ``kv_len - q_len``, or with segment ids each segment's own.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import attention_mask
    >>> m = attention_mask(2, 4, causal=True, alignment="lower_right",
    ...                    kv_lengths=xp.asarray([3]))
    >>> m[0, 0, ...]
    Array([[ True,  True, False, False],
           [ True,  True,  True, False]], dtype=array_api_strict.bool)
    >>> ids = xp.asarray([0, 0, 1, -1])  # two packed sequences and a padding token
    >>> attention_mask(4, 4, causal=True, q_segment_ids=ids, kv_segment_ids=ids)[0, ...]
    Array([[ True, False, False, False],
           [ True,  True, False, False],
           [False, False,  True, False],
           [False, False, False, False]], dtype=array_api_strict.bool)
    """
    lq, lk = check_size("lq", lq), check_size("lk", lk)
    per_token = {"q_positions": q_positions, "kv_positions": kv_positions,
                 "q_segment_ids": q_segment_ids, "kv_segment_ids": kv_segment_ids}
    arrays = {"mask": mask, **_lengths_arrays(kv_lengths, q_lengths), **per_token}
    xp = namespace_of(xp, arrays)
    first = check_same_device(arrays)
    device = first if device is None else device
    causal = as_flag("causal", causal)
    window = clip_window(check_band_options(causal, window, alignment),
                         index_dtype(xp, device), xp)
    kv, q, batch = _builder_lengths(kv_lengths, q_lengths, xp, device)
    check_bool("mask", mask, xp, MASK_HINT)
    if mask is not None:
        target = broadcast_shapes(shape_of("mask", mask), (*batch, 1, lq, lk))
        if target is None or target[-2:] != (lq, lk):
            raise ValueError(
                f"mask of shape {fmt(mask.shape)} does not broadcast to (..., lq, lk) = "
                f"(..., {lq}, {lk}) with the lengths' batch shape {fmt(batch)}"
            )
    check_token_options({**per_token, "alignment": alignment}, lq, lk, xp)
    tokens = resolve_tokens(per_token, lq, lk, alignment, xp, device,
                            positions_needed=causal or window is not None)
    return block_keep(
        lq, lk, (0, lq), (0, lk), mask=mask, causal=causal, window=window,
        alignment=alignment, kv_lengths=kv, q_lengths=q, xp=xp, device=device, tokens=tokens,
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
    return and_masks(*masks)


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

