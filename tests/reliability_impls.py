"""Implementations for the reliability tests (tests/test_reliability_*.py), imported by the
workers by name."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import attnspec

#: Environment variable naming the file ``spins`` writes its pid to before it spins.
MARKER = "ATTNSPEC_TEST_SPIN_MARKER"


def spins(query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
    """Writes its pid where ``$ATTNSPEC_TEST_SPIN_MARKER`` says, then spins forever (pure
    Python, as a hung implementation does)."""
    Path(os.environ[MARKER]).write_text(str(os.getpid()))
    while True:
        pass


spins.attnspec_capabilities = {"features": []}


def writes_bytes_to_the_pipe(query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
    """Right, but with a head dim of 3 first writes raw bytes (a frame of garbage) into the
    worker's pipe to the parent, as a C library writing to an inherited descriptor would."""
    from multiprocessing.connection import Connection

    if query.shape[-1] == 3:
        for obj in gc.get_objects():
            if isinstance(obj, Connection) and not obj.closed and obj.writable:
                os.write(obj.fileno(), b"\x00\x00\x00\x07garbage")
    return attnspec.scaled_dot_product_attention(query, key, value, **kwargs)


writes_bytes_to_the_pipe.attnspec_capabilities = {"features": ["gqa", "lq_ne_lk", "batch2"]}


def spins_off_catalog(query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
    """Right on head dim 16 (the catalog case the tests select); on any other head dim (what
    ``--explore`` draws) it writes its pid where ``$ATTNSPEC_TEST_SPIN_MARKER`` says and
    spins forever."""
    if query.shape[-1] != 16:
        spins(query, key, value)
    return attnspec.scaled_dot_product_attention(query, key, value, **kwargs)


spins_off_catalog.attnspec_capabilities = {"features": []}
