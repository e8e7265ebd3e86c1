"""A parsed document's notebook preview: its first pages rendered and sanitised, element counts.

Document text is untrusted (a PDF can carry markup or prompt injection): its Markdown goes
through :func:`render_html` (raw HTML shown as text, unsafe links dropped, nh3 allow-list)
and everything else is escaped here. Pure; no import of the core.
"""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from .css import CSS
from .rules import render_html

__all__ = ["PREVIEW_PAGES", "PREVIEW_CHARS", "preview_html"]

PREVIEW_PAGES = 2
PREVIEW_CHARS = 4000  # per page shown


def preview_html(name: str, pages: Sequence[str], counts: Mapping[str, int], page_count: int,
                 *, cached: bool = False, shown_pages: int = PREVIEW_PAGES) -> str:
    """The preview: a header line, the first ``shown_pages`` pages, what was left out."""
    total = sum(counts.values())
    listed = ", ".join(f"{n} {html.escape(str(c))}" for c, n in sorted(counts.items()))
    head = (f"<strong>{html.escape(name)}</strong> · {page_count} page{'s' if page_count != 1 else ''} · "
            f"{total} element{'s' if total != 1 else ''}" + (f" ({listed})" if listed else "")
            + (" · from the cache" if cached else ""))
    parts = [f"<style>{CSS}</style>", '<div class="um-answer um-document mathjax_ignore tex2jax_ignore">', f"<p>{head}</p>"]
    for number, text in enumerate(pages[:shown_pages], 1):
        cut = text[:PREVIEW_CHARS] + ("…" if len(text) > PREVIEW_CHARS else "")
        parts.append(f"<hr><p><em>page {number}</em></p>{render_html(cut)}")
    if len(pages) > shown_pages:
        rest = len(pages) - shown_pages
        parts.append(f"<hr><p><em>… {rest} more page{'s' if rest != 1 else ''} (.pages, .markdown)</em></p>")
    parts.append("</div>")
    return "".join(parts)
