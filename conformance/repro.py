"""Reproducers: a standalone script for one case and one implementation.

``attnspec repro CASE_ID TARGET`` prints a script that rebuilds the case's inputs from its
seed, calls the implementation the way the suite does (and shows that call), and prints what
was expected, what came back and where they differ most, then exits 1 when the case fails.
Every failure in a report carries the command that prints its script (``CaseResult.repro``);
a case outside the catalog (an ``--explore`` case) carries its parameters in the command.

>>> from attnspec.conformance.catalog import catalog
>>> case = next(c for c in catalog() if c.id.startswith("extreme/"))
>>> print(command(case.id, "mypkg.attn:fwd", backend="numpy").split(" --")[0])
attnspec repro extreme/b2.h4x2.q6.k9.d16.magnitude=10.0/float32 mypkg.attn:fwd
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from .cases import Case

__all__ = ["command", "find_case", "reproducer", "run_case"]


def command(case_id: str, target: str, *, backend: str | None = None, device: str | None = None,
            capabilities: Any = None, seed: int = 0, op: str | None = None,
            params: Mapping[str, Any] | None = None) -> str:
    """The ``attnspec repro`` command line that prints the reproducer of a case.

    ``params`` (and ``op``) are for a case outside the catalog (an ``--explore`` case): they
    go into the command. ``capabilities`` appear when they are a file path (a mapping given
    in Python cannot be).
    """
    parts = ["attnspec", "repro", case_id, target]
    if backend is not None:
        parts += ["--backend", backend]
    if device:
        parts += ["--device", device]
    if capabilities is not None and not isinstance(capabilities, Mapping):
        parts += ["--capabilities", str(capabilities)]
    if seed:
        parts += ["--seed", str(seed)]
    if params is not None:
        parts += ["--op", op or "attention", "--params", json.dumps(dict(params),
                                                                   sort_keys=True)]
    return " ".join(shlex.quote(p) for p in parts)


def find_case(case_id: str, *, seed: int = 0, op: str | None = None,
              params: Mapping[str, Any] | None = None) -> Case:
    """The case ``case_id`` of the catalog (default, then full grid), or, with ``params``,
    a case built from them (``op`` default ``attention``).

    Raises
    ------
    ValueError
        When the catalog has no such case and no ``params`` are given, or the ID has no
        ``/<dtype>`` ending.
    """
    from .case_params import params_for
    from .catalog import ALL_DTYPES, catalog, required_features

    if params is not None:
        group, _, dtype = case_id.rpartition("/")
        if dtype not in ALL_DTYPES or not group:
            raise ValueError(f"case_id: {case_id!r} must end in /<dtype> (one of "
                             f"{', '.join(ALL_DTYPES)}) to build a case from --params")
        op = op or "attention"
        typed = params_for(op, params)  # unknown parameters: a ValueError naming them
        return Case(id=case_id, op=op, rules=_explore_rules(dict(params)), dtype=dtype,
                    params=typed, features=required_features(op, typed, dtype),
                    base_seed=seed)
    for full in (False, True):
        for case in catalog(full=full, seed=seed):
            if case.id == case_id:
                return case
    raise ValueError(f"case_id: no case {case_id!r} in the catalog (`attnspec list --cases "
                     "--full` lists them; a case from --explore needs its --params)")


def _explore_rules(params: dict[str, Any]) -> tuple[str, ...]:
    from .explore import rules_of

    return rules_of(params)


def reproducer(case: Case, target: str, *, backend: str | None = None, device: str | None = None,
               capabilities: Any = None, message: str = "") -> str:
    """A standalone Python script that reproduces ``case`` on ``target``."""
    caps = capabilities if capabilities is None or isinstance(capabilities, Mapping) else str(
        capabilities)
    lines = [
        f"# attnspec reproducer: {target} on {backend or 'its default backend'}, "
        f"case {case.id}",
        f"# rules: {', '.join(case.rules)}",
    ]
    if message:
        lines += [f"# reported: {line}" for line in message.splitlines()[:3]]
    lines += [
        "# Rebuilds the case's inputs from its seed, calls the implementation as the suite",
        "# does, and prints what was expected and what came back; exits 1 when it fails.",
        "from attnspec.conformance.cases import Case",
        "from attnspec.conformance.repro import run_case",
        "",
        f"case = Case(id={case.id!r}, op={case.op!r}, rules={tuple(case.rules)!r},",
        f"            dtype={case.dtype!r}, params={dict(case.params)!r},",
        f"            features=frozenset({sorted(case.features)!r}), expect={case.expect!r},",
        f"            base_seed={case.base_seed!r})",
        f"raise SystemExit(run_case(case, {target!r}, backend={backend!r}, device={device!r},",
        f"                          capabilities={caps!r}))",
        "",
    ]
    return "\n".join(lines)


def _describe(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        dtype = str(value.dtype).rsplit(".", 1)[-1]
        return f"array {tuple(value.shape)} {dtype}"
    return repr(value)


def describe_call(adapter: Any, case: Case, args: dict[str, Any]) -> str:
    """The call the implementation receives, with shapes and dtypes for arrays."""
    arguments = getattr(adapter, "_arguments", None)
    if case.op == "attention" and callable(arguments):
        q, k, v, options = arguments(dict(args))
        name = getattr(adapter, "target", adapter.name)
        parts = [_describe(q), _describe(k), _describe(v)]
        parts += [f"{key}={_describe(value)}" for key, value in options.items()]
        return f"{name}(" + ", ".join(parts) + ")"
    parts = [f"{key}={_describe(value)}" for key, value in args.items()]
    return f"{adapter.name} <- " + ", ".join(parts)


def run_case(case: Case, target: Any, *, backend: str | None = None, device: str | None = None,
             capabilities: Any = None, stream: Any = None) -> int:
    """Run one case on ``target`` in this process and print the evidence: the call, and
    per output the largest difference from the golden against its tolerance, or the
    exception. Returns 0 when the case passes, 1 when it fails."""
    from .adapters import resolve
    from .runner import handle, judge, prepare

    out = stream or sys.stdout
    # References first: resolving a "module:callable" imports the user's module, which may
    # patch NumPy (tests/test_reliability_isolation.py).
    prepared = prepare(case)
    adapter = resolve(target, backend=backend, device=device, capabilities=capabilities)
    reason = adapter.unavailable()
    if reason is not None:
        print(f"{adapter.name} cannot run here: {reason}", file=out)
        return 1
    if prepared.error is not None:
        print(prepared.error, file=out)
        return 1
    print(f"case {case.id} ({', '.join(case.rules)}), {case.dtype}", file=out)
    assert prepared.inputs is not None  # prepare() sets the inputs or the error
    with np.errstate(all="ignore"):
        print("call: " + describe_call(adapter, case, adapter.to_backend(case,
                                                                           prepared.inputs)),
              file=out)
        reply = handle(adapter, ("run", case, prepared.inputs))
        verdict = judge(case, reply, prepared)
    if reply.kind == "ok" and case.expect == "value":
        for name, got in reply.value.outputs.items():
            want = (prepared.golden or {}).get(name)
            if want is not None:
                print(_difference(name, np.asarray(got, dtype=np.float64), want), file=out)
    elif case.expect != "value":
        print(f"expected: {case.expect} raised", file=out)
    print(f"{verdict.outcome.value.upper()}: {verdict.message}", file=out)
    return 0 if verdict.outcome.value == "pass" else 1


def _difference(name: str, got: np.ndarray, want: np.ndarray) -> str:
    """Where ``got`` differs most from ``want``: index, expected, got."""
    if got.shape != want.shape:
        return f"{name}: shape {got.shape}, expected {want.shape}"
    with np.errstate(all="ignore"):
        bad = np.isnan(got) != np.isnan(want)
        gap = np.where(np.isfinite(want) & np.isfinite(got), np.abs(got - want), 0.0)
        gap = np.where(bad | (np.isfinite(want) != np.isfinite(got)), np.inf, gap)
    if gap.size == 0:
        return f"{name}: empty, as expected"
    idx = np.unravel_index(int(np.argmax(gap)), gap.shape)
    where = [int(i) for i in idx]
    count = int(np.count_nonzero(np.isinf(gap)))
    size = (f"a non-finite mismatch ({count} entries)" if count
            else f"largest difference {float(gap[idx]):.3g}")
    return (f"{name}: {size} at {where}: expected {float(want[idx])!r}, got "
            f"{float(got[idx])!r}")
