"""``jax.dot_product_attention``: :func:`jax.nn.dot_product_attention` (XLA implementation).

Translation (measured with JAX 0.10.2 on CPU):

* the function runs under :func:`jax.jit` (options static), as JAX code runs in practice;
  eager dispatch compiles every primitive for every new shape and is ~5x slower here;
* layout: JAX keeps tokens before heads, ``(B, T, N, H)``; q/k/v go through
  :func:`attnspec.bhld_to_blhd` and the output back through :func:`attnspec.blhd_to_bhld`.
  JAX takes one batch dim or none; several are flattened into one and restored;
* ``mask`` (bool, True = attend, the spec's polarity) and ``bias`` (additive) pass as they
  are, broadcast to ``(B, N, T, S)``;
* ``causal`` -> ``is_causal`` (upper-left); ``window=(left, right)`` ->
  ``local_window_size`` (anchored at ``i == j``, i.e. upper-left), an unbounded side given
  as ``Lk + Lq`` (no key is that far away);
* ``kv_lengths`` -> ``key_value_seq_lengths`` (int32); GQA, ``scale`` natively;
``float64`` runs with ``jax_enable_x64`` on (the conformance workers switch it on).

Not declared (inputs and outputs JAX's function does not take), with the reason:

* float16 on CPU: under ``jax.jit`` the float16 score product raises ``ValueError: The
  precision 'F16_F16_F32' is not supported by dot_general on CPU`` (eager dispatch runs
  it), so jax-cpu declares float64, float32 and bfloat16;
* ``dv_ne_dk``: a value head dim different from the key's raises ``ValueError``;
* ``causal_lower_right``: no lower-right option (``is_causal`` and ``local_window_size``
  anchor at ``i == j`` even when ``T != S``);
* ``softcap``, ``dropout``, ``weights``: no such arguments / outputs.

Deviations (graded, and expected to fail: ``deviations`` below, shown as ``x``):

* float64: the softmax runs in float32 whatever the input (error ~1e-7, a float32 error,
  where the spec's float64 tolerance is ~1e-15);
* ATT-EMPTY-1: masked logits are set to ``-0.7 * float32 max``, a finite number, so a row
  masked entirely by ``mask``, a window or ``kv_lengths = 0`` attends uniformly to every
  key (out = mean of all V rows, lse ~ -2.4e38; fingerprint ``fully_masked_row=mean_v``); a
  row whose bias is all ``-inf`` gives NaN;
* ATT-LEN-2: query padding rows (``q_lengths``) do give out 0, but their lse is finite
  (-2.4e38), not ``-inf``;
* ATT-LEAK-2: NaN/inf in V rows past the KV length reach the output (``0 * NaN`` in
  ``P @ V``; fingerprint ``kv_padding_leak=nan``);
* ATT-LEAK-1 through a bias: a NaN key under a ``-inf`` bias gives ``NaN + -inf = NaN`` (a
  bool ``mask`` does not leak: JAX applies it with ``where``);
* ATT-ARG-1: mixed q/k/v dtypes raise ``ValueError`` (the spec says ``TypeError``).

The lse comes from ``return_residual=True`` (shape ``(B, T, N)``, swapped to ``(B, N, T)``)
for float32 and float64 inputs; for float16/bfloat16 inputs JAX returns it in the input
dtype, where the spec (ATT-DTYPE-2) wants float32, so the adapter returns ``out`` alone there
(those cases are no evidence for ATT-LSE-1).
"""

from __future__ import annotations

import math
from typing import Any

import attnspec

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter

__all__ = ["JaxDotProductAttentionAdapter"]

_STATIC = ("scale", "is_causal", "local_window_size", "return_residual")
_jitted: Any = None


def _dot_product_attention() -> Any:
    """``jax.nn.dot_product_attention`` under ``jax.jit``, built once per process."""
    global _jitted
    if _jitted is None:
        import jax

        _jitted = jax.jit(jax.nn.dot_product_attention, static_argnames=_STATIC)
    return _jitted


