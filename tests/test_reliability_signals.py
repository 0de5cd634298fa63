"""Signals and the worker pipe (issue 14, items 4 and 5): SIGTERM, as ``timeout`` and a CI
cancel send it to the run's process alone, stops the run like Ctrl-C does (partial reports,
exit 143); a run killed outright (SIGKILL) takes its workers with it, even one spinning in
an implementation; bytes written into a worker's pipe cost one case, not the next."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from reliability_impls import MARKER

from attnspec.conformance.schema import validate

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH",
                                                                               "")])}
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _lines(stream, sink):
    for line in stream:
        sink.put(line)
    sink.put(None)


def _group_gone(pgid: int, deadline: float) -> bool:
    """Polled (not slept): True once no process of the group is left."""
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_writes_the_partial_report_and_exits_143(tmp_path):
    report = tmp_path / "r.json"
    argv = [sys.executable, "-m", "attnspec.conformance.cli", "check",
            "runner_impls:stalls_after_two", "--select", "score/*", "--dtype", "float32",
            "--no-fingerprint", "--color", "never", "--timeout", "900",
            "--json", str(report), "--markdown", str(tmp_path / "r.md")]
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    progress: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, progress), daemon=True).start()
    try:
        while True:  # progress lines on stderr: "2/7 pass 2"
            line = progress.get(timeout=120)
            assert line is not None, "the run ended before it could be terminated"
            if line.startswith("2/"):
                break
        proc.send_signal(signal.SIGTERM)  # the run's process only, as `timeout` does
        stdout = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, stdout
    data = json.loads(report.read_text())
    assert validate(data) == []
    assert data["status"] == "interrupted"
    assert 2 <= len(data["results"]) < data["options"]["cases"]
    assert "INTERRUPTED" in (tmp_path / "r.md").read_text()
    assert "INTERRUPTED" in stdout
    assert _group_gone(proc.pid, time.monotonic() + 60), "a process of the run is still alive"


def test_a_worker_dies_with_its_killed_parent(tmp_path):
    """SIGKILL to `attnspec check` while its worker spins in an implementation: the worker
    does not spin on (it used to, at 90% CPU, forever)."""
    marker = tmp_path / "worker.pid"
    argv = [sys.executable, "-m", "attnspec.conformance.cli", "check", "reliability_impls:spins",
            "--select", "dtype/b2.h4x4.q9.k9.d16/float32", "--no-fingerprint",
            "--timeout", "600"]
    proc = subprocess.Popen(argv, env={**ENV, MARKER: str(marker)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (marker.exists() and marker.read_text()):
            assert proc.poll() is None, "the run ended before its worker spun"
            assert time.monotonic() < deadline, "the worker never reached the implementation"
            time.sleep(0.1)
        worker = int(marker.read_text())
        assert worker != proc.pid
        proc.kill()
        proc.wait(timeout=60)
        assert _group_gone(proc.pid, time.monotonic() + 60), "the worker outlived its parent"
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_bytes_on_the_pipe_cost_one_case_not_the_next():
    """Raw bytes an implementation writes into its worker's pipe make that case's reply
    unreadable (an error, naming why); the worker is replaced, so the next case is graded
    on its own reply (it used to read the previous case's and crash)."""
    from attnspec.conformance import Outcome, run

    trigger, later = "score/b2.h4x2.q6.k9.d3/float32", "score/b2.h4x2.q6.k9.d64/float32"
    report = run("reliability_impls:writes_bytes_to_the_pipe", select=[trigger, later],
                 fingerprint=False, timeout=60)
    outcome = {r.case_id: r for r in report.results}
    assert outcome[trigger].outcome is Outcome.ERROR
    assert "could not be read here" in outcome[trigger].message
    assert "fresh one" in outcome[trigger].message
    assert outcome[later].outcome is Outcome.PASS, outcome[later].message


def test_sigterm_during_explore_keeps_the_catalog_results(tmp_path):
    """SIGTERM while `--explore` waits on a spinning implementation: the catalog's results
    are written, marked interrupted, exit 143, and the worker is gone."""
    marker, report = tmp_path / "worker.pid", tmp_path / "r.json"
    argv = [sys.executable, "-m", "attnspec.conformance.cli", "check",
            "reliability_impls:spins_off_catalog", "--select", "dtype/b2.h4x4.q9.k9.d16/float32",
            "--no-fingerprint", "--explore", "20", "--timeout", "600", "--json", str(report)]
    proc = subprocess.Popen(argv, env={**ENV, MARKER: str(marker)}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (marker.exists() and marker.read_text()):
            assert proc.poll() is None, "the run ended before exploring"
            assert time.monotonic() < deadline, "--explore never reached the implementation"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stdout = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, stdout
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted"
    assert [r["outcome"] for r in data["results"]] == ["pass"]
    assert _group_gone(proc.pid, time.monotonic() + 60), "a process of the run is still alive"
