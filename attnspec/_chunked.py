"""The chunked path: query x key blocks with a running max and sum (online softmax), so the
working memory is one block of scores instead of the whole ``Lq x Lk`` matrix.

Blocks that lie entirely outside the causal/window band are skipped by shape arithmetic;
the loops run over static shapes only, so the path traces under ``jax.jit`` and stays lazy
on Dask. On eager arrays it also skips the blocks that the per-token inputs empty (a packed
batch's blocks across two segments, positions outside the band) and the keys and rows past
every batch entry's ``kv_lengths``/``q_lengths``, which it reads from the data once per
call: the work of a packed or padded batch follows its real tokens. Numerically it
differs from the direct path only by rounding (the running sum is rescaled once per key
block).
"""

from __future__ import annotations

import math

import array_api_compat

from . import _parallel
from ._blocks import (
    Block,
    Tokens,
    band_columns,
    band_limits,
    band_offsets,
    block_outside_band,
    length_bounds,
    static_offset,
)
from ._mods import mask_mod_keep, mod_indices
from ._namespace import Array, Namespace
from ._namespace import readable as read_ok
from ._normalizer import Normalizer, log_normalizer, max_along, safe_sum, shift_of
from ._problem import (
    Problem,
    block_scores,
    dropped,
    in_place,
    output,
    transposed_copy,
    weighted_values,
)


def _blocks(length: int, size: int) -> list[Block]:
    return [(start, min(start + size, length)) for start in range(0, length, size)]


def chunked(p: Problem, block_q: int, block_k: int) -> list[Array]:
    """``[out]`` plus ``lse`` and/or ``weights`` as the call asks, block by block."""
    xp, shape, call = p.xp, p.shape, p.call
    return_lse, return_weights = call.return_lse, call.return_weights
    per_batch = call.kv_lengths is not None or call.q_lengths is not None
    offset = static_offset(shape.lq, shape.lk, call.alignment, per_batch, p.tokens)
    limits = band_limits(call.causal, call.window)
    col_blocks = _blocks(shape.lk, block_k)
    row_blocks = _blocks(shape.lq, block_q)
    eager = not array_api_compat.is_lazy_array(p.k)
    # Values may be read to skip work: not under a tracer, nor of a vmapped input.
    readable = read_ok(p.k, p.q, call.kv_lengths, call.q_lengths, *(p.tokens or ()))
    if len(row_blocks) > 1 and eager:
        p = p._replace(kt=transposed_copy(p.k, xp))
    # The diagonal's offsets over the batch entries, for skipping and cutting blocks: fixed
    # by the shapes, or (lower_right with kv_lengths/q_lengths: a padded causal batch, a
    # paged prefill) read from the lengths; the band's mask itself is then built per entry.
    offsets = band_offsets(shape.lq, shape.lk, limits, alignment=call.alignment,
                           kv_lengths=call.kv_lengths, q_lengths=call.q_lengths,
                           tokens=p.tokens, xp=xp, readable=readable)
    if readable:
        # The band's mask written into the cut columns in place. Not under torch.compile:
        # there the slice assignment becomes a copy of the whole block, while the mask of
        # the whole block fuses into the exponential's pass (causal (1,8,1024) compiled:
        # 14.0-17.2 ms with the slice assignment, 12.4-12.6 ms without; docs/performance.md).
        p = p._replace(offset=offset, bands={})
    empty = (_token_empty(p.tokens, row_blocks, col_blocks, limits, xp)
             if readable and p.tokens is not None else set())
    if readable and call.mask_mod is not None and len(row_blocks) * len(col_blocks) > 1:
        empty |= _mask_mod_empty(p, row_blocks, col_blocks, empty)
    # Keys past every batch entry's kv_lengths and rows past every q_lengths are padding for
    # all of them (ATT-LEN-1/2): on eager arrays they are never computed, so a padded batch
    # costs its longest sequence, not the padded length.
    kv_stop = length_bounds(call.kv_lengths, shape.lk, xp)[1] if readable else shape.lk
    q_stop = length_bounds(call.q_lengths, shape.lq, xp)[1] if readable else shape.lq
    lives = []
    for r, rows in enumerate(row_blocks):
        live = [c for k, c in enumerate(col_blocks)
                if not block_outside_band(rows, c, offsets, limits) and (r, k) not in empty]
        if offsets is not None:
            live = [c for c in (band_columns(rows, c, offsets, limits) for c in live)
                    if c[0] < c[1]]
        live = [] if rows[0] >= q_stop else [(a, min(b, kv_stop)) for a, b in live
                                              if a < kv_stop]
        lives.append(live)

    def row_block(r: int) -> tuple[Array, Array | None, Array | None]:
        rows, live = row_blocks[r], lives[r]
        out, n = _online(p, rows, live)
        lse = xp.squeeze(log_normalizer(n, xp), axis=-1) if return_lse else None
        weights = _weights_row(p, rows, live, n) if return_weights else None
        return out, lse, weights

    # User callbacks (score_mod, mask_mod) stay on the caller's thread.
    parallel = (eager and call.score_mod is None and call.mask_mod is None
                and _parallel.eligible(p.q, xp))
    costs = [sum(c[1] - c[0] for c in live) * (rows[1] - rows[0])
             for rows, live in zip(row_blocks, lives, strict=True)]
    done = _parallel.run_blocks(row_block, range(len(row_blocks)), costs, parallel)
    outs = [d[0] for d in done]
    lses = [d[1] for d in done]
    weight_rows = [d[2] for d in done]
    results = [output(p, xp.concat(outs, axis=-2))]
    if return_lse:
        results.append(xp.concat(lses, axis=-1))
    if return_weights:
        results.append(output(p, xp.concat(weight_rows, axis=-2)))
    return results


