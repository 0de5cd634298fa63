"""The input validation battery (ATT-ARG-1, ATT-DTYPE-1, SMX-5; docs/errors.md).

Every case is one malformed call. It must raise exactly the documented ``TypeError`` or
``ValueError`` from an attnspec raise site (not from deep inside a framework), and the message
must name the argument and what was received (shape, dtype, type or value). Every case runs
on every backend (``xb``); the few that need a second device or unknown dimensions skip where
the backend has none.

Also here: validation never computes a lazy Dask graph and works under ``jax.jit``; the
empty-dimension semantics; the documented behaviour of value-level conditions that are not
checked (the caller's contract); and the sync between docs/errors.md and the raise sites.
"""

from __future__ import annotations

import ast
import functools
import math
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import attnspec
from attnspec.backends import get

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "attnspec"
ERRORS_DOC = ROOT / "docs" / "errors.md"

sdpa = attnspec.scaled_dot_product_attention


class Kit:
    """Well-formed inputs on one backend, and ways to break them."""

    def eager_only(self, what: str) -> None:
        """Skip on traced and lazy backends: ``what`` reads array values (docs/errors.md,
        "the caller's contract")."""
        if self.xb.has("jit") or self.xb.has("lazy"):
            pytest.skip(f"{self.xb.name}: {what} is read from the data on eager arrays only")

    def __init__(self, xb: Any) -> None:
        self.xb, self.xp = xb, xb.namespace()
        self.q = self.arr((2, 4, 3, 8))  # (batch, Hq, Lq, Dk)
        self.k = self.arr((2, 2, 5, 8))  # (batch, Hkv, Lk, Dk): grouped-query, 2:1
        self.v = self.arr((2, 2, 5, 6))  # Dv = 6
        self.x = self.arr((2, 5, 8))  # multi_head_attention input (batch, L, E)
        self.w = self.arr((8, 8))
        self.out = self.arr((2, 3, 5))  # merge partials
        self.lse = self.arr((2, 3))

    def arr(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        if dtype in ("float64", "float16") and not self.xb.has(dtype):
            pytest.skip(f"{self.xb.name}: no {dtype}")
        data = np.linspace(-1.0, 1.0, math.prod(shape)).reshape(shape)
        if dtype in ("float64", "float32", "float16"):
            return self.xb.from_numpy(data, dtype=dtype)
        return self.xb.from_numpy((data > -2).astype(dtype))  # ones of an int/bool dtype

    def bools(self, shape: tuple[int, ...]) -> Any:
        return self.arr(shape, "bool")

    def ints(self, shape: tuple[int, ...], dtype: str = "int32") -> Any:
        return self.arr(shape, dtype)

    def foreign(self, a: np.ndarray) -> tuple[Any, str]:
        """``a`` as an array of another library than the backend's, and that library's name."""
        if self.xb.name == "numpy":
            import array_api_strict

            return array_api_strict.asarray(a), "array_api_strict"
        return np.asarray(a), "numpy"

    def elsewhere(self, x: Any) -> tuple[Any, str]:
        """``x`` copied to a second device of the same library, and that device's name."""
        import array_api_compat

        if self.xb.name == "array_api_strict":
            y = self.xp.asarray(x, device=self.xp.Device("device1"))
        elif self.xb.name.startswith("torch"):
            y = x.to("meta")  # every torch has the meta device, no GPU needed
        else:
            pytest.skip(f"{self.xb.name}: no second device in this process")
        return y, str(array_api_compat.device(y))

    def unknown(self, x: Any) -> Any:
        """``x`` with an unknown (NaN) first dimension, as Dask gives after boolean indexing."""
        if self.xb.name != "dask":
            pytest.skip(f"{self.xb.name}: shapes are always known (only Dask has NaN dims)")
        return x[x[(slice(None), *([0] * (x.ndim - 1)))] > -2.0]

    def sdpa(self, *qkv: Any, **kw: Any) -> Callable[[], Any]:
        q, k, v = qkv if qkv else (self.q, self.k, self.v)
        return functools.partial(sdpa, q, k, v, **kw)

    def mha(self, *xs: Any, **kw: Any) -> Callable[[], Any]:
        args = {"num_heads": 2, "w_q": self.w, "w_k": self.w, "w_v": self.w, "w_o": self.w}
        return functools.partial(attnspec.multi_head_attention, *(xs or (self.x,)),
                                 **{**args, **kw})

    def merge(self, *pairs: Any, **kw: Any) -> Callable[[], Any]:
        partials = list(pairs) if pairs else [(self.out, self.lse), (self.out, self.lse)]
        return functools.partial(attnspec.merge, partials, **kw)


class Case(NamedTuple):
    id: str
    exc: type[Exception]
    build: Callable[[Kit], tuple[Callable[[], Any], list[str]]]


SMX = ("softmax", "log_softmax", "logsumexp")
F = functools.partial

CASES: list[Case] = [
    # -- scaled_dot_product_attention: ranks and shapes ----------------------------------
    Case("sdpa-query-rank", ValueError,
         lambda t: (t.sdpa(t.arr((3, 8)), t.k, t.v), ["query", "(3, 8)", "(*batch, heads"])),
    Case("sdpa-key-rank", ValueError,
         lambda t: (t.sdpa(t.q, t.arr((5, 8)), t.v), ["key", "(5, 8)"])),
    Case("sdpa-value-rank-1", ValueError,
         lambda t: (t.sdpa(t.q, t.k, t.arr((6,))), ["value", "(6,)"])),
    Case("sdpa-head-dim-mismatch", ValueError,
         lambda t: (t.sdpa(t.q, t.arr((2, 2, 5, 7)), t.v), ["key head_dim 7", "(2, 2, 5, 7)",
                                                             "query head_dim 8"])),
    Case("sdpa-value-length", ValueError,
         lambda t: (t.sdpa(t.q, t.k, t.arr((2, 2, 4, 6))), ["value", "(2, 2, 4, 6)"])),
    Case("sdpa-value-heads", ValueError,
         lambda t: (t.sdpa(t.q, t.k, t.arr((2, 1, 5, 6))), ["value", "(2, 1, 5, 6)"])),
    Case("sdpa-gqa-not-divisible", ValueError,
         lambda t: (t.sdpa(t.q, t.arr((2, 3, 5, 8)), t.arr((2, 3, 5, 6))),
                    ["query heads (4)", "key/value heads (3)", "(2, 3, 5, 8)"])),
    Case("sdpa-zero-kv-heads", ValueError,
         lambda t: (t.sdpa(t.q, t.arr((2, 0, 5, 8)), t.arr((2, 0, 5, 6))),
                    ["key", "(2, 0, 5, 8)", "at least one head"])),
    Case("sdpa-batch-mismatch", ValueError,
         lambda t: (t.sdpa(t.q, t.arr((3, 2, 5, 8)), t.arr((3, 2, 5, 6))),
                    ["batch", "key (3, 2, 5, 8)", "query (2, 4, 3, 8)"])),
    Case("sdpa-query-unknown-dims", ValueError,
         lambda t: (t.sdpa(t.unknown(t.q), t.k, t.v), ["query", "(nan, 4, 3, 8)", "unknown"])),
    Case("sdpa-mask-unknown-dims", ValueError,
         lambda t: (t.sdpa(mask=t.unknown(t.arr((2, 4, 3, 5))) > 0.0),
                    ["mask", "(nan, 4, 3, 5)", "unknown"])),
    # -- dtypes of query, key, value --------------------------------------------------------
    Case("sdpa-mixed-float-dtypes", TypeError,
         lambda t: (t.sdpa(t.q, t.arr((2, 2, 5, 8), "float64"), t.v),
                    ["query, key and value", "float32", "float64"])),
    Case("sdpa-int-query", TypeError,
         lambda t: (t.sdpa(t.ints((2, 4, 3, 8)), t.k, t.v), ["query", "int32", "real floating"])),
    Case("sdpa-int-key-value", TypeError,
         lambda t: (t.sdpa(t.q, t.ints((2, 2, 5, 8), "int64"), t.ints((2, 2, 5, 6), "int64")),
                    ["key", "int64"])),
    Case("sdpa-bool-value", TypeError,
         lambda t: (t.sdpa(t.q, t.k, t.bools((2, 2, 5, 6))), ["value", "bool"])),
    Case("sdpa-complex-query", TypeError,
         lambda t: (t.sdpa(t.xp.astype(t.q, t.xp.complex64), t.k, t.v),
                    ["query", "complex64", "real floating"])),
    Case("sdpa-half-and-single", TypeError,
         lambda t: (t.sdpa(t.q, t.k, t.arr((2, 2, 5, 6), "float16")),
                    ["query, key and value", "float16"])),
    # -- not arrays, mixed libraries, mixed devices -------------------------------------------
    Case("sdpa-query-list", TypeError,
         lambda t: (t.sdpa([[[0.0]]], t.k, t.v), ["query", "list"])),
    Case("sdpa-query-none", TypeError,
         lambda t: (t.sdpa(None, t.k, t.v), ["query", "None"])),
    Case("sdpa-key-other-library", TypeError,
         lambda t: (lambda f: (t.sdpa(t.q, f[0], t.v), ["key", f[1], "query"]))(
             t.foreign(np.ones((2, 2, 5, 8), np.float32)))),
    Case("sdpa-mask-other-library", TypeError,
         lambda t: (lambda f: (t.sdpa(mask=f[0]), ["mask", f[1]]))(
             t.foreign(np.ones((3, 5), bool)))),
    Case("sdpa-lengths-other-library", TypeError,
         lambda t: (lambda f: (t.sdpa(kv_lengths=f[0]), ["kv_lengths", f[1]]))(
             t.foreign(np.array([5, 2], np.int32)))),
    Case("sdpa-xp-other-library", TypeError,
         lambda t: (lambda f: (t.sdpa(*(t.foreign(np.ones(s, np.float32))[0] for s in
                                        ((2, 4, 3, 8), (2, 2, 5, 8), (2, 2, 5, 6))),
                                      xp=t.xp), ["query", f[1], "xp="]))(
             t.foreign(np.ones(1)))),
    Case("sdpa-xp-not-a-namespace", TypeError,
         lambda t: (t.sdpa(xp="numpy"), ["xp", "str"])),
    Case("sdpa-key-other-device", ValueError,
         lambda t: (lambda e: (t.sdpa(t.q, e[0], t.v), ["key", e[1], "device"]))(
             t.elsewhere(t.k))),
    Case("sdpa-mask-other-device", ValueError,
         lambda t: (lambda e: (t.sdpa(mask=e[0]), ["mask", e[1]]))(
             t.elsewhere(t.bools((3, 5))))),
    Case("sdpa-lengths-other-device", ValueError,
         lambda t: (lambda e: (t.sdpa(q_lengths=e[0]), ["q_lengths", e[1]]))(
             t.elsewhere(t.ints((2,))))),
    # -- mask, bias, dropout_mask -------------------------------------------------------
    Case("sdpa-float-mask", TypeError,
         lambda t: (t.sdpa(mask=t.arr((3, 5))), ["mask", "float32", "bool", "bias="])),
    Case("sdpa-int-mask", TypeError,
         lambda t: (t.sdpa(mask=t.ints((3, 5), "int8")), ["mask", "int8"])),
    Case("sdpa-mask-not-broadcast", ValueError,
         lambda t: (t.sdpa(mask=t.bools((3, 4))), ["mask", "(3, 4)", "(2, 4, 3, 5)"])),
    Case("sdpa-mask-too-many-axes", ValueError,
         lambda t: (t.sdpa(mask=t.bools((3, 2, 4, 3, 5))), ["mask", "(3, 2, 4, 3, 5)"])),
    Case("sdpa-bool-bias", TypeError,
         lambda t: (t.sdpa(bias=t.bools((3, 5))), ["bias", "bool", "mask="])),
    Case("sdpa-int-bias", TypeError,
         lambda t: (t.sdpa(bias=t.ints((3, 5))), ["bias", "int32"])),
    Case("sdpa-bias-not-broadcast", ValueError,
         lambda t: (t.sdpa(bias=t.arr((2, 4, 3, 4))), ["bias", "(2, 4, 3, 4)"])),
    Case("sdpa-int-sinks", TypeError,
         lambda t: (t.sdpa(sinks=t.ints((2, 4))), ["sinks", "int32", "real floating"])),
    Case("sdpa-sinks-not-broadcast", ValueError,
         lambda t: (t.sdpa(sinks=t.arr((3,))), ["sinks", "(3,)", "(*batch, Hq)", "(2, 4)"])),
    Case("sdpa-float-positions", TypeError,
         lambda t: (t.sdpa(q_positions=t.arr((3,))), ["q_positions", "float32", "integer"])),
    Case("sdpa-positions-not-broadcast", ValueError,
         lambda t: (t.sdpa(kv_positions=t.ints((4,))), ["kv_positions", "(4,)", "(2, 5)"])),
    Case("sdpa-positions-and-lower-right", ValueError,
         lambda t: (t.sdpa(q_positions=t.ints((3,)), alignment="lower_right"),
                    ["q_positions", "alignment='lower_right'", "one or the other"])),
    Case("sdpa-segment-ids-alone", ValueError,
         lambda t: (t.sdpa(kv_segment_ids=t.ints((5,))),
                    ["kv_segment_ids needs q_segment_ids"])),
    Case("attention_mask-positions-length", ValueError,
         lambda t: (F(attnspec.attention_mask, 3, 5, q_positions=t.ints((4,))),
                    ["q_positions", "(4,)", "Lq = 3"])),
    Case("sdpa-block-table-without-lengths", ValueError,
         lambda t: (t.sdpa(t.q, t.arr((6, 2, 4, 8)), t.arr((6, 2, 4, 6)),
                           block_table=t.ints((2, 3))), ["block_table needs kv_lengths"])),
    Case("sdpa-float-block-table", TypeError,
         lambda t: (t.sdpa(t.q, t.arr((6, 2, 4, 8)), t.arr((6, 2, 4, 6)),
                           block_table=t.arr((2, 3)), kv_lengths=t.ints((2,))),
                    ["block_table", "integer dtype"])),
    Case("sdpa-block-table-0d", ValueError,
         lambda t: (t.sdpa(t.q, t.arr((6, 2, 4, 8)), t.arr((6, 2, 4, 6)),
                           block_table=t.ints(()), kv_lengths=t.ints((2,))),
                    ["block_table", "(*batch, max_pages)", "()"])),
    Case("sdpa-block-table-key-not-pool", ValueError,
         lambda t: (t.sdpa(t.q, t.arr((2, 12, 8)), t.arr((6, 2, 4, 6)),
                           block_table=t.ints((2, 3)), kv_lengths=t.ints((2,))),
                    ["key must be a page pool", "(2, 12, 8)"])),
    Case("sdpa-block-table-pools-differ", ValueError,
         lambda t: (t.sdpa(t.q, t.arr((6, 2, 4, 8)), t.arr((6, 2, 8, 6)),
                           block_table=t.ints((2, 3)), kv_lengths=t.ints((2,))),
                    ["value pool (6, 2, 8, 6)", "key pool (6, 2, 4, 8)"])),
    Case("sdpa-block-table-lengths-batch", ValueError,
         lambda t: (t.sdpa(t.q, t.arr((6, 2, 4, 8)), t.arr((6, 2, 4, 6)),
                           block_table=t.ints((2, 3)), kv_lengths=t.ints((3,))),
                    ["kv_lengths", "(3,)", "block_table (2, 3)"])),
    Case("sdpa-block-table-outside-pool", ValueError,
         lambda t: t.eager_only("a live block_table entry") or (
             t.sdpa(t.q, t.arr((6, 2, 4, 8)), t.arr((6, 2, 4, 6)),
                    block_table=t.xp.asarray([[0, 9, 0], [1, 0, 0]]),
                    kv_lengths=t.xp.asarray([8, 4])),
                    ["block_table[0, 1] = 9", "outside the pool of 6 pages"])),
    Case("sdpa-score-mod-not-callable", TypeError,
         lambda t: (t.sdpa(score_mod=3), ["score_mod", "callable", "int"])),
    Case("sdpa-score-mod-returns-ints", TypeError,
         lambda t: (t.sdpa(score_mod=lambda s, b, h, i, j: i - j),
                    ["score_mod", "real floating"])),
    Case("sdpa-score-mod-shape", ValueError,
         lambda t: (t.sdpa(score_mod=lambda s, b, h, i, j: s[..., :2]),
                    ["score_mod", "(2, 4, 3, 2)", "(2, 4, 3, 5)"])),
    Case("sdpa-mask-mod-returns-ints", TypeError,
         lambda t: (t.sdpa(mask_mod=lambda b, h, i, j: i - j), ["mask_mod", "bool"])),
    Case("sdpa-mask-mod-shape", ValueError,
         lambda t: (t.sdpa(mask_mod=lambda b, h, i, j: t.xp.ones((7, 7), dtype=t.xp.bool)),
                    ["mask_mod", "(7, 7)", "(2, 4, 3, 5)"])),
    Case("sdpa-int-alibi-slopes", TypeError,
         lambda t: (t.sdpa(alibi_slopes=t.ints((4,))), ["alibi_slopes", "int32", "slope"])),
    Case("sdpa-alibi-slopes-not-broadcast", ValueError,
         lambda t: (t.sdpa(alibi_slopes=t.arr((3, 4, 1))),
                    ["alibi_slopes", "(3, 4, 1)", "(*batch, Hq)"])),
    Case("sdpa-float-dropout-mask", TypeError,
         lambda t: (t.sdpa(dropout_mask=t.arr((3, 5)), dropout_p=0.5),
                    ["dropout_mask", "float32"])),
    Case("sdpa-dropout-mask-not-broadcast", ValueError,
         lambda t: (t.sdpa(dropout_mask=t.bools((5, 3)), dropout_p=0.5),
                    ["dropout_mask", "(5, 3)"])),
    # -- kv_lengths, q_lengths ---------------------------------------------------------------
    Case("sdpa-float-lengths-array", TypeError,
         lambda t: (t.sdpa(kv_lengths=t.arr((2,))), ["kv_lengths", "float32", "integer"])),
    Case("sdpa-float-lengths-scalar", TypeError,
         lambda t: (t.sdpa(kv_lengths=3.0), ["kv_lengths", "float"])),
    Case("sdpa-float-lengths-list", TypeError,
         lambda t: (t.sdpa(q_lengths=[1.5, 2.0]), ["q_lengths", "float"])),
    Case("sdpa-bool-lengths", TypeError,
         lambda t: (t.sdpa(q_lengths=True), ["q_lengths", "bool"])),
    Case("sdpa-bool-lengths-array", TypeError,
         lambda t: (t.sdpa(q_lengths=t.bools((2,))), ["q_lengths", "bool"])),
    Case("sdpa-str-lengths", TypeError,
         lambda t: (t.sdpa(kv_lengths="5"), ["kv_lengths", "str"])),
    Case("sdpa-lengths-wrong-length", ValueError,
         lambda t: (t.sdpa(kv_lengths=t.ints((3,))), ["kv_lengths", "(3,)", "(2,)"])),
    Case("sdpa-lengths-wrong-rank", ValueError,
         lambda t: (t.sdpa(q_lengths=t.ints((2, 1))), ["q_lengths", "(2, 1)", "(2,)"])),
    Case("sdpa-negative-length-int", ValueError,
         lambda t: (t.sdpa(kv_lengths=-1), ["kv_lengths", "-1", ">= 0"])),
    Case("sdpa-negative-length-list", ValueError,
         lambda t: (t.sdpa(kv_lengths=[5, -2]), ["kv_lengths", "[5, -2]"])),
    Case("sdpa-ragged-lengths", ValueError,
         lambda t: (t.sdpa(kv_lengths=[[5], [2, 3]]), ["kv_lengths", "[[5], [2, 3]]"])),
    # -- causal, window, alignment ------------------------------------------------------------
    Case("sdpa-negative-window-left", ValueError,
         lambda t: (t.sdpa(window=(-1, 0)), ["window left", "-1", "None"])),
    Case("sdpa-negative-window-right", ValueError,
         lambda t: (t.sdpa(window=(None, -3)), ["window right", "-3"])),
    Case("sdpa-float-window", TypeError,
         lambda t: (t.sdpa(window=(1, 2.0)), ["window right", "float"])),
    Case("sdpa-window-triple", ValueError,
         lambda t: (t.sdpa(window=(1, 2, 3)), ["window", "(1, 2, 3)", "(left, right)"])),
    Case("sdpa-window-int", ValueError,
         lambda t: (t.sdpa(window=3), ["window", "got 3"])),
    Case("sdpa-unknown-alignment", ValueError,
         lambda t: (t.sdpa(causal=True, alignment="bottom_right"),
                    ["alignment", "'bottom_right'", "'lower_right'"])),
    Case("sdpa-alignment-none", TypeError,
         lambda t: (t.sdpa(alignment=None), ["alignment", "NoneType"])),
    Case("sdpa-causal-str", TypeError,
         lambda t: (t.sdpa(causal="yes"), ["causal", "str"])),
    Case("sdpa-causal-int", TypeError,
         lambda t: (t.sdpa(causal=1), ["causal", "int"])),
    # -- scale, softcap, dropout_p, chunk_size ------------------------------------------------
    Case("sdpa-softcap-zero", ValueError,
         lambda t: (t.sdpa(softcap=0), ["softcap", "got 0", "> 0"])),
    Case("sdpa-softcap-negative", ValueError,
         lambda t: (t.sdpa(softcap=-30.0), ["softcap", "-30.0"])),
    Case("sdpa-softcap-inf", ValueError,
         lambda t: (t.sdpa(softcap=math.inf), ["softcap", "inf", "finite"])),
    Case("sdpa-softcap-nan", ValueError,
         lambda t: (t.sdpa(softcap=math.nan), ["softcap", "nan"])),
    Case("sdpa-softcap-str", TypeError,
         lambda t: (t.sdpa(softcap="30"), ["softcap", "str"])),
    Case("sdpa-scale-nan", ValueError,
         lambda t: (t.sdpa(scale=math.nan), ["scale", "nan"])),
    Case("sdpa-scale-inf", ValueError,
         lambda t: (t.sdpa(scale=-math.inf), ["scale", "-inf"])),
    Case("sdpa-scale-zero", ValueError,
         lambda t: (t.sdpa(scale=0.0), ["scale", "0.0"])),
    Case("sdpa-scale-negative", ValueError,
         lambda t: (t.sdpa(scale=-0.5), ["scale", "-0.5"])),
    Case("sdpa-scale-bool", TypeError,
         lambda t: (t.sdpa(scale=True), ["scale", "bool"])),
    Case("sdpa-scale-vector", ValueError,
         lambda t: (t.sdpa(scale=t.arr((2,))), ["scale", "(2,)", "0-d"])),
    Case("sdpa-scale-int-array", TypeError,
         lambda t: (t.sdpa(scale=t.ints(())), ["scale", "int32"])),
    Case("sdpa-dropout-one", ValueError,
         lambda t: (t.sdpa(dropout_p=1.0, dropout_mask=t.bools((3, 5))),
                    ["dropout_p", "1.0", "[0, 1)"])),
    Case("sdpa-dropout-negative", ValueError,
         lambda t: (t.sdpa(dropout_p=-0.1), ["dropout_p", "-0.1"])),
    Case("sdpa-dropout-nan", ValueError,
         lambda t: (t.sdpa(dropout_p=math.nan), ["dropout_p", "nan"])),
    Case("sdpa-dropout-str", TypeError,
         lambda t: (t.sdpa(dropout_p="0.1"), ["dropout_p", "str"])),
    Case("sdpa-dropout-without-mask", ValueError,
         lambda t: (t.sdpa(dropout_p=0.1), ["dropout_p=0.1", "dropout_mask=None"])),
    Case("sdpa-chunk-negative", ValueError,
         lambda t: (t.sdpa(chunk_size=-1), ["chunk_size", "-1"])),
    Case("sdpa-chunk-zero-block", ValueError,
         lambda t: (t.sdpa(chunk_size=(0, 2)), ["chunk_size", "(0, 2)"])),
    Case("sdpa-chunk-float", TypeError,
         lambda t: (t.sdpa(chunk_size=1.5), ["chunk_size", "1.5"])),
    Case("sdpa-chunk-bool", TypeError,
         lambda t: (t.sdpa(chunk_size=True), ["chunk_size", "bool"])),
    # -- native kernels (implementation=, native_plan, attnspec.native.register) ----------
    Case("sdpa-unknown-implementation", ValueError,
         lambda t: (t.sdpa(implementation="fast"), ["implementation", "'fast'", "'auto'"])),
    Case("sdpa-native-declined", ValueError,
         lambda t: (t.sdpa(mask=t.bools((3, 5)), implementation="native"),
                    ["implementation='native'", "mask="])),
    Case("native_plan-unknown-option", TypeError,
         lambda t: (F(attnspec.native_plan, t.q, t.k, t.v, return_weight=True),
                    ["native_plan()", "return_weight"])),
    Case("native-register-not-a-kernel", TypeError,
         lambda t: (F(attnspec.native.register, object()), ["kernel", "'name'", "object"])),
    # -- softmax, log_softmax, logsumexp --------------------------------------------------
    *(Case(f"{f}-int-x", TypeError,
           lambda t, f=f: (F(getattr(attnspec, f), t.ints((2, 3))), [f"{f}: x", "int32"]))
      for f in SMX),
    *(Case(f"{f}-axis-out-of-range", ValueError,
           lambda t, f=f: (F(getattr(attnspec, f), t.arr((2, 3)), axis=2),
                           [f"{f}: axis 2", "(2, 3)"]))
      for f in SMX),
    *(Case(f"{f}-where-shape", ValueError,
           lambda t, f=f: (F(getattr(attnspec, f), t.arr((2, 3)), where=t.bools((4, 2, 3))),
                           [f"{f}: where", "(4, 2, 3)", "(2, 3)"]))
      for f in SMX),
    Case("softmax-axis-tuple", TypeError,
         lambda t: (F(attnspec.softmax, t.arr((2, 3)), axis=(0, 1)), ["axis", "tuple"])),
    Case("log_softmax-axis-float", TypeError,
         lambda t: (F(attnspec.log_softmax, t.arr((2, 3)), axis=1.0), ["axis", "float"])),
    Case("softmax-where-float", TypeError,
         lambda t: (F(attnspec.softmax, t.arr((2, 3)), where=t.arr((2, 3))),
                    ["softmax: where", "float32"])),
    Case("logsumexp-where-other-library", TypeError,
         lambda t: (lambda f: (F(attnspec.logsumexp, t.arr((2, 3)), where=f[0]),
                               ["logsumexp: where", f[1]]))(t.foreign(np.ones((2, 3), bool)))),
    Case("log_softmax-where-other-device", ValueError,
         lambda t: (lambda e: (F(attnspec.log_softmax, t.arr((2, 3)), where=e[0]),
                               ["log_softmax: where", e[1]]))(t.elsewhere(t.bools((2, 3))))),
    Case("softmax-x-list", TypeError,
         lambda t: (F(attnspec.softmax, [0.0, 1.0]), ["softmax: x", "list"])),
    Case("softmax-bool-x", TypeError,
         lambda t: (F(attnspec.softmax, t.bools((3,))), ["softmax: x", "bool"])),
    Case("logsumexp-keepdims-str", TypeError,
         lambda t: (F(attnspec.logsumexp, t.arr((2, 3)), keepdims="no"), ["keepdims", "str"])),
    Case("softmax-unknown-dims", ValueError,
         lambda t: (F(attnspec.softmax, t.unknown(t.arr((2, 3)))), ["softmax: x", "(nan, 3)"])),
    # -- multi_head_attention -------------------------------------------------------------
    Case("mha-int-query", TypeError,
         lambda t: (t.mha(t.ints((2, 5, 8))), ["query", "int32"])),
    Case("mha-weight-dtype", TypeError,
         lambda t: (t.mha(w_k=t.arr((8, 8), "float64")), ["w_k", "float64", "float32"])),
    Case("mha-key-dtype", TypeError,
         lambda t: (t.mha(t.x, t.arr((2, 5, 8), "float16")), ["key", "float16"])),
    Case("mha-query-rank", ValueError,
         lambda t: (t.mha(t.arr((8,)), t.x), ["query", "(8,)"])),
    Case("mha-key-value-length", ValueError,
         lambda t: (t.mha(t.x, t.x, t.arr((2, 4, 8))), ["key (2, 5, 8)", "value (2, 4, 8)"])),
    Case("mha-batch-mismatch", ValueError,
         lambda t: (t.mha(t.x, t.arr((3, 5, 8))), ["batch", "key (3, 5, 8)"])),
    Case("mha-num-heads-float", TypeError,
         lambda t: (t.mha(num_heads=2.0), ["num_heads", "float"])),
    Case("mha-num-kv-heads-zero", ValueError,
         lambda t: (t.mha(num_kv_heads=0), ["num_kv_heads", "got 0"])),
    Case("mha-w-q-rows", ValueError,
         lambda t: (t.mha(w_q=t.arr((6, 8))), ["w_q", "(6, 8)", "(2, 5, 8)"])),
    Case("mha-w-q-rank", ValueError,
         lambda t: (t.mha(w_v=t.arr((8,))), ["w_v", "(8,)"])),
    Case("mha-b-q-shape", ValueError,
         lambda t: (t.mha(b_q=t.arr((7,))), ["b_q", "(7,)", "(8,)"])),
    Case("mha-b-o-shape", ValueError,
         lambda t: (t.mha(b_o=t.arr((1, 8))), ["b_o", "(1, 8)"])),
    Case("mha-heads-not-divisible", ValueError,
         lambda t: (t.mha(num_heads=3), ["w_q", "width 8", "3 query heads"])),
    Case("mha-w-k-columns", ValueError,
         lambda t: (t.mha(num_kv_heads=1), ["w_k", "(8, 8)", "1 * 4 = 4"])),
    Case("mha-w-v-not-divisible", ValueError,
         lambda t: (t.mha(w_v=t.arr((8, 6)), num_heads=4),
                    ["w_v", "width 6", "4 key/value heads"])),
    Case("mha-w-o-rows", ValueError,
         lambda t: (t.mha(w_o=t.arr((6, 8))), ["w_o", "(6, 8)", "(8, out_features)"])),
    Case("mha-need-weights-str", TypeError,
         lambda t: (t.mha(need_weights="yes"), ["need_weights", "str"])),
    Case("mha-w-o-none", TypeError,
         lambda t: (t.mha(w_o=None), ["w_o", "None"])),
    Case("mha-w-o-other-library", TypeError,
         lambda t: (lambda f: (t.mha(w_o=f[0]), ["w_o", f[1]]))(
             t.foreign(np.eye(8, dtype=np.float32)))),
    Case("mha-w-v-other-device", ValueError,
         lambda t: (lambda e: (t.mha(w_v=e[0]), ["w_v", e[1]]))(t.elsewhere(t.w))),
    Case("mha-float-mask", TypeError,
         lambda t: (t.mha(mask=t.arr((5, 5))), ["mask", "float32"])),
    # -- mask builders ----------------------------------------------------------------------
    Case("causal_mask-negative-lq", ValueError,
         lambda t: (F(attnspec.causal_mask, -1, 3, xp=t.xp), ["lq", "-1"])),
    Case("causal_mask-float-lk", TypeError,
         lambda t: (F(attnspec.causal_mask, 2, 3.0, xp=t.xp), ["lk", "float"])),
    Case("causal_mask-bool-lq", TypeError,
         lambda t: (F(attnspec.causal_mask, True, 3, xp=t.xp), ["lq", "bool"])),
    Case("causal_mask-no-xp", TypeError,
         lambda t: (F(attnspec.causal_mask, 2, 3, xp=None), ["xp="])),
    Case("causal_mask-alignment", ValueError,
         lambda t: (F(attnspec.causal_mask, 2, 3, alignment="lower-right", xp=t.xp),
                    ["alignment", "'lower-right'"])),
    Case("window_mask-negative", ValueError,
         lambda t: (F(attnspec.window_mask, 2, 3, (0, -2), xp=t.xp), ["window right", "-2"])),
    Case("length_mask-float-lengths", TypeError,
         lambda t: (F(attnspec.length_mask, 2, 3, kv_lengths=t.arr((2,))),
                    ["kv_lengths", "float32"])),
    Case("length_mask-lengths-mismatch", ValueError,
         lambda t: (F(attnspec.length_mask, 2, 3, kv_lengths=t.ints((2,)),
                      q_lengths=t.ints((3,))), ["kv_lengths", "(2,)", "q_lengths", "(3,)"])),
    Case("length_mask-other-library", TypeError,
         lambda t: (lambda f: (F(attnspec.length_mask, 2, 3, kv_lengths=t.ints((2,)),
                                 q_lengths=f[0]), ["q_lengths", f[1]]))(
             t.foreign(np.ones(2, np.int32)))),
    Case("length_mask-other-device", ValueError,
         lambda t: (lambda e: (F(attnspec.length_mask, 2, 3, kv_lengths=t.ints((2,)),
                                 q_lengths=e[0]), ["q_lengths", e[1]]))(
             t.elsewhere(t.ints((2,))))),
    Case("length_mask-negative", ValueError,
         lambda t: (F(attnspec.length_mask, 2, 3, kv_lengths=-4, xp=t.xp),
                    ["kv_lengths", "-4"])),
    Case("attention_mask-float-mask", TypeError,
         lambda t: (F(attnspec.attention_mask, 3, 5, mask=t.arr((3, 5))), ["mask", "float32"])),
    Case("attention_mask-mask-shape", ValueError,
         lambda t: (F(attnspec.attention_mask, 3, 5, mask=t.bools((3, 4))),
                    ["mask", "(3, 4)", "(..., 3, 5)"])),
    Case("attention_mask-mask-vs-lengths", ValueError,
         lambda t: (F(attnspec.attention_mask, 3, 5, mask=t.bools((3, 1, 3, 5)),
                      kv_lengths=t.ints((2,))), ["mask", "(3, 1, 3, 5)", "(2,)"])),
    Case("attention_mask-causal-none", TypeError,
         lambda t: (F(attnspec.attention_mask, 3, 5, causal=None, xp=t.xp),
                    ["causal", "NoneType"])),
    Case("combine_masks-float", TypeError,
         lambda t: (F(attnspec.combine_masks, t.bools((2, 3)), t.arr((2, 3))),
                    ["combine_masks: masks[1]", "float32"])),
    Case("combine_masks-shapes", ValueError,
         lambda t: (F(attnspec.combine_masks, t.bools((2, 5)), None, t.bools((3, 5))),
                    ["masks[2]", "(3, 5)", "masks[0] (2, 5)"])),
    Case("combine_masks-list", TypeError,
         lambda t: (F(attnspec.combine_masks, [True, False]), ["masks[0]", "list"])),
    Case("combine_masks-other-library", TypeError,
         lambda t: (lambda f: (F(attnspec.combine_masks, t.bools((2, 3)), f[0]),
                               ["masks[1]", f[1]]))(t.foreign(np.ones((2, 3), bool)))),
    Case("combine_masks-other-device", ValueError,
         lambda t: (lambda e: (F(attnspec.combine_masks, t.bools((2, 3)), e[0]),
                               ["masks[1]", e[1]]))(t.elsewhere(t.bools((2, 3))))),
    Case("mask_to_bias-float-mask", TypeError,
         lambda t: (F(attnspec.mask_to_bias, t.arr((2, 3))), ["mask_to_bias: mask", "float32"])),
    Case("mask_to_bias-int-dtype", TypeError,
         lambda t: (F(attnspec.mask_to_bias, t.bools((2, 3)), dtype=t.xp.int32),
                    ["mask_to_bias: dtype", "int32"])),
    Case("mask_to_bias-not-a-dtype", TypeError,
         lambda t: (F(attnspec.mask_to_bias, t.bools((2, 3)), dtype="not-a-dtype"),
                    ["dtype", "'not-a-dtype'"])),
    # -- merge ------------------------------------------------------------------------------
    Case("merge-none", TypeError,
         lambda t: (F(attnspec.merge, None), ["merge: partials", "NoneType"])),
    Case("merge-empty", ValueError,
         lambda t: (F(attnspec.merge, []), ["merge: partials", "got none"])),
    Case("merge-bare-pair", TypeError,
         lambda t: (F(attnspec.merge, (t.out, t.lse)), ["partials[0]", "(out, lse) pair"])),
    Case("merge-triple", TypeError,
         lambda t: (t.merge((t.out, t.lse, t.lse)), ["partials[0]", "tuple"])),
    Case("merge-int-out", TypeError,
         lambda t: (t.merge((t.out, t.lse), (t.ints((2, 3, 5)), t.lse)),
                    ["partials[1] out", "int32"])),
    Case("merge-int-lse", TypeError,
         lambda t: (t.merge((t.out, t.ints((2, 3))),), ["partials[0] lse", "int32"])),
    Case("merge-out-dtypes", TypeError,
         lambda t: (t.merge((t.out, t.lse), (t.arr((2, 3, 5), "float64"), t.lse)),
                    ["partials[1] out", "float64", "float32"])),
    Case("merge-out-shape", ValueError,
         lambda t: (t.merge((t.out, t.lse), (t.arr((2, 3, 4)), t.lse)),
                    ["partials[1]", "out (2, 3, 4)"])),
    Case("merge-lse-shape", ValueError,
         lambda t: (t.merge((t.out, t.arr((2, 3, 1))),), ["partials[0]", "lse (2, 3, 1)"])),
    Case("merge-0d-out", ValueError,
         lambda t: (t.merge((t.arr(()), t.arr(()))), ["partials[0] out", "()"])),
    Case("merge-none-lse", TypeError,
         lambda t: (t.merge((t.out, None)), ["partials[0] lse", "None"])),
    Case("merge-other-library", TypeError,
         lambda t: (lambda f: (t.merge((t.out, t.lse), (f[0], t.lse)),
                               ["partials[1] out", f[1]]))(
             t.foreign(np.ones((2, 3, 5), np.float32)))),
    Case("merge-other-device", ValueError,
         lambda t: (lambda e: (t.merge((t.out, t.lse), (t.out, e[0])),
                               ["partials[1] lse", e[1]]))(t.elsewhere(t.lse))),
    # -- packed sequences ------------------------------------------------------------------
    Case("segment_ids_from_cu_seqlens-float", TypeError,
         lambda t: (F(attnspec.segment_ids_from_cu_seqlens, t.arr((3,)), 5),
                    ["cu_seqlens", "integer dtype", "float32"])),
    Case("segment_ids_from_cu_seqlens-2d", ValueError,
         lambda t: (F(attnspec.segment_ids_from_cu_seqlens, t.ints((2, 3)), 5),
                    ["cu_seqlens", "1-D", "(2, 3)"])),
    Case("segment_ids_from_cu_seqlens-empty", ValueError,
         lambda t: (F(attnspec.segment_ids_from_cu_seqlens, t.ints((0,)), 5),
                    ["cu_seqlens", "at least one offset"])),
    Case("cu_seqlens_from_segment_ids-total-negative", ValueError,
         lambda t: (F(attnspec.segment_ids_from_cu_seqlens, t.ints((3,)), -1),
                    ["total", ">= 0"])),
    Case("cu_seqlens_from_segment_ids-2d", ValueError,
         lambda t: (F(attnspec.cu_seqlens_from_segment_ids, t.ints((2, 3)), 2),
                    ["segment_ids", "1-D", "(2, 3)"])),
    Case("packed_to_bhld-rank", ValueError,
         lambda t: (F(attnspec.packed_to_bhld, t.arr((5, 8))),
                    ["packed_to_bhld", "(total, heads, head_dim)", "(5, 8)"])),
    Case("bhld_to_packed-batch", ValueError,
         lambda t: (F(attnspec.bhld_to_packed, t.arr((2, 4, 5, 8))),
                    ["bhld_to_packed", "(1, heads, total, head_dim)", "(2, 4, 5, 8)"])),
    # -- layout helpers -------------------------------------------------------------------
    Case("split_heads-num-heads-str", TypeError,
         lambda t: (F(attnspec.split_heads, t.x, "2"), ["num_heads", "str"])),
    Case("split_heads-not-divisible", ValueError,
         lambda t: (F(attnspec.split_heads, t.x, 3), ["num_heads=3", "(2, 5, 8)"])),
    Case("split_heads-rank", ValueError,
         lambda t: (F(attnspec.split_heads, t.arr((8,)), 2), ["split_heads: x", "(8,)"])),
    Case("bhld_to_blhd-rank", ValueError,
         lambda t: (F(attnspec.bhld_to_blhd, t.arr((4, 8))), ["bhld_to_blhd: x", "(4, 8)"])),
    Case("merge_heads-list", TypeError,
         lambda t: (F(attnspec.merge_heads, [[0.0]]), ["merge_heads: x", "list"])),
]

CASE_IDS = [c.id for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "battery case ids must be unique"


def _raise_frame(exc: BaseException) -> tuple[str, int]:
    """File and line of the statement that raised ``exc`` (the innermost frame)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return frame.filename, frame.lineno or 0


def _run(case: Case, t: Kit) -> BaseException:
    thunk, fragments = case.build(t)
    with pytest.raises((TypeError, ValueError)) as info:
        thunk()
    exc = info.value
    assert type(exc) is case.exc, f"{case.id}: {type(exc).__name__}: {exc}"
    filename, line = _raise_frame(exc)
    assert Path(filename).resolve().is_relative_to(LIBRARY), (
        f"{case.id}: raised outside attnspec/ ({filename}:{line}): {exc}"
    )
    message = str(exc)
    for fragment in fragments:
        assert fragment in message, f"{case.id}: {fragment!r} not in {message!r}"
    return exc


def test_battery_size():
    """The issue asks for at least 40 distinct malformed calls."""
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_malformed_call(xb, case):
    """ATT-ARG-1, ATT-DTYPE-1, SMX-5, MHA-1: one malformed call, its exception and message."""
    _run(case, Kit(xb))


# -- lazy and traced arrays ---------------------------------------------------------------


def _poisoned_dask(shape, dtype):
    """A Dask array whose computation raises: any check that reads values would trip it."""
    da = pytest.importorskip("dask.array")

    def boom(block):
        raise AssertionError("attnspec computed a Dask graph during validation")

    base = da.zeros(shape, dtype=dtype, chunks=shape or ())
    return base.map_blocks(boom, dtype=dtype, meta=np.empty((0,) * len(shape), dtype=dtype))


def test_validation_never_computes_dask():
    """ATT-ARG-1: checks read shapes and dtypes only; a graph that cannot compute is never
    computed, whether the call is rejected or accepted."""
    if not get("dask").available:
        pytest.skip(get("dask").reason)
    q = _poisoned_dask((2, 4, 3, 8), np.float32)
    k = _poisoned_dask((2, 2, 5, 8), np.float32)
    v = _poisoned_dask((2, 2, 5, 6), np.float32)
    mask = _poisoned_dask((2, 1, 3, 5), np.bool_)
    bias = _poisoned_dask((3, 5), np.float32)
    lengths = _poisoned_dask((2,), np.int64)
    bad = [
        (TypeError, "mask", dict(mask=bias)),
        (TypeError, "bias", dict(bias=mask)),
        (TypeError, "kv_lengths", dict(kv_lengths=bias[0, :2])),
        (ValueError, "q_lengths", dict(q_lengths=_poisoned_dask((3,), np.int64))),
        (ValueError, "window", dict(window=(-1, None))),
        (ValueError, "dropout_mask", dict(dropout_mask=mask[..., :4], dropout_p=0.5)),
    ]
    for exc, name, kwargs in bad:
        with pytest.raises(exc, match=name):
            sdpa(q, k, v, **kwargs)
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        attnspec.softmax(lengths)
    with pytest.raises(ValueError, match="partials"):
        attnspec.merge([(q[..., :6], q[..., 0]), (v[:, :1, :3], v[:, :1, :3, 0])])
    # Accepted calls build graphs and compute nothing; computing them reaches the poison,
    # so the graphs really depend on those inputs.
    for chunk_size in (0, 2):
        out, lse = sdpa(q, k, v, mask=mask, bias=bias, kv_lengths=lengths, q_lengths=lengths,
                        causal=True, alignment="lower_right", window=(2, None),
                        dropout_mask=mask, dropout_p=0.5, return_lse=True,
                        chunk_size=chunk_size)
        assert (out.shape, lse.shape) == ((2, 4, 3, 6), (2, 4, 3))
        with pytest.raises(AssertionError, match="computed a Dask graph"):
            out.compute()
    keep = attnspec.attention_mask(3, 5, mask=mask, kv_lengths=lengths, causal=True)
    assert keep.shape == (2, 1, 3, 5)
    lazy = [keep, attnspec.logsumexp(bias, where=mask[0, 0]),
            attnspec.merge([(out, lse), (out, lse)])[0]]
    for x in lazy:
        with pytest.raises(AssertionError, match="computed a Dask graph"):
            x.compute()


def test_validation_under_jax_jit():
    """ATT-ARG-1: checks need no concrete values, so they run (and fail clearly) while
    jax.jit traces, and a valid call with traced lengths, scale and softcap compiles."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    if not get("jax-cpu").available:
        pytest.skip(get("jax-cpu").reason)
    rng = np.random.default_rng(2)
    q = jnp.asarray(rng.standard_normal((2, 4, 3, 8)), dtype=jnp.float32)
    k = jnp.asarray(rng.standard_normal((2, 2, 5, 8)), dtype=jnp.float32)
    mask = jnp.asarray(rng.random((3, 5)) > 0.3)

    @jax.jit
    def with_float_mask(q, k, m):
        return sdpa(q, k, k, mask=m)

    with pytest.raises(TypeError, match=r"mask must be a bool array; got dtype float32"):
        with_float_mask(q, k, mask.astype(jnp.float32))

    @jax.jit
    def with_lengths(q, k, kv):
        return sdpa(q, k, k, kv_lengths=kv)

    with pytest.raises(TypeError, match="kv_lengths must have an integer dtype; got float32"):
        with_lengths(q, k, jnp.ones((2,), dtype=jnp.float32))
    with pytest.raises(ValueError, match=r"kv_lengths of shape \(3,\) must broadcast"):
        with_lengths(q, k, jnp.ones((3,), dtype=jnp.int32))
    with pytest.raises(ValueError, match=r"key head_dim 7"):
        with_lengths(q, k[..., :7], jnp.ones((2,), dtype=jnp.int32))

    @jax.jit
    def valid(q, k, m, kv, ql, scale, softcap):
        return sdpa(q, k, k, mask=m, kv_lengths=kv, q_lengths=ql, scale=scale,
                    softcap=softcap, causal=True, alignment="lower_right", return_lse=True)

    args = (q, k, mask, jnp.array([5, 2]), jnp.array([3, 1]), jnp.float32(0.5),
            jnp.float32(20.0))
    out, lse = valid(*args)
    # the same call on NumPy, with Python scalars: traced values were used, not dropped
    ref_out, ref_lse = sdpa(*(np.asarray(a) for a in (q, k, k)), mask=np.asarray(mask),
                            kv_lengths=np.array([5, 2]), q_lengths=np.array([3, 1]),
                            scale=0.5, softcap=20.0, causal=True, alignment="lower_right",
                            return_lse=True)
    np.testing.assert_allclose(np.asarray(out), ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(lse), ref_lse, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"scale must be a number or a 0-d array; got an array "
                                         r"of shape \(2,\)"):
        valid(*args[:5], jnp.ones(2, dtype=jnp.float32), args[6])


# -- empty dimensions (docs/errors.md "Empty dimensions") ---------------------------------

EMPTY = {
    # name: (query, key, value) shapes
    "Lk=0": ((2, 3, 4), (2, 0, 4), (2, 0, 5)),
    "Lq=0": ((2, 0, 4), (2, 3, 4), (2, 3, 5)),
    "Dk=0": ((2, 3, 0), (2, 4, 0), (2, 4, 5)),
    "Dv=0": ((2, 3, 4), (2, 4, 4), (2, 4, 0)),
    "batch=0": ((0, 2, 3, 4), (0, 2, 4, 4), (0, 2, 4, 5)),
    "Hq=0": ((0, 3, 4), (1, 4, 4), (1, 4, 5)),
}


@pytest.mark.parametrize("chunk_size", [0, (8, 2)], ids=["direct", "chunked"])
@pytest.mark.parametrize("name", list(EMPTY))
def test_empty_dimensions(xb, name, chunk_size):
    """ATT-SHAPE-1, ATT-EMPTY-1, ATT-PROP-2: zero-size dimensions are well defined. Lk = 0:
    every row is empty (out 0, lse -inf). Dk = 0: every score is the empty sum 0, so rows
    attend uniformly (out = mean of V, lse = log Lk). Dv = 0, Lq = 0, batch 0, Hq = 0: empty
    outputs of the documented shapes."""
    qs, ks, vs = EMPTY[name]
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s) for s in (qs, ks, vs))
    out, lse, w = sdpa(*(xb.from_numpy(a, dtype="float32") for a in (q, k, v)),
                       return_lse=True, return_weights=True, chunk_size=chunk_size)
    out, lse, w = (xb.to_numpy(x) for x in (out, lse, w))
    hq, lq, lk = qs[-3], qs[-2], ks[-2]
    batch = qs[:-3]
    assert out.shape == (*batch, hq, lq, vs[-1])
    assert lse.shape == (*batch, hq, lq)
    assert w.shape == (*batch, hq, lq, lk)
    if name == "Lk=0":
        assert np.all(out == 0.0)
        assert np.all(lse == -np.inf)
    elif name == "Dk=0":
        np.testing.assert_allclose(out, np.broadcast_to(v.mean(axis=-2, keepdims=True),
                                                        out.shape), rtol=1e-6)
        np.testing.assert_allclose(lse, np.log(lk), rtol=1e-6)
        np.testing.assert_allclose(w, 1.0 / lk, rtol=1e-6)
    elif name == "Dv=0":
        assert np.all(np.isfinite(lse))
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    else:
        assert out.size == lse.size == w.size == 0


