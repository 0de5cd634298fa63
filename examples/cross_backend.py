"""Run one attention problem on every backend installed here and grade it against float64.

The same inputs (NumPy float64, moved to each backend) go through
``attnspec.scaled_dot_product_attention`` with grouped-query heads, a lower-right causal
mask, per-sequence KV lengths (one of them 0, so a fully masked row), an additive bias and a
softcap. The script prints, per backend and dtype, the worst error against the float64
result, whether the fully masked rows came out as exactly 0 with lse -inf, and the time.

Exit status 0 when every backend agrees within its dtype's tolerance, 1 otherwise.
Usage: python examples/cross_backend.py
"""

from __future__ import annotations

import sys
import time

import numpy as np

import attnspec
from attnspec.backends import all_backends

# Loose on purpose: a demonstration, not the conformance rule (that is issue 3's suite).
TOLERANCE = {"float64": 1e-12, "float32": 1e-5, "float16": 4e-3, "bfloat16": 3e-2}


def problem(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "query": rng.standard_normal((2, 8, 16, 64)),
        "key": rng.standard_normal((2, 2, 48, 64)),
        "value": rng.standard_normal((2, 2, 48, 32)),
        "bias": rng.standard_normal((1, 8, 16, 48)),
        "kv_lengths": np.array([40, 0]),
    }


def run(backend, arrays: dict[str, np.ndarray], dtype: str):
    args = {
        name: backend.from_numpy(a, dtype=None if name == "kv_lengths" else dtype)
        for name, a in arrays.items()
    }
    def call():
        return attnspec.scaled_dot_product_attention(
            args["query"], args["key"], args["value"], bias=args["bias"],
            kv_lengths=args["kv_lengths"], causal=True, alignment="lower_right", softcap=30.0,
            return_lse=True,
        )

    backend.synchronize(call()[0])  # the first call pays for imports and JAX's op caches
    start = time.perf_counter()
    out, lse = call()
    backend.synchronize(out)
    seconds = time.perf_counter() - start
    return backend.to_numpy(out).astype(np.float64), backend.to_numpy(lse), seconds


def main() -> int:
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
    except ImportError:
        pass
    arrays = problem(np.random.default_rng(0))
    golden, _, _ = run(next(b for b in all_backends() if b.name == "numpy"), arrays,
                                "float64")
    scale = np.abs(golden).max()
    print(f"attnspec {attnspec.__version__}: B=2, Hq=8, Hkv=2, Lq=16, Lk=48, D=64, causal "
          "lower_right, kv_lengths=[40, 0], bias, softcap=30")
    print(f"{'backend':<18}{'dtype':<10}{'max |err|/max|out|':>20}{'empty rows':>12}"
          f"{'ms':>9}  verdict")
    failures = 0
    for backend in all_backends():
        if not backend.available:
            print(f"{backend.name:<18}{'-':<10}{'':>20}{'':>12}{'':>9}  skipped: {backend.reason}")
            continue
        for dtype in ("float64", "float32", "float16", "bfloat16"):
            if dtype not in backend.dtypes:
                continue
            try:
                out, lse, seconds = run(backend, arrays, dtype)
            except Exception as exc:  # a broken backend is reported, never fatal
                failures += 1
                print(f"{backend.name:<18}{dtype:<10}  ERROR {type(exc).__name__}: {exc}")
                continue
            err = np.abs(out - golden).max() / scale
            empty_ok = bool(np.all(out[1] == 0) and np.all(lse[1] == -np.inf))
            ok = err <= TOLERANCE[dtype] and empty_ok and np.isfinite(out).all()
            failures += not ok
            empty = "0 / -inf" if empty_ok else "WRONG"
            print(f"{backend.name:<18}{dtype:<10}{err:>20.2e}{empty:>12}{seconds * 1e3:>9.1f}  "
                  f"{'ok' if ok else 'FAIL'}")
    print("all backends agree with float64" if not failures else f"{failures} disagreement(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
