"""The ``onnxruntime.gqa`` adapter (``com.microsoft.GroupQueryAttention`` on ONNX Runtime's
CPU provider): it passes the catalog within its declaration, the features it declares run,
the cases the operator does not take are "not applicable" with a reason, and the measured
differences from the spec stay measured (each pin fails when ONNX Runtime changes).

Skipped where onnxruntime (or onnx, which builds the model) is not installed.
"""

from __future__ import annotations

import builtins
import warnings

import numpy as np
import pytest

import attnspec
from attnspec.conformance.adapters import NATIVE, resolve
from attnspec.conformance.adapters import onnxruntime_gqa as gqa
from attnspec.conformance.cases import Case, make_inputs
from attnspec.conformance.catalog import catalog
from attnspec.conformance.golden import golden, naive
from attnspec.conformance.tolerance import grade

CASES = catalog()
NAME = "onnxruntime.gqa"


def _available():
    adapter = resolve(NAME)
    reason = adapter.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return adapter


def _case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


def _outcome(adapter, case: Case) -> str | None:
    """``None`` when the adapter passes the case, else what went wrong."""
    inputs = make_inputs(case)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if case.expect != "value":
            try:
                adapter.run(case, inputs)
            except getattr(builtins, case.expect):
                return None
            except Exception as exc:
                return f"raised {type(exc).__name__} ({exc}), expected {case.expect}"
            return f"did not raise {case.expect}"
        try:
            result = adapter.run(case, inputs)
        except Exception as exc:
            return f"raised {type(exc).__name__}: {exc}"
        verdict = grade(case, result.outputs, result.dtypes, golden(case, inputs),
                        naive(case, inputs))
    return None if verdict.passed else verdict.message


def _deviates(adapter, case: Case) -> str:
    """Run a case a declared deviation covers; what went wrong (it must fail)."""
    assert adapter.not_applicable(case) is None
    assert any(d.matches(case) for d in adapter.deviations), case.id
    message = _outcome(adapter, case)
    assert message is not None, f"{case.id} passed: the deviation is out of date"
    return message


def _raw(adapter, q, k, v, *, causal=True, seqlens_k=None, **attrs):
    """``out`` of the operator wired as the adapter wires it, without its applicability
    checks: to measure what the operator itself does with inputs the adapter refuses."""
    n, hq, lq, _ = q.shape
    lengths = np.full(n, k.shape[2])
    feeds = gqa._feeds(q, k, v, lengths, lq != k.shape[2], causal, None, None)
    if seqlens_k is not None:
        feeds["seqlens_k"] = np.asarray(seqlens_k, np.int32)
    attrs = {"num_heads": hq, "kv_num_heads": k.shape[1], "qk_output": 2,
             "causal": int(causal), **attrs}
    key = (str(q.dtype), tuple(sorted(feeds)), tuple(sorted(attrs.items())))
    out = adapter._session(key)(feeds)[0]
    return out.reshape(n, lq, hq, -1).transpose(0, 2, 1, 3).astype(np.float64)


def _qkv(rng, lq, lk, d=8, hq=4, hkv=2):
    def draw(h, length):
        return rng.standard_normal((2, h, length, d)).astype(np.float32)
    return draw(hq, lq), draw(hkv, lk), draw(hkv, lk)


# --------------------------------------------------------------- the catalog, graded


def test_registered():
    assert NATIVE[NAME] == "onnxruntime_gqa:OnnxruntimeGqaAdapter"


def test_no_failure_within_the_declaration():
    adapter = _available()
    ran, failures = [], []
    for case in CASES:
        if adapter.not_applicable(case) is not None:
            continue
        ran.append(case)
        message = _outcome(adapter, case)
        deviation = next((d for d in adapter.deviations if d.matches(case)), None)
        if message is not None and deviation is None:
            failures.append(f"{case.id}: {message}")
        elif message is None and deviation is not None:
            failures.append(f"{case.id}: passed, but declared as a deviation "
                            f"({deviation.reason})")
    assert not failures, f"{len(failures)} of {len(ran)} failed:\n" + "\n".join(failures)
    groups = {c.id.split("/", 1)[0] for c in ran}
    assert {"causal-upper-left", "causal-lower-right", "window", "sinks", "gqa", "mask",
            "bias", "softcap", "score", "shape", "weights", "kv-lengths", "poison-kv",
            "empty-rows", "poison-scores", "extreme", "accumulate", "consistency-split"
            } <= groups
    assert adapter.features <= set().union(*(c.features for c in ran))
    assert {"float32", "float16"} == {c.dtype for c in ran}


