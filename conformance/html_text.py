"""Report text made safe for HTML: escaped everywhere, and implementation names cut short.

Messages hold exception texts, which hold anything: every string that comes from a report
goes through :func:`escape` before it reaches the page.
"""

from __future__ import annotations

import html

from . import views

__all__ = ["MAX_LABEL", "escape", "short"]

MAX_LABEL = 60  # characters of an implementation name over a matrix column


def short(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[:MAX_LABEL - 1] + "…"


def escape(value: object) -> str:
    """Any text for HTML, in content and in attribute values alike (quotes escaped too);
    control characters and terminal escapes removed (:func:`views.plain`)."""
    return html.escape(views.plain(value), quote=True)
