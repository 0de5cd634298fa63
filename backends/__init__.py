"""Backend registry: which array frameworks and devices attnspec can run on here.

>>> from attnspec.backends import get
>>> xb = get("numpy")
>>> xb.name, xb.available
('numpy', True)

Nothing is imported or probed until asked: :func:`all_backends` only lists the backends;
reading ``available``/``reason`` imports the framework and queries its device count once.

The built-in backends are the modules of this package that define ``backends()``, in the
order of their ``REGISTRY_ORDER``. Other packages add backends through the
``attnspec.backends`` entry-point group (:data:`ENTRY_POINT_GROUP`): an entry point names a
function of no arguments that returns a list of :class:`Backend` (such as a module's
``backends``), or a :class:`Backend`. In ``pyproject.toml``::

    [project.entry-points."attnspec.backends"]
    mylib = "mylib.attnspec_backend:backends"

They come after the built-ins; one whose name is taken, or that fails to load, is skipped
with a ``RuntimeWarning``.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from importlib import metadata
from typing import Any

from ._base import (
    ACCELERATOR,
    CAPABILITIES,
    DTYPE_NAMES,
    HOST,
    Backend,
    BackendUnavailableError,
    DeviceKind,
    NotDifferentiableError,
)

__all__ = [
    "ACCELERATOR",
    "CAPABILITIES",
    "DTYPE_NAMES",
    "ENTRY_POINT_GROUP",
    "HOST",
    "Backend",
    "BackendUnavailableError",
    "DeviceKind",
    "NotDifferentiableError",
    "all_backends",
    "available",
    "device_kind",
    "get",
    "names",
]

#: The entry-point group third-party backends are registered under.
ENTRY_POINT_GROUP = "attnspec.backends"

_REGISTRY: dict[str, Backend] | None = None


def _builtin_modules() -> list[Any]:
    """This package's modules that provide backends, in ``REGISTRY_ORDER``. They import
    their framework lazily, so importing them cannot fail for a missing framework."""
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "backends", None)):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "REGISTRY_ORDER", 1000), m.__name__))


def _from_entry_point(loaded: Any) -> list[Backend]:
    """The backends an entry point's object provides (see the module docstring)."""
    provided = loaded if isinstance(loaded, Backend) else loaded()
    found = [provided] if isinstance(provided, Backend) else list(provided)
    for backend in found:
        if not isinstance(backend, Backend):
            raise TypeError(f"expected Backend objects, got {type(backend).__name__}")
    return found


def _registry() -> dict[str, Backend]:
    global _REGISTRY
    if _REGISTRY is None:
        registry: dict[str, Backend] = {}
        for module in _builtin_modules():
            for backend in module.backends():
                registry[backend.name] = backend
        for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                found = _from_entry_point(entry.load())
            except Exception as exc:  # a broken plugin must not break the registry
                warnings.warn(f"attnspec: backend entry point {entry.name!r} ({entry.value}) "
                              f"failed to load and is skipped: {exc!r}", RuntimeWarning,
                              stacklevel=3)
                continue
            for backend in found:
                if backend.name in registry:
                    warnings.warn(f"attnspec: backend {backend.name!r} of entry point "
                                  f"{entry.name!r} is skipped: the name is taken",
                                  RuntimeWarning, stacklevel=3)
                    continue
                registry[backend.name] = backend
        _REGISTRY = registry
    return _REGISTRY


def device_kind(backend: str | Backend | None = None, device: Any = None) -> DeviceKind:
    """``"host"`` or ``"accelerator"``: where a backend computes, on ``device`` when given.

    The conformance suite's one answer to "is this a GPU" (memory limits, adapter
    selection, large blocks). Imports no framework.

    Parameters
    ----------
    backend : str or Backend, optional
        A registry name (``"torch-cuda"``) or a backend; ``None``: only ``device`` decides.
    device : optional
        A device name (``"cuda"``, ``"cpu"``), a device object or an array.

    Returns
    -------
    str
        ``"accelerator"`` when the backend lives on one or ``device`` is one, else
        ``"host"``.

    Examples
    --------
    >>> from attnspec.backends import device_kind
    >>> device_kind("torch-cuda"), device_kind("numpy"), device_kind("torch-cpu", "cuda")
    ('accelerator', 'host', 'accelerator')
    """
    if backend is None:
        from attnspec._namespace import device_kind as kind_of

        return HOST if device is None else kind_of(device)
    found = get(backend) if isinstance(backend, str) else backend
    return found.device_kind(device)


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
