"""Gradients of attnspec through torch autograd and jax.grad.

* Fully masked rows (mask all False, kv_lengths = 0, q_lengths padding, an all -inf bias
  row, a window with no key) give finite gradients everywhere and contribute nothing.
* float64 gradients agree with finite differences (torch.autograd.gradcheck; a central
  difference along random directions for JAX).
* softmax / log_softmax / logsumexp gradients with ``where`` and empty rows are finite and
  match the framework's own softmax gradient on the entries that row includes.
* NaN in K/V rows past kv_lengths does not reach any gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

import attnspec

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

# conftest.py enables this too; repeated here so the file also runs on its own.
jax.config.update("jax_enable_x64", True)

B, H, LQ, LK, D = 2, 2, 4, 5, 3


def _problem(case, seed=0):
    """q, k, v, bias and attnspec keyword args for one empty-row case.

    Returns the NumPy arrays, the kwargs (NumPy) and two bool arrays: ``empty_rows`` of shape
    (B, H, LQ) (rows with no attended key) and ``dead`` of shape (B, H, LQ, LK) (positions
    that are never attended).
    """
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, LQ, D))
    k = rng.standard_normal((B, H, LK, D))
    v = rng.standard_normal((B, H, LK, D))
    bias = rng.standard_normal((B, H, LQ, LK))
    dead = np.zeros((B, H, LQ, LK), bool)
    kwargs = {}
    if case == "mask_row":
        mask = rng.random((B, 1, LQ, LK)) < 0.7
        mask[..., 0] = True
        mask[0, 0, 2, :] = False
        kwargs["mask"] = mask
        dead |= ~mask
    elif case == "kv_lengths_zero":
        kwargs["kv_lengths"] = np.array([0, 3])
        dead[0] = True
        dead[1, ..., 3:] = True
    elif case == "q_lengths":
        kwargs["q_lengths"] = np.array([2, 4])
        dead[0, :, 2:, :] = True
    elif case == "bias_row":
        bias[1, 1, 0, :] = -np.inf
        bias[0, 0, 1, 2] = -np.inf
        dead |= bias == -np.inf
    elif case == "window_row":
        kwargs.update(causal=True, alignment="lower_right", window=(0, 0))
        kwargs["kv_lengths"] = np.array([2, 5])
        # keep only j == i + offset, offset = kv_len - Lq: -2 for batch 0 (rows 0, 1 empty)
        i = np.arange(LQ)[:, None]
        j = np.arange(LK)[None, :]
        dead[0] = ~((j == i - 2) & (j < 2))
        dead[1] = ~(j == i + 1)
    else:
        raise AssertionError(case)
    return (q, k, v, bias), kwargs, dead.all(-1), dead


EMPTY_CASES = ["mask_row", "kv_lengths_zero", "q_lengths", "bias_row", "window_row"]


def _cotangents(seed=1):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((B, H, LQ, D)),
        rng.standard_normal((B, H, LQ)),
        rng.standard_normal((B, H, LQ, LK)),
    )


def _check_empty_row_grads(grads, empty_rows, dead):
    """Finite everywhere; zero for q at empty rows, bias at dead positions, and k/v at keys
    that no query of that (batch, head) attends."""
    gq, gk, gv, gb = grads
    for g in grads:
        assert np.isfinite(g).all()
    assert np.all(gq[empty_rows] == 0)
    assert np.all(gb[dead] == 0)
    unused_keys = dead.all(-2)  # (B, H, LK)
    assert np.all(gk[unused_keys] == 0)
    assert np.all(gv[unused_keys] == 0)
    # and something does flow elsewhere
    assert np.abs(gq).sum() > 0
    assert np.abs(gv).sum() > 0


def _torch_kwargs(kwargs):
    return {
        n: torch.as_tensor(np.asarray(a)) if isinstance(a, np.ndarray) else a
        for n, a in kwargs.items()
    }


def _jax_kwargs(kwargs):
    return {n: jnp.asarray(a) if isinstance(a, np.ndarray) else a for n, a in kwargs.items()}


# -------------------------------------------------------------- empty rows: torch


@pytest.mark.parametrize("case", EMPTY_CASES)
def test_torch_grads_with_empty_rows(case):
    """[ATT-EMPTY-1] [ATT-LEN-1] [ATT-LEN-2] [ATT-BIAS-1] torch autograd through out, lse and
    weights, with a nonzero cotangent on every entry (empty rows' -inf lse included): all
    gradients finite, zero from empty rows and masked positions."""
    arrays, kwargs, empty_rows, dead = _problem(case)
    leaves = [torch.tensor(a, requires_grad=True) for a in arrays]
    q, k, v, bias = leaves
    out = attnspec.scaled_dot_product_attention(
        q, k, v, bias=bias, return_lse=True, return_weights=True, **_torch_kwargs(kwargs)
    )
    assert np.all(out[1].detach().numpy()[empty_rows] == -np.inf)
    cots = [torch.tensor(c) for c in _cotangents()]
    grads = torch.autograd.grad(out, leaves, grad_outputs=cots)
    _check_empty_row_grads([g.numpy() for g in grads], empty_rows, dead)


def test_torch_q_padding_rows_contribute_nothing():
    """[ATT-LEN-2] [ATT-EMPTY-1] gradients w.r.t. k and v with q_lengths padding equal those of
    the problem with the padding rows cut off."""
    (q, k, v, _), kwargs, _, _ = _problem("q_lengths")
    g_out, g_lse, _ = _cotangents()

    def grads(qn, kn, vn, g, gl, **kw):
        leaves = [torch.tensor(a, requires_grad=True) for a in (qn, kn, vn)]
        out, lse = attnspec.scaled_dot_product_attention(*leaves, return_lse=True, **kw)
        masked_lse = torch.where(torch.isfinite(lse), lse, 0.0)
        loss = (out * torch.tensor(g)).sum() + (masked_lse * torch.tensor(gl)).sum()
        return [x.numpy() for x in torch.autograd.grad(loss, leaves)]

    _, gk, gv = grads(q, k, v, g_out, g_lse, **_torch_kwargs(kwargs))
    for b, n in enumerate(kwargs["q_lengths"]):
        sl = slice(b, b + 1)
        _, gk_b, gv_b = grads(q[sl, :, :n], k[sl], v[sl], g_out[sl, :, :n], g_lse[sl, :, :n])
        np.testing.assert_allclose(gk[sl], gk_b, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gv[sl], gv_b, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- empty rows: jax


@pytest.mark.parametrize("case", EMPTY_CASES)
def test_jax_grads_with_empty_rows(case):
    """[ATT-EMPTY-1] [ATT-LEN-1] [ATT-LEN-2] [ATT-BIAS-1] jax.vjp through out, lse and
    weights (nonzero cotangents everywhere) and jax.grad of a scalar loss: finite, zero from
    empty rows and masked positions.  Jitted: one compile each instead of op-by-op dispatch
    (eager jax gradients are exercised by the softmax and NaN-padding tests below)."""
    arrays, kwargs, empty_rows, dead = _problem(case)
    jkw = _jax_kwargs(kwargs)

    def f(q, k, v, bias):
        return attnspec.scaled_dot_product_attention(
            q, k, v, bias=bias, return_lse=True, return_weights=True, **jkw
        )

    leaves = [jnp.asarray(a) for a in arrays]
    cots = tuple(jnp.asarray(c) for c in _cotangents())

    def loss(q, k, v, bias):
        out, lse, w = f(q, k, v, bias)
        return (
            jnp.sum(out * cots[0])
            + jnp.sum(jnp.where(jnp.isfinite(lse), lse, 0.0) * cots[1])
            + jnp.sum(w * cots[2])
        )

    @jax.jit  # one program for both, to keep compile time down
    def vjp_and_grad(*leaves):
        outs, vjp = jax.vjp(f, *leaves)
        return outs, vjp(cots), jax.grad(loss, argnums=(0, 1, 2, 3))(*leaves)

    outs, vjp_grads, loss_grads = vjp_and_grad(*leaves)
    assert np.all(np.asarray(outs[1])[empty_rows] == -np.inf)
    for grads in (vjp_grads, loss_grads):
        _check_empty_row_grads([np.asarray(g) for g in grads], empty_rows, dead)


# ------------------------------------------------------- finite differences: torch

GRADCHECK_CASES = {
    "causal_softcap": {"causal": True, "softcap": 1.3, "scale": 0.8},
    "lengths_window": {
        "kv_lengths": np.array([3, 5]),
        "q_lengths": np.array([3, 2]),
        "window": (1, 1),
        "alignment": "lower_right",
    },
    "mask_empty_row": {"mask": np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 1]], bool)},
    # Rows with one key: their sum is exactly exp(0) = 1, next to the divisor's floor (1/2,
    # attnspec/_normalizer.py), and their output is that key's value row.
    "mask_one_key_rows": {"mask": np.array([[0, 0, 1, 0, 0], [1, 0, 0, 0, 0],
                                            [0, 1, 0, 1, 1]], bool)},
    "dropout": {
        "dropout_p": 0.4,
        "dropout_mask": np.random.default_rng(7).random((2, 2, 3, 5)) < 0.6,
    },
}


@pytest.mark.parametrize("gqa", [False, True])
@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_torch_gradcheck(case, gqa):
    """[ATT-SCORE-1] [ATT-SOFTCAP-1] [ATT-BIAS-1] [ATT-MASK-1] [ATT-GQA-1] [ATT-LEN-1]
    [ATT-DROPOUT-1] [ATT-EMPTY-1] torch.autograd.gradcheck in float64 of out, lse (empty
    rows replaced by 0) and weights w.r.t. q, k, v and bias."""
    rng = np.random.default_rng(8)
    hkv = 1 if gqa else 2
    q = torch.tensor(rng.standard_normal((2, 2, 3, 2)), requires_grad=True)
    k = torch.tensor(rng.standard_normal((2, hkv, 5, 2)), requires_grad=True)
    v = torch.tensor(rng.standard_normal((2, hkv, 5, 3)), requires_grad=True)
    bias = torch.tensor(rng.standard_normal((1, 2, 3, 5)), requires_grad=True)
    kwargs = _torch_kwargs(GRADCHECK_CASES[case])

    def f(q, k, v, bias):
        out, lse, w = attnspec.scaled_dot_product_attention(
            q, k, v, bias=bias, return_lse=True, return_weights=True, **kwargs
        )
        return out, torch.where(torch.isfinite(lse), lse, 0.0), w

    assert torch.autograd.gradcheck(f, (q, k, v, bias), eps=1e-6, atol=1e-7, rtol=1e-5)


# --------------------------------------------------------- finite differences: jax


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_jax_grad_matches_central_differences(case):
    """[ATT-SCORE-1] [ATT-SOFTCAP-1] [ATT-BIAS-1] [ATT-MASK-1] [ATT-LEN-1] [ATT-DROPOUT-1]
    [ATT-EMPTY-1] jax.grad of a scalar loss of out, lse and weights, in float64, against a
    central difference along random directions in (q, k, v, bias).  Both sides are jitted:
    one compile each instead of op-by-op dispatch."""
    rng = np.random.default_rng(9)
    shapes = [(2, 2, 3, 2), (2, 1, 5, 2), (2, 1, 5, 3), (1, 2, 3, 5)]
    x0 = [jnp.asarray(rng.standard_normal(s)) for s in shapes]
    kwargs = _jax_kwargs(GRADCHECK_CASES[case])
    g_out = jnp.asarray(rng.standard_normal((2, 2, 3, 3)))
    g_lse = jnp.asarray(rng.standard_normal((2, 2, 3)))
    g_w = jnp.asarray(rng.standard_normal((2, 2, 3, 5)))

    def loss(q, k, v, bias):
        out, lse, w = attnspec.scaled_dot_product_attention(
            q, k, v, bias=bias, return_lse=True, return_weights=True, **kwargs
        )
        lse = jnp.where(jnp.isfinite(lse), lse, 0.0)
        return jnp.sum(out * g_out) + jnp.sum(lse * g_lse) + jnp.sum(w * g_w)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*x0)
    loss = jax.jit(loss)
    eps = 1e-6
    for _ in range(3):
        d = [jnp.asarray(rng.standard_normal(s)) for s in shapes]
        plus = loss(*(x + eps * dx for x, dx in zip(x0, d, strict=True)))
        minus = loss(*(x - eps * dx for x, dx in zip(x0, d, strict=True)))
        numeric = float(plus - minus) / (2 * eps)
        analytic = sum(float(jnp.vdot(g, dx)) for g, dx in zip(grads, d, strict=True))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------- softmax family


def _softmax_case(use_where):
    """x with a -inf entry and an all -inf row; where with an all-excluded row."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((5, 4))
    x[1, 2] = -np.inf
    x[4, :] = -np.inf
    where = rng.random((5, 4)) < 0.7
    where[:, 0] = True
    where[3, :] = False
    if not use_where:
        where = np.ones_like(where)
    empty = ~(where & (x > -np.inf)).any(-1)
    return x, where, empty


def _cotangent(name, seed=11):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((5,) if name == "logsumexp" else (5, 4))


def _no_mass_cotangent(name, x, where):
    """A cotangent, zero where log_softmax outputs the constant -inf (there torch and JAX
    differ from the spec: see test_log_softmax_no_mass_entries_pass_no_gradient)."""
    g = _cotangent(name)
    return np.where(where & (x > -np.inf), g, 0.0) if name == "log_softmax" else g


def _torch_native_grad(name, x, where, g):
    """torch's own gradient of fn(x with excluded entries set to -inf) (NaN on empty rows)."""
    xt = torch.tensor(x, requires_grad=True)
    xm = torch.where(torch.tensor(where), xt, -np.inf)
    out = {
        "softmax": torch.softmax,
        "log_softmax": torch.log_softmax,
        "logsumexp": torch.logsumexp,
    }[name](xm, -1)
    (grad,) = torch.autograd.grad(out, xt, grad_outputs=torch.tensor(g))
    return grad.numpy()


def _jax_native_grad(name, x, where, g):
    """jax.nn's own gradient of fn(x, where=where) (NaN on all -inf rows without where)."""
    fn = getattr(jax.nn, name)
    w = None if where.all() else jnp.asarray(where)
    _, vjp = jax.vjp(lambda t: fn(t, axis=-1, where=w), jnp.asarray(x))
    return np.asarray(vjp(jnp.asarray(g))[0])


def _check_softmax_family_grads(name, got, want, where, empty):
    assert np.isfinite(got).all()
    # excluded entries do not enter the output at all
    assert np.all(got[~where] == 0)
    assert np.all(got[empty] == 0)
    np.testing.assert_allclose(got[~empty], want[~empty], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("use_where", [False, True])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_torch_softmax_family_grads(name, use_where):
    """[SMX-1] [SMX-2] [SMX-3] torch autograd of softmax/log_softmax/logsumexp with where,
    -inf entries and empty rows, cotangents nonzero everywhere: finite, zero at excluded
    entries, and on non-empty rows equal to torch's own gradient of the same function with
    the excluded entries set to -inf."""
    x, where, empty = _softmax_case(use_where)
    g = _no_mass_cotangent(name, x, where)
    xt = torch.tensor(x, requires_grad=True)
    out = getattr(attnspec, name)(xt, axis=-1, where=torch.tensor(where) if use_where else None)
    (got,) = torch.autograd.grad(out, xt, grad_outputs=torch.tensor(g))
    want = _torch_native_grad(name, x, where, g)
    _check_softmax_family_grads(name, got.numpy(), want, where, empty)


@pytest.mark.parametrize("use_where", [False, True])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_jax_softmax_family_grads(name, use_where):
    """[SMX-1] [SMX-2] [SMX-3] jax.vjp of softmax/log_softmax/logsumexp with where, -inf
    entries and empty rows: finite, zero at excluded entries, equal to jax.nn's gradient on
    non-empty rows."""
    x, where, empty = _softmax_case(use_where)
    g = _no_mass_cotangent(name, x, where)
    w = jnp.asarray(where) if use_where else None
    fn = getattr(attnspec, name)
    _, vjp = jax.vjp(lambda t: fn(t, axis=-1, where=w), jnp.asarray(x))
    got = np.asarray(vjp(jnp.asarray(g))[0])
    want = _jax_native_grad(name, x, where, g)
    _check_softmax_family_grads(name, got, want, where, empty)


def test_log_softmax_no_mass_entries_pass_no_gradient():
    """[SMX-2] log_softmax outputs the constant -inf at excluded and at -inf entries, so a
    cotangent arriving there contributes nothing: grad_i = g_i - p_i * sum(g over entries
    with mass). Measured differences, pinned: jax.nn.log_softmax(where=) drops the cotangent
    of where-excluded entries but passes that of -inf entries into the row; torch (given the
    excluded entries as -inf) passes both."""
    x, where, empty = _softmax_case(True)
    rows = ~empty
    x, where = x[rows], where[rows]
    mass = where & (x > -np.inf)
    assert (where & ~mass).any(), "the case needs an included -inf entry"
    g = _cotangent("log_softmax")[rows]
    p = np.asarray(attnspec.softmax(x, where=where))

    def rule(passes):
        return np.where(mass, g - p * np.where(passes, g, 0.0).sum(-1, keepdims=True), 0.0)

    spec_rule, jax_rule, torch_rule = rule(mass), rule(where), rule(np.ones_like(where))
    _, vjp = jax.vjp(lambda t: attnspec.log_softmax(t, where=jnp.asarray(where)), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(g))[0]), spec_rule, atol=1e-14)
    xt = torch.tensor(x, requires_grad=True)
    out = attnspec.log_softmax(xt, where=torch.tensor(where))
    (got,) = torch.autograd.grad(out, xt, grad_outputs=torch.tensor(g))
    np.testing.assert_allclose(got.numpy(), spec_rule, atol=1e-14)

    assert not np.allclose(spec_rule, jax_rule)
    assert not np.allclose(spec_rule, torch_rule)
    native_jax = _jax_native_grad("log_softmax", x, where, g)
    np.testing.assert_allclose(np.where(mass, native_jax, 0.0), jax_rule, atol=1e-14)
    native_torch = _torch_native_grad("log_softmax", x, where, g)
    np.testing.assert_allclose(np.where(mass, native_torch, 0.0), torch_rule, atol=1e-14)


