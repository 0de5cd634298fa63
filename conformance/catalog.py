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

Gradient cases (``CaseKind.GRADIENT``, ``params.backward``: groups ``grad``, ``grad-masked``,
``grad-poison-kv``, ``determinism-grad``; ``--select grad`` picks them) grade ``dq``, ``dk``,
``dv`` (``dbias``) as well as ``out``; determinism cases (``CaseKind.DETERMINISM``,
``params.repeat``) make the same call several times and compare the results bit for bit.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import groups_attention as a
from . import groups_softmax as s
from .case_params import params_for
from .cases import SOFTMAX_OPS, Case
from .rules import RULES
from .variants import ALL_DTYPES, HALF, Variants, _shape, _slug

__all__ = ["ALL_DTYPES", "GROUPS", "RULE_GROUPS", "Group", "catalog", "required_features",
           "select"]

# ``_shape`` and ``_slug`` (variants.py) stay importable from here: tests and explore use them.
_ = (_shape, _slug)


@dataclass(frozen=True)
class Group:
    """A group of cases: the operation, the rules it tests, its generator, and what every
    case of it needs beyond its parameters (``requires``: the lse group is about the lse,
    so an implementation that returns none has nothing to show for ATT-LSE-1 there)."""

    op: str
    rules: tuple[str, ...]
    generate: Callable[[bool], Variants]
    requires: frozenset[str] = frozenset()


GROUPS: dict[str, Group] = {
    "score": Group("attention", ("ATT-SCORE-1",), a.score),
    "shape": Group("attention", ("ATT-SHAPE-1",), a.shape_group),
    "gqa": Group("attention", ("ATT-GQA-1",), a.gqa),
    "dtype": Group("attention", ("ATT-DTYPE-1",), a.dtype),
    "softcap": Group("attention", ("ATT-SOFTCAP-1",), a.softcap),
    "bias": Group("attention", ("ATT-BIAS-1",), a.bias),
    "mask": Group("attention", ("ATT-MASK-1",), a.mask),
    "causal-upper-left": Group("attention", ("ATT-CAUSAL-1",), a.causal("upper_left")),
    "causal-lower-right": Group("attention", ("ATT-CAUSAL-2",), a.causal("lower_right")),
    "causal-lower-right-empty": Group("attention", ("ATT-CAUSAL-2", "ATT-EMPTY-1"),
                                      a.causal_lr_empty),
    "window": Group("attention", ("ATT-WINDOW-1",), a.window),
    "kv-lengths": Group("attention", ("ATT-LEN-1",), a.kv_lengths),
    "q-lengths": Group("attention", ("ATT-LEN-2",), a.q_lengths),
    "lse": Group("attention", ("ATT-LSE-1",), a.plain, frozenset({"lse"})),
    "weights": Group("attention", ("ATT-WEIGHTS-1",), a.weights, frozenset({"weights"})),
    "dropout": Group("attention", ("ATT-DROPOUT-1",), a.dropout),
    "sinks": Group("attention", ("ATT-SINK-1",), a.sinks),
    "alibi": Group("attention", ("ATT-ALIBI-1",), a.alibi),
    "positions": Group("attention", ("ATT-POS-1",), a.positions),
    "segments": Group("attention", ("ATT-SEG-1",), a.segments),
    "poison-segments": Group("attention", ("ATT-SEG-2",), a.poison_segments),
    "mods": Group("attention", ("ATT-MOD-1",), a.mods),
    "paged": Group("attention", ("ATT-PAGE-1",), a.paged),
    "consistency-batch": Group("attention", ("ATT-CONS-1",), a.consistency_batch),
    "consistency-split": Group("attention", ("ATT-CONS-2",), a.consistency_split),
    "empty-rows": Group("attention", ("ATT-EMPTY-1",), a.empty),
    "poison-scores": Group("attention", ("ATT-LEAK-1",), a.poison_scores),
    "poison-kv": Group("attention", ("ATT-LEAK-2",), a.poison_kv),
    "nonfinite": Group("attention", ("ATT-NAN-1",), a.nonfinite),
    "bound": Group("attention", ("ATT-BOUND-1",), a.bound),
    "single-key": Group("attention", ("ATT-PROP-1",), a.single_key),
    "equal-scores": Group("attention", ("ATT-PROP-2",), a.equal_scores),
    "permute-keys": Group("attention", ("ATT-PROP-3",), a.permute),
    "shift-logits": Group("attention", ("ATT-PROP-4",), a.shift),
    "extreme": Group("attention", ("ATT-SCORE-1", "ATT-LSE-1"), a.extreme),
    "accumulate": Group("attention", ("ATT-DTYPE-2",), a.accumulate),
    "grad": Group("attention", ("ATT-GRAD-2",), a.grad),
    "grad-masked": Group("attention", ("ATT-GRAD-1", "ATT-EMPTY-1"), a.grad_masked),
    "grad-poison-kv": Group("attention", ("ATT-GRAD-1", "ATT-LEAK-2"), a.grad_poison_kv),
    "determinism": Group("attention", ("ATT-DET-1",), a.determinism(backward=False)),
    "determinism-grad": Group("attention", ("ATT-DET-1",), a.determinism(backward=True)),
    "dtype-errors": Group("attention", ("ATT-DTYPE-1", "ATT-ARG-1"), a.dtype_errors),
    "arg-errors": Group("attention", ("ATT-ARG-1",), a.arg_errors),
    "softmax": Group("softmax", ("SMX-1",), s.softmax),
    "log-softmax": Group("log_softmax", ("SMX-1",), s.softmax),
    "logsumexp": Group("logsumexp", ("SMX-1",), s.softmax),
    "softmax-where": Group("softmax", ("SMX-2",), s.softmax_where),
    "log-softmax-where": Group("log_softmax", ("SMX-2",), s.softmax_where),
    "logsumexp-where": Group("logsumexp", ("SMX-2",), s.softmax_where),
    "softmax-empty": Group("softmax", ("SMX-3",), s.softmax_empty),
    "log-softmax-empty": Group("log_softmax", ("SMX-3",), s.softmax_empty),
    "logsumexp-empty": Group("logsumexp", ("SMX-3",), s.softmax_empty),
    "softmax-nonfinite": Group("softmax", ("SMX-4",), s.softmax_nonfinite),
    "logsumexp-nonfinite": Group("logsumexp", ("SMX-4",), s.softmax_nonfinite),
    "softmax-half": Group("softmax", ("SMX-5",), s.softmax_half),
    "mha": Group("mha", ("MHA-1",), s.mha),
}

