"""Gradient conformance (ATT-GRAD-1, ATT-GRAD-2) and determinism (ATT-DET-1).

* The golden gradients (conformance/gradients.py: the analytic backward in extended
  precision) are validated by finite differences: ``torch.autograd.gradcheck`` of a Function
  whose forward is the float64 golden forward and whose backward is the golden VJP, on every
  gradient case of the catalog; and by the run-time central-difference check, which is shown
  to catch a wrong gradient.
* The built-in adapters on autodiff backends (attnspec on torch and JAX, torch SDPA,
  jax.nn.dot_product_attention, attnspec's native dispatch) pass their gradient cases.
* Deliberately broken backward passes (tests/broken_impls.py: no scale in dq/dk, NaN from
  fully masked rows, GQA gradients not summed over the group), graded both through torch
  autograd and through a user's ``attnspec_backward``, fail under the rule they break; the
  same backward without a defect passes.
* Implementations that declare themselves deterministic are called repeatedly and compared
  bit for bit; one that is not fails with a message naming the output that differed.
* A backward that raises or kills its worker is one case's outcome, not the run's end.
* Reports (JSON schema 1.3, Markdown, HTML, terminal) show gradient and determinism results.
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
from broken_impls import BACKWARD_DEFECTS, BROKEN_BACKWARD

import attnspec
from attnspec.conformance import golden as golden_module
from attnspec.conformance import gradients
from attnspec.conformance.adapters import resolve
from attnspec.conformance.adapters.attnspec_adapter import AttnspecAdapter
from attnspec.conformance.adapters.user import parse_capabilities
from attnspec.conformance.api import run
from attnspec.conformance.cases import Case, Inputs, make_inputs
from attnspec.conformance.catalog import _shape, catalog, select
from attnspec.conformance.golden import GoldenMismatchError, golden, naive
from attnspec.conformance.precision import EPS
from attnspec.conformance.report import Report
from attnspec.conformance.runner import handle, judge, prepare
from attnspec.conformance.schema import validate

torch = pytest.importorskip("torch")

CASES = catalog()
GRAD_CASES = [c for c in CASES if c.params.get("backward") and not c.params.get("repeat")]
DET_CASES = [c for c in CASES if c.params.get("repeat")]


@cache
def _prepared(case: Case):
    return prepare(case)


def _verdict(adapter, case: Case):
    prepared = _prepared(case)
    assert prepared.error is None, prepared.error
    return judge(case, handle(adapter, ("run", case, prepared.inputs)), prepared)


def _grade_all(adapter, cases) -> tuple[dict, dict]:
    """case ID -> verdict for the applicable cases, and the subset that went other than
    declared: failures no declared deviation covers, and passes one does (strict)."""
    cases = [c for c in cases if adapter.not_applicable(c) is None]
    verdicts = {c.id: _verdict(adapter, c) for c in cases}
    declared = {c.id for c in cases if any(d.matches(c) for d in adapter.deviations)}
    failing = {i: v for i, v in verdicts.items()
               if (v.outcome.value != "pass") != (i in declared)}
    return verdicts, failing


# ------------------------------------------------------------------------------- the catalog


def test_gradient_cases_are_a_small_selectable_group():
    """[ATT-GRAD-1] [ATT-GRAD-2] [ATT-DET-1] `--select grad` picks every gradient case; the
    default catalog keeps them few, the full one has more."""
    assert {c.id for c in select(CASES, ["grad"])} == {
        c.id for c in CASES if c.params.get("backward")}
    assert 10 <= len(GRAD_CASES) <= 30
    assert {r for c in GRAD_CASES for r in c.rules} == {"ATT-GRAD-1", "ATT-GRAD-2",
                                                        "ATT-EMPTY-1", "ATT-LEAK-2"}
    assert all("backward" in c.features for c in GRAD_CASES)
    assert {c.dtype for c in GRAD_CASES} == {"float64", "float32", "float16", "bfloat16"}
    assert all(c.rules == ("ATT-DET-1",) and "deterministic" in c.features for c in DET_CASES)
    assert {bool(c.params.get("backward")) for c in DET_CASES} == {False, True}
    full = [c for c in catalog(full=True) if c.params.get("backward")]
    assert len(full) > 2 * len(GRAD_CASES)


def test_cotangent_is_seeded_from_the_case_and_rounded_to_its_dtype():
    """[ATT-GRAD-2] The cotangent is part of the case's inputs: the same for every call,
    shared by the dtype variants up to rounding, and exactly representable in the dtype."""
    case = next(c for c in GRAD_CASES if c.dtype == "float16")
    twin = next(c for c in GRAD_CASES if c.id == case.id.replace("float16", "float32"))
    a, b = make_inputs(case).cotangent, make_inputs(case).cotangent
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, a.astype(np.float16).astype(np.float64))
    np.testing.assert_allclose(a, make_inputs(twin).cotangent, rtol=1e-3)
    assert a.shape == golden(case, make_inputs(case))["out"].shape


# ----------------------------------------------------------- golden gradients are right


#: What the golden backward differentiates, in its order.
DIFFERENTIABLE = ("query", "key", "value", "bias", "sinks", "alibi_slopes")


def _golden_function(case: Case, inputs: dict):
    """A torch Function of (q, k, v[, bias, sinks, alibi_slopes]) whose forward is the
    float64 golden forward (attnspec on NumPy) and whose backward is the golden VJP of
    conformance/gradients.py."""
    names = [n for n in DIFFERENTIABLE if n in inputs]

    class Golden(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *arrays):
            ctx.save_for_backward(*arrays)
            given = {**inputs, **{n: a.numpy() for n, a in zip(names, arrays, strict=True)}}
            options = {k: v for k, v in given.items()
                       if k not in ("query", "key", "value") and not k.startswith("__")}
            with np.errstate(all="ignore"):
                out = attnspec.scaled_dot_product_attention(
                    given["query"], given["key"], given["value"], **options)
            return torch.from_numpy(np.asarray(out, dtype=np.float64))

        @staticmethod
        def backward(ctx, grad_out):
            arrays = ctx.saved_tensors
            given = Inputs({**inputs, **{n: a.numpy() for n, a in zip(names, arrays, strict=True)}},
                           cotangent=grad_out.numpy())
            grads = gradients.golden_gradients(dict(case.params), given)
            return tuple(torch.from_numpy(grads[gradients.WRT[n]]) for n in names)

    return Golden, [torch.tensor(inputs[n], requires_grad=True) for n in names]


@pytest.mark.parametrize("case", [c for c in GRAD_CASES if c.dtype in ("float32", "float64")],
                         ids=lambda c: c.id)
def test_golden_gradients_pass_gradcheck(case):
    """[ATT-GRAD-2] [ATT-GRAD-1] torch.autograd.gradcheck (finite differences in float64)
    of the golden backward against the golden forward, on every gradient case of the
    catalog (fast mode: random projections of the Jacobian)."""
    inputs = make_inputs(case)
    fn, leaves = _golden_function(case, inputs)
    assert torch.autograd.gradcheck(fn.apply, leaves, eps=1e-6, atol=1e-7, rtol=1e-5,
                                    fast_mode=True)


def test_golden_gradients_pass_the_full_gradcheck():
    """[ATT-GRAD-1] [ATT-GRAD-2] The full Jacobian (every entry by finite differences) on a
    small problem with query padding rows, masked keys, an empty row, a bias, lower-right
    alignment and GQA."""
    params = _shape(batch=(2,), hq=2, hkv=1, lq=4, lk=5, dk=3, bias="random",
                    q_lengths=[3, 2], kv_lengths=[5, 1], causal=True,
                    alignment="lower_right", backward=True)
    case = Case(id="grad-full-check/small/float64", op="attention",
                rules=("ATT-GRAD-1", "ATT-GRAD-2"), dtype="float64", params=params)
    inputs = make_inputs(case)
    assert not np.isfinite(golden(case, inputs)["lse"]).all()  # it has empty rows
    fn, leaves = _golden_function(case, inputs)
    assert torch.autograd.gradcheck(fn.apply, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


def _autodiff_arguments(case: Case):
    inputs = make_inputs(case)
    names = [n for n in DIFFERENTIABLE if n in inputs]
    options = {k: v for k, v in inputs.items() if k not in names and not k.startswith("__")}
    return inputs, names, options


def _assert_golden(case: Case, names: list[str], grads, label: str) -> None:
    want = golden(case, make_inputs(case))
    for name, grad in zip(names, grads, strict=True):
        expected = want[gradients.WRT[name]]
        scale = max(np.abs(expected).max(), 1.0)
        np.testing.assert_allclose(np.asarray(grad), expected, rtol=0, atol=1e-13 * scale,
                                   err_msg=f"{case.id} {name} {label}")


@pytest.mark.parametrize("case", [c for c in GRAD_CASES if c.dtype in ("float32", "float64")],
                         ids=lambda c: c.id)
def test_golden_gradients_agree_with_torch_autograd_of_attnspec(case):
    """[ATT-GRAD-2] [ATT-GRAD-1] The golden (analytic, extended precision) equals torch
    autograd of attnspec in float64 on every gradient case (attnspec's own gradients are
    gradchecked in tests/test_gradients.py): two independent derivations agree."""
    inputs, names, options = _autodiff_arguments(case)
    leaves = [torch.tensor(inputs[n], requires_grad=True) for n in names]
    kwargs = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v
              for k, v in options.items()}
    kwargs.update(zip(names[3:], leaves[3:], strict=True))
    out = attnspec.scaled_dot_product_attention(*leaves[:3], **kwargs)
    grads = torch.autograd.grad(out, leaves, torch.tensor(inputs.cotangent))
    _assert_golden(case, names, [g.numpy() for g in grads], "torch")


@pytest.mark.parametrize("case_id", [
    "grad/b2.h4x2.q6.k9.d16.bias=random.magnitude=8.0.mask=dense.softcap=5.0/float32",
    "grad-masked/b2.h4x2.q6.k9.d16.alignment=lower_right.causal=True.kv_lengths=9_3"
    ".q_lengths=4_2/float32",
])
def test_golden_gradients_agree_with_jax_vjp_of_attnspec(case_id):
    """[ATT-GRAD-2] [ATT-GRAD-1] ... and jax.vjp of attnspec in float64 (two cases: each
    one compiles)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    case = next(c for c in GRAD_CASES if c.id == case_id)
    inputs, names, options = _autodiff_arguments(case)
    kwargs = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v
              for k, v in options.items()}

    def f(*xs):
        named = dict(zip(names, xs, strict=True))
        return attnspec.scaled_dot_product_attention(
            named.pop("query"), named.pop("key"), named.pop("value"), **named, **kwargs)

    @jax.jit
    def vjp(xs, cot):
        return jax.vjp(f, *xs)[1](cot)

    grads = vjp([jnp.asarray(inputs[n]) for n in names], jnp.asarray(inputs.cotangent))
    _assert_golden(case, names, grads, "jax")


