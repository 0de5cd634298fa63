"""``implementation=``: the native fast paths (torch SDPA, ``jax.nn.dot_product_attention``)
take exactly the calls whose results they get right, and nothing else.

Correctness is measured against the float64 loop oracle in ``tests/reference.py``; which
path runs is observed through :func:`attnspec.native_plan` and through a kernel that
records its calls (so a test cannot pass by silently taking the portable path).
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import ref_attention as oracle

import attnspec
from attnspec import native
from attnspec.backends import get

NATIVE_BACKENDS = ("torch-cpu", "torch-cuda", "jax-cpu", "jax-gpu")
TOL = {"float32": 2e-5, "bfloat16": 2e-2, "float16": 2e-3, "float64": 1e-12}


def _backend(name):
    b = get(name)
    if not b.available:
        pytest.skip(b.reason)
    return b


@pytest.fixture(params=NATIVE_BACKENDS)
def nb(request):
    """A backend that has a native kernel (skips, with the registry's reason, if absent)."""
    return _backend(request.param)


def _qkv(b, rng, shape_q, shape_k, dtype="float32", dv=None):
    dv = dv or shape_k[-1]
    q = rng.standard_normal(shape_q)
    k = rng.standard_normal(shape_k)
    v = rng.standard_normal((*shape_k[:-1], dv))
    return (q, k, v), tuple(b.from_numpy(x, dtype) for x in (q, k, v))


ACCEPTED = [
    pytest.param({}, id="plain"),
    pytest.param({"causal": True}, id="causal"),
    pytest.param({"causal": True, "alignment": "lower_right"}, id="causal-lower-right"),
    pytest.param({"scale": 0.3}, id="scale"),
]


@pytest.mark.parametrize("options", ACCEPTED)
@pytest.mark.parametrize("lq", [5, 16])
def test_native_agrees_with_float64_oracle(nb, rng, options, lq):
    """Accepted calls dispatch (the plan names the kernel) and match the float64 oracle."""
    lk = 16 if options.get("alignment") != "lower_right" or nb.framework == "torch" else lq
    (q, k, v), args = _qkv(nb, rng, (2, 4, lq, 8), (2, 2, lk, 8))
    plan = attnspec.native_plan(*args, implementation="native", **options)
    assert plan.kernel is not None, plan.reason
    out = attnspec.scaled_dot_product_attention(*args, implementation="native", **options)
    expected = oracle(q, k, v, **options)[0]
    np.testing.assert_allclose(nb.to_numpy(out).astype(np.float64), expected,
                               atol=TOL["float32"], rtol=TOL["float32"])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_native_dtypes_dispatch_or_say_why(nb, rng, dtype):
    """Each dtype either dispatches and agrees with float64, or falls back with a reason."""
    if dtype not in nb.dtypes:
        pytest.skip(f"{nb.name}: no {dtype}")
    (_q, _k, _v), args = _qkv(nb, rng, (1, 2, 8, 8), (1, 2, 8, 8), dtype)
    plan = attnspec.native_plan(*args, causal=True, implementation="native")
    out = attnspec.scaled_dot_product_attention(*args, causal=True, implementation="auto")
    assert str(out.dtype).endswith(dtype)
    if plan.kernel is None:
        assert plan.reason
        with pytest.raises(ValueError, match="implementation='native'"):
            attnspec.scaled_dot_product_attention(*args, causal=True, implementation="native")
    exact = [nb.to_numpy(x).astype(np.float64) for x in args]
    np.testing.assert_allclose(nb.to_numpy(out).astype(np.float64),
                               oracle(*exact, causal=True)[0], atol=TOL[dtype], rtol=TOL[dtype])


DECLINED = [
    pytest.param("mask", lambda b: b.from_numpy(np.tril(np.ones((8, 8), bool)))),
    pytest.param("bias", lambda b: b.from_numpy(np.zeros((8, 8)), "float32")),
    pytest.param("softcap", lambda b: 5.0),
    pytest.param("window", lambda b: (2, 2)),
    pytest.param("q_lengths", lambda b: 3),
    pytest.param("return_lse", lambda b: True),
    pytest.param("return_weights", lambda b: True),
    pytest.param("chunk_size", lambda b: 4),
]


@pytest.mark.parametrize(("name", "make"), DECLINED)
def test_options_without_a_kernel_take_the_portable_path(nb, rng, name, make):
    """ATT-LEAK-1 and the extra outputs: such calls never reach a kernel; 'auto' computes
    them portably, 'native' refuses naming the option."""
    (_q, _k, _v), args = _qkv(nb, rng, (1, 2, 8, 8), (1, 2, 8, 8))
    value = make(nb)
    plan = attnspec.native_plan(*args, implementation="native", **{name: value})
    assert plan.kernel is None
    assert f"{name}=" in plan.reason
    with pytest.raises(ValueError, match=f"{name}="):
        attnspec.scaled_dot_product_attention(*args, implementation="native", **{name: value})
    auto = attnspec.scaled_dot_product_attention(*args, implementation="auto", **{name: value})
    portable = attnspec.scaled_dot_product_attention(*args, **{name: value})
    for a, p in zip(auto if isinstance(auto, tuple) else (auto,),
                    portable if isinstance(portable, tuple) else (portable,), strict=False):
        np.testing.assert_array_equal(nb.to_numpy(a), nb.to_numpy(p))


def test_torch_kv_lengths_padding_never_leaks(rng):
    """ATT-LEAK-2 and ATT-EMPTY-1 through torch SDPA: NaN/inf in unused cache slots do not
    reach the output; a sequence of length 0 gives 0 and zero gradients."""
    b = _backend("torch-cpu")
    import torch

    (q, k, v), args = _qkv(b, rng, (3, 2, 4, 8), (3, 2, 10, 8))
    lengths = np.array([10, 6, 0])
    k[1, :, 6:] = np.nan
    v[1, :, 6:] = np.inf
    args = [torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in (q, k, v)]
    kv = torch.tensor(lengths)
    assert attnspec.native_plan(*args, kv_lengths=kv, implementation="native").kernel is not None
    out = attnspec.scaled_dot_product_attention(*args, kv_lengths=kv, implementation="native")
    expected = oracle(q, k, v, kv_lengths=lengths)[0]
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=2e-5, rtol=2e-5)
    out.sum().backward()
    for x in args:
        assert torch.isfinite(x.grad).all()
    assert (args[0].grad[2] == 0).all()  # the empty sequence's queries get no gradient


