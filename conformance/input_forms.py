"""Builders of the input forms kernels take today (issue 13): positions (ATT-POS-1), packed
segment ids (ATT-SEG-1), their poison (ATT-SEG-2) and the paged-cache transform
(ATT-PAGE-1). ``input_kinds.py`` names them in its tables beside the features they need."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .case_inputs import Inputs

__all__ = ["PAGE_SIZE", "holes", "packed", "paged", "poison_segments", "prefill_offset",
           "scattered"]

Shape = tuple[int, ...]


def prefill_offset(batch: Shape, lq: int, lk: int, rng: np.random.Generator) -> Any:
    # Chunked prefill: each batch entry's queries are a run at its own offset into the keys.
    offsets = rng.integers(0, max(lk - lq, 0) + 1, size=batch)
    return {"q_positions": offsets[..., None] + np.arange(lq)}


def holes(batch: Shape, lq: int, lk: int, rng: np.random.Generator) -> Any:
    # A cache with evicted slots (positions with gaps, one repeated) and queries past it.
    kv = np.sort(rng.choice(2 * lk + 1, size=(*batch, lk)), axis=-1)
    kv[..., 0] = 0  # every query (at lk or later) attends at least this key under causal
    q = np.sort([rng.choice(np.arange(lk, 2 * lk + lq), size=lq, replace=False)
                 for _ in range(int(np.prod(batch)))], axis=-1).reshape((*batch, lq))
    return {"q_positions": q, "kv_positions": kv}


def _split(length: int, parts: int, rng: np.random.Generator, padding: int) -> Any:
    """Contiguous ids 0..parts-1 over ``length - padding`` tokens (sizes random, each >= 1
    where the length allows), then ``padding`` tokens of id -1."""
    real = length - padding
    cuts = np.sort(rng.choice(np.arange(1, real), size=min(parts - 1, max(real - 1, 0)),
                              replace=False)) if real > 1 else np.array([], dtype=int)
    ids = np.searchsorted(cuts, np.arange(real), side="right")
    return np.concatenate([ids, np.full(padding, -1)])


def packed(batch: Shape, lq: int, lk: int, rng: np.random.Generator) -> Any:
    # flash_attn_varlen: three documents per row, two padding tokens; self-attention packing
    # (the same ids on both sides) when Lq == Lk, else each document's new queries against
    # its keys (decode / chunked prefill of several sequences at once).
    q, kv = [], []
    for _ in range(int(np.prod(batch))):
        kv_ids = _split(lk, 3, rng, padding=max(0, min(2, lk - 3)))
        kv.append(kv_ids)
        q.append(kv_ids if lq == lk else _split(lq, 3, rng, padding=max(0, min(1, lq - 3))))
    return {"q_segment_ids": np.reshape(q, (*batch, lq)),
            "kv_segment_ids": np.reshape(kv, (*batch, lk))}


def scattered(batch: Shape, lq: int, lk: int, rng: np.random.Generator) -> Any:
    # Ids that are not contiguous, padding anywhere: attnspec's definition, not cu_seqlens'.
    return {"q_segment_ids": rng.integers(-1, 3, size=(*batch, lq)),
            "kv_segment_ids": rng.integers(-1, 3, size=(*batch, lk))}


def poison_segments(inputs: Inputs, rng: np.random.Generator) -> None:
    # Padding tokens' K and V hold NaN and inf, and so do the keys (not values: a dense
    # kernel's 0 * inf there is allowed) of a segment whose queries are padding: none of it
    # may reach another segment's rows (ATT-SEG-2).
    q_ids, kv_ids = inputs["q_segment_ids"].copy(), inputs["kv_segment_ids"]
    q_ids[q_ids == 1] = -1
    inputs["q_segment_ids"] = q_ids
    padding = (kv_ids < 0)[..., None, :, None]  # (*batch, 1, Lk, 1)
    unread = padding | (kv_ids == 1)[..., None, :, None]
    for name, where, fill in (("key", unread, math.nan), ("value", padding, math.inf)):
        x = inputs[name]
        inputs[name] = np.where(np.broadcast_to(where, (*x.shape[:-1], 1)), fill, x)


#: Page size of the paged-cache transform: 4 does not divide the catalog's Lk = 9, so the
#: last live page is partly filled (its tail is garbage that must not be read).
PAGE_SIZE = 4


def paged(inputs: Inputs, shift: float | None, rng: np.random.Generator) -> None:
    # The dense cache as a paged one (ATT-PAGE-1): each sequence's live pages at shuffled
    # places in a pool, sequence 1 sharing sequence 0's first page where both hold the same
    # tokens (the transform makes them so in the originals), NaN/inf in every unused page
    # and in the tail of partly filled ones, garbage (out of range, negative) in dead
    # block-table entries.
    base = inputs.originals
    k, v, lengths = base["key"], base["value"], base["kv_lengths"]
    batch = k.shape[:-3]
    flat = int(np.prod(batch))
    kf = k.reshape(flat, *k.shape[-3:]).copy()
    vf = v.reshape(flat, *v.shape[-3:]).copy()
    lf = np.broadcast_to(lengths, batch).reshape(flat)
    hkv, lk = k.shape[-3], k.shape[-2]
    pages = -(-lk // PAGE_SIZE)
    share = flat > 1 and min(lf[0], lf[1]) >= PAGE_SIZE
    if share:  # the shared prefix: sequence 1's first page is sequence 0's
        kf[1, :, :PAGE_SIZE], vf[1, :, :PAGE_SIZE] = kf[0, :, :PAGE_SIZE], vf[0, :, :PAGE_SIZE]
        base["key"], base["value"] = kf.reshape(k.shape), vf.reshape(v.shape)
    num = flat * pages + 2
    pool_k = np.full((num, hkv, PAGE_SIZE, k.shape[-1]), math.nan)
    pool_v = np.full((num, hkv, PAGE_SIZE, v.shape[-1]), math.inf)
    slots = iter(rng.permutation(num))
    table = rng.choice([num, num + 7, -1, -5], size=(flat, pages))
    for b in range(flat):
        for p in range(-(-int(lf[b]) // PAGE_SIZE)):
            if share and b == 1 and p == 0:
                table[b, p] = table[0, 0]
                continue
            table[b, p] = next(slots)
            n = min(PAGE_SIZE, int(lf[b]) - p * PAGE_SIZE)  # real tokens only
            pool_k[table[b, p], :, :n] = kf[b, :, p * PAGE_SIZE:p * PAGE_SIZE + n]
            pool_v[table[b, p], :, :n] = vf[b, :, p * PAGE_SIZE:p * PAGE_SIZE + n]
    inputs["key"], inputs["value"] = pool_k, pool_v
    inputs["block_table"] = table.reshape(*batch, pages)
