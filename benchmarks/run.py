"""Benchmark attnspec against the frameworks' own attention, in one run.

    python benchmarks/run.py                 # full run (10-15 minutes on 2 cores)
    python benchmarks/run.py --quick         # smoke run (~1 minute)
    python benchmarks/run.py --backend numpy --backend torch-cpu --json out.json --plot out.png

Per backend (numpy, torch-cpu, jax-cpu under jit; torch-cuda, jax-gpu, cupy where present)
and per configuration (B, H, N, D, causal, dtype) it times attnspec (``auto``: the
``chunk_size`` heuristic, ``direct``, ``chunked``, ``native``) and the framework's own kernel
with pytest-benchmark, measures the machine's fp32 matmul rate and memory-copy bandwidth in
the same run, measures each call's peak memory in a subprocess, evaluates the targets
(PASS/MISS), prints the tables and writes JSON and a PNG plot. docs/performance.md explains
every column.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cases  # noqa: E402
import memory  # noqa: E402
import paired  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402
from configs import ATTN_VARIANTS, BACKENDS, Config, attention_flop, mode  # noqa: E402

SCHEMA = "attnspec-benchmarks/1"
_ALIASES = {"torch": ("torch-cpu", "torch-cuda"), "jax": ("jax-cpu", "jax-gpu")}
_GPU = ("torch-cuda", "jax-gpu", "cupy")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="smoke run: few sizes, short timing")
    g.add_argument("--tiny", action="store_true",
                   help="tiny shapes, one round each: checks the harness, figures mean nothing")
    p.add_argument("--backend", action="append", metavar="NAME",
                   help=f"repeatable; one of {', '.join(BACKENDS)} (or torch, jax); "
                        "default: every one available here")
    p.add_argument("--json", default="benchmark-results.json", metavar="PATH",
                   help="results file (default: %(default)s)")
    p.add_argument("--plot", default="benchmark-results.png", metavar="PATH",
                   help="PNG plot; needs matplotlib (default: %(default)s)")
    p.add_argument("--markdown", metavar="PATH", help="also write the tables as Markdown")
    p.add_argument("--raw", metavar="PATH", help="keep pytest-benchmark's own JSON here")
    p.add_argument("--block", default="512", metavar="N|Q,K",
                   help="chunk_size of the 'chunked' variant (default: %(default)s)")
    p.add_argument("--stat", choices=("min", "median", "mean"), default="min",
                   help="per-call statistic over pytest-benchmark's rounds "
                        "(default: %(default)s)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="limit BLAS/OpenMP threads (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, "
                        "MKL_NUM_THREADS; JAX: single-threaded Eigen when N=1); default: "
                        "the libraries' own choice (every core)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--no-paired", action="store_true",
                   help="skip the paired ratios (each variant and its kernel in alternating "
                        "rounds); the kernel targets then use the two separate timings")
    return p.parse_args(argv)


def _backends(requested: list[str] | None) -> tuple[list[str], dict[str, str]]:
    from attnspec.backends import get

    names: list[str] = []
    for n in requested or BACKENDS:
        for m in _ALIASES.get(n, (n,)):
            if m not in BACKENDS:
                raise SystemExit(f"--backend: unknown backend {m!r}; one of {BACKENDS}")
            if m not in names:
                names.append(m)
    usable, skipped = [], {}
    for n in names:
        b = get(n)
        if b.available:
            usable.append(n)
        else:
            skipped[n] = b.reason
    return usable, skipped


def _block(text: str):
    parts = [int(x) for x in text.split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


def _conditions() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                                capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=HERE, capture_output=True, text=True,
                               check=False).stdout.strip()
    except OSError:
        commit, dirty = "", ""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "mem_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "versions": cases.framework_versions(),
        "git_commit": commit + ("+dirty" if dirty else ""),
        "loadavg_start": _loadavg(),
        "threads_env": {k: os.environ[k] for k in (
            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
            if k in os.environ},
    }


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# -- the timing plan ---------------------------------------------------------------------------


def _configs(m, backend: str) -> list[Config]:
    cfgs = list(m.timed)
    dt = m.extra_dtypes.get(backend)
    if dt:
        cfgs.append(Config(1, 8, 1024, 1024, 64, dtype=dt, role="dtype"))
    if m.decode_backends is None or backend in m.decode_backends:
        cfgs.append(m.decode)
    return cfgs


def _plan(m, backends: list[str], feats: dict, block):
    """Timing items for pytest-benchmark, and the n/a records of what cannot run."""
    items, results = [], []
    for b in backends:
        # A GPU needs a larger product than a CPU to reach its rate.
        n = max(m.matmul_n, 8192) if b in _GPU and m.name != "tiny" else m.matmul_n
        items.append({"id": f"machine/{b}/matmul{n}", "kind": "matmul", "backend": b,
                      "n": n, "group": "machine"})
        if not b.startswith("jax"):
            items.append({"id": f"machine/{b}/memcpy", "kind": "memcpy", "backend": b,
                          "nbytes": m.memcpy_bytes, "group": "machine"})
    for b in backends:
        for cfg in [*_configs(m, b), m.overhead]:
            variants = ATTN_VARIANTS if cfg.role != "overhead" else ("auto", "direct",
                                                                       "kernel", "bare")
            row = {"backend": b, "config": cfg.to_dict(), "label": cfg.label,
                   "flop": attention_flop(cfg), "kernel_name": cases.kernel_name(b),
                   "variants": {}}
            results.append(row)
            for v in variants:
                reason = cases.variant_reason(b, v, feats)
                if reason is None and cfg.dtype not in _dtypes(b):
                    reason = f"{b} has no {cfg.dtype}"
                if reason is None and v == "compiled" and m.name == "tiny":
                    reason = "not in --tiny mode: compiling takes seconds per shape"
                if reason is not None:
                    row["variants"][v] = {"status": "n/a", "reason": reason}
                    continue
                iid = f"attention/{b}/{cfg.key}/{v}"
                row["variants"][v] = {"status": "pending", "item": iid}
                items.append({"id": iid, "kind": "attention", "backend": b,
                              "config": cfg.to_dict(), "variant": v, "group": cfg.key})
    return items, results


def _dtypes(backend: str) -> tuple[str, ...]:
    from attnspec.backends import get

    return get(backend).dtypes


class _Collector:
    """pytest plugin: outcome of every measurement (errors and skips carry a reason)."""

    def __init__(self):
        self.outcomes: dict[str, tuple[str, str]] = {}

    def pytest_runtest_logreport(self, report):
        item = report.nodeid.partition("[")[2][:-1]
        if report.failed:
            text = str(report.longrepr)
            last = [ln for ln in text.splitlines() if ln.startswith("E ")]
            self.outcomes[item] = ("error", (last[-1][1:].strip() if last else text)[:300])
        elif report.skipped and report.when in ("setup", "call"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            self.outcomes[item] = ("n/a", str(reason).removeprefix("Skipped: "))


def _run_timing(items: list[dict], m, block, raw: str | None) -> tuple[dict, dict]:
    import pytest

    with tempfile.TemporaryDirectory(prefix="attnspec-bench-") as tmp:
        plan_path, json_path = Path(tmp, "plan.json"), Path(tmp, "pytest-benchmark.json")
        plan_path.write_text(json.dumps({"items": items, "block": block}))
        os.environ["ATTNSPEC_BENCH_PLAN"] = str(plan_path)
        collector = _Collector()
        args = [
            str(HERE / "bench_attention.py"), "-p", "no:terminal", "-s", "-p", "no:cacheprovider",
            "-p", "no:attnspec", "-o", "addopts=", "-o", "console_output_style=classic",
            f"--benchmark-json={json_path}", f"--benchmark-max-time={m.max_time}",
            f"--benchmark-min-rounds={m.min_rounds}", "--benchmark-disable-gc",
            "--benchmark-quiet",
        ]
        code = pytest.main(args, plugins=[collector])
        if code not in (0, 1):  # 1: some measurement failed; it is recorded, not fatal
            raise SystemExit(f"pytest-benchmark run failed (exit {code})")
        data = json.loads(json_path.read_text()) if json_path.exists() else {"benchmarks": []}
        if raw:
            Path(raw).write_text(json.dumps(data, indent=1))
    stats = {b["extra_info"]["item"]: {
        **b["stats"], "minor_faults_per_call": b["extra_info"].get("minor_faults_per_call")}
        for b in data["benchmarks"]}
    return stats, collector.outcomes


def _stats(s: dict) -> dict:
    return {k: s[k] for k in ("min", "median", "mean", "stddev", "iqr", "rounds", "iterations")}


# -- assembling the document -------------------------------------------------------------------


def _machine(items, stats, outcomes, stat) -> dict:
    mm, mc = {}, {}
    for it in items:
        if it["kind"] not in ("matmul", "memcpy"):
            continue
        s = stats.get(it["id"])
        if s is None:
            status, reason = outcomes.get(it["id"], ("error", "no measurement"))
            rec = {"status": status, "reason": reason}
        else:
            t = s[stat]
            rec = {"status": "ok", "time_s": t, "stats": _stats(s)}
            if it["kind"] == "matmul":
                rec.update(n=it["n"], gflops=2.0 * it["n"] ** 3 / t / 1e9)
            else:
                rec.update(nbytes=it["nbytes"], bytes_per_s=it["nbytes"] / t)
        (mm if it["kind"] == "matmul" else mc)[it["backend"]] = rec
    out = {"matmul": mm, "memcpy": mc}
    for dev, members in (("cpu", ("numpy", "torch-cpu", "jax-cpu")), ("cuda", _GPU)):
        rates = [(r["gflops"], n) for n, r in mm.items() if n in members and "gflops" in r]
        if rates:
            out[f"matmul_{dev}_gflops"], out[f"matmul_{dev}_source"] = max(rates)
        bws = [(r["bytes_per_s"], n) for n, r in mc.items()
               if n in members and "bytes_per_s" in r]
        if bws:
            out[f"memcpy_{dev}_bytes_per_s"], out[f"memcpy_{dev}_source"] = max(bws)
    return out


def _fill(results, stats, outcomes, machine, stat) -> None:
    for r in results:
        dev = "cuda" if r["backend"] in _GPU else "cpu"
        rate = machine.get(f"matmul_{dev}_gflops")
        for v in r["variants"].values():
            if v["status"] != "pending":
                continue
            iid = v.pop("item")
            s = stats.get(iid)
            if s is None:
                status, reason = outcomes.get(iid, ("error", "no measurement"))
                v.update(status=status, reason=reason)
                continue
            t = s[stat]
            gflops = r["flop"] / t / 1e9
            v.update(status="ok", time_s=t, gflops=gflops, stats=_stats(s),
                     fraction_of_matmul=gflops / rate if rate else None,
                     minor_faults_per_call=s.get("minor_faults_per_call"))
        k = r["variants"].get("kernel", {})
        for v in r["variants"].values():
            if v["status"] == "ok" and k.get("status") == "ok":
                v["ratio_to_kernel"] = v["time_s"] / k["time_s"]


def _run_memory(m, backends, results, feats, block, budget) -> None:
    """Peak memory: one subprocess per backend for the timed configurations, one per
    memory-target configuration (NumPy)."""
    by_key = {}
    for r in results:
        by_key[(r["backend"], json.dumps(r["config"], sort_keys=True))] = r
    for b in backends:
        items = []
        for r in results:
            if r["backend"] != b or r["config"]["role"] == "overhead":
                continue
            vs = [v for v, rec in r["variants"].items() if rec["status"] == "ok"]
            if vs:
                items.append((r["config"], vs))
        if not items:
            continue
        print(f"== peak memory: {b} ({sum(len(v) for _, v in items)} calls)", flush=True)
        recs = memory.measure(b, items, block=block, warm_full=b.startswith("jax"),
                              budget_bytes=budget, timeout=900)
        _attach(recs, by_key)
    if "numpy" not in backends:
        return
    for cfg, variants in m.memory_targets:
        reasons = {v: cases.variant_reason("numpy", v, feats) for v in variants}
        row = {"backend": "numpy", "config": cfg.to_dict(), "label": cfg.label,
               "flop": attention_flop(cfg), "kernel_name": None,
               "variants": {v: {"status": "memory-only"} for v in variants}}
        results.append(row)
        by_key[("numpy", json.dumps(row["config"], sort_keys=True))] = row
        run = [v for v in variants if reasons[v] is None]
        for v in variants:
            if reasons[v] is not None:
                row["variants"][v] = {"status": "n/a", "reason": reasons[v],
                                      "memory": {"status": "n/a", "reason": reasons[v]}}
        if not run:
            continue
        print(f"== peak memory: numpy {cfg.label} ({', '.join(run)})", flush=True)
        t0 = time.perf_counter()
        recs = memory.measure("numpy", [(cfg.to_dict(), run)], block=block, warm_full=False,
                              budget_bytes=budget, timeout=1800)
        _attach(recs, by_key)
        print(f"   {time.perf_counter() - t0:.1f} s", flush=True)


def _attach(recs, by_key) -> None:
    for rec in recs:
        row = by_key.get((rec["backend"], json.dumps(rec["config"], sort_keys=True)))
        if row is None:
            continue
        mem = {k: v for k, v in rec.items() if k not in ("backend", "config", "variant")}
        row["variants"].setdefault(rec["variant"], {"status": "memory-only"})["memory"] = mem


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.threads:
        # Before any framework is imported (the children inherit the environment).
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        if args.threads == 1:
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    # JAX on a GPU would otherwise take 75% of its memory at import, starving torch/CuPy.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    m = mode("quick" if args.quick else "tiny" if args.tiny else "full")
    block = _block(args.block)
    t_start = time.perf_counter()
    started = _dt.datetime.now().isoformat(timespec="seconds")
    backends, skipped = _backends(args.backend)
    feats = cases.features()
    print(f"attnspec benchmarks, {m.name} mode; backends: {', '.join(backends) or 'none'}")
    for n, why in skipped.items():
        print(f"  skipped {n}: {why}")
    print(f"  attnspec features: {', '.join(k for k, v in feats.items() if v) or 'none'}"
          f" (missing: {', '.join(k for k, v in feats.items() if not v) or 'none'})")
    if not backends:
        print("no usable backend", file=sys.stderr)
        return 2
    conditions = _conditions()
    items, results = _plan(m, backends, feats, block)
    print(f"== timing: {len(items)} measurements with pytest-benchmark "
          f"(max {m.max_time} s / at least {m.min_rounds} rounds each)", flush=True)
    stats, outcomes = _run_timing(items, m, block, args.raw)
    machine = _machine(items, stats, outcomes, args.stat)
    _fill(results, stats, outcomes, machine, args.stat)
    if not args.no_paired:
        print(f"== paired ratios: variants against their kernel, {m.paired_rounds} "
              "alternating rounds each", flush=True)
        paired.measure(results, block, m.paired_rounds, m.paired_round_s)
    if not args.no_memory:
        budget = memory.available_bytes() // 2
        _run_memory(m, backends, results, feats, block, budget)
    conditions["loadavg_end"] = _loadavg()
    if "torch" in sys.modules:
        conditions["torch_threads"] = sys.modules["torch"].get_num_threads()
    doc = {
        "schema": SCHEMA,
        "command": "python benchmarks/run.py " + shlex.join(argv if argv is not None
                                                             else sys.argv[1:]),
        "mode": m.name,
        "started": started,
        "duration_s": time.perf_counter() - t_start,
        "stat": args.stat,
        "block": block,
        "backends": backends,
        "backends_skipped": skipped,
        "features": feats,
        "conditions": conditions,
        "machine": machine,
        "results": results,
    }
    doc["targets"] = targets.evaluate(doc)
    print(report.text_table(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
        print(f"\nwrote {args.json}")
    if args.plot:
        why = report.plot(doc, args.plot)
        print(f"wrote {args.plot}" if why is None else f"no plot: {why}")
    if args.markdown:
        Path(args.markdown).write_text(report.markdown(doc) + "\n")
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
