"""Independent query blocks of host NumPy arrays on a small thread pool.

NumPy releases the GIL inside matmul, ufuncs and reductions, so the query blocks of the
chunked path (independent: each has its own running max and sum) can run at once on the
host's cores. The BLAS library is held to one thread per block meanwhile (threadpoolctl),
else two blocks would each start a BLAS team on two cores. Measured on 2 cores (benchmarks/):
(2, 8, 1024) fp32 went from 20% to about 45% of the machine's matmul rate.

Only for host NumPy arrays (and array-api-strict, which wraps them): torch runs its own
intra-op thread pool, JAX and Dask schedule their own work, and GPU arrays are not the
host's to split. Results are those of the serial loop: every block computes the same thing
in either schedule (one BLAS thread or several give the same sums on OpenBLAS, which splits
the output, not the dot products).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import array_api_compat

from ._namespace import Array, Namespace

T = TypeVar("T")
R = TypeVar("R")

#: Environment variable: the most threads attnspec's pool uses (1 turns the pool off).
THREADS_ENV = "ATTNSPEC_NUM_THREADS"
#: The pool pays off above this much work (multiply-adds of both matmuls): handing blocks
#: to threads costs tens of microseconds, a block of this size about a millisecond.
MIN_PARALLEL_WORK = 2**23

_state = threading.local()  # .inside: this thread is one of the pool's
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_controller: Any = None  # threadpoolctl.ThreadpoolController, made on first use
_limits_held = 0
_limiter: Any = None
_warned: set[str] = set()


def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries (4 ms to build: once), or None when
    threadpoolctl is not installed (then there is no pool: BLAS could not be held to one
    thread per block)."""
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - a dependency of attnspec
            _controller = False
        else:
            _controller = ThreadpoolController().select(user_api="blas")
    return _controller or None


def threads() -> int:
    """How many threads the pool uses: ``ATTNSPEC_NUM_THREADS`` if set, else the cores this
    process may run on, never more than BLAS is allowed (a caller who holds BLAS to one
    thread, e.g. ``OPENBLAS_NUM_THREADS=1``, gets a serial attnspec too)."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if text:
        try:
            return max(1, int(text))
        except ValueError:
            if text not in _warned:  # a typo slows attnspec down, it changes no result
                _warned.add(text)
                warnings.warn(f"{THREADS_ENV} must be a positive integer; got {text!r}: "
                              "ignored (the default, one thread per core, is used)",
                              RuntimeWarning, stacklevel=2)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    controller = _blas_controller()
    if controller is None:
        return 1
    blas = max((lib.num_threads for lib in controller.lib_controllers), default=cores)
    if _limits_held:  # our own limit of 1 is in force: read what it replaced
        blas = cores
    return max(1, min(cores, blas, 8))


def eligible(x: Array, xp: Namespace) -> bool:
    """Arrays whose blocks the pool may run: eager host NumPy (or array-api-strict over it),
    not called from inside the pool itself (a nested call runs its blocks serially)."""
    if getattr(_state, "inside", False):
        return False
    return bool(array_api_compat.is_numpy_array(x)
                or array_api_compat.is_array_api_strict_namespace(xp))


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS at one thread while any caller's blocks run; the caller's own setting back after
    the last (calls from several threads of the user's program may overlap)."""
    global _limits_held, _limiter
    controller = _blas_controller()
    with _lock:
        if _limits_held == 0 and controller is not None:
            _limiter = controller.limit(limits=1)
        _limits_held += 1
    try:
        yield
    finally:
        with _lock:
            _limits_held -= 1
            if _limits_held == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None


def _mark_inside() -> None:
    _state.inside = True


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers != n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="attnspec",
                                       initializer=_mark_inside)
        return _pool


def run_blocks(fn: Callable[[T], R], items: Sequence[T], costs: Sequence[float],
               parallel: bool) -> list[R]:
    """``[fn(item) for item in items]``, on the pool when ``parallel`` and there is more
    than one item; the costliest items start first so that no thread is left with a long
    one at the end (causal blocks grow along the diagonal)."""
    n = threads() if parallel and len(items) > 1 else 1
    if n <= 1:
        return [fn(item) for item in items]
    order = sorted(range(len(items)), key=lambda i: -costs[i])
    # Each block runs in a copy of the caller's context: NumPy's errstate (a context
    # variable) and any other context the caller set hold in the pool's threads too.
    context = contextvars.copy_context()
    with _one_blas_thread():
        done = list(_executor(n).map(lambda i: context.copy().run(fn, items[i]), order))
    results: list[Any] = [None] * len(items)
    for i, r in zip(order, done, strict=True):
        results[i] = r
    return results
