"""attnspec under program transformations: ``jax.jit`` tracing and Dask's lazy graphs.

Under ``jax.jit`` every array argument (masks, biases, lengths, dropout masks, weights) is a
tracer, so no code path may turn an array into a Python value; static arguments are bound
with ``functools.partial``.  The jitted result must match the eager one.

On Dask the whole call must only build a graph: it runs under a scheduler that raises if
anything is computed, returns a Dask array from multi-chunk inputs, and, computed with the
synchronous scheduler, matches attnspec on NumPy.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import attnspec

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

# conftest.py enables this too; repeated here so the file also runs on its own.
jax.config.update("jax_enable_x64", True)

B, HQ, HKV, LQ, LK, DK, DV = 2, 4, 2, 5, 6, 3, 2


def _inputs(seed=0):
    """q/k/v plus one of every array argument, as NumPy; includes empty rows on purpose."""
    rng = np.random.default_rng(seed)
    mask = rng.random((B, 1, LQ, LK)) < 0.7
    mask[0, 0, 1, :] = False  # a fully masked row
    bias = rng.standard_normal((1, HQ, LQ, LK))
    bias[0, 0, 2, 3] = -np.inf
    return {
        "q": rng.standard_normal((B, HQ, LQ, DK)),
        "k": rng.standard_normal((B, HKV, LK, DK)),
        "v": rng.standard_normal((B, HKV, LK, DV)),
        "mask": mask,
        "bias": bias,
        "kv_lengths": np.array([4, 0]),  # batch 1 has no keys at all
        "q_lengths": np.array([3, 5]),
        "dropout_mask": rng.random((B, HQ, LQ, LK)) < 0.75,
    }


# (case id, static keyword arguments, names of array keyword arguments)
SDPA_CASES = [
    ("plain", {}, []),
    ("mask", {}, ["mask"]),
    ("bias", {"scale": 0.7}, ["bias"]),
    ("causal_window", {"causal": True, "window": (2, 1)}, []),
    ("kv_lengths", {}, ["kv_lengths"]),
    (
        "lower_right_lengths",
        {"causal": True, "alignment": "lower_right"},
        ["kv_lengths", "q_lengths"],
    ),
    ("dropout", {"dropout_p": 0.25}, ["dropout_mask"]),
    (
        "everything",
        {"causal": True, "window": (3, None), "softcap": 2.0, "dropout_p": 0.25},
        ["mask", "bias", "kv_lengths", "q_lengths", "dropout_mask"],
    ),
]
RETURNS = [
    {},
    {"return_lse": True},
    {"return_weights": True},
    {"return_lse": True, "return_weights": True},
]


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _assert_same(got, want, tol=1e-12):
    got, want = _as_tuple(got), _as_tuple(want)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


# ---------------------------------------------------------------------------- jax.jit


def _jit_matches_eager(fn, *args):
    args = [jnp.asarray(a) for a in args]
    eager = fn(*args)
    jitted = jax.jit(fn)(*args)
    _assert_same(jitted, eager)
    return jitted


@pytest.mark.parametrize(
    ("name", "axis"), [("softmax", -1), ("softmax", 0), ("log_softmax", -1), ("logsumexp", 0)]
)
def test_jit_softmax_family_with_traced_where(name, axis):
    """[SMX-1] [SMX-2] [SMX-3] softmax/log_softmax/logsumexp jit with ``where`` traced;
    rows that are empty (all excluded, or all -inf) included."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5))
    x[3, :] = -np.inf
    where = rng.random((4, 5)) < 0.6
    where[1, :] = False
    where[:, 2] = False
    fn = getattr(attnspec, name)
    kw = {"keepdims": True} if name == "logsumexp" else {}
    _jit_matches_eager(lambda x, w: fn(x, axis=axis, where=w, **kw), x, where)
    _jit_matches_eager(functools.partial(fn, axis=axis), x)


@pytest.mark.parametrize(("case", "static", "arrays"), SDPA_CASES, ids=[c[0] for c in SDPA_CASES])
def test_jit_sdpa(case, static, arrays):
    """[ATT-MASK-1] [ATT-BIAS-1] [ATT-CAUSAL-2] [ATT-WINDOW-1] [ATT-LEN-1] [ATT-LEN-2]
    [ATT-SOFTCAP-1] [ATT-DROPOUT-1] [ATT-LSE-1] [ATT-WEIGHTS-1] [ATT-EMPTY-1]
    scaled_dot_product_attention under jax.jit with every array argument traced."""
    data = _inputs()
    returns = RETURNS[-1] if case in ("plain", "everything") else {"return_lse": True}

    def fn(q, k, v, *extra):
        kwargs = dict(zip(arrays, extra, strict=True))
        return attnspec.scaled_dot_product_attention(q, k, v, **static, **returns, **kwargs)

    out = _jit_matches_eager(fn, data["q"], data["k"], data["v"], *(data[n] for n in arrays))
    for arr in out:
        assert not np.isnan(np.asarray(arr)).any()


