"""attnspec on a dask.distributed cluster: the same call, a lazy graph, worker processes.

attnspec on ``dask.array`` inputs returns a Dask graph: nothing is computed until
``.compute()``, and then each (batch, head) chunk is an independent piece of work that
the scheduler hands to whichever worker is free. Chunk the inputs over batch and heads,
never over length or head_dim (a chunked length makes every score block a graph node and
every row a cross-chunk reduction).

This script starts a ``LocalCluster`` of worker *processes* (2 x 1 thread by default),
builds the graph while any compute would fail (a scheduler that raises), computes it on the
cluster and compares with NumPy and float64. ``--address tcp://scheduler:8786`` runs the
same code against an existing (multi-node) cluster instead; ``--bench`` times a larger
problem on 1 and then 2 workers (docs/scaling.md).

Usage: ``python examples/dask_attention.py [--workers N] [--address ADDR] [--bench]``
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

import attnspec

__all__ = ["attention_graph", "chunk_over_batch_heads", "no_compute"]


def chunk_over_batch_heads(x: np.ndarray, batch: int = 1, heads: int | None = None):
    """``x`` of shape ``(B, H, L, D)`` as a dask array in chunks of ``batch`` sequences and
    ``heads`` heads (all of them by default), whole along length and head_dim."""
    import dask.array as da

    return da.from_array(x, chunks=(batch, heads or x.shape[1], -1, -1))


def no_compute():
    """A context in which computing any Dask collection raises: building a graph inside it
    proves that no value was read while building."""
    import dask

    def refuse(*args, **kwargs):
        raise RuntimeError("a Dask graph was computed while it was being built")

    return dask.config.set(scheduler=refuse)


def attention_graph(q, k, v, **options):
    """``attnspec.scaled_dot_product_attention`` on dask arrays, built under
    :func:`no_compute` (so an accidental eager read fails loudly). Returns the lazy
    result(s)."""
    with no_compute():
        return attnspec.scaled_dot_product_attention(q, k, v, **options)


def _problem(rng, batch, hq, hkv, length, dim, dtype):
    q = rng.standard_normal((batch, hq, length, dim)).astype(dtype)
    k = rng.standard_normal((batch, hkv, length, dim)).astype(dtype)
    v = rng.standard_normal((batch, hkv, length, dim)).astype(dtype)
    kv_lengths = np.resize([length, length // 3, 1, length - 7], batch)
    return q, k, v, kv_lengths


def _max_err(a, ref) -> float:
    """Largest |a - ref|; inf where one is infinite (-inf lse of an empty row) and the
    other is not."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    same_inf = np.isinf(a) & (a == ref)
    with np.errstate(invalid="ignore"):
        diff = np.where(same_inf, 0.0, np.abs(a - ref))
    return float(np.max(np.where(np.isnan(diff), np.inf, diff)))


def _on_cluster(client, arrays):
    """The inputs as dask arrays whose chunks already live on the workers (``persist``), the
    way a real workload's data does: the timed graph then holds no NumPy data."""
    import dask.array as da
    from distributed import wait

    q, k, v, kv_lengths = arrays
    chunked = [chunk_over_batch_heads(x) for x in (q, k, v)]
    chunked.append(da.from_array(kv_lengths, chunks=1))
    chunked = client.persist(chunked)
    wait(chunked)
    return chunked


def _run(q, k, v, kv_lengths, options):
    """Build (no compute), then compute on the cluster: ``(out, lse, seconds, tasks)``."""
    import dask

    graph = attention_graph(q, k, v, kv_lengths=kv_lengths, **options)
    start = time.perf_counter()
    out, lse = dask.compute(*graph)
    return out, lse, time.perf_counter() - start, len(graph[0].__dask_graph__())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--address", help="an existing scheduler, e.g. tcp://scheduler:8786")
    parser.add_argument("--bench", action="store_true")
    args = parser.parse_args(argv)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("dask.distributed is not installed: pip install 'attnspec[dask]'")
        return 1
    warnings.filterwarnings("ignore", message="Sending large graph")

    shape = (16, 8, 2, 1024, 64) if args.bench else (8, 4, 2, 128, 32)
    dtypes = {"float32": 2e-5} if args.bench else {"float64": 1e-12, "float32": 2e-5}
    options = dict(causal=True, alignment="lower_right", return_lse=True, chunk_size=0)
    rng = np.random.default_rng(0)
    cluster = None
    if args.address:
        client, counts = Client(args.address), [None]
    else:
        counts = [1, 2] if args.bench else [args.workers]
        cluster = LocalCluster(n_workers=counts[0], threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    ok = True
    try:
        for n in counts:
            if cluster is not None and len(client.scheduler_info()["workers"]) != n:
                cluster.scale(n)
                client.wait_for_workers(n)
            workers = len(client.scheduler_info()["workers"])
            for dtype, tol in dtypes.items():
                arrays = _problem(rng, *shape, dtype)
                ref = attnspec.scaled_dot_product_attention(
                    *(a.astype(np.float64) for a in arrays[:3]), kv_lengths=arrays[3],
                    **options)
                start = time.perf_counter()
                numpy_result = attnspec.scaled_dot_product_attention(
                    *arrays[:3], kv_lengths=arrays[3], **options)
                eager = time.perf_counter() - start
                inputs = _on_cluster(client, arrays)
                _run(*inputs, options)  # warm-up: imports on the workers
                out, lse, seconds, tasks = _run(*inputs, options)
                err = max(_max_err(out, ref[0]), _max_err(lse, ref[1]))
                same = max(_max_err(out, numpy_result[0]), _max_err(lse, numpy_result[1]))
                good = err <= tol and same <= tol
                ok &= good
                print(f"{dtype:8s} {workers} worker(s): {tasks} tasks, {seconds * 1e3:8.1f} ms "
                      f"(NumPy in this process {eager * 1e3:7.1f} ms); max |err| vs float64 "
                      f"{err:.1e}, vs NumPy {same:.1e} {'ok' if good else 'FAIL'}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    print("all agree" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
