"""The named kinds of input a case can ask for - masks, biases, logits, poison, transforms,
invalid calls and the softmax patterns - each with what it needs from an implementation
(``features``, see ``features.py``) beside the code that builds it.

A case's required features and its inputs are both read from these entries
(``case_params.py`` and ``cases.make_inputs``), so a new kind cannot be built without saying
what it needs, and an implementation is never handed a case it did not declare it takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import input_forms as forms
from . import mods
from .case_inputs import Inputs

__all__ = ["ALIBI", "BIASES", "ERRORS", "LOGITS", "MASKS", "MASK_MODS", "POISONS", "POSITIONS",
           "SCORE_MODS", "SEGMENTS", "SINKS", "SOFTMAX_PATTERNS", "SOFTMAX_WHERE", "TRANSFORMS",
           "Kind", "kind"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Kind:
    """One named kind: the features a case with it needs, and its builder.

    ``expect`` is the exception an invalid call of this kind must raise (error kinds only).
    """

    features: frozenset[str]
    build: Callable[..., Any]
    expect: str = "value"


def kind(table: dict[str, Kind], field: str, name: str) -> Kind:
    """The entry ``name`` of ``table``, or a ValueError naming the case parameter."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {field} kind {name!r}; expected one of "
                         f"{sorted(table)}") from None


def _f(*names: str) -> frozenset[str]:
    return frozenset(names)


# -- masks: build(scores_shape, rng) -> bool array, True = may attend -------------------------

def _dense(shape: Shape, rng: np.random.Generator) -> Any:
    return rng.random(shape) < 0.85


def _dense_b1(shape: Shape, rng: np.random.Generator) -> Any:
    return rng.random((*shape[:-3], 1, *shape[-2:])) < 0.85  # one mask for every head


def _dense_qk(shape: Shape, rng: np.random.Generator) -> Any:
    return rng.random(shape[-2:]) < 0.85  # one mask for every batch entry and head


def _sparse(shape: Shape, rng: np.random.Generator) -> Any:
    mask = rng.random(shape) < 0.15
    mask[..., 0] = True  # sparse, but no row empty by accident
    return mask


def _empty_rows(shape: Shape, rng: np.random.Generator) -> Any:
    mask = rng.random(shape) < 0.7
    mask[..., ::2, :] = False  # every other query row attends nothing
    return mask


def _single_key(shape: Shape, rng: np.random.Generator) -> Any:
    idx = rng.integers(0, shape[-1], size=shape[:-1])
    return np.arange(shape[-1]) == idx[..., None]


def _masked_columns(shape: Shape, rng: np.random.Generator) -> Any:
    cols = rng.random(shape[-1]) < 0.4
    cols[0] = False
    return cols


def _key_columns(shape: Shape, rng: np.random.Generator) -> Any:
    # whole keys masked for every query: the positions that poison tests fill with NaN
    return np.broadcast_to(~_masked_columns(shape, rng), shape).copy()


MASKS: dict[str, Kind] = {
    "dense": Kind(_f("mask"), _dense),
    "dense_b1": Kind(_f("mask"), _dense_b1),
    "dense_qk": Kind(_f("mask"), _dense_qk),
    "sparse": Kind(_f("mask"), _sparse),
    "empty_rows": Kind(_f("mask", "empty_rows"), _empty_rows),
    "single_key": Kind(_f("mask"), _single_key),
    "key_columns": Kind(_f("mask"), _key_columns),
}


# -- biases: build(scores_shape, rng) -> float array ------------------------------------------

def _random(shape: Shape, rng: np.random.Generator) -> Any:
    return rng.standard_normal(shape)


def _random_qk(shape: Shape, rng: np.random.Generator) -> Any:
    return rng.standard_normal(shape[-2:])  # (Lq, Lk): broadcast over batch and heads


def _bias_key_columns(shape: Shape, rng: np.random.Generator) -> Any:
    # whole keys at -inf for every query (the mask kind "key_columns" as a bias)
    bias = rng.standard_normal(shape)
    bias[..., _masked_columns(shape, rng)] = -math.inf
    return bias


