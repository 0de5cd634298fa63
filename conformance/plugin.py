"""pytest plugin (entry point ``pytest11``): ``pytest --attnspec-impl mypkg.attn:fwd`` turns
every conformance case into a test item, so a third party's CI needs no glue code."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attnspec", "attnspec conformance suite")
    group.addoption("--attnspec-impl", action="append", default=[], metavar="TARGET",
                    help="grade TARGET (a built-in adapter name or module:callable) against "
                         "the attnspec spec; repeatable")
    group.addoption("--attnspec-backend", default="numpy", metavar="NAME",
                    help="backend whose arrays module:callable targets take (default numpy)")
    group.addoption("--attnspec-full", action="store_true",
                    help="use the full case catalog instead of the representative subset")
    group.addoption("--attnspec-select", action="append", default=[], metavar="PATTERN",
                    help="only cases whose ID matches PATTERN (glob or substring)")
    group.addoption("--attnspec-xfail-file", default=None, metavar="FILE",
                    help="expected failures for the --attnspec-impl targets")


class AttnspecItem(pytest.Item):
    """One conformance case for one implementation."""

    def __init__(self, *, adapter, case, xfail_reason=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter
        self.case = case
        self.xfail_reason = xfail_reason
        self.add_marker(pytest.mark.attnspec)

    def runtest(self) -> None:
        from .results import Outcome
        from .runner import handle, judge, prepare

        reason = self.adapter.not_applicable(self.case)
        if reason:
            pytest.skip(f"{self.adapter.name}: not applicable: {reason}")
        if self.xfail_reason:
            self.add_marker(pytest.mark.xfail(reason=self.xfail_reason, strict=False))
        prepared = prepare(self.case)
        if prepared.error:
            pytest.fail(prepared.error, pytrace=False)
        reply = handle(self.adapter, ("run", self.case, prepared.inputs))
        verdict = judge(self.case, reply, prepared)
        if verdict.outcome is not Outcome.PASS:
            pytest.fail(f"{self.case.id} [{', '.join(self.case.rules)}] "
                        f"{verdict.outcome.value}: {verdict.message}", pytrace=False)

    def reportinfo(self):
        return self.path, None, f"{self.adapter.name}::{self.case.id}"


class AttnspecCollector(pytest.Collector):
    """The cases of one implementation (collected in-process: a crash ends the session)."""

    def __init__(self, *, target: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.target = target

    def collect(self):
        from .adapters import resolve
        from .catalog import catalog, select

        config = self.config
        adapter = resolve(self.target, backend=config.getoption("--attnspec-backend"))
        reason = adapter.unavailable()
        cases = list(select(catalog(full=config.getoption("--attnspec-full")),
                            config.getoption("--attnspec-select")))
        xfails = _xfails(config)
        for case in cases:
            item = AttnspecItem.from_parent(
                self, name=case.id, adapter=adapter, case=case,
                xfail_reason=_xfail_reason(xfails, adapter.name, case.id),
            )
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"{adapter.name}: {reason}"))
            yield item


def _xfails(config: pytest.Config) -> list:
    path = config.getoption("--attnspec-xfail-file")
    if not path:
        return []
    from .xfail import load_xfails

    return load_xfails(path)


def _xfail_reason(entries: list, implementation: str, case_id: str) -> str | None:
    for entry in entries:
        if entry.matches(implementation, case_id):
            return entry.reason or "listed in the xfail file"
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "attnspec: a conformance case of --attnspec-impl")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list) -> None:
    for target in config.getoption("--attnspec-impl"):
        collector = AttnspecCollector.from_parent(session, name=f"attnspec[{target}]",
                                                  target=target)
        items.extend(collector.collect())
