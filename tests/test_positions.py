"""[ATT-POS-1] Positions: causal, window and ALiBi in position space on every backend and both
paths, against the loop oracle; ``alignment`` is sugar for default positions; chunked
prefill with stated offsets equals the full prefill's rows."""

from __future__ import annotations

import numpy as np
import pytest
from attn_helpers import TOL
from reference import ref_attention

import attnspec


def _dtype(xb):
    return "float64" if "float64" in xb.dtypes else "float32"


def _args(xb, dtype, arrays, options):
    data = [xb.from_numpy(x, dtype) for x in arrays]
    return data, {n: xb.from_numpy(x) if isinstance(x, np.ndarray) else x
                  for n, x in options.items()}


@pytest.mark.parametrize("chunk_size", [0, (2, 3)])
@pytest.mark.parametrize("options", [
    {"causal": True},
    {"window": (2, 1)},
    {"causal": True, "window": (3, None)},
], ids=["causal", "window", "causal_window"])
def test_positions_match_the_loop_oracle(xb, rng, chunk_size, options):
    """Per-batch query positions with a hole and repeated keys positions (a cache with
    evicted slots, a context-parallel shard)."""
    if (xb.has("jit") or xb.has("lazy")) and (chunk_size == 0 or "window" in options):
        pytest.skip(f"{xb.name}: option sweeps run one case on jit/lazy backends "
                    "(per-shape compile cost)")
    dtype = _dtype(xb)
    q = rng.standard_normal((2, 2, 4, 8))
    k, v = rng.standard_normal((2, 1, 9, 8)), rng.standard_normal((2, 1, 9, 3))
    q_pos = np.array([[5, 6, 7, 10], [0, 2, 4, 6]])
    kv_pos = np.array([0, 1, 2, 3, 3, 6, 7, 9, 10])
    slopes = np.array([0.5, 0.125])
    full = {**options, "q_positions": q_pos, "kv_positions": kv_pos, "alibi_slopes": slopes}
    data, kw = _args(xb, dtype, (q, k, v), full)
    kw["alibi_slopes"] = xb.from_numpy(slopes, dtype)
    out, lse = attnspec.scaled_dot_product_attention(*data, **kw, return_lse=True,
                                                     chunk_size=chunk_size)
    want = ref_attention(q, k, v, **full)
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(xb.to_numpy(out), want[0], rtol=rtol, atol=atol)
    np.testing.assert_allclose(xb.to_numpy(lse), want[1], rtol=rtol, atol=atol)


def test_lower_right_alignment_is_shifted_query_positions(xb, rng):
    dtype = _dtype(xb)
    q, k, v = rng.standard_normal((2, 3, 8)), *(rng.standard_normal((2, 7, 8)) for _ in "kv")
    data, _ = _args(xb, dtype, (q, k, v), {})
    aligned = attnspec.scaled_dot_product_attention(*data, causal=True, window=(2, None),
                                                    alignment="lower_right")
    positioned = attnspec.scaled_dot_product_attention(
        *data, causal=True, window=(2, None), q_positions=xb.from_numpy(np.arange(4, 7)))
    np.testing.assert_array_equal(xb.to_numpy(aligned), xb.to_numpy(positioned))


@pytest.mark.parametrize("chunk", [3, 4])
def test_chunked_prefill_with_stated_offsets_equals_the_full_prefill(xb, rng, chunk):
    """Prefill in pieces: piece ``c`` attends the cache so far with q_positions = its
    offsets; its rows equal the full causal prefill's (with ALiBi, which reads them too)."""
    if (xb.has("jit") or xb.has("lazy")) and chunk == 3:
        pytest.skip(f"{xb.name}: one piece size on jit/lazy backends (per-shape compile cost)")
    dtype = _dtype(xb)
    q, k, v = (rng.standard_normal((2, 10, 8)) for _ in range(3))
    slopes = xb.from_numpy(np.array([0.25, 1.0]), dtype)
    data, _ = _args(xb, dtype, (q, k, v), {})
    full = xb.to_numpy(attnspec.scaled_dot_product_attention(*data, causal=True,
                                                             alibi_slopes=slopes))
    for start in range(0, 10, chunk):
        stop = min(start + chunk, 10)
        piece = attnspec.scaled_dot_product_attention(
            data[0][:, start:stop, :], data[1][:, :stop, :], data[2][:, :stop, :], causal=True,
            alibi_slopes=slopes, q_positions=xb.from_numpy(np.arange(start, stop)))
        np.testing.assert_allclose(xb.to_numpy(piece), full[:, start:stop],
                                   rtol=TOL[dtype][0], atol=TOL[dtype][1])


