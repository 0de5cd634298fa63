"""array-api-strict backend ("array_api_strict"): the standard and nothing more.

Useful to prove that attnspec uses only the Array API: any non-standard call fails here.
"""

from __future__ import annotations

from typing import Any

from ._base import Backend, import_optional

__all__ = ["ArrayApiStrictBackend", "backends"]

#: Where this module's backends come in :func:`attnspec.backends.all_backends`.
REGISTRY_ORDER = 10


class ArrayApiStrictBackend(Backend):
    """array-api-strict on its default (CPU) device. No float16/bfloat16 (not in the standard)."""

    static_capabilities = frozenset({"writeable", "float64"})

    def __init__(self) -> None:
        super().__init__("array_api_strict", "array_api_strict")

    def _probe(self) -> str | None:
        _, reason = import_optional("array_api_strict", "array-api-strict")
        return reason

    def _why_not(self, name: str) -> str:
        return "the Array API standard has no float16/bfloat16"

    def _make_namespace(self) -> Any:
        import array_api_strict

        return array_api_strict

    def _make_device(self) -> Any:
        import array_api_strict

        return array_api_strict.__array_namespace_info__().default_device()

    def _dtype(self, name: str) -> Any:
        import array_api_strict

        return getattr(array_api_strict, name)

    def _from_numpy(self, host: Any, dtype: str | None) -> Any:
        import array_api_strict

        return array_api_strict.asarray(host, device=self.device, copy=True)

    def _to_numpy(self, x: Any) -> Any:
        import numpy as np

        # Strict arrays need not support __array__; DLPack is the standard way out.
        return np.from_dlpack(x)


def backends() -> list[Backend]:
    """The backends this module provides."""
    return [ArrayApiStrictBackend()]
