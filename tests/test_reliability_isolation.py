"""Issue 14, items 1 and 6: what an implementation does to the process it runs in cannot end
the run before its reports are written, nor move the references it is graded against.

* ``--explore`` runs the implementation in a worker process, like the catalog's cases: one
  that exits, segfaults or hangs while exploring is a ``crash``/``timeout`` result in the
  report, and every report is written.
* The references (inputs, golden, naive) are made before any implementation's code runs in
  this process, or in a process of their own: an implementation that patches
  ``numpy.matmul`` -- when called (``--in-process``), or when its module is imported (which
  the parent does to read its declaration) -- fails, and a correct implementation graded
  after it passes. The same for ``--explore`` and the pytest plugin.

The implementations are in tests/hostile_impls.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import hostile_impls
import numpy as np
import pytest

from attnspec.conformance import Outcome, run
from attnspec.conformance.explore import explore
from attnspec.conformance.schema import validate

TESTS = Path(__file__).resolve().parent

CASES = ["score/b2.h4x2.q6.k9.d64/float32", "score/b2.h4x4.q9.k9.d64/float32",
         "score/b2.h4x2.q3.k17.d16/float32"]


def _patched() -> bool:
    return getattr(np.matmul, "hostile_original", None) is not None


@pytest.fixture(autouse=True)
def _real_matmul():
    """Whatever a test lets patch this process's NumPy, the next test gets it back."""
    yield
    hostile_impls.unpatch_matmul()
    assert not _patched()


@pytest.fixture
def patches_at_import(tmp_path, monkeypatch):
    """``module:callable`` of a fresh module (on ``sys.path`` here and in workers and
    subprocesses) that patches ``numpy.matmul`` when it is imported."""
    name = f"patches_at_import_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(hostile_impls.PATCHES_AT_IMPORT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path),
                                                      os.environ.get("PYTHONPATH", "")]))
    yield f"{name}:attention"
    sys.modules.pop(name, None)


def _outcomes(report, name):
    return {r.case_id: r.outcome for r in report.results if r.implementation == name}


def _env() -> dict[str, str]:
    """This process's environment, with tests/ (and what a fixture added) on the path."""
    path = os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(TESTS)])
    return {**os.environ, "PYTHONPATH": path}


