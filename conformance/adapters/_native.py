"""Shared helpers of the adapters for native (non-attnspec) implementations.

Nothing here imports a framework: adapters are built in the parent process to list and
select them, and only a worker that runs cases imports torch, JAX or ONNX Runtime.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

from ..deviations import Deviation
from .base import Adapter

__all__ = ["NativeAdapter", "distribution_version", "missing_module"]


def distribution_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (read from metadata, no import)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_module(module: str, label: str) -> str | None:
    """``"<label>: not installed"`` when ``module`` cannot be found, else ``None``."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"{label}: not installed"


class NativeAdapter(Adapter):
    """An adapter for a framework's own function, on one of a fixed set of backends.

    Parameters
    ----------
    backend_name : str, optional
        One of :attr:`backends` (the first, a CPU backend, by default).

    Attributes
    ----------
    backends : tuple of str
        Backends the implementation can run on, CPU first.
    distributions : tuple of str
        Distributions whose versions :meth:`versions` reports.
    requires : tuple of (module, label)
        Modules that must be importable besides the backend's framework.
    """

    backends: tuple[str, ...] = ("numpy",)
    distributions: tuple[str, ...] = ()
    requires: tuple[tuple[str, str], ...] = ()
    #: Backends on which the adapter declares ``deterministic`` (measured bit-identical
    #: over repeated calls; the conformance run checks it).
    deterministic_on: tuple[str, ...] = ()
    #: Deviations that hold on one backend only (a CPU kernel's), added to ``deviations``
    #: there: declared everywhere, they would be unexpected passes elsewhere.
    deviations_on: tuple[tuple[str, Deviation], ...] = ()

    def __init__(self, backend_name: str | None = None) -> None:
        if backend_name is None:
            backend_name = self.backends[0]
        if backend_name not in self.backends:
            raise ValueError(
                f"backend: {self.name} runs on {', '.join(self.backends)}, "
                f"not {backend_name!r}"
            )
        self.backend_name = backend_name
        if backend_name in self.deterministic_on:
            self.features = frozenset(self.features | {"deterministic"})
        here = tuple(d for name, d in self.deviations_on if name == backend_name)
        if here:
            self.deviations = (*self.deviations, *here)
        self._kernel_reason: str | bool | None = False  # False: not probed yet

    def unavailable(self) -> str | None:
        for module, label in self.requires:
            reason = missing_module(module, label)
            if reason is not None:
                return reason
        reason = super().unavailable()
        if reason is None and self._kernel_reason is False:
            self._kernel_reason = self._probe_kernel()  # once: it may build a model
        return reason if reason is not None else self._kernel_reason  # type: ignore[return-value]

    def _probe_kernel(self) -> str | None:
        """Why the implementation cannot run although its modules import (a build without
        the kernel), found by running it once; ``None`` when it runs."""
        return None

    def versions(self) -> dict[str, str]:
        found = {name: distribution_version(name) for name in self.distributions}
        return {name: version for name, version in found.items() if version is not None}

    def __reduce__(self) -> tuple[Any, ...]:
        # Re-created from its class and backend in a worker process (no cached state).
        return (type(self), (self.backend_name,))
