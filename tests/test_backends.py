"""The backend registry (attnspec.backends) and the torch MultiheadAttention converters."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest

import attnspec
from attnspec.backends import (
    CAPABILITIES,
    DTYPE_NAMES,
    Backend,
    BackendUnavailableError,
    all_backends,
    available,
    get,
    names,
)

EXPECTED_NAMES = [
    "numpy",
    "array_api_strict",
    "torch-cpu",
    "torch-cuda",
    "jax-cpu",
    "jax-gpu",
    "cupy",
    "dask",
]

# Values that stress a bit-exact copy: signed zero, infinities, NaN, subnormals, extremes.
_SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.5, 1e-3, 65504.0, 6e-8]


def _payload(rng: np.random.Generator, dtype: str) -> np.ndarray:
    """A (4, 3, 5) array in ``dtype`` (float32 for bfloat16) mixing random and special values."""
    host = "float32" if dtype == "bfloat16" else dtype
    a = rng.standard_normal((4, 3, 5)).astype(host)
    flat = a.reshape(-1)
    special = np.array(_SPECIAL, dtype=host)
    flat[: special.size] = special
    if dtype == "float64":
        flat[-1] = np.finfo(np.float64).tiny / 8  # subnormal
    if dtype == "float32":
        flat[-1] = np.finfo(np.float32).tiny / 8
    if dtype == "bfloat16":
        # Keep only the upper 16 bits of each float32: exactly representable in bfloat16.
        bits = a.view(np.uint32) & np.uint32(0xFFFF0000)
        a = bits.view(np.float32)
    return a


def _bits_equal(a: np.ndarray, b: np.ndarray, *, any_nan: bool = False) -> bool:
    """Bitwise equality; with ``any_nan`` a NaN matches any NaN (casts may change payloads)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if any_nan:
        nan = np.isnan(a)
        if not np.array_equal(nan, np.isnan(b)):
            return False
        a, b = a[~nan], b[~nan]
    return a.tobytes() == b.tobytes()


# -- registry ---------------------------------------------------------------------------------


def test_registry_lists_every_backend_in_order() -> None:
    assert [b.name for b in all_backends()] == EXPECTED_NAMES
    assert names() == EXPECTED_NAMES


def test_registry_never_raises_and_absent_backends_say_why() -> None:
    usable = available()
    assert all(isinstance(b, Backend) for b in usable)
    assert {b.name for b in usable} <= set(EXPECTED_NAMES)
    assert "numpy" in {b.name for b in usable}
    for backend in all_backends():
        assert isinstance(backend.available, bool)
        if backend.available:
            assert backend.reason is None
        else:
            assert isinstance(backend.reason, str)
            assert backend.reason.strip()
            assert backend not in usable
        assert backend.name in repr(backend)


def test_get_returns_the_registered_object() -> None:
    for backend in all_backends():
        assert get(backend.name) is backend


