"""attnspec on real distributed engines.

* Dask: inputs chunked over batch and heads, the graph built without computing anything,
  then computed on a ``dask.distributed`` LocalCluster of two worker processes (one thread
  each); the result equals NumPy's and the float64 oracle, and both workers did work.
* JAX: a mesh of 8 host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``,
  which must be set before JAX starts, so ``tests/distributed_jax_script.py`` runs in a
  subprocess): batch x heads sharding (``NamedSharding``, jit with in/out shardings) and
  sequence-parallel ring attention over the key axis (``shard_map`` + ``ppermute`` +
  ``attnspec.merge``) and its all-gather variant, each equal to the single-device result
  and to the float64 oracle, with the shardings and collectives checked in the compiled
  programs.

The reusable code lives in ``examples/dask_attention.py`` and
``examples/ring_attention_jax.py``; docs/scaling.md says how to run it on real clusters.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import operator
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reference import ref_attention

import attnspec

#: A slow suite: `python -m pytest -m slow` (CI runs it; the default run leaves it out).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
JAX_SCRIPT = Path(__file__).resolve().parent / "distributed_jax_script.py"

B, HQ, HKV, L, D = 4, 4, 2, 32, 8
KV_LENGTHS = np.array([32, 5, 0, 20])  # full, short, empty (all rows attend nothing), ragged
#: float64 results of two engines running the same float64 operations (in other orders).
SAME = {"float64": 1e-12, "float32": 2e-6}
#: vs the float64 oracle (the suite's value tolerance, tests/attn_helpers.py).
TOL = {"float64": 1e-12, "float32": 1e-5}


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def problem():
    """q, k, v (GQA 4:2), a mask broadcast over heads with one empty row, kv_lengths."""
    rng = np.random.default_rng(11)
    mask = rng.random((B, 1, L, L)) < 0.8
    mask[0, 0, 3] = False
    return dict(q=rng.standard_normal((B, HQ, L, D)), k=rng.standard_normal((B, HKV, L, D)),
                v=rng.standard_normal((B, HKV, L, D)), mask=mask, kv_lengths=KV_LENGTHS)


@pytest.fixture(scope="module")
def oracle(problem):
    """The float64 oracle for the two problems: (mask, lower-right causal, kv_lengths) and
    the ring's (global upper-left causal, kv_lengths)."""
    q, k, v = problem["q"], problem["k"], problem["v"]
    masked = ref_attention(q, k, v, mask=problem["mask"], causal=True, alignment="lower_right",
                           kv_lengths=KV_LENGTHS)
    ring = ref_attention(q, k, v, causal=True, kv_lengths=KV_LENGTHS)
    return {"masked": masked[:2], "ring": ring[:2]}


def _close(got, want, tol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=what)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=what)


# -- Dask -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client():
    """A LocalCluster of 2 worker processes x 1 thread, and a client on it."""
    pytest.importorskip("dask.array", reason="dask is not installed (pip install 'attnspec[dask]')")
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed is not installed (pip install 'attnspec[dask]')")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    try:
        client.wait_for_workers(2, timeout=120)
        yield client
    finally:
        client.close()
        cluster.close()


