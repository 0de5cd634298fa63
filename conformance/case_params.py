"""A case's parameters, typed: one frozen object per case family (attention, softmax, mha).

Both what a case needs from an implementation (:meth:`features`) and its inputs
(``cases.make_inputs``) are derived from these objects and from the named kinds in
``input_kinds.py``, so the two cannot drift. The objects read as the JSON mapping the report
records (``case.params["lq"]``, ``dict(case.params)``): only the parameters a case sets are in
it, as before, so case IDs and reports are unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

import attnspec

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
    Kind,
    kind,
)

__all__ = ["AttentionParams", "MhaParams", "Params", "SoftmaxParams", "params_for"]

#: Logit magnitudes from which a case is about extreme logits (feature ``extreme``).
EXTREME = 1e3


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


class Params(Mapping[str, Any]):
    """The mapping view shared by the parameter classes: every field that is set, with
    tuples as lists (the JSON form)."""

    #: Fields always in the mapping, even at their defaults.
    ALWAYS: ClassVar[tuple[str, ...]] = ()

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name not in self.ALWAYS:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def __getitem__(self, name: str) -> Any:
        return self._json()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._json())

    def __len__(self) -> int:
        return len(self._json())

    def to_json(self) -> dict[str, Any]:
        return self._json()

    def kinds(self) -> Iterator[Kind]:
        """The named input kinds the case uses (``input_kinds.py``)."""
        return iter(())

    def features(self) -> frozenset[str]:
        """What a case with these parameters needs from an implementation."""
        feats: set[str] = set()
        for k in self.kinds():
            feats |= k.features
        return frozenset(feats)

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> Params:
        if isinstance(params, cls):
            return params
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(f"unknown case parameter(s) {unknown} for {cls.__name__}; "
                             f"expected some of {sorted(names)}")
        return cls(**{k: _tuple(v) for k, v in params.items()})


@dataclass(frozen=True, eq=True)
class AttentionParams(Params):
    """Parameters of an attention case: shapes, options, and the named input kinds."""

    ALWAYS: ClassVar[tuple[str, ...]] = ("batch", "hq", "hkv", "lq", "lk", "dk", "dv")

    hq: int
    hkv: int
    lq: int
    lk: int
    dk: int
    batch: tuple[int, ...] = ()
    dv: int | None = None  # None: Dv == Dk (filled in)
    scale: float | None = None
    softcap: float | None = None
    mask: str | None = None  # input_kinds.MASKS
    bias: str | None = None  # input_kinds.BIASES
    causal: bool | None = None
    alignment: str | None = None  # None: upper_left (named when a case is about it)
    window: tuple[int | None, int | None] | None = None
    kv_lengths: tuple[int, ...] | None = None
    q_lengths: tuple[int, ...] | None = None
    dropout_p: float | None = None
    sinks: str | None = None  # input_kinds.SINKS
    alibi: str | None = None  # input_kinds.ALIBI: the slopes
    positions: str | None = None  # input_kinds.POSITIONS: q/kv positions
    segments: str | None = None  # input_kinds.SEGMENTS: q/kv segment ids (packed varlen)
    score_mod: str | None = None  # input_kinds.SCORE_MODS (conformance/mods.py)
    mask_mod: str | None = None  # input_kinds.MASK_MODS
    consistency: str | None = None  # consistency.CONSISTENCY: variant calls compared
    bitwise: bool | None = None  # a consistency case graded bit for bit (batch_invariant)
    logits: str | None = None  # input_kinds.LOGITS
    magnitude: float | None = None  # query scaled by it
    poison: str | None = None  # input_kinds.POISONS
    transform: str | None = None  # input_kinds.TRANSFORMS
    shift: float | None = None  # the constant of a "shift" transform
    error: str | None = None  # input_kinds.ERRORS: an invalid call
    backward: bool | None = None  # a gradient case: dq, dk, dv (dbias) graded too
    repeat: int | None = None  # a determinism case: calls compared bit for bit

    def __post_init__(self) -> None:
        if self.dv is None:
            object.__setattr__(self, "dv", self.dk)
        list(self.kinds())  # unknown kinds fail here, naming the parameter and the choices

    def kinds(self) -> Iterator[Kind]:
        for table, field in ((MASKS, "mask"), (BIASES, "bias"), (SINKS, "sinks"),
                             (ALIBI, "alibi"), (POSITIONS, "positions"),
                             (SEGMENTS, "segments"), (SCORE_MODS, "score_mod"),
                             (MASK_MODS, "mask_mod"), (LOGITS, "logits"),
                             (POISONS, "poison"), (TRANSFORMS, "transform"), (ERRORS, "error")):
            name = getattr(self, field)
            if name is not None:
                yield kind(table, field, name)

    @property
    def lower_right(self) -> bool:
        return self.alignment == "lower_right"

    def features(self) -> frozenset[str]:
        feats = set(super().features())
        if not self.batch:
            feats.add("batch0")
        elif len(self.batch) >= 2:
            feats.add("batch2")
        for feature, applies in (
                ("gqa", self.hq != self.hkv), ("dv_ne_dk", self.dv != self.dk),
                ("lq_ne_lk", self.lq != self.lk), ("empty_keys", self.lk == 0),
                ("scale", self.scale is not None), ("softcap", self.softcap is not None),
                ("kv_lengths", self.kv_lengths is not None),
                ("q_lengths", self.q_lengths is not None), ("window", self.window is not None),
                ("dropout", bool(self.dropout_p)), ("backward", bool(self.backward)),
                ("deterministic", bool(self.repeat)),
                ("extreme", (self.magnitude or 1.0) >= EXTREME),
                ("empty_rows", self._has_empty_rows())):
            if applies:
                feats.add(feature)
        if self.consistency is not None:
            from .consistency import CONSISTENCY

            check = CONSISTENCY[self.consistency]  # KeyError: an unknown check
            feats |= check.features
            if self.bitwise:
                feats.add(check.bitwise_with)
        if self.causal:
            feats.add("causal_lower_right" if self.lower_right else "causal")
        if self.window is not None and self.lower_right:
            feats.add("causal_lower_right")
        return frozenset(feats)

    def _has_empty_rows(self) -> bool:
        """Whether the spec's own mask (causal, window, lengths) leaves a row with nothing
        to attend (masks and biases say so through their kinds)."""
        if self.lk == 0:
            return True
        lengths = {n: np.asarray(getattr(self, n)).reshape(self.batch)
                   for n in ("kv_lengths", "q_lengths") if getattr(self, n) is not None}
        keep = attnspec.attention_mask(
            self.lq, self.lk, causal=bool(self.causal), window=self.window,
            alignment=self.alignment or "upper_left", xp=np, **lengths)
        return keep is not None and bool((~keep.any(axis=-1)).any())

    @property
    def expect(self) -> str:
        """``"value"``, or the exception an invalid call must raise."""
        return kind(ERRORS, "error", self.error).expect if self.error else "value"


@dataclass(frozen=True, eq=True)
class SoftmaxParams(Params):
    """Parameters of a softmax, log_softmax or logsumexp case."""

    ALWAYS: ClassVar[tuple[str, ...]] = ("shape",)

    shape: tuple[int, ...]
    axis: int | None = None  # None: -1
    magnitude: float | None = None
    pattern: str | None = None  # input_kinds.SOFTMAX_PATTERNS
    where: str | None = None  # input_kinds.SOFTMAX_WHERE

    def __post_init__(self) -> None:
        list(self.kinds())

    def kinds(self) -> Iterator[Kind]:
        if self.pattern is not None:
            yield kind(SOFTMAX_PATTERNS, "pattern", self.pattern)
        if self.where is not None:
            yield kind(SOFTMAX_WHERE, "where", self.where)

    def features(self) -> frozenset[str]:
        extreme = {"extreme"} if (self.magnitude or 1.0) >= EXTREME else set()
        return super().features() | extreme


@dataclass(frozen=True, eq=True)
class MhaParams(Params):
    """Parameters of a multi-head attention case (projections included)."""

    ALWAYS: ClassVar[tuple[str, ...]] = ("batch", "lq", "lk", "embed", "hq", "hkv", "dk")

    lq: int
    lk: int
    embed: int
    hq: int
    hkv: int
    dk: int
    batch: tuple[int, ...] = ()
    cross: bool | None = None  # key/value from a second sequence
    biases: bool | None = None  # projection biases
    causal: bool | None = None

    def features(self) -> frozenset[str]:
        return frozenset({"gqa"} if self.hq != self.hkv else set()) | (
            {"causal"} if self.causal else set())


_FAMILIES: dict[str, type[Params]] = {
    "attention": AttentionParams, "mha": MhaParams, "softmax": SoftmaxParams,
    "log_softmax": SoftmaxParams, "logsumexp": SoftmaxParams,
}


def params_for(op: str, params: Mapping[str, Any]) -> Params:
    """The typed parameters of an ``op`` case from their mapping (or typed) form."""
    try:
        family = _FAMILIES[op]
    except KeyError:
        raise ValueError(f"unknown case op {op!r}; expected one of {sorted(_FAMILIES)}") \
            from None
    return family.from_mapping(params)
