"""The prepared GPU run (benchmarks/gpu.sh, benchmarks/gpu_bench.py) in its CPU dry run.

CI has no GPU: what is checked here is that the script runs its steps under their budgets,
records how each ended, and writes the JSON and Markdown the GPU run is for, with every
framework either measured or skipped with its reason. Figures are never asserted.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: A slow suite (about a minute: JAX compiles each shape): `python -m pytest -m slow`.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("gpu.sh needs bash and coreutils' timeout")
    out = tmp_path_factory.mktemp("gpu-dry")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    return out, proc


def test_every_step_runs_and_is_recorded(dry_run) -> None:
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "steps.tsv") as f:
        steps = {row["step"]: row for row in csv.DictReader(f, delimiter="\t")}
    assert list(steps) == ["env", "tests", "check", "bench"]
    for name, row in steps.items():
        assert row["exit"] == "0", (name, (out / f"{name}.log").read_text()[-2000:])
        assert (out / f"{name}.log").stat().st_size > 0
    assert "passed" in (out / "tests.log").read_text()


def test_the_conformance_step_writes_its_report(dry_run) -> None:
    out, _ = dry_run
    report = json.loads((out / "check.json").read_text())
    assert report["results"], "the check graded nothing"


def test_the_benchmark_writes_rows_targets_and_a_table(dry_run) -> None:
    out, _ = dry_run
    doc = json.loads((out / "gpu-bench.json").read_text())
    assert doc["dry_run"] is True
    measured = set(doc["frameworks"])
    skipped = {s["framework"] for s in doc["skipped"]}
    assert measured | skipped == {"torch", "jax", "cupy"}  # each one measured or said why not
    assert all(s["reason"] for s in doc["skipped"])
    if "torch" in measured:
        rows = [r for r in doc["rows"] if r["framework"] == "torch"]
        assert {(r["N"], r["causal"]) for r in rows} == {
            (n, c) for n in doc["sizes"] for c in (False, True)}
        for r in rows:
            assert r["portable"]["status"] == "ok", r
            assert r["portable"]["tflops"] > 0
            assert r["kernel"]["status"] == "ok", r
    assert [t["id"] for t in doc["targets"]] == ["gpu-vs-sdpa", "gpu-no-oom"]
    table = (out / "gpu-bench.md").read_text()
    assert "DRY RUN" in table
    assert "| gpu-no-oom |" in table


def test_a_step_out_of_time_is_recorded_and_the_rest_still_runs(tmp_path: Path) -> None:
    """A step that overruns its budget is killed and written down (exit 124); the steps
    after it run. Checked on a copy of the script with the test step's budget at 1 s."""
    script = tmp_path / "gpu.sh"
    text = SCRIPT.read_text().replace("budget_tests=120", "budget_tests=1").replace(
        "bench=(--dry-run)", "bench=(--dry-run --sizes 32 --budget 0)")  # rows: skipped
    assert text.count("budget_tests=1 ") == 1
    assert "--budget 0" in text
    script.write_text(text)
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    shutil.copy(ROOT / "benchmarks" / "gpu_bench.py", bench / "gpu_bench.py")
    shutil.move(str(script), bench / "gpu.sh")
    for name in ("tests", "pyproject.toml"):
        (tmp_path / name).symlink_to(ROOT / name)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(bench / "gpu.sh"), "--dry-run", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    with open(out / "steps.tsv") as f:
        steps = {row["step"]: row["exit"] for row in csv.DictReader(f, delimiter="\t")}
    assert steps["tests"] == "124"
    assert steps["check"] == "0"
    assert steps["bench"] == "0"
    assert proc.returncode == 124
