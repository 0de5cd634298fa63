"""Extreme logits and non-finite values: overflow, domination, poison at masked positions.

Float64 goldens come from ``tests/reference.py`` where a golden is needed; otherwise the
expected value is a closed form (a V row, a mean, NaN, +-inf).

Tests that feed deliberate overflow or infinities ignore NumPy's "overflow / invalid value
encountered" RuntimeWarnings (pyproject turns RuntimeWarnings from attnspec into errors): they
are the IEEE flags of exactly the operations under test (``-max - max``, ``inf - inf``), and the
spec constrains the values, which the tests check.
"""

from __future__ import annotations

import numpy as np
import pytest
from attn_helpers import as64, exact_in, need_dtype, sdpa
from reference import ref_attention, ref_log_softmax, ref_logsumexp, ref_softmax

import attnspec

DTYPES = ["float64", "float32"]
IEEE_FLAGS = pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)
TOL = {"float64": {"rtol": 1e-12, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-5}}


def _run(xb, dtype, q, k, v, **opts):
    return tuple(as64(xb, r) for r in sdpa(xb, dtype, q, k, v, **opts))


def _ref(dtype, q, k, v, **opts):
    if "bias" in opts:
        opts["bias"] = exact_in(opts["bias"], dtype)
    return ref_attention(q, k, v, **opts)


def _close(got, expected, dtype, what=""):
    for name, g, e in zip(("out", "lse", "weights"), got, expected, strict=True):
        np.testing.assert_allclose(g, e, err_msg=f"{what} {name}", **TOL[dtype])


def _canon(rng, dtype, lq=3, lk=5):
    """The shape the value tests use (eager JAX compiles once per shape)."""
    q = exact_in(rng.standard_normal((2, 4, lq, 3)), dtype)
    k = exact_in(rng.standard_normal((2, 2, lk, 3)), dtype)
    v = exact_in(rng.standard_normal((2, 2, lk, 2)), dtype)
    return q, k, v


def _big(dtype):
    """A value whose square overflows ``dtype`` while the value itself is comfortably finite."""
    return 4 * float(np.sqrt(np.finfo(dtype).max))


