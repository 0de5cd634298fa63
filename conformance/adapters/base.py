"""What an adapter is: a callable plus its layout, mask convention and declared features.

An adapter receives a case's inputs as NumPy float64 arrays (already rounded to the case
dtype), moves them to its backend in the case dtype, calls the implementation, and hands
back NumPy outputs plus the dtype names the implementation produced. Subclasses implement
:meth:`Adapter.call` in the implementation's own terms (layout, mask polarity, argument
names); everything else (availability, applicability, data movement) lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from attnspec.backends import Backend, get

from ..cases import Case

__all__ = ["Adapter", "AdapterOutput", "dtype_name"]

#: Input names the base moves to the backend; everything else is passed as is.
_FLOAT_ARRAYS = ("query", "key", "value", "bias", "x", "w_q", "w_k", "w_v", "w_o",
                 "b_q", "b_k", "b_v", "b_o")


def dtype_name(x: Any) -> str:
    """``torch.float32`` / ``array_api_strict.float32`` / ``float32`` -> ``float32``."""
    return str(getattr(x, "dtype", type(x).__name__)).rsplit(".", 1)[-1]


@dataclass
class AdapterOutput:
    outputs: dict[str, np.ndarray]
    dtypes: dict[str, str]


class Adapter:
    """Base class of every implementation under test.

    Attributes
    ----------
    name : str
        The name reports use (``torch.sdpa``, ``attnspec[jax-cpu]``, ``mypkg.attn:fwd``).
    backend_name : str
        The ``attnspec.backends`` backend whose arrays the implementation takes.
    ops : frozenset of str
        Operations implemented: ``attention``, ``mha``, ``softmax``, ``log_softmax``,
        ``logsumexp``.
    features : frozenset of str
        Declared features (``attnspec.conformance.features.FEATURES``); a case needing more
        is not applicable.
    description : str
        One line for reports.
    """

    name: str = "adapter"
    backend_name: str = "numpy"
    ops: frozenset[str] = frozenset({"attention"})
    features: frozenset[str] = frozenset()
    description: str = ""
    #: dtypes the implementation supports at most (the backend may support fewer).
    supported_dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")

    # -- availability -------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        return get(self.backend_name)

    def unavailable(self) -> str | None:
        """Why this adapter cannot run here (``None`` when it can)."""
        backend = self.backend
        return None if backend.available else backend.reason

    def versions(self) -> dict[str, str]:
        """Versions of the libraries the implementation comes from."""
        return {}

    def dtypes(self) -> tuple[str, ...]:
        backend_dtypes = self.backend.dtypes if self.backend.available else ()
        return tuple(d for d in self.supported_dtypes if d in backend_dtypes)

    def not_applicable(self, case: Case) -> str | None:
        """Why ``case`` is outside this adapter's declaration (``None`` when applicable)."""
        if case.op not in self.ops:
            return f"does not implement {case.op}"
        if case.dtype not in self.dtypes():
            return f"no {case.dtype} on {self.backend_name}"
        missing = sorted(case.features - self.features)
        if missing:
            return "does not declare " + ", ".join(missing)
        return None

    # -- running ------------------------------------------------------------------------

    def to_backend(self, case: Case, inputs: dict[str, Any]) -> dict[str, Any]:
        """Inputs as backend arrays: floats in the case dtype, bools and ints as they are."""
        backend = self.backend
        overrides = inputs.get("__dtypes__", {})
        args: dict[str, Any] = {}
        for name, value in inputs.items():
            if name.startswith("__"):
                continue
            if isinstance(value, np.ndarray):
                dtype = overrides.get(name, case.dtype) if name in _FLOAT_ARRAYS else None
                if dtype is not None and dtype not in backend.dtypes:
                    # A mixed-dtype case only needs *another* dtype than the case's.
                    dtype = next(d for d in backend.dtypes if d != case.dtype)
                args[name] = backend.from_numpy(value, dtype=dtype)
            else:
                args[name] = value
        return args

    def run(self, case: Case, inputs: dict[str, Any]) -> AdapterOutput:
        """Run the case; exceptions propagate (the runner records them)."""
        results = self.call(case, self.to_backend(case, inputs))
        backend = self.backend
        backend.synchronize(results.get("out"))
        outputs = {name: np.asarray(backend.to_numpy(x)) for name, x in results.items()}
        return AdapterOutput(outputs, {name: dtype_name(x) for name, x in results.items()})

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        """Call the implementation with backend arrays; return ``out`` (and ``lse``,
        ``weights`` where it can) as backend arrays in the spec's layout."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
