"""Namespace, device and dtype resolution shared by every public function.

Everything here reads types, dtypes and devices only, never array values, so it costs
nothing under ``jax.jit`` and never computes a Dask graph.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Literal, TypeAlias, cast

import array_api_compat

Array: TypeAlias = Any
"""Any array of a namespace that follows the Python Array API standard."""

Namespace: TypeAlias = ModuleType


#: type -> its namespace (``None``: not an array). array_api_compat decides from the type
#: alone, and asking it costs microseconds per argument, which at small shapes is most of
#: a call.
_NAMESPACE_OF_TYPE: dict[type, Namespace | None] = {}


def _type_namespace(x: Any) -> Namespace | None:
    t = type(x)
    try:
        return _NAMESPACE_OF_TYPE[t]
    except KeyError:
        pass
    ns = (array_api_compat.array_namespace(x) if array_api_compat.is_array_api_obj(x)
          else None)
    _NAMESPACE_OF_TYPE[t] = ns
    return ns


def is_array(x: Any) -> bool:
    """True for an array of any Array API namespace that array_api_compat knows."""
    return _type_namespace(x) is not None


def label(xp: Namespace) -> str:
    """A namespace's name as users know it (``numpy``, not ``array_api_compat.numpy``)."""
    return xp.__name__.removeprefix("array_api_compat.")


@functools.cache
def _canonical(xp: Namespace) -> Namespace:
    # The namespace array_api_compat returns for this module's own arrays: ``numpy``,
    # ``torch`` and ``dask.array`` map to their array_api_compat wrappers, so an explicit
    # ``xp=numpy`` and an inferred namespace compare equal.
    ns: Namespace = array_api_compat.array_namespace(xp.asarray(0))
    return ns


def explicit_namespace(xp: Any) -> Namespace:
    """``xp=`` as given by the caller, as the namespace that inference would give."""
    if not callable(getattr(xp, "asarray", None)):
        raise TypeError(
            "xp must be an array namespace (a module such as numpy, torch or "
            f"array_api_strict); got {type(xp).__name__}"
        )
    return _canonical(xp)


def namespace_of(
    xp: Any,
    arrays: Mapping[str, Any],
    *,
    func: str = "",
    required: tuple[str, ...] = (),
) -> Namespace:
    """The one namespace of the named array arguments, checked argument by argument.

    ``xp`` wins when given; otherwise the first array in ``arrays`` decides. Every other
    value that is not ``None`` must be an array of that namespace, else a ``TypeError``
    names it. Names in ``required`` may not be ``None``.
    """
    where = f"{func}: " if func else ""
    ns = None if xp is None else explicit_namespace(xp)
    ref = "" if ns is None else f"xp= is {label(ns)}"
    for name, a in arrays.items():
        if a is None:
            if name in required:
                raise TypeError(f"{where}{name} must be an array; got None")
            continue
        if not is_array(a):
            raise TypeError(f"{where}{name} must be an array; got {type(a).__name__}")
        other = cast(Namespace, _type_namespace(a))  # not None: ``a`` is an array
        if ns is None:
            ns, ref = other, f"{name} is a {label(other)} array"
        elif other is not ns:
            raise TypeError(
                f"{where}{name} is a {label(other)} array but {ref}; all arrays of one call "
                "must come from one namespace (convert with from_dlpack or asarray first)"
            )
    if ns is None:
        raise TypeError(
            f"{where}no array argument to infer the array namespace from; pass xp= "
            "(e.g. xp=array_api_strict)"
        )
    return ns


def check_same_device(arrays: Mapping[str, Any], *, func: str = "") -> Any:
    """Raise ``ValueError`` naming the first array that is not on the first array's device.

    Returns that device (``None`` when there is no array). A device that is unknown
    (``None``: a JAX tracer under ``jax.jit``) matches every device.
    """
    where = f"{func}: " if func else ""
    ref_name, ref = None, None
    for name, a in arrays.items():
        if a is None or not is_array(a):
            continue
        d = array_api_compat.device(a)
        if ref_name is None:
            ref_name, ref = name, d
        elif d is not None and ref is not None and d != ref:
            raise ValueError(
                f"{where}{name} is on device {d} but {ref_name} is on device {ref}; all arrays "
                "of one call must be on one device"
            )
    return ref