def test_run_time_finite_differences_catch_a_wrong_golden(monkeypatch):
    """[ATT-GRAD-2] The check that runs with every gradient case rejects a gradient off by
    0.1% in one input, and prepare() turns that into an internal error of attnspec."""
    case = next(c for c in GRAD_CASES if "bias=random" in c.id and c.dtype == "float32")
    inputs = make_inputs(case)
    right = gradients.golden_gradients(dict(case.params), inputs)
    assert gradients.check_finite_differences(inputs, right) is None
    for name in ("dq", "dk", "dv", "dbias"):
        wrong = {**right, name: right[name] * 1.001}
        assert "central difference" in gradients.check_finite_differences(inputs, wrong), name
    real = gradients.golden_gradients
    monkeypatch.setattr(gradients, "golden_gradients",
                        lambda p, i: {**real(p, i), "dv": real(p, i)["dv"] * 1.001})
    with pytest.raises(GoldenMismatchError, match="central differences"):
        golden_module.golden(case, inputs)
    assert "internal error of attnspec" in prepare(case).error


def test_naive_gradients_err_at_the_dtypes_precision():
    """[ATT-GRAD-2] The naive backward (every operation rounded to the case dtype) differs
    from the golden by a few eps of the dtype: the yardstick is neither zero nor loose."""
    for case in GRAD_CASES:
        if case.params.get("poison"):
            continue
        inputs = make_inputs(case)
        want, ref = golden(case, inputs), naive(case, inputs)
        for name in ("dq", "dk", "dv"):
            scale = np.abs(want[name]).max()
            relative = np.abs(ref[name] - want[name]).max() / scale
            assert 0.05 * EPS[case.dtype] < relative < 300 * EPS[case.dtype], (
                case.id, name, relative / EPS[case.dtype])


