"""Fuzzing the conformance suite's readers of files (issue 14): ``--outputs`` manifests and
output files, capabilities (mappings and TOML files), report JSON and xfail files.

Whatever Hypothesis draws (bytes, text, JSON of any shape, a valid report with one value
replaced or removed), a reader gives a clean result or a ``ValueError``/``TypeError`` -- the
errors the command line turns into a usage error -- never another exception. A report that
loads also renders (terminal, Markdown, HTML), merges and saves, and what it saves is valid
against the schema. Derandomised, with a bounded ``max_examples`` per reader: a few seconds.
"""

from __future__ import annotations

import copy
import io
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from attnspec.conformance import html, markdown, terminal
from attnspec.conformance.adapters.capabilities import CAPABILITY_KEYS, parse_capabilities
from attnspec.conformance.export import case_filename, export, grade_outputs
from attnspec.conformance.report import Report
from attnspec.conformance.results import CaseResult, ImplementationInfo, Outcome
from attnspec.conformance.schema import validate
from attnspec.conformance.xfail import load_xfails

CLEAN = (ValueError, TypeError)
CASE = "mask/b2.h4x2.q6.k9.d16.mask=dense/float32"


def attempt(read: Any, *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """``(read(...), None)``, or ``(None, message)`` for a ValueError or TypeError; any other
    exception propagates and fails the test."""
    try:
        return read(*args, **kwargs), None
    except CLEAN as exc:
        return None, str(exc)


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


# -- strategies ---------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=12)
# What a field of a report, capabilities or a manifest plausibly holds, right or wrong.
plausible = st.sampled_from([
    "", "x", "pass", "fail", "ATT-LSE-1", "attention", "float32", "mask", "lse", "out",
    "complete", "interrupted", "1.3", "2.0", 0, -1, 1, 10**400, 1.5, -0.0, 1e308, True,
    False, None, [], {}, ["mask"], ["out", "lse"], [["mask", "bias"]], ["ATT-LSE-1"],
    {"out": {"error": 1.0, "tolerance": 1.0, "ratio": 1.0}}, {"error": None},
    {"reason": "r", "selection": "s"}, [{"reason": "r", "features": ["mask"]}],
])
values = plausible | json_values
raw_files = st.binary(max_size=64) | st.text(max_size=64).map(str.encode)


def _report_json() -> dict[str, Any]:
    results = [
        CaseResult(case_id=f"lse/{i}/float32", rules=["ATT-LSE-1", "ATT-SCORE-1"],
                   implementation="impl", backend="numpy", device="cpu", dtype="float32",
                   op="attention", params={"window": [2, None]},
                   outcome=[Outcome.PASS, Outcome.FAIL, Outcome.NOT_APPLICABLE][i], seed=i,
                   max_error=1e-7, tolerance=1e-5, ratio=0.5, message="m",
                   errors={"out": {"error": 1e-7, "tolerance": 1e-5, "ratio": 0.5}},
                   not_graded={"ATT-LSE-1": "no lse returned"} if i else {},
                   missing=["lse"] if i == 2 else [])
        for i in range(3)]
    info = ImplementationInfo(
        "impl", "numpy", "cpu", "d", {"numpy": "2"}, ["lse"], {"mask_polarity": "keep"},
        ops=["attention"], dtypes=["float32"],
        deviations=[{"reason": "r", "selection": "empty_rows", "features": ["empty_rows"],
                     "fingerprint": "x"}],
        exclusive=[["mask", "bias"]])
    report = Report(implementations=[info], results=results,
                    options={"select": ["lse/"], "notes": ["a note"]},
                    stale_xfails=["lse/9  # stale"])
    return report.to_json()


REPORT = _report_json()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON document (keys and indices)."""
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


PATHS = _paths(REPORT)[1:]


@st.composite
def mutated_reports(draw: st.DrawFn) -> dict[str, Any]:
    """The valid report with one to three values replaced, removed or added."""
    data = copy.deepcopy(REPORT)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node: Any = data
        try:
            for part in path[:-1]:
                node = node[part]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "delete":
                del node[path[-1]]
            elif action == "add" and isinstance(node, dict):
                node[draw(st.text(max_size=6))] = draw(values)
            else:
                node[path[-1]] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced the path
    return data


def _toml_value(value: Any) -> str:
    """``value`` written as TOML (JSON strings are TOML basic strings; ``None`` has no TOML
    form and is written as ``null``, which makes the file invalid, also worth reading)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


capability_keys = st.sampled_from([*CAPABILITY_KEYS, "colour"])
capability_dicts = st.dictionaries(capability_keys, values, max_size=4)


@st.composite
def capability_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["toml", "deviations", "raw"]))
    if kind == "raw":
        return draw(raw_files)
    lines = [f"{key} = {_toml_value(value)}"
             for key, value in draw(capability_dicts).items()]
    if kind == "deviations":
        lines += ["[[deviations]]"] + [f"{key} = {_toml_value(value)}" for key, value in
                                       draw(st.dictionaries(
                                           st.sampled_from(["reason", "features", "cases",
                                                            "dtypes", "issue", "fingerprint",
                                                            "other"]),
                                           values, max_size=4)).items()]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


