"""A one-minute before/after check of the figures issue 16 is about, for a quiet window.

    python benchmarks/ab.py                          # this checkout's attnspec
    PYTHONPATH=/path/to/old/checkout python benchmarks/ab.py   # another commit's, to compare

Prints NumPy GFLOP/s as a share of the machine's fp32 matmul rate measured in the same run,
torch's portable path over SDPA on the same inputs, and the (1, 1, 1, 8) call against the
bare NumPy expression and SDPA. Best of a few calls after a warm-up; no targets: the full
harness (benchmarks/run.py) evaluates those.
"""

from __future__ import annotations

import functools
import timeit

import numpy as np
import torch
from timing import best

import attnspec


def _per_call_us(fn, number):
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    print(f"attnspec from {attnspec.__file__}")
    rng = np.random.default_rng(0)
    a = rng.random((2048, 2048), dtype=np.float32)
    rate = 2 * 2048**3 / best(lambda: a @ a) / 1e9
    print(f"machine fp32 matmul: {rate:.0f} GFLOP/s")
    f = torch.nn.functional.scaled_dot_product_attention
    for b, h, n, causal in [(2, 8, 1024, False), (1, 8, 512, True), (1, 8, 512, False),
                            (1, 8, 2048, True)]:
        qkv = [rng.standard_normal((b, h, n, 64), dtype=np.float32) for _ in range(3)]
        tqkv = [torch.from_numpy(x) for x in qkv]
        flop = 4 * b * h * n * n * 64 * (0.5 if causal else 1)
        attention = functools.partial(attnspec.scaled_dot_product_attention, causal=causal)
        t = best(functools.partial(attention, *qkv))
        tt = best(functools.partial(attention, *tqkv))
        ts = best(functools.partial(f, *tqkv, is_causal=causal))
        c = " causal" if causal else ""
        print(f"({b},{h},{n}){c}: numpy {flop / t / 1e9:.0f} GFLOP/s = "
              f"{flop / t / 1e9 / rate:.0%} of matmul; torch / SDPA {tt / ts:.2f}x")
    x = rng.random((1, 1, 1, 8), dtype=np.float32)

    def bare():
        s = x @ np.swapaxes(x, -1, -2) * 0.35
        e = np.exp(s - s.max(-1, keepdims=True))
        return (e @ x) / e.sum(-1, keepdims=True)

    numpy_call = _per_call_us(lambda: attnspec.scaled_dot_product_attention(x, x, x), 2000)
    bare_call = _per_call_us(bare, 2000)
    tx = torch.from_numpy(x)
    torch_call = _per_call_us(lambda: attnspec.scaled_dot_product_attention(tx, tx, tx), 1000)
    sdpa_call = _per_call_us(lambda: f(tx, tx, tx), 1000)
    print(f"(1,1,1,8): numpy {numpy_call:.1f} us (bare {bare_call:.1f} us, "
          f"{numpy_call - bare_call:.1f} above); torch {torch_call:.1f} us "
          f"(SDPA {sdpa_call:.1f} us)")


if __name__ == "__main__":
    main()
