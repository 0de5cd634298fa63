"""Judging one reply: the outcome of a case from what the implementation returned, by the
tolerance rule (``tolerance.py``), the expected exception, or bit-for-bit repeats; a changed
input fails under the runner's own rule, NO-MUTATION."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .bits import bit_difference
from .cases import Case, CaseKind
from .claims import evidence
from .messages import RaisedError, Reply
from .references import Prepared
from .results import Outcome
from .rules import NO_MUTATION_RULE
from .worker import quiet

__all__ = ["Verdict", "bit_difference", "judge"]


@dataclass
class Verdict:
    outcome: Outcome
    message: str = ""
    max_error: float | None = None
    tolerance: float | None = None
    ratio: float | None = None
    #: Rules broken besides the case's own (NO_MUTATION_RULE).
    rules: tuple[str, ...] = ()
    #: Per-output errors (``tolerance.Grade.errors``).
    errors: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: Rules of the case the reply is no evidence for (``claims.evidence``).
    not_graded: dict[str, str] = field(default_factory=dict)


def judge(case: Case, reply: Reply, prepared: Prepared) -> Verdict:
    """The outcome of one case from the worker's reply: the outputs' grade, and a failure
    under :data:`NO_MUTATION_RULE` when the call changed its inputs."""
    verdict = _judge(case, reply, prepared)
    modified = getattr(reply.value, "modified", None) if reply.kind == "ok" else None
    if modified:
        message = "inputs modified by the call: " + "; ".join(modified)
        if verdict.outcome is not Outcome.PASS and verdict.message:
            message += f"; and {verdict.message}"
        return Verdict(Outcome.FAIL, message, verdict.max_error, verdict.tolerance,
                       verdict.ratio, rules=(NO_MUTATION_RULE,), errors=verdict.errors,
                       not_graded=verdict.not_graded)
    return verdict


def _judge(case: Case, reply: Reply, prepared: Prepared) -> Verdict:
    if reply.kind == "timeout":
        return Verdict(Outcome.TIMEOUT, reply.message)
    if reply.kind == "crash":
        return Verdict(Outcome.CRASH, reply.message)
    if case.expect != "value":
        if reply.kind == "raised":
            if reply.error is not None and reply.error.is_a(case.expect):
                return Verdict(Outcome.PASS, f"raised {reply.error}")
            return Verdict(Outcome.FAIL, f"expected {case.expect}, got {reply.error}")
        if reply.kind == "bad":
            return Verdict(Outcome.FAIL, f"expected {case.expect}, got no exception and an "
                                         f"invalid output: {reply.message}")
        return Verdict(Outcome.FAIL, f"expected {case.expect}, nothing was raised")
    if reply.kind == "raised":
        return Verdict(Outcome.ERROR, str(reply.error))
    if reply.kind == "bad":
        return Verdict(Outcome.ERROR, reply.message)
    from .tolerance import grade

    output = reply.value
    if case.kind is CaseKind.DETERMINISM:
        return _judge_repeats(case, output)
    try:
        with quiet():
            g = grade(case, output.outputs, output.dtypes, prepared.golden or {},
                      prepared.naive or {}, prepared.logits)
    except Exception as exc:
        return Verdict(Outcome.ERROR, f"internal error of attnspec while grading: "
                                      f"{RaisedError.from_exception(exc)}")
    graded = set(output.outputs) & set(prepared.golden or {})
    if g.passed and case.kind is CaseKind.CONSISTENCY:
        return _judge_consistency(case, output, prepared, g.errors)
    return Verdict(Outcome.PASS if g.passed else Outcome.FAIL, g.message,
                   _finite(g.max_error), _finite(g.tolerance), _finite(g.ratio),
                   errors={name: {k: _finite(v) for k, v in numbers.items()}
                           for name, numbers in g.errors.items()},
                   not_graded=evidence(case.rules, graded))


def _judge_repeats(case: Case, output: Any) -> Verdict:
    """ATT-DET-1: every repeated call returned the first call's outputs, bit for bit."""
    runs = [output.outputs, *getattr(output, "repeats", [])]
    wanted = case.repeats
    names = ", ".join(output.outputs)
    if len(runs) != wanted:
        return Verdict(Outcome.ERROR, f"{len(runs)} runs came back, {wanted} were made")
    first = runs[0]
    for index, run in enumerate(runs[1:], start=2):
        if sorted(run) != sorted(first):
            return Verdict(Outcome.FAIL, f"not deterministic: run {index} returned "
                                         f"{sorted(run)}, run 1 {sorted(first)}")
        for name, want in first.items():
            difference = bit_difference(want, run[name])
            if difference:
                return Verdict(Outcome.FAIL, f"not deterministic: run {index} of {wanted} "
                                             f"differs from run 1 in {name}: {difference}")
    return Verdict(Outcome.PASS, f"{wanted} runs bit-identical ({names})")


def _judge_consistency(case: Case, output: Any, prepared: Prepared,
                       errors: dict[str, dict[str, float]]) -> Verdict:
    """ATT-CONS-1/2: the main call passed against the golden; its rows against the variant
    calls' - bit for bit where the case is about a declared ``batch_invariant``, else within
    twice the tolerance of the output (both calls may sit at it, on opposite sides)."""
    import numpy as np

    from .consistency import CONSISTENCY

    check = CONSISTENCY[case.params["consistency"]]
    variants = getattr(output, "variants", [])
    if prepared.inputs is None or len(variants) != len(prepared.inputs.variants):
        return Verdict(Outcome.ERROR, f"{len(variants)} variant calls came back, "
                                      f"{len(prepared.inputs.variants if prepared.inputs else [])}"
                                      " were made")
    try:
        pairs = check.pairs(prepared.inputs, output.outputs, variants)
    except KeyError as exc:  # a declared output (lse) that did not come back: a coverage gap
        missing = f"no {exc.args[0]} returned"
        return Verdict(Outcome.PASS, f"{missing}: nothing to compare",
                       not_graded={rule: missing for rule in case.rules})
    worst, lines = 0.0, []
    for label, name, a, b in pairs:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if case.params.get("bitwise"):
            difference = bit_difference(a, b)
            if difference:
                return Verdict(Outcome.FAIL, f"{label}: {name} not bitwise equal "
                                             f"(batch_invariant declared): {difference}")
            lines.append(f"{label}: {name} bitwise equal")
            continue
        golden = (prepared.golden or {}).get(name)
        finite = np.isfinite(a) & np.isfinite(b)
        if not np.array_equal(np.isfinite(a), np.isfinite(b)) or not np.array_equal(
                a[~finite], b[~finite], equal_nan=True):
            return Verdict(Outcome.FAIL, f"{label}: {name} non-finite entries differ")
        diff = float(np.max(np.abs(a[finite] - b[finite]))) if finite.any() else 0.0
        scale = float(np.max(np.abs(golden[np.isfinite(golden)]))) if golden is not None and \
            np.isfinite(golden).any() else 1.0
        allowed = 2.0 * errors.get(name, {}).get("tolerance", 0.0) * (scale or 1.0)
        worst = max(worst, diff / (allowed or 1.0))
        if diff > allowed:
            return Verdict(Outcome.FAIL, f"{label}: max |{name} difference| {diff:.3g} > "
                                         f"{allowed:.3g} (twice the tolerance)")
        lines.append(f"{label}: max |{name} difference| {diff:.3g} (allowed {allowed:.3g})")
    return Verdict(Outcome.PASS, "; ".join(lines), ratio=_finite(worst),
                   not_graded=evidence(case.rules, set(output.outputs)))


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


