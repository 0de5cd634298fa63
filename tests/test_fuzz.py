"""Fuzzing: Hypothesis properties of attention and softmax on every backend and dtype.

Each backend-parametrised test draws random problems (``fuzz_strategies.specs``): batch
dimensions that broadcast, grouped-query heads, lengths 1 and small odd values, ``Lk = 0``,
random bool masks with fully masked rows, causal and window bands in both alignments,
``kv_lengths``/``q_lengths`` (also beyond the sequence), biases with ``-inf`` entries,
softcap, dropout, logits from 1e-6 to 3e4 (exp overflows without max subtraction), values
with large offsets, float64/float32 and float16/bfloat16 where the backend has them, and the
direct path, the chunked path with random blocks and the automatic choice.

Properties, checked against the rules of ``docs/spec.md`` and a float64 model of them:

(a) finite inputs give finite output; lse is finite, or ``-inf`` exactly on empty rows, whose
    output is exactly 0 (ATT-EMPTY-1, ATT-LSE-1);
(b) without dropout every output lies in the attended values' per-column range, up to a
    slack of a few units of the accumulation dtype (ATT-BOUND-1);
(c) K/V/Q/bias content at masked positions, NaN and inf included where the spec says it
    never reaches the output, leaves every row that does not attend it bit-for-bit unchanged
    and a NaN key that a row does attend makes that row NaN (ATT-LEAK-1/2, ATT-NAN-1);
(d) the chunked path agrees with the direct path within the rounding budget;
(e) the result agrees with float64 within the rounding budget of the accumulation dtype
    (float32 for half precision, so this also checks ATT-DTYPE-2), and has the specified
    dtypes; softmax, log_softmax and logsumexp likewise (SMX-1..5);
(f) the native kernels (``implementation="native"`` where ``native_plan`` accepts the call,
    ``"auto"`` elsewhere) keep (a), (c) and (e) for ``out``.

The rounding budget (``fuzz_strategies.error_bounds``) is the worst-case error of the
textbook algorithm in units of the accumulation dtype's epsilon, scaled by the row's
condition (score magnitudes, value magnitudes, row length) -- the conformance suite's
"relative to eps" idea, with the naive error replaced by its analytic bound.

``ATTNSPEC_FUZZ_PROFILE=deep`` runs 2,500 examples per test and backend (docs/fuzzing.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings

import numpy as np
import pytest
from fuzz_strategies import (
    PROFILE,
    Spec,
    attended,
    build,
    chunk_sizes,
    error_bounds,
    fuzz_settings,
    max_blocks,
    model,
    reduce_to,
    specs,
)
from hypothesis import given
from hypothesis import strategies as st
from reference import ref_attention

import attnspec
from attnspec.conformance.precision import EPS, round_to

#: Append ``{"test", "backend", "examples", "seconds", "profile"}`` JSON lines here if set.
LOG_ENV = "ATTNSPEC_FUZZ_LOG"


def _fuzz(xb, name, strategy):
    """Run ``check(xb, example)`` under the profile's settings for this backend."""

    def decorate(check):
        count = 0

        @fuzz_settings(xb)
        @given(example=strategy)
        def run(example):
            nonlocal count
            check(xb, example)
            count += 1

        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        backend = "none" if xb is None else xb.name
        print(f"{name}[{backend}]: {count} examples in {seconds:.1f} s ({PROFILE})")
        if os.environ.get(LOG_ENV):
            with open(os.environ[LOG_ENV], "a") as log:
                log.write(json.dumps({"test": name, "backend": backend, "examples": count,
                                      "seconds": round(seconds, 2), "profile": PROFILE}) + "\n")
        return check

    return decorate


def _acc(dtype):
    return "float64" if dtype == "float64" else "float32"


def _unit(dtype):
    """The smallest positive value of the dtype (0 where subnormals never matter here)."""
    return float(np.finfo(np.float16).smallest_subnormal) if dtype == "float16" else 0.0


