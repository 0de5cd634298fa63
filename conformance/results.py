"""Outcomes of a conformance run: one :class:`CaseResult` per (implementation, case)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

__all__ = ["CaseResult", "ImplementationInfo", "Outcome"]


class Outcome(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"  # the implementation raised where a value was expected
    TIMEOUT = "timeout"
    CRASH = "crash"  # the worker process died (segfault, abort, os._exit)
    NOT_APPLICABLE = "not-applicable"  # outside the implementation's declared features
    XFAIL = "xfail"  # failed as an expected failure (xfail entry, declared deviation) says
    XPASS = "xpass"  # an expected failure's case passed: strict, it fails the run

    @property
    def ok(self) -> bool:
        """Outcomes that do not fail a run. An unexpected pass (XPASS) does: the expected
        failure it contradicts is out of date, and a report that keeps it says something
        false about the implementation."""
        return self in (Outcome.PASS, Outcome.NOT_APPLICABLE, Outcome.XFAIL)

    @property
    def graded(self) -> bool:
        """The case was sent to the implementation and its answer judged."""
        return self is not Outcome.NOT_APPLICABLE


@dataclass
class CaseResult:
    case_id: str
    rules: list[str]
    implementation: str
    backend: str
    device: str
    dtype: str
    op: str
    params: dict[str, Any]
    outcome: Outcome
    seed: int
    max_error: float | None = None  # relative to max|golden|
    tolerance: float | None = None  # the bound, same scale
    ratio: float | None = None  # err(impl) / err(naive)
    message: str = ""
    seconds: float = 0.0
    #: Per graded output (``out``, ``lse``, ``weights``, ``dq``, ``dk``, ``dv``, ``dbias``):
    #: ``{"error": ..., "tolerance": ..., "ratio": ...}`` on the scale of ``max_error``.
    #: Schema 1.2; empty where nothing was graded (and in older reports).
    errors: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: Rules of the case this result is no evidence for, with the reason (``"ATT-LSE-1":
    #: "no lse returned"``): the matrix shows them as not applicable. Schema 1.3.
    not_graded: dict[str, str] = field(default_factory=dict)
    #: For a not-applicable case: the features it needs that the implementation does not
    #: declare (coverage groups the reasons by them). Schema 1.3.
    missing: list[str] = field(default_factory=list)
    #: How to reproduce a failure: an ``attnspec repro`` command line. Schema 1.3.
    repro: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        for key in ("max_error", "tolerance", "ratio"):
            # JSON has no NaN/inf: a non-finite error (a wrong shape, a NaN) is null and the
            # message says why.
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = None
        data["errors"] = {name: {k: (v if v is None or math.isfinite(v) else None)
                                 for k, v in numbers.items()}
                          for name, numbers in self.errors.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseResult:
        return cls(**{**data, "outcome": Outcome(data["outcome"])})


@dataclass
class ImplementationInfo:
    name: str
    backend: str
    device: str
    description: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    unavailable: str | None = None
    #: What coverage is judged against (schema 1.3): the operations it implements, the
    #: dtypes it supports here, the declared deviations (expected failures with their
    #: evidence), the options it cannot combine, and the library under test.
    ops: list[str] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    deviations: list[dict[str, Any]] = field(default_factory=list)
    exclusive: list[list[str]] = field(default_factory=list)
    library: str = ""
