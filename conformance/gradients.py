"""Golden and naive gradients of attention, and their finite-difference check.

A gradient case (``params["backward"]``) asks an implementation for the vector-Jacobian
product of ``out`` with a random cotangent ``dO`` (``inputs.cotangent``, drawn from
the case's seed and rounded to its dtype): ``dq``, ``dk``, ``dv`` and, where the case has a
bias, sinks or ALiBi slopes and the implementation differentiates them (``grad_bias``,
``grad_sinks``, ``grad_alibi``), ``dbias``, ``dsinks``, ``dalibi_slopes``.

* golden -- the analytic backward of the spec's definition, written out in NumPy
  (:func:`attention_vjp`), in extended precision (``np.longdouble``: 64-bit mantissa on
  x86-64 Linux; plain float64 where the platform has nothing wider). It shares no code with
  attnspec's autodiff path. At run time it is checked against central differences of the
  float64 golden forward (attnspec on NumPy) along random directions
  (:func:`check_finite_differences`); ``tests/test_conformance_gradients.py`` also checks it
  with ``torch.autograd.gradcheck``.
* naive -- the same formulas evaluated in the case's dtype with every operation rounded to
  it, as an eager framework's backward would run them. Its error is the yardstick of the
  tolerance rule, as for the forward outputs.

The backward, with ``W`` the weights after dropout and ``P`` before (ATT-WEIGHTS-1)::

    dW = dO V^T            dV = W^T dO (summed over the query heads of a KV group)
    dP = dW * keep/(1-p)   dS = P * (dP - rowsum(P * dP))
    dbias = dS             dS0 = dS * (1 - tanh^2(s0 / c))   (softcap; dS0 = dS without)
    dq = scale * dS0 K     dk = scale * dS0^T q (summed over the group)
    dsinks = -sum_i p_sink[i] * rowsum(P * dP)[i]    (p_sink = exp(sink - lse), ATT-SINK-1)
    dalibi_slopes = -sum_ij dS[i, j] * |q_pos[i] - kv_pos[j]|    (ATT-ALIBI-1)

(each summed over what the input was broadcast along).

Positions that are not attended have ``P = 0`` and get exactly zero, whatever the inputs
hold there (ATT-GRAD-1, ATT-LEAK-2): key and value rows that no query row of a head
attends are zeroed before they enter a product.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import attnspec

from .case_inputs import Inputs
from .golden import mask_mod_keep, token_positions
from .precision import round_to, working_dtype

__all__ = ["GRAD_OUTPUTS", "WRT", "attention_vjp", "check_finite_differences",
           "golden_gradients", "naive_gradients"]

#: Gradient outputs, in the order an implementation's backward returns them.
GRAD_OUTPUTS = ("dq", "dk", "dv", "dbias", "dsinks", "dalibi_slopes")
#: input name -> gradient output name
WRT = {"query": "dq", "key": "dk", "value": "dv", "bias": "dbias", "sinks": "dsinks",
       "alibi_slopes": "dalibi_slopes"}

#: Extended precision for the golden where the platform has it.
GOLDEN_DTYPE = np.longdouble


def _reduce_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``x`` over the axes that broadcasting ``shape`` to ``x.shape`` added or widened."""
    lead = x.ndim - len(shape)
    if lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


def _group_sum(x: np.ndarray, hkv: int, r: Callable[[Any], np.ndarray]) -> np.ndarray:
    """(*batch, Hq, L, D) -> (*batch, Hkv, L, D): the sum over each KV head's query heads
    (contiguous groups, ATT-GQA-1)."""
    group = x.shape[-3] // hkv
    if group == 1:
        return x
    return r(x.reshape(*x.shape[:-3], hkv, group, *x.shape[-2:]).sum(axis=-3))


