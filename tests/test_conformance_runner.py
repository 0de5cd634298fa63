"""The conformance runner: outcomes of misbehaving implementations, worker restarts,
xfail files, reports.

The implementations are in tests/runner_impls.py; each misbehaves only on the ``score/..d3``
case (TRIGGER), so that the cases after it show that the run went on. The isolated run is
made once per module (one worker per implementation plus the restarts: a few seconds).
"""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import runner_impls

from attnspec.conformance import Outcome, Report, run
from attnspec.conformance.schema import validate
from attnspec.conformance.xfail import XfailEntry, load_xfails, parse_xfails, stale_xfails

TRIGGER = "score/b2.h4x2.q6.k9.d3/float32"
LATER = "score/b2.h4x2.q6.k9.d64/float32"
ARG_ERROR = "arg-errors/b2.h4x2.q6.k9.d16.error=head_dim_mismatch/float32"
CASES = [TRIGGER, LATER, ARG_ERROR]

# implementation -> (outcome on TRIGGER, a fragment of its message)
MISBEHAVIOURS = {
    "correct": (Outcome.PASS, ""),
    "raises": (Outcome.ERROR, "RuntimeError: boom"),
    "hangs": (Outcome.TIMEOUT, "no result within"),
    "wrong_shape": (Outcome.FAIL, "shape"),
    "wrong_dtype": (Outcome.FAIL, "dtype float64, expected float32"),
    "exits": (Outcome.CRASH, "exit code 3"),
    "segfaults": (Outcome.CRASH, "SIGSEGV"),
    "non_array": (Outcome.ERROR, "not an array"),
}
# implementation -> (outcome on ARG_ERROR, a fragment of its message)
ARG_BEHAVIOURS = {
    "accepts_anything": (Outcome.FAIL, "expected ValueError, nothing was raised"),
    "raises_subclass": (Outcome.PASS, "ShapeError"),
    "raises_wrong_class": (Outcome.FAIL, "expected ValueError, got RuntimeError"),
}
# Every case but ``hangs``'s trigger must finish within it on a loaded machine (the first call
# in a fresh worker imports what it needs); only that case waits for it.
TIMEOUT = 10.0


def results_of(report: Report, target: str) -> dict:
    """case ID -> CaseResult for the implementation that ``target`` resolved to."""
    index = report.options["targets"].index(target)
    name = report.implementations[index].name
    return {r.case_id: r for r in report.results if r.implementation == name}


@pytest.fixture(scope="module")
def isolated():
    """One isolated run of every test implementation, and the progress calls it made."""
    calls = []
    targets = [f"runner_impls:{name}" for name in [*MISBEHAVIOURS, *ARG_BEHAVIOURS]]
    report = run(targets, select=CASES, timeout=TIMEOUT, fingerprint=False,
                 progress=lambda done, total, result: calls.append((done, total, result)))
    return report, calls


# -- outcomes -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MISBEHAVIOURS)
def test_misbehaviour_outcome_and_the_run_goes_on(isolated, name):
    report, _ = isolated
    results = results_of(report, f"runner_impls:{name}")
    outcome, fragment = MISBEHAVIOURS[name]
    trigger = results[TRIGGER]
    assert trigger.outcome is outcome, trigger.message
    assert fragment in trigger.message
    # The worker was restarted where it died or hung: the later cases still pass.
    assert results[LATER].outcome is Outcome.PASS, results[LATER].message
    assert results[ARG_ERROR].outcome is Outcome.PASS, results[ARG_ERROR].message


def test_timeout_is_enforced(isolated):
    report, _ = isolated
    hung = results_of(report, "runner_impls:hangs")[TRIGGER]
    assert TIMEOUT <= hung.seconds < TIMEOUT + 10


@pytest.mark.parametrize("name", ARG_BEHAVIOURS)
def test_expected_exception_cases(isolated, name):
    report, _ = isolated
    results = results_of(report, f"runner_impls:{name}")
    outcome, fragment = ARG_BEHAVIOURS[name]
    assert results[ARG_ERROR].outcome is outcome
    assert fragment in results[ARG_ERROR].message
    assert results[TRIGGER].outcome is Outcome.PASS


