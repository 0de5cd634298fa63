"""A report as GitHub-flavoured Markdown, sized for a CI job summary
(``cat summary.md >> $GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping

from . import views
from .report import Report
from .results import Outcome
from .rules import rule_title

__all__ = ["SYMBOLS", "to_markdown"]

SYMBOLS: dict[Outcome, str] = {
    Outcome.PASS: "✅",
    Outcome.FAIL: "❌", Outcome.ERROR: "❌", Outcome.CRASH: "❌", Outcome.TIMEOUT: "❌",
    Outcome.NOT_APPLICABLE: "➖",
    Outcome.XFAIL: "⚠️", Outcome.XPASS: "⚠️",
}

# GitHub rejects a step summary over 1 MiB; long failure lists are cut well before that.
MAX_FAILURES = 100
MAX_MESSAGE = 300


# Characters that Markdown would read as syntax inside a line: escapes, code spans, link and
# image brackets, table pipes. (&, < and > become entities: no raw HTML, no autolink.)
_SPECIAL = re.compile(r"[\\`\[\]|]")
# What a code span may hold as it is: no backtick (it would end the span), no backslash (it
# would pair with an escaped pipe), nothing HTML-like (shown literally there, so it could
# not be escaped either).
_CODE_SAFE = re.compile(r"[^`\\<>&]+")


def _cell(text: object, limit: int | None = None) -> str:
    """Text safe inside a table cell: one line, no control characters, no unescaped pipe,
    backtick, bracket or backslash, no raw HTML."""
    text = views.one_line(text)
    if limit is not None and len(text) > limit:
        text = text[:limit - 1] + "…"
    return _SPECIAL.sub(r"\\\g<0>", html.escape(text, quote=False))


def _code(text: object, table: bool = True) -> str:
    """Text as a code span (links and HTML are inert there); escaped plain text when it
    holds what a code span cannot (a backtick, a backslash, ``<``, ``>``, ``&``)."""
    text = views.one_line(text)
    if not _CODE_SAFE.fullmatch(text):
        return _cell(text)
    return "`" + (text.replace("|", "\\|") if table else text) + "`"


def _table(header: list[str], rows: list[list[str]], align: str = "---") -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + [align] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def to_markdown(report: Report) -> str:
    """The report as Markdown: verdict, counts, the rule matrix, failures, fingerprints.

    Parameters
    ----------
    report : Report
        A finished (or merged, or loaded) conformance report.

    Returns
    -------
    str
        Markdown for a GitHub job summary; every string from the report is escaped, so a
        message holding ``|`` or HTML cannot break the tables.
    """
    names = views.implementations(report)
    info = {i.name: i for i in report.implementations}
    counts = report.counts()
    mark = {0: "✅", 1: "❌"}.get(report.exit_code, "⚠️")
    lines = [f"## attnspec conformance: {mark} "
             f"{_cell(views.verdict(report))}", ""]

    # -- counts per implementation --------------------------------------------------------
    header = ["implementation", "backend", "device"] + [label for _, label in views.OUTCOMES]
    rows = []
    for name in names:
        c: Mapping[str, int] = counts.get(name, {})
        i = info.get(name)
        row = [_code(name), _cell(i.backend if i else ""), _cell(i.device if i else "")]
        if i is not None and i.unavailable:
            row += [f"unavailable: {_cell(i.unavailable, 120)}"] + [""] * (len(views.OUTCOMES) - 1)
        else:
            row += [str(c.get(outcome.value, 0)) for outcome, _ in views.OUTCOMES]
        rows.append(row)
    lines += ["### Outcomes", "", *_table(header, rows, ":---:"), ""]

    # -- rule matrix: rules down, implementations across (there are few implementations and
    # many rules, so this orientation keeps the table narrow) ------------------------------
    worst = report.by_rule()
    rule_ids = views.rules(report)
    if rule_ids:
        tested = views.implementations(report, tested=True)
        header = ["rule"] + [_code(n) for n in tested]
        rows = []
        for rule in rule_ids:
            title = rule_title(rule)
            label = f"**{_cell(rule)}** {_cell(title)}" if title else f"**{_cell(rule)}**"
            cells = []
            for name in tested:
                outcome = worst.get(name, {}).get(rule)
                cells.append("" if outcome is None else SYMBOLS[outcome])
            rows.append([label, *cells])
        lines += ["### Rules", "",
                  "✅ pass · ❌ fail, error, timeout or crash · ➖ not applicable · "
                  "⚠️ xfail or xpass (worst outcome over the rule's cases)", ""]
        lines += [*_table(header, rows, ":---:"), ""]

    # -- coverage and deviations ------------------------------------------------------------
    coverages = report.coverage()
    if coverages:
        rows = []
        for name, cov in coverages.items():
            verdict = "✅ sufficient" if cov.sufficient else "⚠️ **insufficient**"
            causes = ", ".join(f"{_cell(c)} ({n})" for c, n in cov.causes[:5])
            rows.append([_code(name), f"{cov.graded} of {cov.cases}",
                         f"{len(cov.tested)} of {len(cov.claimed)}", causes, verdict])
        lines += ["### Coverage", "",
                  "A verdict needs a graded case for every rule an implementation claims (by "
                  "what it declares) and enough graded cases.", ""]
        lines += [*_table(["implementation", "cases graded", "claimed rules tested",
                           "not graded (most frequent causes)", "coverage"], rows), ""]
        for name, cov in coverages.items():
            if cov.sufficient:
                continue
            lines += [f"**{_code(name, table=False)}: insufficient coverage.** "
                      f"{_cell(cov.problem(), MAX_MESSAGE * 2)}", ""]
            lines += [f"- {_cell(rule)}: {_cell(why, MAX_MESSAGE)}"
                      for rule, why in cov.gaps.items()]
            lines.append("")
    deviations = views.deviation_rows(report)
    if deviations:
        rows = [[_code(row.implementation), _cell(row.reason, MAX_MESSAGE),
                 _cell(row.selection), f"{row.xfail}" + (f" (❌ {row.xpass} passed)"
                                                         if row.xpass else ""),
                 " ".join(_cell(e) for e in (row.fingerprint, row.issue) if e)]
                for row in deviations]
        lines += ["### Declared deviations", "",
                  "Where an implementation knowingly differs from the spec: its cases are "
                  "graded and expected to fail (⚠️ xfail); one that passes fails the run.", ""]
        lines += [*_table(["implementation", "deviation", "cases", "expected failures",
                           "evidence"], rows), ""]

    # -- failures ---------------------------------------------------------------------------
    failed = views.failures(report)
    if failed:
        lines += [f"### Failures ({len(failed)})", ""]
        rows = [[_code(r.case_id), _code(r.implementation), _cell(r.outcome.value),
                 _cell(r.message, MAX_MESSAGE)
                 + (f" reproduce: {_code(r.repro)}" if r.repro else ""),
                 views.fmt(r.max_error), views.fmt(r.tolerance), views.fmt(r.ratio)]
                for r in failed[:MAX_FAILURES]]
        lines += _table(["case", "implementation", "outcome", "message", "error", "tolerance",
                         "ratio"], rows)
        if len(failed) > MAX_FAILURES:
            lines += ["", f"... and {len(failed) - MAX_FAILURES} more (see the JSON report)"]
        lines.append("")

    # -- gradients and determinism ----------------------------------------------------------
    grads = views.gradient_rows(report)
    if grads:
        lines += ["### Gradients", "",
                  "Worst error / tolerance of each gradient against the float64 golden "
                  "(1 = at the bound; ∞ = a non-finite or missing value).", ""]
        rows = [[_code(row.implementation), _cell(row.dtype),
                 _cell(row.count) + (" ❌" if row.bad else ""),
                 *(views.fraction(row.worst.get(name)) for name in views.GRADIENTS)]
                for row in grads]
        lines += [*_table(["implementation", "dtype", "passed", *views.GRADIENTS], rows), ""]
    determinism = views.determinism_rows(report)
    if determinism:
        rows = [[_code(row.implementation),
                 ("❌ " if row.status == "not deterministic" else "") + _cell(row.status),
                 f"{row.passed}/{row.applicable}" if row.applicable else "",
                 _cell(row.message, MAX_MESSAGE)]
                for row in determinism]
        lines += ["### Determinism", ""]
        lines += [*_table(["implementation", "status", "passed", "message"], rows), ""]

    # -- fingerprints -----------------------------------------------------------------------
    keys = views.fingerprint_keys(report)
    if keys:
        rows = [[_code(i.name)] + [_cell(i.fingerprint.get(k, "")) for k in keys]
                for i in report.implementations if i.fingerprint]
        lines += ["### Behaviour fingerprint", ""]
        lines += [*_table(["implementation", *(_cell(k) for k in keys)], rows), ""]

    if report.stale_xfails:
        lines += ["### Stale xfail entries", "",
                  "These entries matched no case; remove them from the xfail file.", ""]
        lines += [f"- {_code(entry, table=False)}" for entry in report.stale_xfails] + [""]

    env = report.environment
    libraries = ", ".join(f"{_cell(k)} {_cell(v)}"
                          for k, v in sorted(env.get("libraries", {}).items()))
    parts = [f"attnspec {_cell(report.attnspec_version)}"]
    if env.get("python"):
        parts.append(f"Python {_cell(env['python'])}")
    if env.get("platform"):
        parts.append(_cell(env["platform"]))
    if libraries:
        parts.append(libraries)
    if report.created:
        parts.append(_cell(report.created))
    lines += ["<sub>" + " · ".join(parts) + "</sub>", ""]
    return "\n".join(lines)
