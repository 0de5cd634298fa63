"""Argument checks: every failure names the argument, what was expected and the offending
shape, dtype or value (spec rule ATT-ARG-1; the full list is docs/errors.md). Checks read
types, shapes, dtypes and devices only, never array values, so they cost nothing under
``jax.jit`` and never force a Dask computation."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from ._namespace import (
    Array,
    Namespace,
    check_same_device,
    is_array,
    is_integer,
    is_real_floating,
    namespace_of,
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


def check_flag(name: str, value: Any, func: str = "") -> None:
    """A Python bool: options that choose code paths or outputs must be static."""
    if not isinstance(value, bool):
        raise TypeError(f"{_at(func)}{name} must be a bool; got {type(value).__name__}")


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
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool; got {type(causal).__name__}")
    check_alignment(alignment)
    return check_window(window)


def _scalar_array(x: Any) -> Any:
    """``x`` when it is an array (it then takes part in the namespace and device checks)."""
    return x if is_array(x) and not isinstance(x, numbers.Real) else None


#: Per-token integer options: where each query and key sits, and which sequence it is in.
TOKEN_OPTIONS = ("q_positions", "kv_positions", "q_segment_ids", "kv_segment_ids")

#: Values of ``scaled_dot_product_attention(implementation=...)``.
IMPLEMENTATIONS = ("portable", "native", "auto")


def check_implementation(implementation: object) -> str:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {', '.join(map(repr, IMPLEMENTATIONS))}"
                         f"; got {implementation!r}")
    return str(implementation)


@dataclass(frozen=True, slots=True)
class AttentionCall:
    """One validated call of :func:`attnspec.scaled_dot_product_attention`: the arrays,
    what validation derived from them, every option and the return flags. Routing, native
    dispatch and both portable paths read the call from here; a new option is one field
    (and its check in :func:`attention_call`).

    Options after ``value`` appear in the order :func:`portable_only` reports them; an
    option that a native kernel does not see (not in :data:`KERNEL_OPTIONS`) sends the
    call to the portable path whenever it is set (not ``None``/``False``).
    """

    xp: Namespace
    shape: AttentionShape
    device: Any
    query: Array
    key: Array
    value: Array
    mask: Array | None = None
    bias: Array | None = None
    softcap: Any = None  # a Python real, or a 0-d array
    sinks: Array | None = None  # one logit per (*batch, Hq) row, in the denominator only
    alibi_slopes: Array | None = None  # one slope per (*batch, Hq) head
    q_positions: Array | None = None  # (*batch, Lq) integers: causal/window/ALiBi use them
    kv_positions: Array | None = None  # (*batch, Lk)
    q_segment_ids: Array | None = None  # (*batch, Lq): packed varlen; negative = padding
    kv_segment_ids: Array | None = None  # (*batch, Lk)
    block_table: Array | None = None  # (*batch, max_pages); key/value already gathered
    score_mod: Any = None  # FlexAttention's score_mod(score, b, h, q_idx, kv_idx)
    mask_mod: Any = None  # FlexAttention's mask_mod(b, h, q_idx, kv_idx) -> bool
    window: Window | None = None  # None also for a window that masks nothing
    q_lengths: Array | None = None  # as an index-dtype array on the query's device
    dropout_mask: Array | None = None
    return_lse: bool = False
    return_weights: bool = False
    chunk_size: int | tuple[int, int] | None = None
    causal: bool = False
    alignment: str = "upper_left"
    scale: Any = None  # as given: None means the default 1/sqrt(Dk)
    kv_lengths: Array | None = None  # as an index-dtype array on the query's device
    dropout_p: float = 0.0
    implementation: str = "portable"


#: Fields of :class:`AttentionCall` a native kernel is given (or that only matter together
#: with another option: ``dropout_p`` needs ``dropout_mask``).
KERNEL_OPTIONS = frozenset({"xp", "shape", "device", "query", "key", "value", "causal",
                            "alignment", "scale", "kv_lengths", "dropout_p",
                            "implementation", "block_table"})
_PORTABLE_ONLY = tuple(f.name for f in fields(AttentionCall) if f.name not in KERNEL_OPTIONS)


def portable_only(call: AttentionCall) -> str | None:
    """The first option of ``call`` that only the portable path computes, if one is set."""
    for name in _PORTABLE_ONLY:
        value = getattr(call, name)
        if value is not None and value is not False:
            return name
    return None


def attention_call(arguments: Mapping[str, Any]) -> AttentionCall:
    """Every check of ``scaled_dot_product_attention``'s arguments, in one place.

    ``arguments``: every parameter of the public function by name (its ``locals()`` on
    entry, or ``inspect.signature(...).bind(...)`` with defaults applied).
    """
    # The checks of the newer input forms live beside (imported here: they use this
    # module's helpers).
    from ._validate_forms import check_mod, check_token_options, paged_pools

    a = arguments
    check_implementation(a["implementation"])
    query, key, value = a["query"], a["key"], a["value"]
    mask, bias, dropout_mask = a["mask"], a["bias"], a["dropout_mask"]
    kv_lengths, q_lengths = a["kv_lengths"], a["q_lengths"]
    arrays = {
        "query": query, "key": key, "value": value, "mask": mask, "bias": bias,
        "dropout_mask": dropout_mask, "kv_lengths": _scalar_array(kv_lengths),
        "q_lengths": _scalar_array(q_lengths), "scale": _scalar_array(a["scale"]),
        "softcap": _scalar_array(a["softcap"]), "sinks": a["sinks"],
        "alibi_slopes": a["alibi_slopes"], **{n: a[n] for n in TOKEN_OPTIONS},
        "block_table": a["block_table"],
    }
    xp = namespace_of(a["xp"], arrays, required=("query", "key", "value"))
    device = check_same_device(arrays)
    if a["block_table"] is not None:  # page pools -> the dense caches they describe
        key, value = paged_pools(a, xp, device)
        a = {**a, "key": key, "value": value}
    shape = attention_shape(query, key, value, xp)
    check_bool("mask", mask, xp, MASK_HINT)
    check_bool("dropout_mask", dropout_mask, xp)
    check_bias(bias, xp)
    for name, arr in (("mask", mask), ("bias", bias), ("dropout_mask", dropout_mask)):
        check_broadcast(name, arr, shape.scores, "the scores' shape (*batch, Hq, Lq, Lk)")
    check_per_head("sinks", a["sinks"], shape, xp, "one logit per row of each head")
    check_per_head("alibi_slopes", a["alibi_slopes"], shape, xp, "one slope per head")
    check_token_options(a, shape.lq, shape.lk, xp, shape.batch)
    check_mod("score_mod", a["score_mod"], "score_mod(score, b, h, q_idx, kv_idx) -> score")
    check_mod("mask_mod", a["mask_mod"], "mask_mod(b, h, q_idx, kv_idx) -> bool")
    check_positive_real("scale", a["scale"], xp)
    check_positive_real("softcap", a["softcap"], xp)
    dropout_p = check_dropout(a["dropout_p"], dropout_mask)
    check_chunk_size(a["chunk_size"])
    window = check_band_options(a["causal"], a["window"], a["alignment"])

    index = None if kv_lengths is None and q_lengths is None else index_dtype(xp, device)
    if kv_lengths is not None:
        kv_lengths = as_lengths(kv_lengths, "kv_lengths", xp, device, index)
        check_lengths_shape("kv_lengths", kv_lengths, shape.batch)
    if q_lengths is not None:
        q_lengths = as_lengths(q_lengths, "q_lengths", xp, device, index)
        check_lengths_shape("q_lengths", q_lengths, shape.batch)
    return AttentionCall(**{
        **a, "xp": xp, "shape": shape, "device": device, "dropout_p": dropout_p,
        "window": None if window == (None, None) else window, "kv_lengths": kv_lengths,
        "q_lengths": q_lengths,
    })


def index_dtype(xp: Namespace, device: Any) -> Any:
    """The namespace's default integer dtype (what ``arange`` gives)."""
    return xp.arange(1, device=device).dtype
