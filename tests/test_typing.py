"""mypy, strict on the library (``[tool.mypy]`` in pyproject.toml): no errors."""

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
    run = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success: no issues found" in run.stdout


def test_mypy_config_is_strict_on_the_library():
    text = (ROOT / "pyproject.toml").read_text()
    config = text.split("\n[tool.mypy]\n", 1)[1].split("\n[", 1)[0]
    assert "strict = true" in config
    assert 'files = ["attnspec"]' in config
