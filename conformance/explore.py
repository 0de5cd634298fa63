"""Exploration mode (``attnspec check TARGET --explore N``): random configurations drawn by
Hypothesis, the first failure shrunk to a minimal case, and its reproducer.

Only what the implementation declares is drawn: an option it does not declare is never
passed, shapes it does not declare (grouped-query heads, Lq != Lk, Dv != Dk, batch dims)
are not drawn, nor combinations its ``exclusive`` constraints rule out. The shrunk failure
is a :class:`~attnspec.conformance.results.CaseResult` that goes into the report (JSON,
Markdown, HTML) and sets its verdict, with the ``attnspec repro`` command that prints its
reproducer script.

The implementation runs in a worker process (:mod:`.process`), like the catalog's cases: a
crash or a hang while exploring is the exploration's result (``crash``, ``timeout``), not the
end of the run. Such a result is not shrunk -- each smaller try would cost a fresh worker, or
a whole timeout -- and exploring stops there. The references are made in a process of their
own (:class:`~.references.ReferenceProcess`): the cases are drawn after the implementation's
module was imported here (to read its declaration), and, with ``isolate=False``, after it
ran here, so nothing it did to this process can move them.
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from .case_params import params_for
from .cases import Case
from .catalog import required_features
from .judging import Verdict, judge
from .limits import AUTO, on_gpu, resolve_memory_limit
from .messages import AdapterSpec
from .process import (
    STARTUP_TIMEOUT,
    InProcessWorker,
    Worker,
    WorkerProcess,
    WorkerStartError,
    output_note,
)
from .references import ReferenceProcess
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


#: Outcomes that end the exploration unshrunk: the worker is gone (crash) or was killed
#: after a whole timeout, and every smaller try could cost as much.
_STOPPING = frozenset({Outcome.CRASH, Outcome.TIMEOUT})


class _Stop(BaseException):
    """Ends Hypothesis's search at once (a ``BaseException``: Hypothesis takes an
    ``Exception`` for a failure to shrink)."""


@dataclass
class _Trial:
    """One drawn case's verdict (its message ends with the worker's captured output) and
    the call's duration."""

    case: Case
    verdict: Verdict
    seconds: float = 0.0


class _Trials:
    """Runs drawn cases: the references from a :class:`ReferenceProcess`, the implementation
    in a worker (started again when it died or was killed). Keeps every failing trial, and
    the first crash or timeout (``stopped``): exploring ends there."""

    def __init__(self, target: Any, adapter: Any, *, backend: str | None,
                 device: str | None, capabilities: Any, timeout: float, isolate: bool,
                 memory_limit: str | int | None, jax_x64: bool) -> None:
        self.timeout = timeout
        self.adapter = adapter
        self.notes: list[str] = []
        self.failures: dict[str, _Trial] = {}
        self.stopped: _Trial | None = None
        self.tried = 0
        self.device = ""
        self.references = ReferenceProcess()
        self.worker: Worker
        spec = _spec(target, backend=backend, device=device, capabilities=capabilities)
        if not isolate or spec is None:
            if isolate:
                self.notes.append("explored in-process: the adapter cannot be pickled for a "
                                  "worker")
            self.worker = InProcessWorker(adapter)
        else:
            gpu = on_gpu(str(adapter.backend_name), device)
            self.worker = WorkerProcess(spec, startup_timeout=max(STARTUP_TIMEOUT, timeout),
                                        memory_limit=resolve_memory_limit(memory_limit,
                                                                          gpu=gpu),
                                        jax_x64=jax_x64)

    def start(self) -> Verdict | None:
        """Start the worker; the verdict on a case it could not start for (``None`` when it
        did)."""
        try:
            payload = self.worker.start()
        except WorkerStartError as exc:
            if not exc.unpickle:
                return Verdict(exc.outcome, f"worker start-up failed: {exc}")
            self.notes.append(f"explored in-process: the worker could not re-create the "
                              f"adapter ({exc})")
            self.worker = InProcessWorker(self.adapter)
            return self.start()
        self.device = str(payload["info"].get("device", ""))
        return None

    def run(self, case: Case) -> Verdict | None:
        """The verdict on ``case`` (``None``: attnspec could not make its references)."""
        prepared = self.references.prepare(case)
        if prepared.error is not None:
            return None
        self.tried += 1
        if not self.worker.alive:
            failed = self.start()
            if failed is not None:  # restarting failed: exploring ends here
                self.stopped = self.failures[case.id] = _Trial(case, failed)
                return failed
        start = time.perf_counter()
        reply = self.worker.request(("run", case, prepared.inputs), self.timeout)
        seconds = time.perf_counter() - start
        verdict = judge(case, reply, prepared)
        verdict.message += output_note(reply.output)
        if reply.kind == "raised" and reply.error is not None and reply.error.is_a(
                "MemoryError"):
            self.worker.kill()  # what it still holds is freed; the next try restarts it
        if verdict.outcome is not Outcome.PASS:
            trial = self.failures[case.id] = _Trial(case, verdict, seconds)
            if verdict.outcome in _STOPPING:
                self.stopped = trial
        return verdict

    def close(self) -> None:
        try:
            getattr(self.worker, "discard", self.worker.close)()
        finally:
            self.references.close()


