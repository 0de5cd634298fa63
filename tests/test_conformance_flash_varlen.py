"""flash-attention's packed-sequence and KV-cache entry points (``flash_attn.varlen``,
``flash_attn.kvcache``) and ALiBi in ``flash_attn``.

flash-attention needs a CUDA device, so the declarations are pinned here and the translations
are graded on stand-ins: ``flash_attn_varlen_func``, ``flash_attn_with_kvcache`` and
``flash_attn_func`` as flash-attention documents them (shapes, int32 offsets and lengths,
bottom-right alignment per sequence), computed by attnspec per sequence on torch CPU, plus
the two behaviours the adapters declare as deviations, read from the kernel source (an empty
row's lse is ``+inf``; causal ALiBi adds ``+slope * j``). A GPU run grades the real kernels.
"""

from __future__ import annotations

import builtins
import dataclasses
import math
import sys
import types
import warnings

import numpy as np
import pytest

import attnspec
from attnspec.conformance import input_forms
from attnspec.conformance.adapters import NATIVE, resolve
from attnspec.conformance.cases import Case, make_inputs
from attnspec.conformance.catalog import catalog
from attnspec.conformance.golden import golden, naive
from attnspec.conformance.tolerance import grade

CASES = catalog()


def _cases(*groups: str) -> list[Case]:
    """The groups' cases, with a bfloat16 copy of every float32 case that has none (most
    value cases are float32 only; the kernels take float16 and bfloat16)."""
    chosen = [c for c in CASES if c.id.split("/", 1)[0] in groups]
    ids = {c.id for c in chosen}
    copies = [dataclasses.replace(c, id=c.id.rsplit("/", 1)[0] + "/bfloat16", dtype="bfloat16")
              for c in chosen if c.dtype == "float32"]
    return chosen + [c for c in copies if c.id not in ids]


def _extra(name: str, **params) -> Case:
    """A bfloat16 case beyond the catalog's (h4x2, L = 9, D = 16, B = 2 unless given)."""
    full = {"hq": 4, "hkv": 2, "lq": 9, "lk": 9, "dk": 16, "dv": 16, "batch": [2], **params}
    return Case(id=f"extra/{name}/bfloat16", op="attention", rules=("ATT-ALIBI-1",),
                dtype="bfloat16", params=full)


#: Combinations the catalog has in float32 only or not at all: ALiBi per packed document
#: (slopes per batch row, repeated per document), with a window aligned per document, causal
#: ALiBi (the lse deviation), two batch dims, pages with a window, no batch dim.
EXTRA = [
    _extra("causal-alibi-segments", causal=True, alibi="random", segments="packed"),
    _extra("window-alibi-segments", lq=6, alignment="lower_right", window=[2, 1],
           alibi="random", segments="packed"),
    _extra("batch2-segments", batch=[2, 1], causal=True, segments="packed"),
    _extra("window-alibi-lengths", lq=6, alignment="lower_right", window=[1, 1],
           alibi="geometric", kv_lengths=[9, 5], q_lengths=[6, 3]),
    _extra("causal-alibi", hkv=4, causal=True, alibi="geometric"),
    _extra("window-alibi", lq=6, alignment="lower_right", window=[3, 0], alibi="random"),
    _extra("window-alibi-paged", lq=3, alignment="lower_right", window=[2, 0], alibi="random",
           kv_lengths=[7, 9], transform="paged"),
    _extra("batch0-paged", batch=[], lq=2, alignment="lower_right", causal=True,
           kv_lengths=[6], transform="paged"),
]


def _grade(adapter, cases) -> dict[str, tuple[str, str]]:
    """``{case id: (outcome, message)}`` of the applicable cases: ``pass``, ``xfail`` (a
    declared deviation, failing), or ``FAIL`` (a failure no deviation covers, or a deviation
    that did not show)."""
    outcomes = {}
    for case in cases:
        if adapter.not_applicable(case) is not None:
            continue
        inputs = make_inputs(case)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            message = None
            try:
                result = adapter.run(case, inputs)
            except Exception as exc:
                if case.expect == "value" or not isinstance(exc, getattr(builtins, case.expect)):
                    message = f"raised {type(exc).__name__}: {exc}"
            else:
                if case.expect != "value":
                    message = f"did not raise {case.expect}"
                else:
                    verdict = grade(case, result.outputs, result.dtypes, golden(case, inputs),
                                    naive(case, inputs))
                    message = None if verdict.passed else verdict.message
        deviation = next((d for d in adapter.deviations if d.matches(case)), None)
        if deviation is None:
            outcomes[case.id] = ("pass", "") if message is None else ("FAIL", message)
        else:
            outcomes[case.id] = (("xfail", message) if message is not None else
                                 ("FAIL", f"passed, but declared ({deviation.reason})"))
    return outcomes


