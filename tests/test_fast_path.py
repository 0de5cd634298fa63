"""Repeated plain calls (attnspec/_fast.py): the second call of a combination skips the
checks, so these tests check that nothing a check would have caught gets through, that the
results are the checked path's, and that a plan keeps no array alive."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from reference import ref_attention

import attnspec
from attnspec import _fast


def _fresh(xb, rng, shape=(2, 3, 5, 4), dtype="float64"):
    return tuple(xb.from_numpy(rng.standard_normal(shape), dtype) for _ in range(3))


@pytest.mark.parametrize("options", [{}, {"causal": True}, {"scale": 0.3},
                                     {"return_lse": True},
                                     {"causal": True, "alignment": "lower_right"}])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_planned_call_gives_the_checked_result(xb, rng, options, dtype):
    """ATT-SCORE-1: the second call of a combination (planned) returns what the checked path
    returns for the same arrays, bit for bit (an explicit xp= never takes the plan); the
    plan multiplies q by a 0-d scale array where the checked path uses the Python float."""
    _fast._PLANS.clear()
    q, k, v = _fresh(xb, rng, dtype=dtype)
    first = attnspec.scaled_dot_product_attention(q, k, v, **options)
    q2, k2, v2 = _fresh(xb, rng, dtype=dtype)
    planned = attnspec.scaled_dot_product_attention(q2, k2, v2, **options)
    checked = attnspec.scaled_dot_product_attention(q2, k2, v2, xp=xb.namespace(), **options)
    for got, want in zip(*(x if isinstance(x, tuple) else (x,) for x in (planned, checked)),
                         strict=True):
        np.testing.assert_array_equal(xb.to_numpy(got), xb.to_numpy(want))
    assert first is not None


@pytest.mark.parametrize(("good", "bad", "error"), [
    ({"causal": True}, {"causal": 1}, TypeError),
    ({"scale": 0.5}, {"scale": -0.5}, ValueError),
    ({"scale": 0.5}, {"scale": float("nan")}, ValueError),
    ({"alignment": "lower_right"}, {"alignment": "lower-right"}, ValueError),
    ({"chunk_size": 2}, {"chunk_size": -2}, ValueError),
])
def test_a_plan_never_passes_a_bad_option(rng, good, bad, error):
    """A combination that passed its checks does not make a bad value of the same option
    pass: the value and its type are part of the plan's key."""
    q, k, v = (rng.standard_normal((1, 2, 3, 4)) for _ in range(3))
    for _ in range(2):
        attnspec.scaled_dot_product_attention(q, k, v, **good)
    with pytest.raises(error):
        attnspec.scaled_dot_product_attention(q, k, v, **bad)


def test_a_plan_never_passes_bad_arrays(rng):
    """Shapes, dtypes and array types are part of the key: a mismatch after a planned call
    still raises the checked path's error."""
    q, k, v = (rng.standard_normal((1, 2, 3, 4)) for _ in range(3))
    for _ in range(2):
        attnspec.scaled_dot_product_attention(q, k, v)
    with pytest.raises(TypeError, match="share one dtype"):
        attnspec.scaled_dot_product_attention(q, k.astype(np.float32), v)
    with pytest.raises(ValueError, match="head_dim"):
        attnspec.scaled_dot_product_attention(q, k[..., :3], v)
    with pytest.raises(TypeError):
        attnspec.scaled_dot_product_attention(q, k.tolist(), v)


def test_a_plan_holds_no_array(rng):
    """The plan of a call keeps none of its arrays alive (a decode loop would otherwise pin
    the first token's cache)."""
    _fast._PLANS.clear()
    q, k, v = (rng.standard_normal((1, 2, 3, 4)) for _ in range(3))
    refs = [weakref.ref(x) for x in (q, k, v)]
    attnspec.scaled_dot_product_attention(q, k, v)
    assert _fast._PLANS, "the plain call left no plan"
    del q, k, v
    gc.collect()
    assert all(r() is None for r in refs)


