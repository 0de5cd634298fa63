"""Running cases against one implementation, in a worker process of its own.

Each implementation gets one worker process (``multiprocessing``'s spawn context: a fresh
interpreter, so a framework's threads or CUDA state are never forked). The worker re-creates
the adapter from a picklable :class:`AdapterSpec` (a built-in name or ``module:callable``
passed to ``adapters.resolve``, or a pickled :class:`Adapter`), reports what it is and which
cases it cannot run, then answers one request at a time: run a case, fingerprint, report
library versions.

The parent makes every case's inputs and golden/naive references once (:class:`CaseCache`,
shared by all implementations), sends ``(case, inputs)``, and waits at most ``timeout``
seconds. A worker that does not answer in time is killed (outcome ``timeout``); one that dies
(segfault, ``abort()``, ``os._exit``) gives ``crash``. Either way the next case starts a fresh
worker, so one bad case never ends the run.

A worker runs under a memory limit (:mod:`.limits`): an allocation past it fails in the
worker (``MemoryError``, outcome ``error``; the worker is then restarted). Its stdout and
stderr go to a temporary file (never a pipe that could fill up and block it), which the parent
empties while it waits and after each request; the first and last :data:`OUTPUT_KEEP` bytes
of what a case printed are appended to that case's message, the rest is counted and dropped.
``faulthandler`` is on in the worker, so a segfault's message carries the Python traceback.

After each call the inputs the implementation received are compared with a copy taken before
(on backends with writeable arrays): a changed input fails the case under
:data:`NO_MUTATION_RULE`.

``isolate=False`` (:class:`InProcessWorker`) runs the adapter in the calling process: faster
to start and easy to debug, but nothing is isolated -- a crash takes the whole process down,
a hang is never timed out, nothing is captured and there is no memory limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .adapters.base import InvalidOutput
from .cases import Case, make_inputs
from .claims import evidence
from .deviations import Deviation, apply_deviations
from .features import BEHAVIOURS
from .limits import apply_memory_limit, format_size
from .results import CaseResult, ImplementationInfo, Outcome
from .rules import NO_MUTATION_RULE

__all__ = [
    "OUTPUT_KEEP",
    "STARTUP_TIMEOUT",
    "AdapterSpec",
    "CaseCache",
    "InProcessWorker",
    "OutputCapture",
    "Prepared",
    "RaisedError",
    "Reply",
    "WorkerProcess",
    "judge",
    "run_implementation",
]

#: Seconds a worker may take to start (import its framework, create the adapter, decide
#: which cases apply) -- at least this, or the case timeout when that is longer.
STARTUP_TIMEOUT = 120.0
#: The fingerprint runs a handful of probe cases: it gets this many case timeouts, within
#: the bounds below.
FINGERPRINT_TIMEOUTS = 4
FINGERPRINT_BOUNDS = (30.0, 600.0)
#: Lines of an exception's traceback kept in :class:`RaisedError`.
TRACEBACK_LINES = 12
#: NumPy dtype kinds an output may have (bool, ints, floats, complex; grade() checks the
#: exact dtype).
_NUMERIC_KINDS = "biufc"
#: Bytes of a request's captured stdout/stderr kept from its start and from its end.
OUTPUT_KEEP = 1000
#: The capture file is emptied (its start kept) whenever it grows past this while the parent
#: waits, so a chatty implementation cannot fill the disk either.
OUTPUT_SPILL = 1 << 20
#: How often (seconds) the parent looks at the capture file while it waits for a reply.
POLL_INTERVAL = 0.25


# -- what crosses the pipe ------------------------------------------------------------------


@dataclass(frozen=True)
class RaisedError:
    """A picklable summary of an exception raised in a worker (or in-process).

    Attributes
    ----------
    type_name : str
        The exception's class name (``ValueError``).
    message : str
        ``str(exc)``.
    mro : tuple of str
        Class names of the exception's MRO, so that ``expect="ValueError"`` accepts a
        framework's subclass of ``ValueError`` without importing the framework.
    traceback : str
        The last lines of the formatted traceback.
    """

    type_name: str
    message: str
    mro: tuple[str, ...] = ()
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> RaisedError:
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        tail = "".join(lines).splitlines()[-TRACEBACK_LINES:]
        return cls(type(exc).__name__, _safe_str(exc),
                   tuple(k.__name__ for k in type(exc).__mro__), "\n".join(tail))

    def is_a(self, class_name: str) -> bool:
        """Whether the exception is ``class_name`` or a subclass of it (by name)."""
        return class_name in self.mro or class_name == self.type_name

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not take the worker down
        return f"<{type(exc).__name__} whose str() failed>"


@dataclass(frozen=True)
class Reply:
    """What a request to a worker came back as.

    ``kind`` is ``"ok"`` (``value`` holds the answer), ``"raised"`` (``error``), ``"bad"``
    (the outputs were not arrays; ``message``), ``"timeout"`` or ``"crash"`` (``message``).
    """

    kind: str
    value: Any = None
    error: RaisedError | None = None
    message: str = ""
    #: What the worker wrote to stdout/stderr meanwhile (truncated; see OutputCapture).
    output: str = ""


@dataclass(frozen=True)
class AdapterSpec:
    """How a worker process re-creates an adapter.

    Either ``target`` (a built-in name or ``"module:callable"``, resolved with ``backend``,
    ``device`` and ``capabilities`` by ``attnspec.conformance.adapters.resolve``) or
    ``pickled`` (a pickled :class:`Adapter` instance).
    """

    target: str | None = None
    backend: str = "numpy"
    device: str | None = None
    capabilities: Any = None
    pickled: bytes | None = None

    def create(self) -> Any:
        if self.pickled is not None:
            return pickle.loads(self.pickled)
        return resolve_target(self.target, backend=self.backend, device=self.device,
                              capabilities=self.capabilities)


def resolve_target(target: str, *, backend: str = "numpy", device: str | None = None,
                   capabilities: Any = None) -> Any:
    """An adapter from a built-in name or ``"module:callable"``."""
    from .adapters import resolve

    return resolve(target, backend=backend, device=device, capabilities=capabilities)


# -- what runs in the worker (and in-process) -----------------------------------------------


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


def execute(adapter: Any, case: Case, inputs: dict[str, Any]) -> Reply:
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

    def __call__(self, case: Case, inputs: dict[str, Any]) -> Any:
        with quiet():
            return self.adapter.run(case, inputs)


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
        return json.loads(json.dumps(dict(result), default=str, allow_nan=False))
    except Exception as exc:
        return {"error": str(RaisedError.from_exception(exc))}


def libraries() -> dict[str, str]:
    """Versions of the array libraries this process has imported."""
    from .report import environment

    return environment()["libraries"]


def handle(adapter: Any, request: tuple) -> Reply:
    """Answer one request (``("run", case, inputs)``, ``("fingerprint",)``,
    ``("libraries",)``); exceptions become ``Reply("raised")``."""
    try:
        kind = request[0]
        if kind == "run":
            return execute(adapter, request[1], request[2])
        if kind == "fingerprint":
            return Reply("ok", value=take_fingerprint(adapter))
        if kind == "libraries":
            return Reply("ok", value=libraries())
        raise ValueError(f"unknown request {kind!r}")
    except (Exception, SystemExit) as exc:  # SystemExit: an implementation calling exit()
        return Reply("raised", error=RaisedError.from_exception(exc))


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

        jax.config.update("jax_enable_x64", True)
    except Exception as exc:  # the adapter's float64 cases are then not applicable
        return f"jax_enable_x64 could not be set: {RaisedError.from_exception(exc)}"
    return None


def _worker_main(conn: Any, spec: AdapterSpec, cases: list[Case] | None,
                 sys_path: list[str], output_path: str | None = None,
                 memory_limit: int | None = None, jax_x64: bool = True) -> None:
    """The worker process: limit memory, capture output, create the adapter, describe it,
    then answer requests."""
    # Ctrl-C reaches the whole process group; the parent decides, and kills us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
        conn.send((kind, RaisedError.from_exception(exc)))
        return
    x64_note = enable_jax_x64(adapter) if jax_x64 else None
    try:
        payload = describe(adapter, cases)
    except BaseException as exc:
        _flush_output()
        conn.send(("failed", RaisedError.from_exception(exc)))
        return
    payload["memory"] = memory_note
    payload["x64"] = x64_note
    _flush_output()
    conn.send(("ready", payload))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the parent went away
        if request[0] == "stop":
            return
        try:
            reply = handle(adapter, request)
        except BaseException as exc:  # KeyboardInterrupt, GeneratorExit... from the adapter
            reply = Reply("raised", error=RaisedError.from_exception(exc))
        _flush_output()
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable output: report it, keep the pipe usable
            conn.send(Reply("bad", message=f"the output could not be sent back from the "
                                           f"worker: {RaisedError.from_exception(exc)}"))


# -- parent side ----------------------------------------------------------------------------


class WorkerStartError(RuntimeError):
    """A worker could not start; ``outcome`` says how (error, crash, timeout)."""

    def __init__(self, message: str, outcome: Outcome, *, unpickle: bool = False) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.unpickle = unpickle


def _death(process: Any) -> str:
    """``exit code 3`` / ``signal SIGSEGV`` for a process that has ended."""
    process.join(5)
    code = process.exitcode
    if code is None:
        return "the pipe closed but the process is still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class OutputCapture:
    """The file a worker's stdout and stderr go to, read and emptied by the parent.

    A regular file opened for appending, not a pipe: a worker printing megabytes never
    blocks on a full pipe, whatever the parent is doing. While the parent waits it calls
    :meth:`drain`, which keeps the first :data:`OUTPUT_KEEP` bytes and empties the file once
    it is past :data:`OUTPUT_SPILL`; :meth:`take` returns what the request printed (start
    and end, with the size of what was left out) and empties the file for the next one.
    """

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="attnspec-worker-", suffix=".out")
        os.close(fd)
        self._head = b""
        self._dropped = 0  # bytes removed from the file by drain() since the last take()
        # Removed by close(), or when this object is collected, or at exit at the latest.
        self._remove = weakref.finalize(self, _unlink, self.path)

    def drain(self) -> None:
        """Empty the file if it is past :data:`OUTPUT_SPILL` (keeping its start)."""
        try:
            size = os.path.getsize(self.path)
            if size <= OUTPUT_SPILL:
                return
            if self._dropped == 0:
                with open(self.path, "rb") as fh:
                    self._head = fh.read(OUTPUT_KEEP)
            os.truncate(self.path, 0)
            self._dropped += size
        except OSError:
            pass

    def take(self) -> str:
        """What was written since the last call: all of it when short, else its first and
        last :data:`OUTPUT_KEEP` bytes around a note of the size left out; ``""`` when
        nothing was written. Empties the file."""
        keep = OUTPUT_KEEP
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if self._dropped:
                    head, total = self._head, self._dropped + size
                    fh.seek(max(size - keep, 0))
                    tail = fh.read(keep)
                elif size <= 2 * keep:
                    head, tail, total = fh.read(size), b"", size
                else:
                    head, total = fh.read(keep), size
                    fh.seek(size - keep)
                    tail = fh.read(keep)
            os.truncate(self.path, 0)
        except OSError as exc:
            return f"[captured output unreadable: {exc}]"
        finally:
            self._head, self._dropped = b"", 0
        if total == 0:
            return ""
        text = head.decode("utf-8", "replace")
        left_out = total - len(head) - len(tail)
        if left_out > 0:
            text += f"\n[... {format_size(left_out)} left out ...]\n"
        text += tail.decode("utf-8", "replace")
        return f"({format_size(total)}):\n{text}"

    def close(self) -> None:
        self._remove()


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def output_note(output: str) -> str:
    """How captured output is appended to a message."""
    return f"\ncaptured stdout/stderr {output}" if output else ""


class WorkerProcess:
    """A worker process for one implementation, restarted on demand.

    Parameters
    ----------
    spec : AdapterSpec
        How the worker creates the adapter.
    startup_timeout : float
        Seconds to wait for a (re)started worker to report ready.
    memory_limit : int, optional
        Bytes the worker may allocate (:mod:`.limits`); ``None``: no limit.
    capture : bool
        Send the worker's stdout/stderr to an :class:`OutputCapture` (default) instead of
        this process's.
    jax_x64 : bool
        Turn on ``jax_enable_x64`` in the worker when the implementation runs on JAX
        (default), so that its float64 cases are graded in float64.
    """

    def __init__(self, spec: AdapterSpec, *, startup_timeout: float = STARTUP_TIMEOUT,
                 memory_limit: int | None = None, capture: bool = True,
                 jax_x64: bool = True) -> None:
        self.spec = spec
        self.startup_timeout = startup_timeout
        self.memory_limit = memory_limit
        self.jax_x64 = jax_x64
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._conn: Any = None
        self._capture: OutputCapture | None = OutputCapture() if capture else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def _output(self) -> str:
        return self._capture.take() if self._capture is not None else ""

    def start(self, cases: list[Case] | None = None) -> dict[str, Any]:
        """Start the worker; returns :func:`describe`'s payload (``cases`` planned), with
        ``"output"``: what the worker printed while starting, and ``"memory"``: why the
        memory limit is not in force (``None`` when it is, or when there is none).

        Raises
        ------
        WorkerStartError
            When the worker fails, dies or hangs while starting.
        """
        self.close()
        parent, child = self._context.Pipe()
        output_path = self._capture.path if self._capture is not None else None
        process = self._context.Process(
            target=_worker_main,
            args=(child, self.spec, cases, list(sys.path), output_path, self.memory_limit,
                  self.jax_x64),
            # Not a daemon: an implementation may start processes of its own. The worker
            # ends on "stop", on kill(), or when the pipe closes because this process died.
            name=f"attnspec-worker[{self.spec.target or 'adapter'}]", daemon=False,
        )
        process.start()
        child.close()  # so that the worker's death reads as EOF here
        self._process, self._conn = process, parent
        try:
            ready = self._wait(parent, self.startup_timeout)
            message = parent.recv() if ready else None
        except (EOFError, OSError):
            self.kill()
            raise WorkerStartError(
                f"the worker died while starting ({_death(process)}); if the calling script "
                "has no 'if __name__ == \"__main__\":' guard, add one (the worker imports "
                "it)" + output_note(self._output()), Outcome.CRASH) from None
        if message is None:
            self.kill()
            raise WorkerStartError(f"the worker did not start within {self.startup_timeout:g} s"
                                   + output_note(self._output()), Outcome.TIMEOUT)
        kind, value = message
        if kind != "ready":
            self.kill()
            raise WorkerStartError(f"the worker could not create the adapter: {value}"
                                   + output_note(self._output()),
                                   Outcome.ERROR, unpickle=kind == "unpickle-failed")
        value["output"] = self._output()
        return value

    def _wait(self, conn: Any, timeout: float) -> bool:
        """``conn.poll(timeout)``, in slices, keeping the capture file small meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if conn.poll(max(0.0, min(remaining, POLL_INTERVAL))):
                return True
            if self._capture is not None:
                self._capture.drain()
            if remaining <= POLL_INTERVAL:
                return conn.poll(0)

    def request(self, request: tuple, timeout: float) -> Reply:
        """Send ``request`` and wait up to ``timeout`` seconds; a dead or hung worker gives
        ``Reply("crash")`` / ``Reply("timeout")`` and is gone afterwards. The reply carries
        what the worker printed meanwhile (``Reply.output``)."""
        process, conn = self._process, self._conn
        if conn is None:
            return Reply("crash", message="the worker is not running")
        try:
            conn.send(request)
            ready = self._wait(conn, timeout)
            reply = conn.recv() if ready else None
        except (EOFError, OSError):
            self._process = self._conn = None
            conn.close()
            reply = Reply("crash", message=f"the worker died ({_death(process)})")
        except Exception as exc:  # a reply this process cannot unpickle; the worker is fine
            reply = Reply("bad", message=f"the worker's reply could not be read here: "
                                         f"{RaisedError.from_exception(exc)}")
        if reply is None:
            self.kill()
            reply = Reply("timeout", message=f"no result within {timeout:g} s; the worker "
                                             "was killed")
        if not isinstance(reply, Reply):
            reply = Reply("bad", message=f"the worker sent {type(reply).__name__}, not a reply")
        output = self._output()
        return dataclasses.replace(reply, output=output) if output else reply

    def kill(self) -> None:
        """End the worker now (SIGKILL: a hung implementation ignores anything gentler)."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(5)

    def close(self) -> None:
        """Ask the worker to stop, and kill it if it does not."""
        if self._conn is not None and self.alive:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("stop",))
            self._process.join(5)
        self.kill()

    def discard(self) -> None:
        """:meth:`close`, and remove the capture file: the worker is not needed again."""
        self.close()
        if self._capture is not None:
            self._capture.close()


class InProcessWorker:
    """The same interface, run in this process: no isolation, no timeouts."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter

    alive = True

    def start(self, cases: list[Case] | None = None) -> dict[str, Any]:
        try:
            with quiet():
                return describe(self.adapter, cases)
        except Exception as exc:
            raise WorkerStartError(f"the adapter could not describe itself: "
                                   f"{RaisedError.from_exception(exc)}", Outcome.ERROR) from exc

    def request(self, request: tuple, timeout: float) -> Reply:
        return handle(self.adapter, request)

    def kill(self) -> None:
        pass

    def close(self) -> None:
        pass


