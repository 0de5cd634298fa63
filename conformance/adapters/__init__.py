"""Adapters: the implementations the suite can grade, by name.

Built-in names: ``attnspec[<backend>]`` for every backend of :mod:`attnspec.backends`
(``attnspec`` alone means ``attnspec[<backend>]`` for the ``backend`` argument), and the
native implementations ``torch.sdpa``, ``torch.mha``, ``torch.flex_attention``,
``torch.flex_attention.compiled`` (on request: :data:`ON_REQUEST`), ``jax.dot_product_attention``,
``torch.softmax``, ``jax.softmax``, ``scipy.softmax``, ``onnxruntime.attention``,
``onnxruntime.gqa``, ``flash_attn``, ``flash_attn.varlen`` (packed sequences) and
``flash_attn.kvcache`` (KV cache, paged), attnspec's own native dispatch
``attnspec.native.torch`` / ``attnspec.native.jax`` (``implementation="native"``), and the
ecosystem's functions Keras 3 ``keras.ops.dot_product_attention`` on torch and on JAX
(``keras.torch``, ``keras.jax``), flax's ``flax.linen`` / ``flax.nnx``
``dot_product_attention``, transformers' ``sdpa_attention_forward`` /
``eager_attention_forward`` (``transformers.sdpa``, ``transformers.eager``), mlx's
``mx.fast.scaled_dot_product_attention`` (``mlx.fast_sdpa``) and tinygrad's
``Tensor.scaled_dot_product_attention`` (``tinygrad.sdpa``).
Anything else of the form ``module:callable`` is a user's function (see :mod:`.user`).

Building an adapter imports no framework; :meth:`Adapter.unavailable` is the first thing
that does. Every adapter pickles to "its class and arguments", so a worker process
re-creates it (re-importing a user's module) instead of receiving framework state.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from attnspec.backends import all_backends, get
from attnspec.backends import names as backend_names

from .attnspec_adapter import AttnspecAdapter
from .base import Adapter, AdapterOutput
from .user import UserAdapter

__all__ = ["NATIVE", "ON_REQUEST", "Adapter", "AdapterOutput", "builtin_adapters", "builtin_names",
           "resolve"]

#: Native implementations: name -> "module:class" inside this package (imported on use).
NATIVE: dict[str, str] = {
    "torch.sdpa": "torch_sdpa:TorchSdpaAdapter",
    "torch.mha": "torch_mha:TorchMhaAdapter",
    "torch.flex_attention": "torch_flex:TorchFlexAttentionAdapter",
    "torch.flex_attention.compiled": "torch_flex_compiled:TorchFlexCompiledAdapter",
    "jax.dot_product_attention": "jax_dpa:JaxDotProductAttentionAdapter",
    "torch.softmax": "softmax_native:TorchSoftmaxAdapter",
    "jax.softmax": "softmax_native:JaxSoftmaxAdapter",
    "scipy.softmax": "softmax_native:ScipySoftmaxAdapter",
    "onnxruntime.attention": "onnxruntime_attention:OnnxruntimeAttentionAdapter",
    "onnxruntime.gqa": "onnxruntime_gqa:OnnxruntimeGqaAdapter",
    "flash_attn": "flash_attn:FlashAttnAdapter",
    "flash_attn.varlen": "flash_attn_varlen:FlashAttnVarlenAdapter",
    "flash_attn.kvcache": "flash_attn_kvcache:FlashAttnKvcacheAdapter",
    "attnspec.native.torch": "attnspec_native:AttnspecNativeTorchAdapter",
    "attnspec.native.jax": "attnspec_native:AttnspecNativeJaxAdapter",
    "keras.torch": "keras_dpa:KerasTorchAdapter",
    "keras.jax": "keras_dpa:KerasJaxAdapter",
    "flax.linen": "flax_dpa:FlaxLinenAdapter",
    "flax.nnx": "flax_dpa:FlaxNnxAdapter",
    "transformers.sdpa": "transformers_attn:TransformersSdpaAdapter",
    "transformers.eager": "transformers_attn:TransformersEagerAdapter",
    "mlx.fast_sdpa": "mlx_sdpa:MlxFastSdpaAdapter",
    "tinygrad.sdpa": "tinygrad_sdpa:TinygradSdpaAdapter",
}

#: Built-ins graded only when named: a full catalog run of each takes tens of minutes on a
#: CPU (a C++ compile per shape and mod), too long for ``attnspec check`` with no target.
ON_REQUEST: frozenset[str] = frozenset({"torch.flex_attention.compiled"})

#: The backend whose arrays a ``module:callable`` (and plain ``"attnspec"``) takes when
#: ``backend=None``, "no backend chosen" (built-in adapters then run on their own).
DEFAULT_BACKEND = "numpy"


def builtin_names(*, on_request: bool = False) -> list[str]:
    """The built-in adapter names a run with no target grades: ``attnspec[<backend>]`` for
    each backend, then the native implementations; with ``on_request=True`` also those of
    :data:`ON_REQUEST` (graded when named)."""
    return [f"attnspec[{b.name}]" for b in all_backends()] + [
        n for n in NATIVE if on_request or n not in ON_REQUEST]


def builtin_adapters(*, on_request: bool = False) -> list[Adapter]:
    """One adapter per built-in name (on its default backend), usable here or not: check
    :meth:`Adapter.unavailable`."""
    return [resolve(name) for name in builtin_names(on_request=on_request)]


def _native_class(name: str) -> Callable[[str], Adapter]:
    """The adapter class of a native implementation: ``cls(backend_name)``; its
    ``backends`` are the backend names it runs on."""
    module_name, _, class_name = NATIVE[name].partition(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    cls: Callable[[str], Adapter] = getattr(module, class_name)
    return cls


def _backend_for(backend: str, device: str | None) -> str:
    """A backend name from ``backend`` (a name, or a framework such as ``"torch"``) and
    ``device``."""
    known = backend_names()
    if backend in known:
        if device is not None and not _device_matches(backend, device):
            raise ValueError(f"device: {device!r} conflicts with backend {backend!r}")
        return backend
    candidates = [n for n in known if n.split("-", 1)[0] == backend]
    if not candidates:
        raise ValueError(f"backend: unknown backend {backend!r}; known backends: "
                         f"{', '.join(known)}")
    for name in candidates:
        if device is None or _device_matches(name, device):
            return name
    raise ValueError(f"device: {backend} has no backend for device {device!r}; its "
                     f"backends: {', '.join(candidates)}")


def _native_adapter(name: str, backend: str | None, device: str | None) -> Adapter:
    cls = _native_class(name)
    choices: tuple[str, ...] = cls.backends  # type: ignore[attr-defined]
    if backend is None:
        # No backend chosen: the adapter's own, picked by device.
        matches = [c for c in choices if device is None or _device_matches(c, device)]
        if not matches:
            raise ValueError(f"device: {name} runs on {', '.join(choices)}; none is a "
                             f"{device!r} device")
        return cls(matches[0])
    if backend not in choices:
        raise ValueError(f"backend: {name} runs on {', '.join(choices)}, not {backend!r}")
    if device is not None and not _device_matches(backend, device):
        raise ValueError(f"device: {device!r} conflicts with backend {backend!r}")
    return cls(backend)


def _device_matches(backend: str, device: str) -> bool:
    """Whether backend ``torch-cuda``/``jax-cpu``/``numpy``... runs on ``device`` (the
    backend's answer, :meth:`attnspec.backends.Backend.runs_on`)."""
    return get(backend).runs_on(device)


def resolve(target: Any, *, backend: str | None = None, device: str | None = None,
            capabilities: Any = None) -> Adapter:
    """The adapter for ``target``.

    Parameters
    ----------
    target : str or Adapter
        A built-in name (:func:`builtin_names`), ``"attnspec"`` (attnspec on ``backend``),
        ``"module:callable"``, or an :class:`Adapter` (returned as it is).
    backend : str, optional
        For ``module:callable`` and ``attnspec``: the backend whose arrays the function
        takes (a name such as ``"torch-cpu"``, or a framework such as ``"torch"`` with
        ``device``); ``None`` (default): ``"numpy"``. Built-ins run on their own backend:
        there ``backend`` may name one of the adapter's backends (``"torch-cuda"``), another
        one is a ``ValueError``, and ``None`` (or ``"numpy"``, the callers' default) means
        "the adapter's own".
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``"gpu"``: picks the backend of that device (a built-in
        with none is a ``ValueError``).
    capabilities : mapping or path, optional
        For ``module:callable`` only: the declaration (see :mod:`.user`); default: the
        callable's ``attnspec_capabilities`` attribute.

    Raises
    ------
    ValueError
        An unknown built-in name (the message lists them), a malformed target, a backend
        or device the adapter cannot use, or capabilities given for a built-in.
    ImportError
        A ``module:callable`` whose module fails to import (names the target and cause).
    TypeError
        A target that is not a string/Adapter, or a ``module:callable`` that is not
        callable.
    """
    if isinstance(target, Adapter):
        return target
    if not isinstance(target, str):
        raise TypeError(f"target must be an adapter name, 'module:callable' or an Adapter, "
                        f"got {type(target).__name__}")
    if ":" in target:
        return UserAdapter(target, _backend_for(backend or DEFAULT_BACKEND, device), capabilities)
    if capabilities is not None:
        raise ValueError(f"capabilities: only 'module:callable' targets take capabilities; "
                         f"{target!r} is a built-in adapter with its own declaration")
    if target == "attnspec":
        return AttnspecAdapter(_backend_for(backend or DEFAULT_BACKEND, device))
    if target.startswith("attnspec[") and target.endswith("]"):
        name = target[len("attnspec["):-1]
        if name not in backend_names():
            raise ValueError(f"unknown adapter {target!r}: no backend {name!r}; known "
                             f"backends: {', '.join(backend_names())}")
        # The name fixes the backend; a backend or device asked for must agree with it.
        if backend is not None and _backend_for(backend, device) != name:
            raise ValueError(f"backend: {target} runs on {name}, not {backend!r}")
        if device is not None and not _device_matches(name, device):
            raise ValueError(f"device: {target} runs on {name}, not on a {device!r} device")
        return AttnspecAdapter(name)
    if target in NATIVE:
        return _native_adapter(target, backend, device)
    raise ValueError(f"unknown adapter {target!r}; built-in adapters: "
                     f"{', '.join(builtin_names())}; or give 'module:callable'")
