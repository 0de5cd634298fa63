"""Padding is not computed: on eager arrays the chunked path never scores keys past every
batch entry's ``kv_lengths`` nor rows past every ``q_lengths`` (ATT-LEN-1/2), so a padded
batch costs its longest sequence; the results are the spec's on every backend (lazy and
traced arrays keep the full loop and give the same values)."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


@pytest.mark.parametrize(("kv", "q", "causal", "window"), [
    ([256, 100], None, True, None),  # offsets 0 and -156: rows past 100 of entry 1 are empty
    ([256, 256], [64, 128], True, None),  # a chunked prefill: offsets 192 and 128
    ([256, 200], [256, 50], True, (32, None)),  # causal with a left window
    ([30, 256], [200, 10], False, (16, 16)),  # a window only, offsets -170 and 246
    # An entry without keys (offset -64) widens nothing: rows 0-63 read keys 160-255 only.
    ([0, 256], [64, 64], True, (32, None)),
])
def test_a_band_moving_with_the_lengths_is_cut_soundly(xb, rng, monkeypatch, kv, q, causal,
                                                       window):
    """ATT-CAUSAL-2, ATT-WINDOW-1, ATT-LEN-1/2: with lower_right alignment and per-entry
    lengths the diagonal moves per batch entry; the blocks and columns outside the band for
    every entry are not scored, and the result is the float64 reference's."""
    qa, ka, va = _qkv(xb, rng)
    scored = _spy(monkeypatch)
    lengths = {"kv_lengths": np.array(kv)} | ({} if q is None else {"q_lengths": np.array(q)})
    got = attnspec.scaled_dot_product_attention(
        qa, ka, va, causal=causal, window=window, alignment="lower_right",
        chunk_size=BLOCKS, return_lse=True,
        **{name: xb.from_numpy(x) for name, x in lengths.items()})
    want = ref_attention(*(xb.to_numpy(x) for x in (qa, ka, va)), causal=causal,
                         window=window, alignment="lower_right", **lengths)
    np.testing.assert_allclose(xb.to_numpy(got[0]), want[0], rtol=1e-12, atol=1e-12)
    lse = xb.to_numpy(got[1])
    np.testing.assert_array_equal(lse == -np.inf, want[1] == -np.inf)
    finite = want[1] != -np.inf
    np.testing.assert_allclose(lse[finite], want[1][finite], rtol=1e-12, atol=1e-12)
    if array_api_compat.is_lazy_array(qa):
        return  # lazy or possibly traced (Dask, JAX): the full loop, same values
    work = sum((r[1] - r[0]) * (c[1] - c[0]) for r, c in scored)
    assert work == 64 * (256 - 160) if kv[0] == 0 else work < 256 * max(kv)


def test_a_padded_causal_batch_scores_half(rng, monkeypatch):
    """A causal prefill of a padded batch (lower_right, kv_lengths = q_lengths) scores about
    half of the matrix, as a causal call without lengths does: the diagonal read from the
    lengths is the same for every entry (it scored all of it before)."""
    q, k, v = (rng.standard_normal((2, 4, 512, 16)).astype(np.float32) for _ in range(3))
    scored = _spy(monkeypatch)
    lengths = np.array([512, 512])
    attnspec.scaled_dot_product_attention(q, k, v, causal=True, alignment="lower_right",
                                          kv_lengths=lengths, q_lengths=lengths)
    assert sum((r[1] - r[0]) * (c[1] - c[0]) for r, c in scored) <= 0.6 * 512 * 512


@st.composite
def _moving_bands(draw):
    """A lower_right call whose diagonal moves with random per-entry lengths, in blocks."""
    lq, lk = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    kv = draw(st.lists(st.integers(0, lk), min_size=3, max_size=3))
    q = draw(st.none() | st.lists(st.integers(0, lq), min_size=3, max_size=3))
    causal = draw(st.booleans())
    side = st.none() | st.integers(0, 40)
    window = draw(st.none() | st.tuples(side, side))
    block = (draw(st.integers(1, 16)), draw(st.integers(1, 16)))
    return lq, lk, kv, q, causal, window, block


@settings(max_examples=60, deadline=None, database=None)
@given(case=_moving_bands(), seed=st.integers(0, 2**16))
def test_any_band_moving_with_the_lengths_is_the_references(case, seed):
    """Whatever the lengths, band and blocks, cutting by the range of the entries' offsets
    changes nothing: the float64 reference's output (NumPy, float64)."""
    lq, lk, kv, q_lengths, causal, window, block = case
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((3, 2, lq, 4))
    k, v = (rng.standard_normal((3, 2, lk, 4)) for _ in range(2))
    lengths = {"kv_lengths": np.array(kv)}
    if q_lengths is not None:
        lengths["q_lengths"] = np.array(q_lengths)
    got = attnspec.scaled_dot_product_attention(
        q, k, v, causal=causal, window=window, alignment="lower_right", chunk_size=block,
        **lengths)
    want = ref_attention(q, k, v, causal=causal, window=window, alignment="lower_right",
                         **lengths)
    np.testing.assert_allclose(got, want[0], rtol=1e-12, atol=1e-12)


def _direct_spy(monkeypatch):
    read = []
    real = _problem.block_scores

    def spy(p, rows, cols):
        read.append(cols)
        return real(p, rows, cols)

    monkeypatch.setattr("attnspec._direct.block_scores", spy)
    return read


