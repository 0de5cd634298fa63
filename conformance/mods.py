"""The named ``score_mod`` / ``mask_mod`` callables of the catalog (ATT-MOD-1).

Each works unchanged with FlexAttention's calling convention (0-d tensors under ``vmap``),
attnspec's (broadcasting index arrays, any Array API namespace, array-api-strict included:
integer indices are cast before they meet a float) and the loop oracle's (NumPy scalars), so
the same function grades attnspec, ``torch.nn.attention.flex_attention`` and a user's kernel.
Module-level functions: they pickle by name to a worker process and export as
``attnspec.conformance.mods:<name>``.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

__all__ = ["MASK_MODS", "SCORE_MODS"]


def relative_bias(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
    """A learned-style relative position bias: ``score + (q_idx - kv_idx) / 8``."""
    xp = array_namespace(score)
    return score + xp.astype(q_idx - kv_idx, score.dtype) * 0.125


def head_softcap(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
    """A soft cap that differs per head and batch entry: ``c * tanh(score / c)``,
    ``c = 2 + h + b``: nonlinear, so applying it after the bias changes the result."""
    xp = array_namespace(score)
    cap = xp.astype(h + b, score.dtype) + 2.0
    return cap * xp.tanh(score / cap)


def stripes(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
    """Causal, without every third diagonal (the diagonal itself always kept)."""
    return (kv_idx <= q_idx) & ((q_idx - kv_idx) % 3 != 1)


def prefix_lm(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
    """A prefix of 3 keys every row sees, causal after it (PrefixLM)."""
    return (kv_idx < 3) | (kv_idx <= q_idx)


def batch_head(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
    """Depends on the batch entry and the head: ``kv_idx <= q_idx + b`` and ``kv_idx >= h``
    (rows before key ``h`` are empty)."""
    return (kv_idx <= q_idx + b) & (kv_idx >= h)


SCORE_MODS = {"relative_bias": relative_bias, "head_softcap": head_softcap}
MASK_MODS = {"stripes": stripes, "prefix_lm": prefix_lm, "batch_head": batch_head}
