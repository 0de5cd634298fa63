"""Errors grouped by cause, each with the fix a user can apply.

Eighty cases that all raise ``TypeError: ... unexpected keyword argument 'softcap'`` are one
problem with one fix (declare ``exclude = ["softcap"]``), not eighty lines to read. A cause is
the first line of the message with numbers blanked out (shapes and counts differ from case
to case; names do not), per implementation and outcome.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .features import KEYWORDS
from .results import CaseResult, Outcome

__all__ = ["Cause", "causes", "fix_for"]

#: Outcomes worth grouping: the implementation did not give an answer to grade.
_UNGRADED = (Outcome.ERROR, Outcome.CRASH, Outcome.TIMEOUT)

_NUMBER = re.compile(r"(?<![A-Za-z_])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_KEYWORD = re.compile(r"unexpected keyword argument '(\w+)'|unexpected keyword '(\w+)'")

#: keyword -> the feature that passes it (``KEYWORDS`` read backwards).
_FEATURE_OF = {k: feature for feature, names in KEYWORDS.items() for k in names}


@dataclass(frozen=True)
class Cause:
    implementation: str
    outcome: Outcome
    cause: str  # the message's first line, numbers blanked
    count: int
    example: str  # one case ID with this cause
    fix: str  # what to do about it ("" when nothing general applies)


def _key(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "(no message)"
    return _NUMBER.sub("N", first)[:160]


def fix_for(outcome: Outcome, message: str) -> str:
    """The general fix for a message, or ``""``."""
    found = _KEYWORD.search(message)
    if found:
        keyword = found.group(1) or found.group(2)
        feature = _FEATURE_OF.get(keyword)
        if feature is not None:
            return (f"the callable does not take {keyword!r}: declare "
                    f"exclude = [{feature!r}] (or accept the keyword)")
    if "not an array of the inputs' backend" in message:
        return "return arrays of the namespace the inputs came in"
    if "MemoryError" in message:
        return "raise the worker's limit: --memory-limit 8G (or none)"
    if outcome is Outcome.TIMEOUT:
        return "a slow implementation needs a longer --timeout; a hung one, a fix"
    if "no autodiff" in message:
        return "run on torch or JAX, or give the callable an attnspec_backward"
    return ""


def causes(results: Iterable[CaseResult]) -> list[Cause]:
    """Ungraded results (errors, crashes, timeouts) grouped by implementation, outcome and
    cause, most frequent first."""
    groups: dict[tuple[str, Outcome, str], list[CaseResult]] = {}
    for r in results:
        if r.outcome in _UNGRADED:
            groups.setdefault((r.implementation, r.outcome, _key(r.message)), []).append(r)
    found = [Cause(impl, outcome, key, len(rs), rs[0].case_id, fix_for(outcome, rs[0].message))
             for (impl, outcome, key), rs in groups.items()]
    return sorted(found, key=lambda c: (-c.count, c.implementation, c.cause))
