"""Atomic file writes: every file the conformance suite writes goes through here.

A report, a Markdown summary, an HTML page or a golden-vector file is written to a temporary
file in the destination's directory (``.<name>.<random>.tmp``), flushed and synced, and only
then renamed over the destination with :func:`os.replace` (atomic on POSIX and Windows when
both are on one file system, which the shared directory guarantees). A reader therefore sees
either the old file or the complete new one, never half of one: an interrupted run, a crash
or a full disk while writing leaves the previous file as it was (and removes the temporary
file where the process is still alive to do so).

What the path names is respected: a symbolic link is followed and its target replaced (the
link stays a link); a path that exists and is not a regular file (a FIFO, ``/dev/stdout``,
``/proc/self/fd/1``, a device node) is written to as it is, a stream, never replaced by a
regular file. Text is written with ``errors="backslashreplace"``: a lone surrogate in an
implementation's message (an exception built from a non-UTF-8 path) becomes ``\udcff`` in
the file instead of an encoding error that would lose the report.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "check_writable", "write_bytes", "write_text"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = "utf-8",
                sync: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    Parameters
    ----------
    path : path-like
        The destination. Its directory must exist.
    mode : {"w", "wb"}
        Text or binary.
    encoding : str, optional
        For text mode (default UTF-8).
    sync : bool
        ``os.fsync`` the data before the rename (default), so that a power loss cannot leave
        an empty file behind the new name either.

    Yields
    ------
    file object
        Write the whole content to it. If the block raises (``KeyboardInterrupt``
        included), the destination is left untouched and the temporary file is removed.

    Notes
    -----
    The new file gets the permissions a plain ``open(path, "w")`` would give it (``0o666``
    less the umask), not ``mkstemp``'s ``0o600``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if _is_stream(path):
        with (open(path, "w", encoding=encoding, errors="backslashreplace") if mode == "w"
              else open(path, "wb")) as stream:
            yield stream
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # replace the target; the link stays
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        opened: IO[Any] = (os.fdopen(fd, "w", encoding=encoding, errors="backslashreplace")
                           if mode == "w" else os.fdopen(fd, "wb"))
        with opened as fh:
            yield fh
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _is_stream(path: Path) -> bool:
    """Whether ``path`` exists (links followed) and is not a regular file or directory."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_writable(path: str | os.PathLike[str], name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless a report can be written at ``path``: its
    directory exists and is writable, and the path is not a directory. Run before any work,
    so that a typo in an output path fails at once instead of after a long run."""
    p = Path(path)
    if _is_stream(p):
        if not os.access(p, os.W_OK):
            raise ValueError(f"{name}: {str(p)!r} is not writable")
        return
    if p.is_dir():
        raise ValueError(f"{name}: {str(p)!r} is a directory; give a file path")
    target = Path(os.path.realpath(p)) if p.is_symlink() else p
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{name}: the directory {str(parent)!r} does not exist (create it "
                         "first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: the directory {str(parent)!r} is not writable")


def write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text``, atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data``, atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