def _where_bad(bad, *arrays):
    """The first flagged index and the arrays' values there, for an assertion message."""
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"at {list(idx)}: " + ", ".join(repr(float(a[idx])) for a in arrays)


def _assert_within(name, got, want, bound, spec):
    err = np.abs(got - want)
    bad = ~(err <= bound)  # NaN fails too
    assert not bad.any(), (
        f"{name}: |got - want| exceeds the rounding budget {_where_bad(bad, got, want, err)}; "
        f"budget {np.broadcast_to(bound, got.shape)[tuple(np.argwhere(bad)[0])]:.3g}; {spec}"
    )


def _check_empty_rows(p, out, lse, what=""):
    """(a): finite output, lse finite or exactly -inf on empty rows, empty rows output 0."""
    empty = ~attended(p).any(-1)
    assert np.isfinite(out).all(), f"{what}out not finite {_where_bad(~np.isfinite(out), out)}"
    assert np.all(lse[empty] == -np.inf), f"{what}lse of an empty row is not -inf"
    assert np.isfinite(lse[~empty]).all(), f"{what}lse of an attended row is not finite"
    assert np.all(out[empty] == 0.0), f"{what}an empty row's output is not exactly 0"
    return empty


# -- (a) + (b) ---------------------------------------------------------------------------------


def test_finite_and_within_attended_values(xb):
    """ATT-EMPTY-1, ATT-LSE-1, ATT-BOUND-1, ATT-WEIGHTS-1: finite inputs give finite output;
    empty rows give exactly 0 and lse -inf; each output element lies between the smallest
    and the largest attended value of its column (no dropout), up to a few units of the
    accumulation dtype; weights are exactly 0 where masked and within [0, 1]."""

    @_fuzz(xb, "finite_and_hull", specs(xb.dtypes, dropout=False, max_blocks=max_blocks(xb)))
    def check(xb, spec):
        p = build(spec)
        out, lse, *rest = p.call(xb)
        _check_empty_rows(p, out, lse)
        keep = attended(p)
        v = np.repeat(np.broadcast_to(p.v, (*spec.batch, *p.v.shape[-3:])), spec.group, -3)
        vb = v[..., None, :, :]  # (*batch, Hq, 1, Lk, Dv)
        lo = np.min(np.where(keep[..., None], vb, np.inf), axis=-2, initial=np.inf)
        hi = np.max(np.where(keep[..., None], vb, -np.inf), axis=-2, initial=-np.inf)
        rows = keep.any(-1)
        vmax = np.max(np.abs(np.where(rows[..., None], np.maximum(-lo, hi), 0.0)), axis=-1,
                      keepdims=True, initial=0.0)
        slack = (4 * (spec.lk + 4) * EPS[_acc(spec.dtype)] + EPS[spec.dtype]) * vmax
        slack = slack + _unit(spec.dtype)
        inside = (out >= lo - slack) & (out <= hi + slack)
        bad = rows[..., None] & ~inside
        assert not bad.any(), (
            f"output outside the attended values' range {_where_bad(bad, lo, out, hi)}; {spec}"
        )
        if spec.return_weights:
            w = rest[0]
            assert np.all(w[~keep] == 0.0), f"a masked position has a nonzero weight; {spec}"
            assert np.all((w >= 0.0) & (w <= 1.0 + 4 * (spec.lk + 4) * EPS[spec.dtype])), spec


# -- (c) ---------------------------------------------------------------------------------------


def _max(dtype):
    return float(np.finfo(np.float32).max) if dtype == "bfloat16" else float(np.finfo(dtype).max)


def _garbage(rng, shape, dtype, *, finite):
    """Values nothing may read: NaN, +-inf, huge and ordinary finite numbers, mixed."""
    big = float(np.ravel(round_to(_max(dtype) / 4, dtype))[0])
    pool = [big, -big, 1e3, -7.5] if finite else [np.nan, np.inf, -np.inf, big, -big, 1e3]
    return round_to(rng.choice(np.array(pool, dtype=np.float64), size=shape), dtype)


