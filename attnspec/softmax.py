"""softmax, log_softmax and logsumexp with ``where``, where ``-inf`` means "no mass"."""

from __future__ import annotations

import math
import operator

from ._namespace import (
    Array,
    Namespace,
    accumulation_dtype,
    check_same_device,
    namespace_of,
    to_dtype,
)
from ._normalizer import log_normalizer, normalizer
from ._shapes import fmt
from ._validate import (
    as_int,
    check_bool,
    check_broadcast,
    check_flag,
    check_real_floating,
    shape_of,
)

__all__ = ["log_softmax", "logsumexp", "softmax"]


def _prepare(
    func: str, x: Array, axis: int, where: Array | None, xp: Namespace | None
) -> tuple[Namespace, Array, int]:
    arrays = {"x": x, "where": where}
    xp = namespace_of(xp, arrays, func=func, required=("x",))
    check_same_device(arrays, func=func)
    shape = shape_of("x", x, func)
    check_real_floating("x", x, xp, func)
    if as_int(axis) is None:
        raise TypeError(f"{func}: axis must be an int; got {type(axis).__name__}")
    axis = operator.index(axis)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{func}: axis {axis} is out of range for x of shape {fmt(shape)}")
    xf = to_dtype(xp, x, accumulation_dtype(xp, x.dtype))
    if where is not None:
        check_bool("where", where, xp, func=func)
        check_broadcast("where", where, shape, "x of shape", func)
        # Excluded entries become -inf: whatever they held (NaN, +inf) cannot leak.
        xf = xp.where(where, xf, -math.inf)
    return xp, xf, axis


def softmax(
    x: Array, /, *, axis: int = -1, where: Array | None = None, xp: Namespace | None = None
) -> Array:
    """Softmax along ``axis``, with ``-inf`` entries and ``where=False`` entries getting 0.

    Spec rules SMX-1 to SMX-5 (``docs/spec.md``).

    Parameters
    ----------
    x : array
        Real floating input. float16/bfloat16 are computed in float32.
    axis : int
        The axis to normalise over.
    where : bool array, optional
        Broadcastable to ``x``; only True entries take part. ``softmax(x)`` equals
        ``softmax(x, where=x > -inf)``.
    xp : namespace, optional
        The array namespace; inferred from ``x`` by default.

    Returns
    -------
    array
        Same shape and dtype as ``x``. A row with nothing included is all zeros (never NaN);
        a row with an included NaN or +inf is NaN.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> import attnspec
    >>> attnspec.softmax(xp.asarray([0.0, 0.0, -xp.inf]))
    Array([0.5, 0.5, 0. ], dtype=array_api_strict.float64)
    >>> attnspec.softmax(xp.asarray([-xp.inf, -xp.inf]))
    Array([0., 0.], dtype=array_api_strict.float64)
    """
    xp, xf, axis = _prepare("softmax", x, axis, where, xp)
    n = normalizer(xf, axis, xp)
    return to_dtype(xp, n.exp / n.safe_total, x.dtype)


def log_softmax(
    x: Array, /, *, axis: int = -1, where: Array | None = None, xp: Namespace | None = None
) -> Array:
    """Logarithm of :func:`softmax`, computed without forming the softmax.

    Excluded entries and entries of empty rows are ``-inf``; never NaN for them.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> import attnspec
    >>> attnspec.log_softmax(xp.asarray([0.0, -xp.inf]))
    Array([  0., -inf], dtype=array_api_strict.float64)
    """
    xp, xf, axis = _prepare("log_softmax", x, axis, where, xp)
    n = normalizer(xf, axis, xp)
    out = (xf - n.shift) - xp.log(n.safe_total)
    # Excluded and -inf entries are the constant -inf: they must pass no gradient back into
    # the row's normaliser (a cotangent arriving there would otherwise leak into the row).
    out = xp.where(xf == -math.inf, -math.inf, out)
    return to_dtype(xp, out, x.dtype)


def logsumexp(
    x: Array,
    /,
    *,
    axis: int = -1,
    keepdims: bool = False,
    where: Array | None = None,
    xp: Namespace | None = None,
) -> Array:
    """``log(sum(exp(x), axis))`` without overflow; ``-inf`` for an empty row.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> import attnspec
    >>> attnspec.logsumexp(xp.asarray([[0.0, 0.0], [-xp.inf, -xp.inf]]))
    Array([0.69314718,       -inf], dtype=array_api_strict.float64)
    >>> attnspec.logsumexp(xp.asarray([1000.0, 1000.0]))
    Array(1000.69314718, dtype=array_api_strict.float64)
    """
    xp, xf, axis = _prepare("logsumexp", x, axis, where, xp)
    check_flag("keepdims", keepdims, "logsumexp")
    out = to_dtype(xp, log_normalizer(normalizer(xf, axis, xp), xp), x.dtype)
    return out if keepdims else xp.squeeze(out, axis=axis)

