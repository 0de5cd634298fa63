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
from .report import Report
from .results import CaseResult, ImplementationInfo
from .runner import (
    STARTUP_TIMEOUT,
    AdapterSpec,
    CaseCache,
    InProcessWorker,
    WorkerProcess,
    WorkerStartError,
    resolve_target,
    run_implementation,
)

__all__ = ["run"]

Progress = Callable[[int, int, CaseResult], None]


@dataclass
class _Target:
    """One implementation to run: its name, how a worker re-creates it (``spec``; ``None``
    when it can only run in-process) and the adapter made here."""

    name: str
    adapter: Any
    spec: AdapterSpec | None
    label: str  # what options["targets"] records
    note: str = ""

    def known(self) -> ImplementationInfo:
        """What is known before a worker reports: enough to name results if it never does."""
        adapter = self.adapter
        return ImplementationInfo(name=self.name, backend=str(adapter.backend_name),
                                  device="", description=str(adapter.description),
                                  features=sorted(adapter.features))


def run(
    targets: str | Any | Sequence[str | Any] | None = None,
    *,
    backend: str = "numpy",
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
    backend : str
        The ``attnspec.backends`` name whose arrays ``module:callable`` targets take.
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
        process: faster to start, but a crashing implementation takes the process down and
        ``timeout`` is not enforced.
    fingerprint : bool
        Record each implementation's behaviour fingerprint
        (``attnspec.conformance.fingerprint``).
    capabilities : dict or path, optional
        Declared capabilities for ``module:callable`` targets (see ``adapters.resolve``).

    Returns
    -------
    Report
        ``report.exit_code`` is 0 when every applicable case passed (xfails allowed).

    Raises
    ------
    ValueError, TypeError
        For an argument that is not what is described above (an unknown target, dtype, a
        ``select`` that matches no case, a malformed xfail file).

    Notes
    -----
    Outcomes: ``pass``/``fail`` as the tolerance rule grades the outputs (a wrong shape or
    dtype fails); ``error`` when the implementation raised where a value was expected, or
    returned something that is not an array; ``timeout`` and ``crash`` when its worker hung
    (and was killed) or died -- the next case gets a fresh worker; ``not-applicable`` for
    cases outside the implementation's declaration (never sent to it). Cases that expect an
    exception (``case.expect``) pass when the implementation raises that class or a
    subclass. Inputs and golden references are made once per case, in this process.

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
    dtype_names = _names("dtypes", dtypes)
    patterns = _names("select", select)
    cases = _cases(full=full, seed=int(seed), dtypes=dtype_names, patterns=patterns)
    entries: list = []
    if xfail_file is not None:
        from .xfail import load_xfails

        entries = load_xfails(xfail_file)
    chosen, notes = _targets(targets, backend=backend, device=device,
                             capabilities=capabilities)
    options: dict[str, Any] = {
        "targets": None if targets is None else [t.label for t in chosen],
        "backend": backend, "device": device, "dtypes": dtype_names, "select": patterns,
        "xfail_file": None if xfail_file is None else str(xfail_file), "seed": int(seed),
        "timeout": float(timeout), "full": bool(full), "isolate": bool(isolate),
        "fingerprint": bool(fingerprint), "cases": len(cases),
    }
    if notes:
        options["notes"] = notes
    return _run(chosen, cases, entries, options, progress=progress, timeout=float(timeout),
                isolate=isolate, fingerprint=fingerprint)


def _run(chosen: list[_Target], cases: list[Case], entries: list, options: dict[str, Any], *,
         progress: Progress | None, timeout: float, isolate: bool, fingerprint: bool) -> Report:
    from .xfail import apply_xfail, stale_xfails

    cache = CaseCache()
    results: list[CaseResult] = []
    infos: list[ImplementationInfo] = []
    libraries: dict[str, str] = {}
    notes: list[str] = [*options.pop("notes", []), *(t.note for t in chosen if t.note)]
    state = {"done": 0, "total": len(chosen) * len(cases)}

    def emit(result: CaseResult) -> None:
        apply_xfail(result, entries)
        results.append(result)
        state["done"] += 1
        if progress is not None:
            progress(state["done"], state["total"], result)

    def skip(n: int) -> None:
        state["total"] -= n

    startup = max(STARTUP_TIMEOUT, timeout)
    for target in chosen:
        in_process = not isolate or target.spec is None
        worker = (InProcessWorker(target.adapter) if in_process
                  else WorkerProcess(target.spec, startup_timeout=startup))
        try:
            outcome = run_implementation(worker, target.known(), cases, cache,
                                         timeout=timeout, fingerprint=fingerprint, emit=emit,
                                         skip=skip)
        except WorkerStartError as exc:  # the worker could not unpickle the adapter
            notes.append(f"{target.name}: ran in-process, the worker could not re-create "
                         f"the adapter ({exc}); a crash would have ended the run")
            outcome = run_implementation(InProcessWorker(target.adapter), target.known(),
                                         cases, cache, timeout=timeout,
                                         fingerprint=fingerprint, emit=emit, skip=skip)
        infos.append(outcome.info)
        for name, version in outcome.libraries.items():
            libraries.setdefault(name, version)
    if notes:
        options["notes"] = notes
    report = Report(implementations=infos, results=results, options=options,
                    stale_xfails=stale_xfails(entries, results, infos))
    # Frameworks are imported in the workers: their versions come from there.
    for name, version in libraries.items():
        report.environment.setdefault("libraries", {}).setdefault(name, version)
    return report


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
    if not cases:
        raise ValueError(f"no case left to run: select={patterns!r}, dtypes={dtypes!r} "
                         "match no case of the catalog (`attnspec list` shows the case IDs)")
    return cases


def _targets(targets: Any, *, backend: str, device: str | None,
             capabilities: Any) -> tuple[list[_Target], list[str]]:
    """The implementations to run, and notes on built-ins left out."""
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
                adapter = resolve_target(target, backend=backend, device=device,
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