def _heads_slots(p, slots):
    """K/V slots ``(*kv_batch, Hkv, Lk)`` as ``(*batch, Hq, 1, Lk)``."""
    s = p.spec
    slots = np.broadcast_to(slots, (*s.batch, *slots.shape[-2:]))
    return np.repeat(slots, s.group, axis=-2)[..., None, :]


def _perturb(p, rng):
    """``p`` with garbage where the spec says nothing may read it; returns the changed
    problem, the rows ``(*batch, Hq, Lq)`` that attend a changed K/V slot (those may
    change) and the rows that attend a NaN key (those must be NaN)."""
    spec, keep, new = p.spec, attended(p), {}
    # Keys: anything, anywhere. Rows that attend a changed slot are excluded below.
    k_slots = rng.random(p.k.shape[:-1]) < 0.3
    k_bad = _garbage(rng, p.k.shape, spec.dtype, finite=False)
    k_bad = np.where(rng.random(p.k.shape) < 0.5, k_bad, p.k)
    new["k"] = np.where(k_slots[..., None], k_bad, p.k)
    k_nan = np.isnan(new["k"]).any(-1)
    k_slots = (new["k"] != p.k).any(-1) | k_nan
    # Values: non-finite only where kv_lengths masks the slot for every batch entry that
    # reads it (a bool mask cannot protect V from 0 * NaN: ATT-LEAK-2).
    kv_len = np.broadcast_to(
        np.asarray(p.opts.get("kv_lengths", spec.lk)), spec.batch
    )[..., None, None]
    past = reduce_to(np.arange(spec.lk) >= kv_len, (*spec.kv_batch, 1, spec.lk))
    v_slots = rng.random(p.v.shape[:-1]) < 0.3
    v_bad = np.where(past[..., None], _garbage(rng, p.v.shape, spec.dtype, finite=False),
                     _garbage(rng, p.v.shape, spec.dtype, finite=True))
    new["v"] = np.where(v_slots[..., None], v_bad, p.v)
    v_slots = (new["v"] != p.v).any(-1) | np.isnan(new["v"]).any(-1)
    # Query rows whose every broadcast image is empty: their scores are all masked.
    empty_q = reduce_to(~keep.any(-1), p.q.shape[:-1])
    q_slots = empty_q & (rng.random(p.q.shape[:-1]) < 0.5)
    new["q"] = np.where(q_slots[..., None],
                        _garbage(rng, p.q.shape, spec.dtype, finite=False), p.q)
    # Bias entries that something other than the bias masks (ATT-LEAK-1).
    if "bias" in p.opts:
        bias = p.opts["bias"]
        masked = reduce_to(~attended(p, with_bias=False), bias.shape)
        b_slots = masked & (rng.random(bias.shape) < 0.5)
        new["bias"] = np.where(b_slots, _garbage(rng, bias.shape, spec.bias[1],
                                                 finite=False), bias)
    reads = (keep & (_heads_slots(p, k_slots) | _heads_slots(p, v_slots))).any(-1)
    nan_rows = (keep & _heads_slots(p, k_nan)).any(-1)
    return p.replace(**new), reads, nan_rows


def _call_quietly(p, xb, **kw):
    with warnings.catch_warnings():
        # Garbage at masked positions may overflow on the way (NumPy warns); only the
        # results count here. The other properties keep the suite's warnings-are-errors
        # rule for attnspec, since their inputs are moderate.
        warnings.simplefilter("ignore", RuntimeWarning)
        return p.call(xb, **kw)


def _assert_unchanged(names, base, got, same, spec):
    for name, a, b in zip(names, base, got, strict=False):
        rows = same if name == "lse" else same[..., None]
        differ = rows & ~((a == b) | (np.isnan(a) & np.isnan(b)))
        assert not differ.any(), (
            f"{name} of a row that attends no changed K/V slot changed "
            f"{_where_bad(differ, a, b)}; {spec}"
        )


