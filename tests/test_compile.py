"""attnspec under compilers: ``jax.jit`` and ``torch.compile`` (inductor, CPU) give the eager
results and the eager gradients, on the direct path (``chunk_size=0``) and the chunked path
(online softmax over 2 x 2 ragged blocks), with a mask holding an empty row, lower-right causal,
``kv_lengths`` (one short sequence), grouped-query heads (4:2) and ``return_lse``.

Every compiled result is also graded against the float64 loop oracle (``tests/reference.py``)
and every float64 gradient against central differences of that oracle, so that "compiled
equals eager" cannot pass by both being wrong. Compilation is slow (inductor runs a C++
compiler), so each test compiles one program that holds every path and dtype it checks.
"""

from __future__ import annotations

import operator
import os
import shutil

import numpy as np
import pytest
from reference import ref_attention

import attnspec

pytestmark = [
    pytest.mark.slow,  # torch.compile and jax.jit compilations: `-m slow` (CI runs it)
    # array_api_compat memoises its type checks with functools.lru_cache; Dynamo traces
    # through the cache (harmless: they are pure functions of the type) and says so each time.
    pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated"),
]

B, HQ, HKV, LQ, LK, D, DV = 2, 4, 2, 9, 11, 8, 6
KV_LENGTHS = np.array([11, 5])
#: (block_q, block_k) of the chunked path: 2 x 2 ragged blocks (few blocks: each is a
#: kernel to compile).
CHUNK = (5, 6)
PATHS = {"direct": 0, "chunked": CHUNK}
OPTIONS = dict(causal=True, alignment="lower_right", return_lse=True)
#: compiled vs eager: the same operations, reordered or fused at most.
TIGHT = {"float64": 1e-12, "float32": 2e-6}
#: vs the float64 oracle (the suite's value tolerance, tests/attn_helpers.py).
TOL = {"float64": 1e-12, "float32": 1e-5}


@pytest.fixture(scope="module")
def problem():
    """q, k, v, mask (row 2 of batch 0 empty), cotangents for out and lse, and the oracle."""
    rng = np.random.default_rng(2024)
    q = rng.standard_normal((B, HQ, LQ, D))
    k = rng.standard_normal((B, HKV, LK, D))
    v = rng.standard_normal((B, HKV, LK, DV))
    mask = rng.random((B, 1, LQ, LK)) < 0.75
    mask[0, 0, 2] = False
    g_out = rng.standard_normal((B, HQ, LQ, DV))
    g_lse = rng.standard_normal((B, HQ, LQ))
    out, lse, _ = ref_attention(q, k, v, mask=mask, kv_lengths=KV_LENGTHS, causal=True,
                                alignment="lower_right")
    return dict(q=q, k=k, v=v, mask=mask, g_out=g_out, g_lse=g_lse, out=out, lse=lse)


def _loss(out, lse, g_out, g_lse, xp):
    """<out, g_out> + <lse, g_lse> over the rows that attend (lse finite)."""
    lse = xp.where(xp.isfinite(lse), lse, 0.0)
    return xp.sum(out * g_out) + xp.sum(lse * g_lse)


def _oracle_directional_derivative(problem, direction, eps=1e-6):
    """d loss / d (q, k, v) along ``direction`` by central differences of the float64 oracle
    (the empty and padding rows have lse -inf on both sides and drop out of the loss)."""

    def loss(t):
        q, k, v = (problem[n] + t * d for n, d in zip("qkv", direction, strict=True))
        out, lse, _ = ref_attention(q, k, v, mask=problem["mask"], kv_lengths=KV_LENGTHS,
                                    causal=True, alignment="lower_right")
        return _loss(out, lse, problem["g_out"], problem["g_lse"], np)

    return (loss(eps) - loss(-eps)) / (2 * eps)


def _check_outputs(results, eager, problem, dtype):
    for name, (out, lse) in results.items():
        e_out, e_lse = eager[name]
        np.testing.assert_allclose(out, e_out, rtol=TIGHT[dtype], atol=TIGHT[dtype],
                                   err_msg=f"{dtype} {name}: compiled out != eager")
        np.testing.assert_allclose(lse, e_lse, rtol=TIGHT[dtype], atol=TIGHT[dtype],
                                   err_msg=f"{dtype} {name}: compiled lse != eager")
        np.testing.assert_allclose(out, problem["out"], rtol=TOL[dtype], atol=TOL[dtype],
                                   err_msg=f"{dtype} {name}: out != float64 oracle")
        np.testing.assert_allclose(lse, problem["lse"], rtol=TOL[dtype], atol=TOL[dtype],
                                   err_msg=f"{dtype} {name}: lse != float64 oracle")
    assert np.isneginf(problem["lse"][0, :, 2]).all()  # the empty row is in the problem