# ------------------------------------------------------------- built-in adapters pass


JAX_SUBSET = [
    "grad/b2.h4x2.q6.k9.d16/bfloat16",
    "grad/b2.h4x2.q6.k9.d16.bias=random.mask=dense/float32",
    "grad-masked/b2.h4x2.q6.k9.d16.kv_lengths=9_0/float32",
    "grad-poison-kv/b2.h4x2.q6.k9.d16.kv_lengths=5_2.poison=kv/float32",
]


def _available(name: str):
    adapter = resolve(name)
    reason = adapter.unavailable()
    if reason:
        pytest.skip(reason)
    return adapter


@pytest.mark.parametrize(("name", "least", "extra"), [
    ("attnspec[torch-cpu]", 20, {"dbias", "dsinks", "dalibi_slopes"}),
    ("torch.sdpa", 11, {"dbias"}),
    # a bias goes the portable way (not native); the poison-kv case holds NaN/inf, which the
    # finite-inputs-only native kernels do not declare
    ("attnspec.native.torch", 7, set())])
def test_torch_adapters_pass_every_gradient_case(name, least, extra):
    """[ATT-GRAD-1] [ATT-GRAD-2] torch autograd through attnspec, torch SDPA's backward and
    the native dispatch's: every applicable gradient case passes, dbias (dsinks,
    dalibi_slopes) included where declared."""
    adapter = _available(name)
    verdicts, failing = _grade_all(adapter, GRAD_CASES)
    assert not failing, {i: v.message for i, v in failing.items()}
    assert len(verdicts) >= least, sorted(verdicts)
    graded = {n for v in verdicts.values() for n in v.errors}
    assert graded == {"out", "dq", "dk", "dv"} | extra
    assert all(e["error"] <= e["tolerance"] for v in verdicts.values()
               for e in v.errors.values())