RULE_GROUPS: dict[str, list[str]] = {rule: [] for rule in RULES}
for _group, _spec in GROUPS.items():
    for _rule in _spec.rules:
        RULE_GROUPS[_rule].append(_group)

# Rules a built-in group tests as a side effect of every case (shape and dtype are checked
# on every output), recorded here so `attnspec list` shows them.
IMPLICIT = {"ATT-SHAPE-1", "ATT-DTYPE-1"}


def required_features(op: str, params: Mapping[str, Any], dtype: str) -> frozenset[str]:
    """The features (``features.FEATURES``) a case with these parameters needs: derived from
    the typed parameters and the input kinds they name (``case_params.py``), the same objects
    the inputs are built from."""
    return params_for(op, params).features()


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
            typed = params_for(op, params)
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
                    id=case_id, op=op, rules=spec.rules, dtype=dtype, params=typed,
                    features=typed.features() | spec.requires, base_seed=seed,
                ))
    return cases


def _softmax_slug(params: dict[str, Any]) -> str:
    return ".".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in sorted(params.items()))


def select(cases: Iterable[Case], patterns: Iterable[str] | None) -> Iterator[Case]:
    """Cases whose ID matches any glob pattern (or contains it as a substring)."""
    patterns = list(patterns or [])
    for case in cases:
        if not patterns or any(fnmatch.fnmatchcase(case.id, p) or p in case.id
                               for p in patterns):
            yield case
