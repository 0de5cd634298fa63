"""The HTML figure's second panel: per rule, each implementation's worst error / tolerance.

One row per rule that some result measured against a tolerance, one mark per
implementation at its worst case's error / tolerance (log scale): the rule whose marks come
closest to the red line at 1 is the one closest to failing. A NaN (or inf) where a finite
value was due sits in the column right of the plot (so does an error held to a tolerance of
0); the number right of each row is the rule's worst value over the cases that were not
expected failures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import views
from .html_measure import Measures
from .html_series import Style, decade_ticks, point, tick_label
from .html_text import MAX_RULE, number, short
from .html_text import escape as _e
from .report import Report
from .results import CaseResult, Outcome
from .rules import rule_title

__all__ = ["ratio_panel"]

_ROW = 18


@dataclass
class _Worst:
    """An implementation's worst case under one rule."""

    result: CaseResult
    fraction: float  # NaN: a non-finite value where a finite one was due
    cases: int = 1


def _order(fraction: float) -> float:
    return math.inf if math.isnan(fraction) else fraction


def _worst(report: Report, measures: Measures, looks: dict[str, Style]
           ) -> tuple[dict[tuple[str, str], _Worst], dict[str, float]]:
    """(rule, implementation) -> its worst case; rule -> the worst over every case but the
    expected failures."""
    found: dict[tuple[str, str], _Worst] = {}
    per_rule: dict[str, float] = {}
    for r in report.results:
        if r.implementation not in looks or not r.outcome.graded:
            continue
        m = measures(r)
        if m is None or m.fraction is None:
            continue
        for rule in r.rules:
            if rule in (r.not_graded or {}):
                continue
            if r.outcome is not Outcome.XFAIL and _order(m.fraction) >= _order(
                    per_rule.get(rule, -1.0)):
                per_rule[rule] = m.fraction
            cell = found.get((rule, r.implementation))
            if cell is None:
                found[(rule, r.implementation)] = _Worst(r, m.fraction)
                continue
            cell.cases += 1
            if _order(m.fraction) > _order(cell.fraction):
                cell.result, cell.fraction = r, m.fraction
    return found, per_rule


def ratio_panel(report: Report, measures: Measures, looks: dict[str, Style], top: float,
                width: int, left: float) -> tuple[list[str], float]:
    """The panel's SVG elements from ``top`` down, its plot from ``left`` (rule IDs to the
    left of it), and its height ([] when no result was held to a tolerance)."""
    worst, per_rule = _worst(report, measures, looks)
    if not worst:
        return [], 0
    rules = [rule for rule in views.rules(report)
             if any((rule, name) in worst for name in looks)]
    finite = [w.fraction for w in worst.values() if math.isfinite(w.fraction)]
    positive = [f for f in finite if f > 0]
    lo = min(-1, max(-6, math.floor(math.log10(min(positive))))) if positive else -3
    hi = max(1, math.ceil(math.log10(max(positive)))) if positive else 1
    if any(f == 0 for f in finite):
        lo -= 1  # a decade for the exact zeros, at the left edge
    clipped = any(f < 10.0 ** lo for f in finite)  # drawn at the left edge
    right = 118
    plot_w = width - left - right
    rows_top = top + 40
    plot_h = _ROW * len(rules)
    nan_x = left + plot_w + 24

    def px(fraction: float) -> float:
        value = max(math.log10(fraction), lo) if fraction > 0 else lo
        return left + (value - lo) / (hi - lo) * plot_w

    out = [f'<text class="ptitle" x="{left:.0f}" y="{top + 16}">Error / tolerance per rule: '
           "each implementation's worst case</text>"]
    for i, rule in enumerate(rules):
        y = rows_top + i * _ROW
        if i % 2 == 0:
            out.append(f'<rect class="stripe" x="{left:.0f}" y="{y}" width="{plot_w:.0f}" '
                       f'height="{_ROW}"/>')
        title = rule_title(rule)
        tip = f"{rule}: {title}" if title else rule
        out.append(f'<text x="{left - 8:.0f}" y="{y + 13}" text-anchor="end">'
                   f"<title>{_e(tip)}</title>{_e(short(rule, MAX_RULE))}</text>")
    over = px(1.0)
    out.append(f'<rect class="over" x="{over:.1f}" y="{rows_top}" '
               f'width="{left + plot_w - over:.1f}" height="{plot_h}"/>')
    out.append(f'<rect x="{left:.0f}" y="{rows_top}" width="{plot_w:.0f}" height="{plot_h}" '
               'fill="none" stroke="#8c959f"/>')
    for d in decade_ticks(lo, hi, most=12):
        x = px(10.0 ** d)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{rows_top}" '
                   f'y2="{rows_top + plot_h}"/>')
        label = ("≤" if d == lo and clipped else "") + tick_label(d)
        out.append(f'<text class="tick" x="{x:.1f}" y="{rows_top + plot_h + 15}" '
                   f'text-anchor="middle">{_e(label)}</text>')
    out.append(f'<line class="limit" x1="{over:.1f}" x2="{over:.1f}" y1="{rows_top - 6}" '
               f'y2="{rows_top + plot_h}"/>')
    out.append(f'<text class="limitlabel" x="{over:.1f}" y="{rows_top - 9}" '
               'text-anchor="middle">tolerance</text>')
    out.append(f'<text class="tick" x="{nan_x:.1f}" y="{rows_top - 9}" '
               'text-anchor="middle">NaN · ∞</text>')
    out.append(f'<text class="tick" x="{width - 8}" y="{rows_top - 9}" text-anchor="end">'
               "worst</text>")
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{rows_top + plot_h + 34}" '
               'text-anchor="middle">worst error / tolerance (log scale; 1 = at the bound)'
               "</text>")

    n = len(looks)
    for i, rule in enumerate(rules):
        centre = rows_top + i * _ROW + _ROW / 2
        for name, s in looks.items():
            cell = worst.get((rule, name))
            if cell is None:
                continue
            r = cell.result
            # the NaN column spreads its marks a little, so that a crowd of them shows
            x = (px(cell.fraction) if math.isfinite(cell.fraction)
                 else nan_x + ((s.index % 5) - 2) * 2.5)
            # up to three lanes in a row, so equal values do not hide each other
            y = centre + ((s.index % 3) - 1) * 4.0 if n > 1 else centre
            tip = (f"{rule} · {name}: worst error/tolerance {number(cell.fraction)} "
                   f"({r.case_id}, {r.outcome.value}; {cell.cases} case"
                   f"{'s' * (cell.cases != 1)} measured)")
            out.append(point(s, x, y, 3.6, failed=not r.outcome.ok,
                             expected=r.outcome is Outcome.XFAIL,
                             hollow=cell.fraction == 0, tip=tip))
        if rule in per_rule:
            top_value = per_rule[rule]
            bad = not top_value <= 1  # NaN included
            out.append(f'<text class="{"worst bad" if bad else "worst"}" x="{width - 8}" '
                       f'y="{centre + 4:.1f}" text-anchor="end">{number(top_value)}</text>')
    return out, rows_top - top + plot_h + 42
