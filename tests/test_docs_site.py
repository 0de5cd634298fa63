"""The documentation site (mkdocs.yml, docs/): it builds with warnings as errors, its Python
blocks run, and the compliance page generator works.

The build needs the ``docs`` extra (``pip install -e ".[docs]"``); without MkDocs the build
test skips and says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FRAMEWORK = re.compile(r"^import (\w+)", re.M)


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_compliance", DOCS / "gen_compliance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _missing_doc_tools() -> str | None:
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install -e '.[docs]')"
        except ModuleNotFoundError:
            return f"{module} is not installed (pip install -e '.[docs]')"
    return None


def test_site_builds_strict(tmp_path):
    reason = _missing_doc_tools()
    if reason:
        pytest.skip(reason)
    site = tmp_path / "site"
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # The API reference is generated from the docstrings ...
    api = (site / "api" / "index.html").read_text()
    for name in ("attention.scaled_dot_product_attention", "mha.multi_head_attention",
                 "softmax.logsumexp", "masks.causal_mask", "layout.merge_heads"):
        assert f'id="attnspec.{name}"' in api, name
    assert "Scaled dot-product attention as defined by" in api  # a docstring's first line
    conformance_api = (site / "api-conformance" / "index.html").read_text()
    assert 'id="attnspec.conformance.api.run"' in conformance_api
    assert "parse_capabilities" in conformance_api
    assert "register" in (site / "api-native" / "index.html").read_text()
    # ... Sphinx roles are rendered as code, not left as text ...
    assert not re.search(r":(func|class|mod|meth):<code>", api + conformance_api)
    # ... the worked examples include the example files and the committed image.
    examples = (site / "examples" / "index.html").read_text()
    assert "encoder_block" in examples
    assert "images/attention_heatmaps.png" in examples
    assert (site / "images" / "attention_heatmaps.png").is_file()
    assert "repeat_kv_heads" in (site / "walkthrough" / "index.html").read_text()
    for page in ("spec", "guide", "errors", "conformance", "performance", "compliance"):
        assert (site / page / "index.html").is_file(), page


def test_every_page_is_in_the_nav():
    """A page left out of mkdocs.yml's nav would only be a warning there; here it fails."""
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:\n", 1)[1]
    listed = set(re.findall(r"([\w-]+\.md)", nav))
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages <= listed, sorted(pages - listed)


def _blocks(page: str) -> list[str]:
    text = (DOCS / page).read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "--8<--" not in b]


PAGES_WITH_CODE = ["index.md", "guide.md", "walkthrough.md"]


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_python_blocks_of_the_docs_run(page, monkeypatch):
    blocks = _blocks(page)
    assert blocks, f"{page} has no Python block"
    monkeypatch.syspath_prepend(str(ROOT))  # `from examples.buggy_kernel import ...`
    for block in blocks:
        for module in FRAMEWORK.findall(block):
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"{module}: not installed")
        exec(compile(block, str(DOCS / page), "exec"), {"__name__": "docs_example"})


# --- The compliance page ----------------------------------------------------------------------


