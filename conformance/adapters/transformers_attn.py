"""``transformers.sdpa`` and ``transformers.eager``: the attention functions transformers'
models call, :func:`transformers.integrations.sdpa_attention.sdpa_attention_forward` and
the eager ``eager_attention_forward`` (Llama's; most models copy it unchanged).

Both take ``(module, query, key, value, attention_mask, ...)`` with q/k/v in ``(B, H, L, D)``
and return ``(attn_output, attn_weights)``, the output in ``(B, L, H, D)`` (transposed back
here) and the weights ``None`` for sdpa. The ``module`` is what a user outside a model builds:
a bare ``torch.nn.Module()`` in eval mode with the attributes the functions read,
``num_key_value_groups = Hq // Hkv``, ``is_causal`` and ``training`` (eager's dropout);
nothing reads ``config``.

Translation (measured with transformers 5.25 and torch 2.13 on CPU):

* q/k/v are 4-D: no or several batch dims are flattened into one and restored;
* masks are built as transformers' models build them, with ``masking_utils.sdpa_mask``
  (bool, True = attend) from ``causal_mask_function`` (or ``bidirectional_mask_function``)
  and a 2-D padding mask (``kv_lengths`` -> ``arange(Lk) < kv_length``); ``q_offset`` is 0
  for upper-left and ``kv_length - Lq`` for lower-right (one call per sequence where the
  lengths differ: ``sdpa_mask`` takes one offset). The case's own bool ``mask`` is ANDed in.
  sdpa gets that bool mask; eager gets it as ``masking_utils.eager_mask`` converts it: 0
  where True, ``finfo(dtype).min`` where False;
* sdpa, upper-left causal alone: the function's own ``is_causal=True``; and where
  ``sdpa_mask`` returns ``None`` (transformers then relies on ``is_causal``) the same;
* ``bias``: the float ``attention_mask`` (sdpa with nothing else; eager: added to the float
  mask); sdpa with a bool mask or causal as well: ``position_bias``, which the function
  combines with the bool mask itself (``finfo(dtype).min`` where False);
* GQA: ``module.num_key_value_groups`` (``repeat_kv``, or torch's ``enable_gqa``);
* ``scale`` -> ``scaling`` (eager has no default: ``Dk ** -0.5``, as the models set it);
* eager's ``attn_weights`` (the softmax, dropout 0) are returned as ``weights``.

Not declared (inputs and outputs the functions do not take): ``softcap`` (sdpa raises
``ValueError``; eager ignores it), ``window`` (transformers' sliding windows are causal mask
functions of a model's config), ``q_lengths``, ``dropout`` (a probability, no keep-mask),
``sinks``, ``lse``; sdpa's weights are ``None``.

Deviations (graded, and expected to fail), measured:

* sdpa, ATT-CAUSAL-1: ``is_causal=True`` with one query row attends to every key (the
  function sets ``is_causal = q_length > 1 and ...``: a decoding row is lower-right);
* sdpa, ATT-EMPTY-1 with a bias: ``position_bias`` puts ``finfo.min`` (not ``-inf``) where
  the bool mask is False, so an emptied row averages the V rows the mask excludes;
* sdpa: torch's ATT-LEAK-1 (a masked NaN key), ATT-LEAK-2 (NaN in V past ``kv_lengths``:
  ``0 * NaN`` in ``P @ V``), ATT-ARG-1 (``RuntimeError``) and AVX-512 NaN row
  (``torch_sdpa.py``);
* eager: float64 has a float32 error (``softmax(..., dtype=torch.float32)``, cast back); a
  row with nothing to attend gives the mean of V (``finfo.min``, not ``-inf``; NaN through a
  ``-inf`` bias); ``q @ k^T`` is computed unscaled in the input dtype, so float16 logits near
  the dtype's max overflow (NaN out); NaN in a masked key or in V past ``kv_lengths`` reaches
  every row (``NaN + min``, ``0 * NaN``); invalid arguments raise ``RuntimeError``.
"""

from __future__ import annotations

import math
from typing import Any

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter
from ._torch_cpu import NAN_ROW_SHORT_ON_AVX512

__all__ = ["TransformersEagerAdapter", "TransformersSdpaAdapter"]

_BASE_FEATURES = frozenset({
    "batch0", "batch2", "gqa", "dv_ne_dk", "lq_ne_lk", "empty_keys", "scale", "mask", "bias",
    "bias_neg_inf", "causal", "causal_lower_right", "kv_lengths", "backward", "grad_bias",
})
_UNSUPPORTED = ("softcap", "window", "q_lengths", "dropout_mask", "sinks", "alibi_slopes",
                "q_positions", "kv_positions", "q_segment_ids", "kv_segment_ids",
                "block_table", "score_mod", "mask_mod")


