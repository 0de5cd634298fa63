"""Closed-form properties of attention, checked on every backend without the oracle.

Each expected value here is computed from the inputs by a formula that needs no softmax at
all (a V row, a mean of V rows, a permutation, a shift), so these tests are independent of
``tests/reference.py``.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
from attn_helpers import as64, exact_in, need_dtype, sdpa

import attnspec

DTYPES = ["float64", "float32"]
TOL = {"float64": {"rtol": 1e-12, "atol": 1e-12}, "float32": {"rtol": 2e-6, "atol": 2e-6}}


def _qkv(rng, dtype, batch, hq, hkv, lq, lk, dk, dv):
    q = exact_in(rng.standard_normal((*batch, hq, lq, dk)), dtype)
    k = exact_in(rng.standard_normal((*batch, hkv, lk, dk)), dtype)
    v = exact_in(rng.standard_normal((*batch, hkv, lk, dv)), dtype)
    return q, k, v


def _canon(rng, dtype, *, lq=3, lk=5):
    """The shape shared with test_values (eager JAX compiles once per shape)."""
    return _qkv(rng, dtype, (2,), 4, 2, lq, lk, 3, 2)


def _run(xb, dtype, q, k, v, **opts):
    return tuple(as64(xb, r) for r in sdpa(xb, dtype, q, k, v, **opts))


def _rep(v, hq):
    """Repeat kv heads so head h of the result is kv head h // (Hq // Hkv) [ATT-GQA-1]."""
    return np.repeat(v, hq // v.shape[-3], axis=-3)


def _one_hot_mask(rng, shape, lk):
    idx = rng.integers(0, lk, size=shape)
    return np.arange(lk) == idx[..., None], idx


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_key_mask_gives_v_row(xb, rng, dtype):
    """ATT-PROP-1, ATT-GQA-1: exactly one attended key (via mask) -> out = that V row."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    mask, idx = _one_hot_mask(rng, (2, 4, 3), 5)
    out, lse, w = _run(xb, dtype, q, k, v, mask=mask)
    vr = _rep(v, 4)
    expected = np.take_along_axis(vr, idx[..., None], axis=-2)
    np.testing.assert_allclose(out, expected, **TOL[dtype])
    np.testing.assert_allclose(w, mask.astype(float), **TOL[dtype])
    scores = np.einsum("...id,...jd->...ij", q, _rep(k, 4)) / np.sqrt(3)
    np.testing.assert_allclose(
        lse, np.take_along_axis(scores, idx[..., None], -1)[..., 0], **TOL[dtype]
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_key_other_mechanisms(xb, rng, dtype):
    """ATT-PROP-1, ATT-LEN-1, ATT-CAUSAL-1, ATT-WINDOW-1: one key left by kv_lengths=1,
    by causal on row 0, and by window (0, 0) on the diagonal."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype, lq=4, lk=4)
    vr = _rep(v, 4)
    out, _, _ = _run(xb, dtype, q, k, v, kv_lengths=np.array([1, 1]))
    np.testing.assert_allclose(out, np.broadcast_to(vr[..., :1, :], out.shape), **TOL[dtype])
    out, _, _ = _run(xb, dtype, q, k, v, causal=True)
    np.testing.assert_allclose(out[..., 0, :], vr[..., 0, :], **TOL[dtype])
    for alignment in ("upper_left", "lower_right"):
        out, _, _ = _run(xb, dtype, q, k, v, window=(0, 0), alignment=alignment)
        np.testing.assert_allclose(out, vr, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_query_gives_mean(xb, rng, dtype):
    """ATT-PROP-2: q = 0 -> every attended score equal -> out = mean of attended V rows."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    q = np.zeros_like(q)
    mask = rng.random((2, 4, 3, 5)) < 0.6
    mask[..., 0] = True
    out, lse, w = _run(xb, dtype, q, k, v, mask=mask)
    vr = _rep(v, 4)
    count = mask.sum(-1)
    expected = (mask[..., None] * vr[..., None, :, :]).sum(-2) / count[..., None]
    np.testing.assert_allclose(out, expected, **TOL[dtype])
    np.testing.assert_allclose(lse, np.log(count), **TOL[dtype])
    np.testing.assert_allclose(w, mask / count[..., None], **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_key_permutation_invariance(xb, rng, dtype):
    """ATT-PROP-3: permuting keys together with values, mask and bias columns changes nothing
    (weights permute with their columns)."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    mask = rng.random((2, 1, 3, 5)) < 0.7
    bias = exact_in(rng.standard_normal((3, 5)), dtype)
    perm = rng.permutation(5)
    a = _run(xb, dtype, q, k, v, mask=mask, bias=bias)
    b = _run(
        xb, dtype, q, k[..., perm, :], v[..., perm, :], mask=mask[..., perm], bias=bias[..., perm]
    )
    np.testing.assert_allclose(b[0], a[0], **TOL[dtype])
    np.testing.assert_allclose(b[1], a[1], **TOL[dtype])
    np.testing.assert_allclose(b[2], a[2][..., perm], **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shift", [-7.5, 3.0, 40.0])
def test_constant_bias_shift(xb, rng, dtype, shift):
    """ATT-PROP-4, ATT-BIAS-1: a per-row constant bias leaves out/weights, shifts lse."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    mask = rng.random((3, 5)) < 0.7
    mask[:, 0] = True
    row_shift = exact_in(shift * (1 + rng.random((2, 4, 3, 1))), dtype)
    a = _run(xb, dtype, q, k, v, mask=mask)
    b = _run(xb, dtype, q, k, v, mask=mask, bias=np.broadcast_to(row_shift, (2, 4, 3, 5)).copy())
    # Adding the shift rounds each logit to the dtype's spacing at |shift|: allow for that.
    slack = 4 * np.finfo(dtype).eps * np.abs(row_shift).max()
    tol = {"rtol": TOL[dtype]["rtol"] + slack, "atol": TOL[dtype]["atol"] + slack}
    np.testing.assert_allclose(b[0], a[0], **tol)
    np.testing.assert_allclose(b[2], a[2], **tol)
    np.testing.assert_allclose(b[1], a[1] + row_shift[..., 0], **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_convex_hull_bound(xb, rng, dtype):
    """ATT-BOUND-1: each out row lies within the column-wise [min, max] of attended V rows."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    q *= 3
    mask = rng.random((2, 4, 3, 5)) < 0.5
    mask[..., 2] = True
    out, _, _ = _run(xb, dtype, q, k, v, mask=mask)
    vb = np.broadcast_to(_rep(v, 4)[..., None, :, :], (*mask.shape, 2))
    lo = np.where(mask[..., None], vb, np.inf).min(-2)
    hi = np.where(mask[..., None], vb, -np.inf).max(-2)
    slack = TOL[dtype]["atol"] * np.maximum(1, np.abs(v).max())
    assert np.all(out >= lo - slack)
    assert np.all(out <= hi + slack)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_dropout", [False, True])
def test_out_is_weights_times_v(xb, rng, dtype, with_dropout):
    """ATT-WEIGHTS-1, ATT-DROPOUT-1: out == weights @ v (weights after dropout), GQA included;
    lse is the log-sum-exp over attended keys before dropout [ATT-LSE-1]."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    opts = {"causal": True, "alignment": "lower_right"}
    if with_dropout:
        opts.update(dropout_mask=rng.random((2, 4, 3, 5)) < 0.6, dropout_p=0.4)
    out, lse, w = _run(xb, dtype, q, k, v, **opts)
    np.testing.assert_allclose(out, w @ _rep(v, 4), **TOL[dtype])
    row_sums = w.sum(-1)
    if with_dropout:
        assert np.all(w[~opts["dropout_mask"]] == 0)
        nodrop = _run(xb, dtype, q, k, v, causal=True, alignment="lower_right")
        np.testing.assert_allclose(lse, nodrop[1], **TOL[dtype])
        np.testing.assert_allclose(w, nodrop[2] * opts["dropout_mask"] / 0.6, **TOL[dtype])
    else:
        np.testing.assert_allclose(row_sums, 1.0, **TOL[dtype])


def _assert_empty(out, lse, w, rows):
    """Rows ``rows`` (bool over out.shape[:-1]) are out 0, lse -inf, weights 0."""
    assert not np.isnan(out).any()
    assert not np.isnan(lse).any()
    assert not np.isnan(w).any()
    assert np.all(out[rows] == 0)
    assert np.all(lse[rows] == -np.inf)
    assert np.all(w[rows] == 0)
    assert np.all(np.isfinite(lse[~rows]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_rows_by_mask_and_bias(xb, rng, dtype):
    """ATT-EMPTY-1, ATT-MASK-1, ATT-BIAS-1: rows emptied by mask, or by an all -inf bias row."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    mask = np.ones((2, 4, 3, 5), bool)
    mask[0, 1, 2] = False
    mask[1, :, 0] = False
    _assert_empty(*_run(xb, dtype, q, k, v, mask=mask), ~mask.any(-1))
    bias = np.zeros((2, 4, 3, 5))
    bias[0, 0, 2] = -np.inf
    bias[1, 1, 1:3] = -np.inf
    _assert_empty(*_run(xb, dtype, q, k, v, bias=bias), (bias == -np.inf).all(-1))
    # mask and bias each leave keys, but together none.
    mask2 = np.ones((3, 5), bool)
    mask2[1, :4] = False
    bias2 = np.zeros((3, 5))
    bias2[1, 4] = -np.inf
    rows = np.zeros((2, 4, 3), bool)
    rows[..., 1] = True
    _assert_empty(*_run(xb, dtype, q, k, v, mask=mask2, bias=bias2), rows)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_rows_by_lengths(xb, rng, dtype):
    """ATT-EMPTY-1, ATT-LEN-1, ATT-LEN-2: kv_lengths = 0 and q_lengths padding rows."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype)
    rows = np.zeros((2, 4, 3), bool)
    rows[0] = True
    rows[1, :, 1:] = True
    opts = {"kv_lengths": np.array([0, 5]), "q_lengths": np.array([3, 1])}
    _assert_empty(*_run(xb, dtype, q, k, v, **opts), rows)
    rows_kv = np.zeros((2, 4, 3), bool)
    rows_kv[0] = True
    _assert_empty(*_run(xb, dtype, q, k, v, kv_lengths=opts["kv_lengths"]), rows_kv)
    rows_q = np.zeros((2, 4, 3), bool)
    rows_q[0] = True
    rows_q[1, :, 2:] = True
    _assert_empty(*_run(xb, dtype, q, k, v, q_lengths=np.array([0, 2])), rows_q)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_rows_by_causal_and_window(xb, rng, dtype):
    """ATT-EMPTY-1, ATT-CAUSAL-2, ATT-WINDOW-1: lower-right causal with Lq > Lk empties the
    first Lq - Lk rows; window (0, 0) upper-left with Lq > Lk empties rows i >= Lk."""
    need_dtype(xb, dtype, sweep=True)
    q, k, v = _canon(rng, dtype, lq=5, lk=3)
    rows = np.zeros((2, 4, 5), bool)
    rows[..., :2] = True
    _assert_empty(*_run(xb, dtype, q, k, v, causal=True, alignment="lower_right"), rows)
    rows = np.zeros((2, 4, 5), bool)
    rows[..., 3:] = True
    _assert_empty(*_run(xb, dtype, q, k, v, window=(0, 0)), rows)


@pytest.mark.needs("autograd")
def test_empty_rows_have_zero_gradient(xb, rng):
    """ATT-EMPTY-1: gradients through fully masked rows (and unattended keys) are 0, not NaN."""
    q, k, v = _canon(rng, "float32")
    mask = np.ones((2, 4, 3, 5), bool)
    mask[0, 1, 1] = False
    mask[1, :, 2] = False
    mask[1, :, :, 3] = False  # key 3 of batch 1 is attended by no row at all
    empty = ~mask.any(-1)

    def loss(qa, ka, va, mask_a):
        out, lse = attnspec.scaled_dot_product_attention(qa, ka, va, mask=mask_a, return_lse=True)
        xp = array_api_compat.array_namespace(out)
        finite_lse = xp.where(xp.isfinite(lse), lse, xp.zeros_like(lse))
        return xp.sum(out * out) + xp.sum(finite_lse)

    if xb.framework == "torch":
        args = [xb.from_numpy(a, dtype="float32").requires_grad_(True) for a in (q, k, v)]
        loss(*args, xb.from_numpy(mask)).backward()
        grads = [xb.to_numpy(a.grad) for a in args]
    elif xb.framework == "jax":
        import jax

        args = [xb.from_numpy(a, dtype="float32") for a in (q, k, v)]
        m = xb.from_numpy(mask)
        grads = [np.asarray(g) for g in jax.grad(loss, argnums=(0, 1, 2))(*args, m)]
    else:
        pytest.skip(f"{xb.name}: no gradient recipe for framework {xb.framework}")
    for g in grads:
        assert not np.isnan(g).any()
    np.testing.assert_array_equal(grads[0][empty], 0.0)
    np.testing.assert_array_equal(grads[1][1, :, 3], 0.0)
    np.testing.assert_array_equal(grads[2][1, :, 3], 0.0)
