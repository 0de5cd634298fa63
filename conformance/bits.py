"""How two arrays differ bit for bit: the one comparison behind the determinism cases
(ATT-DET-1: a repeated call must return the same bits) and the unchanged-inputs check
(NO-MUTATION: a call must leave its inputs as they were)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["bit_difference"]


def bit_difference(a: Any, b: Any, *, verb: str = "differ", largest: bool = True
                   ) -> str | None:
    """How ``b`` differs from ``a`` bit for bit, ``None`` when it does not.

    ``"3 of 48 entries differ, largest difference 2.4e-07"`` (``verb`` names the change,
    ``largest`` adds the size of the largest one); a different shape or dtype is said as
    such, and a difference only in NaN payloads or signed zeros as that."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape {b.shape} dtype {b.dtype}, was {a.shape} {a.dtype}"
    if np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes():
        return None
    with np.errstate(all="ignore"):
        differ = a != b
        if a.dtype.kind in "fc":
            differ &= ~(np.isnan(a) & np.isnan(b))
        count = int(np.count_nonzero(differ))
        size = ""
        if largest and count and a.dtype.kind in "fc":
            gap = np.abs(a.astype(np.float64) - b.astype(np.float64))[differ]
            size = f", largest difference {float(np.nanmax(gap)):.3g}" if gap.size else ""
    if count:
        return f"{count} of {a.size} entries {verb}{size}"
    return f"the bits {verb}, the values do not (NaN payloads or signed zeros)"
