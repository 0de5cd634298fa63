"""The parent's side of a worker: start it, send it numbered requests, wait with a timeout,
capture its output, kill and restart it. :class:`InProcessWorker` is the same interface in
this process (``isolate=False``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import weakref
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from .cases import Case
from .limits import format_size
from .messages import AdapterSpec, RaisedError, Reply, Request, RequestKind, Started
from .results import Outcome
from .worker import describe, handle, quiet, worker_main

__all__ = ["OUTPUT_KEEP", "OUTPUT_SPILL", "POLL_INTERVAL", "STARTUP_TIMEOUT",
           "InProcessWorker", "OutputCapture", "WorkerProcess", "WorkerStartError",
           "output_note"]

#: Seconds a worker may take to start (import its framework, create the adapter, decide
#: which cases apply) -- at least this, or the case timeout when that is longer.
STARTUP_TIMEOUT = 120.0
#: Bytes of a request's captured stdout/stderr kept from its start and from its end.
OUTPUT_KEEP = 1000
#: The capture file is emptied (its start kept) whenever it grows past this while the parent
#: waits, so a chatty implementation cannot fill the disk either.
OUTPUT_SPILL = 1 << 20
#: How often (seconds) the parent looks at the capture file while it waits for a reply.
POLL_INTERVAL = 0.25


class WorkerStartError(RuntimeError):
    """A worker could not start; ``outcome`` says how (error, crash, timeout)."""

    def __init__(self, message: str, outcome: Outcome, *, unpickle: bool = False) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.unpickle = unpickle


def _death(process: BaseProcess | None) -> str:
    """``exit code 3`` / ``signal SIGSEGV`` for a process that has ended."""
    if process is None:
        return "no process"  # killed meanwhile, from another thread
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
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._capture: OutputCapture | None = OutputCapture() if capture else None
        self._seq = 0  # the last request's number

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
            target=worker_main,
            args=(child, self.spec, cases, list(sys.path), output_path, self.memory_limit,
                  self.jax_x64, os.getpid()),
            # Not a daemon: an implementation may start processes of its own. The worker
            # ends on "stop", on kill(), when the pipe closes, or when this process dies
            # (signals.die_with_parent: even inside an implementation's endless loop).
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
        if not isinstance(message, Started):
            self.kill()
            raise WorkerStartError(f"the worker's first message was a "
                                   f"{type(message).__name__}, not its start-up report"
                                   + output_note(self._output()), Outcome.CRASH)
        if message.kind != "ready":
            self.kill()
            raise WorkerStartError(f"the worker could not create the adapter: {message.error}"
                                   + output_note(self._output()),
                                   Outcome.ERROR, unpickle=message.kind == "unpickle-failed")
        payload = dict(message.payload)
        payload["output"] = self._output()
        return payload

    def _wait(self, conn: Connection, timeout: float) -> bool:
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

    def request(self, request: Request | tuple[Any, ...], timeout: float) -> Reply:
        """Send ``request`` (numbered here) and wait up to ``timeout`` seconds; a dead or
        hung worker gives ``Reply("crash")`` / ``Reply("timeout")`` and is gone afterwards,
        and so is one whose reply answers another request (its pipe is out of step). The
        reply carries what the worker printed meanwhile (``Reply.output``)."""
        process, conn = self._process, self._conn
        if conn is None:
            return Reply("crash", message="the worker is not running")
        self._seq += 1
        request = dataclasses.replace(Request.of(request), seq=self._seq)
        reply: Reply | None = None
        try:
            conn.send(request)
            if self._wait(conn, timeout):
                received = conn.recv()
                reply = self._matched(received, request.seq)
        except (EOFError, OSError):
            self._process = self._conn = None
            conn.close()
            reply = Reply("crash", message=f"the worker died ({_death(process)})")
        except Exception as exc:
            # A reply this process cannot unpickle, or bytes an implementation wrote to the
            # pipe: either way what follows on the pipe cannot be trusted to be in step, so
            # the worker goes and the next case gets a fresh one (never the real reply of
            # this case, read as the next one's).
            self.kill()
            reply = Reply("bad", message=f"the worker's reply could not be read here: "
                                         f"{RaisedError.from_exception(exc)}; the worker "
                                         "was stopped, and the next case gets a fresh one")
        if reply is None:
            self.kill()
            reply = Reply("timeout", message=f"no result within {timeout:g} s; the worker "
                                             "was killed")
        output = self._output()
        return dataclasses.replace(reply, output=output) if output else reply

    def _matched(self, received: Any, seq: int) -> Reply:
        """``received`` if it is the reply to request ``seq``; otherwise the worker is out of
        step with its requests (something else wrote to its pipe): it is killed, and the
        request gets a crash, so no case is graded on another case's outputs."""
        if isinstance(received, Reply) and received.seq == seq:
            return received
        got = (f"a reply to request {received.seq}" if isinstance(received, Reply)
               else f"a {type(received).__name__}")
        self.kill()
        return Reply("crash", message=f"the worker sent {got} in answer to request {seq} "
                                      "(something else wrote to its pipe); it was stopped, "
                                      "and the next case gets a fresh worker")

    def kill(self) -> None:
        """End the worker now (SIGKILL: a hung implementation ignores anything gentler)."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            # SIGKILL cannot be ignored: this returns as soon as the child is reaped, which
            # on a loaded machine took more than 5 s (a live child was left behind).
            process.join(60)

    def close(self) -> None:
        """Ask the worker to stop, and kill it if it does not."""
        process, conn = self._process, self._conn
        if conn is not None and process is not None and process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                conn.send(Request(RequestKind.STOP))
            process.join(5)
        self.kill()

    def discard(self) -> None:
        """:meth:`close`, and remove the capture file: the worker is not needed again."""
        self.close()
        if self._capture is not None:
            self._capture.close()


class Worker(Protocol):
    """What the case loop needs of a worker, isolated (:class:`WorkerProcess`) or not
    (:class:`InProcessWorker`)."""

    @property
    def alive(self) -> bool: ...

    def start(self, cases: list[Case] | None = None) -> dict[str, Any]: ...

    def request(self, request: Request | tuple[Any, ...], timeout: float) -> Reply: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


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

    def request(self, request: Request | tuple[Any, ...], timeout: float) -> Reply:
        return handle(self.adapter, request)

    def kill(self) -> None:
        pass

    def close(self) -> None:
        pass


