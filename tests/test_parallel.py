"""The parallel schedule of eager host arrays (attnspec/_parallel.py) and the causal band's
block cutting (attnspec/_blocks.py band_columns/band_cut): same results as the serial,
uncut computation; the caller's BLAS setting and NumPy error state respected."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from reference import ref_attention

import attnspec
from attnspec import _parallel, _problem
from attnspec._blocks import band_columns, band_cut


def _qkv(xb, rng, shape, dtype="float64"):
    return tuple(xb.from_numpy(rng.standard_normal(shape), dtype) for _ in range(3))


@pytest.mark.parametrize("causal", [False, True])
def test_threads_give_the_serial_result(xb, rng, monkeypatch, causal):
    """ATT-SCORE-1 on the parallel schedule: query blocks on two threads give bit for bit
    what one thread gives, and both match the float64 reference."""
    q, k, v = _qkv(xb, rng, (1, 2, 128, 16))
    out = {}
    for n in ("1", "2"):
        monkeypatch.setenv(_parallel.THREADS_ENV, n)
        out[n] = xb.to_numpy(attnspec.scaled_dot_product_attention(
            q, k, v, causal=causal, chunk_size=(32, 128)))
    np.testing.assert_array_equal(out["1"], out["2"])
    want = ref_attention(*(xb.to_numpy(x) for x in (q, k, v)), causal=causal)[0]
    np.testing.assert_allclose(out["2"], want, rtol=1e-12, atol=1e-12)


def test_the_pool_runs_numpy_blocks(rng, monkeypatch):
    """Large eager NumPy calls do run on the pool's threads (else the schedule would be dead
    code): the blocks' scores are computed on threads named attnspec."""
    monkeypatch.setenv(_parallel.THREADS_ENV, "2")
    seen = set()
    real = _problem.block_scores

    def spy(p, rows, cols):
        seen.add(threading.current_thread().name.split("_")[0])
        return real(p, rows, cols)

    monkeypatch.setattr("attnspec._chunked.block_scores", spy)
    q, k, v = (rng.standard_normal((1, 8, 512, 64)).astype(np.float32) for _ in range(3))
    attnspec.scaled_dot_product_attention(q, k, v)
    assert seen == {"attnspec"}


def test_blas_threads_are_given_back(rng, monkeypatch):
    """BLAS is held to one thread per block only while a call runs: the caller's setting is
    back afterwards, also when a block raises."""
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl: not installed")
    monkeypatch.setenv(_parallel.THREADS_ENV, "2")
    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
              if lib["user_api"] == "blas"]
    q, k, v = (rng.standard_normal((1, 8, 512, 64)) for _ in range(3))
    attnspec.scaled_dot_product_attention(q, k, v, causal=True)

    def boom(p, rows, cols):
        raise RuntimeError("a block failed")

    monkeypatch.setattr("attnspec._chunked.block_scores", boom)
    with pytest.raises(RuntimeError, match="a block failed"):
        attnspec.scaled_dot_product_attention(q, k, v)
    after = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
             if lib["user_api"] == "blas"]
    assert after == before


def test_numpy_error_state_holds_in_the_pool(monkeypatch):
    """SMX-4 rows (+inf scores give NaN) warn, or raise, as the caller's np.errstate says,
    on the pool's threads too."""
    monkeypatch.setenv(_parallel.THREADS_ENV, "2")
    q = np.ones((1, 4, 256, 32))
    q[0, 0, 3, 0] = np.inf
    with np.errstate(all="ignore"):
        out = attnspec.scaled_dot_product_attention(q, q, q, chunk_size=(16, 256))
    assert np.isnan(out[0, 0, 3]).all()
    assert not np.isnan(out[0, 1]).any()
    with np.errstate(invalid="raise"), pytest.raises(FloatingPointError):
        attnspec.scaled_dot_product_attention(q, q, q, chunk_size=(16, 256))


def test_a_bad_threads_variable_warns_and_changes_no_result(monkeypatch, rng):
    """A typo in ATTNSPEC_NUM_THREADS costs speed, never a result: a warning naming the
    variable, the default schedule, the same output."""
    q = rng.standard_normal((1, 8, 512, 64))
    want = attnspec.scaled_dot_product_attention(q, q, q)
    monkeypatch.setenv(_parallel.THREADS_ENV, "two")
    monkeypatch.setattr(_parallel, "_warned", set())
    with pytest.warns(RuntimeWarning, match="ATTNSPEC_NUM_THREADS must be a positive integer"):
        got = attnspec.scaled_dot_product_attention(q, q, q)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("alignment", ["upper_left", "lower_right"])
@pytest.mark.parametrize("limits", [(None, 0), (3, 0), (2, 5), (0, None), (4, 1)])
@pytest.mark.parametrize("shape", [(16, 16), (10, 23), (23, 10)])
def test_band_columns_and_cut_against_the_band(alignment, limits, shape):
    """ATT-CAUSAL-1/2, ATT-WINDOW-1: for every block, the columns left out are masked for
    every row, and the columns outside band_cut are kept for every row (checked against the
    band's closed form i + offset - left <= j <= i + offset + right)."""
    lq, lk = shape
    offset = 0 if alignment == "upper_left" else lk - lq
    left, right = limits
    i = np.arange(lq)[:, None]
    j = np.arange(lk)[None, :]
    keep = np.ones((lq, lk), bool)
    if right is not None:
        keep &= j <= i + offset + right
    if left is not None:
        keep &= j >= i + offset - left
    for r0 in range(0, lq, 4):
        rows = (r0, min(lq, r0 + 4))
        for c0 in range(0, lk, 7):
            cols = (c0, min(lk, c0 + 7))
            start, stop = band_columns(rows, cols, (offset, offset), limits)
            block = keep[rows[0]:rows[1]]
            outside = [c for c in range(*cols) if not start <= c < stop]
            assert not block[:, outside].any()
            cut = band_cut(rows, (start, stop), offset, limits)
            in_cut = {c for a, b in cut for c in range(a, b)}
            assert all(a < b for a, b in cut)
            assert all(cut[n][1] < cut[n + 1][0] for n in range(len(cut) - 1))
            for c in range(start, stop):
                if c not in in_cut:
                    assert block[:, c].all(), (rows, cols, c)


def test_causal_work_follows_the_diagonal(rng, monkeypatch):
    """Causal at N = 512 scores about half the matrix, not all of it (blocks past the
    diagonal cut off): (1 + 1/8) / 2 with eight query blocks."""
    scored = []
    real = _problem.block_scores

    def spy(p, rows, cols):
        scored.append((rows[1] - rows[0]) * (cols[1] - cols[0]))
        return real(p, rows, cols)

    monkeypatch.setattr("attnspec._chunked.block_scores", spy)
    q = rng.standard_normal((1, 8, 512, 64)).astype(np.float32)
    out = attnspec.scaled_dot_product_attention(q, q, q, causal=True)
    assert sum(scored) <= 0.6 * 512 * 512
    x = q[0].astype(np.float64)  # the closed form: softmax over j <= i, dense, float64
    s = x @ np.swapaxes(x, -1, -2) / 8.0
    s[:, np.triu_indices(512, 1)[0], np.triu_indices(512, 1)[1]] = -np.inf
    w = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(out[0], (w / w.sum(-1, keepdims=True)) @ x, rtol=2e-5,
                               atol=2e-5)
