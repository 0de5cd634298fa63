"""A conformance case: what to compute, which rules it tests, and its inputs.

Inputs are made once, in NumPy float64, from a seed derived from the case ID (without the
dtype, so the float32 and float16 variants of a case see the same numbers), then rounded to
the case's dtype. Every implementation receives bit-identical inputs, and the golden values
are computed from the rounded inputs, so a case measures the implementation's arithmetic and
not the rounding of its inputs.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .case_inputs import Inputs
from .case_params import AttentionParams, MhaParams, Params, SoftmaxParams, params_for
from .input_kinds import (
    ALIBI,
    BIASES,
    ERRORS,
    LOGITS,
    MASK_MODS,
    MASKS,
    POISONS,
    POSITIONS,
    SCORE_MODS,
    SEGMENTS,
    SINKS,
    SOFTMAX_PATTERNS,
    SOFTMAX_WHERE,
    TRANSFORMS,
    kind,
)
from .precision import round_to

__all__ = ["ATTENTION_OPS", "SOFTMAX_OPS", "Case", "CaseKind", "Inputs", "make_inputs"]

SOFTMAX_OPS = ("softmax", "log_softmax", "logsumexp")
ATTENTION_OPS = ("attention", "mha")

#: Array arguments of attention, in the order adapters receive them.
ARRAY_ARGS = ("query", "key", "value", "mask", "bias", "kv_lengths", "q_lengths", "dropout_mask")


class CaseKind(str, enum.Enum):
    """What a case asks of an implementation, and so how it is run and judged."""

    VALUE = "value"  # one call, outputs graded against the golden
    ERROR = "error"  # an invalid call that must raise (``Case.expect`` names the exception)
    GRADIENT = "gradient"  # out and the gradients dq, dk, dv (dbias) graded
    DETERMINISM = "determinism"  # the same call repeated, results compared bit for bit
    INVARIANCE = "invariance"  # transformed inputs; the golden is transformed back
    CONSISTENCY = "consistency"  # further calls compared with the case's (consistency.py)


#: The default of ``Case.features`` and ``Case.expect``: derived from the parameters.
_DERIVED: Any = None


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
    params : Params
        Shapes and options, typed per family (``case_params.py``); a plain mapping is
        converted. It reads as the JSON mapping the report records.
    features : frozenset of str
        What the case needs from an implementation (see ``features.py``); by default derived
        from ``params``.
    expect : str
        ``"value"`` (graded against golden outputs) or the name of the exception class an
        invalid call must raise (``"TypeError"``, ``"ValueError"``); by default derived from
        ``params``.
    """

    id: str
    op: str
    rules: tuple[str, ...]
    dtype: str
    params: Params = field(hash=False)
    features: frozenset[str] = field(hash=False, default=_DERIVED)
    expect: str = _DERIVED
    base_seed: int = 0  # ``--seed``: mixed into every case's seed

    def __post_init__(self) -> None:
        params = params_for(self.op, self.params)
        object.__setattr__(self, "params", params)
        if self.features is None:
            object.__setattr__(self, "features", params.features())
        if self.expect is None:
            expect = params.expect if isinstance(params, AttentionParams) else "value"
            object.__setattr__(self, "expect", expect)

    @property
    def kind(self) -> CaseKind:
        p = self.params
        if self.expect != "value":
            return CaseKind.ERROR
        if not isinstance(p, AttentionParams):
            return CaseKind.VALUE
        if p.repeat:
            return CaseKind.DETERMINISM
        if p.backward:
            return CaseKind.GRADIENT
        if p.transform:
            return CaseKind.INVARIANCE
        if p.consistency:
            return CaseKind.CONSISTENCY
        return CaseKind.VALUE

    @property
    def backward(self) -> bool:
        """Whether the gradients are asked for (gradient cases, and determinism cases of
        the backward)."""
        return isinstance(self.params, AttentionParams) and bool(self.params.backward)

    @property
    def repeats(self) -> int:
        """How many times the call is made (a determinism case: more than once)."""
        p = self.params
        return max(int(p.repeat), 1) if isinstance(p, AttentionParams) and p.repeat else 1

    @property
    def seed(self) -> int:
        variant = self.id.rsplit("/", 1)[0]
        return (zlib.crc32(variant.encode()) ^ self.base_seed) & 0x7FFFFFFF

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "op": self.op, "rules": list(self.rules), "dtype": self.dtype,
            "params": self.params.to_json(), "features": sorted(self.features),
            "expect": self.expect, "seed": self.seed,
        }


def make_inputs(case: Case) -> Inputs:
    """The case's inputs as NumPy arrays (floats already rounded to the case dtype, held in
    float64) plus scalar options, ready for the golden run and for adapters.

    Returns an :class:`Inputs`: a mapping of the call's arguments (``query``, ``key``, ...,
    or ``x``/``where`` for the softmax family) and scalar options (``causal``,
    ``alignment``, ``window``, ``scale``, ``softcap``, ``dropout_p``). A gradient case also
    carries ``cotangent``, the cotangent of ``out`` (from its own stream of the case's seed,
    rounded to the case dtype); an invariance case its untransformed inputs (``base``).
    """
    rng = np.random.default_rng(case.seed)
    p = case.params
    if isinstance(p, SoftmaxParams):
        return _softmax_inputs(case, p, rng)
    if isinstance(p, MhaParams):
        return _mha_inputs(case, p, rng)
    assert isinstance(p, AttentionParams)
    return _attention_inputs(case, p, rng)


