"""``module:callable``: a third party's function, graded as it says it behaves.

The callable takes :func:`attnspec.scaled_dot_product_attention`'s signature on one backend's
arrays::

    fn(query, key, value, *, mask=None, bias=None, causal=False, window=None,
       alignment="upper_left", scale=None, softcap=None, kv_lengths=None, q_lengths=None,
       dropout_mask=None, dropout_p=0.0, return_lse=False, return_weights=False)

Only the options a case uses are passed, and never at their default value (no
``alignment="upper_left"``, no ``causal=False``), so a function needs only the keywords of the
features it declares. Capabilities come from the ``capabilities`` argument of
:func:`attnspec.conformance.adapters.resolve` (a dict or the path of a TOML file) or else
from an ``attnspec_capabilities`` attribute on the callable (a dict, or a TOML path,
relative to the callable's module). Keys, all optional:

``features`` (list)
    Declared features (``attnspec.conformance.features.FEATURES``); default: all of them.
    The behaviours (``empty_rows``, ``poison_scores``, ``poison_kv``, ``nonfinite``,
    ``extreme``, ``arg_errors``) are required by the spec of every implementation, declared
    or not: a known deviation from one goes under ``deviations``.
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
      traceable), which computes ``dq``, ``dk``, ``dv`` and ``dbias``. Needs a torch or JAX
      backend. ``exclude = ["grad_bias"]`` leaves ``dbias`` ungraded.
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

``backward``, ``grad_bias`` and ``deterministic`` are never part of the default "every
feature". Listed under ``features``, ``deterministic`` is the same as the key above, and
``backward`` means ``"autodiff"`` on a torch or JAX backend (nothing on another backend).

A function that returns a tuple without ``returns`` saying so is an error (the adapter
raises ``TypeError``), not a silent first element.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attnspec

from ..cases import SOFTMAX_OPS, Case
from ..deviations import parse_deviations
from ..features import BEHAVIOURS, FEATURES, OPT_IN, OPTIONS
from ._native import distribution_version
from .base import Adapter, has_autodiff

__all__ = ["CAPABILITY_KEYS", "UserAdapter", "load_callable", "parse_capabilities"]

CAPABILITY_KEYS = ("features", "exclude", "ops", "dtypes", "layout", "mask", "returns",
                   "backward", "deterministic", "exclusive", "deviations", "library")
_BACKWARD = ("autodiff", "function")
_OPS = ("attention", "mha", *SOFTMAX_OPS)
_DTYPES = ("float64", "float32", "float16", "bfloat16")
_OUTPUTS = ("out", "lse", "weights")
_SDPA_OPTIONS = ("mask", "bias", "causal", "window", "alignment", "scale", "softcap",
                 "kv_lengths", "q_lengths", "dropout_mask", "dropout_p")


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


def _toml() -> Any:
    """``tomllib`` (Python 3.11+), else the ``tomli`` backport."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError("reading a capabilities TOML file needs Python 3.11+ "
                              "(tomllib) or the tomli package") from None
    return tomllib


