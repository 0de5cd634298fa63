"""How much an exponential costs when its result is 0 or subnormal, on the CPU.

Every masked score reaches the softmax's ``exp`` as ``-inf`` (ATT-MASK-1), and a score more
than ~87 below its row's max gives a float32 result below the smallest normal number. Some
``exp`` implementations take a slow path for those: torch's CPU ``exp`` (MKL's vector math
library in the official wheels; pytorch/pytorch#48388 for the same effect in GELU) and, for
subnormal results, NumPy's. This prints the time per element of ``exp`` on the same array
shape with ordinary arguments, with every argument ``-inf``, and with arguments near -100
(subnormal and zero results), and the ratio to the ordinary case, measured in the same run::

    python benchmarks/exp_underflow.py

It is why attnspec never computes blocks that a mask, a causal band or padding empties
(they would be mostly ``-inf``), rather than computing and masking them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from timing import best

SHAPE = (8, 256, 512)



def main() -> None:
    rng = np.random.default_rng(0)
    ordinary = rng.standard_normal(SHAPE).astype(np.float32)
    inputs = {"ordinary (N(0, 1))": ordinary,
              "-inf (masked)": np.full(SHAPE, -np.inf, dtype=np.float32),
              "about -100 (subnormal/0)": ordinary - 100}
    libraries: dict[str, Callable[[np.ndarray], Callable[[], Any]]] = {
        "numpy": lambda x: lambda: np.exp(x)}
    try:
        import torch

        libraries["torch"] = lambda x: (lambda t: lambda: torch.exp(t))(torch.from_numpy(x))
    except ImportError:
        print("torch: not installed")
    n = ordinary.size
    for name, make in libraries.items():
        # Each input timed once; the ordinary row is the base (a second timing of it would
        # print a ratio other than 1.0x on a busy machine).
        times = {label: best(make(x), 10) for label, x in inputs.items()}
        base = times["ordinary (N(0, 1))"]
        for label, t in times.items():
            print(f"{name:6s} {label:26s} {t / n * 1e9:7.2f} ns/element  {t / base:6.1f}x")


if __name__ == "__main__":
    main()
