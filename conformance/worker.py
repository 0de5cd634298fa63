"""What runs in a worker process (and, for ``isolate=False``, in this one): create the
adapter, describe it, then answer numbered requests (run a case, fingerprint, report library
versions) until told to stop or the parent goes away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .adapters.base import AdapterOutput, InvalidOutput
from .cases import Case, Inputs
from .limits import apply_memory_limit
from .messages import AdapterSpec, RaisedError, Reply, Request, RequestKind, Started
from .signals import die_with_parent

__all__ = ["declaration", "describe", "device_name", "enable_jax_x64", "execute", "handle",
           "libraries", "quiet", "take_fingerprint", "worker_main"]

#: NumPy dtype kinds an output may have (bool, ints, floats, complex; grade() checks the
#: exact dtype).
_NUMERIC_KINDS = "biufc"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No floating-point warnings: overflow and invalid values are what cases are about."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def describe(adapter: Any, cases: Sequence[Case] | None) -> dict[str, Any]:
    """What the parent needs to know about an adapter: its info, why it cannot run here
    (``unavailable``), and per case ``None`` (run it), a not-applicable reason (str), or
    the :class:`RaisedError` that ``not_applicable`` raised."""
    unavailable = adapter.unavailable()
    try:
        versions = dict(adapter.versions()) if unavailable is None else {}
    except Exception as exc:  # versions are informative; never fail the run over them
        versions = {"error": str(RaisedError.from_exception(exc))}
    info = {
        "name": str(adapter.name), "backend": str(adapter.backend_name),
        "device": device_name(adapter) if unavailable is None else "",
        "description": str(adapter.description), "versions": versions,
        "features": sorted(adapter.features),
        **declaration(adapter, dtypes=unavailable is None),
    }
    plan: dict[str, Any] = {}
    if unavailable is None:
        for case in cases or ():
            try:
                plan[case.id] = adapter.not_applicable(case)
            except Exception as exc:
                plan[case.id] = RaisedError.from_exception(exc)
    return {"info": info, "unavailable": unavailable, "plan": plan}


def declaration(adapter: Any, *, dtypes: bool = True) -> dict[str, Any]:
    """What coverage is judged against (``ImplementationInfo``'s schema-1.3 fields): ops,
    dtypes supported here (``dtypes=False``: not asked, the backend is unavailable),
    deviations, exclusive options, library."""
    return {
        "ops": sorted(getattr(adapter, "ops", ())),
        "dtypes": list(adapter.dtypes()) if dtypes else [],
        "deviations": [d.to_json() for d in getattr(adapter, "deviations", ())],
        "exclusive": [sorted(group) for group in getattr(adapter, "exclusive", ())],
        "library": str(getattr(adapter, "library", "") or ""),
    }


def device_name(adapter: Any) -> str:
    """The adapter's device as a string: its own ``device`` attribute, else its backend's."""
    device = getattr(adapter, "device", None)
    if device is None:
        try:
            device = adapter.backend.device
        except Exception:
            return ""
    return str(device)


def execute(adapter: Any, case: Case, inputs: Inputs) -> Reply:
    """Run one case; exceptions propagate to the caller (an :class:`InvalidOutput` becomes
    ``Reply("bad")``: the implementation returned something that is not an array)."""
    try:
        with quiet():
            output = adapter.run(case, inputs)
    except InvalidOutput as exc:
        return Reply("bad", message=str(exc))
    problem = _output_problem(output)
    if problem:
        return Reply("bad", message=problem)
    return Reply("ok", value=output)


def _output_problem(output: Any) -> str | None:
    """Why ``output`` is not an :class:`AdapterOutput` of numeric arrays (``None`` if it is)."""
    outputs = getattr(output, "outputs", None)
    if not isinstance(outputs, dict) or not isinstance(getattr(output, "dtypes", None), dict):
        return f"the adapter returned {type(output).__name__}, expected an AdapterOutput"
    for name, value in outputs.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in _NUMERIC_KINDS:
            kind = (f"dtype {value.dtype}" if isinstance(value, np.ndarray)
                    else type(value).__name__)
            return f"output {name!r} is not an array of numbers (got {kind})"
    return None


class _ProbeCall:
    """The ``call(case, inputs)`` the fingerprint probes through: ``adapter.run`` with
    warnings silenced. ``adapter`` is exposed for ``not_applicable``."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter

    def __call__(self, case: Case, inputs: Inputs) -> AdapterOutput:
        with quiet():
            output: AdapterOutput = self.adapter.run(case, inputs)
        return output


def take_fingerprint(adapter: Any) -> dict[str, Any]:
    """``fingerprint(call, adapter)`` from ``attnspec.conformance.fingerprint``; ``{}`` when
    that module does not exist, ``{"error": ...}`` when it fails."""
    try:
        from .fingerprint import fingerprint
    except ModuleNotFoundError as exc:
        if exc.name == f"{__package__}.fingerprint":
            return {}  # a build of attnspec without the fingerprint module
        return {"error": str(RaisedError.from_exception(exc))}
    try:
        result = fingerprint(_ProbeCall(adapter), adapter)
        # Only JSON goes into a report: anything else is written as its str().
        recorded: dict[str, Any] = json.loads(
            json.dumps(dict(result), default=str, allow_nan=False))
        return recorded
    except Exception as exc:
        return {"error": str(RaisedError.from_exception(exc))}


def libraries() -> dict[str, str]:
    """Versions of the array libraries this process has imported."""
    from .report import environment

    versions: dict[str, str] = environment()["libraries"]
    return versions


def handle(adapter: Any, request: Request | tuple[Any, ...]) -> Reply:
    """Answer one request (a :class:`Request`, or its tuple form ``("run", case, inputs)``,
    ``("fingerprint",)``, ``("libraries",)``); exceptions become a ``raised`` reply. The
    reply carries the request's sequence number."""
    seq = request.seq if isinstance(request, Request) else 0
    try:
        request = Request.of(request)
        if request.kind is RequestKind.RUN:
            if request.case is None:
                raise ValueError("a run request needs a case")
            reply = execute(adapter, request.case, request.inputs or Inputs())
        elif request.kind is RequestKind.FINGERPRINT:
            reply = Reply("ok", value=take_fingerprint(adapter))
        elif request.kind is RequestKind.LIBRARIES:
            reply = Reply("ok", value=libraries())
        else:
            raise ValueError(f"unknown request {request.kind!r}")
    except (Exception, SystemExit) as exc:  # SystemExit: an implementation calling exit()
        reply = Reply("raised", error=RaisedError.from_exception(exc))
    return dataclasses.replace(reply, seq=seq)


def _redirect_output(path: str) -> None:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C code's output
    too) to ``path``, opened for appending; turn on faulthandler there."""
    import faulthandler

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError:
        return  # not captured, then: the output goes where the parent's goes
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    with contextlib.suppress(Exception):
        faulthandler.enable(file=sys.stderr if sys.stderr is not None else 2)


def _flush_output() -> None:
    """Flush Python's and C's stdio buffers, so that a request's output is in the capture
    file before its reply is sent."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


