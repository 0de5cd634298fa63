"""The fingerprint probes of the input forms kernels take today (issue 13): where packed
sequences and ALiBi are implemented differently across kernels.

* ``segment_positions``: with fewer queries than keys per document (several sequences
  decoded at once), the causal diagonal sits at each document's own end (the spec,
  ATT-SEG-1), or at the end of the whole packed row (``global``: causal in the packed
  indices, right only for self-attention packing);
* ``segment_padding_leak``: NaN/inf in padding tokens' K/V reaches real rows (``nan``:
  FlexAttention's block mask, a kernel that masks padding without zeroing it) or not
  (ATT-SEG-2);
* ``alibi_alignment``: with Lq < Lk, ALiBi's distance ``|q_pos - kv_pos|`` from lower-right
  positions (FlashAttention-2's ``|i + Lk - Lq - j|``), from the indices (``upper_left``),
  or signed (``signed``: ``slope * (kv_pos - q_pos)``, the causal-only form users write in a
  ``score_mod``, which differs once a query sees later keys).

Like ``causal_alignment``, the alignment-dependent probes ask for ``lower_right`` where the
adapter can express it and ``upper_left`` otherwise; the answer is right when it names the
alignment asked (``per_segment`` for the segment probe).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import attnspec

from .alternatives import options, sdpa
from .cases import Case, Inputs
from .probe import Probe

__all__ = ["FORM_PROBES"]


def _params(lq: int, lk: int, **options: Any) -> dict[str, Any]:
    # No GQA and one batch dim: as few features as the question allows.
    return {"batch": [2], "hq": 2, "hkv": 2, "lq": lq, "lk": lk, "dk": 16, "dv": 16,
            **options}


def _lower_right(inputs: Inputs) -> bool:
    return bool(inputs.get("alignment") == "lower_right")


def _segment_positions(case: Case, inputs: Inputs) -> dict[str, np.ndarray]:
    lq, lk = inputs["query"].shape[-2], inputs["key"].shape[-2]
    offset = lk - lq if _lower_right(inputs) else 0
    # Positions given beside segment ids replace the per-segment ranks (ATT-POS-1).
    # Candidates in this order: where two coincide (upper-left asked) the first is named.
    candidates = {"per_segment": sdpa(inputs),
                  "upper_left": sdpa(inputs, alignment=None),
                  "global": sdpa(inputs, q_positions=np.arange(lq) + offset,
                                 kv_positions=np.arange(lk), alignment=None)}
    return {name: _attending_rows(inputs, out) for name, out in candidates.items()}


def _attending_rows(inputs: Inputs, out: np.ndarray) -> np.ndarray:
    """The output rows of queries that attend some key: padding and empty rows follow the
    fully-masked-row convention, its own probe, not these questions."""
    o = options(inputs)
    keep = attnspec.attention_mask(
        inputs["query"].shape[-2], inputs["key"].shape[-2], causal=bool(o.get("causal")),
        alignment=o.get("alignment", "upper_left"), q_segment_ids=o.get("q_segment_ids"),
        kv_segment_ids=o.get("kv_segment_ids"), xp=np)
    rows = np.broadcast_to(np.asarray(keep).any(axis=-1), out.shape[:-1])
    region: np.ndarray = out[rows]
    return region


def _golden_rows(case: Case, inputs: Inputs) -> dict[str, np.ndarray]:
    return {"none": _attending_rows(inputs, sdpa(inputs))}


def _alibi_alignment(case: Case, inputs: Inputs) -> dict[str, np.ndarray]:
    lq, lk = inputs["query"].shape[-2], inputs["key"].shape[-2]
    offset = lk - lq if _lower_right(inputs) else 0
    slopes = np.asarray(inputs["alibi_slopes"], dtype=np.float64)[..., None, None]
    signed = slopes * (np.arange(lk) - (np.arange(lq)[:, None] + offset))
    return {"lower_right": sdpa(inputs, alignment="lower_right"),
            "upper_left": sdpa(inputs, alignment=None),
            "signed": sdpa(inputs, alibi_slopes=None, alignment=None, bias=signed),
            "none": sdpa(inputs, alibi_slopes=None, alignment=None)}


FORM_PROBES = [
    Probe(
        "segment_positions",
        "in a packed batch with fewer queries than keys per document, where does each "
        "document's causal diagonal sit (lower_right asked where the adapter can express it)?",
        "ATT-SEG-1", spec="per_segment", answers=("per_segment", "upper_left", "global"),
        variants=(
            ("lower-right", _params(6, 9, causal=True, alignment="lower_right",
                                    segments="packed")),
            ("upper-left", _params(6, 9, causal=True, segments="packed")),
        ),
        candidates=_segment_positions, region=_attending_rows,
    ),
    Probe(
        "segment_padding_leak",
        "does NaN/inf in the K/V of packed padding tokens reach the output?", "ATT-SEG-2",
        spec="none", answers=("none", "nan"),
        variants=(("packed", _params(9, 9, segments="packed", poison="segments")),),
        candidates=_golden_rows, region=_attending_rows, nonfinite="nan",
    ),
    Probe(
        "alibi_alignment",
        "with Lq < Lk and no causal mask, which distance does ALiBi use (lower_right asked "
        "where the adapter can express it)?", "ATT-ALIBI-1",
        spec="lower_right", answers=("lower_right", "upper_left", "signed", "none"),
        variants=(
            ("lower-right", _params(4, 7, alibi="geometric", alignment="lower_right")),
            ("upper-left", _params(4, 7, alibi="geometric")),
        ),
        candidates=_alibi_alignment,
    ),
]
