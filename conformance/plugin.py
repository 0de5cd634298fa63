"""pytest plugin (entry point ``pytest11``): ``pytest --attnspec-impl mypkg.attn:fwd`` turns
every conformance case into a test item, so a third party's CI needs no glue code.

Each implementation also gets a last item, ``coverage``, that fails when the cases graded
do not support a verdict (``attnspec.conformance.coverage``: a graded case for every rule it
claims, and enough cases); a declared deviation is a strict expected failure (its case
passing fails the session), as is an entry of ``--attnspec-xfail-file``.

The implementation runs in pytest's process, and so does everything else in it (conftests,
test modules, other plugins), some of which may import or call the implementation before a
case runs; the references each case is graded against are made in a process of their own
(:class:`~attnspec.conformance.references.ReferenceProcess`), so that nothing done to this
process (a patched NumPy function) moves them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # pytest loads the plugin at start-up: the suite is imported on collection
    from .adapters.base import Adapter
    from .cases import Case
    from .references import ReferenceProcess
    from .results import CaseResult
    from .xfail import XfailEntry

#: The session's reference process, started by the first case that needs it.
_REFERENCES = pytest.StashKey["ReferenceProcess"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attnspec", "attnspec conformance suite")
    group.addoption("--attnspec-impl", action="append", default=[], metavar="TARGET",
                    help="grade TARGET (a built-in adapter name or module:callable) against "
                         "the attnspec spec; repeatable")
    group.addoption("--attnspec-backend", default=None, metavar="NAME",
                    help="backend whose arrays module:callable targets take (default numpy)")
    group.addoption("--attnspec-full", action="store_true",
                    help="use the full case catalog instead of the representative subset")
    group.addoption("--attnspec-select", action="append", default=[], metavar="PATTERN",
                    help="only cases whose ID matches PATTERN (glob or substring)")
    group.addoption("--attnspec-xfail-file", default=None, metavar="FILE",
                    help="expected failures for the --attnspec-impl targets")


class AttnspecItem(pytest.Item):
    """One conformance case for one implementation."""

    def __init__(self, *, adapter: Adapter, case: Case, results: list[CaseResult],
                 xfail_reason: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter
        self.case = case
        self.results = results
        self.xfail_reason = xfail_reason
        self.add_marker(pytest.mark.attnspec)

    def runtest(self) -> None:
        from .results import CaseResult, Outcome
        from .runner import handle, judge

        case = self.case
        result = CaseResult(case.id, list(case.rules), self.adapter.name, "", "", case.dtype,
                            case.op, dict(case.params), Outcome.NOT_APPLICABLE, case.seed)
        self.results.append(result)
        reason = self.adapter.not_applicable(case)
        if reason:
            result.message, result.missing = reason, self.adapter.missing(case)
            pytest.skip(f"{self.adapter.name}: not applicable: {reason}")
        deviation = next((d for d in getattr(self.adapter, "deviations", ())
                          if d.matches(case)), None)
        if deviation is not None:
            self.add_marker(pytest.mark.xfail(
                reason=f"declared deviation: {deviation.note()}", strict=True))
        elif self.xfail_reason:
            self.add_marker(pytest.mark.xfail(reason=self.xfail_reason, strict=True))
        prepared = _references(self.config).prepare(case)
        if prepared.error:
            pytest.fail(prepared.error, pytrace=False)
        reply = handle(self.adapter, ("run", case, prepared.inputs))
        verdict = judge(case, reply, prepared)
        result.outcome, result.not_graded = verdict.outcome, dict(verdict.not_graded)
        if verdict.outcome is not Outcome.PASS:
            pytest.fail(f"{case.id} [{', '.join(case.rules)}] "
                        f"{verdict.outcome.value}: {verdict.message}", pytrace=False)

    def reportinfo(self) -> tuple[os.PathLike[str] | str, int | None, str]:
        return self.path, None, f"{self.adapter.name}::{self.case.id}"


class AttnspecCoverageItem(pytest.Item):
    """The last item of an implementation: its coverage suffices for a verdict."""

    def __init__(self, *, adapter: Adapter, results: list[CaseResult], partial: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter
        self.results = results
        self.partial = partial

    def runtest(self) -> None:
        from .coverage import coverage
        from .results import ImplementationInfo
        from .runner import declaration

        info = ImplementationInfo(self.adapter.name, str(self.adapter.backend_name), "",
                                  features=sorted(self.adapter.features),
                                  **declaration(self.adapter))
        cov = coverage(info, list(self.results), partial=self.partial)
        if not cov.sufficient:
            pytest.fail(f"{self.adapter.name}: INSUFFICIENT COVERAGE: {cov.problem()}",
                        pytrace=False)

    def reportinfo(self) -> tuple[os.PathLike[str] | str, int | None, str]:
        return self.path, None, f"{self.adapter.name}::coverage"


class AttnspecCollector(pytest.Collector):
    """The cases of one implementation (collected in-process: a crash ends the session)."""

    def __init__(self, *, target: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target

    def collect(self) -> Iterator[pytest.Item]:
        from .adapters import resolve
        from .catalog import catalog, select

        config = self.config
        adapter = resolve(self.target, backend=config.getoption("--attnspec-backend"))
        reason = adapter.unavailable()
        cases = list(select(catalog(full=config.getoption("--attnspec-full")),
                            config.getoption("--attnspec-select")))
        xfails = _xfails(config)
        results: list[CaseResult] = []
        for case in cases:
            item = AttnspecItem.from_parent(
                self, name=case.id, adapter=adapter, case=case, results=results,
                xfail_reason=_xfail_reason(xfails, adapter.name, case.id),
            )
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"{adapter.name}: {reason}"))
            yield item
        last = AttnspecCoverageItem.from_parent(
            self, name="coverage", adapter=adapter, results=results,
            partial=bool(config.getoption("--attnspec-select")))
        if reason:
            last.add_marker(pytest.mark.skip(reason=f"{adapter.name}: {reason}"))
        yield last


def _xfails(config: pytest.Config) -> list[XfailEntry]:
    path = config.getoption("--attnspec-xfail-file")
    if not path:
        return []
    from .xfail import load_xfails

    return load_xfails(path)


def _xfail_reason(entries: list[XfailEntry], implementation: str,
                  case_id: str) -> str | None:
    for entry in entries:
        if entry.matches(implementation, case_id):
            return entry.reason or "listed in the xfail file"
    return None


def _references(config: pytest.Config) -> ReferenceProcess:
    """The session's reference process (started on first use)."""
    references = config.stash.get(_REFERENCES, None)
    if references is None:
        from .references import ReferenceProcess

        references = config.stash[_REFERENCES] = ReferenceProcess()
    return references


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "attnspec: a conformance case of --attnspec-impl")


def pytest_unconfigure(config: pytest.Config) -> None:
    references = config.stash.get(_REFERENCES, None)
    if references is not None:
        references.close()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    for target in config.getoption("--attnspec-impl"):
        collector = AttnspecCollector.from_parent(session, name=f"attnspec[{target}]",
                                                  target=target)
        items.extend(collector.collect())
