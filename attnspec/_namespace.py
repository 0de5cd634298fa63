"""Namespace and dtype resolution shared by every public function."""

from __future__ import annotations

from types import ModuleType
from typing import Any, TypeAlias

import array_api_compat

Array: TypeAlias = Any
"""Any array of a namespace that follows the Python Array API standard."""

Namespace: TypeAlias = ModuleType


def namespace(*arrays: Array | None, xp: Namespace | None = None) -> Namespace:
    """Return the array namespace of ``arrays`` (``None`` and Python scalars are ignored).

    An explicit ``xp`` wins. A plain framework module that is not itself an Array API
    namespace (``torch``, ``dask.array``) is replaced by its ``array_api_compat`` wrapper,
    so users may pass ``xp=torch``.
    """
    if xp is not None:
        if hasattr(xp, "__array_api_version__"):
            return xp
        return array_api_compat.array_namespace(xp.asarray(0.0))
    candidates = [a for a in arrays if a is not None and not isinstance(a, (bool, int, float))]
    if not candidates:
        raise TypeError(
            "no array argument to infer the array namespace from; pass xp= "
            "(e.g. xp=array_api_strict)"
        )
    return array_api_compat.array_namespace(*candidates)


def check_same_namespace(xp: Namespace, **arrays: Array | None) -> None:
    """Raise ``TypeError`` naming the first argument whose namespace is not ``xp``."""
    for name, arr in arrays.items():
        if arr is None or isinstance(arr, (bool, int, float)):
            continue
        try:
            other = array_api_compat.array_namespace(arr)
        except TypeError:
            raise TypeError(
                f"{name} must be an array of the same namespace as query "
                f"({xp.__name__}); got {type(arr).__name__}"
            ) from None
        if other is not xp:
            raise TypeError(
                f"{name} is a {other.__name__} array but query is a {xp.__name__} array; "
                "all arrays must come from one namespace"
            )


def accumulation_dtype(xp: Namespace, dtype: Any) -> Any:
    """The dtype scores, softmax and P@V are computed in: float64 stays, the rest use float32.

    float16 and bfloat16 have too few exponent or mantissa bits for a sum over thousands of
    keys; float32 is what every fused kernel (flash-attention, cuDNN, XLA) accumulates in.
    """
    return xp.float64 if dtype == xp.float64 else xp.float32


def is_real_floating(xp: Namespace, dtype: Any) -> bool:
    return bool(xp.isdtype(dtype, "real floating"))


def is_integer(xp: Namespace, dtype: Any) -> bool:
    return bool(xp.isdtype(dtype, "integral"))


def to_dtype(xp: Namespace, x: Array, dtype: Any) -> Array:
    """``astype`` that returns ``x`` itself when no conversion is needed."""
    return x if x.dtype == dtype else xp.astype(x, dtype)