# -- cases, references, judging -------------------------------------------------------------


@dataclass
class Prepared:
    """A case's inputs and references (``error`` set when attnspec itself failed)."""

    inputs: dict[str, Any] | None = None
    golden: dict[str, np.ndarray] | None = None
    naive: dict[str, np.ndarray] | None = None
    error: str | None = None


@dataclass
class CaseCache:
    """Inputs, golden and naive references per case, made once for all implementations."""

    _items: dict[str, Prepared] = field(default_factory=dict)

    def get(self, case: Case) -> Prepared:
        prepared = self._items.get(case.id)
        if prepared is None:
            prepared = self._items[case.id] = prepare(case)
        return prepared


def prepare(case: Case) -> Prepared:
    """Make a case's inputs and (for value cases) its golden and naive references."""
    from .golden import GoldenMismatchError, golden, naive

    try:
        with quiet():
            inputs = make_inputs(case)
    except Exception as exc:
        return Prepared(error=f"internal error of attnspec: making the inputs failed: "
                              f"{RaisedError.from_exception(exc)}")
    if case.expect != "value":
        return Prepared(inputs=inputs)
    if case.params.get("repeat"):
        # A determinism case compares an implementation's calls with each other, not with
        # a reference (the values are graded by the other cases).
        return Prepared(inputs, {}, {})
    try:
        with quiet():
            return Prepared(inputs, golden(case, inputs), naive(case, inputs))
    except GoldenMismatchError as exc:
        return Prepared(error=f"internal error of attnspec (the golden reference disagrees "
                              f"with its closed form): GoldenMismatchError: {exc}")
    except Exception as exc:
        return Prepared(error=f"internal error of attnspec: the golden reference failed: "
                              f"{RaisedError.from_exception(exc)}")


