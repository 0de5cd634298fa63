"""Exploration mode (``attnspec check TARGET --explore N``): random configurations drawn by
Hypothesis, the first failure shrunk to a minimal case, and its reproducer.

Only what the implementation declares is drawn: an option it does not declare is never
passed, shapes it does not declare (grouped-query heads, Lq != Lk, Dv != Dk, batch dims)
are not drawn, nor combinations its ``exclusive`` constraints rule out. The shrunk failure
is a :class:`~attnspec.conformance.results.CaseResult` that goes into the report (JSON,
Markdown, HTML) and sets its verdict, with the ``attnspec repro`` command that prints its
reproducer script.

Runs in-process, so a crash of the implementation ends the exploration (the isolated
``check`` run before it has already recorded the catalog's outcomes).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from .case_params import params_for
from .cases import Case
from .catalog import required_features
from .results import CaseResult, Outcome
from .variants import _slug

__all__ = ["Exploration", "explore", "rules_of"]

_OPTION_RULES = (
    ("mask", "ATT-MASK-1"), ("bias", "ATT-BIAS-1"), ("softcap", "ATT-SOFTCAP-1"),
    ("window", "ATT-WINDOW-1"), ("kv_lengths", "ATT-LEN-1"), ("q_lengths", "ATT-LEN-2"),
)


def rules_of(params: dict[str, Any]) -> tuple[str, ...]:
    """The rules a drawn configuration tests: the score rule, and one per option."""
    rules = ["ATT-SCORE-1"]
    if params["hq"] != params["hkv"]:
        rules.append("ATT-GQA-1")
    rules += [rule for name, rule in _OPTION_RULES if params.get(name) is not None]
    if params.get("causal"):
        rules.append("ATT-CAUSAL-2" if params.get("alignment") == "lower_right"
                     else "ATT-CAUSAL-1")
    return tuple(rules)


def _strategy(dtypes: list[str], features: frozenset[str]) -> Any:
    from hypothesis import strategies as st

    def allowed(name: str) -> bool:
        return name in features

    @st.composite
    def params(draw: Any) -> tuple[dict[str, Any], str]:
        batches = [[1], [2]] + ([[]] if allowed("batch0") else []) + (
            [[2, 1]] if allowed("batch2") else [])
        batch = draw(st.sampled_from(batches))
        hkv = draw(st.sampled_from([1, 2]))
        group = draw(st.sampled_from([1, 2, 4] if allowed("gqa") else [1]))
        lq = draw(st.integers(1, 12))
        lk = draw(st.integers(1, 20)) if allowed("lq_ne_lk") else lq
        dk = draw(st.sampled_from([1, 3, 8, 16]))
        dv = draw(st.sampled_from([dk, 5])) if allowed("dv_ne_dk") else dk
        p: dict[str, Any] = {"batch": batch, "hq": hkv * group, "hkv": hkv, "lq": lq,
                             "lk": lk, "dk": dk, "dv": dv}
        optional = {
            "mask": ("mask", st.sampled_from(["dense", "sparse", "empty_rows"])),
            "bias": ("bias", st.sampled_from(["random", "neg_inf"] if allowed("bias_neg_inf")
                                             else ["random"])),
            "causal": ("causal", st.just(True)),
            "window": ("window", st.tuples(st.one_of(st.none(), st.integers(0, 4)),
                                           st.one_of(st.none(), st.integers(0, 4))).map(list)),
            "kv_lengths": ("kv_lengths", st.lists(st.integers(0, lk), min_size=1, max_size=1)),
            "q_lengths": ("q_lengths", st.lists(st.integers(0, lq), min_size=1, max_size=1)),
            "softcap": ("softcap", st.sampled_from([2.0, 30.0])),
            "scale": ("scale", st.sampled_from([0.05, 2.0])),
        }
        for name, (feature, values) in optional.items():
            if allowed(feature) and draw(st.booleans()):
                value = draw(values)
                if name in ("kv_lengths", "q_lengths"):
                    value = value * max(1, _size(batch))
                p[name] = value
        if allowed("causal_lower_right") and draw(st.booleans()):
            # lower-right alignment: causal, a window, or both around the shifted diagonal
            p["alignment"] = "lower_right"
            if "window" not in p or draw(st.booleans()):
                p["causal"] = True
        if draw(st.booleans()):
            p["magnitude"] = draw(st.sampled_from([10.0, 1e3]))
        return p, draw(st.sampled_from(dtypes))

    return params()


def _size(batch: list[int]) -> int:
    n = 1
    for b in batch:
        n *= b
    return n


def _case(params: dict[str, Any], dtype: str, seed: int = 0) -> Case:
    return Case(id=f"explore/{_slug(params)}/{dtype}", op="attention", rules=rules_of(params),
                dtype=dtype, params=params_for("attention", params),
                features=required_features("attention", params, dtype), base_seed=seed)


def _declared(adapter: Any, case: Case) -> bool:
    """Whether the drawn case is one the implementation takes (its declared features,
    dtypes and ``exclusive`` constraints)."""
    return adapter.not_applicable(case) is None


def _verdict(adapter: Any, case: Case) -> Any:
    from .runner import handle, judge, prepare

    prepared = prepare(case)
    if prepared.error:
        return None
    return judge(case, handle(adapter, ("run", case, prepared.inputs)), prepared)


@dataclass
class Exploration:
    """What ``--explore`` found: the number of configurations tried and the shrunk failure
    (``None`` when there was none)."""

    examples: int
    result: CaseResult | None
    script: str = ""


def explore(target: str, *, examples: int = 100, backend: str | None = None,
            device: str | None = None, dtypes: Iterable[str] | None = None,
            capabilities: Any = None, seed: int = 0, stream: TextIO | None = None
            ) -> Exploration:
    """Search for a failing configuration of ``target`` among what it declares."""
    from hypothesis import HealthCheck, find, settings
    from hypothesis.errors import NoSuchExample

    from .adapters import resolve
    from .repro import command, reproducer

    stream = stream or sys.stdout
    adapter = resolve(target, backend=backend, device=device, capabilities=capabilities)
    allowed = [d for d in adapter.dtypes() if not dtypes or d in set(dtypes)]
    if not allowed or "attention" not in adapter.ops:
        print(f"explore {target}: nothing to explore (no attention in a dtype it declares "
              f"on {adapter.backend_name})", file=stream)
        return Exploration(0, None)
    features = frozenset(adapter.features)

    def fails(drawn: tuple[dict[str, Any], str]) -> bool:
        case = _case(*drawn, seed=seed)
        if not _declared(adapter, case):
            return False
        verdict = _verdict(adapter, case)
        return verdict is not None and verdict.outcome is not Outcome.PASS

    try:
        params, dtype = find(_strategy(allowed, features), fails, settings=settings(
            max_examples=examples, database=None, deadline=None,
            suppress_health_check=list(HealthCheck)))
    except NoSuchExample:
        print(f"explore {target}: no failure in {examples} random configurations", file=stream)
        return Exploration(examples, None)
    case = _case(params, dtype, seed)
    start = time.perf_counter()
    verdict = _verdict(adapter, case)
    seconds = time.perf_counter() - start
    result = CaseResult(
        case_id=case.id, rules=list(case.rules), implementation=str(adapter.name),
        backend=str(adapter.backend_name), device="", dtype=case.dtype, op=case.op,
        params=dict(case.params), outcome=verdict.outcome, seed=case.seed,
        max_error=verdict.max_error, tolerance=verdict.tolerance, ratio=verdict.ratio,
        message=f"found by --explore ({examples} configurations): {verdict.message}",
        seconds=round(seconds, 6), errors=verdict.errors,
        repro=command(case.id, target, backend=backend, device=device,
                      capabilities=capabilities, seed=seed, op=case.op, params=case.params),
    )
    script = reproducer(case, target, backend=backend, device=device,
                        capabilities=capabilities, message=verdict.message)
    print(f"explore {target}: minimal failing case {case.id}", file=stream)
    print(f"  {verdict.outcome.value}: {verdict.message}", file=stream)
    print("reproducer:\n" + script, file=stream)
    return Exploration(examples, result, script)