def test_torch_causal_with_kv_lengths_declines():
    """Causal + kv_lengths would need a boolean attn_mask, through which torch leaks masked
    NaN keys into every row: the call stays portable."""
    b = _backend("torch-cpu")
    x = b.from_numpy(np.zeros((1, 1, 4, 8)), "float32")
    plan = attnspec.native_plan(x, x, x, causal=True, kv_lengths=2)
    assert plan.kernel is None
    assert "ATT-LEAK-1" in plan.reason


def test_jax_native_under_jit(rng):
    """The plan reads static facts only, so the dispatch happens under jax.jit too."""
    b = _backend("jax-cpu")
    import jax

    (q, k, v), args = _qkv(b, rng, (2, 4, 8, 8), (2, 2, 8, 8))
    f = jax.jit(lambda q, k, v: attnspec.scaled_dot_product_attention(
        q, k, v, causal=True, implementation="native"))
    np.testing.assert_allclose(np.asarray(f(*args)), oracle(q, k, v, causal=True)[0],
                               atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda jnp: jnp.zeros((1, 2, 4, 8), dtype=jnp.float64), "float64"),
    (lambda jnp: jnp.zeros((2, 4, 8), dtype=jnp.float32), "4-d"),
])
def test_jax_declines_what_it_gets_wrong(make, reason):
    b = _backend("jax-cpu")
    import jax.numpy as jnp

    if reason == "float64" and "float64" not in b.dtypes:
        pytest.skip("jax-cpu: no float64 (jax_enable_x64 is off)")
    x = make(jnp)
    plan = attnspec.native_plan(x, x, x)
    assert plan.kernel is None
    assert reason in plan.reason
    plan = attnspec.native_plan(x, x, x, kv_lengths=2)
    assert plan.kernel is None


