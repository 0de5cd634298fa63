"""Expected values: the float64 golden run, closed forms, and the naive same-dtype reference.

* golden -- attnspec itself on NumPy float64, from the case's (rounded) inputs.
* closed forms -- answers that need no softmax (one attended key -> its V row; equal scores
  -> the mean of the attended V rows; permuted keys and shifted logits -> the untransformed
  answer). Where a case has one, the golden must agree with it, or the case is reported as
  an internal error: the golden is checked at run time, not trusted.
* naive -- the textbook formula evaluated in the case's dtype, every operation rounded to it
  (as an eager framework would run it). Its error is the yardstick of the tolerance rule.
* gradients (gradient cases) -- ``dq``, ``dk``, ``dv`` (``dbias``) from the analytic backward
  of :mod:`.gradients`, golden in extended precision and checked at run time against
  central differences of the float64 golden forward; naive in the case's dtype.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import attnspec

from .case_params import AttentionParams
from .cases import SOFTMAX_OPS, Case, Inputs
from .input_forms import PAGE_SIZE
from .precision import round_to, working_dtype

__all__ = ["GoldenMismatchError", "golden", "logit_magnitude", "naive"]

Outputs = dict[str, np.ndarray]


class GoldenMismatchError(AssertionError):
    """The float64 golden disagrees with an independent closed form (a bug in attnspec)."""


def golden(case: Case, inputs: Inputs) -> Outputs:
    """float64 outputs the case's implementation must reproduce, closed-form checked."""
    # Cases feed NaN and inf on purpose; NumPy's warnings about them are noise here.
    with np.errstate(all="ignore"):
        return _golden(case, inputs)


def _golden(case: Case, inputs: Inputs) -> Outputs:
    base = inputs.originals
    if case.op in SOFTMAX_OPS:
        func = getattr(attnspec, case.op)
        kwargs = {k: v for k, v in base.items() if k in ("axis", "where")}
        return {"out": np.asarray(func(base["x"], **kwargs))}
    if case.op == "mha":
        args = {k: v for k, v in base.items() if k not in ("query", "key", "value")}
        out = attnspec.multi_head_attention(base["query"], base["key"], base["value"], **args)
        return {"out": np.asarray(out)}
    out, lse, weights = attnspec.scaled_dot_product_attention(
        base["query"], base["key"], base["value"], return_lse=True, return_weights=True,
        **base.options(),
    )
    result = {"out": out, "lse": lse, "weights": weights}
    if case.backward:
        from .gradients import check_finite_differences, golden_gradients

        grads = golden_gradients(case.params, base)
        problem = check_finite_differences(base, grads, seed=case.seed)
        if problem:
            raise GoldenMismatchError(f"{case.id}: the golden gradients disagree with central "
                                      f"differences of the golden forward: {problem}")
        result.update(grads)
    # The closed forms are of the untransformed inputs (``base``): checked before the
    # transform moves lse (shift) or the weights' columns (permute, paged).
    _check_closed_forms(case, base, result)
    p = case.params
    if isinstance(p, AttentionParams) and p.transform == "shift":
        result["lse"] = lse + p.shift
    elif isinstance(p, AttentionParams) and p.transform == "permute":
        result["weights"] = weights[..., inputs.permutation]
    elif isinstance(p, AttentionParams) and p.transform == "paged":
        result["weights"] = paged_keys(weights, inputs)
    return result


def logit_magnitude(case: Case, inputs: Inputs, expected: Outputs) -> float:
    """``L`` of the tolerance rule: how large the logits that carry weight are, so that the
    golden's own rounding of them (``eps64 * L``) can be allowed for.

    Attention: the largest finite ``|lse|`` of the golden (a row's lse lies between its
    largest attended score and that plus ``log Lk``; scores more than ~37 below it carry
    no float64 weight). Softmax ops: the largest finite ``|x|`` the ``where`` keeps.
    ``mha``: 0 (its projections keep the logits near 1 in every catalog case). Masked-out
    and padding entries never count, so NaN or 1e300 placed there (poison cases) cannot
    widen the bound.
    """
    if case.op in SOFTMAX_OPS:
        where = inputs.originals.get("where")
        return _largest_finite(inputs.originals["x"], True if where is None else where)
    lse = expected.get("lse")
    return 0.0 if lse is None else _largest_finite(lse, True)


def _largest_finite(x: Any, keep: Any) -> float:
    """``max |x|`` over the finite entries that ``keep`` selects; 0 when there are none."""
    x = np.asarray(x, dtype=np.float64)
    kept = np.isfinite(x) & np.asarray(keep, dtype=bool)
    return float(np.max(np.abs(x[kept]))) if kept.any() else 0.0


