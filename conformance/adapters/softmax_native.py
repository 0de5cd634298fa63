"""The frameworks' own softmax family: ``torch.softmax``, ``jax.softmax``, ``scipy.softmax``.

Each implements the ops ``softmax``, ``log_softmax`` and ``logsumexp`` with the library's
functions of those names (``torch.softmax``/``torch.log_softmax``/``torch.logsumexp``;
``jax.nn.softmax``/``jax.nn.log_softmax``/``jax.nn.logsumexp``;
``scipy.special.softmax``/``log_softmax``/``logsumexp``).

Not declared (measured with torch 2.13, JAX 0.10, SciPy 1.17): ``where`` for torch and
SciPy: no ``where=`` argument (SciPy's ``logsumexp(b=...)`` weights would let NaN at
excluded entries through, 0 * NaN). JAX declares ``where``: ``jax.nn.softmax(x,
where=...)`` excludes entries as SMX-2 does.

Deviation (all three; graded, and expected to fail): SMX-3, softmax and log_softmax of a row
that is all ``-inf`` are NaN, where the spec says 0 and ``-inf``; logsumexp agrees
(``-inf``).

The JAX functions run under :func:`jax.jit`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..cases import SOFTMAX_OPS, Case
from ..deviations import Deviation
from ._native import NativeAdapter

__all__ = ["JaxSoftmaxAdapter", "ScipySoftmaxAdapter", "TorchSoftmaxAdapter"]

class _SoftmaxAdapter(NativeAdapter):
    ops = frozenset(SOFTMAX_OPS)
    features: frozenset[str] = frozenset()
    deviations = (
        Deviation("softmax and log_softmax of a row that is all -inf are NaN (the spec: 0 "
                  "and -inf); logsumexp gives -inf as the spec does",
                  frozenset({"empty_rows"}),
                  when=lambda case: case.op in ("softmax", "log_softmax"),
                  condition="softmax and log_softmax"),
    )

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        kwargs = {"where": args["where"]} if "where" in args else {}
        return {"out": self._op(case.op, args["x"], args.get("axis", -1), **kwargs)}

    def _op(self, op: str, x: Any, axis: int, **kwargs: Any) -> Any:
        raise NotImplementedError


class TorchSoftmaxAdapter(_SoftmaxAdapter):
    name = "torch.softmax"
    description = "torch.softmax / torch.log_softmax / torch.logsumexp"
    backends = ("torch-cpu", "torch-cuda")
    distributions = ("torch",)

    def _op(self, op: str, x: Any, axis: int, **kwargs: Any) -> Any:
        import torch

        if kwargs:
            raise TypeError("torch's softmax family has no where= argument")
        ops: dict[str, Callable[[Any, int], Any]] = {
            "softmax": torch.softmax, "log_softmax": torch.log_softmax,
            "logsumexp": torch.logsumexp}
        return ops[op](x, axis)


_jax_jitted: dict[str, Any] = {}


class JaxSoftmaxAdapter(_SoftmaxAdapter):
    name = "jax.softmax"
    description = "jax.nn.softmax / jax.nn.log_softmax / jax.nn.logsumexp"
    backends = ("jax-cpu", "jax-gpu")
    distributions = ("jax", "jaxlib")
    features = frozenset({"where"})

    def _op(self, op: str, x: Any, axis: int, **kwargs: Any) -> Any:
        # Under jax.jit, as JAX code runs in practice (eager dispatch is far slower).
        if op not in _jax_jitted:
            import jax

            _jax_jitted[op] = jax.jit(getattr(jax.nn, op), static_argnames=("axis",))
        return _jax_jitted[op](x, axis=axis, **kwargs)


class ScipySoftmaxAdapter(_SoftmaxAdapter):
    name = "scipy.softmax"
    description = "scipy.special.softmax / log_softmax / logsumexp"
    backends = ("numpy",)
    distributions = ("scipy",)
    requires = (("scipy", "SciPy"),)

    def _op(self, op: str, x: Any, axis: int, **kwargs: Any) -> Any:
        import scipy.special  # type: ignore[import-untyped, unused-ignore]  # stubs optional

        if kwargs:
            raise TypeError("scipy.special's softmax family has no where= argument")
        return getattr(scipy.special, op)(x, axis=axis)
