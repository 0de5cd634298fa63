"""JAX backends ("jax-cpu", "jax-gpu").

float64 is available only while ``jax_enable_x64`` is on; this is checked at call time, so
enabling it after import (as ``tests/conftest.py`` does) is honoured.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._base import ACCELERATOR, HOST, Backend, Vjp, import_optional

__all__ = ["JaxBackend", "backends", "x64_enabled"]

#: Where this module's backends come in :func:`attnspec.backends.all_backends`.
REGISTRY_ORDER = 30


def x64_enabled() -> bool:
    """Whether JAX currently computes in 64 bit (``jax_enable_x64``).

    Returns
    -------
    bool
        ``False`` when JAX is not installed.
    """
    jax = sys.modules.get("jax")
    if jax is None:
        jax, _ = import_optional("jax", "JAX")
        if jax is None:
            return False
    return bool(jax.config.read("jax_enable_x64"))


class JaxBackend(Backend):
    """JAX on one platform ("cpu" or "gpu"). Immutable arrays, jit and autograd."""

    static_capabilities = frozenset({"autograd", "jit", "float16", "bfloat16"})

    def __init__(self, platform: str) -> None:
        super().__init__(f"jax-{platform}", "jax")
        self.platform = platform
        self.kind = HOST if platform == "cpu" else ACCELERATOR

    def _probe(self) -> str | None:
        jax, reason = import_optional("jax", "JAX")
        if reason is not None:
            return reason
        try:
            devices = jax.devices(self.platform)
        except RuntimeError:
            devices = []
        if not devices:
            return f"{self.name}: no {self.platform.upper()} device"
        return None

    def _dynamic_capabilities(self) -> frozenset[str]:
        return frozenset({"float64"}) if x64_enabled() else frozenset()

    def _why_not(self, name: str) -> str:
        if name == "float64":
            return 'enable it with jax.config.update("jax_enable_x64", True)'
        return super()._why_not(name)

    def _make_device(self) -> Any:
        import jax

        return jax.devices(self.platform)[0]

    def _dtype(self, name: str) -> Any:
        import jax.numpy as jnp

        return getattr(jnp, name)

    def _from_numpy(self, host: Any, dtype: str | None) -> Any:
        import jax
        import jax.numpy as jnp

        x = jnp.from_dlpack(host, copy=True)
        if self.platform != "cpu":
            x = jax.device_put(x, self.device)
        if dtype is not None and x.dtype != self._dtype(dtype):
            x = x.astype(self._dtype(dtype))
        return x

    def _to_numpy(self, x: Any) -> Any:
        import jax.numpy as jnp
        import numpy as np

        if x.dtype == jnp.bfloat16:
            x = x.astype(jnp.float32)
        return np.asarray(x)

    def _synchronize(self, x: Any) -> None:
        import jax

        if x is not None:
            jax.block_until_ready(x)  # type: ignore[no-untyped-call]
        else:
            jax.effects_barrier()  # type: ignore[no-untyped-call]

    def vjp(self, forward: Callable[..., Any], primals: Sequence[Any], cotangent: Any,
            *, jit: bool = True) -> Vjp:
        """``jax.vjp`` of ``forward``, under ``jax.jit`` by default (one compilation, on the
        first run, as JAX code runs in practice; what ``forward`` closes over is a constant
        of the program)."""
        import jax

        def vjp(primals: list[Any], cot: Any) -> tuple[Any, Any]:
            out, pullback = jax.vjp(forward, *primals)
            return out, pullback(cot.astype(out.dtype))

        program = jax.jit(vjp) if jit else vjp
        arrays = list(primals)

        def once() -> tuple[Any, list[Any]]:
            out, grads = program(arrays, cotangent)
            return out, list(grads)

        return once


def backends() -> list[Backend]:
    """The backends this module provides."""
    return [JaxBackend("cpu"), JaxBackend("gpu")]