@dataclass
class Verdict:
    outcome: Outcome
    message: str = ""
    max_error: float | None = None
    tolerance: float | None = None
    ratio: float | None = None
    #: Rules broken besides the case's own (NO_MUTATION_RULE).
    rules: tuple[str, ...] = ()
    #: Per-output errors (``tolerance.Grade.errors``).
    errors: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: Rules of the case the reply is no evidence for (``claims.evidence``).
    not_graded: dict[str, str] = field(default_factory=dict)


def judge(case: Case, reply: Reply, prepared: Prepared) -> Verdict:
    """The outcome of one case from the worker's reply: the outputs' grade, and a failure
    under :data:`NO_MUTATION_RULE` when the call changed its inputs."""
    verdict = _judge(case, reply, prepared)
    modified = getattr(reply.value, "modified", None) if reply.kind == "ok" else None
    if modified:
        message = "inputs modified by the call: " + "; ".join(modified)
        if verdict.outcome is not Outcome.PASS and verdict.message:
            message += f"; and {verdict.message}"
        return Verdict(Outcome.FAIL, message, verdict.max_error, verdict.tolerance,
                       verdict.ratio, rules=(NO_MUTATION_RULE,), errors=verdict.errors,
                       not_graded=verdict.not_graded)
    return verdict


