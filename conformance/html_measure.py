"""What the HTML report's plots and failure list say of one result's numbers.

A result holds its worst error relative to max|golden| and the tolerance it was held to. A
case whose output held NaN (or inf) where the golden is finite fails before any error is
measured: the result then has no error and a tolerance of 0, and only its message says what
came back. :class:`Measures` reads that message ("out[0, 1]: expected 0.0, got nan") to
show the failure as NaN, and takes the tolerance the finite entries are held to from the
case's other results (every implementation's result of a case has the same golden and naive
reference, so the same tolerance), so a NaN failure is shown with its tolerance.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .precision import EPS
from .report import Report
from .results import CaseResult, Outcome

__all__ = ["Measure", "Measures", "resolution"]

_GOT = re.compile(r"\bgot (?:np\.\w+\()?(nan|-?inf)\b", re.IGNORECASE)
_OUTPUT = re.compile(r"^(\w+)[\[:]")


def resolution(dtype: str) -> float:
    """The smallest error worth drawing for ``dtype``: its unit roundoff (eps / 2), rounded
    down to a power of ten (float64 1e-16, float32 1e-8, float16 1e-4, bfloat16 1e-3). An
    error below it (an exact 0, a denormal) is drawn there instead of stretching the axis
    down to 1e-41."""
    eps = EPS.get(dtype, EPS["float64"])
    return float(10.0 ** math.floor(math.log10(eps / 2)))


@dataclass(frozen=True)
class Measure:
    """One result's numbers as the report shows them."""

    #: The finite error (relative to max|golden|); None where there is none.
    error: float | None
    #: "NaN", "inf" or "-inf": what came back where a finite value was due; "non-finite"
    #: when the message does not say which; "" for a finite error.
    nonfinite: str
    #: The bound the (finite) error is held to; None where no result of the case has one.
    tolerance: float | None
    #: Worst error / tolerance over the graded outputs (1 = at the bound); NaN for a
    #: non-finite failure; None where there is no tolerance (exact checks).
    fraction: float | None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class Measures:
    """The :class:`Measure` of each result of one report."""

    def __init__(self, report: Report) -> None:
        #: (case, output) -> the tolerance some result of the case was held to
        self._tolerances: dict[tuple[str, str], float] = {}
        for r in report.results:
            for name, numbers in (r.errors or {}).items():
                if isinstance(numbers, dict):
                    tol = _number(numbers.get("tolerance"))
                    if tol is not None and math.isfinite(tol) and tol > 0:
                        self._tolerances.setdefault((r.case_id, name), tol)

    def __call__(self, r: CaseResult) -> Measure | None:
        """None when the result measured nothing (an exception, a timeout, a crash, a wrong
        shape or dtype, a case not run)."""
        error = _number(r.max_error)
        tolerance = _number(r.tolerance)
        if error is not None and math.isfinite(error):
            if tolerance is None or not math.isfinite(tolerance) or tolerance < 0:
                return Measure(error, "", None, None)
            return Measure(error, "", tolerance, self._fraction(r, error, tolerance))
        if r.outcome not in (Outcome.FAIL, Outcome.XFAIL, Outcome.XPASS):
            return None
        kind = ""
        if error is not None:  # a report made in this process: inf or nan
            kind = "NaN" if math.isnan(error) else ("inf" if error > 0 else "-inf")
        else:
            got = _GOT.search(r.message or "")
            if got:
                word = got.group(1).lower()
                kind = "NaN" if word == "nan" else word
            elif "non-finite" in (r.message or ""):
                kind = "non-finite"
        if not kind:
            return None  # a wrong shape, a wrong dtype, a missing output: nothing to plot
        return Measure(None, kind, self._tolerance_of(r), math.nan)

    def _tolerance_of(self, r: CaseResult) -> float | None:
        found = _OUTPUT.match(r.message or "")
        output = found.group(1) if found else "out"
        return self._tolerances.get((r.case_id, output))

    @staticmethod
    def _fraction(r: CaseResult, error: float, tolerance: float) -> float | None:
        worst: float | None = None
        for numbers in (r.errors or {}).values():
            if not isinstance(numbers, dict):
                continue
            e, t = _number(numbers.get("error")), _number(numbers.get("tolerance"))
            if e is None or t is None or not (math.isfinite(e) and math.isfinite(t)):
                continue
            value = e / t if t > 0 else (0.0 if e == 0 else math.inf)
            worst = value if worst is None else max(worst, value)
        if worst is None:
            worst = error / tolerance if tolerance > 0 else (0.0 if error == 0 else math.inf)
        return worst
