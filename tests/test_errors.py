"""Bad input raises a clear TypeError/ValueError naming the argument (ATT-ARG-1, SMX-5,
ATT-DTYPE-1), on every backend, before anything is computed."""

from __future__ import annotations

import numpy as np
import pytest

import attnspec


@pytest.fixture
def qkv(xb, rng):
    def make(q=(2, 4, 3, 8), k=(2, 2, 5, 8), v=(2, 2, 5, 6), dtype="float32"):
        return tuple(xb.from_numpy(rng.standard_normal(s), dtype=dtype) for s in (q, k, v))

    return make


def raises(exc, match, func, *args, **kwargs):
    with pytest.raises(exc, match=match):
        func(*args, **kwargs)


def test_shape_errors_name_the_argument_and_shape(xb, qkv):
    """ATT-ARG-1, ATT-SHAPE-1, ATT-GQA-1: wrong ranks, head dims, lengths and head counts."""
    sdpa = attnspec.scaled_dot_product_attention
    raises(ValueError, r"query must have shape \(\*batch, heads, length, head_dim\); got \(3, 8\)",
           sdpa, *qkv(q=(3, 8)))
    raises(ValueError, r"key head_dim 7 .* must equal query head_dim 8", sdpa,
           *qkv(k=(2, 2, 5, 7)))
    raises(ValueError, r"value shape \(2, 2, 4, 6\) must match key shape \(2, 2, 5, 8\)", sdpa,
           *qkv(v=(2, 2, 4, 6)))
    raises(ValueError, r"query heads \(4\) must be a multiple of key/value heads \(3\)", sdpa,
           *qkv(k=(2, 3, 5, 8), v=(2, 3, 5, 6)))
    raises(ValueError, r"batch dimensions .* do not broadcast", sdpa,
           *qkv(k=(3, 2, 5, 8), v=(3, 2, 5, 6)))


def test_dtype_errors(xb, qkv):
    """ATT-DTYPE-1, ATT-ARG-1: q/k/v dtypes must agree and be real floating."""
    q, k, v = qkv()
    k64 = xb.from_numpy(np.zeros(k.shape), dtype="float64") if xb.has("float64") else None
    if k64 is not None:
        raises(TypeError, r"query, key and value must share one dtype",
               attnspec.scaled_dot_product_attention, q, k64, v)
    xp = xb.namespace()
    qi = xp.astype(q, xp.int32)
    raises(TypeError, r"query must have a real floating dtype; got .*int32",
           attnspec.scaled_dot_product_attention, qi, k, v)


def test_mask_bias_lengths_errors(xb, qkv):
    """ATT-ARG-1, ATT-MASK-1, ATT-BIAS-1, ATT-LEN-1: wrong dtypes and shapes of the extras."""
    sdpa = attnspec.scaled_dot_product_attention
    xp = xb.namespace()
    q, k, v = qkv()
    float_mask = xp.zeros((3, 5), dtype=q.dtype)
    raises(TypeError, r"mask must be a bool array; got dtype .*float32 \(True = may attend\)",
           sdpa, q, k, v, mask=float_mask)
    raises(TypeError, r"bias must have a real floating dtype \(a bool mask goes in mask=\)",
           sdpa, q, k, v, bias=xp.ones((3, 5), dtype=xp.bool))
    raises(ValueError, r"mask of shape \(3, 4\) does not broadcast to .* \(2, 4, 3, 5\)",
           sdpa, q, k, v, mask=xp.ones((3, 4), dtype=xp.bool))
    raises(ValueError, r"bias of shape \(3, 2, 4, 3, 5\) does not broadcast", sdpa, q, k, v,
           bias=xp.zeros((3, 2, 4, 3, 5), dtype=q.dtype))
    raises(TypeError, r"kv_lengths must have an integer dtype", sdpa, q, k, v,
           kv_lengths=xp.ones((2,), dtype=q.dtype))
    raises(ValueError, r"kv_lengths of shape \(3,\) must broadcast to the batch shape \(2,\)",
           sdpa, q, k, v, kv_lengths=xp.ones((3,), dtype=xp.int32))
    raises(TypeError, r"q_lengths must be an integer array or int; got bool", sdpa, q, k, v,
           q_lengths=True)
    raises(TypeError, r"dropout_mask must be a bool array", sdpa, q, k, v,
           dropout_mask=xp.ones((3, 5), dtype=q.dtype))


