"""What the report renderers (``markdown``, ``html``, ``terminal``) share: the order of
implementations and rules, per-cell outcome counts, the verdict and number formatting."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from .report import Report
from .results import CaseResult, Outcome
from .rules import RULES, RUNNER_RULES

__all__ = ["OUTCOMES", "cell_counts", "failures", "fingerprint_keys", "fmt", "implementations",
           "magnitude", "one_line", "plain", "rules", "verdict"]

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


def cell_counts(report: Report) -> dict[tuple[str, str], Counter]:
    """(implementation, rule) -> outcome counts over that rule's cases."""
    cells: dict[tuple[str, str], Counter] = {}
    for r in report.results:
        for rule in r.rules:
            cells.setdefault((r.implementation, rule), Counter())[r.outcome] += 1
    return cells


def failures(report: Report) -> list[CaseResult]:
    """Results that fail the run, grouped by implementation in report order."""
    order = {name: i for i, name in enumerate(implementations(report))}
    return sorted(report.failed, key=lambda r: order[r.implementation])


def verdict(report: Report) -> str:
    """One line: passed or failed (or interrupted), with the numbers behind it."""
    total = len(report.results)
    ran = sum(r.outcome is not Outcome.NOT_APPLICABLE for r in report.results)
    bad = len(report.failed)
    impls = len(implementations(report))
    if report.interrupted:
        return (f"INTERRUPTED: partial report, the run did not finish ({total} results, "
                f"{bad} of {ran} applicable cases failed)")
    if bad:
        failing = len({r.implementation for r in report.failed})
        return (f"FAILED: {bad} of {ran} applicable cases failed "
                f"({failing} of {impls} implementation{'s' * (impls != 1)})")
    return (f"PASSED: {ran} applicable cases conform ({total} cases, {impls} "
            f"implementation{'s' * (impls != 1)})")


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
