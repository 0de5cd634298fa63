"""The adapters: every available built-in passes the default catalog within its declared
features, except exactly the cases its declared deviations cover (the suite's promise: a
correct implementation shows zero unexpected failures, and a framework's difference from the
spec is a measured, expected failure, never a hidden feature), the measured differences stay
measured, and
:func:`attnspec.conformance.adapters.resolve` finds built-ins and ``module:callable`` targets
with their capabilities.

Cases run in process here (the runner's worker processes are tested with the runner).
JAX compiles every new shape and Dask builds a graph per call, so adapters on those run one
case per catalog group; ``ATTNSPEC_ADAPTER_TESTS=full`` runs them on everything.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import attnspec
from attnspec.conformance.adapters import (
    NATIVE,
    ON_REQUEST,
    builtin_adapters,
    builtin_names,
    resolve,
)
from attnspec.conformance.adapters.user import UserAdapter
from attnspec.conformance.cases import Case, make_inputs
from attnspec.conformance.catalog import catalog, required_features
from attnspec.conformance.features import FEATURES, OPT_IN
from attnspec.conformance.golden import golden, naive
from attnspec.conformance.tolerance import grade

CASES = catalog()
FULL = os.environ.get("ATTNSPEC_ADAPTER_TESTS") == "full"
SLOW_FRAMEWORKS = ("jax", "dask")
#: Adapters that pay per call what a slow framework pays per shape (FlexAttention eager:
#: create_block_mask vmaps the mask over every position): one case per group here, all in
#: the main job (attnspec check).
SLOW_ADAPTERS = ("torch.flex_attention", "tinygrad.sdpa")

_REFERENCE: dict[str, tuple[dict, dict, dict]] = {}


def _reference(case: Case) -> tuple[dict, dict, dict]:
    """Inputs, golden and naive outputs of a case, computed once per test session."""
    if case.id not in _REFERENCE:
        inputs = make_inputs(case)
        if case.expect == "value":
            _REFERENCE[case.id] = (inputs, golden(case, inputs), naive(case, inputs))
        else:
            _REFERENCE[case.id] = (inputs, {}, {})
    return _REFERENCE[case.id]


def _outcome(adapter, case: Case) -> str | None:
    """``None`` when the adapter passes the case, else what went wrong."""
    inputs, want, ref = _reference(case)
    # As in the runner's workers: a RuntimeWarning (inf - inf on +inf input) is not an error.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if case.expect != "value":
            expected = getattr(builtins, case.expect)
            try:
                adapter.run(case, inputs)
            except expected:
                return None
            except Exception as exc:
                return f"raised {type(exc).__name__} ({exc}), expected {case.expect}"
            return f"did not raise {case.expect}"
        try:
            result = adapter.run(case, inputs)
        except Exception as exc:
            return f"raised {type(exc).__name__}: {exc}"
    verdict = grade(case, result.outputs, result.dtypes, want, ref)
    return None if verdict.passed else verdict.message


def _grade_all(adapter, cases) -> tuple[list[Case], list[str]]:
    """The cases graded, and what went other than declared: a failure no deviation covers,
    or a case a deviation covers that passed (strict, as the runner)."""
    ran, failures = [], []
    for case in cases:
        if adapter.not_applicable(case) is not None:
            continue
        ran.append(case)
        message = _outcome(adapter, case)
        deviation = next((d for d in adapter.deviations if d.matches(case)), None)
        if message is not None and deviation is None:
            failures.append(f"{case.id}: {message}")
        elif message is None and deviation is not None:
            failures.append(f"{case.id}: passed, but declared as a deviation "
                            f"({deviation.reason})")
    return ran, failures


def _deviates(adapter, case: Case) -> str:
    """Run a case a declared deviation covers; what went wrong (it must fail)."""
    assert adapter.not_applicable(case) is None
    assert any(d.matches(case) for d in adapter.deviations), case.id
    message = _outcome(adapter, case)
    assert message is not None, f"{case.id} passed: the deviation is out of date"
    return message


def _one_per_group(adapter, cases) -> list[Case]:
    """The first applicable case of every catalog group."""
    chosen: dict[str, Case] = {}
    for case in cases:
        group = case.id.split("/", 1)[0]
        if group not in chosen and adapter.not_applicable(case) is None:
            chosen[group] = case
    return list(chosen.values())


def _available(name: str):
    adapter = resolve(name)
    reason = adapter.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return adapter


def _case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


# ------------------------------------------------------------ built-ins pass their cases


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_adapter_has_no_failure_within_its_features(name):
    adapter = _available(name)
    slow = (adapter.backend.framework in SLOW_FRAMEWORKS or name in SLOW_ADAPTERS) and not FULL
    cases = _one_per_group(adapter, CASES) if slow else CASES
    ran, failures = _grade_all(adapter, cases)
    assert ran, f"{name}: no applicable case"
    assert not failures, f"{name}: {len(failures)} of {len(ran)} failed:\n" + "\n".join(failures)


#: Catalog groups an adapter must run (the features its translation exists for).
KEY_GROUPS = {
    "torch.sdpa": ["causal-upper-left", "causal-lower-right", "causal-lower-right-empty",
                   "gqa", "mask", "bias", "empty-rows", "shape", "accumulate", "extreme"],
    "torch.mha": ["mha"],
    "torch.flex_attention": ["mods", "segments", "positions", "alibi", "window", "kv-lengths",
                             "causal-lower-right", "softcap", "lse", "gqa"],
    "jax.dot_product_attention": ["gqa", "mask", "bias", "causal-upper-left", "window",
                                  "kv-lengths", "poison-scores", "lse"],
    "torch.softmax": ["softmax", "log-softmax", "logsumexp", "softmax-half",
                      "softmax-nonfinite"],
    "jax.softmax": ["softmax", "softmax-where", "log-softmax-where", "logsumexp-where"],
    "scipy.softmax": ["softmax", "log-softmax", "logsumexp", "softmax-nonfinite"],
    "onnxruntime.attention": ["gqa", "mask", "bias", "softcap", "causal-upper-left",
                              "causal-lower-right", "causal-lower-right-empty", "kv-lengths",
                              "weights", "empty-rows", "accumulate"],
}


@pytest.mark.parametrize("name", sorted(KEY_GROUPS))
def test_key_features_are_declared(name):
    adapter = _available(name)
    runs = {c.id.split("/", 1)[0] for c in CASES if adapter.not_applicable(c) is None}
    assert not sorted(set(KEY_GROUPS[name]) - runs)


def test_native_outputs_beyond_out():
    """lse and weights come back where the implementation gives them (and are graded)."""
    for name, case_id, names in [
        ("jax.dot_product_attention", "lse/b2.h4x2.q6.k9.d16/float32", {"out", "lse"}),
        ("jax.dot_product_attention", "lse/b2.h4x2.q6.k9.d16/bfloat16", {"out"}),
        ("onnxruntime.attention", "weights/b2.h4x2.q6.k9.d16.mask=dense/float32",
         {"out", "weights"}),
        ("torch.sdpa", "lse/b2.h4x2.q6.k9.d16/float32", {"out"}),
    ]:
        adapter = resolve(name)
        if adapter.unavailable() is not None:
            continue
        case = _case(case_id)
        assert set(adapter.run(case, _reference(case)[0]).outputs) == names, (name, case_id)


def test_torch_mha_causal_without_gqa():
    """The catalog's causal MHA case has GQA (not torch's); causal is checked here with
    Hq == Hkv, self- and cross-attention, 0 and 2 batch dims."""
    adapter = _available("torch.mha")
    cases = []
    for extra in ({"causal": True}, {"causal": True, "cross": True, "biases": True},
                  {"batch": []}, {"batch": [2, 3], "cross": True}):
        params = {"batch": [2], "lq": 5, "lk": 7, "embed": 16, "hq": 4, "hkv": 4, "dk": 4,
                  **extra}
        slug = ".".join(f"{k}={v}" for k, v in sorted(extra.items()))
        cases.append(Case(id=f"mha-extra/{slug}/float64", op="mha", rules=("MHA-1",),
                          dtype="float64", params=params,
                          features=required_features("mha", params, "float64")))
    ran, failures = _grade_all(adapter, cases)
    assert len(ran) == len(cases)
    assert not failures, failures


#: Option combinations the catalog does not hold, where adapters combine masks themselves
#: (torch and ONNX take one attn_mask; torch's causal forms do not combine with it).
COMBINATIONS = [
    {"mask": "dense", "causal": True},
    {"bias": "random", "causal": True, "alignment": "lower_right"},
    {"mask": "dense", "bias": "neg_inf", "causal": True, "alignment": "lower_right"},
    {"mask": "dense", "bias": "random"},
    {"mask": "dense", "kv_lengths": [9, 4], "causal": True},
    {"mask": "dense", "kv_lengths": [9, 5], "causal": True, "alignment": "lower_right"},
]


@pytest.mark.parametrize("name", ["torch.sdpa", "onnxruntime.attention"])
def test_mask_combinations(name):
    adapter = _available(name)
    cases = []
    for options in COMBINATIONS:
        params = {"batch": [2], "hq": 4, "hkv": 2, "lq": 6, "lk": 9, "dk": 16, "dv": 16,
                  **options}
        slug = ".".join(f"{k}={v}" for k, v in sorted(options.items()))
        cases.append(Case(id=f"combination/{slug}/float32", op="attention",
                          rules=("ATT-MASK-1",), dtype="float32", params=params,
                          features=required_features("attention", params, "float32")))
    ran, failures = _grade_all(adapter, cases)
    assert len(ran) >= 4
    assert not failures, failures


def test_flash_attn_declaration():
    """flash_attn cannot run here; its declaration is pinned to the documented profile."""
    adapter = resolve("flash_attn")
    assert adapter.backend_name == "torch-cuda"
    assert adapter.supported_dtypes == ("float16", "bfloat16")
    assert {"causal_lower_right", "window", "softcap", "gqa", "lse"} <= adapter.features
    assert not {"mask", "bias", "dv_ne_dk", "empty_rows", "dropout"} & adapter.features
    reason = adapter.unavailable()
    if reason is not None:
        assert reason.startswith(("flash_attn:", "torch-cuda:")), reason


def _fake_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                          window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                          deterministic=False, return_attn_probs=False):
    """flash_attn_func as documented (tokens first, bottom-right causal and window, -1 =
    unbounded, lse (B, H, Lq) float32), computed by attnspec on torch CPU."""
    import torch

    assert q.dtype in (torch.float16, torch.bfloat16)
    assert dropout_p == 0.0
    assert alibi_slopes is None or alibi_slopes.dtype == torch.float32
    window = None
    if tuple(window_size) != (-1, -1):
        window = tuple(None if w < 0 else w for w in window_size)
    out, lse = attnspec.scaled_dot_product_attention(
        *(attnspec.blhd_to_bhld(x) for x in (q, k, v)), scale=softmax_scale, causal=causal,
        window=window, alignment="lower_right", softcap=softcap or None,
        alibi_slopes=alibi_slopes, return_lse=True)
    return attnspec.bhld_to_blhd(out), lse, None


def test_flash_attn_translation_on_a_stand_in(monkeypatch):
    """The adapter's translation (layout, window, lse), checked against a stand-in with
    flash_attn_func's documented semantics on torch CPU: flash-attention itself needs a
    CUDA device."""
    _available("torch.sdpa")
    import types

    from attnspec.conformance.adapters.flash_attn import FlashAttnAdapter

    class OnCpu(FlashAttnAdapter):
        backends = ("torch-cpu",)
        requires = ()

    monkeypatch.setitem(sys.modules, "flash_attn",
                        types.SimpleNamespace(flash_attn_func=_fake_flash_attn_func))
    adapter = OnCpu()
    # The catalog's window and batch-shape cases are float32 only: add bfloat16 copies.
    extra = [dataclasses.replace(c, id=c.id.rsplit("/", 1)[0] + "/bfloat16", dtype="bfloat16")
             for c in _groups("window", "shape") if c.dtype == "float32"]
    ran, failures = _grade_all(adapter, CASES + extra)
    groups = {c.id.split("/", 1)[0] for c in ran}
    assert groups >= {"causal-lower-right", "window", "softcap", "gqa", "lse", "shape"}
    assert {"batch0", "batch2", "window", "causal_lower_right"} <= {
        f for c in ran for f in c.features}
    assert not failures, failures


# ------------------------------------------------- measured differences stay measured
# Each is a feature the adapter does not declare; when the implementation changes, the
# pin fails and the feature can be declared. (torch/JAX pins: test_native_agreement.py.)


def _forced(adapter, case: Case) -> str | None:
    """Run a case outside the adapter's declaration (dtype and op still respected)."""
    assert adapter.not_applicable(case) is not None
    return _outcome(adapter, case)


