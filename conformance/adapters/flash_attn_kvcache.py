"""``flash_attn.kvcache``: :func:`flash_attn.flash_attn_with_kvcache` (FlashAttention-2
decoding against a KV cache) on a CUDA device.

Unavailable unless the ``flash_attn`` package and a CUDA device are present. The declaration
follows flash-attention's documentation and source (``flash_attn_interface.py``,
``csrc/flash_attn/flash_api.cpp``) and has not been measured by this project; run the suite
on a GPU before trusting it, and remove a feature that fails rather than loosening the
tolerance.

Translation (attention only: no new ``k``/``v`` appended, no rotary embedding, no
``cache_batch_idx`` / ``cache_leftpad``):

* layout: ``q`` ``(B, Lq, H, D)`` and the caches ``(B, Lk, Hkv, D)`` (tokens before heads,
  :func:`attnspec.bhld_to_blhd`); no or several batch dims are flattened into one;
* ``kv_lengths`` -> ``cache_seqlens`` (int32 ``(B,)``; none: the whole cache);
* ``paged``: ``block_table`` (int32 ``(B, max_pages)``, passed as it is: dead entries keep
  their garbage, as the spec allows) over the pools, whose ``(num_pages, Hkv, page_size, D)``
  becomes flash-attention's ``(num_blocks, page_block_size, Hkv, D)``;
* causal, ``window`` (``window_size``, ``-1`` = unbounded) and ALiBi (``alibi_slopes``,
  float32 ``(B, H)``) are aligned bottom-right per sequence, relative to ``cache_seqlens``:
  the spec's ``lower_right`` with ``kv_lengths`` (``offset = kv_lengths[b] - Lq``). Upper-left
  alignment is applicable only where it coincides (``Lq`` equal to every sequence's key
  count);
* ``scale`` -> ``softmax_scale``, ``softcap`` -> ``softcap``, GQA natively;
* ``lse``: ``return_softmax_lse=True`` (float32 ``(B, H, Lq)``, the spec's layout).

Paged caches: the kernel refuses pages that are not a multiple of 256 tokens
(``page_block_size % 256 == 0``, checked in ``mha_fwd_kvcache``). Re-paging in the adapter
would grade the adapter's gather instead of the kernel's (shared pages, partly filled pages,
garbage in dead table entries), so a paged case whose pages are smaller (the catalog's
transform builds pages of ``input_forms.PAGE_SIZE`` = 4 tokens) is not applicable, with that
reason; ``paged`` stays declared for pages the kernel takes.

Not declared: float32/float64, ``dv_ne_dk``, ``mask``/``bias``, ``q_lengths`` and
``segments`` (``flash_attn.varlen``), ``dropout`` (no dropout), ``sinks``, ``positions``,
``empty_keys``.

Deviations (from the kernel source, unmeasured here; ``flash_attn``'s): a row with no key to
attend (lower-right causal with ``Lq > cache_seqlens``, ``cache_seqlens = 0``) gives out 0
but lse ``+inf`` (the split-KV path combines its splits' ``-inf`` into ``+inf`` too), where
the spec says ``-inf``; with ALiBi under a causal mask lse is larger by
``slope * (i + cache_seqlens - Lq)``.
"""

from __future__ import annotations

import math
from typing import Any

import attnspec

from .. import input_forms
from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter
from .flash_attn import CAUSAL_ALIBI

__all__ = ["FlashAttnKvcacheAdapter", "off_corner", "window_size"]

#: flash-attention's paged kernels take pages of a multiple of this many tokens.
PAGE_MULTIPLE = 256


def window_size(window: Any) -> tuple[int, int]:
    """The spec's ``(left, right)`` (``None`` = unbounded) as flash-attention's ``-1``."""
    left, right = window or (None, None)
    return (-1 if left is None else int(left), -1 if right is None else int(right))


def _lengths(value: Any, default: int) -> list[int]:
    if value is None:
        return [default]
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def off_corner(case: Case) -> str | None:
    """Why flash-attention's bottom-right causal mask, window and ALiBi differ from the case's
    upper-left ones (query and key lengths differ); ``None`` when they coincide."""
    p = case.params
    aligned = p.get("causal") or p.get("window") is not None or p.get("alibi")
    if not aligned or p.get("alignment") == "lower_right":
        return None
    q, kv = _lengths(p.get("q_lengths"), p["lq"]), _lengths(p.get("kv_lengths"), p["lk"])
    if len(q) == 1 or len(kv) == 1:
        q, kv = q * len(kv) if len(q) == 1 else q, kv * len(q) if len(kv) == 1 else kv
    if q == kv:
        return None
    return ("flash-attention aligns causal masks, windows and ALiBi bottom-right (query and "
            "key lengths differ here)")