@pytest.mark.parametrize("func", ["softmax", "log_softmax", "logsumexp"])
def test_empty_softmax_axes(xb, func):
    """SMX-3: a zero-length axis is an empty row (softmax 0 entries, logsumexp -inf); a
    zero-size other axis gives an empty result."""
    f = getattr(attnspec, func)
    row = xb.to_numpy(f(xb.from_numpy(np.zeros((3, 0)), dtype="float32")))
    if func == "logsumexp":
        assert row.shape == (3,)
        assert np.all(row == -np.inf)
    else:
        assert row.shape == (3, 0)
    none = xb.to_numpy(f(xb.from_numpy(np.zeros((0, 3)), dtype="float32")))
    assert none.shape == ((0,) if func == "logsumexp" else (0, 3))


# -- value-level conditions that are not checked: the caller's contract ------------------


def test_out_of_range_lengths_behave_as_documented(xb):
    """ATT-LEN-1, ATT-LEN-2, ATT-CAUSAL-2: lengths are values, so they are not checked
    (docs/errors.md, "The caller's contract"). What attnspec does with them: a key length
    above Lk keeps every key (and moves the lower-right diagonal as if the sequence were that
    long); a negative length empties every row of its batch entry."""
    rng = np.random.default_rng(1)
    q, k, v = (xb.from_numpy(rng.standard_normal(s), dtype="float32")
               for s in ((2, 1, 3, 4), (2, 1, 5, 4), (2, 1, 5, 4)))

    def run(**kw):
        out, lse = sdpa(q, k, v, return_lse=True, **kw)
        return xb.to_numpy(out), xb.to_numpy(lse)

    def lengths(values):
        return xb.from_numpy(np.array(values, dtype=np.int32))

    # kv_lengths > Lk: the same as Lk for upper-left ...
    np.testing.assert_allclose(run(kv_lengths=lengths([9, 9]))[0], run()[0], rtol=1e-6)
    # ... and a diagonal offset of kv_len - q_len for lower-right: kv_len 9, Lq 3, offset 6,
    # so every row of a causal lower-right call sees every key.
    np.testing.assert_allclose(
        run(kv_lengths=lengths([9, 9]), causal=True, alignment="lower_right")[0],
        run()[0], rtol=1e-6)
    # negative kv_lengths / q_lengths: rows empty, out 0, lse -inf (never NaN)
    for kw in (dict(kv_lengths=lengths([-1, 5])), dict(q_lengths=lengths([-3, 3]))):
        out, lse = run(**kw)
        assert np.all(out[0] == 0.0)
        assert np.all(lse[0] == -np.inf)
        assert np.all(np.isfinite(out[1]))
        assert np.all(np.isfinite(lse[1]))
    # q_lengths > Lq: no padding row
    np.testing.assert_allclose(run(q_lengths=lengths([7, 7]))[0], run()[0], rtol=1e-6)


