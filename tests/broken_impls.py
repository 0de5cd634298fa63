"""Deliberately broken attention implementations, for testing the conformance suite.

Each one is the spec's computation (a plain NumPy re-implementation of
``attnspec.scaled_dot_product_attention``, with its exact signature, layout ``(*batch, H, L,
D)`` and ``return_lse``/``return_weights``) with ONE defect injected. :data:`correct` is the
same code without a defect: it passes the whole catalog, so whatever a broken one fails is
its defect's doing.

:data:`BROKEN` maps each defect to its implementation (``tests/test_conformance_broken.py``
says which rule each one breaks); :func:`adapter` gives the conformance adapter that grades
one (``broken_impls:<name>`` through ``attnspec.conformance.adapters.resolve``).

Backward passes, for the gradient cases (ATT-GRAD-1, ATT-GRAD-2): :func:`numpy_backward` is
the attention backward written out in NumPy, with one of :data:`BACKWARD_DEFECTS` injected
(or none). It is graded two ways: ``<defect>_torch`` is a ``torch.autograd.Function`` whose
forward is attnspec's and whose backward is :func:`numpy_backward` (graded through torch
autograd: capability ``backward = "autodiff"``), and ``<defect>_numpy`` is :data:`correct`
with ``numpy_backward`` as its ``attnspec_backward`` (capability ``backward = "function"``);
``backward_correct_torch`` / ``backward_correct_numpy`` have no defect.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

import attnspec
from attnspec.conformance.adapters import Adapter, resolve

__all__ = ["BACKWARD_DEFECTS", "BROKEN", "BROKEN_BACKWARD", "DEFECTS", "adapter", "correct",
           "numpy_backward", "raises_on_softcap"]

#: defect -> what it does wrong
DEFECTS: dict[str, str] = {
    "wrong_scale": "default scale 1/Dk instead of 1/sqrt(Dk)",
    "flipped_mask": "bool mask True = masked",
    "upper_left_always": "ignores alignment='lower_right'",
    "no_max_subtraction": "softmax without subtracting the row max",
    "float16_accumulation": "half inputs: products, sums and matmuls carried in float16",
    "nan_for_empty_rows": "a row with nothing to attend gives NaN (out, lse and weights)",
    "interleaved_gqa": "query head h reads KV head h % Hkv",
    "softcap_after_mask": "softcap applied after bias and masking (masked scores become -c)",
    "window_off_by_one": "the window's left side keeps one key too many",
    "kv_lengths_ignored": "kv_lengths has no effect",
    "q_lengths_ignored": "q_lengths has no effect: padding rows attend like the others",
    "causal_dropped_single_row": "causal is ignored when Lq = 1 (a decode shortcut: "
                                 "is_causal = Lq > 1)",
    "lse_base2": "lse in base 2 (log2 of the sum of 2**s) instead of the natural log",
    "weights_unnormalised": "returned weights are exp(s - max), not divided by their sum",
    "dropout_unscaled": "kept weights are not scaled by 1/(1 - p)",
    "finfo_min_masking": "masked scores set to the dtype's most negative finite value, not "
                         "-inf: an empty row attends to every key",
    "additive_masking": "masks by adding -inf to the scores: NaN at a masked position stays "
                        "NaN (NaN + -inf)",
    "padding_not_zeroed": "K/V rows past kv_lengths are masked but not zeroed: inf there "
                          "reaches P @ V as 0 * inf",
    "nan_as_masked": "NaN scores are treated as masked (nan_to_num to -inf), hiding them",
    "bias_before_scale": "the bias is added before the score scale: (q.k + bias) * scale",
    "tiny_relative_error": "every output off by a relative 2**-12 (a constant folded in "
                           "reduced precision)",
    "float64_as_float32": "float64 inputs computed and returned in float32",
    "no_argument_checks": "no argument checks: mismatched heads fail deep inside (IndexError)",
    "out_blhd": "out returned tokens-first, (*batch, Lq, Hq, Dv)",
    "sinks_ignored": "sinks has no effect (a kernel that drops the sink logit)",
    "alibi_without_offset": "ALiBi distances |i - j| from the indices, ignoring the "
                            "lower-right offset (kv_len - q_len)",
    "alibi_signed": "ALiBi as slope * (kv_pos - q_pos), the causal-only form: later keys "
                    "are boosted instead of penalised",
    "positions_ignored": "q_positions / kv_positions have no effect (causal on the indices)",
    "segments_global_positions": "packed causal/window in the packed (global) indices, not "
                                 "restarting per segment (right for self-packing only)",
    "segment_padding_attended": "a negative segment id is one more segment: padding tokens "
                                "attend each other",
    "segment_padding_not_zeroed": "padding tokens masked but their K/V not zeroed: inf there "
                                  "leaks through 0 * inf",
    "partial_page_read": "a paged cache's last page read whole: kv_lengths rounded up to the "
                         "page size",
    "short_query_upper_left": "alignment='lower_right' ignored for 2 or 3 query rows (a "
                              "prefill-chunk shortcut): chunks disagree with the whole prefill",
    "batch_dependent": "out one ulp off when the batch has more than one entry (a kernel "
                      "whose reduction order follows the batch size)",
    "score_mod_after_bias": "score_mod applied after the bias is added, not before",
    "mask_mod_transposed": "mask_mod called as mask_mod(b, h, kv_idx, q_idx)",
}


#: What the conformance adapter for these functions declares: every feature (the default),
#: and all three outputs.
_CAPABILITIES: dict[str, Any] = {"returns": ["out", "lse", "weights"]}


def _check(query: np.ndarray, key: np.ndarray, value: np.ndarray) -> None:
    """The spec's argument errors (ATT-ARG-1, ATT-DTYPE-1), from shapes and dtypes only."""
    for name, x in (("key", key), ("value", value)):
        if x.dtype != query.dtype:
            raise TypeError(f"{name}: dtype {x.dtype}, expected query's dtype {query.dtype}")
    if not np.issubdtype(query.dtype, np.floating):
        raise TypeError(f"query: dtype {query.dtype}, expected a real floating dtype")
    if key.shape[-1] != query.shape[-1]:
        raise ValueError(f"key: head dim {key.shape[-1]}, expected {query.shape[-1]}")
    if value.shape[-3:-1] != key.shape[-3:-1]:
        raise ValueError(f"value: shape {value.shape} does not match key shape {key.shape}")
    if query.shape[-3] % key.shape[-3]:
        raise ValueError(f"key: {key.shape[-3]} heads do not divide {query.shape[-3]}")