def _check_closed_forms(case: Case, inputs: Inputs, result: Outputs) -> None:
    closed = closed_form(case, inputs)
    for name, expected in closed.items():
        if not np.allclose(result[name], expected, rtol=1e-12, atol=1e-12, equal_nan=True):
            err = np.nanmax(np.abs(result[name] - expected))
            raise GoldenMismatchError(
                f"{case.id}: float64 golden {name} differs from its closed form by {err:.3g}"
            )


def closed_form(case: Case, inputs: Inputs) -> Outputs:
    """Closed-form ``out`` (and ``lse``) for the cases that have one; ``{}`` otherwise."""
    p = case.params
    if case.op != "attention" or p.get("poison") or p.get("dropout_p"):
        return {}
    options = [p.get(n) for n in ("causal", "window", "kv_lengths", "q_lengths", "bias")]
    group = p["hq"] // p["hkv"]
    v = np.repeat(inputs["value"], group, axis=-3)
    single = p.get("mask") == "single_key" or (p["lk"] == 1 and not p.get("mask"))
    extra = any(p.get(n) for n in ("softcap", "sinks", "alibi", "segments", "positions",
                                   "score_mod", "mask_mod"))
    if single and not any(options) and not extra:
        keep = inputs.get("mask")
        if keep is None:  # Lk = 1: the one key is attended by every row
            keep = np.ones((*inputs["query"].shape[:-1], 1), dtype=bool)
        k = np.repeat(inputs["key"], group, axis=-3)
        scale = p.get("scale") or 1.0 / math.sqrt(p["dk"])
        s = np.sum(inputs["query"][..., :, None, :] * k[..., None, :, :], axis=-1) * scale
        return {"out": np.matmul(keep.astype(float), v), "lse": np.sum(np.where(keep, s, 0), -1)}
    if p.get("logits") == "all_equal" and not any(p.get(n) for n in ("bias", "alibi",
                                                                      "score_mod")):
        keep = spec_keep(p, inputs)
        count = keep.sum(-1, keepdims=True)
        if "sinks" in inputs:
            # Every score is 0 and the sink is one more logit: the attended rows share
            # count / (count + exp(sink)) of the mass equally (ATT-SINK-1).
            sink = np.broadcast_to(inputs["sinks"], count.shape[:-2])[..., None, None]
            total = count + np.exp(sink)
            return {"out": np.matmul(keep.astype(float), v) / total,
                    "lse": np.log(total)[..., 0]}
        mean = np.matmul(keep.astype(float), v) / np.maximum(count, 1)
        lse = np.where(count[..., 0] > 0, np.log(np.maximum(count[..., 0], 1)), -np.inf)
        return {"out": mean, "lse": lse}
    return {}


def naive(case: Case, inputs: Inputs) -> Outputs:
    """The textbook computation in the case's dtype, each operation rounded to it."""
    dtype = case.dtype
    wd = working_dtype(dtype)

    def r(x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=wd)
        return round_to(x, dtype).astype(wd) if dtype in ("float16", "bfloat16") else x

    if case.op in SOFTMAX_OPS:
        x = r(inputs["x"])
        axis = inputs.get("axis", -1)
        if "where" in inputs:
            x = np.where(inputs["where"], x, -np.inf)
        with np.errstate(all="ignore"):
            m = np.max(x, axis=axis, keepdims=True)
            m = np.where(np.isneginf(m), 0, m)
            e = r(np.exp(x - m))
            total = r(np.sum(e, axis=axis, keepdims=True))
            if case.op == "softmax":
                out = r(e / np.where(total == 0, 1, total))
            elif case.op == "log_softmax":
                out = r(x - m - np.log(np.where(total == 0, 1, total)))
            else:
                out = r(np.squeeze(m + np.log(total), axis=axis))
        return {"out": out}
    if case.op == "mha":
        with np.errstate(all="ignore"):
            args: dict[str, Any] = {k: (r(v) if isinstance(v, np.ndarray) else v)
                                    for k, v in inputs.items()}
            mha = attnspec.multi_head_attention(args.pop("query"), args.pop("key"),
                                                args.pop("value"), **args)
        return {"out": r(mha)}
    if case.params.get("transform") == "paged":  # the same keys, as the dense cache
        result = _naive_attention(case, inputs.originals, r)
        result["weights"] = paged_keys(result["weights"], inputs)
        return result
    return _naive_attention(case, inputs, r)