def attention_vjp(params: Mapping[str, Any], inputs: Inputs, wd: Any,
                  r: Callable[[Any], np.ndarray]) -> dict[str, np.ndarray]:
    """``out`` and the gradients of ``sum(dO * out)`` w.r.t. query, key, value (and bias).

    Parameters
    ----------
    params : dict
        The case's parameters (``hq``, ``hkv``, ``lq``, ``lk``, ``dk``, ...).
    inputs : dict
        The case's inputs (``make_inputs``), with a ``cotangent``.
    wd : NumPy dtype
        The working dtype every intermediate is held in.
    r : callable
        Rounds an array to the precision being modelled (identity for the golden).
    """
    p = params
    hkv = p["hkv"]
    group = p["hq"] // hkv

    def a(x: Any) -> np.ndarray:
        return r(np.asarray(x, dtype=wd))

    def t(x: np.ndarray) -> np.ndarray:
        return np.swapaxes(x, -1, -2)

    q, k, v = a(inputs["query"]), a(inputs["key"]), a(inputs["value"])
    dout = a(inputs.cotangent)
    if "score_mod" in inputs:  # the catalog has no such gradient case (ATT-MOD-1)
        raise NotImplementedError("the analytic backward has no derivative of a score_mod")
    keep = attnspec.attention_mask(p["lq"], p["lk"], **inputs.mask_options(), xp=np)
    by_mod = mask_mod_keep(p, inputs)
    if by_mod is not None:
        keep = by_mod if keep is None else keep & by_mod
    kr = np.repeat(k, group, axis=-3)
    vr = np.repeat(v, group, axis=-3)
    scores_shape = (*q.shape[:-1], p["lk"])
    attended = np.ones(scores_shape, bool) if keep is None else np.broadcast_to(
        keep, scores_shape)
    bias = None
    if "bias" in inputs:
        bias = a(inputs["bias"])
        attended = attended & (np.broadcast_to(bias, scores_shape) > -np.inf)
    # Rows of K and V that no query row of the head attends take no part (ATT-LEAK-2).
    unused = ~np.asarray(attended.any(axis=-2))[..., None]  # (*batch, Hq, Lk, 1)
    kr = np.where(unused, 0, kr).astype(wd)
    vr = np.where(unused, 0, vr).astype(wd)
    scale = inputs.get("scale") or 1.0 / math.sqrt(p["dk"])
    with np.errstate(all="ignore"):
        s0 = r(r(np.matmul(q, t(kr))) * wd(scale))
        tanh = None
        if inputs.get("softcap"):
            c = wd(inputs["softcap"])
            tanh = r(np.tanh(r(s0 / c)))
            s = r(c * tanh)
        else:
            s = s0
        if bias is not None:
            s = r(s + bias)
        dist = None
        if "alibi_slopes" in inputs:
            qp, kp = token_positions(p, inputs)
            dist = np.abs(qp[..., None, :, None] - kp[..., None, None, :])
            slopes = np.broadcast_to(a(inputs["alibi_slopes"]), q.shape[:-2])
            s = r(s - r(slopes[..., None, None] * dist.astype(wd)))
        s = np.where(attended, s, -np.inf).astype(wd)
        m = np.max(s, axis=-1, keepdims=True) if p["lk"] else np.full((*s.shape[:-1], 1),
                                                                         -np.inf, wd)
        sink = None
        if "sinks" in inputs:  # one more logit in the denominator, with no value
            sink = np.broadcast_to(a(inputs["sinks"]), q.shape[:-2])[..., None, None]
            m = np.maximum(m, sink)
        m = np.where(np.isneginf(m), 0, m).astype(wd)
        e = np.where(attended, r(np.exp(s - m)), 0).astype(wd)
        total = r(np.sum(e, axis=-1, keepdims=True))
        if sink is not None:
            total = r(total + r(np.exp(sink - m)))
        prob = r(e / np.where(total == 0, 1, total))
        if "dropout_mask" in inputs:
            keep_d = np.broadcast_to(inputs["dropout_mask"], scores_shape)
            inv = wd(1.0 / (1.0 - inputs["dropout_p"]))
            weights = r(np.where(keep_d, prob, 0) * inv)
        else:
            weights = prob
        out = r(np.matmul(weights, vr))
        # backward
        d_weights = r(np.matmul(dout, t(vr)))
        dv = _group_sum(r(np.matmul(t(weights), dout)), hkv, r)
        d_prob = r(np.where(keep_d, d_weights, 0) * inv) if "dropout_mask" in inputs else \
            d_weights
        delta = r(np.sum(r(prob * d_prob), axis=-1, keepdims=True))
        ds = np.where(attended, r(prob * r(d_prob - delta)), 0).astype(wd)
        ds0 = ds if tanh is None else np.where(attended, r(ds * r(1 - r(tanh * tanh))),
                                               0).astype(wd)
        dq = r(r(np.matmul(ds0, kr)) * wd(scale))
        dk = _group_sum(r(r(np.matmul(t(ds0), q)) * wd(scale)), hkv, r)
        result = {"out": out, "dq": dq, "dk": dk, "dv": dv}
        if bias is not None:
            result["dbias"] = r(_reduce_to(ds, np.shape(inputs["bias"])))
        if sink is not None:
            # P_j = e_j / (e_sink + sum e): dP_j/dsink = -P_j p_sink, so each row gives
            # -p_sink * rowsum(P * dP) = -p_sink * delta.
            p_sink = r(r(np.exp(sink - m)) / np.where(total == 0, 1, total))
            per_head = r(-np.sum(r(p_sink * delta), axis=(-2, -1)))  # (*batch, Hq)
            result["dsinks"] = r(_reduce_to(per_head, np.shape(inputs["sinks"])))
        if dist is not None:
            # s -= slope * dist: each score gives -dS * dist (0 where nothing is attended).
            terms = np.where(attended, r(ds * dist.astype(wd)), 0).astype(wd)
            per_head = r(-np.sum(terms, axis=(-2, -1)))
            result["dalibi_slopes"] = r(_reduce_to(per_head, np.shape(inputs["alibi_slopes"])))
    return result