def test_auto_without_a_kernel_is_the_portable_path(xb, rng):
    """On backends without a kernel (NumPy, array-api-strict, Dask), 'auto' is 'portable'
    bit for bit and 'native' is a ValueError that says so."""
    (_q, _k, _v), args = _qkv(xb, rng, (1, 2, 6, 8), (1, 2, 6, 8), xb.dtypes[0])
    plan = attnspec.native_plan(*args, causal=True, implementation="native")
    if plan.kernel is not None:
        pytest.skip(f"{xb.name} has a native kernel ({plan.kernel}); tested above")
    auto = attnspec.scaled_dot_product_attention(*args, causal=True, implementation="auto")
    portable = attnspec.scaled_dot_product_attention(*args, causal=True)
    np.testing.assert_array_equal(xb.to_numpy(auto), xb.to_numpy(portable))
    with pytest.raises(ValueError, match="no native kernel"):
        attnspec.scaled_dot_product_attention(*args, implementation="native")


@pytest.mark.parametrize("bad", ["fast", "", None, 1])
def test_implementation_is_validated(bad):
    x = np.zeros((1, 2, 4))
    with pytest.raises(ValueError, match="implementation must be one of"):
        attnspec.scaled_dot_product_attention(x, x, x, implementation=bad)


class _RecordingKernel:
    """A NumPy 'kernel' that records what it was given and computes the portable result."""

    name = "test.recording"
    exact = True  # what lets implementation="auto" take it

    def __init__(self):
        self.calls = []

    def handles(self, xp):
        return "numpy" in xp.__name__

    def decline(self, call):
        return "odd Lq" if call.shape.lq % 2 else None

    def __call__(self, call):
        self.calls.append(call)
        return attnspec.scaled_dot_product_attention(call.query, call.key, call.value,
                                                     causal=call.causal, scale=call.scale,
                                                     kv_lengths=call.kv_lengths)


def test_registered_kernels_are_asked_first(monkeypatch, rng):
    """register(): a user's kernel takes the calls it accepts; K/V past kv_lengths arrive
    zeroed; declined calls say the kernel's reason."""
    monkeypatch.setattr(native, "_registered", list(native.kernels()))
    kernel = _RecordingKernel()
    native.register(kernel)
    assert native.kernels()[0] is kernel
    q, k, v = (rng.standard_normal((1, 2, 4, 8)) for _ in range(3))
    k[..., 3:, :] = np.nan
    out = attnspec.scaled_dot_product_attention(q, k, v, kv_lengths=3, implementation="auto")
    assert len(kernel.calls) == 1
    assert kernel.calls[0].scale == pytest.approx(8 ** -0.5)
    assert np.isfinite(kernel.calls[0].key).all()
    assert np.isfinite(out).all()
    assert not np.isnan(k[..., :3, :]).any()  # the caller's key was not touched...
    assert np.isnan(k[..., 3:, :]).all()  # ...neither where it was zeroed for the kernel
    odd = rng.standard_normal((1, 2, 5, 8))
    assert attnspec.native_plan(odd, odd, odd).reason == "test.recording: odd Lq"
    with pytest.raises(TypeError, match=r"kernel must have a .name. attribute"):
        native.register(object())


def test_auto_passes_over_a_kernel_measured_slower(rng):
    """jax.nn.dot_product_attention on the CPU is right but slower than the portable path
    (benchmarks/): 'auto' keeps the portable path and says why; 'native' still uses it."""
    b = _backend("jax-cpu")
    (q, k, v), args = _qkv(b, rng, (1, 2, 8, 8), (1, 2, 8, 8))
    auto = attnspec.native_plan(*args, causal=True)
    assert auto.kernel is None
    assert "slower" in auto.reason
    assert attnspec.native_plan(*args, causal=True, implementation="native").kernel
    out = attnspec.scaled_dot_product_attention(*args, causal=True, implementation="auto")
    np.testing.assert_allclose(np.asarray(out), oracle(q, k, v, causal=True)[0],
                               atol=2e-5, rtol=2e-5)