def _half_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with every product rounded to float16 and summed one term at a time in
    float16 (NumPy's own float16 matmul and sum accumulate in float32)."""
    terms = (a[..., :, :, None] * b[..., None, :, :]).astype(np.float16)  # (..., M, K, N)
    return np.add.accumulate(terms, axis=-2, dtype=np.float16)[..., -1, :]


def _half_sum(x: np.ndarray) -> np.ndarray:
    return np.add.accumulate(x.astype(np.float16), axis=-1, dtype=np.float16)[..., -1:]


def _positions(tokens: dict[str, Any], lq: int, lk: int,
               alignment: str) -> tuple[np.ndarray, np.ndarray]:
    """Query and key positions from given positions or segment ids (NumPy, per the spec)."""
    if "q_positions" in tokens or "kv_positions" in tokens:
        return (np.asarray(tokens.get("q_positions", np.arange(lq))),
                np.asarray(tokens.get("kv_positions", np.arange(lk))))
    qi, ki = np.asarray(tokens["q_segment_ids"]), np.asarray(tokens["kv_segment_ids"])
    q = np.array([[list(row[:i]).count(x) for i, x in enumerate(row)]
                  for row in qi.reshape(-1, lq)]).reshape(qi.shape)
    k = np.array([[list(row[:j]).count(x) for j, x in enumerate(row)]
                  for row in ki.reshape(-1, lk)]).reshape(ki.shape)
    if alignment == "lower_right":
        q = q + (qi[..., :, None] == ki[..., None, :]).sum(-1) - (
            qi[..., :, None] == qi[..., None, :]).sum(-1)
    return q, k


def _gather_pages(pool: np.ndarray, table: np.ndarray, live: np.ndarray) -> np.ndarray:
    """The dense cache ``(*batch, Hkv, pages * page_size, D)`` a block table describes."""
    index = np.where(np.arange(table.shape[-1]) < live[..., None], table, 0)
    x = pool[index]  # (*batch, pages, Hkv, page_size, D)
    x = np.moveaxis(x, -4, -3)  # (*batch, Hkv, pages, page_size, D)
    return x.reshape(*x.shape[:-3], -1, x.shape[-1])


def _attention(query: Any, key: Any, value: Any, defect: str | None, **o: Any) -> Any:
    query, key, value = (np.asarray(x) for x in (query, key, value))
    if o["block_table"] is not None:
        table, page = np.asarray(o["block_table"]), key.shape[-2]
        kv = np.broadcast_to(np.asarray(o["kv_lengths"]), table.shape[:-1])
        live = -(-kv // page)
        key, value = _gather_pages(key, table, live), _gather_pages(value, table, live)
        if defect == "partial_page_read":
            o["kv_lengths"] = live * page
    if defect != "no_argument_checks":
        _check(query, key, value)
    dtype = query.dtype
    hq, lq, dk = query.shape[-3:]
    hkv, lk = key.shape[-3:-1]
    low = defect == "float16_accumulation" and dtype == np.float16
    acc = np.float16 if low else np.float64 if dtype == np.float64 else np.float32
    if defect == "float64_as_float32" and dtype == np.float64:
        dtype = acc = np.dtype(np.float32)

    mask, window, alignment = o["mask"], o["window"], o["alignment"]
    kv_lengths, q_lengths, causal = o["kv_lengths"], o["q_lengths"], o["causal"]
    if defect == "q_lengths_ignored":
        q_lengths = None
    if defect == "causal_dropped_single_row" and lq == 1:
        causal = False
    if defect == "flipped_mask" and mask is not None:
        mask = ~np.asarray(mask)
    if defect == "upper_left_always" or (defect == "short_query_upper_left" and 2 <= lq <= 3):
        alignment = "upper_left"
    if defect == "window_off_by_one" and window is not None and window[0] is not None:
        window = (window[0] + 1, window[1])
    if defect == "kv_lengths_ignored":
        kv_lengths = None
    tokens = {n: o[n] for n in ("q_positions", "kv_positions", "q_segment_ids",
                                 "kv_segment_ids") if o[n] is not None}
    if defect == "positions_ignored":
        tokens.pop("q_positions", None)
        tokens.pop("kv_positions", None)
    if defect == "segments_global_positions" and "q_segment_ids" in tokens:
        offset = lk - lq if alignment == "lower_right" else 0
        tokens.update(q_positions=np.arange(lq) + offset, kv_positions=np.arange(lk))
        alignment = "upper_left"
    if defect == "segment_padding_attended" and "q_segment_ids" in tokens:
        for n in ("q_segment_ids", "kv_segment_ids"):
            tokens[n] = np.where(np.asarray(tokens[n]) < 0, 10**6, tokens[n])
    keep = attnspec.attention_mask(
        lq, lk, mask=mask, causal=causal, window=window, alignment=alignment,
        kv_lengths=kv_lengths, q_lengths=q_lengths, xp=np, **tokens,
    )
    batch_shape = np.broadcast_shapes(query.shape[:-3], key.shape[:-3])
    index = (np.arange(math.prod(batch_shape)).reshape((*batch_shape, 1, 1, 1)),
             np.arange(hq).reshape(-1, 1, 1), np.arange(lq).reshape(-1, 1),
             np.arange(lk).reshape(1, -1))
    if o["mask_mod"] is not None:
        b_, h_, i_, j_ = index
        by_mod = (o["mask_mod"](b_, h_, j_.T, i_.T).swapaxes(-1, -2)
                  if defect == "mask_mod_transposed" else o["mask_mod"](*index))
        keep = by_mod if keep is None else keep & by_mod

    q, k, v = (x.astype(acc) for x in (query, key, value))
    if kv_lengths is not None and defect != "padding_not_zeroed":
        # Padding rows are zeroed so that NaN/inf there cannot reach P @ V (ATT-LEAK-2).
        real = (np.arange(lk) < np.asarray(kv_lengths)[..., None])[..., None, :, None]
        k, v = np.where(real, k, 0).astype(acc), np.where(real, v, 0).astype(acc)
    if "kv_segment_ids" in tokens and defect != "segment_padding_not_zeroed":
        real = (np.asarray(tokens["kv_segment_ids"]) >= 0)[..., None, :, None]
        k, v = np.where(real, k, 0).astype(acc), np.where(real, v, 0).astype(acc)
    heads = np.arange(hq) % hkv if defect == "interleaved_gqa" else np.arange(hq) // (hq // hkv)
    k, v = np.take(k, heads, axis=-3), np.take(v, heads, axis=-3)

    scale = o["scale"]
    if scale is None:
        scale = 1.0 / dk if defect == "wrong_scale" else 1.0 / math.sqrt(dk)
    kt = np.swapaxes(k, -1, -2)
    s = (_half_matmul(q, kt) if low else np.matmul(q, kt))
    if defect == "bias_before_scale" and o["bias"] is not None:
        s = s + np.asarray(o["bias"]).astype(acc)
    s = s * acc(scale)
    c = o["softcap"]
    if c is not None and defect != "softcap_after_mask":
        s = c * np.tanh(s / c)
    if o["score_mod"] is not None and defect != "score_mod_after_bias":
        s = np.asarray(o["score_mod"](s, *index), dtype=acc)
    if o["bias"] is not None and defect != "bias_before_scale":
        b = np.asarray(o["bias"]).astype(acc)
        s = s + b if defect == "additive_masking" else np.where(b == -math.inf, -math.inf,
                                                                    s + b)
    if o["alibi_slopes"] is not None:
        batch = s.shape[:-3]
        offset = np.zeros(batch)
        if alignment == "lower_right" and defect != "alibi_without_offset":
            kv = np.broadcast_to(lk if kv_lengths is None else np.asarray(kv_lengths), batch)
            qn = np.broadcast_to(lq if q_lengths is None else np.asarray(q_lengths), batch)
            offset = (kv - qn).astype(float)
        dist = np.abs(np.arange(lq)[:, None] + offset[..., None, None, None] - np.arange(lk))
        if tokens:  # positions given, or restarting per segment
            qp, kp = _positions(tokens, lq, lk, alignment)
            dist = np.abs(qp[..., None, :, None] - kp[..., None, None, :])
        if defect == "alibi_signed":
            dist = np.arange(lq)[:, None] + offset[..., None, None, None] - np.arange(lk)
            if tokens:
                dist = qp[..., None, :, None] - kp[..., None, None, :]
        slopes = np.broadcast_to(np.asarray(o["alibi_slopes"]), (*batch, hq))[..., None, None]
        s = (s - slopes * dist).astype(acc)
    if o["score_mod"] is not None and defect == "score_mod_after_bias":
        s = np.asarray(o["score_mod"](s, *index), dtype=acc)
    if defect == "nan_as_masked":
        s = np.where(np.isnan(s), -math.inf, s)
    if keep is not None and defect == "finfo_min_masking":
        s = np.where(keep, s, np.finfo(acc).min)
    elif keep is not None and defect == "additive_masking":
        s = s + np.where(keep, 0.0, -math.inf).astype(acc)
    elif keep is not None:
        s = np.where(keep, s, -math.inf)
    if c is not None and defect == "softcap_after_mask":
        s = c * np.tanh(s / c)
    s = s.astype(acc)

    if lk:
        row_max = np.max(s, axis=-1, keepdims=True)
    else:
        row_max = np.full((*s.shape[:-1], 1), -math.inf, dtype=acc)
    sink = None
    if o["sinks"] is not None and defect != "sinks_ignored":
        sink = np.broadcast_to(np.asarray(o["sinks"]).astype(acc), s.shape[:-2])[..., None, None]
        row_max = np.maximum(row_max, sink)
    shift = np.where(row_max == -math.inf, 0, row_max).astype(acc)
    if defect == "no_max_subtraction":
        shift = np.zeros_like(shift)
    e = np.exp(s - shift).astype(acc)
    total = _half_sum(e) if low else np.sum(e, axis=-1, keepdims=True)
    if sink is not None:
        total = (total + np.exp(sink - shift)).astype(acc)
    safe = np.where(total == 0, 1, total).astype(acc)
    lse = np.where(total == 0, -math.inf, shift + np.log(safe))
    lse = np.where(row_max == math.inf, math.inf, lse)

    if defect == "lse_base2":
        lse = lse / math.log(2)
    p = e
    if o["dropout_mask"] is not None:
        p = np.where(o["dropout_mask"], p, 0).astype(acc)
        if o["dropout_p"] > 0 and defect != "dropout_unscaled":
            p = (p * (1.0 / (1.0 - o["dropout_p"]))).astype(acc)
    out = (_half_matmul(p, v) if low else np.matmul(p, v)) / safe
    weights = p if defect == "weights_unnormalised" else p / safe
    if defect == "nan_for_empty_rows":
        empty = total == 0
        out, weights, lse = (np.where(empty, math.nan, x) for x in (out, weights, lse))
    if defect == "batch_dependent" and math.prod(out.shape[:-3]) > 1:
        out = np.nextafter(out, np.inf).astype(out.dtype)
    if defect == "tiny_relative_error":
        out = out * (1 + 2.0 ** -12)
    if defect == "out_blhd":
        out = np.swapaxes(out, -2, -3)

    results = [out.astype(dtype)]
    if o["return_lse"]:
        results.append(lse[..., 0].astype(np.float64 if dtype == np.float64 else np.float32))
    if o["return_weights"]:
        results.append(weights.astype(dtype))
    return results[0] if len(results) == 1 else tuple(results)


def _implementation(defect: str | None) -> Any:
    """attnspec's signature around :func:`_attention` with ``defect`` injected."""

    def sdpa(
        query: Any,
        key: Any,
        value: Any,
        /,
        *,
        mask: Any = None,
        bias: Any = None,
        causal: bool = False,
        window: Any = None,
        alignment: str = "upper_left",
        scale: float | None = None,
        softcap: float | None = None,
        sinks: Any = None,
        alibi_slopes: Any = None,
        q_positions: Any = None,
        kv_positions: Any = None,
        q_segment_ids: Any = None,
        kv_segment_ids: Any = None,
        score_mod: Any = None,
        mask_mod: Any = None,
        block_table: Any = None,
        kv_lengths: Any = None,
        q_lengths: Any = None,
        dropout_mask: Any = None,
        dropout_p: float = 0.0,
        return_lse: bool = False,
        return_weights: bool = False,
        chunk_size: Any = None,  # accepted for signature parity; these always go direct
        implementation: str = "portable",  # likewise: there is only one implementation here
        xp: Any = None,
    ) -> Any:
        with np.errstate(all="ignore"):
            return _attention(
                query, key, value, defect, mask=mask, bias=bias, causal=causal, window=window,
                alignment=alignment, scale=scale, softcap=softcap, sinks=sinks,
                alibi_slopes=alibi_slopes, q_positions=q_positions,
                kv_positions=kv_positions, q_segment_ids=q_segment_ids,
                kv_segment_ids=kv_segment_ids, score_mod=score_mod, mask_mod=mask_mod,
                block_table=block_table,
                kv_lengths=kv_lengths,
                q_lengths=q_lengths, dropout_mask=dropout_mask, dropout_p=dropout_p,
                return_lse=return_lse, return_weights=return_weights,
            )

    # Named like the module attribute, so that pickle and "module:callable" find it.
    sdpa.__name__ = sdpa.__qualname__ = defect or "correct"
    sdpa.attnspec_capabilities = dict(_CAPABILITIES)  # type: ignore[attr-defined]
    sdpa.__doc__ = f"attnspec's attention with one defect: {DEFECTS[defect]}." if defect else (
        "attnspec's attention re-implemented in NumPy, without a defect.")
    return sdpa


correct = _implementation(None)
wrong_scale = _implementation("wrong_scale")
flipped_mask = _implementation("flipped_mask")
upper_left_always = _implementation("upper_left_always")
no_max_subtraction = _implementation("no_max_subtraction")
float16_accumulation = _implementation("float16_accumulation")
nan_for_empty_rows = _implementation("nan_for_empty_rows")
interleaved_gqa = _implementation("interleaved_gqa")
softcap_after_mask = _implementation("softcap_after_mask")
window_off_by_one = _implementation("window_off_by_one")
kv_lengths_ignored = _implementation("kv_lengths_ignored")

#: defect -> implementation (``globals()`` gets one module attribute per defect, so that
#: ``broken_impls:<defect>`` resolves in a worker process too)
BROKEN: dict[str, Any] = {defect: globals().get(defect) or _implementation(defect)
                          for defect in DEFECTS}
globals().update(BROKEN)


def raises_on_softcap(query: Any, key: Any, value: Any, /, *, softcap: Any = None,
                      **options: Any) -> Any:
    """:data:`correct`, except that it raises ``NotImplementedError`` for ``softcap``."""
    if softcap is not None:
        raise NotImplementedError("softcap")
    return correct(query, key, value, **options)


raises_on_softcap.attnspec_capabilities = dict(_CAPABILITIES)  # type: ignore[attr-defined]


def adapter(name: str, **capabilities: Any) -> Adapter:
    """The conformance adapter of ``broken_impls:<name>`` on NumPy (every feature declared
    unless ``capabilities`` says otherwise; out, lse and weights returned)."""
    return resolve(f"{__name__}:{name}", capabilities={**_CAPABILITIES, **capabilities})


# -- backward passes ------------------------------------------------------------------------

#: backward defect -> what it does wrong
BACKWARD_DEFECTS: dict[str, str] = {
    "grad_no_scale": "dq and dk without the score scale 1/sqrt(Dk)",
    "grad_nan_empty_rows": "P recomputed as exp(s - lse) with lse = -inf: NaN gradients from "
                           "fully masked rows",
    "grad_gqa_no_sum": "dk and dv of a KV head from the first query head of its group only",
}

#: Counts calls of the nondeterministic implementations (every other call differs).
_CALLS = itertools.count()

#: What the adapters of the backward implementations leave out: numpy_backward
#: differentiates none of these options.
_BACKWARD_EXCLUDE = ["softcap", "dropout", "sinks", "alibi", "positions", "segments", "paged",
                     "score_mod", "mask_mod"]


def numpy_backward(grad_out: Any, query: Any, key: Any, value: Any, defect: str | None = None,
                   /, *, mask: Any = None, bias: Any = None, causal: bool = False,
                   window: Any = None, alignment: str = "upper_left", scale: Any = None,
                   kv_lengths: Any = None, q_lengths: Any = None) -> tuple:
    """``(dq, dk, dv)`` (``dbias`` too when ``bias`` is given) of attention for the output
    cotangent ``grad_out``, recomputing P from the scores and the log-sum-exp as a flash
    backward does; computed in float32 (float64 for float64 input), returned in the input
    dtypes."""
    dtype = np.asarray(query).dtype
    acc = np.float64 if dtype == np.float64 else np.float32
    g, q, k, v = (np.asarray(x).astype(acc) for x in (grad_out, query, key, value))
    hq, lq, dk = q.shape[-3:]
    hkv, lk = k.shape[-3:-1]
    group = hq // hkv
    keep = attnspec.attention_mask(lq, lk, mask=mask, causal=causal, window=window,
                                   alignment=alignment, kv_lengths=kv_lengths,
                                   q_lengths=q_lengths, xp=np)
    scale = 1.0 / math.sqrt(dk) if scale is None else scale
    if kv_lengths is not None:
        # Unused KV-cache slots are zeroed, so that NaN/inf there reaches no gradient
        # (ATT-GRAD-1, as ATT-LEAK-2 for the forward).
        real = (np.arange(lk) < np.asarray(kv_lengths)[..., None])[..., None, :, None]
        k, v = np.where(real, k, 0).astype(acc), np.where(real, v, 0).astype(acc)
    kr, vr = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    with np.errstate(all="ignore"):
        s = np.matmul(q, np.swapaxes(kr, -1, -2)) * acc(scale)
        attended = np.ones(s.shape, bool) if keep is None else np.broadcast_to(keep, s.shape)
        if bias is not None:
            b = np.broadcast_to(np.asarray(bias).astype(acc), s.shape)
            attended = attended & (b > -math.inf)
            s = s + np.where(attended, b, 0)
        s = np.where(attended, s, -math.inf)
        m = np.max(s, axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), 0, m)
        total = np.sum(np.exp(s - m), axis=-1, keepdims=True)
        lse = np.where(total == 0, -math.inf, m + np.log(np.where(total == 0, 1, total)))
        p = np.exp(s - lse)  # exp(-inf - (-inf)) = NaN on a fully masked row ...
        if defect != "grad_nan_empty_rows":
            p = np.where(np.isfinite(lse), p, 0)  # ... which the correct backward guards
        p = p.astype(acc)
        if defect == "nondeterministic" and next(_CALLS) % 2:
            # as a kernel whose reduction order depends on thread timing: one ulp, sometimes
            p.flat[0] = np.nextafter(p.flat[0], acc(np.inf))
        d_p = np.matmul(g, np.swapaxes(vr, -1, -2))
        d_s = (p * (d_p - np.sum(p * d_p, axis=-1, keepdims=True))).astype(acc)
        s_scale = acc(1.0 if defect == "grad_no_scale" else scale)
        dq = np.matmul(d_s, kr) * s_scale
        dk_heads = np.matmul(np.swapaxes(d_s, -1, -2), q) * s_scale
        dv_heads = np.matmul(np.swapaxes(p, -1, -2), g)

    def per_kv_head(x: np.ndarray) -> np.ndarray:
        x = x.reshape(*x.shape[:-3], hkv, group, *x.shape[-2:])
        return x[..., 0, :, :] if defect == "grad_gqa_no_sum" else x.sum(axis=-3)

    grads = [dq.astype(dtype), per_kv_head(dk_heads).astype(np.asarray(key).dtype),
             per_kv_head(dv_heads).astype(np.asarray(value).dtype)]
    if bias is not None:
        bias = np.asarray(bias)
        d_bias = d_s.reshape(-1, *d_s.shape[-len(bias.shape):]) if bias.ndim < d_s.ndim \
            else d_s
        d_bias = d_bias.sum(axis=0) if bias.ndim < d_s.ndim else d_bias
        axes = tuple(i for i, n in enumerate(bias.shape) if n == 1 and d_bias.shape[i] != 1)
        grads.append((d_bias.sum(axis=axes, keepdims=True) if axes else d_bias)
                     .astype(bias.dtype))
    return tuple(grads)


def _torch_function() -> Any:
    """A ``torch.autograd.Function``: attnspec's forward, :func:`numpy_backward` backward
    (made on first use: this module is imported without torch too)."""
    global _TORCH_FUNCTION
    if _TORCH_FUNCTION is None:
        import torch

        class NumpyBackwardAttention(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, q: Any, k: Any, v: Any, bias: Any, options: dict,
                        defect: Any) -> Any:
                ctx.save_for_backward(q, k, v, bias)
                ctx.options, ctx.defect = options, defect
                given = {n: x for n, x in options.items() if x is not None}
                return attnspec.scaled_dot_product_attention(q, k, v, bias=bias, **given)

            @staticmethod
            def backward(ctx: Any, grad_out: Any) -> Any:
                def host(x: Any) -> Any:
                    if not isinstance(x, torch.Tensor):
                        return x
                    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
                    return x.detach().to(wide).cpu().numpy() if x.is_floating_point() \
                        else x.detach().cpu().numpy()

                q, k, v, bias = ctx.saved_tensors
                options = {n: host(x) for n, x in ctx.options.items()}
                grads = numpy_backward(host(grad_out), host(q), host(k), host(v), ctx.defect,
                                       bias=host(bias), **options)
                like = (q, k, v, bias)
                out = [torch.from_numpy(np.ascontiguousarray(g)).to(x.dtype)
                       for g, x in zip(grads, like, strict=False)]
                return (*out, *([None] * (4 - len(out))), None, None)

        _TORCH_FUNCTION = NumpyBackwardAttention
    return _TORCH_FUNCTION


_TORCH_FUNCTION: Any = None


def _backward_implementation(defect: str | None, kind: str) -> Any:
    """``<defect>_torch`` (autograd through a custom Function) or ``<defect>_numpy``
    (:data:`correct` with an ``attnspec_backward``)."""
    if kind == "torch":
        def sdpa(query: Any, key: Any, value: Any, /, *, mask: Any = None, bias: Any = None,
                 causal: bool = False, window: Any = None, alignment: str = "upper_left",
                 scale: Any = None, kv_lengths: Any = None, q_lengths: Any = None) -> Any:
            options = {"mask": mask, "causal": causal, "window": window,
                       "alignment": alignment, "scale": scale, "kv_lengths": kv_lengths,
                       "q_lengths": q_lengths}
            return _torch_function().apply(query, key, value, bias, options, defect)

        sdpa.attnspec_capabilities = {"backward": "autodiff",  # type: ignore[attr-defined]
                                      "exclude": list(_BACKWARD_EXCLUDE)}
    else:
        def sdpa(query: Any, key: Any, value: Any, /, **options: Any) -> Any:
            return correct(query, key, value, **options)

        def backward(grad_out: Any, query: Any, key: Any, value: Any, /, **options: Any) -> Any:
            return numpy_backward(grad_out, query, key, value, defect, **options)

        sdpa.attnspec_backward = backward  # type: ignore[attr-defined]
        sdpa.attnspec_capabilities = {"backward": "function",  # type: ignore[attr-defined]
                                      "exclude": list(_BACKWARD_EXCLUDE)}
    name = f"{defect or 'backward_correct'}_{kind}"
    sdpa.__name__ = sdpa.__qualname__ = name
    sdpa.__doc__ = (f"attnspec's attention whose backward has one defect: "
                    f"{BACKWARD_DEFECTS.get(defect, defect)}." if defect else
                    "attnspec's attention with a hand-written backward, without a defect.")
    return sdpa


backward_correct_torch = _backward_implementation(None, "torch")
backward_correct_numpy = _backward_implementation(None, "numpy")
grad_no_scale_torch = _backward_implementation("grad_no_scale", "torch")
grad_no_scale_numpy = _backward_implementation("grad_no_scale", "numpy")
grad_nan_empty_rows_torch = _backward_implementation("grad_nan_empty_rows", "torch")
grad_nan_empty_rows_numpy = _backward_implementation("grad_nan_empty_rows", "numpy")
grad_gqa_no_sum_torch = _backward_implementation("grad_gqa_no_sum", "torch")
grad_gqa_no_sum_numpy = _backward_implementation("grad_gqa_no_sum", "numpy")

#: ``<defect>_<torch|numpy>`` -> implementation, for every backward defect
BROKEN_BACKWARD: dict[str, Any] = {
    f"{defect}_{kind}": globals()[f"{defect}_{kind}"]
    for defect in BACKWARD_DEFECTS for kind in ("torch", "numpy")
}


# -- determinism (ATT-DET-1) ----------------------------------------------------------------


def nondeterministic(query: Any, key: Any, value: Any, /, **options: Any) -> Any:
    """:data:`correct`, declared deterministic, whose every other call returns an ``out`` one
    ulp off in its first entry (as a kernel whose reduction order varies between calls)."""
    out = np.array(correct(query, key, value, **options))
    if next(_CALLS) % 2:
        out.flat[0] = np.nextafter(out.flat[0], np.inf, dtype=out.dtype)
    return out


nondeterministic.attnspec_capabilities = {"deterministic": True}  # type: ignore[attr-defined]

#: :data:`backward_correct_torch`, declared deterministic, whose backward is one ulp off in
#: every other call (the forward is bit-identical every time).
nondeterministic_backward_torch = _backward_implementation("nondeterministic", "torch")
nondeterministic_backward_torch.__name__ = "nondeterministic_backward_torch"
nondeterministic_backward_torch.__qualname__ = "nondeterministic_backward_torch"
nondeterministic_backward_torch.__doc__ = (
    "attnspec's attention with a hand-written backward that is one ulp off in every other "
    "call, declared deterministic.")
nondeterministic_backward_torch.attnspec_capabilities = {  # type: ignore[attr-defined]
    "backward": "autodiff", "deterministic": True, "exclude": list(_BACKWARD_EXCLUDE)}
deterministic_backward_torch = _backward_implementation(None, "torch")
deterministic_backward_torch.__name__ = "deterministic_backward_torch"
deterministic_backward_torch.__qualname__ = "deterministic_backward_torch"
deterministic_backward_torch.attnspec_capabilities = {  # type: ignore[attr-defined]
    "backward": "autodiff", "deterministic": True, "exclude": list(_BACKWARD_EXCLUDE)}


# -- the softmax family and multi-head attention -----------------------------------------------

#: softmax defect -> what it does wrong; each is ``softmax(x, axis=-1, where=None)``
#: declaring ``ops = ["softmax"]``
SOFTMAX_DEFECTS: dict[str, str] = {
    "softmax_no_max_subtraction": "exp(x) / sum(exp(x)) without subtracting the row max",
    "softmax_where_ignored": "where= has no effect",
    "softmax_nan_for_empty_rows": "an all -inf row gives NaN (as torch, JAX and SciPy do)",
    "softmax_nan_as_masked": "NaN entries are treated as -inf, hiding them",
    "softmax_half_accumulation": "float16 rows summed one term at a time in float16",
}


def _softmax(x: Any, axis: int, where: Any, defect: str | None) -> Any:
    x = np.asarray(x)
    dtype = x.dtype
    acc = np.float64 if dtype == np.float64 else np.float32
    s = x.astype(acc)
    if where is not None and defect != "softmax_where_ignored":
        s = np.where(where, s, -math.inf)
    if defect == "softmax_nan_as_masked":
        s = np.where(np.isnan(s), -math.inf, s)
    m = np.max(s, axis=axis, keepdims=True)
    m = np.where(np.isneginf(m), 0, m)
    if defect == "softmax_no_max_subtraction":
        m = np.zeros_like(m)
    e = np.exp(s - m)
    if defect == "softmax_half_accumulation" and dtype == np.float16:
        total = np.moveaxis(_half_sum(np.moveaxis(e, axis, -1)), -1, axis).astype(acc)
    else:
        total = np.sum(e, axis=axis, keepdims=True)
    if defect == "softmax_nan_for_empty_rows":
        return (e / total).astype(dtype)
    return (e / np.where(total == 0, 1, total)).astype(dtype)


def _softmax_implementation(defect: str) -> Any:
    def softmax(x: Any, axis: int = -1, where: Any = None) -> Any:
        with np.errstate(all="ignore"):
            return _softmax(x, axis, where, defect)

    softmax.__name__ = softmax.__qualname__ = defect
    softmax.__doc__ = f"softmax with one defect: {SOFTMAX_DEFECTS[defect]}."
    softmax.attnspec_capabilities = {"ops": ["softmax"]}  # type: ignore[attr-defined]
    return softmax


def mha_no_output_bias(query: Any, key: Any = None, value: Any = None, /,
                       **options: Any) -> Any:
    """attnspec's multi-head attention that forgets the output projection's bias ``b_o``."""
    options.pop("b_o", None)
    return attnspec.multi_head_attention(query, key, value, **options)


mha_no_output_bias.attnspec_capabilities = {"ops": ["mha"]}  # type: ignore[attr-defined]

BROKEN_SOFTMAX: dict[str, Any] = {d: _softmax_implementation(d) for d in SOFTMAX_DEFECTS}
globals().update(BROKEN_SOFTMAX)


# -- gradients of sinks and ALiBi slopes (grad_sinks, grad_alibi) -----------------------------


def sinks_detached(query: Any, key: Any, value: Any, /, **options: Any) -> Any:
    """attnspec on torch with the sinks (and ALiBi slopes) detached from autograd, as a
    kernel that keeps them in a buffer: dsinks and dalibi_slopes come back zero."""
    for name in ("sinks", "alibi_slopes"):
        if options.get(name) is not None:
            options[name] = options[name].detach()
    return attnspec.scaled_dot_product_attention(query, key, value, **options)


sinks_detached.attnspec_capabilities = {"backward": "autodiff"}  # type: ignore[attr-defined]