def _neg_inf(shape: Shape, rng: np.random.Generator) -> Any:
    bias = rng.standard_normal(shape)
    bias[rng.random(shape) < 0.3] = -math.inf
    bias[..., 0] = 0.0
    return bias


def _row_neg_inf(shape: Shape, rng: np.random.Generator) -> Any:
    bias = rng.standard_normal(shape)
    bias[..., 0, :] = -math.inf  # query row 0 attends nothing
    return bias


MASKING_BIAS = _f("bias", "bias_neg_inf")
BIASES: dict[str, Kind] = {
    "random": Kind(_f("bias"), _random),
    "random_qk": Kind(_f("bias"), _random_qk),
    "key_columns": Kind(MASKING_BIAS, _bias_key_columns),
    "neg_inf": Kind(MASKING_BIAS, _neg_inf),
    "row_neg_inf": Kind(MASKING_BIAS | {"empty_rows"}, _row_neg_inf),
}


# -- sinks (ATT-SINK-1): build((*batch, Hq), rng) -> one logit per row of each head ---------

def _sinks_random(shape: Shape, rng: np.random.Generator) -> Any:
    return rng.standard_normal(shape) * 2.0


def _sinks_per_head(shape: Shape, rng: np.random.Generator) -> Any:
    return rng.standard_normal(shape[-1:]) * 2.0  # (Hq,): one per head, broadcast over batch


def _sinks_large(shape: Shape, rng: np.random.Generator) -> Any:
    # exp(30) ~ 1e13 overflows float16 (and exp(s) of every score is tiny beside it): a
    # kernel that adds exp(sink) without the row max gets inf, or loses every weight.
    return 30.0 + rng.random(shape)


SINKS: dict[str, Kind] = {
    "random": Kind(_f("sinks"), _sinks_random),
    "per_head": Kind(_f("sinks"), _sinks_per_head),
    "large": Kind(_f("sinks", "extreme"), _sinks_large),
}


# -- ALiBi slopes (ATT-ALIBI-1): build((*batch, Hq), rng) -> one slope per head ------------

def _alibi_geometric(shape: Shape, rng: np.random.Generator) -> Any:
    # The ALiBi paper's slopes 2^(-8 h / H), h = 1..H, one per head (exact in every dtype).
    hq = shape[-1]
    return 2.0 ** (-8.0 * np.arange(1, hq + 1) / hq)


def _alibi_random(shape: Shape, rng: np.random.Generator) -> Any:
    return rng.random(shape)  # per batch entry and head


ALIBI: dict[str, Kind] = {
    "geometric": Kind(_f("alibi"), _alibi_geometric),
    "random": Kind(_f("alibi"), _alibi_random),
}


# -- positions (ATT-POS-1): build(batch, lq, lk, rng) -> {"q_positions": ..., ...} ---------

POSITIONS: dict[str, Kind] = {
    "prefill_offset": Kind(_f("positions"), forms.prefill_offset),
    "holes": Kind(_f("positions"), forms.holes),
}


# -- segments (ATT-SEG-1): build(batch, lq, lk, rng) -> q/kv segment ids --------------------

SEGMENTS: dict[str, Kind] = {
    "packed": Kind(_f("segments", "empty_rows"), forms.packed),
    "scattered": Kind(_f("segments", "empty_rows"), forms.scattered),
}


# -- FlexAttention mods (ATT-MOD-1): build() -> the callable (conformance/mods.py) -----------

def _returns(mod: Callable[..., Any]) -> Callable[[], Any]:
    return lambda: mod


SCORE_MODS: dict[str, Kind] = {name: Kind(_f("score_mod"), _returns(mod))
                               for name, mod in mods.SCORE_MODS.items()}
MASK_MODS: dict[str, Kind] = {
    "stripes": Kind(_f("mask_mod"), _returns(mods.stripes)),
    "prefix_lm": Kind(_f("mask_mod"), _returns(mods.prefix_lm)),
    "batch_head": Kind(_f("mask_mod", "empty_rows"), _returns(mods.batch_head)),
}


