"""Hostile implementations under test, for tests/test_conformance_hostile.py.

Like tests/runner_impls.py (whose raises, hangs, wrong_shape, wrong_dtype, exits, segfaults
and non_array the hostile tests run too), each one is attnspec's own attention on NumPy and
misbehaves only on the trigger case, a head dimension of ``TRIGGER_DK``: it returns a
non-array or NaN, loops or sleeps past the timeout, aborts, dereferences a null pointer,
allocates without bound, floods stdout/stderr, or writes into its inputs. The cases after the
trigger show that the run went on.

The runner's workers import this module by name (``"hostile_impls:busy_loop"``).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Any

import numpy as np
from runner_impls import _implementation, _map_out

import attnspec

#: ``sleeps_past_timeout`` sleeps this long; the tests' timeout is shorter.
SLEEP = 30.0
#: ``allocates`` stops here if no memory limit stopped it first (so that a broken limit
#: fails the test instead of exhausting the machine).
ALLOCATION_CAP = 2 << 30
#: ``chatty`` writes this many bytes to stdout and as many to stderr.
CHATTER = 3 << 20
#: The marker ``aborts`` prints to stderr before it aborts.
LAST_WORDS = "hostile_impls: about to abort"


@_implementation
def returns_none(result, query, key):
    return None


@_implementation
def returns_list(result, query, key):
    return _map_out(result, lambda out: out.tolist())


@_implementation
def returns_string(result, query, key):
    return "attention output"


@_implementation
def returns_nan(result, query, key):
    return _map_out(result, lambda out: np.full_like(out, np.nan))


@_implementation
def busy_loop(result, query, key):
    while True:  # holds the GIL: nothing in the worker answers any more
        pass


@_implementation
def sleeps_past_timeout(result, query, key):
    time.sleep(SLEEP)  # then answers, long after the parent gave up on it
    return result


@_implementation
def aborts(result, query, key):
    print(LAST_WORDS, file=sys.stderr, flush=True)
    os.abort()


@_implementation
def null_deref(result, query, key):
    ctypes.string_at(0)  # reads address 0: a real SIGSEGV, not a signal sent to itself
    return result


@_implementation
def allocates(result, query, key):
    hoard, total = [], 0
    while total < ALLOCATION_CAP:
        block = np.ones(1 << 23)  # 64 MiB, every page touched
        hoard.append(block)
        total += block.nbytes
    return result


@_implementation
def chatty(result, query, key):
    line = "x" * 1023 + "\n"
    for _ in range(CHATTER // len(line)):
        sys.stdout.write(line)
        sys.stderr.write(line.upper())
    os.write(1, b"and a last line straight to file descriptor 1\n")
    return result


@_implementation
def raises_keyboard_interrupt(result, query, key):
    raise KeyboardInterrupt  # the implementation's, not the user's Ctrl-C


def mutates(query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
    """Right output, but it scales ``key`` and zeroes a row of ``value`` in place after
    computing it, on every case."""
    result = attnspec.scaled_dot_product_attention(query, key, value, **kwargs)
    key *= 2
    value[..., 0, :] = 0
    return result


mutates.attnspec_capabilities = returns_none.attnspec_capabilities


def mutates_mask(query: Any, key: Any, value: Any, *, mask: Any = None, **kwargs: Any) -> Any:
    """Right output, then flips its boolean mask (when it was given one)."""
    result = attnspec.scaled_dot_product_attention(query, key, value, mask=mask, **kwargs)
    if mask is not None:
        np.logical_not(mask, out=mask)
    return result


mutates_mask.attnspec_capabilities = returns_none.attnspec_capabilities


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


@_implementation
def raises_unprintable(result, query, key):
    raise Unprintable


@_implementation
def evil_exception(result, query, key):
    """Raises an exception whose text is made to break reports: HTML, Markdown, terminal
    escapes and newlines."""
    raise ValueError("<script>alert(1)</script> a|b `code` [x](javascript:alert(1)) "
                     "\x1b[2J\x1b]0;pwned\x07 line\nbreak")


@_implementation
def reports_memory_limit(result, query, key):
    """Raises with the soft limit its worker runs under (``RLIMIT_DATA`` on Linux)."""
    import resource

    kind = resource.RLIMIT_DATA if sys.platform.startswith("linux") else resource.RLIMIT_AS
    raise RuntimeError(f"soft limit {resource.getrlimit(kind)[0]}")


@_implementation
def raises_surrogate(result, query, key):
    """Raises with a lone surrogate in its message, as an exception built from a non-UTF-8
    file name (``os.fsdecode(b"\\xff")``) does: not encodable as UTF-8."""
    name = os.fsdecode(b"/tmp/caf\xe9.bin")  # '/tmp/caf\udce9.bin'
    raise FileNotFoundError(f"no such file: {name}")


#: A name made to break reports (HTML, Markdown, a terminal), for an adapter object.
EVIL_NAME = ("<script>alert(1)</script> a|b `code` [x](javascript:alert(1)) "
             "\x1b[31mred\x1b[0m\x1b]0;title\x07 line\nbreak")


@_implementation
def writes_to_the_pipe(result, query, key):
    """Sends a message of its own down the worker's pipe before its answer: without
    numbered replies, every later case would be graded against the previous one's."""
    import gc
    from multiprocessing.connection import Connection

    for obj in gc.get_objects():
        if isinstance(obj, Connection) and not obj.closed and obj.writable:
            obj.send("a message from the implementation")
    return result


