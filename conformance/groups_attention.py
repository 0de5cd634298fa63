"""The attention groups of the catalog: each generator yields ``(params, dtypes)`` for its
group (``catalog.GROUPS`` names the rules); ``full`` widens the grid. Variants and their basic
twins are written with ``variants.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .variants import ALL_DTYPES, F32, HALF, Variants, _basic, _both, _only_basic, _shape


def score(full: bool) -> Variants:
    for dk in (1, 3, 40, 59, 64, 111, 128, 256) if full else (3, 64):
        yield from _both(_shape(dk=dk), ("float32", "float16") if not full else ALL_DTYPES)
    yield from _both(_shape(scale=0.3), ("float64", "float32"))
    # A scale above 1 multiplies the scores (a kernel that clamps it, or folds it into q
    # where that overflows, gets this wrong).
    yield from _only_basic(_shape(scale=2.0), F32)
    for lq, lk in ((1, 9), (6, 1), (3, 17), (17, 3)):
        yield from _both(_shape(lq=lq, lk=lk), F32, F32 if lq == 1 else (), square=False)


def shape_group(full: bool) -> Variants:
    for batch in ((), (2,), (2, 3)):
        yield _shape(batch=batch), ("float32", "bfloat16")
    yield _basic(_shape()), F32
    yield _shape(dv=5), ("float32", "float16")
    yield _basic(_shape()) | {"dv": 5}, F32
    yield _shape(lk=0), F32


def gqa(full: bool) -> Variants:
    for hq, hkv in ((8, 8), (8, 4), (8, 2), (8, 1)) if full else ((8, 2), (8, 1)):
        yield _shape(hq=hq, hkv=hkv), ("float32", "float16")
    # grouped heads and nothing else: Lq == Lk
    yield _shape(hq=8, hkv=2, lq=9), ("float32", "float16")


def dtype(full: bool) -> Variants:
    yield _basic(_shape()), ALL_DTYPES


def softcap(full: bool) -> Variants:
    yield from _both(_shape(softcap=5.0, magnitude=8.0), ("float32", "bfloat16"))
    yield from _both(_shape(softcap=5.0, magnitude=8.0, bias="random", mask="dense"), F32)
    yield from _only_basic(_shape(softcap=5.0, magnitude=8.0, mask="dense"), F32)


def bias(full: bool) -> Variants:
    yield from _both(_shape(bias="random"), ("float32", "float16"))
    yield from _both(_shape(bias="neg_inf"), F32)
    # broadcast over batch and heads: (Lq, Lk)
    yield from _only_basic(_shape(bias="random_qk"), F32)


def mask(full: bool) -> Variants:
    yield from _both(_shape(mask="dense"), ("float64", "float32", "float16"),
                     ("float32", "float16"))
    yield from _both(_shape(mask="sparse"), F32)
    # broadcast masks, as models pass them: (B, 1, Lq, Lk) over heads, (Lq, Lk) over all
    yield from _both(_shape(mask="dense_b1"), F32)
    yield from _only_basic(_shape(mask="dense_qk"), F32)


def causal(alignment: str) -> Callable[[bool], Variants]:
    def gen(full: bool) -> Variants:
        sizes = ((6, 9), (9, 9), (9, 6)) if alignment == "upper_left" else ((6, 9), (9, 9))
        for lq, lk in sizes:
            params = _shape(lq=lq, lk=lk, causal=True, alignment=alignment)
            twin = ("float32", "float16") if lq == lk else F32 if lq < lk else ()
            if alignment == "lower_right" and lq == lk:
                twin = ()  # square, lower-right is upper-left: the upper-left group has it
            yield from _both(params, ("float32", "float16"), twin, square=False)
        if alignment == "upper_left":
            # One query row and many keys: row 0 sees key 0 alone. A kernel that drops
            # causality for a single query row (a decode-style shortcut) fails here.
            yield from _both(_shape(lq=1, lk=33, causal=True, alignment=alignment),
                             ("float32", "bfloat16"), square=False)
        if alignment == "lower_right":
            for lk in (257, 1025) if full else (257,):
                yield from _both(_shape(lq=1, lk=lk, hq=8, hkv=1, dk=64, causal=True,
                                        alignment=alignment, kv_lengths=[lk, lk // 3]),
                                 ("float32", "bfloat16"))
    return gen


def causal_lr_empty(full: bool) -> Variants:
    # Lq > Lk with lower-right alignment: the first Lq - Lk rows attend nothing.
    yield from _both(_shape(lq=9, lk=6, causal=True, alignment="lower_right"), F32)


def window(full: bool) -> Variants:
    for window in ((2, 0), (1, 1), (None, 3)):
        for alignment in ("upper_left", "lower_right"):
            twin = F32 if alignment == "upper_left" else ()
            yield from _both(_shape(lq=6, lk=9, window=list(window), alignment=alignment),
                             F32, twin)
    yield from _both(_shape(window=[3, None], causal=True), ("float32", "float16"))
    # Lq == Lk in both alignments, in bfloat16: what flash-attention's windows can express.
    yield from _both(_shape(lq=9, window=[2, 1]), ("float32", "bfloat16"))


def kv_lengths(full: bool) -> Variants:
    yield from _both(_shape(kv_lengths=[9, 4]), ("float32", "float16"))
    yield from _both(_shape(kv_lengths=[5, 1], causal=True, alignment="lower_right"), F32)


def q_lengths(full: bool) -> Variants:
    yield from _both(_shape(q_lengths=[6, 2]), F32)
    yield from _both(_shape(q_lengths=[4, 2], kv_lengths=[9, 3], causal=True,
                            alignment="lower_right"), F32)


def plain(full: bool) -> Variants:
    yield from _both(_shape(), ("float64", "float32", "float16", "bfloat16"))


def weights(full: bool) -> Variants:
    yield from _both(_shape(mask="dense"), F32)
    yield from _only_basic(_shape(), ("bfloat16",))


def dropout(full: bool) -> Variants:
    yield from _both(_shape(dropout_p=0.25), F32)


def sinks(full: bool) -> Variants:
    # One extra logit per row in the denominator (gpt-oss; ATT-SINK-1): with masks, with
    # rows that attend nothing but the sink, per head, and large enough to overflow half.
    yield from _both(_shape(sinks="random"), ("float32", "float16", "bfloat16"),
                     ("float32", "bfloat16"))
    yield from _both(_shape(sinks="random", mask="empty_rows"), F32)
    yield from _both(_shape(sinks="per_head", causal=True, bias="random"), F32)
    yield from _only_basic(_shape(sinks="large"), ("float32", "float16"))
    # closed form: q = 0 gives out = count * mean(v) / (count + exp(sink)); batch entry 1
    # attends nothing (kv_lengths 0): out 0, lse = its sink
    yield from _both(_shape(sinks="random", logits="all_equal", kv_lengths=[9, 0]),
                     ("float64", "float32"), F32)


def alibi(full: bool) -> Variants:
    # -slope * |q_pos - kv_pos| after the bias (ATT-ALIBI-1): the paper's slopes, random
    # slopes per batch entry and head, and lower-right positions that differ per batch entry
    # (kv_lengths, q_lengths), where a kernel that ignores the alignment offset is wrong.
    yield from _both(_shape(alibi="geometric"), ("float32", "float16", "bfloat16"),
                     ("float32", "bfloat16"))
    yield from _both(_shape(alibi="random", mask="dense", bias="random"), F32)
    yield from _both(_shape(alibi="random", causal=True, alignment="lower_right",
                            kv_lengths=[9, 5]), F32)
    yield from _both(_shape(alibi="geometric", alignment="lower_right", q_lengths=[6, 3],
                            kv_lengths=[9, 7]), ("float64", "float32"), F32)


def positions(full: bool) -> Variants:
    # Causal, window and ALiBi in position space (ATT-POS-1): chunked prefill, each batch
    # entry's queries at their own offset; a cache with evicted slots (gaps, a repeated
    # position) under causal with ALiBi, which reads the positions too.
    yield from _both(_shape(positions="prefill_offset", causal=True),
                     ("float32", "float16", "bfloat16"), ("float32", "bfloat16"))
    yield from _both(_shape(positions="holes", causal=True, alibi="geometric"), F32)
    yield from _both(_shape(positions="prefill_offset", window=[3, 1]), F32)


def segments(full: bool) -> Variants:
    # Packed varlen (ATT-SEG-1): three documents and padding per row, self-attention packing
    # (Lq == Lk) and new queries per document against its keys (lower-right per segment);
    # ids that are not contiguous with a window and ALiBi per segment; the closed form
    # (q = 0: each row the mean of its segment's attended values).
    yield from _both(_shape(segments="packed", causal=True, lq=9),
                     ("float32", "float16", "bfloat16"), ("float32", "bfloat16"))
    yield from _both(_shape(segments="packed", causal=True, alignment="lower_right"), F32)
    yield from _both(_shape(segments="scattered", window=[2, 2], alibi="random", lq=9), F32)
    yield from _both(_shape(segments="packed", causal=True, lq=9, logits="all_equal"),
                     ("float64", "float32"), F32)
    yield from _only_basic(_shape(segments="packed", lq=9, sinks="random"), F32)


def paged(full: bool) -> Variants:
    # A paged KV cache (ATT-PAGE-1): the same call over page pools through a block table,
    # pages shuffled, one shared, partly filled last pages, garbage in unused pages and dead
    # entries; decode (one query per sequence) and chunked prefill against the cache.
    yield from _both(_shape(lq=1, causal=True, alignment="lower_right", kv_lengths=[9, 6],
                            transform="paged"), ("float32", "float16", "bfloat16"),
                     ("float32", "bfloat16"))
    yield from _both(_shape(lq=3, causal=True, alignment="lower_right", kv_lengths=[7, 9],
                            transform="paged"), F32)
    yield from _both(_shape(kv_lengths=[9, 5], transform="paged"), ("float64", "float32"),
                     ("float32", "bfloat16"))


def consistency_batch(full: bool) -> Variants:
    # The implementation against itself (ATT-CONS-1): batch entry 1 alone, each packed
    # sequence alone; bit for bit where batch_invariant is declared.
    yield from _both(_shape(consistency="batch_alone"), ("float32", "bfloat16"),
                     ("float32", "bfloat16"))
    yield from _both(_shape(causal=True, consistency="batch_alone", bitwise=True), F32)
    yield from _only_basic(_shape(lq=9, causal=True, segments="packed",
                                  consistency="packed_alone"), F32)
    yield from _only_basic(_shape(lq=9, causal=True, segments="packed",
                                  consistency="packed_alone", bitwise=True), F32)


def consistency_split(full: bool) -> Variants:
    # The same rows computed in pieces (ATT-CONS-2): keys split in two and merged through
    # lse, a prefill in two chunks (lower-right), the cache paged.
    yield from _both(_shape(consistency="split_kv"), ("float32", "float16"),
                     ("float32", "float16"))
    yield from _both(_shape(causal=True, alignment="lower_right",
                            consistency="chunked_prefill"), F32)
    yield from _both(_shape(batch=(1,), kv_lengths=[7], consistency="paged"), F32)


def mods(full: bool) -> Variants:
    # FlexAttention's callables (ATT-MOD-1): a score_mod after softcap and before the bias
    # (a per-head cap is nonlinear: the order shows), mask_mods that read the indices, the
    # batch entry and the head, and both with the spec's own masks.
    yield from _both(_shape(score_mod="relative_bias", causal=True),
                     ("float32", "float16", "bfloat16"), ("float32", "bfloat16"))
    yield from _both(_shape(score_mod="head_softcap", bias="random", magnitude=4.0), F32)
    yield from _both(_shape(mask_mod="stripes", lq=9), ("float32", "bfloat16"))
    yield from _both(_shape(mask_mod="prefix_lm", score_mod="relative_bias", lq=9), F32)
    yield from _both(_shape(mask_mod="batch_head", kv_lengths=[9, 6]), F32)
    yield from _both(_shape(mask_mod="stripes", segments="packed", lq=9, logits="all_equal"),
                     ("float64", "float32"), F32)


def poison_segments(full: bool) -> Variants:
    # NaN/inf in padding tokens' K/V and in the keys of a segment no query reads
    # (ATT-SEG-2): nothing reaches another segment's rows.
    yield from _both(_shape(segments="packed", causal=True, lq=9, poison="segments"),
                     ("float32", "bfloat16"))
    yield from _both(_shape(segments="scattered", poison="segments", lq=9), F32)


def empty(full: bool) -> Variants:
    yield from _both(_shape(mask="empty_rows"), ("float32", "float16"))
    yield from _both(_shape(bias="row_neg_inf"), F32)
    yield from _both(_shape(kv_lengths=[9, 0]), F32)


def poison_scores(full: bool) -> Variants:
    yield from _both(_shape(mask="key_columns", bias="random", poison="scores"),
                     ("float32", "float16"))
    # the same leak through one masking input alone: a mask, or a -inf bias
    yield from _both(_shape(mask="key_columns", poison="scores"), F32)
    yield from _only_basic(_shape(bias="key_columns", poison="scores"), F32)


def poison_kv(full: bool) -> Variants:
    yield from _both(_shape(kv_lengths=[5, 2], poison="kv"), ("float32", "bfloat16"))


def nonfinite(full: bool) -> Variants:
    yield from _both(_shape(poison="nan"), F32)
    yield from _both(_shape(poison="pos_inf"), F32)
    # NaN in one query entry: that row's scores are all NaN (no bias needed)
    yield from _only_basic(_shape(poison="query_nan"), ("float32", "float16"))


def bound(full: bool) -> Variants:
    yield from _both(_shape(magnitude=30.0, mask="dense"), ("float32", "float16"), F32)
    yield from _only_basic(_shape(magnitude=30.0), ("float32", "bfloat16"))


def single_key(full: bool) -> Variants:
    yield from _both(_shape(mask="single_key"), ("float64", "float32"), F32)
    # one key and one query: out is that key's value row whatever the score
    yield from _only_basic(_shape(lq=1, lk=1, magnitude=30.0), ("float32", "float16"))


def equal_scores(full: bool) -> Variants:
    yield from _both(_shape(logits="all_equal", causal=True), ("float32", "float16"), F32)
    yield from _both(_shape(logits="all_equal", kv_lengths=[9, 3]), F32)
    yield from _only_basic(_shape(logits="all_equal"), ("float32", "bfloat16"))


def permute(full: bool) -> Variants:
    yield from _both(_shape(mask="dense", bias="random", transform="permute"), F32)
    yield from _only_basic(_shape(mask="dense", transform="permute"), F32)
    yield from _only_basic(_shape(transform="permute"), ("float32", "float16"))


def shift(full: bool) -> Variants:
    yield from _both(_shape(transform="shift", shift=100.0), ("float32", "float16"))
    # float64 at logits ~1e4 with the weight still shared: every score is rounded by about
    # eps64 x 1e4, which the tolerance's golden-error term holds (conformance/tolerance.py)
    yield from _both(_shape(transform="shift", shift=1e4), ("float64",))


def extreme(full: bool) -> Variants:
    for magnitude in (1.0, 10.0, 100.0, 1e3, 1e4) if full else (10.0, 1e3, 1e4):
        yield from _both(_shape(magnitude=magnitude),
                         ("float32", "float16") if full else F32)
    yield from _both(_shape(logits="one_dominant", dk=64), ("float32", "float16"))
    yield from _both(_shape(logits="near_max", dk=64), ("float16",))
    # logits ~ 1e3 in bfloat16: an implementation without max subtraction overflows
    yield from _only_basic(_shape(magnitude=1e3), ("bfloat16",))


def accumulate(full: bool) -> Variants:
    # 1025 keys by default: at 513 a float16-accumulating implementation slips under the
    # tolerance for some seeds (tests/test_conformance_broken.py).
    for lk in (513, 1025) if full else (1025,):
        yield _shape(batch=(), hq=2, hkv=2, lq=4, lk=lk, dk=128), HALF
        # the basic shape (one batch dim, Lq == Lk), one head to keep it cheap
        yield _shape(batch=(1,), hq=1, hkv=1, lq=lk, lk=lk, dk=64), HALF


def grad(full: bool) -> Variants:
    # Gradients dq, dk, dv (dbias with a bias) of out for a random cotangent (ATT-GRAD-2).
    # The default keeps one case per option (each one is a compilation under JAX); the full
    # grid adds head dims, MQA and the longest row, in every dtype.
    yield from _both(_shape(backward=True), ALL_DTYPES, ("float32", "bfloat16"))
    for dk in (1, 40, 128, 256) if full else ():
        yield _shape(dk=dk, backward=True), F32
    if full:
        yield _shape(hq=8, hkv=1, backward=True), F32
    yield from _both(_shape(lq=9, causal=True, backward=True), F32)
    yield _shape(mask="dense", bias="random", backward=True), ("float32", "bfloat16")
    yield _shape(softcap=5.0, magnitude=8.0, bias="random", mask="dense", backward=True), F32
    yield _shape(dropout_p=0.25, backward=True), F32
    yield _shape(lq=9, window=[2, 1], backward=True), F32
    yield _shape(scale=0.3, dv=5, backward=True), F32
    yield _shape(lq=9, segments="packed", causal=True, alibi="geometric", backward=True), F32
    # dsinks and dalibi_slopes (grad_sinks, grad_alibi): learned in gpt-oss and ALiBi
    # variants; a fully masked row is a sink-only row, whose dsinks term is 0.
    yield _shape(sinks="random", mask="empty_rows", backward=True), ("float32", "bfloat16")
    yield _shape(alibi="random", alignment="lower_right", backward=True), F32
    yield _shape(lq=9, mask_mod="prefix_lm", backward=True), F32
    # one long row: the backward's reductions over 257 (1025) keys, where half precision
    # shows (MQA: dk and dv sum over 8 query heads)
    for lk in (257, 1025) if full else (257,):
        yield (_shape(lq=1, lk=lk, hq=8, hkv=1, dk=64, causal=True, alignment="lower_right",
                      kv_lengths=[lk, lk // 3], backward=True), ("bfloat16",))


def grad_masked(full: bool) -> Variants:
    # Fully masked rows and masked keys: zero gradient, never NaN (ATT-GRAD-1, ATT-EMPTY-1),
    # one case per way of masking.
    yield from _both(_shape(mask="empty_rows", backward=True), F32)
    yield _shape(kv_lengths=[9, 0], backward=True), F32
    yield _shape(bias="row_neg_inf", backward=True), F32
    yield _shape(lq=9, lk=6, causal=True, alignment="lower_right", backward=True), F32
    yield _shape(q_lengths=[4, 2], kv_lengths=[9, 3], causal=True, alignment="lower_right",
                 backward=True), F32


def grad_poison_kv(full: bool) -> Variants:
    # NaN/inf in K/V rows past kv_lengths reach no gradient (ATT-GRAD-1, ATT-LEAK-2).
    yield from _both(_shape(kv_lengths=[5, 2], poison="kv", backward=True), F32)


#: Calls a determinism case repeats (ATT-DET-1).
REPEATS = 3


def determinism(backward: bool) -> Callable[[bool], Variants]:
    def gen(full: bool) -> Variants:
        # Large enough for a framework's CPU kernels to split their work over threads
        # (blocks of query rows, heads), small enough to stay cheap three times over.
        # Causal without a mask: what the native dispatch sends to the framework kernels.
        extra: dict[str, Any] = {"backward": True} if backward else {}
        yield from _both(_shape(hq=8, hkv=2, lq=64, lk=128, dk=32, causal=True,
                                repeat=REPEATS, **extra), F32)
    return gen


def dtype_errors(full: bool) -> Variants:
    yield from _both(_shape(error="mixed_dtypes"), F32)


def arg_errors(full: bool) -> Variants:
    yield from _both(_shape(error="head_dim_mismatch"), F32)
    yield _shape(error="heads_not_divisible"), F32
