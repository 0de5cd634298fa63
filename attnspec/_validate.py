"""Argument checks: every failure names the argument, what was expected and the offending
shape, dtype or value (spec rule ATT-ARG-1; the full list is docs/errors.md). Checks read
types, shapes, dtypes and devices only, never array values, so they cost nothing under
``jax.jit`` and never force a Dask computation."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

from ._namespace import (
    Array,
    Namespace,
    is_array,
    is_integer,
    is_real_floating,
    to_dtype,
)
from ._shapes import broadcast_shapes, broadcasts_to, fmt, is_static

ALIGNMENTS = ("upper_left", "lower_right")
Window = tuple[int | None, int | None]
MASK_HINT = " (True = may attend); an additive float mask goes in bias="


def _at(func: str) -> str:
    return f"{func}: " if func else ""


def shape_of(name: str, x: Array, func: str = "") -> tuple[int, ...]:
    """``x.shape``; a ``ValueError`` when a dimension is unknown (``None`` or NaN)."""
    shape = tuple(x.shape)
    if not is_static(shape):
        raise ValueError(
            f"{_at(func)}{name} has shape {fmt(shape)} with unknown dimensions; attnspec "
            "checks and plans from static shapes (for Dask, call compute_chunk_sizes() first)"
        )
    return shape


def check_real_floating(name: str, x: Array, xp: Namespace, func: str = "") -> None:
    if not is_real_floating(xp, x.dtype):
        raise TypeError(f"{_at(func)}{name} must have a real floating dtype; got {x.dtype}")


def check_bool(name: str, x: Array | None, xp: Namespace, hint: str = "", func: str = "") -> None:
    if x is not None and x.dtype != xp.bool:
        raise TypeError(f"{_at(func)}{name} must be a bool array; got dtype {x.dtype}{hint}")


def _type_name(value: Any) -> str:
    """``bool`` / ``numpy.ndarray``: qualified unless built in (NumPy 2 names its scalar
    ``bool`` too, so "must be a bool; got bool" needs the module)."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else (
        f"{kind.__module__}.{kind.__qualname__}")


def as_flag(name: str, value: Any, func: str = "") -> bool:
    """A static bool: Python's, or NumPy's bool scalar (what ``np.any`` returns). Options
    that choose code paths or outputs must be static, so arrays are refused."""
    if isinstance(value, bool):
        return value
    kind = type(value)
    if kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"):
        return bool(value)
    raise TypeError(f"{_at(func)}{name} must be a bool; got {_type_name(value)}")


def check_flag(name: str, value: Any, func: str = "") -> None:
    """A Python (or NumPy scalar) bool: see :func:`as_flag`."""
    as_flag(name, value, func)