def test_error_message_is_class_and_message():
    report = run("runner_impls:raises", select=[TRIGGER], isolate=False, fingerprint=False)
    assert report.results[0].message == "RuntimeError: boom"
    assert report.exit_code == 1


def test_progress_reports_every_result(isolated):
    report, calls = isolated
    total = len(report.results)
    assert total == len(CASES) * (len(MISBEHAVIOURS) + len(ARG_BEHAVIOURS))
    assert [done for done, _, _ in calls] == list(range(1, total + 1))
    assert {t for _, t, _ in calls} == {total}
    assert [r for _, _, r in calls] == report.results


def test_an_interrupted_run_leaves_no_worker():
    import multiprocessing

    def stop(done, total, result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("runner_impls:correct", select=CASES, fingerprint=False, progress=stop)
    # The run's own workers (named so); a library graded earlier in this test process may
    # keep a pool of its own (tinygrad's compile pool showed up here).
    assert [p for p in multiprocessing.active_children()
            if p.name.startswith("attnspec-worker")] == []


def test_report_json_round_trips(isolated):
    report, _ = isolated
    text = json.dumps(report.to_json(), allow_nan=False)
    again = Report.from_json(json.loads(text))
    assert again.to_json() == report.to_json()
    assert again.results == report.results
    assert again.implementations == report.implementations
    assert validate(report.to_json()) == []  # report.schema.json


def test_options_and_implementation_info(isolated):
    report, _ = isolated
    options = report.options
    assert options["select"] == CASES
    assert options["timeout"] == TIMEOUT
    assert options["isolate"] is True
    assert options["cases"] == len(CASES)
    info = report.implementations[0]
    assert info.backend == "numpy"
    assert info.unavailable is None
    assert "numpy" in report.environment["libraries"]


# -- applicability, availability, adapter objects -------------------------------------------


def test_not_applicable_cases_are_recorded_not_run():
    report = run(["attnspec[numpy]"], select=["lse/b2.h4x2.q6.k9.d16/"], isolate=False,
                 fingerprint=False)
    outcomes = {r.dtype: r for r in report.results}
    assert outcomes["bfloat16"].outcome is Outcome.NOT_APPLICABLE
    assert "bfloat16" in outcomes["bfloat16"].message
    assert outcomes["bfloat16"].seconds == 0
    assert outcomes["float32"].outcome is Outcome.PASS
    assert report.exit_code == 0


def test_adapter_objects_unpicklable_and_unavailable():
    calls = []
    report = run([runner_impls.Missing(), runner_impls.NumpyAttention(),
                  runner_impls.Unpicklable()], select=[LATER], fingerprint=False,
                 progress=lambda done, total, result: calls.append((done, total)))
    names = [i.name for i in report.implementations]
    assert names == ["missing", "numpy-attention", "unpicklable"]
    assert [r.outcome for r in report.results] == [Outcome.PASS, Outcome.PASS]
    # The unpicklable adapter ran in-process, and the report says so.
    assert any("unpicklable: ran in-process" in n for n in report.options["notes"])
    # The unavailable one is listed with its reason and has no results.
    missing = report.implementations[0]
    assert missing.unavailable == "not installed here"
    assert calls == [(1, 2), (2, 2)]  # the total shrank from 3 to 2 when that was known


def test_adapter_the_worker_cannot_recreate_runs_in_process():
    report = run([runner_impls.FailsInWorker()], select=[LATER], fingerprint=False)
    assert [r.outcome for r in report.results] == [Outcome.PASS]
    [note] = report.options["notes"]
    assert "fails-in-worker: ran in-process" in note
    assert "cannot be re-created in another process" in note


def test_dtypes_filter():
    report = run("attnspec[numpy]", select="lse/", dtypes=["float32"], isolate=False,
                 fingerprint=False)
    assert {r.dtype for r in report.results} == {"float32"}
    assert report.options["dtypes"] == ["float32"]


def test_golden_mismatch_is_an_internal_error(monkeypatch):
    from attnspec.conformance import golden

    def broken(case, inputs):
        raise golden.GoldenMismatchError("out differs from its closed form")

    monkeypatch.setattr(golden, "golden", broken)
    report = run("attnspec[numpy]", select=[LATER], isolate=False, fingerprint=False)
    [result] = report.results
    assert result.outcome is Outcome.ERROR
    assert "internal error of attnspec" in result.message
    assert "GoldenMismatchError" in result.message


@pytest.mark.parametrize(("behaviour", "expected"), [
    ("ok", {"mask_polarity": "keep"}),
    ("raises", {"error": "RuntimeError: probe failed"}),
])
def test_fingerprint_is_recorded_and_failure_tolerant(monkeypatch, behaviour, expected):
    module = types.ModuleType("attnspec.conformance.fingerprint")

    def fingerprint(call, adapter=None):
        if behaviour == "raises":
            raise RuntimeError("probe failed")
        return {"mask_polarity": "keep"}

    module.fingerprint = fingerprint
    monkeypatch.setitem(sys.modules, module.__name__, module)
    report = run("attnspec[numpy]", select=[LATER], isolate=False)
    assert report.implementations[0].fingerprint == expected
    assert validate(report.to_json()) == []
    assert report.results[0].outcome is Outcome.PASS


def test_fingerprint_runs_in_the_worker():
    pytest.importorskip("attnspec.conformance.fingerprint")
    report = run("attnspec[numpy]", select=[LATER])
    fingerprint = report.implementations[0].fingerprint
    assert fingerprint.get("mask_polarity") == "keep", fingerprint


def test_fingerprint_is_time_limited(monkeypatch):
    from attnspec.conformance import runner

    pytest.importorskip("attnspec.conformance.fingerprint")
    # The limit is set in the parent: every probe of `slow` takes 1.5 s, more than 1 s.
    monkeypatch.setattr(runner, "FINGERPRINT_BOUNDS", (1.0, 1.0))
    report = run("runner_impls:slow", select=[LATER], timeout=TIMEOUT)
    assert report.results[0].outcome is Outcome.PASS
    assert "fingerprint timeout" in report.implementations[0].fingerprint["error"]


@pytest.mark.parametrize(("kwargs", "error", "fragment"), [
    ({"timeout": 0}, ValueError, "timeout"),
    ({"dtypes": ["float8"]}, ValueError, "float8"),
    ({"targets": [42]}, TypeError, "targets"),
    ({"targets": ["attnspec[numpy]", "attnspec[numpy]"]}, ValueError, "twice"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"targets": []}, ValueError, "targets is empty"),
])
def test_argument_errors(kwargs, error, fragment):
    kwargs = {"targets": ["attnspec[numpy]"], "select": [LATER], **kwargs}
    with pytest.raises(error, match=fragment):
        run(isolate=False, fingerprint=False, **kwargs)