def _check(outcomes, groups) -> None:
    failures = [f"{i}: {m}" for i, (o, m) in outcomes.items() if o == "FAIL"]
    assert not failures, "\n".join(failures)
    ran = {i.split("/", 1)[0] for i in outcomes}
    assert ran >= set(groups), set(groups) - ran


# ------------------------------------------------------------------------- declarations


@pytest.mark.parametrize("name", ["flash_attn.varlen", "flash_attn.kvcache"])
def test_declaration(name):
    """Neither can run here (no CUDA); their declarations are pinned."""
    assert name in NATIVE
    adapter = resolve(name)
    assert adapter.backend_name == "torch-cuda"
    assert adapter.supported_dtypes == ("float16", "bfloat16")
    assert {"gqa", "lq_ne_lk", "scale", "softcap", "causal", "causal_lower_right", "window",
            "alibi", "kv_lengths", "lse", "batch0", "batch2"} <= adapter.features
    assert not {"mask", "bias", "dv_ne_dk", "dropout", "sinks", "positions", "empty_keys",
                "backward", "empty_rows"} & adapter.features
    if name == "flash_attn.varlen":
        assert {"segments", "q_lengths"} <= adapter.features
        assert "paged" not in adapter.features
    else:
        assert "paged" in adapter.features
        assert not {"segments", "q_lengths"} & adapter.features
    reason = adapter.unavailable()
    if reason is not None:
        assert reason.startswith((f"{name}:", "torch-cuda:")), reason


def test_what_is_not_applicable(monkeypatch):
    varlen = _on_cpu("flash_attn.varlen", monkeypatch)
    kvcache = _on_cpu("flash_attn.kvcache", monkeypatch)
    cases = _cases("segments", "poison-segments", "paged", "causal-upper-left")

    def first(group: str, part: str) -> Case:
        return next(c for c in cases if c.id.startswith(group + "/") and part in c.id
                    and c.dtype == "bfloat16")

    # ids cu_seqlens cannot express; packed ones (poisoned: padding mid-row) it can
    assert "scattered" in varlen.not_applicable(first("segments", "segments=scattered"))
    packed = first("poison-segments", "segments=packed")
    assert varlen.not_applicable(packed) is None
    # segments with lengths: a declared constraint
    both = dataclasses.replace(packed, features=packed.features | {"kv_lengths"})
    assert "kv_lengths and segments" in varlen.not_applicable(both)
    # the catalog's pages hold 4 tokens; the kernel takes multiples of 256
    assert "256" in kvcache.not_applicable(first("paged", ""))
    # upper-left alignment only where it is bottom-right's
    upper = first("causal-upper-left", ".q6.k9.")
    for adapter in (varlen, kvcache, _on_cpu("flash_attn", monkeypatch)):
        assert "bottom-right" in adapter.not_applicable(upper)


# --------------------------------------------------------------------------- stand-ins


def _sequence(q, k, v, scale, causal, window_size, softcap, slopes):
    """One sequence, tokens first (``(Lq, H, D)``, ``(Lk, Hk, D)``): out ``(Lq, H, D)`` and lse
    float32 ``(H, Lq)``, bottom-right aligned as documented."""
    import torch

    nq, nk = q.shape[0], k.shape[0]
    if nk == 0:
        return q.new_zeros(q.shape), torch.full((q.shape[1], nq), math.inf)
    window = None
    if tuple(window_size) != (-1, -1):
        window = tuple(None if w < 0 else w for w in window_size)
    out, lse = attnspec.scaled_dot_product_attention(
        *(attnspec.packed_to_bhld(x) for x in (q, k, v)), scale=scale, causal=causal,
        window=window, alignment="lower_right", softcap=softcap or None, alibi_slopes=slopes,
        return_lse=True)
    lse = lse[0]
    # As the kernel source does (the adapters' declared deviations): the kernel's is_causal
    # ALiBi adds +slope * j, and an empty row's lse is +inf.
    if slopes is not None and window_size[0] < 0 and (causal or window_size[1] == 0):
        lse = lse + slopes[:, None] * (torch.arange(nq) + nk - nq)
    return attnspec.bhld_to_packed(out), torch.where(torch.isneginf(lse), math.inf, lse)


