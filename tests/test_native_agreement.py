"""attnspec against the frameworks' own fused attention and softmax.

Two kinds of test live here:

* agreement tests: where ``torch.nn.functional.scaled_dot_product_attention`` or
  ``jax.nn.dot_product_attention`` mean the same thing as the spec, attnspec (run on NumPy,
  PyTorch and JAX arrays) gives the same numbers;
* pinned differences (``test_*_pin_*``): where a framework means something else, the test
  asserts both what the framework does (as measured on torch 2.13 / jax 0.10) and what
  attnspec does, so it fails when either side changes behaviour.  docs/spec.md tabulates them.

ONNX Runtime's Attention op is not checked: building the model needs the ``onnx`` package.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import attnspec

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import torch.nn.functional as F  # noqa: E402  (after the importorskip above)
from torch.nn.attention.bias import causal_lower_right, causal_upper_left  # noqa: E402

# conftest.py enables this too; repeated here so the file also runs on its own.
jax.config.update("jax_enable_x64", True)

FRAMEWORKS = ["numpy", "torch", "jax"]
DTYPES = ["float64", "float32"]

# attnspec and torch both compute float64 in float64 and float32 in float32.
TORCH_TOL = {"float64": 1e-12, "float32": 2e-5}
# jax.nn.dot_product_attention always runs its softmax in float32, even for float64 input
# (pinned in test_jax_pin_float64_softmax_in_float32), so float64 agrees only to ~1e-7.
JAX_TOL = {"float64": 2e-6, "float32": 2e-5}

# jax's "masked" logit: -0.7 * float32 max, a finite number, instead of -inf.
JAX_LARGE_NEGATIVE = -0.7 * float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------- helpers


def _to(fw, a):
    """A NumPy array (or None / Python scalar) as an array of framework ``fw``."""
    if a is None or not isinstance(a, np.ndarray):
        return a
    if fw == "numpy":
        return a
    if fw == "torch":
        return torch.from_numpy(np.ascontiguousarray(a))
    return jnp.asarray(a)


def _np(x):
    if isinstance(x, tuple):
        return tuple(_np(e) for e in x)
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _spec(fw, q, k, v, **kwargs):
    """attnspec.scaled_dot_product_attention on framework ``fw``; results back as NumPy."""
    kwargs = {name: _to(fw, val) for name, val in kwargs.items()}
    return _np(attnspec.scaled_dot_product_attention(_to(fw, q), _to(fw, k), _to(fw, v), **kwargs))


def _torch_sdpa(q, k, v, **kwargs):
    kwargs = {n: torch.from_numpy(a) if isinstance(a, np.ndarray) else a for n, a in kwargs.items()}
    with warnings.catch_warnings():
        # causal_lower_right warns that Lq > Lk "will produce NaNs"; torch 2.13 gives zeros.
        warnings.simplefilter("ignore", UserWarning)
        out = F.scaled_dot_product_attention(
            torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), **kwargs
        )
    return out.numpy()


def _jax_dpa(q, k, v, **kwargs):
    """jax.nn.dot_product_attention on (B, H, L, D) inputs; out back in (B, H, L, D)."""
    blhd = [attnspec.bhld_to_blhd(jnp.asarray(x)) for x in (q, k, v)]
    kwargs = {n: jnp.asarray(a) if isinstance(a, np.ndarray) else a for n, a in kwargs.items()}
    res = jax.nn.dot_product_attention(*blhd, **kwargs)
    if kwargs.get("return_residual"):
        out, lse = res
        # jax's lse is (B, T, N); ours is (B, N, T)
        return np.asarray(attnspec.blhd_to_bhld(out)), np.swapaxes(np.asarray(lse), -1, -2)
    return np.asarray(attnspec.blhd_to_bhld(res))


def _qkv(rng, dtype, b=2, hq=3, hkv=None, lq=4, lk=6, dk=5, dv=None):
    hkv = hq if hkv is None else hkv
    dv = dk if dv is None else dv
    q = rng.standard_normal((b, hq, lq, dk)).astype(dtype)
    k = rng.standard_normal((b, hkv, lk, dk)).astype(dtype)
    v = rng.standard_normal((b, hkv, lk, dv)).astype(dtype)
    return q, k, v


def _random_mask(rng, shape):
    """A bool mask with roughly 30% False; column 0 stays True so no row is empty."""
    mask = rng.random(shape) < 0.7
    mask[..., 0] = True
    return mask


def _exact_attention(q, k, v, scale=None):
    """Plain float64 attention in NumPy (no masking) for precision comparisons."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


