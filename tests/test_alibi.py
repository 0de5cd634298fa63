"""[ATT-ALIBI-1] ALiBi: ``-slope * |q_pos - kv_pos|`` after the bias, positions shifted by the
alignment offset (per batch entry with lengths), on every backend and both paths, against
scores written out here in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

import attnspec


def _reference(q, k, v, slopes, *, alignment, kv_lengths=None, q_lengths=None, causal=False,
               sinks=None):
    batch, (hq, lq, _), (hkv, lk, _) = q.shape[:-3], q.shape[-3:], k.shape[-3:]
    group = hq // hkv
    out = np.zeros((*q.shape[:-1], v.shape[-1]))
    for b in np.ndindex(batch):
        n_k = lk if kv_lengths is None else int(kv_lengths[b])
        n_q = lq if q_lengths is None else int(q_lengths[b])
        offset = n_k - n_q if alignment == "lower_right" else 0
        for h in range(hq):
            for i in range(n_q):
                keys = [j for j in range(n_k) if not causal or j <= i + offset]
                scores = [float(q[(*b, h, i)] @ k[(*b, h // group, j)]) / math.sqrt(q.shape[-1])
                          - float(slopes[(*b, h)]) * abs(i + offset - j) for j in keys]
                extra = [] if sinks is None else [float(sinks[(*b, h)])]
                if not scores:
                    continue
                top = max(scores + extra)
                weights = [math.exp(s - top) for s in scores]
                total = math.fsum(weights + [math.exp(x - top) for x in extra])
                out[(*b, h, i)] = sum(w / total * v[(*b, h // group, j)]
                                      for w, j in zip(weights, keys, strict=True))
    return out


@pytest.mark.parametrize("chunk_size", [0, (2, 3)])
@pytest.mark.parametrize(("alignment", "causal", "lengths"), [
    ("upper_left", False, False), ("lower_right", True, False), ("lower_right", False, True),
    ("lower_right", True, True),
])
def test_alibi_matches_the_written_out_scores(xb, rng, chunk_size, alignment, causal, lengths):
    q = rng.standard_normal((2, 4, 5, 8))
    k, v = rng.standard_normal((2, 2, 9, 8)), rng.standard_normal((2, 2, 9, 3))
    slopes = rng.random((2, 4))
    kv_lengths, q_lengths = (np.array([9, 6]), np.array([5, 2])) if lengths else (None, None)
    dtype = "float64" if "float64" in xb.dtypes else "float32"
    args = {"alibi_slopes": xb.from_numpy(slopes, dtype), "alignment": alignment,
            "causal": causal, "chunk_size": chunk_size}
    if lengths:
        args.update(kv_lengths=xb.from_numpy(kv_lengths), q_lengths=xb.from_numpy(q_lengths))
    got = attnspec.scaled_dot_product_attention(
        *(xb.from_numpy(x, dtype) for x in (q, k, v)), **args)
    want = _reference(q, k, v, slopes, alignment=alignment, kv_lengths=kv_lengths,
                      q_lengths=q_lengths, causal=causal)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(xb.to_numpy(got), want, rtol=tol, atol=tol)


def test_alibi_with_sinks_and_per_head_slopes(xb, rng):
    q, k, v = (rng.standard_normal((2, 3, 6, 4)) for _ in range(3))
    slopes = 2.0 ** -np.arange(1, 4)  # (Hq,): broadcast over the batch
    sinks = rng.standard_normal((2, 3))
    dtype = "float64" if "float64" in xb.dtypes else "float32"
    got = attnspec.scaled_dot_product_attention(
        *(xb.from_numpy(x, dtype) for x in (q, k, v)), causal=True,
        alibi_slopes=xb.from_numpy(slopes, dtype), sinks=xb.from_numpy(sinks, dtype))
    want = _reference(q, k, v, np.broadcast_to(slopes, (2, 3)), alignment="upper_left",
                      causal=True, sinks=sinks)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(xb.to_numpy(got), want, rtol=tol, atol=tol)


def test_zero_slopes_change_nothing(xb, rng):
    q, k, v = (xb.from_numpy(rng.standard_normal((2, 5, 4))) for _ in range(3))
    got = attnspec.scaled_dot_product_attention(q, k, v, alibi_slopes=xb.from_numpy(
        np.zeros(2)), alignment="lower_right")
    np.testing.assert_array_equal(
        xb.to_numpy(got), xb.to_numpy(attnspec.scaled_dot_product_attention(q, k, v)))


def test_alibi_goes_to_the_portable_path():
    q = np.zeros((1, 2, 3, 4))
    assert attnspec.native_plan(q, q, q, alibi_slopes=np.ones(2)).kernel is None


@pytest.mark.needs("autograd")
def test_gradients_reach_the_slopes(xb, rng):
    q, k, v = (rng.standard_normal((2, 3, 4)) for _ in range(3))
    slopes, dout = rng.random(2), rng.standard_normal((2, 3, 4))

    def loss(s):
        out = attnspec.scaled_dot_product_attention(q, k, v, alibi_slopes=s)
        return float(np.sum(out * dout))

    numeric = [(loss(slopes + e) - loss(slopes - e)) / 2e-6 for e in np.eye(2) * 1e-6]
    forward = lambda q, k, v, s: attnspec.scaled_dot_product_attention(  # noqa: E731
        q, k, v, alibi_slopes=s, chunk_size=2)
    grads = xb.vjp(forward, [xb.from_numpy(x) for x in (q, k, v, slopes)],
                   xb.from_numpy(dout))()[1]
    np.testing.assert_allclose(xb.to_numpy(grads[3]), numeric, rtol=1e-5, atol=1e-7)