# -- docs/errors.md is the list of every error ------------------------------------------


class RaiseSite(NamedTuple):
    path: str
    line: int
    end: int
    exc: str
    pattern: re.Pattern[str]


def _template(node: ast.expr) -> re.Pattern[str] | None:
    """A regex for the messages an f-string (or plain string) can produce."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.compile(re.escape(node.value), re.S)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(re.escape(str(value.value)))
            else:
                parts.append(".*?")
        return re.compile("".join(parts), re.S)
    return None


def raise_sites() -> list[RaiseSite]:
    sites = []
    for path in sorted(LIBRARY.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            call = node.exc
            rel = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert isinstance(call, ast.Call), f"{rel}: raise an exception with a message"
            assert isinstance(call.func, ast.Name), f"{rel}: raise a builtin exception class"
            pattern = _template(call.args[0]) if call.args else None
            assert pattern is not None, f"{rel}: the message must be a literal or an f-string"
            sites.append(RaiseSite(str(path), node.lineno, node.end_lineno or node.lineno,
                                   call.func.id, pattern))
    return sites


ROW = re.compile(r"^\|\s*`(?P<exc>\w+)`\s*\|.*\|\s*`(?P<message>[^`]+)`\s*\|\s*$")


def documented_errors() -> list[tuple[str, str]]:
    """``(exception, example message)`` of every row of docs/errors.md's error tables."""
    rows = []
    for line in ERRORS_DOC.read_text().splitlines():
        m = ROW.match(line)
        if m and m["exc"] in ("TypeError", "ValueError"):
            rows.append((m["exc"], m["message"]))
    return rows


