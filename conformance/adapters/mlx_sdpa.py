"""``mlx.fast_sdpa``: :func:`mlx.core.fast.scaled_dot_product_attention` on mlx's CPU device.

The adapter runs on the ``numpy`` backend: the case's NumPy arrays become ``mx.array`` in
their own dtype (``mx.array(x)`` alone would turn float64 into float32), and the output comes
back as a NumPy array of mlx's output dtype.

Translation (measured with mlx 0.32 on Linux, ``mlx[cpu]``):

* layout: q/k/v ``(B, H, L, D)`` like the spec, rank 4 only (rank 3 and 5 raise): no or
  several batch dims are flattened into one and restored;
* ``mask`` -> a bool ``mask`` (True = attend, the spec's polarity); ``bias`` -> an additive
  ``mask`` in the input dtype; both -> the bias with ``-inf`` where the mask is False (mlx
  takes one mask);
* lower-right causal -> ``mask="causal"`` (mlx aligns the last query with the last key);
  upper-left causal -> ``"causal"`` where Lq = Lk (the same triangle), else an explicit bool
  triangle (mlx has no upper-left option); with another mask the triangle is ANDed in;
* GQA natively (k/v with fewer heads); ``scale`` -> ``scale`` (required by mlx: ``Dk ** -0.5``
  when the case has none); ``sinks`` -> ``sinks`` in the input dtype, as mlx's ``(Hq,)``
  when they are the same for every sequence (else as given: see the deviations).

Not declared (inputs and outputs mlx's function does not take): bfloat16 (mlx has it, but the
numpy backend cannot carry it), ``softcap``, ``window``, ``kv_lengths``, ``q_lengths``,
``dropout``, ``lse``, ``weights``.

Deviations (graded, and expected to fail), measured:

* float64: the softmax runs in float32 (as mlx documents): a float32 error (~1e-7) in float64
  outputs, which keep the float64 dtype;
* ATT-EMPTY-1: a row with nothing to attend (a bool mask, or lower-right causal with
  Lq > Lk) gives the mean of all V rows; NaN where a ``-inf`` bias empties it;
* ATT-LEAK-1: a NaN key under a ``-inf`` additive mask makes its rows NaN (a bool mask does
  not leak);
* sinks of shape ``(B, Hq)`` raise ``ValueError`` ("Received invalid shape for sinks"): mlx
  takes one sink per head, ``(Hq,)``;
* ATT-ARG-1: mixed q/k/v dtypes are promoted without an error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter

__all__ = ["MlxFastSdpaAdapter"]


def _several_keys(case: Case) -> bool:
    """Where float32 arithmetic shows in a float64 output: one attended key is exact."""
    return case.params.get("mask") != "single_key" and int(case.params.get("lk", 2)) > 1


class MlxFastSdpaAdapter(NativeAdapter):
    name = "mlx.fast_sdpa"
    description = "mlx.core.fast.scaled_dot_product_attention on mlx's CPU device"
    backends = ("numpy",)
    distributions = ("mlx", "mlx-cpu")
    requires = (("mlx", "mlx"),)
    ops = frozenset({"attention"})
    supported_dtypes = ("float64", "float32", "float16")
    features = frozenset({
        "batch0", "batch2", "gqa", "dv_ne_dk", "lq_ne_lk", "empty_keys", "scale", "mask",
        "bias", "bias_neg_inf", "causal", "causal_lower_right", "sinks",
    })
    deviations = (
        Deviation("the softmax runs in float32 whatever the input (as mlx documents): a "
                  "float32 error (~1e-7) in float64 outputs", dtypes=("float64",),
                  when=_several_keys,
                  condition="more than one key attended (one key: weight exactly 1)"),
        Deviation("sinks must have shape (Hq,): per-sequence sinks (B, Hq) raise ValueError "
                  "(Received invalid shape for sinks)", frozenset({"sinks"}),
                  when=lambda case: case.params.get("sinks") != "per_head",
                  condition="sinks that vary over the batch"),
        Deviation("a row with nothing to attend attends to every key: out = mean of all V "
                  "rows (bool mask, lower-right causal with Lq > Lk); NaN when a -inf "
                  "additive mask empties it", frozenset({"empty_rows"}),
                  fingerprint="fully_masked_row=mean_v",
                  when=lambda case: int(case.params.get("lk", 1)) > 0, condition="Lk > 0"),
        Deviation("a NaN key under a -inf additive mask gives NaN rows (NaN + -inf; a bool "
                  "mask does not leak)", frozenset({"poison_scores"}),
                  when=lambda case: case.params.get("bias") is not None,
                  condition="an additive mask (a bias; with a mask, -inf where it excludes)"),
        Deviation("mixed q/k/v dtypes are promoted, not refused with TypeError",
                  frozenset({"arg_errors"}),
                  when=lambda case: case.params.get("error") == "mixed_dtypes",
                  condition="mixed dtypes"),
    )

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        import mlx.core as mx

        for name in ("softcap", "window", "kv_lengths", "q_lengths", "dropout_mask"):
            if args.get(name) is not None:
                raise ValueError(f"mlx's scaled_dot_product_attention has no {name}")
        q, k, v = args["query"], args["key"], args["value"]
        batch = q.shape[:-3]
        hq, lq, lk = q.shape[-3], q.shape[-2], k.shape[-2]
        n = math.prod(batch)

        def to_mlx(x: np.ndarray, tail: tuple[int, ...]) -> Any:
            x = np.ascontiguousarray(np.broadcast_to(x, (*batch, *tail)).reshape(n, *tail))
            return mx.array(x, dtype=_dtype(mx, x))

        mask, bias = args.get("mask"), args.get("bias")
        if args.get("causal"):
            lower_right = args.get("alignment", "upper_left") == "lower_right"
            tri = np.tri(lq, lk, lk - lq if lower_right else 0, dtype=bool)
            if mask is None and bias is None and (lower_right or lq == lk):
                mask = "causal"
            else:
                mask = tri if mask is None else mask & tri
        kwargs: dict[str, Any] = {"scale": float(q.shape[-1] ** -0.5 if args.get("scale") is None
                                                 else args["scale"])}
        if isinstance(mask, str):
            kwargs["mask"] = mask
        elif bias is not None:
            additive = bias if mask is None else np.where(mask, bias, -np.inf)
            kwargs["mask"] = to_mlx(additive.astype(q.dtype), (hq, lq, lk))
        elif mask is not None:
            kwargs["mask"] = to_mlx(mask, (hq, lq, lk))
        sinks = args.get("sinks")
        if sinks is not None:
            sinks = np.broadcast_to(sinks, (*batch, hq)).reshape(n, hq)
            if (sinks == sinks[:1]).all():  # one sink per head: mlx's (Hq,)
                sinks = sinks[0]
            kwargs["sinks"] = mx.array(np.ascontiguousarray(sinks),
                                       dtype=_dtype(mx, sinks))
        out = mx.fast.scaled_dot_product_attention(
            to_mlx(q, q.shape[-3:]), to_mlx(k, k.shape[-3:]), to_mlx(v, v.shape[-3:]),
            **kwargs)
        return {"out": np.array(out, copy=True).reshape(*batch, hq, lq, v.shape[-1])}


def _dtype(mx: Any, x: np.ndarray) -> Any:
    """The mlx dtype of a NumPy array (``mx.array(x)`` alone makes float64 float32)."""
    return mx.bool_ if x.dtype == np.bool_ else getattr(mx, str(x.dtype))
