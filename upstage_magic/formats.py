"""Output formats of ``%%upstage``: markdown, text, code and json, each in one place.

For each format: the instruction added to the system message, the request options, what
a streamed (partial) answer looks like and the final display plus the value ``-o`` gets.
Every display is a MIME bundle of ``text/html`` built by :mod:`render` (our renderer and
its allow-list sanitiser) and ``text/plain`` (the raw answer): never Markdown for a front
end to parse. Registered secrets (the API key) are masked in everything shown or stored,
also a key's beginning at the end of a partial answer. Pure: no IPython, no aiohttp.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

from . import errors

__all__ = [
    "FORMATS",
    "Final",
    "instruction_for",
    "request_options_for",
    "stream_bundle",
    "final_for",
    "html_bundle",
    "text_bundle",
    "mask_stream",
    "fence",
    "fence_ticks",
    "extract_code",
    "strip_json_fence",
]

FORMATS = ("markdown", "text", "code", "json")

JSON_INSTRUCTION = "Respond with a single valid JSON object."
CODE_INSTRUCTION = "Reply with only the code, in one fenced code block with its language."


@dataclass(frozen=True)
class Final:
    """The end of an answer: what to show, what ``-o`` gets, and a problem to report."""

    bundle: dict[str, Any]
    value: Any
    problem: str | None = None


# ---------------------------------------------------------------------------- requests


def instruction_for(fmt: str, messages_text: str = "") -> str | None:
    """The system-message line a format adds (json: only if the prompt never says "JSON")."""
    if fmt == "code":
        return CODE_INSTRUCTION
    if fmt == "json" and "json" not in messages_text.lower():
        return JSON_INSTRUCTION
    return None


def request_options_for(fmt: str, *, response_format: dict[str, Any] | None = None) -> dict[str, Any]:
    """Request options a format needs (json: the API's JSON mode, or the given schema's)."""
    if fmt == "json":
        return {"response_format": response_format or {"type": "json_object"}}
    return {}


# ---------------------------------------------------------------------------- display


def secret_tail(text: str) -> int:
    """Length of the longest end of ``text`` that begins a registered secret (0 if none)."""
    secrets = errors._SECRETS  # noqa: SLF001 - the registry lives there
    if not secrets or not text:
        return 0
    best = 0
    for secret in secrets:
        for k in range(min(len(secret) - 1, len(text)), best, -1):
            if text.endswith(secret[:k]):
                best = k
                break
    return best


def mask_stream(text: str) -> str:
    """``text`` with registered secrets masked, also a secret's start cut off at the end.

    A partial answer can end inside a key the model echoes; that beginning is masked
    too, so no live update ever shows part of a key.
    """
    text = errors.mask_secrets(text)
    k = secret_tail(text)
    return text[: len(text) - k] + "***" if k >= 4 else text[: len(text) - k]


# Our own wrappers around rendered answers (thinking, context, tool calls, footer, notes).
WRAPPER_CSS = """
.um-answer details.um-thinking, .um-answer details.um-context {
  margin: 0.25em 0 0.5em; padding: 0.25em 0.6em; border-left: 3px solid var(--jp-border-color1, #ccc);
  color: var(--jp-content-font-color2, #555);
}
.um-answer details > summary { cursor: pointer; font-size: 0.9em; color: var(--jp-content-font-color2, #555); }
.um-answer .um-thinking-body, .um-answer .um-context-body { font-size: 0.9em; }
.um-answer .um-tool-calls pre { border-left: 3px solid var(--jp-brand-color1, #1976d2); padding-left: 0.6em; }
.um-answer .um-footer, .um-answer .um-note {
  font-size: 0.85em; font-style: italic; color: var(--jp-content-font-color2, #555); margin-top: 0.2em;
}
""".strip()


def html_bundle(answer_html: str, plain: str) -> dict[str, Any]:
    """A MIME bundle of our sanitised HTML (with the answer stylesheet) and plain text."""
    from .render import CSS  # noqa: PLC0415

    return {"text/html": f'<style>{CSS}\n{WRAPPER_CSS}</style><div class="um-answer">{answer_html}</div>',
            "text/plain": plain}


def text_bundle(text: str) -> dict[str, Any]:
    """Plain text shown as preformatted HTML (and as text/plain)."""
    from .render import render_text_html  # noqa: PLC0415

    return html_bundle(render_text_html(text), text)


def _markdown_bundle(markdown: str, plain: str, *, load_images: bool, renderer: Any = None) -> dict[str, Any]:
    if renderer is not None:
        return html_bundle(renderer.render(markdown), plain)
    from .render import render_html  # noqa: PLC0415

    return html_bundle(render_html(markdown, load_images=load_images), plain)


def stream_bundle(fmt: str, text: str, *, load_images: bool = False, final: bool = False,
                  renderer: Any = None) -> dict[str, Any]:
    """The display of a (partial) answer: rendered Markdown, plain text, or JSON as code.

    ``final`` says the text is complete; otherwise a key cut off at the end is masked too.
    ``renderer`` (a :class:`~upstage_magic.render.AnswerRenderer`, one per answer) reuses
    the finished blocks of earlier renders of the same answer; the output is identical.
    """
    text = errors.mask_secrets(text) if final else mask_stream(text)
    if fmt == "text":
        return text_bundle(text)
    if fmt == "json":
        return _markdown_bundle(fence(text, "json"), text, load_images=False)
    return _markdown_bundle(text, text, load_images=load_images, renderer=renderer)


def final_for(fmt: str, text: str, *, load_images: bool = False, schema: Any = None,
              renderer: Any = None) -> Final:
    """The final display and ``-o`` value of a complete answer (secrets masked)."""
    text = errors.mask_secrets(text)
    if fmt == "code":
        code, lang = extract_code(text)
        return Final(_markdown_bundle(fence(code, lang), code, load_images=False), code)
    if fmt == "json":
        raw = strip_json_fence(text)
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            return Final(stream_bundle(fmt, text, final=True), None,
                         f"The answer is not valid JSON ({exc}); its text is shown above.")
        value: Any = obj
        if schema is not None:
            from .schema import Schema  # noqa: PLC0415

            try:
                value = Schema.of(schema).parse(raw)
            except ValueError as exc:
                return Final(stream_bundle(fmt, text, final=True), None, str(exc))
        pretty = json.dumps(obj, indent=2, ensure_ascii=False)
        return Final(_markdown_bundle(fence(pretty, "json"), pretty, load_images=False), value)
    return Final(stream_bundle(fmt, text, load_images=load_images, final=True, renderer=renderer), text)


def footer_bundle(line: str, *, notes: list[str] | None = None) -> dict[str, Any]:
    """The one-line footer (and quiet notes under it) as escaped HTML and plain text."""
    parts = [f'<div class="um-footer">{html.escape(line)}</div>'] if line else []
    parts += [f'<div class="um-note">{html.escape(n)}</div>' for n in notes or ()]
    plain = "\n".join(([f"[{line}]"] if line else []) + list(notes or ()))
    return html_bundle("".join(parts), plain)


# ---------------------------------------------------------------------------- Markdown helpers
_FENCE_RE = re.compile(r"^( {0,3})(`{3,}|~{3,})([^\n`]*)\n(.*?)^ {0,3}\2[`~]*[ \t]*$", re.M | re.S)
_LANG_RE = re.compile(r"[^\w+#.\-]")


def fence_ticks(text: str) -> str:
    """A backtick fence longer than any backtick run in ``text`` (at least three)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def fence(code: str, lang: str = "") -> str:
    """A fenced Markdown code block that holds ``code`` byte-exact."""
    ticks = fence_ticks(code)
    lang = _LANG_RE.sub("", lang)[:30]
    nl = "" if code.endswith("\n") else "\n"
    return f"{ticks}{lang}\n{code}{nl}{ticks}"


def extract_code(text: str) -> tuple[str, str]:
    """The first fenced code block of ``text`` as (code, language); else (text, "")."""
    m = _FENCE_RE.search(text)
    if not m:
        # an unclosed fence (answer cut): take everything after the opening line
        m2 = re.search(r"^ {0,3}(`{3,}|~{3,})([^\n`]*)\n", text, re.M)
        if m2:
            return text[m2.end():], m2.group(2).strip().split(" ")[0]
        return text.strip("\n") + ("\n" if text.strip() else ""), ""
    return m.group(4), m.group(3).strip().split(" ")[0] if m.group(3).strip() else ""


def strip_json_fence(text: str) -> str:
    """JSON text without a surrounding ```json fence, if the model added one."""
    s = text.strip()
    if s.startswith("```") or s.startswith("~~~"):
        code, _ = extract_code(s)
        return code
    return s