def test_masked_positions_have_no_influence(xb):
    """ATT-LEAK-1, ATT-LEAK-2, ATT-BIAS-1, ATT-LEN-2, ATT-NAN-1: garbage written into K
    (NaN, +-inf, huge), into V (non-finite only past ``kv_lengths``, where the spec promises
    it cannot leak; finite elsewhere), into the query rows of empty rows and into bias entries
    that mask, causal, window or lengths already mask, leaves every row that attends none
    of the changed K/V slots bit-for-bit unchanged (out, lse, weights); a row that attends a
    NaN key gives NaN out and lse."""

    @_fuzz(xb, "no_leak", specs(xb.dtypes, max_blocks=max_blocks(xb)))
    def check(xb, spec):
        p = build(spec)
        base = p.call(xb)
        _check_empty_rows(p, base[0], base[1])
        changed, reads, nan_rows = _perturb(p, np.random.default_rng(spec.seed ^ 0x5EED))
        got = _call_quietly(changed, xb)
        names = ("out", "lse", "weights") if spec.return_weights else ("out", "lse")
        _assert_unchanged(names, base, got, ~reads, spec)
        assert np.isnan(got[1][nan_rows]).all(), f"a NaN key did not reach lse; {spec}"
        assert np.isnan(got[0][nan_rows]).all(), f"a NaN key did not reach out; {spec}"


# -- (d) ---------------------------------------------------------------------------------------


@st.composite
def _with_chunks(draw, dtypes, blocks):
    """A spec and a chunk size for it (never 0 or None: the chunked path itself)."""
    spec = draw(specs(dtypes, max_blocks=blocks))
    return spec, draw(chunk_sizes(spec.lq, spec.lk, blocks))


def test_chunked_matches_direct(xb):
    """ATT-LSE-1, ATT-WEIGHTS-1 (``chunk_size`` convention of docs/spec.md): the chunked
    online-softmax path with random blocks (1, odd, larger than the sequence, unequal
    query/key blocks) gives the direct path's out, lse and weights within twice the
    rounding budget, with the same empty rows."""

    @_fuzz(xb, "chunked_vs_direct", _with_chunks(xb.dtypes, max_blocks(xb)))
    def check(xb, example):
        spec, chunk = example
        p = build(spec)
        direct = p.call(xb, chunk_size=0)
        blocked = p.call(xb, chunk_size=chunk)
        _check_empty_rows(p, direct[0], direct[1], "direct: ")
        _check_empty_rows(p, blocked[0], blocked[1], "chunked: ")
        bounds = error_bounds(p, c=4.0)
        names = ("out", "lse", "weights") if spec.return_weights else ("out", "lse")
        for name, a, b in zip(names, direct, blocked, strict=False):
            if name == "lse":
                assert np.array_equal(a == -np.inf, b == -np.inf), spec
                a, b = np.where(a == -np.inf, 0.0, a), np.where(b == -np.inf, 0.0, b)
            _assert_within(f"chunk_size={chunk} {name}", b, a, bounds[name], spec)


# -- (e) ---------------------------------------------------------------------------------------


