"""``benchmarks/hand.py``, the ceiling the benchmark compares attnspec with, computes
attention: against a float64 closed form written here, on NumPy and torch, with lengths
that are no multiple of its 64-row blocks, causal or not. A ceiling that computed less
(a skipped block, a wrong mask) would flatter every framework it bounds."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hand():
    spec = importlib.util.spec_from_file_location("_attnspec_bench_hand",
                                                  ROOT / "benchmarks" / "hand.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _closed_form(q, k, v, causal: bool) -> np.ndarray:
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    return (w / w.sum(axis=-1, keepdims=True)) @ v


def _inputs(shape_q, lk, seed=0):
    rng = np.random.default_rng(seed)
    *batch, lq, d = shape_q
    return (rng.standard_normal((*batch, lq, d), dtype=np.float32),
            rng.standard_normal((*batch, lk, d), dtype=np.float32),
            rng.standard_normal((*batch, lk, d), dtype=np.float32))


CASES = [((2, 3, 150, 16), 150, True), ((2, 3, 150, 16), 150, False),
         ((1, 2, 7, 8), 200, False), ((1, 1, 64, 8), 64, True),
         # enough work for the NumPy thread pool (2^23 multiply-adds)
         ((1, 4, 256, 64), 256, True)]


@pytest.mark.parametrize(("shape_q", "lk", "causal"), CASES)
@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_hand_is_attention(framework: str, shape_q, lk: int, causal: bool) -> None:
    q, k, v = _inputs(shape_q, lk)
    expected = _closed_form(q, k, v, causal)
    if framework == "torch":
        torch = pytest.importorskip("torch", reason="torch: not installed")
        q, k, v = (torch.from_numpy(x) for x in (q, k, v))
    run = _hand().hand_call(framework, q, k, v, causal)
    for _ in range(2):  # the scratch buffers are reused by the second call
        got = np.asarray(run())
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)


def test_hand_refuses_what_it_does_not_compute() -> None:
    hand = _hand()
    q, k, v = _inputs((1, 1, 4, 8), 6)
    with pytest.raises(ValueError, match="Lq == Lk"):
        hand.hand_call("numpy", q, k, v, True)
    with pytest.raises(ValueError, match="jax"):
        hand.hand_call("jax", q, k, v, False)