def _check_common(q, k, v, alibi_slopes, batch):
    import torch

    assert q.dtype in (torch.float16, torch.bfloat16)
    assert k.dtype == v.dtype == q.dtype
    assert all(x.stride(-1) == 1 for x in (q, k, v))
    assert q.shape[-2] % k.shape[-2] == 0
    assert q.shape[-1] % 8 == 0
    assert q.shape[-1] <= 256
    if alibi_slopes is not None:
        assert alibi_slopes.dtype == torch.float32
        assert alibi_slopes.stride(-1) == 1
        assert tuple(alibi_slopes.shape) in ((q.shape[-2],), (batch, q.shape[-2]))
        return alibi_slopes.expand(batch, q.shape[-2])
    return [None] * batch


def fake_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False,
                block_table=None):
    """flash_attn_varlen_func as documented: q (total_q, H, D), k/v (total_k, Hk, D), int32
    cu_seqlens (B + 1,), lse (H, total_q) float32."""
    import torch

    assert q.ndim == k.ndim == v.ndim == 3
    assert k.shape == v.shape
    assert dropout_p == 0.0
    assert block_table is None
    assert return_attn_probs
    for cu, total, longest in ((cu_seqlens_q, q.shape[0], max_seqlen_q),
                               (cu_seqlens_k, k.shape[0], max_seqlen_k)):
        assert cu.dtype == torch.int32
        assert cu.shape == cu_seqlens_q.shape
        assert cu.ndim == 1
        assert int(cu[0]) == 0
        assert int(cu[-1]) == total
        assert isinstance(longest, int)
        assert longest >= int(torch.diff(cu).max())
    slopes = _check_common(q, k, v, alibi_slopes, cu_seqlens_q.shape[0] - 1)
    outs, lses = [], []
    for b in range(cu_seqlens_q.shape[0] - 1):
        qs, ks = slice(cu_seqlens_q[b], cu_seqlens_q[b + 1]), slice(cu_seqlens_k[b],
                                                                    cu_seqlens_k[b + 1])
        out, lse = _sequence(q[qs], k[ks], v[ks], softmax_scale, causal, window_size, softcap,
                             slopes[b])
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs), torch.cat(lses, dim=1), None