def _judge(case: Case, reply: Reply, prepared: Prepared) -> Verdict:
    if reply.kind == "timeout":
        return Verdict(Outcome.TIMEOUT, reply.message)
    if reply.kind == "crash":
        return Verdict(Outcome.CRASH, reply.message)
    if case.expect != "value":
        if reply.kind == "raised":
            if reply.error.is_a(case.expect):
                return Verdict(Outcome.PASS, f"raised {reply.error}")
            return Verdict(Outcome.FAIL, f"expected {case.expect}, got {reply.error}")
        if reply.kind == "bad":
            return Verdict(Outcome.FAIL, f"expected {case.expect}, got no exception and an "
                                         f"invalid output: {reply.message}")
        return Verdict(Outcome.FAIL, f"expected {case.expect}, nothing was raised")
    if reply.kind == "raised":
        return Verdict(Outcome.ERROR, str(reply.error))
    if reply.kind == "bad":
        return Verdict(Outcome.ERROR, reply.message)
    from .tolerance import grade

    output = reply.value
    if case.params.get("repeat"):
        return _judge_repeats(case, output)
    try:
        with quiet():
            g = grade(case, output.outputs, output.dtypes, prepared.golden, prepared.naive)
    except Exception as exc:
        return Verdict(Outcome.ERROR, f"internal error of attnspec while grading: "
                                      f"{RaisedError.from_exception(exc)}")
    graded = set(output.outputs) & set(prepared.golden or {})
    return Verdict(Outcome.PASS if g.passed else Outcome.FAIL, g.message,
                   _finite(g.max_error), _finite(g.tolerance), _finite(g.ratio),
                   errors={name: {k: _finite(v) for k, v in numbers.items()}
                           for name, numbers in g.errors.items()},
                   not_graded=evidence(case.rules, graded))