class FlashAttnKvcacheAdapter(NativeAdapter):
    name = "flash_attn.kvcache"
    description = "flash_attn.flash_attn_with_kvcache (FlashAttention-2 KV cache, CUDA)"
    backends = ("torch-cuda",)
    distributions = ("flash-attn", "torch")
    requires = (("flash_attn", "flash_attn.kvcache"),)
    ops = frozenset({"attention"})
    supported_dtypes = ("float16", "bfloat16")
    features = frozenset({
        "batch0", "batch2", "gqa", "lq_ne_lk", "scale", "softcap", "causal",
        "causal_lower_right", "window", "alibi", "kv_lengths", "paged", "lse",
    })
    deviations = (
        Deviation("a row with no key to attend gives out 0 but lse +inf (read from the "
                  "kernel source; not measured by this project)", frozenset({"empty_rows"})),
        CAUSAL_ALIBI,
    )

    def not_applicable(self, case: Case) -> str | None:
        reason = super().not_applicable(case)
        if reason is not None or case.op != "attention":
            return reason
        if "paged" in case.features and input_forms.PAGE_SIZE % PAGE_MULTIPLE:
            return (f"flash_attn_with_kvcache takes pages of a multiple of {PAGE_MULTIPLE} "
                    f"tokens; this case's pages hold {input_forms.PAGE_SIZE}")
        return off_corner(case)

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        import torch

        # Untyped where installed (no py.typed), missing elsewhere (it needs CUDA).
        from flash_attn import (  # type: ignore[import-not-found, import-untyped, unused-ignore]
            flash_attn_with_kvcache,
        )

        for name in ("mask", "bias", "q_lengths", "dropout_mask", "sinks", "q_positions",
                     "kv_positions", "q_segment_ids", "kv_segment_ids", "score_mod",
                     "mask_mod"):
            if args.get(name) is not None:
                raise ValueError(f"flash_attn_with_kvcache has no {name}")
        q, k, v = args["query"], args["key"], args["value"]
        batch = tuple(q.shape[:-3])
        hq, lq = q.shape[-3], q.shape[-2]
        n = math.prod(batch)

        def tokens_first(x: Any) -> Any:
            x = x.expand(*batch, *x.shape[-3:]).reshape(n, *x.shape[-3:])
            return attnspec.bhld_to_blhd(x).contiguous()

        table, lengths = args.get("block_table"), args.get("kv_lengths")
        if table is not None:
            if lengths is None:
                raise ValueError("flash_attn_with_kvcache: a paged cache needs kv_lengths")
            k_cache, v_cache = (attnspec.bhld_to_blhd(x).contiguous() for x in (k, v))
            table = table.expand(*batch, table.shape[-1]).reshape(n, table.shape[-1])
            table = table.to(torch.int32).contiguous()
        else:
            k_cache, v_cache = tokens_first(k), tokens_first(v)
        if lengths is not None:
            lengths = lengths.expand(batch).reshape(n).to(torch.int32).contiguous()
        aligned = args.get("causal") or args.get("window") is not None
        aligned = aligned or args.get("alibi_slopes") is not None
        if aligned and args.get("alignment") != "lower_right":
            keys = [k.shape[-2]] * n if lengths is None else lengths.tolist()
            if any(length != lq for length in keys):
                raise ValueError("flash_attn_with_kvcache aligns causal masks, windows and "
                                 "ALiBi bottom-right (to cache_seqlens)")
        slopes = args.get("alibi_slopes")
        if slopes is not None:
            slopes = slopes.expand(*batch, hq).reshape(n, hq).to(torch.float32).contiguous()
        out, lse = flash_attn_with_kvcache(
            tokens_first(q), k_cache, v_cache, cache_seqlens=lengths, block_table=table,
            softmax_scale=args.get("scale"), causal=bool(args.get("causal")),
            window_size=window_size(args.get("window")),
            softcap=float(args.get("softcap") or 0.0), alibi_slopes=slopes,
            return_softmax_lse=True,
        )
        out = attnspec.blhd_to_bhld(out).reshape(*batch, hq, lq, out.shape[-1])
        return {"out": out, "lse": lse.reshape(*batch, hq, lq)}
