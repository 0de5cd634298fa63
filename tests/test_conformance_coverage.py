"""No false green: a verdict rests on evidence (conformance/coverage.py, claims.py).

* The catalog gives every rule cases in the basic shape (one batch dim, Hq == Hkv, Lq == Lk)
  and cases that use one masking option at a time, so what a kernel declares selects real
  cases for every rule about it.
* A kernel without max subtraction that declares no grouped-query heads fails on the
  extreme logits; the same kernel with max subtraction passes on a substantial graded set;
  declaring almost nothing, no dtype, an empty --outputs folder is INSUFFICIENT COVERAGE
  (exit status 3), never PASSED.
* A case counts toward a rule only through what the rule is about: without an lse, ATT-LSE-1
  is not applicable, never passed, and an implementation that declares an lse it never
  returns has a coverage gap.

The kernels are in tests/coverage_kernels.py; runs are in-process (no worker needed here).
"""

from __future__ import annotations

import json

import pytest
from coverage_kernels import DeclaresLseReturnsNone

from attnspec.conformance import run
from attnspec.conformance.catalog import catalog
from attnspec.conformance.claims import RULE_CLAIMS, claimed, evidence
from attnspec.conformance.cli import main
from attnspec.conformance.coverage import FLOOR, INSUFFICIENT
from attnspec.conformance.features import BEHAVIOURS, SHAPES
from attnspec.conformance.html import to_html
from attnspec.conformance.markdown import to_markdown
from attnspec.conformance.results import Outcome
from attnspec.conformance.rules import RULES
from attnspec.conformance.terminal import summary

CASES = catalog()
#: shape features a rule's own cases may need to be about it at all
SUBJECT_SHAPES = {"ATT-GQA-1": {"gqa"}, "ATT-CAUSAL-2": {"lq_ne_lk"},
                  "ATT-SHAPE-1": set(SHAPES)}


def _check(target: str, **options):
    return run([target], isolate=False, fingerprint=False, **options)


# -- the catalog ------------------------------------------------------------------------------


def test_every_rule_has_cases_in_the_basic_shape():
    """A kernel declaring no shape feature (no GQA, Lq == Lk only, one batch dim) is graded
    on every attention rule."""
    for rule in RULES:
        cases = [c for c in CASES if rule in c.rules and c.op == "attention"]
        if not cases:
            continue
        allowed = SUBJECT_SHAPES.get(rule, set())
        basic = [c for c in cases if c.features & SHAPES <= allowed]
        assert basic, f"{rule}: every case needs one of {sorted(SHAPES - allowed)}"


def test_rules_with_half_precision_cases_have_basic_half_precision_cases():
    """So that a half-only kernel without GQA (a first Triton kernel) is graded on them."""
    for rule in RULES:
        half = [c for c in CASES if rule in c.rules and c.op == "attention"
                and c.dtype in ("float16", "bfloat16")]
        if half:
            allowed = SUBJECT_SHAPES.get(rule, set())
            assert [c for c in half if c.features & SHAPES <= allowed], rule


@pytest.mark.parametrize("exclusive", [("mask", "bias"), ("causal", "mask"),
                                       ("mask", "bias", "causal")],
                         ids=lambda e: "-xor-".join(e))
def test_every_rule_has_cases_that_respect_a_declared_constraint(exclusive):
    """Keras takes a mask or a bias, tinygrad causal or a mask, mlx one mask of any kind:
    each rule keeps cases that use at most one of them."""
    for rule in RULES:
        cases = [c for c in CASES if rule in c.rules]
        if not cases:
            continue
        assert [c for c in cases if len(c.features & set(exclusive)) <= 1], rule


def test_the_single_query_row_corner_is_in_the_catalog():
    """Upper-left causal with one query row and many keys: a kernel that drops causality
    for Lq = 1 (is_causal = Lq > 1) fails it."""
    corner = [c for c in CASES if c.id.startswith("causal-upper-left/")
              and c.params["lq"] == 1 and c.params["lk"] > 8]
    assert {c.params["hkv"] == c.params["hq"] for c in corner} == {True, False}


def test_every_rule_is_claimable_and_described():
    assert set(RULE_CLAIMS) == set(RULES)
    assert claimed(["attention"], [], ["float32"]) == [
        "ATT-SHAPE-1", "ATT-SCORE-1", "ATT-NAN-1", "ATT-BOUND-1", "ATT-PROP-1", "ATT-PROP-2",
        "ATT-PROP-3", "ATT-DTYPE-1", "ATT-ARG-1", "ATT-CONS-1"]
    assert "ATT-DTYPE-2" in claimed(["attention"], [], ["float16"])
    assert "ATT-EMPTY-1" in claimed(["attention"], ["kv_lengths"], ["float32"])
    assert claimed(["softmax"], [], ["float32"]) == ["SMX-1", "SMX-3", "SMX-4"]
    assert RULE_CLAIMS["ATT-MASK-1"].describe() == "implements attention and declares mask"


# -- the verdict --------------------------------------------------------------------------------


def test_a_kernel_that_overflows_fails_with_the_extreme_logit_cases_named():
    report = _check("coverage_kernels:overflowing")
    assert report.exit_code == 1
    failed = {r.case_id for r in report.failed}
    assert any(c.startswith("extreme/") for c in failed), failed
    assert all(".h4x4." in c for c in failed)  # the kernel has no GQA: basic shapes
    text = summary(report)
    assert "fail extreme/b2.h4x4.q9.k9.d16.magnitude=1000.0/float32" in text
    assert "reproduce: attnspec repro extreme/" in text


