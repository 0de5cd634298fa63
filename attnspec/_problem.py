"""One attention call, validated and converted: what both paths (direct, chunked) share.

The options are read from the validated call (:class:`~._call.AttentionCall`,
``Problem.call``); ``Problem`` adds only what conversion computed (arrays in the
accumulation dtype, the scale still to apply).

``block_scores`` is the single definition of the masked scores of a (query rows x key
columns) block: the direct path asks for one block covering everything, the chunked path
for many. Every mask, bias and softcap rule of the spec is applied here and nowhere else.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import array_api_compat

from ._blocks import (
    Block,
    Tokens,
    and_masks,
    band,
    band_cut,
    band_limits,
    block_keep,
    relative_positions,
    slice_block,
)
from ._call import AttentionCall
from ._mods import apply_score_mod, mask_mod_keep, mod_indices
from ._namespace import Array, Namespace, to_dtype
from ._validate import AttentionShape


class Problem(NamedTuple):
    # A NamedTuple, not a frozen dataclass: it is built once per call, and a frozen
    # dataclass's __init__ costs microseconds, which at small shapes is visible.
    call: AttentionCall  # every option and return flag, as validated
    xp: Namespace
    shape: AttentionShape
    dtype: Any  # the input dtype (outputs are returned in it)
    acc: Any  # the accumulation dtype
    q: Array  # in acc; already multiplied by the score scale when ``scale`` is None
    # k, v in acc; rows past kv_lengths zeroed unless they are all finite (ATT-LEAK-2), and
    # on host arrays cut after the longest length: fewer rows than shape.lk, read by column
    # ranges inside them only (_cache.real_cache)
    k: Array
    v: Array
    scale: Any  # the score scale still to apply to q.k, or None (folded into q)
    bias: Array | None  # in acc
    sinks: Array | None  # in acc, shaped (*batch, Hq, 1, 1): one logit per row of a head
    alibi: Array | None  # ALiBi slopes in acc, shaped (*batch, Hq, 1, 1)
    tokens: Tokens | None  # positions and segment ids, or None (ATT-POS-1, ATT-SEG-1)
    dropout_scale: float
    device: Any
    #: ``key`` transposed to ``(*batch, Hkv, Dk, Lk)`` in its own row-major copy, or None.
    #: The chunked path makes it once so that each block's ``q @ k^T`` reads a plain matrix;
    #: torch otherwise copies a non-contiguous key inside every block's matmul ((2,8,1024)
    #: with q, k, v permuted from (B, L, H, D): 63 ms without this copy, 34 ms with it).
    #: On NumPy the copy is neutral to 15% faster (N = 4096) but 7-25% slower for causal
    #: N = 512-1024 (measured session 6); one rule for every namespace was kept.
    kt: Array | None = None
    #: The diagonal offset when the chunked path knows it from shapes (eager arrays): the
    #: band's mask is then written only into the columns it cuts (:func:`band_cut`), not
    #: evaluated over every block. None: the band is part of the block's whole keep-mask.
    offset: int | None = None
    #: The band's keep-masks of the cut columns made so far in this call, by (rows, first
    #: column - first row, columns): the same for every diagonal block, so built once
    #: (building one took 15 of the 66 us a diagonal block's mask costs on torch). Set with
    #: ``offset``; None: not kept.
    bands: dict[tuple[int, int, int], Array] | None = None


def in_place(x: Array) -> bool:
    """Whether ``x`` may be changed in place: augmented assignment mutates numpy/cupy/torch
    arrays; for a torch tensor that autograd tracks it would destroy a value the backward
    pass needs."""
    return array_api_compat.is_writeable_array(x) and not getattr(x, "requires_grad", False)


def block_scores(p: Problem, rows: Block, cols: Block) -> Array:
    """Masked scores of a block, ``(*batch, Hq, rows, cols)``: ``-inf`` where masked."""
    xp, shape = p.xp, p.shape
    q = p.q if rows == (0, shape.lq) else p.q[..., rows[0]:rows[1], :]
    if p.kt is not None:
        kt = p.kt if cols == (0, shape.lk) else p.kt[..., cols[0]:cols[1]]
    else:
        k = p.k if cols == (0, shape.lk) else p.k[..., cols[0]:cols[1], :]
        # The standard's ``mT`` attribute: 0.1 us against 1 us for array_api_compat's
        # function on NumPy (a decode call is mostly such costs). Dask arrays lack it.
        kt = k.mT if hasattr(k, "mT") else xp.matrix_transpose(k)
    s = matmul_grouped(q, kt, shape.hq, shape.hkv, xp)
    if p.scale is not None:
        s = s * p.scale
    call = p.call
    if call.softcap is not None:
        s = call.softcap * xp.tanh(s / call.softcap)
    # FlexAttention's index arguments, built once for both mods of the block (ATT-MOD-1)
    indices = (mod_indices(shape, rows, cols, xp, p.device)
               if call.score_mod is not None or call.mask_mod is not None else None)
    if call.score_mod is not None and indices is not None:  # after softcap, before the bias
        s = apply_score_mod(call.score_mod, s, indices, xp)
    bias = slice_block(p.bias, rows, cols)
    if bias is not None:
        # A -inf bias entry masks its position even where q.k is NaN or +inf (ATT-BIAS-1).
        s = xp.where(bias == -math.inf, -math.inf, s + bias)
    if p.alibi is not None:  # after the bias (ATT-ALIBI-1): -slope * |q_pos - kv_pos|
        rel = relative_positions(shape.lq, shape.lk, alignment=call.alignment,
                                 kv_lengths=call.kv_lengths, q_lengths=call.q_lengths, xp=xp,
                                 device=p.device, rows=rows, cols=cols, tokens=p.tokens)
        s = s - p.alibi * xp.abs(to_dtype(xp, rel, p.acc))
    # Not after a score_mod: its result may be a read-only view, not this block's scratch.
    banded = call.causal or call.window is not None
    offset = p.offset if banded and call.score_mod is None and in_place(s) else None
    cut = offset is not None
    keep = block_keep(
        shape.lq, shape.lk, rows, cols, mask=call.mask, causal=call.causal and not cut,
        window=None if cut else call.window, alignment=call.alignment,
        kv_lengths=call.kv_lengths, q_lengths=call.q_lengths, xp=xp, device=p.device,
        tokens=p.tokens,
    )
    if call.mask_mod is not None and indices is not None:
        keep = and_masks(keep, mask_mod_keep(call.mask_mod, shape, rows, cols, indices, xp))
    s = s if keep is None else xp.where(keep, s, -math.inf)
    if offset is not None:
        # Only the columns the band cuts get its mask (a causal block of 64 rows over 2048
        # keys: 64 of them), written in place; the other columns are inside for every row.
        limits = band_limits(call.causal, call.window)
        for start, stop in band_cut(rows, cols, offset, limits):
            part = (..., slice(start - cols[0], stop - cols[0]))
            key = (rows[1] - rows[0], start - rows[0], stop - start)
            in_band = None if p.bands is None else p.bands.get(key)
            if in_band is None:
                in_band = band(shape.lq, shape.lk, causal=call.causal, window=call.window,
                               alignment=call.alignment, kv_lengths=None, q_lengths=None,
                               xp=xp, device=p.device, rows=rows, cols=(start, stop))
                if p.bands is not None:
                    p.bands[key] = in_band
            s[part] = xp.where(in_band, s[part], -math.inf)
    return s


def dropped(p: Problem, weights: Array, rows: Block, cols: Block) -> Array:
    """Apply the caller's dropout keep-mask (and its 1/(1-p) scale) to a block."""
    if p.call.dropout_mask is None:
        return weights
    weights = p.xp.where(slice_block(p.call.dropout_mask, rows, cols), weights, 0.0)
    return weights if p.dropout_scale == 1.0 else weights * p.dropout_scale


