"""The GPU benchmark of issue 16: bf16, D = 128, N = 1k .. 64k, on each GPU framework found.

For every N: attnspec's portable path (``chunk_size`` left to the heuristic; under
``jax.jit`` on JAX) against the framework's own kernel (torch SDPA,
``jax.nn.dot_product_attention``; CuPy has none), in TFLOP/s and as a share of the device's
bf16 matmul rate measured in the same run, with the peak device memory of each call above
its inputs and output, and an out-of-memory error recorded as such (never a crash). Prints
the table and the targets (portable >= 40% of SDPA's throughput at N >= 4096; no OOM up to
64k) and writes ``gpu-bench.json`` and ``gpu-bench.md`` under ``--out``.

    python benchmarks/gpu_bench.py --out gpu-results           # on a CUDA machine
    python benchmarks/gpu_bench.py --dry-run --out /tmp/x      # CPU, tiny: checks the script

``--dry-run`` runs the same code on the CPU with tiny shapes (the test suite runs it); its
figures mean nothing. Only torch, JAX and CuPy are imported, each when present.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run from a checkout: its attnspec (tests do this)
    sys.path.insert(0, str(HERE.parent))

SIZES = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
DRY_SIZES = (64, 128)
#: Target rows: the portable path's throughput over the kernel's, from this N on.
TARGET_RATIO, TARGET_FROM_N = 0.40, 4096


def _time(fn: Callable[[], Any], sync: Callable[[Any], None], reps: int) -> float:
    """Seconds per call: the minimum over ``reps`` timed calls after one warm-up (which
    also compiles under jit). ``sync`` waits for the device."""
    sync(fn())
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        sync(fn())
        best = min(best, time.perf_counter() - start)
    return best


class Framework:
    """One framework on one device: its arrays, its kernel, its clocks and memory."""

    name = ""
    kernel_name = ""

    def __init__(self, device: str, dtype: str) -> None:
        self.device, self.dtype = device, dtype

    def randn(self, shape: tuple[int, ...], seed: int) -> Any:
        raise NotImplementedError

    def sync(self, x: Any) -> None:
        raise NotImplementedError

    def portable(self, q: Any, k: Any, v: Any, causal: bool) -> Callable[[], Any]:
        import attnspec

        return lambda: attnspec.scaled_dot_product_attention(q, k, v, causal=causal)

    def kernel(self, q: Any, k: Any, v: Any, causal: bool) -> Callable[[], Any] | None:
        return None

    def matmul(self, n: int) -> Callable[[], Any]:
        a, b = self.randn((n, n), 1), self.randn((n, n), 2)
        return lambda: a @ b

    def reset_peak(self) -> None:
        pass

    def peak_bytes(self) -> int | None:
        return None

    def is_oom(self, exc: BaseException) -> bool:
        return "out of memory" in str(exc).lower() or "resource_exhausted" in str(exc).lower()

    def version(self) -> str:
        return ""


class Torch(Framework):
    name, kernel_name = "torch", "torch SDPA"

    def __init__(self, device: str, dtype: str) -> None:
        import torch

        super().__init__(device, dtype)
        self.torch = torch
        self.tdtype = getattr(torch, dtype)

    def randn(self, shape, seed):
        g = self.torch.Generator(device=self.device).manual_seed(seed)
        return self.torch.randn(shape, generator=g, device=self.device, dtype=self.tdtype)

    def sync(self, x):
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def kernel(self, q, k, v, causal):
        f = self.torch.nn.functional.scaled_dot_product_attention
        return lambda: f(q, k, v, is_causal=causal)

    def reset_peak(self):
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_bytes(self):
        if self.device.startswith("cuda"):
            return int(self.torch.cuda.max_memory_allocated())
        return None

    def is_oom(self, exc):
        oom = getattr(self.torch.cuda, "OutOfMemoryError", ())
        return isinstance(exc, oom) or super().is_oom(exc)

    def version(self):
        return self.torch.__version__


class Jax(Framework):
    name, kernel_name = "jax", "jax.nn.dot_product_attention"

    def __init__(self, device: str, dtype: str) -> None:
        import jax
        import jax.numpy as jnp

        super().__init__(device, dtype)
        self.jax, self.jnp = jax, jnp
        self.dev = jax.devices("gpu" if device.startswith("cuda") else "cpu")[0]

    def randn(self, shape, seed):
        key = self.jax.random.PRNGKey(seed)
        x = self.jax.random.normal(key, shape, dtype=getattr(self.jnp, self.dtype))
        return self.jax.device_put(x, self.dev)

    def sync(self, x):
        self.jax.block_until_ready(x)

    def portable(self, q, k, v, causal):
        import attnspec

        f = self.jax.jit(lambda q, k, v: attnspec.scaled_dot_product_attention(
            q, k, v, causal=causal))
        return lambda: f(q, k, v)

    def kernel(self, q, k, v, causal):
        # jax.nn.dot_product_attention takes (B, L, H, D): transposed once, outside the timing
        qt, kt, vt = (self.jnp.swapaxes(x, 1, 2) for x in (q, k, v))
        f = self.jax.jit(lambda q, k, v: self.jax.nn.dot_product_attention(
            q, k, v, is_causal=causal))
        return lambda: f(qt, kt, vt)

    def matmul(self, n):
        a, b = self.randn((n, n), 1), self.randn((n, n), 2)
        f = self.jax.jit(lambda a, b: a @ b)
        return lambda: f(a, b)

    # No peak memory: XLA's peak_bytes_in_use cannot be reset between calls.

    def version(self):
        return self.jax.__version__


class Cupy(Framework):
    name, kernel_name = "cupy", ""

    def __init__(self, device: str, dtype: str) -> None:
        import cupy

        super().__init__(device, dtype)
        self.cp = cupy
        # CuPy has no bfloat16: its half type stands in (same width, same memory traffic).
        self.cdtype = cupy.float16 if dtype == "bfloat16" else getattr(cupy, dtype)

    def randn(self, shape, seed):
        return self.cp.random.default_rng(seed).standard_normal(shape, dtype=self.cp.float32
                                                                 ).astype(self.cdtype)

    def sync(self, x):
        self.cp.cuda.Device().synchronize()

    def version(self):
        return self.cp.__version__


def frameworks(dry: bool, dtype: str) -> tuple[list[Framework], list[dict]]:
    """The frameworks to measure, and why each other one is not measured."""
    found, skipped = [], []
    device = "cpu" if dry else "cuda"
    for cls in (Torch, Cupy, Jax):  # torch first: the targets are about it
        try:
            fw = cls(device, dtype)
            if not dry and cls is Torch and not fw.torch.cuda.is_available():  # type: ignore[attr-defined]
                raise RuntimeError("torch: no CUDA device")
            if dry and cls is Cupy:
                raise RuntimeError("CuPy: no CUDA device in a dry run")
            fw.randn((2, 2), 0)
        except Exception as exc:
            skipped.append({"framework": cls.name, "reason": f"{type(exc).__name__}: {exc}"})
        else:
            found.append(fw)
    return found, skipped


def _measure(fw: Framework, make: Callable[[], Callable[[], Any] | None], flop: float,
             reps: int, input_bytes: int, output_bytes: int) -> dict:
    try:
        fn = make()
        if fn is None:
            return {"status": "n/a", "reason": f"{fw.name} has no attention kernel"}
        fw.reset_peak()
        seconds = _time(fn, fw.sync, reps)
        peak = fw.peak_bytes()
    except Exception as exc:
        status = "OOM" if fw.is_oom(exc) else "error"
        return {"status": status, "reason": f"{type(exc).__name__}: {str(exc)[:300]}"}
    finally:
        gc.collect()
    row = {"status": "ok", "seconds": seconds, "tflops": flop / seconds / 1e12}
    if peak is not None:
        row["extra_mib"] = max(0, peak - input_bytes - output_bytes) / 2**20
    return row


def run(args: argparse.Namespace) -> dict:
    sizes = tuple(args.sizes or (DRY_SIZES if args.dry_run else SIZES))
    heads, dim = (2, 16) if args.dry_run else (args.heads, args.dim)
    reps = 1 if args.dry_run else args.reps
    found, skipped = frameworks(args.dry_run, args.dtype)
    doc: dict[str, Any] = {
        "dry_run": args.dry_run, "dtype": args.dtype, "B": 1, "H": heads, "D": dim,
        "sizes": list(sizes), "python": platform.python_version(), "skipped": skipped,
        "frameworks": {}, "rows": [],
    }
    for fw in found:
        n_mm = 256 if args.dry_run else 8192
        mm = _measure(fw, functools.partial(fw.matmul, n_mm), 2.0 * n_mm**3, reps, 0, 0)
        doc["frameworks"][fw.name] = {"version": fw.version(), "device": fw.device,
                                      "matmul": mm}
        print(f"{fw.name} {fw.version()} on {fw.device}: bf16 matmul "
              f"{mm.get('tflops', float('nan')):.1f} TFLOP/s", flush=True)
        started = time.perf_counter()
        for causal in (False, True):
            for n in sizes:
                if time.perf_counter() - started > args.budget:
                    # Under jit every block is a graph node: compiling N = 64k can take
                    # longer than the whole GPU run has; what is left is said, not dropped.
                    skip = {"status": "skipped",
                            "reason": f"over the {args.budget:.0f} s budget of {fw.name}"}
                    doc["rows"].append({"framework": fw.name, "N": n, "causal": causal,
                                        "portable": skip, "kernel": skip})
                    continue
                shape = (1, heads, n, dim)
                qkv = [fw.randn(shape, seed) for seed in (3, 4, 5)]
                flop = 4.0 * heads * n * n * dim / (2 if causal else 1)
                io = 2 * math.prod(shape)  # bytes of one bf16 array
                row = {"framework": fw.name, "N": n, "causal": causal,
                       "portable": _measure(fw, functools.partial(fw.portable, *qkv, causal),
                                            flop, reps, 3 * io, io),
                       "kernel": _measure(fw, functools.partial(fw.kernel, *qkv, causal),
                                          flop, reps, 3 * io, io)}
                del qkv
                doc["rows"].append(row)
                print(_line(row, mm), flush=True)
    doc["targets"] = targets(doc)
    return doc


def _tf(cell: dict) -> str:
    if cell["status"] != "ok":
        return cell["status"]
    return f"{cell['tflops']:.1f}"


def _line(row: dict, mm: dict) -> str:
    p, k = row["portable"], row["kernel"]
    ratio = (f"{p['tflops'] / k['tflops']:.2f}" if p["status"] == k["status"] == "ok"
             else "-")
    share = (f"{p['tflops'] / mm['tflops']:.0%}" if p["status"] == mm["status"] == "ok"
             else "-")
    mem = f"{p['extra_mib']:.0f}" if "extra_mib" in p else "-"
    c = "causal" if row["causal"] else ""
    return (f"| {row['framework']} | {row['N']} | {c} | {_tf(p)} | {_tf(k)} | {ratio} | "
            f"{share} | {mem} |")


HEADER = ("| framework | N | | attnspec TFLOP/s | kernel TFLOP/s | attnspec / kernel | "
          "% bf16 matmul | attnspec extra MiB |\n|---|---|---|---|---|---|---|---|")


def targets(doc: dict) -> list[dict]:
    """PASS/MISS rows: portable >= 40% of SDPA's throughput at N >= 4096 (torch), and no
    OOM or error of the portable path up to the largest N."""
    rows = [r for r in doc["rows"] if r["framework"] == "torch"]
    ratios = [(r["portable"]["tflops"] / r["kernel"]["tflops"], r["N"], r["causal"])
              for r in rows if r["N"] >= TARGET_FROM_N and r["portable"]["status"] == "ok"
              and r["kernel"]["status"] == "ok"]
    out = []
    if ratios:
        worst = min(ratios)
        out.append({"id": "gpu-vs-sdpa", "threshold": f">= {TARGET_RATIO:.2f}",
                    "measured": round(worst[0], 3),
                    "worst": f"N={worst[1]}{' causal' if worst[2] else ''}",
                    "status": "PASS" if worst[0] >= TARGET_RATIO else "MISS"})
    else:
        out.append({"id": "gpu-vs-sdpa", "threshold": f">= {TARGET_RATIO:.2f}",
                    "status": "n/a", "note": f"no torch row with N >= {TARGET_FROM_N}"})
    failed = [f"{r['framework']} N={r['N']}: {r['portable']['status']}" for r in doc["rows"]
              if r["portable"]["status"] in ("OOM", "error")]
    out.append({"id": "gpu-no-oom", "threshold": f"portable completes to N={max(doc['sizes'])}",
                "status": "MISS" if failed or not doc["rows"] else "PASS",
                "failed": failed})
    return out


def markdown(doc: dict) -> str:
    lines = [f"bf16 (CuPy: float16), B=1, H={doc['H']}, D={doc['D']}; "
             f"{'DRY RUN on the CPU: figures mean nothing' if doc['dry_run'] else 'GPU'}", ""]
    for name, fw in doc["frameworks"].items():
        mm = fw["matmul"]
        lines.append(f"- {name} {fw['version']} ({fw['device']}): matmul "
                     f"{mm.get('tflops', float('nan')):.1f} TFLOP/s")
    for s in doc["skipped"]:
        lines.append(f"- {s['framework']}: not measured ({s['reason']})")
    lines += ["", HEADER]
    for r in doc["rows"]:
        lines.append(_line(r, doc["frameworks"][r["framework"]]["matmul"]))
    lines += ["", "| target | threshold | measured | status |", "|---|---|---|---|"]
    for t in doc["targets"]:
        measured = t.get("measured", t.get("worst", "")) if t["id"] == "gpu-vs-sdpa" else (
            ", ".join(t["failed"]) or "none failed")
        if t["id"] == "gpu-vs-sdpa" and "worst" in t:
            measured = f"{t['measured']:.2f} ({t['worst']})"
        lines.append(f"| {t['id']} | {t['threshold']} | {measured} | {t['status']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="gpu-results", help="folder for gpu-bench.json/.md")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: checks the script")
    p.add_argument("--sizes", type=int, nargs="+", help="sequence lengths (default 1k..64k)")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--budget", type=float, default=50.0,
                   help="seconds per framework; sizes past it are reported as skipped")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = run(args)
    (out / "gpu-bench.json").write_text(json.dumps(doc, indent=1))
    text = markdown(doc)
    (out / "gpu-bench.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
