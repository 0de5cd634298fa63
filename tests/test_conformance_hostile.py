"""Hostile implementations under test: every misbehaviour gets a recorded outcome, the run
finishes and its report is complete; a worker runs under a memory limit and its output is
captured; an interrupted run leaves a valid partial report, written atomically; reports
escape what implementations say.

The implementations are in tests/hostile_impls.py (tests/runner_impls.py has the first
ones: raises, hangs, wrong shape and dtype, exits, segfaults, non-array; see
tests/test_conformance_runner.py). Each misbehaves on the ``score/..d3`` case only. The
isolated run is made once per module, with a short timeout and a small memory limit.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import hostile_impls
import pytest
import runner_impls

from attnspec.conformance import Outcome, Report, markdown, run, terminal
from attnspec.conformance import html as html_report
from attnspec.conformance.api import RunInterrupted
from attnspec.conformance.limits import (
    MIN_DEFAULT,
    apply_memory_limit,
    default_memory_limit,
    format_size,
    on_gpu,
    parse_size,
    resolve_memory_limit,
)
from attnspec.conformance.runner import OUTPUT_KEEP
from attnspec.conformance.schema import validate

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}

TRIGGER = "score/b2.h4x2.q6.k9.d3/float32"
LATER = "score/b2.h4x2.q6.k9.d64/float32"
MASK = "mask/b2.h4x2.q6.k9.d16.mask=dense/float64"
ARG_ERROR = "arg-errors/b2.h4x2.q6.k9.d16.error=head_dim_mismatch/float32"
CASES = [TRIGGER, LATER, MASK, ARG_ERROR]
# Every case but the two that hang must finish within it on a loaded machine (the first call
# in a fresh worker imports what it needs; ``chatty`` writes 12 MiB): 3 s was too little
# there. Only the hanging cases wait for it, so a generous value costs little.
TIMEOUT = 10.0
MEMORY_LIMIT = "512M"

# implementation -> (outcome on TRIGGER, a fragment of its message)
HOSTILE = {
    "returns_none": (Outcome.ERROR, "output 'out' is not an array: the implementation "
                                    "returned None"),
    "returns_list": (Outcome.ERROR, "not an array: the implementation returned a list"),
    "returns_string": (Outcome.ERROR, "not an array: the implementation returned a str"),
    "returns_nan": (Outcome.FAIL, "non-finite mismatches"),
    "busy_loop": (Outcome.TIMEOUT, f"no result within {TIMEOUT:g} s; the worker was killed"),
    "sleeps_past_timeout": (Outcome.TIMEOUT, "no result within"),
    "aborts": (Outcome.CRASH, "killed by signal SIGABRT"),
    "null_deref": (Outcome.CRASH, "killed by signal SIGSEGV"),
    "allocates": (Outcome.ERROR, "MemoryError"),
    "chatty": (Outcome.PASS, "captured stdout/stderr (6 MiB)"),
    "raises_keyboard_interrupt": (Outcome.ERROR, "KeyboardInterrupt"),
    "raises_unprintable": (Outcome.ERROR, "Unprintable: <Unprintable whose str() failed>"),
    "evil_exception": (Outcome.ERROR, "ValueError: <script>"),
    "mutates": (Outcome.FAIL, "inputs modified by the call: key: 108 of 108 entries "
                              "changed; value: 12 of 108 entries changed"),
    "mutates_mask": (Outcome.PASS, ""),  # the trigger case has no mask; MASK has one
    # the pipe is out of step: a crash, and the next case a fresh worker (its own reply)
    "writes_to_the_pipe": (Outcome.CRASH, "something else wrote to its pipe"),
}


@pytest.fixture(scope="module")
def hostile():
    """One isolated run of every hostile implementation, plus an adapter object with a
    name made to break reports, and the progress calls it made."""
    calls = []
    targets = [f"hostile_impls:{name}" for name in HOSTILE]
    targets.append(runner_impls.NumpyAttention(hostile_impls.EVIL_NAME))
    report = run(targets, select=CASES, timeout=TIMEOUT, fingerprint=False,
                 memory_limit=MEMORY_LIMIT,
                 progress=lambda done, total, result: calls.append((done, total)))
    return report, calls


def results_of(report: Report, name: str) -> dict:
    return {r.case_id: r for r in report.results if r.implementation == name}


# -- every behaviour: its outcome, and the run goes on -------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_outcome_and_the_run_goes_on(hostile, name):
    report, _ = hostile
    results = results_of(report, f"hostile_impls:{name}")
    outcome, fragment = HOSTILE[name]
    trigger = results[TRIGGER]
    assert trigger.outcome is outcome, trigger.message
    assert fragment in trigger.message
    if name != "mutates":  # it mutates on every case; the others misbehave on TRIGGER only
        for case in (LATER, ARG_ERROR) if name == "mutates_mask" else (LATER, MASK, ARG_ERROR):
            assert results[case].outcome is Outcome.PASS, (case, results[case].message)


def test_the_report_is_complete(hostile):
    """Every case of every implementation is in the report, once, in the order run; the
    progress callback saw each; the report is schema-valid JSON."""
    report, calls = hostile
    names = [i.name for i in report.implementations]
    assert names == [*(f"hostile_impls:{n}" for n in HOSTILE), hostile_impls.EVIL_NAME]
    assert [(r.implementation, r.case_id) for r in report.results] == [
        (name, case) for name in names for case in CASES]
    assert [done for done, _ in calls] == list(range(1, len(report.results) + 1))
    assert report.status == "complete"
    assert validate(json.loads(json.dumps(report.to_json(), allow_nan=False))) == []


def test_timeouts_are_enforced(hostile):
    """The worker is killed at the timeout: the case does not wait for the sleep to end."""
    report, _ = hostile
    assert hostile_impls.SLEEP > TIMEOUT + 4
    for name in ("busy_loop", "sleeps_past_timeout"):
        result = results_of(report, f"hostile_impls:{name}")[TRIGGER]
        assert TIMEOUT <= result.seconds < TIMEOUT + 4, (name, result.seconds)


def test_crash_message_carries_the_output_and_the_traceback(hostile):
    """faulthandler is on in the worker: a segfault's message has the Python traceback,
    and what the implementation printed before it died."""
    report, _ = hostile
    aborted = results_of(report, "hostile_impls:aborts")[TRIGGER].message
    assert hostile_impls.LAST_WORDS in aborted
    assert "Fatal Python error: Aborted" in aborted
    segfault = results_of(report, "hostile_impls:null_deref")[TRIGGER].message
    assert "Segmentation fault" in segfault
    assert "in null_deref" in segfault


def test_unbounded_allocation_hits_the_memory_limit(hostile):
    report, _ = hostile
    result = results_of(report, "hostile_impls:allocates")[TRIGGER]
    assert "the worker's memory limit is 512 MiB" in result.message
    assert report.options["memory_limit"] == 512 << 20


def test_chatter_is_captured_and_truncated(hostile):
    """6 MiB on stdout and stderr: the run does not block on it, and the case's message
    keeps the first and last OUTPUT_KEEP bytes with the size of what was left out."""
    report, _ = hostile
    message = results_of(report, "hostile_impls:chatty")[TRIGGER].message
    assert len(message) < 2 * OUTPUT_KEEP + 300
    assert "left out ...]" in message
    assert message.rstrip().endswith("and a last line straight to file descriptor 1")
    assert "xxxx" in message
    # nothing leaks into the next case
    assert results_of(report, "hostile_impls:chatty")[LATER].message == ""


def test_modified_inputs_fail_under_the_no_mutation_rule(hostile):
    report, _ = hostile
    results = results_of(report, "hostile_impls:mutates")
    for case in (TRIGGER, LATER, MASK):
        assert results[case].outcome is Outcome.FAIL
        assert results[case].rules[-1] == "NO-MUTATION"
        assert results[case].message.startswith("inputs modified by the call: key:")
    flipped = results_of(report, "hostile_impls:mutates_mask")[MASK]
    assert flipped.outcome is Outcome.FAIL
    assert flipped.rules == ["ATT-MASK-1", "NO-MUTATION"]
    assert flipped.message.startswith("inputs modified by the call: mask: ")
    assert "NO-MUTATION" in markdown.to_markdown(report)
    assert "leaves its input arrays unchanged" in markdown.to_markdown(report)


def test_hostile_strings_are_escaped_in_every_report(hostile, tmp_path):
    """The adapter's name and the exception text, as the run recorded them, in JSON,
    Markdown, HTML and the terminal."""
    report, _ = hostile
    evil = results_of(report, "hostile_impls:evil_exception")[TRIGGER]
    assert "\x1b[2J" in evil.message  # recorded as it was raised ...
    text = terminal.summary(report, max_failures=100) + terminal.matrix(report, color=False)
    assert "\x1b" not in text  # ... shown without its escapes
    assert "\x07" not in text
    page = html_report.to_html(report)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    md = markdown.to_markdown(report)
    assert "<script" not in md.lower()
    assert "\x1b" not in md
    report.save(tmp_path / "r.json")
    assert Report.load(tmp_path / "r.json").to_json() == report.to_json()


# -- the memory limit ----------------------------------------------------------------------


def test_default_memory_limit_is_in_force_in_the_worker():
    pytest.importorskip("resource", reason="no resource module: no limit on this platform")
    report = run("hostile_impls:reports_memory_limit", select=[TRIGGER], fingerprint=False)
    [result] = report.results
    assert result.message == f"RuntimeError: soft limit {default_memory_limit()}"
    assert report.options["memory_limit"] == default_memory_limit()
    # and no limit at all when asked for none
    report = run("hostile_impls:reports_memory_limit", select=[TRIGGER], fingerprint=False,
                 memory_limit=None)
    import resource

    assert report.results[0].message == f"RuntimeError: soft limit {resource.RLIM_INFINITY}"
    assert report.options["memory_limit"] is None


def test_memory_limit_parsing_and_defaults():
    assert parse_size("8G") == 8 << 30
    assert parse_size("512MiB") == parse_size("512m") == 512 << 20
    assert parse_size("1.5g") == 3 << 29
    assert parse_size("2GB") == 2 * 10 ** 9
    assert parse_size(123) == 123
    for none in ("none", "0", 0, None, "off"):
        assert parse_size(none) is None
    for bad in ("lots", "-1", "8Q", -5, True):
        with pytest.raises(ValueError, match="memory limit"):
            parse_size(bad)
    assert format_size(512 << 20) == "512 MiB"
    assert format_size(None) == "none"
    assert default_memory_limit() >= MIN_DEFAULT
    assert resolve_memory_limit("auto", gpu=False) == default_memory_limit()
    assert resolve_memory_limit("auto", gpu=True) is None  # GPU runtimes: no default limit
    assert resolve_memory_limit("4G", gpu=True) == 4 << 30  # unless one is given
    assert [on_gpu(b) for b in ("torch-cuda", "cupy", "jax-gpu")] == [True] * 3
    assert on_gpu("torch-cpu", "cuda")
    assert [on_gpu(b) for b in ("torch-cpu", "numpy", "jax-cpu")] == [False] * 3
    with pytest.raises(ValueError, match="memory limit"):
        run("attnspec[numpy]", select=[LATER], memory_limit="a lot")


def test_memory_limit_without_resource_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "resource", None)  # as on Windows
    assert "no 'resource' module" in apply_memory_limit(1 << 30)
    assert apply_memory_limit(None) is None


# -- interrupting a run --------------------------------------------------------------------


def test_interrupted_run_raises_with_the_partial_report():
    """A KeyboardInterrupt (here from the progress callback) ends the run with
    RunInterrupted, a KeyboardInterrupt carrying the results gathered so far."""
    seen = []

    def stop_after_two(done, total, result):
        seen.append(result)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        run("runner_impls:correct", select=CASES, fingerprint=False, isolate=False,
            progress=stop_after_two)
    report = info.value.report
    assert isinstance(info.value, KeyboardInterrupt)
    assert report.status == "interrupted"
    assert report.results == seen
    assert [i.name for i in report.implementations] == ["runner_impls:correct"]
    assert report.exit_code == 1  # a partial run never passes
    assert validate(report.to_json()) == []
    assert any(n.startswith("interrupted: 2 of 4 results") for n in report.options["notes"])
    assert markdown.to_markdown(report).startswith("## attnspec conformance: ❌ INTERRUPTED")


def _lines(stream, sink):
    for line in stream:
        sink.put(line)
    sink.put(None)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_leaves_a_valid_partial_json_report(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) in the middle of
    `attnspec check`: exit status 130, and the JSON, Markdown and HTML reports hold the
    results so far, marked interrupted; no temporary file and no worker is left."""
    paths = {fmt: tmp_path / f"out.{fmt}" for fmt in ("json", "md", "html")}
    paths["json"].write_text("an older report\n")
    argv = [sys.executable, "-m", "attnspec.conformance.cli", "check",
            "runner_impls:stalls_after_two", "--select", "score/*", "--dtype", "float32",
            "--no-fingerprint", "--color", "never", "--timeout", "900",
            "--json", str(paths["json"]), "--markdown", str(paths["md"]),
            "--html", str(paths["html"])]
    # As a terminal's foreground job: SIGINT at its default. A test run started in the
    # background of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and an
    # ignored SIGINT stays ignored across exec (Python then installs no KeyboardInterrupt).
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_default_sigint)
    progress: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, progress), daemon=True).start()
    try:
        while True:  # progress lines on stderr: "2/7 pass 2"
            line = progress.get(timeout=120)
            assert line is not None, "the run ended before it could be interrupted"
            if line.startswith("2/"):
                break
        os.killpg(proc.pid, signal.SIGINT)
        stdout = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stdout
    data = json.loads(paths["json"].read_text())
    assert validate(data) == []
    assert data["status"] == "interrupted"
    total = data["options"]["cases"]
    done = data["results"]
    assert 2 <= len(done) < total
    assert {r["outcome"] for r in done} == {"pass"}
    assert {r["implementation"] for r in done} == {"runner_impls:stalls_after_two"}
    assert [i["name"] for i in data["implementations"]] == [
        "runner_impls:stalls_after_two"]
    assert "INTERRUPTED" in paths["md"].read_text()
    assert "INTERRUPTED" in paths["html"].read_text()
    assert "INTERRUPTED" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.html", "out.json", "out.md"]
    # Polled, not slept: the generous deadline only matters on a very loaded machine.
    deadline = time.monotonic() + 60
    while True:  # the worker (and anything else of the run) is gone with it
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a process of the interrupted run is still alive"
        time.sleep(0.1)


