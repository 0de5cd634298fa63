"""attnspec against the float64 oracle (``tests/reference.py``) on every backend.

float64 must agree to ~1e-12 relative, float32 to ~1e-5.  The oracle always sees the inputs
exactly as the backend does (rounded to the tested dtype, then widened to float64).
"""

from __future__ import annotations

import numpy as np
import pytest
from attn_helpers import TOL, as64, assert_close, exact_in, need_dtype, sdpa, to_backend
from reference import ref_attention, ref_log_softmax, ref_logsumexp, ref_softmax

import attnspec

DTYPES = ["float64", "float32"]


def _qkv(rng, dtype, batch, hq, hkv, lq, lk, dk, dv, *, scale=1.0):
    q = exact_in(rng.standard_normal((*batch, hq, lq, dk)) * scale, dtype)
    k = exact_in(rng.standard_normal((*batch, hkv, lk, dk)), dtype)
    v = exact_in(rng.standard_normal((*batch, hkv, lk, dv)), dtype)
    return q, k, v


def _check(xb, dtype, q, k, v, **opts):
    got = sdpa(xb, dtype, q, k, v, **opts)
    ref_opts = {n: exact_in(a, dtype) if n == "bias" else a for n, a in opts.items()}
    expected = ref_attention(q, k, v, **ref_opts)
    assert_close(xb, got, expected, dtype, what=f"{xb.name} {dtype} {sorted(opts)}")
    return got, expected


