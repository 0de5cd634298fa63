"""Argument checks of the input forms kernels take today: positions and segment ids
(ATT-POS-1, ATT-SEG-1), FlexAttention mods (ATT-MOD-1) and paged caches (ATT-PAGE-1). As in
:mod:`._validate`, every failure names the argument, and nothing reads array values except
the paged cache's live entries on eager arrays (``attnspec.paged``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._namespace import Array, Namespace, is_integer
from ._shapes import broadcasts_to, fmt
from ._validate import (
    as_lengths,
    check_broadcast,
    check_real_floating,
    index_dtype,
    shape_of,
)

__all__ = ["check_mod", "check_per_token", "check_token_options", "paged_pools"]


def check_per_token(name: str, x: Array | None, length: int, batch: tuple[int, ...] | None,
                    xp: Namespace) -> None:
    """An integer input broadcastable to ``(*batch, length)`` (positions, segment ids);
    ``batch=None``: any batch shape."""
    if x is None:  # a non-array was refused with the namespace check
        return
    if not is_integer(xp, x.dtype):
        raise TypeError(f"{name} must have an integer dtype (one value per token); got "
                        f"{x.dtype}")
    shape = shape_of(name, x)
    what = "(*batch, Lq)" if name.startswith("q_") else "(*batch, Lk)"
    if batch is None:
        if not shape or shape[-1] not in (1, length):
            raise ValueError(f"{name} of shape {fmt(shape)} does not broadcast to {what} "
                             f"with {what[-3:-1]} = {length}")
        return
    check_broadcast(name, x, (*batch, length), what)


def check_token_options(a: Mapping[str, Any], lq: int, lk: int, xp: Namespace,
                        batch: tuple[int, ...] | None = None) -> None:
    """Positions and segment ids (ATT-POS-1, ATT-SEG-1): integer per-token arrays; segment
    ids in pairs; ``alignment`` is the default positions, so not both."""
    for name in ("q_positions", "q_segment_ids"):
        check_per_token(name, a[name], lq, batch, xp)
    for name in ("kv_positions", "kv_segment_ids"):
        check_per_token(name, a[name], lk, batch, xp)
    if (a["q_segment_ids"] is None) != (a["kv_segment_ids"] is None):
        given, missing = (("q_segment_ids", "kv_segment_ids") if a["kv_segment_ids"] is None
                          else ("kv_segment_ids", "q_segment_ids"))
        raise ValueError(
            f"{given} needs {missing}: a pair is attended only when both ids are equal (for "
            f"self-attention over a packed batch pass the same ids to both)"
        )
    positions = [n for n in ("q_positions", "kv_positions") if a[n] is not None]
    if positions and a["alignment"] != "upper_left":
        raise ValueError(
            f"{' and '.join(positions)} and alignment={a['alignment']!r} both place the "
            "queries: alignment only chooses default positions, so give one or the other "
            "(lower-right = q_positions shifted by kv_len - q_len)"
        )


def check_mod(name: str, mod: Any, signature: str) -> None:
    """A FlexAttention-style callable (ATT-MOD-1)."""
    if mod is not None and not callable(mod):
        raise TypeError(f"{name} must be a callable {signature}; got {type(mod).__name__}")


def paged_pools(a: Mapping[str, Any], xp: Namespace, device: Any) -> tuple[Array, Array]:
    """``key`` / ``value`` gathered from their page pools through ``block_table``
    (ATT-PAGE-1)."""
    from .paged import check_pools, gather_pages

    table, key, value = a["block_table"], a["key"], a["value"]
    check_pools(key, value, table, xp)
    for name in ("key", "value"):
        shape_of(name, a[name])
        check_real_floating(name, a[name], xp)
    if a["kv_lengths"] is None:
        raise ValueError("block_table needs kv_lengths: how many keys of each sequence are "
                         "real (its pages past them are never read)")
    kv = as_lengths(a["kv_lengths"], "kv_lengths", xp, device, index_dtype(xp, device))
    batch = tuple(shape_of("block_table", table)[:-1])
    if not broadcasts_to(shape_of("kv_lengths", kv), batch):
        raise ValueError(f"kv_lengths of shape {fmt(kv.shape)} must broadcast to the batch "
                         f"shape of block_table {fmt(table.shape)} (one length per sequence)")
    return gather_pages(key, value, table, kv, xp)
