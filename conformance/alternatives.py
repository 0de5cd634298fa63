"""Attention in float64 under the spec's semantics and under the alternatives frameworks use.

A fingerprint probe names an output after the closest of these: each answer a probe can give
is one of the functions here applied to the probe's inputs. They are NumPy, not the Array API:
they describe conventions, they are not the library under test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

import attnspec

from .precision import round_to

__all__ = ["attend", "keep", "low_precision_reference", "options", "raw_scores", "sdpa",
           "with_bias"]


def options(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments among a case's inputs (not q/k/v)."""
    return {k: v for k, v in inputs.items() if k not in ("query", "key", "value")}


def sdpa(inputs: Mapping[str, Any], **overrides: Any) -> np.ndarray:
    """attnspec's float64 ``out`` for ``inputs`` with some arguments replaced (None drops)."""
    merged = {**inputs, **overrides}
    kwargs = {k: v for k, v in options(merged).items() if v is not None}
    with np.errstate(all="ignore"):
        out: np.ndarray = np.asarray(attnspec.scaled_dot_product_attention(
            merged["query"], merged["key"], merged["value"], **kwargs))
    return out


def keep(inputs: Mapping[str, Any]) -> np.ndarray:
    """The spec's attended positions (True = attend), broadcast to the scores' shape."""
    q, k = inputs["query"], inputs["key"]
    opts = options(inputs)
    attended = attnspec.attention_mask(
        q.shape[-2], k.shape[-2], mask=opts.get("mask"), causal=bool(opts.get("causal")),
        window=opts.get("window"), alignment=opts.get("alignment", "upper_left"),
        kv_lengths=opts.get("kv_lengths"), q_lengths=opts.get("q_lengths"), xp=np,
    )
    scores = (*q.shape[:-1], k.shape[-2])
    return np.broadcast_to(np.True_ if attended is None else attended, scores)


def raw_scores(inputs: Mapping[str, Any]) -> np.ndarray:
    """``q @ k^T * scale`` in float64, grouped-query heads read contiguously."""
    q, k = inputs["query"], inputs["key"]
    k = np.repeat(k, q.shape[-3] // k.shape[-3], axis=-3)
    scale = inputs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    scores: np.ndarray = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    return scores


def attend(scores: np.ndarray, inputs: Mapping[str, Any]) -> np.ndarray:
    """Softmax of already masked scores times V (attnspec's softmax: empty rows give 0)."""
    q, v = inputs["query"], inputs["value"]
    v = np.repeat(v, q.shape[-3] // v.shape[-3], axis=-3)
    out: np.ndarray = np.matmul(np.asarray(attnspec.softmax(scores, axis=-1)), v)
    return out


def with_bias(s: np.ndarray, inputs: Mapping[str, Any]) -> np.ndarray:
    """Scores plus the bias; a ``-inf`` bias stays ``-inf`` whatever the score."""
    bias = inputs.get("bias")
    return s if bias is None else np.where(bias == -math.inf, -math.inf, s + bias)


def low_precision_reference(inputs: Mapping[str, Any], dtype: str) -> np.ndarray:
    """Attention with every product rounded to ``dtype`` and every sum accumulated one term
    at a time in ``dtype`` (the worst plausible low-precision accumulation)."""

    def r(x: Any) -> np.ndarray:
        return round_to(x, dtype)

    def seq_sum(terms: np.ndarray, axis: int) -> np.ndarray:
        terms = np.moveaxis(terms, axis, 0)
        total = np.zeros(terms.shape[1:])
        for term in terms:
            total = r(total + term)
        return total

    q, k, v = inputs["query"], inputs["key"], inputs["value"]
    scale = inputs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    s = r(seq_sum(r(q[..., :, None, :] * k[..., None, :, :]), axis=-1) * scale)
    e = r(np.exp(s - s.max(axis=-1, keepdims=True)))
    total = seq_sum(e, axis=-1)[..., None]
    numerator = seq_sum(r(e[..., :, :, None] * v[..., None, :, :]), axis=-2)
    return r(numerator / total)