def _judge_repeats(case: Case, output: Any) -> Verdict:
    """ATT-DET-1: every repeated call returned the first call's outputs, bit for bit."""
    runs = [output.outputs, *getattr(output, "repeats", [])]
    wanted = int(case.params["repeat"])
    names = ", ".join(output.outputs)
    if len(runs) != wanted:
        return Verdict(Outcome.ERROR, f"{len(runs)} runs came back, {wanted} were made")
    first = runs[0]
    for index, run in enumerate(runs[1:], start=2):
        if sorted(run) != sorted(first):
            return Verdict(Outcome.FAIL, f"not deterministic: run {index} returned "
                                         f"{sorted(run)}, run 1 {sorted(first)}")
        for name, want in first.items():
            difference = bit_difference(want, run[name])
            if difference:
                return Verdict(Outcome.FAIL, f"not deterministic: run {index} of {wanted} "
                                             f"differs from run 1 in {name}: {difference}")
    return Verdict(Outcome.PASS, f"{wanted} runs bit-identical ({names})")


def bit_difference(a: np.ndarray, b: np.ndarray) -> str | None:
    """How ``b`` differs from ``a`` bit for bit (``None`` when it does not)."""
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
        largest = ""
        if count and a.dtype.kind in "fc":
            gap = np.abs(a.astype(np.float64) - b.astype(np.float64))[differ]
            largest = f", largest difference {float(np.nanmax(gap)):.3g}" if gap.size else ""
    if count:
        return f"{count} of {a.size} entries differ{largest}"
    return "the bits differ (NaN payloads or signed zeros), the values do not"


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# -- one implementation, every case ---------------------------------------------------------


