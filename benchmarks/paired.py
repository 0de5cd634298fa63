"""Paired ratios: a variant and the framework's kernel timed in alternating rounds.

pytest-benchmark times one measurement after another, so a ratio of two of them compares
two moments of the machine: on the 2-core development VM the same kernel measured twice
in one run differed by up to 1.5x (``native``, which is attnspec's checks and then the
kernel itself, took 0.66x the kernel's time in the session-8 full run). Here both callables
run in the same rounds, in alternating order (A B, B A, ...), each round long enough for
the timer; the ratio is the median of the per-round ratios, so a slow drift of the machine
cancels and one disturbed round does not decide. The targets that compare with a kernel
use this ratio where it was measured (``benchmarks/targets.py``).
"""

from __future__ import annotations

import gc
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import cases
from configs import Config

__all__ = ["PAIRED_VARIANTS", "measure", "paired_ratio"]

#: Variants paired with the kernel (``direct`` and ``chunked`` are fixed plans, not targets).
PAIRED_VARIANTS = ("auto", "native", "compiled", "hand")


def _per_call(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def paired_ratio(a: Callable[[], Any], b: Callable[[], Any], rounds: int,
                 round_s: float) -> dict:
    """``time(a) / time(b)``: the median over ``rounds`` alternating rounds of the two
    (each round of each at least ``round_s`` seconds, at least one call), with the
    per-round ratios and each side's best per-call time."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    calls = [max(1, math.ceil(round_s / max(_per_call(f, 1), 1e-9))) for f in (a, b)]
    ratios, best_a, best_b = [], math.inf, math.inf
    was_enabled = gc.isenabled()
    gc.disable()  # as pytest-benchmark's --benchmark-disable-gc
    try:
        for r in range(rounds):
            if r % 2 == 0:
                ta, tb = _per_call(a, calls[0]), _per_call(b, calls[1])
            else:
                tb, ta = _per_call(b, calls[1]), _per_call(a, calls[0])
            ratios.append(ta / tb)
            best_a, best_b = min(best_a, ta), min(best_b, tb)
    finally:
        if was_enabled:
            gc.enable()
    return {"ratio": statistics.median(ratios), "ratios": ratios, "rounds": rounds,
            "calls": calls, "time_s": best_a, "kernel_time_s": best_b}


def measure(results: list[dict], block: Any, rounds: int, round_s: float) -> None:
    """Pair every measured variant of :data:`PAIRED_VARIANTS` with its row's kernel and
    store ``variants[name]["paired"]``; a pair that fails is recorded, never fatal."""
    plan = [(r, [n for n in PAIRED_VARIANTS
                 if r["variants"].get(n, {}).get("status") == "ok"])
            for r in results if r["config"]["role"] != "memory"
            and r["variants"].get("kernel", {}).get("status") == "ok"]
    total = sum(len(names) for _, names in plan)
    done = 0
    for r, names in plan:
        cfg = Config.from_dict(r["config"])
        try:
            qkv = cases.inputs(r["backend"], cfg)
            kernel = cases.attention_call(r["backend"], cfg, "kernel", block, qkv)
            kernel()
        except Exception as exc:  # e.g. out of device memory: the row's pairs say so
            for name in names:
                r["variants"][name]["paired"] = {
                    "status": "error", "reason": f"kernel: {type(exc).__name__}: {exc}"[:300]}
            done += len(names)
            continue
        for name in names:
            v = r["variants"][name]
            done += 1
            try:
                fn = cases.attention_call(r["backend"], cfg, name, block, qkv)
                fn()
                fn()  # a compiled callable may compile once more on its second call
                res = paired_ratio(fn, kernel, rounds, round_s)
            except Exception as exc:  # recorded; the other pairs go on
                v["paired"] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            v["paired"] = {"status": "ok", "ratio_to_kernel": res["ratio"],
                           "ratios": res["ratios"], "rounds": res["rounds"],
                           "calls": res["calls"]}
            each = ", ".join(f"{x:.2f}" for x in res["ratios"])
            print(f"  [{done}/{total}] {r['backend']} {cfg.key} {name}: "
                  f"{res['ratio']:.2f}x kernel (rounds: {each})", file=sys.stderr, flush=True)