def _softmax_inputs(case: Case, p: SoftmaxParams, rng: np.random.Generator) -> Inputs:
    x = rng.standard_normal(p.shape) * (1.0 if p.magnitude is None else p.magnitude)
    if p.pattern is not None:
        kind(SOFTMAX_PATTERNS, "pattern", p.pattern).build(x, rng)
    inputs = Inputs({"x": round_to(x, case.dtype), "axis": -1 if p.axis is None else p.axis})
    if p.where is not None:
        inputs["x"], inputs["where"] = kind(SOFTMAX_WHERE, "where", p.where).build(
            inputs["x"], rng)
    return inputs


def _attention_inputs(case: Case, p: AttentionParams, rng: np.random.Generator) -> Inputs:
    batch, dv = p.batch, p.dv if p.dv is not None else p.dk
    q = rng.standard_normal((*batch, p.hq, p.lq, p.dk))
    k = rng.standard_normal((*batch, p.hkv, p.lk, p.dk))
    v = rng.standard_normal((*batch, p.hkv, p.lk, dv))
    kind(LOGITS, "logits", p.logits or "normal").build(q, k, rng)
    if p.magnitude is not None:
        q *= p.magnitude
    inputs = Inputs({"query": round_to(q, case.dtype), "key": round_to(k, case.dtype),
                     "value": round_to(v, case.dtype)})
    scores_shape = (*batch, p.hq, p.lq, p.lk)
    if p.mask is not None:
        inputs["mask"] = kind(MASKS, "mask", p.mask).build(scores_shape, rng)
    if p.bias is not None:
        bias = kind(BIASES, "bias", p.bias).build(scores_shape, rng)
        inputs["bias"] = round_to(bias, case.dtype)
    if p.sinks is not None:
        sinks = kind(SINKS, "sinks", p.sinks).build((*batch, p.hq), rng)
        inputs["sinks"] = round_to(sinks, case.dtype)
    if p.alibi is not None:
        slopes = kind(ALIBI, "alibi", p.alibi).build((*batch, p.hq), rng)
        inputs["alibi_slopes"] = round_to(slopes, case.dtype)
    for table, param in ((POSITIONS, "positions"), (SEGMENTS, "segments")):
        name = getattr(p, param)
        if name is not None:
            built = kind(table, param, name).build(tuple(batch), p.lq, p.lk, rng)
            inputs.update({n: np.asarray(x, dtype=np.int64) for n, x in built.items()})
    for table, param in ((SCORE_MODS, "score_mod"), (MASK_MODS, "mask_mod")):
        name = getattr(p, param)
        if name is not None:
            inputs[param] = kind(table, param, name).build()
    for name in ("kv_lengths", "q_lengths"):
        lengths = getattr(p, name)
        if lengths is not None:
            inputs[name] = np.asarray(lengths, dtype=np.int64).reshape(batch)
    if p.dropout_p:
        inputs["dropout_mask"] = rng.random(scores_shape) >= p.dropout_p
        inputs["dropout_p"] = float(p.dropout_p)
    for name in ("causal", "alignment", "window", "scale", "softcap"):
        if getattr(p, name) is not None:
            inputs[name] = getattr(p, name)
    if p.poison is not None:  # NaN/inf where the spec says they cannot matter, or must
        kind(POISONS, "poison", p.poison).build(inputs, rng)
    if p.transform is not None:
        inputs.base = inputs.copy()
        kind(TRANSFORMS, "transform", p.transform).build(inputs, p.shift, rng)
    if p.error is not None:
        kind(ERRORS, "error", p.error).build(inputs, case.dtype)
    if p.consistency is not None:
        from .consistency import CONSISTENCY

        inputs.variants = CONSISTENCY[p.consistency].variants(inputs)
    if p.backward:
        # The output cotangent of a gradient case: its own stream of the case's seed (the
        # inputs stay those of the forward case with the same parameters), rounded to the
        # case dtype like every input.
        cot = np.random.default_rng([case.seed, 1]).standard_normal((*batch, p.hq, p.lq, dv))
        inputs.cotangent = round_to(cot, case.dtype)
    return inputs


def _mha_inputs(case: Case, p: MhaParams, rng: np.random.Generator) -> Inputs:
    batch, lq, lk, embed, hq, hkv, dk = p.batch, p.lq, p.lk, p.embed, p.hq, p.hkv, p.dk
    width = embed ** -0.5

    def w(rows: int, cols: int) -> Any:
        return round_to(rng.standard_normal((rows, cols)) * width, case.dtype)

    x_q = round_to(rng.standard_normal((*batch, lq, embed)), case.dtype)
    x_kv = round_to(rng.standard_normal((*batch, lk, embed)), case.dtype)
    inputs = Inputs({
        "query": x_q, "key": x_kv if p.cross else x_q, "value": x_kv if p.cross else x_q,
        "w_q": w(embed, hq * dk), "w_k": w(embed, hkv * dk), "w_v": w(embed, hkv * dk),
        "w_o": w(hq * dk, embed), "num_heads": hq, "num_kv_heads": hkv,
    })
    if p.biases:
        for name, n in (("b_q", hq * dk), ("b_k", hkv * dk), ("b_v", hkv * dk), ("b_o", embed)):
            inputs[name] = round_to(rng.standard_normal(n) * 0.1, case.dtype)
    if p.causal:
        inputs["causal"] = True
    return inputs
