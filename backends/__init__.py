"""Backend registry: which array frameworks and devices attnspec can run on here.

>>> from attnspec.backends import get
>>> xb = get("numpy")
>>> xb.name, xb.available
('numpy', True)

Nothing is imported or probed until asked: :func:`all_backends` only lists the backends;
reading ``available``/``reason`` imports the framework and queries its device count once.
"""

from __future__ import annotations

import importlib

from attnspec.backends._base import (
    CAPABILITIES,
    DTYPE_NAMES,
    Backend,
    BackendUnavailableError,
)

__all__ = [
    "CAPABILITIES",
    "DTYPE_NAMES",
    "Backend",
    "BackendUnavailableError",
    "all_backends",
    "available",
    "get",
    "names",
]

# Framework modules in registry order; each exposes ``backends() -> list[Backend]``.
_MODULES = ("numpy", "array_api_strict", "torch", "jax", "cupy", "dask")

_REGISTRY: dict[str, Backend] | None = None


def _registry() -> dict[str, Backend]:
    global _REGISTRY
    if _REGISTRY is None:
        registry: dict[str, Backend] = {}
        for module_name in _MODULES:
            # These modules import their framework lazily, so importing them cannot fail
            # for a missing framework.
            module = importlib.import_module(f"{__name__}.{module_name}")
            for backend in module.backends():
                registry[backend.name] = backend
        _REGISTRY = registry
    return _REGISTRY


def all_backends() -> list[Backend]:
    """Every registered backend, usable here or not (unusable ones carry a ``reason``).

    Returns
    -------
    list of Backend
        In a fixed order: numpy, array_api_strict, torch-cpu, torch-cuda, jax-cpu, jax-gpu,
        cupy, dask.
    """
    return list(_registry().values())


def names() -> list[str]:
    """Names of every registered backend.

    Returns
    -------
    list of str
    """
    return list(_registry())


def available() -> list[Backend]:
    """The backends usable on this machine (framework installed, device present).

    Returns
    -------
    list of Backend
        Never raises: a framework that fails to import is simply absent.
    """
    return [b for b in _registry().values() if b.available]


def get(name: str) -> Backend:
    """Look a backend up by name.

    Parameters
    ----------
    name : str
        A registry name such as ``"torch-cpu"``.

    Returns
    -------
    Backend
        The backend, which may be unavailable (check ``available``/``reason``).

    Raises
    ------
    ValueError
        If no backend has that name; the message lists the known names.
    """
    registry = _registry()
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown backend {name!r}; known backends: {', '.join(registry)}"
        ) from None
