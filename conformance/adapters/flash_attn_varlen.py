"""``flash_attn.varlen``: :func:`flash_attn.flash_attn_varlen_func` (FlashAttention-2, packed
sequences) on a CUDA device.

Unavailable unless the ``flash_attn`` package and a CUDA device are present. The declaration
follows flash-attention's documentation and source (``flash_attn_interface.py``,
``csrc/flash_attn/flash_api.cpp``) and has not been measured by this project (no CUDA
machine in CI); run the suite on a GPU before trusting it, and remove a feature that fails
rather than loosening the tolerance.

Translation: the dense call becomes one packed call, as ``bert_padding.unpad_input`` packs a
padded batch. Each batch row (batch dims flattened) is split into documents: the
non-padding tokens of each segment id, else the first ``q_lengths[b]`` / ``kv_lengths[b]``
tokens (all without lengths), gathered in order into ``(total, H, D)`` with int32
``cu_seqlens_q`` / ``cu_seqlens_k`` and ``max_seqlen_q`` / ``max_seqlen_k``. Segment ids
are expressible when each row's non-padding ids never decrease (one run per document, in
order; padding anywhere is dropped): the catalog's ``packed`` ids, poisoned or not;
``scattered`` ids are not applicable, other ids raise ``ValueError``. A document without
queries is left out (nothing reads its keys; the kernel's single-query GQA path assumes one
query per sequence). Causal, ``window`` (``window_size``, ``-1`` = unbounded) and ALiBi
(float32 ``alibi_slopes``, each row's slopes repeated for its documents) are aligned
bottom-right per sequence, the spec's ``lower_right`` per segment or per length; upper-left
alignment is applicable only where it coincides (equal query and key counts: the catalog's
self-attention packing with ``Lq == Lk``). ``scale`` -> ``softmax_scale``, ``softcap``,
GQA natively. ``out`` and ``softmax_lse`` (float32 ``(H, total_q)``, ``return_attn_probs``)
are scattered back; padding query rows, which the kernel never sees, get the spec's out 0
and lse ``-inf`` (ATT-LEN-2, ATT-SEG-1).

Not declared: float32/float64, ``dv_ne_dk``, ``mask``/``bias``, ``dropout``, ``sinks``,
``positions``, ``empty_keys``, segments with lengths, ``paged`` (``block_table`` needs pages
of a multiple of 256 tokens here too: ``flash_attn.kvcache`` declares it).

Deviations (from the kernel source, unmeasured; ``flash_attn``'s): a row that may attend none
of its sequence's keys gives out 0 but lse ``+inf`` (padding rows are the adapter's, as the
spec); with causal ALiBi lse is larger by ``slope * (i + Lk - Lq)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

import attnspec

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter
from .flash_attn import CAUSAL_ALIBI
from .flash_attn_kvcache import off_corner, window_size

__all__ = ["FlashAttnVarlenAdapter", "empty_row", "sequences"]

#: A packed sequence: its batch row, its query indices and its key indices in that row.
Packed = tuple[int, np.ndarray, np.ndarray]


def sequences(q_ids: np.ndarray, kv_ids: np.ndarray) -> list[Packed]:
    """The packed sequences of ``(n, Lq)`` / ``(n, Lk)`` segment ids (``-1`` = padding): per
    row, each document with a query, in order. ``ValueError`` where a row's non-padding ids
    decrease (a document in several runs, or out of order: no ``cu_seqlens`` says that)."""
    found: list[Packed] = []
    for b in range(q_ids.shape[0]):
        for side, ids in (("query", q_ids[b]), ("key", kv_ids[b])):
            if np.any(np.diff(ids[ids >= 0]) < 0):
                raise ValueError(f"flash_attn_varlen_func: the {side} segment ids of batch row "
                                 f"{b} are not one run per document in increasing order; "
                                 "cu_seqlens cannot express them")
        for s in np.unique(q_ids[b][q_ids[b] >= 0]):
            found.append((b, np.flatnonzero(q_ids[b] == s), np.flatnonzero(kv_ids[b] == s)))
    return found


def empty_row(shapes: Iterable[tuple[int, int]], causal: Any, window: Any) -> bool:
    """Whether a sequence of ``(queries, keys)`` has a row that may attend none of its keys
    with flash-attention's bottom-right causal mask and window."""
    left, right = window or (None, None)
    if causal:
        right = 0 if right is None else min(int(right), 0)
    for nq, nk in shapes:
        for i in range(nq):
            lo = 0 if left is None else max(0, i + nk - nq - int(left))
            hi = nk - 1 if right is None else min(nk - 1, i + nk - nq + int(right))
            if lo > hi:
                return True
    return False


def _host(x: Any) -> np.ndarray:
    """Integer ids or lengths on the host (a torch tensor or, for the deviation, NumPy)."""
    return np.asarray(x.cpu() if hasattr(x, "cpu") else x)


def _ids(args: Mapping[str, Any], segments: str, lengths: str, batch: tuple[int, ...],
         length: int) -> np.ndarray:
    """``(n, length)`` segment ids from the segment ids or the lengths (or all id 0)."""
    seg, lens = args.get(segments), args.get(lengths)
    if seg is not None and lens is not None:
        raise ValueError(f"flash_attn.varlen takes {segments} or {lengths}, not both")
    if seg is not None:
        ids = np.broadcast_to(_host(seg), (*batch, length))
    elif lens is not None:
        ids = np.where(np.arange(length) < np.broadcast_to(_host(lens), batch)[..., None], 0, -1)
    else:
        ids = np.zeros((*batch, length), dtype=np.int64)
    return np.asarray(ids).reshape(math.prod(batch), length)