def enable_jax_x64(adapter: Any) -> str | None:
    """Switch JAX to 64-bit floats when the adapter runs on JAX, so that its float64 cases
    run in float64 (JAX's default keeps them float32). Only ever called in a worker
    process, which belongs to the run: a user's own JAX configuration is never changed.
    Returns why it could not (``None`` when done or not JAX)."""
    try:
        if adapter.backend.framework != "jax":
            return None
        import jax

        jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]  # jax: unannotated
    except Exception as exc:  # the adapter's float64 cases are then not applicable
        return f"jax_enable_x64 could not be set: {RaisedError.from_exception(exc)}"
    return None


def worker_main(conn: Any, spec: AdapterSpec, cases: list[Case] | None,
                sys_path: list[str], output_path: str | None = None,
                memory_limit: int | None = None, jax_x64: bool = True,
                parent: int | None = None) -> None:
    """The worker process: limit memory, capture output, create the adapter, describe it,
    then answer requests, each reply numbered like its request. ``parent``: the pid of the
    process that started it, which it does not outlive."""
    # Ctrl-C (and a SIGTERM sent to the group) reaches every process of the run; the
    # parent decides, and kills us. If the parent dies without doing so, we die with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if parent is not None:
        die_with_parent(parent)
    if output_path is not None:
        _redirect_output(output_path)
    # Before the implementation's module is imported: that may allocate too.
    memory_note = apply_memory_limit(memory_limit)
    # "module:callable" targets import from wherever the parent could (tests/, the cwd).
    sys.path[:] = [*sys_path, *(p for p in sys.path if p not in sys_path)]
    np.seterr(all="ignore")
    try:
        adapter = spec.create()
    except BaseException as exc:
        kind = "unpickle-failed" if spec.pickled is not None else "failed"
        _flush_output()
        conn.send(Started(kind, error=RaisedError.from_exception(exc)))
        return
    x64_note = enable_jax_x64(adapter) if jax_x64 else None
    try:
        payload = describe(adapter, cases)
    except BaseException as exc:
        _flush_output()
        conn.send(Started("failed", error=RaisedError.from_exception(exc)))
        return
    payload["memory"] = memory_note
    payload["x64"] = x64_note
    _flush_output()
    conn.send(Started("ready", payload))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the parent went away
        except Exception:  # not a request (bytes an implementation wrote to the pipe)
            continue
        if not isinstance(request, Request) or request.kind is RequestKind.STOP:
            return
        try:
            reply = handle(adapter, request)
        except BaseException as exc:  # KeyboardInterrupt, GeneratorExit... from the adapter
            reply = Reply("raised", error=RaisedError.from_exception(exc), seq=request.seq)
        _flush_output()
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable output: report it, keep the pipe usable
            conn.send(Reply("bad", message=f"the output could not be sent back from the "
                                           f"worker: {RaisedError.from_exception(exc)}",
                            seq=request.seq))