def test_auto_never_takes_a_kernel_that_is_exact_for_finite_inputs_only(rng):
    """torch SDPA gives 0, not NaN (SMX-4), for a row whose only attended key is NaN, so
    'auto' keeps the portable path (spec result) and says why; 'native' takes the kernel,
    which agrees for finite inputs."""
    b = _backend("torch-cpu")
    q = b.from_numpy(np.ones((1, 1, 2, 4)), "float32")
    k = np.ones((1, 1, 3, 4))
    k[..., 0, :] = np.nan  # causal row 0 attends key 0 only
    k = b.from_numpy(k, "float32")
    plan = attnspec.native_plan(q, k, k, causal=True)
    assert plan.kernel is None
    assert "finite inputs only" in plan.reason
    auto = b.to_numpy(attnspec.scaled_dot_product_attention(q, k, k, causal=True,
                                                            implementation="auto"))
    assert np.isnan(auto[0, 0, 0]).all()  # SMX-4: the row's only key is NaN
    finite = b.from_numpy(rng.standard_normal((1, 1, 3, 4)), "float32")
    native = attnspec.scaled_dot_product_attention(q, finite, finite, causal=True,
                                                   implementation="native")
    portable = attnspec.scaled_dot_product_attention(q, finite, finite, causal=True)
    np.testing.assert_allclose(b.to_numpy(native), b.to_numpy(portable), atol=1e-6)


def test_jax_float16_under_jit_is_not_dispatched_on_the_cpu():
    """Under jax.jit a tracer has no device; the kernel still sees it is on the CPU, where
    float16 dot_general is unsupported, and declines (fuzzing found this)."""
    b = _backend("jax-cpu")
    import jax
    import jax.numpy as jnp

    if jax.default_backend() != "cpu":
        pytest.skip("jax-cpu: the default JAX backend is not the CPU")
    f = jax.jit(lambda q: attnspec.scaled_dot_product_attention(q, q, q, implementation="auto"))
    out = f(jnp.ones((1, 1, 2, 16), jnp.float16))
    assert out.dtype == jnp.float16
    assert b.name == "jax-cpu"


def test_a_kernel_gets_the_cache_cut_after_the_longest_length(monkeypatch, rng):
    """A decode step over a preallocated cache hands a native kernel the keys up to the
    longest length, with ``shape.lk`` saying so, and the rows past each length zeroed even
    where they hold finite values (the NativeCall contract); the caller's arrays are not
    touched."""
    monkeypatch.setattr(native, "_registered", list(native.kernels()))
    kernel = _RecordingKernel()
    native.register(kernel)
    q = rng.standard_normal((2, 2, 2, 8))
    k, v = (rng.standard_normal((2, 2, 64, 8)) for _ in range(2))
    k[0, :, 10:], v[0, :, 10:] = 1e30, -1e30
    kept = k.copy()
    lengths = np.array([10, 20])
    out = attnspec.scaled_dot_product_attention(q, k, v, kv_lengths=lengths,
                                                implementation="native")
    (call,) = kernel.calls
    assert call.shape.lk == 20
    assert call.key.shape[-2] == 20
    assert call.value.shape[-2] == 20
    assert (call.key[0, :, 10:] == 0).all()
    assert (call.value[0, :, 10:] == 0).all()
    np.testing.assert_array_equal(k, kept)
    clean_k, clean_v = k.copy(), v.copy()
    clean_k[0, :, 10:], clean_v[0, :, 10:] = 0.0, 0.0
    want = oracle(q, clean_k, clean_v, kv_lengths=lengths)[0]
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
