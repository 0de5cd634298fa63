"""How ``benchmarks/targets.py`` and ``benchmarks/paired.py`` turn measurements into
verdicts, on results documents and clocks built here (no timing of this machine is
asserted): the targets a composition cannot reach carry the ``hand`` ceiling's figures, the
kernel targets use the paired ratio where there is one, and a paired ratio is the median
of alternating rounds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # paired.py imports cases and configs
    try:
        spec = importlib.util.spec_from_file_location(f"_attnspec_bench_{name}",
                                                      ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _targets():
    return _load("targets")


def _row(backend, b, n, causal, variants):
    config = {"B": b, "H": 8, "Lq": n, "Lk": n, "D": 64, "causal": causal,
              "dtype": "float32", "role": "sweep"}
    return {"backend": backend, "config": config, "label": f"{b} {n} {causal}",
            "variants": {name: {"status": "ok", **v} for name, v in variants.items()}}


def _doc(with_hand: bool) -> dict:
    hand_np = {"hand": {"time_s": 1.0, "fraction_of_matmul": 0.36}} if with_hand else {}
    results = [
        _row("numpy", 2, 1024, False, {"auto": {"time_s": 1.5, "fraction_of_matmul": 0.24},
                                        **hand_np}),
        _row("torch-cpu", 1, 512, False, {"auto": {"time_s": 2.0}, "kernel": {"time_s": 1.0},
                                          **({"hand": {"time_s": 1.2}} if with_hand else {})}),
        _row("torch-cpu", 1, 1024, True, {"auto": {"time_s": 3.0}, "kernel": {"time_s": 1.0},
                                          **({"hand": {"time_s": 1.8}} if with_hand else {})}),
    ]
    return {"results": results, "features": {"implementation": True},
            "machine": {}}


def test_notes_carry_the_hand_figures() -> None:
    rows = {t["id"]: t for t in _targets().evaluate(_doc(with_hand=True))}
    assert rows["numpy-vs-matmul"]["status"] == "MISS"
    assert rows["numpy-vs-matmul"]["note"] == "written by hand in NumPy: 36%"
    assert rows["torch-vs-sdpa"]["measured"] == 3.0
    assert rows["torch-vs-sdpa"]["note"] == ("written by hand in eager torch: 1.20-1.80x SDPA, "
                                             "1/2 within 1.5x")


def test_no_note_without_hand() -> None:
    rows = {t["id"]: t for t in _targets().evaluate(_doc(with_hand=False))}
    assert "note" not in rows["numpy-vs-matmul"]
    assert "note" not in rows["torch-vs-sdpa"]


def test_kernel_targets_use_the_paired_ratio() -> None:
    """Separate timings say 3.0x; the alternating rounds say 1.4x: the verdict is the
    paired one, and a variant without a paired ratio keeps the separate timings."""
    doc = _doc(with_hand=False)
    auto = doc["results"][2]["variants"]["auto"]
    auto["paired"] = {"status": "ok", "ratio_to_kernel": 1.4}
    native = {"status": "ok", "time_s": 1.0,
              "paired": {"status": "ok", "ratio_to_kernel": 1.25}}
    doc["results"][2]["variants"]["native"] = native
    rows = {t["id"]: t for t in _targets().evaluate(doc)}
    assert rows["torch-vs-sdpa"]["measured"] == 2.0  # the unpaired (1,8,512) row: 2.0 / 1.0
    assert [c["value"] for c in rows["torch-vs-sdpa"]["cases"]] == [2.0, 1.4]
    assert rows["native-vs-kernel"]["measured"] == pytest.approx(0.8)  # 1 / 1.25
    auto["paired"] = {"status": "error", "reason": "RuntimeError: boom"}
    rows = {t["id"]: t for t in _targets().evaluate(doc)}
    assert [c["value"] for c in rows["torch-vs-sdpa"]["cases"]] == [2.0, 3.0]


class _Clock:
    """A clock the two callables advance: ``a`` costs 2 units a call, but 10 in round 3
    (a disturbed round); ``b`` costs 1."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def a(self) -> None:
        self.calls.append("a")
        self.now += 10.0 if self.calls.count("a") == 4 else 2.0

    def b(self) -> None:
        self.calls.append("b")
        self.now += 1.0


def test_paired_ratio_is_the_median_of_alternating_rounds(monkeypatch) -> None:
    paired = _load("paired")
    clock = _Clock()
    monkeypatch.setattr(paired.time, "perf_counter", lambda: clock.now)
    res = paired.paired_ratio(clock.a, clock.b, rounds=5, round_s=0.0)
    # one calibration call each, then a b | b a | a b | b a | a b
    assert clock.calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]
    assert res["ratios"] == [2.0, 2.0, 10.0, 2.0, 2.0]
    assert res["ratio"] == 2.0  # the median: one disturbed round does not decide
    assert (res["time_s"], res["kernel_time_s"]) == (2.0, 1.0)
    with pytest.raises(ValueError, match="rounds"):
        paired.paired_ratio(clock.a, clock.b, rounds=0, round_s=0.0)


def test_a_pair_that_fails_is_recorded_and_the_others_go_on(monkeypatch) -> None:
    """A kernel or variant that raises while pairing leaves an error on its own pairs; the
    other rows are still paired (a benchmark run is never lost to one measurement)."""
    paired = _load("paired")
    clock = _Clock()
    calls = {"kernel": clock.b, "auto": clock.a}

    def attention_call(backend, cfg, variant, block, qkv):
        if backend == "broken-kernel" and variant == "kernel":
            raise RuntimeError("CUDA out of memory")
        if variant == "native":
            raise ValueError("no such keyword")
        return calls[variant]

    monkeypatch.setattr(paired.cases, "inputs", lambda backend, cfg: None)
    monkeypatch.setattr(paired.cases, "attention_call", attention_call)
    monkeypatch.setattr(paired.time, "perf_counter", lambda: clock.now)
    ok = {"status": "ok", "time_s": 1.0}
    results = [_row("broken-kernel", 1, 512, False, {"auto": ok, "kernel": ok}),
               _row("torch-cpu", 1, 512, False, {"auto": dict(ok), "native": dict(ok),
                                                 "kernel": ok})]
    paired.measure(results, 512, rounds=3, round_s=0.0)
    broken = results[0]["variants"]["auto"]["paired"]
    assert broken["status"] == "error"
    assert "CUDA out of memory" in broken["reason"]
    good = results[1]["variants"]
    assert good["auto"]["paired"]["status"] == "ok"
    assert good["auto"]["paired"]["rounds"] == 3
    assert good["native"]["paired"] == {"status": "error",
                                        "reason": "ValueError: no such keyword"}
    assert "paired" not in good["kernel"]
