"""Inputs and zero-argument callables for every measurement (timing and memory share them).

Every callable returns its result already synchronised (CUDA stream drained, JAX buffer
ready), so timing it times the computation, not the dispatch.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import shutil
from collections.abc import Callable
from typing import Any

from configs import Config

__all__ = [
    "NATIVE_IMPLEMENTATION",
    "NOT_COMPILED",
    "NOT_COMPILED_JAX",
    "NOT_HAND",
    "Unavailable",
    "attention_call",
    "bare_numpy_call",
    "features",
    "framework_versions",
    "inputs",
    "matmul_call",
    "memcpy_call",
    "variant_reason",
]

#: The value passed as ``implementation=`` for the ``native`` variant.
NATIVE_IMPLEMENTATION = "native"
#: Why the ``compiled`` variant is torch's only (reasons that never change: no table row).
NOT_COMPILED_JAX = "torch.compile is torch's (the JAX rows run under jax.jit already)"
NOT_COMPILED = "torch.compile is torch's; these arrays have no compiler"
#: Why the ``hand`` variant is missing elsewhere (a reason that never changes: no table row).
NOT_HAND = "written by hand for NumPy and torch-cpu only"
#: Backends whose framework has its own attention kernel.
_KERNELS = {
    "torch-cpu": "torch.nn.functional.scaled_dot_product_attention",
    "torch-cuda": "torch.nn.functional.scaled_dot_product_attention",
    "jax-cpu": "jax.nn.dot_product_attention (jit)",
    "jax-gpu": "jax.nn.dot_product_attention (jit)",
}


class Unavailable(Exception):
    """This measurement cannot be made here (reported as n/a, not as an error)."""


def features() -> dict[str, bool]:
    """Which of the keywords/functions the harness measures this attnspec has."""
    import attnspec

    params = inspect.signature(attnspec.scaled_dot_product_attention).parameters
    return {
        "chunk_size": "chunk_size" in params,
        "implementation": "implementation" in params,
        "merge": callable(getattr(attnspec, "merge", None)),
    }


def kernel_name(backend: str) -> str | None:
    return _KERNELS.get(backend)


def variant_reason(backend: str, variant: str, feats: dict[str, bool]) -> str | None:
    """Why ``variant`` cannot be measured on ``backend`` (``None``: it can)."""
    if variant in ("direct", "chunked") and not feats["chunk_size"]:
        return "attnspec has no chunk_size keyword yet"
    if variant == "native":
        if backend not in _KERNELS:
            return "the framework has no attention kernel"
        if not feats["implementation"]:
            return "attnspec has no implementation= keyword yet"
    if variant == "compiled":
        if not backend.startswith("torch"):
            return NOT_COMPILED_JAX if backend.startswith("jax") else NOT_COMPILED
        if backend == "torch-cpu" and not any(
                shutil.which(c) for c in ("g++", "c++", "clang++")):
            return "torch.compile's CPU code generation needs a C++ compiler; none on PATH"
    if variant == "hand" and backend not in ("numpy", "torch-cpu"):
        return NOT_HAND
    if variant == "kernel" and backend not in _KERNELS:
        return "the framework has no attention kernel"
    if variant == "bare" and backend != "numpy":
        return "bare expression is NumPy only"
    return None


def framework_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("attnspec", "numpy", "torch", "jax", "jaxlib", "cupy-cuda12x", "cupy",
                 "array-api-compat", "pytest-benchmark", "matplotlib"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def _backend(name: str):
    from attnspec.backends import get

    b = get(name)
    if not b.available:
        raise Unavailable(b.reason)
    return b


def _check_dtype(backend, dtype: str) -> None:
    if dtype not in backend.dtypes:
        raise Unavailable(f"{backend.name} has no {dtype}")


def inputs(backend_name: str, cfg: Config, seed: int = 0) -> tuple[Any, Any, Any]:
    """q, k, v of shape ``(B, H, L, D)`` on the backend, standard normal, in ``cfg.dtype``."""
    import numpy as np

    b = _backend(backend_name)
    _check_dtype(b, cfg.dtype)
    rng = np.random.default_rng(seed)
    host = "float32" if cfg.dtype == "bfloat16" else cfg.dtype

    def draw(length):
        return rng.standard_normal((cfg.B, cfg.H, length, cfg.D), dtype=np.float32).astype(
            host, copy=False)

    return tuple(b.from_numpy(x, cfg.dtype if cfg.dtype == "bfloat16" else None)
                 for x in (draw(cfg.Lq), draw(cfg.Lk), draw(cfg.Lk)))


def _attnspec_kwargs(cfg: Config, variant: str, block) -> dict:
    kw: dict[str, Any] = {"causal": cfg.causal}
    if variant == "direct":
        kw["chunk_size"] = 0
    elif variant == "chunked":
        kw["chunk_size"] = block
    elif variant == "native":
        kw["implementation"] = NATIVE_IMPLEMENTATION
    return kw


def attention_call(backend_name: str, cfg: Config, variant: str, block=512,
                   qkv: tuple | None = None) -> Callable[[], Any]:
    """A zero-argument callable computing ``cfg`` with ``variant`` on the backend.

    Raises :class:`Unavailable` when the measurement cannot be made here.
    """
    import attnspec

    reason = variant_reason(backend_name, variant, features())
    if reason is not None:
        raise Unavailable(reason)
    b = _backend(backend_name)
    q, k, v = qkv if qkv is not None else inputs(backend_name, cfg)
    sync = _sync(b)

    if variant == "bare":
        return bare_numpy_call(q, k, v, cfg.causal)
    if variant == "hand":
        if cfg.dtype not in ("float32", "float64"):
            raise Unavailable(f"hand: {cfg.dtype} would be rounded in its scores; the spec "
                              "accumulates it in float32")
        if cfg.Lq != cfg.Lk:
            raise Unavailable("hand: written for Lq == Lk, the shapes its targets compare "
                              "(a decode step needs no blocks)")
        from hand import hand_call

        return hand_call(b.framework, q, k, v, cfg.causal)

    framework = b.framework
    if variant == "kernel":
        if framework == "torch":
            import torch.nn.functional as F

            def run():
                return sync(F.scaled_dot_product_attention(q, k, v, is_causal=cfg.causal))

            return run
        if framework == "jax":
            import jax

            # The kernel gets its own layout (B, L, H, D), prepared outside the timing.
            qb, kb, vb = (jax.block_until_ready(attnspec.bhld_to_blhd(x)) for x in (q, k, v))
            f = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(
                q, k, v, is_causal=cfg.causal))
            return lambda: f(qb, kb, vb).block_until_ready()
        raise Unavailable(f"no kernel for {framework}")

    kw = _attnspec_kwargs(cfg, variant, block)
    if variant == "compiled":
        import torch

        # A fresh cache per measurement: Dynamo keys compiled code on the function's code
        # object and falls back to eager after 8 shapes, which would time eager as compiled.
        torch._dynamo.reset()
        compiled = torch.compile(
            lambda q, k, v: attnspec.scaled_dot_product_attention(q, k, v, **kw),
            dynamic=False)
        return lambda: sync(compiled(q, k, v))
    if framework == "jax":
        import jax

        f = jax.jit(lambda q, k, v: attnspec.scaled_dot_product_attention(q, k, v, **kw))
        return lambda: f(q, k, v).block_until_ready()
    sdpa = attnspec.scaled_dot_product_attention
    return lambda: sync(sdpa(q, k, v, **kw))


def _sync(b) -> Callable[[Any], Any]:
    """The backend's synchronize, or nothing at all on host backends (timing tiny calls)."""
    if b.name in ("numpy", "torch-cpu"):
        return lambda x: x
    return b.synchronize