# --------------------------------------------------------- NaN in padded K/V rows


def _nan_padded_problem():
    rng = np.random.default_rng(12)
    q = rng.standard_normal((B, H, LQ, D))
    k = rng.standard_normal((B, H, LK, D))
    v = rng.standard_normal((B, H, LK, D))
    kv_lengths = np.array([3, 5])
    k_bad, v_bad = k.copy(), v.copy()
    k_bad[0, :, 3:] = np.nan
    v_bad[0, :, 3:] = np.nan
    return q, (k, v), (k_bad, v_bad), kv_lengths


def _check_nan_padded_grads(grads_bad, grads_clean):
    gq, gk, gv = grads_bad
    assert np.isfinite(gq).all()
    np.testing.assert_allclose(gq, grads_clean[0], rtol=1e-12, atol=1e-14)
    # valid key rows: as without the NaNs; padded key rows: no gradient at all
    for got, want in ((gk, grads_clean[1]), (gv, grads_clean[2])):
        np.testing.assert_allclose(got[0, :, :3], want[0, :, :3], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-14)
        assert np.all(got[0, :, 3:] == 0)


def test_torch_nan_in_padded_kv_keeps_grads_finite():
    """[ATT-LEAK-2] [ATT-LEN-1] NaN in K and V rows past kv_lengths: torch gradients w.r.t. q
    stay finite and equal the clean ones; padded K/V rows get zero gradient."""
    q, clean, bad, kv_lengths = _nan_padded_problem()
    g_out, g_lse, g_w = _cotangents(13)

    def grads(k, v):
        leaves = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
        out = attnspec.scaled_dot_product_attention(
            *leaves,
            kv_lengths=torch.tensor(kv_lengths),
            return_lse=True,
            return_weights=True,
        )
        cots = [torch.tensor(c) for c in (g_out, g_lse, g_w)]
        return [g.numpy() for g in torch.autograd.grad(out, leaves, grad_outputs=cots)]

    _check_nan_padded_grads(grads(*bad), grads(*clean))