def test_plans_are_bounded(rng):
    _fast._PLANS.clear()
    q = rng.standard_normal((1, 1, 2, 4))
    for n in range(_fast.MAX_PLANS + 10):
        attnspec.scaled_dot_product_attention(q, q, q, scale=1.0 / (n + 2))
    assert 0 < len(_fast._PLANS) <= _fast.MAX_PLANS


def test_options_outside_the_plan_take_the_checked_path(rng):
    """Any option beyond the plan's five (a mask here) is checked on every call."""
    q = rng.standard_normal((1, 2, 3, 4))
    for _ in range(2):
        attnspec.scaled_dot_product_attention(q, q, q)
    with pytest.raises(TypeError, match="mask"):
        attnspec.scaled_dot_product_attention(q, q, q, mask=np.ones((3, 3)))


@pytest.mark.parametrize("option", ["xp", "mask", "bias", "softcap", "sinks", "alibi_slopes",
                                    "q_positions", "kv_positions", "q_segment_ids",
                                    "kv_segment_ids", "score_mod", "mask_mod", "block_table",
                                    "kv_lengths", "q_lengths", "dropout_mask", "window"])
def test_every_option_outside_the_plan_is_seen(rng, option, monkeypatch):
    """A plan made by a plain call is not used by a call that sets any other option, the
    last one of the list too: the plan is never asked for."""
    q = rng.standard_normal((1, 2, 4, 4))
    attnspec.scaled_dot_product_attention(q, q, q)
    asked = []
    monkeypatch.setattr(_fast, "lookup", lambda key: asked.append(key))
    values = {"xp": np, "mask": np.ones((4, 4), bool), "bias": np.zeros((4, 4)),
              "softcap": 30.0, "sinks": np.zeros(2), "alibi_slopes": np.ones(2),
              "q_positions": np.arange(4), "kv_positions": np.arange(4),
              "q_segment_ids": np.zeros(4, np.int64), "kv_segment_ids": np.zeros(4, np.int64),
              "score_mod": lambda s, b, h, i, j: s, "mask_mod": lambda b, h, i, j: i >= 0,
              "kv_lengths": 4, "q_lengths": 4, "dropout_mask": np.ones((4, 4), bool),
              "window": (1, 1)}
    if option == "block_table":
        pool = rng.standard_normal((2, 2, 2, 4))
        attnspec.scaled_dot_product_attention(q, pool, pool, block_table=np.array([[0, 1]]),
                                              kv_lengths=4)
    else:
        extra = {"dropout_p": 0.5} if option == "dropout_mask" else {}
        if option.endswith("segment_ids"):  # given in pairs; the other is the one seen last
            other = "kv_segment_ids" if option.startswith("q") else "q_segment_ids"
            extra = {other: values[other]}
        attnspec.scaled_dot_product_attention(q, q, q, **{option: values[option]}, **extra)
    assert asked == []


@pytest.mark.parametrize(("option", "value", "error", "words"), [
    ("dropout_p", np.zeros(2), TypeError, "dropout_p must be a float"),
    ("implementation", np.zeros(2), ValueError, "implementation must be one of"),
    ("return_weights", np.zeros(2), TypeError, "return_weights"),
])
def test_array_valued_flags_get_the_checks_message(rng, option, value, error, words):
    """An array where a plain value belongs never reaches an ``==`` of the plan test (which
    would raise NumPy's 'truth value is ambiguous'): the checks name the argument."""
    q = rng.standard_normal((1, 2, 3, 4))
    with pytest.raises(error, match=words):
        attnspec.scaled_dot_product_attention(q, q, q, **{option: value})


class _CountingKernel:
    """A native kernel for NumPy arrays that records its calls (and computes via attnspec)."""

    name = "test.counting"
    exact = True

    def __init__(self):
        self.calls = []

    def handles(self, xp):
        return "numpy" in xp.__name__

    def decline(self, call):
        return None

    def __call__(self, call):
        self.calls.append(call)
        return attnspec.scaled_dot_product_attention(call.query, call.key, call.value,
                                                     causal=call.causal, scale=call.scale)


