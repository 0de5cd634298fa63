"""The :class:`Backend` type shared by every framework module.

A backend is one framework on one kind of device ("torch-cpu", "jax-gpu", ...). Creating a
``Backend`` imports nothing: the framework is imported, and the device probed, the first time
``available`` / ``reason`` (or anything that needs the framework) is read, and the answer is
cached. Framework modules subclass :class:`Backend` and fill in the ``_``-prefixed hooks.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

from attnspec._namespace import ACCELERATOR, HOST, DeviceKind, device_kind

__all__ = ["ACCELERATOR", "CAPABILITIES", "DEVICE_NAMES", "DTYPE_NAMES", "HOST", "Backend",
           "BackendUnavailableError", "DeviceKind", "NotDifferentiableError", "Vjp",
           "import_optional"]

#: Every capability a backend may declare.
CAPABILITIES: frozenset[str] = frozenset(
    {"autograd", "jit", "lazy", "writeable", "float64", "float16", "bfloat16"}
)

#: dtype names understood by :meth:`Backend.dtype`, widest first.
DTYPE_NAMES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")

# dtype names that are also capabilities (float32 is assumed everywhere).
_DTYPE_CAPABILITIES = ("float64", "float16", "bfloat16")


#: The ``device=`` names (``attnspec check --device``) that pick a backend of each kind.
DEVICE_NAMES: dict[DeviceKind, tuple[str, ...]] = {HOST: ("cpu",),
                                                   ACCELERATOR: ("cuda", "gpu")}

#: What :meth:`Backend.vjp` returns: a function of no arguments that runs the forward and
#: the backward once and returns ``(out, [gradient per primal])``.
Vjp = Callable[[], tuple[Any, list[Any]]]


class BackendUnavailableError(RuntimeError):
    """Raised when a backend that is not usable on this machine is asked to do work."""


class NotDifferentiableError(RuntimeError):
    """The forward's output is not differentiable through the backend's autodiff (it was
    detached, or computed outside the framework)."""


def import_optional(module: str, label: str) -> tuple[Any, str | None]:
    """Import ``module`` if it is installed.

    Parameters
    ----------
    module : str
        Dotted module name.
    label : str
        Human name used in the reason, e.g. ``"CuPy"``.

    Returns
    -------
    tuple
        ``(module, None)`` on success, ``(None, reason)`` otherwise.
    """
    try:
        if importlib.util.find_spec(module.partition(".")[0]) is None:
            return None, f"{label}: not installed"
    except (ImportError, ValueError):
        return None, f"{label}: not installed"
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # a broken install must not break the registry
        return None, f"{label}: import failed ({type(exc).__name__}: {exc})"


class Backend:
    """One array framework on one kind of device.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"torch-cpu"``.
    framework : str
        Framework name, e.g. ``"torch"``.

    Attributes
    ----------
    name : str
        Registry name.
    framework : str
        Framework name.
    """

    #: Capabilities the framework has independent of configuration; subclasses set this.
    static_capabilities: frozenset[str] = frozenset()
    #: Where this backend's arrays live: ``"host"`` (the CPU's memory) or
    #: ``"accelerator"`` (a GPU's); subclasses on an accelerator set it.
    kind: DeviceKind = HOST

    def __init__(self, name: str, framework: str) -> None:
        self.name = name
        self.framework = framework
        self._probed = False
        self._reason: str | None = None
        self._namespace: Any = None
        self._device: Any = None

    # -- availability ---------------------------------------------------------------------

    def _probe(self) -> str | None:
        """Return ``None`` when usable here, else a reason. Subclasses override."""
        raise NotImplementedError

    def _ensure_probed(self) -> None:
        if not self._probed:
            try:
                self._reason = self._probe()
            except Exception as exc:  # probing must never raise
                self._reason = f"{self.name}: probe failed ({type(exc).__name__}: {exc})"
            self._probed = True

    @property
    def available(self) -> bool:
        """Whether the framework is installed and its device is present."""
        self._ensure_probed()
        return self._reason is None

    @property
    def reason(self) -> str | None:
        """Why the backend is unavailable (``None`` when it is available)."""
        self._ensure_probed()
        return self._reason

    def _require(self) -> None:
        if not self.available:
            raise BackendUnavailableError(self.reason)

    # -- capabilities and dtypes ------------------------------------------------------------

    def _dynamic_capabilities(self) -> frozenset[str]:
        """Capabilities that depend on run-time configuration (JAX x64). Default: none."""
        return frozenset()

    @property
    def capabilities(self) -> frozenset[str]:
        """Declared capabilities, a subset of :data:`CAPABILITIES`."""
        return self.static_capabilities | self._dynamic_capabilities()

    @property
    def dtypes(self) -> tuple[str, ...]:
        """Names of the floating dtypes this backend supports, widest first."""
        caps = self.capabilities
        return tuple(n for n in DTYPE_NAMES if n == "float32" or n in caps)

    def has(self, capability: str) -> bool:
        """Whether the backend declares ``capability``.

        Parameters
        ----------
        capability : str
            One of :data:`CAPABILITIES`.

        Returns
        -------
        bool

        Raises
        ------
        ValueError
            If ``capability`` is not a known capability name.
        """
        if capability not in CAPABILITIES:
            raise ValueError(
                f"capability must be one of {sorted(CAPABILITIES)}, got {capability!r}"
            )
        return capability in self.capabilities

    def _check_dtype_name(self, name: str) -> None:
        if name not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {list(DTYPE_NAMES)}, got {name!r}")
        if name not in self.dtypes:
            raise ValueError(
                f"{self.name}: dtype {name!r} is not supported here ({self._why_not(name)})"
            )

    def _why_not(self, name: str) -> str:
        """Explain a missing dtype; subclasses refine this."""
        return f"supported: {list(self.dtypes)}"

    # -- framework objects ------------------------------------------------------------------

    def namespace(self) -> Any:
        """The array-api-compat namespace of this backend's arrays."""
        self._require()
        if self._namespace is None:
            self._namespace = self._make_namespace()
        return self._namespace

    def _make_namespace(self) -> Any:
        import array_api_compat

        return array_api_compat.array_namespace(self._from_numpy(_np().zeros(1), "float32"))

    @property
    def device(self) -> Any:
        """The framework's device object arrays are placed on."""
        self._require()
        if self._device is None:
            self._device = self._make_device()
        return self._device

    def _make_device(self) -> Any:
        raise NotImplementedError

    def dtype(self, name: str) -> Any:
        """The framework dtype object for a dtype name.

        Parameters
        ----------
        name : str
            One of ``"float64"``, ``"float32"``, ``"float16"``, ``"bfloat16"``.

        Returns
        -------
        object
            The framework's dtype.

        Raises
        ------
        ValueError
            If the name is unknown or the dtype is unsupported on this backend.
        """
        self._require()
        self._check_dtype_name(name)
        return self._dtype(name)

    def _dtype(self, name: str) -> Any:
        raise NotImplementedError

    # -- data movement ----------------------------------------------------------------------

    def from_numpy(self, a: Any, dtype: str | None = None) -> Any:
        """Copy a NumPy array onto this backend.

        The result never shares memory with ``a``. bfloat16 goes through float32 and is cast
        by the framework (NumPy has no bfloat16).

        Parameters
        ----------
        a : array_like
            Input data (converted with :func:`numpy.asarray`).
        dtype : str, optional
            Target dtype name; by default the dtype of ``a`` is kept.

        Returns
        -------
        array
            An array of the backend's framework on :attr:`device`.
        """
        self._require()
        np = _np()
        a = np.asarray(a)
        if dtype is None and a.dtype.name == "bfloat16":  # e.g. an ml_dtypes array
            dtype = "bfloat16"
        if dtype is not None:
            self._check_dtype_name(dtype)
            if dtype == "bfloat16":
                host = np.array(a, dtype=np.float32, order="C", copy=True)
            else:
                host = np.array(a, dtype=dtype, order="C", copy=True)
        else:
            if a.dtype.kind == "f":
                name = a.dtype.name
                if name in DTYPE_NAMES:
                    self._check_dtype_name(name)
            # An owned, contiguous, native-order copy: safe for DLPack and never aliases `a`.
            host = np.array(a, order="C", copy=True)
            if not host.dtype.isnative:
                host = host.astype(host.dtype.newbyteorder("="))
        return self._from_numpy(host, dtype)

    def _from_numpy(self, host: Any, dtype: str | None) -> Any:
        """Move an owned C-contiguous NumPy array in, then cast to ``dtype`` if given."""
        raise NotImplementedError

    def to_numpy(self, x: Any) -> Any:
        """Copy an array of this backend to a NumPy array (bfloat16 becomes float32).

        Parameters
        ----------
        x : array
            An array of this backend (NumPy arrays and Python scalars are accepted too).

        Returns
        -------
        numpy.ndarray
            A writeable array that does not share memory with ``x``.
        """
        self._require()
        np = _np()
        if isinstance(x, np.ndarray | np.generic | int | float | bool):
            return np.array(x, copy=True)
        return np.array(self._to_numpy(x), copy=True)

    def _to_numpy(self, x: Any) -> Any:
        raise NotImplementedError

    def synchronize(self, x: Any = None) -> Any:
        """Wait until pending device work (for ``x``, or all work) has finished.

        Parameters
        ----------
        x : array, optional
            Array whose computation to wait for.

        Returns
        -------
        object
            ``x`` itself, so calls can be chained.
        """
        self._require()
        self._synchronize(x)
        return x

    def _synchronize(self, x: Any) -> None:
        """No-op by default: host frameworks finish eagerly."""

    # -- device kind and autodiff -------------------------------------------------------

    def device_kind(self, where: Any = None) -> DeviceKind:
        """``"host"`` or ``"accelerator"``: of this backend (``where=None``), or of an
        array, a device object or a device name (``"cuda"``) given as ``where``. Imports
        nothing.

        A backend on an accelerator answers ``"accelerator"`` whatever ``where`` is; on the
        host, ``where`` decides (``device="cuda"`` asked of ``torch-cpu``)."""
        if self.kind == ACCELERATOR or where is None:
            return self.kind
        return device_kind(where)

    def runs_on(self, device: str) -> bool:
        """Whether ``device`` (``"cpu"``, ``"cuda"``, ``"gpu"``) names this backend's kind
        of device (:data:`DEVICE_NAMES`)."""
        return device in DEVICE_NAMES[self.kind]

    @property
    def has_autodiff(self) -> bool:
        """Whether :meth:`vjp` differentiates (the framework has autodiff); imports
        nothing."""
        return "autograd" in self.static_capabilities

    def vjp(self, forward: Callable[..., Any], primals: Sequence[Any],
            cotangent: Any) -> Vjp:
        """The vector-Jacobian product of ``forward`` at ``primals`` with ``cotangent``,
        through the framework's autodiff, as a function that computes it once per call.

        Parameters
        ----------
        forward : callable
            ``forward(*primals) -> out``, one array of this backend.
        primals : sequence of arrays
            The arrays to differentiate with respect to.
        cotangent : array
            Of ``out``'s shape; cast to ``out``'s dtype.

        Returns
        -------
        callable
            ``once() -> (out, grads)``: ``grads[i]`` is the gradient for ``primals[i]``
            (zeros where ``out`` does not depend on it).

        Raises
        ------
        NotImplementedError
            On a backend without autodiff (:attr:`has_autodiff` is false).
        """
        raise NotImplementedError(f"{self.name} has no autodiff")

    # -- misc -------------------------------------------------------------------------------

    def __repr__(self) -> str:
        if not self._probed:
            state = "not probed"
        else:
            state = "available" if self._reason is None else f"unavailable: {self._reason}"
        return f"<Backend {self.name} ({state})>"


def _np() -> Any:
    import numpy

    return numpy