def _ranges(x: Array | None, blocks: list[Block], axis: int, xp: Namespace,
            ids: bool) -> list[tuple[float, float]]:
    """``(min, max)`` of per-token values over each block along ``axis`` (all batch entries),
    as Python numbers; ``x=None`` stands for the indices. For segment ids (``ids``) over
    the non-negative ones only, an all-padding block giving ``(inf, -inf)``."""
    if x is None:
        return [(start, stop - 1) for start, stop in blocks]
    above = xp.max(x) + 1 if ids else None
    out: list[tuple[float, float]] = []
    for start, stop in blocks:
        part = x[..., start:stop, :] if axis == -2 else x[..., start:stop]
        high = float(xp.max(part))
        if ids and high < 0:
            out.append((math.inf, -math.inf))
        elif ids:
            out.append((float(xp.min(xp.where(part < 0, above, part))), high))
        else:
            out.append((float(xp.min(part)), high))
    return out


def _token_empty(tokens: Tokens, row_blocks: list[Block], col_blocks: list[Block],
                 limits: tuple[int | None, int | None], xp: Namespace) -> set[tuple[int, int]]:
    """``(row block, column block)`` pairs that positions or segments leave empty: no shared
    segment id (ATT-SEG-1), or every position pair outside the band (ATT-POS-1). Sound for
    any data: a block is only called empty when no pair in it can be attended."""
    segmented = tokens.q_seg is not None and tokens.kv_seg is not None
    q_seg = _ranges(tokens.q_seg, row_blocks, -2, xp, ids=True) if segmented else None
    kv_seg = _ranges(tokens.kv_seg, col_blocks, -1, xp, ids=True) if segmented else None
    left, right = limits
    banded = tokens.positioned and (left is not None or right is not None)
    q_pos = _ranges(tokens.q_pos, row_blocks, -2, xp, ids=False) if banded else None
    kv_pos = _ranges(tokens.kv_pos, col_blocks, -1, xp, ids=False) if banded else None
    empty = set()
    for r in range(len(row_blocks)):
        for c in range(len(col_blocks)):
            if q_seg is not None and kv_seg is not None:
                (q_low, q_high), (k_low, k_high) = q_seg[r], kv_seg[c]
                if q_high < k_low or k_high < q_low:
                    empty.add((r, c))
                    continue
            if q_pos is not None and kv_pos is not None:
                (q_low, q_high), (k_low, k_high) = q_pos[r], kv_pos[c]
                if ((right is not None and k_low - q_high > right)
                        or (left is not None and k_high - q_low < -left)):
                    empty.add((r, c))
    return empty