def test_pin_onnxruntime_differences():
    adapter = _available("onnxruntime.attention")
    # A NaN key row excluded by the mask turns every output row NaN (a declared deviation).
    case = _case("poison-scores/b2.h4x2.q6.k9.d16.bias=random.mask=key_columns"
                 ".poison=scores/float32")
    assert "nan" in _deviates(adapter, case)
    # NaN/inf in K/V past nonpad_kv_seqlen leak (a declared deviation).
    assert "nan" in _deviates(adapter, _case("poison-kv/b2.h4x2.q6.k9.d16.kv_lengths=5_2"
                                             ".poison=kv/float32"))
    # Lk = 0 is refused (empty_keys, not declared: an input the operator does not take).
    assert "raised" in _forced(adapter, _case("shape/b2.h4x2.q6.k0.d16/float32"))
    # invalid arguments raise ORT's own classes (a declared deviation)
    assert "expected ValueError" in _deviates(
        adapter, _case("arg-errors/b2.h4x2.q6.k9.d16.error=head_dim_mismatch/float32"))


def test_pin_onnxruntime_float64_scale_is_float32():
    """ONNX attributes are float32: float64 attention with scale 0.3 is off by ~1e-7 (a
    declared deviation); with the default scale of a power-of-4 head dim it is exact."""
    adapter = _available("onnxruntime.attention")
    assert "float64" in adapter.dtypes()
    case = _case("score/b2.h4x2.q6.k9.d16.scale=0.3/float64")
    _deviates(adapter, case)
    inputs, want, _ = _reference(case)
    out = adapter.run(case, inputs).outputs["out"]
    err = np.abs(out - want["out"]).max()
    assert 1e-9 < err < 1e-5
    exact = _case("lse/b2.h4x2.q6.k9.d16/float64")  # D = 16: 1/4 is exact in float32
    assert not any(d.matches(exact) for d in adapter.deviations)
    assert _outcome(adapter, exact) is None


