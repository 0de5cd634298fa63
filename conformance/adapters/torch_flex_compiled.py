"""``torch.flex_attention.compiled``: ``torch.compile(flex_attention)``, the fused kernel
FlexAttention users ship (C++ through Inductor on the CPU, Triton on CUDA).

The translation is the eager adapter's (:mod:`.torch_flex`): the same mods, block mask and
captured tensors, so a difference between the two is the compiler's. On request only
(:data:`attnspec.conformance.adapters.ON_REQUEST`): every new shape, dtype or mod is a C++
compile, 4-10 s each on a 2-core CPU (measured with torch 2.13), so grading the catalog
takes tens of minutes; name it (``attnspec check torch.flex_attention.compiled``) to run it.

Measured with torch 2.13 on the CPU (``attnspec check torch.flex_attention.compiled``: 237
graded cases conform, 5 more fail as the deviations below say, of 367; 16 minutes on 2
cores, most of it compiling):

* no ``lse``: "torch.compile on CPU only supports inference and `return_lse` is not
  supported yet" (an ``InductorError``), so ``lse`` is declared on CUDA only, like
  ``backward``; no float64 ("`torch.float`, `torch.float16` and `torch.bfloat16` are
  supported in FlexAttention for CPU device");
* the kernel must be compiled, never silently eager: ``fullgraph=True`` makes a graph break
  an error, a hit recompile limit raises instead of falling back, and FlexAttention's
  "called without torch.compile()" warning during a call is an error.

Needs a C++ compiler on the CPU (``CXX``, else ``c++``/``g++``): unavailable without one.
"""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Any

from ..deviations import Deviation
from ._native import NativeAdapter
from .torch_flex import TorchFlexAttentionAdapter

__all__ = ["TorchFlexCompiledAdapter"]

#: Enough for the catalog's distinct shapes and mods in one worker (the default, 8, would
#: stop compiling after eight and, without fail_on_recompile_limit_hit, run eagerly).
_RECOMPILE_LIMIT = 4096

_COMPILED: dict[str, Any] = {}


class TorchFlexCompiledAdapter(TorchFlexAttentionAdapter):
    name = "torch.flex_attention.compiled"
    description = "torch.compile(flex_attention) (C++ on the CPU, Triton on CUDA)"
    deviations = (
        *TorchFlexAttentionAdapter.deviations,
        Deviation("a NaN query row gives out 0, not NaN (ATT-NAN-1): the compiled CPU "
                  "kernel's running max drops NaN scores, where eager FlexAttention keeps "
                  "them (measured on the CPU, torch 2.13)", frozenset({"nonfinite"}),
                  when=lambda case: case.params.get("poison") == "query_nan",
                  condition="NaN in a query row"),
        Deviation("a head-dim mismatch or a head count that does not divide raises "
                  "torch._dynamo.exc.Unsupported ('Observed exception'), not ValueError: "
                  "the eager check's ValueError inside the compiled function",
                  frozenset({"arg_errors"}),
                  when=lambda case: case.params.get("error") in ("head_dim_mismatch",
                                                                 "heads_not_divisible"),
                  condition="shape errors"),
    )

    def __init__(self, backend_name: str | None = None) -> None:
        super().__init__(backend_name)
        if self.backend_name == "torch-cpu":
            self.features = frozenset(self.features - {"lse"})
            self.supported_dtypes = ("float32", "float16", "bfloat16")

    def unavailable(self) -> str | None:
        reason = NativeAdapter.unavailable(self)
        if reason is None and self.backend_name == "torch-cpu" and _compiler() is None:
            return (f"{self.name}: no C++ compiler (set CXX or install g++): Inductor "
                    "compiles FlexAttention to C++ on the CPU")
        return reason

    def _flex(self, flex_attention: Any) -> Any:
        import torch

        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, _RECOMPILE_LIMIT)
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit,
                                                 _RECOMPILE_LIMIT)
        config.fail_on_recompile_limit_hit = True
        if "kernel" not in _COMPILED:
            _COMPILED["kernel"] = torch.compile(flex_attention, fullgraph=True, dynamic=False)
        compiled = _COMPILED["kernel"]

        def call(*a: Any, **kw: Any) -> Any:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = compiled(*a, **kw)
            for w in caught:
                if "without torch.compile" in str(w.message):
                    raise RuntimeError(f"{self.name}: FlexAttention ran eagerly "
                                       f"({w.message}); the compiled kernel was not graded")
            return result

        return call


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None
