"""PyTorch backends ("torch-cpu", "torch-cuda") and converters for ``torch.nn.MultiheadAttention``.

The converters translate a torch module's weights and mask conventions into the keyword
arguments of :func:`attnspec.multi_head_attention`:

* torch stores projections as ``nn.Linear`` weights, ``y = x @ W.T + b``; attnspec takes
  ``y = x @ w + b``, so every weight is transposed (a view: autograd still flows into the
  module's parameters).
* torch masks say where attention is *forbidden* (bool ``True``) or add a float; attnspec masks
  say where it is *allowed* (bool ``True``) and take additive floats as ``bias``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._base import ACCELERATOR, HOST, Backend, NotDifferentiableError, Vjp, import_optional

__all__ = ["TorchBackend", "backends", "mask_from_torch_mha", "mha_weights_from_torch"]

#: Where this module's backends come in :func:`attnspec.backends.all_backends`.
REGISTRY_ORDER = 20


class TorchBackend(Backend):
    """PyTorch on one device type ("cpu" or "cuda"). Eager, writeable, autograd."""

    static_capabilities = frozenset({"autograd", "writeable", "float64", "float16", "bfloat16"})

    def __init__(self, device_type: str) -> None:
        super().__init__(f"torch-{device_type}", "torch")
        self.device_type = device_type
        self.kind = HOST if device_type == "cpu" else ACCELERATOR

    def _probe(self) -> str | None:
        torch, reason = import_optional("torch", "PyTorch")
        if reason is not None:
            return reason
        if self.device_type == "cpu":
            return None
        if self.device_type == "cuda":
            if not torch.backends.cuda.is_built():
                version = torch.__version__
                return f"torch-cuda: no CUDA device (torch {version} is built without CUDA)"
            # device_count() asks the driver (or NVML) without creating a CUDA context.
            if torch.cuda.device_count() == 0:
                return "torch-cuda: no CUDA device"
            return None
        return f"{self.name}: unknown device type {self.device_type!r}"

    def _make_device(self) -> Any:
        import torch

        return torch.device(self.device_type)

    def _dtype(self, name: str) -> Any:
        import torch

        return getattr(torch, name)

    def _from_numpy(self, host: Any, dtype: str | None) -> Any:
        from torch.utils.dlpack import from_dlpack

        t = from_dlpack(host)  # zero-copy view of an array we own
        if self.device_type != "cpu":
            t = t.to(self.device)
        if dtype is not None:
            t = t.to(self._dtype(dtype))
        return t

    def _to_numpy(self, x: Any) -> Any:
        import torch

        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.to(torch.float32)
        return t.resolve_conj().resolve_neg().numpy()

    def _synchronize(self, x: Any) -> None:
        if self.device_type != "cuda":
            return
        import torch

        device = x.device if x is not None and hasattr(x, "device") else self.device
        torch.cuda.synchronize(device)

    def vjp(self, forward: Callable[..., Any], primals: Sequence[Any],
            cotangent: Any) -> Vjp:
        """torch autograd: each run makes the primals leaves (``detach().requires_grad_()``,
        sharing their storage) and calls ``torch.autograd.grad``; a gradient torch reports
        as unused is zero (``out`` does not depend on that input)."""
        import torch

        def once() -> tuple[Any, list[Any]]:
            leaves = [x.detach().requires_grad_(True) for x in primals]
            out = forward(*leaves)
            if not isinstance(out, torch.Tensor) or not out.requires_grad:
                raise NotDifferentiableError(
                    "out does not depend on query, key or value through torch autograd (it "
                    "is detached, or computed outside torch): there is no backward to grade")
            grads = torch.autograd.grad(out, leaves, grad_outputs=cotangent.to(out.dtype),
                                        allow_unused=True)
            return out.detach(), [torch.zeros_like(leaf) if grad is None else grad
                                  for leaf, grad in zip(leaves, grads, strict=True)]

        return once


def backends() -> list[Backend]:
    """The backends this module provides."""
    return [TorchBackend("cpu"), TorchBackend("cuda")]


# -- torch.nn.MultiheadAttention converters ---------------------------------------------------


def _is_mha_module(obj: Any) -> bool:
    torch = import_optional("torch", "PyTorch")[0]
    return torch is not None and isinstance(obj, torch.nn.MultiheadAttention)


def _unsupported_module_options(module: Any) -> None:
    if getattr(module, "bias_k", None) is not None or getattr(module, "bias_v", None) is not None:
        raise ValueError(
            "mha_weights_from_torch: add_bias_kv=True (bias_k/bias_v) is not supported: "
            "attnspec.multi_head_attention has no learned extra key/value row"
        )
    if getattr(module, "add_zero_attn", False):
        raise ValueError(
            "mha_weights_from_torch: add_zero_attn=True is not supported: "
            "attnspec.multi_head_attention has no extra zero key/value row"
        )


def mha_weights_from_torch(
    module_or_state_dict: Any, *, num_heads: int | None = None
) -> dict[str, Any]:
    """Keyword arguments for :func:`attnspec.multi_head_attention` from a torch MHA.

    Parameters
    ----------
    module_or_state_dict : torch.nn.MultiheadAttention or Mapping[str, torch.Tensor]
        The module, or its ``state_dict()`` (keys ``in_proj_weight`` or
        ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``, optional ``in_proj_bias``,
        ``out_proj.weight``, optional ``out_proj.bias``).
    num_heads : int, optional
        Number of heads. Taken from the module when a module is given (it must then agree);
        a state dict does not record it.

    Returns
    -------
    dict
        ``w_q, w_k, w_v, w_o`` (torch tensors in ``x @ W`` layout, i.e. transposed views of
        torch's weights), ``b_q, b_k, b_v, b_o`` (tensors or ``None`` when the module has no
        bias), and ``num_heads`` when known.

    Raises
    ------
    ValueError
        For ``add_bias_kv`` (``bias_k``/``bias_v``) or ``add_zero_attn``, which attnspec does
        not model, for missing keys, inconsistent shapes, or a conflicting ``num_heads``.
    TypeError
        If the argument is neither a ``MultiheadAttention`` nor a mapping.

    Notes
    -----
    torch's ``batch_first=False`` layout ``(L, N, E)`` must be transposed to ``(N, L, E)``
    before calling attnspec, whose inputs are always batch first. Dropout is not converted:
    compare in ``eval()`` mode or with ``dropout=0``.
    """
    if _is_mha_module(module_or_state_dict):
        module = module_or_state_dict
        _unsupported_module_options(module)
        if num_heads is not None and num_heads != module.num_heads:
            raise ValueError(
                f"num_heads={num_heads} conflicts with the module's num_heads={module.num_heads}"
            )
        num_heads = module.num_heads
        params: dict[str, Any] = {
            "in_proj_weight": module.in_proj_weight,
            "q_proj_weight": module.q_proj_weight,
            "k_proj_weight": module.k_proj_weight,
            "v_proj_weight": module.v_proj_weight,
            "in_proj_bias": module.in_proj_bias,
            "out_proj.weight": module.out_proj.weight,
            "out_proj.bias": module.out_proj.bias,
        }
    elif isinstance(module_or_state_dict, Mapping):
        params = dict(module_or_state_dict)
        if "bias_k" in params or "bias_v" in params:
            raise ValueError(
                "mha_weights_from_torch: add_bias_kv=True (bias_k/bias_v) is not supported: "
                "attnspec.multi_head_attention has no learned extra key/value row"
            )
    else:
        raise TypeError(
            "module_or_state_dict must be a torch.nn.MultiheadAttention or a state dict "
            f"mapping, got {type(module_or_state_dict).__name__}"
        )

    out_w = params.get("out_proj.weight")
    if out_w is None:
        raise ValueError(
            f"module_or_state_dict has no 'out_proj.weight'; keys: {sorted(params)}"
        )
    packed = params.get("in_proj_weight")
    if packed is not None:
        if packed.ndim != 2 or packed.shape[0] % 3:
            raise ValueError(
                "in_proj_weight must have shape (3*embed_dim, embed_dim), "
                f"got {tuple(packed.shape)}"
            )
        e = packed.shape[0] // 3
        wq, wk, wv = packed[:e], packed[e : 2 * e], packed[2 * e :]
    else:
        missing = [k for k in ("q_proj_weight", "k_proj_weight", "v_proj_weight")
                   if params.get(k) is None]
        if missing:
            raise ValueError(
                "module_or_state_dict needs 'in_proj_weight' or all of 'q_proj_weight', "
                f"'k_proj_weight', 'v_proj_weight'; missing {missing}; keys: {sorted(params)}"
            )
        wq, wk, wv = params["q_proj_weight"], params["k_proj_weight"], params["v_proj_weight"]
        e = wq.shape[0]
        for key, w in (("k_proj_weight", wk), ("v_proj_weight", wv)):
            if w.ndim != 2 or w.shape[0] != e:
                raise ValueError(
                    f"{key} must have shape ({e}, kdim/vdim) to match q_proj_weight "
                    f"{tuple(wq.shape)}, got {tuple(w.shape)}"
                )
    if num_heads is not None:
        if not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        if e % num_heads:
            raise ValueError(f"embed_dim={e} is not divisible by num_heads={num_heads}")

    in_b = params.get("in_proj_bias")
    if in_b is not None:
        if tuple(in_b.shape) != (3 * e,):
            raise ValueError(
                f"in_proj_bias must have shape ({3 * e},), got {tuple(in_b.shape)}"
            )
        bq, bk, bv = in_b[:e], in_b[e : 2 * e], in_b[2 * e :]
    else:
        bq = bk = bv = None

    result: dict[str, Any] = {
        "w_q": wq.T,
        "w_k": wk.T,
        "w_v": wv.T,
        "w_o": out_w.T,
        "b_q": bq,
        "b_k": bk,
        "b_v": bv,
        "b_o": params.get("out_proj.bias"),
    }
    if num_heads is not None:
        result["num_heads"] = num_heads
    return result


def _check_mask_dtype(mask: Any, name: str) -> bool:
    """Return True for a bool mask, False for a float one; raise for anything else."""
    import torch

    if mask.dtype == torch.bool:
        return True
    if torch.is_floating_point(mask):
        return False
    raise TypeError(f"{name} must be a bool or floating tensor, got dtype {mask.dtype}")


def mask_from_torch_mha(
    attn_mask: Any = None,
    key_padding_mask: Any = None,
    *,
    num_heads: int,
    batch_size: int | None = None,
) -> tuple[Any, Any]:
    """Translate ``torch.nn.MultiheadAttention`` masks to attnspec's ``(mask, bias)``.

    Parameters
    ----------
    attn_mask : torch.Tensor, optional
        torch convention: bool ``True`` = may NOT attend, or a float added to the scores.
        Shape ``(L, S)`` or ``(N * num_heads, L, S)`` (batch-major: row ``n * num_heads + h``).
    key_padding_mask : torch.Tensor, optional
        torch convention: bool ``True`` = ignore this key, or a float added to the scores.
        Shape ``(N, S)``, or ``(S,)`` for unbatched inputs.
    num_heads : int
        Number of heads of the module.
    batch_size : int, optional
        ``N``; checked against the masks when given, inferred from a 3-D ``attn_mask``
        otherwise.

    Returns
    -------
    mask : torch.Tensor or None
        Bool, ``True`` = may attend, broadcastable to ``(N, num_heads, L, S)``: ``(L, S)``,
        ``(N, num_heads, L, S)``, ``(N, 1, 1, S)``, or their broadcast when both masks are bool.
    bias : torch.Tensor or None
        The float masks (summed), broadcastable the same way.

    Raises
    ------
    ValueError
        For shapes torch would reject or that disagree with ``num_heads``/``batch_size``.
    TypeError
        For masks that are neither bool nor floating.

    Notes
    -----
    A 3-D ``attn_mask`` becomes ``(N, num_heads, L, S)``; for an unbatched query ``(L, E)``
    take ``mask[0]`` so that no batch axis is added to the output.
    """
    if not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    masks: list[Any] = []
    biases: list[Any] = []

    if attn_mask is not None:
        is_bool = _check_mask_dtype(attn_mask, "attn_mask")
        if attn_mask.ndim == 2:
            m = attn_mask
        elif attn_mask.ndim == 3:
            nh, lq, lk = attn_mask.shape
            if nh % num_heads:
                raise ValueError(
                    f"attn_mask of shape {tuple(attn_mask.shape)}: the leading axis must be "
                    f"batch_size * num_heads with num_heads={num_heads}"
                )
            n = nh // num_heads
            if batch_size is not None and n != batch_size:
                raise ValueError(
                    f"attn_mask of shape {tuple(attn_mask.shape)} implies batch size {n}, "
                    f"expected batch_size={batch_size} (leading axis = N * num_heads)"
                )
            m = attn_mask.reshape(n, num_heads, lq, lk)
            batch_size = n  # so that key_padding_mask is checked against it
        else:
            raise ValueError(
                "attn_mask must have shape (L, S) or (N * num_heads, L, S), "
                f"got {tuple(attn_mask.shape)}"
            )
        (masks if is_bool else biases).append(~m if is_bool else m)

    if key_padding_mask is not None:
        is_bool = _check_mask_dtype(key_padding_mask, "key_padding_mask")
        if key_padding_mask.ndim == 2:
            if batch_size is not None and key_padding_mask.shape[0] != batch_size:
                raise ValueError(
                    f"key_padding_mask of shape {tuple(key_padding_mask.shape)} does not "
                    f"match batch_size={batch_size}"
                )
            k = key_padding_mask[:, None, None, :]
        elif key_padding_mask.ndim == 1:
            k = key_padding_mask
        else:
            raise ValueError(
                "key_padding_mask must have shape (N, S) or (S,), "
                f"got {tuple(key_padding_mask.shape)}"
            )
        (masks if is_bool else biases).append(~k if is_bool else k)

    mask = masks[0] if masks else None
    for extra in masks[1:]:
        mask = mask & extra
    bias = biases[0] if biases else None
    for extra in biases[1:]:
        bias = bias + extra
    return mask, bias
