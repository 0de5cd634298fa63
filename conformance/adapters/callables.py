"""A user's ``module:callable``: importing it, and what the callable itself tells about
what it declares (an ``attnspec_capabilities`` attribute, its signature's return flags)."""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

__all__ = ["attribute_capabilities", "load_callable", "signature_keywords", "signature_returns"]


def load_callable(target: str) -> Any:
    """Import ``module:callable`` (the callable may be a dotted path inside the module).

    Raises
    ------
    ValueError
        If ``target`` is not of the form ``module:callable`` or the attribute is missing.
    ImportError
        If the module cannot be imported (the message names the target and the cause).
    TypeError
        If the attribute is not callable.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"target must be 'module:callable', got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"target {target!r}: cannot import module {module_name!r} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"target {target!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if not callable(obj):
        raise TypeError(f"target {target!r} is not callable: it is a {type(obj).__name__}")
    return obj


def signature_returns(fn: Any) -> list[str]:
    """``out``, plus ``lse`` / ``weights`` when ``fn`` has a parameter named ``return_lse`` /
    ``return_weights`` (``**kwargs`` does not count: it says nothing about them)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C function without a signature
        return ["out"]
    return ["out", *(name for name, flag in (("lse", "return_lse"),
                                             ("weights", "return_weights"))
                     if flag in parameters)]


def signature_keywords(fn: Any) -> frozenset[str] | None:
    """The keyword names ``fn`` accepts, or ``None`` when it takes ``**kwargs`` or has no
    signature (it may take anything)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters if p.kind in (
        inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))


def attribute_capabilities(fn: Any, target: str) -> Any:
    """The callable's ``attnspec_capabilities``; a relative TOML path is taken relative to
    the directory of the callable's module (not the current directory)."""
    caps = getattr(fn, "attnspec_capabilities", None)
    if caps is None:
        return {}
    if isinstance(caps, (str, os.PathLike)) and not Path(caps).is_absolute():
        module = importlib.import_module(target.partition(":")[0])
        module_file = getattr(module, "__file__", None)
        if module_file:
            caps = Path(module_file).parent / caps
    return caps