@pytest.mark.parametrize(("name", "least"), [
    ("attnspec[jax-cpu]", 4), ("jax.dot_product_attention", 2), ("attnspec.native.jax", 1)])
def test_jax_adapters_pass_their_gradient_cases(name, least):
    """[ATT-GRAD-1] [ATT-GRAD-2] jax.vjp (under jax.jit) through attnspec,
    jax.nn.dot_product_attention and the native dispatch, on a subset of the gradient cases
    (JAX compiles each case: the whole group runs in tests/test_conformance_adapters.py's
    one-per-group pass and in `attnspec check`)."""
    adapter = _available(name)
    verdicts, failing = _grade_all(adapter, [c for c in GRAD_CASES if c.id in JAX_SUBSET])
    assert not failing, {i: v.message for i, v in failing.items()}
    assert len(verdicts) >= least, sorted(verdicts)


def test_which_adapters_declare_backward_and_determinism():
    """[ATT-GRAD-2] [ATT-DET-1] attnspec differentiates on torch and JAX and is declared
    deterministic on the CPU backends only (building adapters needs no device)."""
    for backend in ("torch-cpu", "torch-cuda", "jax-cpu", "jax-gpu"):
        assert {"backward", "grad_bias"} <= AttnspecAdapter(backend).features
    for backend in ("numpy", "array_api_strict", "dask", "cupy"):
        assert "backward" not in AttnspecAdapter(backend).features
    for backend in ("numpy", "array_api_strict", "dask", "torch-cpu", "jax-cpu"):
        assert "deterministic" in AttnspecAdapter(backend).features
    for backend in ("torch-cuda", "jax-gpu", "cupy"):
        assert "deterministic" not in AttnspecAdapter(backend).features
    for name in ("torch.sdpa", "jax.dot_product_attention", "attnspec.native.torch",
                 "attnspec.native.jax"):
        # the native dispatch takes no bias (it goes to the portable path): no dbias there
        wanted = {"backward", "deterministic"} | ({"grad_bias"} if "native" not in name
                                                  else set())
        assert wanted <= resolve(name).features
        assert "deterministic" not in resolve(name, device="cuda" if "torch" in name
                                              else "gpu").features


# ---------------------------------------------------------- broken backward passes fail


#: backward defect -> the rule whose cases must catch it
RULE_BROKEN = {
    "grad_no_scale": "ATT-GRAD-2",
    "grad_nan_empty_rows": "ATT-GRAD-1",
    "grad_gqa_no_sum": "ATT-GRAD-2",
}


def _broken(name: str):
    return resolve(f"broken_impls:{name}",
                   backend="torch-cpu" if name.endswith("_torch") else "numpy")


@pytest.mark.parametrize("name", ["backward_correct_torch", "backward_correct_numpy"])
def test_hand_written_backward_without_defect_passes(name):
    """[ATT-GRAD-1] [ATT-GRAD-2] The backward the broken ones are made from passes every
    gradient case it declares (through torch autograd, and as a user's attnspec_backward
    on NumPy): what the broken ones fail is their defect's doing."""
    adapter = _broken(name)
    assert adapter.backward_mode == ("autodiff" if name.endswith("_torch") else "function")
    verdicts, failing = _grade_all(adapter, GRAD_CASES)
    assert not failing, {i: v.message for i, v in failing.items()}
    assert len(verdicts) >= 12


def test_every_backward_defect_names_its_rule():
    assert set(RULE_BROKEN) == set(BACKWARD_DEFECTS)
    assert set(BROKEN_BACKWARD) == {f"{d}_{k}" for d in BACKWARD_DEFECTS
                                    for k in ("torch", "numpy")}


@pytest.mark.parametrize("name", list(BROKEN_BACKWARD))
def test_broken_backward_fails_under_the_rule_it_breaks(name):
    """[ATT-GRAD-1] [ATT-GRAD-2] Each defect fails the cases of its rule."""
    defect = name.rsplit("_", 1)[0]
    _, failing = _grade_all(_broken(name), GRAD_CASES)
    rule = RULE_BROKEN[defect]
    caught = [i for i in failing if rule in next(c for c in GRAD_CASES if c.id == i).rules]
    assert caught, f"{name} ({BACKWARD_DEFECTS[defect]}) passes every {rule} case"
    assert all(v.outcome.value == "fail" for v in failing.values())


