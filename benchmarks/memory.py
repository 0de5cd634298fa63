"""Peak memory of one call, measured in a fresh subprocess.

Parent side: :func:`measure` writes a job file, runs ``python benchmarks/memory.py JOB OUT``
and reads the answer. Child side (``main``): build the inputs, then for each variant

1. warm up (a tiny call initialises BLAS thread buffers; JAX also compiles the real shape),
2. note the resident set size (inputs resident, nothing else of size),
3. reset the kernel's high-water mark (``/proc/self/clear_refs``: "5"),
4. call once, synchronise, read ``VmHWM``.

``peak_extra = VmHWM - RSS before the call - output bytes`` is the working memory the call
needed above its inputs and its output. glibc is told (``MALLOC_MMAP_THRESHOLD_``) to serve
every allocation above 64 KiB with ``mmap``, so freed blocks leave the resident set at once
and a warm-up's garbage cannot hide a later peak. Where ``clear_refs`` is missing (not
Linux), each variant runs in its own process without a full-size warm-up and
``ru_maxrss`` stands in for ``VmHWM``. CUDA backends report device memory instead
(``torch.cuda.max_memory_allocated``; JAX ``peak_bytes_in_use``); CuPy has no peak counter.

NumPy children run under ``RLIMIT_AS`` (half the memory available at the start), so a
direct path that would not fit raises ``MemoryError`` instead of swapping the machine; the
other frameworks reserve address space up front, so for them a direct path whose score
matrices would not fit is skipped by prediction.
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536",
               "MALLOC_TOP_PAD_": "0"}


# -- platform probes ---------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def can_reset_peak() -> bool:
    """Whether this kernel lets a process reset its own RSS high-water mark."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def available_bytes() -> int:
    """``MemAvailable`` (Linux), else total physical memory."""
    kib = None
    try:
        m = re.search(r"^MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
        kib = int(m.group(1)) if m else None
    except OSError:
        pass
    if kib is not None:
        return kib * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    return _maxrss_bytes()


def _maxrss_bytes() -> int:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


# -- parent side -------------------------------------------------------------------------------


def measure(backend: str, items: list[tuple[dict, list[str]]], *, block, warm_full: bool,
            budget_bytes: int, timeout: float) -> list[dict]:
    """Run one child for ``items`` (``(config dict, variants)``) and return its records.

    A child that dies (killed, crashed, timed out) gives an ``error`` record per variant.
    """
    job = {"backend": backend, "items": [{"config": c, "variants": v} for c, v in items],
           "block": block, "warm_full": warm_full, "budget_bytes": budget_bytes,
           "reset_peak": can_reset_peak()}
    if not job["reset_peak"] and sum(len(v) for _, v in items) > 1:
        # One process per measurement: ru_maxrss cannot be reset.
        out = []
        for c, variants in items:
            for v in variants:
                out += measure(backend, [(c, [v])], block=block, warm_full=False,
                               budget_bytes=budget_bytes, timeout=timeout)
        return out
    with tempfile.TemporaryDirectory(prefix="attnspec-mem-") as tmp:
        job_path, out_path = Path(tmp, "job.json"), Path(tmp, "out.json")
        job_path.write_text(json.dumps(job))
        env = {**os.environ, **_MALLOC_ENV}
        try:
            proc = subprocess.run(
                [sys.executable, str(HERE / "memory.py"), str(job_path), str(out_path)],
                env=env, capture_output=True, text=True, timeout=timeout, check=False,
            )
            failure = None if proc.returncode == 0 else (
                f"child exited {proc.returncode}: {_tail(proc.stderr)}")
        except subprocess.TimeoutExpired:
            failure = f"child timed out after {timeout:.0f} s"
        records = json.loads(out_path.read_text()) if out_path.exists() else []
    done = {(json.dumps(r["config"], sort_keys=True), r["variant"]) for r in records}
    for c, variants in items:
        for v in variants:
            if (json.dumps(c, sort_keys=True), v) not in done:
                records.append({"backend": backend, "config": c, "variant": v,
                                "status": "error", "reason": failure or "no record"})
    return records


def _tail(text: str, n: int = 300) -> str:
    text = text.strip().replace("\n", " | ")
    return text[-n:]


# -- child side --------------------------------------------------------------------------------


def _predicted_direct_bytes(cfg) -> int:
    """Score-matrix bytes of the direct path times the temporaries alive at once (~3)."""
    acc = 8 if cfg.dtype == "float64" else 4
    return 3 * cfg.B * cfg.H * cfg.Lq * cfg.Lk * acc


def _set_numpy_limit(budget: int) -> None:
    import resource

    vm_kib = _status_kib("VmSize")
    if vm_kib is None:
        return
    limit = vm_kib * 1024 + budget
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _nbytes(x) -> int:
    n = getattr(x, "nbytes", None)
    if n is not None:
        return int(n)
    return int(x.numel() * x.element_size())


class _HostMeter:
    def __init__(self, reset_peak: bool):
        self.reset_peak = reset_peak

    def start(self) -> None:
        gc.collect()
        self.base = _rss_bytes()
        self.base_max = _maxrss_bytes()
        if self.reset_peak:
            Path("/proc/self/clear_refs").write_text("5")

    def stop(self) -> dict:
        if self.reset_peak:
            peak = _status_kib("VmHWM") * 1024
            return {"peak_bytes": peak, "base_bytes": self.base, "method": "VmHWM"}
        peak = max(_maxrss_bytes(), self.base)
        return {"peak_bytes": peak, "base_bytes": self.base, "method": "ru_maxrss"}


class _TorchCudaMeter:
    def start(self) -> None:
        import torch

        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()

    def stop(self) -> dict:
        import torch

        return {"peak_bytes": torch.cuda.max_memory_allocated(), "base_bytes": self.base,
                "method": "torch.cuda.max_memory_allocated"}


class _JaxGpuMeter:
    def __init__(self, device):
        self.device = device

    def start(self) -> None:
        gc.collect()
        stats = self.device.memory_stats() or {}
        self.base = stats.get("bytes_in_use", 0)
        self.base_peak = stats.get("peak_bytes_in_use", 0)

    def stop(self) -> dict:
        stats = self.device.memory_stats() or {}
        peak = stats.get("peak_bytes_in_use", 0)
        # No reset: the figure is only meaningful when this call set a new peak.
        return {"peak_bytes": peak, "base_bytes": self.base, "method": "jax peak_bytes_in_use",
                "peak_reliable": peak > self.base_peak}


def _meter(backend: str, reset_peak: bool):
    if backend == "torch-cuda":
        return _TorchCudaMeter()
    if backend == "jax-gpu":
        import jax

        return _JaxGpuMeter(jax.devices("gpu")[0])
    if backend == "cupy":
        return None
    return _HostMeter(reset_peak)


def _materialises(cfg, variant: str, feats: dict) -> bool:
    return variant == "direct" or (variant == "auto" and not feats["chunk_size"])


def _measure_one(backend, cfg, variant, block, budget, feats, meter, warm_full,
                 state) -> dict:
    from cases import attention_call, inputs
    from configs import Config

    if meter is None:
        return {"status": "n/a", "reason": f"{backend}: no peak-memory counter"}
    if _materialises(cfg, variant, feats) and backend != "numpy" and \
            _predicted_direct_bytes(cfg) > budget:
        return {"status": "skipped", "reason": (
            f"direct path would hold ~{_predicted_direct_bytes(cfg) / 2**30:.1f} GiB "
            f"of scores (budget {budget / 2**30:.1f} GiB)")}
    if "qkv" not in state:
        state["qkv"] = inputs(backend, cfg)
    qkv = state["qkv"]
    if not warm_full:  # initialise the libraries (BLAS buffers, thread pools) on a tiny call
        tiny = Config(1, 1, 8, 8, cfg.D, cfg.causal, cfg.dtype)
        attention_call(backend, tiny, variant, block)()
    fn = attention_call(backend, cfg, variant, block, qkv=qkv)
    if warm_full:
        fn()
        if backend.startswith("jax"):
            fn()
    meter.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    m = meter.stop()
    out_bytes = _nbytes(out)
    del out
    return {"status": "ok", "seconds": seconds, "input_bytes": sum(_nbytes(x) for x in qkv),
            "output_bytes": out_bytes, **m,
            "peak_extra_bytes": max(0, m["peak_bytes"] - m["base_bytes"] - out_bytes)}


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    from cases import Unavailable, features
    from configs import Config

    job = json.loads(Path(argv[0]).read_text())
    out_path = Path(argv[1])
    backend = job["backend"]
    block = tuple(job["block"]) if isinstance(job["block"], list) else job["block"]
    budget = job["budget_bytes"]
    feats = features()
    if backend == "numpy":
        _set_numpy_limit(budget)
    records: list[dict] = []

    def flush():
        out_path.write_text(json.dumps(records))

    meter = _meter(backend, job["reset_peak"])
    for item in job["items"]:
        cfg = Config.from_dict(item["config"])
        state: dict = {}
        for variant in item["variants"]:
            rec = {"backend": backend, "config": item["config"], "variant": variant}
            records.append(rec)
            try:
                rec.update(_measure_one(backend, cfg, variant, block, budget, feats, meter,
                                        job["warm_full"], state))
            except Unavailable as exc:
                rec.update(status="n/a", reason=str(exc))
            except MemoryError:
                rec.update(status="error", reason=(
                    f"MemoryError (address-space limit {budget / 2**30:.1f} GiB above start)"))
            except Exception as exc:
                rec.update(status="error", reason=f"{type(exc).__name__}: {exc}"[:300])
            gc.collect()
            flush()
        state.clear()
        gc.collect()
    flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
