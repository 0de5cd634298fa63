"""Consistency checks: an implementation against itself (ATT-CONS-1, ATT-CONS-2).

A consistency case makes the case's call and one or more *variant* calls that compute the
same rows another way - the batch entry alone, the keys split in two and merged, the queries
in two chunks of a prefill, the cache paged, each packed sequence alone - and compares the
rows, reporting the largest difference. Each call is also what the golden grades (the main
call against the float64 golden, as any case), so a difference here is one the tolerance
rule would let through: batch-composition dependence, split-KV or paging rounding. With a
declared ``batch_invariant`` capability (opt-in) the batch and packing comparisons are
bitwise; otherwise a difference within twice the case's tolerance passes (both calls may
sit at the tolerance, on opposite sides of the golden).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import attnspec

from .case_inputs import Inputs

__all__ = ["CONSISTENCY", "Check", "Pair"]

#: A compared pair: what it is, the output it is about, the main call's rows, the variant's.
Pair = tuple[str, str, np.ndarray, np.ndarray]
Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Check:
    """One consistency check: the features its variant calls need besides the case's, how
    to build them from the case's inputs, and which rows to compare."""

    features: frozenset[str]
    variants: Callable[[Inputs], list[Inputs]]
    pairs: Callable[[Inputs, Outputs, list[Outputs]], list[Pair]]
    rule: str
    bitwise_with: str = ""  # the opt-in feature that makes the comparison bitwise


def _with(inputs: Inputs, **args: Any) -> Inputs:
    """A variant call: the case's arguments with some replaced (no cotangent, no base)."""
    return Inputs({**dict(inputs.items()), **args})


# -- the batch entry alone (ATT-CONS-1) ---------------------------------------------------------

_PER_ENTRY = ("query", "key", "value", "kv_lengths", "q_lengths")


def _alone_variants(inputs: Inputs) -> list[Inputs]:
    return [_with(inputs, **{n: inputs[n][1:2] for n in _PER_ENTRY if n in inputs})]


def _alone_pairs(inputs: Inputs, main: Outputs, variants: list[Outputs]) -> list[Pair]:
    return [(f"batch entry 1 in a batch of {len(main['out'])} vs alone", name,
             main[name][1:2], variants[0][name])
            for name in ("out", "lse") if name in main and name in variants[0]]


# -- each packed sequence alone (ATT-CONS-1) --------------------------------------------------


def _sequences(inputs: Inputs) -> list[np.ndarray]:
    """Token indices of each sequence of batch entry 0 (segment ids as in the case)."""
    ids = np.broadcast_to(inputs["q_segment_ids"], inputs["query"].shape[:-3]
                          + inputs["query"].shape[-2:-1])[(0,) * (inputs["query"].ndim - 3)]
    return [np.flatnonzero(ids == s) for s in np.unique(ids[ids >= 0])]


def _packed_variants(inputs: Inputs) -> list[Inputs]:
    out = []
    rest = {n: v for n, v in inputs.items() if n not in (
        "query", "key", "value", "q_segment_ids", "kv_segment_ids")}
    for tokens in _sequences(inputs):
        first = (slice(0, 1),)
        q, k, v = (inputs[n][first][..., tokens, :] for n in ("query", "key", "value"))
        out.append(Inputs({"query": q, "key": k, "value": v, **rest}))
    return out


def _packed_pairs(inputs: Inputs, main: Outputs, variants: list[Outputs]) -> list[Pair]:
    pairs = []
    for s, (tokens, alone) in enumerate(zip(_sequences(inputs), variants, strict=True)):
        pairs.append((f"sequence {s} packed vs alone", "out", main["out"][0:1][..., tokens, :],
                      alone["out"]))
    return pairs


# -- keys split in two, merged (ATT-CONS-2) -----------------------------------------------------


def _split(inputs: Inputs) -> int:
    return int(inputs["key"].shape[-2]) // 2


def _split_variants(inputs: Inputs) -> list[Inputs]:
    s = _split(inputs)
    return [_with(inputs, key=inputs["key"][..., part, :], value=inputs["value"][..., part, :])
            for part in (slice(0, s), slice(s, None))]


def _split_pairs(inputs: Inputs, main: Outputs, variants: list[Outputs]) -> list[Pair]:
    partials = [(v["out"].astype(np.float64), v["lse"].astype(np.float64)) for v in variants]
    out, lse = attnspec.merge(partials)
    return [("keys split in two, merged (float64) vs whole", "out", main["out"], out),
            ("keys split in two, merged (float64) vs whole", "lse", main["lse"], lse)]


# -- prefill in two chunks (ATT-CONS-2) ----------------------------------------------------------


def _chunk(inputs: Inputs) -> tuple[int, int]:
    lq, lk = int(inputs["query"].shape[-2]), int(inputs["key"].shape[-2])
    return lq // 2, lk - (lq - lq // 2)


def _prefill_variants(inputs: Inputs) -> list[Inputs]:
    rows, keys = _chunk(inputs)
    return [_with(inputs, query=inputs["query"][..., :rows, :], key=inputs["key"][..., :keys, :],
                  value=inputs["value"][..., :keys, :]),
            _with(inputs, query=inputs["query"][..., rows:, :])]


def _prefill_pairs(inputs: Inputs, main: Outputs, variants: list[Outputs]) -> list[Pair]:
    whole = np.concatenate([v["out"] for v in variants], axis=-2)
    return [("prefill in two chunks vs whole", "out", main["out"], whole)]


# -- paged vs contiguous (ATT-CONS-2) ------------------------------------------------------------


def _paged_variants(inputs: Inputs) -> list[Inputs]:
    from .input_kinds import TRANSFORMS

    paged = _with(inputs)
    paged.base = _with(inputs)
    TRANSFORMS["paged"].build(paged, None, np.random.default_rng(0))
    if paged.base is not None and not np.array_equal(paged.base["key"], inputs["key"],
                                                     equal_nan=True):
        raise AssertionError("the paged variant changed the dense keys (a shared prefix needs "
                             "equal tokens): use one batch entry or distinct prefixes")
    return [paged]


def _paged_pairs(inputs: Inputs, main: Outputs, variants: list[Outputs]) -> list[Pair]:
    return [("paged vs contiguous", "out", main["out"], variants[0]["out"])]


CONSISTENCY: dict[str, Check] = {
    "batch_alone": Check(frozenset(), _alone_variants, _alone_pairs, "ATT-CONS-1",
                         bitwise_with="batch_invariant"),
    "packed_alone": Check(frozenset({"segments"}), _packed_variants, _packed_pairs,
                          "ATT-CONS-1", bitwise_with="batch_invariant"),
    "split_kv": Check(frozenset({"lse"}), _split_variants, _split_pairs, "ATT-CONS-2"),
    "chunked_prefill": Check(frozenset({"causal_lower_right"}), _prefill_variants,
                             _prefill_pairs, "ATT-CONS-2"),
    "paged": Check(frozenset({"paged"}), _paged_variants, _paged_pairs, "ATT-CONS-2"),
}
