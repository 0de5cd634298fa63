"""Report text made safe for HTML: escaped everywhere, implementation names cut short over
matrix columns, numbers written the way the report shows them.

Messages hold exception texts, which hold anything: every string that comes from a report
goes through :func:`escape` (or :func:`breakable`, which escapes first) before it reaches
the page.
"""

from __future__ import annotations

import html
import math
import re

from . import views

__all__ = ["MAX_LABEL", "MAX_RULE", "breakable", "escape", "number", "short"]

MAX_LABEL = 60  # characters of an implementation name over a matrix column
MAX_RULE = 32  # characters of a rule ID left of a matrix or plot row

# After these a long identifier may break when its table cell is too narrow.
_BREAK_AFTER = re.compile(r"(?<=[_./=,])(?=\w)")


def short(name: str, limit: int = MAX_LABEL) -> str:
    """``name`` cut to ``limit`` characters (its last one "…"); where it is cut, the page
    shows the whole name in a tooltip."""
    return name if len(name) <= limit else name[:limit - 1] + "…"


def escape(value: object) -> str:
    """Any text for HTML, in content and in attribute values alike (quotes escaped too);
    control characters and terminal escapes removed (:func:`views.plain`)."""
    return html.escape(views.plain(value), quote=True)


def breakable(value: object, after: str = "") -> str:
    """:func:`escape`, with the text cut after each ``_ . / = ,`` (or each character of
    ``after``) inside a word into ``<span class="seg">`` pieces (inline blocks: a line may
    break between them), so that ``low_precision_accumulation`` wraps at its underscores in
    a narrow column instead of pushing the table off the page, and still copies as one
    word."""
    pattern = re.compile(f"(?<=[{re.escape(after)}])(?=\\w)") if after else _BREAK_AFTER
    parts = pattern.split(views.plain(value))
    if len(parts) == 1:
        return html.escape(parts[0], quote=True)
    return "".join(f'<span class="seg">{html.escape(p, quote=True)}</span>' for p in parts)


def number(value: float | None) -> str:
    """A number in three significant digits; "NaN", "∞"; "–" for None (not measured)."""
    if value is None:
        return "–"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return views.fmt(value)
