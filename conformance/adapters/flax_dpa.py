"""``flax.linen`` / ``flax.nnx``: flax's ``dot_product_attention`` functions.

Translation (measured with flax 0.12.8, JAX 0.10.2 on CPU):

* the function runs under :func:`jax.jit` (``is_causal`` static), as flax code runs in
  practice (a jitted ``apply`` or train step);
* layout: flax keeps tokens before heads, ``(*batch, T, N, H)`` with any number of batch
  dims (nnx flattens several into one itself); q/k/v go through
  :func:`attnspec.bhld_to_blhd` and the output back through :func:`attnspec.blhd_to_bhld`;
* ``mask`` (bool, True = attend, the spec's polarity) and ``bias`` (additive) go in
  broadcast to ``(*batch, N, T, S)``;
* nnx only: ``causal`` -> ``is_causal`` (upper-left, also with ``T != S``), grouped-query
  heads natively. With no dropout and no ``module``, nnx's function is
  ``jax.nn.dot_product_attention`` (XLA), and inherits its behaviour; linen computes the
  softmax itself (``jnp.einsum``, masked logits ``finfo(dtype).min``).

Not declared (inputs and outputs the functions do not take), with the reason:

* ``scale`` (both scale by ``1/sqrt(H)``), ``softcap``, ``window``, lengths, lower-right
  causal, ``lse``, ``weights``; ``dropout`` (a ``dropout_rng`` and a rate, no keep-mask);
* linen: ``gqa`` (``AssertionError: q, k, v num_heads must match``) and ``causal`` (no
  such argument: flax's ``make_causal_mask`` builds a mask); ``deterministic`` (opt-in,
  and the catalog's determinism cases are causal, so nothing would show it);
* nnx: ``dv_ne_dk`` (``jax.nn.dot_product_attention`` raises ``ValueError: value shape
  should be [2, 9, 2, 16]``); float16 on jax-cpu (under ``jax.jit`` XLA's CPU ``dot_general``
  refuses ``F16_F16_F32``).

Deviations (graded, and expected to fail):

* ATT-EMPTY-1: a row masked entirely by the mask attends to every key, out = mean of all V
  rows (linen: ``finfo(dtype).min``; nnx: JAX's ``-0.7 * float32 max``; fingerprint
  ``fully_masked_row=mean_v``); a row whose bias is all ``-inf`` gives NaN;
* ATT-LEAK-1 through a bias: a NaN key under a ``-inf`` bias gives ``NaN + -inf = NaN``
  (the bool mask, applied with ``where``, does not leak);
* ATT-ARG-1: mixed q/k/v dtypes are promoted (``promote_dtype``), no ``TypeError``; linen:
  a head-dim mismatch raises ``AssertionError`` (``q, k depths must match``);
* nnx float64: the softmax runs in float32 (JAX's), a float32 error (1.7e-7 here, the
  float64 tolerance is ~5e-15) in every float64 output but where each row attends a single
  key (weights exactly 0 and 1). linen computes float64 in float64.
"""

from __future__ import annotations

import functools
from typing import Any

import attnspec

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter

__all__ = ["FlaxLinenAdapter", "FlaxNnxAdapter"]

_jitted: dict[tuple[str, bool], Any] = {}


def _function(module: str, causal: bool) -> Any:
    """``flax.<module>.dot_product_attention`` under :func:`jax.jit`, built once per
    process."""
    key = (module, causal)
    if key not in _jitted:
        import jax

        if module == "linen":
            import flax.linen  # type: ignore[import-untyped,unused-ignore]

            fn: Any = flax.linen.dot_product_attention
        else:
            from flax import nnx  # type: ignore[import-untyped,unused-ignore]

            fn = functools.partial(nnx.dot_product_attention, is_causal=causal)
        _jitted[key] = jax.jit(fn)
    return _jitted[key]


def _masked(case: Case) -> bool:
    return case.params.get("mask") is not None or case.params.get("bias") is not None


_EMPTY_ROWS = ("a row with nothing to attend attends to every key: masked logits are {}, so "
               "out = mean of all V rows; NaN when the row is masked by a -inf bias")
