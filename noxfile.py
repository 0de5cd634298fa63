"""Developer sessions: every cell of the CI matrix, reproducible here with one command.

    nox -l                               # the sessions
    nox -s tests-torch                   # the torch cell, on each CI Python found here
    nox -s tests-torch-3.10              # one cell, exactly as CI runs it
    nox -s tests-torch -P 3.12           # the torch cell on the Python you have
    nox -s tests-numpy -- -k softmax     # arguments after -- go to pytest
    nox -s check                         # conformance run: every framework without CUDA
    nox -s bench                         # benchmarks/run.py --quick (-- ARGS: instead)
    nox -s tests-gpu                     # CuPy, torch CUDA, JAX GPU (a CUDA machine)
    nox -s lint package docs             # ruff; sdist + wheel in a fresh environment; site

The test matrix in .github/workflows/ci.yml runs ``nox -s tests-<cell>-<python>`` for every
cell of ``CELLS`` x ``PYTHONS``; its other jobs run the sessions of the same names under the
newest Python (these sessions use the interpreter nox runs with). tests/test_workflows.py
checks that the workflow and this file agree. Each tests session writes the conformance
reports (JSON, HTML, Markdown) to ``reports/<session>/``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import nox

HERE = Path(__file__).resolve().parent

# Oldest and newest CPython the project supports: the oldest is requires-python's bound
# (pyproject.toml); the newest is the latest release every framework publishes wheels for.
PYTHONS = ["3.10", "3.14"]

# torch from the CPU index: an unpinned or PyPI torch pulls gigabytes of CUDA packages.
TORCH_VERSION = "2.13.0"
TORCH_CPU = (f"torch=={TORCH_VERSION}", "--index-url", "https://download.pytorch.org/whl/cpu")

# The frameworks a cell is about; every cell has NumPy (the suite's golden references).
FRAMEWORKS = ("array_api_strict", "torch", "jax", "dask", "cupy")


@dataclass(frozen=True)
class Cell:
    """One column of the CI matrix: what to install and what must then be usable."""

    extras: str  # the project's extras, installed editable
    backends: tuple[str, ...]  # attnspec.backends that must be available (else the cell fails)
    frameworks: tuple[str, ...] = ()  # the FRAMEWORKS this cell keeps; the others are removed
    first: tuple[str, ...] = ()  # installed before the project (a pinned torch build)
    also: tuple[str, ...] = ()  # installed after it


CELLS = {
    "numpy": Cell("numpy,test", ("numpy",)),
    "strict": Cell("numpy,strict,test", ("numpy", "array_api_strict"), ("array_api_strict",)),
    "torch": Cell("numpy,torch,test", ("numpy", "torch-cpu"), ("torch",), first=TORCH_CPU),
    "jax": Cell("numpy,jax,test", ("numpy", "jax-cpu"), ("jax",)),
    "dask": Cell("numpy,dask,test", ("numpy", "dask"), ("dask",)),
}
# The self-hosted GPU job (not in the CPU matrix): torch from PyPI is the CUDA build.
GPU = Cell(
    "numpy,cupy,test",
    ("numpy", "cupy", "torch-cuda", "jax-gpu"),
    ("cupy", "torch", "jax"),
    first=(f"torch=={TORCH_VERSION}",),
    also=("jax[cuda12]",),
)

# Asserts the cell's environment: its backends usable, the other frameworks not installed
# (so "numpy-only" really is). Arguments: backend names, then "--absent", module names.
PROBE = """
import importlib.util, sys
from attnspec.backends import get
args = sys.argv[1:]
cut = args.index("--absent")
problems = [get(n).reason or n for n in args[:cut] if not get(n).available]
problems += [m + ": installed, but this cell is without it" for m in args[cut + 1:]
             if importlib.util.find_spec(m) is not None]
sys.exit("\\n".join(problems) or None)
"""

nox.options.sessions = [
    "lint", *(f"tests-{name}" for name in CELLS), "check", "package", "docs"]


def _reports(session: nox.Session) -> list[str]:
    """``--json/--html/--markdown`` into a fresh ``reports/<session name>/``."""
    out = HERE / "reports" / session.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return [
        "--json", str(out / "conformance-report.json"),
        "--html", str(out / "conformance-report.html"),
        "--markdown", str(out / "conformance-report.md"),
    ]


def _run_cell(session: nox.Session, cell: Cell, pytest_args: tuple[str, ...] = ()) -> None:
    if cell.first:
        session.install(*cell.first)
    session.install("-e", f".[{cell.extras}]")
    if cell.also:
        session.install(*cell.also)
    absent = [m for m in FRAMEWORKS if m not in cell.frameworks]
    # The test extra brings array-api-strict; a cell without it removes it again.
    if "array_api_strict" in absent:
        session.run("python", "-m", "pip", "uninstall", "-q", "-y", "array-api-strict")
    session.run("python", "-c", PROBE, *cell.backends, "--absent", *absent)
    try:
        # The conformance run of everything usable here, then the test suite (which runs
        # even when the check fails, so one CI run reports both).
        session.run("attnspec", "check", "--color", "never", *_reports(session))
    finally:
        session.run("python", "-m", "pytest", *pytest_args, *session.posargs)


def _tests_session(name: str, cell: Cell) -> None:
    def tests(session: nox.Session) -> None:
        _run_cell(session, cell)

    tests.__doc__ = f"CI cell {name}: conformance check + pytest with {', '.join(cell.backends)}"
    nox.session(name=f"tests-{name}", python=PYTHONS)(tests)


for _name, _cell in CELLS.items():
    _tests_session(_name, _cell)


@nox.session(name="tests-gpu")
def tests_gpu(session: nox.Session) -> None:
    """GPU job: CuPy, torch CUDA, JAX GPU (needs a CUDA machine; fails if they are unusable)."""
    backends = [arg for name in ("cupy", "torch-cuda", "jax-gpu") for arg in ("--backend", name)]
    _run_cell(session, GPU, tuple(backends))


@nox.session
def check(session: nox.Session) -> None:
    """Conformance run of every framework that installs without CUDA (as .ci/run does)."""
    session.install(*TORCH_CPU)
    session.install("-e", ".[all]")
    session.run("attnspec", "check", "--color", "never", *_reports(session), *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against torch SDPA and JAX: python benchmarks/run.py --quick."""
    session.install(*TORCH_CPU)
    session.install("-e", ".[bench,torch,jax]")
    session.run("python", "benchmarks/run.py", *(session.posargs or ["--quick"]))


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, warnings as errors: mkdocs build --strict (into build/site)."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the repository."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".", *session.posargs)


@nox.session
def package(session: nox.Session) -> None:
    """sdist and wheel into dist/ (python -m build), then the wheel in a fresh environment."""
    session.install("build>=1")
    shutil.rmtree(HERE / "dist", ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", "dist", ".")
    session.run("bash", ".ci/check_wheel", external=True)
