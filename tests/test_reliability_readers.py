"""Issue 14, the suite's readers of files (items 7 and 10): a bad file never takes a run or its
report down. A malformed manifest, capabilities file, report or xfail file is a clear
``ValueError``/``TypeError`` naming the file and what was expected (the command line turns
it into a usage error, exit 2), never a traceback and never a wrong green; a bad output file
of ``check --outputs`` is that case's error, not the end of the run; an ``--outputs`` folder
with no output file is INSUFFICIENT COVERAGE (exit 3), never PASSED.

Each test reproduced its defect before the fix (what it did then is in its docstring)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnspec.conformance.adapters.capabilities import parse_capabilities
from attnspec.conformance.cli import main
from attnspec.conformance.coverage import INSUFFICIENT
from attnspec.conformance.export import case_filename, export, grade_outputs
from attnspec.conformance.report import Report
from attnspec.conformance.results import CaseResult, ImplementationInfo, Outcome
from attnspec.conformance.schema import MAX_DEPTH, validate
from attnspec.conformance.xfail import load_xfails

CASE = "mask/b2.h4x2.q6.k9.d16.mask=dense/float32"
OTHER = "mask/b2.h4x2.q6.k9.d16.mask=sparse/float32"
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """Two exported cases and their correct outputs, computed from the golden."""
    root = tmp_path_factory.mktemp("golden")
    assert export(root, select=[CASE, OTHER]) == 2
    return root


def _outputs(golden: Path, tmp_path: Path, **override: np.ndarray) -> Path:
    """An --outputs folder with the golden as each case's ``out`` (``override``: file stem ->
    what to write as ``out`` instead)."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    for case_id in (CASE, OTHER):
        name = case_filename(case_id)
        with np.load(golden / "cases" / name) as data:
            out = data["expected/out"].astype(np.float32)
        np.savez(outputs / name, out=override.get(case_id, out))
    return outputs


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- item 7: check --outputs -------------------------------------------------------------------

MANIFESTS = {
    "invalid": (b"{bad", "not valid JSON"),
    "list": (b"[1, 2]", "expected a JSON object"),
    "string": (b'"external"', "expected a JSON object"),
    "int name": (b'{"implementation": 123}', "'implementation' must be a non-empty string"),
    "empty name": (b'{"implementation": "  "}', "'implementation' must be a non-empty string"),
    "binary": (b"\xff\xfe\x00\x81", "not UTF-8"),
    "deep": (DEEP.encode(), "nested too deeply"),
}


@pytest.mark.parametrize("kind", list(MANIFESTS))
def test_a_bad_outputs_manifest_is_a_clear_error(kind, golden, tmp_path):
    """Before: invalid JSON raised JSONDecodeError, a list AttributeError ('list' object has
    no attribute 'get'), deep nesting RecursionError, each with a traceback and no report;
    ``"implementation": 123`` wrote a report that failed the schema."""
    content, expected = MANIFESTS[kind]
    outputs = _outputs(golden, tmp_path)
    (outputs / "manifest.json").write_bytes(content)
    with pytest.raises((ValueError, TypeError), match=expected) as info:
        grade_outputs(outputs, select=[CASE, OTHER])
    assert "manifest.json" in str(info.value)


def test_a_manifest_is_optional_and_may_be_the_exported_one(golden, tmp_path):
    """The folder's name when there is no manifest or no ``implementation`` in it (the
    exported manifest copied alongside the outputs has none)."""
    outputs = _outputs(golden, tmp_path)
    report = grade_outputs(outputs, select=[CASE, OTHER])
    assert report.implementations[0].name == "outputs"
    (outputs / "manifest.json").write_bytes((golden / "manifest.json").read_bytes())
    report = grade_outputs(outputs, select=[CASE, OTHER])
    assert report.implementations[0].name == "outputs"
    assert [r.outcome for r in report.results] == [Outcome.PASS, Outcome.PASS]
    (outputs / "manifest.json").write_text('{"implementation": "my-kernel"}')
    report = grade_outputs(outputs, select=[CASE, OTHER])
    assert report.implementations[0].name == "my-kernel"
    assert validate(report.to_json()) == []


