"""A failed answer as a small HTML block (with a ``text/plain`` twin) above the short error line.

The error output itself stays a real one (its type kept, so "Run all" stops after it), but
one line: the type and what happened, without transport internals (aiohttp's
``ssl:default [Connect call failed ...]`` goes into the block's collapsed "Details"). The
block wraps at word boundaries (not mid-word like a narrow stderr box) and shows
`backticked` commands as code. Every text is our error's, already masked (``redact``).
"""
from __future__ import annotations

import html
import re
from typing import Any

from ..errorview_text import split_detail
from ..secrets import redact

__all__ = ["error_bundle", "first_line", "split_detail"]

_CODE = re.compile(r"`([^`\n]{1,200})`")
ERROR_CSS = """
.um-answer .um-error { border-left: 3px solid var(--jp-error-color1, #d32f2f); padding: 0.2em 0.7em;
  background: var(--jp-rendermime-error-background, rgba(211,47,47,0.06)); white-space: normal;
  overflow-wrap: break-word; word-break: normal; }
.um-answer .um-error p { margin: 0.2em 0; }
.um-answer .um-error code { font-family: var(--jp-code-font-family, monospace); }
""".strip()


def _inline(text: str) -> str:
    """Escaped text with `code` spans."""
    out, last = [], 0
    for m in _CODE.finditer(text):
        out += [html.escape(text[last:m.start()]), f"<code>{html.escape(m.group(1))}</code>"]
        last = m.end()
    return "".join(out) + html.escape(text[last:])


def _texts(exc: BaseException) -> tuple[str, str, str]:
    message, detail = split_detail(redact(getattr(exc, "message", exc)))
    return message, detail, redact(getattr(exc, "hint", "") or "")


def first_line(exc: BaseException) -> str:
    """What the error output says: the sentence of what happened and the hint, no internals."""
    message, _, hint = _texts(exc)
    return f"{message} {hint}".strip()


def error_bundle(exc: BaseException) -> dict[str, Any]:
    """The block: type and message, the hint, the transport detail collapsed; and its plain twin."""
    from .display import html_bundle  # noqa: PLC0415

    name = type(exc).__name__
    message, detail, hint = _texts(exc)
    parts = [f'<div class="um-error" role="alert"><p><strong>{html.escape(name)}</strong>: {_inline(message)}</p>']
    if hint:
        parts.append(f"<p>{_inline(hint)}</p>")
    if detail:
        parts.append(f"<details><summary>Details</summary><pre>{html.escape(detail)}</pre></details>")
    parts.append("</div>")
    plain = "\n".join(p for p in (f"{name}: {message}", hint, f"Details: {detail}" if detail else "") if p)
    bundle = html_bundle("".join(parts), plain)
    bundle["text/html"] = f"<style>{ERROR_CSS}</style>" + bundle["text/html"]
    return bundle