_BIAS_LEAK = Deviation(
    "a NaN key under a -inf bias gives NaN + -inf = NaN (a bool mask does not leak)",
    frozenset({"poison_scores"}), when=lambda case: case.params.get("mask") is None,
    condition="masked by the bias alone")
_MIXED = "mixed q/k/v dtypes are promoted (flax's promote_dtype), no TypeError"


class _FlaxAdapter(NativeAdapter):
    module = ""
    backends = ("jax-cpu", "jax-gpu")
    distributions = ("flax", "jax", "jaxlib")
    requires = (("flax", "flax"),)
    ops = frozenset({"attention"})

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        import jax.numpy as jnp

        q, k, v = args["query"], args["key"], args["value"]
        batch = tuple(q.shape[:-3])
        hq, lq, lk = q.shape[-3], q.shape[-2], k.shape[-2]
        for name in ("scale", "softcap", "window", "kv_lengths", "q_lengths", "dropout_mask"):
            if args.get(name) is not None:
                raise ValueError(f"flax.{self.module}.dot_product_attention has no {name}")
        causal = bool(args.get("causal"))
        if causal and (self.module != "nnx"
                       or args.get("alignment", "upper_left") != "upper_left"):
            raise ValueError(f"flax.{self.module}.dot_product_attention: no such causal mask")
        kwargs = {name: jnp.broadcast_to(args[name], (*batch, hq, lq, lk))
                  for name in ("mask", "bias") if args.get(name) is not None}
        out = _function(self.module, causal)(
            attnspec.bhld_to_blhd(q), attnspec.bhld_to_blhd(k), attnspec.bhld_to_blhd(v),
            **kwargs)
        return {"out": attnspec.blhd_to_bhld(out)}


class FlaxLinenAdapter(_FlaxAdapter):
    name = "flax.linen"
    description = "flax.linen.dot_product_attention under jax.jit"
    module = "linen"
    features = frozenset({
        "batch0", "batch2", "dv_ne_dk", "lq_ne_lk", "empty_keys", "mask", "bias",
        "bias_neg_inf", "backward", "grad_bias",
    })
    deviations = (
        Deviation(_EMPTY_ROWS.format("finfo(dtype).min"), frozenset({"empty_rows"}),
                  fingerprint="fully_masked_row=mean_v", when=_masked,
                  condition="rows emptied by the mask or the bias"),
        _BIAS_LEAK,
        Deviation(f"{_MIXED}; a head-dim mismatch raises AssertionError, not ValueError",
                  frozenset({"arg_errors"})),
    )


class FlaxNnxAdapter(_FlaxAdapter):
    name = "flax.nnx"
    description = "flax.nnx.dot_product_attention under jax.jit"
    module = "nnx"
    deterministic_on = ("jax-cpu",)
    features = frozenset({
        "batch0", "batch2", "gqa", "lq_ne_lk", "empty_keys", "mask", "bias", "bias_neg_inf",
        "causal", "backward", "grad_bias",
    })
    deviations = (
        Deviation("the softmax runs in float32 (jax.nn.dot_product_attention): a float32 "
                  "error (~1.7e-7) in float64 outputs", dtypes=("float64",),
                  when=lambda case: case.params.get("mask") != "single_key",
                  condition="rows attending more than one key"),
        Deviation(_EMPTY_ROWS.format("-0.7 * float32 max (jax.nn.dot_product_attention)"),
                  frozenset({"empty_rows"}), fingerprint="fully_masked_row=mean_v",
                  when=_masked, condition="rows emptied by the mask or the bias"),
        _BIAS_LEAK,
        Deviation(_MIXED, frozenset({"arg_errors"}),
                  when=lambda case: case.params.get("error") == "mixed_dtypes",
                  condition="mixed dtypes"),
    )

    def dtypes(self) -> tuple[str, ...]:
        found = super().dtypes()
        if self.backend_name == "jax-cpu":  # jitted float16 dot_general: not on CPU
            found = tuple(d for d in found if d != "float16")
        return found