def test_a_bad_outputs_manifest_is_a_usage_error(golden, tmp_path, capsys):
    """Before: a traceback (JSONDecodeError) from ``attnspec check --outputs``."""
    outputs = _outputs(golden, tmp_path)
    (outputs / "manifest.json").write_text("[1, 2]")
    code, out, err = _cli(["check", "--outputs", str(outputs), "--select", CASE,
                           "--color", "never"], capsys)
    assert code == 2
    assert "manifest.json" in err
    assert "Traceback" not in err
    assert "PASSED" not in out


GARBAGE = {
    "strings": lambda path: np.savez(path, out=np.full((2, 4, 6, 16), "x")),
    "complex": lambda path: np.savez(path, out=np.zeros((2, 4, 6, 16), np.complex64)),
    "bool": lambda path: np.savez(path, out=np.zeros((2, 4, 6, 16), bool)),
    "objects": lambda path: np.savez(path, out=np.array([{"a": 1}], dtype=object)),
    "npy": lambda path: np.save(open(path, "wb"), np.zeros((2, 4, 6, 16))),  # noqa: SIM115
    "text": lambda path: path.write_text("not an archive"),
    "empty": lambda path: path.write_bytes(b""),
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_a_garbage_output_file_is_that_cases_error(kind, golden, tmp_path):
    """Before: an ``out`` of strings raised ValueError (could not convert string to float)
    out of ``grade_outputs``: a traceback and no report. Complex and bool arrays were graded
    as numbers (a complex ``out`` with the right real part passed)."""
    outputs = _outputs(golden, tmp_path)
    GARBAGE[kind](outputs / case_filename(CASE))
    report = grade_outputs(outputs, select=[CASE, OTHER])
    bad, good = report.results
    assert bad.outcome is Outcome.ERROR, bad.message
    assert case_filename(CASE) in bad.message
    assert good.outcome is Outcome.PASS
    assert validate(report.to_json()) == []


def test_a_complex_output_with_the_right_real_part_does_not_pass(golden, tmp_path):
    with np.load(golden / "cases" / case_filename(CASE)) as data:
        right = data["expected/out"].astype(np.complex128)
    outputs = _outputs(golden, tmp_path, **{CASE: right})
    bad = grade_outputs(outputs, select=[CASE]).results[0]
    assert bad.outcome is Outcome.ERROR
    assert "complex128" in bad.message
    assert "real numbers" in bad.message


def test_a_garbage_output_file_still_writes_the_report(golden, tmp_path, capsys):
    """Before: ``check --outputs`` with an ``out`` of strings ended in a traceback, exit 1 and
    no report."""
    outputs = _outputs(golden, tmp_path, **{CASE: np.full((2, 4, 6, 16), "x")})
    report_path = tmp_path / "r.json"
    code, _, err = _cli(["check", "--outputs", str(outputs), "--select", CASE, "--select",
                         OTHER, "--json", str(report_path), "--color", "never"], capsys)
    assert code == 1
    assert "Traceback" not in err
    data = json.loads(report_path.read_text())
    assert validate(data) == []
    assert [r["outcome"] for r in data["results"]] == ["error", "pass"]


def test_an_empty_outputs_folder_is_never_green(tmp_path, capsys):
    """An empty folder (or one whose files match no case) is INSUFFICIENT COVERAGE, exit 3:
    nothing was graded, like a ``--select`` that matches no case, and the report is still
    written, every case "no output file". The summary says where the files were looked for.
    (Before the coverage rules the folder was PASSED; before this change it said nothing
    about where the files should be.)"""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "notes.txt").write_text("not an output")
    report = grade_outputs(outputs, select=[CASE, OTHER])
    assert report.exit_code == INSUFFICIENT
    assert all(r.outcome is Outcome.NOT_APPLICABLE for r in report.results)
    assert any("no output file" in note and "cases/" in note
               for note in report.options["notes"])
    report_path = tmp_path / "r.json"
    code, out, _ = _cli(["check", "--outputs", str(outputs), "--json", str(report_path),
                         "--color", "never"], capsys)
    assert code == INSUFFICIENT
    assert "PASSED" not in out
    assert "INSUFFICIENT COVERAGE" in out
    assert "no output file" in out
    assert validate(json.loads(report_path.read_text())) == []


# -- item 10: capabilities ----------------------------------------------------------------------

