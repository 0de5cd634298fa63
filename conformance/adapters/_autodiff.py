"""Gradients of an adapter's ``call`` through its backend's autodiff (torch autograd, JAX):
the backend's vjp hook (:meth:`attnspec.backends.Backend.vjp`).

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

from attnspec.backends import Backend, NotDifferentiableError

from ..gradients import WRT

__all__ = ["NoGradientError", "backward"]

#: ``out`` is not differentiable through the backend's autodiff (it was detached, or
#: computed outside the framework).
NoGradientError = NotDifferentiableError


def backward(backend: Backend, forward: Callable[[dict[str, Any]], Any], args: dict[str, Any],
             cotangent: Any, wrt: list[str], name: str) -> Callable[[], dict[str, Any]]:
    """A function of no arguments that runs ``forward(args)`` (the adapter's ``out``) and
    the backend's backward once and returns ``out`` and the gradient of each input in
    ``wrt`` (``dq``, ``dk``, ``dv``, ``dbias``).

    Raises
    ------
    NotImplementedError
        When the backend has no autodiff (``name`` is the adapter's, for the message).
    """
    if not backend.has_autodiff:
        raise NotImplementedError(f"{name}: no autodiff on {backend.name}; gradient cases "
                                  "need torch or JAX (or a backward of the implementation's "
                                  "own)")

    def differentiated(*arrays: Any) -> Any:
        return forward({**args, **dict(zip(wrt, arrays, strict=True))})

    vjp = backend.vjp(differentiated, [args[n] for n in wrt], cotangent)

    def once() -> dict[str, Any]:
        out, grads = vjp()
        return {"out": out, **{WRT[n]: g for n, g in zip(wrt, grads, strict=True)}}

    return once
