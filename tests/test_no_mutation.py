"""Library functions never modify their inputs (docs/errors.md; issue "Reliability").

On every backend whose arrays can be written in place, each public function is called, on
both attention paths (direct ``chunk_size=0`` and chunked ``chunk_size=2`` or blocks), with
masks, bias, lengths and dropout, and every input must be bit-identical afterwards. The
chunked path updates its own accumulators in place; the shapes here include the cases where
a block could alias an input: ``Lk`` fitting in one key block, ``Lq == 1``, one block for
everything, float64 inputs (no dtype conversion, so the accumulation arrays start from the
inputs themselves) and float32 ones; and the native fast path (``implementation="auto"``)
where a framework kernel takes the call.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np
import pytest

import attnspec

pytestmark = pytest.mark.needs("writeable")


class Snapshot:
    """Byte copies of every array among a call's arguments, to compare after the call.

    A Dask array is compared by its graph's name after each call (a write such as
    ``x[...] = y`` gives it a new graph; computing it every time would take seconds) and by
    its computed bytes in :meth:`assert_values_unchanged`.
    """

    def __init__(self, xb: Any, **arrays: Any) -> None:
        self.xb = xb
        self.arrays = {name: a for name, a in arrays.items() if a is not None}
        self.before = {name: self._bytes(a) for name, a in self.arrays.items()}
        self.names = {name: self._name(a) for name, a in self.arrays.items()}

    def _bytes(self, a: Any) -> tuple[str, tuple[int, ...], bytes]:
        host = np.ascontiguousarray(self.xb.to_numpy(a))
        return str(host.dtype), host.shape, host.tobytes()

    @staticmethod
    def _name(a: Any) -> str | None:
        return a.name if array_api_compat.is_dask_array(a) else None

    def assert_unchanged(self, what: str) -> None:
        for name, a in self.arrays.items():
            if self.names[name] is not None:
                same = self._name(a) == self.names[name]
            else:
                same = self._bytes(a) == self.before[name]
            if not same:
                pytest.fail(f"{what} modified its input {name}")

    def assert_values_unchanged(self, what: str) -> None:
        for name, a in self.arrays.items():
            if self._bytes(a) != self.before[name]:
                pytest.fail(f"{what} modified its input {name}")


def _inputs(xb, rng, dtype, batch, hq, hkv, lq, lk, dk=4, dv=3):
    def arr(shape, kind="float"):
        if kind == "bool":
            return xb.from_numpy(rng.random(shape) > 0.3)
        if kind == "int":
            return xb.from_numpy(rng.integers(0, lk + 1, shape).astype(np.int32))
        return xb.from_numpy(rng.standard_normal(shape), dtype=dtype)

    return {
        "query": arr((*batch, hq, lq, dk)),
        "key": arr((*batch, hkv, lk, dk)),
        "value": arr((*batch, hkv, lk, dv)),
        "mask": arr((*batch, 1, lq, lk), "bool"),
        "bias": arr((hq, lq, lk)),
        "dropout_mask": arr((*batch, hq, lq, lk), "bool"),
        "kv_lengths": arr(batch, "int"),
        "q_lengths": arr(batch, "int"),
    }


SHAPES = {
    # name: (batch, Hq, Hkv, Lq, Lk)
    "gqa": ((2,), 4, 2, 5, 7),
    "decode-lq1": ((2,), 2, 1, 1, 6),
    "lk-in-one-block": ((2,), 2, 2, 3, 2),
    "one-query-one-key": ((1,), 1, 1, 1, 1),
}
CHUNKS = [0, 2, (1, 8), None]
OPTIONS = {
    "plain": {},
    "masked": {"mask", "bias", "kv_lengths", "q_lengths"},
    "dropout": {"dropout_mask", "kv_lengths"},
    "band": {"mask"},
}


def _dtypes(xb):
    return ["float32", "float64"] if xb.has("float64") else ["float32"]


def _plan(xb):
    """dtypes and chunk sizes to run. Building a Dask graph of the chunked path takes ~0.1 s
    per block, and a Dask array can only be written through ``x[...] = y``: a lazy backend
    runs the direct path and the chunked one with one query block, in one dtype."""
    if xb.has("lazy"):
        return ["float32"], [0, (64, 3)]
    return _dtypes(xb), CHUNKS


@pytest.mark.parametrize("shape", list(SHAPES))
def test_attention_does_not_modify_inputs(xb, rng, shape):
    """ATT-SHAPE-1 etc.: scaled_dot_product_attention on both paths, every option."""
    dtypes, chunks = _plan(xb)
    for dtype in dtypes:
        inputs = _inputs(xb, rng, dtype, *SHAPES[shape])
        snap = Snapshot(xb, **inputs)
        for option, names in OPTIONS.items():
            kwargs = {n: inputs[n] for n in names}
            if option == "dropout":
                kwargs["dropout_p"] = 0.25
            if option == "band":
                kwargs.update(causal=True, alignment="lower_right", window=(2, 1), softcap=5.0,
                              scale=0.7)
            for chunk_size in chunks:
                result = attnspec.scaled_dot_product_attention(
                    inputs["query"], inputs["key"], inputs["value"], return_lse=True,
                    return_weights=True, chunk_size=chunk_size, **kwargs)
                xb.synchronize(result[0])
                snap.assert_unchanged(f"sdpa({option}, chunk_size={chunk_size}, {dtype})")
                if xb.has("lazy"):
                    continue
                # without lse/weights the chunked path may take other branches
                attnspec.scaled_dot_product_attention(
                    inputs["query"], inputs["key"], inputs["value"], chunk_size=chunk_size,
                    **kwargs)
                snap.assert_unchanged(f"sdpa({option}, chunk_size={chunk_size}, out only)")
        # the native fast path (a framework's own kernel) where one takes the call
        for kwargs in ({}, {"causal": True, "kv_lengths": inputs["kv_lengths"]}):
            attnspec.scaled_dot_product_attention(
                inputs["query"], inputs["key"], inputs["value"], implementation="auto",
                **kwargs)
            snap.assert_unchanged(f"sdpa(implementation='auto', {sorted(kwargs)})")
        snap.assert_values_unchanged(f"sdpa({dtype})")


def test_softmax_family_does_not_modify_inputs(xb, rng):
    """SMX-1, SMX-2: with and without where, on every axis."""
    for dtype in _dtypes(xb):
        x = xb.from_numpy(rng.standard_normal((3, 4, 5)), dtype=dtype)
        where = xb.from_numpy(rng.random((4, 5)) > 0.4)
        snap = Snapshot(xb, x=x, where=where)
        for func in (attnspec.softmax, attnspec.log_softmax, attnspec.logsumexp):
            for axis in (-1, 0, 1):
                func(x, axis=axis)
                func(x, axis=-1, where=where)
                snap.assert_unchanged(f"{func.__name__}(axis={axis}, {dtype})")
        attnspec.logsumexp(x, keepdims=True, where=where)
        snap.assert_values_unchanged("logsumexp(keepdims=True)")


def test_mha_does_not_modify_inputs(xb, rng):
    """MHA-1: projections, biases, GQA, masks and weights."""
    def arr(shape):
        return xb.from_numpy(rng.standard_normal(shape), dtype="float32")

    x, kv = arr((2, 3, 8)), arr((2, 5, 8))
    weights = {"w_q": arr((8, 8)), "w_k": arr((8, 4)), "w_v": arr((8, 4)), "w_o": arr((8, 6)),
               "b_q": arr((8,)), "b_k": arr((4,)), "b_v": arr((4,)), "b_o": arr((6,))}
    mask = xb.from_numpy(rng.random((2, 1, 3, 5)) > 0.3)
    lengths = xb.from_numpy(np.array([5, 2], dtype=np.int32))
    snap = Snapshot(xb, x=x, kv=kv, mask=mask, lengths=lengths, **weights)
    attnspec.multi_head_attention(x, kv, kv, num_heads=4, num_kv_heads=2, mask=mask,
                                  kv_lengths=lengths, need_weights=True, **weights)
    attnspec.multi_head_attention(x, num_heads=2, w_q=weights["w_q"], w_k=weights["w_q"],
                                  w_v=weights["w_q"], w_o=weights["w_q"], causal=True)
    snap.assert_values_unchanged("multi_head_attention")


def test_merge_and_builders_do_not_modify_inputs(xb, rng):
    """merge (one and several partials, -inf rows) and every mask builder."""
    out = xb.from_numpy(rng.standard_normal((2, 3, 4)), dtype="float32")
    lse_np = rng.standard_normal((2, 3))
    lse_np[0, 1] = -np.inf
    lse = xb.from_numpy(lse_np, dtype="float32")
    out2 = xb.from_numpy(rng.standard_normal((2, 3, 4)), dtype="float32")
    mask = xb.from_numpy(rng.random((2, 1, 3, 5)) > 0.3)
    other = xb.from_numpy(rng.random((3, 5)) > 0.3)
    kv = xb.from_numpy(np.array([5, 2], dtype=np.int32))
    q = xb.from_numpy(np.array([3, 1], dtype=np.int32))
    snap = Snapshot(xb, out=out, lse=lse, out2=out2, mask=mask, other=other, kv=kv, q=q)
    attnspec.merge([(out, lse)])
    attnspec.merge([(out, lse), (out2, lse), (out, lse)])
    attnspec.attention_mask(3, 5, mask=mask, causal=True, window=(1, None),
                            alignment="lower_right", kv_lengths=kv, q_lengths=q)
    attnspec.length_mask(3, 5, kv_lengths=kv, q_lengths=q)
    attnspec.combine_masks(mask, other)
    attnspec.combine_masks(other)
    attnspec.mask_to_bias(mask)
    attnspec.merge_heads(attnspec.split_heads(out, 2))
    attnspec.bhld_to_blhd(attnspec.blhd_to_bhld(mask))
    snap.assert_values_unchanged("merge / mask builders / layout")
