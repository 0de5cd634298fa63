"""The GitHub workflows (.github/workflows/) and the nox sessions (noxfile.py).

Workflows cannot run here, so they are checked in three ways: against GitHub's published
workflow schema (check-jsonschema's vendored copy), for agreement with the nox sessions that
their jobs run and with pyproject.toml, and by running the reusable workflow's shell steps
locally on a correct and a broken kernel.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import attnspec
from attnspec.backends import all_backends

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CI = ROOT / ".github" / "workflows" / "ci.yml"
REUSABLE = ROOT / ".github" / "workflows" / "attnspec-check.yml"
DOC = ROOT / "docs" / "ci.md"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _tomllib():
    """tomllib (Python 3.11+), or tomli, its backport (a pytest dependency before 3.11)."""
    try:
        import tomllib
    except ImportError:
        return pytest.importorskip("tomli", reason="no TOML parser: Python < 3.11 without tomli")
    return tomllib

needs_validator = pytest.mark.skipif(
    importlib.util.find_spec("check_jsonschema") is None,
    reason="check-jsonschema is not installed (it is in the test extra: pip install -e .[test])",
)


def _yaml():
    """A YAML 1.2 loader (``on:`` stays a string): ruamel.yaml, which check-jsonschema uses."""
    ruamel = pytest.importorskip(
        "ruamel.yaml", reason="ruamel.yaml (a check-jsonschema dependency) is not installed")
    return ruamel.YAML(typ="safe", pure=True)


def _load(path: Path) -> dict:
    return _yaml().load(path.read_text())


def _doc_workflows() -> list[str]:
    """The complete workflows (with ``jobs:``) among docs/ci.md's YAML blocks."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    return [b for b in blocks if re.search(r"^jobs:", b, re.M)]


def _validate(schema: str, files: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema,
         *map(str, files)],
        capture_output=True, text=True, timeout=120,
    )


def _steps(workflow: dict) -> list[tuple[str, dict]]:
    return [(job_id, step) for job_id, job in workflow["jobs"].items()
            for step in job.get("steps", [])]


def _nox_sessions() -> dict[str, bool]:
    """``nox --list``: every session, and whether a bare ``nox`` runs it."""
    if importlib.util.find_spec("nox") is None:
        pytest.skip("nox is not installed (it is in the test extra: pip install -e .[test])")
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "--list", "-f", str(ROOT / "noxfile.py")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    listed = re.findall(r"^([*-]) (\S+)", proc.stdout, re.M)
    assert listed, proc.stdout
    return {name: mark == "*" for mark, name in listed}


@functools.cache
def _load_noxfile():
    spec = importlib.util.spec_from_file_location("_attnspec_noxfile", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while being defined
    spec.loader.exec_module(module)
    return module


def _noxfile():
    """noxfile.py as a module (its constants: PYTHONS, CELLS, TORCH_CPU, ...)."""
    if importlib.util.find_spec("nox") is None:
        pytest.skip("nox is not installed (it is in the test extra: pip install -e .[test])")
    return _load_noxfile()


# -- schema ---------------------------------------------------------------------------------


def test_there_are_the_two_workflows():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "attnspec-check.yml"}


