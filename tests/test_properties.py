"""Hypothesis property tests: random shapes and options against the oracle and the invariants.

Runs on the eager NumPy-like backends (``numpy``, ``array_api_strict``) in float64, where the
agreement with ``tests/reference.py`` must be tight.  Data are drawn from a seeded NumPy
generator (Hypothesis draws the seed, the shapes and the options), which keeps shrinking
meaningful and example generation fast.
"""

from __future__ import annotations

import numpy as np
import pytest
from attn_helpers import as64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import ref_attention, ref_log_softmax, ref_logsumexp, ref_softmax

import attnspec
from attnspec.backends import get

BACKENDS = ["numpy", "array_api_strict"]
TOL = {"rtol": 1e-10, "atol": 1e-12}
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _backend(name):
    xb = get(name)
    if not xb.available:
        pytest.skip(xb.reason)
    return xb


@st.composite
def problems(draw, *, allow_dropout=True):
    """A random attention problem: (q, k, v, options) as float64 NumPy data."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch = tuple(draw(st.lists(st.integers(1, 2), max_size=2)))
    hkv = draw(st.integers(1, 2))
    hq = hkv * draw(st.sampled_from([1, 2, 3]))
    lq, lk = draw(st.integers(1, 4)), draw(st.integers(0, 4))
    dk, dv = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    q = rng.standard_normal((*batch, hq, lq, dk)) * draw(st.sampled_from([0.5, 1.0, 3.0]))
    k = rng.standard_normal((*batch, hkv, lk, dk))
    v = rng.standard_normal((*batch, hkv, lk, dv))
    full = (*batch, hq, lq, lk)

    def broadcastable():
        """A random shape that broadcasts to ``full`` (dims dropped from the left or set to 1)."""
        ndim = draw(st.integers(2, len(full)))
        return tuple(n if draw(st.booleans()) else 1 for n in full[len(full) - ndim :])

    opts = {}
    if draw(st.booleans()):
        opts["mask"] = rng.random(broadcastable()) < draw(st.sampled_from([0.3, 0.7, 1.0]))
    if draw(st.booleans()):
        bias = rng.standard_normal(broadcastable()) * 2
        bias[rng.random(bias.shape) < draw(st.sampled_from([0.0, 0.2]))] = -np.inf
        opts["bias"] = bias
    opts["causal"] = draw(st.booleans())
    if draw(st.booleans()):
        side = st.one_of(st.none(), st.integers(0, 3))
        opts["window"] = (draw(side), draw(side))
    opts["alignment"] = draw(st.sampled_from(["upper_left", "lower_right"]))
    if draw(st.booleans()):
        opts["scale"] = draw(st.sampled_from([0.1, 0.7, 2.5]))
    if draw(st.booleans()):
        opts["softcap"] = draw(st.sampled_from([0.5, 2.0, 20.0]))
    if batch and draw(st.booleans()):
        opts["kv_lengths"] = rng.integers(0, lk + 1, size=batch)
    if batch and draw(st.booleans()):
        opts["q_lengths"] = rng.integers(0, lq + 1, size=batch)
    if allow_dropout and draw(st.booleans()):
        opts["dropout_mask"] = rng.random(broadcastable()) < 0.7
        opts["dropout_p"] = draw(st.sampled_from([0.0, 0.3, 0.6]))
    return q, k, v, opts


def _to(xb, value):
    if isinstance(value, np.ndarray):
        return (
            xb.from_numpy(value) if value.dtype.kind in "biu" else xb.from_numpy(value, "float64")
        )
    return value


def _sdpa(xb, q, k, v, **opts):
    res = attnspec.scaled_dot_product_attention(
        *(_to(xb, a) for a in (q, k, v)),
        **{n: _to(xb, val) for n, val in opts.items()},
        return_lse=True,
        return_weights=True,
    )
    return tuple(as64(xb, r) for r in res)


@pytest.mark.parametrize("name", BACKENDS)
@SETTINGS
@given(problem=problems())
def test_matches_reference(name, problem):
    """ATT-SHAPE-1, ATT-GQA-1, ATT-SCORE-1, ATT-SOFTCAP-1, ATT-BIAS-1, ATT-MASK-1, ATT-CAUSAL-1,
    ATT-CAUSAL-2, ATT-WINDOW-1, ATT-LEN-1, ATT-LEN-2, ATT-LSE-1, ATT-WEIGHTS-1, ATT-DROPOUT-1,
    ATT-EMPTY-1: random shapes and option combinations agree with the float64 oracle."""
    xb = _backend(name)
    q, k, v, opts = problem
    got = _sdpa(xb, q, k, v, **opts)
    expected = ref_attention(q, k, v, **opts)
    for what, g, e in zip(("out", "lse", "weights"), got, expected, strict=True):
        assert g.shape == e.shape, what
        assert not np.isnan(g).any(), what
        np.testing.assert_allclose(g, e, err_msg=what, **TOL)


@pytest.mark.parametrize("name", BACKENDS)
@SETTINGS
@given(problem=problems())
def test_structural_invariants(name, problem):
    """ATT-WEIGHTS-1, ATT-LSE-1, ATT-EMPTY-1, ATT-DROPOUT-1, ATT-BOUND-1: out == weights @ v;
    weight rows sum to 1 (0 when empty) before dropout; empty rows are exactly 0 / -inf / 0;
    without dropout out lies within the attended V rows' column ranges."""
    xb = _backend(name)
    q, k, v, opts = problem
    out, lse, w = _sdpa(xb, q, k, v, **opts)
    group = q.shape[-3] // k.shape[-3]
    vr = np.repeat(v, group, axis=-3)
    np.testing.assert_allclose(out, w @ vr, **TOL)
    empty = lse == -np.inf
    assert np.all(w[empty] == 0)
    assert np.all(out[empty] == 0)
    dropout = "dropout_mask" in opts
    if not dropout:
        np.testing.assert_allclose(w.sum(-1), np.where(empty, 0.0, 1.0), **TOL)
        attended = np.broadcast_to(w > 0, w.shape)
        vb = np.broadcast_to(vr[..., None, :, :], (*w.shape, v.shape[-1]))
        lo = np.where(attended[..., None], vb, np.inf).min(-2, initial=np.inf)
        hi = np.where(attended[..., None], vb, -np.inf).max(-2, initial=-np.inf)
        nonempty = ~empty
        assert np.all(out[nonempty] >= lo[nonempty] - 1e-12)
        assert np.all(out[nonempty] <= hi[nonempty] + 1e-12)
    else:
        _, lse_plain, w_plain = _sdpa(
            xb, q, k, v, **{n: o for n, o in opts.items() if not n.startswith("dropout")}
        )
        np.testing.assert_allclose(lse, lse_plain, **TOL)
        keep = np.broadcast_to(opts["dropout_mask"], w.shape)
        np.testing.assert_allclose(w, w_plain * keep / (1 - opts["dropout_p"]), **TOL)