# -- torch.compile --------------------------------------------------------------------------


def _torch():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    pytest.importorskip("torch._dynamo", reason="this torch has no torch.compile")
    return torch


def _need_cxx():
    """Inductor's CPU backend compiles C++; without a compiler only ``aot_eager`` would run,
    which tests tracing but not code generation."""
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("torch.compile(backend='inductor') on CPU needs a C++ compiler "
                    "(g++/c++/clang++); none on PATH")


def _torch_attend(q, k, v, mask, kv_lengths, chunk_size):
    return attnspec.scaled_dot_product_attention(q, k, v, mask=mask, kv_lengths=kv_lengths,
                                                 chunk_size=chunk_size, **OPTIONS)


def _torch_all(tensors, mask, kv_lengths):
    """One program: each (dtype, path) pair of ``tensors`` = {(dtype, path): (q, k, v)}."""
    return {key: _torch_attend(*qkv, mask, kv_lengths, PATHS[key[1]])
            for key, qkv in tensors.items()}


def _torch_inputs(torch, problem, requires_grad):
    tensors = {}
    for dtype in ("float64", "float32"):
        for path in PATHS:
            tensors[dtype, path] = tuple(
                torch.tensor(problem[n], dtype=getattr(torch, dtype)).requires_grad_(
                    requires_grad) for n in "qkv")
    return tensors, torch.tensor(problem["mask"]), torch.tensor(KV_LENGTHS)


def _numpy(t):
    return t.detach().double().numpy()


class _Recorder:
    """A torch.compile backend that keeps the FX graphs Dynamo captured, then hands them to
    ``backend`` ("inductor", "aot_eager", ...; ``None``: run them as captured, no
    AOTAutograd and no code generation)."""

    def __init__(self, backend: str | None):
        self.backend = backend
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        if self.backend is None:
            return gm.forward
        from torch._dynamo.backends.registry import lookup_backend

        return lookup_backend(self.backend)(gm, example_inputs)

    def in_place_calls(self) -> set[str]:
        """The in-place tensor operations in the captured graphs."""
        names = set()
        for gm in self.graphs:
            for node in gm.graph.nodes:
                if node.op == "call_method":
                    names.add(node.target)
                elif node.op == "call_function":
                    names.add(getattr(node.target, "__name__", str(node.target)))
        return names & _IN_PLACE


#: What ``x -= y``, ``x *= y``, ``x += y``, ``x /= y`` on tensors become in a Dynamo graph.
_IN_PLACE = {operator.isub.__name__, operator.imul.__name__, operator.iadd.__name__,
             operator.itruediv.__name__, "sub_", "mul_", "add_", "div_"}


def test_torch_compile_inductor_equals_eager_and_float64(problem):
    """torch.compile (inductor, C++ on CPU) of the direct and chunked paths gives the eager
    out and lse in float32 and float64, and both match the float64 oracle.

    No input requires grad, so the chunked path takes its in-place branch (``s -= shift``,
    ``acc *= correction``: ``array_api_compat.is_writeable_array`` decided on FakeTensors);
    the captured graph is checked to hold those in-place ops, so the values above cover
    their functionalisation by AOTAutograd and inductor."""
    torch = _torch()
    _need_cxx()
    torch._dynamo.reset()
    tensors, mask, kv = _torch_inputs(torch, problem, requires_grad=False)
    recorder = _Recorder(backend="inductor")
    compiled = torch.compile(_torch_all, backend=recorder)(tensors, mask, kv)
    eager = _torch_all(tensors, mask, kv)
    for dtype in ("float64", "float32"):
        _check_outputs({p: tuple(map(_numpy, compiled[dtype, p])) for p in PATHS},
                       {p: tuple(map(_numpy, eager[dtype, p])) for p in PATHS},
                       problem, dtype)
    assert recorder.in_place_calls(), "no in-place op traced for tensors without grad"


#: The backend the gradient test compiles with. Inductor compiles forward and backward to
#: C++ (about a minute on a busy 2-core machine without a warm cache; the forward test above
#: already covers inductor's code generation), so by default the gradient test stops at
#: AOTAutograd ("aot_eager": Dynamo's graph, the joint forward/backward graph AOTAutograd
#: derives and functionalises, run by eager kernels). ``ATTNSPEC_INDUCTOR_GRADIENTS=1``
#: compiles them with inductor too.
GRAD_BACKEND = "inductor" if os.environ.get("ATTNSPEC_INDUCTOR_GRADIENTS") == "1" else \
    "aot_eager"


