"""scaled_dot_product_attention: the normative computation of docs/spec.md (direct path)."""

from __future__ import annotations

import math

import array_api_compat

from . import _validate as check
from ._namespace import (
    Array,
    Namespace,
    accumulation_dtype,
    check_same_namespace,
    namespace,
    to_dtype,
)
from ._normalizer import log_normalizer, normalizer
from .masks import Window, as_lengths, attention_mask, key_padding

__all__ = ["scaled_dot_product_attention"]


def scaled_dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    /,
    *,
    mask: Array | None = None,
    bias: Array | None = None,
    causal: bool = False,
    window: Window | None = None,
    alignment: str = "upper_left",
    scale: float | None = None,
    softcap: float | None = None,
    kv_lengths: Array | int | None = None,
    q_lengths: Array | int | None = None,
    dropout_mask: Array | None = None,
    dropout_p: float = 0.0,
    return_lse: bool = False,
    return_weights: bool = False,
    xp: Namespace | None = None,
) -> Array | tuple[Array, ...]:
    """Scaled dot-product attention as defined by ``docs/spec.md``.

    Parameters
    ----------
    query : array, shape ``(*batch, Hq, Lq, Dk)``
    key : array, shape ``(*batch, Hkv, Lk, Dk)``
    value : array, shape ``(*batch, Hkv, Lk, Dv)``
        One real floating dtype for all three. ``Hq`` must be a multiple of ``Hkv``: query
        head ``h`` reads key/value head ``h // (Hq // Hkv)`` (grouped-query attention).
        Batch dimensions broadcast.
    mask : bool array, optional
        True = may attend; broadcastable to ``(*batch, Hq, Lq, Lk)``.
    bias : float array, optional
        Added to the scores; broadcastable to ``(*batch, Hq, Lq, Lk)``. A ``-inf`` entry
        masks its position.
    causal : bool
        Keep keys ``j <= i + offset``.
    window : (left, right), optional
        Keep keys ``i + offset - left <= j <= i + offset + right``; ``None`` sides are
        unbounded.
    alignment : {"upper_left", "lower_right"}
        ``offset`` is 0 (torch ``is_causal``, JAX) or ``kv_len - q_len`` (flash-attention,
        KV-cache decode), per batch entry when lengths are given.
    scale : float, optional
        Score scale; default ``1 / sqrt(Dk)``.
    softcap : float, optional
        ``s = softcap * tanh(s / softcap)`` after scaling, before bias and masks.
    kv_lengths, q_lengths : integer array of shape ``(*batch,)`` or int, optional
        Keys ``j >= kv_lengths[b]`` are padding (their K/V content never reaches the
        output); query rows ``i >= q_lengths[b]`` are padding and output 0.
    dropout_mask : bool array, optional
        Caller-drawn keep-mask broadcastable to ``(*batch, Hq, Lq, Lk)``; kept weights are
        scaled by ``1 / (1 - dropout_p)``.
    dropout_p : float
        Drop probability in ``[0, 1)`` the mask was drawn with.
    return_lse, return_weights : bool
        Also return the log-sum-exp of the masked scores, shape ``(*batch, Hq, Lq)`` in
        float32 (float64 for float64 input), and/or the weights that multiply ``value``
        (after dropout), shape ``(*batch, Hq, Lq, Lk)``.
    xp : namespace, optional
        The array namespace; inferred from the inputs by default.

    Returns
    -------
    out or tuple
        ``out`` of shape ``(*batch, Hq, Lq, Dv)`` and the input dtype; ``(out, lse)``,
        ``(out, weights)`` or ``(out, lse, weights)`` as requested. A row with nothing to
        attend gives out 0, lse ``-inf`` and weights 0, never NaN.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> import attnspec
    >>> q = xp.zeros((1, 2, 4))          # one head, two queries, Dk = 4
    >>> k = xp.ones((1, 3, 4))
    >>> v = xp.reshape(xp.arange(6.0), (1, 3, 2))
    >>> attnspec.scaled_dot_product_attention(q, k, v, causal=True)
    Array([[[0., 1.],
            [1., 2.]]], dtype=array_api_strict.float64)
    >>> out, lse = attnspec.scaled_dot_product_attention(
    ...     q, k, v, mask=xp.asarray([[False] * 3, [True] * 3]), return_lse=True)
    >>> out
    Array([[[0., 0.],
            [2., 3.]]], dtype=array_api_strict.float64)
    >>> lse
    Array([[      -inf, 1.09861229]], dtype=array_api_strict.float64)
    """
    xp = namespace(query, key, value, xp=xp)
    check_same_namespace(
        xp, key=key, value=value, mask=mask, bias=bias, kv_lengths=kv_lengths,
        q_lengths=q_lengths, dropout_mask=dropout_mask,
    )
    shape = check.attention_shape(query, key, value, xp)
    check.check_bool("mask", mask, xp, check.MASK_HINT)
    check.check_bool("dropout_mask", dropout_mask, xp)
    check.check_bias(bias, xp)
    for name, arr in (("mask", mask), ("bias", bias), ("dropout_mask", dropout_mask)):
        check.check_broadcast(name, arr, shape.scores, "the scores' shape (*batch, Hq, Lq, Lk)")
    check.check_positive_real("scale", scale, allow_array=True)
    check.check_positive_real("softcap", softcap, allow_array=True)
    dropout_p = check.check_dropout(dropout_p, dropout_mask)

    device = array_api_compat.device(query)
    index = xp.arange(1, device=device).dtype
    if kv_lengths is not None:
        kv_lengths = as_lengths(kv_lengths, "kv_lengths", xp, device, index)
        check.check_lengths_shape("kv_lengths", kv_lengths, shape.batch)
    if q_lengths is not None:
        q_lengths = as_lengths(q_lengths, "q_lengths", xp, device, index)
        check.check_lengths_shape("q_lengths", q_lengths, shape.batch)
    keep = attention_mask(
        shape.lq, shape.lk, mask=mask, causal=causal, window=window, alignment=alignment,
        kv_lengths=kv_lengths, q_lengths=q_lengths, xp=xp, device=device,
    )

    dtype = query.dtype
    acc = accumulation_dtype(xp, dtype)
    q, k, v = (to_dtype(xp, x, acc) for x in (query, key, value))
    if kv_lengths is not None:
        real_key = key_padding(shape.lk, kv_lengths, xp, device)
        k = xp.where(real_key, k, 0.0)
        v = xp.where(real_key, v, 0.0)

    s = _scores(q, k, shape, xp)
    s = s * (1.0 / math.sqrt(shape.dk) if scale is None else scale)
    if softcap is not None:
        s = softcap * xp.tanh(s / softcap)
    if bias is not None:
        b = to_dtype(xp, bias, acc)
        # A -inf bias entry masks its position even where q.k is NaN or +inf (ATT-BIAS-1).
        s = xp.where(b == -math.inf, -math.inf, s + b)
    if keep is not None:
        s = xp.where(keep, s, -math.inf)

    n = normalizer(s, -1, xp)
    p = n.exp
    if dropout_mask is not None:
        p = xp.where(dropout_mask, p, 0.0)
        if dropout_p > 0.0:
            p = p * (1.0 / (1.0 - dropout_p))
    out = _weighted_values(p, v, shape, xp) / n.safe_total
    results: list[Array] = [to_dtype(xp, out, dtype)]
    if return_lse:
        results.append(xp.squeeze(log_normalizer(n, xp), axis=-1))
    if return_weights:
        results.append(to_dtype(xp, p / n.safe_total, dtype))
    return results[0] if len(results) == 1 else tuple(results)


