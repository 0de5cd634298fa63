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
    XFAIL = "xfail"  # failed as an xfail entry says it would
    XPASS = "xpass"  # an xfail entry's case passed

    @property
    def ok(self) -> bool:
        """Outcomes that do not fail a run."""
        return self in (Outcome.PASS, Outcome.NOT_APPLICABLE, Outcome.XFAIL, Outcome.XPASS)


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
