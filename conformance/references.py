"""A case's inputs and references (golden and naive), made once per case for every
implementation, in the parent, before any implementation's code runs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .cases import Case, CaseKind, Inputs, make_inputs
from .messages import RaisedError
from .worker import quiet

__all__ = ["CaseCache", "Prepared", "prepare"]


@dataclass
class Prepared:
    """A case's inputs and references (``error`` set when attnspec itself failed)."""

    inputs: Inputs | None = None
    golden: dict[str, np.ndarray] | None = None
    naive: dict[str, np.ndarray] | None = None
    error: str | None = None


@dataclass
class CaseCache:
    """Inputs, golden and naive references per case, made once for all implementations."""

    _items: dict[str, Prepared] = field(default_factory=dict)

    def get(self, case: Case) -> Prepared:
        prepared = self._items.get(case.id)
        if prepared is None:
            prepared = self._items[case.id] = prepare(case)
        return prepared


def prepare(case: Case) -> Prepared:
    """Make a case's inputs and (for value cases) its golden and naive references."""
    from .golden import GoldenMismatchError, golden, naive

    try:
        with quiet():
            inputs = make_inputs(case)
    except Exception as exc:
        return Prepared(error=f"internal error of attnspec: making the inputs failed: "
                              f"{RaisedError.from_exception(exc)}")
    if case.expect != "value":
        return Prepared(inputs=inputs)
    if case.kind is CaseKind.DETERMINISM:
        # A determinism case compares an implementation's calls with each other, not with
        # a reference (the values are graded by the other cases).
        return Prepared(inputs, {}, {})
    try:
        with quiet():
            return Prepared(inputs, golden(case, inputs), naive(case, inputs))
    except GoldenMismatchError as exc:
        return Prepared(error=f"internal error of attnspec (the golden reference disagrees "
                              f"with its closed form): GoldenMismatchError: {exc}")
    except Exception as exc:
        return Prepared(error=f"internal error of attnspec: the golden reference failed: "
                              f"{RaisedError.from_exception(exc)}")


