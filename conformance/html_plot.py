"""The HTML report's plot: each case's error against its logit magnitude, one colour per
implementation and one marker shape per dtype, in inline SVG."""

from __future__ import annotations

import math

from . import views
from .html_text import escape as _e
from .report import Report
from .results import CaseResult, Outcome

__all__ = ["error_svg"]

# Series colours (Okabe-Ito, readable by colour-blind readers), cycled past eight.
_PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442",
            "#000000")
_MARKERS = {"float64": "diamond", "float32": "circle", "float16": "square",
            "bfloat16": "triangle"}


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


def error_svg(report: Report) -> str:
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