# -- logits: build(q, k, rng) edits the float64 query and key in place -----------------------

def _all_equal(q: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> None:
    q[...] = 0.0


def _one_dominant(q: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> None:
    # Positive queries and an all-8 key 0: s[i, 0] ~ 6 sqrt(Dk) dwarfs every other score.
    q[...] = np.abs(q)
    k[..., 0, :] = 8.0


def _near_max(q: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> None:
    # Entries a = sqrt(6e4 / sqrt(Dk)) make q.k * scale ~ 5.7e4-6e4, close to float16's
    # max (65504): this overflows where scores are held in float16, not in float32.
    a = math.sqrt(6.0e4 / math.sqrt(q.shape[-1]))
    q[...] = a
    k[...] = np.where(rng.random(k.shape) < 0.5, a, 0.9 * a)


LOGITS: dict[str, Kind] = {
    "normal": Kind(_f(), lambda q, k, rng: None),
    "all_equal": Kind(_f(), _all_equal),
    "one_dominant": Kind(_f(), _one_dominant),
    "near_max": Kind(_f("extreme"), _near_max),
}


# -- poison (ATT-LEAK-1/2, ATT-NAN-1): build(inputs, rng) edits the inputs -------------------

_BAD = (math.nan, math.inf, -math.inf)


def _poison_scores(inputs: Inputs, rng: np.random.Generator) -> None:
    # Keys masked for every query get NaN/inf K rows: q.k is non-finite exactly where
    # masked. The bias gets +-inf/NaN at masked positions too (where a mask masks them;
    # a bias that masks by -inf keeps its -inf).
    keep = inputs["mask"] if "mask" in inputs else inputs["bias"] > -math.inf
    masked_keys = ~keep.any(axis=tuple(range(keep.ndim - 1)))
    k = inputs["key"].copy()
    k[..., masked_keys, :] = _BAD[0]
    k[..., masked_keys, 0] = _BAD[1]
    inputs["key"] = k
    if "bias" in inputs and "mask" in inputs:
        b = inputs["bias"].copy()
        b[~keep] = rng.choice(_BAD, size=int((~keep).sum()))
        inputs["bias"] = b


def _poison_kv(inputs: Inputs, rng: np.random.Generator) -> None:
    lengths = inputs["kv_lengths"]
    j = np.arange(inputs["key"].shape[-2])
    padded = (j >= lengths[..., None])[..., None, :, None]  # (*batch, 1, Lk, 1)
    for name, fill in (("key", math.nan), ("value", math.inf)):
        x = inputs[name]
        inputs[name] = np.where(np.broadcast_to(padded, (*x.shape[:-1], 1)), fill, x)


def _query_nan(inputs: Inputs, rng: np.random.Generator) -> None:
    # One entry of query row 0 (first batch entry and head) is NaN: every score of that
    # row is NaN, and the row must be NaN in out and lse (ATT-NAN-1).
    q = inputs["query"].copy()
    q[(0,) * (q.ndim - 1) + (0,)] = math.nan
    inputs["query"] = q


def _attended(value: float) -> Callable[[Inputs, np.random.Generator], None]:
    def build(inputs: Inputs, rng: np.random.Generator) -> None:
        # One attended score of row (0, 0) becomes NaN / +inf through the bias.
        shape = (*inputs["query"].shape[:-1], inputs["key"].shape[-2])
        b = np.broadcast_to(inputs.get("bias", np.zeros(shape)), shape).copy()
        b[(0,) * (len(shape) - 1) + (0,)] = value
        inputs["bias"] = b
    return build


POISONS: dict[str, Kind] = {
    "scores": Kind(_f("poison_scores"), _poison_scores),
    "kv": Kind(_f("poison_kv"), _poison_kv),
    "segments": Kind(_f("poison_kv", "segments"), forms.poison_segments),
    "query_nan": Kind(_f("nonfinite"), _query_nan),
    "nan": Kind(_f("nonfinite", "bias"), _attended(math.nan)),
    "pos_inf": Kind(_f("nonfinite", "bias"), _attended(math.inf)),
}


# -- transforms (ATT-PROP-3/4): build(inputs, shift, rng) -------------------------------------
# The implementation sees the transformed inputs; the golden is computed from the originals
# (``Inputs.base``) and transformed back.

def _permute(inputs: Inputs, shift: float | None, rng: np.random.Generator) -> None:
    base = inputs.originals
    perm = rng.permutation(inputs["key"].shape[-2])
    inputs.permutation = perm
    for name in ("key", "value"):
        inputs[name] = base[name][..., perm, :]
    for name in ("mask", "bias", "dropout_mask"):
        if name in base:
            inputs[name] = base[name][..., perm]


def _shift(inputs: Inputs, shift: float | None, rng: np.random.Generator) -> None:
    if shift is None:
        raise ValueError("a 'shift' transform needs the case parameter 'shift'")
    # A constant exactly representable in every dtype, added through the bias.
    scores = (*inputs["query"].shape[:-1], inputs["key"].shape[-2])
    inputs["bias"] = np.full(scores, float(shift))


TRANSFORMS: dict[str, Kind] = {
    "permute": Kind(_f(), _permute),
    "shift": Kind(_f("bias"), _shift),
    "paged": Kind(_f("paged"), forms.paged),
}


# -- invalid calls (ATT-ARG-1, ATT-DTYPE-1): build(inputs, dtype) -----------------------------

def _mixed_dtypes(inputs: Inputs, dtype: str) -> None:
    inputs.dtypes["key"] = "float64" if dtype != "float64" else "float32"


def _head_dim_mismatch(inputs: Inputs, dtype: str) -> None:
    inputs["key"] = np.concatenate([inputs["key"], inputs["key"][..., :1]], axis=-1)


def _heads_not_divisible(inputs: Inputs, dtype: str) -> None:
    for name in ("key", "value"):
        x = inputs[name]
        inputs[name] = np.concatenate([x, x[..., :1, :, :]], axis=-3)  # Hkv + 1 heads


ERRORS: dict[str, Kind] = {
    "mixed_dtypes": Kind(_f("arg_errors"), _mixed_dtypes, "TypeError"),
    "head_dim_mismatch": Kind(_f("arg_errors"), _head_dim_mismatch, "ValueError"),
    "heads_not_divisible": Kind(_f("arg_errors"), _heads_not_divisible, "ValueError"),
}


# -- the softmax family: patterns build(x, rng) edit x; where build(x, rng) -> (x, where) -----

def _sm_neg_inf(x: np.ndarray, rng: np.random.Generator) -> None:
    x[rng.random(x.shape) < 0.3] = -math.inf


def _sm_empty_row(x: np.ndarray, rng: np.random.Generator) -> None:
    x[..., 0, :] = -math.inf


def _sm_one(value: float) -> Callable[[np.ndarray, np.random.Generator], None]:
    def build(x: np.ndarray, rng: np.random.Generator) -> None:
        x[..., 0, 0] = value
    return build


SOFTMAX_PATTERNS: dict[str, Kind] = {
    "neg_inf": Kind(_f(), _sm_neg_inf),
    "empty_row": Kind(_f("empty_rows"), _sm_empty_row),
    "nan": Kind(_f("nonfinite"), _sm_one(math.nan)),
    "pos_inf": Kind(_f("nonfinite"), _sm_one(math.inf)),
}


def _where(poisoned: bool) -> Callable[[np.ndarray, np.random.Generator], Any]:
    def build(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        where = rng.random(x.shape) < 0.6
        if poisoned:
            x = x.copy()
            x[~where] = np.where(rng.random(int((~where).sum())) < 0.5, math.nan, math.inf)
        where[..., -1, :] = False  # one excluded row: an empty row through where
        return x, where
    return build


SOFTMAX_WHERE: dict[str, Kind] = {
    "plain": Kind(_f("where"), _where(poisoned=False)),
    "poisoned": Kind(_f("where", "nonfinite"), _where(poisoned=True)),
}
