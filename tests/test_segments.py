"""[ATT-SEG-1] Packed sequences (varlen): segment ids on every backend and both paths, against
the loop oracle (``tests/reference.py``, which counts positions token by token) and against
each sequence computed alone; padding and other segments never leak; ``cu_seqlens`` helpers."""

from __future__ import annotations

import numpy as np
import pytest
from attn_helpers import TOL
from reference import ref_attention

import attnspec

#: Three packed documents of lengths 4, 2 and 3, then two padding tokens.
LENGTHS = (4, 2, 3)
IDS = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, -1, -1])


def _dtype(xb):
    return "float64" if "float64" in xb.dtypes else "float32"


def _sweep_eager_only(xb, case):
    """JAX eager compiles every op per shape and Dask builds a graph per call: they run one
    case of an option sweep (the code path is the same), the eager backends all of it."""
    if (xb.has("jit") or xb.has("lazy")) and not case:
        pytest.skip(f"{xb.name}: option sweeps run one case on jit/lazy backends "
                    "(per-shape compile cost)")


def _call(xb, q, k, v, dtype, **options):
    arrays = {n: xb.from_numpy(x) if isinstance(x, np.ndarray) and x.dtype.kind == "i"
              else xb.from_numpy(x, dtype) if isinstance(x, np.ndarray) else x
              for n, x in options.items()}
    return attnspec.scaled_dot_product_attention(
        *(xb.from_numpy(x, dtype) for x in (q, k, v)), **arrays)


@pytest.mark.parametrize("chunk_size", [0, (3, 4)])
@pytest.mark.parametrize("options", [
    {}, {"causal": True}, {"causal": True, "alignment": "lower_right"},
    {"window": (1, 1)}, {"causal": True, "alibi_slopes": np.array([0.5, 0.25, 1.0, 0.125])},
    {"sinks": np.array([0.3, -1.0, 2.0, 0.0])},
], ids=["plain", "causal", "lower_right", "window", "alibi", "sinks"])
def test_packed_self_attention_matches_the_loop_oracle(xb, rng, chunk_size, options):
    _sweep_eager_only(xb, chunk_size and options.get("alignment") == "lower_right")
    dtype = _dtype(xb)
    q = rng.standard_normal((4, 11, 8))
    k, v = rng.standard_normal((2, 11, 8)), rng.standard_normal((2, 11, 3))
    out, lse = _call(xb, q, k, v, dtype, q_segment_ids=IDS, kv_segment_ids=IDS,
                     return_lse=True, chunk_size=chunk_size, **options)
    want = ref_attention(q, k, v, q_segment_ids=IDS, kv_segment_ids=IDS, **options)
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(xb.to_numpy(out), want[0], rtol=rtol, atol=atol)
    np.testing.assert_allclose(xb.to_numpy(lse), want[1], rtol=rtol, atol=atol)


@pytest.mark.parametrize("chunk_size", [0, 2])
def test_cross_segments_and_scattered_ids_match_the_loop_oracle(xb, rng, chunk_size):
    """Decode-style packing (1 and 2 new queries against 5 and 3 cached keys), lower-right
    per segment, and ids that are not contiguous and differ per batch entry."""
    _sweep_eager_only(xb, chunk_size)
    dtype = _dtype(xb)
    q_ids = np.array([[0, 1, 1, -1], [2, 0, 2, 0]])
    kv_ids = np.array([[0, 0, 0, 0, 0, 1, 1, 1], [0, 2, 0, 2, 0, 2, -1, 0]])
    q = rng.standard_normal((2, 2, 4, 8))
    k, v = rng.standard_normal((2, 1, 8, 8)), rng.standard_normal((2, 1, 8, 5))
    options = {"causal": True, "alignment": "lower_right", "q_segment_ids": q_ids,
               "kv_segment_ids": kv_ids}
    out = _call(xb, q, k, v, dtype, chunk_size=chunk_size, **options)
    want = ref_attention(q, k, v, **options)[0]
    np.testing.assert_allclose(xb.to_numpy(out), want, rtol=TOL[dtype][0], atol=TOL[dtype][1])


@pytest.mark.parametrize("alignment", ["upper_left", "lower_right"])
def test_each_sequence_is_the_same_alone_as_packed(xb, rng, alignment):
    """Batch-composition invariance: a packed document's rows equal the document's own
    dense attention (not the oracle: attnspec's dense path, an independent code path for
    the positions)."""
    _sweep_eager_only(xb, alignment == "lower_right")
    dtype = _dtype(xb)
    q, k, v = (rng.standard_normal((2, 11, 8)) for _ in range(3))
    packed = xb.to_numpy(_call(xb, q, k, v, dtype, q_segment_ids=IDS, kv_segment_ids=IDS,
                               causal=True, alignment=alignment, window=(2, None),
                               chunk_size=(4, 4)))
    start = 0
    for n in LENGTHS:
        part = slice(start, start + n)
        alone = _call(xb, q[:, part], k[:, part], v[:, part], dtype, causal=True,
                      alignment=alignment, window=(2, None))
        np.testing.assert_allclose(packed[:, part], xb.to_numpy(alone),
                                   rtol=TOL[dtype][0], atol=TOL[dtype][1])
        start += n
    np.testing.assert_array_equal(packed[:, start:], 0.0)  # padding rows


