"""Doctests of the packages that pytest does not collect by path (``backends/`` and
``conformance/`` install under ``attnspec.``, so they are run through their import names)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import attnspec.backends
import attnspec.conformance

MODULES = [
    name
    for package in (attnspec.backends, attnspec.conformance)
    for name in [package.__name__]
    + [m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
]


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctests failed in {name}"
