"""Signals a run answers: SIGTERM is an interruption like Ctrl-C, and a worker dies with the
process that started it.

SIGTERM is what ``timeout``, a CI system cancelling a job and ``docker stop`` send. Left to
its default it ends the run at once (exit 143) with no report; turned into the same
``KeyboardInterrupt`` as Ctrl-C, the run stops at the next case, kills its worker and writes
the partial report (``status: "interrupted"``), and the CLI exits 143.

A worker whose parent is killed (SIGKILL, an OOM kill) would otherwise live on, perhaps in an
implementation's endless loop: on Linux it asks the kernel for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``); elsewhere a daemon thread polls the parent's pid (enough for Python
code, which releases the GIL).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

__all__ = ["Terminated", "die_with_parent", "terminate_as_interrupt"]

_PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """The run got SIGTERM (a ``KeyboardInterrupt``: everything that handles Ctrl-C handles
    it the same way)."""

    signum = signal.SIGTERM


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (elsewhere
    nothing changes: only the main thread can handle signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` (its parent's pid at start) ends."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # it died before the request: too late for it
                    os._exit(1)
                return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="attnspec-parent-watch", daemon=True).start()