def test_the_same_kernel_with_max_subtraction_passes_on_a_substantial_graded_set():
    report = _check("coverage_kernels:stable")
    assert report.exit_code == 0, summary(report)
    [cov] = report.coverage().values()
    assert cov.sufficient
    assert cov.graded >= 35 > FLOOR["attention"]
    assert set(cov.claimed) == set(cov.tested)
    assert {"ATT-MASK-1", "ATT-EMPTY-1", "ATT-LEAK-1", "ATT-SCORE-1",
            "ATT-DTYPE-2"} <= set(cov.tested)
    assert ("not declared: gqa", 120) in cov.causes or any(
        cause == "not declared: gqa" for cause, _ in cov.causes)


def test_declaring_almost_nothing_is_never_green(capsys):
    report = _check("coverage_kernels:float64_only")
    assert not report.failed
    assert report.exit_code == INSUFFICIENT == 3
    [cov] = report.coverage().values()
    assert not cov.sufficient
    assert cov.graded < FLOOR["attention"]
    assert "ATT-SCORE-1" in cov.gaps
    problem = cov.problem()
    assert "declare what the implementation supports of: lq_ne_lk" in problem
    assert "declare the dtypes it supports of: float32" in problem
    text = summary(report)
    assert text.splitlines()[-1].startswith("INSUFFICIENT COVERAGE")
    assert "INSUFFICIENT COVERAGE" in to_markdown(report)
    page = to_html(report)
    assert 'class="verdict insufficient"' in page
    assert "declare the dtypes it supports of: float32" in page
    assert main(["check", "coverage_kernels:float64_only", "--in-process",
                 "--no-fingerprint", "--color", "never"]) == 3
    assert "INSUFFICIENT COVERAGE" in capsys.readouterr().out


def test_no_dtype_and_no_implementation_are_never_green():
    assert _check("coverage_kernels:no_dtypes").exit_code == INSUFFICIENT
    # asked for by name and unavailable here: nothing was graded
    report = run(["flash_attn"], isolate=False, fingerprint=False, select=["lse/"])
    assert report.exit_code == INSUFFICIENT
    assert report.insufficient() == ["no implementation was graded (flash_attn unavailable "
                                     "here)"]


def test_outputs_of_an_empty_folder_are_never_green(tmp_path, capsys):
    (tmp_path / "outputs").mkdir()
    assert main(["check", "--outputs", str(tmp_path / "outputs"), "--color", "never"]) == 3
    assert "INSUFFICIENT COVERAGE" in capsys.readouterr().out


def test_a_selection_is_judged_on_its_cases():
    """--select runs are partial: one graded case per operation, and graded evidence for
    every claimed rule among the chosen cases."""
    report = _check("attnspec[numpy]", select=["mask/"])
    assert report.exit_code == 0
    [cov] = report.coverage().values()
    assert cov.claimed == ["ATT-MASK-1"]
    assert cov.needed_by_op == {"attention": 1}


# -- evidence per rule ------------------------------------------------------------------------


def test_a_case_counts_toward_a_rule_only_through_what_the_rule_is_about():
    assert evidence(["ATT-SCORE-1", "ATT-LSE-1"], {"out"}) == {
        "ATT-LSE-1": "no lse returned"}
    assert evidence(["ATT-GRAD-2"], {"out", "dq"}) == {"ATT-GRAD-2": "no dk, dv returned"}
    assert evidence(["ATT-ARG-1"], set(), expects_value=False) == {}
    report = _check("coverage_kernels:stable", select=["extreme/"])
    extreme = [r for r in report.results if r.outcome is Outcome.PASS]
    assert extreme
    assert all(r.not_graded == {"ATT-LSE-1": "no lse returned"}
                           for r in extreme)
    assert report.by_rule()["coverage_kernels:stable"]["ATT-LSE-1"] is Outcome.NOT_APPLICABLE
    assert report.by_rule()["coverage_kernels:stable"]["ATT-SCORE-1"] is Outcome.PASS


def test_a_declared_output_that_never_comes_back_is_a_coverage_gap():
    report = run([DeclaresLseReturnsNone()], isolate=False, fingerprint=False)
    assert not report.failed
    assert report.exit_code == INSUFFICIENT
    [cov] = report.coverage().values()
    assert cov.gaps["ATT-LSE-1"].startswith("its ")
    assert "no lse returned" in cov.gaps["ATT-LSE-1"]
    assert any("return it, or stop declaring it" in a for a in cov.advice)
    data = report.to_json()
    assert data["verdict"]["exit_code"] == 3
    assert data["coverage"][0]["gaps"]["ATT-LSE-1"] == cov.gaps["ATT-LSE-1"]
    json.dumps(data, allow_nan=False)


def test_behaviours_are_graded_whatever_is_declared():
    """The behaviour features are not capabilities: an adapter's missing features never
    include them, so empty rows, NaN and extreme logits are graded on every kernel."""
    from attnspec.conformance.adapters import resolve

    adapter = resolve("coverage_kernels:stable")
    for case in CASES:
        assert not set(adapter.missing(case)) & BEHAVIOURS
    graded = {c.id.split("/")[0] for c in CASES if adapter.not_applicable(c) is None}
    assert {"extreme", "nonfinite", "empty-rows", "poison-scores", "dtype-errors"} <= graded
