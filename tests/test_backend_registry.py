"""Backend knowledge lives in the backend: each backend says its device kind and its autodiff
(vjp) hook; :func:`attnspec.backends.device_kind` is the one answer to "host or
accelerator"; backends are found as modules of the package and through the
``attnspec.backends`` entry-point group; ``backend=None`` means "no backend chosen"."""

from __future__ import annotations

import ast
import importlib
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import attnspec.backends as registry
from attnspec.backends import (
    ACCELERATOR,
    HOST,
    Backend,
    NotDifferentiableError,
    all_backends,
    device_kind,
    get,
    names,
)
from attnspec.conformance import limits
from attnspec.conformance.adapters import _device_matches, resolve
from attnspec.conformance.adapters.base import has_autodiff, on_host

KINDS = {"numpy": HOST, "array_api_strict": HOST, "torch-cpu": HOST,
         "torch-cuda": ACCELERATOR, "jax-cpu": HOST, "jax-gpu": ACCELERATOR,
         "cupy": ACCELERATOR, "dask": HOST}
ROOT = Path(__file__).resolve().parents[1]


def test_builtins_are_found_in_their_fixed_order():
    assert names() == list(KINDS)


@pytest.mark.parametrize("name", list(KINDS))
def test_each_backend_says_its_device_kind(name):
    backend = get(name)
    assert backend.device_kind() == device_kind(name) == KINDS[name]
    assert on_host(name) is (KINDS[name] == HOST)
    assert limits.on_gpu(name) is (KINDS[name] == ACCELERATOR)
    # A host backend asked about an accelerator device says so (``--device cuda``).
    assert backend.device_kind("cuda") == ACCELERATOR
    assert backend.device_kind("cpu") == KINDS[name]
    for device, kind in (("cpu", HOST), ("cuda", ACCELERATOR), ("gpu", ACCELERATOR)):
        assert backend.runs_on(device) is (kind == KINDS[name])
        assert _device_matches(name, device) is (kind == KINDS[name])
    assert not backend.runs_on("tpu")


@pytest.mark.parametrize("name", list(KINDS))
def test_each_backend_says_whether_it_differentiates(name):
    backend = get(name)
    assert backend.has_autodiff is has_autodiff(name) is ("autograd" in
                                                          backend.static_capabilities)


def test_device_kind_without_a_backend():
    assert device_kind() == HOST
    assert device_kind(None, "cuda") == ACCELERATOR
    assert device_kind(get("numpy"), np.zeros(2)) == HOST
    assert limits.on_gpu("not-a-backend", "gpu")


@pytest.mark.needs("autograd")
def test_vjp_hook_differentiates(xb):
    x = xb.from_numpy(np.array([1.0, 2.0, -3.0]), "float32")
    y = xb.from_numpy(np.array([0.5, 0.5, 0.5]), "float32")
    cot = xb.from_numpy(np.array([1.0, 10.0, 100.0]), "float32")
    once = xb.vjp(lambda a, b: a * a, [x, y], cot)
    for _ in range(2):  # every run computes it again
        out, (gx, gy) = once()
        np.testing.assert_allclose(xb.to_numpy(out), [1.0, 4.0, 9.0])
        np.testing.assert_allclose(xb.to_numpy(gx), [2.0, 40.0, -600.0])
        np.testing.assert_array_equal(xb.to_numpy(gy), 0.0)  # unused input: zeros


def test_vjp_hook_says_when_there_is_nothing_to_differentiate():
    torch = get("torch-cpu")
    if not torch.available:
        pytest.skip(torch.reason)
    x = torch.from_numpy(np.ones(3))
    once = torch.vjp(lambda a: a.detach(), [x], torch.from_numpy(np.ones(3)))
    with pytest.raises(NotDifferentiableError, match="no backward to grade"):
        once()


def test_a_backend_without_autodiff_has_no_vjp():
    with pytest.raises(NotImplementedError, match="no autodiff"):
        get("numpy").vjp(lambda a: a, [np.ones(2)], np.ones(2))


def test_none_means_no_backend_chosen():
    assert resolve("attnspec").name == "attnspec[numpy]"
    assert resolve("attnspec", backend=None, device="cpu").name == "attnspec[numpy]"
    assert resolve("torch.sdpa", backend=None).backend_name == "torch-cpu"
    assert resolve("torch.sdpa", backend=None, device="cuda").backend_name == "torch-cuda"
    assert resolve("attnspec[jax-cpu]", backend=None).backend_name == "jax-cpu"
    with pytest.raises(ValueError, match="device"):
        resolve("scipy.softmax", backend=None, device="cuda")


def test_autodiff_and_base_import_each_other_no_more():
    """``adapters/_autodiff.py`` (the gradient glue) does not import ``adapters/base.py``."""
    tree = ast.parse((ROOT / "conformance" / "adapters" / "_autodiff.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
            imported.update(f"{'.' * node.level}{alias.name}" for alias in node.names
                            if node.module is None)
    assert not {".base", "..adapters.base", "attnspec.conformance.adapters.base"} & imported


# -- entry points ---------------------------------------------------------------------------


PLUGIN = textwrap.dedent('''
    from attnspec.backends import ACCELERATOR, Backend


    class ToyBackend(Backend):
        kind = ACCELERATOR

        def __init__(self, name="toy-npu"):
            super().__init__(name, "toy")

        def _probe(self):
            return "toy-npu: no device"


    def backends():
        return [ToyBackend()]


    def taken():
        return [ToyBackend("numpy")]


    SINGLE = ToyBackend("toy-single")


    def broken():
        raise RuntimeError("boom")
''')


@pytest.fixture
def plugin_entry_points(tmp_path, monkeypatch):
    """A fresh registry that sees the entry points ``make(name, value)`` adds."""
    (tmp_path / "toy_attnspec_backend.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    points: list[metadata.EntryPoint] = []
    real = metadata.entry_points

    def entry_points(**kwargs):
        if kwargs.get("group") == registry.ENTRY_POINT_GROUP:
            return metadata.EntryPoints(points)
        return real(**kwargs)

    monkeypatch.setattr(registry.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_REGISTRY", None)

    def make(name, value):
        points.append(metadata.EntryPoint(name, value, registry.ENTRY_POINT_GROUP))

    yield make
    monkeypatch.setattr(registry, "_REGISTRY", None)


def test_a_backend_is_found_through_an_entry_point(plugin_entry_points):
    plugin_entry_points("toy", "toy_attnspec_backend:backends")
    plugin_entry_points("single", "toy_attnspec_backend:SINGLE")
    assert names() == [*KINDS, "toy-npu", "toy-single"]
    toy = get("toy-npu")
    assert isinstance(toy, Backend)
    assert not toy.available
    assert toy.reason == "toy-npu: no device"
    assert device_kind("toy-npu") == ACCELERATOR
    assert limits.on_gpu("toy-npu")
    assert [b.name for b in all_backends()][-2:] == ["toy-npu", "toy-single"]


def test_a_broken_or_clashing_entry_point_is_skipped_with_a_warning(plugin_entry_points):
    plugin_entry_points("broken", "toy_attnspec_backend:broken")
    plugin_entry_points("missing", "toy_attnspec_no_such_module:backends")
    plugin_entry_points("taken", "toy_attnspec_backend:taken")
    with pytest.warns(RuntimeWarning) as caught:
        found = names()
    assert found == list(KINDS)
    assert get("numpy").framework == "numpy"  # the built-in keeps its name
    messages = " ".join(str(w.message) for w in caught)
    assert "'broken'" in messages
    assert "'missing'" in messages
    assert "name is taken" in messages
