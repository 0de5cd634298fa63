"""``module:callable``: a third party's function, graded as it says it behaves.

The callable takes :func:`attnspec.scaled_dot_product_attention`'s signature on one backend's
arrays::

    fn(query, key, value, *, mask=None, bias=None, causal=False, window=None,
       alignment="upper_left", scale=None, softcap=None, kv_lengths=None, q_lengths=None,
       dropout_mask=None, dropout_p=0.0, return_lse=False, return_weights=False)

Only the options a case uses are passed, and never at their default value (no
``alignment="upper_left"``, no ``causal=False``), so a function needs only the keywords of the
features it declares. What it declares (features, ops, dtypes, layout, mask convention,
outputs, backward, determinism, deviations) are its capabilities, whose keys are listed and
validated in :mod:`.capabilities`; :mod:`.callables` imports the callable.

A function that returns a tuple without ``returns`` saying so is an error (the adapter
raises ``TypeError``), not a silent first element.
"""

from __future__ import annotations

import importlib
from typing import Any

import attnspec

from ..cases import SOFTMAX_OPS, Case
from ..deviations import parse_deviations
from ..features import CALL_OPTIONS, FEATURES, KEYWORDS, OPT_IN
from ._native import distribution_version
from .base import Adapter, has_autodiff
from .callables import (
    attribute_capabilities,
    load_callable,
    signature_keywords,
    signature_returns,
)
from .capabilities import CAPABILITY_KEYS, DTYPES, OUTPUTS, parse_capabilities

__all__ = ["CAPABILITY_KEYS", "UserAdapter", "load_callable", "parse_capabilities"]

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
            capabilities = attribute_capabilities(self._fn, target)
        self.capabilities = parse_capabilities(capabilities, target=target)
        caps = self.capabilities
        self.ops = frozenset(caps.get("ops", ["attention"]))
        self.returns = tuple(o for o in OUTPUTS
                             if o in caps.get("returns", signature_returns(self._fn)))
        declared = set(caps.get("features", set(FEATURES) - OPT_IN))
        accepted = signature_keywords(self._fn)
        if "features" not in caps and accepted is not None and "attention" in self.ops:
            # "Every feature" means every option the signature takes: a callable written
            # before an option existed is not handed it (and shows "not declared").
            declared = {f for f in declared
                        if all(k in accepted for k in KEYWORDS.get(f, ()))}
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
                declared |= {"grad_bias", "grad_sinks", "grad_alibi"}
        if caps.get("deterministic") or "deterministic" in caps.get("features", ()):
            declared.add("deterministic")
        if caps.get("batch_invariant") or "batch_invariant" in caps.get("features", ()):
            declared.add("batch_invariant")
        features = declared - set(caps.get("exclude", ()))
        features -= {"lse", "weights"}
        features |= set(self.returns) - {"out"}
        self.features = frozenset(features)
        if "dtypes" in caps:
            self.supported_dtypes = tuple(d for d in DTYPES if d in caps["dtypes"])
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
        options = {name: args[name] for name in CALL_OPTIONS if name in args}
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
