"""One implementation, every case: the loop over the catalog.

Each implementation runs in a worker process of its own (:mod:`.process`; the worker's side
is :mod:`.worker`, the messages between them :mod:`.messages`). The parent makes every case's
inputs and references once (:mod:`.references`), sends the case, judges the reply
(:mod:`.judging`) and records a :class:`~.results.CaseResult`, applying the adapter's declared
deviations. A worker that hangs is killed (``timeout``); one that dies, or whose replies get
out of step with its requests, is a ``crash``; either way the next case starts a fresh worker,
so one bad case never ends the run. A worker runs under a memory limit (:mod:`.limits`); its
stdout and stderr are captured to a file and appended, cut, to the case's message.

``isolate=False`` (:class:`~.process.InProcessWorker`) runs the adapter in the calling
process: faster to start and easy to debug, but nothing is isolated -- a crash takes the
whole process down, a hang is never timed out, nothing is captured, there is no memory
limit, and what an implementation changes in the process (a patched NumPy function) stays
for every later call, its own and other implementations'. The references are not affected:
``api.run`` makes them before any implementation is imported or called.

The names of the rooms are re-exported here (``from attnspec.conformance.runner import
handle, judge, prepare`` keeps working).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .cases import Case
from .deviations import Deviation, apply_deviations
from .features import BEHAVIOURS
from .judging import Verdict, bit_difference, judge
from .limits import format_size
from .messages import AdapterSpec, RaisedError, Reply, ReplyKind, Request, RequestKind
from .process import (
    OUTPUT_KEEP,
    OUTPUT_SPILL,
    POLL_INTERVAL,
    STARTUP_TIMEOUT,
    InProcessWorker,
    OutputCapture,
    Worker,
    WorkerProcess,
    WorkerStartError,
    output_note,
)
from .references import CaseCache, Prepared, prepare
from .results import CaseResult, ImplementationInfo, Outcome
from .worker import declaration, describe, execute, handle, quiet, take_fingerprint

__all__ = [
    "FINGERPRINT_BOUNDS", "FINGERPRINT_TIMEOUTS", "OUTPUT_KEEP", "OUTPUT_SPILL",
    "POLL_INTERVAL", "STARTUP_TIMEOUT", "AdapterSpec", "CaseCache", "ImplementationRun",
    "InProcessWorker", "OutputCapture", "Prepared", "RaisedError", "Reply", "ReplyKind",
    "Request", "RequestKind", "Verdict", "Worker", "WorkerProcess", "WorkerStartError",
    "bit_difference",
    "declaration", "describe", "execute", "handle", "judge", "output_note", "prepare",
    "quiet", "run_implementation", "take_fingerprint",
]

#: The fingerprint runs a handful of probe cases: it gets this many case timeouts, within
#: the bounds below.
FINGERPRINT_TIMEOUTS = 4
FINGERPRINT_BOUNDS = (30.0, 600.0)


@dataclass
class ImplementationRun:
    """What :func:`run_implementation` produced."""

    info: ImplementationInfo
    results: list[CaseResult]
    libraries: dict[str, str]
    note: str = ""


def run_implementation(
    worker: Worker,
    known: ImplementationInfo,
    cases: list[Case],
    cache: CaseCache,
    *,
    timeout: float,
    fingerprint: bool,
    emit: Callable[[CaseResult], None],
    skip: Callable[[int], None] = lambda n: None,
    deviations: Sequence[Deviation] = (),
) -> ImplementationRun:
    """Run ``cases`` through ``worker`` (a :class:`WorkerProcess` or
    :class:`InProcessWorker`), calling ``emit`` with each result as it is known.

    ``known`` is what the parent knows about the implementation (its name, which results
    carry, and its backend); the worker fills in the rest.

    ``skip(n)`` is called when the implementation turns out unavailable (its ``n`` cases
    will not be emitted). ``deviations`` (the adapter's declared deviations, which hold
    conditions that do not cross to the worker) turn the cases they cover into expected
    failures, or unexpected passes. :class:`WorkerStartError` with ``unpickle=True`` propagates (the
    caller may fall back to running in-process); every other failure becomes outcomes.
    """
    info = known
    results: list[CaseResult] = []

    def record(case: Case, verdict: Verdict, seconds: float = 0.0, output: str = "") -> None:
        rules = [*case.rules, *(r for r in verdict.rules if r not in case.rules)]
        result = CaseResult(
            case_id=case.id, rules=rules, implementation=info.name,
            backend=info.backend, device=info.device, dtype=case.dtype, op=case.op,
            params=dict(case.params), outcome=verdict.outcome, seed=case.seed,
            max_error=verdict.max_error, tolerance=verdict.tolerance, ratio=verdict.ratio,
            message=verdict.message + output_note(output), seconds=round(seconds, 6),
            errors=verdict.errors, not_graded=dict(verdict.not_graded),
        )
        if result.outcome is Outcome.NOT_APPLICABLE:
            result.missing = sorted(case.features - set(info.features) - BEHAVIOURS)
        else:
            apply_deviations(result, case, deviations)
        results.append(result)
        emit(result)

    limit = getattr(worker, "memory_limit", None)
    try:
        try:
            payload = worker.start(cases)
        except WorkerStartError as exc:
            if exc.unpickle:
                raise
            # Nothing is known about the adapter: every case carries the start-up failure.
            for case in cases:
                record(case, Verdict(exc.outcome, f"worker start-up failed: {exc}"))
            return ImplementationRun(info, results, {})
        info = ImplementationInfo(**{**payload["info"], "name": known.name},
                                  unavailable=payload["unavailable"])
        if info.unavailable is not None:
            skip(len(cases))
            return ImplementationRun(info, results, {})
        notes = []
        if payload.get("memory"):
            notes.append(f"memory limit {format_size(limit)} {payload['memory']}")
        if payload.get("x64"):
            notes.append(payload["x64"])
        if payload.get("output"):
            notes.append(f"the worker printed while starting {payload['output']}")
        plan = payload["plan"]
        broken: WorkerStartError | None = None
        for case in cases:
            reason = plan.get(case.id)
            if isinstance(reason, RaisedError):
                record(case, Verdict(Outcome.ERROR, f"not_applicable() raised {reason}"))
                continue
            if reason is not None:
                record(case, Verdict(Outcome.NOT_APPLICABLE, str(reason)))
                continue
            prepared = cache.get(case)
            if prepared.error is not None:
                record(case, Verdict(Outcome.ERROR, prepared.error))
                continue
            if broken is None and not worker.alive:
                try:
                    worker.start()
                except WorkerStartError as exc:
                    broken = exc  # restarting failed once: do not retry for every case
            if broken is not None:
                record(case, Verdict(broken.outcome, f"worker restart failed: {broken}"))
                continue
            start = time.perf_counter()
            reply = worker.request(("run", case, prepared.inputs), timeout)
            seconds = time.perf_counter() - start
            verdict = judge(case, reply, prepared)
            if (reply.kind == "raised" and reply.error is not None
                    and reply.error.is_a("MemoryError")):
                if limit is not None:
                    verdict.message += (f" (the worker's memory limit is {format_size(limit)};"
                                        " --memory-limit changes it)")
                worker.kill()  # whatever it still holds is freed; the next case restarts it
            record(case, verdict, seconds, reply.output)
        if fingerprint:
            info.fingerprint = _fingerprint(worker, timeout)
        return ImplementationRun(info, results, _libraries(worker), "; ".join(notes))
    except BaseException:
        worker.kill()  # Ctrl-C or a failing progress callback: do not wait for the case
        raise
    finally:
        getattr(worker, "discard", worker.close)()


def _fingerprint(worker: Worker, timeout: float) -> dict[str, Any]:
    """The fingerprint, time-limited; a failure is recorded, never raised."""
    try:
        if not worker.alive:
            worker.start()
    except WorkerStartError as exc:
        return {"error": f"worker start-up failed: {exc}"}
    low, high = FINGERPRINT_BOUNDS
    limit = min(max(FINGERPRINT_TIMEOUTS * timeout, low), high)
    reply = worker.request(("fingerprint",), limit)
    if reply.kind == "ok":
        answers: dict[str, Any] = reply.value
        return answers
    detail = reply.error if reply.kind == "raised" else reply.message
    return {"error": f"fingerprint {reply.kind}: {detail}"}


def _libraries(worker: Worker) -> dict[str, str]:
    if not worker.alive:
        return {}
    reply = worker.request(("libraries",), 30.0)
    return reply.value if reply.kind == "ok" else {}