@pytest.mark.parametrize(("case_id", "reason"), [
    ("causal-upper-left/b2.h4x2.q6.k9.d16.alignment=upper_left.causal=True/float32",
     "bottom-right"),
    ("window/b2.h4x4.q9.k9.d16.alignment=upper_left.window=1_1/float32", "diagonal"),
    ("causal-lower-right-empty/b2.h4x2.q9.k6.d16.alignment=lower_right.causal=True/float32",
     "fewer keys than queries"),
    ("kv-lengths/b2.h4x2.q6.k9.d16.alignment=lower_right.causal=True.kv_lengths=5_1/float32",
     "fewer keys than queries"),
    ("kv-lengths/b2.h4x2.q6.k9.d16.kv_lengths=9_4/float32", "fewer keys than queries"),
    ("empty-rows/b2.h4x4.q9.k9.d16.kv_lengths=9_0/float32", "kv length of 0"),
    ("score/b2.h4x2.q6.k9.d3/float32", "multiples of 8"),
    ("shape/b2.h4x2.q6.k0.d16/float32", "empty_keys"),
    ("q-lengths/b2.h4x4.q6.k9.d16.alignment=lower_right.causal=True.kv_lengths=9_3"
     ".q_lengths=4_2/float32", "q_lengths"),
    ("alibi/b2.h4x4.q9.k9.d16.alibi=random.bias=random.mask=dense/float32", "alibi"),
    ("lse/b2.h4x2.q6.k9.d16/float64", "float64"),
])
def test_cases_the_operator_does_not_take(case_id, reason):
    # Decided from the declaration alone: no ONNX Runtime needed.
    assert reason in resolve(NAME).not_applicable(_case(case_id))


# ------------------------------------------------- measured differences stay measured


def test_pin_fully_masked_row_is_nan():
    adapter = _available()
    # a bool mask (a -inf bias to the op): NaN exactly in the empty rows, the others right
    case = _case("empty-rows/b2.h4x4.q9.k9.d16.mask=empty_rows/float32")
    assert "nan" in _deviates(adapter, case)
    inputs = make_inputs(case)
    out = adapter.run(case, inputs).outputs["out"]
    empty = ~np.broadcast_to(inputs["mask"], (2, 4, 9, 9)).any(-1)
    assert empty.any()
    assert np.isnan(out[empty]).all()
    np.testing.assert_allclose(out[~empty], golden(case, inputs)["out"][~empty], atol=1e-5)
    # a row of -inf bias: the same
    case = _case("empty-rows/b2.h4x4.q9.k9.d16.bias=row_neg_inf/float32")
    assert "nan" in _deviates(adapter, case)
    # with a sink the row has something in its denominator: 0, as the spec
    inputs = make_inputs(case)
    args = {**adapter.to_backend(case, inputs), "sinks": np.zeros(4, np.float32)}
    got = adapter.call(case, args)["out"]
    want = attnspec.scaled_dot_product_attention(
        *(inputs[n].astype(np.float64) for n in ("query", "key", "value")),
        bias=inputs["bias"], sinks=np.zeros(4))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_pin_masked_nan_leaks():
    adapter = _available()
    # NaN K/V rows behind a -inf bias column (the catalog's case): every entry NaN
    assert "nan" in _deviates(adapter, _case(
        "poison-scores/b2.h4x4.q9.k9.d16.bias=key_columns.poison=scores/float32"))
    # NaN in the value row of the last key, which causal masking hides from rows 0..7:
    # every row turns NaN (weight 0 times NaN); the spec keeps rows 0..7 finite.
    case = _case("causal-upper-left/b2.h4x4.q9.k9.d16.alignment=upper_left.causal=True"
                 "/float32")
    args = adapter.to_backend(case, make_inputs(case))
    args["value"][..., -1, :] = np.nan
    assert np.isnan(adapter.call(case, args)["out"]).all()
    # the same behind a window (key 0 is outside the window of every row but rows 0..2)
    args = {**adapter.to_backend(case, make_inputs(case)), "causal": None, "window": (2, 0)}
    args["value"][..., 0, :] = np.nan
    assert np.isnan(adapter.call(case, args)["out"]).all()
    # a NaN *key* row behind the causal mask stays out: only the last row (which attends it)
    args = adapter.to_backend(case, make_inputs(case))
    args["key"][..., -1, :] = np.nan
    out = adapter.call(case, args)["out"]
    assert np.isnan(out[..., -1, :]).all()
    assert np.isfinite(out[..., :-1, :]).all()


