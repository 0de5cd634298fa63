"""multi_head_attention: input/output projections around scaled_dot_product_attention."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._namespace import Array, Namespace, check_same_device, namespace_of
from ._shapes import broadcast_shapes, fmt
from ._validate import check_flag, check_real_floating, shape_of
from .attention import scaled_dot_product_attention
from .layout import merge_heads, split_heads
from .masks import Window

__all__ = ["multi_head_attention"]


def _check_projection(x_shape: tuple[int, ...], w: Array, b: Array | None, name: str) -> None:
    if w.ndim != 2 or w.shape[0] != x_shape[-1]:
        raise ValueError(
            f"w_{name} must have shape ({x_shape[-1]}, out_features) to project an input of "
            f"shape {fmt(x_shape)}; got {fmt(w.shape)}"
        )
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(f"b_{name} must have shape ({w.shape[1]},); got {fmt(b.shape)}")


def _project(x: Array, w: Array, b: Array | None, xp: Namespace) -> Array:
    y = xp.matmul(x, w)
    return y if b is None else y + b


def _heads(width: int, heads: int, arg: str, what: str) -> int:
    if width % heads:
        raise ValueError(
            f"{arg}'s output width {width} is not divisible into {heads} {what} heads"
        )
    return width // heads


def multi_head_attention(
    query: Array,
    key: Array | None = None,
    value: Array | None = None,
    /,
    *,
    num_heads: int,
    w_q: Array,
    w_k: Array,
    w_v: Array,
    w_o: Array,
    b_q: Array | None = None,
    b_k: Array | None = None,
    b_v: Array | None = None,
    b_o: Array | None = None,
    num_kv_heads: int | None = None,
    mask: Array | None = None,
    bias: Array | None = None,
    causal: bool = False,
    window: Window | None = None,
    alignment: str = "upper_left",
    scale: float | None = None,
    softcap: float | None = None,
    sinks: Array | None = None,
    alibi_slopes: Array | None = None,
    q_positions: Array | None = None,
    kv_positions: Array | None = None,
    q_segment_ids: Array | None = None,
    kv_segment_ids: Array | None = None,
    score_mod: Callable[..., Array] | None = None,
    mask_mod: Callable[..., Array] | None = None,
    kv_lengths: Array | int | None = None,
    q_lengths: Array | int | None = None,
    dropout_mask: Array | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    average_weights: bool = True,
    xp: Namespace | None = None,
) -> Array | tuple[Array, Array]:
    """Multi-head attention with projections given as arrays (``x @ W + b`` layout).

    Inputs are batch-first ``(*batch, L, E)``. ``key`` defaults to ``query``
    (self-attention) and ``value`` to ``key``. Head ``h`` owns columns ``h*D : (h+1)*D`` of
    each projection; ``num_kv_heads`` (default ``num_heads``) enables grouped-query
    attention. ``mask``, ``bias`` and the other attention options mean exactly what they
    mean in :func:`attnspec.scaled_dot_product_attention` (shapes broadcast to
    ``(*batch, Hq, Lq, Lk)``). To convert a ``torch.nn.MultiheadAttention`` and its masks
    see ``attnspec.backends.torch``.

    Returns
    -------
    out or (out, weights)
        ``out`` is ``(*batch, Lq, E_out)``. With ``need_weights``, ``weights`` is
        ``(*batch, Lq, Lk)`` averaged over heads, or ``(*batch, Hq, Lq, Lk)`` with
        ``average_weights=False``.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> import attnspec
    >>> eye = xp.eye(4)
    >>> x = xp.reshape(xp.arange(12.0), (3, 4))
    >>> out = attnspec.multi_head_attention(
    ...     x, num_heads=2, w_q=eye * 0.0, w_k=eye, w_v=eye, w_o=eye, causal=True)
    >>> out[1, ...]
    Array([2., 3., 4., 5.], dtype=array_api_strict.float64)
    """
    key = query if key is None else key
    value = key if value is None else value
    arrays = {
        "query": query, "key": key, "value": value, "w_q": w_q, "w_k": w_k, "w_v": w_v,
        "w_o": w_o, "b_q": b_q, "b_k": b_k, "b_v": b_v, "b_o": b_o,
    }
    xp = namespace_of(xp, arrays, required=("query", "w_q", "w_k", "w_v", "w_o"))
    check_same_device(arrays)
    for name, x in arrays.items():
        if x is not None:
            shape_of(name, x)
            check_real_floating(name, x, xp)
            if x.dtype != query.dtype:
                raise TypeError(
                    f"{name} has dtype {x.dtype} but query has {query.dtype}; the inputs, "
                    "weights and biases of multi_head_attention share one dtype"
                )
    for name, x in (("query", query), ("key", key), ("value", value)):
        if x.ndim < 2:
            raise ValueError(f"{name} must have shape (*batch, length, embed); got {fmt(x.shape)}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"key {fmt(key.shape)} and value {fmt(value.shape)} must have the same length"
        )
    if broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2]) is None:
        raise ValueError(
            f"batch dimensions of query {fmt(query.shape)}, key {fmt(key.shape)} and value "
            f"{fmt(value.shape)} do not broadcast"
        )
    hq = num_heads
    hkv = num_heads if num_kv_heads is None else num_kv_heads
    for name, h in (("num_heads", hq), ("num_kv_heads", hkv)):
        if isinstance(h, bool) or not isinstance(h, int):
            raise TypeError(f"{name} must be an int >= 1; got {type(h).__name__}")
        if h < 1:
            raise ValueError(f"{name} must be an int >= 1; got {h!r}")
    check_flag("need_weights", need_weights)
    check_flag("average_weights", average_weights)
    for name, x, w, b in (("q", query, w_q, b_q), ("k", key, w_k, b_k), ("v", value, w_v, b_v)):
        _check_projection(tuple(x.shape), w, b, name)
    dk = _heads(w_q.shape[1], hq, "w_q", "query")
    if w_k.shape[1] != hkv * dk:
        raise ValueError(
            f"w_k must have {hkv} * {dk} = {hkv * dk} output columns (num_kv_heads x query "
            f"head_dim); got {w_k.shape[1]} (w_k shape {fmt(w_k.shape)})"
        )
    dv = _heads(w_v.shape[1], hkv, "w_v", "key/value")
    if w_o.ndim != 2 or w_o.shape[0] != hq * dv:
        raise ValueError(
            f"w_o must have shape ({hq * dv}, out_features) (num_heads x value head_dim rows); "
            f"got {fmt(w_o.shape)}"
        )
    _check_projection((*query.shape[:-1], hq * dv), w_o, b_o, "o")
    q = _project(query, w_q, b_q, xp)
    k = _project(key, w_k, b_k, xp)
    v = _project(value, w_v, b_v, xp)
    options: dict[str, Any] = {
        "mask": mask, "bias": bias, "causal": causal, "window": window,
        "alignment": alignment, "scale": scale, "softcap": softcap, "sinks": sinks,
        "alibi_slopes": alibi_slopes, "q_positions": q_positions,
        "kv_positions": kv_positions, "q_segment_ids": q_segment_ids,
        "kv_segment_ids": kv_segment_ids, "score_mod": score_mod, "mask_mod": mask_mod,
        "kv_lengths": kv_lengths, "q_lengths": q_lengths,
        "dropout_mask": dropout_mask, "dropout_p": dropout_p,
    }
    result = scaled_dot_product_attention(
        split_heads(q, hq, xp=xp), split_heads(k, hkv, xp=xp), split_heads(v, hkv, xp=xp),
        return_weights=need_weights, xp=xp, **options,
    )
    attn, weights = result if need_weights else (result, None)
    out = _project(merge_heads(attn, xp=xp), w_o, b_o, xp)
    if weights is None:
        return out
    return out, (xp.mean(weights, axis=-3) if average_weights else weights)
