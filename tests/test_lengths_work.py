"""Padding is not computed: on eager arrays the chunked path never scores keys past every
batch entry's ``kv_lengths`` nor rows past every ``q_lengths`` (ATT-LEN-1/2), so a padded
batch costs its longest sequence; the results are the spec's on every backend (lazy and
traced arrays keep the full loop and give the same values)."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
from reference import ref_attention

import attnspec
from attnspec import _problem

SHAPE = (2, 2, 256, 8)
BLOCKS = (64, 64)


def _spy(monkeypatch):
    scored = []
    real = _problem.block_scores

    def spy(p, rows, cols):
        scored.append((rows, cols))
        return real(p, rows, cols)

    monkeypatch.setattr("attnspec._chunked.block_scores", spy)
    return scored


def _qkv(xb, rng):
    return tuple(xb.from_numpy(rng.standard_normal(SHAPE)) for _ in range(3))


@pytest.mark.parametrize("lengths", [[150, 40], [256, 3], [0, 0]])
def test_keys_past_every_kv_length_are_never_scored(xb, rng, monkeypatch, lengths):
    q, k, v = _qkv(xb, rng)
    scored = _spy(monkeypatch)
    got = attnspec.scaled_dot_product_attention(
        q, k, v, kv_lengths=xb.from_numpy(np.array(lengths)), chunk_size=BLOCKS,
        return_lse=True)
    want = ref_attention(*(xb.to_numpy(x) for x in (q, k, v)), kv_lengths=np.array(lengths))
    np.testing.assert_allclose(xb.to_numpy(got[0]), want[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(xb.to_numpy(got[1]) == -np.inf, want[1] == -np.inf)
    if array_api_compat.is_lazy_array(q):
        return  # lazy or possibly traced (Dask, JAX): the full loop, same values
    assert all(cols[1] <= max(lengths) for _, cols in scored), scored
    assert sum((r[1] - r[0]) * (c[1] - c[0]) for r, c in scored) == 256 * max(lengths)


def test_rows_past_every_q_length_are_never_scored(xb, rng, monkeypatch):
    q, k, v = _qkv(xb, rng)
    scored = _spy(monkeypatch)
    lengths = np.array([100, 7])
    got = attnspec.scaled_dot_product_attention(
        q, k, v, q_lengths=xb.from_numpy(lengths), chunk_size=BLOCKS, return_lse=True)
    want = ref_attention(*(xb.to_numpy(x) for x in (q, k, v)), q_lengths=lengths)
    np.testing.assert_allclose(xb.to_numpy(got[0]), want[0], rtol=1e-12, atol=1e-12)
    lse = xb.to_numpy(got[1])
    assert np.all(lse[0, :, 100:] == -np.inf)
    assert np.all(xb.to_numpy(got[0])[0, :, 100:] == 0)
    if not array_api_compat.is_lazy_array(q):
        assert all(rows[0] < 100 for rows, _ in scored), scored


def test_a_half_padded_batch_scores_half(rng, monkeypatch):
    """The performance shape the trimming is for: kv_lengths at half of Lk score half."""
    q, k, v = (rng.standard_normal((2, 4, 512, 16)).astype(np.float32) for _ in range(3))
    scored = _spy(monkeypatch)
    attnspec.scaled_dot_product_attention(q, k, v, kv_lengths=np.array([256, 256]),
                                          chunk_size=(128, 128))
    assert sum((r[1] - r[0]) * (c[1] - c[0]) for r, c in scored) == 512 * 256