def test_torch_compile_gradients_equal_eager_and_finite_differences(problem):
    """Forward and backward through torch.compile (AOTAutograd; inductor with
    ``ATTNSPEC_INDUCTOR_GRADIENTS=1``): dQ, dK, dV of both paths in float32 and float64
    equal eager autograd's; float64 gradients match central differences of the float64
    oracle; the empty row gets dQ = 0, never NaN. With grad the chunked path must not mutate
    (it would overwrite saved activations): no in-place op is traced."""
    torch = _torch()
    if GRAD_BACKEND == "inductor":
        _need_cxx()
    torch._dynamo.reset()
    recorder = _Recorder(backend=GRAD_BACKEND)

    def grads(fn):
        tensors, mask, kv = _torch_inputs(torch, problem, requires_grad=True)
        total = 0
        for out, lse in fn(tensors, mask, kv).values():
            g_out, g_lse = (torch.tensor(problem[n], dtype=out.dtype) for n in ("g_out",
                                                                                   "g_lse"))
            total = total + _loss(out, lse, g_out, g_lse, torch).double()
        total.backward()
        return {key: [_numpy(t.grad) for t in qkv] for key, qkv in tensors.items()}

    compiled = grads(torch.compile(_torch_all, backend=recorder))
    eager = grads(_torch_all)
    assert recorder.graphs, "nothing was compiled"
    assert not recorder.in_place_calls(), recorder.in_place_calls()
    _check_gradients(compiled, eager, problem)


def _check_gradients(compiled, eager, problem):
    """compiled == eager (tight) for every key eager has; every float64 gradient matches
    the oracle's directional derivative; finite; dQ = 0 on the empty row."""
    rng = np.random.default_rng(7)
    direction = [rng.standard_normal(problem[n].shape) for n in "qkv"]
    expected = _oracle_directional_derivative(problem, direction)
    for (dtype, path), got in compiled.items():
        got = [np.asarray(g, np.float64) for g in got]
        for name, g in zip("qkv", got, strict=True):
            assert np.isfinite(g).all(), f"{dtype} {path} d{name}: not finite"
        for name, g, e in zip("qkv", got, eager.get((dtype, path), ()), strict=False):
            np.testing.assert_allclose(g, np.asarray(e, np.float64), rtol=TIGHT[dtype],
                                       atol=TIGHT[dtype] * 10,
                                       err_msg=f"{dtype} {path}: compiled d{name} != eager")
        assert (got[0][0, :, 2] == 0).all(), f"{dtype} {path}: empty row has nonzero dQ"
        along = sum(float(np.sum(g * d)) for g, d in zip(got, direction, strict=True))
        tol = 1e-7 if dtype == "float64" else 1e-3
        assert along == pytest.approx(expected, rel=tol, abs=tol), (dtype, path)




def test_torch_compile_fullgraph(problem):
    """Every feature of the problem (mask, causal, kv_lengths, GQA, lse; both paths) traces
    into one graph: ``torch.compile(fullgraph=True)`` compiles."""
    torch = _torch()
    torch._dynamo.reset()
    tensors, mask, kv = _torch_inputs(torch, problem, requires_grad=False)
    tensors = {key: t for key, t in tensors.items() if key[0] == "float64"}
    recorder = _Recorder(backend=None)
    torch.compile(_torch_all, backend=recorder, fullgraph=True)(tensors, mask, kv)
    assert len(recorder.graphs) == 1


@pytest.mark.parametrize("implementation", ["auto", "native"])
def test_torch_compile_fullgraph_plain_call(implementation, monkeypatch):
    """A plain call (no mask, no option: the kind attnspec plans for repeated calls) compiles
    with ``fullgraph=True`` (which raises on any graph break) when it is the process's first
    call, and equals the eager call and a closed form. Two ways it failed: planning the call
    while Dynamo traced (a side effect Dynamo cannot replay), and finding the native kernels
    through ``importlib.metadata``, which Dynamo refuses to trace."""
    torch = _torch()
    torch._dynamo.reset()
    monkeypatch.setattr(attnspec.native, "_registered", [])  # as in a fresh process
    monkeypatch.setattr(attnspec.native, "_loaded", False)
    rng = np.random.default_rng(3)
    q, k, v = (torch.tensor(rng.standard_normal((1, 2, 3, 4)), dtype=torch.float32)
               for _ in range(3))

    def call(q, k, v):
        return attnspec.scaled_dot_product_attention(q, k, v, implementation=implementation)

    recorder = _Recorder(backend=None)
    compiled = torch.compile(call, backend=recorder, fullgraph=True)
    got = [_numpy(compiled(q, k, v)) for _ in range(2)]  # the second call: nothing planned
    assert recorder.graphs, "nothing was compiled"
    assert attnspec.native._loaded, "the kernels were not looked for"
    assert attnspec.native._registered, "no kernel was found"
    s = np.einsum("bhid,bhjd->bhij", *(_numpy(x) for x in (q, k))) / 2.0
    w = np.exp(s - s.max(-1, keepdims=True))
    expected = np.einsum("bhij,bhjd->bhid", w / w.sum(-1, keepdims=True), _numpy(v))
    for out in got:
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[0], _numpy(call(q, k, v)))


