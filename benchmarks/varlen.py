"""Packed varlen vs padded: does a packed batch cost its real tokens? (issue 13, ATT-SEG-1)

The same sequences, causal, run two ways through attnspec's portable path:

* padded -- ``(B, H, L, D)`` with ``kv_lengths`` / ``q_lengths``: every padded position is
  computed and masked;
* packed -- one row ``(1, H, total, D)`` of the real tokens with segment ids: the chunked
  path skips the blocks that share no segment (on eager arrays).

and, on torch, the framework's own padded call (SDPA with a boolean mask) measured in the
same run. Printed: seconds, ``packed / padded`` and ``real tokens / padded tokens``; the
target is a packed time near the real-token fraction of the padded time (about half for
50% padding) or below it (causal work grows with the square of a sequence's length)::

    python benchmarks/varlen.py            # B=8, L=2048, H=8, D=64, float32
    python benchmarks/varlen.py --tiny     # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from timing import best

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attnspec


def lengths_for(batch: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Sequence lengths between 10% and 90% of ``length``, half of the padded tokens real."""
    lengths = rng.integers(length // 10, 9 * length // 10, size=batch)
    return np.clip((lengths * (batch * length / 2) / lengths.sum()).astype(int), 1, length)


def measure(backend: str, batch: int, heads: int, length: int, dim: int, rounds: int,
            seed: int = 0) -> dict[str, Any]:
    from attnspec.backends import get

    xb = get(backend)
    if not xb.available:
        return {"backend": backend, "status": f"n/a: {xb.reason}"}
    rng = np.random.default_rng(seed)
    lengths = lengths_for(batch, length, rng)
    total = int(lengths.sum())
    q, k, v = (rng.standard_normal((batch, heads, length, dim)).astype(np.float32)
               for _ in range(3))
    real = np.arange(length) < lengths[:, None]
    packed = [np.concatenate([x[b, :, :n] for b, n in enumerate(lengths)], axis=1)[None]
              for x in (q, k, v)]
    ids = np.repeat(np.arange(batch), lengths)
    padded_args = [xb.from_numpy(x, "float32") for x in (q, k, v)]
    packed_args = [xb.from_numpy(x, "float32") for x in packed]
    lens, seg = xb.from_numpy(lengths), xb.from_numpy(ids)

    def padded() -> Any:
        return xb.synchronize(attnspec.scaled_dot_product_attention(
            *padded_args, causal=True, kv_lengths=lens, q_lengths=lens))

    def varlen() -> Any:
        return xb.synchronize(attnspec.scaled_dot_product_attention(
            *packed_args, causal=True, q_segment_ids=seg, kv_segment_ids=seg))

    # Same answers first: the packed rows are the padded call's real rows.
    want = xb.to_numpy(padded())
    got = xb.to_numpy(varlen())[0]
    start = 0
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(got[:, start:start + n], want[b, :, :n], rtol=2e-4,
                                   atol=2e-5)
        start += n
    row = {"backend": backend, "status": "ok", "tokens_real": total,
           "tokens_padded": batch * length, "padded_s": best(padded, rounds),
           "packed_s": best(varlen, rounds)}
    if backend.startswith("torch"):
        import torch

        keep = torch.from_numpy(real[:, None, :, None] & real[:, None, None, :]
                                & np.tril(np.ones((length, length), bool)))
        tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
        row["native_padded_s"] = best(
            lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv,
                                                                     attn_mask=keep), rounds)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shapes, one round")
    parser.add_argument("--backend", action="append", help="numpy, torch-cpu, ... (repeat)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    batch, heads, length, dim = (4, 2, 128, 16) if args.tiny else (8, 8, 2048, 64)
    rounds = 1 if args.tiny else args.rounds
    print(f"causal, B={batch} H={heads} L={length} D={dim} float32, best of {rounds}")
    print(f"{'backend':<12} {'padded s':>9} {'packed s':>9} {'packed/padded':>14} "
          f"{'real/padded tokens':>19} {'torch SDPA padded s':>20}")
    for backend in args.backend or ["numpy", "torch-cpu"]:
        r = measure(backend, batch, heads, length, dim, rounds)
        if r["status"] != "ok":
            print(f"{backend:<12} {r['status']}")
            continue
        native = f"{r['native_padded_s']:.3f}" if "native_padded_s" in r else "-"
        print(f"{backend:<12} {r['padded_s']:>9.3f} {r['packed_s']:>9.3f} "
              f"{r['packed_s'] / r['padded_s']:>14.2f} "
              f"{r['tokens_real'] / r['tokens_padded']:>19.2f} {native:>20}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
