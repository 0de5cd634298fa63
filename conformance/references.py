"""A case's inputs and references (golden and naive), made once per case for every
implementation, where no implementation's code can change them.

An implementation may change the process it runs in: patch ``numpy.matmul`` when it is
called, or when its module is imported -- and the parent imports a ``module:callable`` to
read its declaration, isolated or not. References made with the patched NumPy would move with
the implementation's outputs (it passes 1 % off, and a correct implementation graded after
it fails). So references are made

* in this process *before* any implementation's code has run in it: :func:`.api.run` fills
  its :class:`CaseCache` for every selected case (:meth:`CaseCache.fill`) before it
  resolves (imports) a target. The cases are known up front there, and it costs no process;
* or in a process of their own, :class:`ReferenceProcess`: a fresh interpreter that imports
  attnspec and nothing of the caller's. That is for callers whose cases come after
  implementation code ran here (``--explore`` draws them after the catalog's run) or whose
  process is not theirs to order (the pytest plugin: conftests and test modules may import
  the implementation before the plugin sees a case).

:func:`prepare` itself makes them in the calling process.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from .cases import Case, CaseKind, Inputs, make_inputs
from .messages import RaisedError
from .worker import quiet

__all__ = ["CaseCache", "Prepared", "ReferenceProcess", "prepare", "serve"]


@dataclass
class Prepared:
    """A case's inputs and references (``error`` set when attnspec itself failed)."""

    inputs: Inputs | None = None
    golden: dict[str, np.ndarray] | None = None
    naive: dict[str, np.ndarray] | None = None
    error: str | None = None
    #: The logit magnitude ``L`` of the tolerance rule (golden.logit_magnitude).
    logits: float = 0.0


@dataclass
class CaseCache:
    """Inputs, golden and naive references per case, made once for all implementations."""

    _items: dict[str, Prepared] = field(default_factory=dict)

    def get(self, case: Case) -> Prepared:
        prepared = self._items.get(case.id)
        if prepared is None:
            prepared = self._items[case.id] = prepare(case)
        return prepared

    def fill(self, cases: Iterable[Case]) -> None:
        """Make every case's references now (in this process: call it before any
        implementation's code runs here)."""
        for case in cases:
            self.get(case)


def prepare(case: Case) -> Prepared:
    """Make a case's inputs and (for value cases) its golden and naive references."""
    from .golden import GoldenMismatchError, golden, logit_magnitude, naive

    try:
        with quiet():
            inputs = make_inputs(case)
    except Exception as exc:
        return Prepared(error=f"internal error of attnspec: making the inputs failed: "
                              f"{RaisedError.from_exception(exc)}")
    if case.expect != "value":
        return Prepared(inputs=inputs)
    if case.kind is CaseKind.DETERMINISM:
        # A determinism case compares an implementation's calls with each other, not with
        # a reference (the values are graded by the other cases).
        return Prepared(inputs, {}, {})
    try:
        with quiet():
            expected = golden(case, inputs)
            return Prepared(inputs, expected, naive(case, inputs),
                            logits=logit_magnitude(case, inputs, expected))
    except GoldenMismatchError as exc:
        return Prepared(error=f"internal error of attnspec (the golden reference disagrees "
                              f"with its closed form): GoldenMismatchError: {exc}")
    except Exception as exc:
        return Prepared(error=f"internal error of attnspec: the golden reference failed: "
                              f"{RaisedError.from_exception(exc)}")




#: What the reference process runs: ignore Ctrl-C (the parent decides), take the parent's
#: ``sys.path`` (so attnspec imports from where the parent's did), then serve.
_BOOT = ("import pickle, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
         "sys.path[:] = pickle.load(sys.stdin.buffer); "
         "from attnspec.conformance.references import serve; serve()")
#: Bytes of the reference process's stderr quoted when it dies.
_STDERR_KEEP = 2000


class ReferenceProcess:
    """:func:`prepare` in a process of its own, started on first use and again if it died.

    A fresh interpreter (``python -c``, not ``multiprocessing``, whose spawn re-imports the
    calling script) that imports attnspec and NumPy and nothing of the caller's: whatever an
    implementation did to this process (patched NumPy when imported or called), the
    references are made without it. Cases go to it and :class:`Prepared` come back, pickled
    over its stdin and stdout; it ends when this process closes it or goes away.

    Use as a context manager, or call :meth:`close`. Thread-safe (one request at a time).
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[..., ReferenceProcess] | None = None

    def prepare(self, case: Case) -> Prepared:
        """:func:`prepare` of ``case``, made in the reference process (``error`` set when
        that process failed)."""
        with self._lock:
            try:
                process = self._running()
                assert process.stdin is not None
                assert process.stdout is not None
                pickle.dump(case, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                process.stdin.flush()
                prepared = pickle.load(process.stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                detail = self._death(exc)
                self._stop()
                return Prepared(error=f"internal error of attnspec: the process that makes "
                                      f"the references failed ({detail})")
            except BaseException:
                self._stop()  # Ctrl-C in mid-reply: its stream is out of step now
                raise
        if not isinstance(prepared, Prepared):
            return Prepared(error=f"internal error of attnspec: the reference process sent "
                                  f"a {type(prepared).__name__}")
        return prepared

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        # Closed by _stop() (or the finalizer), with the process it belongs to.
        self._stderr = tempfile.TemporaryFile(prefix="attnspec-references-")  # noqa: SIM115
        process = subprocess.Popen([sys.executable, "-c", _BOOT],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=self._stderr)
        self._process = process
        self._finalizer = weakref.finalize(self, _end, process, self._stderr)
        assert process.stdin is not None
        pickle.dump(list(sys.path), process.stdin)
        process.stdin.flush()
        return process

    def _death(self, exc: BaseException) -> str:
        """Why the process failed: its exit status and the end of its stderr."""
        process, stderr = self._process, self._stderr
        if process is None:
            return f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        code = process.poll()
        detail = (f"exit code {code}" if code is not None
                  else f"{type(exc).__name__}: {exc}")
        if stderr is not None:
            with contextlib.suppress(OSError):
                stderr.seek(0)
                text = stderr.read().decode("utf-8", "replace").strip()
                if text:
                    detail += f"; its stderr ends: {text[-_STDERR_KEEP:]}"
        return detail

    def _stop(self) -> None:
        process, stderr, finalizer = self._process, self._stderr, self._finalizer
        self._process = self._stderr = self._finalizer = None
        if finalizer is not None:
            finalizer()
        elif process is not None:
            _end(process, stderr)

    def close(self) -> None:
        """End the process (it is started again if :meth:`prepare` is called after)."""
        with self._lock:
            self._stop()

    def __enter__(self) -> ReferenceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end(process: subprocess.Popen[bytes], stderr: IO[bytes] | None) -> None:
    """Close the process's stdin (it exits on end of input), kill it if it does not."""
    for stream in (process.stdin, process.stdout):
        with contextlib.suppress(OSError):
            if stream is not None:
                stream.close()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if stderr is not None:
        with contextlib.suppress(OSError):
            stderr.close()


def serve() -> None:
    """The reference process (:class:`ReferenceProcess`): read pickled cases from stdin,
    write each one's :func:`prepare` to stdout, until stdin ends -- also when the parent
    dies, whose end of the pipe then closes."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never in between the replies
    requests = sys.stdin.buffer
    while True:
        try:
            case = pickle.load(requests)
        except EOFError:
            return
        pickle.dump(prepare(case), replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()
