"""``attnspec.native.torch`` / ``attnspec.native.jax``: attnspec with
``implementation="native"``, graded as implementations of their own.

A dispatch to a framework kernel is only as good as its measured agreement, so these
adapters run every case the kernel accepts through the kernel (and nothing else): a case
the dispatch sends to the portable path is "not applicable", with the reason
:func:`attnspec.native_plan` gives. A failure here means the dispatch rule in
``attnspec/backends/native_*.py`` accepts a call the kernel gets wrong.
"""

from __future__ import annotations

from typing import Any

import attnspec

from ..cases import Case, make_inputs
from ..features import CALL_OPTIONS
from ._native import NativeAdapter
from ._torch_cpu import NAN_ROW_SHORT_ON_AVX512

__all__ = ["AttnspecNativeJaxAdapter", "AttnspecNativeTorchAdapter"]



class _AttnspecNative(NativeAdapter):
    ops = frozenset({"attention"})
    #: What the dispatch rule can send to the kernel (``backends/native_*.py``), with
    #: gradients through the framework's autodiff of the dispatched call; deterministic on
    #: the CPU. Options the rule always sends to the portable path are not declared: the
    #: implementation under test here is the dispatch to the kernel, and those cases would
    #: grade the portable path. Cases the rule declines for their combination of options
    #: are not applicable with native_plan's reason.
    features: frozenset[str] = frozenset()

    def versions(self) -> dict[str, str]:
        return {"attnspec": attnspec.__version__, **super().versions()}

    def not_applicable(self, case: Case) -> str | None:
        reason = super().not_applicable(case)
        if reason is not None:
            return reason
        args = self.to_backend(case, make_inputs(case))
        try:
            plan = attnspec.native_plan(args["query"], args["key"], args["value"],
                                        implementation="native", **_options(args))
        except (TypeError, ValueError):
            return None  # an invalid call: graded on the error it raises
        return None if plan.kernel else f"portable path: {plan.reason}"

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        out = attnspec.scaled_dot_product_attention(
            args["query"], args["key"], args["value"], implementation="native",
            **_options(args),
        )
        return {"out": out}


def _options(args: dict[str, Any]) -> dict[str, Any]:
    return {k: args[k] for k in CALL_OPTIONS if k in args}


class AttnspecNativeTorchAdapter(_AttnspecNative):
    name = "attnspec.native.torch"
    description = "attnspec implementation='native' (torch SDPA where it dispatches)"
    backends = ("torch-cpu", "torch-cuda")
    distributions = ("torch",)
    deterministic_on = ("torch-cpu",)
    deviations_on = (("torch-cpu", NAN_ROW_SHORT_ON_AVX512),)  # torch SDPA's, dispatched to
    features = frozenset({"batch0", "batch2", "gqa", "dv_ne_dk", "lq_ne_lk", "empty_keys",
                          "scale", "causal", "causal_lower_right", "kv_lengths", "backward"})


class AttnspecNativeJaxAdapter(_AttnspecNative):
    name = "attnspec.native.jax"
    description = "attnspec implementation='native' (jax.nn.dot_product_attention)"
    backends = ("jax-cpu", "jax-gpu")
    distributions = ("jax", "jaxlib")
    deterministic_on = ("jax-cpu",)
    features = frozenset({"gqa", "lq_ne_lk", "scale", "causal", "backward"})
