"""A report as one self-contained HTML page: inline CSS and SVG, no script, no network.

The page holds the verdict and environment, the rule matrix (an SVG heat map whose cells
carry their counts in ``<title>`` tooltips), an SVG plot of the error against the logit
magnitude per implementation, the failures and the behaviour fingerprint. Every string that
comes from the report is escaped: messages hold exception texts, which hold anything.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter

from . import views
from .report import Report
from .results import CaseResult, Outcome
from .rules import rule_title

__all__ = ["to_html"]

MAX_FAILURES = 2000  # a browser copes; beyond this the JSON report is the place to look
MAX_LABEL = 60  # characters of an implementation name over a matrix column

_COLOURS = {
    Outcome.PASS: "#2da44e", Outcome.FAIL: "#cf222e", Outcome.ERROR: "#cf222e",
    Outcome.CRASH: "#82071e", Outcome.TIMEOUT: "#bc4c00", Outcome.NOT_APPLICABLE: "#d0d7de",
    Outcome.XFAIL: "#d4a72c", Outcome.XPASS: "#d4a72c",
}
# Series colours (Okabe-Ito, readable by colour-blind readers), cycled past eight.
_PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442",
            "#000000")
_MARKERS = {"float64": "diamond", "float32": "circle", "float16": "square",
            "bfloat16": "triangle"}

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1f2328; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #d0d7de; }
.verdict { display: inline-block; padding: 0.3em 0.8em; border-radius: 6px; color: #fff;
           font-weight: 600; }
.passed { background: #2da44e; } .failed { background: #cf222e; }
.insufficient { background: #9a6700; } .warn { color: #9a6700; } .bad { color: #cf222e; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.msg { max-width: 48em; white-space: pre-wrap; word-break: break-word; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.env { color: #57606a; font-size: 13px; } .note { color: #57606a; }
svg { font: 11px system-ui, sans-serif; display: block; margin: 0.5em 0; }
"""


def _short(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[:MAX_LABEL - 1] + "…"


def _e(value: object) -> str:
    """Any text for HTML, in content and in attribute values alike (quotes escaped too);
    control characters and terminal escapes removed (:func:`views.plain`)."""
    return html.escape(views.plain(value), quote=True)


def to_html(report: Report) -> str:
    """The report as a self-contained HTML page.

    Parameters
    ----------
    report : Report
        A finished (or merged, or loaded) conformance report.

    Returns
    -------
    str
        The page; it loads nothing (no script, no stylesheet, no font, no image URL).
    """
    state = {0: "passed", 1: "failed"}.get(report.exit_code, "insufficient")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        "<title>attnspec conformance report</title>", f"<style>{_CSS}</style>", "</head>",
        "<body>", "<h1>attnspec conformance</h1>",
        f'<p><span class="verdict {state}">'
        f"{_e(views.verdict(report))}</span></p>",
        _environment(report),
        "<h2>Outcomes</h2>", _counts(report),
        "<h2>Rules</h2>",
        '<p class="note">Each cell: cases that passed (xfail and xpass included) of the '
        "applicable cases, coloured by the worst outcome; hover for the counts.</p>",
        _matrix_svg(report),
        "<h2>Error against logit magnitude</h2>",
        '<p class="note">max |impl − golden| / max |golden| per case (log scales); the '
        "magnitude is the case's <code>magnitude</code> parameter, 1 where it has none. "
        "Marker shape is the dtype; a red ring marks a failed case; points at the top had "
        "no finite error.</p>",
        _error_svg(report),
        _coverage(report), _deviations(report),
        _failures(report), _gradients(report), _determinism(report), _fingerprints(report),
        _stale(report),
        "</body>", "</html>", "",
    ]
    return "\n".join(p for p in parts if p)


# -- header -----------------------------------------------------------------------------------

