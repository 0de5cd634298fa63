"""The KV cache a call reads: its key and value rows past ``kv_lengths`` cut off or zeroed.

Rows past a sequence's length are padding (ATT-LEN-1): whatever an unused cache slot holds,
NaN and inf included, must reach no output and no gradient (ATT-LEAK-2). Zeroing them is a
copy of the cache; on host arrays whose lengths can be read most of that copy is avoided:
the rows past every sequence's length are cut off, and the rows between the shortest and
the longest length are zeroed only when they hold a non-finite value.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from ._blocks import key_padding, length_bounds
from ._call import AttentionCall
from ._namespace import Array, Namespace, to_dtype


def real_cache(call: AttentionCall, readable: bool, whole: bool,
               dtype: Any = None, kernel: bool = False) -> tuple[Array, Array, int]:
    """``key`` and ``value`` (in ``dtype``) with the rows past ``kv_lengths`` zeroed, and
    how many key rows they keep. When the lengths can be read (``readable``) the rows past
    every entry's length are masked for all of them (ATT-LEN-1) and are cut off before any
    conversion or zeroing, unless the call needs all of Lk (``whole``: its weights): a
    decode step over a preallocated cache of 32768 slots with lengths up to 3637 converted
    and zeroed the whole cache, 382-420 ms where the real keys take 12-13 ms
    (``benchmarks/kvcache.py``, NumPy, B=4 H=8 D=128). For a native ``kernel`` the padding
    is always zeroed (its contract, :class:`attnspec.native.NativeCall`) and at least one
    key row is kept."""
    xp, lk = call.xp, call.shape.lk
    real, keys = length_bounds(call.kv_lengths, lk, xp) if readable else (0, lk)
    if whole or (keys == 0 and kernel):
        keys = lk
    key, value = call.key, call.value
    if keys < lk:
        key, value = key[..., :keys, :], value[..., :keys, :]
    if dtype is not None:
        key, value = to_dtype(xp, key, dtype), to_dtype(xp, value, dtype)
    k, v = zero_past_lengths(key, value, call.kv_lengths, keys, xp, call.device, real,
                              readable and not kernel)
    return k, v, keys


def zero_past_lengths(k: Array, v: Array, kv_lengths: Array | None, lk: int,
                      xp: Namespace, device: Any, real: int = 0,
                      readable: bool = False) -> tuple[Array, Array]:
    """Key and value rows past ``kv_lengths`` set to 0, so that whatever an unused KV-cache
    slot holds (NaN, inf) cannot reach a ``0 * NaN`` (ATT-LEAK-2). New arrays: the caller's
    are never written.

    ``real``: the rows known (from eager lengths) to be real for every batch entry, which
    only need copying. ``readable``: the values can be read, and rows that hold only finite
    values are left as they are: their scores are replaced by ``-inf`` (a ``where``, never
    an addition), and their weight is an exact 0, whose product with a finite value is 0,
    in the output and in every gradient. Checking the rows that may be padding is a read
    where zeroing them is a copy: on a decode step over (4, 8, 3637, 128) with lengths from
    1100, 2.6 ms against 14 ms for the ``where`` (NumPy)."""
    if kv_lengths is None or real >= lk:
        return k, v
    if readable and all_finite(k[..., real:, :], xp) and all_finite(v[..., real:, :], xp):
        return k, v
    if real == 0:
        real_key = key_padding(lk, kv_lengths, xp, device)
        return xp.where(real_key, k, 0.0), xp.where(real_key, v, 0.0)
    real_key = key_padding(lk, kv_lengths, xp, device, start=real)
    return tuple(xp.concat([x[..., :real, :], xp.where(real_key, x[..., real:, :], 0.0)],
                           axis=-2) for x in (k, v))


def all_finite(x: Array, xp: Namespace) -> bool:
    """Whether every value of an eager ``x`` is finite. On torch through its sum (NaN and
    inf propagate; an overflow only answers False): 1.1 ms where ``all(isfinite)`` takes
    20 ms on (4, 8, 2537, 128) float32. NumPy's sum warns on an overflow, its
    ``all(isfinite)`` does not and costs about the same."""
    if array_api_compat.is_torch_namespace(xp):
        return bool(xp.isfinite(xp.sum(x)))
    return bool(xp.all(xp.isfinite(x)))