@pytest.mark.parametrize("name", ["torch.softmax", "scipy.softmax"])
def test_pin_softmax_of_empty_row_is_nan(name):
    adapter = _available(name)
    for op in ("softmax", "log-softmax"):
        message = _deviates(adapter, _case(f"{op}-empty/pattern=empty_row.shape=4x7/float32"))
        assert "nan" in message
    # logsumexp of an empty row is -inf, as the spec says: graded, and not a deviation
    case = _case("logsumexp-empty/pattern=empty_row.shape=4x7/float32")
    assert not any(d.matches(case) for d in adapter.deviations)
    assert _outcome(adapter, case) is None


def test_pin_jax_half_precision():
    """JAX's residual for half-precision input is in that dtype (the spec: float32), so the
    adapter returns only out there; jitted float16 attention does not run on CPU, so
    jax-cpu does not declare float16."""
    adapter = _available("jax.dot_product_attention")
    import jax
    import jax.numpy as jnp

    x = jnp.ones((1, 3, 2, 8), jnp.bfloat16)
    _, lse = jax.jit(jax.nn.dot_product_attention, static_argnames="return_residual")(
        x, x, x, return_residual=True)
    assert lse.dtype == jnp.bfloat16
    if adapter.backend_name == "jax-cpu":
        assert "float16" not in adapter.dtypes()
        with pytest.raises(ValueError, match="F16_F16_F32"):
            jax.jit(jax.nn.dot_product_attention)(*(x.astype(jnp.float16),) * 3)


