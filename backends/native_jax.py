"""``jax.nn.dot_product_attention`` as an attnspec native kernel.

Accepted calls (everything else declines, with the reason, to the portable path):
float32 or bfloat16 (JAX computes float64 softmax in float32, and float16 ``dot_general``
fails under ``jit`` on the CPU), ``Dv == Dk``, 4-d inputs with one batch size, no mask,
bias or ``kv_lengths`` (JAX gives ``mean(V)`` for empty rows: a ``kv_lengths`` of 0 cannot
be ruled out without reading values), ``causal`` upper-left (or lower-right with
``Lq == Lk``), a Python scale. The kernel takes ``(B, L, H, D)``; the transposes around it
fuse into the kernel under ``jax.jit``. ``attnspec check`` grades it as
``attnspec.native.jax``.
"""

from __future__ import annotations

import numbers
from typing import Any

import array_api_compat

from attnspec.native import NativeCall

__all__ = ["KERNEL", "JaxDotProductAttentionKernel"]


def _on_cpu(call: NativeCall) -> bool:
    # Under jax.jit a tracer has no device: the computation lands on the default backend.
    if call.device is None:
        import jax

        return jax.default_backend() == "cpu"
    return "cpu" in str(call.device).lower()


class JaxDotProductAttentionKernel:
    name = "jax.nn.dot_product_attention"
    #: NaN/inf differ (an all -inf row gives NaN, not 0): "native" only, finite inputs.
    exact = False

    def handles(self, xp: Any) -> bool:
        return bool(array_api_compat.is_jax_namespace(xp))

    def decline(self, call: NativeCall) -> str | None:
        shape, xp = call.shape, call.xp
        dtype = call.query.dtype
        if dtype == xp.float64:
            return "JAX computes a float64 softmax in float32"
        if dtype == xp.float16 and _on_cpu(call):
            return "float16 dot_general is unsupported under jax.jit on the CPU"
        if shape.dv != shape.dk:
            return "JAX requires Dv == Dk"
        if any(x.ndim != 4 for x in (call.query, call.key, call.value)):
            return "JAX takes 4-d (B, L, H, D) inputs"
        if not call.query.shape[0] == call.key.shape[0] == call.value.shape[0]:
            return "JAX does not broadcast the batch dimension"
        if call.kv_lengths is not None:
            return "JAX gives mean(V), not 0, for a row whose kv_length is 0 (ATT-EMPTY-1)"
        if call.causal and call.alignment == "lower_right" and shape.lq != shape.lk:
            return "JAX's causal mask is upper-left only"
        if not isinstance(call.scale, numbers.Real):
            return "scale is an array (JAX takes a Python float)"
        return None

    def slower(self, call: NativeCall) -> str | None:
        # On the CPU, jax.nn.dot_product_attention is an XLA composition like attnspec's
        # own, plus two layout transposes: measured 2-3x slower under jit (benchmarks/).
        if _on_cpu(call):
            return ("slower than the portable path on the CPU (both are XLA compositions; "
                    "implementation='native' uses it anyway)")
        return None

    def __call__(self, call: NativeCall) -> Any:
        import jax

        q, k, v = (x.swapaxes(-2, -3) for x in (call.query, call.key, call.value))
        out = jax.nn.dot_product_attention(q, k, v, scale=float(call.scale),
                                           is_causal=call.causal)
        return out.swapaxes(-2, -3)


KERNEL = JaxDotProductAttentionKernel()
