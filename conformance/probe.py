"""One fingerprint question: a small ungraded case, and the candidate its output is closest to.

A probe answers with one of its ``answers``, or ``"other"`` (no candidate matched), ``"n/a"``
(the adapter cannot express the probe's inputs) or ``"error: <ExceptionClass>"`` (the call
raised): a fingerprint never fails, it describes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .adapters.base import Adapter, AdapterOutput
from .case_params import params_for
from .cases import Case, Inputs, make_inputs
from .catalog import required_features
from .features import BEHAVIOURS
from .precision import EPS

__all__ = ["FULL", "HALF", "NOT_APPLICABLE", "OTHER", "Call", "Probe", "nearest"]

NOT_APPLICABLE = "n/a"
OTHER = "other"

#: ``call(case, inputs)`` runs a case on the implementation (``Adapter.run`` or the runner's
#: wrapper around it) and may raise.
Call = Callable[[Case, Inputs], AdapterOutput]

#: dtypes a probe runs in, best first: float32 is the one nearly every implementation has.
FULL = ("float32", "float64", "float16", "bfloat16")
HALF = ("float16", "bfloat16")

#: A candidate matches when it is within this many machine epsilons of the output (relative
#: to max|V|, which bounds every candidate's output): loose enough for an implementation's
#: own rounding on these short rows, far tighter than the gap between candidates.
_CLOSE_EPS = 8.0


def _scale(inputs: Mapping[str, Any]) -> float:
    v = np.asarray(inputs["value"])
    finite = v[np.isfinite(v)]
    return float(np.max(np.abs(finite))) if finite.size else 1.0


def nearest(got: np.ndarray, candidates: Mapping[str, np.ndarray], tol: float) -> str | None:
    """The candidate closest to ``got`` within ``tol`` (NaN only where it has NaN)."""
    best: tuple[float, str] | None = None
    for label, want in candidates.items():
        want = np.broadcast_to(want, got.shape)
        if not np.array_equal(np.isnan(got), np.isnan(want)):
            continue
        finite = np.isfinite(want)
        if (~np.isfinite(got) & finite).any() or (np.isinf(want) & (got != want)).any():
            continue
        err = float(np.max(np.abs(got[finite] - want[finite]))) if finite.any() else 0.0
        if err <= tol and (best is None or err < best[0]):
            best = (err, label)
    return None if best is None else best[1]


@dataclass(frozen=True, eq=False)
class Probe:
    """One question the fingerprint asks.

    Attributes
    ----------
    name : str
        Key in the fingerprint.
    question : str
        One line for reports.
    rule : str
        The spec rule the question is about.
    spec : str
        The answer docs/spec.md gives.
    answers : tuple of str
        Every answer the probe can give besides ``"other"``, ``"n/a"`` and ``"error: ..."``.
    variants : tuple of (str, dict)
        Case parameters, tried in order: the first the adapter can express is run.
    dtypes : tuple of str
        dtypes the probe may run in, best first.
    prepare : callable, optional
        ``prepare(inputs, rng)`` edits ``make_inputs``'s output in place.
    candidates : callable
        ``candidates(case, inputs) -> {answer: expected float64 out}`` on :attr:`region`.
    region : callable, optional
        ``region(inputs, out) -> array``: the part of ``out`` the question is about.
    nonfinite : str, optional
        The answer for an output holding NaN/inf that matches no candidate.
    classify : callable, optional
        ``classify(case, inputs, out) -> answer`` replacing the nearest-candidate rule.
    """

    name: str
    question: str
    rule: str
    spec: str
    answers: tuple[str, ...]
    variants: tuple[tuple[str, dict[str, Any]], ...]
    candidates: Callable[[Case, Inputs], dict[str, np.ndarray]] | None = None
    dtypes: tuple[str, ...] = FULL
    prepare: Callable[[Inputs, np.random.Generator], None] | None = None
    region: Callable[[Inputs, np.ndarray], np.ndarray] | None = None
    nonfinite: str | None = None
    classify: Callable[[Case, Inputs, np.ndarray], str] | None = None

    def case(self, adapter: Adapter | None) -> Case | None:
        """The probe's case for ``adapter`` (``None`` when it can express no variant)."""
        available = adapter.dtypes() if adapter is not None else FULL
        dtype = next((d for d in self.dtypes if d in available), None)
        if dtype is None:
            return None
        for label, params in self.variants:
            case = Case(
                id=f"probe/{self.name}/{label}/{dtype}", op="attention", rules=(self.rule,),
                dtype=dtype, params=params_for("attention", params),
                features=required_features("attention", params, dtype),
            )
            # Behaviour features are what the probe observes, declared or not.
            declared = replace(case, features=case.features - BEHAVIOURS)
            if adapter is None or adapter.not_applicable(declared) is None:
                return case
        return None

    def inputs(self, case: Case) -> Inputs:
        inputs = make_inputs(case)
        if self.prepare is not None:
            self.prepare(inputs, np.random.default_rng(case.seed ^ 0x5EED))
        return inputs

    def observe(self, call: Call, adapter: Adapter | None = None) -> str:
        """Run the probe through ``call`` and classify the output."""
        case = self.case(adapter)
        if case is None:
            return NOT_APPLICABLE
        inputs = self.inputs(case)
        try:
            # The probes feed NaN, inf and empty rows on purpose: warnings about them (or a
            # filter that turns them into errors) are not the implementation's answer.
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                result = call(case, inputs)
        except Exception as exc:  # the implementation's failure is the observation
            return f"error: {type(exc).__name__}"
        try:
            out = np.asarray(result.outputs["out"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            return OTHER  # no out, or not an array of numbers
        with np.errstate(all="ignore"):
            if out.shape != (*inputs["query"].shape[:-1], inputs["value"].shape[-1]):
                return OTHER
            if self.classify is not None:
                return self.classify(case, inputs, out)
            return self._nearest(case, inputs, out)

    def _nearest(self, case: Case, inputs: Inputs, out: np.ndarray) -> str:
        if self.candidates is None:
            raise TypeError(f"probe {self.name!r}: give candidates or classify")
        candidates = self.candidates(case, inputs)
        got = out if self.region is None else self.region(inputs, out)
        tol = _CLOSE_EPS * EPS[case.dtype] * _scale(inputs)
        answer = nearest(got, candidates, tol)
        if answer is not None:
            return answer
        if self.nonfinite is not None and not np.isfinite(got).all():
            return self.nonfinite
        return OTHER