# ------------------------------------------------------------------------ resolve()


def test_builtin_names_and_adapters():
    names = builtin_names()
    from attnspec.backends import names as backend_names

    assert names[: len(backend_names())] == [f"attnspec[{b}]" for b in backend_names()]
    assert names[len(backend_names()):] == [n for n in NATIVE if n not in ON_REQUEST]
    assert [a.name for a in builtin_adapters()] == names
    # Graded when named: resolvable, listed on request, left out of a run with no target.
    assert ON_REQUEST
    assert set(NATIVE) >= ON_REQUEST
    assert not ON_REQUEST & set(names)
    assert builtin_names(on_request=True)[len(backend_names()):] == list(NATIVE)
    assert all(resolve(n).name == n for n in ON_REQUEST)


def test_building_adapters_imports_no_framework():
    code = ("import sys\n"
            "from attnspec.conformance.adapters import builtin_adapters, resolve\n"
            "adapters = builtin_adapters() + [resolve('torch.sdpa', device='cuda')]\n"
            "frameworks = ('torch', 'jax', 'onnxruntime', 'onnx', 'scipy', 'flash_attn')\n"
            "print(sorted(m for m in frameworks if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_adapters_are_recreatable(name):
    """By name and backend (what a worker process gets) and by pickling."""
    adapter = resolve(name)
    again = resolve(adapter.name, backend=adapter.backend_name)
    assert (type(again), again.name, again.backend_name) == (
        type(adapter), adapter.name, adapter.backend_name)
    copy = pickle.loads(pickle.dumps(adapter))
    assert (type(copy), copy.name, copy.backend_name, copy.features) == (
        type(adapter), adapter.name, adapter.backend_name, adapter.features)


def test_resolve_backends_and_devices():
    assert resolve("torch.sdpa").backend_name == "torch-cpu"
    assert resolve("torch.sdpa", device="cuda").backend_name == "torch-cuda"
    assert resolve("torch.sdpa", backend="torch-cuda").backend_name == "torch-cuda"
    assert resolve("jax.softmax", device="gpu").backend_name == "jax-gpu"
    assert resolve("attnspec", backend="torch").name == "attnspec[torch-cpu]"
    assert resolve("attnspec", backend="jax", device="cuda").name == "attnspec[jax-gpu]"
    adapter = resolve("attnspec[dask]")
    assert resolve(adapter) is adapter


def _builtins_on(**kwargs) -> list[str]:
    found = []
    for name in builtin_names():
        with contextlib.suppress(ValueError):
            found.append(resolve(name, **kwargs).name)
    return found


def test_backend_and_device_select_builtins():
    """Every built-in resolves by default; a backend or device keeps those that run there
    (the rest raise ValueError: what the runner leaves out when asked for all)."""
    assert _builtins_on() == builtin_names()
    assert _builtins_on(backend="torch-cpu") == [
        "attnspec[torch-cpu]", "torch.sdpa", "torch.mha", "torch.flex_attention", "torch.softmax",
        "attnspec.native.torch", "keras.torch", "transformers.sdpa", "transformers.eager"]
    on_gpu = _builtins_on(device="cuda")
    assert {"attnspec[torch-cuda]", "attnspec[jax-gpu]", "attnspec[cupy]", "flash_attn",
            "torch.sdpa", "attnspec.native.torch", "attnspec.native.jax"} <= set(on_gpu)
    assert not {"attnspec[numpy]", "scipy.softmax", "onnxruntime.attention"} & set(on_gpu)
    assert "attnspec[cupy]" not in _builtins_on(device="cpu")


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"target": "attnspec[numpy]", "backend": "torch-cpu"}, ValueError, "runs on numpy"),
    ({"target": "attnspec[numpy]", "device": "cuda"}, ValueError, "runs on numpy"),
    ({"target": "no.such.adapter"}, ValueError, r"unknown adapter .*torch\.sdpa"),
    ({"target": "attnspec[nope]"}, ValueError, r"no backend 'nope'.*numpy"),
    ({"target": "torch.sdpa", "backend": "jax-cpu"}, ValueError, r"backend: torch\.sdpa"),
    ({"target": "scipy.softmax", "device": "cuda"}, ValueError, r"device"),
    ({"target": "torch.sdpa", "backend": "torch-cpu", "device": "cuda"}, ValueError,
     "conflicts"),
    ({"target": "torch.sdpa", "capabilities": {}}, ValueError, "only 'module:callable'"),
    ({"target": "no_such_module_xyz:fn"}, ImportError,
     r"'no_such_module_xyz:fn'.*No module named"),
    ({"target": "math:no_such_fn"}, ValueError, "has no attribute 'no_such_fn'"),
    ({"target": "math:pi"}, TypeError, "not callable"),
    ({"target": ":fn"}, ValueError, "module:callable"),
    ({"target": 42}, TypeError, "target must be"),
    ({"target": "attnspec:softmax", "backend": "nope"}, ValueError, "unknown backend"),
])
def test_resolve_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        resolve(**kwargs)


