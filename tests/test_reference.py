"""Validate the float64 oracle in ``tests/reference.py`` against PyTorch and SciPy.

These tests never import attnspec: they prove the oracle right on its own, by comparing it
with ``torch.nn.functional.scaled_dot_product_attention`` (float64, CPU) and
``scipy.special`` wherever the semantics of those libraries coincide with the spec.
Rows that every key is masked out of are compared with the spec directly, because other
libraries disagree with each other there.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from reference import ref_attention, ref_log_softmax, ref_logsumexp, ref_softmax

torch = pytest.importorskip("torch")
special = pytest.importorskip("scipy.special")
F = torch.nn.functional

TIGHT = {"rtol": 1e-12, "atol": 1e-13}


def _qkv(rng, batch, hq, hkv, lq, lk, dk, dv):
    q = rng.standard_normal((*batch, hq, lq, dk))
    k = rng.standard_normal((*batch, hkv, lk, dk))
    v = rng.standard_normal((*batch, hkv, lk, dv))
    return q, k, v


def _torch_sdpa(q, k, v, **kw):
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (q, k, v)]
    if isinstance(kw.get("attn_mask"), np.ndarray):
        kw["attn_mask"] = torch.from_numpy(np.ascontiguousarray(kw["attn_mask"]))
    with torch.no_grad():
        return F.scaled_dot_product_attention(*t, **kw).numpy()


def _scores(q, k, scale=None):
    """Vectorised q @ k^T * scale, with kv heads repeated per group (GQA)."""
    group = q.shape[-3] // k.shape[-3]
    k = np.repeat(k, group, axis=-3)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return np.einsum("...id,...jd->...ij", q, k) * scale


def _check_against_scipy(q, k, v, allowed, out, lse, weights, *, scale=None, extra=None):
    """Compare lse / weights / out with SciPy on rows that attend to at least one key."""
    s = _scores(q, k, scale)
    if extra is not None:
        s = extra(s)
    allowed = np.broadcast_to(allowed, s.shape)
    nonempty = allowed.any(-1)
    masked = np.where(allowed, s, -np.inf)
    sp_lse = special.logsumexp(masked, axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sp_w = special.softmax(masked, axis=-1)
    v_rep = np.repeat(v, q.shape[-3] // k.shape[-3], axis=-3)
    np.testing.assert_allclose(lse[nonempty], sp_lse[nonempty], **TIGHT)
    np.testing.assert_allclose(weights[nonempty], sp_w[nonempty], **TIGHT)
    np.testing.assert_allclose(out, weights @ v_rep, **TIGHT)
    # Empty rows: out 0, lse -inf, weights 0 [ATT-EMPTY-1].
    assert np.all(out[~nonempty] == 0)
    assert np.all(lse[~nonempty] == -np.inf)
    assert np.all(weights[~nonempty] == 0)


@pytest.mark.parametrize(
    ("batch", "hq", "hkv", "lq", "lk", "dk", "dv"),
    [
        ((), 1, 1, 1, 1, 1, 1),
        ((2,), 2, 2, 3, 5, 4, 3),
        ((2, 3), 4, 2, 5, 3, 2, 6),
        ((1,), 4, 1, 4, 4, 3, 3),
        ((2,), 6, 3, 2, 7, 5, 2),
    ],
)
def test_plain_matches_torch(rng, batch, hq, hkv, lq, lk, dk, dv):
    """ATT-SHAPE-1, ATT-SCORE-1, ATT-GQA-1, ATT-LSE-1: plain attention vs torch (enable_gqa)."""
    q, k, v = _qkv(rng, batch, hq, hkv, lq, lk, dk, dv)
    out, lse, w = ref_attention(q, k, v)
    expected = _torch_sdpa(q, k, v, enable_gqa=hq != hkv)
    np.testing.assert_allclose(out, expected, **TIGHT)
    _check_against_scipy(q, k, v, True, out, lse, w)


def test_scale_matches_torch(rng):
    """ATT-SCORE-1: an explicit scale."""
    q, k, v = _qkv(rng, (2,), 2, 2, 3, 4, 5, 2)
    out, lse, w = ref_attention(q, k, v, scale=0.37)
    np.testing.assert_allclose(out, _torch_sdpa(q, k, v, scale=0.37), **TIGHT)
    _check_against_scipy(q, k, v, True, out, lse, w, scale=0.37)


def test_broadcast_batch_matches_torch(rng):
    """ATT-SHAPE-1: batch dims of q, k, v broadcast against each other."""
    q = rng.standard_normal((2, 1, 2, 3, 4))
    k = rng.standard_normal((3, 2, 5, 4))
    v = rng.standard_normal((1, 1, 2, 5, 3))
    out, _, _ = ref_attention(q, k, v)
    assert out.shape == (2, 3, 2, 3, 3)
    qb, kb, vb = (np.broadcast_to(a, (2, 3, *a.shape[-3:])) for a in (q, k, v))
    np.testing.assert_allclose(out, _torch_sdpa(qb, kb, vb), **TIGHT)


def test_bool_mask_matches_torch(rng):
    """ATT-MASK-1, ATT-EMPTY-1: a bool mask broadcast over batch/heads, with an empty row."""
    q, k, v = _qkv(rng, (2,), 4, 2, 5, 6, 3, 3)
    mask = rng.random((1, 4, 5, 6)) < 0.6
    mask[0, 1, 2, :] = False  # one fully masked row
    mask[0, 2, 3, :] = False
    mask[0, 2, 3, 4] = True  # one single-key row
    out, lse, w = ref_attention(q, k, v, mask=mask)
    expected = _torch_sdpa(q, k, v, attn_mask=mask, enable_gqa=True)
    nonempty = np.broadcast_to(mask.any(-1), lse.shape)
    np.testing.assert_allclose(out[nonempty], expected[nonempty], **TIGHT)
    _check_against_scipy(q, k, v, mask, out, lse, w)


def test_bias_matches_torch(rng):
    """ATT-BIAS-1: a float bias (with -inf entries) is added to the scores."""
    q, k, v = _qkv(rng, (2,), 2, 1, 4, 5, 3, 2)
    bias = rng.standard_normal((2, 1, 4, 5)) * 3
    bias[0, 0, 1, [0, 2, 4]] = -np.inf
    bias[1, 0, 3, :] = -np.inf  # a fully masked row
    out, lse, w = ref_attention(q, k, v, bias=bias)
    nonempty = np.broadcast_to((bias > -np.inf).any(-1), lse.shape)
    expected = _torch_sdpa(q, k, v, attn_mask=bias, enable_gqa=True)
    np.testing.assert_allclose(out[nonempty], expected[nonempty], **TIGHT)
    _check_against_scipy(q, k, v, bias > -np.inf, out, lse, w, extra=lambda s: s + bias)


@pytest.mark.parametrize(("lq", "lk"), [(4, 4), (3, 6), (6, 3), (1, 5), (5, 1)])
def test_causal_upper_left_matches_torch(rng, lq, lk):
    """ATT-CAUSAL-1: is_causal in torch is the upper-left aligned lower triangle."""
    q, k, v = _qkv(rng, (2,), 2, 2, lq, lk, 3, 2)
    out, lse, w = ref_attention(q, k, v, causal=True)
    np.testing.assert_allclose(out, _torch_sdpa(q, k, v, is_causal=True), **TIGHT)
    _check_against_scipy(q, k, v, np.tril(np.ones((lq, lk), bool)), out, lse, w)


@pytest.mark.parametrize(("lq", "lk"), [(4, 4), (3, 6), (6, 3), (1, 5), (5, 1)])
def test_causal_lower_right_matches_torch(rng, lq, lk):
    """ATT-CAUSAL-2: alignment="lower_right" equals torch's causal_lower_right bias."""
    from torch.nn.attention.bias import causal_lower_right

    q, k, v = _qkv(rng, (2,), 2, 2, lq, lk, 3, 2)
    out, lse, w = ref_attention(q, k, v, causal=True, alignment="lower_right")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about Lq > Lk
        expected = _torch_sdpa(q, k, v, attn_mask=causal_lower_right(lq, lk))
    allowed = np.tril(np.ones((lq, lk), bool), k=lk - lq)
    rows = allowed.any(-1)
    np.testing.assert_allclose(out[..., rows, :], expected[..., rows, :], **TIGHT)
    _check_against_scipy(q, k, v, allowed, out, lse, w)