def test_nan_from_empty_rows_is_caught_only_where_rows_are_empty():
    """[ATT-GRAD-1] [ATT-EMPTY-1] A backward that leaks NaN from fully masked rows passes
    every case without one, and fails every case with one, naming the NaN."""
    verdicts, failing = _grade_all(_broken("grad_nan_empty_rows_torch"), GRAD_CASES)
    with_empty = {i for i in verdicts if "empty_rows" in
                  next(c for c in GRAD_CASES if c.id == i).features}
    assert with_empty
    assert set(failing) == with_empty
    assert all("expected np.float64(0.0), got np.float64(nan)" in v.message
               for v in failing.values())


def test_missing_scale_is_caught_in_every_dtype():
    """[ATT-GRAD-2] dq and dk without 1/sqrt(Dk) fail in float64, float32, float16 and
    bfloat16, on dq (graded before dk)."""
    _, failing = _grade_all(_broken("grad_no_scale_torch"), GRAD_CASES)
    plain = [c for c in GRAD_CASES if c.id.startswith("grad/b2.h4x2.q6.k9.d16/")]
    assert {c.id for c in plain} <= set(failing)
    assert all(failing[c.id].message.startswith("dq: max error") for c in plain)


# ---------------------------------------------------------------------- determinism


def test_attnspec_is_deterministic_on_the_cpu():
    """[ATT-DET-1] attnspec on NumPy, torch and JAX (CPU) repeats its outputs and gradients
    bit for bit."""
    for name, least in (("attnspec[numpy]", 2), ("attnspec[torch-cpu]", 4),
                        ("attnspec[jax-cpu]", 4)):
        adapter = _available(name)
        verdicts, failing = _grade_all(adapter, DET_CASES)
        assert not failing, {i: v.message for i, v in failing.items()}
        assert len(verdicts) == least, name
        assert all("3 runs bit-identical" in v.message for v in verdicts.values())


def test_nondeterministic_output_fails_with_a_clear_message():
    """[ATT-DET-1] An implementation that declares determinism and returns an ``out`` one ulp
    off every other call fails, saying which run differs in what."""
    adapter = resolve("broken_impls:nondeterministic")
    assert "deterministic" in adapter.features
    verdicts, failing = _grade_all(adapter, DET_CASES)
    assert set(failing) == set(verdicts) == {c.id for c in DET_CASES if
                                             not c.params.get("backward")}
    message = next(iter(failing.values())).message
    assert message.startswith("not deterministic: run 2 of 3 differs from run 1 in out: "
                              "1 of 32768 entries differ")


def test_nondeterministic_backward_fails_only_the_gradient_case():
    """[ATT-DET-1] A bit-identical forward with a backward one ulp off every other call:
    the forward case passes, the gradient case fails; the same code without the ulp passes
    both."""
    verdicts, failing = _grade_all(_broken("nondeterministic_backward_torch"), DET_CASES)
    assert len(verdicts) == 4  # forward and backward, grouped-query and basic heads
    assert set(failing) == {c.id for c in DET_CASES if c.params.get("backward")}
    message = next(iter(failing.values())).message
    assert "not deterministic: run 2 of 3 differs from run 1 in d" in message
    verdicts, failing = _grade_all(_broken("deterministic_backward_torch"), DET_CASES)
    assert len(verdicts) == 4
    assert not failing


# ----------------------------------------------------------- a user's declared backward


def test_user_backward_capabilities():
    """[ATT-GRAD-2] `backward` is true/"autodiff"/"function"/false, checked against the
    backend and the callable; `deterministic` is a bool; neither is part of "every
    feature"."""
    assert parse_capabilities({"backward": True})["backward"] == "autodiff"
    assert parse_capabilities({"backward": False, "deterministic": True}) == {
        "backward": False, "deterministic": True}
    with pytest.raises(ValueError, match="backward must be"):
        parse_capabilities({"backward": "yes"})
    with pytest.raises(TypeError, match="deterministic must be true or false"):
        parse_capabilities({"deterministic": "yes"})
    with pytest.raises(ValueError, match="needs a backend with autodiff"):
        resolve("broken_impls:correct", capabilities={"backward": "autodiff"})
    with pytest.raises(ValueError, match="needs a callable attribute attnspec_backward"):
        resolve("broken_impls:correct", capabilities={"backward": "function"})
    plain = resolve("broken_impls:correct", backend="torch-cpu")
    assert not {"backward", "grad_bias", "deterministic"} & plain.features
    torch_caps = resolve("broken_impls:backward_correct_torch", backend="torch-cpu",
                         capabilities={"backward": True, "exclude": ["grad_bias"]})
    assert "backward" in torch_caps.features
    assert "grad_bias" not in torch_caps.features
    case = next(c for c in GRAD_CASES if "bias=random.mask" in c.id and c.dtype == "float32")
    assert set(torch_caps.run(case, make_inputs(case)).outputs) == {"out", "dq", "dk", "dv"}
    assert _verdict(torch_caps, case).outcome.value == "pass"