def test_matches_float64(xb):
    """ATT-DTYPE-1, ATT-DTYPE-2, ATT-LSE-1, ATT-WEIGHTS-1, ATT-DROPOUT-1, ATT-SOFTCAP-1,
    ATT-GQA-1, ATT-CAUSAL-2, ATT-WINDOW-1, ATT-LEN-1, ATT-LEN-2: out, lse and weights agree
    with the float64 evaluation of the spec on the same (dtype-exact) inputs within the
    rounding budget of the accumulation dtype; out has the input dtype, lse float32 (float64
    for float64 input); -inf lse exactly on empty rows."""

    @_fuzz(xb, "float64", specs(xb.dtypes, max_blocks=max_blocks(xb)))
    def check(xb, spec):
        p = build(spec)
        got = p.call(xb)
        out_dtype, lse_dtype = got[-2:]
        assert out_dtype == xb.dtype(spec.dtype), f"out dtype {out_dtype}; {spec}"
        assert lse_dtype == xb.dtype(_acc(spec.dtype)), f"lse dtype {lse_dtype}; {spec}"
        _check_empty_rows(p, got[0], got[1])
        want = model(p)
        bounds = error_bounds(p, c=2.0)
        names = ("out", "lse", "weights") if spec.return_weights else ("out", "lse")
        for name, g, w in zip(names, got, want, strict=False):
            if name == "lse":
                g, w = np.where(w == -np.inf, 0.0, g), np.where(w == -np.inf, 0.0, w)
            _assert_within(name, g, w, bounds[name], spec)


# -- (f) implementation="auto" ------------------------------------------------------------------


@st.composite
def _native_specs(draw, dtypes, blocks):
    """Specs a native kernel may take: no mask, bias, softcap, window, q_lengths, dropout
    or explicit chunk_size (those always take the portable path)."""
    spec = draw(specs(dtypes, max_blocks=blocks))
    spec = dataclasses.replace(spec, mask=None, bias=None, softcap=None, window=None,
                               q_lengths=None, dropout=None, chunk_size=None,
                               return_weights=False)
    if draw(st.booleans()):  # what every kernel takes: 4-d, one batch size, Dv == Dk
        batch = (draw(st.integers(1, 3)),)
        spec = dataclasses.replace(spec, batch=batch, q_batch=batch, kv_batch=batch,
                                   dv=spec.dk, kv_lengths=None)
    return spec


def test_auto_implementation(xb):
    """ATT-EMPTY-1, ATT-BOUND-1, ATT-LEAK-1, ATT-LEAK-2, ATT-NAN-1, ATT-DTYPE-2:
    ``implementation="native"`` where a native kernel (torch SDPA,
    ``jax.nn.dot_product_attention``) accepts the call -- also the kernels that ``"auto"``
    passes over as slower -- and ``"auto"`` (the portable path) elsewhere keep the spec's
    output: finite, 0 on empty rows, within the float32/float64 rounding budget of the
    float64 result, and K/V garbage at masked positions reaches no row that does not
    attend it (the last only where no kernel ran: the built-in kernels promise the spec
    for finite inputs only, and "auto" never takes them)."""
    native = 0

    @_fuzz(xb, "auto", _native_specs(xb.dtypes, max_blocks(xb)))
    def check(xb, spec):
        nonlocal native
        p = build(spec)
        kernel = p.native_kernel(xb, "native")
        impl = "auto" if kernel is None else "native"
        native += kernel is not None
        out, dtype = p.call(xb, implementation=impl)
        assert dtype == xb.dtype(spec.dtype), f"out dtype {dtype}; {spec}"
        empty = ~attended(p).any(-1)
        assert np.isfinite(out).all(), f"out not finite {_where_bad(~np.isfinite(out), out)}"
        assert np.all(out[empty] == 0.0), f"an empty row's output is not exactly 0; {spec}"
        _assert_within("out", out, model(p)[0], error_bounds(p, c=2.0)["out"], spec)
        if kernel is not None:
            # The built-in kernels promise the spec for finite inputs only (attnspec.native:
            # not ``exact``), which is why "auto" never takes them; garbage is not theirs.
            return
        changed, reads, nan_rows = _perturb(p, np.random.default_rng(spec.seed ^ 0x5EED))
        got, _ = _call_quietly(changed, xb, implementation=impl)
        _assert_unchanged(("out",), (out,), (got,), ~reads, spec)
        assert np.isnan(got[nan_rows]).all(), f"a NaN key did not reach out; {spec}"

    print(f"auto[{xb.name}]: {native} examples took a native kernel")