def test_gen_compliance_on_a_tiny_real_run(tmp_path):
    out = tmp_path / "compliance.md"
    run = subprocess.run(
        [sys.executable, str(DOCS / "gen_compliance.py"), "-o", str(out), "--",
         "attnspec[numpy]", "--select", "softmax*", "--dtype", "float32", "--in-process",
         "--no-fingerprint"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    page = out.read_text()
    assert page.startswith("# Compliance matrix\n")
    assert "| rule | `attnspec[numpy]` |" in page
    rows = dict(re.findall(r"^\| \[(SMX-\d)\]\(spec\.md\) \| (\S+) \|$", page, re.M))
    assert rows, page
    assert set(rows.values()) == {"✓"}, rows
    counts = re.search(r"^\| `attnspec\[numpy\]` \| (\d+) \| 0 \| 0 \| 0 \| 0 \| 0 \|", page, re.M)
    assert counts, page
    assert int(counts.group(1)) > 0
    assert "None: every applicable case passed." in page


def _result(impl, outcome, rules, case="c/v/float32", message=""):
    return {"case_id": case, "rules": rules, "implementation": impl, "outcome": outcome,
            "message": message}


def test_gen_compliance_matrix_shows_the_worst_outcome():
    gen = _load_generator()
    report = {
        "attnspec_version": "0", "created": "2030-01-01T00:00:00", "status": "complete",
        "environment": {"python": "3.x", "libraries": {"numpy": "2"}},
        "implementations": [
            {"name": "a", "fingerprint": {"mask_polarity": "keep"}, "unavailable": None},
            {"name": "b", "fingerprint": {"mask_polarity": "drop"}, "unavailable": None},
            {"name": "gone", "fingerprint": {}, "unavailable": "not installed"},
        ],
        "results": [
            _result("a", "pass", ["R-1"]), _result("a", "fail", ["R-1", "R-2"], "x/y/z", "boom"),
            _result("a", "pass", ["R-3"]),
            _result("b", "xfail", ["R-1"]), _result("b", "pass", ["R-1"]),
            _result("b", "not-applicable", ["R-2"]), _result("b", "error", ["R-3"], "e/f/g", "E!"),
        ],
        "stale_xfails": [],
    }
    page = gen.render(report, "attnspec check")
    assert "| [R-1](spec.md) | ✗ | x |" in page
    assert "| [R-2](spec.md) | ✗ | – |" in page
    assert "| [R-3](spec.md) | ✓ | E |" in page
    assert "| `a` | 2 | 1 | 0 | 0 | 0 | 0 | 0 | 0 |" in page
    assert "| `b` | 1 | 0 | 1 | 0 | 0 | 1 | 1 | 0 |" in page
    assert "`gone` (not installed)" in page
    assert "| `b` | drop |" in page
    assert "- **fail** `x/y/z` (a): boom" in page
    assert "- **error** `e/f/g` (b): E!" in page


def test_committed_compliance_page_is_generated_from_a_default_run():
    page = (DOCS / "compliance.md").read_text()
    assert "Generated by docs/gen_compliance.py" in page
    assert re.search(r"from one run of\s+`attnspec check` \(\d+ results", page), page[:600]
    for impl in ("attnspec[numpy]", "attnspec[array_api_strict]"):
        assert f"`{impl}`" in page, impl
    # Every rule the catalog grades has a row.
    from attnspec.conformance.catalog import catalog

    rules = {rule for case in catalog() for rule in case.rules}
    rows = set(re.findall(r"^\| \[([A-Z0-9-]+)\]\(spec\.md\)", page, re.M))
    assert rules <= rows, sorted(rules - rows)


def test_docs_extra_lists_the_build_tools():
    text = (ROOT / "pyproject.toml").read_text()
    extra = re.search(r"^docs = (\[.*\])$", text, re.M)
    assert extra, "pyproject.toml has no docs extra"
    names = {re.split(r"[<>=]", req)[0] for req in json.loads(extra.group(1))}
    assert {"mkdocs", "mkdocs-material", "mkdocstrings[python]", "matplotlib"} <= names


def test_generator_is_json_driven(tmp_path):
    """--report renders an existing JSON report without running anything."""
    gen = _load_generator()
    report = {"attnspec_version": "0", "created": "2030-01-01", "environment": {},
              "implementations": [{"name": "a", "fingerprint": {}, "unavailable": None}],
              "results": [_result("a", "pass", ["R-1"])], "stale_xfails": []}
    source = tmp_path / "r.json"
    source.write_text(json.dumps(report))
    out = tmp_path / "page.md"
    assert gen.main(["--report", str(source), "-o", str(out)]) == 0
    assert "| [R-1](spec.md) | ✓ |" in out.read_text()
