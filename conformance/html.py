"""A report as one self-contained HTML page: inline CSS and SVG, no script, no network.

The page holds the verdict and environment, the rule matrix (an SVG heat map whose cells
carry their counts in ``<title>`` tooltips), a figure of the error against the logit
magnitude and of the error / tolerance per rule, each implementation in its own colour and
marker, the failures and the behaviour fingerprint. The SVGs scale to the page's width and
the tables wrap. Every string that comes from the report is escaped: messages hold
exception texts, which hold anything.

This module holds the page and its header; the sections are in :mod:`.html_matrix`,
:mod:`.html_plot` (and :mod:`.html_ratio`) and :mod:`.html_tables`, the implementations'
colours and markers in :mod:`.html_series`, the numbers in :mod:`.html_measure` and the
escaping in :mod:`.html_text`.
"""

from __future__ import annotations

import json
from collections import Counter

from . import views
from .html_matrix import matrix_svg
from .html_plot import figure_svg
from .html_series import css as series_css
from .html_series import key as series_key
from .html_series import styles, swatch
from .html_tables import MAX_FAILURES as MAX_FAILURES  # importable from here, as before
from .html_tables import (
    coverage,
    determinism,
    deviations,
    failures,
    fingerprints,
    gradients,
    stale,
)
from .html_text import MAX_LABEL as MAX_LABEL  # importable from here, as before
from .html_text import escape as _e
from .report import Report

__all__ = ["to_html"]

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1f2328; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #d0d7de; }
.verdict { display: inline-block; padding: 0.3em 0.8em; border-radius: 6px; color: #fff;
           font-weight: 600; }
.passed { background: #2da44e; } .failed { background: #cf222e; }
.insufficient { background: #9a6700; } .warn { color: #9a6700; } .bad { color: #cf222e; }
table { border-collapse: collapse; margin: 0.5em 0; display: block; max-width: 100%;
        overflow-x: auto; }  /* wraps to the page; scrolls in its box where it cannot */
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums;
                                      white-space: nowrap; }
td.msg { max-width: 48em; min-width: 20em; white-space: pre-wrap; overflow-wrap: anywhere; }
table.failures td:first-child { min-width: 16em; overflow-wrap: anywhere; }
td.nonfinite { color: #cf222e; font-weight: 600; }
table.fingerprint { font-size: 13px; } table.fingerprint th { font-weight: 600; }
.seg { display: inline-block; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.env { color: #57606a; font-size: 13px; } .note { color: #57606a; }
svg { font: 11px system-ui, sans-serif; display: block; margin: 0.5em 0; max-width: 100%;
      height: auto; }
svg.figure { width: 100%; }
svg .ptitle { font-size: 13px; font-weight: 600; } svg .tick { fill: #57606a; }
svg .grid { stroke: #eaeef2; } svg .ref { stroke: #8c959f; stroke-dasharray: 4 3; }
svg .reflabel { fill: #57606a; font-size: 10px; } svg .stripe { fill: #f6f8fa; }
svg .over { fill: #cf222e; fill-opacity: 0.07; }
svg .limit { stroke: #cf222e; stroke-width: 1.2; stroke-dasharray: 5 3; }
svg .limitlabel, svg .worst.bad { fill: #cf222e; font-weight: 600; }
svg .worst { font-variant-numeric: tabular-nums; } svg .xf { opacity: 0.45; }
ul.key { display: flex; flex-wrap: wrap; gap: 0.3em 1.4em; list-style: none; padding: 0;
         margin: 0.6em 0; }
ul.key li { display: flex; align-items: center; overflow-wrap: anywhere; }
"""


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
        "<title>attnspec conformance report</title>",
        f"<style>{_CSS}{series_css()}\n</style>", "</head>",
        "<body>", "<h1>attnspec conformance</h1>",
        f'<p><span class="verdict {state}">'
        f"{_e(views.verdict(report))}</span></p>",
        _environment(report),
        "<h2>Outcomes</h2>", _counts(report),
        "<h2>Rules</h2>",
        '<p class="note">Each cell: cases that passed (xfail and xpass included) of the '
        "applicable cases, coloured by the worst outcome; hover for the counts.</p>",
        matrix_svg(report),
        "<h2>Errors</h2>",
        '<p class="note">Top: max |impl − golden| / max |golden| per case against the '
        "case's logit magnitude (its <code>magnitude</code> parameter, 1 where it has none; "
        "log scales; dashed: each dtype's machine ε). Bottom: per rule, each "
        "implementation's worst error / tolerance (right of the red line: failed). A red "
        "ring marks a failed case, a faded mark an expected failure, a hollow one an error "
        "below the dtype's resolution (0 included), drawn at it; a non-finite output (NaN, "
        "inf) where a finite one was due is drawn in the NaN band. Hover a mark for its "
        "case and numbers.</p>",
        series_key(styles(report)),
        figure_svg(report),
        coverage(report), deviations(report),
        failures(report), gradients(report), determinism(report), fingerprints(report),
        stale(report),
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
    looks = styles(report)
    head = "".join(f"<th>{_e(label)}</th>" for _, label in views.OUTCOMES)
    rows = [f"<tr><th>implementation</th><th>backend</th><th>device</th>{head}</tr>"]
    for name in views.implementations(report):
        i = info.get(name)
        mark = swatch(looks[name]) if name in looks else ""
        cells = (f'<td class="impl">{mark}<code>{_e(name)}</code></td>'
                 f"<td>{_e(i.backend if i else '')}</td>"
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
