"""The fingerprint: which convention an implementation follows where frameworks disagree.

A conformance run says whether an implementation follows docs/spec.md; where it does not
(or where a behaviour is outside its declared features), the fingerprint says what it does
instead: which mask polarity, which causal alignment, what a fully masked row gives, whether
half precision accumulates in float32, whether NaN leaks from masked keys or KV padding, where
softcap sits and how grouped-query heads map. Each probe runs one small case (not graded) and
names the output after the closest of several candidate outputs, each computed in float64 by
attnspec under one alternative semantics.

==========================  ===========================================  =====================
probe                       answers                                      spec
==========================  ===========================================  =====================
mask_polarity               keep, drop                                   keep
causal_alignment            upper_left, lower_right, none                lower_right (asked)
fully_masked_row            zeros, nan, mean_v, unmasked                 zeros
low_precision_accumulation  float32, low                                 float32
masked_value_leak           none, nan                                    none
kv_padding_leak             none, nan                                    none
softcap_order               before_bias_and_mask, after_bias,            before_bias_and_mask
                            after_mask, none
gqa_mapping                 contiguous, interleaved                      contiguous
==========================  ===========================================  =====================

Besides its answers, every probe can give ``"other"`` (no candidate matched), ``"n/a"`` (the
adapter cannot express the probe's inputs, behaviour features aside: those are what is
observed) or ``"error: <ExceptionClass>"`` (the call raised). ``causal_alignment`` asks for
lower-right alignment where the adapter declares it and upper-left otherwise, so its answer
is right when it names the alignment asked. ``mean_v`` is the mean of every V row (JAX);
``unmasked`` a softmax over the row's raw scores, as if nothing were masked.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

import attnspec

from .adapters.base import Adapter, AdapterOutput
from .cases import Case, make_inputs
from .catalog import required_features
from .features import BEHAVIOURS
from .precision import EPS, round_to

__all__ = ["NOT_APPLICABLE", "OTHER", "PROBES", "SPEC_ANSWERS", "Probe", "fingerprint"]

NOT_APPLICABLE = "n/a"
OTHER = "other"

#: ``call(case, inputs)`` runs a case on the implementation (``Adapter.run`` or the runner's
#: wrapper around it) and may raise.
Call = Callable[[Case, dict[str, Any]], AdapterOutput]

#: dtypes a probe runs in, best first: float32 is the one nearly every implementation has.
_FULL = ("float32", "float64", "float16", "bfloat16")
_HALF = ("float16", "bfloat16")

#: A candidate matches when it is within this many machine epsilons of the output (relative
#: to max|V|, which bounds every candidate's output): loose enough for an implementation's
#: own rounding on these short rows, far tighter than the gap between candidates.
_CLOSE_EPS = 8.0


def _params(lq: int = 8, lk: int = 8, hq: int = 2, hkv: int = 2, dk: int = 16,
            **options: Any) -> dict[str, Any]:
    # One batch dimension, Lq == Lk and Hq == Hkv unless the probe is about them: the probes
    # should need as few features as possible.
    return {"batch": [2], "hq": hq, "hkv": hkv, "lq": lq, "lk": lk, "dk": dk, "dv": dk,
            **options}


# -- candidate computations ---------------------------------------------------------------

def _options(inputs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inputs.items()
            if k not in ("query", "key", "value") and not k.startswith("__")}


def _sdpa(inputs: Mapping[str, Any], **overrides: Any) -> np.ndarray:
    """attnspec's float64 ``out`` for ``inputs`` with some arguments replaced (None drops)."""
    merged = {**inputs, **overrides}
    options = {k: v for k, v in _options(merged).items() if v is not None}
    with np.errstate(all="ignore"):
        return np.asarray(attnspec.scaled_dot_product_attention(
            merged["query"], merged["key"], merged["value"], **options))


def _keep(inputs: Mapping[str, Any]) -> np.ndarray:
    """The spec's attended positions (True = attend), broadcast to the scores' shape."""
    q, k = inputs["query"], inputs["key"]
    opts = _options(inputs)
    keep = attnspec.attention_mask(
        q.shape[-2], k.shape[-2], mask=opts.get("mask"), causal=bool(opts.get("causal")),
        window=opts.get("window"), alignment=opts.get("alignment", "upper_left"),
        kv_lengths=opts.get("kv_lengths"), q_lengths=opts.get("q_lengths"), xp=np,
    )
    scores = (*q.shape[:-1], k.shape[-2])
    return np.broadcast_to(True if keep is None else keep, scores)


