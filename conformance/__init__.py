"""attnspec.conformance: the conformance suite that grades attention implementations
against docs/spec.md (cases, golden references, tolerance policy, adapters, runner, reports).

>>> from attnspec.conformance import run
>>> report = run(["attnspec[numpy]"], select=["lse/"], fingerprint=False)  # doctest: +SKIP
>>> report.exit_code  # doctest: +SKIP
0

The names below are imported on first use, so that ``import attnspec.conformance`` stays
cheap (no array framework, no worker machinery): ``run``, ``Report``, ``catalog``,
``Outcome``, ``CaseResult``, ``ImplementationInfo``, ``RunInterrupted`` (what ``run`` raises
on Ctrl-C; its ``report`` holds the results gathered so far).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CaseResult", "ImplementationInfo", "Outcome", "Report", "RunInterrupted", "catalog",
           "run"]

_LAZY = {
    "run": ".api",
    "RunInterrupted": ".api",
    "Report": ".report",
    "catalog": ".catalog",
    "Outcome": ".results",
    "CaseResult": ".results",
    "ImplementationInfo": ".results",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
