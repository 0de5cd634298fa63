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
from .precision import round_to, working_dtype

__all__ = ["GoldenMismatchError", "golden", "naive"]

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
    p = case.params
    if isinstance(p, AttentionParams) and p.transform == "shift":
        result["lse"] = lse + p.shift
    elif isinstance(p, AttentionParams) and p.transform == "permute":
        result["weights"] = weights[..., inputs.permutation]
    _check_closed_forms(case, base, result)
    return result


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
    extra = p.get("softcap") or p.get("sinks") or p.get("alibi")
    if single and not any(options) and not extra:
        keep = inputs.get("mask")
        if keep is None:  # Lk = 1: the one key is attended by every row
            keep = np.ones((*inputs["query"].shape[:-1], 1), dtype=bool)
        k = np.repeat(inputs["key"], group, axis=-3)
        scale = p.get("scale") or 1.0 / math.sqrt(p["dk"])
        s = np.sum(inputs["query"][..., :, None, :] * k[..., None, :, :], axis=-1) * scale
        return {"out": np.matmul(keep.astype(float), v), "lse": np.sum(np.where(keep, s, 0), -1)}
    if p.get("logits") == "all_equal" and not p.get("bias") and not p.get("alibi"):
        keep = attnspec.attention_mask(
            p["lq"], p["lk"], mask=inputs.get("mask"), causal=bool(p.get("causal")),
            window=inputs.get("window"), alignment=p.get("alignment", "upper_left"),
            kv_lengths=inputs.get("kv_lengths"), q_lengths=inputs.get("q_lengths"), xp=np,
        )
        if keep is None:
            keep = np.ones((p["lq"], p["lk"]), dtype=bool)
        keep = np.broadcast_to(keep, (*p.get("batch", ()), p["hq"], p["lq"], p["lk"]))
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
    return _naive_attention(case, inputs, r)


def _alibi_distances(case: Case, inputs: Inputs) -> np.ndarray:
    """``slope * |q_pos - kv_pos|`` with positions written out: query row ``i`` sits at
    ``i + offset``, ``offset = kv_len - q_len`` per batch entry for lower-right alignment
    (ATT-ALIBI-1); ``(*batch, Hq, Lq, Lk)``."""
    p = case.params
    batch = tuple(p.get("batch", ()))
    lq, lk = p["lq"], p["lk"]
    offset = np.zeros(batch)
    if inputs.get("alignment") == "lower_right":
        kv = np.broadcast_to(inputs.get("kv_lengths", lk), batch)
        q = np.broadcast_to(inputs.get("q_lengths", lq), batch)
        offset = (kv - q).astype(float)
    i = np.arange(lq)[:, None] + offset[..., None, None, None]  # (*batch, 1, Lq, 1)
    dist = np.abs(i - np.arange(lk))
    slopes = np.broadcast_to(inputs["alibi_slopes"], (*batch, p["hq"]))
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
    keep = attnspec.attention_mask(
        p["lq"], p["lk"], mask=inputs.get("mask"), causal=bool(inputs.get("causal")),
        window=inputs.get("window"), alignment=inputs.get("alignment", "upper_left"),
        kv_lengths=inputs.get("kv_lengths"), q_lengths=inputs.get("q_lengths"), xp=np,
    )
    scale = inputs.get("scale") or 1.0 / math.sqrt(p["dk"])
    with np.errstate(all="ignore"):
        s = r(r(_scores(q, k, case.dtype)) * scale)
        if inputs.get("softcap"):
            c = inputs["softcap"]
            s = r(c * np.tanh(s / c))
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