def _band(lq, lk, offset, left, right):
    """Window band built with tril/triu: a different formulation from the oracle's loops."""
    keep = np.ones((lq, lk), bool)
    if right is not None:
        keep &= np.tril(np.ones((lq, lk), bool), k=offset + right)
    if left is not None:
        keep &= np.triu(np.ones((lq, lk), bool), k=offset - left)
    return keep


@pytest.mark.parametrize("alignment", ["upper_left", "lower_right"])
@pytest.mark.parametrize(
    ("window", "causal"),
    [((1, 1), False), ((2, 0), False), ((0, None), False), ((None, 1), False), ((2, 3), True)],
)
@pytest.mark.parametrize(("lq", "lk"), [(5, 5), (3, 7), (7, 3)])
def test_window_matches_torch(rng, alignment, window, causal, lq, lk):
    """ATT-WINDOW-1 (both alignments, ANDed with causal) vs torch with a tril/triu mask."""
    q, k, v = _qkv(rng, (2,), 2, 1, lq, lk, 3, 2)
    out, lse, w = ref_attention(q, k, v, window=window, causal=causal, alignment=alignment)
    offset = 0 if alignment == "upper_left" else lk - lq
    allowed = _band(lq, lk, offset, *window)
    if causal:
        allowed &= np.tril(np.ones((lq, lk), bool), k=offset)
    rows = allowed.any(-1)
    expected = _torch_sdpa(q, k, v, attn_mask=allowed, enable_gqa=True)
    np.testing.assert_allclose(out[..., rows, :], expected[..., rows, :], **TIGHT)
    _check_against_scipy(q, k, v, allowed, out, lse, w)