# ------------------------------------------------------------- module:callable targets


def spec_tokens_first(query, key, value, *, mask=None, return_lse=False, **options):
    """attnspec wrapped as a (B, L, H, D) function with a "True = masked out" mask."""
    q, k, v = (attnspec.blhd_to_bhld(x) for x in (query, key, value))
    result = attnspec.scaled_dot_product_attention(
        q, k, v, mask=None if mask is None else ~mask, return_lse=return_lse, **options)
    if return_lse:
        return attnspec.bhld_to_blhd(result[0]), result[1]
    return attnspec.bhld_to_blhd(result)


spec_tokens_first.attnspec_capabilities = {
    "layout": "blhd", "mask": "drop", "returns": ["out", "lse"],
}


def spec_additive(query, key, value, *, mask=None, bias=None, **options):
    """attnspec taking its mask as an additive float (0 / -inf)."""
    if mask is not None:
        bias = mask if bias is None else bias + mask
    return attnspec.scaled_dot_product_attention(query, key, value, bias=bias, **options)


spec_additive.attnspec_capabilities = {
    "mask": "additive",
    # the mask arrives as a -inf bias and is added to the case's bias: a NaN bias at a
    # masked position stays NaN (NaN + -inf), which the spec says must not leak
    "deviations": [{"cases": "poison-scores/*bias=random*", "features": ["poison_scores"],
                    "reason": "a NaN bias at a masked position stays NaN once the additive "
                              "mask is added to it"}],
}