def _environment(report: Report) -> str:
    env = report.environment
    items = [f"attnspec {_e(report.attnspec_version)}"]
    if env.get("python"):
        items.append(f"Python {_e(env['python'])}")
    for key in ("platform", "machine", "processor"):
        if env.get(key):
            items.append(_e(env[key]))
    libraries = env.get("libraries", {})
    if libraries:
        items.append(", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(libraries.items())))
    if report.created:
        items.append(f"created {_e(report.created)}")
    text = '<p class="env">' + " · ".join(items) + "</p>"
    if report.options:
        options = json.dumps(report.options, sort_keys=True, default=str)
        text += f'\n<p class="env">options: <code>{_e(options)}</code></p>'
    return text


def _counts(report: Report) -> str:
    counts = report.counts()
    info = {i.name: i for i in report.implementations}
    head = "".join(f"<th>{_e(label)}</th>" for _, label in views.OUTCOMES)
    rows = [f"<tr><th>implementation</th><th>backend</th><th>device</th>{head}</tr>"]
    for name in views.implementations(report):
        i = info.get(name)
        cells = (f"<td><code>{_e(name)}</code></td><td>{_e(i.backend if i else '')}</td>"
                 f"<td>{_e(i.device if i else '')}</td>")
        if i is not None and i.unavailable:
            cells += (f'<td colspan="{len(views.OUTCOMES)}">unavailable: '
                      f"{_e(i.unavailable)}</td>")
        else:
            c = counts.get(name, Counter())
            cells += "".join(f'<td class="num">{c.get(o.value, 0)}</td>'
                             for o, _ in views.OUTCOMES)
        rows.append(f"<tr>{cells}</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


# -- the rule matrix --------------------------------------------------------------------------

def _matrix_svg(report: Report) -> str:
    names = views.implementations(report, tested=True)
    rule_ids = views.rules(report)
    cells = views.cell_counts(report)
    worst = report.by_rule()
    cell_w, cell_h, label_w = 56, 20, 110
    # Implementation names run up at 45 degrees above their columns (cut at MAX_LABEL
    # characters; the whole name is in the label's tooltip).
    longest = max((len(_short(n)) for n in names), default=4)
    head_h = int(longest * 6.2 * 0.72) + 24
    width = label_w + cell_w * max(len(names), 1) + int(longest * 6.2 * 0.72) + 10
    height = head_h + cell_h * max(len(rule_ids), 1) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}">',
           "<title>Rule matrix: implementations by rules</title>"]
    if not rule_ids:
        out.append(f'<text x="10" y="{head_h}">no results</text></svg>')
        return "\n".join(out)
    for col, name in enumerate(names):
        x = label_w + col * cell_w + cell_w / 2
        out.append(f'<text transform="translate({x:.1f},{head_h - 6}) rotate(-45)">'
                   f"<title>{_e(name)}</title>{_e(_short(name))}</text>")
    for row, rule in enumerate(rule_ids):
        y = head_h + row * cell_h
        title = rule_title(rule)
        out.append(f'<text x="4" y="{y + 14}"><title>{_e(title or rule)}</title>'
                   f"{_e(rule)}</text>")
        for col, name in enumerate(names):
            x = label_w + col * cell_w
            counter = cells.get((name, rule))
            outcome = worst.get(name, {}).get(rule)
            if counter is None or outcome is None:
                out.append(f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                           'fill="#ffffff" stroke="#d0d7de"/>')
                continue
            applicable = sum(counter.values()) - counter[Outcome.NOT_APPLICABLE]
            passed = counter[Outcome.PASS] + counter[Outcome.XFAIL] + counter[Outcome.XPASS]
            label = f"{passed}/{applicable}" if applicable else "n/a"
            detail = ", ".join(f"{lab} {counter[o]}" for o, lab in views.OUTCOMES if counter[o])
            tip = f"{rule} · {name}: {detail}" + (f"\n{title}" if title else "")
            text_colour = "#1f2328" if outcome is Outcome.NOT_APPLICABLE else "#ffffff"
            out.append(f"<g><title>{_e(tip)}</title>"
                       f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                       f'rx="3" fill="{_COLOURS[outcome]}"/>'
                       f'<text x="{x + (cell_w - 2) / 2:.1f}" y="{y + 13}" '
                       f'text-anchor="middle" fill="{text_colour}">{_e(label)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


# -- error against magnitude ------------------------------------------------------------------

def _marker(shape: str, x: float, y: float, fill: str, stroke: str, width: float) -> str:
    common = f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"'
    r = 4.0
    if shape == "square":
        return f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r}" height="{2 * r}" {common}/>'
    if shape == "triangle":
        points = (f"{x:.1f},{y - r - 1:.1f} {x - r - 0.5:.1f},{y + r:.1f} "
                  f"{x + r + 0.5:.1f},{y + r:.1f}")
        return f'<polygon points="{points}" {common}/>'
    if shape == "diamond":
        points = (f"{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y:.1f} {x:.1f},{y + r + 1:.1f} "
                  f"{x - r - 1:.1f},{y:.1f}")
        return f'<polygon points="{points}" {common}/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" {common}/>'


