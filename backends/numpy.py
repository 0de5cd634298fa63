"""NumPy backend ("numpy"): the reference host backend."""

from __future__ import annotations

from typing import Any

from ._base import Backend, import_optional

__all__ = ["NumpyBackend", "backends"]

#: Where this module's backends come in :func:`attnspec.backends.all_backends`.
REGISTRY_ORDER = 0


class NumpyBackend(Backend):
    """NumPy on the CPU. Eager, writeable, no bfloat16 (NumPy has none)."""

    static_capabilities = frozenset({"writeable", "float64", "float16"})

    def __init__(self) -> None:
        super().__init__("numpy", "numpy")

    def _probe(self) -> str | None:
        _, reason = import_optional("numpy", "NumPy")
        return reason

    def _why_not(self, name: str) -> str:
        return "NumPy has no bfloat16" if name == "bfloat16" else super()._why_not(name)

    def _make_device(self) -> Any:
        return "cpu"

    def _dtype(self, name: str) -> Any:
        import numpy as np

        return np.dtype(name)

    def _from_numpy(self, host: Any, dtype: str | None) -> Any:
        return host  # already an owned copy in the requested dtype

    def _to_numpy(self, x: Any) -> Any:
        import numpy as np

        return np.asarray(x)


def backends() -> list[Backend]:
    """The backends this module provides."""
    return [NumpyBackend()]