# ---------------------------------------------------------------- large but finite logits


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_up_to_1e4(xb, rng, dtype):
    """ATT-SCORE-1, ATT-BOUND-1: scales up to 1e4 give finite, bounded, accurate rows."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    mask = rng.random((3, 5)) < 0.7
    mask[:, 0] = True
    qk = np.abs(q) @ np.repeat(np.abs(k), 2, axis=-3).swapaxes(-1, -2)
    for scale in (1e2, 1e3, 1e4):
        got = _run(xb, dtype, q, k, v, scale=scale, mask=mask)
        expected = ref_attention(q, k, v, scale=scale, mask=mask)
        for g in got:
            assert not np.isnan(g).any()
        assert np.isfinite(got[1]).all()
        # A logit is rounded to ~eps * scale * sum|q||k|; the weights inherit about twice that.
        delta = 8 * np.finfo(dtype).eps * scale * qk.max()
        atol = 2 * delta * np.abs(v).max() + TOL[dtype]["atol"]
        np.testing.assert_allclose(got[0], expected[0], rtol=0, atol=atol)
        np.testing.assert_allclose(got[1], expected[1], rtol=TOL[dtype]["rtol"], atol=delta)
        vmax = np.abs(v).max()
        assert np.all(np.abs(got[0]) <= vmax * (1 + 1e-6))


@IEEE_FLAGS
@pytest.mark.parametrize("dtype", DTYPES)
def test_logits_near_dtype_max(xb, dtype):
    """ATT-LSE-1, ATT-PROP-1, ATT-PROP-2: scores just below the dtype's max stay finite: the
    largest key wins outright and ties average; lse is the (finite) max."""
    need_dtype(xb, dtype, sweep=True)
    top = float(np.finfo(dtype).max)
    a = float(exact_in(np.sqrt(top) * 0.9, dtype))  # a * a ~ 0.81 * max: finite
    q = np.full((1, 2, 1), a)
    k = np.array([[[1.0], [0.5], [0.99], [-1.0]]]) * a  # (1, 4, 1)
    k = exact_in(k, dtype)
    v = np.arange(8.0).reshape(1, 4, 2)
    out, lse, w = _run(xb, dtype, q, k, v, scale=1.0)
    np.testing.assert_allclose(out, np.broadcast_to(v[:, :1], out.shape), **TOL[dtype])
    np.testing.assert_allclose(lse, a * a, rtol=1e-6)
    assert np.isfinite(lse).all()
    np.testing.assert_array_equal(w[..., 1:], 0.0)
    # Four equal scores near the max: the mean, and lse = max + log 4 (== max after rounding).
    k_tied = np.full((1, 4, 1), a)
    out, lse, w = _run(xb, dtype, q, k_tied, v, scale=1.0)
    np.testing.assert_allclose(
        out, np.broadcast_to(v.mean(1, keepdims=True), out.shape), **TOL[dtype]
    )
    np.testing.assert_allclose(w, 0.25, **TOL[dtype])
    assert np.isfinite(lse).all()
    np.testing.assert_allclose(lse, a * a + np.log(4), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_dominant_logit(xb, rng, dtype):
    """ATT-PROP-1, ATT-BIAS-1: one logit 1e4 above the rest takes all the weight."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    idx = rng.integers(0, 5, size=(2, 4, 3))
    bias = np.where(np.arange(5) == idx[..., None], 1e4, 0.0)
    out, lse, w = _run(xb, dtype, q, k, v, bias=bias)
    expected = np.take_along_axis(np.repeat(v, 2, axis=-3), idx[..., None], axis=-2)
    np.testing.assert_allclose(out, expected, **TOL[dtype])
    np.testing.assert_allclose(w, (np.arange(5) == idx[..., None]).astype(float), **TOL[dtype])
    assert np.all(np.abs(lse - 1e4) < 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_logits_equal_after_huge_shift(xb, rng, dtype):
    """ATT-PROP-2, ATT-PROP-4: a 1e30 bias swamps q.k, so every logit is equal: out is the
    mean of the attended V rows and lse is finite (~1e30)."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    mask = rng.random((2, 4, 3, 5)) < 0.6
    mask[..., 1] = True
    bias = np.full((3, 5), 1e30)
    out, lse, w = _run(xb, dtype, q, k, v, bias=bias, mask=mask)
    count = mask.sum(-1)
    vr = np.repeat(v, 2, axis=-3)
    expected = (mask[..., None] * vr[..., None, :, :]).sum(-2) / count[..., None]
    np.testing.assert_allclose(out, expected, **TOL[dtype])
    np.testing.assert_allclose(w, mask / count[..., None], **TOL[dtype])
    np.testing.assert_allclose(lse, 1e30, rtol=1e-6)


@pytest.mark.needs("float16")
def test_float16_scores_computed_in_float32(xb):
    """ATT-DTYPE-2: float16 q.k that would overflow float16 (~1.6e5 > 65504) is accumulated in
    float32, so out and lse stay finite and match the float64 golden."""
    q = np.full((1, 2, 4), 200.0)
    steps = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [2, 1, 1, 0], [-1, 0, 0, 0]])
    k = (200.0 + 0.125 * steps)[None]  # exact in float16
    v = exact_in(np.linspace(-1, 1, 10).reshape(1, 5, 2), "float16")
    for scale in (1 / 64, 1.0):
        out, lse, w = (xb.to_numpy(r) for r in sdpa(xb, "float16", q, k, v, scale=scale))
        expected = ref_attention(q, k, v, scale=scale)
        assert np.isfinite(out).all()
        assert np.isfinite(lse).all()
        assert np.isfinite(w).all()
        np.testing.assert_allclose(out, expected[0], rtol=0, atol=2e-3)
        np.testing.assert_allclose(lse, expected[1], rtol=1e-6)
        np.testing.assert_allclose(w, expected[2], rtol=0, atol=2e-3)


# ---------------------------------------------------------------- non-finite at attended keys


@IEEE_FLAGS
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_pos_inf_and_nan_attended(xb, rng, dtype):
    """ATT-NAN-1, ATT-BIAS-1: +inf bias at an attended key -> that row's out is NaN and lse
    +inf; NaN bias at an attended key -> out and lse NaN; other rows are untouched."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    bias = rng.standard_normal((2, 4, 3, 5))
    bias[0, 1, 2, 3] = np.inf
    bias[1, 0, 0, 1] = np.nan
    bias[1, 3, 1, :] = -np.inf
    bias[1, 3, 1, 2] = np.inf  # the only attended key is +inf
    out, lse, w = _run(xb, dtype, q, k, v, bias=bias)
    assert np.isnan(out[0, 1, 2]).all()
    assert lse[0, 1, 2] == np.inf
    assert np.isnan(out[1, 0, 0]).all()
    assert np.isnan(lse[1, 0, 0])
    assert np.isnan(out[1, 3, 1]).all()
    assert lse[1, 3, 1] == np.inf
    poisoned = np.zeros((2, 4, 3), bool)
    poisoned[0, 1, 2] = poisoned[1, 0, 0] = poisoned[1, 3, 1] = True
    expected = _ref(dtype, q, k, v, bias=bias)
    np.testing.assert_allclose(out[~poisoned], expected[0][~poisoned], **TOL[dtype])
    np.testing.assert_allclose(lse[~poisoned], expected[1][~poisoned], **TOL[dtype])
    np.testing.assert_allclose(w[~poisoned], expected[2][~poisoned], **TOL[dtype])


@IEEE_FLAGS
@pytest.mark.parametrize("dtype", DTYPES)
def test_overflowing_attended_score_gives_nan_row(xb, dtype):
    """ATT-NAN-1: q.k overflowing to +inf at an attended key -> out NaN, lse +inf for that row
    only; a row that masks the key is unaffected [ATT-LEAK-1]."""
    need_dtype(xb, dtype, sweep=True)
    big = _big(dtype)
    q = np.array([[[big], [1.0], [-big]]])  # (1, 3, 1)
    k = np.array([[[big], [1.0], [2.0]]])
    v = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    mask = np.array([[True, True, True], [False, True, True], [True, True, True]])
    out, lse, _ = _run(xb, dtype, q, k, v, mask=mask, scale=1.0)
    assert np.isnan(out[0, 0]).all()
    assert lse[0, 0] == np.inf
    expected = ref_attention(q, k, v, mask=mask, scale=1.0)
    np.testing.assert_allclose(out[0, 1], expected[0][0, 1], **TOL[dtype])
    np.testing.assert_allclose(lse[0, 1], expected[1][0, 1], **TOL[dtype])
    # Row 2's score for key 0 is -big * big = -inf: no mass there, the other keys share it.
    np.testing.assert_allclose(out[0, 2], expected[0][0, 2], **TOL[dtype])
    assert np.isfinite(lse[0, 2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_attended_propagates(xb, rng, dtype):
    """ATT-NAN-1, ATT-LEAK-1: a NaN query row makes that row NaN; a NaN key row makes NaN
    exactly the rows that attend it (causal rows i >= j), and no others."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype, lq=4, lk=4)
    q[0, 1, 2] = np.nan
    k[1, 0, 2] = np.nan  # kv head 0 of batch 1 -> query heads 0 and 1
    out, lse, w = _run(xb, dtype, q, k, v, causal=True)
    nan_rows = np.zeros((2, 4, 4), bool)
    nan_rows[0, 1, 2] = True
    nan_rows[1, :2, 2:] = True
    assert np.isnan(out[nan_rows]).all()
    assert np.isnan(lse[nan_rows]).all()
    assert not np.isnan(out[~nan_rows]).any()
    assert not np.isnan(w[~nan_rows]).any()
    expected = ref_attention(q, k, v, causal=True)
    np.testing.assert_allclose(out[~nan_rows], expected[0][~nan_rows], **TOL[dtype])
    np.testing.assert_allclose(lse[~nan_rows], expected[1][~nan_rows], **TOL[dtype])


# ---------------------------------------------------------------- poison at masked positions


def _assert_clean(got, expected, dtype, what):
    for g in got:
        assert not np.isnan(g).any(), what
    assert not np.isinf(got[0]).any(), what
    _close(got, expected, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf, 3e37])
def test_poisoned_bias_at_masked_positions(xb, rng, dtype, poison):
    """ATT-LEAK-1: NaN/+-inf bias at positions masked by mask, causal, window, kv_lengths and
    q_lengths never reaches out, lse or weights."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    base = rng.standard_normal((2, 4, 3, 5))
    lq, lk = 3, 5
    i, j = np.arange(lq)[:, None], np.arange(lk)[None, :]
    mask = rng.random((2, 4, 3, 5)) < 0.7
    kv_lengths, q_lengths = np.array([3, 5]), np.array([3, 2])
    cases = {
        "mask": ({"mask": mask}, ~mask),
        "causal": ({"causal": True}, np.broadcast_to(j > i, base.shape)),
        "causal-lower-right": (
            {"causal": True, "alignment": "lower_right"},
            np.broadcast_to(j > i + lk - lq, base.shape),
        ),
        "window": ({"window": (1, 0)}, np.broadcast_to((j > i) | (j < i - 1), base.shape)),
        "kv_lengths": (
            {"kv_lengths": kv_lengths},
            np.broadcast_to(j >= kv_lengths[:, None, None, None], base.shape),
        ),
        "q_lengths": (
            {"q_lengths": q_lengths},
            np.broadcast_to(i >= q_lengths[:, None, None, None], base.shape),
        ),
    }
    for name, (opts, masked) in cases.items():
        bias = np.where(masked, poison, base)
        got = _run(xb, dtype, q, k, v, bias=bias, **opts)
        expected = _ref(dtype, q, k, v, bias=np.where(masked, 0.0, base), **opts)
        _assert_clean(got, expected, dtype, f"{name} poison={poison}")


@IEEE_FLAGS
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("poison", [np.nan, "overflow"])
def test_poisoned_scores_at_masked_positions(xb, rng, dtype, poison):
    """ATT-LEAK-1, ATT-BIAS-1: NaN or overflowing (+-inf) q.k at positions masked by mask,
    a -inf bias, causal, window, kv_lengths or q_lengths never reaches any output."""
    need_dtype(xb, dtype, sweep=True)
    big = _big(dtype)
    lq, lk = 4, 4
    rng_q = rng.standard_normal((1, 1, lq, 2))
    rng_k = rng.standard_normal((1, 1, lk, 2))
    v = rng.standard_normal((1, 1, lk, 2))

    def poisoned(qi, kj):
        """q, k whose score is poisoned exactly at (row qi, key kj) and its row/column."""
        q, k = rng_q.copy(), rng_k.copy()
        if poison == "overflow":
            q[..., qi, :] = [big, -big]
            k[..., kj, :] = [big, big]  # q_qi . k_kj = big^2 - big^2 overflows to inf - inf
        else:
            q[..., qi, :] = np.nan
            k[..., kj, :] = np.nan
        return exact_in(q, dtype), exact_in(k, dtype)

    # For each mechanism: the poisoned query row and key column are fully masked from
    # each other and from every other row/key, so nothing poisoned is ever attended.
    mask = np.ones((lq, lk), bool)
    mask[0, :] = False
    mask[:, 3] = False
    bias = np.where(mask, 0.0, -np.inf)
    cases = {
        "mask": (0, 3, {"mask": mask}),
        "bias-inf": (0, 3, {"bias": bias}),
        "kv_lengths+q_lengths": (3, 3, {"kv_lengths": np.array([3]), "q_lengths": np.array([3])}),
    }
    for name, (qi, kj, opts) in cases.items():
        q, k = poisoned(qi, kj)
        got = _run(xb, dtype, q, k, v, **opts)
        expected = _ref(dtype, q, k, v, **opts)
        _assert_clean(got, expected, dtype, f"{name} poison={poison}")
        assert np.all(got[0][..., qi, :] == 0)
    # Causal / window: only the overflow variant can poison q.k at masked positions alone
    # (a NaN row would also poison the row's attended keys).
    if poison == "overflow":
        q, k = exact_in(rng_q.copy(), dtype), exact_in(rng_k.copy(), dtype)
        q[..., 0, :] = [big, 0.0]  # row 0 attends only key 0 under causal / window (0, 0)
        k[..., 3, :] = [big, 0.0]  # q_0 . k_3 = big^2 = inf, at a causally masked position
        k[..., 0, :] = [1.0, 0.0]
        for opts in ({"causal": True}, {"window": (0, 0)}, {"window": (2, 0)}):
            got = _run(xb, dtype, q, k, v, **opts)
            expected = _ref(dtype, q, k, v, **opts)
            _assert_clean(got, expected, dtype, f"{opts}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf, 3e37])
def test_poisoned_kv_beyond_kv_lengths(xb, rng, dtype, poison):
    """ATT-LEAK-2, ATT-LEN-1: NaN/+-inf in K and V rows at j >= kv_lengths[b] (unused KV-cache
    slots) never reach out, lse or weights; nor do huge finite values (3e37: their scores
    overflow, which eager host arrays leave unzeroed: masked scores, exact zero weights)."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    kv_lengths = np.array([2, 4])
    k_bad, v_bad = k.copy(), v.copy()
    for b, n in enumerate(kv_lengths):
        k_bad[b, :, n:] = poison
        v_bad[b, :, n:] = poison
    for opts in ({}, {"causal": True, "alignment": "lower_right"}, {"q_lengths": np.array([1, 3])}):
        got = _run(xb, dtype, q, k_bad, v_bad, kv_lengths=kv_lengths, **opts)
        expected = _ref(dtype, q, k, v, kv_lengths=kv_lengths, **opts)
        _assert_clean(got, expected, dtype, f"{opts} poison={poison}")


@pytest.mark.needs("autograd")
def test_poisoned_kv_beyond_kv_lengths_gradient(xb, rng):
    """ATT-LEAK-2: the gradient with respect to query stays finite with NaN K/V in unused
    KV-cache slots."""
    q, k, v = _canon(rng, "float32")
    kv_lengths = np.array([2, 4])
    for b, n in enumerate(kv_lengths):
        k[b, :, n:] = np.nan
        v[b, :, n:] = np.inf
    lengths = xb.from_numpy(kv_lengths)
    if xb.framework == "torch":
        qa = xb.from_numpy(q, dtype="float32").requires_grad_(True)
        ka, va = (xb.from_numpy(a, dtype="float32") for a in (k, v))
        out = attnspec.scaled_dot_product_attention(qa, ka, va, kv_lengths=lengths)
        (out * out).sum().backward()
        grad = xb.to_numpy(qa.grad)
    elif xb.framework == "jax":
        import jax

        ka, va = (xb.from_numpy(a, dtype="float32") for a in (k, v))

        def loss(qa):
            out = attnspec.scaled_dot_product_attention(qa, ka, va, kv_lengths=lengths)
            return (out * out).sum()

        grad = np.asarray(jax.grad(loss)(xb.from_numpy(q, dtype="float32")))
    else:
        pytest.skip(f"{xb.name}: no gradient recipe for framework {xb.framework}")
    assert np.isfinite(grad).all()


# ---------------------------------------------------------------- softmax family


def _smx(xb, dtype, x, where=None, axis=-1):
    xa = xb.from_numpy(x, dtype=dtype)
    kw = {} if where is None else {"where": xb.from_numpy(where)}
    return (
        as64(xb, attnspec.softmax(xa, axis=axis, **kw)),
        as64(xb, attnspec.log_softmax(xa, axis=axis, **kw)),
        as64(xb, attnspec.logsumexp(xa, axis=axis, **kw)),
    )


def _smx_ref(dtype, x, where=None, axis=-1):
    """The float64 oracle rounded to ``dtype`` (overflow to +-inf included)."""
    with np.errstate(over="ignore"):
        return tuple(
            f(x, axis=axis, where=where).astype(dtype).astype(np.float64)
            for f in (ref_softmax, ref_log_softmax, ref_logsumexp)
        )


@IEEE_FLAGS
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_extreme_finite_values(xb, dtype):
    """SMX-1, SMX-3: values near +-max, huge spreads and -inf entries stay finite and exact;
    a row of all -inf is empty (0, -inf, -inf)."""
    need_dtype(xb, dtype, sweep=True)
    top = float(np.finfo(dtype).max)
    x = np.array(
        [
            [top, top, -top, 0.0],
            [top, -np.inf, top / 2, -top],
            [-top, -top, -top, -top],
            [1e30, 0.0, -1e30, -np.inf],
            [-np.inf, -np.inf, -np.inf, -np.inf],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    x = exact_in(x, dtype)
    got = _smx(xb, dtype, x)
    expected = _smx_ref(dtype, x)
    for name, g, e in zip(("softmax", "log_softmax", "logsumexp"), got, expected, strict=True):
        assert not np.isnan(g).any(), name
        np.testing.assert_allclose(g, e, err_msg=name, **TOL[dtype])
    assert np.all(got[0][4] == 0)
    assert np.all(got[1][4] == -np.inf)
    assert got[2][4] == -np.inf


@IEEE_FLAGS
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_nan_and_inf_rows(xb, dtype):
    """SMX-4: NaN at an included position makes the row NaN; +inf makes softmax and
    log_softmax NaN and logsumexp +inf; other rows are untouched."""
    need_dtype(xb, dtype, sweep=True)
    x = np.array(
        [
            [1.0, np.nan, 2.0],
            [1.0, np.inf, 2.0],
            [np.inf, np.inf, 0.0],
            [np.nan, np.inf, -np.inf],
            [1.0, 2.0, 3.0],
        ]
    )
    sm, lsm, lse = _smx(xb, dtype, x)
    for r in (0, 1, 2):
        assert np.isnan(sm[r]).all(), r
        assert np.isnan(lsm[r]).all(), r
    assert np.isnan(lse[0])
    assert lse[1] == np.inf
    assert lse[2] == np.inf
    assert np.isnan(lse[3])
    assert np.isnan(sm[3][:2]).all()
    expected = _smx_ref(dtype, x[4:])
    np.testing.assert_allclose(sm[4:], expected[0], **TOL[dtype])
    np.testing.assert_allclose(lsm[4:], expected[1], **TOL[dtype])
    np.testing.assert_allclose(lse[4:], expected[2], **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_excluded_poison_is_ignored(xb, dtype):
    """SMX-2, SMX-3: where=False entries are excluded whatever they hold (NaN, +-inf); a row
    with every entry excluded is empty; never NaN."""
    need_dtype(xb, dtype, sweep=True)
    x = np.array(
        [
            [1.0, np.nan, 2.0, np.inf],
            [np.inf, 0.5, -np.inf, np.nan],
            [np.nan, np.inf, -np.inf, 3.0],
        ]
    )
    where = np.array(
        [
            [True, False, True, False],
            [False, True, True, False],
            [False, False, False, False],
        ]
    )
    got = _smx(xb, dtype, x, where=where)
    expected = _smx_ref(dtype, x, where=where)
    for name, g, e in zip(("softmax", "log_softmax", "logsumexp"), got, expected, strict=True):
        assert not np.isnan(g).any(), name
        np.testing.assert_allclose(g, e, err_msg=name, **TOL[dtype])
    assert np.all(got[0][~where] == 0)
    assert np.all(got[1][~where] == -np.inf)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_zero_length_axis(xb, dtype):
    """SMX-3: a zero-length axis is an empty row: logsumexp -inf, softmax of shape (n, 0)."""
    need_dtype(xb, dtype, sweep=True)
    x = np.zeros((3, 0))
    sm, lsm, lse = _smx(xb, dtype, x)
    assert sm.shape == (3, 0)
    assert lsm.shape == (3, 0)
    assert lse.shape == (3,)
    assert np.all(lse == -np.inf)
