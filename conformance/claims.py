"""Which rules an implementation claims, and what output of a case is evidence for a rule.

An implementation claims a rule when it implements the rule's operation and declares what
the rule is about: ATT-MASK-1 is claimed by whoever declares ``mask``, ATT-LSE-1 by whoever
returns an ``lse``, the core rules (ATT-SCORE-1, ATT-BOUND-1, ...) by every attention
implementation. A verdict of PASSED needs graded evidence for every claimed rule
(:mod:`.coverage`).

A case counts toward a rule only through what that rule is about (:func:`evidence`): an
extreme-logit case cites ATT-SCORE-1 and ATT-LSE-1, and an implementation that returns no
``lse`` has shown nothing about ATT-LSE-1 there, however right its ``out`` is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .cases import SOFTMAX_OPS
from .rules import RULES

__all__ = ["RULE_CLAIMS", "RULE_OUTPUTS", "Claim", "claimed", "evidence", "why_unclaimed"]

HALF = ("float16", "bfloat16")


@dataclass(frozen=True)
class Claim:
    """When a rule is claimed: the implementation has one of ``ops``, and declares every
    feature of at least one of ``any_of`` (``((),)``: nothing more), and (``half``) supports
    a half-precision dtype."""

    ops: tuple[str, ...] = ("attention",)
    any_of: tuple[tuple[str, ...], ...] = ((),)
    half: bool = False

    def holds(self, ops: Iterable[str], features: Iterable[str], dtypes: Iterable[str]) -> bool:
        ops, features, dtypes = set(ops), set(features), set(dtypes)
        if not ops & set(self.ops):
            return False
        if self.half and not dtypes & set(HALF):
            return False
        return any(set(option) <= features for option in self.any_of)

    def describe(self) -> str:
        """What claims the rule, in words (``"declares mask"``)."""
        parts = []
        if self.any_of != ((),):
            options = [" and ".join(o) for o in self.any_of]
            parts.append("declares " + " or ".join(options))
        if self.half:
            parts.append("supports float16 or bfloat16")
        ops = "a softmax" if set(self.ops) == set(SOFTMAX_OPS) else " or ".join(self.ops)
        if not parts:
            return f"implements {ops}"
        return f"implements {ops} and " + " and ".join(parts)


_SOFTMAX = Claim(ops=SOFTMAX_OPS)
_MASKING = (("mask",), ("bias", "bias_neg_inf"), ("kv_lengths",), ("causal_lower_right",),
            ("q_lengths",), ("segments",), ("mask_mod",))

#: rule -> when an implementation claims it.
RULE_CLAIMS: dict[str, Claim] = {
    "SMX-1": _SOFTMAX,
    "SMX-2": Claim(ops=SOFTMAX_OPS, any_of=(("where",),)),
    "SMX-3": _SOFTMAX,
    "SMX-4": _SOFTMAX,
    "SMX-5": Claim(ops=SOFTMAX_OPS, half=True),
    "ATT-SHAPE-1": Claim(),
    "ATT-GQA-1": Claim(any_of=(("gqa",),)),
    "ATT-SCORE-1": Claim(),
    "ATT-SOFTCAP-1": Claim(any_of=(("softcap",),)),
    "ATT-BIAS-1": Claim(any_of=(("bias",),)),
    "ATT-MASK-1": Claim(any_of=(("mask",),)),
    "ATT-CAUSAL-1": Claim(any_of=(("causal",),)),
    "ATT-CAUSAL-2": Claim(any_of=(("causal_lower_right",),)),
    "ATT-WINDOW-1": Claim(any_of=(("window",),)),
    "ATT-LEN-1": Claim(any_of=(("kv_lengths",),)),
    "ATT-LEN-2": Claim(any_of=(("q_lengths",),)),
    "ATT-LSE-1": Claim(any_of=(("lse",),)),
    "ATT-WEIGHTS-1": Claim(any_of=(("weights",),)),
    "ATT-DROPOUT-1": Claim(any_of=(("dropout",),)),
    "ATT-SINK-1": Claim(any_of=(("sinks",),)),
    "ATT-ALIBI-1": Claim(any_of=(("alibi",),)),
    "ATT-POS-1": Claim(any_of=(("positions",),)),
    "ATT-SEG-1": Claim(any_of=(("segments",),)),
    "ATT-SEG-2": Claim(any_of=(("segments",),)),
    "ATT-PAGE-1": Claim(any_of=(("paged",),)),
    "ATT-CONS-1": Claim(),
    "ATT-CONS-2": Claim(any_of=(("lse",), ("causal_lower_right",), ("paged",))),
    "ATT-MOD-1": Claim(any_of=(("score_mod",), ("mask_mod",))),
    # empty rows and leaks arise from whatever masks: any masking input claims them
    "ATT-EMPTY-1": Claim(any_of=_MASKING),
    "ATT-LEAK-1": Claim(any_of=(("mask",), ("bias", "bias_neg_inf"))),
    "ATT-LEAK-2": Claim(any_of=(("kv_lengths",),)),
    "ATT-NAN-1": Claim(),
    "ATT-BOUND-1": Claim(),
    "ATT-PROP-1": Claim(),
    "ATT-PROP-2": Claim(),
    "ATT-PROP-3": Claim(),
    "ATT-PROP-4": Claim(any_of=(("bias",),)),
    "ATT-DTYPE-1": Claim(),
    "ATT-DTYPE-2": Claim(half=True),
    "ATT-ARG-1": Claim(),
    "ATT-GRAD-1": Claim(any_of=tuple(("backward", *m) for m in _MASKING)),
    "ATT-GRAD-2": Claim(any_of=(("backward",),)),
    "ATT-DET-1": Claim(any_of=(("deterministic",),)),
    "MHA-1": Claim(ops=("mha",)),
}

#: The output a rule is about, where it is not ``out``: a case counts toward the rule only
#: when that output was returned and graded.
RULE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "ATT-LSE-1": ("lse",),
    "ATT-WEIGHTS-1": ("weights",),
    "ATT-GRAD-1": ("dq", "dk", "dv"),
    "ATT-GRAD-2": ("dq", "dk", "dv"),
}


def claimed(ops: Iterable[str], features: Iterable[str], dtypes: Iterable[str]) -> list[str]:
    """The rules an implementation with these ops, declared features and dtypes claims, in
    the spec's order."""
    ops, features, dtypes = list(ops), list(features), list(dtypes)
    return [rule for rule in RULES if RULE_CLAIMS[rule].holds(ops, features, dtypes)]


def why_unclaimed(rule: str) -> str:
    """What would claim ``rule`` (``"claimed by an implementation that declares mask"``)."""
    return f"claimed by an implementation that {RULE_CLAIMS[rule].describe()}"


def evidence(rules: Iterable[str], graded: Iterable[str], *, expects_value: bool = True
             ) -> dict[str, str]:
    """The rules of a case that its result shows nothing about, with the reason: a rule
    about ``lse`` when no ``lse`` was returned and graded. ``graded`` names the outputs
    that were compared with the golden; a case that expects an exception is evidence for
    its rules through the exception, whatever it returned."""
    if not expects_value:
        return {}
    graded = set(graded)
    missing = {}
    for rule in rules:
        needed = RULE_OUTPUTS.get(rule, ("out",))
        absent = [name for name in needed if name not in graded]
        if absent:
            missing[rule] = f"no {', '.join(absent)} returned"
    return missing
