"""The `attnspec` command (check/list/report/export), golden export and grading of outputs
computed elsewhere, exploration, and the pytest plugin."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import attnspec
from attnspec.conformance.cases import make_inputs
from attnspec.conformance.catalog import catalog, select
from attnspec.conformance.cli import main
from attnspec.conformance.export import case_filename
from attnspec.conformance.report import Report
from attnspec.conformance.results import Outcome
from attnspec.conformance.rules import RULES
from attnspec.conformance.schema import validate

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(autouse=True)
def _tests_on_path(monkeypatch):
    # module:callable targets in tests/broken_impls.py must import in worker processes too.
    monkeypatch.setenv("PYTHONPATH", ENV["PYTHONPATH"])


def test_list_shows_every_rule_with_cases(capsys):
    """`attnspec list` prints the rule -> cases table (each rule has at least one case)."""
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for rule in RULES:
        line = next(ln for ln in out.splitlines() if ln.startswith(rule + " "))
        assert int(line.split()[1]) > 0, line
    assert main(["list", "--cases", "--select", "lse/*"]) == 0
    ids = capsys.readouterr().out.split()
    assert "lse/b2.h4x2.q6.k9.d16/float32" in ids


def test_check_writes_reports_and_passes(tmp_path, capsys):
    """ATT-LSE-1: attnspec on NumPy passes its cases; JSON (schema-valid), Markdown, HTML."""
    paths = {fmt: tmp_path / f"r.{fmt}" for fmt in ("json", "md", "html")}
    status = main(["check", "attnspec[numpy]", "--select", "lse/*", "--color", "never",
                   "--json", str(paths["json"]), "--markdown", str(paths["md"]),
                   "--html", str(paths["html"])])
    assert status == 0
    data = json.loads(paths["json"].read_text())
    assert validate(data) == []
    assert {r["outcome"] for r in data["results"]} <= {"pass", "not-applicable"}
    assert any(r["outcome"] == "pass" for r in data["results"])
    assert "<svg" in paths["html"].read_text()
    assert "attnspec[numpy]" in paths["md"].read_text()
    assert "ATT-LSE-1" in capsys.readouterr().out


def test_check_fails_a_broken_implementation(tmp_path):
    """ATT-SCORE-1: a wrong scale exits 1 and the report names the rule."""
    report = tmp_path / "r.json"
    status = main(["check", "broken_impls:wrong_scale", "--select", "score/*", "--no-fingerprint",
                   "--color", "never", "--json", str(report)])
    assert status == 1
    failed = [r for r in json.loads(report.read_text())["results"] if r["outcome"] == "fail"]
    assert failed
    assert all("ATT-SCORE-1" in r["rules"] for r in failed)


@pytest.mark.parametrize("argv", [
    ["check", "no_such_adapter_name"],
    ["check", "no_such_module_xyz:fn"],
    ["check", "attnspec[numpy]", "--xfail-file", "/nonexistent/xfail.txt"],
    ["report", "/nonexistent/report.json"],
    [],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err.lower() or not argv


def test_argparse_usage_error_exits_2():
    with pytest.raises(SystemExit) as info:
        main(["check", "--dtype", "float8"])
    assert info.value.code == 2


def test_export_then_grade_outputs_computed_elsewhere(tmp_path, capsys):
    """ATT-MASK-1: golden vectors round trip: an 'external' implementation reads the npz
    inputs, writes outputs, and `check --outputs` grades them; a corrupted output fails."""
    golden_dir, outputs = tmp_path / "golden", tmp_path / "outputs"
    assert main(["export", str(golden_dir), "--select", "mask/*", "--dtype", "float32"]) == 0
    manifest = json.loads((golden_dir / "manifest.json").read_text())
    assert manifest["format"] == "attnspec-golden/1"
    assert manifest["cases"]
    outputs.mkdir()
    (outputs / "manifest.json").write_text(json.dumps({"implementation": "external-numpy"}))
    for entry in manifest["cases"]:
        with np.load(golden_dir / entry["file"]) as data:
            args = {k[6:]: data[k] for k in data.files if k.startswith("input/")}
        q, k, v = (args.pop(n).astype(entry["dtype"]) for n in ("query", "key", "value"))
        out = attnspec.scaled_dot_product_attention(q, k, v, **args, **entry["options"])
        np.savez(outputs / Path(entry["file"]).name, out=out)
    report_path = tmp_path / "graded.json"
    assert main(["check", "--outputs", str(outputs), "--select", "mask/*", "--dtype",
                 "float32", "--json", str(report_path), "--color", "never"]) == 0
    graded = Report.load(report_path)
    assert graded.implementations[0].name == "external-numpy"
    assert [r.outcome.value for r in graded.results] == ["pass"] * len(manifest["cases"])

    first = Path(manifest["cases"][0]["file"]).name
    with np.load(outputs / first) as data:
        np.savez(outputs / first, out=data["out"] * 1.001)
    assert main(["check", "--outputs", str(outputs), "--select", "mask/*", "--dtype",
                 "float32", "--color", "never"]) == 1


def test_report_merges_runs(tmp_path):
    a, b, merged = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "m.html"
    assert main(["check", "attnspec[numpy]", "--select", "lse/*", "--json", str(a),
                 "--no-fingerprint", "--color", "never"]) == 0
    assert main(["check", "broken_impls:wrong_scale", "--select", "lse/*", "--json", str(b),
                 "--no-fingerprint", "--color", "never"]) == 1
    assert main(["report", str(a), str(b), "--html", str(merged)]) == 1
    html = merged.read_text()
    assert "attnspec[numpy]" in html
    assert "broken_impls:wrong_scale" in html


def test_explore_shrinks_a_failure_and_prints_a_reproducer(capsys):
    """ATT-WINDOW-1: exploration finds the off-by-one window; the printed reproducer script
    and the result's `attnspec repro` command both run it and show the failure."""
    from attnspec.conformance.explore import explore

    found = explore("broken_impls:window_off_by_one", examples=300)
    out = capsys.readouterr().out
    assert found.result is not None, out
    assert found.result.outcome is Outcome.FAIL
    assert "ATT-WINDOW-1" in found.result.rules
    assert found.result.params.get("window") is not None
    script = out.split("reproducer:\n", 1)[1]
    assert script.rstrip() == found.script.rstrip()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=ENV, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "FAIL: out" in result.stdout
    assert "call: broken_impls:window_off_by_one(" in result.stdout
    command = shlex.split(found.result.repro)
    assert command[:3] == ["attnspec", "repro", found.result.case_id]
    rerun = subprocess.run([*command, "--run"], capture_output=True, text=True, env=ENV,
                           timeout=120)
    assert rerun.returncode == 1, rerun.stderr
    assert "FAIL: out" in rerun.stdout


