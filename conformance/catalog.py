"""The case catalog: for every spec rule, the cases that test it.

``catalog()`` gives the default, representative subset (about two and a half minutes on 2
cores for every built-in adapter); ``catalog(full=True)`` the whole grid of the conformance
issue (head dims 1 to 256, Lk up to 1025, 0-2 batch dims, GQA ratios 1/2/4/8 and MQA, four
dtypes, ...). Case IDs are ``<group>/<variant>/<dtype>``; ``RULE_GROUPS`` maps every rule to
its groups.

Most variants use grouped-query heads and Lq != Lk, where kernels break; each attention
group also has variants in the *basic shape* (:func:`_basic`: one batch dim, Hq == Hkv,
Lq == Lk, Dv == Dk), and the rules about masks have variants with one masking input at a
time, so that what an implementation declares selects real cases for every rule about it
(``tests/test_conformance_coverage.py``).

Gradient cases (``params["backward"]``: groups ``grad``, ``grad-masked``, ``grad-poison-kv``,
``determinism-grad``; ``--select grad`` picks them) grade ``dq``, ``dk``, ``dv`` (``dbias``)
as well as ``out``; determinism cases (``params["repeat"]``) make the same call several times
and compare the results bit for bit.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

import attnspec

from .cases import SOFTMAX_OPS, Case
from .rules import RULES

__all__ = ["GROUPS", "RULE_GROUPS", "Group", "catalog", "required_features", "select"]

HALF = ("float16", "bfloat16")
ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")


def _shape(batch=(2,), hq=4, hkv=2, lq=6, lk=9, dk=16, dv=None, **options: Any) -> dict:
    params = {"batch": list(batch), "hq": hq, "hkv": hkv, "lq": lq, "lk": lk, "dk": dk,
              "dv": dk if dv is None else dv}
    params.update(options)
    return params


def _slug(params: dict) -> str:
    """Variant name from the parameters that differ from the defaults."""
    b = params.get("batch", [])
    parts = [f"b{'x'.join(map(str, b)) if b else 0}", f"h{params['hq']}x{params['hkv']}",
             f"q{params['lq']}", f"k{params['lk']}", f"d{params['dk']}"]
    if params.get("dv", params["dk"]) != params["dk"]:
        parts.append(f"v{params['dv']}")
    for key in sorted(params):
        if key in ("batch", "hq", "hkv", "lq", "lk", "dk", "dv", "backward"):
            continue  # "backward": the group's name says so (grad*, determinism-grad)
        value = params[key]
        if isinstance(value, (list, tuple)):
            value = "_".join("n" if x is None else str(x) for x in value)
        parts.append(f"{key}={value}")
    return ".".join(parts)


def _basic(params: dict) -> dict:
    """The same case in its basic shape: one batch dim, Hq == Hkv, Dv == Dk and (unless
    the case is about lower-right alignment) Lq == Lk, so that an implementation declaring
    none of the shape features (``features.SHAPES``) is still graded on the case's rule."""
    twin = dict(params, hkv=params["hq"], dv=params["dk"])
    if len(twin.get("batch", [])) != 1:
        if any(twin.get(n) is not None for n in ("kv_lengths", "q_lengths")):
            raise ValueError(f"a basic twin cannot change the batch of lengths: {params}")
        twin["batch"] = [2]
    if twin["lq"] != twin["lk"] and twin.get("alignment") != "lower_right":
        twin["lq"] = twin["lk"]
    return twin


def _both(params: dict, dtypes: tuple[str, ...], twin: tuple[str, ...] | None = None, *,
          square: bool = True) -> Iterator[tuple[dict, tuple[str, ...]]]:
    """A variant in ``dtypes`` and its basic twin (:func:`_basic`) in ``twin`` (default: the
    same dtypes); ``square=False`` keeps Lq and Lk, for variants that are about them. The
    attention groups yield their variants through this (or yield basic variants directly),
    so that every rule has cases a kernel without grouped-query heads or Lq != Lk can take
    (``tests/test_conformance_coverage.py`` holds the catalog to it)."""
    yield params, dtypes
    other = _basic(params)
    if not square:
        other["lq"] = params["lq"]
    if other != params:
        yield other, dtypes if twin is None else twin


def _only_basic(params: dict, dtypes: tuple[str, ...]) -> Iterator[tuple[dict, tuple[str, ...]]]:
    """A variant in its basic shape alone (where the group has grouped-query variants of its
    own already)."""
    yield _basic(params), dtypes


