"""The built-in adapters for transformers (``transformers.sdpa``, ``transformers.eager``),
mlx (``mlx.fast_sdpa``) and tinygrad (``tinygrad.sdpa``): each passes the default catalog
within its declaration except exactly its declared deviations, the catalog groups its
translation exists for run, and every measured difference from the spec is pinned, so a
library that fixes one makes its test fail (and the deviation is then out of date).

Skipped with the reason when the library is not installed. tinygrad builds a kernel per
shape and mask form (about a second a case on 2 cores): one case per catalog group here.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from test_conformance_adapters import (
    CASES,
    _available,
    _case,
    _deviates,
    _grade_all,
    _one_per_group,
    _outcome,
    _reference,
)

from attnspec.conformance.adapters import NATIVE, resolve
from attnspec.conformance.cases import Case
from attnspec.conformance.catalog import required_features

NAMES = ["transformers.sdpa", "transformers.eager", "mlx.fast_sdpa", "tinygrad.sdpa"]
#: Adapters graded on one case per catalog group here (a compile per shape).
ONE_PER_GROUP = ("tinygrad.sdpa",)

#: Catalog groups each adapter must run (the features its translation exists for).
KEY_GROUPS = {
    "transformers.sdpa": ["gqa", "mask", "bias", "causal-upper-left", "causal-lower-right",
                          "causal-lower-right-empty", "kv-lengths", "empty-rows", "shape",
                          "poison-kv", "grad", "accumulate"],
    "transformers.eager": ["gqa", "mask", "bias", "causal-upper-left", "causal-lower-right",
                           "kv-lengths", "weights", "empty-rows", "poison-kv", "grad",
                           "extreme"],
    "mlx.fast_sdpa": ["gqa", "mask", "bias", "causal-upper-left", "causal-lower-right",
                      "causal-lower-right-empty", "sinks", "empty-rows", "shape", "accumulate"],
    "tinygrad.sdpa": ["gqa", "mask", "bias", "causal-upper-left", "empty-rows", "shape",
                      "poison-scores", "accumulate"],
}


def _custom(options: dict, dtype: str = "float32", lq: int = 6) -> Case:
    """A case outside the catalog (b2, 4 query heads over 2 kv heads, Lk = 9, D = 16)."""
    params = {"batch": [2], "hq": 4, "hkv": 2, "lq": lq, "lk": 9, "dk": 16, "dv": 16,
              **options}
    slug = ".".join(f"{k}={v}" for k, v in sorted(options.items()))
    return Case(id=f"ecosystem/{slug}/{dtype}", op="attention", rules=("ATT-EMPTY-1",),
                dtype=dtype, params=params,
                features=required_features("attention", params, dtype))


def _empty_rows(adapter, case: Case) -> tuple[np.ndarray, np.ndarray]:
    """The output rows of ``case`` with no key to attend (by its mask), and the mean of V
    over every key for the same rows."""
    inputs = _reference(case)[0]
    out = adapter.run(case, inputs).outputs["out"]
    q, v = inputs["query"], inputs["value"]
    mask = np.broadcast_to(inputs["mask"], (*q.shape[:-1], v.shape[-2]))
    empty = ~mask.any(-1)
    assert empty.any(), case.id
    groups = q.shape[-3] // v.shape[-3]
    mean_v = np.repeat(v.mean(-2), groups, axis=-2)  # (b, hq, dv)
    return out[empty], np.broadcast_to(mean_v[..., None, :], out.shape)[empty]


# ------------------------------------------------------------ grading and declarations


def test_the_adapters_are_built_in_and_record_their_libraries():
    for name in NAMES:
        assert name in NATIVE
        adapter = resolve(name)
        assert adapter.name == name
        if adapter.unavailable() is None:
            assert adapter.versions(), name
    assert set(resolve("transformers.sdpa").distributions) == {"transformers", "torch"}


@pytest.mark.parametrize("name", NAMES)
def test_grades_the_catalog_within_its_declaration(name):
    adapter = _available(name)
    cases = _one_per_group(adapter, CASES) if name in ONE_PER_GROUP else CASES
    ran, failures = _grade_all(adapter, cases)
    assert not failures, f"{name}: {len(failures)} of {len(ran)} failed:\n" + "\n".join(failures)
    runs = {c.id.split("/", 1)[0] for c in CASES if adapter.not_applicable(c) is None}
    assert not sorted(set(KEY_GROUPS[name]) - runs)
    assert {c.id.split("/", 1)[0] for c in ran} >= set(KEY_GROUPS[name])


# ---------------------------------------------------------------- transformers.sdpa


def test_pin_transformers_sdpa_one_query_row_is_not_causal():
    """``is_causal=True`` with Lq = 1: the function sets ``is_causal = q_length > 1 and
    ...``, so the row attends to all 33 keys, not to key 0 (upper-left); through a mask
    built by transformers' ``sdpa_mask`` the same row is right."""
    adapter = _available("transformers.sdpa")
    case = _case("causal-upper-left/b2.h4x4.q1.k33.d16.alignment=upper_left.causal=True"
                 "/float32")
    assert "max error" in _deviates(adapter, case)
    inputs = _reference(case)[0]
    out = adapter.run(case, inputs).outputs["out"]
    q, k, v = inputs["query"], inputs["key"], inputs["value"]
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) / 4.0
    p = np.exp(scores - scores.max(-1, keepdims=True))
    full = np.einsum("bhqk,bhkd->bhqd", p / p.sum(-1, keepdims=True), v)
    assert np.abs(out - full).max() < 1e-5  # every key, as if not causal
    with_mask = _custom({"mask": "dense", "causal": True}, lq=1)
    assert not any(d.matches(with_mask) for d in adapter.deviations)
    assert _outcome(adapter, with_mask) is None