@pytest.mark.parametrize("alignment", ["upper_left", "lower_right"])
@pytest.mark.parametrize("causal", [False, True])
def test_lengths_match_torch(rng, alignment, causal):
    """ATT-LEN-1, ATT-LEN-2, ATT-CAUSAL-2: per-batch lengths and per-batch lower-right offset."""
    lq, lk = 4, 6
    q, k, v = _qkv(rng, (4,), 2, 2, lq, lk, 3, 2)
    kv_lengths = np.array([6, 3, 0, 5])
    q_lengths = np.array([4, 2, 3, 1])
    out, lse, w = ref_attention(
        q, k, v, causal=causal, alignment=alignment, kv_lengths=kv_lengths, q_lengths=q_lengths
    )
    allowed = np.zeros((4, 1, lq, lk), bool)
    for b in range(4):
        offset = 0 if alignment == "upper_left" else kv_lengths[b] - q_lengths[b]
        a = np.arange(lk)[None, :] < kv_lengths[b]
        a = a & (np.arange(lq)[:, None] < q_lengths[b])
        if causal:
            a = a & np.tril(np.ones((lq, lk), bool), k=offset)
        allowed[b, 0] = a
    rows = np.broadcast_to(allowed.any(-1), lse.shape)
    expected = _torch_sdpa(q, k, v, attn_mask=allowed)
    np.testing.assert_allclose(out[rows], expected[rows], **TIGHT)
    _check_against_scipy(q, k, v, allowed, out, lse, w)


def test_softcap_matches_scipy(rng):
    """ATT-SOFTCAP-1: c * tanh(s / c) after scale, before bias."""
    q, k, v = _qkv(rng, (2,), 2, 2, 3, 4, 3, 2)
    q *= 4
    bias = rng.standard_normal((3, 4))
    out, lse, w = ref_attention(q, k, v, softcap=1.5, scale=0.8, bias=bias)
    _check_against_scipy(
        q, k, v, True, out, lse, w, scale=0.8, extra=lambda s: 1.5 * np.tanh(s / 1.5) + bias
    )
    capped = out
    plain, _, _ = ref_attention(q, k, v, scale=0.8, bias=bias)
    assert not np.allclose(capped, plain)


def test_dropout_formula(rng):
    """ATT-DROPOUT-1, ATT-WEIGHTS-1: kept weights scaled by 1/(1-p); lse unaffected."""
    q, k, v = _qkv(rng, (2,), 2, 2, 3, 5, 3, 2)
    keep = rng.random((2, 2, 3, 5)) < 0.7
    out, lse, w = ref_attention(q, k, v, dropout_mask=keep, dropout_p=0.3)
    _, lse0, w0 = ref_attention(q, k, v)
    np.testing.assert_array_equal(lse, lse0)
    np.testing.assert_allclose(w, w0 * keep / 0.7, **TIGHT)
    np.testing.assert_allclose(out, w @ v, **TIGHT)


