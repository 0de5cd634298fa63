"""A report in the terminal: a progress bar while the suite runs, then the rule matrix and
a summary. Standard library only; colour is the caller's choice (``color=``), never guessed
here, so piped output and ``NO_COLOR`` stay plain."""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from typing import TextIO

from . import views
from .causes import causes
from .report import Report
from .results import CaseResult, Outcome

__all__ = ["SYMBOLS", "Progress", "matrix", "summary"]

#: One character per outcome, so that a matrix column is one character wide.
SYMBOLS: dict[Outcome, str] = {
    Outcome.PASS: "✓", Outcome.FAIL: "✗", Outcome.ERROR: "E", Outcome.TIMEOUT: "T",
    Outcome.CRASH: "C", Outcome.NOT_APPLICABLE: "-", Outcome.XFAIL: "x", Outcome.XPASS: "X",
}
ASCII_SYMBOLS: dict[Outcome, str] = {**SYMBOLS, Outcome.PASS: "o", Outcome.FAIL: "F"}

_GREEN, _RED, _YELLOW, _DIM, _BOLD, _RESET = (
    "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[2m", "\x1b[1m", "\x1b[0m")
_COLOURS = {
    Outcome.PASS: _GREEN, Outcome.FAIL: _RED, Outcome.ERROR: _RED, Outcome.TIMEOUT: _RED,
    Outcome.CRASH: _RED, Outcome.NOT_APPLICABLE: _DIM, Outcome.XFAIL: _YELLOW,
    Outcome.XPASS: _YELLOW,
}


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{_RESET}" if color else text


