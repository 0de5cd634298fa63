"""The HTML report's figure, in inline SVG: each case's error against its logit magnitude,
then (:mod:`.html_ratio`) each rule's worst error / tolerance per implementation.

Every implementation keeps its colour and marker (:mod:`.html_series`) in both panels; a
red ring marks a failed case, a faded marker an expected failure, a hollow one an error
below the dtype's resolution (an exact 0, a denormal), drawn at that resolution. A NaN (or
inf) where a finite value was due is drawn in a band above the plot, its tooltip giving the
tolerance it failed. The SVG has a ``viewBox`` and the page's CSS sizes it to the page.
"""

from __future__ import annotations

import math

from . import views
from .html_measure import Measure, Measures, resolution
from .html_ratio import ratio_panel
from .html_series import Style, decade_ticks, point, styles, tick_label
from .html_text import MAX_RULE, number, short
from .html_text import escape as _e
from .precision import EPS
from .report import Report
from .results import CaseResult, Outcome

__all__ = ["WIDTH", "figure_svg"]

WIDTH = 960  # the figure's width in SVG units; the page scales it to fit


def tooltip(r: CaseResult, m: Measure) -> str:
    error = m.nonfinite or number(m.error)
    text = (f"{r.case_id} · {r.implementation}\n{r.outcome.value} ({r.dtype}): error {error}, "
            f"tolerance {number(m.tolerance)}, error/tolerance {number(m.fraction)}")
    if m.error is not None and m.error < resolution(r.dtype):
        text += (f"\nbelow {r.dtype}'s resolution: drawn at "
                 f"{tick_label(round(math.log10(resolution(r.dtype))))}")
    return text + (f"\n{views.one_line(r.message)[:300]}" if r.message else "")


def _rank(r: CaseResult, m: Measure) -> tuple[bool, bool, float]:
    """Which of two marks on one spot to draw: a failure, a non-finite one, the larger."""
    return (not r.outcome.ok, m.error is None, m.error or 0.0)


def _error_panel(report: Report, measures: Measures, looks: dict[str, Style],
                 top: float, left: float) -> tuple[list[str], float]:
    points = [(r, m) for r in report.results
              if r.implementation in looks and (m := measures(r)) is not None]
    right, height = 24, 330
    band, plot_top, plot_h = top + 38, top + 56, 230.0
    out = [f'<text class="ptitle" x="{left}" y="{top + 16}">Error against logit magnitude'
           "</text>"]
    plot_w = WIDTH - left - right
    if not points:
        out.append(f'<text x="{left}" y="{plot_top + 20}">no measured errors in this report'
                   "</text>")
        return out, 90

    # errors below their dtype's resolution (an exact 0, a denormal) are drawn at it
    shown = {id(r): max(m.error, resolution(r.dtype)) for r, m in points
             if m.error is not None}
    if shown:
        y_lo = math.floor(math.log10(min(shown.values())))
        y_hi = max(math.ceil(math.log10(max(shown.values()))), y_lo + 1)
    else:
        y_lo, y_hi = -8, 0
    mags = [math.log10(views.magnitude(r)) for r, _ in points]
    x_lo, x_hi = math.floor(min(mags)) - 0.45, math.ceil(max(mags)) + 0.45

    def px(value: float) -> float:
        return left + (value - x_lo) / (x_hi - x_lo) * plot_w

    def py(value: float) -> float:
        return plot_top + (y_hi - value) / (y_hi - y_lo) * plot_h

    out.append(f'<rect x="{left}" y="{plot_top}" width="{plot_w}" height="{plot_h:g}" '
               'fill="none" stroke="#8c959f"/>')
    for d in decade_ticks(y_lo, y_hi):
        y = py(d)
        out.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" '
                   f'y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{tick_label(d)}</text>")
    for d in decade_ticks(x_lo, x_hi):
        x = px(d)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{plot_top}" '
                   f'y2="{plot_top + plot_h:g}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{plot_top + plot_h + 16:g}" '
                   f'text-anchor="middle">{tick_label(d)}</text>')
    # each dtype's machine epsilon, for scale
    for dtype in sorted({r.dtype for r, m in points if m.error is not None and r.dtype in EPS},
                        key=lambda d: EPS[d]):
        exponent = math.log10(EPS[dtype])
        if y_lo < exponent < y_hi:
            y = py(exponent)
            out.append(f'<line class="ref" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" '
                       f'y2="{y:.1f}"/><text class="reflabel" x="{left + plot_w - 4}" '
                       f'y="{y - 3:.1f}" text-anchor="end">ε {_e(dtype)}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + height - 6}" '
               'text-anchor="middle">logit magnitude</text>')
    out.append(f'<text transform="translate(16,{plot_top + plot_h / 2:.1f}) rotate(-90)" '
               'text-anchor="middle">max error (relative)</text>')
    out.append(f'<text class="tick" x="{left - 6}" y="{band + 4}" text-anchor="end">'
               "NaN · ∞</text>")

    # implementations side by side around their magnitude so they do not hide each other;
    # an implementation's marks of one dtype that would land on the same pixel are drawn
    # once, the worst of them, its tooltip counting the others
    n = len(looks)
    step = min(0.06, 0.6 / max(n - 1, 1))
    drawn: dict[tuple[int, str, int, int], tuple[CaseResult, Measure, float, float, int]] = {}
    for r, m in points:
        s = looks[r.implementation]
        x = px(math.log10(views.magnitude(r)) + (s.index - (n - 1) / 2) * step)
        y = band if m.error is None else py(math.log10(shown[id(r)]))
        spot = (s.index, r.dtype, round(x), round(y))
        kept = drawn.get(spot)
        if kept is None or _rank(r, m) > _rank(kept[0], kept[1]):
            drawn[spot] = (r, m, x, y, 1 + (kept[4] if kept else 0))
        else:
            drawn[spot] = (*kept[:4], kept[4] + 1)
    for r, m, x, y, count in drawn.values():
        more = count - 1
        tip = tooltip(r, m) + (f"\n(+{more} more case{'s' * (more > 1)} of "
                               f"{r.implementation} here)" if more else "")
        out.append(point(looks[r.implementation], x, y, 3.6, failed=not r.outcome.ok,
                         expected=r.outcome is Outcome.XFAIL,
                         hollow=m.error is not None and m.error < resolution(r.dtype),
                         tip=tip))
    return out, height


def figure_svg(report: Report) -> str:
    """The figure: the error panel, then the error / tolerance panel (when some result has a
    tolerance), one SVG whose ``viewBox`` the page scales to its width."""
    looks = styles(report)
    measures = Measures(report)
    # both panels' plots start at the same x: past the widest rule ID of the second
    longest = max((len(short(rule, MAX_RULE)) for rule in views.rules(report)), default=0)
    left = max(78, int(longest * 7.4) + 16)
    body, height = _error_panel(report, measures, looks, 0, left)
    more, extra = ratio_panel(report, measures, looks, height + 16, WIDTH, left)
    if more:
        body += more
        height += 16 + extra
    height = math.ceil(height)
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="figure" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}">',
        "<title>Max error against logit magnitude, and error / tolerance per rule, per "
        "implementation</title>", *body, "</svg>"])
