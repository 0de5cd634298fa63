"""``keras.torch`` / ``keras.jax``: Keras 3 :func:`keras.ops.dot_product_attention`.

Translation (measured with Keras 3.15.1, torch 2.13 and JAX 0.10.2 on CPU):

* Keras picks its backend from ``KERAS_BACKEND`` once, at import: the adapter sets it before
  importing keras, and refuses (:meth:`unavailable`, or a ``RuntimeError`` from the call)
  when keras is already imported in the process with the other backend. ``attnspec check``
  runs every implementation in its own worker process, so both are graded there;
* the function is called eagerly, as ``keras.ops`` calls run outside a model (on JAX the
  backward runs under :func:`jax.jit`, as a jitted train step does); on torch inside
  ``keras.device`` of the inputs' device (Keras's torch backend otherwise moves tensors to
  its default device, CUDA when there is one);
* layout: Keras takes 4-D ``(B, T, N, H)`` only, so batch dims are flattened into one (none:
  a batch of 1) and heads swapped with tokens (:func:`attnspec.bhld_to_blhd`), and back;
* ``mask`` (bool, True = attend, the spec's polarity) and ``bias`` (additive), broadcast to
  ``(B, N, T, S)``; ``causal`` -> ``is_causal`` (upper-left, also with ``T != S``); ``scale``
  and grouped-query heads natively; ``flash_attention`` left at ``None`` (auto: never taken
  on the CPU, where ``flash_attention=True`` raises ``RuntimeError``).

Not declared (inputs and outputs Keras's function does not take), with the reason:

* keras.torch: ``mask`` together with ``bias`` (``ValueError: Only one of bias and mask``:
  declared ``exclusive``);
* keras.jax: ``dv_ne_dk``: ``jax.nn.dot_product_attention`` refuses it, Keras catches that
  (logging the traceback) and falls back to its own implementation, which reshapes the
  output to the query's shape: ``TypeError: cannot reshape array of shape (2, 6, 2, 2, 5)``;
  float16 gradients on jax-cpu (under ``jax.jit`` XLA's CPU ``dot_general`` refuses
  ``F16_F16_F32``; the eager float16 forward runs and is graded);
* ``causal_lower_right``, ``window``, lengths, ``dropout`` (Keras's ``dropout`` is not an
  argument), ``lse``, ``weights``; ``softcap`` (``attn_logits_soft_cap`` raises
  ``ValueError`` except for JAX on TPU).

Deviations (graded, and expected to fail), on both backends unless said:

* float64: Keras's dtype promotion (``backend.result_type``) maps 64-bit to 32-bit dtypes
  ("aligned with JAX's default"), so q, k, v are cast and ``out`` is float32 for float64
  inputs (the gradients come back float64 through the cast);
* ATT-EMPTY-1: a row masked entirely by ``mask`` attends to every key, out = mean of all V
  rows (fingerprint ``fully_masked_row=mean_v``): on torch Keras turns the bool mask into an
  additive ``-0.7 * 3.39e38``, on JAX ``jax.nn.dot_product_attention`` uses ``-0.7 *
  float32 max``. A row of ``-inf`` bias gives 0 on torch (as the spec), NaN on JAX;
* ATT-LEAK-1: keras.torch: a NaN key at a masked position reaches every row of its head
  (the finite additive mask, and torch SDPA's -inf bias; fingerprint
  ``masked_value_leak=nan``); keras.jax: only through a ``-inf`` bias (``NaN + -inf``; the
  bool mask is applied with ``where``);
* ATT-ARG-1: mixed q/k/v dtypes are promoted silently (no ``TypeError``); keras.torch:
  invalid shapes raise torch's ``RuntimeError``; keras.jax: heads that do not divide raise
  ``TypeError`` (the fallback's reshape) instead of ``ValueError``;
* keras.torch on CPUs with AVX-512 kernels: torch SDPA's NaN-row deviation (``_torch_cpu``).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import Any

import attnspec

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter
from ._torch_cpu import NAN_ROW_SHORT_ON_AVX512

__all__ = ["KerasJaxAdapter", "KerasTorchAdapter", "keras_module"]


def keras_module(backend: str) -> Any:
    """``keras``, imported with ``KERAS_BACKEND=backend`` (set here, before the import).

    Raises
    ------
    RuntimeError
        When keras is already imported in this process with another backend.
    """
    reason = other_backend(backend)
    if reason is not None:
        raise RuntimeError(reason)
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = backend
    import keras  # type: ignore[import-untyped,unused-ignore]

    return keras


def other_backend(backend: str) -> str | None:
    """Why Keras cannot run on ``backend`` in this process: it was imported with another
    one (``None`` when it was not imported yet, or with this one)."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        found = str(keras.backend.backend())
    except Exception:  # a half-imported keras
        found = os.environ.get("KERAS_BACKEND", "unknown")
    if found == backend:
        return None
    return (f"keras: already imported in this process with backend {found!r} (Keras reads "
            f"KERAS_BACKEND once, at import); grade keras.{backend} in a process of its own "
            "(attnspec check runs each implementation in its own worker)")


def _with_mask(case: Case) -> bool:
    return case.params.get("mask") is not None


_FLOAT64 = Deviation(
    "float64 inputs are computed and returned in float32: Keras's result_type maps 64-bit "
    "dtypes to 32-bit ones, out dtype float32", dtypes=("float64",))
_MIXED = "mixed q/k/v dtypes are promoted silently (Keras's result_type), no TypeError"