class Progress:
    """Progress of a run: one rewritten line on a terminal, a line every ~10% otherwise.

    Parameters
    ----------
    total : int
        The number of (implementation, case) results to expect.
    stream : file-like, optional
        Where to write (default ``sys.stderr``); a bar is drawn when ``stream.isatty()``.

    Notes
    -----
    Feed it with :meth:`update` (one call per result) or pass the object itself as the
    runner's ``progress=`` callable (``progress(done, total, result)``). Call :meth:`close`
    at the end; it is also a context manager.
    """

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise ValueError(f"total must be a non-negative int, got {total!r}")
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self.counts: Counter[Outcome] = Counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = 0
        self._width = 0  # length of the last bar drawn, to blank out leftovers
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, done: int, total: int, result: CaseResult) -> None:
        """The runner's ``progress`` callback signature."""
        self.total = total  # shrinks when an implementation turns out unavailable
        self.update(result, done=done)

    def update(self, result: CaseResult, done: int | None = None) -> None:
        """Count one finished result (``done``: the runner's own count, when it has one)."""
        self.done = self.done + 1 if done is None else done
        self.counts[result.outcome] += 1
        if self.tty:
            self._draw(result.case_id)
        else:
            decile = self.done * 10 // self.total if self.total else 10
            if decile > self._last_decile:
                self._last_decile = decile
                self.stream.write(self._status() + "\n")
                self.stream.flush()

    def close(self) -> None:
        """Finish the bar (or print the last line when piped); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.tty:
            self._draw("")
            self.stream.write("\n")
        elif self._last_decile < 10:
            self.stream.write(self._status() + "\n")
        self.stream.flush()

    def _status(self) -> str:
        parts = [f"{self.done}/{self.total}"]
        for outcome, label in views.OUTCOMES:
            if self.counts[outcome]:
                parts.append(f"{label} {self.counts[outcome]}")
        return " ".join(parts)

    def _draw(self, case_id: str) -> None:
        columns = shutil.get_terminal_size((100, 24)).columns
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        bar_w = 24
        filled = int(fraction * bar_w)
        line = f"[{'#' * filled}{'.' * (bar_w - filled)}] {self._status()}"
        if case_id:
            line += f"  {views.one_line(case_id)}"
        # One character short of the width: writing the last column wraps some terminals.
        line = line[:max(columns - 1, 10)]
        pad = " " * max(self._width - len(line), 0)
        self._width = len(line)
        self.stream.write("\r" + line + pad)
        self.stream.flush()


def matrix(report: Report, color: bool, *, unicode: bool = True, width: int | None = None,
           ) -> str:
    """The rule matrix: rules down, implementations across, one symbol per cell.

    Parameters
    ----------
    report : Report
    color : bool
        Whether to add ANSI colours (the caller decides: a TTY, no ``NO_COLOR``).
    unicode : bool, optional
        ``False`` swaps ✓ and ✗ for ``o`` and ``F`` for consoles without them.
    width : int, optional
        The width to fit (default: the terminal's). When the implementation names do not fit
        as column headers, the columns are numbered and a legend follows.

    Returns
    -------
    str
        The matrix with a legend line; each cell is the worst outcome over the rule's cases.
    """
    names = views.implementations(report, tested=True)
    rule_ids = views.rules(report)
    if not rule_ids:
        return "no results"
    shown = {name: views.one_line(name) for name in names}  # no escapes from a report
    symbols = SYMBOLS if unicode else ASCII_SYMBOLS
    worst = report.by_rule()
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    labels = {rule: views.one_line(rule) for rule in rule_ids}
    label_w = max(len(label) for label in labels.values())
    headers = [shown[n] for n in names]
    numbered = label_w + sum(len(h) + 2 for h in headers) > width
    if numbered:
        headers = [str(i + 1) for i in range(len(names))]
    col_w = [max(len(h), 1) for h in headers]

    head = "".join("  " + h.center(w) for h, w in zip(headers, col_w, strict=True))
    lines = [" " * label_w + head]
    for rule in rule_ids:
        cells = []
        for name, w in zip(names, col_w, strict=True):
            outcome = worst.get(name, {}).get(rule)
            if outcome is None:
                cells.append("  " + " " * w)
                continue
            symbol = symbols[outcome].center(w)
            cells.append("  " + _paint(symbol, _COLOURS[outcome], color))
        lines.append(labels[rule].ljust(label_w) + "".join(cells))
    if numbered:
        lines.append("")
        lines += [f"  {i + 1}: {shown[name]}" for i, name in enumerate(names)]
    legend = ", ".join(f"{symbols[o]} {label}" for o, label in views.OUTCOMES)
    lines += ["", f"({legend}; worst outcome over the rule's cases)"]
    return "\n".join(lines)


def summary(report: Report, *, max_failures: int = 20, color: bool = False) -> str:
    """Counts per implementation, the failures (the first ``max_failures``), stale xfail
    entries and the behaviour fingerprints, ending with the verdict.

    Parameters
    ----------
    report : Report
    max_failures : int, optional
        How many failures to list before "... and N more".
    color : bool, optional
        Whether to colour the verdict and outcome names.
    """
    if max_failures < 0:
        raise ValueError(f"max_failures must be >= 0, got {max_failures!r}")
    names = views.implementations(report)
    info = {i.name: i for i in report.implementations}
    counts = report.counts()
    clean = views.one_line  # every string from the report: no escapes, no control characters
    name_w = max((len(clean(n)) for n in names), default=14)
    lines = []

    header = "implementation".ljust(name_w) + "".join(
        f"  {label:>7}" for _, label in views.OUTCOMES)
    lines.append(header)
    for name in names:
        i = info.get(name)
        if i is not None and i.unavailable:
            lines.append(f"{clean(name).ljust(name_w)}  unavailable: {clean(i.unavailable)}")
            continue
        c = counts.get(name, Counter())
        row = clean(name).ljust(name_w)
        for outcome, _ in views.OUTCOMES:
            n = c.get(outcome.value, 0)
            cell = f"  {n:>7}"
            if n and color and outcome is not Outcome.PASS:
                cell = _paint(cell, _COLOURS[outcome], color)
            row += cell
        lines.append(row)

    grouped = causes(report.results)
    if grouped:
        lines += ["", "Errors by cause (no answer to grade; one line per cause, with the fix):"]
        for cause in grouped[:10]:
            plural = "s" if cause.count > 1 else ""
            label = _paint(f"{cause.count} {cause.outcome.value}{plural}",
                           _COLOURS[cause.outcome], color)
            fix = f" -> {clean(cause.fix)}" if cause.fix else ""
            lines.append(f"  {label} ({clean(cause.implementation)}) "
                         f"{_cut(clean(cause.cause), 160)}{fix}; e.g. {clean(cause.example)}")
        if len(grouped) > 10:
            lines.append(f"  ... and {len(grouped) - 10} more causes")

    failed = views.failures(report)
    if failed:
        lines += ["", f"Failures ({len(failed)}):"]
        for r in failed[:max_failures]:
            label = _paint(r.outcome.value, _COLOURS[r.outcome], color)
            numbers = ""
            if r.max_error is not None or r.ratio is not None:
                numbers = (f" [error {views.fmt(r.max_error)} / tolerance "
                           f"{views.fmt(r.tolerance)}, ratio {views.fmt(r.ratio)}]")
            message = clean(r.message)
            if len(message) > 200:
                message = message[:199] + "…"
            lines.append(f"  {label} {clean(r.case_id)} ({clean(r.implementation)}){numbers}"
                         + (f": {message}" if message else ""))
            if r.repro:
                lines.append(f"      reproduce: {clean(r.repro)}")
        if len(failed) > max_failures:
            lines.append(f"  ... and {len(failed) - max_failures} more")

    grads = views.gradient_rows(report)
    if grads:
        impl_w = max(len(clean(row.implementation)) for row in grads)
        width = max(6, *(len(r.count) for r in grads))
        lines += ["", "Gradients (worst error / tolerance against the float64 golden; "
                      "1 = at the bound; x = expected failures):",
                  "  " + "implementation".ljust(impl_w) + "  dtype     "
                  + "passed".ljust(width) + "  "
                  + "".join(f"{name:>{_col(name)}}" for name in views.GRADIENTS)]
        for grad in grads:
            cells = "".join(f"{views.fraction(grad.worst.get(name)):>{_col(name)}}"
                            for name in views.GRADIENTS)
            passed = grad.count.ljust(width)
            if color and grad.bad:
                passed = _paint(passed, _RED, color)
            lines.append(f"  {clean(grad.implementation).ljust(impl_w)}  {grad.dtype:<8}  "
                         f"{passed}  {cells}")
    determinism = views.determinism_rows(report)
    if determinism:
        lines += ["", "Determinism (repeated calls compared bit for bit):"]
        for det in determinism:
            text = det.status
            if det.applicable:
                text += f" ({det.passed} of {det.applicable} cases)"
            if det.status == "not deterministic":
                text = _paint(text, _RED, color) + f": {_cut(clean(det.message), 200)}"
            lines.append(f"  {clean(det.implementation)}: {text}")

    coverages = report.coverage()
    if coverages:
        width = max(len(clean(n)) for n in coverages)
        lines += ["", "Coverage (a verdict needs a graded case for every rule an implementation "
                      "claims, and enough cases):"]
        for name, cov in coverages.items():
            lines.append(f"  {clean(name).ljust(width)}  {clean(views.coverage_line(cov))}")
            if not cov.sufficient:
                text = _paint("INSUFFICIENT COVERAGE", _YELLOW + _BOLD, color)
                lines.append(f"  {' ' * width}  {text}: {_cut(clean(cov.problem()), 600)}")
                for rule, why in list(cov.gaps.items())[:6]:
                    lines.append(f"  {' ' * width}    {rule}: {_cut(clean(why), 200)}")

    deviations = views.deviation_rows(report)
    if deviations:
        lines += ["", "Declared deviations (graded; expected failures, x; one that passes fails "
                      "the run):"]
        for dev in deviations:
            tally = (f"{dev.xfail} x" if dev.xfail or dev.xpass
                     else "no such case in this run")
            tally += f", {dev.xpass} passed (out of date)" if dev.xpass else ""
            evidence = "".join(f" [{clean(e)}]" for e in (dev.fingerprint, dev.issue) if e)
            lines.append(f"  {clean(dev.implementation)}: {_cut(clean(dev.reason), 160)} "
                         f"({clean(dev.selection)}; {tally}){evidence}")

    if report.stale_xfails:
        lines += ["", "Stale xfail entries (matched no case):"]
        lines += [f"  {clean(entry)}" for entry in report.stale_xfails]

    prints = [i for i in report.implementations if i.fingerprint]
    if prints:
        lines += ["", "Behaviour fingerprint:"]
        for i in prints:
            pairs = ", ".join(f"{clean(k)}={clean(v)}" for k, v in i.fingerprint.items())
            lines.append(f"  {clean(i.name)}: {pairs}")

    code = _RED if report.exit_code else _GREEN
    notes = report.options.get("notes") if isinstance(report.options, dict) else None
    if isinstance(notes, list) and notes:
        lines += ["", "Notes:"]
        lines += [f"  {_cut(clean(note), 300)}" for note in notes]
    lines += ["", _paint(views.verdict(report), _BOLD + code, color)]
    return "\n".join(lines)


def _col(name: str) -> int:
    """A gradient column's width: its name and two spaces, at least 7."""
    return max(7, len(name) + 2)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