@pytest.mark.parametrize(("key", "noun"), [
    ("features", "feature names"), ("exclude", "feature names"), ("ops", "operation names"),
    ("dtypes", "dtype names"), ("returns", "output names"),
])
@pytest.mark.parametrize("value", [5, None, 1.5, {"a": 1}, True])
def test_capabilities_lists_of_names(key, noun, value):
    """Before: ``features = 5`` raised "'int' object is not iterable"."""
    with pytest.raises(TypeError, match=f"capabilities: {key} must be a list of {noun}"):
        parse_capabilities({key: value})


def test_capabilities_file_with_features_5(tmp_path):
    path = tmp_path / "caps.toml"
    path.write_text("features = 5\n")
    with pytest.raises(TypeError, match="features must be a list of feature names") as info:
        parse_capabilities(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("value", [5, [5], [[5]], "mask", [["mask", 5]]])
def test_capabilities_exclusive_must_be_lists_of_options(value):
    """Before: ``exclusive = 5`` or ``[5]`` raised "'int' object is not iterable"."""
    with pytest.raises(TypeError, match="exclusive must be a list of lists of options"):
        parse_capabilities({"exclusive": value})


def test_capabilities_with_keys_of_mixed_types():
    """Before: TypeError '<' not supported between 'str' and 'int' (sorting the keys)."""
    with pytest.raises(ValueError, match="unknown keys"):
        parse_capabilities({5: 1, "colour": "red"})


def test_a_binary_capabilities_file_is_named(tmp_path):
    """Before: "'utf-8' codec can't decode byte 0xff in position 0", without the file."""
    path = tmp_path / "caps.toml"
    path.write_bytes(b"\xff\xfe features = 1")
    with pytest.raises(ValueError, match="not UTF-8") as info:
        parse_capabilities(path)
    assert str(path) in str(info.value)


def test_a_deeply_nested_capabilities_file(tmp_path):
    """Before: RecursionError."""
    path = tmp_path / "caps.toml"
    path.write_text("features = " + DEEP + "\n")
    with pytest.raises(ValueError, match="nested too deeply") as info:
        parse_capabilities(path)
    assert str(path) in str(info.value)
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_capabilities({"exclusive": deep})


def test_a_bad_capabilities_file_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "caps.toml"
    path.write_bytes(b"\xff\xfe")
    code, _, err = _cli(["check", "attnspec:scaled_dot_product_attention", "--capabilities",
                         str(path), "--select", CASE, "--in-process", "--no-fingerprint",
                         "--color", "never"], capsys)
    assert code == 2
    assert str(path) in err
    assert "Traceback" not in err


# -- item 10: reports -------------------------------------------------------------------------

def _report() -> Report:
    results = [
        CaseResult(case_id=f"lse/{i}/float32", rules=["ATT-LSE-1"], implementation="impl",
                   backend="numpy", device="cpu", dtype="float32", op="attention",
                   params={"window": [2, None]}, outcome=Outcome.PASS, seed=i,
                   max_error=1e-7, tolerance=1e-5, ratio=0.5, errors={
                       "out": {"error": 1e-7, "tolerance": 1e-5, "ratio": 0.5}})
        for i in range(3)]
    info = ImplementationInfo("impl", "numpy", "cpu", ops=["attention"], features=["lse"])
    return Report(implementations=[info], results=results, options={"select": ["lse/"]})


BAD_FIELDS = {
    "max_error": (("results", 0, "max_error"), "big", "$.results[0].max_error"),
    "rules": (("results", 1, "rules"), "ATT-LSE-1", "$.results[1].rules"),
    "seed": (("results", 0, "seed"), "x", "$.results[0].seed"),
    "outcome": (("results", 2, "outcome"), "passed", "$.results[2].outcome"),
    "name": (("implementations", 0, "name"), 5, "$.implementations[0].name"),
    "features": (("implementations", 0, "features"), "lse", "$.implementations[0].features"),
    "results": (("results",), {"a": 1}, "$.results"),
    "errors": (("results", 0, "errors"), {"out": 1}, "$.results[0].errors.out"),
    "status": (("status",), 7, "$.status"),
    "stale": (("stale_xfails",), "x", "$.stale_xfails"),
}


@pytest.mark.parametrize("field", list(BAD_FIELDS))
def test_a_report_with_wrong_field_types_is_a_clear_error(field, tmp_path, capsys):
    """Before: ``attnspec report`` printed a verdict computed from the wrong values (rules
    as a string are its characters; PASSED or INSUFFICIENT COVERAGE), then a traceback when
    printing (``max_error = "big"``), or it was silently accepted (``seed = "x"``)."""
    where, value, path_text = BAD_FIELDS[field]
    data = _report().to_json()
    node = data
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not a valid attnspec report") as info:
        Report.load(path)
    assert str(path) in str(info.value)
    assert path_text in str(info.value)
    code, out, err = _cli(["report", str(path)], capsys)
    assert code == 2
    assert "PASSED" not in out
    assert "Traceback" not in err
    assert path_text in err
    assert err.count(str(path)) == 1  # named once, not twice


def test_a_report_missing_what_it_cannot_do_without(tmp_path):
    data = _report().to_json()
    del data["results"][0]["case_id"]
    del data["implementations"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="missing required property"):
        Report.load(path)
    with pytest.raises(ValueError, match="missing required property"):
        Report.from_json(data)
    with pytest.raises(TypeError, match="a JSON object"):
        Report.from_json([])  # type: ignore[arg-type]


def test_old_reports_still_load(tmp_path):
    """What older schema versions did not have loads with its default; what a reader
    recomputes (verdict, coverage) may be absent."""
    data = _report().to_json()
    data["schema_version"] = "1.0"
    for key in ("status", "verdict", "coverage", "stale_xfails", "options", "environment"):
        del data[key]
    for r in data["results"]:
        for key in ("errors", "not_graded", "missing", "repro"):
            del r[key]
    for i in data["implementations"]:
        for key in ("ops", "dtypes", "deviations", "exclusive", "library"):
            del i[key]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    loaded = Report.load(path)
    assert loaded.status == "complete"
    assert loaded.results[0].errors == {}
    assert validate(loaded.to_json()) == []


@pytest.mark.parametrize("content", [DEEP, '{"options": ' + "[" * 5000 + "]" * 5000 + "}",
                                     '{"options": {"a": ' + "[" * (MAX_DEPTH + 1)
                                     + "]" * (MAX_DEPTH + 1) + "}}"])
def test_a_deeply_nested_report(content, tmp_path, capsys):
    """Before: RecursionError with a traceback."""
    path = tmp_path / "deep.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="nested too deeply") as info:
        Report.load(path)
    assert str(path) in str(info.value)
    code, _, err = _cli(["report", str(path)], capsys)
    assert code == 2
    assert "nested too deeply" in err
    assert "Traceback" not in err


def test_a_report_nested_within_the_limit_loads(tmp_path):
    data = _report().to_json()
    nested: object = []
    for _ in range(MAX_DEPTH - 3):  # $ -> options -> "a" -> ...
        nested = [nested]
    data["options"]["a"] = nested
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    assert Report.load(path).options["a"] == nested


def test_a_binary_report_is_named_once(tmp_path, capsys):
    """Before: "bin.json: bin.json: not a JSON report (...)"."""
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00")
    code, _, err = _cli(["report", str(path)], capsys)
    assert code == 2
    assert err.count(str(path)) == 1
    assert "not UTF-8" in err


# -- item 10: xfail files -----------------------------------------------------------------------

def test_a_binary_xfail_file_is_named(tmp_path):
    """Before: UnicodeDecodeError without the file's name."""
    path = tmp_path / "xfail.txt"
    path.write_bytes(b"\xff\xfe lse/*")
    with pytest.raises(ValueError, match="not UTF-8") as info:
        load_xfails(path)
    assert str(path) in str(info.value)


def test_a_deeply_nested_xfail_file(tmp_path):
    """Before: RecursionError."""
    path = tmp_path / "xfail.toml"
    path.write_text("[[xfail]]\npattern = " + DEEP + "\n")
    with pytest.raises(ValueError, match="nested too deeply") as info:
        load_xfails(path)
    assert str(path) in str(info.value)


def test_a_bad_xfail_file_with_outputs(golden, tmp_path):
    outputs = _outputs(golden, tmp_path)
    path = tmp_path / "xfail.txt"
    path.write_bytes(b"\xff")
    with pytest.raises(ValueError, match="not UTF-8"):
        grade_outputs(outputs, select=[CASE], xfail_file=path)