def test_user_backward_function_in_tokens_first_layout():
    """[ATT-GRAD-2] A NumPy kernel with layout "blhd" and its own attnspec_backward receives
    the cotangent and returns dq, dk, dv tokens-first; the adapter grades them in the spec's
    layout."""
    adapter = resolve("test_conformance_gradients:blhd_kernel")
    assert adapter.backward_mode == "function"
    assert adapter.layout == "blhd"
    verdicts, failing = _grade_all(adapter, [c for c in GRAD_CASES if not c.params.get(
        "softcap") and not c.params.get("dropout_p") and not c.params.get("poison")])
    assert len(verdicts) >= 10
    assert not failing, {i: v.message for i, v in failing.items()}


#: The options numpy_backward does not differentiate (tests/broken_impls.py).
BACKWARD_EXCLUDE = ["softcap", "dropout", "sinks", "alibi", "positions", "segments", "paged",
                    "score_mod", "mask_mod"]


def blhd_kernel(query, key, value, **options):
    """attnspec on NumPy, tokens before heads."""
    q, k, v = (attnspec.blhd_to_bhld(x) for x in (query, key, value))
    return attnspec.bhld_to_blhd(attnspec.scaled_dot_product_attention(q, k, v, **options))


def _blhd_backward(grad_out, query, key, value, **options):
    from broken_impls import numpy_backward

    g, q, k, v = (attnspec.blhd_to_bhld(x) for x in (grad_out, query, key, value))
    dq, dk, dv, *rest = numpy_backward(g, q, k, v, None, **options)
    return (*(attnspec.bhld_to_blhd(x) for x in (dq, dk, dv)), *rest)


blhd_kernel.attnspec_backward = _blhd_backward
blhd_kernel.attnspec_capabilities = {"layout": "blhd", "exclude": BACKWARD_EXCLUDE}


# ------------------------------------------------------------ isolation and reports


def test_a_failing_backward_never_takes_the_run_down():
    """[ATT-GRAD-2] In worker processes: a backward that raises is that case's error, one
    that kills its worker that case's crash; every other case still has its outcome."""
    patterns = ["grad/b2.h4x2.q9.k9.d16.causal=True/float32",
                "grad/b2.h4x2.q9.k9.d16.window=2_1/float32", "grad/b2.h4x2.q6.k9.d16/float*"]
    report = run("test_conformance_gradients:hostile_backward", backend="torch-cpu",
                 select=patterns, fingerprint=False, timeout=60)
    outcomes = {r.case_id: r for r in report.results}
    assert len(outcomes) == 5  # causal, window, and the plain case in three dtypes
    crash = [r for r in outcomes.values() if r.params.get("window")]
    raised = [r for r in outcomes.values() if r.params.get("causal") and not
              r.params.get("window")]
    assert crash
    assert all(r.outcome.value == "crash" for r in crash)
    assert raised
    assert all(r.outcome.value == "error" and "RuntimeError: backward refuses"
                          in r.message for r in raised)
    rest = [r for r in outcomes.values() if r not in crash and r not in raised]
    assert {r.outcome.value for r in rest} <= {"pass", "not-applicable"}
    assert any(r.outcome.value == "pass" for r in rest)


def hostile_backward(query, key, value, **options):
    """attnspec on torch whose backward raises for causal cases and kills the process for
    window cases."""
    import os

    class Hook(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, g):
            if options.get("window") is not None:
                os._exit(3)
            if options.get("causal"):
                raise RuntimeError("backward refuses causal attention")
            return g

    return attnspec.scaled_dot_product_attention(Hook.apply(query), key, value, **options)


hostile_backward.attnspec_capabilities = {"backward": "autodiff"}