def _dask_inputs(problem, dtype):
    import dask.array as da

    ex = _example("dask_attention")
    # Two head chunks each: query heads {0, 1} read KV head 0, {2, 3} KV head 1 (GQA).
    q, k, v = (ex.chunk_over_batch_heads(problem[n].astype(dtype), batch=1,
                                         heads=problem[n].shape[1] // 2) for n in "qkv")
    mask = da.from_array(problem["mask"], chunks=(1, 1, -1, -1))
    return ex, q, k, v, mask, da.from_array(KV_LENGTHS, chunks=1)


def test_dask_graph_is_built_without_computing(dask_client, problem):
    """Building attention on dask arrays reads no value: with a scheduler that raises on any
    compute, and with a query whose every chunk raises when computed, the graph (direct and
    chunked path, mask, causal, dask kv_lengths) builds; the poison only fires on the
    cluster, at compute."""
    import dask
    import dask.array as da

    ex, q, k, v, mask, kv = _dask_inputs(problem, "float64")
    poison = da.from_delayed(dask.delayed(operator.truediv)(1, 0), shape=q.shape,
                             dtype=q.dtype)
    for query in (q, poison):
        for chunk in (0, (16, 16)):
            with ex.no_compute():
                out, lse = attnspec.scaled_dot_product_attention(
                    query, k, v, mask=mask, kv_lengths=kv, causal=True,
                    alignment="lower_right", return_lse=True, chunk_size=chunk)
            assert isinstance(out, da.Array)
            assert isinstance(lse, da.Array)
    with pytest.raises(ZeroDivisionError):
        dask_client.compute(out).result()


def test_dask_on_a_cluster_equals_numpy_and_float64(dask_client, problem, oracle):
    """On 2 worker processes, attnspec on dask arrays chunked over batch and heads gives
    NumPy's result and the float64 oracle's, direct and chunked path, float64 and float32
    (mask, lower-right causal, kv_lengths with an empty sequence, GQA, lse); the tasks ran
    in both worker processes, not in this one."""
    import dask
    from distributed import get_task_stream

    options = dict(causal=True, alignment="lower_right", return_lse=True)
    want = oracle["masked"]
    with get_task_stream(dask_client) as stream:
        for dtype, chunk in (("float64", 0), ("float64", (16, 16)), ("float32", 0)):
            ex, q, k, v, mask, kv = _dask_inputs(problem, dtype)
            graph = ex.attention_graph(q, k, v, mask=mask, kv_lengths=kv, chunk_size=chunk,
                                       **options)
            out, lse = dask.compute(*graph)  # the client is the default scheduler
            numpy = attnspec.scaled_dot_product_attention(
                *(problem[n].astype(dtype) for n in "qkv"), mask=problem["mask"],
                kv_lengths=KV_LENGTHS, chunk_size=chunk, **options)
            assert out.dtype == np.dtype(dtype)
            for got, np_value, ref, name in zip((out, lse), numpy, want, ("out", "lse"),
                                                strict=True):
                _close(got, np_value, SAME[dtype], f"{dtype} {chunk} {name}: dask != NumPy")
                _close(got, ref, TOL[dtype], f"{dtype} {chunk} {name}: dask != float64")
    workers = {task["worker"] for task in stream.data}
    assert workers == set(dask_client.scheduler_info()["workers"])
    assert len(workers) == 2
    pids = set(dask_client.run(os.getpid).values())
    assert len(pids) == 2
    assert os.getpid() not in pids


# -- JAX on 8 host devices -------------------------------------------------------------------


@pytest.fixture(scope="module")
def jax_mesh(problem, tmp_path_factory):
    """Runs tests/distributed_jax_script.py once with 8 host devices; returns (facts,
    results)."""
    pytest.importorskip("jax", reason="jax is not installed")
    work = tmp_path_factory.mktemp("jax_mesh")
    inputs = work / "inputs.npz"
    np.savez(inputs, **problem)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(JAX_SCRIPT), str(inputs), str(work)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    facts = json.loads((work / "facts.json").read_text())
    assert facts["devices"] == 8, f"XLA_FLAGS gave {facts['devices']} host devices, not 8"
    with np.load(work / "results.npz") as data:
        results = dict(data)
    return facts, results


def _dtypes_of(results, run):
    return [d for d in ("float64", "float32") if f"{d}/{run}/out" in results]


def _check_run(results, run, single, want):
    dtypes = _dtypes_of(results, run)
    assert "float64" in dtypes
    for dtype in dtypes:
        for part, ref in zip(("out", "lse"), want, strict=True):
            got = results[f"{dtype}/{run}/{part}"]
            base = results[f"{dtype}/{single}/{part}"]
            _close(got, base, SAME[dtype], f"{dtype} {run} {part} != one device")
            _close(got, ref, TOL[dtype], f"{dtype} {run} {part} != float64 oracle")


def test_jax_batch_head_sharding_equals_one_device_and_float64(jax_mesh, oracle):
    """A 4 x 2 (batch x heads) mesh, NamedSharding in and out of jax.jit: direct and chunked
    path give the single-device result and the float64 oracle (mask, lower-right causal,
    kv_lengths, GQA, lse); each device holds one sequence and half the heads; the compiled
    program has no collective (every device computes its own slice)."""
    facts, results = jax_mesh
    for run in ("sharded_direct", "sharded_chunked"):
        _check_run(results, run, "single", oracle["masked"])
        assert facts["shardings"][run] == ["('batch', 'heads')"] * 2
        assert facts["shard_shapes"][run] == [[1, HQ // 2, L, D]]
        assert facts["collectives"][run] == []
    assert _dtypes_of(results, "sharded_direct") == ["float64", "float32"]


def test_jax_ring_attention_equals_one_device_and_float64(jax_mesh, oracle):
    """Ring attention on 8 devices: queries, keys and values split along the sequence, K/V
    shards passed round the ring by collective-permute and the partial (out, lse) merged
    with attnspec.merge; equal to the single-device result and the float64 oracle (global
    causal, kv_lengths including an empty sequence, GQA), float64 and float32; the output
    stays split over the sequence (L / 8 rows per device)."""
    facts, results = jax_mesh
    _check_run(results, "ring", "single_ring", oracle["ring"])
    assert _dtypes_of(results, "ring") == ["float64", "float32"]
    assert facts["shardings"]["ring"] == ["(None, None, 'seq')"] * 2
    assert facts["shard_shapes"]["ring"] == [[B, HQ, L // 8, D]]
    assert facts["collectives"]["ring"] == ["collective-permute"]


def test_jax_allgather_merge_equals_one_device_and_float64(jax_mesh, oracle):
    """The all-gather variant: K/V split over 8 devices, each device's partial (out, lse)
    all-gathered and merged; equal to the single-device result and the float64 oracle."""
    facts, results = jax_mesh
    _check_run(results, "allgather", "single_ring", oracle["ring"])
    assert facts["collectives"]["allgather"] == ["all-gather"]
