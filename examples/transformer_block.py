"""A Transformer encoder block in pure Array API: runs unchanged on every backend.

    x  ->  x + MHA(LayerNorm(x))  ->  x + FFN(LayerNorm(x))          (pre-norm)

Multi-head attention is :func:`attnspec.multi_head_attention` (grouped-query heads, a padding
mask from per-sequence lengths); layer norm and the feed-forward network (tanh-GELU) are
written here with nothing but the standard's functions, through ``array_api_compat``. The
parameters are plain arrays in a dict, so the same function takes NumPy, torch, JAX, Dask
or array-api-strict arrays; ``init_params`` draws them with NumPy and moves them with a
converter the caller supplies.

Run it to see one block on every backend installed here, compared with NumPy float64:

    python examples/transformer_block.py
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import array_api_compat
import numpy as np

import attnspec

Params = Mapping[str, Any]


def layer_norm(x: Any, gamma: Any, beta: Any, *, eps: float = 1e-5) -> Any:
    """Normalise the last axis to mean 0, variance 1 (biased), then scale and shift."""
    xp = array_api_compat.array_namespace(x)
    mean = xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) / xp.sqrt(var + eps) * gamma + beta


def gelu(x: Any) -> Any:
    """GELU, tanh approximation (the standard has no ``erf``)."""
    xp = array_api_compat.array_namespace(x)
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def encoder_block(x: Any, params: Params, *, num_heads: int, num_kv_heads: int | None = None,
                  lengths: Any = None, causal: bool = False) -> Any:
    """One pre-norm encoder block on ``x`` of shape ``(batch, L, d_model)``.

    ``lengths`` (integer array, one per batch entry) marks the tokens past it as padding:
    no query attends to them (their own outputs are computed but meaningless, as in any
    padded batch). ``causal`` makes it a decoder-style block.
    """
    h = layer_norm(x, params["ln1_gamma"], params["ln1_beta"])
    attn = attnspec.multi_head_attention(
        h, num_heads=num_heads, num_kv_heads=num_kv_heads,
        w_q=params["w_q"], w_k=params["w_k"], w_v=params["w_v"], w_o=params["w_o"],
        b_q=params["b_q"], b_k=params["b_k"], b_v=params["b_v"], b_o=params["b_o"],
        kv_lengths=lengths, causal=causal,
    )
    x = x + attn
    xp = array_api_compat.array_namespace(x)
    h = layer_norm(x, params["ln2_gamma"], params["ln2_beta"])
    h = gelu(xp.matmul(h, params["w_1"]) + params["b_1"])
    return x + xp.matmul(h, params["w_2"]) + params["b_2"]


def init_params(rng: np.random.Generator, d_model: int, d_ff: int, num_heads: int,
                num_kv_heads: int | None = None,
                convert: Callable[[np.ndarray], Any] = np.asarray) -> dict[str, Any]:
    """Random parameters (``x @ W + b`` layout) drawn in NumPy float64, then ``convert``-ed."""
    kv_width = d_model // num_heads * (num_kv_heads or num_heads)

    def dense(fan_in: int, fan_out: int) -> np.ndarray:
        return rng.standard_normal((fan_in, fan_out)) / math.sqrt(fan_in)

    arrays = {
        "w_q": dense(d_model, d_model), "w_k": dense(d_model, kv_width),
        "w_v": dense(d_model, kv_width), "w_o": dense(d_model, d_model),
        "b_q": 0.1 * rng.standard_normal(d_model), "b_k": 0.1 * rng.standard_normal(kv_width),
        "b_v": 0.1 * rng.standard_normal(kv_width), "b_o": 0.1 * rng.standard_normal(d_model),
        "ln1_gamma": 1.0 + 0.1 * rng.standard_normal(d_model),
        "ln1_beta": 0.1 * rng.standard_normal(d_model),
        "ln2_gamma": 1.0 + 0.1 * rng.standard_normal(d_model),
        "ln2_beta": 0.1 * rng.standard_normal(d_model),
        "w_1": dense(d_model, d_ff), "b_1": 0.1 * rng.standard_normal(d_ff),
        "w_2": dense(d_ff, d_model), "b_2": 0.1 * rng.standard_normal(d_model),
    }
    return {name: convert(a) for name, a in arrays.items()}


def main() -> int:
    """Run one block on every available backend; compare with NumPy float64."""
    from attnspec.backends import all_backends

    batch, length, d_model, d_ff, heads, kv_heads = 2, 12, 32, 64, 4, 2
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, length, d_model))
    lengths = np.array([12, 7])
    params = init_params(rng, d_model, d_ff, heads, kv_heads)
    golden = encoder_block(x, params, num_heads=heads, num_kv_heads=kv_heads, lengths=lengths)
    worst = 0.0
    for backend in all_backends():
        if not backend.available:
            print(f"{backend.name:<18} skipped: {backend.reason}")
            continue
        dtype = "float64" if "float64" in backend.dtypes else "float32"
        out = encoder_block(
            backend.from_numpy(x, dtype=dtype),
            {k: backend.from_numpy(v, dtype=dtype) for k, v in params.items()},
            num_heads=heads, num_kv_heads=kv_heads, lengths=backend.from_numpy(lengths),
        )
        err = float(np.max(np.abs(backend.to_numpy(out).astype(np.float64) - golden)))
        ok = err < (1e-10 if dtype == "float64" else 1e-4)
        worst = max(worst, 0.0 if ok else err)
        print(f"{backend.name:<18} {dtype:<8} max |err| vs numpy float64: {err:.1e}  "
              f"{'ok' if ok else 'FAIL'}")
    return 0 if worst == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main())
