"""[ATT-MOD-1] FlexAttention's ``score_mod`` / ``mask_mod`` on every backend and both paths,
against the loop oracle (which calls the mods once per score with scalars, as FlexAttention's
vmap does) and against ``torch.nn.attention.flex_attention`` itself."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from attn_helpers import TOL
from reference import ref_attention

import attnspec
from attnspec.conformance import mods


def _dtype(xb):
    return "float64" if "float64" in xb.dtypes else "float32"


@pytest.mark.parametrize("chunk_size", [0, (4, 3)])
@pytest.mark.parametrize(("score_mod", "mask_mod"), [
    (mods.relative_bias, None), (mods.head_softcap, mods.stripes), (None, mods.batch_head),
    (mods.relative_bias, mods.prefix_lm),
], ids=["relative_bias", "softcap_stripes", "batch_head", "bias_prefix_lm"])
def test_mods_match_the_loop_oracle(xb, rng, chunk_size, score_mod, mask_mod):
    if (xb.has("jit") or xb.has("lazy")) and (chunk_size == 0 or score_mod is None):
        pytest.skip(f"{xb.name}: option sweeps run one case on jit/lazy backends "
                    "(per-shape compile cost)")
    dtype = _dtype(xb)
    q = rng.standard_normal((2, 4, 7, 8)) * 2.0
    k, v = rng.standard_normal((2, 2, 9, 8)), rng.standard_normal((2, 2, 9, 3))
    bias = rng.standard_normal((2, 4, 7, 9))
    out, lse = attnspec.scaled_dot_product_attention(
        *(xb.from_numpy(x, dtype) for x in (q, k, v)), bias=xb.from_numpy(bias, dtype),
        score_mod=score_mod, mask_mod=mask_mod, chunk_size=chunk_size, return_lse=True)
    want = ref_attention(q, k, v, bias=bias, score_mod=score_mod, mask_mod=mask_mod)
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(xb.to_numpy(out), want[0], rtol=rtol, atol=atol)
    np.testing.assert_allclose(xb.to_numpy(lse), want[1], rtol=rtol, atol=atol)


def test_mods_agree_with_flex_attention(rng):
    """The same callables through torch's FlexAttention (eager, float64)."""
    torch = pytest.importorskip("torch", reason="FlexAttention needs torch")
    flex = pytest.importorskip("torch.nn.attention.flex_attention",
                               reason="this torch has no FlexAttention")
    q, k, v = rng.standard_normal((2, 4, 9, 16)), *(rng.standard_normal((2, 2, 9, 16))
                                                    for _ in "kv")
    t = [torch.from_numpy(x) for x in (q, k, v)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()"
        block_mask = flex.create_block_mask(mods.stripes, 2, 4, 9, 9, device="cpu")
        got = flex.flex_attention(*t, score_mod=mods.head_softcap, block_mask=block_mask,
                                  enable_gqa=True)
    want = attnspec.scaled_dot_product_attention(q, k, v, score_mod=mods.head_softcap,
                                                 mask_mod=mods.stripes)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_score_mod_comes_after_softcap_and_before_the_bias(rng):
    q, k, v = (rng.standard_normal((1, 5, 4)) * 3 for _ in range(3))
    bias = rng.standard_normal((1, 5, 5))

    def double(score, b, h, q_idx, kv_idx):
        return score * 2.0

    got = attnspec.scaled_dot_product_attention(q, k, v, softcap=2.0, bias=bias,
                                                score_mod=double)
    s = 2.0 * np.tanh((q @ np.swapaxes(k, -1, -2) / 2.0) / 2.0) * 2.0 + bias
    weights = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(got, weights / weights.sum(-1, keepdims=True) @ v, atol=1e-12)


def test_chunked_path_skips_blocks_the_mask_mod_empties(monkeypatch, rng):
    """Eager arrays: a block where mask_mod keeps nothing is never computed (FlexAttention's
    block mask); here a local band of 4 keys around the diagonal."""
    import attnspec._chunked as chunked

    seen = []
    original = chunked.block_scores
    monkeypatch.setattr(chunked, "block_scores",
                        lambda p, rows, cols: seen.append((rows, cols)) or original(p, rows, cols))

    def band(b, h, q_idx, kv_idx):
        return abs(q_idx - kv_idx) <= 1

    q, k, v = (rng.standard_normal((1, 16, 4)) for _ in range(3))
    out = attnspec.scaled_dot_product_attention(q, k, v, mask_mod=band, chunk_size=4)
    live = {((r, r + 4), (c, c + 4)) for r in range(0, 16, 4) for c in range(0, 16, 4)
            if abs(r - c) <= 4}
    assert set(seen) == live
    np.testing.assert_allclose(out, ref_attention(q, k, v, mask_mod=band)[0], atol=1e-12)


@pytest.mark.needs("autograd")
def test_gradients_through_mods_equal_those_of_the_same_bias_and_mask(xb, rng):
    """relative_bias is the bias (q_idx - kv_idx) / 8 and prefix_lm a bool mask: the
    gradients of the mod call equal those of the array call (another code path)."""
    dtype = _dtype(xb)
    q, k, v = (rng.standard_normal((2, 6, 4)) for _ in range(3))
    dout = xb.from_numpy(rng.standard_normal((2, 6, 4)), dtype)
    data = [xb.from_numpy(x, dtype) for x in (q, k, v)]
    i, j = np.arange(6)[:, None], np.arange(6)
    bias = xb.from_numpy((i - j) / 8.0, dtype)
    mask = xb.from_numpy((j < 3) | (j <= i))

    def with_mods(q, k, v):
        return attnspec.scaled_dot_product_attention(
            q, k, v, score_mod=mods.relative_bias, mask_mod=mods.prefix_lm, chunk_size=(2, 4))

    def with_arrays(q, k, v):
        return attnspec.scaled_dot_product_attention(q, k, v, bias=bias, mask=mask)

    got = xb.vjp(with_mods, data, dout)()[1]
    want = xb.vjp(with_arrays, data, dout)()[1]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(xb.to_numpy(g), xb.to_numpy(w), rtol=1e-5, atol=1e-6)


@pytest.mark.needs("jit")
def test_mods_trace_under_jit(xb, rng):
    import jax

    q, k, v = (rng.standard_normal((2, 9, 4)) for _ in range(3))

    @jax.jit
    def f(q, k, v):
        return attnspec.scaled_dot_product_attention(
            q, k, v, score_mod=mods.head_softcap, mask_mod=mods.stripes, chunk_size=(4, 4))

    out = f(*(xb.from_numpy(a) for a in (q, k, v)))
    want = ref_attention(q, k, v, score_mod=mods.head_softcap, mask_mod=mods.stripes)[0]
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-10)


@pytest.mark.parametrize(("options", "error", "words"), [
    ({"score_mod": 3}, TypeError, ["score_mod", "callable", "int"]),
    ({"mask_mod": "causal"}, TypeError, ["mask_mod", "callable", "str"]),
    ({"score_mod": lambda s, b, h, i, j: s[..., :2]}, ValueError,
     ["score_mod", "(2, 4, 3, 2)", "(2, 4, 3, 5)"]),
    ({"score_mod": lambda s, b, h, i, j: i - j}, TypeError, ["score_mod", "real floating"]),
    ({"mask_mod": lambda b, h, i, j: i - j}, TypeError, ["mask_mod", "bool", "int"]),
    ({"mask_mod": lambda b, h, i, j: np.ones((7, 7), bool)}, ValueError,
     ["mask_mod", "(7, 7)", "(2, 4, 3, 5)"]),
])
def test_bad_mods_are_named(options, error, words):
    q, k = np.zeros((2, 4, 3, 8)), np.zeros((2, 4, 5, 8))
    with pytest.raises(error) as info:
        attnspec.scaled_dot_product_attention(q, k, k, **options)
    for word in words:
        assert word in str(info.value)
