"""The conformance suite catches what it claims to: each deliberately broken implementation
(``tests/broken_impls.py``) fails the default catalog under the rule its defect breaks, and
the correct implementations pass every case.

The catalog runs in-process (no runner, no worker): for each case, make the inputs, run the
adapter (``broken_impls:<name>`` resolved like any user's function), grade against the golden
and the naive reference.
"""

from __future__ import annotations

import inspect
from functools import cache

import numpy as np
import pytest
from broken_impls import BROKEN, DEFECTS, adapter, correct

import attnspec
from attnspec.conformance.adapters.attnspec_adapter import AttnspecAdapter
from attnspec.conformance.adapters.base import Adapter
from attnspec.conformance.cases import Case, make_inputs
from attnspec.conformance.catalog import catalog
from attnspec.conformance.features import FEATURES, OPT_IN
from attnspec.conformance.golden import golden, naive
from attnspec.conformance.tolerance import grade

#: defect -> the rule whose cases must catch it
RULE_BROKEN = {
    "wrong_scale": "ATT-SCORE-1",
    "flipped_mask": "ATT-MASK-1",
    "upper_left_always": "ATT-CAUSAL-2",
    "no_max_subtraction": "ATT-SCORE-1",  # the extreme-logit cases (with ATT-LSE-1)
    "float16_accumulation": "ATT-DTYPE-2",
    "nan_for_empty_rows": "ATT-EMPTY-1",
    "interleaved_gqa": "ATT-GQA-1",
    "softcap_after_mask": "ATT-SOFTCAP-1",
    "window_off_by_one": "ATT-WINDOW-1",
    "kv_lengths_ignored": "ATT-LEN-1",
}

CASES = catalog()


@cache
def _inputs(case: Case) -> tuple[dict, dict, dict]:
    """Inputs, golden and naive outputs of a case, computed once for every implementation."""
    inputs = make_inputs(case)
    if case.expect != "value":
        return inputs, {}, {}
    with np.errstate(all="ignore"):
        return inputs, golden(case, inputs), naive(case, inputs)


def failures(impl: Adapter) -> dict[str, tuple[tuple[str, ...], str]]:
    """case ID -> (its rules, why it failed) for every applicable case ``impl`` fails."""
    failed: dict[str, tuple[tuple[str, ...], str]] = {}
    for case in CASES:
        if impl.not_applicable(case) is not None:
            continue
        inputs, want, reference = _inputs(case)
        try:
            # NaN/inf inputs are on purpose: NumPy's warnings about them are not failures.
            with np.errstate(all="ignore"):
                result = impl.run(case, inputs)
        except Exception as exc:
            if type(exc).__name__ != case.expect:
                failed[case.id] = (case.rules, f"raised {exc!r}")
            continue
        if case.expect != "value":
            failed[case.id] = (case.rules, f"returned instead of raising {case.expect}")
            continue
        g = grade(case, result.outputs, result.dtypes, want, reference)
        if not g.passed:
            failed[case.id] = (case.rules, g.message)
    return failed


def test_every_defect_names_the_rule_it_breaks():
    assert set(RULE_BROKEN) == set(BROKEN) == set(DEFECTS)


def test_broken_implementations_have_attnspecs_signature():
    def shape(func):
        return [(p.name, p.kind, p.default)
                for p in inspect.signature(func).parameters.values()]

    want = shape(attnspec.scaled_dot_product_attention)
    for name, func in {"correct": correct, **BROKEN}.items():
        assert shape(func) == want, name
        assert func.__name__ == name


def test_attnspec_passes_the_whole_catalog():
    reference = AttnspecAdapter("numpy")
    assert failures(reference) == {}
    # every attention, mha and softmax case ran, except bfloat16 (NumPy has none) and the
    # gradient cases (NumPy has no autodiff)
    skipped = {c.id for c in CASES if reference.not_applicable(c) is not None}
    assert skipped == {c.id for c in CASES if c.dtype == "bfloat16" or c.params.get("backward")}


def test_reimplementation_without_defect_passes_the_catalog():
    # So that what a broken implementation fails is its defect's doing.
    impl = adapter("correct")
    # graded on everything but the opt-in claims (a backward pass, determinism)
    assert impl.features == frozenset(FEATURES) - OPT_IN
    assert failures(impl) == {}


@pytest.mark.parametrize("defect", list(BROKEN))
def test_broken_implementation_fails_under_the_rule_it_breaks(defect):
    failed = failures(adapter(defect))
    rule = RULE_BROKEN[defect]
    caught = {case_id: message for case_id, (rules, message) in failed.items() if rule in rules}
    assert caught, (f"{defect} ({DEFECTS[defect]}) passes every {rule} case; it fails "
                    f"{sorted(failed)}")


def test_no_max_subtraction_is_caught_by_the_extreme_logits():
    failed = failures(adapter("no_max_subtraction"))
    extreme = [case_id for case_id in failed if case_id.startswith("extreme/")]
    assert extreme
    assert all({"ATT-SCORE-1", "ATT-LSE-1"} <= set(failed[c][0]) for c in extreme)


def test_float16_accumulation_is_caught_by_the_long_row():
    failed = failures(adapter("float16_accumulation"))
    assert any(case_id.startswith("accumulate/") and case_id.endswith("/float16")
               for case_id in failed), sorted(failed)
