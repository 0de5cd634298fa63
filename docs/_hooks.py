"""MkDocs hooks of the documentation site (mkdocs.yml ``hooks:``).

``on_config`` mirrors the installed package layout for mkdocstrings: ``attnspec/`` with
``backends/`` and ``conformance/`` as its subpackages ``attnspec.backends`` and
``attnspec.conformance`` (pyproject.toml's ``package-dir``), as symlinks under
``build/docs-api/`` (griffe reads sources, and does not follow setuptools' editable
mapping of subpackages). It also drops the nav entries of ``extra.optional_pages`` whose
file does not exist (pages written by other parts of the project, so that a checkout
without one still builds strictly); every other nav entry must exist, or
``mkdocs build --strict`` fails.

``on_page_content`` renders the Sphinx roles of the docstrings (``:func:`~a.b``` and the
like, which mkdocstrings leaves as text) as plain code, the way Sphinx shows them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

#: Subpackage -> its source folder, relative to the repository root (pyproject.toml).
SUBPACKAGES = {"backends": "backends", "conformance": "conformance"}


_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):<code>(~?)([^<]*)</code>")


def _role(match: re.Match[str]) -> str:
    tilde, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(_role, html)


def _prune(nav: Any, missing: set[str]) -> Any:
    if isinstance(nav, list):
        kept = [_prune(item, missing) for item in nav]
        return [item for item in kept if item is not None]
    if isinstance(nav, dict):
        (title, target), = nav.items()
        pruned = _prune(target, missing)
        return None if pruned is None or pruned == [] else {title: pruned}
    return None if nav in missing else nav


def _link_tree(source: Path, target: Path) -> None:
    """Real folders, symlinked files (griffe does not descend into symlinked folders)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name == "__pycache__":
            continue
        if entry.is_dir():
            _link_tree(entry, target / entry.name)
        else:
            os.symlink(entry.resolve(), target / entry.name)


def _mirror(root: Path, target: Path) -> None:
    """``target/attnspec``: ``attnspec/`` with the subpackages in their installed places."""
    if target.exists():
        shutil.rmtree(target)
    _link_tree(root / "attnspec", target / "attnspec")
    for name, folder in SUBPACKAGES.items():
        _link_tree(root / folder, target / "attnspec" / name)


def on_config(config: Any) -> Any:
    root = Path(config["config_file_path"]).resolve().parent
    _mirror(root, root / "build" / "docs-api")
    docs = Path(config["docs_dir"])
    optional = config["extra"].get("optional_pages", [])
    missing = {page for page in optional if not (docs / page).is_file()}
    if missing and config["nav"]:
        config["nav"] = _prune(config["nav"], missing)
    return config


# Also when MkDocs imports this hook, before any plugin starts: mkdocstrings fixes its
# search paths at start-up and drops one that does not exist yet, so on a fresh checkout
# the mirror made in on_config alone came too late (the API pages then failed to build).
_mirror(Path(__file__).resolve().parent.parent,
        Path(__file__).resolve().parent.parent / "build" / "docs-api")
