"""A conformance case: what to compute, which rules it tests, and its inputs.

Inputs are made once, in NumPy float64, from a seed derived from the case ID (without the
dtype, so the float32 and float16 variants of a case see the same numbers), then rounded to
the case's dtype. Every implementation receives bit-identical inputs, and the golden values
are computed from the rounded inputs, so a case measures the implementation's arithmetic and
not the rounding of its inputs.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .precision import round_to

__all__ = ["ATTENTION_OPS", "SOFTMAX_OPS", "Case", "make_inputs"]

SOFTMAX_OPS = ("softmax", "log_softmax", "logsumexp")
ATTENTION_OPS = ("attention", "mha")

#: Array arguments of attention, in the order adapters receive them.
ARRAY_ARGS = ("query", "key", "value", "mask", "bias", "kv_lengths", "q_lengths", "dropout_mask")


@dataclass(frozen=True)
class Case:
    """One conformance case.

    Attributes
    ----------
    id : str
        Stable, human-readable ID: ``<group>/<variant>/<dtype>``. ``--select`` patterns and
        xfail files match it.
    op : str
        ``"attention"``, ``"mha"``, ``"softmax"``, ``"log_softmax"`` or ``"logsumexp"``.
    rules : tuple of str
        The spec rule IDs this case tests.
    dtype : str
        ``"float64"``, ``"float32"``, ``"float16"`` or ``"bfloat16"``.
    params : mapping
        Shapes and options (JSON-serialisable); see :func:`make_inputs`.
    features : frozenset of str
        What the case needs from an implementation (see ``features.py``).
    expect : str
        ``"value"`` (graded against golden outputs) or the name of the exception class an
        invalid call must raise (``"TypeError"``, ``"ValueError"``).
    """

    id: str
    op: str
    rules: tuple[str, ...]
    dtype: str
    params: Mapping[str, Any] = field(hash=False)
    features: frozenset[str] = field(hash=False, default=frozenset())
    expect: str = "value"
    base_seed: int = 0  # ``--seed``: mixed into every case's seed

    @property
    def seed(self) -> int:
        variant = self.id.rsplit("/", 1)[0]
        return (zlib.crc32(variant.encode()) ^ self.base_seed) & 0x7FFFFFFF

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "op": self.op, "rules": list(self.rules), "dtype": self.dtype,
            "params": dict(self.params), "features": sorted(self.features),
            "expect": self.expect, "seed": self.seed,
        }


def make_inputs(case: Case) -> dict[str, Any]:
    """The case's inputs as NumPy arrays (floats already rounded to the case dtype, held in
    float64) plus scalar options, ready for the golden run and for adapters.

    Returns a dict with the array arguments present in the case (``query``, ``key``, ...,
    or ``x``/``where`` for the softmax family) and the scalar options (``causal``,
    ``alignment``, ``window``, ``scale``, ``softcap``, ``dropout_p``). A gradient case
    (``params["backward"]``) also has ``__cotangent__``, the cotangent of ``out`` (from
    its own stream of the case's seed, rounded to the case dtype); keys starting with
    ``__`` are not arguments of the call.
    """
    rng = np.random.default_rng(case.seed)
    if case.op in SOFTMAX_OPS:
        return _softmax_inputs(case, rng)
    if case.op == "mha":
        return _mha_inputs(case, rng)
    return _attention_inputs(case, rng)


def _softmax_inputs(case: Case, rng: np.random.Generator) -> dict[str, Any]:
    p = case.params
    shape = tuple(p["shape"])
    x = rng.standard_normal(shape) * p.get("magnitude", 1.0)
    pattern = p.get("pattern")
    if pattern == "neg_inf":
        x[rng.random(shape) < 0.3] = -math.inf
    elif pattern == "empty_row":
        x[..., 0, :] = -math.inf
    elif pattern == "nan":
        x[..., 0, 0] = math.nan
    elif pattern == "pos_inf":
        x[..., 0, 0] = math.inf
    inputs: dict[str, Any] = {"x": round_to(x, case.dtype), "axis": p.get("axis", -1)}
    if p.get("where"):
        where = rng.random(shape) < 0.6
        if p.get("where") == "poisoned":
            x_bad = inputs["x"].copy()
            x_bad[~where] = np.where(rng.random(int((~where).sum())) < 0.5, math.nan, math.inf)
            inputs["x"] = x_bad
        where[..., -1, :] = False  # one excluded row: an empty row through where
        inputs["where"] = where
    return inputs


def _attention_inputs(case: Case, rng: np.random.Generator) -> dict[str, Any]:
    p = case.params
    batch = tuple(p.get("batch", ()))
    hq, hkv, lq, lk = p["hq"], p["hkv"], p["lq"], p["lk"]
    dk, dv = p["dk"], p.get("dv", p["dk"])
    q = rng.standard_normal((*batch, hq, lq, dk))
    k = rng.standard_normal((*batch, hkv, lk, dk))
    v = rng.standard_normal((*batch, hkv, lk, dv))
    logits = p.get("logits", "normal")
    if logits == "all_equal":
        q[...] = 0.0
    elif logits == "one_dominant":
        # Positive queries and an all-8 key 0: s[i, 0] ~ 6 sqrt(Dk) dwarfs every other score.
        q[...] = np.abs(q)
        k[..., 0, :] = 8.0
    elif logits == "near_max":
        # Entries a = sqrt(6e4 / sqrt(Dk)) make q.k * scale ~ 5.7e4-6e4, close to float16's
        # max (65504): this overflows where scores are held in float16, not in float32.
        a = math.sqrt(6.0e4 / math.sqrt(dk))
        q[...] = a
        k[...] = np.where(rng.random(k.shape) < 0.5, a, 0.9 * a)
    magnitude = p.get("magnitude")
    if magnitude is not None:
        q *= magnitude
    inputs: dict[str, Any] = {
        "query": round_to(q, case.dtype),
        "key": round_to(k, case.dtype),
        "value": round_to(v, case.dtype),
    }
    scores_shape = (*batch, hq, lq, lk)
    mask = _mask(p.get("mask"), scores_shape, rng)
    if mask is not None:
        inputs["mask"] = mask
    bias = _bias(p.get("bias"), scores_shape, rng)
    if bias is not None:
        inputs["bias"] = round_to(bias, case.dtype)
    for name in ("kv_lengths", "q_lengths"):
        if p.get(name) is not None:
            inputs[name] = np.asarray(p[name], dtype=np.int64).reshape(batch)
    if p.get("dropout_p"):
        inputs["dropout_mask"] = rng.random(scores_shape) >= p["dropout_p"]
        inputs["dropout_p"] = float(p["dropout_p"])
    for name in ("causal", "alignment", "window", "scale", "softcap"):
        if p.get(name) is not None:
            inputs[name] = tuple(p[name]) if name == "window" else p[name]
    _poison(case, inputs, rng)
    _transform(case, inputs, rng)
    _invalid(case, inputs)
    if p.get("backward"):
        # The output cotangent of a gradient case: its own stream of the case's seed (the
        # inputs stay those of the forward case with the same parameters), rounded to the
        # case dtype like every input.
        cot = np.random.default_rng([case.seed, 1]).standard_normal((*batch, hq, lq, dv))
        inputs["__cotangent__"] = round_to(cot, case.dtype)
    return inputs


def _invalid(case: Case, inputs: dict[str, Any]) -> None:
    """Error cases (ATT-ARG-1, ATT-DTYPE-1): a call the implementation must refuse."""
    kind = case.params.get("error")
    if kind is None:
        return
    if kind == "mixed_dtypes":
        # key in a different dtype from query and value
        inputs["__dtypes__"] = {"key": "float64" if case.dtype != "float64" else "float32"}
    elif kind == "head_dim_mismatch":
        inputs["key"] = np.concatenate([inputs["key"], inputs["key"][..., :1]], axis=-1)
    elif kind == "heads_not_divisible":
        for name in ("key", "value"):
            x = inputs[name]
            inputs[name] = np.concatenate([x, x[..., :1, :, :]], axis=-3)  # Hkv + 1 heads
    else:
        raise ValueError(f"unknown error kind {kind!r}")


def _transform(case: Case, inputs: dict[str, Any], rng: np.random.Generator) -> None:
    """Metamorphic cases (ATT-PROP-3/4): the implementation sees transformed inputs, the
    golden is computed from the originals (kept under ``__base__``) and transformed back."""
    kind = case.params.get("transform")
    if kind is None:
        return
    base = dict(inputs)
    inputs["__base__"] = base
    if kind == "permute":
        perm = rng.permutation(inputs["key"].shape[-2])
        inputs["__permutation__"] = perm
        for name in ("key", "value"):
            inputs[name] = base[name][..., perm, :]
        for name in ("mask", "bias", "dropout_mask"):
            if name in base:
                inputs[name] = base[name][..., perm]
    elif kind == "shift":
        # A constant exactly representable in every dtype, added through the bias.
        scores = (*inputs["query"].shape[:-1], inputs["key"].shape[-2])
        inputs["bias"] = np.full(scores, float(case.params["shift"]))
    else:
        raise ValueError(f"unknown transform {kind!r}")


def _mask(kind: str | None, shape: tuple[int, ...], rng: np.random.Generator) -> Any:
    if kind is None:
        return None
    if kind == "dense":
        return rng.random(shape) < 0.85
    if kind == "dense_b1":  # (*batch, 1, Lq, Lk): one mask for every head
        return rng.random((*shape[:-3], 1, *shape[-2:])) < 0.85
    if kind == "dense_qk":  # (Lq, Lk): one mask for every batch entry and head
        return rng.random(shape[-2:]) < 0.85
    if kind == "sparse":
        mask = rng.random(shape) < 0.15
        mask[..., 0] = True  # sparse, but no row empty by accident
        return mask
    if kind == "empty_rows":
        mask = rng.random(shape) < 0.7
        mask[..., ::2, :] = False  # every other query row attends nothing
        return mask
    if kind == "single_key":
        idx = rng.integers(0, shape[-1], size=shape[:-1])
        return np.arange(shape[-1]) == idx[..., None]
    if kind == "key_columns":
        # whole keys masked for every query: the positions that poison tests fill with NaN
        cols = rng.random(shape[-1]) < 0.4
        cols[0] = False
        return np.broadcast_to(~cols, shape).copy()
    raise ValueError(f"unknown mask kind {kind!r}")


def _bias(kind: str | None, shape: tuple[int, ...], rng: np.random.Generator) -> Any:
    if kind is None:
        return None
    if kind == "random_qk":  # (Lq, Lk): broadcast over batch and heads
        return rng.standard_normal(shape[-2:])
    bias = rng.standard_normal(shape)
    if kind == "key_columns":
        # whole keys at -inf for every query (the mask kind "key_columns" as a bias)
        cols = rng.random(shape[-1]) < 0.4
        cols[0] = False
        bias[..., cols] = -math.inf
    elif kind == "neg_inf":
        bias[rng.random(shape) < 0.3] = -math.inf
        bias[..., 0] = 0.0
    elif kind == "row_neg_inf":
        bias[..., 0, :] = -math.inf  # query row 0 attends nothing
    elif kind != "random":
        raise ValueError(f"unknown bias kind {kind!r}")
    return bias


def _poison(case: Case, inputs: dict[str, Any], rng: np.random.Generator) -> None:
    """NaN/inf where the spec says they cannot matter (ATT-LEAK-1/2) or must (ATT-NAN-1)."""
    kind = case.params.get("poison")
    if kind is None:
        return
    bad = [math.nan, math.inf, -math.inf]
    if kind == "scores":
        # Keys masked for every query get NaN/inf K rows: q.k is non-finite exactly where
        # masked. The bias gets +-inf/NaN at masked positions too (where a mask masks them;
        # a bias that masks by -inf keeps its -inf).
        keep = inputs["mask"] if "mask" in inputs else inputs["bias"] > -math.inf
        masked_keys = ~keep.any(axis=tuple(range(keep.ndim - 1)))
        k = inputs["key"].copy()
        k[..., masked_keys, :] = bad[0]
        k[..., masked_keys, 0] = bad[1]
        inputs["key"] = k
        if "bias" in inputs and "mask" in inputs:
            b = inputs["bias"].copy()
            b[~keep] = rng.choice(bad, size=int((~keep).sum()))
            inputs["bias"] = b
    elif kind == "kv":
        lengths = inputs["kv_lengths"]
        j = np.arange(inputs["key"].shape[-2])
        padded = (j >= lengths[..., None])[..., None, :, None]  # (*batch, 1, Lk, 1)
        for name, fill in (("key", math.nan), ("value", math.inf)):
            x = inputs[name]
            inputs[name] = np.where(np.broadcast_to(padded, (*x.shape[:-1], 1)), fill, x)
    elif kind == "query_nan":
        # One entry of query row 0 (first batch entry and head) is NaN: every score of that
        # row is NaN, and the row must be NaN in out and lse (ATT-NAN-1).
        q = inputs["query"].copy()
        q[(0,) * (q.ndim - 1) + (0,)] = math.nan
        inputs["query"] = q
    elif kind in ("nan", "pos_inf"):
        # One attended score of row (0, 0) becomes NaN / +inf through the bias.
        shape = (*inputs["query"].shape[:-1], inputs["key"].shape[-2])
        b = inputs.get("bias", np.zeros(shape))
        b = np.broadcast_to(b, shape).copy()
        b[(0,) * (len(shape) - 1) + (0,)] = math.nan if kind == "nan" else math.inf
        inputs["bias"] = b
    else:
        raise ValueError(f"unknown poison kind {kind!r}")


def _mha_inputs(case: Case, rng: np.random.Generator) -> dict[str, Any]:
    p = case.params
    batch, lq, lk, embed = tuple(p.get("batch", ())), p["lq"], p["lk"], p["embed"]
    hq, hkv, dk = p["hq"], p["hkv"], p["dk"]
    width = embed ** -0.5

    def w(rows: int, cols: int) -> Any:
        return round_to(rng.standard_normal((rows, cols)) * width, case.dtype)

    x_q = round_to(rng.standard_normal((*batch, lq, embed)), case.dtype)
    x_kv = round_to(rng.standard_normal((*batch, lk, embed)), case.dtype)
    inputs: dict[str, Any] = {
        "query": x_q, "key": x_kv if p.get("cross") else x_q,
        "value": x_kv if p.get("cross") else x_q,
        "w_q": w(embed, hq * dk), "w_k": w(embed, hkv * dk), "w_v": w(embed, hkv * dk),
        "w_o": w(hq * dk, embed), "num_heads": hq, "num_kv_heads": hkv,
    }
    if p.get("biases"):
        for name, n in (("b_q", hq * dk), ("b_k", hkv * dk), ("b_v", hkv * dk), ("b_o", embed)):
            inputs[name] = round_to(rng.standard_normal(n) * 0.1, case.dtype)
    if p.get("causal"):
        inputs["causal"] = True
    return inputs