def golden_gradients(params: Mapping[str, Any], inputs: Inputs) -> dict[str, np.ndarray]:
    """The golden ``dq``, ``dk``, ``dv`` (``dbias``) in float64, computed in extended
    precision."""
    result = attention_vjp(params, inputs, GOLDEN_DTYPE, lambda x: x)
    return {name: np.asarray(result[name], dtype=np.float64) for name in GRAD_OUTPUTS
            if name in result}


def naive_gradients(params: Mapping[str, Any], inputs: Inputs,
                    dtype: str) -> dict[str, np.ndarray]:
    """The naive backward in ``dtype``, every operation rounded to it."""
    wd = working_dtype(dtype)

    def r(x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=wd)
        return round_to(x, dtype).astype(wd) if dtype in ("float16", "bfloat16") else x

    result = attention_vjp(params, inputs, wd, r)
    return {name: result[name] for name in GRAD_OUTPUTS if name in result}


def _loss(inputs: Inputs, arrays: dict[str, np.ndarray]) -> float:
    """``sum(dO * out)`` of attnspec's float64 forward at ``arrays`` (the golden forward)."""
    options = inputs.options()
    options.update({k: v for k, v in arrays.items() if k in ("bias", "sinks", "alibi_slopes")})
    out = attnspec.scaled_dot_product_attention(arrays["query"], arrays["key"],
                                                arrays["value"], **options)
    return math.fsum((np.asarray(out) * inputs.cotangent).ravel().tolist())


def check_finite_differences(inputs: Inputs, grads: dict[str, np.ndarray], *,
                             directions: int = 2, seed: int = 0,
                             step: float = 1e-6, rtol: float = 1e-6) -> str | None:
    """Compare the directional derivative ``<grad, d>`` with a central difference of the
    float64 golden forward along random directions ``d`` (zero at non-finite inputs).

    Returns ``None`` when they agree, else a description of the disagreement.
    """
    names = [n for n in WRT if n in inputs and WRT[n] in grads]
    base = {n: np.asarray(inputs[n], dtype=np.float64) for n in names}
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):
        for i in range(directions):
            d = {n: np.where(np.isfinite(x), rng.standard_normal(x.shape), 0.0)
                 for n, x in base.items()}
            plus = _loss(inputs, {n: base[n] + step * d[n] for n in names})
            minus = _loss(inputs, {n: base[n] - step * d[n] for n in names})
            numeric = (plus - minus) / (2 * step)
            terms = [np.where(d[n] != 0, grads[WRT[n]] * d[n], 0.0) for n in names]
            analytic = math.fsum(float(x) for term in terms for x in term.ravel())
            size = math.fsum(float(x) for term in terms for x in np.abs(term).ravel())
            if not abs(analytic - numeric) <= rtol * (size + abs(numeric)) + 1e-12:
                return (f"direction {i}: analytic {analytic!r}, central difference "
                        f"{numeric!r} (step {step:g})")
    return None
