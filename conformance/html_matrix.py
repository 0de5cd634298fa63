"""The rule matrix of the HTML report: an SVG heat map, implementations by rules.

Each cell is coloured by the worst outcome and carries its counts in a ``<title>`` tooltip,
so the page needs no script to show them.
"""

from __future__ import annotations

from . import views
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
                       f'rx="3" fill="{COLOURS[outcome]}"/>'
                       f'<text x="{x + (cell_w - 2) / 2:.1f}" y="{y + 13}" '
                       f'text-anchor="middle" fill="{text_colour}">{_e(label)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)
