"""JAX on an 8-device mesh, run by ``tests/test_distributed.py`` in a fresh interpreter.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` only takes effect if it is set before
JAX initialises its backend, and the pytest process has initialised JAX long before (the
conftest enables float64), so the mesh runs here, in a subprocess started with the flag.

Usage: ``python tests/distributed_jax_script.py INPUTS.npz OUT_DIR``. Reads the float64
problem from ``INPUTS.npz``; writes ``OUT_DIR/results.npz`` (every output, named
``<dtype>/<run>/<out|lse>``) and ``OUT_DIR/facts.json`` (device count, output shardings,
per-device shard shapes, the collectives in each compiled program). The test file does
every comparison (against the single-device run and the float64 oracle); this script only
computes.

Runs:

* ``single``: one jitted call on one device (the unsharded result), direct path.
* ``sharded_direct`` / ``sharded_chunked``: batch x heads split over a 4 x 2 mesh,
  ``chunk_size=0`` and ``(16, 8)``; mask, lower-right causal, kv_lengths, GQA, lse.
* ``single_ring``: the ring's problem (global causal, kv_lengths, GQA) on one device.
* ``ring``: keys/values (and queries) split over the 8 devices along the sequence; the true
  ring (``ppermute`` + :func:`attnspec.merge`).
* ``allgather``: keys/values split, partial ``(out, lse)`` all-gathered and merged.

Every run in float64; ``FLOAT32_RUNS`` also in float32 (each program costs a compile).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from functools import partial
from pathlib import Path

FLOAT32_RUNS = ("single", "single_ring", "ring", "sharded_direct")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ring_attention_jax.py"
COLLECTIVES = r"\b(all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter)(?:-start)?\("


def _example():
    spec = importlib.util.spec_from_file_location("ring_attention_jax", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _collectives(hlo: str) -> list[str]:
    """The collective operations in a compiled program's HLO text."""
    return sorted(set(re.findall(COLLECTIVES, hlo)))


def _spec(x) -> str:
    """The array's PartitionSpec, or the name of its sharding when it has none."""
    spec = getattr(x.sharding, "spec", None)
    return type(x.sharding).__name__ if spec is None else str(tuple(spec))


def main(inputs: str, out_dir: str) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh

    import attnspec

    jax.config.update("jax_enable_x64", True)
    ra = _example()
    data = np.load(inputs)
    devices = np.array(jax.devices())
    facts: dict = {"devices": int(devices.size), "platform": jax.default_backend(),
                   "shardings": {}, "shard_shapes": {}, "collectives": {}}
    results: dict[str, np.ndarray] = {}
    if devices.size != 8:
        Path(out_dir, "facts.json").write_text(json.dumps(facts))
        return 0
    grid = Mesh(devices.reshape(4, 2), ("batch", "heads"))
    ring_mesh = Mesh(devices, ("seq",))
    options = dict(causal=True, alignment="lower_right", return_lse=True)

    single = jax.jit(partial(attnspec.scaled_dot_product_attention, chunk_size=0, **options))
    single_ring = jax.jit(partial(attnspec.scaled_dot_product_attention, causal=True,
                                  return_lse=True, chunk_size=0))
    ring = jax.jit(partial(ra.ring_attention, mesh=ring_mesh, causal=True))
    allgather = jax.jit(partial(ra.allgather_attention, mesh=ring_mesh, causal=True))

    for dtype in ("float64", "float32"):
        q, k, v = (jnp.asarray(data[n], dtype=dtype) for n in ("q", "k", "v"))
        mask, lengths = jnp.asarray(data["mask"]), jnp.asarray(data["kv_lengths"])
        runs = {
            "single": (single, (q, k, v), dict(mask=mask, kv_lengths=lengths)),
            "single_ring": (single_ring, (q, k, v), dict(kv_lengths=lengths)),
            "ring": (ring, (q, k, v), dict(kv_lengths=lengths)),
            "allgather": (allgather, (q, k, v), dict(kv_lengths=lengths)),
        }
        for name, chunk in (("sharded_direct", 0), ("sharded_chunked", (16, 8))):
            fn = ra.sharded_attention_fn(grid, mask=False, kv_lengths=True, chunk_size=chunk,
                                         **options)
            runs[name] = (fn, (q, k, v, mask, lengths), {})
        if dtype == "float32":  # the float32 sweep: one run of each kind (compile time)
            runs = {n: r for n, r in runs.items() if n in FLOAT32_RUNS}
        for name, (fn, args, kwargs) in runs.items():
            t0 = time.perf_counter()
            compiled = fn.lower(*args, **kwargs).compile()
            out, lse = compiled(*args, **kwargs)
            print(dtype, name, f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)
            results[f"{dtype}/{name}/out"] = np.asarray(out)
            results[f"{dtype}/{name}/lse"] = np.asarray(lse)
            if dtype == "float32":
                continue
            facts["shardings"][name] = [_spec(out), _spec(lse)]
            facts["shard_shapes"][name] = sorted({tuple(s.data.shape)
                                                  for s in out.addressable_shards})
            facts["collectives"][name] = _collectives(compiled.as_text())
    np.savez(Path(out_dir, "results.npz"), **results)
    Path(out_dir, "facts.json").write_text(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
