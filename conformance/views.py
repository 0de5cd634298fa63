"""What the report renderers (``markdown``, ``html``, ``terminal``) share: the order of
implementations and rules, per-cell outcome counts, the verdict and number formatting."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .coverage import Coverage
from .report import Report, rule_outcome
from .results import CaseResult, Outcome
from .rules import RULES, RUNNER_RULES

__all__ = ["GRADIENTS", "OUTCOMES", "DeterminismRow", "DeviationRow", "GradientRow",
           "cell_counts", "coverage_line", "determinism_rows", "deviation_rows", "failures",
           "fingerprint_keys", "fmt", "fraction", "gradient_rows",
           "implementations", "magnitude", "one_line", "plain", "rules", "verdict"]

# Terminal escape sequences: CSI (colours, cursor moves, clear screen), OSC (window titles,
# hyperlinks; ended by BEL or ESC \\), and two-character ones.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])"
                      r"|\x9b[0-?]*[ -/]*[@-~]")
# Other control characters (C0 but tab and newline, DEL, C1) and the bidirectional overrides
# that make text read differently from what it holds.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

#: Outcomes in the order count tables show them, with their short column labels.
OUTCOMES: tuple[tuple[Outcome, str], ...] = (
    (Outcome.PASS, "pass"), (Outcome.FAIL, "fail"), (Outcome.ERROR, "error"),
    (Outcome.TIMEOUT, "timeout"), (Outcome.CRASH, "crash"), (Outcome.NOT_APPLICABLE, "n/a"),
    (Outcome.XFAIL, "xfail"), (Outcome.XPASS, "xpass"),
)


def plain(text: object) -> str:
    """``str(text)`` with terminal escape sequences and control characters removed (tab and
    newline kept; a carriage return becomes a newline): what reports show of a string that
    comes from an implementation (its name, messages, output, fingerprint)."""
    text = str(text).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def one_line(text: object) -> str:
    """:func:`plain`, with every run of whitespace (newlines included) made one space."""
    return " ".join(plain(text).split())


def implementations(report: Report, *, tested: bool = False) -> list[str]:
    """Implementation names: the report's implementations first, then names that only
    appear in results (a hand-edited or partial report); ``tested=True`` keeps only those
    with results (matrices leave out the unavailable ones)."""
    names = [info.name for info in report.implementations]
    for r in report.results:
        if r.implementation not in names:
            names.append(r.implementation)
    if tested:
        ran = {r.implementation for r in report.results}
        names = [n for n in names if n in ran]
    return names


def rules(report: Report) -> list[str]:
    """The rules the results touch: the spec's order first, then the runner's own
    (``NO-MUTATION``), then unknown IDs, sorted."""
    seen = {rule for r in report.results for rule in r.rules}
    known = [*RULES, *RUNNER_RULES]
    return [rule for rule in known if rule in seen] + sorted(seen - set(known))


def cell_counts(report: Report) -> dict[tuple[str, str], Counter[Outcome]]:
    """(implementation, rule) -> outcome counts over that rule's cases."""
    cells: dict[tuple[str, str], Counter[Outcome]] = {}
    for r in report.results:
        for rule in r.rules:
            cells.setdefault((r.implementation, rule), Counter())[rule_outcome(r, rule)] += 1
    return cells


def failures(report: Report) -> list[CaseResult]:
    """Results that fail the run, grouped by implementation in report order."""
    order = {name: i for i, name in enumerate(implementations(report))}
    return sorted(report.failed, key=lambda r: order[r.implementation])