@pytest.fixture
def gen():
    return np.random.default_rng(20240611)


def _close(got, want, tol):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# ------------------------------------------------------------- torch: agreement


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(("dtype", "scale"), [("float64", None), ("float32", 0.3)])
def test_torch_plain(gen, fw, dtype, scale):
    """[ATT-SHAPE-1] [ATT-SCORE-1] unmasked attention (Dv != Dk) with default/explicit scale."""
    q, k, v = _qkv(gen, dtype, dv=3)
    want = _torch_sdpa(q, k, v, scale=scale)
    got = _spec(fw, q, k, v, scale=scale)
    assert got.dtype == np.dtype(dtype)
    _close(got, want, TORCH_TOL[dtype])


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(
    ("mshape", "dtype"),
    [
        ((4, 6), "float64"),
        ((2, 1, 4, 6), "float32"),
        ((2, 3, 4, 6), "float64"),
        ((1, 3, 1, 6), "float32"),
    ],
)
def test_torch_bool_mask(gen, fw, dtype, mshape):
    """[ATT-MASK-1] bool attn_mask (True = attend) broadcast from several shapes."""
    q, k, v = _qkv(gen, dtype)
    mask = _random_mask(gen, mshape)
    _close(_spec(fw, q, k, v, mask=mask), _torch_sdpa(q, k, v, attn_mask=mask), TORCH_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_torch_float_mask_is_bias(gen, fw, dtype):
    """[ATT-BIAS-1] a float attn_mask is an additive bias; its -inf entries mask."""
    q, k, v = _qkv(gen, dtype)
    bias = gen.standard_normal((2, 1, 4, 6)).astype(dtype)
    bias[~_random_mask(gen, bias.shape)] = -np.inf
    want = _torch_sdpa(q, k, v, attn_mask=bias)
    _close(_spec(fw, q, k, v, bias=bias), want, TORCH_TOL[dtype])


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(("lq", "lk", "dtype"), [(4, 6, "float32"), (6, 4, "float64")])
def test_torch_is_causal_is_upper_left(gen, fw, dtype, lq, lk):
    """[ATT-CAUSAL-1] torch's is_causal is causal with upper_left alignment, also for Lq != Lk."""
    q, k, v = _qkv(gen, dtype, lq=lq, lk=lk)
    want = _torch_sdpa(q, k, v, is_causal=True)
    _close(_spec(fw, q, k, v, causal=True), want, TORCH_TOL[dtype])
    _close(_spec(fw, q, k, v, causal=True, alignment="upper_left"), want, TORCH_TOL[dtype])


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(("lq", "lk"), [(4, 6), (6, 4)])
@pytest.mark.parametrize(
    ("alignment", "dtype"), [("upper_left", "float32"), ("lower_right", "float64")]
)
def test_torch_causal_bias_variants(gen, fw, dtype, lq, lk, alignment):
    """[ATT-CAUSAL-1] [ATT-CAUSAL-2] [ATT-EMPTY-1] torch's causal_upper_left/causal_lower_right.

    Lower-right with Lq > Lk leaves the first Lq - Lk rows empty: torch warns that this
    "will produce NaNs", but torch 2.13 returns 0 there, as the spec does.
    """
    q, k, v = _qkv(gen, dtype, lq=lq, lk=lk)
    builder = causal_upper_left if alignment == "upper_left" else causal_lower_right
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cmask = builder(lq, lk)
    want = _torch_sdpa(q, k, v, attn_mask=cmask)
    got = _spec(fw, q, k, v, causal=True, alignment=alignment)
    _close(got, want, TORCH_TOL[dtype])
    if alignment == "lower_right" and lq > lk:
        assert np.all(want[..., : lq - lk, :] == 0)
        assert np.all(got[..., : lq - lk, :] == 0)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(("with_mask", "dtype"), [(False, "float32"), (True, "float64")])
def test_torch_gqa(gen, fw, dtype, with_mask):
    """[ATT-GQA-1] enable_gqa=True: query head h reads kv head h // (Hq // Hkv)."""
    q, k, v = _qkv(gen, dtype, hq=6, hkv=2)
    mask = _random_mask(gen, (2, 6, 4, 6)) if with_mask else None
    want = _torch_sdpa(q, k, v, attn_mask=mask, enable_gqa=True)
    _close(_spec(fw, q, k, v, mask=mask), want, TORCH_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_torch_fully_masked_row_is_zero(gen, fw, dtype):
    """[ATT-EMPTY-1] a fully masked row: torch 2.13 returns 0 (bool and -inf float mask), so
    does attnspec; both sides asserted so a change in torch shows up."""
    q, k, v = _qkv(gen, dtype)
    mask = _random_mask(gen, (2, 3, 4, 6))
    mask[0, 1, 2, :] = False
    bias = np.where(mask, 0.0, -np.inf).astype(dtype)
    for kw_torch, kw_spec in [
        ({"attn_mask": mask}, {"mask": mask}),
        ({"attn_mask": bias}, {"bias": bias}),
    ]:
        want = _torch_sdpa(q, k, v, **kw_torch)
        got = _spec(fw, q, k, v, **kw_spec)
        assert np.all(want[0, 1, 2] == 0)
        assert np.all(got[0, 1, 2] == 0)
        _close(got, want, TORCH_TOL[dtype])


# ------------------------------------------------------- torch: pinned differences


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_torch_pin_nan_key_at_masked_position(gen, fw):
    """[ATT-LEAK-1] NaN in a K row that the bool mask excludes: torch's output is NaN
    everywhere (NaN score + mask still NaN); attnspec ignores it."""
    q, k, v = _qkv(gen, "float64")
    mask = np.ones((4, 6), bool)
    mask[:, 4:] = False
    k_bad = k.copy()
    k_bad[..., 4:, :] = np.nan
    assert np.isnan(_torch_sdpa(q, k_bad, v, attn_mask=mask)).all()
    got = _spec(fw, q, k_bad, v, mask=mask)
    _close(got, _torch_sdpa(q, k[..., :4, :], v[..., :4, :]), 1e-12)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_torch_pin_nan_value_at_padded_key(gen, fw):
    """[ATT-LEAK-2] NaN in V rows past kv_lengths: torch (length mask as attn_mask) returns
    NaN for every row, since 0 * NaN = NaN in P @ V; attnspec with kv_lengths is finite."""
    q, k, v = _qkv(gen, "float64")
    kv_lengths = np.array([4, 6])
    mask = (np.arange(6) < kv_lengths[:, None])[:, None, None, :]
    v_bad = v.copy()
    v_bad[0, :, 4:, :] = np.nan
    assert np.isnan(_torch_sdpa(q, k, v_bad, attn_mask=mask)[0]).all()
    got = _spec(fw, q, k, v_bad, kv_lengths=kv_lengths)
    _close(got, _torch_sdpa(q, k, v, attn_mask=mask), 1e-12)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_torch_pin_softmax_of_all_neg_inf_row(fw):
    """[SMX-1] [SMX-3] torch.softmax / log_softmax of an all -inf row are NaN; attnspec
    gives 0 / -inf.  logsumexp coincides (-inf on both)."""
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.5, -np.inf, 1.0]])
    tx = torch.from_numpy(x)
    assert torch.isnan(torch.softmax(tx, -1)[0]).all()
    assert torch.isnan(torch.log_softmax(tx, -1)[0]).all()
    assert torch.logsumexp(tx, -1)[0].item() == -math.inf
    sm = _np(attnspec.softmax(_to(fw, x)))
    lsm = _np(attnspec.log_softmax(_to(fw, x)))
    lse = _np(attnspec.logsumexp(_to(fw, x)))
    assert np.all(sm[0] == 0)
    assert np.all(lsm[0] == -np.inf)
    assert lse[0] == -np.inf
    # the non-empty row agrees with torch
    _close(sm[1], torch.softmax(tx, -1)[1].numpy(), 1e-15)
    _close(lsm[1], torch.log_softmax(tx, -1)[1].numpy(), 1e-15)
    _close(lse[1], torch.logsumexp(tx, -1)[1].numpy(), 1e-15)


