"""The README's usage examples run as written (each where its framework is present)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
FRAMEWORK = re.compile(r"^import (\w+)", re.M)


def _needs(block: str) -> str:
    return FRAMEWORK.findall(block)[0]


def _skip_reason(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"{module}: not installed"
    if module == "cupy":
        from attnspec.backends import get

        backend = get("cupy")
        return None if backend.available else backend.reason
    return None


def test_readme_has_an_example_per_backend():
    frameworks = {_needs(b) for b in BLOCKS}
    assert {"numpy", "torch", "jax", "cupy", "dask", "array_api_strict"} <= frameworks


@pytest.mark.parametrize("block", BLOCKS, ids=[_needs(b) for b in BLOCKS])
def test_readme_example_runs(block):
    reason = _skip_reason(_needs(block))
    if reason:
        pytest.skip(reason)
    exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
