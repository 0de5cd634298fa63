"""``torch.sdpa``: :func:`torch.nn.functional.scaled_dot_product_attention`.

Translation (measured with torch 2.13 on CPU):

* layout: torch takes ``(N, ..., H, L, E)`` like the spec, any number of batch dims (or none);
* ``mask`` -> bool ``attn_mask`` (True = attend, the spec's polarity); ``bias`` -> float
  ``attn_mask``; both -> the bias with ``-inf`` where the mask is False (torch takes one
  ``attn_mask``);
* ``causal`` (upper-left) -> ``is_causal=True``, or ANDed into ``attn_mask`` when there is one
  (torch refuses ``is_causal`` together with ``attn_mask``);
* lower-right causal -> ``torch.nn.attention.bias.causal_lower_right(Lq, Lk)``, which cannot
  be combined with another mask, so with a mask/bias the same lower-right triangle is built
  explicitly;
* GQA -> ``enable_gqa=True`` (query head h reads kv head h // (Hq // Hkv), as the spec);
* ``scale`` -> ``scale``.

Not declared (inputs and outputs torch's function does not take), with the reason:

* ``lse``, ``weights``: the public function returns only the output;
* ``softcap``, ``window``, ``kv_lengths``, ``q_lengths``: no such arguments (expressing them
  as a mask would grade the adapter, not torch);
* ``dropout``: torch draws its own random dropout mask (``dropout_p``); no keep-mask argument.

Deviations (graded, and expected to fail: ``deviations`` below, shown as ``x``):

* ATT-LEAK-1: a NaN/inf key at a position masked by ``attn_mask`` (bool, or ``-inf`` in a
  float mask) makes the scores NaN before the mask applies, so every query row of the
  head is NaN (fingerprint ``masked_value_leak=nan``; pytorch/pytorch#101967);
* ATT-ARG-1: invalid shapes and mixed dtypes raise ``RuntimeError``, not
  ``TypeError``/``ValueError``;
* ATT-NAN-1 in half precision: a ``+inf`` attended score gives 0 for its row in float16 and
  bfloat16 (NaN in float32 and float64, as the spec; measured on the full catalog);
* ATT-NAN-1 on CPUs where torch runs its AVX-512 kernels: a query row whose scores are all
  NaN gives 0 when it has fewer than 16 keys (``_torch_cpu.py``; pytorch/pytorch#141128).
"""

from __future__ import annotations

import warnings
from typing import Any

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter
from ._torch_cpu import NAN_ROW_SHORT_ON_AVX512

__all__ = ["TorchSdpaAdapter"]


class TorchSdpaAdapter(NativeAdapter):
    name = "torch.sdpa"
    description = "torch.nn.functional.scaled_dot_product_attention"
    backends = ("torch-cpu", "torch-cuda")
    distributions = ("torch",)
    ops = frozenset({"attention"})
    features = frozenset({
        "batch0", "batch2", "gqa", "dv_ne_dk", "lq_ne_lk", "empty_keys", "scale", "mask",
        "bias", "bias_neg_inf", "causal", "causal_lower_right", "backward", "grad_bias",
    })
    deviations = (
        Deviation("a NaN/inf key at a position masked by attn_mask (bool, or -inf in a float "
                  "mask) makes the scores NaN before the mask applies: every query row of "
                  "the head is NaN", frozenset({"poison_scores"}),
                  fingerprint="masked_value_leak=nan",
                  issue="https://github.com/pytorch/pytorch/issues/101967"),
        Deviation("invalid shapes and mixed dtypes raise RuntimeError, not TypeError or "
                  "ValueError", frozenset({"arg_errors"})),
        Deviation("a +inf attended score gives out 0 for its row in float16 and bfloat16 "
                  "(NaN in float32 and float64, as the spec)", frozenset({"nonfinite"}),
                  dtypes=("float16", "bfloat16"),
                  when=lambda case: case.params.get("poison") == "pos_inf",
                  condition="a +inf score"),
    )
    deterministic_on = ("torch-cpu",)
    deviations_on = (("torch-cpu", NAN_ROW_SHORT_ON_AVX512),)

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        for name in ("softcap", "window", "kv_lengths", "q_lengths", "dropout_mask"):
            if args.get(name) is not None:
                raise ValueError(f"torch's scaled_dot_product_attention has no {name}")
        with warnings.catch_warnings():
            # causal_lower_right warns for Lq > Lk that the empty rows "will produce NaNs";
            # the conformance case grades what it really produces.
            warnings.simplefilter("ignore", UserWarning)
            return {"out": _sdpa(args)}


def _sdpa(args: dict[str, Any]) -> Any:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    q, k, v = args["query"], args["key"], args["value"]
    lq, lk = q.shape[-2], k.shape[-2]
    mask, bias = args.get("mask"), args.get("bias")
    attn_mask: Any = None
    if bias is not None:  # one attn_mask: the bias, -inf where the mask excludes
        attn_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        attn_mask = mask
    is_causal = False
    if args.get("causal"):
        lower_right = args.get("alignment", "upper_left") == "lower_right"
        if attn_mask is None and lower_right:
            attn_mask = causal_lower_right(lq, lk)
        elif attn_mask is None:
            is_causal = True
        else:  # is_causal / CausalBias cannot be combined with another mask
            offset = lk - lq if lower_right else 0
            keep = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(offset)
            attn_mask = (attn_mask & keep if attn_mask.dtype == torch.bool
                         else attn_mask.masked_fill(~keep, float("-inf")))
    kwargs: dict[str, Any] = {"attn_mask": attn_mask, "is_causal": is_causal}
    if args.get("scale") is not None:
        kwargs["scale"] = args["scale"]
    if q.shape[-3] != k.shape[-3]:
        kwargs["enable_gqa"] = True
    return F.scaled_dot_product_attention(q, k, v, **kwargs)
