"""The call object: argument validation returns one frozen
:class:`attnspec._call.AttentionCall` that routing, native dispatch and both portable
paths take, and :func:`attnspec.native_plan` binds its options through the public call's
own signature, so the two cannot drift apart."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import attnspec
from attnspec import _call, _namespace
from attnspec._call import AttentionCall, portable_only
from attnspec.attention import bind

_PUBLIC = inspect.signature(attnspec.scaled_dot_product_attention)
#: Fields validation adds that are not parameters of the public call.
_DERIVED = {"shape", "device"}


def _arrays(xb, rng, dtype="float64"):
    dtype = dtype if dtype in xb.dtypes else "float32"
    q = xb.from_numpy(rng.standard_normal((2, 2, 3, 4)), dtype)
    k = xb.from_numpy(rng.standard_normal((2, 1, 5, 4)), dtype)
    v = xb.from_numpy(rng.standard_normal((2, 1, 5, 2)), dtype)
    return q, k, v


def _options(xb, rng):
    """Every option of the public call set to something valid (besides the defaults)."""
    mask = xb.from_numpy(rng.standard_normal((3, 5)) > -0.5)
    return [
        {},
        {"causal": True, "alignment": "lower_right", "scale": 0.5},
        {"mask": mask, "softcap": 20.0, "window": (1, None), "kv_lengths": [5, 3],
         "q_lengths": 2, "return_lse": True, "chunk_size": 2},
        {"bias": xb.from_numpy(rng.standard_normal((1, 3, 5)), "float32" if "float64"
                               not in xb.dtypes else "float64"),
         "dropout_mask": mask, "dropout_p": 0.25, "return_weights": True, "chunk_size": 0},
    ]


def _recording(monkeypatch):
    """Record every mapping handed to ``attention_call`` and the call it returned."""
    seen = []
    original = _call.attention_call

    def recorder(arguments):
        call = original(arguments)
        seen.append((dict(arguments), call))
        return call

    monkeypatch.setattr(_call, "attention_call", recorder)
    return seen


def test_every_public_option_is_a_field_of_the_call():
    fields = {f.name for f in dataclasses.fields(AttentionCall)}
    assert set(_PUBLIC.parameters) == fields - _DERIVED
    assert set(inspect.signature(bind).parameters) >= {"query", "key", "value"}


def test_the_call_is_frozen(xb, rng):
    q, k, v = _arrays(xb, rng)
    call = _call.attention_call(bind(q, k, v))
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.causal = True  # type: ignore[misc]


def test_public_call_and_native_plan_bind_identically(xb, rng, monkeypatch):
    """The public call's arguments (its ``locals()``) and native_plan's (bound through the
    public signature) are the same mapping, value for value, and validate to equal calls."""
    q, k, v = _arrays(xb, rng)
    for options in _options(xb, rng):
        seen = _recording(monkeypatch)
        attnspec.scaled_dot_product_attention(q, k, v, implementation="auto", **options)
        attnspec.native_plan(q, k, v, **options)
        (public, public_call), (planned, plan_call) = seen
        assert public.keys() == planned.keys() == _PUBLIC.parameters.keys()
        for name in public:
            assert public[name] is planned[name] or public[name] == planned[name], name
        for field in dataclasses.fields(AttentionCall):
            a, b = getattr(public_call, field.name), getattr(plan_call, field.name)
            if a is b:
                continue
            if _namespace.is_array(a):  # converted lengths are new arrays each time
                assert _namespace.is_array(b), field.name
                assert a.shape == b.shape, field.name
            else:
                assert a == b, field.name
        monkeypatch.undo()


def test_bind_fills_the_public_defaults(xb, rng):
    q, k, v = _arrays(xb, rng)
    arguments = bind(q, k, v, causal=True)
    assert arguments["causal"] is True
    for name, parameter in _PUBLIC.parameters.items():
        if parameter.default is not inspect.Parameter.empty and name != "causal":
            assert arguments[name] == parameter.default, name
    with pytest.raises(TypeError):
        bind(q, k, v, return_weight=True)


def test_portable_only_options_in_the_order_native_plan_reports_them(xb, rng):
    q, k, v = _arrays(xb, rng)
    call = _call.attention_call(bind(q, k, v, softcap=2.0, window=(1, 1),
                                         return_lse=True))
    assert portable_only(call) == "softcap"
    # A window that masks nothing is no window: the kernels may still take the call.
    unbounded = _call.attention_call(bind(q, k, v, window=(None, None)))
    assert unbounded.window is None
    assert portable_only(unbounded) is None
    plain = _call.attention_call(bind(q, k, v))
    assert portable_only(plain) is None
    assert attnspec.native_plan(q, k, v, window=(None, None)) == attnspec.native_plan(q, k, v)
    assert "softcap=" in attnspec.native_plan(q, k, v, softcap=2.0, window=(1, 1)).reason


def test_native_plan_checks_implementation_before_unknown_options(xb, rng):
    q, k, v = _arrays(xb, rng)
    with pytest.raises(ValueError, match="implementation"):
        attnspec.native_plan(q, k, v, implementation="fast", return_weight=True)
    with pytest.raises(TypeError, match=r"native_plan\(\).*return_weight"):
        attnspec.native_plan(q, k, v, return_weight=True)


def test_device_kind_of_arrays_agrees_with_the_backend(xb, rng):
    """attnspec's framework-free answer for an array is the backend's own answer."""
    q, _, _ = _arrays(xb, rng)
    assert _namespace.device_kind(q) == xb.device_kind() == xb.device_kind(q)


@pytest.mark.parametrize(("device", "kind"), [
    ("cpu", "host"), ("cuda", "accelerator"), ("cuda:1", "accelerator"), ("gpu", "accelerator"),
    ("TFRT_CPU_0", "host"), ("CPU_DEVICE", "host"), ("mps", "accelerator"), (None, "host"),
])
def test_device_kind_of_device_names(device, kind):
    assert _namespace.device_kind(device) == kind
