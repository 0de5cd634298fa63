"""Gradients of an adapter's ``call`` through its backend's autodiff (torch autograd, JAX).

A gradient case asks for the vector-Jacobian product of ``out`` with the case's cotangent.
For an implementation on an autodiff backend that is nothing the implementation has to
provide: the adapter's own :meth:`~.base.Adapter.call` (layout and mask translation
included) is differentiated with respect to the backend arrays of ``query``, ``key``,
``value`` (and ``bias``), so what is graded is the framework's backward of the
implementation's forward, e.g. torch SDPA's or ``jax.nn.dot_product_attention``'s.

* torch: the inputs become leaves (``detach().requires_grad_()``, sharing their storage),
  and ``torch.autograd.grad(out, leaves, cotangent)``; a gradient torch reports as unused is
  zero (``out`` does not depend on that input).
* JAX: ``jax.vjp`` of ``lambda q, k, v[, bias]: call(...)["out"]``, under ``jax.jit`` (one
  compilation per case, as JAX code runs in practice; options and the other arrays are
  constants of the program).

Nothing here is imported before a worker runs a gradient case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..cases import Case
from ..gradients import WRT

__all__ = ["NoGradientError", "jax_backward", "torch_backward"]

Call = Callable[[Case, dict[str, Any]], Any]


class NoGradientError(RuntimeError):
    """``out`` is not differentiable through the backend's autodiff (it was detached, or
    computed outside the framework)."""


def _out(results: Any) -> Any:
    from .base import InvalidOutput, _describe, _is_array

    if not isinstance(results, dict):
        raise InvalidOutput(f"the adapter returned {type(results).__name__}, expected a dict "
                            "of outputs")
    out = results.get("out")
    if not _is_array(out):
        raise InvalidOutput(f"output 'out' is not an array: the implementation returned "
                            f"{_describe(out)}")
    return out


def torch_backward(call: Call, case: Case, args: dict[str, Any], cotangent: Any,
                   wrt: list[str]) -> Callable[[], dict[str, Any]]:
    """A function that runs the forward and torch autograd's backward once."""
    import torch

    def once() -> dict[str, Any]:
        leaves = {n: args[n].detach().requires_grad_(True) for n in wrt}
        out = _out(call(case, {**args, **leaves}))
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            raise NoGradientError(
                "out does not depend on query, key or value through torch autograd (it is "
                "detached, or computed outside torch): there is no backward to grade")
        grads = torch.autograd.grad(out, list(leaves.values()),
                                    grad_outputs=cotangent.to(out.dtype), allow_unused=True)
        result = {"out": out.detach()}
        for (name, leaf), grad in zip(leaves.items(), grads, strict=True):
            result[WRT[name]] = torch.zeros_like(leaf) if grad is None else grad
        return result

    return once


def jax_backward(call: Call, case: Case, args: dict[str, Any], cotangent: Any,
                 wrt: list[str], *, jit: bool = True) -> Callable[[], dict[str, Any]]:
    """A function that runs ``jax.vjp`` of the forward once (compiled on first use)."""
    import jax

    rest = {k: v for k, v in args.items() if k not in wrt}

    def forward(*arrays: Any) -> Any:
        return _out(call(case, {**rest, **dict(zip(wrt, arrays, strict=True))}))

    def vjp(primals: list[Any], cot: Any) -> tuple[Any, Any]:
        out, pullback = jax.vjp(forward, *primals)
        return out, pullback(cot.astype(out.dtype))

    program = jax.jit(vjp) if jit else vjp
    primals = [args[n] for n in wrt]

    def once() -> dict[str, Any]:
        out, grads = program(primals, cotangent)
        return {"out": out, **{WRT[n]: g for n, g in zip(wrt, grads, strict=True)}}

    return once