def test_a_native_plan_runs_the_kernel_on_the_new_arrays(rng, monkeypatch):
    """A plain call that a native kernel took keeps the kernel as its plan: the next call
    runs it on its own arrays (not the first call's), with the checked call's options."""
    from attnspec import native

    monkeypatch.setattr(native, "_registered", [])
    monkeypatch.setattr(native, "_loaded", True)
    kernel = _CountingKernel()
    native.register(kernel)
    q, k, v = (rng.standard_normal((1, 2, 4, 8)) for _ in range(3))
    attnspec.scaled_dot_product_attention(q, k, v, causal=True, implementation="native")
    assert _fast._PLANS, "the native call left no plan"
    q2, k2, v2 = (rng.standard_normal((1, 2, 4, 8)) for _ in range(3))
    got = attnspec.scaled_dot_product_attention(q2, k2, v2, causal=True,
                                                implementation="native")
    assert len(kernel.calls) == 2
    assert kernel.calls[1].query is q2
    assert kernel.calls[1].causal is True
    want = attnspec.scaled_dot_product_attention(q2, k2, v2, causal=True)
    np.testing.assert_array_equal(got, want)


def test_registering_a_kernel_forgets_the_plans(rng, monkeypatch):
    """A plan made before a kernel was registered would keep 'auto' on the portable path."""
    from attnspec import native

    monkeypatch.setattr(native, "_registered", [])
    monkeypatch.setattr(native, "_loaded", True)
    q = rng.standard_normal((1, 1, 2, 4))
    attnspec.scaled_dot_product_attention(q, q, q, implementation="auto")
    kernel = _CountingKernel()
    native.register(kernel)
    attnspec.scaled_dot_product_attention(q, q, q, implementation="auto")
    assert len(kernel.calls) == 1


def test_native_without_a_kernel_raises_every_time(rng):
    """No plan is made for a call that no kernel takes: every 'native' call says why."""
    q = rng.standard_normal((1, 1, 2, 4))
    for _ in range(2):
        with pytest.raises(ValueError, match="no native kernel takes this call"):
            attnspec.scaled_dot_product_attention(q, q, q, implementation="native")


def test_a_native_plan_holds_no_array(rng, monkeypatch):
    from attnspec import native

    monkeypatch.setattr(native, "_registered", [])
    monkeypatch.setattr(native, "_loaded", True)
    kernel = _CountingKernel()
    native.register(kernel)
    q, k, v = (rng.standard_normal((1, 2, 3, 4)) for _ in range(3))
    refs = [weakref.ref(x) for x in (q, k, v)]
    attnspec.scaled_dot_product_attention(q, k, v, implementation="native")
    assert len(kernel.calls) == 1
    kernel.calls.clear()  # the test's own record; the plan must hold nothing else
    del q, k, v
    gc.collect()
    assert all(r() is None for r in refs)


def test_a_plan_keeps_the_band_cut_of_its_keys(xb, rng):
    """Causal with more keys than queries (upper_left): keys 4-11 are masked for every row,
    so the checked call reads keys 0-3 only, and so does the plan; its result is the checked
    path's bit for bit, and the float64 reference's."""
    _fast._PLANS.clear()
    q = xb.from_numpy(rng.standard_normal((2, 3, 4, 8)))
    k, v = (xb.from_numpy(rng.standard_normal((2, 3, 12, 8))) for _ in range(2))
    first = attnspec.scaled_dot_product_attention(q, k, v, causal=True)
    planned = attnspec.scaled_dot_product_attention(q, k, v, causal=True)
    checked = attnspec.scaled_dot_product_attention(q, k, v, causal=True, xp=xb.namespace())
    np.testing.assert_array_equal(xb.to_numpy(planned), xb.to_numpy(checked))
    want = ref_attention(*(xb.to_numpy(x) for x in (q, k, v)), causal=True)[0]
    np.testing.assert_allclose(xb.to_numpy(first), want, rtol=1e-12, atol=1e-12)
    plans = list(_fast._PLANS.values())
    if plans:  # eager host arrays only
        assert [plan.cols for plan in plans] == [(0, 4)]
