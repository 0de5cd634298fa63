"""KV caches and moving bands: does a call cost its real keys, not its cache? (issue 16)

Three forms a serving loop calls, each against the same attention on only the keys that
matter (the "trimmed" call, which attnspec should approach), measured in the same run:

* decode -- one query row per sequence against a preallocated cache of ``--slots`` slots
  with ``kv_lengths`` well below it (ATT-LEN-1); trimmed: the cache cut at the longest
  length;
* window -- one query row with a sliding window of 1024 keys over the whole cache
  (``alignment="lower_right"``, ATT-WINDOW-1); trimmed: the last 1024 keys, no window;
* prefill -- causal over a padded batch with ``kv_lengths = q_lengths`` and
  ``alignment="lower_right"`` (the diagonal read from the lengths); trimmed: the same
  call with ``upper_left`` and no lengths for the longest sequence.

Every pair is checked to agree before it is timed. On torch, SDPA with the boolean mask a
native user would pass for the same call is measured too. Printed: milliseconds, the ratio
to the trimmed call and PASS/MISS against ``<= 1.5x``::

    python benchmarks/kvcache.py            # H=8, D=128, 32768 slots, float32
    python benchmarks/kvcache.py --tiny     # a smoke run in seconds
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

TARGET = 1.5  # cache call / trimmed call
WINDOW = 1024


def forms(batch: int, heads: int, slots: int, dim: int, prefill: int,
          rng: np.random.Generator) -> list[dict[str, Any]]:
    """Each form: the cache call and the trimmed call as (arrays, options), and the keep-mask
    of the cache call for a native framework, ``(B, 1, Lq, Lk)``."""
    lengths = rng.integers(slots // 32, slots // 8, size=batch)
    q1 = rng.standard_normal((batch, heads, 1, dim)).astype(np.float32)
    k, v = (rng.standard_normal((batch, heads, slots, dim)).astype(np.float32)
            for _ in range(2))
    longest = int(lengths.max())
    j = np.arange(slots)
    decode_keep = (j < lengths[:, None])[:, None, None, :]
    window_keep = np.broadcast_to(j >= slots - WINDOW, (batch, 1, 1, slots))
    pre_lengths = np.array([prefill] + [prefill * 2 // 3] * (batch - 1))
    qp, kp, vp = (rng.standard_normal((batch, heads, prefill, dim)).astype(np.float32)
                  for _ in range(3))
    i = np.arange(prefill)
    real = i < pre_lengths[:, None]
    # lower_right with kv = q lengths puts each entry's diagonal at offset 0.
    prefill_keep = (real[:, None, :, None] & real[:, None, None, :]
                    & (i[None, :] <= i[:, None])[None, None])
    return [
        {"form": "decode", "what": f"B={batch} Lq=1, {slots} slots, lengths <= {longest}",
         "cache": ((q1, k, v), {"kv_lengths": lengths}),
         "trimmed": ((q1, k[..., :longest, :], v[..., :longest, :]),
                     {"kv_lengths": lengths}),
         "keep": decode_keep},
        {"form": "window", "what": f"B={batch} Lq=1, window {WINDOW} of {slots} slots",
         "cache": ((q1, k, v), {"window": (WINDOW - 1, 0), "alignment": "lower_right"}),
         "trimmed": ((q1, k[..., -WINDOW:, :], v[..., -WINDOW:, :]), {}),
         "keep": window_keep},
        {"form": "prefill", "what": f"B={batch} causal N={prefill}, lengths {pre_lengths.tolist()}",
         "cache": ((qp, kp, vp), {"causal": True, "alignment": "lower_right",
                                  "kv_lengths": pre_lengths, "q_lengths": pre_lengths}),
         "trimmed": ((qp, kp, vp), {"causal": True}),
         "keep": prefill_keep},
    ]


def measure(backend: str, form: dict[str, Any], rounds: int) -> dict[str, Any]:
    from attnspec.backends import get

    xb = get(backend)
    if not xb.available:
        return {"backend": backend, "form": form["form"], "status": f"n/a: {xb.reason}"}

    def call(which: str) -> Any:
        arrays, options = form[which]
        args = [xb.from_numpy(x, "float32") for x in arrays]
        opts = {name: xb.from_numpy(x) if isinstance(x, np.ndarray) else x
                for name, x in options.items()}
        return lambda: xb.synchronize(attnspec.scaled_dot_product_attention(*args, **opts))

    cache, trimmed = call("cache"), call("trimmed")
    got, want = xb.to_numpy(cache()), xb.to_numpy(trimmed())
    if form["form"] == "prefill":  # padded rows are 0 in the cache call; compare the real ones
        lengths = form["cache"][1]["q_lengths"]
        for b, n in enumerate(lengths):
            np.testing.assert_allclose(got[b, :, :n], want[b, :, :n], rtol=2e-4, atol=2e-5)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    row = {"backend": backend, "form": form["form"], "what": form["what"], "status": "ok",
           "cache_s": best(cache, rounds), "trimmed_s": best(trimmed, rounds)}
    if backend.startswith("torch"):
        import torch

        q, k, v = (torch.from_numpy(np.ascontiguousarray(x)) for x in form["cache"][0])
        keep = torch.from_numpy(np.ascontiguousarray(form["keep"]))
        sdpa = torch.nn.functional.scaled_dot_product_attention
        row["sdpa_s"] = best(lambda: sdpa(q, k, v, attn_mask=keep), rounds)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shapes, one round")
    parser.add_argument("--backend", action="append", help="numpy, torch-cpu, ... (repeat)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slots", type=int, default=32768, help="cache slots (Lk)")
    args = parser.parse_args(argv)
    batch, heads, slots, dim, prefill = ((2, 2, 2048, 16, 128) if args.tiny
                                         else (4, 8, args.slots, 128, 1024))
    rounds = 1 if args.tiny else args.rounds
    rng = np.random.default_rng(0)
    all_forms = forms(batch, heads, slots, dim, prefill, rng)
    print(f"H={heads} D={dim} float32, best of {rounds}; target: cache call <= {TARGET}x "
          "the trimmed call")
    print(f"{'backend':<10} {'form':<8} {'cache ms':>9} {'trimmed ms':>11} {'ratio':>6} "
          f"{'status':>6} {'SDPA+mask ms':>13}  shape")
    misses = 0
    for backend in args.backend or ["numpy", "torch-cpu"]:
        for form in all_forms:
            r = measure(backend, form, rounds)
            if r["status"] != "ok":
                print(f"{backend:<10} {form['form']:<8} {r['status']}")
                continue
            ratio = r["cache_s"] / r["trimmed_s"]
            status = "PASS" if ratio <= TARGET else "MISS"
            misses += status == "MISS"
            sdpa = f"{r['sdpa_s'] * 1e3:.3f}" if "sdpa_s" in r else "-"
            print(f"{backend:<10} {r['form']:<8} {r['cache_s'] * 1e3:>9.3f} "
                  f"{r['trimmed_s'] * 1e3:>11.3f} {ratio:>6.2f} {status:>6} {sdpa:>13}  "
                  f"{r['what']}")
    print(f"{misses} MISS" if misses else "every form PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
