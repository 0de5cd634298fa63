"""Conversions between the spec's ``(*batch, H, L, D)`` layout and ``(*batch, L, H, D)``.

JAX (``jax.nn.dot_product_attention``), flash-attention and most model code keep tokens
before heads; attnspec and torch SDPA keep heads first so that ``L x D`` matrices are the
trailing axes that ``matmul`` contracts.
"""

from __future__ import annotations

from ._namespace import Array, Namespace, namespace_of
from ._shapes import fmt

__all__ = ["bhld_to_blhd", "bhld_to_packed", "blhd_to_bhld", "merge_heads", "packed_to_bhld",
           "split_heads"]


def _swap_last_but_one(x: Array, name: str, xp: Namespace | None) -> Array:
    xp = namespace_of(xp, {"x": x}, func=name, required=("x",))
    if x.ndim < 3:
        raise ValueError(f"{name}: x must have at least 3 axes; got shape {fmt(x.shape)}")
    axes = (*range(x.ndim - 3), x.ndim - 2, x.ndim - 3, x.ndim - 1)
    return xp.permute_dims(x, axes)


def bhld_to_blhd(x: Array, /, *, xp: Namespace | None = None) -> Array:
    """``(*batch, H, L, D)`` -> ``(*batch, L, H, D)``.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import bhld_to_blhd
    >>> bhld_to_blhd(xp.zeros((2, 4, 16, 8))).shape
    (2, 16, 4, 8)
    """
    return _swap_last_but_one(x, "bhld_to_blhd", xp)


def blhd_to_bhld(x: Array, /, *, xp: Namespace | None = None) -> Array:
    """``(*batch, L, H, D)`` -> ``(*batch, H, L, D)``; the inverse of :func:`bhld_to_blhd`."""
    return _swap_last_but_one(x, "blhd_to_bhld", xp)


def split_heads(x: Array, /, num_heads: int, *, xp: Namespace | None = None) -> Array:
    """``(*batch, L, H*D)`` -> ``(*batch, H, L, D)``: head ``h`` owns columns
    ``h*D : (h+1)*D``.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import split_heads
    >>> split_heads(xp.zeros((3, 5, 12)), 4).shape
    (3, 4, 5, 3)
    """
    xp = namespace_of(xp, {"x": x}, func="split_heads", required=("x",))
    if x.ndim < 2:
        raise ValueError(f"split_heads: x must have at least 2 axes; got shape {fmt(x.shape)}")
    if isinstance(num_heads, bool) or not isinstance(num_heads, int):
        raise TypeError(f"split_heads: num_heads must be an int; got {type(num_heads).__name__}")
    if num_heads < 1 or x.shape[-1] % num_heads:
        raise ValueError(
            f"split_heads: last axis of size {x.shape[-1]} (x shape {fmt(x.shape)}) is not "
            f"divisible into num_heads={num_heads} heads"
        )
    y = xp.reshape(x, (*x.shape[:-1], num_heads, x.shape[-1] // num_heads))
    return blhd_to_bhld(y, xp=xp)


def merge_heads(x: Array, /, *, xp: Namespace | None = None) -> Array:
    """``(*batch, H, L, D)`` -> ``(*batch, L, H*D)``; the inverse of :func:`split_heads`."""
    xp = namespace_of(xp, {"x": x}, func="merge_heads", required=("x",))
    y = bhld_to_blhd(x, xp=xp)
    return xp.reshape(y, (*y.shape[:-2], y.shape[-2] * y.shape[-1]))


def packed_to_bhld(x: Array, /, *, xp: Namespace | None = None) -> Array:
    """flash-attention's packed varlen layout ``(total, H, D)`` -> ``(1, H, total, D)``: one
    batch entry holding every sequence, told apart by segment ids
    (:func:`attnspec.segment_ids_from_cu_seqlens`).

    Examples
    --------
    >>> import array_api_strict as xp
    >>> from attnspec import packed_to_bhld
    >>> packed_to_bhld(xp.zeros((10, 4, 8))).shape
    (1, 4, 10, 8)
    """
    xp = namespace_of(xp, {"x": x}, func="packed_to_bhld", required=("x",))
    if x.ndim != 3:
        raise ValueError(f"packed_to_bhld: x must have shape (total, heads, head_dim); got "
                         f"{fmt(x.shape)}")
    return xp.expand_dims(xp.permute_dims(x, (1, 0, 2)), axis=0)


def bhld_to_packed(x: Array, /, *, xp: Namespace | None = None) -> Array:
    """``(1, H, total, D)`` -> ``(total, H, D)``; the inverse of :func:`packed_to_bhld`."""
    xp = namespace_of(xp, {"x": x}, func="bhld_to_packed", required=("x",))
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"bhld_to_packed: x must have shape (1, heads, total, head_dim); got "
                         f"{fmt(x.shape)}")
    return xp.permute_dims(x[0, ...], (1, 0, 2))
