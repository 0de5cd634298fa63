"""The suite's own mutation score (tests/mutation_score.py): every seeded defect of
tests/broken_impls.py is caught, by the rule it breaks; every rule of the spec is failed by
some defect (a rule no defect can fail is a defect of the suite); the correct references
pass everything; and docs/conformance.md shows the table as computed.

The catalog runs in-process (no runner, no worker): for each case, make the inputs, run the
adapter (``broken_impls:<name>`` resolved like any user's function), grade against the golden
and the naive reference.
"""

from __future__ import annotations

import inspect

import pytest
from broken_impls import BACKWARD_DEFECTS, BROKEN, BROKEN_SOFTMAX, DEFECTS, SOFTMAX_DEFECTS, correct
from mutation_score import RULES_BROKEN, caught, documented, grade, mutants, table

import attnspec
from attnspec.conformance.adapters.attnspec_adapter import AttnspecAdapter
from attnspec.conformance.adapters.base import Adapter
from attnspec.conformance.catalog import catalog
from attnspec.conformance.features import FEATURES, OPT_IN
from attnspec.conformance.rules import RULES

MUTANTS = mutants()


def failures(impl: Adapter) -> dict[str, tuple[tuple[str, ...], str]]:
    """case ID -> (its rules, why it failed) for every applicable case ``impl`` fails."""
    from attnspec.conformance.runner import handle, judge, prepare

    failed = {}
    for case in catalog():
        if impl.not_applicable(case) is not None:
            continue
        prepared = prepare(case)
        verdict = judge(case, handle(impl, ("run", case, prepared.inputs)), prepared)
        if verdict.outcome.value != "pass":
            failed[case.id] = (case.rules, verdict.message)
    return failed


def test_at_least_twenty_defects_across_every_rule_family():
    assert len(MUTANTS) >= 20
    assert set(RULES_BROKEN) == {*DEFECTS, *SOFTMAX_DEFECTS, *BACKWARD_DEFECTS}
    assert set(RULES_BROKEN.values()) <= set(RULES)
    families = {rule.split("-")[0] + "-" + rule.split("-")[1] if rule.startswith("ATT")
                else rule.split("-")[0] for rule in (m.rule for m in MUTANTS)}
    assert {"SMX", "MHA", "ATT-SCORE", "ATT-MASK", "ATT-CAUSAL", "ATT-EMPTY", "ATT-LEAK",
            "ATT-GRAD", "ATT-DTYPE", "ATT-DET"} <= families


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_every_defect_is_caught_by_the_rule_it_breaks(mutant):
    found = caught(mutant)
    assert found.graded > 0, f"{mutant.name}: no case was graded"
    assert found.by(mutant.rule), (f"{mutant.name} ({mutant.description}) passes every "
                                   f"{mutant.rule} case; it fails {sorted(found.failed)}")


def test_every_rule_is_failed_by_some_defect():
    """A rule that no seeded defect can fail would be green whatever an implementation does
    under it."""
    failed = set()
    for mutant in MUTANTS:
        failed |= caught(mutant).rules()
    assert set(RULES) - failed == set()


def test_the_references_without_a_defect_pass_everything():
    # So that what a defect fails is its doing: the same code without it fails nothing.
    every = (("returns", ("out", "lse", "weights")),)
    assert grade("broken_impls:correct", every).failed == {}
    assert grade("broken_impls:backward_correct_numpy", (), "gradients").failed == {}
    reference = AttnspecAdapter("numpy")
    assert failures(reference) == {}
    # every attention, mha and softmax case ran, except bfloat16 (NumPy has none), the
    # gradient cases (NumPy has no autodiff) and the bitwise batch-invariance cases (an
    # opt-in claim attnspec does not make)
    skipped = {c.id for c in catalog() if reference.not_applicable(c) is not None}
    assert skipped == {c.id for c in catalog()
                       if c.dtype == "bfloat16" or c.params.get("backward")
                       or "batch_invariant" in c.features}


def test_the_reference_declares_every_forward_feature():
    from attnspec.conformance.adapters import resolve

    impl = resolve("broken_impls:correct")
    assert impl.features == frozenset(FEATURES) - OPT_IN


def test_broken_implementations_have_attnspecs_signature():
    def shape(func):
        return [(p.name, p.kind, p.default)
                for p in inspect.signature(func).parameters.values()]

    want = shape(attnspec.scaled_dot_product_attention)
    for name, func in {"correct": correct, **BROKEN}.items():
        assert shape(func) == want, name
        assert func.__name__ == name
    for name, func in BROKEN_SOFTMAX.items():
        assert func.__name__ == name


def test_no_max_subtraction_is_caught_by_the_extreme_logits():
    found = caught(next(m for m in MUTANTS if m.name == "no_max_subtraction"))
    extreme = [case_id for case_id in found.failed if case_id.startswith("extreme/")]
    assert extreme
    assert all({"ATT-SCORE-1", "ATT-LSE-1"} <= set(found.failed[c][0]) for c in extreme)
    # the basic-shape twins catch it too: a kernel without grouped-query heads is graded
    assert any(".h4x4." in case_id for case_id in extreme)


def test_float16_accumulation_is_caught_by_the_long_row():
    found = caught(next(m for m in MUTANTS if m.name == "float16_accumulation"))
    assert any(case_id.startswith("accumulate/") and case_id.endswith("/float16")
               for case_id in found.failed), sorted(found.failed)


def test_docs_show_the_mutation_table():
    """docs/conformance.md holds the table this run computes (regenerate it with
    `python tests/mutation_score.py`)."""
    assert documented() == table()