@st.composite
def _softmax_problems(draw, dtypes):
    dtype = draw(st.sampled_from(dtypes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=1, max_size=3)))
    magnitude = 10.0 ** draw(st.integers(-6, 4)) * draw(st.sampled_from([1.0, 3.0]))
    x = rng.standard_normal(shape) * magnitude + draw(st.sampled_from([0.0, magnitude]))
    x = round_to(np.clip(x, -_max(dtype) / 2, _max(dtype) / 2), dtype)  # finite in dtype
    x[rng.random(shape) < draw(st.sampled_from([0.0, 0.3]))] = -np.inf
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    where = None
    if draw(st.booleans()):
        wshape = tuple(n if draw(st.booleans()) else 1 for n in shape)
        where = rng.random(wshape) < draw(st.sampled_from([0.2, 0.7]))
        if draw(st.booleans()):  # NaN and inf where nothing may read them (SMX-2)
            bad = np.broadcast_to(~where, shape) & (rng.random(shape) < 0.5)
            x[bad] = rng.choice([np.nan, np.inf, -np.inf], size=int(bad.sum()))
    return dtype, x, axis, where, draw(st.booleans())


def _float64_softmax(x, axis, where):
    """softmax, log_softmax and logsumexp in float64 from SMX-1..3 (keepdims)."""
    inc = np.broadcast_to(True if where is None else where, x.shape) & (x > -np.inf)
    xs = np.where(inc, x, -np.inf)
    empty = ~inc.any(axis, keepdims=True)
    m = np.where(empty, 0.0, np.max(xs, axis=axis, keepdims=True, initial=-np.inf))
    with np.errstate(all="ignore"):
        e = np.where(inc, np.exp(xs - m), 0.0)
        total = np.where(empty, 1.0, e.sum(axis, keepdims=True))
        log_sm = np.where(inc, (xs - m) - np.log(total), -np.inf)
    lse = np.where(empty, -np.inf, m + np.log(total))
    return e / total, log_sm, lse


def test_softmax_family_matches_float64(xb):
    """SMX-1, SMX-2, SMX-3, SMX-5: softmax, log_softmax and logsumexp of inputs from 1e-6 to
    6e4 in magnitude (with offsets, so a missing max subtraction overflows), ``-inf``
    entries, empty rows and NaN/inf at ``where``-excluded entries agree with float64 within
    the rounding budget of the accumulation dtype, keep the input dtype and never give NaN."""

    @_fuzz(xb, "softmax_family", _softmax_problems(xb.dtypes))
    def check(xb, problem):
        dtype, x, axis, where, keepdims = problem
        xa = xb.from_numpy(x, dtype)
        kw = {} if where is None else {"where": xb.from_numpy(where)}
        got = (attnspec.softmax(xa, axis=axis, **kw),
               attnspec.log_softmax(xa, axis=axis, **kw),
               attnspec.logsumexp(xa, axis=axis, keepdims=keepdims, **kw))
        for g in got:
            assert g.dtype == xb.dtype(dtype), f"dtype {g.dtype} for {dtype} input"
        sm, lsm, lse = (np.asarray(xb.to_numpy(g), dtype=np.float64) for g in got)
        want_sm, want_lsm, want_lse = _float64_softmax(x, axis, where)
        if not keepdims:
            want_lse = np.squeeze(want_lse, axis=axis)
        # softmax_j = exp(x_j - m) / S: the error of x_j - m, eps |x_j - m|, is damped by
        # the weight itself (|x_j - m| exp(x_j - m) <= 1/e), so only the n-term sum, the
        # exp and the division count, plus the final rounding to the dtype.
        eps, eps_out = EPS[_acc(dtype)], EPS[dtype]
        n = x.shape[axis]
        tiny = _unit(dtype)
        sm_bound = 2 * (n + 4) * eps + eps_out * want_sm + tiny
        _assert_within("softmax", sm, want_sm, sm_bound, problem)
        finite = np.isfinite(want_lsm)
        assert np.array_equal(np.isfinite(lsm), finite), problem
        assert not np.isnan(lsm).any(), problem
        lsm_bound = 2 * (np.abs(want_lsm) + n + 4) * eps + eps_out * np.abs(want_lsm) + tiny
        _assert_within("log_softmax", np.where(finite, lsm, 0.0),
                       np.where(finite, want_lsm, 0.0), lsm_bound, problem)
        lse_abs = np.abs(np.where(np.isfinite(want_lse), want_lse, 0.0))
        lse_bound = 2 * (lse_abs + n + 4) * eps + eps_out * lse_abs + tiny
        finite = np.isfinite(want_lse)
        assert np.array_equal(lse == -np.inf, want_lse == -np.inf), problem
        assert np.isfinite(lse[finite]).all(), problem
        _assert_within("logsumexp", np.where(finite, lse, 0.0),
                       np.where(finite, want_lse, 0.0), lse_bound, problem)


