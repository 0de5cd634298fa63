"""The terminal's summary (issue 15, item 4): errors grouped by cause with the fix, gradient
columns that do not run together, and a progress count that ends at the number of results
(it used to stop at 2170/2790: unavailable implementations' cases were still counted)."""

from __future__ import annotations

import io

import pytest

from attnspec.conformance import run, terminal
from attnspec.conformance.causes import causes, fix_for
from attnspec.conformance.results import CaseResult, Outcome
from attnspec.conformance.views import GRADIENTS

CASE = "dtype/b2.h4x4.q9.k9.d16/float32"


def _result(case: str, outcome: Outcome, message: str, impl: str = "mine:fwd") -> CaseResult:
    return CaseResult(case_id=case, rules=["ATT-SCORE-1"], implementation=impl,
                      backend="numpy", device="cpu", dtype="float32", op="attention",
                      params={}, outcome=outcome, seed=0, message=message)


def test_errors_group_by_cause_with_numbers_blanked_and_names_kept():
    results = [
        *(_result(f"softcap/{i}", Outcome.ERROR,
                  "TypeError: fwd() got an unexpected keyword argument 'softcap'")
          for i in range(5)),
        _result("shape/1", Outcome.ERROR, "ValueError: bad shape (2, 4, 9, 16)"),
        _result("shape/2", Outcome.ERROR, "ValueError: bad shape (1, 2, 3, 8)"),
        _result("window/1", Outcome.ERROR,
                "TypeError: fwd() got an unexpected keyword argument 'window'"),
        _result("ok/1", Outcome.PASS, ""),
        _result("slow/1", Outcome.TIMEOUT, "no result within 60 s; the worker was killed"),
    ]
    found = causes(results)
    assert [(c.count, c.outcome) for c in found] == [
        (5, Outcome.ERROR), (2, Outcome.ERROR), (1, Outcome.ERROR), (1, Outcome.TIMEOUT)]
    softcap, shape, window, slow = found
    assert "'softcap'" in softcap.cause
    assert softcap.fix.startswith("the callable does not take 'softcap': declare "
                                  "exclude = ['softcap']")
    assert shape.cause == "ValueError: bad shape (N, N, N, N)"
    assert shape.fix == ""
    assert "--timeout" in slow.fix
    assert "exclude = ['window']" in window.fix


def test_fixes_name_the_feature_of_a_multi_keyword_option():
    message = "TypeError: f() got an unexpected keyword argument 'q_segment_ids'"
    assert "exclude = ['segments']" in fix_for(Outcome.ERROR, message)
    assert "exclude = ['alibi']" in fix_for(
        Outcome.ERROR, "TypeError: f() got an unexpected keyword argument 'alibi_slopes'")


def test_the_summary_lists_causes_before_the_failures():
    report = run("broken_impls:raises_on_softcap", select=["softcap/*"], fingerprint=False,
                 isolate=False)
    text = terminal.summary(report)
    assert "Errors by cause" in text
    assert text.index("Errors by cause") < text.index("Failures (")
    line = next(x for x in text.splitlines() if x.strip().startswith(tuple("123456789"))
                and "raises_on_softcap" in x)
    assert "NotImplementedError" in line


def test_gradient_column_headers_stay_apart():
    report = run("attnspec[torch-cpu]", select=["grad/*sinks*float32"], fingerprint=False,
                 isolate=False)
    header = next(x for x in terminal.summary(report).splitlines() if "  dtype  " in x)
    for name in GRADIENTS:
        assert f" {name}" in header  # every name has a space before it: none run together


def test_progress_ends_at_the_number_of_results_when_an_implementation_is_unavailable(
        capsys):
    from attnspec.conformance.adapters import resolve
    from attnspec.conformance.cli import main

    if resolve("flash_attn").unavailable() is None:
        pytest.skip("flash_attn is available here: the test needs an unavailable built-in")
    assert main(["check", "attnspec", "flash_attn", "--select", CASE, "--in-process",
                 "--no-fingerprint", "--color", "never"]) == 0
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("1/1 ")  # flash_attn is not installed


def test_progress_total_follows_the_runner():
    stream = io.StringIO()
    progress = terminal.Progress(0, stream)
    done = _result(CASE, Outcome.PASS, "")
    progress(1, 4, done)
    progress(2, 2, done)  # two cases taken back: an implementation was unavailable
    progress.close()
    assert stream.getvalue().splitlines()[-1] == "2/2 pass 2"