def test_chunked_path_skips_blocks_the_positions_leave_empty(monkeypatch, rng):
    """Eager arrays: a query block whose positions all precede a key block's is never
    computed (causal in position space skips blocks as the index band does)."""
    import attnspec._chunked as chunked

    seen = []
    original = chunked.block_scores
    monkeypatch.setattr(chunked, "block_scores",
                        lambda p, rows, cols: seen.append((rows, cols)) or original(p, rows, cols))
    q, k, v = (rng.standard_normal((1, 8, 4)) for _ in range(3))
    positions = np.arange(100, 108)  # offsets cancel: causal over 8 tokens
    out = attnspec.scaled_dot_product_attention(q, k, v, causal=True, chunk_size=4,
                                                q_positions=positions, kv_positions=positions)
    assert set(seen) == {((0, 4), (0, 4)), ((4, 8), (0, 4)), ((4, 8), (4, 8))}
    np.testing.assert_allclose(out, ref_attention(q, k, v, causal=True)[0], atol=1e-12)


@pytest.mark.needs("jit")
def test_positions_trace_under_jit(xb, rng):
    import jax

    q, k, v = (rng.standard_normal((1, 6, 4)) for _ in range(3))
    pos = np.array([3, 4, 5, 9, 10, 11])

    @jax.jit
    def f(q, k, v, pos):
        return attnspec.scaled_dot_product_attention(q, k, v, causal=True, window=(2, None),
                                                     q_positions=pos, kv_positions=pos,
                                                     chunk_size=(2, 4))

    out = f(*(xb.from_numpy(a) for a in (q, k, v, pos)))
    want = ref_attention(q, k, v, causal=True, window=(2, None), q_positions=pos,
                         kv_positions=pos)[0]
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-10)


@pytest.mark.needs("autograd")
def test_gradients_with_positions_equal_those_of_the_aligned_call(xb, rng):
    dtype = _dtype(xb)
    q, k, v = rng.standard_normal((2, 3, 4)), *(rng.standard_normal((2, 5, 4)) for _ in "kv")
    dout = xb.from_numpy(rng.standard_normal((2, 3, 4)), dtype)
    data = [xb.from_numpy(x, dtype) for x in (q, k, v)]
    pos = xb.from_numpy(np.arange(2, 5))

    def positioned(q, k, v):
        return attnspec.scaled_dot_product_attention(q, k, v, causal=True, q_positions=pos,
                                                     chunk_size=2)

    def aligned(q, k, v):
        return attnspec.scaled_dot_product_attention(q, k, v, causal=True,
                                                     alignment="lower_right")

    got = xb.vjp(positioned, data, dout)()[1]
    want = xb.vjp(aligned, data, dout)()[1]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(xb.to_numpy(g), xb.to_numpy(w), rtol=1e-5, atol=1e-6)


def test_mask_builder_takes_positions():
    pos = np.array([2, 3])
    got = attnspec.attention_mask(2, 4, causal=True, q_positions=pos)
    np.testing.assert_array_equal(got[0], [[True, True, True, False], [True, True, True, True]])


@pytest.mark.parametrize(("options", "error", "words"), [
    ({"q_positions": np.arange(3), "alignment": "lower_right"}, ValueError,
     ["q_positions", "alignment='lower_right'", "give one or the other"]),
    ({"kv_positions": np.arange(5.0)}, TypeError, ["kv_positions", "integer dtype"]),
    ({"q_positions": np.arange(4)}, ValueError, ["q_positions", "(4,)", "(*batch, Lq)", "(3,)"]),
])
def test_bad_positions_are_named(options, error, words):
    q, k = np.zeros((1, 3, 4)), np.zeros((1, 5, 4))
    with pytest.raises(error) as info:
        attnspec.scaled_dot_product_attention(q, k, k, **options)
    for word in words:
        assert word in str(info.value)