def _scores(q: Array, k: Array, shape: check.AttentionShape, xp: Namespace) -> Array:
    """``q @ k^T`` with grouped-query heads, without copying K per group.

    The ``G = Hq // Hkv`` query heads that share a KV head are stacked along the query axis,
    ``(*b, Hkv, G*Lq, Dk)``, so one matmul per KV head serves the whole group.
    """
    kt = xp.matrix_transpose(k)
    if shape.hq == shape.hkv:
        return xp.matmul(q, kt)
    s = xp.matmul(_stack_groups(q, shape.hkv, xp), kt)
    return _unstack_groups(s, shape.hq, shape.lq, xp)


def _weighted_values(p: Array, v: Array, shape: check.AttentionShape, xp: Namespace) -> Array:
    if shape.hq == shape.hkv:
        return xp.matmul(p, v)
    out = xp.matmul(_stack_groups(p, shape.hkv, xp), v)
    return _unstack_groups(out, shape.hq, shape.lq, xp)


# Each reshape below only splits or only merges axes: Dask cannot do both in one step.
def _stack_groups(x: Array, hkv: int, xp: Namespace) -> Array:
    """``(*b, Hq, L, C)`` -> ``(*b, Hkv, G*L, C)``."""
    *batch, hq, length, c = x.shape
    x = xp.reshape(x, (*batch, hkv, hq // hkv, length, c))
    return xp.reshape(x, (*batch, hkv, (hq // hkv) * length, c))


def _unstack_groups(x: Array, hq: int, length: int, xp: Namespace) -> Array:
    """``(*b, Hkv, G*L, C)`` -> ``(*b, Hq, L, C)``."""
    *batch, hkv, _, c = x.shape
    x = xp.reshape(x, (*batch, hkv, hq // hkv, length, c))
    return xp.reshape(x, (*batch, hq, length, c))
