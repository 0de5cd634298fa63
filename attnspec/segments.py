"""Packed sequences (varlen): segment ids, ``cu_seqlens``, and where each token sits in its
segment.

``flash_attn_varlen_func`` describes a packed batch by ``cu_seqlens`` (segment ``s`` is
tokens ``cu[s]:cu[s+1]``); attnspec by one segment id per token, which also covers what
``cu_seqlens`` cannot: padding (a negative id) and ids that are not contiguous. A pair
(query, key) is attended only within one segment, and causal, window, alignment and ALiBi
apply per segment with positions that restart at 0 in each (ATT-SEG-1): the ``k``-th token
of a segment is at position ``k``, shifted for ``alignment="lower_right"`` by that segment's
key count minus its query count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import array_api_compat

from ._blocks import Tokens
from ._namespace import Array, Namespace, is_integer, namespace_of, to_dtype
from ._shapes import fmt
from ._validate import check_size, index_dtype

__all__ = ["cu_seqlens_from_segment_ids", "segment_ids_from_cu_seqlens"]

#: Elements of one block of id comparisons while counting ranks (bounds the working memory
#: at a few MiB whatever the sequence length; the count is O(L^2) integer compares, small
#: beside attention's O(L^2 * D) multiply-adds).
_COMPARE_BLOCK = 2**22


def _same_id_counts(ids: Array, others: Array, xp: Namespace, device: Any,
                    before: bool) -> Array:
    """For each token of ``ids`` ``(*batch, L)``: how many of ``others`` ``(*batch, M)`` hold
    its id (only those at a lower index when ``before``); ``(*batch, L)``."""
    length, m = ids.shape[-1], others.shape[-1]
    index = index_dtype(xp, device)
    step = max(1, _COMPARE_BLOCK // max(m, 1))
    pieces = []
    for start in range(0, length, step):
        stop = min(start + step, length)
        same = ids[..., start:stop, None] == others[..., None, :]
        if before:
            i = xp.reshape(xp.arange(start, stop, device=device), (stop - start, 1))
            same = same & (xp.reshape(xp.arange(m, device=device), (1, m)) < i)
        pieces.append(xp.sum(xp.astype(same, index), axis=-1))
    if not pieces:
        return xp.zeros(ids.shape, dtype=index, device=device)
    return pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=-1)


def segment_positions(q_ids: Array, kv_ids: Array, alignment: str, xp: Namespace,
                      device: Any) -> tuple[Array, Array]:
    """Positions within each token's segment, ``(*batch, Lq)`` and ``(*batch, Lk)``: the
    number of earlier tokens with the same id, queries shifted by (key count - query count)
    of their segment for ``lower_right``."""
    q_pos = _same_id_counts(q_ids, q_ids, xp, device, before=True)
    kv_pos = _same_id_counts(kv_ids, kv_ids, xp, device, before=True)
    if alignment == "lower_right":
        keys = _same_id_counts(q_ids, kv_ids, xp, device, before=False)
        queries = _same_id_counts(q_ids, q_ids, xp, device, before=False)
        q_pos = q_pos + (keys - queries)
    return q_pos, kv_pos


def resolve_tokens(per_token: Mapping[str, Any], lq: int, lk: int, alignment: str,
                   xp: Namespace, device: Any, positions_needed: bool) -> Tokens | None:
    """The validated per-token options as :class:`Tokens` for the block arithmetic; ``None``
    when none is given. ``positions_needed``: causal, a window or ALiBi reads positions
    (segment positions are only counted then)."""
    given = {n: v for n, v in per_token.items() if v is not None}
    if not given:
        return None
    index = index_dtype(xp, device)

    def full(name: str, length: int) -> Array | None:
        x = given.get(name)
        if x is None:
            return None
        x = to_dtype(xp, x, index)
        return xp.broadcast_to(x, (*x.shape[:-1], length))

    q_pos, kv_pos = full("q_positions", lq), full("kv_positions", lk)
    q_seg, kv_seg = full("q_segment_ids", lq), full("kv_segment_ids", lk)
    if (q_seg is not None and kv_seg is not None and q_pos is None and kv_pos is None
            and positions_needed):
        q_pos, kv_pos = segment_positions(q_seg, kv_seg, alignment, xp, device)

    def rows(x: Array | None) -> Array | None:  # (*batch, L) -> (*batch, 1, L, 1)
        return None if x is None else xp.reshape(x, (*x.shape[:-1], 1, x.shape[-1], 1))

    def cols(x: Array | None) -> Array | None:  # (*batch, L) -> (*batch, 1, 1, L)
        return None if x is None else xp.reshape(x, (*x.shape[:-1], 1, 1, x.shape[-1]))

    return Tokens(rows(q_pos), cols(kv_pos), rows(q_seg), cols(kv_seg))


def _check_ids(name: str, x: Any, xp: Namespace, func: str) -> None:
    """An integer 1-D array (a non-array was refused with the namespace check)."""
    if not is_integer(xp, x.dtype):
        raise TypeError(f"{func}: {name} must have an integer dtype; got {x.dtype}")
    if x.ndim != 1:
        raise ValueError(f"{func}: {name} must be 1-D; got shape {fmt(x.shape)}")


def segment_ids_from_cu_seqlens(cu_seqlens: Array, /, total: int, *,
                                xp: Namespace | None = None) -> Array:
    """Segment ids ``(total,)`` of a packed batch from flash-attention's ``cu_seqlens``.

    Token ``t`` is in segment ``s`` when ``cu_seqlens[s] <= t < cu_seqlens[s + 1]``; tokens
    before ``cu_seqlens[0]`` or from ``cu_seqlens[-1]`` on are padding (id ``-1``).

    Parameters
    ----------
    cu_seqlens : integer array, shape ``(num_segments + 1,)``
        Non-decreasing offsets, usually starting at 0 (the caller's contract: values are
        not inspected).
    total : int
        Tokens in the packed layout (its static length, padding included).

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import segment_ids_from_cu_seqlens
    >>> segment_ids_from_cu_seqlens(xp.asarray([0, 3, 5]), 6)
    Array([ 0,  0,  0,  1,  1, -1], dtype=array_api_strict.int64)
    """
    func = "segment_ids_from_cu_seqlens"
    xp = namespace_of(xp, {"cu_seqlens": cu_seqlens}, func=func, required=("cu_seqlens",))
    _check_ids("cu_seqlens", cu_seqlens, xp, func)
    if cu_seqlens.shape[0] < 1:
        raise ValueError(f"{func}: cu_seqlens needs at least one offset (num_segments + 1); "
                         "got shape (0,)")
    total = check_size("total", total)
    device = array_api_compat.device(cu_seqlens)
    index = index_dtype(xp, device)
    cu = to_dtype(xp, cu_seqlens, index)
    t = xp.reshape(xp.arange(total, device=device), (total, 1))
    passed = xp.sum(xp.astype(t >= xp.reshape(cu[1:], (1, -1)), index), axis=-1)
    t = t[:, 0]
    padding = (t < cu[0]) | (t >= cu[-1])
    return xp.where(padding, xp.asarray(-1, dtype=index, device=device), passed)


def cu_seqlens_from_segment_ids(segment_ids: Array, /, num_segments: int, *,
                                xp: Namespace | None = None) -> Array:
    """flash-attention's ``cu_seqlens`` ``(num_segments + 1,)`` from segment ids ``(total,)``.

    ``cu_seqlens[s + 1] - cu_seqlens[s]`` is the number of tokens with id ``s``; the result
    describes the layout when segments ``0 .. num_segments - 1`` are contiguous and in
    order, padding (negative ids) last. ``num_segments`` is static, so the call traces under
    ``jax.jit``.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import cu_seqlens_from_segment_ids
    >>> cu_seqlens_from_segment_ids(xp.asarray([0, 0, 0, 1, 1, -1]), 2)
    Array([0, 3, 5], dtype=array_api_strict.int64)
    """
    func = "cu_seqlens_from_segment_ids"
    xp = namespace_of(xp, {"segment_ids": segment_ids}, func=func, required=("segment_ids",))
    _check_ids("segment_ids", segment_ids, xp, func)
    num_segments = check_size("num_segments", num_segments)
    device = array_api_compat.device(segment_ids)
    index = index_dtype(xp, device)
    ids = to_dtype(xp, segment_ids, index)
    which = xp.reshape(xp.arange(num_segments, device=device), (num_segments, 1))
    counts = xp.sum(xp.astype(xp.reshape(ids, (1, -1)) == which, index), axis=-1)
    return xp.cumulative_sum(counts, include_initial=True)
