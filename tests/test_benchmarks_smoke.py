"""The benchmark harness runs end to end and writes a well-formed results file.

``benchmarks/run.py --tiny`` on tiny shapes, one round each. Only the structure of what it
writes is checked: timing figures are never asserted (they depend on the machine and on
whatever else runs on it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: A slow suite: `python -m pytest -m slow` (CI runs it; the default run leaves it out).
pytestmark = pytest.mark.slow

pytest.importorskip("pytest_benchmark", reason="the harness needs pytest-benchmark")

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
STATUSES = {"ok", "n/a", "error", "skipped", "memory-only"}


def _targets_module():
    spec = importlib.util.spec_from_file_location("_attnspec_bench_targets",
                                                  ROOT / "benchmarks" / "targets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_available() -> bool:
    from attnspec.backends import get

    return get("torch-cpu").available


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    out = tmp_path_factory.mktemp("bench")
    backends = ["--backend", "numpy"]
    if _torch_available():
        backends += ["--backend", "torch-cpu"]  # a framework with a kernel: ratios
    cmd = [sys.executable, str(RUN), "--tiny", *backends, "--threads", "1",
           "--json", str(out / "r.json"), "--plot", str(out / "r.png"),
           "--markdown", str(out / "r.md")]
    # Without xdist's worker variables: pytest-benchmark reads PYTEST_XDIST_WORKER and would
    # disable itself in the harness's own pytest run (the default run uses two workers).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          cwd=out, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "r.json").read_text()), out, proc.stdout


def test_document_header(run) -> None:
    doc, _, _ = run
    assert doc["schema"] == "attnspec-benchmarks/1"
    assert doc["mode"] == "tiny"
    assert doc["backends"][0] == "numpy"
    assert set(doc["features"]) == {"chunk_size", "implementation", "merge"}
    for key in ("python", "cpu_count", "versions", "loadavg_start", "loadavg_end"):
        assert key in doc["conditions"]


def test_machine_rates(run) -> None:
    machine = run[0]["machine"]
    numpy_mm = machine["matmul"]["numpy"]
    assert numpy_mm["status"] == "ok", numpy_mm
    assert {"n", "gflops", "time_s", "stats"} <= set(numpy_mm)
    assert machine["memcpy"]["numpy"]["status"] == "ok"
    assert "matmul_cpu_gflops" in machine
    assert "memcpy_cpu_bytes_per_s" in machine


def test_results(run) -> None:
    doc = run[0]
    roles = {r["config"]["role"] for r in doc["results"]}
    assert {"sweep", "causal", "decode", "overhead", "memory"} <= roles
    for r in doc["results"]:
        assert {"backend", "config", "label", "flop", "variants"} <= set(r)
        assert set(r["config"]) == {"B", "H", "Lq", "Lk", "D", "causal", "dtype", "role"}
        for name, v in r["variants"].items():
            where = f"{r['backend']} {r['label']} {name}"
            assert v["status"] in STATUSES, where
            assert v["status"] != "error", f"{where}: {v.get('reason')}"
            if v["status"] == "ok":
                assert v["time_s"] > 0, where
                assert {"gflops", "stats", "fraction_of_matmul"} <= set(v), where
                if sys.platform == "linux":  # getrusage's fault count
                    assert v["minor_faults_per_call"] >= 0, where
                assert v["stats"]["rounds"] >= 1, where
            if v["status"] == "n/a":
                assert v["reason"], where
            mem = v.get("memory")
            if mem is not None:
                assert mem["status"] in STATUSES, where
                assert mem["status"] != "error", f"{where}: {mem.get('reason')}"
                if mem["status"] == "ok":
                    assert mem["peak_extra_bytes"] >= 0, where


def test_variants_per_backend(run) -> None:
    doc = run[0]
    sweep = [r for r in doc["results"] if r["config"]["role"] == "sweep"]
    numpy_rows = [r for r in sweep if r["backend"] == "numpy"]
    assert numpy_rows
    for r in numpy_rows:
        assert r["variants"]["kernel"]["status"] == "n/a"  # NumPy has no attention kernel
        assert r["variants"]["auto"]["status"] == "ok"
        assert r["variants"]["hand"]["status"] == "ok"  # the ceiling of a composition
        assert r["variants"]["auto"]["memory"]["status"] == "ok"
    overhead = next(r for r in doc["results"]
                    if r["config"]["role"] == "overhead" and r["backend"] == "numpy")
    assert overhead["variants"]["bare"]["status"] == "ok"
    for r in sweep:
        if r["backend"] == "torch-cpu":
            assert r["variants"]["kernel"]["status"] == "ok"
            assert r["variants"]["hand"]["status"] == "ok"
            for name in ("auto", "native", "hand"):  # alternating rounds with the kernel
                pair = r["variants"][name]["paired"]
                assert pair["status"] == "ok", pair
                assert pair["ratio_to_kernel"] > 0
                assert len(pair["ratios"]) == pair["rounds"]
            assert r["variants"]["auto"]["ratio_to_kernel"] > 0
    feats = doc["features"]
    for r in sweep:
        for name in ("direct", "chunked"):
            assert (r["variants"][name]["status"] == "ok") == feats["chunk_size"]


def test_targets(run) -> None:
    doc = run[0]
    expected = [t[0] for t in _targets_module().TARGETS]
    assert [t["id"] for t in doc["targets"]] == expected
    for t in doc["targets"]:
        assert t["status"] in {"PASS", "MISS", "n/a"}, t
        assert t["threshold"]
        if t["status"] == "n/a":
            assert t["note"]


def test_outputs(run) -> None:
    _, out, stdout = run
    assert "== targets" in stdout
    md = (out / "r.md").read_text()
    assert "| target |" in md
    assert "| backend |" in md
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "no plot: matplotlib is not installed" in stdout


def test_varlen_benchmark_runs_and_checks_its_answers() -> None:
    """``benchmarks/varlen.py --tiny``: the packed and padded calls agree (the script asserts
    it before timing) and a row per backend is printed; the figures are not asserted."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "varlen.py"), "--tiny",
                           "--backend", "numpy"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("numpy"))
    tokens = float(row.split()[4])  # the times (columns 1-3) are printed, never asserted
    assert 0.3 < tokens < 0.7  # about half the padded tokens are real