def _measured(result: CaseResult) -> bool:
    """Whether the case has an error to plot: a finite one, or a failure whose error was not
    finite (null after a JSON round trip). Errors, timeouts and crashes measured nothing."""
    if result.max_error is not None:
        return True
    return result.outcome in (Outcome.FAIL, Outcome.XFAIL)


def _decade_ticks(lo: float, hi: float) -> list[int]:
    first, last = math.ceil(lo), math.floor(hi)
    step = max(1, math.ceil((last - first + 1) / 8))
    return list(range(first, last + 1, step))


def _error_svg(report: Report) -> str:
    names = views.implementations(report, tested=True)
    points = [r for r in report.results if _measured(r)]
    width, height = 760, 380
    left, right, top, bottom = 76, 190, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}">',
           "<title>Max error against logit magnitude, per implementation</title>"]
    finite = [r.max_error for r in points
              if r.max_error is not None and math.isfinite(r.max_error) and r.max_error > 0]
    if not points:
        out.append(f'<text x="{left}" y="{top + 20}">no measured errors in this report</text>')
        out.append("</svg>")
        return "\n".join(out)

    mags = [math.log10(views.magnitude(r)) for r in points]
    x_lo, x_hi = math.floor(min(mags)) - 0.3, math.ceil(max(mags)) + 0.3
    if finite:
        y_lo = math.floor(math.log10(min(finite)))
        y_hi = max(math.ceil(math.log10(max(finite))), y_lo + 1)
    else:
        y_lo, y_hi = -8, 0
    band = top - 14  # the row above the plot area for non-finite errors

    def px(value: float) -> float:
        return left + (value - x_lo) / (x_hi - x_lo) * plot_w

    def py(value: float) -> float:
        return top + (y_hi - value) / (y_hi - y_lo) * plot_h

    # axes, grid and ticks
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="#8c959f"/>')
    for d in _decade_ticks(y_lo, y_hi):
        y = py(d)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#eaeef2"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">1e{d}</text>')
    for d in _decade_ticks(x_lo, x_hi):
        x = px(d)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" '
                   'stroke="#eaeef2"/>')
        label = f"{10.0 ** d:g}"
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                   f"{_e(label)}</text>")
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">'
               "logit magnitude</text>")
    out.append(f'<text transform="translate(14,{top + plot_h / 2:.1f}) rotate(-90)" '
               'text-anchor="middle">max error (relative)</text>')
    out.append(f'<text x="{left - 6}" y="{band + 4}" text-anchor="end">non-finite</text>')

    # points: implementations side by side around their magnitude so they do not hide each
    # other
    spread = 0.05
    for r in points:
        idx = names.index(r.implementation)
        colour = _PALETTE[idx % len(_PALETTE)]
        x = px(math.log10(views.magnitude(r)) + (idx - (len(names) - 1) / 2) * spread)
        error = r.max_error
        if error is None or not math.isfinite(error):
            y = band
        else:
            y = py(math.log10(error)) if error > 0 else py(y_lo)
        failed = not r.outcome.ok
        tip = (f"{r.case_id} · {r.implementation}\n{r.outcome.value}: error "
               f"{views.fmt(r.max_error)}, tolerance {views.fmt(r.tolerance)}, ratio "
               f"{views.fmt(r.ratio)}" + (f"\n{r.message}" if r.message else ""))
        shape = _MARKERS.get(r.dtype, "circle")
        marker = _marker(shape, x, y, colour, "#cf222e" if failed else "#ffffff",
                         2.0 if failed else 0.6)
        out.append(f"<g><title>{_e(tip)}</title>{marker}</g>")

    # legend: implementations (colour), dtypes (shape)
    lx, ly = left + plot_w + 16, top + 6
    for idx, name in enumerate(names):
        colour = _PALETTE[idx % len(_PALETTE)]
        out.append(f'<rect x="{lx}" y="{ly + 16 * idx - 5}" width="10" height="10" '
                   f'fill="{colour}"/>')
        short = name if len(name) <= 24 else name[:23] + "…"
        out.append(f'<text x="{lx + 16}" y="{ly + 16 * idx + 4}"><title>{_e(name)}</title>'
                   f"{_e(short)}</text>")
    ly += 16 * len(names) + 12
    dtypes = [d for d in _MARKERS if any(r.dtype == d for r in points)]
    for idx, dtype in enumerate(dtypes):
        out.append(_marker(_MARKERS[dtype], lx + 5, ly + 16 * idx, "#57606a", "#ffffff", 0.6))
        out.append(f'<text x="{lx + 16}" y="{ly + 16 * idx + 4}">{_e(dtype)}</text>')
    out.append("</svg>")
    return "\n".join(out)