# -- atomic writes -------------------------------------------------------------------------


def test_every_report_writer_goes_through_the_atomic_helper(tmp_path, monkeypatch):
    """JSON, Markdown, HTML and golden export: every file they leave is one that
    conformance/atomic.py renamed into place (a direct write would not be)."""
    from attnspec.conformance.cli import main

    renamed = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        renamed.append(Path(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    out = tmp_path / "reports"
    out.mkdir()
    assert main(["check", "attnspec[numpy]", "--select", LATER, "--in-process",
                 "--no-fingerprint", "--color", "never", "--json", str(out / "r.json"),
                 "--markdown", str(out / "r.md"), "--html", str(out / "r.html")]) == 0
    assert main(["export", str(tmp_path / "golden"), "--select", LATER, "--select",
                 MASK]) == 0
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == 3 + 1 + 2  # reports, manifest.json, two cases
    assert written == sorted(renamed)


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    """An exception while the new content is written (or while it is renamed into place)
    leaves the previous file as it was, and no temporary file."""
    from attnspec.conformance.atomic import atomic_open, write_text

    path = tmp_path / "report.json"
    path.write_text("the old report\n")

    def half_then_fail():
        with atomic_open(path) as fh:
            fh.write("half of a new rep")
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        half_then_fail()
    assert path.read_text() == "the old report\n"

    def no_rename(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="rename failed"):
        Report().save(path)
    assert path.read_text() == "the old report\n"
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    write_text(path, "the new report\n")
    assert path.read_text() == "the new report\n"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0o600


def test_a_process_killed_while_writing_leaves_the_old_file(tmp_path):
    """The writer dies (os._exit) with half of the new content written: the report under
    its name is still the old one, complete."""
    path = tmp_path / "report.json"
    Report().save(path)
    old = path.read_text()
    code = ("import os, sys; from attnspec.conformance.atomic import atomic_open\n"
            "with atomic_open(sys.argv[1]) as fh:\n"
            "    fh.write('{\"schema_version\": \"1.1\", \"results\": [')\n"
            "    fh.flush()\n"
            "    os._exit(9)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], env=ENV)
    assert proc.returncode == 9
    assert path.read_text() == old
    assert validate(json.loads(old)) == []
    # the dead writer's temporary file is hidden beside it, never read as a report
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "report.json"]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(".report.json.")
    assert leftovers[0].endswith(".tmp")


def test_a_reader_never_sees_half_a_report(tmp_path):
    """One thread saves reports over and over while another loads them: every load gets
    a whole report, the old one or the new one."""
    path = tmp_path / "report.json"
    small = Report()
    big = Report(results=[dataclass_result(i) for i in range(300)])
    small.save(path)
    stop = threading.Event()
    errors = []

    def writer():
        while not stop.is_set():
            for report in (big, small):
                report.save(path)

    thread = threading.Thread(target=writer)
    thread.start()
    loads = 0
    try:
        # At least 1.5 s of racing, and on until enough loads were made: a loaded machine
        # gets more time, not a failure (the hard deadline only stops a test gone wrong).
        start = time.monotonic()
        while (time.monotonic() < start + 1.5
               or (loads <= 10 and time.monotonic() < start + 120)):
            try:
                loaded = Report.load(path)
            except ValueError as exc:
                errors.append(str(exc))
                continue
            assert len(loaded.results) in (0, 300)
            loads += 1
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert loads > 10


def dataclass_result(i: int):
    from attnspec.conformance.results import CaseResult

    return CaseResult(case_id=f"c/{i}/float32", rules=["ATT-SCORE-1"], implementation="x",
                      backend="numpy", device="cpu", dtype="float32", op="attention",
                      params={"i": i}, outcome=Outcome.PASS, seed=i, message="m" * 100)