def test_pin_transformers_sdpa_leaks_and_position_bias_rows():
    adapter = _available("transformers.sdpa")
    # NaN in V past kv_lengths: torch's 0 * NaN in P @ V under the bool padding mask.
    assert "nan" in _deviates(adapter, _case("poison-kv/b2.h4x4.q9.k9.d16.kv_lengths=5_2"
                                             ".poison=kv/float32"))
    # A bool mask alone: an empty row gives 0, as the spec ...
    assert _outcome(adapter, _case("empty-rows/b2.h4x4.q9.k9.d16.mask=empty_rows"
                                   "/float32")) is None
    # ... with a bias (position_bias, finfo.min where the mask is False): the mean of V.
    case = _custom({"mask": "empty_rows", "bias": "random"})
    assert "max error" in _deviates(adapter, case)
    rows, mean_v = _empty_rows(adapter, case)
    assert np.abs(rows - mean_v).max() < 1e-5
    # softcap: refused by the function itself
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    x = torch.zeros(1, 1, 2, 4)
    with pytest.raises(ValueError, match="softcap"):
        sdpa_attention_forward(torch.nn.Module(), x, x, x, None, softcap=1.0)


# ---------------------------------------------------------------- transformers.eager


def test_pin_transformers_eager_differences():
    adapter = _available("transformers.eager")
    # float64: the softmax in float32 (cast back): a float32-sized error, float64 dtype.
    case = _case("dtype/b2.h4x4.q9.k9.d16/float64")
    _deviates(adapter, case)
    inputs, want, _ = _reference(case)
    result = adapter.run(case, inputs)
    assert result.dtypes["out"] == "float64"
    assert 1e-9 < np.abs(result.outputs["out"] - want["out"]).max() < 1e-5
    # An empty row: finfo.min, not -inf, so every key gets the same weight.
    case = _case("empty-rows/b2.h4x4.q9.k9.d16.mask=empty_rows/float32")
    _deviates(adapter, case)
    rows, mean_v = _empty_rows(adapter, case)
    assert np.abs(rows - mean_v).max() < 1e-5
    # ... and NaN where a -inf bias empties it.
    assert "nan" in _deviates(adapter, _case("empty-rows/b2.h4x4.q9.k9.d16.bias=row_neg_inf"
                                             "/float32"))
    # q @ k^T unscaled in float16: inf for logits near the float16 max, NaN out.
    assert "nan" in _deviates(adapter, _case("extreme/b2.h4x4.q9.k9.d64.logits=near_max"
                                             "/float16"))
    # NaN in a masked key row, and in V past kv_lengths, reach every row.
    assert "nan" in _deviates(adapter, _case("poison-scores/b2.h4x4.q9.k9.d16"
                                             ".mask=key_columns.poison=scores/float32"))
    assert "nan" in _deviates(adapter, _case("poison-kv/b2.h4x4.q9.k9.d16.kv_lengths=5_2"
                                             ".poison=kv/float32"))
    # weights come back (and are graded)
    case = _case("weights/b2.h4x2.q6.k9.d16.mask=dense/float32")
    assert set(adapter.run(case, _reference(case)[0]).outputs) == {"out", "weights"}
    assert _outcome(adapter, case) is None


