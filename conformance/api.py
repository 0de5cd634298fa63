"""``attnspec.conformance.run``: grade implementations against the case catalog.

>>> from attnspec.conformance import run
>>> report = run(["attnspec[numpy]"], select=["softmax/*float32"], fingerprint=False)
>>> report.exit_code, sorted(report.counts()["attnspec[numpy]"])
(0, ['pass'])
"""

from __future__ import annotations

import numbers
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cases import Case
from .limits import AUTO, on_gpu, parse_size, resolve_memory_limit
from .messages import AdapterSpec
from .process import STARTUP_TIMEOUT, InProcessWorker, Worker, WorkerProcess, WorkerStartError
from .references import CaseCache
from .report import COMPLETE, INTERRUPTED, Report
from .results import CaseResult, ImplementationInfo, Outcome
from .runner import ImplementationRun, run_implementation
from .signals import terminate_as_interrupt
from .xfail import XfailEntry

__all__ = ["RunInterrupted", "run"]

Progress = Callable[[int, int, CaseResult], None]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a ``KeyboardInterrupt`` from the progress callback) stopped :func:`run`.

    A ``KeyboardInterrupt``, so code that does not know this class stops as before;
    ``report`` is the partial report (``report.status == "interrupted"``) with every result
    gathered until then, ready to be saved.
    """

    def __init__(self, report: Report) -> None:
        super().__init__("the conformance run was interrupted")
        self.report = report


@dataclass
class _Target:
    """One implementation to run: its name, how a worker re-creates it (``spec``; ``None``
    when it can only run in-process) and the adapter made here."""

    name: str
    adapter: Any
    spec: AdapterSpec | None
    label: str  # what options["targets"] records
    note: str = ""

    def repro(self, case_id: str, seed: int) -> str:
        """The ``attnspec repro`` command of a case ("" for an Adapter object, which has no
        name the command line could resolve)."""
        from .repro import command

        if self.spec is None or self.spec.target is None:
            return ""
        return command(case_id, self.spec.target, backend=self.spec.backend,
                       device=self.spec.device, capabilities=self.spec.capabilities,
                       seed=seed)

    def known(self) -> ImplementationInfo:
        """What is known before a worker reports: enough to name results if it never does."""
        adapter = self.adapter
        return ImplementationInfo(name=self.name, backend=str(adapter.backend_name),
                                  device="", description=str(adapter.description),
                                  features=sorted(adapter.features))


def run(
    targets: str | Any | Sequence[str | Any] | None = None,
    *,
    backend: str | None = None,
    device: str | None = None,
    dtypes: str | Iterable[str] | None = None,
    select: str | Iterable[str] | None = None,
    xfail_file: str | Path | None = None,
    seed: int = 0,
    timeout: float = 60.0,
    full: bool = False,
    progress: Progress | None = None,
    isolate: bool = True,
    fingerprint: bool = True,
    capabilities: Any = None,
    memory_limit: str | int | None = AUTO,
    jax_x64: bool = True,
) -> Report:
    """Run the conformance cases against implementations and report every outcome.

    Parameters
    ----------
    targets : str, Adapter or sequence of them, optional
        Built-in names (``"torch.sdpa"``, ``"attnspec[jax-cpu]"``; see
        ``attnspec.conformance.adapters.builtin_names()``), ``"module:callable"`` strings
        (a function with ``attnspec.scaled_dot_product_attention``'s signature on
        ``backend``), or :class:`~attnspec.conformance.adapters.base.Adapter` objects.
        ``None`` runs every built-in; those that cannot run here are listed in the report
        with the reason, without results.
    backend : str, optional
        The backend whose arrays ``module:callable`` targets take (default: NumPy's);
        naming one leaves out the built-ins that do not run on it.
    device : str, optional
        Passed to ``adapters.resolve`` for string targets.
    dtypes : str or iterable of str, optional
        Only cases of these dtypes (``float64``, ``float32``, ``float16``, ``bfloat16``).
    select : str or iterable of str, optional
        Only cases whose ID matches one of these globs (or contains it).
    xfail_file : path, optional
        Expected failures (see :mod:`attnspec.conformance.xfail`).
    seed : int
        Mixed into every case's input seed.
    timeout : float
        Seconds one case may take before its worker is killed (outcome ``timeout``).
    full : bool
        The full grid instead of the default representative catalog.
    progress : callable, optional
        ``progress(done, total, result)`` after each result. ``total`` shrinks when an
        implementation turns out to be unavailable.
    isolate : bool
        One worker process per implementation (default). ``False`` runs everything in this
        process: faster to start, but a crashing implementation takes the process down,
        ``timeout`` and ``memory_limit`` are not enforced, and what an implementation does
        to the process (patching NumPy, say) stays for the outputs of every call after it,
        its own and those of the implementations graded after it. The references are safe
        either way: they are made before any implementation is imported or called.
    fingerprint : bool
        Record each implementation's behaviour fingerprint
        (``attnspec.conformance.fingerprint``).
    capabilities : dict or path, optional
        Declared capabilities for ``module:callable`` targets (see ``adapters.resolve``).
    memory_limit : "auto", int, str or None
        What each worker process may allocate (:mod:`attnspec.conformance.limits`): bytes,
        a size such as ``"8G"``, ``None``/``"none"`` for no limit, or ``"auto"`` (default):
        half the physical memory (at least 2 GiB) for implementations on the CPU, none for
        those on a GPU. An allocation past it is a ``MemoryError`` in the worker (outcome
        ``error``). Not enforced with ``isolate=False``, nor where Python has no
        ``resource`` module (Windows).
    jax_x64 : bool
        Turn on ``jax_enable_x64`` in the worker of an implementation on JAX (default), so
        that its float64 cases run in float64. Never in this process: with
        ``isolate=False`` JAX keeps the configuration it has.

    Returns
    -------
    Report
        ``report.exit_code`` is 0 when every applicable case passed (expected failures
        allowed) and every implementation was graded on enough cases for every rule it
        claims (:mod:`attnspec.conformance.coverage`), 1 when a case failed, 3 when the
        coverage is insufficient. A ``select``/``dtypes`` that leaves no case gives a report
        without results, whose verdict is insufficient coverage.

    Raises
    ------
    ValueError, TypeError
        For an argument that is not what is described above (an unknown target or dtype
        name, a malformed xfail file).
    RunInterrupted
        On Ctrl-C; a ``KeyboardInterrupt`` whose ``report`` holds the results so far.

    Notes
    -----
    Outcomes: ``pass``/``fail`` as the tolerance rule grades the outputs (a wrong shape or
    dtype fails); ``error`` when the implementation raised where a value was expected, or
    returned something that is not an array; ``timeout`` and ``crash`` when its worker hung
    (and was killed) or died -- the next case gets a fresh worker; ``not-applicable`` for
    cases outside the implementation's declaration (never sent to it). Cases that expect an
    exception (``case.expect``) pass when the implementation raises that class or a
    subclass. Inputs and golden references are made once per case, in this process, before
    any implementation's module is imported or any implementation called, so that nothing
    an implementation does to the process moves them (code that ran before ``run`` was
    called -- an Adapter object's module, say -- is the environment they are made in).

    Workers are started with ``multiprocessing``'s spawn method, which imports the calling
    script in each worker: a script that calls ``run`` must do so under
    ``if __name__ == "__main__":``. Adapter objects are pickled to their worker; one that
    cannot be (or cannot be re-created there) runs in this process, with a note in
    ``report.options["notes"]``.
    """
    if not isinstance(timeout, numbers.Real) or isinstance(timeout, bool) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable(done, total, result), got {progress!r}")
    if not (isinstance(memory_limit, str) and memory_limit.strip().lower() == AUTO):
        try:
            parse_size(memory_limit)
        except (ValueError, TypeError) as exc:
            raise ValueError(str(exc)) from None
    dtype_names = _names("dtypes", dtypes)
    patterns = _names("select", select)
    cases = _cases(full=full, seed=int(seed), dtypes=dtype_names, patterns=patterns)
    entries: list[XfailEntry] = []
    if xfail_file is not None:
        from .xfail import load_xfails

        entries = load_xfails(xfail_file)
    # The references first, here, before _targets imports any implementation's module and
    # before any implementation is called: a module that patches NumPy when imported (the
    # parent imports a module:callable to read its declaration, isolated or not), or a call
    # that does (isolate=False makes every call here), cannot move them. Cheaper than a
    # process of their own (references.ReferenceProcess, for --explore and the pytest
    # plugin, whose cases come after implementation code ran): the catalog is known up
    # front, and each case is still made once for every implementation; only the cases no
    # implementation applies to are made in vain.
    cache = _references(cases)
    chosen, notes = _targets(targets, backend=backend, device=device,
                             capabilities=capabilities)
    options: dict[str, Any] = {
        "targets": None if targets is None else [t.label for t in chosen],
        "backend": backend, "device": device, "dtypes": dtype_names, "select": patterns,
        "xfail_file": None if xfail_file is None else str(xfail_file), "seed": int(seed),
        "timeout": float(timeout), "full": bool(full), "isolate": bool(isolate),
        "fingerprint": bool(fingerprint), "cases": len(cases),
        "memory_limit": (resolve_memory_limit(memory_limit, gpu=False) if isolate else None),
        "jax_x64": bool(jax_x64) and bool(isolate),
    }
    if not cases:
        notes.append(f"no case of the catalog matches select={patterns!r}, "
                     f"dtypes={dtype_names!r} (`attnspec list --cases` shows the case IDs)")
    if notes:
        options["notes"] = notes
    return _run(chosen, cases, entries, options, cache, progress=progress,
                timeout=float(timeout), isolate=isolate, fingerprint=fingerprint,
                memory_limit=memory_limit, jax_x64=bool(jax_x64))


def _references(cases: list[Case]) -> CaseCache:
    """Every case's inputs and references, made now (see :mod:`.references`). Ctrl-C (or
    SIGTERM) meanwhile is a :class:`RunInterrupted` with a report of no results."""
    cache = CaseCache()
    try:
        with terminate_as_interrupt():
            cache.fill(cases)
    except KeyboardInterrupt as exc:
        note = (f"interrupted while making the references of {len(cases)} cases, before "
                "any implementation ran")
        raise RunInterrupted(Report(options={"cases": len(cases), "notes": [note]},
                                    status=INTERRUPTED)) from exc
    return cache


def _run(chosen: list[_Target], cases: list[Case], entries: list[XfailEntry],
         options: dict[str, Any], cache: CaseCache, *,
         progress: Progress | None, timeout: float, isolate: bool, fingerprint: bool,
         memory_limit: str | int | None = AUTO, jax_x64: bool = True) -> Report:
    from .xfail import apply_xfail, stale_xfails

    results: list[CaseResult] = []
    infos: list[ImplementationInfo] = []
    libraries: dict[str, str] = {}
    notes: list[str] = [*options.pop("notes", []), *(t.note for t in chosen if t.note)]
    state = {"done": 0, "total": len(chosen) * len(cases)}

    def emit(result: CaseResult) -> None:
        apply_xfail(result, entries)
        if result.outcome.graded and result.outcome is not Outcome.PASS and current is not None:
            result.repro = current.repro(result.case_id, int(options.get("seed") or 0))
        results.append(result)
        state["done"] += 1
        if progress is not None:
            progress(state["done"], state["total"], result)

    def skip(n: int) -> None:
        state["total"] -= n

    startup = max(STARTUP_TIMEOUT, timeout)
    status = COMPLETE
    current: _Target | None = None
    try:
        with terminate_as_interrupt():  # SIGTERM (timeout, CI cancel): as Ctrl-C
            for target in chosen:
                current = target
                outcome = _run_target(target, cases, cache, emit, skip, notes,
                                      timeout=timeout, isolate=isolate,
                                      fingerprint=fingerprint, startup=startup,
                                      memory_limit=memory_limit, jax_x64=jax_x64)
                infos.append(outcome.info)
                for name, version in outcome.libraries.items():
                    libraries.setdefault(name, version)
                current = None
    except KeyboardInterrupt as exc:
        status = INTERRUPTED
        interrupt: KeyboardInterrupt | None = exc
        if current is not None and any(r.implementation == current.name for r in results):
            infos.append(current.known())  # its results so far are in the report
        notes.append(f"interrupted: {len(results)} of {state['total']} results gathered"
                     + (f", during {current.name}" if current is not None else ""))
    else:
        interrupt = None
    if notes:
        options["notes"] = notes
    report = Report(implementations=infos, results=results, options=options, status=status,
                    stale_xfails=[] if interrupt else stale_xfails(entries, results, infos))
    # Frameworks are imported in the workers: their versions come from there.
    for name, version in libraries.items():
        report.environment.setdefault("libraries", {}).setdefault(name, version)
    if interrupt is not None:
        raise RunInterrupted(report) from interrupt
    return report


def _run_target(target: _Target, cases: list[Case], cache: CaseCache, emit: Any, skip: Any,
                notes: list[str], *, timeout: float, isolate: bool, fingerprint: bool,
                startup: float, memory_limit: str | int | None,
                jax_x64: bool = True) -> ImplementationRun:
    """One implementation's run, in a worker (or in-process); notes are appended."""
    spec = target.spec if isolate else None
    in_process = spec is None
    limit: int | None = None
    if spec is None:
        worker: Worker = InProcessWorker(target.adapter)
    else:
        gpu = on_gpu(str(target.adapter.backend_name), spec.device)
        limit = resolve_memory_limit(memory_limit, gpu=gpu)
        worker = WorkerProcess(spec, startup_timeout=startup, memory_limit=limit,
                               jax_x64=jax_x64)
    deviations = tuple(getattr(target.adapter, "deviations", ()))
    try:
        outcome = run_implementation(worker, target.known(), cases, cache, timeout=timeout,
                                     fingerprint=fingerprint, emit=emit, skip=skip,
                                     deviations=deviations)
    except WorkerStartError as exc:  # the worker could not unpickle the adapter
        notes.append(f"{target.name}: ran in-process, the worker could not re-create "
                     f"the adapter ({exc}); a crash would have ended the run")
        outcome = run_implementation(InProcessWorker(target.adapter), target.known(),
                                     cases, cache, timeout=timeout, fingerprint=fingerprint,
                                     emit=emit, skip=skip, deviations=deviations)
    else:
        if (not in_process and outcome.info.unavailable is None
                and isinstance(memory_limit, str) and limit is None
                and memory_limit.strip().lower() == AUTO):
            notes.append(f"{target.name}: no memory limit (it runs on a GPU; give "
                         f"--memory-limit to set one)")
    if outcome.note:
        notes.append(f"{target.name}: {outcome.note}")
    return outcome


def _names(argument: str, value: str | Iterable[str] | None) -> list[str] | None:
    """``None``, or a list of strings from a string or an iterable of strings."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    for item in values:
        if not isinstance(item, str):
            raise TypeError(f"{argument} must be a string or a list of strings, got an item "
                            f"{item!r}")
    return values


def _cases(*, full: bool, seed: int, dtypes: list[str] | None,
           patterns: list[str] | None) -> list[Case]:
    from .catalog import ALL_DTYPES, catalog, select

    cases = catalog(full=bool(full), seed=seed)
    if dtypes is not None:
        unknown = sorted(set(dtypes) - set(ALL_DTYPES))
        if unknown:
            raise ValueError(f"dtypes: unknown dtype(s) {unknown}; expected some of "
                             f"{list(ALL_DTYPES)}")
        cases = [c for c in cases if c.dtype in dtypes]
    if patterns:
        cases = list(select(cases, patterns))
    return cases


def _targets(targets: Any, *, backend: str | None, device: str | None,
             capabilities: Any) -> tuple[list[_Target], list[str]]:
    """The implementations to run, and notes on built-ins left out."""
    from .adapters import resolve
    from .adapters.base import Adapter

    builtin = targets is None
    if builtin:
        from .adapters import builtin_names

        targets = builtin_names()
    elif isinstance(targets, (str, Adapter)):
        targets = [targets]
    else:
        targets = list(targets)
        if not targets:
            raise ValueError("targets is empty; give implementations, or None for every "
                             "built-in")
    chosen: list[_Target] = []
    notes: list[str] = []
    for target in targets:
        if isinstance(target, str):
            try:
                adapter = resolve(target, backend=backend, device=device,
                                  capabilities=capabilities)
            except ValueError as exc:
                if not builtin:
                    raise
                # Every built-in was asked for, and this one has no backend/device as asked.
                notes.append(f"{target}: left out ({exc})")
                continue
            spec = AdapterSpec(target=target, backend=backend, device=device,
                               capabilities=capabilities)
            chosen.append(_Target(str(adapter.name), adapter, spec, target))
        elif isinstance(target, Adapter):
            chosen.append(_adapter_target(target))
        else:
            raise TypeError(f"targets must hold implementation names, 'module:callable' "
                            f"strings or Adapter objects, got {target!r}")
    seen: set[str] = set()
    for target in chosen:
        if target.name in seen:
            raise ValueError(f"targets: the implementation {target.name!r} is given twice")
        seen.add(target.name)
    return chosen, notes


def _adapter_target(adapter: Any) -> _Target:
    """An Adapter object runs in a worker when it pickles, else in-process (with a note)."""
    name = str(adapter.name)
    try:
        pickled = pickle.dumps(adapter)
    except Exception as exc:
        return _Target(name, adapter, None, name,
                       note=f"{name}: ran in-process, the adapter cannot be pickled for a "
                            f"worker ({type(exc).__name__}: {exc}); a crash would have "
                            f"ended the run")
    return _Target(name, adapter, AdapterSpec(pickled=pickled), name)
