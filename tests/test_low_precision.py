"""float16 / bfloat16: dtypes of the results, and accuracy no worse than float32 math.

The accuracy bar [ATT-DTYPE-2, SMX-5]: from the same low-precision inputs, the error of
attnspec's result against the float64 golden (``tests/reference.py``) must be within twice the
error of a plain float32 NumPy computation rounded once to the input dtype, plus two ulps of
the input dtype and a little float32 accumulation noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from attn_helpers import exact_in, need_dtype, sdpa, ulp
from reference import ref_attention, ref_log_softmax, ref_logsumexp, ref_softmax

import attnspec

LOW = ["float16", "bfloat16"]
EPS32 = float(np.finfo(np.float32).eps)


def _lp_qkv(rng, dtype, lq=3, lk=5):
    q = exact_in(rng.standard_normal((2, 4, lq, 3)) * 2, dtype)
    k = exact_in(rng.standard_normal((2, 2, lk, 3)), dtype)
    v = exact_in(rng.standard_normal((2, 2, lk, 2)), dtype)
    return q, k, v


def _f32_attention(q, k, v, *, allowed, bias=None, scale=None, softcap=None, keep=None, p=0.0):
    """Textbook attention in float32 NumPy: the baseline the spec measures against."""
    f = np.float32
    g = q.shape[-3] // k.shape[-3]
    q, k, v = q.astype(f), np.repeat(k, g, -3).astype(f), np.repeat(v, g, -3).astype(f)
    scale = f(1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    s = (q @ k.swapaxes(-1, -2)) * scale
    if softcap is not None:
        s = f(softcap) * np.tanh(s / f(softcap))
    if bias is not None:
        s = s + bias.astype(f)
        allowed = allowed & (bias > -np.inf)
    s = np.where(allowed, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, f(0))
    e = np.where(allowed, np.exp(s - m), f(0))
    den = e.sum(-1, keepdims=True)
    w = np.where(den > 0, e / np.where(den > 0, den, f(1)), f(0))
    with np.errstate(divide="ignore"):
        lse = np.where(den > 0, m + np.log(den), -np.inf)[..., 0]
    if keep is not None:
        w = w * keep / f(1 - p)
    return (w @ v).astype(f), lse.astype(f), w.astype(f)


def _assert_within_float32_bar(got, gold, base, dtype, *, noise, what):
    """|got - gold| <= 2 |base - gold| + 2 ulp_dtype(gold) + noise, elementwise."""
    got, gold, base = (np.asarray(a, dtype=np.float64) for a in (got, gold, base))
    assert got.shape == gold.shape, what
    finite = np.isfinite(gold)
    np.testing.assert_array_equal(got[~finite], gold[~finite], err_msg=what)
    noise = np.broadcast_to(noise, gold.shape)[finite]
    got, gold, base = got[finite], gold[finite], base[finite]
    err = np.abs(got - gold)
    base_err = np.abs(base - gold)
    bar = 2 * base_err + 2 * ulp(gold, dtype) + noise
    worst = np.argmax(err - bar) if err.size else None
    assert np.all(err <= bar), (
        f"{what}: error {err[worst]:.3g} > bar {bar[worst]:.3g} "
        f"(float32 baseline error {base_err[worst]:.3g})"
    )


def _cases(rng, lq, lk):
    i, j = np.arange(lq)[:, None], np.arange(lk)[None, :]
    mask = rng.random((2, 4, lq, lk)) < 0.7
    bias = rng.standard_normal((lq, lk))
    bias[0, 1] = -np.inf
    keep = rng.random((2, 4, lq, lk)) < 0.8
    full = np.ones((2, 4, lq, lk), bool)
    return {
        "plain": ({}, {"allowed": full}),
        "mask+bias": ({"mask": mask, "bias": bias}, {"allowed": mask, "bias": bias}),
        "causal": ({"causal": True}, {"allowed": full & (j <= i)}),
        "softcap+scale": (
            {"softcap": 3.0, "scale": 1.5},
            {"allowed": full, "softcap": 3.0, "scale": 1.5},
        ),
        "dropout": (
            {"dropout_mask": keep, "dropout_p": 0.2},
            {"allowed": full, "keep": keep, "p": 0.2},
        ),
    }


@pytest.mark.parametrize("dtype", LOW)
def test_attention_dtypes(xb, rng, dtype):
    """ATT-DTYPE-1, ATT-DTYPE-2: out and weights keep the input dtype; lse is float32."""
    need_dtype(xb, dtype)
    q, k, v = _lp_qkv(rng, dtype)
    out, lse, w = sdpa(xb, dtype, q, k, v, causal=True)
    assert out.dtype == xb.dtype(dtype)
    assert w.dtype == xb.dtype(dtype)
    assert lse.dtype == xb.dtype("float32")


@pytest.mark.parametrize("dtype", LOW)
def test_attention_accuracy_vs_float32(xb, rng, dtype):
    """ATT-DTYPE-2: float16/bfloat16 accumulate in float32 and round once: the error is within
    a small factor of a float32 computation rounded to the input dtype."""
    need_dtype(xb, dtype)
    q, k, v = _lp_qkv(rng, dtype)
    vmax = float(np.abs(v).max())
    for name, (opts, base_opts) in _cases(rng, 3, 5).items():
        if "bias" in opts:
            opts["bias"] = base_opts["bias"] = exact_in(opts["bias"], dtype)
        got = [
            np.asarray(xb.to_numpy(r), dtype=np.float64) for r in sdpa(xb, dtype, q, k, v, **opts)
        ]
        gold = ref_attention(q, k, v, **opts)
        base_out, base_lse, base_w = _f32_attention(q, k, v, **base_opts)
        base = (exact_in(base_out, dtype), base_lse, exact_in(base_w, dtype))
        _assert_within_float32_bar(
            got[0], gold[0], base[0], dtype, noise=8 * EPS32 * vmax, what=f"{name} out"
        )
        _assert_within_float32_bar(
            got[2], gold[2], base[2], dtype, noise=8 * EPS32, what=f"{name} weights"
        )
        lse_noise = 8 * EPS32 * np.maximum(1, np.abs(np.where(np.isfinite(gold[1]), gold[1], 0)))
        _assert_within_float32_bar(
            got[1], gold[1], base[1], "float32", noise=lse_noise, what=f"{name} lse"
        )


@pytest.mark.parametrize("dtype", LOW)
def test_wider_bias_is_accepted(xb, rng, dtype):
    """ATT-DTYPE-1, ATT-BIAS-1: bias may have any real floating precision (here float32 with
    low-precision q/k/v); it is used at accumulation precision."""
    need_dtype(xb, dtype)
    q, k, v = _lp_qkv(rng, dtype)
    bias = exact_in(rng.standard_normal((3, 5)), "float32")
    qa, ka, va = (xb.from_numpy(a, dtype=dtype) for a in (q, k, v))
    out, lse = attnspec.scaled_dot_product_attention(
        qa, ka, va, bias=xb.from_numpy(bias, dtype="float32"), return_lse=True
    )
    assert out.dtype == xb.dtype(dtype)
    gold = ref_attention(q, k, v, bias=bias)
    base = _f32_attention(q, k, v, allowed=np.ones((2, 4, 3, 5), bool), bias=bias)
    _assert_within_float32_bar(
        xb.to_numpy(out),
        gold[0],
        exact_in(base[0], dtype),
        dtype,
        noise=8 * EPS32 * np.abs(v).max(),
        what="out",
    )
    np.testing.assert_allclose(np.asarray(xb.to_numpy(lse), np.float64), gold[1], rtol=1e-5)


def _mixed_pairs(xb):
    names = [d for d in ("float64", "float32", "float16", "bfloat16") if d in xb.dtypes]
    return [(a, b) for a in names for b in names if a != b]


def test_mismatched_dtypes_raise_type_error(xb, rng):
    """ATT-DTYPE-1, ATT-ARG-1: q, k, v must share one real floating dtype."""
    q, k, v = _lp_qkv(rng, "float16")
    pairs = _mixed_pairs(xb)
    if not pairs:
        pytest.skip(f"{xb.name}: only one floating dtype")
    for a, b in pairs:
        qa = xb.from_numpy(q, dtype=a)
        for kd, vd in ((b, a), (a, b), (b, b)):
            with pytest.raises(TypeError):
                attnspec.scaled_dot_product_attention(
                    qa, xb.from_numpy(k, dtype=kd), xb.from_numpy(v, dtype=vd)
                )


def test_non_floating_inputs_raise_type_error(xb, rng):
    """ATT-DTYPE-1, ATT-ARG-1: integer q/k/v, a non-bool mask or dropout_mask, non-integer
    lengths and a non-floating bias are TypeErrors."""
    q, k, v = _lp_qkv(rng, "float32")
    qa, ka, va = (xb.from_numpy(a, dtype="float32") for a in (q, k, v))
    ints = [xb.from_numpy(np.round(a).astype(np.int32)) for a in (q, k, v)]
    with pytest.raises(TypeError):
        attnspec.scaled_dot_product_attention(*ints)
    bad = {
        "mask": xb.from_numpy(np.ones((3, 5), np.float32), dtype="float32"),
        "dropout_mask": xb.from_numpy(np.ones((3, 5), np.int32)),
        "kv_lengths": xb.from_numpy(np.array([1.0, 2.0]), dtype="float32"),
        "q_lengths": xb.from_numpy(np.array([1.0, 2.0]), dtype="float32"),
        "bias": xb.from_numpy(np.ones((3, 5), np.int32)),
    }
    for name, value in bad.items():
        with pytest.raises(TypeError, match=name):
            attnspec.scaled_dot_product_attention(qa, ka, va, **{name: value})


# ---------------------------------------------------------------- softmax family


def _f32_softmax_family(x, where):
    f = np.float32
    x = x.astype(f)
    inc = where & (x > -np.inf)
    m = np.max(np.where(inc, x, -np.inf), axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, f(0))
    e = np.where(inc, np.exp(np.where(inc, x - m, f(0))), f(0))
    den = e.sum(-1, keepdims=True)
    sm = np.where(den > 0, e / np.where(den > 0, den, f(1)), f(0))
    with np.errstate(divide="ignore", invalid="ignore"):  # empty rows: -inf - -inf, masked
        log_den = np.log(den)
        lsm = np.where(inc, (x - m) - log_den, -np.inf)
        lse = np.where(den[..., 0] > 0, m[..., 0] + log_den[..., 0], -np.inf)
    return sm, lsm.astype(f), lse.astype(f)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("use_where", [False, True])
def test_softmax_family_low_precision(xb, rng, dtype, use_where):
    """SMX-5: float16/bfloat16 softmax, log_softmax and logsumexp keep the input dtype and
    are as accurate as float32 math rounded once to it."""
    need_dtype(xb, dtype)
    x = exact_in(rng.standard_normal((4, 6)) * 6, dtype)
    x[1, 2] = -np.inf
    x[3, :] = -np.inf
    where = rng.random(x.shape) < 0.7 if use_where else np.ones(x.shape, bool)
    kw = {"where": xb.from_numpy(where)} if use_where else {}
    xa = xb.from_numpy(x, dtype=dtype)
    got = (
        attnspec.softmax(xa, **kw),
        attnspec.log_softmax(xa, **kw),
        attnspec.logsumexp(xa, **kw),
    )
    gold = (
        ref_softmax(x, where=where),
        ref_log_softmax(x, where=where),
        ref_logsumexp(x, where=where),
    )
    base = _f32_softmax_family(x, where)
    for name, g, gd, b in zip(
        ("softmax", "log_softmax", "logsumexp"), got, gold, base, strict=True
    ):
        assert g.dtype == xb.dtype(dtype), name
        with np.errstate(over="ignore"):
            b = exact_in(b, dtype)
        noise = 8 * EPS32 * np.maximum(1, np.abs(np.where(np.isfinite(gd), gd, 0)))
        _assert_within_float32_bar(xb.to_numpy(g), gd, b, dtype, noise=noise, what=name)


def test_softmax_rejects_non_floating(xb):
    """SMX-5, ATT-ARG-1: integer or bool input is a TypeError."""
    for a in (np.arange(6, dtype=np.int32).reshape(2, 3), np.ones((2, 3), bool)):
        xa = xb.from_numpy(a)
        for f in (attnspec.softmax, attnspec.log_softmax, attnspec.logsumexp):
            with pytest.raises(TypeError):
                f(xa)