SHAPES = [
    # batch, Hq, Hkv, Lq, Lk, Dk, Dv
    pytest.param((), 1, 1, 1, 1, 1, 1, id="nobatch-L1-D1"),
    pytest.param((), 2, 2, 3, 5, 4, 4, id="nobatch-Lq<Lk"),
    pytest.param((2,), 2, 2, 5, 3, 3, 2, id="b1-Lq>Lk-Dk!=Dv"),
    pytest.param((2,), 4, 2, 1, 6, 3, 5, id="b1-gqa2-Lq1"),
    pytest.param((2, 3), 4, 1, 3, 1, 2, 3, id="b2-mqa-Lk1"),
    pytest.param((2, 2), 4, 4, 4, 4, 5, 2, id="b2-gqa1"),
    pytest.param((2,), 8, 2, 2, 3, 2, 2, id="b1-gqa4"),
    pytest.param((2,), 2, 1, 3, 0, 2, 2, id="b1-Lk0"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("batch", "hq", "hkv", "lq", "lk", "dk", "dv"), SHAPES)
def test_shapes_gqa(xb, rng, dtype, batch, hq, hkv, lq, lk, dk, dv):
    """ATT-SHAPE-1, ATT-GQA-1, ATT-SCORE-1, ATT-LSE-1, ATT-WEIGHTS-1: plain attention values."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _qkv(rng, dtype, batch, hq, hkv, lq, lk, dk, dv)
    _check(xb, dtype, q, k, v)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_broadcast(xb, rng, dtype):
    """ATT-SHAPE-1: the batch dims of q, k and v broadcast against each other."""
    need_dtype(xb, dtype, sweep=True)
    q = exact_in(rng.standard_normal((2, 1, 2, 3, 4)), dtype)
    k = exact_in(rng.standard_normal((3, 1, 4, 4)), dtype)
    v = exact_in(rng.standard_normal((1, 1, 1, 4, 2)), dtype)
    got, _ = _check(xb, dtype, q, k, v)
    assert tuple(got[0].shape) == (2, 3, 2, 3, 2)


# Most option tests share one shape: eager JAX compiles each op once per shape and dtype, so
# reusing shapes keeps the suite fast without losing coverage (shapes are tested above).
B, HQ, HKV, LQ, LK, DK, DV = (2,), 4, 2, 3, 5, 3, 2


def _canon(rng, dtype, *, lq=LQ, lk=LK, scale=1.0):
    return _qkv(rng, dtype, B, HQ, HKV, lq, lk, DK, DV, scale=scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale(xb, rng, dtype):
    """ATT-SCORE-1: explicit scale, default 1/sqrt(Dk)."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    for scale in (None, 0.25, 3.0):
        _check(xb, dtype, q, k, v, scale=scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_shape", [(LQ, LK), (HQ, 1, LK), (2, 1, LQ, LK), (2, HQ, LQ, LK)])
def test_mask(xb, rng, dtype, mask_shape):
    """ATT-MASK-1, ATT-EMPTY-1: a bool mask in several broadcast shapes, incl. empty rows."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    mask = rng.random(mask_shape) < 0.6
    if mask_shape[-2] == 1:
        mask[0] = False  # every row of head 0 is empty
    else:
        mask[..., 0, :] = False  # row 0 is empty
    _check(xb, dtype, q, k, v, mask=mask)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias_shape", [(LQ, LK), (1, HQ, LQ, LK), (2, 1, LQ, LK)])
def test_bias_with_neg_inf(xb, rng, dtype, bias_shape):
    """ATT-BIAS-1, ATT-EMPTY-1: float bias added to scores; -inf masks; an all -inf row."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    bias = rng.standard_normal(bias_shape) * 2
    bias[rng.random(bias_shape) < 0.3] = -np.inf
    bias[..., 1, :] = -np.inf
    _check(xb, dtype, q, k, v, bias=bias)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("lq", "lk"), [(4, 4), (3, 5), (5, 3), (1, 5), (5, 1)])
def test_causal(xb, rng, dtype, lq, lk):
    """ATT-CAUSAL-1, ATT-CAUSAL-2: causal masking with both alignments and Lq <, =, > Lk."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype, lq=lq, lk=lk)
    for alignment in ("upper_left", "lower_right"):
        _check(xb, dtype, q, k, v, causal=True, alignment=alignment)


WINDOWS = [
    ((1, 1), False),
    ((0, 0), False),
    ((2, None), False),
    ((None, 0), False),
    ((None, None), False),
    ((1, 2), True),
    ((0, 3), True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("lq", "lk"), [(4, 4), (3, 5), (5, 3)])
def test_window(xb, rng, dtype, lq, lk):
    """ATT-WINDOW-1, ATT-CAUSAL-2: sliding windows, both alignments, ANDed with causal."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype, lq=lq, lk=lk)
    for alignment in ("upper_left", "lower_right"):
        for window, causal in WINDOWS:
            _check(xb, dtype, q, k, v, window=window, causal=causal, alignment=alignment)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lengths(xb, rng, dtype):
    """ATT-LEN-1, ATT-LEN-2, ATT-CAUSAL-2: kv_lengths (incl. 0), q_lengths, per-batch offset."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    sets = [
        (np.array(a), np.array(b))
        for a, b in (([5, 2], [3, 1]), ([0, 4], [2, 3]), ([1, 3], [0, 2]))
    ]
    for alignment in ("upper_left", "lower_right"):
        for causal in (False, True):
            for kv_lengths, q_lengths in sets:
                _check(
                    xb,
                    dtype,
                    q,
                    k,
                    v,
                    causal=causal,
                    alignment=alignment,
                    kv_lengths=kv_lengths,
                    q_lengths=q_lengths,
                )
            # Each length alone (the other defaults to the full length in the offset).
            _check(xb, dtype, q, k, v, causal=causal, alignment=alignment, kv_lengths=sets[0][0])
            _check(xb, dtype, q, k, v, causal=causal, alignment=alignment, q_lengths=sets[0][1])
    kv_lengths, q_lengths = sets[1]
    _check(
        xb,
        dtype,
        q,
        k,
        v,
        window=(1, 0),
        alignment="lower_right",
        q_lengths=q_lengths,
        kv_lengths=kv_lengths,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_lengths_two_batch_dims(xb, rng, dtype):
    """ATT-LEN-1, ATT-LEN-2: lengths of shape (*batch,) with two batch dims."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _qkv(rng, dtype, (2, 2), 4, 4, 4, 4, 5, 2)  # the "b2-gqa1" shape above
    kv_lengths = np.array([[4, 0], [1, 3]])
    q_lengths = np.array([[3, 2], [0, 1]])
    _check(xb, dtype, q, k, v, kv_lengths=kv_lengths, q_lengths=q_lengths)
    _check(
        xb,
        dtype,
        q,
        k,
        v,
        kv_lengths=kv_lengths,
        q_lengths=q_lengths,
        causal=True,
        alignment="lower_right",
    )
    # Lengths broadcast to (*batch,): (2,) against batch (2, 2), and a (1, 1) array.
    for alignment in ("upper_left", "lower_right"):
        _check(
            xb,
            dtype,
            q,
            k,
            v,
            kv_lengths=np.array([4, 1]),
            q_lengths=np.array([[2]]),
            causal=True,
            alignment=alignment,
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_softcap(xb, rng, dtype):
    """ATT-SOFTCAP-1: c * tanh(s / c) after scale, before bias and masking."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype, scale=3.0)
    bias = rng.standard_normal((LQ, LK))
    bias[0, 1] = -np.inf
    for softcap in (0.5, 5.0, 50.0):
        _check(xb, dtype, q, k, v, softcap=softcap, bias=bias, scale=0.7)
    _check(xb, dtype, q, k, v, softcap=2.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout(xb, rng, dtype):
    """ATT-DROPOUT-1, ATT-WEIGHTS-1: kept weights scaled by 1/(1-p); lse unaffected."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    _, lse_plain, _ = ref_attention(q, k, v)
    rtol, atol = TOL[dtype]
    for dropout_p, keep_shape in ((0.0, (HQ, LQ, LK)), (0.25, (2, HQ, LQ, LK)), (0.5, (LQ, LK))):
        keep = rng.random(keep_shape) < 0.7
        got, _ = _check(xb, dtype, q, k, v, dropout_mask=keep, dropout_p=dropout_p)
        np.testing.assert_allclose(as64(xb, got[1]), lse_plain, rtol=rtol, atol=atol)


def test_dropout_p_without_mask_is_value_error(xb, rng):
    """ATT-DROPOUT-1: dropout_p > 0 without a dropout_mask raises ValueError."""
    q, k, v = _canon(rng, "float32")
    with pytest.raises(ValueError, match="dropout"):
        sdpa(xb, "float32", q, k, v, dropout_p=0.5)


def test_dropout_p_out_of_range_is_value_error(xb, rng):
    """ATT-DROPOUT-1: dropout_p must lie in [0, 1)."""
    q, k, v = _canon(rng, "float32")
    keep = np.ones((LQ, LK), bool)
    for dropout_p in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="dropout_p"):
            sdpa(xb, "float32", q, k, v, dropout_p=dropout_p, dropout_mask=keep)


@pytest.mark.parametrize("dtype", DTYPES)
def test_return_forms(xb, rng, dtype):
    """ATT-LSE-1, ATT-WEIGHTS-1, ATT-DTYPE-1, ATT-DTYPE-2: return tuple forms and dtypes."""
    need_dtype(xb, dtype)
    q, k, v = _canon(rng, dtype)
    mask = rng.random((LQ, LK)) < 0.7
    out_ref, lse_ref, w_ref = ref_attention(q, k, v, mask=mask)
    rtol, atol = TOL[dtype]
    for return_lse, return_weights in ((False, False), (True, False), (False, True), (True, True)):
        res = attnspec.scaled_dot_product_attention(
            *(to_backend(xb, a, dtype) for a in (q, k, v)),
            mask=to_backend(xb, mask, dtype),
            return_lse=return_lse,
            return_weights=return_weights,
        )
        expected = [out_ref]
        if return_lse:
            expected.append(lse_ref)
        if return_weights:
            expected.append(w_ref)
        if not (return_lse or return_weights):
            assert not isinstance(res, tuple)
            res = (res,)
        else:
            assert isinstance(res, tuple)
            assert len(res) == len(expected)
        for got, exp in zip(res, expected, strict=True):
            assert got.dtype == xb.dtype(dtype)  # lse is float32/float64 like the input here
            np.testing.assert_allclose(as64(xb, got), exp, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_everything_combined(xb, rng, dtype):
    """ATT-MASK-1, ATT-BIAS-1, ATT-CAUSAL-2, ATT-WINDOW-1, ATT-LEN-1, ATT-LEN-2, ATT-SOFTCAP-1,
    ATT-DROPOUT-1, ATT-GQA-1: every option at once."""
    need_dtype(xb, dtype)
    q, k, v = _canon(rng, dtype, scale=2.0)
    mask = rng.random((2, 1, LQ, LK)) < 0.8
    bias = rng.standard_normal((HQ, LQ, LK))
    bias[rng.random((HQ, LQ, LK)) < 0.1] = -np.inf
    keep = rng.random((2, HQ, LQ, LK)) < 0.8
    for alignment in ("upper_left", "lower_right"):
        for kv_lengths, q_lengths in (([5, 0], [3, 2]), ([4, 3], [1, 3])):
            _check(
                xb,
                dtype,
                q,
                k,
                v,
                mask=mask,
                bias=bias,
                causal=True,
                window=(3, 1),
                alignment=alignment,
                scale=0.6,
                softcap=4.0,
                kv_lengths=np.array(kv_lengths),
                q_lengths=np.array(q_lengths),
                dropout_mask=keep,
                dropout_p=0.2,
            )


def test_gqa_head_count_mismatch_is_value_error(xb, rng):
    """ATT-GQA-1, ATT-ARG-1: Hq must be a multiple of Hkv."""
    q, k, v = _qkv(rng, "float32", (), 3, 2, 2, 2, 2, 2)
    with pytest.raises(ValueError):  # noqa: PT011 - the message wording is the library's
        sdpa(xb, "float32", q, k, v)


def test_dk_mismatch_is_value_error(xb, rng):
    """ATT-SHAPE-1, ATT-ARG-1: q and k must share Dk."""
    q = rng.standard_normal((1, 2, 3))
    k = rng.standard_normal((1, 2, 4))
    with pytest.raises(ValueError):  # noqa: PT011
        sdpa(xb, "float32", q, k, k)


@pytest.mark.parametrize(
    "opts",
    [
        {"scale": 0.0},
        {"scale": -1.0},
        {"scale": float("inf")},
        {"scale": float("nan")},
        {"softcap": 0.0},
        {"softcap": -2.0},
        {"window": (-1, 2)},
        {"window": (1, -1)},
        {"alignment": "lower_left"},
    ],
    ids=lambda o: f"{next(iter(o))}={next(iter(o.values()))}",
)
def test_invalid_option_values_are_value_errors(xb, rng, opts):
    """ATT-SCORE-1, ATT-SOFTCAP-1, ATT-WINDOW-1, ATT-CAUSAL-2, ATT-ARG-1: a scale that is not a
    finite number > 0, a softcap <= 0, a negative window side and an unknown alignment raise
    ValueError naming the argument."""
    q, k, v = _canon(rng, "float32")
    with pytest.raises(ValueError, match=next(iter(opts))):
        sdpa(xb, "float32", q, k, v, **opts)


# ---------------------------------------------------------------- softmax family


def _smx_data(rng, dtype, shape=(3, 4, 5)):
    x = rng.standard_normal(shape) * 4
    x[rng.random(shape) < 0.15] = -np.inf
    x[(0,) * (x.ndim - 1)] = -np.inf  # an empty row along the last axis
    return exact_in(x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0, 1, 2, -2])
def test_softmax_family(xb, rng, dtype, axis):
    """SMX-1, SMX-2, SMX-3: softmax, log_softmax and logsumexp along any axis, with where."""
    need_dtype(xb, dtype, sweep=True)
    x = _smx_data(rng, dtype)
    for where in (None, rng.random(x.shape) < 0.7):
        _check_softmax_family(xb, dtype, x, axis, where)


def _check_softmax_family(xb, dtype, x, axis, where):
    xa = xb.from_numpy(x, dtype=dtype)
    rtol, atol = TOL[dtype]
    kw = {} if where is None else {"where": xb.from_numpy(where)}
    cases = [
        (attnspec.softmax(xa, axis=axis, **kw), ref_softmax(x, axis=axis, where=where)),
        (attnspec.log_softmax(xa, axis=axis, **kw), ref_log_softmax(x, axis=axis, where=where)),
        (attnspec.logsumexp(xa, axis=axis, **kw), ref_logsumexp(x, axis=axis, where=where)),
        (
            attnspec.logsumexp(xa, axis=axis, keepdims=True, **kw),
            ref_logsumexp(x, axis=axis, keepdims=True, where=where),
        ),
    ]
    for got, exp in cases:
        assert got.dtype == xb.dtype(dtype)
        g = as64(xb, got)
        assert g.shape == exp.shape
        assert not np.isnan(g).any()
        np.testing.assert_allclose(g, exp, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_where_broadcasts(xb, rng, dtype):
    """SMX-2: a where mask broadcastable to x."""
    need_dtype(xb, dtype, sweep=True)
    x = exact_in(rng.standard_normal((3, 4)), dtype)
    where = np.array([True, False, True, True])
    xa = xb.from_numpy(x, dtype=dtype)
    wa = xb.from_numpy(where)
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(
        as64(xb, attnspec.softmax(xa, where=wa)), ref_softmax(x, where=where), rtol=rtol, atol=atol
    )
    np.testing.assert_allclose(
        as64(xb, attnspec.logsumexp(xa, where=wa)),
        ref_logsumexp(x, where=where),
        rtol=rtol,
        atol=atol,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_neg_inf_is_where(xb, rng, dtype):
    """SMX-1: softmax(x) == softmax(x, where=x > -inf)."""
    need_dtype(xb, dtype, sweep=True)
    x = _smx_data(rng, dtype, (4, 6))
    xa = xb.from_numpy(x, dtype=dtype)
    xp = xb.namespace()
    a = as64(xb, attnspec.softmax(xa))
    b = as64(xb, attnspec.softmax(xa, where=xa > -xp.inf))
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    np.testing.assert_allclose(a, ref_softmax(x), rtol=rtol, atol=atol)
