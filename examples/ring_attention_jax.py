"""attnspec over a JAX device mesh: batch/head sharding and sequence-parallel (ring) attention.

Three ways to spread one attention call over the devices of a :class:`jax.sharding.Mesh`:

* :func:`sharded_attention` -- batch and heads split over the mesh (``NamedSharding`` plus
  ``jax.jit`` with ``in_shardings``/``out_shardings``). Every (batch, head) pair is
  independent, so each device computes its own slice with no communication.
* :func:`ring_attention` -- sequence parallelism over the *key* axis: queries, keys and
  values are split along their length over one mesh axis. In ``n`` steps every device
  computes ``(out, lse)`` of its query shard against the key/value shard it holds
  (``return_lse=True``), merges it into a running result with :func:`attnspec.merge`, and
  passes its key/value shard to the next device with ``jax.lax.ppermute`` inside
  ``jax.shard_map``: a true ring, O(L/n) keys per device at any time.
* :func:`allgather_attention` -- the simple version: queries replicated, keys/values split;
  each device computes its partial ``(out, lse)``, ``jax.lax.all_gather`` collects them and
  every device merges all ``n``. One collective instead of ``n - 1``, but O(L) queries and
  ``n`` partial outputs per device.

Global positions matter in the ring: the causal rule ``j <= i`` and ``kv_lengths`` are
stated on global indices, so each step builds its key mask from the shard offsets
(``axis_index``) rather than from the local ones.

Run ``python examples/ring_attention_jax.py`` (8 host devices are simulated with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, set here before JAX starts) to check
all three in float32 against float64 and print timings; ``--float64`` adds a float64 run,
``--bench`` times a larger problem (docs/scaling.md), ``--devices N`` simulates N host
devices instead of 8 (N even).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and "jax" not in sys.modules:
    # Must precede JAX's initialisation: host "devices" are fixed when the backend starts.
    _count = sys.argv[sys.argv.index("--devices") + 1] if "--devices" in sys.argv else "8"
    flag = f"--xla_force_host_platform_device_count={_count}"
    if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()

import math
import time
from functools import cache, partial

import numpy as np

import attnspec

__all__ = ["allgather_attention", "ring_attention", "sharded_attention", "sharded_attention_fn"]


def _jax():
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    return jax, NamedSharding, P


def sharded_attention(q, k, v, mesh, *, mask=None, kv_lengths=None, **options):
    """``scaled_dot_product_attention`` with batch and heads split over ``mesh``.

    ``mesh`` has axes ``("batch", "heads")``. ``q, k, v`` have shape ``(B, H, L, D)``;
    ``B`` must divide by the ``batch`` axis size and both ``Hq`` and ``Hkv`` by the
    ``heads`` axis size (then query head block ``c`` reads exactly key/value head block
    ``c`` under grouped-query attention, and no device needs another's data). ``mask``
    ``(B, 1 or H, Lq, Lk)`` is split like the inputs, ``kv_lengths`` ``(B,)`` over the batch.
    Other keyword arguments (``causal``, ``alignment``, ``chunk_size``, ``return_lse``, ...)
    are static. Returns what attnspec returns, sharded like ``q``.
    """
    fn = sharded_attention_fn(mesh, mask=None if mask is None else mask.shape[1] != 1,
                              kv_lengths=kv_lengths is not None, **options)
    args = [q, k, v] + [a for a in (mask, kv_lengths) if a is not None]
    return fn(*args)


@cache
def _sharded_fn(mesh, mask, kv_lengths, options):
    jax, NamedSharding, P = _jax()
    data = NamedSharding(mesh, P("batch", "heads"))
    in_shardings = [data, data, data]
    if mask is not None:  # mask: True when it has one entry per head
        in_shardings.append(NamedSharding(mesh, P("batch", "heads" if mask else None)))
    if kv_lengths:
        in_shardings.append(NamedSharding(mesh, P("batch")))
    opts = dict(options)
    out_shardings = (data, data) if opts.get("return_lse") else data

    def call(q, k, v, *rest):
        rest = list(rest)
        m = rest.pop(0) if mask is not None else None
        lengths = rest.pop(0) if kv_lengths else None
        return attnspec.scaled_dot_product_attention(q, k, v, mask=m, kv_lengths=lengths,
                                                     **opts)

    return jax.jit(call, in_shardings=tuple(in_shardings), out_shardings=out_shardings)


def sharded_attention_fn(mesh, *, mask=None, kv_lengths=False, **options):
    """The jitted function behind :func:`sharded_attention`, called as
    ``fn(q, k, v[, mask][, kv_lengths])``; ``mask``: ``None`` (no mask), ``True`` (one
    per head) or ``False`` (broadcast over heads); ``kv_lengths``: whether it is passed.
    ``fn.lower(...)`` shows the compiled program."""
    return _sharded_fn(mesh, mask, bool(kv_lengths), tuple(sorted(options.items())))


def _ring_step_mask(q_start, k_start, lq, lk, causal, jnp):
    """The causal keep-mask ``(lq, lk)`` of one (query shard, key shard) pair, on global
    positions; ``None`` when not causal."""
    if not causal:
        return None
    q_pos = q_start + jnp.arange(lq)
    k_pos = k_start + jnp.arange(lk)
    return k_pos[None, :] <= q_pos[:, None]


def _local_lengths(kv_lengths, k_start, lk, jnp):
    """Global ``kv_lengths`` seen from a key shard starting at ``k_start``: how many of its
    ``lk`` keys are real (0 when the shard lies entirely in the padding)."""
    if kv_lengths is None:
        return None
    return jnp.clip(kv_lengths - k_start, 0, lk)


def ring_attention(q, k, v, mesh, *, axis="seq", causal=False, kv_lengths=None, scale=None,
                   softcap=None):
    """Sequence-parallel attention: ``q``, ``k``, ``v`` split over ``axis`` along their
    length; key/value shards travel around the ring (``ppermute``), partial results are
    merged with :func:`attnspec.merge`.

    Shapes ``(*batch, H, L, D)`` with ``Lq`` and ``Lk`` divisible by the mesh axis size.
    ``causal`` uses global positions, upper-left aligned (``j <= i``); ``kv_lengths``
    ``(*batch,)`` counts global keys. Returns ``(out, lse)``, split over ``axis`` like
    ``q``. Call inside or outside ``jax.jit``.
    """
    jax, _, P = _jax()
    n = mesh.shape[axis]
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.shape[-2] % n:
            raise ValueError(f"ring_attention: {name} length {x.shape[-2]} is not divisible "
                             f"by the {n} devices of mesh axis {axis!r}")
    seq = P(*([None] * (q.ndim - 2)), axis, None)
    lse_spec = P(*([None] * (q.ndim - 2)), axis)
    has_lengths = kv_lengths is not None
    body = partial(_ring_body, axis=axis, n=n, causal=causal, scale=scale, softcap=softcap,
                   has_lengths=has_lengths)
    lengths = kv_lengths if has_lengths else np.zeros((), np.int32)
    fn = jax.shard_map(body, mesh=mesh, in_specs=(seq, seq, seq, P()),
                       out_specs=(seq, lse_spec))
    return fn(q, k, v, lengths)


def _ring_body(q, k, v, kv_lengths, *, axis, n, causal, scale, softcap, has_lengths):
    import jax
    import jax.numpy as jnp

    me = jax.lax.axis_index(axis)
    lq, lk = q.shape[-2], k.shape[-2]
    to_next = [(i, (i + 1) % n) for i in range(n)]

    def attend(step, k, v):
        src = (me - step) % n  # the device whose key/value shard we hold at this step
        return attnspec.scaled_dot_product_attention(
            q, k, v, mask=_ring_step_mask(me * lq, src * lk, lq, lk, causal, jnp),
            kv_lengths=_local_lengths(kv_lengths, src * lk, lk, jnp) if has_lengths else None,
            scale=scale, softcap=softcap, return_lse=True, chunk_size=0,
        )

    def step(i, carry):
        k, v, out, lse = carry
        # The send of this shard and the attention over it do not depend on each other, so
        # XLA may overlap the transfer with the compute. After n sends every shard is home.
        k_next, v_next = jax.lax.ppermute((k, v), axis, to_next)
        out, lse = attnspec.merge([(out, lse), attend(i, k, v)])
        return k_next, v_next, out, lse

    out, lse = attend(0, k, v)
    k, v = jax.lax.ppermute((k, v), axis, to_next)
    # A loop, not n unrolled steps: the program (and its compile time) does not grow with n.
    _, _, out, lse = jax.lax.fori_loop(1, n, step, (k, v, out, lse))
    return out, lse


def allgather_attention(q, k, v, mesh, *, axis="seq", causal=False, kv_lengths=None,
                        scale=None, softcap=None):
    """Keys/values split over ``axis``, queries replicated: each device attends to its key
    shard, the ``n`` partial ``(out, lse)`` are all-gathered and merged. Returns
    ``(out, lse)`` replicated on every device."""
    jax, _, P = _jax()
    n = mesh.shape[axis]
    if k.shape[-2] % n:
        raise ValueError(f"allgather_attention: key length {k.shape[-2]} is not divisible by "
                         f"the {n} devices of mesh axis {axis!r}")
    seq = P(*([None] * (k.ndim - 2)), axis, None)
    has_lengths = kv_lengths is not None
    body = partial(_allgather_body, axis=axis, n=n, causal=causal, scale=scale,
                   softcap=softcap, has_lengths=has_lengths)
    lengths = kv_lengths if has_lengths else np.zeros((), np.int32)
    fn = jax.shard_map(body, mesh=mesh, in_specs=(P(), seq, seq, P()), out_specs=(P(), P()),
                       check_vma=False)
    return fn(q, k, v, lengths)


def _allgather_body(q, k, v, kv_lengths, *, axis, n, causal, scale, softcap, has_lengths):
    import jax
    import jax.numpy as jnp

    me = jax.lax.axis_index(axis)
    lq, lk = q.shape[-2], k.shape[-2]
    out, lse = attnspec.scaled_dot_product_attention(
        q, k, v, mask=_ring_step_mask(0, me * lk, lq, lk, causal, jnp),
        kv_lengths=_local_lengths(kv_lengths, me * lk, lk, jnp) if has_lengths else None,
        scale=scale, softcap=softcap, return_lse=True, chunk_size=0,
    )
    outs = jax.lax.all_gather(out, axis)  # (n, *out.shape): every device's partial
    lses = jax.lax.all_gather(lse, axis)
    return attnspec.merge([(outs[i], lses[i]) for i in range(n)])


# -- the demonstration -------------------------------------------------------------------


def _problem(rng, batch, hq, hkv, length, dim):
    return (rng.standard_normal((batch, hq, length, dim)),
            rng.standard_normal((batch, hkv, length, dim)),
            rng.standard_normal((batch, hkv, length, dim)))


def _timed(fn, *args, repeat=3):
    import jax

    jax.block_until_ready(fn(*args))  # compile
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str]) -> int:
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh

    jax.config.update("jax_enable_x64", True)
    bench = "--bench" in argv
    devices = np.array(jax.devices())
    n = devices.size
    print(f"{n} {jax.default_backend()} devices")
    if n < 2 or n % 2:
        print("needs an even number of devices >= 2 (XLA_FLAGS must be set before JAX starts)")
        return 1
    rng = np.random.default_rng(0)
    batch, hq, hkv, length, dim = (8, 8, 2, 2048, 64) if bench else (4, 4, 2, 256, 32)
    q, k, v = _problem(rng, batch, hq, hkv, length, dim)
    kv_lengths = np.resize([length, length // 3, length - 5, 1], batch)
    ref_out, ref_lse = attnspec.scaled_dot_product_attention(
        q, k, v, causal=True, kv_lengths=kv_lengths, return_lse=True)
    seq_mesh = Mesh(devices, ("seq",))
    grid = Mesh(devices.reshape(n // 2, 2), ("batch", "heads"))
    ring = jax.jit(partial(ring_attention, mesh=seq_mesh, causal=True))
    gathered = jax.jit(partial(allgather_attention, mesh=seq_mesh, causal=True))
    single = jax.jit(partial(attnspec.scaled_dot_product_attention, causal=True,
                             return_lse=True))
    runs = {
        "1 device": lambda q, k, v, n_: single(q, k, v, kv_lengths=n_),
        f"batch x heads ({grid.shape['batch']}x{grid.shape['heads']})":
            lambda q, k, v, n_: sharded_attention(q, k, v, grid, kv_lengths=n_, causal=True,
                                                  return_lse=True),
        f"ring over keys ({n})": lambda q, k, v, n_: ring(q, k, v, kv_lengths=n_),
        f"all-gather + merge ({n})": lambda q, k, v, n_: gathered(q, k, v, kv_lengths=n_),
    }
    ok = True
    tolerances = {"float32": 2e-5, "float64": 1e-10}
    for dtype in ("float32", "float64") if "--float64" in argv else ("float32",):
        tol = tolerances[dtype]
        args = (*(jnp.asarray(a, dtype=dtype) for a in (q, k, v)), jnp.asarray(kv_lengths))
        for name, fn in runs.items():
            out, lse = fn(*args)
            lse, finite = np.asarray(lse, np.float64), np.isfinite(ref_lse)
            err = max(float(np.max(np.abs(np.asarray(out, np.float64) - ref_out))),
                      float(np.max(np.abs(lse[finite] - ref_lse[finite]))))
            good = err <= tol and bool(np.all(np.isneginf(lse[~finite])))
            ok &= good
            seconds = _timed(lambda *a, fn=fn: fn(*a)[0], *args, repeat=3 if bench else 2)
            print(f"{dtype:8s} {name:26s} max |err| vs float64 {err:.1e} "
                  f"{'ok' if good else 'FAIL'}  {seconds * 1e3:9.1f} ms")
    print("all agree" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
