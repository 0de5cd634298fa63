"""One validated call of :func:`attnspec.scaled_dot_product_attention`
(:class:`AttentionCall`) and the function that builds it from the arguments
(:func:`attention_call`): every check in one place, in the order the errors are raised.
The checks themselves are in :mod:`._validate` (the dense arguments) and
:mod:`._validate_forms` (positions, segments, pages, mods)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ._namespace import Array, Namespace, check_same_device, is_array, namespace_of
from ._validate import (
    MASK_HINT,
    AttentionShape,
    Window,
    as_flag,
    as_lengths,
    attention_shape,
    check_band_options,
    check_bias,
    check_bool,
    check_broadcast,
    check_chunk_size,
    check_dropout,
    check_lengths_shape,
    check_per_head,
    check_positive_real,
    clip_window,
    index_dtype,
)
from ._validate_forms import check_mod, check_token_options, paged_pools


def _scalar_array(x: Any) -> Any:
    """``x`` when it is an array (it then takes part in the namespace and device checks)."""
    return x if is_array(x) and not isinstance(x, numbers.Real) else None


#: Per-token integer options: where each query and key sits, and which sequence it is in.
TOKEN_OPTIONS = ("q_positions", "kv_positions", "q_segment_ids", "kv_segment_ids")

#: Values of ``scaled_dot_product_attention(implementation=...)``.
IMPLEMENTATIONS = ("portable", "native", "auto")


def check_implementation(implementation: object) -> str:
    if not isinstance(implementation, str) or implementation not in IMPLEMENTATIONS:
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
    chunk_size = check_chunk_size(a["chunk_size"])
    window = check_band_options(a["causal"], a["window"], a["alignment"])
    flags = {n: as_flag(n, a[n]) for n in ("causal", "return_lse", "return_weights")}

    index = None
    if window is not None or kv_lengths is not None or q_lengths is not None:
        index = index_dtype(xp, device)
    window = clip_window(window, index, xp)
    if kv_lengths is not None:
        kv_lengths = as_lengths(kv_lengths, "kv_lengths", xp, device, index)
        check_lengths_shape("kv_lengths", kv_lengths, shape.batch)
    if q_lengths is not None:
        q_lengths = as_lengths(q_lengths, "q_lengths", xp, device, index)
        check_lengths_shape("q_lengths", q_lengths, shape.batch)
    return AttentionCall(**{
        **a, **flags, "xp": xp, "shape": shape, "device": device, "dropout_p": dropout_p,
        "chunk_size": chunk_size,
        "window": None if window == (None, None) else window, "kv_lengths": kv_lengths,
        "q_lengths": q_lengths,
    })
