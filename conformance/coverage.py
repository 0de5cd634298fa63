"""Coverage: what a verdict rests on, per implementation.

PASSED means more than "nothing failed". An implementation passes only when

1. every rule it claims (``claims.RULE_CLAIMS``: the core rules of each operation it
   implements, and the rules about each feature it declares) has at least one case graded
   through what that rule is about (``claims.evidence``), among the cases of the run; and
2. at least :data:`FLOOR` cases of each operation it implements were graded (or every case
   of that operation in the run, when the run has fewer). A run that chose its cases
   (``--select``, ``--dtype``) is judged on them: one graded case per operation, and
   graded evidence for every claimed rule among them.

Otherwise its verdict is INSUFFICIENT COVERAGE, and the run's exit status is
:data:`INSUFFICIENT` (3) unless something failed. A kernel declaring almost nothing, a
``dtypes = []`` declaration, an empty ``--outputs`` folder and a ``--select`` matching no
case are never green. Each implementation's coverage says how many cases were graded, which
claimed rules were tested and how often, which were not and why, grouped by cause
("not declared: gqa — 83 cases"), and what to declare to close a gap.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .cases import SOFTMAX_OPS
from .claims import RULE_CLAIMS, claimed, why_unclaimed
from .results import CaseResult, ImplementationInfo
from .rules import RULES

__all__ = ["FLOOR", "INSUFFICIENT", "Coverage", "coverage", "op_family",
           "report_coverage"]

#: The exit status of a run whose verdict is INSUFFICIENT COVERAGE.
INSUFFICIENT = 3

#: Graded cases needed per operation family. Measured on the default catalog: a kernel
#: that declares no option gets 25 attention cases in NumPy's dtypes (every core rule in
#: its basic shape: score, dtype, extreme logits, bound, single key, equal scores, permuted
#: keys, NaN, argument errors) and passes; on float32 alone 15, on float64 alone 1, and
#: those do not. The softmax family and multi-head attention have fewer cases.
FLOOR: dict[str, int] = {"attention": 20, "softmax": 10, "mha": 4}


def op_family(op: str) -> str:
    """``softmax`` for the softmax family (softmax, log_softmax, logsumexp), else ``op``."""
    return "softmax" if op in SOFTMAX_OPS else op


@dataclass
class Coverage:
    """One implementation's coverage in a report.

    Attributes
    ----------
    implementation : str
    cases : int
        Results of this implementation in the report, for the operations it implements.
    graded : int
        Cases sent to it and judged with evidence for at least one of their rules.
    graded_by_op : dict
        Operation family -> graded cases; ``needed_by_op`` the floor each one had to meet.
    claimed : list of str
        The rules it claims, in the spec's order.
    tested : dict
        Claimed rule -> cases graded through what the rule is about.
    gaps : dict
        Claimed rule -> why no case of it was graded (the causes of its cases).
    unclaimed : dict
        Rule -> what would claim it (rules the run has cases for, that it does not claim).
    causes : list of (str, int)
        Why cases were not graded, most frequent first ("not declared: gqa", 83).
    advice : list of str
        What to declare (or run) to close the gaps.
    declared : bool
        Whether the report knew what it declares (a report with results but no
        implementation entry does not: claims are then taken from what was graded).
    """

    implementation: str
    cases: int = 0
    graded: int = 0
    graded_by_op: dict[str, int] = field(default_factory=dict)
    needed_by_op: dict[str, int] = field(default_factory=dict)
    claimed: list[str] = field(default_factory=list)
    tested: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, str] = field(default_factory=dict)
    unclaimed: dict[str, str] = field(default_factory=dict)
    causes: list[tuple[str, int]] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    declared: bool = True

    @property
    def short(self) -> list[str]:
        """Operation families graded on fewer cases than their floor."""
        return [op for op, need in self.needed_by_op.items()
                if self.graded_by_op.get(op, 0) < need]

    @property
    def sufficient(self) -> bool:
        return self.graded > 0 and not self.gaps and not self.short

    def problem(self) -> str:
        """Why coverage is insufficient, in one line ("" when it is not)."""
        if self.sufficient:
            return ""
        parts = []
        if self.graded == 0:
            parts.append("no case was graded")
        for op in self.short:
            parts.append(f"{self.graded_by_op.get(op, 0)} {op} cases graded, "
                         f"{self.needed_by_op[op]} needed")
        if self.gaps:
            parts.append(f"{len(self.gaps)} claimed rule{'s' * (len(self.gaps) != 1)} "
                         f"without a graded case ({', '.join(self.gaps)})")
        text = "; ".join(parts)
        if self.advice:
            text += "; " + "; ".join(self.advice)
        return text

    def to_json(self) -> dict[str, Any]:
        return {"implementation": self.implementation, "cases": self.cases,
                "graded": self.graded, "graded_by_op": dict(self.graded_by_op),
                "needed_by_op": dict(self.needed_by_op), "claimed": list(self.claimed),
                "tested": dict(self.tested), "gaps": dict(self.gaps),
                "unclaimed": dict(self.unclaimed),
                "causes": [list(c) for c in self.causes], "advice": list(self.advice),
                "sufficient": self.sufficient}


def _cause(result: CaseResult) -> list[str]:
    """Why a not-applicable result was not graded, as causes to count."""
    if result.missing and result.message.startswith("does not declare"):
        return [f"not declared: {name}" for name in result.missing]
    return [result.message or "not applicable"]


def _evidenced(result: CaseResult, rule: str) -> bool:
    return result.outcome.graded and rule not in (result.not_graded or {})


def coverage(info: ImplementationInfo | None, results: list[CaseResult],
             name: str | None = None, *, partial: bool = False) -> Coverage:
    """The coverage of one implementation from its results (``info``: what it declares;
    ``None`` when the report has no entry for it). ``partial``: the run chose its cases
    (``--select``, ``--dtype``), so the floor is one graded case per operation; the claimed
    rules among the chosen cases still need graded evidence."""
    name = name if name is not None else (info.name if info is not None else "?")
    if info is not None and info.ops:
        # Cases of operations it does not implement say nothing about it.
        families = {op_family(op) for op in info.ops}
        results = [r for r in results if op_family(r.op) in families]
    cov = Coverage(name, cases=len(results), declared=info is not None)
    in_run_by_op: Counter[str] = Counter()
    rules_in_run: set[str] = set()
    for r in results:
        in_run_by_op[op_family(r.op)] += 1
        rules_in_run.update(r.rules)
        if r.outcome.graded and any(_evidenced(r, rule) for rule in r.rules):
            cov.graded += 1
            cov.graded_by_op[op_family(r.op)] = cov.graded_by_op.get(op_family(r.op), 0) + 1
    if info is not None and (info.ops or info.features):
        ops = info.ops or sorted({r.op for r in results})
        dtypes = info.dtypes or sorted({r.dtype for r in results if r.outcome.graded})
        cov.claimed = [rule for rule in claimed(ops, info.features, dtypes)
                       if rule in rules_in_run]
        families = {op_family(op) for op in ops}
    else:
        cov.claimed = [rule for rule in RULES
                       if any(_evidenced(r, rule) for r in results if rule in r.rules)]
        families = {op_family(r.op) for r in results}
    for family in sorted(families):
        if in_run_by_op[family]:  # a --select run without cases of an op asks none of it
            floor = 1 if partial else FLOOR.get(family, 1)
            cov.needed_by_op[family] = min(floor, in_run_by_op[family])
    for rule in cov.claimed:
        count = sum(1 for r in results if rule in r.rules and _evidenced(r, rule))
        if count:
            cov.tested[rule] = count
        else:
            cov.gaps[rule] = _gap_reason(rule, [r for r in results if rule in r.rules])
    for rule in RULES:
        if rule in rules_in_run and rule not in cov.claimed:
            cov.unclaimed[rule] = why_unclaimed(rule)
    causes: Counter[str] = Counter()
    for r in results:
        if not r.outcome.graded:
            causes.update(_cause(r))
    cov.causes = causes.most_common()
    cov.advice = _advice(cov, results)
    return cov


def _gap_reason(rule: str, results: list[CaseResult]) -> str:
    """Why none of a claimed rule's cases was graded through it."""
    if not results:
        return "the run has no case of it"
    causes: Counter[str] = Counter()
    for r in results:
        if r.outcome.graded:
            causes[(r.not_graded or {}).get(rule, "graded without evidence")] += 1
        else:
            causes.update(_cause(r))
    shown = ", ".join(f"{cause} ({n})" for cause, n in causes.most_common(4))
    return f"its {len(results)} case{'s' * (len(results) != 1)}: {shown}"


