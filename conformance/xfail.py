"""Expected failures: a file listing the cases an implementation is known to fail.

Two formats. Plain text, one entry per line, ``#`` starting the reason (or a comment line)::

    # torch's fully masked rows are NaN, not 0
    empty-rows/*                    # fully masked rows give NaN
    torch.sdpa::poison-scores/*     # only for torch.sdpa: NaN keys leak

or TOML (a ``.toml`` file, or any file whose first entry line starts with ``[[``)::

    [[xfail]]
    pattern = "empty-rows/*"
    reason = "fully masked rows give NaN"
    implementation = "torch.*"      # optional glob on the implementation name

Patterns are globs on case IDs (``fnmatch``: ``*`` also matches ``/``); the implementation
part is a glob too, and an exact name always matches itself (``attnspec[numpy]`` would
otherwise read as a character class). A failing case (fail, error, timeout, crash) that an
entry matches becomes ``xfail``, a passing one ``xpass``; entries that match no case of a run
are reported as stale so that the file can be pruned.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import CaseResult, ImplementationInfo, Outcome
from .tomlcompat import tomllib

__all__ = ["XfailEntry", "apply_xfail", "apply_xfails", "load_xfails", "parse_xfails",
           "stale_xfails"]

#: Outcomes an xfail entry turns into ``xfail``.
_FAILING = (Outcome.FAIL, Outcome.ERROR, Outcome.TIMEOUT, Outcome.CRASH)
_TOML_KEYS = ("pattern", "reason", "implementation")


@dataclass(frozen=True)
class XfailEntry:
    """One expected failure.

    Attributes
    ----------
    pattern : str
        Glob on case IDs.
    reason : str
        Why the case fails (may be empty).
    implementation : str or None
        Glob on implementation names; ``None`` applies the entry to every implementation.
    source : str
        Where the entry was read from, as ``file:line`` (``file:entry N`` where the line is
        unknown).
    """

    pattern: str
    reason: str = ""
    implementation: str | None = None
    source: str = ""

    def matches(self, implementation: str, case_id: str) -> bool:
        """Whether the entry covers ``case_id`` run on ``implementation``."""
        return self.covers(implementation) and (
            case_id == self.pattern or fnmatch.fnmatchcase(case_id, self.pattern))

    def covers(self, implementation: str) -> bool:
        """Whether the entry applies to ``implementation`` (whatever the case)."""
        glob = self.implementation
        return glob is None or implementation == glob or fnmatch.fnmatchcase(implementation,
                                                                             glob)

    @property
    def text(self) -> str:
        """The entry in the plain-text form (``impl::pattern  # reason``)."""
        body = f"{self.implementation}::{self.pattern}" if self.implementation else self.pattern
        return f"{body}  # {self.reason}" if self.reason else body

    def describe(self) -> str:
        """``source: text``, the form stale entries are reported in."""
        return f"{self.source}: {self.text}" if self.source else self.text


# -- reading --------------------------------------------------------------------------------


def load_xfails(path: str | Path) -> list[XfailEntry]:
    """Read an xfail file (TOML or plain text, see the module docstring).

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a file.
    ValueError
        When the file is malformed (not UTF-8 text, not TOML, nested too deeply, a bad
        entry); the message names the file (and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"xfail file {str(path)!r}: no such file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not an xfail file (not UTF-8 text: {exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc})") from None
    fmt = "toml" if path.suffix.lower() == ".toml" else None
    return parse_xfails(text, source=str(path), format=fmt)


def parse_xfails(text: str, *, source: str = "<xfail>", format: str | None = None
                 ) -> list[XfailEntry]:
    """Parse xfail entries from ``text``.

    Parameters
    ----------
    text : str
        The file's contents.
    source : str
        The file name that entries and error messages refer to.
    format : {"toml", "text", None}
        ``None`` guesses: TOML when the first line that is neither blank nor a comment
        starts with ``[``.
    """
    if format is None:
        first = next((line.strip() for line in text.splitlines()
                      if line.strip() and not line.lstrip().startswith("#")), "")
        format = "toml" if first.startswith("[") else "text"
    if format == "toml":
        return _parse_toml(text, source)
    if format == "text":
        return _parse_text(text, source)
    raise ValueError(f"format must be 'toml', 'text' or None, got {format!r}")


def _parse_text(text: str, source: str) -> list[XfailEntry]:
    entries = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        body, _, reason = raw.partition("#")
        body = body.strip()
        if not body:
            continue  # blank or comment line
        where = f"{source}:{lineno}"
        if any(ch.isspace() for ch in body):
            raise ValueError(
                f"{where}: expected 'PATTERN  # reason' or 'IMPLEMENTATION::PATTERN  # reason', "
                f"got {raw.strip()!r} (a pattern cannot contain spaces; put the reason after #)"
            )
        glob, sep, pattern = body.partition("::")
        if not sep:
            glob, pattern = "", body
        if not pattern or (sep and not glob) or "::" in pattern:
            raise ValueError(
                f"{where}: expected 'IMPLEMENTATION::PATTERN' with both parts non-empty, "
                f"got {body!r}"
            )
        entries.append(XfailEntry(pattern, reason.strip(), glob if sep else None, where))
    return entries


def _parse_toml(text: str, source: str) -> list[XfailEntry]:
    toml = tomllib()
    if toml is None:
        raise ImportError(
            f"{source}: reading a TOML xfail file needs Python >= 3.11 or the 'tomli' "
            "package; or write the file in the plain-text form 'PATTERN  # reason'"
        )
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise ValueError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ValueError(f"{source}: nested too deeply (arrays or tables within each "
                         "other)") from None
    extra = sorted(set(data) - {"xfail"})
    if extra:
        raise ValueError(f"{source}: unknown top-level key(s) {extra}; expected only "
                         "[[xfail]] tables")
    tables = data.get("xfail", [])
    if not isinstance(tables, list):
        raise ValueError(f"{source}: 'xfail' must be an array of tables ([[xfail]]), got "
                         f"{type(tables).__name__}")
    # Line numbers of the [[xfail]] headers, for messages (tomllib does not keep them).
    headers = [n for n, line in enumerate(text.splitlines(), 1)
               if re.match(r"\s*\[\[\s*xfail\s*\]\]", line)]
    entries = []
    for index, table in enumerate(tables):
        where = (f"{source}:{headers[index]}" if len(headers) == len(tables)
                 else f"{source}:entry {index + 1}")
        entries.append(_toml_entry(table, where))
    return entries


def _toml_entry(table: Any, where: str) -> XfailEntry:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: an [[xfail]] entry must be a table, got "
                         f"{type(table).__name__}")
    unknown = sorted(set(table) - set(_TOML_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; an [[xfail]] entry takes "
                         f"{', '.join(_TOML_KEYS)}")
    pattern = table.get("pattern")
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError(f"{where}: 'pattern' must be a non-empty string (a glob on case "
                         f"IDs), got {pattern!r}")
    reason = table.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError(f"{where}: 'reason' must be a string, got {reason!r}")
    implementation = table.get("implementation")
    if implementation is not None and (not isinstance(implementation, str)
                                       or not implementation.strip()):
        raise ValueError(f"{where}: 'implementation' must be a non-empty string (a glob on "
                         f"implementation names), got {implementation!r}")
    return XfailEntry(pattern.strip(), reason.strip(),
                      implementation.strip() if implementation else None, where)


# -- applying -------------------------------------------------------------------------------


def apply_xfail(result: CaseResult, entries: Sequence[XfailEntry]) -> XfailEntry | None:
    """Turn ``result`` into xfail/xpass when an entry matches it (the first one wins).

    Returns the matching entry (``None`` when none matches). Not-applicable results and
    results already marked xfail/xpass are left as they are.
    """
    entry = next((e for e in entries if e.matches(result.implementation, result.case_id)),
                 None)
    if entry is None:
        return None
    reason = entry.reason or "listed in the xfail file"
    if result.outcome in _FAILING:
        detail = f"{result.outcome.value}: {result.message}" if result.message else (
            result.outcome.value)
        result.outcome = Outcome.XFAIL
        result.message = f"expected failure ({reason}); {detail}"
    elif result.outcome is Outcome.PASS:
        result.outcome = Outcome.XPASS
        result.message = f"passed, but listed as an expected failure ({reason})"
    return entry


def stale_xfails(entries: Iterable[XfailEntry], results: Iterable[CaseResult],
                 implementations: Iterable[ImplementationInfo] = ()) -> list[str]:
    """Entries that matched no result of a run, as ``source: text``.

    An entry for implementations that all were unavailable in the run is not stale: the run
    could not tell.
    """
    results = list(results)
    implementations = list(implementations)
    stale = []
    for entry in entries:
        if any(entry.matches(r.implementation, r.case_id) for r in results):
            continue
        covered = [i for i in implementations if entry.covers(i.name)]
        if entry.implementation is not None and covered and all(i.unavailable
                                                                for i in covered):
            continue
        stale.append(entry.describe())
    return stale


def apply_xfails(report: Any, entries: Sequence[XfailEntry]) -> None:
    """Apply ``entries`` to every result of ``report`` and record its stale entries."""
    for result in report.results:
        apply_xfail(result, entries)
    report.stale_xfails = stale_xfails(entries, report.results, report.implementations)
