"""Repeated plain calls without repeating their checks (decode: one call per token per layer).

A plain call sets nothing beyond ``causal``, ``alignment``, ``scale``, ``return_lse``,
``chunk_size`` and ``implementation``. Everything its checks and its plan depend on is then
in the types, shapes, dtypes and devices of ``query``/``key``/``value`` and those six
values: the first call with a given combination runs every check
(:func:`attnspec._call.attention_call`) and, when the direct path takes it, leaves the
:class:`~._problem.Problem` it built, without its arrays, as the plan of the next ones; when
a native kernel takes it (:mod:`attnspec.native` decides on static facts only), the kernel
and its :class:`~attnspec.native.NativeCall` without arrays are the plan. A later call with
the same combination only converts its arrays and runs the direct path or the kernel:
measured on 2 cores, NumPy (1, 1, 1, 8) went from 60 us to about 15 us above the bare NumPy
expression, and torch's ``implementation="native"`` from 66 us to 19 us (SDPA alone 5 us).
Calls the chunked path takes (large ones: the checks are a vanishing part of them) are never
cached, so a plan never holds a decision that the environment (threads) could change.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import array_api_compat

from ._namespace import Array, Namespace, concrete
from ._problem import Problem

#: Types whose arrays carry their device as a cheap attribute and compute eagerly: a JAX
#: tracer or a Dask array never takes this path.
_EAGER_CHECKS = (array_api_compat.is_numpy_array, array_api_compat.is_torch_array,
                 array_api_compat.is_cupy_array)
#: type -> whether its calls may be planned: 0 no (lazy, traced), 1 yes, 2 a torch tensor,
#: planned unless torch.compile is tracing it (a plan written while tracing is a side effect
#: Dynamo cannot replay: ``fullgraph=True`` failed on a plain call).
_EAGER: dict[type, int] = {}
#: At most this many plans; past it the cache starts again (NaN scales never compare equal).
MAX_PLANS = 256


class Plan(NamedTuple):
    xp: Namespace
    acc: Any  # the accumulation dtype
    scale: Any  # a 0-d array multiplied into q, or None when the direct path scales the scores
    problem: Problem | None  # without q, k, v; its call without query, key, value
    kernel: Any = None  # the native kernel that takes these calls (then problem is None)
    native: Any = None  # its NativeCall without query, key, value
    cols: tuple[int, int] | None = None  # the keys the direct path reads (all: None)


_PLANS: dict[tuple[Any, ...], Plan] = {}


def unset(*options: Any) -> bool:
    """True when every option is ``None`` (identity: an array option is never compared).
    A plain loop: ``all()`` over a generator costs 1.5 us for the 18 options of a call,
    this 0.3 us (the NumPy call overhead target is 15 us in all)."""
    for option in options:  # noqa: SIM110 (speed, see above)
        if option is not None:
            return False
    return True


def _eager(x: Array) -> bool:
    t = type(x)
    try:
        kind = _EAGER[t]
    except KeyError:
        kind = _EAGER[t] = (2 if array_api_compat.is_torch_array(x)
                            else int(any(check(x) for check in _EAGER_CHECKS)
                                     or "array_api_strict" in t.__module__))
    return kind == 1 or (kind == 2 and concrete(x))


def key_of(query: Array, key: Array, value: Array,
           options: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The plan's key, or None for arrays whose checks cannot be cached (lazy, traced)."""
    if not _eager(query) or type(key) is not type(query) or type(value) is not type(query):
        return None  # the checks say what is wrong
    cache_key = (type(query), query.shape, key.shape, value.shape,
                 query.dtype, key.dtype, value.dtype, getattr(query, "device", None),
                 getattr(key, "device", None), getattr(value, "device", None),
                 *options, *map(type, options))
    try:
        hash(cache_key)
    except TypeError:  # an array scale, a list chunk_size: checked every time
        return None
    return cache_key


def lookup(cache_key: tuple[Any, ...] | None) -> Plan | None:
    return None if cache_key is None else _PLANS.get(cache_key)


def remember(cache_key: tuple[Any, ...] | None, problem: Problem, scale: Any,
             cols: tuple[int, int] | None = None) -> None:
    """Keep a direct-path problem (just built for ``cache_key``, reading keys ``cols``) as
    the plan of the next calls with the same key."""
    if cache_key is None or problem.tokens is not None:
        return
    # No reference to this call's arrays stays behind in the plan.
    template = problem._replace(
        call=dataclasses.replace(problem.call, query=None, key=None, value=None),
        q=None, k=None, v=None, kt=None)
    # The scale as a 0-d array of q's accumulation dtype: the same product as with the
    # Python float (either is rounded to that dtype first), cheaper per call: torch wraps a
    # float in a tensor on every call (3.2 us against 1.7 us), NumPy 0.7 us against 0.4 us.
    if scale is not None:
        scale = problem.xp.asarray(scale, dtype=problem.acc, device=problem.device)
    _store(cache_key, Plan(problem.xp, problem.acc, scale, template, cols=cols))


def remember_native(cache_key: tuple[Any, ...] | None, kernel: Any, call: Any) -> None:
    """Keep the native kernel that took a plain call (and its call without arrays) as the
    plan of the next calls with the same key."""
    if cache_key is None or call.kv_lengths is not None:
        return
    _store(cache_key, Plan(call.xp, None, None, None, kernel,
                           call._replace(query=None, key=None, value=None)))


def _store(cache_key: tuple[Any, ...], plan: Plan) -> None:
    if len(_PLANS) >= MAX_PLANS:
        _PLANS.clear()
    _PLANS[cache_key] = plan


def clear() -> None:
    """Forget every plan (a kernel registered at run time may change what ``auto`` takes)."""
    _PLANS.clear()


def native_call_of(plan: Plan, query: Array, key: Array, value: Array) -> Any:
    return plan.native._replace(query=query, key=key, value=value)


_Q, _K, _V = (Problem._fields.index(name) for name in ("q", "k", "v"))


def problem_of(plan: Plan, query: Array, key: Array, value: Array) -> Problem:
    xp, acc = plan.xp, plan.acc
    assert plan.problem is not None
    q = query if query.dtype == acc else xp.astype(query, acc)
    if plan.scale is not None:
        q = q * plan.scale
    fields = list(plan.problem)  # NamedTuple._replace costs 3 us; this a fraction of one
    fields[_Q] = q
    fields[_K] = key if key.dtype == acc else xp.astype(key, acc)
    fields[_V] = value if value.dtype == acc else xp.astype(value, acc)
    return tuple.__new__(Problem, fields)
