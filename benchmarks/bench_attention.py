"""pytest-benchmark module driven by a plan file; run it through ``benchmarks/run.py``.

``run.py`` writes the plan (one item per measurement) to a JSON file and points
``ATTNSPEC_BENCH_PLAN`` at it; every item becomes one parametrised test whose timing
pytest-benchmark takes (calibrated iterations, rounds until ``--benchmark-max-time``, at
least ``--benchmark-min-rounds``). The statistics land in ``--benchmark-json``, keyed by
``extra_info["item"]``.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from cases import Unavailable, attention_call, matmul_call, memcpy_call
from configs import Config


def _plan() -> dict:
    path = os.environ.get("ATTNSPEC_BENCH_PLAN")
    if not path:
        return {"items": [], "block": 512}
    with open(path) as f:
        return json.load(f)


PLAN = _plan()
ITEMS = PLAN["items"]


def _build(item: dict):
    kind = item["kind"]
    if kind == "attention":
        block = PLAN["block"]
        block = tuple(block) if isinstance(block, list) else block
        return attention_call(item["backend"], Config.from_dict(item["config"]),
                              item["variant"], block)
    if kind == "matmul":
        return matmul_call(item["backend"], item["n"])
    if kind == "memcpy":
        return memcpy_call(item["backend"], item["nbytes"])
    raise ValueError(f"unknown item kind {kind!r}")


def _faults_per_call(fn, calls: int = 3) -> float | None:
    """Minor page faults per call, over a few calls after the timing: fresh pages that a
    call's temporaries get from the kernel (glibc returns a large freed block to the system
    when it lies at the top of the heap). A call in that state runs up to 2x slower than the
    same call reusing its memory; docs/performance.md, "Page faults"."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


@pytest.mark.parametrize("item", ITEMS, ids=[i["id"] for i in ITEMS])
def test_measure(benchmark, item: dict) -> None:
    try:
        fn = _build(item)
    except Unavailable as exc:
        pytest.skip(str(exc))
    # Warm-up outside the timing: JIT compilation, lazy library initialisation, first touch.
    fn()
    if item["backend"].startswith("jax") or item.get("variant") == "compiled":
        fn()  # a first compiled call may fill attnspec's caches and compile once more
    benchmark.group = item.get("group", item["kind"])
    benchmark.extra_info["item"] = item["id"]
    benchmark(fn)
    benchmark.extra_info["minor_faults_per_call"] = _faults_per_call(fn)
    stats = benchmark.stats.stats
    done = PLAN.get("progress_offset", 0) + ITEMS.index(item) + 1
    print(f"  [{done}/{PLAN.get('progress_total', len(ITEMS))}] {item['id']:<60s} "
          f"min {stats.min * 1e3:10.4f} ms  ({stats.rounds} rounds)", file=sys.stderr,
          flush=True)