def test_explore_draws_only_what_is_declared():
    """A callable declaring mask and scale only is never passed another option, nor grouped
    heads or Lq != Lk: it raises on anything else, and exploration finds nothing."""
    from attnspec.conformance.explore import explore

    found = explore("runner_impls:strict_mask_scale", examples=60, stream=io.StringIO())
    assert found.result is None


def test_explore_finds_nothing_wrong_with_attnspec(capsys):
    from attnspec.conformance.explore import explore

    found = explore("attnspec[numpy]", examples=25)
    assert found.result is None
    assert "no failure in 25" in capsys.readouterr().out


def test_explore_result_goes_into_the_report_and_sets_the_verdict(tmp_path, capsys):
    path = tmp_path / "r.json"
    status = main(["check", "broken_impls:window_off_by_one", "--select", "lse/*",
                   "--explore", "300", "--no-fingerprint", "--color", "never",
                   "--json", str(path)])
    assert status == 1
    data = json.loads(path.read_text())
    [found] = [r for r in data["results"] if r["case_id"].startswith("explore/")]
    assert found["outcome"] == "fail"
    assert "found by --explore" in found["message"]
    assert found["repro"].startswith("attnspec repro ")
    assert data["verdict"]["exit_code"] == 1
    assert "explore/" in capsys.readouterr().out


def test_pytest_plugin_turns_cases_into_items(tmp_path):
    """The pytest11 plugin: `pytest --attnspec-impl TARGET` grades TARGET case by case."""
    def run(target):
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
             str(tmp_path), "--attnspec-impl", target, "--attnspec-select", "score/*"],
            capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300)

    good = run("attnspec[numpy]")
    assert good.returncode == 0, good.stdout[-2000:]
    n = len(list(select(catalog(), ["score/*"])))
    assert f"{n} passed" in good.stdout or "passed" in good.stdout
    bad = run("broken_impls:wrong_scale")
    assert bad.returncode == 1
    assert "ATT-SCORE-1" in bad.stdout


def test_console_script_is_installed():
    result = subprocess.run(["attnspec", "list"], capture_output=True, text=True, env=ENV,
                            timeout=120)
    assert result.returncode == 0
    assert "ATT-CAUSAL-2" in result.stdout


def test_exported_inputs_match_the_catalog(tmp_path):
    main(["export", str(tmp_path), "--select", "causal-lower-right/*"])
    case = next(iter(select(catalog(), ["causal-lower-right/*"])))
    with np.load(tmp_path / "cases" / case_filename(case.id)) as data:
        np.testing.assert_array_equal(data["input/query"], make_inputs(case)["query"])


def test_list_features_says_which_are_always_graded(capsys):
    assert main(["list", "--features"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^extreme\s+behaviour \(always graded\)", out, re.M)
    assert re.search(r"^mask\s+capability", out, re.M)
    assert re.search(r"^backward\s+opt-in", out, re.M)


def test_repro_prints_a_script_and_refuses_an_unknown_case(tmp_path, capsys):
    case = "score/b2.h4x2.q6.k9.d3/float32"
    assert main(["repro", case, "broken_impls:wrong_scale", "-o", str(tmp_path / "r.py")]) == 0
    script = (tmp_path / "r.py").read_text()
    assert f"id={case!r}" in script
    result = subprocess.run([sys.executable, str(tmp_path / "r.py")], capture_output=True,
                            text=True, env=ENV, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "FAIL: out: max error" in result.stdout
    assert main(["repro", case, "broken_impls:correct", "--run"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["repro", "no/such/float32", "broken_impls:correct"]) == 2
    assert "no case 'no/such/float32' in the catalog" in capsys.readouterr().err
