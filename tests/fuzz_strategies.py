"""Strategies, profiles and a float64 model of the spec for ``tests/test_fuzz.py``.

A fuzz example is a :class:`Spec`: plain Python values only (the shapes, the dtype, the
magnitudes, which options are on, a data seed). Hypothesis draws and shrinks the ``Spec``;
:func:`build` turns it into NumPy data deterministically, so the ``Falsifying example``
that Hypothesis prints is a complete reproducer::

    from fuzz_strategies import Spec, build
    problem = build(Spec(...))          # paste the printed Spec
    problem.call(get("numpy"))

Everything numeric here is written from ``docs/spec.md`` in NumPy float64, never from
attnspec's code: :func:`attended` spells out which keys each row may attend,
:func:`model` is a vectorised float64 evaluation of the normalisation rules (checked against
the loop oracle ``tests/reference.py`` by ``test_model_matches_loop_reference``) and
:func:`error_bounds` is the rounding-error budget of a float32/float64 evaluation, in units
of the accumulation dtype's epsilon.

Profiles (``ATTNSPEC_FUZZ_PROFILE``, default ``ci``):

* ``ci``: derandomised (the same examples on every run), 25 examples per test on eager
  backends and 4 on backends that compile or build a graph per new shape (``jit``/``lazy``:
  JAX, Dask), so the whole file stays well under a minute on two cores.
* ``deep``: random exploration, 2,500 examples per property test and backend: 15,000 per
  backend over the six backend-parametrised properties (docs/fuzzing.md).

``ATTNSPEC_FUZZ_EXAMPLES=N`` overrides the per-test count of either profile (for a partial
deep run of a slow backend). No profile writes an example database.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import attnspec
from attnspec.conformance.precision import EPS, round_to

__all__ = [
    "PROFILE",
    "Problem",
    "Spec",
    "attended",
    "build",
    "chunk_sizes",
    "error_bounds",
    "fuzz_settings",
    "max_blocks",
    "model",
    "reduce_to",
    "specs",
]

PROFILE_ENV = "ATTNSPEC_FUZZ_PROFILE"
EXAMPLES_ENV = "ATTNSPEC_FUZZ_EXAMPLES"

_COMMON = {
    "deadline": None,
    "database": None,  # never write .hypothesis/ into the repository
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
}
# Namespaced: Hypothesis ships a profile called "ci" of its own, which other test files may
# load; ours must not replace it.
settings.register_profile("attnspec-fuzz-ci", max_examples=25, derandomize=True, **_COMMON)
settings.register_profile("attnspec-fuzz-deep", max_examples=2500, derandomize=False, **_COMMON)

#: Examples per test on backends that pay per new shape (jit, lazy), per profile.
_COSTLY_EXAMPLES = {"ci": 4, "deep": 2500}

PROFILE = os.environ.get(PROFILE_ENV, "ci")
if PROFILE not in ("ci", "deep"):
    raise ValueError(f"{PROFILE_ENV} must be 'ci' or 'deep'; got {PROFILE!r}")


def fuzz_settings(xb: Any | None = None) -> settings:
    """The settings of the selected profile for one backend (``None``: backend-free tests)."""
    parent = settings.get_profile(f"attnspec-fuzz-{PROFILE}")
    n = parent.max_examples
    if xb is not None and (xb.has("jit") or xb.has("lazy")):
        n = _COSTLY_EXAMPLES[PROFILE]
    if os.environ.get(EXAMPLES_ENV):
        n = int(os.environ[EXAMPLES_ENV])
    return settings(parent, max_examples=n)


# -- the example ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """Everything that decides one fuzz example (the arrays come from ``seed``)."""

    seed: int
    dtype: str
    batch: tuple[int, ...]  # the output's: q_batch and kv_batch broadcast together
    q_batch: tuple[int, ...]
    kv_batch: tuple[int, ...]
    hkv: int
    group: int  # Hq = hkv * group
    lq: int
    lk: int
    dk: int
    dv: int
    logit: float  # typical |score| before softcap and bias
    explicit_scale: bool  # the magnitude goes through ``scale=`` instead of q/k amplitudes
    v_scale: float
    v_offset: float
    mask: tuple[tuple[int, ...], float, float] | None  # (shape, density, empty-row share)
    bias: tuple[tuple[int, ...], str, float, float, float] | None  # (shape, dtype, magnitude,
    # -inf share, empty-row share)
    causal: bool
    window: tuple[int | None, int | None] | None
    alignment: str
    softcap: float | None
    kv_lengths: tuple[str, tuple[int, ...]] | None  # ("int" | "array", shape)
    q_lengths: tuple[str, tuple[int, ...]] | None
    dropout: tuple[tuple[int, ...], float, float] | None  # (shape, keep share, dropout_p)
    chunk_size: int | tuple[int, int] | None
    return_weights: bool
    jit: bool = False  # on JAX: the call runs under jax.jit (options static, arrays traced)


@dataclass
class Problem:
    """A :class:`Spec` made concrete: float64 NumPy arrays exactly representable in the
    dtype (so the float64 model sees the very inputs the backend sees), and the options."""

    spec: Spec
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    opts: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> str:
        return self.spec.dtype

    def replace(self, **arrays: Any) -> Problem:
        """A copy with some of q, k, v or options replaced (``None`` drops an option)."""
        new = Problem(self.spec, self.q, self.k, self.v, dict(self.opts))
        for name, value in arrays.items():
            if name in ("q", "k", "v"):
                setattr(new, name, value)
            elif value is None:
                new.opts.pop(name, None)
            else:
                new.opts[name] = value
        return new

    def _arrays(self, xb: Any) -> tuple[Any, Any, Any, dict[str, Any], dict[str, Any]]:
        """q, k, v on the backend, the array options and the static (Python) options."""
        q, k, v = (xb.from_numpy(a, self.dtype) for a in (self.q, self.k, self.v))
        arrays: dict[str, Any] = {}
        static: dict[str, Any] = {}
        for name, value in self.opts.items():
            if name == "bias":
                arrays[name] = xb.from_numpy(value, self.spec.bias[1])
            elif isinstance(value, np.ndarray):
                arrays[name] = xb.from_numpy(value)
            else:
                static[name] = value
        return q, k, v, arrays, static

    def native_kernel(self, xb: Any, implementation: str = "auto") -> str | None:
        """The native kernel ``implementation`` ("auto" or "native") hands this problem to,
        if any."""
        q, k, v, arrays, static = self._arrays(xb)
        return attnspec.native_plan(q, k, v, **arrays, **static,
                                    implementation=implementation).kernel

    def call(self, xb: Any, *, chunk_size: Any = "spec", return_weights: bool | None = None,
             implementation: str = "portable") -> tuple[Any, ...]:
        """Run attnspec on backend ``xb``: ``(out, lse[, weights])`` as float64 NumPy, plus
        the backend dtypes of out and lse as the last two items. With
        ``implementation="auto"`` (which native kernels take only without lse and weights):
        ``(out, out dtype)``."""
        chunk = self.spec.chunk_size if chunk_size == "spec" else chunk_size
        weights = self.spec.return_weights if return_weights is None else return_weights
        q, k, v, arrays, static = self._arrays(xb)
        portable = implementation == "portable"
        extra = {"return_lse": True, "return_weights": weights} if portable else {}

        def attend(q, k, v, arrays):
            res = attnspec.scaled_dot_product_attention(
                q, k, v, **arrays, **static, **extra, chunk_size=chunk,
                implementation=implementation,
            )
            return res if portable else (res,)

        if self.spec.jit and xb.framework == "jax":
            import jax

            attend = jax.jit(attend)
        res = attend(q, k, v, arrays)
        dtypes = tuple(r.dtype for r in res[:2 if portable else 1])
        if xb.has("lazy"):  # one graph computation for all outputs, not one per output
            import dask

            res = dask.compute(*res)
        return (*(np.asarray(xb.to_numpy(r), dtype=np.float64) for r in res), *dtypes)


# -- drawing a Spec ----------------------------------------------------------------------------

_SIDE = st.one_of(st.none(), st.integers(0, 5))


def _broadcastable(draw: Any, full: tuple[int, ...], min_ndim: int = 0) -> tuple[int, ...]:
    """A shape that broadcasts to ``full``: leading axes dropped, others kept or set to 1."""
    ndim = draw(st.integers(min(min_ndim, len(full)), len(full)))
    return tuple(n if draw(st.booleans()) else 1 for n in full[len(full) - ndim:])


def chunk_sizes(lq: int, lk: int, max_blocks: int | None = None) -> st.SearchStrategy:
    """``chunk_size`` values for the chunked path: 1, odd, beyond the sequence, unequal
    query/key blocks; at most ``max_blocks`` blocks when given."""
    longest = max(lq, lk) + 2
    sizes = st.one_of(st.sampled_from([1, longest]), st.integers(1, longest),
                      st.tuples(st.integers(1, longest), st.integers(1, longest)))
    if max_blocks is None:
        return sizes

    def blocks(c: int | tuple[int, int]) -> int:
        bq, bk = (c, c) if isinstance(c, int) else c
        return -(-lq // bq) * -(-lk // bk)

    return sizes.filter(lambda c: blocks(c) <= max_blocks)


#: Block budget of the chunked path on backends that pay per new shape (JAX compiles every
#: new slice once, Dask builds a task per block): the block logic is the same Array API code
#: on every backend, and the eager backends explore it without a limit.
COSTLY_MAX_BLOCKS = 16


def max_blocks(xb: Any) -> int | None:
    """The block budget for backend ``xb`` (``None``: unlimited)."""
    return COSTLY_MAX_BLOCKS if xb.has("jit") or xb.has("lazy") else None


@st.composite
def specs(draw: Any, dtypes: tuple[str, ...] = ("float64", "float32"), *,
          dropout: bool = True, small: bool = False, max_blocks: int | None = None) -> Spec:
    """A random :class:`Spec` over the given dtype names.

    ``dropout=False`` never draws a dropout mask (the convex-hull bound needs its absence);
    ``small=True`` keeps every size small enough for the loop oracle; ``max_blocks`` caps the
    chunked path's number of blocks.
    """
    dtype = draw(st.sampled_from(dtypes))
    big = 3 if small else 16
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    q_batch = _broadcastable(draw, batch)
    kv_batch = _broadcastable(draw, batch)
    batch = np.broadcast_shapes(q_batch, kv_batch)  # the output's batch shape
    hkv = draw(st.integers(1, 2 if small else 3))
    group = draw(st.integers(1, 3))
    # Lengths 1 and small odd numbers are where blocking and alignment go wrong.
    lq = draw(st.one_of(st.sampled_from([1, 2, 3, 5, 7]), st.integers(1, big)))
    lk = draw(st.one_of(st.sampled_from([0, 1, 3, 5, 7]), st.integers(1, big)))
    dk = draw(st.one_of(st.integers(1, 4 if small else 8), st.just(16 if not small else 3)))
    dv = draw(st.one_of(st.just(dk), st.integers(1, 4 if small else 8)))
    # |score| from 1e-6 to 1e4: exp overflows far below 1e4 without max subtraction.
    logit = 10.0 ** draw(st.integers(-6, 4)) * draw(st.sampled_from([1.0, 3.0]))
    explicit_scale = draw(st.booleans())
    v_scale = 10.0 ** draw(st.integers(-3, 3))
    v_offset = v_scale * draw(st.sampled_from([0.0, 0.0, 1.0, -10.0]))
    full = (*batch, hkv * group, lq, lk)

    mask = None
    if draw(st.booleans()):
        mask = (_broadcastable(draw, full, 2), draw(st.sampled_from([0.1, 0.5, 0.9, 1.0])),
                draw(st.sampled_from([0.0, 0.0, 0.3])))
    bias = None
    if draw(st.booleans()):
        bias_dtypes = [dtype, "float32"] + (["float64"] if "float64" in dtypes else [])
        bias = (_broadcastable(draw, full, 1), draw(st.sampled_from(bias_dtypes)),
                10.0 ** draw(st.integers(-2, 3)), draw(st.sampled_from([0.0, 0.2, 0.6])),
                draw(st.sampled_from([0.0, 0.0, 0.3])))
    window = None
    if draw(st.booleans()):
        window = (draw(_SIDE), draw(_SIDE))
    softcap = None
    if draw(st.booleans()):
        softcap = 10.0 ** draw(st.integers(-1, 3)) * draw(st.sampled_from([1.0, 0.5]))

    def lengths() -> tuple[str, tuple[int, ...]] | None:
        if not draw(st.booleans()):
            return None
        if not batch or draw(st.integers(0, 3)) == 0:
            return ("int", ())
        return ("array", _broadcastable(draw, batch))

    kv_lengths, q_lengths = lengths(), lengths()
    drop = None
    if dropout and draw(st.integers(0, 3)) == 0:
        drop = (_broadcastable(draw, full, 1), draw(st.sampled_from([0.5, 0.9])),
                draw(st.sampled_from([0.0, 0.1, 0.5])))
    chunk = draw(st.one_of(st.just(0), st.none(), chunk_sizes(lq, lk, max_blocks)))
    return Spec(
        seed=draw(st.integers(0, 2**32 - 1)), dtype=dtype, batch=batch, q_batch=q_batch,
        kv_batch=kv_batch, hkv=hkv, group=group, lq=lq, lk=lk, dk=dk, dv=dv, logit=logit,
        explicit_scale=explicit_scale, v_scale=v_scale, v_offset=v_offset, mask=mask,
        bias=bias, causal=draw(st.booleans()), window=window,
        alignment=draw(st.sampled_from(["upper_left", "lower_right"])), softcap=softcap,
        kv_lengths=kv_lengths, q_lengths=q_lengths, dropout=drop, chunk_size=chunk,
        return_weights=draw(st.booleans()), jit=draw(st.integers(0, 3)) > 0,
    )


def build(spec: Spec) -> Problem:
    """The arrays and options of a :class:`Spec` (deterministic in ``spec.seed``)."""
    rng = np.random.default_rng(spec.seed)
    hq = spec.hkv * spec.group
    opts: dict[str, Any] = {}
    if spec.explicit_scale:
        amp_q = amp_k = 1.0
        opts["scale"] = spec.logit / math.sqrt(spec.dk)
    else:
        # q.k ~ amp_q * amp_k * sqrt(dk) and the default scale is 1/sqrt(dk)
        amp_q = math.sqrt(spec.logit) * float(rng.choice([0.25, 1.0, 4.0]))
        amp_k = spec.logit / amp_q
    q = round_to(rng.standard_normal((*spec.q_batch, hq, spec.lq, spec.dk)) * amp_q, spec.dtype)
    k = round_to(rng.standard_normal((*spec.kv_batch, spec.hkv, spec.lk, spec.dk)) * amp_k,
                 spec.dtype)
    v = rng.standard_normal((*spec.kv_batch, spec.hkv, spec.lk, spec.dv)) * spec.v_scale
    v = round_to(v + spec.v_offset, spec.dtype)
    if spec.mask is not None:
        shape, density, empty = spec.mask
        mask = rng.random(shape) < density
        mask[rng.random(shape[:-1]) < empty] = False  # fully masked rows
        opts["mask"] = mask
    if spec.bias is not None:
        shape, bias_dtype, magnitude, inf_share, empty = spec.bias
        bias = round_to(rng.standard_normal(shape) * magnitude, bias_dtype)
        bias[rng.random(shape) < inf_share] = -np.inf
        bias[rng.random(shape[:-1]) < empty] = -np.inf
        opts["bias"] = bias
    opts["causal"] = spec.causal
    if spec.window is not None:
        opts["window"] = spec.window
    opts["alignment"] = spec.alignment
    if spec.softcap is not None:
        opts["softcap"] = spec.softcap
    for name, lengths, n in (("kv_lengths", spec.kv_lengths, spec.lk),
                             ("q_lengths", spec.q_lengths, spec.lq)):
        if lengths is None:
            continue
        form, shape = lengths
        # Mostly within [0, n]; sometimes beyond it, which still shifts lower_right.
        values = rng.integers(0, n + 1 + (n + 1) // 2, size=shape)
        opts[name] = int(values) if form == "int" else values.astype(np.int64)
    if spec.dropout is not None:
        shape, keep, p = spec.dropout
        opts["dropout_mask"] = rng.random(shape) < keep
        opts["dropout_p"] = p
    return Problem(spec, q, k, v, opts)


# -- the spec in float64 -----------------------------------------------------------------------


def _per_batch(lengths: Any, batch: tuple[int, ...], default: int) -> np.ndarray:
    """Lengths as an int array of shape ``(*batch, 1, 1, 1)``."""
    x = np.full(batch, default) if lengths is None else np.broadcast_to(lengths, batch)
    return np.asarray(x).reshape((*batch, 1, 1, 1))


def attended(p: Problem, *, with_bias: bool = True) -> np.ndarray:
    """Which ``(*batch, Hq, Lq, Lk)`` positions are attended (ATT-MASK-1, ATT-CAUSAL-1/2,
    ATT-WINDOW-1, ATT-LEN-1/2, ATT-BIAS-1), from the rules alone."""
    s, o = p.spec, p.opts
    full = (*s.batch, s.hkv * s.group, s.lq, s.lk)
    keep = np.ones(full, dtype=bool)
    if "mask" in o:
        keep &= o["mask"]
    kv_len = _per_batch(o.get("kv_lengths"), s.batch, s.lk)
    q_len = _per_batch(o.get("q_lengths"), s.batch, s.lq)
    i = np.arange(s.lq).reshape(-1, 1)
    j = np.arange(s.lk).reshape(1, -1)
    offset = 0 if s.alignment == "upper_left" else kv_len - q_len
    if s.causal:
        keep &= j <= i + offset
    if s.window is not None:
        left, right = s.window
        if left is not None:
            keep &= j >= i + offset - left
        if right is not None:
            keep &= j <= i + offset + right
    keep &= j < kv_len
    keep &= i < q_len
    if with_bias and "bias" in o:
        keep &= o["bias"] != -np.inf
    return keep


def _heads(p: Problem, x: np.ndarray) -> np.ndarray:
    """K or V ``(*kv_batch, Hkv, Lk, D)`` as ``(*batch, Hq, Lk, D)``: query head h reads
    key/value head ``h // group`` (ATT-GQA-1)."""
    s = p.spec
    x = np.broadcast_to(x, (*s.batch, *x.shape[-3:]))
    return np.repeat(x, s.group, axis=-3)