# -- properties ---------------------------------------------------------------------------------

def _renders(report: Report) -> None:
    """What ``attnspec report`` does with a report that loaded, and the reports it writes."""
    for one in (report, Report.merge([report, report])):
        terminal.matrix(one, color=False)
        terminal.summary(one)
        markdown.to_markdown(one)
        html.to_html(one)
        assert one.exit_code in (0, 1, 3)
        data = one.to_json()
        json.dumps(data, allow_nan=False)
        assert validate(data) == [], validate(data)


@fuzz(100)
@given(mutated_reports())
def test_fuzz_report_json(data):
    report, error = attempt(Report.from_json, data)
    event("rejected" if error else "loaded")
    if report is not None:
        _renders(report)


@fuzz(40)
@given(raw_files | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzz_report_files(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("report") / "r.json"
    path.write_bytes(content)
    report, error = attempt(Report.load, path)
    if error is not None:
        assert str(path) in error
    else:
        _renders(report)


@fuzz(150)
@given(capability_dicts)
def test_fuzz_capability_mappings(caps):
    parsed, error = attempt(parse_capabilities, caps, target="m:f")
    event("rejected" if error else "accepted")
    if error is not None:
        assert "capabilities of 'm:f'" in error
    else:
        assert set(parsed) <= set(CAPABILITY_KEYS)


@fuzz(80)
@given(capability_files())
def test_fuzz_capability_files(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("caps") / "caps.toml"
    path.write_bytes(content)
    _, error = attempt(parse_capabilities, path)
    if error is not None:
        assert str(path) in error


@fuzz(60)
@given(raw_files | st.lists(st.text(max_size=20), max_size=4).map(
    lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")))
def test_fuzz_xfail_files(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("xfail") / "xfail.txt"
    path.write_bytes(content)
    _, error = attempt(load_xfails, path)
    if error is not None:
        assert str(path) in error


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    export(root, select=[CASE])
    with np.load(root / "cases" / case_filename(CASE)) as data:
        shape = data["expected/out"].shape
    return root, shape


manifests = (raw_files | values.map(lambda v: json.dumps(v).encode())
             | values.map(lambda v: json.dumps({"implementation": v}).encode()))
DTYPES = ["float32", "float64", "float16", "int32", "uint8", "bool", "complex64", "U2",
          "S2", "datetime64[s]", "object", "V4"]


@st.composite
def output_files(draw: st.DrawFn, shape: tuple[int, ...]) -> bytes:
    """An output file: raw bytes, or an archive of arrays of any dtype and shape."""
    if draw(st.booleans()):
        return draw(raw_files)
    arrays = {}
    for key in draw(st.lists(st.sampled_from(["out", "lse", "weights", "dq", "x"]),
                             min_size=1, max_size=3, unique=True)):
        dtype = np.dtype(draw(st.sampled_from(DTYPES)))
        size = draw(st.sampled_from([shape, (), (0,), (3,), shape[:-1]]))
        value = np.zeros(size, dtype=dtype)
        if dtype.kind == "f":
            value = value + draw(st.sampled_from([0.0, math.nan, math.inf, 1e30]))
        arrays[key] = value
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


@fuzz(40)
@given(data=st.data())
def test_fuzz_outputs_folder(golden, tmp_path_factory, data):
    root, shape = golden
    outputs = tmp_path_factory.mktemp("outputs")
    if data.draw(st.booleans()):
        (outputs / "manifest.json").write_bytes(data.draw(manifests))
    if data.draw(st.booleans()):
        (outputs / case_filename(CASE)).write_bytes(data.draw(output_files(shape)))
    report, error = attempt(grade_outputs, outputs, select=[CASE])
    if error is not None:
        assert "manifest.json" in error
        event("bad manifest")
        return
    [result] = report.results
    event(result.outcome.value)
    assert result.outcome in (Outcome.PASS, Outcome.FAIL, Outcome.ERROR,
                              Outcome.NOT_APPLICABLE)
    if result.outcome is Outcome.PASS:  # never a wrong green: only the golden passes
        with np.load(outputs / case_filename(CASE)) as got, \
                np.load(root / "cases" / case_filename(CASE)) as want:
            np.testing.assert_allclose(got["out"], want["expected/out"], rtol=1e-5)
    _renders(report)


def test_the_mutations_reach_every_field():
    """The report fuzzed is valid to begin with, and its paths cover every kind of field."""
    assert validate(REPORT) == []
    tops = {path[0] for path in PATHS}
    assert tops == set(REPORT)
    assert any(path[:3] == ("implementations", 0, "deviations") for path in PATHS)
    assert any(path[:3] == ("results", 0, "errors") for path in PATHS)