@pytest.mark.parametrize("name", BACKENDS)
@SETTINGS
@given(problem=problems(), data=st.data())
def test_key_permutation(name, problem, data):
    """ATT-PROP-3: permuting keys with values and the key axis of mask/bias/dropout_mask
    changes nothing (weights permute with their columns)."""
    xb = _backend(name)
    q, k, v, opts = problem
    if "kv_lengths" in opts or opts["causal"] or "window" in opts:
        opts = {n: o for n, o in opts.items() if n not in ("kv_lengths", "window")}
        opts["causal"] = False  # positional masks do not permute with the keys
    lk = k.shape[-2]
    perm = np.array(data.draw(st.permutations(range(lk)))) if lk else np.arange(0)
    permuted = dict(opts)
    for n in ("mask", "bias", "dropout_mask"):
        if n in opts and opts[n].shape[-1] == lk:
            permuted[n] = opts[n][..., perm]
    a = _sdpa(xb, q, k, v, **opts)
    b = _sdpa(xb, q, k[..., perm, :], v[..., perm, :], **permuted)
    np.testing.assert_allclose(b[0], a[0], **TOL)
    np.testing.assert_allclose(b[1], a[1], **TOL)
    np.testing.assert_allclose(b[2], a[2][..., perm], **TOL)


@pytest.mark.parametrize("name", BACKENDS)
@SETTINGS
@given(problem=problems(), shift=st.floats(-50, 50))
def test_row_constant_shift(name, problem, shift):
    """ATT-PROP-4: adding a per-row constant through bias leaves out and weights and shifts
    lse by the constant (empty rows stay -inf)."""
    xb = _backend(name)
    q, k, v, opts = problem
    full = (*np.broadcast_shapes(q.shape[:-3], k.shape[:-3]), q.shape[-3], q.shape[-2])
    rows = shift * (1 + np.random.default_rng(0).random(full))
    bias = np.broadcast_to(opts.get("bias", 0.0), (*full, k.shape[-2])) + rows[..., None]
    a = _sdpa(xb, q, k, v, **opts)
    b = _sdpa(xb, q, k, v, **dict(opts, bias=bias))
    tol = {"rtol": 1e-9, "atol": 1e-10}
    np.testing.assert_allclose(b[0], a[0], **tol)
    np.testing.assert_allclose(b[2], a[2], **tol)
    np.testing.assert_allclose(b[1], a[1] + rows, **tol)


@st.composite
def softmax_problems(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=3)))
    x = rng.standard_normal(shape) * draw(st.sampled_from([1.0, 10.0, 1e3]))
    x[rng.random(shape) < draw(st.sampled_from([0.0, 0.3]))] = -np.inf
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    where = None
    if draw(st.booleans()):
        wshape = tuple(n if draw(st.booleans()) else 1 for n in shape)
        where = rng.random(wshape) < 0.6
    return x, axis, where


@pytest.mark.parametrize("name", BACKENDS)
@SETTINGS
@given(problem=softmax_problems(), keepdims=st.booleans())
def test_softmax_family_matches_reference(name, problem, keepdims):
    """SMX-1, SMX-2, SMX-3: softmax, log_softmax, logsumexp on random shapes, axes, -inf
    entries and broadcast where masks agree with the oracle and never give NaN."""
    xb = _backend(name)
    x, axis, where = problem
    xa = xb.from_numpy(x, "float64")
    kw = {} if where is None else {"where": xb.from_numpy(where)}
    got = (
        attnspec.softmax(xa, axis=axis, **kw),
        attnspec.log_softmax(xa, axis=axis, **kw),
        attnspec.logsumexp(xa, axis=axis, keepdims=keepdims, **kw),
    )
    expected = (
        ref_softmax(x, axis=axis, where=where),
        ref_log_softmax(x, axis=axis, where=where),
        ref_logsumexp(x, axis=axis, keepdims=keepdims, where=where),
    )
    for what, g, e in zip(("softmax", "log_softmax", "logsumexp"), got, expected, strict=True):
        g = as64(xb, g)
        assert g.shape == e.shape, what
        assert not np.isnan(g).any(), what
        np.testing.assert_allclose(g, e, err_msg=what, **TOL)