DeviceKind: TypeAlias = Literal["host", "accelerator"]
HOST: DeviceKind = "host"
ACCELERATOR: DeviceKind = "accelerator"
#: Words in a device's name that mean an accelerator (GPU, TPU, ...), not the host CPU.
_ACCELERATOR_WORDS = ("cuda", "gpu", "cupy", "rocm", "hip", "mps", "xpu", "tpu")


def device_kind(where: Any) -> DeviceKind:
    """``"accelerator"`` or ``"host"``: where an array lives, or what a device (object or
    name such as ``"cuda"``, ``"cpu"``) is. The one place attnspec answers "is this a
    GPU"; reads types and device names only, imports no framework. (The conformance suite
    asks the backends, ``attnspec.backends``, which answer through this for devices.)"""
    if _type_namespace(where) is not None:
        if array_api_compat.is_numpy_array(where):
            return HOST
        if array_api_compat.is_cupy_array(where):
            return ACCELERATOR
        where = array_api_compat.device(where)
    text = str(where).lower()
    return ACCELERATOR if any(word in text for word in _ACCELERATOR_WORDS) else HOST


def accumulation_dtype(xp: Namespace, dtype: Any) -> Any:
    """The dtype scores, softmax and P@V are computed in: float64 stays, the rest use float32.

    float16 and bfloat16 have too few exponent or mantissa bits for a sum over thousands of
    keys; float32 is what every fused kernel (flash-attention, cuDNN, XLA) accumulates in.
    """
    return xp.float64 if dtype == xp.float64 else xp.float32


_KIND_CACHE: dict[tuple[str, Any, str], bool] = {}


def _is_kind(xp: Namespace, dtype: Any, kind: str) -> bool:
    # isdtype is slow on some namespaces (NumPy: ~2 us); dtypes are few and hashable.
    # Keyed by the namespace's name: torch.compile cannot write a module-keyed entry back.
    key = (xp.__name__, dtype, kind)
    try:
        return _KIND_CACHE[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable dtype object
        return bool(xp.isdtype(dtype, kind))
    result = _KIND_CACHE[key] = bool(xp.isdtype(dtype, kind))
    return result


def is_real_floating(xp: Namespace, dtype: Any) -> bool:
    return _is_kind(xp, dtype, "real floating")


def is_integer(xp: Namespace, dtype: Any) -> bool:
    return _is_kind(xp, dtype, "integral")


def to_dtype(xp: Namespace, x: Array, dtype: Any) -> Array:
    """``astype`` that returns ``x`` itself when no conversion is needed."""
    return x if x.dtype == dtype else xp.astype(x, dtype)


def concrete(x: Array) -> bool:
    """Whether ``x``'s values can be read now: not a lazy or traced array (Dask, JAX, which
    array-api-compat calls lazy) and not a tensor torch.compile is tracing. Code that reads
    values to skip work (padding, segments, pages) asks this first; under a tracer it keeps
    the data-independent path, so ``torch.compile(fullgraph=True)`` and ``jax.jit`` still
    capture one graph. torch is looked up among the loaded modules, never imported: a torch
    tensor exists only where torch was imported already."""
    if array_api_compat.is_lazy_array(x):
        return False
    if array_api_compat.is_torch_array(x):
        torch = sys.modules.get("torch")
        compiler = getattr(torch, "compiler", None)
        is_compiling = getattr(compiler, "is_compiling", None)
        if is_compiling is not None and is_compiling():
            return False
        # Inside torch.func.vmap a batched tensor's values cannot be read either (.item()
        # raises): a vmapped kv_lengths keeps the data-independent path.
        functorch = getattr(getattr(torch, "_C", None), "_functorch", None)
        batched = getattr(functorch, "is_batchedtensor", None)
        return not (batched is not None and batched(x))
    return True


def readable(*arrays: Array | None) -> bool:
    """Whether the values of every array given (``None`` skipped) can be read now
    (:func:`concrete`): the work-skipping reads of a call read several of its inputs."""
    return all(concrete(x) for x in arrays if x is not None)
