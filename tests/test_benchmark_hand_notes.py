"""The targets a composition cannot reach say what the ``hand`` ceiling reached beside them
(``benchmarks/targets.py``), from a results document built here: the note carries the
hand-written figures of that document, and is absent when ``hand`` was not measured."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _targets():
    spec = importlib.util.spec_from_file_location("_attnspec_bench_targets_notes",
                                                  ROOT / "benchmarks" / "targets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