def _several_keys(case: Case) -> bool:
    return case.params.get("mask") != "single_key" and int(case.params.get("lk", 2)) > 1


def _one_row_is_causal(case: Case) -> bool:
    """Upper-left causal reaching sdpa's ``is_causal`` with one query row (and more keys):
    no mask, and no padding (``sdpa_mask`` returns ``None`` for full-length sequences)."""
    p = case.params
    lk, lengths = int(p.get("lk", 1)), p.get("kv_lengths")
    return (p.get("lq") == 1 and lk > 1 and p.get("mask") is None
            and (lengths is None or all(int(n) == lk for n in lengths)))


class _TransformersAttention(NativeAdapter):
    backends = ("torch-cpu", "torch-cuda")
    distributions = ("transformers", "torch")
    requires = (("transformers", "transformers"),)
    ops = frozenset({"attention"})
    eager = False

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        for name in _UNSUPPORTED:
            if args.get(name) is not None:
                raise ValueError(f"transformers' attention functions take no {name}")
        return _attention(args, eager=self.eager)


class TransformersSdpaAdapter(_TransformersAttention):
    name = "transformers.sdpa"
    description = ("transformers.integrations.sdpa_attention.sdpa_attention_forward "
                   "(masks from transformers.masking_utils)")
    features = _BASE_FEATURES
    deviations = (
        Deviation("upper-left causal with one query row attends to every key: the function "
                  "sets is_causal = q_length > 1 and ... (a decoding row is lower-right)",
                  frozenset({"causal"}), when=_one_row_is_causal,
                  condition="Lq = 1 < Lk through is_causal (no mask, no padding)"),
        Deviation("a row emptied with a bias as well gives the mean of the V rows the mask "
                  "excludes: position_bias is combined with the bool mask as finfo(dtype).min "
                  "where it is False, not -inf", frozenset({"empty_rows", "bias"}),
                  when=lambda case: any(case.params.get(name) is not None
                                        for name in ("mask", "kv_lengths", "causal")),
                  condition="a bias with a mask, kv_lengths or causal (position_bias)"),
        Deviation("a NaN/inf key at a position the mask excludes makes every query row of "
                  "the head NaN (torch's scaled_dot_product_attention)",
                  frozenset({"poison_scores"}), fingerprint="masked_value_leak=nan",
                  issue="https://github.com/pytorch/pytorch/issues/101967"),
        Deviation("NaN/inf in K/V rows past kv_lengths (a bool padding mask) reach the "
                  "output (torch's scaled_dot_product_attention: 0 * NaN in P @ V)",
                  frozenset({"poison_kv"}), fingerprint="kv_padding_leak=nan"),
        Deviation("invalid shapes and mixed dtypes raise RuntimeError (torch's), not "
                  "TypeError or ValueError", frozenset({"arg_errors"})),
    )
    deviations_on = (("torch-cpu", NAN_ROW_SHORT_ON_AVX512),)


class TransformersEagerAdapter(_TransformersAttention):
    name = "transformers.eager"
    description = ("transformers.models.llama.modeling_llama.eager_attention_forward "
                   "(masks from transformers.masking_utils)")
    features = _BASE_FEATURES | {"weights"}
    eager = True
    deviations = (
        Deviation("the softmax runs in float32 whatever the input (softmax(..., "
                  "dtype=torch.float32), cast back): a float32 error in float64 outputs",
                  dtypes=("float64",), when=_several_keys,
                  condition="more than one key attended (one key: weight exactly 1)"),
        Deviation("a row with nothing to attend gives the mean of V: masks are added as "
                  "finfo(dtype).min, not -inf (NaN where a -inf bias empties the row)",
                  frozenset({"empty_rows"}), fingerprint="fully_masked_row=mean_v",
                  when=lambda case: int(case.params.get("lk", 1)) > 0, condition="Lk > 0"),
        Deviation("q @ k^T is computed unscaled in the input dtype (scaling after the "
                  "product): float16 logits near the dtype's max overflow to inf, out NaN",
                  frozenset({"extreme"}), dtypes=("float16",),
                  when=lambda case: case.params.get("logits") == "near_max",
                  condition="logits near the dtype's max"),
        Deviation("a NaN/inf key or value at a masked position reaches every row (NaN + "
                  "finfo.min in the scores, 0 * NaN in weights @ V)",
                  frozenset({"poison_scores"}), fingerprint="masked_value_leak=nan"),
        Deviation("NaN/inf in K/V rows past kv_lengths reach the output (0 * NaN in "
                  "weights @ V)", frozenset({"poison_kv"}), fingerprint="kv_padding_leak=nan"),
        Deviation("invalid shapes and mixed dtypes raise RuntimeError (torch.matmul's), not "
                  "TypeError or ValueError", frozenset({"arg_errors"})),
    )