def test_nonfinite_rows():
    """ATT-NAN-1, ATT-LEAK-1: NaN / +inf propagate only from attended positions."""
    q = np.ones((1, 3, 2))
    k = np.ones((3, 2))
    v = np.arange(6.0).reshape(3, 2)
    bias = np.zeros((3, 3))
    bias[0, 1] = np.nan  # attended NaN -> row NaN, lse NaN
    bias[1, 2] = np.inf  # attended +inf -> row NaN, lse +inf
    bias[2, 0] = np.nan  # masked below: must not leak
    mask = np.ones((3, 3), bool)
    mask[2, 0] = False
    out, lse, _ = ref_attention(q, k[None], v[None], bias=bias, mask=mask)
    assert np.isnan(out[0, 0]).all()
    assert np.isnan(lse[0, 0])
    assert np.isnan(out[0, 1]).all()
    assert lse[0, 1] == np.inf
    assert np.isfinite(out[0, 2]).all()
    assert np.isfinite(lse[0, 2])
    np.testing.assert_allclose(out[0, 2], v[1:].mean(0), **TIGHT)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_family_matches_scipy(rng, axis):
    """SMX-1, SMX-2: softmax / log_softmax / logsumexp vs scipy, with where and -inf."""
    x = rng.standard_normal((3, 4, 5)) * 5
    x[0, 1, 2] = -np.inf
    where = rng.random(x.shape) < 0.7
    np.testing.assert_allclose(ref_softmax(x, axis=axis), special.softmax(x, axis=axis), **TIGHT)
    np.testing.assert_allclose(
        ref_log_softmax(x, axis=axis), special.log_softmax(x, axis=axis), **TIGHT
    )
    np.testing.assert_allclose(
        ref_logsumexp(x, axis=axis), special.logsumexp(x, axis=axis), **TIGHT
    )
    np.testing.assert_allclose(
        ref_logsumexp(x, axis=axis, keepdims=True),
        special.logsumexp(x, axis=axis, keepdims=True),
        **TIGHT,
    )
    xw = np.where(where, x, -np.inf)
    nonempty = np.expand_dims((xw > -np.inf).any(axis), axis)
    nonempty = np.broadcast_to(nonempty, x.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sm = special.softmax(xw, axis=axis)
        lsm = special.log_softmax(xw, axis=axis)
    got = ref_softmax(x, axis=axis, where=where)
    np.testing.assert_allclose(got[nonempty], sm[nonempty], **TIGHT)
    np.testing.assert_array_equal(got[~where], 0)
    got = ref_log_softmax(x, axis=axis, where=where)
    np.testing.assert_allclose(got[nonempty], lsm[nonempty], **TIGHT)
    assert np.all(got[~where] == -np.inf)
    np.testing.assert_allclose(
        ref_logsumexp(x, axis=axis, where=where), special.logsumexp(xw, axis=axis), **TIGHT
    )


def test_softmax_family_empty_and_nonfinite():
    """SMX-3, SMX-4: empty rows, NaN rows and +inf rows."""
    x = np.array(
        [
            [-np.inf, -np.inf, -np.inf],
            [1.0, np.nan, 2.0],
            [1.0, np.inf, 2.0],
            [1.0, 2.0, 3.0],
        ]
    )
    where = np.array([True, True, True])
    sm, lsm, lse = ref_softmax(x, where=where), ref_log_softmax(x), ref_logsumexp(x)
    assert np.all(sm[0] == 0)
    assert np.all(lsm[0] == -np.inf)
    assert lse[0] == -np.inf
    assert np.isnan(sm[1]).all()
    assert np.isnan(lsm[1]).all()
    assert np.isnan(lse[1])
    assert np.isnan(sm[2]).all()
    assert np.isnan(lsm[2]).all()
    assert lse[2] == np.inf
    excl = ref_softmax(x, where=np.array([True, False, True]))
    np.testing.assert_allclose(excl[1], special.softmax([1.0, -np.inf, 2.0]), **TIGHT)
    np.testing.assert_allclose(excl[2], special.softmax([1.0, -np.inf, 2.0]), **TIGHT)
    assert ref_logsumexp(x[3], where=np.zeros(3, bool)) == -np.inf
