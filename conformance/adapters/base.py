"""What an adapter is: a callable plus its layout, mask convention and declared features.

An adapter receives a case's inputs as NumPy float64 arrays (already rounded to the case
dtype), moves them to its backend in the case dtype, calls the implementation, and hands
back NumPy outputs plus the dtype names the implementation produced. Subclasses implement
:meth:`Adapter.call` in the implementation's own terms (layout, mask polarity, argument
names); everything else (availability, applicability, data movement) lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from attnspec.backends import HOST, Backend, get

from ..bits import bit_difference
from ..cases import Case, Inputs
from ..deviations import Deviation
from ..features import BEHAVIOURS, violated

__all__ = ["Adapter", "AdapterOutput", "InvalidOutput", "dtype_name", "has_autodiff",
           "on_host"]


def has_autodiff(backend_name: str) -> bool:
    """Whether the backend's framework differentiates (torch, JAX); imports nothing."""
    return get(backend_name).has_autodiff


def on_host(backend_name: str) -> bool:
    """Whether the backend computes on the CPU (NumPy, array-api-strict, Dask, ``*-cpu``):
    the backend's answer (:func:`attnspec.backends.device_kind`)."""
    return get(backend_name).device_kind() == HOST


def dtype_name(x: Any) -> str:
    """``torch.float32`` / ``array_api_strict.float32`` / ``float32`` -> ``float32``."""
    return str(getattr(x, "dtype", type(x).__name__)).rsplit(".", 1)[-1]


class InvalidOutput(Exception):
    """The implementation returned something that is not an array (``None``, a list, a
    string...). Not an exception the implementation raised: the runner records it as an
    invalid output, so a case expecting ``TypeError`` does not pass on it."""


@dataclass
class AdapterOutput:
    outputs: dict[str, np.ndarray]
    dtypes: dict[str, str]
    #: Input arrays the call changed, one line each (``query: 3 of 48 entries changed``).
    modified: list[str] = field(default_factory=list)
    #: The outputs of the repeated calls of a determinism case (``params["repeat"]``), after
    #: the first (whose outputs are :attr:`outputs`).
    repeats: list[dict[str, np.ndarray]] = field(default_factory=list)
    #: The outputs of a consistency case's variant calls (``Inputs.variants``), in order.
    variants: list[dict[str, np.ndarray]] = field(default_factory=list)


def _is_array(x: Any) -> bool:
    """An array object (the Array API's ``shape`` and ``dtype``), not a list or a scalar."""
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (str, bytes))


