"""[ATT-PAGE-1] Paged KV caches: ``block_table`` over page pools equals the contiguous cache it
describes (pages shuffled, shared, partly filled), whatever the unused pages and dead table
entries hold, on every backend and both paths, with gradients back to the pools."""

from __future__ import annotations

import numpy as np
import pytest
from attn_helpers import TOL
from reference import ref_attention

import attnspec

PAGE = 4


def paged(k, v, kv_lengths, rng, *, share_prefix=0, extra_pages=3):
    """Pools and a block table holding the caches ``k``/``v`` ``(B, Hkv, L, D)``: live pages
    at shuffled places, sequence 1 reusing sequence 0's first ``share_prefix`` pages, NaN and
    inf in every unused page and slot, garbage (out of range, negative) in dead entries."""
    batch, hkv, length, d = k.shape
    pages = -(-length // PAGE)
    num = batch * pages + extra_pages
    pool_k = np.full((num, hkv, PAGE, d), np.nan)
    pool_v = np.full((num, hkv, PAGE, v.shape[-1]), np.inf)
    slots = iter(rng.permutation(num))
    table = rng.choice([num + 5, -3, 10**6], size=(batch, pages))
    for b in range(batch):
        for p in range(-(-int(kv_lengths[b]) // PAGE)):
            if b == 1 and p < share_prefix:
                table[b, p] = table[0, p]
                continue
            table[b, p] = next(slots)
            n = min(PAGE, length - p * PAGE)
            pool_k[table[b, p], :, :n] = k[b, :, p * PAGE:p * PAGE + n]
            pool_v[table[b, p], :, :n] = v[b, :, p * PAGE:p * PAGE + n]
    return pool_k, pool_v, table


def _dtype(xb):
    return "float64" if "float64" in xb.dtypes else "float32"


@pytest.mark.parametrize("chunk_size", [0, (2, 4)])
@pytest.mark.parametrize("share", [0, 2])
def test_paged_cache_equals_the_contiguous_one(xb, rng, chunk_size, share):
    if (xb.has("jit") or xb.has("lazy")) and (chunk_size == 0 or share == 0):
        pytest.skip(f"{xb.name}: option sweeps run one case on jit/lazy backends "
                    "(per-shape compile cost)")
    dtype = _dtype(xb)
    q = rng.standard_normal((2, 4, 3, 8))
    k, v = rng.standard_normal((2, 2, 11, 8)), rng.standard_normal((2, 2, 11, 5))
    if share:  # a shared prefix: the same tokens in both sequences
        k[1, :, :share * PAGE], v[1, :, :share * PAGE] = k[0, :, :share * PAGE], v[0, :,
                                                                                  :share * PAGE]
    kv_lengths = np.array([11, 9])
    pool_k, pool_v, table = paged(k, v, kv_lengths, rng, share_prefix=share)
    out, lse = attnspec.scaled_dot_product_attention(
        *(xb.from_numpy(x, dtype) for x in (q, pool_k, pool_v)),
        block_table=xb.from_numpy(table), kv_lengths=xb.from_numpy(kv_lengths), causal=True,
        alignment="lower_right", return_lse=True, chunk_size=chunk_size)
    want = ref_attention(q, k, v, kv_lengths=kv_lengths, causal=True, alignment="lower_right")
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(xb.to_numpy(out), want[0], rtol=rtol, atol=atol)
    np.testing.assert_allclose(xb.to_numpy(lse), want[1], rtol=rtol, atol=atol)


@pytest.mark.needs("autograd")
def test_gradients_reach_the_pools_and_sum_over_shared_pages(xb, rng):
    """dK/dV of the pools are the dense cache's gradients scattered back to their pages
    (summed where two sequences share one); unused pages get exactly 0, never NaN."""
    dtype = _dtype(xb)
    q = rng.standard_normal((2, 2, 2, 4))
    k, v = rng.standard_normal((2, 2, 8, 4)), rng.standard_normal((2, 2, 8, 4))
    k[1, :, :PAGE], v[1, :, :PAGE] = k[0, :, :PAGE], v[0, :, :PAGE]
    kv_lengths = np.array([8, 7])
    pool_k, pool_v, table = paged(k, v, kv_lengths, rng, share_prefix=1)
    dout = xb.from_numpy(rng.standard_normal((2, 2, 2, 4)), dtype)
    bt, lengths = xb.from_numpy(table), xb.from_numpy(kv_lengths)

    def pooled(q, pk, pv):
        return attnspec.scaled_dot_product_attention(q, pk, pv, block_table=bt,
                                                     kv_lengths=lengths, chunk_size=(2, 4))

    def dense(q, k, v):
        return attnspec.scaled_dot_product_attention(q, k, v, kv_lengths=lengths)

    got = [xb.to_numpy(g) for g in xb.vjp(
        pooled, [xb.from_numpy(x, dtype) for x in (q, pool_k, pool_v)], dout)()[1]]
    want = [xb.to_numpy(g) for g in xb.vjp(
        dense, [xb.from_numpy(x, dtype) for x in (q, k, v)], dout)()[1]]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    for pool_grad, dense_grad in zip(got[1:], want[1:], strict=True):
        expected = np.zeros_like(pool_grad)
        for b in range(2):
            for p in range(-(-int(kv_lengths[b]) // PAGE)):
                expected[table[b, p]] += dense_grad[b, :, p * PAGE:(p + 1) * PAGE]
        np.testing.assert_allclose(pool_grad, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.needs("jit")
def test_paged_cache_traces_under_jit(xb, rng):
    import jax

    q = rng.standard_normal((2, 2, 1, 4))
    k, v = rng.standard_normal((2, 2, 8, 4)), rng.standard_normal((2, 2, 8, 4))
    kv_lengths = np.array([8, 3])
    pool_k, pool_v, table = paged(k, v, kv_lengths, rng)
    table = np.where(table < 0, 0, table) % len(pool_k)  # jit reads dead entries clamped

    @jax.jit
    def f(q, pk, pv, table, lengths):
        return attnspec.scaled_dot_product_attention(q, pk, pv, block_table=table,
                                                     kv_lengths=lengths)

    out = f(*(xb.from_numpy(a) for a in (q, pool_k, pool_v, table, kv_lengths)))
    want = ref_attention(q, k, v, kv_lengths=kv_lengths)[0]
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-10)


def test_only_pages_up_to_the_longest_sequence_are_gathered(rng):
    """Eager arrays: a decode step over a table of 64 pages whose sequences use at most 2
    reads 2 pages per sequence, not 64 (the weights show the keys read: 2 x PAGE)."""
    q = rng.standard_normal((2, 1, 1, 4))
    pool = rng.standard_normal((10, 1, PAGE, 4))
    table = np.zeros((2, 64), dtype=np.int64)
    table[:, :2] = [[3, 4], [5, 6]]
    lengths = np.array([8, 5])
    out, weights = attnspec.scaled_dot_product_attention(
        q, pool, pool, block_table=table, kv_lengths=lengths, return_weights=True)
    assert weights.shape == (2, 1, 1, 2 * PAGE)
    dense = np.concatenate([pool[table[:, 0]], pool[table[:, 1]]], axis=-2)
    np.testing.assert_allclose(out, ref_attention(q, dense, dense, kv_lengths=lengths)[0],
                               atol=1e-12)


@pytest.mark.parametrize(("options", "error", "words"), [
    ({"block_table": np.zeros((2, 3), np.int64)}, ValueError,
     ["block_table needs kv_lengths"]),
    ({"block_table": np.zeros((2, 3)), "kv_lengths": np.array([4, 4])}, TypeError,
     ["block_table", "integer dtype", "float64"]),
    ({"block_table": np.array([[0, 9, 0], [1, 0, 0]]), "kv_lengths": np.array([8, 4])},
     ValueError, ["block_table[0, 1] = 9", "outside the pool of 6 pages", "sequence [0]"]),
])
def test_bad_paged_calls_are_named(options, error, words):
    q, pool = np.zeros((2, 2, 1, 8)), np.zeros((6, 2, PAGE, 8))
    with pytest.raises(error) as info:
        attnspec.scaled_dot_product_attention(q, pool, pool, **options)
    for word in words:
        assert word in str(info.value)


def test_a_pool_that_is_not_four_dimensional_or_does_not_match_is_named():
    q, table, lengths = np.zeros((2, 2, 1, 8)), np.zeros((2, 3), np.int64), np.array([4, 4])
    with pytest.raises(ValueError, match=r"key must be a page pool .*\(2, 12, 8\)"):
        attnspec.scaled_dot_product_attention(q, np.zeros((2, 12, 8)), np.zeros((6, 2, 4, 8)),
                                              block_table=table, kv_lengths=lengths)
    with pytest.raises(ValueError, match=r"value pool \(6, 2, 8, 8\) must match key pool"):
        attnspec.scaled_dot_product_attention(q, np.zeros((6, 2, 4, 8)), np.zeros((6, 2, 8, 8)),
                                              block_table=table, kv_lengths=lengths)