@pytest.mark.parametrize("poison", [np.nan, 1e30])
@pytest.mark.parametrize("lengths", [[40, 17], [40, 40], [0, 0]])
def test_a_decode_step_reads_no_key_past_every_length(xb, rng, monkeypatch, lengths, poison):
    """ATT-LEN-1, ATT-LEAK-2: one query row against a preallocated cache of 256 slots: the
    direct path reads (and converts and zeroes) the keys up to the longest length only, and
    what the slots past each entry's length hold never reaches the output: NaN/inf (zeroed)
    or huge finite values (left as they are: masked scores, exact zero weights)."""
    q = rng.standard_normal((2, 4, 1, 8))
    k, v = (rng.standard_normal((2, 2, 256, 8)) for _ in range(2))
    want = ref_attention(q, k, v, kv_lengths=np.array(lengths))
    k, v = k.copy(), v.copy()
    for b, n in enumerate(lengths):
        k[b, :, n:], v[b, :, n:] = poison, -poison
    read = _direct_spy(monkeypatch)
    args = [xb.from_numpy(x) for x in (q, k, v)]
    for _ in range(2):  # no plan is kept for calls with lengths: both calls are checked
        got = attnspec.scaled_dot_product_attention(
            *args, kv_lengths=xb.from_numpy(np.array(lengths)))
        np.testing.assert_allclose(xb.to_numpy(got), want[0], rtol=1e-12, atol=1e-12)
    if array_api_compat.is_lazy_array(args[0]) or xb.name in ("cupy", "torch-cuda"):
        return  # traced, lazy or on an accelerator: all slots, zeroed (same values)
    assert read
    assert all(cols[1] <= max(lengths) for cols in read), read


@pytest.mark.needs("autograd")
@pytest.mark.parametrize("poison", [np.nan, 1e30])
def test_a_trimmed_cache_passes_zero_gradient_to_its_unread_slots(xb, rng, poison):
    """ATT-LEAK-2, ATT-GRAD-1: the gradient of the cache slots past each length is exactly
    0, and every other gradient is the one of a clean cache, with NaN (zeroed) or huge
    finite values (left as they are) stored in those slots."""
    if xb.framework != "torch":
        pytest.skip(f"{xb.name}: the eager gradient recipe here is torch's")
    q = rng.standard_normal((2, 2, 3, 8))
    k, v = (rng.standard_normal((2, 2, 64, 8)) for _ in range(2))
    lengths = np.array([20, 9])

    def grads(k, v):
        qa, ka, va = (xb.from_numpy(x).requires_grad_(True) for x in (q, k, v))
        out = attnspec.scaled_dot_product_attention(qa, ka, va,
                                                    kv_lengths=xb.from_numpy(lengths))
        (out * out).sum().backward()
        return [xb.to_numpy(x.grad) for x in (qa, ka, va)]

    clean = grads(k, v)
    k, v = k.copy(), v.copy()
    for b, n in enumerate(lengths):
        k[b, :, n:], v[b, :, n:] = poison, -poison
    poisoned = grads(k, v)
    for got, want in zip(poisoned, clean, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    for g in poisoned[1:]:
        assert (g[0, :, 20:] == 0).all()
        assert (g[1, :, 9:] == 0).all()


@pytest.mark.parametrize("lengths", [None, [300, 250]])
def test_a_sliding_window_decode_reads_the_window(rng, monkeypatch, lengths):
    """ATT-WINDOW-1: a decode step with a window of 32 keys over a 300-slot cache reads the
    window's keys, not the cache, planned or not; the result is the reference's."""
    q = rng.standard_normal((2, 2, 1, 8))
    k, v = (rng.standard_normal((2, 2, 300, 8)) for _ in range(2))
    extra = {} if lengths is None else {"kv_lengths": np.array(lengths)}
    read = _direct_spy(monkeypatch)
    want = ref_attention(q, k, v, window=(31, 0), alignment="lower_right", **extra)
    for _ in range(2):
        got = attnspec.scaled_dot_product_attention(q, k, v, window=(31, 0),
                                                    alignment="lower_right", **extra)
        np.testing.assert_allclose(got, want[0], rtol=1e-12, atol=1e-12)
    # Lengths 300 and 250: the union of both entries' windows, keys 218-299.
    first = 300 - 1 - 31 if lengths is None else 250 - 1 - 31
    assert read == [(first, 300)] * 2, read


@pytest.mark.parametrize(("lq", "chunk"), [(1, None), (40, (16, 16))])
def test_vmapped_lengths_keep_the_data_independent_path(lq, chunk):
    """Inside ``torch.func.vmap`` a batched ``kv_lengths`` cannot be read (``.item()``
    raises): the cut of the cache and of the band is left out, and each mapped call is the
    call made on its own (decode on the direct path, a causal prefill on the chunked one)."""
    torch = pytest.importorskip("torch", reason="torch: not installed")
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, lq, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 64, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    lengths = torch.tensor([[64, 5], [3, 40], [17, 64]])
    options = {"causal": True, "alignment": "lower_right", "chunk_size": chunk}
    mapped = torch.func.vmap(lambda n: attnspec.scaled_dot_product_attention(
        q, k, v, kv_lengths=n, **options))(lengths)
    for got, n in zip(mapped, lengths, strict=True):
        want = ref_attention(q.numpy(), k.numpy(), v.numpy(), kv_lengths=n.numpy(),
                             causal=True, alignment="lower_right")[0]
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