def _spec(target: Any, *, backend: str | None, device: str | None,
          capabilities: Any) -> AdapterSpec | None:
    """How a worker re-creates the implementation (``None``: an Adapter object that does
    not pickle)."""
    if isinstance(target, str):
        return AdapterSpec(target=target, backend=backend, device=device,
                           capabilities=capabilities)
    try:
        return AdapterSpec(pickled=pickle.dumps(target))
    except Exception:
        return None


@dataclass
class Exploration:
    """What ``--explore`` found: the number of configurations tried and the failure, shrunk
    unless it is a crash or a timeout (``None`` when there was none); ``note``: what the
    report should say besides (a worker that would not start)."""

    examples: int
    result: CaseResult | None
    script: str = ""
    note: str = ""


def explore(target: str, *, examples: int = 100, backend: str | None = None,
            device: str | None = None, dtypes: Iterable[str] | None = None,
            capabilities: Any = None, seed: int = 0, stream: TextIO | None = None,
            timeout: float = 60.0, isolate: bool = True,
            memory_limit: str | int | None = AUTO, jax_x64: bool = True) -> Exploration:
    """Search for a failing configuration of ``target`` among what it declares.

    The implementation runs in a worker process (``isolate=False``: in this one), each call
    within ``timeout`` seconds and under ``memory_limit`` (see :func:`.api.run`).
    """
    from hypothesis import HealthCheck, Verbosity, find, settings
    from hypothesis.errors import NoSuchExample

    from .adapters import resolve
    from .repro import command, reproducer

    stream = stream or sys.stdout
    # Here for its declaration only (what to draw); it runs in the worker.
    adapter = resolve(target, backend=backend, device=device, capabilities=capabilities)
    allowed = [d for d in adapter.dtypes() if not dtypes or d in set(dtypes)]
    if not allowed or "attention" not in adapter.ops:
        print(f"explore {target}: nothing to explore (no attention in a dtype it declares "
              f"on {adapter.backend_name})", file=stream)
        return Exploration(0, None)
    features = frozenset(adapter.features)
    trials = _Trials(target, adapter, backend=backend, device=device,
                     capabilities=capabilities, timeout=timeout, isolate=isolate,
                     memory_limit=memory_limit, jax_x64=jax_x64)

    def fails(drawn: tuple[dict[str, Any], str]) -> bool:
        case = _case(*drawn, seed=seed)
        if not _declared(adapter, case):
            return False
        verdict = trials.run(case)
        if trials.stopped is not None:
            raise _Stop  # a crash or a timeout: not shrunk, exploring ends here
        return verdict is not None and verdict.outcome is not Outcome.PASS

    drawn: tuple[dict[str, Any], str] | None = None

    try:
        failed = trials.start()
        if failed is not None:
            print(f"explore {target}: {failed.outcome.value}: {failed.message}", file=stream)
            return Exploration(0, None, note=f"--explore could not run it: {failed.message}")
        try:
            drawn = find(_strategy(allowed, features), fails, settings=settings(
                max_examples=examples, database=None, deadline=None,
                suppress_health_check=list(HealthCheck),
                verbosity=Verbosity.quiet))  # no "@seed(...)" message when it stops
        except _Stop:
            pass
        except NoSuchExample:
            print(f"explore {target}: no failure in {examples} random configurations",
                  file=stream)
            return Exploration(examples, None, note="; ".join(trials.notes))
    except BaseException:
        trials.worker.kill()  # Ctrl-C: do not wait for the call in progress
        raise
    finally:
        trials.close()
    trial = trials.stopped
    if trial is not None:
        found = (f"found by --explore (configuration {trials.tried} of {examples}; a "
                 f"{trial.verdict.outcome.value} is not shrunk)")
    else:
        assert drawn is not None  # find() returned it: only _Stop leaves it None
        case = _case(*drawn, seed=seed)
        trial = trials.failures.get(case.id) or _Trial(
            case, Verdict(Outcome.ERROR, "its verdict was not kept"))
        found = f"found by --explore ({examples} configurations)"
    case, verdict = trial.case, trial.verdict
    result = CaseResult(
        case_id=case.id, rules=list(case.rules), implementation=str(adapter.name),
        backend=str(adapter.backend_name), device=trials.device, dtype=case.dtype,
        op=case.op, params=dict(case.params), outcome=verdict.outcome, seed=case.seed,
        max_error=verdict.max_error, tolerance=verdict.tolerance, ratio=verdict.ratio,
        message=f"{found}: {verdict.message}", seconds=round(trial.seconds, 6),
        errors=verdict.errors, not_graded=dict(verdict.not_graded),
        repro=command(case.id, target, backend=backend, device=device,
                      capabilities=capabilities, seed=seed, op=case.op, params=case.params),
    )
    script = reproducer(case, target, backend=backend, device=device,
                        capabilities=capabilities, message=verdict.message)
    shrunk = "minimal failing case" if trials.stopped is None else "failing case (not shrunk)"
    print(f"explore {target}: {shrunk} {case.id}", file=stream)
    print(f"  {verdict.outcome.value}: {verdict.message}", file=stream)
    print("reproducer:\n" + script, file=stream)
    return Exploration(examples, result, script, note="; ".join(trials.notes))