def parse_capabilities(source: Any, *, target: str = "") -> dict[str, Any]:
    """Validate capabilities given as a mapping or the path of a TOML file.

    Returns
    -------
    dict
        Only the keys of :data:`CAPABILITY_KEYS`, lists as lists.

    Raises
    ------
    TypeError, ValueError
        For a source of another type, an unreadable file, unknown keys, features, ops,
        dtypes or outputs, or a bad ``layout``/``mask`` value.
    """
    where = f"capabilities of {target!r}" if target else "capabilities"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        toml = _toml()
        try:
            with path.open("rb") as fh:
                data: Any = toml.load(fh)
        except OSError as exc:
            raise ValueError(f"{where}: cannot read TOML file {str(path)!r} ({exc})") from exc
        except toml.TOMLDecodeError as exc:
            raise ValueError(f"{where}: {str(path)!r} is not valid TOML ({exc})") from exc
        where = f"{where} ({path})"
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        raise TypeError(f"{where} must be a mapping or a TOML file path, "
                        f"got {type(source).__name__}")
    unknown = sorted(set(data) - set(CAPABILITY_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known keys: "
                         f"{', '.join(CAPABILITY_KEYS)}")
    caps: dict[str, Any] = {}
    for key, allowed in (("features", tuple(FEATURES)), ("exclude", tuple(FEATURES)),
                         ("ops", _OPS), ("dtypes", _DTYPES), ("returns", _OUTPUTS)):
        if key in data:
            value = data[key]
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"{where}: {key} must be a list of strings, got {value!r}")
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
        if isinstance(value, str) or not all(
                not isinstance(group, str) and all(isinstance(v, str) for v in group)
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
    return caps


def _signature_returns(fn: Any) -> list[str]:
    """``out``, plus ``lse`` / ``weights`` when ``fn`` has a parameter named ``return_lse`` /
    ``return_weights`` (``**kwargs`` does not count: it says nothing about them)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C function without a signature
        return ["out"]
    return ["out", *(name for name, flag in (("lse", "return_lse"),
                                             ("weights", "return_weights"))
                     if flag in parameters)]


def _attribute_capabilities(fn: Any, target: str) -> Any:
    """The callable's ``attnspec_capabilities``; a relative TOML path is taken relative to
    the directory of the callable's module (not the current directory)."""
    caps = getattr(fn, "attnspec_capabilities", None)
    if caps is None:
        return {}
    if isinstance(caps, (str, os.PathLike)) and not Path(caps).is_absolute():
        module = importlib.import_module(target.partition(":")[0])
        if getattr(module, "__file__", None):
            caps = Path(module.__file__).parent / caps
    return caps


class UserAdapter(Adapter):
    """A ``module:callable`` under test.

    Parameters
    ----------
    target : str
        ``"module:callable"``.
    backend_name : str
        The backend whose arrays the callable takes.
    capabilities : mapping, str or path, optional
        See the module docstring. ``None``: the callable's ``attnspec_capabilities``
        attribute, or every feature.
    """

    def __init__(self, target: str, backend_name: str = "numpy",
                 capabilities: Any = None) -> None:
        self.name = target
        self.target = target
        self.backend_name = backend_name
        self._fn = load_callable(target)
        if capabilities is None:
            capabilities = _attribute_capabilities(self._fn, target)
        self.capabilities = parse_capabilities(capabilities, target=target)
        caps = self.capabilities
        self.ops = frozenset(caps.get("ops", ["attention"]))
        self.returns = tuple(o for o in _OUTPUTS
                             if o in caps.get("returns", _signature_returns(self._fn)))
        declared = set(caps.get("features", set(FEATURES) - OPT_IN))
        backward = caps.get("backward")
        if backward is None:
            # Not given: a backward of its own, else autodiff where ``features`` lists
            # "backward" and the backend differentiates.
            backward = "function" if hasattr(self._fn, "attnspec_backward") else (
                "autodiff" if "backward" in declared and has_autodiff(backend_name)
                else False)
        if backward == "function" and not callable(getattr(self._fn, "attnspec_backward",
                                                           None)):
            raise ValueError(f"capabilities of {target!r}: backward = 'function' needs a "
                             "callable attribute attnspec_backward on the callable")
        if backward == "autodiff" and not has_autodiff(backend_name):
            raise ValueError(f"capabilities of {target!r}: backward = 'autodiff' needs a "
                             f"backend with autodiff (torch, JAX), not {backend_name!r}; "
                             "or give the callable an attnspec_backward")
        self.backward_mode = backward
        declared -= OPT_IN
        if backward:
            declared.add("backward")
            if backward == "autodiff":
                declared.add("grad_bias")
        if caps.get("deterministic") or "deterministic" in caps.get("features", ()):
            declared.add("deterministic")
        features = declared - set(caps.get("exclude", ()))
        features -= {"lse", "weights"}
        features |= set(self.returns) - {"out"}
        self.features = frozenset(features)
        if "dtypes" in caps:
            self.supported_dtypes = tuple(d for d in _DTYPES if d in caps["dtypes"])
        self.layout = caps.get("layout", "bhld")
        self.mask_convention = caps.get("mask", "keep")
        self.exclusive = tuple(frozenset(group) for group in caps.get("exclusive", ()))
        self.deviations = parse_deviations(caps.get("deviations", []),
                                           f"capabilities of {target!r}")
        self.library = caps.get("library") or target.partition(":")[0].partition(".")[0]
        self.description = f"{target} on {backend_name}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Re-imported by target in a worker process (functions need not pickle).
        return (type(self), (self.target, self.backend_name, self.capabilities))

    def versions(self) -> dict[str, str]:
        """The version of the library under test (``library``): its distribution's, else
        its module's ``__version__``; "unknown" when it has neither (a wrapper module)."""
        name = self.library
        version = distribution_version(name)
        if version is None:
            try:
                version = getattr(importlib.import_module(name), "__version__", None)
            except Exception:  # not a module either
                version = None
        return {name: str(version) if version is not None else "unknown"}

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        if case.op in SOFTMAX_OPS:
            kwargs = {k: args[k] for k in ("axis", "where") if k in args}
            return {"out": self._single(self._fn(args["x"], **kwargs))}
        if case.op == "mha":
            rest = {k: v for k, v in args.items() if k not in ("query", "key", "value")}
            return {"out": self._single(self._fn(args["query"], args["key"], args["value"],
                                                 **rest))}
        return self._attention(args)

    def _single(self, result: Any) -> Any:
        if isinstance(result, tuple):
            raise TypeError(f"{self.target} returned a tuple of {len(result)}; list the "
                            "outputs in the capability 'returns'")
        return result

    def _arguments(self, args: dict[str, Any]) -> tuple[Any, Any, Any, dict[str, Any]]:
        """query, key, value in the callable's layout, and its options (mask translated)."""
        q, k, v = args["query"], args["key"], args["value"]
        if self.layout == "blhd":
            q, k, v = (attnspec.bhld_to_blhd(x) for x in (q, k, v))
        options = {name: args[name] for name in _SDPA_OPTIONS if name in args}
        if options.get("alignment") == "upper_left":
            del options["alignment"]  # the default: a callable without it must not see it
        if options.get("causal") is False:
            del options["causal"]
        mask = options.get("mask")
        if mask is not None and self.mask_convention != "keep":
            xp = self.backend.namespace()
            if self.mask_convention == "drop":
                options["mask"] = xp.logical_not(mask)
            else:
                options["mask"] = attnspec.mask_to_bias(mask, dtype=q.dtype)
        return q, k, v, options

    def _attention(self, args: dict[str, Any]) -> dict[str, Any]:
        q, k, v, options = self._arguments(args)
        if "lse" in self.returns:
            options["return_lse"] = True
        if "weights" in self.returns:
            options["return_weights"] = True
        result = self._fn(q, k, v, **options)
        if len(self.returns) == 1:
            outputs = {"out": self._single(result)}
        else:
            if not isinstance(result, tuple) or len(result) != len(self.returns):
                got = f"a tuple of {len(result)}" if isinstance(result, tuple) else "one array"
                raise TypeError(f"{self.target} returned {got}; its capabilities say "
                                f"{list(self.returns)}")
            outputs = dict(zip(self.returns, result, strict=True))
        if self.layout == "blhd":
            outputs["out"] = attnspec.blhd_to_bhld(outputs["out"])
        return outputs

    def backward(self, case: Case, args: dict[str, Any], cotangent: Any) -> Any:
        """Autodiff (the base class), or the callable's own ``attnspec_backward``."""
        if self.backward_mode != "function":
            return super().backward(case, args, cotangent)
        backward_fn = self._fn.attnspec_backward

        def once() -> dict[str, Any]:
            out = self.call(case, dict(args))["out"]
            q, k, v, options = self._arguments(args)
            grad_out = attnspec.bhld_to_blhd(cotangent) if self.layout == "blhd" else cotangent
            grads = backward_fn(grad_out, q, k, v, **options)
            if not isinstance(grads, tuple) or len(grads) not in (3, 4):
                got = (f"a tuple of {len(grads)}" if isinstance(grads, tuple)
                       else type(grads).__name__)
                raise TypeError(f"{self.target}.attnspec_backward returned {got}; expected "
                                "(dq, dk, dv) or (dq, dk, dv, dbias)")
            names = ("dq", "dk", "dv", "dbias")[:len(grads)]
            result = {"out": out, **dict(zip(names, grads, strict=True))}
            if self.layout == "blhd":
                for name in ("dq", "dk", "dv"):
                    result[name] = attnspec.blhd_to_bhld(result[name])
            return result

        return once
