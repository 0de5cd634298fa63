"""The HTML report's tables past the header: coverage, deviations, failures, gradients,
determinism, fingerprints and stale xfail entries. Each gives ``""`` when it has nothing to
show, so the page leaves the section out."""

from __future__ import annotations

from . import views
from .html_measure import Measures
from .html_text import breakable, number
from .html_text import escape as _e
from .report import Report

__all__ = ["MAX_FAILURES", "coverage", "determinism", "deviations", "failures",
           "fingerprints", "gradients", "stale"]

MAX_FAILURES = 2000  # a browser copes; beyond this the JSON report is the place to look


def coverage(report: Report) -> str:
    coverages = report.coverage()
    if not coverages:
        return ""
    rows = ["<tr><th>implementation</th><th>cases graded</th><th>claimed rules tested</th>"
            "<th>not graded (causes)</th><th>coverage</th></tr>"]
    details = []
    for name, cov in coverages.items():
        causes = "<br>".join(f"{_e(c)} ({n})" for c, n in cov.causes[:8])
        state = "sufficient" if cov.sufficient else '<strong class="warn">insufficient</strong>'
        untested = ", ".join(cov.gaps)
        tested = f"{len(cov.tested)} of {len(cov.claimed)}" + (
            f'<br><span class="note">not tested: {_e(untested)}</span>' if untested else "")
        rows.append(f"<tr><td><code>{_e(name)}</code></td>"
                    f'<td class="num">{cov.graded} of {cov.cases}</td><td>{tested}</td>'
                    f"<td>{causes}</td><td>{state}</td></tr>")
        if not cov.sufficient:
            gaps = "".join(f"<li><code>{_e(rule)}</code>: {_e(why)}</li>"
                           for rule, why in cov.gaps.items())
            details.append(f"<p><code>{_e(name)}</code>: insufficient coverage: "
                           f"{_e(cov.problem())}</p>" + (f"<ul>{gaps}</ul>" if gaps else ""))
    return ("<h2>Coverage</h2>\n<p class=\"note\">A verdict needs a graded case for every rule "
            "an implementation claims (by what it declares) and enough graded cases.</p>\n"
            "<table>\n" + "\n".join(rows) + "\n</table>\n" + "\n".join(details))


def deviations(report: Report) -> str:
    found = views.deviation_rows(report)
    if not found:
        return ""
    rows = ["<tr><th>implementation</th><th>deviation</th><th>cases</th>"
            "<th>expected failures</th><th>evidence</th></tr>"]
    for row in found:
        evidence = []
        if row.fingerprint:
            evidence.append(f"fingerprint <code>{_e(row.fingerprint)}</code>")
        if row.issue:
            evidence.append(_e(row.issue))
        count = str(row.xfail) + (f' <strong class="bad">({row.xpass} passed: out of '
                                  f"date)</strong>" if row.xpass else "")
        rows.append(f"<tr><td><code>{_e(row.implementation)}</code></td>"
                    f'<td class="msg">{_e(row.reason)}</td><td>{_e(row.selection)}</td>'
                    f'<td class="num">{count}</td><td>{"<br>".join(evidence)}</td></tr>')
    return ("<h2>Declared deviations</h2>\n<p class=\"note\">Where an implementation "
            "knowingly differs from the spec: its cases are graded and expected to fail "
            "(xfail); one that passes fails the run.</p>\n<table>\n" + "\n".join(rows)
            + "\n</table>")


