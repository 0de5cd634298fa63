"""What crosses the pipe between the parent and a worker: typed requests and replies.

Every request carries a sequence number and every reply the number of the request it
answers, so an extra message on the pipe (an implementation writing to an inherited
descriptor) is caught as a desynchronised worker instead of shifting every later reply by
one case.
"""

from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .cases import Case, Inputs

__all__ = ["TRACEBACK_LINES", "AdapterSpec", "RaisedError", "Reply", "ReplyKind", "Request",
           "RequestKind", "Started"]

#: Lines of an exception's traceback kept in :class:`RaisedError`.
TRACEBACK_LINES = 12


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


class ReplyKind(str, Enum):
    """How a request came back (a ``str`` enum: ``reply.kind == "ok"`` reads as before)."""

    OK = "ok"  # ``value`` holds the answer
    RAISED = "raised"  # the implementation raised: ``error``
    BAD = "bad"  # the outputs were not arrays, or the reply could not be read: ``message``
    TIMEOUT = "timeout"  # no answer in time; the worker was killed: ``message``
    CRASH = "crash"  # the worker died, or answered out of turn: ``message``


@dataclass(frozen=True)
class Reply:
    """What a request to a worker came back as.

    ``seq`` is the sequence number of the request it answers (0 for replies made in the
    parent: timeouts, crashes, in-process calls); a reply whose ``seq`` is not the one
    asked for is an implementation writing to the worker's pipe, and the parent treats the
    worker as crashed rather than grade one case's outputs against another.
    """

    kind: ReplyKind | str
    value: Any = None
    error: RaisedError | None = None
    message: str = ""
    #: What the worker wrote to stdout/stderr meanwhile (truncated; see OutputCapture).
    output: str = ""
    seq: int = 0


class RequestKind(str, Enum):
    RUN = "run"  # run one case: ``case`` and ``inputs``
    FINGERPRINT = "fingerprint"
    LIBRARIES = "libraries"  # versions of the array libraries the worker imported
    STOP = "stop"


@dataclass(frozen=True)
class Request:
    """A request to a worker, numbered (``seq``) so that its reply can be matched."""

    kind: RequestKind
    case: Case | None = None
    inputs: Inputs | None = None
    seq: int = 0

    @classmethod
    def of(cls, request: Request | tuple[Any, ...]) -> Request:
        """A :class:`Request` from itself or the tuple form (``("run", case, inputs)``,
        ``("fingerprint",)``, ``("libraries",)``) that callers in-process use."""
        if isinstance(request, Request):
            return request
        kind = RequestKind(request[0])
        if kind is RequestKind.RUN:
            return cls(kind, request[1], request[2])
        return cls(kind)


@dataclass(frozen=True)
class Started:
    """The worker's first message: ``ready`` (``payload`` is :func:`worker.describe`'s), or
    why it could not start (``failed``, ``unpickle-failed``: ``error``)."""

    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    error: RaisedError | None = None


@dataclass(frozen=True)
class AdapterSpec:
    """How a worker process re-creates an adapter.

    Either ``target`` (a built-in name or ``"module:callable"``, resolved with ``backend``,
    ``device`` and ``capabilities`` by ``attnspec.conformance.adapters.resolve``) or
    ``pickled`` (a pickled :class:`Adapter` instance).
    """

    target: str | None = None
    backend: str | None = None  # None: no backend chosen (adapters.DEFAULT_BACKEND)
    device: str | None = None
    capabilities: Any = None
    pickled: bytes | None = None

    def create(self) -> Any:
        if self.pickled is not None:
            return pickle.loads(self.pickled)
        from .adapters import resolve

        return resolve(self.target, backend=self.backend, device=self.device,
                       capabilities=self.capabilities)