F32 = ("float32",)


# Each generator yields (params, dtypes) for its group; ``full`` widens the grid.
def _score(full: bool):
    for dk in (1, 3, 40, 59, 64, 111, 128, 256) if full else (3, 64):
        yield from _both(_shape(dk=dk), ("float32", "float16") if not full else ALL_DTYPES)
    yield from _both(_shape(scale=0.3), ("float64", "float32"))
    # A scale above 1 multiplies the scores (a kernel that clamps it, or folds it into q
    # where that overflows, gets this wrong).
    yield from _only_basic(_shape(scale=2.0), F32)
    for lq, lk in ((1, 9), (6, 1), (3, 17), (17, 3)):
        yield from _both(_shape(lq=lq, lk=lk), F32, F32 if lq == 1 else (), square=False)


def _shape_group(full: bool):
    for batch in ((), (2,), (2, 3)):
        yield _shape(batch=batch), ("float32", "bfloat16")
    yield _basic(_shape()), F32
    yield _shape(dv=5), ("float32", "float16")
    yield _basic(_shape()) | {"dv": 5}, F32
    yield _shape(lk=0), F32


def _gqa(full: bool):
    for hq, hkv in ((8, 8), (8, 4), (8, 2), (8, 1)) if full else ((8, 2), (8, 1)):
        yield _shape(hq=hq, hkv=hkv), ("float32", "float16")
    # grouped heads and nothing else: Lq == Lk
    yield _shape(hq=8, hkv=2, lq=9), ("float32", "float16")


def _dtype(full: bool):
    yield _basic(_shape()), ALL_DTYPES


def _softcap(full: bool):
    yield from _both(_shape(softcap=5.0, magnitude=8.0), ("float32", "bfloat16"))
    yield from _both(_shape(softcap=5.0, magnitude=8.0, bias="random", mask="dense"), F32)
    yield from _only_basic(_shape(softcap=5.0, magnitude=8.0, mask="dense"), F32)


def _bias(full: bool):
    yield from _both(_shape(bias="random"), ("float32", "float16"))
    yield from _both(_shape(bias="neg_inf"), F32)
    # broadcast over batch and heads: (Lq, Lk)
    yield from _only_basic(_shape(bias="random_qk"), F32)


def _mask(full: bool):
    yield from _both(_shape(mask="dense"), ("float64", "float32", "float16"),
                     ("float32", "float16"))
    yield from _both(_shape(mask="sparse"), F32)
    # broadcast masks, as models pass them: (B, 1, Lq, Lk) over heads, (Lq, Lk) over all
    yield from _both(_shape(mask="dense_b1"), F32)
    yield from _only_basic(_shape(mask="dense_qk"), F32)


def _causal(alignment: str):
    def gen(full: bool):
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


def _causal_lr_empty(full: bool):
    # Lq > Lk with lower-right alignment: the first Lq - Lk rows attend nothing.
    yield from _both(_shape(lq=9, lk=6, causal=True, alignment="lower_right"), F32)


def _window(full: bool):
    for window in ((2, 0), (1, 1), (None, 3)):
        for alignment in ("upper_left", "lower_right"):
            twin = F32 if alignment == "upper_left" else ()
            yield from _both(_shape(lq=6, lk=9, window=list(window), alignment=alignment),
                             F32, twin)
    yield from _both(_shape(window=[3, None], causal=True), ("float32", "float16"))
    # Lq == Lk in both alignments, in bfloat16: what flash-attention's windows can express.
    yield from _both(_shape(lq=9, window=[2, 1]), ("float32", "bfloat16"))


def _kv_lengths(full: bool):
    yield from _both(_shape(kv_lengths=[9, 4]), ("float32", "float16"))
    yield from _both(_shape(kv_lengths=[5, 1], causal=True, alignment="lower_right"), F32)


def _q_lengths(full: bool):
    yield from _both(_shape(q_lengths=[6, 2]), F32)
    yield from _both(_shape(q_lengths=[4, 2], kv_lengths=[9, 3], causal=True,
                            alignment="lower_right"), F32)


def _plain(full: bool):
    yield from _both(_shape(), ("float64", "float32", "float16", "bfloat16"))


def _weights(full: bool):
    yield from _both(_shape(mask="dense"), F32)
    yield from _only_basic(_shape(), ("bfloat16",))


