"""Extreme and foreign-typed arguments (issue 14, items 8 and 10) on every backend.

* A window side or a length wider than any sequence means "unbounded" (docs/errors.md: an
  over-wide window is clipped): ``window=(None, 2**63)`` used to give all zeros on torch
  (the int64 wrapped around), ``(10**30, 0)`` and ``kv_lengths=10**30`` a bare
  ``OverflowError`` on torch and JAX.
* NumPy's scalars are what NumPy code hands over: ``causal=np.bool_(True)`` used to fail
  with "causal must be a bool; got bool", ``chunk_size=np.int64(4)`` and ``axis=np.int64``
  were refused while ``window`` took them.

The expected values are attnspec's own float64 results with the equivalent plain arguments
on NumPy (those are graded against closed forms elsewhere): these tests are about the
arguments reaching the same semantics.
"""

from __future__ import annotations

import numpy as np
import pytest

import attnspec

sdpa = attnspec.scaled_dot_product_attention


def _inputs(rng):
    q = rng.standard_normal((2, 2, 4, 8))
    k = rng.standard_normal((2, 2, 6, 8))
    v = rng.standard_normal((2, 2, 6, 8))
    return q, k, v


def _on(xb, *arrays):
    return [xb.from_numpy(x, dtype="float32") for x in arrays]


def _close(xb, got, want):
    np.testing.assert_allclose(np.asarray(xb.to_numpy(got), dtype=np.float64), want,
                               rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(("wide", "plain"), [
    ({"window": (None, 2**63)}, {}),
    ({"window": (2**63 - 1, None)}, {}),
    ({"window": (10**30, 0)}, {"window": (None, 0)}),
    ({"window": (10**30, 10**30), "causal": True}, {"causal": True}),
    ({"kv_lengths": 10**30}, {}),
    ({"kv_lengths": [10**30, 3]}, {"kv_lengths": [6, 3]}),
    ({"q_lengths": 10**30, "kv_lengths": 2**63}, {}),
    ({"window": (2**40, 1), "alignment": "lower_right", "causal": True},
     {"alignment": "lower_right", "causal": True}),
], ids=["right-2**63", "left-int64-max", "left-1e30", "both-1e30-causal", "kv-1e30",
        "kv-list-1e30", "both-lengths", "lower-right"])
def test_wider_than_any_sequence_means_unbounded(xb, rng, wide, plain):
    q, k, v = _inputs(rng)
    want = np.asarray(sdpa(q, k, v, **plain))
    _close(xb, sdpa(*_on(xb, q, k, v), **wide), want)


def test_numpy_scalars_are_accepted_where_python_ones_are(xb, rng):
    q, k, v = _inputs(rng)
    qx, kx, vx = _on(xb, q, k, v)
    want = np.asarray(sdpa(q, k, v, causal=True, alignment="lower_right"))
    _close(xb, sdpa(qx, kx, vx, causal=np.bool_(True), alignment="lower_right"), want)
    _close(xb, sdpa(qx, kx, vx, causal=True, alignment="lower_right",
                    chunk_size=np.int64(2)), want)
    _close(xb, sdpa(qx, kx, vx, causal=True, alignment="lower_right",
                    chunk_size=(np.int32(3), np.int64(2))), want)
    _, lse = sdpa(qx, kx, vx, return_lse=np.bool_(True))
    _close(xb, lse, np.asarray(sdpa(q, k, v, return_lse=True)[1]))
    x = rng.standard_normal((3, 5))
    _close(xb, attnspec.softmax(xb.from_numpy(x, dtype="float32"), axis=np.int64(0)),
           np.asarray(attnspec.softmax(x, axis=0)))


@pytest.mark.parametrize(("option", "value", "words"), [
    ("causal", np.array(True), "causal must be a bool; got numpy.ndarray"),
    ("causal", 1, "causal must be a bool; got int"),
    ("return_lse", "yes", "return_lse must be a bool; got str"),
    ("chunk_size", np.float64(2.0), "chunk_size must be an int"),
])
def test_foreign_types_are_named_with_their_module(option, value, words):
    q = np.zeros((1, 1, 2, 4))
    with pytest.raises(TypeError, match=words):
        sdpa(q, q, q, **{option: value})