# ---------------------------------------------------------------------- mlx.fast_sdpa


def test_pin_mlx_differences():
    adapter = _available("mlx.fast_sdpa")
    import mlx.core as mx

    assert "bfloat16" not in adapter.dtypes()  # NumPy cannot carry it
    assert mx.array(np.ones(2)).dtype == mx.float32  # why the adapter passes the dtype
    # float64 stays float64, with the softmax in float32 (as mlx documents).
    case = _case("dtype/b2.h4x4.q9.k9.d16/float64")
    _deviates(adapter, case)
    inputs, want, _ = _reference(case)
    result = adapter.run(case, inputs)
    assert result.dtypes["out"] == "float64"
    assert 1e-9 < np.abs(result.outputs["out"] - want["out"]).max() < 1e-5
    # A row masked entirely by a bool mask: the mean of V (NaN through a -inf bias).
    case = _case("empty-rows/b2.h4x4.q9.k9.d16.mask=empty_rows/float32")
    _deviates(adapter, case)
    rows, mean_v = _empty_rows(adapter, case)
    assert np.abs(rows - mean_v).max() < 1e-5
    assert "nan" in _deviates(adapter, _case("empty-rows/b2.h4x4.q9.k9.d16.bias=row_neg_inf"
                                             "/float32"))
    # "causal" is lower-right: Lq > Lk leaves rows empty, which give the mean of V too.
    _deviates(adapter, _case("causal-lower-right-empty/b2.h4x4.q9.k6.d16"
                             ".alignment=lower_right.causal=True/float32"))
    # NaN keys: a bool mask holds them off, a -inf additive mask does not.
    assert _outcome(adapter, _case("poison-scores/b2.h4x4.q9.k9.d16.mask=key_columns"
                                   ".poison=scores/float32")) is None
    assert "nan" in _deviates(adapter, _case("poison-scores/b2.h4x4.q9.k9.d16"
                                             ".bias=key_columns.poison=scores/float32"))
    # Sinks: one per head only; per-sequence sinks raise.
    assert "invalid shape for sinks" in _deviates(
        adapter, _case("sinks/b2.h4x4.q9.k9.d16.sinks=random/float32"))
    assert _outcome(adapter, _case("sinks/b2.h4x4.q9.k9.d16.bias=random.causal=True"
                                   ".sinks=per_head/float32")) is None
    # Mixed dtypes are promoted, not refused.
    assert "did not raise" in _deviates(adapter, _case("dtype-errors/b2.h4x4.q9.k9.d16"
                                                       ".error=mixed_dtypes/float32"))
    # A head-dim mismatch is a ValueError, as the spec says.
    assert _outcome(adapter, _case("arg-errors/b2.h4x4.q9.k9.d16.error=head_dim_mismatch"
                                   "/float32")) is None


# ---------------------------------------------------------------------- tinygrad.sdpa


def test_pin_tinygrad_differences():
    adapter = _available("tinygrad.sdpa")
    from tinygrad import Tensor

    # No scale argument (not declared); upper-left is_causal only.
    params = inspect.signature(Tensor.scaled_dot_product_attention).parameters
    assert "scale" not in params
    assert "is_causal" in params
    assert not {"scale", "causal_lower_right"} & adapter.features
    # A row with nothing to attend is NaN (softmax of a row of -inf).
    assert "nan" in _deviates(adapter, _case("empty-rows/b2.h4x4.q9.k9.d16.mask=empty_rows"
                                             "/float32"))
    # A NaN key at a masked position: NaN + -inf.
    assert "nan" in _deviates(adapter, _case("poison-scores/b2.h4x4.q9.k9.d16"
                                             ".mask=key_columns.poison=scores/float32"))
    # Argument errors: none for mixed dtypes, RuntimeError / IndexError for shapes.
    assert "did not raise" in _deviates(adapter, _case("dtype-errors/b2.h4x4.q9.k9.d16"
                                                       ".error=mixed_dtypes/float32"))
    assert "RuntimeError" in _deviates(adapter, _case(
        "arg-errors/b2.h4x4.q9.k9.d16.error=head_dim_mismatch/float32"))
    assert "IndexError" in _deviates(adapter, _case(
        "arg-errors/b2.h4x2.q6.k9.d16.error=heads_not_divisible/float32"))
    # float64 is computed in float64 (no deviation).
    assert _outcome(adapter, _case("dtype/b2.h4x4.q9.k9.d16/float64")) is None