def _dropout(full: bool):
    yield from _both(_shape(dropout_p=0.25), F32)


def _empty(full: bool):
    yield from _both(_shape(mask="empty_rows"), ("float32", "float16"))
    yield from _both(_shape(bias="row_neg_inf"), F32)
    yield from _both(_shape(kv_lengths=[9, 0]), F32)


def _poison_scores(full: bool):
    yield from _both(_shape(mask="key_columns", bias="random", poison="scores"),
                     ("float32", "float16"))
    # the same leak through one masking input alone: a mask, or a -inf bias
    yield from _both(_shape(mask="key_columns", poison="scores"), F32)
    yield from _only_basic(_shape(bias="key_columns", poison="scores"), F32)


def _poison_kv(full: bool):
    yield from _both(_shape(kv_lengths=[5, 2], poison="kv"), ("float32", "bfloat16"))


def _nonfinite(full: bool):
    yield from _both(_shape(poison="nan"), F32)
    yield from _both(_shape(poison="pos_inf"), F32)
    # NaN in one query entry: that row's scores are all NaN (no bias needed)
    yield from _only_basic(_shape(poison="query_nan"), ("float32", "float16"))


def _bound(full: bool):
    yield from _both(_shape(magnitude=30.0, mask="dense"), ("float32", "float16"), F32)
    yield from _only_basic(_shape(magnitude=30.0), ("float32", "bfloat16"))


def _single_key(full: bool):
    yield from _both(_shape(mask="single_key"), ("float64", "float32"), F32)
    # one key and one query: out is that key's value row whatever the score
    yield from _only_basic(_shape(lq=1, lk=1, magnitude=30.0), ("float32", "float16"))


def _equal_scores(full: bool):
    yield from _both(_shape(logits="all_equal", causal=True), ("float32", "float16"), F32)
    yield from _both(_shape(logits="all_equal", kv_lengths=[9, 3]), F32)
    yield from _only_basic(_shape(logits="all_equal"), ("float32", "bfloat16"))


def _permute(full: bool):
    yield from _both(_shape(mask="dense", bias="random", transform="permute"), F32)
    yield from _only_basic(_shape(mask="dense", transform="permute"), F32)
    yield from _only_basic(_shape(transform="permute"), ("float32", "float16"))


def _shift(full: bool):
    yield from _both(_shape(transform="shift", shift=100.0), ("float32", "float16"))


def _extreme(full: bool):
    for magnitude in (1.0, 10.0, 100.0, 1e3, 1e4) if full else (10.0, 1e3, 1e4):
        yield from _both(_shape(magnitude=magnitude),
                         ("float32", "float16") if full else F32)
    yield from _both(_shape(logits="one_dominant", dk=64), ("float32", "float16"))
    yield from _both(_shape(logits="near_max", dk=64), ("float16",))
    # logits ~ 1e3 in bfloat16: an implementation without max subtraction overflows
    yield from _only_basic(_shape(magnitude=1e3), ("bfloat16",))


def _accumulate(full: bool):
    # 1025 keys by default: at 513 a float16-accumulating implementation slips under the
    # tolerance for some seeds (tests/test_conformance_broken.py).
    for lk in (513, 1025) if full else (1025,):
        yield _shape(batch=(), hq=2, hkv=2, lq=4, lk=lk, dk=128), HALF
        # the basic shape (one batch dim, Lq == Lk), one head to keep it cheap
        yield _shape(batch=(1,), hq=1, hkv=1, lq=lk, lk=lk, dk=64), HALF


