"""The rule matrix of the HTML report: an SVG heat map, implementations by rules.

Each cell is coloured by the worst outcome and carries its counts in a ``<title>`` tooltip,
so the page needs no script to show them. Each column's head has the implementation's marker
(the plots' colour and shape) under its name; the page's CSS shrinks the SVG (``viewBox``)
to the page's width when it is wider.
"""

from __future__ import annotations

from . import views
from .html_series import marker, styles
from .html_text import MAX_RULE
from .html_text import escape as _e
from .html_text import short as _short
from .report import Report
from .results import Outcome
from .rules import rule_title

__all__ = ["COLOURS", "matrix_svg"]

COLOURS = {
    Outcome.PASS: "#2da44e", Outcome.FAIL: "#cf222e", Outcome.ERROR: "#cf222e",
    Outcome.CRASH: "#82071e", Outcome.TIMEOUT: "#bc4c00", Outcome.NOT_APPLICABLE: "#d0d7de",
    Outcome.XFAIL: "#d4a72c", Outcome.XPASS: "#d4a72c",
}


def matrix_svg(report: Report) -> str:
    names = views.implementations(report, tested=True)
    rule_ids = views.rules(report)
    cells = views.cell_counts(report)
    worst = report.by_rule()
    looks = styles(report)
    # as narrow as the widest "passed/applicable" label allows; rule IDs set the left margin
    widest = max((len(str(sum(c.values()))) * 2 + 1 for c in cells.values()), default=3)
    cell_w, cell_h = max(40, int(widest * 6.6) + 14), 20
    longest_rule = max((len(_short(rule, MAX_RULE)) for rule in rule_ids), default=8)
    label_w = int(longest_rule * 7.4) + 14
    # Implementation names run up at 45 degrees above their columns (cut at MAX_LABEL
    # characters; the whole name is in the label's tooltip), over their marker.
    longest = max((len(_short(n)) for n in names), default=4)
    head_h = int(longest * 6.2 * 0.72) + 34
    width = int(label_w + cell_w * max(len(names), 1) + longest * 6.2 * 0.72 + 10)
    height = head_h + cell_h * max(len(rule_ids), 1) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="matrix" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
           "<title>Rule matrix: implementations by rules</title>"]
    if not rule_ids:
        out.append(f'<text x="10" y="{head_h}">no results</text></svg>')
        return "\n".join(out)
    for col, name in enumerate(names):
        x = label_w + col * cell_w + (cell_w - 2) / 2
        s = looks[name]
        out.append(f'<text transform="translate({x + 2:.1f},{head_h - 16}) rotate(-45)">'
                   f"<title>{_e(name)}</title>{_e(_short(name))}</text>")
        out.append(f'<g class="{s.css_class}">' + marker(
            s.shape, x, head_h - 8, 3.6, f'fill="{s.colour}" stroke="#ffffff" '
            'stroke-width="0.6"') + "</g>")
    for row, rule in enumerate(rule_ids):
        y = head_h + row * cell_h
        title = rule_title(rule)
        out.append(f'<text x="4" y="{y + 14}"><title>{_e(rule)}'
                   f"{': ' + _e(title) if title else ''}</title>"
                   f"{_e(_short(rule, MAX_RULE))}</text>")
        for col, name in enumerate(names):
            x = round(label_w + col * cell_w, 1)
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
                       f'rx="3" fill="{COLOURS[outcome]}"/>'
                       f'<text x="{x + (cell_w - 2) / 2:.1f}" y="{y + 13}" '
                       f'text-anchor="middle" fill="{text_colour}">{_e(label)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)