@dataclass
class ImplementationRun:
    """What :func:`run_implementation` produced."""

    info: ImplementationInfo
    results: list[CaseResult]
    libraries: dict[str, str]
    note: str = ""


def run_implementation(
    worker: Any,
    known: ImplementationInfo,
    cases: list[Case],
    cache: CaseCache,
    *,
    timeout: float,
    fingerprint: bool,
    emit: Callable[[CaseResult], None],
    skip: Callable[[int], None] = lambda n: None,
    deviations: Sequence[Deviation] = (),
) -> ImplementationRun:
    """Run ``cases`` through ``worker`` (a :class:`WorkerProcess` or
    :class:`InProcessWorker`), calling ``emit`` with each result as it is known.

    ``known`` is what the parent knows about the implementation (its name, which results
    carry, and its backend); the worker fills in the rest.

    ``skip(n)`` is called when the implementation turns out unavailable (its ``n`` cases
    will not be emitted). ``deviations`` (the adapter's declared deviations, which hold
    conditions that do not cross to the worker) turn the cases they cover into expected
    failures, or unexpected passes. :class:`WorkerStartError` with ``unpickle=True`` propagates (the
    caller may fall back to running in-process); every other failure becomes outcomes.
    """
    info = known
    results: list[CaseResult] = []

    def record(case: Case, verdict: Verdict, seconds: float = 0.0, output: str = "") -> None:
        rules = [*case.rules, *(r for r in verdict.rules if r not in case.rules)]
        result = CaseResult(
            case_id=case.id, rules=rules, implementation=info.name,
            backend=info.backend, device=info.device, dtype=case.dtype, op=case.op,
            params=dict(case.params), outcome=verdict.outcome, seed=case.seed,
            max_error=verdict.max_error, tolerance=verdict.tolerance, ratio=verdict.ratio,
            message=verdict.message + output_note(output), seconds=round(seconds, 6),
            errors=verdict.errors, not_graded=dict(verdict.not_graded),
        )
        if result.outcome is Outcome.NOT_APPLICABLE:
            result.missing = sorted(case.features - set(info.features) - BEHAVIOURS)
        else:
            apply_deviations(result, case, deviations)
        results.append(result)
        emit(result)

    limit = getattr(worker, "memory_limit", None)
    try:
        try:
            payload = worker.start(cases)
        except WorkerStartError as exc:
            if exc.unpickle:
                raise
            # Nothing is known about the adapter: every case carries the start-up failure.
            for case in cases:
                record(case, Verdict(exc.outcome, f"worker start-up failed: {exc}"))
            return ImplementationRun(info, results, {})
        info = ImplementationInfo(**{**payload["info"], "name": known.name},
                                  unavailable=payload["unavailable"])
        if info.unavailable is not None:
            skip(len(cases))
            return ImplementationRun(info, results, {})
        notes = []
        if payload.get("memory"):
            notes.append(f"memory limit {format_size(limit)} {payload['memory']}")
        if payload.get("x64"):
            notes.append(payload["x64"])
        if payload.get("output"):
            notes.append(f"the worker printed while starting {payload['output']}")
        plan = payload["plan"]
        broken: WorkerStartError | None = None
        for case in cases:
            reason = plan.get(case.id)
            if isinstance(reason, RaisedError):
                record(case, Verdict(Outcome.ERROR, f"not_applicable() raised {reason}"))
                continue
            if reason is not None:
                record(case, Verdict(Outcome.NOT_APPLICABLE, str(reason)))
                continue
            prepared = cache.get(case)
            if prepared.error is not None:
                record(case, Verdict(Outcome.ERROR, prepared.error))
                continue
            if broken is None and not worker.alive:
                try:
                    worker.start()
                except WorkerStartError as exc:
                    broken = exc  # restarting failed once: do not retry for every case
            if broken is not None:
                record(case, Verdict(broken.outcome, f"worker restart failed: {broken}"))
                continue
            start = time.perf_counter()
            reply = worker.request(("run", case, prepared.inputs), timeout)
            seconds = time.perf_counter() - start
            verdict = judge(case, reply, prepared)
            if reply.kind == "raised" and reply.error.is_a("MemoryError"):
                if limit is not None:
                    verdict.message += (f" (the worker's memory limit is {format_size(limit)};"
                                        " --memory-limit changes it)")
                worker.kill()  # whatever it still holds is freed; the next case restarts it
            record(case, verdict, seconds, reply.output)
        if fingerprint:
            info.fingerprint = _fingerprint(worker, timeout)
        return ImplementationRun(info, results, _libraries(worker), "; ".join(notes))
    except BaseException:
        worker.kill()  # Ctrl-C or a failing progress callback: do not wait for the case
        raise
    finally:
        getattr(worker, "discard", worker.close)()


def _fingerprint(worker: Any, timeout: float) -> dict[str, Any]:
    """The fingerprint, time-limited; a failure is recorded, never raised."""
    try:
        if not worker.alive:
            worker.start()
    except WorkerStartError as exc:
        return {"error": f"worker start-up failed: {exc}"}
    low, high = FINGERPRINT_BOUNDS
    limit = min(max(FINGERPRINT_TIMEOUTS * timeout, low), high)
    reply = worker.request(("fingerprint",), limit)
    if reply.kind == "ok":
        return reply.value
    detail = reply.error if reply.kind == "raised" else reply.message
    return {"error": f"fingerprint {reply.kind}: {detail}"}


def _libraries(worker: Any) -> dict[str, str]:
    if not worker.alive:
        return {}
    reply = worker.request(("libraries",), 30.0)
    return reply.value if reply.kind == "ok" else {}
