"""Static shape arithmetic: pure Python on shape tuples, never on array data."""

from __future__ import annotations

from collections.abc import Sequence


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...] | None:
    """NumPy broadcasting of ``shapes``; ``None`` when they do not broadcast."""
    # Not max(..., default=0): torch.compile(fullgraph=True) cannot trace that keyword.
    ndim = max([0, *(len(s) for s in shapes)])
    out = []
    for axis in range(-ndim, 0):
        sizes = {s[axis] for s in shapes if len(s) >= -axis and s[axis] != 1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def broadcasts_to(shape: Sequence[int], target: Sequence[int]) -> bool:
    """True when an array of ``shape`` broadcasts to exactly ``target`` (never enlarges it)."""
    return len(shape) <= len(target) and broadcast_shapes(shape, target) == tuple(target)


def fmt(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def is_static(shape: Sequence[object]) -> bool:
    """False when a dimension is unknown: ``None`` (the standard's marker) or NaN (Dask,
    after boolean indexing)."""
    return all(n is not None and n == n for n in shape)