def ignores_mask(query, key, value, *, mask=None, **options):
    """A broken implementation: the mask is accepted and ignored."""
    return attnspec.scaled_dot_product_attention(query, key, value, **options)


def forwards(query, key, value, **options):
    return attnspec.scaled_dot_product_attention(query, key, value, **options)


def returns_pair(query, key, value, **options):
    return attnspec.scaled_dot_product_attention(query, key, value, return_lse=True, **options)


NOT_A_FUNCTION = 3


def older_kernel(query, key, value, *, mask=None, causal=False, scale=None,
                 return_lse=False):
    """A kernel written before positions, segment ids and mods existed."""
    return attnspec.scaled_dot_product_attention(query, key, value, mask=mask, causal=causal,
                                                 scale=scale, return_lse=return_lse)


def _target(name: str) -> str:
    return f"{__name__}:{name}"


def _groups(*groups: str) -> list[Case]:
    return [c for c in CASES if c.id.split("/", 1)[0] in groups]


def test_default_declaration_is_what_the_signature_takes():
    """Without a features list, a callable is declared to take the options its signature
    names (and all of them with **kwargs): it is never handed a keyword it cannot take, and
    what it lacks shows as "not declared"."""
    adapter = resolve(_target("older_kernel"))
    assert {"mask", "causal", "scale", "lse", "gqa", "extreme"} <= adapter.features
    assert not {"window", "segments", "positions", "score_mod", "causal_lower_right",
                "weights"} & adapter.features
    ran, failures = _grade_all(adapter, _groups("mask", "segments", "causal-upper-left"))
    assert ran
    assert not failures, failures
    assert all("segments" not in c.id for c in ran)
    assert {"segments", "mask_mod"} <= resolve(_target("returns_pair")).features


def test_user_callable_with_capabilities_attribute():
    adapter = resolve(_target("spec_tokens_first"))
    assert isinstance(adapter, UserAdapter)
    assert adapter.name == _target("spec_tokens_first")
    assert "lse" in adapter.features
    assert "weights" not in adapter.features
    ran, failures = _grade_all(adapter, _groups("mask", "lse", "causal-lower-right", "gqa"))
    assert len(ran) >= 10
    assert not failures, failures
    case = _case("lse/b2.h4x2.q6.k9.d16/float32")
    assert set(adapter.run(case, _reference(case)[0]).outputs) == {"out", "lse"}


def test_user_callable_additive_mask_and_all_features_by_default():
    adapter = resolve(_target("spec_additive"))
    # every feature but the opt-in claims (backward, grad_bias, deterministic) and the
    # outputs it does not return
    assert adapter.features == frozenset(FEATURES) - OPT_IN - {"lse", "weights"}
    ran, failures = _grade_all(adapter, _groups("mask", "empty-rows", "bound", "softcap",
                                                "poison-scores"))
    assert len(ran) >= 8
    assert not failures, failures  # the NaN bias cases fail, as the deviation says


def test_user_callable_capabilities_from_toml(tmp_path):
    path = tmp_path / "caps.toml"
    path.write_text('features = ["mask", "gqa", "lq_ne_lk"]\n'
                    'dtypes = ["float32"]\n'
                    'returns = ["out", "weights"]\n')
    adapter = resolve("attnspec:scaled_dot_product_attention", capabilities=path)
    assert adapter.features == {"mask", "gqa", "lq_ne_lk", "weights"}
    assert adapter.dtypes() == ("float32",)
    ran, failures = _grade_all(adapter, CASES)
    assert {c.id.split("/", 1)[0] for c in ran} >= {"mask", "weights", "bound", "single-key"}
    assert all(c.dtype == "float32" for c in ran)
    assert not failures, failures
    # the same file as an attribute value, and as a str path
    assert resolve("attnspec:scaled_dot_product_attention",
                   capabilities=str(path)).features == adapter.features


def test_user_capabilities_attribute_naming_a_toml_file(tmp_path, monkeypatch):
    """An attribute holding a relative path reads it next to the callable's module."""
    path = tmp_path / "caps.toml"
    path.write_text('features = ["gqa", "lq_ne_lk"]\nreturns = ["out", "lse"]\n')
    relative = os.path.relpath(path, os.path.dirname(__file__))
    monkeypatch.setattr(forwards, "attnspec_capabilities", relative, raising=False)
    adapter = resolve(_target("forwards"))
    assert adapter.features == {"gqa", "lq_ne_lk", "lse"}
    ran, failures = _grade_all(adapter, _groups("score", "lse"))
    assert ran
    assert not failures, failures


