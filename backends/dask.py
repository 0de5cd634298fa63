"""Dask backend ("dask"): lazy, chunked NumPy through ``array_api_compat.dask.array``.

Arrays are split along the leading axis (two chunks when it has more than one element) so
that tests exercise multi-chunk graphs, not a single NumPy block in disguise.
"""

from __future__ import annotations

from typing import Any

from ._base import Backend, import_optional

__all__ = ["DaskBackend", "backends", "leading_axis_chunks"]

#: Where this module's backends come in :func:`attnspec.backends.all_backends`.
REGISTRY_ORDER = 50


def leading_axis_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunk sizes that split the leading axis in two (when it has size > 1).

    Parameters
    ----------
    shape : tuple of int
        Array shape.

    Returns
    -------
    tuple of int
        One chunk size per axis for :func:`dask.array.from_array`.
    """
    if not shape:
        return ()
    first = shape[0]
    lead = (first + 1) // 2 if first > 1 else max(first, 1)
    return (lead, *(max(n, 1) for n in shape[1:]))


class DaskBackend(Backend):
    """Dask arrays of NumPy chunks on the CPU. Lazy; no bfloat16 (NumPy has none)."""

    static_capabilities = frozenset({"lazy", "writeable", "float64", "float16"})

    def __init__(self) -> None:
        super().__init__("dask", "dask")

    def _probe(self) -> str | None:
        _, reason = import_optional("dask.array", "Dask")
        return reason

    def _why_not(self, name: str) -> str:
        return "Dask arrays are NumPy chunks and NumPy has no bfloat16"

    def _make_device(self) -> Any:
        return "cpu"

    def _dtype(self, name: str) -> Any:
        import numpy as np

        return np.dtype(name)

    def _from_numpy(self, host: Any, dtype: str | None) -> Any:
        import dask.array as da

        from_array: Any = da.from_array  # untyped
        return from_array(host, chunks=leading_axis_chunks(host.shape))

    def _to_numpy(self, x: Any) -> Any:
        import numpy as np

        if hasattr(x, "compute"):
            x = x.compute()
        return np.asarray(x)


def backends() -> list[Backend]:
    """The backends this module provides."""
    return [DaskBackend()]
