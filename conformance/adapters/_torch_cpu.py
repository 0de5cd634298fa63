"""What torch's CPU kernels do differently by instruction set: deviations that hold on some
machines only, measured by forcing each kernel set with ``ATEN_CPU_CAPABILITY``.

A deviation declared for every machine would be an unexpected pass (a failed run) on the
others, so the condition asks torch which kernels it runs.
"""

from __future__ import annotations

from ..cases import Case
from ..deviations import Deviation

__all__ = ["NAN_ROW_SHORT_ON_AVX512"]


def cpu_capability() -> str:
    """The kernel set torch dispatches to on this CPU (``"AVX512"``, ``"AVX2"``, ...)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def _nan_row_short(case: Case) -> bool:
    # torch 2.13's CPU flash kernel takes a row's max over 16-float vectors and a scalar
    # tail; the tail's max drops NaN. With AVX-512 a row of fewer than 16 keys is all tail:
    # measured at Lk = 9 out 0 (float32, float16), at Lk = 16, 17, 33 NaN; with
    # ATEN_CPU_CAPABILITY=avx2 or default NaN at every Lk (8-float vectors take Lk = 9).
    return (case.params.get("poison") == "query_nan" and int(case.params.get("lk", 16)) < 16
            and cpu_capability().startswith("AVX512"))


NAN_ROW_SHORT_ON_AVX512 = Deviation(
    "on CPUs where torch runs its AVX-512 kernels, a query row whose scores are all NaN "
    "comes out 0, not NaN, when it has fewer than 16 keys (the kernel's scalar tail drops "
    "NaN from the row max); AVX2 and the default kernels give NaN",
    frozenset({"nonfinite"}), when=_nan_row_short,
    condition="a NaN query row with fewer than 16 keys, AVX-512 kernels",
    issue="https://github.com/pytorch/pytorch/issues/141128",
)