def test_a_selection_of_no_case_is_never_green():
    """A --select (or dtypes) that matches nothing is not a usage error but a run without
    results, whose verdict is insufficient coverage (exit status 3), with a note why."""
    report = run(["attnspec[numpy]"], select=["no-such-case/*"], isolate=False,
                 fingerprint=False)
    assert report.results == []
    assert report.exit_code == 3
    assert any("no case of the catalog matches" in n for n in report.options["notes"])
    from attnspec.conformance.views import verdict

    assert verdict(report).startswith("INSUFFICIENT COVERAGE")
    assert "no case was graded" in verdict(report)


def test_import_is_cheap():
    code = ("import sys, attnspec.conformance as c; "
            "heavy = [m for m in ('torch', 'jax', 'multiprocessing', "
            "'attnspec.conformance.runner', 'attnspec.conformance.api') if m in sys.modules]; "
            "assert not heavy, heavy; c.run, c.Report, c.catalog, c.Outcome")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- xfail files ----------------------------------------------------------------------------

XFAIL_TEXT = f"""\
# expected failures of runner_impls:raises
{TRIGGER.replace("d3", "d*")}   # raises on head dim 3
*::{LATER}                       # listed, but passes
nothing-like-this/*              # matches no case: stale
someone-else::score/*            # another implementation: stale
"""

