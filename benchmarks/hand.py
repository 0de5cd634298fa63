"""The ``hand`` variant: attention written by hand with the framework's own eager operations,
at their best, as the ceiling a composed path can reach on that framework.

What attnspec cannot do and this does: ``out=`` and in-place ``exp``/``subtract`` (the
standard has neither), scratch buffers allocated once outside the timed call, no checks, no
masks but the causal one, no empty-row guards, no dtype promotion. What both do: query blocks
of 64 rows over all batch entries and heads, every key in one block (no running rescale:
N <= 4096 here), a causal block reading only the keys up to its last row with its diagonal
square masked in place, and on NumPy the blocks on as many threads as attnspec's pool takes
(``attnspec._parallel``) with BLAS held to one thread each (torch keeps its own intra-op
threads, as attnspec does there).

So ``auto / hand`` is what attnspec's portability and checks cost on that framework, and
``hand``'s share of the matmul rate is the most any composition of the framework's eager
operations reached in the same run: a target above it needs a fused kernel, not a better
composition (docs/performance.md).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from attnspec import _parallel

__all__ = ["ROWS", "hand_call"]

#: Query rows per block (the plateau of the sweep in docs/performance.md for both NumPy and
#: torch at N = 512-4096).
ROWS = 64


def _blocks(lq: int, lk: int, causal: bool) -> list[tuple[int, int, int]]:
    """``(first row, stop row, stop key)`` per block."""
    return [(r, min(r + ROWS, lq), min(r + ROWS, lq) if causal else lk)
            for r in range(0, lq, ROWS)]


def _numpy(q: Any, k: Any, v: Any, causal: bool) -> Callable[[], Any]:
    import numpy as np

    *batch, lq, d = q.shape
    lk = k.shape[-2]
    scale = np.asarray(1.0 / math.sqrt(d), dtype=q.dtype)
    kt = np.ascontiguousarray(np.swapaxes(k, -1, -2))  # once per call, as attnspec does
    tri = np.triu(np.ones((ROWS, ROWS), dtype=bool), 1)  # key after query: masked
    blocks = _blocks(lq, lk, causal)
    # attnspec's own pool and threshold, so that both run on as many threads (its
    # ATTNSPEC_NUM_THREADS and a caller's BLAS limit, e.g. run.py --threads 1, included),
    # costliest blocks first, BLAS held to one thread meanwhile.
    parallel = math.prod(batch) * lq * lk * (d + v.shape[-1]) >= _parallel.MIN_PARALLEL_WORK
    costs = [(r1 - r0) * stop for r0, r1, stop in blocks]
    n_rows = min(ROWS, lq)
    local = threading.local()  # each thread's scratch, allocated on its first block

    def block(r0: int, r1: int, stop: int, out: Any) -> None:
        if not hasattr(local, "flat"):
            local.flat = np.empty(math.prod(batch) * n_rows * lk, q.dtype)
            local.qs = np.empty((*batch, n_rows, d), q.dtype)
        flat, qs = local.flat, local.qs
        rows = r1 - r0
        s = flat[: math.prod(batch) * rows * stop].reshape(*batch, rows, stop)
        np.multiply(q[..., r0:r1, :], scale, out=qs[..., :rows, :])
        np.matmul(qs[..., :rows, :], kt[..., :stop], out=s)
        if causal:
            np.copyto(s[..., r0:r1], -np.inf, where=tri[:rows, :rows])
        m = s.max(axis=-1, keepdims=True)
        np.subtract(s, m, out=s)
        np.exp(s, out=s)
        total = s.sum(axis=-1, keepdims=True)
        o = out[..., r0:r1, :]
        np.matmul(s, v[..., :stop, :], out=o)
        o /= total

    def run() -> Any:
        out = np.empty((*batch, lq, v.shape[-1]), q.dtype)
        _parallel.run_blocks(lambda b: block(*b, out), blocks, costs, parallel)
        return out

    return run


def _torch(q: Any, k: Any, v: Any, causal: bool) -> Callable[[], Any]:
    import torch

    *batch, lq, d = q.shape
    lk = k.shape[-2]
    scale = 1.0 / math.sqrt(d)
    tri = torch.ones((ROWS, ROWS), dtype=torch.bool).triu(1)
    blocks = _blocks(lq, lk, causal)
    n_rows = min(ROWS, lq)
    flat = torch.empty(math.prod(batch) * n_rows * lk, dtype=q.dtype)
    qs = torch.empty((*batch, n_rows, d), dtype=q.dtype)

    def run() -> Any:
        kt = k.transpose(-1, -2).contiguous()
        out = torch.empty((*batch, lq, v.shape[-1]), dtype=q.dtype)
        for r0, r1, stop in blocks:
            rows = r1 - r0
            s = flat[: math.prod(batch) * rows * stop].view(*batch, rows, stop)
            qb = torch.mul(q[..., r0:r1, :], scale, out=qs[..., :rows, :])
            torch.matmul(qb, kt[..., :stop], out=s)
            if causal:
                s[..., r0:r1].masked_fill_(tri[:rows, :rows], -math.inf)
            s.sub_(s.amax(dim=-1, keepdim=True)).exp_()
            total = s.sum(dim=-1, keepdim=True)
            o = torch.matmul(s, v[..., :stop, :])
            out[..., r0:r1, :] = o.div_(total)
        return out

    return run


def hand_call(framework: str, q: Any, k: Any, v: Any, causal: bool) -> Callable[[], Any]:
    """A zero-argument callable computing ``softmax(q k^T / sqrt(D)) v`` by hand on
    ``framework`` ("numpy" or "torch", host arrays of shape ``(*batch, L, D)``, ``Lq == Lk``
    when ``causal``)."""
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"hand: causal needs Lq == Lk, got {q.shape[-2]} and {k.shape[-2]}")
    if framework == "numpy":
        return _numpy(q, k, v, causal)
    if framework == "torch":
        return _torch(q, k, v, causal)
    raise ValueError(f"hand: no hand-written attention for {framework!r}")