def _raw_scores(inputs: Mapping[str, Any]) -> np.ndarray:
    """``q @ k^T * scale`` in float64, grouped-query heads read contiguously."""
    q, k = inputs["query"], inputs["key"]
    k = np.repeat(k, q.shape[-3] // k.shape[-3], axis=-3)
    scale = inputs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    return np.matmul(q, np.swapaxes(k, -1, -2)) * scale


def _attend(scores: np.ndarray, inputs: Mapping[str, Any]) -> np.ndarray:
    """Softmax of already masked scores times V (attnspec's softmax: empty rows give 0)."""
    q, v = inputs["query"], inputs["value"]
    v = np.repeat(v, q.shape[-3] // v.shape[-3], axis=-3)
    return np.matmul(np.asarray(attnspec.softmax(scores, axis=-1)), v)


def _with_bias(s: np.ndarray, inputs: Mapping[str, Any]) -> np.ndarray:
    bias = inputs.get("bias")
    return s if bias is None else np.where(bias == -math.inf, -math.inf, s + bias)


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


def _prepare_half_mask(inputs: dict[str, Any], rng: np.random.Generator) -> None:
    if "mask" in inputs:
        inputs["mask"] = _half_mask(inputs["mask"].shape, rng)


def _prepare_empty_row(inputs: dict[str, Any], rng: np.random.Generator) -> None:
    """Query row 0 attends nothing; every other row attends something."""
    if "mask" in inputs:
        mask = _half_mask(inputs["mask"].shape, rng)
        mask[..., 0, :] = False
        inputs["mask"] = mask


# -- classification -------------------------------------------------------------------------

def _scale(inputs: Mapping[str, Any]) -> float:
    v = np.asarray(inputs["value"])
    finite = v[np.isfinite(v)]
    return float(np.max(np.abs(finite))) if finite.size else 1.0


def _nearest(got: np.ndarray, candidates: Mapping[str, np.ndarray], tol: float) -> str | None:
    """The candidate closest to ``got`` within ``tol`` (NaN only where it has NaN)."""
    best: tuple[float, str] | None = None
    for label, want in candidates.items():
        want = np.broadcast_to(want, got.shape)
        if not np.array_equal(np.isnan(got), np.isnan(want)):
            continue
        finite = np.isfinite(want)
        if (~np.isfinite(got) & finite).any() or (np.isinf(want) & (got != want)).any():
            continue
        err = float(np.max(np.abs(got[finite] - want[finite]))) if finite.any() else 0.0
        if err <= tol and (best is None or err < best[0]):
            best = (err, label)
    return None if best is None else best[1]


@dataclass(frozen=True, eq=False)
class Probe:
    """One question the fingerprint asks.

    Attributes
    ----------
    name : str
        Key in the fingerprint.
    question : str
        One line for reports.
    rule : str
        The spec rule the question is about.
    spec : str
        The answer docs/spec.md gives.
    answers : tuple of str
        Every answer the probe can give besides ``"other"``, ``"n/a"`` and ``"error: ..."``.
    variants : tuple of (str, dict)
        Case parameters, tried in order: the first the adapter can express is run.
    dtypes : tuple of str
        dtypes the probe may run in, best first.
    prepare : callable, optional
        ``prepare(inputs, rng)`` edits ``make_inputs``'s output in place.
    candidates : callable
        ``candidates(case, inputs) -> {answer: expected float64 out}`` on :attr:`region`.
    region : callable, optional
        ``region(inputs, out) -> array``: the part of ``out`` the question is about.
    nonfinite : str, optional
        The answer for an output holding NaN/inf that matches no candidate.
    classify : callable, optional
        ``classify(case, inputs, out) -> answer`` replacing the nearest-candidate rule.
    """

    name: str
    question: str
    rule: str
    spec: str
    answers: tuple[str, ...]
    variants: tuple[tuple[str, dict[str, Any]], ...]
    candidates: Callable[[Case, dict[str, Any]], dict[str, np.ndarray]] | None = None
    dtypes: tuple[str, ...] = _FULL
    prepare: Callable[[dict[str, Any], np.random.Generator], None] | None = None
    region: Callable[[dict[str, Any], np.ndarray], np.ndarray] | None = None
    nonfinite: str | None = None
    classify: Callable[[Case, dict[str, Any], np.ndarray], str] | None = None

    def case(self, adapter: Adapter | None) -> Case | None:
        """The probe's case for ``adapter`` (``None`` when it can express no variant)."""
        available = adapter.dtypes() if adapter is not None else _FULL
        dtype = next((d for d in self.dtypes if d in available), None)
        if dtype is None:
            return None
        for label, params in self.variants:
            case = Case(
                id=f"probe/{self.name}/{label}/{dtype}", op="attention", rules=(self.rule,),
                dtype=dtype, params=params,
                features=required_features("attention", params, dtype),
            )
            # Behaviour features are what the probe observes, declared or not.
            declared = replace(case, features=case.features - BEHAVIOURS)
            if adapter is None or adapter.not_applicable(declared) is None:
                return case
        return None

    def inputs(self, case: Case) -> dict[str, Any]:
        inputs = make_inputs(case)
        if self.prepare is not None:
            self.prepare(inputs, np.random.default_rng(case.seed ^ 0x5EED))
        return inputs

    def observe(self, call: Call, adapter: Adapter | None = None) -> str:
        """Run the probe through ``call`` and classify the output."""
        case = self.case(adapter)
        if case is None:
            return NOT_APPLICABLE
        inputs = self.inputs(case)
        try:
            # The probes feed NaN, inf and empty rows on purpose: warnings about them (or a
            # filter that turns them into errors) are not the implementation's answer.
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                result = call(case, inputs)
        except Exception as exc:  # the implementation's failure is the observation
            return f"error: {type(exc).__name__}"
        try:
            out = np.asarray(result.outputs["out"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            return OTHER  # no out, or not an array of numbers
        with np.errstate(all="ignore"):
            if out.shape != (*inputs["query"].shape[:-1], inputs["value"].shape[-1]):
                return OTHER
            if self.classify is not None:
                return self.classify(case, inputs, out)
            return self._nearest(case, inputs, out)

    def _nearest(self, case: Case, inputs: dict[str, Any], out: np.ndarray) -> str:
        if self.candidates is None:
            raise TypeError(f"probe {self.name!r}: give candidates or classify")
        candidates = self.candidates(case, inputs)
        got = out if self.region is None else self.region(inputs, out)
        tol = _CLOSE_EPS * EPS[case.dtype] * _scale(inputs)
        answer = _nearest(got, candidates, tol)
        if answer is not None:
            return answer
        if self.nonfinite is not None and not np.isfinite(got).all():
            return self.nonfinite
        return OTHER


# -- the probes -----------------------------------------------------------------------------

def _mask_polarity(case: Case, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return {"keep": _sdpa(inputs), "drop": _sdpa(inputs, mask=~inputs["mask"])}


def _causal_alignment(case: Case, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        "upper_left": _sdpa(inputs, alignment="upper_left"),
        "lower_right": _sdpa(inputs, alignment="lower_right"),
        "none": _sdpa(inputs, causal=None, alignment=None),
    }


def _empty_rows(inputs: dict[str, Any]) -> np.ndarray:
    return ~_keep(inputs).any(axis=-1)  # (*batch, H, Lq)


def _empty_region(inputs: dict[str, Any], out: np.ndarray) -> np.ndarray:
    return out[_empty_rows(inputs)]


def _fully_masked_row(case: Case, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    rows = _empty_rows(inputs)
    v = np.repeat(inputs["value"], inputs["query"].shape[-3] // inputs["value"].shape[-3], -3)
    mean_v = np.broadcast_to(v.mean(axis=-2, keepdims=True), (*rows.shape, v.shape[-1]))
    # Masking by adding a large negative number instead of excluding: the row's softmax is
    # then over its raw scores, as if nothing were masked.
    unmasked = _attend(_raw_scores(inputs), inputs)
    return {"zeros": np.zeros((int(rows.sum()), v.shape[-1])), "mean_v": mean_v[rows],
            "unmasked": unmasked[rows]}


def _low_precision_reference(inputs: dict[str, Any], dtype: str) -> np.ndarray:
    """Attention with every product rounded to ``dtype`` and every sum accumulated one term
    at a time in ``dtype`` (the worst plausible low-precision accumulation)."""

    def r(x: Any) -> np.ndarray:
        return round_to(x, dtype)

    def seq_sum(terms: np.ndarray, axis: int) -> np.ndarray:
        terms = np.moveaxis(terms, axis, 0)
        total = np.zeros(terms.shape[1:])
        for term in terms:
            total = r(total + term)
        return total

    q, k, v = inputs["query"], inputs["key"], inputs["value"]
    scale = inputs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    s = r(seq_sum(r(q[..., :, None, :] * k[..., None, :, :]), axis=-1) * scale)
    e = r(np.exp(s - s.max(axis=-1, keepdims=True)))
    total = seq_sum(e, axis=-1)[..., None]
    numerator = seq_sum(r(e[..., :, :, None] * v[..., None, :, :]), axis=-2)
    return r(numerator / total)


def _accumulation(case: Case, inputs: dict[str, Any], out: np.ndarray) -> str:
    if not np.isfinite(out).all():
        return OTHER
    golden = _sdpa(inputs)
    # float32 accumulation rounded once: attnspec on the half inputs (it computes in float32).
    single = round_to(np.asarray(attnspec.scaled_dot_product_attention(
        *(inputs[n].astype(np.float32) for n in ("query", "key", "value")))), case.dtype)
    low = _low_precision_reference(inputs, case.dtype)
    err, err32, err_low = (float(np.max(np.abs(x - golden))) for x in (out, single, low))
    # The geometric mean splits the two references' errors (an order of magnitude apart on
    # this case) fairly; an error well beyond the low-precision one is something else.
    if err <= math.sqrt(max(err32, EPS["float32"]) * err_low):
        return "float32"
    if err <= 4.0 * err_low:
        return "low"
    return OTHER


def _golden_only(case: Case, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return {"none": _sdpa(inputs)}


def _softcap_order(case: Case, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    c = inputs["softcap"]
    keep = _keep(inputs)
    s = _raw_scores(inputs)
    candidates = {
        "before_bias_and_mask": _sdpa(inputs),
        "after_mask": _attend(c * np.tanh(np.where(keep, _with_bias(s, inputs), -math.inf) / c),
                              inputs),
        "none": _sdpa(inputs, softcap=None),
    }
    if "bias" in inputs:
        after_bias = c * np.tanh(_with_bias(s, inputs) / c)
        candidates["after_bias"] = _attend(np.where(keep, after_bias, -math.inf), inputs)
    return candidates


def _gqa_mapping(case: Case, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    hq, hkv = inputs["query"].shape[-3], inputs["key"].shape[-3]
    interleaved = np.arange(hq) % hkv
    return {
        "contiguous": _sdpa(inputs),
        "interleaved": _sdpa(inputs, key=np.take(inputs["key"], interleaved, axis=-3),
                             value=np.take(inputs["value"], interleaved, axis=-3)),
    }


_SOFTCAP = {"softcap": 2.0, "magnitude": 4.0}

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
        dtypes=_HALF, classify=_accumulation,
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

#: Every probe by name, in report order.
PROBES: dict[str, Probe] = {probe.name: probe for probe in _PROBE_LIST}

#: The answer docs/spec.md gives to each probe.
SPEC_ANSWERS: dict[str, str] = {name: probe.spec for name, probe in PROBES.items()}


def fingerprint(call: Call | Adapter, adapter: Adapter | None = None) -> dict[str, str]:
    """Run every probe and name what the implementation does.

    Parameters
    ----------
    call : callable or Adapter
        ``call(case, inputs) -> AdapterOutput`` runs one case on the implementation and may
        raise (the runner passes its own wrapper around ``adapter.run``). An
        :class:`Adapter` stands for its own ``run`` (and for ``adapter`` when that is not
        given).
    adapter : Adapter, optional
        Decides which probes the implementation can express (``not_applicable``, with the
        behaviour features ignored) and in which dtype they run (``dtypes()``). Without
        one, every probe runs, in float32 (float16 for the half-precision probe).

    Returns
    -------
    dict of str to str
        Probe name -> answer, in :data:`PROBES` order. Answers are the probe's ``answers``,
        ``"other"``, ``"n/a"`` or ``"error: <ExceptionClass>"``.
    """
    if isinstance(call, Adapter):
        adapter = call if adapter is None else adapter
        call = call.run
    return {name: probe.observe(call, adapter) for name, probe in PROBES.items()}