def test_option_value_errors(xb, qkv):
    """ATT-ARG-1, ATT-WINDOW-1, ATT-CAUSAL-2, ATT-SOFTCAP-1, ATT-SCORE-1, ATT-DROPOUT-1."""
    sdpa = attnspec.scaled_dot_product_attention
    q, k, v = qkv()
    raises(ValueError, r"alignment must be 'upper_left' or 'lower_right'; got 'bottom_right'",
           sdpa, q, k, v, causal=True, alignment="bottom_right")
    raises(ValueError, r"window must be a \(left, right\) pair", sdpa, q, k, v, window=3)
    raises(ValueError, r"window left must be >= 0 \(use None for unbounded, not -1\); got -1",
           sdpa, q, k, v, window=(-1, 0))
    raises(TypeError, r"window right must be an int or None; got float", sdpa, q, k, v,
           window=(1, 2.0))
    raises(TypeError, r"causal must be a bool; got str", sdpa, q, k, v, causal="yes")
    raises(ValueError, r"softcap must be a finite number > 0; got 0", sdpa, q, k, v, softcap=0)
    raises(ValueError, r"scale must be a finite number > 0; got nan", sdpa, q, k, v,
           scale=float("nan"))
    raises(TypeError, r"scale must be a real number; got str", sdpa, q, k, v, scale="1")
    raises(ValueError, r"dropout_p must be in \[0, 1\); got 1.0", sdpa, q, k, v, dropout_p=1.0)
    raises(ValueError, r"dropout_p > 0 needs dropout_mask=", sdpa, q, k, v, dropout_p=0.1)


def test_mixed_namespaces_are_named(xb, qkv):
    """ATT-ARG-1: an array from another framework is reported by argument name."""
    if xb.name == "numpy":
        pytest.skip("numpy: the foreign array below is numpy itself")
    q, k, v = qkv()
    raises(TypeError, r"mask is a .* array but query is a .* array",
           attnspec.scaled_dot_product_attention, q, k, v, mask=np.ones((3, 5), dtype=bool))


def test_softmax_family_errors(xb):
    """SMX-5, SMX-2, ATT-ARG-1: dtype, axis and where checks."""
    xp = xb.namespace()
    x = xb.from_numpy(np.zeros((2, 3)), dtype="float32")
    for func in (attnspec.softmax, attnspec.log_softmax, attnspec.logsumexp):
        name = func.__name__
        raises(TypeError, rf"{name}: x must have a real floating dtype", func,
               xp.astype(x, xp.int32))
        raises(ValueError, rf"{name}: axis 2 is out of range for x of shape \(2, 3\)", func,
               x, axis=2)
        raises(TypeError, rf"{name}: axis must be an int; got tuple", func, x, axis=(0, 1))
        raises(TypeError, rf"{name}: where must be a bool array", func, x, where=x)
        raises(ValueError, rf"{name}: where of shape \(4, 2, 3\) does not broadcast", func, x,
               where=xp.ones((4, 2, 3), dtype=xp.bool))


def test_mha_errors(xb, rng):
    """MHA-1, ATT-ARG-1: projection shapes and head counts are checked with their names."""
    x = xb.from_numpy(rng.standard_normal((2, 5, 8)), dtype="float32")
    w = xb.from_numpy(rng.standard_normal((8, 8)), dtype="float32")
    w6 = xb.from_numpy(rng.standard_normal((6, 8)), dtype="float32")
    mha = attnspec.multi_head_attention
    raises(ValueError, r"w_q must have shape \(8, out_features\) .* got \(6, 8\)", mha, x,
           num_heads=2, w_q=w6, w_k=w, w_v=w, w_o=w)
    raises(ValueError, r"w_q's output width 8 is not divisible into 3 query heads", mha, x,
           num_heads=3, w_q=w, w_k=w, w_v=w, w_o=w)
    raises(ValueError, r"w_k must have 1 \* 4 = 4 output columns", mha, x, num_heads=2,
           num_kv_heads=1, w_q=w, w_k=w, w_v=w, w_o=w)
    raises(ValueError, r"num_kv_heads must be an int >= 1; got 0", mha, x, num_heads=2,
           num_kv_heads=0, w_q=w, w_k=w, w_v=w, w_o=w)


def test_builders_need_a_namespace():
    """ATT-ARG-1: a builder with no array argument asks for xp= instead of guessing."""
    raises(TypeError, r"no array argument to infer the array namespace from; pass xp=",
           attnspec.causal_mask, 2, 3, xp=None)
    raises(ValueError, r"lq must be >= 0; got -1", attnspec.length_mask, -1, 3, kv_lengths=1,
           xp=np)