def _mask_mod_empty(p: Problem, row_blocks: list[Block], col_blocks: list[Block],
                    known: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Blocks where ``mask_mod`` keeps nothing (eager arrays; FlexAttention's block mask):
    evaluated once here, and again for the blocks that stay live."""
    xp, shape = p.xp, p.shape
    empty = set()
    for r, rows in enumerate(row_blocks):
        for c, cols in enumerate(col_blocks):
            if (r, c) not in known and not bool(xp.any(mask_mod_keep(
                    p.call.mask_mod, shape, rows, cols,
                    mod_indices(shape, rows, cols, xp, p.device), xp))):
                empty.add((r, c))
    return empty


def _online(p: Problem, rows: Block, cols: list[Block]) -> tuple[Array, Normalizer]:
    """Running max / sum / weighted values over the key blocks of one query block.

    Returns the normalised output block ``(*batch, Hq, rows, Dv)`` and the row statistics
    (a :class:`Normalizer` without ``exp``: only :func:`log_normalizer` and the weights
    recomputation read it).
    """
    xp, shape = p.xp, p.shape
    row_max = total = acc = shift = None
    if p.sinks is not None:
        # The sink is a block of one logit with no value (ATT-SINK-1): the running state
        # starts from it, and an empty row ends with out 0 and lse = sink.
        n_rows = rows[1] - rows[0]
        row_max = xp.broadcast_to(p.sinks, (*shape.batch, shape.hq, n_rows, 1))
        shift = shift_of(row_max, xp)
        total = xp.exp(row_max - shift)
        acc = xp.zeros((*shape.batch, shape.hq, n_rows, shape.dv), dtype=p.acc,
                       device=p.device)
    for block in cols:
        s = block_scores(p, rows, block)
        block_max = max_along(s, -1, xp)
        new_max = block_max if row_max is None else xp.maximum(row_max, block_max)
        shift = shift_of(new_max, xp)
        if in_place(s):
            s -= shift  # s is this block's own scratch array
            e = xp.exp(s)
        else:
            e = xp.exp(s - shift)
        block_sum = xp.sum(e, axis=-1, keepdims=True)
        block_out = weighted_values(p, dropped(p, e, rows, block), block)
        if row_max is None:
            # The first block needs no rescaling: nothing has been accumulated yet.
            total, acc = block_sum, block_out
        else:
            # exp(old max - new shift): 0 while nothing was attended (old max -inf), never
            # exp(+large) as exp(0 - shift) would be; NaN when a +inf score arrives (SMX-4).
            correction = xp.exp(row_max - shift)
            if in_place(acc) and in_place(total):  # total alone tracks grad from a sink
                total *= correction
                total += block_sum
                acc *= correction
                acc += block_out
            else:
                total = total * correction + block_sum
                acc = acc * correction + block_out
        row_max = new_max
    if row_max is None:  # no live key block: every row of this block is empty
        n_rows = rows[1] - rows[0]
        stats = (*shape.batch, shape.hq, n_rows, 1)
        row_max = xp.full(stats, -math.inf, dtype=p.acc, device=p.device)
        total = shift = xp.zeros(stats, dtype=p.acc, device=p.device)
        acc = xp.zeros((*shape.batch, shape.hq, n_rows, shape.dv), dtype=p.acc,
                       device=p.device)
    safe_total = safe_sum(total, xp)
    if in_place(acc):
        acc /= safe_total
        return acc, Normalizer(None, total, safe_total, shift, row_max)
    return acc / safe_total, Normalizer(None, total, safe_total, shift, row_max)


def _weights_row(p: Problem, rows: Block, live: list[Block], n: Normalizer) -> Array:
    """The weights of one query block, recomputed block by block from the final row sums;
    0 outside the ``live`` column ranges (in order, not overlapping)."""
    xp, shape = p.xp, p.shape
    pieces, at = [], 0
    for start, stop in [*live, (shape.lk, shape.lk)]:
        if start > at:  # keys no live block covers
            pieces.append(xp.zeros((*shape.batch, shape.hq, rows[1] - rows[0], start - at),
                                   dtype=p.acc, device=p.device))
        if start < stop:
            e = xp.exp(block_scores(p, rows, (start, stop)) - n.shift)
            pieces.append(dropped(p, e, rows, (start, stop)) / n.safe_total)
        at = stop
    return xp.concat(pieces, axis=-1)