def as_int(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer (``np.int64`` included, through
    ``operator.index``) and not a bool; else ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return operator.index(value)


def check_size(name: str, n: object) -> int:
    """A static length such as ``lq``: a Python int >= 0."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{name} must be >= 0; got {n}")
    return operator.index(n)


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

    @property
    def heads(self) -> int:
        """Query heads over all batch entries: the score matrices one call computes."""
        n = self.hq
        for b in self.batch:
            n *= b
        return n


def attention_shape(query: Array, key: Array, value: Array, xp: Namespace) -> AttentionShape:
    shapes = {}
    for name, x in (("query", query), ("key", key), ("value", value)):
        if x.ndim < 3:
            raise ValueError(
                f"{name} must have shape (*batch, heads, length, head_dim); got {fmt(x.shape)}"
            )
        shapes[name] = shape_of(name, x)
        check_real_floating(name, x, xp)
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(
            "query, key and value must share one dtype; got "
            f"{query.dtype}, {key.dtype}, {value.dtype}"
        )
    *bq, hq, lq, dk = shapes["query"]
    *bk, hkv, lk, dk2 = shapes["key"]
    *bv, hv, lv, dv = shapes["value"]
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
    if hkv < 1:
        raise ValueError(
            f"key must have at least one head; got key shape {fmt(key.shape)} (0 heads)"
        )
    if hq % hkv:
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


def check_broadcast(name: str, x: Array | None, target: tuple[int, ...], what: str,
                    func: str = "") -> None:
    if x is not None and not broadcasts_to(shape_of(name, x, func), target):
        raise ValueError(
            f"{_at(func)}{name} of shape {fmt(x.shape)} does not broadcast to {what} "
            f"{fmt(target)}"
        )


def check_per_head(name: str, x: Array | None, shape: AttentionShape, xp: Namespace,
                   what: str) -> None:
    """A real floating input broadcastable to ``(*batch, Hq)`` (``sinks``, ``alibi_slopes``)."""
    if x is None:
        return
    if not is_real_floating(xp, x.dtype):
        raise TypeError(f"{name} must have a real floating dtype ({what}); got {x.dtype}")
    check_broadcast(name, x, (*shape.batch, shape.hq), "(*batch, Hq)")


def check_bias(bias: Array | None, xp: Namespace) -> None:
    if bias is not None and not is_real_floating(xp, bias.dtype):
        hint = " (a bool mask goes in mask=)" if bias.dtype == xp.bool else ""
        raise TypeError(f"bias must have a real floating dtype{hint}; got {bias.dtype}")


def check_lengths_shape(name: str, lengths: Array | None, batch: tuple[int, ...]) -> None:
    if lengths is not None and not broadcasts_to(shape_of(name, lengths), batch):
        raise ValueError(
            f"{name} of shape {fmt(lengths.shape)} must broadcast to the batch shape "
            f"{fmt(batch)} (one length per sequence)"
        )


def _python_ints(x: Any) -> list[int]:
    """The ints of a (nested) Python sequence, for a sign check before conversion."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return [int(x)]
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        return [n for item in x for n in _python_ints(item)]
    return []


def _clip_ints(x: Any, top: int) -> Any:
    """A (nested) sequence of ints, or an int, with every value clipped to ``top``."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return min(operator.index(x), top)
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        return [_clip_ints(item, top) for item in x]
    return x


def as_lengths(lengths: Any, name: str, xp: Namespace, device: Any, index_dtype: Any) -> Array:
    """``kv_lengths``/``q_lengths`` as an integer array of the index dtype.

    An int or a (nested) sequence of ints is static, so its sign is checked here; the values
    of an array are the caller's contract (docs/errors.md).
    """
    python_int = isinstance(lengths, numbers.Integral) and not isinstance(lengths, bool)
    sequence = isinstance(lengths, Sequence) and not isinstance(lengths, (str, bytes))
    if python_int or sequence:
        if any(n < 0 for n in _python_ints(lengths)):
            raise ValueError(f"{name} must be >= 0 (a number of positions); got {lengths!r}")
        # A length past the index dtype means "every position", as any length >= L does:
        # clipped, not an OverflowError (or an object array) from asarray.
        lengths = _clip_ints(lengths, int(xp.iinfo(index_dtype).max))
        try:
            lengths = xp.asarray(lengths, device=device)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{name} must be a rectangular sequence of ints; got {lengths!r} ({exc})"
            ) from None
    elif not is_array(lengths) or isinstance(lengths, numbers.Number):
        raise TypeError(f"{name} must be an integer array or int; got {type(lengths).__name__}")
    if not is_integer(xp, lengths.dtype):
        raise TypeError(f"{name} must have an integer dtype; got {lengths.dtype}")
    return to_dtype(xp, lengths, index_dtype)


def check_positive_real(name: str, value: Any, xp: Namespace) -> None:
    """A Python real > 0, or a 0-d real floating array (a value traced under ``jax.jit``),
    whose value is then the caller's contract."""
    if value is None:
        return
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not (math.isfinite(value) and value > 0):  # type: ignore[operator]  # Real: no ops
            raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        return
    if not is_array(value):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if value.ndim != 0:
        raise ValueError(
            f"{name} must be a number or a 0-d array; got an array of shape {fmt(value.shape)}"
        )
    check_real_floating(name, value, xp)


def check_dropout(dropout_p: Any, dropout_mask: Array | None) -> float:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"dropout_p must be a float in [0, 1); got {type(dropout_p).__name__}")
    if not 0.0 <= dropout_p < 1.0:  # type: ignore[operator]  # numbers.Real declares no <
        raise ValueError(f"dropout_p must be in [0, 1); got {dropout_p!r}")
    if dropout_p > 0.0 and dropout_mask is None:  # type: ignore[operator]
        raise ValueError(
            "dropout_p > 0 needs dropout_mask= (a bool keep-mask): the Array API standard has "
            f"no random numbers, so the caller draws them; got dropout_p={dropout_p!r} and "
            "dropout_mask=None"
        )
    return float(dropout_p)