def test_kvcache_benchmark_runs_and_checks_its_answers() -> None:
    """``benchmarks/kvcache.py --tiny``: for each form (decode over a preallocated cache, a
    sliding-window decode, a padded causal prefill) the cache call and the trimmed call
    agree (the script asserts it before timing) and a row with a ratio and a PASS/MISS is
    printed; the figures are not asserted."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kvcache.py"), "--tiny",
                           "--backend", "numpy"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("numpy")]
    assert [row[1] for row in rows] == ["decode", "window", "prefill"]
    for row in rows:
        assert float(row[4]) == pytest.approx(float(row[2]) / float(row[3]), rel=0.2)
        assert row[5] in ("PASS", "MISS")


def test_exp_underflow_benchmark_prints_a_row_per_input() -> None:
    """``benchmarks/exp_underflow.py``: three rows (ordinary, -inf, subnormal arguments) per
    library, each with a time per element and a ratio to the ordinary case; the figures
    themselves are not asserted."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "exp_underflow.py")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("numpy")]
    assert len(rows) == 3
    assert rows[0].endswith("1.0x")  # the ordinary case against itself
    assert all("ns/element" in row for row in rows)


def test_compiled_variant_is_compiled_attention(monkeypatch) -> None:
    """The ``compiled`` variant (not run by ``--tiny``) times ``torch.compile`` of attnspec:
    its callable gives the attention of its inputs (a float64 closed form), and Dynamo
    compiled something for it (an eager fallback would be timed as compiled)."""
    if not _torch_available():
        pytest.skip("torch-cpu: torch is not installed")
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("torch.compile's CPU code generation needs a C++ compiler; none on PATH")
    import numpy as np
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    try:
        import cases
        from configs import Config

        cfg = Config(B=1, H=2, Lq=8, Lk=8, D=4, causal=True)
        q, k, v = cases.inputs("torch-cpu", cfg)
        counters = torch._dynamo.utils.counters
        counters.clear()
        out = cases.attention_call("torch-cpu", cfg, "compiled", qkv=(q, k, v))()
    finally:  # the harness's generic module names must not shadow others later
        for name in ("cases", "configs"):
            sys.modules.pop(name, None)
    assert counters["stats"]["unique_graphs"] >= 1, "nothing was compiled"
    qd, kd, vd = (x.double().numpy() for x in (q, k, v))
    s = qd @ np.swapaxes(kd, -1, -2) / 2.0
    s = np.where(np.tril(np.ones((8, 8), bool)), s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    expected = (w / w.sum(-1, keepdims=True)) @ vd
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-5, atol=1e-6)