def _module(groups: int, is_causal: bool) -> Any:
    """What a user calling the function outside a model passes as ``module``."""
    import torch

    module: Any = torch.nn.Module()
    module.num_key_value_groups = groups
    module.is_causal = is_causal
    return module.eval()


def _attention(args: dict[str, Any], *, eager: bool) -> dict[str, Any]:
    import torch
    from transformers import masking_utils

    q, k, v = args["query"], args["key"], args["value"]
    batch = q.shape[:-3]
    hq, lq, lk = q.shape[-3], q.shape[-2], k.shape[-2]
    n = math.prod(batch)

    def flat(x: Any, tail: tuple[int, ...]) -> Any:
        return x.broadcast_to((*batch, *tail)).reshape(n, *tail)

    q, k, v = flat(q, q.shape[-3:]), flat(k, k.shape[-3:]), flat(v, v.shape[-3:])
    mask = args.get("mask")
    mask = None if mask is None else flat(mask, (hq, lq, lk))
    bias = args.get("bias")
    bias = None if bias is None else flat(bias, (hq, lq, lk))
    causal, kv_lengths = bool(args.get("causal")), args.get("kv_lengths")
    lower_right = causal and args.get("alignment", "upper_left") == "lower_right"
    is_causal = False
    if causal or kv_lengths is not None:
        if not eager and mask is None and kv_lengths is None and not lower_right:
            is_causal = True  # the function's own argument
        else:
            padding, ends = None, [lk] * n
            if kv_lengths is not None:
                lengths = torch.as_tensor(kv_lengths, device=q.device).reshape(n)
                padding = torch.arange(lk, device=q.device)[None, :] < lengths[:, None]
                ends = [int(x) for x in lengths]
            # Lower-right: the last query row sits at each sequence's last key (ATT-CAUSAL-2);
            # sdpa_mask takes one q_offset, so sequences of other lengths get one call each.
            offsets = [end - lq if lower_right else 0 for end in ends]
            groups = [range(n)] if len(set(offsets)) == 1 else [range(b, b + 1) for b in range(n)]
            parts = [masking_utils.sdpa_mask(
                batch_size=len(rows), q_length=lq, kv_length=lk, q_offset=offsets[rows[0]],
                mask_function=(masking_utils.causal_mask_function if causal
                               else masking_utils.bidirectional_mask_function),
                attention_mask=None if padding is None else padding[rows[0]:rows[-1] + 1],
                allow_is_causal_skip=not eager and mask is None and len(groups) == 1,
                device=q.device) for rows in groups]
            structural = (parts[0] if len(parts) == 1
                          else torch.cat([p for p in parts if p is not None]))
            if structural is None:  # transformers relies on is_causal instead
                is_causal = causal
            else:
                mask = structural if mask is None else mask & structural
    module = _module(hq // k.shape[-3], is_causal)
    scale = args.get("scale")
    if eager:
        from transformers.models.llama.modeling_llama import eager_attention_forward

        attention_mask = None
        if mask is not None:  # as masking_utils.eager_mask converts its bool mask
            attention_mask = torch.where(mask, torch.zeros((), dtype=q.dtype),
                                         torch.finfo(q.dtype).min)
        if bias is not None:
            attention_mask = bias if attention_mask is None else attention_mask + bias
        out, weights = eager_attention_forward(
            module, q, k, v, attention_mask,
            scaling=q.shape[-1] ** -0.5 if scale is None else float(scale), dropout=0.0)
    else:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        kwargs: dict[str, Any] = {}
        if bias is not None and (mask is not None or is_causal):
            attention_mask, kwargs["position_bias"] = mask, bias
        else:
            attention_mask = bias if bias is not None else mask
        out, weights = sdpa_attention_forward(
            module, q, k, v, attention_mask, dropout=0.0,
            scaling=None if scale is None else float(scale), is_causal=is_causal, **kwargs)
    results = {"out": out.transpose(1, 2).reshape(*batch, hq, lq, v.shape[-1])}
    if weights is not None:
        results["weights"] = weights.reshape(*batch, hq, lq, lk)
    return results