def test_user_callable_other_ops_and_backends():
    softmax = resolve("attnspec:softmax", capabilities={"ops": ["softmax"]})
    ran, failures = _grade_all(softmax, CASES)
    assert {c.op for c in ran} == {"softmax"}
    assert not failures, failures
    mha = resolve("attnspec:multi_head_attention", backend="torch-cpu",
                  capabilities={"ops": ["mha"]})
    if mha.unavailable() is None:
        ran, failures = _grade_all(mha, CASES)
        assert len(ran) == sum(c.op == "mha" for c in CASES)
        assert not failures, failures


def test_user_callable_is_recreatable_by_pickling():
    adapter = resolve(_target("spec_tokens_first"))
    copy = pickle.loads(pickle.dumps(adapter))
    assert (copy.name, copy.backend_name, copy.features, copy.layout) == (
        adapter.name, adapter.backend_name, adapter.features, adapter.layout)


def test_a_broken_user_callable_fails():
    """The grading loop above is not vacuous: an implementation that ignores the mask
    fails every mask case and passes the unmasked ones."""
    adapter = resolve(_target("ignores_mask"))
    ran, failures = _grade_all(adapter, _groups("mask", "score"))
    failed = {f.split(":", 1)[0] for f in failures}
    assert failed == {c.id for c in ran if "mask" in c.features}
    assert len(failed) < len(ran)


def test_user_callable_undeclared_tuple_is_an_error():
    adapter = resolve(_target("returns_pair"))
    case = _case("lse/b2.h4x2.q6.k9.d16/float32")
    with pytest.raises(TypeError, match="returned a tuple of 2"):
        adapter.run(case, _reference(case)[0])


@pytest.mark.parametrize(("capabilities", "error", "match"), [
    ({"colour": "red"}, ValueError, r"unknown keys \['colour'\]"),
    ({"features": ["mask", "telepathy"]}, ValueError, r"unknown features \['telepathy'\]"),
    ({"features": "mask"}, TypeError, "list of strings"),
    ({"layout": "lbhd"}, ValueError, "layout must be one of bhld, blhd"),
    ({"mask": "inverted"}, ValueError, "mask must be one of keep, drop, additive"),
    ({"returns": ["lse"]}, ValueError, "must include 'out'"),
    ({"ops": ["conv"]}, ValueError, r"unknown ops \['conv'\]"),
    (3, TypeError, "mapping or a TOML file path"),
    ("/no/such/caps.toml", ValueError, "cannot read TOML file"),
])
def test_user_capabilities_errors(capabilities, error, match):
    with pytest.raises(error, match=match):
        resolve("attnspec:scaled_dot_product_attention", capabilities=capabilities)