def test_every_raise_site_is_documented():
    """docs/errors.md has, for every raise in attnspec/, a row with that exception whose
    example message the raise can produce (so a new or reworded error fails here)."""
    sites = raise_sites()
    rows = documented_errors()
    assert sites
    assert rows
    for site in sites:
        assert site.exc in ("TypeError", "ValueError"), f"{site.path}:{site.line}: {site.exc}"
        assert any(exc == site.exc and site.pattern.fullmatch(msg) for exc, msg in rows), (
            f"{site.path}:{site.line}: {site.exc} /{site.pattern.pattern}/ has no row in "
            "docs/errors.md")


def test_every_documented_error_exists():
    """Every row of docs/errors.md matches a raise site of the same exception (no stale
    rows)."""
    sites = raise_sites()
    for exc, message in documented_errors():
        assert any(s.exc == exc and s.pattern.fullmatch(message) for s in sites), (
            f"docs/errors.md: {exc} {message!r} is raised nowhere in attnspec/")


def test_every_raise_site_is_reached_by_the_battery():
    """Every raise in attnspec/ is triggered by at least one battery case: run the whole
    battery on the backends that reach them all (NumPy; array-api-strict for a second
    device; Dask for unknown dimensions)."""
    backends = [get(n) for n in ("numpy", "array_api_strict", "dask")]
    hit: set[tuple[str, int]] = set()
    for xb in backends:
        if not xb.available:
            continue
        for case in CASES:
            try:
                exc = _run(case, Kit(xb))
            except pytest.skip.Exception:
                continue
            hit.add(_raise_frame(exc))
    missed = [f"{Path(s.path).relative_to(ROOT)}:{s.line}" for s in raise_sites()
              if not any(f == s.path and s.line <= line <= s.end for f, line in hit)]
    if missed and not all(b.available for b in backends):
        pytest.skip(f"needs {', '.join(b.name for b in backends)} to reach {missed}")
    assert not missed, f"raise sites no battery case triggers: {missed}"
