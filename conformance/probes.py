"""The fingerprint's probes: their inputs, their candidate answers, and their order.

Each probe's candidates are :mod:`.alternatives` applied to its inputs; the table of probes
and answers is in :mod:`.fingerprint`'s docstring; the input forms' probes are in
:mod:`.probes_forms`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import attnspec

from .alternatives import attend, keep, low_precision_reference, raw_scores, sdpa, with_bias
from .cases import Case, Inputs
from .precision import EPS, round_to
from .probe import HALF, OTHER, Probe
from .probes_forms import FORM_PROBES

__all__ = ["PROBES", "SPEC_ANSWERS"]


def _params(lq: int = 8, lk: int = 8, hq: int = 2, hkv: int = 2, dk: int = 16,
            **options: Any) -> dict[str, Any]:
    # One batch dimension, Lq == Lk and Hq == Hkv unless the probe is about them: the probes
    # should need as few features as possible.
    return {"batch": [2], "hq": hq, "hkv": hkv, "lq": lq, "lk": lk, "dk": dk, "dv": dk,
            **options}


# -- probe inputs ---------------------------------------------------------------------------

def _half_mask(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """About half the keys of every row masked, and at least one kept and one masked: either
    polarity then leaves every row something to attend."""
    mask = rng.random(shape) < 0.5
    lk = shape[-1]
    first = rng.integers(0, lk, size=shape[:-1])
    second = (first + 1 + rng.integers(0, lk - 1, size=shape[:-1])) % lk
    np.put_along_axis(mask, first[..., None], True, axis=-1)
    np.put_along_axis(mask, second[..., None], False, axis=-1)
    return mask


def _prepare_half_mask(inputs: Inputs, rng: np.random.Generator) -> None:
    if "mask" in inputs:
        inputs["mask"] = _half_mask(inputs["mask"].shape, rng)


def _prepare_empty_row(inputs: Inputs, rng: np.random.Generator) -> None:
    """Query row 0 attends nothing; every other row attends something."""
    if "mask" in inputs:
        mask = _half_mask(inputs["mask"].shape, rng)
        mask[..., 0, :] = False
        inputs["mask"] = mask


# -- candidates -----------------------------------------------------------------------------

def _mask_polarity(case: Case, inputs: Inputs) -> dict[str, np.ndarray]:
    return {"keep": sdpa(inputs), "drop": sdpa(inputs, mask=~inputs["mask"])}


def _causal_alignment(case: Case, inputs: Inputs) -> dict[str, np.ndarray]:
    return {
        "upper_left": sdpa(inputs, alignment="upper_left"),
        "lower_right": sdpa(inputs, alignment="lower_right"),
        "none": sdpa(inputs, causal=None, alignment=None),
    }


def _empty_rows(inputs: Inputs) -> np.ndarray:
    return np.logical_not(keep(inputs).any(axis=-1))  # (*batch, H, Lq)


def _empty_region(inputs: Inputs, out: np.ndarray) -> np.ndarray:
    region: np.ndarray = out[_empty_rows(inputs)]
    return region


def _fully_masked_row(case: Case, inputs: Inputs) -> dict[str, np.ndarray]:
    rows = _empty_rows(inputs)
    v = np.repeat(inputs["value"], inputs["query"].shape[-3] // inputs["value"].shape[-3], -3)
    mean_v = np.broadcast_to(v.mean(axis=-2, keepdims=True), (*rows.shape, v.shape[-1]))
    # Masking by adding a large negative number instead of excluding: the row's softmax is
    # then over its raw scores, as if nothing were masked.
    unmasked = attend(raw_scores(inputs), inputs)
    return {"zeros": np.zeros((int(rows.sum()), v.shape[-1])), "mean_v": mean_v[rows],
            "unmasked": unmasked[rows]}


def _accumulation(case: Case, inputs: Inputs, out: np.ndarray) -> str:
    if not np.isfinite(out).all():
        return OTHER
    golden = sdpa(inputs)
    # float32 accumulation rounded once: attnspec on the half inputs (it computes in float32).
    single = round_to(np.asarray(attnspec.scaled_dot_product_attention(
        *(inputs[n].astype(np.float32) for n in ("query", "key", "value")))), case.dtype)
    low = low_precision_reference(inputs, case.dtype)
    err, err32, err_low = (float(np.max(np.abs(x - golden))) for x in (out, single, low))
    # The geometric mean splits the two references' errors (an order of magnitude apart on
    # this case) fairly; an error well beyond the low-precision one is something else.
    if err <= math.sqrt(max(err32, EPS["float32"]) * err_low):
        return "float32"
    if err <= 4.0 * err_low:
        return "low"
    return OTHER


def _golden_only(case: Case, inputs: Inputs) -> dict[str, np.ndarray]:
    return {"none": sdpa(inputs)}


def _softcap_order(case: Case, inputs: Inputs) -> dict[str, np.ndarray]:
    c = inputs["softcap"]
    attended = keep(inputs)
    s = raw_scores(inputs)
    candidates = {
        "before_bias_and_mask": sdpa(inputs),
        "after_mask": attend(
            c * np.tanh(np.where(attended, with_bias(s, inputs), -math.inf) / c), inputs),
        "none": sdpa(inputs, softcap=None),
    }
    if "bias" in inputs:
        after_bias = c * np.tanh(with_bias(s, inputs) / c)
        candidates["after_bias"] = attend(np.where(attended, after_bias, -math.inf), inputs)
    return candidates


def _gqa_mapping(case: Case, inputs: Inputs) -> dict[str, np.ndarray]:
    hq, hkv = inputs["query"].shape[-3], inputs["key"].shape[-3]
    interleaved = np.arange(hq) % hkv
    return {
        "contiguous": sdpa(inputs),
        "interleaved": sdpa(inputs, key=np.take(inputs["key"], interleaved, axis=-3),
                            value=np.take(inputs["value"], interleaved, axis=-3)),
    }


# -- the probes -----------------------------------------------------------------------------

_SOFTCAP: dict[str, Any] = {"softcap": 2.0, "magnitude": 4.0}

_PROBE_LIST = [
    Probe(
        "mask_polarity", "does True in a bool mask mean attend or masked?", "ATT-MASK-1",
        spec="keep", answers=("keep", "drop"),
        variants=(("mask", _params(mask="dense")),),
        prepare=_prepare_half_mask, candidates=_mask_polarity,
    ),
    Probe(
        "causal_alignment",
        "with Lq < Lk, where does the causal diagonal sit (lower_right asked where the adapter "
        "can express it, else upper_left)?",
        "ATT-CAUSAL-2", spec="lower_right", answers=("upper_left", "lower_right", "none"),
        variants=(
            ("lower-right", _params(lq=4, lk=7, causal=True, alignment="lower_right")),
            ("upper-left", _params(lq=4, lk=7, causal=True)),
        ),
        candidates=_causal_alignment,
    ),
    Probe(
        "fully_masked_row", "what does a row with nothing to attend give?", "ATT-EMPTY-1",
        spec="zeros", answers=("zeros", "nan", "mean_v", "unmasked"),
        variants=(
            ("mask", _params(mask="empty_rows")),
            ("causal-lower-right", _params(lq=9, lk=6, causal=True, alignment="lower_right")),
        ),
        prepare=_prepare_empty_row, candidates=_fully_masked_row, region=_empty_region,
        nonfinite="nan",
    ),
    Probe(
        "low_precision_accumulation",
        "do half-precision inputs accumulate in float32 (or in the input dtype)?",
        "ATT-DTYPE-2", spec="float32", answers=("float32", "low"),
        variants=(("long-row", _params(batch=[1], lq=4, lk=1025, dk=64)),),
        dtypes=HALF, classify=_accumulation,
    ),
    Probe(
        "masked_value_leak", "does NaN in key rows masked for every query reach the output?",
        "ATT-LEAK-1", spec="none", answers=("none", "nan"),
        variants=(("mask", _params(mask="key_columns", poison="scores")),),
        candidates=_golden_only, nonfinite="nan",
    ),
    Probe(
        "kv_padding_leak", "does NaN/inf in K/V rows past kv_lengths reach the output?",
        "ATT-LEAK-2", spec="none", answers=("none", "nan"),
        variants=(("kv-lengths", _params(kv_lengths=[5, 2], poison="kv")),),
        candidates=_golden_only, nonfinite="nan",
    ),
    Probe(
        "softcap_order", "is softcap applied before bias and masking?", "ATT-SOFTCAP-1",
        spec="before_bias_and_mask",
        answers=("before_bias_and_mask", "after_bias", "after_mask", "none"),
        variants=(
            ("bias-mask", _params(bias="random", mask="dense", **_SOFTCAP)),
            ("mask", _params(mask="dense", **_SOFTCAP)),
            ("causal", _params(causal=True, **_SOFTCAP)),
            ("causal-lower-right", _params(causal=True, alignment="lower_right", **_SOFTCAP)),
        ),
        prepare=_prepare_half_mask, candidates=_softcap_order,
    ),
    Probe(
        "gqa_mapping", "which KV head does query head h read?", "ATT-GQA-1",
        spec="contiguous", answers=("contiguous", "interleaved"),
        variants=(("gqa", _params(hq=4, hkv=2)),),
        candidates=_gqa_mapping,
    ),
]

#: Every probe by name, in report order (the input forms' last).
PROBES: dict[str, Probe] = {probe.name: probe for probe in _PROBE_LIST + FORM_PROBES}

#: The answer docs/spec.md gives to each probe.
SPEC_ANSWERS: dict[str, str] = {name: probe.spec for name, probe in PROBES.items()}