def _scale(p: Problem) -> float:
    return p.opts.get("scale", 1.0 / math.sqrt(p.spec.dk))


def model(p: Problem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(out, lse, weights)`` in float64 by the spec's formulas, vectorised."""
    s, o = p.spec, p.opts
    keep = attended(p)
    q = np.broadcast_to(p.q, (*s.batch, *p.q.shape[-3:]))
    k, v = _heads(p, p.k), _heads(p, p.v)
    with np.errstate(all="ignore"):
        scores = (q @ np.swapaxes(k, -1, -2)) * _scale(p)
        if s.softcap is not None:
            scores = s.softcap * np.tanh(scores / s.softcap)
        if "bias" in o:
            scores = scores + o["bias"]
        scores = np.where(keep, scores, -np.inf)
        empty = ~keep.any(-1, keepdims=True)
        m = np.where(empty, 0.0, np.max(scores, axis=-1, keepdims=True, initial=-np.inf))
        e = np.where(keep, np.exp(scores - m), 0.0)
        total = e.sum(-1, keepdims=True)
        prob = e / np.where(empty, 1.0, total)
        lse = np.where(empty, -np.inf, m + np.log(np.where(empty, 1.0, total)))[..., 0]
    if "dropout_mask" in o:
        prob = np.where(o["dropout_mask"], prob / (1.0 - o["dropout_p"]), 0.0)
    return prob @ v, lse, np.broadcast_to(prob, keep.shape)


def error_bounds(p: Problem, c: float = 2.0) -> dict[str, np.ndarray]:
    """Per-row rounding-error budgets of one evaluation in the accumulation dtype.

    With ``R`` the row's largest ``scale * sum_d |q_d k_d| + |bias| + softcap`` over its
    attended keys, a score carries an error ``ds <= (Dk + 4) eps R``; the softmax turns it
    into at most ``2 ds`` relative error per weight, so ``out`` moves by ``<= 4 ds M``
    (``M`` the largest attended ``|v|``), plus ``(Lk + 4) eps M`` for the sums and the
    exponentials, plus one unit of the output dtype for the final rounding. ``c`` multiplies
    this first-order worst case: ``c = 1`` is the bound itself, which correct evaluations
    stay far below (measured: at most 0.18 of it for lse, 0.04 for out, docs/fuzzing.md);
    the tests use ``c = 2`` against float64 and ``c = 4`` between two float32 evaluations.
    """
    s, o = p.spec, p.opts
    acc = "float64" if s.dtype == "float64" else "float32"
    eps, eps_out = EPS[acc], EPS[s.dtype]
    tiny_out = float(np.finfo(np.float16).smallest_subnormal) if s.dtype == "float16" else 0.0
    keep = attended(p)
    q = np.broadcast_to(p.q, (*s.batch, *p.q.shape[-3:]))
    k, v = _heads(p, p.k), _heads(p, p.v)
    mag = (np.abs(q) @ np.swapaxes(np.abs(k), -1, -2)) * _scale(p)
    if "bias" in o:
        mag = mag + np.where(np.isinf(o["bias"]), 0.0, np.abs(o["bias"]))
    if s.softcap is not None:
        mag = mag + s.softcap
    r = np.max(np.where(keep, mag, 0.0), axis=-1, initial=0.0)
    vmax = np.max(np.where(keep[..., None], np.abs(v)[..., None, :, :], 0.0), axis=(-2, -1),
                  initial=0.0)
    ds = (s.dk + 4) * eps * r
    dscale = 1.0 / (1.0 - o["dropout_p"]) if "dropout_mask" in o else 1.0
    sums = (s.lk + 4) * eps
    out = c * (4 * ds + sums) * vmax * dscale + eps_out * vmax * dscale + tiny_out
    lse = model(p)[1]
    lse = c * (ds + sums + eps * np.abs(np.where(np.isfinite(lse), lse, 0.0)))
    weights = (c * (2 * ds + sums) + eps_out) * dscale + tiny_out
    return {"out": out[..., None], "lse": lse, "weights": weights[..., None]}


def reduce_to(x: np.ndarray, shape: tuple[int, ...], op: Any = np.all) -> np.ndarray:
    """Reduce ``x`` (a broadcast of an array of ``shape``) back to ``shape`` with ``op`` over
    the axes that broadcasting added or stretched."""
    lead = x.ndim - len(shape)
    x = op(x, axis=tuple(range(lead))) if lead else x
    axes = tuple(a for a, n in enumerate(shape) if n == 1 and x.shape[a] != 1)
    return op(x, axis=axes, keepdims=True) if axes else x
