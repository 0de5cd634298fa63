"""The conformance catalog: every spec rule has cases, IDs and seeds are stable, inputs are
the same for every dtype, and the golden values agree with the independent oracle
(tests/reference.py) and the closed forms."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from reference import ref_attention

from attnspec.conformance.cases import make_inputs
from attnspec.conformance.catalog import RULE_GROUPS, catalog, select
from attnspec.conformance.features import BEHAVIOURS, FEATURES
from attnspec.conformance.golden import closed_form, golden
from attnspec.conformance.rules import RULES

SPEC = Path(__file__).resolve().parent.parent / "docs" / "spec.md"
CASES = catalog()
FULL = catalog(full=True)


def test_rule_table_matches_the_spec():
    """Every rule of docs/spec.md is in the conformance rule table and vice versa."""
    spec_ids = re.findall(r"^\|\s*((?:ATT|SMX|MHA)-(?:[A-Z]+-)?\d+)\s*\|", SPEC.read_text(),
                          re.MULTILINE)
    assert sorted(spec_ids) == sorted(RULES)


def test_every_rule_has_cases():
    """A rule without a case is a hole in the suite (ATT-* and SMX-* and MHA-1)."""
    assert not [rule for rule, groups in RULE_GROUPS.items() if not groups]
    covered = {rule for case in CASES for rule in case.rules}
    assert covered == set(RULES)


def test_ids_are_unique_and_seeds_stable():
    ids = [c.id for c in FULL]
    assert len(ids) == len(set(ids))
    again = {c.id: c.seed for c in catalog(full=True)}
    assert all(again[c.id] == c.seed for c in FULL)
    shifted = {c.id: c.seed for c in catalog(seed=7)}
    assert any(shifted[c.id] != c.seed for c in CASES)


def test_the_full_grid_is_a_superset():
    assert {c.id for c in CASES} <= {c.id for c in FULL}
    assert len(FULL) > 2 * len(CASES)
    dims = {c.params.get("dk") for c in FULL if c.op == "attention"}
    assert {1, 3, 40, 59, 64, 111, 128, 256} <= dims
    assert max(c.params.get("lk", 0) for c in FULL if c.op == "attention") == 1025
    assert {(8, 8), (8, 4), (8, 2), (8, 1)} <= {(c.params.get("hq"), c.params.get("hkv"))
                                                for c in FULL}


def test_features_are_known():
    for case in FULL:
        assert case.features <= set(FEATURES), case.id
    assert set(BEHAVIOURS) <= set(FEATURES)


def test_dtype_variants_share_their_inputs():
    """Inputs come from the case ID without the dtype: float16 sees float32's numbers,
    rounded."""
    by_variant: dict[str, list] = {}
    for case in CASES:
        by_variant.setdefault(case.id.rsplit("/", 1)[0], []).append(case)
    pairs = [cs for cs in by_variant.values() if len(cs) > 1 and cs[0].op == "attention"]
    assert pairs
    for cases in pairs[:5]:
        a, b = (make_inputs(c) for c in cases[:2])
        np.testing.assert_allclose(a["query"], b["query"], rtol=1e-2, atol=1e-2)
        assert cases[0].seed == cases[1].seed


def test_select_globs_and_substrings():
    assert {c.id for c in select(CASES, ["causal-lower-right/*"])} == {
        c.id for c in CASES if c.id.startswith("causal-lower-right/")}
    assert all("float16" in c.id for c in select(CASES, ["float16"]))


@pytest.mark.parametrize("case", [c for c in CASES if c.op == "attention" and c.expect == "value"
                                  and not c.params.get("repeat")],  # not graded on values
                         ids=lambda c: c.id)
def test_golden_agrees_with_the_independent_oracle(case):
    """The golden (attnspec float64) equals tests/reference.py's loops on every catalog case,
    including the metamorphic ones whose golden is transformed back (ATT-PROP-3, ATT-PROP-4)."""
    inputs = make_inputs(case)
    expected = golden(case, inputs)
    args = {k: v for k, v in inputs.items() if not k.startswith("__")}
    if case.params["lq"] * case.params["lk"] > 100_000:
        # The oracle is a Python loop over every score (a minute for 1025 x 1025): a long
        # case is compared on its first query rows, which are independent of the others
        # when no option refers to row indices.
        assert set(args) == {"query", "key", "value"}, case.id
        args["query"] = args["query"][..., :8, :]
        expected = {name: value[..., :8, :] if name != "lse" else value[..., :8]
                    for name, value in expected.items()}
    out, lse, weights = ref_attention(args.pop("query"), args.pop("key"), args.pop("value"),
                                      **args)
    np.testing.assert_allclose(expected["out"], out, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(expected["lse"], lse, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(expected["weights"], weights, rtol=1e-10, atol=1e-10)


def test_closed_forms_exist_and_hold():
    """ATT-PROP-1 and ATT-PROP-2 cases carry a closed form that the golden must meet (golden()
    raises GoldenMismatchError otherwise)."""
    with_forms = [c for c in CASES if closed_form(c, make_inputs(c))]
    assert {r for c in with_forms for r in c.rules} >= {"ATT-PROP-1", "ATT-PROP-2"}
    for case in with_forms:
        golden(case, make_inputs(case))