def _attnspec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `attnspec` command in a process of its own (what it does to its process cannot
    take the tests' down)."""
    return subprocess.run(["attnspec", *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(), timeout=300)


# -- 1. --explore runs the implementation in a worker -----------------------------------------


@pytest.mark.parametrize(("name", "message"), [
    ("always_exits_zero", "exit code 0"),
    ("always_null_deref", "SIGSEGV"),
])
def test_explore_survives_an_implementation_that_kills_its_process(tmp_path, name, message):
    """The implementation ends its process on every call: the catalog's case and the
    exploration record a crash, the next target is still explored, and all three reports
    are written; the run fails (exit 1), not 0 or 139."""
    paths = {fmt: tmp_path / f"r.{fmt}" for fmt in ("json", "md", "html")}
    result = _attnspec("check", f"hostile_impls:{name}", "hostile_impls:ignores_patches",
                       "--select", CASES[0], "--explore", "10", "--no-fingerprint",
                       "--color", "never", "--json", str(paths["json"]),
                       "--markdown", str(paths["md"]), "--html", str(paths["html"]),
                       cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(paths["json"].read_text())
    assert validate(data) == []
    [found] = [r for r in data["results"] if r["case_id"].startswith("explore/")]
    assert found["implementation"] == f"hostile_impls:{name}"
    assert found["outcome"] == "crash"
    assert "found by --explore" in found["message"]
    assert message in found["message"]
    notes = "\n".join(data["options"]["notes"])
    assert f"hostile_impls:{name}: --explore found a failing configuration" in notes
    assert "hostile_impls:ignores_patches: --explore found no failure in 10" in notes
    for fmt in ("md", "html"):
        assert found["case_id"] in paths[fmt].read_text()


def test_explore_records_a_timeout():
    """A hanging implementation is killed after ``timeout`` seconds: the exploration's result
    is a timeout (found on the first configuration: shrinking it would cost a timeout per
    try), and this process is still here to report it."""
    found = explore("hostile_impls:always_sleeps", examples=5, timeout=1.0)
    assert found.result is not None
    assert found.result.outcome is Outcome.TIMEOUT
    assert "found by --explore" in found.result.message
    assert "no result within 1 s" in found.result.message


def test_explore_runs_the_implementation_in_a_worker():
    """An implementation that patches ``numpy.matmul`` when called patches its worker's, not
    this process's: its 1 % error is found."""
    found = explore("hostile_impls:patches_matmul", examples=10)
    assert not _patched()
    assert found.result is not None
    assert found.result.outcome is Outcome.FAIL, found.result.message


def test_explore_references_are_not_moved_by_a_module_patching_numpy_at_import(
        patches_at_import):
    """Exploring imports the module here (to read its declaration), which patches this
    process's ``numpy.matmul``; the references are made in a process of their own."""
    found = explore(patches_at_import, examples=10)
    assert _patched()  # the import did patch this process
    assert found.result is not None
    assert found.result.outcome is Outcome.FAIL, found.result.message


# -- 6. references are made before (or away from) any implementation's code ------------------


def test_in_process_references_are_not_moved_by_an_implementation(tmp_path):
    """``isolate=False``: the implementation patches ``numpy.matmul`` on its first call; it
    fails every case, and a correct implementation graded after it in the same process
    passes every case."""
    report = run(["hostile_impls:patches_matmul", "hostile_impls:ignores_patches"],
                 select=CASES, isolate=False, fingerprint=False)
    assert _patched()
    assert set(_outcomes(report, "hostile_impls:patches_matmul").values()) == {Outcome.FAIL}
    assert set(_outcomes(report, "hostile_impls:ignores_patches").values()) == {Outcome.PASS}


@pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "in-process"])
def test_references_are_not_moved_by_a_module_patching_numpy_at_import(patches_at_import,
                                                                       isolate):
    """The module patches ``numpy.matmul`` when it is imported -- and the parent imports it
    to read its declaration, in both modes: it fails every case, and a correct
    implementation after it passes every case."""
    correct = "runner_impls:correct" if isolate else "hostile_impls:ignores_patches"
    report = run([patches_at_import, correct], select=CASES, isolate=isolate,
                 fingerprint=False)
    assert _patched()  # the import did patch this process
    assert set(_outcomes(report, patches_at_import).values()) == {Outcome.FAIL}
    assert set(_outcomes(report, correct).values()) == {Outcome.PASS}


def test_cli_in_process_run_of_a_module_patching_numpy_at_import(tmp_path,
                                                                  patches_at_import):
    """The same through `attnspec check --in-process`, in a fresh process."""
    path = tmp_path / "r.json"
    result = _attnspec("check", patches_at_import, "--select", *CASES[:1], "--in-process",
                       "--no-fingerprint", "--color", "never", "--json", str(path),
                       cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(path.read_text())
    assert {r["outcome"] for r in data["results"]} == {"fail"}


@pytest.mark.parametrize("target", ["hostile_impls:patches_matmul", "at-import"])
def test_pytest_plugin_references_are_not_moved(tmp_path, patches_at_import, target):
    """`pytest --attnspec-impl`: every case of an implementation patching ``numpy.matmul``
    (when called, or when imported) fails."""
    target = patches_at_import if target == "at-import" else target
    junit = tmp_path / "junit.xml"
    select = [arg for case in CASES for arg in ("--attnspec-select", case)]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "--attnspec-impl", target, *select,
         "--junit-xml", str(junit)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=_env())
    assert result.returncode == 1, result.stdout[-3000:]
    failed = {item.get("name", ""): item.find("failure") is not None
              for item in ET.parse(junit).getroot().iter("testcase")}
    outcomes = {case: [f for name, f in failed.items() if f"::{case}" in name]
                for case in CASES}
    assert outcomes == {case: [True] for case in CASES}, failed