def _grad(full: bool):
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
    # one long row: the backward's reductions over 257 (1025) keys, where half precision
    # shows (MQA: dk and dv sum over 8 query heads)
    for lk in (257, 1025) if full else (257,):
        yield (_shape(lq=1, lk=lk, hq=8, hkv=1, dk=64, causal=True, alignment="lower_right",
                      kv_lengths=[lk, lk // 3], backward=True), ("bfloat16",))


def _grad_masked(full: bool):
    # Fully masked rows and masked keys: zero gradient, never NaN (ATT-GRAD-1, ATT-EMPTY-1),
    # one case per way of masking.
    yield from _both(_shape(mask="empty_rows", backward=True), F32)
    yield _shape(kv_lengths=[9, 0], backward=True), F32
    yield _shape(bias="row_neg_inf", backward=True), F32
    yield _shape(lq=9, lk=6, causal=True, alignment="lower_right", backward=True), F32
    yield _shape(q_lengths=[4, 2], kv_lengths=[9, 3], causal=True, alignment="lower_right",
                 backward=True), F32


def _grad_poison_kv(full: bool):
    # NaN/inf in K/V rows past kv_lengths reach no gradient (ATT-GRAD-1, ATT-LEAK-2).
    yield from _both(_shape(kv_lengths=[5, 2], poison="kv", backward=True), F32)


#: Calls a determinism case repeats (ATT-DET-1).
REPEATS = 3


def _determinism(backward: bool):
    def gen(full: bool):
        # Large enough for a framework's CPU kernels to split their work over threads
        # (blocks of query rows, heads), small enough to stay cheap three times over.
        # Causal without a mask: what the native dispatch sends to the framework kernels.
        extra = {"backward": True} if backward else {}
        yield from _both(_shape(hq=8, hkv=2, lq=64, lk=128, dk=32, causal=True,
                                repeat=REPEATS, **extra), F32)
    return gen


def _dtype_errors(full: bool):
    yield from _both(_shape(error="mixed_dtypes"), F32)


def _arg_errors(full: bool):
    yield from _both(_shape(error="head_dim_mismatch"), F32)
    yield _shape(error="heads_not_divisible"), F32


def _softmax(full: bool):
    yield {"shape": [4, 7]}, ("float64", "float32", "float16", "bfloat16")
    yield {"shape": [4, 7], "magnitude": 1e4}, ("float32",)
    yield {"shape": [3, 4, 7], "pattern": "neg_inf"}, ("float32",)


def _softmax_where(full: bool):
    yield {"shape": [4, 7], "where": "plain"}, ("float32",)
    yield {"shape": [4, 7], "where": "poisoned"}, ("float32",)


def _softmax_empty(full: bool):
    yield {"shape": [4, 7], "pattern": "empty_row"}, ("float32",)


def _softmax_nonfinite(full: bool):
    yield {"shape": [4, 7], "pattern": "nan"}, ("float32",)
    yield {"shape": [4, 7], "pattern": "pos_inf"}, ("float32",)


def _softmax_half(full: bool):
    yield {"shape": [4, 300], "magnitude": 3.0}, HALF


def _mha(full: bool):
    base = {"batch": [2], "lq": 5, "lk": 7, "embed": 16, "hq": 4, "hkv": 4, "dk": 4}
    yield dict(base), ("float64", "float32", "float16")
    yield dict(base, cross=True, biases=True), ("float32",)
    yield dict(base, causal=True), ("float32",)
    yield dict(base, hkv=2, causal=True), ("float32",)


@dataclass(frozen=True)
class Group:
    """A group of cases: the operation, the rules it tests, its generator, and what every
    case of it needs beyond its parameters (``requires``: the lse group is about the lse,
    so an implementation that returns none has nothing to show for ATT-LSE-1 there)."""

    op: str
    rules: tuple[str, ...]
    generate: Callable[[bool], Iterable[tuple[dict, tuple[str, ...]]]]
    requires: frozenset[str] = frozenset()


GROUPS: dict[str, Group] = {
    "score": Group("attention", ("ATT-SCORE-1",), _score),
    "shape": Group("attention", ("ATT-SHAPE-1",), _shape_group),
    "gqa": Group("attention", ("ATT-GQA-1",), _gqa),
    "dtype": Group("attention", ("ATT-DTYPE-1",), _dtype),
    "softcap": Group("attention", ("ATT-SOFTCAP-1",), _softcap),
    "bias": Group("attention", ("ATT-BIAS-1",), _bias),
    "mask": Group("attention", ("ATT-MASK-1",), _mask),
    "causal-upper-left": Group("attention", ("ATT-CAUSAL-1",), _causal("upper_left")),
    "causal-lower-right": Group("attention", ("ATT-CAUSAL-2",), _causal("lower_right")),
    "causal-lower-right-empty": Group("attention", ("ATT-CAUSAL-2", "ATT-EMPTY-1"),
                                      _causal_lr_empty),
    "window": Group("attention", ("ATT-WINDOW-1",), _window),
    "kv-lengths": Group("attention", ("ATT-LEN-1",), _kv_lengths),
    "q-lengths": Group("attention", ("ATT-LEN-2",), _q_lengths),
    "lse": Group("attention", ("ATT-LSE-1",), _plain, frozenset({"lse"})),
    "weights": Group("attention", ("ATT-WEIGHTS-1",), _weights, frozenset({"weights"})),
    "dropout": Group("attention", ("ATT-DROPOUT-1",), _dropout),
    "empty-rows": Group("attention", ("ATT-EMPTY-1",), _empty),
    "poison-scores": Group("attention", ("ATT-LEAK-1",), _poison_scores),
    "poison-kv": Group("attention", ("ATT-LEAK-2",), _poison_kv),
    "nonfinite": Group("attention", ("ATT-NAN-1",), _nonfinite),
    "bound": Group("attention", ("ATT-BOUND-1",), _bound),
    "single-key": Group("attention", ("ATT-PROP-1",), _single_key),
    "equal-scores": Group("attention", ("ATT-PROP-2",), _equal_scores),
    "permute-keys": Group("attention", ("ATT-PROP-3",), _permute),
    "shift-logits": Group("attention", ("ATT-PROP-4",), _shift),
    "extreme": Group("attention", ("ATT-SCORE-1", "ATT-LSE-1"), _extreme),
    "accumulate": Group("attention", ("ATT-DTYPE-2",), _accumulate),
    "grad": Group("attention", ("ATT-GRAD-2",), _grad),
    "grad-masked": Group("attention", ("ATT-GRAD-1", "ATT-EMPTY-1"), _grad_masked),
    "grad-poison-kv": Group("attention", ("ATT-GRAD-1", "ATT-LEAK-2"), _grad_poison_kv),
    "determinism": Group("attention", ("ATT-DET-1",), _determinism(backward=False)),
    "determinism-grad": Group("attention", ("ATT-DET-1",), _determinism(backward=True)),
    "dtype-errors": Group("attention", ("ATT-DTYPE-1", "ATT-ARG-1"), _dtype_errors),
    "arg-errors": Group("attention", ("ATT-ARG-1",), _arg_errors),
    "softmax": Group("softmax", ("SMX-1",), _softmax),
    "log-softmax": Group("log_softmax", ("SMX-1",), _softmax),
    "logsumexp": Group("logsumexp", ("SMX-1",), _softmax),
    "softmax-where": Group("softmax", ("SMX-2",), _softmax_where),
    "log-softmax-where": Group("log_softmax", ("SMX-2",), _softmax_where),
    "logsumexp-where": Group("logsumexp", ("SMX-2",), _softmax_where),
    "softmax-empty": Group("softmax", ("SMX-3",), _softmax_empty),
    "log-softmax-empty": Group("log_softmax", ("SMX-3",), _softmax_empty),
    "logsumexp-empty": Group("logsumexp", ("SMX-3",), _softmax_empty),
    "softmax-nonfinite": Group("softmax", ("SMX-4",), _softmax_nonfinite),
    "logsumexp-nonfinite": Group("logsumexp", ("SMX-4",), _softmax_nonfinite),
    "softmax-half": Group("softmax", ("SMX-5",), _softmax_half),
    "mha": Group("mha", ("MHA-1",), _mha),
}

RULE_GROUPS: dict[str, list[str]] = {rule: [] for rule in RULES}
for _group, _spec in GROUPS.items():
    for _rule in _spec.rules:
        RULE_GROUPS[_rule].append(_group)

# Rules a built-in group tests as a side effect of every case (shape and dtype are checked
# on every output), recorded here so `attnspec list` shows them.
IMPLICIT = {"ATT-SHAPE-1", "ATT-DTYPE-1"}


def required_features(op: str, params: dict, dtype: str) -> frozenset[str]:
    """The features (``features.FEATURES``) a case with these parameters needs."""
    if op in SOFTMAX_OPS:
        feats = {"where"} if params.get("where") else set()
        if params.get("pattern") in ("nan", "pos_inf") or params.get("where") == "poisoned":
            feats.add("nonfinite")
        if params.get("pattern") == "empty_row":
            feats.add("empty_rows")
        if params.get("magnitude", 1.0) >= 1e3:
            feats.add("extreme")
        return frozenset(feats)
    feats = set()
    if op == "mha":
        if params["hkv"] != params["hq"]:
            feats.add("gqa")
        return frozenset(feats | ({"causal"} if params.get("causal") else set()))
    batch = params.get("batch", [])
    if len(batch) == 0:
        feats.add("batch0")
    elif len(batch) >= 2:
        feats.add("batch2")
    if params["hq"] != params["hkv"]:
        feats.add("gqa")
    if params.get("dv", params["dk"]) != params["dk"]:
        feats.add("dv_ne_dk")
    if params["lq"] != params["lk"]:
        feats.add("lq_ne_lk")
    if params["lk"] == 0:
        feats |= {"empty_keys", "empty_rows"}
    for name in ("scale", "softcap", "mask", "kv_lengths", "q_lengths"):
        if params.get(name) is not None:
            feats.add(name)
    if params.get("bias") or params.get("transform") == "shift" or params.get("poison") in (
            "nan", "pos_inf"):
        feats.add("bias")
    if params.get("bias") in ("neg_inf", "row_neg_inf", "key_columns"):
        feats.add("bias_neg_inf")
    if params.get("causal"):
        feats.add("causal_lower_right" if params.get("alignment") == "lower_right" else "causal")
    if params.get("window") is not None:
        feats.add("window")
        if params.get("alignment") == "lower_right":
            feats.add("causal_lower_right")
    if params.get("dropout_p"):
        feats.add("dropout")
    if _has_empty_rows(params):
        feats.add("empty_rows")
    poison = params.get("poison")
    if poison == "scores":
        feats.add("poison_scores")
    elif poison == "kv":
        feats.add("poison_kv")
    elif poison in ("nan", "pos_inf", "query_nan"):
        feats.add("nonfinite")
    if params.get("magnitude", 1.0) >= 1e3 or params.get("logits") == "near_max":
        feats.add("extreme")
    if params.get("error"):
        feats.add("arg_errors")
    if params.get("backward"):
        feats.add("backward")
    if params.get("repeat"):
        feats.add("deterministic")
    return frozenset(feats)


def _has_empty_rows(params: dict) -> bool:
    """Whether some query row attends nothing, from the spec's own mask definition."""
    if params.get("mask") == "empty_rows" or params.get("bias") == "row_neg_inf":
        return True
    batch = tuple(params.get("batch", ()))
    lengths = {n: np.asarray(params[n]).reshape(batch) for n in ("kv_lengths", "q_lengths")
               if params.get(n) is not None}
    keep = attnspec.attention_mask(
        params["lq"], params["lk"], causal=bool(params.get("causal")),
        window=tuple(params["window"]) if params.get("window") else None,
        alignment=params.get("alignment", "upper_left"), xp=np, **lengths,
    )
    return keep is not None and bool((~keep.any(axis=-1)).any())


def _expect(params: dict) -> str:
    return {"mixed_dtypes": "TypeError", "head_dim_mismatch": "ValueError",
            "heads_not_divisible": "ValueError"}.get(params.get("error", ""), "value")


def catalog(full: bool = False, seed: int = 0) -> list[Case]:
    """Every case, in a stable order (the default subset, or the full grid)."""
    cases: list[Case] = []
    seen: set[str] = set()
    for group, spec in GROUPS.items():
        op = spec.op
        for params, dtypes in spec.generate(full):
            if (full and "error" not in params and "repeat" not in params
                    and dtypes not in (HALF, ("float16",), ("bfloat16",))):
                # The full grid runs every dtype, except groups that are about one precision
                # (half-precision accumulation, float16 overflow), the error cases and the
                # determinism cases (a property of the kernels, not of a dtype).
                dtypes = ALL_DTYPES
            variant = _slug(params) if op not in SOFTMAX_OPS and op != "mha" else _softmax_slug(
                params)
            for dtype in dtypes:
                case_id = f"{group}/{variant}/{dtype}"
                if case_id in seen:
                    # A basic twin that is a variant of the group already (same parameters,
                    # hence the same ID): one case.
                    continue
                seen.add(case_id)
                cases.append(Case(
                    id=case_id, op=op, rules=spec.rules, dtype=dtype, params=params,
                    features=required_features(op, params, dtype) | spec.requires,
                    expect=_expect(params), base_seed=seed,
                ))
    return cases


def _softmax_slug(params: dict) -> str:
    return ".".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in sorted(params.items()))


def select(cases: Iterable[Case], patterns: Iterable[str] | None) -> Iterator[Case]:
    """Cases whose ID matches any glob pattern (or contains it as a substring)."""
    patterns = list(patterns or [])
    for case in cases:
        if not patterns or any(fnmatch.fnmatchcase(case.id, p) or p in case.id
                               for p in patterns):
            yield case