def verdict(report: Report) -> str:
    """One line: passed, failed, insufficient coverage (or interrupted), with the numbers
    behind it."""
    total = len(report.results)
    ran = sum(r.outcome is not Outcome.NOT_APPLICABLE for r in report.results)
    bad = len(report.failed)
    impls = len(implementations(report))
    expected = sum(r.outcome is Outcome.XFAIL for r in report.results)
    if report.interrupted:
        return (f"INTERRUPTED: partial report, the run did not finish ({total} results, "
                f"{bad} of {ran} applicable cases failed)")
    if bad:
        failing = len({r.implementation for r in report.failed})
        xpass = sum(r.outcome is Outcome.XPASS for r in report.failed)
        also = f", {xpass} of them expected failures that passed" if xpass else ""
        return (f"FAILED: {bad} of {ran} applicable cases failed{also} "
                f"({failing} of {impls} implementation{'s' * (impls != 1)})")
    thin = report.insufficient()
    if thin:
        first = thin[0] if len(thin) == 1 else f"{thin[0]} (and {len(thin) - 1} more)"
        return f"INSUFFICIENT COVERAGE: too little was graded to pass: {first}"
    xfails = (f", {expected} more fail as their declared deviations say (expected failures)"
              if expected else "")
    return (f"PASSED: {ran - expected} graded cases conform{xfails}; every claimed rule has "
            f"graded evidence ({total} results, {impls} implementation"
            f"{'s' * (impls != 1)})")


def fingerprint_keys(report: Report) -> list[str]:
    """Every fingerprint key, in the order implementations first report them."""
    keys: list[str] = []
    for info in report.implementations:
        keys.extend(k for k in info.fingerprint if k not in keys)
    return keys


def magnitude(result: CaseResult) -> float:
    """The case's logit magnitude (``params["magnitude"]``), 1 where the case has none."""
    value: Any = result.params.get("magnitude", 1.0)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 1.0
    return value if math.isfinite(value) and value > 0 else 1.0


def fmt(value: float | None) -> str:
    """A number in three significant digits; "–" for None (not measured)."""
    if value is None:
        return "–"
    if not math.isfinite(value):
        return str(value)  # nan, inf, -inf
    if value == 0:
        return "0"
    return f"{value:.3g}"


#: The gradient outputs of a gradient case, in the order reports show them.
GRADIENTS = ("dq", "dk", "dv", "dbias", "dsinks", "dalibi_slopes")
_DTYPE_ORDER = ("float64", "float32", "float16", "bfloat16")


@dataclass
class GradientRow:
    """An implementation's gradient cases of one dtype (ATT-GRAD-1, ATT-GRAD-2)."""

    implementation: str
    dtype: str
    passed: int = 0  # pass
    applicable: int = 0
    expected: int = 0  # expected failures (declared deviations, xfail entries)
    #: gradient output -> worst error / tolerance over the cases that graded it (1 = at the
    #: bound); a failure that had no finite error counts as inf
    worst: dict[str, float] = field(default_factory=dict)

    @property
    def bad(self) -> bool:
        """Some case failed beyond what was expected."""
        return self.passed + self.expected < self.applicable

    @property
    def count(self) -> str:
        """``"6/12"``, with the expected failures: ``"6/12 +6 x"``."""
        return f"{self.passed}/{self.applicable}" + (f" +{self.expected} x" if self.expected
                                                     else "")


def _is_gradient_case(result: CaseResult) -> bool:
    params = result.params if isinstance(result.params, dict) else {}
    return bool(params.get("backward")) and not params.get("repeat")


def _is_determinism_case(result: CaseResult) -> bool:
    params = result.params if isinstance(result.params, dict) else {}
    return bool(params.get("repeat"))


def gradient_rows(report: Report) -> list[GradientRow]:
    """One row per (implementation, dtype) with applicable gradient cases, in report order
    and widest dtype first."""
    rows: dict[tuple[str, str], GradientRow] = {}
    for r in report.results:
        if not _is_gradient_case(r) or r.outcome is Outcome.NOT_APPLICABLE:
            continue
        row = rows.setdefault((r.implementation, r.dtype), GradientRow(r.implementation,
                                                                       r.dtype))
        row.applicable += 1
        if r.outcome is Outcome.PASS:
            row.passed += 1
        elif r.outcome is Outcome.XFAIL:
            row.expected += 1
        for name in GRADIENTS:
            numbers = (r.errors or {}).get(name)
            if not isinstance(numbers, dict):
                continue
            error, tolerance = numbers.get("error"), numbers.get("tolerance")
            if isinstance(error, (int, float)) and isinstance(tolerance, (int, float)) \
                    and tolerance > 0:
                fraction = error / tolerance
            else:
                fraction = math.inf
            row.worst[name] = max(row.worst.get(name, 0.0), fraction)
    order = {name: i for i, name in enumerate(implementations(report))}
    return sorted(rows.values(), key=lambda row: (
        order.get(row.implementation, len(order)),
        _DTYPE_ORDER.index(row.dtype) if row.dtype in _DTYPE_ORDER else len(_DTYPE_ORDER)))