def test_user_capabilities_bad_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("features = [\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        resolve("attnspec:scaled_dot_product_attention", capabilities=path)


def test_user_target_not_callable_in_this_module():
    with pytest.raises(TypeError, match="not callable: it is a int"):
        resolve(_target("NOT_A_FUNCTION"))


# ------------------------------------------- what a declaration says, and what is passed


def only_declared(query, key, value, *, mask=None, causal=False, scale=None):
    """attnspec, for a mask, upper-left causal and a scale only: any other keyword (an
    ``alignment="upper_left"`` included) is a TypeError."""
    return attnspec.scaled_dot_product_attention(query, key, value, mask=mask, causal=causal,
                                                 scale=scale)


only_declared.attnspec_capabilities = {"features": ["gqa", "lq_ne_lk", "mask", "causal",
                                                    "scale"]}


def with_lse(query, key, value, *, return_lse=False, **options):
    return attnspec.scaled_dot_product_attention(query, key, value, return_lse=return_lse,
                                                 **options)


def mask_or_bias(query, key, value, *, mask=None, bias=None, **options):
    """Keras-like: takes a mask or a bias, refuses both at once."""
    if mask is not None and bias is not None:
        raise ValueError("mask and bias cannot be combined")
    return attnspec.scaled_dot_product_attention(query, key, value, mask=mask, bias=bias,
                                                 **options)


mask_or_bias.attnspec_capabilities = {"exclusive": [["mask", "bias"]]}


def test_an_undeclared_option_is_never_passed():
    """ATT-CAUSAL-1 cases give alignment="upper_left" (the default): a callable declaring
    plain causal never sees the keyword, nor any option it does not declare."""
    adapter = resolve(_target("only_declared"))
    ran, failures = _grade_all(adapter, CASES)
    groups = {c.id.split("/", 1)[0] for c in ran}
    assert {"causal-upper-left", "mask", "score", "extreme"} <= groups
    assert not failures, failures


def test_a_signature_with_return_lse_is_asked_for_the_lse():
    adapter = resolve(_target("with_lse"))
    assert adapter.returns == ("out", "lse")
    assert "lse" in adapter.features
    case = _case("lse/b2.h4x2.q6.k9.d16/float32")
    assert set(adapter.run(case, _reference(case)[0]).outputs) == {"out", "lse"}
    assert resolve(_target("forwards")).returns == ("out",)  # **options says nothing


def test_declared_constraints_select_cases_that_respect_them():
    adapter = resolve(_target("mask_or_bias"))
    both = _case("permute-keys/b2.h4x2.q6.k9.d16.bias=random.mask=dense.transform=permute"
                 "/float32")
    assert adapter.not_applicable(both) == "cannot combine bias and mask (declared constraint)"
    ran, failures = _grade_all(adapter, CASES)
    assert not failures, failures
    # every rule about masks and biases still has cases that use one of them alone
    rules = {rule for c in ran for rule in c.rules}
    assert {"ATT-MASK-1", "ATT-BIAS-1", "ATT-LEAK-1", "ATT-PROP-3", "ATT-SOFTCAP-1",
            "ATT-EMPTY-1"} <= rules


@pytest.mark.parametrize(("capabilities", "error", "match"), [
    ({"exclude": ["extreme"]}, ValueError, "behaviours, not options"),
    ({"exclusive": [["mask"]]}, ValueError, "two or more options"),
    ({"exclusive": [["mask", "telepathy"]]}, ValueError, "two or more options"),
    ({"exclusive": "mask"}, TypeError, "list of lists"),
    ({"deviations": [{"features": ["extreme"]}]}, ValueError, "reason must be"),
    ({"deviations": [{"reason": "x"}]}, ValueError, "give features or cases"),
    ({"deviations": [{"reason": "x", "features": ["nope"]}]}, ValueError, "unknown features"),
    ({"deviations": [{"reason": "x", "cases": "a/*", "colour": 1}]}, ValueError,
     "unknown keys"),
    ({"deviations": {"reason": "x"}}, TypeError, "list of tables"),
    ({"library": ""}, TypeError, "library must be"),
])
def test_capability_declaration_errors(capabilities, error, match):
    with pytest.raises(error, match=match):
        resolve("attnspec:scaled_dot_product_attention", capabilities=capabilities)


def test_the_library_under_test_is_recorded():
    assert resolve(_target("forwards")).versions() == {"test_conformance_adapters": "unknown"}
    adapter = resolve(_target("forwards"), capabilities={"library": "numpy"})
    assert adapter.versions() == {"numpy": np.__version__}
    assert adapter.library == "numpy"


# ---------------------------------------------------- torch.flex_attention, compiled


def test_compiled_flex_declaration_on_the_cpu():
    """What the compiled kernel does not do on the CPU is not declared (no lse, no
    float64), and it is left out of a run with no target (a compile per shape and mod)."""
    adapter = resolve("torch.flex_attention.compiled")
    assert adapter.name in ON_REQUEST
    assert adapter.name not in builtin_names()
    if adapter.backend_name == "torch-cpu":
        assert "lse" not in adapter.features
        assert "float64" not in adapter.supported_dtypes
    assert {"score_mod", "mask_mod", "segments", "alibi"} <= adapter.features
    eager = resolve("torch.flex_attention")
    assert set(eager.deviations) <= set(adapter.deviations)


@pytest.mark.slow  # a C++ compile per case: tens of seconds
def test_compiled_flex_grades_the_mods_and_its_deviations():
    """torch.compile(flex_attention) graded with the catalog's own mods, packed segments
    and its measured deviations (a NaN query row gives 0; shape errors raise dynamo's
    Unsupported), each as declared."""
    adapter = _available("torch.flex_attention.compiled")
    wanted = ("mods/", "segments/", "nonfinite/b2.h4x4.q9.k9.d16.poison=query_nan/float32",
              "arg-errors/b2.h4x4.q9.k9.d16.error=head_dim_mismatch/float32")
    cases = _one_per_group(adapter, [c for c in CASES if c.id.startswith(wanted)])
    ran, failures = _grade_all(adapter, cases)
    assert {c.id.split("/", 1)[0] for c in ran} >= {"mods", "segments", "nonfinite",
                                                    "arg-errors"}
    assert not failures, failures