class _KerasAdapter(NativeAdapter):
    keras_backend = ""
    requires = (("keras", "keras"),)
    ops = frozenset({"attention"})
    features = frozenset({
        "batch0", "batch2", "gqa", "lq_ne_lk", "empty_keys", "scale", "mask", "bias",
        "bias_neg_inf", "causal", "backward", "grad_bias",
    })

    def unavailable(self) -> str | None:
        return super().unavailable() or other_backend(self.keras_backend)

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        from array_api_compat import array_namespace

        keras = keras_module(self.keras_backend)
        q, k, v = args["query"], args["key"], args["value"]
        xp = array_namespace(q)
        batch = tuple(q.shape[:-3])
        hq, lq, lk = q.shape[-3], q.shape[-2], k.shape[-2]
        n = math.prod(batch)

        def tokens_first(x: Any) -> Any:
            # (*batch, H, L, D) -> (n, L, H, D): Keras takes 4-D arrays only.
            x = xp.broadcast_to(x, (*batch, *x.shape[-3:]))
            return attnspec.bhld_to_blhd(xp.reshape(x, (n, *x.shape[-3:])))

        kwargs: dict[str, Any] = {}
        for name in ("mask", "bias"):
            if args.get(name) is not None:
                x = xp.broadcast_to(args[name], (*batch, hq, lq, lk))
                kwargs[name] = xp.reshape(x, (n, hq, lq, lk))
        if args.get("causal"):
            if args.get("alignment", "upper_left") != "upper_left":
                raise ValueError("keras.ops.dot_product_attention has no lower-right causal")
            kwargs["is_causal"] = True
        if args.get("scale") is not None:
            kwargs["scale"] = float(args["scale"])
        for name in ("softcap", "window", "kv_lengths", "q_lengths", "dropout_mask"):
            if args.get(name) is not None:
                raise ValueError(f"keras.ops.dot_product_attention has no {name}")
        # Keras's torch backend moves tensors to its default device (CUDA when there is
        # one); JAX computes where the (committed) inputs are.
        scope = (keras.device(str(q.device)) if self.keras_backend == "torch"
                 else contextlib.nullcontext())
        with scope:
            out = keras.ops.dot_product_attention(
                tokens_first(q), tokens_first(k), tokens_first(v), **kwargs)
        out = attnspec.blhd_to_bhld(out)
        return {"out": xp.reshape(out, (*batch, hq, lq, out.shape[-1]))}


class KerasTorchAdapter(_KerasAdapter):
    name = "keras.torch"
    description = "keras.ops.dot_product_attention with KERAS_BACKEND=torch"
    backends = ("torch-cpu", "torch-cuda")
    distributions = ("keras", "torch")
    keras_backend = "torch"
    features = _KerasAdapter.features | {"dv_ne_dk"}
    exclusive = (frozenset({"mask", "bias"}),)
    deterministic_on = ("torch-cpu",)
    deviations_on = (("torch-cpu", NAN_ROW_SHORT_ON_AVX512),)
    deviations = (
        _FLOAT64,
        Deviation("a row masked entirely by the bool mask attends to every key: Keras turns "
                  "the mask into an additive -0.7 * 3.39e38 (finite), so out = mean of all "
                  "V rows (a row of -inf bias gives 0, as the spec)",
                  frozenset({"empty_rows"}), fingerprint="fully_masked_row=mean_v",
                  when=_with_mask, condition="rows emptied by the mask"),
        Deviation("a NaN/inf key at a position masked by the mask (added as a finite "
                  "-2.4e38) or by a -inf bias (torch SDPA) reaches every row of its head",
                  frozenset({"poison_scores"}), fingerprint="masked_value_leak=nan",
                  issue="https://github.com/pytorch/pytorch/issues/101967"),
        Deviation(f"{_MIXED}; invalid shapes raise torch's RuntimeError, not ValueError",
                  frozenset({"arg_errors"})),
    )


class KerasJaxAdapter(_KerasAdapter):
    name = "keras.jax"
    description = "keras.ops.dot_product_attention with KERAS_BACKEND=jax"
    backends = ("jax-cpu", "jax-gpu")
    distributions = ("keras", "jax", "jaxlib")
    keras_backend = "jax"
    deterministic_on = ("jax-cpu",)
    deviations = (
        _FLOAT64,
        Deviation("a row with nothing to attend attends to every key: masked logits are "
                  "-0.7 * float32 max (jax.nn.dot_product_attention), so out = mean of all V "
                  "rows; NaN when the row is masked by a -inf bias",
                  frozenset({"empty_rows"}), fingerprint="fully_masked_row=mean_v",
                  when=lambda case: _with_mask(case) or case.params.get("bias") is not None,
                  condition="rows emptied by the mask or the bias (Lk = 0 gives 0)"),
        Deviation("a NaN key under a -inf bias gives NaN + -inf = NaN (a bool mask does not "
                  "leak)", frozenset({"poison_scores"}),
                  when=lambda case: not _with_mask(case), condition="masked by the bias alone"),
        Deviation(f"{_MIXED}; heads that do not divide raise TypeError (Keras's fallback "
                  "reshape after jax.nn.dot_product_attention refused them), not ValueError",
                  frozenset({"arg_errors"}),
                  when=lambda case: case.params.get("error") in ("mixed_dtypes",
                                                                 "heads_not_divisible"),
                  condition="mixed dtypes, heads that do not divide"),
    )

    def not_applicable(self, case: Case) -> str | None:
        if case.backward and case.dtype == "float16" and self.backend_name == "jax-cpu":
            return ("no float16 gradients on jax-cpu: under jax.jit XLA's CPU dot_general "
                    "refuses F16_F16_F32")
        return super().not_applicable(case)