@pytest.mark.parametrize("bad", ["torch", "Numpy", "", "jax:cpu"])
def test_get_unknown_name_lists_known_names(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown backend") as info:
        get(bad)
    message = str(info.value)
    assert repr(bad) in message
    for name in EXPECTED_NAMES:
        assert name in message


def test_unavailable_backend_refuses_work_with_its_reason() -> None:
    absent = [b for b in all_backends() if not b.available]
    if not absent:
        pytest.skip("every backend is available here")
    for backend in absent:
        for call in (
            backend.namespace,
            lambda b=backend: b.from_numpy(np.zeros(2)),
            lambda b=backend: b.dtype("float32"),
            lambda b=backend: b.device,
        ):
            with pytest.raises(BackendUnavailableError) as info:
                call()
            assert str(info.value) == backend.reason


def test_cupy_reports_why_it_is_absent() -> None:
    backend = get("cupy")
    if not backend.available:
        assert "cupy" in backend.reason.lower()
        assert "not installed" in backend.reason or "no CUDA device" in backend.reason
        pytest.skip(backend.reason)
    assert backend.from_numpy(np.ones(3)).shape == (3,)


def test_torch_cuda_and_jax_gpu_reasons_name_the_device() -> None:
    for name in ("torch-cuda", "jax-gpu"):
        backend = get(name)
        if not backend.available:
            assert backend.reason.startswith((name + ":", "PyTorch:", "JAX:"))


# -- capabilities and dtypes ------------------------------------------------------------------


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_capabilities_are_known_and_consistent_with_dtypes(name: str) -> None:
    backend = get(name)
    caps = backend.capabilities
    assert isinstance(caps, frozenset)
    assert caps <= CAPABILITIES
    assert "float32" in backend.dtypes
    assert set(backend.dtypes) <= set(DTYPE_NAMES)
    assert list(backend.dtypes) == [n for n in DTYPE_NAMES if n in backend.dtypes]
    for dtype in ("float64", "float16", "bfloat16"):
        assert (dtype in backend.dtypes) == (dtype in caps) == backend.has(dtype)
    for capability in CAPABILITIES:
        assert backend.has(capability) == (capability in caps)


def test_has_rejects_unknown_capability() -> None:
    with pytest.raises(ValueError, match="capability must be one of"):
        get("numpy").has("gradients")


@pytest.mark.parametrize(
    ("name", "present", "absent"),
    [
        ("numpy", {"writeable", "float64", "float16"}, {"lazy", "jit", "autograd", "bfloat16"}),
        ("array_api_strict", {"float64"}, {"float16", "bfloat16", "lazy", "jit", "autograd"}),
        ("torch-cpu", {"autograd", "writeable", "float64", "float16", "bfloat16"}, {"lazy"}),
        ("torch-cuda", {"autograd", "writeable", "bfloat16"}, {"lazy"}),
        ("jax-cpu", {"jit", "autograd", "float16", "bfloat16"}, {"writeable", "lazy"}),
        ("jax-gpu", {"jit", "autograd", "bfloat16"}, {"writeable", "lazy"}),
        ("cupy", {"writeable", "float64", "float16"}, {"bfloat16", "lazy", "autograd"}),
        ("dask", {"lazy", "float64"}, {"jit", "autograd", "bfloat16"}),
    ],
)
def test_declared_capabilities(name: str, present: set[str], absent: set[str]) -> None:
    caps = get(name).capabilities
    assert present <= caps
    assert not absent & caps


def test_jax_float64_follows_x64_at_call_time() -> None:
    jax = pytest.importorskip("jax")
    backend = get("jax-cpu")
    before = jax.config.read("jax_enable_x64")
    try:
        jax.config.update("jax_enable_x64", False)
        assert not backend.has("float64")
        assert "float64" not in backend.dtypes
        if backend.available:
            with pytest.raises(ValueError, match="jax_enable_x64"):
                backend.dtype("float64")
        jax.config.update("jax_enable_x64", True)
        assert backend.has("float64")
        assert backend.dtypes[0] == "float64"
    finally:
        jax.config.update("jax_enable_x64", before)


def test_dtype_names(xb: Backend) -> None:
    for name in xb.dtypes:
        x = xb.from_numpy(np.zeros((2, 2)), dtype=name)
        assert x.dtype == xb.dtype(name)
    for name in set(DTYPE_NAMES) - set(xb.dtypes):
        with pytest.raises(ValueError, match=f"{xb.name}: dtype '{name}' is not supported"):
            xb.dtype(name)
        with pytest.raises(ValueError, match="not supported"):
            xb.from_numpy(np.zeros(2), dtype=name)
    for bad in ("float8", "int32", "double"):
        with pytest.raises(ValueError, match="dtype must be one of"):
            xb.dtype(bad)


# -- data movement ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_round_trip_is_bit_exact(xb: Backend, rng: np.random.Generator, dtype: str) -> None:
    if dtype not in xb.dtypes:
        pytest.skip(f"{xb.name}: no {dtype}")
    a = _payload(rng, dtype)
    # Default dtype (kept from the NumPy array) and an explicit one.
    for requested in (None, dtype):
        x = xb.from_numpy(a, dtype=requested)
        assert x.dtype == xb.dtype(dtype)
        assert tuple(x.shape) == a.shape
        back = xb.to_numpy(xb.synchronize(x))
        assert isinstance(back, np.ndarray)
        assert _bits_equal(back, a)


@pytest.mark.needs("bfloat16")
def test_bfloat16_round_trip_of_representable_values(
    xb: Backend, rng: np.random.Generator
) -> None:
    a = _payload(rng, "bfloat16")
    x = xb.from_numpy(a, dtype="bfloat16")
    assert x.dtype == xb.dtype("bfloat16")
    back = xb.to_numpy(x)
    assert back.dtype == np.float32
    # torch's vectorised float32 -> bfloat16 cast turns NaN into 0xFFFF: only the payload.
    assert _bits_equal(back, a, any_nan=True)


def test_round_trip_of_bool_and_integer_arrays(xb: Backend) -> None:
    mask = np.array([[True, False, True], [False, False, True]])
    assert np.array_equal(xb.to_numpy(xb.from_numpy(mask)), mask)
    lengths = np.array([3, 0, 2], dtype=np.int32)
    back = xb.to_numpy(xb.from_numpy(lengths))
    assert np.array_equal(back, lengths)
    assert back.dtype == np.int32


def test_non_contiguous_and_read_only_inputs(xb: Backend, rng: np.random.Generator) -> None:
    a = rng.standard_normal((6, 5)).astype(np.float32)
    view = a[::2, ::-1].T
    view.flags.writeable = False
    assert _bits_equal(xb.to_numpy(xb.from_numpy(view)), np.ascontiguousarray(view))
    swapped = a.astype(a.dtype.newbyteorder(">"))
    assert np.array_equal(xb.to_numpy(xb.from_numpy(swapped)), a)


def test_from_numpy_copies_and_to_numpy_gives_a_writeable_copy(xb: Backend) -> None:
    a = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    x = xb.from_numpy(a)
    a[...] = -1.0  # must not reach the backend array
    back = xb.to_numpy(x)
    assert np.array_equal(back, np.arange(6.0, dtype=np.float32).reshape(2, 3))
    assert back.flags.writeable
    back[...] = 7.0  # must not reach the backend array either
    assert np.array_equal(xb.to_numpy(x), np.arange(6.0, dtype=np.float32).reshape(2, 3))


def test_namespace_and_device_match_the_arrays(xb: Backend) -> None:
    x = xb.from_numpy(np.ones((3, 2), dtype=np.float32))
    xp = xb.namespace()
    assert array_api_compat.array_namespace(x) is xp
    assert xb.namespace() is xp
    assert array_api_compat.device(x) == xb.device
    y = xp.sum(xp.multiply(x, x))
    assert float(xb.to_numpy(y)) == 6.0


def test_writeable_capability_matches_array_api_compat(xb: Backend) -> None:
    x = xb.from_numpy(np.zeros(3, dtype=np.float32))
    assert array_api_compat.is_writeable_array(x) == xb.has("writeable")


def test_synchronize_returns_its_argument(xb: Backend) -> None:
    x = xb.from_numpy(np.ones(4))
    assert xb.synchronize(x) is x
    assert xb.synchronize() is None


def test_to_numpy_accepts_numpy_and_scalars(xb: Backend) -> None:
    assert np.array_equal(xb.to_numpy(np.arange(3)), np.arange(3))
    assert xb.to_numpy(2.5) == 2.5


@pytest.mark.needs("lazy")
def test_lazy_backends_split_the_leading_axis(xb: Backend) -> None:
    x = xb.from_numpy(np.zeros((4, 3)))
    assert x.numblocks == (2, 1)
    assert xb.from_numpy(np.zeros((1, 3))).numblocks == (1, 1)
    assert xb.from_numpy(np.zeros((5,))).chunks == ((3, 2),)
    assert xb.to_numpy(xb.from_numpy(np.zeros(()))).shape == ()


@pytest.mark.needs("jit")
def test_needs_marker_only_runs_on_backends_with_the_capability(xb: Backend) -> None:
    assert xb.has("jit")


def test_rng_is_seeded_from_the_node_id(
    rng: np.random.Generator, request: pytest.FixtureRequest
) -> None:
    import zlib

    expected = np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
    assert rng.integers(0, 2**31, size=4).tolist() == expected.integers(0, 2**31, size=4).tolist()


# -- torch.nn.MultiheadAttention converters ---------------------------------------------------

torch_mha_cases = pytest.mark.skipif(
    not get("torch-cpu").available, reason=get("torch-cpu").reason or ""
)


def _mha(embed: int, heads: int, *, kdim=None, vdim=None, bias=True, batch_first=True, seed=0):
    import torch

    torch.manual_seed(seed)
    module = torch.nn.MultiheadAttention(
        embed, heads, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first, dropout=0.0
    ).double()
    with torch.no_grad():  # non-zero biases so that a dropped bias would be noticed
        for name, p in module.named_parameters():
            if "bias" in name:
                p.normal_()
    return module.eval()


def _bool_keep(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random torch-style bool mask (True = forbidden) that never forbids key 0."""
    m = rng.random(shape) < 0.4
    m[..., 0] = False
    return m


def _masks(kind: str, rng, n: int, heads: int, lq: int, lk: int):
    """(attn_mask, key_padding_mask) in torch's conventions, as float64/bool numpy arrays."""
    attn = kpm = None
    if "kpm_bool" in kind:
        kpm = _bool_keep(rng, (n, lk))
    if "kpm_float" in kind:
        kpm = rng.standard_normal((n, lk))
    if "attn_bool2" in kind:
        attn = _bool_keep(rng, (lq, lk))
    if "attn_bool3" in kind:
        attn = _bool_keep(rng, (n * heads, lq, lk))
    if "attn_float2" in kind:
        attn = rng.standard_normal((lq, lk))
        attn[rng.random((lq, lk)) < 0.3] = -np.inf
        attn[:, 0] = 0.5
    if "attn_float3" in kind:
        attn = rng.standard_normal((n * heads, lq, lk))
    return attn, kpm


MASK_KINDS = [
    "none",
    "kpm_bool",
    "kpm_float",
    "attn_bool2",
    "attn_bool3",
    "attn_float2",
    "attn_float3",
    "attn_bool2+kpm_bool",
    "attn_bool3+kpm_bool",
    "attn_float2+kpm_bool",
    "attn_bool2+kpm_float",
]


@torch_mha_cases
# torch deprecates mixing a bool and a float mask but still supports it; attnspec must match.
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
@pytest.mark.parametrize("dims", [None, (3, 5)], ids=["packed", "kdim_vdim"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("average", [True, False], ids=["avg", "per_head"])
def test_mha_matches_torch_multihead_attention(
    rng: np.random.Generator, batch_first: bool, dims, bias: bool, kind: str, average: bool
) -> None:
    import torch

    from attnspec.backends.torch import mask_from_torch_mha, mha_weights_from_torch

    n, lq, lk, embed, heads = 2, 4, 6, 8, 2
    kdim, vdim = dims if dims else (embed, embed)
    module = _mha(embed, heads, kdim=dims and kdim, vdim=dims and vdim, bias=bias,
                  batch_first=batch_first)
    q = torch.from_numpy(rng.standard_normal((n, lq, embed)))
    k = torch.from_numpy(rng.standard_normal((n, lk, kdim)))
    v = torch.from_numpy(rng.standard_normal((n, lk, vdim)))
    attn_np, kpm_np = _masks(kind, rng, n, heads, lq, lk)
    attn = None if attn_np is None else torch.from_numpy(attn_np)
    kpm = None if kpm_np is None else torch.from_numpy(kpm_np)

    def to_torch_layout(x):
        return x if batch_first else x.transpose(0, 1)

    with torch.no_grad():
        ref_out, ref_w = module(
            to_torch_layout(q), to_torch_layout(k), to_torch_layout(v),
            key_padding_mask=kpm, attn_mask=attn, need_weights=True,
            average_attn_weights=average,
        )
        ref_only = module(
            to_torch_layout(q), to_torch_layout(k), to_torch_layout(v),
            key_padding_mask=kpm, attn_mask=attn, need_weights=False,
        )[0]
    ref_out = to_torch_layout(ref_out)
    ref_only = to_torch_layout(ref_only)

    weights = mha_weights_from_torch(module)
    assert weights["num_heads"] == heads
    mask, add = mask_from_torch_mha(attn, kpm, num_heads=heads, batch_size=n)
    with torch.no_grad():
        out, w = attnspec.multi_head_attention(
            q, k, v, **weights, mask=mask, bias=add, need_weights=True,
            average_weights=average,
        )
        out_only = attnspec.multi_head_attention(q, k, v, **weights, mask=mask, bias=add)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref_out.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out_only.numpy(), ref_only.numpy(), rtol=1e-12, atol=1e-12)
    assert w.shape == ref_w.shape
    np.testing.assert_allclose(w.numpy(), ref_w.numpy(), rtol=1e-12, atol=1e-12)


@torch_mha_cases
def test_mha_unbatched_input_matches_torch(rng: np.random.Generator) -> None:
    import torch

    from attnspec.backends.torch import mask_from_torch_mha, mha_weights_from_torch

    lq, lk, embed, heads = 3, 5, 6, 3
    module = _mha(embed, heads)
    q = torch.from_numpy(rng.standard_normal((lq, embed)))
    kv = torch.from_numpy(rng.standard_normal((lk, embed)))
    kpm = torch.from_numpy(_bool_keep(rng, (lk,)))
    attn = torch.from_numpy(_bool_keep(rng, (lq, lk)))
    with torch.no_grad():
        ref_out, ref_w = module(q, kv, kv, key_padding_mask=kpm, attn_mask=attn,
                                average_attn_weights=False)
        mask, add = mask_from_torch_mha(attn, kpm, num_heads=heads)
        assert add is None
        out, w = attnspec.multi_head_attention(
            q, kv, **mha_weights_from_torch(module), mask=mask, need_weights=True,
            average_weights=False,
        )
    np.testing.assert_allclose(out.numpy(), ref_out.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.numpy(), ref_w.numpy(), rtol=1e-12, atol=1e-12)


@torch_mha_cases
@pytest.mark.parametrize("dims", [None, (3, 5)], ids=["packed", "kdim_vdim"])
def test_mha_gradients_reach_the_module_parameters(rng: np.random.Generator, dims) -> None:
    import torch

    from attnspec.backends.torch import mha_weights_from_torch

    embed, heads = 8, 4
    kdim, vdim = dims if dims else (embed, embed)
    module = _mha(embed, heads, kdim=dims and kdim, vdim=dims and vdim)
    q = torch.from_numpy(rng.standard_normal((2, 3, embed)))
    k = torch.from_numpy(rng.standard_normal((2, 5, kdim)))
    v = torch.from_numpy(rng.standard_normal((2, 5, vdim)))
    module(q, k, v, need_weights=False)[0].square().sum().backward()
    expected = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    out = attnspec.multi_head_attention(q, k, v, **mha_weights_from_torch(module))
    out.square().sum().backward()
    for name, p in module.named_parameters():
        np.testing.assert_allclose(
            p.grad.numpy(), expected[name].numpy(), rtol=1e-10, atol=1e-12, err_msg=name
        )


@torch_mha_cases
@pytest.mark.parametrize("dims", [None, (3, 5)], ids=["packed", "kdim_vdim"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_state_dict_gives_the_same_weights_as_the_module(dims, bias: bool) -> None:
    from attnspec.backends.torch import mha_weights_from_torch

    kdim, vdim = dims if dims else (None, None)
    module = _mha(8, 2, kdim=kdim, vdim=vdim, bias=bias)
    from_module = mha_weights_from_torch(module)
    from_sd = mha_weights_from_torch(module.state_dict(), num_heads=2)
    assert set(from_module) == set(from_sd) == {
        "w_q", "w_k", "w_v", "w_o", "b_q", "b_k", "b_v", "b_o", "num_heads"
    }
    for key, value in from_module.items():
        if key == "num_heads" or value is None:
            assert from_sd[key] == value
        else:
            assert from_sd[key].shape == value.shape
            assert from_sd[key].equal(value.detach())
    assert tuple(from_module["w_q"].shape) == (8, 8)
    assert tuple(from_module["w_k"].shape) == ((kdim or 8), 8)
    assert tuple(from_module["w_v"].shape) == ((vdim or 8), 8)
    assert tuple(from_module["w_o"].shape) == (8, 8)
    assert (from_module["b_q"] is None) == (not bias)
    assert "num_heads" not in mha_weights_from_torch(module.state_dict())


@torch_mha_cases
def test_converter_rejects_unsupported_modules() -> None:
    import torch

    from attnspec.backends.torch import mha_weights_from_torch

    with pytest.raises(ValueError, match="bias_k/bias_v"):
        mha_weights_from_torch(torch.nn.MultiheadAttention(4, 2, add_bias_kv=True))
    with pytest.raises(ValueError, match="bias_k/bias_v"):
        mha_weights_from_torch(torch.nn.MultiheadAttention(4, 2, add_bias_kv=True).state_dict())
    with pytest.raises(ValueError, match="add_zero_attn"):
        mha_weights_from_torch(torch.nn.MultiheadAttention(4, 2, add_zero_attn=True))
    with pytest.raises(ValueError, match="conflicts"):
        mha_weights_from_torch(torch.nn.MultiheadAttention(4, 2), num_heads=4)
    with pytest.raises(ValueError, match="not divisible"):
        mha_weights_from_torch(torch.nn.MultiheadAttention(4, 2).state_dict(), num_heads=3)
    with pytest.raises(ValueError, match=r"out_proj\.weight"):
        mha_weights_from_torch({"in_proj_weight": torch.zeros(12, 4)})
    with pytest.raises(ValueError, match="q_proj_weight"):
        mha_weights_from_torch({"out_proj.weight": torch.zeros(4, 4)})
    with pytest.raises(TypeError, match="MultiheadAttention"):
        mha_weights_from_torch(torch.nn.Linear(4, 4))


@torch_mha_cases
def test_mask_converter_conventions_and_errors() -> None:
    import torch

    from attnspec.backends.torch import mask_from_torch_mha

    assert mask_from_torch_mha(num_heads=2) == (None, None)
    forbid = torch.tensor([[False, True], [True, False]])
    mask, bias = mask_from_torch_mha(forbid, num_heads=2)
    assert bias is None
    assert mask.equal(~forbid)
    kpm = torch.tensor([[False, True], [False, False], [True, False]])
    mask, _ = mask_from_torch_mha(forbid, kpm, num_heads=2)
    assert mask.shape == (3, 1, 2, 2)
    assert mask.equal(~forbid & ~kpm[:, None, None, :])
    per_head = torch.zeros(6, 2, 2, dtype=torch.bool)
    per_head[3, 0, 1] = True  # batch 1, head 1
    mask, _ = mask_from_torch_mha(per_head, num_heads=2)
    assert mask.shape == (3, 2, 2, 2)
    assert not mask[1, 1, 0, 1]
    assert int((~mask).sum()) == 1
    fa = torch.randn(2, 2, dtype=torch.float64)
    fk = torch.randn(3, 2, dtype=torch.float64)
    mask, bias = mask_from_torch_mha(fa, fk, num_heads=2)
    assert mask is None
    assert bias.equal(fa + fk[:, None, None, :])

    with pytest.raises(ValueError, match="batch_size \\* num_heads"):
        mask_from_torch_mha(torch.zeros(5, 2, 2, dtype=torch.bool), num_heads=2)
    with pytest.raises(ValueError, match="batch_size=4"):
        mask_from_torch_mha(torch.zeros(6, 2, 2, dtype=torch.bool), num_heads=2, batch_size=4)
    with pytest.raises(ValueError, match="key_padding_mask"):
        mask_from_torch_mha(per_head, torch.zeros(2, 2, dtype=torch.bool), num_heads=2)
    with pytest.raises(ValueError, match="attn_mask must have shape"):
        mask_from_torch_mha(torch.zeros(2, dtype=torch.bool), num_heads=2)
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        mask_from_torch_mha(None, torch.zeros(1, 2, 2, dtype=torch.bool), num_heads=2)
    with pytest.raises(TypeError, match="attn_mask must be a bool or floating"):
        mask_from_torch_mha(torch.zeros(2, 2, dtype=torch.uint8), num_heads=2)
    with pytest.raises(ValueError, match="num_heads"):
        mask_from_torch_mha(forbid, num_heads=0)
