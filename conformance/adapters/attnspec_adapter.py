"""attnspec itself, on any backend: ``attnspec[numpy]``, ``attnspec[torch-cpu]``, ..."""

from __future__ import annotations

from typing import Any

import attnspec

from ..cases import SOFTMAX_OPS, Case
from ..features import CALL_OPTIONS, FEATURES, OPT_IN
from .base import Adapter, has_autodiff, on_host

__all__ = ["AttnspecAdapter"]



class AttnspecAdapter(Adapter):
    """The reference implementation: every op and every feature; gradients (through the
    backend's autodiff) on torch and JAX, and deterministic on the CPU backends."""

    ops = frozenset({"attention", "mha", *SOFTMAX_OPS})

    def __init__(self, backend_name: str) -> None:
        self.backend_name = backend_name
        features = set(FEATURES) - OPT_IN
        if has_autodiff(backend_name):
            features |= {"backward", "grad_bias", "grad_sinks", "grad_alibi"}
        if on_host(backend_name):
            features.add("deterministic")
        self.features = frozenset(features)
        self.name = f"attnspec[{backend_name}]"
        self.description = f"attnspec {attnspec.__version__} on {backend_name}"

    def versions(self) -> dict[str, str]:
        return {"attnspec": attnspec.__version__}

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        if case.op in SOFTMAX_OPS:
            func = getattr(attnspec, case.op)
            kwargs = {k: args[k] for k in ("axis", "where") if k in args}
            return {"out": func(args["x"], **kwargs)}
        if case.op == "mha":
            rest = {k: v for k, v in args.items() if k not in ("query", "key", "value")}
            return {"out": attnspec.multi_head_attention(args["query"], args["key"],
                                                         args["value"], **rest)}
        options = {k: args[k] for k in CALL_OPTIONS if k in args}
        if case.backward:
            # A gradient case differentiates out alone: lse and weights would only add work
            # to the traced program (under JAX, its compilation).
            return {"out": attnspec.scaled_dot_product_attention(
                args["query"], args["key"], args["value"], **options)}
        out, lse, weights = attnspec.scaled_dot_product_attention(
            args["query"], args["key"], args["value"], return_lse=True, return_weights=True,
            **options,
        )
        return {"out": out, "lse": lse, "weights": weights}