def paged_keys(weights: np.ndarray, inputs: Inputs) -> np.ndarray:
    """Weights over the dense keys as the paged call gives them: over every key of its
    pages (ATT-PAGE-1), the slots past the dense length weighing 0."""
    total = inputs["block_table"].shape[-1] * PAGE_SIZE
    pad = [(0, 0)] * (weights.ndim - 1) + [(0, total - weights.shape[-1])]
    return np.pad(weights, pad)


def token_positions(p: Any, inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """Every query's and key's position, ``(*batch, Lq)`` and ``(*batch, Lk)``, written out
    from the spec: given positions (a side not given: its indices); else within segments,
    the count of earlier tokens of the same id, queries shifted by the segment's key count
    minus query count for lower-right (ATT-SEG-1); else the indices, queries shifted by
    ``kv_len - q_len`` per batch entry for lower-right (ATT-POS-1, ATT-CAUSAL-2)."""
    batch = tuple(p.get("batch", ()))
    lq, lk = p["lq"], p["lk"]
    lower_right = inputs.get("alignment") == "lower_right"
    if "q_positions" in inputs or "kv_positions" in inputs:
        q = np.broadcast_to(inputs.get("q_positions", np.arange(lq)), (*batch, lq))
        k = np.broadcast_to(inputs.get("kv_positions", np.arange(lk)), (*batch, lk))
        return q, k
    if "q_segment_ids" in inputs:
        qi = np.broadcast_to(inputs["q_segment_ids"], (*batch, lq))
        ki = np.broadcast_to(inputs["kv_segment_ids"], (*batch, lk))
        same_q = qi[..., :, None] == qi[..., None, :]
        same_k = ki[..., :, None] == ki[..., None, :]
        q = (same_q & np.tri(lq, k=-1, dtype=bool)).sum(-1)
        k = (same_k & np.tri(lk, k=-1, dtype=bool)).sum(-1)
        if lower_right:
            q = q + (qi[..., :, None] == ki[..., None, :]).sum(-1) - same_q.sum(-1)
        return q, k
    offset = np.zeros(batch, dtype=int)
    if lower_right:
        kv = np.broadcast_to(inputs.get("kv_lengths", lk), batch)
        qn = np.broadcast_to(inputs.get("q_lengths", lq), batch)
        offset = kv - qn
    return offset[..., None] + np.arange(lq), np.broadcast_to(np.arange(lk), (*batch, lk))


def mod_indices(p: Any) -> tuple[np.ndarray, ...]:
    """FlexAttention's ``b, h, q_idx, kv_idx`` as NumPy arrays broadcasting against the
    scores ``(*batch, Hq, Lq, Lk)``; ``b`` is the flat batch index (ATT-MOD-1)."""
    batch = tuple(p.get("batch", ()))
    b = np.arange(math.prod(batch)).reshape((*batch, 1, 1, 1))
    h = np.arange(p["hq"]).reshape(-1, 1, 1)
    return b, h, np.arange(p["lq"]).reshape(-1, 1), np.arange(p["lk"]).reshape(1, -1)


def mask_mod_keep(p: Any, inputs: Inputs) -> np.ndarray | None:
    """``mask_mod`` over the whole score matrix, ``(*batch, Hq, Lq, Lk)``, or ``None``."""
    if "mask_mod" not in inputs:
        return None
    keep = np.asarray(inputs["mask_mod"](*mod_indices(p)), dtype=bool)
    return np.broadcast_to(keep, (*tuple(p.get("batch", ())), p["hq"], p["lq"], p["lk"]))


def spec_keep(p: Any, inputs: Inputs) -> np.ndarray:
    """"May attend", ``(*batch, Hq, Lq, Lk)``, written out from the spec's rules over the
    positions of :func:`token_positions` (not attnspec's mask builder: the closed forms
    check it)."""
    batch, lq, lk = tuple(p.get("batch", ())), p["lq"], p["lk"]
    q, k = token_positions(p, inputs)
    rel = k[..., None, None, :] - q[..., None, :, None]  # (*batch, 1, Lq, Lk)
    keep = np.ones((*batch, p["hq"], lq, lk), dtype=bool)
    left, right = inputs.get("window") or (None, None)
    if inputs.get("causal"):
        keep &= rel <= 0
    if left is not None:
        keep &= rel >= -left
    if right is not None:
        keep &= rel <= right
    if "kv_lengths" in inputs:
        keep &= np.arange(lk) < np.asarray(inputs["kv_lengths"])[..., None, None, None]
    if "q_lengths" in inputs:
        keep &= (np.arange(lq)[:, None]
                 < np.asarray(inputs["q_lengths"])[..., None, None, None])
    if "q_segment_ids" in inputs:
        qi = np.broadcast_to(inputs["q_segment_ids"], (*batch, lq))[..., None, :, None]
        ki = np.broadcast_to(inputs["kv_segment_ids"], (*batch, lk))[..., None, None, :]
        keep &= (qi == ki) & (qi >= 0)
    if "mask" in inputs:
        keep &= inputs["mask"]
    by_mod = mask_mod_keep(p, inputs)
    return keep if by_mod is None else keep & by_mod


def _alibi_distances(case: Case, inputs: Inputs) -> np.ndarray:
    """``slope * |q_pos - kv_pos|``, ``(*batch, Hq, Lq, Lk)`` (ATT-ALIBI-1)."""
    p = case.params
    q, k = token_positions(p, inputs)
    dist = np.abs(q[..., None, :, None] - k[..., None, None, :]).astype(float)
    slopes = np.broadcast_to(inputs["alibi_slopes"], (*tuple(p.get("batch", ())), p["hq"]))
    return np.asarray(slopes[..., None, None] * dist)


def _scores(q: np.ndarray, k: np.ndarray, dtype: str) -> np.ndarray:
    """``q @ k^T`` as the naive reference computes it. In float64 the golden's arithmetic is
    float64 too, so the same BLAS product would differ from it by nothing and set no
    yardstick; summing the products one term at a time gives a textbook loop's rounding,
    an error of ~eps x |s| in every score that grows with the logits, which is what a
    correct float64 kernel with another summation order shows (measured: torch SDPA at logit
    magnitude 30-100, 1.2-1.9x the former bound, 12-18x the former naive error)."""
    if dtype != "float64":
        return np.asarray(np.matmul(q, np.swapaxes(k, -1, -2)))
    terms = q[..., :, None, :] * k[..., None, :, :]  # (..., Lq, Lk, D)
    total = np.zeros(terms.shape[:-1])
    for index in range(terms.shape[-1]):
        total = total + terms[..., index]
    return np.asarray(total)


def _naive_attention(case: Case, inputs: Inputs, r: Any) -> Outputs:
    p = case.params
    group = p["hq"] // p["hkv"]
    q = r(inputs["query"])
    k = np.repeat(r(inputs["key"]), group, axis=-3)
    v = np.repeat(r(inputs["value"]), group, axis=-3)
    keep = attnspec.attention_mask(p["lq"], p["lk"], **inputs.mask_options(), xp=np)
    by_mod = mask_mod_keep(p, inputs)
    if by_mod is not None:
        keep = by_mod if keep is None else keep & by_mod
    scale = inputs.get("scale") or 1.0 / math.sqrt(p["dk"])
    with np.errstate(all="ignore"):
        s = r(r(_scores(q, k, case.dtype)) * scale)
        if inputs.get("softcap"):
            c = inputs["softcap"]
            s = r(c * np.tanh(s / c))
        if "score_mod" in inputs:
            s = r(np.asarray(inputs["score_mod"](s, *mod_indices(p)), dtype=s.dtype))
        if "bias" in inputs:
            s = r(s + r(inputs["bias"]))
        if "alibi_slopes" in inputs:
            s = r(s - r(_alibi_distances(case, inputs)))
        if keep is not None:
            s = np.where(keep, s, -np.inf)
        m = np.max(s, axis=-1, keepdims=True) if p["lk"] else np.full((*s.shape[:-1], 1),
                                                                         -np.inf)
        sink = None
        if "sinks" in inputs:  # one more logit in the denominator (ATT-SINK-1)
            sink = np.broadcast_to(r(inputs["sinks"]), s.shape[:-2])[..., None, None]
            m = np.maximum(m, sink)
        m = np.where(np.isneginf(m), 0, m)
        e = r(np.exp(s - m))
        total = r(np.sum(e, axis=-1, keepdims=True))
        if sink is not None:
            total = r(total + r(np.exp(sink - m)))
        weights = r(e / np.where(total == 0, 1, total))
        if "dropout_mask" in inputs:
            weights = r(np.where(inputs["dropout_mask"], weights, 0) / (1 - inputs["dropout_p"]))
        out = r(np.matmul(weights, v))
        lse = np.squeeze(m + np.log(total), -1).astype(np.float64 if case.dtype == "float64"
                                                       else np.float32)
    result = {"out": out, "lse": lse, "weights": weights}
    if case.backward:
        from .gradients import naive_gradients

        result.update(naive_gradients(p, inputs, case.dtype))
    return result