# -- tables -----------------------------------------------------------------------------------

def _coverage(report: Report) -> str:
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


def _deviations(report: Report) -> str:
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


def _failures(report: Report) -> str:
    failed = views.failures(report)
    if not failed:
        return ""
    rows = ["<tr><th>case</th><th>implementation</th><th>outcome</th><th>message</th>"
            "<th>error</th><th>tolerance</th><th>ratio</th></tr>"]
    for r in failed[:MAX_FAILURES]:
        rows.append(
            f"<tr><td><code>{_e(r.case_id)}</code></td><td><code>{_e(r.implementation)}"
            f'</code></td><td>{_e(r.outcome.value)}</td><td class="msg">{_e(r.message)}'
            + (f'<br><span class="note">reproduce:</span> <code>{_e(r.repro)}</code>'
               if r.repro else "") + "</td>"
            f'<td class="num">{_e(views.fmt(r.max_error))}</td>'
            f'<td class="num">{_e(views.fmt(r.tolerance))}</td>'
            f'<td class="num">{_e(views.fmt(r.ratio))}</td></tr>')
    more = ""
    if len(failed) > MAX_FAILURES:
        more = (f'\n<p class="note">... and {len(failed) - MAX_FAILURES} more (see the JSON '
                "report)</p>")
    return (f"<h2>Failures ({len(failed)})</h2>\n<table>\n" + "\n".join(rows)
            + "\n</table>" + more)


def _gradients(report: Report) -> str:
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


def _determinism(report: Report) -> str:
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


def _fingerprints(report: Report) -> str:
    keys = views.fingerprint_keys(report)
    if not keys:
        return ""
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    rows = [f"<tr><th>implementation</th>{head}</tr>"]
    for info in report.implementations:
        if info.fingerprint:
            cells = "".join(f"<td>{_e(info.fingerprint.get(k, ''))}</td>" for k in keys)
            rows.append(f"<tr><td><code>{_e(info.name)}</code></td>{cells}</tr>")
    return "<h2>Behaviour fingerprint</h2>\n<table>\n" + "\n".join(rows) + "\n</table>"


def _stale(report: Report) -> str:
    if not report.stale_xfails:
        return ""
    items = "".join(f"<li><code>{_e(entry)}</code></li>" for entry in report.stale_xfails)
    return ("<h2>Stale xfail entries</h2>\n<p class=\"note\">These entries matched no case; "
            f"remove them from the xfail file.</p>\n<ul>{items}</ul>")
