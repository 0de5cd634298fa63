"""Implementations that misbehave, for tests/test_conformance_runner.py.

Each has ``attnspec.scaled_dot_product_attention``'s signature on NumPy and is right except
on one trigger: a head dimension of ``TRIGGER_DK`` (3, the ``score/...d3`` cases). There it
raises, hangs, returns the wrong shape or dtype, a non-array, or kills its own process, so
the tests can check the outcome and that the run goes on (later cases pass).

The runner's workers import this module by name (``"runner_impls:raises"``): it lives in
tests/, which pytest puts on ``sys.path`` and the runner hands to its workers.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np

import attnspec
from attnspec.conformance.adapters.base import Adapter
from attnspec.conformance.features import FEATURES

TRIGGER_DK = 3

#: Every feature, so that no selected case is not-applicable.
CAPABILITIES = {"features": sorted(FEATURES)}


def _implementation(misbehave):
    """Wrap ``misbehave(result, query, key) -> result`` into an implementation."""

    def impl(query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
        result = attnspec.scaled_dot_product_attention(query, key, value, **kwargs)
        if query.shape[-1] == TRIGGER_DK:
            return misbehave(result, query, key)
        return result

    impl.attnspec_capabilities = CAPABILITIES
    impl.__name__ = misbehave.__name__
    return impl


def _map_out(result: Any, f) -> Any:
    """Apply ``f`` to ``out`` whether the result is ``out`` or ``(out, lse, ...)``."""
    if isinstance(result, tuple):
        return (f(result[0]), *result[1:])
    return f(result)


@_implementation
def correct(result, query, key):
    return result


@_implementation
def raises(result, query, key):
    raise RuntimeError("boom")


@_implementation
def hangs(result, query, key):
    time.sleep(120)
    return result


@_implementation
def wrong_shape(result, query, key):
    return _map_out(result, lambda out: out[..., :-1])


@_implementation
def wrong_dtype(result, query, key):
    return _map_out(result, lambda out: np.asarray(out, dtype=np.float64))


@_implementation
def exits(result, query, key):
    os._exit(3)


@_implementation
def segfaults(result, query, key):
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)  # the signal is delivered asynchronously
    return result


@_implementation
def non_array(result, query, key):
    return _map_out(result, lambda out: object())


# -- argument errors: the ``arg-errors/...head_dim_mismatch`` case ---------------------------


class ShapeError(ValueError):
    """A framework's own ValueError subclass: must count as a ValueError."""


def _with_error(on_error):
    def impl(query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
        if key.shape[-1] != query.shape[-1]:
            return on_error(query, key, value)
        return attnspec.scaled_dot_product_attention(query, key, value, **kwargs)

    impl.attnspec_capabilities = CAPABILITIES
    return impl


def _zeros(query, key, value):
    return np.zeros((*query.shape[:-1], value.shape[-1]), dtype=query.dtype)


def _subclass(query, key, value):
    raise ShapeError("head dims differ")


def _wrong_class(query, key, value):
    raise RuntimeError("head dims differ")


accepts_anything = _with_error(_zeros)
raises_subclass = _with_error(_subclass)
raises_wrong_class = _with_error(_wrong_class)


# -- adapters passed as objects --------------------------------------------------------------


class NumpyAttention(Adapter):
    """A picklable adapter object (its class is importable from a worker)."""

    features = frozenset(FEATURES)

    def __init__(self, name: str = "numpy-attention") -> None:
        self.name = name

    def call(self, case, args):
        q, k, v = args.pop("query"), args.pop("key"), args.pop("value")
        return {"out": attnspec.scaled_dot_product_attention(q, k, v, **args)}


class Unpicklable(NumpyAttention):
    """An adapter holding a lambda: it cannot be sent to a worker."""

    def __init__(self) -> None:
        super().__init__("unpicklable")
        self.hook = lambda x: x


class Missing(NumpyAttention):
    """An adapter that cannot run here."""

    def __init__(self) -> None:
        super().__init__("missing")

    def unavailable(self):
        return "not installed here"


def slow(query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
    """Right, but takes a second and a half for every call."""
    time.sleep(1.5)
    return attnspec.scaled_dot_product_attention(query, key, value, **kwargs)


slow.attnspec_capabilities = CAPABILITIES

_CALLS_HERE = [0]


def stalls_after_two(query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
    """Right for its first two calls in a process; every later call waits ten minutes. A run
    of it is still going when a test's signal arrives after the second result, however late
    a loaded machine delivers it (a merely slow implementation let a starved test's Ctrl-C
    arrive after the last case: the run ended with exit 0)."""
    _CALLS_HERE[0] += 1
    if _CALLS_HERE[0] > 2:
        time.sleep(600)
    return attnspec.scaled_dot_product_attention(query, key, value, **kwargs)


stalls_after_two.attnspec_capabilities = CAPABILITIES


def _only_in(pid: int) -> FailsInWorker:
    if os.getpid() != pid:
        raise RuntimeError("cannot be re-created in another process")
    return FailsInWorker()


class FailsInWorker(NumpyAttention):
    """Pickles, but cannot be unpickled in a worker: the runner falls back to in-process."""

    def __init__(self) -> None:
        super().__init__("fails-in-worker")

    def __reduce__(self):
        return (_only_in, (os.getpid(),))


def strict_mask_scale(query: Any, key: Any, value: Any, *, mask: Any = None,
                      scale: Any = None) -> Any:
    """Right, for exactly what it declares (a mask, a scale; Hq == Hkv, Lq == Lk, Dv == Dk,
    one batch dim): any other keyword is a TypeError, any other shape a ValueError. What
    the suite passes it must stay inside that."""
    if query.ndim != 4 or query.shape[-3] != key.shape[-3] or (
            query.shape[-2] != key.shape[-2] or value.shape[-1] != query.shape[-1]):
        raise ValueError(f"undeclared shape: query {query.shape}, key {key.shape}, "
                         f"value {value.shape}")
    return attnspec.scaled_dot_product_attention(query, key, value, mask=mask, scale=scale)


strict_mask_scale.attnspec_capabilities = {"features": ["mask", "scale"]}
