"""The one timing rule of the stand-alone benchmark scripts: best of ``rounds`` calls after
one warm-up call (allocations, thread pools and caches are then warm; the minimum is the
figure least moved by other work on the machine)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best(fn: Callable[[], Any], rounds: int = 5) -> float:
    """Seconds of the fastest of ``rounds`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
