"""Shared pytest configuration: backend selection, capability markers, seeded RNG.

* ``xb`` -- a :class:`attnspec.backends.Backend`, parametrised over every registered
  backend (test ids are the backend names). Backends that are not usable on this machine
  skip with the reason the registry gives.
* ``--backend NAME`` (repeatable) restricts ``xb`` to the named backends.
* ``@pytest.mark.needs("autograd", ...)`` skips a test when the backend in ``xb`` lacks one
  of the capabilities, with the reason ``"<backend>: no <capability>"``.
* ``rng`` -- a :class:`numpy.random.Generator` seeded from the test's node id, so every test
  sees the same numbers on every run and independently of test order.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from attnspec.backends import Backend, all_backends, get

try:
    import jax
except ImportError:  # JAX is optional; its backends then report "not installed".
    pass
else:
    # Enabled before any test creates a JAX array: the spec's golden runs are float64.
    jax.config.update("jax_enable_x64", True)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--backend``."""
    names = ", ".join(b.name for b in all_backends())
    parser.addoption(
        "--backend",
        action="append",
        default=None,
        metavar="NAME",
        help=f"run backend-parametrised tests only on NAME (repeatable); one of: {names}",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Reject an unknown ``--backend`` name before collection starts."""
    _selected_backends(config)


def _selected_backends(config: pytest.Config) -> list[Backend]:
    names = config.getoption("--backend")
    if not names:
        return all_backends()
    selected = []
    for name in names:
        try:
            backend = get(name)
        except ValueError as exc:
            raise pytest.UsageError(f"--backend: {exc}") from None
        if backend not in selected:
            selected.append(backend)
    return selected


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the ``xb`` fixture over the selected backends."""
    if "xb" not in metafunc.fixturenames:
        return
    # A test that parametrises ``xb`` itself keeps its own values.
    for marker in metafunc.definition.iter_markers("parametrize"):
        argnames = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if isinstance(argnames, str):
            argnames = [n.strip() for n in argnames.split(",")]
        if "xb" in argnames:
            return
    backends = _selected_backends(metafunc.config)
    metafunc.parametrize("xb", backends, ids=[b.name for b in backends], indirect=True)


def _required_capabilities(node: pytest.Item) -> list[str]:
    caps: list[str] = []
    for marker in node.iter_markers("needs"):
        caps.extend(marker.args)
    return caps


@pytest.fixture
def xb(request: pytest.FixtureRequest) -> Backend:
    """The backend under test; skips when it is unavailable or lacks a needed capability."""
    backend = getattr(request, "param", None)
    if backend is None:
        pytest.skip("no backend selected")
    if isinstance(backend, str):
        backend = get(backend)
    if not backend.available:
        pytest.skip(backend.reason or f"{backend.name}: unavailable")
    for capability in _required_capabilities(request.node):
        if not backend.has(capability):
            pytest.skip(f"{backend.name}: no {capability}")
    return backend


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A NumPy generator seeded from the test's node id (stable across runs and orderings)."""
    seed = zlib.crc32(request.node.nodeid.encode("utf-8"))
    return np.random.default_rng(seed)