def fake_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                 cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                 softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                 rotary_interleaved=True, alibi_slopes=None, num_splits=0,
                 return_softmax_lse=False):
    """flash_attn_with_kvcache as documented: q (B, Lq, H, D), caches (B, Lk, Hk, D) or pages
    (num_blocks, page_block_size, Hk, D) with an int32 block_table, int32 cache_seqlens,
    causal bottom-right relative to cache_seqlens, lse (B, H, Lq) float32."""
    import torch

    assert k is None
    assert v is None
    assert rotary_cos is None
    assert rotary_sin is None
    assert cache_batch_idx is None
    assert cache_leftpad is None
    assert num_splits == 0
    assert q.ndim == k_cache.ndim == 4
    assert k_cache.shape == v_cache.shape
    batch = q.shape[0]
    slopes = _check_common(q, k_cache, v_cache, alibi_slopes, batch)
    if block_table is not None:
        assert block_table.dtype == torch.int32
        assert block_table.shape[0] == batch
        assert k_cache.shape[1] % 256 == 0, "Paged KV cache block size must be divisible by 256"
        assert cache_seqlens is not None
    else:
        assert k_cache.shape[0] == batch
    if cache_seqlens is not None:
        assert cache_seqlens.dtype == torch.int32
        assert tuple(cache_seqlens.shape) == (batch,)
    outs, lses = [], []
    for b in range(batch):
        n = k_cache.shape[1] if cache_seqlens is None else int(cache_seqlens[b])
        if block_table is None:
            keys, values = k_cache[b, :n], v_cache[b, :n]
        else:  # the live pages only: the kernel reads no other entry
            pages = block_table[b, :-(-n // k_cache.shape[1])].long()
            keys, values = (x[pages].flatten(0, 1)[:n] for x in (k_cache, v_cache))
        out, lse = _sequence(q[b], keys, values, softmax_scale, causal, window_size, softcap,
                             slopes[b])
        outs.append(out)
        lses.append(lse)
    out = torch.stack(outs)
    return (out, torch.stack(lses)) if return_softmax_lse else out


def fake_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """flash_attn_func as documented (with alibi_slopes): the KV-cache stand-in without a
    cache length."""
    out, lse = fake_kvcache(q, k, v, softmax_scale=softmax_scale, causal=causal,
                            window_size=window_size, softcap=softcap, alibi_slopes=alibi_slopes,
                            return_softmax_lse=True)
    assert dropout_p == 0.0
    assert return_attn_probs
    return out, lse, None


def _on_cpu(name: str, monkeypatch, **functions):
    """The adapter on torch CPU, its ``flash_attn`` the stand-ins."""
    from attnspec.conformance.adapters import _native_class

    reason = resolve("torch.sdpa").unavailable()
    if reason is not None:
        pytest.skip(reason)
    if functions:
        monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(**functions))
    on_cpu = type("OnCpu", (_native_class(name),), {"backends": ("torch-cpu",), "requires": ()})
    return on_cpu()


def _extras(outcomes) -> dict[str, str]:
    return {i.split("/")[1]: o for i, (o, m) in outcomes.items() if i.startswith("extra/")
            and (o != "xfail" or m.startswith("lse"))}  # causal ALiBi: out right, lse not


def test_varlen_translation_on_a_stand_in(monkeypatch):
    adapter = _on_cpu("flash_attn.varlen", monkeypatch, flash_attn_varlen_func=fake_varlen)
    groups = ("segments", "poison-segments", "kv-lengths", "q-lengths", "alibi",
              "causal-upper-left", "causal-lower-right", "causal-lower-right-empty", "window",
              "gqa", "lse", "softcap", "empty-rows", "poison-kv", "consistency-batch", "shape")
    outcomes = _grade(adapter, _cases(*groups) + EXTRA)
    _check(outcomes, groups)
    # packed documents (padding rows filled by the adapter) pass; rows the kernel leaves with
    # no key (a document with more new queries than keys) are the declared +inf deviation
    packed = [i for i in outcomes if i.startswith(("segments/", "poison-segments/"))]
    assert {"segments", "poison-segments"} <= {i.split("/")[0] for i in packed}
    assert all(outcomes[i][0] == ("xfail" if "lower_right" in i else "pass") for i in packed)
    assert "inf" in outcomes[next(i for i in packed if "lower_right" in i)][1]
    assert outcomes["q-lengths/b2.h4x2.q6.k9.d16.q_lengths=6_2/bfloat16"][0] == "pass"
    assert outcomes["empty-rows/b2.h4x2.q6.k9.d16.kv_lengths=9_0/bfloat16"][0] == "xfail"
    assert _extras(outcomes) == {
        "causal-alibi-segments": "xfail", "window-alibi-segments": "pass",
        "batch2-segments": "pass", "window-alibi-lengths": "pass", "causal-alibi": "xfail",
        "window-alibi": "pass"}


def test_kvcache_translation_on_a_stand_in(monkeypatch):
    adapter = _on_cpu("flash_attn.kvcache", monkeypatch, flash_attn_with_kvcache=fake_kvcache)
    # pages the kernel takes: the catalog's paged transform with pages of 256 tokens
    from attnspec.conformance import golden as golden_module

    monkeypatch.setattr(input_forms, "PAGE_SIZE", 256)
    monkeypatch.setattr(golden_module, "PAGE_SIZE", 256)  # its weights span the pages
    groups = ("paged", "kv-lengths", "alibi", "causal-upper-left", "causal-lower-right",
              "causal-lower-right-empty", "window", "gqa", "lse", "softcap", "empty-rows",
              "poison-kv", "consistency-split", "shape")
    outcomes = _grade(adapter, _cases(*groups) + EXTRA)
    _check(outcomes, groups)
    assert sum(i.startswith("paged/") and o == "pass" for i, (o, _) in outcomes.items()) >= 6
    assert any(i.startswith("consistency-split/") and "paged" in i for i in outcomes)
    assert outcomes["empty-rows/b2.h4x2.q6.k9.d16.kv_lengths=9_0/bfloat16"][0] == "xfail"
    assert _extras(outcomes) == {"causal-alibi": "xfail", "window-alibi": "pass",
                                 "window-alibi-paged": "pass", "batch0-paged": "pass"}


def test_flash_attn_alibi_on_a_stand_in(monkeypatch):
    adapter = _on_cpu("flash_attn", monkeypatch, flash_attn_func=fake_func)
    outcomes = _grade(adapter, _cases("alibi", "causal-lower-right", "window") + EXTRA)
    _check(outcomes, ("alibi", "causal-lower-right", "window"))
    assert {o for i, (o, _) in outcomes.items() if i.startswith("alibi/")} == {"pass"}
    assert _extras(outcomes) == {"causal-alibi": "xfail", "window-alibi": "pass"}
