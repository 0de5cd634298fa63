"""CONTRIBUTING.md stays true: every file it names exists, and the pre-commit hooks run the
checks CI runs (ruff, .ci/typecheck)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_file_contributing_names_exists():
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:attnspec|conformance|backends|tests|docs|\.ci)/[\w./-]+)`",
                           text))
    assert len(named) >= 20
    missing = sorted(p for p in named if "<" not in p and not (ROOT / p).exists())
    assert not missing, missing
    short = set(re.findall(r"`(\w+\.py)`", text))  # "rules.py, claims.py": in conformance/
    homes = ("conformance", "conformance/adapters", "attnspec", "backends", "tests")
    lost = sorted(n for n in short if not any((ROOT / h / n).exists() for h in homes))
    assert not lost, lost


def test_pre_commit_runs_what_ci_runs():
    config = (ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in ("ruff check", "python .ci/typecheck"):
        assert f"entry: {command}" in config
        assert command in ci


def test_the_all_extra_installs_what_the_examples_import():
    """`pip install -e ".[all]"` (the README's set-up) is enough to run every example: each
    third-party module an example imports comes with the `all` extra (matplotlib was
    missing for examples/attention_heatmaps.py)."""
    import ast
    import sys

    from attnspec.conformance.tomlcompat import tomllib

    toml = tomllib()
    if toml is None:
        pytest.skip("no TOML reader (Python < 3.11 without tomli)")
    project = toml.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]

    def closure(name: str) -> set[str]:
        names: set[str] = set()
        for requirement in extras[name]:
            dist = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()
            if dist == "attnspec":
                for inner in re.search(r"\[(.*)\]", requirement).group(1).split(","):
                    names |= closure(inner.strip())
            else:
                names.add(dist)
        return names

    installed = closure("all") | {d.split(">")[0].lower() for d in project["dependencies"]}
    module_to_dist = {"dask": "dask", "distributed": "distributed", "jax": "jax",
                      "matplotlib": "matplotlib", "numpy": "numpy", "torch": "torch",
                      "array_api_compat": "array-api-compat",
                      "array_api_strict": "array-api-strict"}
    for path in sorted((ROOT / "examples").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("attnspec", "__future__"):
                    continue
                assert top in module_to_dist, f"{path.name}: imports {top}: map it here"
                assert module_to_dist[top] in installed, (
                    f"{path.name} imports {top}, which `.[all]` does not install")
