"""``torch.flex_attention``: :func:`torch.nn.attention.flex_attention.flex_attention`, eager.

FlexAttention is how torch users write custom attention: a ``score_mod`` and a ``mask_mod``
(compiled into a block mask). The case's own mods (ATT-MOD-1, ``conformance/mods.py``) go
to it unchanged; every other option of the spec is expressed the way a FlexAttention user
writes it, as one ``score_mod`` and one ``mask_mod`` over captured tensors:

* batch dims flattened to FlexAttention's one ``B`` (broadcast first; none -> ``B = 1``), so
  the mods' ``b`` is the spec's flat batch index;
* ``softcap`` (``c * tanh(s / c)``), the case's ``score_mod``, ``bias``, ALiBi, in the spec's
  order (scale is applied by FlexAttention before the score_mod);
* ``mask``, ``causal`` (either alignment, per batch entry with lengths), ``window``,
  ``kv_lengths``, ``q_lengths``, positions, segment ids and the case's ``mask_mod``, ANDed in
  one ``mask_mod`` -> ``create_block_mask``;
* GQA -> ``enable_gqa=True``; ``lse`` -> ``return_lse=True``.

Not declared: ``sinks`` (no such input: adding it through ``lse`` and ``merge`` would grade
the adapter), ``weights``, ``dropout``, ``empty_keys``; ``backward`` on the CPU (torch 2.13:
"FlexAttention does not support backward on CPU"). Eager only: the compiled kernel needs a
C++ toolchain and tens of seconds per shape on a CPU, and is what a GPU run grades.

Deviations (measured with torch 2.13 on the CPU, graded as expected failures):

* ATT-LEAK-2, ATT-SEG-2: NaN/inf in the K/V of keys the block mask excludes (past
  ``kv_lengths``, padding tokens) reach every row through ``0 * inf`` in ``P @ V``;
* ATT-LEAK-1: a ``-inf`` bias added in a ``score_mod`` does not mask a NaN score
  (``NaN + -inf = NaN``): FlexAttention masks only through the block mask;
* ATT-ARG-1: query, key and value of different dtypes are not refused.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from attnspec.segments import segment_positions

from ..cases import Case
from ..deviations import Deviation
from ._native import NativeAdapter

__all__ = ["TorchFlexAttentionAdapter"]


class TorchFlexAttentionAdapter(NativeAdapter):
    name = "torch.flex_attention"
    description = "torch.nn.attention.flex_attention.flex_attention (eager)"
    backends = ("torch-cpu", "torch-cuda")
    distributions = ("torch",)
    requires = (("torch.nn.attention.flex_attention", "torch.nn.attention.flex_attention"),)
    ops = frozenset({"attention"})
    features = frozenset({
        "batch0", "batch2", "gqa", "dv_ne_dk", "lq_ne_lk", "scale", "softcap", "mask", "bias",
        "bias_neg_inf", "causal", "causal_lower_right", "window", "kv_lengths", "q_lengths",
        "alibi", "positions", "segments", "score_mod", "mask_mod", "lse",
    })
    deviations: tuple[Deviation, ...] = (
        Deviation("NaN/inf in the K/V of keys the block mask excludes (past kv_lengths, "
                  "padding tokens) reach every row through 0 * inf in P @ V",
                  frozenset({"poison_kv"})),
        Deviation("a -inf bias added in a score_mod does not mask a NaN score "
                  "(NaN + -inf = NaN): FlexAttention masks only through the block mask",
                  frozenset({"poison_scores", "bias"}),
                  when=lambda case: not case.params.get("mask"),
                  condition="masked by the bias alone"),
        Deviation("query, key and value of different dtypes are not refused",
                  frozenset({"arg_errors"}),
                  when=lambda case: case.params.get("error") == "mixed_dtypes",
                  condition="mixed dtypes"),
    )

    def __init__(self, backend_name: str | None = None) -> None:
        super().__init__(backend_name)
        if self.backend_name != "torch-cpu":  # "does not support backward on CPU"
            self.features = frozenset(self.features | {"backward"})

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        q, k, v = args["query"], args["key"], args["value"]
        *qb, hq, lq, _ = q.shape
        *kb, hkv, lk, _ = k.shape
        batch = tuple(np.broadcast_shapes(tuple(qb), tuple(kb), tuple(v.shape[:-3])))
        n = math.prod(batch)

        def flat(x: Any, heads: int) -> Any:
            return x.broadcast_to((*batch, heads, *x.shape[-2:])).reshape(n, heads,
                                                                           *x.shape[-2:])

        q, k, v = flat(q, hq), flat(k, hkv), flat(v, hkv)
        captured = _Captured(args, batch, n, hq, lq, lk, q.device)

        # Plain functions: FlexAttention reads a mod's arity from its signature.
        def score_mod(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
            return captured.score_mod(score, b, h, q_idx, kv_idx)

        def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
            return captured.mask_mod(b, h, q_idx, kv_idx)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()"
            block_mask = None
            if captured.masks:
                block_mask = create_block_mask(mask_mod, n, hq, lq, lk,
                                               device=str(q.device))
        lse_wanted = "lse" in self.features
        result = self._flex(flex_attention)(
            q, k, v, score_mod=score_mod if captured.scores else None,
            block_mask=block_mask, scale=args.get("scale"), enable_gqa=hq != hkv,
            return_lse=lse_wanted)
        out, lse = result if lse_wanted else (result, None)
        outputs = {"out": out.reshape(*batch, hq, lq, v.shape[-1])}
        if lse is not None:
            outputs["lse"] = lse.reshape(*batch, hq, lq)
        return outputs

    def _flex(self, flex_attention: Any) -> Any:
        """The kernel to call: FlexAttention eager (its reference path, a warning silenced)."""

        def eager(*a: Any, **kw: Any) -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "called without torch.compile()"
                return flex_attention(*a, **kw)

        return eager


class _Captured:
    """The case's options as the tensors one ``score_mod`` / ``mask_mod`` pair reads, flat
    over the batch: what a FlexAttention user writes for these inputs."""

    def __init__(self, args: dict[str, Any], batch: tuple[int, ...], n: int, hq: int, lq: int,
                 lk: int, device: Any) -> None:
        import torch

        def flat(x: Any, shape: tuple[int, ...]) -> Any:
            return None if x is None else torch.as_tensor(x, device=device).broadcast_to(
                (*batch, *shape)).reshape(n, *shape)

        self.args = args
        self.softcap = args.get("softcap")
        self.user_score, self.user_mask = args.get("score_mod"), args.get("mask_mod")
        self.bias = flat(args.get("bias"), (hq, lq, lk))
        self.mask = flat(args.get("mask"), (hq, lq, lk))
        self.slopes = flat(args.get("alibi_slopes"), (hq,))
        self.kv_len = flat(args.get("kv_lengths"), ())
        self.q_len = flat(args.get("q_lengths"), ())
        self.q_seg = flat(args.get("q_segment_ids"), (lq,))
        self.kv_seg = flat(args.get("kv_segment_ids"), (lk,))
        self.causal, self.window = bool(args.get("causal")), args.get("window")
        self.lower_right = args.get("alignment", "upper_left") == "lower_right"
        self.q_pos, self.kv_pos = self._positions(flat, lq, lk, device)
        self.lq, self.lk = lq, lk
        self.scores = any(x is not None for x in (self.softcap, self.user_score, self.bias,
                                                  self.slopes))
        self.masks = any(x is not None for x in (
            self.mask, self.kv_len, self.q_len, self.q_seg, self.user_mask, self.window)) or (
            self.causal)

    def _positions(self, flat: Any, lq: int, lk: int, device: Any) -> tuple[Any, Any]:
        """Each token's position ``(B, L)``: given, per segment (the count of earlier tokens
        with its id, lower-right shifted per segment), or the indices."""
        import torch

        q_pos, kv_pos = flat(self.args.get("q_positions"), (lq,)), flat(
            self.args.get("kv_positions"), (lk,))
        if q_pos is not None or kv_pos is not None:
            q_pos = torch.arange(lq, device=device).expand(1, lq) if q_pos is None else q_pos
            kv_pos = torch.arange(lk, device=device).expand(1, lk) if kv_pos is None else kv_pos
            return q_pos, kv_pos
        if self.q_seg is None:
            return None, None
        # Ranks within each segment: attnspec's one definition, on the torch tensors.
        alignment = "lower_right" if self.lower_right else "upper_left"
        return segment_positions(self.q_seg, self.kv_seg, alignment,
                                 array_namespace(self.q_seg), device)

    def _relative(self, b: Any, q_idx: Any, kv_idx: Any) -> Any:
        """``kv_pos - q_pos``: positions, or the indices with the alignment offset."""
        if self.q_pos is not None:
            return self.kv_pos[b % self.kv_pos.shape[0], kv_idx] - self.q_pos[
                b % self.q_pos.shape[0], q_idx]
        rel = kv_idx - q_idx
        if self.lower_right:
            kv = self.lk if self.kv_len is None else self.kv_len[b]
            q = self.lq if self.q_len is None else self.q_len[b]
            rel = rel - (kv - q)
        return rel

    def score_mod(self, score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        import torch

        if self.softcap is not None:
            score = self.softcap * torch.tanh(score / self.softcap)
        if self.user_score is not None:
            score = self.user_score(score, b, h, q_idx, kv_idx)
        if self.bias is not None:
            score = score + self.bias[b, h, q_idx, kv_idx]
        if self.slopes is not None:
            score = score - self.slopes[b, h] * torch.abs(self._relative(b, q_idx, kv_idx))
        return score

    def mask_mod(self, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        import torch

        keep = torch.ones((), dtype=torch.bool, device=q_idx.device)
        if self.mask is not None:
            keep = keep & self.mask[b, h, q_idx, kv_idx]
        if self.kv_len is not None:
            keep = keep & (kv_idx < self.kv_len[b])
        if self.q_len is not None:
            keep = keep & (q_idx < self.q_len[b])
        if self.q_seg is not None:
            q = self.q_seg[b, q_idx]
            keep = keep & (q == self.kv_seg[b, kv_idx]) & (q >= 0)
        if self.causal or self.window is not None:
            rel = self._relative(b, q_idx, kv_idx)
            left, right = self.window if self.window is not None else (None, None)
            if self.causal:
                right = 0 if right is None else min(right, 0)
            if right is not None:
                keep = keep & (rel <= right)
            if left is not None:
                keep = keep & (rel >= -left)
        if self.user_mask is not None:
            keep = keep & self.user_mask(b, h, q_idx, kv_idx)
        return keep