@pytest.mark.parametrize("chunk_size", [0, (4, 3)])
def test_garbage_in_padding_and_other_segments_keys_never_leaks(xb, rng, chunk_size):
    """NaN/inf in padding tokens' K and V, and NaN in another segment's keys, reach neither
    out nor lse (ATT-SEG-2)."""
    dtype = _dtype(xb)
    q, k, v = (rng.standard_normal((2, 11, 8)) for _ in range(3))
    clean = xb.to_numpy(_call(xb, q, k, v, dtype, q_segment_ids=IDS, kv_segment_ids=IDS,
                              causal=True))
    k_bad, v_bad = k.copy(), v.copy()
    k_bad[:, 9:], v_bad[:, 9] = np.nan, np.inf  # padding
    v_bad[:, 10] = -np.inf
    q_ids = IDS.copy()
    q_ids[4:6] = -1  # document 1's queries are padding: its keys (now NaN) are read by none
    k_bad[:, 4:6] = np.nan
    out, lse = _call(xb, q, k_bad, v_bad, dtype, q_segment_ids=q_ids, kv_segment_ids=IDS,
                     causal=True, return_lse=True, chunk_size=chunk_size)
    out, lse = xb.to_numpy(out), xb.to_numpy(lse)
    assert np.all(np.isfinite(out))
    assert not np.any(np.isnan(lse))
    keep = q_ids >= 0
    np.testing.assert_allclose(out[:, keep], clean[:, keep], rtol=TOL[dtype][0],
                               atol=TOL[dtype][1])
    np.testing.assert_array_equal(out[:, ~keep], 0.0)
    assert np.all(lse[:, ~keep] == -np.inf)


def test_chunked_path_reads_only_blocks_with_a_shared_segment(monkeypatch, rng):
    """On eager arrays the packed batch costs the blocks of its segments, not Lq x Lk: with
    blocks of 4, three documents of 8 tokens and 8 padding tokens leave 3 diagonal pairs of
    blocks per document and nothing else (work follows the real tokens)."""
    import attnspec._chunked as chunked

    seen = []
    original = chunked.block_scores

    def counting(p, rows, cols):
        seen.append((rows, cols))
        return original(p, rows, cols)

    monkeypatch.setattr(chunked, "block_scores", counting)
    ids = np.repeat([0, 1, 2, -1], 8)
    q, k, v = (rng.standard_normal((1, 32, 4)) for _ in range(3))
    out = attnspec.scaled_dot_product_attention(q, k, v, q_segment_ids=ids, kv_segment_ids=ids,
                                                causal=True, chunk_size=4)
    expected = {((r, r + 4), (c, c + 4)) for doc in range(3)
                for r in range(8 * doc, 8 * doc + 8, 4) for c in range(8 * doc, r + 1, 4)}
    assert set(seen) == expected
    want = ref_attention(q, k, v, q_segment_ids=ids, kv_segment_ids=ids, causal=True)[0]
    np.testing.assert_allclose(out, want, atol=1e-12)


@pytest.mark.needs("autograd")
def test_gradients_of_a_packed_batch_are_those_of_each_sequence(xb, rng):
    """dq, dk, dv of the packed call equal each document's own; padding tokens holding NaN
    get zero gradients and pass no NaN to the others (ATT-SEG-2)."""
    dtype = _dtype(xb)
    q, k, v = (rng.standard_normal((2, 11, 4)) for _ in range(3))
    k[:, 9:], v[:, 9:] = np.nan, np.inf
    dout = rng.standard_normal((2, 11, 4))
    ids = xb.from_numpy(IDS)

    def packed(q, k, v):
        return attnspec.scaled_dot_product_attention(
            q, k, v, q_segment_ids=ids, kv_segment_ids=ids, causal=True, chunk_size=(4, 4))

    arrays = [xb.from_numpy(x, dtype) for x in (q, k, v)]
    grads = [xb.to_numpy(g) for g in xb.vjp(packed, arrays, xb.from_numpy(dout, dtype))()[1]]
    for g in grads:
        assert np.all(np.isfinite(g))
        np.testing.assert_array_equal(g[:, 9:], 0.0)
    start = 0
    for n in LENGTHS:
        part = slice(start, start + n)

        def alone(q, k, v):
            return attnspec.scaled_dot_product_attention(q, k, v, causal=True)

        pieces = [xb.from_numpy(x[:, part], dtype) for x in (q, k, v)]
        want = xb.vjp(alone, pieces, xb.from_numpy(dout[:, part], dtype))()[1]
        for got, w in zip(grads, want, strict=True):
            np.testing.assert_allclose(got[:, part], xb.to_numpy(w), rtol=1e-5, atol=1e-6)
        start += n