def test_kv_padding_stays_out():
    """NaN/inf in K/V past kv_lengths (in the cache the adapter hands the op) never reach the
    output (ATT-LEAK-2 holds where the op takes the lengths)."""
    adapter = _available()
    case = _case("causal-lower-right/b2.h8x1.q1.k257.d64.alignment=lower_right.causal=True"
                 ".kv_lengths=257_85/float32")
    inputs = make_inputs(case)
    clean = adapter.run(case, inputs).outputs["out"]
    args = adapter.to_backend(case, inputs)
    args["key"][1, :, 85:] = np.nan
    args["value"][1, :, 85:] = np.inf
    np.testing.assert_array_equal(adapter.call(case, args)["out"], clean)


def test_fingerprint():
    from attnspec.conformance.fingerprint import fingerprint

    answers = fingerprint(_available())
    assert answers["causal_alignment"] == "lower_right"
    assert answers["mask_polarity"] == "keep"
    assert answers["gqa_mapping"] == "contiguous"
    assert answers["softcap_order"] == "before_bias_and_mask"
    assert answers["low_precision_accumulation"] == "float32"
    # the two declared deviations, as the fingerprint sees them
    assert answers["fully_masked_row"] == "nan"
    assert answers["masked_value_leak"] == "nan"


def test_pin_invalid_arguments_raise_onnxruntime_errors():
    adapter = _available()
    assert "expected ValueError" in _deviates(
        adapter, _case("arg-errors/b2.h4x2.q6.k9.d16.error=head_dim_mismatch/float32"))
    assert "expected TypeError" in _deviates(
        adapter, _case("dtype-errors/b2.h4x4.q9.k9.d16.error=mixed_dtypes/float32"))


def test_pin_the_operator_itself(rng):
    """What the not-applicable reasons rest on, measured on the operator directly."""
    adapter = _available()
    # causal=1 with a cache puts the diagonal bottom-right: no upper-left for Lq < Lk
    q, k, v = _qkv(rng, 3, 7)
    out = _raw(adapter, q, k, v)
    lower_right = attnspec.scaled_dot_product_attention(
        *(x.astype(np.float64) for x in (q, k, v)), causal=True, alignment="lower_right")
    upper_left = attnspec.scaled_dot_product_attention(
        *(x.astype(np.float64) for x in (q, k, v)), causal=True)
    np.testing.assert_allclose(out, lower_right, atol=1e-5)
    assert np.abs(out - upper_left).max() > 0.1
    # local_window_size counts the keys kept, the query's own included: left + 1
    q, k, v = _qkv(rng, 6, 6)
    ref = [x.astype(np.float64) for x in (q, k, v)]
    np.testing.assert_allclose(_raw(adapter, q, k, v, local_window_size=3),
                               attnspec.scaled_dot_product_attention(
                                   *ref, causal=True, window=(2, 0)), atol=1e-5)
    # without a cache, the rows past a shorter seqlens_k + 1 (documented "unspecified") are
    # the spec's: declared; with a window they are not: not applicable
    lengths = np.array([6, 2])
    for window in (None, 2):
        attrs = {} if window is None else {"local_window_size": window + 1}
        out = _raw(adapter, q, k, v, seqlens_k=lengths - 1, **attrs)
        want = attnspec.scaled_dot_product_attention(*ref, causal=True, kv_lengths=lengths,
                                                     window=window and (window, 0))
        rows_past = np.abs(out - want)[1, :, 2:].max()
        assert np.abs(out - want)[:, :, :2].max() < 1e-5
        assert rows_past < 1e-5 if window is None else rows_past > 0.1
    # a key length of 0 and a head dim that is not a multiple of 8 are refused
    with pytest.raises(Exception, match="out of range"):
        _raw(adapter, q, k, v, seqlens_k=[5, -1])
    q, k, v = _qkv(rng, 6, 6, d=12)
    with pytest.raises(Exception, match="multiple of 8"):
        _raw(adapter, q, k, v)