def test_jax_nan_in_padded_kv_keeps_grads_finite():
    """[ATT-LEAK-2] [ATT-LEN-1] the same under (jitted) jax.vjp."""
    q, clean, bad, kv_lengths = _nan_padded_problem()
    cots = tuple(jnp.asarray(c) for c in _cotangents(13))

    def grads(k, v):
        def f(q, k, v):
            return attnspec.scaled_dot_product_attention(
                q,
                k,
                v,
                kv_lengths=jnp.asarray(kv_lengths),
                return_lse=True,
                return_weights=True,
            )

        @jax.jit
        def grads_of(q, k, v):
            return jax.vjp(f, q, k, v)[1](cots)

        return [np.asarray(g) for g in grads_of(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))]

    _check_nan_padded_grads(grads(*bad), grads(*clean))


def test_logsumexp_empty_row_gradient_differs_from_frameworks():
    """[SMX-3] measured difference, pinned: torch.logsumexp and jax.nn.logsumexp give NaN
    gradients on an all -inf row (0 * inf in their backward); attnspec gives 0."""
    x = np.array([[-np.inf, -np.inf], [0.0, 1.0]])
    xt = torch.tensor(x, requires_grad=True)
    (native_torch,) = torch.autograd.grad(torch.logsumexp(xt, -1).sum(), xt)
    (ours_torch,) = torch.autograd.grad(attnspec.logsumexp(xt).sum(), xt)
    native_jax = jax.grad(lambda t: jax.nn.logsumexp(t, axis=-1).sum())(jnp.asarray(x))
    ours_jax = jax.grad(lambda t: attnspec.logsumexp(t).sum())(jnp.asarray(x))
    assert np.isnan(native_torch.numpy()[0]).all()
    assert np.isnan(np.asarray(native_jax)[0]).all()
    for ours in (ours_torch.numpy(), np.asarray(ours_jax)):
        np.testing.assert_array_equal(ours[0], 0.0)
        np.testing.assert_allclose(ours[1], np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum())