# -- the model itself --------------------------------------------------------------------------


def test_model_matches_loop_reference():
    """ATT-SCORE-1, ATT-MASK-1, ATT-BIAS-1: the vectorised float64 model that grades (e)
    agrees with the independent loop oracle ``tests/reference.py`` on small problems, so
    the fuzz tests grade against the spec and not against a copy of attnspec."""

    @_fuzz(None, "model_vs_reference", specs(("float64",), small=True))
    def check(_, spec):
        p = build(spec)
        want = ref_attention(p.q, p.k, p.v, **p.opts)
        got = model(p)
        bounds = error_bounds(p, c=2.0)
        for name, g, w in zip(("out", "lse", "weights"), got, want, strict=True):
            assert np.array_equal(np.isfinite(g), np.isfinite(w)), (name, spec)
            g, w = np.where(np.isfinite(w), g, 0.0), np.where(np.isfinite(w), w, 0.0)
            _assert_within(f"model {name}", g, w, bounds[name], spec)


def test_error_budget_catches_half_precision_accumulation():
    """The budget of (e) tells float32 accumulation from float16 accumulation (ATT-DTYPE-2),
    so property (e) can fail: with scores of spread ~3 on top of a bias of 1000 (ALiBi-like),
    softmax and P @ V computed in float16 land far outside the budget, while the same
    textbook computation in float32 stays inside it."""
    spec = Spec(
        seed=7, dtype="float16", batch=(), q_batch=(), kv_batch=(), hkv=1, group=1, lq=4,
        lk=9, dk=8, dv=4, logit=3.0, explicit_scale=False, v_scale=1.0, v_offset=0.0,
        mask=None, bias=None, causal=False, window=None, alignment="upper_left", softcap=None,
        kv_lengths=None, q_lengths=None, dropout=None, chunk_size=0, return_weights=False,
    )
    p = build(spec).replace(bias=np.full((1, 1), 1000.0))
    want, bound = model(p)[0], error_bounds(p, c=2.0)["out"]

    def textbook(dtype):
        q, k, v = (a.astype(dtype) for a in (p.q, p.k, p.v))
        s = (q @ np.swapaxes(k, -1, -2)) * dtype(1 / math.sqrt(spec.dk)) + dtype(1000.0)
        e = np.exp(s - s.max(-1, keepdims=True))
        out = (e / e.sum(-1, keepdims=True)) @ v
        return out.astype(np.float16).astype(np.float64)

    assert (np.abs(textbook(np.float16) - want) > 2 * bound).any()
    assert (np.abs(textbook(np.float32) - want) <= bound).all()


@pytest.mark.parametrize("profile", ["ci", "deep"])
def test_profiles_are_registered(profile):
    """Both profiles exist with the documented example counts, and never write a database."""
    from hypothesis import settings

    s = settings.get_profile(f"attnspec-fuzz-{profile}")
    assert s.database is None
    assert s.deadline is None
    assert s.max_examples == {"ci": 25, "deep": 2500}[profile]
    assert s.derandomize == (profile == "ci")