def test_reports_show_gradients_and_determinism(tmp_path):
    """[ATT-GRAD-2] [ATT-DET-1] The JSON report (schema 1.3) carries per-gradient errors and
    validates; Markdown, HTML and the terminal summary show a gradient table and the
    determinism verdicts; a report without the errors field (schema 1.1) still loads."""
    from attnspec.conformance import html, markdown, terminal

    report = run(["attnspec[torch-cpu]", "broken_impls:nondeterministic"],
                 select=["grad/b2.h4x2.q6.k9.d16/", "determinism/"], isolate=False,
                 fingerprint=False)
    data = report.to_json()
    assert data["schema_version"] == "1.3"
    assert validate(data) == []
    grads = [r for r in data["results"] if r["case_id"].startswith("grad/")
             and r["outcome"] == "pass"]
    assert len(grads) == 4
    assert all(set(r["errors"]) == {"out", "dq", "dk", "dv"} for r in grads)
    assert all(0 <= e["error"] <= e["tolerance"] for r in grads for e in r["errors"].values())
    text = terminal.summary(report)
    assert "Gradients (worst error / tolerance" in text
    assert "attnspec[torch-cpu]  float64   1/1" in text
    assert "Determinism (repeated calls compared bit for bit):" in text
    assert "attnspec[torch-cpu]: bit-identical (2 of 2 cases)" in text
    assert "broken_impls:nondeterministic: not deterministic (0 of 2 cases): not " \
           "deterministic: run 2 of 3" in text
    md = markdown.to_markdown(report)
    assert "### Gradients" in md
    assert "| dq | dk | dv | dbias |" in md
    assert "### Determinism" in md
    assert "❌ not deterministic" in md
    page = html.to_html(report)
    assert "<h2>Gradients</h2>" in page
    assert "<h2>Determinism</h2>" in page
    path = tmp_path / "r.json"
    report.save(path)
    assert Report.load(path).results[0].errors == report.results[0].errors
    old = json.loads(path.read_text())
    old["schema_version"] = "1.1"
    for r in old["results"]:
        del r["errors"]
    path.write_text(json.dumps(old))
    assert all(r.errors == {} for r in Report.load(path).results)


def test_export_holds_the_cotangent_and_grades_gradients(tmp_path):
    """[ATT-GRAD-2] `attnspec export` writes the cotangent and the golden gradients; graded
    with --outputs, gradients from the golden pass, perturbed ones fail, a file without
    gradients is not applicable; determinism cases are not exported."""
    from attnspec.conformance.export import case_filename, export, grade_outputs

    pattern = "grad/b2.h4x2.q6.k9.d16/float32"
    assert export(tmp_path / "gold", select=[pattern, "determinism"]) == 1
    with np.load(tmp_path / "gold" / "cases" / case_filename(pattern)) as data:
        files = dict(data)
    assert {"input/cotangent", "expected/dq", "expected/dk", "expected/dv",
            "naive/dq"} <= set(files)
    outputs = tmp_path / "mine"
    outputs.mkdir()
    got = {name: files[f"expected/{name}"] for name in ("out", "dq", "dk", "dv")}
    np.savez(outputs / case_filename(pattern), **got)
    assert grade_outputs(outputs, select=[pattern]).results[0].outcome.value == "pass"
    np.savez(outputs / case_filename(pattern), **{**got, "dk": got["dk"] * 1.01})
    result = grade_outputs(outputs, select=[pattern]).results[0]
    assert result.outcome.value == "fail"
    assert result.message.startswith("dk: max error")
    np.savez(outputs / case_filename(pattern), out=got["out"])
    result = grade_outputs(outputs, select=[pattern]).results[0]
    assert result.outcome.value == "not-applicable"
    assert "no gradients" in result.message


# ------------------------------------------- where frameworks' gradients differ (spec table)