def _advice(cov: Coverage, results: list[CaseResult]) -> list[str]:
    """What would close the gaps: the undeclared features their cases need most."""
    if cov.sufficient:
        return []
    wanted: Counter[str] = Counter()
    for r in results:
        if r.outcome.graded or not r.missing:
            continue
        if cov.gaps and not set(r.rules) & set(cov.gaps):
            continue
        wanted.update(r.missing)
    dtypes: Counter[str] = Counter(
        r.message.rsplit(" ", 1)[-1] for r in results
        if not r.outcome.graded and r.message.startswith("does not declare dtype ")
        and (not cov.gaps or set(r.rules) & set(cov.gaps)))
    advice = []
    if wanted:
        names = ", ".join(f"{f} ({n} cases)" for f, n in wanted.most_common(4))
        advice.append(f"declare what the implementation supports of: {names}")
    if dtypes:
        names = ", ".join(f"{d} ({n} cases)" for d, n in dtypes.most_common())
        advice.append(f"declare the dtypes it supports of: {names}")
    for rule, why in cov.gaps.items():
        if "returned" in why:
            claim = RULE_CLAIMS[rule]
            advice.append(f"{rule} is claimed ({claim.describe()}) but its cases came back "
                          f"without its output: return it, or stop declaring it")
    if cov.graded == 0 and not wanted:
        advice.append("nothing in this run could be graded: check --select, --dtype and the "
                      "declared dtypes and ops")
    return advice


def report_coverage(implementations: list[ImplementationInfo], results: list[CaseResult],
                    names: list[str], *, partial: bool = False) -> dict[str, Coverage]:
    """Coverage of every implementation in ``names`` that is not unavailable."""
    info = {i.name: i for i in implementations}
    by_name: dict[str, list[CaseResult]] = {}
    for r in results:
        by_name.setdefault(r.implementation, []).append(r)
    found = {}
    for name in names:
        i = info.get(name)
        if i is not None and i.unavailable:
            continue
        found[name] = coverage(i, by_name.get(name, []), name, partial=partial)
    return found
