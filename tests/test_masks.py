"""Mask builders against the spec's definitions written as explicit loops
(ATT-CAUSAL-1, ATT-CAUSAL-2, ATT-WINDOW-1, ATT-LEN-1, ATT-LEN-2, ATT-MASK-1)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import attnspec


def loop_keep(lq, lk, *, causal=False, window=None, alignment="upper_left", kv_len=None,
              q_len=None):
    """The attended set of docs/spec.md, one (i, j) at a time."""
    kv = lk if kv_len is None else kv_len
    ql = lq if q_len is None else q_len
    offset = 0 if alignment == "upper_left" else kv - ql
    keep = np.zeros((lq, lk), dtype=bool)
    for i, j in itertools.product(range(lq), range(lk)):
        ok = j < kv and i < ql
        if causal:
            ok = ok and j <= i + offset
        if window is not None:
            left, right = window
            ok = ok and (left is None or j >= i + offset - left)
            ok = ok and (right is None or j <= i + offset + right)
        keep[i, j] = ok
    return keep


SIZES = [(1, 1), (1, 5), (5, 1), (3, 7), (7, 3), (4, 4), (0, 3), (3, 0)]


@pytest.mark.parametrize(("lq", "lk"), SIZES)
@pytest.mark.parametrize("alignment", ["upper_left", "lower_right"])
def test_causal_mask(xb, lq, lk, alignment):
    """ATT-CAUSAL-1 (upper_left, offset 0) and ATT-CAUSAL-2 (lower_right, offset Lk - Lq)."""
    got = attnspec.causal_mask(lq, lk, alignment=alignment, xp=xb.namespace(), device=xb.device)
    np.testing.assert_array_equal(xb.to_numpy(got), loop_keep(lq, lk, causal=True,
                                                              alignment=alignment))


@pytest.mark.parametrize(("lq", "lk"), [(5, 5), (3, 8), (8, 3)])
@pytest.mark.parametrize("window", [(0, 0), (2, 0), (0, 2), (1, 3), (None, 1), (2, None),
                                    (None, None)])
@pytest.mark.parametrize("alignment", ["upper_left", "lower_right"])
def test_window_mask(xb, lq, lk, window, alignment):
    """ATT-WINDOW-1: i + offset - left <= j <= i + offset + right, None unbounded."""
    got = attnspec.window_mask(lq, lk, window, alignment=alignment, xp=xb.namespace(),
                               device=xb.device)
    np.testing.assert_array_equal(xb.to_numpy(got), loop_keep(lq, lk, window=window,
                                                              alignment=alignment))


def test_length_mask(xb):
    """ATT-LEN-1 and ATT-LEN-2: keys j >= kv_len and rows i >= q_len are padding."""
    kv = np.array([[0, 3], [5, 1]])
    ql = np.array([[2, 0], [4, 1]])
    got = attnspec.length_mask(4, 5, kv_lengths=xb.from_numpy(kv, dtype=None),
                               q_lengths=xb.from_numpy(ql, dtype=None))
    got = xb.to_numpy(got)
    assert got.shape == (2, 2, 1, 4, 5)
    for b in np.ndindex(2, 2):
        np.testing.assert_array_equal(got[b][0], loop_keep(4, 5, kv_len=kv[b], q_len=ql[b]))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, (1, 0), (0, 2)])
@pytest.mark.parametrize("alignment", ["upper_left", "lower_right"])
def test_attention_mask_combines_everything(xb, rng, causal, window, alignment):
    """ATT-MASK-1, ATT-CAUSAL-2, ATT-WINDOW-1, ATT-LEN-1/2: the combined mask is the AND of
    the user mask, the band with per-batch offset kv_len - q_len, and the lengths."""
    lq, lk = 4, 6
    kv = np.array([6, 3, 0])
    ql = np.array([4, 2, 3])
    user = rng.random((3, 1, lq, lk)) < 0.8
    got = attnspec.attention_mask(
        lq, lk, mask=xb.from_numpy(user, dtype=None), causal=causal, window=window,
        alignment=alignment, kv_lengths=xb.from_numpy(kv, dtype=None),
        q_lengths=xb.from_numpy(ql, dtype=None),
    )
    got = xb.to_numpy(got)
    for b in range(3):
        expect = user[b, 0] & loop_keep(lq, lk, causal=causal, window=window,
                                        alignment=alignment, kv_len=kv[b], q_len=ql[b])
        np.testing.assert_array_equal(got[b, 0], expect)


def test_attention_mask_is_none_when_nothing_masks(xb):
    """ATT-MASK-1: no mask, no band, no lengths -> None (attention skips the where)."""
    assert attnspec.attention_mask(3, 4, xp=xb.namespace(), window=(None, None)) is None


def test_combine_masks_and_mask_to_bias(xb, rng):
    """ATT-MASK-1, ATT-BIAS-1: a mask and its -inf bias select the same keys."""
    a = rng.random((3, 4)) < 0.5
    b = rng.random((1, 4)) < 0.5
    got = attnspec.combine_masks(xb.from_numpy(a, dtype=None), None, xb.from_numpy(b, dtype=None))
    np.testing.assert_array_equal(xb.to_numpy(got), a & b)
    assert attnspec.combine_masks(None, None) is None
    bias = xb.to_numpy(attnspec.mask_to_bias(xb.from_numpy(a, dtype=None)))
    np.testing.assert_array_equal(bias, np.where(a, 0.0, -math.inf))


@pytest.mark.parametrize("layout", ["bhld", "blhd"])
def test_layout_round_trip(xb, rng, layout):
    """ATT-SHAPE-1: layout helpers swap heads and tokens and invert each other."""
    x = rng.standard_normal((2, 3, 4, 5))
    a = xb.from_numpy(x, dtype="float64" if xb.has("float64") else "float32")
    there = attnspec.bhld_to_blhd(a) if layout == "bhld" else attnspec.blhd_to_bhld(a)
    np.testing.assert_array_equal(xb.to_numpy(there), np.swapaxes(xb.to_numpy(a), 1, 2))
    back = attnspec.blhd_to_bhld(there) if layout == "bhld" else attnspec.bhld_to_blhd(there)
    np.testing.assert_array_equal(xb.to_numpy(back), xb.to_numpy(a))
    heads = attnspec.split_heads(attnspec.merge_heads(a), 3)
    np.testing.assert_array_equal(xb.to_numpy(heads), xb.to_numpy(a))
