"""The memory limit a worker process runs under.

An implementation under test that allocates without bound must not take the machine (and
with it the conformance run) down: each worker lowers its own soft resource limit before it
imports the implementation, so that an allocation past the limit fails in the worker
(``MemoryError``, outcome ``error``) instead of swapping or waking the OOM killer.

On Linux the limit is ``RLIMIT_DATA``: since Linux 4.7 it counts the heap and every private
writable mapping, i.e. what a process allocates, but not address space that frameworks (or
a CUDA driver) merely reserve, which ``RLIMIT_AS`` would count. On other POSIX systems it is
``RLIMIT_AS`` (macOS does not enforce it). Windows has no :mod:`resource` module: there is no
limit, and the report says so.

The default (``"auto"``) is half of the machine's physical memory, at least
:data:`MIN_DEFAULT`, for workers on the CPU; a worker whose implementation runs on a GPU gets
no limit unless one is given explicitly (a limit on host memory can break a GPU runtime's
start-up). It is a guard against runaway allocation, not a sandbox: the implementation runs
with the user's rights and could raise its own soft limit again.
"""

from __future__ import annotations

import os
import re
import sys

__all__ = ["AUTO", "MIN_DEFAULT", "apply_memory_limit", "default_memory_limit",
           "format_size", "on_gpu", "parse_size", "resolve_memory_limit"]

AUTO = "auto"
#: The default is never less than this (bytes): frameworks need a few hundred MB to start.
MIN_DEFAULT = 2 << 30

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1000 ** 2, "mib": 1 << 20, "g": 1 << 30, "gb": 1000 ** 3, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1000 ** 4, "tib": 1 << 40}


def default_memory_limit() -> int:
    """Half the physical memory (at least :data:`MIN_DEFAULT`), in bytes."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return MIN_DEFAULT
    return max(MIN_DEFAULT, int(total) // 2)


def parse_size(text: str | int | None) -> int | None:
    """``"8G"``, ``"512MiB"``, ``"1.5g"``, ``"1000000"`` -> bytes; ``"none"``, ``"0"``,
    ``0`` and ``None`` -> ``None`` (no limit). K/M/G/T are binary (KiB...), KB/MB/GB/TB
    decimal.

    Raises
    ------
    ValueError
        For anything else (a negative size, an unknown unit).
    """
    if text is None:
        return None
    if isinstance(text, bool):
        raise ValueError(f"memory limit: expected a size such as '8G' or 'none', got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"memory limit: must be >= 0 bytes, got {text}")
        return text or None
    value = str(text).strip().lower()
    if value in ("none", "off", "unlimited", "0"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", value)
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"memory limit: expected a size such as '8G', '512M' or 'none', "
                         f"got {text!r}")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    return size or None


def format_size(size: int | None) -> str:
    """``12884901888`` -> ``"12 GiB"``; ``None`` -> ``"none"``."""
    if size is None:
        return "none"
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, index = float(size), 0
    while value >= 1024 and index < len(units) - 1:
        value, index = value / 1024, index + 1
    return f"{size} B" if index == 0 else f"{value:.3g} {units[index]}"


def on_gpu(backend_name: str, device: str | None = None) -> bool:
    """Whether an adapter on ``backend_name`` (and ``device``) runs on a GPU (an
    accelerator): the backend's answer, :func:`attnspec.backends.device_kind`."""
    from attnspec.backends import ACCELERATOR, device_kind, names

    if backend_name in names():
        return device_kind(backend_name, device) == ACCELERATOR
    # Not a registered backend: only the names can tell.
    return device_kind(None, f"{backend_name} {device or ''}") == ACCELERATOR


def resolve_memory_limit(requested: str | int | None, *, gpu: bool) -> int | None:
    """The limit in bytes for one worker: ``"auto"`` is :func:`default_memory_limit` on the
    CPU and no limit on a GPU; anything else goes through :func:`parse_size`."""
    if isinstance(requested, str) and requested.strip().lower() == AUTO:
        return None if gpu else default_memory_limit()
    return parse_size(requested)


def apply_memory_limit(limit: int | None) -> str | None:
    """Lower this process's soft limit to ``limit`` bytes (never raise it).

    Returns
    -------
    str or None
        ``None`` when the limit is in force (or none was asked for), else why it is not.
    """
    if limit is None:
        return None
    try:
        import resource
    except ImportError:
        return "not enforced: this platform has no 'resource' module (Windows)"
    kind = resource.RLIMIT_DATA if sys.platform.startswith("linux") else resource.RLIMIT_AS
    try:
        soft, hard = resource.getrlimit(kind)
        new = limit
        if soft != resource.RLIM_INFINITY:
            new = min(new, soft)
        if hard != resource.RLIM_INFINITY:
            new = min(new, hard)
        resource.setrlimit(kind, (new, hard))
    except (ValueError, OSError) as exc:
        return f"not enforced: setrlimit failed ({exc})"
    return None
