"""Packaging: ``python -m build`` makes an sdist and a wheel, the wheel works on its own in a
fresh virtual environment, the version has one source and the changelog records it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from pathlib import Path

import pytest

import attnspec

#: A slow suite: `python -m pytest -m slow` (CI runs it; the default run leaves it out).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
VERSION = attnspec.__version__


def _tomllib():
    """tomllib (Python 3.11+), or tomli, its backport (a pytest dependency before 3.11)."""
    try:
        import tomllib
    except ImportError:
        return pytest.importorskip("tomli", reason="no TOML parser: Python < 3.11 without tomli")
    return tomllib


def _pyproject() -> dict:
    tomllib = _tomllib()
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """sdist and wheel from ``python -m build`` (without build isolation: the build backend,
    setuptools, is in the test extra, so no index is needed)."""
    for module in ("build", "setuptools"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (it is in the test extra: "
                        "pip install -e .[test])")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_build_makes_sdist_and_wheel_of_this_version(dist):
    assert dist["sdist"].name == f"attnspec-{VERSION}.tar.gz"
    assert dist["wheel"].name == f"attnspec-{VERSION}-py3-none-any.whl"


def test_wheel_contents(dist):
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = set(whl.namelist())
        metadata = whl.read(f"attnspec-{VERSION}.dist-info/METADATA").decode()
        entry_points = whl.read(f"attnspec-{VERSION}.dist-info/entry_points.txt").decode()
    for name in ("attnspec/__init__.py", "attnspec/py.typed", "attnspec/backends/__init__.py",
                 "attnspec/conformance/cli.py", "attnspec/conformance/report.schema.json",
                 "attnspec/conformance/adapters/__init__.py"):
        assert name in names
    # Only the attnspec package: no top-level backends/, conformance/ or tests/.
    assert {n.split("/")[0] for n in names} == {"attnspec", f"attnspec-{VERSION}.dist-info"}
    assert re.search(rf"^Version: {re.escape(VERSION)}$", metadata, re.M)
    assert "attnspec = attnspec.conformance.cli:main" in entry_points


def test_sdist_carries_tests_docs_and_changelog(dist):
    with tarfile.open(dist["sdist"]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md", "noxfile.py",
                 "docs/spec.md", "docs/ci.md", "tests/conftest.py", "tests/reference.py",
                 "attnspec/__init__.py", "backends/__init__.py", "conformance/cli.py"):
        assert name in names
    assert not [n for n in names if "__pycache__" in n or "/." in n or n.startswith(".")]


def test_wheel_in_a_fresh_virtual_environment_runs_attnspec_check(dist, tmp_path):
    """The wheel alone (plus its dependencies and NumPy) in a new environment, away from the
    checkout: ``attnspec check`` on a few cases passes and reports this version."""
    start = time.perf_counter()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)  # pip runs from here (pip --python)
    python = env_dir / "bin" / "python"
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    def pip(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                               "-q", *args], capture_output=True, text=True, timeout=300,
                              env=environ)

    # The dependencies from pip's configured index; without one the test cannot run.
    deps = pip("numpy", "array-api-compat", "threadpoolctl")
    if deps.returncode != 0:
        pytest.skip(f"cannot install NumPy into a fresh environment: {deps.stderr[-500:]}")
    install = pip("--no-index", str(dist["wheel"]))
    assert install.returncode == 0, install.stderr
    report = tmp_path / "report.json"
    check = subprocess.run(
        [env_dir / "bin" / "attnspec", "check", "attnspec[numpy]", "--select", "score/*",
         "--select", "causal-lower-right/*", "--select", "empty-rows/*", "--no-fingerprint",
         "--color", "never", "--json", str(report)],
        capture_output=True, text=True, timeout=300, env=environ, cwd=tmp_path,
    )
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["attnspec_version"] == VERSION
    assert [i["name"] for i in data["implementations"]] == ["attnspec[numpy]"]
    outcomes = [r["outcome"] for r in data["results"]]
    assert outcomes.count("pass") >= 15, outcomes
    assert set(outcomes) <= {"pass", "not-applicable"}, outcomes
    where = subprocess.run(
        [python, "-c", "import attnspec.conformance as c; print(c.__file__)"],
        capture_output=True, text=True, env=environ, cwd=tmp_path,
    )
    assert Path(where.stdout.strip()).is_relative_to(env_dir), where.stdout + where.stderr
    print(f"fresh-environment install and check: {time.perf_counter() - start:.1f} s")


def test_version_has_one_source(dist):
    project = _pyproject()["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    dynamic = _pyproject()["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "attnspec.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", VERSION)
    assert f"attnspec-{VERSION}" in dist["wheel"].name  # what the build read


def test_changelog_follows_keep_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert "https://keepachangelog.com/" in text
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[0] == "[Unreleased]"
    released = []
    for heading in headings[1:]:
        match = re.fullmatch(r"\[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})( \[YANKED\])?", heading)
        assert match, f"release heading {heading!r}: want '[X.Y.Z] - YYYY-MM-DD'"
        released.append(tuple(map(int, match.group(1).split("."))))
    assert released == sorted(released, reverse=True), "newest release first"
    kinds = set(re.findall(r"^### (.+)$", text, re.M))
    assert kinds
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    # The version in attnspec/__init__.py is the newest release, or the one being prepared.
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## ", 1)[0]
    if released and ".".join(map(str, released[0])) == VERSION:
        return
    assert f"released as {VERSION}" in unreleased, (
        f"CHANGELOG.md: no release {VERSION} and [Unreleased] does not announce it")
