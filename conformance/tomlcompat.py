"""TOML reading on every supported Python: ``tomllib`` from 3.11, the ``tomli`` backport on
3.10. Capabilities and xfail files are TOML; everything else the suite reads is not, so the
backport stays optional and each caller says what the missing module costs."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

__all__ = ["tomllib"]


def tomllib() -> ModuleType | None:
    """The TOML reader module (``load``, ``loads``, ``TOMLDecodeError``), ``None`` without
    one."""
    if sys.version_info >= (3, 11):
        import tomllib as reader

        return reader
    try:
        # By name: mypy checks for Python 3.10, where the backport may not be installed.
        return importlib.import_module("tomli")
    except ImportError:
        return None
