"""Golden vectors for implementations outside Python, and grading of what they computed.

``attnspec export DIR`` writes ``DIR/manifest.json`` and one ``DIR/cases/<name>.npz`` per
case. Each npz holds ``input/<arg>`` (float arrays in float64, exactly representable in the
case dtype; bool masks; int64 lengths), ``expected/<output>`` (the float64 golden) and
``naive/<output>`` (the naive same-dtype reference the tolerance rule measures against). The
manifest lists every case with its rules, dtype, scalar options and file, plus the
conventions (layout, mask polarity) and the tolerance constants.

An implementation in another language reads the inputs, casts them to the case dtype, and
writes ``OUT/<name>.npz`` with ``out`` (and ``lse``, ``weights`` if it has them);
``attnspec check --outputs OUT`` grades that directory. Output dtypes are not checked there
(NumPy cannot store bfloat16), but they must be real numbers; a missing file is "not
applicable", an unreadable one (or one of strings, complex or bool arrays) its case's error.
``OUT/manifest.json`` is optional; a malformed one is a ``ValueError``/``TypeError`` naming
it.

Gradient cases (``grad*``) also hold ``input/cotangent`` (the cotangent of ``out``) and
``expected/dq``, ``dk``, ``dv`` (``dbias``): a backward kernel writes ``dq``, ``dk``, ``dv``
(``dbias``) next to ``out``; a file without ``dq`` makes the case "not applicable". The
determinism cases compare calls with each other and are not exported.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

import attnspec

from .atomic import atomic_open, write_text
from .cases import Case, CaseKind, make_inputs
from .catalog import catalog, select
from .golden import golden, logit_magnitude, naive
from .gradients import GRAD_OUTPUTS
from .precision import EPS
from .report import Report
from .results import CaseResult, ImplementationInfo, Outcome
from .schema import read_json
from .tolerance import GOLDEN_EPS, TOLERANCES, grade

__all__ = ["FORMAT", "case_filename", "export", "grade_outputs"]

FORMAT = "attnspec-golden/1"


def case_filename(case_id: str) -> str:
    """A portable file name for a case ID (``/`` -> ``__``; nothing but [A-Za-z0-9._=-])."""
    return re.sub(r"[^A-Za-z0-9._=-]", "-", case_id.replace("/", "__")) + ".npz"


def _cases(full: bool, patterns: Iterable[str] | None, dtypes: Iterable[str] | None,
           seed: int) -> list[Case]:
    wanted = set(dtypes or ())
    return [c for c in select(catalog(full=full, seed=seed), patterns)
            if c.kind not in (CaseKind.ERROR, CaseKind.DETERMINISM)
            and (not wanted or c.dtype in wanted)]


def export(directory: Path, *, full: bool = False, select: Iterable[str] | None = None,
           dtypes: Iterable[str] | None = None, seed: int = 0) -> int:
    """Write the golden vectors of the selected cases; returns how many were written."""
    directory = Path(directory)
    (directory / "cases").mkdir(parents=True, exist_ok=True)
    entries = []
    for case in _cases(full, select, dtypes, seed):
        inputs = make_inputs(case)
        expected, reference = golden(case, inputs), naive(case, inputs)
        logits = logit_magnitude(case, inputs, expected)
        arrays: dict[str, np.ndarray] = {}
        options: dict[str, Any] = {}
        if inputs.cotangent is not None:
            arrays["input/cotangent"] = inputs.cotangent
        for name, value in inputs.items():
            if isinstance(value, np.ndarray):
                arrays[f"input/{name}"] = value
            elif callable(value):  # a named mod: conformance/mods.py
                options[name] = f"{value.__module__}:{value.__qualname__}"
            else:
                options[name] = list(value) if isinstance(value, tuple) else value
        for name, value in expected.items():
            arrays[f"expected/{name}"] = np.asarray(value, dtype=np.float64)
            if name in reference:
                arrays[f"naive/{name}"] = np.asarray(reference[name], dtype=np.float64)
        filename = case_filename(case.id)
        with atomic_open(directory / "cases" / filename, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds
        entries.append({**case.to_json(), "file": f"cases/{filename}", "options": options,
                        "inputs": sorted(k[6:] for k in arrays if k.startswith("input/")),
                        "outputs": sorted(expected), "logit_magnitude": logits})
    manifest = {
        "format": FORMAT,
        "attnspec_version": attnspec.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "conventions": {
            "layout": "query (*batch, Hq, Lq, Dk), key (*batch, Hkv, Lk, Dk), "
                      "value (*batch, Hkv, Lk, Dv); out (*batch, Hq, Lq, Dv)",
            "mask": "bool, True = may attend",
            "lse": "float32 for float16/bfloat16 input, else the input dtype",
            "spec": "docs/spec.md of attnspec " + attnspec.__version__,
        },
        "tolerance": {
            "rule": "max|impl - expected| <= k * max|naive - expected| + c * eps * max|expected|"
                    " + g * eps64 * logit_magnitude * max|expected| over finite expected "
                    "entries (c_half for float16/bfloat16; logit_magnitude per case: the "
                    "golden's own rounding of its scores); non-finite entries must match "
                    "exactly",
            "constants": {name: {"k": t.k, "c": t.c, "c_half": t.c_half, "g": t.g}
                          for name, t in TOLERANCES.items()},
            "eps": EPS,
            "eps64": GOLDEN_EPS,
        },
        "cases": entries,
    }
    # Last, so that a manifest lists only files that are complete.
    write_text(directory / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return len(entries)


def grade_outputs(outputs: Path, *, full: bool = False, select: Iterable[str] | None = None,
                  dtypes: Iterable[str] | None = None, seed: int = 0,
                  xfail_file: Path | None = None) -> Report:
    """Grade ``outputs/<name>.npz`` files (or ``outputs/cases/<name>.npz``) against the
    catalog; the implementation's name comes from ``outputs/manifest.json``'s
    ``implementation`` field when present, else from the directory name.

    A file that cannot be read or holds no numbers is its case's error; a case without a
    file is not applicable (no file at all: INSUFFICIENT COVERAGE, never a pass).

    Raises
    ------
    ValueError, TypeError
        Naming the file, for a ``manifest.json`` that is not a JSON object or whose
        ``implementation`` is not a non-empty string, and for a malformed ``xfail_file``.
    """
    outputs = Path(outputs)
    name = _implementation_name(outputs)
    xfails = None
    if xfail_file is not None:
        from .xfail import load_xfails

        xfails = load_xfails(xfail_file)  # before grading: a bad file is known at once
    results = []
    found = 0
    for case in _cases(full, select, dtypes, seed):
        path = outputs / case_filename(case.id)
        if not path.is_file():
            path = outputs / "cases" / case_filename(case.id)
        result = CaseResult(
            case_id=case.id, rules=list(case.rules), implementation=name, backend="external",
            device="", dtype=case.dtype, op=case.op, params=dict(case.params),
            outcome=Outcome.NOT_APPLICABLE, seed=case.seed, message="no output file",
        )
        if path.is_file():
            found += 1
            _grade_file(case, path, result)
        results.append(result)
    options: dict[str, Any] = {"outputs": outputs.name, "full": full,
                               "select": list(select or []), "dtypes": list(dtypes or []),
                               "seed": seed}
    if results and not found:
        options["notes"] = [
            f"no output file in {outputs} for any of the {len(results)} cases: expected "
            f"{outputs.name}/<case>.npz or {outputs.name}/cases/<case>.npz, named as "
            "`attnspec export` names them (see its manifest.json)"]
    report = Report(
        implementations=[ImplementationInfo(name=name, backend="external", device="",
                                            description=f"outputs read from {outputs.name}")],
        results=results,
        options=options,
    )
    if xfails is not None:
        from .xfail import apply_xfails

        apply_xfails(report, xfails)
    return report


def _implementation_name(outputs: Path) -> str:
    """``implementation`` from ``outputs/manifest.json``, else the folder's name."""
    name = outputs.resolve().name or "outputs"  # the root folder has no name
    manifest = outputs / "manifest.json"
    if not manifest.is_file():
        return name
    data = read_json(manifest, what="a JSON manifest")
    if not isinstance(data, dict):
        raise ValueError(f"{manifest}: expected a JSON object such as "
                         f'{{"implementation": "my-kernel"}}, got {_json_type(data)}')
    value = data.get("implementation", name)
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{manifest}: 'implementation' must be a non-empty string (the name "
                        f"of the implementation that wrote the outputs), got "
                        f"{_json_type(value)} {_short(value)}")
    return value