class JaxDotProductAttentionAdapter(NativeAdapter):
    name = "jax.dot_product_attention"
    description = "jax.nn.dot_product_attention under jax.jit (XLA implementation)"
    backends = ("jax-cpu", "jax-gpu")
    distributions = ("jax", "jaxlib")
    ops = frozenset({"attention"})
    supported_dtypes = ("float64", "float32", "float16", "bfloat16")
    features = frozenset({
        "batch0", "batch2", "gqa", "lq_ne_lk", "scale", "mask", "bias", "bias_neg_inf",
        "causal", "window", "kv_lengths", "q_lengths", "lse", "backward", "grad_bias",
    })
    deterministic_on = ("jax-cpu",)
    deviations = (
        Deviation("the softmax runs in float32 whatever the input: a float32 error (~1e-7) "
                  "in every float64 output", dtypes=("float64",)),
        Deviation("query padding rows (q_lengths) give out 0 but a finite lse (-2.4e38), "
                  "not -inf", frozenset({"q_lengths"}), dtypes=("float32",)),
        Deviation("a row with nothing to attend attends to every key: masked logits are "
                  "-0.7 * float32 max, so out = mean of all V rows (NaN when the row is "
                  "masked by a -inf bias)", frozenset({"empty_rows"}),
                  fingerprint="fully_masked_row=mean_v",
                  # query padding rows do give 0 (the q_lengths deviation is their lse)
                  when=lambda case: case.params.get("q_lengths") is None,
                  condition="rows emptied otherwise than by q_lengths"),
        Deviation("NaN/inf in K/V rows past kv_lengths reach the output (0 * NaN in P @ V)",
                  frozenset({"poison_kv"}), fingerprint="kv_padding_leak=nan"),
        Deviation("a NaN key under a -inf bias gives NaN + -inf = NaN (a bool mask does not "
                  "leak)", frozenset({"poison_scores"}),
                  when=lambda case: case.params.get("mask") is None,
                  condition="masked by the bias alone"),
        Deviation("mixed q/k/v dtypes raise ValueError, not TypeError",
                  frozenset({"arg_errors"}),
                  when=lambda case: case.params.get("error") == "mixed_dtypes",
                  condition="mixed dtypes"),
    )

    def dtypes(self) -> tuple[str, ...]:
        found = super().dtypes()
        if self.backend_name == "jax-cpu":  # jitted float16 dot_general: not on CPU
            found = tuple(d for d in found if d != "float16")
        return found

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        import jax.numpy as jnp

        q, k, v = args["query"], args["key"], args["value"]
        batch = q.shape[:-3]
        hq, lq, lk = q.shape[-3], q.shape[-2], k.shape[-2]
        n = math.prod(batch)

        def tokens_first(x: Any) -> Any:
            # (*batch, H, L, D) -> (n, L, H, D): JAX has a single batch dim.
            x = jnp.broadcast_to(x, (*batch, *x.shape[-3:]))
            return attnspec.bhld_to_blhd(x.reshape(n, *x.shape[-3:]))

        kwargs: dict[str, Any] = {"return_residual": True}
        for name in ("mask", "bias"):
            if args.get(name) is not None:
                x = jnp.broadcast_to(args[name], (*batch, hq, lq, lk))
                kwargs[name] = x.reshape(n, hq, lq, lk)
        if args.get("causal"):
            if args.get("alignment", "upper_left") != "upper_left":
                raise ValueError("jax.nn.dot_product_attention has no lower-right causal mask")
            kwargs["is_causal"] = True
        if args.get("window") is not None:
            if args.get("alignment", "upper_left") != "upper_left":
                raise ValueError("jax.nn.dot_product_attention's window is upper-left only")
            unbounded = lq + lk
            kwargs["local_window_size"] = tuple(unbounded if w is None else int(w)
                                                for w in args["window"])
        if args.get("kv_lengths") is not None:
            kwargs["key_value_seq_lengths"] = jnp.asarray(args["kv_lengths"],
                                                          jnp.int32).reshape(n)
        if args.get("q_lengths") is not None:
            kwargs["query_seq_lengths"] = jnp.asarray(args["q_lengths"], jnp.int32).reshape(n)
        if args.get("scale") is not None:
            kwargs["scale"] = float(args["scale"])
        for name in ("softcap", "dropout_mask"):
            if args.get(name) is not None:
                raise ValueError(f"jax.nn.dot_product_attention has no {name}")
        out, lse = _dot_product_attention()(
            tokens_first(q), tokens_first(k), tokens_first(v), **kwargs)
        out = attnspec.blhd_to_bhld(out).reshape(*batch, hq, lq, out.shape[-1])
        if q.dtype not in (jnp.float32, jnp.float64):
            return {"out": out}  # the residual is in the input dtype, not float32
        lse = jnp.swapaxes(lse, -1, -2).reshape(*batch, hq, lq)  # (n, T, N) -> (*batch, N, T)
        return {"out": out, "lse": lse}
