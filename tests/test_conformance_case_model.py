"""The typed case model (issue 12): case kinds, typed parameters per family, inputs without
magic keys, and required features that agree with the inputs actually built."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnspec.conformance.case_inputs import Inputs
from attnspec.conformance.case_params import AttentionParams, SoftmaxParams, params_for
from attnspec.conformance.cases import Case, CaseKind, make_inputs
from attnspec.conformance.catalog import GROUPS, catalog
from attnspec.conformance.input_kinds import (
    BIASES,
    ERRORS,
    LOGITS,
    MASKS,
    POISONS,
    SOFTMAX_PATTERNS,
    SOFTMAX_WHERE,
    TRANSFORMS,
)

CASES = catalog(full=True)
ATTENTION = [c for c in CASES if c.op == "attention"]

#: Features that exist exactly when the built inputs hold this argument (read off the inputs,
#: not off the parameters the features were derived from).
ARGUMENT_FEATURES = {"mask": "mask", "kv_lengths": "kv_lengths", "q_lengths": "q_lengths",
                     "scale": "scale", "softcap": "softcap", "window": "window",
                     "dropout": "dropout_mask"}


@pytest.mark.parametrize("case", ATTENTION, ids=lambda c: c.id)
def test_features_agree_with_the_inputs_built(case):
    inputs = make_inputs(case)
    assert isinstance(inputs, Inputs)
    assert not any(k.startswith("__") for k in inputs), "no magic keys among the arguments"
    for feature, argument in ARGUMENT_FEATURES.items():
        assert (feature in case.features) == (argument in inputs), (feature, sorted(inputs))
    if "bias" in inputs:
        assert "bias" in case.features
        masks_by_bias = bool(np.isneginf(inputs["bias"]).any())
        if masks_by_bias and case.params.get("poison") is None:
            assert "bias_neg_inf" in case.features
    # A paged case's key and value are page pools: its shapes are those of the dense cache.
    dense = inputs.originals if case.params.get("transform") == "paged" else inputs
    q, k, v = dense["query"], dense["key"], dense["value"]
    assert ("gqa" in case.features) == (q.shape[-3] != k.shape[-3]) or case.kind is CaseKind.ERROR
    assert ("lq_ne_lk" in case.features) == (q.shape[-2] != k.shape[-2])
    assert ("dv_ne_dk" in case.features) == (v.shape[-1] != q.shape[-1])
    causal = bool(inputs.get("causal"))
    lower_right = inputs.get("alignment") == "lower_right"
    assert ("causal" in case.features) == (causal and not lower_right)
    if causal and lower_right:
        assert "causal_lower_right" in case.features
    assert ("backward" in case.features) == (inputs.cotangent is not None)


def test_kinds_follow_the_parameters():
    kinds = {c.kind for c in CASES}
    assert kinds == set(CaseKind)
    for case in CASES:
        p = case.params
        if case.kind is CaseKind.ERROR:
            assert case.expect in ("TypeError", "ValueError")
            assert p["error"] in ERRORS
        elif case.kind is CaseKind.DETERMINISM:
            assert case.repeats == p["repeat"] > 1
        elif case.kind is CaseKind.GRADIENT:
            assert case.backward
            assert make_inputs(case).cotangent is not None
        elif case.kind is CaseKind.INVARIANCE:
            inputs = make_inputs(case)
            assert inputs.base is not None
            assert p["transform"] in TRANSFORMS
        else:
            assert case.expect == "value"
            assert case.repeats == 1


def test_invariance_inputs_keep_the_originals_beside_the_arguments():
    case = next(c for c in CASES if c.params.get("transform") == "permute")
    inputs = make_inputs(case)
    perm = inputs.permutation
    assert perm is not None
    assert sorted(perm) == list(range(inputs["key"].shape[-2]))
    np.testing.assert_array_equal(inputs["key"], inputs.base["key"][..., perm, :])
    assert inputs.originals is inputs.base


def test_mixed_dtype_case_says_so_beside_the_arguments():
    case = next(c for c in CASES if c.params.get("error") == "mixed_dtypes")
    inputs = make_inputs(case)
    assert set(inputs.dtypes) == {"key"}
    assert inputs.dtypes["key"] != case.dtype
    assert "dtypes" not in inputs


def test_every_named_kind_is_used_by_the_catalog():
    used = {(field, c.params.get(field)) for c in CASES for field in
            ("mask", "bias", "logits", "poison", "transform", "error", "pattern", "where")}
    for field, table in (("mask", MASKS), ("bias", BIASES), ("poison", POISONS),
                         ("transform", TRANSFORMS), ("error", ERRORS),
                         ("pattern", SOFTMAX_PATTERNS), ("where", SOFTMAX_WHERE)):
        missing = [name for name in table if (field, name) not in used]
        assert not missing, f"{field} kinds no case uses: {missing}"
    assert {n for n in LOGITS if n != "normal"} <= {v for f, v in used if f == "logits"}


def test_params_read_as_the_json_the_report_records():
    for case in CASES[:50]:
        data = json.loads(json.dumps(case.to_json()))
        again = params_for(case.op, data["params"])
        assert again == case.params
        assert dict(again) == data["params"]


def test_plain_mappings_become_typed_parameters():
    case = Case(id="x/y/float32", op="attention", rules=("ATT-MASK-1",), dtype="float32",
                params={"batch": [2], "hq": 4, "hkv": 2, "lq": 3, "lk": 5, "dk": 8,
                        "mask": "dense", "window": [1, None]})
    assert isinstance(case.params, AttentionParams)
    assert case.params.window == (1, None)
    assert case.params.dv == 8
    assert case.features == {"gqa", "lq_ne_lk", "mask", "window"}
    assert case.expect == "value"
    assert case.kind is CaseKind.VALUE
    soft = Case(id="s/y/float32", op="softmax", rules=("SMX-1",), dtype="float32",
                params={"shape": [2, 3], "where": "poisoned"})
    assert isinstance(soft.params, SoftmaxParams)
    assert soft.features == {"where", "nonfinite"}


@pytest.mark.parametrize(("params", "words"), [
    ({"mask": "dens"}, ["mask kind 'dens'", "dense"]),
    ({"poison": "nan_everywhere"}, ["poison kind", "query_nan"]),
    ({"mask_kind": "dense"}, ["unknown case parameter", "mask_kind"]),
])
def test_unknown_parameters_and_kinds_are_named(params, words):
    base = {"batch": [2], "hq": 2, "hkv": 2, "lq": 3, "lk": 3, "dk": 4}
    with pytest.raises(ValueError, match="unknown") as info:
        params_for("attention", {**base, **params})
    for word in words:
        assert word in str(info.value)


def test_unknown_op_is_named():
    with pytest.raises(ValueError, match="unknown case op 'atention'"):
        params_for("atention", {})


def test_groups_requires_add_to_derived_features():
    lse = [c for c in CASES if c.id.startswith("lse/")]
    assert lse
    assert all("lse" in c.features for c in lse)
    assert GROUPS["lse"].requires == {"lse"}
