"""The report of a conformance run: what ran, where, and every case's outcome.

Its JSON form is versioned (``SCHEMA_VERSION``; the JSON Schema is ``report.schema.json``
beside this file). Reports from several runs (other machines, other backends) merge into one.
"""

from __future__ import annotations

import json
import platform
import sys
from collections import Counter
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import attnspec

from .coverage import INSUFFICIENT, Coverage, report_coverage
from .results import CaseResult, ImplementationInfo, Outcome

__all__ = ["COMPLETE", "INTERRUPTED", "SCHEMA_VERSION", "Report", "environment",
           "rule_outcome"]

SCHEMA_VERSION = "1.3"

#: ``Report.status`` values: every planned case ran, or the run was interrupted (Ctrl-C) and
#: the report holds the results gathered until then.
COMPLETE = "complete"
INTERRUPTED = "interrupted"


def environment() -> dict[str, Any]:
    """Python, platform and the versions of the array libraries that are imported."""
    libraries = {}
    for name in ("numpy", "torch", "jax", "jaxlib", "cupy", "dask", "array_api_strict",
                 "array_api_compat", "onnxruntime", "scipy", "flash_attn"):
        module = sys.modules.get(name)
        if module is not None:
            libraries[name] = str(getattr(module, "__version__", "?"))
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "libraries": libraries,
    }


def _verdict_text(report: Report) -> str:
    from .views import verdict  # views renders reports; imported here, not at load

    return verdict(report)


def rule_outcome(result: CaseResult, rule: str) -> Outcome:
    """What ``result`` shows about ``rule``: its outcome, or not applicable when the result
    is no evidence for the rule (``result.not_graded``: an lse rule without an lse)."""
    if rule in (result.not_graded or {}) and result.outcome.ok:
        return Outcome.NOT_APPLICABLE
    return result.outcome


@lru_cache(maxsize=1)
def _reader_schema() -> dict[str, Any]:
    """``report.schema.json`` as :meth:`Report.from_json` applies it: a field that an older
    1.x report may lack (one with a default; ``verdict`` and ``coverage``, which a reader
    recomputes) is not required; every field present is checked."""
    from .schema import load_schema

    schema = load_schema()
    schema["required"] = ["schema_version", "implementations", "results"]
    for name, kind in (("result", CaseResult), ("implementation", ImplementationInfo)):
        schema["$defs"][name]["required"] = [
            f.name for f in fields(kind) if f.default is MISSING and f.default_factory is MISSING]
    return schema


