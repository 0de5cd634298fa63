"""[ATT-SINK-1] Attention sinks: one extra logit per row of each head in the denominator only,
on every backend, on both paths, against float64 NumPy written out here (independent of
attnspec's normaliser) and against ``merge`` with a sink-only partial."""

from __future__ import annotations

import math

import numpy as np
import pytest

import attnspec


def _reference(q, k, v, sinks, keep):
    """Softmax over the attended scores and the sink, in float64, written out."""
    group = q.shape[-3] // k.shape[-3]
    k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    sink = np.broadcast_to(sinks, s.shape[:-2])[..., None, None]
    out = np.zeros((*s.shape[:-1], v.shape[-1]))
    lse = np.zeros(s.shape[:-1])
    weights = np.zeros(s.shape)
    for idx in np.ndindex(s.shape[:-1]):
        row = [s[idx][j] for j in range(s.shape[-1]) if keep[idx][j]]
        top = max([*row, sink[idx[:-1]].item()])
        denom = math.fsum([math.exp(x - top) for x in row] + [math.exp(sink[idx[:-1]].item()
                                                                      - top)])
        lse[idx] = top + math.log(denom)
        for j in range(s.shape[-1]):
            if keep[idx][j]:
                weights[idx][j] = math.exp(s[idx][j] - lse[idx])
        out[idx] = weights[idx] @ v[idx[:-1]]
    return out, lse, weights


@pytest.mark.parametrize("chunk_size", [0, 3, (2, 4)])
def test_sinks_match_the_written_out_softmax(xb, rng, chunk_size):
    q = rng.standard_normal((2, 4, 5, 8))
    k, v = rng.standard_normal((2, 2, 9, 8)), rng.standard_normal((2, 2, 9, 3))
    keep = rng.random((2, 4, 5, 9)) < 0.6
    keep[..., 0, :] = False  # a row that attends nothing but its sink
    sinks = rng.standard_normal((2, 4)) * 2
    dtype = "float64" if "float64" in xb.dtypes else "float32"
    a = {n: xb.from_numpy(x, dtype) for n, x in (("q", q), ("k", k), ("v", v), ("s", sinks))}
    out, lse, weights = attnspec.scaled_dot_product_attention(
        a["q"], a["k"], a["v"], mask=xb.from_numpy(keep), sinks=a["s"], return_lse=True,
        return_weights=True, chunk_size=chunk_size)
    want = _reference(q, k, v, sinks, keep)
    tol = 1e-12 if dtype == "float64" else 1e-5
    for got, expected in zip((out, lse, weights), want, strict=True):
        np.testing.assert_allclose(xb.to_numpy(got), expected, rtol=tol, atol=tol)
    # the empty row: out 0, weights 0, lse = its sink
    assert np.all(xb.to_numpy(out)[..., 0, :] == 0)
    np.testing.assert_allclose(xb.to_numpy(lse)[..., 0], sinks, rtol=tol, atol=tol)


def test_sinks_are_a_merge_with_a_sink_only_partial(xb, rng):
    q, k, v = (xb.from_numpy(rng.standard_normal((1, 3, 6, 4))) for _ in range(3))
    sinks_np = rng.standard_normal((3,))  # per head, broadcast over the batch
    sinks = xb.from_numpy(sinks_np)
    out, lse = attnspec.scaled_dot_product_attention(q, k, v, sinks=sinks, return_lse=True,
                                                     causal=True)
    plain = attnspec.scaled_dot_product_attention(q, k, v, return_lse=True, causal=True)
    xp = xb.namespace()
    sink_lse = xb.from_numpy(np.broadcast_to(sinks_np[:, None], (1, 3, 6)).copy())
    merged = attnspec.merge([plain, (xp.zeros_like(plain[0]), sink_lse)])
    for got, want in zip((out, lse), merged, strict=True):
        np.testing.assert_allclose(xb.to_numpy(got), xb.to_numpy(want), rtol=1e-6, atol=1e-6)


def test_a_minus_inf_sink_is_no_sink(xb, rng):
    q, k, v = (xb.from_numpy(rng.standard_normal((2, 5, 4))) for _ in range(3))
    none = xb.from_numpy(np.full((2,), -np.inf))
    got = attnspec.scaled_dot_product_attention(q, k, v, sinks=none, chunk_size=2)
    want = attnspec.scaled_dot_product_attention(q, k, v)
    np.testing.assert_allclose(xb.to_numpy(got), xb.to_numpy(want), rtol=1e-6, atol=1e-6)


def test_a_large_sink_does_not_overflow_half_precision(xb, rng):
    if "float16" not in xb.dtypes:
        pytest.skip(f"{xb.name}: no float16")
    q, k, v = (xb.from_numpy(rng.standard_normal((1, 2, 4, 8)), "float16") for _ in range(3))
    sinks = xb.from_numpy(np.full((2,), 30.0), "float16")  # exp(30) > float16's max
    out, lse = attnspec.scaled_dot_product_attention(q, k, v, sinks=sinks, return_lse=True)
    out, lse = xb.to_numpy(out).astype(np.float64), xb.to_numpy(lse)
    assert np.all(np.isfinite(out))
    assert np.all(np.abs(out) < 1e-9)  # the sink takes all but ~exp(-25) of the mass
    np.testing.assert_allclose(lse, 30.0, rtol=1e-6)


@pytest.mark.parametrize(("sinks", "error", "words"), [
    (np.zeros((3,)), ValueError, ["sinks", "(3,)", "(*batch, Hq)", "(2, 4)"]),
    (np.zeros((2, 4), dtype=np.int64), TypeError, ["sinks", "real floating", "int64"]),
])
def test_bad_sinks_are_named(sinks, error, words):
    q = np.zeros((2, 4, 3, 8))
    with pytest.raises(error) as info:
        attnspec.scaled_dot_product_attention(q, q, q, sinks=sinks)
    for word in words:
        assert word in str(info.value)


def test_sinks_go_to_the_portable_path():
    q = np.zeros((1, 2, 3, 4))
    plan = attnspec.native_plan(q, q, q, sinks=np.zeros((1, 2)))
    assert plan.kernel is None


@pytest.mark.needs("autograd")
def test_gradients_reach_the_sinks(xb, rng):
    """d(sum(out * dO))/d(sink) against central differences of the float64 forward."""
    q, k, v = (rng.standard_normal((2, 3, 4)) for _ in range(3))
    sinks, dout = rng.standard_normal((2,)), rng.standard_normal((2, 3, 4))

    def loss(s):
        out = attnspec.scaled_dot_product_attention(q, k, v, sinks=s)
        return float(np.sum(out * dout))

    numeric = [(loss(sinks + e) - loss(sinks - e)) / 2e-6 for e in np.eye(2) * 1e-6]
    arrays = [xb.from_numpy(x) for x in (q, k, v, sinks)]
    forward = lambda q, k, v, s: attnspec.scaled_dot_product_attention(  # noqa: E731
        q, k, v, sinks=s, chunk_size=2)
    grads = xb.vjp(forward, arrays, xb.from_numpy(dout))()[1]
    np.testing.assert_allclose(xb.to_numpy(grads[3]), numeric, rtol=1e-5, atol=1e-7)