def bare_numpy_call(q, k, v, causal: bool = False) -> Callable[[], Any]:
    """The attention of ``q, k, v`` as a bare NumPy expression (no checks, no masks)."""
    import numpy as np

    if causal:
        raise Unavailable("bare expression is non-causal only")
    kt = np.swapaxes(k, -1, -2)
    scale = 1.0 / math.sqrt(q.shape[-1])

    def run():
        s = (q @ kt) * scale
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return (e @ v) / e.sum(axis=-1, keepdims=True)

    return run


def matmul_call(backend_name: str, n: int) -> Callable[[], Any]:
    """``C = A @ B`` for square float32 ``n x n`` matrices (``2 n^3`` flop)."""
    import numpy as np

    b = _backend(backend_name)
    rng = np.random.default_rng(1)
    a_h, b_h = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    x, y = b.from_numpy(a_h), b.from_numpy(b_h)
    if b.framework == "jax":
        import jax

        f = jax.jit(lambda x, y: x @ y)
        return lambda: f(x, y).block_until_ready()
    if b.framework == "torch":
        import torch

        out = torch.empty_like(x)
        return lambda: b.synchronize(torch.matmul(x, y, out=out))
    if b.framework in ("numpy", "cupy"):
        xp = np if b.framework == "numpy" else __import__("cupy")
        out = xp.empty_like(x)
        return lambda: b.synchronize(xp.matmul(x, y, out=out))
    raise Unavailable(f"no matmul for {b.framework}")


def memcpy_call(backend_name: str, nbytes: int) -> Callable[[], Any]:
    """Copy one ``nbytes`` buffer into another, preallocated (``nbytes`` copied per call)."""
    import numpy as np

    b = _backend(backend_name)
    n = nbytes // 4
    if b.framework == "numpy":
        src = np.ones(n, dtype=np.float32)
        dst = np.zeros_like(src)
        return lambda: np.copyto(dst, src)
    if b.framework == "torch":
        import torch

        src = torch.ones(n, dtype=torch.float32, device=b.device)
        dst = torch.zeros_like(src)
        return lambda: b.synchronize(dst.copy_(src))
    if b.framework == "cupy":
        import cupy

        with b.device:
            src = cupy.ones(n, dtype=cupy.float32)
            dst = cupy.zeros_like(src)
        return lambda: b.synchronize(cupy.copyto(dst, src))
    raise Unavailable(f"{b.framework} has no in-place copy (arrays are immutable)")