@dataclass
class DeterminismRow:
    """An implementation's determinism cases (ATT-DET-1)."""

    implementation: str
    applicable: int
    passed: int
    #: "bit-identical", "not deterministic" (a case failed) or "not applicable" (declared,
    #: but no determinism case applies, e.g. a dispatch that takes another path)
    status: str
    message: str = ""  # the first failure's message, else the first result's


def determinism_rows(report: Report) -> list[DeterminismRow]:
    """One row per implementation that declares ``deterministic`` (or, where the report
    does not say what it declares, that ran a determinism case), in report order."""
    found: dict[str, list[CaseResult]] = {}
    for r in report.results:
        if _is_determinism_case(r):
            found.setdefault(r.implementation, []).append(r)
    declared = {i.name: "deterministic" in i.features for i in report.implementations}
    rows = []
    for name in implementations(report):
        results = found.get(name)
        if not results:
            continue
        ran = [r for r in results if r.outcome is not Outcome.NOT_APPLICABLE]
        if not declared.get(name, bool(ran)):
            continue
        passed = [r for r in ran if r.outcome in (Outcome.PASS, Outcome.XFAIL)]
        bad = [r for r in ran if r not in passed]
        if not ran:
            rows.append(DeterminismRow(name, 0, 0, "not applicable", results[0].message))
        elif bad:
            rows.append(DeterminismRow(name, len(ran), len(passed), "not deterministic",
                                       bad[0].message))
        else:
            rows.append(DeterminismRow(name, len(ran), len(passed), "bit-identical",
                                       passed[0].message))
    return rows


def fraction(value: float | None) -> str:
    """A worst error / tolerance in two decimals; "–" when not measured, "∞" when a failure
    had no finite error."""
    if value is None:
        return "–"
    if not math.isfinite(value):
        return "∞"
    return f"{value:.2f}"


# -- coverage and deviations ------------------------------------------------------------------

def coverage_line(cov: Coverage, *, causes: int = 4) -> str:
    """One implementation's coverage in one line: cases graded, claimed rules tested, the
    most frequent reasons cases were not graded."""
    text = (f"{cov.graded} of {cov.cases} cases graded; {len(cov.tested)} of "
            f"{len(cov.claimed)} claimed rules tested")
    if cov.causes:
        shown = ", ".join(f"{cause} ({n})" for cause, n in cov.causes[:causes])
        more = len(cov.causes) - causes
        text += f"; not graded: {shown}" + (f", {more} more causes" if more > 0 else "")
    return text


@dataclass
class DeviationRow:
    """A declared deviation of one implementation and what the run made of it."""

    implementation: str
    reason: str
    selection: str
    fingerprint: str = ""
    issue: str = ""
    xfail: int = 0  # cases it covered that failed as expected
    xpass: int = 0  # cases it covered that passed: out of date


def deviation_rows(report: Report) -> list[DeviationRow]:
    """Every declared deviation, in report order, with its expected failures counted (a
    result is counted under the deviation its message names)."""
    rows = []
    for info in report.implementations:
        mine = [r for r in report.results if r.implementation == info.name]
        for d in info.deviations or []:
            if not isinstance(d, dict):
                continue
            reason = str(d.get("reason", ""))
            row = DeviationRow(info.name, reason, str(d.get("selection", "")),
                               str(d.get("fingerprint", "") or ""),
                               str(d.get("issue", "") or ""))
            for r in mine:
                if reason and reason in r.message:
                    if r.outcome is Outcome.XFAIL:
                        row.xfail += 1
                    elif r.outcome is Outcome.XPASS:
                        row.xpass += 1
            rows.append(row)
    return rows
