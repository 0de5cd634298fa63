"""How catalog variants are written: case parameters from a default shape, a variant's name
(its slug, part of the case ID), and its *basic twin* - the same case with one batch dim,
Hq == Hkv, Dv == Dk and Lq == Lk - so that every rule has cases an implementation without
grouped-query heads or Lq != Lk can take (``tests/test_conformance_coverage.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: What a group's generator yields: case parameters and the dtypes to run them in.
Variants = Iterator[tuple[dict[str, Any], tuple[str, ...]]]

__all__ = ["ALL_DTYPES", "F32", "HALF", "Variants"]

HALF = ("float16", "bfloat16")
ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")


def _shape(batch: tuple[int, ...] = (2,), hq: int = 4, hkv: int = 2, lq: int = 6, lk: int = 9,
           dk: int = 16, dv: int | None = None, **options: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"batch": list(batch), "hq": hq, "hkv": hkv, "lq": lq, "lk": lk,
                              "dk": dk, "dv": dk if dv is None else dv}
    params.update(options)
    return params


def _slug(params: dict[str, Any]) -> str:
    """Variant name from the parameters that differ from the defaults."""
    b = params.get("batch", [])
    parts = [f"b{'x'.join(map(str, b)) if b else 0}", f"h{params['hq']}x{params['hkv']}",
             f"q{params['lq']}", f"k{params['lk']}", f"d{params['dk']}"]
    if params.get("dv", params["dk"]) != params["dk"]:
        parts.append(f"v{params['dv']}")
    for key in sorted(params):
        if key in ("batch", "hq", "hkv", "lq", "lk", "dk", "dv", "backward"):
            continue  # "backward": the group's name says so (grad*, determinism-grad)
        value = params[key]
        if isinstance(value, (list, tuple)):
            value = "_".join("n" if x is None else str(x) for x in value)
        parts.append(f"{key}={value}")
    return ".".join(parts)


def _basic(params: dict[str, Any]) -> dict[str, Any]:
    """The same case in its basic shape: one batch dim, Hq == Hkv, Dv == Dk and (unless
    the case is about lower-right alignment) Lq == Lk, so that an implementation declaring
    none of the shape features (``features.SHAPES``) is still graded on the case's rule."""
    twin = dict(params, hkv=params["hq"], dv=params["dk"])
    if len(twin.get("batch", [])) != 1:
        if any(twin.get(n) is not None for n in ("kv_lengths", "q_lengths")):
            raise ValueError(f"a basic twin cannot change the batch of lengths: {params}")
        twin["batch"] = [2]
    if twin["lq"] != twin["lk"] and twin.get("alignment") != "lower_right":
        twin["lq"] = twin["lk"]
    return twin


def _both(params: dict[str, Any], dtypes: tuple[str, ...], twin: tuple[str, ...] | None = None, *,
          square: bool = True) -> Variants:
    """A variant in ``dtypes`` and its basic twin (:func:`_basic`) in ``twin`` (default: the
    same dtypes); ``square=False`` keeps Lq and Lk, for variants that are about them. The
    attention groups yield their variants through this (or yield basic variants directly),
    so that every rule has cases a kernel without grouped-query heads or Lq != Lk can take
    (``tests/test_conformance_coverage.py`` holds the catalog to it)."""
    yield params, dtypes
    other = _basic(params)
    if not square:
        other["lq"] = params["lq"]
    if other != params:
        yield other, dtypes if twin is None else twin


def _only_basic(params: dict[str, Any], dtypes: tuple[str, ...]) -> Variants:
    """A variant in its basic shape alone (where the group has grouped-query variants of its
    own already)."""
    yield _basic(params), dtypes


F32 = ("float32",)
