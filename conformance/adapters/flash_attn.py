"""``flash_attn``: :func:`flash_attn.flash_attn_func` (FlashAttention-2) on a CUDA device.

Unavailable unless the ``flash_attn`` package and a CUDA device are present. The declaration
below follows flash-attention's documentation (``flash_attn_interface.py``) and has not been
measured by this project (no CUDA machine in CI); run the suite on a GPU before trusting it,
and remove a feature that fails rather than loosening the tolerance.

Translation:

* layout: ``(B, L, H, D)`` (tokens before heads), through :func:`attnspec.bhld_to_blhd` /
  :func:`attnspec.blhd_to_bhld`; no or several batch dims are flattened into one;
* GQA natively (``nheads`` a multiple of ``nheads_k``, contiguous groups as the spec);
* ``causal=True`` is aligned to the bottom-right corner (the spec's ``lower_right``);
* ``window=(left, right)`` -> ``window_size`` (``-1`` = unbounded), also bottom-right
  aligned;
* ``scale`` -> ``softmax_scale``; ``softcap`` -> ``softcap`` (applied to the scaled scores,
  as the spec);
* ``alibi_slopes`` -> ``alibi_slopes`` (float32 ``(B, H)``): ``-slope * |i + Lk - Lq - j|``,
  also bottom-right aligned (the spec's ALiBi with ``lower_right`` positions);
* ``lse``: ``return_attn_probs=True`` also returns ``softmax_lse`` (float32,
  ``(B, H, Lq)``, the spec's layout); the probabilities it returns are documented as
  "for testing only ... not guaranteed to have the right scaling", so no ``weights``.

Upper-left alignment (``causal``, ``window`` and ALiBi with the default alignment) is
applicable only where it coincides with bottom-right, ``Lq == Lk``.

Not declared: float32/float64 (the kernels take float16/bfloat16 only), ``dv_ne_dk``
(FlashAttention-2 needs one head dim), ``mask``/``bias``,
``kv_lengths``/``q_lengths`` (``flash_attn_varlen_func`` and ``flash_attn_with_kvcache``
are other functions), ``dropout`` (random, its own RNG).

Deviations (from the kernel source, unmeasured here): a row with no key to attend (lower-right
causal with ``Lq > Lk``) gives out 0, but its lse is ``+inf``, where the spec says ``-inf``.
With ALiBi under a causal mask (no left window) the kernel adds ``+slope * j`` instead
(``mask.h``: "the same bias vector to all rows"), which differs by a per-row constant: out is
as the spec, lse is larger by ``slope * (i + Lk - Lq)``.
The other behaviours (NaN, extreme logits, argument errors) are graded like everyone's.
"""

from __future__ import annotations

import math
from typing import Any

import attnspec

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter

__all__ = ["CAUSAL_ALIBI", "FlashAttnAdapter"]


def _causal_alibi(case: Case) -> bool:
    """The kernel's ``is_causal``: causal (or a right window of 0) without a left window."""
    left, right = case.params.get("window") or (None, None)
    return left is None and (bool(case.params.get("causal")) or right == 0)


#: Shared by the flash_attn adapters (``flash_attn_varlen``, ``flash_attn_kvcache``).
CAUSAL_ALIBI = Deviation(
    "with ALiBi under a causal mask the kernel adds +slope * j (one bias vector for all rows): "
    "out is as the spec, lse is larger by slope * (i + Lk - Lq) (read from the kernel source; "
    "not measured by this project)", frozenset({"alibi"}), when=_causal_alibi,
    condition="causal, no left window")


class FlashAttnAdapter(NativeAdapter):
    name = "flash_attn"
    description = "flash_attn.flash_attn_func (FlashAttention-2, CUDA)"
    backends = ("torch-cuda",)
    distributions = ("flash-attn", "torch")
    requires = (("flash_attn", "flash_attn"),)
    ops = frozenset({"attention"})
    supported_dtypes = ("float16", "bfloat16")
    features = frozenset({
        "batch0", "batch2", "gqa", "lq_ne_lk", "scale", "softcap", "causal",
        "causal_lower_right", "window", "alibi", "lse",
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
        p = case.params
        aligned = p.get("causal") or p.get("window") is not None or p.get("alibi")
        if aligned and p.get("alignment", "upper_left") == "upper_left" and p["lq"] != p["lk"]:
            return ("flash_attn aligns causal masks, windows and ALiBi bottom-right (Lq != Lk "
                    "here)")
        return None

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        # Untyped where installed (no py.typed), missing elsewhere (it needs CUDA).
        from flash_attn import (  # type: ignore[import-not-found, import-untyped, unused-ignore]
            flash_attn_func,
        )

        for name in ("mask", "bias", "kv_lengths", "q_lengths", "dropout_mask"):
            if args.get(name) is not None:
                raise ValueError(f"flash_attn_func has no {name}")
        q, k, v = args["query"], args["key"], args["value"]
        batch = q.shape[:-3]
        hq, lq, lk = q.shape[-3], q.shape[-2], k.shape[-2]
        n = math.prod(batch)

        def tokens_first(x: Any) -> Any:
            x = x.expand(*batch, *x.shape[-3:]).reshape(n, *x.shape[-3:])
            return attnspec.bhld_to_blhd(x).contiguous()

        slopes = args.get("alibi_slopes")
        aligned = args.get("causal") or args.get("window") is not None or slopes is not None
        if aligned and args.get("alignment", "upper_left") == "upper_left" and lq != lk:
            raise ValueError("flash_attn_func aligns causal masks, windows and ALiBi "
                             "bottom-right")
        if slopes is not None:  # (*batch, H) broadcastable -> float32 (B, H)
            slopes = slopes.expand(*batch, hq).reshape(n, hq).float().contiguous()
        window = args.get("window") or (None, None)
        out, lse, _ = flash_attn_func(
            tokens_first(q), tokens_first(k), tokens_first(v),
            softmax_scale=args.get("scale"), causal=bool(args.get("causal")),
            window_size=tuple(-1 if w is None else int(w) for w in window),
            softcap=float(args.get("softcap") or 0.0), alibi_slopes=slopes,
            return_attn_probs=True,
        )
        out = attnspec.blhd_to_bhld(out).reshape(*batch, hq, lq, out.shape[-1])
        return {"out": out, "lse": lse.reshape(*batch, hq, lq)}
