"""How the HTML report tells implementations apart: one colour AND one marker shape each.

Ten colours (none of them the failure red) by eight shapes: implementation ``i`` gets colour
``i % 10`` and shape ``(i + i // 10) % 8``, so the first 80 implementations all differ in
the pair, and neighbours in the report's order differ in both colour and shape (readable
without colour). The plots draw the shapes as SVG; the page's key draws the same polygons
with CSS ``clip-path``, so the key is plain HTML that wraps and never cuts a name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import views
from .html_text import escape as _e
from .report import Report

__all__ = ["COLOURS", "SHAPES", "Style", "css", "decade_ticks", "key", "marker", "point", "style",
           "styles", "swatch", "tick_label"]

_RING = "#cf222e"  # around the mark of a failed case

#: Okabe-Ito's colour-blind-safe colours first, then four more distinct from them; no red
#: (a red ring marks a failed case) and none too light on white.
COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#6a3d9a",
           "#8c564b", "#3b3b3b", "#9a9a00")


def _star() -> tuple[tuple[float, float], ...]:
    points = []
    for k in range(10):
        radius = 1.3 if k % 2 == 0 else 0.55
        angle = math.pi * k / 5
        points.append((radius * math.sin(angle), -radius * math.cos(angle)))
    return tuple(points)


def _plus(a: float = 0.42, arm: float = 1.15) -> tuple[tuple[float, float], ...]:
    return ((-a, -arm), (a, -arm), (a, -a), (arm, -a), (arm, a), (a, a), (a, arm),
            (-a, arm), (-a, a), (-arm, a), (-arm, -a), (-a, -a))


def _rotated(points: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    c = math.sqrt(0.5)
    return tuple(((x - y) * c, (x + y) * c) for x, y in points)


#: Marker outlines around (0, 0) for a radius of 1 (``()``: a circle), all within ±1.3.
SHAPES: dict[str, tuple[tuple[float, float], ...]] = {
    "circle": (),
    "square": ((-0.9, -0.9), (0.9, -0.9), (0.9, 0.9), (-0.9, 0.9)),
    "triangle": ((0.0, -1.25), (1.15, 0.8), (-1.15, 0.8)),
    "diamond": ((0.0, -1.3), (1.1, 0.0), (0.0, 1.3), (-1.1, 0.0)),
    "triangle-down": ((0.0, 1.25), (1.15, -0.8), (-1.15, -0.8)),
    "plus": _plus(),
    "star": _star(),
    "cross": _rotated(_plus(0.38, 1.25)),
}
_SHAPE_NAMES = tuple(SHAPES)


@dataclass(frozen=True)
class Style:
    """An implementation's look: ``index`` is its place in the report's order."""

    index: int
    colour: str
    shape: str

    @property
    def css_class(self) -> str:
        """``"s3"``: on every mark of this implementation (plot points, key entries)."""
        return f"s{self.index}"


def style(index: int) -> Style:
    """The look of the implementation at ``index`` (see the module's docstring)."""
    colours, shapes = len(COLOURS), len(_SHAPE_NAMES)
    return Style(index, COLOURS[index % colours],
                 _SHAPE_NAMES[(index + index // colours) % shapes])


def styles(report: Report) -> dict[str, Style]:
    """Every implementation with results, by name, in the report's order."""
    return {name: style(i) for i, name in enumerate(views.implementations(report,
                                                                          tested=True))}


def marker(shape: str, x: float, y: float, r: float, paint: str) -> str:
    """One marker centred on (x, y); ``paint`` holds its fill/stroke attributes."""
    outline = SHAPES.get(shape, ())
    if not outline:
        return f'<circle class="mk" cx="{x:.1f}" cy="{y:.1f}" r="{r:g}" {paint}/>'
    points = " ".join(f"{x + px * r:.1f},{y + py * r:.1f}" for px, py in outline)
    return f'<polygon class="mk" points="{points}" {paint}/>'


def css() -> str:
    """The key's swatches: ``.sk<i>`` cuts a shape out of a square, ``.sc<i>`` paints it."""
    rules = [".sw { display: inline-block; width: 13px; height: 13px; flex: none; "
             "margin-right: 0.4em; vertical-align: -2px; }"]
    for i, outline in enumerate(SHAPES.values()):
        if outline:
            points = ", ".join(f"{(px + 1.3) / 2.6 * 100:.0f}% {(py + 1.3) / 2.6 * 100:.0f}%"
                               for px, py in outline)
            clip = f"polygon({points})"
        else:
            clip = "circle(40%)"
        rules.append(f".sk{i} {{ -webkit-clip-path: {clip}; clip-path: {clip}; }}")
    rules += [f".sc{i} {{ background: {colour}; }}" for i, colour in enumerate(COLOURS)]
    return "\n".join(rules)


def swatch(s: Style) -> str:
    """The implementation's marker as an HTML ``<span>`` (see :func:`css`)."""
    return (f'<span class="sw sk{_SHAPE_NAMES.index(s.shape)} '
            f'sc{COLOURS.index(s.colour)}"></span>')


def key(looks: dict[str, Style]) -> str:
    """The plots' key: every implementation's marker and whole name, wrapping as the page
    does."""
    if not looks:
        return ""
    items = "".join(f'<li class="{s.css_class}">{swatch(s)}<code>{_e(name)}</code></li>'
                    for name, s in looks.items())
    return f'<ul class="key">{items}</ul>'


# -- marks and axes of the plots ---------------------------------------------------------------

def decade_ticks(lo: float, hi: float, most: int = 9) -> list[int]:
    first, last = math.ceil(lo), math.floor(hi)
    step = max(1, math.ceil((last - first + 1) / most))
    return list(range(first, last + 1, step))


def tick_label(exponent: int) -> str:
    return f"{10.0 ** exponent:g}" if -3 <= exponent <= 4 else f"1e{exponent}"


def point(s: Style, x: float, y: float, r: float, *, failed: bool, expected: bool,
          hollow: bool, tip: str) -> str:
    """One implementation's mark with its tooltip: filled in its colour (hollow: outlined),
    ringed in red when the case failed, faded when it was an expected failure."""
    if hollow:
        paint = f'fill="#ffffff" stroke="{s.colour}" stroke-width="1.4"'
    else:
        paint = f'fill="{s.colour}" stroke="#ffffff" stroke-width="0.6"'
    ring = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r + 3.2:.1f}" fill="none" '
            f'stroke="{_RING}" stroke-width="1.5"/>' if failed else "")
    cls = f"pt {s.css_class}" + (" xf" if expected else "")
    return (f'<g class="{cls}"><title>{_e(tip)}</title>{ring}'
            f"{marker(s.shape, x, y, r, paint)}</g>")
