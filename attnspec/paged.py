"""Paged KV caches (vLLM, FlashInfer, ``flash_attn_with_kvcache``): ``block_table`` and page
pools, canonicalised into the dense cache the rest of attnspec reads (ATT-PAGE-1).

``key`` / ``value`` are pools of pages ``(num_pages, Hkv, page_size, D)`` (heads before
tokens, as everywhere in attnspec; ``bhld_to_blhd`` converts flash-attention's
``(num_pages, page_size, Hkv, D)``), ``block_table`` ``(*batch, max_pages)`` lists each
sequence's pages in order and ``kv_lengths`` says how many of its keys are real: sequence
``b``'s key ``j`` is token ``j % page_size`` of page ``block_table[b, j // page_size]``.
Entries past a sequence's last live page (``ceil(kv_lengths[b] / page_size)``) are never
read, whatever they hold (out of range or negative included); pages may be shared (a
common prefix). The gather is one ``take``, so it traces under ``jax.jit``, stays lazy on
Dask and is differentiated by autodiff (a shared page sums the gradients of its readers).
"""

from __future__ import annotations

import math

import array_api_compat

from ._namespace import Array, Namespace, concrete, is_integer, to_dtype
from ._shapes import fmt


def check_pools(key: Array, value: Array, block_table: Array, xp: Namespace) -> None:
    """Shapes and dtypes of a paged call (never values)."""
    if not is_integer(xp, block_table.dtype):
        raise TypeError(f"block_table must have an integer dtype (page indices); got "
                        f"{block_table.dtype}")
    if block_table.ndim < 1:
        raise ValueError(f"block_table must have shape (*batch, max_pages); got "
                         f"{fmt(block_table.shape)}")
    for name, pool in (("key", key), ("value", value)):
        if pool.ndim != 4:
            raise ValueError(f"{name} must be a page pool (num_pages, Hkv, page_size, D) with "
                             f"block_table; got shape {fmt(pool.shape)}")
    if tuple(key.shape[:3]) != tuple(value.shape[:3]):
        raise ValueError(
            f"value pool {fmt(value.shape)} must match key pool {fmt(key.shape)} in pages, "
            "heads and page size (num_pages, Hkv, page_size)")


def live_pages(kv_lengths: Array, page_size: int, xp: Namespace) -> Array:
    """``ceil(kv_lengths / page_size)``: how many table entries of each sequence are read."""
    return (kv_lengths + (page_size - 1)) // page_size


def _check_live_entries(table: Array, live: Array, num_pages: int, xp: Namespace) -> None:
    """Eager arrays only: a live entry outside the pool is a ValueError naming it (under
    ``jax.jit`` or on Dask the values are the caller's contract: an out-of-range live entry
    reads a clamped page)."""
    used = xp.reshape(xp.arange(table.shape[-1], device=array_api_compat.device(table)),
                      (1,) * (table.ndim - 1) + (table.shape[-1],)) < live[..., None]
    bad = used & ((table < 0) | (table >= num_pages))
    if bool(xp.any(bad)):
        flat = xp.reshape(bad, (-1,))
        first = int(xp.argmax(xp.astype(flat, xp.int32)))
        where = tuple(int(i) for i in _unravel(first, tuple(bad.shape)))
        raise ValueError(
            f"block_table{list(where)} = {int(table[where])} is outside the pool of "
            f"{num_pages} pages, within the live part of sequence {list(where[:-1])} "
            f"(its kv_lengths reaches {int(live[where[:-1]])} pages)")


def _unravel(index: int, shape: tuple[int, ...]) -> list[int]:
    out = []
    for n in reversed(shape):
        out.append(index % n)
        index //= n
    return out[::-1]


def gather_pages(key: Array, value: Array, block_table: Array, kv_lengths: Array,
                 xp: Namespace) -> tuple[Array, Array]:
    """The dense caches ``(*batch, Hkv, pages * page_size, D)`` the table describes.

    On eager arrays only the pages up to the longest sequence's last live one are gathered,
    and live entries are checked against the pool; dead entries read page 0 and are masked
    by ``kv_lengths`` (their rows zeroed before any product: ATT-LEAK-2)."""
    num_pages, hkv, page_size, _ = key.shape
    table = to_dtype(xp, block_table, kv_lengths.dtype)
    kv = xp.broadcast_to(kv_lengths, tuple(table.shape[:-1]))
    live = live_pages(kv, page_size, xp)
    if concrete(table):
        _check_live_entries(table, live, num_pages, xp)
        longest = int(xp.max(live)) if math.prod(live.shape) else 0
        table = table[..., :min(longest, table.shape[-1])]
    *batch, pages = table.shape
    column = xp.reshape(xp.arange(pages, device=array_api_compat.device(table)),
                        (1,) * len(batch) + (pages,))
    index = xp.where(column < live[..., None], table, xp.zeros_like(table))
    flat = xp.reshape(index, (-1,))

    def gather(pool: Array) -> Array:
        d = pool.shape[-1]
        x = xp.take(pool, flat, axis=0)  # (B * pages, Hkv, page_size, D)
        x = xp.reshape(x, (*batch, pages, hkv, page_size, d))
        n = len(batch)
        x = xp.permute_dims(x, (*range(n), n + 1, n, n + 2, n + 3))
        return xp.reshape(x, (*batch, hkv, pages * page_size, d))

    return gather(key), gather(value)
