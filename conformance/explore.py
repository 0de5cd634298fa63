"""Exploration mode (``attnspec check TARGET --explore N``): random configurations drawn by
Hypothesis, the first failure shrunk to a minimal case, and a reproducer script printed.

Runs in-process, so a crash of the implementation ends the exploration (the isolated
``check`` run before it has already recorded the catalog's outcomes).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from .cases import Case
from .catalog import _slug, required_features

__all__ = ["explore", "reproducer"]

_OPTION_RULES = (
    ("mask", "ATT-MASK-1"), ("bias", "ATT-BIAS-1"), ("softcap", "ATT-SOFTCAP-1"),
    ("window", "ATT-WINDOW-1"), ("kv_lengths", "ATT-LEN-1"), ("q_lengths", "ATT-LEN-2"),
)


def _rules(params: dict[str, Any]) -> tuple[str, ...]:
    rules = ["ATT-SCORE-1"]
    if params["hq"] != params["hkv"]:
        rules.append("ATT-GQA-1")
    rules += [rule for name, rule in _OPTION_RULES if params.get(name) is not None]
    if params.get("causal"):
        rules.append("ATT-CAUSAL-2" if params.get("alignment") == "lower_right"
                     else "ATT-CAUSAL-1")
    return tuple(rules)


def _strategy(dtypes: list[str]) -> Any:
    from hypothesis import strategies as st

    @st.composite
    def params(draw: Any) -> tuple[dict[str, Any], str]:
        batch = draw(st.sampled_from([[], [1], [2], [2, 1]]))
        hkv = draw(st.sampled_from([1, 2]))
        lq = draw(st.integers(1, 12))
        lk = draw(st.integers(1, 20))
        dk = draw(st.sampled_from([1, 3, 8, 16]))
        p: dict[str, Any] = {"batch": batch, "hq": hkv * draw(st.sampled_from([1, 2, 4])),
                             "hkv": hkv, "lq": lq, "lk": lk, "dk": dk,
                             "dv": draw(st.sampled_from([dk, 5]))}
        optional = {
            "mask": st.sampled_from(["dense", "sparse", "empty_rows"]),
            "bias": st.sampled_from(["random", "neg_inf"]),
            "causal": st.just(True),
            "alignment": st.sampled_from(["upper_left", "lower_right"]),
            "window": st.tuples(st.one_of(st.none(), st.integers(0, 4)),
                                st.one_of(st.none(), st.integers(0, 4))).map(list),
            "kv_lengths": st.lists(st.integers(0, lk), min_size=1, max_size=1),
            "q_lengths": st.lists(st.integers(0, lq), min_size=1, max_size=1),
            "softcap": st.sampled_from([2.0, 30.0]),
            "scale": st.sampled_from([0.05, 2.0]),
            "magnitude": st.sampled_from([10.0, 1e3]),
        }
        for name, values in optional.items():
            if draw(st.booleans()):
                value = draw(values)
                if name in ("kv_lengths", "q_lengths"):
                    value = value * max(1, _size(batch))
                p[name] = value
        return p, draw(st.sampled_from(dtypes))

    return params()


def _size(batch: list[int]) -> int:
    n = 1
    for b in batch:
        n *= b
    return n


def _case(params: dict[str, Any], dtype: str) -> Case:
    return Case(id=f"explore/{_slug(params)}/{dtype}", op="attention", rules=_rules(params),
                dtype=dtype, params=params,
                features=required_features("attention", params, dtype))


def _failure(adapter: Any, case: Case) -> str | None:
    """Why the implementation fails the case, or ``None`` when it passes."""
    from .results import Outcome
    from .runner import handle, judge, prepare

    prepared = prepare(case)
    if prepared.error:
        return prepared.error
    verdict = judge(case, handle(adapter, ("run", case, prepared.inputs)), prepared)
    return None if verdict.outcome is Outcome.PASS else f"{verdict.outcome.value}: " \
        f"{verdict.message}"


def reproducer(target: str, backend: str, case: Case) -> str:
    """A standalone script that rebuilds ``case`` and shows the failure."""
    return f'''# attnspec reproducer: {target} on {backend} fails {case.id}
# rules: {", ".join(case.rules)}
from attnspec.conformance.adapters import resolve
from attnspec.conformance.cases import Case, make_inputs
from attnspec.conformance.catalog import required_features
from attnspec.conformance.golden import golden, naive
from attnspec.conformance.tolerance import grade

params = {dict(case.params)!r}
dtype = {case.dtype!r}
case = Case(id={case.id!r}, op="attention", rules={case.rules!r}, dtype=dtype,
            params=params, features=required_features("attention", params, dtype))
inputs = make_inputs(case)
adapter = resolve({target!r}, backend={backend!r})
result = adapter.run(case, inputs)
print(grade(case, result.outputs, result.dtypes, golden(case, inputs), naive(case, inputs)))
'''


def explore(target: str, *, examples: int = 100, backend: str = "numpy",
            device: str | None = None, dtypes: Iterable[str] | None = None,
            stream: TextIO | None = None) -> int:
    """Search for a failing configuration of ``target``; 0 when none was found, else 1."""
    from hypothesis import HealthCheck, find, settings
    from hypothesis.errors import NoSuchExample

    from .adapters import resolve

    stream = stream or sys.stdout
    adapter = resolve(target, backend=backend, device=device)
    allowed = [d for d in adapter.dtypes() if not dtypes or d in set(dtypes)]
    if not allowed:
        print(f"explore {target}: no dtype to explore on {backend}", file=stream)
        return 0

    def fails(drawn: tuple[dict[str, Any], str]) -> bool:
        case = _case(*drawn)
        return adapter.not_applicable(case) is None and _failure(adapter, case) is not None

    try:
        params, dtype = find(_strategy(allowed), fails, settings=settings(
            max_examples=examples, database=None, deadline=None,
            suppress_health_check=list(HealthCheck)))
    except NoSuchExample:
        print(f"explore {target}: no failure in {examples} random configurations", file=stream)
        return 0
    case = _case(params, dtype)
    print(f"explore {target}: minimal failing case {case.id}", file=stream)
    print(f"  {_failure(adapter, case)}", file=stream)
    print("reproducer:\n" + reproducer(target, backend, case), file=stream)
    return 1