def check_chunk_size(chunk_size: Any) -> int | tuple[int, int] | None:
    """``None``, an int >= 0 (0 = direct), or a ``(block_q, block_k)`` pair of ints >= 1;
    returned with Python ints."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool):
        raise TypeError("chunk_size must be an int, a (block_q, block_k) pair or None; got bool")
    single = as_int(chunk_size)
    if single is not None:
        if single < 0:
            raise ValueError(f"chunk_size must be >= 0 (0 = the direct path); got {single}")
        return single
    if isinstance(chunk_size, (tuple, list)) and len(chunk_size) == 2:
        block_q, block_k = (as_int(c) for c in chunk_size)
        if block_q is not None and block_k is not None:
            if min(block_q, block_k) < 1:
                raise ValueError(f"chunk_size blocks must be >= 1; got {(block_q, block_k)}")
            return (block_q, block_k)
    raise TypeError(
        f"chunk_size must be an int, a (block_q, block_k) pair or None; got {chunk_size!r}"
    )


def check_alignment(alignment: object) -> str:
    if not isinstance(alignment, str):
        raise TypeError(
            "alignment must be a str, 'upper_left' or 'lower_right'; got "
            f"{type(alignment).__name__}"
        )
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be 'upper_left' or 'lower_right'; got {alignment!r}")
    return alignment


def check_window(window: object) -> Window | None:
    """Validate ``window``: ``None`` or a ``(left, right)`` pair of ints >= 0 or ``None``."""
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValueError(
            "window must be a (left, right) pair of non-negative ints or None (unbounded); "
            f"got {window!r}"
        )
    sides = []
    for side, w in zip(("left", "right"), window, strict=True):
        if w is not None:
            if isinstance(w, bool) or not isinstance(w, numbers.Integral):
                raise TypeError(f"window {side} must be an int or None; got {type(w).__name__}")
            if w < 0:
                raise ValueError(
                    f"window {side} must be >= 0 (use None for unbounded, not -1); got {w}"
                )
            w = operator.index(w)
        sides.append(w)
    return (sides[0], sides[1])


def check_band_options(causal: object, window: object, alignment: object) -> Window | None:
    """Validate ``causal``, ``window`` and ``alignment``; returns the window as a tuple."""
    as_flag("causal", causal)
    check_alignment(alignment)
    return check_window(window)


def clip_window(window: Window | None, index: Any, xp: Namespace) -> Window | None:
    """Sides wider than the index dtype can hold clipped to its largest value: the band is
    the same (no two positions are further apart), and ``window=(None, 2**63)`` no longer
    wraps around in torch's int64 (all keys masked) or overflows JAX's int32."""
    if window is None:
        return None
    top = int(xp.iinfo(index).max)
    left, right = (None if w is None else min(w, top) for w in window)
    return (left, right)


def index_dtype(xp: Namespace, device: Any) -> Any:
    """The namespace's default integer dtype (what ``arange`` gives)."""
    return xp.arange(1, device=device).dtype
