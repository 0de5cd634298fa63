"""mypy, strict (``[tool.mypy]`` in pyproject.toml) over the whole package - the library,
``attnspec.backends`` and ``attnspec.conformance`` (``.ci/typecheck``): no errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict_is_clean():
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the test extra: pip install -e '.[test]')")
    run = subprocess.run([sys.executable, str(ROOT / ".ci" / "typecheck")], cwd=ROOT,
                         capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success: no issues found" in run.stdout
    checked = int(run.stdout.split("no issues found in ", 1)[1].split()[0])
    modules = [p for d in ("attnspec", "backends", "conformance") for p in (ROOT / d).rglob("*.py")]
    assert checked == len(modules), f"mypy checked {checked} files; the package has {len(modules)}"


def test_mypy_config_is_strict_on_the_library():
    text = (ROOT / "pyproject.toml").read_text()
    config = text.split("\n[tool.mypy]\n", 1)[1].split("\n[", 1)[0]
    assert "strict = true" in config
    assert 'files = ["attnspec"]' in config
