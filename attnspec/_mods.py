"""``score_mod`` and ``mask_mod``: FlexAttention's callables, evaluated on a block of scores.

FlexAttention calls ``score_mod(score, b, h, q_idx, kv_idx)`` and ``mask_mod(b, h, q_idx,
kv_idx)`` once per score through ``vmap``; attnspec calls them once per block with index
arrays that broadcast against the block ``(*batch, Hq, rows, cols)``:

* ``b`` -- the flat (row-major) batch index, ``(*batch, 1, 1, 1)`` (``(1, 1, 1)`` without
  batch dimensions);
* ``h`` -- the query head, ``(Hq, 1, 1)``;
* ``q_idx`` -- the query index, ``(rows, 1)``; ``kv_idx`` -- the key index, ``(1, cols)``.

A mod written with operators and indexing (``score + bias[b, h, q_idx, kv_idx]``,
``(kv_idx <= q_idx) & (doc[b, q_idx] == doc[b, kv_idx])``) means the same under both
conventions, so the same callable grades ``torch.nn.attention.flex_attention``. The score
pipeline applies ``score_mod`` after softcap and before the bias, and ANDs ``mask_mod`` with
every other mask (ATT-MOD-1).
"""

from __future__ import annotations

import math
from typing import Any

from ._blocks import Block
from ._namespace import Array, Namespace, is_array, is_real_floating, to_dtype
from ._shapes import broadcasts_to, fmt
from ._validate import AttentionShape


def mod_indices(shape: AttentionShape, rows: Block, cols: Block, xp: Namespace,
                device: Any) -> tuple[Array, Array, Array, Array]:
    """``(b, h, q_idx, kv_idx)`` for a block, shaped as the module docstring says."""
    batch = shape.batch
    count = math.prod(batch)
    b = xp.reshape(xp.arange(count, device=device), (*batch, 1, 1, 1) if batch else (1, 1, 1))
    h = xp.reshape(xp.arange(shape.hq, device=device), (shape.hq, 1, 1))
    q_idx = xp.reshape(xp.arange(rows[0], rows[1], device=device), (rows[1] - rows[0], 1))
    kv_idx = xp.reshape(xp.arange(cols[0], cols[1], device=device), (1, cols[1] - cols[0]))
    return b, h, q_idx, kv_idx


Indices = tuple[Array, Array, Array, Array]


def apply_score_mod(score_mod: Any, s: Array, indices: Indices, xp: Namespace) -> Array:
    """``score_mod(s, b, h, q_idx, kv_idx)`` for a block (``indices`` from
    :func:`mod_indices`), checked and in ``s``'s dtype."""
    out = score_mod(s, *indices)
    if not is_array(out) or not is_real_floating(xp, out.dtype):
        got = out.dtype if is_array(out) else type(out).__name__
        raise TypeError(f"score_mod must return a real floating array of the scores' shape; "
                        f"got {got}")
    if not broadcasts_to(tuple(out.shape), tuple(s.shape)):
        raise ValueError(f"score_mod returned shape {fmt(out.shape)} for a block of scores of "
                         f"shape {fmt(s.shape)} (*batch, Hq, rows, cols): it must return the "
                         "score's shape (elementwise arithmetic on its arguments does)")
    return xp.broadcast_to(to_dtype(xp, out, s.dtype), tuple(s.shape))


def mask_mod_keep(mask_mod: Any, shape: AttentionShape, rows: Block, cols: Block,
                  indices: Indices, xp: Namespace) -> Array:
    """``mask_mod(b, h, q_idx, kv_idx)`` for a block: a bool array broadcastable to it."""
    keep = mask_mod(*indices)
    block = (*shape.batch, shape.hq, rows[1] - rows[0], cols[1] - cols[0])
    if not is_array(keep) or keep.dtype != xp.bool:
        got = keep.dtype if is_array(keep) else type(keep).__name__
        raise TypeError(f"mask_mod must return a bool array (True = may attend); got {got}")
    if not broadcasts_to(tuple(keep.shape), block):
        raise ValueError(f"mask_mod returned shape {fmt(keep.shape)}, which does not "
                         f"broadcast to the block {fmt(block)} (*batch, Hq, rows, cols)")
    return keep