def _json_type(value: Any) -> str:
    for kind, text in ((bool, "a boolean"), (int, "a number"), (float, "a number"),
                       (str, "a string"), (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return text
    return "null" if value is None else type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_outputs(path: Path) -> dict[str, np.ndarray] | str:
    """The arrays of an output file, or why they cannot be graded."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # anything wrong with the file is its case's error
        return f"cannot read {path.name}: not an .npz archive ({exc})"
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return (f"{path.name} holds a single array (an .npy file), expected an .npz archive "
                "with 'out'")
    try:
        with loaded as data:
            got = {k: np.asarray(data[k]) for k in ("out", "lse", "weights", *GRAD_OUTPUTS)
                   if k in data}
    except Exception as exc:  # a damaged member, a pickled (object) array
        return f"cannot read {path.name}: {exc}"
    for key, value in got.items():
        if value.dtype.kind not in "fiu":
            return (f"{path.name}: '{key}' holds {value.dtype} values, expected real numbers "
                    "(floats, or integers)")
    return got


def _grade_file(case: Case, path: Path, result: CaseResult) -> None:
    got = _read_outputs(path)
    if isinstance(got, str):  # an unreadable file is that case's error, not the run's
        result.outcome, result.message = Outcome.ERROR, got
        return
    from .runner import prepare

    if case.backward and "dq" not in got:
        result.message = "no gradients (dq, dk, dv) in the output file"
        return
    prepared = prepare(case)
    if prepared.error:
        result.outcome, result.message = Outcome.ERROR, prepared.error
        return
    g = grade(case, got, {}, prepared.golden or {}, prepared.naive or {}, prepared.logits)
    result.outcome = Outcome.PASS if g.passed else Outcome.FAIL
    result.max_error, result.tolerance, result.ratio = g.max_error, g.tolerance, g.ratio
    result.message = g.message
    errors: dict[str, dict[str, float | None]] = {n: dict(e) for n, e in g.errors.items()}
    result.errors = errors