@needs_validator
def test_workflows_match_githubs_workflow_schema(tmp_path):
    examples = []
    for i, block in enumerate(_doc_workflows()):
        examples.append(tmp_path / f"docs-ci-example-{i}.yml")
        examples[-1].write_text(block)
    assert examples, "docs/ci.md has no example workflow"
    proc = _validate("vendor.github-workflows", [*WORKFLOWS, *examples])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every job has a time limit (check-jsonschema's stricter companion schema).
    proc = _validate("custom.github-workflows-require-timeout", WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_validator
def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(textwrap.dedent("""\
        on: push
        jobs:
          tests:
            runs-on: ubuntu-latest
            strategy:
              fail-fast: "no"
            step:
              - run: pytest
    """))
    proc = _validate("vendor.github-workflows", [broken])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "broken.yml" in proc.stdout + proc.stderr


def test_run_steps_are_valid_bash(tmp_path):
    assert sum("run" in step for path in WORKFLOWS for _, step in _steps(_load(path))) > 10
    for path in WORKFLOWS:
        for job_id, step in _steps(_load(path)):
            if "run" not in step:
                continue
            script = re.sub(r"\$\{\{.*?\}\}", "EXPR", step["run"])
            file = tmp_path / "step.sh"
            file.write_text(script)
            proc = subprocess.run(["bash", "-n", str(file)], capture_output=True, text=True)
            assert proc.returncode == 0, f"{path.name}: {job_id}: {step}\n{proc.stderr}"


# -- the CI matrix and the nox sessions ----------------------------------------------------


def _matrix() -> dict:
    return _load(CI)["jobs"]["tests"]["strategy"]["matrix"]


def test_matrix_is_the_nox_tests_sessions():
    nox_file = _noxfile()
    matrix = _matrix()
    assert matrix["cell"] == list(nox_file.CELLS)
    assert matrix["python"] == nox_file.PYTHONS
    assert _load(CI)["jobs"]["tests"]["strategy"]["fail-fast"] is False
    expected = {f"tests-{c}-{p}" for c in matrix["cell"] for p in matrix["python"]}
    sessions = _nox_sessions()
    assert {s for s in sessions if re.fullmatch(r"tests-\w+-[\d.]+", s)} == expected
    assert set(sessions) - expected == {"tests-gpu", "check", "bench", "lint", "package", "docs"}
    # A bare `nox` runs what the hosted CI runs: everything but the GPU job and benchmarks.
    assert {s for s, default in sessions.items() if default} == set(sessions) - {
        "tests-gpu", "bench"}


def test_matrix_cells_are_numpy_plus_one_framework():
    cells = _noxfile().CELLS
    assert list(cells) == ["numpy", "strict", "torch", "jax", "dask"]
    assert cells["numpy"].backends == ("numpy",)
    assert cells["numpy"].frameworks == ()
    names = {b.name for b in all_backends()}
    for cell in cells.values():
        assert cell.backends[0] == "numpy"
        assert len(cell.backends) <= 2
        assert set(cell.backends) <= names


def test_matrix_pythons_are_the_oldest_and_newest_supported():
    tomllib = _tomllib()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    oldest = re.fullmatch(r">=\s*(\d+\.\d+)", requires).group(1)
    pythons = _matrix()["python"]
    assert all(isinstance(p, str) for p in pythons), "quote versions in YAML: 3.10 is 3.1"
    assert pythons[0] == oldest
    assert len(pythons) == 2
    assert tuple(map(int, pythons[1].split("."))) > tuple(map(int, oldest.split(".")))


def test_every_nox_command_in_ci_names_a_session():
    sessions = set(_nox_sessions())
    matrix = _matrix()
    commands = [(job_id, command) for job_id, step in _steps(_load(CI))
                for command in re.findall(r'nox -s ("[^"]+"|\S+)', step.get("run", ""))]
    assert {job_id for job_id, _ in commands} == set(_load(CI)["jobs"])  # every job uses nox
    for job_id, command in commands:
        for cell in matrix["cell"]:
            for python in matrix["python"]:
                name = command.strip('"').replace("${{ matrix.cell }}", cell)
                name = name.replace("${{ matrix.python }}", python)
                assert name in sessions, f"{job_id}: nox -s {name}"


def test_conformance_reports_are_uploaded_and_summarised():
    ci = _load(CI)
    for job_id in ("tests", "conformance", "gpu"):
        steps = ci["jobs"][job_id]["steps"]
        uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
        assert len(uploads) == 1, job_id
        # Uploaded and summarised whatever happened before (a failing check included).
        assert "cancelled()" in uploads[0]["if"], job_id
        assert uploads[0]["with"]["path"].startswith("reports/"), job_id
        summaries = [s for s in steps if "GITHUB_STEP_SUMMARY" in s.get("run", "")]
        assert summaries, job_id
        assert "cancelled()" in summaries[0]["if"], job_id
        assert "conformance-report.md" in json.dumps(summaries[0]), job_id
    # The session writes all three reports where the upload looks.
    source = (ROOT / "noxfile.py").read_text()
    for option in ("--json", "--html", "--markdown"):
        assert f'"{option}", str(out / "conformance-report.' in source


def test_torch_is_pinned_to_the_cpu_wheel_everywhere():
    nox_file = _noxfile()
    version = nox_file.TORCH_VERSION
    assert (f"torch=={version}", "--index-url", TORCH_CPU_INDEX) == nox_file.TORCH_CPU
    assert nox_file.CELLS["torch"].first == nox_file.TORCH_CPU
    # The same torch as the README's and .ci/run's install commands.
    for path in (ROOT / "README.md", ROOT / ".ci" / "run"):
        assert set(re.findall(r"torch==([\w.+]+)", path.read_text())) == {version}, path
    inputs = _load(REUSABLE)["on"]["workflow_call"]["inputs"]
    assert inputs["torch-version"]["default"] == version
    install = next(s for _, s in _steps(_load(REUSABLE)) if "torch-cpu)" in s.get("run", ""))
    assert f"--index-url {TORCH_CPU_INDEX}" in install["run"]


def test_gpu_job_needs_a_self_hosted_gpu_runner_and_the_variable():
    gpu = _load(CI)["jobs"]["gpu"]
    assert set(gpu["runs-on"]) == {"self-hosted", "gpu"}
    assert "vars.HAS_GPU_RUNNER == 'true'" in gpu["if"]
    assert any("nox -s tests-gpu" in s.get("run", "") for s in gpu["steps"])
    assert set(_noxfile().GPU.backends) >= {"cupy", "torch-cuda", "jax-gpu"}
    assert "HAS_GPU_RUNNER" in DOC.read_text()


# -- the reusable workflow --------------------------------------------------------------------


def test_reusable_workflow_interface():
    call = _load(REUSABLE)["on"]["workflow_call"]
    inputs = call["inputs"]
    assert inputs["target"]["required"] is True
    assert {"package", "backend", "xfail"} <= set(inputs)
    assert {"passed", "exit-code", "report-artifact"} <= set(call["outputs"])
    # Every backend in attnspec's registry can be installed by the workflow.
    install = next(s for _, s in _steps(_load(REUSABLE)) if "case " in s.get("run", ""))
    labels = set(re.findall(r"^\s*([\w-]+)\)", install["run"], re.M))
    assert labels == {b.name for b in all_backends()}


def test_doc_example_calls_the_reusable_workflow_with_its_inputs():
    inputs = _load(REUSABLE)["on"]["workflow_call"]["inputs"]
    required = {name for name, spec in inputs.items() if spec.get("required")}
    (example,) = [_yaml().load(b) for b in _doc_workflows() if "attnspec-check.yml" in b]
    (job,) = example["jobs"].values()
    path, ref = job["uses"].split("@")
    assert path.endswith("/attnspec/.github/workflows/attnspec-check.yml")
    assert required <= set(job["with"]) <= set(inputs)
    # The example pins the current release: the tag and the attnspec requirement.
    assert ref == f"v{attnspec.__version__}"
    assert job["with"]["attnspec"].endswith(f"=={attnspec.__version__}")
    # The table of inputs in docs/ci.md lists exactly the declared inputs.
    table = DOC.read_text().split("| input |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `([\w-]+)` \|", table, re.M))
    assert documented == set(inputs)


def _step_script(step_id: str | None = None, name: str | None = None) -> str:
    for _, step in _steps(_load(REUSABLE)):
        if (step_id and step.get("id") == step_id) or (name and step.get("name") == name):
            return step["run"]
    raise AssertionError(f"no step {step_id or name}")


def _run_step(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """One ``run:`` step as GitHub runs it (bash -eo pipefail), in ``tmp_path``."""
    assert "${{" not in script, "inputs reach the shell as environment variables only"
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "attnspec"  # the attnspec command of the interpreter running the tests
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import sys; '
                    f'from attnspec.conformance.cli import main; sys.exit(main())" "$@"\n')
    shim.chmod(0o755)
    file = tmp_path / "step.sh"
    file.write_text(script)
    full_env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
                "PYTHONPATH": str(tmp_path), **env}
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(file)],
                          cwd=tmp_path, env=full_env, capture_output=True, text=True,
                          timeout=300)


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