XFAIL_TOML = f"""\
[[xfail]]
pattern = "{TRIGGER.replace("d3", "d*")}"
reason = "raises on head dim 3"

[[xfail]]
pattern = "{LATER}"
implementation = "*"
reason = "listed, but passes"

[[xfail]]
pattern = "nothing-like-this/*"
reason = "matches no case: stale"

[[xfail]]
pattern = "score/*"
implementation = "someone-else"
"""


@pytest.mark.parametrize(("suffix", "text"), [(".txt", XFAIL_TEXT), (".toml", XFAIL_TOML)])
def test_xfail_xpass_and_stale(tmp_path, suffix, text):
    path = tmp_path / f"xfails{suffix}"
    path.write_text(text)
    report = run("runner_impls:raises", select=[TRIGGER, LATER], xfail_file=path,
                 isolate=False, fingerprint=False)
    results = results_of(report, "runner_impls:raises")
    assert results[TRIGGER].outcome is Outcome.XFAIL
    assert "raises on head dim 3" in results[TRIGGER].message
    assert "RuntimeError: boom" in results[TRIGGER].message
    assert results[LATER].outcome is Outcome.XPASS
    # strict: an expected failure that passes fails the run (the entry is out of date)
    assert report.exit_code == 1
    assert report.failed == [results[LATER]]
    assert len(report.stale_xfails) == 2
    assert "nothing-like-this/*" in report.stale_xfails[0]
    assert "someone-else::score/*" in report.stale_xfails[1]
    assert report.stale_xfails[0].startswith(f"{path}:")
    assert report.options["xfail_file"] == str(path)


def test_xfail_plain_text_forms():
    entries = parse_xfails("\n# comment\n\nscore/*  # why\nimpl[x]::lse/*\n", source="f")
    assert entries == [XfailEntry("score/*", "why", None, "f:4"),
                       XfailEntry("lse/*", "", "impl[x]", "f:5")]
    # an exact implementation name matches itself even where it reads as a glob class
    assert entries[1].matches("impl[x]", "lse/a/float32")
    assert not entries[1].matches("impl[y]", "lse/a/float32")
    assert entries[1].text == "impl[x]::lse/*"


@pytest.mark.parametrize(("text", "fmt", "fragment"), [
    ("score/*  # ok\nscore /d3  # spaces\n", "text", "f:2: expected"),
    ("::score/*\n", "text", "f:1: expected 'IMPLEMENTATION::PATTERN'"),
    ("impl::\n", "text", "f:1:"),
    ("[[xfail]]\npattern = 'a'\n\n[[xfail]]\npatern = 'b'\n", "toml", "f:4: unknown key"),
    ("[[xfail]]\nreason = 'no pattern'\n", "toml", "f:1: 'pattern'"),
    ("[[xfail]]\npattern = \n", "toml", "f: not valid TOML"),
    ("[xfails]\npattern = 'a'\n", "toml", "unknown top-level key"),
])
def test_malformed_xfail_files(text, fmt, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[")):
        parse_xfails(text, source="f", format=fmt)


def test_xfail_file_format_is_guessed(tmp_path):
    path = tmp_path / "xfails"
    path.write_text("# comment\n[[xfail]]\npattern = 'a/*'\n")
    assert load_xfails(path) == [XfailEntry("a/*", "", None, f"{path}:2")]
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_xfails(tmp_path / "missing.txt")


def test_entries_for_unavailable_implementations_are_not_stale():
    from attnspec.conformance.results import ImplementationInfo

    entry = XfailEntry("score/*", "", "flash_attn", "f:1")
    gone = ImplementationInfo("flash_attn", "torch-cuda", "", unavailable="no GPU")
    assert stale_xfails([entry], [], [gone]) == []
    assert stale_xfails([entry], [], []) == ["f:1: flash_attn::score/*"]