@pytest.mark.parametrize("returns", RETURNS, ids=["out", "lse", "weights", "lse_weights"])
def test_jit_sdpa_return_variants(returns):
    """[ATT-LSE-1] [ATT-WEIGHTS-1] every return_lse/return_weights combination jits."""
    data = _inputs()

    def fn(q, k, v, mask):
        return attnspec.scaled_dot_product_attention(q, k, v, mask=mask, **returns)

    out = _jit_matches_eager(fn, data["q"], data["k"], data["v"], data["mask"])
    assert len(_as_tuple(out)) == 1 + len(returns)


def _mha_params(seed=2, e=6, heads=4, kv_heads=2, dk=3):
    rng = np.random.default_rng(seed)
    return {
        "w_q": rng.standard_normal((e, heads * dk)),
        "w_k": rng.standard_normal((e, kv_heads * dk)),
        "w_v": rng.standard_normal((e, kv_heads * dk)),
        "w_o": rng.standard_normal((heads * dk, e)),
        "b_q": rng.standard_normal((heads * dk,)),
        "b_o": rng.standard_normal((e,)),
    }


@pytest.mark.parametrize("average_weights", [True, False])
def test_jit_multi_head_attention(average_weights):
    """[MHA-1] multi_head_attention jits with the projection weights, mask and lengths traced."""
    rng = np.random.default_rng(3)
    params = _mha_params()
    x = rng.standard_normal((B, LQ, 6))
    mem = rng.standard_normal((B, LK, 6))
    mask = rng.random((B, 1, LQ, LK)) < 0.7
    kv_lengths = np.array([4, 6])
    names = list(params)

    def fn(x, mem, mask, kv_lengths, *weights):
        return attnspec.multi_head_attention(
            x,
            mem,
            num_heads=4,
            num_kv_heads=2,
            mask=mask,
            kv_lengths=kv_lengths,
            causal=True,
            alignment="lower_right",
            need_weights=True,
            average_weights=average_weights,
            **dict(zip(names, weights, strict=True)),
        )

    _jit_matches_eager(fn, x, mem, mask, kv_lengths, *params.values())


# ------------------------------------------------------------------------------- Dask


def _no_compute(*args, **kwargs):
    raise AssertionError("attnspec computed a Dask graph while it should only build one")


def _lazy(fn, *dask_args):
    """Call fn while any compute raises; return its result(s) computed synchronously."""
    with dask.config.set(scheduler=_no_compute):
        res = fn(*dask_args)
    for r in _as_tuple(res):
        assert isinstance(r, da.Array), type(r)
    return tuple(r.compute(scheduler="sync") for r in _as_tuple(res))


def _chunked(a):
    """A multi-chunk Dask array: two chunks along every axis longer than 1."""
    chunks = tuple(max(1, (n + 1) // 2) for n in a.shape)
    arr = da.from_array(a, chunks=chunks)
    assert arr.npartitions > 1 or a.ndim == 1
    return arr


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_dask_softmax_family_is_lazy(name):
    """[SMX-1] [SMX-2] [SMX-3] softmax family on chunked Dask arrays (reduction axis split
    across chunks) builds a graph only and matches NumPy."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6))
    x[3, :] = -np.inf
    where = rng.random((4, 6)) < 0.6
    where[1, :] = False
    fn = getattr(attnspec, name)
    (got,) = _lazy(lambda x, w: fn(x, axis=-1, where=w), _chunked(x), _chunked(where))
    _assert_same(got, fn(x, axis=-1, where=where))


@pytest.mark.parametrize(("case", "static", "arrays"), SDPA_CASES, ids=[c[0] for c in SDPA_CASES])
def test_dask_sdpa_is_lazy(case, static, arrays):
    """[ATT-MASK-1] [ATT-BIAS-1] [ATT-CAUSAL-2] [ATT-WINDOW-1] [ATT-LEN-1] [ATT-LEN-2]
    [ATT-SOFTCAP-1] [ATT-DROPOUT-1] [ATT-LSE-1] [ATT-WEIGHTS-1] scaled_dot_product_attention
    on multi-chunk Dask inputs builds a graph only and matches NumPy."""
    data = _inputs()
    kw_names = list(arrays)

    def fn(q, k, v, *extra):
        kwargs = dict(zip(kw_names, extra, strict=True))
        return attnspec.scaled_dot_product_attention(
            q, k, v, return_lse=True, return_weights=True, **static, **kwargs
        )

    np_args = [data["q"], data["k"], data["v"], *(data[n] for n in arrays)]
    got = _lazy(fn, *(_chunked(a) for a in np_args))
    _assert_same(got, fn(*np_args))


def test_dask_multi_head_attention_is_lazy():
    """[MHA-1] multi_head_attention on chunked Dask inputs builds a graph only."""
    rng = np.random.default_rng(5)
    params = _mha_params()
    x = rng.standard_normal((B, LQ, 6))
    mem = rng.standard_normal((B, LK, 6))
    mask = rng.random((B, 1, LQ, LK)) < 0.7
    names = list(params)

    def fn(x, mem, mask, *weights):
        return attnspec.multi_head_attention(
            x,
            mem,
            num_heads=4,
            num_kv_heads=2,
            mask=mask,
            need_weights=True,
            **dict(zip(names, weights, strict=True)),
        )

    np_args = [x, mem, mask, *params.values()]
    got = _lazy(fn, *(_chunked(a) for a in np_args))
    _assert_same(got, fn(*np_args))
