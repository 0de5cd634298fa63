"""Declared deviations: where an implementation knowingly differs from the spec.

A framework that gives the mean of V for a fully masked row, or lets a masked NaN key reach
every row, does not get those cases marked "not applicable": it is graded on them, and its
adapter declares the deviation, with its evidence. A case a deviation covers is then an
expected failure (``xfail``, shown as ``x``) when it fails, and an unexpected pass
(``xpass``, which fails the run) when it passes: a deviation that no longer shows is out of
date, and the report must not keep saying it.

Built-in adapters list theirs in their ``deviations`` attribute; a ``module:callable``
declares them in its capabilities::

    [[deviations]]
    features = ["extreme"]          # the cases that need every one of these features
    reason = "no max subtraction: logits above ~88 overflow"
    issue = "https://github.com/me/kernel/issues/12"   # optional
    dtypes = ["float16"]            # optional: only these dtypes
    cases = "extreme/*"             # optional: a glob on case IDs

At least one of ``features`` and ``cases`` selects the cases; the others narrow them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .cases import Case
from .features import FEATURES
from .results import CaseResult, Outcome

__all__ = ["DEVIATION_KEYS", "Deviation", "apply_deviations", "parse_deviations"]

DEVIATION_KEYS = ("features", "cases", "dtypes", "reason", "issue", "fingerprint")
_DTYPES = ("float64", "float32", "float16", "bfloat16")
_FAILING = (Outcome.FAIL, Outcome.ERROR, Outcome.TIMEOUT, Outcome.CRASH)


@dataclass(frozen=True)
class Deviation:
    """One known difference from the spec.

    Attributes
    ----------
    reason : str
        One line: what the implementation does instead, and why.
    features : frozenset of str
        The cases that need every one of these features (``features.FEATURES``).
    cases : str, optional
        A glob on case IDs.
    dtypes : tuple of str
        Only cases of these dtypes (empty: every dtype).
    fingerprint : str
        The fingerprint answer that shows it (``"fully_masked_row=mean_v"``), if any.
    issue : str
        The upstream issue or documentation, if any.
    when : callable, optional
        ``when(case) -> bool``: a further condition (built-in adapters only), described in
        words by ``condition``.
    condition : str
        The words for ``when`` in reports.
    """

    reason: str
    features: frozenset[str] = frozenset()
    cases: str | None = None
    dtypes: tuple[str, ...] = ()
    fingerprint: str = ""
    issue: str = ""
    when: Callable[[Case], bool] | None = field(default=None, compare=False)
    condition: str = ""

    def matches(self, case: Case) -> bool:
        """Whether the deviation covers ``case``."""
        if not self.features <= case.features:
            return False
        if self.cases is not None and not (case.id == self.cases
                                           or fnmatch.fnmatchcase(case.id, self.cases)):
            return False
        if self.dtypes and case.dtype not in self.dtypes:
            return False
        return self.when is None or bool(self.when(case))

    def selection(self) -> str:
        """Which cases, in words (``"cases needing poison_scores, float16"``)."""
        parts = []
        if self.features:
            parts.append("cases needing " + " and ".join(sorted(self.features)))
        if self.cases:
            parts.append(f"cases {self.cases}")
        if self.dtypes:
            parts.append(", ".join(self.dtypes))
        if self.condition:
            parts.append(self.condition)
        return "; ".join(parts) or "every case"

    def note(self) -> str:
        """The evidence in one line: reason, fingerprint answer, upstream issue."""
        text = self.reason
        if self.fingerprint:
            text += f" [fingerprint {self.fingerprint}]"
        if self.issue:
            text += f" ({self.issue})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "selection": self.selection(),
                "features": sorted(self.features), "cases": self.cases,
                "dtypes": list(self.dtypes), "fingerprint": self.fingerprint,
                "issue": self.issue}


def apply_deviations(result: CaseResult, case: Case, deviations: Sequence[Deviation]
                     ) -> Deviation | None:
    """Turn ``result`` into an expected failure (or an unexpected pass) when a deviation
    covers its case; the first one that does wins. Returns it (``None`` when none does)."""
    deviation = next((d for d in deviations if d.matches(case)), None)
    if deviation is None:
        return None
    if result.outcome in _FAILING:
        detail = (f"{result.outcome.value}: {result.message}" if result.message
                  else result.outcome.value)
        result.outcome = Outcome.XFAIL
        result.message = f"declared deviation: {deviation.note()}; {detail}"
    elif result.outcome is Outcome.PASS:
        result.outcome = Outcome.XPASS
        result.message = (f"passed, but declared as a deviation ({deviation.note()}): the "
                          "deviation is out of date")
    return deviation


def parse_deviations(value: Any, where: str) -> tuple[Deviation, ...]:
    """Deviations from a capabilities declaration (a list of tables).

    Raises
    ------
    TypeError, ValueError
        For a value that is not a list of tables, unknown keys, unknown features or dtypes,
        an empty reason, or an entry that selects nothing.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{where}: deviations must be a list of tables, got "
                        f"{type(value).__name__}")
    found = []
    for index, entry in enumerate(value, 1):
        at = f"{where}: deviations[{index}]"
        if not isinstance(entry, Mapping):
            raise TypeError(f"{at} must be a table, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(DEVIATION_KEYS))
        if unknown:
            raise ValueError(f"{at}: unknown keys {unknown}; known keys: "
                             f"{', '.join(DEVIATION_KEYS)}")
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"{at}: reason must be a non-empty string (what the "
                             f"implementation does instead), got {reason!r}")
        features = _strings(entry.get("features", []), f"{at}: features")
        bad = sorted(set(features) - set(FEATURES))
        if bad:
            raise ValueError(f"{at}: unknown features {bad}; expected some of: "
                             f"{', '.join(FEATURES)}")
        dtypes = _strings(entry.get("dtypes", []), f"{at}: dtypes")
        bad = sorted(set(dtypes) - set(_DTYPES))
        if bad:
            raise ValueError(f"{at}: unknown dtypes {bad}; expected some of: "
                             f"{', '.join(_DTYPES)}")
        cases = entry.get("cases")
        if cases is not None and (not isinstance(cases, str) or not cases.strip()):
            raise ValueError(f"{at}: cases must be a glob on case IDs, got {cases!r}")
        if not features and cases is None:
            raise ValueError(f"{at}: give features or cases: which cases deviate")
        for key in ("issue", "fingerprint"):
            if not isinstance(entry.get(key, ""), str):
                raise TypeError(f"{at}: {key} must be a string, got {entry[key]!r}")
        found.append(Deviation(reason.strip(), frozenset(features), cases,
                                tuple(dtypes), entry.get("fingerprint", ""),
                                entry.get("issue", "")))
    return tuple(found)


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(
            isinstance(v, str) for v in value):
        raise TypeError(f"{where} must be a list of strings, got {value!r}")
    return list(value)