KERNELS = """\
import attnspec


def good(q, k, v, /, **options):
    return attnspec.scaled_dot_product_attention(q, k, v, **options)


def bad(q, k, v, /, **options):
    return 2 * attnspec.scaled_dot_product_attention(q, k, v, **options)
"""


@pytest.mark.parametrize(("kernel", "xfail", "status"), [
    ("good", "", "0"), ("bad", "", "1"), ("bad", "known.txt", "0"),
], ids=["correct", "broken", "broken-xfail"])
def test_reusable_workflow_check_step_grades_a_kernel(tmp_path, kernel, xfail, status):
    (tmp_path / "kernels.py").write_text(KERNELS)
    (tmp_path / "known.txt").write_text("score/*  # doubles its output\n")
    env = {"TARGET": f"kernels:{kernel}", "BACKEND": "numpy", "XFAIL": xfail,
           "CAPABILITIES": "", "ARGS": "--select score/* --no-fingerprint",
           "REPORTS": "attnspec-report", "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    proc = _run_step(_step_script(step_id="check"), tmp_path, **env)
    # The step itself succeeds (so that the summary and the upload run); its outputs tell.
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outputs = _outputs(tmp_path / "output")
    assert outputs == {"exit-code": status, "passed": "true" if status == "0" else "false"}
    report = json.loads((tmp_path / "attnspec-report" / "conformance-report.json").read_text())
    assert [i["name"] for i in report["implementations"]] == [f"kernels:{kernel}"]
    from attnspec.conformance.catalog import catalog, select

    assert len(report["results"]) == len(list(select(catalog(), ["score/*"])))
    assert (tmp_path / "attnspec-report" / "conformance-report.html").stat().st_size > 0
    proc = _run_step(_step_script(name="Conformance summary"), tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert summary == (tmp_path / "attnspec-report" / "conformance-report.md").read_text()
    assert f"kernels:{kernel}" in summary


def test_reusable_workflow_rejects_an_unknown_backend(tmp_path):
    script = _step_script(name="Install the backend's framework")
    proc = _run_step(script, tmp_path, BACKEND="tensorflow")
    assert proc.returncode == 2
    assert "unknown backend 'tensorflow'" in proc.stdout
    assert _run_step(script, tmp_path, BACKEND="numpy").returncode == 0  # nothing to install
