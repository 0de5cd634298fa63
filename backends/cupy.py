"""CuPy backend ("cupy"): NumPy-compatible arrays on the current CUDA device."""

from __future__ import annotations

import importlib
from typing import Any

from ._base import ACCELERATOR, Backend, import_optional

__all__ = ["CupyBackend", "backends"]

#: Where this module's backends come in :func:`attnspec.backends.all_backends`.
REGISTRY_ORDER = 40


class CupyBackend(Backend):
    """CuPy on CUDA device 0. Writeable, eager (but asynchronous); no bfloat16."""

    static_capabilities = frozenset({"writeable", "float64", "float16"})
    kind = ACCELERATOR

    def __init__(self) -> None:
        super().__init__("cupy", "cupy")

    def _probe(self) -> str | None:
        cupy, reason = import_optional("cupy", "CuPy")
        if reason is not None:
            return reason
        try:
            # A device-count query only; it does not create a CUDA context.
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception:
            return "cupy: no CUDA device"
        return None if count > 0 else "cupy: no CUDA device"

    def _why_not(self, name: str) -> str:
        return "CuPy has no bfloat16" if name == "bfloat16" else super()._why_not(name)

    def _make_device(self) -> Any:
        cupy = _cupy()

        return cupy.cuda.Device(0)

    def _dtype(self, name: str) -> Any:
        import numpy as np

        return np.dtype(name)

    def _from_numpy(self, host: Any, dtype: str | None) -> Any:
        cupy = _cupy()

        # Host-to-device copy; DLPack cannot move data across devices.
        with self.device:
            return cupy.asarray(host)

    def _to_numpy(self, x: Any) -> Any:
        cupy = _cupy()

        return cupy.asnumpy(x)

    def _synchronize(self, x: Any) -> None:
        cupy = _cupy()

        if x is not None and hasattr(x, "device"):
            with x.device:
                cupy.cuda.get_current_stream().synchronize()
        else:
            with self.device:
                cupy.cuda.get_current_stream().synchronize()


def _cupy() -> Any:
    """The ``cupy`` module (imported on use; it has no type stubs)."""
    return importlib.import_module("cupy")


def backends() -> list[Backend]:
    """The backends this module provides."""
    return [CupyBackend()]