def test_torch_pin_logsumexp_gradient_of_empty_row():
    """[SMX-3] torch.logsumexp's gradient on an all -inf row is NaN; attnspec's is 0."""
    x = torch.full((2, 3), -math.inf, dtype=torch.float64, requires_grad=True)
    (g_torch,) = torch.autograd.grad(torch.logsumexp(x, -1).sum(), x)
    assert torch.isnan(g_torch).all()
    x2 = torch.full((2, 3), -math.inf, dtype=torch.float64, requires_grad=True)
    (g_spec,) = torch.autograd.grad(attnspec.logsumexp(x2, axis=-1).sum(), x2)
    assert torch.equal(g_spec, torch.zeros_like(g_spec))


# --------------------------------------------------------------- jax: agreement


def test_layout_helpers_swap_length_and_heads(gen):
    """bhld_to_blhd / blhd_to_bhld (used to reach jax's (B, T, N, H) layout) swap axes -3, -2."""
    x = jnp.asarray(gen.standard_normal((2, 3, 4, 5)))
    y = attnspec.bhld_to_blhd(x)
    np.testing.assert_array_equal(np.asarray(y), np.swapaxes(np.asarray(x), -3, -2))
    np.testing.assert_array_equal(np.asarray(attnspec.blhd_to_bhld(y)), np.asarray(x))


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(("dtype", "scale"), [("float64", None), ("float32", 0.3)])
def test_jax_plain_and_lse(gen, fw, dtype, scale):
    """[ATT-SCORE-1] [ATT-LSE-1] out and lse (return_residual) in layout (B, T, N, H)."""
    q, k, v = _qkv(gen, dtype)
    want, want_lse = _jax_dpa(q, k, v, scale=scale, return_residual=True)
    got, got_lse = _spec(fw, q, k, v, scale=scale, return_lse=True)
    _close(got, want, JAX_TOL[dtype])
    _close(got_lse, want_lse, JAX_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_jax_bias_and_mask(gen, fw, dtype):
    """[ATT-BIAS-1] [ATT-MASK-1] 4-D bias (a few -inf entries, never a whole row) and bool
    mask, broadcast over batch/heads."""
    q, k, v = _qkv(gen, dtype)
    bias = gen.standard_normal((1, 3, 4, 6)).astype(dtype)
    bias[0, 1, 2, 3:] = -np.inf
    bias[0, 2, 0, 1] = -np.inf
    mask = _random_mask(gen, (2, 1, 4, 6))
    want = _jax_dpa(q, k, v, bias=bias, mask=mask)
    _close(_spec(fw, q, k, v, bias=bias, mask=mask), want, JAX_TOL[dtype])


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(("lq", "lk", "dtype"), [(4, 6, "float32"), (6, 4, "float64")])
def test_jax_is_causal_is_upper_left(gen, fw, dtype, lq, lk):
    """[ATT-CAUSAL-1] jax's is_causal is tril(ones(T, S)): upper_left alignment."""
    q, k, v = _qkv(gen, dtype, lq=lq, lk=lk)
    want = _jax_dpa(q, k, v, is_causal=True)
    _close(_spec(fw, q, k, v, causal=True), want, JAX_TOL[dtype])


def _window_keep(lq, lk, left, right, offset=0):
    i = np.arange(lq)[:, None] + offset
    j = np.arange(lk)[None, :]
    return (j >= i - left) & (j <= i + right)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(
    ("lq", "lk", "window", "causal"),
    [
        (4, 6, 1, False),
        (4, 6, (2, 0), True),
        (4, 6, (1, 3), False),
        (6, 4, (0, 1), False),
        (6, 4, (1, 3), True),
        (6, 4, 2, False),
    ],
)
def test_jax_local_window(gen, fw, lq, lk, window, causal):
    """[ATT-WINDOW-1] local_window_size=(left, right) (an int w means (w, w)) is our window
    with upper_left alignment, ANDed with causal.  Rows the window leaves empty are
    compared in test_jax_pin_fully_masked_row, not here."""
    left, right = (window, window) if isinstance(window, int) else window
    q, k, v = _qkv(gen, "float64", lq=lq, lk=lk)
    want = _jax_dpa(q, k, v, local_window_size=window, is_causal=causal)
    got = _spec(fw, q, k, v, window=(left, right), causal=causal)
    keep = _window_keep(lq, lk, left, right)
    if causal:
        keep &= np.tri(lq, lk, dtype=bool)
    rows = keep.any(-1)
    assert rows.any()
    _close(got[..., rows, :], want[..., rows, :], JAX_TOL["float64"])
    assert np.all(got[..., ~rows, :] == 0)


def test_jax_pin_window_alignment_is_upper_left_when_lengths_differ(gen):
    """[ATT-WINDOW-1] [ATT-CAUSAL-2] measured: jax anchors local_window_size at i == j even
    when T != S (no lower-right option); that is attnspec's upper_left, not lower_right."""
    q, k, v = _qkv(gen, "float64", lq=4, lk=6)
    want = _jax_dpa(q, k, v, local_window_size=(1, 0))
    upper = _spec("numpy", q, k, v, window=(1, 0), alignment="upper_left")
    lower = _spec("numpy", q, k, v, window=(1, 0), alignment="lower_right")
    _close(upper, want, JAX_TOL["float64"])
    assert not np.allclose(lower, want, atol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_jax_seq_lengths(gen, fw, dtype):
    """[ATT-LEN-1] [ATT-LEN-2] query_seq_lengths / key_value_seq_lengths (all > 0): out
    agrees everywhere, padding rows included (both 0); lse agrees on non-padding rows."""
    q, k, v = _qkv(gen, dtype)
    q_len = np.array([4, 2], np.int32)
    kv_len = np.array([3, 6], np.int32)
    want, want_lse = _jax_dpa(
        q, k, v, query_seq_lengths=q_len, key_value_seq_lengths=kv_len, return_residual=True
    )
    got, got_lse = _spec(fw, q, k, v, q_lengths=q_len, kv_lengths=kv_len, return_lse=True)
    _close(got, want, JAX_TOL[dtype])
    assert np.all(want[1, :, 2:] == 0)
    assert np.all(got[1, :, 2:] == 0)
    _close(got_lse[0], want_lse[0], JAX_TOL[dtype])
    _close(got_lse[1, :, :2], want_lse[1, :, :2], JAX_TOL[dtype])


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float64"])
def test_jax_gqa(gen, fw, dtype):
    """[ATT-GQA-1] N = 6 query heads over K = 2 kv heads, with per-head mask and bias."""
    q, k, v = _qkv(gen, dtype, hq=6, hkv=2)
    mask = _random_mask(gen, (2, 6, 4, 6))
    bias = gen.standard_normal((2, 1, 4, 6)).astype(dtype)
    want, want_lse = _jax_dpa(q, k, v, mask=mask, bias=bias, return_residual=True)
    got, got_lse = _spec(fw, q, k, v, mask=mask, bias=bias, return_lse=True)
    _close(got, want, JAX_TOL[dtype])
    _close(got_lse, want_lse, JAX_TOL[dtype])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_jax_nan_key_at_padded_position(gen, fw):
    """[ATT-LEAK-2] NaN in K rows past key_value_seq_lengths: jax replaces the logits there,
    so both sides stay finite and agree."""
    q, k, v = _qkv(gen, "float64")
    kv_len = np.array([4, 6], np.int32)
    k_bad = k.copy()
    k_bad[0, :, 4:, :] = np.nan
    want = _jax_dpa(q, k_bad, v, key_value_seq_lengths=kv_len)
    got = _spec(fw, q, k_bad, v, kv_lengths=kv_len)
    assert np.isfinite(want).all()
    _close(got, want, JAX_TOL["float64"])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_jax_softmax_where_all_false_agrees(fw):
    """[SMX-2] [SMX-3] jax.nn.softmax / log_softmax / logsumexp with where: an all-excluded
    row gives 0 / -inf / -inf in both, and a partial where agrees."""
    x = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    where = np.array([[False, False, False], [True, False, True]])
    jx, jw = jnp.asarray(x), jnp.asarray(where)
    pairs = [
        (jax.nn.softmax(jx, where=jw), attnspec.softmax(_to(fw, x), where=_to(fw, where))),
        (jax.nn.log_softmax(jx, where=jw), attnspec.log_softmax(_to(fw, x), where=_to(fw, where))),
        (
            jax.nn.logsumexp(jx, axis=-1, where=jw),
            attnspec.logsumexp(_to(fw, x), axis=-1, where=_to(fw, where)),
        ),
    ]
    for want, got in pairs:
        np.testing.assert_allclose(_np(got), np.asarray(want), rtol=1e-15, atol=1e-15)


# --------------------------------------------------------- jax: pinned differences


@pytest.mark.parametrize("how", ["mask", "window", "kv_lengths_zero"])
def test_jax_pin_fully_masked_row(gen, how):
    """[ATT-EMPTY-1] [ATT-LEN-1] jax fills masked logits with -0.7 * float32 max (finite), so
    an empty row attends uniformly to all S keys, masked ones included: out = mean(V), lse =
    log(S) - 0.7 * float32 max.  attnspec: out 0, lse -inf."""
    q, k, v = _qkv(gen, "float64", lq=4, lk=6)
    if how == "mask":
        mask = np.ones((2, 1, 4, 6), bool)
        mask[0, 0, 1] = False
        jax_kw, spec_kw, row = {"mask": mask}, {"mask": mask}, (0, slice(None), 1)
    elif how == "window":  # T > S: rows 4 and 5 of a (0, 0) window have no key
        q, k, v = _qkv(gen, "float64", lq=6, lk=4)
        jax_kw, spec_kw = {"local_window_size": (0, 0)}, {"window": (0, 0)}
        row = (slice(None), slice(None), slice(4, None))
    else:
        lens = np.array([0, 6], np.int32)
        jax_kw, spec_kw = {"key_value_seq_lengths": lens}, {"kv_lengths": lens}
        row = (0, slice(None), slice(None))
    want, want_lse = _jax_dpa(q, k, v, return_residual=True, **jax_kw)
    got, got_lse = _spec("numpy", q, k, v, return_lse=True, **spec_kw)
    mean_v = np.broadcast_to(v.mean(axis=-2, keepdims=True), want.shape)  # over all S keys
    np.testing.assert_allclose(want[row], mean_v[row], atol=2e-6)
    lk = k.shape[-2]
    np.testing.assert_allclose(want_lse[row], JAX_LARGE_NEGATIVE + math.log(lk), rtol=1e-6)
    assert np.all(got[row] == 0)
    assert np.all(got_lse[row] == -np.inf)


def test_jax_pin_query_padding_lse(gen):
    """[ATT-LEN-2] padding rows (i >= query_seq_lengths): jax zeroes out but its lse there
    is finite (log(S) - 0.7 * float32 max); attnspec's lse is -inf."""
    q, k, v = _qkv(gen, "float64", lq=4, lk=6)
    q_len = np.array([2, 4], np.int32)
    want, want_lse = _jax_dpa(q, k, v, query_seq_lengths=q_len, return_residual=True)
    got, got_lse = _spec("numpy", q, k, v, q_lengths=q_len, return_lse=True)
    assert np.all(want[0, :, 2:] == 0)
    assert np.all(got[0, :, 2:] == 0)
    np.testing.assert_allclose(want_lse[0, :, 2:], JAX_LARGE_NEGATIVE + math.log(6), rtol=1e-6)
    assert np.all(got_lse[0, :, 2:] == -np.inf)


def test_jax_pin_neg_inf_bias_row(gen):
    """[ATT-BIAS-1] [ATT-EMPTY-1] a row whose bias is all -inf: jax's softmax gives NaN
    (the -inf logits are not replaced, only mask/causal/lengths are); attnspec gives 0."""
    q, k, v = _qkv(gen, "float64")
    bias = np.zeros((2, 1, 4, 6))
    bias[1, 0, 3] = -np.inf
    want = _jax_dpa(q, k, v, bias=bias)
    got = _spec("numpy", q, k, v, bias=bias)
    assert np.isnan(want[1, :, 3]).all()
    assert np.isfinite(np.delete(want, 3, axis=2)).all()
    assert np.all(got[1, :, 3] == 0)
    _close(np.delete(got, 3, axis=2), np.delete(want, 3, axis=2), JAX_TOL["float64"])


def test_jax_pin_nan_value_at_padded_key(gen):
    """[ATT-LEAK-2] NaN in V rows past key_value_seq_lengths: jax returns NaN for the whole
    batch element (0 * NaN in P @ V); attnspec is finite and equals the truncated problem."""
    q, k, v = _qkv(gen, "float64")
    kv_len = np.array([4, 6], np.int32)
    v_bad = v.copy()
    v_bad[0, :, 4:, :] = np.nan
    want = _jax_dpa(q, k, v_bad, key_value_seq_lengths=kv_len)
    assert np.isnan(want[0]).all()
    assert np.isfinite(want[1]).all()
    got = _spec("numpy", q, k, v_bad, kv_lengths=kv_len)
    _close(got[0], _exact_attention(q[0], k[0, :, :4], v[0, :, :4]), 1e-12)


def test_jax_pin_float64_softmax_in_float32(gen):
    """[ATT-DTYPE-1] [ATT-DTYPE-2] jax.nn.dot_product_attention casts logits to float32 for
    the softmax even for float64 input (error ~1e-8 against exact float64); attnspec keeps
    float64 throughout (error ~1e-16)."""
    q, k, v = _qkv(gen, "float64")
    exact = _exact_attention(q, k, v)
    want = _jax_dpa(q, k, v)
    got = _spec("numpy", q, k, v)
    assert want.dtype == np.float64
    jax_err = np.abs(want - exact).max()
    assert 1e-10 < jax_err < 1e-5
    assert np.abs(got - exact).max() < 1e-13


def test_jax_pin_value_dim_must_equal_key_dim(gen):
    """[ATT-SHAPE-1] jax requires Dv == Dk (ValueError); attnspec allows any Dv."""
    q, k, v = _qkv(gen, "float64", dv=3)
    with pytest.raises(ValueError, match="value shape"):
        _jax_dpa(q, k, v)
    _close(_spec("numpy", q, k, v), _exact_attention(q, k, v), 1e-13)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_jax_pin_softmax_of_all_neg_inf_row(fw):
    """[SMX-1] [SMX-3] jax.nn.softmax / log_softmax of an all -inf row (no where) are NaN,
    so jax breaks softmax(x) == softmax(x, where=x > -inf); attnspec gives 0 / -inf.
    jax.nn.logsumexp coincides (-inf)."""
    x = np.array([[-np.inf, -np.inf, -np.inf]])
    jx = jnp.asarray(x)
    assert np.isnan(np.asarray(jax.nn.softmax(jx))).all()
    assert np.isnan(np.asarray(jax.nn.log_softmax(jx))).all()
    assert float(jax.nn.logsumexp(jx)) == -math.inf
    assert np.all(_np(attnspec.softmax(_to(fw, x))) == 0)
    assert np.all(_np(attnspec.log_softmax(_to(fw, x))) == -np.inf)
    assert np.all(_np(attnspec.logsumexp(_to(fw, x))) == -np.inf)