def failures(report: Report) -> str:
    """The failed cases: a NaN (or inf) where a finite value was due is shown as such, with
    the tolerance the case's finite values are held to; "error / tolerance" says how far
    past the bound, "vs naive" the error over the naive computation's (in the case's
    dtype)."""
    failed = views.failures(report)
    if not failed:
        return ""
    measures = Measures(report)
    rows = ["<tr><th>case</th><th>implementation</th><th>outcome</th><th>message</th>"
            "<th>error</th><th>tolerance</th><th>error / tolerance</th><th>vs naive</th></tr>"]
    for r in failed[:MAX_FAILURES]:
        m = measures(r)
        if m is None:
            error, tolerance, fraction = number(r.max_error), number(r.tolerance), "–"
        else:
            error = m.nonfinite or number(m.error)
            tolerance, fraction = number(m.tolerance), number(m.fraction)
        nonfinite = ' nonfinite' if m is not None and m.nonfinite else ""
        rows.append(
            f'<tr><td><code>{breakable(r.case_id, after="/")}</code></td><td><code>'
            f"{_e(r.implementation)}</code></td><td>{_e(r.outcome.value)}</td>"
            f'<td class="msg">{_e(r.message)}'
            + (f'<br><span class="note">reproduce:</span> <code>{_e(r.repro)}</code>'
               if r.repro else "") + "</td>"
            f'<td class="num{nonfinite}">{_e(error)}</td>'
            f'<td class="num">{_e(tolerance)}</td>'
            f'<td class="num{nonfinite}">{_e(fraction)}</td>'
            f'<td class="num">{_e(number(r.ratio))}</td></tr>')
    more = ""
    if len(failed) > MAX_FAILURES:
        more = (f'\n<p class="note">... and {len(failed) - MAX_FAILURES} more (see the JSON '
                "report)</p>")
    return (f'<h2>Failures ({len(failed)})</h2>\n<table class="failures">\n'
            + "\n".join(rows) + "\n</table>" + more)


def gradients(report: Report) -> str:
    rows = views.gradient_rows(report)
    if not rows:
        return ""
    head = "".join(f"<th>{_e(name)}</th>" for name in views.GRADIENTS)
    lines = [f"<tr><th>implementation</th><th>dtype</th><th>passed</th>{head}</tr>"]
    for row in rows:
        colour = ' style="color:#cf222e"' if row.bad else ""
        cells = "".join(f'<td class="num">{_e(views.fraction(row.worst.get(name)))}</td>'
                        for name in views.GRADIENTS)
        lines.append(f"<tr><td><code>{_e(row.implementation)}</code></td>"
                     f"<td>{_e(row.dtype)}</td><td class=\"num\"{colour}>"
                     f"{_e(row.count)}</td>{cells}</tr>")
    return ("<h2>Gradients</h2>\n<p class=\"note\">Worst error / tolerance of each gradient "
            "against the float64 golden (1 = at the bound; ∞ = a non-finite or missing "
            "value).</p>\n<table>\n" + "\n".join(lines) + "\n</table>")


def determinism(report: Report) -> str:
    rows = views.determinism_rows(report)
    if not rows:
        return ""
    lines = ["<tr><th>implementation</th><th>status</th><th>passed</th><th>message</th></tr>"]
    for row in rows:
        colour = ' style="color:#cf222e"' if row.status == "not deterministic" else ""
        passed = f"{row.passed}/{row.applicable}" if row.applicable else ""
        lines.append(f"<tr><td><code>{_e(row.implementation)}</code></td>"
                     f"<td{colour}>{_e(row.status)}</td><td class=\"num\">{passed}</td>"
                     f'<td class="msg">{_e(row.message)}</td></tr>')
    return "<h2>Determinism</h2>\n<table>\n" + "\n".join(lines) + "\n</table>"


def fingerprints(report: Report) -> str:
    keys = views.fingerprint_keys(report)
    if not keys:
        return ""
    # Identifiers get break points at their underscores, and the table fits the page (CSS),
    # so a dozen columns wrap instead of running off its edge.
    head = "".join(f"<th>{breakable(k)}</th>" for k in keys)
    rows = [f"<tr><th>implementation</th>{head}</tr>"]
    for info in report.implementations:
        if info.fingerprint:
            cells = "".join(f"<td>{breakable(info.fingerprint.get(k, ''))}</td>" for k in keys)
            rows.append(f"<tr><td><code>{breakable(info.name)}</code></td>{cells}</tr>")
    return ('<h2>Behaviour fingerprint</h2>\n<table class="fingerprint">\n' + "\n".join(rows)
            + "\n</table>")


def stale(report: Report) -> str:
    if not report.stale_xfails:
        return ""
    items = "".join(f"<li><code>{_e(entry)}</code></li>" for entry in report.stale_xfails)
    return ("<h2>Stale xfail entries</h2>\n<p class=\"note\">These entries matched no case; "
            f"remove them from the xfail file.</p>\n<ul>{items}</ul>")
