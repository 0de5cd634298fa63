"""Argument checks for attention: every failure names the argument, what was expected and
the offending shape or dtype. Checks read shapes and dtypes only, never array values, so
they cost nothing under ``jax.jit`` and never force a Dask computation."""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import array_api_compat

from ._namespace import Array, Namespace, check_same_namespace, is_real_floating, namespace
from ._shapes import broadcast_shapes, broadcasts_to, fmt


class AttentionShape(NamedTuple):
    batch: tuple[int, ...]
    hq: int
    hkv: int
    lq: int
    lk: int
    dk: int
    dv: int

    @property
    def scores(self) -> tuple[int, ...]:
        return (*self.batch, self.hq, self.lq, self.lk)


def attention_shape(query: Array, key: Array, value: Array, xp: Namespace) -> AttentionShape:
    for name, x in (("query", query), ("key", key), ("value", value)):
        if x.ndim < 3:
            raise ValueError(
                f"{name} must have shape (*batch, heads, length, head_dim); got {fmt(x.shape)}"
            )
        if not is_real_floating(xp, x.dtype):
            raise TypeError(f"{name} must have a real floating dtype; got {x.dtype}")
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(
            "query, key and value must share one dtype; got "
            f"{query.dtype}, {key.dtype}, {value.dtype}"
        )
    *bq, hq, lq, dk = query.shape
    *bk, hkv, lk, dk2 = key.shape
    *bv, hv, lv, dv = value.shape
    if dk2 != dk:
        raise ValueError(
            f"key head_dim {dk2} (key shape {fmt(key.shape)}) must equal query head_dim {dk} "
            f"(query shape {fmt(query.shape)})"
        )
    if (hv, lv) != (hkv, lk):
        raise ValueError(
            f"value shape {fmt(value.shape)} must match key shape {fmt(key.shape)} in heads and "
            "length"
        )
    if hkv < 1 or hq % hkv:
        raise ValueError(
            f"query heads ({hq}) must be a multiple of key/value heads ({hkv}) for grouped-query "
            f"attention; got query {fmt(query.shape)}, key {fmt(key.shape)}"
        )
    batch = broadcast_shapes(bq, bk, bv)
    if batch is None:
        raise ValueError(
            f"batch dimensions of query {fmt(query.shape)}, key {fmt(key.shape)} and value "
            f"{fmt(value.shape)} do not broadcast"
        )
    return AttentionShape(batch, hq, hkv, lq, lk, dk, dv)


def check_broadcast(name: str, x: Array | None, target: tuple[int, ...], what: str) -> None:
    if x is not None and not broadcasts_to(x.shape, target):
        raise ValueError(
            f"{name} of shape {fmt(x.shape)} does not broadcast to {what} {fmt(target)}"
        )


MASK_HINT = " (True = may attend); an additive float mask goes in bias="


def check_bool(name: str, x: Array | None, xp: Namespace, hint: str = "") -> None:
    if x is not None and x.dtype != xp.bool:
        raise TypeError(f"{name} must be a bool array; got dtype {x.dtype}{hint}")


def check_bias(bias: Array | None, xp: Namespace) -> None:
    if bias is not None and not is_real_floating(xp, bias.dtype):
        hint = " (a bool mask goes in mask=)" if bias.dtype == xp.bool else ""
        raise TypeError(f"bias must have a real floating dtype{hint}; got {bias.dtype}")


def check_lengths_shape(name: str, lengths: Array | None, batch: tuple[int, ...]) -> None:
    if lengths is not None and not broadcasts_to(lengths.shape, batch):
        raise ValueError(
            f"{name} of shape {fmt(lengths.shape)} must broadcast to the batch shape "
            f"{fmt(batch)} (one length per sequence)"
        )


def check_positive_real(name: str, value: Any, *, allow_array: bool) -> None:
    """A Python real > 0; under ``jax.jit`` a traced 0-d array is let through unchecked."""
    if value is None:
        return
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        return
    if allow_array and getattr(value, "ndim", None) == 0:
        return
    raise TypeError(f"{name} must be a real number; got {type(value).__name__}")


def check_dropout(dropout_p: Any, dropout_mask: Array | None) -> float:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"dropout_p must be a float in [0, 1); got {type(dropout_p).__name__}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1); got {dropout_p!r}")
    if dropout_p > 0.0 and dropout_mask is None:
        raise ValueError(
            "dropout_p > 0 needs dropout_mask= (a bool keep-mask): the Array API standard has "
            "no random numbers, so the caller draws them"
        )
    return float(dropout_p)


def check_chunk_size(chunk_size: Any) -> None:
    """``None``, an int >= 0 (0 = direct), or a ``(block_q, block_k)`` pair of ints >= 1."""
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool):
        raise TypeError("chunk_size must be an int, a (block_q, block_k) pair or None; got bool")
    if isinstance(chunk_size, int):
        if chunk_size < 0:
            raise ValueError(f"chunk_size must be >= 0 (0 = the direct path); got {chunk_size}")
        return
    if (isinstance(chunk_size, (tuple, list)) and len(chunk_size) == 2
            and all(isinstance(c, int) and not isinstance(c, bool) for c in chunk_size)):
        if min(chunk_size) < 1:
            raise ValueError(f"chunk_size blocks must be >= 1; got {tuple(chunk_size)}")
        return
    raise TypeError(
        f"chunk_size must be an int, a (block_q, block_k) pair or None; got {chunk_size!r}"
    )


class AttentionArguments(NamedTuple):
    xp: Namespace
    shape: AttentionShape
    device: Any
    window: Any  # the (left, right) band, or None
    kv_lengths: Array | None  # as an index-dtype array on the query's device
    q_lengths: Array | None
    dropout_p: float


def attention_arguments(query, key, value, *, mask, bias, causal, window, alignment, scale,
                        softcap, kv_lengths, q_lengths, dropout_mask, dropout_p, chunk_size,
                        xp) -> AttentionArguments:
    """Every check of ``scaled_dot_product_attention``'s arguments, in one place."""
    from .masks import as_lengths, check_band_options

    xp = namespace(query, key, value, xp=xp)
    check_same_namespace(
        xp, key=key, value=value, mask=mask, bias=bias, kv_lengths=kv_lengths,
        q_lengths=q_lengths, dropout_mask=dropout_mask,
    )
    shape = attention_shape(query, key, value, xp)
    check_bool("mask", mask, xp, MASK_HINT)
    check_bool("dropout_mask", dropout_mask, xp)
    check_bias(bias, xp)
    for name, arr in (("mask", mask), ("bias", bias), ("dropout_mask", dropout_mask)):
        check_broadcast(name, arr, shape.scores, "the scores' shape (*batch, Hq, Lq, Lk)")
    check_positive_real("scale", scale, allow_array=True)
    check_positive_real("softcap", softcap, allow_array=True)
    dropout_p = check_dropout(dropout_p, dropout_mask)
    check_chunk_size(chunk_size)
    window = check_band_options(causal, window, alignment)

    device = array_api_compat.device(query)
    index = xp.arange(1, device=device).dtype
    if kv_lengths is not None:
        kv_lengths = as_lengths(kv_lengths, "kv_lengths", xp, device, index)
        check_lengths_shape("kv_lengths", kv_lengths, shape.batch)
    if q_lengths is not None:
        q_lengths = as_lengths(q_lengths, "q_lengths", xp, device, index)
        check_lengths_shape("q_lengths", q_lengths, shape.batch)
    return AttentionArguments(xp, shape, device, window, kv_lengths, q_lengths, dropout_p)