@dataclass
class Report:
    implementations: list[ImplementationInfo] = field(default_factory=list)
    results: list[CaseResult] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=environment)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    attnspec_version: str = attnspec.__version__
    stale_xfails: list[str] = field(default_factory=list)
    schema_version: str = SCHEMA_VERSION
    #: ``"complete"``, or ``"interrupted"`` for the partial report of a run stopped by
    #: Ctrl-C (its results are the ones gathered until then).
    status: str = COMPLETE

    # -- verdicts -----------------------------------------------------------------------

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.outcome.ok]

    @property
    def interrupted(self) -> bool:
        return self.status == INTERRUPTED

    @property
    def exit_code(self) -> int:
        """0 when every applicable case passed (expected failures allowed) and every
        implementation's coverage suffices (:mod:`.coverage`); 1 when a case failed (or an
        expected failure passed), and for a partial, interrupted report; 3
        (``coverage.INSUFFICIENT``) when nothing failed but the evidence is too thin for a
        verdict."""
        if self.failed or self.interrupted:
            return 1
        return INSUFFICIENT if self.insufficient() else 0

    def coverage(self) -> dict[str, Coverage]:
        """Implementation name -> its coverage, for every implementation that could run."""
        names = [i.name for i in self.implementations]
        names += [n for n in dict.fromkeys(r.implementation for r in self.results)
                  if n not in names]
        options = self.options if isinstance(self.options, dict) else {}
        partial = bool(options.get("select") or options.get("dtypes"))
        return report_coverage(self.implementations, self.results, names, partial=partial)

    def insufficient(self) -> list[str]:
        """Why the evidence does not support a verdict, one line per implementation (and one
        when no implementation could be graded at all); empty when it does."""
        found = self.coverage()
        if not found:
            unavailable = [i.name for i in self.implementations if i.unavailable]
            why = (f" ({', '.join(unavailable)} unavailable here)" if unavailable else "")
            return [f"no implementation was graded{why}"]
        return [f"{name}: {cov.problem()}" for name, cov in found.items()
                if not cov.sufficient]

    def counts(self) -> dict[str, Counter[str]]:
        """Outcome counts per implementation."""
        counts: dict[str, Counter[str]] = {}
        for r in self.results:
            counts.setdefault(r.implementation, Counter())[r.outcome.value] += 1
        return counts

    def by_rule(self) -> dict[str, dict[str, Outcome]]:
        """implementation -> rule -> worst outcome over that rule's cases."""
        order = [Outcome.CRASH, Outcome.TIMEOUT, Outcome.ERROR, Outcome.FAIL, Outcome.XPASS,
                 Outcome.XFAIL, Outcome.PASS, Outcome.NOT_APPLICABLE]
        matrix: dict[str, dict[str, Outcome]] = {}
        for r in self.results:
            row = matrix.setdefault(r.implementation, {})
            for rule in r.rules:
                outcome = rule_outcome(r, rule)
                current = row.get(rule)
                if current is None or order.index(outcome) < order.index(current):
                    row[rule] = outcome
        return matrix

    # -- JSON ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "status": self.status,
            "created": self.created,
            "attnspec_version": self.attnspec_version,
            "environment": self.environment,
            "options": self.options,
            "implementations": [asdict(i) for i in self.implementations],
            "results": [r.to_json() for r in self.results],
            "stale_xfails": self.stale_xfails,
            "verdict": {"exit_code": self.exit_code, "text": _verdict_text(self)},
            "coverage": [c.to_json() for c in self.coverage().values()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """The report whose JSON form (:meth:`to_json`, or a saved report parsed) is ``data``,
        validated against ``report.schema.json``.

        A report of an older 1.x schema loads: what its version did not have takes its
        default (``status`` complete, ``errors`` empty, ...); ``verdict`` and ``coverage``
        are recomputed from the results, and may be absent.

        Raises
        ------
        TypeError
            When ``data`` is not a dict (a JSON object).
        ValueError
            For another major schema version, or a value that does not match the schema: the
            message gives the JSON path of the first one (``$.results[0].max_error:
            expected number or null, got string 'big'``) and how many more there are.
        """
        from .schema import validate

        if not isinstance(data, dict):
            raise TypeError(f"a report must be a JSON object, got {type(data).__name__}")
        version = str(data.get("schema_version", ""))
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(
                f"report schema version {version!r} is not readable by this attnspec "
                f"(schema {SCHEMA_VERSION})"
            )
        problems = validate(data, _reader_schema())
        if problems:
            more = len(problems) - 1
            raise ValueError(f"not a valid attnspec report: {problems[0]}"
                             + (f" (and {more} more problem{'s' * (more != 1)})" if more
                                else ""))
        return cls(
            implementations=[ImplementationInfo(**i) for i in data["implementations"]],
            results=[CaseResult.from_json(r) for r in data["results"]],
            options=data.get("options", {}), environment=data.get("environment", {}),
            created=data.get("created", ""), attnspec_version=data.get("attnspec_version", ""),
            stale_xfails=data.get("stale_xfails", []), schema_version=version,
            status=data.get("status", COMPLETE),  # schema 1.0 had no status: complete
        )

    def save(self, path: str | Path) -> None:
        """Write the JSON report, atomically (a reader never sees half of it)."""
        from .atomic import write_text

        write_text(path, json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """Read a JSON report (see :meth:`from_json`).

        Raises
        ------
        ValueError
            Naming ``path``, for a file that cannot be read, is not UTF-8 JSON, nests deeper
            than ``schema.MAX_DEPTH`` or is not a valid report.
        """
        from .schema import read_json

        data = read_json(path, what="a JSON report")
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a JSON report (a {type(data).__name__}, expected "
                             "an object)")
        try:
            return cls.from_json(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    @classmethod
    def merge(cls, reports: list[Report]) -> Report:
        """One report from several: implementations from different runs stay apart (a name
        seen twice gets its backend/device appended when those differ)."""
        merged = cls(options={"merged_from": [r.created for r in reports]},
                     status=INTERRUPTED if any(r.interrupted for r in reports) else COMPLETE)
        places: dict[str, set[tuple[str, str]]] = {}
        for report in reports:
            for info in report.implementations:
                places.setdefault(info.name, set()).add((info.backend, info.device))
        for report in reports:
            rename = {i.name: f"{i.name} ({i.backend}, {i.device})"
                      for i in report.implementations if len(places[i.name]) > 1}
            merged.implementations.extend(
                replace(i, name=rename.get(i.name, i.name)) for i in report.implementations)
            merged.results.extend(
                replace(r, implementation=rename.get(r.implementation, r.implementation))
                for r in report.results)
            merged.stale_xfails.extend(report.stale_xfails)
        return merged
