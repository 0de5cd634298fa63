"""Native fast paths: hand a call to a framework's own fused attention kernel when, for the
arguments given, that kernel computes exactly what ``docs/spec.md`` defines.

Two promises: an ``exact`` kernel follows the spec for every input, NaN and inf included,
and is what ``implementation="auto"`` may take; any other kernel follows it for finite
inputs (NaN/inf then follow the kernel's own rules, e.g. torch SDPA gives 0, not NaN, for a
row whose only attended key is NaN) and is taken only by ``implementation="native"``.

This module imports no framework. Kernels live elsewhere (``attnspec.backends`` ships torch
SDPA and ``jax.nn.dot_product_attention``) and are found through the ``attnspec.native``
entry-point group, or added at run time with :func:`register`. A kernel is asked two
things: whether it *declines* a call (and why), and to run it. It may only accept calls
whose every output (and gradient) the conformance suite has measured to agree with the
spec: ``attnspec check`` grades each kernel through ``implementation="native"`` as its own
implementation (the non-finite cases only for an ``exact`` kernel).

Which path a call takes depends only on static facts (namespace, dtype, shapes, which
options are set), never on array values, so the choice is the same under ``jax.jit``.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from typing import Any, NamedTuple, Protocol

from ._call import IMPLEMENTATIONS, AttentionCall, portable_only
from ._namespace import Array, Namespace
from ._problem import default_scale
from ._validate import AttentionShape

__all__ = ["IMPLEMENTATIONS", "NativeCall", "NativeKernel", "Plan", "kernels", "plan",
           "register"]

#: The entry-point group kernels are registered under.
ENTRY_POINT_GROUP = "attnspec.native"


class NativeCall(NamedTuple):
    """A validated call in the terms a kernel needs. Only calls without ``mask``, ``bias``,
    ``softcap``, ``window``, ``q_lengths``, dropout, ``return_lse``/``return_weights`` or
    an explicit ``chunk_size`` reach a kernel; with ``kv_lengths`` the key and value rows
    past each length are already zeroed when :meth:`NativeKernel.__call__` runs, and on
    host arrays the key axis is cut after the longest length (``shape.lk`` is the cut
    length: a decode step over a preallocated cache hands the kernel its real keys)."""

    xp: Namespace
    query: Array
    key: Array
    value: Array
    shape: AttentionShape
    causal: bool
    alignment: str
    scale: Any  # a float, or a 0-d array under jax.jit
    kv_lengths: Array | None
    device: Any


class NativeKernel(Protocol):
    #: The name reports and :func:`plan` use, e.g. ``"torch.nn.functional.sdpa"``.
    name: str

    def handles(self, xp: Namespace) -> bool:
        """Whether arrays of namespace ``xp`` are this kernel's (cheap; imports nothing)."""

    def decline(self, call: NativeCall) -> str | None:
        """Why the kernel would not compute the spec's result for ``call``; ``None`` when
        it would."""

    def __call__(self, call: NativeCall) -> Array:
        """The attention output, shape ``(*batch, Hq, Lq, Dv)`` in the input dtype."""

    # Optional: ``slower(call) -> str | None``, why ``implementation="auto"`` should keep
    # the portable path although the kernel would be right (it is measured slower there).
    # Optional: ``exact = True`` when the kernel follows the spec for *every* input, NaN
    # and inf included; only such kernels are taken by ``implementation="auto"``. Without
    # it a kernel is taken by ``"native"`` only, and promises the spec for finite inputs.


class Plan(NamedTuple):
    """What ``implementation="auto"`` does with a call: the kernel's name, or ``None`` for
    the portable path and the reason."""

    kernel: str | None
    reason: str


_registered: list[Any] = []
_loaded = False


def register(kernel: NativeKernel) -> None:
    """Add ``kernel`` ahead of the ones found so far (a later registration wins)."""
    for attr in ("name", "handles", "decline", "__call__"):
        if not hasattr(kernel, attr):
            raise TypeError(f"kernel must have a {attr!r} attribute (see NativeKernel); "
                            f"got {type(kernel).__name__}")
    _registered.insert(0, kernel)
    from . import _fast

    _fast.clear()  # plans made before may name another kernel or none


def kernels() -> list[NativeKernel]:
    """Every registered kernel, entry points included, in the order they are tried."""
    if not _loaded:
        _discover()
    return list(_registered)


def _discover() -> bool:
    """Load the entry points' kernels, once."""
    global _loaded
    if not _loaded:
        _loaded = True
        for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                _registered.append(entry.load())
            except Exception as exc:  # a broken plugin must not break attention
                warnings.warn(f"attnspec: native kernel {entry.name!r} ({entry.value}) "
                              f"failed to load and is skipped: {exc!r}", RuntimeWarning,
                              stacklevel=4)
    return True


# What ``torch.compiler.assume_constant_result`` sets (attnspec imports no torch): Dynamo then
# runs the discovery as plain Python instead of tracing ``importlib.metadata``, which it
# refuses, so a process whose first attention call is inside ``torch.compile(fullgraph=True)``
# compiles (it failed before). Other tracers ignore the attribute.
_discover._dynamo_marked_constant = True  # type: ignore[attr-defined]


def native_call(call: AttentionCall) -> NativeCall:
    """``call`` in the terms a kernel needs (the default scale filled in)."""
    scale = default_scale(call.shape.dk) if call.scale is None else call.scale
    return NativeCall(call.xp, call.query, call.key, call.value, call.shape, call.causal,
                      call.alignment, scale, call.kv_lengths, call.device)


def plan(attention_call: AttentionCall) -> tuple[NativeKernel | None, str, NativeCall]:
    """The kernel that takes ``attention_call`` (first that handles its namespace and does
    not decline), or ``None`` and why none does, and the call in kernel terms.

    With the call's ``implementation="auto"`` a kernel is also passed over when its
    optional ``slower(call)`` gives a reason (measured slower than the portable path there)
    or when it is not ``exact`` (it follows the spec for finite inputs only); ``"native"``
    takes it anyway."""
    call = native_call(attention_call)
    option = portable_only(attention_call)
    if option is not None:
        return None, f"{option}= is computed by the portable path only", call
    kernel, reason = _choose(call, attention_call.implementation)
    return kernel, reason, call


def _choose(call: NativeCall, implementation: str) -> tuple[NativeKernel | None, str]:
    if 0 in (call.shape.lq, call.shape.lk, call.shape.dk, call.shape.dv):
        return None, "empty dimensions are computed by the portable path"
    reasons = []
    for kernel in kernels():
        if not kernel.handles(call.xp):
            continue
        why = kernel.decline(call)
        if why is None and implementation == "auto":
            slower = getattr(kernel, "slower", None)
            why = slower(call) if slower is not None else None
            if why is None and not getattr(kernel, "exact", False):
                why = ("agrees with the spec for finite inputs only (NaN/inf follow the "
                       "kernel's own rules; implementation='native' accepts that)")
        if why is None:
            return kernel, ""
        reasons.append(f"{kernel.name}: {why}")
    if not reasons:
        return None, f"no native kernel is registered for {call.xp.__name__} arrays"
    return None, "; ".join(reasons)