@functools.cache
def _kernel_empties_a_row(case: Case) -> bool:
    """Whether a row the kernel computes (not padding) may attend none of its keys: built
    from the case's inputs (it depends on the drawn segment ids)."""
    if case.op != "attention":
        return False
    from ..cases import make_inputs

    inputs, p = make_inputs(case), case.params
    batch, lq, lk = tuple(p.get("batch") or ()), p["lq"], p["lk"]
    try:
        found = sequences(_ids(inputs, "q_segment_ids", "q_lengths", batch, lq),
                          _ids(inputs, "kv_segment_ids", "kv_lengths", batch, lk))
    except ValueError:
        return False
    return empty_row(((len(q), len(k)) for _, q, k in found), p.get("causal"),
                     p.get("window"))


class FlashAttnVarlenAdapter(NativeAdapter):
    name = "flash_attn.varlen"
    description = "flash_attn.flash_attn_varlen_func (FlashAttention-2 packed sequences, CUDA)"
    backends = ("torch-cuda",)
    distributions = ("flash-attn", "torch")
    requires = (("flash_attn", "flash_attn.varlen"),)
    ops = frozenset({"attention"})
    supported_dtypes = ("float16", "bfloat16")
    features = frozenset({
        "batch0", "batch2", "gqa", "lq_ne_lk", "scale", "softcap", "causal",
        "causal_lower_right", "window", "alibi", "segments", "kv_lengths", "q_lengths", "lse",
    })
    exclusive = (frozenset({"segments", "kv_lengths"}), frozenset({"segments", "q_lengths"}))
    deviations = (
        Deviation("a row that may attend none of its sequence's keys gives out 0 but lse +inf "
                  "(read from the kernel source; not measured by this project)",
                  frozenset({"empty_rows"}), when=_kernel_empties_a_row,
                  condition="a row the kernel computes (not padding) is empty"),
        CAUSAL_ALIBI,
    )

    def not_applicable(self, case: Case) -> str | None:
        reason = super().not_applicable(case)
        if reason is not None or case.op != "attention":
            return reason
        if case.params.get("segments") == "scattered":
            return ("cu_seqlens cannot express scattered segment ids (a document in several "
                    "runs)")
        return off_corner(case)

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        import torch

        # Untyped where installed (no py.typed), missing elsewhere (it needs CUDA).
        from flash_attn import (  # type: ignore[import-not-found, import-untyped, unused-ignore]
            flash_attn_varlen_func,
        )

        for name in ("mask", "bias", "dropout_mask", "sinks", "q_positions", "kv_positions",
                     "block_table", "score_mod", "mask_mod"):
            if args.get(name) is not None:
                raise ValueError(f"flash_attn_varlen_func has no {name}")
        q, k, v = args["query"], args["key"], args["value"]
        batch = tuple(q.shape[:-3])
        hq, lq, lk, dv = q.shape[-3], q.shape[-2], k.shape[-2], v.shape[-1]
        n = math.prod(batch)
        found = sequences(_ids(args, "q_segment_ids", "q_lengths", batch, lq),
                          _ids(args, "kv_segment_ids", "kv_lengths", batch, lk))
        aligned = args.get("causal") or args.get("window") is not None
        aligned = aligned or args.get("alibi_slopes") is not None
        if aligned and args.get("alignment") != "lower_right" and any(
                len(qi) != len(ki) for _, qi, ki in found):
            raise ValueError("flash_attn_varlen_func aligns causal masks, windows and ALiBi "
                             "bottom-right per sequence")

        def packed(x: Any, length: int, index: Any) -> Any:
            x = x.expand(*batch, *x.shape[-3:]).reshape(n, *x.shape[-3:])
            x = attnspec.bhld_to_blhd(x).reshape(n * length, x.shape[-3], x.shape[-1])
            return x[index].contiguous()

        device = q.device
        out = torch.zeros((n * lq, hq, dv), dtype=q.dtype, device=device)
        lse = torch.full((hq, n * lq), -math.inf, dtype=torch.float32, device=device)
        if found:
            q_index = torch.as_tensor(np.concatenate([b * lq + qi for b, qi, _ in found]),
                                      device=device)
            k_index = torch.as_tensor(np.concatenate([b * lk + ki for b, _, ki in found]),
                                      device=device)
            nq, nk = [len(qi) for _, qi, _ in found], [len(ki) for _, _, ki in found]
            slopes = args.get("alibi_slopes")
            if slopes is not None:  # (*batch, H) broadcastable -> float32 per sequence
                rows = torch.as_tensor([b for b, _, _ in found], device=device)
                slopes = slopes.expand(*batch, hq).reshape(n, hq)[rows].float().contiguous()
            got, got_lse, _ = flash_attn_varlen_func(
                packed(q, lq, q_index), packed(k, lk, k_index), packed(v, lk, k_index),
                torch.as_tensor(np.cumsum([0, *nq]), dtype=torch.int32, device=device),
                torch.as_tensor(np.cumsum([0, *nk]), dtype=torch.int32, device=device),
                max(nq), max(nk), softmax_scale=args.get("scale"),
                causal=bool(args.get("causal")), window_size=window_size(args.get("window")),
                softcap=float(args.get("softcap") or 0.0), alibi_slopes=slopes,
                return_attn_probs=True,
            )
            out[q_index] = got
            lse[:, q_index] = got_lse
        out = attnspec.blhd_to_bhld(out.reshape(n, lq, hq, dv)).reshape(*batch, hq, lq, dv)
        lse = lse.reshape(hq, n, lq).permute(1, 0, 2).reshape(*batch, hq, lq)
        return {"out": out, "lse": lse}
