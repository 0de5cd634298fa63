"""[ATT-CONS-1] [ATT-CONS-2] Consistency cases: an implementation compared with itself (the
batch entry alone, each packed sequence alone, split-KV merged, prefill in chunks, paged vs
contiguous), graded for any implementation, bitwise where ``batch_invariant`` is declared."""

from __future__ import annotations

import numpy as np
import pytest
from broken_impls import adapter as broken_adapter

import attnspec
from attnspec.conformance.adapters import resolve
from attnspec.conformance.cases import CaseKind, make_inputs
from attnspec.conformance.catalog import catalog
from attnspec.conformance.consistency import CONSISTENCY
from attnspec.conformance.judging import judge
from attnspec.conformance.messages import Reply
from attnspec.conformance.references import prepare
from attnspec.conformance.results import Outcome

CASES = [c for c in catalog() if c.kind is CaseKind.CONSISTENCY]


def _verdict(adapter, case):
    inputs = make_inputs(case)
    output = adapter.run(case, inputs)
    return judge(case, Reply("ok", value=output), prepare(case))


def test_every_check_has_catalog_cases():
    assert {c.params["consistency"] for c in CASES} == set(CONSISTENCY)
    assert {r for c in CASES for r in c.rules} == {"ATT-CONS-1", "ATT-CONS-2"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_variant_calls_compute_the_rows_they_are_compared_on(case):
    """The variants and the comparison are right: attnspec's float64 golden of each variant
    call, compared as the check compares, agrees with the main call's golden."""
    inputs = make_inputs(case)
    check = CONSISTENCY[case.params["consistency"]]

    def run(args):
        args = dict(args.items())
        out, lse = attnspec.scaled_dot_product_attention(
            args.pop("query"), args.pop("key"), args.pop("value"), return_lse=True, **args)
        return {"out": np.asarray(out), "lse": np.asarray(lse)}

    main = run(inputs)
    pairs = check.pairs(inputs, main, [run(v) for v in inputs.variants])
    assert pairs
    for label, _, a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=label)


def test_reference_passes_and_reports_the_difference():
    adapter = resolve("attnspec[numpy]")
    for case in CASES:
        if adapter.not_applicable(case) is None:
            verdict = _verdict(adapter, case)
            assert verdict.outcome is Outcome.PASS, (case.id, verdict.message)
            assert "max |" in verdict.message


def test_batch_dependence_fails_only_a_declared_batch_invariance():
    """broken_impls.batch_dependent changes a row by one ulp when it has company: within
    every tolerance, so only the bitwise comparison of a batch_invariant claim catches it."""
    plain = broken_adapter("batch_dependent")
    claims = broken_adapter("batch_dependent",
                            features=sorted(plain.features | {"batch_invariant"}))
    bitwise = [c for c in CASES if "batch_invariant" in c.features]
    tolerant = [c for c in CASES if c.params["consistency"] == "batch_alone"
                and "batch_invariant" not in c.features and plain.not_applicable(c) is None]
    assert bitwise
    assert tolerant
    for case in tolerant:
        assert _verdict(plain, case).outcome is Outcome.PASS
    graded = [c for c in bitwise if claims.not_applicable(c) is None]
    assert graded
    for case in graded:
        verdict = _verdict(claims, case)
        assert verdict.outcome is Outcome.FAIL
        assert "bitwise" in verdict.message