# -- misbehaving on every call: for --explore, whose drawn configurations need not have the
# -- trigger's head dimension ---------------------------------------------------------------


def _on_every_call(misbehave):
    """Like ``_implementation``, but misbehaving on every call."""

    def impl(query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
        result = attnspec.scaled_dot_product_attention(query, key, value, **kwargs)
        return misbehave(result, query, key)

    impl.attnspec_capabilities = returns_none.attnspec_capabilities
    impl.__name__ = misbehave.__name__
    return impl


@_on_every_call
def always_exits_zero(result, query, key):
    """Ends its process with status 0 ("success") in the middle of a call."""
    os._exit(0)


@_on_every_call
def always_null_deref(result, query, key):
    ctypes.string_at(0)  # a real SIGSEGV
    return result


@_on_every_call
def always_sleeps(result, query, key):
    time.sleep(SLEEP)
    return result


# -- global patches: an implementation that changes NumPy for the whole process --------------

#: ``patch_matmul`` makes every ``numpy.matmul`` result this much too large (1 %).
MATMUL_SKEW = 1.01


def _skew(x: Any) -> Any:
    return tuple(_skew(y) for y in x) if isinstance(x, tuple) else x * MATMUL_SKEW


def patch_matmul() -> None:
    """Replace ``numpy.matmul`` in this whole process by one whose results are 1 % off, and
    ``attnspec.scaled_dot_product_attention`` likewise (once; :func:`unpatch_matmul` undoes
    it). A golden reference computed after it in this process (attnspec's, closed-form
    checked with ``numpy.matmul``) would be moved; attnspec itself multiplies with ``@``,
    which no module attribute reaches, so the function is patched as well."""
    if getattr(np.matmul, "hostile_original", None) is not None:
        return
    original = np.matmul
    reference = attnspec.scaled_dot_product_attention

    def skewed(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs) * MATMUL_SKEW

    def skewed_attention(*args: Any, **kwargs: Any) -> Any:
        return _skew(reference(*args, **kwargs))

    skewed.hostile_original = original
    skewed_attention.hostile_original = reference
    np.matmul = skewed
    attnspec.scaled_dot_product_attention = skewed_attention


def unpatch_matmul() -> None:
    """Put the real ``numpy.matmul`` and attnspec function back (after
    :func:`patch_matmul`)."""
    original = getattr(np.matmul, "hostile_original", None)
    if original is not None:
        np.matmul = original
    reference = getattr(attnspec.scaled_dot_product_attention, "hostile_original", None)
    if reference is not None:
        attnspec.scaled_dot_product_attention = reference


def patches_matmul(query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
    """Patches ``numpy.matmul`` (see :func:`patch_matmul`) on its first call, then computes
    with it: its outputs are off by about 1 %, as is anything computed after it with NumPy
    in the same process."""
    patch_matmul()
    return attnspec.scaled_dot_product_attention(query, key, value, **kwargs)


patches_matmul.attnspec_capabilities = returns_none.attnspec_capabilities


def ignores_patches(query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
    """A correct implementation in a process whose ``numpy.matmul`` (and attnspec function)
    was patched: it computes with the real ones."""
    patched = np.matmul
    np.matmul = getattr(patched, "hostile_original", patched)
    function = attnspec.scaled_dot_product_attention
    try:
        return getattr(function, "hostile_original", function)(query, key, value, **kwargs)
    finally:
        np.matmul = patched


ignores_patches.attnspec_capabilities = returns_none.attnspec_capabilities

#: A module that patches ``numpy.matmul`` when it is imported (a test writes it to a file):
#: its ``attention`` is attnspec's, computed with the patched product.
PATCHES_AT_IMPORT = '''
import hostile_impls

hostile_impls.patch_matmul()
attention = hostile_impls.patches_matmul
'''
