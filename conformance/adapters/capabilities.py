"""What a ``module:callable`` declares about itself, validated: its capabilities.

They come from the ``capabilities`` argument of :func:`attnspec.conformance.adapters.resolve`
(a dict or the path of a TOML file) or else from an ``attnspec_capabilities`` attribute on
the callable (a dict, or a TOML path, relative to the callable's module); :mod:`.user` turns
them into the adapter's features. Keys, all optional:

``features`` (list)
    Declared features (``attnspec.conformance.features.FEATURES``); default: all of
    them, less the options whose keywords the function's signature does not take (a
    function with ``**kwargs`` takes them all), so a kernel written before an option
    existed is never handed it. The behaviours (``empty_rows``, ``poison_scores``,
    ``poison_kv``, ``nonfinite``, ``extreme``, ``arg_errors``) are required by the spec of
    every implementation, declared or not: a known deviation from one goes under
    ``deviations``.
``exclude`` (list)
    Features removed from ``features`` (handy with the default); not behaviours.
``exclusive`` (list of lists)
    Options the function cannot combine: ``[["mask", "bias"]]`` (a mask or a bias, not
    both), ``[["causal", "mask"]]`` (causal or a mask), ``[["mask", "bias", "causal"]]`` (one
    mask of any kind). A case using two options of one list is not applicable; the catalog
    has cases of every rule that use one option at a time.
``deviations`` (list of tables)
    Known differences from the spec, each an expected failure with its reason (see
    :mod:`attnspec.conformance.deviations`): ``[[deviations]] features = ["empty_rows"]
    reason = "a fully masked row gives NaN" issue = "https://..."``.
``library`` (str)
    The distribution the function comes from (``"transformers"``, ``"keras"``): its
    version goes in the report. Default: the callable's top-level package.
``ops`` (list)
    ``attention`` (default), ``mha`` (called with
    :func:`attnspec.multi_head_attention`'s signature), ``softmax``, ``log_softmax``,
    ``logsumexp`` (called as ``fn(x, axis=..., where=...)``).
``dtypes`` (list)
    Supported dtypes (default: every dtype the backend has).
``layout`` (``"bhld"`` | ``"blhd"``)
    ``"blhd"``: query, key, value and out are ``(*batch, L, H, D)`` (tokens before heads);
    masks, bias, lse and weights keep the spec's layout either way. Default ``"bhld"``.
``mask`` (``"keep"`` | ``"drop"`` | ``"additive"``)
    How the function's ``mask=`` reads: bool True = may attend (``keep``, default), bool
    True = masked out (``drop``), or a float added to the scores, 0 / ``-inf`` in the
    input dtype (``additive``).
``returns`` (list)
    The outputs the function gives, from ``out``, ``lse``, ``weights``. With ``lse`` /
    ``weights`` listed, the adapter passes ``return_lse=True`` / ``return_weights=True`` and
    expects a tuple in attnspec's order ``(out, lse, weights)`` holding just those. ``lse``
    and ``weights`` count as declared features exactly when listed here. Default: ``out``,
    plus ``lse`` / ``weights`` when the function's signature has a ``return_lse`` /
    ``return_weights`` parameter (a function that can return them is asked for them).

``backward`` (``false`` | ``true`` | ``"autodiff"`` | ``"function"``)
    Whether gradient cases apply, and how the gradients are obtained:

    * ``"autodiff"`` (``true`` is the same): the callable is differentiable by its backend's
      autodiff (torch autograd; JAX ``jax.vjp`` under ``jax.jit``, so it must be
      traceable), which computes ``dq``, ``dk``, ``dv`` and ``dbias`` (``dsinks``,
      ``dalibi_slopes`` with sinks and ALiBi). Needs a torch or JAX backend.
      ``exclude = ["grad_bias"]`` leaves ``dbias`` ungraded (``grad_sinks``,
      ``grad_alibi`` the others).
    * ``"function"``: the callable has an attribute ``attnspec_backward``, called after the
      forward as ``attnspec_backward(grad_out, query, key, value, **options)`` with the
      cotangent of ``out`` and the options of the forward call (only those the case uses),
      in the callable's layout; it returns ``(dq, dk, dv)`` or ``(dq, dk, dv, dbias)``
      (``dbias`` graded when returned). Any backend, NumPy included.

    Default: ``"function"`` when the callable has ``attnspec_backward``, else ``false``.
``deterministic`` (bool)
    The callable claims bit-identical results for a repeated call: the determinism cases
    call it several times and compare (outputs, and gradients with ``backward``). Default
    ``false``.

``batch_invariant`` (bool)
    The callable claims that a row's outputs are bit-identical whatever else is in the
    batch or the pack: the consistency cases compare it alone and in company bit for bit
    (ATT-CONS-1). Default ``false``.

``backward``, ``grad_bias``, ``grad_sinks``, ``grad_alibi``, ``deterministic`` and
``batch_invariant`` are never part of the default "every feature". Listed under
``features``, ``deterministic`` and ``batch_invariant`` are the same as the keys above,
and ``backward`` means ``"autodiff"`` on a torch or JAX backend (nothing on another
backend).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..cases import SOFTMAX_OPS
from ..deviations import parse_deviations
from ..features import BEHAVIOURS, FEATURES, OPTIONS
from ..tomlcompat import tomllib

__all__ = ["CAPABILITY_KEYS", "DTYPES", "OUTPUTS", "parse_capabilities"]

CAPABILITY_KEYS = ("features", "exclude", "ops", "dtypes", "layout", "mask", "returns",
                   "backward", "deterministic", "batch_invariant", "exclusive", "deviations",
                   "library")
_BACKWARD = ("autodiff", "function")
_OPS = ("attention", "mha", *SOFTMAX_OPS)
DTYPES = ("float64", "float32", "float16", "bfloat16")
OUTPUTS = ("out", "lse", "weights")


def parse_capabilities(source: Any, *, target: str = "") -> dict[str, Any]:
    """Validate capabilities given as a mapping or the path of a TOML file.

    Returns
    -------
    dict
        Only the keys of :data:`CAPABILITY_KEYS`, lists as lists.

    Raises
    ------
    TypeError, ValueError
        For a source of another type; a file that cannot be read, is not UTF-8, not TOML or
        nested too deeply (the message names it); unknown keys, features, ops, dtypes or
        outputs, a value of the wrong type (``features = 5``: "features must be a list of
        feature names"), or a bad ``layout``/``mask`` value.
    """
    where = f"capabilities of {target!r}" if target else "capabilities"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        data = _read_toml(path, where)
        where = f"{where} ({path})"
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        raise TypeError(f"{where} must be a mapping or a TOML file path, "
                        f"got {type(source).__name__}")
    try:
        return _validate(data, where)
    except RecursionError:  # a mapping nested thousands deep (a file stops at _read_toml)
        raise ValueError(f"{where}: nested too deeply") from None


def _read_toml(path: Path, where: str) -> dict[str, Any]:
    """A capabilities file's table; ValueError naming the file for anything wrong with it."""
    toml = tomllib()
    if toml is None:
        raise ImportError("reading a capabilities TOML file needs Python 3.11+ "
                          "(tomllib) or the tomli package")
    try:
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ValueError(f"{where}: cannot read TOML file {str(path)!r} ({exc})") from exc
    try:
        data: dict[str, Any] = toml.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: {str(path)!r} is not a TOML file (not UTF-8 text: "
                         f"{exc})") from None
    except toml.TOMLDecodeError as exc:
        raise ValueError(f"{where}: {str(path)!r} is not valid TOML ({exc})") from exc
    except RecursionError:
        raise ValueError(f"{where}: {str(path)!r} is nested too deeply (arrays or tables "
                         "within each other)") from None
    return data


#: What a list may be in a mapping given in Python (a TOML file has lists only).
_LISTS = (list, tuple, set, frozenset)
#: What the entries of each list-valued key are, for messages.
_NAMES = {"features": "feature names", "exclude": "feature names", "ops": "operation names",
          "dtypes": "dtype names", "returns": "output names"}


def _validate(data: dict[Any, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(data) - set(CAPABILITY_KEYS), key=repr)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known keys: "
                         f"{', '.join(CAPABILITY_KEYS)}")
    caps: dict[str, Any] = {}
    for key, allowed in (("features", tuple(FEATURES)), ("exclude", tuple(FEATURES)),
                         ("ops", _OPS), ("dtypes", DTYPES), ("returns", OUTPUTS)):
        if key in data:
            value = data[key]
            if not isinstance(value, _LISTS) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"{where}: {key} must be a list of {_NAMES[key]} (a list of "
                                f"strings), got {value!r}")
            bad = sorted(set(value) - set(allowed))
            if bad:
                raise ValueError(f"{where}: unknown {key} {bad}; expected some of: "
                                 f"{', '.join(allowed)}")
            caps[key] = list(value)
    for key, allowed in (("layout", ("bhld", "blhd")), ("mask", ("keep", "drop", "additive"))):
        if key in data:
            if data[key] not in allowed:
                raise ValueError(f"{where}: {key} must be one of {', '.join(allowed)}, "
                                 f"got {data[key]!r}")
            caps[key] = data[key]
    if "returns" in caps and "out" not in caps["returns"]:
        raise ValueError(f"{where}: returns must include 'out', got {caps['returns']}")
    behaviours = sorted(set(caps.get("exclude", ())) & BEHAVIOURS)
    if behaviours:
        raise ValueError(
            f"{where}: exclude lists {behaviours}, which the spec requires of every "
            "implementation (they are behaviours, not options); declare a known difference "
            "as a deviation instead, e.g. [[deviations]] features = "
            f"[{behaviours[0]!r}] reason = \"...\" (it is then an expected failure)")
    if "exclusive" in data:
        value = data["exclusive"]
        if not isinstance(value, _LISTS) or not all(
                isinstance(group, _LISTS) and all(isinstance(v, str) for v in group)
                for group in value):
            raise TypeError(f"{where}: exclusive must be a list of lists of options, got "
                            f"{value!r}")
        for group in value:
            bad = sorted(set(group) - OPTIONS)
            if bad or len(set(group)) < 2:
                raise ValueError(f"{where}: exclusive entry {list(group)} must name two or "
                                 f"more options of: {', '.join(sorted(OPTIONS))}")
        caps["exclusive"] = [sorted(set(group)) for group in value]
    if "deviations" in data:
        parse_deviations(data["deviations"], where)  # validated here, built by the adapter
        caps["deviations"] = [dict(entry) for entry in data["deviations"]]
    if "library" in data:
        if not isinstance(data["library"], str) or not data["library"].strip():
            raise TypeError(f"{where}: library must be a distribution or module name, got "
                            f"{data['library']!r}")
        caps["library"] = data["library"].strip()
    if "backward" in data:
        value = data["backward"]
        if value is True:
            value = "autodiff"
        if value is not False and value not in _BACKWARD:
            raise ValueError(f"{where}: backward must be true, false, 'autodiff' or "
                             f"'function', got {value!r}")
        caps["backward"] = value
    if "deterministic" in data:
        if not isinstance(data["deterministic"], bool):
            raise TypeError(f"{where}: deterministic must be true or false, got "
                            f"{data['deterministic']!r}")
        caps["deterministic"] = data["deterministic"]
    if "batch_invariant" in data:
        if not isinstance(data["batch_invariant"], bool):
            raise TypeError(f"{where}: batch_invariant must be true or false, got "
                            f"{data['batch_invariant']!r}")
        caps["batch_invariant"] = data["batch_invariant"]
    return caps