@pytest.mark.needs("jit")
def test_segments_trace_under_jit(xb, rng):
    import jax

    q, k, v = (rng.standard_normal((2, 11, 4)) for _ in range(3))

    @jax.jit
    def f(q, k, v, ids):
        return attnspec.scaled_dot_product_attention(
            q, k, v, q_segment_ids=ids, kv_segment_ids=ids, causal=True,
            alignment="lower_right", chunk_size=(4, 4))

    out = f(*(xb.from_numpy(a) for a in (q, k, v, IDS)))
    want = ref_attention(q, k, v, q_segment_ids=IDS, kv_segment_ids=IDS, causal=True,
                         alignment="lower_right")[0]
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-10)


@pytest.mark.needs("lazy")
def test_segments_stay_lazy(xb, rng):
    import dask

    def refuse(*args, **kwargs):
        raise AssertionError("computed while building the graph")

    q, k, v = (rng.standard_normal((2, 11, 4)) for _ in range(3))
    arrays = [xb.from_numpy(a) for a in (q, k, v, IDS)]
    with dask.config.set(scheduler=refuse):
        out = attnspec.scaled_dot_product_attention(
            *arrays[:3], q_segment_ids=arrays[3], kv_segment_ids=arrays[3], causal=True,
            chunk_size=4)
    want = ref_attention(q, k, v, q_segment_ids=IDS, kv_segment_ids=IDS, causal=True)[0]
    np.testing.assert_allclose(out.compute(scheduler="sync"), want, atol=1e-12)


def test_cu_seqlens_and_segment_ids_convert_both_ways(xb):
    cu = np.array([0, 4, 6, 9])
    ids = attnspec.segment_ids_from_cu_seqlens(xb.from_numpy(cu), 11)
    # token t's segment written out from the definition cu[s] <= t < cu[s + 1]
    want = [next((s for s in range(3) if cu[s] <= t < cu[s + 1]), -1) for t in range(11)]
    np.testing.assert_array_equal(xb.to_numpy(ids), want)
    back = attnspec.cu_seqlens_from_segment_ids(ids, 3)
    np.testing.assert_array_equal(xb.to_numpy(back), cu)


def test_packed_layout_round_trips_to_heads_first(xb, rng):
    x = rng.standard_normal((11, 4, 8))  # flash-attention's (total, H, D)
    heads_first = attnspec.packed_to_bhld(xb.from_numpy(x))
    assert tuple(heads_first.shape) == (1, 4, 11, 8)
    np.testing.assert_array_equal(xb.to_numpy(heads_first)[0, 2, 5], x[5, 2])
    np.testing.assert_array_equal(xb.to_numpy(attnspec.bhld_to_packed(heads_first)), x)


@pytest.mark.parametrize(("options", "error", "words"), [
    ({"q_segment_ids": IDS}, ValueError, ["q_segment_ids needs kv_segment_ids"]),
    ({"q_segment_ids": IDS.astype(float), "kv_segment_ids": IDS}, TypeError,
     ["q_segment_ids", "integer dtype", "float64"]),
    ({"q_segment_ids": IDS[:5], "kv_segment_ids": IDS}, ValueError,
     ["q_segment_ids", "(5,)", "(*batch, Lq)", "(2, 11)"]),
    ({"q_segment_ids": [0, 1], "kv_segment_ids": IDS}, TypeError,
     ["q_segment_ids", "array", "list"]),
])
def test_bad_segment_ids_are_named(options, error, words):
    q = np.zeros((2, 1, 11, 4))
    with pytest.raises(error) as info:
        attnspec.scaled_dot_product_attention(q, q, q, **options)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda: attnspec.segment_ids_from_cu_seqlens(np.array([[0, 3]]), 3), ValueError,
     ["cu_seqlens", "1-D", "(1, 2)"]),
    (lambda: attnspec.segment_ids_from_cu_seqlens(np.array([0.0, 3.0]), 3), TypeError,
     ["cu_seqlens", "integer dtype"]),
    (lambda: attnspec.segment_ids_from_cu_seqlens(np.array([0, 3]), -1), ValueError,
     ["total", ">= 0"]),
    (lambda: attnspec.cu_seqlens_from_segment_ids(np.array([0, 0]), 1.5), TypeError,
     ["num_segments", "int"]),
    (lambda: attnspec.bhld_to_packed(np.zeros((2, 1, 3, 4))), ValueError,
     ["bhld_to_packed", "(1, heads, total, head_dim)", "(2, 1, 3, 4)"]),
])
def test_bad_helper_arguments_are_named(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value)