# -- jax.jit --------------------------------------------------------------------------------


def _jax():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    jax.config.update("jax_enable_x64", True)  # as conftest.py; this file also runs alone
    return jax


#: What must be static under jax.jit: every argument that decides the program's structure.
STATIC = ("causal", "alignment", "chunk_size", "return_lse", "window", "return_weights")


def _jax_all(tensors, mask, kv_lengths, attend):
    return {key: attend(*qkv, mask=mask, kv_lengths=kv_lengths, chunk_size=PATHS[key[1]],
                        **OPTIONS)
            for key, qkv in tensors.items()}


def _jax_inputs(problem):
    """The problem as JAX arrays committed to the CPU (where the computations then run: on a
    GPU, float32 matmuls may use TF32, which is not what these tolerances are for)."""
    import jax
    import jax.numpy as jnp

    cpu = jax.devices("cpu")[0]

    def put(x, dtype=None):
        return jax.device_put(jnp.asarray(x, dtype=dtype), cpu)

    tensors = {(dtype, path): tuple(put(problem[n], dtype) for n in "qkv")
               for dtype in ("float64", "float32") for path in PATHS}
    return tensors, put(problem["mask"]), put(KV_LENGTHS)


def test_jax_jit_equals_eager_and_float64(problem):
    """``jax.jit(attnspec.scaled_dot_product_attention, static_argnames=STATIC)``: the
    library function itself, jitted with the structural arguments static and mask /
    kv_lengths traced, gives the op-by-op (eager) results on both paths in float32 and
    float64, and both match the float64 oracle."""
    jax = _jax()
    tensors, mask, kv = _jax_inputs(problem)
    jitted = jax.jit(attnspec.scaled_dot_product_attention, static_argnames=STATIC)
    compiled = _jax_all(tensors, mask, kv, jitted)
    eager = _jax_all(tensors, mask, kv, attnspec.scaled_dot_product_attention)
    for dtype in ("float64", "float32"):
        _check_outputs({p: tuple(map(np.asarray, compiled[dtype, p])) for p in PATHS},
                       {p: tuple(map(np.asarray, eager[dtype, p])) for p in PATHS},
                       problem, dtype)


def test_jax_jit_needs_structural_arguments_static():
    """A traced ``causal`` or ``chunk_size`` cannot choose a program: attnspec says which
    argument must be static (a TypeError naming it), instead of failing inside a trace."""
    jax = _jax()
    import jax.numpy as jnp

    q = jnp.ones((1, 2, 3, 4))
    for name, value in (("causal", True), ("chunk_size", 2)):
        fn = jax.jit(lambda q, x, name=name: attnspec.scaled_dot_product_attention(
            q, q, q, **{name: x}))
        with pytest.raises(TypeError, match=name):
            fn(q, value)


def test_jax_jit_gradients_equal_eager_and_finite_differences(problem):
    """``jax.jit(jax.grad(loss))`` over both paths and dtypes: float64 gradients equal
    op-by-op ``jax.grad`` of the direct path (tight: the chunked path's gradients differ
    from the direct path's by rounding only); every gradient matches central differences of
    the float64 oracle; the empty row gets dQ = 0. (Op-by-op JAX compiles every primitive
    once per shape: eager gradients of all four would cost a minute, so eager runs once.)"""
    jax = _jax()
    import jax.numpy as jnp

    tensors, mask, kv = _jax_inputs(problem)

    def loss(tensors):
        total = 0.0
        for (dtype, _), (out, lse) in _jax_all(
                tensors, mask, kv, attnspec.scaled_dot_product_attention).items():
            g_out, g_lse = (jnp.asarray(problem[n], dtype=dtype) for n in ("g_out", "g_lse"))
            total = total + _loss(out, lse, g_out, g_lse, jnp).astype("float64")
        return total

    compiled = jax.jit(jax.grad(loss))(tensors)
    eager = jax.grad(loss)({("float64", "direct"): tensors["float64", "direct"]})
    eager = {("float64", path): eager["float64", "direct"] for path in PATHS}
    _check_gradients(compiled, eager, problem)