def _masked_problem():
    """One head, three query rows, four keys: row 1 attends nothing, key 3 nothing."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(np.float32)
               for s in ((1, 1, 3, 2), (1, 1, 4, 2), (1, 1, 4, 2)))
    g = rng.standard_normal((1, 1, 3, 2)).astype(np.float32)
    mask = np.ones((1, 1, 3, 4), bool)
    mask[0, 0, 1, :] = False
    mask[0, 0, :, 3] = False
    bias = np.where(mask, 0.0, -np.inf).astype(np.float32)
    return q, k, v, g, mask, bias


def _torch_sdpa_grads(q, k, v, g, attn_mask):
    leaves = [torch.tensor(x, requires_grad=True) for x in (q, k, v)]
    out = torch.nn.functional.scaled_dot_product_attention(*leaves,
                                                           attn_mask=torch.tensor(attn_mask))
    return [x.numpy() for x in torch.autograd.grad(out, leaves, torch.tensor(g))]


def test_torch_sdpa_gradient_differences():
    """[ATT-GRAD-1] Pins docs/spec.md's differences table: torch SDPA's gradients are zero
    for a fully masked row and a masked key (bool mask or -inf bias), and NaN everywhere
    when a key row excluded by a bool mask holds NaN; attnspec's dq is NaN there too (the
    spec promises zeros for NaN only past kv_lengths), its dk and dv are not."""
    q, k, v, g, mask, bias = _masked_problem()
    for attn_mask in (mask, bias):
        dq, dk, dv = _torch_sdpa_grads(q, k, v, g, attn_mask)
        assert np.all(dq[0, 0, 1] == 0)
        assert np.all(dk[0, 0, 3] == 0)
        assert np.all(dv[0, 0, 3] == 0)
    poisoned = k.copy()
    poisoned[0, 0, 3] = np.nan
    assert all(np.isnan(x).all() for x in _torch_sdpa_grads(q, poisoned, v, g, mask))
    leaves = [torch.tensor(x, requires_grad=True) for x in (q, poisoned, v)]
    out = attnspec.scaled_dot_product_attention(*leaves, mask=torch.tensor(mask))
    dq, dk, dv = (x.numpy() for x in torch.autograd.grad(out, leaves, torch.tensor(g)))
    assert np.isnan(dq).any()
    assert np.isfinite(dk).all()
    assert np.isfinite(dv).all()


def test_jax_dot_product_attention_gradient_differences():
    """[ATT-GRAD-1] Pins docs/spec.md's differences table: jax.nn.dot_product_attention
    gives a fully masked row (bool mask, or kv length 0) the mean of all V rows, so the
    masked keys' dv is not zero (dq and dk are); a bias row of -inf gives NaN gradients; a
    NaN key row excluded by the mask makes dq NaN, as attnspec's, and leaves dk, dv finite."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    q, k, v, g, mask, bias = _masked_problem()

    def grads(**kwargs):
        def f(q_, k_, v_):
            return jax.nn.dot_product_attention(q_, k_, v_, **kwargs)

        @jax.jit  # one compilation instead of op-by-op dispatch
        def vjp(primals, cotangent):
            return jax.vjp(f, *primals)[1](cotangent)

        primals = [jnp.asarray(np.swapaxes(x, 1, 2)) for x in (q, k, v)]
        return [np.swapaxes(np.asarray(x), 1, 2)
                for x in vjp(primals, jnp.asarray(np.swapaxes(g, 1, 2)))]

    dq, dk, dv = grads(mask=jnp.asarray(mask))
    assert np.all(dq[0, 0, 1] == 0)
    assert np.all(dk[0, 0, 3] == 0)
    assert np.abs(dv[0, 0, 3]).max() > 0.01
    dq, dk, dv = grads(key_value_seq_lengths=jnp.asarray([0], jnp.int32))
    assert np.all(dq == 0)
    assert np.all(dk == 0)
    assert np.abs(dv).max() > 0.01
    assert all(np.isnan(x).any() for x in grads(bias=jnp.asarray(bias)))
    keep_rows = mask.copy()
    keep_rows[0, 0, 1, :3] = True  # no empty row: only the NaN key is masked
    k[0, 0, 3] = np.nan
    dq, dk, dv = grads(mask=jnp.asarray(keep_rows))
    assert np.isnan(dq).any()
    assert np.isfinite(dk).all()
    assert np.isfinite(dv).all()


def test_detached_sinks_and_slopes_fail_their_gradients():
    """[ATT-GRAD-2] [ATT-SINK-1] [ATT-ALIBI-1] Sinks and slopes a kernel does not
    differentiate (dsinks, dalibi_slopes zero) fail exactly the cases that have them; with
    grad_sinks and grad_alibi excluded the same kernel passes."""
    pytest.importorskip("torch", reason="torch: not installed (autodiff needs it)")
    wanted = [c for c in GRAD_CASES if c.dtype == "float32"]
    verdicts, failing = _grade_all(resolve("broken_impls:sinks_detached",
                                           backend="torch-cpu"), wanted)
    with_params = {c.id for c in wanted if {"sinks", "alibi"} & c.features}
    assert with_params
    assert set(failing) == with_params
    assert all(("dsinks" in v.message) or ("dalibi_slopes" in v.message)
               for v in failing.values()), {i: v.message for i, v in failing.items()}
    excused = resolve("broken_impls:sinks_detached", backend="torch-cpu", capabilities={
        "backward": "autodiff", "exclude": ["grad_sinks", "grad_alibi"]})
    verdicts, failing = _grade_all(excused, wanted)
    assert not failing
    assert with_params <= set(verdicts)


def test_golden_sink_and_slope_gradients_pass_the_full_gradcheck():
    """[ATT-GRAD-2] [ATT-SINK-1] [ATT-ALIBI-1] Every entry of the golden dsinks and
    dalibi_slopes by finite differences: per-head sinks over a batch, a sink-only row,
    lower-right ALiBi distances and GQA."""
    params = _shape(batch=(2,), hq=2, hkv=1, lq=3, lk=5, dk=3, sinks="per_head",
                    alibi="random", mask="empty_rows", alignment="lower_right", backward=True)
    case = Case(id="grad-full-check/sinks-alibi/float64", op="attention",
                rules=("ATT-GRAD-2", "ATT-SINK-1", "ATT-ALIBI-1"), dtype="float64",
                params=params)
    inputs = make_inputs(case)
    assert {"sinks", "alibi_slopes"} <= set(inputs)
    fn, leaves = _golden_function(case, inputs)
    assert torch.autograd.gradcheck(fn.apply, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)