def weighted_values(p: Problem, weights: Array, cols: Block) -> Array:
    """``weights @ v[cols]`` with grouped-query heads."""
    v = p.v if cols == (0, p.shape.lk) else p.v[..., cols[0]:cols[1], :]
    return matmul_grouped(weights, v, p.shape.hq, p.shape.hkv, p.xp)


def output(p: Problem, x: Array) -> Array:
    return to_dtype(p.xp, x, p.dtype)


def matmul_grouped(a: Array, b: Array, hq: int, hkv: int, xp: Namespace) -> Array:
    """``a @ b`` where ``a`` has ``Hq`` heads and ``b`` has ``Hkv``: the ``G = Hq // Hkv``
    query heads that share a KV head are stacked along the row axis, so one matmul per KV
    head serves the group and K/V are never copied per group (ATT-GQA-1)."""
    # The ``@`` operator, not ``xp.matmul``: array_api_compat's torch matmul re-derives the
    # promoted dtype on every call (4 conversions, ~20 us at decode sizes); the operands
    # already share the accumulation dtype.
    if hq == hkv:
        return a @ b
    *batch, _, rows, inner = a.shape
    group = hq // hkv
    # Each reshape only splits or only merges axes: Dask cannot do both in one step.
    a = xp.reshape(a, (*batch, hkv, group, rows, inner))
    a = xp.reshape(a, (*batch, hkv, group * rows, inner))
    out = a @ b
    *batch, _, _, cols = out.shape
    out = xp.reshape(out, (*batch, hkv, group, rows, cols))
    return xp.reshape(out, (*batch, hq, rows, cols))


def default_scale(dk: int) -> float:
    return 1.0 / math.sqrt(dk) if dk else 1.0


def transposed_copy(k: Array, xp: Namespace) -> Array:
    """``matrix_transpose(k)`` laid out row-major: reshaping a transposed view through one
    flat axis cannot be a view, so every library copies it in the new order."""
    *batch, length, dim = k.shape
    flat = xp.reshape(xp.matrix_transpose(k), (*batch, dim * length))
    return xp.reshape(flat, (*batch, dim, length))