class Adapter:
    """Base class of every implementation under test.

    Attributes
    ----------
    name : str
        The name reports use (``torch.sdpa``, ``attnspec[jax-cpu]``, ``mypkg.attn:fwd``).
    backend_name : str
        The ``attnspec.backends`` backend whose arrays the implementation takes.
    ops : frozenset of str
        Operations implemented: ``attention``, ``mha``, ``softmax``, ``log_softmax``,
        ``logsumexp``.
    features : frozenset of str
        Declared features (``attnspec.conformance.features.FEATURES``); a case needing more
        is not applicable.
    description : str
        One line for reports.
    deviations : tuple of Deviation
        Where the implementation knowingly differs from the spec (``deviations.py``): the
        cases they cover are expected failures, not "not applicable".
    exclusive : tuple of frozenset of str
        Options at most one of each set of which a call may use (``{"mask", "bias"}``: the
        implementation takes a mask or a bias, not both); a case using more is not
        applicable.
    library : str
        The distribution (or top-level module) of the implementation under test, whose
        version the report records.
    """

    name: str = "adapter"
    backend_name: str = "numpy"
    ops: frozenset[str] = frozenset({"attention"})
    features: frozenset[str] = frozenset()
    description: str = ""
    #: dtypes the implementation supports at most (the backend may support fewer).
    supported_dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    deviations: tuple[Deviation, ...] = ()
    exclusive: tuple[frozenset[str], ...] = ()
    library: str = ""

    # -- availability -------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        return get(self.backend_name)

    def unavailable(self) -> str | None:
        """Why this adapter cannot run here (``None`` when it can)."""
        backend = self.backend
        return None if backend.available else backend.reason

    def versions(self) -> dict[str, str]:
        """Versions of the libraries the implementation comes from."""
        return {}

    def dtypes(self) -> tuple[str, ...]:
        backend_dtypes = self.backend.dtypes if self.backend.available else ()
        return tuple(d for d in self.supported_dtypes if d in backend_dtypes)

    def not_applicable(self, case: Case) -> str | None:
        """Why ``case`` is outside this adapter's declaration (``None`` when applicable)."""
        if case.op not in self.ops:
            return f"does not implement {case.op}"
        if case.dtype not in self.dtypes():
            if case.dtype not in self.supported_dtypes:
                return f"does not declare dtype {case.dtype}"
            return f"no {case.dtype} on {self.backend_name}"
        missing = self.missing(case)
        if missing:
            return "does not declare " + ", ".join(missing)
        combined = violated(self.exclusive, case.features)
        if combined:
            return f"cannot combine {combined} (declared constraint)"
        if ("backward" in case.features and type(self).backward is Adapter.backward
                and not has_autodiff(self.backend_name)):
            return (f"declares backward, but {self.backend_name} has no autodiff and the "
                    "adapter no backward of its own")
        return None

    def missing(self, case: Case) -> list[str]:
        """The features ``case`` needs that the adapter does not declare; behaviours are
        never missing (``features.BEHAVIOURS``: the spec requires them of every input an
        implementation accepts)."""
        return sorted(case.features - self.features - BEHAVIOURS)

    # -- running ------------------------------------------------------------------------

    def to_backend(self, case: Case, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Inputs as backend arrays: floats in the case dtype, bools and ints as they are."""
        backend = self.backend
        overrides = inputs.dtypes if isinstance(inputs, Inputs) else {}
        args: dict[str, Any] = {}
        for name, value in inputs.items():
            if isinstance(value, np.ndarray):
                # Float inputs go over in the case dtype (their values are already rounded
                # to it); masks, lengths and indices keep theirs.
                floating = np.issubdtype(value.dtype, np.floating)
                dtype = overrides.get(name, case.dtype) if floating else None
                if dtype is not None and dtype not in backend.dtypes:
                    # A mixed-dtype case only needs *another* dtype than the case's.
                    dtype = next(d for d in backend.dtypes if d != case.dtype)
                args[name] = backend.from_numpy(value, dtype=dtype)
            else:
                args[name] = value
        return args

    def run(self, case: Case, inputs: Inputs) -> AdapterOutput:
        """Run the case; exceptions propagate (the runner records them).

        A gradient case (``params["backward"]``) runs the forward and the backward
        (:meth:`backward`) and returns ``dq``, ``dk``, ``dv`` (``dbias``) besides ``out``. A
        determinism case (``params["repeat"] = n``) makes the same call ``n`` times on the
        same backend arrays; the outputs of the repeats are in
        :attr:`AdapterOutput.repeats`, for the runner to compare bit for bit.

        On a backend with writeable arrays, the array inputs are copied before the call and
        compared with what the implementation left in them afterwards
        (:attr:`AdapterOutput.modified`).

        Raises
        ------
        InvalidOutput
            When an output is not an array.
        """
        backend = self.backend
        args = self.to_backend(case, inputs)
        watched = {}
        if backend.has("writeable"):
            watched = {name: backend.to_numpy(x) for name, x in args.items()
                       if isinstance(inputs.get(name), np.ndarray)}
        if case.backward:
            cotangent = backend.from_numpy(inputs.cotangent, dtype=case.dtype)
            once = self.backward(case, args, cotangent)
        else:
            # A shallow copy: an adapter may pop its arguments, the arrays stay referenced.
            def once() -> Any:
                return self.call(case, dict(args))
        runs = [self._collect(once()) for _ in range(case.repeats)]
        modified = []
        for name, before in watched.items():
            try:
                change = bit_difference(before, backend.to_numpy(args[name]),
                                        verb="changed", largest=False)
            except Exception as exc:  # e.g. a deleted or donated buffer
                change = f"cannot be read back after the call ({type(exc).__name__}: {exc})"
            if change:
                modified.append(f"{name}: {change}")
        (outputs, dtypes), repeats = runs[0], [r[0] for r in runs[1:]]
        variants = [self._collect(self.call(case, self.to_backend(case, v)))[0]
                    for v in getattr(inputs, "variants", [])]
        return AdapterOutput(outputs, dtypes, modified, repeats, variants)

    def _collect(self, results: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Backend outputs as NumPy arrays and their dtype names."""
        if not isinstance(results, dict):
            raise InvalidOutput(f"the adapter returned {type(results).__name__}, expected a "
                                "dict of outputs")
        for name, x in results.items():
            if not _is_array(x):
                raise InvalidOutput(f"output {name!r} is not an array: the implementation "
                                    f"returned {_describe(x)}")
        backend = self.backend
        expected = backend.namespace()
        for name, x in results.items():
            # NumPy out of an implementation run on torch would pass through to_numpy: the
            # spec's "same namespace as the inputs" (ATT-ARG-1's arrays) is checked instead.
            try:
                got = array_namespace(x)
            except TypeError:
                got = None
            if got is not expected:
                raise InvalidOutput(
                    f"output {name!r} is a {type(x).__module__}.{type(x).__qualname__}, not "
                    f"an array of the inputs' backend "
                    f"{backend.name} ({getattr(expected, '__name__', expected)}): return "
                    "arrays of the namespace the inputs came in")
        backend.synchronize(results.get("out"))
        outputs = {name: np.asarray(backend.to_numpy(x)) for name, x in results.items()}
        return outputs, {name: dtype_name(x) for name, x in results.items()}

    def gradient_inputs(self, case: Case, args: dict[str, Any]) -> list[str]:
        """The inputs a gradient case differentiates: query, key, value, and bias, sinks or
        ALiBi slopes when the case has them and the adapter declares ``grad_bias``,
        ``grad_sinks`` or ``grad_alibi``."""
        names = ["query", "key", "value"]
        for name, feature in (("bias", "grad_bias"), ("sinks", "grad_sinks"),
                              ("alibi_slopes", "grad_alibi")):
            if args.get(name) is not None and feature in self.features:
                names.append(name)
        return names

    def backward(self, case: Case, args: dict[str, Any], cotangent: Any) -> Any:
        """A function of no arguments that runs the forward and the backward once and returns
        ``out``, ``dq``, ``dk``, ``dv`` (``dbias``) as backend arrays.

        The default differentiates :meth:`call` with the backend's autodiff
        (:mod:`._autodiff`: torch autograd, ``jax.vjp`` under ``jax.jit``); adapters whose
        implementation brings its own backward override this.
        """
        from ._autodiff import backward

        def out(arrays: dict[str, Any]) -> Any:
            results = self.call(case, arrays)
            if not isinstance(results, dict):
                raise InvalidOutput(f"the adapter returned {type(results).__name__}, expected "
                                    "a dict of outputs")
            value = results.get("out")
            if not _is_array(value):
                raise InvalidOutput(f"output 'out' is not an array: the implementation "
                                    f"returned {_describe(value)}")
            return value

        return backward(self.backend, out, args, cotangent, self.gradient_inputs(case, args),
                        self.name)

    def call(self, case: Case, args: dict[str, Any]) -> dict[str, Any]:
        """Call the implementation with backend arrays; return ``out`` (and ``lse``,
        ``weights`` where it can) as backend arrays in the spec's layout."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _describe(x: Any) -> str:
    """``None`` / ``a list of 3`` / ``a str of 12 characters`` / ``an object of type Foo``."""
    if x is None:
        return "None"
    if isinstance(x, (list, tuple, dict, set)):
        return f"a {type(x).__name__} of {len(x)}"
    if isinstance(x, (str, bytes)):
        return f"a {type(x).__name__} of {len(x)} characters"
    if isinstance(x, (int, float, complex, bool)):
        return f"a Python {type(x).__name__}"
    return f"an object of type {type(x).__name__}"
